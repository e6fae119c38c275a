//! LLM cost model, simulator, placers and TP transformation (llm-serving.md).

use std::path::Path;

use plexserve_solver::llm::*;

fn toy_instance(requests: &str, policy: &str, extra_llm: bool) -> LlmInstance {
    // One toy LLM: 2 GB of weights, 512 B of KV per token, so a token-block of 32 tokens is exactly
    // one 16 KiB head-block; the GPU leaves room for 128 blocks (4096 tokens) of KV.
    let second = if extra_llm {
        r#",{ "name": "b", "spec": "toy", "slo_scale": 100 }"#
    } else {
        ""
    };
    let mem = if extra_llm { 4.0042 } else { 2.0021 };
    let text = format!(
        r#"{{
      "schema": "plexserve/llm-instance/v1",
      "name": "toy",
      "cluster": {{ "devices": 1, "gpu": {{ "name": "toy", "memory_gb": {mem}, "peak_tflops": 100,
                   "hbm_gbps": 1000, "nvlink_gbps": 100, "host_gbps": 10 }} }},
      "specs": {{ "toy": {{ "params_b": 1.0, "layers": 1, "heads": 1, "kv_heads": 1, "head_dim": 128, "hidden": 128 }} }},
      "llms": [ {{ "name": "a", "spec": "toy", "slo_scale": 100 }}{second} ],
      "cost_model": {{ "kind": "linear", "prefill_base_s": 0.1, "prefill_per_token_s": 0.001,
                      "decode_base_s": 0.01, "decode_per_seq_s": 0.001 }},
      "workload": {{ "kind": "requests", "requests": [{requests}] }},
      "simulator": {{ "memory_utilization": 1.0, "activation_reserve_gb": 0, "policy": "{policy}" }}
    }}"#
    );
    LlmInstance::from_json(Path::new("toy.json"), &text).unwrap()
}

fn one_unit(inst: &LlmInstance, pre: u32, dec: u32) -> Deployment {
    Deployment {
        units: vec![UnitSpec {
            devices: vec![0],
            engines: (0..inst.llms.len())
                .map(|m| EngineSpec {
                    llm: m,
                    prefill_sm_pct: pre,
                    decode_sm_pct: dec,
                    quota: None,
                })
                .collect(),
        }],
        transforms: vec![],
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[test]
fn hand_computed_timeline() {
    let inst = toy_instance(
        r#"{"t_s": 0.0, "llm": "a", "prompt_tokens": 100, "output_tokens": 3},
           {"t_s": 0.05, "llm": "a", "prompt_tokens": 50, "output_tokens": 2}"#,
        "fcfs",
        false,
    );
    let trace = inst.workload.generate(inst.base_dir(), 1).unwrap();
    let dep = one_unit(&inst, 100, 100);
    let res = LlmSim::new(&inst, &trace, &dep).run(&RunOptions { record: true });
    // t=0 prefill r0 (0.1 + 100 ms) → 0.2; r1 waits (one prefill worker).
    // t=0.2 prefill r1 (0.1 + 50 ms) → 0.35; decode cannot start: 10 + 10 parts > 10 + 2.
    // t=0.35 decode [r0, r1] (10 + 2 ms) → 0.362, r1 finishes (2 tokens).
    // t=0.362 decode [r0] (10 + 1 ms) → 0.373, r0 finishes.
    let it: Vec<(bool, f64, f64, u32)> = res
        .iterations
        .iter()
        .map(|i| (i.prefill, i.start_s, i.end_s, i.batch))
        .collect();
    let want = [
        (true, 0.0, 0.2, 1),
        (true, 0.2, 0.35, 1),
        (false, 0.35, 0.362, 2),
        (false, 0.362, 0.373, 1),
    ];
    assert_eq!(it.len(), want.len(), "{it:?}");
    for (a, b) in it.iter().zip(want.iter()) {
        assert!(
            a.0 == b.0 && close(a.1, b.1) && close(a.2, b.2) && a.3 == b.3,
            "{it:?}"
        );
    }
    let o = &res.outcomes;
    assert!(close(o.first_token_s[0], 0.2) && close(o.first_token_s[1], 0.35));
    assert!(close(o.finish_s[0], 0.373) && close(o.finish_s[1], 0.362));
    let rep = LlmSimReport::new(&inst, &trace, &res);
    assert_eq!((rep.finished, rep.dropped), (2, 0));
    assert!(close(rep.ttft_s.mean, (0.2 + 0.3) / 2.0));
}

#[test]
fn colocated_prefill_and_decode_overlap_under_sm_shares() {
    // Two LLMs share the GPU with prefill 80 % and decode 30 %: 8 + 3 parts ≤ 10 + 2, so a's decode
    // overlaps b's prefill, slowed by one overloaded part of its three (1 + 0.5 · 1/3).
    let inst = toy_instance(
        r#"{"t_s": 0.0, "llm": "a", "prompt_tokens": 100, "output_tokens": 2},
           {"t_s": 0.2, "llm": "b", "prompt_tokens": 100, "output_tokens": 1}"#,
        "fcfs",
        true,
    );
    let trace = inst.workload.generate(inst.base_dir(), 2).unwrap();
    let dep = one_unit(&inst, 80, 30);
    let res = LlmSim::new(&inst, &trace, &dep).run(&RunOptions { record: true });
    let it = &res.iterations;
    assert_eq!(it.len(), 3, "{it:?}");
    // t=0.2: a's prefill ends; b arrives at the same instant: b's prefill (8 parts) starts, then
    // a's decode (3 parts, 1 overloaded) starts beside it.
    assert!(
        it[1].prefill && it[1].engine == 1 && close(it[1].start_s, 0.2) && close(it[1].end_s, 0.4)
    );
    assert!(!it[2].prefill && close(it[2].start_s, 0.2));
    assert!(
        close(it[2].end_s - it[2].start_s, 0.011 * (1.0 + 0.5 / 3.0)),
        "{it:?}"
    );
}

#[test]
fn kv_capacity_is_never_exceeded_and_preempted_requests_finish() {
    // 12 requests of 300 + 300 tokens need 12 × 19 blocks at the end, far above the 128 blocks.
    let reqs: Vec<String> = (0..12)
        .map(|i| {
            format!(
                r#"{{"t_s": {}, "llm": "a", "prompt_tokens": 300, "output_tokens": 300}}"#,
                i as f64 * 0.01
            )
        })
        .collect();
    let inst = toy_instance(&reqs.join(","), "fcfs", false);
    let trace = inst.workload.generate(inst.base_dir(), 1).unwrap();
    let dep = one_unit(&inst, 100, 100);
    let res = LlmSim::new(&inst, &trace, &dep).run(&RunOptions::default());
    assert!(res.stats.kv_peak_fraction <= 1.0 + 1e-12);
    assert!(
        res.stats.kv_peak_fraction > 0.9,
        "the pool should fill up: {}",
        res.stats.kv_peak_fraction
    );
    assert!(res.stats.preemptions > 0, "expected preemptions");
    let rep = LlmSimReport::new(&inst, &trace, &res);
    assert_eq!(rep.finished, 12, "{rep:?}");
    for r in 0..12 {
        assert!(res.outcomes.finish_s[r].is_finite());
    }
}

#[test]
fn conservation_every_request_finishes_or_is_dropped() {
    // The 5000-token prompt can never fit 4096 tokens of KV: dropped at arrival, not stuck.
    let inst = toy_instance(
        r#"{"t_s": 0.0, "llm": "a", "prompt_tokens": 5000, "output_tokens": 10},
           {"t_s": 0.1, "llm": "a", "prompt_tokens": 100, "output_tokens": 10},
           {"t_s": 0.1, "llm": "a", "prompt_tokens": 4000, "output_tokens": 96}"#,
        "adbs",
        false,
    );
    let trace = inst.workload.generate(inst.base_dir(), 1).unwrap();
    let dep = one_unit(&inst, 100, 100);
    let res = LlmSim::new(&inst, &trace, &dep).run(&RunOptions::default());
    let rep = LlmSimReport::new(&inst, &trace, &res);
    assert_eq!(rep.finished + rep.dropped, rep.requests);
    assert_eq!(rep.stuck, 0);
    assert_eq!(rep.dropped_too_long, 1);
    assert_eq!(res.outcomes.dropped[0], Some(DropReason::TooLong));
    assert_eq!(rep.finished, 2);
}

#[test]
fn roofline_matches_muxserve_profiled_points() {
    let spec = LlmSpec::preset("llama-7b").unwrap();
    let gpu = GpuSpec::a100_80gb();
    let c = StepCost::new(&CostModelSpec::default(), &spec, &gpu, 1);
    // Prefill of batch 32 × 128 tokens; decode of batch 32 with the smoothed context (mean of the
    // profiled seq_len ≤ 128, ≈ 64 tokens per sequence).
    let pre = |sm| c.prefill_s(32.0 * 128.0, 32.0 * 128.0 * 128.0, sm);
    let dec = |sm| c.decode_step_s(32.0, 32.0 * 64.0, sm);
    for (got, want) in [
        (pre(1.0), 0.306),
        (pre(0.5), 0.502),
        (pre(0.3), 0.806),
        (dec(1.0), 0.0144),
        (dec(0.5), 0.0164),
        (dec(0.3), 0.0199),
    ] {
        assert!((got / want - 1.0).abs() < 0.1, "got {got}, want {want}");
    }
    // KV per token: 0.5 MiB for 7B, 256 KiB for Qwen2.5-32B (GQA).
    assert!(close(spec.kv_bytes_per_token(), 524288.0));
    assert!(close(
        LlmSpec::preset("qwen2.5-32b").unwrap().kv_bytes_per_token(),
        262144.0
    ));
    // Weights per device at TP4.
    assert!(close(MemoryCost::new(&spec, 4).weight_bytes_per_gpu, 3.5e9));
}

#[test]
fn bad_input_is_an_error_value() {
    let e = LlmInstance::from_json(
        Path::new("x.json"),
        r#"{"schema": "plexserve/llm-instance/v1"}"#,
    )
    .unwrap_err();
    assert!(e.to_string().contains("x.json"), "{e}");
    let e = LlmInstance::from_json(Path::new("x.json"), "").unwrap_err();
    assert!(e.is_input_error());
    let text = r#"{ "schema": "plexserve/llm-instance/v1", "name": "n", "cluster": {"devices": 1, "gpu": "a100-80gb"},
      "llms": [{"name": "a", "spec": "llama-7b"}], "workload": {"kind": "requests", "requests": [
        {"t_s": 1.0, "llm": "zz", "prompt_tokens": 1, "output_tokens": 1}]}}"#;
    let e = LlmInstance::from_json(Path::new("x.json"), text).unwrap_err();
    assert!(e.to_string().contains("workload.requests[0].llm"), "{e}");
}
