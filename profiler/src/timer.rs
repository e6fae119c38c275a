//! Timers: run one operator on a device with random inputs and measure it. The CPU timer always
//! exists; the CUDA timer goes through `plexserve_kernels::cuda`, which reports `NotCompiled` or
//! `NoDevice` when there is no GPU to time on.

use std::time::Instant;

use ndarray::{Array1, Array2};
use plexserve_kernels::{
    self as kernels, cuda::CudaDevice, AttentionShape, Dtype, Expert, KvCache, MoeLayer,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::{ProfilerError, Result};
use crate::ops::Op;

/// Repeated measurements of one operator, in seconds.
#[derive(Debug, Clone, PartialEq)]
pub struct Samples(pub Vec<f64>);

impl Samples {
    pub fn median_s(&self) -> f64 {
        let mut v = self.0.clone();
        v.sort_by(f64::total_cmp);
        match v.len() {
            0 => 0.0,
            n if n % 2 == 1 => v[n / 2],
            n => 0.5 * (v[n / 2 - 1] + v[n / 2]),
        }
    }

    pub fn min_s(&self) -> f64 {
        self.0.iter().copied().fold(f64::INFINITY, f64::min)
    }

    pub fn max_s(&self) -> f64 {
        self.0.iter().copied().fold(0.0, f64::max)
    }

    /// `(max − min) / median`: how far apart the repeats were.
    pub fn spread(&self) -> f64 {
        let m = self.median_s();
        if m > 0.0 {
            (self.max_s() - self.min_s()) / m
        } else {
            0.0
        }
    }
}

/// Something that measures operators: the seam between the profiler and a device.
pub trait Timer {
    /// The device, for `source.device`.
    fn device(&self) -> String;
    /// How operators run (element types, what is a proxy), for `source.method`.
    fn method(&self) -> String;
    /// Versions of what ran the operators, for `source.software`.
    fn software(&self) -> Vec<(String, String)>;
    /// Times `op`: `warmup` unmeasured runs, then `repeats` measured ones.
    fn time(&mut self, op: &Op, warmup: usize, repeats: usize) -> Result<Samples>;
}

fn random(rng: &mut ChaCha8Rng, rows: usize, cols: usize) -> Array2<f32> {
    Array2::from_shape_fn((rows, cols), |_| rng.random_range(-1.0f32..1.0))
}

fn random1(rng: &mut ChaCha8Rng, n: usize) -> Array1<f32> {
    Array1::from_shape_fn(n, |_| rng.random_range(-1.0f32..1.0))
}

/// Shortest measured sample: faster operators run several times per sample (and the sample is
/// divided by the count), so that timer resolution and one-off scheduler hiccups on a shared
/// machine do not dominate microsecond operators.
const MIN_SAMPLE_S: f64 = 2e-3;
/// Most runs folded into one sample.
const MAX_RUNS_PER_SAMPLE: usize = 256;

/// Runs `setup` before every run (unmeasured) and `run` measured by the wall clock; each sample
/// is the mean of enough back-to-back runs to last [`MIN_SAMPLE_S`].
fn measure<S>(
    warmup: usize,
    repeats: usize,
    mut setup: impl FnMut() -> S,
    mut run: impl FnMut(S) -> Result<()>,
) -> Result<Samples> {
    for _ in 0..warmup {
        run(setup())?;
    }
    let state = setup();
    let start = Instant::now();
    run(state)?;
    let once = start.elapsed().as_secs_f64();
    let per_sample = if once > 0.0 {
        ((MIN_SAMPLE_S / once).ceil() as usize).clamp(1, MAX_RUNS_PER_SAMPLE)
    } else {
        MAX_RUNS_PER_SAMPLE
    };
    let mut samples = Vec::with_capacity(repeats);
    for _ in 0..repeats {
        let states: Vec<S> = (0..per_sample).map(|_| setup()).collect();
        let start = Instant::now();
        for state in states {
            run(state)?;
        }
        samples.push(start.elapsed().as_secs_f64() / per_sample as f64);
    }
    Ok(Samples(samples))
}

/// Times operators with the CPU kernels (f32, all cores through rayon and matrixmultiply).
#[derive(Debug)]
pub struct CpuTimer {
    /// Largest f32 working set of one operator, in bytes.
    pub max_operator_bytes: u64,
    seed: u64,
}

impl CpuTimer {
    pub fn new(max_operator_bytes: u64) -> CpuTimer {
        CpuTimer {
            max_operator_bytes,
            seed: 0,
        }
    }
}

impl Timer for CpuTimer {
    fn device(&self) -> String {
        let host = crate::host::HostInfo::detect();
        format!(
            "cpu: {} ({} threads)",
            host.cpu_model,
            rayon::current_num_threads()
        )
    }

    fn method(&self) -> String {
        "CPU kernels (f32, ndarray + matrixmultiply + rayon)".into()
    }

    fn software(&self) -> Vec<(String, String)> {
        vec![
            ("ndarray".into(), "0.17".into()),
            ("matrixmultiply".into(), "0.3".into()),
            (
                "rayon-threads".into(),
                rayon::current_num_threads().to_string(),
            ),
        ]
    }

    fn time(&mut self, op: &Op, warmup: usize, repeats: usize) -> Result<Samples> {
        let bytes = op.host_elements() * 4;
        if bytes > self.max_operator_bytes {
            return Err(ProfilerError::TooLarge(format!(
                "{op} needs {:.1} GiB of host memory, more than the {:.1} GiB allowed; profile this model with --device analytic:NAME or a GPU",
                bytes as f64 / (1u64 << 30) as f64,
                self.max_operator_bytes as f64 / (1u64 << 30) as f64
            )));
        }
        // Inputs are random but seeded per operator, so a profile run is reproducible.
        self.seed += 1;
        let rng = &mut ChaCha8Rng::seed_from_u64(self.seed);
        match *op {
            Op::Gemm { m, k, n, count } => {
                let (a, b) = (random(rng, m, k), random(rng, k, n));
                let mut c = Array2::zeros((m, n));
                measure(
                    warmup,
                    repeats,
                    || (),
                    |()| {
                        for _ in 0..count {
                            kernels::gemm_into(1.0, a.view(), b.view(), 0.0, &mut c)?;
                        }
                        Ok(())
                    },
                )
            }
            Op::Attention {
                batch,
                sq,
                skv,
                heads,
                kv_heads,
                head_dim,
                causal,
            } => {
                let shape = AttentionShape {
                    heads,
                    kv_heads,
                    head_dim,
                    causal,
                };
                let q = random(rng, batch * sq, shape.q_width());
                if sq == skv {
                    let (k, v) = (
                        random(rng, batch * skv, shape.kv_width()),
                        random(rng, batch * skv, shape.kv_width()),
                    );
                    measure(
                        warmup,
                        repeats,
                        || (),
                        |()| {
                            kernels::attention(q.view(), k.view(), v.view(), batch, shape)
                                .map(drop)
                                .map_err(Into::into)
                        },
                    )
                } else {
                    // Decode: `skv − sq` positions are cached already; each run appends `sq`.
                    let past = skv - sq;
                    let mut cache = KvCache::new(batch, shape)?;
                    cache.append(
                        random(rng, batch * past, shape.kv_width()).view(),
                        random(rng, batch * past, shape.kv_width()).view(),
                    )?;
                    let (k, v) = (
                        random(rng, batch * sq, shape.kv_width()),
                        random(rng, batch * sq, shape.kv_width()),
                    );
                    measure(
                        warmup,
                        repeats,
                        || cache.clone(),
                        |mut c| {
                            kernels::attention_with_cache(q.view(), k.view(), v.view(), &mut c)
                                .map(drop)
                                .map_err(Into::into)
                        },
                    )
                }
            }
            Op::LayerNorm { rows, cols } => {
                let (g, b) = (random1(rng, cols), random1(rng, cols));
                let x = random(rng, rows, cols);
                measure(
                    warmup,
                    repeats,
                    || x.clone(),
                    |mut x| {
                        kernels::layer_norm(&mut x, g.view(), b.view(), 1e-5).map_err(Into::into)
                    },
                )
            }
            Op::RmsNorm { rows, cols } => {
                let g = random1(rng, cols);
                let x = random(rng, rows, cols);
                measure(
                    warmup,
                    repeats,
                    || x.clone(),
                    |mut x| kernels::rms_norm(&mut x, g.view(), 1e-5).map_err(Into::into),
                )
            }
            Op::BiasGelu { rows, cols } => {
                let b = random1(rng, cols);
                let x = random(rng, rows, cols);
                measure(
                    warmup,
                    repeats,
                    || x.clone(),
                    |mut x| kernels::bias_gelu(&mut x, b.view()).map_err(Into::into),
                )
            }
            Op::SiluMul { rows, cols } => {
                let up = random(rng, rows, cols);
                let x = random(rng, rows, cols);
                measure(
                    warmup,
                    repeats,
                    || x.clone(),
                    |mut x| kernels::silu_mul(&mut x, up.view()).map_err(Into::into),
                )
            }
            Op::Embedding { rows, cols, vocab } => {
                let table = random(rng, vocab, cols);
                let ids: Vec<usize> = (0..rows).map(|_| rng.random_range(0..vocab)).collect();
                measure(
                    warmup,
                    repeats,
                    || (),
                    |()| {
                        std::hint::black_box(table.select(ndarray::Axis(0), &ids));
                        Ok(())
                    },
                )
            }
            Op::Moe {
                tokens,
                hidden,
                ffn,
                experts,
                top_k,
            } => {
                let layer = MoeLayer {
                    // Small router weights give near-uniform routing, as a trained balanced router does.
                    router: random(rng, hidden, experts) * 0.01,
                    experts: (0..experts)
                        .map(|_| Expert {
                            w1: random(rng, hidden, ffn),
                            b1: random1(rng, ffn),
                            w2: random(rng, ffn, hidden),
                            b2: random1(rng, hidden),
                        })
                        .collect(),
                    top_k,
                };
                let x = random(rng, tokens, hidden);
                measure(
                    warmup,
                    repeats,
                    || (),
                    |()| {
                        kernels::moe_ffn(x.view(), &layer)
                            .map(drop)
                            .map_err(Into::into)
                    },
                )
            }
            Op::AllReduce { .. } | Op::AllGather { .. } => Ok(Samples(vec![0.0])),
        }
    }
}

/// One operator's GPU work, run repeatedly by the CUDA timer.
type GpuWork<'a> = Box<dyn FnMut(&CudaDevice) -> plexserve_kernels::Result<()> + 'a>;

/// Times operators on a GPU with CUDA events around each run. GEMMs run in the spec's element
/// type through cuBLAS; the other kernels run in f32, and operators without a kernel of their own
/// are timed through the nearest one (RMSNorm as LayerNorm, SiluMul and the embedding gather as
/// one elementwise pass, MoE as its router and per-expert GEMMs with balanced routing).
pub struct CudaTimer {
    device: CudaDevice,
    dtype: Dtype,
    seed: u64,
}

impl CudaTimer {
    /// Opens GPU `ordinal`; `NotCompiled` or `NoDevice` when there is none.
    pub fn open(ordinal: usize, dtype: Dtype) -> Result<CudaTimer> {
        Ok(CudaTimer {
            device: CudaDevice::open(ordinal)?,
            dtype,
            seed: 0,
        })
    }
}

impl Timer for CudaTimer {
    fn device(&self) -> String {
        let i = self.device.info();
        format!(
            "cuda:{} {} ({:.0} GiB, compute {}.{})",
            i.ordinal,
            i.name,
            i.memory_bytes as f64 / (1u64 << 30) as f64,
            i.compute_capability.0,
            i.compute_capability.1
        )
    }

    fn method(&self) -> String {
        format!(
            "CUDA kernels (cuBLAS GEMMs in {}, NVRTC kernels in f32; RMSNorm timed as LayerNorm, SiluMul and embedding as one elementwise pass), CUDA events with synchronization around each run",
            self.dtype.name()
        )
    }

    fn software(&self) -> Vec<(String, String)> {
        vec![
            ("cudarc".into(), "0.19".into()),
            (
                "cuda-driver".into(),
                self.device.info().driver_version.clone(),
            ),
        ]
    }

    fn time(&mut self, op: &Op, warmup: usize, repeats: usize) -> Result<Samples> {
        self.seed += 1;
        let rng = &mut ChaCha8Rng::seed_from_u64(self.seed);
        let d = &self.device;
        let dt = self.dtype;
        let up = |m: Array2<f32>, dtype: Dtype| d.upload(m.view(), dtype);
        let run_n = |mut f: GpuWork<'_>| -> Result<Samples> {
            for _ in 0..warmup {
                f(d)?;
            }
            d.synchronize()?;
            let mut s = Vec::with_capacity(repeats);
            for _ in 0..repeats {
                s.push(d.time_s(&mut f)?);
            }
            Ok(Samples(s))
        };
        match *op {
            Op::Gemm { m, k, n, count } => {
                let (a, b) = (up(random(rng, m, k), dt)?, up(random(rng, k, n), dt)?);
                let mut c = d.zeros(m, n, dt)?;
                run_n(Box::new(move |d| {
                    (0..count).try_for_each(|_| d.gemm(&a, &b, &mut c))
                }))
            }
            Op::Attention {
                batch,
                sq,
                skv,
                heads,
                kv_heads,
                head_dim,
                causal,
            } => {
                let shape = AttentionShape {
                    heads,
                    kv_heads,
                    head_dim,
                    causal,
                };
                let q = up(random(rng, batch * sq, shape.q_width()), Dtype::F32)?;
                let k = up(random(rng, batch * skv, shape.kv_width()), Dtype::F32)?;
                let v = up(random(rng, batch * skv, shape.kv_width()), Dtype::F32)?;
                let mut o = d.zeros(batch * sq, shape.q_width(), Dtype::F32)?;
                run_n(Box::new(move |d| {
                    d.attention(&q, &k, &v, &mut o, batch, shape)
                }))
            }
            Op::LayerNorm { rows, cols } | Op::RmsNorm { rows, cols } => {
                let mut x = up(random(rng, rows, cols), Dtype::F32)?;
                let (g, b) = (
                    up(random(rng, 1, cols), Dtype::F32)?,
                    up(random(rng, 1, cols), Dtype::F32)?,
                );
                run_n(Box::new(move |d| d.layer_norm(&mut x, &g, &b, 1e-5)))
            }
            Op::BiasGelu { rows, cols }
            | Op::SiluMul { rows, cols }
            | Op::Embedding { rows, cols, .. } => {
                let mut x = up(random(rng, rows, cols), Dtype::F32)?;
                let b = up(random(rng, 1, cols), Dtype::F32)?;
                run_n(Box::new(move |d| d.bias_gelu(&mut x, &b)))
            }
            Op::Moe {
                tokens,
                hidden,
                ffn,
                experts,
                top_k,
            } => {
                let per_expert = (tokens * top_k).div_ceil(experts);
                let x = up(random(rng, tokens, hidden), dt)?;
                let router = up(random(rng, hidden, experts), dt)?;
                let mut logits = d.zeros(tokens, experts, dt)?;
                let xe = up(random(rng, per_expert, hidden), dt)?;
                let mut hid = d.zeros(per_expert, ffn, dt)?;
                let mut act = up(random(rng, per_expert, ffn), Dtype::F32)?;
                let b1 = up(random(rng, 1, ffn), Dtype::F32)?;
                let mut ye = d.zeros(per_expert, hidden, dt)?;
                let weights: Vec<(_, _)> = (0..experts)
                    .map(|_| {
                        Ok((
                            up(random(rng, hidden, ffn), dt)?,
                            up(random(rng, ffn, hidden), dt)?,
                        ))
                    })
                    .collect::<Result<_>>()?;
                run_n(Box::new(move |d| {
                    d.gemm(&x, &router, &mut logits)?;
                    for (w1, w2) in &weights {
                        d.gemm(&xe, w1, &mut hid)?;
                        d.bias_gelu(&mut act, &b1)?;
                        d.gemm(&hid, w2, &mut ye)?;
                    }
                    Ok(())
                }))
            }
            Op::AllReduce { .. } | Op::AllGather { .. } => Ok(Samples(vec![0.0])),
        }
    }
}
