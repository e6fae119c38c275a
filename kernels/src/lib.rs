//! plexserve-kernels: the transformer operators that plexserve profiles and serves with.
//!
//! - CPU (always): f32 operators over ndarray matrices, GEMMs through matrixmultiply, row-wise
//!   work split over rayon. They double as the numerical reference of the CUDA backend, and
//!   [`reference`](mod@reference) holds plain loops that test them.
//! - CUDA ([`cuda`], feature `cuda`): cuBLAS GEMMs and NVRTC-compiled kernels (bias + GeLU,
//!   SwiGLU, LayerNorm, RMSNorm, softmax, attention with causal mask and KV cache, MoE routing and
//!   expert FFNs), each in f32, f16 and bf16 with f32 accumulation, probed at run time. Without
//!   the feature the module has the same names and every entry point returns
//!   [`KernelError::NotCompiled`], so callers never mention the feature.
//!
//! Layout: activations are row-major `[tokens, features]` with the sequences of a batch stacked
//! along the rows.
//!
//! ```
//! use ndarray::Array2;
//! use plexserve_kernels::{attention, AttentionShape};
//! let shape = AttentionShape { heads: 4, kv_heads: 2, head_dim: 8, causal: true };
//! let q = Array2::from_elem((2 * 5, shape.q_width()), 0.1f32);
//! let kv = Array2::from_elem((2 * 5, shape.kv_width()), 0.2f32);
//! let out = attention(q.view(), kv.view(), kv.view(), 2, shape).unwrap();
//! assert_eq!(out.dim(), (10, 32));
//! match plexserve_kernels::cuda::CudaDevice::open(0) {
//!     Ok(gpu) => println!("GPU: {}", gpu.info().name),
//!     Err(e) => println!("no GPU: {e}"),
//! }
//! ```

mod cpu;
#[cfg_attr(feature = "cuda", path = "cuda.rs")]
#[cfg_attr(not(feature = "cuda"), path = "cuda_disabled.rs")]
pub mod cuda;
mod error;
mod program;
pub mod reference;

pub use cpu::{
    attention, attention_with_cache, bias_gelu, ffn, gelu, gemm, gemm_into, layer_norm, linear,
    moe_ffn, rms_norm, route, silu_mul, softmax_rows, AttentionShape, Expert, KvCache, MoeLayer,
    Route,
};
pub use error::{KernelError, Result};

/// Element type of device tensors. The CPU backend computes in f32 throughout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dtype {
    F32,
    F16,
    Bf16,
}

impl Dtype {
    /// Bytes per element.
    pub fn bytes(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::F16 | Dtype::Bf16 => 2,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "f32",
            Dtype::F16 => "f16",
            Dtype::Bf16 => "bf16",
        }
    }

    /// Parses `f32`, `f16`/`fp16`, `bf16`.
    pub fn parse(s: &str) -> Option<Dtype> {
        match s {
            "f32" | "fp32" => Some(Dtype::F32),
            "f16" | "fp16" => Some(Dtype::F16),
            "bf16" => Some(Dtype::Bf16),
            _ => None,
        }
    }
}
