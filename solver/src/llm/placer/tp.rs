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
use crate::plan::SolveStatus;

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

fn solved(dep: Deployment, t0: Instant) -> LlmSolved {
    LlmSolved {
        deployment: dep,
        status: SolveStatus::Heuristic,
        evaluations: 0,
        time_s: t0.elapsed().as_secs_f64(),
        objective: None,
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

/// Per node: `big` TP-`tp` meshes, the rest TP1.
pub fn hybrid_tp(inst: &LlmInstance, tp: u32, big: u32) -> Deployment {
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
        while d < base + per {
            units.push(UnitSpec {
                devices: vec![d],
                engines: vec![engine()],
            });
            d += 1;
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
        Ok(solved(static_tp(inst, degree(opts, inst, 1.0)?), t0))
    }
}

pub struct TpHybrid;

impl LlmPlacer for TpHybrid {
    fn name(&self) -> &'static str {
        "tp-hybrid"
    }
    fn description(&self) -> &'static str {
        "one LLM: per node `big` static TP-N meshes (options tp=4, big=1), the rest TP1; long requests go to TP-N"
    }
    fn place(
        &self,
        inst: &LlmInstance,
        _trace: &LlmTrace,
        opts: &PlaceOptions,
    ) -> Result<LlmSolved> {
        check_params(opts, self.name(), &["tp", "big"])?;
        single_llm(inst, self.name())?;
        let t0 = Instant::now();
        let big = opts.number("big", 1.0)?.max(0.0) as u32;
        Ok(solved(hybrid_tp(inst, degree(opts, inst, 4.0)?, big), t0))
    }
}

pub struct TpDynamic;

impl LlmPlacer for TpDynamic {
    fn name(&self) -> &'static str {
        "tp-dynamic"
    }
    fn description(&self) -> &'static str {
        "one LLM (Amoeba): TP1 replicas that merge stepwise (TP1 → TP2 → … → TP-`tp`) for long requests when their wait justifies it, and split back when those drain; policy=adaptive (default) also transforms on load, policy=long only for long requests (options tp, stepwise, policy, long_fraction, slack_fraction, lull_queue_tokens, burst_window_s, burst_load, hysteresis_s, decide_s, min_dwell_s, gain_margin, mix_window_s, staggered, weight_padding, head_centric)"
    }
    fn place(
        &self,
        inst: &LlmInstance,
        _trace: &LlmTrace,
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
        Ok(solved(
            dynamic_tp(inst, degree(opts, inst, 4.0)?, &knobs, stepwise),
            t0,
        ))
    }
}
