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
    stage_ratios: StageTimeRatios,
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

/// Resolution and range of [`StageTimeRatios`]: 1 % steps up to 4×, one bucket beyond.
const RATIO_STEP: f64 = 0.01;
const RATIO_BUCKETS: usize = 400;
/// The `le` bounds `/metrics` exports of the stage time ratio histogram (`+Inf` implicit).
const RATIO_EXPORT_LE: [f64; 9] = [0.5, 0.9, 1.0, 1.05, 1.1, 1.25, 1.5, 2.0, 3.0];

/// Measured ÷ profiled stage time as a histogram in 1 % steps: how closely the devices keep to
/// their profile, in bounded memory however long the server runs. Bucket `b` holds the ratios
/// in `((b − 1) %, b %]`; the last bucket everything above 4×.
#[derive(Debug, Clone, PartialEq)]
pub struct StageTimeRatios {
    counts: Vec<u64>,
    sum: f64,
}

impl Default for StageTimeRatios {
    fn default() -> Self {
        StageTimeRatios {
            counts: vec![0; RATIO_BUCKETS + 1],
            sum: 0.0,
        }
    }
}

impl StageTimeRatios {
    fn bucket(ratio: f64) -> usize {
        // `- 1e-9`: a ratio of exactly 1.00 (an emulated stage) belongs to the 100 % bucket.
        let b = (ratio / RATIO_STEP - 1e-9).ceil();
        if b.is_nan() || b <= 0.0 {
            0
        } else {
            (b as usize).min(RATIO_BUCKETS)
        }
    }

    pub fn record(&mut self, ratio: f64) {
        self.counts[Self::bucket(ratio)] += 1;
        self.sum += ratio;
    }

    /// Stage runs recorded.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Runs whose ratio was at most `le`.
    pub fn count_at_most(&self, le: f64) -> u64 {
        self.counts[..=Self::bucket(le)].iter().sum()
    }

    /// The `q` quantile (nearest rank) as the upper edge of its bucket, so it is never below the
    /// true quantile; infinite when it lies beyond 4×, `None` before any stage ran.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let n = self.count();
        if n == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * n as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (b, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(if b == RATIO_BUCKETS {
                    f64::INFINITY
                } else {
                    b as f64 * RATIO_STEP
                });
            }
        }
        Some(f64::INFINITY)
    }
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
            stage_ratios: StageTimeRatios::default(),
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
            if profiled_s > 0.0 {
                d.stage_ratios.record(measured_s / profiled_s);
            }
        });
    }

    /// Measured ÷ profiled time of every stage run so far, over all groups.
    pub fn stage_time_ratios(&self) -> StageTimeRatios {
        self.with(|d| d.stage_ratios.clone())
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
        let (models, groups, bad, ratios) = self.with(|d| {
            (
                d.models.clone(),
                d.groups.clone(),
                d.bad_requests,
                d.stage_ratios.clone(),
            )
        });
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
        let _ = writeln!(
            o,
            "# HELP plexserve_stage_time_ratio Measured over profiled time of each stage run.\n# TYPE plexserve_stage_time_ratio histogram"
        );
        for le in RATIO_EXPORT_LE {
            let _ = writeln!(
                o,
                "plexserve_stage_time_ratio_bucket{{le=\"{le}\"}} {}",
                ratios.count_at_most(le)
            );
        }
        let _ = writeln!(
            o,
            "plexserve_stage_time_ratio_bucket{{le=\"+Inf\"}} {n}\nplexserve_stage_time_ratio_sum {}\nplexserve_stage_time_ratio_count {n}",
            ratios.sum,
            n = ratios.count()
        );
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_time_ratio_quantiles_are_bucket_upper_edges() {
        let mut r = StageTimeRatios::default();
        assert_eq!(r.quantile(0.5), None);
        // 90 stages exactly on profile, 9 at 1.234×, one far beyond 4×.
        for _ in 0..90 {
            r.record(1.0);
        }
        for _ in 0..9 {
            r.record(1.234);
        }
        r.record(7.0);
        assert_eq!(r.count(), 100);
        assert_eq!(r.quantile(0.5), Some(1.0));
        assert_eq!(r.quantile(0.9), Some(1.0));
        assert_eq!(r.quantile(0.91), Some(1.24));
        assert_eq!(r.quantile(0.99), Some(1.24));
        assert_eq!(r.quantile(1.0), Some(f64::INFINITY));
        assert_eq!(r.count_at_most(1.0), 90);
        assert_eq!(r.count_at_most(1.25), 99);
        assert_eq!(r.count_at_most(3.0), 99);
    }

    #[test]
    fn stage_time_ratios_are_exported_as_a_prometheus_histogram() {
        let m = Metrics::new(vec!["a".into()], 2);
        m.stage_ran(0, 0.010, 0.010);
        m.stage_ran(1, 0.010, 0.0095);
        m.stage_ran(1, 0.010, 0.012);
        assert_eq!(m.stage_time_ratios().quantile(1.0), Some(1.2));
        let text = m.render();
        for line in [
            "# TYPE plexserve_stage_time_ratio histogram",
            "plexserve_stage_time_ratio_bucket{le=\"0.9\"} 0",
            "plexserve_stage_time_ratio_bucket{le=\"1\"} 2",
            "plexserve_stage_time_ratio_bucket{le=\"1.1\"} 2",
            "plexserve_stage_time_ratio_bucket{le=\"1.25\"} 3",
            "plexserve_stage_time_ratio_bucket{le=\"+Inf\"} 3",
            "plexserve_stage_time_ratio_count 3",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }
}
