//! CPU GEMM through plexserve-kernels against raw matrixmultiply on the same shapes: the kernels'
//! wrapper (shape checks, ndarray views) must keep at least 80 % of matrixmultiply's throughput.
//! Shapes are those of a BERT-style layer of the tiny spec and a larger square one.
//!
//! Criterion measures the two one after the other, so on a shared machine a change of background
//! load between them shows up as a difference between them. Before the criterion groups, a paired
//! measurement alternates the two in short rounds (ABAB…) and prints the median of the per-round
//! throughput ratios, which such drifts cancel out of.

use std::time::Instant;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ndarray::Array2;

const SHAPES: [(usize, usize, usize); 3] = [(128, 256, 1024), (128, 1024, 256), (512, 512, 512)];
/// Rounds of the paired measurement, and runs of each side per round.
const PAIRED_ROUNDS: usize = 31;
const RUNS_PER_ROUND: usize = 5;

fn operands(m: usize, k: usize, n: usize) -> (Array2<f32>, Array2<f32>, Array2<f32>) {
    let a = Array2::from_shape_fn((m, k), |(i, j)| ((i * 7 + j * 3) % 13) as f32 * 0.1);
    let b = Array2::from_shape_fn((k, n), |(i, j)| ((i * 5 + j * 11) % 17) as f32 * 0.1);
    (a, b, Array2::zeros((m, n)))
}

fn kernels_gemm(a: &Array2<f32>, b: &Array2<f32>, out: &mut Array2<f32>) {
    plexserve_kernels::gemm_into(1.0, a.view(), b.view(), 0.0, out).unwrap()
}

fn raw_gemm(a: &Array2<f32>, b: &Array2<f32>, out: &mut Array2<f32>) {
    let (m, k, n) = (a.nrows(), a.ncols(), b.ncols());
    // SAFETY: the three buffers are contiguous row-major with exactly these shapes.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            k as isize,
            1,
            b.as_ptr(),
            n as isize,
            1,
            0.0,
            out.as_mut_ptr(),
            n as isize,
            1,
        )
    }
}

/// Median over rounds of (matrixmultiply time / plexserve-kernels time), i.e. the kernels'
/// throughput as a fraction of matrixmultiply's.
fn paired_ratio(m: usize, k: usize, n: usize) -> (f64, f64, f64) {
    let (a, b, mut out) = operands(m, k, n);
    let time = |f: &mut dyn FnMut()| {
        let start = Instant::now();
        for _ in 0..RUNS_PER_ROUND {
            f();
        }
        start.elapsed().as_secs_f64()
    };
    // Warm-up of both.
    time(&mut || kernels_gemm(&a, &b, &mut out));
    time(&mut || raw_gemm(&a, &b, &mut out));
    let mut ratios: Vec<f64> = (0..PAIRED_ROUNDS)
        .map(|round| {
            // Alternate which side goes first so neither always follows the other.
            let (t_kernels, t_raw) = if round % 2 == 0 {
                let tk = time(&mut || kernels_gemm(&a, &b, &mut out));
                (tk, time(&mut || raw_gemm(&a, &b, &mut out)))
            } else {
                let tr = time(&mut || raw_gemm(&a, &b, &mut out));
                (time(&mut || kernels_gemm(&a, &b, &mut out)), tr)
            };
            t_raw / t_kernels
        })
        .collect();
    ratios.sort_by(f64::total_cmp);
    let q = |p: f64| ratios[((ratios.len() - 1) as f64 * p).round() as usize];
    (q(0.5), q(0.25), q(0.75))
}

fn bench(c: &mut Criterion) {
    for (m, k, n) in SHAPES {
        let (median, q1, q3) = paired_ratio(m, k, n);
        eprintln!(
            "paired gemm_f32 {m}x{k}x{n}: plexserve-kernels throughput = {:.1} % of matrixmultiply (median of {PAIRED_ROUNDS} alternating rounds; quartiles {:.1} – {:.1} %)",
            100.0 * median,
            100.0 * q1,
            100.0 * q3
        );
    }
    let mut group = c.benchmark_group("gemm_f32");
    for (m, k, n) in SHAPES {
        let id = format!("{m}x{k}x{n}");
        group.throughput(Throughput::Elements((2 * m * k * n) as u64));
        let (a, b, mut out) = operands(m, k, n);
        group.bench_with_input(
            BenchmarkId::new("plexserve_kernels", &id),
            &(),
            |bench, _| bench.iter(|| kernels_gemm(&a, &b, &mut out)),
        );
        group.bench_with_input(BenchmarkId::new("matrixmultiply", &id), &(), |bench, _| {
            bench.iter(|| raw_gemm(&a, &b, &mut out))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
