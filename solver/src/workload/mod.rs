//! Request workloads (alpaserve-semantics.md §3): what arrives when, for which model.
//!
//! A [`WorkloadSpec`] is the validated `workload` object of an instance file; [`WorkloadSpec::generate`]
//! turns it into a [`Trace`], the time-sorted request stream the simulator, the placers and the
//! load generator consume. Kinds:
//!
//! - `gamma`: one Gamma renewal process per model, given per model (`streams`) or as a
//!   `total_rate` spread by a power law over model ids ([`GammaWorkload`]);
//! - `requests`: an explicit, time-sorted request list;
//! - `azure_functions_2019` / `azure_functions_2021`: replay of a slice of the public Azure
//!   Functions traces as piecewise Gamma processes (MAF1 / MAF2 style, [`AzureWorkload`]).
//!
//! # Randomness
//!
//! plexserve does not reproduce numpy's bit stream; it aims for statistical equivalence with
//! AlpaServe and for its own exact reproducibility. Every Gamma process draws its gaps from its own
//! `rand_chacha::ChaCha8Rng` created with `seed_from_u64(stream_seed)` and sampled through
//! `rand_distr::Gamma(shape = 1/cv², scale = cv²/rate)`; gaps are drawn one at a time, so the same
//! seed with a longer duration yields the shorter run as a prefix. Stream seeds:
//!
//! - `gamma`: model `i` uses `seed + i` (AlpaServe: seed = model index), whatever the order of
//!   `streams`;
//! - trace replays: one seed per (model, window with a process), starting at `seed` and counting
//!   up over models in id order and their windows in time order (AlpaServe's shared counter).
//!
//! Seeds add with wrap-around, so any `u64` seed is valid. The same instance therefore generates the
//! same trace on every machine and thread count (ChaCha8 is portable and the merge is stable).

mod azure;
mod csv;
mod fit;
mod gamma;

use std::path::Path;

use serde::Deserialize;

use crate::error::{Result, SolverError};

pub use azure::{
    parse_slice_time, AzureFormat, AzureWorkload, FunctionMapping, ReplayTable, Window,
};
pub use fit::{digamma, fit_gamma_mle, log_minus_digamma, trigamma};
pub use gamma::{gamma_arrivals, power_law_rates, GammaStream, GammaWorkload};

/// Largest number of requests a workload may generate (about 1.6 GB of trace columns plus the
/// merge buffer); larger requests are refused with an error instead of exhausting memory.
pub const MAX_REQUESTS: usize = 100_000_000;

/// `Err("about N requests; at most … are supported")` when `expected` requests exceed
/// [`MAX_REQUESTS`] or are not finite; callers say what gives that many.
pub(crate) fn check_requests(expected: f64) -> std::result::Result<(), String> {
    if expected.is_finite() && expected <= MAX_REQUESTS as f64 {
        Ok(())
    } else {
        Err(format!(
            "about {expected:.3e} requests; at most {MAX_REQUESTS} are supported"
        ))
    }
}

/// Largest coefficient of variation of Gamma inter-arrival times (the papers sweep 1 … 8; fitted
/// trace windows stay below 2). Far beyond it the gaps' shape 1/cv² makes most gaps underflow to
/// zero, and a window's arrivals run away to [`MAX_REQUESTS`].
pub const MAX_CV: f64 = 64.0;

/// `Err(message)` unless `cv` is in (0, [`MAX_CV`]].
pub(crate) fn check_cv(cv: f64) -> std::result::Result<(), String> {
    if cv > 0.0 && cv <= MAX_CV {
        Ok(())
    } else {
        Err(format!("expected a cv in (0, {MAX_CV}], found {cv}"))
    }
}

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

    /// Number of requests of every model (ids outside `0..n_models` are not counted).
    pub fn counts(&self, n_models: usize) -> Vec<usize> {
        let mut c = vec![0; n_models];
        for &m in &self.model {
            if let Some(slot) = c.get_mut(m as usize) {
                *slot += 1;
            }
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
    /// `azure_functions_2019` or `azure_functions_2021` (see [`AzureWorkload::format`]).
    Azure(AzureWorkload),
}

/// Deserializes `value` into `T`, prefixing error paths with `workload`.
pub(crate) fn parse_at<T: serde::de::DeserializeOwned>(
    file: &Path,
    at: &str,
    value: &serde_json::Value,
) -> Result<T> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let p = e.path().to_string();
        let path = if p == "." {
            at.to_string()
        } else {
            format!("{at}.{p}")
        };
        SolverError::invalid(file, path, e.into_inner().to_string())
    })
}

const KINDS: &str = "gamma, requests, azure_functions_2019, azure_functions_2021";

impl WorkloadSpec {
    /// Validates the `workload` object; `models` are the instance's model names in id order.
    /// `file` is the instance file: errors name it, and trace paths are relative to its directory.
    pub fn parse(file: &Path, value: &serde_json::Value, models: &[&str]) -> Result<WorkloadSpec> {
        if !value.is_object() {
            return Err(SolverError::invalid(
                file,
                "workload",
                format!("expected an object with a `kind` (one of {KINDS})"),
            ));
        }
        let kind = value.get("kind").and_then(|k| k.as_str()).ok_or_else(|| {
            SolverError::invalid(
                file,
                "workload.kind",
                format!("expected a string: one of {KINDS}"),
            )
        })?;
        match kind {
            "gamma" => Ok(WorkloadSpec::Gamma(GammaWorkload::parse(
                file, value, models,
            )?)),
            "requests" => parse_requests(file, value, models),
            "azure_functions_2019" => Ok(WorkloadSpec::Azure(AzureWorkload::parse(
                AzureFormat::Functions2019,
                file,
                value,
                models,
            )?)),
            "azure_functions_2021" => Ok(WorkloadSpec::Azure(AzureWorkload::parse(
                AzureFormat::Functions2021,
                file,
                value,
                models,
            )?)),
            other => Err(SolverError::invalid(
                file,
                "workload.kind",
                format!("unknown workload kind \"{other}\"; expected one of {KINDS}"),
            )),
        }
    }

    /// The `kind` string of this workload.
    pub fn kind(&self) -> &'static str {
        match self {
            WorkloadSpec::Gamma(_) => "gamma",
            WorkloadSpec::Requests(_) => "requests",
            WorkloadSpec::Azure(a) => a.format.kind(),
        }
    }

    /// Generates the request stream. `base_dir` anchors relative trace paths (the instance's
    /// directory, [`crate::Instance::base_dir`]).
    pub fn generate(&self, base_dir: &Path) -> Result<Trace> {
        match self {
            WorkloadSpec::Gamma(g) => {
                // Checked when the file is read, and again here: a sweep may have scaled it.
                check_requests(g.expected_requests()).map_err(|e| {
                    SolverError::Option(format!("rates × duration_s of the workload give {e}"))
                })?;
                Ok(g.generate())
            }
            WorkloadSpec::Requests(r) => Ok(r.trace.clone()),
            WorkloadSpec::Azure(a) => a.generate(base_dir),
        }
    }

    /// Declared request rate of every model (requests per second), used by latency bucketing.
    ///
    /// `gamma`: the configured rates. `requests`: count / span of the list. Trace replays: the
    /// expected rate of the replay over the slice (Σ window rate × length / slice length), read
    /// from the trace files relative to the instance's directory; should they be unreadable (then
    /// [`WorkloadSpec::generate`] fails too), every rate is 0.
    pub fn declared_rates(&self, n_models: usize) -> Vec<f64> {
        let mut rates = match self {
            WorkloadSpec::Gamma(g) => g.rates(),
            WorkloadSpec::Requests(r) => {
                let span = r.trace.arrival_s.last().copied().unwrap_or(0.0)
                    - r.trace.arrival_s.first().copied().unwrap_or(0.0);
                let span = if span > 0.0 { span } else { 1.0 };
                r.trace
                    .counts(n_models)
                    .iter()
                    .map(|&c| c as f64 / span)
                    .collect()
            }
            WorkloadSpec::Azure(a) => {
                let base = a.instance_file.parent().unwrap_or(Path::new("."));
                match a.table(base) {
                    Ok(table) => a.declared_rates(&table),
                    Err(e) => {
                        tracing::warn!("declared rates of the trace replay are unknown: {e}");
                        Vec::new()
                    }
                }
            }
        };
        rates.resize(n_models, 0.0);
        rates
    }

    /// The same workload with every rate multiplied by `rate_scale` and every cv by `cv_scale`
    /// (for `compare --sweep rate_scale=…,cv_scale=…`):
    ///
    /// - `gamma`: each stream's `rate` and `cv` (power-law shares are kept);
    /// - trace replays: the `rate_scale` and `cv_scale` fields (so `scaled(2.0, 1.0)` of a replay
    ///   with `rate_scale: 0.002` has `rate_scale: 0.004`); the parsed trace is shared, not re-read;
    /// - `requests`: an explicit list has no rate or cv to scale and is returned **unchanged**; use
    ///   [`WorkloadSpec::try_scaled`] to get an error instead.
    ///
    /// Factors are not validated here (a non-positive or non-finite factor yields streams without
    /// arrivals, never a panic); [`WorkloadSpec::try_scaled`] validates them.
    pub fn scaled(&self, rate_scale: f64, cv_scale: f64) -> WorkloadSpec {
        match self {
            WorkloadSpec::Gamma(g) => WorkloadSpec::Gamma(g.scaled(rate_scale, cv_scale)),
            WorkloadSpec::Requests(r) => WorkloadSpec::Requests(r.clone()),
            WorkloadSpec::Azure(a) => WorkloadSpec::Azure(a.scaled(rate_scale, cv_scale)),
        }
    }

    /// [`WorkloadSpec::scaled`], refusing a rate factor that is negative or not finite, a cv
    /// factor that is not positive and finite, and any factor other than 1 on an explicit list.
    pub fn try_scaled(&self, rate_scale: f64, cv_scale: f64) -> Result<WorkloadSpec> {
        if !(rate_scale.is_finite() && rate_scale >= 0.0) {
            return Err(SolverError::Option(format!(
                "rate_scale: expected a non-negative finite factor, found {rate_scale}"
            )));
        }
        if !(cv_scale.is_finite() && cv_scale > 0.0) {
            return Err(SolverError::Option(format!(
                "cv_scale: expected a positive finite factor, found {cv_scale}"
            )));
        }
        if let WorkloadSpec::Gamma(g) = self {
            let top = g.streams.iter().map(|s| s.cv).fold(0.0, f64::max) * cv_scale;
            check_cv(top).map_err(|e| {
                SolverError::Option(format!(
                    "cv_scale {cv_scale} makes the largest cv {top}: {e}"
                ))
            })?;
        }
        let identity = (rate_scale - 1.0).abs() < 1e-12 && (cv_scale - 1.0).abs() < 1e-12;
        if matches!(self, WorkloadSpec::Requests(_)) && !identity {
            return Err(SolverError::Option(
                "an explicit request list (workload kind \"requests\") cannot be scaled by rate_scale or cv_scale"
                    .into(),
            ));
        }
        Ok(self.scaled(rate_scale, cv_scale))
    }
}

fn parse_requests(file: &Path, value: &serde_json::Value, models: &[&str]) -> Result<WorkloadSpec> {
    let f: RequestsFile = parse_at(file, "workload", value)?;
    if f.requests.len() > MAX_REQUESTS {
        return Err(SolverError::invalid(
            file,
            "workload.requests",
            format!(
                "expected at most {MAX_REQUESTS} requests, found {}",
                f.requests.len()
            ),
        ));
    }
    let mut trace = Trace::default();
    let mut last = f64::NEG_INFINITY;
    for (i, r) in f.requests.iter().enumerate() {
        let at = format!("workload.requests[{i}]");
        if !r.t_s.is_finite() || r.t_s < 0.0 {
            return Err(SolverError::invalid(
                file,
                format!("{at}.t_s"),
                format!("expected a non-negative time in seconds, found {}", r.t_s),
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
