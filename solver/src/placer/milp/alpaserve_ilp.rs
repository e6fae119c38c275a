//! AlpaServe's two ILP baselines (alpaserve-semantics.md §2.8, stage-dp-and-milp.md §5.1), solved
//! by HiGHS instead of CBC. Both maximise the smallest normalised capacity `t` plus `1e-4 ×` the
//! sum; neither looks at bursts or at per-device memory the way the simulator does, which is the
//! point of comparing them with `milp`.

use good_lp::{variable, Expression, ProblemVariables, SolverModel, Variable};

use crate::error::{Result, SolverError};
use crate::instance::Instance;
use crate::plan::{model_weight_gib, Group, Placement, SolveStatus};

use super::highs::{self, NoIncumbent, Settings};

/// AlpaServe's tie-break weight on the sum of normalised capacities.
const SUM_WEIGHT: f64 = 1e-4;
/// MP-ILP's pipeline degrees (op = 1), as in AlpaServe.
const MP_DEGREES: [u32; 4] = [1, 2, 4, 8];

/// A placement and what the ILP claims about it.
pub struct IlpPlan {
    pub placement: Placement,
    pub objective: f64,
    pub status: SolveStatus,
}

fn no_incumbent(name: &str, e: NoIncumbent) -> SolverError {
    match e {
        NoIncumbent::Infeasible => {
            SolverError::Infeasible(format!("{name}: HiGHS proved the ILP infeasible"))
        }
        NoIncumbent::Stopped { .. } => SolverError::Infeasible(format!(
            "{name}: the time limit ended before HiGHS found any solution; give it more time"
        )),
        NoIncumbent::Failed(msg) => SolverError::Infeasible(format!("{name}: HiGHS failed: {msg}")),
    }
}

/// Single-device batch-1 latency and weight of every model (AlpaServe's `L(i)` and `c_i`);
/// a model that has no (1, 1) profile or does not fit one device makes SR infeasible.
fn single_device(inst: &Instance) -> Result<Vec<(f64, f64)>> {
    (0..inst.models.len())
        .map(|m| {
            let w = model_weight_gib(inst, m, 1, 1);
            let lat = inst
                .profile_of(m)
                .config(1, 1)
                .and_then(|c| c.stage_latency_s.first())
                .map(|row| row.iter().sum::<f64>());
            match lat {
                Some(l) if w <= inst.budget_gib() + 1e-9 && l > 0.0 => Ok((l, w)),
                _ => Err(SolverError::Infeasible(format!(
                    "model {} fits no single device (pp1×tp1) within {} GiB per device",
                    inst.models[m].name,
                    inst.budget_gib()
                ))),
            }
        })
        .collect()
}

/// SR-ILP: `p_ij` puts model `i` on device `j`; per-device memory; maximise
/// `min_i rep_i t_i / a_i + 1e-4 Σ_i rep_i t_i / a_i` with `t_i = 1 / L(i)`. Models without
/// requests take no part in the objective (their `a_i` is 0).
pub fn sr_ilp(inst: &Instance, rates: &[f64], settings: Settings) -> Result<IlpPlan> {
    let single = single_device(inst)?;
    let n_dev = inst.cluster.devices as usize;
    let n_models = inst.models.len();
    let mut vars = ProblemVariables::new();
    let p: Vec<Vec<Variable>> = (0..n_models)
        .map(|_| (0..n_dev).map(|_| vars.add(variable().binary())).collect())
        .collect();
    let t_min = vars.add(variable().min(0.0));
    let coef: Vec<f64> = (0..n_models)
        .map(|m| {
            if rates[m] > 0.0 {
                1.0 / single[m].0 / rates[m]
            } else {
                0.0
            }
        })
        .collect();
    let mut objective = Expression::from(t_min);
    for m in 0..n_models {
        for &v in &p[m] {
            objective.add_mul(SUM_WEIGHT * coef[m], v);
        }
    }
    let mut problem = vars.maximise(objective).using(good_lp::highs);
    for j in 0..n_dev {
        let mut mem = Expression::with_capacity(n_models);
        for m in 0..n_models {
            mem.add_mul(single[m].1 / inst.budget_gib(), p[m][j]);
        }
        problem.add_constraint(mem.leq(1.0 + 1e-9));
        // Devices are interchangeable: order them by replica count (not in AlpaServe; it only
        // removes symmetric copies of each solution).
        if j + 1 < n_dev {
            let mut diff = Expression::with_capacity(2 * n_models);
            for pm in &p {
                diff.add_mul(1.0, pm[j]);
                diff.add_mul(-1.0, pm[j + 1]);
            }
            problem.add_constraint(diff.geq(0.0));
        }
    }
    for m in 0..n_models {
        if coef[m] > 0.0 {
            let mut cap = Expression::with_capacity(n_dev);
            for &v in &p[m] {
                cap.add_mul(coef[m], v);
            }
            problem.add_constraint(cap.geq(t_min));
        }
    }
    // Columns: p in model-major order, then t_min.
    let inc = highs::solve(problem, settings, None).map_err(|e| no_incumbent("sr-ilp", e))?;
    let mut placement = Placement::from_shapes(&vec![(1, 1); n_dev]);
    let mut cap = vec![0.0f64; n_models];
    for m in 0..n_models {
        for j in 0..n_dev {
            if highs::is_set(inc.values[m * n_dev + j]) {
                placement.groups[j].models.push(m as u32);
                cap[m] += coef[m];
            }
        }
    }
    let objective = capacity_objective(&cap, &coef);
    Ok(IlpPlan {
        placement,
        objective,
        status: inc.status,
    })
}

/// `min + 1e-4·sum` over the models that have requests (those with a positive coefficient).
fn capacity_objective(cap: &[f64], coef: &[f64]) -> f64 {
    let active: Vec<f64> = cap
        .iter()
        .zip(coef)
        .filter(|(_, &c)| c > 0.0)
        .map(|(&v, _)| v)
        .collect();
    let min = active.iter().copied().fold(f64::INFINITY, f64::min);
    let min = if min.is_finite() { min } else { 0.0 };
    min + SUM_WEIGHT * active.iter().sum::<f64>()
}

/// MP-ILP's `c_i`: the model's whole weight (its single-device weight; without a (1, 1) profile,
/// the stage weights of its shallowest pipeline summed). A model that fits no pipeline of the
/// ILP's degrees within the per-device budget makes the instance infeasible.
fn total_weights(inst: &Instance, degrees: &[u32]) -> Result<Vec<f64>> {
    (0..inst.models.len())
        .map(|m| {
            let fits = degrees
                .iter()
                .any(|&pp| model_weight_gib(inst, m, pp, 1) <= inst.budget_gib() + 1e-9);
            let whole = degrees
                .iter()
                .find_map(|&pp| inst.profile_of(m).config(pp, 1))
                .map(|c| c.stage_weight_gib.iter().sum::<f64>());
            match whole {
                Some(w) if fits => Ok(w),
                _ => Err(SolverError::Infeasible(format!(
                    "model {} fits no pipeline (pp {}, tp 1) within {} GiB per device",
                    inst.models[m].name,
                    degrees
                        .iter()
                        .map(|d| d.to_string())
                        .collect::<Vec<_>>()
                        .join("/"),
                    inst.budget_gib()
                ))),
            }
        })
        .collect()
}

/// AlpaServe's `compute_capability`: requests a replica can still finish within the SLO when they
/// arrive together, `floor((SLO − Σℓ) / maxℓ) + 1`, at least 0, times `0.99^pp`.
pub fn capability(slo_s: f64, stage_latency_s: &[f64], pp: u32) -> f64 {
    let sum: f64 = stage_latency_s.iter().sum();
    let max = stage_latency_s.iter().copied().fold(0.0, f64::max);
    if max <= 0.0 {
        return 0.0;
    }
    let n = ((slo_s - sum) / max).floor() + 1.0;
    n.max(0.0) * 0.99f64.powi(pp as i32)
}

/// MP-ILP: `D` slots, each empty or a pp-stage pipeline (pp ∈ {1, 2, 4, 8}, op = 1) with
/// `Σ_j size_j = D`; `p_ij` puts model `i` in slot `j`; the memory row bounds only the slot's
/// total single-device weight, as in AlpaServe. Capacity `cap_i = Σ_jk z_ijk f_ik` with
/// `z_ijk = p_ij ∧ s_jk`, linearised compactly (`Σ_k z_ijk ≤ p_ij`, `z_ijk ≤ s_jk`; the objective
/// pushes z up, so AlpaServe's third row is redundant).
///
/// The decoded plan must pass the per-device memory check that AlpaServe's row does not make:
/// in an over-full group the models with the most normalised capacity to spare are dropped first.
pub fn mp_ilp(inst: &Instance, rates: &[f64], settings: Settings) -> Result<IlpPlan> {
    let n_dev = inst.cluster.devices;
    let slots = n_dev as usize;
    let n_models = inst.models.len();
    let degrees: Vec<u32> = MP_DEGREES.iter().copied().filter(|&d| d <= n_dev).collect();
    let total_weight = total_weights(inst, &degrees)?;
    // f[m][k]: capability of model m in config k (0 without a profile).
    let f: Vec<Vec<f64>> = (0..n_models)
        .map(|m| {
            degrees
                .iter()
                .map(|&pp| {
                    inst.profile_of(m)
                        .config(pp, 1)
                        .and_then(|c| c.stage_latency_s.first())
                        .map_or(0.0, |row| capability(inst.models[m].slo_s, row, pp))
                })
                .collect()
        })
        .collect();
    let inv_rate: Vec<f64> = rates
        .iter()
        .map(|&r| if r > 0.0 { 1.0 / r } else { 0.0 })
        .collect();

    let mut vars = ProblemVariables::new();
    let s: Vec<Vec<Variable>> = (0..slots)
        .map(|_| {
            degrees
                .iter()
                .map(|_| vars.add(variable().binary()))
                .collect()
        })
        .collect();
    let p: Vec<Vec<Variable>> = (0..n_models)
        .map(|_| (0..slots).map(|_| vars.add(variable().binary())).collect())
        .collect();
    // z only where the capability is positive: a zero column changes nothing.
    let z: Vec<Vec<Vec<Option<Variable>>>> = (0..n_models)
        .map(|m| {
            (0..slots)
                .map(|_| {
                    (0..degrees.len())
                        .map(|k| {
                            (f[m][k] > 0.0 && inv_rate[m] > 0.0)
                                .then(|| vars.add(variable().min(0.0).max(1.0)))
                        })
                        .collect()
                })
                .collect()
        })
        .collect();
    let t_min = vars.add(variable().min(0.0));
    let mut objective = Expression::from(t_min);
    let mut cap: Vec<Expression> = (0..n_models).map(|_| Expression::default()).collect();
    for (m, zm) in z.iter().enumerate() {
        for (k, v) in zm.iter().flat_map(|zmj| zmj.iter().enumerate()) {
            if let Some(v) = *v {
                cap[m].add_mul(f[m][k] * inv_rate[m], v);
                objective.add_mul(SUM_WEIGHT * f[m][k] * inv_rate[m], v);
            }
        }
    }
    let mut problem = vars.maximise(objective).using(good_lp::highs);
    let mut devices = Expression::default();
    for (j, sj) in s.iter().enumerate() {
        let mut one = Expression::default();
        let mut size = Expression::default();
        let mut rank = Expression::default();
        for (k, &v) in sj.iter().enumerate() {
            one.add_mul(1.0, v);
            size.add_mul(degrees[k] as f64, v);
            devices.add_mul(degrees[k] as f64, v);
            rank.add_mul((k + 1) as f64, v);
        }
        // At most one config (none = the empty config).
        problem.add_constraint(one.leq(1.0));
        let mut mem = Expression::with_capacity(n_models);
        for m in 0..n_models {
            mem.add_mul(total_weight[m] / inst.budget_gib(), p[m][j]);
        }
        problem.add_constraint(mem.leq(size + 1e-9));
        // Slots are interchangeable: order them by config (not in AlpaServe; removes copies).
        if j + 1 < slots {
            let mut next = Expression::default();
            for (k, &v) in s[j + 1].iter().enumerate() {
                next.add_mul((k + 1) as f64, v);
            }
            problem.add_constraint(rank.geq(next));
        }
    }
    problem.add_constraint(devices.eq(n_dev as f64));
    for m in 0..n_models {
        for j in 0..slots {
            let mut sum_z = Expression::default();
            for k in 0..degrees.len() {
                if let Some(v) = z[m][j][k] {
                    sum_z.add_mul(1.0, v);
                    problem.add_constraint(Expression::from(v).leq(s[j][k]));
                }
            }
            problem.add_constraint(sum_z.leq(p[m][j]));
        }
        if inv_rate[m] > 0.0 {
            problem.add_constraint(cap[m].clone().geq(t_min));
        }
    }
    // Columns: s (slot-major), p (model-major), then z and t_min.
    let inc =
        highs::solve(problem, settings, None).map_err(|e| no_incumbent("alpaserve-ilp", e))?;
    let kd = degrees.len();
    let s_val = |j: usize, k: usize| highs::is_set(inc.values[j * kd + k]);
    let p_val = |m: usize, j: usize| highs::is_set(inc.values[slots * kd + m * slots + j]);

    let mut placement = Placement::default();
    let mut next = 0u32;
    let mut capv = vec![0.0f64; n_models];
    for j in 0..slots {
        let Some(k) = (0..kd).find(|&k| s_val(j, k)) else {
            continue;
        };
        let pp = degrees[k];
        if next + pp > n_dev {
            break;
        }
        let mut group = Group::new(pp, 1, (next..next + pp).collect());
        next += pp;
        let mut members: Vec<usize> = (0..n_models)
            .filter(|&m| p_val(m, j) && inst.profile_of(m).config(pp, 1).is_some())
            .collect();
        // Per-device memory repair: drop the members with the most capacity to spare first.
        let spare = |m: usize| f[m][k] * inv_rate[m];
        members.sort_by(|&a, &b| spare(a).total_cmp(&spare(b)).then(a.cmp(&b)));
        let mut used: f64 = members
            .iter()
            .map(|&m| model_weight_gib(inst, m, pp, 1))
            .sum();
        while used > inst.budget_gib() + 1e-9 {
            let Some(m) = members.pop() else { break };
            used -= model_weight_gib(inst, m, pp, 1);
        }
        members.sort_unstable();
        for &m in &members {
            capv[m] += f[m][k] * inv_rate[m];
        }
        group.models = members.into_iter().map(|m| m as u32).collect();
        placement.groups.push(group);
    }
    let coef: Vec<f64> = inv_rate.clone();
    let objective = capacity_objective(&capv, &coef);
    Ok(IlpPlan {
        placement,
        objective,
        status: inc.status,
    })
}
