//! Profiler repeatability: profile the same spec several times and compare what each run would
//! write, per layer kind × tensor-parallel degree × batch size, and per operator.
//!
//! The acceptance bar is that two runs' medians agree within 5 % on a quiet machine; on a shared
//! one the report says how far apart they were, and the in-run spread (IQR/median) says how noisy
//! the machine was while measuring.

use crate::error::{ProfilerError, Result};
use crate::measure::SpeedCorrection;
use crate::ops::{LayerKind, Op};
use crate::profile::{profile, profile_variants, Device, ProfileOptions, ProfileRun};
use crate::spec::ModelSpec;

/// One profile entry (a layer kind at one tp degree and batch size) across the runs.
#[derive(Debug, Clone, PartialEq)]
pub struct VariedLayer {
    pub kind: LayerKind,
    pub tp: u32,
    pub batch: u32,
    /// The entry's latency in each run, seconds.
    pub latency_s: Vec<f64>,
    /// `(max − min) / min` over the runs.
    pub rel_diff: f64,
}

/// One distinct operator's median across the runs.
#[derive(Debug, Clone, PartialEq)]
pub struct VariedOp {
    pub op: Op,
    pub median_s: Vec<f64>,
    /// `(max − min) / min` over the runs.
    pub rel_diff: f64,
    /// Largest IQR/median of this operator within one run.
    pub iqr_ratio: f64,
}

/// How far apart repeated profiles of one spec are.
#[derive(Debug, Clone, PartialEq)]
pub struct RepeatabilityReport {
    pub runs: usize,
    pub layers: Vec<VariedLayer>,
    /// Operators, the most varying first.
    pub ops: Vec<VariedOp>,
    /// Sum of all layers at the first tp degree and batch size, per run: one forward pass.
    pub model_s: Vec<f64>,
}

fn rel_diff(values: &[f64]) -> f64 {
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = values.iter().copied().fold(0.0, f64::max);
    if lo > 0.0 && lo.is_finite() {
        (hi - lo) / lo
    } else if hi == 0.0 {
        0.0
    } else {
        f64::INFINITY
    }
}

impl RepeatabilityReport {
    /// Largest relative difference between runs over all layer entries.
    pub fn max_layer_diff(&self) -> f64 {
        self.layers.iter().map(|l| l.rel_diff).fold(0.0, f64::max)
    }

    /// Mean relative difference over the layer entries.
    pub fn mean_layer_diff(&self) -> f64 {
        if self.layers.is_empty() {
            0.0
        } else {
            self.layers.iter().map(|l| l.rel_diff).sum::<f64>() / self.layers.len() as f64
        }
    }

    /// Median relative difference over the layer entries.
    pub fn median_layer_diff(&self) -> f64 {
        crate::timer::Samples(self.layers.iter().map(|l| l.rel_diff).collect()).median_s()
    }

    /// Relative difference of the whole forward pass between runs.
    pub fn model_diff(&self) -> f64 {
        rel_diff(&self.model_s)
    }

    /// Largest in-run IQR/median over the operators: how noisy the machine was.
    pub fn max_iqr_ratio(&self) -> f64 {
        self.ops.iter().map(|o| o.iqr_ratio).fold(0.0, f64::max)
    }

    /// Whether every layer entry agrees within `tolerance` across runs.
    pub fn within(&self, tolerance: f64) -> bool {
        self.max_layer_diff() <= tolerance
    }

    /// The entries' run-to-run differences per size class ([`SIZE_CLASSES`], by the entry's
    /// smallest latency over the runs): small entries are where measurement noise shows first.
    pub fn by_size(&self) -> Vec<SizeClass> {
        size_classes(self.layers.iter().map(|l| {
            let lo = l.latency_s.iter().copied().fold(f64::INFINITY, f64::min);
            (lo, l.rel_diff)
        }))
    }
}

/// Upper bounds (seconds, exclusive) of the size classes a repeatability summary is split into;
/// the last class is everything longer.
pub const SIZE_CLASSES: [f64; 3] = [1e-4, 1e-3, 1e-2];

/// Run-to-run differences of the entries of one size class.
#[derive(Debug, Clone, PartialEq)]
pub struct SizeClass {
    /// Latencies in `[from_s, to_s)`.
    pub from_s: f64,
    pub to_s: f64,
    /// The entries' `(max − min) / min`, ascending.
    pub diffs: Vec<f64>,
}

impl SizeClass {
    pub fn median(&self) -> f64 {
        crate::timer::Samples(self.diffs.clone()).median_s()
    }

    pub fn max(&self) -> f64 {
        self.diffs.last().copied().unwrap_or(0.0)
    }

    /// How many entries differ by at most `tolerance`.
    pub fn within(&self, tolerance: f64) -> usize {
        self.diffs.iter().filter(|&&d| d <= tolerance).count()
    }

    /// `"< 0.1 ms"`, `"0.1–1 ms"`, `">= 10 ms"`.
    pub fn label(&self) -> String {
        let ms = |s: f64| format!("{}", s * 1e3);
        if self.from_s <= 0.0 {
            format!("< {} ms", ms(self.to_s))
        } else if self.to_s.is_infinite() {
            format!(">= {} ms", ms(self.from_s))
        } else {
            format!("{}-{} ms", ms(self.from_s), ms(self.to_s))
        }
    }
}

impl std::fmt::Display for SizeClass {
    /// `"0.1-1 ms: 5 entries, run-to-run median 1.21 %, max 2.97 %, 5 within 5 %"`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:>9}: {:>3} entries, run-to-run median {:>5.2} %, max {:>6.2} %, {} within 5 %",
            self.label(),
            self.diffs.len(),
            self.median() * 100.0,
            self.max() * 100.0,
            self.within(0.05)
        )
    }
}

/// Splits `(latency_s, rel_diff)` pairs into the [`SIZE_CLASSES`] (empty classes included, so
/// summaries of several reports line up).
pub fn size_classes(entries: impl IntoIterator<Item = (f64, f64)>) -> Vec<SizeClass> {
    let mut classes: Vec<SizeClass> = (0..=SIZE_CLASSES.len())
        .map(|i| SizeClass {
            from_s: if i == 0 { 0.0 } else { SIZE_CLASSES[i - 1] },
            to_s: SIZE_CLASSES.get(i).copied().unwrap_or(f64::INFINITY),
            diffs: Vec::new(),
        })
        .collect();
    for (latency_s, diff) in entries {
        let i = SIZE_CLASSES.iter().take_while(|&&b| latency_s >= b).count();
        classes[i].diffs.push(diff);
    }
    for c in &mut classes {
        c.diffs.sort_by(f64::total_cmp);
    }
    classes
}

/// Compares profiles of one spec (same layer kinds, tp degrees, batch sizes and operators).
pub fn compare_runs(runs: &[ProfileRun]) -> Result<RepeatabilityReport> {
    let Some(first) = runs.first() else {
        return Err(ProfilerError::Option(
            "a repeatability report needs at least two runs".into(),
        ));
    };
    if runs.len() < 2 {
        return Err(ProfilerError::Option(
            "a repeatability report needs at least two runs".into(),
        ));
    }
    let same_shape = runs.iter().all(|r| {
        r.kinds.len() == first.kinds.len()
            && r.kinds
                .iter()
                .zip(&first.kinds)
                .all(|((ka, ta), (kb, tb))| {
                    ka == kb
                        && ta.len() == tb.len()
                        && ta.iter().zip(tb).all(|(ra, rb)| ra.len() == rb.len())
                })
            && r.ops.len() == first.ops.len()
            && r.ops.iter().zip(&first.ops).all(|(a, b)| a.op == b.op)
            && r.profile.tp_degrees == first.profile.tp_degrees
            && r.profile.batch_sizes == first.profile.batch_sizes
    });
    if !same_shape {
        return Err(ProfilerError::Option(
            "the runs do not profile the same layers and operators".into(),
        ));
    }
    let mut layers = Vec::new();
    for (ki, (kind, table)) in first.kinds.iter().enumerate() {
        for (ti, row) in table.iter().enumerate() {
            for bi in 0..row.len() {
                let latency_s: Vec<f64> = runs.iter().map(|r| r.kinds[ki].1[ti][bi]).collect();
                layers.push(VariedLayer {
                    kind: *kind,
                    tp: first.profile.tp_degrees[ti],
                    batch: first.profile.batch_sizes[bi],
                    rel_diff: rel_diff(&latency_s),
                    latency_s,
                });
            }
        }
    }
    let mut ops: Vec<VariedOp> = (0..first.ops.len())
        .map(|i| {
            let median_s: Vec<f64> = runs.iter().map(|r| r.ops[i].median_s).collect();
            VariedOp {
                op: first.ops[i].op.clone(),
                rel_diff: rel_diff(&median_s),
                iqr_ratio: runs
                    .iter()
                    .map(|r| r.ops[i].iqr_ratio())
                    .fold(0.0, f64::max),
                median_s,
            }
        })
        .collect();
    ops.sort_by(|a, b| b.rel_diff.total_cmp(&a.rel_diff));
    let model_s = runs
        .iter()
        .map(|r| {
            r.profile
                .layers
                .iter()
                .map(|l| l.latency_s[0][0])
                .sum::<f64>()
        })
        .collect();
    Ok(RepeatabilityReport {
        runs: runs.len(),
        layers,
        ops,
        model_s,
    })
}

/// Profiles `spec` on `device` `runs` times (at least 2) with the same options and compares.
/// With [`SpeedCorrection::Probe`] and no reference given, the later runs are scaled to the
/// first run's probe times: the probe is calibrated once, on the first run.
pub fn repeatability(
    spec: &ModelSpec,
    device: &Device,
    opts: &ProfileOptions,
    runs: usize,
) -> Result<(RepeatabilityReport, Vec<ProfileRun>)> {
    // Not all variants: the one entry is `opts.speed`'s.
    let (_, report, profiles) = repeatability_variants(spec, device, opts, runs, false)?.remove(0);
    Ok((report, profiles))
}

/// [`repeatability`] under every [`SpeedCorrection`] from the same runs (`all`: the speed
/// probe measured and every correction assembled; else only `opts.speed`, measured as
/// [`profile`] would), in [`SpeedCorrection::ALL`]'s order.
pub fn repeatability_variants(
    spec: &ModelSpec,
    device: &Device,
    opts: &ProfileOptions,
    runs: usize,
    all: bool,
) -> Result<Vec<(SpeedCorrection, RepeatabilityReport, Vec<ProfileRun>)>> {
    if runs < 2 {
        return Err(ProfilerError::Option(format!(
            "a repeatability check needs at least 2 runs, got {runs}"
        )));
    }
    let mut opts = opts.clone();
    // Per run, its profiles (one per correction, or just `opts.speed`'s).
    let mut per_run: Vec<Vec<ProfileRun>> = Vec::new();
    for _ in 0..runs {
        let variants = if all {
            profile_variants(spec, device, &opts)?
        } else {
            vec![profile(spec, device, &opts)?]
        };
        if opts.probe_reference_s.is_none() {
            opts.probe_reference_s = variants
                .first()
                .map(|r| r.probe_reference_s.clone())
                .filter(|p| !p.is_empty());
        }
        per_run.push(variants);
    }
    let variants = per_run[0].len();
    (0..variants)
        .map(|v| {
            let profiles: Vec<ProfileRun> = per_run.iter().map(|r| r[v].clone()).collect();
            Ok((profiles[0].speed, compare_runs(&profiles)?, profiles))
        })
        .collect()
}
