//! The inner placement MILP of stage-dp-and-milp.md §5.2: the device groups are fixed, the MILP
//! chooses replicas and traffic shares.
//!
//! Variables exist only for feasible (model, group) pairs: the model has a profile for the group's
//! shape, its largest per-device stage weight fits the budget, and its penalized stage sum plus
//! the per-request overhead meets its SLO (a replica that can never meet the SLO is useless).
//!
//! ```text
//! x_p ∈ {0,1} (replica), r_p ∈ [0,1] (traffic share), U ≥ 0        for every feasible pair p = (i, j)
//! Σ_{p∈j} (w_p / M) x_p ≤ 1                         ∀ group j    (contract's memory rule)
//! r_p ≤ x_p                                          ∀ p
//! Σ_{p∋i} r_p = 1   (goodput: = σ_i ∈ [0,1])         ∀ model i with requests
//! Σ_{p∋i} x_p ≥ 1   (utilisation objective only)     ∀ model i    (every model is served)
//! Σ_{p∈j} λ_i ℓ'_{p,k} r_p ≤ U   (goodput: ≤ ρ)      ∀ group j, stage k   (exact per-stage load)
//! Σ_i x_{i,j} ≥ Σ_i x_{i,j+1}                        for consecutive groups of one shape
//! utilisation: minimise U + ε Σ x_p;   goodput: maximise Σ λ_i σ_i / Σ λ − ε Σ x_p
//! ```
//! `ℓ'` is the stage latency times the simulator's pipeline penalty `1 + pp_penalty·pp`, so a
//! load of 1 keeps that stage busy all the time. Every row is dimensionless and O(1) (memory as a
//! fraction of the budget, load as λ·ℓ), as HiGHS likes it.

use good_lp::{variable, Expression, ProblemVariables, SolverModel, Variable};

use crate::instance::Instance;
use crate::plan::{Placement, SolveStatus};
use crate::workload::Trace;

use super::highs;
pub use super::highs::{NoIncumbent, Settings};

/// Memory slack matching the greedy placers' `≤ budget + 1e-9` test, as a fraction of the budget.
const MEM_SLACK_GIB: f64 = 1e-9;

/// What the MILP optimises.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Objective {
    /// Route all traffic, minimise the most loaded stage `U` (min-max fairness across groups).
    Utilisation,
    /// Keep every stage's load ≤ `target`, maximise the served fraction of the traffic.
    Goodput { target: f64 },
}

/// Parameters of one inner MILP.
#[derive(Debug, Clone, Copy)]
pub struct Params {
    pub objective: Objective,
    /// Replica tie-break: positive saves replicas, negative adds them.
    pub eps: f64,
    pub settings: Settings,
    /// Strengthen the relaxation (share caps, replica-count rows and cuts, the replica bound on
    /// `U`); off reproduces the plain §5.2 rows, for comparisons.
    pub cuts: bool,
    /// Order groups of one shape by replica count (off leaves symmetry to HiGHS' own detection).
    pub symmetry: bool,
}

impl Params {
    /// The plain formulation with strengthening and symmetry rows on.
    pub fn new(objective: Objective, eps: f64, settings: Settings) -> Params {
        Params {
            objective,
            eps,
            settings,
            cuts: true,
            symmetry: true,
        }
    }
}

/// A feasible (model, group) pair.
#[derive(Debug, Clone)]
pub struct Pair {
    pub model: usize,
    pub group: usize,
    /// Largest per-device stage weight as a fraction of the budget.
    pub weight: f64,
    /// `λ_model · ℓ'_k` for every stage `k` of the group.
    pub stage_load: Vec<f64>,
    /// The largest stage load: the pair alone keeps `U ≥ peak · r`.
    pub peak: f64,
}

/// The data of one inner MILP: a partition, the feasible pairs and the rates.
#[derive(Debug, Clone)]
pub struct Formulation {
    pub shapes: Vec<(u32, u32)>,
    /// Requests per second of every model on the trace.
    pub rates: Vec<f64>,
    /// Feasible pairs, grouped by group, models ascending inside a group.
    pub pairs: Vec<Pair>,
    pub n_models: usize,
}

/// Requests per second of every model: its count over the trace's span (1 s for a span of 0).
pub fn arrival_rates(trace: &Trace, n_models: usize) -> Vec<f64> {
    let span = match (trace.arrival_s.first(), trace.arrival_s.last()) {
        (Some(a), Some(b)) if b - a > 0.0 => b - a,
        _ => 1.0,
    };
    trace
        .counts(n_models)
        .into_iter()
        .map(|c| c as f64 / span)
        .collect()
}

/// Why model `m` has no feasible pair on `shape`, or `None` when it has one.
pub fn pair_blocker(inst: &Instance, m: usize, shape: (u32, u32)) -> Option<Blocker> {
    let Some(cfg) = inst.profile_of(m).config(shape.0, shape.1) else {
        return Some(Blocker::NoProfile);
    };
    if cfg.weight_gib() > inst.budget_gib() + MEM_SLACK_GIB {
        return Some(Blocker::Memory);
    }
    if latency_s(inst, m, shape).is_none_or(|l| l > inst.models[m].slo_s) {
        return Some(Blocker::Slo);
    }
    None
}

/// Why a pair is not created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Blocker {
    NoProfile,
    Memory,
    Slo,
}

/// Penalized stage latencies of model `m` on `shape` at the simulator's batch row (index 0: the
/// simulator scores placements at its first batch row).
fn stage_latencies_s(inst: &Instance, m: usize, shape: (u32, u32)) -> Option<Vec<f64>> {
    let cfg = inst.profile_of(m).config(shape.0, shape.1)?;
    let row = cfg.stage_latency_s.first()?;
    let factor = 1.0 + inst.simulator.pp_penalty * shape.0 as f64;
    Some(row.iter().map(|l| l * factor).collect())
}

/// Unloaded request latency on `shape`: penalized stage sum plus the per-request overhead, the
/// quantity the simulator compares with the SLO.
pub fn latency_s(inst: &Instance, m: usize, shape: (u32, u32)) -> Option<f64> {
    stage_latencies_s(inst, m, shape).map(|s| s.iter().sum::<f64>() + inst.simulator.overhead_s)
}

impl Formulation {
    pub fn new(inst: &Instance, rates: &[f64], shapes: &[(u32, u32)]) -> Formulation {
        let n_models = inst.models.len();
        let budget = inst.budget_gib();
        let mut pairs = Vec::new();
        for (g, &shape) in shapes.iter().enumerate() {
            for (m, &rate) in rates.iter().enumerate().take(n_models) {
                if pair_blocker(inst, m, shape).is_some() {
                    continue;
                }
                let weight = crate::plan::model_weight_gib(inst, m, shape.0, shape.1) / budget;
                let stages = stage_latencies_s(inst, m, shape).unwrap_or_default();
                let stage_load: Vec<f64> = stages.iter().map(|l| rate * l).collect();
                pairs.push(Pair {
                    model: m,
                    group: g,
                    weight,
                    peak: stage_load.iter().copied().fold(0.0, f64::max),
                    stage_load,
                });
            }
        }
        Formulation {
            shapes: shapes.to_vec(),
            rates: rates.to_vec(),
            pairs,
            n_models,
        }
    }

    /// Models without any feasible pair (the utilisation MILP is infeasible while one exists).
    pub fn uncovered(&self) -> Vec<usize> {
        let mut covered = vec![false; self.n_models];
        for p in &self.pairs {
            covered[p.model] = true;
        }
        (0..self.n_models).filter(|&m| !covered[m]).collect()
    }

    fn pair_index(&self) -> std::collections::BTreeMap<(usize, usize), usize> {
        self.pairs
            .iter()
            .enumerate()
            .map(|(k, p)| ((p.model, p.group), k))
            .collect()
    }

    /// The replica set of `p` as pair flags, for a placement on this partition's devices (groups
    /// are matched by their first device, so a normalized placement maps back). Replicas on
    /// infeasible pairs are dropped; a model left without a replica gets one on the first feasible
    /// group with room. Groups of one shape are reordered to satisfy the symmetry rows. `None`
    /// when some model cannot be given a replica.
    pub fn chosen_from(&self, p: &Placement) -> Option<Vec<bool>> {
        let mut first_device = std::collections::BTreeMap::new();
        let mut next = 0u32;
        for (g, &(pp, tp)) in self.shapes.iter().enumerate() {
            first_device.insert(next, g);
            next += pp * tp;
        }
        let index = self.pair_index();
        let mut chosen = vec![false; self.pairs.len()];
        for group in &p.groups {
            let Some(&g) = group.devices.first().and_then(|d| first_device.get(d)) else {
                continue;
            };
            for &m in &group.models {
                if let Some(&k) = index.get(&(m as usize, g)) {
                    chosen[k] = true;
                }
            }
        }
        self.cover(&mut chosen).then(|| self.symmetric(&chosen))
    }

    /// Gives every uncovered model a replica on the first feasible group with room.
    fn cover(&self, chosen: &mut [bool]) -> bool {
        let mut used = vec![0.0f64; self.shapes.len()];
        let mut has = vec![false; self.n_models];
        for (k, p) in self.pairs.iter().enumerate() {
            if chosen[k] {
                used[p.group] += p.weight;
                has[p.model] = true;
            }
        }
        for (m, &placed) in has.iter().enumerate() {
            if placed {
                continue;
            }
            let slot =
                self.pairs.iter().enumerate().find(|(_, p)| {
                    p.model == m && used[p.group] + p.weight <= 1.0 + self.mem_slack()
                });
            let Some((k, p)) = slot else {
                return false;
            };
            chosen[k] = true;
            used[p.group] += p.weight;
        }
        true
    }

    fn mem_slack(&self) -> f64 {
        // `weight` is already a fraction; the slack mirrors `MEM_SLACK_GIB` for budgets ≥ 1 GiB.
        MEM_SLACK_GIB
    }

    /// Permutes groups inside each run of identical shapes so that replica counts do not increase
    /// (the symmetry rows), keeping the relative order of equal counts.
    fn symmetric(&self, chosen: &[bool]) -> Vec<bool> {
        let g_count = self.shapes.len();
        let mut count = vec![0usize; g_count];
        for (k, p) in self.pairs.iter().enumerate() {
            if chosen[k] {
                count[p.group] += 1;
            }
        }
        // perm[new] = old group whose replicas move to `new`.
        let mut perm: Vec<usize> = (0..g_count).collect();
        let mut start = 0;
        while start < g_count {
            let mut end = start + 1;
            while end < g_count && self.shapes[end] == self.shapes[start] {
                end += 1;
            }
            perm[start..end].sort_by_key(|&g| std::cmp::Reverse(count[g]));
            start = end;
        }
        let index = self.pair_index();
        let mut out = vec![false; chosen.len()];
        for (new, &old) in perm.iter().enumerate() {
            for (k, p) in self.pairs.iter().enumerate() {
                if p.group == old && chosen[k] {
                    // Identical shapes have identical feasible models, so the pair exists.
                    if let Some(&k2) = index.get(&(p.model, new)) {
                        out[k2] = true;
                    }
                }
            }
        }
        out
    }

    /// A quick start without the simulator: models by descending load, each on the feasible
    /// group with room whose busiest stage stays lowest (longest-processing-time first).
    pub fn lpt(&self) -> Option<Vec<bool>> {
        let mut by_model: Vec<Vec<usize>> = vec![Vec::new(); self.n_models];
        for (k, p) in self.pairs.iter().enumerate() {
            by_model[p.model].push(k);
        }
        let peak = |k: usize| self.pairs[k].peak;
        let mut order: Vec<usize> = (0..self.n_models).collect();
        let need = |m: usize| {
            by_model[m]
                .iter()
                .map(|&k| peak(k))
                .fold(f64::INFINITY, f64::min)
        };
        order.sort_by(|&a, &b| need(b).total_cmp(&need(a)).then(a.cmp(&b)));
        let mut used = vec![0.0f64; self.shapes.len()];
        let mut load: Vec<Vec<f64>> = self
            .shapes
            .iter()
            .map(|s| vec![0.0; s.0 as usize])
            .collect();
        let mut chosen = vec![false; self.pairs.len()];
        for m in order {
            let mut best: Option<(f64, usize)> = None;
            for &k in &by_model[m] {
                let p = &self.pairs[k];
                if used[p.group] + p.weight > 1.0 + self.mem_slack() {
                    continue;
                }
                let after = load[p.group]
                    .iter()
                    .zip(&p.stage_load)
                    .map(|(a, b)| a + b)
                    .fold(0.0, f64::max);
                if best.is_none_or(|(b, _)| after < b) {
                    best = Some((after, k));
                }
            }
            let (_, k) = best?;
            let p = &self.pairs[k];
            chosen[k] = true;
            used[p.group] += p.weight;
            for (a, b) in load[p.group].iter_mut().zip(&p.stage_load) {
                *a += b;
            }
        }
        Some(self.symmetric(&chosen))
    }

    /// Splittable packing at the utilisation level `level`: models in `order` take traffic shares
    /// group by group so that no stage load exceeds `level` and no group's memory its budget.
    /// A model whose remaining share fits on one group goes to the group it fills best (leaving
    /// emptier groups for what comes later); otherwise it takes the largest share any group can
    /// hold and continues with the rest. Returns the replica set and its peak stage load, `None`
    /// when some model cannot be placed. Allocation: the caller's `scratch`.
    fn fill_at(
        &self,
        level: f64,
        order: &[usize],
        by_model: &[Vec<usize>],
        first_fit: bool,
        scratch: &mut FillScratch,
    ) -> Option<f64> {
        let FillScratch { used, load, chosen } = scratch;
        used.clear();
        used.resize(self.shapes.len(), 0.0);
        load.clear();
        load.extend(self.shapes.iter().map(|s| vec![0.0; s.0 as usize]));
        chosen.clear();
        chosen.resize(self.pairs.len(), false);
        // What share of the pair `k` its group can still carry at `level`.
        let room = |k: usize, load: &[Vec<f64>]| -> f64 {
            let p = &self.pairs[k];
            load[p.group]
                .iter()
                .zip(&p.stage_load)
                .filter(|(_, &l)| l > 0.0)
                .map(|(a, l)| (level - a) / l)
                .fold(1.0f64, f64::min)
                .max(0.0)
        };
        for &m in order {
            let mut left = if self.rates[m] > 0.0 { 1.0 } else { 0.0 };
            let mut placed = false;
            while left > 1e-12 || !placed {
                // (fits all that is left, slack after taking it or −share, pair)
                let mut best: Option<(bool, f64, usize)> = None;
                for &k in &by_model[m] {
                    let p = &self.pairs[k];
                    if chosen[k] || used[p.group] + p.weight > 1.0 + self.mem_slack() {
                        continue;
                    }
                    let r = room(k, load);
                    if r <= 1e-12 && left > 1e-12 {
                        continue;
                    }
                    if first_fit {
                        // Pairs are in group order: the first group with room takes what it can.
                        best = Some((true, 0.0, k));
                        break;
                    }
                    let all = r >= left;
                    // Best fit among groups that take the whole rest, else the widest room.
                    let key = if all { r - left } else { -r };
                    let wins = match best {
                        None => true,
                        Some((b_all, b_key, _)) => (all && !b_all) || (all == b_all && key < b_key),
                    };
                    if wins {
                        best = Some((all, key, k));
                    }
                }
                let (_, _, k) = best?;
                let p = &self.pairs[k];
                let take = room(k, load).min(left);
                chosen[k] = true;
                placed = true;
                used[p.group] += p.weight;
                for (a, l) in load[p.group].iter_mut().zip(&p.stage_load) {
                    *a += l * take;
                }
                left -= take;
            }
        }
        Some(load.iter().flatten().copied().fold(0.0, f64::max))
    }

    /// A start for the utilisation objective without the simulator: `Formulation::fill_at`
    /// bisected on the level for a few model orders (dominant resource, load, weight, each
    /// descending), the best by objective `U + eps·replicas`, then routed by the LP. Returns the
    /// replica set with its objective value.
    pub fn balanced(&self, eps: f64) -> Option<(Vec<bool>, f64)> {
        let mut by_model: Vec<Vec<usize>> = vec![Vec::new(); self.n_models];
        for (k, p) in self.pairs.iter().enumerate() {
            by_model[p.model].push(k);
        }
        if by_model.iter().any(Vec::is_empty) {
            return None;
        }
        let least = |m: usize, f: &dyn Fn(&Pair) -> f64| {
            by_model[m]
                .iter()
                .map(|&k| f(&self.pairs[k]))
                .fold(f64::INFINITY, f64::min)
        };
        let peak: Vec<f64> = (0..self.n_models).map(|m| least(m, &|p| p.peak)).collect();
        let weight: Vec<f64> = (0..self.n_models)
            .map(|m| least(m, &|p| p.weight))
            .collect();
        let lo0 = self.utilisation_bound();
        if !lo0.is_finite() {
            return None;
        }
        let mut scratch = FillScratch::default();
        let mut best: Option<(Vec<bool>, f64)> = None;
        for variant in 0..6 + JITTERED_ORDERS {
            let (kind, first_fit) = if variant < 6 {
                (variant % 3, variant >= 3)
            } else {
                (3, false)
            };
            // Deterministic jitter in [0.7, 1.3) per model for the perturbed orders.
            let jitter: Vec<f64> = (0..self.n_models)
                .map(|m| 0.7 + 0.6 * unit_hash((variant * 7919 + m) as u64))
                .collect();
            let mut order: Vec<usize> = (0..self.n_models).collect();
            let key = |m: usize, level: f64| match kind {
                0 => weight[m].max(peak[m] / level.max(1e-12)),
                1 => peak[m],
                2 => weight[m],
                _ => weight[m].max(peak[m] / level.max(1e-12)) * jitter[m],
            };
            let sort = |order: &mut Vec<usize>, level: f64| {
                order.sort_by(|&a, &b| key(b, level).total_cmp(&key(a, level)).then(a.cmp(&b)))
            };
            // Find a feasible level by doubling, then bisect between it and the bound.
            let mut lo = lo0.max(1e-9);
            let mut hi = lo;
            let mut found = None;
            for _ in 0..40 {
                sort(&mut order, hi);
                if let Some(peak) = self.fill_at(hi, &order, &by_model, first_fit, &mut scratch) {
                    found = Some(peak);
                    break;
                }
                lo = hi;
                hi *= 1.25;
            }
            let Some(mut peak_hi) = found else { continue };
            let mut at_hi = scratch.chosen.clone();
            for _ in 0..30 {
                if hi - lo <= 1e-4 * hi {
                    break;
                }
                let mid = 0.5 * (lo + hi);
                sort(&mut order, mid);
                match self.fill_at(mid, &order, &by_model, first_fit, &mut scratch) {
                    Some(peak) => {
                        hi = mid;
                        peak_hi = peak;
                        at_hi.clone_from(&scratch.chosen);
                    }
                    None => lo = mid,
                }
            }
            let replicas = at_hi.iter().filter(|&&c| c).count() as f64;
            let value = peak_hi + eps * replicas;
            if best.as_ref().is_none_or(|b| value < b.1) {
                best = Some((at_hi, value));
            }
        }
        let (chosen, _) = best?;
        let chosen = self.symmetric(&chosen);
        let value = self.start_value(&chosen, Objective::Utilisation, eps);
        Some((chosen, value))
    }

    /// A feasible point on the replica set `chosen`: for the utilisation objective the best
    /// routing (a small LP; the even split if that fails), for goodput the even split over each
    /// model's replicas scaled down until every stage load is within the target. Returns the
    /// shares, the peak stage load and the scale.
    fn start_point(&self, chosen: &[bool], objective: Objective) -> (Vec<f64>, f64, f64) {
        if objective == Objective::Utilisation {
            if let Some(share) = self.route(chosen) {
                let peak = self.peak_load(&share);
                return (share, peak, 1.0);
            }
        }
        let mut replicas = vec![0usize; self.n_models];
        for (k, p) in self.pairs.iter().enumerate() {
            if chosen[k] {
                replicas[p.model] += 1;
            }
        }
        let mut share: Vec<f64> = self
            .pairs
            .iter()
            .enumerate()
            .map(|(k, p)| {
                if chosen[k] && self.rates[p.model] > 0.0 {
                    1.0 / replicas[p.model] as f64
                } else {
                    0.0
                }
            })
            .collect();
        let peak = self.peak_load(&share);
        let scale = match objective {
            Objective::Utilisation => 1.0,
            Objective::Goodput { target } if peak > target => target / peak,
            Objective::Goodput { .. } => 1.0,
        };
        for s in &mut share {
            *s *= scale;
        }
        (share, peak * scale, scale)
    }

    /// The traffic shares over the replica set `chosen` that minimise the busiest stage (an
    /// LP), or `None` when a model with requests has no replica or HiGHS fails.
    pub fn route(&self, chosen: &[bool]) -> Option<Vec<f64>> {
        let mut vars = ProblemVariables::new();
        let r: Vec<Option<Variable>> = self
            .pairs
            .iter()
            .zip(chosen)
            .map(|(p, &c)| {
                (c && self.rates[p.model] > 0.0).then(|| vars.add(variable().min(0.0).max(1.0)))
            })
            .collect();
        let u = vars.add(variable().min(0.0));
        let mut problem = vars.minimise(u).using(good_lp::highs);
        for m in 0..self.n_models {
            if self.rates[m] <= 0.0 {
                continue;
            }
            let mut sum = Expression::default();
            for (p, v) in self.pairs.iter().zip(&r) {
                if let (true, Some(v)) = (p.model == m, v) {
                    sum.add_mul(1.0, *v);
                }
            }
            problem.add_constraint(sum.eq(1.0));
        }
        for (g, shape) in self.shapes.iter().enumerate() {
            for stage in 0..shape.0 as usize {
                let mut load = Expression::default();
                for (p, v) in self.pairs.iter().zip(&r) {
                    if let (true, Some(v)) = (p.group == g, v) {
                        load.add_mul(p.stage_load[stage], *v);
                    }
                }
                problem.add_constraint(load.leq(u));
            }
        }
        let settings = Settings {
            gap: 0.0,
            time_limit_s: None,
            cutoff: None,
        };
        let inc = highs::solve(problem, settings, None).ok()?;
        let mut share = vec![0.0; self.pairs.len()];
        let mut col = 0;
        for (k, v) in r.iter().enumerate() {
            if v.is_some() {
                share[k] = inc.values[col].clamp(0.0, 1.0);
                col += 1;
            }
        }
        Some(share)
    }

    /// Local search on a covering replica set for the utilisation objective `U + eps·replicas`,
    /// until no move relieves a busiest group, `STALE_PASSES` passes in a row found nothing
    /// better, or `until` passes. A pass relieves the busiest groups
    /// one by one with the move that leaves the pair of groups it touches least loaded, as long
    /// as that is below the busiest load: a replica moves to another group (with its traffic
    /// share), or two replicas of different groups trade places. Memory rows hold throughout;
    /// shares move with their replicas (a split also creates one and moves part of a share, at
    /// the price of a replica), so the loads are exact; after each pass the LP
    /// ([`Formulation::route`]) re-routes the set and replicas left without traffic go. Returns
    /// the best set met and its objective value.
    pub fn local_search(
        &self,
        chosen: &[bool],
        eps: f64,
        until: std::time::Instant,
    ) -> Option<(Vec<bool>, f64)> {
        let index = self.pair_index();
        let mut best = chosen.to_vec();
        let share = self.route(&best)?;
        self.drop_idle(&mut best, &share);
        let replicas = |set: &[bool]| set.iter().filter(|&&c| c).count() as f64;
        let mut value = self.peak_load(&share) + eps * replicas(&best);
        let (mut cur, mut moved) = (best.clone(), share.clone());
        let mut stale = 0;
        while std::time::Instant::now() < until && stale < STALE_PASSES {
            let mut load: Vec<Vec<f64>> = self
                .shapes
                .iter()
                .map(|s| vec![0.0; s.0 as usize])
                .collect();
            let mut mem = vec![0.0f64; self.shapes.len()];
            let mut members: Vec<Vec<usize>> = vec![Vec::new(); self.shapes.len()];
            for (k, p) in self.pairs.iter().enumerate() {
                if cur[k] {
                    mem[p.group] += p.weight;
                    members[p.group].push(k);
                    for (a, l) in load[p.group].iter_mut().zip(&p.stage_load) {
                        *a += l * moved[k];
                    }
                }
            }
            let peak = |l: &[f64]| l.iter().copied().fold(0.0, f64::max);
            let top = load.iter().map(|l| peak(l)).fold(0.0, f64::max);
            let mut busiest: Vec<usize> = (0..self.shapes.len())
                .filter(|&g| peak(&load[g]) >= top * (1.0 - 1e-9))
                .collect();
            busiest.sort_unstable();
            let mut changed = false;
            for a in busiest {
                // (resulting max load of the two groups, move): k leaves `a` for pair `to`,
                // and `back` (on the other group) comes to `a` as pair `back_to`.
                // The last field is the share that moves with `k` (all of it but for a split).
                #[allow(clippy::type_complexity)]
                let mut pick: Option<(
                    f64,
                    usize,
                    usize,
                    Option<(usize, usize)>,
                    f64,
                )> = None;
                for &k in &members[a] {
                    let pk = &self.pairs[k];
                    for b in (0..self.shapes.len()).filter(|&b| b != a) {
                        let Some(&to) = index.get(&(pk.model, b)) else {
                            continue;
                        };
                        if cur[to] {
                            continue;
                        }
                        let pt = &self.pairs[to];
                        let after_a: Vec<f64> = load[a]
                            .iter()
                            .zip(&pk.stage_load)
                            .map(|(x, l)| x - l * moved[k])
                            .collect();
                        let after_b: Vec<f64> = load[b]
                            .iter()
                            .zip(&pt.stage_load)
                            .map(|(x, l)| x + l * moved[k])
                            .collect();
                        if mem[b] + pt.weight <= 1.0 + self.mem_slack() {
                            let worst = peak(&after_a).max(peak(&after_b));
                            if worst < top * (1.0 - 1e-9) && pick.is_none_or(|p| worst < p.0) {
                                pick = Some((worst, k, to, None, moved[k]));
                            }
                            // Or a new replica on `b` that takes the share evening out the
                            // two busiest stages (at the price of a replica).
                            let (la, lb) = (pk.peak, pt.peak);
                            if la + lb > 0.0 {
                                let t = ((peak(&load[a]) - peak(&load[b])) / (la + lb))
                                    .clamp(0.0, moved[k]);
                                let pa = peak(
                                    &load[a]
                                        .iter()
                                        .zip(&pk.stage_load)
                                        .map(|(x, l)| x - l * t)
                                        .collect::<Vec<_>>(),
                                );
                                let pb = peak(
                                    &load[b]
                                        .iter()
                                        .zip(&pt.stage_load)
                                        .map(|(x, l)| x + l * t)
                                        .collect::<Vec<_>>(),
                                );
                                let worst = pa.max(pb) + eps;
                                if t > 0.0
                                    && pa.max(pb) < top * (1.0 - 1e-9)
                                    && pick.is_none_or(|p| worst < p.0)
                                {
                                    pick = Some((worst, k, to, None, t));
                                }
                            }
                        }
                        for &j in &members[b] {
                            let pj = &self.pairs[j];
                            let Some(&back_to) = index.get(&(pj.model, a)) else {
                                continue;
                            };
                            if pj.model == pk.model
                                || cur[back_to]
                                || mem[b] - pj.weight + pt.weight > 1.0 + self.mem_slack()
                                || mem[a] - pk.weight + self.pairs[back_to].weight
                                    > 1.0 + self.mem_slack()
                            {
                                continue;
                            }
                            let pa = peak(
                                &after_a
                                    .iter()
                                    .zip(&self.pairs[back_to].stage_load)
                                    .map(|(x, l)| x + l * moved[j])
                                    .collect::<Vec<_>>(),
                            );
                            let pb = peak(
                                &after_b
                                    .iter()
                                    .zip(&pj.stage_load)
                                    .map(|(x, l)| x - l * moved[j])
                                    .collect::<Vec<_>>(),
                            );
                            let worst = pa.max(pb);
                            if worst < top * (1.0 - 1e-9) && pick.is_none_or(|p| worst < p.0) {
                                pick = Some((worst, k, to, Some((j, back_to)), moved[k]));
                            }
                        }
                    }
                }
                let Some((_, k, to, back, part)) = pick else {
                    continue;
                };
                // Apply: `part` of pair k's share goes to a replica on `to` (k's replica goes
                // along when all of it does), and `back`'s whole share and replica to `back_to`.
                let back = back.map(|(j, back_to)| (j, back_to, moved[j]));
                let mut shift = |from: usize, to: usize, part: f64, cur: &mut Vec<bool>| {
                    let (pf, pt) = (&self.pairs[from], &self.pairs[to]);
                    for (x, l) in load[pf.group].iter_mut().zip(&pf.stage_load) {
                        *x -= l * part;
                    }
                    for (x, l) in load[pt.group].iter_mut().zip(&pt.stage_load) {
                        *x += l * part;
                    }
                    let whole = part >= moved[from];
                    mem[pt.group] += pt.weight;
                    members[pt.group].push(to);
                    moved[to] = part;
                    moved[from] -= part;
                    cur[to] = true;
                    if whole {
                        mem[pf.group] -= pf.weight;
                        members[pf.group].retain(|&x| x != from);
                        moved[from] = 0.0;
                        cur[from] = false;
                    }
                };
                shift(k, to, part, &mut cur);
                if let Some((j, back_to, all)) = back {
                    shift(j, back_to, all, &mut cur);
                }
                changed = true;
            }
            if !changed {
                break;
            }
            // Re-route; the search goes on from there whether or not it beats the best so far
            // (every pass lowers the busiest load, so it ends).
            let Some(routed) = self.route(&cur) else {
                break;
            };
            self.drop_idle(&mut cur, &routed);
            moved = routed;
            let v = self.peak_load(&moved) + eps * replicas(&cur);
            if v < value - 1e-12 * value.abs().max(1e-12) {
                best.clone_from(&cur);
                value = v;
                stale = 0;
            } else {
                stale += 1;
            }
        }
        // Splits made replicas that the final routing may not need: drop each extra replica,
        // least used first, where the busiest load grows by less than the replica's price.
        if let Some(routed) = self.route(&best) {
            let mut count = vec![0usize; self.n_models];
            for (p, _) in self.pairs.iter().zip(&best).filter(|(_, &c)| c) {
                count[p.model] += 1;
            }
            let mut extra: Vec<usize> = (0..self.pairs.len())
                .filter(|&k| best[k] && count[self.pairs[k].model] > 1)
                .collect();
            extra.sort_by(|&a, &b| routed[a].total_cmp(&routed[b]).then(a.cmp(&b)));
            for k in extra {
                if std::time::Instant::now() >= until || count[self.pairs[k].model] < 2 {
                    continue;
                }
                best[k] = false;
                let fewer = self.route(&best);
                match fewer.map(|r| self.peak_load(&r) + eps * replicas(&best)) {
                    Some(v) if v < value - 1e-12 * value.abs().max(1e-12) => {
                        value = v;
                        count[self.pairs[k].model] -= 1;
                    }
                    _ => best[k] = true,
                }
            }
        }
        let best = self.symmetric(&best);
        let value = self.start_value(&best, Objective::Utilisation, eps);
        Some((best, value))
    }

    /// Removes from `set` the replicas `share` routes nothing to, keeping at least one per model
    /// (the utilisation MILP serves every model).
    fn drop_idle(&self, set: &mut [bool], share: &[f64]) {
        let mut count = vec![0usize; self.n_models];
        for (p, _) in self.pairs.iter().zip(set.iter()).filter(|(_, &c)| c) {
            count[p.model] += 1;
        }
        for (k, p) in self.pairs.iter().enumerate() {
            if set[k] && share[k] <= 1e-12 && count[p.model] > 1 {
                set[k] = false;
                count[p.model] -= 1;
            }
        }
    }

    /// The objective value of the start point built from `chosen` (a feasible solution's value
    /// when every model has a replica).
    pub fn start_value(&self, chosen: &[bool], objective: Objective, eps: f64) -> f64 {
        let (share, peak, _) = self.start_point(chosen, objective);
        let replicas = chosen.iter().filter(|&&c| c).count() as f64;
        match objective {
            Objective::Utilisation => peak + eps * replicas,
            Objective::Goodput { .. } => {
                let total: f64 = self.rates.iter().sum();
                let served: f64 = self
                    .pairs
                    .iter()
                    .zip(&share)
                    .map(|(p, s)| s * self.rates[p.model] / total)
                    .sum();
                served - eps * replicas
            }
        }
    }

    /// The placement holding the replica set `chosen`: groups in this partition's order on
    /// consecutive devices, models ascending.
    pub fn placement_of(&self, chosen: &[bool]) -> Placement {
        let mut placement = Placement::from_shapes(&self.shapes);
        for (k, p) in self.pairs.iter().enumerate() {
            if chosen[k] {
                placement.groups[p.group].models.push(p.model as u32);
            }
        }
        placement
    }

    /// Largest stage load for the given shares.
    pub fn peak_load(&self, share: &[f64]) -> f64 {
        let mut load: Vec<Vec<f64>> = self
            .shapes
            .iter()
            .map(|s| vec![0.0; s.0 as usize])
            .collect();
        for (p, &r) in self.pairs.iter().zip(share) {
            for (a, b) in load[p.group].iter_mut().zip(&p.stage_load) {
                *a += b * r;
            }
        }
        load.iter().flatten().copied().fold(0.0, f64::max)
    }
}

/// Relative slack on derived limits, so that rounding never cuts off a solution at the limit.
const LIMIT_SLACK: f64 = 1e-9;

/// One shape class of a partition, as the replica bound sees it.
struct ShapeClass {
    /// Groups of this shape.
    count: usize,
    /// Stages per group.
    pp: usize,
}

impl Formulation {
    /// Distinct shapes with their group counts, and every group's class index.
    fn shape_classes(&self) -> (Vec<ShapeClass>, Vec<usize>) {
        let mut shapes: Vec<(u32, u32)> = self.shapes.clone();
        shapes.sort_unstable();
        shapes.dedup();
        let class_of: Vec<usize> = self
            .shapes
            .iter()
            .map(|s| shapes.binary_search(s).unwrap_or(0))
            .collect();
        let classes = shapes
            .iter()
            .enumerate()
            .map(|(c, s)| ShapeClass {
                count: class_of.iter().filter(|&&k| k == c).count(),
                pp: s.0 as usize,
            })
            .collect();
        (classes, class_of)
    }

    /// The most replicas any solution can hold: per group, the lightest feasible models that fit
    /// (taking the lightest first maximises the count).
    pub fn max_replicas(&self) -> usize {
        let mut total = 0;
        for g in 0..self.shapes.len() {
            let mut w: Vec<f64> = self
                .pairs
                .iter()
                .filter(|p| p.group == g)
                .map(|p| p.weight)
                .collect();
            w.sort_by(f64::total_cmp);
            let mut used = 0.0;
            for x in w {
                if used + x > 1.0 + MEM_SLACK_GIB {
                    break;
                }
                used += x;
                total += 1;
            }
        }
        total
    }

    /// The largest `U` a solution with objective ≤ `limit` can have (utilisation objective):
    /// `U = objective − ε·replicas`, and the replica count is bounded both ways.
    pub fn utilisation_limit(&self, eps: f64, limit: f64) -> f64 {
        let u = if eps >= 0.0 {
            limit - eps * self.n_models as f64
        } else {
            limit - eps * self.max_replicas() as f64
        };
        u + LIMIT_SLACK * u.abs().max(1e-12)
    }

    /// Replica bound: a lower bound on `U` for every feasible solution of this partition.
    ///
    /// At a threshold `T`, a replica of model `i` on shape `s` takes at most the share
    /// `c = min(1, T / peak)` (one pair alone loads its busiest stage with `peak · r ≤ U`), so
    /// the model needs replica counts `n_s ≤ groups_s` with `Σ n_s c_s ≥ 1`, the cheapest of
    /// which costs `m_i(T) = min Σ n_s w_s` of memory (in group budgets; found exactly by a
    /// small branch and bound). `T` is infeasible when `Σ_i m_i(T)` exceeds the group count or
    /// the total cheapest stage load exceeds `T` times the number of stages. Both tests are
    /// monotone in `T`, so bisection finds the threshold; it returns the largest `T` proved
    /// infeasible (`+∞` when every `T` is).
    pub fn utilisation_bound(&self) -> f64 {
        let (classes, class_of) = self.shape_classes();
        // Per model: (weight, peak, total stage load) per shape class it can use.
        let mut options: Vec<Vec<(usize, f64, f64, f64)>> = vec![Vec::new(); self.n_models];
        for p in &self.pairs {
            let c = class_of[p.group];
            if !options[p.model].iter().any(|o| o.0 == c) {
                let total: f64 = p.stage_load.iter().sum();
                options[p.model].push((c, p.weight, p.peak, total));
            }
        }
        if options.iter().any(Vec::is_empty) {
            return f64::INFINITY;
        }
        let stages: usize = classes.iter().map(|c| c.count * c.pp).sum();
        let load: f64 = options
            .iter()
            .map(|o| o.iter().map(|x| x.3).fold(f64::INFINITY, f64::min))
            .sum();
        let groups = self.shapes.len() as f64 * (1.0 + MEM_SLACK_GIB);
        let feasible = |t: f64| -> bool {
            let mut memory = 0.0;
            for (m, opts) in options.iter().enumerate() {
                let served = self.rates[m] > 0.0;
                let items: Vec<(f64, f64, usize)> = opts
                    .iter()
                    .map(|&(c, w, peak, _)| {
                        let cap = if !served || peak <= t { 1.0 } else { t / peak };
                        (w, cap, classes[c].count)
                    })
                    .collect();
                match cheapest_cover(&items) {
                    Some(cost) => memory += cost,
                    None => return false,
                }
                if memory > groups {
                    return false;
                }
            }
            true
        };
        let mut lo = load / stages.max(1) as f64;
        let mut hi = self
            .pairs
            .iter()
            .map(|p| p.peak)
            .fold(lo, f64::max)
            .max(1e-12);
        if !feasible(hi) {
            return f64::INFINITY;
        }
        if feasible(lo) {
            return lo;
        }
        for _ in 0..60 {
            let mid = 0.5 * (lo + hi);
            if mid <= lo || mid >= hi {
                break;
            }
            if feasible(mid) {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        lo
    }

    /// A lower bound on the objective of every solution (utilisation objective) given a lower
    /// bound `u_bound` on `U`: plus the tie-break's least value.
    pub fn objective_bound(&self, eps: f64, u_bound: f64) -> f64 {
        if eps >= 0.0 {
            u_bound + eps * self.n_models as f64
        } else {
            u_bound + eps * self.max_replicas() as f64
        }
    }
}

/// The least memory `Σ n_s w_s` over integer counts `0 ≤ n_s ≤ max_s` with `Σ n_s c_s ≥ 1`, for
/// items `(w_s, c_s, max_s)`; `None` when even every replica does not cover the model.
fn cheapest_cover(items: &[(f64, f64, usize)]) -> Option<f64> {
    // Cheapest memory per unit of share first, so the first leaf found is good and the bound
    // (the fractional cover of what is left) prunes the rest quickly.
    let mut order: Vec<usize> = (0..items.len()).filter(|&k| items[k].1 > 0.0).collect();
    order.sort_by(|&a, &b| {
        (items[a].0 / items[a].1)
            .total_cmp(&(items[b].0 / items[b].1))
            .then(a.cmp(&b))
    });
    let sorted: Vec<(f64, f64, usize)> = order.iter().map(|&k| items[k]).collect();
    let mut best = f64::INFINITY;
    cover_from(&sorted, 0, 1.0 - 1e-12, 0.0, &mut best);
    best.is_finite().then_some(best)
}

fn cover_from(items: &[(f64, f64, usize)], k: usize, need: f64, cost: f64, best: &mut f64) {
    if need <= 0.0 {
        if cost < *best {
            *best = cost;
        }
        return;
    }
    let Some(&(w, c, max)) = items.get(k) else {
        return;
    };
    // Fractional bound: cover the rest at this (the cheapest remaining) rate.
    if cost + need * w / c >= *best {
        return;
    }
    let full = (need / c).ceil().min(max as f64) as usize;
    for n in (0..=full).rev() {
        cover_from(items, k + 1, need - n as f64 * c, cost + n as f64 * w, best);
    }
}

/// The result of one inner MILP.
#[derive(Debug, Clone)]
pub struct PartitionSolution {
    /// Groups in the formulation's order on consecutive devices, models ascending.
    pub placement: Placement,
    /// Which pairs hold a replica.
    pub chosen: Vec<bool>,
    /// Traffic share of every pair.
    pub share: Vec<f64>,
    /// The MILP objective at the incumbent (recomputed from the rounded solution).
    pub objective: f64,
    pub status: SolveStatus,
    /// HiGHS' final relative gap.
    pub gap: f64,
    /// Proved bound on the objective over this partition (below for the utilisation objective,
    /// above for goodput), restricted to solutions better than the cutoff when one was given.
    pub bound: f64,
}

/// Builds and solves the MILP of `f`; `warm` is a replica set to start from (see
/// [`Formulation::chosen_from`]).
pub fn solve(
    f: &Formulation,
    params: &Params,
    warm: Option<&[bool]>,
) -> Result<PartitionSolution, NoIncumbent> {
    let util = matches!(params.objective, Objective::Utilisation);
    if util && !f.uncovered().is_empty() {
        return Err(NoIncumbent::Infeasible);
    }
    let n_pairs = f.pairs.len();
    let start = warm.map(|chosen| (chosen, f.start_point(chosen, params.objective)));

    // Share caps `r ≤ cap·x`: with the goodput objective every stage load stays ≤ target, so
    // `peak·r ≤ target`; with the utilisation objective only solutions with `U ≤ u_max` matter,
    // where `u_max` follows from the cutoff or the warm start's value (both bound the optimum).
    let u_bound = if params.cuts && util {
        f.utilisation_bound()
    } else {
        0.0
    };
    if !u_bound.is_finite() {
        return Err(NoIncumbent::Infeasible);
    }
    let cap_at = |limit: f64| -> Vec<f64> {
        f.pairs
            .iter()
            .map(|p| {
                if p.peak > limit {
                    (limit / p.peak).max(0.0)
                } else {
                    1.0
                }
            })
            .collect()
    };
    let cap: Vec<f64> = match params.objective {
        _ if !params.cuts => vec![1.0; n_pairs],
        Objective::Goodput { target } => cap_at(target * (1.0 + LIMIT_SLACK)),
        Objective::Utilisation => {
            let warm_value = start.as_ref().map(|(chosen, (_, peak, _))| {
                let replicas = chosen.iter().filter(|&&c| c).count() as f64;
                peak + params.eps * replicas
            });
            let limit = [params.settings.cutoff, warm_value]
                .into_iter()
                .flatten()
                .fold(f64::INFINITY, f64::min);
            if limit.is_finite() {
                let u_max = f.utilisation_limit(params.eps, limit);
                if u_max < u_bound {
                    // Nothing in this partition is as good as the limit.
                    return Err(NoIncumbent::Infeasible);
                }
                cap_at(u_max)
            } else {
                vec![1.0; n_pairs]
            }
        }
    };

    let mut vars = ProblemVariables::new();
    let x: Vec<Variable> = (0..n_pairs)
        .map(|_| vars.add(variable().binary()))
        .collect();
    let r: Vec<Variable> = cap
        .iter()
        .map(|&c| vars.add(variable().min(0.0).max(c)))
        .collect();
    let u = vars.add(variable().min(u_bound));
    let total_rate: f64 = f.rates.iter().sum();
    let served: Vec<Option<Variable>> = (0..f.n_models)
        .map(|m| (!util && f.rates[m] > 0.0).then(|| vars.add(variable().min(0.0).max(1.0))))
        .collect();

    let mut objective = Expression::with_capacity(n_pairs + f.n_models + 1);
    if util {
        objective.add_mul(1.0, u);
        for &v in &x {
            objective.add_mul(params.eps, v);
        }
    } else {
        for (m, s) in served.iter().enumerate() {
            if let Some(s) = *s {
                objective.add_mul(f.rates[m] / total_rate, s);
            }
        }
        for &v in &x {
            objective.add_mul(-params.eps, v);
        }
    }
    let mut problem = if util {
        vars.minimise(objective.clone()).using(good_lp::highs)
    } else {
        vars.maximise(objective.clone()).using(good_lp::highs)
    };

    let n_groups = f.shapes.len();
    let mut in_group: Vec<Vec<usize>> = vec![Vec::new(); n_groups];
    let mut of_model: Vec<Vec<usize>> = vec![Vec::new(); f.n_models];
    for (k, p) in f.pairs.iter().enumerate() {
        in_group[p.group].push(k);
        of_model[p.model].push(k);
    }
    for (g, ks) in in_group.iter().enumerate() {
        if ks.is_empty() {
            continue;
        }
        let mut mem = Expression::with_capacity(ks.len());
        for &k in ks {
            mem.add_mul(f.pairs[k].weight, x[k]);
        }
        problem.add_constraint(mem.leq(1.0 + MEM_SLACK_GIB));
        for stage in 0..f.shapes[g].0 as usize {
            let mut load = Expression::with_capacity(ks.len() + 1);
            for &k in ks {
                let l = f.pairs[k].stage_load[stage];
                if l > 0.0 {
                    load.add_mul(l, r[k]);
                }
            }
            match params.objective {
                Objective::Utilisation => problem.add_constraint(load.leq(u)),
                Objective::Goodput { target } => problem.add_constraint(load.leq(target)),
            };
        }
    }
    for k in 0..n_pairs {
        let mut link = Expression::with_capacity(2);
        link.add_mul(1.0, r[k]);
        link.add_mul(-cap[k], x[k]);
        problem.add_constraint(link.leq(0.0));
    }
    for (m, ks) in of_model.iter().enumerate() {
        if ks.is_empty() {
            continue;
        }
        let mut sum_r = Expression::with_capacity(ks.len());
        let mut sum_x = Expression::with_capacity(ks.len());
        for &k in ks {
            sum_r.add_mul(1.0, r[k]);
            sum_x.add_mul(1.0, x[k]);
        }
        if util {
            let mut least = 1.0;
            if f.rates[m] > 0.0 {
                problem.add_constraint(sum_r.eq(1.0));
                // `Σ r = 1` with `r ≤ cap·x` needs `Σ x ≥ 1 / max cap`, rounded up.
                let widest = ks.iter().map(|&k| cap[k]).fold(0.0, f64::max);
                if widest > 0.0 {
                    least = (1.0 / widest - 1e-9).ceil().max(1.0);
                }
            }
            problem.add_constraint(sum_x.clone().geq(least));
            if params.cuts && f.rates[m] > 0.0 {
                // Replica-count cuts: with `n` replicas the largest share is ≥ 1/n, so
                // `U ≥ peak_min / n`; the secant of this convex function between `n = k` and
                // `k + 1` is valid at every integer `n`.
                let peak = ks
                    .iter()
                    .map(|&k| f.pairs[k].peak)
                    .fold(f64::INFINITY, f64::min);
                let most = ks.len();
                let mut k = least as usize;
                while k < most && peak / k as f64 > u_bound {
                    let kf = k as f64;
                    let slope = peak / (kf * (kf + 1.0));
                    let mut cut = Expression::with_capacity(ks.len() + 1);
                    cut.add_mul(1.0, u);
                    for &j in ks {
                        cut.add_mul(slope, x[j]);
                    }
                    problem.add_constraint(cut.geq(peak / kf + peak / (kf + 1.0)));
                    k += 1;
                }
            }
        } else if let Some(s) = served[m] {
            problem.add_constraint(sum_r.eq(s));
        }
    }
    // Symmetry: groups of one shape are interchangeable, so order them by replica count.
    for g in 1..n_groups {
        if !params.symmetry || f.shapes[g] != f.shapes[g - 1] {
            continue;
        }
        let mut diff = Expression::with_capacity(in_group[g].len() + in_group[g - 1].len());
        for &k in &in_group[g - 1] {
            diff.add_mul(1.0, x[k]);
        }
        for &k in &in_group[g] {
            diff.add_mul(-1.0, x[k]);
        }
        problem.add_constraint(diff.geq(0.0));
    }

    // Columns in creation order: x, r, U, then σ of the models with requests.
    let start = start.map(|(chosen, (share, peak, _))| {
        let mut point: Vec<f64> = Vec::with_capacity(2 * n_pairs + f.n_models + 1);
        point.extend(chosen.iter().map(|&c| if c { 1.0 } else { 0.0 }));
        point.extend(share.iter().zip(&cap).map(|(s, c)| s.min(*c)));
        point.push(peak.max(u_bound));
        // σ of a model = the shares routed to it (0 for a model left without a replica).
        let mut sigma = vec![0.0f64; f.n_models];
        for (p, s) in f.pairs.iter().zip(&share) {
            sigma[p.model] += s;
        }
        point.extend(
            served
                .iter()
                .zip(&sigma)
                .filter(|(v, _)| v.is_some())
                .map(|(_, s)| s.min(1.0)),
        );
        point
    });
    let inc = highs::solve(problem, params.settings, start)?;
    let chosen: Vec<bool> = inc.values[..n_pairs]
        .iter()
        .map(|&v| highs::is_set(v))
        .collect();
    let share: Vec<f64> = inc.values[n_pairs..2 * n_pairs]
        .iter()
        .zip(&chosen)
        .map(|(&v, &c)| if c { v.clamp(0.0, 1.0) } else { 0.0 })
        .collect();
    let replicas = chosen.iter().filter(|&&c| c).count() as f64;
    let objective = match params.objective {
        Objective::Utilisation => f.peak_load(&share) + params.eps * replicas,
        Objective::Goodput { .. } => {
            let mut served = vec![0.0f64; f.n_models];
            for (p, s) in f.pairs.iter().zip(&share) {
                served[p.model] += s;
            }
            let frac: f64 = served
                .iter()
                .zip(&f.rates)
                .map(|(s, r)| s.min(1.0) * r / total_rate)
                .sum();
            frac - params.eps * replicas
        }
    };
    if let (Some(cut), true) = (params.settings.cutoff, util) {
        // HiGHS may hand back the start point although it does not beat the cutoff.
        if objective >= cut - 1e-9 * cut.abs().max(1.0) {
            return Err(match inc.status {
                SolveStatus::Optimal | SolveStatus::GapLimit => NoIncumbent::Infeasible,
                _ => NoIncumbent::Stopped { bound: inc.bound },
            });
        }
    }
    let placement = f.placement_of(&chosen);
    Ok(PartitionSolution {
        placement,
        chosen,
        share,
        objective,
        status: inc.status,
        gap: inc.gap,
        bound: inc.bound,
    })
}

/// Passes in a row without a better objective after which [`Formulation::local_search`] stops.
const STALE_PASSES: usize = 60;

/// Buffers of `Formulation::fill_at`, reused across the levels of a bisection.
#[derive(Default)]
struct FillScratch {
    used: Vec<f64>,
    load: Vec<Vec<f64>>,
    chosen: Vec<bool>,
}

/// Perturbed model orders [`Formulation::balanced`] tries after its fixed ones.
const JITTERED_ORDERS: usize = 128;

/// A deterministic hash of `x` into [0, 1) (splitmix64's finaliser).
fn unit_hash(x: u64) -> f64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}
