//! Placers: one trait, many algorithms, selected by name from [`registry`].
//!
//! A placer name may carry options after a colon, `NAME[:key=value,...]`, for example
//! `clockwork++:window_s=3600` or `alpaserve:faithful`.

pub mod alpaserve;
mod baselines;
mod exhaustive;
pub mod greedy;
/// MILP placers; behind the `milp` feature (they list, and refuse to run, without it).
pub mod milp;
mod plexserve;

use std::collections::BTreeMap;
use std::time::Instant;

use crate::error::{Result, SolverError};
use crate::instance::Instance;
use crate::plan::{Schedule, SolveStatus};
use crate::sim::Score;
use crate::workload::Trace;

/// Options shared by every placer.
#[derive(Debug, Clone, Default)]
pub struct PlaceOptions {
    /// Wall-clock limit; a placer that stops on it reports `TimeLimit`.
    pub time_limit_s: Option<f64>,
    pub seed: u64,
    /// `key=value` options from the placer name (`key` alone means `key=true`).
    pub params: BTreeMap<String, String>,
}

impl PlaceOptions {
    /// A boolean option (`faithful`, `faithful=true`).
    pub fn flag(&self, key: &str) -> Result<bool> {
        match self.params.get(key).map(String::as_str) {
            None => Ok(false),
            Some("" | "true" | "1" | "yes") => Ok(true),
            Some("false" | "0" | "no") => Ok(false),
            Some(v) => Err(SolverError::Option(format!(
                "option {key}: expected true or false, found \"{v}\""
            ))),
        }
    }

    /// A numeric option with a default.
    pub fn number(&self, key: &str, default: f64) -> Result<f64> {
        match self.params.get(key) {
            None => Ok(default),
            Some(v) => v
                .parse::<f64>()
                .ok()
                .filter(|x| x.is_finite())
                .ok_or_else(|| {
                    SolverError::Option(format!("option {key}: expected a number, found \"{v}\""))
                }),
        }
    }
}

/// Progress reports from a running placer. Libraries never print; the CLI draws bars.
pub trait Observer: Sync {
    /// `done` of `total` units of work are finished.
    fn progress(&self, _done: u64, _total: u64) {}
}

/// An observer that ignores everything.
pub struct Silent;
impl Observer for Silent {}

/// What a placer returns.
#[derive(Debug, Clone)]
pub struct Solved {
    pub schedule: Schedule,
    /// Score of the schedule on the trace the placer optimized (search stats).
    pub score: Score,
    pub status: SolveStatus,
    /// Simulations (or other candidate evaluations) performed.
    pub evaluations: u64,
    pub time_s: f64,
    /// The optimizer's own objective, when it has one.
    pub objective: Option<f64>,
    /// Proved bound on `objective` (MILP placers), its relative gap, and whether a time limit
    /// stopped the optimizer; `None` where the placer proves nothing.
    pub bound: Option<f64>,
    pub gap: Option<f64>,
    pub time_limited: Option<bool>,
    /// Dispatch policy the schedule is meant to run under (the instance's when `None`).
    pub dispatch: Option<crate::instance::Dispatch>,
}

/// A placement algorithm.
pub trait Placer: Sync + Send {
    /// Name as given on the command line (without options).
    fn name(&self) -> String;
    /// One line for `plexserve placers`.
    fn description(&self) -> String;
    /// Places the instance's models, optimizing for `trace`.
    fn place(
        &self,
        inst: &Instance,
        trace: &Trace,
        opts: &PlaceOptions,
        observer: &dyn Observer,
    ) -> Result<Solved>;
}

/// Splits `name:key=value,flag` into the name and its options.
pub fn parse_placer_spec(spec: &str) -> Result<(String, BTreeMap<String, String>)> {
    let (name, rest) = spec.split_once(':').unwrap_or((spec, ""));
    let mut params = BTreeMap::new();
    for item in rest.split(',').filter(|s| !s.is_empty()) {
        let (k, v) = item.split_once('=').unwrap_or((item, ""));
        if k.is_empty() {
            return Err(SolverError::Option(format!(
                "placer \"{spec}\": empty option name"
            )));
        }
        params.insert(k.to_string(), v.to_string());
    }
    Ok((name.to_string(), params))
}

/// The placer `solve` uses when none is named.
pub const DEFAULT_PLACER: &str = "plexserve";

/// Every placer with its default parameters, in the order `plexserve placers` lists them.
pub fn registry() -> Vec<Box<dyn Placer>> {
    vec![
        Box::new(baselines::Sr),
        Box::new(baselines::ClockworkPP),
        Box::new(baselines::RoundRobin),
        Box::new(baselines::GreedyPp { k: 4 }),
        Box::new(baselines::AlpaServe),
        Box::new(baselines::AlpaServeSep),
        Box::new(plexserve::PlexServe),
        Box::new(exhaustive::Exhaustive),
        Box::new(milp::Milp),
        Box::new(milp::AlpaServeIlp),
        Box::new(milp::SrIlp),
    ]
}

/// Looks a placer up by name (`mp-greedy-<k>` takes any k).
pub fn by_name(name: &str) -> Result<Box<dyn Placer>> {
    if let Some(k) = name.strip_prefix("mp-greedy-") {
        let k: u32 = k.parse().map_err(|_| {
            SolverError::Option(format!(
                "placer \"{name}\": expected mp-greedy-<k> with a number k"
            ))
        })?;
        return Ok(Box::new(baselines::GreedyPp { k }));
    }
    registry()
        .into_iter()
        .find(|p| p.name() == name)
        .ok_or_else(|| {
            let names: Vec<String> = registry().iter().map(|p| p.name()).collect();
            SolverError::Option(format!(
                "unknown placer \"{name}\"; available: {}",
                names.join(", ")
            ))
        })
}

/// Measures elapsed time and checks a deadline.
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    start: Instant,
    limit_s: Option<f64>,
}

impl Deadline {
    pub fn new(limit_s: Option<f64>) -> Deadline {
        Deadline {
            start: Instant::now(),
            limit_s,
        }
    }
    pub fn elapsed_s(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }
    pub fn expired(&self) -> bool {
        self.limit_s.is_some_and(|l| self.elapsed_s() >= l)
    }
}
