//! Simulator throughput (requests per second, one core) on the S3 MAF2-style workload (> 1 M
//! requests), with single-device groups and with 8-stage pipelines.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use plexserve_solver::{Instance, Placement, Scratch, Simulator};

fn s3() -> (Instance, plexserve_solver::Trace) {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../instances/paper/s3-maf2.json");
    let inst = Instance::load(&path).expect("S3 instance");
    let trace = inst.workload.generate(inst.base_dir()).expect("trace");
    assert!(
        trace.len() >= 1_000_000,
        "the benchmark needs a ≥ 1 M-request workload"
    );
    (inst, trace)
}

/// Groups of shape (pp, 1) over all devices; group g takes models from a rotating start
/// (g·7 mod M) while memory lasts, so every model gets replicas on several groups.
fn filled(inst: &Instance, pp: u32) -> Placement {
    let n = inst.cluster.devices / pp;
    let n_models = inst.models.len();
    let mut p = Placement::from_shapes(&vec![(pp, 1); n as usize]);
    for g in 0..p.groups.len() {
        for j in 0..n_models {
            let m = (g * 7 + j) % n_models;
            let w = plexserve_solver::model_weight_gib(inst, m, pp, 1);
            if p.used_gib(inst, g) + w <= inst.budget_gib() {
                p.groups[g].models.push(m as u32);
            }
        }
        p.groups[g].models.sort_unstable();
    }
    p
}

fn bench(c: &mut Criterion) {
    let (inst, trace) = s3();
    let sim = Simulator::new(&inst, &trace);
    let mut group = c.benchmark_group("simulate_s3");
    group.throughput(Throughput::Elements(trace.len() as u64));
    group.sample_size(10);
    for pp in [1u32, 2, 4, 8] {
        let p = filled(&inst, pp);
        let mut scratch = Scratch::default();
        group.bench_function(format!("pp{pp}_replicas{}", p.replicas()), |b| {
            b.iter(|| sim.evaluate(&p, &mut scratch))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
