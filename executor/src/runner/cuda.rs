//! The GPU runner: the CPU runner's transformer layers on CUDA devices, through the kernels
//! crate's device API (cuBLAS GEMMs, NVRTC LayerNorm, GeLU and attention; f32).
//!
//! It is written once against `plexserve_kernels::cuda`, whose disabled twin has the same names:
//! without the `cuda` feature, or without a driver or a GPU, [`CudaRunner::new`] returns
//! `NotCompiled` or `NoDevice`, and no code here mentions the feature.
//!
//! Plan device `d` runs on GPU `d mod n` (n GPUs present; a warning says when devices share one).
//! Each stage shard keeps its layers' weights resident on its GPU; activations travel through the
//! host between the attention and MLP halves of a layer, where the tensor-parallel partial sums
//! are added (an all-reduce through host memory: the kernels crate has no device-to-device add).
//! Stages are sized like the CPU runner's: one layer is timed at start, end to end with those
//! transfers, and a stage runs `floor(profiled / (layer × headroom))` layers.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use ndarray::{s, Array2, ArrayView2};
use plexserve_kernels::cuda::{CudaDevice, GpuMatrix};
use plexserve_kernels::{AttentionShape, Dtype, KernelError};

use super::transformer::{check_stage_devices, LayerRunner, LayerSpec, LayerWeights};
use crate::error::{ExecutorError, Result};

/// An unavailable backend is a typed error; anything else is a stage failure.
fn unavailable(e: KernelError) -> ExecutorError {
    match e {
        KernelError::NotCompiled => ExecutorError::NotCompiled {
            runner: "cuda",
            feature: "cuda",
        },
        KernelError::NoDevice(reason) => ExecutorError::NoDevice {
            runner: "cuda",
            reason,
        },
        other => ExecutorError::NoDevice {
            runner: "cuda",
            reason: other.to_string(),
        },
    }
}

fn kernel(e: KernelError) -> ExecutorError {
    ExecutorError::Stage {
        group: usize::MAX,
        stage: usize::MAX,
        reason: e.to_string(),
    }
}

/// One shard of one layer, resident on a GPU.
#[derive(Debug)]
struct GpuShard {
    ln1_g: GpuMatrix,
    ln1_b: GpuMatrix,
    ln2_g: GpuMatrix,
    ln2_b: GpuMatrix,
    wq: GpuMatrix,
    wk: GpuMatrix,
    wv: GpuMatrix,
    wo: GpuMatrix,
    w1: GpuMatrix,
    b1: GpuMatrix,
    w2: GpuMatrix,
}

fn row(dev: &CudaDevice, v: &ndarray::Array1<f32>) -> std::result::Result<GpuMatrix, KernelError> {
    let view = v.view().insert_axis(ndarray::Axis(0));
    dev.upload(view, Dtype::F32)
}

impl GpuShard {
    fn upload(
        dev: &CudaDevice,
        layer: &LayerWeights,
        shard: usize,
    ) -> std::result::Result<GpuShard, KernelError> {
        let sh = &layer.shards[shard];
        let w = sh.wqkv.ncols() / 3;
        let up = |m: ArrayView2<f32>| dev.upload(m, Dtype::F32);
        Ok(GpuShard {
            ln1_g: row(dev, &layer.ln1_g)?,
            ln1_b: row(dev, &layer.ln1_b)?,
            ln2_g: row(dev, &layer.ln2_g)?,
            ln2_b: row(dev, &layer.ln2_b)?,
            wq: up(sh.wqkv.slice(s![.., 0..w]))?,
            wk: up(sh.wqkv.slice(s![.., w..2 * w]))?,
            wv: up(sh.wqkv.slice(s![.., 2 * w..]))?,
            wo: up(sh.wo.view())?,
            w1: up(sh.w1.view())?,
            b1: row(dev, &sh.b1)?,
            w2: up(sh.w2.view())?,
        })
    }

    /// This shard's share of the attention half: `LN1(x) → q, k, v → attention → · wo`.
    fn attention_part(
        &self,
        dev: &CudaDevice,
        x: ArrayView2<f32>,
        shape: AttentionShape,
    ) -> std::result::Result<Array2<f32>, KernelError> {
        let (n, h) = x.dim();
        let mut a = dev.upload(x, Dtype::F32)?;
        dev.layer_norm(&mut a, &self.ln1_g, &self.ln1_b, 1e-5)?;
        let w = self.wq.cols();
        let mut q = dev.zeros(n, w, Dtype::F32)?;
        let mut k = dev.zeros(n, w, Dtype::F32)?;
        let mut v = dev.zeros(n, w, Dtype::F32)?;
        dev.gemm(&a, &self.wq, &mut q)?;
        dev.gemm(&a, &self.wk, &mut k)?;
        dev.gemm(&a, &self.wv, &mut v)?;
        let mut o = dev.zeros(n, w, Dtype::F32)?;
        dev.attention(&q, &k, &v, &mut o, 1, shape)?;
        let mut y = dev.zeros(n, h, Dtype::F32)?;
        dev.gemm(&o, &self.wo, &mut y)?;
        // The download waits for the stream: the stage's time is the GPU's time.
        dev.download(&y)
    }

    /// This shard's share of the MLP half: `LN2(x) → · w1 + b1 → GeLU → · w2`.
    fn mlp_part(
        &self,
        dev: &CudaDevice,
        x: ArrayView2<f32>,
    ) -> std::result::Result<Array2<f32>, KernelError> {
        let (n, h) = x.dim();
        let mut b = dev.upload(x, Dtype::F32)?;
        dev.layer_norm(&mut b, &self.ln2_g, &self.ln2_b, 1e-5)?;
        let mut hidden = dev.zeros(n, self.w1.cols(), Dtype::F32)?;
        dev.gemm(&b, &self.w1, &mut hidden)?;
        dev.bias_gelu(&mut hidden, &self.b1)?;
        let mut y = dev.zeros(n, h, Dtype::F32)?;
        dev.gemm(&hidden, &self.w2, &mut y)?;
        dev.download(&y)
    }
}

/// One GPU; a stage holds its lock while it computes, so stages sharing a GPU take turns.
#[derive(Debug)]
struct Gpu {
    ordinal: usize,
    dev: Mutex<CudaDevice>,
}

impl Gpu {
    fn lock(&self) -> MutexGuard<'_, CudaDevice> {
        self.dev.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The resident layers of one (model, tp, shard, GPU): the shard's weights of the bank's layers.
type ShardBank = Arc<Vec<GpuShard>>;
/// Host weight banks by (model, tp).
type HostBanks = Vec<((usize, usize), Arc<Vec<LayerWeights>>)>;
/// Resident shard banks by (model, tp, shard, gpu index).
type ResidentBanks = Vec<((usize, usize, usize, usize), ShardBank)>;

/// Runs stages on CUDA devices.
#[derive(Debug)]
pub struct CudaRunner {
    spec: LayerSpec,
    gpus: Vec<Gpu>,
    /// Index into `gpus` of every plan device.
    gpu_of_device: Vec<usize>,
    /// Measured seconds per layer at each tp degree (index = tp).
    layer_s: Vec<f64>,
    /// Host weights by (model, tp): the bias added after the all-reduce lives here.
    host: Mutex<HostBanks>,
    /// Device weights by (model, tp, shard, gpu index).
    resident: Mutex<ResidentBanks>,
}

impl CudaRunner {
    /// Probes the GPUs, opens the ones the plan's `devices` map to, and times one layer at every
    /// tp degree in `tps`. `NotCompiled` without the `cuda` feature, `NoDevice` without a driver
    /// or a GPU.
    pub fn new(spec: LayerSpec, tps: &[usize], devices: usize) -> Result<CudaRunner> {
        let present = plexserve_kernels::cuda::devices().map_err(unavailable)?;
        spec.validate("cuda", tps)
            .map_err(ExecutorError::Unsupported)?;
        if spec.head_dim() > plexserve_kernels::cuda::MAX_HEAD_DIM {
            return Err(ExecutorError::Unsupported(format!(
                "cuda runner: head dimension {} exceeds the kernel's {}",
                spec.head_dim(),
                plexserve_kernels::cuda::MAX_HEAD_DIM
            )));
        }
        let n_gpus = present.len();
        let devices = devices.max(1);
        if devices > n_gpus {
            tracing::warn!(
                devices,
                gpus = n_gpus,
                "the plan has more devices than this machine has GPUs: device d runs on cuda:(d mod {n_gpus}), sharing it"
            );
        }
        let used = devices.min(n_gpus);
        let gpus = (0..used)
            .map(|i| {
                let ordinal = present[i].ordinal;
                let dev = CudaDevice::open(ordinal).map_err(unavailable)?;
                tracing::info!(ordinal, name = %dev.info().name, "cuda runner: GPU opened");
                Ok(Gpu {
                    ordinal,
                    dev: Mutex::new(dev),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let max_tp = tps.iter().copied().max().unwrap_or(1).max(1);
        let mut runner = CudaRunner {
            spec,
            gpu_of_device: (0..devices).map(|d| d % used).collect(),
            gpus,
            layer_s: vec![f64::NAN; max_tp + 1],
            host: Mutex::new(Vec::new()),
            resident: Mutex::new(Vec::new()),
        };
        for &tp in tps {
            if runner.layer_s[tp].is_nan() {
                runner.layer_s[tp] = runner.calibrate(tp)?;
            }
        }
        Ok(runner)
    }

    /// CUDA ordinal that plan device `d` runs on.
    pub fn ordinal_of(&self, d: u32) -> Option<usize> {
        self.gpu_of_device
            .get(d as usize)
            .map(|&g| self.gpus[g].ordinal)
    }

    /// Median wall time of one layer at `tp` on devices `0..tp`, transfers included.
    fn calibrate(&self, tp: usize) -> Result<f64> {
        let devices: Vec<u32> = (0..tp as u32).collect();
        let mut x = self.spec.input(usize::MAX, None);
        self.run_stage_on(&devices, 0, tp, 1, &mut x)?;
        let mut times: Vec<f64> = (0..7)
            .map(|_| {
                let t0 = Instant::now();
                self.run_stage_on(&devices, 0, tp, 1, &mut x)
                    .map(|_| t0.elapsed().as_secs_f64())
            })
            .collect::<Result<_>>()?;
        times.sort_by(f64::total_cmp);
        Ok(times[times.len() / 2])
    }

    fn gpu(&self, d: u32) -> Result<usize> {
        self.gpu_of_device.get(d as usize).copied().ok_or_else(|| {
            ExecutorError::Unsupported(format!(
                "cuda runner: device {d} is outside the {} devices it was opened for",
                self.gpu_of_device.len()
            ))
        })
    }

    fn host_bank(&self, model: usize, tp: usize) -> Arc<Vec<LayerWeights>> {
        let mut host = self.host.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, b)) = host.iter().find(|(k, _)| *k == (model, tp)) {
            return b.clone();
        }
        let bank = Arc::new(LayerWeights::bank(&self.spec, model, tp));
        host.push(((model, tp), bank.clone()));
        bank
    }

    fn shard_bank(&self, model: usize, tp: usize, shard: usize, gpu: usize) -> Result<ShardBank> {
        let key = (model, tp, shard, gpu);
        {
            let resident = self.resident.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((_, b)) = resident.iter().find(|(k, _)| *k == key) {
                return Ok(b.clone());
            }
        }
        let host = self.host_bank(model, tp);
        let uploaded = {
            let dev = self.gpus[gpu].lock();
            host.iter()
                .map(|layer| GpuShard::upload(&dev, layer, shard))
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(kernel)?
        };
        let bank = Arc::new(uploaded);
        let mut resident = self.resident.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, b)) = resident.iter().find(|(k, _)| *k == key) {
            // Another worker uploaded the same shard meanwhile; keep one copy.
            return Ok(b.clone());
        }
        resident.push((key, bank.clone()));
        Ok(bank)
    }

    /// Runs `f` for every shard on its GPU (in parallel when there are several) and returns the
    /// partial results in shard order.
    fn each_shard<F>(&self, shards: &[(usize, ShardBank)], f: F) -> Result<Vec<Array2<f32>>>
    where
        F: Fn(&CudaDevice, &[GpuShard]) -> std::result::Result<Array2<f32>, KernelError> + Sync,
    {
        let one = |(g, bank): &(usize, ShardBank)| {
            let dev = self.gpus[*g].lock();
            f(&dev, bank).map_err(kernel)
        };
        if shards.len() == 1 {
            return Ok(vec![one(&shards[0])?]);
        }
        std::thread::scope(|scope| {
            let one = &one;
            let handles: Vec<_> = shards[1..]
                .iter()
                .map(|s| scope.spawn(move || one(s)))
                .collect();
            let mut out = vec![one(&shards[0])];
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
}

impl LayerRunner for CudaRunner {
    const NAME: &'static str = "cuda";

    fn layer_spec(&self) -> &LayerSpec {
        &self.spec
    }

    /// Measured seconds of one layer at `tp`, if calibrated.
    fn layer_time_s(&self, tp: usize) -> Option<f64> {
        self.layer_s.get(tp).copied().filter(|v| !v.is_nan())
    }

    /// Runs `n` layers of `model` as a stage on `devices` (one per shard): what a stage worker
    /// does. Shards run in parallel, each on its device's GPU.
    fn run_stage_on(
        &self,
        devices: &[u32],
        model: usize,
        tp: usize,
        n: usize,
        x: &mut Array2<f32>,
    ) -> Result<()> {
        check_stage_devices("cuda", devices, tp)?;
        let shards: Vec<(usize, ShardBank)> = devices
            .iter()
            .enumerate()
            .map(|(i, &d)| {
                let g = self.gpu(d)?;
                Ok((g, self.shard_bank(model, tp, i, g)?))
            })
            .collect::<Result<_>>()?;
        let host = self.host_bank(model, tp);
        let shape = AttentionShape {
            heads: self.spec.heads / tp,
            kv_heads: self.spec.heads / tp,
            head_dim: self.spec.head_dim(),
            causal: true,
        };
        for i in 0..n {
            let l = i % host.len();
            let parts = self.each_shard(&shards, |dev, bank| {
                bank[l].attention_part(dev, x.view(), shape)
            })?;
            for p in parts {
                *x += &p;
            }
            let parts = self.each_shard(&shards, |dev, bank| bank[l].mlp_part(dev, x.view()))?;
            for p in parts {
                *x += &p;
            }
            *x += &host[l].b2;
        }
        Ok(())
    }
}
