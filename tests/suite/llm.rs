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

/// Grid files are named by the value's shortest form: `a0.7`, and `a1e-300` for a value whose
/// plain form has 300 digits (it once failed with "File name too long").
#[test]
fn grid_file_names_use_the_shortest_form_of_the_value() {
    let dir = tempfile::tempdir().unwrap();
    let out = plexserve([
        "llm".as_ref(),
        "compare".as_ref(),
        instance("llm/tiny-two-7b.json").as_os_str(),
        "--placers".as_ref(),
        "spatial".as_ref(),
        "--grid".as_ref(),
        "alpha=1e-300,0.7".as_ref(),
        "-o".as_ref(),
        dir.path().as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for name in ["tiny-two-7b-a1e-300.tsv", "tiny-two-7b-a0.7.tsv"] {
        assert!(dir.path().join(name).is_file(), "{name}");
    }
}
