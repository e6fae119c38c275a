//! The request-level simulator (alpaserve-semantics.md §1).
//!
//! [`Simulator`] binds an instance and a trace; [`Simulator::evaluate`] scores a placement for a
//! search (no trimming, counters only, allocation-free per request) and [`Simulator::run`] gives the
//! full report of a multi-segment plan (warm-up trimming, percentiles, optional per-request rows).
//!
//! Semantics of the default mode (`earliest_last_stage`): every group is a chain of per-stage FIFO
//! servers; a request goes to the replica whose last stage frees first (lowest group index on
//! ties), is rejected at arrival iff its projected finish − arrival exceeds the SLO (equality is
//! good), and rejected work costs nothing.

mod batching;
mod compiled;
mod controller;
mod event;
mod partial;
mod report;

use serde::{Deserialize, Serialize};

use crate::instance::{Dispatch, Instance, SimulatorConfig};
use crate::plan::{Placement, Schedule};
use crate::workload::Trace;

pub use compiled::{Compiled, DispatchTable};
pub use controller::{Controller, Decision, FastState};
pub use partial::{affected_models, supports_partial, ModelStats, ModelView, ViewScratch};
pub use report::{
    csv_field, request_rows, warmup_skip, write_requests_csv, GroupReport, LatencySummary,
    ModelReport, RequestRow, SimReport, SIM_SCHEMA,
};

/// Marker for "no group" in per-request outcomes.
pub const NO_GROUP: u32 = u32::MAX;

/// Options that change simulator semantics beyond the instance's `simulator` block.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimOptions {
    /// AlpaServe's Clockwork++ segment semantics: every segment restarts from idle groups and the
    /// request arriving exactly at a segment start still belongs to the previous segment. Off:
    /// a segment owns the requests arriving at or after its start, and each new group starts when
    /// all its devices have finished the work admitted before the switch.
    #[serde(default)]
    pub faithful_segments: bool,
    /// AlpaServe's search statistics: untrimmed attainment, a mean latency that counts rejected
    /// requests as 0 s, and the weighted score `attainment − latency/10^4 + replicas/10^6`.
    /// Off: the warm-up trimmed attainment that `simulate` reports, the mean latency of good
    /// requests, compared lexicographically (attainment, then latency, then replicas), so a
    /// better score always means a better reported attainment or an exact tie.
    #[serde(default)]
    pub faithful_search_stats: bool,
    /// AlpaServe's batching quirks (§1.3): overhead before the first stage but checked after the
    /// last, no re-check of batch members, and a stalled wake-up loop.
    #[serde(default)]
    pub faithful_batching: bool,
}

/// Counters of one simulation, enough for the search score.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counters {
    pub req_m: Vec<u64>,
    pub good_m: Vec<u64>,
    /// Requests dispatched to each group, rejected ones included.
    pub routed_g: Vec<u64>,
    pub good_g: Vec<u64>,
    /// Σ (finish − arrival) over good requests.
    pub latency_sum_good_s: f64,
}

impl Counters {
    fn reset(&mut self, n_models: usize, n_groups: usize) {
        self.req_m.clear();
        self.req_m.resize(n_models, 0);
        self.good_m.clear();
        self.good_m.resize(n_models, 0);
        self.routed_g.clear();
        self.routed_g.resize(n_groups, 0);
        self.good_g.clear();
        self.good_g.resize(n_groups, 0);
        self.latency_sum_good_s = 0.0;
    }

    pub fn requests(&self) -> u64 {
        self.req_m.iter().sum()
    }

    pub fn good(&self) -> u64 {
        self.good_m.iter().sum()
    }

    /// Fraction of requests served within their SLO (0 for an empty trace).
    pub fn attainment(&self) -> f64 {
        let n = self.requests();
        if n == 0 {
            0.0
        } else {
            self.good() as f64 / n as f64
        }
    }

    /// Per-model attainment `good_m / (req_m + 1e-6)` as in AlpaServe's search stats.
    pub fn model_attainment(&self, m: usize) -> f64 {
        self.good_m[m] as f64 / (self.req_m[m] as f64 + 1e-6)
    }
}

/// Per-request outcome columns (only filled by detailed runs).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcomes {
    pub group: Vec<u32>,
    pub start_s: Vec<f64>,
    pub finish_s: Vec<f64>,
    pub good: Vec<bool>,
    /// Admitted but finished after the deadline (possible only with jittered dispatch).
    pub late: Vec<bool>,
}

impl Outcomes {
    fn with_len(n: usize) -> Outcomes {
        Outcomes {
            group: vec![NO_GROUP; n],
            start_s: vec![0.0; n],
            finish_s: vec![0.0; n],
            good: vec![false; n],
            late: vec![false; n],
        }
    }
}

/// The search objective: attainment, then lower mean latency, then more replicas.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Score {
    pub attainment: f64,
    pub mean_latency_s: f64,
    pub replicas: usize,
    pub value: f64,
    /// Compare (attainment, −latency, replicas) lexicographically instead of by `value`.
    pub lexicographic: bool,
}

impl Score {
    /// `attainment − mean_latency/10^4 + replicas/10^6` (alpaserve-semantics.md §1.2).
    pub fn new(attainment: f64, mean_latency_s: f64, replicas: usize) -> Score {
        Score {
            attainment,
            mean_latency_s,
            replicas,
            value: attainment - mean_latency_s / 1e4 + replicas as f64 / 1e6,
            lexicographic: false,
        }
    }

    /// The same score compared lexicographically.
    pub fn lexicographic(mut self) -> Score {
        self.lexicographic = true;
        self
    }

    /// The worst possible score.
    pub fn worst() -> Score {
        Score {
            attainment: 0.0,
            mean_latency_s: 0.0,
            replicas: 0,
            value: f64::NEG_INFINITY,
            lexicographic: false,
        }
    }

    /// Strictly better (a tie keeps the incumbent, so earlier candidates win ties).
    pub fn beats(&self, other: &Score) -> bool {
        if other.value.is_infinite() && other.value < 0.0 {
            return self.value > other.value;
        }
        if self.lexicographic || other.lexicographic {
            use std::cmp::Ordering::*;
            match self.attainment.total_cmp(&other.attainment) {
                Greater => true,
                Less => false,
                Equal => match other.mean_latency_s.total_cmp(&self.mean_latency_s) {
                    Greater => true,
                    Less => false,
                    Equal => self.replicas > other.replicas,
                },
            }
        } else {
            self.value > other.value
        }
    }

    /// At least as good: `other` does not beat it.
    pub fn at_least(&self, other: &Score) -> bool {
        !other.beats(self)
    }
}

/// An instance and a trace, ready to score placements. Cheap to share across threads.
#[derive(Debug, Clone)]
pub struct Simulator<'a> {
    pub inst: &'a Instance,
    pub trace: &'a Trace,
    pub config: SimulatorConfig,
    pub options: SimOptions,
    slo_s: Vec<f64>,
}

/// Reusable buffers so that repeated evaluations allocate nothing per request.
#[derive(Debug, Default)]
pub struct Scratch {
    pub clocks: Vec<f64>,
    pub tmp: Vec<f64>,
    pub counters: Counters,
    /// The fast loop's dispatch table and packed counters.
    pub table: DispatchTable,
    pub fast: FastState,
}

impl<'a> Simulator<'a> {
    pub fn new(inst: &'a Instance, trace: &'a Trace) -> Simulator<'a> {
        Simulator {
            inst,
            trace,
            config: inst.simulator.clone(),
            options: SimOptions::default(),
            slo_s: inst.models.iter().map(|m| m.slo_s).collect(),
        }
    }

    pub fn with_options(mut self, options: SimOptions) -> Self {
        self.options = options;
        self
    }

    pub fn with_config(mut self, config: SimulatorConfig) -> Self {
        self.config = config;
        self
    }

    /// SLO of every model in seconds.
    pub fn slo_s(&self) -> &[f64] {
        &self.slo_s
    }

    /// Scores a static placement on the whole trace (search stats: no trimming).
    pub fn evaluate(&self, placement: &Placement, scratch: &mut Scratch) -> Score {
        self.evaluate_range(placement, 0..self.trace.len(), scratch)
    }

    /// Scores a static placement on the requests `range` of the trace.
    pub fn evaluate_range(
        &self,
        placement: &Placement,
        range: std::ops::Range<usize>,
        scratch: &mut Scratch,
    ) -> Score {
        let c = Compiled::new(self.inst, placement, self.batch1(), self.config.pp_penalty);
        scratch
            .counters
            .reset(self.inst.models.len(), placement.groups.len());
        scratch.clocks.clear();
        scratch.clocks.resize(c.n_clocks(), 0.0);
        let arrival = &self.trace.arrival_s[range.clone()];
        let model = &self.trace.model[range];
        let n = arrival.len();
        let faithful = self.options.faithful_search_stats;
        let skip = if faithful {
            0
        } else {
            warmup_skip(arrival, self.config.warmup_s)
        };
        let mut latency_sum_all = 0.0;
        // Good requests inside the reported (trimmed) range.
        let good_kept;
        match self.config.dispatch {
            Dispatch::EarliestLastStage
                if self.config.max_batch <= 1 && {
                    scratch.table.rebuild(&c, &self.slo_s);
                    scratch.table.max_pp() <= compiled::MAX_TABLE_STAGES
                } =>
            {
                // Three runs over consecutive slices with shared state are one run; the admitted
                // counts between them give the trimmed count at no per-request cost.
                let (table, st) = (&scratch.table, &mut scratch.fast);
                st.reset(table, &scratch.clocks);
                st.latency_sum_good_s = 0.0;
                let mut good_at = [0u64; 2];
                for (j, (lo, hi)) in [(0, skip), (skip, n - skip), (n - skip, n)]
                    .into_iter()
                    .enumerate()
                {
                    controller::admit_all(
                        table,
                        &arrival[lo..hi],
                        &model[lo..hi],
                        self.config.overhead_s,
                        st,
                        None,
                    );
                    if j < 2 && skip > 0 {
                        good_at[j] = st.good();
                    }
                }
                add_slot_counts(table, st, &mut scratch.counters);
                good_kept = if skip > 0 {
                    good_at[1] - good_at[0]
                } else {
                    scratch.counters.good()
                };
            }
            Dispatch::EarliestLastStage | Dispatch::SloAware if self.config.max_batch <= 1 => {
                // Three runs over consecutive slices with shared clocks are one run; the
                // counters between them give the trimmed count at no per-request cost.
                let mut good_before = 0;
                for (j, (lo, hi)) in [(0, skip), (skip, n - skip), (n - skip, n)]
                    .into_iter()
                    .enumerate()
                {
                    run_fast(
                        &c,
                        &arrival[lo..hi],
                        &model[lo..hi],
                        &self.slo_s,
                        self.config.overhead_s,
                        self.config.dispatch == Dispatch::SloAware,
                        &mut scratch.clocks,
                        &mut scratch.tmp,
                        &mut scratch.counters,
                        None,
                    );
                    if j == 0 {
                        good_before = scratch.counters.good();
                    }
                    if j == 1 {
                        good_before = scratch.counters.good() - good_before;
                    }
                }
                good_kept = good_before;
            }
            _ => {
                let mut out = Outcomes::with_len(n);
                self.run_variant(&c, arrival, model, &mut scratch.counters, &mut out);
                latency_sum_all = (0..n)
                    .filter(|&i| out.good[i] || out.late[i])
                    .map(|i| out.finish_s[i] - arrival[i])
                    .sum();
                good_kept = out.good[skip..n - skip].iter().filter(|&&g| g).count() as u64;
            }
        }
        let k = &scratch.counters;
        let requests = k.requests();
        if faithful {
            let lat = if latency_sum_all > 0.0 {
                latency_sum_all
            } else {
                k.latency_sum_good_s
            };
            return Score::new(
                k.attainment(),
                lat / requests.max(1) as f64,
                placement.replicas(),
            );
        }
        let kept = (n - 2 * skip) as u64;
        let attainment = if kept == 0 {
            0.0
        } else {
            good_kept as f64 / kept as f64
        };
        let mean_latency = k.latency_sum_good_s / k.good().max(1) as f64;
        Score::new(attainment, mean_latency, placement.replicas()).lexicographic()
    }

    fn batch1(&self) -> usize {
        // Placement is always scored at batch size 1; the batching variant picks its own rows.
        0
    }

    /// Non-fast variants (batching, jittered shortest-queue dispatch) on one segment.
    fn run_variant(
        &self,
        c: &Compiled,
        arrival: &[f64],
        model: &[u32],
        counters: &mut Counters,
        out: &mut Outcomes,
    ) {
        if self.config.max_batch > 1 {
            batching::run(self, c, arrival, model, counters, out);
        } else {
            event::run(self, c, arrival, model, counters, out);
        }
    }

    /// Simulates a (possibly multi-segment) plan on the whole trace and keeps per-request outcomes.
    pub fn run(&self, schedule: &Schedule) -> (Counters, Outcomes) {
        let n = self.trace.len();
        let mut out = Outcomes::with_len(n);
        let mut total = Counters::default();
        total.reset(self.inst.models.len(), 0);
        let mut counters = Counters::default();
        let mut clocks = Vec::new();
        let mut tmp = Vec::new();
        // Busy-until time of every device, carried across segments (non-faithful mode).
        let mut device_busy = vec![0.0f64; self.inst.cluster.devices as usize];
        let mut group_offset = 0usize;
        for (k, (start, placement)) in schedule.segments.iter().enumerate() {
            let begin = self.segment_begin(k, *start);
            let end = match schedule.segments.get(k + 1) {
                Some((next, _)) => self.segment_begin(k + 1, *next),
                None => n,
            };
            let (begin, end) = (begin.min(n), end.min(n).max(begin.min(n)));
            let c = Compiled::new(self.inst, placement, self.batch1(), self.config.pp_penalty);
            counters.reset(self.inst.models.len(), placement.groups.len());
            clocks.clear();
            clocks.resize(c.n_clocks(), 0.0);
            if !self.options.faithful_segments {
                for (g, group) in placement.groups.iter().enumerate() {
                    let ready = group
                        .devices
                        .iter()
                        .map(|&d| device_busy.get(d as usize).copied().unwrap_or(0.0))
                        .fold(0.0, f64::max);
                    let range = c.group_clock[g] as usize..c.group_clock[g + 1] as usize;
                    clocks[range].fill(ready);
                }
            }
            let arrival = &self.trace.arrival_s[begin..end];
            let model = &self.trace.model[begin..end];
            let mut seg_out = Outcomes::with_len(end - begin);
            match self.config.dispatch {
                Dispatch::EarliestLastStage | Dispatch::SloAware if self.config.max_batch <= 1 => {
                    run_fast(
                        &c,
                        arrival,
                        model,
                        &self.slo_s,
                        self.config.overhead_s,
                        self.config.dispatch == Dispatch::SloAware,
                        &mut clocks,
                        &mut tmp,
                        &mut counters,
                        Some(&mut seg_out),
                    );
                }
                _ => self.run_variant(&c, arrival, model, &mut counters, &mut seg_out),
            }
            // Device busy-until after this segment: the latest finish of any work admitted on it.
            for (i, &g) in seg_out.group.iter().enumerate() {
                if g != NO_GROUP && (seg_out.good[i] || seg_out.late[i]) {
                    for &d in &placement.groups[g as usize].devices {
                        let busy = &mut device_busy[d as usize];
                        *busy = busy.max(seg_out.finish_s[i] - self.config.overhead_s);
                    }
                }
            }
            for i in 0..end - begin {
                let j = begin + i;
                out.group[j] = match seg_out.group[i] {
                    NO_GROUP => NO_GROUP,
                    g => g + group_offset as u32,
                };
                out.start_s[j] = seg_out.start_s[i];
                out.finish_s[j] = seg_out.finish_s[i];
                out.good[j] = seg_out.good[i];
                out.late[j] = seg_out.late[i];
            }
            for m in 0..self.inst.models.len() {
                total.req_m[m] += counters.req_m[m];
                total.good_m[m] += counters.good_m[m];
            }
            total.routed_g.extend_from_slice(&counters.routed_g);
            total.good_g.extend_from_slice(&counters.good_g);
            total.latency_sum_good_s += counters.latency_sum_good_s;
            group_offset += placement.groups.len();
        }
        (total, out)
    }

    /// Index of the first request of segment `k` starting at `start`.
    fn segment_begin(&self, k: usize, start: f64) -> usize {
        if k == 0 {
            return 0;
        }
        let a = &self.trace.arrival_s;
        if self.options.faithful_segments {
            a.partition_point(|&t| t <= start)
        } else {
            a.partition_point(|&t| t < start)
        }
    }

    /// Full report of a plan: warm-up trimmed statistics (contract.md §4).
    pub fn report(&self, schedule: &Schedule) -> (SimReport, Outcomes) {
        let (_, out) = self.run(schedule);
        let report = report::build(self, schedule, &out);
        (report, out)
    }
}

/// AlpaServe's fast simulation loop (alpaserve-semantics.md §1.1), optionally SLO-aware.
///
/// Every decision is the shared [`Controller`]'s (the executor admits with the same code): the
/// earliest-last-stage mode runs `controller::admit_all`, its batched form, which
/// `tests/sim.rs` checks decision by decision against a plain transcription of §1.1.
/// `clocks` holds every group's stage clocks; `tmp` is kept for callers' scratch reuse.
/// Counters are added to `k`.
#[allow(clippy::too_many_arguments)]
#[inline]
pub fn run_fast(
    c: &Compiled,
    arrival: &[f64],
    model: &[u32],
    slo_s: &[f64],
    overhead_s: f64,
    slo_aware: bool,
    clocks: &mut [f64],
    tmp: &mut Vec<f64>,
    k: &mut Counters,
    out: Option<&mut Outcomes>,
) {
    let _ = tmp;
    if !slo_aware {
        let mut table = DispatchTable::default();
        table.rebuild(c, slo_s);
        if table.max_pp() <= compiled::MAX_TABLE_STAGES {
            let mut st = FastState::default();
            st.reset(&table, clocks);
            st.latency_sum_good_s = k.latency_sum_good_s;
            controller::admit_all(&table, arrival, model, overhead_s, &mut st, out);
            st.copy_clocks(&table, clocks);
            add_slot_counts(&table, &st, k);
            return;
        }
    }
    run_controller(
        c, arrival, model, slo_s, overhead_s, slo_aware, clocks, k, out,
    );
}

/// Adds the per-slot counts of the table loop to the per-model and per-group counters.
fn add_slot_counts(table: &DispatchTable, st: &FastState, k: &mut Counters) {
    for (s, (routed, good)) in st.slot_counts().enumerate() {
        let m = s / table.width;
        k.req_m[m] += routed;
        k.good_m[m] += good;
        let g = table.group[s];
        if g != NO_GROUP {
            k.routed_g[g as usize] += routed;
            k.good_g[g as usize] += good;
        }
    }
    k.latency_sum_good_s = st.latency_sum_good_s;
}

/// One [`Controller::admit`] per request: the SLO-aware mode, and pipelines deeper than the
/// table loop takes.
#[allow(clippy::too_many_arguments)]
fn run_controller(
    c: &Compiled,
    arrival: &[f64],
    model: &[u32],
    slo_s: &[f64],
    overhead_s: f64,
    slo_aware: bool,
    clocks: &mut [f64],
    k: &mut Counters,
    mut out: Option<&mut Outcomes>,
) {
    let mut ctl = Controller::new(c, slo_s, overhead_s, slo_aware, clocks);
    for (i, (&t, &m)) in arrival.iter().zip(model).enumerate() {
        let m = m as usize;
        k.req_m[m] += 1;
        match ctl.admit(t, m) {
            Decision::NoReplica => {
                if let Some(o) = out.as_deref_mut() {
                    o.finish_s[i] = t;
                }
            }
            Decision::Admit {
                group: g,
                start_s,
                finish_s,
                ..
            } => {
                k.routed_g[g] += 1;
                k.good_m[m] += 1;
                k.good_g[g] += 1;
                k.latency_sum_good_s += finish_s - t;
                if let Some(o) = out.as_deref_mut() {
                    o.group[i] = g as u32;
                    o.good[i] = true;
                    o.start_s[i] = start_s;
                    o.finish_s[i] = finish_s;
                }
            }
            Decision::Reject { group: g, .. } => {
                k.routed_g[g] += 1;
                if let Some(o) = out.as_deref_mut() {
                    // Rejected at arrival: the group it was routed to is kept for per-group counts.
                    o.group[i] = g as u32;
                    o.good[i] = false;
                    o.start_s[i] = t;
                    o.finish_s[i] = t;
                }
            }
        }
    }
}
