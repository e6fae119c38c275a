//! The pattern bound: a proof that no solution of an inner MILP ([`Formulation`]) keeps every
//! stage load at or below a threshold `T`, from the configuration LP of the partition.
//!
//! The MILP's LP relaxation is weak where memory and load are coupled: a group full of one large
//! model can carry only that model's traffic, so its spare load capacity is useless to the rest,
//! yet the relaxation lets every group lend load capacity to every model. The configuration LP
//! sees each group as a whole. A *pattern* of a group is a set `S` of models that fits its memory
//! with shares `a_i ∈ [0, cap_i]` whose stage loads stay within `T` (`cap_i = min(1, T/peak_i)`:
//! a replica alone loads its busiest stage with `peak_i · a_i`). A solution with `U ≤ T` picks one
//! pattern per group, and together they route every model's traffic (`Σ a_i ≥ 1`) with at least
//! `k_i = ⌈1 / max cap_i⌉` replicas of each model. For any multipliers `π, ρ ≥ 0` that gives
//!
//! ```text
//! Σ_i π_i + Σ_i k_i ρ_i  ≤  Σ_groups max_pattern Σ_{i∈S} (π_i a_i + ρ_i)  =  Σ_c G_c V_c(π, ρ)
//! ```
//!
//! (`G_c` groups of shape class `c`), so multipliers with a left side above the right side prove
//! that `U > T` for every solution. Column generation on the configuration LP finds good
//! multipliers; the proof itself only needs `V_c` from above, which the pricing gives:
//!
//! - per-stage loads are relaxed to their mean (`Σ a_i ℓ̄_i ≤ T`), and that constraint is
//!   dualised with a multiplier `θ` (`V_c ≤ θ T + max_S Σ_{i∈S} ρ_i + cap_i (π_i − θ ℓ̄_i)⁺` for
//!   every `θ ≥ 0`; the right side is convex in `θ`, minimised by golden-section search);
//! - the remaining 0/1 knapsack over memory is solved exactly by dynamic programming on weights
//!   rounded down to a grid, which only admits more sets.
//!
//! Every step relaxes, so a proof is valid for the formulation; how tight it is depends on how
//! far the multipliers got within the time given.

use std::time::Instant;

use good_lp::{variable, Expression, ProblemVariables, SolverModel, Variable};

use super::highs::{self, Settings};
use super::inner::Formulation;

/// Memory grid of the pricing: a group's budget is this many units.
const MEM_GRID: usize = 400;
/// Load grid of the pricing: the threshold is this many units.
const LOAD_GRID: usize = 120;
/// Most column-generation rounds per proof.
const ROUNDS: usize = 400;
/// Relative margin by which a proof's left side must exceed its right side (rounding).
const MARGIN: f64 = 1e-7;

/// One model as the pricing of a shape class sees it.
#[derive(Debug, Clone)]
struct Item {
    model: usize,
    /// Weight in grid units, rounded down.
    units: usize,
    /// Largest share one replica can carry at the threshold.
    cap: f64,
    /// Mean stage load at share 1.
    mean_load: f64,
}

/// A shape class: its group count and the models it can hold.
struct Class {
    groups: f64,
    items: Vec<Item>,
}

/// A pattern found so far: its class and `(model, share)` per member.
struct Column {
    class: usize,
    members: Vec<(usize, f64)>,
}

/// True when no solution of `f` has every stage load at or below `t` (utilisation objective),
/// proved by the configuration-LP argument of this module; false when the proof fails, runs
/// out of rounds, or `until` passes.
pub fn proves_above(f: &Formulation, t: f64, until: Option<Instant>) -> bool {
    if !(t.is_finite() && t > 0.0) {
        return false;
    }
    if !f.uncovered().is_empty() {
        // Some model has no feasible pair: no solution at all.
        return true;
    }
    let classes = classes(f, t);
    let n = f.n_models;
    // Fewest replicas of each model with U ≤ t (one for a model without traffic).
    let mut widest = vec![0.0f64; n];
    for c in &classes {
        for it in &c.items {
            widest[it.model] = widest[it.model].max(it.cap);
        }
    }
    let routed: Vec<bool> = (0..n).map(|m| f.rates[m] > 0.0).collect();
    let least: Vec<f64> = (0..n)
        .map(|m| {
            if routed[m] {
                (1.0 / widest[m] - 1e-9).ceil().max(1.0)
            } else {
                1.0
            }
        })
        .collect();
    // Start with every single-model pattern at its full share.
    let mut columns: Vec<Column> = Vec::new();
    for (ci, c) in classes.iter().enumerate() {
        for it in &c.items {
            columns.push(Column {
                class: ci,
                members: vec![(it.model, it.cap)],
            });
        }
    }
    let mut pricing = Pricing::default();
    for _ in 0..ROUNDS {
        if until.is_some_and(|u| Instant::now() >= u) {
            return false;
        }
        let Some((pi, rho, mu, value)) = restricted_dual(&classes, &columns, &routed, &least)
        else {
            return false;
        };
        // The restricted dual only overestimates the full one: at or below 1 nothing can be
        // proved at this threshold.
        if value <= 1.0 + MARGIN {
            return false;
        }
        let mut right = 0.0;
        let mut added = false;
        for (ci, c) in classes.iter().enumerate() {
            let (bound, members) = price(c, t, &pi, &rho, &mut pricing);
            right += c.groups * bound;
            let worth: f64 = members.iter().map(|&(m, a)| pi[m] * a + rho[m]).sum();
            if worth > mu[ci] * (1.0 + 1e-9) + 1e-12 {
                columns.push(Column { class: ci, members });
                added = true;
            }
        }
        let left: f64 = (0..n).map(|m| pi[m] + least[m] * rho[m]).sum();
        if left > right * (1.0 + MARGIN) + 1e-12 {
            return true;
        }
        if !added {
            return false;
        }
    }
    false
}

/// The shape classes of `f` at threshold `t`: every distinct shape once, with its pairs.
fn classes(f: &Formulation, t: f64) -> Vec<Class> {
    let mut shapes: Vec<(u32, u32)> = f.shapes.clone();
    shapes.sort_unstable();
    shapes.dedup();
    shapes
        .iter()
        .map(|&shape| {
            let first = f.shapes.iter().position(|&s| s == shape).unwrap_or(0);
            let groups = f.shapes.iter().filter(|&&s| s == shape).count() as f64;
            let items = f
                .pairs
                .iter()
                .filter(|p| p.group == first)
                .map(|p| Item {
                    model: p.model,
                    // Rounded down (and nudged below any product that lands on a grid point
                    // by rounding), so every set within the budget stays within the grid.
                    units: (p.weight * MEM_GRID as f64 * (1.0 - 1e-9)).floor().max(0.0) as usize,
                    cap: if p.peak > t { t / p.peak } else { 1.0 },
                    mean_load: p.stage_load.iter().sum::<f64>() / p.stage_load.len().max(1) as f64,
                })
                .collect();
            Class { groups, items }
        })
        .collect()
}

/// Solves the dual of the restricted configuration LP (maximise `Σ π + Σ k ρ` with
/// `Σ G_c μ_c ≤ 1` and every column's value at most its class's `μ`). Returns `π`, `ρ`, `μ`
/// and the optimum.
#[allow(clippy::type_complexity)]
fn restricted_dual(
    classes: &[Class],
    columns: &[Column],
    routed: &[bool],
    least: &[f64],
) -> Option<(Vec<f64>, Vec<f64>, Vec<f64>, f64)> {
    let n = routed.len();
    let mut vars = ProblemVariables::new();
    let pi: Vec<Option<Variable>> = routed
        .iter()
        .map(|&r| r.then(|| vars.add(variable().min(0.0))))
        .collect();
    let rho: Vec<Variable> = (0..n).map(|_| vars.add(variable().min(0.0))).collect();
    let mu: Vec<Variable> = classes
        .iter()
        .map(|_| vars.add(variable().min(0.0)))
        .collect();
    let mut objective = Expression::with_capacity(2 * n);
    for m in 0..n {
        if let Some(p) = pi[m] {
            objective.add_mul(1.0, p);
        }
        objective.add_mul(least[m], rho[m]);
    }
    let mut problem = vars.maximise(objective).using(good_lp::highs);
    let mut budget = Expression::with_capacity(classes.len());
    for (c, &v) in classes.iter().zip(&mu) {
        budget.add_mul(c.groups, v);
    }
    problem.add_constraint(budget.leq(1.0));
    for col in columns {
        let mut row = Expression::with_capacity(2 * col.members.len() + 1);
        for &(m, a) in &col.members {
            if let Some(p) = pi[m] {
                if a > 0.0 {
                    row.add_mul(a, p);
                }
            }
            row.add_mul(1.0, rho[m]);
        }
        row.add_mul(-1.0, mu[col.class]);
        problem.add_constraint(row.leq(0.0));
    }
    let settings = Settings {
        gap: 0.0,
        time_limit_s: None,
        cutoff: None,
    };
    let inc = highs::solve(problem, settings, None).ok()?;
    // Columns in creation order: π of routed models, ρ, μ.
    let mut values = inc.values.iter().map(|v| v.max(0.0));
    let pi_v: Vec<f64> = routed
        .iter()
        .map(|&r| if r { values.next().unwrap_or(0.0) } else { 0.0 })
        .collect();
    let rho_v: Vec<f64> = (0..n).map(|_| values.next().unwrap_or(0.0)).collect();
    let mu_v: Vec<f64> = (0..classes.len())
        .map(|_| values.next().unwrap_or(0.0))
        .collect();
    let value = (0..n).map(|m| pi_v[m] + least[m] * rho_v[m]).sum();
    Some((pi_v, rho_v, mu_v, value))
}

/// The best pattern value of class `c` under multipliers `pi`, `rho`, from above, and a pattern
/// that reaches it up to rounding. With a set fixed, the best shares are a fractional knapsack
/// on the mean loads: in order of `π/ℓ̄`, members take their full share until the load runs
/// out, one takes what is left and the rest none. A dynamic program over memory and load units
/// walks the models in that order, in phase 0 (load left: a member takes its full share or
/// none) and phase 1 (after the one partial share: members take none). Weights and full-share
/// loads round down to the grids, so every real pattern is within reach and the value only
/// errs upwards.
fn price(c: &Class, t: f64, pi: &[f64], rho: &[f64], dp: &mut Pricing) -> (f64, Vec<(usize, f64)>) {
    let ratio = |it: &Item| {
        if it.mean_load > 0.0 {
            pi[it.model] / it.mean_load
        } else {
            f64::INFINITY
        }
    };
    let mut order: Vec<usize> = (0..c.items.len()).collect();
    order.sort_by(|&x, &y| {
        ratio(&c.items[y])
            .total_cmp(&ratio(&c.items[x]))
            .then(x.cmp(&y))
    });
    let (mw, lw) = (MEM_GRID + 1, LOAD_GRID + 1);
    let step = t / LOAD_GRID as f64;
    let n = order.len();
    dp.a.clear();
    dp.a.resize(mw * lw, f64::NEG_INFINITY);
    dp.a[0] = 0.0;
    dp.b.clear();
    dp.b.resize(mw, f64::NEG_INFINITY);
    dp.how_a.clear();
    dp.how_a.resize(n * mw * lw, 0);
    dp.how_b.clear();
    dp.how_b.resize(n * mw, 0);
    for (pos, &k) in order.iter().enumerate() {
        let it = &c.items[k];
        let (u, m_pi, m_rho) = (it.units, pi[it.model], rho[it.model]);
        if u > MEM_GRID {
            continue;
        }
        let full_load = it.cap * it.mean_load;
        let q = (full_load / step * (1.0 - 1e-9)).floor().max(0.0) as usize;
        let full = m_rho + m_pi * it.cap;
        // A weightless model would read states this model already wrote: read a copy.
        let (old_a, old_b) = if u == 0 {
            (Some(dp.a.clone()), Some(dp.b.clone()))
        } else {
            (None, None)
        };
        for m in (0..=MEM_GRID - u).rev() {
            let to = m + u;
            // Phase 1: a member without share, after the partial one.
            let from_b = old_b.as_ref().map_or(dp.b[m], |b| b[m]);
            let mut best_b = (from_b + m_rho, 1u16);
            for l in 0..lw {
                let from = old_a.as_ref().map_or(dp.a[m * lw + l], |a| a[m * lw + l]);
                if from == f64::NEG_INFINITY {
                    continue;
                }
                // The partial share: what load is left (from below, so from above in value).
                let share = if it.mean_load > 0.0 {
                    it.cap.min((t - l as f64 * step) / it.mean_load).max(0.0)
                } else {
                    it.cap
                };
                let v = from + m_rho + m_pi * share;
                if v > best_b.0 {
                    best_b = (v, 2 + l as u16);
                }
                if l + q < lw {
                    let cell = to * lw + l + q;
                    if from + full > dp.a[cell] {
                        dp.a[cell] = from + full;
                        dp.how_a[(pos * mw + to) * lw + l + q] = 1;
                    }
                }
                let cell = to * lw + l;
                if from + m_rho > dp.a[cell] {
                    dp.a[cell] = from + m_rho;
                    dp.how_a[(pos * mw + to) * lw + l] = 2;
                }
            }
            if best_b.0 > dp.b[to] {
                dp.b[to] = best_b.0;
                dp.how_b[pos * mw + to] = best_b.1;
            }
        }
    }
    // The best end state, then the members back from it.
    let mut best = (0.0f64, false, 0usize, 0usize);
    for m in 0..mw {
        for l in 0..lw {
            if dp.a[m * lw + l] > best.0 {
                best = (dp.a[m * lw + l], false, m, l);
            }
        }
        if dp.b[m] > best.0 {
            best = (dp.b[m], true, m, 0);
        }
    }
    let (value, mut in_b, mut m, mut l) = best;
    let mut members: Vec<(usize, f64, u8)> = Vec::new();
    for pos in (0..n).rev() {
        let it = &c.items[order[pos]];
        if in_b {
            match dp.how_b[pos * mw + m] {
                0 => {}
                1 => {
                    members.push((it.model, 0.0, 0));
                    m -= it.units;
                }
                code => {
                    members.push((it.model, 0.0, 1));
                    m -= it.units;
                    l = (code - 2) as usize;
                    in_b = false;
                }
            }
        } else {
            let full_load = it.cap * it.mean_load;
            let q = (full_load / step * (1.0 - 1e-9)).floor().max(0.0) as usize;
            match dp.how_a[(pos * mw + m) * lw + l] {
                1 => {
                    members.push((it.model, it.cap, 2));
                    m -= it.units;
                    l -= q;
                }
                2 => {
                    members.push((it.model, 0.0, 0));
                    m -= it.units;
                }
                _ => {}
            }
        }
    }
    // The partial member takes the load the full ones really leave.
    let used: f64 = members
        .iter()
        .filter(|x| x.2 == 2)
        .map(|x| {
            x.1 * c
                .items
                .iter()
                .find(|it| it.model == x.0)
                .map_or(0.0, |it| it.mean_load)
        })
        .sum();
    let pattern = members
        .into_iter()
        .map(|(model, a, kind)| {
            if kind == 1 {
                let it = c.items.iter().find(|it| it.model == model);
                let share = it.map_or(0.0, |it| {
                    if it.mean_load > 0.0 {
                        it.cap.min((t - used) / it.mean_load).max(0.0)
                    } else {
                        it.cap
                    }
                });
                (model, share)
            } else {
                (model, a)
            }
        })
        .collect();
    (value, pattern)
}

/// Buffers of [`price`], reused across rounds: phase-0 values over (memory, load) units,
/// phase-1 values over memory units, and how each state was last improved per model.
#[derive(Default)]
struct Pricing {
    a: Vec<f64>,
    b: Vec<f64>,
    how_a: Vec<u8>,
    how_b: Vec<u16>,
}

/// The largest threshold in `[lo, hi]` that [`proves_above`] proves, by bisection to a relative
/// width of `tol` (`lo` itself when nothing in the range is proved; `lo` is trusted as given).
/// Every solution of `f` has `U` above the result.
pub fn bisect(f: &Formulation, lo: f64, hi: f64, tol: f64, until: Option<Instant>) -> f64 {
    let (mut lo, mut hi) = (lo, hi);
    if proves_above(f, hi, until) {
        return hi;
    }
    while hi - lo > tol * hi.abs() {
        if until.is_some_and(|u| Instant::now() >= u) {
            break;
        }
        let mid = 0.5 * (lo + hi);
        if proves_above(f, mid, until) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    lo
}
