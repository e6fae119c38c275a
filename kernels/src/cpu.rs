//! CPU operators (f32): the backend that always exists and the numerical reference for CUDA.
//!
//! Matrices are row-major `[tokens, features]`; a batch of sequences is stacked along the rows
//! (`batch · seq` rows). GEMMs go to matrixmultiply through ndarray; row-wise operators split rows
//! over rayon. Every parallel loop writes disjoint rows and every reduction runs inside one row in
//! a fixed order, so results do not depend on the thread count.

use ndarray::{linalg::general_mat_mul, s, Array1, Array2, ArrayView1, ArrayView2, Axis, Zip};
use rayon::prelude::*;

use crate::error::{KernelError, Result};

/// `a · b` for `a: [m, k]`, `b: [k, n]`.
pub fn gemm(a: ArrayView2<f32>, b: ArrayView2<f32>) -> Result<Array2<f32>> {
    let mut c = Array2::zeros((a.nrows(), b.ncols()));
    gemm_into(1.0, a, b, 0.0, &mut c)?;
    Ok(c)
}

/// `c ← alpha · a · b + beta · c`, without allocating: the form hot loops use.
pub fn gemm_into(
    alpha: f32,
    a: ArrayView2<f32>,
    b: ArrayView2<f32>,
    beta: f32,
    c: &mut Array2<f32>,
) -> Result<()> {
    if a.ncols() != b.nrows() || c.nrows() != a.nrows() || c.ncols() != b.ncols() {
        return Err(KernelError::shape(
            "gemm",
            format!(
                "cannot multiply [{}, {}] by [{}, {}] into [{}, {}]",
                a.nrows(),
                a.ncols(),
                b.nrows(),
                b.ncols(),
                c.nrows(),
                c.ncols()
            ),
        ));
    }
    general_mat_mul(alpha, &a, &b, beta, c);
    Ok(())
}

/// `x · w + bias` for `x: [t, k]`, `w: [k, n]`, `bias: [n]`.
pub fn linear(
    x: ArrayView2<f32>,
    w: ArrayView2<f32>,
    bias: Option<ArrayView1<f32>>,
) -> Result<Array2<f32>> {
    let mut y = gemm(x, w)?;
    if let Some(b) = bias {
        check_len("linear", "bias", b.len(), y.ncols())?;
        y.axis_iter_mut(Axis(0)).for_each(|mut row| row += &b);
    }
    Ok(y)
}

/// GeLU, tanh form (what BERT and GPT-2 use).
#[inline]
pub fn gelu(v: f32) -> f32 {
    // sqrt(2/π)
    const C: f32 = 0.797_884_6;
    0.5 * v * (1.0 + (C * (v + 0.044_715 * v * v * v)).tanh())
}

/// `x ← gelu(x + bias)` row by row; the fused epilogue of the first FFN GEMM.
pub fn bias_gelu(x: &mut Array2<f32>, bias: ArrayView1<f32>) -> Result<()> {
    check_len("bias_gelu", "bias", bias.len(), x.ncols())?;
    x.axis_iter_mut(Axis(0))
        .into_par_iter()
        .for_each(|mut row| {
            Zip::from(&mut row)
                .and(&bias)
                .for_each(|v, &b| *v = gelu(*v + b));
        });
    Ok(())
}

/// `gate ← silu(gate) · up`: the SwiGLU combination of LLaMA-style FFNs.
pub fn silu_mul(gate: &mut Array2<f32>, up: ArrayView2<f32>) -> Result<()> {
    if gate.dim() != up.dim() {
        return Err(KernelError::shape(
            "silu_mul",
            format!("gate is {:?} but up is {:?}", gate.dim(), up.dim()),
        ));
    }
    Zip::from(gate.rows_mut())
        .and(up.rows())
        .par_for_each(|mut g, u| {
            Zip::from(&mut g)
                .and(&u)
                .for_each(|g, &u| *g = *g / (1.0 + (-*g).exp()) * u);
        });
    Ok(())
}

/// LayerNorm over each row: `(x − mean) / sqrt(var + eps) · gamma + beta`.
pub fn layer_norm(
    x: &mut Array2<f32>,
    gamma: ArrayView1<f32>,
    beta: ArrayView1<f32>,
    eps: f32,
) -> Result<()> {
    check_len("layer_norm", "gamma", gamma.len(), x.ncols())?;
    check_len("layer_norm", "beta", beta.len(), x.ncols())?;
    let n = x.ncols() as f32;
    x.axis_iter_mut(Axis(0))
        .into_par_iter()
        .for_each(|mut row| {
            let mean = row.iter().sum::<f32>() / n;
            let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
            let inv = 1.0 / (var + eps).sqrt();
            Zip::from(&mut row)
                .and(&gamma)
                .and(&beta)
                .for_each(|v, &g, &b| *v = (*v - mean) * inv * g + b);
        });
    Ok(())
}

/// RMSNorm over each row (LLaMA): `x / sqrt(mean(x²) + eps) · gamma`.
pub fn rms_norm(x: &mut Array2<f32>, gamma: ArrayView1<f32>, eps: f32) -> Result<()> {
    check_len("rms_norm", "gamma", gamma.len(), x.ncols())?;
    let n = x.ncols() as f32;
    x.axis_iter_mut(Axis(0))
        .into_par_iter()
        .for_each(|mut row| {
            let inv = 1.0 / (row.iter().map(|v| v * v).sum::<f32>() / n + eps).sqrt();
            Zip::from(&mut row)
                .and(&gamma)
                .for_each(|v, &g| *v *= inv * g);
        });
    Ok(())
}

/// Softmax of every row, shifted by the row maximum so that large logits do not overflow.
/// Entries equal to `-inf` (masked) get probability 0; a row that is all `-inf` becomes all 0.
pub fn softmax_rows(x: &mut Array2<f32>) {
    x.axis_iter_mut(Axis(0))
        .into_par_iter()
        .for_each(softmax_in_place);
}

fn softmax_in_place(mut row: ndarray::ArrayViewMut1<f32>) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max.is_infinite() && max < 0.0 {
        row.fill(0.0);
        return;
    }
    let mut sum = 0.0;
    for v in row.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    row.mapv_inplace(|v| v / sum);
}

/// Head layout of an attention operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttentionShape {
    /// Query heads.
    pub heads: usize,
    /// Key/value heads; fewer than `heads` is grouped-query attention (each KV head serves
    /// `heads / kv_heads` query heads), 1 is multi-query attention.
    pub kv_heads: usize,
    pub head_dim: usize,
    /// Query `i` of `sq` sees keys up to position `skv − sq + i` (queries are the newest positions).
    pub causal: bool,
}

impl AttentionShape {
    /// Checks the head counts and returns the number of query heads per KV head.
    pub fn validate(&self) -> Result<usize> {
        if self.heads == 0 || self.kv_heads == 0 || self.head_dim == 0 {
            return Err(KernelError::shape(
                "attention",
                format!(
                    "heads ({}), kv_heads ({}) and head_dim ({}) must be positive",
                    self.heads, self.kv_heads, self.head_dim
                ),
            ));
        }
        if self.heads % self.kv_heads != 0 {
            return Err(KernelError::shape(
                "attention",
                format!(
                    "kv_heads ({}) must divide heads ({})",
                    self.kv_heads, self.heads
                ),
            ));
        }
        Ok(self.heads / self.kv_heads)
    }

    pub fn q_width(&self) -> usize {
        self.heads * self.head_dim
    }

    pub fn kv_width(&self) -> usize {
        self.kv_heads * self.head_dim
    }
}

/// Scaled dot-product attention over a batch of equal-length sequences.
///
/// `q: [batch·sq, heads·head_dim]`, `k, v: [batch·skv, kv_heads·head_dim]`; returns
/// `[batch·sq, heads·head_dim]`.
pub fn attention(
    q: ArrayView2<f32>,
    k: ArrayView2<f32>,
    v: ArrayView2<f32>,
    batch: usize,
    shape: AttentionShape,
) -> Result<Array2<f32>> {
    shape.validate()?;
    if batch == 0 || q.nrows() % batch != 0 || k.nrows() % batch != 0 {
        return Err(KernelError::shape(
            "attention",
            format!(
                "batch {batch} must be positive and divide the query rows ({}) and key rows ({})",
                q.nrows(),
                k.nrows()
            ),
        ));
    }
    if k.dim() != v.dim() {
        return Err(KernelError::shape(
            "attention",
            format!("k is {:?} but v is {:?}", k.dim(), v.dim()),
        ));
    }
    let (sq, skv) = (q.nrows() / batch, k.nrows() / batch);
    let mut out = Array2::zeros((q.nrows(), shape.q_width()));
    for b in 0..batch {
        let o = attend(
            q.slice(s![b * sq..(b + 1) * sq, ..]),
            k.slice(s![b * skv..(b + 1) * skv, ..]),
            v.slice(s![b * skv..(b + 1) * skv, ..]),
            shape,
        )?;
        out.slice_mut(s![b * sq..(b + 1) * sq, ..]).assign(&o);
    }
    Ok(out)
}

/// Attention of one sequence: `q: [sq, heads·hd]`, `k, v: [skv, kv_heads·hd]`.
fn attend(
    q: ArrayView2<f32>,
    k: ArrayView2<f32>,
    v: ArrayView2<f32>,
    shape: AttentionShape,
) -> Result<Array2<f32>> {
    let group = shape.validate()?;
    let hd = shape.head_dim;
    if q.ncols() != shape.q_width()
        || k.ncols() != shape.kv_width()
        || v.ncols() != shape.kv_width()
    {
        return Err(KernelError::shape(
            "attention",
            format!(
                "expected q width {} and k/v width {} for {} heads, {} kv heads of {hd}; found {}, {}, {}",
                shape.q_width(),
                shape.kv_width(),
                shape.heads,
                shape.kv_heads,
                q.ncols(),
                k.ncols(),
                v.ncols()
            ),
        ));
    }
    let (sq, skv) = (q.nrows(), k.nrows());
    if shape.causal && sq > skv {
        return Err(KernelError::shape(
            "attention",
            format!("causal attention needs at least as many keys ({skv}) as queries ({sq})"),
        ));
    }
    let scale = 1.0 / (hd as f32).sqrt();
    // Heads are independent: compute them in parallel, then copy in head order.
    let per_head: Vec<Array2<f32>> = (0..shape.heads)
        .into_par_iter()
        .map(|h| {
            let g = h / group;
            let qh = q.slice(s![.., h * hd..(h + 1) * hd]);
            let kh = k.slice(s![.., g * hd..(g + 1) * hd]);
            let vh = v.slice(s![.., g * hd..(g + 1) * hd]);
            let mut scores = Array2::zeros((sq, skv));
            general_mat_mul(scale, &qh, &kh.t(), 0.0, &mut scores);
            if shape.causal {
                let offset = skv - sq;
                for (i, mut row) in scores.axis_iter_mut(Axis(0)).enumerate() {
                    row.slice_mut(s![offset + i + 1..]).fill(f32::NEG_INFINITY);
                }
            }
            softmax_rows(&mut scores);
            let mut o = Array2::zeros((sq, hd));
            general_mat_mul(1.0, &scores, &vh, 0.0, &mut o);
            o
        })
        .collect();
    let mut out = Array2::zeros((sq, shape.q_width()));
    for (h, o) in per_head.iter().enumerate() {
        out.slice_mut(s![.., h * hd..(h + 1) * hd]).assign(o);
    }
    Ok(out)
}

/// Keys and values of past positions of every sequence in a batch: what a decoder reuses at each
/// generation step instead of recomputing the prefix.
#[derive(Debug, Clone)]
pub struct KvCache {
    shape: AttentionShape,
    /// Per sequence, `[positions, kv_heads·head_dim]`.
    k: Vec<Array2<f32>>,
    v: Vec<Array2<f32>>,
}

impl KvCache {
    pub fn new(batch: usize, shape: AttentionShape) -> Result<KvCache> {
        shape.validate()?;
        let empty = Array2::zeros((0, shape.kv_width()));
        Ok(KvCache {
            shape,
            k: vec![empty.clone(); batch],
            v: vec![empty; batch],
        })
    }

    pub fn batch(&self) -> usize {
        self.k.len()
    }

    /// Positions cached per sequence.
    pub fn len(&self) -> usize {
        self.k.first().map_or(0, |k| k.nrows())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends `s_new` positions per sequence: `k_new, v_new: [batch·s_new, kv_heads·head_dim]`.
    pub fn append(&mut self, k_new: ArrayView2<f32>, v_new: ArrayView2<f32>) -> Result<()> {
        let batch = self.batch();
        if k_new.dim() != v_new.dim()
            || k_new.ncols() != self.shape.kv_width()
            || batch == 0
            || k_new.nrows() % batch != 0
        {
            return Err(KernelError::shape(
                "kv_cache",
                format!(
                    "expected [batch·s, {}] keys and values for a batch of {batch}; found {:?} and {:?}",
                    self.shape.kv_width(),
                    k_new.dim(),
                    v_new.dim()
                ),
            ));
        }
        let s_new = k_new.nrows() / batch;
        for b in 0..batch {
            let rows = s![b * s_new..(b + 1) * s_new, ..];
            self.k[b]
                .append(Axis(0), k_new.slice(rows))
                .map_err(|e| KernelError::shape("kv_cache", e.to_string()))?;
            self.v[b]
                .append(Axis(0), v_new.slice(rows))
                .map_err(|e| KernelError::shape("kv_cache", e.to_string()))?;
        }
        Ok(())
    }

    /// Keeps the first `len` positions of every sequence (no effect if it holds fewer), keeping
    /// the storage, so appending again does not reallocate: how a profiler rewinds between runs
    /// (as the GPU cache's `truncate`).
    pub fn truncate(&mut self, len: usize) {
        for a in self.k.iter_mut().chain(self.v.iter_mut()) {
            truncate_rows(a, len);
        }
    }
}

fn truncate_rows(a: &mut Array2<f32>, rows: usize) {
    if rows >= a.nrows() {
        return;
    }
    let cols = a.ncols();
    if a.is_standard_layout() {
        // The kept rows are the first `rows · cols` elements from the array's offset.
        let (mut v, offset) = std::mem::take(a).into_raw_vec_and_offset();
        let offset = offset.unwrap_or(0);
        v.truncate(offset + rows * cols);
        v.drain(..offset);
        *a = Array2::from_shape_vec((rows, cols), v).expect("rows · cols elements kept");
    } else {
        *a = a.slice(s![..rows, ..]).to_owned();
    }
}

/// Decoder attention with a KV cache: appends this step's keys and values, then attends the
/// queries (`[batch·sq, heads·hd]`, the newest `sq` positions) over everything cached.
pub fn attention_with_cache(
    q: ArrayView2<f32>,
    k_new: ArrayView2<f32>,
    v_new: ArrayView2<f32>,
    cache: &mut KvCache,
) -> Result<Array2<f32>> {
    cache.append(k_new, v_new)?;
    let batch = cache.batch();
    if q.nrows() % batch != 0 {
        return Err(KernelError::shape(
            "attention",
            format!(
                "query rows ({}) are not a multiple of the batch ({batch})",
                q.nrows()
            ),
        ));
    }
    let sq = q.nrows() / batch;
    let mut out = Array2::zeros((q.nrows(), cache.shape.q_width()));
    for b in 0..batch {
        let o = attend(
            q.slice(s![b * sq..(b + 1) * sq, ..]),
            cache.k[b].view(),
            cache.v[b].view(),
            cache.shape,
        )?;
        out.slice_mut(s![b * sq..(b + 1) * sq, ..]).assign(&o);
    }
    Ok(out)
}

/// One expert of a mixture-of-experts layer: a GeLU FFN `[h] → [f] → [h]`.
#[derive(Debug, Clone)]
pub struct Expert {
    pub w1: Array2<f32>,
    pub b1: Array1<f32>,
    pub w2: Array2<f32>,
    pub b2: Array1<f32>,
}

/// A mixture-of-experts FFN with a linear router and top-k routing.
#[derive(Debug, Clone)]
pub struct MoeLayer {
    /// `[h, experts]`.
    pub router: Array2<f32>,
    pub experts: Vec<Expert>,
    pub top_k: usize,
}

/// The experts chosen for one token and their renormalised gate weights.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub experts: Vec<usize>,
    pub weights: Vec<f32>,
}

/// Top-k routing: softmax of the router logits, the `k` largest probabilities (lower expert index
/// first on ties, so routing is deterministic), weights renormalised to sum to 1.
pub fn route(logits: ArrayView2<f32>, top_k: usize) -> Result<Vec<Route>> {
    let e = logits.ncols();
    if top_k == 0 || top_k > e {
        return Err(KernelError::shape(
            "moe",
            format!("top_k ({top_k}) must be between 1 and the number of experts ({e})"),
        ));
    }
    let mut probs = logits.to_owned();
    softmax_rows(&mut probs);
    Ok(probs
        .axis_iter(Axis(0))
        .map(|p| {
            let mut order: Vec<usize> = (0..e).collect();
            order.sort_by(|&a, &b| p[b].total_cmp(&p[a]).then(a.cmp(&b)));
            order.truncate(top_k);
            let total: f32 = order.iter().map(|&i| p[i]).sum();
            let weights = order.iter().map(|&i| p[i] / total).collect();
            Route {
                experts: order,
                weights,
            }
        })
        .collect())
}

/// Dense GeLU FFN: `gelu(x·w1 + b1)·w2 + b2`.
pub fn ffn(
    x: ArrayView2<f32>,
    w1: ArrayView2<f32>,
    b1: ArrayView1<f32>,
    w2: ArrayView2<f32>,
    b2: ArrayView1<f32>,
) -> Result<Array2<f32>> {
    let mut hidden = gemm(x, w1)?;
    bias_gelu(&mut hidden, b1)?;
    linear(hidden.view(), w2, Some(b2))
}

/// Mixture-of-experts FFN over tokens `x: [t, h]`: each token runs through its top-k experts and
/// the outputs are summed with the gate weights.
pub fn moe_ffn(x: ArrayView2<f32>, layer: &MoeLayer) -> Result<Array2<f32>> {
    let h = x.ncols();
    if layer.router.nrows() != h || layer.router.ncols() != layer.experts.len() {
        return Err(KernelError::shape(
            "moe",
            format!(
                "router is {:?}; expected [{h}, {}] (hidden, experts)",
                layer.router.dim(),
                layer.experts.len()
            ),
        ));
    }
    let logits = gemm(x, layer.router.view())?;
    let routes = route(logits.view(), layer.top_k)?;
    // Tokens of each expert with their gate weights, in token order.
    let mut assigned: Vec<Vec<(usize, f32)>> = vec![Vec::new(); layer.experts.len()];
    for (t, r) in routes.iter().enumerate() {
        for (&e, &w) in r.experts.iter().zip(&r.weights) {
            assigned[e].push((t, w));
        }
    }
    let outputs: Vec<Option<Array2<f32>>> = layer
        .experts
        .par_iter()
        .zip(assigned.par_iter())
        .map(|(ex, toks)| {
            if toks.is_empty() {
                return Ok(None);
            }
            let rows: Vec<usize> = toks.iter().map(|&(t, _)| t).collect();
            let xe = x.select(Axis(0), &rows);
            ffn(
                xe.view(),
                ex.w1.view(),
                ex.b1.view(),
                ex.w2.view(),
                ex.b2.view(),
            )
            .map(Some)
        })
        .collect::<Result<_>>()?;
    // Scatter in expert order: a fixed summation order keeps the result deterministic.
    let mut out = Array2::zeros((x.nrows(), h));
    for (toks, o) in assigned.iter().zip(&outputs) {
        let Some(o) = o else { continue };
        for (&(t, w), row) in toks.iter().zip(o.axis_iter(Axis(0))) {
            out.row_mut(t).scaled_add(w, &row);
        }
    }
    Ok(out)
}

fn check_len(op: &'static str, what: &str, found: usize, expected: usize) -> Result<()> {
    if found == expected {
        Ok(())
    } else {
        Err(KernelError::shape(
            op,
            format!("{what} has {found} entries; expected {expected} (the row width)"),
        ))
    }
}
