//! Baselines of §1.9 as placers: spatial partitioning (one LLM per mesh) and temporal
//! multiplexing (MuxServe's meshes and groups without SM partitioning).

use std::time::Instant;

use super::{check_params, lay_out, muxserve_place, LlmPlacer, LlmSolved};
use crate::error::{Result, SolverError};
use crate::llm::instance::LlmInstance;
use crate::llm::plan::{Deployment, EngineSpec, UnitSpec};
use crate::llm::workload::LlmTrace;
use crate::placer::PlaceOptions;

/// Smallest mesh (power of two ≥ min TP) that holds the LLM's weights with at least 10 % of its
/// memory left for KV.
pub(crate) fn min_mesh(inst: &LlmInstance, m: usize) -> Option<u32> {
    let mut g = inst.llms[m].spec.min_tp.max(1).next_power_of_two();
    while g <= inst.devices_per_node.min(inst.devices) {
        if inst.kv_pool_bytes_per_gpu(g, &[m]) >= 0.1 * inst.gpu.memory_gb * 1e9 {
            return Some(g);
        }
        g *= 2;
    }
    None
}

/// One LLM per mesh: minimum meshes first, then leftover GPUs double meshes while they still pack
/// into nodes. MuxServe's baseline grows the largest models first (which yields the note's 7B → 1,
/// 13B → 1, 30B → 4, 65B → 8 on 32 GPUs); `by_load` grows the most loaded per GPU
/// (λ · rate_scale / size) first, a stronger baseline.
pub fn spatial_deployment(
    inst: &LlmInstance,
    trace: &LlmTrace,
    by_load: bool,
) -> Result<Deployment> {
    let n = inst.llms.len();
    let lam = trace.rates(n);
    let mut sizes = Vec::with_capacity(n);
    for m in 0..n {
        sizes.push(min_mesh(inst, m).ok_or_else(|| {
            SolverError::Infeasible(format!(
                "LLM {} fits no mesh of one node",
                inst.llms[m].name
            ))
        })?);
    }
    if lay_out(&sizes, inst.devices, inst.devices_per_node).is_none() {
        return Err(SolverError::Infeasible(format!(
            "spatial partitioning needs {} GPUs, the cluster has {}",
            sizes.iter().sum::<u32>(),
            inst.devices
        )));
    }
    loop {
        let mut order: Vec<usize> = (0..n).collect();
        let load = |m: usize, s: &[u32]| {
            if by_load {
                lam[m] * inst.llms[m].spec.rate_scale / s[m] as f64
            } else {
                // Model size first (rate_scale grows with it), then load.
                inst.llms[m].spec.rate_scale * 1e9 + lam[m] / s[m] as f64
            }
        };
        order.sort_by(|&a, &b| load(b, &sizes).total_cmp(&load(a, &sizes)).then(a.cmp(&b)));
        let mut grown = false;
        for m in order {
            if sizes[m] * 2 > inst.devices_per_node {
                continue;
            }
            sizes[m] *= 2;
            if lay_out(&sizes, inst.devices, inst.devices_per_node).is_some() {
                grown = true;
                break;
            }
            sizes[m] /= 2;
        }
        if !grown {
            break;
        }
    }
    // The loop above only keeps sizes that lay out, so this is an invariant, reported as a
    // value rather than a panic should it ever break.
    let devices = lay_out(&sizes, inst.devices, inst.devices_per_node).ok_or_else(|| {
        SolverError::Infeasible("spatial partitioning lost its layout while growing meshes".into())
    })?;
    let mut dep = Deployment::default();
    for (m, devs) in devices.into_iter().enumerate().take(n) {
        dep.units.push(UnitSpec {
            devices: devs,
            engines: vec![EngineSpec {
                llm: m,
                prefill_sm_pct: 100,
                decode_sm_pct: 90,
                quota: None,
            }],
        });
    }
    dep.units.sort_by(|a, b| a.devices.cmp(&b.devices));
    Ok(dep)
}

pub struct Spatial;

impl LlmPlacer for Spatial {
    fn name(&self) -> &'static str {
        "spatial"
    }
    fn description(&self) -> &'static str {
        "baseline: one LLM per mesh, leftover GPUs grow the largest models' meshes (option by_load: the busiest), SM [100, 90]"
    }
    fn place(
        &self,
        inst: &LlmInstance,
        trace: &LlmTrace,
        opts: &PlaceOptions,
    ) -> Result<LlmSolved> {
        check_params(opts, self.name(), &["by_load"])?;
        let t0 = Instant::now();
        let dep = spatial_deployment(inst, trace, opts.flag("by_load")?)?;
        Ok(LlmSolved::heuristic(dep, 0, t0))
    }
}

pub struct Temporal;

impl LlmPlacer for Temporal {
    fn name(&self) -> &'static str {
        "temporal"
    }
    fn description(&self) -> &'static str {
        "baseline: MuxServe's meshes and groups, SM [100, 90] so jobs on a mesh never overlap (time slicing)"
    }
    fn place(
        &self,
        inst: &LlmInstance,
        trace: &LlmTrace,
        opts: &PlaceOptions,
    ) -> Result<LlmSolved> {
        check_params(opts, self.name(), &["faithful"])?;
        let t0 = Instant::now();
        let (mut dep, _, evals) = muxserve_place(inst, trace, opts.flag("faithful")?)?;
        for u in &mut dep.units {
            for e in &mut u.engines {
                e.prefill_sm_pct = 100;
                e.decode_sm_pct = 90;
            }
        }
        Ok(LlmSolved::heuristic(dep, evals, t0))
    }
}
