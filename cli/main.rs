//! The `plexserve` command line: the pipeline's verbs over instance, profile and plan files.

mod args;
mod commands;
mod plot;
mod progress;

use std::process::ExitCode;

use clap::Parser;

/// An error that carries its exit code: 2 bad input or usage, 3 infeasible, 1 internal.
#[derive(Debug)]
pub struct Exit {
    pub code: u8,
    pub message: String,
}

impl Exit {
    pub fn input(message: impl Into<String>) -> Exit {
        Exit {
            code: 2,
            message: message.into(),
        }
    }
}

impl From<plexserve_solver::SolverError> for Exit {
    fn from(e: plexserve_solver::SolverError) -> Exit {
        Exit {
            code: if e.is_input_error() { 2 } else { 3 },
            message: e.to_string(),
        }
    }
}

impl From<anyhow::Error> for Exit {
    fn from(e: anyhow::Error) -> Exit {
        if let Some(s) = e.downcast_ref::<plexserve_solver::SolverError>() {
            return Exit {
                code: if s.is_input_error() { 2 } else { 3 },
                message: format!("{e:#}"),
            };
        }
        Exit {
            code: 1,
            message: format!("{e:#}"),
        }
    }
}

impl From<std::io::Error> for Exit {
    fn from(e: std::io::Error) -> Exit {
        Exit {
            code: 1,
            message: e.to_string(),
        }
    }
}

/// Output piped into `head` and closed early: end quietly on SIGPIPE, as Unix tools do, instead
/// of panicking in `println!`. Rust ignores SIGPIPE so that a write to a closed socket is an
/// error, not death — which `serve` and `replay` need, so they keep Rust's default.
fn die_quietly_on_closed_stdout() {
    #[cfg(unix)]
    // SAFETY: called once at start-up, before any other thread exists; SIG_DFL is a valid action.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() -> ExitCode {
    let cli = match args::Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    if !matches!(
        cli.command,
        args::Command::Serve { .. } | args::Command::Replay { .. }
    ) {
        die_quietly_on_closed_stdout();
    }
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PLEXSERVE_LOG")
                // The highs crate logs every non-optimal MILP end (time or gap limit) as a warning;
                // the milp placer reports that itself in the plan's `solve` block.
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,highs=error")),
        )
        .init();
    match commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", e.message);
            ExitCode::from(e.code)
        }
    }
}
