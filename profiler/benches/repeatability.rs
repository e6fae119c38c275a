//! Profiler repeatability: profile the tiny spec twice on the CPU with the profiler's default
//! measurement (warm-up until settled, samples in rounds across operators, more rounds for
//! operators whose median is not pinned down) and print how far apart the two runs' per-layer
//! medians are, per entry size class; then measure what one profiling run costs.
//!
//! For a report on any spec, `plexserve profile --device cpu --model SPEC --repeatability 2`.

use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion};
use plexserve_profiler::{profile, repeatability, Device, ModelSpec, ProfileOptions};

fn spec(name: &str) -> ModelSpec {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../instances/specs")
        .join(format!("{name}.json"));
    ModelSpec::load(&path).expect("spec")
}

fn bench(c: &mut Criterion) {
    let tiny = spec("tiny-gpt");
    // One worker thread (and MATMUL_NUM_THREADS=1 from the caller): on a shared two-core machine a
    // two-thread pool measures the neighbours' load more than the operators, and with all work
    // on the measuring thread its CPU time is the clock (see `CpuClock`).
    let opts = ProfileOptions {
        threads: Some(1),
        ..ProfileOptions::default()
    };
    let (report, _) = repeatability(&tiny, &Device::Cpu, &opts, 2).expect("repeatability");
    eprintln!(
        "repeatability (tiny-gpt, cpu, 1 thread): model tp1 b1 {:.3} ms vs {:.3} ms; per-layer medians differ by {:.1} % on average, {:.1} % at most ({} entries); largest in-run IQR/median {:.1} %",
        report.model_s[0] * 1e3,
        report.model_s[1] * 1e3,
        100.0 * report.mean_layer_diff(),
        100.0 * report.max_layer_diff(),
        report.layers.len(),
        100.0 * report.max_iqr_ratio()
    );
    for c in report.by_size() {
        if !c.diffs.is_empty() {
            eprintln!("  {c}");
        }
    }
    let quick = ProfileOptions {
        warmup: 1,
        repeats: 3,
        ..ProfileOptions::default()
    };
    let mut group = c.benchmark_group("profile");
    group.sample_size(10);
    group.bench_function("tiny-gpt cpu (1 warm-up, 3 repeats)", |b| {
        b.iter(|| profile(&tiny, &Device::Cpu, &quick).expect("profile"))
    });
    group.bench_function("bert-6.7b analytic v100", |b| {
        let big = spec("bert-6.7b");
        let d = Device::parse("analytic:v100-16gb").expect("device");
        b.iter(|| profile(&big, &d, &quick).expect("profile"))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
