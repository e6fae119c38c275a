//! Request workloads (alpaserve-semantics.md §3): what arrives when, for which model.
//!
//! A [`WorkloadSpec`] is the validated `workload` object of an instance file; [`WorkloadSpec::generate`]
//! turns it into a [`Trace`], the time-sorted request stream the simulator, the placers and the
//! load generator consume.

mod gamma;

use std::path::Path;

use serde::Deserialize;

use crate::error::{Result, SolverError};

pub use gamma::{gamma_arrivals, GammaStream, GammaWorkload};

/// A time-sorted stream of requests, stored as parallel columns indexed by request id.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Trace {
    /// Arrival time of every request, ascending.
    pub arrival_s: Vec<f64>,
    /// Model id of every request (index into `Instance::models`).
    pub model: Vec<u32>,
}

impl Trace {
    pub fn len(&self) -> usize {
        self.arrival_s.len()
    }

    pub fn is_empty(&self) -> bool {
        self.arrival_s.is_empty()
    }

    /// Merges per-model arrival lists into one stream, sorted by time; ties keep model order, so
    /// the result does not depend on how the lists were produced.
    pub fn merge(per_model: Vec<Vec<f64>>) -> Trace {
        let n = per_model.iter().map(Vec::len).sum();
        let mut pairs: Vec<(f64, u32)> = Vec::with_capacity(n);
        for (m, times) in per_model.into_iter().enumerate() {
            pairs.extend(times.into_iter().map(|t| (t, m as u32)));
        }
        pairs.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        Trace {
            arrival_s: pairs.iter().map(|p| p.0).collect(),
            model: pairs.iter().map(|p| p.1).collect(),
        }
    }

    /// Number of requests of every model.
    pub fn counts(&self, n_models: usize) -> Vec<usize> {
        let mut c = vec![0; n_models];
        for &m in &self.model {
            c[m as usize] += 1;
        }
        c
    }
}

/// An explicit request list.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestList {
    pub trace: Trace,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestsFile {
    #[allow(dead_code)]
    kind: String,
    requests: Vec<RequestEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestEntry {
    t_s: f64,
    model: String,
}

/// The validated `workload` of an instance.
#[derive(Debug, Clone, PartialEq)]
pub enum WorkloadSpec {
    Gamma(GammaWorkload),
    Requests(RequestList),
}

/// Deserializes `value` into `T`, prefixing error paths with `workload`.
pub(crate) fn parse_at<T: serde::de::DeserializeOwned>(
    file: &Path,
    at: &str,
    value: &serde_json::Value,
) -> Result<T> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let p = e.path().to_string();
        let path = if p == "." { at.to_string() } else { format!("{at}.{p}") };
        SolverError::invalid(file, path, e.into_inner().to_string())
    })
}

impl WorkloadSpec {
    /// Validates the `workload` object; `models` are the instance's model names in id order.
    pub fn parse(file: &Path, value: &serde_json::Value, models: &[&str]) -> Result<WorkloadSpec> {
        let kind = value
            .get("kind")
            .and_then(|k| k.as_str())
            .ok_or_else(|| {
                SolverError::invalid(
                    file,
                    "workload.kind",
                    "expected a string: one of gamma, requests, azure_functions_2019, azure_functions_2021",
                )
            })?;
        match kind {
            "gamma" => Ok(WorkloadSpec::Gamma(GammaWorkload::parse(file, value, models)?)),
            "requests" => {
                let f: RequestsFile = parse_at(file, "workload", value)?;
                let mut trace = Trace::default();
                let mut last = f64::NEG_INFINITY;
                for (i, r) in f.requests.iter().enumerate() {
                    let at = format!("workload.requests[{i}]");
                    if !r.t_s.is_finite() || r.t_s < 0.0 {
                        return Err(SolverError::invalid(
                            file,
                            format!("{at}.t_s"),
                            format!("expected a non-negative time, found {}", r.t_s),
                        ));
                    }
                    if r.t_s < last {
                        return Err(SolverError::invalid(
                            file,
                            format!("{at}.t_s"),
                            format!("requests must be sorted by time; {} follows {last}", r.t_s),
                        ));
                    }
                    last = r.t_s;
                    let m = models.iter().position(|n| *n == r.model).ok_or_else(|| {
                        SolverError::invalid(
                            file,
                            format!("{at}.model"),
                            format!("unknown model \"{}\"", r.model),
                        )
                    })?;
                    trace.arrival_s.push(r.t_s);
                    trace.model.push(m as u32);
                }
                Ok(WorkloadSpec::Requests(RequestList { trace }))
            }
            other => Err(SolverError::invalid(
                file,
                "workload.kind",
                format!(
                    "unknown workload kind \"{other}\"; expected one of gamma, requests, azure_functions_2019, azure_functions_2021"
                ),
            )),
        }
    }

    /// Generates the request stream. `base_dir` anchors relative trace paths.
    pub fn generate(&self, _base_dir: &Path) -> Result<Trace> {
        match self {
            WorkloadSpec::Gamma(g) => Ok(g.generate()),
            WorkloadSpec::Requests(r) => Ok(r.trace.clone()),
        }
    }

    /// Declared request rate of every model (requests per second), used by latency bucketing.
    pub fn declared_rates(&self, n_models: usize) -> Vec<f64> {
        match self {
            WorkloadSpec::Gamma(g) => g.rates(),
            WorkloadSpec::Requests(r) => {
                let span = r.trace.arrival_s.last().copied().unwrap_or(0.0)
                    - r.trace.arrival_s.first().copied().unwrap_or(0.0);
                let span = if span > 0.0 { span } else { 1.0 };
                r.trace.counts(n_models).iter().map(|&c| c as f64 / span).collect()
            }
        }
    }
}
