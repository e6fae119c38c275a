//! Run-to-run repeatability of CPU profiles, summarised per entry size class: profiles each spec
//! in pairs and prints, per pair and over all pairs, how far apart the two runs' entries are.
//!
//! ```text
//! MATMUL_NUM_THREADS=1 cargo run --release -p plexserve-profiler --example repeatability -- \
//!     [--pairs N] [--threads N | --global-pool] [--repeats N] [--clock wall|thread] [--epochs N] [--short-epochs N] [--no-pin]
//!     [--speed none|rounds|probe | --all-speeds] [--raw] SPEC.json...
//! ```
//!
//! `plexserve profile --repeatability 2` gives the full per-entry table of one pair; this prints
//! the distribution over several pairs and the time one profiling run takes. `--all-speeds`
//! measures the speed probe and compares every [`SpeedCorrection`] on the same runs (each
//! pair's second run scaled to its first run's probe), with each pair's common-mode difference
//! (the median over entries of run 2 / run 1) next to the probe's (its run 2 / run 1).

use std::path::Path;
use std::time::Instant;

use plexserve_profiler::{
    repeatability_variants, size_classes, CpuClock, Device, ModelSpec, ProfileOptions, Samples,
    SpeedCorrection,
};

/// Per speed correction: (entry latency, run-to-run difference) per entry, and the forward
/// pass's difference per pair.
type Tally = (SpeedCorrection, Vec<(f64, f64)>, Vec<f64>);

fn main() {
    let mut pairs = 1;
    // Also print every entry: `entry SPEC KIND tp TP b BATCH MIN_MS DIFF RUN1_MS RUN2_MS`.
    let mut raw = false;
    let mut all_speeds = false;
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
            "--short-epochs" => opts.short_epochs = number("--short-epochs"),
            "--no-pin" => opts.pin_cpu = false,
            "--raw" => raw = true,
            "--all-speeds" => all_speeds = true,
            "--speed" => {
                opts.speed = args
                    .next()
                    .as_deref()
                    .and_then(SpeedCorrection::parse)
                    .unwrap_or_else(|| usage("--speed needs none, rounds or probe"))
            }
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
    // Over all specs, per correction: entries and forward-pass differences.
    let mut overall: Vec<Tally> = Vec::new();
    for spec in &specs {
        // Per correction: (entry latency, run-to-run difference) over all pairs, and the forward
        // pass's difference per pair.
        let mut all: Vec<Tally> = Vec::new();
        for pair in 0..pairs {
            let start = Instant::now();
            let variants = repeatability_variants(spec, &Device::Cpu, &opts, 2, all_speeds)
                .unwrap_or_else(|e| usage(&e.to_string()));
            let per_run = start.elapsed().as_secs_f64() / 2.0;
            let probe: Vec<f64> = {
                let runs = &variants[0].2;
                runs[1]
                    .probe_s
                    .iter()
                    .zip(&runs[0].probe_s)
                    .map(|(b, a)| b / a)
                    .collect()
            };
            for (speed, report, runs) in &variants {
                let worst = &report.ops[0];
                let samples: Vec<usize> = runs[0].ops.iter().map(|c| c.repeats).collect();
                // Common mode: how much slower run 2 was, all entries together.
                let common = Samples(
                    report
                        .layers
                        .iter()
                        .map(|l| l.latency_s[1] / l.latency_s[0])
                        .collect(),
                )
                .median_s();
                // The machine's drift within each run: the round factors' 10-90 % range.
                let drift: Vec<String> = runs
                    .iter()
                    .map(|r| {
                        let f = Samples(
                            r.groups
                                .iter()
                                .flat_map(|g| g.round_factors.iter().copied())
                                .collect(),
                        );
                        format!("{:.3}-{:.3}", f.quantile_s(0.1), f.quantile_s(0.9))
                    })
                    .collect();
                println!(
                    "{} pair {} [{}]: {:.2} s per run, {} operators + {} probe, {} rounds, {} to {} samples per operator; forward pass {:.2} % apart; entries median {:.2} %, max {:.2} %; run2/run1 common mode {:+.2} %{}; round factors p10-p90 {}; worst op {} {:.1} %",
                    spec.name,
                    pair + 1,
                    speed.name(),
                    per_run,
                    runs[0].ops.len(),
                    runs[0].probe_s.len(),
                    runs[0].groups.iter().map(|g| g.round_factors.len()).sum::<usize>(),
                    samples.iter().min().unwrap_or(&0),
                    samples.iter().max().unwrap_or(&0),
                    report.model_diff() * 100.0,
                    report.median_layer_diff() * 100.0,
                    report.max_layer_diff() * 100.0,
                    (common - 1.0) * 100.0,
                    if probe.is_empty() {
                        String::new()
                    } else {
                        format!(
                            ", probe run2/run1 {}",
                            probe
                                .iter()
                                .map(|p| format!("{:+.2} %", (p - 1.0) * 100.0))
                                .collect::<Vec<_>>()
                                .join(" ")
                        )
                    },
                    drift.join(" / "),
                    worst.op,
                    worst.rel_diff * 100.0
                );
                let at = match all.iter().position(|(s, _, _)| s == speed) {
                    Some(at) => at,
                    None => {
                        all.push((*speed, Vec::new(), Vec::new()));
                        all.len() - 1
                    }
                };
                all[at].2.push(report.model_diff());
                for l in &report.layers {
                    let lo = l.latency_s.iter().copied().fold(f64::INFINITY, f64::min);
                    if raw {
                        let runs: Vec<String> = l
                            .latency_s
                            .iter()
                            .map(|t| format!("{:.6}", t * 1e3))
                            .collect();
                        println!(
                            "entry {} {} {} tp {} b {} {:.6} {:.6} {}",
                            speed.name(),
                            spec.name,
                            l.kind.label(),
                            l.tp,
                            l.batch,
                            lo * 1e3,
                            l.rel_diff,
                            runs.join(" ")
                        );
                    }
                    all[at].1.push((lo, l.rel_diff));
                }
            }
        }
        for (speed, entries, forward) in all {
            summary(&spec.name, speed, &entries, &forward);
            match overall.iter_mut().find(|(s, _, _)| *s == speed) {
                Some((_, e, f)) => {
                    e.extend(entries);
                    f.extend(forward);
                }
                None => overall.push((speed, entries, forward)),
            }
        }
    }
    if specs.len() > 1 {
        for (speed, entries, forward) in overall {
            summary("all specs", speed, &entries, &forward);
        }
    }
}

/// Per size class, then all entries and the forward pass per pair.
fn summary(name: &str, speed: SpeedCorrection, entries: &[(f64, f64)], forward: &[f64]) {
    let within = entries.iter().filter(|(_, d)| *d <= 0.05).count();
    for c in size_classes(entries.iter().copied()) {
        if !c.diffs.is_empty() {
            println!("{name} [{}] {c}", speed.name());
        }
    }
    let f = Samples(forward.to_vec());
    println!(
        "{name} [{}] all: {within} of {} entries within 5 %; forward pass apart: median {:.2} %, max {:.2} % ({})",
        speed.name(),
        entries.len(),
        f.median_s() * 100.0,
        f.max_s() * 100.0,
        forward
            .iter()
            .map(|d| format!("{:.2}", d * 100.0))
            .collect::<Vec<_>>()
            .join(" ")
    );
}

fn usage(message: &str) -> ! {
    eprintln!("error: {message}\nusage: repeatability [--pairs N] [--threads N | --global-pool] [--repeats N] [--clock wall|thread] [--epochs N] [--short-epochs N] [--no-pin] [--speed none|rounds|probe | --all-speeds] [--raw] SPEC.json...");
    std::process::exit(2)
}
