//! Profiler repeatability: profile the same spec several times and compare what each run would
//! write, per layer kind × tensor-parallel degree × batch size, and per operator.
//!
//! The acceptance bar is that two runs' medians agree within 5 % on a quiet machine; on a shared
//! one the report says how far apart they were, and the in-run spread (IQR/median) says how noisy
//! the machine was while measuring.

use crate::error::{ProfilerError, Result};
use crate::ops::{LayerKind, Op};
use crate::profile::{profile, Device, ProfileOptions, ProfileRun};
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
pub fn repeatability(
    spec: &ModelSpec,
    device: &Device,
    opts: &ProfileOptions,
    runs: usize,
) -> Result<(RepeatabilityReport, Vec<ProfileRun>)> {
    if runs < 2 {
        return Err(ProfilerError::Option(format!(
            "a repeatability check needs at least 2 runs, got {runs}"
        )));
    }
    let profiles = (0..runs)
        .map(|_| profile(spec, device, opts))
        .collect::<Result<Vec<_>>>()?;
    Ok((compare_runs(&profiles)?, profiles))
}
