//! Stage DP speed (stage-dp-and-milp.md §2.5): the per-stage-degree DP on 128 layers × 64 devices
//! × tp ∈ {1, 2, 4, 8} (target < 50 ms), and the uniform (pp, tp) grid of one model.

use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion};
use plexserve_solver::{
    derive_configs, partition, Cluster, PartitionOptions, Profile, ProfileFile,
};

fn synthetic_128l() -> Profile {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../instances/layers/synthetic-128l.profile.json");
    let file = ProfileFile::load(&path).expect("instances/layers/synthetic-128l.profile.json");
    file.profiles["synthetic-128l"].clone()
}

fn bench_stage_dp(c: &mut Criterion) {
    let profile = synthetic_128l();
    let mut group = c.benchmark_group("stage_dp");
    // Milliseconds per run: criterion's minimum sample count and short phases keep the whole
    // bench to well under a minute.
    group.sample_size(10);
    group.warm_up_time(std::time::Duration::from_secs(1));
    group.measurement_time(std::time::Duration::from_secs(3));
    for pp in [8u32, 16] {
        let mut opts = PartitionOptions::new(64, 4.0);
        opts.pp = Some(pp);
        opts.link_gib_per_s = Some(25.0);
        group.bench_function(format!("128l_64dev_tp1248_pp{pp}"), |b| {
            b.iter(|| partition(std::hint::black_box(&profile), &opts).expect("feasible"))
        });
    }
    // Free depth: every pp from 1 to 64 in the tables at once.
    let mut free = PartitionOptions::new(64, 4.0);
    free.link_gib_per_s = Some(25.0);
    group.bench_function("128l_64dev_tp1248_free_pp", |b| {
        b.iter(|| partition(std::hint::black_box(&profile), &free).expect("feasible"))
    });
    let cluster = Cluster {
        devices: 64,
        memory_budget_gib: 4.0,
        devices_per_node: 8,
        link_gib_per_s: Some(25.0),
    };
    group.bench_function("uniform_grid_128l_64dev", |b| {
        b.iter(|| derive_configs(std::hint::black_box(&profile), &cluster).expect("valid"))
    });
    group.finish();
}

criterion_group!(benches, bench_stage_dp);
criterion_main!(benches);
