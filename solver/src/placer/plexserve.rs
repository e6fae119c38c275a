//! `plexserve`: our placer. It starts from AlpaServe's best (bucketed) search, switches dispatch to
//! the SLO-aware policy (a request goes to the replica that finishes it earliest, and is dropped
//! only when no replica meets its deadline), then improves the placement by local search in the
//! simulator: for the models that still lose the most requests, try adding a replica to each
//! lightly loaded group, or replacing one of that group's models to make room; apply the best
//! move while it improves the score.

use crate::error::Result;
use crate::instance::{Dispatch, Instance};
use crate::plan::{Placement, Schedule};
use crate::sim::{Score, Scratch};
use crate::workload::Trace;

use super::alpaserve::separated_search;
use super::baselines::{known_options, require_some_fit, search, solved};
use super::greedy::Search;
use super::{Observer, PlaceOptions, Placer, Solved};

pub struct PlexServe;

/// Models considered per round, and groups considered per model.
const TOP_MODELS: usize = 4;
const TOP_GROUPS: usize = 12;
const MAX_ROUNDS: usize = 64;

impl Placer for PlexServe {
    fn name(&self) -> String {
        "plexserve".into()
    }
    fn description(&self) -> String {
        "ours: AlpaServe's bucketed search, then SLO-aware dispatch and simulator-guided local search (add/replace replicas)".into()
    }
    fn place(
        &self,
        inst: &Instance,
        trace: &Trace,
        opts: &PlaceOptions,
        obs: &dyn Observer,
    ) -> Result<Solved> {
        known_options("plexserve", opts, &["dispatch", "rounds"])?;
        let mut s = search(inst, trace, opts)?;
        require_some_fit(inst, inst.cluster.devices, false)?;
        let sep = separated_search(&s, trace, obs);
        let (start, start_score) = (sep.placement, sep.score);
        let keep = opts.params.get("dispatch").is_some_and(|d| d == "keep");
        let variant =
            inst.simulator.max_batch > 1 || inst.simulator.dispatch == Dispatch::ShortestQueue;
        let rounds = opts.number("rounds", MAX_ROUNDS as f64)?.max(0.0) as usize;
        let mut best = (start.clone(), start_score, None);
        if !keep && !variant {
            // The same search under SLO-aware dispatch; kept only if it scores better, so the
            // result is never worse than the AlpaServe placement it started from.
            s.sim.config.dispatch = Dispatch::SloAware;
            let (p, score) = local_search(&s, start, rounds);
            if score.beats(&best.1) {
                best = (p, score, Some(Dispatch::SloAware));
            }
        } else {
            let (p, score) = local_search(&s, start, rounds);
            if score.beats(&best.1) {
                best = (p, score, None);
            }
        }
        let mut out = solved(&s, Schedule::fixed(best.0), best.1);
        out.dispatch = best.2;
        Ok(out)
    }
}

/// Add/replace local search from `p`; every round evaluates its candidate moves in parallel and
/// applies the best strictly improving one (the first in candidate order on ties).
pub fn local_search(s: &Search, mut p: Placement, rounds: usize) -> (Placement, Score) {
    let inst = s.inst();
    let mut scratch = Scratch::default();
    let mut score = s.evaluate(&p, &mut scratch);
    for _ in 0..rounds {
        if s.out_of_time() {
            break;
        }
        let k = &scratch.counters;
        let mut models: Vec<usize> = (0..inst.models.len())
            .filter(|&m| k.req_m[m] > k.good_m[m])
            .collect();
        models.sort_by_key(|&m| (std::cmp::Reverse(k.req_m[m] - k.good_m[m]), m));
        models.truncate(TOP_MODELS);
        if models.is_empty() {
            break;
        }
        let mut groups: Vec<usize> = (0..p.groups.len()).collect();
        groups.sort_by_key(|&g| (k.good_g[g], g));
        let mut candidates: Vec<Placement> = Vec::new();
        for &m in &models {
            for &g in groups
                .iter()
                .filter(|&&g| !p.groups[g].models.contains(&(m as u32)))
                .take(TOP_GROUPS)
            {
                if s.fits(&p, g, m, false) {
                    let mut q = p.clone();
                    q.groups[g].models.push(m as u32);
                    q.normalize();
                    candidates.push(q);
                    continue;
                }
                for a in p.groups[g].models.clone() {
                    let mut q = p.clone();
                    q.groups[g].models.retain(|&x| x != a);
                    if s.fits(&q, g, m, false) {
                        q.groups[g].models.push(m as u32);
                        q.normalize();
                        candidates.push(q);
                    }
                }
            }
        }
        if candidates.is_empty() {
            break;
        }
        let scores = s.evaluate_all(&candidates);
        let mut best: Option<usize> = None;
        for (i, sc) in scores.iter().enumerate() {
            if sc.beats(best.map_or(&score, |b| &scores[b])) {
                best = Some(i);
            }
        }
        let Some(i) = best else { break };
        p = candidates.swap_remove(i);
        score = s.evaluate(&p, &mut scratch);
    }
    (p, score)
}
