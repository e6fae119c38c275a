//! Metrics of an LLM simulation (llm-serving.md §1.11): TTFT, TPOT, latency, SLO attainment,
//! throughput and goodput, overall and per LLM.

use indexmap::IndexMap;
use serde::Serialize;

use super::cost::StepCost;
use super::instance::LlmInstance;
use super::sim::{DropReason, RunResult};
use super::workload::LlmTrace;

pub const LLM_SIM_SCHEMA: &str = "plexserve/llm-sim/v1";

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Percentiles {
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p95: f64,
    pub p99: f64,
}

impl Percentiles {
    /// Nearest-rank percentiles; sorts `v` in place.
    pub fn of(v: &mut [f64]) -> Percentiles {
        if v.is_empty() {
            return Percentiles::default();
        }
        v.sort_by(f64::total_cmp);
        let at = |q: f64| v[(((v.len() as f64) * q).ceil() as usize).clamp(1, v.len()) - 1];
        Percentiles {
            mean: v.iter().sum::<f64>() / v.len() as f64,
            p50: at(0.5),
            p90: at(0.9),
            p95: at(0.95),
            p99: at(0.99),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LlmModelReport {
    pub requests: u64,
    pub finished: u64,
    pub dropped: u64,
    pub good: u64,
    pub slo_attainment: f64,
    pub throughput_rps: f64,
    pub ttft_p99_s: f64,
    pub tpot_p99_s: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LlmSimReport {
    pub schema: String,
    pub requests: u64,
    pub finished: u64,
    pub dropped: u64,
    pub dropped_too_long: u64,
    pub dropped_preempted: u64,
    pub dropped_horizon: u64,
    pub stuck: u64,
    pub good: u64,
    pub slo_attainment: f64,
    /// Finished requests per second from the first arrival to the last completion.
    pub throughput_rps: f64,
    /// MuxServe's system throughput: request-weighted mean over LLMs of finished / last completion.
    pub muxserve_throughput_rps: f64,
    /// Requests meeting their SLO per second of the trace's arrival span (first → last arrival).
    /// The span is fixed by the workload, so every configuration of one instance divides by the
    /// same number and goodput ranks configurations exactly as `good` does; a time base ending at
    /// the last completion would instead charge every request for when the slowest one finished.
    pub goodput_rps: f64,
    /// First → last arrival, seconds (goodput's time base; at least 1 s, `LlmTrace::span_s`).
    pub arrival_span_s: f64,
    pub output_tokens_per_s: f64,
    pub makespan_s: f64,
    pub ttft_s: Percentiles,
    pub tpot_s: Percentiles,
    pub latency_s: Percentiles,
    pub preemptions: u64,
    pub iterations: u64,
    pub kv_peak_fraction: f64,
    pub merges: u32,
    pub splits: u32,
    pub transform_s: f64,
    pub per_llm: IndexMap<String, LlmModelReport>,
}

/// Per-request SLO judgement: `Some(good)` for finished requests, `None` for dropped ones.
pub fn judge(inst: &LlmInstance, trace: &LlmTrace, res: &RunResult) -> Vec<Option<bool>> {
    let home: Vec<StepCost> = (0..inst.llms.len())
        .map(|m| inst.step_cost(m, inst.home_tp(m)))
        .collect();
    let o = &res.outcomes;
    (0..trace.len())
        .map(|r| {
            if o.dropped[r].is_some() {
                return None;
            }
            let m = trace.llm[r] as usize;
            let l = &inst.llms[m];
            let lat = o.finish_s[r] - trace.arrival_s[r];
            let ttft = o.first_token_s[r] - trace.arrival_s[r];
            let tpot = (o.finish_s[r] - o.first_token_s[r]) / trace.output[r] as f64;
            let mut good = true;
            if let Some(s) = l.slo_scale {
                good &= lat <= s * home[m].isolated_latency_s(trace.prompt[r], trace.output[r]);
            }
            if let Some(s) = l.ttft_slo_s {
                good &= ttft <= s;
            }
            if let Some(s) = l.tpot_slo_s {
                good &= tpot <= s;
            }
            Some(good)
        })
        .collect()
}

impl LlmSimReport {
    pub fn new(inst: &LlmInstance, trace: &LlmTrace, res: &RunResult) -> LlmSimReport {
        let o = &res.outcomes;
        let verdict = judge(inst, trace, res);
        let n_llm = inst.llms.len();
        let mut rep = LlmSimReport {
            schema: LLM_SIM_SCHEMA.into(),
            requests: trace.len() as u64,
            ..Default::default()
        };
        let (mut ttft, mut tpot, mut lat) = (Vec::new(), Vec::new(), Vec::new());
        let mut per: Vec<LlmModelReport> = vec![LlmModelReport::default(); n_llm];
        let mut per_ttft: Vec<Vec<f64>> = vec![Vec::new(); n_llm];
        let mut per_tpot: Vec<Vec<f64>> = vec![Vec::new(); n_llm];
        let mut last = vec![0.0f64; n_llm];
        let t0 = trace.arrival_s.first().copied().unwrap_or(0.0);
        let mut t_end = t0;
        let mut tokens = 0u64;
        for (r, v) in verdict.iter().enumerate() {
            let m = trace.llm[r] as usize;
            per[m].requests += 1;
            match o.dropped[r] {
                Some(why) => {
                    rep.dropped += 1;
                    per[m].dropped += 1;
                    match why {
                        DropReason::TooLong => rep.dropped_too_long += 1,
                        DropReason::Preempted => rep.dropped_preempted += 1,
                        DropReason::Horizon => rep.dropped_horizon += 1,
                        DropReason::Stuck => rep.stuck += 1,
                    }
                }
                None => {
                    rep.finished += 1;
                    per[m].finished += 1;
                    let a = trace.arrival_s[r];
                    let f = o.finish_s[r];
                    t_end = t_end.max(f);
                    last[m] = last[m].max(f);
                    tokens += trace.output[r] as u64;
                    let t1 = o.first_token_s[r] - a;
                    let t2 = (f - o.first_token_s[r]) / trace.output[r] as f64;
                    ttft.push(t1);
                    tpot.push(t2);
                    lat.push(f - a);
                    per_ttft[m].push(t1);
                    per_tpot[m].push(t2);
                    if *v == Some(true) {
                        rep.good += 1;
                        per[m].good += 1;
                    }
                }
            }
        }
        let span = (t_end - t0).max(1e-9);
        rep.makespan_s = t_end - t0;
        rep.slo_attainment = if rep.requests == 0 {
            1.0
        } else {
            rep.good as f64 / rep.requests as f64
        };
        rep.throughput_rps = rep.finished as f64 / span;
        rep.arrival_span_s = trace.span_s();
        rep.goodput_rps = rep.good as f64 / rep.arrival_span_s.max(1e-9);
        rep.output_tokens_per_s = tokens as f64 / span;
        rep.ttft_s = Percentiles::of(&mut ttft);
        rep.tpot_s = Percentiles::of(&mut tpot);
        rep.latency_s = Percentiles::of(&mut lat);
        let mut weighted = 0.0;
        for m in 0..n_llm {
            let p = &mut per[m];
            p.slo_attainment = if p.requests == 0 {
                1.0
            } else {
                p.good as f64 / p.requests as f64
            };
            p.throughput_rps = if last[m] > 0.0 {
                p.finished as f64 / last[m]
            } else {
                0.0
            };
            weighted += p.throughput_rps * p.requests as f64;
            p.ttft_p99_s = Percentiles::of(&mut per_ttft[m]).p99;
            p.tpot_p99_s = Percentiles::of(&mut per_tpot[m]).p99;
            rep.per_llm.insert(inst.llms[m].name.clone(), p.clone());
        }
        rep.muxserve_throughput_rps = if rep.requests == 0 {
            0.0
        } else {
            weighted / rep.requests as f64
        };
        rep.preemptions = res.stats.preemptions;
        rep.iterations = res.stats.iterations;
        rep.kv_peak_fraction = res.stats.kv_peak_fraction;
        rep.merges = res.stats.merges;
        rep.splits = res.stats.splits;
        rep.transform_s = res.stats.transform_s;
        rep
    }

    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).unwrap_or_default();
        s.push('\n');
        s
    }
}

/// Writes one CSV row per request of a run (`llm simulate --requests-out`):
/// `request,llm,arrival_s,prompt_tokens,output_tokens,status,engine,first_token_s,finish_s,ttft_s,tpot_s,latency_s,preemptions,good`.
/// `status` is `finished` or why the request was dropped (`too_long`, `preempted`, `horizon`,
/// `stuck`); a dropped request has empty times, and an empty engine when it was dropped at
/// arrival. `good` is the SLO verdict of [`judge`] (0 for a dropped request).
pub fn write_llm_requests_csv(
    inst: &LlmInstance,
    trace: &LlmTrace,
    res: &RunResult,
    w: &mut impl std::io::Write,
) -> std::io::Result<()> {
    let verdict = judge(inst, trace, res);
    let o = &res.outcomes;
    writeln!(
        w,
        "request,llm,arrival_s,prompt_tokens,output_tokens,status,engine,first_token_s,finish_s,ttft_s,tpot_s,latency_s,preemptions,good"
    )?;
    for (r, good) in verdict.iter().enumerate() {
        let name = crate::sim::csv_field(&inst.llms[trace.llm[r] as usize].name);
        let (arrival, prompt, output) = (trace.arrival_s[r], trace.prompt[r], trace.output[r]);
        let engine = match o.engine[r] {
            u32::MAX => String::new(),
            e => e.to_string(),
        };
        let status = match o.dropped[r] {
            None => "finished",
            Some(DropReason::TooLong) => "too_long",
            Some(DropReason::Preempted) => "preempted",
            Some(DropReason::Horizon) => "horizon",
            Some(DropReason::Stuck) => "stuck",
        };
        let times = if o.dropped[r].is_some() {
            ",,,,".to_string()
        } else {
            let (first, finish) = (o.first_token_s[r], o.finish_s[r]);
            format!(
                "{first},{finish},{},{},{}",
                first - arrival,
                (finish - first) / output as f64,
                finish - arrival
            )
        };
        writeln!(
            w,
            "{r},{name},{arrival},{prompt},{output},{status},{engine},{times},{},{}",
            o.preemptions[r],
            u8::from(*good == Some(true))
        )?;
    }
    Ok(())
}
