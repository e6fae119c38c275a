//! AlpaServe's two-level search (alpaserve-semantics.md §2.5–§2.6): enumerate group partitions,
//! fill each with the fast greedy; for mixed model sets, bucket models by latency and split the
//! devices between buckets.

use std::collections::BTreeMap;

use rayon::prelude::*;

use crate::instance::{single_device_latency_s, Instance};
use crate::plan::Placement;
use crate::sim::{supports_partial, ModelStats, ModelView, Score, Scratch, Simulator};
use crate::workload::Trace;

use super::greedy::{Filled, Search};
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
) -> Filled {
    let view = supports_partial(&search.sim).then(|| ModelView::new(&search.sim, models));
    uniform_search_in(search, view.as_ref(), models, n, observer, progress, total)
}

/// [`uniform_search`] on the requests of `view` (built once for every partition), or with whole
/// simulations when there is no view.
fn uniform_search_in(
    search: &Search,
    view: Option<&ModelView>,
    models: &[usize],
    n: u32,
    observer: &dyn Observer,
    progress: &std::sync::atomic::AtomicU64,
    total: u64,
) -> Filled {
    let candidates = uniform_partitions(n, search.faithful);
    let results: Vec<Filled> = candidates
        .par_iter()
        .map_init(Scratch::default, |scratch, shapes| {
            let start = Placement::from_shapes(shapes);
            let r = match view {
                Some(v) => search.fast_greedy_in(v, start, models),
                None => {
                    let (placement, score) = search.fast_greedy(start, Some(models), scratch);
                    Filled {
                        placement,
                        score,
                        stats: None,
                    }
                }
            };
            let done = progress.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            observer.progress(done, total.max(done));
            r
        })
        .collect();
    best_of(results)
}

/// The first strictly best entry (a tie keeps the earlier one).
pub fn best_of(results: Vec<Filled>) -> Filled {
    let mut best: Option<Filled> = None;
    for r in results {
        if best.as_ref().is_none_or(|b| r.score.beats(&b.score)) {
            best = Some(r);
        }
    }
    best.unwrap_or(Filled {
        placement: Placement::default(),
        score: Score::worst(),
        stats: None,
    })
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
///
/// With incremental simulation every bucket searches on its own requests of the whole trace
/// (`views`), and a split's score is the sum of its buckets' per-model outcomes: buckets share
/// neither models nor devices, so the combined placement simulates to exactly those outcomes and
/// scoring a split costs no simulation. Otherwise the combined placements are simulated whole.
struct SplitSearch<'s, 'a> {
    search: &'s Search<'a>,
    buckets: Vec<Vec<usize>>,
    views: Vec<Option<ModelView>>,
    sub_traces: Vec<Option<Trace>>,
    memo: BTreeMap<(usize, u32), Filled>,
    observer: &'s dyn Observer,
    progress: std::sync::atomic::AtomicU64,
    total: u64,
}

impl SplitSearch<'_, '_> {
    /// Runs the sub-searches `splits` need and have not run yet, in parallel.
    fn prepare(&mut self, splits: &[Vec<u32>]) {
        let keys: Vec<(usize, u32)> = splits
            .iter()
            .flat_map(|s| s.iter().enumerate().map(|(b, &nb)| (b, nb)))
            .collect();
        self.prepare_keys(keys);
    }

    /// Runs the sub-searches (bucket, devices) in `keys` that have not run yet, in parallel.
    fn prepare_keys(&mut self, keys: Vec<(usize, u32)>) {
        use std::sync::atomic::Ordering::Relaxed;
        let mut missing: Vec<(usize, u32)> = keys
            .into_iter()
            .filter(|k| !self.memo.contains_key(k))
            .collect();
        missing.sort_unstable();
        missing.dedup();
        let search = self.search;
        let this = &*self;
        let results: Vec<Filled> = missing
            .par_iter()
            .map(|&(b, nb)| {
                let models = &this.buckets[b];
                if let Some(view) = &this.views[b] {
                    return uniform_search_in(
                        search,
                        Some(view),
                        models,
                        nb,
                        this.observer,
                        &this.progress,
                        this.total,
                    );
                }
                let sim = match &this.sub_traces[b] {
                    Some(t) => Simulator::new(search.inst(), t)
                        .with_config(search.sim.config.clone())
                        .with_options(search.sim.options.clone()),
                    None => search.sim.clone(),
                };
                let sub = Search::new(sim, search.faithful, search.deadline);
                let r = uniform_search(&sub, models, nb, this.observer, &this.progress, this.total);
                search
                    .evaluations
                    .fetch_add(sub.evaluations.load(Relaxed), Relaxed);
                search
                    .requests_simulated
                    .fetch_add(sub.requests_simulated.load(Relaxed), Relaxed);
                if sub.timed_out.load(Relaxed) {
                    search.timed_out.store(true, Relaxed);
                }
                r
            })
            .collect();
        self.memo.extend(missing.into_iter().zip(results));
    }

    /// The combined placement of a split: each bucket's sub-result on consecutive devices.
    fn combine(&self, split: &[u32]) -> Placement {
        let mut p = Placement::default();
        let mut offset = 0;
        for (b, &nb) in split.iter().enumerate() {
            for g in &self.memo[&(b, nb)].placement.groups {
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

    /// Good requests in the trimmed range of bucket `b`'s sub-result on `nb` devices (incremental
    /// mode only; the sub-search must have run).
    fn bucket_good_kept(&self, b: usize, nb: u32) -> Option<u64> {
        let stats = self.memo[&(b, nb)].stats.as_ref()?;
        Some(self.buckets[b].iter().map(|&m| stats.good_kept_m[m]).sum())
    }

    /// Good requests of a split in the trimmed range, from its buckets' sub-results; with
    /// `open = Some(b)`, bucket b counts all its trimmed-range requests instead (an upper bound
    /// before b's sub-search has run). `None` without per-model outcomes.
    fn split_good_kept(&self, split: &[u32], open: Option<usize>) -> Option<u64> {
        let mut total = 0;
        for (b, &nb) in split.iter().enumerate() {
            total += if open == Some(b) {
                self.views[b].as_ref()?.kept_len()
            } else {
                self.bucket_good_kept(b, nb)?
            };
        }
        Some(total)
    }

    /// The per-model outcomes of a split's combined placement, when every bucket has them.
    fn combined_stats(&self, split: &[u32]) -> Option<ModelStats> {
        let mut stats = ModelStats::new(self.search.inst().models.len(), 0);
        for (b, &nb) in split.iter().enumerate() {
            let sub = self.memo[&(b, nb)].stats.as_ref()?;
            for &m in &self.buckets[b] {
                stats.copy_model(sub, m);
            }
        }
        Some(stats)
    }

    /// Scores splits on the full workload; results in split order.
    fn evaluate(&mut self, splits: &[Vec<u32>]) -> Vec<Filled> {
        self.prepare(splits);
        let combined: Vec<Placement> = splits.iter().map(|s| self.combine(s)).collect();
        let stats: Vec<Option<ModelStats>> =
            splits.iter().map(|s| self.combined_stats(s)).collect();
        if let (Some(view), true) = (&self.views[0], stats.iter().all(Option::is_some)) {
            return combined
                .into_iter()
                .zip(stats)
                .map(|(placement, stats)| Filled {
                    score: view.score(
                        &self.search.sim,
                        stats.as_ref().expect("checked"),
                        placement.replicas(),
                    ),
                    placement,
                    stats,
                })
                .collect();
        }
        let scores = self.search.evaluate_all(&combined);
        combined
            .into_iter()
            .zip(scores)
            .map(|(placement, score)| Filled {
                placement,
                score,
                stats: None,
            })
            .collect()
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
pub fn separated_search(search: &Search, trace: &Trace, observer: &dyn Observer) -> Filled {
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
    let partial = supports_partial(&search.sim);
    let views: Vec<Option<ModelView>> = buckets
        .iter()
        .map(|b| partial.then(|| ModelView::new(&search.sim, b)))
        .collect();
    let sub_traces: Vec<Option<Trace>> = buckets
        .iter()
        .map(|b| (!search.faithful && !partial).then(|| sub_trace(trace, b, inst.models.len())))
        .collect();
    let mut ss = SplitSearch {
        search,
        buckets,
        views,
        sub_traces,
        memo: BTreeMap::new(),
        observer,
        progress: std::sync::atomic::AtomicU64::new(0),
        total: 0,
    };
    let separated = || {
        if search.faithful {
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
                    // The shrinking buckets' sub-searches first (fewer devices: cheaper). A neighbour
                    // whose growing bucket could not make up for them, even serving every request,
                    // cannot beat the current split and is dropped before its growing sub-search runs.
                    // The climb takes the same steps: it only moves to a neighbour that beats the
                    // current split.
                    let shrunk: Vec<(usize, u32)> = (0..k)
                        .filter(|&b| current[b] > step)
                        .map(|b| (b, current[b] - step))
                        .collect();
                    ss.prepare_keys(shrunk);
                    let best_good = ss.split_good_kept(&current, None);
                    let before = neighbours.len();
                    neighbours.retain(|s| {
                        let to = (0..k)
                            .find(|&b| s[b] > current[b])
                            .expect("one bucket grows");
                        match (ss.split_good_kept(s, Some(to)), best_good) {
                            (Some(bound), Some(best)) => bound >= best,
                            _ => true,
                        }
                    });
                    tracing::debug!(
                        pruned = before - neighbours.len(),
                        "split neighbours bounded"
                    );
                    if neighbours.is_empty() {
                        break;
                    }
                    let scored = ss.evaluate(&neighbours);
                    tracing::debug!(
                        step,
                        ?current,
                        attainment = best.score.attainment,
                        sub_searches = ss.memo.len(),
                        "split hill climb"
                    );
                    let (i, top) = scored
                        .iter()
                        .enumerate()
                        .fold(None::<(usize, &Score)>, |acc, (i, r)| match acc {
                            Some((_, s)) if !r.score.beats(s) => acc,
                            _ => Some((i, &r.score)),
                        })
                        .expect("non-empty");
                    if !top.beats(&best.score) {
                        break;
                    }
                    current = neighbours[i].clone();
                    best = scored.into_iter().nth(i).expect("index in range");
                }
            }
            best
        }
    };
    // The mixed search is independent of the split search: both run at once, which keeps the
    // second core busy while the climb waits on a single sub-search.
    let mixed_search = || {
        let progress = std::sync::atomic::AtomicU64::new(0);
        uniform_search(search, &all, n, observer, &progress, per_uniform)
    };
    let (best_sep, mixed) = rayon::join(separated, mixed_search);
    if best_sep.score.beats(&mixed.score) {
        best_sep
    } else {
        mixed
    }
}
