//! A placement flattened for the hot loop: dense arrays indexed by model, replica and stage.

use crate::instance::Instance;
use crate::plan::Placement;

/// Replicas of every model with their penalized stage latencies, as flat arrays.
///
/// Replica `r` of model `m` lies in `rep_start[m]..rep_start[m+1]`, in ascending group order (the
/// dispatch tie-break). Its stage latencies are `lat[rep_lat[r]..rep_lat[r] + pp]` and its group's
/// stage clocks `clock[group_clock[rep_group[r]]..+pp]`.
#[derive(Debug, Clone, Default)]
pub struct Compiled {
    pub rep_start: Vec<u32>,
    pub rep_group: Vec<u32>,
    pub rep_lat: Vec<u32>,
    pub rep_pp: Vec<u32>,
    pub rep_tp: Vec<u32>,
    /// Index of the first stage clock of the replica's group (`group_clock[rep_group[r]]`),
    /// stored per replica so the hot loop needs one load instead of two.
    pub rep_clock: Vec<u32>,
    pub lat: Vec<f64>,
    /// Offset of every group's first stage clock; `group_clock[G]` is the number of clocks.
    pub group_clock: Vec<u32>,
    /// Raw (unpenalized) latencies, same layout as `lat` (used by `shortest_queue` bookkeeping).
    pub raw_lat: Vec<f64>,
    /// True when every group has one stage: the loop needs no stage iteration.
    pub single_stage: bool,
}

impl Compiled {
    /// Flattens `placement` using batch index `batch` of every profile.
    pub fn new(inst: &Instance, placement: &Placement, batch: usize, pp_penalty: f64) -> Compiled {
        let n_models = inst.models.len();
        let mut per_model: Vec<Vec<u32>> = vec![Vec::new(); n_models];
        for (g, group) in placement.groups.iter().enumerate() {
            for &m in &group.models {
                per_model[m as usize].push(g as u32);
            }
        }
        let mut group_clock = Vec::with_capacity(placement.groups.len() + 1);
        let mut off = 0u32;
        for group in &placement.groups {
            group_clock.push(off);
            off += group.pp;
        }
        group_clock.push(off);
        let mut c = Compiled {
            rep_start: Vec::with_capacity(n_models + 1),
            group_clock,
            single_stage: placement.groups.iter().all(|g| g.pp == 1),
            ..Compiled::default()
        };
        for (m, groups) in per_model.iter().enumerate() {
            c.rep_start.push(c.rep_group.len() as u32);
            for &g in groups {
                let group = &placement.groups[g as usize];
                let Some(cfg) = inst.profile_of(m).config(group.pp, group.tp) else {
                    // Validated plans never get here; an unprofiled replica simply never serves.
                    continue;
                };
                let b = batch.min(cfg.stage_latency_s.len() - 1);
                let factor = 1.0 + pp_penalty * group.pp as f64;
                c.rep_group.push(g);
                c.rep_lat.push(c.lat.len() as u32);
                c.rep_pp.push(group.pp);
                c.rep_tp.push(group.tp);
                c.rep_clock.push(c.group_clock[g as usize]);
                for &l in &cfg.stage_latency_s[b] {
                    c.lat.push(l * factor);
                    c.raw_lat.push(l);
                }
            }
        }
        c.rep_start.push(c.rep_group.len() as u32);
        c
    }

    pub fn n_clocks(&self) -> usize {
        *self.group_clock.last().unwrap_or(&0) as usize
    }

    pub fn n_groups(&self) -> usize {
        self.group_clock.len().saturating_sub(1)
    }

    /// Replica index range of model `m`.
    #[inline(always)]
    pub fn replicas(&self, m: usize) -> std::ops::Range<usize> {
        self.rep_start[m] as usize..self.rep_start[m + 1] as usize
    }
}

/// Widest pipeline the table-driven fast loop handles; deeper ones take the [`Controller`] path.
///
/// [`Controller`]: super::Controller
pub const MAX_TABLE_STAGES: usize = 16;

/// Deepest pipeline up to which a table of mixed depths is padded to one stage count.
const MAX_PADDED_STAGES: usize = 8;

/// [`Compiled`] rearranged for the fixed-dispatch fast loop: every model owns the same number of
/// replica *slots*, so the dispatch scan has a fixed trip count and no per-model range lookup.
///
/// Model `m` owns slots `m * width .. (m + 1) * width`. Its replicas fill the first slots in
/// ascending group order; the remaining slots repeat its first slot, which the earliest-last-stage
/// scan (lowest slot on ties) never picks over the original. A model without any replica gets
/// stand-in slots with zero latencies and an SLO of −∞: no projected latency meets it, so the
/// request is rejected without changing a clock, exactly as "no replica" requires, and every
/// projected latency stays finite.
///
/// Pipelines of mixed depths (a partition's leftover groups) are padded at the front to one
/// stage count, a power of two up to `MAX_PADDED_STAGES`, so that they take a loop with a fixed
/// stage count too: a varying count mispredicts the stage loop's exit and needs a copy of
/// unknown length per admitted request. A padding stage has latency −0.0 and a private clock
/// that only ever holds arrival times (it starts at −∞ and an admitted request writes its own
/// arrival time there), so for arrivals in time order it passes the arrival time through
/// unchanged, bit for bit: `later(t, c) = t` for `c ≤ t`, and `t + (−0.0) = t`. The loop's clock
/// array then has its own layout (`DispatchTable::clock_of`).
///
/// Fields are private: the fast loop indexes without bounds checks on the strength of the
/// invariants [`DispatchTable::rebuild`] establishes (every slot's `1 ≤ pp ≤ lat_stride`,
/// `pp ≤ last_clock + 1 ≤ clocks_needed`, `lat.len() = slots · lat_stride`).
#[derive(Debug, Clone, Default)]
pub struct DispatchTable {
    /// Slots per model: the largest replica count, at least 1.
    pub(super) width: usize,
    /// Stage count the loop walks for every slot (padding included), or 0 when slots differ.
    pub(super) uniform_pp: usize,
    /// Per slot: index of the last stage clock of the replica's group.
    pub(super) last_clock: Vec<u32>,
    /// Per slot: stages the loop walks (padding included).
    pub(super) pp: Vec<u32>,
    /// Per slot: padding stages in front of the replica's first real stage.
    pub(super) pad: Vec<u32>,
    /// Per slot: the replica's group, or [`super::NO_GROUP`] for a model without replica.
    pub(super) group: Vec<u32>,
    /// Per slot: penalized stage latencies at `slot * lat_stride ..`.
    pub(super) lat: Vec<f64>,
    /// Per slot: the model's SLO (−∞ for a stand-in slot).
    pub(super) slo_s: Vec<f64>,
    /// Largest stage count of any slot.
    pub(super) lat_stride: usize,
    /// Clocks of the loop's layout: the groups' clocks (with their padding clocks), then the
    /// stand-in slots' scratch clocks; at least `max(last_clock) + 1`.
    pub(super) clocks_needed: usize,
    /// Per clock of the [`Compiled`] layout: its index in the loop's layout (empty: the same).
    pub(super) clock_of: Vec<u32>,
    /// The first slot of every model without replica.
    pub(super) stand_ins: Vec<u32>,
    /// Per group: index of its last clock in the loop's layout (rebuild's scratch).
    group_last: Vec<u32>,
}

impl DispatchTable {
    /// Refills the table for `c` (reusing its buffers); `slo_s` holds every model's SLO.
    pub fn rebuild(&mut self, c: &Compiled, slo_s: &[f64]) {
        let n_models = slo_s.len();
        let width = (0..n_models)
            .map(|m| c.replicas(m).len())
            .max()
            .unwrap_or(0)
            .max(1);
        let deepest = c.rep_pp.iter().copied().max().unwrap_or(1).max(1) as usize;
        let first_pp = c.rep_pp.first().copied().unwrap_or(1);
        let uniform = c.rep_pp.iter().all(|&p| p == first_pp);
        let padded = !uniform && deepest <= MAX_PADDED_STAGES;
        let stride = if padded {
            deepest.next_power_of_two()
        } else {
            deepest
        };
        self.width = width;
        self.lat_stride = stride;
        self.uniform_pp = match (uniform, padded) {
            (true, _) => first_pp as usize,
            (false, true) => stride,
            (false, false) => 0,
        };
        self.last_clock.clear();
        self.pp.clear();
        self.pad.clear();
        self.group.clear();
        self.lat.clear();
        self.slo_s.clear();
        self.stand_ins.clear();
        self.clock_of.clear();
        self.group_last.clear();
        // The loop's clock layout: padded, every group takes at least `stride` clocks and its
        // real ones come last; otherwise the Compiled layout itself.
        let mut n_loop_clocks = 0u32;
        for g in 0..c.n_groups() {
            let (lo, hi) = (c.group_clock[g], c.group_clock[g + 1]);
            let block = if padded {
                (hi - lo).max(stride as u32)
            } else {
                hi - lo
            };
            let first_real = n_loop_clocks + block - (hi - lo);
            if padded {
                self.clock_of.extend(first_real..first_real + (hi - lo));
            }
            n_loop_clocks += block;
            self.group_last.push(n_loop_clocks.wrapping_sub(1));
        }
        // Stand-in slots get scratch clocks after the placement's own, one set per model without
        // replica. The branch-free loop rewrites the clocks a rejected request read (unchanged),
        // and a stand-in sharing a real group's clocks would chain every request for an unplaced
        // model to that group's requests through memory; private scratch clocks keep them
        // independent.
        let mut scratch_clock = n_loop_clocks;
        let stand_in_pp = if self.uniform_pp > 0 {
            self.uniform_pp as u32
        } else {
            1
        };
        for (m, &slo) in slo_s.iter().enumerate() {
            let reps = c.replicas(m);
            if reps.is_empty() {
                self.stand_ins.push((m * width) as u32);
                scratch_clock += stand_in_pp;
            }
            for j in 0..width {
                if reps.is_empty() {
                    self.last_clock.push(scratch_clock - 1);
                    self.pp.push(stand_in_pp);
                    self.pad.push(0);
                    self.group.push(super::NO_GROUP);
                    self.lat.extend(std::iter::repeat_n(0.0, stride));
                    self.slo_s.push(f64::NEG_INFINITY);
                    continue;
                }
                let r = if j < reps.len() {
                    reps.start + j
                } else {
                    reps.start
                };
                let pp = c.rep_pp[r];
                let walked = if padded { stride as u32 } else { pp };
                let pad = walked - pp;
                self.last_clock
                    .push(self.group_last[c.rep_group[r] as usize]);
                self.pp.push(walked);
                self.pad.push(pad);
                self.group.push(c.rep_group[r]);
                let lat0 = c.rep_lat[r] as usize;
                self.lat.extend(std::iter::repeat_n(-0.0, pad as usize));
                self.lat.extend_from_slice(&c.lat[lat0..lat0 + pp as usize]);
                self.lat
                    .extend(std::iter::repeat_n(0.0, stride - walked as usize));
                self.slo_s.push(slo);
            }
        }
        self.clocks_needed = self
            .last_clock
            .iter()
            .map(|&l| l as usize + 1)
            .max()
            .unwrap_or(0)
            .max(n_loop_clocks as usize);
        debug_assert!(self
            .last_clock
            .iter()
            .zip(&self.pp)
            .all(|(&l, &p)| p >= 1 && p as usize <= stride && p <= l + 1));
        debug_assert_eq!(self.lat.len(), self.slots() * stride);
    }

    /// Fills the loop's clock array from clocks in the [`Compiled`] layout: padding and
    /// stand-in clocks start at −∞ (earlier than any arrival).
    pub(super) fn load_clocks(&self, compiled: &[f64], out: &mut Vec<f64>) {
        out.clear();
        if self.clock_of.is_empty() {
            out.extend_from_slice(compiled);
            out.resize(compiled.len().max(self.clocks_needed), 0.0);
            return;
        }
        out.resize(self.clocks_needed, f64::NEG_INFINITY);
        for (&c, &i) in compiled.iter().zip(&self.clock_of) {
            out[i as usize] = c;
        }
    }

    /// Copies the loop's clocks back into the [`Compiled`] layout (`out.len()` of them).
    pub(super) fn store_clocks(&self, clocks: &[f64], out: &mut [f64]) {
        if self.clock_of.is_empty() {
            let n = out.len();
            out.copy_from_slice(&clocks[..n]);
        } else {
            for (o, &i) in out.iter_mut().zip(&self.clock_of) {
                *o = clocks[i as usize];
            }
        }
    }

    /// Number of slots (`width` per model).
    pub fn slots(&self) -> usize {
        self.last_clock.len()
    }

    /// Models the table was built for.
    pub fn n_models(&self) -> usize {
        self.slots() / self.width.max(1)
    }

    /// Stage clocks the fast loop needs: the placement's `n_clocks`, then scratch clocks for the
    /// stand-in slots of models without replica.
    pub fn clocks_needed(&self) -> usize {
        self.clocks_needed
    }

    /// Requests counted so far on the stand-in slots of models without replica.
    pub(super) fn no_replica_requests(&self, st: &super::FastState) -> u64 {
        self.stand_ins.iter().map(|&s| st.routed(s as usize)).sum()
    }

    /// Deepest pipeline in the table.
    pub fn max_pp(&self) -> usize {
        self.lat_stride
    }
}
