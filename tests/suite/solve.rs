//! `solve` → `simulate` round trips: plans are valid, predictions reproduce, output is deterministic.

use crate::common::*;

fn solve_json(inst: &std::path::Path, placer: &str, extra: &[&str]) -> serde_json::Value {
    let mut args: Vec<std::ffi::OsString> = vec![
        "solve".into(),
        inst.into(),
        "--placer".into(),
        placer.into(),
        "--json".into(),
    ];
    args.extend(extra.iter().map(|s| s.into()));
    let out = plexserve(&args);
    assert_eq!(out.status.code(), Some(0), "{placer}: {}", stderr(&out));
    serde_json::from_str(&stdout(&out)).expect("--json prints one JSON document")
}

#[test]
fn every_placer_solves_the_tiny_instance_and_simulate_reproduces_the_prediction() {
    let inst = instance("tiny/two-test-models.json");
    let dir = tempfile::tempdir().unwrap();
    let list = plexserve(["placers", "--json"]);
    let placers: Vec<serde_json::Value> = serde_json::from_str(&stdout(&list)).unwrap();
    assert!(placers.len() >= 6);
    for p in placers {
        let name = p["name"].as_str().unwrap();
        let plan = dir.path().join(format!("{name}.plan.json"));
        let out = plexserve([
            "solve".as_ref(),
            inst.as_os_str(),
            "--placer".as_ref(),
            name.as_ref(),
            "-o".as_ref(),
            plan.as_os_str(),
        ]);
        if out.status.code() == Some(2) && stderr(&out).contains("must divide") {
            continue;
        }
        assert_eq!(out.status.code(), Some(0), "{name}: {}", stderr(&out));
        let plan_json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&plan).unwrap()).unwrap();
        assert_eq!(plan_json["schema"], "plexserve/plan/v1");
        let sim = plexserve([
            "simulate".as_ref(),
            inst.as_os_str(),
            "--plan".as_ref(),
            plan.as_os_str(),
            "--json".as_ref(),
        ]);
        assert_eq!(sim.status.code(), Some(0), "{name}: {}", stderr(&sim));
        let report: serde_json::Value = serde_json::from_str(&stdout(&sim)).unwrap();
        assert_eq!(
            report["slo_attainment"], plan_json["predicted"]["slo_attainment"],
            "{name}"
        );
        assert_eq!(report["good"], plan_json["predicted"]["good"], "{name}");
    }
}

/// A time limit too large for a `Duration` (1e300 s) is no limit: every placer solves the tiny
/// instance (the MILP once panicked converting it) and finishes on its own.
#[test]
fn an_astronomical_time_limit_is_no_limit() {
    let inst = instance("tiny/two-test-models.json");
    for placer in ["milp", "sr", "alpaserve", "plexserve"] {
        let plan = solve_json(&inst, placer, &["--time-limit-s", "1e300"]);
        assert_eq!(plan["schema"], "plexserve/plan/v1", "{placer}");
        assert_ne!(plan["solve"]["time_limited"], true, "{placer}");
    }
}

/// Output piped into a reader that stops early (`| head`): the command ends quietly, by SIGPIPE
/// as Unix tools do, instead of panicking in `println!` on the broken pipe.
#[test]
fn a_closed_stdout_ends_the_command_quietly() {
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_plexserve"))
        .arg("simulate")
        .arg(instance("tiny/two-test-models.json"))
        .arg("--plan")
        .arg(instance("tiny/two-test-models.plan.json"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Closed at once: the report (printed after loading and simulating) meets a broken pipe.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_ne!(out.status.code(), Some(101), "{err}");
}

#[test]
fn same_seed_same_bytes_whatever_the_thread_count() {
    let inst = instance("tiny/two-test-models.json");
    let strip = |mut v: serde_json::Value| {
        v["solve"]["time_s"] = serde_json::Value::Null;
        v
    };
    for placer in ["alpaserve", "alpaserve-sep", "clockwork++"] {
        let one = strip(solve_json(&inst, placer, &["--threads", "1"]));
        let two = strip(solve_json(&inst, placer, &["--threads", "2"]));
        assert_eq!(one, two, "{placer}");
    }
}

#[test]
fn requests_out_writes_one_row_per_request() {
    let inst = instance("tiny/two-test-models.json");
    let plan = instance("tiny/two-test-models.plan.json");
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("r.csv");
    let out = plexserve([
        "simulate".as_ref(),
        inst.as_os_str(),
        "--plan".as_ref(),
        plan.as_os_str(),
        "--json".as_ref(),
        "--requests-out".as_ref(),
        csv.as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let text = std::fs::read_to_string(&csv).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some("request,model,arrival_s,group,start_s,finish_s,good")
    );
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    let trimmed = report["trimmed_each_end"].as_u64().unwrap() as usize;
    assert_eq!(
        rows.len(),
        report["requests"].as_u64().unwrap() as usize + 2 * trimmed
    );
    for r in &rows {
        assert_eq!(r.len(), 7);
        let (arrival, start, finish): (f64, f64, f64) = (
            r[2].parse().unwrap(),
            r[4].parse().unwrap(),
            r[5].parse().unwrap(),
        );
        assert!(start >= arrival && finish >= start);
        if r[6] == "0" {
            assert!(
                r[3].is_empty() && finish == arrival,
                "rejected rows have no group: {r:?}"
            );
        }
    }
}

#[test]
fn human_output_shows_the_plan() {
    let inst = instance("tiny/two-test-models.json");
    let out = plexserve([
        "solve".as_ref(),
        inst.as_os_str(),
        "--placer".as_ref(),
        "alpaserve".as_ref(),
    ]);
    assert_eq!(out.status.code(), Some(0));
    let text = stdout(&out);
    assert!(
        text.contains("attainment") && text.contains("group"),
        "{text}"
    );
}
