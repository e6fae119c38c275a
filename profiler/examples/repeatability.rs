//! Run-to-run repeatability of CPU profiles, summarised per entry size class: profiles each spec
//! in pairs and prints, per pair and over all pairs, how far apart the two runs' entries are.
//!
//! ```text
//! MATMUL_NUM_THREADS=1 cargo run --release -p plexserve-profiler --example repeatability -- \
//!     [--pairs N] [--threads N | --global-pool] [--repeats N] [--clock wall|thread] [--epochs N] [--no-pin] [--raw] SPEC.json...
//! ```
//!
//! `plexserve profile --repeatability 2` gives the full per-entry table of one pair; this prints
//! the distribution over several pairs and the time one profiling run takes.

use std::path::Path;
use std::time::Instant;

use plexserve_profiler::{
    repeatability, size_classes, CpuClock, Device, ModelSpec, ProfileOptions,
};

fn main() {
    let mut pairs = 1;
    // Also print every entry: `entry SPEC KIND tp TP b BATCH MIN_MS DIFF RUN1_MS RUN2_MS`.
    let mut raw = false;
    let mut opts = ProfileOptions {
        threads: Some(1),
        ..ProfileOptions::default()
    };
    let mut specs = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut number = |name: &str| -> usize {
            match args.next().map(|v| v.parse()) {
                Some(Ok(n)) => n,
                _ => usage(&format!("{name} needs a number")),
            }
        };
        match a.as_str() {
            "--pairs" => pairs = number("--pairs"),
            "--threads" => opts.threads = Some(number("--threads")),
            "--repeats" => opts.repeats = number("--repeats"),
            "--global-pool" => opts.threads = None,
            "--epochs" => opts.epochs = number("--epochs"),
            "--no-pin" => opts.pin_cpu = false,
            "--raw" => raw = true,
            "--clock" => {
                opts.cpu_clock = match args.next().as_deref() {
                    Some("wall") => Some(CpuClock::Wall),
                    Some("thread") => Some(CpuClock::Thread),
                    _ => usage("--clock needs wall or thread"),
                }
            }
            s if s.starts_with("--") => usage(&format!("unknown option {s}")),
            path => specs
                .push(ModelSpec::load(Path::new(path)).unwrap_or_else(|e| usage(&e.to_string()))),
        }
    }
    if specs.is_empty() {
        usage("no spec given");
    }
    for spec in &specs {
        let mut all = Vec::new();
        for pair in 0..pairs {
            let start = Instant::now();
            let (report, runs) = repeatability(spec, &Device::Cpu, &opts, 2)
                .unwrap_or_else(|e| usage(&e.to_string()));
            let per_run = start.elapsed().as_secs_f64() / 2.0;
            let worst = &report.ops[0];
            let samples: Vec<usize> = runs[0].ops.iter().map(|c| c.repeats).collect();
            println!(
                "{} pair {}: {:.2} s per run, {} to {} samples per operator; forward pass {:.2} % apart; entries median {:.2} %, max {:.2} %; worst op {} {:.1} %",
                spec.name,
                pair + 1,
                per_run,
                samples.iter().min().unwrap_or(&0),
                samples.iter().max().unwrap_or(&0),
                report.model_diff() * 100.0,
                report.median_layer_diff() * 100.0,
                report.max_layer_diff() * 100.0,
                worst.op,
                worst.rel_diff * 100.0
            );
            for l in &report.layers {
                let lo = l.latency_s.iter().copied().fold(f64::INFINITY, f64::min);
                if raw {
                    let runs: Vec<String> = l
                        .latency_s
                        .iter()
                        .map(|t| format!("{:.6}", t * 1e3))
                        .collect();
                    println!(
                        "entry {} {} tp {} b {} {:.6} {:.6} {}",
                        spec.name,
                        l.kind.label(),
                        l.tp,
                        l.batch,
                        lo * 1e3,
                        l.rel_diff,
                        runs.join(" ")
                    );
                }
                all.push((lo, l.rel_diff));
            }
        }
        for c in size_classes(all) {
            if !c.diffs.is_empty() {
                println!("{} {c}", spec.name);
            }
        }
    }
}

fn usage(message: &str) -> ! {
    eprintln!("error: {message}\nusage: repeatability [--pairs N] [--threads N | --global-pool] [--repeats N] [--clock wall|thread] [--epochs N] [--no-pin] [--raw] SPEC.json...");
    std::process::exit(2)
}
