//! The stage DP (stage-dp-and-milp.md §2) against brute force, its cross-checks, hand-checkable
//! cases, metamorphic properties, and derived configurations feeding the simulator.

use plexserve_solver::{
    bottleneck_by_threshold, partition, Instance, LayerCost, PartitionOptions, Placement, Profile,
    ProfileFile, Scratch, Simulator, SolverError, StageObjective, StagePlan,
};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

// ------------------------------------------------------------------ helpers

/// A profile with one batch size per inner entry: `lat[layer][tp_index][batch]`.
fn profile(
    tp_degrees: &[u32],
    batch_sizes: &[u32],
    lat: &[Vec<Vec<f64>>],
    weight: &[Vec<f64>],
    act: &[Vec<f64>],
) -> Profile {
    Profile {
        batch_sizes: batch_sizes.to_vec(),
        configs: Vec::new(),
        tp_degrees: tp_degrees.to_vec(),
        layers: (0..lat.len())
            .map(|k| LayerCost {
                name: String::new(),
                latency_s: lat[k].clone(),
                weight_gib: weight[k].clone(),
                activation_gib: act[k].clone(),
            })
            .collect(),
        source: None,
    }
}

/// Stage latency summed from the first layer upwards, then the boundary send, exactly as the
/// spec defines it (the order matters for bit-exact comparisons).
fn stage_cost(p: &Profile, s: usize, e: usize, ti: usize, b: usize, link: Option<f64>) -> f64 {
    let mut acc = 0.0;
    for l in &p.layers[s..e] {
        acc += l.latency_s[ti][b];
    }
    let send = match link {
        Some(bw) if e < p.layers.len() => p.layers[e - 1]
            .activation_gib
            .get(b)
            .map_or(0.0, |a| a / bw),
        _ => 0.0,
    };
    acc + send
}

fn stage_weight(p: &Profile, s: usize, e: usize, ti: usize) -> f64 {
    let mut acc = 0.0;
    for l in &p.layers[s..e] {
        acc += l.weight_gib[ti];
    }
    acc
}

fn batch_index(p: &Profile) -> usize {
    p.batch1_index().unwrap_or(0)
}

/// Best (max, sum) per depth by enumerating every cut set and degree vector.
/// `best[p] = Some((max, sum))`: the smallest max over `p`-stage plans, then the smallest sum.
#[allow(clippy::needless_range_loop)] // depth indexes the per-depth table and the cut list
fn brute_force(p: &Profile, o: &PartitionOptions) -> Vec<Option<(f64, f64)>> {
    let l = p.layers.len();
    let g = o.devices;
    let b = batch_index(p);
    let allowed: Vec<usize> = (0..p.tp_degrees.len())
        .filter(|&ti| {
            let d = p.tp_degrees[ti];
            d <= o.devices_per_node && d <= g && o.tp.is_none_or(|t| t == d)
        })
        .collect();
    let mut best: Vec<Option<(f64, f64)>> = vec![None; l + 1];
    if allowed.is_empty() {
        return best;
    }
    for depth in 1..=l {
        if o.pp.is_some_and(|pp| pp as usize != depth) {
            continue;
        }
        // Cut sets: bitmask over the l−1 inner boundaries with depth−1 bits.
        for mask in 0u32..(1 << (l - 1)) {
            if mask.count_ones() as usize != depth - 1 {
                continue;
            }
            let mut cuts = vec![0];
            cuts.extend((1..l).filter(|k| mask >> (k - 1) & 1 == 1));
            cuts.push(l);
            let n_vec = allowed.len().pow(depth as u32);
            for mut code in 0..n_vec {
                let mut devices = 0;
                let mut mx = f64::NEG_INFINITY;
                let mut sum = 0.0;
                let mut ok = true;
                for s in 0..depth {
                    let ti = allowed[code % allowed.len()];
                    code /= allowed.len();
                    devices += p.tp_degrees[ti];
                    if stage_weight(p, cuts[s], cuts[s + 1], ti) > o.memory_budget_gib {
                        ok = false;
                        break;
                    }
                    let t = stage_cost(p, cuts[s], cuts[s + 1], ti, b, o.link_gib_per_s);
                    mx = mx.max(t);
                    sum += t;
                }
                let dev_ok = if o.exact_devices {
                    devices == g
                } else {
                    devices <= g
                };
                if !ok || !dev_ok {
                    continue;
                }
                let better = match best[depth] {
                    None => true,
                    Some((bm, bs)) => mx < bm || (mx == bm && sum < bs),
                };
                if better {
                    best[depth] = Some((mx, sum));
                }
            }
        }
    }
    best
}

/// The expected (objective, bottleneck, sum) from the per-depth brute force.
fn expected(best: &[Option<(f64, f64)>], o: &PartitionOptions) -> Option<(f64, f64, f64)> {
    let per_depth = |p: usize| best.get(p).copied().flatten();
    if let Some(pp) = o.pp {
        let (m, s) = per_depth(pp as usize)?;
        let obj = match o.objective {
            StageObjective::MinMax => m,
            StageObjective::Alpa => pp as f64 * m,
        };
        return Some((obj, m, s));
    }
    match o.objective {
        StageObjective::MinMax => {
            let tau = best
                .iter()
                .flatten()
                .map(|x| x.0)
                .fold(f64::INFINITY, f64::min);
            if !tau.is_finite() {
                return None;
            }
            // Any depth whose plans reach max ≤ τ (= τ) may give the smallest sum; per-depth
            // optimum sums are at that depth's own best max, which for the minimisers is τ.
            let sum = best
                .iter()
                .flatten()
                .filter(|x| x.0 <= tau)
                .map(|x| x.1)
                .fold(f64::INFINITY, f64::min);
            Some((tau, tau, sum))
        }
        StageObjective::Alpa => {
            let mut choice: Option<(f64, usize)> = None;
            for (p, x) in best.iter().enumerate() {
                if let Some((m, _)) = x {
                    let v = p as f64 * m;
                    if choice.is_none_or(|(bv, _)| v < bv) {
                        choice = Some((v, p));
                    }
                }
            }
            let (v, p) = choice?;
            let (m, s) = per_depth(p)?;
            Some((v, m, s))
        }
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1e-300)
}

/// Every validity rule of a returned plan (§6 "plan validity").
fn check_plan(p: &Profile, o: &PartitionOptions, plan: &StagePlan) {
    let b = batch_index(p);
    assert!(!plan.stages.is_empty());
    assert_eq!(plan.stages[0].start, 0);
    assert_eq!(plan.stages.last().unwrap().end, p.layers.len());
    for w in plan.stages.windows(2) {
        assert_eq!(w[0].end, w[1].start, "stages must be contiguous");
    }
    let mut devices = 0;
    let mut mx = f64::NEG_INFINITY;
    let mut sum = 0.0;
    for s in &plan.stages {
        assert!(s.start < s.end);
        let ti = p
            .tp_degrees
            .iter()
            .position(|&d| d == s.tp)
            .expect("a profiled degree");
        assert!(s.tp <= o.devices_per_node);
        if let Some(t) = o.tp {
            assert_eq!(s.tp, t);
        }
        devices += s.tp;
        assert_eq!(s.weight_gib, stage_weight(p, s.start, s.end, ti));
        assert!(s.weight_gib <= o.memory_budget_gib);
        for bi in 0..p.batch_sizes.len() {
            assert_eq!(
                s.latency_s[bi],
                stage_cost(p, s.start, s.end, ti, bi, o.link_gib_per_s)
            );
        }
        mx = mx.max(s.latency_s[b]);
        sum += s.latency_s[b];
    }
    assert_eq!(devices, plan.devices_used);
    if o.exact_devices {
        assert_eq!(devices, o.devices);
    } else {
        assert!(devices <= o.devices);
    }
    if let Some(pp) = o.pp {
        assert_eq!(plan.stages.len(), pp as usize);
    }
    assert_eq!(plan.bottleneck_s, mx, "τ* must be the plan's own max");
    assert!(close(plan.total_s, sum));
}

// ------------------------------------------------------------------ random small cases

#[derive(Debug, Clone)]
struct Case {
    profile: Profile,
    opts: PartitionOptions,
}

fn case_strategy() -> impl Strategy<Value = Case> {
    let shape = (
        1usize..=8, // layers
        prop::sample::select(vec![vec![1u32], vec![1, 2], vec![2, 4], vec![1, 2, 4]]),
        1usize..=2,                                       // batch sizes
        prop::sample::select(vec![0.25f64, 0.1, 0.0137]), // latency unit: exact and inexact sums
    );
    shape
        .prop_flat_map(|(l, tps, nb, unit)| {
            let nt = tps.len();
            (
                Just(tps),
                Just(nb),
                prop::collection::vec(
                    prop::collection::vec(prop::collection::vec(0u32..12, nb), nt),
                    l,
                ),
                prop::collection::vec(prop::collection::vec(0u32..8, nt), l),
                prop::collection::vec(prop::collection::vec(0u32..4, nb), l),
                Just(unit),
                (
                    1u32..=4,                               // pp
                    prop::sample::select(vec![1u32, 2, 4]), // G = pp·this, or a power of two
                    any::<bool>(),                          // G is a power of two instead
                    prop::sample::select(vec![2u32, 4, 8]), // devices per node
                    1u32..=12,                              // budget in 0.5 GiB
                    prop::option::of(prop::sample::select(vec![0.5f64, 2.0])),
                    (any::<bool>(), any::<bool>(), any::<bool>()), // fixed pp, exact, alpa
                ),
            )
        })
        .prop_map(
            |(
                tps,
                nb,
                lat,
                w,
                act,
                unit,
                (pp, gmul, pow2, dpn, budget, link, (fixed, exact, alpa)),
            )| {
                let batch_sizes: Vec<u32> = (1..=nb as u32).collect();
                let lat: Vec<Vec<Vec<f64>>> = lat
                    .iter()
                    .map(|per_tp| {
                        per_tp
                            .iter()
                            .map(|row| row.iter().map(|&x| x as f64 * unit).collect())
                            .collect()
                    })
                    .collect();
                let w: Vec<Vec<f64>> = w
                    .iter()
                    .map(|row| row.iter().map(|&x| x as f64 * 0.25).collect())
                    .collect();
                let act: Vec<Vec<f64>> = act
                    .iter()
                    .map(|row| row.iter().map(|&x| x as f64 * 0.125).collect())
                    .collect();
                let devices = if pow2 {
                    [1u32, 2, 4, 8][(pp * gmul) as usize % 4]
                } else {
                    pp * gmul
                };
                let mut opts = PartitionOptions::new(devices, budget as f64 * 0.5);
                opts.pp = fixed.then_some(pp);
                opts.devices_per_node = dpn;
                opts.link_gib_per_s = link;
                opts.exact_devices = exact;
                opts.objective = if alpa {
                    StageObjective::Alpa
                } else {
                    StageObjective::MinMax
                };
                Case {
                    profile: profile(&tps, &batch_sizes, &lat, &w, &act),
                    opts,
                }
            },
        )
}

/// Runs the DP, mapping a refusal of the request shape (pp > L and the like) to infeasible.
fn solve(c: &Case) -> Option<StagePlan> {
    match partition(&c.profile, &c.opts) {
        Ok(plan) => Some(plan),
        Err(SolverError::Infeasible(_)) => None,
        Err(e) => panic!("unexpected error {e} for {c:?}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 400,
        // Cargo runs integration tests from the crate root: keep regressions in
        // solver/proptest-regressions/ (committed).
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "proptest-regressions/stage_dp.txt",
        ))),
        ..ProptestConfig::default()
    })]

    /// The DP equals brute force on (objective, bottleneck, sum); the plan is valid; the bitset
    /// threshold search finds the same bottleneck bit for bit.
    #[test]
    fn dp_equals_brute_force(c in case_strategy()) {
        let want = expected(&brute_force(&c.profile, &c.opts), &c.opts);
        let got = solve(&c);
        match (want, &got) {
            (None, None) => {}
            (Some((obj, m, s)), Some(plan)) => {
                check_plan(&c.profile, &c.opts, plan);
                prop_assert!(close(plan.objective_s, obj), "objective {} vs {obj}", plan.objective_s);
                prop_assert!(close(plan.bottleneck_s, m), "bottleneck {} vs {m}", plan.bottleneck_s);
                prop_assert!(close(plan.total_s, s), "sum {} vs {s}", plan.total_s);
            }
            (w, g) => prop_assert!(false, "brute force {w:?} vs DP {g:?}"),
        }
        if c.opts.objective == StageObjective::MinMax {
            let by_threshold = bottleneck_by_threshold(&c.profile, &c.opts).map_err(|e| TestCaseError::fail(e.to_string()));
            match by_threshold {
                Ok(t) => prop_assert_eq!(t.map(f64::to_bits), got.as_ref().map(|p| p.bottleneck_s.to_bits())),
                Err(e) => prop_assert!(got.is_none(), "{e}"),
            }
        }
    }

    /// The uniform `(pp, tp)` pass equals the general DP restricted to that one degree, plan for
    /// plan (the tie-break is the same: earliest cut).
    #[test]
    fn uniform_equals_general_with_one_degree(c in case_strategy(), pick in 0usize..3) {
        let t = c.profile.tp_degrees[pick % c.profile.tp_degrees.len()];
        let mut uni = c.clone();
        uni.opts.tp = Some(t);
        let mut gen = c.clone();
        let ti = gen.profile.tp_degrees.iter().position(|&d| d == t).unwrap();
        gen.profile.tp_degrees = vec![t];
        for l in &mut gen.profile.layers {
            l.latency_s = vec![l.latency_s[ti].clone()];
            l.weight_gib = vec![l.weight_gib[ti]];
        }
        let u = if t > uni.opts.devices_per_node { None } else { solve(&uni) };
        let g = if t > gen.opts.devices_per_node || t > gen.opts.devices { None } else { solve(&gen) };
        if let Some(plan) = &u {
            check_plan(&uni.profile, &uni.opts, plan);
        }
        prop_assert_eq!(u, g);
    }

    /// More devices or more memory never raise the bottleneck (idle devices allowed).
    #[test]
    fn monotone_in_devices_and_memory(c in case_strategy()) {
        let mut c = c;
        c.opts.exact_devices = false;
        c.opts.objective = StageObjective::MinMax;
        let base = solve(&c).map(|p| p.bottleneck_s);
        let mut more_dev = c.clone();
        more_dev.opts.devices += 1;
        let mut more_mem = c.clone();
        more_mem.opts.memory_budget_gib *= 1.5;
        for other in [more_dev, more_mem] {
            let t = solve(&other).map(|p| p.bottleneck_s);
            match (base, t) {
                (Some(a), Some(b)) => prop_assert!(b <= a, "{b} > {a}"),
                (Some(_), None) => prop_assert!(false, "feasible became infeasible"),
                _ => {}
            }
        }
    }

    /// Scaling every latency (and activation) by 2^k scales τ* and the sum exactly.
    #[test]
    fn scaling_by_power_of_two_is_exact(c in case_strategy(), k in -3i32..=3) {
        let f = 2f64.powi(k);
        let mut s = c.clone();
        for l in &mut s.profile.layers {
            for row in &mut l.latency_s { for x in row { *x *= f; } }
            for a in &mut l.activation_gib { *a *= f; }
        }
        let (a, b) = (solve(&c), solve(&s));
        prop_assert_eq!(a.is_some(), b.is_some());
        if let (Some(a), Some(b)) = (a, b) {
            prop_assert_eq!(a.bottleneck_s * f, b.bottleneck_s);
            prop_assert_eq!(a.total_s * f, b.total_s);
        }
    }
}

// ------------------------------------------------------------------ hand-checkable cases

/// §2.2: prefixes A = (3,3) and B = (4,1) over the same layers, then a last stage of 5. A
/// lexicographic DP keeps A and ends at (5, 11); the exact answer is B's (5, 10).
fn lexicographic_counterexample() -> (Profile, PartitionOptions) {
    // Layer latencies 1, 2, 0.5, 5; boundary sends (link 1 GiB/s) 2, 1, 0.5 after layers 0, 1, 2.
    let lat = [1.0, 2.0, 0.5, 5.0].map(|x| vec![vec![x]]).to_vec();
    let act = [2.0, 1.0, 0.5, 0.0].map(|x| vec![x]).to_vec();
    let p = profile(&[1], &[1], &lat, &vec![vec![0.1]; 4], &act);
    let mut o = PartitionOptions::new(3, 1.0);
    o.pp = Some(3);
    o.link_gib_per_s = Some(1.0);
    (p, o)
}

#[test]
fn lexicographic_counterexample_is_solved_exactly() {
    let (p, o) = lexicographic_counterexample();
    let plan = partition(&p, &o).unwrap();
    check_plan(&p, &o, &plan);
    assert_eq!(plan.bottleneck_s, 5.0);
    assert_eq!(plan.total_s, 10.0);
    let cuts: Vec<(usize, usize)> = plan.stages.iter().map(|s| (s.start, s.end)).collect();
    assert_eq!(cuts, vec![(0, 2), (2, 3), (3, 4)]);
    // The uniform path agrees.
    let mut uo = o.clone();
    uo.tp = Some(1);
    assert_eq!(partition(&p, &uo).unwrap(), plan);

    // And a lexicographic (max, sum) DP really does get it wrong: it ends at (5, 11).
    let t = |i: usize, j: usize| stage_cost(&p, i, j, 0, 0, o.link_gib_per_s);
    let mut lex = vec![vec![(f64::INFINITY, f64::INFINITY); 5]; 4];
    lex[0][0] = (0.0, 0.0);
    for s in 1..=3 {
        for j in s..=4 {
            for i in s - 1..j {
                let (m, sum) = lex[s - 1][i];
                let cand = (m.max(t(i, j)), sum + t(i, j));
                if cand.0 < lex[s][j].0 || (cand.0 == lex[s][j].0 && cand.1 < lex[s][j].1) {
                    lex[s][j] = cand;
                }
            }
        }
    }
    assert_eq!(lex[3][4], (5.0, 11.0));
}

#[test]
fn equal_layers_split_evenly_and_heavy_layer_is_isolated() {
    let even = profile(
        &[1],
        &[1],
        &vec![vec![vec![0.25]]; 8],
        &vec![vec![1.0]; 8],
        &vec![vec![]; 8],
    );
    let mut o = PartitionOptions::new(4, 8.0);
    o.pp = Some(4);
    let plan = partition(&even, &o).unwrap();
    assert!(plan.stages.iter().all(|s| s.end - s.start == 2));
    assert_eq!(plan.bottleneck_s, 0.5);
    assert_eq!(plan.total_s, 2.0);

    let mut lat = vec![vec![vec![0.25]]; 6];
    lat[3] = vec![vec![2.0]];
    let heavy = profile(&[1], &[1], &lat, &vec![vec![1.0]; 6], &vec![vec![]; 6]);
    let mut o = PartitionOptions::new(3, 8.0);
    o.pp = Some(3);
    let plan = partition(&heavy, &o).unwrap();
    assert_eq!(plan.bottleneck_s, 2.0);
    assert!(plan.stages.iter().any(|s| (s.start, s.end) == (3, 4)));
}

#[test]
fn memory_cap_forces_a_higher_degree_and_ties_pick_smallest_degree() {
    // Two layers of 3 GiB at tp 1 (1.5 at tp 2); budget 2 GiB: each stage needs tp 2.
    let lat = vec![vec![vec![1.0], vec![0.75]]; 2];
    let w = vec![vec![3.0, 1.5]; 2];
    let p = profile(&[1, 2], &[1], &lat, &w, &vec![vec![]; 2]);
    let mut o = PartitionOptions::new(4, 2.0);
    o.pp = Some(2);
    let plan = partition(&p, &o).unwrap();
    assert!(plan.stages.iter().all(|s| s.tp == 2));
    assert_eq!(plan.devices_used, 4);
    // With room in memory, tp 1 and tp 2 cost the same here: the smaller degree wins the tie.
    let flat = profile(
        &[1, 2],
        &[1],
        &vec![vec![vec![1.0], vec![1.0]]; 2],
        &w,
        &vec![vec![]; 2],
    );
    let mut o = PartitionOptions::new(4, 8.0);
    o.pp = Some(2);
    let plan = partition(&flat, &o).unwrap();
    assert!(plan.stages.iter().all(|s| s.tp == 1));
}

#[test]
fn infeasible_and_bad_requests_are_errors_not_panics() {
    let p = profile(
        &[1, 2],
        &[1],
        &vec![vec![vec![1.0], vec![0.6]]; 4],
        &vec![vec![4.0, 2.0]; 4],
        &vec![vec![]; 4],
    );
    let o = PartitionOptions::new(2, 1.0);
    match partition(&p, &o) {
        Err(SolverError::Infeasible(msg)) => assert!(msg.contains("layer 0"), "{msg}"),
        other => panic!("expected infeasible, got {other:?}"),
    }
    let mut o = PartitionOptions::new(2, 8.0);
    o.pp = Some(5);
    assert!(matches!(partition(&p, &o), Err(SolverError::Infeasible(_))));
    o.pp = Some(0);
    assert!(matches!(partition(&p, &o), Err(SolverError::Option(_))));
    o.pp = None;
    o.tp = Some(3);
    assert!(matches!(partition(&p, &o), Err(SolverError::Option(_))));
    o.tp = None;
    o.devices = 0;
    assert!(matches!(partition(&p, &o), Err(SolverError::Option(_))));
    o.devices = 2;
    o.memory_budget_gib = f64::NAN;
    assert!(matches!(partition(&p, &o), Err(SolverError::Option(_))));
    let mut nan = p.clone();
    nan.layers[1].latency_s[0][0] = f64::NAN;
    assert!(matches!(
        partition(&nan, &PartitionOptions::new(2, 8.0)),
        Err(SolverError::Invalid { .. })
    ));
    let mut no_layers = p.clone();
    no_layers.layers.clear();
    assert!(partition(&no_layers, &PartitionOptions::new(2, 8.0)).is_err());
}

#[test]
fn alpa_objective_counts_padded_stages() {
    // Four equal layers: 1 stage → 1·4, 2 → 2·2, 4 → 4·1: all 4; the first depth wins the tie.
    let p = profile(
        &[1],
        &[1],
        &vec![vec![vec![1.0]]; 4],
        &vec![vec![1.0]; 4],
        &vec![vec![]; 4],
    );
    let mut o = PartitionOptions::new(4, 8.0);
    o.objective = StageObjective::Alpa;
    let plan = partition(&p, &o).unwrap();
    assert_eq!(plan.stages.len(), 1);
    assert_eq!(plan.objective_s, 4.0);
    // Min-max with a free depth uses every device it can.
    o.objective = StageObjective::MinMax;
    let plan = partition(&p, &o).unwrap();
    assert_eq!(plan.stages.len(), 4);
    assert_eq!(plan.bottleneck_s, 1.0);
}

// ------------------------------------------------------------------ files, instances, simulator

fn repo_path(rel: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(rel)
}

#[test]
fn profile_file_loads_and_partitions() {
    let file =
        ProfileFile::load(&repo_path("instances/layers/toy-transformer.profile.json")).unwrap();
    let p = &file.profiles["toy-12l"];
    let mut o = PartitionOptions::new(4, 2.0);
    o.pp = Some(2);
    o.devices_per_node = 4;
    let plan = partition(p, &o).unwrap();
    check_plan(p, &o, &plan);
    assert_eq!(plan.stages.len(), 2);
    let big =
        ProfileFile::load(&repo_path("instances/layers/synthetic-128l.profile.json")).unwrap();
    let p = &big.profiles["synthetic-128l"];
    let mut o = PartitionOptions::new(64, 4.0);
    o.pp = Some(8);
    let plan = partition(p, &o).unwrap();
    check_plan(p, &o, &plan);
    assert_eq!(
        bottleneck_by_threshold(p, &o).unwrap(),
        Some(plan.bottleneck_s)
    );
}

#[test]
fn derived_configs_load_and_feed_the_simulator() {
    let inst = Instance::load(&repo_path("instances/layers/toy-transformer.json")).unwrap();
    let budget = inst.budget_gib();
    let prof = &inst.profiles[inst.models[0].profile];
    // 6.5 GiB of weights at tp 1 do not fit 4 GiB; at tp 2 (3.25 GiB) they do.
    assert!(prof.config(1, 1).is_none());
    for (pp, tp) in [
        (1, 2),
        (1, 4),
        (2, 1),
        (2, 2),
        (2, 4),
        (4, 1),
        (4, 2),
        (8, 1),
    ] {
        let c = prof
            .config(pp, tp)
            .unwrap_or_else(|| panic!("config pp {pp} tp {tp} derived"));
        assert_eq!(c.stage_latency_s.len(), prof.batch_sizes.len());
        assert!(c.stage_latency_s.iter().all(|row| row.len() == pp as usize));
        assert!(c.weight_gib() <= budget);
    }
    // tp 8 exceeds a node of 4; pp·tp never exceeds the cluster.
    assert!(prof.configs.iter().all(|c| c.tp <= 4 && c.pp * c.tp <= 8));
    // Stage latencies per batch size are those of the chosen cuts.
    let c = prof.config(2, 2).unwrap();
    let mut o = PartitionOptions::for_cluster(&inst.cluster, 4);
    o.pp = Some(2);
    o.tp = Some(2);
    let plan = partition(prof, &o).unwrap();
    for (k, s) in plan.stages.iter().enumerate() {
        assert_eq!(c.stage_latency_s[0][k], s.latency_s[0]);
        assert_eq!(c.stage_latency_s[1][k], s.latency_s[1]);
        assert_eq!(c.stage_weight_gib[k], s.weight_gib);
    }
    // The explicit configuration wins over the derived one and is not duplicated.
    let explicit = &inst.profiles[inst.models[1].profile];
    let pp2: Vec<_> = explicit
        .configs
        .iter()
        .filter(|c| c.pp == 2 && c.tp == 1)
        .collect();
    assert_eq!(pp2.len(), 1);
    assert_eq!(pp2[0].stage_weight_gib, vec![3.0, 3.0]);

    // A placement over derived configurations simulates.
    let mut placement = Placement::from_shapes(&[(2, 2), (4, 1)]);
    placement.groups[0].models = vec![0];
    placement.groups[1].models = vec![0, 1];
    placement.validate(&inst).unwrap();
    let trace = inst.workload.generate(inst.base_dir()).unwrap();
    let sim = Simulator::new(&inst, &trace);
    let score = sim.evaluate(&placement, &mut Scratch::default());
    assert!(score.attainment > 0.5, "attainment {}", score.attainment);
}

#[test]
fn a_cluster_link_must_be_positive() {
    let text = std::fs::read_to_string(repo_path("instances/layers/toy-transformer.json")).unwrap();
    let bad = text.replace("\"link_gib_per_s\": 10.0", "\"link_gib_per_s\": -1.0");
    assert_ne!(bad, text);
    match Instance::from_json("x.json".as_ref(), &bad) {
        Err(SolverError::Invalid { json_path, .. }) => {
            assert_eq!(json_path, "cluster.link_gib_per_s")
        }
        other => panic!("expected an invalid link, got {other:?}"),
    }
}

#[test]
fn derived_grid_equals_one_uniform_config_at_a_time() {
    use plexserve_solver::{derive_configs, uniform_config, Cluster};
    let big =
        ProfileFile::load(&repo_path("instances/layers/synthetic-128l.profile.json")).unwrap();
    let p = &big.profiles["synthetic-128l"];
    for (devices, budget, link) in [(64, 4.0, Some(25.0)), (16, 4.0, None), (8, 64.0, None)] {
        let cluster = Cluster {
            devices,
            memory_budget_gib: budget,
            devices_per_node: 8,
            link_gib_per_s: link,
        };
        let grid = derive_configs(p, &cluster).unwrap();
        let mut want = Vec::new();
        let mut pp = 1;
        while pp <= devices {
            for &tp in &p.tp_degrees {
                if pp * tp <= devices {
                    want.extend(uniform_config(p, pp, tp, budget, link).unwrap());
                }
            }
            pp *= 2;
        }
        assert_eq!(grid, want);
        assert!(!grid.is_empty());
    }
}
