//! The CPU operators agree with the plain-loop references on random shapes and values.

use ndarray::{Array1, Array2};
use plexserve_kernels::{self as k, reference, AttentionShape};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn random(rows: usize, cols: usize, seed: u64) -> Array2<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    Array2::from_shape_fn((rows, cols), |_| rng.random_range(-1.0f32..1.0))
}

fn flat(a: &Array2<f32>) -> Vec<f32> {
    a.iter().copied().collect()
}

fn assert_close(got: &[f32], want: &[f32], tol: f32) -> Result<(), TestCaseError> {
    prop_assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        prop_assert!(
            (g - w).abs() <= tol * (1.0 + w.abs()),
            "entry {}: got {}, want {}",
            i,
            g,
            w
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn gemm_matches(m in 1usize..40, kk in 1usize..70, n in 1usize..40, seed in any::<u64>()) {
        let a = random(m, kk, seed);
        let b = random(kk, n, seed ^ 1);
        let c = k::gemm(a.view(), b.view()).unwrap();
        assert_close(&flat(&c), &reference::gemm(&flat(&a), &flat(&b), m, kk, n), 1e-4)?;
    }

    #[test]
    fn bias_gelu_matches(rows in 1usize..20, cols in 1usize..50, seed in any::<u64>()) {
        let mut x = random(rows, cols, seed) * 4.0;
        let bias = random(1, cols, seed ^ 2).row(0).to_owned();
        let want = reference::bias_gelu(&flat(&x), bias.as_slice().unwrap(), cols);
        k::bias_gelu(&mut x, bias.view()).unwrap();
        assert_close(&flat(&x), &want, 1e-5)?;
    }

    #[test]
    fn layer_norm_matches(rows in 1usize..20, cols in 2usize..80, seed in any::<u64>()) {
        let mut x = random(rows, cols, seed) * 3.0 + 1.0;
        let g = random(1, cols, seed ^ 3).row(0).to_owned();
        let b = random(1, cols, seed ^ 4).row(0).to_owned();
        let want = reference::layer_norm(&flat(&x), g.as_slice().unwrap(), b.as_slice().unwrap(), cols, 1e-5);
        k::layer_norm(&mut x, g.view(), b.view(), 1e-5).unwrap();
        assert_close(&flat(&x), &want, 1e-4)?;
    }

    #[test]
    fn softmax_matches(rows in 1usize..20, cols in 1usize..80, seed in any::<u64>()) {
        let mut x = random(rows, cols, seed) * 20.0;
        let want = reference::softmax(&flat(&x), cols);
        k::softmax_rows(&mut x);
        assert_close(&flat(&x), &want, 1e-5)?;
    }

    #[test]
    fn attention_matches(
        batch in 1usize..3, sq in 1usize..9, extra in 0usize..6, kv_heads in 1usize..4,
        group in 1usize..4, head_dim in 1usize..17, causal in any::<bool>(), seed in any::<u64>(),
    ) {
        let shape = AttentionShape { heads: kv_heads * group, kv_heads, head_dim, causal };
        let skv = sq + extra;
        let q = random(batch * sq, shape.q_width(), seed);
        let kk = random(batch * skv, shape.kv_width(), seed ^ 5);
        let v = random(batch * skv, shape.kv_width(), seed ^ 6);
        let got = k::attention(q.view(), kk.view(), v.view(), batch, shape).unwrap();
        let want = reference::attention(&flat(&q), &flat(&kk), &flat(&v), batch, sq, skv, shape.heads, kv_heads, head_dim, causal);
        assert_close(&flat(&got), &want, 1e-4)?;
    }

    /// Decoding token by token through a KV cache gives what one causal pass over the whole
    /// sequence gives.
    #[test]
    fn kv_cache_decoding_matches_full_pass(
        batch in 1usize..3, prompt in 1usize..6, steps in 1usize..5, kv_heads in 1usize..3, group in 1usize..3,
        seed in any::<u64>(),
    ) {
        let shape = AttentionShape { heads: kv_heads * group, kv_heads, head_dim: 4, causal: true };
        let total = prompt + steps;
        // Per sequence, `total` positions; rows of sequence b are b·total .. (b+1)·total.
        let q = random(batch * total, shape.q_width(), seed);
        let kk = random(batch * total, shape.kv_width(), seed ^ 7);
        let v = random(batch * total, shape.kv_width(), seed ^ 8);
        let full = k::attention(q.view(), kk.view(), v.view(), batch, shape).unwrap();
        let rows = |m: &Array2<f32>, from: usize, to: usize| {
            let idx: Vec<usize> = (0..batch).flat_map(|b| (b * total + from)..(b * total + to)).collect();
            m.select(ndarray::Axis(0), &idx)
        };
        let mut cache = k::KvCache::new(batch, shape).unwrap();
        let first = k::attention_with_cache(rows(&q, 0, prompt).view(), rows(&kk, 0, prompt).view(), rows(&v, 0, prompt).view(), &mut cache).unwrap();
        assert_close(&flat(&first), &flat(&rows(&full, 0, prompt)), 1e-5)?;
        // The second pass rewinds to the prompt first: truncating keeps the prompt's keys and
        // values, so the same steps come out again.
        for _ in 0..2 {
            for t in prompt..total {
                let step = k::attention_with_cache(rows(&q, t, t + 1).view(), rows(&kk, t, t + 1).view(), rows(&v, t, t + 1).view(), &mut cache).unwrap();
                assert_close(&flat(&step), &flat(&rows(&full, t, t + 1)), 1e-5)?;
            }
            prop_assert_eq!(cache.len(), total);
            cache.truncate(prompt);
            prop_assert_eq!(cache.len(), prompt);
        }
    }

    /// MoE output equals the gate-weighted sum of each token's chosen experts, computed densely.
    #[test]
    fn moe_matches_dense_definition(tokens in 1usize..12, h in 1usize..12, f in 1usize..16, experts in 1usize..6, top in 1usize..6, seed in any::<u64>()) {
        let top_k = top.min(experts);
        let layer = k::MoeLayer {
            router: random(h, experts, seed),
            experts: (0..experts as u64).map(|e| k::Expert {
                w1: random(h, f, seed ^ (10 + e)),
                b1: Array1::from_vec(flat(&random(1, f, seed ^ (20 + e)))),
                w2: random(f, h, seed ^ (30 + e)),
                b2: Array1::from_vec(flat(&random(1, h, seed ^ (40 + e)))),
            }).collect(),
            top_k,
        };
        let x = random(tokens, h, seed ^ 99);
        let got = k::moe_ffn(x.view(), &layer).unwrap();
        let logits = reference::gemm(&flat(&x), &flat(&layer.router), tokens, h, experts);
        let probs = reference::softmax(&logits, experts);
        let mut want = vec![0.0f32; tokens * h];
        for t in 0..tokens {
            let p = &probs[t * experts..(t + 1) * experts];
            let mut order: Vec<usize> = (0..experts).collect();
            order.sort_by(|&a, &b| p[b].total_cmp(&p[a]).then(a.cmp(&b)));
            let chosen = &order[..top_k];
            let total: f32 = chosen.iter().map(|&e| p[e]).sum();
            let xt = &flat(&x)[t * h..(t + 1) * h];
            for &e in chosen {
                let ex = &layer.experts[e];
                let hid = reference::bias_gelu(&reference::gemm(xt, &flat(&ex.w1), 1, h, f), ex.b1.as_slice().unwrap(), f);
                let y = reference::gemm(&hid, &flat(&ex.w2), 1, f, h);
                for j in 0..h {
                    want[t * h + j] += p[e] / total * (y[j] + ex.b2[j]);
                }
            }
        }
        assert_close(&flat(&got), &want, 1e-4)?;
    }
}

#[test]
fn shape_errors_are_values() {
    let a = Array2::<f32>::zeros((2, 3));
    assert!(matches!(
        k::gemm(a.view(), a.view()),
        Err(k::KernelError::Shape { .. })
    ));
    let bad = AttentionShape {
        heads: 3,
        kv_heads: 2,
        head_dim: 4,
        causal: false,
    };
    assert!(bad.validate().is_err());
    let zero = AttentionShape {
        heads: 0,
        kv_heads: 1,
        head_dim: 4,
        causal: false,
    };
    assert!(zero.validate().is_err());
    let shape = AttentionShape {
        heads: 2,
        kv_heads: 1,
        head_dim: 2,
        causal: true,
    };
    let q = Array2::<f32>::zeros((4, 4));
    let kv = Array2::<f32>::zeros((2, 2));
    assert!(
        k::attention(q.view(), kv.view(), kv.view(), 1, shape).is_err(),
        "more causal queries than keys"
    );
    assert!(k::route(Array2::<f32>::zeros((1, 3)).view(), 4).is_err());
}

#[test]
fn masked_rows_do_not_produce_nan() {
    let mut x = Array2::from_elem((1, 3), f32::NEG_INFINITY);
    k::softmax_rows(&mut x);
    assert!(x.iter().all(|v| *v == 0.0));
}
