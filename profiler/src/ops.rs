//! What a layer runs: the operators of each layer kind at one tensor-parallel degree and batch
//! size, and the parameters each device holds. Measured and analytic profiles share this list,
//! so both describe the same computation.

use std::fmt;

use crate::spec::{Family, ModelSpec, Phase};

/// The kinds of layer a profile lists. Every transformer block of one kind is identical, so each
/// kind is costed once and repeated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LayerKind {
    /// Token (and, for learned positions, position) embedding lookup.
    Embedding,
    /// Attention + FFN; `moe` when the FFN is a mixture of experts.
    Block { moe: bool },
    /// Final norm and the vocabulary projection.
    Head,
}

impl LayerKind {
    pub fn label(self) -> &'static str {
        match self {
            LayerKind::Embedding => "embedding",
            LayerKind::Block { moe: false } => "block",
            LayerKind::Block { moe: true } => "moe-block",
            LayerKind::Head => "head",
        }
    }
}

/// One operator with the shapes one device of a tensor-parallel group runs. Ordered and hashable
/// so identical operators are timed once.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    /// `count` independent `[m, k] · [k, n]` products.
    Gemm {
        m: usize,
        k: usize,
        n: usize,
        count: usize,
    },
    /// Scaled dot-product attention; `sq < skv` reads `skv − sq` cached positions.
    Attention {
        batch: usize,
        sq: usize,
        skv: usize,
        heads: usize,
        kv_heads: usize,
        head_dim: usize,
        causal: bool,
    },
    LayerNorm {
        rows: usize,
        cols: usize,
    },
    RmsNorm {
        rows: usize,
        cols: usize,
    },
    BiasGelu {
        rows: usize,
        cols: usize,
    },
    SiluMul {
        rows: usize,
        cols: usize,
    },
    /// Gather of `rows` rows of width `cols` from a `[vocab, cols]` table.
    Embedding {
        rows: usize,
        cols: usize,
        vocab: usize,
    },
    /// Router, top-k routing and the experts' GeLU FFNs (inner width `ffn` per device).
    Moe {
        tokens: usize,
        hidden: usize,
        ffn: usize,
        experts: usize,
        top_k: usize,
    },
    /// Ring all-reduce of `bytes` over `tp` devices (from the link model, never timed).
    AllReduce {
        bytes: u64,
        tp: usize,
    },
    /// Ring all-gather whose gathered result is `bytes` (from the link model).
    AllGather {
        bytes: u64,
        tp: usize,
    },
}

impl Op {
    /// Communication is modelled, not measured.
    pub fn is_communication(&self) -> bool {
        matches!(self, Op::AllReduce { .. } | Op::AllGather { .. })
    }

    /// Elements the operator's f32 operands occupy when run for real on the host: the guard
    /// against profiling a model the machine cannot hold.
    pub fn host_elements(&self) -> u64 {
        let v = |x: usize| x as u64;
        match *self {
            Op::Gemm { m, k, n, .. } => v(m * k + k * n + m * n),
            Op::Attention {
                batch,
                sq,
                skv,
                heads,
                kv_heads,
                head_dim,
                ..
            } => {
                v(batch * (2 * sq * heads * head_dim + 2 * skv * kv_heads * head_dim))
                    + v(heads * sq * skv)
            }
            Op::LayerNorm { rows, cols }
            | Op::RmsNorm { rows, cols }
            | Op::BiasGelu { rows, cols } => v(rows * cols),
            Op::SiluMul { rows, cols } => v(2 * rows * cols),
            Op::Embedding { rows, cols, vocab } => v((vocab + rows) * cols),
            Op::Moe {
                tokens,
                hidden,
                ffn,
                experts,
                ..
            } => v(experts * (2 * hidden * ffn + ffn + hidden)) + v(tokens * (2 * hidden + ffn)),
            Op::AllReduce { .. } | Op::AllGather { .. } => 0,
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Gemm { m, k, n, count } if *count == 1 => write!(f, "gemm {m}x{k}x{n}"),
            Op::Gemm { m, k, n, count } => write!(f, "gemm {count}×{m}x{k}x{n}"),
            Op::Attention {
                batch,
                sq,
                skv,
                heads,
                kv_heads,
                head_dim,
                causal,
            } => write!(
                f,
                "attention b{batch} q{sq} kv{skv} h{heads}/{kv_heads}x{head_dim}{}",
                if *causal { " causal" } else { "" }
            ),
            Op::LayerNorm { rows, cols } => write!(f, "layer_norm {rows}x{cols}"),
            Op::RmsNorm { rows, cols } => write!(f, "rms_norm {rows}x{cols}"),
            Op::BiasGelu { rows, cols } => write!(f, "bias_gelu {rows}x{cols}"),
            Op::SiluMul { rows, cols } => write!(f, "silu_mul {rows}x{cols}"),
            Op::Embedding { rows, cols, vocab } => write!(f, "embedding {rows}x{cols} of {vocab}"),
            Op::Moe {
                tokens,
                hidden,
                ffn,
                experts,
                top_k,
            } => {
                write!(f, "moe t{tokens} h{hidden} f{ffn} e{experts} top{top_k}")
            }
            Op::AllReduce { bytes, tp } => write!(f, "all_reduce {bytes} B over {tp}"),
            Op::AllGather { bytes, tp } => write!(f, "all_gather {bytes} B over {tp}"),
        }
    }
}

/// Tokens processed per pass, queries and keys per sequence, and the LM head's scored tokens.
struct PassShape {
    tokens: usize,
    sq: usize,
    skv: usize,
    head_tokens: usize,
}

fn pass_shape(spec: &ModelSpec, batch: usize) -> PassShape {
    match spec.phase {
        Phase::Prefill => PassShape {
            tokens: batch * spec.seq_len,
            sq: spec.seq_len,
            skv: spec.seq_len,
            head_tokens: match spec.family {
                Family::Bert | Family::Moe => batch * spec.seq_len,
                Family::Gpt | Family::Llama => batch,
            },
        },
        Phase::Decode => PassShape {
            tokens: batch,
            sq: 1,
            skv: spec.context_len,
            head_tokens: batch,
        },
    }
}

/// KV heads one device holds: split when there are at least `tp`, else replicated.
fn kv_heads_per_device(spec: &ModelSpec, tp: usize) -> usize {
    (spec.kv_heads / tp).max(1)
}

/// The operators one device runs for one layer of `kind` at tensor-parallel degree `tp` and
/// batch size `batch` (requests of `seq_len` tokens, or sequences in a decode step).
pub fn layer_ops(spec: &ModelSpec, kind: LayerKind, tp: usize, batch: usize) -> Vec<Op> {
    let p = pass_shape(spec, batch);
    let h = spec.hidden;
    let bytes = |elems: usize| (elems * spec.dtype.bytes()) as u64;
    let norm = |rows| match spec.family {
        Family::Llama => Op::RmsNorm { rows, cols: h },
        _ => Op::LayerNorm { rows, cols: h },
    };
    let mut ops = Vec::new();
    match kind {
        LayerKind::Embedding => {
            ops.push(Op::Embedding {
                rows: p.tokens,
                cols: h,
                vocab: spec.vocab.div_ceil(tp),
            });
            if tp > 1 {
                // Vocabulary-parallel table: each device looks up its rows, an all-reduce merges.
                ops.push(Op::AllReduce {
                    bytes: bytes(p.tokens * h),
                    tp,
                });
            }
        }
        LayerKind::Block { moe } => {
            let hq = spec.heads / tp;
            let hkv = kv_heads_per_device(spec, tp);
            let hd = spec.head_dim;
            ops.push(norm(p.tokens));
            ops.push(Op::Gemm {
                m: p.tokens,
                k: h,
                n: (hq + 2 * hkv) * hd,
                count: 1,
            });
            ops.push(Op::Attention {
                batch,
                sq: p.sq,
                skv: p.skv,
                heads: hq,
                kv_heads: hkv,
                head_dim: hd,
                causal: spec.family != Family::Bert,
            });
            ops.push(Op::Gemm {
                m: p.tokens,
                k: hq * hd,
                n: h,
                count: 1,
            });
            if tp > 1 {
                ops.push(Op::AllReduce {
                    bytes: bytes(p.tokens * h),
                    tp,
                });
            }
            ops.push(norm(p.tokens));
            let f = spec.ffn / tp;
            if moe {
                ops.push(Op::Moe {
                    tokens: p.tokens,
                    hidden: h,
                    ffn: f,
                    experts: spec.experts,
                    top_k: spec.top_k,
                });
            } else if spec.family == Family::Llama {
                // Gate and up projections as one GEMM of twice the width.
                ops.push(Op::Gemm {
                    m: p.tokens,
                    k: h,
                    n: 2 * f,
                    count: 1,
                });
                ops.push(Op::SiluMul {
                    rows: p.tokens,
                    cols: f,
                });
                ops.push(Op::Gemm {
                    m: p.tokens,
                    k: f,
                    n: h,
                    count: 1,
                });
            } else {
                ops.push(Op::Gemm {
                    m: p.tokens,
                    k: h,
                    n: f,
                    count: 1,
                });
                ops.push(Op::BiasGelu {
                    rows: p.tokens,
                    cols: f,
                });
                ops.push(Op::Gemm {
                    m: p.tokens,
                    k: f,
                    n: h,
                    count: 1,
                });
            }
            if tp > 1 {
                ops.push(Op::AllReduce {
                    bytes: bytes(p.tokens * h),
                    tp,
                });
            }
        }
        LayerKind::Head => {
            ops.push(norm(p.head_tokens));
            ops.push(Op::Gemm {
                m: p.head_tokens,
                k: h,
                n: spec.vocab.div_ceil(tp),
                count: 1,
            });
            if tp > 1 {
                ops.push(Op::AllGather {
                    bytes: bytes(p.head_tokens * spec.vocab),
                    tp,
                });
            }
        }
    }
    ops
}

/// Parameters one device holds for a layer of `kind` at tensor-parallel degree `tp`. Norm
/// parameters and the router are replicated; everything else is split `tp` ways.
pub fn layer_parameters(spec: &ModelSpec, kind: LayerKind, tp: usize) -> u64 {
    let h = spec.hidden as u64;
    let biases = spec.family != Family::Llama;
    let norm = if biases { 2 * h } else { h };
    let u = |x: usize| x as u64;
    match kind {
        LayerKind::Embedding => {
            let positions = if spec.family == Family::Llama {
                0
            } else {
                u(spec.seq_len.max(spec.context_len)) * h
            };
            u(spec.vocab.div_ceil(tp)) * h + positions
        }
        LayerKind::Block { moe } => {
            let hd = u(spec.head_dim);
            let q = u(spec.heads / tp) * hd;
            let kv = u(kv_heads_per_device(spec, tp)) * hd;
            let mut n = h * (q + 2 * kv) + q * h + 2 * norm;
            if biases {
                n += q + 2 * kv + h;
            }
            let f = u(spec.ffn / tp);
            n += if moe {
                h * u(spec.experts) + u(spec.experts) * (2 * h * f + f + h)
            } else if spec.family == Family::Llama {
                3 * h * f
            } else {
                2 * h * f + f + h
            };
            n
        }
        LayerKind::Head => match spec.family {
            // The projection reuses the embedding table; only the final norm is new.
            Family::Bert | Family::Gpt | Family::Moe => norm,
            Family::Llama => u(spec.vocab.div_ceil(tp)) * h + norm,
        },
    }
}

/// Elements of a layer's output activation at batch size `batch` (what a stage boundary sends).
pub fn activation_elements(spec: &ModelSpec, kind: LayerKind, batch: usize) -> u64 {
    let p = pass_shape(spec, batch);
    match kind {
        LayerKind::Embedding | LayerKind::Block { .. } => (p.tokens * spec.hidden) as u64,
        LayerKind::Head => (p.head_tokens * spec.vocab) as u64,
    }
}

/// The layer kinds of the model in order: embedding, each block, head.
pub fn layer_sequence(spec: &ModelSpec) -> Vec<LayerKind> {
    let mut seq = vec![LayerKind::Embedding];
    seq.extend((0..spec.layers).map(|i| LayerKind::Block {
        moe: spec.is_moe_layer(i),
    }));
    seq.push(LayerKind::Head);
    seq
}
