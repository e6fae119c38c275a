//! The pipeline end to end on this machine: profile a small model on the CPU → an instance built
//! from the measured profile → `solve` → `simulate`; plus `doctor` and profiler error handling.

use crate::common::*;

#[test]
fn profile_on_cpu_then_solve_and_simulate() {
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("tiny.profile.json");
    let spec = instance("specs/tiny-gpt.json");
    let out = plexserve([
        "profile".as_ref(),
        "--device".as_ref(),
        "cpu".as_ref(),
        "--model".as_ref(),
        spec.as_os_str(),
        "--warmup".as_ref(),
        "1".as_ref(),
        "--repeats".as_ref(),
        "3".as_ref(),
        "-o".as_ref(),
        profile.as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let pf: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&profile).unwrap()).unwrap();
    assert_eq!(pf["schema"], "plexserve/profile/v1");
    let (name, prof) = pf["profiles"].as_object().unwrap().iter().next().unwrap();
    assert!(!prof["layers"].as_array().unwrap().is_empty());
    assert!(
        prof["source"]["device"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("cpu")
            || !prof["source"]["device"].as_str().unwrap().is_empty()
    );
    // Stage DP on the measured profile.
    let part = plexserve([
        "partition".as_ref(),
        profile.as_os_str(),
        "--model".as_ref(),
        name.as_ref(),
        "--devices".as_ref(),
        "2".as_ref(),
        "--memory-budget-gib".as_ref(),
        "4".as_ref(),
        "--json".as_ref(),
    ]);
    assert_eq!(part.status.code(), Some(0), "{}", stderr(&part));
    // An instance that serves two copies of the measured model with an SLO of 5× its latency.
    let inst = serde_json::json!({
        "schema": "plexserve/instance/v1",
        "name": "measured-tiny",
        "cluster": { "devices": 2, "memory_budget_gib": 4.0 },
        "profiles": { name.clone(): prof.clone() },
        "models": [ { "name": "a", "profile": name, "slo_scale": 5.0 },
                    { "name": "b", "profile": name, "slo_scale": 5.0 } ],
        "workload": { "kind": "gamma", "duration_s": 60, "seed": 1, "total_rate": 50, "cv": 2 }
    });
    let inst_path = write(
        dir.path(),
        "inst.json",
        &serde_json::to_string_pretty(&inst).unwrap(),
    );
    let plan = dir.path().join("plan.json");
    let out = plexserve([
        "solve".as_ref(),
        inst_path.as_os_str(),
        "-o".as_ref(),
        plan.as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let sim = plexserve([
        "simulate".as_ref(),
        inst_path.as_os_str(),
        "--plan".as_ref(),
        plan.as_os_str(),
        "--json".as_ref(),
    ]);
    assert_eq!(sim.status.code(), Some(0), "{}", stderr(&sim));
    let report: serde_json::Value = serde_json::from_str(&stdout(&sim)).unwrap();
    let plan_json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&plan).unwrap()).unwrap();
    assert_eq!(
        report["slo_attainment"],
        plan_json["predicted"]["slo_attainment"]
    );
    assert!(report["slo_attainment"].as_f64().unwrap() > 0.5, "{report}");
}

#[test]
fn doctor_reports_what_is_compiled_in() {
    let out = plexserve(["doctor", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let text = v.to_string();
    assert!(text.contains("milp") && text.contains("cuda"), "{text}");
}

#[test]
fn profiler_rejects_bad_specs_and_absent_devices() {
    let dir = tempfile::tempdir().unwrap();
    let spec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(instance("specs/tiny-gpt.json")).unwrap())
            .unwrap();
    let mut bad = spec.clone();
    bad["heads"] = serde_json::json!(0);
    let p = write(dir.path(), "bad.json", &bad.to_string());
    let out = plexserve([
        "profile".as_ref(),
        "--device".as_ref(),
        "cpu".as_ref(),
        "--model".as_ref(),
        p.as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("heads"), "{}", stderr(&out));
    let out = plexserve([
        "profile".as_ref(),
        "--device".as_ref(),
        "cuda:0".as_ref(),
        "--model".as_ref(),
        instance("specs/tiny-gpt.json").as_os_str(),
    ]);
    if !cfg!(feature = "cuda") {
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    }
    let out = plexserve([
        "profile".as_ref(),
        "--device".as_ref(),
        "tpu:0".as_ref(),
        "--model".as_ref(),
        instance("specs/tiny-gpt.json").as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(2));
}
