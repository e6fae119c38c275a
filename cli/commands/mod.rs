//! One module per verb.

mod compare;
mod doctor;
mod instance;
pub mod llm;
mod partition;
mod placers;
mod profile;
mod replay;
mod serve;
mod simulate;
mod solve;

use std::path::Path;

use crate::args::{Cli, Command};
use crate::Exit;

pub fn run(cli: Cli) -> Result<(), Exit> {
    match cli.command {
        Command::Solve {
            instance,
            placer,
            output,
            json,
            search,
        } => solve::run(
            &instance,
            placer.as_deref(),
            output.as_deref(),
            json,
            &search,
        ),
        Command::Simulate {
            instance,
            plan,
            json,
            requests_out,
        } => simulate::run(&instance, &plan, json, requests_out.as_deref()),
        Command::Placers { json } => placers::run(json),
        Command::Compare {
            instance,
            placers,
            sweep,
            output,
            json,
            replot,
            search,
        } => match (replot, instance) {
            (Some(tsv), _) => compare::replot(&tsv, &output),
            (None, Some(instance)) => {
                compare::run(&instance, &placers, &sweep, &output, json, &search)
            }
            (None, None) => Err(crate::Exit::input(
                "compare: name an INSTANCE or --replot TSV",
            )),
        },
        Command::Llm { command } => llm::run(command),
        Command::Profile {
            device,
            model,
            output,
            json,
            warmup,
            repeats,
            link_gb_per_s,
            link_latency_us,
            dtype,
            threads,
            repeatability,
            probe_reference_us,
        } => profile::run(&profile::ProfileArgs {
            device: &device,
            model: &model,
            output: output.as_ref(),
            json,
            warmup,
            repeats,
            link_gb_per_s,
            link_latency_us,
            dtype: dtype.as_deref(),
            threads,
            repeatability,
            probe_reference_us: probe_reference_us.as_deref(),
        }),
        Command::Instance(args) => instance::run(&args),
        Command::Doctor { json } => doctor::run(json),
        Command::Serve {
            instance,
            plan,
            listen,
            runner,
        } => serve::run(&instance, &plan, &listen, &runner),
        Command::Replay {
            instance,
            target,
            json,
            requests_out,
        } => replay::run(&instance, &target, json, requests_out.as_deref()),
        Command::Partition {
            file,
            model,
            devices,
            pp,
            tp,
            objective,
            memory_budget_gib,
            link_gib_per_s,
            json,
        } => partition::run(&partition::PartitionArgs {
            file: &file,
            model: &model,
            devices,
            pp,
            tp,
            objective: &objective,
            memory_budget_gib,
            link_gib_per_s,
            json,
        }),
    }
}

/// Loads and validates an instance.
pub fn load_instance(path: &Path) -> Result<plexserve_solver::Instance, Exit> {
    Ok(plexserve_solver::Instance::load(path)?)
}

/// Writes text to a file, naming the file on failure.
pub fn write_file(path: &Path, text: &str) -> Result<(), Exit> {
    std::fs::write(path, text).map_err(|e| Exit {
        code: 1,
        message: format!("{}: cannot write: {e}", path.display()),
    })
}

/// Prints one pretty JSON document (and a newline) on stdout: what `--json` gives.
pub fn print_json(doc: &impl serde::Serialize) -> Result<(), Exit> {
    let text = serde_json::to_string_pretty(doc).map_err(|e| Exit {
        code: 1,
        message: format!("cannot serialize the report: {e}"),
    })?;
    println!("{text}");
    Ok(())
}

/// Writes a CSV file through `write`, naming the file on failure.
pub fn write_csv(
    path: &Path,
    write: impl FnOnce(&mut std::io::BufWriter<std::fs::File>) -> std::io::Result<()>,
) -> Result<(), Exit> {
    let cannot = |e: std::io::Error| Exit {
        code: 1,
        message: format!("{}: cannot write: {e}", path.display()),
    };
    let mut w = std::io::BufWriter::new(std::fs::File::create(path).map_err(cannot)?);
    write(&mut w).map_err(cannot)?;
    std::io::Write::flush(&mut w).map_err(cannot)
}

/// Runs `f` inside a rayon pool of `threads` workers (the global pool when `None`).
pub fn with_threads<T: Send>(
    threads: Option<usize>,
    f: impl FnOnce() -> T + Send,
) -> Result<T, Exit> {
    match threads {
        None => Ok(f()),
        Some(0) => Err(Exit::input("--threads must be at least 1")),
        Some(n) if n > plexserve_solver::MAX_THREADS => Err(Exit::input(format!(
            "--threads: expected at most {}, found {n}",
            plexserve_solver::MAX_THREADS
        ))),
        Some(n) => {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .build()
                .map_err(|e| Exit {
                    code: 1,
                    message: format!("cannot start {n} threads: {e}"),
                })?;
            Ok(pool.install(f))
        }
    }
}
