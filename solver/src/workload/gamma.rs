//! Gamma-process arrivals (alpaserve-semantics.md §3.1–3.2).

use std::path::Path;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Gamma};
use serde::Deserialize;

use super::{check_cv, check_requests, parse_at, Trace, MAX_REQUESTS};
use crate::error::{Result, SolverError};

/// One model's stream.
#[derive(Debug, Clone, PartialEq)]
pub struct GammaStream {
    pub model: usize,
    pub rate: f64,
    pub cv: f64,
}

/// Independent Gamma streams, one per model; model `i` draws from seed `seed + i`.
#[derive(Debug, Clone, PartialEq)]
pub struct GammaWorkload {
    pub duration_s: f64,
    pub seed: u64,
    pub streams: Vec<GammaStream>,
    /// Number of models of the instance (a model without a stream gets no requests).
    pub n_models: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GammaFile {
    #[allow(dead_code)]
    kind: String,
    duration_s: f64,
    #[serde(default)]
    seed: u64,
    #[serde(default)]
    streams: Option<Vec<StreamEntry>>,
    #[serde(default)]
    total_rate: Option<f64>,
    #[serde(default)]
    rate_distribution: Option<String>,
    #[serde(default)]
    alpha: Option<f64>,
    #[serde(default)]
    cv: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StreamEntry {
    model: String,
    rate: f64,
    cv: f64,
}

impl GammaWorkload {
    pub(crate) fn parse(file: &Path, value: &serde_json::Value, models: &[&str]) -> Result<Self> {
        let f: GammaFile = parse_at(file, "workload", value)?;
        let bad = |p: &str, m: String| SolverError::invalid(file, format!("workload.{p}"), m);
        if !(f.duration_s.is_finite() && f.duration_s > 0.0) {
            return Err(bad(
                "duration_s",
                format!(
                    "expected a positive duration in seconds, found {}",
                    f.duration_s
                ),
            ));
        }
        let streams = match (&f.streams, f.total_rate) {
            (Some(_), Some(_)) => {
                return Err(bad(
                    "total_rate",
                    "give either streams or total_rate, not both".into(),
                ))
            }
            (None, None) => {
                return Err(bad(
                    "streams",
                    "expected streams (a list of {model, rate, cv}) or total_rate".into(),
                ))
            }
            (Some(list), None) => {
                // The per-stream form has its own cv; the power-law knobs would be ignored.
                for (key, given) in [
                    ("rate_distribution", f.rate_distribution.is_some()),
                    ("alpha", f.alpha.is_some()),
                    ("cv", f.cv.is_some()),
                ] {
                    if given {
                        return Err(bad(key, format!("`{key}` only applies with total_rate")));
                    }
                }
                let mut out = Vec::with_capacity(list.len());
                for (i, s) in list.iter().enumerate() {
                    let m = models.iter().position(|n| *n == s.model).ok_or_else(|| {
                        bad(
                            &format!("streams[{i}].model"),
                            format!("unknown model \"{}\"", s.model),
                        )
                    })?;
                    if !(s.rate.is_finite() && s.rate >= 0.0) {
                        return Err(bad(
                            &format!("streams[{i}].rate"),
                            format!(
                                "expected a non-negative rate (requests/s), found {}",
                                s.rate
                            ),
                        ));
                    }
                    check_cv(s.cv).map_err(|e| bad(&format!("streams[{i}].cv"), e))?;
                    if out.iter().any(|o: &GammaStream| o.model == m) {
                        return Err(bad(
                            &format!("streams[{i}].model"),
                            format!("model \"{}\" has two streams", s.model),
                        ));
                    }
                    out.push(GammaStream {
                        model: m,
                        rate: s.rate,
                        cv: s.cv,
                    });
                }
                out
            }
            (None, Some(total)) => {
                if !(total.is_finite() && total >= 0.0) {
                    return Err(bad(
                        "total_rate",
                        format!("expected a non-negative rate (requests/s), found {total}"),
                    ));
                }
                let cv =
                    f.cv.ok_or_else(|| bad("cv", "total_rate needs a cv (1 is Poisson)".into()))?;
                check_cv(cv).map_err(|e| bad("cv", e))?;
                let alpha = match f.rate_distribution.as_deref() {
                    Some("power_law") => f.alpha.unwrap_or(0.5),
                    Some("uniform") | None => {
                        if f.alpha.is_some() {
                            return Err(bad(
                                "alpha",
                                "`alpha` only applies with rate_distribution \"power_law\"".into(),
                            ));
                        }
                        0.0
                    }
                    Some(other) => {
                        return Err(bad(
                            "rate_distribution",
                            format!(
                                "unknown distribution \"{other}\"; expected power_law or uniform"
                            ),
                        ))
                    }
                };
                if !alpha.is_finite() || alpha < 0.0 {
                    return Err(bad(
                        "alpha",
                        format!("expected a non-negative exponent, found {alpha}"),
                    ));
                }
                power_law_rates(total, alpha, models.len())
                    .into_iter()
                    .enumerate()
                    .map(|(m, rate)| GammaStream { model: m, rate, cv })
                    .collect()
            }
        };
        let w = GammaWorkload {
            duration_s: f.duration_s,
            seed: f.seed,
            streams,
            n_models: models.len(),
        };
        check_requests(w.expected_requests())
            .map_err(|e| bad("duration_s", format!("rates × duration_s give {e}")))?;
        Ok(w)
    }

    /// Expected number of requests, Σ rate · duration.
    pub fn expected_requests(&self) -> f64 {
        self.streams.iter().map(|s| s.rate).sum::<f64>() * self.duration_s
    }

    /// Per-model rates in model order (0 for a model without a stream).
    pub fn rates(&self) -> Vec<f64> {
        let n = self
            .streams
            .iter()
            .map(|s| s.model + 1)
            .max()
            .unwrap_or(0)
            .max(self.n_models);
        let mut r = vec![0.0; n];
        for s in &self.streams {
            r[s.model] = s.rate;
        }
        r
    }

    /// The same streams with every rate multiplied by `rate_scale` and every cv by `cv_scale`.
    pub fn scaled(&self, rate_scale: f64, cv_scale: f64) -> GammaWorkload {
        let mut w = self.clone();
        for s in &mut w.streams {
            s.rate *= rate_scale;
            s.cv *= cv_scale;
        }
        w
    }

    pub fn generate(&self) -> Trace {
        let n = self.streams.iter().map(|s| s.model + 1).max().unwrap_or(0);
        let mut per_model = vec![Vec::new(); n];
        for s in &self.streams {
            // Seeds are per model, not per stream position, so listing the streams in another
            // order or dropping one leaves every other model's arrivals unchanged.
            per_model[s.model] = gamma_arrivals(
                s.rate,
                s.cv,
                0.0,
                self.duration_s,
                self.seed.wrapping_add(s.model as u64),
            );
        }
        Trace::merge(per_model)
    }
}

/// `rate_i = total · (i+1)^(−alpha) / Σ_j (j+1)^(−alpha)`.
pub fn power_law_rates(total: f64, alpha: f64, n: usize) -> Vec<f64> {
    let w: Vec<f64> = (0..n).map(|i| ((i + 1) as f64).powf(-alpha)).collect();
    let s: f64 = w.iter().sum();
    if s.is_nan() || s <= 0.0 {
        return vec![0.0; n];
    }
    w.iter().map(|x| total * x / s).collect()
}

/// Arrivals of a Gamma renewal process on `[start, start + duration)`: the first arrival is
/// `start` plus the first gap. Gaps come sequentially from one ChaCha8 stream seeded with `seed`,
/// so a longer duration yields the shorter run as a prefix.
///
/// Gaps have shape `1/cv²` and scale `cv²/rate`, i.e. mean `1/rate` and coefficient of variation
/// `cv`. A non-positive or non-finite rate, duration or cv gives no arrivals. The output is capped
/// at [`MAX_REQUESTS`] arrivals so that no input can exhaust memory; callers validate expected
/// counts against the same cap.
pub fn gamma_arrivals(rate: f64, cv: f64, start: f64, duration: f64, seed: u64) -> Vec<f64> {
    let usable = |x: f64| x.is_finite() && x > 0.0;
    if !(usable(rate) && usable(duration) && usable(cv) && start.is_finite()) {
        return Vec::new();
    }
    let shape = 1.0 / (cv * cv);
    let scale = cv * cv / rate;
    let Ok(dist) = Gamma::new(shape, scale) else {
        return Vec::new();
    };
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let end = start + duration;
    let expected = (rate * duration * 1.1).min(MAX_REQUESTS as f64);
    let mut out = Vec::with_capacity(expected as usize + 4);
    let mut t = start + dist.sample(&mut rng);
    while t < end && out.len() < MAX_REQUESTS {
        out.push(t);
        t += dist.sample(&mut rng);
    }
    out
}
