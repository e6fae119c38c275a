//! Exploration helpers (ignored): print figures for calibrating instances.
use std::path::Path;
use std::time::Instant;

use plexserve_solver::llm::*;
use plexserve_solver::PlaceOptions;

fn run(path: &str, scale: f64, placers: &[&str]) {
    let mut inst = LlmInstance::load(Path::new(path)).unwrap();
    inst.workload.scale_rate(scale);
    let trace = inst
        .workload
        .generate(inst.base_dir(), inst.llms.len())
        .unwrap();
    for p in placers {
        let t0 = Instant::now();
        let (pl, o) = llm_placer(p, &PlaceOptions::default()).unwrap();
        let s = pl.place(&inst, &trace, &o).unwrap();
        let tp = t0.elapsed().as_secs_f64();
        let t1 = Instant::now();
        let r = simulate(&inst, &trace, &s.deployment);
        eprintln!(
            "{path} x{scale} {p:28} req {} fin {} drop {} good {} att {:.3} thr {:.2} mux {:.2} gput {:.2} ttft99 {:.2} tpot99 {:.3} pre {} iters {} merges {} units {} place {:.2}s sim {:.2}s",
            r.requests, r.finished, r.dropped, r.good, r.slo_attainment, r.throughput_rps, r.muxserve_throughput_rps, r.goodput_rps,
            r.ttft_s.p99, r.tpot_s.p99, r.preemptions, r.iterations, r.merges, s.deployment.units.len(), tp, t1.elapsed().as_secs_f64()
        );
    }
}

#[test]
#[ignore]
fn explore_synthetic() {
    let a: f64 = std::env::var("ALPHA")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.9);
    let s: f64 = std::env::var("SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1.0);
    let mut inst: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string("../instances/llm/muxserve-synthetic.json").unwrap(),
    )
    .unwrap();
    inst["workload"]["alpha"] = a.into();
    let p = std::env::temp_dir().join(format!("syn-{a}.json"));
    std::fs::write(&p, inst.to_string()).unwrap();
    run(
        p.to_str().unwrap(),
        s,
        &[
            "spatial",
            "spatial:by_load",
            "temporal",
            "muxserve",
            "muxserve:faithful",
            "plexserve-llm",
        ],
    );
}

#[test]
#[ignore]
fn explore_azure() {
    let s: f64 = std::env::var("SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1.0);
    let f = std::env::var("TRACE").unwrap_or("conv".into());
    let file = std::env::var("INST").unwrap_or(format!("../instances/llm/azure-{f}-qwen32b.json"));
    let mut inst: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    if let Ok(b) = std::env::var("BETA") {
        inst["cost_model"]["tp_inefficiency"] = b.parse::<f64>().unwrap().into();
    }
    if let Ok(b) = std::env::var("SLO") {
        inst["llms"][0] = serde_json::json!({"name": "qwen2.5-32b", "spec": "qwen2.5-32b", "slo_scale": b.parse::<f64>().unwrap()});
    }
    let p = std::env::temp_dir().join(format!("az-{f}.json"));
    std::fs::write(
        &p,
        inst.to_string()
            .replace("data/Azure", "/work/main/instances/llm/data/Azure"),
    )
    .unwrap();
    let pl = std::env::var("PLACERS").unwrap_or(
        "tp-static:tp=1;tp-static:tp=2;tp-static:tp=4;tp-static:tp=8;tp-hybrid;tp-dynamic".into(),
    );
    let pl: Vec<&str> = pl.split(';').collect();
    run(p.to_str().unwrap(), s, &pl);
}

/// Per-window SLO attainment by arrival time (which configuration wins when), for studying
/// whether a trace has phases that favour different TP degrees.
#[test]
#[ignore]
fn explore_windows() {
    let s: f64 = std::env::var("SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1.0);
    let f = std::env::var("TRACE").unwrap_or("conv".into());
    let win: f64 = std::env::var("WIN")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30.0);
    let mut inst = LlmInstance::load(Path::new(&format!(
        "../instances/llm/azure-{f}-qwen32b.json"
    )))
    .unwrap();
    inst.workload.scale_rate(s);
    let trace = inst.workload.generate(inst.base_dir(), 1).unwrap();
    let pl = std::env::var("PLACERS").unwrap_or("tp-static:tp=1;tp-static:tp=2;tp-dynamic".into());
    let nw = (trace.arrival_s.last().copied().unwrap_or(0.0) / win).floor() as usize + 1;
    let mut n = vec![0u32; nw];
    let mut tok = vec![0u64; nw];
    for r in 0..trace.len() {
        let w = (trace.arrival_s[r] / win) as usize;
        n[w] += 1;
        tok[w] += (trace.prompt[r] + trace.output[r]) as u64;
    }
    eprintln!("window n {:?}", n);
    eprintln!(
        "window ktok {:?}",
        tok.iter().map(|t| t / 1000).collect::<Vec<_>>()
    );
    for p in pl.split(';') {
        let (pl, o) = llm_placer(p, &PlaceOptions::default()).unwrap();
        let sol = pl.place(&inst, &trace, &o).unwrap();
        let res = LlmSim::new(&inst, &trace, &sol.deployment).run(&RunOptions::default());
        let v = judge(&inst, &trace, &res);
        let mut good = vec![0u32; nw];
        for r in 0..trace.len() {
            if v[r] == Some(true) {
                good[(trace.arrival_s[r] / win) as usize] += 1;
            }
        }
        eprintln!(
            "{p:40} good {:?} merges {} splits {}",
            good, res.stats.merges, res.stats.splits
        );
    }
}

/// Requests good under placer A but not under B (which requests a configuration loses).
#[test]
#[ignore]
fn explore_diff() {
    let s: f64 = std::env::var("SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1.0);
    let mut inst = LlmInstance::load(Path::new(&std::env::var("INST").unwrap())).unwrap();
    inst.workload.scale_rate(s);
    let trace = inst.workload.generate(inst.base_dir(), 1).unwrap();
    let a = std::env::var("A").unwrap();
    let b = std::env::var("B").unwrap();
    let run = |p: &str| {
        let (pl, o) = llm_placer(p, &PlaceOptions::default()).unwrap();
        let sol = pl.place(&inst, &trace, &o).unwrap();
        let res = LlmSim::new(&inst, &trace, &sol.deployment).run(&RunOptions::default());
        (judge(&inst, &trace, &res), res)
    };
    let (va, ra) = run(&a);
    let (vb, rb) = run(&b);
    for r in 0..trace.len() {
        if va[r] == Some(true) && vb[r] != Some(true) {
            eprintln!(
                "r{r} t {:.1} p {} o {} | A eng {} lat {:.2} | B eng {} ttft {:.2} lat {:.2} pre {}",
                trace.arrival_s[r], trace.prompt[r], trace.output[r], ra.outcomes.engine[r],
                ra.outcomes.finish_s[r] - trace.arrival_s[r], rb.outcomes.engine[r],
                rb.outcomes.first_token_s[r] - trace.arrival_s[r],
                rb.outcomes.finish_s[r] - trace.arrival_s[r], rb.outcomes.preemptions[r]
            );
        }
    }
}
