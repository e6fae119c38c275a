//! MILP placers (stage-dp-and-milp.md §5), solved by HiGHS through good_lp:
//!
//! - `milp`: outer enumeration of group partitions (AlpaServe's uniform ones, then half/half mixes
//!   of the best shapes) and the inner MILP of §5.2 per partition ([`inner`](crate::placer::milp::inner)), warm-started from
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
#[cfg(feature = "milp")]
pub mod pattern;

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

/// What the `milp` search proved, beyond the plan: the status and objective across every
/// partition it enumerated, and how each partition was settled.
#[derive(Debug, Clone)]
pub struct SearchReport {
    /// `Optimal` when the best objective meets the weakest partition bound, `GapLimit` when
    /// within the gap option, `TimeLimit` otherwise.
    pub status: crate::plan::SolveStatus,
    /// Best MILP objective over all partitions (`None` when no partition had a solution).
    pub best: Option<f64>,
    /// Proved bound on the objective over all partitions (utilisation: from below).
    pub bound: f64,
    /// `|best − bound| / |best|`.
    pub gap: f64,
    /// Whether a time limit cut anything short: a partition's MILP, a partition skipped for
    /// lack of time, the simulator warm starts or the fill.
    pub time_limited: bool,
    /// Per partition: shapes, how it was settled, best known value, proved bound.
    pub partitions: Vec<PartitionReport>,
}

/// One partition's line of [`SearchReport`].
#[derive(Debug, Clone)]
pub struct PartitionReport {
    pub shapes: Vec<(u32, u32)>,
    pub outcome: &'static str,
    pub value: Option<f64>,
    pub bound: f64,
}

/// Runs the `milp` placer and returns its search report with the result.
pub fn search_with_report(
    inst: &Instance,
    trace: &Trace,
    opts: &PlaceOptions,
    obs: &dyn Observer,
) -> Result<(Solved, SearchReport)> {
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

/// Defines a placer that needs HiGHS: with the `milp` feature it runs `$solve`, without it
/// placing is an option error that says which feature is missing (the placer still lists).
macro_rules! highs_placer {
    ($(#[$doc:meta])* $ty:ident, $name:literal, $description:literal,
     |$inst:ident, $trace:ident, $opts:ident, $obs:ident| $solve:expr) => {
        $(#[$doc])*
        pub struct $ty;

        impl Placer for $ty {
            fn name(&self) -> String {
                $name.into()
            }
            fn description(&self) -> String {
                $description.into()
            }
            fn place(
                &self,
                $inst: &Instance,
                $trace: &Trace,
                $opts: &PlaceOptions,
                $obs: &dyn Observer,
            ) -> Result<Solved> {
                #[cfg(feature = "milp")]
                {
                    $solve
                }
                #[cfg(not(feature = "milp"))]
                {
                    let _ = ($inst, $trace, $opts, $obs);
                    Err(disabled($name))
                }
            }
        }
    };
}

highs_placer!(
    /// `milp`: outer partition enumeration + inner MILP + simulator refinement.
    Milp,
    "milp",
    "MILP (HiGHS): per group partition, replicas and traffic shares minimising the busiest stage (objective=goodput: max served traffic); warm start from greedy, simulator fill",
    |inst, trace, opts, obs| search_with_report(inst, trace, opts, obs).map(|(solved, _)| solved)
);

highs_placer!(
    /// AlpaServe's ModelParallelismILP.
    AlpaServeIlp,
    "alpaserve-ilp",
    "AlpaServe's model-parallel ILP (HiGHS): slot configs pp 1/2/4/8, max-min burst capability",
    |inst, trace, opts, obs| driver::place_ilp(inst, trace, opts, obs, "alpaserve-ilp")
);

highs_placer!(
    /// AlpaServe's SelectiveReplicationILP.
    SrIlp,
    "sr-ilp",
    "AlpaServe's selective-replication ILP (HiGHS): one model set per device, max-min capacity",
    |inst, trace, opts, obs| driver::place_ilp(inst, trace, opts, obs, "sr-ilp")
);

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
    use super::super::Deadline;

    /// Least share of the time limit kept for the simulator fill after the MILPs.
    const FILL_SHARE: f64 = 0.1;
    /// Most of the time limit the fill reserve may take (the MILPs keep the rest).
    const FILL_SHARE_MAX: f64 = 0.5;
    /// Passes over the partitions left open after the first pass, with the time left over.
    const REVISITS: usize = 2;
    /// Best uniform shapes combined pairwise into half/half mixes by default.
    const DEFAULT_MIXES: f64 = 3.0;

    /// Share of the time limit the simulator warm starts (`warm=greedy`) may take.
    const GREEDY_SHARE: f64 = 0.3;
    /// Share of the time limit after which the warm starts' local searches stop (each one
    /// normally ends on its own well before).
    const LOCAL_SHARE: f64 = 0.1;

    /// Restarts the search's clock so that it expires `until_s` after the run's `clock` started,
    /// and forgets a timeout of an earlier phase.
    fn restart(s: &mut Search, clock: &Deadline, until_s: f64) {
        s.deadline = Deadline::new(Some((until_s - clock.elapsed_s()).max(0.0)));
        s.timed_out.store(false, Ordering::Relaxed);
    }

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
        /// The warm start's replica set and its objective value (a feasible solution).
        warm: Option<(Vec<bool>, f64)>,
        solution: Option<PartitionSolution>,
        /// Proved bound on the objective of any solution of this partition that beats the
        /// cutoff it was solved with (utilisation: a lower bound; goodput: an upper bound).
        bound: f64,
        /// How the partition was settled, for the log.
        outcome: &'static str,
        /// The lowest utilisation threshold the pattern bound failed to prove (`None`: none
        /// tried yet).
        pattern_failed: Option<f64>,
    }

    impl Candidate {
        fn new(
            form: Formulation,
            greedy: Option<Placement>,
            params: &Params,
            warm_kind: &str,
            until: std::time::Instant,
        ) -> Candidate {
            let util = matches!(params.objective, Objective::Utilisation);
            let bound = if !util {
                f64::INFINITY
            } else if params.cuts {
                form.objective_bound(params.eps, form.utilisation_bound())
            } else {
                form.objective_bound(params.eps, 0.0)
            };
            let chosen = match warm_kind {
                "greedy" => greedy
                    .as_ref()
                    .and_then(|p| form.chosen_from(p))
                    .or_else(|| form.lpt()),
                "lpt" | "balanced" => form.lpt(),
                _ => None,
            };
            let mut warm = chosen.map(|c| {
                let v = form.start_value(&c, params.objective, params.eps);
                (c, v)
            });
            if warm_kind == "balanced" && util {
                if let Some((c, v)) = form.balanced(params.eps) {
                    if warm.as_ref().is_none_or(|w| v < w.1) {
                        warm = Some((c, v));
                    }
                }
                // The packing balances loads group by group; moves, swaps and splits of
                // replicas between groups then even out what its greedy order left uneven.
                if let Some((c, v)) = warm
                    .as_ref()
                    .and_then(|w| form.local_search(&w.0, params.eps, until))
                {
                    if warm.as_ref().is_none_or(|w| v < w.1) {
                        warm = Some((c, v));
                    }
                }
            }
            Candidate {
                form,
                greedy,
                warm,
                solution: None,
                bound,
                outcome: "pending",
                pattern_failed: None,
            }
        }

        /// The best objective value known on this partition (MILP incumbent or warm start).
        fn value(&self, objective: Objective) -> Option<f64> {
            let a = self.solution.as_ref().map(|s| s.objective);
            let b = self.warm.as_ref().map(|w| w.1);
            match (a, b) {
                (Some(a), Some(b)) if better(objective, b, a) => Some(b),
                (Some(a), _) => Some(a),
                (None, b) => b,
            }
        }
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

    /// Solves the candidate's MILP within `budget_s`, wanting only solutions better than
    /// `cutoff` (minimisation only), and records what it proved.
    fn solve_candidate(c: &mut Candidate, params: &Params, budget_s: f64, cutoff: Option<f64>) {
        if budget_s <= 0.0 {
            c.outcome = "skipped (no time left)";
            return;
        }
        let mut p = *params;
        p.settings.time_limit_s = Some(budget_s);
        p.settings.cutoff = cutoff;
        let started = std::time::Instant::now();
        // Start from the partition's own incumbent when a previous pass found a better one.
        let own = c
            .solution
            .as_ref()
            .filter(|sol| c.warm.as_ref().is_none_or(|w| sol.objective < w.1))
            .map(|sol| sol.chosen.clone());
        let warm = own.as_deref().or(c.warm.as_ref().map(|w| w.0.as_slice()));
        let result = inner::solve(&c.form, &p, warm);
        tracing::debug!(
            "milp: partition {:?}×{} ({} pairs, bound {:.5}, cutoff {:?}): {:?} in {:.2} s of {:.2} s",
            c.form.shapes[0],
            c.form.shapes.len(),
            c.form.pairs.len(),
            c.bound,
            cutoff,
            result.as_ref().map(|s| (s.status, s.objective, s.gap, s.bound)),
            started.elapsed().as_secs_f64(),
            budget_s
        );
        let util = matches!(params.objective, Objective::Utilisation);
        let tighter = |a: f64, b: f64| if util { a.max(b) } else { a.min(b) };
        match result {
            Ok(sol) => {
                c.bound = tighter(c.bound, sol.bound);
                if sol.status == SolveStatus::Optimal {
                    // Closed gap: the incumbent is the partition's optimum.
                    c.bound = tighter(c.bound, sol.objective);
                }
                c.outcome = match sol.status {
                    SolveStatus::Optimal => "optimal",
                    SolveStatus::GapLimit => "gap limit",
                    _ => "time limit",
                };
                c.solution = Some(sol);
            }
            // Proved: nothing in this partition beats the cutoff (or nothing at all).
            Err(NoIncumbent::Infeasible) => {
                c.bound = tighter(c.bound, cutoff.unwrap_or(f64::INFINITY));
                c.outcome = "nothing beats the cutoff";
            }
            Err(NoIncumbent::Stopped { bound }) => {
                c.bound = tighter(c.bound, bound);
                c.outcome = "time limit, no incumbent";
            }
            Err(NoIncumbent::Failed(msg)) => {
                tracing::warn!("milp: HiGHS failed on a partition: {msg}");
                c.outcome = "HiGHS failed";
            }
        }
    }

    /// Solves the MILPs of `cands[from..]` in order of their bounds, most promising first,
    /// sharing the best objective found so far as a cutoff: a partition whose bound cannot beat
    /// the incumbent by more than the gap is settled without a solve. Time left is split evenly
    /// over the partitions still open.
    #[allow(clippy::too_many_arguments)]
    fn solve_all(
        cands: &mut [Candidate],
        which: Vec<usize>,
        params: &Params,
        gap: f64,
        milp_end: f64,
        deadline: &super::super::Deadline,
        done: &mut usize,
        planned: usize,
        later: usize,
        proving: bool,
        obs: &dyn Observer,
    ) {
        let objective = params.objective;
        let util = matches!(objective, Objective::Utilisation);
        let mut order = which;
        if util && params.cuts {
            order.sort_by(|&a, &b| cands[a].bound.total_cmp(&cands[b].bound).then(a.cmp(&b)));
        }
        for (n, &i) in order.iter().enumerate() {
            let incumbent = cands.iter().filter_map(|c| c.value(objective)).fold(
                None,
                |acc: Option<f64>, v| match acc {
                    Some(a) if !better(objective, v, a) => Some(a),
                    _ => Some(v),
                },
            );
            // Utilisation: only solutions better than the incumbent by more than the gap are
            // worth a solve (HiGHS' cutoff); goodput keeps its plain MILP per partition.
            let cutoff = match incumbent {
                Some(v) if util && params.cuts => Some(v - gap * v.abs()),
                _ => None,
            };
            if let Some(cut) = cutoff {
                if let (true, Some(v)) = (cands[i].bound < cut, incumbent) {
                    // A short try before the MILP: where memory and load are coupled it settles
                    // partitions the MILP's relaxation leaves open; elsewhere it gives up fast.
                    let open = order[n..].iter().filter(|&&j| cands[j].bound < cut).count() + later;
                    let budget = PATTERN_SHARE * (milp_end - deadline.elapsed_s()) / open as f64;
                    let levels: &[f64] = if proving { &[v, cut] } else { &[v] };
                    pattern_prune(&mut cands[i], params, levels, budget);
                }
                if cands[i].bound >= cut {
                    if cands[i].outcome != "pruned by its pattern bound" {
                        cands[i].outcome = "pruned by its bound";
                    }
                    *done += 1;
                    obs.progress(*done as u64, planned as u64);
                    continue;
                }
            }
            let open = order[n..]
                .iter()
                .filter(|&&j| cutoff.is_none_or(|cut| cands[j].bound < cut))
                .count()
                + later;
            let budget = (milp_end - deadline.elapsed_s()) / open as f64;
            // A first pass wants any improvement on the incumbent (so HiGHS keeps a solution
            // within the gap as its own incumbent and stops on the gap); a revisit only what
            // beats it by more than the gap, the cutoff that proves the gap fastest.
            let highs_cutoff = if proving {
                cutoff
            } else {
                cutoff.and(incumbent)
            };
            solve_candidate(&mut cands[i], params, budget, highs_cutoff);
            *done += 1;
            obs.progress(*done as u64, planned as u64);
        }
    }

    /// Share of a partition's MILP time that its pattern proofs may take first.
    const PATTERN_SHARE: f64 = 0.25;

    /// Tries to prove with the pattern bound ([`pattern`]) that no solution of the candidate's
    /// partition reaches the first objective level of `levels` (descending), else the next; the
    /// level proved becomes the candidate's bound. All tries together stop after `budget_s`; a
    /// threshold that failed once is tried again only after the levels dropped below it.
    fn pattern_prune(c: &mut Candidate, params: &Params, levels: &[f64], budget_s: f64) {
        if budget_s <= 0.0 {
            return;
        }
        let until = crate::time::instant_after(std::time::Instant::now(), budget_s);
        for &level in levels {
            let t = c.form.utilisation_limit(params.eps, level);
            if c.pattern_failed.is_some_and(|failed| t >= failed) {
                continue;
            }
            let started = std::time::Instant::now();
            let proved = super::pattern::proves_above(&c.form, t, Some(until));
            tracing::debug!(
                "milp: partition {:?}×{}: pattern bound at U = {t:.6}: {} in {:.2} s",
                c.form.shapes[0],
                c.form.shapes.len(),
                if proved { "proved" } else { "not proved" },
                started.elapsed().as_secs_f64()
            );
            if proved {
                c.bound = c.bound.max(level);
                c.outcome = "pruned by its pattern bound";
                return;
            }
            c.pattern_failed = Some(c.pattern_failed.map_or(t, |f| f.min(t)));
        }
    }

    /// True when objective `a` is strictly better than `b`.
    fn better(objective: Objective, a: f64, b: f64) -> bool {
        match objective {
            Objective::Utilisation => a < b,
            Objective::Goodput { .. } => a > b,
        }
    }

    /// `(a − b) / |a|`, the relative gap between a value and a bound (0 when they meet).
    fn relative_gap(value: f64, bound: f64) -> f64 {
        if value == bound {
            0.0
        } else {
            (value - bound).abs() / value.abs().max(1e-12)
        }
    }

    /// The honest status of the whole search: the best objective over every partition, the
    /// weakest bound any partition was left with, and whether the gap between them is closed
    /// (`Optimal`), within `gap` (`GapLimit`), or not (`TimeLimit`).
    fn search_status(
        cands: &[Candidate],
        objective: Objective,
        gap: f64,
    ) -> (SolveStatus, Option<f64>, f64) {
        let util = matches!(objective, Objective::Utilisation);
        let best =
            cands
                .iter()
                .filter_map(|c| c.value(objective))
                .fold(None, |acc: Option<f64>, v| match acc {
                    Some(a) if !better(objective, v, a) => Some(a),
                    _ => Some(v),
                });
        let proved = cands.iter().map(|c| c.bound).fold(
            if util {
                f64::INFINITY
            } else {
                f64::NEG_INFINITY
            },
            |a, b| if util { a.min(b) } else { a.max(b) },
        );
        let Some(value) = best else {
            return (SolveStatus::TimeLimit, None, proved);
        };
        // Beyond the bound (by rounding): the gap is closed.
        let closed = if util {
            proved >= value
        } else {
            proved <= value
        };
        let g = if closed {
            0.0
        } else {
            relative_gap(value, proved)
        };
        let status = if g <= 1e-6 {
            SolveStatus::Optimal
        } else if g <= gap + 1e-9 {
            SolveStatus::GapLimit
        } else {
            SolveStatus::TimeLimit
        };
        (status, best, proved)
    }

    pub fn place(
        inst: &Instance,
        trace: &Trace,
        opts: &PlaceOptions,
        obs: &dyn Observer,
    ) -> Result<(Solved, SearchReport)> {
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
                "cuts",
                "symmetry",
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
            .map_or("balanced", String::as_str)
            .to_string();
        if !["balanced", "greedy", "lpt", "none"].contains(&warm_kind.as_str()) {
            return Err(SolverError::Option(format!(
                "option warm: expected balanced, greedy, lpt or none, found \"{warm_kind}\""
            )));
        }
        let fill = !opts.params.contains_key("fill") || opts.flag("fill")?;
        let rounds = opts.number("rounds", 0.0)?.max(0.0) as usize;
        let mixes = opts.number("mixes", DEFAULT_MIXES)?.max(0.0) as usize;
        let cuts = !opts.params.contains_key("cuts") || opts.flag("cuts")?;
        let symmetry = !opts.params.contains_key("symmetry") || opts.flag("symmetry")?;

        // Every phase (simulator set-up, warm starts, MILPs, the fill) runs on this one clock,
        // so the whole run ends within the limit plus one simulation step.
        let clock = Deadline::new(Some(limit));
        let timed = PlaceOptions {
            time_limit_s: Some(limit),
            ..opts.clone()
        };
        let mut s = search(inst, trace, &timed)?;
        restart(&mut s, &clock, limit);
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
                cutoff: None,
            },
            cuts,
            symmetry,
        };
        let mix_count = mixes * mixes.saturating_sub(1) / 2;
        let planned = shapes.len() + mix_count;
        let forms: Vec<Formulation> = shapes
            .iter()
            .map(|sh| Formulation::new(inst, &rates, sh))
            .collect();
        restart(&mut s, &clock, GREEDY_SHARE * limit);
        let greedy = greedy_starts(&s, &forms, warm_kind == "greedy");
        let mut cut_short = s.timed_out.load(Ordering::Relaxed);
        let search_until =
            crate::time::instant_after(std::time::Instant::now(), LOCAL_SHARE * limit);
        let mut cands: Vec<Candidate> = forms
            .into_par_iter()
            .zip(greedy)
            .map(|(form, greedy)| Candidate::new(form, greedy, &params, &warm_kind, search_until))
            .collect();
        restart(&mut s, &clock, limit);
        // The fill needs at least a few simulations of the whole trace: time one (the best warm
        // start) and keep that much, or the fill share, whichever is more, for the fill.
        let sim_s = {
            let started = std::time::Instant::now();
            let probe = cands
                .iter()
                .filter_map(|c| c.warm.as_ref().map(|w| (c, w)))
                .min_by(|a, b| a.1 .1.total_cmp(&b.1 .1));
            if let Some((c, (chosen, _))) = probe {
                let p = c.form.placement_of(chosen);
                s.evaluate(&p, &mut Scratch::default());
            }
            started.elapsed().as_secs_f64()
        };
        let reserve = (FILL_SHARE * limit)
            .max(2.5 * sim_s)
            .min(FILL_SHARE_MAX * limit);
        let milp_end = limit - reserve;
        tracing::debug!(
            "milp: {} uniform partitions prepared in {:.2} s; one simulation {:.3} s, MILPs until {:.2} s",
            cands.len(),
            clock.elapsed_s(),
            sim_s,
            milp_end
        );
        let mut done = 0usize;
        let uniform: Vec<usize> = (0..cands.len()).collect();
        solve_all(
            &mut cands, uniform, &params, gap, milp_end, &clock, &mut done, planned, mix_count,
            false, obs,
        );

        // Half/half mixes of the best uniform shapes (by the best objective known on each).
        let mut ranked: Vec<usize> = (0..cands.len())
            .filter(|&i| cands[i].value(objective).is_some())
            .collect();
        ranked.sort_by(|&a, &b| {
            let (oa, ob) = (
                cands[a].value(objective).unwrap_or(0.0),
                cands[b].value(objective).unwrap_or(0.0),
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
        restart(
            &mut s,
            &clock,
            milp_end.min(clock.elapsed_s() + 0.5 * GREEDY_SHARE * limit),
        );
        let mix_greedy = greedy_starts(&s, &mix_forms, warm_kind == "greedy");
        cut_short |= s.timed_out.load(Ordering::Relaxed);
        restart(&mut s, &clock, limit);
        let first_mix = cands.len();
        let mix_cands: Vec<Candidate> = mix_forms
            .into_par_iter()
            .zip(mix_greedy)
            .map(|(form, greedy)| Candidate::new(form, greedy, &params, &warm_kind, search_until))
            .collect();
        cands.extend(mix_cands);
        let mixes_at: Vec<usize> = (first_mix..cands.len()).collect();
        solve_all(
            &mut cands, mixes_at, &params, gap, milp_end, &clock, &mut done, planned, 0, false, obs,
        );
        // Time the first passes left over goes to the partitions still open (bound below the
        // cutoff, not solved to the gap), again most promising first, with the better cutoff.
        for _ in 0..REVISITS {
            if !matches!(objective, Objective::Utilisation) || !cuts {
                break;
            }
            let (_, best_value, _) = search_status(&cands, objective, gap);
            let Some(v) = best_value else { break };
            let cut = v - gap * v.abs();
            let open: Vec<usize> = (0..cands.len())
                .filter(|&i| {
                    cands[i].bound < cut
                        && !matches!(cands[i].outcome, "optimal" | "gap limit" | "HiGHS failed")
                })
                .collect();
            if open.is_empty() || milp_end - clock.elapsed_s() < 0.5 {
                break;
            }
            let total = done + open.len();
            solve_all(
                &mut cands, open, &params, gap, milp_end, &clock, &mut done, total, 0, true, obs,
            );
        }
        let (search, best_value, proved) = search_status(&cands, objective, gap);
        tracing::info!(
            "milp: {:?} after {:.2} s: best objective {:?}, proved bound {:.6}, gap {:.4}",
            search,
            clock.elapsed_s(),
            best_value,
            proved,
            best_value.map_or(f64::INFINITY, |b| relative_gap(b, proved))
        );
        for c in &cands {
            tracing::debug!(
                "milp:   {:?}×{}: {} (value {:?}, bound {:.6})",
                c.form.shapes[0],
                c.form.shapes.len(),
                c.outcome,
                c.value(objective),
                c.bound
            );
        }

        // Simulator refinement: every candidate's plan (the MILP's, or its warm start when the
        // MILP gave nothing) is filled by the fast greedy, which starts by scoring the plan
        // itself and returns the best placement on the way, so the fill never loses score.
        let plans: Vec<(usize, Placement, Option<f64>)> = cands
            .iter()
            .enumerate()
            .filter_map(|(i, c)| match (&c.solution, &c.warm, &c.greedy) {
                (Some(sol), warm, _)
                    if warm
                        .as_ref()
                        .is_none_or(|w| !better(objective, w.1, sol.objective)) =>
                {
                    Some((i, sol.placement.clone(), Some(sol.objective)))
                }
                // The warm start's replica set: a feasible MILP solution with a known value.
                (_, Some((chosen, value)), _) => {
                    Some((i, c.form.placement_of(chosen), Some(*value)))
                }
                (_, None, Some(g)) => Some((i, g.clone(), None)),
                (_, None, None) => None,
            })
            .collect();
        if plans.is_empty() {
            return Err(SolverError::Infeasible(format!(
                "no group partition of {n} devices admits a plan that serves every model within memory and SLO"
            )));
        }
        // Every plan, best MILP objective first: the first always, the others only while a
        // simulation of the whole trace still fits in the time left; each is filled until the
        // limit at most.
        let mut ranked_plans: Vec<usize> = (0..plans.len()).collect();
        ranked_plans.sort_by(|&a, &b| match (plans[a].2, plans[b].2) {
            (Some(x), Some(y)) if better(objective, x, y) => std::cmp::Ordering::Less,
            (Some(x), Some(y)) if better(objective, y, x) => std::cmp::Ordering::Greater,
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            _ => a.cmp(&b),
        });
        let refined: Vec<Option<(Placement, Score)>> = ranked_plans
            .par_iter()
            .enumerate()
            .map_init(Scratch::default, |scratch, (rank, &k)| {
                if rank > 0 && limit - clock.elapsed_s() < sim_s {
                    return None;
                }
                let mut p = plans[k].1.clone();
                for g in &mut p.groups {
                    g.models.sort_unstable();
                }
                p.normalize();
                Some(if fill {
                    s.fast_greedy(p, None, scratch)
                } else {
                    let score = s.evaluate(&p, scratch);
                    (p, score)
                })
            })
            .collect();
        let mut best: Option<usize> = None;
        for (i, r) in refined.iter().enumerate() {
            if let Some(r) = r {
                if best.is_none_or(|b| refined[b].as_ref().is_none_or(|rb| r.1.beats(&rb.1))) {
                    best = Some(i);
                }
            }
        }
        let best = best.expect("the first plan is always refined");
        let (mut p, mut score) = refined[best].clone().expect("refined");
        let best = ranked_plans[best];
        if rounds > 0 {
            (p, score) = local_search(&s, p, rounds);
        }
        if let Err(e) = p.validate(inst) {
            // The MILP's rows are the validity rules; reaching this is a bug, reported as such.
            return Err(SolverError::Infeasible(format!(
                "milp: the plan failed validation ({e}); please report this instance"
            )));
        }
        cut_short |= s.timed_out.load(Ordering::Relaxed);
        cut_short |= cands.iter().any(|c| {
            matches!(
                c.outcome,
                "time limit" | "time limit, no incumbent" | "skipped (no time left)"
            )
        });
        let mut out = solved(&s, Schedule::fixed(p), score);
        // Status, bound and gap are what the search proved about its best objective; the
        // plan's own objective can be larger when the simulator preferred another plan.
        out.status = search;
        out.objective = plans[best].2;
        out.bound = proved.is_finite().then_some(proved);
        out.gap = best_value
            .map(|b| relative_gap(b, proved))
            .filter(|g| g.is_finite());
        out.time_limited = Some(cut_short);
        out.time_s = clock.elapsed_s();
        let report = SearchReport {
            status: search,
            best: best_value,
            bound: proved,
            gap: best_value.map_or(f64::INFINITY, |b| relative_gap(b, proved)),
            time_limited: cut_short,
            partitions: cands
                .iter()
                .map(|c| PartitionReport {
                    shapes: c.form.shapes.clone(),
                    outcome: c.outcome,
                    value: c.value(objective),
                    bound: c.bound,
                })
                .collect(),
        };
        Ok((out, report))
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
            cutoff: None,
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
        out.time_limited = Some(plan.status == SolveStatus::TimeLimit);
        Ok(out)
    }
}
