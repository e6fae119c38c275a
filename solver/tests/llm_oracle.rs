//! The LLM placers against a brute-force oracle on a node small enough to enumerate: every
//! partition of its GPUs into meshes, every set of LLMs on each mesh, and every SM share the
//! placers use (prefill: the LLM's own share or 100 %; decode: 30, 50, 70 or 90 %, at most 120 %
//! per mesh, as the placers require), each deployment that serves every LLM simulated, for two
//! LLM pairs at three loads each. No placer may beat the oracle inside that space, no deployment
//! may meet more than 0.5 % more SLOs than ours without losing throughput, and ours must come
//! within 5 % of the most SLOs any deployment meets.

use std::path::Path;

use plexserve_solver::llm::placer::node_patterns;
use plexserve_solver::llm::*;
use plexserve_solver::PlaceOptions;
use rayon::prelude::*;

const PREFILL_ALONE: u32 = 100;
const DECODE: [u32; 4] = [30, 50, 70, 90];
const MAX_DECODE_PER_MESH: u32 = 120;

/// The engines one mesh may run: none, or a set of LLMs with one SM setting each.
fn mesh_options(inst: &LlmInstance) -> Vec<Vec<EngineSpec>> {
    let n = inst.llms.len();
    let mut out = vec![vec![]];
    for set in 1..(1u32 << n) {
        let llms: Vec<usize> = (0..n).filter(|&m| set >> m & 1 == 1).collect();
        // Every (prefill, decode) choice per engine, as a mixed-radix counter.
        let per = 2 * DECODE.len();
        for code in 0..per.pow(llms.len() as u32) {
            let mut c = code;
            let engines: Vec<EngineSpec> = llms
                .iter()
                .map(|&m| {
                    let (p, d) = (c % 2, c / 2 % DECODE.len());
                    c /= per;
                    EngineSpec {
                        llm: m,
                        prefill_sm_pct: [inst.llms[m].spec.prefill_sm_pct, PREFILL_ALONE][p],
                        decode_sm_pct: DECODE[d],
                        quota: None,
                    }
                })
                .collect();
            if engines.iter().map(|e| e.decode_sm_pct).sum::<u32>() <= MAX_DECODE_PER_MESH {
                out.push(engines);
            }
        }
    }
    out
}

/// Every deployment of the space on a one-node cluster (meshes in pattern order, engines by LLM).
fn space(inst: &LlmInstance) -> Vec<Deployment> {
    assert_eq!(inst.devices, inst.devices_per_node, "one node");
    let options = mesh_options(inst);
    let mut out = Vec::new();
    for pattern in node_patterns(inst.devices) {
        let meshes: Vec<Vec<u32>> = pattern
            .iter()
            .scan(0u32, |start, &size| {
                let m = (*start..*start + size).collect();
                *start += size;
                Some(m)
            })
            .collect();
        let k = meshes.len();
        for code in 0..options.len().pow(k as u32) {
            let mut c = code;
            let mut units = Vec::new();
            for mesh in &meshes {
                let engines = &options[c % options.len()];
                c /= options.len();
                if !engines.is_empty() {
                    units.push(UnitSpec {
                        devices: mesh.clone(),
                        engines: engines.clone(),
                    });
                }
            }
            // A multi-model server serves every model: each LLM on at least one mesh.
            let served = |m: usize| units.iter().any(|u| u.engines.iter().any(|e| e.llm == m));
            if (0..inst.llms.len()).all(served) {
                out.push(Deployment {
                    units,
                    transforms: vec![],
                });
            }
        }
    }
    out
}

/// The same deployment written the oracle's way (units by device, engines by LLM), and whether
/// it lies in the oracle's space at all.
fn canonical(inst: &LlmInstance, d: &Deployment) -> (Deployment, bool) {
    let mut d = d.clone();
    d.units.sort_by(|a, b| a.devices.cmp(&b.devices));
    let mut inside = d.transforms.is_empty();
    for u in &mut d.units {
        u.engines.sort_by_key(|e| e.llm);
        inside &= u.engines.windows(2).all(|w| w[0].llm < w[1].llm);
        inside &= u.engines.iter().map(|e| e.decode_sm_pct).sum::<u32>() <= MAX_DECODE_PER_MESH;
        for e in &u.engines {
            inside &= DECODE.contains(&e.decode_sm_pct)
                && [inst.llms[e.llm].spec.prefill_sm_pct, PREFILL_ALONE]
                    .contains(&e.prefill_sm_pct);
        }
    }
    (d, inside)
}

/// SLO-good requests, then throughput: the order the oracle maximises.
fn score(r: &LlmSimReport) -> (u64, f64) {
    (r.good, r.throughput_rps)
}

#[test]
fn no_placer_beats_the_brute_force_oracle_and_ours_comes_close() {
    let path = Path::new("../instances/llm/tiny-two-7b.json");
    let text = std::fs::read_to_string(path).unwrap();
    // The shipped pair (two 7B LLMs, one hot) and a pair of unequal sizes (a 13B the hot one).
    let mut mixed: serde_json::Value = serde_json::from_str(&text).unwrap();
    mixed["llms"][0]["spec"] = "llama-13b".into();
    let cases = [(text.clone(), 1.0), (text.clone(), 4.0), (text, 16.0)]
        .into_iter()
        .chain([1.0, 3.0, 8.0].map(|r| (mixed.to_string(), r)));
    for (json, rate) in cases {
        let mut inst = LlmInstance::from_json(path, &json).unwrap();
        inst.workload.scale_rate(rate);
        let trace = inst
            .workload
            .generate(inst.base_dir(), inst.llms.len())
            .unwrap();
        let all = space(&inst);
        // Two GPUs, two LLMs: one 2-GPU mesh holding both (40 SM settings), or two 1-GPU meshes
        // with 57 options each (none, either LLM alone in 8 settings, both in 40) that between
        // them serve both LLMs (less the 9 × 9 pairs without either one, plus the empty pair
        // counted twice).
        assert_eq!(all.len(), 40 + (57 * 57 - 9 * 9 - 9 * 9 + 1));
        // The best score, the first deployment in enumeration order on a tie (deterministic
        // whatever the thread count).
        let scores: Vec<(u64, f64)> = all
            .par_iter()
            .map(|d| score(&simulate(&inst, &trace, d)))
            .collect();
        let (best, oracle) = scores
            .iter()
            .copied()
            .enumerate()
            .reduce(|a, b| if b.1 > a.1 { b } else { a })
            .unwrap();
        let at = format!("rate ×{rate}: oracle {oracle:?} with {:?}", all[best]);
        let mut ours = None;
        for placer in ["muxserve", "spatial", "temporal", "plexserve-llm"] {
            let (p, o) = llm_placer(placer, &PlaceOptions::default()).unwrap();
            let d = p.place(&inst, &trace, &o).unwrap().deployment;
            let (d, inside) = canonical(&inst, &d);
            let s = score(&simulate(&inst, &trace, &d));
            if inside {
                assert!(
                    s <= oracle,
                    "{placer} {s:?} beats the oracle inside its space; {at}"
                );
            }
            if placer == "plexserve-llm" {
                ours = Some(s);
            }
        }
        // Ours accepts only moves that lose neither SLO-good requests nor throughput, and it is a
        // local search: no deployment of the space may meet more than 0.5 % more SLOs without
        // losing throughput (before the mesh split and merge moves, the 7B pair at ×4 had one
        // with 10 % more: 913 good at 12.64 req/s against our 831 at 12.47)…
        let ours = ours.unwrap();
        let better = scores
            .iter()
            .zip(&all)
            .find(|(o, _)| o.0 as f64 > 1.005 * ours.0 as f64 && o.1 >= ours.1);
        assert!(
            better.is_none(),
            "plexserve-llm {ours:?}, yet {better:?}; {at}"
        );
        // …and it comes within 5 % of the most SLO-good requests any deployment meets (those
        // plans give up throughput for them: ×16, 797 good at 8.7 req/s against 769 at 14.9).
        assert!(
            ours.0 as f64 >= 0.95 * oracle.0 as f64,
            "plexserve-llm {ours:?}; {at}"
        );
    }
}
