//! MILP placers (stage-dp-and-milp.md §5), solved by HiGHS through good_lp:
//!
//! - `milp`: outer enumeration of group partitions (AlpaServe's uniform ones, then half/half mixes
//!   of the best shapes) and the inner MILP of §5.2 per partition ([`inner`]), warm-started from
//!   the fast greedy; the best partition is picked by simulated score after a simulator-guided
//!   fill of the memory the MILP left free, optionally followed by plexserve's local search.
//! - `alpaserve-ilp` and `sr-ilp`: AlpaServe's model-parallel and selective-replication ILPs
//!   (alpaserve-semantics.md §2.8), for comparison.
//!
//! Without the `milp` cargo feature the placers still list, and placing with them is an option
//! error that says so.

#[cfg(feature = "milp")]
mod alpaserve_ilp;
#[cfg(feature = "milp")]
mod highs;
#[cfg(feature = "milp")]
pub mod inner;

use crate::error::{Result, SolverError};
use crate::instance::Instance;
use crate::workload::Trace;

use super::{Observer, PlaceOptions, Placer, Solved};

/// Total time limit when `PlaceOptions.time_limit_s` is not given (AlpaServe's ILP limit).
pub const DEFAULT_TIME_LIMIT_S: f64 = 30.0;

/// The error every MILP placer returns in a build without the `milp` feature.
#[cfg(not(feature = "milp"))]
fn disabled(name: &str) -> SolverError {
    SolverError::Option(format!(
        "placer {name} needs HiGHS, but plexserve was built without the milp feature; rebuild with --features milp"
    ))
}

/// `milp`: outer partition enumeration + inner MILP + simulator refinement.
pub struct Milp;

/// AlpaServe's ModelParallelismILP.
pub struct AlpaServeIlp;

/// AlpaServe's SelectiveReplicationILP.
pub struct SrIlp;

impl Placer for Milp {
    fn name(&self) -> String {
        "milp".into()
    }
    fn description(&self) -> String {
        "MILP (HiGHS): per group partition, replicas and traffic shares minimising the busiest stage (objective=goodput: max served traffic); warm start from greedy, simulator fill".into()
    }
    fn place(
        &self,
        inst: &Instance,
        trace: &Trace,
        opts: &PlaceOptions,
        obs: &dyn Observer,
    ) -> Result<Solved> {
        #[cfg(feature = "milp")]
        {
            driver::place(inst, trace, opts, obs)
        }
        #[cfg(not(feature = "milp"))]
        {
            let _ = (inst, trace, opts, obs);
            Err(disabled("milp"))
        }
    }
}

impl Placer for AlpaServeIlp {
    fn name(&self) -> String {
        "alpaserve-ilp".into()
    }
    fn description(&self) -> String {
        "AlpaServe's model-parallel ILP (HiGHS): slot configs pp 1/2/4/8, max-min burst capability"
            .into()
    }
    fn place(
        &self,
        inst: &Instance,
        trace: &Trace,
        opts: &PlaceOptions,
        obs: &dyn Observer,
    ) -> Result<Solved> {
        #[cfg(feature = "milp")]
        {
            driver::place_ilp(inst, trace, opts, obs, "alpaserve-ilp")
        }
        #[cfg(not(feature = "milp"))]
        {
            let _ = (inst, trace, opts, obs);
            Err(disabled("alpaserve-ilp"))
        }
    }
}

impl Placer for SrIlp {
    fn name(&self) -> String {
        "sr-ilp".into()
    }
    fn description(&self) -> String {
        "AlpaServe's selective-replication ILP (HiGHS): one model set per device, max-min capacity"
            .into()
    }
    fn place(
        &self,
        inst: &Instance,
        trace: &Trace,
        opts: &PlaceOptions,
        obs: &dyn Observer,
    ) -> Result<Solved> {
        #[cfg(feature = "milp")]
        {
            driver::place_ilp(inst, trace, opts, obs, "sr-ilp")
        }
        #[cfg(not(feature = "milp"))]
        {
            let _ = (inst, trace, opts, obs);
            Err(disabled("sr-ilp"))
        }
    }
}

#[cfg(feature = "milp")]
mod driver {
    use std::sync::atomic::Ordering;

    use rayon::prelude::*;

    use super::alpaserve_ilp;
    use super::highs::{NoIncumbent, Settings};
    use super::inner::{self, Blocker, Formulation, Objective, Params, PartitionSolution};
    use super::*;
    use crate::plan::{Placement, Schedule, SolveStatus};
    use crate::sim::{Score, Scratch};

    use super::super::alpaserve::{uniform_partitions, MAX_PP};
    use super::super::baselines::{known_options, search, solved};
    use super::super::greedy::Search;
    use super::super::plexserve::local_search;

    /// Share of the time limit the MILPs may use; the rest is for the simulator fill.
    const MILP_SHARE: f64 = 0.85;
    /// Best uniform shapes combined pairwise into half/half mixes by default.
    const DEFAULT_MIXES: f64 = 3.0;

    /// A relative gap option in [0, 1).
    fn gap_option(opts: &PlaceOptions) -> Result<f64> {
        let gap = opts.number("gap", 0.01)?;
        if !(0.0..1.0).contains(&gap) {
            return Err(SolverError::Option(format!(
                "option gap: expected a relative gap in [0, 1), found {gap}"
            )));
        }
        Ok(gap)
    }

    fn time_limit(opts: &PlaceOptions) -> Result<f64> {
        let t = opts.time_limit_s.unwrap_or(DEFAULT_TIME_LIMIT_S);
        if t.is_nan() || t < 0.0 {
            return Err(SolverError::Option(format!(
                "time limit: expected a non-negative number of seconds, found {t}"
            )));
        }
        Ok(t)
    }

    /// The worse of two statuses: Optimal < GapLimit < TimeLimit (< Heuristic).
    fn worse(a: SolveStatus, b: SolveStatus) -> SolveStatus {
        let rank = |s: SolveStatus| match s {
            SolveStatus::Optimal => 0,
            SolveStatus::GapLimit => 1,
            SolveStatus::TimeLimit => 2,
            SolveStatus::Heuristic => 3,
        };
        if rank(b) > rank(a) {
            b
        } else {
            a
        }
    }

    /// Shapes that split `n` devices half/half between shapes `a` and `b`; devices neither can
    /// use form pipelines of the leftover's binary decomposition (pp ≤ 8, as the fixed uniform
    /// enumeration does).
    fn mix(n: u32, a: (u32, u32), b: (u32, u32)) -> Option<Vec<(u32, u32)>> {
        let (sa, sb) = (a.0 * a.1, b.0 * b.1);
        let ka = (n / 2) / sa;
        let kb = (n - ka * sa) / sb;
        if ka == 0 || kb == 0 {
            return None;
        }
        let mut shapes = vec![a; ka as usize];
        shapes.extend(std::iter::repeat_n(b, kb as usize));
        let mut left = n - ka * sa - kb * sb;
        for bit in (0..32).rev().map(|i| 1u32 << i) {
            while left >= bit && bit <= MAX_PP {
                shapes.push((bit, 1));
                left -= bit;
            }
        }
        Some(shapes)
    }

    /// Fails naming the first model that no candidate partition can serve, and why.
    fn check_coverage(inst: &Instance, candidates: &[Vec<(u32, u32)>]) -> Result<()> {
        let mut shapes: Vec<(u32, u32)> = candidates.iter().flatten().copied().collect();
        shapes.sort_unstable();
        shapes.dedup();
        for m in 0..inst.models.len() {
            let blockers: Vec<Blocker> = shapes
                .iter()
                .map(|&s| inner::pair_blocker(inst, m, s))
                .collect::<Option<Vec<_>>>()
                .unwrap_or_default();
            if blockers.is_empty() {
                continue;
            }
            let model = &inst.models[m];
            let why = if blockers.contains(&Blocker::Slo) {
                let fastest = shapes
                    .iter()
                    .filter(|&&s| {
                        !matches!(
                            inner::pair_blocker(inst, m, s),
                            Some(Blocker::NoProfile | Blocker::Memory)
                        )
                    })
                    .filter_map(|&s| inner::latency_s(inst, m, s))
                    .fold(f64::INFINITY, f64::min);
                format!(
                    "model {} meets its SLO of {:.4} s on no device group that fits it (fastest: {:.4} s with overhead and pipeline penalty)",
                    model.name, model.slo_s, fastest
                )
            } else {
                format!(
                    "model {} fits no device group of any candidate partition of {} devices within {} GiB per device",
                    model.name,
                    inst.cluster.devices,
                    inst.budget_gib()
                )
            };
            return Err(SolverError::Infeasible(why));
        }
        Ok(())
    }

    /// One candidate partition as it goes through the pipeline.
    struct Candidate {
        form: Formulation,
        /// Fast-greedy placement on the partition (the warm start and a fallback).
        greedy: Option<Placement>,
        solution: Option<PartitionSolution>,
        /// What the MILP of this partition may claim (`TimeLimit` when skipped for time).
        status: SolveStatus,
    }

    /// Warm starts for `forms`: the fast greedy (simulator) in parallel, or nothing.
    fn greedy_starts(
        s: &Search,
        forms: &[Formulation],
        use_greedy: bool,
    ) -> Vec<Option<Placement>> {
        if !use_greedy {
            return vec![None; forms.len()];
        }
        forms
            .par_iter()
            .map_init(Scratch::default, |scratch, f| {
                Some(
                    s.fast_greedy(Placement::from_shapes(&f.shapes), None, scratch)
                        .0,
                )
            })
            .collect()
    }

    fn solve_candidate(c: &mut Candidate, params: &Params, warm_kind: &str, budget_s: f64) {
        if budget_s <= 0.0 {
            c.status = SolveStatus::TimeLimit;
            return;
        }
        let warm = match warm_kind {
            "greedy" => c
                .greedy
                .as_ref()
                .and_then(|p| c.form.chosen_from(p))
                .or_else(|| c.form.lpt()),
            "lpt" => c.form.lpt(),
            _ => None,
        };
        let mut p = *params;
        p.settings.time_limit_s = Some(budget_s);
        let started = std::time::Instant::now();
        let result = inner::solve(&c.form, &p, warm.as_deref());
        tracing::debug!(
            "milp: partition {:?}×{} ({} pairs): {:?} in {:.2} s of {:.2} s",
            c.form.shapes[0],
            c.form.shapes.len(),
            c.form.pairs.len(),
            result.as_ref().map(|s| (s.status, s.objective, s.gap)),
            started.elapsed().as_secs_f64(),
            budget_s
        );
        match result {
            Ok(sol) => {
                c.status = sol.status;
                c.solution = Some(sol);
            }
            // A proved infeasible partition claims nothing worse than optimal.
            Err(NoIncumbent::Infeasible) => c.status = SolveStatus::Optimal,
            Err(NoIncumbent::Stopped) => c.status = SolveStatus::TimeLimit,
            Err(NoIncumbent::Failed(msg)) => {
                tracing::warn!("milp: HiGHS failed on a partition: {msg}");
                c.status = SolveStatus::Heuristic;
            }
        }
    }

    /// True when objective `a` is strictly better than `b`.
    fn better(objective: Objective, a: f64, b: f64) -> bool {
        match objective {
            Objective::Utilisation => a < b,
            Objective::Goodput { .. } => a > b,
        }
    }

    pub fn place(
        inst: &Instance,
        trace: &Trace,
        opts: &PlaceOptions,
        obs: &dyn Observer,
    ) -> Result<Solved> {
        known_options(
            "milp",
            opts,
            &[
                "faithful",
                "gap",
                "eps",
                "objective",
                "target",
                "warm",
                "fill",
                "rounds",
                "mixes",
            ],
        )?;
        let limit = time_limit(opts)?;
        let gap = gap_option(opts)?;
        let eps = opts.number("eps", 1e-4)?;
        let objective = match opts.params.get("objective").map(String::as_str) {
            None | Some("util") => Objective::Utilisation,
            Some("goodput") => {
                let target = opts.number("target", 1.0)?;
                if target <= 0.0 {
                    return Err(SolverError::Option(format!(
                        "option target: expected a positive utilisation, found {target}"
                    )));
                }
                Objective::Goodput { target }
            }
            Some(other) => {
                return Err(SolverError::Option(format!(
                    "option objective: expected util or goodput, found \"{other}\""
                )))
            }
        };
        let warm_kind = opts
            .params
            .get("warm")
            .map_or("greedy", String::as_str)
            .to_string();
        if !["greedy", "lpt", "none"].contains(&warm_kind.as_str()) {
            return Err(SolverError::Option(format!(
                "option warm: expected greedy, lpt or none, found \"{warm_kind}\""
            )));
        }
        let fill = !opts.params.contains_key("fill") || opts.flag("fill")?;
        let rounds = opts.number("rounds", 0.0)?.max(0.0) as usize;
        let mixes = opts.number("mixes", DEFAULT_MIXES)?.max(0.0) as usize;

        let timed = PlaceOptions {
            time_limit_s: Some(limit),
            ..opts.clone()
        };
        let s = search(inst, trace, &timed)?;
        let n = inst.cluster.devices;
        let shapes = uniform_partitions(n, false);
        check_coverage(inst, &shapes)?;
        let rates = inner::arrival_rates(trace, inst.models.len());
        let params = Params {
            objective,
            eps,
            settings: Settings {
                gap,
                time_limit_s: None,
            },
        };
        let planned = shapes.len() + mixes * mixes.saturating_sub(1) / 2;
        let forms: Vec<Formulation> = shapes
            .iter()
            .map(|sh| Formulation::new(inst, &rates, sh))
            .collect();
        let greedy = greedy_starts(&s, &forms, warm_kind == "greedy");
        let mut cands: Vec<Candidate> = forms
            .into_iter()
            .zip(greedy)
            .map(|(form, greedy)| Candidate {
                form,
                greedy,
                solution: None,
                status: SolveStatus::Optimal,
            })
            .collect();
        let milp_end = MILP_SHARE * limit;
        let mut done = 0usize;
        for c in &mut cands {
            let budget = (milp_end - s.deadline.elapsed_s()) / (planned - done) as f64;
            solve_candidate(c, &params, &warm_kind, budget);
            done += 1;
            obs.progress(done as u64, planned as u64);
        }

        // Half/half mixes of the best uniform shapes (by MILP objective).
        let mut ranked: Vec<usize> = (0..cands.len())
            .filter(|&i| cands[i].solution.is_some())
            .collect();
        ranked.sort_by(|&a, &b| {
            let (oa, ob) = (
                cands[a].solution.as_ref().map_or(0.0, |x| x.objective),
                cands[b].solution.as_ref().map_or(0.0, |x| x.objective),
            );
            if better(objective, oa, ob) {
                std::cmp::Ordering::Less
            } else if better(objective, ob, oa) {
                std::cmp::Ordering::Greater
            } else {
                a.cmp(&b)
            }
        });
        let mut top: Vec<(u32, u32)> = Vec::new();
        for &i in &ranked {
            let shape = cands[i].form.shapes[0];
            if !top.contains(&shape) && top.len() < mixes {
                top.push(shape);
            }
        }
        let mut mixed: Vec<Vec<(u32, u32)>> = Vec::new();
        for a in 0..top.len() {
            for b in a + 1..top.len() {
                if let Some(m) = mix(n, top[a], top[b]) {
                    if !shapes.contains(&m) && !mixed.contains(&m) {
                        mixed.push(m);
                    }
                }
            }
        }
        let mix_forms: Vec<Formulation> = mixed
            .iter()
            .map(|sh| Formulation::new(inst, &rates, sh))
            .collect();
        let mix_greedy = greedy_starts(&s, &mix_forms, warm_kind == "greedy");
        for (form, greedy) in mix_forms.into_iter().zip(mix_greedy) {
            let mut c = Candidate {
                form,
                greedy,
                solution: None,
                status: SolveStatus::Optimal,
            };
            let budget =
                (milp_end - s.deadline.elapsed_s()) / planned.saturating_sub(done).max(1) as f64;
            solve_candidate(&mut c, &params, &warm_kind, budget);
            done += 1;
            obs.progress(done as u64, planned as u64);
            cands.push(c);
        }

        // Simulator refinement: every candidate's plan (the MILP's, or its warm start when the
        // MILP gave nothing) is filled by the fast greedy, which starts by scoring the plan
        // itself and returns the best placement on the way, so the fill never loses score.
        let plans: Vec<(usize, Placement, Option<f64>)> = cands
            .iter()
            .enumerate()
            .filter_map(|(i, c)| match (&c.solution, &c.greedy) {
                (Some(sol), _) => Some((i, sol.placement.clone(), Some(sol.objective))),
                (None, Some(g)) => Some((i, g.clone(), None)),
                (None, None) => c.form.lpt().map(|chosen| {
                    let mut p = Placement::from_shapes(&c.form.shapes);
                    for (k, pair) in c.form.pairs.iter().enumerate() {
                        if chosen[k] {
                            p.groups[pair.group].models.push(pair.model as u32);
                        }
                    }
                    (i, p, None)
                }),
            })
            .collect();
        if plans.is_empty() {
            return Err(SolverError::Infeasible(format!(
                "no group partition of {n} devices admits a plan that serves every model within memory and SLO"
            )));
        }
        let refined: Vec<(Placement, Score)> = plans
            .par_iter()
            .map_init(Scratch::default, |scratch, (_, p, _)| {
                let mut p = p.clone();
                for g in &mut p.groups {
                    g.models.sort_unstable();
                }
                p.normalize();
                if fill {
                    s.fast_greedy(p, None, scratch)
                } else {
                    let score = s.evaluate(&p, scratch);
                    (p, score)
                }
            })
            .collect();
        let mut best = 0;
        for (i, r) in refined.iter().enumerate() {
            if r.1.beats(&refined[best].1) {
                best = i;
            }
        }
        let (mut p, mut score) = refined[best].clone();
        if rounds > 0 {
            (p, score) = local_search(&s, p, rounds);
        }
        if let Err(e) = p.validate(inst) {
            // The MILP's rows are the validity rules; reaching this is a bug, reported as such.
            return Err(SolverError::Infeasible(format!(
                "milp: the plan failed validation ({e}); please report this instance"
            )));
        }
        let mut status = cands
            .iter()
            .map(|c| c.status)
            .fold(SolveStatus::Optimal, worse);
        let chosen = &cands[plans[best].0];
        if chosen.solution.is_none() {
            status = worse(status, SolveStatus::TimeLimit);
        }
        if s.timed_out.load(Ordering::Relaxed) {
            status = worse(status, SolveStatus::TimeLimit);
        }
        let mut out = solved(&s, Schedule::fixed(p), score);
        out.status = status;
        out.objective = plans[best].2;
        Ok(out)
    }

    /// `alpaserve-ilp` and `sr-ilp`: one ILP, the plan scored in the simulator as is.
    pub fn place_ilp(
        inst: &Instance,
        trace: &Trace,
        opts: &PlaceOptions,
        obs: &dyn Observer,
        name: &str,
    ) -> Result<Solved> {
        known_options(name, opts, &["faithful", "gap"])?;
        let limit = time_limit(opts)?;
        let settings = Settings {
            gap: gap_option(opts)?,
            time_limit_s: Some(limit),
        };
        let s = search(inst, trace, opts)?;
        let rates = inner::arrival_rates(trace, inst.models.len());
        let plan = if name == "sr-ilp" {
            alpaserve_ilp::sr_ilp(inst, &rates, settings)?
        } else {
            alpaserve_ilp::mp_ilp(inst, &rates, settings)?
        };
        let mut p = plan.placement;
        p.normalize();
        let score = s.evaluate(&p, &mut Scratch::default());
        obs.progress(1, 1);
        let mut out = solved(&s, Schedule::fixed(p), score);
        out.status = plan.status;
        out.objective = Some(plan.objective);
        Ok(out)
    }
}
