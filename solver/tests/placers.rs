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

/// A random instance (1–8 models with pp 1/2/4 profiles, some shapes missing), a bursty random
/// trace and a random placement over up to 7 groups.
fn random_case(
    rng: &mut rand_chacha::ChaCha8Rng,
) -> (Instance, Trace, plexserve_solver::Placement) {
    use plexserve_solver::{Group, Placement};
    use rand::Rng;
    let n_models = rng.random_range(1..9usize);
    let mut profiles = Vec::new();
    for m in 0..n_models {
        let mut configs = Vec::new();
        for pp in [1u32, 2, 4] {
            if rng.random_bool(0.15) && pp > 1 {
                continue;
            }
            let stages: Vec<String> = (0..pp)
                .map(|_| format!("{}", rng.random_range(0.01..0.4) / pp as f64))
                .collect();
            configs.push(format!(
                r#"{{"pp":{pp},"tp":1,"stage_latency_s":[[{}]],"stage_weight_gib":[{}]}}"#,
                stages.join(","),
                vec!["1"; pp as usize].join(",")
            ));
        }
        profiles.push(format!(
            r#""p{m}":{{"batch_sizes":[1],"configs":[{}]}}"#,
            configs.join(",")
        ));
    }
    let models: Vec<String> = (0..n_models)
        .map(|m| {
            format!(
                r#"{{"name":"m{m}","profile":"p{m}","slo_s":{}}}"#,
                rng.random_range(0.05..0.9)
            )
        })
        .collect();
    let json = format!(
        r#"{{"schema":"plexserve/instance/v1","name":"r","cluster":{{"devices":64,"memory_budget_gib":4}},
        "profiles":{{{}}},"models":[{}],
        "workload":{{"kind":"requests","requests":[{{"t_s":0,"model":"m0"}}]}},
        "simulator":{{"warmup_s":{}}}}}"#,
        profiles.join(","),
        models.join(","),
        [0.0, 5.0, 40.0][rng.random_range(0..3usize)]
    );
    let inst = Instance::from_json("random.json".as_ref(), &json).expect("valid instance");
    let n = rng.random_range(0..3000usize);
    let mut t = 0.0f64;
    let mut trace = Trace::default();
    for _ in 0..n {
        match rng.random_range(0..10) {
            0 => {}
            1 => t += rng.random_range(0.0..2.0),
            _ => t += rng.random_range(0.0..0.05),
        }
        trace.arrival_s.push(t);
        trace.model.push(rng.random_range(0..n_models as u32));
    }
    let mut groups = Vec::new();
    let mut next = 0;
    for _ in 0..rng.random_range(0..8usize) {
        let pp = [1u32, 2, 4][rng.random_range(0..3usize)];
        let models: Vec<u32> = (0..n_models as u32)
            .filter(|_| rng.random_bool(0.25))
            .collect();
        groups.push(Group {
            pp,
            tp: 1,
            devices: (next..next + pp).collect(),
            models,
        });
        next += pp;
    }
    let mut p = Placement { groups };
    p.normalize();
    (inst, trace, p)
}

/// Incremental scoring (re-simulating only the models a change can affect) gives exactly the
/// counts and score of a from-scratch per-model simulation after every random addition and
/// replacement, and the counts and attainment of the whole-trace simulator, under both fast
/// dispatch policies and both search statistics.
#[test]
fn incremental_scores_equal_full_simulation_on_random_instances() {
    use plexserve_solver::placer::greedy::normalize_tracking;
    use plexserve_solver::sim::{affected_models, ModelStats, ModelView, ViewScratch};
    use plexserve_solver::{Dispatch, Scratch, SimOptions, Simulator};
    use rand::{Rng, SeedableRng};
    let mut changes = 0;
    let mut partial_changes = 0;
    for case in 0..60u64 {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(case);
        let (inst, trace, mut p) = random_case(&mut rng);
        let n_models = inst.models.len();
        let mut sim = Simulator::new(&inst, &trace).with_options(SimOptions {
            faithful_search_stats: case % 2 == 1,
            ..SimOptions::default()
        });
        if case % 3 == 2 {
            sim.config.dispatch = Dispatch::SloAware;
        }
        let all: Vec<usize> = (0..n_models).collect();
        let view = ModelView::new(&sim, &all);
        let mut stats = ModelStats::default();
        let mut scratch_stats = ModelStats::default();
        let mut clocks = ViewScratch::default();
        let mut affected = Vec::new();
        let mut scratch = Scratch::default();
        view.simulate_all(&sim, &p, &mut stats, &mut clocks);
        for step in 0..12 {
            let ctx = format!("case {case} step {step}: {p:?}");
            // From scratch, and the whole-trace simulator.
            view.simulate_all(&sim, &p, &mut scratch_stats, &mut clocks);
            assert_eq!(stats, scratch_stats, "{ctx}");
            // A component's latency sum sits on its lowest model only.
            for m in 0..n_models {
                affected_models(&p, &[], &[m], &mut affected, n_models);
                let root = affected.iter().position(|&a| a).unwrap();
                if root != m {
                    assert_eq!(stats.latency_sum_m[m], 0.0, "{ctx}: model {m}");
                }
            }
            let score = view.score(&sim, &stats, p.replicas());
            let scratch_score = view.score(&sim, &scratch_stats, p.replicas());
            assert_eq!(
                score.value.to_bits(),
                scratch_score.value.to_bits(),
                "{ctx}"
            );
            let whole = sim.evaluate(&p, &mut scratch);
            let k = &scratch.counters;
            assert_eq!(stats.good_m, k.good_m, "{ctx}");
            assert_eq!(stats.routed_g, k.routed_g, "{ctx}");
            assert_eq!(stats.good_g, k.good_g, "{ctx}");
            assert_eq!(view.requests_of(), &k.req_m[..], "{ctx}");
            assert_eq!(
                score.attainment.to_bits(),
                whole.attainment.to_bits(),
                "{ctx}"
            );
            assert_eq!(score.replicas, whole.replicas, "{ctx}");
            // The mean latency adds the same terms in another order.
            let tol = 1e-12 * whole.mean_latency_s.abs().max(1e-300);
            assert!(
                (score.mean_latency_s - whole.mean_latency_s).abs() <= tol,
                "{ctx}: {score:?} vs {whole:?}"
            );
            if p.groups.is_empty() {
                break;
            }
            // A random change: add a model to a group, or replace one of the group's models.
            let g = rng.random_range(0..p.groups.len());
            let m = rng.random_range(0..n_models);
            let mut seeds = vec![m];
            if p.groups[g].models.contains(&(m as u32)) || rng.random_bool(0.3) {
                if let Some(&a) = p.groups[g].models.first() {
                    p.groups[g].models.retain(|&x| x != a);
                    seeds.push(a as usize);
                }
            }
            if !p.groups[g].models.contains(&(m as u32)) {
                p.groups[g].models.push(m as u32);
            }
            let old_of_new = normalize_tracking(&mut p);
            let mut normalized = p.clone();
            normalized.normalize();
            assert_eq!(p, normalized, "{ctx}: normalize_tracking normalizes");
            stats.permute_groups(&old_of_new);
            let g = old_of_new.iter().position(|&o| o == g).unwrap();
            let marked = affected_models(&p, &[g], &seeds, &mut affected, n_models);
            changes += 1;
            partial_changes += usize::from(marked < n_models);
            view.simulate(&sim, &p, &affected, &mut stats, &mut clocks);
        }
    }
    assert!(
        partial_changes * 4 > changes,
        "the cases exercise partial re-simulation ({partial_changes} of {changes})"
    );
}

/// The fast greedy with incremental simulation takes the same steps as the one that simulates
/// the whole trace at every step: same placement, same attainment.
#[test]
fn incremental_fast_greedy_equals_whole_simulation_greedy() {
    use plexserve_solver::placer::greedy::Search;
    use plexserve_solver::placer::Deadline;
    use plexserve_solver::{Placement, Scratch, SimOptions, Simulator};
    use rand::SeedableRng;
    let mut cases: Vec<(String, Instance, Trace)> = tiny_instances();
    for case in 0..20u64 {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1000 + case);
        let (inst, trace, _) = random_case(&mut rng);
        cases.push((format!("random {case}"), inst, trace));
    }
    for (name, inst, trace) in &cases {
        for faithful in [false, true] {
            let sim = Simulator::new(inst, trace).with_options(SimOptions {
                faithful_search_stats: faithful,
                ..SimOptions::default()
            });
            let search = Search::new(sim, faithful, Deadline::new(None));
            let all: Vec<usize> = (0..inst.models.len()).collect();
            for shapes in [
                vec![(1u32, 1u32); 4],
                vec![(2, 1); 2],
                vec![(1, 1), (2, 1), (4, 1)],
            ] {
                let start = Placement::from_shapes(&shapes);
                let (p1, s1) = search.fast_greedy(start.clone(), None, &mut Scratch::default());
                let (p2, s2) = search.fast_greedy_whole(start, &all, &mut Scratch::default());
                let ctx = format!("{name} faithful={faithful} {shapes:?}");
                assert_eq!(p1, p2, "{ctx}");
                assert_eq!(s1.attainment.to_bits(), s2.attainment.to_bits(), "{ctx}");
            }
        }
    }
}
