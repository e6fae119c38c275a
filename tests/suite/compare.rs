//! `compare`: sweeps give one TSV row per (axis, value, placer) and one plot per axis; the TSV does
//! not depend on the thread count; bad sweeps are usage errors.

use std::path::Path;

use crate::common::*;

const COLUMNS: &str = "instance\taxis\tvalue\tdevices\tmodels\trate_scale\tcv_scale\tslo_scale\tplacer\tstatus\tsegments\tgroups\treplicas\tshapes\trequests\tgood\tslo_attainment\tevaluations\terror\tsolve_time_s";

fn compare(inst: &Path, dir: &Path, extra: &[&str]) -> std::process::Output {
    let mut args: Vec<std::ffi::OsString> =
        vec!["compare".into(), inst.into(), "-o".into(), dir.into()];
    args.extend(extra.iter().map(|s| s.into()));
    plexserve(&args)
}

#[test]
fn a_reduced_sweep_writes_one_row_per_point_and_placer_and_one_plot_per_axis() {
    let inst = instance("tiny/two-test-models.json");
    let dir = tempfile::tempdir().unwrap();
    let out = compare(
        &inst,
        dir.path(),
        &[
            "--placers",
            "sr,alpaserve",
            "--sweep",
            "devices=2,4",
            "--sweep",
            "slo_scale=1,5",
            "--threads",
            "1",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let tsv = std::fs::read_to_string(dir.path().join("two-test-models.tsv")).unwrap();
    let lines: Vec<&str> = tsv.lines().collect();
    assert_eq!(lines[0], COLUMNS);
    let cols = lines[0].split('\t').count();
    let rows: Vec<Vec<&str>> = lines[1..].iter().map(|l| l.split('\t').collect()).collect();
    assert_eq!(rows.len(), 8, "{tsv}");
    let expected = [
        ("devices", "2", "sr"),
        ("devices", "2", "alpaserve"),
        ("devices", "4", "sr"),
        ("devices", "4", "alpaserve"),
        ("slo_scale", "1", "sr"),
        ("slo_scale", "1", "alpaserve"),
        ("slo_scale", "5", "sr"),
        ("slo_scale", "5", "alpaserve"),
    ];
    for (r, (axis, value, placer)) in rows.iter().zip(expected) {
        assert_eq!(r.len(), cols, "{r:?}");
        assert_eq!((r[1], r[2], r[8]), (axis, value, placer));
        assert_eq!(r[0], "two-test-models");
        assert_eq!(r[9], "heuristic");
        let att: f64 = r[16].parse().unwrap();
        assert!((0.0..=1.0).contains(&att));
        let (requests, good): (u64, u64) = (r[14].parse().unwrap(), r[15].parse().unwrap());
        assert!(requests > 0 && good <= requests);
    }
    // The swept parameter shows in its own column; the others stay at the fixed point.
    assert_eq!(rows[0][3], "2");
    assert_eq!(rows[2][3], "4");
    assert_eq!((rows[4][3], rows[4][7]), ("4", "1"));
    // An SLO of one single-device latency leaves no room for the 11 ms overhead.
    assert_eq!(rows[4][15], "0");
    let check_plots = |dir: &Path| {
        for axis in ["devices", "slo_scale"] {
            let svg =
                std::fs::read_to_string(dir.join(format!("two-test-models-{axis}.svg"))).unwrap();
            assert!(svg.contains("<svg") && svg.contains("SLO attainment"));
            let png = std::fs::read(dir.join(format!("two-test-models-{axis}.png"))).unwrap();
            assert!(png.starts_with(b"\x89PNG"), "{axis}: not a PNG");
        }
    };
    check_plots(dir.path());
    // --replot draws the same plots from the TSV alone.
    let again = tempfile::tempdir().unwrap();
    let tsv_path = dir.path().join("two-test-models.tsv");
    let out = plexserve([
        "compare".as_ref(),
        "--replot".as_ref(),
        tsv_path.as_os_str(),
        "-o".as_ref(),
        again.path().as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    check_plots(again.path());
    let junk = write(again.path(), "junk.tsv", "not a compare table\n");
    let out = plexserve(["compare".as_ref(), "--replot".as_ref(), junk.as_os_str()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[test]
fn the_tsv_is_the_same_with_one_and_two_threads() {
    let inst = instance("tiny/bert-test-power-law.json");
    let sweeps = [
        "--placers",
        "sr,clockwork++,alpaserve,alpaserve-sep",
        "--sweep",
        "devices=2,4",
        "--sweep",
        "rate_scale=0.5,2",
        "--sweep",
        "cv_scale=0.5",
        "--sweep",
        "models=2",
    ];
    let mut tsvs = Vec::new();
    for threads in ["1", "2"] {
        let dir = tempfile::tempdir().unwrap();
        let mut args = sweeps.to_vec();
        args.extend(["--threads", threads]);
        let out = compare(&inst, dir.path(), &args);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let tsv = std::fs::read_to_string(dir.path().join("bert-test-power-law.tsv")).unwrap();
        assert_eq!(tsv.lines().count(), 1 + 6 * 4);
        tsvs.push(without_time(&tsv));
    }
    assert_eq!(tsvs[0], tsvs[1]);
    // models=2 keeps two of the four models; rate_scale=2 doubles the traffic.
    let rows: Vec<Vec<&str>> = tsvs[0].lines().map(|l| l.split('\t').collect()).collect();
    let models = rows.iter().find(|r| r[1] == "models").unwrap();
    assert_eq!(models[4], "2");
    let req = |axis: &str, v: &str| -> u64 {
        rows.iter().find(|r| r[1] == axis && r[2] == v).unwrap()[14]
            .parse()
            .unwrap()
    };
    assert!(req("rate_scale", "2") > 3 * req("rate_scale", "0.5"));
}

#[test]
fn json_lists_every_row_and_the_files() {
    let inst = instance("tiny/two-test-models.json");
    let dir = tempfile::tempdir().unwrap();
    let out = compare(
        &inst,
        dir.path(),
        &["--placers", "sr", "--sweep", "devices=1,2", "--json"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let doc: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(doc["schema"], "plexserve/compare/v1");
    assert_eq!(doc["rows"].as_array().unwrap().len(), 2);
    assert_eq!(doc["rows"][1]["devices"], 2);
    assert_eq!(doc["files"].as_array().unwrap().len(), 3);
}

#[test]
fn bad_sweeps_and_placers_are_usage_errors() {
    let inst = instance("tiny/two-test-models.json");
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&[&str], &str); 7] = [
        (&["--sweep", "speed=1,2"], "unknown axis"),
        (&["--sweep", "devices"], "AXIS=V1,V2"),
        (&["--sweep", "devices=2,x"], "\"x\""),
        (&["--sweep", "devices=1.5"], "whole numbers"),
        (&["--sweep", "slo_scale=-1"], "positive"),
        (&["--sweep", "models=3"], "sets"),
        (&["--sweep", "devices=2", "--sweep", "devices=4"], "twice"),
    ];
    for (args, needle) in cases {
        let mut all = vec!["--placers", "sr"];
        all.extend_from_slice(args);
        let out = compare(&inst, dir.path(), &all);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(needle), "{args:?}: {}", stderr(&out));
    }
    let out = compare(&inst, dir.path(), &["--placers", "no-such-placer"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("unknown placer"));
    // Nothing was written for the failed runs.
    assert!(!dir.path().join("two-test-models.tsv").exists());
}
