//! `exhaustive`: the oracle for tiny instances. Every multiset of groups — a (pp, tp) shape and a
//! non-empty set of models that fits its memory — using at most the cluster's devices, in
//! AlpaServe normal form, simulated; the best wins (the first in enumeration order on ties).

use rayon::prelude::*;

use crate::error::{Result, SolverError};
use crate::instance::{Dispatch, Instance};
use crate::plan::{model_weight_gib, Group, Placement, Schedule};
use crate::sim::Scratch;
use crate::workload::Trace;

use super::baselines::{known_options, search, solved};
use super::{Observer, PlaceOptions, Placer, Solved};

/// Refuse instances whose search space exceeds this many placements.
pub const MAX_CANDIDATES: u64 = 2_000_000;

/// A group option: a shape and the models it holds.
#[derive(Debug, Clone)]
struct Option_ {
    pp: u32,
    tp: u32,
    models: Vec<u32>,
}

/// Every (shape, model set) that fits memory, shapes in ascending (size, pp) order.
fn group_options(inst: &Instance) -> Vec<Option_> {
    let n = inst.cluster.devices;
    let mut shapes: Vec<(u32, u32)> = inst
        .profiles
        .iter()
        .flat_map(|p| p.configs.iter().map(|c| (c.pp, c.tp)))
        .filter(|&(pp, tp)| pp * tp <= n)
        .collect();
    shapes.sort_by_key(|&(pp, tp)| (pp * tp, pp));
    shapes.dedup();
    let n_models = inst.models.len();
    let mut out = Vec::new();
    for (pp, tp) in shapes {
        for mask in 1u64..(1u64 << n_models) {
            let models: Vec<u32> = (0..n_models as u32)
                .filter(|m| mask >> m & 1 == 1)
                .collect();
            let used: f64 = models
                .iter()
                .map(|&m| model_weight_gib(inst, m as usize, pp, tp))
                .sum();
            if used <= inst.budget_gib() + 1e-9 {
                out.push(Option_ { pp, tp, models });
            }
        }
    }
    out
}

/// Calls `f` with every multiset (non-decreasing option indices) of total size ≤ `left`.
fn multisets(
    options: &[Option_],
    from: usize,
    left: u32,
    chosen: &mut Vec<usize>,
    f: &mut dyn FnMut(&[usize]),
) {
    f(chosen);
    for i in from..options.len() {
        let size = options[i].pp * options[i].tp;
        if size <= left {
            chosen.push(i);
            multisets(options, i, left - size, chosen, f);
            chosen.pop();
        }
    }
}

fn placement(options: &[Option_], chosen: &[usize]) -> Placement {
    let mut next = 0u32;
    let mut p = Placement {
        groups: chosen
            .iter()
            .map(|&i| {
                let o = &options[i];
                let devices = (next..next + o.pp * o.tp).collect();
                next += o.pp * o.tp;
                Group {
                    pp: o.pp,
                    tp: o.tp,
                    devices,
                    models: o.models.clone(),
                }
            })
            .collect(),
    };
    p.normalize();
    p
}

pub struct Exhaustive;

impl Placer for Exhaustive {
    fn name(&self) -> String {
        "exhaustive".into()
    }
    fn description(&self) -> String {
        "oracle for tiny instances: every group partition, configuration and replica set, simulated"
            .into()
    }
    fn place(
        &self,
        inst: &Instance,
        trace: &Trace,
        opts: &PlaceOptions,
        obs: &dyn Observer,
    ) -> Result<Solved> {
        known_options("exhaustive", opts, &["faithful", "dispatch"])?;
        let mut s = search(inst, trace, opts)?;
        let dispatch = match opts.params.get("dispatch").map(String::as_str) {
            None => None,
            Some("slo_aware") => Some(Dispatch::SloAware),
            Some("earliest_last_stage") => Some(Dispatch::EarliestLastStage),
            Some(other) => {
                return Err(SolverError::Option(format!(
                "exhaustive: dispatch must be slo_aware or earliest_last_stage, found \"{other}\""
            )))
            }
        };
        if let Some(d) = dispatch {
            s.sim.config.dispatch = d;
        }
        let options = group_options(inst);
        let mut count = 0u64;
        multisets(
            &options,
            0,
            inst.cluster.devices,
            &mut Vec::new(),
            &mut |_| count += 1,
        );
        if count > MAX_CANDIDATES {
            return Err(SolverError::Option(format!(
                "exhaustive: {count} placements exceed the limit of {MAX_CANDIDATES}; use it on tiny instances only"
            )));
        }
        let mut all: Vec<Vec<usize>> = Vec::with_capacity(count as usize);
        multisets(
            &options,
            0,
            inst.cluster.devices,
            &mut Vec::new(),
            &mut |c| all.push(c.to_vec()),
        );
        let done = std::sync::atomic::AtomicU64::new(0);
        let scores: Vec<crate::sim::Score> = all
            .par_iter()
            .map_init(Scratch::default, |scratch, c| {
                let k = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                if k % 1024 == 0 {
                    obs.progress(k, count);
                }
                s.evaluate(&placement(&options, c), scratch)
            })
            .collect();
        let mut best = 0;
        for (i, sc) in scores.iter().enumerate() {
            if sc.beats(&scores[best]) {
                best = i;
            }
        }
        let mut out = solved(
            &s,
            Schedule::fixed(placement(&options, &all[best])),
            scores[best],
        );
        out.status = crate::plan::SolveStatus::Optimal;
        out.dispatch = dispatch;
        Ok(out)
    }
}
