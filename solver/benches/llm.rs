//! LLM simulator iterations per second, and placer time on 32 GPUs × 19 LLMs.

use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use plexserve_solver::llm::*;
use plexserve_solver::PlaceOptions;

/// An instance of `instances/llm/` with its rate scaled by `rate_scale`, and its trace.
fn load(name: &str, rate_scale: f64) -> (LlmInstance, LlmTrace) {
    let path = format!("{}/../instances/llm/{name}", env!("CARGO_MANIFEST_DIR"));
    let mut inst = LlmInstance::load(Path::new(&path)).unwrap();
    inst.workload.scale_rate(rate_scale);
    let trace = inst
        .workload
        .generate(inst.base_dir(), inst.llms.len())
        .unwrap();
    (inst, trace)
}

/// Benchmarks one simulator run of `inst` under MuxServe's placement, per iteration.
fn bench_sim(c: &mut Criterion, id: &str, inst: &LlmInstance, trace: &LlmTrace, samples: usize) {
    let (p, o) = llm_placer("muxserve", &PlaceOptions::default()).unwrap();
    let dep = p.place(inst, trace, &o).unwrap().deployment;
    let sim = LlmSim::new(inst, trace, &dep);
    let iters = sim.run(&RunOptions::default()).stats.iterations;
    let mut g = c.benchmark_group("llm_sim");
    g.throughput(Throughput::Elements(iters));
    g.sample_size(samples);
    g.bench_function(id, |b| {
        b.iter(|| sim.run(&RunOptions::default()).stats.iterations)
    });
    g.finish();
}

fn bench(c: &mut Criterion) {
    let (inst, trace) = load("muxserve-synthetic.json", 1.0);
    bench_sim(c, "muxserve_synthetic_19llm_32gpu", &inst, &trace, 20);
    // Two LLMs on two GPUs at 512× their rate: queues of tens of thousands of requests per
    // engine. An iteration must not cost more as the queue grows (it once scanned the queue).
    let (small, small_trace) = load("tiny-two-7b.json", 512.0);
    bench_sim(c, "overloaded_2llm_2gpu_x512", &small, &small_trace, 10);
    let mut g = c.benchmark_group("llm_placer_32gpu_19llm");
    g.sample_size(10);
    for name in ["muxserve", "spatial", "plexserve-llm:max_evals=10"] {
        let (p, o) = llm_placer(name, &PlaceOptions::default()).unwrap();
        g.bench_function(name, |b| {
            b.iter(|| p.place(&inst, &trace, &o).unwrap().evaluations)
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
