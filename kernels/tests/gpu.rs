//! The CUDA operators agree with the CPU ones. Without a GPU (or without the `cuda` feature)
//! every test here skips; with `PLEXSERVE_REQUIRE_GPU=1` a missing GPU fails instead.

use ndarray::Array2;
use plexserve_kernels::{self as k, cuda::CudaDevice, AttentionShape, Dtype};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn gpu() -> Option<CudaDevice> {
    match CudaDevice::open(0) {
        Ok(d) => Some(d),
        Err(e) => {
            if std::env::var("PLEXSERVE_REQUIRE_GPU").is_ok_and(|v| v == "1") {
                panic!("PLEXSERVE_REQUIRE_GPU=1 but no GPU: {e}");
            }
            eprintln!("skipped: {e}");
            None
        }
    }
}

fn random(rows: usize, cols: usize, seed: u64) -> Array2<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    Array2::from_shape_fn((rows, cols), |_| rng.random_range(-1.0f32..1.0))
}

fn max_rel_err(got: &Array2<f32>, want: &Array2<f32>) -> f32 {
    assert_eq!(got.dim(), want.dim());
    got.iter()
        .zip(want)
        .map(|(g, w)| (g - w).abs() / (1.0 + w.abs()))
        .fold(0.0, f32::max)
}

#[test]
fn gemm_all_dtypes() {
    let Some(d) = gpu() else { return };
    let (a, b) = (random(67, 129, 1), random(129, 45, 2));
    let want = k::gemm(a.view(), b.view()).unwrap();
    for (dtype, tol) in [(Dtype::F32, 1e-3), (Dtype::F16, 2e-2), (Dtype::Bf16, 8e-2)] {
        let (ga, gb) = (
            d.upload(a.view(), dtype).unwrap(),
            d.upload(b.view(), dtype).unwrap(),
        );
        let mut gc = d.zeros(67, 45, dtype).unwrap();
        d.gemm(&ga, &gb, &mut gc).unwrap();
        let err = max_rel_err(&d.download(&gc).unwrap(), &want);
        assert!(err < tol, "{dtype:?}: error {err}");
    }
}

#[test]
fn row_operators() {
    let Some(d) = gpu() else { return };
    let x = random(33, 300, 3) * 3.0;
    let p = random(1, 300, 4);
    let q = random(1, 300, 5);

    let mut want = x.clone();
    k::bias_gelu(&mut want, p.row(0)).unwrap();
    let mut g = d.upload(x.view(), Dtype::F32).unwrap();
    d.bias_gelu(&mut g, &d.upload(p.view(), Dtype::F32).unwrap())
        .unwrap();
    assert!(max_rel_err(&d.download(&g).unwrap(), &want) < 1e-4);

    let mut want = x.clone();
    k::layer_norm(&mut want, p.row(0), q.row(0), 1e-5).unwrap();
    let mut g = d.upload(x.view(), Dtype::F32).unwrap();
    let (gp, gq) = (
        d.upload(p.view(), Dtype::F32).unwrap(),
        d.upload(q.view(), Dtype::F32).unwrap(),
    );
    d.layer_norm(&mut g, &gp, &gq, 1e-5).unwrap();
    assert!(max_rel_err(&d.download(&g).unwrap(), &want) < 1e-4);

    let mut want = x.clone();
    k::softmax_rows(&mut want);
    let mut g = d.upload(x.view(), Dtype::F32).unwrap();
    d.softmax_rows(&mut g).unwrap();
    assert!(max_rel_err(&d.download(&g).unwrap(), &want) < 1e-5);
}

#[test]
fn attention_grouped_causal() {
    let Some(d) = gpu() else { return };
    for (causal, head_dim, sq, skv) in [(true, 64, 17, 17), (false, 80, 5, 9), (true, 128, 1, 40)] {
        let shape = AttentionShape {
            heads: 8,
            kv_heads: 2,
            head_dim,
            causal,
        };
        let batch = 2;
        let q = random(batch * sq, shape.q_width(), 6);
        let kk = random(batch * skv, shape.kv_width(), 7);
        let v = random(batch * skv, shape.kv_width(), 8);
        let want = k::attention(q.view(), kk.view(), v.view(), batch, shape).unwrap();
        let up = |m: &Array2<f32>| d.upload(m.view(), Dtype::F32).unwrap();
        let mut out = d.zeros(batch * sq, shape.q_width(), Dtype::F32).unwrap();
        d.attention(&up(&q), &up(&kk), &up(&v), &mut out, batch, shape)
            .unwrap();
        let err = max_rel_err(&d.download(&out).unwrap(), &want);
        assert!(err < 1e-4, "causal {causal} hd {head_dim}: error {err}");
    }
}

#[test]
fn event_timing_is_positive() {
    let Some(d) = gpu() else { return };
    let a = d.upload(random(512, 512, 9).view(), Dtype::F16).unwrap();
    let mut c = d.zeros(512, 512, Dtype::F16).unwrap();
    let t = d.time_s(|d| d.gemm(&a, &a, &mut c)).unwrap();
    assert!(t > 0.0 && t < 1.0, "{t}");
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
