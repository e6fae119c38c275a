//! What the real runners (CPU, CUDA) compute: pre-LayerNorm transformer blocks with deterministic
//! random weights, sharded for tensor parallelism, and how many of them a stage runs.
//!
//! Both runners build their weights here from the same seeds, so the same request gives the same
//! answer on either (up to floating-point summation order), which is how the CUDA runner is
//! checked against the CPU one.

use ndarray::{Array1, Array2};

/// Shape of the transformer every real stage runs (one sequence per request, batch 1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LayerSpec {
    pub hidden: usize,
    pub heads: usize,
    /// Tokens per request.
    pub seq: usize,
    /// Distinct layers per (model, tp degree); a stage cycles through them, so weight memory stays
    /// bounded however many layers a long stage needs.
    pub weight_bank: usize,
    /// A stage runs `floor(profiled / (layer × headroom))` layers: the slack absorbs contention
    /// from other stage workers and the front end on a shared machine, as a serving profile
    /// should. 1 when the layer time was measured under serving conditions
    /// ([`crate::CpuRunner::calibrate_stage`]).
    pub headroom: f64,
}

impl Default for LayerSpec {
    fn default() -> Self {
        LayerSpec {
            hidden: 256,
            heads: 8,
            seq: 64,
            weight_bank: 4,
            headroom: 1.25,
        }
    }
}

impl LayerSpec {
    /// Checks the shape and that every tp degree in `tps` splits the heads evenly.
    pub(crate) fn validate(&self, runner: &str, tps: &[usize]) -> Result<(), String> {
        if self.hidden == 0 || self.heads == 0 || self.seq == 0 || self.hidden % self.heads != 0 {
            return Err(format!(
                "{runner} runner: hidden ({}) must be a positive multiple of heads ({}), seq positive",
                self.hidden, self.heads
            ));
        }
        for &tp in tps {
            if tp == 0 || self.heads % tp != 0 {
                return Err(format!(
                    "{runner} runner: tp {tp} must divide the {} heads",
                    self.heads
                ));
            }
        }
        Ok(())
    }

    pub(crate) fn head_dim(&self) -> usize {
        self.hidden / self.heads
    }

    /// Layers a stage of `profiled_s` runs when one layer takes `layer_s`.
    pub(crate) fn layers_for(&self, profiled_s: f64, layer_s: Option<f64>) -> usize {
        match layer_s {
            // The small epsilon keeps a stage profiled at exactly n layers at n, not n − 1.
            Some(l) if l > 0.0 => {
                ((profiled_s / (l * self.headroom.max(1.0)) + 1e-9).floor() as usize).max(1)
            }
            _ => 1,
        }
    }

    /// The `[seq, hidden]` activations of a request: its input, cycled to fill, or a
    /// deterministic pattern when it sent none.
    pub(crate) fn input(&self, model: usize, input: Option<&[f32]>) -> Array2<f32> {
        let (n, h) = (self.seq, self.hidden);
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

    /// The answer: the last token's first features, enough to check determinism without a large
    /// body.
    pub(crate) fn output(&self, activations: &[f32]) -> Option<Vec<f32>> {
        let h = self.hidden;
        let last = activations.len().checked_sub(h)?;
        Some(activations[last..last + h.min(8)].to_vec())
    }
}

/// SplitMix64: a tiny deterministic generator, so weights depend only on (model, tp, layer).
pub(crate) struct SplitMix(pub(crate) u64);

impl SplitMix {
    pub(crate) fn next_f32(&mut self) -> f32 {
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

/// One tensor-parallel shard of one layer: a slice of the heads and of the FFN columns.
#[derive(Debug)]
pub(crate) struct ShardWeights {
    /// `[hidden, 3·hidden/tp]`: the shard's query, key and value columns side by side.
    pub(crate) wqkv: Array2<f32>,
    pub(crate) wo: Array2<f32>,
    pub(crate) w1: Array2<f32>,
    pub(crate) b1: Array1<f32>,
    pub(crate) w2: Array2<f32>,
}

/// The host copy of one layer's weights.
#[derive(Debug)]
pub(crate) struct LayerWeights {
    pub(crate) ln1_g: Array1<f32>,
    pub(crate) ln1_b: Array1<f32>,
    pub(crate) ln2_g: Array1<f32>,
    pub(crate) ln2_b: Array1<f32>,
    pub(crate) b2: Array1<f32>,
    pub(crate) shards: Vec<ShardWeights>,
}

impl LayerWeights {
    pub(crate) fn new(spec: &LayerSpec, tp: usize, seed: u64) -> LayerWeights {
        let h = spec.hidden;
        let mut rng = SplitMix(seed);
        let scale = 1.0 / (h as f32).sqrt();
        let shards = (0..tp)
            .map(|_| ShardWeights {
                wqkv: rng.matrix(h, 3 * h / tp, scale),
                wo: rng.matrix(h / tp, h, scale),
                w1: rng.matrix(h, 4 * h / tp, scale),
                b1: Array1::zeros(4 * h / tp),
                w2: rng.matrix(4 * h / tp, h, scale * 0.5),
            })
            .collect();
        LayerWeights {
            ln1_g: Array1::ones(h),
            ln1_b: Array1::zeros(h),
            ln2_g: Array1::ones(h),
            ln2_b: Array1::zeros(h),
            b2: Array1::zeros(h),
            shards,
        }
    }

    /// The `weight_bank` layers of `model` at `tp`.
    pub(crate) fn bank(spec: &LayerSpec, model: usize, tp: usize) -> Vec<LayerWeights> {
        let seed = (model as u64) << 32 | (tp as u64) << 16;
        (0..spec.weight_bank.max(1))
            .map(|i| LayerWeights::new(spec, tp, seed | i as u64))
            .collect()
    }
}

/// The `q`-quantile of ascending `sorted` samples (nearest rank).
pub(crate) fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((q.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[i - 1]
}

/// A runner whose stages are real transformer layers (cpu, cuda): a stage profiled at
/// `profiled_s` runs [`LayerRunner::layers_for`] layers of [`LayerRunner::layer_spec`]'s shape on the
/// stage's devices. Every such runner is a [`StageRunner`](super::StageRunner) the same way.
pub trait LayerRunner: Send + Sync + std::fmt::Debug {
    /// The runner's name, as `serve --runner` spells it.
    const NAME: &'static str;
    /// The layer shape it computes.
    fn layer_spec(&self) -> &LayerSpec;
    /// Measured seconds of one layer at `tp`, if calibrated.
    fn layer_time_s(&self, tp: usize) -> Option<f64>;
    /// Runs `n` layers of `model` as a stage on `devices` (one per tensor-parallel shard).
    fn run_stage_on(
        &self,
        devices: &[u32],
        model: usize,
        tp: usize,
        n: usize,
        x: &mut Array2<f32>,
    ) -> crate::error::Result<()>;

    /// Layers a stage of `profiled_s` runs at `tp`.
    fn layers_for(&self, profiled_s: f64, tp: usize) -> usize {
        self.layer_spec()
            .layers_for(profiled_s, self.layer_time_s(tp))
    }

    /// The `[seq, hidden]` activations of a request: its input, cycled to fill, or a
    /// deterministic pattern when it sent none.
    fn input(&self, model: usize, input: Option<&[f32]>) -> Array2<f32> {
        self.layer_spec().input(model, input)
    }
}

/// A tp-`tp` stage runs one shard per device.
pub(crate) fn check_stage_devices(
    runner: &str,
    devices: &[u32],
    tp: usize,
) -> crate::error::Result<()> {
    if devices.len() == tp {
        Ok(())
    } else {
        Err(crate::error::ExecutorError::Unsupported(format!(
            "{runner} runner: a tp-{tp} stage needs {tp} devices, got {}",
            devices.len()
        )))
    }
}

impl<T: LayerRunner> super::StageRunner for T {
    fn name(&self) -> &'static str {
        T::NAME
    }

    /// Waits for the stage's start, rebuilds the `[seq, hidden]` activations (or the request's
    /// input on the first stage), runs the stage's layers, and stores the activations back for
    /// the next stage.
    fn run(
        &self,
        work: &mut super::StageWork<'_>,
        clock: &dyn crate::clock::Clock,
    ) -> crate::error::Result<f64> {
        use crate::error::ExecutorError;
        let spec = self.layer_spec();
        let layers = self.layers_for(work.profiled_s, work.tp);
        // A stage cannot start before its devices are handed over from an earlier segment.
        clock.sleep_until(work.start_s);
        let (n, h) = (spec.seq, spec.hidden);
        let stage_err = |reason: String| ExecutorError::Stage {
            group: work.group,
            stage: work.stage,
            reason,
        };
        let mut x = if work.activations.len() == n * h {
            Array2::from_shape_vec((n, h), std::mem::take(work.activations))
                .map_err(|e| stage_err(e.to_string()))?
        } else {
            spec.input(work.model, Some(work.activations))
        };
        self.run_stage_on(work.devices, work.model, work.tp, layers, &mut x)
            .map_err(|e| match e {
                ExecutorError::Stage { reason, .. } | ExecutorError::Unsupported(reason) => {
                    stage_err(reason)
                }
                other => other,
            })?;
        *work.activations = x.into_raw_vec_and_offset().0;
        Ok(clock.now_s())
    }

    fn initial_activations(&self, model: usize, input: Option<&[f32]>) -> Vec<f32> {
        self.input(model, input).into_raw_vec_and_offset().0
    }

    fn output(&self, _model: usize, activations: &[f32]) -> Option<Vec<f32>> {
        self.layer_spec().output(activations)
    }
}
