//! LLM workloads: requests carry prompt and output lengths (llm-serving.md §1.10, §6).
//!
//! Kinds:
//! - `requests`: an explicit list (hand-checked tests).
//! - `power_law`: MuxServe's synthetic generator, λ_i = base_rate · rate_scale · (i+1)^−α over the
//!   instance's LLMs in popularity order, Gamma arrivals, log-normal lengths (ShareGPT's means
//!   161/337 by default; ShareGPT itself is not shipped, so lengths are **synthetic**).
//! - `azure_llm`: the Azure LLM inference trace 2023 (CC-BY 4.0; Patel et al., "Splitwise:
//!   Efficient generative LLM inference using phase splitting", ISCA 2024): real timestamps and
//!   lengths, time compressed by `speedup`, requests assigned to LLMs by seeded power-law popularity.
//! - `chatlmsys`: a **synthetic** ChatLMSYS-shaped multi-LLM trace: per-LLM rates that drift in
//!   windows over a 12-hour day compressed by `compression`, lengths with the published means.

use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, LogNormal};
use serde::Deserialize;

use crate::error::{read_file, Result, SolverError};
use crate::workload::{check_requests, gamma_arrivals};

/// A time-sorted request stream with lengths, as parallel columns indexed by request id.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LlmTrace {
    pub arrival_s: Vec<f64>,
    pub llm: Vec<u32>,
    pub prompt: Vec<u32>,
    pub output: Vec<u32>,
}

impl LlmTrace {
    pub fn len(&self) -> usize {
        self.arrival_s.len()
    }
    pub fn is_empty(&self) -> bool {
        self.arrival_s.is_empty()
    }
    /// Time of the last arrival minus the first (at least 1 s, so rates stay finite).
    pub fn span_s(&self) -> f64 {
        match (self.arrival_s.first(), self.arrival_s.last()) {
            (Some(a), Some(b)) if b - a > 1.0 => b - a,
            _ => 1.0,
        }
    }
    pub fn counts(&self, n: usize) -> Vec<usize> {
        let mut c = vec![0; n];
        for &m in &self.llm {
            c[m as usize] += 1;
        }
        c
    }
    /// Per-LLM mean prompt and output lengths (161 and 337, ShareGPT's, for an LLM without requests).
    pub fn mean_lengths(&self, n: usize) -> Vec<(f64, f64)> {
        let mut acc = vec![(0.0, 0.0, 0usize); n];
        for i in 0..self.len() {
            let a = &mut acc[self.llm[i] as usize];
            a.0 += self.prompt[i] as f64;
            a.1 += self.output[i] as f64;
            a.2 += 1;
        }
        acc.iter()
            .map(|&(p, o, c)| {
                if c == 0 {
                    (161.0, 337.0)
                } else {
                    (p / c as f64, o / c as f64)
                }
            })
            .collect()
    }
    /// Per-LLM request rate over the trace span.
    pub fn rates(&self, n: usize) -> Vec<f64> {
        let span = self.span_s();
        self.counts(n).iter().map(|&c| c as f64 / span).collect()
    }
    /// Sorts by (time, llm, prompt, output) so the result does not depend on generation order.
    fn sort(&mut self) {
        let mut idx: Vec<usize> = (0..self.len()).collect();
        idx.sort_by(|&a, &b| {
            self.arrival_s[a]
                .total_cmp(&self.arrival_s[b])
                .then(self.llm[a].cmp(&self.llm[b]))
                .then(self.prompt[a].cmp(&self.prompt[b]))
                .then(self.output[a].cmp(&self.output[b]))
        });
        *self = LlmTrace {
            arrival_s: idx.iter().map(|&i| self.arrival_s[i]).collect(),
            llm: idx.iter().map(|&i| self.llm[i]).collect(),
            prompt: idx.iter().map(|&i| self.prompt[i]).collect(),
            output: idx.iter().map(|&i| self.output[i]).collect(),
        };
    }
    fn push(&mut self, t: f64, llm: u32, prompt: u32, output: u32) {
        self.arrival_s.push(t);
        self.llm.push(llm);
        self.prompt.push(prompt);
        self.output.push(output);
    }
}

/// A length distribution: log-normal with a mean and coefficient of variation, filtered.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Lengths {
    pub prompt_mean: f64,
    #[serde(default = "default_cv")]
    pub prompt_cv: f64,
    pub output_mean: f64,
    #[serde(default = "default_cv")]
    pub output_cv: f64,
    /// MuxServe's filter: 4 ≤ prompt ≤ max_prompt and prompt + output ≤ max_total.
    #[serde(default = "default_max_prompt")]
    pub max_prompt: u32,
    #[serde(default = "default_max_total")]
    pub max_total: u32,
}

fn default_cv() -> f64 {
    1.0
}
fn default_max_prompt() -> u32 {
    1024
}
fn default_max_total() -> u32 {
    2048
}

impl Lengths {
    /// ShareGPT's means (161 prompt, 337 output) with MuxServe's filter.
    pub fn sharegpt() -> Lengths {
        Lengths {
            prompt_mean: 161.0,
            prompt_cv: 1.0,
            output_mean: 337.0,
            output_cv: 1.0,
            max_prompt: 1024,
            max_total: 2048,
        }
    }
    /// ChatLMSYS means (100.2 prompt, 261.3 output).
    pub fn chatlmsys() -> Lengths {
        Lengths {
            prompt_mean: 100.2,
            output_mean: 261.3,
            ..Lengths::sharegpt()
        }
    }

    fn sampler(mean: f64, cv: f64) -> Option<LogNormal<f64>> {
        let s2 = (1.0 + cv * cv).ln();
        LogNormal::new(mean.ln() - s2 / 2.0, s2.sqrt()).ok()
    }

    /// Draws (prompt, output) by rejection until the filter passes.
    fn sample(&self, rng: &mut ChaCha8Rng, p: &LogNormal<f64>, o: &LogNormal<f64>) -> (u32, u32) {
        for _ in 0..1000 {
            let prompt = p.sample(rng).round().max(1.0) as u32;
            let output = o.sample(rng).round().max(1.0) as u32;
            if (4..=self.max_prompt).contains(&prompt) && prompt + output <= self.max_total {
                return (prompt, output);
            }
        }
        // The filter is validated to admit (4, 1); reaching here means a pathological distribution.
        (4, 1)
    }

    fn validate(&self, file: &Path, at: &str) -> Result<()> {
        for (k, v) in [
            ("prompt_mean", self.prompt_mean),
            ("output_mean", self.output_mean),
            ("prompt_cv", self.prompt_cv),
            ("output_cv", self.output_cv),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err(SolverError::invalid(
                    file,
                    format!("{at}.{k}"),
                    format!("expected a positive number, found {v}"),
                ));
            }
        }
        if self.max_prompt < 4 || self.max_total < 5 {
            return Err(SolverError::invalid(
                file,
                at,
                "expected max_prompt ≥ 4 and max_total ≥ 5",
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestEntry {
    t_s: f64,
    llm: String,
    prompt_tokens: u32,
    output_tokens: u32,
}

/// MuxServe's synthetic generator.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PowerLaw {
    pub alpha: f64,
    #[serde(default = "one")]
    pub rate_scale: f64,
    /// λ of the most popular LLM at rate_scale 1 (MuxServe: 40 req/s).
    #[serde(default = "forty")]
    pub base_rate: f64,
    pub duration_s: f64,
    #[serde(default = "one")]
    pub cv: f64,
    #[serde(default)]
    pub seed: u64,
    #[serde(default = "Lengths::sharegpt")]
    pub lengths: Lengths,
}

fn one() -> f64 {
    1.0
}
fn forty() -> f64 {
    40.0
}

/// The Azure LLM inference trace.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AzureLlm {
    /// CSV path, relative to the instance file.
    pub path: String,
    /// Arrival times are divided by this (2 = twice the rate).
    #[serde(default = "one")]
    pub speedup: f64,
    /// Window of the original trace, seconds from its first request.
    #[serde(default)]
    pub start_s: f64,
    #[serde(default)]
    pub duration_s: Option<f64>,
    /// Popularity skew when there are several LLMs (the trace has no model id).
    #[serde(default = "one")]
    pub alpha: f64,
    #[serde(default)]
    pub seed: u64,
    /// Long-context mix derived from the trace (absent: the trace's own lengths).
    #[serde(default)]
    pub long_context: Option<LongContext>,
}

/// A long-context mix derived from a trace, for studying requests that do not fit a TP1 engine
/// (llm-serving.md §6: no request of the 2023 Azure traces exceeds ≈ 14 k tokens). The
/// `fraction` of the window's requests with the longest prompts get their prompt multiplied by
/// `scale`, capped at `max_prompt` (the model's context window). Everything else is untouched:
/// arrival times, output lengths and the other requests are the trace's own, so the long
/// requests arrive where the trace's longest prompts arrived. Ties in prompt length are broken by
/// a seeded hash of the request's position, so a lump of equal lengths (the code trace's ≈ 7.4 k
/// cap) is sampled evenly over time rather than from the window's start.
/// `max_context`, when set, is the model's context window: a stretched prompt is also capped at
/// `max_context` − the request's output, so prompt + output is what the model accepts
/// (Qwen2.5-32B: 32 768).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LongContext {
    pub fraction: f64,
    pub scale: f64,
    #[serde(default = "default_max_context")]
    pub max_prompt: u32,
    #[serde(default)]
    pub max_context: Option<u32>,
}

fn default_max_context() -> u32 {
    131_072
}

/// The synthetic ChatLMSYS-shaped trace.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatLmsys {
    /// Time compression c of the 12-hour window (MuxServe: 500 … 2000).
    pub compression: f64,
    #[serde(default = "default_window")]
    pub window_s: f64,
    /// Popularity skew across LLMs.
    #[serde(default = "default_chat_alpha")]
    pub alpha: f64,
    /// Mean rate of the hottest LLM per unit of compression; 0.0055 reproduces the note's means
    /// (about 2 req/s at c = 500 … 11 at c = 2000).
    #[serde(default = "default_rate_per_c")]
    pub top_rate_per_compression: f64,
    /// Number of rate windows; each LLM's rate is scaled by a seeded log-normal factor per window.
    #[serde(default = "default_windows")]
    pub windows: u32,
    #[serde(default = "default_drift")]
    pub drift_sigma: f64,
    #[serde(default)]
    pub seed: u64,
    #[serde(default = "Lengths::chatlmsys")]
    pub lengths: Lengths,
}

/// Most rate windows of a ChatLMSYS-shaped trace (one per 0.4 s of the 12-hour day).
const MAX_WINDOWS: u32 = 100_000;

fn default_window() -> f64 {
    43200.0
}
fn default_chat_alpha() -> f64 {
    0.9
}
fn default_rate_per_c() -> f64 {
    0.0055
}
fn default_windows() -> u32 {
    24
}
fn default_drift() -> f64 {
    0.6
}

/// The validated `workload` of an LLM instance.
#[derive(Debug, Clone, PartialEq)]
pub enum LlmWorkload {
    Requests(LlmTrace),
    PowerLaw(PowerLaw),
    AzureLlm(AzureLlm),
    ChatLmsys(ChatLmsys),
}

const KINDS: &str = "requests, power_law, azure_llm, chatlmsys";

fn positive(file: &Path, at: &str, v: f64) -> Result<()> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(SolverError::invalid(
            file,
            at,
            format!("expected a positive finite number, found {v}"),
        ))
    }
}

impl LlmWorkload {
    /// Validates the `workload` object; `llms` are the LLM names in id order.
    pub fn parse(file: &Path, value: &serde_json::Value, llms: &[String]) -> Result<LlmWorkload> {
        let kind = value.get("kind").and_then(|k| k.as_str()).ok_or_else(|| {
            SolverError::invalid(
                file,
                "workload.kind",
                format!("expected a string: one of {KINDS}"),
            )
        })?;
        let mut obj = value.clone();
        if let Some(m) = obj.as_object_mut() {
            m.remove("kind");
        }
        match kind {
            "requests" => {
                #[derive(Deserialize)]
                #[serde(deny_unknown_fields)]
                struct F {
                    requests: Vec<RequestEntry>,
                }
                let f: F = crate::workload::parse_at(file, "workload", &obj)?;
                let mut t = LlmTrace::default();
                let mut last = 0.0f64;
                for (i, r) in f.requests.iter().enumerate() {
                    let at = format!("workload.requests[{i}]");
                    if !r.t_s.is_finite() || r.t_s < last {
                        return Err(SolverError::invalid(
                            file,
                            format!("{at}.t_s"),
                            format!("expected a finite time ≥ 0 and ≥ the previous request's ({last}), found {}", r.t_s),
                        ));
                    }
                    last = r.t_s;
                    let m = llms.iter().position(|n| *n == r.llm).ok_or_else(|| {
                        SolverError::invalid(
                            file,
                            format!("{at}.llm"),
                            format!("unknown LLM \"{}\"", r.llm),
                        )
                    })?;
                    if r.prompt_tokens == 0 || r.output_tokens == 0 {
                        return Err(SolverError::invalid(
                            file,
                            at,
                            "expected prompt_tokens ≥ 1 and output_tokens ≥ 1",
                        ));
                    }
                    t.push(r.t_s, m as u32, r.prompt_tokens, r.output_tokens);
                }
                Ok(LlmWorkload::Requests(t))
            }
            "power_law" => {
                let p: PowerLaw = crate::workload::parse_at(file, "workload", &obj)?;
                positive(file, "workload.duration_s", p.duration_s)?;
                positive(file, "workload.rate_scale", p.rate_scale)?;
                positive(file, "workload.base_rate", p.base_rate)?;
                crate::workload::check_cv(p.cv)
                    .map_err(|e| SolverError::invalid(file, "workload.cv", e))?;
                if !(p.alpha.is_finite() && p.alpha >= 0.0) {
                    return Err(SolverError::invalid(
                        file,
                        "workload.alpha",
                        "expected a finite α ≥ 0",
                    ));
                }
                p.lengths.validate(file, "workload.lengths")?;
                let w = LlmWorkload::PowerLaw(p);
                w.check_size(llms.len())
                    .map_err(|e| SolverError::invalid(file, "workload", e))?;
                Ok(w)
            }
            "azure_llm" => {
                let a: AzureLlm = crate::workload::parse_at(file, "workload", &obj)?;
                positive(file, "workload.speedup", a.speedup)?;
                if let Some(d) = a.duration_s {
                    positive(file, "workload.duration_s", d)?;
                }
                if !(a.start_s.is_finite() && a.start_s >= 0.0) {
                    return Err(SolverError::invalid(
                        file,
                        "workload.start_s",
                        "expected a time ≥ 0",
                    ));
                }
                if let Some(l) = &a.long_context {
                    if !(l.fraction > 0.0 && l.fraction <= 1.0) {
                        return Err(SolverError::invalid(
                            file,
                            "workload.long_context.fraction",
                            format!("expected a fraction in (0, 1], found {}", l.fraction),
                        ));
                    }
                    if !(l.scale.is_finite() && l.scale >= 1.0) {
                        return Err(SolverError::invalid(
                            file,
                            "workload.long_context.scale",
                            format!("expected a factor ≥ 1, found {}", l.scale),
                        ));
                    }
                    if l.max_prompt == 0 {
                        return Err(SolverError::invalid(
                            file,
                            "workload.long_context.max_prompt",
                            "expected at least 1 token",
                        ));
                    }
                    if l.max_context == Some(0) {
                        return Err(SolverError::invalid(
                            file,
                            "workload.long_context.max_context",
                            "expected at least 1 token",
                        ));
                    }
                }
                Ok(LlmWorkload::AzureLlm(a))
            }
            "chatlmsys" => {
                let c: ChatLmsys = crate::workload::parse_at(file, "workload", &obj)?;
                positive(file, "workload.compression", c.compression)?;
                positive(file, "workload.window_s", c.window_s)?;
                positive(
                    file,
                    "workload.top_rate_per_compression",
                    c.top_rate_per_compression,
                )?;
                if c.windows == 0 {
                    return Err(SolverError::invalid(
                        file,
                        "workload.windows",
                        "expected at least 1 window",
                    ));
                }
                if c.windows > MAX_WINDOWS {
                    return Err(SolverError::invalid(
                        file,
                        "workload.windows",
                        format!(
                            "expected at most {MAX_WINDOWS} windows, found {}",
                            c.windows
                        ),
                    ));
                }
                c.lengths.validate(file, "workload.lengths")?;
                let w = LlmWorkload::ChatLmsys(c);
                w.check_size(llms.len())
                    .map_err(|e| SolverError::invalid(file, "workload", e))?;
                Ok(w)
            }
            other => Err(SolverError::invalid(
                file,
                "workload.kind",
                format!("unknown LLM workload kind \"{other}\"; expected one of {KINDS}"),
            )),
        }
    }

    /// Scales the offered load by `s` (rate_scale, speedup or compression).
    pub fn scale_rate(&mut self, s: f64) {
        match self {
            LlmWorkload::Requests(t) => t.arrival_s.iter_mut().for_each(|x| *x /= s),
            LlmWorkload::PowerLaw(p) => p.rate_scale *= s,
            LlmWorkload::AzureLlm(a) => a.speedup *= s,
            LlmWorkload::ChatLmsys(c) => c.compression *= s,
        }
    }

    /// Sets the popularity skew α (power-law, Azure and ChatLMSYS workloads); false for an
    /// explicit request list, which has no α.
    pub fn set_alpha(&mut self, alpha: f64) -> bool {
        match self {
            LlmWorkload::Requests(_) => false,
            LlmWorkload::PowerLaw(p) => {
                p.alpha = alpha;
                true
            }
            LlmWorkload::AzureLlm(a) => {
                a.alpha = alpha;
                true
            }
            LlmWorkload::ChatLmsys(c) => {
                c.alpha = alpha;
                true
            }
        }
    }

    /// Expected number of requests for `n` LLMs, for the generated kinds (`None` for a request
    /// list or a trace file, whose size is what it is).
    pub fn expected_requests(&self, n: usize) -> Option<f64> {
        let popularity = |alpha: f64| (1..=n).map(|i| (i as f64).powf(-alpha)).sum::<f64>();
        match self {
            LlmWorkload::Requests(_) | LlmWorkload::AzureLlm(_) => None,
            LlmWorkload::PowerLaw(p) => {
                Some(p.base_rate * p.rate_scale * popularity(p.alpha) * p.duration_s)
            }
            // The rate grows with the compression and the span shrinks with it: the count is
            // the uncompressed window's (the drift factors have mean 1).
            LlmWorkload::ChatLmsys(c) => {
                Some(c.top_rate_per_compression * popularity(c.alpha) * c.window_s)
            }
        }
    }

    /// Refuses a generated workload of more than [`crate::workload::MAX_REQUESTS`] requests (a
    /// rate or duration typed with a few zeros too many would otherwise exhaust memory), naming
    /// its size.
    fn check_size(&self, n: usize) -> std::result::Result<(), String> {
        match self.expected_requests(n) {
            Some(e) => check_requests(e).map_err(|e| format!("the workload gives {e}")),
            None => Ok(()),
        }
    }

    /// Generates the request stream for `n` LLMs. `base_dir` anchors relative paths. Checks the
    /// size again, since a sweep may have scaled the rate since the file was read.
    pub fn generate(&self, base_dir: &Path, n: usize) -> Result<LlmTrace> {
        self.check_size(n).map_err(SolverError::Option)?;
        match self {
            LlmWorkload::Requests(t) => Ok(t.clone()),
            LlmWorkload::PowerLaw(p) => Ok(power_law(p, n)),
            LlmWorkload::AzureLlm(a) => azure(a, base_dir, n),
            LlmWorkload::ChatLmsys(c) => Ok(chatlmsys(c, n)),
        }
    }
}

/// Per-LLM seeds derived from one seed, so adding an LLM never changes the others' streams.
fn sub_seed(seed: u64, i: usize, salt: u64) -> u64 {
    seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add((i as u64 + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9))
        ^ salt
}

fn power_law(p: &PowerLaw, n: usize) -> LlmTrace {
    let mut t = LlmTrace::default();
    let (Some(pd), Some(od)) = (
        Lengths::sampler(p.lengths.prompt_mean, p.lengths.prompt_cv),
        Lengths::sampler(p.lengths.output_mean, p.lengths.output_cv),
    ) else {
        return t;
    };
    for i in 0..n {
        let rate = p.base_rate * p.rate_scale * ((i + 1) as f64).powf(-p.alpha);
        let times = gamma_arrivals(rate, p.cv, 0.0, p.duration_s, sub_seed(p.seed, i, 1));
        let mut rng = ChaCha8Rng::seed_from_u64(sub_seed(p.seed, i, 2));
        for x in times {
            let (a, b) = p.lengths.sample(&mut rng, &pd, &od);
            t.push(x, i as u32, a, b);
        }
    }
    t.sort();
    t
}

/// Parses `YYYY-MM-DD HH:MM:SS.fffffff` into seconds since the start of that day plus day count.
fn parse_timestamp(s: &str) -> Option<f64> {
    let (date, time) = s.trim().split_once(' ')?;
    let mut d = date.split('-');
    let (y, mo, da): (i64, i64, i64) = (
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
    );
    let mut tp = time.split(':');
    let (h, mi): (f64, f64) = (tp.next()?.parse().ok()?, tp.next()?.parse().ok()?);
    let sec: f64 = tp.next()?.parse().ok()?;
    // Days from a civil date (proleptic Gregorian), enough to order timestamps across midnight.
    let (y2, m2) = if mo <= 2 {
        (y - 1, mo + 9)
    } else {
        (y, mo - 3)
    };
    let days = 365 * y2 + y2 / 4 - y2 / 100 + y2 / 400 + (153 * m2 + 2) / 5 + da;
    Some(days as f64 * 86400.0 + h * 3600.0 + mi * 60.0 + sec)
}

/// Reads an Azure LLM trace CSV: (seconds since the first request, prompt, output).
pub fn read_azure_csv(path: &Path) -> Result<Vec<(f64, u32, u32)>> {
    let text = read_file(path)?;
    let mut rows = Vec::new();
    let mut t0 = None;
    for (ln, line) in text.lines().enumerate() {
        if ln == 0 || line.trim().is_empty() {
            continue;
        }
        let bad = |what: &str| {
            SolverError::invalid(
                path,
                format!("line {}", ln + 1),
                format!("expected TIMESTAMP,ContextTokens,GeneratedTokens: {what}"),
            )
        };
        let mut f = line.split(',');
        let ts = parse_timestamp(f.next().unwrap_or("")).ok_or_else(|| bad("bad timestamp"))?;
        let p: u32 = f
            .next()
            .and_then(|x| x.trim().parse().ok())
            .ok_or_else(|| bad("bad ContextTokens"))?;
        let o: u32 = f
            .next()
            .and_then(|x| x.trim().parse().ok())
            .ok_or_else(|| bad("bad GeneratedTokens"))?;
        let t0 = *t0.get_or_insert(ts);
        // Zero-length prompts or outputs would be no-ops for the engine; count them as one token.
        rows.push((ts - t0, p.max(1), o.max(1)));
    }
    if rows.is_empty() {
        return Err(SolverError::invalid(path, "$", "the trace has no requests"));
    }
    Ok(rows)
}

fn azure(a: &AzureLlm, base_dir: &Path, n: usize) -> Result<LlmTrace> {
    let rows = read_azure_csv(&base_dir.join(&a.path))?;
    let end = a.duration_s.map_or(f64::INFINITY, |d| a.start_s + d);
    // Popularity weights for assigning requests to LLMs (the trace has no model id).
    let w: Vec<f64> = (0..n).map(|i| ((i + 1) as f64).powf(-a.alpha)).collect();
    let total: f64 = w.iter().sum();
    let mut rng = ChaCha8Rng::seed_from_u64(sub_seed(a.seed, 0, 3));
    let mut t = LlmTrace::default();
    for &(ts, p, o) in &rows {
        if ts < a.start_s || ts >= end {
            continue;
        }
        let mut u = rng.random::<f64>() * total;
        let mut m = n - 1;
        for (i, wi) in w.iter().enumerate() {
            if u < *wi {
                m = i;
                break;
            }
            u -= wi;
        }
        t.push((ts - a.start_s) / a.speedup, m as u32, p, o);
    }
    if let Some(l) = &a.long_context {
        lengthen_longest(&mut t, l, a.seed);
    }
    t.sort();
    Ok(t)
}

/// Applies a long-context mix: the `fraction` of requests with the longest prompts (ties by a
/// seeded hash of the position) get `scale` × their prompt, capped at `max_prompt` and at
/// `max_context` − output; a prompt is never shortened.
fn lengthen_longest(t: &mut LlmTrace, l: &LongContext, seed: u64) {
    let n = t.len();
    let k = ((n as f64 * l.fraction).round() as usize).min(n);
    let mut idx: Vec<usize> = (0..n).collect();
    let tie = |i: usize| sub_seed(seed, i, 6).wrapping_mul(0x94D0_49BB_1331_11EB);
    idx.sort_by(|&a, &b| t.prompt[b].cmp(&t.prompt[a]).then(tie(a).cmp(&tie(b))));
    for &i in &idx[..k] {
        let window = l
            .max_context
            .map_or(f64::INFINITY, |c| c.saturating_sub(t.output[i]) as f64);
        let p = (t.prompt[i] as f64 * l.scale)
            .round()
            .min(l.max_prompt as f64)
            .min(window);
        t.prompt[i] = (p as u32).max(t.prompt[i]);
    }
}

fn chatlmsys(c: &ChatLmsys, n: usize) -> LlmTrace {
    let mut t = LlmTrace::default();
    let (Some(pd), Some(od)) = (
        Lengths::sampler(c.lengths.prompt_mean, c.lengths.prompt_cv),
        Lengths::sampler(c.lengths.output_mean, c.lengths.output_cv),
    ) else {
        return t;
    };
    let span = c.window_s / c.compression;
    let win = span / c.windows as f64;
    let top = c.top_rate_per_compression * c.compression;
    let drift = LogNormal::new(-c.drift_sigma * c.drift_sigma / 2.0, c.drift_sigma).ok();
    for i in 0..n {
        let base = top * ((i + 1) as f64).powf(-c.alpha);
        let mut rng = ChaCha8Rng::seed_from_u64(sub_seed(c.seed, i, 4));
        for w in 0..c.windows {
            let f = drift.as_ref().map_or(1.0, |d| d.sample(&mut rng));
            let times = gamma_arrivals(
                base * f,
                1.0,
                w as f64 * win,
                win,
                sub_seed(c.seed, i * 1000 + w as usize, 5),
            );
            for x in times {
                let (a, b) = c.lengths.sample(&mut rng, &pd, &od);
                t.push(x, i as u32, a, b);
            }
        }
    }
    t.sort();
    t
}
