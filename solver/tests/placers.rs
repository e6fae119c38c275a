//! Placer properties on the tiny instances: valid plans, dominance between placers that share a
//! search space, determinism across thread counts.

use plexserve_solver::{by_name, parse_placer_spec, Instance, PlaceOptions, Silent, Solved, Trace};

fn tiny_instances() -> Vec<(String, Instance, Trace)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../instances/tiny");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "json")
                && !p.to_string_lossy().ends_with(".plan.json")
        })
        .collect();
    paths.sort();
    assert!(paths.len() >= 3, "tiny instances present");
    paths
        .into_iter()
        .map(|p| {
            let inst = Instance::load(&p).unwrap();
            let trace = inst.workload.generate(inst.base_dir()).unwrap();
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                inst,
                trace,
            )
        })
        .collect()
}

fn place(spec: &str, inst: &Instance, trace: &Trace) -> plexserve_solver::Result<Solved> {
    let (name, params) = parse_placer_spec(spec).unwrap();
    by_name(&name)?.place(
        inst,
        trace,
        &PlaceOptions {
            params,
            ..Default::default()
        },
        &Silent,
    )
}

const PLACERS: &[&str] = &[
    "sr",
    "sr:beam=2",
    "clockwork++",
    "clockwork++:window_s=30",
    "mp-round-robin",
    "mp-greedy-2",
    "mp-greedy-4",
    "alpaserve",
    "alpaserve-sep",
    "sr:faithful",
    "alpaserve:faithful",
    "alpaserve-sep:faithful",
    "clockwork++:faithful",
];

#[test]
fn every_plan_respects_memory_and_devices() {
    for (file, inst, trace) in tiny_instances() {
        for spec in PLACERS {
            let solved = match place(spec, &inst, &trace) {
                Ok(s) => s,
                Err(e) => {
                    assert!(e.to_string().contains("must divide"), "{file} {spec}: {e}");
                    continue;
                }
            };
            for (start, p) in &solved.schedule.segments {
                p.validate(&inst)
                    .unwrap_or_else(|e| panic!("{file} {spec} segment {start}: {e}"));
                let used: usize = p.groups.iter().map(|g| g.devices.len()).sum();
                assert!(used <= inst.cluster.devices as usize);
            }
            assert!((0.0..=1.0).contains(&solved.score.attainment));
            assert!(solved.evaluations > 0 || spec.starts_with("mp-round-robin"));
        }
    }
}

#[test]
fn alpaserve_is_never_worse_than_greedy_pipelines_it_enumerates() {
    for (file, inst, trace) in tiny_instances() {
        let n = inst.cluster.devices;
        for faithful in ["", ":faithful"] {
            let best = place(&format!("alpaserve{faithful}"), &inst, &trace)
                .unwrap()
                .score;
            for k in [1u32, 2, 4, 8].into_iter().filter(|k| n % k == 0) {
                let g = place(&format!("mp-greedy-{k}{faithful}"), &inst, &trace)
                    .unwrap()
                    .score;
                assert!(
                    best.at_least(&g),
                    "{file}{faithful}: alpaserve {best:?} < mp-greedy-{k} {g:?}"
                );
            }
            let sep = place(&format!("alpaserve-sep{faithful}"), &inst, &trace)
                .unwrap()
                .score;
            assert!(
                sep.at_least(&best),
                "{file}{faithful}: sep {sep:?} < alpaserve {best:?}"
            );
        }
    }
}

#[test]
fn identical_plans_with_one_and_two_threads() {
    let pool = |n| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .unwrap()
    };
    for (file, inst, trace) in tiny_instances() {
        for spec in ["alpaserve", "alpaserve-sep", "clockwork++", "sr:beam=3"] {
            let one = pool(1).install(|| place(spec, &inst, &trace).unwrap());
            let two = pool(2).install(|| place(spec, &inst, &trace).unwrap());
            assert_eq!(one.schedule, two.schedule, "{file} {spec}");
            assert_eq!(one.evaluations, two.evaluations, "{file} {spec}");
            assert_eq!(
                one.score.value.to_bits(),
                two.score.value.to_bits(),
                "{file} {spec}"
            );
        }
    }
}

#[test]
fn a_time_limit_is_reported() {
    let (_, inst, trace) = tiny_instances().remove(0);
    let (name, params) = parse_placer_spec("alpaserve").unwrap();
    let opts = PlaceOptions {
        params,
        time_limit_s: Some(1e-9),
        ..Default::default()
    };
    let s = by_name(&name)
        .unwrap()
        .place(&inst, &trace, &opts, &Silent)
        .unwrap();
    assert_eq!(s.status, plexserve_solver::SolveStatus::TimeLimit);
}
