//! How operators are measured, so that two profiling runs agree: warm-up until the timings
//! settle, samples long enough for the clock, repeats interleaved across operators, and more
//! repeats for the operators whose median is not yet pinned down.
//!
//! 1. Operators are prepared in groups that fit the timer's memory budget (all of a small
//!    model's operators form one group).
//! 2. Each operator's sample length is calibrated: enough back-to-back runs to last the timer's
//!    minimum sample time (2 ms on the CPU), at most [`MAX_RUNS_PER_SAMPLE`]; a sample's time is
//!    divided by its runs.
//! 3. Warm-up: samples are taken until two consecutive ones agree within
//!    [`MeasureOptions::settle_tolerance`] (and at least `warmup` of them), at most
//!    `warmup + MAX_EXTRA_WARMUP` — caches, page faults, thread pools and clock boosts settle.
//!    The calibration is redone on the settled time.
//! 4. Measured samples are taken in rounds: round r samples every operator of the group once,
//!    starting at a different operator each round. Slow drift of the machine and bursts of
//!    background load then touch every operator alike (a burst hits one sample of many operators
//!    instead of all samples of one), and the median discards a disturbed sample. A sample of
//!    several runs is preceded by one untimed run of the same operator, so it starts with that
//!    operator's data in cache and the thread pool awake rather than after another operator.
//! 5. After `repeats` rounds, operators whose median is not yet known to within
//!    [`MeasureOptions::ci_target`] (half-width of its distribution-free 95 % confidence
//!    interval, relative to the median) get further rounds among themselves, until it is, or
//!    they have `max_repeats` samples, or the extra rounds have taken as long as the first
//!    `repeats` rounds did (by the timer's clock; so the measuring takes at most about twice
//!    the fixed-repeat time).
//!
//! 6. All of the above is one placement epoch. With [`MeasureOptions::epochs`] > 1 the group's
//!    operators are then dropped and prepared afresh (new buffers, allocated behind a stagger so
//!    they land at other heap offsets) for the next epoch, which reuses the first epoch's runs
//!    per sample, warms up with one sample instead of waiting to settle, and takes its share of
//!    the samples. The kept latency is the median of the epochs' medians
//!    ([`Measured::median_s`]): each operator is measured in several buffer placements and
//!    several stretches of time seconds apart, and one unlucky placement (cache-set conflicts,
//!    4 KiB aliasing between an operator's buffers) or one slow stretch of the machine is
//!    outvoted.
//!
//! The kept statistic is the median (of the epochs' medians); the interquartile range, min/max and the confidence
//! interval's half-width are reported with it.

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
    /// Least measured samples per operator (rounds over all operators).
    pub repeats: usize,
    /// Most measured samples per operator (at least `repeats` are always taken).
    pub max_repeats: usize,
    /// Further rounds are taken for an operator until its median's 95 % confidence interval is
    /// within ± this fraction of the median.
    pub ci_target: f64,
    /// Warm-up ends when two consecutive samples differ by at most this fraction.
    pub settle_tolerance: f64,
    /// Placement epochs: the operators are prepared afresh this many times (new buffers at new
    /// addresses), each preparation measured with its share of the repeats, and the samples of
    /// all epochs pooled, so one placement of the buffers cannot decide an operator's median.
    pub epochs: usize,
}

impl Default for MeasureOptions {
    fn default() -> Self {
        MeasureOptions {
            warmup: 2,
            repeats: 7,
            max_repeats: 31,
            ci_target: 0.01,
            settle_tolerance: 0.05,
            epochs: 1,
        }
    }
}

impl MeasureOptions {
    /// What each placement epoch takes: its share of the least samples (rounded up, so all
    /// epochs together take at least `repeats`) and of the most (rounded down, so together they
    /// take at most `max_repeats` unless that is below the least).
    pub fn per_epoch(&self) -> MeasureOptions {
        let epochs = self.epochs.max(1);
        let repeats = self.repeats.div_ceil(epochs);
        MeasureOptions {
            repeats,
            max_repeats: (self.max_repeats / epochs).max(repeats),
            epochs: 1,
            ..self.clone()
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
    /// The median of each placement epoch's own samples, in epoch order.
    pub epoch_medians: Vec<f64>,
}

impl Measured {
    /// The operator's latency: the median of the epochs' medians (one epoch: of its samples).
    /// Not the median of all samples: an epoch whose placement was unlucky (say its buffers
    /// 4 KiB-aliased) is also the noisy one that gets extra rounds, and could then hold most of
    /// the pooled samples; as one of three medians it is outvoted.
    pub fn median_s(&self) -> f64 {
        match self.epoch_medians.len() {
            0 | 1 => self.samples.median_s(),
            _ => Samples(self.epoch_medians.clone()).median_s(),
        }
    }
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

struct Slot<'s> {
    op: &'s mut dyn PreparedOp,
    runs: usize,
    warmup_samples: usize,
    settled: bool,
    samples: Vec<f64>,
}

impl Slot<'_> {
    fn sample(&mut self) -> Result<f64> {
        if self.runs > 1 {
            // Untimed: brings this operator's data back into cache and wakes the thread pool
            // after other operators ran. A one-run sample is long enough not to need it.
            self.op.run_s(1)?;
        }
        Ok(self.op.run_s(self.runs)? / self.runs as f64)
    }

    fn precise(&self, opts: &MeasureOptions) -> bool {
        self.samples.len() >= opts.max_repeats.max(opts.repeats)
            || Samples(self.samples.clone()).median_ci_half_width() <= opts.ci_target
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

/// One sample of each of `slots[i]` for `i` in `which`, starting at the `round`-th of them;
/// returns the measured time the round took (timed and untimed runs, times their
/// per-run time), by the timer's own clock.
fn round(slots: &mut [Slot<'_>], which: &[usize], round: usize) -> Result<f64> {
    let n = which.len();
    let mut cost = 0.0;
    for j in 0..n {
        let slot = &mut slots[which[(round + j) % n]];
        let s = slot.sample()?;
        slot.samples.push(s);
        cost += s * (slot.runs + usize::from(slot.runs > 1)) as f64;
    }
    Ok(cost)
}

fn measure_group<T: Timer + ?Sized>(
    timer: &T,
    ops: &[Op],
    opts: &MeasureOptions,
) -> Result<Vec<Measured>> {
    let per_epoch = opts.per_epoch();
    let mut pooled: Vec<Measured> = Vec::new();
    for epoch in 0..opts.epochs.max(1) {
        // Held while the epoch's buffers are allocated, so they start at a different heap offset
        // than the previous epoch's (whose freed blocks would otherwise be handed back as they
        // were).
        let stagger = vec![0u8; epoch * EPOCH_STAGGER_BYTES];
        let mut prepared = ops
            .iter()
            .map(|op| timer.prepare(op))
            .collect::<Result<Vec<_>>>()?;
        let calibrated = (epoch > 0).then_some(&pooled[..]);
        let measured = measure_epoch(timer.min_sample_s(), &mut prepared, &per_epoch, calibrated)?;
        drop(prepared);
        drop(std::hint::black_box(stagger));
        if pooled.is_empty() {
            pooled = measured;
        } else {
            for (p, m) in pooled.iter_mut().zip(measured) {
                p.samples.0.extend(m.samples.0);
                p.epoch_medians.extend(m.epoch_medians);
                p.warmup_samples += m.warmup_samples;
            }
        }
    }
    Ok(pooled)
}

/// Bytes between the heap offsets of consecutive epochs' buffers: a page and a cache line, so
/// that neither the offsets within a page nor the pages repeat.
pub const EPOCH_STAGGER_BYTES: usize = 4096 + 64;

/// Measures operators already prepared (steps 2–5 above; `min_sample_s` is the timer's
/// [`Timer::min_sample_s`]). The operators keep their buffers, so measuring the same prepared
/// set twice separates the machine's drift from where the buffers were placed.
pub fn measure_prepared(
    min_sample_s: f64,
    prepared: &mut [Box<dyn PreparedOp + '_>],
    opts: &MeasureOptions,
) -> Result<Vec<Measured>> {
    measure_epoch(min_sample_s, prepared, opts, None)
}

/// [`measure_prepared`]; with `calibrated` (the same operators' measurement in an earlier
/// epoch) the warm-up until settled is replaced by one warm-up sample and the earlier runs per
/// sample are reused: the machine, the thread pool and the clock are warm already, and only the
/// new buffers need bringing into cache.
fn measure_epoch(
    min_sample: f64,
    prepared: &mut [Box<dyn PreparedOp + '_>],
    opts: &MeasureOptions,
    calibrated: Option<&[Measured]>,
) -> Result<Vec<Measured>> {
    let mut slots: Vec<Slot<'_>> = Vec::with_capacity(prepared.len());
    for (i, prepared) in prepared.iter_mut().enumerate() {
        // The first run pays for first touches; it calibrates roughly and warms.
        let first = prepared.run_s(1)?;
        let earlier = calibrated.and_then(|c| c.get(i));
        slots.push(Slot {
            op: &mut **prepared,
            runs: earlier.map_or_else(|| runs_for(min_sample, first), |m| m.runs_per_sample),
            warmup_samples: 0,
            settled: earlier.is_some_and(|m| m.settled),
            samples: Vec::with_capacity(opts.max_repeats.max(opts.repeats)),
        });
    }
    if calibrated.is_some() {
        // A one-run operator (2 ms or longer) is warm after its first run; a fast one gets a
        // warm-up sample, as cheap as one measured sample.
        for slot in slots.iter_mut().filter(|s| s.runs > 1) {
            slot.sample()?;
            slot.warmup_samples = 1;
        }
    }
    for slot in slots.iter_mut().filter(|_| calibrated.is_none()) {
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
    let all: Vec<usize> = (0..slots.len()).collect();
    let mut fixed_s = 0.0;
    for r in 0..opts.repeats {
        fixed_s += round(&mut slots, &all, r)?;
    }
    // Extra rounds are budgeted in the timer's clock, not the wall's, so the stopping point
    // depends on the measurements only.
    let mut extra_s = 0.0;
    let mut r = opts.repeats;
    loop {
        let open: Vec<usize> = all
            .iter()
            .copied()
            .filter(|&i| !slots[i].precise(opts))
            .collect();
        if open.is_empty() || extra_s >= fixed_s {
            break;
        }
        extra_s += round(&mut slots, &open, r)?;
        r += 1;
    }
    Ok(slots
        .into_iter()
        .map(|s| Measured {
            epoch_medians: vec![Samples(s.samples.clone()).median_s()],
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
        /// Per operator: timed calls after warm-up alternate 1× and (1 + noise)×.
        noise: Vec<f64>,
        log: Rc<RefCell<Vec<usize>>>,
    }

    struct ScriptedOp {
        index: usize,
        per_run_s: f64,
        noise: f64,
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
                c => 1.0 + self.noise * (c % 2) as f64,
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
            // Preparations are logged as 1000 + the operator.
            self.log.borrow_mut().push(1000 + rows);
            Ok(Box::new(ScriptedOp {
                index: rows,
                per_run_s: self.per_run_s[rows],
                noise: self.noise[rows],
                calls: 0,
                log: self.log.clone(),
            }))
        }
    }

    fn ops(n: usize) -> Vec<Op> {
        (0..n).map(|rows| Op::LayerNorm { rows, cols: 1 }).collect()
    }

    #[test]
    fn warm_up_waits_for_settled_timings_and_repeats_interleave() {
        let log = Rc::new(RefCell::new(Vec::new()));
        let timer = Scripted {
            per_run_s: vec![1e-5, 4e-3, 3e-4],
            noise: vec![0.0; 3],
            log: log.clone(),
        };
        let opts = MeasureOptions {
            warmup: 1,
            repeats: 5,
            ..MeasureOptions::default()
        };
        let m = measure_ops(&timer, &ops(3), &opts).unwrap();
        for (i, mi) in m.iter().enumerate() {
            assert!(mi.settled, "{i}");
            // Exact timings pin the median down at once: no extra rounds.
            assert_eq!(mi.samples.0.len(), 5);
            // Measured samples are the settled per-run time exactly.
            assert!(mi
                .samples
                .0
                .iter()
                .all(|&s| (s - timer.per_run_s[i]).abs() < 1e-15));
            assert!((mi.samples.median_s() / timer.per_run_s[i] - 1.0).abs() < 1e-12);
        }
        // Call 1 calibrates. Operator 0 folds 20 runs into a sample from the start, so each
        // warm-up sample is an untimed run (call 2, 2×) and a timed one (call 3, settled), and
        // the second sample agrees. Operators 1 and 2 start at one run per sample: calls 2 (2×),
        // 3 and 4 (settled, agreeing).
        assert_eq!(
            m.iter().map(|mi| mi.warmup_samples).collect::<Vec<_>>(),
            [2, 3, 3]
        );
        // Fast operators fold several runs into one sample; a slow one runs once.
        assert!(m[0].runs_per_sample >= 100, "{}", m[0].runs_per_sample);
        assert_eq!(m[1].runs_per_sample, 1);
        assert_eq!(m[2].runs_per_sample, 4);
        // The last calls are the rounds: each visits all three, in rotated order; a sample of
        // several runs is preceded by an untimed run of the same operator.
        let log = log.borrow();
        let rounds = &log[log.len() - 25..];
        #[rustfmt::skip]
        assert_eq!(rounds, &[
            0, 0, 1, 2, 2,
            1, 2, 2, 0, 0,
            2, 2, 0, 0, 1,
            0, 0, 1, 2, 2,
            1, 2, 2, 0, 0,
        ]);
    }

    #[test]
    fn noisy_operators_get_more_rounds_within_the_budget() {
        // Operator 0 is exact, operator 1 alternates between 1× and 1.3× its time: its median's
        // confidence interval stays wide, so it is sampled again, alone, until `max_repeats`.
        let log = Rc::new(RefCell::new(Vec::new()));
        let timer = Scripted {
            per_run_s: vec![4e-3, 4e-3],
            noise: vec![0.0, 0.3],
            log: log.clone(),
        };
        let opts = MeasureOptions {
            repeats: 7,
            max_repeats: 13,
            ..MeasureOptions::default()
        };
        let m = measure_ops(&timer, &ops(2), &opts).unwrap();
        assert_eq!(m[0].samples.0.len(), 7);
        assert_eq!(m[1].samples.0.len(), 13);
        assert!(!m[1].settled);
        assert!(m[1].samples.median_ci_half_width() > opts.ci_target);
        // The extra rounds hold operator 1 only.
        assert!(log.borrow()[log.borrow().len() - 6..]
            .iter()
            .all(|&i| i == 1));

        // Alone, its extra rounds may take only as long as its first 7 did: 7 more samples
        // (the 8th would exceed the budget), well short of a larger `max_repeats`.
        let timer = Scripted {
            per_run_s: vec![4e-3],
            noise: vec![0.3],
            log: log.clone(),
        };
        let opts = MeasureOptions {
            max_repeats: 31,
            ..opts
        };
        let m = measure_ops(&timer, &ops(1), &opts).unwrap();
        let n = m[0].samples.0.len();
        assert!((13..=15).contains(&n), "{n}");
    }

    #[test]
    fn epochs_prepare_afresh_and_pool_their_shares_of_the_samples() {
        let log = Rc::new(RefCell::new(Vec::new()));
        let timer = Scripted {
            per_run_s: vec![1e-5, 3e-4],
            noise: vec![0.0; 2],
            log: log.clone(),
        };
        let opts = MeasureOptions {
            repeats: 7,
            max_repeats: 31,
            epochs: 3,
            ..MeasureOptions::default()
        };
        let per = opts.per_epoch();
        assert_eq!((per.repeats, per.max_repeats, per.epochs), (3, 10, 1));
        let m = measure_ops(&timer, &ops(2), &opts).unwrap();
        for (i, mi) in m.iter().enumerate() {
            // Exact timings: each epoch takes its 3 samples, pooled to 9.
            assert_eq!(mi.samples.0.len(), 9, "{i}");
            assert!(mi.settled);
            // Only the first epoch warms up until settled (as one epoch would: see the first
            // test); later ones reuse its runs per sample after one warm-up sample on the new
            // buffers.
            assert_eq!(mi.warmup_samples, [2, 3][i] + 2, "{i}");
            assert!((mi.samples.median_s() / timer.per_run_s[i] - 1.0).abs() < 1e-12);
            assert_eq!(mi.epoch_medians.len(), 3);
            assert!((mi.median_s() / timer.per_run_s[i] - 1.0).abs() < 1e-12);
        }
        // The kept median is the middle epoch's: one epoch, however many samples it holds,
        // cannot move it.
        let lopsided = Measured {
            samples: Samples([vec![7.0; 10], vec![1.0; 3], vec![1.1; 3]].concat()),
            warmup_samples: 0,
            settled: true,
            runs_per_sample: 1,
            epoch_medians: vec![7.0, 1.0, 1.1],
        };
        assert_eq!(lopsided.samples.median_s(), 7.0);
        assert_eq!(lopsided.median_s(), 1.1);
        // Both operators are prepared afresh for each epoch, after the previous epoch's
        // samples: preparations, then that epoch's runs.
        let log = log.borrow();
        let prepared: Vec<usize> = log
            .iter()
            .enumerate()
            .filter(|(_, &x)| x >= 1000)
            .map(|(at, _)| at)
            .collect();
        assert_eq!(prepared.len(), 6);
        assert_eq!(prepared[0..2], [0, 1]);
        assert!(prepared[2] - prepared[1] > 9 && prepared[4] - prepared[3] > 9);
        assert!(m.iter().all(|mi| mi.runs_per_sample > 1));
        assert!(prepared.chunks(2).all(|c| c[1] == c[0] + 1));
        // Shares never exceed the most samples, and always reach the least.
        for (repeats, max_repeats, epochs) in [(3, 5, 3), (7, 31, 4), (1, 1, 3), (5, 4, 2)] {
            let o = MeasureOptions {
                repeats,
                max_repeats,
                epochs,
                ..MeasureOptions::default()
            };
            let p = o.per_epoch();
            assert!(p.repeats * epochs >= repeats);
            assert!(p.max_repeats >= p.repeats);
            assert!(p.max_repeats * epochs <= max_repeats.max(p.repeats * epochs));
        }
    }

    #[test]
    fn settling_is_relative() {
        assert!(settled(1.0, 1.04, 0.05));
        assert!(!settled(1.0, 1.06, 0.05));
        assert!(!settled(0.0, 0.0, 0.05));
    }

    #[test]
    fn median_confidence_interval() {
        // Up to 8 samples the interval is the whole range.
        let s = Samples(vec![1.0, 1.1, 0.9, 1.0, 1.0, 1.0, 1.0]);
        assert!((s.median_ci_half_width() - 0.1).abs() < 1e-12);
        // 25 samples: ranks 7 and 19 (1-based) bound it, so two wild samples at each end do
        // not widen it.
        let mut v = vec![0.1, 0.2, 5.0, 9.0];
        v.extend((0..21).map(|i| 1.0 + 0.001 * i as f64));
        let s = Samples(v);
        let mut sorted = s.0.clone();
        sorted.sort_by(f64::total_cmp);
        let want = (sorted[18] - sorted[6]) / (2.0 * s.median_s());
        assert!((s.median_ci_half_width() - want).abs() < 1e-12);
        assert!(s.median_ci_half_width() < 0.01);
        assert_eq!(Samples(vec![]).median_ci_half_width(), f64::INFINITY);
    }
}
