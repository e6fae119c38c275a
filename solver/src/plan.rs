//! Plans (`plexserve/plan/v1`, contract.md §3): the file form, and the dense [`Placement`] the
//! simulator and placers work with.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{check_schema, parse_document, read_file, Result, SolverError};
use crate::instance::{Dispatch, Instance};

pub const PLAN_SCHEMA: &str = "plexserve/plan/v1";

/// A plan file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanFile {
    pub schema: String,
    pub instance: String,
    pub placer: String,
    pub segments: Vec<SegmentFile>,
    /// Dispatch policy the plan was made for; overrides the instance's `simulator.dispatch`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dispatch: Option<Dispatch>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predicted: Option<Predicted>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub solve: Option<SolveInfo>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentFile {
    pub start_s: f64,
    pub groups: Vec<GroupFile>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupFile {
    pub devices: Vec<u32>,
    pub pp: u32,
    pub tp: u32,
    pub models: Vec<String>,
}

/// The simulator's prediction for the plan on the instance's workload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Predicted {
    pub slo_attainment: f64,
    pub requests: u64,
    pub good: u64,
}

/// How the plan was found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SolveInfo {
    pub status: SolveStatus,
    pub time_s: f64,
    pub evaluations: u64,
    /// The optimizer's own objective, when it has one (e.g. the MILP's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objective: Option<f64>,
    /// The bound the optimizer proved on its objective over its whole search (a MILP: below
    /// for a minimisation), when it proves one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bound: Option<f64>,
    /// The relative gap `|best − bound| / |best|` between the best objective the search found
    /// and `bound` (what `status` is judged on); `objective` is the plan's own and can be
    /// worse when a simulator picked another of the search's plans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gap: Option<f64>,
    /// Whether the optimizer stopped on its time limit somewhere (a MILP left open, a search cut
    /// short), when it reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_limited: Option<bool>,
}

/// What a result may claim about its optimality.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SolveStatus {
    Optimal,
    GapLimit,
    TimeLimit,
    Heuristic,
}

/// One device group: `pp` stages of `tp` devices each, holding a set of models.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Group {
    pub pp: u32,
    pub tp: u32,
    pub devices: Vec<u32>,
    /// Model ids, ascending.
    pub models: Vec<u32>,
}

impl Group {
    /// An empty group on the given devices.
    pub fn new(pp: u32, tp: u32, devices: Vec<u32>) -> Group {
        Group {
            pp,
            tp,
            devices,
            models: Vec::new(),
        }
    }

    pub fn size(&self) -> u32 {
        self.pp * self.tp
    }
}

/// An ordered list of groups; the order is the dispatch tie-break order.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Placement {
    pub groups: Vec<Group>,
}

/// Placements over time: segment `k` is in force from `start_s[k]` until the next one starts.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Schedule {
    pub segments: Vec<(f64, Placement)>,
}

impl Schedule {
    /// A plan with one segment starting at 0.
    pub fn fixed(p: Placement) -> Schedule {
        Schedule {
            segments: vec![(0.0, p)],
        }
    }
}

impl Placement {
    /// Lays groups of the given (pp, tp) shapes out on consecutive devices from 0.
    pub fn from_shapes(shapes: &[(u32, u32)]) -> Placement {
        let mut next = 0u32;
        let groups = shapes
            .iter()
            .map(|&(pp, tp)| {
                let devices = (next..next + pp * tp).collect();
                next += pp * tp;
                Group::new(pp, tp, devices)
            })
            .collect();
        Placement { groups }
    }

    /// Number of model replicas, Σ_g |models(g)|.
    pub fn replicas(&self) -> usize {
        self.groups.iter().map(|g| g.models.len()).sum()
    }

    /// Per-device weight used by group `g`.
    pub fn used_gib(&self, inst: &Instance, g: usize) -> f64 {
        let gr = &self.groups[g];
        gr.models
            .iter()
            .map(|&m| model_weight_gib(inst, m as usize, gr.pp, gr.tp))
            .sum()
    }

    /// AlpaServe's normal form: each group's model list sorted, groups sorted by model tuple (empty
    /// first), configurations and devices moving with their group. Stable, so equal tuples keep
    /// their relative order.
    pub fn normalize(&mut self) {
        for g in &mut self.groups {
            g.models.sort_unstable();
        }
        self.groups.sort_by(|a, b| a.models.cmp(&b.models));
    }

    /// Checks devices, shapes, profiles and memory against the instance.
    pub fn validate(&self, inst: &Instance) -> std::result::Result<(), String> {
        let mut used = vec![false; inst.cluster.devices as usize];
        for (gi, g) in self.groups.iter().enumerate() {
            if g.pp == 0 || g.tp == 0 {
                return Err(format!("group {gi}: pp and tp must be at least 1"));
            }
            if g.devices.len() != g.size() as usize {
                return Err(format!(
                    "group {gi}: pp {} × tp {} needs {} devices, found {}",
                    g.pp,
                    g.tp,
                    g.size(),
                    g.devices.len()
                ));
            }
            for &d in &g.devices {
                let Some(slot) = used.get_mut(d as usize) else {
                    return Err(format!(
                        "group {gi}: device {d} does not exist (the cluster has {})",
                        inst.cluster.devices
                    ));
                };
                if *slot {
                    return Err(format!(
                        "group {gi}: device {d} is already in another group"
                    ));
                }
                *slot = true;
            }
            for (i, &m) in g.models.iter().enumerate() {
                let Some(model) = inst.models.get(m as usize) else {
                    return Err(format!("group {gi}: model id {m} does not exist"));
                };
                if g.models[..i].contains(&m) {
                    return Err(format!("group {gi}: model {} appears twice", model.name));
                }
                if inst.profile_of(m as usize).config(g.pp, g.tp).is_none() {
                    return Err(format!(
                        "group {gi}: model {} has no profile for pp {} tp {}",
                        model.name, g.pp, g.tp
                    ));
                }
            }
            let used_gib = self.used_gib(inst, gi);
            if used_gib > inst.budget_gib() * (1.0 + 1e-12) {
                return Err(format!(
                    "group {gi}: models need {used_gib:.3} GiB per device, the budget is {} GiB",
                    inst.budget_gib()
                ));
            }
        }
        Ok(())
    }
}

/// Per-device weight of model `m` in configuration (pp, tp); +∞ when not profiled.
pub fn model_weight_gib(inst: &Instance, m: usize, pp: u32, tp: u32) -> f64 {
    inst.profile_of(m)
        .config(pp, tp)
        .map_or(f64::INFINITY, |c| c.weight_gib())
}

impl PlanFile {
    /// Reads a plan file (syntax only; see [`PlanFile::resolve`]).
    pub fn load(path: &Path) -> Result<PlanFile> {
        let text = read_file(path)?;
        parse_document(path, &text, PLAN_SCHEMA)
    }

    /// Builds a plan file from a schedule.
    pub fn from_schedule(inst: &Instance, placer: &str, schedule: &Schedule) -> PlanFile {
        PlanFile {
            schema: PLAN_SCHEMA.into(),
            instance: inst.name.clone(),
            placer: placer.into(),
            segments: schedule
                .segments
                .iter()
                .map(|(start_s, p)| SegmentFile {
                    start_s: *start_s,
                    groups: p
                        .groups
                        .iter()
                        .map(|g| GroupFile {
                            devices: g.devices.clone(),
                            pp: g.pp,
                            tp: g.tp,
                            models: g
                                .models
                                .iter()
                                .map(|&m| inst.models[m as usize].name.clone())
                                .collect(),
                        })
                        .collect(),
                })
                .collect(),
            dispatch: None,
            predicted: None,
            solve: None,
        }
    }

    /// Validates the plan against the instance and converts it to dense ids.
    pub fn resolve(&self, path: &Path, inst: &Instance) -> Result<Schedule> {
        let bad = |p: String, m: String| SolverError::invalid(path, p, m);
        check_schema(path, PLAN_SCHEMA, &self.schema)?;
        if self.segments.is_empty() {
            return Err(bad(
                "segments".into(),
                "expected at least one segment".into(),
            ));
        }
        let mut schedule = Schedule::default();
        let mut last = f64::NEG_INFINITY;
        for (si, seg) in self.segments.iter().enumerate() {
            let at = format!("segments[{si}]");
            if !seg.start_s.is_finite() || seg.start_s < 0.0 || seg.start_s <= last {
                return Err(bad(
                    format!("{at}.start_s"),
                    "expected non-negative start times in strictly ascending order".into(),
                ));
            }
            if si == 0 && seg.start_s > 0.0 {
                return Err(bad(
                    format!("{at}.start_s"),
                    "the first segment must start at 0".into(),
                ));
            }
            last = seg.start_s;
            let mut placement = Placement::default();
            for (gi, g) in seg.groups.iter().enumerate() {
                let mut models = Vec::with_capacity(g.models.len());
                for (mi, name) in g.models.iter().enumerate() {
                    let m = inst.model_id(name).ok_or_else(|| {
                        bad(
                            format!("{at}.groups[{gi}].models[{mi}]"),
                            format!("unknown model \"{name}\""),
                        )
                    })?;
                    models.push(m as u32);
                }
                placement.groups.push(Group {
                    pp: g.pp,
                    tp: g.tp,
                    devices: g.devices.clone(),
                    models,
                });
            }
            placement
                .validate(inst)
                .map_err(|msg| bad(format!("{at}.groups"), msg))?;
            // Keep the file's model order within a group for display, but the simulator only
            // needs membership; dispatch order is group order.
            schedule.segments.push((seg.start_s, placement));
        }
        Ok(schedule)
    }

    /// Serializes with a trailing newline.
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("plan serializes");
        s.push('\n');
        s
    }
}
