//! LLM cost model: prefill and decode iteration latency, KV bytes per token, weights per device.
//!
//! Two forms, chosen per instance:
//! - **Roofline** (default) for LLaMA-style specs: an iteration takes the larger of its compute time
//!   (FLOPs over calibrated peak) and its memory time (weight and KV bytes over calibrated HBM
//!   bandwidth), plus a per-layer launch overhead and, at tp > 1, two all-reduces per layer.
//! - **Linear**: fixed coefficients, for hand-checkable tests and for fitting measured tables.
//!
//! Both apply MuxServe's SM-share observation (llm-serving.md §1.2): with a fraction `s` of the SMs,
//! time grows by `1 + k·(1/s − 1)`, with k ≈ 0.67 for prefill (compute-bound) and k ≈ 0.15 for
//! decode (bandwidth-bound, and flat on multi-GPU meshes, so k is divided by tp).
//!
//! Calibration (A100-80GB, LLaMA-7B, TP1, batch 32, seq 128, the note's profiled points):
//! prefill 306 / 502 / 806 ms and decode 14.4 / 16.4 / 19.9 ms at 100 / 50 / 30 % SM. The
//! constants below reproduce them within 10 % (see `tests/llm.rs`).

use serde::{Deserialize, Serialize};

use super::spec::{GpuSpec, LlmSpec};

/// Constants of the roofline model; every field is stated with the reason for its default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RooflineConsts {
    /// Achieved fraction of peak FLOP/s in prefill GEMMs. 0.58 makes 7B prefill of 32 × 128 tokens
    /// take 306 ms on an A100, MuxServe's profiled value.
    pub prefill_flops_eff: f64,
    /// Achieved fraction of peak FLOP/s in decode (small, skinny GEMMs).
    pub decode_flops_eff: f64,
    /// Achieved fraction of HBM bandwidth when streaming weights and KV.
    pub hbm_eff: f64,
    /// Kernel launch and framework overhead per layer per iteration, seconds. 0.15 ms × 32 layers
    /// plus 9.5 ms of weight and KV reads gives the profiled 14.4 ms 7B decode step.
    pub layer_overhead_s: f64,
    /// Fixed latency of one all-reduce (launch and synchronisation), seconds.
    pub allreduce_latency_s: f64,
    /// Latency of one step of a ring all-reduce, seconds; a ring over t GPUs takes 2(t − 1)
    /// steps, so the latency term grows with the degree (α of the α-β link model).
    pub allreduce_step_s: f64,
    /// Achieved fraction of the per-GPU NVLink bandwidth in the all-reduce's bandwidth term
    /// (NCCL's bus bandwidth on NVLink is below the link's peak).
    pub allreduce_bw_eff: f64,
    /// Extra per-GPU time per additional tensor-parallel rank (synchronisation, smaller GEMMs,
    /// load imbalance): time × (1 + tp_inefficiency · (tp − 1)). Amoeba reports that 4 × TP1 → TP4
    /// loses over 57 % of throughput; instances that study TP transformation calibrate this knob to
    /// that claim (see `instances/llm/README.md`).
    pub tp_inefficiency: f64,
    /// SM-share sensitivity of prefill (k in 1 + k(1/s − 1)); fitted to 306/502/806 ms.
    pub prefill_sm_k: f64,
    /// SM-share sensitivity of decode at TP1 (divided by tp); fitted to 14.4/16.4/19.9 ms.
    pub decode_sm_k: f64,
}

impl RooflineConsts {
    /// α-β cost of one ring all-reduce of `bytes` over `tp` GPUs of one node: 2(t − 1) latency
    /// steps plus 2(t − 1)/t of the message over the effective link bandwidth; 0 at tp 1.
    pub fn allreduce_s(&self, gpu: &GpuSpec, tp: u32, bytes: f64) -> f64 {
        if tp <= 1 {
            return 0.0;
        }
        let t = tp as f64;
        self.allreduce_latency_s
            + 2.0 * (t - 1.0) * self.allreduce_step_s
            + bytes * self.allreduce_per_byte_s(gpu, tp)
    }

    /// Bandwidth term of a ring all-reduce per byte of message (seconds per byte).
    pub fn allreduce_per_byte_s(&self, gpu: &GpuSpec, tp: u32) -> f64 {
        if tp <= 1 {
            return 0.0;
        }
        let t = tp as f64;
        2.0 * (t - 1.0) / t / (gpu.nvlink_gbps * 1e9 * self.allreduce_bw_eff)
    }
}

impl Default for RooflineConsts {
    fn default() -> Self {
        RooflineConsts {
            prefill_flops_eff: 0.58,
            decode_flops_eff: 0.35,
            hbm_eff: 0.75,
            layer_overhead_s: 0.15e-3,
            allreduce_latency_s: 8e-6,
            allreduce_step_s: 2e-6,
            allreduce_bw_eff: 0.8,
            tp_inefficiency: 0.1,
            prefill_sm_k: 0.67,
            decode_sm_k: 0.15,
        }
    }
}

/// A linear cost model: `prefill = a + b·tokens + c·Σprompt²`, `decode = d + e·batch + f·Σcontext`,
/// divided by tp (no communication term), times the SM factors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinearCost {
    pub prefill_base_s: f64,
    pub prefill_per_token_s: f64,
    #[serde(default)]
    pub prefill_per_sq_token_s: f64,
    pub decode_base_s: f64,
    pub decode_per_seq_s: f64,
    #[serde(default)]
    pub decode_per_ctx_token_s: f64,
    /// SM sensitivities as in the roofline; 0 makes SM shares free (hand-computed tests).
    #[serde(default)]
    pub prefill_sm_k: f64,
    #[serde(default)]
    pub decode_sm_k: f64,
}

/// Which cost model an instance uses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum CostModelSpec {
    Roofline(RooflineConsts),
    Linear(LinearCost),
}

impl Default for CostModelSpec {
    fn default() -> Self {
        CostModelSpec::Roofline(RooflineConsts::default())
    }
}

/// The latency coefficients of one model at one tp degree on one GPU type, precomputed so the
/// simulator's hot loop does a handful of multiply-adds per iteration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepCost {
    /// Roofline (true) or linear (false) combination.
    roofline: bool,
    // Prefill: compute = pre_tok·T + pre_sq·ΣT²; memory = pre_mem; + pre_fixed + pre_comm_tok·T.
    pre_tok: f64,
    pre_sq: f64,
    pre_mem: f64,
    pre_fixed: f64,
    pre_comm_tok: f64,
    // Decode: compute = dec_seq·B + dec_ctx_c·C; memory = dec_mem + dec_ctx_m·C; + dec_fixed.
    dec_seq: f64,
    dec_ctx_c: f64,
    dec_mem: f64,
    dec_ctx_m: f64,
    dec_fixed: f64,
    prefill_sm_k: f64,
    decode_sm_k: f64,
    /// Per-sequence scheduling overhead (MuxServe's c·B), added to decode.
    sched_per_seq: f64,
}

impl StepCost {
    /// Coefficients for `spec` at tensor-parallel degree `tp` on `gpu`.
    pub fn new(model: &CostModelSpec, spec: &LlmSpec, gpu: &GpuSpec, tp: u32) -> StepCost {
        let t = tp.max(1) as f64;
        match model {
            CostModelSpec::Roofline(k) => {
                let slow = 1.0 + k.tp_inefficiency * (t - 1.0);
                let peak = gpu.peak_tflops * 1e12;
                let bw = gpu.hbm_gbps * 1e9 * k.hbm_eff;
                let params = spec.params_b * 1e9;
                let layers = spec.layers as f64;
                // Two all-reduces per layer (after attention and after the MLP), not overlapped
                // with compute: the latency part per iteration, the bandwidth part per token.
                let comm_fixed = 2.0 * layers * k.allreduce_s(gpu, tp, 0.0);
                let comm_tok =
                    2.0 * layers * k.allreduce_per_byte_s(gpu, tp) * spec.hidden as f64 * 2.0;
                let pre_peak = peak * k.prefill_flops_eff;
                let dec_peak = peak * k.decode_flops_eff;
                StepCost {
                    roofline: true,
                    pre_tok: 2.0 * params / (t * pre_peak) * slow,
                    // Causal attention: 2·n²·q_width FLOPs per layer per sequence.
                    pre_sq: 2.0 * layers * spec.q_width() / (t * pre_peak) * slow,
                    pre_mem: spec.weight_bytes() / t / bw * slow,
                    pre_fixed: layers * k.layer_overhead_s + comm_fixed,
                    pre_comm_tok: comm_tok,
                    dec_seq: 2.0 * params / (t * dec_peak) * slow + comm_tok,
                    // Per context token: QKᵀ and AV, 4·q_width FLOPs per layer.
                    dec_ctx_c: 4.0 * layers * spec.q_width() / (t * dec_peak) * slow,
                    dec_mem: spec.weight_bytes() / t / bw * slow,
                    dec_ctx_m: spec.kv_bytes_per_token() / t / bw * slow,
                    dec_fixed: layers * k.layer_overhead_s + comm_fixed,
                    prefill_sm_k: k.prefill_sm_k,
                    decode_sm_k: k.decode_sm_k / t,
                    sched_per_seq: spec.sched_overhead_per_seq_s,
                }
            }
            CostModelSpec::Linear(l) => StepCost {
                roofline: false,
                pre_tok: l.prefill_per_token_s / t,
                pre_sq: l.prefill_per_sq_token_s / t,
                pre_mem: 0.0,
                pre_fixed: l.prefill_base_s,
                pre_comm_tok: 0.0,
                dec_seq: l.decode_per_seq_s / t,
                dec_ctx_c: l.decode_per_ctx_token_s / t,
                dec_mem: 0.0,
                dec_ctx_m: 0.0,
                dec_fixed: l.decode_base_s,
                prefill_sm_k: l.prefill_sm_k,
                decode_sm_k: l.decode_sm_k / t,
                sched_per_seq: 0.0,
            },
        }
    }

    /// Slowdown of prefill on a fraction `sm` (0, 1] of the SMs.
    #[inline]
    pub fn prefill_sm_factor(&self, sm: f64) -> f64 {
        1.0 + self.prefill_sm_k * (1.0 / sm - 1.0)
    }

    /// Slowdown of decode on a fraction `sm` (0, 1] of the SMs.
    #[inline]
    pub fn decode_sm_factor(&self, sm: f64) -> f64 {
        1.0 + self.decode_sm_k * (1.0 / sm - 1.0)
    }

    /// One prefill iteration over `tokens` prompt tokens whose squared lengths sum to `sum_sq`.
    #[inline]
    pub fn prefill_s(&self, tokens: f64, sum_sq: f64, sm: f64) -> f64 {
        let compute = self.pre_tok * tokens + self.pre_sq * sum_sq;
        let body = if self.roofline {
            compute.max(self.pre_mem)
        } else {
            compute
        };
        body * self.prefill_sm_factor(sm) + self.pre_fixed + self.pre_comm_tok * tokens
    }

    /// One decode iteration over `batch` sequences holding `ctx_tokens` tokens of context in total,
    /// without the scheduling overhead.
    #[inline]
    pub fn decode_step_s(&self, batch: f64, ctx_tokens: f64, sm: f64) -> f64 {
        let compute = self.dec_seq * batch + self.dec_ctx_c * ctx_tokens;
        let body = if self.roofline {
            compute.max(self.dec_mem + self.dec_ctx_m * ctx_tokens)
        } else {
            compute + self.dec_mem
        };
        body * self.decode_sm_factor(sm) + self.dec_fixed
    }

    /// A decode iteration including MuxServe's per-sequence scheduling overhead.
    #[inline]
    pub fn decode_s(&self, batch: f64, ctx_tokens: f64, sm: f64) -> f64 {
        self.decode_step_s(batch, ctx_tokens, sm) + self.sched_per_seq * batch
    }

    /// Latency of one request served alone at 100 % SM: prefill plus `output − 1` decode steps
    /// (the first token comes out of prefill) over a growing context.
    pub fn isolated_latency_s(&self, prompt: u32, output: u32) -> f64 {
        let p = prompt as f64;
        let mut t = self.prefill_s(p, p * p, 1.0);
        let steps = output.saturating_sub(1) as f64;
        if steps > 0.0 {
            // Decode time is affine in context for a fixed batch, so the mean context suffices.
            let mean_ctx = p + 1.0 + (steps - 1.0) / 2.0;
            t += steps * self.decode_s(1.0, mean_ctx, 1.0);
        }
        t
    }
}

/// Memory of one model at one tp degree (per GPU), in bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MemoryCost {
    pub weight_bytes_per_gpu: f64,
    pub kv_bytes_per_token_per_gpu: f64,
}

impl MemoryCost {
    pub fn new(spec: &LlmSpec, tp: u32) -> MemoryCost {
        let t = tp.max(1) as f64;
        MemoryCost {
            weight_bytes_per_gpu: spec.weight_bytes() / t,
            kv_bytes_per_token_per_gpu: spec.kv_bytes_per_token() / t,
        }
    }
}
