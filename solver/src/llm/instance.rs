//! LLM instance files (`plexserve/llm-instance/v1`): the contract's instance extended with LLM
//! specs, a GPU type, a cost model and workloads whose requests carry prompt and output lengths.

use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

use super::cost::{CostModelSpec, MemoryCost, StepCost};
use super::spec::{GpuSpec, LlmSpec};
use super::workload::LlmWorkload;
use crate::error::{check_schema, parse_document, read_file, Result, SolverError};

pub const LLM_INSTANCE_SCHEMA: &str = "plexserve/llm-instance/v1";

/// A GPU given by preset name or in full.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum GpuRef {
    Preset(String),
    Spec(GpuSpec),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmClusterFile {
    pub devices: u32,
    #[serde(default = "eight")]
    pub devices_per_node: u32,
    pub gpu: GpuRef,
}

fn eight() -> u32 {
    8
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmEntry {
    pub name: String,
    /// A preset (`llama-7b`, …, `qwen2.5-32b`) or a key of `specs`.
    pub spec: String,
    /// Latency SLO as a multiple of the isolated latency (§1.11); 8 when no SLO is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slo_scale: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttft_slo_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpot_slo_s: Option<f64>,
}

/// How engines admit and batch requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum BatchPolicy {
    /// MuxServe's adaptive batch scheduling: per-LLM sequence quotas, rebalanced periodically.
    #[default]
    Adbs,
    /// Quotas from the initial split, never rebalanced.
    StaticQuota,
    /// No quotas: admit FCFS while KV blocks last (vLLM-like).
    Fcfs,
}

/// Simulator settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LlmSimConfig {
    /// Tokens per KV block (MuxServe and vLLM: 32 and 16; MuxServe's head-blocks use 32).
    pub block_tokens: u32,
    /// Fraction of device memory the engine may use (weights + KV + reserve).
    pub memory_utilization: f64,
    /// Activation reserve per colocated LLM, GB per mesh (MuxServe: 6).
    pub activation_reserve_gb: f64,
    /// Largest Σ prompt tokens of one prefill batch (one longer prompt still runs alone).
    pub max_prefill_tokens: u32,
    /// Chunked prefill of long prompts (longer than `chunk_above_tokens`), in chunks of this
    /// many tokens; 0 prefills every prompt in one iteration. The same rule for every
    /// configuration, static or dynamic. A chunked prompt holds its KV from the first chunk, short requests'
    /// prefills go before its next chunk, and while short requests decode on the engine a chunk
    /// of duration d is followed by at least `long_decode_ratio` · d of decode-only time, so a
    /// 60 k-token prompt never stalls the short requests' decode for more than one chunk
    /// (Sarathi-style chunking; vLLM's chunked prefill).
    pub prefill_chunk_tokens: u32,
    /// Prompts longer than this are prefilled in chunks (when `prefill_chunk_tokens` > 0).
    pub chunk_above_tokens: u32,
    /// Decode time owed to the engine's short requests per second of long-prefill chunk.
    pub long_decode_ratio: f64,
    pub policy: BatchPolicy,
    pub rebalance_s: f64,
    /// SM parts of a mesh (10 × 10 %) and the overload allowance (2 parts).
    pub sm_parts: u32,
    pub overload_parts: u32,
    /// A job using o overloaded parts of its k runs (1 + overload_slowdown · o / k) times slower
    /// (two jobs share those SMs); a reconstructed rule (`[R]` in llm-serving.md), not from a paper.
    pub overload_slowdown: f64,
    /// A request preempted more often than this is dropped, which bounds any preemption livelock.
    pub max_preemptions: u32,
    /// Requests unfinished at this time are reported dropped (none when absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub horizon_s: Option<f64>,
}

impl Default for LlmSimConfig {
    fn default() -> Self {
        LlmSimConfig {
            block_tokens: 32,
            memory_utilization: 0.9,
            activation_reserve_gb: 6.0,
            max_prefill_tokens: 2048,
            prefill_chunk_tokens: 0,
            chunk_above_tokens: 16384,
            long_decode_ratio: 2.0,
            policy: BatchPolicy::Adbs,
            rebalance_s: 8.0,
            sm_parts: 10,
            overload_parts: 2,
            overload_slowdown: 0.5,
            max_preemptions: 64,
            horizon_s: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmInstanceFile {
    pub schema: String,
    pub name: String,
    pub cluster: LlmClusterFile,
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub specs: IndexMap<String, LlmSpec>,
    pub llms: Vec<LlmEntry>,
    #[serde(default)]
    pub cost_model: CostModelSpec,
    pub workload: serde_json::Value,
    #[serde(default)]
    pub simulator: LlmSimConfig,
}

/// An LLM with its spec and SLO resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Llm {
    pub name: String,
    pub spec_name: String,
    pub spec: LlmSpec,
    pub slo_scale: Option<f64>,
    pub ttft_slo_s: Option<f64>,
    pub tpot_slo_s: Option<f64>,
}

/// A validated LLM instance.
#[derive(Debug, Clone)]
pub struct LlmInstance {
    pub name: String,
    pub file: PathBuf,
    pub devices: u32,
    pub devices_per_node: u32,
    pub gpu: GpuSpec,
    pub llms: Vec<Llm>,
    pub cost_model: CostModelSpec,
    pub workload: LlmWorkload,
    pub sim: LlmSimConfig,
}

fn pos(file: &Path, at: &str, v: f64) -> Result<()> {
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

impl LlmInstance {
    pub fn load(path: &Path) -> Result<LlmInstance> {
        let text = read_file(path)?;
        Self::from_json(path, &text)
    }

    pub fn from_json(path: &Path, text: &str) -> Result<LlmInstance> {
        let f: LlmInstanceFile = parse_document(path, text, LLM_INSTANCE_SCHEMA)?;
        Self::from_file(path, f)
    }

    pub fn from_file(path: &Path, f: LlmInstanceFile) -> Result<LlmInstance> {
        let bad = |at: String, msg: String| SolverError::invalid(path, at, msg);
        check_schema(path, LLM_INSTANCE_SCHEMA, &f.schema)?;
        crate::instance::validate_device_counts(
            path,
            "cluster",
            f.cluster.devices,
            f.cluster.devices_per_node,
        )?;
        let gpu = match &f.cluster.gpu {
            GpuRef::Preset(n) => GpuSpec::preset(n).ok_or_else(|| {
                bad(
                    "cluster.gpu".into(),
                    format!(
                        "unknown GPU \"{n}\"; presets: {}",
                        GpuSpec::PRESETS.join(", ")
                    ),
                )
            })?,
            GpuRef::Spec(g) => g.clone(),
        };
        for (k, v) in [
            ("memory_gb", gpu.memory_gb),
            ("peak_tflops", gpu.peak_tflops),
            ("hbm_gbps", gpu.hbm_gbps),
            ("nvlink_gbps", gpu.nvlink_gbps),
            ("host_gbps", gpu.host_gbps),
        ] {
            pos(path, &format!("cluster.gpu.{k}"), v)?;
        }
        for (name, s) in &f.specs {
            let at = format!("specs.{name}");
            pos(path, &format!("{at}.params_b"), s.params_b)?;
            if s.layers == 0
                || s.heads == 0
                || s.kv_heads == 0
                || s.head_dim == 0
                || s.hidden == 0
                || s.min_tp == 0
            {
                return Err(bad(
                    at,
                    "expected layers, heads, kv_heads, head_dim, hidden and min_tp ≥ 1".into(),
                ));
            }
            if s.prefill_sm_pct == 0 || s.prefill_sm_pct > 100 {
                return Err(bad(
                    format!("{at}.prefill_sm_pct"),
                    "expected 1 … 100".into(),
                ));
            }
        }
        if f.llms.is_empty() {
            return Err(bad("llms".into(), "expected at least one LLM".into()));
        }
        let mut llms = Vec::with_capacity(f.llms.len());
        for (i, e) in f.llms.iter().enumerate() {
            let at = format!("llms[{i}]");
            if e.name.is_empty() {
                return Err(bad(
                    format!("{at}.name"),
                    "expected a non-empty name".into(),
                ));
            }
            if let Some(j) = llms.iter().position(|l: &Llm| l.name == e.name) {
                return Err(bad(
                    format!("{at}.name"),
                    format!("LLM \"{}\" is already defined at llms[{j}]", e.name),
                ));
            }
            let spec = f
                .specs
                .get(&e.spec)
                .cloned()
                .or_else(|| LlmSpec::preset(&e.spec))
                .ok_or_else(|| {
                    bad(
                        format!("{at}.spec"),
                        format!(
                            "unknown spec \"{}\"; presets: {}, or define it under `specs`",
                            e.spec,
                            LlmSpec::PRESETS.join(", ")
                        ),
                    )
                })?;
            for (k, v) in [
                ("slo_scale", e.slo_scale),
                ("ttft_slo_s", e.ttft_slo_s),
                ("tpot_slo_s", e.tpot_slo_s),
            ] {
                if let Some(v) = v {
                    pos(path, &format!("{at}.{k}"), v)?;
                }
            }
            let slo_scale =
                if e.slo_scale.is_none() && e.ttft_slo_s.is_none() && e.tpot_slo_s.is_none() {
                    Some(8.0)
                } else {
                    e.slo_scale
                };
            llms.push(Llm {
                name: e.name.clone(),
                spec_name: e.spec.clone(),
                spec,
                slo_scale,
                ttft_slo_s: e.ttft_slo_s,
                tpot_slo_s: e.tpot_slo_s,
            });
        }
        let s = &f.simulator;
        if s.block_tokens == 0 || s.sm_parts == 0 || s.max_prefill_tokens == 0 {
            return Err(bad(
                "simulator".into(),
                "expected block_tokens, sm_parts and max_prefill_tokens ≥ 1".into(),
            ));
        }
        if !(s.memory_utilization > 0.0 && s.memory_utilization <= 1.0) {
            return Err(bad(
                "simulator.memory_utilization".into(),
                "expected a fraction in (0, 1]".into(),
            ));
        }
        for (k, v) in [
            ("activation_reserve_gb", s.activation_reserve_gb),
            ("overload_slowdown", s.overload_slowdown),
            ("long_decode_ratio", s.long_decode_ratio),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(bad(
                    format!("simulator.{k}"),
                    format!("expected a finite number ≥ 0, found {v}"),
                ));
            }
        }
        pos(path, "simulator.rebalance_s", s.rebalance_s)?;
        if let Some(h) = s.horizon_s {
            pos(path, "simulator.horizon_s", h)?;
        }
        let names: Vec<String> = llms.iter().map(|l| l.name.clone()).collect();
        let workload = LlmWorkload::parse(path, &f.workload, &names)?;
        Ok(LlmInstance {
            name: f.name,
            file: path.to_path_buf(),
            devices: f.cluster.devices,
            devices_per_node: f.cluster.devices_per_node,
            gpu,
            llms,
            cost_model: f.cost_model,
            workload,
            sim: f.simulator,
        })
    }

    pub fn base_dir(&self) -> &Path {
        self.file.parent().unwrap_or(Path::new("."))
    }

    pub fn llm_id(&self, name: &str) -> Option<usize> {
        self.llms.iter().position(|l| l.name == name)
    }

    /// Step costs of LLM `m` at tensor-parallel degree `tp`.
    pub fn step_cost(&self, m: usize, tp: u32) -> StepCost {
        StepCost::new(&self.cost_model, &self.llms[m].spec, &self.gpu, tp)
    }

    pub fn memory(&self, m: usize, tp: u32) -> MemoryCost {
        MemoryCost::new(&self.llms[m].spec, tp)
    }

    /// The "home" tp of an LLM for isolated latency (§1.11): its min TP, at least 1.
    pub fn home_tp(&self, m: usize) -> u32 {
        self.llms[m].spec.min_tp.max(1)
    }

    /// Per-GPU KV pool bytes of a mesh of `tp` GPUs holding `llms`.
    pub fn kv_pool_bytes_per_gpu(&self, tp: u32, llms: &[usize]) -> f64 {
        let g = tp.max(1) as f64;
        let weights: f64 = llms.iter().map(|&m| self.llms[m].spec.weight_bytes()).sum();
        let usable = self.sim.memory_utilization * self.gpu.memory_gb * 1e9;
        usable - weights / g - self.sim.activation_reserve_gb * 1e9 * llms.len() as f64 / g
    }
}
