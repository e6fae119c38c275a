//! Every malformed input gives one clear error line naming the file and the JSON path, exit 2,
//! and never a panic.

use crate::common::*;

const GOOD: &str = r#"{
  "schema": "plexserve/instance/v1",
  "name": "t",
  "cluster": { "devices": 2, "memory_budget_gib": 4.5 },
  "profiles": { "p": { "batch_sizes": [1], "configs": [
      { "pp": 1, "tp": 1, "stage_latency_s": [[0.1]], "stage_weight_gib": [2.0] } ] } },
  "models": [ { "name": "m0", "profile": "p", "slo_s": 1.0 } ],
  "workload": { "kind": "gamma", "duration_s": 20, "seed": 0,
                "streams": [ { "model": "m0", "rate": 5.0, "cv": 1.0 } ] }
}"#;

/// Runs `solve` on `text` and checks exit 2 with one error line containing every `needle`.
fn rejects(text: &str, needles: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "bad.json", text);
    let out = plexserve([
        "solve".as_ref(),
        path.as_os_str(),
        "--placer".as_ref(),
        "sr".as_ref(),
    ]);
    let err = stderr(&out);
    assert_eq!(
        out.status.code(),
        Some(2),
        "exit code for {needles:?}; stderr: {err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line: {err}");
    assert!(err.contains("bad.json"), "names the file: {err}");
    for n in needles {
        assert!(err.contains(n), "expected {n:?} in: {err}");
    }
}

#[test]
fn the_good_instance_solves() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "good.json", GOOD);
    let out = plexserve([
        "solve".as_ref(),
        path.as_os_str(),
        "--placer".as_ref(),
        "sr".as_ref(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn wrong_type() {
    rejects(
        &GOOD.replace(r#""devices": 2"#, r#""devices": "two""#),
        &["cluster.devices", "invalid type"],
    );
}

#[test]
fn unknown_field() {
    rejects(
        &GOOD.replace(r#""name": "t","#, r#""name": "t", "nmae": 1,"#),
        &["unknown field", "nmae"],
    );
    rejects(
        &GOOD.replace(r#""seed": 0,"#, r#""seed": 0, "sead": 1,"#),
        &["workload", "sead"],
    );
}

#[test]
fn negative_rate() {
    rejects(
        &GOOD.replace(r#""rate": 5.0"#, r#""rate": -5.0"#),
        &["workload.streams[0].rate", "non-negative"],
    );
}

#[test]
fn too_many_devices() {
    rejects(
        &GOOD.replace(r#""devices": 2"#, r#""devices": 8388608"#),
        &["cluster.devices", "1 to 65536 devices, found 8388608"],
    );
}

#[test]
fn no_models() {
    let text = GOOD
        .replace(
            r#"[ { "name": "m0", "profile": "p", "slo_s": 1.0 } ]"#,
            "[]",
        )
        .replace(r#"[ { "model": "m0", "rate": 5.0, "cv": 1.0 } ]"#, "[]");
    rejects(&text, &["models", "at least one model"]);
}

#[test]
fn unknown_profile() {
    rejects(
        &GOOD.replace(r#""profile": "p""#, r#""profile": "q""#),
        &["models[0].profile", "unknown profile \"q\""],
    );
}

#[test]
fn truncated_json() {
    rejects(&GOOD[..GOOD.len() / 2], &["EOF"]);
}

#[test]
fn empty_file() {
    rejects("", &["empty"]);
    rejects("   \n", &["empty"]);
}

#[test]
fn not_json_at_all() {
    rejects("\u{1F600} hello", &["$"]);
}

#[test]
fn bad_shapes_in_profiles() {
    rejects(
        &GOOD.replace("[[0.1]]", "[[0.1, 0.2]]"),
        &[
            "profiles.p.configs[0].stage_latency_s[0]",
            "expected 1 stage",
        ],
    );
    rejects(
        &GOOD.replace("[[0.1]]", "[[-0.1]]"),
        &["stage_latency_s[0][0]", "positive"],
    );
    rejects(
        &GOOD.replace(r#""batch_sizes": [1]"#, r#""batch_sizes": []"#),
        &["batch_sizes"],
    );
    rejects(
        &GOOD.replace(r#""slo_s": 1.0"#, r#""slo_s": 1.0, "slo_scale": 2"#),
        &["models[0]", "not both"],
    );
    rejects(
        &GOOD.replace(
            r#""schema": "plexserve/instance/v1""#,
            r#""schema": "plexserve/instance/v9""#,
        ),
        &["schema"],
    );
    rejects(
        &GOOD.replace(r#""memory_budget_gib": 4.5"#, r#""memory_budget_gib": 0"#),
        &["cluster.memory_budget_gib"],
    );
}

#[test]
fn plan_groups_that_do_not_fit_the_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let inst = write(dir.path(), "inst.json", GOOD);
    let cases = [
        (
            r#"{"devices":[0,1,2],"pp":1,"tp":1,"models":["m0"]}"#,
            "needs 1 devices, found 3",
        ),
        (
            r#"{"devices":[5],"pp":1,"tp":1,"models":["m0"]}"#,
            "device 5 does not exist",
        ),
        (
            r#"{"devices":[0,1],"pp":2,"tp":1,"models":["m0"]}"#,
            "no profile for pp 2",
        ),
        (
            r#"{"devices":[0],"pp":1,"tp":1,"models":["m9"]}"#,
            "unknown model",
        ),
    ];
    for (group, needle) in cases {
        let plan = format!(
            r#"{{"schema":"plexserve/plan/v1","instance":"t","placer":"hand","segments":[{{"start_s":0,"groups":[{group}]}}]}}"#
        );
        let plan = write(dir.path(), "plan.json", &plan);
        let out = plexserve([
            "simulate".as_ref(),
            inst.as_os_str(),
            "--plan".as_ref(),
            plan.as_os_str(),
        ]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(
            err.contains(needle) && err.contains("plan.json") && err.contains("segments[0]"),
            "{needle}: {err}"
        );
    }
    // Two groups on one device.
    let plan = r#"{"schema":"plexserve/plan/v1","instance":"t","placer":"hand","segments":[{"start_s":0,"groups":[
        {"devices":[0],"pp":1,"tp":1,"models":["m0"]},{"devices":[0],"pp":1,"tp":1,"models":["m0"]}]}]}"#;
    let plan = write(dir.path(), "plan.json", plan);
    let out = plexserve([
        "simulate".as_ref(),
        inst.as_os_str(),
        "--plan".as_ref(),
        plan.as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("already in another group"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn missing_file_and_bad_options() {
    let out = plexserve(["solve", "/nonexistent/instance.json"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("/nonexistent/instance.json"));
    let inst = instance("tiny/two-test-models.json");
    let out = plexserve([
        "solve".as_ref(),
        inst.as_os_str(),
        "--placer".as_ref(),
        "nope".as_ref(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("unknown placer \"nope\""));
    let out = plexserve([
        "solve".as_ref(),
        inst.as_os_str(),
        "--placer".as_ref(),
        "sr:bogus=1".as_ref(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("no option \"bogus\""));
    let out = plexserve([
        "solve".as_ref(),
        inst.as_os_str(),
        "--threads".as_ref(),
        "0".as_ref(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let out = plexserve(["solve", "--bogus-flag"]);
    assert_eq!(out.status.code(), Some(2));
    // More threads than any OS starts: an input error, not a failed run.
    let out = plexserve([
        "solve".as_ref(),
        inst.as_os_str(),
        "--threads".as_ref(),
        "4294967296".as_ref(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--threads: expected at most"));
    // A sweep that scales the workload past the request cap is refused, not allocated.
    let dir = tempfile::tempdir().unwrap();
    let out = plexserve([
        "compare".as_ref(),
        inst.as_os_str(),
        "--placers".as_ref(),
        "sr".as_ref(),
        "--sweep".as_ref(),
        "rate_scale=4294967296".as_ref(),
        "-o".as_ref(),
        dir.path().as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("at most 100000000 are supported"));
}

#[test]
fn infeasible_exits_3_with_the_reason() {
    let text = GOOD.replace(r#""memory_budget_gib": 4.5"#, r#""memory_budget_gib": 1.5"#);
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "inf.json", &text);
    for placer in ["sr", "alpaserve", "alpaserve-sep"] {
        let out = plexserve([
            "solve".as_ref(),
            path.as_os_str(),
            "--placer".as_ref(),
            placer.as_ref(),
        ]);
        assert_eq!(out.status.code(), Some(3), "{placer}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("model m0 fits no"),
            "{}",
            stderr(&out)
        );
    }
}

/// `plexserve instance` refuses what would not make an instance: a missing profile file, a file
/// that is not a profile file, two profiles of the same name, non-positive numbers.
#[test]
fn instance_from_bad_profiles_or_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let good = write(
        dir.path(),
        "p.profile.json",
        r#"{ "schema": "plexserve/profile/v1", "profiles": { "p": { "batch_sizes": [1],
             "configs": [ { "pp": 1, "tp": 1, "stage_latency_s": [[0.1]], "stage_weight_gib": [1.0] } ] } } }"#,
    );
    let base = |profiles: &[&std::path::Path], rate: &str| {
        let mut args: Vec<std::ffi::OsString> = vec!["instance".into()];
        for p in profiles {
            args.push("--profile".into());
            args.push(p.as_os_str().into());
        }
        for a in [
            "--devices",
            "2",
            "--memory-budget-gib",
            "4",
            "--total-rate",
            rate,
        ] {
            args.push(a.into());
        }
        plexserve(args)
    };
    let ok = base(&[&good], "5");
    assert_eq!(ok.status.code(), Some(0), "{}", stderr(&ok));
    assert!(stdout(&ok).contains("\"plexserve/instance/v1\""));
    let cases: [(std::process::Output, &str); 4] = [
        (base(&[&dir.path().join("absent.json")], "5"), "absent.json"),
        (
            base(&[&instance("tiny/two-test-models.json")], "5"),
            "two-test-models.json",
        ),
        (base(&[&good, &good], "5"), "already came from"),
        (
            base(&[&good], "0"),
            "--total-rate: expected a positive number",
        ),
    ];
    for (out, needle) in cases {
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(
            stderr(&out).contains(needle),
            "{needle:?} not in {}",
            stderr(&out)
        );
    }
}

/// `plexserve profile --probe-reference-us` takes exactly the speed probe's eight positive
/// times (a profile's `source.software.speed-probe-us`) and only for a measured device; anything
/// else is refused before measuring, exit 2, naming the flag.
#[test]
fn profile_probe_reference_is_validated() {
    let spec = root().join("instances/specs/tiny-gpt.json");
    let cases = [
        ("cpu", "1,2,3", "3 values"),
        ("cpu", "1,2,3,4,5,6,7,x", "\"x\" is not a positive number"),
        ("cpu", "0,1,1,1,1,1,1,1", "\"0\" is not a positive number"),
        ("cpu", "", "expected 8 comma-separated positive numbers"),
        ("analytic:v100-16gb", "1,1,1,1,1,1,1,1", "analytic device"),
    ];
    for (device, value, needle) in cases {
        let out = plexserve([
            "profile".as_ref(),
            "--device".as_ref(),
            device.as_ref(),
            "--model".as_ref(),
            spec.as_os_str(),
            "--probe-reference-us".as_ref(),
            std::ffi::OsStr::new(value),
        ]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{value}: {err}");
        assert!(
            err.contains("--probe-reference-us") && err.contains(needle),
            "{needle:?} not in {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
}

/// A file given to a command that reads another kind is named by its schema before any field is
/// read ("the file is an LLM instance", not "unknown field `gpu`"), exit 2.
#[test]
fn a_file_of_another_kind_is_named_for_what_it_is() {
    let (inst, plan) = (
        instance("tiny/two-test-models.json"),
        instance("tiny/two-test-models.plan.json"),
    );
    let (llm_inst, llm_plan) = (
        instance("llm/tiny-two-7b.json"),
        instance("llm/tiny-two-7b.plan.json"),
    );
    let spec = instance("specs/tiny-gpt.json");
    let s = |p: &std::path::PathBuf| p.to_str().unwrap().to_string();
    let cases: Vec<(Vec<String>, &std::path::PathBuf, &str)> = vec![
        (
            vec!["solve".into(), s(&llm_inst)],
            &llm_inst,
            "an LLM instance",
        ),
        (
            vec![
                "compare".into(),
                s(&llm_inst),
                "--placers".into(),
                "sr".into(),
            ],
            &llm_inst,
            "an LLM instance",
        ),
        (
            vec!["simulate".into(), s(&inst), "--plan".into(), s(&llm_plan)],
            &llm_plan,
            "an LLM plan",
        ),
        (
            vec!["serve".into(), s(&spec), "--plan".into(), s(&plan)],
            &spec,
            "a model spec",
        ),
        (
            vec!["llm".into(), "solve".into(), s(&inst)],
            &inst,
            "an instance",
        ),
        (
            vec![
                "llm".into(),
                "simulate".into(),
                s(&llm_inst),
                "--plan".into(),
                s(&plan),
            ],
            &plan,
            "a plan",
        ),
        (
            vec![
                "profile".into(),
                "--model".into(),
                s(&inst),
                "--device".into(),
                "analytic:a100-80gb".into(),
            ],
            &inst,
            "an instance",
        ),
        (
            vec![
                "partition".into(),
                s(&llm_inst),
                "--model".into(),
                "m".into(),
                "--devices".into(),
                "2".into(),
            ],
            &llm_inst,
            "an LLM instance",
        ),
    ];
    for (args, file, what) in cases {
        let out = plexserve(&args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(file.to_str().unwrap()), "{args:?}: {err}");
        assert!(err.contains("at schema: expected"), "{args:?}: {err}");
        assert!(
            err.contains(&format!("the file is {what} (")),
            "{args:?}: {err}"
        );
    }
    // The schemas of the profiler's and executor's own documents are known to the solver.
    for schema in [
        plexserve_profiler::SPEC_SCHEMA,
        plexserve_executor::REPLAY_SCHEMA,
    ] {
        assert!(
            plexserve_solver::document_kind(schema).is_some(),
            "{schema}"
        );
    }
}
