//! Profiler repeatability: profile the tiny spec twice on the CPU and compare the two runs'
//! per-layer medians (reported on stderr as the largest relative difference), and measure what
//! one profiling run costs.

use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion};
use plexserve_profiler::{profile, Device, ModelSpec, ProfileOptions};

fn spec() -> ModelSpec {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../instances/specs/tiny-gpt.json");
    ModelSpec::load(&path).expect("tiny spec")
}

fn bench(c: &mut Criterion) {
    let spec = spec();
    let opts = ProfileOptions::default();
    // One worker thread (and MATMUL_NUM_THREADS=1 from the caller): on a shared two-core machine a
    // two-thread pool measures the neighbours' load more than the operators.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("pool");
    let first = pool
        .install(|| profile(&spec, &Device::Cpu, &opts))
        .expect("first run");
    let second = pool
        .install(|| profile(&spec, &Device::Cpu, &opts))
        .expect("second run");
    // Per layer kind and (tp, batch): |a − b| / min(a, b) over the two runs' medians.
    let mut worst = 0.0f64;
    let mut sum = 0.0;
    let mut n = 0;
    for ((_, a), (_, b)) in first.kinds.iter().zip(&second.kinds) {
        for (ra, rb) in a.iter().zip(b) {
            for (&x, &y) in ra.iter().zip(rb) {
                let d = (x - y).abs() / x.min(y);
                worst = worst.max(d);
                sum += d;
                n += 1;
            }
        }
    }
    let total = |r: &plexserve_profiler::ProfileRun| -> f64 {
        r.profile.layers.iter().map(|l| l.latency_s[0][0]).sum()
    };
    eprintln!(
        "repeatability (tiny-gpt, cpu): model tp1 b1 {:.3} ms vs {:.3} ms; per-layer medians differ by {:.1} % on average, {:.1} % at most ({} entries); largest in-run spread {:.1} %",
        total(&first) * 1e3,
        total(&second) * 1e3,
        100.0 * sum / n as f64,
        100.0 * worst,
        n,
        100.0 * first.max_spread()
    );
    let quick = ProfileOptions {
        warmup: 1,
        repeats: 3,
        ..ProfileOptions::default()
    };
    let mut group = c.benchmark_group("profile");
    group.sample_size(10);
    group.bench_function("tiny-gpt cpu (1 warm-up, 3 repeats)", |b| {
        b.iter(|| profile(&spec, &Device::Cpu, &quick).expect("profile"))
    });
    group.bench_function("bert-6.7b analytic v100", |b| {
        let big = ModelSpec::load(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("../instances/specs/bert-6.7b.json"),
        )
        .expect("spec");
        let d = Device::parse("analytic:v100-16gb").expect("device");
        b.iter(|| profile(&big, &d, &quick).expect("profile"))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
