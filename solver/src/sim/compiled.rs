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
