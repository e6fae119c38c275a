//! The per-request admission and dispatch decision, as a deterministic state machine.
//!
//! The fast simulator ([`super::run_fast`]) and the executor's admission path both drive this one
//! type, so that what the simulator predicts and what the server does come from the same code: the
//! simulator feeds it trace arrival times, the executor feeds it its (real or virtual) clock.
//!
//! State is one clock per (group, stage): the time that stage frees, given everything admitted so
//! far. The controller borrows its clocks so the simulator can reuse one buffer across thousands
//! of evaluations; nothing here allocates.

use super::compiled::{DispatchTable, MAX_TABLE_STAGES};
use super::{Compiled, Outcomes, NO_GROUP};

/// What to do with one request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decision {
    /// The model has no replica in this placement.
    NoReplica,
    /// The chosen replica would miss the deadline: reject at arrival (no state changed).
    Reject {
        group: usize,
        replica: usize,
        /// Projected completion (overhead included) had the request been admitted.
        projected_finish_s: f64,
    },
    /// Admitted and committed to the stage clocks of `group`.
    Admit {
        group: usize,
        replica: usize,
        /// When its first stage starts.
        start_s: f64,
        /// When it completes, overhead included.
        finish_s: f64,
    },
}

impl Decision {
    /// Admit when the projected completion meets the deadline, else reject with the projection.
    #[inline(always)]
    fn verdict(meets: bool, group: usize, replica: usize, start_s: f64, finish_s: f64) -> Self {
        if meets {
            Decision::Admit {
                group,
                replica,
                start_s,
                finish_s,
            }
        } else {
            Decision::Reject {
                group,
                replica,
                projected_finish_s: finish_s,
            }
        }
    }
}

/// Admission and dispatch over one placement: per-stage FIFO clocks, earliest-last-stage (or
/// SLO-aware) replica choice, rejection at arrival when the deadline cannot be met.
#[derive(Debug)]
pub struct Controller<'a> {
    c: &'a Compiled,
    slo_s: &'a [f64],
    overhead_s: f64,
    slo_aware: bool,
    clocks: &'a mut [f64],
}

impl<'a> Controller<'a> {
    /// `clocks` holds `c.n_clocks()` stage clocks (all 0 for idle groups); `slo_s` is per model.
    #[inline]
    pub fn new(
        c: &'a Compiled,
        slo_s: &'a [f64],
        overhead_s: f64,
        slo_aware: bool,
        clocks: &'a mut [f64],
    ) -> Controller<'a> {
        debug_assert_eq!(clocks.len(), c.n_clocks());
        Controller {
            c,
            slo_s,
            overhead_s,
            slo_aware,
            clocks,
        }
    }

    /// The placement this controller dispatches over.
    #[inline]
    pub fn compiled(&self) -> &Compiled {
        self.c
    }

    /// All stage clocks, group by group (`Compiled::group_clock` gives the offsets).
    #[inline]
    pub fn clocks(&self) -> &[f64] {
        self.clocks
    }

    /// Decides for a request of model `m` arriving at `t` and commits it when admitted.
    #[inline(always)]
    pub fn admit(&mut self, t: f64, m: usize) -> Decision {
        if self.slo_aware {
            let d = self.decide(t, m);
            if let Decision::Admit { replica, .. } = d {
                commit(self.c, self.clocks, replica, t);
            }
            return d;
        }
        // The simulator's hot path: pick by last-stage clock, walk the stages once, commit only
        // when the deadline holds. Same decisions as `decide` + `commit`, one pass fewer.
        let c = self.c;
        let reps = c.replicas(m);
        if reps.is_empty() {
            return Decision::NoReplica;
        }
        let mut r = reps.start;
        let mut best_clock = self.clocks[(c.rep_clock[r] + c.rep_pp[r] - 1) as usize];
        for q in reps.start + 1..reps.end {
            let cl = self.clocks[(c.rep_clock[q] + c.rep_pp[q] - 1) as usize];
            if cl < best_clock {
                r = q;
                best_clock = cl;
            }
        }
        let base = c.rep_clock[r] as usize;
        let pp = c.rep_pp[r] as usize;
        let lat0 = c.rep_lat[r] as usize;
        let group = c.rep_group[r] as usize;
        let slo = self.slo_s[m];
        if pp == 1 {
            let start = t.max(self.clocks[base]);
            let x = start + c.lat[lat0];
            let finish = x + self.overhead_s;
            let meets = finish - t <= slo;
            if meets {
                self.clocks[base] = x;
            }
            return Decision::verdict(meets, group, r, start, finish);
        }
        const STACK: usize = 16;
        if pp <= STACK {
            // One pass over the stages into a stack buffer; copied back only when admitted.
            let mut stage_end = [0.0f64; STACK];
            let clk = &self.clocks[base..base + pp];
            let lat = &c.lat[lat0..lat0 + pp];
            let start = t.max(clk[0]);
            let mut x = t;
            for ((end, &ck), &l) in stage_end.iter_mut().zip(clk).zip(lat) {
                x = x.max(ck) + l;
                *end = x;
            }
            let finish = x + self.overhead_s;
            let meets = finish - t <= slo;
            if meets {
                self.clocks[base..base + pp].copy_from_slice(&stage_end[..pp]);
            }
            return Decision::verdict(meets, group, r, start, finish);
        }
        let (start, fin) = project(c, self.clocks, r, t);
        let finish = fin + self.overhead_s;
        let meets = finish - t <= slo;
        if meets {
            commit(c, self.clocks, r, t);
        }
        Decision::verdict(meets, group, r, start, finish)
    }

    /// The decision [`Controller::admit`] would take, without changing any state.
    #[inline(always)]
    pub fn decide(&self, t: f64, m: usize) -> Decision {
        let c = self.c;
        let reps = c.replicas(m);
        if reps.is_empty() {
            return Decision::NoReplica;
        }
        let (r, start, fin) = if self.slo_aware {
            // The replica that finishes earliest; lowest index on ties.
            let mut best = (usize::MAX, 0.0, f64::INFINITY);
            for r in reps.clone() {
                let (s, f) = project(c, self.clocks, r, t);
                if f < best.2 {
                    best = (r, s, f);
                }
            }
            if best.0 == usize::MAX {
                // Every replica projects to +∞ (all groups down): report the first one.
                let (s, f) = project(c, self.clocks, reps.start, t);
                best = (reps.start, s, f);
            }
            best
        } else {
            let mut best = reps.start;
            let mut best_clock = last_clock(c, self.clocks, best);
            for r in reps.start + 1..reps.end {
                let cl = last_clock(c, self.clocks, r);
                if cl < best_clock {
                    best = r;
                    best_clock = cl;
                }
            }
            let (s, f) = project(c, self.clocks, best, t);
            (best, s, f)
        };
        let group = c.rep_group[r] as usize;
        let finish = fin + self.overhead_s;
        // Equality counts as good (alpaserve-semantics.md §1.1).
        Decision::verdict(finish - t <= self.slo_s[m], group, r, start, finish)
    }

    /// Reconciles the projection with a measurement: stage `stage` of `group` is known to be busy
    /// until at least `busy_until_s` (a real stage ran longer than profiled). Clocks only move
    /// forward, so admission never becomes more optimistic than what was measured.
    #[inline]
    pub fn observe_busy_until(&mut self, group: usize, stage: usize, busy_until_s: f64) {
        let i = self.c.group_clock[group] as usize + stage;
        if i < self.c.group_clock[group + 1] as usize && busy_until_s > self.clocks[i] {
            self.clocks[i] = busy_until_s;
        }
    }

    /// Takes `group` out of service: its clocks become +∞, so dispatch never picks it while
    /// another replica is up, and a request with no other replica is rejected.
    pub fn mark_down(&mut self, group: usize) {
        let range = self.c.group_clock[group] as usize..self.c.group_clock[group + 1] as usize;
        self.clocks[range].fill(f64::INFINITY);
    }

    /// True when `group` was taken out of service.
    pub fn is_down(&self, group: usize) -> bool {
        self.clocks[self.c.group_clock[group] as usize].is_infinite()
    }

    /// Per-stage finish times the admitted request on `replica` at `t` was committed with
    /// (written into `out[..pp]`); call before [`Controller::admit`] to know each stage's projection.
    #[inline]
    pub fn project_stages(&self, replica: usize, t: f64, out: &mut [f64]) -> usize {
        let c = self.c;
        let g = c.rep_group[replica] as usize;
        let base = c.group_clock[g] as usize;
        let pp = c.rep_pp[replica] as usize;
        let lat = &c.lat[c.rep_lat[replica] as usize..c.rep_lat[replica] as usize + pp];
        let mut x = t;
        for k in 0..pp {
            x = x.max(self.clocks[base + k]) + lat[k];
            out[k] = x;
        }
        pp
    }
}

/// Last-stage clock of the group of replica `r`.
#[inline(always)]
pub(super) fn last_clock(c: &Compiled, clocks: &[f64], r: usize) -> f64 {
    let g = c.rep_group[r] as usize;
    clocks[c.group_clock[g + 1] as usize - 1]
}

/// (start of the first stage, end of the last stage) if replica `r` took a request arriving at `t`.
#[inline(always)]
pub(super) fn project(c: &Compiled, clocks: &[f64], r: usize, t: f64) -> (f64, f64) {
    let g = c.rep_group[r] as usize;
    let base = c.group_clock[g] as usize;
    let pp = c.rep_pp[r] as usize;
    let lat = &c.lat[c.rep_lat[r] as usize..c.rep_lat[r] as usize + pp];
    let clk = &clocks[base..base + pp];
    let start = t.max(clk[0]);
    let mut x = t;
    for k in 0..pp {
        x = x.max(clk[k]) + lat[k];
    }
    (start, x)
}

/// Moves the stage clocks of replica `r`'s group past a request arriving at `t`.
#[inline(always)]
pub(super) fn commit(c: &Compiled, clocks: &mut [f64], r: usize, t: f64) {
    let g = c.rep_group[r] as usize;
    let base = c.group_clock[g] as usize;
    let pp = c.rep_pp[r] as usize;
    let lat = &c.lat[c.rep_lat[r] as usize..c.rep_lat[r] as usize + pp];
    let clk = &mut clocks[base..base + pp];
    let mut x = t;
    for k in 0..pp {
        x = x.max(clk[k]) + lat[k];
        clk[k] = x;
    }
}

/// `a.max(b)` for a non-NaN `a`, as the hot loop needs it: `f64::max` also handles a NaN `a`,
/// which costs two more instructions per stage. The operand order matches how `maxnum` lowers
/// on x86 (`b > a ? b : a`), so even the sign of a zero result is the same.
#[inline(always)]
fn later(a: f64, b: f64) -> f64 {
    if b > a {
        b
    } else {
        a
    }
}

/// `mask` (all ones or all zeros), hidden from the optimizer: masked selects built on it stay
/// arithmetic. The compiler turns a select it can see into a branch when it guesses the
/// condition predictable, and admission outcomes are not.
#[inline(always)]
fn opaque_mask(mask: u64) -> u64 {
    let mut m = mask;
    // SAFETY: an empty instruction sequence; it only makes `m` unknown to the optimizer.
    unsafe {
        std::arch::asm!("/* {0} */", inout(reg) m, options(pure, nomem, nostack, preserves_flags))
    };
    m
}

/// Bitwise select: `a` where `mask` is all ones, `b` where it is all zeros.
#[inline(always)]
fn select_bits(mask: u64, a: f64, b: f64) -> f64 {
    f64::from_bits((a.to_bits() & mask) | (b.to_bits() & !mask))
}

/// State the fast loop carries across calls on consecutive slices of one trace.
#[derive(Debug, Default)]
pub struct FastState {
    /// Stage clocks in the table's layout ([`DispatchTable::load_clocks`]), at least
    /// `clocks_needed` of them.
    clocks: Vec<f64>,
    /// Per dispatch slot: requests routed (low 32 bits) and admitted (high 32 bits) since the
    /// last [`FastState::widen`], one add per request.
    slot_counts: Vec<u64>,
    /// Per dispatch slot: (routed, admitted) before the last widening.
    wide_counts: Vec<(u64, u64)>,
    /// Requests counted in `slot_counts`, which must stay below 2^32.
    packed_requests: u64,
    /// Σ (finish − arrival) over admitted requests, in arrival order.
    pub latency_sum_good_s: f64,
}

impl FastState {
    /// Starts from `clocks` (one per stage, [`Compiled::group_clock`] layout) with zero counts;
    /// the latency sum is left to the caller.
    pub fn reset(&mut self, tab: &DispatchTable, clocks: &[f64]) {
        self.slot_counts.clear();
        self.slot_counts.resize(tab.slots(), 0);
        self.wide_counts.clear();
        self.wide_counts.resize(tab.slots(), (0, 0));
        self.packed_requests = 0;
        tab.load_clocks(clocks, &mut self.clocks);
    }

    /// Moves the packed counts into the wide ones, so that `n` more requests fit.
    fn make_room(&mut self, n: usize) {
        if self.packed_requests + n as u64 <= u64::from(u32::MAX) {
            return;
        }
        for (wide, packed) in self.wide_counts.iter_mut().zip(&mut self.slot_counts) {
            wide.0 += *packed & u64::from(u32::MAX);
            wide.1 += *packed >> 32;
            *packed = 0;
        }
        self.packed_requests = 0;
    }

    /// Copies the stage clocks, in the [`Compiled::group_clock`] layout, into `out` (as many as
    /// it holds, at most as many as given to [`FastState::reset`]).
    pub fn copy_clocks(&self, tab: &DispatchTable, out: &mut [f64]) {
        tab.store_clocks(&self.clocks, out);
    }

    /// (requests routed, requests admitted) per slot of the table.
    pub fn slot_counts(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.slot_counts
            .iter()
            .zip(&self.wide_counts)
            .map(|(&n, &(routed, good))| (routed + (n & u64::from(u32::MAX)), good + (n >> 32)))
    }

    /// Requests routed to slot `s` so far.
    pub(super) fn routed(&self, s: usize) -> u64 {
        self.wide_counts[s].0 + (self.slot_counts[s] & u64::from(u32::MAX))
    }

    /// Requests admitted so far.
    pub fn good(&self) -> u64 {
        self.slot_counts().map(|(_, good)| good).sum()
    }
}

/// Requests per stretch of [`admit_all`] between two choices of loop variant.
const STRETCH: usize = 1 << 14;

/// [`Controller::admit`] with earliest-last-stage dispatch over a whole slice of requests,
/// counting instead of returning decisions (and filling `out`, indexed like the slice, when
/// given). `st` carries clocks and counts from one slice to the next.
///
/// It takes the same decisions bit for bit. The dispatch scan has a fixed trip count (the
/// table's slots per model). Admission comes in two variants with identical results, chosen per
/// stretch of requests from how many of the previous stretch's requests were rejected: a branch
/// is cheapest while admission is predictable, and masked selects (no admission branch) win
/// once enough rejections (placed at random in the trace) would mispredict. The threshold grows
/// with the pipeline depth, as the selects cost a few instructions per stage.
///
/// # Panics
/// When `tab` holds a pipeline deeper than [`MAX_TABLE_STAGES`], `st` was reset for another
/// table, or a model id is outside the table.
pub fn admit_all(
    tab: &DispatchTable,
    arrival: &[f64],
    model: &[u32],
    overhead_s: f64,
    st: &mut FastState,
    out: Option<&mut Outcomes>,
) {
    assert!(
        tab.max_pp() <= MAX_TABLE_STAGES,
        "pipeline deeper than the table loop takes"
    );
    assert!(st.slot_counts.len() == tab.slots() && st.clocks.len() >= tab.clocks_needed());
    assert_eq!(model.len(), arrival.len());
    if let Some(o) = out {
        for lo in (0..arrival.len()).step_by(STRETCH) {
            let hi = arrival.len().min(lo + STRETCH);
            let (a, m) = (&arrival[lo..hi], &model[lo..hi]);
            st.make_room(hi - lo);
            st.packed_requests += (hi - lo) as u64;
            fast_loop::<0, 0, false, true>(tab, a, m, overhead_s, st, Some((&mut *o, lo)));
        }
        return;
    }
    // Rejections per stretch above which the branch-free loop is faster: 2.5 % per stage.
    let stages = if tab.uniform_pp > 0 {
        tab.uniform_pp
    } else {
        tab.lat_stride
    };
    let branch_free_above = STRETCH * stages.min(8) / 40;
    let mut rejected = 0;
    for lo in (0..arrival.len()).step_by(STRETCH) {
        let hi = arrival.len().min(lo + STRETCH);
        let (a, m) = (&arrival[lo..hi], &model[lo..hi]);
        let branch_free = rejected > branch_free_above;
        st.make_room(hi - lo);
        st.packed_requests += (hi - lo) as u64;
        let counts_before = (st.good(), tab.no_replica_requests(st));
        // One loop per (stages, slots per model) pair of the placements the searches produce, so
        // that the stage walk and the dispatch scan unroll without a trip-count branch.
        macro_rules! by_width {
            ($pp:literal, $bf:literal) => {
                match tab.width {
                    1 => fast_loop::<$pp, 1, $bf, false>(tab, a, m, overhead_s, st, None),
                    2 => fast_loop::<$pp, 2, $bf, false>(tab, a, m, overhead_s, st, None),
                    3 => fast_loop::<$pp, 3, $bf, false>(tab, a, m, overhead_s, st, None),
                    4 => fast_loop::<$pp, 4, $bf, false>(tab, a, m, overhead_s, st, None),
                    5 => fast_loop::<$pp, 5, $bf, false>(tab, a, m, overhead_s, st, None),
                    6 => fast_loop::<$pp, 6, $bf, false>(tab, a, m, overhead_s, st, None),
                    _ => fast_loop::<$pp, 0, $bf, false>(tab, a, m, overhead_s, st, None),
                }
            };
        }
        match (tab.uniform_pp, branch_free) {
            (1, false) => by_width!(1, false),
            (1, true) => by_width!(1, true),
            (2, false) => by_width!(2, false),
            (2, true) => by_width!(2, true),
            (4, false) => by_width!(4, false),
            (4, true) => by_width!(4, true),
            (8, false) => by_width!(8, false),
            (8, true) => by_width!(8, true),
            (_, false) => by_width!(0, false),
            (_, true) => by_width!(0, true),
        }
        // Requests for models without replica resolve early in both loops: not counted.
        let admitted = st.good() - counts_before.0;
        let no_replica = tab.no_replica_requests(st) - counts_before.1;
        rejected = (hi - lo) - (admitted + no_replica) as usize;
    }
}

/// The slot (0-based, within `lasts`) whose last-stage clock is earliest, the lowest on ties.
///
/// A branch, never a select: with a select, the next request's choice (and every load after
/// it) waits for the clocks this request writes, so consecutive requests sharing a group run
/// one whole stage chain after the other. A predicted branch lets the next request start at
/// once; a misprediction costs less than that wait (pp=1 +22 %, pp=4 +23 % requests/s in the
/// simulator benchmark, and -41 % CPU time for the S3 AlpaServe search).
#[inline(always)]
fn earliest_slot<const W: usize>(clocks: &[f64], lasts: &[u32]) -> usize {
    // SAFETY: the caller guarantees every `lasts` entry indexes `clocks`.
    let clock_of = |j: usize| unsafe { *clocks.get_unchecked(*lasts.get_unchecked(j) as usize) };
    let mut best = 0;
    let mut best_clock = clock_of(0);
    for j in 1..(if W > 0 { W } else { lasts.len() }) {
        let cl = clock_of(j);
        if cl < best_clock {
            best = j;
            best_clock = cl;
            // SAFETY: an empty instruction sequence. As the compiler sees it, it has a side
            // effect, which keeps this a branch instead of a select.
            unsafe { std::arch::asm!("", options(nomem, nostack, preserves_flags)) };
        }
    }
    best
}

/// The loop of [`admit_all`] for pipelines of `PP` stages and `W` slots per model (0: read
/// from the table); `BRANCH_FREE` picks the admission variant.
///
/// Indexing is unchecked where [`DispatchTable`] guarantees the bounds: every slot's stages lie
/// inside the first `clocks_needed` clocks and its latencies inside `tab.lat`, and a model's
/// slots inside the table once `m < n_models` (checked per request; `admit_all` checks the rest
/// once).
#[inline(never)]
fn fast_loop<const PP: usize, const W: usize, const BRANCH_FREE: bool, const DETAIL: bool>(
    tab: &DispatchTable,
    arrival: &[f64],
    model: &[u32],
    overhead_s: f64,
    st: &mut FastState,
    mut out: Option<(&mut Outcomes, usize)>,
) {
    let width = if W > 0 { W } else { tab.width };
    let stride = if PP > 0 { PP } else { tab.lat_stride };
    let n_models = tab.n_models();
    debug_assert!(W == 0 || W == tab.width);
    debug_assert!(PP == 0 || (PP == tab.uniform_pp && PP == tab.lat_stride));
    let last_clock = &tab.last_clock[..];
    let slot_pp = &tab.pp[..];
    let slot_group = &tab.group[..];
    let slot_slo = &tab.slo_s[..];
    let lat_all = &tab.lat[..];
    let clocks = &mut st.clocks[..];
    let counts = &mut st.slot_counts[..];
    assert!(slot_slo.len() == counts.len() && slot_group.len() == counts.len());
    assert!(slot_pp.len() == counts.len() && lat_all.len() == counts.len() * stride);
    let mut latency_sum = st.latency_sum_good_s;
    for (i, (&t, &m)) in arrival.iter().zip(model).enumerate() {
        let m = m as usize;
        assert!(m < n_models, "model id {m} outside the instance");
        let s0 = m * width;
        // SAFETY (every `get_unchecked` below): s0 + width ≤ slots since m < n_models; a
        // slot's latencies lie in `lat` and its stages below `clocks_needed` ≤ `clocks.len()`
        // (`DispatchTable::rebuild`, `FastState::reset`).
        if !BRANCH_FREE && unsafe { *slot_group.get_unchecked(s0) } == NO_GROUP {
            // No replica: rejected, no state touched. This branch resolves as soon as the
            // model id loads, so a misprediction costs little.
            unsafe { *counts.get_unchecked_mut(s0) += 1 };
            if let (true, Some((o, off))) = (DETAIL, out.as_mut()) {
                o.finish_s[i + *off] = t;
            }
            continue;
        }
        let lasts = unsafe { last_clock.get_unchecked(s0..s0 + width) };
        let best = earliest_slot::<W>(clocks, lasts);
        let s = s0 + best;
        let last = unsafe { *lasts.get_unchecked(best) } as usize;
        let pp = if PP > 0 {
            PP
        } else {
            unsafe { *slot_pp.get_unchecked(s) as usize }
        };
        debug_assert!(pp >= 1 && pp <= stride && last + 1 >= pp && last < clocks.len());
        let base = last + 1 - pp;
        let lat = unsafe { lat_all.get_unchecked(s * stride..s * stride + pp) };
        let clk = unsafe { clocks.get_unchecked_mut(base..base + pp) };
        // The first real stage's clock (after the padding stages), for the start time.
        let first_clock = if DETAIL {
            clk[unsafe { *tab.pad.get_unchecked(s) } as usize]
        } else {
            0.0
        };
        let mut stage_end = [0.0f64; MAX_TABLE_STAGES];
        let mut x = t;
        for k in 0..pp {
            x = later(x, clk[k]) + lat[k];
            stage_end[k] = x;
        }
        let finish = x + overhead_s;
        let latency = finish - t;
        // Equality counts as good (alpaserve-semantics.md §1.1); a stand-in slot's −∞ never is.
        let admit = latency <= unsafe { *slot_slo.get_unchecked(s) };
        let count = unsafe { counts.get_unchecked_mut(s) };
        if BRANCH_FREE {
            let admitted = opaque_mask(u64::from(admit).wrapping_neg());
            for k in 0..pp {
                clk[k] = select_bits(admitted, stage_end[k], clk[k]);
            }
            *count += 1 | (admitted & (1 << 32));
            // +0.0 for a rejected request: the sum starts at +0.0 and only grows, so this is
            // bit for bit the sum over admitted requests alone, in order.
            latency_sum += select_bits(admitted, latency, 0.0);
        } else if admit {
            clk.copy_from_slice(&stage_end[..pp]);
            *count += 1 | (1 << 32);
            latency_sum += latency;
        } else {
            *count += 1;
        }
        if let (true, Some((o, off))) = (DETAIL, out.as_mut()) {
            let i = i + *off;
            let g = unsafe { *slot_group.get_unchecked(s) };
            if g == NO_GROUP {
                o.finish_s[i] = t;
            } else {
                // A rejected request keeps the group it was routed to, for per-group counts.
                o.group[i] = g;
                o.good[i] = admit;
                o.start_s[i] = if admit { later(t, first_clock) } else { t };
                o.finish_s[i] = if admit { finish } else { t };
            }
        }
    }
    st.latency_sum_good_s = latency_sum;
}
