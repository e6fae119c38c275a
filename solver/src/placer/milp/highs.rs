//! The one place that talks to HiGHS (through good_lp): reproducible settings, status mapping.

use good_lp::solvers::highs::HighsProblem;
use good_lp::solvers::{ResolutionError, Solution, SolutionStatus};
use good_lp::{SolverModel, Variable, WithInitialSolution};

use crate::plan::SolveStatus;

/// Solver settings shared by every MILP of this module.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// HiGHS `mip_rel_gap`.
    pub gap: f64,
    /// HiGHS `time_limit` in seconds; `None` runs to the gap.
    pub time_limit_s: Option<f64>,
}

/// A MILP that ended with an incumbent.
#[derive(Debug, Clone)]
pub struct Incumbent {
    /// `Optimal` only when HiGHS closed the gap; `GapLimit` when it stopped inside `mip_rel_gap`;
    /// `TimeLimit` when it ran out of time (or hit another work limit).
    pub status: SolveStatus,
    /// Value of every variable asked for, in the order asked.
    pub values: Vec<f64>,
}

/// Why a MILP gave no incumbent.
#[derive(Debug, Clone, PartialEq)]
pub enum NoIncumbent {
    /// HiGHS proved that no solution exists.
    Infeasible,
    /// HiGHS stopped on a limit before finding any solution.
    Stopped,
    /// Anything else HiGHS reported (a bug or numerical trouble), as text.
    Failed(String),
}

/// Solves `problem` with one thread and a fixed seed, so that a run that stops on the gap (not
/// on the clock) is reproducible bit for bit. `warm` is a complete start point; HiGHS ignores it
/// when it is infeasible, so a bad start costs time, never correctness.
pub fn solve(
    problem: HighsProblem,
    settings: Settings,
    warm: Option<Vec<(Variable, f64)>>,
    read: &[Variable],
) -> Result<Incumbent, NoIncumbent> {
    let mut problem = problem
        .set_option("threads", 1)
        .set_option("random_seed", 0)
        .set_option("mip_rel_gap", settings.gap.max(0.0))
        .set_option("output_flag", false)
        .set_option("log_to_console", false);
    if let Some(t) = settings.time_limit_s {
        problem = problem.set_time_limit(t.max(0.0));
    }
    if let Some(w) = warm {
        problem = problem.with_initial_solution(w);
    }
    match problem.solve() {
        Ok(sol) => {
            let status = match sol.status() {
                SolutionStatus::Optimal => SolveStatus::Optimal,
                SolutionStatus::GapLimit => SolveStatus::GapLimit,
                SolutionStatus::TimeLimit => SolveStatus::TimeLimit,
            };
            Ok(Incumbent {
                status,
                values: read.iter().map(|&v| sol.value(v)).collect(),
            })
        }
        Err(ResolutionError::Infeasible) => Err(NoIncumbent::Infeasible),
        Err(ResolutionError::Other("NoSolutionFound")) => Err(NoIncumbent::Stopped),
        Err(e) => Err(NoIncumbent::Failed(e.to_string())),
    }
}

/// A binary variable's value read with HiGHS' integrality tolerance in mind.
pub fn is_set(v: f64) -> bool {
    v > 0.5
}
