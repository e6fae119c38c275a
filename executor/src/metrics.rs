//! Counters and latency histograms, rendered in the Prometheus text format.

use std::fmt::Write;
use std::sync::Mutex;

use crate::core::RejectReason;

/// Upper bounds (seconds) of the latency histogram buckets; `+Inf` is implicit.
pub const LATENCY_BUCKETS_S: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

#[derive(Debug, Default, Clone)]
struct ModelStats {
    requests: u64,
    admitted: u64,
    rejected: [u64; RejectReason::ALL.len()],
    completed: u64,
    good: u64,
    late: u64,
    failed: u64,
    buckets: [u64; LATENCY_BUCKETS_S.len() + 1],
    latency_sum_s: f64,
}

#[derive(Debug, Default, Clone)]
struct GroupStats {
    routed: u64,
    admitted: u64,
    completed: u64,
    failed: u64,
    down: bool,
    stages: u64,
    stage_overruns: u64,
    stage_busy_s: f64,
    stage_profiled_s: f64,
    stage_max_overrun_s: f64,
}

#[derive(Debug, Default)]
struct Data {
    models: Vec<ModelStats>,
    groups: Vec<GroupStats>,
    bad_requests: u64,
}

/// Everything `/metrics` reports. One lock: updates are a few integer adds per request.
#[derive(Debug)]
pub struct Metrics {
    model_names: Vec<String>,
    data: Mutex<Data>,
}

/// Stage executions over all groups: how the devices kept to their profile.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct StageCounts {
    /// Stages executed.
    pub stages: u64,
    /// Stages that took longer than profiled (each one pushed admission's clocks forward).
    pub overruns: u64,
    /// Measured seconds from each stage's scheduled start to its finish.
    pub busy_s: f64,
    /// Profiled seconds of the same stages.
    pub profiled_s: f64,
    /// The longest any one stage ran past its profile: a stall of the machine shows here even
    /// when few stages overran.
    pub max_overrun_s: f64,
}

/// A snapshot of one model's counters (tests and reports).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ModelCounts {
    pub requests: u64,
    pub admitted: u64,
    pub rejected: u64,
    pub completed: u64,
    pub good: u64,
    pub late: u64,
    pub failed: u64,
}

impl Metrics {
    pub fn new(model_names: Vec<String>, n_groups: usize) -> Metrics {
        let data = Data {
            models: vec![ModelStats::default(); model_names.len()],
            groups: vec![GroupStats::default(); n_groups],
            bad_requests: 0,
        };
        Metrics {
            model_names,
            data: Mutex::new(data),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Data) -> T) -> T {
        let mut d = self.data.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut d)
    }

    pub(crate) fn bad_request(&self) {
        self.with(|d| d.bad_requests += 1);
    }

    pub(crate) fn admitted(&self, m: usize, group: usize) {
        self.with(|d| {
            d.models[m].requests += 1;
            d.models[m].admitted += 1;
            d.groups[group].routed += 1;
            d.groups[group].admitted += 1;
        });
    }

    pub(crate) fn rejected(&self, m: usize, group: Option<usize>, reason: RejectReason) {
        self.with(|d| {
            d.models[m].requests += 1;
            let i = RejectReason::ALL
                .iter()
                .position(|r| *r == reason)
                .unwrap_or(0);
            d.models[m].rejected[i] += 1;
            if let Some(g) = group {
                d.groups[g].routed += 1;
            }
        });
    }

    pub(crate) fn completed(&self, m: usize, group: usize, latency_s: f64, good: bool) {
        self.with(|d| {
            let s = &mut d.models[m];
            s.completed += 1;
            if good {
                s.good += 1;
            } else {
                s.late += 1;
            }
            let b = LATENCY_BUCKETS_S
                .iter()
                .position(|&ub| latency_s <= ub)
                .unwrap_or(LATENCY_BUCKETS_S.len());
            s.buckets[b] += 1;
            s.latency_sum_s += latency_s;
            d.groups[group].completed += 1;
        });
    }

    pub(crate) fn failed(&self, m: usize, group: usize) {
        self.with(|d| {
            d.models[m].failed += 1;
            d.groups[group].failed += 1;
        });
    }

    /// A stage of `group` ran `measured_s` against a profile of `profiled_s`.
    pub(crate) fn stage_ran(&self, group: usize, profiled_s: f64, measured_s: f64) {
        self.with(|d| {
            let g = &mut d.groups[group];
            g.stages += 1;
            // A microsecond of slack: the emulate runner's `start + profiled − start` rounds.
            if measured_s > profiled_s + 1e-6 {
                g.stage_overruns += 1;
            }
            g.stage_busy_s += measured_s;
            g.stage_profiled_s += profiled_s;
            g.stage_max_overrun_s = g.stage_max_overrun_s.max(measured_s - profiled_s);
        });
    }

    /// Stage executions summed over all groups.
    pub fn stages(&self) -> StageCounts {
        self.with(|d| {
            d.groups.iter().fold(StageCounts::default(), |mut c, g| {
                c.stages += g.stages;
                c.overruns += g.stage_overruns;
                c.busy_s += g.stage_busy_s;
                c.profiled_s += g.stage_profiled_s;
                c.max_overrun_s = c.max_overrun_s.max(g.stage_max_overrun_s);
                c
            })
        })
    }

    pub(crate) fn group_down(&self, group: usize) {
        self.with(|d| d.groups[group].down = true);
    }

    /// Counters of model `m`.
    pub fn model(&self, m: usize) -> ModelCounts {
        self.with(|d| {
            let s = &d.models[m];
            ModelCounts {
                requests: s.requests,
                admitted: s.admitted,
                rejected: s.rejected.iter().sum(),
                completed: s.completed,
                good: s.good,
                late: s.late,
                failed: s.failed,
            }
        })
    }

    /// Malformed requests answered with a 4xx.
    pub fn bad_requests(&self) -> u64 {
        self.with(|d| d.bad_requests)
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let d = self.with(|d| (d.models.clone(), d.groups.clone(), d.bad_requests));
        let (models, groups, bad) = d;
        let mut o = String::new();
        let name = |m: usize| escape(&self.model_names[m]);
        let counter = |o: &mut String, metric: &str, help: &str| {
            let _ = writeln!(o, "# HELP {metric} {help}\n# TYPE {metric} counter");
        };
        counter(
            &mut o,
            "plexserve_requests_total",
            "Inference requests received per model.",
        );
        for (m, s) in models.iter().enumerate() {
            let _ = writeln!(
                o,
                "plexserve_requests_total{{model=\"{}\"}} {}",
                name(m),
                s.requests
            );
        }
        counter(
            &mut o,
            "plexserve_admitted_total",
            "Requests admitted per model.",
        );
        for (m, s) in models.iter().enumerate() {
            let _ = writeln!(
                o,
                "plexserve_admitted_total{{model=\"{}\"}} {}",
                name(m),
                s.admitted
            );
        }
        counter(
            &mut o,
            "plexserve_rejected_total",
            "Requests rejected at arrival per model and reason.",
        );
        for (m, s) in models.iter().enumerate() {
            for (i, r) in RejectReason::ALL.iter().enumerate() {
                let _ = writeln!(
                    o,
                    "plexserve_rejected_total{{model=\"{}\",reason=\"{}\"}} {}",
                    name(m),
                    r.as_str(),
                    s.rejected[i]
                );
            }
        }
        counter(
            &mut o,
            "plexserve_completed_total",
            "Admitted requests answered with a result.",
        );
        for (m, s) in models.iter().enumerate() {
            let _ = writeln!(
                o,
                "plexserve_completed_total{{model=\"{}\"}} {}",
                name(m),
                s.completed
            );
        }
        counter(
            &mut o,
            "plexserve_good_total",
            "Requests answered within their SLO.",
        );
        for (m, s) in models.iter().enumerate() {
            let _ = writeln!(
                o,
                "plexserve_good_total{{model=\"{}\"}} {}",
                name(m),
                s.good
            );
        }
        counter(
            &mut o,
            "plexserve_late_total",
            "Admitted requests answered after their SLO.",
        );
        for (m, s) in models.iter().enumerate() {
            let _ = writeln!(
                o,
                "plexserve_late_total{{model=\"{}\"}} {}",
                name(m),
                s.late
            );
        }
        counter(
            &mut o,
            "plexserve_failed_total",
            "Admitted requests that got an error (group down, stage failure).",
        );
        for (m, s) in models.iter().enumerate() {
            let _ = writeln!(
                o,
                "plexserve_failed_total{{model=\"{}\"}} {}",
                name(m),
                s.failed
            );
        }
        let _ = writeln!(
            o,
            "# HELP plexserve_slo_attainment Fraction of received requests answered within their SLO.\n# TYPE plexserve_slo_attainment gauge"
        );
        for (m, s) in models.iter().enumerate() {
            let a = if s.requests == 0 {
                0.0
            } else {
                s.good as f64 / s.requests as f64
            };
            let _ = writeln!(o, "plexserve_slo_attainment{{model=\"{}\"}} {a}", name(m));
        }
        let _ = writeln!(
            o,
            "# HELP plexserve_latency_seconds Server-side latency of answered requests.\n# TYPE plexserve_latency_seconds histogram"
        );
        for (m, s) in models.iter().enumerate() {
            let mut cum = 0;
            for (i, ub) in LATENCY_BUCKETS_S.iter().enumerate() {
                cum += s.buckets[i];
                let _ = writeln!(
                    o,
                    "plexserve_latency_seconds_bucket{{model=\"{}\",le=\"{ub}\"}} {cum}",
                    name(m)
                );
            }
            cum += s.buckets[LATENCY_BUCKETS_S.len()];
            let _ = writeln!(
                o,
                "plexserve_latency_seconds_bucket{{model=\"{}\",le=\"+Inf\"}} {cum}",
                name(m)
            );
            let _ = writeln!(
                o,
                "plexserve_latency_seconds_sum{{model=\"{}\"}} {}",
                name(m),
                s.latency_sum_s
            );
            let _ = writeln!(
                o,
                "plexserve_latency_seconds_count{{model=\"{}\"}} {cum}",
                name(m)
            );
        }
        counter(
            &mut o,
            "plexserve_group_routed_total",
            "Requests dispatched to each group (rejected ones included).",
        );
        for (g, s) in groups.iter().enumerate() {
            let _ = writeln!(
                o,
                "plexserve_group_routed_total{{group=\"{g}\"}} {}",
                s.routed
            );
        }
        counter(
            &mut o,
            "plexserve_group_admitted_total",
            "Requests admitted to each group.",
        );
        for (g, s) in groups.iter().enumerate() {
            let _ = writeln!(
                o,
                "plexserve_group_admitted_total{{group=\"{g}\"}} {}",
                s.admitted
            );
        }
        counter(
            &mut o,
            "plexserve_group_completed_total",
            "Requests each group answered.",
        );
        for (g, s) in groups.iter().enumerate() {
            let _ = writeln!(
                o,
                "plexserve_group_completed_total{{group=\"{g}\"}} {}",
                s.completed
            );
        }
        counter(
            &mut o,
            "plexserve_group_failed_total",
            "Admitted requests each group failed.",
        );
        for (g, s) in groups.iter().enumerate() {
            let _ = writeln!(
                o,
                "plexserve_group_failed_total{{group=\"{g}\"}} {}",
                s.failed
            );
        }
        counter(
            &mut o,
            "plexserve_stage_runs_total",
            "Pipeline stages each group executed.",
        );
        for (g, s) in groups.iter().enumerate() {
            let _ = writeln!(
                o,
                "plexserve_stage_runs_total{{group=\"{g}\"}} {}",
                s.stages
            );
        }
        counter(
            &mut o,
            "plexserve_stage_overruns_total",
            "Stages that took longer than their profiled latency (admission was corrected).",
        );
        for (g, s) in groups.iter().enumerate() {
            let _ = writeln!(
                o,
                "plexserve_stage_overruns_total{{group=\"{g}\"}} {}",
                s.stage_overruns
            );
        }
        counter(
            &mut o,
            "plexserve_stage_seconds_total",
            "Measured stage time (scheduled start to finish) per group.",
        );
        for (g, s) in groups.iter().enumerate() {
            let _ = writeln!(
                o,
                "plexserve_stage_seconds_total{{group=\"{g}\"}} {}",
                s.stage_busy_s
            );
        }
        counter(
            &mut o,
            "plexserve_stage_profiled_seconds_total",
            "Profiled time of the same stages per group.",
        );
        for (g, s) in groups.iter().enumerate() {
            let _ = writeln!(
                o,
                "plexserve_stage_profiled_seconds_total{{group=\"{g}\"}} {}",
                s.stage_profiled_s
            );
        }
        let _ = writeln!(
            o,
            "# HELP plexserve_stage_max_overrun_seconds Longest time one stage ran past its profile.\n# TYPE plexserve_stage_max_overrun_seconds gauge"
        );
        for (g, s) in groups.iter().enumerate() {
            let _ = writeln!(
                o,
                "plexserve_stage_max_overrun_seconds{{group=\"{g}\"}} {}",
                s.stage_max_overrun_s
            );
        }
        let _ = writeln!(o, "# HELP plexserve_group_up 1 while the group serves, 0 once a device of it failed.\n# TYPE plexserve_group_up gauge");
        for (g, s) in groups.iter().enumerate() {
            let _ = writeln!(
                o,
                "plexserve_group_up{{group=\"{g}\"}} {}",
                u8::from(!s.down)
            );
        }
        counter(
            &mut o,
            "plexserve_bad_requests_total",
            "Malformed requests answered with a 4xx.",
        );
        let _ = writeln!(o, "plexserve_bad_requests_total {bad}");
        o
    }
}

/// Escapes a Prometheus label value.
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
