//! The executor's admission state machine: the simulator's [`Controller`] over every segment of a
//! plan, plus what only a real deployment needs (groups going down, bounded queues, measured stage
//! completions). Pure and synchronous: time is an argument, so tests drive it with a virtual clock
//! and must get exactly the simulator's decisions.

use plexserve_solver::sim::{Compiled, Controller, Decision};
use plexserve_solver::{Dispatch, Instance, Placement, Schedule};

use crate::error::{ExecutorError, Result};

/// Why a request was turned away at arrival.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    /// The chosen replica cannot finish within the SLO (HTTP 429).
    Deadline,
    /// No group of the current segment hosts the model (HTTP 503).
    NoReplica,
    /// Every group hosting the model is down (HTTP 503).
    GroupDown,
    /// The chosen group already holds its maximum of outstanding requests (HTTP 503).
    QueueFull,
    /// The server is draining (HTTP 503).
    ShuttingDown,
}

impl RejectReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::Deadline => "deadline",
            RejectReason::NoReplica => "no_replica",
            RejectReason::GroupDown => "group_down",
            RejectReason::QueueFull => "queue_full",
            RejectReason::ShuttingDown => "shutting_down",
        }
    }

    pub const ALL: [RejectReason; 5] = [
        RejectReason::Deadline,
        RejectReason::NoReplica,
        RejectReason::GroupDown,
        RejectReason::QueueFull,
        RejectReason::ShuttingDown,
    ];
}

/// The outcome of [`AdmissionCore::admit`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Admission {
    Admitted(Ticket),
    Rejected {
        reason: RejectReason,
        /// Global index (over all segments) of the group the request was routed to, if any.
        group: Option<usize>,
    },
}

/// An admitted request's place in the plan.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ticket {
    pub segment: usize,
    /// Group index within the segment.
    pub group: usize,
    /// Group index over all segments (segment 0's groups first), as in simulator reports.
    pub global_group: usize,
    pub replica: usize,
    pub arrival_s: f64,
    pub start_s: f64,
    /// Projected completion, overhead included.
    pub finish_s: f64,
    pub deadline_s: f64,
    /// Earliest time the group may start (its devices' work from an earlier segment).
    pub not_before_s: f64,
}

#[derive(Debug)]
struct SegmentState {
    start_s: f64,
    placement: Placement,
    compiled: Compiled,
    clocks: Vec<f64>,
    /// Profiled work committed to each (group, stage) and not yet finished, for reconciliation.
    pending_s: Vec<f64>,
    pending_n: Vec<u32>,
    /// Outstanding requests per group (admitted, not yet answered).
    inflight: Vec<u32>,
    ready_s: Vec<f64>,
    group_offset: usize,
}

/// Admission over a whole plan. Segment `k` owns the requests arriving at or after its start
/// (the simulator's default segment semantics), in plan time: clock time minus the workload epoch; a new group starts when its devices have finished
/// the work admitted to them before the switch.
#[derive(Debug)]
pub struct AdmissionCore {
    segments: Vec<SegmentState>,
    current: usize,
    slo_s: Vec<f64>,
    overhead_s: f64,
    slo_aware: bool,
    device_busy: Vec<f64>,
    device_down: Vec<bool>,
    max_inflight: u32,
    draining: bool,
    /// Clock time of plan time 0: segment `k` takes over at `epoch + start_s`. Set once, when the
    /// workload starts (see [`AdmissionCore::start_workload`]); 0 until then.
    epoch_s: Option<f64>,
}

/// Measurements closer than this to the projection are the projection (float summation order).
const RECONCILE_SLACK_S: f64 = 1e-9;

impl AdmissionCore {
    /// Builds the state for `schedule`; `max_inflight` bounds every group's outstanding requests.
    pub fn new(inst: &Instance, schedule: &Schedule, max_inflight: u32) -> Result<AdmissionCore> {
        let cfg = &inst.simulator;
        let slo_aware = match cfg.dispatch {
            Dispatch::EarliestLastStage => false,
            Dispatch::SloAware => true,
            other => {
                return Err(ExecutorError::Unsupported(format!(
                    "dispatch {other:?} has no arrival-time controller; use earliest_last_stage or slo_aware"
                )))
            }
        };
        if cfg.max_batch > 1 {
            return Err(ExecutorError::Unsupported(
                "batching (simulator.max_batch > 1) is not served yet".into(),
            ));
        }
        if schedule.segments.is_empty() {
            return Err(ExecutorError::Unsupported("the plan has no segment".into()));
        }
        let mut segments = Vec::with_capacity(schedule.segments.len());
        let mut offset = 0;
        for (start_s, placement) in &schedule.segments {
            let compiled = Compiled::new(inst, placement, 0, cfg.pp_penalty);
            let n = compiled.n_clocks();
            let g = placement.groups.len();
            segments.push(SegmentState {
                start_s: *start_s,
                placement: placement.clone(),
                compiled,
                clocks: vec![0.0; n],
                pending_s: vec![0.0; n],
                pending_n: vec![0; n],
                inflight: vec![0; g],
                ready_s: vec![0.0; g],
                group_offset: offset,
            });
            offset += g;
        }
        Ok(AdmissionCore {
            segments,
            current: 0,
            slo_s: inst.models.iter().map(|m| m.slo_s).collect(),
            overhead_s: cfg.overhead_s,
            slo_aware,
            device_busy: vec![0.0; inst.cluster.devices as usize],
            device_down: vec![false; inst.cluster.devices as usize],
            max_inflight: max_inflight.max(1),
            draining: false,
            epoch_s: None,
        })
    }

    /// Number of segments of the plan.
    pub fn n_segments(&self) -> usize {
        self.segments.len()
    }

    /// The placement and flattened latencies of segment `k`.
    pub fn segment(&self, k: usize) -> (&Placement, &Compiled) {
        (&self.segments[k].placement, &self.segments[k].compiled)
    }

    /// Global index of the first group of segment `k`.
    pub fn group_offset(&self, k: usize) -> usize {
        self.segments[k].group_offset
    }

    /// Total number of groups over all segments.
    pub fn n_groups_total(&self) -> usize {
        self.segments
            .last()
            .map_or(0, |s| s.group_offset + s.placement.groups.len())
    }

    /// SLO of model `m` in seconds.
    pub fn slo_s(&self, m: usize) -> f64 {
        self.slo_s[m]
    }

    /// The segment in force.
    pub fn current_segment(&self) -> usize {
        self.current
    }

    /// Pins plan time 0 to clock time `epoch_s`, so that a plan's segments switch at their start
    /// times counted from the start of the workload (its first arrival, or the start a load
    /// generator announces), not from whenever the server happened to start. Only the first call
    /// counts: the segment in force cannot be moved once requests were placed by it. Returns the
    /// epoch in force.
    pub fn start_workload(&mut self, epoch_s: f64) -> Result<f64, f64> {
        match self.epoch_s {
            Some(e) => Err(e),
            None => {
                self.epoch_s = Some(epoch_s);
                Ok(epoch_s)
            }
        }
    }

    /// Clock time of plan time 0, once the workload started.
    pub fn workload_epoch(&self) -> Option<f64> {
        self.epoch_s
    }

    /// Stops admitting; what was admitted still runs.
    pub fn start_draining(&mut self) {
        self.draining = true;
    }

    /// Outstanding requests over all groups.
    pub fn inflight(&self) -> u64 {
        self.segments
            .iter()
            .flat_map(|s| s.inflight.iter())
            .map(|&n| n as u64)
            .sum()
    }

    fn switch_to(&mut self, k: usize) {
        // The devices of the outgoing segment are busy until their last admitted stage finishes.
        let old = &self.segments[self.current];
        for (g, group) in old.placement.groups.iter().enumerate() {
            let last = old.compiled.group_clock[g + 1] as usize - 1;
            let busy = old.clocks[last];
            if busy.is_finite() {
                for &d in &group.devices {
                    let b = &mut self.device_busy[d as usize];
                    *b = b.max(busy);
                }
            }
        }
        self.current = k;
        let new = &mut self.segments[k];
        for (g, group) in new.placement.groups.iter().enumerate() {
            let ready = group
                .devices
                .iter()
                .map(|&d| self.device_busy[d as usize])
                .fold(0.0, f64::max);
            let range =
                new.compiled.group_clock[g] as usize..new.compiled.group_clock[g + 1] as usize;
            new.ready_s[g] = ready;
            if group.devices.iter().any(|&d| self.device_down[d as usize]) {
                new.clocks[range].fill(f64::INFINITY);
            } else {
                new.clocks[range].fill(ready);
            }
        }
    }

    /// Decides for a request of model `m` arriving at `now_s`; an admitted request is committed
    /// and counted as outstanding until [`AdmissionCore::finish`].
    pub fn admit(&mut self, now_s: f64, m: usize) -> Admission {
        if self.draining {
            return Admission::Rejected {
                reason: RejectReason::ShuttingDown,
                group: None,
            };
        }
        let plan_now_s = now_s - self.epoch_s.unwrap_or(0.0);
        let mut next = self.current;
        while next + 1 < self.segments.len() && self.segments[next + 1].start_s <= plan_now_s {
            next += 1;
        }
        if next != self.current {
            // Switch one segment at a time so device hand-over chains through skipped segments.
            for k in self.current + 1..=next {
                self.switch_to(k);
            }
        }
        let k = self.current;
        let seg = &mut self.segments[k];
        let mut ctl = Controller::new(
            &seg.compiled,
            &self.slo_s,
            self.overhead_s,
            self.slo_aware,
            &mut seg.clocks,
        );
        let d = ctl.decide(now_s, m);
        match d {
            Decision::NoReplica => Admission::Rejected {
                reason: RejectReason::NoReplica,
                group: None,
            },
            Decision::Reject { group, .. } => {
                let reason = if ctl.is_down(group) {
                    RejectReason::GroupDown
                } else {
                    RejectReason::Deadline
                };
                Admission::Rejected {
                    reason,
                    group: Some(seg.group_offset + group),
                }
            }
            Decision::Admit {
                group,
                replica,
                start_s,
                finish_s,
            } => {
                if seg.inflight[group] >= self.max_inflight {
                    return Admission::Rejected {
                        reason: RejectReason::QueueFull,
                        group: Some(seg.group_offset + group),
                    };
                }
                let committed = ctl.admit(now_s, m);
                debug_assert_eq!(committed, d);
                let c = &seg.compiled;
                let base = c.group_clock[group] as usize;
                let lat0 = c.rep_lat[replica] as usize;
                for s in 0..c.rep_pp[replica] as usize {
                    seg.pending_s[base + s] += c.lat[lat0 + s];
                    seg.pending_n[base + s] += 1;
                }
                seg.inflight[group] += 1;
                Admission::Admitted(Ticket {
                    segment: k,
                    group,
                    global_group: seg.group_offset + group,
                    replica,
                    arrival_s: now_s,
                    start_s,
                    finish_s,
                    deadline_s: now_s + self.slo_s[m],
                    not_before_s: seg.ready_s[group],
                })
            }
        }
    }

    /// Profiled (penalized) latency of stage `stage` of `replica` in segment `segment`.
    pub fn stage_latency_s(&self, segment: usize, replica: usize, stage: usize) -> f64 {
        let c = &self.segments[segment].compiled;
        c.lat[c.rep_lat[replica] as usize + stage]
    }

    /// A stage of an admitted request finished at `finish_s` (measured). The stage stays busy at
    /// least until then plus the profiled work still queued behind it; the controller's clock is
    /// pushed forward when that is later than it projected.
    pub fn stage_done(&mut self, t: &Ticket, stage: usize, finish_s: f64) {
        let seg = &mut self.segments[t.segment];
        let i = seg.compiled.group_clock[t.group] as usize + stage;
        let lat = seg.compiled.lat[seg.compiled.rep_lat[t.replica] as usize + stage];
        seg.pending_n[i] = seg.pending_n[i].saturating_sub(1);
        seg.pending_s[i] = if seg.pending_n[i] == 0 {
            0.0
        } else {
            (seg.pending_s[i] - lat).max(0.0)
        };
        let busy = finish_s + seg.pending_s[i];
        if busy > seg.clocks[i] + RECONCILE_SLACK_S {
            let mut ctl = Controller::new(
                &seg.compiled,
                &self.slo_s,
                self.overhead_s,
                self.slo_aware,
                &mut seg.clocks,
            );
            ctl.observe_busy_until(t.group, stage, busy);
        }
    }

    /// An admitted request was answered (or failed): it no longer counts against the queue bound.
    pub fn finish(&mut self, t: &Ticket) {
        let n = &mut self.segments[t.segment].inflight[t.group];
        *n = n.saturating_sub(1);
    }

    /// Stage work of a request that will never run (its group died): forget its pending work.
    pub fn abandon_stages(&mut self, t: &Ticket, from_stage: usize) {
        let seg = &mut self.segments[t.segment];
        let c = &seg.compiled;
        let base = c.group_clock[t.group] as usize;
        for s in from_stage..c.rep_pp[t.replica] as usize {
            let i = base + s;
            seg.pending_n[i] = seg.pending_n[i].saturating_sub(1);
            seg.pending_s[i] = if seg.pending_n[i] == 0 {
                0.0
            } else {
                (seg.pending_s[i] - c.lat[c.rep_lat[t.replica] as usize + s]).max(0.0)
            };
        }
    }

    /// Device `d` failed: every group using it, in every segment, stops being dispatched to.
    /// Returns the (segment, group) pairs taken down.
    pub fn device_down(&mut self, d: u32) -> Vec<(usize, usize)> {
        let mut hit = Vec::new();
        if let Some(flag) = self.device_down.get_mut(d as usize) {
            *flag = true;
        } else {
            return hit;
        }
        for (k, seg) in self.segments.iter_mut().enumerate() {
            for (g, group) in seg.placement.groups.iter().enumerate() {
                if group.devices.contains(&d) {
                    let range = seg.compiled.group_clock[g] as usize
                        ..seg.compiled.group_clock[g + 1] as usize;
                    seg.clocks[range].fill(f64::INFINITY);
                    hit.push((k, g));
                }
            }
        }
        hit
    }

    /// True when group `g` of segment `k` is down.
    pub fn is_down(&self, k: usize, g: usize) -> bool {
        let seg = &self.segments[k];
        seg.clocks[seg.compiled.group_clock[g] as usize].is_infinite()
    }
}
