//! The placers of alpaserve-semantics.md §2.5–§2.7 behind the [`Placer`] trait.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Result, SolverError};
use crate::instance::Instance;
use crate::plan::{model_weight_gib, Placement, Schedule, SolveStatus};
use crate::sim::{Scratch, SimOptions, Simulator};
use crate::workload::Trace;

use super::alpaserve::{separated_search, uniform_partitions, uniform_search};
use super::greedy::Search;
use super::{Deadline, Observer, PlaceOptions, Placer, Solved};

/// Builds the search context shared by the placers: `faithful` switches every AlpaServe quirk on.
pub(super) fn search<'a>(
    inst: &'a Instance,
    trace: &'a Trace,
    opts: &PlaceOptions,
) -> Result<Search<'a>> {
    let faithful = opts.flag("faithful")?;
    let sim = Simulator::new(inst, trace).with_options(SimOptions {
        faithful_segments: faithful,
        faithful_search_stats: faithful,
        faithful_batching: faithful,
    });
    Ok(Search::new(sim, faithful, Deadline::new(opts.time_limit_s)))
}

pub(super) fn solved(search: &Search, schedule: Schedule, score: crate::sim::Score) -> Solved {
    tracing::info!(
        evaluations = search.evaluations.load(Ordering::Relaxed),
        requests_simulated = search.requests_simulated.load(Ordering::Relaxed),
        time_s = search.deadline.elapsed_s(),
        "search finished"
    );
    Solved {
        schedule,
        score,
        status: if search.timed_out.load(Ordering::Relaxed) {
            SolveStatus::TimeLimit
        } else {
            SolveStatus::Heuristic
        },
        evaluations: search.evaluations.load(Ordering::Relaxed),
        time_s: search.deadline.elapsed_s(),
        objective: None,
        bound: None,
        gap: None,
        time_limited: None,
        dispatch: None,
    }
}

/// Rejects options a placer does not know, so a typo never passes silently.
pub(super) fn known_options(name: &str, opts: &PlaceOptions, known: &[&str]) -> Result<()> {
    for k in opts.params.keys() {
        if !known.contains(&k.as_str()) {
            return Err(SolverError::Option(format!(
                "placer {name} has no option \"{k}\"; it knows: {}",
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

fn all_models(inst: &Instance) -> Vec<usize> {
    (0..inst.models.len()).collect()
}

/// Fails with the name of a model that fits no group of the placement.
pub fn check_every_model_fits(inst: &Instance, p: &Placement) -> Result<()> {
    for m in 0..inst.models.len() {
        let fits = p
            .groups
            .iter()
            .any(|g| model_weight_gib(inst, m, g.pp, g.tp) <= inst.budget_gib() + 1e-9);
        if !fits {
            let shapes: Vec<String> = p
                .groups
                .iter()
                .map(|g| format!("pp{}×tp{}", g.pp, g.tp))
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
            return Err(SolverError::Infeasible(format!(
                "model {} fits no device group ({}) within {} GiB per device",
                inst.models[m].name,
                shapes.join(", "),
                inst.budget_gib()
            )));
        }
    }
    Ok(())
}

/// Selective replication: every device its own group, filled by the fast greedy (or a beam).
pub struct Sr;

impl Placer for Sr {
    fn name(&self) -> String {
        "sr".into()
    }
    fn description(&self) -> String {
        "selective replication: one group per device, simulator-guided greedy (beam=W for beam search)".into()
    }
    fn place(
        &self,
        inst: &Instance,
        trace: &Trace,
        opts: &PlaceOptions,
        obs: &dyn Observer,
    ) -> Result<Solved> {
        known_options("sr", opts, &["faithful", "beam"])?;
        let s = search(inst, trace, opts)?;
        let start = Placement::from_shapes(&vec![(1, 1); inst.cluster.devices as usize]);
        check_every_model_fits(inst, &start)?;
        let mut scratch = Scratch::default();
        let beam = opts.number("beam", 0.0)?;
        let (p, score) = if beam >= 1.0 {
            s.beam_search(start, beam as usize, &mut scratch)
        } else {
            s.fast_greedy(start, None, &mut scratch)
        };
        obs.progress(1, 1);
        Ok(solved(&s, Schedule::fixed(p), score))
    }
}

/// Model-parallel greedy with uniform pipelines of k devices.
pub struct GreedyPp {
    pub k: u32,
}

impl Placer for GreedyPp {
    fn name(&self) -> String {
        format!("mp-greedy-{}", self.k)
    }
    fn description(&self) -> String {
        "N/k pipelines of k devices (mp-greedy-<k>, any k dividing N), simulator-guided greedy"
            .into()
    }
    fn place(
        &self,
        inst: &Instance,
        trace: &Trace,
        opts: &PlaceOptions,
        obs: &dyn Observer,
    ) -> Result<Solved> {
        known_options(&self.name(), opts, &["faithful"])?;
        let n = inst.cluster.devices;
        if self.k == 0 || n % self.k != 0 {
            return Err(SolverError::Option(format!(
                "mp-greedy-{}: k must divide the {n} devices",
                self.k
            )));
        }
        let s = search(inst, trace, opts)?;
        let start = Placement::from_shapes(&vec![(self.k, 1); (n / self.k) as usize]);
        check_every_model_fits(inst, &start)?;
        let (p, score) = s.fast_greedy(start, None, &mut Scratch::default());
        obs.progress(1, 1);
        Ok(solved(&s, Schedule::fixed(p), score))
    }
}

/// Round robin over 4-stage pipelines; no simulation.
pub struct RoundRobin;

impl Placer for RoundRobin {
    fn name(&self) -> String {
        "mp-round-robin".into()
    }
    fn description(&self) -> String {
        "4-device pipelines filled round robin until memory is full (no simulation)".into()
    }
    fn place(
        &self,
        inst: &Instance,
        trace: &Trace,
        opts: &PlaceOptions,
        _obs: &dyn Observer,
    ) -> Result<Solved> {
        known_options("mp-round-robin", opts, &["faithful"])?;
        let s = search(inst, trace, opts)?;
        let n = inst.cluster.devices;
        let mut shapes = vec![(4u32, 1u32); (n / 4) as usize];
        let rem = n % 4;
        shapes.extend(
            (0..3)
                .map(|b| 1u32 << b)
                .filter(|bit| rem & bit != 0)
                .map(|l| (l, 1)),
        );
        let mut p = Placement::from_shapes(&shapes);
        check_every_model_fits(inst, &p)?;
        let n_groups = p.groups.len();
        let mut g = 0usize;
        loop {
            let mut added = false;
            for m in 0..inst.models.len() {
                if s.fits(&p, g, m, false) {
                    p.groups[g].models.push(m as u32);
                    g = (g + 1) % n_groups;
                    added = true;
                }
            }
            if !added {
                break;
            }
        }
        for gr in &mut p.groups {
            gr.models.sort_unstable();
        }
        let score = s.evaluate(&p, &mut Scratch::default());
        Ok(solved(&s, Schedule::fixed(p), score))
    }
}

/// AlpaServe without bucketing: every uniform group partition, fast greedy in each.
pub struct AlpaServe;

impl Placer for AlpaServe {
    fn name(&self) -> String {
        "alpaserve".into()
    }
    fn description(&self) -> String {
        "AlpaServe: enumerate uniform (pp, tp) group partitions, fast greedy replica placement in each".into()
    }
    fn place(
        &self,
        inst: &Instance,
        trace: &Trace,
        opts: &PlaceOptions,
        obs: &dyn Observer,
    ) -> Result<Solved> {
        known_options("alpaserve", opts, &["faithful"])?;
        let s = search(inst, trace, opts)?;
        let n = inst.cluster.devices;
        require_some_fit(inst, n, s.faithful)?;
        let total = uniform_partitions(n, s.faithful).len() as u64;
        let f = uniform_search(&s, &all_models(inst), n, obs, &AtomicU64::new(0), total);
        Ok(solved(&s, Schedule::fixed(f.placement), f.score))
    }
}

/// Infeasible unless every model fits a group of at least one uniform partition.
pub(super) fn require_some_fit(inst: &Instance, n: u32, faithful: bool) -> Result<()> {
    let parts = uniform_partitions(n, faithful);
    let mut last_err = None;
    for m in 0..inst.models.len() {
        let ok = parts
            .iter()
            .flatten()
            .any(|&(pp, tp)| model_weight_gib(inst, m, pp, tp) <= inst.budget_gib() + 1e-9);
        if !ok {
            last_err = Some(SolverError::Infeasible(format!(
                "model {} fits no uniform group partition of {n} devices within {} GiB per device",
                inst.models[m].name,
                inst.budget_gib()
            )));
            break;
        }
    }
    last_err.map_or(Ok(()), Err)
}

/// AlpaServe with latency bucketing and device splits (its placer for mixed model sets).
pub struct AlpaServeSep;

impl Placer for AlpaServeSep {
    fn name(&self) -> String {
        "alpaserve-sep".into()
    }
    fn description(&self) -> String {
        "AlpaServe for mixed sets: latency buckets, device splits, uniform search per bucket, vs. mixed".into()
    }
    fn place(
        &self,
        inst: &Instance,
        trace: &Trace,
        opts: &PlaceOptions,
        obs: &dyn Observer,
    ) -> Result<Solved> {
        known_options("alpaserve-sep", opts, &["faithful"])?;
        let s = search(inst, trace, opts)?;
        require_some_fit(inst, inst.cluster.devices, s.faithful)?;
        let f = separated_search(&s, trace, obs);
        Ok(solved(&s, Schedule::fixed(f.placement), f.score))
    }
}

/// Clockwork++: a fresh selective-replication placement per time window, fitted to that window's
/// own requests (oracle knowledge, as in AlpaServe's baseline).
pub struct ClockworkPP;

impl Placer for ClockworkPP {
    fn name(&self) -> String {
        "clockwork++".into()
    }
    fn description(&self) -> String {
        "Clockwork++: SR greedy re-placed every window_s seconds (default 60) on each window's requests".into()
    }
    fn place(
        &self,
        inst: &Instance,
        trace: &Trace,
        opts: &PlaceOptions,
        obs: &dyn Observer,
    ) -> Result<Solved> {
        use rayon::prelude::*;
        known_options("clockwork++", opts, &["faithful", "window_s"])?;
        let window_s = opts.number("window_s", 60.0)?;
        if window_s <= 0.0 {
            return Err(SolverError::Option(
                "clockwork++: window_s must be positive".into(),
            ));
        }
        let s = search(inst, trace, opts)?;
        let start = Placement::from_shapes(&vec![(1, 1); inst.cluster.devices as usize]);
        check_every_model_fits(inst, &start)?;
        // Windows anchored on arrivals: a window ends at the first arrival more than window_s
        // after the window's first arrival.
        let mut bounds = vec![0usize];
        let a = &trace.arrival_s;
        let mut t0 = a.first().copied().unwrap_or(0.0);
        for (i, &t) in a.iter().enumerate() {
            if t > t0 + window_s {
                bounds.push(i);
                t0 = t;
            }
        }
        bounds.push(a.len());
        let windows: Vec<(usize, usize)> = bounds.windows(2).map(|w| (w[0], w[1])).collect();
        let done = AtomicU64::new(0);
        let results: Vec<(f64, Placement)> = windows
            .par_iter()
            .map(|&(b, e)| {
                let part = Trace {
                    arrival_s: a[b..e].to_vec(),
                    model: trace.model[b..e].to_vec(),
                };
                let sim = Simulator::new(inst, &part).with_options(s.sim.options.clone());
                let sub = Search::new(sim, s.faithful, s.deadline);
                let (p, _) = sub.fast_greedy(start.clone(), None, &mut Scratch::default());
                s.evaluations
                    .fetch_add(sub.evaluations.load(Ordering::Relaxed), Ordering::Relaxed);
                if sub.timed_out.load(Ordering::Relaxed) {
                    s.timed_out.store(true, Ordering::Relaxed);
                }
                let k = done.fetch_add(1, Ordering::Relaxed) + 1;
                obs.progress(k, windows.len() as u64);
                let start_s = if b == 0 { 0.0 } else { a[b] };
                (start_s, p)
            })
            .collect();
        let schedule = Schedule { segments: results };
        let (counters, _) = s.sim.run(&schedule);
        let score = crate::sim::Score::new(
            counters.attainment(),
            counters.latency_sum_good_s / counters.good().max(1) as f64,
            schedule
                .segments
                .iter()
                .map(|x| x.1.replicas())
                .max()
                .unwrap_or(0),
        );
        Ok(solved(&s, schedule, score))
    }
}
