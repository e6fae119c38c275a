//! Workload generation: Gamma streams, power-law rates, Azure Functions trace replay (against an
//! independent reading of the shipped trace files), the Gamma MLE, validation errors and the
//! paper instances.

// The oracles keep parallel per-model arrays indexed by model id; iterating ids reads clearest.
#![allow(clippy::needless_range_loop)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use plexserve_solver::workload::{
    fit_gamma_mle, gamma_arrivals, power_law_rates, AzureWorkload, ReplayTable,
};
use plexserve_solver::{Instance, Placement, Schedule, Simulator, SolverError, WorkloadSpec};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Gamma};

fn instances() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../instances")
}

/// An instance text with `n` models of the 2 GB / 100 ms test profile and the given workload.
fn instance_text(n: usize, workload: &str) -> String {
    let models: Vec<String> = (0..n)
        .map(|i| format!(r#"{{"name": "m{i}", "profile": "p", "slo_scale": 5}}"#))
        .collect();
    format!(
        r#"{{"schema": "plexserve/instance/v1", "name": "t",
            "cluster": {{"devices": 4, "memory_budget_gib": 13}},
            "profiles": {{"p": {{"batch_sizes": [1], "configs": [
                {{"pp": 1, "tp": 1, "stage_latency_s": [[0.1]], "stage_weight_gib": [2.0]}}]}}}},
            "models": [{}],
            "workload": {workload}}}"#,
        models.join(",")
    )
}

/// Loads an instance as if it were a file in `instances/tiny/` (so `../traces/...` resolves).
fn load(n: usize, workload: &str) -> Result<Instance, SolverError> {
    let path = instances().join("tiny/virtual.json");
    Instance::from_json(&path, &instance_text(n, workload))
}

fn azure(inst: &Instance) -> &AzureWorkload {
    match &inst.workload {
        WorkloadSpec::Azure(a) => a,
        other => panic!("expected a trace replay, got {}", other.kind()),
    }
}

fn mean_cv(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let m = xs.iter().sum::<f64>() / n;
    let v = xs.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (n - 1.0);
    (m, v.sqrt() / m)
}

// ------------------------------------------------------------------------------------------------
// Gamma streams.

#[test]
fn gamma_rate_and_cv_match_over_long_runs() {
    for (rate, cv, seed) in [
        (5.0, 1.0, 1u64),
        (2.0, 4.0, 2),
        (40.0, 0.5, 3),
        (0.5, 2.0, 4),
    ] {
        // ~400k arrivals: the count's relative sd is cv/√400k ≤ 0.7 %, far inside the 4 % bound.
        let duration = 400_000.0 / rate;
        let a = gamma_arrivals(rate, cv, 10.0, duration, seed);
        let got_rate = a.len() as f64 / duration;
        assert!(
            (got_rate / rate - 1.0).abs() < 0.04,
            "rate {rate} cv {cv}: got {got_rate}"
        );
        assert!(
            a.windows(2).all(|w| w[0] <= w[1]),
            "arrivals must be sorted"
        );
        assert!(a[0] >= 10.0 && *a.last().unwrap() < 10.0 + duration);
        let gaps: Vec<f64> = a.windows(2).map(|w| w[1] - w[0]).collect();
        let (m, got_cv) = mean_cv(&gaps);
        assert!(
            (m * rate - 1.0).abs() < 0.04,
            "mean gap {m} for rate {rate}"
        );
        assert!((got_cv / cv - 1.0).abs() < 0.05, "cv {cv}: got {got_cv}");
    }
}

#[test]
fn gamma_degenerate_parameters_give_no_arrivals() {
    assert!(gamma_arrivals(0.0, 1.0, 0.0, 100.0, 0).is_empty());
    assert!(gamma_arrivals(1.0, 0.0, 0.0, 100.0, 0).is_empty());
    assert!(gamma_arrivals(f64::NAN, 1.0, 0.0, 100.0, 0).is_empty());
    assert!(gamma_arrivals(1.0, 1.0, 0.0, f64::INFINITY, 0).is_empty());
    assert!(gamma_arrivals(1.0, f64::INFINITY, 0.0, 10.0, 0).is_empty());
}

#[test]
fn longer_duration_extends_the_same_seed_as_a_prefix() {
    let short = gamma_arrivals(3.0, 3.0, 0.0, 100.0, 7);
    let long = gamma_arrivals(3.0, 3.0, 0.0, 1000.0, 7);
    assert!(!short.is_empty() && long.len() > short.len());
    assert_eq!(&long[..short.len()], &short[..]);
    assert!(long[short.len()] >= 100.0);
    assert_ne!(
        gamma_arrivals(3.0, 3.0, 0.0, 100.0, 8),
        short,
        "seeds must matter"
    );

    // The same holds for a whole multi-model workload.
    let w = |d: f64| {
        format!(
            r#"{{"kind": "gamma", "duration_s": {d}, "seed": 3, "total_rate": 20, "cv": 2, "rate_distribution": "power_law"}}"#
        )
    };
    let a = load(4, &w(50.0)).unwrap();
    let b = load(4, &w(500.0)).unwrap();
    let ta = a.workload.generate(a.base_dir()).unwrap();
    let tb = b.workload.generate(b.base_dir()).unwrap();
    assert!(ta.len() > 100);
    assert_eq!(ta.arrival_s[..], tb.arrival_s[..ta.len()]);
    assert_eq!(ta.model[..], tb.model[..ta.len()]);
}

#[test]
fn stream_seeds_follow_model_ids_not_list_order() {
    let a = load(
        2,
        r#"{"kind": "gamma", "duration_s": 100, "seed": 5, "streams": [
            {"model": "m0", "rate": 2, "cv": 1}, {"model": "m1", "rate": 3, "cv": 2}]}"#,
    )
    .unwrap();
    let b = load(
        2,
        r#"{"kind": "gamma", "duration_s": 100, "seed": 5, "streams": [
            {"model": "m1", "rate": 3, "cv": 2}, {"model": "m0", "rate": 2, "cv": 1}]}"#,
    )
    .unwrap();
    let ta = a.workload.generate(a.base_dir()).unwrap();
    assert_eq!(ta, b.workload.generate(b.base_dir()).unwrap());
    // Model m1 alone is the seed-6 stream.
    let m1: Vec<f64> = (0..ta.len())
        .filter(|&i| ta.model[i] == 1)
        .map(|i| ta.arrival_s[i])
        .collect();
    assert_eq!(m1, gamma_arrivals(3.0, 2.0, 0.0, 100.0, 6));
}

#[test]
fn power_law_shares() {
    let r = power_law_rates(10.0, 0.5, 8);
    assert!((r.iter().sum::<f64>() - 10.0).abs() < 1e-9);
    for i in 1..8 {
        let expected = ((i + 1) as f64).powf(-0.5);
        assert!((r[i] / r[0] - expected).abs() < 1e-12);
    }
    let inst = load(
        8,
        r#"{"kind": "gamma", "duration_s": 20000, "total_rate": 10, "cv": 1, "rate_distribution": "power_law", "alpha": 0.5}"#,
    )
    .unwrap();
    assert_eq!(inst.workload.declared_rates(8), r);
    let trace = inst.workload.generate(inst.base_dir()).unwrap();
    let counts = trace.counts(8);
    for (i, &c) in counts.iter().enumerate() {
        let expected = r[i] * 20000.0;
        // Poisson counts of ≥ 70k: 4 % is more than 10 standard deviations.
        assert!(
            (c as f64 / expected - 1.0).abs() < 0.04,
            "model {i}: {c} vs {expected}"
        );
    }
    // Uniform is alpha = 0.
    let u = load(
        4,
        r#"{"kind": "gamma", "duration_s": 10, "total_rate": 8, "cv": 1}"#,
    )
    .unwrap();
    assert_eq!(u.workload.declared_rates(4), vec![2.0; 4]);
}

#[test]
fn declared_rates_cover_every_model() {
    let inst = load(
        3,
        r#"{"kind": "gamma", "duration_s": 10, "streams": [{"model": "m0", "rate": 2, "cv": 1}]}"#,
    )
    .unwrap();
    assert_eq!(inst.workload.declared_rates(3), vec![2.0, 0.0, 0.0]);
}

// ------------------------------------------------------------------------------------------------
// The Gamma MLE.

#[test]
fn mle_recovers_known_shape_and_scale() {
    for (shape, scale, seed) in [
        (2.5, 0.4, 11u64),
        (0.3, 10.0, 12),
        (1.0, 1.0, 13),
        (40.0, 0.01, 14),
    ] {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let d = Gamma::new(shape, scale).unwrap();
        let xs: Vec<f64> = (0..100_000).map(|_| d.sample(&mut rng)).collect();
        let (k, theta) = fit_gamma_mle(&xs).expect("fit");
        // The MLE's relative sd for the shape is about √(1/(n·(k·ψ'(k) − 1)))·… ≤ 1 % at n = 1e5.
        assert!((k / shape - 1.0).abs() < 0.03, "shape {shape}: got {k}");
        assert!(
            (theta / scale - 1.0).abs() < 0.03,
            "scale {scale}: got {theta}"
        );
        // Location 0 MLE: k·θ is exactly the sample mean.
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        assert!((k * theta / mean - 1.0).abs() < 1e-9);
    }
}

#[test]
fn mle_solution_satisfies_the_likelihood_equation() {
    // ln k − ψ(k) = ln(mean) − mean(ln x) at the optimum, on a small hand-made sample.
    let xs = [0.2, 1.5, 0.7, 3.1, 0.05, 0.9];
    let (k, _) = fit_gamma_mle(&xs).unwrap();
    let n = xs.len() as f64;
    let s = (xs.iter().sum::<f64>() / n).ln() - xs.iter().map(|x: &f64| x.ln()).sum::<f64>() / n;
    let lhs = k.ln() - plexserve_solver::workload::digamma(k);
    assert!((lhs - s).abs() < 1e-10, "{lhs} vs {s}");
}

// ------------------------------------------------------------------------------------------------
// An independent reading of the shipped trace files, the oracle of the replay tests.

/// 2019: function keys in first-appearance order over `days` files, with per-minute counts
/// (absolute minute → count) for the minutes in `[lo, hi)`.
fn oracle_2019(days: &[&str], lo: usize, hi: usize) -> Vec<(String, Vec<u64>)> {
    let mut order: Vec<String> = Vec::new();
    let mut hist: HashMap<String, Vec<u64>> = HashMap::new();
    for (d, name) in days.iter().enumerate() {
        let text = std::fs::read_to_string(instances().join("traces/maf1").join(name)).unwrap();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split(',').collect();
            assert_eq!(f.len(), 1444);
            let key = f[2].to_string();
            if !hist.contains_key(&key) {
                order.push(key.clone());
                hist.insert(key.clone(), vec![0; hi - lo]);
            }
            let h = hist.get_mut(&key).unwrap();
            for (c, v) in f[4..].iter().enumerate() {
                let t = d * 1440 + c;
                if t >= lo && t < hi {
                    h[t - lo] += v.parse::<u64>().unwrap();
                }
            }
        }
    }
    order
        .into_iter()
        .map(|k| {
            let h = hist.remove(&k).unwrap();
            (k, h)
        })
        .filter(|(_, h)| h.iter().sum::<u64>() > 0)
        .collect()
}

/// 2021: arrivals in `[lo, hi)` seconds per function key, in first-appearance order.
fn oracle_2021(faithful: bool, lo: f64, hi: f64) -> Vec<(String, Vec<f64>)> {
    let text = std::fs::read_to_string(instances().join("traces/maf2/invocations.csv")).unwrap();
    let mut order: Vec<String> = Vec::new();
    let mut arr: HashMap<String, Vec<f64>> = HashMap::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let key = if faithful {
            f[1].to_string()
        } else {
            format!("{},{}", f[0], f[1])
        };
        let t = f[2].parse::<f64>().unwrap() - f[3].parse::<f64>().unwrap();
        if !arr.contains_key(&key) {
            order.push(key.clone());
            arr.insert(key.clone(), Vec::new());
        }
        if t >= lo && t < hi {
            arr.get_mut(&key).unwrap().push(t - lo);
        }
    }
    order
        .into_iter()
        .map(|k| {
            let a = arr.remove(&k).unwrap();
            (k, a)
        })
        .filter(|(_, a)| !a.is_empty())
        .collect()
}

fn maf1_workload(start: &str, end: &str, interval: u32, extra: &str) -> String {
    format!(
        r#"{{"kind": "azure_functions_2019", "files": ["../traces/maf1/d01.csv", "../traces/maf1/d02.csv"],
            "start": "{start}", "end": "{end}", "interval_s": {interval}, "rate_scale": 1, "cv_scale": 1, "seed": 0{extra}}}"#
    )
}

fn maf2_workload(start: &str, end: &str, interval: u32, extra: &str) -> String {
    format!(
        r#"{{"kind": "azure_functions_2021", "file": "../traces/maf2/invocations.csv",
            "start": "{start}", "end": "{end}", "interval_s": {interval}, "rate_scale": 1, "cv_scale": 1, "seed": 0{extra}}}"#
    )
}

fn table(inst: &Instance) -> std::sync::Arc<ReplayTable> {
    azure(inst).table(inst.base_dir()).unwrap()
}

// ------------------------------------------------------------------------------------------------
// 2019 replay.

#[test]
fn maf1_window_counts_and_stripe_mapping_match_the_files() {
    let n = 48;
    let inst = load(n, &maf1_workload("0.0.0", "0.1.0", 60, "")).unwrap();
    let t = table(&inst);
    let oracle = oracle_2019(&["d01.csv"], 0, 60);
    assert!(oracle.len() >= 72, "the shipped trace must serve 72 models");
    let keys: Vec<&str> = oracle.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(t.functions, keys);
    for (j, &m) in t.function_model.iter().enumerate() {
        assert_eq!(m as usize, j % n, "stripe mapping of function {j}");
    }
    let mut expected = vec![vec![0u64; 60]; n];
    for (j, (_, h)) in oracle.iter().enumerate() {
        for (w, c) in h.iter().enumerate() {
            expected[j % n][w] += c;
        }
    }
    for m in 0..n {
        let got: Vec<u64> = t.windows[m].iter().map(|w| w.invocations).collect();
        assert_eq!(got, expected[m], "model {m}");
        for w in &t.windows[m] {
            // One-minute windows: Gamma(rate = c / 60, cv = cv_scale); none when c = 0.
            match w.process {
                Some((rate, cv)) => {
                    assert!((rate - w.invocations as f64 / 60.0).abs() < 1e-12);
                    assert!((cv - 1.0).abs() < 1e-12);
                }
                None => assert_eq!(w.invocations, 0),
            }
        }
    }
    // Generated requests follow the per-model counts (rate_scale 1).
    let trace = inst.workload.generate(inst.base_dir()).unwrap();
    let counts = trace.counts(n);
    let total: u64 = expected.iter().flatten().sum();
    assert!((trace.len() as f64 / total as f64 - 1.0).abs() < 0.02);
    for m in 0..n {
        let e: u64 = expected[m].iter().sum();
        if e >= 2000 {
            assert!(
                (counts[m] as f64 / e as f64 - 1.0).abs() < 0.1,
                "model {m}: {} vs {e}",
                counts[m]
            );
        }
    }
    assert!(trace.arrival_s.iter().all(|&t| (0.0..3600.0).contains(&t)));

    // Round-robin mapping assigns contiguous blocks.
    let rr = load(
        n,
        &maf1_workload("0.0.0", "0.1.0", 60, r#", "mapping": "round_robin""#),
    )
    .unwrap();
    let trr = table(&rr);
    let f = trr.functions.len();
    for (j, &m) in trr.function_model.iter().enumerate() {
        assert_eq!(m as usize, n * j / f);
    }
}

#[test]
fn maf1_function_order_is_first_appearance_across_days() {
    let n = 16;
    // A slice of day 1 (the second file): its functions are ordered as they first appear in
    // d01, then d02's new ones in d02 order, not in d02's row order.
    let inst = load(n, &maf1_workload("1.2.0", "1.3.0", 600, "")).unwrap();
    let t = table(&inst);
    let oracle = oracle_2019(&["d01.csv", "d02.csv"], 1440 + 120, 1440 + 180);
    let keys: Vec<&str> = oracle.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(t.functions, keys);
    let d02_only = oracle_2019(&["d02.csv"], 120, 180);
    let d02_keys: Vec<&str> = d02_only.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(d02_keys.len(), keys.len(), "same functions, other order");
    assert_ne!(
        d02_keys, keys,
        "the shipped files must exercise the ordering rule"
    );
    // Ten-minute windows sum ten minutes each.
    let mut expected = vec![vec![0u64; 6]; n];
    for (j, (_, h)) in oracle.iter().enumerate() {
        for (minute, c) in h.iter().enumerate() {
            expected[j % n][minute / 10] += c;
        }
    }
    for m in 0..n {
        let got: Vec<u64> = t.windows[m].iter().map(|w| w.invocations).collect();
        assert_eq!(got, expected[m]);
    }
}

#[test]
fn maf1_partial_last_window_default_and_faithful() {
    let n = 8;
    // 23:30 of day 0 to 00:30 of day 1 in 7-minute windows: 8 full windows and one of 4 minutes.
    let w = |extra: &str| maf1_workload("0.23.30", "1.0.30", 420, extra);
    let fixed = load(n, &w("")).unwrap();
    let faithful = load(n, &w(r#", "faithful": true"#)).unwrap();
    let (tf, tq) = (table(&fixed), table(&faithful));
    assert_eq!(tf.windows[0].len(), 9);
    let oracle = oracle_2019(&["d01.csv", "d02.csv"], 1410, 1470);
    let mut last = vec![0u64; n];
    for (j, (_, h)) in oracle.iter().enumerate() {
        last[j % n] += h[56..].iter().sum::<u64>();
    }
    for m in 0..n {
        let a = &tf.windows[m][8];
        let b = &tq.windows[m][8];
        assert_eq!(a.invocations, last[m]);
        assert_eq!(b.invocations, last[m]);
        assert!((a.length_s - 240.0).abs() < 1e-9 && (a.generate_s - 240.0).abs() < 1e-9);
        assert!((b.generate_s - 420.0).abs() < 1e-9);
        if last[m] > 0 {
            let (ra, _) = a.process.unwrap();
            let (rb, _) = b.process.unwrap();
            assert!(
                (ra - last[m] as f64 / 240.0).abs() < 1e-12,
                "fixed: count / own length"
            );
            assert!(
                (rb - last[m] as f64 / 420.0).abs() < 1e-12,
                "faithful: count / interval"
            );
        }
        // Full windows agree.
        assert_eq!(tf.windows[m][3], tq.windows[m][3]);
    }
    let t = fixed.workload.generate(fixed.base_dir()).unwrap();
    assert!(t.arrival_s.iter().all(|&x| x < 3600.0));
    // Faithful draws the last window over a full interval, past the slice end.
    let tq_trace = faithful.workload.generate(faithful.base_dir()).unwrap();
    assert!(tq_trace.arrival_s.iter().any(|&x| x >= 3600.0));
}

// ------------------------------------------------------------------------------------------------
// 2021 replay.

#[test]
fn maf2_windows_fits_and_keying() {
    let n = 48;
    let (lo, hi) = (13.0 * 86400.0, 14.0 * 86400.0);
    let inst = load(n, &maf2_workload("13.0.0", "13.23.60", 5400, "")).unwrap();
    let t = table(&inst);
    let oracle = oracle_2021(false, lo, hi);
    let keys: Vec<&str> = oracle.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(t.functions, keys);
    let mut per_model: Vec<Vec<f64>> = vec![Vec::new(); n];
    for (j, (_, a)) in oracle.iter().enumerate() {
        per_model[j % n].extend(a);
    }
    let mut some_fit = 0;
    let mut some_none = 0;
    for m in 0..n {
        per_model[m].sort_by(f64::total_cmp);
        assert_eq!(t.windows[m].len(), 16);
        for (w, win) in t.windows[m].iter().enumerate() {
            let inside: Vec<f64> = per_model[m]
                .iter()
                .copied()
                .filter(|&x| x >= w as f64 * 5400.0 && x < (w + 1) as f64 * 5400.0)
                .collect();
            assert_eq!(win.invocations, inside.len() as u64, "model {m} window {w}");
            match win.process {
                None => {
                    some_none += 1;
                    // ≤ 2 arrivals never get a process; more only when the fit fails.
                    if inside.len() > 2 {
                        let gaps: Vec<f64> =
                            inside.windows(2).map(|p| p[1] - p[0] + 1e-6).collect();
                        assert!(fit_gamma_mle(&gaps).is_none());
                    }
                }
                Some((rate, cv)) => {
                    some_fit += 1;
                    assert!(inside.len() > 2);
                    let gaps: Vec<f64> = inside.windows(2).map(|p| p[1] - p[0] + 1e-6).collect();
                    let (k, theta) = fit_gamma_mle(&gaps).unwrap();
                    assert!((cv - (1.0 / k).sqrt()).abs() < 1e-9);
                    let empirical = inside.len() as f64 / 5400.0;
                    let fitted = 1.0 / (k * theta);
                    if fitted > 5.0 * empirical {
                        assert!((rate - empirical).abs() < 1e-12, "biased fits are reset");
                    } else {
                        assert!((rate - fitted).abs() < 1e-9 * fitted);
                    }
                }
            }
        }
    }
    assert!(
        some_fit > 100 && some_none > 0,
        "{some_fit} fits, {some_none} empty"
    );

    // Faithful keying by `func` merges the functions whose ids collide across apps.
    let faithful = load(
        n,
        &maf2_workload("13.0.0", "13.23.60", 5400, r#", "faithful": true"#),
    )
    .unwrap();
    let tq = table(&faithful);
    let oq = oracle_2021(true, lo, hi);
    let fkeys: Vec<&str> = oq.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(tq.functions, fkeys);
    assert!(
        tq.functions.len() < t.functions.len(),
        "the shipped file has colliding ids"
    );
    let total = |t: &ReplayTable| t.invocations().iter().sum::<u64>();
    assert_eq!(
        total(&t),
        total(&tq),
        "keying changes the mapping, not the arrivals"
    );
    assert_ne!(t.invocations(), tq.invocations());
}

#[test]
fn maf2_generation_tracks_the_fitted_rates() {
    let n = 12;
    let inst = load(
        n,
        &maf2_workload("13.0.0", "13.23.60", 5400, r#", "rate_scale": 50"#),
    )
    .unwrap();
    let a = azure(&inst);
    let t = table(&inst);
    let trace = inst.workload.generate(inst.base_dir()).unwrap();
    let expected = a.expected_requests(&t);
    assert!(expected > 10_000.0);
    assert!(
        (trace.len() as f64 / expected - 1.0).abs() < 0.1,
        "{} vs {expected}",
        trace.len()
    );
    let rates = inst.workload.declared_rates(n);
    assert!((rates.iter().sum::<f64>() * 86400.0 / expected - 1.0).abs() < 1e-9);
    assert!(trace.arrival_s.iter().all(|&x| (0.0..86400.0).contains(&x)));
    // Deterministic: the same spec generates the same trace.
    assert_eq!(trace, inst.workload.generate(inst.base_dir()).unwrap());
    // A different seed, another trace from the same table.
    let other = load(
        n,
        &maf2_workload(
            "13.0.0",
            "13.23.60",
            5400,
            r#", "rate_scale": 50, "seed": 1"#,
        ),
    )
    .unwrap();
    assert_ne!(trace, other.workload.generate(other.base_dir()).unwrap());
}

#[test]
fn scaled_workloads() {
    let n = 8;
    let inst = load(n, &maf1_workload("0.0.0", "0.1.0", 60, "")).unwrap();
    let base = inst.workload.generate(inst.base_dir()).unwrap();
    let doubled = inst.workload.scaled(2.0, 3.0);
    match &doubled {
        WorkloadSpec::Azure(a) => {
            assert!((a.rate_scale - 2.0).abs() < 1e-12 && (a.cv_scale - 3.0).abs() < 1e-12)
        }
        _ => panic!("kind changed"),
    }
    let t2 = doubled.generate(inst.base_dir()).unwrap();
    let ratio = t2.len() as f64 / base.len() as f64;
    assert!((ratio - 2.0).abs() < 0.1, "ratio {ratio}");
    let r1 = inst.workload.declared_rates(n);
    let r2 = doubled.declared_rates(n);
    for m in 0..n {
        assert!((r2[m] - 2.0 * r1[m]).abs() < 1e-9 * r1[m].max(1.0));
    }

    let g = load(
        2,
        r#"{"kind": "gamma", "duration_s": 10, "total_rate": 4, "cv": 2}"#,
    )
    .unwrap();
    match g.workload.scaled(0.5, 2.0) {
        WorkloadSpec::Gamma(w) => {
            assert!(w
                .streams
                .iter()
                .all(|s| (s.rate - 1.0).abs() < 1e-12 && (s.cv - 4.0).abs() < 1e-12))
        }
        _ => panic!("kind changed"),
    }

    let r = load(
        1,
        r#"{"kind": "requests", "requests": [{"t_s": 0.5, "model": "m0"}, {"t_s": 1.0, "model": "m0"}]}"#,
    )
    .unwrap();
    assert_eq!(
        r.workload.scaled(3.0, 3.0),
        r.workload,
        "explicit lists are left unchanged"
    );
    assert!(r.workload.try_scaled(3.0, 1.0).is_err());
    assert!(r.workload.try_scaled(1.0, 1.0).is_ok());
    assert!(g.workload.try_scaled(-1.0, 1.0).is_err());
    assert!(g.workload.try_scaled(1.0, 0.0).is_err());
}

// ------------------------------------------------------------------------------------------------
// Validation errors.

fn error_at(n: usize, workload: &str) -> (String, String) {
    match load(n, workload) {
        Err(SolverError::Invalid {
            file,
            json_path,
            message,
        }) => {
            assert!(file.ends_with("virtual.json"), "{}", file.display());
            (json_path, message)
        }
        Err(e) => panic!("unexpected error kind: {e}"),
        Ok(_) => panic!("accepted: {workload}"),
    }
}

#[test]
fn malformed_workload_fields_name_their_json_path() {
    let m1 = |s: &str| maf1_workload("0.0.0", "0.1.0", 60, s);
    let cases: Vec<(String, &str)> = vec![
        (m1(r#", "rate_scale": -1"#).replace(r#""rate_scale": 1, "#, ""), "workload.rate_scale"),
        (m1(r#", "cv_scale": 0"#).replace(r#""cv_scale": 1, "#, ""), "workload.cv_scale"),
        (maf1_workload("0.25.0", "0.1.0", 60, ""), "workload.start"),
        (maf1_workload("0.0.0", "0.0.61", 60, ""), "workload.end"),
        (maf1_workload("0.1.0", "0.0.30", 60, ""), "workload.end"),
        (maf1_workload("0.0.0", "2.0.1", 60, ""), "workload.end"),
        (maf1_workload("0.0.0", "0.1.0", 90, ""), "workload.interval_s"),
        (maf2_workload("13.0.0", "13.1.0", 0, ""), "workload.interval_s"),
        (m1(r#", "ratescale": 2"#), "workload.ratescale"),
        (m1(r#", "mapping": "random""#), "workload.mapping"),
        (m1(r#", "faithful": "yes""#), "workload.faithful"),
        (
            r#"{"kind": "azure_functions_2019", "start": "0.0.0", "end": "0.1.0"}"#.into(),
            "workload.files",
        ),
        (
            r#"{"kind": "azure_functions_2021", "files": ["x"], "start": "0.0.0", "end": "0.1.0"}"#.into(),
            "workload.files",
        ),
        (r#"{"kind": "poisson"}"#.into(), "workload.kind"),
        (r#"{"duration_s": 3}"#.into(), "workload.kind"),
        (r#"[1, 2]"#.into(), "workload"),
        (
            r#"{"kind": "gamma", "duration_s": 10, "streams": [{"model": "m0", "rate": 1, "cv": -1}]}"#.into(),
            "workload.streams[0].cv",
        ),
        (
            r#"{"kind": "gamma", "duration_s": 10, "streams": [{"model": "zz", "rate": 1, "cv": 1}]}"#.into(),
            "workload.streams[0].model",
        ),
        (
            r#"{"kind": "gamma", "duration_s": 10, "total_rate": 1, "cv": 1, "alpha": 2}"#.into(),
            "workload.alpha",
        ),
        (
            r#"{"kind": "gamma", "duration_s": 1e9, "total_rate": 1e6, "cv": 1}"#.into(),
            "workload.duration_s",
        ),
        (
            r#"{"kind": "requests", "requests": [{"t_s": 2, "model": "m0"}, {"t_s": 1, "model": "m0"}]}"#.into(),
            "workload.requests[1].t_s",
        ),
    ];
    for (w, path) in cases {
        let (got, msg) = error_at(2, &w);
        assert_eq!(got, path, "{w}: {msg}");
        assert!(!msg.is_empty());
    }
}

/// A cv far beyond the papers' (where most Gamma gaps underflow to zero and arrivals run away)
/// is refused wherever it enters: a stream, `total_rate`, a sweep's `cv_scale`, a trace
/// replay's `cv_scale` on its fitted windows.
#[test]
fn a_cv_beyond_64_is_refused_wherever_it_enters() {
    let gamma = |cv: &str| {
        format!(
            r#"{{"kind": "gamma", "duration_s": 10, "streams": [{{"model": "m0", "rate": 1, "cv": {cv}}}]}}"#
        )
    };
    let (path, msg) = error_at(1, &gamma("1048576"));
    assert_eq!(path, "workload.streams[0].cv");
    assert!(msg.contains("(0, 64]"), "{msg}");
    let (path, _) = error_at(
        1,
        r#"{"kind": "gamma", "duration_s": 10, "total_rate": 1, "cv": 65}"#,
    );
    assert_eq!(path, "workload.cv");
    let inst = load(1, &gamma("64")).unwrap();
    assert!(inst.workload.try_scaled(1.0, 1.0).is_ok());
    let e = inst.workload.try_scaled(1.0, 2.0).unwrap_err();
    assert!(
        e.to_string()
            .contains("cv_scale 2 makes the largest cv 128"),
        "{e}"
    );

    let replay = load(2, &maf1_workload("0.0.0", "0.1.0", 60, "")).unwrap();
    assert!(replay.workload.generate(replay.base_dir()).is_ok());
    let wild = replay.workload.scaled(1.0, 1000.0);
    match wild.generate(replay.base_dir()) {
        Err(SolverError::Invalid { json_path, .. }) => assert_eq!(json_path, "workload.cv_scale"),
        other => panic!("expected a cv_scale error, got {other:?}"),
    }
}

#[test]
fn missing_and_malformed_trace_files_are_errors_that_name_them() {
    // A missing file: the error names the instance field that points at it.
    let inst = load(
        2,
        r#"{"kind": "azure_functions_2019", "files": ["../traces/maf1/d01.csv", "../traces/maf1/nope.csv"],
            "start": "1.0.0", "end": "1.1.0"}"#,
    )
    .unwrap();
    match inst.workload.generate(inst.base_dir()) {
        Err(SolverError::Invalid {
            json_path, message, ..
        }) => {
            assert_eq!(json_path, "workload.files[1]");
            assert!(message.contains("nope.csv"), "{message}");
        }
        other => panic!("{other:?}"),
    }

    let dir = tempfile::tempdir().unwrap();
    let header: String = std::iter::once("HashOwner,HashApp,HashFunction,Trigger".to_string())
        .chain((1..=1440).map(|c| c.to_string()))
        .collect::<Vec<_>>()
        .join(",");
    let row = |f: &str, v: &str| format!("o,a,{f},http,{}", vec![v; 1440].join(","));
    let cases = [
        (
            format!("{header}\n{}\n{}\n", row("f1", "1"), row("f2", "x")),
            "line 3",
        ),
        (
            format!("{header}\n{}\no,a,f3,http,1,2\n", row("f1", "1")),
            "line 3",
        ),
        (format!("{header}\n{}\n", row("f1", "-2")), "line 2"),
        ("HashOwner,HashApp\n".to_string(), "line 1"),
        (String::new(), "line 1"),
    ];
    for (i, (text, line)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("bad{i}.csv"));
        std::fs::write(&path, text).unwrap();
        let inst_path = dir.path().join("inst.json");
        let w = format!(
            r#"{{"kind": "azure_functions_2019", "files": ["bad{i}.csv"], "start": "0.0.0", "end": "0.1.0"}}"#
        );
        let inst = Instance::from_json(&inst_path, &instance_text(1, &w)).unwrap();
        match inst.workload.generate(inst.base_dir()) {
            Err(SolverError::Invalid {
                file,
                json_path,
                message,
            }) => {
                assert_eq!(file, path, "case {i}: {message}");
                assert_eq!(json_path, *line, "case {i}: {message}");
            }
            other => panic!("case {i}: {other:?}"),
        }
    }

    let cases21 = [
        (
            "app,func,end_timestamp,duration\na,f,10.0,1.0\na,f,oops,1\n",
            "line 3",
        ),
        ("app,func,end_timestamp,duration\na,f,10.0\n", "line 2"),
        ("app,func,end_timestamp,duration\na,f,10.0,-1\n", "line 2"),
        ("app,func,end,duration\n", "line 1"),
        ("app,func,end_timestamp,duration\na,f,NaN,1\n", "line 2"),
    ];
    for (i, (text, line)) in cases21.iter().enumerate() {
        let path = dir.path().join(format!("bad21-{i}.csv"));
        std::fs::write(&path, text).unwrap();
        let w = format!(
            r#"{{"kind": "azure_functions_2021", "file": "bad21-{i}.csv", "start": "0.0.0", "end": "0.1.0"}}"#
        );
        let inst = Instance::from_json(&dir.path().join("i.json"), &instance_text(1, &w)).unwrap();
        match inst.workload.generate(inst.base_dir()) {
            Err(SolverError::Invalid {
                file, json_path, ..
            }) => {
                assert_eq!(file, path);
                assert_eq!(json_path, *line, "case {i}");
            }
            other => panic!("case {i}: {other:?}"),
        }
    }

    // More models than active functions.
    let inst = load(500, &maf1_workload("0.0.0", "0.1.0", 60, "")).unwrap();
    match inst.workload.generate(inst.base_dir()) {
        Err(SolverError::Invalid {
            json_path, message, ..
        }) => {
            assert_eq!(json_path, "workload");
            assert!(message.contains("500 models"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    // Too many requests for memory is refused, not attempted.
    let inst = load(
        4,
        &maf1_workload("0.0.0", "0.1.0", 60, "")
            .replace(r#""rate_scale": 1"#, r#""rate_scale": 1e6"#),
    )
    .unwrap();
    match inst.workload.generate(inst.base_dir()) {
        Err(SolverError::Invalid { json_path, .. }) => assert_eq!(json_path, "workload.rate_scale"),
        other => panic!("{other:?}"),
    }
}

// ------------------------------------------------------------------------------------------------
// Shipped instances.

fn paper(name: &str) -> Instance {
    Instance::load(&instances().join("paper").join(name)).unwrap()
}

#[test]
fn paper_instances_load_and_generate() {
    // (file, devices, models, target total rate band in req/s; see instances/README.md)
    let expected = [
        ("s1-maf1.json", 16, 48, 20.0, 35.0),
        ("s1-maf2.json", 16, 48, 20.0, 35.0),
        ("s2-maf1.json", 64, 48, 20.0, 35.0),
        ("s2-maf2.json", 64, 48, 20.0, 35.0),
        ("s3-maf1.json", 48, 72, 20.0, 35.0),
        ("s3-maf2.json", 48, 72, 40.0, 70.0),
    ];
    for (file, devices, models, lo, hi) in expected {
        let inst = paper(file);
        assert_eq!(inst.cluster.devices, devices, "{file}");
        assert_eq!(inst.models.len(), models, "{file}");
        assert!((inst.budget_gib() - 13.0).abs() < 1e-12);
        let trace = inst.workload.generate(inst.base_dir()).unwrap();
        let span = trace.arrival_s.last().unwrap() - trace.arrival_s.first().unwrap();
        let rate = trace.len() as f64 / span;
        assert!(rate > lo && rate < hi, "{file}: total rate {rate}");
        assert!(trace.arrival_s.windows(2).all(|w| w[0] <= w[1]));
        let counts = trace.counts(models);
        assert_eq!(
            counts.iter().sum::<usize>(),
            trace.len(),
            "every id is a model"
        );
        assert!(
            counts.iter().filter(|&&c| c > 0).count() >= models * 3 / 4,
            "{file}"
        );
        // Every window restarts a Gamma renewal process at its start, as in AlpaServe, so a window
        // of length L expects about L·rate + (cv² − 1)/2 arrivals (renewal theory), not L·rate: with
        // cv > 1 the realised load exceeds the declared one. Check the count against both bounds.
        let a = azure(&inst);
        let t = a.table(inst.base_dir()).unwrap();
        let declared: f64 = inst.workload.declared_rates(models).iter().sum();
        let nominal = declared * t.duration_s;
        assert!((a.expected_requests(&t) / nominal - 1.0).abs() < 1e-9);
        let (mut below, mut above) = (0.0, 0.0);
        for w in t.windows.iter().flatten() {
            if let Some((_, cv)) = w.process {
                let excess = ((cv * a.cv_scale).powi(2) - 1.0) / 2.0;
                if excess < 0.0 {
                    below += excess
                } else {
                    above += excess
                }
            }
        }
        let n = trace.len() as f64;
        assert!(
            n > 0.95 * (nominal + below) && n < 1.05 * (nominal + above),
            "{file}: {n} requests, declared {nominal}, renewal bounds {below} / +{above}"
        );
        for m in &inst.models {
            // slo_scale 5 × the single-device latency of the type.
            let p = &inst.profiles[m.profile];
            let base: f64 = p.config(1, 1).unwrap().stage_latency_s[0].iter().sum();
            assert!((m.slo_s - 5.0 * base).abs() < 1e-12);
        }
    }
    // S3 interleaves the six types in the order of alpaserve-semantics.md §4.
    let s3 = paper("s3-maf1.json");
    let order = [
        "bert-6.7b",
        "moe-5.3b",
        "bert-2.6b",
        "moe-2.4b",
        "bert-1.3b",
        "moe-1.3b",
    ];
    for (j, m) in s3.models.iter().enumerate() {
        assert_eq!(s3.profile_names[m.profile], order[j % 6]);
    }
}

#[test]
fn paper_profiles_follow_the_stated_rules() {
    let s3 = paper("s3-maf2.json");
    let lat1 = [
        ("bert-1.3b", 0.151, 2.6e9),
        ("bert-2.6b", 0.238, 5.2e9),
        ("bert-6.7b", 0.395, 13.4e9),
        ("moe-1.3b", 0.150, 2.6e9),
        ("moe-2.4b", 0.171, 4.8e9),
        ("moe-5.3b", 0.234, 10.6e9),
    ];
    for (name, l1, bytes) in lat1 {
        let i = s3.profile_names.iter().position(|p| p == name).unwrap();
        let p = &s3.profiles[i];
        assert_eq!(p.batch_sizes, vec![1, 2, 4, 8, 16]);
        assert_eq!(p.configs.len(), 12);
        let c11 = p.config(1, 1).unwrap();
        assert!((c11.stage_latency_s[0][0] - l1).abs() < 1e-9, "{name}");
        for c in &p.configs {
            let w = bytes / f64::from(c.pp * c.tp) / (1u64 << 30) as f64;
            assert!(
                c.stage_weight_gib.iter().all(|&x| (x - w).abs() < 1e-6),
                "{name}"
            );
            for b in 1..5 {
                // Latency grows with the batch but less than linearly.
                for k in 0..c.pp as usize {
                    let (prev, cur) = (c.stage_latency_s[b - 1][k], c.stage_latency_s[b][k]);
                    assert!(cur > prev && cur <= 2.0 * prev + 1e-9, "{name} {c:?}");
                }
            }
            if c.tp > 1 {
                // Intra-op parallelism speeds a stage up, but less than ideally.
                let base = p.config(c.pp, 1).unwrap();
                let (a, b) = (base.stage_latency_s[0][0], c.stage_latency_s[0][0]);
                assert!(
                    b < a && b > a / f64::from(c.tp),
                    "{name} pp {} tp {}",
                    c.pp,
                    c.tp
                );
            }
        }
        // Pipelining adds the test profile's overhead: Σ stages(pp = 8) / single = 0.115 / 0.099.
        let s8: f64 = p.config(8, 1).unwrap().stage_latency_s[0].iter().sum();
        assert!((s8 / l1 - 0.115 / 0.099).abs() < 1e-4, "{name}");
    }
    // One BERT-6.7B fits a 13 GiB device, two never do.
    let i = s3
        .profile_names
        .iter()
        .position(|p| p == "bert-6.7b")
        .unwrap();
    let w = s3.profiles[i].config(1, 1).unwrap().weight_gib();
    assert!(w <= 13.0 && 2.0 * w > 13.0);
}

#[test]
fn burstier_or_heavier_replays_lower_attainment_of_a_fixed_placement() {
    // Sanity check through the simulator: S1@MAF1 on 16 single-GPU groups, each holding the models
    // m ≡ g, g+16, g+32 (mod 48): more burstiness or more load can only hurt.
    let inst = paper("s1-maf1.json");
    let mut placement = Placement::from_shapes(&[(1, 1); 16]);
    for (g, group) in placement.groups.iter_mut().enumerate() {
        group.models = vec![g as u32, g as u32 + 16, g as u32 + 32];
    }
    let schedule = Schedule::fixed(placement);
    let attainment = |w: &WorkloadSpec| {
        let trace = w.generate(inst.base_dir()).unwrap();
        let (report, _) = Simulator::new(&inst, &trace).report(&schedule);
        report.slo_attainment
    };
    let base = attainment(&inst.workload);
    let calm = attainment(&inst.workload.scaled(1.0, 0.25));
    let heavy = attainment(&inst.workload.scaled(4.0, 1.0));
    assert!(base > 0.0 && base < 1.0, "{base}");
    assert!(calm > base, "cv 1 vs cv 4: {calm} vs {base}");
    assert!(heavy < base, "4× rate: {heavy} vs {base}");
}

#[test]
fn tiny_instances_load_and_generate() {
    let mut n = 0;
    for entry in std::fs::read_dir(instances().join("tiny")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if !name.ends_with(".json") || name.ends_with(".plan.json") {
            continue;
        }
        let inst = Instance::load(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        let trace = inst.workload.generate(inst.base_dir()).unwrap();
        assert!(!trace.is_empty(), "{name}");
        n += 1;
    }
    assert!(n >= 3);
}
