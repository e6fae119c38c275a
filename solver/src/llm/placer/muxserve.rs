//! MuxServe's placer (llm-serving.md §1.4–§1.6): per-node mesh enumeration, a throughput estimator
//! over the cost model, and greedy assignment by marginal estimated throughput.
//!
//! Fixed by default; `muxserve:faithful` reproduces the reference implementation's quirks:
//! mesh baselines cached by *position* in a list re-sorted after every placement (index drift),
//! ShareGPT's 161/337 means instead of the workload's lengths, and the standalone KV budget taken
//! as the cluster-wide weight fraction.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Instant;

use rayon::prelude::*;

use super::{check_params, lay_out, node_patterns, LlmPlacer, LlmSolved};
use crate::error::{Result, SolverError};
use crate::llm::cost::StepCost;
use crate::llm::instance::LlmInstance;
use crate::llm::plan::{Deployment, EngineSpec, UnitSpec};
use crate::llm::workload::LlmTrace;
use crate::placer::PlaceOptions;

/// MuxServe's memory constants, GB (decimal): activation reserve per LLM, per-placement overhead.
const ACT_GB: f64 = 6.0;
const PLACE_OVERHEAD_GB: f64 = 1.6;
/// Per-GPU weight budget at placement: 0.9 · (1 − 0.4) · memory.
const WEIGHT_BUDGET_FRACTION: f64 = 0.9 * (1.0 - 0.4);

/// A per-(LLM, mesh size) candidate: decode SM share, standalone batch, throughput.
#[derive(Debug, Clone, Copy)]
pub struct Cand {
    pub sm_pct: u32,
    pub batch: f64,
    pub x: f64,
}

/// The throughput estimator of §1.5.
pub struct Estimator<'a> {
    inst: &'a LlmInstance,
    pub lam: Vec<f64>,
    s_in: Vec<f64>,
    s_out: Vec<f64>,
    faithful: bool,
    /// `costs[m][log2 g]`.
    costs: Vec<Vec<StepCost>>,
    /// `cands[m][log2 g]`.
    pub cands: Vec<Vec<Option<Cand>>>,
    cache: Mutex<BTreeMap<(u32, Vec<u32>), f64>>,
}

fn log2(g: u32) -> usize {
    g.trailing_zeros() as usize
}

impl<'a> Estimator<'a> {
    pub fn new(inst: &'a LlmInstance, trace: &LlmTrace, faithful: bool) -> Estimator<'a> {
        let n = inst.llms.len();
        let lam: Vec<f64> = trace.rates(n).iter().map(|&r| r.max(1e-6)).collect();
        let lens = trace.mean_lengths(n);
        let (s_in, s_out) = if faithful {
            (vec![161.0; n], vec![337.0; n])
        } else {
            (
                lens.iter().map(|l| l.0).collect(),
                lens.iter().map(|l| l.1).collect(),
            )
        };
        let max_g = inst.devices_per_node.min(inst.devices).next_power_of_two();
        let sizes: Vec<u32> = (0..=log2(max_g)).map(|k| 1u32 << k).collect();
        let costs = (0..n)
            .map(|m| sizes.iter().map(|&g| inst.step_cost(m, g)).collect())
            .collect();
        let mut e = Estimator {
            inst,
            lam,
            s_in,
            s_out,
            faithful,
            costs,
            cands: Vec::new(),
            cache: Mutex::new(BTreeMap::new()),
        };
        e.cands = (0..n)
            .map(|m| sizes.iter().map(|&g| e.standalone(m, g)).collect())
            .collect();
        e
    }

    fn t_pre(&self, m: usize, b: f64, g: u32) -> f64 {
        let s = self.s_in[m];
        self.costs[m][log2(g)].prefill_s(b * s, b * s * s, 1.0)
    }

    fn t_dec(&self, m: usize, b: f64, g: u32, sm: f64) -> f64 {
        // Mean context over a generation: the prompt plus half the output.
        self.costs[m][log2(g)].decode_s(b, b * (self.s_in[m] + self.s_out[m] / 2.0), sm)
    }

    fn kv_gb_per_token(&self, m: usize) -> f64 {
        self.inst.llms[m].spec.kv_bytes_per_token() / 1e9
    }

    fn max_profiled_batch(g: u32) -> f64 {
        256.0 * g as f64
    }

    /// Largest batch whose KV fits `kv_gb` GB.
    fn maxbs(&self, m: usize, g: u32, kv_gb: f64) -> f64 {
        (kv_gb / (self.kv_gb_per_token(m) * (self.s_in[m] + self.s_out[m])))
            .floor()
            .clamp(0.0, Self::max_profiled_batch(g))
    }

    fn weight_gb(&self, m: usize) -> f64 {
        self.inst.llms[m].spec.weight_bytes() / 1e9
    }

    fn mem_gb(&self) -> f64 {
        self.inst.gpu.memory_gb
    }

    /// Standalone candidate of LLM m on a mesh of g GPUs (None when it cannot be placed there).
    fn standalone(&self, m: usize, g: u32) -> Option<Cand> {
        let spec = &self.inst.llms[m].spec;
        if g < spec.min_tp || self.weight_gb(m) > WEIGHT_BUDGET_FRACTION * self.mem_gb() * g as f64
        {
            return None;
        }
        let kv = if self.faithful {
            // Quirk: the KV budget is the cluster-wide weight fraction of the mesh's memory.
            let total_w: f64 = (0..self.inst.llms.len()).map(|i| self.weight_gb(i)).sum();
            total_w / (self.mem_gb() * self.inst.devices as f64) * self.mem_gb() * g as f64
        } else {
            0.98 * self.mem_gb() * g as f64 - self.weight_gb(m) - ACT_GB
        };
        let maxbs = self.maxbs(m, g, kv).max(1.0);
        let lam = self.lam[m];
        let x_at =
            |b: f64, sm: f64| b / (self.s_out[m] * self.t_dec(m, b, g, sm) + self.t_pre(m, b, g));
        let mut best: Option<Cand> = None;
        for sm_pct in (30..=90).step_by(10) {
            let sm = sm_pct as f64 / 100.0;
            // Smallest real B in [1, max(2, maxbs)] with x(B) ≥ λ (x grows with B).
            let (mut lo, mut hi) = (1.0f64, maxbs.max(2.0));
            let b = if x_at(hi, sm) < lam {
                hi
            } else {
                for _ in 0..40 {
                    let mid = 0.5 * (lo + hi);
                    if x_at(mid, sm) >= lam {
                        hi = mid;
                    } else {
                        lo = mid;
                    }
                }
                hi
            };
            let x = x_at(b, sm);
            let c = Cand {
                sm_pct,
                batch: b,
                x,
            };
            if x + (0.1 * x).min(0.5) > lam {
                return Some(c);
            }
            if best.is_none_or(|o| x > o.x) {
                best = Some(c);
            }
        }
        best
    }

    /// Colocated mesh estimate T (§1.5) for `set` (LLM ids, ascending) on g GPUs.
    pub fn mesh_t(&self, g: u32, set: &[u32]) -> f64 {
        if set.is_empty() {
            return 0.0;
        }
        let key = (g, set.to_vec());
        if let Some(&t) = self
            .cache
            .lock()
            .ok()
            .and_then(|c| c.get(&key).copied())
            .as_ref()
        {
            return t;
        }
        let t = self.mesh_t_uncached(g, set);
        if let Ok(mut c) = self.cache.lock() {
            c.insert(key, t);
        }
        t
    }

    fn mesh_t_uncached(&self, g: u32, set: &[u32]) -> f64 {
        let ids: Vec<usize> = set.iter().map(|&m| m as usize).collect();
        let n = ids.len();
        let kv = 0.98 * self.mem_gb() * g as f64
            - ids.iter().map(|&m| self.weight_gb(m)).sum::<f64>()
            - ACT_GB * n as f64;
        let wsum: f64 = ids
            .iter()
            .map(|&m| self.lam[m] * self.kv_gb_per_token(m))
            .sum();
        let maxbs: Vec<f64> = ids
            .iter()
            .map(|&m| {
                self.maxbs(m, g, kv * self.lam[m] * self.kv_gb_per_token(m) / wsum)
                    .max(1.0)
            })
            .collect();
        let mut b: Vec<f64> = ids
            .iter()
            .enumerate()
            .map(|(k, &m)| {
                self.cands[m][log2(g)]
                    .map_or(1.0, |c| c.batch)
                    .min(maxbs[k])
            })
            .collect();
        let sm: Vec<f64> = ids
            .iter()
            .map(|&m| self.cands[m][log2(g)].map_or(0.9, |c| c.sm_pct as f64 / 100.0))
            .collect();
        let lam_sum: f64 = ids.iter().map(|&m| self.lam[m]).sum();
        let mut best = 0.0f64;
        let mut x = vec![0.0; n];
        for _ in 0..100_000 {
            if (0..n).all(|k| b[k] >= maxbs[k]) {
                break;
            }
            let pre: f64 = (0..n).map(|k| self.t_pre(ids[k], b[k], g)).sum();
            let mut sat = vec![false; n];
            for k in 0..n {
                let m = ids[k];
                let xi = b[k] / (self.s_out[m] * self.t_dec(m, b[k], g, sm[k]) + pre);
                sat[k] = xi + (0.1 * xi).min(0.5) > self.lam[m];
                x[k] = if sat[k] { self.lam[m] } else { xi };
            }
            let t: f64 = (0..n).map(|k| self.lam[ids[k]] * x[k]).sum::<f64>() / lam_sum;
            best = best.max(t);
            let pick = (0..n)
                .filter(|&k| !sat[k] && b[k] < maxbs[k])
                .min_by(|&a, &c| {
                    (x[a] / self.lam[ids[a]])
                        .total_cmp(&(x[c] / self.lam[ids[c]]))
                        .then(a.cmp(&c))
                });
            let Some(k) = pick else { break };
            b[k] += 1.0;
        }
        if best <= 0.0 {
            // Every batch already at its maximum: evaluate once.
            let pre: f64 = (0..n).map(|k| self.t_pre(ids[k], b[k], g)).sum();
            for k in 0..n {
                let m = ids[k];
                let xi = b[k] / (self.s_out[m] * self.t_dec(m, b[k], g, sm[k]) + pre);
                x[k] = if xi + (0.1 * xi).min(0.5) > self.lam[m] {
                    self.lam[m]
                } else {
                    xi
                };
            }
            best = (0..n).map(|k| self.lam[ids[k]] * x[k]).sum::<f64>() / lam_sum;
        }
        best
    }
}

/// One greedy run over a candidate mesh group; returns (J, per-mesh LLM lists).
fn greedy(est: &Estimator, meshes: &[u32], faithful: bool) -> Option<(f64, Vec<Vec<u32>>)> {
    let inst = est.inst;
    let n = inst.llms.len();
    let mut order: Vec<usize> = (0..n).collect();
    let key = |m: usize| {
        (
            est.lam[m] * inst.llms[m].spec.rate_scale,
            inst.llms[m].spec.rate_scale,
        )
    };
    order.sort_by(|&a, &b| {
        key(b)
            .0
            .total_cmp(&key(a).0)
            .then(key(b).1.total_cmp(&key(a).1))
            .then(a.cmp(&b))
    });
    let nm = meshes.len();
    let mut free: Vec<f64> = meshes
        .iter()
        .map(|&g| WEIGHT_BUDGET_FRACTION * est.mem_gb() * g as f64)
        .collect();
    let mut sm_left = vec![100i32; nm];
    let mut tag = vec![0.0f64; nm];
    let mut sets: Vec<Vec<u32>> = vec![Vec::new(); nm];
    // Mesh baselines T(m): by stable id (fixed) or by position in the sorted list (faithful).
    let mut base = vec![0.0f64; nm];
    let mut pos: Vec<usize> = (0..nm).collect();
    let sort = |pos: &mut Vec<usize>, tag: &[f64], free: &[f64]| {
        pos.sort_by(|&a, &b| {
            tag[b]
                .total_cmp(&tag[a])
                .then(free[b].total_cmp(&free[a]))
                .then(a.cmp(&b))
        });
    };
    sort(&mut pos, &tag, &free);
    for &m in &order {
        let w = est.weight_gb(m);
        let mut best: Option<(f64, u32, usize, usize)> = None; // (gain, size, mesh id, position)
        for (p, &id) in pos.iter().enumerate() {
            let g = meshes[id];
            let Some(c) = est.cands[m][log2(g)] else {
                continue;
            };
            if free[id] < w || sm_left[id] + 20 < c.sm_pct as i32 {
                continue;
            }
            let mut s = sets[id].clone();
            s.push(m as u32);
            s.sort_unstable();
            let before = if faithful { base[p] } else { base[id] };
            let gain = est.mesh_t(g, &s) - before;
            let better = match best {
                None => true,
                Some((bg, bs, _, _)) => gain > bg + 1e-12 || ((gain - bg).abs() <= 1e-12 && g < bs),
            };
            if better {
                best = Some((gain, g, id, p));
            }
        }
        let (_, g, id, p) = best?;
        sets[id].push(m as u32);
        sets[id].sort_unstable();
        let t = est.mesh_t(g, &sets[id]);
        if faithful {
            base[p] = t;
        } else {
            base[id] = t;
        }
        free[id] -= w + PLACE_OVERHEAD_GB + ACT_GB;
        sm_left[id] -= est.cands[m][log2(g)].map_or(0, |c| c.sm_pct as i32);
        tag[id] -= est.lam[m] * inst.llms[m].spec.rate_scale / g as f64;
        sort(&mut pos, &tag, &free);
    }
    let lam_sum: f64 = est.lam.iter().sum();
    let j: f64 = (0..nm)
        .map(|id| {
            let l: f64 = sets[id].iter().map(|&m| est.lam[m as usize]).sum();
            est.mesh_t(meshes[id], &sets[id]) * l
        })
        .sum::<f64>()
        / lam_sum;
    Some((j, sets))
}

/// Candidate mesh groups: multisets of per-node patterns (C(P + N − 1, N) for N full nodes, in
/// lexicographic order of the non-decreasing pattern indices, the partial node's pattern
/// innermost), keeping those of at most `max_meshes` meshes. Branches that cannot stay within
/// `max_meshes` are never entered: a large cluster has astronomically many multisets (128 GPUs
/// in 8-GPU nodes: 2 · 10⁶, 256: 3.5 · 10⁸) but few within the mesh budget.
fn candidates(inst: &LlmInstance, max_meshes: usize) -> Vec<Vec<u32>> {
    // A node cannot hold more GPUs than the cluster has.
    let per = inst.devices_per_node.min(inst.devices);
    let pats = node_patterns(per);
    let tail: Vec<Vec<u32>> = match inst.devices % per {
        0 => vec![Vec::new()],
        rest => node_patterns(rest),
    };
    // Fewest meshes any pattern from index k on has (patterns are not ordered by length).
    let mut fewest_from = vec![usize::MAX; pats.len() + 1];
    for k in (0..pats.len()).rev() {
        fewest_from[k] = fewest_from[k + 1].min(pats[k].len());
    }
    let fewest_tail = tail.iter().map(Vec::len).min().unwrap_or(0);
    struct Walk<'p> {
        pats: &'p [Vec<u32>],
        tail: &'p [Vec<u32>],
        fewest_from: &'p [usize],
        fewest_tail: usize,
        max_meshes: usize,
        chosen: Vec<u32>,
        out: Vec<Vec<u32>>,
    }
    impl Walk<'_> {
        /// Chooses the patterns of `nodes_left` more nodes, from index `from` on.
        fn nodes(&mut self, from: usize, nodes_left: usize) {
            if nodes_left == 0 {
                for t in self.tail {
                    if self.chosen.len() + t.len() <= self.max_meshes {
                        let mut sizes = self.chosen.clone();
                        sizes.extend_from_slice(t);
                        self.out.push(sizes);
                    }
                }
                return;
            }
            for k in from..self.pats.len() {
                let p = &self.pats[k];
                let least = self.chosen.len()
                    + p.len()
                    + (nodes_left - 1) * self.fewest_from[k]
                    + self.fewest_tail;
                if least > self.max_meshes {
                    continue;
                }
                self.chosen.extend_from_slice(p);
                self.nodes(k, nodes_left - 1);
                self.chosen.truncate(self.chosen.len() - p.len());
            }
        }
    }
    let mut walk = Walk {
        pats: &pats,
        tail: &tail,
        fewest_from: &fewest_from,
        fewest_tail,
        max_meshes,
        chosen: Vec::new(),
        out: Vec::new(),
    };
    // More full nodes than meshes allowed: no candidate (each node holds at least one mesh).
    let full = (inst.devices / per) as usize;
    if full <= max_meshes {
        walk.nodes(0, full);
    }
    walk.out
}

/// Runs MuxServe's placement; also used by the temporal baseline and as a search seed.
pub fn muxserve_place(
    inst: &LlmInstance,
    trace: &LlmTrace,
    faithful: bool,
) -> Result<(Deployment, f64, u64)> {
    let est = Estimator::new(inst, trace, faithful);
    let n = inst.llms.len();
    let max_min_tp = inst.llms.iter().map(|l| l.spec.min_tp).max().unwrap_or(1);
    let cands: Vec<Vec<u32>> = candidates(inst, n.max(1))
        .into_iter()
        .filter(|c| c.iter().copied().max().unwrap_or(0) >= max_min_tp)
        .collect();
    let evals = cands.len() as u64;
    let results: Vec<Option<(f64, Vec<Vec<u32>>)>> = cands
        .par_iter()
        .map(|c| greedy(&est, c, faithful))
        .collect();
    let mut best: Option<(f64, usize)> = None;
    for (i, r) in results.iter().enumerate() {
        if let Some((j, _)) = r {
            if best.is_none_or(|(bj, _)| *j > bj + 1e-12) {
                best = Some((*j, i));
            }
        }
    }
    let (j, i) = best.ok_or_else(|| {
        let nodes = inst.devices / inst.devices_per_node.min(inst.devices);
        SolverError::Infeasible(if nodes as usize > n.max(1) {
            format!(
                "MuxServe places each LLM once and every node holds a mesh: {nodes} nodes are more than the {n} LLMs (spatial and plexserve-llm use them all)"
            )
        } else {
            "MuxServe found no mesh group that holds every LLM".into()
        })
    })?;
    let sets = results[i].as_ref().map(|r| r.1.clone()).unwrap_or_default();
    let sizes = &cands[i];
    let devices = lay_out(sizes, inst.devices, inst.devices_per_node)
        .ok_or_else(|| SolverError::Infeasible("mesh sizes do not fit the nodes".into()))?;
    let mut dep = Deployment::default();
    for (id, set) in sets.iter().enumerate() {
        // Meshes that receive no LLM are not deployed (MuxServe's behaviour).
        if set.is_empty() {
            continue;
        }
        let g = sizes[id];
        dep.units.push(UnitSpec {
            devices: devices[id].clone(),
            engines: set
                .iter()
                .map(|&m| {
                    let m = m as usize;
                    let c = est.cands[m][log2(g)];
                    EngineSpec {
                        llm: m,
                        // Fixed mode: a lone LLM has no one to share SMs with, so its prefill
                        // takes them all (the reference runtime still caps it at 80/90 %).
                        prefill_sm_pct: if !faithful && set.len() == 1 {
                            100
                        } else {
                            inst.llms[m].spec.prefill_sm_pct
                        },
                        decode_sm_pct: c.map_or(90, |c| c.sm_pct),
                        // Faithful: the standalone batch is the sequence quota; fixed: quotas come
                        // from the KV split at run time (ADBS).
                        quota: if faithful {
                            c.map(|c| c.batch.ceil().max(1.0) as u32)
                        } else {
                            None
                        },
                    }
                })
                .collect(),
        });
    }
    dep.units.sort_by(|a, b| a.devices.cmp(&b.devices));
    Ok((dep, j, evals))
}

pub struct MuxServe;

impl LlmPlacer for MuxServe {
    fn name(&self) -> &'static str {
        "muxserve"
    }
    fn description(&self) -> &'static str {
        "MuxServe: per-node mesh enumeration, greedy by marginal estimated throughput, SM-partitioned colocation (option faithful)"
    }
    fn place(
        &self,
        inst: &LlmInstance,
        trace: &LlmTrace,
        opts: &PlaceOptions,
    ) -> Result<LlmSolved> {
        check_params(opts, self.name(), &["faithful"])?;
        let t0 = Instant::now();
        let (dep, j, evals) = muxserve_place(inst, trace, opts.flag("faithful")?)?;
        Ok(LlmSolved {
            objective: Some(j),
            ..LlmSolved::heuristic(dep, evals, t0)
        })
    }
}
