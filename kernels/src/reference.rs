//! Plain-loop reference implementations, written for obviousness rather than speed: the oracle
//! that the CPU and CUDA operators are tested against. Inputs are row-major slices.

/// `[m, k] · [k, n]`.
pub fn gemm(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
    let mut c = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut acc = 0.0f64;
            for p in 0..k {
                acc += f64::from(a[i * k + p]) * f64::from(b[p * n + j]);
            }
            c[i * n + j] = acc as f32;
        }
    }
    c
}

/// GeLU (tanh form) in f64.
pub fn gelu(v: f32) -> f32 {
    let v = f64::from(v);
    (0.5 * v * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (v + 0.044715 * v * v * v)).tanh()))
        as f32
}

/// `gelu(x + bias)` for `x: [rows, cols]`.
pub fn bias_gelu(x: &[f32], bias: &[f32], cols: usize) -> Vec<f32> {
    x.iter()
        .enumerate()
        .map(|(i, &v)| gelu(v + bias[i % cols]))
        .collect()
}

/// LayerNorm of each row.
pub fn layer_norm(x: &[f32], gamma: &[f32], beta: &[f32], cols: usize, eps: f32) -> Vec<f32> {
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks(cols) {
        let mean = row.iter().map(|&v| f64::from(v)).sum::<f64>() / cols as f64;
        let var = row
            .iter()
            .map(|&v| (f64::from(v) - mean).powi(2))
            .sum::<f64>()
            / cols as f64;
        for (j, &v) in row.iter().enumerate() {
            let y = (f64::from(v) - mean) / (var + f64::from(eps)).sqrt();
            out.push((y * f64::from(gamma[j]) + f64::from(beta[j])) as f32);
        }
    }
    out
}

/// Softmax of each row.
pub fn softmax(x: &[f32], cols: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks(cols) {
        let max = row
            .iter()
            .map(|&v| f64::from(v))
            .fold(f64::NEG_INFINITY, f64::max);
        let exps: Vec<f64> = row.iter().map(|&v| (f64::from(v) - max).exp()).collect();
        let sum: f64 = exps.iter().sum();
        out.extend(exps.iter().map(|e| (e / sum) as f32));
    }
    out
}

/// Attention of one batch of sequences, by the definition: for every sequence, head and query,
/// a softmax over the visible keys of the scaled dot products, then the weighted sum of values.
#[allow(clippy::too_many_arguments)]
pub fn attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    batch: usize,
    sq: usize,
    skv: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    causal: bool,
) -> Vec<f32> {
    let (qw, kw) = (heads * head_dim, kv_heads * head_dim);
    let group = heads / kv_heads;
    let scale = 1.0 / (head_dim as f64).sqrt();
    let mut out = vec![0.0f32; batch * sq * qw];
    for b in 0..batch {
        for h in 0..heads {
            let g = h / group;
            for i in 0..sq {
                let visible = if causal { skv - sq + i + 1 } else { skv };
                let qrow = &q[(b * sq + i) * qw + h * head_dim..][..head_dim];
                let scores: Vec<f64> = (0..visible)
                    .map(|j| {
                        let krow = &k[(b * skv + j) * kw + g * head_dim..][..head_dim];
                        qrow.iter()
                            .zip(krow)
                            .map(|(&a, &c)| f64::from(a) * f64::from(c))
                            .sum::<f64>()
                            * scale
                    })
                    .collect();
                let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let w: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let total: f64 = w.iter().sum();
                for d in 0..head_dim {
                    let acc: f64 = (0..visible)
                        .map(|j| w[j] / total * f64::from(v[(b * skv + j) * kw + g * head_dim + d]))
                        .sum();
                    out[(b * sq + i) * qw + h * head_dim + d] = acc as f32;
                }
            }
        }
    }
    out
}
