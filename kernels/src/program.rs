//! The NVRTC program of the CUDA backend: its sources and the kernel families it defines. The same
//! text in every build, so the CUDA-less twin can show the program and its limits, and the NVRTC
//! test can compile it on a machine that has libnvrtc but no GPU.

/// Largest head dimension of the attention kernel (32 lanes × 8 registers).
pub const MAX_HEAD_DIM: usize = 256;

/// The NVRTC sources, in the order they are concatenated into one program.
const SOURCES: [(&str, &str); 5] = [
    ("dtype.cuh", include_str!("nvrtc/dtype.cuh")),
    ("elementwise.cu", include_str!("nvrtc/elementwise.cu")),
    ("rows.cu", include_str!("nvrtc/rows.cu")),
    ("attention.cu", include_str!("nvrtc/attention.cu")),
    ("moe.cu", include_str!("nvrtc/moe.cu")),
];

/// Kernel families; each exists as `<family>_f32`, `<family>_f16` and `<family>_bf16`.
pub const KERNEL_FAMILIES: [&str; 11] = [
    "bias_gelu",
    "silu_mul",
    "from_f32",
    "layer_norm",
    "rms_norm",
    "softmax_rows",
    "attention",
    "kv_append",
    "moe_route",
    "moe_gather",
    "moe_scatter",
];

/// The whole NVRTC program: the element-type prelude and every kernel family.
pub fn kernel_source() -> String {
    SOURCES
        .iter()
        .map(|(name, text)| format!("// ---- {name} ----\n{text}\n"))
        .collect()
}
