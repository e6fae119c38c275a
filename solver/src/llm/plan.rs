//! LLM plans (`plexserve/llm-plan/v1`): meshes ("units") of one node's GPUs, each holding one or
//! more LLM engines with SM shares and sequence quotas, plus optional tensor-parallel
//! transformation groups (Amoeba): TP1 units of one LLM that may merge into one TPN engine.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::instance::LlmInstance;
use crate::error::{check_schema, parse_document, read_file, Result, SolverError};
use crate::plan::{Predicted, SolveInfo};

pub const LLM_PLAN_SCHEMA: &str = "plexserve/llm-plan/v1";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmPlanFile {
    pub schema: String,
    pub instance: String,
    pub placer: String,
    pub units: Vec<UnitFile>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub transform: Vec<TransformFile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predicted: Option<Predicted>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub solve: Option<SolveInfo>,
}

/// One mesh: `tp` = number of devices, all on one node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnitFile {
    pub devices: Vec<u32>,
    pub llms: Vec<EngineFile>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineFile {
    pub name: String,
    /// SM share of prefill jobs, percent (10 … 100).
    pub prefill_sm_pct: u32,
    /// SM share of decode jobs, percent (10 … 100).
    pub decode_sm_pct: u32,
    /// Sequence quota; derived from the KV split (§1.7) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<u32>,
}

/// Who decides when a transformation group merges and splits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransformPolicy {
    /// llm-serving.md §3.4 as written: merge when a long request arrives, split back after
    /// `hysteresis_s` without long requests. The default, so that plans written before the
    /// adaptive policy existed keep their meaning.
    #[default]
    LongRequest,
    /// Long requests still force a merge, and in addition every `decide_s` each group compares a
    /// fluid estimate of the time its queued work takes at TP1 × N and at TP-N (KV-limited batch,
    /// prefill and decode costs from the cost model) and transforms when the other configuration
    /// is faster by more than the transformation cost plus a margin (see `sim.rs`, "adaptive").
    Adaptive,
}

/// How a transformation moves resident KV and weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TransformKnobs {
    /// Merge/split decision rule.
    pub policy: TransformPolicy,
    /// Adaptive policy: seconds between two decisions of a group.
    pub decide_s: f64,
    /// Adaptive policy: a group keeps a configuration at least this long after a transformation
    /// (damps oscillation under bursty load).
    pub min_dwell_s: f64,
    /// Adaptive policy: a merge must shorten the estimated drain time by this fraction of it on
    /// top of its own cost; estimates are rough and a wrong merge costs two transformations.
    pub gain_margin: f64,
    /// Adaptive policy: the request mix a decision weighs is the group's arrivals of the last
    /// `mix_window_s` seconds (the load it must carry next), not only what is queued now.
    pub mix_window_s: f64,
    /// A request is long when prompt + predicted output exceeds this fraction of a TP1 engine's KV
    /// capacity (Amoeba: "long" is relative to TP1 capacity, not absolute).
    pub long_fraction: f64,
    /// Quantile of the LLM's output lengths used as predicted output (never the request's own).
    pub output_quantile: f64,
    /// Seconds without long requests before a merged group splits back.
    pub hysteresis_s: f64,
    /// Transformation-aware routing of a long request: it joins an engine that already holds
    /// TP-N memory when its estimated wait there is below this fraction of its SLO (or when no
    /// group can merge); otherwise the wait justifies merging another group for it.
    pub slack_fraction: f64,
    /// A merge for a long request starts at once when the engines that keep serving short
    /// requests have at most this many queued prompt tokens each on average (a lull); otherwise
    /// it waits for a lull or until `slack_fraction` of the request's SLO has passed.
    pub lull_queue_tokens: f64,
    /// Burst-aware merge timing: a merge for a long request also waits until the short
    /// requests' prompt tokens that arrived over the last `burst_window_s` seconds come to at
    /// most `burst_load` of the prefill capacity of the GPUs that keep serving them (the queue
    /// alone does not see a burst that has only begun), unless waiting longer would make the
    /// long request miss its SLO. 0 turns the rate test off.
    pub burst_window_s: f64,
    pub burst_load: f64,
    /// Spread the transformation over `layers` iterations (true) or pause serving (false).
    pub staggered: bool,
    /// Weight padding: merges free weights without copies; splits still regather.
    pub weight_padding: bool,
    /// Head-centric KV pages (copies ∝ pages) instead of token-major (copies ∝ tokens × heads).
    pub head_centric: bool,
    /// Per-copy cost (s): what makes a token-major layout slow (the note's 522–2240 ms).
    pub c_copy_s: f64,
    /// Per-layer launch cost of the transformation kernels (s).
    pub c_launch_s: f64,
    /// Extra synchronisation per staggered iteration (s).
    pub c_sync_s: f64,
    /// Communicator setup; 0 with a pre-created pool.
    pub c_init_s: f64,
    /// Split regathers weights from host memory instead of peers over NVLink.
    pub split_from_host: bool,
    /// Base degree (a power of two, 1 = TP1): groups whose merged degree is at most this start
    /// merged, at no cost, and never split; a request is long when it does not fit an engine of
    /// the base degree. With base 2 the stepwise tree serves as TP2 engines that merge into TP4
    /// only for requests too long for TP2 (a trace whose short requests are KV-bound prefers TP2).
    pub base_tp: u32,
    /// Transient merges for long prefills (`merge=prefill`, long-request policy): a request whose
    /// prompt exceeds this many tokens is also long (0 = off). It is prefilled on a merged engine
    /// above the base degree that takes no short requests while other engines can, and the group
    /// splits back as soon as no long request on it has prefill work left (the decodes of
    /// requests that fit the members go back with their KV), so the larger degree serves only
    /// long prefills, at its prefill speed and away from short decodes.
    pub merge_prefill_above: u32,
}

impl Default for TransformKnobs {
    fn default() -> Self {
        TransformKnobs {
            policy: TransformPolicy::LongRequest,
            decide_s: 1.0,
            min_dwell_s: 5.0,
            gain_margin: 0.15,
            mix_window_s: 30.0,
            long_fraction: 0.25,
            output_quantile: 0.9,
            hysteresis_s: 10.0,
            slack_fraction: 0.25,
            lull_queue_tokens: 2048.0,
            burst_window_s: 0.0,
            burst_load: 0.5,
            staggered: true,
            weight_padding: true,
            head_centric: true,
            c_copy_s: 2e-6,
            c_launch_s: 20e-6,
            c_sync_s: 0.5e-3,
            c_init_s: 0.0,
            split_from_host: false,
            base_tp: 1,
            merge_prefill_above: 0,
        }
    }
}

/// A group that may merge into one larger engine: either TP1 units (same LLM, same node) that
/// merge into one TP-N engine, or earlier groups whose merged engines merge one step further
/// (stepwise TP1 → TP2 → TP4: a group over two TP2 groups merges their TP2 engines into TP4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransformFile {
    /// Indices into `units` (a first-level group).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub units: Vec<usize>,
    /// Indices of earlier entries of `transform` (a higher-level group).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<usize>,
    #[serde(default)]
    pub knobs: TransformKnobs,
}

/// A resolved engine: LLM id and shares in SM parts.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineSpec {
    pub llm: usize,
    pub prefill_sm_pct: u32,
    pub decode_sm_pct: u32,
    pub quota: Option<u32>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct UnitSpec {
    pub devices: Vec<u32>,
    pub engines: Vec<EngineSpec>,
}

impl UnitSpec {
    pub fn tp(&self) -> u32 {
        self.devices.len() as u32
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct TransformSpec {
    /// TP1 units of a first-level group (empty for a higher-level group).
    pub units: Vec<usize>,
    /// Child groups of a higher-level group (indices of earlier transforms; empty at level 1).
    pub groups: Vec<usize>,
    pub llm: usize,
    pub knobs: TransformKnobs,
}

impl TransformSpec {
    /// Number of members (units or child groups) that merge.
    pub fn fan_in(&self) -> usize {
        self.units.len().max(self.groups.len())
    }
}

/// A validated plan with dense ids.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Deployment {
    pub units: Vec<UnitSpec>,
    pub transforms: Vec<TransformSpec>,
}

impl LlmPlanFile {
    pub fn load(path: &Path) -> Result<LlmPlanFile> {
        let text = read_file(path)?;
        parse_document(path, &text, LLM_PLAN_SCHEMA)
    }

    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).unwrap_or_default();
        s.push('\n');
        s
    }

    /// Checks the plan against the instance and resolves names to ids.
    pub fn resolve(&self, path: &Path, inst: &LlmInstance) -> Result<Deployment> {
        let bad = |at: String, msg: String| SolverError::invalid(path, at, msg);
        check_schema(path, LLM_PLAN_SCHEMA, &self.schema)?;
        let mut used = vec![false; inst.devices as usize];
        let mut dep = Deployment::default();
        for (u, unit) in self.units.iter().enumerate() {
            let at = format!("units[{u}]");
            if unit.devices.is_empty() {
                return Err(bad(
                    format!("{at}.devices"),
                    "expected at least one device".into(),
                ));
            }
            let node = unit.devices[0] / inst.devices_per_node;
            for (k, &d) in unit.devices.iter().enumerate() {
                if d >= inst.devices {
                    return Err(bad(
                        format!("{at}.devices[{k}]"),
                        format!("device {d} does not exist ({} devices)", inst.devices),
                    ));
                }
                if used[d as usize] {
                    return Err(bad(
                        format!("{at}.devices[{k}]"),
                        format!("device {d} is in two units"),
                    ));
                }
                if d / inst.devices_per_node != node {
                    return Err(bad(
                        format!("{at}.devices"),
                        "a mesh must lie within one node".into(),
                    ));
                }
                used[d as usize] = true;
            }
            let mut engines = Vec::with_capacity(unit.llms.len());
            for (k, e) in unit.llms.iter().enumerate() {
                let eat = format!("{at}.llms[{k}]");
                let m = inst.llm_id(&e.name).ok_or_else(|| {
                    bad(format!("{eat}.name"), format!("unknown LLM \"{}\"", e.name))
                })?;
                if engines.iter().any(|x: &EngineSpec| x.llm == m) {
                    return Err(bad(
                        format!("{eat}.name"),
                        format!("LLM \"{}\" appears twice on one mesh", e.name),
                    ));
                }
                for (f, v) in [
                    ("prefill_sm_pct", e.prefill_sm_pct),
                    ("decode_sm_pct", e.decode_sm_pct),
                ] {
                    if !(10..=100).contains(&v) {
                        return Err(bad(
                            format!("{eat}.{f}"),
                            format!("expected 10 … 100, found {v}"),
                        ));
                    }
                }
                if e.quota == Some(0) {
                    return Err(bad(format!("{eat}.quota"), "expected a quota ≥ 1".into()));
                }
                engines.push(EngineSpec {
                    llm: m,
                    prefill_sm_pct: e.prefill_sm_pct,
                    decode_sm_pct: e.decode_sm_pct,
                    quota: e.quota,
                });
            }
            let llms: Vec<usize> = engines.iter().map(|e| e.llm).collect();
            let pool = inst.kv_pool_bytes_per_gpu(unit.devices.len() as u32, &llms);
            if !llms.is_empty() && pool <= 0.0 {
                return Err(SolverError::Infeasible(format!(
                    "{}: units[{u}]: the weights of {} do not fit {} GPU(s) with room for KV",
                    path.display(),
                    unit.llms
                        .iter()
                        .map(|e| e.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    unit.devices.len()
                )));
            }
            dep.units.push(UnitSpec {
                devices: unit.devices.clone(),
                engines,
            });
        }
        let mut in_group = vec![false; dep.units.len()];
        // Per group: GPUs of its merged engine, node, and whether a parent already claims it.
        let mut g_size: Vec<u32> = Vec::new();
        let mut g_node: Vec<u32> = Vec::new();
        let mut g_claimed: Vec<bool> = Vec::new();
        for (g, t) in self.transform.iter().enumerate() {
            let at = format!("transform[{g}]");
            if !t.groups.is_empty() {
                if !t.units.is_empty() {
                    return Err(bad(
                        at,
                        "expected either `units` or `groups`, not both".into(),
                    ));
                }
                if t.groups.len() < 2 {
                    return Err(bad(
                        format!("{at}.groups"),
                        "expected at least two groups to merge".into(),
                    ));
                }
                let mut size = None;
                let mut llm = None;
                let mut node = None;
                for (k, &c) in t.groups.iter().enumerate() {
                    let cat = format!("{at}.groups[{k}]");
                    if c >= g {
                        return Err(bad(
                            cat,
                            format!("group {c} must be an earlier entry of `transform`"),
                        ));
                    }
                    if g_claimed[c] {
                        return Err(bad(cat, format!("group {c} has two parents")));
                    }
                    g_claimed[c] = true;
                    let ok = *size.get_or_insert(g_size[c]) == g_size[c]
                        && *llm.get_or_insert(dep.transforms[c].llm) == dep.transforms[c].llm
                        && *node.get_or_insert(g_node[c]) == g_node[c];
                    if !ok {
                        return Err(bad(
                            cat,
                            "child groups must have the same size, LLM and node".into(),
                        ));
                    }
                }
                let llm = llm.unwrap_or(0);
                let total = size.unwrap_or(1) * t.groups.len() as u32;
                if inst.llms[llm].spec.kv_heads % total != 0 {
                    return Err(bad(
                        format!("{at}.groups"),
                        format!(
                            "{} KV heads do not split over {total} GPUs",
                            inst.llms[llm].spec.kv_heads
                        ),
                    ));
                }
                check_knobs(&t.knobs).map_err(|m| bad(format!("{at}.knobs"), m))?;
                g_size.push(total);
                g_node.push(node.unwrap_or(0));
                g_claimed.push(false);
                dep.transforms.push(TransformSpec {
                    units: vec![],
                    groups: t.groups.clone(),
                    llm,
                    knobs: t.knobs.clone(),
                });
                continue;
            }
            if t.units.len() < 2 {
                return Err(bad(
                    format!("{at}.units"),
                    "expected at least two units (or two `groups`) to merge".into(),
                ));
            }
            let mut llm = None;
            let mut node = None;
            for (k, &u) in t.units.iter().enumerate() {
                let uat = format!("{at}.units[{k}]");
                let unit = dep
                    .units
                    .get(u)
                    .ok_or_else(|| bad(uat.clone(), format!("unit {u} does not exist")))?;
                if in_group[u] {
                    return Err(bad(
                        uat,
                        format!("unit {u} is in two transformation groups"),
                    ));
                }
                in_group[u] = true;
                if unit.devices.len() != 1 || unit.engines.len() != 1 {
                    return Err(bad(
                        uat,
                        "a transformation group holds TP1 units with exactly one LLM each".into(),
                    ));
                }
                if *llm.get_or_insert(unit.engines[0].llm) != unit.engines[0].llm {
                    return Err(bad(
                        uat,
                        "every unit of a transformation group must hold the same LLM".into(),
                    ));
                }
                let n = unit.devices[0] / inst.devices_per_node;
                if *node.get_or_insert(n) != n {
                    return Err(bad(
                        uat,
                        "a transformation group must lie within one node".into(),
                    ));
                }
            }
            let llm = llm.unwrap_or(0);
            let n = t.units.len() as u32;
            if inst.llms[llm].spec.kv_heads % n != 0 {
                return Err(bad(
                    format!("{at}.units"),
                    format!(
                        "{} KV heads do not split over {n} GPUs",
                        inst.llms[llm].spec.kv_heads
                    ),
                ));
            }
            check_knobs(&t.knobs).map_err(|m| bad(format!("{at}.knobs"), m))?;
            g_size.push(n);
            g_node.push(node.unwrap_or(0));
            g_claimed.push(false);
            dep.transforms.push(TransformSpec {
                units: t.units.clone(),
                groups: vec![],
                llm,
                knobs: t.knobs.clone(),
            });
        }
        Ok(dep)
    }
}

fn check_knobs(k: &TransformKnobs) -> std::result::Result<(), String> {
    if k.long_fraction > 0.0
        && k.output_quantile >= 0.0
        && k.output_quantile <= 1.0
        && k.hysteresis_s >= 0.0
        && k.decide_s > 0.0
        && k.min_dwell_s >= 0.0
        && k.gain_margin >= 0.0
        && k.mix_window_s > 0.0
        && k.slack_fraction > 0.0
        && k.base_tp >= 1
        && k.base_tp.is_power_of_two()
        && (k.merge_prefill_above == 0 || k.policy == TransformPolicy::LongRequest)
    {
        Ok(())
    } else {
        Err(
            "expected long_fraction > 0, output_quantile in [0, 1], hysteresis_s ≥ 0, \
             decide_s > 0, min_dwell_s ≥ 0, gain_margin ≥ 0, mix_window_s > 0, \
             slack_fraction > 0, base_tp a power of two, merge_prefill_above only with the \
             long_request policy"
                .into(),
        )
    }
}

impl Deployment {
    /// Writes the deployment as a plan file.
    pub fn to_plan(&self, inst: &LlmInstance, placer: &str) -> LlmPlanFile {
        LlmPlanFile {
            schema: LLM_PLAN_SCHEMA.into(),
            instance: inst.name.clone(),
            placer: placer.into(),
            units: self
                .units
                .iter()
                .map(|u| UnitFile {
                    devices: u.devices.clone(),
                    llms: u
                        .engines
                        .iter()
                        .map(|e| EngineFile {
                            name: inst.llms[e.llm].name.clone(),
                            prefill_sm_pct: e.prefill_sm_pct,
                            decode_sm_pct: e.decode_sm_pct,
                            quota: e.quota,
                        })
                        .collect(),
                })
                .collect(),
            transform: self
                .transforms
                .iter()
                .map(|t| TransformFile {
                    units: t.units.clone(),
                    groups: t.groups.clone(),
                    knobs: t.knobs.clone(),
                })
                .collect(),
            predicted: None,
            solve: None,
        }
    }
}
