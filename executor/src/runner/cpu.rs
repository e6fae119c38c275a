//! The CPU runner: real transformer layers (plexserve-kernels' GEMM, GeLU, LayerNorm and
//! attention) with deterministic random weights.
//!
//! An instance's profile says how long each stage takes; the CPU runner makes each stage do that
//! much real work. At start it measures one layer at every tensor-parallel degree of the plan,
//! and a stage then runs `floor(profiled / (layer × headroom))` layers (at least one). The
//! headroom keeps a stage within its profile while other workers share the CPU; when it still
//! runs over (a loaded or slower machine), the executor feeds the measured finish back to
//! admission.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use ndarray::{s, Array1, Array2};
use plexserve_kernels::{attention, bias_gelu, gemm, layer_norm, AttentionShape};

use super::{StageRunner, StageWork};
use crate::clock::Clock;
use crate::error::{ExecutorError, Result};

/// Shape of the transformer every CPU stage runs (one sequence per request, batch 1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CpuModelSpec {
    pub hidden: usize,
    pub heads: usize,
    /// Tokens per request.
    pub seq: usize,
    /// Distinct layers per (model, tp degree); a stage cycles through them, so weight memory stays
    /// bounded however many layers a long stage needs.
    pub weight_bank: usize,
    /// A stage runs `floor(profiled / (layer × headroom))` layers: the slack absorbs contention
    /// from other stage workers and the front end on a shared CPU, as a serving profile should.
    pub headroom: f64,
}

impl Default for CpuModelSpec {
    fn default() -> Self {
        CpuModelSpec {
            hidden: 256,
            heads: 8,
            seq: 64,
            weight_bank: 4,
            headroom: 1.25,
        }
    }
}

/// One tensor-parallel shard of one layer: a slice of the heads and of the FFN columns.
#[derive(Debug)]
struct Shard {
    wqkv: Array2<f32>,
    wo: Array2<f32>,
    w1: Array2<f32>,
    b1: Array1<f32>,
    w2: Array2<f32>,
}

#[derive(Debug)]
struct Layer {
    ln1_g: Array1<f32>,
    ln1_b: Array1<f32>,
    ln2_g: Array1<f32>,
    ln2_b: Array1<f32>,
    b2: Array1<f32>,
    shards: Vec<Shard>,
}

/// SplitMix64: a tiny deterministic generator, so weights depend only on (model, tp, layer).
struct SplitMix(u64);

impl SplitMix {
    fn next_f32(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        // Uniform in [-1, 1).
        (z >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    fn matrix(&mut self, rows: usize, cols: usize, scale: f32) -> Array2<f32> {
        Array2::from_shape_simple_fn((rows, cols), || self.next_f32() * scale)
    }
}

impl Layer {
    fn new(spec: &CpuModelSpec, tp: usize, seed: u64) -> Layer {
        let h = spec.hidden;
        let mut rng = SplitMix(seed);
        let scale = 1.0 / (h as f32).sqrt();
        let shards = (0..tp)
            .map(|_| Shard {
                wqkv: rng.matrix(h, 3 * h / tp, scale),
                wo: rng.matrix(h / tp, h, scale),
                w1: rng.matrix(h, 4 * h / tp, scale),
                b1: Array1::zeros(4 * h / tp),
                w2: rng.matrix(4 * h / tp, h, scale * 0.5),
            })
            .collect();
        Layer {
            ln1_g: Array1::ones(h),
            ln1_b: Array1::zeros(h),
            ln2_g: Array1::ones(h),
            ln2_b: Array1::zeros(h),
            b2: Array1::zeros(h),
            shards,
        }
    }

    /// One pre-LayerNorm block; shards run on their own threads and their partial sums are added
    /// (the all-reduce of tensor parallelism).
    fn forward(&self, spec: &CpuModelSpec, x: &mut Array2<f32>) -> Result<()> {
        let tp = self.shards.len();
        let head_dim = spec.hidden / spec.heads;
        let shape = AttentionShape {
            heads: spec.heads / tp,
            kv_heads: spec.heads / tp,
            head_dim,
            causal: true,
        };
        let mut a = x.clone();
        layer_norm(&mut a, self.ln1_g.view(), self.ln1_b.view(), 1e-5).map_err(kernel)?;
        let attn = |sh: &Shard| -> Result<Array2<f32>> {
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
        for part in shard_map(&self.shards, attn)? {
            *x += &part;
        }
        let mut b = x.clone();
        layer_norm(&mut b, self.ln2_g.view(), self.ln2_b.view(), 1e-5).map_err(kernel)?;
        let mlp = |sh: &Shard| -> Result<Array2<f32>> {
            let mut hidden = gemm(b.view(), sh.w1.view()).map_err(kernel)?;
            bias_gelu(&mut hidden, sh.b1.view()).map_err(kernel)?;
            gemm(hidden.view(), sh.w2.view()).map_err(kernel)
        };
        for part in shard_map(&self.shards, mlp)? {
            *x += &part;
        }
        *x += &self.b2;
        Ok(())
    }
}

fn kernel(e: plexserve_kernels::KernelError) -> ExecutorError {
    ExecutorError::Stage {
        group: usize::MAX,
        stage: usize::MAX,
        reason: e.to_string(),
    }
}

/// Runs `f` on every shard, one thread per shard when there are several (intra-op parallelism).
fn shard_map<F>(shards: &[Shard], f: F) -> Result<Vec<Array2<f32>>>
where
    F: Fn(&Shard) -> Result<Array2<f32>> + Sync,
{
    if shards.len() == 1 {
        return Ok(vec![f(&shards[0])?]);
    }
    std::thread::scope(|scope| {
        let handles: Vec<_> = shards.iter().map(|sh| scope.spawn(|| f(sh))).collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(ExecutorError::Stage {
                        group: usize::MAX,
                        stage: usize::MAX,
                        reason: "a tensor-parallel shard thread panicked".into(),
                    })
                })
            })
            .collect()
    })
}

type Bank = Arc<Vec<Layer>>;

/// Real transformer layers on the CPU, calibrated to the profile.
#[derive(Debug)]
pub struct CpuRunner {
    spec: CpuModelSpec,
    /// Measured seconds per layer at each tp degree (index = tp).
    layer_s: Vec<f64>,
    /// Weight banks by (model, tp), built on first use.
    banks: Mutex<Vec<((usize, usize), Bank)>>,
}

impl CpuRunner {
    /// Calibrates one layer at every tp degree in `tps`.
    pub fn new(spec: CpuModelSpec, tps: &[usize]) -> Result<CpuRunner> {
        if spec.hidden == 0 || spec.heads == 0 || spec.seq == 0 || spec.hidden % spec.heads != 0 {
            return Err(ExecutorError::Unsupported(format!(
                "cpu runner: hidden ({}) must be a positive multiple of heads ({}), seq positive",
                spec.hidden, spec.heads
            )));
        }
        let max_tp = tps.iter().copied().max().unwrap_or(1).max(1);
        for &tp in tps {
            if tp == 0 || spec.heads % tp != 0 {
                return Err(ExecutorError::Unsupported(format!(
                    "cpu runner: tp {tp} must divide the {} heads",
                    spec.heads
                )));
            }
        }
        let mut runner = CpuRunner {
            spec,
            layer_s: vec![f64::NAN; max_tp + 1],
            banks: Mutex::new(Vec::new()),
        };
        for &tp in tps {
            if runner.layer_s[tp].is_nan() {
                runner.layer_s[tp] = runner.calibrate(tp)?;
            }
        }
        Ok(runner)
    }

    /// Median time of one layer at `tp` over a few runs after a warm-up.
    fn calibrate(&self, tp: usize) -> Result<f64> {
        let layer = Layer::new(&self.spec, tp, 0xCA11_B8A7E);
        let mut x = self.input(usize::MAX, None);
        layer.forward(&self.spec, &mut x)?;
        let mut times: Vec<f64> = (0..7)
            .map(|_| {
                let t0 = Instant::now();
                let r = layer.forward(&self.spec, &mut x);
                r.map(|_| t0.elapsed().as_secs_f64())
            })
            .collect::<Result<_>>()?;
        times.sort_by(f64::total_cmp);
        Ok(times[times.len() / 2])
    }

    /// Measured seconds of one layer at `tp`, if calibrated.
    pub fn layer_time_s(&self, tp: usize) -> Option<f64> {
        self.layer_s.get(tp).copied().filter(|v| !v.is_nan())
    }

    /// Layers a stage of `profiled_s` runs at `tp`.
    pub fn layers_for(&self, profiled_s: f64, tp: usize) -> usize {
        match self.layer_time_s(tp) {
            Some(l) if l > 0.0 => {
                ((profiled_s / (l * self.spec.headroom.max(1.0))).floor() as usize).max(1)
            }
            _ => 1,
        }
    }

    /// Runs `n` layers of `model` at `tp` on `x` (also the raw-throughput path of the benches).
    pub fn run_layers(&self, model: usize, tp: usize, n: usize, x: &mut Array2<f32>) -> Result<()> {
        let bank = self.bank(model, tp);
        for i in 0..n {
            bank[i % bank.len()].forward(&self.spec, x)?;
        }
        Ok(())
    }

    fn bank(&self, model: usize, tp: usize) -> Bank {
        let mut banks = self.banks.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, b)) = banks.iter().find(|(k, _)| *k == (model, tp)) {
            return b.clone();
        }
        let seed = (model as u64) << 32 | (tp as u64) << 16;
        let bank: Bank = Arc::new(
            (0..self.spec.weight_bank.max(1))
                .map(|i| Layer::new(&self.spec, tp, seed | i as u64))
                .collect(),
        );
        banks.push(((model, tp), bank.clone()));
        bank
    }

    /// The `[seq, hidden]` activations of a request: its input, cycled to fill, or a
    /// deterministic pattern when it sent none.
    pub fn input(&self, model: usize, input: Option<&[f32]>) -> Array2<f32> {
        let (n, h) = (self.spec.seq, self.spec.hidden);
        match input {
            Some(v) if !v.is_empty() => {
                Array2::from_shape_fn((n, h), |(i, j)| v[(i * h + j) % v.len()])
            }
            _ => {
                let mut rng = SplitMix(model as u64 ^ 0x1A2B_3C4D);
                Array2::from_shape_simple_fn((n, h), || rng.next_f32())
            }
        }
    }
}

impl StageRunner for CpuRunner {
    fn name(&self) -> &'static str {
        "cpu"
    }

    fn run(&self, work: &mut StageWork<'_>, clock: &dyn Clock) -> Result<f64> {
        // A stage cannot start before its devices are handed over from an earlier segment.
        clock.sleep_until(work.start_s);
        let (n, h) = (self.spec.seq, self.spec.hidden);
        let mut x = if work.activations.len() == n * h {
            Array2::from_shape_vec((n, h), std::mem::take(work.activations)).map_err(|e| {
                ExecutorError::Stage {
                    group: work.group,
                    stage: work.stage,
                    reason: e.to_string(),
                }
            })?
        } else {
            self.input(work.model, Some(work.activations))
        };
        let layers = self.layers_for(work.profiled_s, work.tp);
        self.run_layers(work.model, work.tp, layers, &mut x)
            .map_err(|e| match e {
                ExecutorError::Stage { reason, .. } => ExecutorError::Stage {
                    group: work.group,
                    stage: work.stage,
                    reason,
                },
                other => other,
            })?;
        *work.activations = x.into_raw_vec_and_offset().0;
        Ok(clock.now_s())
    }

    fn initial_activations(&self, model: usize, input: Option<&[f32]>) -> Vec<f32> {
        self.input(model, input).into_raw_vec_and_offset().0
    }

    fn output(&self, _model: usize, activations: &[f32]) -> Option<Vec<f32>> {
        // The last token's first features: enough to check determinism without a large answer.
        let h = self.spec.hidden;
        let last = activations.len().checked_sub(h)?;
        Some(activations[last..last + h.min(8)].to_vec())
    }
}
