//! AlpaServe's two-level search (alpaserve-semantics.md §2.5–§2.6): enumerate group partitions,
//! fill each with the fast greedy; for mixed model sets, bucket models by latency and split the
//! devices between buckets.

use std::collections::BTreeMap;

use rayon::prelude::*;

use crate::instance::{single_device_latency_s, Instance};
use crate::plan::Placement;
use crate::sim::{Score, Scratch, Simulator};
use crate::workload::Trace;

use super::greedy::Search;
use super::Observer;

/// Largest pipeline degree and intra-op degree AlpaServe enumerates.
pub const MAX_PP: u32 = 8;
pub const MAX_TP: u32 = 4;

/// Group shapes `(pp, tp)` of every uniform partition of `n` devices, in AlpaServe's order:
/// group size `s` = 1, 2, 4, … ≤ n, then pp ascending over the divisors of s. Leftover devices
/// (n mod s) form pure pipelines from its binary decomposition; AlpaServe leaves their pp
/// uncapped (a pp 16 group that no profile can use), the fixed mode splits them into pp ≤ 8.
pub fn uniform_partitions(n: u32, faithful: bool) -> Vec<Vec<(u32, u32)>> {
    let mut out = Vec::new();
    let mut s = 1;
    while s <= n {
        let reg = n / s;
        let rem = n % s;
        let left: Vec<u32> = (0..32)
            .map(|b| 1u32 << b)
            .filter(|bit| rem & bit != 0)
            .collect();
        for pp in (1..=s).filter(|pp| s % pp == 0) {
            let tp = s / pp;
            if pp > MAX_PP || tp > MAX_TP {
                continue;
            }
            let mut shapes = vec![(pp, tp); reg as usize];
            for &l in &left {
                if faithful || l <= MAX_PP {
                    shapes.push((l, 1));
                } else {
                    shapes.extend(std::iter::repeat_n((MAX_PP, 1), (l / MAX_PP) as usize));
                }
            }
            out.push(shapes);
        }
        s *= 2;
    }
    out
}

/// §2.5: the best fast-greedy placement over every uniform partition of `n` devices, for the
/// `models` given (the other models' requests fail). Candidates run in parallel; the first best
/// candidate in enumeration order wins, so the thread count never changes the result.
pub fn uniform_search(
    search: &Search,
    models: &[usize],
    n: u32,
    observer: &dyn Observer,
    progress: &std::sync::atomic::AtomicU64,
    total: u64,
) -> (Placement, Score) {
    let candidates = uniform_partitions(n, search.faithful);
    let results: Vec<(Placement, Score)> = candidates
        .par_iter()
        .map_init(Scratch::default, |scratch, shapes| {
            let r = search.fast_greedy(Placement::from_shapes(shapes), Some(models), scratch);
            let done = progress.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            observer.progress(done, total.max(done));
            r
        })
        .collect();
    best_of(results)
}

/// The first strictly best entry (a tie keeps the earlier one).
pub fn best_of(results: Vec<(Placement, Score)>) -> (Placement, Score) {
    let mut best: Option<(Placement, Score)> = None;
    for r in results {
        if best.as_ref().is_none_or(|b| r.1.beats(&b.1)) {
            best = Some(r);
        }
    }
    best.unwrap_or((Placement::default(), Score::worst()))
}

/// Single-device batch-1 latency used for bucketing; a model without a (1, 1) profile uses its
/// fastest configuration's stage sum.
pub fn base_latency_s(inst: &Instance, m: usize) -> f64 {
    let p = inst.profile_of(m);
    single_device_latency_s(p).unwrap_or_else(|| {
        let b = p.batch1_index().unwrap_or(0);
        p.configs
            .iter()
            .map(|c| c.stage_latency_s[b].iter().sum::<f64>())
            .fold(f64::INFINITY, f64::min)
    })
}

/// Buckets of models with similar latency: a model joins the first bucket whose first model's
/// latency is within 38 % of its own.
pub fn latency_buckets(inst: &Instance) -> Vec<Vec<usize>> {
    let mut buckets: Vec<Vec<usize>> = Vec::new();
    for m in 0..inst.models.len() {
        let l = base_latency_s(inst, m);
        match buckets.iter_mut().find(|b| {
            let l0 = base_latency_s(inst, b[0]);
            ((l - l0) / l0).abs() < 0.38
        }) {
            Some(b) => b.push(m),
            None => buckets.push(vec![m]),
        }
    }
    buckets
}

/// Every split of `n` devices into `k` positive bucket sizes that AlpaServe considers: a part
/// crosses a node boundary only in ways that keep whole 8-device nodes together.
pub fn device_splits(n: u32, k: usize) -> Vec<Vec<u32>> {
    if k == 0 {
        return Vec::new();
    }
    if k == 1 {
        return if n >= 1 { vec![vec![n]] } else { Vec::new() };
    }
    let mut out = Vec::new();
    for i in 1..n {
        let valid = n % 8 == 0 || i <= n % 8 || (n - i) % 8 == 0;
        if !valid {
            continue;
        }
        for mut c in device_splits(n - i, k - 1) {
            c.push(i);
            out.push(c);
        }
    }
    out
}

/// Splits whose device shares track the buckets' traffic shares: AlpaServe's threshold ladder in
/// faithful mode, the 100 closest splits otherwise (never empty when a split exists).
pub fn keep_splits(
    splits: Vec<Vec<u32>>,
    share: &[f64],
    base_latency: &[f64],
    faithful: bool,
) -> Vec<Vec<u32>> {
    const KEEP: usize = 100;
    let deviation = |split: &Vec<u32>| {
        let cap: Vec<f64> = split
            .iter()
            .zip(base_latency)
            .map(|(&n, &l)| n as f64 / l)
            .collect();
        let total: f64 = cap.iter().sum();
        cap.iter()
            .zip(share)
            .map(|(c, s)| (s - c / total).abs())
            .fold(0.0, f64::max)
    };
    if faithful {
        let mut kept = splits.clone();
        for thr in [1.0, 0.5, 0.3, 0.2, 0.1] {
            kept = splits
                .iter()
                .filter(|s| deviation(s) < thr)
                .cloned()
                .collect();
            if kept.len() < KEEP {
                break;
            }
        }
        kept
    } else {
        let mut scored: Vec<(f64, usize)> = splits
            .iter()
            .enumerate()
            .map(|(i, s)| (deviation(s), i))
            .collect();
        scored.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        scored.truncate(KEEP);
        // Keep enumeration order among the kept, so ties resolve as AlpaServe's would.
        let mut idx: Vec<usize> = scored.into_iter().map(|x| x.1).collect();
        idx.sort_unstable();
        idx.into_iter().map(|i| splits[i].clone()).collect()
    }
}

/// The requests of `models` only (the fixed mode scores bucket sub-searches on them; other
/// buckets' requests would only add a constant).
pub fn sub_trace(trace: &Trace, models: &[usize], n_models: usize) -> Trace {
    let mut keep = vec![false; n_models];
    for &m in models {
        keep[m] = true;
    }
    let mut t = Trace::default();
    for (a, &m) in trace.arrival_s.iter().zip(&trace.model) {
        if keep[m as usize] {
            t.arrival_s.push(*a);
            t.model.push(m);
        }
    }
    t
}

/// Sub-search results per (bucket, devices), computed once and combined per split.
struct SplitSearch<'s, 'a> {
    search: &'s Search<'a>,
    buckets: Vec<Vec<usize>>,
    sub_traces: Vec<Option<Trace>>,
    memo: BTreeMap<(usize, u32), Placement>,
    observer: &'s dyn Observer,
    progress: std::sync::atomic::AtomicU64,
    total: u64,
}

impl SplitSearch<'_, '_> {
    /// Runs the sub-searches `splits` need and have not run yet, in parallel.
    fn prepare(&mut self, splits: &[Vec<u32>]) {
        use std::sync::atomic::Ordering::Relaxed;
        let mut missing: Vec<(usize, u32)> = splits
            .iter()
            .flat_map(|s| s.iter().enumerate().map(|(b, &nb)| (b, nb)))
            .filter(|k| !self.memo.contains_key(k))
            .collect();
        missing.sort_unstable();
        missing.dedup();
        let search = self.search;
        let this = &*self;
        let results: Vec<Placement> = missing
            .par_iter()
            .map(|&(b, nb)| {
                let sim = match &this.sub_traces[b] {
                    Some(t) => Simulator::new(search.inst(), t)
                        .with_config(search.sim.config.clone())
                        .with_options(search.sim.options.clone()),
                    None => search.sim.clone(),
                };
                let sub = Search::new(sim, search.faithful, search.deadline);
                let r = uniform_search(
                    &sub,
                    &this.buckets[b],
                    nb,
                    this.observer,
                    &this.progress,
                    this.total,
                );
                search
                    .evaluations
                    .fetch_add(sub.evaluations.load(Relaxed), Relaxed);
                if sub.timed_out.load(Relaxed) {
                    search.timed_out.store(true, Relaxed);
                }
                r.0
            })
            .collect();
        self.memo.extend(missing.into_iter().zip(results));
    }

    /// The combined placement of a split: each bucket's sub-result on consecutive devices.
    fn combine(&self, split: &[u32]) -> Placement {
        let mut p = Placement::default();
        let mut offset = 0;
        for (b, &nb) in split.iter().enumerate() {
            for g in &self.memo[&(b, nb)].groups {
                let mut g = g.clone();
                for d in &mut g.devices {
                    *d += offset;
                }
                p.groups.push(g);
            }
            offset += nb;
        }
        p.normalize();
        p
    }

    /// Scores splits on the full workload; results in split order.
    fn evaluate(&mut self, splits: &[Vec<u32>]) -> Vec<(Placement, Score)> {
        self.prepare(splits);
        let combined: Vec<Placement> = splits.iter().map(|s| self.combine(s)).collect();
        let scores = self.search.evaluate_all(&combined);
        combined.into_iter().zip(scores).collect()
    }
}

/// The split closest to traffic-proportional capacity: bucket b gets devices ∝ share_b · L(b),
/// at least one each (largest remainders), or `None` with more buckets than devices.
pub fn proportional_split(n: u32, share: &[f64], base_latency: &[f64]) -> Option<Vec<u32>> {
    let k = share.len() as u32;
    if k == 0 || k > n {
        return None;
    }
    let want: Vec<f64> = share.iter().zip(base_latency).map(|(s, l)| s * l).collect();
    let total: f64 = want.iter().sum();
    let spare = (n - k) as f64;
    let exact: Vec<f64> = want
        .iter()
        .map(|w| {
            if total > 0.0 {
                w / total * spare
            } else {
                spare / k as f64
            }
        })
        .collect();
    let mut split: Vec<u32> = exact.iter().map(|e| 1 + e.floor() as u32).collect();
    let mut order: Vec<usize> = (0..split.len()).collect();
    order.sort_by(|&a, &b| {
        (exact[b] - exact[b].floor())
            .total_cmp(&(exact[a] - exact[a].floor()))
            .then(a.cmp(&b))
    });
    let mut left = n - split.iter().sum::<u32>();
    for &b in order.iter().cycle() {
        if left == 0 {
            break;
        }
        split[b] += 1;
        left -= 1;
    }
    Some(split)
}

/// §2.6: latency bucketing + device splits, compared against the mixed uniform search.
///
/// AlpaServe (faithful mode) scores every kept split. The fixed mode starts from the
/// traffic-proportional split and hill-climbs, moving 8, 4, 2, then 1 devices between two buckets
/// while that improves the score: the sub-searches it needs are a small fraction of all splits'.
pub fn separated_search(
    search: &Search,
    trace: &Trace,
    observer: &dyn Observer,
) -> (Placement, Score) {
    let inst = search.inst();
    let n = inst.cluster.devices;
    let buckets = latency_buckets(inst);
    let all: Vec<usize> = (0..inst.models.len()).collect();
    let per_uniform = uniform_partitions(n, search.faithful).len() as u64;
    if buckets.len() <= 1 || buckets.len() > n as usize {
        let progress = std::sync::atomic::AtomicU64::new(0);
        return uniform_search(search, &all, n, observer, &progress, per_uniform);
    }
    let rates = inst.workload.declared_rates(inst.models.len());
    let total_rate: f64 = rates.iter().sum();
    let share: Vec<f64> = buckets
        .iter()
        .map(|b| {
            let r: f64 = b
                .iter()
                .map(|&m| rates.get(m).copied().unwrap_or(0.0))
                .sum();
            if total_rate > 0.0 {
                r / total_rate
            } else {
                1.0 / buckets.len() as f64
            }
        })
        .collect();
    let base: Vec<f64> = buckets.iter().map(|b| base_latency_s(inst, b[0])).collect();
    let sub_traces: Vec<Option<Trace>> = buckets
        .iter()
        .map(|b| (!search.faithful).then(|| sub_trace(trace, b, inst.models.len())))
        .collect();
    let mut ss = SplitSearch {
        search,
        buckets,
        sub_traces,
        memo: BTreeMap::new(),
        observer,
        progress: std::sync::atomic::AtomicU64::new(0),
        total: 0,
    };
    let best_sep = if search.faithful {
        let splits = keep_splits(device_splits(n, ss.buckets.len()), &share, &base, true);
        ss.total = splits.len() as u64 * per_uniform + per_uniform;
        best_of(ss.evaluate(&splits))
    } else {
        let start = proportional_split(n, &share, &base).expect("k ≤ n checked above");
        ss.total = 4 * per_uniform * ss.buckets.len() as u64 + per_uniform;
        let mut best = ss.evaluate(std::slice::from_ref(&start)).remove(0);
        let mut current = start;
        for step in [8u32, 4, 2, 1] {
            loop {
                let k = current.len();
                let mut neighbours = Vec::new();
                for from in 0..k {
                    for to in 0..k {
                        if from != to && current[from] > step {
                            let mut s = current.clone();
                            s[from] -= step;
                            s[to] += step;
                            neighbours.push(s);
                        }
                    }
                }
                if neighbours.is_empty() || search.out_of_time() {
                    break;
                }
                let scored = ss.evaluate(&neighbours);
                let (i, top) = scored
                    .iter()
                    .enumerate()
                    .fold(None::<(usize, &Score)>, |acc, (i, r)| match acc {
                        Some((_, s)) if !r.1.beats(s) => acc,
                        _ => Some((i, &r.1)),
                    })
                    .expect("non-empty");
                if !top.beats(&best.1) {
                    break;
                }
                current = neighbours[i].clone();
                best = scored.into_iter().nth(i).expect("index in range");
            }
        }
        best
    };
    let progress = std::sync::atomic::AtomicU64::new(0);
    let mixed = uniform_search(search, &all, n, observer, &progress, per_uniform);
    if best_sep.1.beats(&mixed.1) {
        best_sep
    } else {
        mixed
    }
}
