//! Building a layer-level profile: cost every distinct operator of every layer kind at every
//! tensor-parallel degree and batch size, add the modelled collectives, and assemble the
//! solver's [`Profile`].

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use indexmap::IndexMap;
use plexserve_solver::{
    validate_profile, LayerCost, Profile, ProfileFile, ProfileSource, PROFILE_SCHEMA,
};

use crate::analytic::{gpu_model, GpuModel, GPUS};
use crate::error::{ProfilerError, Result};
use crate::link::LinkModel;
use crate::measure::{measure, GroupSpeed, MeasureOptions, SpeedCorrection};
use crate::ops::{activation_elements, layer_ops, layer_parameters, layer_sequence, LayerKind, Op};
use crate::spec::ModelSpec;
use crate::timer::{CpuClock, CpuTimer, CudaTimer, Pinned, Timer};
use plexserve_kernels::Dtype;

const GIB: f64 = (1u64 << 30) as f64;

/// Where operator costs come from.
#[derive(Debug, Clone, PartialEq)]
pub enum Device {
    /// Measured with the CPU kernels.
    Cpu,
    /// Measured on GPU `K` (`cuda:K`).
    Cuda(usize),
    /// Predicted by the roofline model of a named GPU (`analytic:NAME`).
    Analytic(&'static GpuModel),
}

impl Device {
    /// Parses `cpu`, `cuda`, `cuda:K` or `analytic:NAME`.
    pub fn parse(s: &str) -> Result<Device> {
        let bad = |message: String| ProfilerError::Device {
            given: s.to_string(),
            message,
        };
        match s.split_once(':') {
            None if s == "cpu" => Ok(Device::Cpu),
            None if s == "cuda" => Ok(Device::Cuda(0)),
            Some(("cuda", k)) => k.parse().map(Device::Cuda).map_err(|_| {
                bad(format!(
                    "expected a GPU ordinal after \"cuda:\", found \"{k}\""
                ))
            }),
            Some(("analytic", name)) => gpu_model(name).map(Device::Analytic).ok_or_else(|| {
                bad(format!(
                    "no analytic model of \"{name}\"; known GPUs: {}",
                    GPUS.iter().map(|g| g.name).collect::<Vec<_>>().join(", ")
                ))
            }),
            _ => Err(bad("expected cpu, cuda:K or analytic:NAME".into())),
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => write!(f, "cpu"),
            Device::Cuda(k) => write!(f, "cuda:{k}"),
            Device::Analytic(g) => write!(f, "analytic:{}", g.name),
        }
    }
}

/// How to measure.
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileOptions {
    /// Least warm-up samples of each operator; warm-up goes on until two consecutive samples
    /// agree within 5 % (see [`crate::measure`]).
    pub warmup: usize,
    /// Least measured samples of each operator, taken in rounds across operators; the median is
    /// kept.
    pub repeats: usize,
    /// Most measured samples of each operator: operators whose median is not known within ±1 %
    /// (95 % confidence) after `repeats` get more rounds, up to this many, as long as the extra
    /// rounds take less time than the first ones (see [`crate::measure`]).
    pub max_repeats: usize,
    /// Link model of tensor-parallel collectives; default: the GPU's own for analytic devices,
    /// [`LinkModel::default_measured`] otherwise.
    pub link: Option<LinkModel>,
    /// Largest f32 working set of one operator on the CPU, in bytes.
    pub max_cpu_operator_bytes: u64,
    /// Element type that replaces the spec's `dtype`: what GPU kernels run in and what weights
    /// and activations are counted in (the CPU always computes in f32).
    pub dtype: Option<Dtype>,
    /// Worker threads of the CPU kernels' row-wise work (a rayon pool of exactly this many);
    /// `None` uses the global pool. GEMM threads are matrixmultiply's (`MATMUL_NUM_THREADS`).
    pub threads: Option<usize>,
    /// What CPU samples are timed with; `None` chooses by the thread counts
    /// ([`CpuClock::for_threads`]: the measuring thread's CPU time when all work runs on it).
    pub cpu_clock: Option<CpuClock>,
    /// Placement epochs: every operator is prepared afresh this many times (new buffers) and
    /// its samples pooled over them (see [`MeasureOptions::epochs`]).
    pub epochs: usize,
    /// Placement epochs of short operators (0.1 ms or less per run) and the speed probe, when
    /// more than `epochs` (see [`MeasureOptions::short_epochs`]).
    pub short_epochs: usize,
    /// Hold the measuring thread on one CPU while it measures, when all work runs on it (the
    /// thread CPU clock); see [`Pinned`].
    pub pin_cpu: bool,
    /// How latencies are corrected for the machine's speed changing while it measures
    /// ([`SpeedCorrection`]); anything but `None` also measures the speed probe in every round.
    pub speed: SpeedCorrection,
    /// The speed probe's reference times (seconds per run of each [`crate::measure::speed_probe`]
    /// operator) that [`SpeedCorrection::Probe`] scales the profile to; `None`: this run's own,
    /// so the profile is at the machine's typical speed during the run. A profile's
    /// [`ProfileRun::probe_s`] (and its stamp) give the values to reuse.
    pub probe_reference_s: Option<Vec<f64>>,
}

impl Default for ProfileOptions {
    fn default() -> Self {
        ProfileOptions {
            warmup: 2,
            repeats: 7,
            max_repeats: 31,
            link: None,
            max_cpu_operator_bytes: 4 << 30,
            dtype: None,
            threads: None,
            cpu_clock: None,
            epochs: 3,
            short_epochs: 7,
            pin_cpu: true,
            speed: SpeedCorrection::Probe,
            probe_reference_s: None,
        }
    }
}

/// The cost of one distinct operator.
#[derive(Debug, Clone, PartialEq)]
pub struct OpCost {
    pub op: Op,
    pub median_s: f64,
    pub min_s: f64,
    pub max_s: f64,
    /// First and third quartile of the samples (equal to the median when predicted).
    pub q1_s: f64,
    pub q3_s: f64,
    /// Measured samples (0 for predicted or modelled costs).
    pub repeats: usize,
    /// Warm-up samples taken, and whether two consecutive ones agreed before the cap.
    pub warmup_samples: usize,
    pub settled: bool,
    /// Back-to-back runs folded into each sample.
    pub runs_per_sample: usize,
    /// Half-width of the median's 95 % confidence interval over the median (0 when predicted).
    pub ci_half_width: f64,
}

impl OpCost {
    /// `(q3 − q1) / median`: the spread of the middle half of the samples.
    pub fn iqr_ratio(&self) -> f64 {
        if self.median_s > 0.0 {
            (self.q3_s - self.q1_s) / self.median_s
        } else {
            0.0
        }
    }

    /// `(max − min) / median`.
    pub fn spread(&self) -> f64 {
        if self.median_s > 0.0 {
            (self.max_s - self.min_s) / self.median_s
        } else {
            0.0
        }
    }
}

/// A finished profile with the per-operator costs behind it.
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileRun {
    pub name: String,
    pub profile: Profile,
    /// Every distinct operator, in the order first costed.
    pub ops: Vec<OpCost>,
    /// Per layer kind, `latency_s[tp_index][batch_index]` (what every layer of that kind got).
    pub kinds: Vec<(LayerKind, Vec<Vec<f64>>)>,
    /// The speed correction applied.
    pub speed: SpeedCorrection,
    /// The speed probe's own times in this run, at the machine's typical speed during it
    /// (empty when no probe was measured).
    pub probe_s: Vec<f64>,
    /// The probe times the profile was scaled to ([`ProfileOptions::probe_reference_s`], else
    /// [`ProfileRun::probe_s`]).
    pub probe_reference_s: Vec<f64>,
    /// Per group of operators measured together, the speed each round found.
    pub groups: Vec<GroupSpeed>,
}

impl ProfileRun {
    /// The profile file (`plexserve/profile/v1`) holding this profile under the spec's name.
    pub fn to_file(&self) -> ProfileFile {
        let mut profiles = IndexMap::new();
        profiles.insert(self.name.clone(), self.profile.clone());
        ProfileFile {
            schema: PROFILE_SCHEMA.to_string(),
            profiles,
        }
    }

    /// Largest `(max − min) / median` over the measured operators.
    pub fn max_spread(&self) -> f64 {
        self.ops
            .iter()
            .filter(|c| c.repeats > 0)
            .map(OpCost::spread)
            .fold(0.0, f64::max)
    }

    /// Largest interquartile range over median among the measured operators.
    pub fn max_iqr_ratio(&self) -> f64 {
        self.ops
            .iter()
            .filter(|c| c.repeats > 0)
            .map(OpCost::iqr_ratio)
            .fold(0.0, f64::max)
    }
}

/// Costs operators: a timer measures them, an analytic model predicts them.
enum Coster {
    Measured(Box<dyn Timer>),
    Analytic(&'static GpuModel),
}

/// Profiles `spec` on `device`.
pub fn profile(spec: &ModelSpec, device: &Device, opts: &ProfileOptions) -> Result<ProfileRun> {
    let mut one = profile_with(spec, device, opts, &[opts.speed])?;
    Ok(one.remove(0))
}

/// Profiles `spec` on `device` once and assembles the profile under every [`SpeedCorrection`]
/// (in [`SpeedCorrection::ALL`]'s order) from the same samples, for side-by-side comparisons;
/// the speed probe is measured whatever `opts.speed` says.
pub fn profile_variants(
    spec: &ModelSpec,
    device: &Device,
    opts: &ProfileOptions,
) -> Result<Vec<ProfileRun>> {
    profile_with(spec, device, opts, &SpeedCorrection::ALL)
}

/// Profiles `spec` and assembles the profile under each of `speeds`, in that order. The speed
/// probe is measured when any of them needs it (without a correction it is not: the method as
/// it was before it).
fn profile_with(
    spec: &ModelSpec,
    device: &Device,
    opts: &ProfileOptions,
    speeds: &[SpeedCorrection],
) -> Result<Vec<ProfileRun>> {
    let probe = speeds.iter().any(|&s| s != SpeedCorrection::None);
    // Counts a typo can make astronomical (a run that never ends, a pool that never starts).
    const MAX_RUNS: usize = 10_000;
    for (what, n, least, most) in [
        ("repeats", opts.repeats, 1, MAX_RUNS),
        ("warmup", opts.warmup, 0, MAX_RUNS),
        ("epochs", opts.epochs, 1, MAX_RUNS),
        (
            "threads",
            opts.threads.unwrap_or(1),
            1,
            plexserve_solver::MAX_THREADS,
        ),
    ] {
        if !(least..=most).contains(&n) {
            return Err(ProfilerError::Option(format!(
                "{what}: expected {least} to {most}, found {n}"
            )));
        }
    }
    if let Some(r) = &opts.probe_reference_s {
        check_probe_reference(r)?;
        if !probe {
            return Err(ProfilerError::Option(
                "a speed-probe reference needs the probe speed correction".into(),
            ));
        }
    }
    match opts.threads {
        Some(n) => rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build()
            .map_err(|e| ProfilerError::Option(format!("cannot start {n} threads: {e}")))?
            .install(|| profile_here(spec, device, opts, probe, speeds)),
        None => profile_here(spec, device, opts, probe, speeds),
    }
}

fn profile_here(
    spec: &ModelSpec,
    device: &Device,
    opts: &ProfileOptions,
    probe: bool,
    speeds: &[SpeedCorrection],
) -> Result<Vec<ProfileRun>> {
    if let Some(l) = &opts.link {
        if !(l.bus_gb_per_s.is_finite()
            && l.bus_gb_per_s > 0.0
            && l.step_latency_s.is_finite()
            && l.step_latency_s >= 0.0)
        {
            return Err(ProfilerError::Option(
                "the link needs a positive bandwidth and a non-negative latency".into(),
            ));
        }
    }
    let spec = &ModelSpec {
        dtype: opts.dtype.unwrap_or(spec.dtype),
        ..spec.clone()
    };
    // Held until the profile is measured.
    let mut pinned: Option<Pinned> = None;
    let (coster, link) = match device {
        Device::Cpu => (
            Coster::Measured(Box::new({
                let mut t = CpuTimer::new(opts.max_cpu_operator_bytes);
                t.clock = opts.cpu_clock.unwrap_or(t.clock);
                // Only a thread that does all the work is worth pinning; pool workers elsewhere
                // would still move.
                if opts.pin_cpu && t.clock == CpuClock::Thread {
                    pinned = Pinned::current_thread(None);
                    t.pinned_cpu = pinned.as_ref().map(|p| p.cpu);
                }
                t
            })),
            opts.link
                .clone()
                .unwrap_or_else(LinkModel::default_measured),
        ),
        Device::Cuda(k) => (
            Coster::Measured(Box::new(CudaTimer::open(*k, spec.dtype)?)),
            opts.link
                .clone()
                .unwrap_or_else(LinkModel::default_measured),
        ),
        Device::Analytic(g) => (
            Coster::Analytic(g),
            opts.link.clone().unwrap_or_else(|| g.link()),
        ),
    };

    // All distinct operators are costed together so that measured ones can be interleaved.
    let distinct = distinct_ops(spec);
    let costed = cost_ops(&coster, &distinct, spec, opts, probe)?;
    drop(pinned);
    for c in &costed.costs(opts.speed) {
        tracing::debug!(op = %c.op, median_s = c.median_s, iqr = c.iqr_ratio(), "costed");
    }
    speeds
        .iter()
        .map(|&speed| {
            let parts = Parts {
                spec,
                device,
                coster: &coster,
                link: &link,
                opts,
                costed: &costed,
            };
            assemble(parts, speed)
        })
        .collect()
}

/// What a profile is assembled from, whichever speed correction its costs take.
#[derive(Clone, Copy)]
struct Parts<'a> {
    spec: &'a ModelSpec,
    device: &'a Device,
    coster: &'a Coster,
    link: &'a LinkModel,
    opts: &'a ProfileOptions,
    costed: &'a Costed,
}

/// The profile of `spec` from the costs under `speed`.
fn assemble(parts: Parts, speed: SpeedCorrection) -> Result<ProfileRun> {
    let Parts {
        spec, link, costed, ..
    } = parts;
    let costs = costed.costs(speed);
    let kinds = layer_kinds(spec);
    let memo: BTreeMap<&Op, usize> = costs.iter().enumerate().map(|(i, c)| (&c.op, i)).collect();
    let kind_latency: Vec<(LayerKind, Vec<Vec<f64>>)> = kinds
        .iter()
        .map(|&kind| {
            let table = spec
                .tp_degrees
                .iter()
                .map(|&tp| {
                    spec.batch_sizes
                        .iter()
                        .map(|&b| {
                            layer_ops(spec, kind, tp as usize, b as usize)
                                .into_iter()
                                .map(|op| match op {
                                    Op::AllReduce { bytes, tp } => link.all_reduce_s(bytes, tp),
                                    Op::AllGather { bytes, tp } => link.all_gather_s(bytes, tp),
                                    _ => costs[memo[&op]].median_s,
                                })
                                .sum()
                        })
                        .collect()
                })
                .collect();
            (kind, table)
        })
        .collect();

    let dt = spec.dtype.bytes() as f64;
    let mut block_index = 0;
    let layers: Vec<LayerCost> = layer_sequence(spec)
        .into_iter()
        .map(|kind| {
            let name = match kind {
                LayerKind::Embedding => "embedding".to_string(),
                LayerKind::Head => "head".to_string(),
                LayerKind::Block { .. } => {
                    block_index += 1;
                    format!("{}.{}", kind.label(), block_index - 1)
                }
            };
            let latency_s = kind_latency
                .iter()
                .find(|(k, _)| *k == kind)
                .map(|(_, t)| t.clone())
                .unwrap_or_default();
            LayerCost {
                name,
                latency_s,
                weight_gib: spec
                    .tp_degrees
                    .iter()
                    .map(|&t| layer_parameters(spec, kind, t as usize) as f64 * dt / GIB)
                    .collect(),
                activation_gib: spec
                    .batch_sizes
                    .iter()
                    .map(|&b| activation_elements(spec, kind, b as usize) as f64 * dt / GIB)
                    .collect(),
            }
        })
        .collect();

    let source = source_of(parts, speed, &costs);
    let profile = Profile {
        batch_sizes: spec.batch_sizes.clone(),
        configs: Vec::new(),
        tp_degrees: spec.tp_degrees.clone(),
        layers,
        source: Some(source),
    };
    validate_profile(
        Path::new("<profile being written>"),
        &format!("profiles.{}", spec.name),
        &profile,
    )?;
    Ok(ProfileRun {
        name: spec.name.clone(),
        profile,
        ops: costs,
        kinds: kind_latency,
        speed,
        probe_s: costed.probe_s.clone(),
        probe_reference_s: costed.probe_reference_s.clone(),
        groups: costed.groups.clone(),
    })
}

/// The distinct layer kinds of `spec`, sorted.
fn layer_kinds(spec: &ModelSpec) -> Vec<LayerKind> {
    let mut kinds: Vec<LayerKind> = layer_sequence(spec);
    kinds.sort();
    kinds.dedup();
    kinds
}

/// Every distinct compute operator of `spec`'s layers at its tp degrees and batch sizes, in the
/// order first met (tp, then layer kind, then batch): what a profile measures.
pub fn distinct_ops(spec: &ModelSpec) -> Vec<Op> {
    let mut distinct: Vec<Op> = Vec::new();
    let mut seen: std::collections::BTreeSet<Op> = std::collections::BTreeSet::new();
    for &tp in &spec.tp_degrees {
        for kind in layer_kinds(spec) {
            for &b in &spec.batch_sizes {
                for op in layer_ops(spec, kind, tp as usize, b as usize) {
                    if !op.is_communication() && seen.insert(op.clone()) {
                        distinct.push(op);
                    }
                }
            }
        }
    }
    distinct
}

fn measure_options(opts: &ProfileOptions, probe: bool) -> MeasureOptions {
    MeasureOptions {
        warmup: opts.warmup,
        repeats: opts.repeats,
        max_repeats: opts.max_repeats,
        epochs: opts.epochs,
        short_epochs: opts.short_epochs,
        probe,
        probe_reference_s: opts.probe_reference_s.clone(),
        ..MeasureOptions::default()
    }
}

/// Every operator's cost, its latency under each [`SpeedCorrection`] (the same samples; only
/// `median_s` differs), and what the speed correction found.
struct Costed {
    costs: Vec<OpCost>,
    /// Per operator, its latency under each correction (indexed by it as `usize`).
    estimates_s: Vec<[f64; 3]>,
    probe_s: Vec<f64>,
    probe_reference_s: Vec<f64>,
    groups: Vec<GroupSpeed>,
}

impl Costed {
    /// The operators' costs with their latencies under `speed`.
    fn costs(&self, speed: SpeedCorrection) -> Vec<OpCost> {
        let mut costs = self.costs.clone();
        for (c, e) in costs.iter_mut().zip(&self.estimates_s) {
            c.median_s = e[speed as usize];
        }
        costs
    }
}

fn cost_ops(
    coster: &Coster,
    ops: &[Op],
    spec: &ModelSpec,
    opts: &ProfileOptions,
    probe: bool,
) -> Result<Costed> {
    Ok(match coster {
        Coster::Measured(timer) => {
            let m = measure(timer.as_ref(), ops, &measure_options(opts, probe))?;
            let costs = m
                .ops
                .iter()
                .zip(ops)
                .map(|(m, op)| OpCost {
                    op: op.clone(),
                    median_s: m.median_s(),
                    min_s: m.samples.min_s(),
                    max_s: m.samples.max_s(),
                    q1_s: m.samples.quantile_s(0.25),
                    q3_s: m.samples.quantile_s(0.75),
                    repeats: m.samples.0.len(),
                    warmup_samples: m.warmup_samples,
                    settled: m.settled,
                    runs_per_sample: m.runs_per_sample,
                    ci_half_width: m.samples.median_ci_half_width(),
                })
                .collect();
            Costed {
                costs,
                estimates_s: m.ops.iter().map(|m| m.estimates_s).collect(),
                probe_s: m
                    .groups
                    .first()
                    .map(|g| g.probe_s.clone())
                    .unwrap_or_default(),
                probe_reference_s: m.probe_reference_s,
                groups: m.groups,
            }
        }
        Coster::Analytic(g) => {
            let costs: Vec<OpCost> = ops
                .iter()
                .map(|op| {
                    let t = g.op_s(op, spec.dtype);
                    OpCost {
                        op: op.clone(),
                        median_s: t,
                        min_s: t,
                        max_s: t,
                        q1_s: t,
                        q3_s: t,
                        repeats: 0,
                        warmup_samples: 0,
                        settled: true,
                        runs_per_sample: 0,
                        ci_half_width: 0.0,
                    }
                })
                .collect();
            Costed {
                estimates_s: costs.iter().map(|c| [c.median_s; 3]).collect(),
                costs,
                probe_s: Vec::new(),
                probe_reference_s: Vec::new(),
                groups: Vec::new(),
            }
        }
    })
}

/// The speed probe's times as `source.software.speed-probe-us` holds them and
/// `--probe-reference-us` takes them: microseconds per run, one per
/// [`crate::measure::speed_probe`] operator, comma-separated.
pub fn probe_us_text(probe_s: &[f64]) -> String {
    us_list(probe_s, ",")
}

/// Seconds as microseconds (3 decimals), joined by `sep`.
fn us_list(seconds: &[f64], sep: &str) -> String {
    seconds
        .iter()
        .map(|t| format!("{:.3}", t * 1e6))
        .collect::<Vec<_>>()
        .join(sep)
}

/// Reads [`probe_us_text`]'s format back into seconds per run (for
/// [`ProfileOptions::probe_reference_s`]): exactly one positive, finite number per probe
/// operator, so a reference from another probe (or a typo) is refused rather than scaling the
/// profile by a median over mismatched operators.
pub fn parse_probe_us(text: &str) -> Result<Vec<f64>> {
    let want = crate::measure::speed_probe().len();
    let bad = |why: String| {
        ProfilerError::Option(format!(
            "probe reference \"{text}\": {why}; expected {want} comma-separated positive numbers, microseconds per run of the speed probe's operators, as in a profile's source.software.speed-probe-us"
        ))
    };
    let values = text
        .split(',')
        .map(|v| match v.trim().parse::<f64>() {
            Ok(x) if x.is_finite() && x > 0.0 => Ok(x * 1e-6),
            _ => Err(bad(format!("\"{}\" is not a positive number", v.trim()))),
        })
        .collect::<Result<Vec<f64>>>()?;
    check_probe_reference(&values).map_err(|_| bad(format!("{} values", values.len())))?;
    Ok(values)
}

/// A probe reference must hold one positive, finite time per probe operator.
fn check_probe_reference(r: &[f64]) -> Result<()> {
    let want = crate::measure::speed_probe().len();
    if r.len() != want || !r.iter().all(|t| t.is_finite() && *t > 0.0) {
        return Err(ProfilerError::Option(format!(
            "the speed-probe reference must hold {want} positive times, one per probe operator (got {})",
            r.len()
        )));
    }
    Ok(())
}

/// What `speed` did, for `source.method`.
fn speed_note(speed: SpeedCorrection, costed: &Costed) -> String {
    let factors: Vec<f64> = costed
        .groups
        .iter()
        .flat_map(|g| g.round_factors.iter().copied())
        .collect();
    let lo = factors.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = factors.iter().copied().fold(0.0, f64::max);
    let us = |v: &[f64]| us_list(v, " / ");
    let rounds = format!(
        "speed correction by rounds: each sample divided by its round's speed factor (median over the round's operators of sample / the operator's level in the rounds that sampled every operator; a round of fewer than {} operators takes the previous factor), each epoch's median taken of the normalised samples, those combined (median of three epochs; beyond, a trimmed mean) and scaled by the median factor of the full rounds ({} rounds, factors {lo:.3}-{hi:.3})",
        crate::measure::MIN_ROUND_OPERATORS,
        factors.len()
    );
    match speed {
        SpeedCorrection::None => "no speed correction (medians of the raw samples)".into(),
        SpeedCorrection::Rounds => rounds,
        SpeedCorrection::Probe => format!(
            "{rounds}; then scaled to the speed probe ({}, measured in every round) at reference times {} us per run (this run's own {} us; scale {:.4})",
            crate::measure::speed_probe()
                .iter()
                .map(|o| o.to_string())
                .collect::<Vec<_>>()
                .join(" and "),
            us(&costed.probe_reference_s),
            us(&costed.probe_s),
            costed.groups.first().map_or(1.0, |g| g.probe_scale)
        ),
    }
}

fn source_of(parts: Parts, speed: SpeedCorrection, costs: &[OpCost]) -> ProfileSource {
    let Parts {
        spec,
        device,
        coster,
        link,
        opts,
        costed,
    } = parts;
    let blocks = spec.layers;
    let repeat_note = format!(
        "identical layers costed once and repeated ({blocks} transformer blocks, {} distinct operators)",
        costs.len()
    );
    let weights_note = format!("weights and activations counted in {}", spec.dtype.name());
    let (device_name, method, mut software) = match coster {
        Coster::Measured(t) => {
            let max_of = |f: fn(&OpCost) -> f64| costs.iter().map(f).fold(0.0, f64::max);
            let unsettled = costs.iter().filter(|c| !c.settled).count();
            let epochs = opts.epochs.max(1);
            let measure = measure_options(opts, false);
            let per_epoch = measure.per_epoch();
            let short = measure.per_short_epoch();
            let short_note = if measure.all_epochs() > epochs {
                format!(
                    ", {} for operators of {} ms or less per run and the speed probe (the later preparations hold only those; at least {}, up to {} samples per epoch)",
                    measure.all_epochs(),
                    crate::measure::SHORT_OPERATOR_S * 1e3,
                    short.repeats,
                    short.max_repeats
                )
            } else {
                String::new()
            };
            (
                t.device(),
                format!(
                    "measured per operator with {}: combined over {epochs} placement epoch(s){short_note} (the operators prepared afresh, with new buffers, for each) of each epoch's median (the median of three; with more epochs the mean of those left after dropping the max(1, n/4) lowest and as many highest), {}-{} samples per operator in all, taken in each epoch in rounds across operators (at least {}; more, up to {}, while the epoch's median's 95 % confidence interval is wider than +-{} % and its extra rounds have taken less time than its first ones; largest half-width over all samples {:.1} %), each sample back-to-back runs lasting at least {} ms (after one untimed run when it holds several), after warm-up until two consecutive samples agree within 5 % (later epochs: one warm-up sample; at least {} samples; {unsettled} of {} operators hit the warm-up cap); largest IQR/median {:.1} %, largest (max-min)/median {:.1} % (raw samples); {}; layer latency = sum of its operators' latencies; {repeat_note}; {}; {weights_note}",
                    t.method(),
                    costs.iter().map(|c| c.repeats).min().unwrap_or(0),
                    costs.iter().map(|c| c.repeats).max().unwrap_or(0),
                    per_epoch.repeats,
                    per_epoch.max_repeats,
                    MeasureOptions::default().ci_target * 100.0,
                    max_of(|c| c.ci_half_width) * 100.0,
                    t.min_sample_s() * 1e3,
                    opts.warmup,
                    costs.len(),
                    max_of(OpCost::iqr_ratio) * 100.0,
                    max_of(OpCost::spread) * 100.0,
                    speed_note(speed, costed),
                    link.describe()
                ),
                t.software(),
            )
        }
        Coster::Analytic(g) => (
            format!("{device}: {}", g.description),
            format!(
                "analytic roofline per operator (GEMM efficiency {} · d/(d+{}), memory efficiency {}, {} us per kernel; calibrated on V100 BERT latencies, see the profiler crate docs); {repeat_note}; {}; {weights_note}",
                crate::analytic::GEMM_EFFICIENCY,
                crate::analytic::GEMM_HALF_DIM,
                crate::analytic::MEMORY_EFFICIENCY,
                crate::analytic::LAUNCH_S * 1e6,
                link.describe()
            ),
            vec![("cost-model".to_string(), "plexserve-roofline-v1".to_string())],
        ),
    };
    if matches!(coster, Coster::Measured(_)) {
        software.push(("speed-correction".into(), speed.name().into()));
        // This run's own probe times, so that a later run can be expressed at this run's
        // machine speed (`--probe-reference-us`); a standalone run has no other use for them.
        if !costed.probe_s.is_empty() {
            software.push(("speed-probe-us".into(), probe_us_text(&costed.probe_s)));
        }
    }
    software.insert(
        0,
        (
            "plexserve-profiler".into(),
            env!("CARGO_PKG_VERSION").into(),
        ),
    );
    software.push(("rustc".into(), env!("PLEXSERVE_RUSTC_VERSION").into()));
    software.push((
        "os".into(),
        std::env::consts::OS.to_string() + "-" + std::env::consts::ARCH,
    ));
    ProfileSource {
        device: device_name,
        method,
        measured_at: crate::host::utc_now(),
        software: software.into_iter().collect(),
    }
}
