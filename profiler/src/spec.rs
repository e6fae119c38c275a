//! Model spec files (`plexserve/model-spec/v1`): the shape of a transformer, the batch sizes and
//! tensor-parallel degrees to profile, and the validated [`ModelSpec`] the rest of the crate uses.

use std::path::Path;

use plexserve_kernels::Dtype;
use serde::{Deserialize, Serialize};

use crate::error::{ProfilerError, Result};

pub const SPEC_SCHEMA: &str = "plexserve/model-spec/v1";

/// Architecture family; it fixes what the spec does not spell out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    /// Encoder: bidirectional attention, LayerNorm, GeLU FFN with biases, learned positions, a
    /// masked-LM head over every token with weights tied to the embedding.
    Bert,
    /// Decoder: as BERT but causal, and the LM head scores only the last token of each sequence.
    Gpt,
    /// GShard-style decoder whose FFNs are mixtures of experts with top-k routing (every
    /// `moe_every`-th layer); LM head over every token, tied.
    Moe,
    /// LLaMA-style decoder: causal, RMSNorm, SwiGLU FFN without biases, rotary positions
    /// (no position table), grouped KV heads, untied LM head over the last token.
    Llama,
}

/// Which forward pass a profile describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// One pass over `seq_len` tokens per request (AlpaServe's request, an LLM's prefill).
    #[default]
    Prefill,
    /// One generation step: one new token per sequence attending to `context_len` cached positions.
    Decode,
}

/// A model spec as written on disk.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpecFile {
    pub schema: String,
    pub name: String,
    pub family: Family,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub layers: u32,
    pub hidden: u32,
    pub heads: u32,
    /// Key/value heads (grouped-query attention); default `heads`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv_heads: Option<u32>,
    /// FFN inner width (per expert for MoE); default `4 · hidden`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ffn: Option<u32>,
    /// Experts per MoE layer (family `moe` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experts: Option<u32>,
    /// Experts each token visits; default 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<u32>,
    /// Every `moe_every`-th layer is a MoE layer (1: all of them); default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moe_every: Option<u32>,
    pub vocab: u32,
    /// Tokens per request in a prefill pass.
    pub seq_len: u32,
    #[serde(default)]
    pub phase: Phase,
    /// Cached positions a decode step attends to (including the new token); default `seq_len`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_len: Option<u32>,
    pub batch_sizes: Vec<u32>,
    pub tp_degrees: Vec<u32>,
    /// Element type of weights and activations as deployed; default `f16`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dtype: Option<String>,
}

/// A validated model spec with every default resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSpec {
    pub name: String,
    pub family: Family,
    pub layers: usize,
    pub hidden: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub ffn: usize,
    /// 0 for dense models.
    pub experts: usize,
    pub top_k: usize,
    pub moe_every: usize,
    pub vocab: usize,
    pub seq_len: usize,
    pub phase: Phase,
    pub context_len: usize,
    pub batch_sizes: Vec<u32>,
    pub tp_degrees: Vec<u32>,
    pub dtype: Dtype,
}

/// The solver's document errors (a file that is not JSON, or not a spec) as spec errors.
fn as_spec_error(e: plexserve_solver::SolverError) -> ProfilerError {
    match e {
        plexserve_solver::SolverError::Invalid {
            file,
            json_path,
            message,
        } => ProfilerError::spec(&file, json_path, message),
        other => ProfilerError::Solver(other),
    }
}

impl ModelSpec {
    /// Reads and validates a spec file.
    pub fn load(path: &Path) -> Result<ModelSpec> {
        let text = std::fs::read_to_string(path).map_err(|source| ProfilerError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        ModelSpec::from_json(path, &text)
    }

    /// Validates spec JSON text; `path` names the file in errors.
    pub fn from_json(path: &Path, text: &str) -> Result<ModelSpec> {
        let file: SpecFile =
            plexserve_solver::parse_document(path, text, SPEC_SCHEMA).map_err(as_spec_error)?;
        ModelSpec::from_file(path, &file)
    }

    /// Validates a parsed spec.
    pub fn from_file(path: &Path, f: &SpecFile) -> Result<ModelSpec> {
        let bad = |at: &str, msg: String| Err(ProfilerError::spec(path, at, msg));
        plexserve_solver::check_schema(path, SPEC_SCHEMA, &f.schema).map_err(as_spec_error)?;
        if f.name.is_empty() {
            return bad("name", "expected a non-empty name".into());
        }
        // Upper bounds well beyond any published model (the largest have ≈ 130 layers, hidden
        // ≈ 25 k, 256 experts, a 10 M-token window), so that a size typed with digits too many is
        // an error rather than an out-of-memory abort, and every count fits the u64 arithmetic.
        for (at, v, most) in [
            ("layers", Some(f.layers), 1 << 10),
            ("hidden", Some(f.hidden), 1 << 17),
            ("heads", Some(f.heads), 1 << 12),
            ("kv_heads", f.kv_heads, 1 << 12),
            ("ffn", f.ffn, 1 << 19),
            ("experts", f.experts, 1 << 10),
            ("vocab", Some(f.vocab), 1 << 22),
            ("seq_len", Some(f.seq_len), 1 << 24),
            ("context_len", f.context_len, 1 << 24),
        ] {
            if let Some(v) = v.filter(|&v| v > most) {
                return bad(at, format!("expected at most {most}, found {v}"));
            }
        }
        for (at, v) in [
            ("layers", f.layers),
            ("hidden", f.hidden),
            ("heads", f.heads),
            ("vocab", f.vocab),
            ("seq_len", f.seq_len),
        ] {
            if v == 0 {
                return bad(at, "expected a positive number, found 0".into());
            }
        }
        for (at, list, most) in [
            ("batch_sizes", &f.batch_sizes, 1 << 16),
            ("tp_degrees", &f.tp_degrees, 1 << 16),
        ] {
            if let Some((i, v)) = list.iter().enumerate().find(|(_, &v)| v > most) {
                return bad(
                    &format!("{at}[{i}]"),
                    format!("expected at most {most}, found {v}"),
                );
            }
        }
        if f.hidden % f.heads != 0 {
            return bad(
                "heads",
                format!(
                    "heads ({}) must divide hidden ({}) into equal head dimensions",
                    f.heads, f.hidden
                ),
            );
        }
        let kv_heads = f.kv_heads.unwrap_or(f.heads);
        if kv_heads == 0 || f.heads % kv_heads != 0 {
            return bad(
                "kv_heads",
                format!(
                    "kv_heads ({kv_heads}) must be positive and divide heads ({})",
                    f.heads
                ),
            );
        }
        let ffn = match (f.family, f.ffn) {
            (_, Some(0)) => return bad("ffn", "expected a positive FFN width, found 0".into()),
            (_, Some(v)) => v,
            (Family::Llama, None) => {
                return bad("ffn", "a llama-family spec must give its FFN width".into())
            }
            (_, None) => 4 * f.hidden,
        };
        let (experts, top_k, moe_every) = match f.family {
            Family::Moe => {
                let Some(e) = f.experts.filter(|&e| e > 0) else {
                    return bad(
                        "experts",
                        "a moe-family spec needs a positive number of experts".into(),
                    );
                };
                let k = f.top_k.unwrap_or(2.min(e));
                if k == 0 || k > e {
                    return bad(
                        "top_k",
                        format!("expected 1 ≤ top_k ≤ experts ({e}), found {k}"),
                    );
                }
                let every = f.moe_every.unwrap_or(1);
                if every == 0 {
                    return bad(
                        "moe_every",
                        "expected a positive layer interval, found 0".into(),
                    );
                }
                (e, k, every)
            }
            _ => {
                for (at, v) in [
                    ("experts", f.experts),
                    ("top_k", f.top_k),
                    ("moe_every", f.moe_every),
                ] {
                    if v.is_some() {
                        return bad(at, format!("only a moe-family spec takes `{at}`"));
                    }
                }
                (0, 0, 1)
            }
        };
        let context_len = match (f.phase, f.context_len) {
            (Phase::Prefill, Some(_)) => {
                return bad(
                    "context_len",
                    "only a decode-phase spec takes context_len".into(),
                )
            }
            (Phase::Prefill, None) => f.seq_len,
            (Phase::Decode, c) => {
                let c = c.unwrap_or(f.seq_len);
                if c == 0 {
                    return bad(
                        "context_len",
                        "expected a positive number of cached positions".into(),
                    );
                }
                c
            }
        };
        if f.batch_sizes.is_empty()
            || f.batch_sizes[0] == 0
            || f.batch_sizes.windows(2).any(|w| w[0] >= w[1])
        {
            return bad(
                "batch_sizes",
                "expected positive batch sizes in strictly ascending order".into(),
            );
        }
        if f.tp_degrees.is_empty()
            || f.tp_degrees[0] == 0
            || f.tp_degrees.windows(2).any(|w| w[0] >= w[1])
        {
            return bad(
                "tp_degrees",
                "expected positive tensor-parallel degrees in strictly ascending order".into(),
            );
        }
        for (i, &t) in f.tp_degrees.iter().enumerate() {
            let at = format!("tp_degrees[{i}]");
            if f.heads % t != 0 {
                return bad(
                    &at,
                    format!(
                        "tp {t} does not divide heads ({}): heads are split evenly across devices",
                        f.heads
                    ),
                );
            }
            // KV heads are split when there are enough, replicated when tp exceeds them.
            if kv_heads % t != 0 && t % kv_heads != 0 {
                return bad(
                    &at,
                    format!("tp {t} neither divides kv_heads ({kv_heads}) nor is a multiple of it"),
                );
            }
            if ffn % t != 0 {
                return bad(&at, format!("tp {t} does not divide the FFN width ({ffn})"));
            }
        }
        let dtype = match f.dtype.as_deref() {
            None => Dtype::F16,
            Some(s) => Dtype::parse(s).ok_or_else(|| {
                ProfilerError::spec(
                    path,
                    "dtype",
                    format!("expected f32, f16 or bf16, found \"{s}\""),
                )
            })?,
        };
        Ok(ModelSpec {
            name: f.name.clone(),
            family: f.family,
            layers: f.layers as usize,
            hidden: f.hidden as usize,
            heads: f.heads as usize,
            kv_heads: kv_heads as usize,
            head_dim: (f.hidden / f.heads) as usize,
            ffn: ffn as usize,
            experts: experts as usize,
            top_k: top_k as usize,
            moe_every: moe_every as usize,
            vocab: f.vocab as usize,
            seq_len: f.seq_len as usize,
            phase: f.phase,
            context_len: context_len as usize,
            batch_sizes: f.batch_sizes.clone(),
            tp_degrees: f.tp_degrees.clone(),
            dtype,
        })
    }

    /// Whether transformer layer `i` (0-based) has a mixture-of-experts FFN.
    pub fn is_moe_layer(&self, i: usize) -> bool {
        self.experts > 0 && (i + 1) % self.moe_every == 0
    }

    /// Parameters of the whole model (what the weights add up to at tp 1).
    pub fn parameters(&self) -> u64 {
        let mut total = crate::ops::layer_parameters(self, crate::ops::LayerKind::Embedding, 1)
            + crate::ops::layer_parameters(self, crate::ops::LayerKind::Head, 1);
        for i in 0..self.layers {
            total += crate::ops::layer_parameters(
                self,
                crate::ops::LayerKind::Block {
                    moe: self.is_moe_layer(i),
                },
                1,
            );
        }
        total
    }
}
