//! The MILP placer on S3 (48 devices, 72 models, MAF1 trace): wall time per placement with the
//! default 30 s limit and 1 % gap, plus AlpaServe's ILPs. Before timing, each spec runs once and
//! prints the status it reached (for `milp`: the best objective, the proved bound and the gap
//! over every partition), so a median is only read as "optimal or ≤ 1 % gap" when the status
//! says so. `MILP_BENCH_SPECS` (`;`-separated) and `MILP_BENCH_INSTANCE` (a file under
//! `instances/paper`) override the defaults.

use criterion::{criterion_group, criterion_main, Criterion};
use plexserve_solver::placer::milp::search_with_report;
use plexserve_solver::{by_name, parse_placer_spec, Instance, PlaceOptions, Silent};

fn bench(c: &mut Criterion) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../instances/paper");
    let file = std::env::var("MILP_BENCH_INSTANCE").unwrap_or_else(|_| "s3-maf1.json".into());
    let inst = Instance::load(&dir.join(&file)).expect("instance");
    let trace = inst.workload.generate(inst.base_dir()).expect("trace");
    // One placement takes up to its 30 s limit: criterion's minimum of 10 samples, a short
    // warm-up, and only as long a measurement as those samples need.
    let mut group = c.benchmark_group("milp");
    group.sample_size(10);
    group.warm_up_time(std::time::Duration::from_secs(1));
    group.measurement_time(std::time::Duration::from_secs(10));
    let specs: Vec<String> = std::env::var("MILP_BENCH_SPECS")
        .map(|s| s.split(';').map(str::to_string).collect())
        .unwrap_or_else(|_| {
            vec![
                "milp".to_string(),
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
        if name == "milp" {
            let (first, report) =
                search_with_report(&inst, &trace, &opts, &Silent).expect("solves");
            eprintln!(
                "{}/{spec}: status {:?}, best objective {:?}, bound {:.6}, gap {:.4}, time limited {}, plan objective {:?}, attainment {:.4}, {:.2} s",
                inst.name,
                report.status,
                report.best,
                report.bound,
                report.gap,
                report.time_limited,
                first.objective,
                first.score.attainment,
                first.time_s
            );
            for p in &report.partitions {
                eprintln!(
                    "  {:?}×{}: {} (value {:?}, bound {:.6})",
                    p.shapes[0],
                    p.shapes.len(),
                    p.outcome,
                    p.value,
                    p.bound
                );
            }
        } else {
            let first = placer.place(&inst, &trace, &opts, &Silent).expect("solves");
            eprintln!(
                "{}/{spec}: status {:?}, objective {:?}, attainment {:.4}, {:.2} s",
                inst.name, first.status, first.objective, first.score.attainment, first.time_s
            );
        }
        if std::env::var_os("MILP_BENCH_ONCE").is_some() {
            continue;
        }
        group.bench_function(format!("{}/{spec}", inst.name), |b| {
            b.iter(|| placer.place(&inst, &trace, &opts, &Silent).expect("solves"))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
