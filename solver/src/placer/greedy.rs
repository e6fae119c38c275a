//! Simulator-guided replica placement inside a fixed group partition (alpaserve-semantics.md
//! §2.3–§2.4): AlpaServe's fast greedy and the paper's beam search.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::instance::Instance;
use crate::plan::{model_weight_gib, Placement};
use crate::sim::{Score, Scratch, Simulator};

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
}

impl<'a> Search<'a> {
    pub fn new(sim: Simulator<'a>, faithful: bool, deadline: Deadline) -> Search<'a> {
        Search {
            sim,
            faithful,
            deadline,
            evaluations: AtomicU64::new(0),
            timed_out: std::sync::atomic::AtomicBool::new(false),
        }
    }

    pub fn inst(&self) -> &'a Instance {
        self.sim.inst
    }

    /// Scores a placement and counts the evaluation.
    pub fn evaluate(&self, p: &Placement, scratch: &mut Scratch) -> Score {
        self.evaluations.fetch_add(1, Ordering::Relaxed);
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
        mut p: Placement,
        allowed: Option<&[usize]>,
        scratch: &mut Scratch,
    ) -> (Placement, Score) {
        let n_models = self.inst().models.len();
        let all: Vec<usize> = (0..n_models).collect();
        let allowed = allowed.unwrap_or(&all);
        let mut models: Vec<usize> = Vec::with_capacity(n_models);
        let mut unserved = vec![0.0f64; n_models];
        let mut groups: Vec<usize> = Vec::with_capacity(p.groups.len());
        let mut best: Option<(Placement, Score)> = None;
        loop {
            let score = self.evaluate(&p, scratch);
            let done = self.out_of_time();
            // AlpaServe keeps the last placement; the fixed mode the best one seen.
            if self.faithful || best.as_ref().is_none_or(|b| score.beats(&b.1)) {
                best = Some((p.clone(), score));
            }
            let k = &scratch.counters;
            if done || (!self.faithful && k.good() == k.requests()) {
                break;
            }
            for (m, u) in unserved.iter_mut().enumerate() {
                *u = k.req_m[m] as f64 * (1.0 - k.model_attainment(m));
            }
            models.clear();
            models.extend_from_slice(allowed);
            if self.faithful {
                // Ascending sort then reversed: equal counts end up highest id first.
                // (AlpaServe's unstable sort makes its order among equals unspecified; this is
                // the order it produces on small arrays.)
                models.sort_by(|&a, &b| unserved[a].total_cmp(&unserved[b]).then(a.cmp(&b)));
                models.reverse();
            } else {
                models.sort_by(|&a, &b| unserved[b].total_cmp(&unserved[a]).then(a.cmp(&b)));
            }
            groups.clear();
            groups.extend(0..p.groups.len());
            groups.sort_by_key(|&g| (k.routed_g[g], g));
            let choice = groups.iter().find_map(|&g| {
                models
                    .iter()
                    .find(|&&m| self.fits(&p, g, m, false))
                    .map(|&m| (g, m))
            });
            let Some((g, m)) = choice else {
                break;
            };
            p.groups[g].models.push(m as u32);
            p.normalize();
        }
        best.expect("at least one evaluation")
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
