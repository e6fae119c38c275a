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
//!    the samples. The kept latency combines the epochs' medians ([`combine_epochs`]: their
//!    median for three epochs, a trimmed mean for more; [`Measured::median_s`]): each operator is measured in several buffer placements and
//!    several stretches of time seconds apart, and one unlucky placement (cache-set conflicts,
//!    4 KiB aliasing between an operator's buffers) or one slow stretch of the machine is
//!    outvoted.
//!
//! The kept statistic is the median (combined over the epochs); the interquartile range, min/max and the confidence
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
    /// Most measured samples per operator (at least `repeats` are always taken; short
    /// operators over more epochs take at least [`MIN_SHORT_EPOCH_SAMPLES`] per epoch).
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
    /// Placement epochs of *short* operators (at most [`SHORT_OPERATOR_S`] per run, so their
    /// samples hold many runs; the speed probe's too), when more than `epochs`: the later
    /// preparations hold only them. Such an operator can sit at one of two levels 5-11 % apart
    /// depending on where its buffers land (docs/profiler.md, "Session 7"); with three epochs
    /// the majority of three preparations decides which, with more the trimmed mean of the
    /// epochs ([`combine_epochs`]) moves by a fraction of the gap per preparation that
    /// changed level. Preparing them is cheap (small buffers), unlike a large GEMM's weights.
    pub short_epochs: usize,
    /// Measure the [`speed_probe`] operators in every round too, so that a group's times can be
    /// scaled to the probe's reference time ([`SpeedCorrection::Probe`]).
    pub probe: bool,
    /// The probe's reference seconds per run (one per [`speed_probe`] operator) that
    /// [`SpeedCorrection::Probe`] scales to; `None`: the first group's own probe times.
    pub probe_reference_s: Option<Vec<f64>>,
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
            short_epochs: 1,
            probe: false,
            probe_reference_s: None,
        }
    }
}

impl MeasureOptions {
    /// What each placement epoch takes: its share of the least samples (rounded up, so all
    /// epochs together take at least `repeats`) and of the most (rounded down, so together they
    /// take at most `max_repeats` unless that is below the least).
    pub fn per_epoch(&self) -> MeasureOptions {
        self.share(self.epochs)
    }

    /// [`MeasureOptions::per_epoch`] for short operators, measured over
    /// [`MeasureOptions::short_epochs`] epochs (if more than `epochs`): beyond `epochs`
    /// epochs each takes at least [`MIN_SHORT_EPOCH_SAMPLES`], so that every epoch has a median
    /// of its own rather than one sample.
    pub fn per_short_epoch(&self) -> MeasureOptions {
        let epochs = self.all_epochs();
        let mut share = self.share(epochs);
        if epochs > self.epochs.max(1) {
            share.repeats = share.repeats.max(MIN_SHORT_EPOCH_SAMPLES);
            share.max_repeats = share.max_repeats.max(share.repeats);
        }
        share
    }

    /// How many preparations a group gets: the larger of the two epoch counts.
    pub fn all_epochs(&self) -> usize {
        self.epochs.max(self.short_epochs).max(1)
    }

    fn share(&self, epochs: usize) -> MeasureOptions {
        let epochs = epochs.max(1);
        let repeats = self.repeats.div_ceil(epochs);
        MeasureOptions {
            repeats,
            max_repeats: (self.max_repeats / epochs).max(repeats),
            epochs: 1,
            short_epochs: 1,
            ..self.clone()
        }
    }
}

/// Operators at most this long per run are short: they take
/// [`MeasureOptions::short_epochs`] placement epochs.
pub const SHORT_OPERATOR_S: f64 = 1e-4;
/// Least samples per epoch of a short operator measured over more epochs than the others.
pub const MIN_SHORT_EPOCH_SAMPLES: usize = 2;

/// How an operator's latency is corrected for the machine's speed changing while it measures.
///
/// On a shared VM the (virtual) CPU gets faster or slower by several per cent from second to
/// second, all operators together (docs/profiler.md, "Session 6"). The samples are taken in
/// rounds (every operator once per round), so a round's samples share the machine's speed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SpeedCorrection {
    /// None: the median of each placement epoch's raw samples, then those combined
    /// ([`combine_epochs`]).
    None,
    /// Every sample is divided by its round's speed factor — the median, over the operators
    /// sampled in that round, of sample / that operator's provisional level ([`round_factors`]) —
    /// and the latency is the epochs' medians of the normalised samples combined, times the
    /// median factor of the rounds that sampled every operator (so it stays a time at the
    /// group's typical speed). Removes
    /// drift *within* a run, not a run that is slower throughout.
    Rounds,
    /// [`SpeedCorrection::Rounds`], then every latency of the group scaled by the speed probe's
    /// reference time over the probe's own (normalised) time: times are expressed relative to
    /// the machine's speed during this run and scaled to the speed of a reference, which
    /// removes a whole run being slower or faster too, as far as the probe's speed tracks the
    /// operators'. Without a reference (a first run) this is `Rounds`.
    Probe,
}

impl SpeedCorrection {
    pub const ALL: [SpeedCorrection; 3] = [
        SpeedCorrection::None,
        SpeedCorrection::Rounds,
        SpeedCorrection::Probe,
    ];

    pub fn name(self) -> &'static str {
        match self {
            SpeedCorrection::None => "none",
            SpeedCorrection::Rounds => "rounds",
            SpeedCorrection::Probe => "probe",
        }
    }

    /// `none`, `rounds` or `probe`.
    pub fn parse(s: &str) -> Option<SpeedCorrection> {
        SpeedCorrection::ALL.into_iter().find(|c| c.name() == s)
    }
}

/// The speed probe: eight fixed small operators of the kinds profiles are made of — four GEMMs
/// of different shapes, LayerNorm, bias + GeLU, causal attention and an embedding gather — all
/// cache-resident, 8 us to 0.7 ms per run on a CPU core (one 2 ms sample each per round). Their own times stay the same from profile
/// to profile, so a change in them is the machine's. Several, because a single operator's time
/// moves by itself from one preparation to the next (buffer placement: up to ~10 % on the
/// session-6 VM), and the median over eight is not moved by one or two of them.
pub fn speed_probe() -> Vec<Op> {
    let gemm = |m, k, n| Op::Gemm { m, k, n, count: 1 };
    vec![
        gemm(64, 128, 128),
        gemm(32, 256, 128),
        gemm(16, 128, 512),
        gemm(128, 64, 256),
        Op::LayerNorm {
            rows: 64,
            cols: 256,
        },
        Op::BiasGelu {
            rows: 64,
            cols: 512,
        },
        Op::Attention {
            batch: 1,
            sq: 64,
            skv: 64,
            heads: 4,
            kv_heads: 4,
            head_dim: 32,
            causal: true,
        },
        Op::Embedding {
            rows: 64,
            cols: 256,
            vocab: 1024,
        },
    ]
}

/// A round whose factor is estimated from fewer operators than this takes the factor of the
/// last round before it that had enough: with one or two operators the factor cannot tell the
/// machine's speed from those operators' own noise.
pub const MIN_ROUND_OPERATORS: usize = 3;

/// The measurement of one operator.
#[derive(Debug, Clone, PartialEq)]
pub struct Measured {
    /// Seconds per run, one entry per measured sample, in the order taken (epoch by epoch).
    pub samples: Samples,
    /// The round of its group each sample was taken in (index into the group's round factors).
    pub rounds: Vec<usize>,
    /// How many of the samples each placement epoch took, in epoch order.
    pub epoch_samples: Vec<usize>,
    /// Warm-up samples taken before the timings settled (or the cap was hit).
    pub warmup_samples: usize,
    /// Whether warm-up ended because two samples agreed rather than at the cap.
    pub settled: bool,
    /// Back-to-back runs per sample.
    pub runs_per_sample: usize,
    /// The latency under each [`SpeedCorrection`] (indexed by it as `usize`); all equal to
    /// [`Measured::median_s`] until [`correct_speed`] has run.
    pub estimates_s: [f64; 3],
}

impl Measured {
    /// The operator's latency: the epochs' medians combined ([`combine_epochs`]; one epoch: the
    /// median of its samples).
    /// Not the median of all samples: an epoch whose placement was unlucky (say its buffers
    /// 4 KiB-aliased) is also the noisy one that gets extra rounds, and could then hold most of
    /// the pooled samples; as one of three medians it is outvoted.
    pub fn median_s(&self) -> f64 {
        median_of_epochs(&self.samples.0, &self.epoch_samples)
    }

    /// The median of each placement epoch's own samples, in epoch order.
    pub fn epoch_medians(&self) -> Vec<f64> {
        epoch_medians(&self.samples.0, &self.epoch_samples)
    }

    /// The latency under `correction`.
    pub fn estimate_s(&self, correction: SpeedCorrection) -> f64 {
        self.estimates_s[correction as usize]
    }
}

/// The combined latency of the epochs' medians of `samples` (`epoch_samples[e]` consecutive
/// samples per epoch; one epoch or none given: the median of all), see [`combine_epochs`].
fn median_of_epochs(samples: &[f64], epoch_samples: &[usize]) -> f64 {
    if epoch_samples.len() <= 1 {
        return Samples(samples.to_vec()).median_s();
    }
    combine_epochs(&epoch_medians(samples, epoch_samples))
}

/// The median of each epoch's `epoch_samples[e]` consecutive samples.
fn epoch_medians(samples: &[f64], epoch_samples: &[usize]) -> Vec<f64> {
    let mut at = 0;
    epoch_samples
        .iter()
        .map(|&n| {
            let m = Samples(samples[at..at + n].to_vec()).median_s();
            at += n;
            m
        })
        .collect()
}

/// Combines the placement epochs' medians: the mean of those left after dropping the
/// `max(1, n / 4)` lowest and as many highest (n >= 3; fewer: their mean). Three epochs: the
/// middle one, the median. With more epochs this is a trimmed mean, not the median, because
/// an operator's time can sit at one of two levels a few per cent apart depending on where its
/// buffers land (tiny-gpt's LM head: 5-11 %, docs/profiler.md, "Session 7"): the median of the
/// epochs then *is* one of the two levels, whichever holds the majority of this run's
/// preparations, and two runs differ by the whole gap whenever their majorities differ. The
/// mean of the middle epochs moves by a fraction of the gap per epoch that changed level, while
/// the trimmed ends still discard one wild epoch (a 7x outlier of one preparation).
pub fn combine_epochs(medians: &[f64]) -> f64 {
    let mut m = medians.to_vec();
    m.sort_by(f64::total_cmp);
    let n = m.len();
    let drop = if n >= 3 { (n / 4).max(1) } else { 0 };
    let kept = &m[drop..n - drop];
    if kept.is_empty() {
        return 0.0;
    }
    kept.iter().sum::<f64>() / kept.len() as f64
}

/// What the speed correction of one group of operators found.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupSpeed {
    /// Per round, how slow the machine was relative to the group's typical speed (1.1: 10 %
    /// slower).
    pub round_factors: Vec<f64>,
    /// The median of the factors of the rounds that sampled every operator.
    pub median_factor: f64,
    /// The probe operators' normalised times at the group's typical speed (empty without a
    /// probe).
    pub probe_s: Vec<f64>,
    /// What [`SpeedCorrection::Probe`] multiplied the group's `Rounds` latencies by: the
    /// median over the probe operators of reference / own time (1 without a probe or
    /// reference).
    pub probe_scale: f64,
}

/// The round factors of a group (see [`SpeedCorrection::Rounds`]): `rounds` rounds, every
/// sample of `measured` tagged with its round.
///
/// An operator's provisional level is its median over the *full* rounds (those that sampled
/// every operator), not over all its samples: an operator that got extra rounds during a slow
/// stretch would otherwise have a level that is slow too, and the extra rounds — where only such
/// operators and the probe are sampled — would look normal. In the full rounds every operator
/// is present, so the levels are anchored to each other. Two passes: the second takes the
/// levels from the samples normalised by the first pass's factors.
pub fn round_factors(measured: &[Measured], rounds: usize) -> Vec<f64> {
    let full = full_rounds(measured, rounds);
    let mut factors = vec![1.0; rounds];
    for _pass in 0..2 {
        let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); rounds];
        for m in measured {
            let tagged = || m.samples.0.iter().zip(&m.rounds);
            let in_full: Vec<f64> = tagged()
                .filter(|(_, &r)| full[r])
                .map(|(&s, &r)| s / factors[r])
                .collect();
            let level = if in_full.is_empty() {
                Samples(tagged().map(|(&s, &r)| s / factors[r]).collect()).median_s()
            } else {
                Samples(in_full).median_s()
            };
            if level > 0.0 {
                for (&s, &r) in tagged() {
                    ratios[r].push(s / level);
                }
            }
        }
        let mut last = 1.0;
        factors = ratios
            .into_iter()
            .map(|r| {
                let n = r.len();
                let f = Samples(r).median_s();
                // A zero factor (most samples below the clock's resolution) would divide by 0.
                if n >= MIN_ROUND_OPERATORS && f > 0.0 && f.is_finite() {
                    last = f;
                }
                last
            })
            .collect();
    }
    factors
}

/// Which of `rounds` rounds sampled every operator of `measured`.
fn full_rounds(measured: &[Measured], rounds: usize) -> Vec<bool> {
    let mut present = vec![0usize; rounds];
    for m in measured {
        for &r in &m.rounds {
            present[r] += 1;
        }
    }
    present.iter().map(|&n| n == measured.len()).collect()
}

/// Fills in `estimates_s` of a group's operators (`measured`; the last `probes` of them are the
/// speed probe's, in [`speed_probe`] order) from their samples and rounds (`rounds` rounds in
/// all). `reference_s`: the probe's reference times; `None` scales to the group's own typical
/// speed (and the returned `probe_s` can serve as the reference of later groups and runs).
pub fn correct_speed(
    measured: &mut [Measured],
    probes: usize,
    rounds: usize,
    reference_s: Option<&[f64]>,
) -> GroupSpeed {
    let factors = round_factors(measured, rounds);
    // The typical speed is the full rounds' (time spread evenly over the operators), not that of
    // the extra rounds, which may be most rounds.
    let full = full_rounds(measured, rounds);
    let in_full: Vec<f64> = (0..rounds)
        .filter(|&r| full[r])
        .map(|r| factors[r])
        .collect();
    let median_factor = match (in_full.is_empty(), factors.is_empty()) {
        (false, _) => Samples(in_full).median_s(),
        (true, false) => Samples(factors.clone()).median_s(),
        (true, true) => 1.0,
    };
    let normalised: Vec<f64> = measured
        .iter()
        .map(|m| {
            let n: Vec<f64> = m
                .samples
                .0
                .iter()
                .zip(&m.rounds)
                .map(|(&s, &r)| s / factors[r])
                .collect();
            median_of_epochs(&n, &m.epoch_samples)
        })
        .collect();
    let probe_norm = &normalised[measured.len() - probes..];
    let probe_s: Vec<f64> = probe_norm.iter().map(|p| p * median_factor).collect();
    // Relative to the normalised times (those at factor 1).
    let scale = match reference_s {
        Some(r) if probes > 0 && r.len() == probes && probe_norm.iter().all(|&p| p > 0.0) => {
            Samples(r.iter().zip(probe_norm).map(|(r, p)| r / p).collect()).median_s()
        }
        _ => median_factor,
    };
    for (m, n) in measured.iter_mut().zip(&normalised) {
        m.estimates_s = [m.median_s(), n * median_factor, n * scale];
    }
    GroupSpeed {
        round_factors: factors,
        median_factor,
        probe_s,
        probe_scale: scale / median_factor,
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
    /// Its share of the samples in this epoch (least, most): short operators' differ.
    share: (usize, usize),
    runs: usize,
    warmup_samples: usize,
    settled: bool,
    samples: Vec<f64>,
    rounds: Vec<usize>,
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
        self.samples.len() >= self.share.1.max(self.share.0)
            || Samples(self.samples.clone()).median_ci_half_width() <= opts.ci_target
    }
}

/// A measurement of operators with the speed correction applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Measurement {
    /// The operators', in the order given.
    pub ops: Vec<Measured>,
    /// Per group of operators measured together.
    pub groups: Vec<GroupSpeed>,
    /// The probe times [`SpeedCorrection::Probe`] scaled to: the given reference, else the
    /// first group's own (empty without a probe). Pass it as
    /// [`MeasureOptions::probe_reference_s`] to express another measurement at this one's speed.
    pub probe_reference_s: Vec<f64>,
}

/// Measures every operator of `ops` (none of them communication) and returns their
/// measurements in the same order.
pub fn measure_ops<T: Timer + ?Sized>(
    timer: &T,
    ops: &[Op],
    opts: &MeasureOptions,
) -> Result<Vec<Measured>> {
    Ok(measure(timer, ops, opts)?.ops)
}

/// [`measure_ops`], with the round factors and the probe's times.
pub fn measure<T: Timer + ?Sized>(
    timer: &T,
    ops: &[Op],
    opts: &MeasureOptions,
) -> Result<Measurement> {
    let mut out: Vec<Option<Measured>> = vec![None; ops.len()];
    let mut groups = Vec::new();
    let probe = if opts.probe {
        speed_probe()
    } else {
        Vec::new()
    };
    let mut reference = opts.probe_reference_s.clone();
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
        let group_ops: Vec<Op> = ops[start..end].iter().chain(&probe).cloned().collect();
        let (mut group, rounds) = measure_group(timer, &group_ops, probe.len(), opts)?;
        let speed = correct_speed(&mut group, probe.len(), rounds, reference.as_deref());
        // Later groups are scaled to the first one's probe times.
        if reference.is_none() && !probe.is_empty() {
            reference = Some(speed.probe_s.clone());
        }
        groups.push(speed);
        for (i, m) in group.into_iter().take(end - start).enumerate() {
            out[start + i] = Some(m);
        }
        start = end;
    }
    Ok(Measurement {
        ops: out.into_iter().flatten().collect(),
        groups,
        probe_reference_s: reference.unwrap_or_default(),
    })
}

/// One sample of each of `slots[i]` for `i` in `which`, starting at the `round`-th of them, the
/// samples tagged `tag`; returns the measured time the round took (timed and untimed runs, times
/// their per-run time), by the timer's own clock, of the slots before `probes_from` (the probe's
/// time is not counted in the extra rounds' budget, so the probe does not change how many
/// samples the operators get).
fn round(
    slots: &mut [Slot<'_>],
    which: &[usize],
    round: usize,
    tag: usize,
    probes_from: usize,
) -> Result<f64> {
    let n = which.len();
    let mut cost = 0.0;
    for j in 0..n {
        let i = which[(round + j) % n];
        let slot = &mut slots[i];
        let s = slot.sample()?;
        slot.samples.push(s);
        slot.rounds.push(tag);
        if i < probes_from {
            cost += s * (slot.runs + usize::from(slot.runs > 1)) as f64;
        }
    }
    Ok(cost)
}

/// Measures one group (the last `probes` of `ops` being the speed probe's) over all its epochs;
/// returns the measurements and how many rounds were taken.
fn measure_group<T: Timer + ?Sized>(
    timer: &T,
    ops: &[Op],
    probes: usize,
    opts: &MeasureOptions,
) -> Result<(Vec<Measured>, usize)> {
    let shares = Shares {
        long: opts.per_epoch(),
        short: opts.per_short_epoch(),
        short_runs: runs_for(timer.min_sample_s(), SHORT_OPERATOR_S),
    };
    let mut pooled: Vec<Measured> = Vec::new();
    let mut rounds = 0;
    for epoch in 0..opts.all_epochs() {
        // The first `epochs` preparations hold every operator, later ones only the short ones
        // (known by their runs per sample) and the probe, which is in every round.
        let part: Vec<usize> = (0..ops.len())
            .filter(|&i| {
                epoch < opts.epochs.max(1)
                    || i >= ops.len() - probes
                    || pooled[i].runs_per_sample >= shares.short_runs
            })
            .collect();
        // Held while the epoch's buffers are allocated, so they start at a different heap offset
        // than the previous epoch's (whose freed blocks would otherwise be handed back as they
        // were).
        let stagger = vec![0u8; epoch * EPOCH_STAGGER_BYTES];
        let mut prepared = part
            .iter()
            .map(|&i| timer.prepare(&ops[i]))
            .collect::<Result<Vec<_>>>()?;
        let calibrated: Vec<Measured> = part
            .iter()
            .filter_map(|&i| pooled.get(i).cloned())
            .collect();
        let (measured, taken) = measure_epoch(
            timer.min_sample_s(),
            &mut prepared,
            &shares,
            (epoch > 0).then_some(&calibrated[..]),
            rounds,
            part.len() - probes,
        )?;
        rounds += taken;
        drop(prepared);
        drop(std::hint::black_box(stagger));
        if pooled.is_empty() {
            pooled = measured;
        } else {
            for (&i, m) in part.iter().zip(measured) {
                let p = &mut pooled[i];
                p.samples.0.extend(m.samples.0);
                p.rounds.extend(m.rounds);
                p.epoch_samples.extend(m.epoch_samples);
                p.warmup_samples += m.warmup_samples;
            }
        }
    }
    // The estimates are the first epoch's until [`correct_speed`] fills them in.
    Ok((pooled, rounds))
}

/// Each epoch's share of the samples: `long` for most operators, `short` for those whose
/// samples hold at least `short_runs` runs ([`SHORT_OPERATOR_S`] or less per run).
struct Shares {
    long: MeasureOptions,
    short: MeasureOptions,
    short_runs: usize,
}

/// Bytes between the heap offsets of consecutive epochs' buffers: a page and a cache line, so
/// that neither the offsets within a page nor the pages repeat.
pub const EPOCH_STAGGER_BYTES: usize = 4096 + 64;

/// Measures operators already prepared (steps 2–5 above; `min_sample_s` is the timer's
/// [`Timer::min_sample_s`]). The operators keep their buffers, so measuring the same prepared
/// set twice separates the machine's drift from where the buffers were placed. No speed
/// correction: every estimate is the median.
pub fn measure_prepared(
    min_sample_s: f64,
    prepared: &mut [Box<dyn PreparedOp + '_>],
    opts: &MeasureOptions,
) -> Result<Vec<Measured>> {
    let n = prepared.len();
    let shares = Shares {
        long: opts.clone(),
        short: opts.clone(),
        short_runs: usize::MAX,
    };
    // One epoch: `measure_epoch` already sets every estimate to the median.
    let (measured, _) = measure_epoch(min_sample_s, prepared, &shares, None, 0, n)?;
    Ok(measured)
}

/// [`measure_prepared`]; with `calibrated` (the same operators' measurement in an earlier
/// epoch) the warm-up until settled is replaced by one warm-up sample and the earlier runs per
/// sample are reused: the machine, the thread pool and the clock are warm already, and only the
/// new buffers need bringing into cache. Rounds are tagged from `first_round` on; the slots
/// from `probes_from` on are the speed probe's, sampled in every round (extra rounds too) but
/// never extended for their own precision. Returns the measurements and the rounds taken.
fn measure_epoch(
    min_sample: f64,
    prepared: &mut [Box<dyn PreparedOp + '_>],
    shares: &Shares,
    calibrated: Option<&[Measured]>,
    first_round: usize,
    probes_from: usize,
) -> Result<(Vec<Measured>, usize)> {
    let opts = &shares.long;
    let mut slots: Vec<Slot<'_>> = Vec::with_capacity(prepared.len());
    for (i, prepared) in prepared.iter_mut().enumerate() {
        // The first run pays for first touches; it calibrates roughly and warms.
        let first = prepared.run_s(1)?;
        let earlier = calibrated.and_then(|c| c.get(i));
        slots.push(Slot {
            op: &mut **prepared,
            share: (opts.repeats, opts.max_repeats),
            runs: earlier.map_or_else(|| runs_for(min_sample, first), |m| m.runs_per_sample),
            warmup_samples: 0,
            settled: earlier.is_some_and(|m| m.settled),
            samples: Vec::new(),
            rounds: Vec::new(),
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
    for slot in &mut slots {
        if slot.runs >= shares.short_runs {
            slot.share = (shares.short.repeats, shares.short.max_repeats);
        }
    }
    // As many fixed rounds as the largest share; an operator with a smaller one sits out the
    // last ones, the probe is in all.
    let fixed = slots[..probes_from]
        .iter()
        .map(|s| s.share.0)
        .max()
        .unwrap_or(opts.repeats);
    let mut fixed_s = 0.0;
    for r in 0..fixed {
        let which: Vec<usize> = (0..slots.len())
            .filter(|&i| i >= probes_from || slots[i].share.0 > r)
            .collect();
        fixed_s += round(&mut slots, &which, r, first_round + r, probes_from)?;
    }
    // Extra rounds are budgeted in the timer's clock, not the wall's, so the stopping point
    // depends on the measurements only.
    let mut extra_s = 0.0;
    let mut r = fixed;
    loop {
        let mut open: Vec<usize> = (0..probes_from)
            .filter(|&i| !slots[i].precise(opts))
            .collect();
        if open.is_empty() || extra_s >= fixed_s {
            break;
        }
        // The probe is in every round, so every round has a speed factor.
        open.extend(probes_from..slots.len());
        extra_s += round(&mut slots, &open, r, first_round + r, probes_from)?;
        r += 1;
    }
    let measured = slots
        .into_iter()
        .map(|s| {
            let median = Samples(s.samples.clone()).median_s();
            Measured {
                epoch_samples: vec![s.samples.len()],
                rounds: s.rounds,
                samples: Samples(s.samples),
                warmup_samples: s.warmup_samples,
                settled: s.settled,
                runs_per_sample: s.runs,
                estimates_s: [median; 3],
            }
        })
        .collect();
    Ok((measured, r))
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

    /// Two exact operators, a short one (10 µs per run) and a long one (0.3 ms), asked for 7 to
    /// 31 samples over 3 epochs; the log records preparations and calls.
    fn two_exact_ops() -> (Scripted, Rc<RefCell<Vec<usize>>>, MeasureOptions) {
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
        (timer, log, opts)
    }

    #[test]
    fn epochs_prepare_afresh_and_pool_their_shares_of_the_samples() {
        let (timer, log, opts) = two_exact_ops();
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
            assert_eq!(mi.epoch_medians().len(), 3);
            assert!((mi.median_s() / timer.per_run_s[i] - 1.0).abs() < 1e-12);
        }
        // The kept median is the middle epoch's: one epoch, however many samples it holds,
        // cannot move it.
        let lopsided = Measured {
            samples: Samples([vec![7.0; 10], vec![1.0; 3], vec![1.1; 3]].concat()),
            rounds: (0..16).collect(),
            epoch_samples: vec![10, 3, 3],
            warmup_samples: 0,
            settled: true,
            runs_per_sample: 1,
            estimates_s: [0.0; 3],
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
    fn short_operators_take_more_epochs_with_their_own_share() {
        // Operator 0 folds 100 runs into a sample (short), operator 1 four (long).
        let (timer, log, opts) = two_exact_ops();
        let opts = MeasureOptions {
            short_epochs: 7,
            ..opts
        };
        let short = opts.per_short_epoch();
        assert_eq!((short.repeats, short.max_repeats), (2, 4));
        let m = measure_ops(&timer, &ops(2), &opts).unwrap();
        assert_eq!(m[0].epoch_samples, vec![2; 7]);
        assert_eq!(m[1].epoch_samples, vec![3; 3]);
        assert!(m.iter().all(|x| x.samples.0.len() == x.rounds.len()));
        // Operator 1 is prepared three times, operator 0 seven.
        let prepared = |op: usize| log.borrow().iter().filter(|&&x| x == 1000 + op).count();
        assert_eq!((prepared(0), prepared(1)), (7, 3));
        // The short share applies only beyond `epochs`; without more short epochs nothing changes.
        let same = MeasureOptions {
            short_epochs: 3,
            ..opts.clone()
        };
        assert_eq!(same.per_short_epoch(), same.per_epoch());
    }

    /// Samples of operators with true times `true_s` (the last two being the probe's), taken
    /// as [`measure_group`] takes them: 3 epochs, each of 3 full rounds and then 4 extra rounds
    /// of the operators in `extended` and the probe. A sample is true time × `speed(round,
    /// extra)` × (1 ± up to 0.5 % noise).
    fn synthetic(
        true_s: &[f64],
        extended: &[usize],
        speed: impl Fn(usize, bool) -> f64,
        seed: u64,
    ) -> (Vec<Measured>, usize) {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let n = true_s.len();
        let mut m: Vec<Measured> = (0..n)
            .map(|_| Measured {
                samples: Samples(Vec::new()),
                rounds: Vec::new(),
                epoch_samples: Vec::new(),
                warmup_samples: 0,
                settled: true,
                runs_per_sample: 1,
                estimates_s: [0.0; 3],
            })
            .collect();
        let mut r = 0;
        for _epoch in 0..3 {
            let before: Vec<usize> = m.iter().map(|x| x.samples.0.len()).collect();
            for round in 0..7 {
                let extra = round >= 3;
                for o in 0..n {
                    if extra && !(extended.contains(&o) || o >= n - 2) {
                        continue;
                    }
                    let noise = 1.0 + rng.random_range(-0.005..0.005);
                    m[o].samples.0.push(true_s[o] * speed(r, extra) * noise);
                    m[o].rounds.push(r);
                }
                r += 1;
            }
            for (x, b) in m.iter_mut().zip(before) {
                x.epoch_samples.push(x.samples.0.len() - b);
            }
        }
        (m, r)
    }

    /// Largest over smallest of `estimate / truth` over the operators: 1 when every latency is
    /// right up to one common factor (the run's speed).
    fn skew(m: &[Measured], true_s: &[f64], c: SpeedCorrection) -> f64 {
        let r: Vec<f64> = m
            .iter()
            .zip(true_s)
            .map(|(x, t)| x.estimate_s(c) / t)
            .collect();
        r.iter().copied().fold(0.0, f64::max) / r.iter().copied().fold(f64::INFINITY, f64::min)
    }

    #[test]
    fn speed_correction_recovers_true_times_from_drifting_rounds() {
        // Four operators from 3 us to 2 ms, then the probe's two.
        let true_s = [3e-6, 4e-5, 5e-4, 2e-3, 1.2e-4, 3e-5];
        // Run A: the machine wobbles by 1 % from round to round and is 10 % slower during the
        // extra rounds, which operators 0 and 1 get (12 of their 21 samples).
        let wobble = |r: usize| 1.0 + 0.01 * (r as f64).sin();
        let (mut a, rounds) = synthetic(
            &true_s,
            &[0, 1],
            |r, x| wobble(r) * if x { 1.1 } else { 1.0 },
            1,
        );
        let speed_a = correct_speed(&mut a, 2, rounds, None);
        // Unnormalised, the extended operators' medians come from the slow stretch: ~10 % off
        // relative to the others.
        assert!(
            skew(&a, &true_s, SpeedCorrection::None) > 1.07,
            "{}",
            skew(&a, &true_s, SpeedCorrection::None)
        );
        // Normalised by their rounds' factors, every operator is right up to the run's speed,
        // and that speed is the typical one (full rounds, factor ~1).
        for c in [SpeedCorrection::Rounds, SpeedCorrection::Probe] {
            assert!(
                skew(&a, &true_s, c) < 1.01,
                "{c:?}: {}",
                skew(&a, &true_s, c)
            );
        }
        for (x, t) in a.iter().zip(&true_s) {
            assert!((x.estimate_s(SpeedCorrection::Rounds) / t - 1.0).abs() < 0.02);
        }
        // The rounds' factors follow the machine: the extra rounds 10 % slow, all of them with
        // the round-to-round wobble.
        for (r, f) in speed_a.round_factors.iter().enumerate() {
            let machine = wobble(r) * if r % 7 >= 3 { 1.1 } else { 1.0 };
            assert!(
                (f / machine - 1.0).abs() < 0.02,
                "round {r}: {f} vs {machine}"
            );
        }
        // Without a reference the probe scales nothing; its own times are reported.
        assert_eq!(speed_a.probe_scale, 1.0);
        assert!((speed_a.probe_s[0] / true_s[4] - 1.0).abs() < 0.02);

        // Run B: the whole run 8 % slower, a fast stretch in its extra rounds instead.
        let (mut b, rounds) = synthetic(
            &true_s,
            &[0, 1],
            |r, x| 1.08 * wobble(r + 5) * if x { 0.97 } else { 1.0 },
            2,
        );
        let speed_b = correct_speed(&mut b, 2, rounds, Some(&speed_a.probe_s));
        assert!(
            (speed_b.probe_scale - 1.0 / 1.08).abs() < 0.015,
            "{}",
            speed_b.probe_scale
        );
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            let diff = |c| (y.estimate_s(c) / x.estimate_s(c) - 1.0).abs();
            // Normalising rounds cannot see a run that is slow throughout...
            assert!(
                diff(SpeedCorrection::Rounds) > 0.05,
                "{i}: {}",
                diff(SpeedCorrection::Rounds)
            );
            // ...the probe's reference time can.
            assert!(
                diff(SpeedCorrection::Probe) < 0.015,
                "{i}: {}",
                diff(SpeedCorrection::Probe)
            );
        }
        // A round sampling fewer than three operators takes the last factor that was estimated.
        let lone = Measured {
            samples: Samples(vec![1.0, 1.0, 1.0, 2.0]),
            rounds: vec![0, 1, 2, 3],
            epoch_samples: vec![4],
            ..a[0].clone()
        };
        let mut ops = vec![
            lone.clone(),
            Measured {
                samples: Samples(vec![3.0, 3.3, 3.0]),
                rounds: vec![0, 1, 2],
                epoch_samples: vec![3],
                ..lone.clone()
            },
            Measured {
                samples: Samples(vec![5.0, 5.5, 5.0]),
                rounds: vec![0, 1, 2],
                epoch_samples: vec![3],
                ..lone
            },
        ];
        let f = round_factors(&ops, 4);
        assert_eq!(f.len(), 4);
        assert!((f[1] - 1.1).abs() < 1e-12 && f[3] == f[2], "{f:?}");
        correct_speed(&mut ops, 0, 4, None);
        // Operator 0's lone slow sample is divided by the factor of round 2 (1), not by itself.
        assert!(ops[0].estimate_s(SpeedCorrection::Rounds) >= 1.0);
    }

    #[test]
    fn epochs_combine_by_a_trimmed_mean() {
        // Three epochs: the median, so one wild epoch does not count at all.
        assert_eq!(combine_epochs(&[1.0, 7.0, 1.1]), 1.1);
        assert_eq!(combine_epochs(&[2.0, 4.0]), 3.0);
        assert_eq!(combine_epochs(&[2.0]), 2.0);
        // Seven epochs at two levels (1.0 and 1.1) in different majorities: the median jumps
        // by the whole gap, the mean of the middle five by a fifth of it per epoch that moved,
        // and the wild epoch is still dropped.
        let run = |slow: usize| {
            let mut m = vec![1.0; 7];
            m[..slow].fill(1.1);
            m
        };
        let (a, b) = (combine_epochs(&run(3)), combine_epochs(&run(4)));
        assert!((b - a - 0.02).abs() < 1e-12, "{a} {b}");
        assert!(Samples(run(4)).median_s() - Samples(run(3)).median_s() > 0.099);
        let wild = |t: f64| {
            let mut m = run(3);
            m[6] = t;
            combine_epochs(&m)
        };
        assert!((wild(7.0) - wild(1.1)).abs() < 1e-12);
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
