//! Executor benchmarks.
//!
//! - `controller/admit`: one admission decision of the shared controller on a 32-device,
//!   16-group, 8-model placement.
//! - `executor/submit_at_2000rps`: the server's admission path (clock read, controller, metrics,
//!   enqueue to the stage worker) with the emulate runner while requests arrive at 2,000/s; the
//!   per-request p50 and p99 are printed (target: p99 < 1 ms).
//! - `cpu/raw_layers` vs `cpu/raw_layers_one_core` vs `cpu/executor_request`: the CPU runner's
//!   stage work called directly on the kernels (their rayon pool over every core), the same work
//!   on one device's single-thread pool (what a stage worker runs), and one request through the
//!   executor (admission, worker hand-off, answer).

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use plexserve_executor::{
    CpuRunner, EmulateRunner, Executor, ExecutorOptions, LayerRunner, LayerSpec, RealClock,
    StageRunner,
};
use plexserve_solver::sim::{Compiled, Controller};
use plexserve_solver::{Group, Instance, Placement, Schedule};

fn cluster_instance(stage_s: f64, models: usize) -> Instance {
    let model_list: Vec<String> = (0..models)
        .map(|m| format!(r#"{{ "name": "m{m}", "profile": "p", "slo_scale": 6.0 }}"#))
        .collect();
    let streams: Vec<String> = (0..models)
        .map(|m| format!(r#"{{ "model": "m{m}", "rate": 1.0, "cv": 1.0 }}"#))
        .collect();
    let text = format!(
        r#"{{ "schema": "plexserve/instance/v1", "name": "bench",
  "cluster": {{ "devices": 32, "memory_budget_gib": 100 }},
  "profiles": {{ "p": {{ "batch_sizes": [1], "configs": [
    {{ "pp": 1, "tp": 1, "stage_latency_s": [[{l1}]], "stage_weight_gib": [1] }},
    {{ "pp": 2, "tp": 1, "stage_latency_s": [[{stage_s}, {stage_s}]], "stage_weight_gib": [0.5, 0.5] }} ] }} }},
  "models": [ {ms} ],
  "workload": {{ "kind": "gamma", "duration_s": 10, "seed": 0, "streams": [ {ss} ] }} }}"#,
        l1 = 2.0 * stage_s,
        ms = model_list.join(", "),
        ss = streams.join(", ")
    );
    Instance::from_json("bench.json".as_ref(), &text).expect("bench instance")
}

fn cluster_placement(models: usize) -> Placement {
    Placement {
        groups: (0..16)
            .map(|g| Group {
                pp: 2,
                tp: 1,
                devices: vec![2 * g, 2 * g + 1],
                models: (0..models as u32).collect(),
            })
            .collect(),
    }
}

fn controller(c: &mut Criterion) {
    let inst = cluster_instance(0.005, 8);
    let placement = cluster_placement(8);
    let compiled = Compiled::new(&inst, &placement, 0, 0.009);
    let slo: Vec<f64> = inst.models.iter().map(|m| m.slo_s).collect();
    let mut clocks = vec![0.0; compiled.n_clocks()];
    let mut t = 0.0;
    let mut m = 0;
    c.bench_function("controller/admit", |b| {
        b.iter(|| {
            let mut ctl = Controller::new(&compiled, &slo, 0.011, false, &mut clocks);
            t += 0.0005;
            m = (m + 1) % 8;
            std::hint::black_box(ctl.admit(t, m))
        })
    });
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    sorted[((q * sorted.len() as f64) as usize).min(sorted.len() - 1)]
}

fn submit_at_2000rps(c: &mut Criterion) {
    let inst = cluster_instance(0.005, 8);
    let schedule = Schedule::fixed(cluster_placement(8));
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let exec = Arc::new(
        Executor::start(
            &inst,
            &schedule,
            Arc::new(EmulateRunner),
            Arc::new(RealClock::new()),
            &ExecutorOptions::default(),
        )
        .expect("deploys"),
    );
    let mut samples: Vec<f64> = Vec::new();
    let mut admitted = 0u64;
    let mut total = 0u64;
    let mut group = c.benchmark_group("executor");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(6));
    group.bench_function("submit_at_2000rps", |b| {
        b.iter_custom(|iters| {
            let interval = Duration::from_micros(500);
            let start = Instant::now();
            let mut spent = Duration::ZERO;
            for i in 0..iters {
                let due = start + interval * i as u32;
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                let t0 = Instant::now();
                let r = exec.submit((i % 8) as usize, None);
                let dt = t0.elapsed();
                spent += dt;
                samples.push(dt.as_secs_f64());
                total += 1;
                if let Ok(p) = r {
                    admitted += 1;
                    // Answers are awaited off the measured path so nothing piles up.
                    let e = exec.clone();
                    rt.spawn(async move {
                        let _ = e.wait(p).await;
                    });
                }
            }
            spent
        })
    });
    group.finish();
    samples.sort_by(f64::total_cmp);
    if !samples.is_empty() {
        eprintln!(
            "executor/submit_at_2000rps: {} requests ({} admitted): p50 {:.1} µs, p99 {:.1} µs, max {:.1} µs",
            total,
            admitted,
            percentile(&samples, 0.5) * 1e6,
            percentile(&samples, 0.99) * 1e6,
            samples[samples.len() - 1] * 1e6
        );
    }
    exec.shutdown(Duration::from_secs(10));
}

fn cpu_throughput(c: &mut Criterion) {
    let spec = LayerSpec::default();
    let runner = Arc::new(CpuRunner::new(spec, &[1]).expect("calibrates"));
    let layer_s = runner.layer_time_s(1).expect("calibrated");
    // A stage of 8 calibrated layers (with the runner's headroom), run both ways.
    let profiled = 8.0 * layer_s * spec.headroom;
    let layers = runner.layers_for(profiled, 1);
    let mut group = c.benchmark_group("cpu");
    group.sample_size(20);
    let mut x = runner.input(0, None);
    group.bench_function("raw_layers", |b| {
        b.iter(|| runner.run_layers(0, 1, layers, &mut x).expect("runs"))
    });
    group.bench_function("raw_layers_one_core", |b| {
        b.iter(|| {
            runner
                .run_stage_on(&[0], 0, 1, layers, &mut x)
                .expect("runs")
        })
    });
    let text = format!(
        r#"{{ "schema": "plexserve/instance/v1", "name": "cpu-bench",
  "cluster": {{ "devices": 1, "memory_budget_gib": 1 }},
  "profiles": {{ "p": {{ "batch_sizes": [1], "configs": [
    {{ "pp": 1, "tp": 1, "stage_latency_s": [[{profiled}]], "stage_weight_gib": [0.01] }} ] }} }},
  "models": [ {{ "name": "m", "profile": "p", "slo_s": 100 }} ],
  "workload": {{ "kind": "gamma", "duration_s": 1, "seed": 0, "streams": [ {{ "model": "m", "rate": 1, "cv": 1 }} ] }} }}"#
    );
    let inst = Instance::from_json("cpu-bench.json".as_ref(), &text).expect("instance");
    let schedule = Schedule::fixed(Placement {
        groups: vec![Group {
            pp: 1,
            tp: 1,
            devices: vec![0],
            models: vec![0],
        }],
    });
    let dyn_runner: Arc<dyn StageRunner> = runner.clone();
    let exec = Executor::start(
        &inst,
        &schedule,
        dyn_runner,
        Arc::new(RealClock::new()),
        &ExecutorOptions::default(),
    )
    .expect("deploys");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    group.bench_function("executor_request", |b| {
        b.iter(|| rt.block_on(exec.infer(0, None)).expect("served"))
    });
    group.finish();
    eprintln!(
        "cpu: {layers} layers per request, calibrated layer {:.3} ms",
        layer_s * 1e3
    );
    exec.shutdown(Duration::from_secs(10));
}

criterion_group!(benches, controller, submit_at_2000rps, cpu_throughput);
criterion_main!(benches);
