//! LLM placers: MuxServe (enumeration + greedy), spatial and temporal baselines, our
//! simulator-in-the-loop `plexserve-llm`, and the tensor-parallel configurations of the Amoeba study.

mod baselines;
mod muxserve;
mod search;
mod tp;

use crate::error::{Result, SolverError};
use crate::placer::{parse_placer_spec, PlaceOptions};
use crate::plan::SolveStatus;

use super::instance::LlmInstance;
use super::plan::Deployment;
use super::workload::LlmTrace;

pub use muxserve::{muxserve_place, Estimator};

/// What an LLM placer returns.
#[derive(Debug, Clone)]
pub struct LlmSolved {
    pub deployment: Deployment,
    pub status: SolveStatus,
    pub evaluations: u64,
    pub time_s: f64,
    pub objective: Option<f64>,
}

impl LlmSolved {
    /// A heuristic's answer: `evaluations` simulator runs, timed from `t0`, no objective.
    pub fn heuristic(deployment: Deployment, evaluations: u64, t0: std::time::Instant) -> Self {
        LlmSolved {
            deployment,
            status: SolveStatus::Heuristic,
            evaluations,
            time_s: t0.elapsed().as_secs_f64(),
            objective: None,
        }
    }
}

/// An LLM placement algorithm.
pub trait LlmPlacer: Sync + Send {
    fn name(&self) -> &'static str;
    fn description(&self) -> &'static str;
    fn place(&self, inst: &LlmInstance, trace: &LlmTrace, opts: &PlaceOptions)
        -> Result<LlmSolved>;
}

/// Every LLM placer, in the order `plexserve llm placers` lists them.
pub fn llm_registry() -> Vec<Box<dyn LlmPlacer>> {
    vec![
        Box::new(muxserve::MuxServe),
        Box::new(baselines::Spatial),
        Box::new(baselines::Temporal),
        Box::new(search::PlexserveLlm),
        Box::new(tp::TpStatic),
        Box::new(tp::TpHybrid),
        Box::new(tp::TpDynamic),
    ]
}

/// The placer `llm solve` uses when none is named.
pub const DEFAULT_LLM_PLACER: &str = "plexserve-llm";

/// Resolves `NAME[:key=value,...]` to a placer and its options.
pub fn llm_placer(spec: &str, base: &PlaceOptions) -> Result<(Box<dyn LlmPlacer>, PlaceOptions)> {
    let (name, params) = parse_placer_spec(spec)?;
    let placer = llm_registry()
        .into_iter()
        .find(|p| p.name() == name)
        .ok_or_else(|| {
            let names: Vec<&str> = llm_registry().iter().map(|p| p.name()).collect();
            SolverError::Option(format!(
                "unknown LLM placer \"{name}\"; available: {}",
                names.join(", ")
            ))
        })?;
    let mut opts = base.clone();
    opts.params.extend(params);
    Ok((placer, opts))
}

/// Rejects options a placer does not know, so a typo never passes silently.
pub(crate) fn check_params(opts: &PlaceOptions, placer: &str, known: &[&str]) -> Result<()> {
    for k in opts.params.keys() {
        if !known.contains(&k.as_str()) {
            return Err(SolverError::Option(format!(
                "placer {placer}: unknown option \"{k}\"; known: {}",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            )));
        }
    }
    Ok(())
}

/// Mesh sizes that split one node of `n` GPUs (MuxServe's patterns for 8: `[8]`, `[4, 4]`, …, `[1 × 8]`):
/// every multiset of powers of two summing to `n`, largest first.
pub fn node_patterns(n: u32) -> Vec<Vec<u32>> {
    fn rec(left: u32, max: u32, cur: &mut Vec<u32>, out: &mut Vec<Vec<u32>>) {
        if left == 0 {
            out.push(cur.clone());
            return;
        }
        let mut s = max.min(left);
        while s >= 1 {
            if s.is_power_of_two() {
                cur.push(s);
                rec(left - s, s, cur, out);
                cur.pop();
            }
            s -= 1;
        }
    }
    let mut out = Vec::new();
    rec(n, n, &mut Vec::new(), &mut out);
    out
}

/// Lays out mesh sizes onto nodes first-fit decreasing; returns device lists in the input order,
/// or None when they do not fit.
pub(crate) fn lay_out(sizes: &[u32], devices: u32, per_node: u32) -> Option<Vec<Vec<u32>>> {
    let nodes = devices.div_ceil(per_node);
    let mut free: Vec<u32> = (0..nodes)
        .map(|k| per_node.min(devices - k * per_node))
        .collect();
    let mut next: Vec<u32> = (0..nodes).map(|k| k * per_node).collect();
    let mut order: Vec<usize> = (0..sizes.len()).collect();
    order.sort_by(|&a, &b| sizes[b].cmp(&sizes[a]).then(a.cmp(&b)));
    let mut out = vec![Vec::new(); sizes.len()];
    for i in order {
        let k = (0..nodes as usize).find(|&k| free[k] >= sizes[i])?;
        out[i] = (next[k]..next[k] + sizes[i]).collect();
        next[k] += sizes[i];
        free[k] -= sizes[i];
    }
    Some(out)
}
