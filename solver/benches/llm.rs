//! LLM simulator iterations per second, and placer time on 32 GPUs × 19 LLMs.

use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use plexserve_solver::llm::*;
use plexserve_solver::PlaceOptions;

fn load() -> (LlmInstance, LlmTrace) {
    let inst = LlmInstance::load(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../instances/llm/muxserve-synthetic.json"
    )))
    .unwrap();
    let trace = inst
        .workload
        .generate(inst.base_dir(), inst.llms.len())
        .unwrap();
    (inst, trace)
}

fn bench(c: &mut Criterion) {
    let (inst, trace) = load();
    let (p, o) = llm_placer("muxserve", &PlaceOptions::default()).unwrap();
    let dep = p.place(&inst, &trace, &o).unwrap().deployment;
    let sim = LlmSim::new(&inst, &trace, &dep);
    let iters = sim.run(&RunOptions::default()).stats.iterations;
    let mut g = c.benchmark_group("llm_sim");
    g.throughput(Throughput::Elements(iters));
    g.sample_size(20);
    g.bench_function("muxserve_synthetic_19llm_32gpu", |b| {
        b.iter(|| sim.run(&RunOptions::default()).stats.iterations)
    });
    g.finish();
    overloaded(c);
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

/// Two LLMs on two GPUs at 512× their rate: queues of tens of thousands of requests per engine.
/// An iteration must not cost more as the queue grows (it once scanned the whole queue).
fn overloaded(c: &mut Criterion) {
    let mut inst = LlmInstance::load(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../instances/llm/tiny-two-7b.json"
    )))
    .unwrap();
    inst.workload.scale_rate(512.0);
    let trace = inst
        .workload
        .generate(inst.base_dir(), inst.llms.len())
        .unwrap();
    let (p, o) = llm_placer("muxserve", &PlaceOptions::default()).unwrap();
    let dep = p.place(&inst, &trace, &o).unwrap().deployment;
    let sim = LlmSim::new(&inst, &trace, &dep);
    let iters = sim.run(&RunOptions::default()).stats.iterations;
    let mut g = c.benchmark_group("llm_sim");
    g.throughput(Throughput::Elements(iters));
    g.sample_size(10);
    g.bench_function("overloaded_2llm_2gpu_x512", |b| {
        b.iter(|| sim.run(&RunOptions::default()).stats.iterations)
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
