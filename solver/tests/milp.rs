//! The MILP placers against brute force: on tiny instances the inner MILP's objective equals the
//! best objective of the same formulation over every replica set (each routed by an LP), plans
//! are valid, the `exhaustive` oracle dominates `milp` in simulated score, limits and
//! infeasibility are reported honestly.
#![cfg(feature = "milp")]

use good_lp::{variable, Expression, ProblemVariables, SolverModel, Variable};
use plexserve_solver::placer::alpaserve::uniform_partitions;
use plexserve_solver::placer::milp::inner::{self, Formulation, Objective, Params, Settings};
use plexserve_solver::placer::milp::pattern;
use plexserve_solver::{
    by_name, model_weight_gib, parse_placer_spec, Instance, PlaceOptions, Silent, SolveStatus,
    Solved, SolverError, Trace,
};

fn tiny(name: &str) -> (Instance, Trace) {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../instances/tiny")
        .join(name);
    let inst = Instance::load(&p).unwrap();
    let trace = inst.workload.generate(inst.base_dir()).unwrap();
    (inst, trace)
}

fn inline(json: &str) -> (Instance, Trace) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("inline.json");
    let inst = Instance::from_json(&path, json).unwrap();
    let trace = inst.workload.generate(inst.base_dir()).unwrap();
    (inst, trace)
}

/// A 4-device instance with two profiles of different weight and speed, three models with
/// different rates and SLOs (one too tight for deep pipelines).
const MIXED: &str = r#"{
  "schema": "plexserve/instance/v1",
  "name": "milp-mixed",
  "cluster": { "devices": 4, "memory_budget_gib": 5.0 },
  "profiles": {
    "small": { "batch_sizes": [1], "configs": [
      { "pp": 1, "tp": 1, "stage_latency_s": [[0.10]], "stage_weight_gib": [2.0] },
      { "pp": 2, "tp": 1, "stage_latency_s": [[0.052, 0.050]], "stage_weight_gib": [1.1, 0.9] } ] },
    "big": { "batch_sizes": [1], "configs": [
      { "pp": 1, "tp": 1, "stage_latency_s": [[0.20]], "stage_weight_gib": [4.0] },
      { "pp": 2, "tp": 1, "stage_latency_s": [[0.11, 0.10]], "stage_weight_gib": [2.0, 2.0] } ] }
  },
  "models": [
    { "name": "a", "profile": "small", "slo_s": 0.5 },
    { "name": "b", "profile": "big", "slo_s": 0.8 },
    { "name": "c", "profile": "small", "slo_s": 0.115 }
  ],
  "workload": { "kind": "gamma", "duration_s": 120, "seed": 3,
                "streams": [ { "model": "a", "rate": 6.0, "cv": 2.0 },
                             { "model": "b", "rate": 2.0, "cv": 1.0 },
                             { "model": "c", "rate": 3.0, "cv": 3.0 } ] }
}"#;

/// Memory and load coupled: `whale` fills a device alone and carries little traffic, so the
/// other device serves `busy` and `light` by itself; the relaxation, which lends the whale's
/// spare load capacity to everyone, is far below the optimum, the pattern bound is not.
const COUPLED: &str = r#"{
  "schema": "plexserve/instance/v1",
  "name": "milp-coupled",
  "cluster": { "devices": 2, "memory_budget_gib": 4.0 },
  "profiles": {
    "big": { "batch_sizes": [1], "configs": [
      { "pp": 1, "tp": 1, "stage_latency_s": [[0.10]], "stage_weight_gib": [3.8] } ] },
    "small": { "batch_sizes": [1], "configs": [
      { "pp": 1, "tp": 1, "stage_latency_s": [[0.10]], "stage_weight_gib": [1.0] } ] }
  },
  "models": [
    { "name": "whale", "profile": "big", "slo_s": 1.0 },
    { "name": "busy", "profile": "small", "slo_s": 1.0 },
    { "name": "light", "profile": "small", "slo_s": 1.0 }
  ],
  "workload": { "kind": "gamma", "duration_s": 200, "seed": 5,
                "streams": [ { "model": "whale", "rate": 1.0, "cv": 1.0 },
                             { "model": "busy", "rate": 6.0, "cv": 1.0 },
                             { "model": "light", "rate": 1.0, "cv": 1.0 } ] }
}"#;

/// A random tiny instance (seeded): 2 or 4 devices, 2 to 4 models with their own profiles at
/// (1,1) and (2,1), weights from a tenth to nearly all of the budget, random rates.
fn random_instance(seed: u64) -> (Instance, Trace) {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let devices = if next() < 0.5 { 2 } else { 4 };
    let n = 2 + (next() * 3.0) as usize;
    let (mut profiles, mut models, mut streams) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..n {
        let w = 0.4 + 3.5 * next();
        let l = 0.02 + 0.2 * next();
        profiles.push(format!(
            r#""p{i}": {{ "batch_sizes": [1], "configs": [
              {{ "pp": 1, "tp": 1, "stage_latency_s": [[{l}]], "stage_weight_gib": [{w}] }},
              {{ "pp": 2, "tp": 1, "stage_latency_s": [[{}, {}]], "stage_weight_gib": [{}, {}] }} ] }}"#,
            0.55 * l,
            0.5 * l,
            0.55 * w,
            0.45 * w
        ));
        models.push(format!(
            r#"{{ "name": "m{i}", "profile": "p{i}", "slo_s": 2.0 }}"#
        ));
        streams.push(format!(
            r#"{{ "model": "m{i}", "rate": {}, "cv": 1.0 }}"#,
            0.5 + 8.0 * next()
        ));
    }
    let json = format!(
        r#"{{ "schema": "plexserve/instance/v1", "name": "milp-random-{seed}",
  "cluster": {{ "devices": {devices}, "memory_budget_gib": 4.0 }},
  "profiles": {{ {} }},
  "models": [{}],
  "workload": {{ "kind": "gamma", "duration_s": 60, "seed": {seed}, "streams": [{}] }} }}"#,
        profiles.join(","),
        models.join(","),
        streams.join(",")
    );
    inline(&json)
}

fn place(
    spec: &str,
    inst: &Instance,
    trace: &Trace,
    limit: Option<f64>,
) -> Result<Solved, SolverError> {
    let (name, params) = parse_placer_spec(spec).unwrap();
    by_name(&name)?.place(
        inst,
        trace,
        &PlaceOptions {
            params,
            time_limit_s: limit,
            ..Default::default()
        },
        &Silent,
    )
}

/// One pair of the test's own derivation of the formulation (independent of `inner`).
struct TestPair {
    model: usize,
    group: usize,
    weight_gib: f64,
    /// λ · penalized stage latency per stage.
    load: Vec<f64>,
}

fn derive_pairs(
    inst: &Instance,
    trace: &Trace,
    shapes: &[(u32, u32)],
) -> (Vec<TestPair>, Vec<f64>) {
    let n = inst.models.len();
    let mut counts = vec![0usize; n];
    for &m in &trace.model {
        counts[m as usize] += 1;
    }
    let span = trace.arrival_s.last().unwrap() - trace.arrival_s.first().unwrap();
    let rates: Vec<f64> = counts.iter().map(|&c| c as f64 / span).collect();
    let mut pairs = Vec::new();
    for (g, &(pp, tp)) in shapes.iter().enumerate() {
        for (m, model) in inst.models.iter().enumerate() {
            let Some(cfg) = inst.profile_of(m).config(pp, tp) else {
                continue;
            };
            let w = model_weight_gib(inst, m, pp, tp);
            let factor = 1.0 + inst.simulator.pp_penalty * pp as f64;
            let stages: Vec<f64> = cfg.stage_latency_s[0].iter().map(|l| l * factor).collect();
            let latency = stages.iter().sum::<f64>() + inst.simulator.overhead_s;
            if w <= inst.budget_gib() + 1e-9 && latency <= model.slo_s {
                pairs.push(TestPair {
                    model: m,
                    group: g,
                    weight_gib: w,
                    load: stages.iter().map(|l| rates[m] * l).collect(),
                });
            }
        }
    }
    (pairs, rates)
}

/// The best routing of a fixed replica set, by LP: min U (all traffic routed) or max served share
/// (every stage load ≤ target). `None` when infeasible.
fn route(
    pairs: &[TestPair],
    chosen: &[usize],
    rates: &[f64],
    shapes: &[(u32, u32)],
    objective: Objective,
) -> Option<f64> {
    let mut vars = ProblemVariables::new();
    let r: Vec<Variable> = chosen
        .iter()
        .map(|_| vars.add(variable().min(0.0).max(1.0)))
        .collect();
    let u = vars.add(variable().min(0.0));
    let total: f64 = rates.iter().sum();
    let mut obj = Expression::default();
    match objective {
        Objective::Utilisation => obj.add_mul(1.0, u),
        Objective::Goodput { .. } => {
            for (i, &k) in chosen.iter().enumerate() {
                obj.add_mul(rates[pairs[k].model] / total, r[i]);
            }
        }
    }
    let mut problem = match objective {
        Objective::Utilisation => vars.minimise(obj.clone()).using(good_lp::highs),
        Objective::Goodput { .. } => vars.maximise(obj.clone()).using(good_lp::highs),
    };
    problem = problem
        .set_option("output_flag", false)
        .set_option("threads", 1);
    for (m, &rate) in rates.iter().enumerate() {
        let mut sum = Expression::default();
        for (i, &k) in chosen.iter().enumerate() {
            if pairs[k].model == m {
                sum.add_mul(1.0, r[i]);
            }
        }
        match objective {
            Objective::Utilisation if rate > 0.0 => problem.add_constraint(sum.eq(1.0)),
            _ => problem.add_constraint(sum.leq(1.0)),
        };
    }
    for (g, &(pp, _)) in shapes.iter().enumerate() {
        for stage in 0..pp as usize {
            let mut load = Expression::default();
            for (i, &k) in chosen.iter().enumerate() {
                if pairs[k].group == g {
                    load.add_mul(pairs[k].load[stage], r[i]);
                }
            }
            match objective {
                Objective::Utilisation => problem.add_constraint(load.leq(u)),
                Objective::Goodput { target } => problem.add_constraint(load.leq(target)),
            };
        }
    }
    let sol = problem.solve().ok()?;
    Some(obj.eval_with(&sol))
}

/// The formulation's optimum over every replica set: memory per group, every model covered
/// (utilisation objective), best routing by LP, plus the replica tie-break.
fn brute_force(
    inst: &Instance,
    trace: &Trace,
    shapes: &[(u32, u32)],
    params: &Params,
) -> Option<f64> {
    let (pairs, rates) = derive_pairs(inst, trace, shapes);
    assert!(
        pairs.len() <= 16,
        "brute force over {} pairs is too slow",
        pairs.len()
    );
    let util = matches!(params.objective, Objective::Utilisation);
    let mut best: Option<f64> = None;
    for mask in 0u32..(1 << pairs.len()) {
        let chosen: Vec<usize> = (0..pairs.len()).filter(|k| mask >> k & 1 == 1).collect();
        let fits = (0..shapes.len()).all(|g| {
            let used: f64 = chosen
                .iter()
                .filter(|&&k| pairs[k].group == g)
                .map(|&k| pairs[k].weight_gib)
                .sum();
            used <= inst.budget_gib() + 1e-9
        });
        let covered = (0..inst.models.len()).all(|m| chosen.iter().any(|&k| pairs[k].model == m));
        if !fits || (util && !covered) {
            continue;
        }
        let Some(routed) = route(&pairs, &chosen, &rates, shapes, params.objective) else {
            continue;
        };
        let value = if util {
            routed + params.eps * chosen.len() as f64
        } else {
            routed - params.eps * chosen.len() as f64
        };
        let improves = match best {
            None => true,
            Some(b) if util => value < b,
            Some(b) => value > b,
        };
        if improves {
            best = Some(value);
        }
    }
    best
}

fn exact(objective: Objective, eps: f64) -> Params {
    Params::new(
        objective,
        eps,
        Settings {
            gap: 0.0,
            time_limit_s: None,
            cutoff: None,
        },
    )
}

/// Partitions small enough to brute-force, uniform ones plus a mixed one where it exists.
fn partitions(inst: &Instance) -> Vec<Vec<(u32, u32)>> {
    let n = inst.cluster.devices;
    let mut out = uniform_partitions(n, false);
    if n == 4 {
        out.push(vec![(2, 1), (1, 1), (1, 1)]);
    }
    out
}

#[test]
fn inner_milp_matches_brute_force() {
    let cases = [
        tiny("two-test-models.json"),
        tiny("maf1-four-models.json"),
        tiny("three-test-profiles.json"),
        tiny("bert-test-power-law.json"),
        inline(MIXED),
    ];
    let mut compared = 0;
    for (inst, trace) in &cases {
        let rates = inner::arrival_rates(trace, inst.models.len());
        for shapes in partitions(inst) {
            let f = Formulation::new(inst, &rates, &shapes);
            let (pairs, _) = derive_pairs(inst, trace, &shapes);
            assert_eq!(
                f.pairs.len(),
                pairs.len(),
                "{} {shapes:?}: feasible pairs",
                inst.name
            );
            if pairs.len() > 14 {
                continue;
            }
            let mut variants = Vec::new();
            for base in [
                exact(Objective::Utilisation, 1e-3),
                exact(Objective::Utilisation, -1e-3),
                exact(Objective::Goodput { target: 0.3 }, 1e-3),
            ] {
                // Strengthened (default), plain, and without the symmetry rows: one optimum.
                variants.push(base);
                variants.push(Params {
                    cuts: false,
                    ..base
                });
                variants.push(Params {
                    symmetry: false,
                    ..base
                });
            }
            for params in variants {
                let want = brute_force(inst, trace, &shapes, &params);
                if let (Some(w), Objective::Utilisation) = (want, params.objective) {
                    // The replica bound is a valid lower bound on the optimum.
                    let bound = f.objective_bound(params.eps, f.utilisation_bound());
                    assert!(
                        bound <= w + 1e-9 * (1.0 + w.abs()),
                        "{} {shapes:?}: replica bound {bound} above the optimum {w}",
                        inst.name
                    );
                    // A cutoff above the optimum keeps it; one at or below it leaves nothing.
                    let mut above = params;
                    above.settings.cutoff = Some(w + 1e-3 * (1.0 + w.abs()));
                    let sol = inner::solve(&f, &above, f.lpt().as_deref()).unwrap();
                    assert!(
                        (sol.objective - w).abs() <= 1e-6 * (1.0 + w.abs()),
                        "{} {shapes:?}: with cutoff {:?}: {} vs {w}",
                        inst.name,
                        above.settings.cutoff,
                        sol.objective
                    );
                    // Local search keeps a valid, covering set and never claims better than
                    // the optimum; the value it reports is its set's routed objective.
                    if let Some(start) = f.lpt() {
                        let far = std::time::Instant::now() + std::time::Duration::from_secs(600);
                        let (set, v) = f.local_search(&start, params.eps, far).unwrap();
                        assert!(
                            v >= w - 1e-6 * (1.0 + w.abs()),
                            "{} {shapes:?}: local search {v} below the optimum {w}",
                            inst.name
                        );
                        let again = f.start_value(&set, Objective::Utilisation, params.eps);
                        assert!((again - v).abs() <= 1e-9 * (1.0 + v.abs()));
                        f.placement_of(&set).validate(inst).unwrap();
                    }
                    let mut below = params;
                    below.settings.cutoff = Some(w - 1e-3 * (1.0 + w.abs()));
                    assert!(
                        inner::solve(&f, &below, f.lpt().as_deref()).is_err(),
                        "{} {shapes:?}: a solution better than the optimum {w}",
                        inst.name
                    );
                }
                let got = inner::solve(&f, &params, None);
                match (want, got) {
                    (None, Err(_)) => {}
                    (Some(w), Ok(sol)) => {
                        assert!(
                            (sol.objective - w).abs() <= 1e-6 * (1.0 + w.abs()),
                            "{} {shapes:?} {:?}: MILP {} vs brute force {w}",
                            inst.name,
                            params.objective,
                            sol.objective
                        );
                        assert_eq!(
                            sol.status,
                            SolveStatus::Optimal,
                            "{} {shapes:?} {:?}: gap {}",
                            inst.name,
                            params.objective,
                            sol.gap
                        );
                        // The same optimum from the LPT warm start.
                        if let Some(start) = f.lpt() {
                            let warm = inner::solve(&f, &params, Some(&start)).unwrap();
                            assert!(
                                (warm.objective - sol.objective).abs() <= 1e-6 * (1.0 + w.abs())
                            );
                        }
                        sol.placement.validate(inst).unwrap();
                        compared += 1;
                    }
                    (w, g) => panic!(
                        "{} {shapes:?}: brute force {w:?}, MILP {:?}",
                        inst.name,
                        g.map(|s| s.objective)
                    ),
                }
            }
        }
    }
    assert!(compared >= 60, "only {compared} comparisons ran");
}

#[test]
fn milp_plans_are_valid_and_exhaustive_dominates() {
    for (inst, trace) in [
        tiny("two-test-models.json"),
        tiny("maf1-four-models.json"),
        tiny("three-test-profiles.json"),
        inline(MIXED),
    ] {
        for spec in [
            "milp:gap=0",
            "milp:gap=0,warm=lpt,fill=false",
            "milp:objective=goodput,target=0.8",
        ] {
            let m = place(spec, &inst, &trace, Some(600.0)).unwrap();
            let p = &m.schedule.segments[0].1;
            p.validate(&inst)
                .unwrap_or_else(|e| panic!("{} {spec}: {e}", inst.name));
            assert!(m.objective.is_some());
            assert!(matches!(
                m.status,
                SolveStatus::Optimal | SolveStatus::GapLimit
            ));
            let ex = place("exhaustive", &inst, &trace, None).unwrap();
            assert!(
                ex.score.value >= m.score.value - 1e-12,
                "{} {spec}: exhaustive {:?} < milp {:?}",
                inst.name,
                ex.score,
                m.score
            );
        }
        let again = place("milp:gap=0", &inst, &trace, Some(600.0)).unwrap();
        let first = place("milp:gap=0", &inst, &trace, Some(600.0)).unwrap();
        assert_eq!(
            again.schedule, first.schedule,
            "{}: deterministic",
            inst.name
        );
        assert_eq!(first.status, SolveStatus::Optimal);
    }
}

#[test]
fn alpaserve_ilps_give_valid_plans() {
    for (inst, trace) in [
        tiny("two-test-models.json"),
        tiny("maf1-four-models.json"),
        tiny("three-test-profiles.json"),
        inline(MIXED),
    ] {
        for spec in ["sr-ilp:gap=0", "alpaserve-ilp:gap=0"] {
            let s = place(spec, &inst, &trace, Some(600.0)).unwrap();
            s.schedule.segments[0]
                .1
                .validate(&inst)
                .unwrap_or_else(|e| panic!("{} {spec}: {e}", inst.name));
            assert_eq!(s.status, SolveStatus::Optimal, "{} {spec}", inst.name);
            assert!(s.objective.is_some_and(|o| o >= 0.0));
        }
    }
}

/// SR-ILP on 2 devices × 4 models against its own objective enumerated over every placement.
#[test]
fn sr_ilp_matches_brute_force() {
    let (inst, trace) = tiny("maf1-four-models.json");
    let s = place("sr-ilp:gap=0", &inst, &trace, Some(600.0)).unwrap();
    let n = inst.models.len();
    let d = inst.cluster.devices as usize;
    let (_, rates) = derive_pairs(&inst, &trace, &[(1, 1)]);
    let coef: Vec<f64> = (0..n)
        .map(|m| {
            let l: f64 = inst.profile_of(m).config(1, 1).unwrap().stage_latency_s[0]
                .iter()
                .sum();
            if rates[m] > 0.0 {
                1.0 / l / rates[m]
            } else {
                0.0
            }
        })
        .collect();
    let mut best = f64::NEG_INFINITY;
    for mask in 0u32..(1 << (n * d)) {
        let on = |m: usize, j: usize| mask >> (m * d + j) & 1 == 1;
        let fits = (0..d).all(|j| {
            (0..n)
                .filter(|&m| on(m, j))
                .map(|m| model_weight_gib(&inst, m, 1, 1))
                .sum::<f64>()
                <= inst.budget_gib() + 1e-9
        });
        if !fits {
            continue;
        }
        let cap: Vec<f64> = (0..n)
            .map(|m| (0..d).filter(|&j| on(m, j)).count() as f64 * coef[m])
            .collect();
        let active: Vec<f64> = (0..n).filter(|&m| coef[m] > 0.0).map(|m| cap[m]).collect();
        let v = active.iter().copied().fold(f64::INFINITY, f64::min)
            + 1e-4 * active.iter().sum::<f64>();
        best = best.max(v);
    }
    let got = s.objective.unwrap();
    assert!(
        (got - best).abs() <= 1e-6 * (1.0 + best.abs()),
        "sr-ilp {got} vs brute force {best}"
    );
}

#[test]
fn time_limited_milp_reports_time_limit() {
    // 16 devices, 24 models: far more than HiGHS finishes in a millisecond.
    let mut models = String::new();
    let mut streams = String::new();
    for i in 0..24 {
        let sep = if i == 0 { "" } else { "," };
        models.push_str(&format!(
            r#"{sep}{{ "name": "m{i}", "profile": "p{}", "slo_s": {} }}"#,
            i % 2,
            0.4 + 0.05 * (i % 5) as f64
        ));
        streams.push_str(&format!(
            r#"{sep}{{ "model": "m{i}", "rate": {}, "cv": 2.0 }}"#,
            0.5 + (i * 7 % 11) as f64 * 0.4
        ));
    }
    let json = format!(
        r#"{{ "schema": "plexserve/instance/v1", "name": "milp-limit",
  "cluster": {{ "devices": 16, "memory_budget_gib": 7.0 }},
  "profiles": {{
    "p0": {{ "batch_sizes": [1], "configs": [
      {{ "pp": 1, "tp": 1, "stage_latency_s": [[0.10]], "stage_weight_gib": [2.0] }},
      {{ "pp": 2, "tp": 1, "stage_latency_s": [[0.052, 0.051]], "stage_weight_gib": [1.0, 1.0] }} ] }},
    "p1": {{ "batch_sizes": [1], "configs": [
      {{ "pp": 1, "tp": 1, "stage_latency_s": [[0.17]], "stage_weight_gib": [3.1] }},
      {{ "pp": 2, "tp": 1, "stage_latency_s": [[0.09, 0.088]], "stage_weight_gib": [1.6, 1.5] }} ] }}
  }},
  "models": [{models}],
  "workload": {{ "kind": "gamma", "duration_s": 30, "seed": 1, "streams": [{streams}] }} }}"#
    );
    let (inst, trace) = inline(&json);
    let rates = inner::arrival_rates(&trace, inst.models.len());
    let f = Formulation::new(&inst, &rates, &[(1, 1); 16]);
    let mut params = exact(Objective::Utilisation, 1e-4);
    params.settings.time_limit_s = Some(1e-4);
    match inner::solve(&f, &params, f.lpt().as_deref()) {
        Ok(sol) => assert_eq!(sol.status, SolveStatus::TimeLimit),
        Err(e) => panic!("the LPT start is feasible, so HiGHS keeps an incumbent: {e:?}"),
    }
    let s = place("milp:warm=lpt", &inst, &trace, Some(0.01)).unwrap();
    assert_eq!(s.status, SolveStatus::TimeLimit);
    // The solve block says the time limit stopped it, and how far the proof got.
    assert_eq!(s.time_limited, Some(true));
    let (bound, gap, objective) = (s.bound.unwrap(), s.gap.unwrap(), s.objective.unwrap());
    assert!(bound <= objective && gap > 0.0, "{bound} {gap} {objective}");
    s.schedule.segments[0].1.validate(&inst).unwrap();
}

/// The time limit bounds the whole `milp` run (warm starts, MILPs, simulator fill), not only
/// the MILPs: a generous margin over the limit, measured from outside as well.
#[test]
fn milp_time_limit_bounds_the_whole_run() {
    let (inst, trace) = tiny("maf1-four-models.json");
    for spec in ["milp", "milp:warm=greedy"] {
        let started = std::time::Instant::now();
        let s = place(spec, &inst, &trace, Some(0.3)).unwrap();
        let wall = started.elapsed().as_secs_f64();
        assert!(s.time_s <= 0.3 + 1.0, "{spec}: {} s", s.time_s);
        assert!(wall <= 0.3 + 1.5, "{spec}: {wall} s");
        s.schedule.segments[0].1.validate(&inst).unwrap();
    }
}

#[test]
fn infeasible_instances_name_the_model() {
    // "huge" fits no device group at any shape; "tight" fits but meets its SLO nowhere.
    let json = r#"{
  "schema": "plexserve/instance/v1", "name": "milp-infeasible",
  "cluster": { "devices": 2, "memory_budget_gib": 4.0 },
  "profiles": {
    "ok": { "batch_sizes": [1], "configs": [
      { "pp": 1, "tp": 1, "stage_latency_s": [[0.1]], "stage_weight_gib": [2.0] } ] },
    "huge": { "batch_sizes": [1], "configs": [
      { "pp": 1, "tp": 1, "stage_latency_s": [[0.1]], "stage_weight_gib": [9.0] },
      { "pp": 2, "tp": 1, "stage_latency_s": [[0.05, 0.05]], "stage_weight_gib": [4.5, 4.5] } ] }
  },
  "models": [
    { "name": "fine", "profile": "ok", "slo_s": 1.0 },
    { "name": "whale", "profile": "huge", "slo_s": 1.0 }
  ],
  "workload": { "kind": "gamma", "duration_s": 20, "seed": 0,
                "streams": [ { "model": "fine", "rate": 1.0, "cv": 1.0 },
                             { "model": "whale", "rate": 1.0, "cv": 1.0 } ] }
}"#;
    let (inst, trace) = inline(json);
    for spec in ["milp", "sr-ilp", "alpaserve-ilp"] {
        match place(spec, &inst, &trace, Some(60.0)) {
            Err(SolverError::Infeasible(msg)) if msg.contains("whale") => {}
            other => panic!(
                "{spec}: expected Infeasible naming whale, got {:?}",
                other.map(|s| s.score)
            ),
        }
    }
    let tight = json.replace(
        r#""slo_s": 1.0 },
    { "name": "whale""#,
        r#""slo_s": 0.05 },
    { "name": "whale""#,
    );
    let tight = tight.replace(
        r#""stage_weight_gib": [9.0]"#,
        r#""stage_weight_gib": [1.0]"#,
    );
    let (inst, trace) = inline(&tight);
    match place("milp", &inst, &trace, Some(60.0)) {
        Err(SolverError::Infeasible(msg)) => {
            assert!(msg.contains("fine") && msg.contains("SLO"), "{msg}")
        }
        other => panic!(
            "expected an SLO infeasibility, got {:?}",
            other.map(|s| s.score)
        ),
    }
}

#[test]
fn milp_rejects_bad_options() {
    let (inst, trace) = tiny("two-test-models.json");
    for spec in [
        "milp:gap=2",
        "milp:objective=fast",
        "milp:warm=magic",
        "milp:nope=1",
        "sr-ilp:eps=1",
    ] {
        assert!(
            matches!(
                place(spec, &inst, &trace, None),
                Err(SolverError::Option(_))
            ),
            "{spec}"
        );
    }
}

/// The whole search against brute force: the best objective over the partitions it enumerated
/// equals the best brute-force optimum over them, every partition's proved bound (also of the
/// partitions it pruned without a solve) is below that partition's optimum, and a run to a zero
/// gap says optimal.
#[test]
fn search_report_is_exact_on_tiny_instances() {
    use plexserve_solver::placer::milp::search_with_report;
    let mut checked = 0;
    for (inst, trace) in [
        tiny("two-test-models.json"),
        tiny("maf1-four-models.json"),
        tiny("three-test-profiles.json"),
        inline(MIXED),
        inline(COUPLED),
    ] {
        let (_, params) = parse_placer_spec("milp:gap=0").unwrap();
        let opts = PlaceOptions {
            params,
            time_limit_s: Some(600.0),
            ..Default::default()
        };
        let (solved, report) = search_with_report(&inst, &trace, &opts, &Silent).unwrap();
        assert_eq!(report.status, SolveStatus::Optimal, "{}", inst.name);
        assert_eq!(solved.status, SolveStatus::Optimal, "{}", inst.name);
        assert!(!report.time_limited, "{}", inst.name);
        assert_eq!(solved.time_limited, Some(false), "{}", inst.name);
        assert_eq!(solved.bound, Some(report.bound), "{}", inst.name);
        assert!(solved.gap.unwrap() <= 1e-6, "{}", inst.name);
        let params = exact(Objective::Utilisation, 1e-4);
        let mut best: Option<f64> = None;
        let mut complete = true;
        for part in &report.partitions {
            if derive_pairs(&inst, &trace, &part.shapes).0.len() > 14 {
                complete = false;
                continue;
            }
            let Some(opt) = brute_force(&inst, &trace, &part.shapes, &params) else {
                continue;
            };
            assert!(
                part.bound <= opt + 1e-6 * (1.0 + opt.abs()),
                "{} {:?} ({}): bound {} above the optimum {opt}",
                inst.name,
                part.shapes,
                part.outcome,
                part.bound
            );
            best = Some(best.map_or(opt, |b: f64| b.min(opt)));
        }
        if complete {
            let (want, got) = (best.unwrap(), report.best.unwrap());
            assert!(
                (want - got).abs() <= 1e-6 * (1.0 + want.abs()),
                "{}: search {got} vs brute force {want}",
                inst.name
            );
            assert!(report.gap <= 1e-6, "{}: gap {}", inst.name, report.gap);
            checked += 1;
        }
    }
    assert!(checked >= 3, "only {checked} instances fully brute-forced");
}

/// The pattern bound (configuration LP) is a valid lower bound: on random tiny instances it
/// never proves `U > t` for a `t` that the exhaustive optimum of the formulation reaches, and
/// its bisected bound stays at or below that optimum. On the coupled instance it is tight up to
/// its load grid (a step of `t/120` per member of a group) where the replica bound is not.
#[test]
fn pattern_bound_is_below_the_exhaustive_optimum() {
    let params = exact(Objective::Utilisation, 0.0);
    let mut compared = 0;
    let mut above_replica_bound = 0;
    for seed in 0..40 {
        let (inst, trace) = random_instance(seed);
        let rates = inner::arrival_rates(&trace, inst.models.len());
        for shapes in partitions(&inst) {
            if derive_pairs(&inst, &trace, &shapes).0.len() > 10 {
                continue;
            }
            let f = Formulation::new(&inst, &rates, &shapes);
            let Some(opt) = brute_force(&inst, &trace, &shapes, &params) else {
                // No replica set at all: the proof may say anything but must not fail.
                continue;
            };
            assert!(
                !pattern::proves_above(&f, opt * (1.0 + 1e-9), None),
                "seed {seed} {shapes:?}: proved U > {opt}, the optimum"
            );
            let bound = pattern::bisect(&f, 0.0, 2.0 * opt, 1e-4, None);
            assert!(
                bound <= opt * (1.0 + 1e-9),
                "seed {seed} {shapes:?}: pattern bound {bound} above the optimum {opt}"
            );
            if bound > f.utilisation_bound() * (1.0 + 1e-3) {
                above_replica_bound += 1;
            }
            compared += 1;
        }
    }
    assert!(compared >= 40, "only {compared} comparisons ran");
    assert!(
        above_replica_bound > 0,
        "the pattern bound never beat the replica bound"
    );

    let (inst, trace) = inline(COUPLED);
    let rates = inner::arrival_rates(&trace, inst.models.len());
    let shapes = [(1, 1), (1, 1)];
    let f = Formulation::new(&inst, &rates, &shapes);
    let opt = brute_force(&inst, &trace, &shapes, &params).unwrap();
    let bound = pattern::bisect(&f, 0.0, 2.0 * opt, 1e-4, None);
    let replica = f.utilisation_bound();
    assert!(
        bound <= opt * (1.0 + 1e-9) && bound >= 0.97 * opt,
        "coupled: pattern bound {bound}, optimum {opt} (replica bound {replica})"
    );
    assert!(
        replica < 0.8 * opt,
        "coupled: replica bound {replica} is not the weak one (optimum {opt})"
    );
}
