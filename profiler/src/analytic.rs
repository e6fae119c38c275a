//! Analytic cost model for named GPUs: a roofline per operator (FLOPs against peak compute, bytes
//! against memory bandwidth, whichever takes longer) plus a launch overhead, and collectives from
//! the GPU's NVLink. It lets `analytic:NAME` profile models far larger than this machine.
//!
//! # Calibration
//!
//! Three efficiency factors turn spec-sheet peaks into achievable rates. They were fitted once,
//! on V100-16GB, to AlpaServe's single-device batch-1 latencies of BERT-1.3B / 2.6B / 6.7B at
//! sequence length 2048 (≈151 / 238 / 395 ms), with attention unfused as in that stack:
//!
//! - `GEMM_EFFICIENCY = 0.75`: the fraction of tensor-core peak a large GEMM reaches;
//! - `GEMM_HALF_DIM = 64`: a GEMM whose smallest dimension is `d` reaches
//!   `0.75 · d / (d + 64)` of peak, so per-head attention products (d = head_dim) run at about
//!   half the rate of the projections (d = hidden);
//! - `MEMORY_EFFICIENCY = 0.6`: the fraction of peak DRAM bandwidth streaming kernels reach;
//! - `LAUNCH_S = 4 µs` per kernel.
//!
//! The fit predicts 139 / 227 / 414 ms (ratios 0.92 / 0.95 / 1.05); `tests/analytic.rs` holds
//! it to within 1.5×. As a check on other hardware, the same factors predict MuxServe's A100-80GB
//! LLaMA-7B profile (batch 32 × 128-token prefill 306 ms, decode step at context 128 14.4 ms)
//! within 1.5× too. Peaks are the vendors' dense fp16/bf16 tensor figures; f32 uses the CUDA-core
//! figure. Newer GPUs reach a somewhat lower fraction of their (much higher) peak than V100, so
//! the model is optimistic there by up to about 20 %.
//!
//! Attention: GPUs after V100 are assumed to run fused (FlashAttention-style) kernels that never
//! write the score matrix to memory; V100 runs the unfused form (two batched GEMMs and a softmax
//! over the scores in memory), as AlpaServe's stack did.

use crate::link::LinkModel;
use crate::ops::Op;
use plexserve_kernels::Dtype;

pub const GEMM_EFFICIENCY: f64 = 0.75;
pub const GEMM_HALF_DIM: f64 = 64.0;
pub const MEMORY_EFFICIENCY: f64 = 0.6;
pub const LAUNCH_S: f64 = 4e-6;
/// Memory passes over the score matrix of unfused attention: write scores, read and write the
/// softmax, read probabilities for the value product.
const UNFUSED_SCORE_PASSES: f64 = 4.0;

/// A GPU's spec-sheet numbers.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuModel {
    pub name: &'static str,
    pub description: &'static str,
    /// Dense fp16/bf16 tensor-core peak, 10¹² FLOP/s.
    pub peak_f16_tflops: f64,
    /// f32 peak (CUDA cores), 10¹² FLOP/s.
    pub peak_f32_tflops: f64,
    /// Peak DRAM bandwidth, 10⁹ bytes/s.
    pub memory_gb_per_s: f64,
    pub memory_gib: f64,
    /// NCCL bus bandwidth of a ring all-reduce within one node, 10⁹ bytes/s.
    pub link_bus_gb_per_s: f64,
    pub link_step_latency_s: f64,
    pub fused_attention: bool,
}

/// The GPUs `analytic:NAME` knows.
pub const GPUS: &[GpuModel] = &[
    GpuModel {
        name: "v100-16gb",
        description: "NVIDIA V100 SXM2 16 GB (AWS p3.16xlarge, NVLink 2 hybrid cube mesh)",
        peak_f16_tflops: 125.0,
        peak_f32_tflops: 15.7,
        memory_gb_per_s: 900.0,
        memory_gib: 16.0,
        link_bus_gb_per_s: 130.0,
        link_step_latency_s: 8e-6,
        fused_attention: false,
    },
    GpuModel {
        name: "a100-40gb",
        description: "NVIDIA A100 SXM4 40 GB (NVLink 3 through NVSwitch)",
        peak_f16_tflops: 312.0,
        peak_f32_tflops: 19.5,
        memory_gb_per_s: 1555.0,
        memory_gib: 40.0,
        link_bus_gb_per_s: 230.0,
        link_step_latency_s: 6e-6,
        fused_attention: true,
    },
    GpuModel {
        name: "a100-80gb",
        description: "NVIDIA A100 SXM4 80 GB (NVLink 3 through NVSwitch)",
        peak_f16_tflops: 312.0,
        peak_f32_tflops: 19.5,
        memory_gb_per_s: 2039.0,
        memory_gib: 80.0,
        link_bus_gb_per_s: 230.0,
        link_step_latency_s: 6e-6,
        fused_attention: true,
    },
    GpuModel {
        name: "h100-80gb",
        description: "NVIDIA H100 SXM5 80 GB (NVLink 4 through NVSwitch)",
        peak_f16_tflops: 989.0,
        peak_f32_tflops: 67.0,
        memory_gb_per_s: 3350.0,
        memory_gib: 80.0,
        link_bus_gb_per_s: 400.0,
        link_step_latency_s: 5e-6,
        fused_attention: true,
    },
    GpuModel {
        name: "h200",
        description: "NVIDIA H200 SXM 141 GB (NVLink 4 through NVSwitch)",
        peak_f16_tflops: 989.0,
        peak_f32_tflops: 67.0,
        memory_gb_per_s: 4800.0,
        memory_gib: 141.0,
        link_bus_gb_per_s: 400.0,
        link_step_latency_s: 5e-6,
        fused_attention: true,
    },
];

/// Looks a GPU up by name (case-insensitive).
pub fn gpu_model(name: &str) -> Option<&'static GpuModel> {
    GPUS.iter().find(|g| g.name.eq_ignore_ascii_case(name))
}

impl GpuModel {
    pub fn link(&self) -> LinkModel {
        LinkModel {
            name: format!("{} nvlink", self.name),
            bus_gb_per_s: self.link_bus_gb_per_s,
            step_latency_s: self.link_step_latency_s,
        }
    }

    fn peak_flops(&self, dtype: Dtype) -> f64 {
        match dtype {
            Dtype::F32 => self.peak_f32_tflops * 1e12,
            Dtype::F16 | Dtype::Bf16 => self.peak_f16_tflops * 1e12,
        }
    }

    fn gemm_s(&self, m: usize, k: usize, n: usize, count: usize, dtype: Dtype) -> f64 {
        // Sizes in f64: a paper-scale prefill's m·k·n·count exceeds 2⁶⁴.
        let (m, k, n, count) = (m as f64, k as f64, n as f64, count as f64);
        let d = m.min(k).min(n);
        let efficiency = GEMM_EFFICIENCY * d / (d + GEMM_HALF_DIM);
        let flops = 2.0 * m * k * n * count;
        let bytes = (m * k + k * n + m * n) * count * dtype.bytes() as f64;
        (flops / (self.peak_flops(dtype) * efficiency)).max(self.stream_s(bytes)) + LAUNCH_S
    }

    /// Time to stream `bytes` through DRAM.
    fn stream_s(&self, bytes: f64) -> f64 {
        bytes / (self.memory_gb_per_s * 1e9 * MEMORY_EFFICIENCY)
    }

    /// Predicted seconds of one compute operator (communication is the link model's).
    pub fn op_s(&self, op: &Op, dtype: Dtype) -> f64 {
        let b = dtype.bytes() as f64;
        let elementwise = |elems: f64, passes: f64| self.stream_s(elems * b * passes) + LAUNCH_S;
        let f = |x: usize| x as f64;
        match *op {
            Op::Gemm { m, k, n, count } => self.gemm_s(m, k, n, count, dtype),
            Op::Attention {
                batch,
                sq,
                skv,
                heads,
                kv_heads,
                head_dim,
                causal,
            } => {
                let pairs = f(batch) * f(heads);
                if self.fused_attention || sq == 1 {
                    // One kernel: Q·Kᵀ and P·V at the per-head GEMM rate, reading Q, K, V once
                    // and writing O; a causal mask halves the work of a square prefill.
                    let visible = if causal && sq == skv { 0.5 } else { 1.0 };
                    let d = (sq.min(skv).min(head_dim)) as f64;
                    let efficiency = GEMM_EFFICIENCY * d / (d + GEMM_HALF_DIM);
                    let flops = 4.0 * pairs * f(sq) * f(skv) * f(head_dim) * visible;
                    let bytes = f(batch)
                        * (2.0 * f(sq) * f(heads) + 2.0 * f(skv) * f(kv_heads))
                        * f(head_dim)
                        * b;
                    (flops / (self.peak_flops(dtype) * efficiency)).max(self.stream_s(bytes))
                        + LAUNCH_S
                } else {
                    // Unfused: scores and probabilities go through memory (the mask does not
                    // save work in this form).
                    let gemms = batch * heads;
                    self.gemm_s(sq, head_dim, skv, gemms, dtype)
                        + self.gemm_s(sq, skv, head_dim, gemms, dtype)
                        + elementwise(pairs * f(sq) * f(skv), UNFUSED_SCORE_PASSES)
                }
            }
            Op::LayerNorm { rows, cols }
            | Op::RmsNorm { rows, cols }
            | Op::BiasGelu { rows, cols } => elementwise(f(rows) * f(cols), 2.0),
            Op::SiluMul { rows, cols } => elementwise(f(rows) * f(cols), 3.0),
            Op::Embedding { rows, cols, .. } => elementwise(f(rows) * f(cols), 2.0),
            Op::Moe {
                tokens,
                hidden,
                ffn,
                experts,
                top_k,
            } => {
                // Balanced routing: every expert gets its share of the token-expert pairs.
                let per_expert = (tokens * top_k).div_ceil(experts);
                self.gemm_s(tokens, hidden, experts, 1, dtype)
                    + elementwise(f(tokens) * f(experts), 2.0)
                    + self.gemm_s(per_expert, hidden, ffn, experts, dtype)
                    + elementwise(f(per_expert) * f(ffn) * f(experts), 2.0)
                    + self.gemm_s(per_expert, ffn, hidden, experts, dtype)
                    + elementwise(f(tokens) * f(top_k) * f(hidden), 2.0)
            }
            Op::AllReduce { .. } | Op::AllGather { .. } => 0.0,
        }
    }
}
