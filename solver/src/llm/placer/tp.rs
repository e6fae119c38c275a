//! Tensor-parallel configurations of one LLM for the Amoeba study (llm-serving.md §3): static TP-k
//! replicas, a static hybrid (TP-N meshes beside TP1 replicas), and dynamic TP transformation
//! (groups of N TP1 replicas that merge into TP-N for long requests and split back).

use std::time::Instant;

use super::{check_params, LlmPlacer, LlmSolved};
use crate::error::{Result, SolverError};
use crate::llm::instance::LlmInstance;
use crate::llm::plan::{
    Deployment, EngineSpec, TransformKnobs, TransformPolicy, TransformSpec, UnitSpec,
};
use crate::llm::workload::LlmTrace;
use crate::placer::PlaceOptions;

fn single_llm(inst: &LlmInstance, placer: &str) -> Result<()> {
    if inst.llms.len() != 1 {
        return Err(SolverError::Option(format!(
            "placer {placer} serves one LLM; the instance has {}",
            inst.llms.len()
        )));
    }
    Ok(())
}

fn degree(opts: &PlaceOptions, inst: &LlmInstance, default: f64) -> Result<u32> {
    let t = opts.number("tp", default)?;
    let t = t as u32;
    if t == 0 || !t.is_power_of_two() || t > inst.devices_per_node || inst.devices % t != 0 {
        return Err(SolverError::Option(format!(
            "option tp: expected a power of two dividing the node, found {t}"
        )));
    }
    if inst.llms[0].spec.kv_heads % t != 0 {
        return Err(SolverError::Option(format!(
            "option tp: {} KV heads do not split over {t} GPUs",
            inst.llms[0].spec.kv_heads
        )));
    }
    Ok(t)
}

fn engine() -> EngineSpec {
    EngineSpec {
        llm: 0,
        prefill_sm_pct: 100,
        decode_sm_pct: 100,
        quota: None,
    }
}

/// All GPUs as TP-`tp` replicas.
pub fn static_tp(inst: &LlmInstance, tp: u32) -> Deployment {
    let units = (0..inst.devices / tp)
        .map(|k| UnitSpec {
            devices: (k * tp..(k + 1) * tp).collect(),
            engines: vec![engine()],
        })
        .collect();
    Deployment {
        units,
        transforms: vec![],
    }
}

/// Per node: `big` TP-`tp` meshes, the rest TP-`rest` (TP1 by default).
pub fn hybrid_tp(inst: &LlmInstance, tp: u32, big: u32, rest: u32) -> Deployment {
    let per = inst.devices_per_node;
    let mut units = Vec::new();
    for node in 0..inst.devices / per {
        let base = node * per;
        let mut d = base;
        for _ in 0..big.min(per / tp) {
            units.push(UnitSpec {
                devices: (d..d + tp).collect(),
                engines: vec![engine()],
            });
            d += tp;
        }
        while d + rest <= base + per {
            units.push(UnitSpec {
                devices: (d..d + rest).collect(),
                engines: vec![engine()],
            });
            d += rest;
        }
    }
    Deployment {
        units,
        transforms: vec![],
    }
}

/// TP1 replicas grouped for runtime merge/split up to degree `tp`. Stepwise: pairs of TP1 units
/// merge into TP2, pairs of TP2 groups into TP4, and so on (a binary tree per `tp` GPUs, so a
/// group grows one degree at a time and only as far as needed). Not stepwise: `tp` TP1 units
/// merge straight into one TP-`tp` engine.
pub fn dynamic_tp(
    inst: &LlmInstance,
    tp: u32,
    knobs: &TransformKnobs,
    stepwise: bool,
) -> Deployment {
    let mut dep = static_tp(inst, 1);
    let group = |units: Vec<usize>, groups: Vec<usize>| TransformSpec {
        units,
        groups,
        llm: 0,
        knobs: knobs.clone(),
    };
    if !stepwise || tp == 2 {
        for k in 0..inst.devices / tp {
            dep.transforms.push(group(
                (k * tp..(k + 1) * tp).map(|u| u as usize).collect(),
                vec![],
            ));
        }
        return dep;
    }
    // Level 1: pairs of units; each further level pairs the groups of the level below.
    let mut level: Vec<usize> = Vec::new();
    for k in 0..inst.devices / 2 {
        level.push(dep.transforms.len());
        dep.transforms
            .push(group(vec![2 * k as usize, 2 * k as usize + 1], vec![]));
    }
    let mut size = 2;
    while size < tp {
        let mut next = Vec::new();
        for pair in level.chunks(2) {
            if pair.len() == 2 {
                next.push(dep.transforms.len());
                dep.transforms.push(group(vec![], pair.to_vec()));
            }
        }
        level = next;
        size *= 2;
    }
    dep
}

/// Share of the trace (first arrivals) whose lengths `base=auto` reads.
const AUTO_BASE_PREFIX: f64 = 0.1;

/// `base=auto`: the base degree from the cost model and the short requests' lengths (those that
/// fit a TP1 engine, among the trace's first `AUTO_BASE_PREFIX` of arrivals, as a warm-up
/// sample would give). Starting at TP1, the degree doubles while decode takes most of an
/// engine's GPU time per request at its KV-limited batch: prefill-bound work is served best by
/// TP1 (prefill's per-GPU efficiency falls with the degree, and more replicas absorb bursts), but
/// when decode dominates, a TP1 engine's small KV caps its batch and a larger degree batches far
/// more sequences per weight read (the conversation trace: ≈ 19 sequences at TP1, ≈ 230 at TP2).
/// Rate-independent: it is a property of the lengths and the hardware.
fn auto_base(inst: &LlmInstance, trace: &LlmTrace, tp: u32) -> Result<u32> {
    let n = ((trace.len() as f64 * AUTO_BASE_PREFIX).ceil() as usize).min(trace.len());
    // Engine KV capacity and quota per degree, from the simulator's own engine table (a run
    // without requests).
    let engine = |b: u32| {
        crate::llm::LlmSim::new(inst, &LlmTrace::default(), &static_tp(inst, b))
            .run(&crate::llm::RunOptions::default())
            .stats
            .engines
            .first()
            .map(|e| (e.capacity_tokens, e.quota))
            .unwrap_or((0, 0))
    };
    let cap1 = engine(1).0;
    let (mut k, mut sp, mut so) = (0.0, 0.0, 0.0);
    for r in 0..n {
        if (trace.prompt[r] + trace.output[r]) as u64 <= cap1 {
            k += 1.0;
            sp += trace.prompt[r] as f64;
            so += trace.output[r] as f64;
        }
    }
    if k == 0.0 {
        return Ok(1);
    }
    let (p, o) = (sp / k, so / k);
    let mut b = 1;
    while 2 * b < tp {
        let (cap, quota) = engine(b);
        let mut batch = (cap as f64 / (p + o)).floor().max(1.0);
        if quota > 0 {
            batch = batch.min(quota as f64);
        }
        let c = inst.step_cost(0, b);
        let prefill = c.prefill_s(p, p * p, 1.0);
        let decode = o * c.decode_s(batch, batch * (p + 0.5 * o), 1.0) / batch;
        if decode <= prefill {
            break;
        }
        b *= 2;
    }
    Ok(b)
}

/// Whether `d` is a TP degree below `tp`: a power of two (1 included) less than `tp`.
fn degree_below(d: u32, tp: u32) -> bool {
    d.is_power_of_two() && d < tp
}

pub struct TpStatic;

impl LlmPlacer for TpStatic {
    fn name(&self) -> &'static str {
        "tp-static"
    }
    fn description(&self) -> &'static str {
        "one LLM: every GPU group a static TP-k replica (option tp, default 1)"
    }
    fn place(
        &self,
        inst: &LlmInstance,
        _trace: &LlmTrace,
        opts: &PlaceOptions,
    ) -> Result<LlmSolved> {
        check_params(opts, self.name(), &["tp"])?;
        single_llm(inst, self.name())?;
        let t0 = Instant::now();
        Ok(LlmSolved::heuristic(
            static_tp(inst, degree(opts, inst, 1.0)?),
            0,
            t0,
        ))
    }
}

pub struct TpHybrid;

impl LlmPlacer for TpHybrid {
    fn name(&self) -> &'static str {
        "tp-hybrid"
    }
    fn description(&self) -> &'static str {
        "one LLM: per node `big` static TP-N meshes (options tp=4, big=1), the rest TP-`rest` (default 1); long requests go to TP-N"
    }
    fn place(
        &self,
        inst: &LlmInstance,
        _trace: &LlmTrace,
        opts: &PlaceOptions,
    ) -> Result<LlmSolved> {
        check_params(opts, self.name(), &["tp", "big", "rest"])?;
        single_llm(inst, self.name())?;
        let t0 = Instant::now();
        let big = opts.number("big", 1.0)?.max(0.0) as u32;
        let tp = degree(opts, inst, 4.0)?;
        let rest = opts.number("rest", 1.0)? as u32;
        if !degree_below(rest, tp) {
            return Err(SolverError::Option(format!(
                "option rest: expected a power of two below tp = {tp}, found {rest}"
            )));
        }
        Ok(LlmSolved::heuristic(hybrid_tp(inst, tp, big, rest), 0, t0))
    }
}

pub struct TpDynamic;

impl LlmPlacer for TpDynamic {
    fn name(&self) -> &'static str {
        "tp-dynamic"
    }
    fn description(&self) -> &'static str {
        "one LLM (Amoeba): TP1 replicas that merge stepwise (TP1 → TP2 → … → TP-`tp`) for long requests when their wait justifies it, and split back when those drain; policy=adaptive (default) also transforms on load, policy=long only for long requests; base=2 (or auto: the static degree best on the first 10 % of the short requests) starts as TP2 engines that merge further only for requests too long for TP2; merge=prefill (policy=long) also merges transiently to prefill prompts above prefill_above tokens (default 8192) on an engine short requests avoid, and splits back once those prefills are done (options tp, base, merge, prefill_above, stepwise, policy, long_fraction, slack_fraction, lull_queue_tokens, burst_window_s, burst_load, hysteresis_s, decide_s, min_dwell_s, gain_margin, mix_window_s, staggered, weight_padding, head_centric)"
    }
    fn place(
        &self,
        inst: &LlmInstance,
        trace: &LlmTrace,
        opts: &PlaceOptions,
    ) -> Result<LlmSolved> {
        check_params(
            opts,
            self.name(),
            &[
                "tp",
                "stepwise",
                "policy",
                "long_fraction",
                "slack_fraction",
                "lull_queue_tokens",
                "burst_window_s",
                "burst_load",
                "hysteresis_s",
                "decide_s",
                "min_dwell_s",
                "gain_margin",
                "mix_window_s",
                "staggered",
                "weight_padding",
                "head_centric",
                "base",
                "merge",
                "prefill_above",
            ],
        )?;
        single_llm(inst, self.name())?;
        let t0 = Instant::now();
        let d = TransformKnobs::default();
        let flag = |k: &str, def: bool| -> Result<bool> {
            if opts.params.contains_key(k) {
                opts.flag(k)
            } else {
                Ok(def)
            }
        };
        let policy = match opts.params.get("policy").map(String::as_str) {
            None | Some("adaptive") => TransformPolicy::Adaptive,
            Some("long") => TransformPolicy::LongRequest,
            Some(v) => {
                return Err(SolverError::Option(format!(
                    "option policy: expected adaptive or long, found \"{v}\""
                )))
            }
        };
        let adaptive = policy == TransformPolicy::Adaptive;
        let knobs = TransformKnobs {
            policy,
            // Adaptive: only requests that (nearly) fill a TP1 engine force a merge; the load
            // rule weighs the rest. 0.9 leaves room for the requests already resident.
            // Long-request policy: a request is long only when it cannot fit a TP1 engine at
            // all, so without such a request the groups stay split and every request is routed
            // and served exactly as static TP1 serves it (a lower fraction would merge for
            // requests TP1 serves, and the merge could then only cost short requests).
            long_fraction: opts.number("long_fraction", if adaptive { 0.9 } else { 1.0 })?,
            // Long-request policy: split back as soon as the last long request has left (a
            // TP2 merge or split costs ≈ 0.1 s, far less than the TP1 capacity a merged pair
            // idles while no request needs its memory).
            hysteresis_s: opts
                .number("hysteresis_s", if adaptive { d.hysteresis_s } else { 0.0 })?,
            slack_fraction: opts.number("slack_fraction", d.slack_fraction)?,
            lull_queue_tokens: opts.number("lull_queue_tokens", d.lull_queue_tokens)?,
            // The placer's default watches the last 30 s of arrivals (the Azure traces' bursts
            // last tens of seconds); plans written by hand keep the rate test off.
            burst_window_s: opts.number("burst_window_s", 30.0)?,
            burst_load: opts.number("burst_load", d.burst_load)?,
            decide_s: opts.number("decide_s", d.decide_s)?,
            min_dwell_s: opts.number("min_dwell_s", d.min_dwell_s)?,
            gain_margin: opts.number("gain_margin", d.gain_margin)?,
            mix_window_s: opts.number("mix_window_s", d.mix_window_s)?,
            staggered: flag("staggered", d.staggered)?,
            weight_padding: flag("weight_padding", d.weight_padding)?,
            head_centric: flag("head_centric", d.head_centric)?,
            ..d
        };
        if !(knobs.decide_s > 0.0
            && knobs.slack_fraction > 0.0
            && knobs.min_dwell_s >= 0.0
            && knobs.gain_margin >= 0.0
            && knobs.mix_window_s > 0.0
            && knobs.burst_window_s >= 0.0
            && knobs.burst_load > 0.0)
        {
            return Err(SolverError::Option(
                "options decide_s > 0, slack_fraction > 0, min_dwell_s ≥ 0, gain_margin ≥ 0 and mix_window_s > 0, burst_window_s ≥ 0 and burst_load > 0 expected"
                    .into(),
            ));
        }
        let stepwise = flag("stepwise", true)?;
        let tp = degree(opts, inst, 4.0)?;
        let base_tp = match opts.params.get("base").map(String::as_str) {
            None => 1,
            Some("auto") => auto_base(inst, trace, tp)?,
            Some(_) => {
                let b = opts.number("base", 1.0)? as u32;
                if !degree_below(b, tp) || (!stepwise && b > 1) {
                    return Err(SolverError::Option(format!(
                        "option base: expected auto or a power of two below tp = {tp} (above 1 only stepwise), found {b}"
                    )));
                }
                b
            }
        };
        // merge=prefill: transient merges for long prefills (see `TransformKnobs`); the
        // threshold defaults to 8 k prompt tokens (4 chunks of 2 048: a prefill long enough that
        // the larger degree's speed matters, far above the traces' ≈ 1-2 k typical prompts).
        let merge_prefill_above = match opts.params.get("merge").map(String::as_str) {
            None => {
                if opts.params.contains_key("prefill_above") {
                    return Err(SolverError::Option(
                        "option prefill_above: only with merge=prefill".into(),
                    ));
                }
                0
            }
            Some("prefill") => {
                if adaptive {
                    return Err(SolverError::Option(
                        "option merge=prefill: only with policy=long".into(),
                    ));
                }
                let n = opts.number("prefill_above", 8192.0)?;
                if !(n >= 1.0 && n <= u32::MAX as f64) {
                    return Err(SolverError::Option(format!(
                        "option prefill_above: expected a positive token count, found {n}"
                    )));
                }
                n as u32
            }
            Some(v) => {
                return Err(SolverError::Option(format!(
                    "option merge: expected prefill, found \"{v}\""
                )))
            }
        };
        let knobs = TransformKnobs {
            base_tp,
            merge_prefill_above,
            ..knobs
        };
        Ok(LlmSolved::heuristic(
            dynamic_tp(inst, tp, &knobs, stepwise),
            0,
            t0,
        ))
    }
}
