//! `plexserve llm` on the command line: `tp-overhead`'s verdict on Amoeba's premise for
//! decode-bound short requests (docs/llm/README.md, premise-probe section), `compare`'s files.

use crate::common::*;

/// Column `name` of the TSV row for degree `tp`.
fn cell(tsv: &str, tp: u32, name: &str) -> f64 {
    let mut lines = tsv.lines();
    let header: Vec<&str> = lines.next().unwrap().split('\t').collect();
    let col = header.iter().position(|h| *h == name).unwrap();
    let row = lines
        .map(|l| l.split('\t').collect::<Vec<_>>())
        .find(|r| r[0] == tp.to_string())
        .unwrap();
    row[col].parse().unwrap()
}

#[test]
fn kv_bound_decode_favours_tp2_for_qwen32b_and_tp1_for_the_7b_128k_model() {
    let tsv_of = |name: &str| {
        let out = plexserve([
            "llm".into(),
            "tp-overhead".into(),
            root().join("instances/llm").join(name).into_os_string(),
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out)
    };
    // Qwen2.5-32B on 80 GB: TP1 keeps ≈ 25 k tokens of KV, so with the KV full TP2 decodes
    // far more per GPU despite its lower efficiency at equal batch.
    let qwen = tsv_of("azure-conv-qwen32b-long.json");
    assert!(cell(&qwen, 2, "decode_per_gpu_eff") < 1.0);
    assert!(cell(&qwen, 1, "kv_tokens_per_engine") < 30_000.0);
    assert!(cell(&qwen, 2, "kv_bound_decode_per_gpu_vs_tp1") > 2.0);
    // LLaMA-2-7B-128k-like: 13.5 GB of weights leave TP1 ≈ 112 k tokens, and TP1 wins.
    let small = tsv_of("azure-conv-llama2-7b-128k-long.json");
    assert!(cell(&small, 1, "kv_tokens_per_engine") > 100_000.0);
    assert!(cell(&small, 2, "kv_bound_decode_per_gpu_vs_tp1") < 1.0);
    assert!(
        cell(&small, 4, "kv_bound_decode_per_gpu_vs_tp1")
            < cell(&small, 2, "kv_bound_decode_per_gpu_vs_tp1")
    );
}

/// `plexserve llm compare` on tiny-two-7b with `args`, writing to `dir`; it must succeed.
/// Returns its standard output.
fn compare_tiny(dir: &std::path::Path, args: &[&str]) -> String {
    let tiny = instance("llm/tiny-two-7b.json");
    let mut argv: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![&"llm", &"compare", &tiny, &"-o", &dir];
    argv.extend(args.iter().map(|a| a as &dyn AsRef<std::ffi::OsStr>));
    plexserve_ok(&argv)
}

/// Grid files are named by the value's shortest form: `a0.7`, and `a1e-300` for a value whose
/// plain form has 300 digits (it once failed with "File name too long").
#[test]
fn grid_file_names_use_the_shortest_form_of_the_value() {
    let dir = tempfile::tempdir().unwrap();
    compare_tiny(
        dir.path(),
        &["--placers", "spatial", "--grid", "alpha=1e-300,0.7"],
    );
    for name in ["tiny-two-7b-a1e-300.tsv", "tiny-two-7b-a0.7.tsv"] {
        assert!(dir.path().join(name).is_file(), "{name}");
    }
}

/// `llm compare` runs its points and goodput searches in parallel; the files do not depend on
/// the thread count (but for the measured solve time), and rows stay in sweep order.
#[test]
fn llm_compare_writes_the_same_files_with_one_and_two_threads() {
    let placers = ["spatial", "muxserve", "plexserve-llm", "temporal"];
    let mut runs = Vec::new();
    for threads in ["1", "2"] {
        let dir = tempfile::tempdir().unwrap();
        let list = placers.join(",");
        compare_tiny(
            dir.path(),
            &[
                "--placers",
                &list,
                "--sweep",
                "rate_scale=0.5,4,16",
                "--goodput-level",
                "0.99",
                "--threads",
                threads,
            ],
        );
        let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap();
        runs.push((
            without_time(&read("tiny-two-7b.tsv")),
            read("tiny-two-7b.goodput99.tsv"),
        ));
    }
    assert_eq!(runs[0], runs[1]);
    let rows: Vec<Vec<&str>> = runs[0]
        .0
        .lines()
        .skip(1)
        .map(|l| l.split('\t').collect())
        .collect();
    let order: Vec<(&str, &str)> = rows.iter().map(|r| (r[2], r[3])).collect();
    let expected: Vec<(&str, &str)> = ["0.5", "4", "16"]
        .iter()
        .flat_map(|v| placers.iter().map(move |p| (*v, *p)))
        .collect();
    assert_eq!(order, expected);
    // The sweep is not flat: 16× the rate costs SLOs that 0.5× meets.
    let good = |r: &Vec<&str>| r[9].parse::<f64>().unwrap();
    assert!(good(&rows[0]) > good(&rows[8]), "{:?}", rows);
    assert_eq!(runs[0].1.lines().count(), 1 + placers.len());
}

#[test]
fn llm_search_flags_out_of_range_are_input_errors() {
    let inst = instance("llm/tiny-two-7b.json");
    for (cmd, flag, value) in [
        ("solve", "--time-limit-s", "-1"),
        ("solve", "--time-limit-s", "nan"),
        ("solve", "--threads", "0"),
        ("compare", "--time-limit-s", "0"),
        ("compare", "--threads", "4294967296"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut args: Vec<std::ffi::OsString> = vec!["llm".into(), cmd.into(), inst.clone().into()];
        if cmd == "compare" {
            args.extend(["--placers".into(), "spatial".into()]);
        }
        args.extend([
            format!("{flag}={value}").into(),
            "-o".into(),
            dir.path().join("out").into(),
        ]);
        let out = plexserve(&args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{cmd} {flag}={value}: {}",
            stderr(&out)
        );
        assert!(stderr(&out).contains(flag), "{}", stderr(&out));
    }
}

/// `llm simulate --requests-out`: one row per request whose statuses, SLO verdicts and times
/// agree with the report (static TP1 drops the long requests it cannot hold).
#[test]
fn llm_requests_csv_agrees_with_the_report() {
    let dir = tempfile::tempdir().unwrap();
    let inst = instance("llm/azure-code-qwen32b-long.json");
    let plan = dir.path().join("tp1.plan.json");
    plexserve_ok(&[
        &"llm",
        &"solve",
        &inst,
        &"--placer",
        &"tp-static:tp=1",
        &"-o",
        &plan,
    ]);
    let csv = dir.path().join("requests.csv");
    let json = plexserve_ok(&[
        &"llm",
        &"simulate",
        &inst,
        &"--plan",
        &plan,
        &"--json",
        &"--requests-out",
        &csv,
    ]);
    let report: serde_json::Value = serde_json::from_str(&json).unwrap();
    let count = |k: &str| report[k].as_u64().unwrap() as usize;
    let text = std::fs::read_to_string(&csv).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len(), count("requests"));
    assert!(rows.iter().all(|r| r.len() == header.len()));
    let with = |c: &str, v: &str| rows.iter().filter(|r| r[col(c)] == v).count();
    assert_eq!(with("status", "finished"), count("finished"));
    assert_eq!(with("status", "too_long"), count("dropped"));
    assert!(count("dropped") > 0, "static TP1 holds no long request");
    assert_eq!(with("good", "1"), count("good"));
    let num = |r: &Vec<&str>, c: &str| r[col(c)].parse::<f64>().unwrap();
    for r in &rows {
        if r[col("status")] == "finished" {
            assert!(num(r, "ttft_s") > 0.0 && num(r, "ttft_s") <= num(r, "latency_s"));
            let lat = num(r, "finish_s") - num(r, "arrival_s");
            assert!((lat - num(r, "latency_s")).abs() < 1e-9);
        } else {
            assert_eq!(r[col("engine")], "");
            assert_eq!(r[col("good")], "0");
            assert!(num(r, "prompt_tokens") > 30_000.0);
        }
    }
}

/// `llm compare --json` and `llm tp-overhead --json`: one document each, agreeing with the TSVs.
#[test]
fn llm_reports_come_as_json_documents_too() {
    let dir = tempfile::tempdir().unwrap();
    let json = compare_tiny(
        dir.path(),
        &[
            "--placers",
            "spatial,muxserve",
            "--sweep",
            "rate_scale=0.5,8",
            "--goodput-level",
            "0.99",
            "--json",
        ],
    );
    let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(doc["schema"], "plexserve/llm-compare/v1");
    let run = &doc["runs"][0];
    let rows = run["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 4);
    let tsv = std::fs::read_to_string(dir.path().join("tiny-two-7b.tsv")).unwrap();
    for (row, line) in rows.iter().zip(tsv.lines().skip(1)) {
        let cells: Vec<&str> = line.split('\t').collect();
        assert_eq!(row["placer"], cells[3]);
        assert_eq!(
            row["report"]["good"].as_u64().unwrap().to_string(),
            cells[8]
        );
    }
    let goodput = run["goodput"].as_array().unwrap();
    assert_eq!(goodput.len(), 2);
    assert!(goodput
        .iter()
        .all(|g| g["status"] == "found" && g["goodput_rps"].as_f64().unwrap() > 0.0));
    for f in run["files"].as_array().unwrap() {
        assert!(std::path::Path::new(f.as_str().unwrap()).is_file(), "{f}");
    }

    let qwen = instance("llm/azure-conv-qwen32b-long.json");
    let json = plexserve_ok(&[&"llm", &"tp-overhead", &qwen, &"--json"]);
    let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
    let rows = doc["rows"].as_array().unwrap();
    let tps: Vec<u64> = rows.iter().map(|r| r["tp"].as_u64().unwrap()).collect();
    assert_eq!(tps, [1, 2, 4, 8]);
    assert!(rows[1]["kv_bound_decode_per_gpu_vs_tp1"].as_f64().unwrap() > 2.0);
}
