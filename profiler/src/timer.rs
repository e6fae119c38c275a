//! Timers: set up one operator on a device with random inputs and run it on demand. The CPU timer
//! always exists; the CUDA timer goes through `plexserve_kernels::cuda`, which reports
//! `NotCompiled` or `NoDevice` when there is no GPU to time on. How samples are taken (warm-up,
//! interleaving, statistics) is [`crate::measure`]'s business.

use std::time::Instant;

use ndarray::{Array1, Array2};
use plexserve_kernels::{
    self as kernels, cuda::CudaDevice, AttentionShape, Dtype, Expert, KvCache, MoeLayer,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::{ProfilerError, Result};
use crate::measure::{measure_ops, MeasureOptions};
use crate::ops::Op;

/// Repeated measurements of one operator, in seconds per run.
#[derive(Debug, Clone, PartialEq)]
pub struct Samples(pub Vec<f64>);

impl Samples {
    fn sorted(&self) -> Vec<f64> {
        let mut v = self.0.clone();
        v.sort_by(f64::total_cmp);
        v
    }

    /// The `p`-quantile (0 ≤ p ≤ 1), interpolating linearly between order statistics; 0 when
    /// there are no samples.
    pub fn quantile_s(&self, p: f64) -> f64 {
        let v = self.sorted();
        match v.len() {
            0 => 0.0,
            1 => v[0],
            n => {
                let x = p.clamp(0.0, 1.0) * (n - 1) as f64;
                let (lo, hi) = (x.floor() as usize, x.ceil() as usize);
                v[lo] + (v[hi] - v[lo]) * (x - lo as f64)
            }
        }
    }

    pub fn median_s(&self) -> f64 {
        self.quantile_s(0.5)
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

    /// Half-width of the distribution-free 95 % confidence interval of the median, relative to
    /// the median: the order statistics of ranks `⌊n/2 − 0.98√n⌋` and `⌈1 + n/2 + 0.98√n⌉`
    /// (binomial, normal approximation; the whole range for fewer than 9 samples). Infinite
    /// without samples, 0 when the median is 0.
    pub fn median_ci_half_width(&self) -> f64 {
        let v = self.sorted();
        let n = v.len();
        if n == 0 {
            return f64::INFINITY;
        }
        let m = self.median_s();
        if m <= 0.0 {
            return 0.0;
        }
        let h = 0.98 * (n as f64).sqrt();
        let lo = ((n as f64 / 2.0 - h).floor() as usize).clamp(1, n);
        let hi = ((1.0 + n as f64 / 2.0 + h).ceil() as usize).clamp(1, n);
        (v[hi - 1] - v[lo - 1]) / (2.0 * m)
    }

    /// Interquartile range over the median: the spread of the middle half of the samples, which
    /// one sample disturbed by another process does not move.
    pub fn iqr_ratio(&self) -> f64 {
        let m = self.median_s();
        if m > 0.0 {
            (self.quantile_s(0.75) - self.quantile_s(0.25)) / m
        } else {
            0.0
        }
    }
}

/// An operator set up on a device with its inputs, ready to run.
pub trait PreparedOp {
    /// Runs the operator `runs` times back to back; returns the seconds of the whole batch
    /// (per-run setup such as restoring an in-place input is excluded).
    fn run_s(&mut self, runs: usize) -> Result<f64>;
}

/// Something that measures operators: the seam between the profiler and a device.
pub trait Timer {
    /// The device, for `source.device`.
    fn device(&self) -> String;
    /// How operators run (element types, what is a proxy), for `source.method`.
    fn method(&self) -> String;
    /// Versions of what ran the operators, for `source.software`.
    fn software(&self) -> Vec<(String, String)>;
    /// Bytes the operators prepared at one time may hold together (they are interleaved).
    fn memory_budget(&self) -> u64;
    /// Shortest sample: faster operators run several times per sample.
    fn min_sample_s(&self) -> f64;
    /// Sets `op` up with seeded random inputs.
    fn prepare<'a>(&'a self, op: &Op) -> Result<Box<dyn PreparedOp + 'a>>;

    /// Times `op` alone: at least `warmup` warm-up samples, then `repeats` measured ones.
    fn time(&mut self, op: &Op, warmup: usize, repeats: usize) -> Result<Samples> {
        let opts = MeasureOptions {
            warmup,
            repeats,
            ..MeasureOptions::default()
        };
        let mut m = measure_ops(&*self, std::slice::from_ref(op), &opts)?;
        Ok(m.remove(0).samples)
    }
}

fn random(rng: &mut ChaCha8Rng, rows: usize, cols: usize) -> Array2<f32> {
    Array2::from_shape_fn((rows, cols), |_| rng.random_range(-1.0f32..1.0))
}

fn random1(rng: &mut ChaCha8Rng, n: usize) -> Array1<f32> {
    Array1::from_shape_fn(n, |_| rng.random_range(-1.0f32..1.0))
}

/// Inputs are random but seeded by the operator itself, so a profile is reproducible and does
/// not depend on the order operators are prepared in.
fn rng_for(op: &Op) -> ChaCha8Rng {
    // FNV-1a over the operator's description.
    let seed = format!("{op:?}")
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
    ChaCha8Rng::seed_from_u64(seed)
}

/// What CPU samples are timed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuClock {
    /// Elapsed real time: what a caller waits for, other threads' work included.
    Wall,
    /// CPU time of the measuring thread (`CLOCK_THREAD_CPUTIME_ID`, user + system). Time the
    /// thread spends descheduled, or its virtual CPU stolen by the hypervisor, is not counted, so
    /// on a shared machine this is the time the operator takes on a core of its own. It is the
    /// operator's latency only when all of its work runs on the measuring thread.
    Thread,
}

impl CpuClock {
    /// The measuring thread's CPU time when every kernel runs on it — it is the only worker of
    /// the rayon pool it runs in (`rayon_pool`: the pool's size, `None` outside any pool, where
    /// parallel loops run on the global pool's workers) and matrixmultiply runs on the calling
    /// thread (`MATMUL_NUM_THREADS` ≤ 1) — and the platform has a thread clock; wall time
    /// otherwise, where other threads' work and their wake-ups are part of what a caller waits
    /// for.
    pub fn for_threads(rayon_pool: Option<usize>, matmul_threads: &str) -> CpuClock {
        let one_matmul_thread = matmul_threads.trim().parse::<usize>().is_ok_and(|n| n <= 1);
        if rayon_pool == Some(1) && one_matmul_thread && thread_cpu_s().is_some() {
            CpuClock::Thread
        } else {
            CpuClock::Wall
        }
    }

    /// Seconds since an arbitrary origin fixed for the process (wall) or thread (CPU).
    fn read_s(self) -> f64 {
        match self {
            CpuClock::Wall => wall_s(),
            CpuClock::Thread => thread_cpu_s().unwrap_or_else(wall_s),
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            CpuClock::Wall => "wall time",
            CpuClock::Thread => "CPU time of the measuring thread (all work runs on it; time descheduled or stolen by the hypervisor is not counted)",
        }
    }
}

fn wall_s() -> f64 {
    static ORIGIN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    ORIGIN.get_or_init(Instant::now).elapsed().as_secs_f64()
}

#[cfg(unix)]
fn thread_cpu_s() -> Option<f64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the call's duration.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    (rc == 0).then_some(ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9)
}

#[cfg(not(unix))]
fn thread_cpu_s() -> Option<f64> {
    None
}

/// The measuring thread held on one CPU while it measures; the thread's previous CPU set is
/// restored on drop. Moving between CPUs costs the caches the operator's data was in, and which
/// CPU a run happens to land on is a per-run choice the profile should not depend on.
#[derive(Debug)]
pub struct Pinned {
    /// The CPU the thread is held on.
    pub cpu: usize,
    #[cfg(target_os = "linux")]
    previous: libc::cpu_set_t,
}

impl Pinned {
    /// Holds the calling thread on `cpu`, or by default on the highest-numbered CPU it may run
    /// on (the same one in every run; CPU 0 is where many systems steer interrupts). `None`
    /// when the platform cannot pin or `cpu` is not allowed to the thread.
    #[cfg(target_os = "linux")]
    pub fn current_thread(cpu: Option<usize>) -> Option<Pinned> {
        // SAFETY: cpu_set_t is plain data; all-zero is the empty set.
        let mut previous: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        let size = std::mem::size_of::<libc::cpu_set_t>();
        // SAFETY: `previous` is a valid, writable cpu_set_t of `size` bytes; pid 0 is the
        // calling thread.
        if unsafe { libc::sched_getaffinity(0, size, &mut previous) } != 0 {
            return None;
        }
        let slots = 8 * size;
        // SAFETY: `c` is below the set's size in bits.
        let allowed = |c: usize| c < slots && unsafe { libc::CPU_ISSET(c, &previous) };
        let cpu = match cpu {
            Some(c) => allowed(c).then_some(c)?,
            None => (0..slots).rev().find(|&c| allowed(c))?,
        };
        // SAFETY: as above, and `cpu` is below the set's size in bits.
        let mut one: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        unsafe { libc::CPU_SET(cpu, &mut one) };
        // SAFETY: `one` is a valid cpu_set_t of `size` bytes.
        if unsafe { libc::sched_setaffinity(0, size, &one) } != 0 {
            return None;
        }
        Some(Pinned { cpu, previous })
    }

    #[cfg(not(target_os = "linux"))]
    pub fn current_thread(_cpu: Option<usize>) -> Option<Pinned> {
        None
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        #[cfg(target_os = "linux")]
        // SAFETY: `previous` is the valid cpu_set_t read when pinning. Failing to widen the set
        // again leaves the thread on its one CPU, which is still correct, only slower.
        unsafe {
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &self.previous);
        }
    }
}

/// Bytes of restored inputs one timed stretch of an in-place operator runs on: few enough to
/// stay in a core's L2 cache, as an activation just written by the previous operator is.
pub const RESTORE_BYTES: usize = 512 << 10;

/// Runs of an in-place operator with `state_bytes` of input timed together.
fn runs_per_stretch(state_bytes: usize) -> usize {
    (RESTORE_BYTES / state_bytes.max(1)).max(1)
}

/// A CPU operator: `run` is measured on a state it may overwrite (the input of an in-place
/// kernel). Every run gets a fresh copy of `input`, restored outside the timed region into
/// reused buffers (no allocation, so no allocator or page-fault time, is timed), and runs are
/// timed in stretches of as many copies as fit [`RESTORE_BYTES`], so each run reads an input
/// that is in cache, never one evicted by the copies made for later runs.
struct CpuOp<S, G> {
    input: S,
    copies: Vec<S>,
    runs_per_stretch: usize,
    run: G,
    clock: CpuClock,
}

impl<S: Clone, G: FnMut(&mut S) -> Result<()>> PreparedOp for CpuOp<S, G> {
    fn run_s(&mut self, runs: usize) -> Result<f64> {
        let mut total = 0.0;
        let mut left = runs;
        while left > 0 {
            let n = left.min(self.runs_per_stretch);
            while self.copies.len() < n {
                self.copies.push(self.input.clone());
            }
            for c in &mut self.copies[..n] {
                c.clone_from(&self.input);
            }
            let start = self.clock.read_s();
            for c in &mut self.copies[..n] {
                (self.run)(c)?;
            }
            total += self.clock.read_s() - start;
            left -= n;
        }
        Ok(total)
    }
}

impl CpuTimer {
    /// An operator without state to restore: all runs of a sample are timed together.
    fn op<'a>(&self, run: impl FnMut() -> Result<()> + 'a) -> Box<dyn PreparedOp + 'a> {
        let mut run = run;
        Box::new(CpuOp {
            input: (),
            copies: Vec::new(),
            runs_per_stretch: usize::MAX,
            run: move |_: &mut ()| run(),
            clock: self.clock,
        })
    }

    /// An in-place operator on `input` (restored before every run).
    fn in_place<'a>(
        &self,
        input: Array2<f32>,
        run: impl FnMut(&mut Array2<f32>) -> Result<()> + 'a,
    ) -> Box<dyn PreparedOp + 'a> {
        Box::new(CpuOp {
            runs_per_stretch: runs_per_stretch(input.len() * std::mem::size_of::<f32>()),
            input,
            copies: Vec::new(),
            run,
            clock: self.clock,
        })
    }
}

/// Times operators with the CPU kernels (f32; rayon threads for row-wise work and attention
/// heads, matrixmultiply's own threads for GEMMs).
#[derive(Debug)]
pub struct CpuTimer {
    /// Largest f32 working set of one operator, in bytes.
    pub max_operator_bytes: u64,
    /// What samples are timed with, chosen from the threads in effect on the thread that makes
    /// the timer, which is the one that measures ([`CpuClock::for_threads`]).
    pub clock: CpuClock,
    /// The CPU the measuring thread is held on ([`Pinned`]), for the stamp.
    pub pinned_cpu: Option<usize>,
}

impl CpuTimer {
    pub fn new(max_operator_bytes: u64) -> CpuTimer {
        CpuTimer {
            max_operator_bytes,
            pinned_cpu: None,
            clock: CpuClock::for_threads(
                rayon::current_thread_index().map(|_| rayon::current_num_threads()),
                &matmul_threads(),
            ),
        }
    }
}

/// matrixmultiply's thread count as it will choose it: `MATMUL_NUM_THREADS`, else the physical
/// cores.
pub fn matmul_threads() -> String {
    match std::env::var("MATMUL_NUM_THREADS") {
        Ok(v) if !v.is_empty() => v,
        _ => "physical cores".into(),
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
        format!(
            "CPU kernels (f32, ndarray + matrixmultiply + rayon; {} rayon threads, GEMM threads: {}; in-place operators on inputs restored untimed and cache-resident), timed with {}; {}",
            rayon::current_num_threads(),
            matmul_threads(),
            self.clock.describe(),
            match self.pinned_cpu {
                Some(c) => format!("measuring thread pinned to CPU {c}"),
                None => "measuring thread not pinned".into(),
            }
        )
    }

    fn software(&self) -> Vec<(String, String)> {
        vec![
            ("ndarray".into(), "0.17".into()),
            ("matrixmultiply".into(), "0.3".into()),
            (
                "rayon-threads".into(),
                rayon::current_num_threads().to_string(),
            ),
            ("matmul-threads".into(), matmul_threads()),
            (
                "clock".into(),
                match self.clock {
                    CpuClock::Wall => "wall",
                    CpuClock::Thread => "thread-cpu",
                }
                .into(),
            ),
            (
                "cpu-pin".into(),
                self.pinned_cpu
                    .map_or_else(|| "none".into(), |c| c.to_string()),
            ),
        ]
    }

    fn memory_budget(&self) -> u64 {
        self.max_operator_bytes
    }

    fn min_sample_s(&self) -> f64 {
        // Timer resolution and one scheduler hiccup on a shared machine must not dominate a
        // microsecond operator.
        2e-3
    }

    fn prepare<'a>(&'a self, op: &Op) -> Result<Box<dyn PreparedOp + 'a>> {
        let bytes = op.host_elements() * 4;
        if bytes > self.max_operator_bytes {
            return Err(ProfilerError::TooLarge(format!(
                "{op} needs {:.1} GiB of host memory, more than the {:.1} GiB allowed; profile this model with --device analytic:NAME or a GPU",
                bytes as f64 / (1u64 << 30) as f64,
                self.max_operator_bytes as f64 / (1u64 << 30) as f64
            )));
        }
        let rng = &mut rng_for(op);
        Ok(match *op {
            Op::Gemm { m, k, n, count } => {
                let (a, b) = (random(rng, m, k), random(rng, k, n));
                let mut c = Array2::zeros((m, n));
                self.op(move || {
                    for _ in 0..count {
                        kernels::gemm_into(1.0, a.view(), b.view(), 0.0, &mut c)?;
                    }
                    Ok(())
                })
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
                    self.op(move || {
                        kernels::attention(q.view(), k.view(), v.view(), batch, shape)
                            .map(drop)
                            .map_err(Into::into)
                    })
                } else {
                    // Decode: `skv − sq` positions are cached already; each run appends `sq`
                    // and attends over all `skv`, then the cache is rewound (its storage kept, so
                    // the append does not reallocate, as in a server's preallocated cache).
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
                    self.op(move || {
                        cache.truncate(past);
                        kernels::attention_with_cache(q.view(), k.view(), v.view(), &mut cache)
                            .map(drop)
                            .map_err(Into::into)
                    })
                }
            }
            Op::LayerNorm { rows, cols } => {
                let (g, b) = (random1(rng, cols), random1(rng, cols));
                let x = random(rng, rows, cols);
                self.in_place(x, move |x| {
                    kernels::layer_norm(x, g.view(), b.view(), 1e-5).map_err(Into::into)
                })
            }
            Op::RmsNorm { rows, cols } => {
                let g = random1(rng, cols);
                let x = random(rng, rows, cols);
                self.in_place(x, move |x| {
                    kernels::rms_norm(x, g.view(), 1e-5).map_err(Into::into)
                })
            }
            Op::BiasGelu { rows, cols } => {
                let b = random1(rng, cols);
                let x = random(rng, rows, cols);
                self.in_place(x, move |x| {
                    kernels::bias_gelu(x, b.view()).map_err(Into::into)
                })
            }
            Op::SiluMul { rows, cols } => {
                let up = random(rng, rows, cols);
                let x = random(rng, rows, cols);
                self.in_place(x, move |x| {
                    kernels::silu_mul(x, up.view()).map_err(Into::into)
                })
            }
            Op::Embedding { rows, cols, vocab } => {
                let table = random(rng, vocab, cols);
                let ids: Vec<usize> = (0..rows).map(|_| rng.random_range(0..vocab)).collect();
                // Gathered into a preallocated output, as a runtime's activation buffer.
                let mut out = Array2::zeros((rows, cols));
                self.op(move || {
                    for (mut row, &id) in out.rows_mut().into_iter().zip(&ids) {
                        row.assign(&table.row(id));
                    }
                    std::hint::black_box(&mut out);
                    Ok(())
                })
            }
            Op::Moe {
                tokens,
                hidden,
                ffn,
                experts,
                top_k,
            } => {
                let layer = random_moe(rng, hidden, ffn, experts, top_k);
                let x = random(rng, tokens, hidden);
                self.op(move || {
                    kernels::moe_ffn(x.view(), &layer)
                        .map(drop)
                        .map_err(Into::into)
                })
            }
            Op::AllReduce { .. } | Op::AllGather { .. } => {
                return Err(ProfilerError::Option(format!(
                    "{op} is modelled by the link model, not timed"
                )))
            }
        })
    }
}

fn random_moe(
    rng: &mut ChaCha8Rng,
    hidden: usize,
    ffn: usize,
    experts: usize,
    top_k: usize,
) -> MoeLayer {
    MoeLayer {
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
    }
}

/// A GPU operator: `work` queues one run on the stream; a sample brackets `runs` of them with
/// CUDA events.
struct GpuOp<'a, F> {
    device: &'a CudaDevice,
    work: F,
}

impl<F: FnMut(&CudaDevice) -> plexserve_kernels::Result<()>> PreparedOp for GpuOp<'_, F> {
    fn run_s(&mut self, runs: usize) -> Result<f64> {
        let work = &mut self.work;
        Ok(self
            .device
            .time_s(|d| (0..runs).try_for_each(|_| work(d)))?)
    }
}

fn gpu_op<'a>(
    device: &'a CudaDevice,
    work: impl FnMut(&CudaDevice) -> plexserve_kernels::Result<()> + 'a,
) -> Box<dyn PreparedOp + 'a> {
    Box::new(GpuOp { device, work })
}

/// Times operators on a GPU with CUDA events around each sample, every kernel in the spec's
/// element type (cuBLAS GEMMs, NVRTC kernels for the rest, f32 accumulation). The embedding
/// gather is timed as one elementwise pass over its output.
pub struct CudaTimer {
    device: CudaDevice,
    dtype: Dtype,
}

impl CudaTimer {
    /// Opens GPU `ordinal`; `NotCompiled` or `NoDevice` when there is none.
    pub fn open(ordinal: usize, dtype: Dtype) -> Result<CudaTimer> {
        Ok(CudaTimer {
            device: CudaDevice::open(ordinal)?,
            dtype,
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
            "CUDA kernels in {} (cuBLAS GEMMs, NVRTC kernels, f32 accumulation; embedding gather timed as one elementwise pass; MoE with its routes synchronized to the host), CUDA events around each sample after a stream synchronization",
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
            ("dtype".into(), self.dtype.name().into()),
        ]
    }

    fn memory_budget(&self) -> u64 {
        // A quarter of the GPU for the operators prepared together leaves room for workspaces.
        self.device.info().memory_bytes / 4
    }

    fn min_sample_s(&self) -> f64 {
        1e-3
    }

    fn prepare<'a>(&'a self, op: &Op) -> Result<Box<dyn PreparedOp + 'a>> {
        let rng = &mut rng_for(op);
        let d = &self.device;
        let dt = self.dtype;
        let up = |m: Array2<f32>| d.upload(m.view(), dt);
        Ok(match *op {
            Op::Gemm { m, k, n, count } => {
                let (a, b) = (up(random(rng, m, k))?, up(random(rng, k, n))?);
                let mut c = d.zeros(m, n, dt)?;
                gpu_op(d, move |d| {
                    (0..count).try_for_each(|_| d.gemm(&a, &b, &mut c))
                })
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
                let q = up(random(rng, batch * sq, shape.q_width()))?;
                let mut o = d.zeros(batch * sq, shape.q_width(), dt)?;
                if sq == skv {
                    let k = up(random(rng, batch * skv, shape.kv_width()))?;
                    let v = up(random(rng, batch * skv, shape.kv_width()))?;
                    gpu_op(d, move |d| d.attention(&q, &k, &v, &mut o, batch, shape))
                } else {
                    // Decode: `skv − sq` positions cached; each run appends `sq` and attends over
                    // all `skv`, then the cache is rewound.
                    let past = skv - sq;
                    let mut cache = d.kv_cache(batch, skv, shape, dt)?;
                    if past > 0 {
                        let k = up(random(rng, batch * past, shape.kv_width()))?;
                        let v = up(random(rng, batch * past, shape.kv_width()))?;
                        d.kv_append(&mut cache, &k, &v)?;
                    }
                    let k = up(random(rng, batch * sq, shape.kv_width()))?;
                    let v = up(random(rng, batch * sq, shape.kv_width()))?;
                    gpu_op(d, move |d| {
                        cache.truncate(past);
                        d.attention_with_cache(&q, &k, &v, &mut cache, &mut o)
                    })
                }
            }
            Op::LayerNorm { rows, cols } => {
                let mut x = up(random(rng, rows, cols))?;
                let (g, b) = (up(random(rng, 1, cols))?, up(random(rng, 1, cols))?);
                gpu_op(d, move |d| d.layer_norm(&mut x, &g, &b, 1e-5))
            }
            Op::RmsNorm { rows, cols } => {
                let mut x = up(random(rng, rows, cols))?;
                let g = up(random(rng, 1, cols))?;
                gpu_op(d, move |d| d.rms_norm(&mut x, &g, 1e-5))
            }
            Op::SiluMul { rows, cols } => {
                let mut x = up(random(rng, rows, cols))?;
                let u = up(random(rng, rows, cols))?;
                gpu_op(d, move |d| d.silu_mul(&mut x, &u))
            }
            Op::BiasGelu { rows, cols } | Op::Embedding { rows, cols, .. } => {
                let mut x = up(random(rng, rows, cols))?;
                let b = up(random(rng, 1, cols))?;
                gpu_op(d, move |d| d.bias_gelu(&mut x, &b))
            }
            Op::Moe {
                tokens,
                hidden,
                ffn,
                experts,
                top_k,
            } => {
                let mut layer = d.upload_moe(&random_moe(rng, hidden, ffn, experts, top_k), dt)?;
                let x = up(random(rng, tokens, hidden))?;
                let mut out = d.zeros(tokens, hidden, dt)?;
                gpu_op(d, move |d| d.moe_ffn(&x, &mut layer, &mut out))
            }
            Op::AllReduce { .. } | Op::AllGather { .. } => {
                return Err(ProfilerError::Option(format!(
                    "{op} is modelled by the link model, not timed"
                )))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_clock_only_when_all_work_is_on_the_measuring_thread() {
        let thread = if cfg!(unix) {
            CpuClock::Thread
        } else {
            CpuClock::Wall
        };
        assert_eq!(CpuClock::for_threads(Some(1), "1"), thread);
        assert_eq!(CpuClock::for_threads(Some(1), " 0"), thread);
        // Outside a pool, parallel loops run on the global pool's workers.
        assert_eq!(CpuClock::for_threads(None, "1"), CpuClock::Wall);
        assert_eq!(CpuClock::for_threads(Some(2), "1"), CpuClock::Wall);
        assert_eq!(CpuClock::for_threads(Some(1), "2"), CpuClock::Wall);
        assert_eq!(
            CpuClock::for_threads(Some(1), "physical cores"),
            CpuClock::Wall
        );
    }

    #[test]
    fn in_place_operators_run_on_restored_inputs_in_cache_sized_stretches() {
        let timer = CpuTimer {
            max_operator_bytes: u64::MAX,
            clock: CpuClock::Wall,
            pinned_cpu: None,
        };
        // Each run sees the prepared input, whatever the previous run left.
        let input = Array2::from_elem((4, 4), 1.0f32);
        let mut seen = Vec::new();
        {
            let mut op = timer.in_place(input.clone(), |x| {
                seen.push(x.clone());
                x.fill(f32::NAN);
                Ok(())
            });
            op.run_s(40).unwrap();
            op.run_s(3).unwrap();
        }
        assert_eq!(seen.len(), 43);
        assert!(seen.iter().all(|x| *x == input));

        // 64 KiB inputs: 8 per stretch of 512 KiB, so 8 copies serve any number of runs; a
        // large input runs alone.
        assert_eq!(runs_per_stretch(64 << 10), 8);
        assert_eq!(runs_per_stretch(4 << 20), 1);
        let mut op = CpuOp {
            input: Array2::<f32>::zeros((128, 128)),
            copies: Vec::new(),
            runs_per_stretch: runs_per_stretch(128 * 128 * 4),
            run: |_: &mut Array2<f32>| Ok(()),
            clock: CpuClock::Wall,
        };
        op.run_s(20).unwrap();
        assert_eq!(op.copies.len(), 8);
    }

    #[cfg(target_os = "linux")]
    fn allowed_cpus() -> Vec<usize> {
        // SAFETY: a valid, writable cpu_set_t; pid 0 is the calling thread.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        let size = std::mem::size_of::<libc::cpu_set_t>();
        assert_eq!(unsafe { libc::sched_getaffinity(0, size, &mut set) }, 0);
        (0..8 * size)
            .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
            .collect()
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn pinning_holds_the_thread_on_one_cpu_and_restores_its_set() {
        // On a thread of its own, so the test harness's thread keeps its CPU set whatever
        // happens.
        std::thread::spawn(|| {
            let before = allowed_cpus();
            let pinned = Pinned::current_thread(None).expect("pin");
            // The default is the highest-numbered allowed CPU, the same in every run.
            assert_eq!(Some(&pinned.cpu), before.iter().max());
            assert_eq!(allowed_cpus(), [pinned.cpu]);
            // SAFETY: sched_getcpu has no preconditions.
            assert_eq!(unsafe { libc::sched_getcpu() }, pinned.cpu as i32);
            drop(pinned);
            assert_eq!(allowed_cpus(), before);
            let lowest = before[0];
            let p = Pinned::current_thread(Some(lowest)).expect("pin");
            assert_eq!(allowed_cpus(), [lowest]);
            drop(p);
            // A CPU the thread may not use is refused, not silently replaced.
            assert!(Pinned::current_thread(Some(1 << 20)).is_none());
            assert_eq!(allowed_cpus(), before);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn median_ci_needs_samples() {
        assert_eq!(Samples(vec![]).median_ci_half_width(), f64::INFINITY);
        assert_eq!(Samples(vec![0.0, 0.0]).median_ci_half_width(), 0.0);
    }
}
