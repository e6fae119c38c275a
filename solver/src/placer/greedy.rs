//! Simulator-guided replica placement inside a fixed group partition (alpaserve-semantics.md
//! §2.3–§2.4): AlpaServe's fast greedy and the paper's beam search.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::instance::Instance;
use crate::plan::{model_weight_gib, Group, Placement};
use crate::sim::{
    affected_models, supports_partial, ModelStats, ModelView, Score, Scratch, Simulator,
    ViewScratch,
};

use super::Deadline;

/// Memory slack for sums of GiB values that are exact on paper but not in binary.
const GIB_EPS: f64 = 1e-9;

/// Everything a search needs besides the placement: the simulator, the quirks switch, the clock
/// and the evaluation counter (shared by parallel workers).
pub struct Search<'a> {
    pub sim: Simulator<'a>,
    /// Reproduce AlpaServe's tie-breaks and quirks instead of the fixed behaviour.
    pub faithful: bool,
    pub deadline: Deadline,
    pub evaluations: AtomicU64,
    /// Set when a search stopped on the deadline.
    pub timed_out: std::sync::atomic::AtomicBool,
    /// Requests simulated over all evaluations (an incremental evaluation simulates only the
    /// requests a change can affect).
    pub requests_simulated: AtomicU64,
}

/// A filled placement with its score and, from incremental searches, its per-model outcomes.
#[derive(Debug, Clone)]
pub struct Filled {
    pub placement: Placement,
    pub score: Score,
    pub stats: Option<ModelStats>,
}

/// Reused buffers of [`Search::next_replica`].
#[derive(Default)]
struct ChoiceBuffers {
    unserved: Vec<f64>,
    models: Vec<usize>,
    groups: Vec<usize>,
}

/// Normalizes `p` exactly as [`Placement::normalize`] does (a stable sort of the groups by model
/// tuple) and returns, for every new group index, the group's old index.
pub fn normalize_tracking(p: &mut Placement) -> Vec<usize> {
    for g in &mut p.groups {
        g.models.sort_unstable();
    }
    let mut order: Vec<usize> = (0..p.groups.len()).collect();
    order.sort_by(|&a, &b| p.groups[a].models.cmp(&p.groups[b].models));
    let mut old: Vec<Option<Group>> = std::mem::take(&mut p.groups)
        .into_iter()
        .map(Some)
        .collect();
    p.groups = order
        .iter()
        .map(|&i| old[i].take().expect("each index once"))
        .collect();
    order
}

impl<'a> Search<'a> {
    pub fn new(sim: Simulator<'a>, faithful: bool, deadline: Deadline) -> Search<'a> {
        Search {
            sim,
            faithful,
            deadline,
            evaluations: AtomicU64::new(0),
            timed_out: std::sync::atomic::AtomicBool::new(false),
            requests_simulated: AtomicU64::new(0),
        }
    }

    pub fn inst(&self) -> &'a Instance {
        self.sim.inst
    }

    /// Scores a placement and counts the evaluation.
    pub fn evaluate(&self, p: &Placement, scratch: &mut Scratch) -> Score {
        self.evaluations.fetch_add(1, Ordering::Relaxed);
        self.requests_simulated
            .fetch_add(self.sim.trace.len() as u64, Ordering::Relaxed);
        self.sim.evaluate(p, scratch)
    }

    /// True once the deadline has passed (and remembers it).
    pub fn out_of_time(&self) -> bool {
        let expired = self.deadline.expired();
        if expired {
            self.timed_out.store(true, Ordering::Relaxed);
        }
        expired
    }

    /// Whether model `m` can join group `g` of `p` within the memory budget. AlpaServe's beam
    /// search tests `<` where everything else tests `≤`; the fixed mode uses `≤` everywhere.
    pub fn fits(&self, p: &Placement, g: usize, m: usize, strict: bool) -> bool {
        let group = &p.groups[g];
        if group.models.contains(&(m as u32)) {
            return false;
        }
        let w = model_weight_gib(self.inst(), m, group.pp, group.tp);
        if !w.is_finite() {
            return false;
        }
        let used = p.used_gib(self.inst(), g) + w;
        let budget = self.inst().budget_gib();
        if strict && self.faithful {
            used < budget
        } else {
            used <= budget + GIB_EPS
        }
    }

    /// AlpaServe's fast greedy: one simulation per replica added; each step puts the model with
    /// the most unserved requests on the least-routed group that has room, until nothing fits.
    /// Only `allowed` models are placed (all when `None`).
    ///
    /// AlpaServe always fills memory and returns the last placement. The fixed mode returns the
    /// best placement seen on the way (an addition can hurt: dispatch is not SLO-aware) and stops
    /// once every request meets its SLO, leaving the rest of memory free.
    pub fn fast_greedy(
        &self,
        p: Placement,
        allowed: Option<&[usize]>,
        scratch: &mut Scratch,
    ) -> (Placement, Score) {
        let all: Vec<usize> = (0..self.inst().models.len()).collect();
        let allowed = allowed.unwrap_or(&all);
        if supports_partial(&self.sim) {
            let view = self.view(&p, allowed);
            let f = self.fast_greedy_in(&view, p, allowed);
            return (f.placement, f.score);
        }
        self.fast_greedy_whole(p, allowed, scratch)
    }

    /// The requests of `allowed` and of every model already placed in `p`.
    pub fn view(&self, p: &Placement, allowed: &[usize]) -> ModelView {
        let mut models = allowed.to_vec();
        models.extend(
            p.groups
                .iter()
                .flat_map(|g| g.models.iter().map(|&m| m as usize)),
        );
        ModelView::new(&self.sim, &models)
    }

    /// [`Search::fast_greedy`] with incremental simulation: after adding replica (g, m), only the
    /// component of m (the models linked to it through shared groups) can change outcome, so only
    /// its requests are simulated again. Same decisions and scores as simulating everything.
    /// `view` must hold the requests of `allowed` and of every model placed in `p`.
    pub fn fast_greedy_in(&self, view: &ModelView, mut p: Placement, allowed: &[usize]) -> Filled {
        let n_models = self.inst().models.len();
        let mut stats = ModelStats::new(n_models, p.groups.len());
        let mut view_scratch = ViewScratch::default();
        let mut affected = Vec::new();
        let mut buffers = ChoiceBuffers::default();
        let started = std::time::Instant::now();
        let simulated = view.simulate_all(&self.sim, &p, &mut stats, &mut view_scratch);
        let mut local_simulated = simulated;
        let mut steps = 0u64;
        self.requests_simulated
            .fetch_add(simulated, Ordering::Relaxed);
        let mut best: Option<Filled> = None;
        loop {
            self.evaluations.fetch_add(1, Ordering::Relaxed);
            let score = view.score(&self.sim, &stats, p.replicas());
            let done = self.out_of_time();
            // AlpaServe keeps the last placement; the fixed mode the best one seen.
            if self.faithful || best.as_ref().is_none_or(|b| score.beats(&b.score)) {
                best = Some(Filled {
                    placement: p.clone(),
                    score,
                    stats: Some(stats.clone()),
                });
            }
            if done || (!self.faithful && view.all_good(&stats)) {
                break;
            }
            let choice = self.next_replica(
                &p,
                allowed,
                view.requests_of(),
                &stats.good_m,
                &stats.routed_g,
                &mut buffers,
            );
            let Some((g, m)) = choice else {
                break;
            };
            p.groups[g].models.push(m as u32);
            let old_of_new = normalize_tracking(&mut p);
            stats.permute_groups(&old_of_new);
            let g = old_of_new
                .iter()
                .position(|&old| old == g)
                .expect("a permutation");
            affected_models(&p, &[g], &[m], &mut affected, n_models);
            let simulated = view.simulate(&self.sim, &p, &affected, &mut stats, &mut view_scratch);
            local_simulated += simulated;
            steps += 1;
            self.requests_simulated
                .fetch_add(simulated, Ordering::Relaxed);
        }
        tracing::trace!(
            view = view.len(),
            groups = p.groups.len(),
            shape = ?p.groups.first().map(|g| (g.pp, g.tp)),
            replicas = p.replicas(),
            steps,
            simulated = local_simulated,
            ms = started.elapsed().as_secs_f64() * 1e3,
            "greedy done"
        );
        best.expect("at least one evaluation")
    }

    /// The fast greedy simulating the whole trace at every step: for the simulator variants whose
    /// models interact (batching, jittered dispatch), and the reference the incremental greedy is
    /// tested against.
    pub fn fast_greedy_whole(
        &self,
        mut p: Placement,
        allowed: &[usize],
        scratch: &mut Scratch,
    ) -> (Placement, Score) {
        let mut buffers = ChoiceBuffers::default();
        let mut best: Option<(Placement, Score)> = None;
        loop {
            let score = self.evaluate(&p, scratch);
            let done = self.out_of_time();
            if self.faithful || best.as_ref().is_none_or(|b| score.beats(&b.1)) {
                best = Some((p.clone(), score));
            }
            let k = &scratch.counters;
            if done || (!self.faithful && k.good() == k.requests()) {
                break;
            }
            let choice =
                self.next_replica(&p, allowed, &k.req_m, &k.good_m, &k.routed_g, &mut buffers);
            let Some((g, m)) = choice else {
                break;
            };
            p.groups[g].models.push(m as u32);
            p.normalize();
        }
        best.expect("at least one evaluation")
    }

    /// The fast greedy's next replica: the first group by routed count ascending, then the first
    /// model by unserved requests descending, that fits.
    fn next_replica(
        &self,
        p: &Placement,
        allowed: &[usize],
        req_m: &[u64],
        good_m: &[u64],
        routed_g: &[u64],
        b: &mut ChoiceBuffers,
    ) -> Option<(usize, usize)> {
        b.unserved.clear();
        // AlpaServe's per-model attainment good/(req + 1e-6), as `Counters::model_attainment`.
        b.unserved.extend(
            req_m
                .iter()
                .zip(good_m)
                .map(|(&r, &g)| r as f64 * (1.0 - g as f64 / (r as f64 + 1e-6))),
        );
        let unserved = &b.unserved;
        b.models.clear();
        b.models.extend_from_slice(allowed);
        if self.faithful {
            // Ascending sort then reversed: equal counts end up highest id first.
            // (AlpaServe's unstable sort makes its order among equals unspecified; this is
            // the order it produces on small arrays.)
            b.models
                .sort_by(|&a, &c| unserved[a].total_cmp(&unserved[c]).then(a.cmp(&c)));
            b.models.reverse();
        } else {
            b.models
                .sort_by(|&a, &c| unserved[c].total_cmp(&unserved[a]).then(a.cmp(&c)));
        }
        b.groups.clear();
        b.groups.extend(0..p.groups.len());
        b.groups.sort_by_key(|&g| (routed_g[g], g));
        b.groups.iter().find_map(|&g| {
            b.models
                .iter()
                .find(|&&m| self.fits(p, g, m, false))
                .map(|&m| (g, m))
        })
    }

    /// The paper's Algorithm 1: grow the `width` best placements by one replica at a time,
    /// simulating every candidate; return the best placement seen.
    pub fn beam_search(
        &self,
        start: Placement,
        width: usize,
        scratch: &mut Scratch,
    ) -> (Placement, Score) {
        use std::collections::HashSet;
        let n_models = self.inst().models.len();
        // AlpaServe starts from score −1, so its start never wins; the fixed mode lets it compete.
        let start_score = if self.faithful {
            Score::worst()
        } else {
            self.evaluate(&start, scratch)
        };
        let mut best = (start.clone(), start_score);
        let mut beam = vec![start];
        let mut visited: HashSet<Placement> = HashSet::new();
        while !beam.is_empty() && !self.out_of_time() {
            let mut candidates: Vec<Placement> = Vec::new();
            for p in &beam {
                for g in 0..p.groups.len() {
                    for m in 0..n_models {
                        if self.fits(p, g, m, true) {
                            let mut q = p.clone();
                            q.groups[g].models.push(m as u32);
                            q.normalize();
                            if visited.insert(q.clone()) {
                                candidates.push(q);
                            }
                        }
                    }
                }
            }
            if candidates.is_empty() {
                break;
            }
            let scores = self.evaluate_all(&candidates);
            let mut order: Vec<usize> = (0..candidates.len()).collect();
            order.sort_by(|&a, &b| scores[b].value.total_cmp(&scores[a].value).then(a.cmp(&b)));
            if let Some(&top) = order.first() {
                if scores[top].beats(&best.1) {
                    best = (candidates[top].clone(), scores[top]);
                }
            }
            beam = order
                .iter()
                .take(width)
                .map(|&i| candidates[i].clone())
                .collect();
        }
        best
    }

    /// Scores candidates in parallel; the result is in candidate order, whatever the threads.
    pub fn evaluate_all(&self, candidates: &[Placement]) -> Vec<Score> {
        use rayon::prelude::*;
        candidates
            .par_iter()
            .map_init(Scratch::default, |scratch, p| self.evaluate(p, scratch))
            .collect()
    }
}
