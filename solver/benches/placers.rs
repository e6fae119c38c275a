//! Every AlpaServe-family placer on the paper-scale instances S1, S2, S3 (MAF1-style workloads).

use criterion::{criterion_group, criterion_main, Criterion};
use plexserve_solver::{by_name, parse_placer_spec, Instance, PlaceOptions, Silent};

fn bench(c: &mut Criterion) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../instances/paper");
    let mut group = c.benchmark_group("place");
    group.sample_size(10);
    for set in ["s1-maf1", "s2-maf1", "s3-maf1"] {
        let inst = Instance::load(&dir.join(format!("{set}.json"))).expect("instance");
        let trace = inst.workload.generate(inst.base_dir()).expect("trace");
        for spec in [
            "sr",
            "clockwork++",
            "mp-greedy-4",
            "alpaserve",
            "alpaserve-sep",
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
