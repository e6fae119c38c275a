//! CPU GEMM through plexserve-kernels against raw matrixmultiply on the same shapes: the kernels'
//! wrapper (shape checks, ndarray views) must keep at least 80 % of matrixmultiply's throughput.
//! Shapes are those of a BERT-style layer of the tiny spec and a larger square one.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ndarray::Array2;

const SHAPES: [(usize, usize, usize); 3] = [(128, 256, 1024), (128, 1024, 256), (512, 512, 512)];

fn operands(m: usize, k: usize, n: usize) -> (Array2<f32>, Array2<f32>, Array2<f32>) {
    let a = Array2::from_shape_fn((m, k), |(i, j)| ((i * 7 + j * 3) % 13) as f32 * 0.1);
    let b = Array2::from_shape_fn((k, n), |(i, j)| ((i * 5 + j * 11) % 17) as f32 * 0.1);
    (a, b, Array2::zeros((m, n)))
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("gemm_f32");
    for (m, k, n) in SHAPES {
        let id = format!("{m}x{k}x{n}");
        group.throughput(Throughput::Elements((2 * m * k * n) as u64));
        let (a, b, mut out) = operands(m, k, n);
        group.bench_with_input(
            BenchmarkId::new("plexserve_kernels", &id),
            &(),
            |bench, _| {
                bench.iter(|| {
                    plexserve_kernels::gemm_into(1.0, a.view(), b.view(), 0.0, &mut out).unwrap()
                })
            },
        );
        let (a, b, mut out) = operands(m, k, n);
        group.bench_with_input(BenchmarkId::new("matrixmultiply", &id), &(), |bench, _| {
            bench.iter(|| {
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
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
