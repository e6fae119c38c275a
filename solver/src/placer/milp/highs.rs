//! The one place that talks to HiGHS (through good_lp): reproducible settings, status mapping.
//!
//! good_lp builds the model; we then drive the HiGHS model ourselves (`into_inner`) because
//! good_lp's own `solve` hides the final MIP gap, and "optimal" must mean the gap was closed, not
//! merely that HiGHS stopped inside `mip_rel_gap`. The `highs` crate is not a direct dependency,
//! so its status enums are read through their `Debug` names (stable variant names of highs 2.x).

use good_lp::solvers::highs::HighsProblem;

use crate::plan::SolveStatus;

/// A final relative gap at or below this counts as closed (HiGHS' tolerances are of this order).
const CLOSED_GAP: f64 = 1e-6;

/// Solver settings shared by every MILP of this module.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// HiGHS `mip_rel_gap`.
    pub gap: f64,
    /// HiGHS `time_limit` in seconds; `None` runs to the gap.
    pub time_limit_s: Option<f64>,
    /// HiGHS `objective_bound` (minimisation only): only solutions strictly better than this are
    /// wanted, so HiGHS prunes every node that cannot beat it, and a MILP with no such solution
    /// ends `Infeasible` (read: "nothing better than the cutoff").
    pub cutoff: Option<f64>,
}

/// A MILP that ended with an incumbent.
#[derive(Debug, Clone)]
pub struct Incumbent {
    /// `Optimal` only when the final gap is closed; `GapLimit` when HiGHS stopped inside
    /// `mip_rel_gap`; `TimeLimit` when it ran out of time (or hit another work limit).
    pub status: SolveStatus,
    /// HiGHS' final relative MIP gap.
    pub gap: f64,
    /// HiGHS' proved bound on the objective (the incumbent's value when optimal).
    pub bound: f64,
    /// Value of every column, in variable creation order (good_lp adds columns in that order).
    pub values: Vec<f64>,
}

/// Why a MILP gave no incumbent.
#[derive(Debug, Clone, PartialEq)]
pub enum NoIncumbent {
    /// HiGHS proved that no solution exists.
    Infeasible,
    /// HiGHS stopped on a limit before finding any solution; `bound` is what it had proved
    /// about the objective by then (±∞ when nothing).
    Stopped { bound: f64 },
    /// Anything else HiGHS reported (a bug or numerical trouble), as text.
    Failed(String),
}

/// Solves `problem` with one thread and a fixed seed, so that a run that stops on the gap (not
/// on the clock) is reproducible bit for bit. `warm` is a complete start point (one value per
/// column, in creation order); HiGHS ignores an infeasible start, so a bad start costs time,
/// never correctness.
pub fn solve(
    problem: HighsProblem,
    settings: Settings,
    warm: Option<Vec<f64>>,
) -> Result<Incumbent, NoIncumbent> {
    let failed = |what: &str| NoIncumbent::Failed(format!("HiGHS: {what}"));
    let mut model = problem
        .try_into_inner()
        .map_err(|e| NoIncumbent::Failed(e.to_string()))?;
    model.make_quiet();
    let set = |ok: bool, name: &str| {
        if ok {
            Ok(())
        } else {
            Err(failed(&format!("cannot set {name}")))
        }
    };
    set(model.try_set_option("threads", 1).is_ok(), "threads")?;
    set(
        model.try_set_option("random_seed", 0).is_ok(),
        "random_seed",
    )?;
    set(
        model
            .try_set_option("mip_rel_gap", settings.gap.max(0.0))
            .is_ok(),
        "mip_rel_gap",
    )?;
    // The absolute gap would otherwise stop small objectives early (default 1e-6).
    set(
        model.try_set_option("mip_abs_gap", 1e-9).is_ok(),
        "mip_abs_gap",
    )?;
    if let Some(t) = settings.time_limit_s {
        set(
            model.try_set_option("time_limit", t.max(0.0)).is_ok(),
            "time_limit",
        )?;
    }
    if let Some(c) = settings.cutoff {
        set(
            model.try_set_option("objective_bound", c).is_ok(),
            "objective_bound",
        )?;
    }
    if let Some(w) = warm {
        model
            .try_set_solution(Some(&w), None, None, None)
            .map_err(|e| failed(&format!("start point rejected: {e:?}")))?;
    }
    let solved = model
        .try_solve()
        .map_err(|e| failed(&format!("solve failed: {e:?}")))?;
    let status = format!("{:?}", solved.status());
    let has_solution = format!("{:?}", solved.primal_solution_status()) == "Feasible";
    let gap = solved.mip_gap();
    let bound = solved
        .double_info_value(c"mip_dual_bound")
        .unwrap_or(f64::NEG_INFINITY);
    let status = match status.as_str() {
        // An infinite gap with an optimal status means no integer column was left: a plain LP.
        "Optimal" if !gap.is_finite() || gap <= CLOSED_GAP => SolveStatus::Optimal,
        "Optimal" => SolveStatus::GapLimit,
        "ReachedTimeLimit"
        | "ReachedIterationLimit"
        | "ReachedSolutionLimit"
        | "ReachedInterrupt"
        | "ReachedMemoryLimit" => SolveStatus::TimeLimit,
        "Infeasible" | "UnboundedOrInfeasible" => return Err(NoIncumbent::Infeasible),
        other => return Err(failed(&format!("model status {other}"))),
    };
    if !has_solution {
        return Err(NoIncumbent::Stopped { bound });
    }
    Ok(Incumbent {
        status,
        gap,
        bound,
        values: solved.get_solution().columns().to_vec(),
    })
}

/// A binary variable's value read with HiGHS' integrality tolerance in mind.
pub fn is_set(v: f64) -> bool {
    v > 0.5
}
