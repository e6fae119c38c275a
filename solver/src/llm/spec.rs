//! Hardware and model specifications of the LLM cost model (llm-serving.md §1.3, §3.6).
//!
//! Units follow MuxServe's conventions so that its estimates can be matched: memory in decimal GB
//! (an A100 is "80 GB", weights are 2 GB per billion parameters), bandwidths in GB/s.

use serde::{Deserialize, Serialize};

/// A GPU type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpuSpec {
    pub name: String,
    /// Device memory in decimal GB (MuxServe's unit).
    pub memory_gb: f64,
    /// Dense fp16/bf16 tensor-core peak, TFLOP/s.
    pub peak_tflops: f64,
    /// HBM bandwidth, GB/s.
    pub hbm_gbps: f64,
    /// Effective per-GPU NVLink bandwidth for collectives and KV moves, GB/s.
    pub nvlink_gbps: f64,
    /// Host-to-device bandwidth (weight reload on split), GB/s.
    pub host_gbps: f64,
}

impl GpuSpec {
    /// NVIDIA A100-SXM4-80GB: 312 TFLOP/s fp16 dense, 2039 GB/s HBM2e, NVLink3 600 GB/s
    /// bidirectional (300 GB/s each way), PCIe4 x16 at about 25 GB/s achieved.
    pub fn a100_80gb() -> GpuSpec {
        GpuSpec {
            name: "a100-80gb".into(),
            memory_gb: 80.0,
            peak_tflops: 312.0,
            hbm_gbps: 2039.0,
            nvlink_gbps: 300.0,
            host_gbps: 25.0,
        }
    }

    /// NVIDIA H100-SXM5-80GB: 989 TFLOP/s fp16 dense, 3350 GB/s HBM3, NVLink4 450 GB/s each
    /// way, PCIe5 at about 50 GB/s achieved.
    pub fn h100_80gb() -> GpuSpec {
        GpuSpec {
            name: "h100-80gb".into(),
            memory_gb: 80.0,
            peak_tflops: 989.0,
            hbm_gbps: 3350.0,
            nvlink_gbps: 450.0,
            host_gbps: 50.0,
        }
    }

    /// A named preset.
    pub fn preset(name: &str) -> Option<GpuSpec> {
        match name {
            "a100-80gb" => Some(Self::a100_80gb()),
            "h100-80gb" => Some(Self::h100_80gb()),
            _ => None,
        }
    }

    pub const PRESETS: &'static [&'static str] = &["a100-80gb", "h100-80gb"];
}

/// A LLaMA-style decoder-only transformer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmSpec {
    /// Parameters in billions; weights are `2 · params_b` GB in fp16/bf16.
    pub params_b: f64,
    pub layers: u32,
    /// Query heads.
    pub heads: u32,
    /// KV heads (equal to `heads` without grouped-query attention).
    pub kv_heads: u32,
    pub head_dim: u32,
    pub hidden: u32,
    /// Smallest tensor-parallel degree the model is deployed at (MuxServe's min TP).
    #[serde(default = "one")]
    pub min_tp: u32,
    /// MuxServe's compute weight used in orderings (1, 2, 4, 8 for 7B…65B).
    #[serde(default = "one_f")]
    pub rate_scale: f64,
    /// Per-sequence scheduling overhead of a decode step, seconds (MuxServe's c·B).
    #[serde(default = "default_sched")]
    pub sched_overhead_per_seq_s: f64,
    /// Prefill SM share in percent when colocated (MuxServe: 80 for 7B, 90 for 13B, 100 above).
    #[serde(default = "hundred")]
    pub prefill_sm_pct: u32,
}

fn one() -> u32 {
    1
}
fn one_f() -> f64 {
    1.0
}
fn hundred() -> u32 {
    100
}
fn default_sched() -> f64 {
    1.0e-4
}

impl LlmSpec {
    /// Weight bytes of one full copy (2 bytes per parameter, decimal GB as in MuxServe).
    pub fn weight_bytes(&self) -> f64 {
        2.0 * self.params_b * 1e9
    }

    /// KV-cache bytes per token of the whole model: K and V, every layer, every KV head, fp16.
    pub fn kv_bytes_per_token(&self) -> f64 {
        2.0 * self.layers as f64 * self.kv_heads as f64 * self.head_dim as f64 * 2.0
    }

    /// Width of the attention queries (heads · head_dim), which sets attention FLOPs.
    pub fn q_width(&self) -> f64 {
        self.heads as f64 * self.head_dim as f64
    }

    // One row of the §1.3 table per call; named fields would only repeat the table's header.
    #[allow(clippy::too_many_arguments)]
    fn llama(
        params_b: f64,
        layers: u32,
        heads: u32,
        hidden: u32,
        min_tp: u32,
        rs: f64,
        c: f64,
        pre: u32,
    ) -> LlmSpec {
        LlmSpec {
            params_b,
            layers,
            heads,
            kv_heads: heads,
            head_dim: hidden / heads,
            hidden,
            min_tp,
            rate_scale: rs,
            sched_overhead_per_seq_s: c,
            prefill_sm_pct: pre,
        }
    }

    /// Named presets: MuxServe's four LLaMA sizes (§1.3) and Qwen2.5-32B (§3.6).
    pub fn preset(name: &str) -> Option<LlmSpec> {
        match name {
            "llama-7b" => Some(Self::llama(7.0, 32, 32, 4096, 1, 1.0, 1.0e-4, 80)),
            "llama-13b" => Some(Self::llama(13.0, 40, 40, 5120, 1, 2.0, 8.0e-5, 90)),
            // 52 heads × 128 = 6656.
            "llama-30b" => Some(Self::llama(30.0, 60, 52, 6656, 2, 4.0, 7.0e-5, 100)),
            "llama-65b" => Some(Self::llama(65.0, 80, 64, 8192, 4, 8.0, 7.0e-5, 100)),
            "qwen2.5-32b" => Some(LlmSpec {
                params_b: 32.76,
                layers: 64,
                heads: 40,
                kv_heads: 8,
                head_dim: 128,
                hidden: 5120,
                min_tp: 1,
                rate_scale: 4.0,
                sched_overhead_per_seq_s: 7.0e-5,
                prefill_sm_pct: 100,
            }),
            _ => None,
        }
    }

    pub const PRESETS: &'static [&'static str] = &[
        "llama-7b",
        "llama-13b",
        "llama-30b",
        "llama-65b",
        "qwen2.5-32b",
    ];
}
