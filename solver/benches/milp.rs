//! The MILP placer on S3 (48 devices, 72 models, MAF1 trace): wall time per placement with the
//! default 30 s limit and 1 % gap, plus AlpaServe's ILPs. Each run prints the status it reached,
//! so a median is only read as "optimal or ≤ 1 % gap" when the status says so.

use criterion::{criterion_group, criterion_main, Criterion};
use plexserve_solver::{by_name, parse_placer_spec, Instance, PlaceOptions, Silent};

fn bench(c: &mut Criterion) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../instances/paper");
    let inst = Instance::load(&dir.join("s3-maf1.json")).expect("instance");
    let trace = inst.workload.generate(inst.base_dir()).expect("trace");
    let mut group = c.benchmark_group("milp");
    group.sample_size(10);
    let specs: Vec<String> = std::env::var("MILP_BENCH_SPECS")
        .map(|s| s.split(';').map(str::to_string).collect())
        .unwrap_or_else(|_| {
            vec![
                "milp".to_string(),
                "milp:warm=lpt".to_string(),
                "sr-ilp".to_string(),
                "alpaserve-ilp".to_string(),
            ]
        });
    for spec in &specs {
        let (name, params) = parse_placer_spec(spec).unwrap();
        let placer = by_name(&name).unwrap();
        let opts = PlaceOptions {
            params,
            ..Default::default()
        };
        let first = placer.place(&inst, &trace, &opts, &Silent).expect("solves");
        eprintln!(
            "s3-maf1/{spec}: status {:?}, objective {:?}, attainment {:.4}, {:.2} s",
            first.status, first.objective, first.score.attainment, first.time_s
        );
        group.bench_function(format!("s3-maf1/{spec}"), |b| {
            b.iter(|| placer.place(&inst, &trace, &opts, &Silent).expect("solves"))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
