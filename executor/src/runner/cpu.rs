//! The CPU runner: real transformer layers (plexserve-kernels' GEMM, GeLU, LayerNorm and
//! attention) with deterministic random weights.
//!
//! A device is one core: every device of the plan gets its own single-thread rayon pool, and a
//! stage's kernels run inside the pool of its device (one per tensor-parallel shard). Without
//! that, the kernels' row-parallel loops and matrixmultiply's threads would spread every stage
//! over all cores, so two busy pipeline stages slow each other down in ways no profile taken with
//! one stage alone describes.
//!
//! An instance's profile says how long each stage takes; the CPU runner makes each stage do that
//! much real work. At start it measures one layer at every tensor-parallel degree of the plan,
//! and a stage then runs `floor(profiled / (layer × headroom))` layers (at least one). When it
//! still runs over (a loaded or slower machine), the executor feeds the measured finish back to
//! admission. [`CpuRunner::calibrate_stage`] measures whole stages with every device busy at once
//! (the conditions of serving) for profiles that should match what the server will do.

use std::sync::{Arc, Mutex, Once, RwLock, RwLockWriteGuard};
use std::time::Instant;

use ndarray::{s, Array2};
use plexserve_kernels::{attention, bias_gelu, gemm, layer_norm, AttentionShape};
use rayon::ThreadPool;

use super::transformer::{
    check_stage_devices, quantile, LayerRunner, LayerSpec, LayerWeights, ShardWeights,
};
use crate::error::{ExecutorError, Result};

fn kernel(e: plexserve_kernels::KernelError) -> ExecutorError {
    ExecutorError::Stage {
        group: usize::MAX,
        stage: usize::MAX,
        reason: e.to_string(),
    }
}

/// One pre-LayerNorm block; shard 0 runs on the calling thread (inside its device's pool), the
/// others each inside their own device's pool, and the partial sums are added (the all-reduce of
/// tensor parallelism).
fn forward(
    spec: &LayerSpec,
    layer: &LayerWeights,
    x: &mut Array2<f32>,
    shard_pools: &[Arc<ThreadPool>],
) -> Result<()> {
    let tp = layer.shards.len();
    let shape = AttentionShape {
        heads: spec.heads / tp,
        kv_heads: spec.heads / tp,
        head_dim: spec.head_dim(),
        causal: true,
    };
    let mut a = x.clone();
    layer_norm(&mut a, layer.ln1_g.view(), layer.ln1_b.view(), 1e-5).map_err(kernel)?;
    let attn = |sh: &ShardWeights| -> Result<Array2<f32>> {
        let qkv = gemm(a.view(), sh.wqkv.view()).map_err(kernel)?;
        let w = qkv.ncols() / 3;
        let o = attention(
            qkv.slice(s![.., 0..w]),
            qkv.slice(s![.., w..2 * w]),
            qkv.slice(s![.., 2 * w..]),
            1,
            shape,
        )
        .map_err(kernel)?;
        gemm(o.view(), sh.wo.view()).map_err(kernel)
    };
    for part in shard_map(&layer.shards, shard_pools, attn)? {
        *x += &part;
    }
    let mut b = x.clone();
    layer_norm(&mut b, layer.ln2_g.view(), layer.ln2_b.view(), 1e-5).map_err(kernel)?;
    let mlp = |sh: &ShardWeights| -> Result<Array2<f32>> {
        let mut hidden = gemm(b.view(), sh.w1.view()).map_err(kernel)?;
        bias_gelu(&mut hidden, sh.b1.view()).map_err(kernel)?;
        gemm(hidden.view(), sh.w2.view()).map_err(kernel)
    };
    for part in shard_map(&layer.shards, shard_pools, mlp)? {
        *x += &part;
    }
    *x += &layer.b2;
    Ok(())
}

/// Runs `f` on every shard: the first on this thread, each other one on a thread of its own that
/// enters that shard's device pool (when given), in parallel.
fn shard_map<F>(
    shards: &[ShardWeights],
    pools: &[Arc<ThreadPool>],
    f: F,
) -> Result<Vec<Array2<f32>>>
where
    F: Fn(&ShardWeights) -> Result<Array2<f32>> + Sync,
{
    if shards.len() == 1 {
        return Ok(vec![f(&shards[0])?]);
    }
    std::thread::scope(|scope| {
        let f = &f;
        let handles: Vec<_> = shards[1..]
            .iter()
            .enumerate()
            .map(|(i, sh)| {
                let pool = pools.get(i + 1);
                scope.spawn(move || match pool {
                    Some(p) => p.install(|| f(sh)),
                    None => f(sh),
                })
            })
            .collect();
        let mut out = Vec::with_capacity(shards.len());
        out.push(f(&shards[0]));
        for h in handles {
            out.push(h.join().unwrap_or_else(|_| {
                Err(ExecutorError::Stage {
                    group: usize::MAX,
                    stage: usize::MAX,
                    reason: "a tensor-parallel shard thread panicked".into(),
                })
            }));
        }
        out.into_iter().collect()
    })
}

type Bank = Arc<Vec<LayerWeights>>;

/// What [`CpuRunner::calibrate_stage`] measured.
#[derive(Debug, Clone, PartialEq)]
pub struct StageCalibration {
    /// Every measured stage duration, ascending (seconds).
    pub samples_s: Vec<f64>,
    /// The chosen quantile of the samples: the stage latency to profile.
    pub stage_s: f64,
    /// Layers per stage.
    pub layers: usize,
}

/// Real transformer layers on the CPU, calibrated to the profile.
#[derive(Debug)]
pub struct CpuRunner {
    spec: LayerSpec,
    /// Measured seconds per layer at each tp degree (index = tp).
    /// Behind a lock because fitting the profile to serving conditions rescales it while the
    /// runner is shared (read once per stage: uncontended).
    layer_s: RwLock<Vec<f64>>,
    /// Weight banks by (model, tp), built on first use.
    banks: Mutex<Vec<((usize, usize), Bank)>>,
    /// One single-thread pool per device id, built on first use.
    pools: Mutex<Vec<Option<Arc<ThreadPool>>>>,
}

/// matrixmultiply reads its thread count once, at the first GEMM of the process: a device is one
/// core, so it must not fan out (unless the user asked for threads explicitly).
fn single_threaded_gemm() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("MATMUL_NUM_THREADS").is_none() {
            std::env::set_var("MATMUL_NUM_THREADS", "1");
        }
    });
}

impl CpuRunner {
    /// Calibrates one layer at every tp degree in `tps`, each shard on its own core.
    pub fn new(spec: LayerSpec, tps: &[usize]) -> Result<CpuRunner> {
        spec.validate("cpu", tps)
            .map_err(ExecutorError::Unsupported)?;
        single_threaded_gemm();
        let max_tp = tps.iter().copied().max().unwrap_or(1).max(1);
        let runner = CpuRunner {
            spec,
            layer_s: RwLock::new(vec![f64::NAN; max_tp + 1]),
            banks: Mutex::new(Vec::new()),
            pools: Mutex::new(Vec::new()),
        };
        for &tp in tps {
            if runner.layer_time_s(tp).is_none() {
                let t = runner.calibrate(tp)?;
                runner.layer_times().resize(max_tp + 1, f64::NAN);
                runner.layer_times()[tp] = t;
            }
        }
        Ok(runner)
    }

    /// Median time of one layer at `tp` (devices 0..tp) over a few runs after a warm-up.
    fn calibrate(&self, tp: usize) -> Result<f64> {
        let devices: Vec<u32> = (0..tp as u32).collect();
        let pools = self.pools_for(&devices)?;
        let mut x = self.input(usize::MAX, None);
        pools[0].install(|| {
            let bank = self.bank(0, tp);
            forward(&self.spec, &bank[0], &mut x, &pools)?;
            let mut times: Vec<f64> = (0..7)
                .map(|_| {
                    let t0 = Instant::now();
                    forward(&self.spec, &bank[0], &mut x, &pools)
                        .map(|_| t0.elapsed().as_secs_f64())
                })
                .collect::<Result<_>>()?;
            times.sort_by(f64::total_cmp);
            Ok(times[times.len() / 2])
        })
    }

    /// Profiles a stage of `layers` layers at `tp` the way serving runs it: `concurrent` stages
    /// at once, each on its own devices, `repeats` times each. The runner's layer time at `tp`
    /// becomes the `quantile` of the stage durations divided by `layers`, so with headroom 1 a
    /// stage profiled at [`StageCalibration::stage_s`] runs exactly `layers` layers.
    pub fn calibrate_stage(
        &mut self,
        tp: usize,
        layers: usize,
        concurrent: usize,
        repeats: usize,
        quantile_q: f64,
    ) -> Result<StageCalibration> {
        self.spec
            .validate("cpu", &[tp])
            .map_err(ExecutorError::Unsupported)?;
        let (layers, concurrent, repeats) = (layers.max(1), concurrent.max(1), repeats.max(1));
        let workers: Vec<Vec<u32>> = (0..concurrent)
            .map(|k| ((k * tp) as u32..((k + 1) * tp) as u32).collect())
            .collect();
        let this = &*self;
        let per_worker: Vec<Result<Vec<f64>>> = std::thread::scope(|scope| {
            let handles: Vec<_> = workers
                .iter()
                .enumerate()
                .map(|(k, devices)| {
                    scope.spawn(move || -> Result<Vec<f64>> {
                        let mut x = this.input(k, None);
                        // One warm-up stage (weights built, caches filled), then the samples.
                        this.run_stage_on(devices, k, tp, layers, &mut x)?;
                        (0..repeats)
                            .map(|_| {
                                let t0 = Instant::now();
                                this.run_stage_on(devices, k, tp, layers, &mut x)
                                    .map(|_| t0.elapsed().as_secs_f64())
                            })
                            .collect()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(ExecutorError::Unsupported(
                            "cpu runner: a calibration thread panicked".into(),
                        ))
                    })
                })
                .collect()
        });
        let mut samples_s = Vec::with_capacity(concurrent * repeats);
        for r in per_worker {
            samples_s.extend(r?);
        }
        samples_s.sort_by(f64::total_cmp);
        let stage_s = quantile(&samples_s, quantile_q);
        let mut layer_s = self.layer_times();
        if tp >= layer_s.len() {
            layer_s.resize(tp + 1, f64::NAN);
        }
        layer_s[tp] = stage_s / layers as f64;
        Ok(StageCalibration {
            samples_s,
            stage_s,
            layers,
        })
    }

    /// Multiplies the layer time at `tp` by `factor`: a stage profile scaled by the same factor
    /// then still runs the same number of layers.
    pub fn scale_layer_time(&self, tp: usize, factor: f64) {
        if let Some(t) = self.layer_times().get_mut(tp) {
            *t *= factor;
        }
    }

    fn layer_times(&self) -> RwLockWriteGuard<'_, Vec<f64>> {
        self.layer_s.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `n` layers of `model` at `tp` on `x` on the calling thread, kernels parallel over
    /// whatever rayon pool it is in (the raw-throughput path of the benches).
    pub fn run_layers(&self, model: usize, tp: usize, n: usize, x: &mut Array2<f32>) -> Result<()> {
        let bank = self.bank(model, tp);
        for i in 0..n {
            forward(&self.spec, &bank[i % bank.len()], x, &[])?;
        }
        Ok(())
    }

    fn pools_for(&self, devices: &[u32]) -> Result<Vec<Arc<ThreadPool>>> {
        let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        devices
            .iter()
            .map(|&d| {
                let d = d as usize;
                if pools.len() <= d {
                    pools.resize(d + 1, None);
                }
                if let Some(p) = &pools[d] {
                    return Ok(p.clone());
                }
                let p = Arc::new(
                    rayon::ThreadPoolBuilder::new()
                        .num_threads(1)
                        .thread_name(move |_| format!("cpu-device-{d}"))
                        .build()
                        .map_err(|e| {
                            ExecutorError::Unsupported(format!(
                                "cpu runner: cannot start the thread of device {d}: {e}"
                            ))
                        })?,
                );
                pools[d] = Some(p.clone());
                Ok(p)
            })
            .collect()
    }

    fn bank(&self, model: usize, tp: usize) -> Bank {
        let mut banks = self.banks.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, b)) = banks.iter().find(|(k, _)| *k == (model, tp)) {
            return b.clone();
        }
        let bank: Bank = Arc::new(LayerWeights::bank(&self.spec, model, tp));
        banks.push(((model, tp), bank.clone()));
        bank
    }
}

impl LayerRunner for CpuRunner {
    const NAME: &'static str = "cpu";

    fn layer_spec(&self) -> &LayerSpec {
        &self.spec
    }

    /// Measured seconds of one layer at `tp`, if calibrated.
    fn layer_time_s(&self, tp: usize) -> Option<f64> {
        let layer_s = self.layer_s.read().unwrap_or_else(|e| e.into_inner());
        layer_s.get(tp).copied().filter(|v| !v.is_nan())
    }

    /// Runs `n` layers of `model` as a stage on `devices` (one per shard), each shard inside its
    /// device's single-thread pool: what a stage worker does.
    fn run_stage_on(
        &self,
        devices: &[u32],
        model: usize,
        tp: usize,
        n: usize,
        x: &mut Array2<f32>,
    ) -> Result<()> {
        check_stage_devices("cpu", devices, tp)?;
        let pools = self.pools_for(devices)?;
        let bank = self.bank(model, tp);
        pools[0].install(|| {
            for i in 0..n {
                forward(&self.spec, &bank[i % bank.len()], x, &pools)?;
            }
            Ok(())
        })
    }
}
