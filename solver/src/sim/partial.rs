//! Model-by-model scoring, for searches that change a placement one replica at a time.
//!
//! Under the fast dispatch policies (`earliest_last_stage`, `slo_aware`, batch size 1) a request
//! reads and writes only the stage clocks of its own model's replicas. The models and groups of a
//! placement therefore fall into independent components (models joined by the groups they
//! share), and a request's outcome depends on the requests of its own component only. A search
//! that keeps per-model results can re-simulate, after a change, just the components the change
//! touched ([`affected_models`]) and reuse everything else.
//!
//! Sums are kept per model and added in model order, so a score is the same bits whether it was
//! computed incrementally or from scratch. Counts (and so attainment) equal
//! [`Simulator::evaluate`]'s exactly; its mean latency adds the same terms in arrival order
//! instead, so the two can differ in the last bits.

use std::ops::Range;

use crate::instance::Dispatch;
use crate::plan::Placement;

use super::compiled::MAX_TABLE_STAGES;
use super::{controller, warmup_skip, Compiled, Controller, Decision, DispatchTable, FastState};
use super::{Score, Simulator, NO_GROUP};

/// Marks a merge part that is a model's own list (see [`ModelView::gather`]).
const MODEL_PART: u32 = 1 << 31;

/// Label of a model outside the simulated components.
const NO_LABEL: u32 = u32::MAX;

/// Reused buffers of [`ModelView::simulate`], so that a search step allocates little.
#[derive(Debug, Default)]
pub struct ViewScratch {
    /// Per model: the lowest model id of its component, [`NO_LABEL`] when not simulated.
    label: Vec<u32>,
    /// Placement group of each group of the component being simulated.
    group_of: Vec<usize>,
    /// Per component root: whether the component has a group.
    placed: Vec<bool>,
    /// The requests of components simulated before, for reuse: a component's requests depend on
    /// its set of models only, and a search step changes one component, mostly by adding a
    /// model or joining two (merging their lists costs their length, not the view's).
    comps: Vec<Gathered>,
    /// Per model: the entry of `comps` holding its requests, or [`NO_LABEL`].
    comp_of: Vec<u32>,
    /// Entries of `comps` no model refers to any more.
    free: Vec<u32>,
    /// The models of the component being gathered, ascending.
    members: Vec<u32>,
    /// Scratch lists: the entries to merge, and positions being merged.
    parts: Vec<u32>,
    merged: Vec<u32>,
    table: DispatchTable,
    fast: FastState,
    zeros: Vec<f64>,
    clocks: Vec<f64>,
}

/// The requests of one component, in view order.
#[derive(Debug, Clone, Default)]
struct Gathered {
    /// The component's models, ascending.
    models: Vec<u32>,
    /// View positions of its requests, ascending, and their columns.
    pos: Vec<u32>,
    arrival: Vec<f64>,
    model: Vec<u32>,
    /// Requests before the trimmed range, and before its end.
    cut: [usize; 2],
}

/// The requests of some models of a trace, in arrival order, with the whole-trace totals a score
/// divides by. Requests of models outside the view are never simulated: they fail (no replica).
#[derive(Debug, Clone, Default)]
pub struct ModelView {
    arrival_s: Vec<f64>,
    model: Vec<u32>,
    /// View positions of the requests inside the warm-up trimmed range of the whole trace.
    kept: Range<usize>,
    in_view: Vec<bool>,
    /// Requests per model in the view (0 outside it).
    req_m: Vec<u64>,
    /// View positions of model `m`'s requests: `by_model[by_model_start[m]..by_model_start[m+1]]`.
    by_model_start: Vec<u32>,
    by_model: Vec<u32>,
    /// Whole trace: every request (AlpaServe's denominator) and the trimmed-range ones.
    requests_total: u64,
    kept_total: u64,
}

/// Per-model and per-group outcomes of the last simulation of every model.
///
/// A component's latency sum is kept on its lowest model id (see [`ModelView::simulate`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelStats {
    pub good_m: Vec<u64>,
    /// Good requests inside the warm-up trimmed range.
    pub good_kept_m: Vec<u64>,
    /// Σ (finish − arrival) over the good requests of the component whose lowest model id this
    /// is, in arrival order (0 for the component's other models).
    pub latency_sum_m: Vec<f64>,
    /// Requests dispatched to each group, rejected ones included.
    pub routed_g: Vec<u64>,
    pub good_g: Vec<u64>,
}

impl ModelStats {
    /// All zero for `n_models` models and `n_groups` groups.
    pub fn new(n_models: usize, n_groups: usize) -> ModelStats {
        ModelStats {
            good_m: vec![0; n_models],
            good_kept_m: vec![0; n_models],
            latency_sum_m: vec![0.0; n_models],
            routed_g: vec![0; n_groups],
            good_g: vec![0; n_groups],
        }
    }

    /// Renumbers the per-group entries after the groups were reordered: new group `i` is old
    /// group `old_of_new[i]`.
    pub fn permute_groups(&mut self, old_of_new: &[usize]) {
        let routed: Vec<u64> = old_of_new.iter().map(|&g| self.routed_g[g]).collect();
        let good: Vec<u64> = old_of_new.iter().map(|&g| self.good_g[g]).collect();
        self.routed_g = routed;
        self.good_g = good;
    }

    /// Copies model `m`'s entries from `other`.
    pub fn copy_model(&mut self, other: &ModelStats, m: usize) {
        self.good_m[m] = other.good_m[m];
        self.good_kept_m[m] = other.good_kept_m[m];
        self.latency_sum_m[m] = other.latency_sum_m[m];
    }
}

/// True when `sim` dispatches by one of the fast policies, whose components are independent.
/// The batching and jittered event variants share state across models (a global queue of
/// wake-ups, one jitter stream), so they must always be simulated whole.
pub fn supports_partial(sim: &Simulator) -> bool {
    matches!(
        sim.config.dispatch,
        Dispatch::EarliestLastStage | Dispatch::SloAware
    ) && sim.config.max_batch <= 1
}

impl ModelView {
    /// The requests of `models` in `sim`'s trace.
    pub fn new(sim: &Simulator, models: &[usize]) -> ModelView {
        let n_models = sim.inst.models.len();
        let mut in_view = vec![false; n_models];
        for &m in models {
            in_view[m] = true;
        }
        let trace = sim.trace;
        let skip = if sim.options.faithful_search_stats {
            0
        } else {
            warmup_skip(&trace.arrival_s, sim.config.warmup_s)
        };
        ModelView::from_columns(&trace.arrival_s, &trace.model, in_view, skip)
    }

    /// The requests of the models marked in `in_view` among the columns of a trace whose first
    /// and last `skip` requests lie outside the trimmed range.
    fn from_columns(arrival: &[f64], model: &[u32], in_view: Vec<bool>, skip: usize) -> ModelView {
        let n_models = in_view.len();
        let n = arrival.len();
        let mut view = ModelView {
            in_view,
            req_m: vec![0; n_models],
            requests_total: n as u64,
            kept_total: (n - 2 * skip) as u64,
            ..ModelView::default()
        };
        let mut kept_start = 0;
        for (i, (&t, &m)) in arrival.iter().zip(model).enumerate() {
            if i == skip {
                kept_start = view.model.len();
            }
            if i == n - skip {
                view.kept = kept_start..view.model.len();
            }
            if view.in_view[m as usize] {
                view.arrival_s.push(t);
                view.model.push(m);
                view.req_m[m as usize] += 1;
            }
        }
        if skip == 0 {
            view.kept = 0..view.model.len();
        }
        let mut start = 0u32;
        view.by_model_start.push(0);
        for &r in &view.req_m {
            start += r as u32;
            view.by_model_start.push(start);
        }
        let mut next: Vec<u32> = view.by_model_start[..n_models].to_vec();
        view.by_model.resize(view.model.len(), 0);
        for (i, &m) in view.model.iter().enumerate() {
            view.by_model[next[m as usize] as usize] = i as u32;
            next[m as usize] += 1;
        }
        view
    }

    /// Whether model `m`'s requests are in the view.
    pub fn contains(&self, m: usize) -> bool {
        self.in_view[m]
    }

    /// Requests per model (0 outside the view).
    pub fn requests_of(&self) -> &[u64] {
        &self.req_m
    }

    /// Requests of the view inside the warm-up trimmed range (those the fixed score counts).
    pub fn kept_len(&self) -> u64 {
        self.kept.len() as u64
    }

    /// Requests in the view.
    pub fn len(&self) -> usize {
        self.model.len()
    }

    pub fn is_empty(&self) -> bool {
        self.model.is_empty()
    }

    /// Re-simulates the requests of the `affected` models on `placement` and overwrites their
    /// entries (and those of the groups hosting them) in `stats`; returns the requests simulated.
    ///
    /// `affected` must be a union of components of `placement`: a group hosting an affected model
    /// hosts affected models only. Every placed model must be in the view.
    ///
    /// Each component runs on its own, on its requests only (gathered from the view), through
    /// the simulator's table loop where the dispatch policy allows. Its latency sum is the sum
    /// in arrival order over the component and is stored on its lowest model id (its other
    /// models hold 0): the same bits whichever way the component's outcomes were reached.
    pub fn simulate(
        &self,
        sim: &Simulator,
        placement: &Placement,
        affected: &[bool],
        stats: &mut ModelStats,
        scratch: &mut ViewScratch,
    ) -> u64 {
        let n_models = sim.inst.models.len();
        let n_groups = placement.groups.len();
        if stats.good_m.len() != n_models || stats.routed_g.len() != n_groups {
            *stats = ModelStats::new(n_models, n_groups);
        }
        // Component labels: the lowest model id of each affected model's component, joined
        // through the groups that host affected models.
        let label = &mut scratch.label;
        label.clear();
        label.extend((0..n_models).map(|m| if affected[m] { m as u32 } else { NO_LABEL }));
        let find = |label: &mut Vec<u32>, mut m: usize| {
            while label[m] as usize != m {
                let up = label[label[m] as usize];
                label[m] = up;
                m = up as usize;
            }
            m
        };
        let mut any_replica = false;
        for (g, group) in placement.groups.iter().enumerate() {
            let hit = group.models.iter().any(|&m| affected[m as usize]);
            debug_assert!(
                !hit || group.models.iter().all(|&m| affected[m as usize]),
                "affected models are a union of components"
            );
            if !hit {
                continue;
            }
            stats.routed_g[g] = 0;
            stats.good_g[g] = 0;
            any_replica = true;
            // Union by lower id: every root is its component's lowest model.
            let mut root = find(label, group.models[0] as usize);
            for &m in &group.models[1..] {
                let other = find(label, m as usize);
                let (lo, hi) = (root.min(other), root.max(other));
                label[hi] = lo as u32;
                root = lo;
            }
        }
        let mut requests = 0;
        for m in (0..n_models).filter(|&m| affected[m]) {
            debug_assert!(
                self.in_view[m] || self.req_m[m] == 0,
                "simulated models are in the view"
            );
            stats.good_m[m] = 0;
            stats.good_kept_m[m] = 0;
            stats.latency_sum_m[m] = 0.0;
            requests += self.req_m[m];
        }
        if !any_replica {
            // Every affected model is unplaced: all its requests fail, nothing to simulate.
            return 0;
        }
        for m in (0..n_models).filter(|&m| affected[m]) {
            let root = find(label, m);
            label[m] = root as u32;
        }
        // Components in order of their lowest model; an unplaced model's requests all fail.
        scratch.placed.clear();
        scratch.placed.resize(n_models, false);
        for group in placement.groups.iter().filter(|g| !g.models.is_empty()) {
            let m = group.models[0] as usize;
            if affected[m] {
                scratch.placed[scratch.label[m] as usize] = true;
            }
        }
        for root in 0..n_models {
            if !scratch.placed[root] {
                continue;
            }
            // The component's groups alone, in placement order (the dispatch tie-break only
            // compares their relative order): its table then has the component's own width and
            // stage count, which picks the specialised loops more often.
            scratch.group_of.clear();
            let mut own = Placement::default();
            for (g, group) in placement.groups.iter().enumerate() {
                if group
                    .models
                    .first()
                    .is_some_and(|&m| scratch.label[m as usize] == root as u32)
                {
                    scratch.group_of.push(g);
                    own.groups.push(group.clone());
                }
            }
            let c = Compiled::new(sim.inst, &own, 0, sim.config.pp_penalty);
            let table_loop = sim.config.dispatch == Dispatch::EarliestLastStage && {
                scratch.table.rebuild(&c, sim.slo_s());
                scratch.table.max_pp() <= MAX_TABLE_STAGES
            };
            let e = self.gather(root as u32, scratch);
            if table_loop {
                self.run_table(sim, &c, root, e, stats, scratch);
            } else {
                self.run_controller(sim, &c, root, e, stats, scratch);
            }
        }
        requests
    }

    /// Gathers the requests of component `root` (models labelled `root`) into an entry of
    /// `scratch.comps` and returns it: the entry of the same models when there is one, else the
    /// merge of the entries and per-model lists its models are in (entries of other sets of
    /// models are dropped), else a scan of the whole view, whichever reads less.
    fn gather(&self, root: u32, scratch: &mut ViewScratch) -> usize {
        let n_models = self.in_view.len();
        scratch.comp_of.resize(n_models, NO_LABEL);
        let label = &scratch.label;
        scratch.members.clear();
        scratch
            .members
            .extend((root..n_models as u32).filter(|&m| label[m as usize] == root));
        let e = scratch.comp_of[root as usize];
        if e != NO_LABEL && scratch.comps[e as usize].models == scratch.members {
            return e as usize;
        }
        // Parts: entries whose models all belong to the component (others are dropped), then
        // the models in none of them. A part is an entry index, or `MODEL_PART | m` for model
        // m's list.
        scratch.parts.clear();
        let mut merge_cost = 0usize;
        let mut largest = 0usize;
        for i in 0..scratch.members.len() {
            let m = scratch.members[i] as usize;
            let e = scratch.comp_of[m];
            if e == NO_LABEL {
                continue;
            }
            let entry = &scratch.comps[e as usize];
            if entry.models.iter().all(|&x| label[x as usize] == root) {
                if entry.models[0] as usize == m {
                    scratch.parts.push(e);
                    merge_cost += entry.pos.len();
                    largest = largest.max(entry.pos.len());
                }
            } else {
                for &x in &entry.models {
                    scratch.comp_of[x as usize] = NO_LABEL;
                }
                scratch.comps[e as usize] = Gathered::default();
                scratch.free.push(e);
            }
        }
        for &m in &scratch.members {
            if scratch.comp_of[m as usize] == NO_LABEL {
                let len = self.req_m[m as usize] as usize;
                scratch.parts.push(MODEL_PART | m);
                merge_cost += len;
                largest = largest.max(len);
            }
        }
        // Merging part after part into the largest reads every other part once and the growing
        // result once per part; the scan reads the view once.
        let k = scratch.parts.len();
        let merge_reads =
            merge_cost.saturating_mul(k.saturating_sub(1)) - largest * k.saturating_sub(2);
        let target = match scratch.free.pop() {
            Some(e) => e as usize,
            None => {
                scratch.comps.push(Gathered::default());
                scratch.comps.len() - 1
            }
        };
        let mut out = std::mem::take(&mut scratch.comps[target]);
        out.models.clear();
        out.models.extend_from_slice(&scratch.members);
        if k == 0 || merge_reads > self.model.len() {
            self.scan(root, &scratch.label, &mut scratch.merged, &mut out);
        } else {
            // Start from the largest part, so that the others are merged into it.
            let first = (0..k)
                .max_by_key(|&i| {
                    let len = self.part_positions(scratch.parts[i], &scratch.comps).len();
                    (len, std::cmp::Reverse(i))
                })
                .expect("k > 0");
            scratch.parts.swap(0, first);
            let big = scratch.parts[0];
            let small = match k {
                2 => self.part_positions(scratch.parts[1], &scratch.comps),
                _ => &[],
            };
            if k == 2 && big & MODEL_PART == 0 && small.len() * 16 <= largest {
                // A few requests join a large component (a model's first replica joins a
                // group): copy the component's columns in runs between them.
                self.insert_into(&scratch.comps[big as usize], small, &mut out);
            } else {
                out.pos.clear();
                out.pos
                    .extend_from_slice(self.part_positions(big, &scratch.comps));
                for i in 1..k {
                    let other = self.part_positions(scratch.parts[i], &scratch.comps);
                    merge_sorted(&out.pos, other, &mut scratch.merged);
                    std::mem::swap(&mut out.pos, &mut scratch.merged);
                }
                self.fill_columns(&mut out);
            }
            let kept = (self.kept.start as u32, self.kept.end as u32);
            out.cut = [
                out.pos.partition_point(|&i| i < kept.0),
                out.pos.partition_point(|&i| i < kept.1),
            ];
        }
        // The merged entries are subsumed by the new one.
        for &p in &scratch.parts[..k] {
            if p & MODEL_PART == 0 {
                scratch.comps[p as usize] = Gathered::default();
                scratch.free.push(p);
            }
        }
        for &m in &out.models {
            scratch.comp_of[m as usize] = target as u32;
        }
        scratch.comps[target] = out;
        target
    }

    /// The positions of a merge part: an entry of `comps`, or `MODEL_PART | m` for model m's.
    fn part_positions<'s>(&'s self, part: u32, comps: &'s [Gathered]) -> &'s [u32] {
        if part & MODEL_PART == 0 {
            &comps[part as usize].pos
        } else {
            let m = (part & !MODEL_PART) as usize;
            &self.by_model[self.by_model_start[m] as usize..self.by_model_start[m + 1] as usize]
        }
    }

    /// Fills `out` with the requests of the models labelled `root`, by one pass over the view
    /// (`buf` is scratch).
    fn scan(&self, root: u32, label: &[u32], buf: &mut Vec<u32>, out: &mut Gathered) {
        let n = self.model.len();
        buf.resize(n + 1, 0);
        let mut k = 0;
        let mut cut = [0; 2];
        // Branch-free compaction: every position is written, only the component's advance.
        for (j, range) in [0..self.kept.start, self.kept.clone(), self.kept.end..n]
            .into_iter()
            .enumerate()
        {
            for i in range {
                buf[k] = i as u32;
                k += usize::from(label[self.model[i] as usize] == root);
            }
            if j < 2 {
                cut[j] = k;
            }
        }
        out.pos.clear();
        out.pos.extend_from_slice(&buf[..k]);
        self.fill_columns(out);
        out.cut = cut;
    }

    /// Fills `out` with the requests of `big` and those at the view positions `small` (ascending,
    /// none of them in `big`), copying `big`'s columns in runs.
    fn insert_into(&self, big: &Gathered, small: &[u32], out: &mut Gathered) {
        out.pos.clear();
        out.arrival.clear();
        out.model.clear();
        let mut i = 0;
        for &p in small {
            let j = i + big.pos[i..].partition_point(|&x| x < p);
            out.pos.extend_from_slice(&big.pos[i..j]);
            out.arrival.extend_from_slice(&big.arrival[i..j]);
            out.model.extend_from_slice(&big.model[i..j]);
            out.pos.push(p);
            out.arrival.push(self.arrival_s[p as usize]);
            out.model.push(self.model[p as usize]);
            i = j;
        }
        out.pos.extend_from_slice(&big.pos[i..]);
        out.arrival.extend_from_slice(&big.arrival[i..]);
        out.model.extend_from_slice(&big.model[i..]);
    }

    /// Fills the arrival and model columns of `out` from its positions.
    fn fill_columns(&self, out: &mut Gathered) {
        out.arrival.clear();
        out.arrival
            .extend(out.pos.iter().map(|&i| self.arrival_s[i as usize]));
        out.model.clear();
        out.model
            .extend(out.pos.iter().map(|&i| self.model[i as usize]));
    }

    /// Simulates the gathered component `root` with the table loop and records its outcomes.
    fn run_table(
        &self,
        sim: &Simulator,
        c: &Compiled,
        root: usize,
        e: usize,
        stats: &mut ModelStats,
        scratch: &mut ViewScratch,
    ) {
        let tab = &scratch.table;
        let comp = &scratch.comps[e];
        let cut = comp.cut;
        let st = &mut scratch.fast;
        scratch.zeros.clear();
        scratch.zeros.resize(c.n_clocks(), 0.0);
        st.reset(tab, &scratch.zeros);
        st.latency_sum_good_s = 0.0;
        let width = tab.width;
        let n = comp.pos.len();
        for (j, (lo, hi)) in [(0, cut[0]), (cut[0], cut[1]), (cut[1], n)]
            .into_iter()
            .enumerate()
        {
            controller::admit_all(
                tab,
                &comp.arrival[lo..hi],
                &comp.model[lo..hi],
                sim.config.overhead_s,
                st,
                None,
            );
            // good_kept = good at the end of the trimmed range − good at its start (the
            // wrapping subtraction comes first and is undone by the addition).
            if j < 2 {
                for (s, (_, good)) in st.slot_counts().enumerate() {
                    let m = s / width;
                    if scratch.label[m] == root as u32 {
                        let kept = &mut stats.good_kept_m[m];
                        *kept = if j == 0 {
                            kept.wrapping_sub(good)
                        } else {
                            kept.wrapping_add(good)
                        };
                    }
                }
            }
        }
        for (s, (routed, good)) in st.slot_counts().enumerate() {
            let g = tab.group[s];
            if routed == 0 || g == NO_GROUP {
                continue;
            }
            let g = scratch.group_of[g as usize];
            stats.good_m[s / width] += good;
            stats.routed_g[g] += routed;
            stats.good_g[g] += good;
        }
        stats.latency_sum_m[root] = st.latency_sum_good_s;
    }

    /// Simulates the gathered component `root` one [`Controller::admit`] at a time (SLO-aware
    /// dispatch, pipelines deeper than the table loop takes) and records its outcomes.
    fn run_controller(
        &self,
        sim: &Simulator,
        c: &Compiled,
        root: usize,
        e: usize,
        stats: &mut ModelStats,
        scratch: &mut ViewScratch,
    ) {
        let comp = &scratch.comps[e];
        let cut = comp.cut;
        scratch.clocks.clear();
        scratch.clocks.resize(c.n_clocks(), 0.0);
        let mut ctl = Controller::new(
            c,
            sim.slo_s(),
            sim.config.overhead_s,
            sim.config.dispatch == Dispatch::SloAware,
            &mut scratch.clocks,
        );
        let n = comp.pos.len();
        let group_of = &scratch.group_of;
        let mut latency_sum = 0.0;
        for (lo, hi, kept) in [
            (0, cut[0], false),
            (cut[0], cut[1], true),
            (cut[1], n, false),
        ] {
            let arrival = &comp.arrival[lo..hi];
            let model = &comp.model[lo..hi];
            for (&t, &m) in arrival.iter().zip(model) {
                let m = m as usize;
                match ctl.admit(t, m) {
                    Decision::NoReplica => {}
                    Decision::Admit {
                        group, finish_s, ..
                    } => {
                        let group = group_of[group];
                        stats.routed_g[group] += 1;
                        stats.good_g[group] += 1;
                        stats.good_m[m] += 1;
                        stats.good_kept_m[m] += kept as u64;
                        latency_sum += finish_s - t;
                    }
                    Decision::Reject { group, .. } => stats.routed_g[group_of[group]] += 1,
                }
            }
        }
        stats.latency_sum_m[root] = latency_sum;
    }

    /// Simulates every model of the view on `placement` from scratch.
    pub fn simulate_all(
        &self,
        sim: &Simulator,
        placement: &Placement,
        stats: &mut ModelStats,
        scratch: &mut ViewScratch,
    ) -> u64 {
        let mut affected = self.in_view.clone();
        for g in &placement.groups {
            for &m in &g.models {
                affected[m as usize] = true;
            }
        }
        self.simulate(sim, placement, &affected, stats, scratch)
    }

    /// The search score of `stats` for a placement with `replicas` replicas: the same definition
    /// as [`Simulator::evaluate`] (faithful or fixed search statistics).
    pub fn score(&self, sim: &Simulator, stats: &ModelStats, replicas: usize) -> Score {
        let good: u64 = stats.good_m.iter().sum();
        let latency_sum: f64 = stats.latency_sum_m.iter().sum();
        if sim.options.faithful_search_stats {
            let attainment = if self.requests_total == 0 {
                0.0
            } else {
                good as f64 / self.requests_total as f64
            };
            return Score::new(
                attainment,
                latency_sum / self.requests_total.max(1) as f64,
                replicas,
            );
        }
        let good_kept: u64 = stats.good_kept_m.iter().sum();
        let attainment = if self.kept_total == 0 {
            0.0
        } else {
            good_kept as f64 / self.kept_total as f64
        };
        Score::new(attainment, latency_sum / good.max(1) as f64, replicas).lexicographic()
    }

    /// Whether every request of the view is good.
    pub fn all_good(&self, stats: &ModelStats) -> bool {
        (0..self.in_view.len())
            .filter(|&m| self.in_view[m])
            .all(|m| stats.good_m[m] == self.req_m[m])
    }
}

/// Marks in `affected` every model connected to `seed_models` or `seed_groups` of `placement`
/// (models joined by the groups they share), and returns how many it marked. A change confined
/// to these models and groups leaves every other model's outcomes as they were.
pub fn affected_models(
    placement: &Placement,
    seed_groups: &[usize],
    seed_models: &[usize],
    affected: &mut Vec<bool>,
    n_models: usize,
) -> usize {
    affected.clear();
    affected.resize(n_models, false);
    let n_groups = placement.groups.len();
    let mut group_seen = vec![false; n_groups];
    let mut stack: Vec<usize> = Vec::new();
    let mut marked = 0;
    let mut mark = |m: usize, affected: &mut Vec<bool>, stack: &mut Vec<usize>| {
        if !affected[m] {
            affected[m] = true;
            marked += 1;
            stack.push(m);
        }
    };
    for &g in seed_groups {
        if !group_seen[g] {
            group_seen[g] = true;
            for &m in &placement.groups[g].models {
                mark(m as usize, affected, &mut stack);
            }
        }
    }
    for &m in seed_models {
        mark(m, affected, &mut stack);
    }
    while let Some(m) = stack.pop() {
        for (g, group) in placement.groups.iter().enumerate() {
            if !group_seen[g] && group.models.contains(&(m as u32)) {
                group_seen[g] = true;
                for &x in &group.models {
                    mark(x as usize, affected, &mut stack);
                }
            }
        }
    }
    marked
}

/// Merges two ascending lists of distinct positions into `out`, without a branch per element
/// (which list the next position comes from is as good as random).
fn merge_sorted(a: &[u32], b: &[u32], out: &mut Vec<u32>) {
    out.clear();
    out.resize(a.len() + b.len(), 0);
    let (mut i, mut j, mut k) = (0, 0, 0);
    while i < a.len() && j < b.len() {
        let (x, y) = (a[i], b[j]);
        let take_a = x < y;
        out[k] = if take_a { x } else { y };
        i += usize::from(take_a);
        j += usize::from(!take_a);
        k += 1;
    }
    out[k..k + a.len() - i].copy_from_slice(&a[i..]);
    k += a.len() - i;
    out[k..k + b.len() - j].copy_from_slice(&b[j..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// Gathers through the cache (exact reuse, merges, runs copied around a few insertions,
    /// entries dropped when components split) give the same requests as a fresh scan of the
    /// view, however the components evolve.
    #[test]
    fn cached_gathers_equal_a_fresh_scan() {
        for case in 0..60u64 {
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(case);
            let n_models = rng.random_range(1..10usize);
            let n = rng.random_range(0..4000usize);
            // Model 0 is busy and the others rare, so that small parts join large ones.
            let mut t = 0.0;
            let (mut arrival, mut model) = (Vec::new(), Vec::new());
            for _ in 0..n {
                t += rng.random_range(0.0..0.01);
                arrival.push(t);
                let m = if rng.random_bool(0.7) {
                    0
                } else {
                    rng.random_range(0..n_models as u32)
                };
                model.push(m);
            }
            let in_view: Vec<bool> = (0..n_models).map(|_| rng.random_bool(0.9)).collect();
            let skip = rng.random_range(0..=n / 3);
            let view = ModelView::from_columns(&arrival, &model, in_view, skip);
            let mut scratch = ViewScratch::default();
            // Every model has a colour (its component) or none (not simulated).
            let mut colour: Vec<Option<usize>> = (0..n_models)
                .map(|_| rng.random_bool(0.8).then(|| rng.random_range(0..4)))
                .collect();
            let mut buf = Vec::new();
            for step in 0..40 {
                match rng.random_range(0..10) {
                    0..=4 => {
                        // Two components join.
                        let (a, b) = (rng.random_range(0..4), rng.random_range(0..4));
                        for c in colour.iter_mut().filter(|c| **c == Some(a)) {
                            *c = Some(b);
                        }
                    }
                    5..=7 => colour[rng.random_range(0..n_models)] = Some(rng.random_range(0..4)),
                    _ => colour[rng.random_range(0..n_models)] = None,
                }
                scratch.label.clear();
                scratch.label.resize(n_models, NO_LABEL);
                for m in 0..n_models {
                    if let Some(c) = colour[m] {
                        let root = (0..n_models).find(|&x| colour[x] == Some(c)).unwrap();
                        scratch.label[m] = root as u32;
                    }
                }
                for root in 0..n_models {
                    if scratch.label[root] != root as u32 {
                        continue;
                    }
                    let e = view.gather(root as u32, &mut scratch);
                    let mut want = Gathered::default();
                    view.scan(root as u32, &scratch.label, &mut buf, &mut want);
                    let got = &scratch.comps[e];
                    let ctx = format!("case {case} step {step} root {root}");
                    assert_eq!(got.pos, want.pos, "{ctx}");
                    assert_eq!(got.model, want.model, "{ctx}");
                    assert_eq!(got.arrival, want.arrival, "{ctx}");
                    assert_eq!(got.cut, want.cut, "{ctx}");
                    let members: Vec<u32> = (0..n_models as u32)
                        .filter(|&m| scratch.label[m as usize] == root as u32)
                        .collect();
                    assert_eq!(got.models, members, "{ctx}");
                }
            }
        }
    }
}
