//! Exploration helpers (ignored): print figures for calibrating instances.
#![allow(clippy::needless_range_loop)]
use std::path::Path;
use std::time::Instant;

use plexserve_solver::llm::*;
use plexserve_solver::PlaceOptions;

/// The number in environment variable `name`, or `default` when it is unset or not a number.
fn env_f64(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The instance named by `INST`, its rate scaled by `s`, and its trace.
fn scaled_instance(s: f64) -> (LlmInstance, LlmTrace) {
    let mut inst = LlmInstance::load(Path::new(&std::env::var("INST").unwrap())).unwrap();
    inst.workload.scale_rate(s);
    let trace = inst.workload.generate(inst.base_dir(), 1).unwrap();
    (inst, trace)
}

/// Request r's latency SLO: the LLM's SLO scale (8 when unset) × its isolated latency at the
/// home TP degree.
fn slo_of<'a>(inst: &'a LlmInstance, trace: &'a LlmTrace) -> impl Fn(usize) -> f64 + 'a {
    let home = inst.step_cost(0, inst.home_tp(0));
    let scale = inst.llms[0].slo_scale.unwrap_or(8.0);
    move |r| scale * home.isolated_latency_s(trace.prompt[r], trace.output[r])
}

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
    let a: f64 = env_f64("ALPHA", 0.9);
    let s: f64 = env_f64("SCALE", 1.0);
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
    let s: f64 = env_f64("SCALE", 1.0);
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
    let s: f64 = env_f64("SCALE", 1.0);
    let f = std::env::var("TRACE").unwrap_or("conv".into());
    let win: f64 = env_f64("WIN", 30.0);
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
    let s: f64 = env_f64("SCALE", 1.0);
    let (inst, trace) = scaled_instance(s);
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

/// Where a configuration loses requests: short/long good counts, TTFT-caused misses, busy
/// GPU-seconds by engine degree, merges; and, for the shorts that PLACERS[0] meets and another
/// misses, how many arrived while that configuration had GPUs merged.
#[test]
#[ignore]
fn explore_loss() {
    let s: f64 = env_f64("SCALE", 1.0);
    let (inst, trace) = scaled_instance(s);
    let slo = slo_of(&inst, &trace);
    let pl = std::env::var("PLACERS").unwrap_or("tp-static:tp=1;tp-dynamic:tp=4".into());
    let mut base: Option<Vec<Option<bool>>> = None;
    for p in pl.split(';') {
        let (pl, o) = llm_placer(p, &PlaceOptions::default()).unwrap();
        let sol = pl.place(&inst, &trace, &o).unwrap();
        let res = LlmSim::new(&inst, &trace, &sol.deployment).run(&RunOptions { record: true });
        let v = judge(&inst, &trace, &res);
        let long: Vec<bool> = (0..trace.len()).map(|r| trace.prompt[r] > 20000).collect();
        let (mut gs, mut ns, mut gl, mut nl, mut ttft_miss) = (0, 0, 0, 0, 0);
        for r in 0..trace.len() {
            if long[r] {
                nl += 1;
                if v[r] == Some(true) {
                    gl += 1;
                }
            } else {
                ns += 1;
                if v[r] == Some(true) {
                    gs += 1;
                } else if v[r] == Some(false) {
                    let ttft = res.outcomes.first_token_s[r] - trace.arrival_s[r];
                    if ttft > slo(r) {
                        ttft_miss += 1;
                    }
                }
            }
        }
        let mut busy = [0.0f64; 9];
        let mut merged_windows: Vec<(f64, f64)> = Vec::new();
        for it in &res.iterations {
            let tp = res.stats.engines[it.engine as usize].tp as usize;
            busy[tp] += (it.end_s - it.start_s) * tp as f64;
            if tp > 1 {
                merged_windows.push((it.start_s, it.end_s));
            }
        }
        let mut lost_in_merge = 0;
        let mut lost = 0;
        if let Some(b) = &base {
            for r in 0..trace.len() {
                if !long[r] && b[r] == Some(true) && v[r] != Some(true) {
                    lost += 1;
                    let t = trace.arrival_s[r];
                    if merged_windows.iter().any(|&(a, e)| a <= t && t <= e) {
                        lost_in_merge += 1;
                    }
                }
            }
        }
        eprintln!(
            "{p:36} short good {gs}/{ns} (ttft-caused misses {ttft_miss}) long good {gl}/{nl} gput {:.3} makespan {:.0} merges {} splits {} transform {:.2}s busy GPU-s tp1 {:.0} tp2 {:.0} tp4 {:.0} pre {} | vs first: shorts lost {lost}, arriving during merged iterations {lost_in_merge}",
            // Goodput as the reports define it: good requests per second of arrival span.
            v.iter().filter(|x| **x == Some(true)).count() as f64 / trace.span_s(),
            res.outcomes.finish_s.iter().filter(|x| x.is_finite()).fold(0.0f64, |a, &b| a.max(b)) - trace.arrival_s[0],
            res.stats.merges, res.stats.splits, res.stats.transform_s, busy[1], busy[2], busy[4], res.stats.preemptions
        );
        if base.is_none() {
            base = Some(v);
        }
    }
}

/// Per-request timeline of one configuration: every long request (arrival, engine, TTFT,
/// finish) and, per WIN-second arrival window, the requests per final engine and how many met
/// their SLO.
#[test]
#[ignore]
fn explore_timeline() {
    let s: f64 = env_f64("SCALE", 1.0);
    let win: f64 = env_f64("WIN", 10.0);
    let (inst, trace) = scaled_instance(s);
    let p = std::env::var("P").unwrap();
    let (pl, o) = llm_placer(&p, &PlaceOptions::default()).unwrap();
    let sol = pl.place(&inst, &trace, &o).unwrap();
    let res = LlmSim::new(&inst, &trace, &sol.deployment).run(&RunOptions { record: true });
    let v = judge(&inst, &trace, &res);
    let o = &res.outcomes;
    for r in 0..trace.len() {
        if trace.prompt[r] > 20000 {
            eprintln!(
                "long r{r} t {:.1} p {} o {} eng {} ttft {:.1} lat {:.1} good {:?}",
                trace.arrival_s[r],
                trace.prompt[r],
                trace.output[r],
                o.engine[r],
                o.first_token_s[r] - trace.arrival_s[r],
                o.finish_s[r] - trace.arrival_s[r],
                v[r]
            );
        }
    }
    let ne = res.stats.engines.len();
    let nw = (trace.arrival_s.last().copied().unwrap_or(0.0) / win) as usize + 1;
    let mut per = vec![vec![0u32; ne]; nw];
    let mut good = vec![0u32; nw];
    let mut n = vec![0u32; nw];
    for r in 0..trace.len() {
        let w = (trace.arrival_s[r] / win) as usize;
        n[w] += 1;
        if v[r] == Some(true) {
            good[w] += 1;
        }
        if (o.engine[r] as usize) < ne {
            per[w][o.engine[r] as usize] += 1;
        }
    }
    // Busy seconds per engine per window (iteration time).
    let mut busy = vec![vec![0.0f64; ne]; nw + 200];
    for it in &res.iterations {
        let w = (it.start_s / win) as usize;
        if w < busy.len() {
            busy[w][it.engine as usize] += it.end_s - it.start_s;
        }
    }
    for w in 0..nw {
        eprintln!(
            "w{:4.0} n {:3} good {:3} per-engine {:?} busy {:?}",
            w as f64 * win,
            n[w],
            good[w],
            per[w],
            busy[w]
                .iter()
                .map(|b| (b / win * 100.0).round() as u32)
                .collect::<Vec<_>>()
        );
    }
}

/// Every request configuration P misses, with what it met: arrival, lengths, engine, TTFT,
/// latency against its SLO, the requests that arrived in the WIN seconds before it (burst), and
/// whether a long request (prompt > 20 k) was resident on its engine (arrived before it, finished
/// after its arrival); then a summary by cause.
#[test]
#[ignore]
fn explore_misses() {
    let s: f64 = env_f64("SCALE", 1.0);
    let win: f64 = env_f64("WIN", 10.0);
    let (inst, trace) = scaled_instance(s);
    let slo = slo_of(&inst, &trace);
    let p = std::env::var("P").unwrap();
    let (pl, o) = llm_placer(&p, &PlaceOptions::default()).unwrap();
    let sol = pl.place(&inst, &trace, &o).unwrap();
    let res = LlmSim::new(&inst, &trace, &sol.deployment).run(&RunOptions::default());
    let v = judge(&inst, &trace, &res);
    let o = &res.outcomes;
    let long = |r: usize| trace.prompt[r] > 20000;
    let n = trace.len();
    // Mean arrivals per WIN seconds over the whole trace, to tell a burst from the base rate.
    let mean_win = n as f64 / trace.span_s() * win;
    let (mut miss_long, mut miss_behind_long, mut miss_burst, mut miss_other) = (0, 0, 0, 0);
    let mut out_hist = [0u32; 6];
    for r in 0..n {
        if v[r] == Some(true) {
            continue;
        }
        let t = trace.arrival_s[r];
        let recent = (0..n)
            .filter(|&q| trace.arrival_s[q] <= t && trace.arrival_s[q] > t - win)
            .count();
        let behind_long = (0..n).any(|q| {
            long(q)
                && q != r
                && o.engine[q] == o.engine[r]
                && trace.arrival_s[q] <= t
                && o.finish_s[q] > t
        });
        let burst = recent as f64 > 1.5 * mean_win;
        if long(r) {
            miss_long += 1;
        } else if behind_long {
            miss_behind_long += 1;
        } else if burst {
            miss_burst += 1;
        } else {
            miss_other += 1;
        }
        if !long(r) {
            let b = match trace.output[r] {
                0..=63 => 0,
                64..=255 => 1,
                256..=511 => 2,
                512..=1023 => 3,
                1024..=2047 => 4,
                _ => 5,
            };
            out_hist[b] += 1;
        }
        eprintln!(
            "r{r} t {t:.1} p {} o {} eng {} ttft {:.2} lat {:.2} slo {:.2} pre {} recent{win:.0}s {recent} (mean {mean_win:.1}) behind_long {behind_long}",
            trace.prompt[r], trace.output[r], o.engine[r], o.first_token_s[r] - t,
            o.finish_s[r] - t, slo(r), o.preemptions[r]
        );
    }
    eprintln!(
        "{p}: misses long {miss_long}, short behind a resident long {miss_behind_long}, short in a burst (>1.5x mean arrivals in {win} s) {miss_burst}, other {miss_other}; short misses by output [<64, <256, <512, <1k, <2k, more] {out_hist:?}"
    );
}
