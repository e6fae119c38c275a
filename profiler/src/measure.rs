//! How operators are measured, so that two profiling runs agree: warm-up until the timings
//! settle, samples long enough for the clock, and repeats interleaved across operators.
//!
//! 1. Operators are prepared in groups that fit the timer's memory budget (all of a small
//!    model's operators form one group).
//! 2. Each operator's sample length is calibrated: enough back-to-back runs to last the timer's
//!    minimum sample time (2 ms on the CPU), at most [`MAX_RUNS_PER_SAMPLE`].
//! 3. Warm-up: samples are taken until two consecutive ones agree within
//!    [`MeasureOptions::settle_tolerance`] (and at least `warmup` of them), at most
//!    `warmup + MAX_EXTRA_WARMUP` — caches, page faults, thread pools and clock boosts settle.
//!    The calibration is redone on the settled time.
//! 4. Measured samples are taken round-robin: round r samples every operator of the group once,
//!    starting at a different operator each round. A burst of background load then touches one
//!    sample of many operators instead of all samples of one, and the median discards it.
//!
//! The kept statistic is the median; the interquartile range and min/max are reported with it.

use crate::error::Result;
use crate::ops::Op;
use crate::timer::{PreparedOp, Samples, Timer};

/// Most runs folded into one sample.
pub const MAX_RUNS_PER_SAMPLE: usize = 4096;
/// Warm-up samples allowed beyond the requested minimum while waiting for timings to settle.
pub const MAX_EXTRA_WARMUP: usize = 12;

/// How to measure.
#[derive(Debug, Clone, PartialEq)]
pub struct MeasureOptions {
    /// Least warm-up samples per operator.
    pub warmup: usize,
    /// Measured samples per operator.
    pub repeats: usize,
    /// Warm-up ends when two consecutive samples differ by at most this fraction.
    pub settle_tolerance: f64,
}

impl Default for MeasureOptions {
    fn default() -> Self {
        MeasureOptions {
            warmup: 2,
            repeats: 7,
            settle_tolerance: 0.05,
        }
    }
}

/// The measurement of one operator.
#[derive(Debug, Clone, PartialEq)]
pub struct Measured {
    /// Seconds per run, one entry per measured sample.
    pub samples: Samples,
    /// Warm-up samples taken before the timings settled (or the cap was hit).
    pub warmup_samples: usize,
    /// Whether warm-up ended because two samples agreed rather than at the cap.
    pub settled: bool,
    /// Back-to-back runs per sample.
    pub runs_per_sample: usize,
}

fn runs_for(min_sample_s: f64, per_run_s: f64) -> usize {
    if per_run_s > 0.0 {
        ((min_sample_s / per_run_s).ceil() as usize).clamp(1, MAX_RUNS_PER_SAMPLE)
    } else {
        MAX_RUNS_PER_SAMPLE
    }
}

/// Whether two consecutive samples agree within `tolerance` (relative to the smaller).
pub fn settled(previous_s: f64, current_s: f64, tolerance: f64) -> bool {
    let lo = previous_s.min(current_s);
    lo > 0.0 && (previous_s - current_s).abs() / lo <= tolerance
}

struct Slot<'a> {
    op: Box<dyn PreparedOp + 'a>,
    runs: usize,
    warmup_samples: usize,
    settled: bool,
    samples: Vec<f64>,
}

impl Slot<'_> {
    fn sample(&mut self) -> Result<f64> {
        Ok(self.op.run_s(self.runs)? / self.runs as f64)
    }
}

/// Measures every operator of `ops` (none of them communication) and returns their
/// measurements in the same order.
pub fn measure_ops<T: Timer + ?Sized>(
    timer: &T,
    ops: &[Op],
    opts: &MeasureOptions,
) -> Result<Vec<Measured>> {
    let mut out: Vec<Option<Measured>> = vec![None; ops.len()];
    let budget = timer.memory_budget().max(1);
    let mut start = 0;
    while start < ops.len() {
        // The longest run of operators from `start` that fits the budget (always at least one;
        // one operator larger than the budget is the timer's to refuse).
        let mut end = start + 1;
        let mut bytes = ops[start].host_elements() * 4;
        while end < ops.len() && bytes + ops[end].host_elements() * 4 <= budget {
            bytes += ops[end].host_elements() * 4;
            end += 1;
        }
        let group = measure_group(timer, &ops[start..end], opts)?;
        for (i, m) in group.into_iter().enumerate() {
            out[start + i] = Some(m);
        }
        start = end;
    }
    Ok(out.into_iter().flatten().collect())
}

fn measure_group<T: Timer + ?Sized>(
    timer: &T,
    ops: &[Op],
    opts: &MeasureOptions,
) -> Result<Vec<Measured>> {
    let min_sample = timer.min_sample_s();
    let mut slots: Vec<Slot<'_>> = Vec::with_capacity(ops.len());
    for op in ops {
        let mut prepared = timer.prepare(op)?;
        // The first run pays for first touches; it calibrates roughly and warms.
        let first = prepared.run_s(1)?;
        slots.push(Slot {
            op: prepared,
            runs: runs_for(min_sample, first),
            warmup_samples: 0,
            settled: false,
            samples: Vec::with_capacity(opts.repeats),
        });
    }
    for slot in &mut slots {
        let cap = opts.warmup + MAX_EXTRA_WARMUP;
        let mut previous: Option<f64> = None;
        while slot.warmup_samples < cap {
            let s = slot.sample()?;
            slot.warmup_samples += 1;
            let agree = previous.is_some_and(|p| settled(p, s, opts.settle_tolerance));
            previous = Some(s);
            if agree && slot.warmup_samples >= opts.warmup {
                slot.settled = true;
                break;
            }
        }
        if let Some(s) = previous {
            slot.runs = runs_for(min_sample, s);
        }
    }
    let n = slots.len();
    for round in 0..opts.repeats {
        for j in 0..n {
            let slot = &mut slots[(round + j) % n];
            let s = slot.sample()?;
            slot.samples.push(s);
        }
    }
    Ok(slots
        .into_iter()
        .map(|s| Measured {
            samples: Samples(s.samples),
            warmup_samples: s.warmup_samples,
            settled: s.settled,
            runs_per_sample: s.runs,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::rc::Rc;

    /// A fake timer whose operators take a scripted time per run, recording the order they ran.
    struct Scripted {
        per_run_s: Vec<f64>,
        log: Rc<RefCell<Vec<usize>>>,
    }

    struct ScriptedOp {
        index: usize,
        per_run_s: f64,
        calls: usize,
        log: Rc<RefCell<Vec<usize>>>,
    }

    impl PreparedOp for ScriptedOp {
        fn run_s(&mut self, runs: usize) -> Result<f64> {
            self.calls += 1;
            self.log.borrow_mut().push(self.index);
            // Cold at first (5×, then 2×), settled from the third call on.
            let cold = match self.calls {
                1 => 5.0,
                2 => 2.0,
                _ => 1.0,
            };
            Ok(self.per_run_s * cold * runs as f64)
        }
    }

    impl Timer for Scripted {
        fn device(&self) -> String {
            "scripted".into()
        }
        fn method(&self) -> String {
            "scripted".into()
        }
        fn software(&self) -> Vec<(String, String)> {
            Vec::new()
        }
        fn memory_budget(&self) -> u64 {
            u64::MAX
        }
        fn min_sample_s(&self) -> f64 {
            1e-3
        }
        fn prepare<'a>(&'a self, op: &Op) -> Result<Box<dyn PreparedOp + 'a>> {
            let Op::LayerNorm { rows, .. } = *op else {
                unreachable!()
            };
            Ok(Box::new(ScriptedOp {
                index: rows,
                per_run_s: self.per_run_s[rows],
                calls: 0,
                log: self.log.clone(),
            }))
        }
    }

    #[test]
    fn warm_up_waits_for_settled_timings_and_repeats_interleave() {
        let log = Rc::new(RefCell::new(Vec::new()));
        let timer = Scripted {
            per_run_s: vec![1e-5, 4e-3, 2e-4],
            log: log.clone(),
        };
        let ops: Vec<Op> = (0..3).map(|rows| Op::LayerNorm { rows, cols: 1 }).collect();
        let opts = MeasureOptions {
            warmup: 1,
            repeats: 5,
            settle_tolerance: 0.05,
        };
        let m = measure_ops(&timer, &ops, &opts).unwrap();
        for (i, mi) in m.iter().enumerate() {
            // Call 1 calibrates; warm-up samples are calls 2 (2×), 3 and 4 (settled, agreeing).
            assert!(mi.settled, "{i}");
            assert_eq!(mi.warmup_samples, 3, "{i}");
            assert_eq!(mi.samples.0.len(), 5);
            // Measured samples are the settled per-run time exactly.
            assert!(mi
                .samples
                .0
                .iter()
                .all(|&s| (s - timer.per_run_s[i]).abs() < 1e-15));
            assert!((mi.samples.median_s() / timer.per_run_s[i] - 1.0).abs() < 1e-12);
        }
        // Fast operators fold several runs into one sample; a slow one runs once.
        assert!(m[0].runs_per_sample >= 100, "{}", m[0].runs_per_sample);
        assert_eq!(m[1].runs_per_sample, 1);
        // The last 15 calls are the rounds: each round visits all three, in rotated order.
        let log = log.borrow();
        let rounds = &log[log.len() - 15..];
        assert_eq!(rounds, &[0, 1, 2, 1, 2, 0, 2, 0, 1, 0, 1, 2, 1, 2, 0]);
    }

    #[test]
    fn settling_is_relative() {
        assert!(settled(1.0, 1.04, 0.05));
        assert!(!settled(1.0, 1.06, 0.05));
        assert!(!settled(0.0, 0.0, 0.05));
    }
}
