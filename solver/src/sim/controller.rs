//! The per-request admission and dispatch decision, as a deterministic state machine.
//!
//! The fast simulator ([`super::run_fast`]) and the executor's admission path both drive this one
//! type, so that what the simulator predicts and what the server does come from the same code: the
//! simulator feeds it trace arrival times, the executor feeds it its (real or virtual) clock.
//!
//! State is one clock per (group, stage): the time that stage frees, given everything admitted so
//! far. The controller borrows its clocks so the simulator can reuse one buffer across thousands
//! of evaluations; nothing here allocates.

use super::Compiled;

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
            if finish - t <= slo {
                self.clocks[base] = x;
                return Decision::Admit {
                    group,
                    replica: r,
                    start_s: start,
                    finish_s: finish,
                };
            }
            return Decision::Reject {
                group,
                replica: r,
                projected_finish_s: finish,
            };
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
            if finish - t <= slo {
                self.clocks[base..base + pp].copy_from_slice(&stage_end[..pp]);
                return Decision::Admit {
                    group,
                    replica: r,
                    start_s: start,
                    finish_s: finish,
                };
            }
            return Decision::Reject {
                group,
                replica: r,
                projected_finish_s: finish,
            };
        }
        let (start, fin) = project(c, self.clocks, r, t);
        let finish = fin + self.overhead_s;
        if finish - t <= slo {
            commit(c, self.clocks, r, t);
            Decision::Admit {
                group,
                replica: r,
                start_s: start,
                finish_s: finish,
            }
        } else {
            Decision::Reject {
                group,
                replica: r,
                projected_finish_s: finish,
            }
        }
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
        if finish - t <= self.slo_s[m] {
            Decision::Admit {
                group,
                replica: r,
                start_s: start,
                finish_s: finish,
            }
        } else {
            Decision::Reject {
                group,
                replica: r,
                projected_finish_s: finish,
            }
        }
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
