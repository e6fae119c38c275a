//! The CUDA operators agree with the CPU ones, in every element type.
//!
//! Without a GPU (or without the `cuda` feature) the GPU tests print why and skip; with
//! `PLEXSERVE_REQUIRE_GPU=1` a missing GPU fails them instead. The NVRTC test needs only the
//! NVRTC library, so it also runs on a machine without a GPU where NVRTC is installed.
//!
//! Comparisons feed the CPU the inputs as the GPU holds them (rounded to the element type), so
//! the tolerance measures the kernels' own error: f32 accumulation plus one rounding of the
//! output (a few more for MoE, whose intermediate activations are stored in the element type).

use ndarray::{Array1, Array2};
use plexserve_kernels::{
    self as k,
    cuda::{CudaDevice, GpuMatrix},
    AttentionShape, Dtype, Expert, KernelError, KvCache, MoeLayer,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const DTYPES: [Dtype; 3] = [Dtype::F32, Dtype::F16, Dtype::Bf16];

fn gpu_required() -> bool {
    std::env::var("PLEXSERVE_REQUIRE_GPU").is_ok_and(|v| v == "1")
}

fn gpu() -> Option<CudaDevice> {
    match CudaDevice::open(0) {
        Ok(d) => Some(d),
        Err(e) => {
            if gpu_required() {
                panic!("PLEXSERVE_REQUIRE_GPU=1 but no GPU: {e}");
            }
            eprintln!("skipped (no GPU; set PLEXSERVE_REQUIRE_GPU=1 to make this a failure): {e}");
            None
        }
    }
}

/// Largest error relative to `1 + |want|`: relative for large values, absolute near zero.
fn max_rel_err(got: &Array2<f32>, want: &Array2<f32>) -> f32 {
    assert_eq!(got.dim(), want.dim());
    got.iter()
        .zip(want)
        .map(|(g, w)| {
            if g.is_nan() || w.is_nan() {
                f32::INFINITY
            } else {
                (g - w).abs() / (1.0 + w.abs())
            }
        })
        .fold(0.0, f32::max)
}

/// Tolerance for an operator that computes in f32 and rounds its output once.
fn tol(dtype: Dtype) -> f32 {
    match dtype {
        Dtype::F32 => 1e-4,
        Dtype::F16 => 2e-3,
        Dtype::Bf16 => 1.6e-2,
    }
}

struct Fixture {
    d: CudaDevice,
    rng: ChaCha8Rng,
}

impl Fixture {
    fn new(d: CudaDevice, seed: u64) -> Fixture {
        Fixture {
            d,
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    fn random(&mut self, rows: usize, cols: usize, scale: f32) -> Array2<f32> {
        Array2::from_shape_fn((rows, cols), |_| {
            self.rng.random_range(-1.0f32..1.0) * scale
        })
    }

    fn up(&self, m: &Array2<f32>, dtype: Dtype) -> GpuMatrix {
        self.d.upload(m.view(), dtype).unwrap()
    }

    fn down(&self, m: &GpuMatrix) -> Array2<f32> {
        self.d.download(m).unwrap()
    }

    /// `m` as the GPU stores it in `dtype`.
    fn rounded(&self, m: &Array2<f32>, dtype: Dtype) -> Array2<f32> {
        self.down(&self.up(m, dtype))
    }
}

#[test]
fn nvrtc_compiles_every_kernel_for_current_architectures() {
    let required = gpu_required();
    for cc in [(7, 5), (8, 0), (9, 0)] {
        match k::cuda::compile_kernels(cc) {
            Ok(cubin) => {
                // An ELF image whose symbol table names every instantiation.
                assert_eq!(&cubin[..4], b"\x7fELF", "sm_{}{}", cc.0, cc.1);
                for family in k::cuda::KERNEL_FAMILIES {
                    for suffix in ["f32", "f16", "bf16"] {
                        let name = format!("{family}_{suffix}\0");
                        assert!(
                            cubin.windows(name.len()).any(|w| w == name.as_bytes()),
                            "sm_{}{}: kernel {family}_{suffix} missing",
                            cc.0,
                            cc.1
                        );
                    }
                }
            }
            Err(e) if e.is_unavailable() && !required => {
                eprintln!("skipped (no NVRTC): {e}");
                return;
            }
            Err(e) => panic!("sm_{}{}: {e}", cc.0, cc.1),
        }
    }
}

#[test]
fn gemm_all_dtypes() {
    let Some(d) = gpu() else { return };
    let mut f = Fixture::new(d, 1);
    let (a, b) = (f.random(67, 129, 1.0), f.random(129, 45, 1.0));
    for dtype in DTYPES {
        let want = k::gemm(f.rounded(&a, dtype).view(), f.rounded(&b, dtype).view()).unwrap();
        let mut c = f.d.zeros(67, 45, dtype).unwrap();
        f.d.gemm(&f.up(&a, dtype), &f.up(&b, dtype), &mut c)
            .unwrap();
        let err = max_rel_err(&f.down(&c), &want);
        assert!(err < tol(dtype), "{dtype:?}: error {err}");
    }
}

#[test]
fn elementwise_and_row_operators_all_dtypes() {
    let Some(d) = gpu() else { return };
    let mut f = Fixture::new(d, 3);
    // 300 columns: more than one block's worth of threads per row, not a multiple of 256.
    let x = f.random(33, 300, 3.0);
    let p = f.random(1, 300, 1.0);
    let q = f.random(1, 300, 1.0);
    for dtype in DTYPES {
        let (xr, pr, qr) = (
            f.rounded(&x, dtype),
            f.rounded(&p, dtype),
            f.rounded(&q, dtype),
        );
        let check = |name: &str, got: &GpuMatrix, want: &Array2<f32>| {
            let err = max_rel_err(&f.down(got), want);
            assert!(err < tol(dtype), "{name} {dtype:?}: error {err}");
        };

        let mut want = xr.clone();
        k::bias_gelu(&mut want, pr.row(0)).unwrap();
        let mut g = f.up(&x, dtype);
        f.d.bias_gelu(&mut g, &f.up(&p, dtype)).unwrap();
        check("bias_gelu", &g, &want);

        let mut want = xr.clone();
        let up = f.rounded(&(&x * 0.5), dtype);
        k::silu_mul(&mut want, up.view()).unwrap();
        let mut g = f.up(&x, dtype);
        f.d.silu_mul(&mut g, &f.up(&up, dtype)).unwrap();
        check("silu_mul", &g, &want);

        let mut want = xr.clone();
        k::layer_norm(&mut want, pr.row(0), qr.row(0), 1e-5).unwrap();
        let mut g = f.up(&x, dtype);
        f.d.layer_norm(&mut g, &f.up(&p, dtype), &f.up(&q, dtype), 1e-5)
            .unwrap();
        check("layer_norm", &g, &want);

        let mut want = xr.clone();
        k::rms_norm(&mut want, pr.row(0), 1e-5).unwrap();
        let mut g = f.up(&x, dtype);
        f.d.rms_norm(&mut g, &f.up(&p, dtype), 1e-5).unwrap();
        check("rms_norm", &g, &want);

        // Softmax with a partly masked row and a fully masked one.
        let mut masked = xr.clone();
        masked
            .row_mut(1)
            .iter_mut()
            .skip(7)
            .for_each(|v| *v = f32::NEG_INFINITY);
        masked.row_mut(2).fill(f32::NEG_INFINITY);
        let mut want = masked.clone();
        k::softmax_rows(&mut want);
        let mut g = f.up(&masked, dtype);
        f.d.softmax_rows(&mut g).unwrap();
        check("softmax", &g, &want);
        let got = f.down(&g);
        assert!(got.row(2).iter().all(|&v| v == 0.0));
    }
}

fn shape(head_dim: usize, causal: bool) -> AttentionShape {
    AttentionShape {
        heads: 8,
        kv_heads: 2,
        head_dim,
        causal,
    }
}

#[test]
fn attention_grouped_causal_all_dtypes() {
    let Some(d) = gpu() else { return };
    let mut f = Fixture::new(d, 6);
    // Head dims below, at and above one warp's width; keys longer than queries.
    for (causal, head_dim, sq, skv) in [
        (true, 64, 17, 17),
        (false, 80, 5, 9),
        (true, 128, 1, 40),
        (true, 256, 3, 70),
    ] {
        let s = shape(head_dim, causal);
        let batch = 2;
        let q = f.random(batch * sq, s.q_width(), 1.0);
        let kk = f.random(batch * skv, s.kv_width(), 1.0);
        let v = f.random(batch * skv, s.kv_width(), 1.0);
        for dtype in DTYPES {
            let want = k::attention(
                f.rounded(&q, dtype).view(),
                f.rounded(&kk, dtype).view(),
                f.rounded(&v, dtype).view(),
                batch,
                s,
            )
            .unwrap();
            let mut out = f.d.zeros(batch * sq, s.q_width(), dtype).unwrap();
            f.d.attention(
                &f.up(&q, dtype),
                &f.up(&kk, dtype),
                &f.up(&v, dtype),
                &mut out,
                batch,
                s,
            )
            .unwrap();
            let err = max_rel_err(&f.down(&out), &want);
            assert!(
                err < tol(dtype),
                "{dtype:?} causal {causal} hd {head_dim} sq {sq} skv {skv}: error {err}"
            );
        }
    }
}

#[test]
fn attention_with_kv_cache_all_dtypes() {
    let Some(d) = gpu() else { return };
    let mut f = Fixture::new(d, 11);
    let s = shape(64, true);
    let batch = 3;
    // A prefill of 6 positions, then three single-token decode steps.
    let steps = [6, 1, 1, 1];
    let capacity: usize = steps.iter().sum();
    for dtype in DTYPES {
        let mut cpu = KvCache::new(batch, s).unwrap();
        let mut gpu = f.d.kv_cache(batch, capacity, s, dtype).unwrap();
        for (i, &sq) in steps.iter().enumerate() {
            let (q, kn, vn) = (
                f.random(batch * sq, s.q_width(), 1.0),
                f.random(batch * sq, s.kv_width(), 1.0),
                f.random(batch * sq, s.kv_width(), 1.0),
            );
            let (q, kn, vn) = (
                f.rounded(&q, dtype),
                f.rounded(&kn, dtype),
                f.rounded(&vn, dtype),
            );
            let want = k::attention_with_cache(q.view(), kn.view(), vn.view(), &mut cpu).unwrap();
            let mut out = f.d.zeros(batch * sq, s.q_width(), dtype).unwrap();
            f.d.attention_with_cache(
                &f.up(&q, dtype),
                &f.up(&kn, dtype),
                &f.up(&vn, dtype),
                &mut gpu,
                &mut out,
            )
            .unwrap();
            assert_eq!(gpu.len(), cpu.len());
            let err = max_rel_err(&f.down(&out), &want);
            assert!(err < tol(dtype), "{dtype:?} step {i}: error {err}");
        }
        // Full: one more position is a shape error, not a write past the buffer.
        let one = f.d.zeros(batch, s.kv_width(), dtype).unwrap();
        let e = f.d.kv_append(&mut gpu, &one, &one).unwrap_err();
        assert!(matches!(e, KernelError::Shape { .. }), "{e}");
        gpu.truncate(6);
        assert_eq!(gpu.len(), 6);
    }
}

/// A MoE layer whose router separates the experts clearly, so that rounding the logits to f16 or
/// bf16 cannot change which experts a token visits: feature `e` of token `t` is a distinct whole
/// number per expert and the router reads it through an identity block plus small noise.
fn moe_case(
    f: &mut Fixture,
    tokens: usize,
    hidden: usize,
    ffn: usize,
    experts: usize,
) -> (Array2<f32>, MoeLayer) {
    let mut x = f.random(tokens, hidden, 1.0);
    for t in 0..tokens {
        for e in 0..experts {
            x[[t, e]] = ((t * 3 + e * 5) % experts) as f32;
        }
    }
    let mut router = f.random(hidden, experts, 0.02);
    for e in 0..experts {
        router[[e, e]] += 1.0;
    }
    let experts_v = (0..experts)
        .map(|_| Expert {
            w1: f.random(hidden, ffn, 0.2),
            b1: f.random(1, ffn, 0.2).row(0).to_owned(),
            w2: f.random(ffn, hidden, 0.2),
            b2: f.random(1, hidden, 0.2).row(0).to_owned(),
        })
        .collect();
    (
        x,
        MoeLayer {
            router,
            experts: experts_v,
            top_k: 2,
        },
    )
}

#[test]
fn moe_ffn_all_dtypes() {
    let Some(d) = gpu() else { return };
    let mut f = Fixture::new(d, 21);
    let (tokens, hidden, ffn, experts) = (40, 64, 96, 8);
    let (x, layer) = moe_case(&mut f, tokens, hidden, ffn, experts);
    // The routing margin the construction promises (logit gap between the 2nd and 3rd expert).
    let logits = k::gemm(x.view(), layer.router.view()).unwrap();
    for row in logits.rows() {
        let mut v: Vec<f32> = row.to_vec();
        v.sort_by(|a, b| b.total_cmp(a));
        assert!(
            v[1] - v[2] > 0.5,
            "test data: routing margin {}",
            v[1] - v[2]
        );
    }
    for dtype in DTYPES {
        let round1 = |v: &Array1<f32>, f: &Fixture| {
            f.rounded(&v.view().insert_axis(ndarray::Axis(0)).to_owned(), dtype)
                .row(0)
                .to_owned()
        };
        let rounded = MoeLayer {
            router: f.rounded(&layer.router, dtype),
            experts: layer
                .experts
                .iter()
                .map(|e| Expert {
                    w1: f.rounded(&e.w1, dtype),
                    b1: round1(&e.b1, &f),
                    w2: f.rounded(&e.w2, dtype),
                    b2: round1(&e.b2, &f),
                })
                .collect(),
            top_k: layer.top_k,
        };
        let want = k::moe_ffn(f.rounded(&x, dtype).view(), &rounded).unwrap();
        let mut gl = f.d.upload_moe(&layer, dtype).unwrap();
        let mut out = f.d.zeros(tokens, hidden, dtype).unwrap();
        // Twice, and then with fewer tokens: the workspace is reused and must not leak state.
        for _ in 0..2 {
            f.d.moe_ffn(&f.up(&x, dtype), &mut gl, &mut out).unwrap();
            let err = max_rel_err(&f.down(&out), &want);
            // Hidden activations are stored in the element type between the GEMMs: a few roundings.
            let bound = 4.0 * tol(dtype);
            assert!(err < bound, "{dtype:?}: error {err} (bound {bound})");
        }
        let few = x.slice(ndarray::s![..5, ..]).to_owned();
        let want_few = k::moe_ffn(f.rounded(&few, dtype).view(), &rounded).unwrap();
        let mut out_few = f.d.zeros(5, hidden, dtype).unwrap();
        f.d.moe_ffn(&f.up(&few, dtype), &mut gl, &mut out_few)
            .unwrap();
        let err = max_rel_err(&f.down(&out_few), &want_few);
        assert!(err < 4.0 * tol(dtype), "{dtype:?} 5 tokens: error {err}");
    }
}

#[test]
fn mixed_element_types_are_rejected() {
    let Some(d) = gpu() else { return };
    let f = Fixture::new(d, 30);
    let x = Array2::from_elem((4, 8), 0.5f32);
    let mut g = f.up(&x, Dtype::F16);
    let bias = f.up(&Array2::from_elem((1, 8), 0.1f32), Dtype::F32);
    let e = f.d.bias_gelu(&mut g, &bias).unwrap_err();
    assert!(matches!(e, KernelError::DtypeMismatch { .. }), "{e}");
    let mut c = f.d.zeros(4, 4, Dtype::Bf16).unwrap();
    let e =
        f.d.gemm(&g, &f.up(&x.t().to_owned(), Dtype::F16), &mut c)
            .unwrap_err();
    assert!(matches!(e, KernelError::DtypeMismatch { .. }), "{e}");
}

#[test]
fn event_timing_is_positive() {
    let Some(d) = gpu() else { return };
    let mut f = Fixture::new(d, 9);
    for dtype in DTYPES {
        let host = f.random(512, 512, 1.0);
        let a = f.up(&host, dtype);
        let mut c = f.d.zeros(512, 512, dtype).unwrap();
        let t = f.d.time_s(|d| d.gemm(&a, &a, &mut c)).unwrap();
        assert!(t > 0.0 && t < 1.0, "{dtype:?}: {t}");
    }
}

#[test]
fn absent_device_is_a_typed_error() {
    // Whatever the build, an ordinal far beyond any machine is NoDevice or NotCompiled.
    let e = CudaDevice::open(1_000).unwrap_err();
    assert!(e.is_unavailable(), "{e}");
    assert_eq!(
        k::cuda::COMPILED,
        k::cuda::devices()
            .map(|_| true)
            .unwrap_or_else(|e| !matches!(e, k::KernelError::NotCompiled))
    );
}
