//! Every AlpaServe-family placer, and `plexserve` (ours, the default), on the paper-scale
//! instances S1, S2, S3 (MAF1-style workloads).
//!
//! A single AlpaServe search on S3 takes seconds, so every benchmark runs criterion's minimum of
//! 10 samples with a short warm-up: `cargo bench -p plexserve-solver --bench placers` finishes in
//! a few minutes on two cores.

use criterion::{criterion_group, criterion_main, Criterion};
use plexserve_solver::{by_name, parse_placer_spec, Instance, PlaceOptions, Silent};

fn bench(c: &mut Criterion) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../instances/paper");
    let mut group = c.benchmark_group("place");
    group.sample_size(10);
    group.warm_up_time(std::time::Duration::from_secs(1));
    group.measurement_time(std::time::Duration::from_secs(5));
    for set in ["s1-maf1", "s2-maf1", "s3-maf1"] {
        let inst = Instance::load(&dir.join(format!("{set}.json"))).expect("instance");
        let trace = inst.workload.generate(inst.base_dir()).expect("trace");
        for spec in [
            "sr",
            "clockwork++",
            "mp-greedy-4",
            "alpaserve",
            "alpaserve-sep",
            "plexserve",
        ] {
            let (name, params) = parse_placer_spec(spec).unwrap();
            let placer = by_name(&name).unwrap();
            let opts = PlaceOptions {
                params,
                ..Default::default()
            };
            group.bench_function(format!("{set}/{spec}"), |b| {
                b.iter(|| placer.place(&inst, &trace, &opts, &Silent).expect("solves"))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
