//! Reported statistics of a simulation (contract.md §4), with AlpaServe's warm-up trimming.

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

use super::{Outcomes, Simulator, NO_GROUP};
use crate::plan::Schedule;

pub const SIM_SCHEMA: &str = "plexserve/sim/v1";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimReport {
    pub schema: String,
    pub slo_attainment: f64,
    pub requests: u64,
    pub good: u64,
    /// Rejected at arrival.
    pub rejected: u64,
    /// Admitted but finished after the deadline.
    pub late: u64,
    pub latency_s: LatencySummary,
    pub per_model: IndexMap<String, ModelReport>,
    pub per_group: Vec<GroupReport>,
    /// Requests trimmed at each end as warm-up / cool-down.
    pub trimmed_each_end: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelReport {
    pub requests: u64,
    pub slo_attainment: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupReport {
    pub requests: u64,
    pub good: u64,
}

/// One `--requests-out` row.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestRow {
    pub request: usize,
    pub model: String,
    pub arrival_s: f64,
    /// `None` for a request rejected at arrival.
    pub group: Option<u32>,
    pub start_s: f64,
    pub finish_s: f64,
    pub good: bool,
}

/// Number of requests trimmed at each end: `floor(warmup / (t_last − t_first) · N)`, or 0 when
/// trimming would leave nothing.
pub fn warmup_skip(arrival_s: &[f64], warmup_s: f64) -> usize {
    let n = arrival_s.len();
    if n < 2 {
        return 0;
    }
    let span = arrival_s[n - 1] - arrival_s[0];
    if span <= 0.0 || warmup_s <= 0.0 {
        return 0;
    }
    // A warm-up far beyond the span (1e300 s) saturates the cast to usize::MAX.
    let skip = (warmup_s / span * n as f64).floor() as usize;
    if skip.saturating_mul(2) >= n {
        0
    } else {
        skip
    }
}

/// `sorted[floor(q · n)]`, clamped to the last element.
fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((q * sorted.len() as f64).floor() as usize).min(sorted.len() - 1);
    sorted[i]
}

pub(super) fn build(sim: &Simulator, schedule: &Schedule, out: &Outcomes) -> SimReport {
    let inst = sim.inst;
    let trace = sim.trace;
    let skip = warmup_skip(&trace.arrival_s, sim.config.warmup_s);
    let range = skip..trace.len() - skip;
    let n_groups: usize = schedule.segments.iter().map(|s| s.1.groups.len()).sum();
    let mut req_m = vec![0u64; inst.models.len()];
    let mut good_m = vec![0u64; inst.models.len()];
    let mut per_group = vec![
        GroupReport {
            requests: 0,
            good: 0
        };
        n_groups
    ];
    let (mut good, mut late, mut rejected) = (0u64, 0u64, 0u64);
    let mut latencies = Vec::with_capacity(range.len());
    for i in range.clone() {
        let m = trace.model[i] as usize;
        req_m[m] += 1;
        let g = out.group[i];
        if g != NO_GROUP {
            per_group[g as usize].requests += 1;
        }
        if out.good[i] {
            good += 1;
            good_m[m] += 1;
            per_group[g as usize].good += 1;
        } else if out.late[i] {
            late += 1;
        } else {
            rejected += 1;
        }
        if out.good[i] || out.late[i] {
            latencies.push(out.finish_s[i] - trace.arrival_s[i]);
        }
    }
    latencies.sort_by(f64::total_cmp);
    let requests = range.len() as u64;
    let mean = if latencies.is_empty() {
        0.0
    } else {
        latencies.iter().sum::<f64>() / latencies.len() as f64
    };
    SimReport {
        schema: SIM_SCHEMA.into(),
        slo_attainment: if requests == 0 {
            0.0
        } else {
            good as f64 / requests as f64
        },
        requests,
        good,
        rejected,
        late,
        latency_s: LatencySummary {
            mean,
            p50: percentile(&latencies, 0.50),
            p90: percentile(&latencies, 0.90),
            p99: percentile(&latencies, 0.99),
        },
        per_model: inst
            .models
            .iter()
            .enumerate()
            .map(|(m, model)| {
                (
                    model.name.clone(),
                    ModelReport {
                        requests: req_m[m],
                        slo_attainment: if req_m[m] == 0 {
                            0.0
                        } else {
                            good_m[m] as f64 / req_m[m] as f64
                        },
                    },
                )
            })
            .collect(),
        per_group,
        trimmed_each_end: skip as u64,
    }
}

impl SimReport {
    /// Serializes with a trailing newline.
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("report serializes");
        s.push('\n');
        s
    }
}

/// Per-request rows in trace order.
pub fn request_rows(sim: &Simulator, out: &Outcomes) -> Vec<RequestRow> {
    (0..sim.trace.len())
        .map(|i| {
            let served = out.good[i] || out.late[i];
            RequestRow {
                request: i,
                model: sim.inst.models[sim.trace.model[i] as usize].name.clone(),
                arrival_s: sim.trace.arrival_s[i],
                group: (served && out.group[i] != NO_GROUP).then_some(out.group[i]),
                start_s: out.start_s[i],
                finish_s: if served {
                    out.finish_s[i]
                } else {
                    sim.trace.arrival_s[i]
                },
                good: out.good[i],
            }
        })
        .collect()
}

/// Writes rows as CSV: `request,model,arrival_s,group,start_s,finish_s,good`.
pub fn write_requests_csv(rows: &[RequestRow], w: &mut impl std::io::Write) -> std::io::Result<()> {
    writeln!(w, "request,model,arrival_s,group,start_s,finish_s,good")?;
    for r in rows {
        let group = r.group.map(|g| g.to_string()).unwrap_or_default();
        writeln!(
            w,
            "{},{},{},{},{},{},{}",
            r.request,
            csv_field(&r.model),
            r.arrival_s,
            group,
            r.start_s,
            r.finish_s,
            r.good as u8
        )?;
    }
    Ok(())
}

/// A CSV field: quoted (inner quotes doubled) when it holds a comma, a quote or a line break, so
/// that any model name keeps its row's columns (RFC 4180).
pub fn csv_field(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\"")).into()
    } else {
        s.into()
    }
}
