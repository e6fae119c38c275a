//! The profiler against the solver, the calibration and the spec rules.

use std::path::{Path, PathBuf};

use plexserve_profiler::measure::speed_probe;
use plexserve_profiler::{
    layer_ops, parse_probe_us, profile, CpuClock, Device, LayerKind, ModelSpec, Op, ProfileOptions,
    ProfilerError, SpeedCorrection,
};
use plexserve_solver::{single_device_latency_s, ProfileFile};

fn specs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../instances/specs")
}

fn load(name: &str) -> ModelSpec {
    ModelSpec::load(&specs().join(format!("{name}.json"))).unwrap()
}

fn quick() -> ProfileOptions {
    ProfileOptions {
        warmup: 1,
        repeats: 3,
        max_repeats: 5,
        ..ProfileOptions::default()
    }
}

/// What `profile -o` writes, read back by the solver's own loader.
fn round_trip(run: &plexserve_profiler::ProfileRun) -> ProfileFile {
    let text = serde_json::to_string_pretty(&run.to_file()).unwrap();
    ProfileFile::from_json(Path::new("written.json"), &text).unwrap()
}

#[test]
fn cpu_profiles_of_tiny_specs_load_in_the_solver() {
    for name in ["tiny-gpt", "tiny-moe", "tiny-llama-decode"] {
        let spec = load(name);
        let run = profile(&spec, &Device::Cpu, &quick()).unwrap();
        let file = round_trip(&run);
        let p = &file.profiles[name];
        assert_eq!(p.layers.len(), spec.layers + 2, "{name}");
        assert_eq!(p.tp_degrees, spec.tp_degrees);
        assert_eq!(p.batch_sizes, spec.batch_sizes);
        let src = p.source.as_ref().unwrap();
        assert!(src.device.starts_with("cpu"), "{}", src.device);
        assert!(
            src.method.contains("identical layers costed once"),
            "{}",
            src.method
        );
        assert!(src.software.contains_key("rustc") && !src.measured_at.is_empty());
        let t1 = single_device_latency_s(p).unwrap();
        assert!(t1 > 0.0 && t1 < 10.0, "{name}: {t1}");
        // Identical blocks carry identical numbers.
        let blocks: Vec<_> = p
            .layers
            .iter()
            .filter(|l| l.name.starts_with("block."))
            .collect();
        assert!(blocks.windows(2).all(|w| w[0].latency_s == w[1].latency_s));
    }
}

#[test]
fn tensor_parallelism_shards_weights_and_adds_collectives() {
    let spec = load("bert-1.3b");
    let run = profile(
        &spec,
        &Device::parse("analytic:v100-16gb").unwrap(),
        &quick(),
    )
    .unwrap();
    let block = &run.profile.layers[1];
    for (i, &t) in spec.tp_degrees.iter().enumerate() {
        let ratio = block.weight_gib[0] / block.weight_gib[i];
        assert!(
            (ratio - f64::from(t)).abs() < 0.01 * f64::from(t),
            "tp {t}: ratio {ratio}"
        );
    }
    let ops = layer_ops(&spec, LayerKind::Block { moe: false }, 4, 1);
    assert_eq!(
        ops.iter()
            .filter(|o| matches!(o, Op::AllReduce { .. }))
            .count(),
        2
    );
    assert!(layer_ops(&spec, LayerKind::Block { moe: false }, 1, 1)
        .iter()
        .all(|o| !o.is_communication()));
    // Total fp16 weight of BERT-1.3B is about 2.6 GB (AlpaServe's table).
    let total_gb: f64 = run
        .profile
        .layers
        .iter()
        .map(|l| l.weight_gib[0])
        .sum::<f64>()
        * (1u64 << 30) as f64
        / 1e9;
    assert!((total_gb - 2.6).abs() < 0.15, "{total_gb}");
}

#[test]
fn calibration_bert_on_v100_within_1_5x_of_alpaserve() {
    // AlpaServe's single-device batch-1 latencies (alpaserve-semantics.md §4), seq 2048.
    for (name, published_s) in [
        ("bert-1.3b", 0.151),
        ("bert-2.6b", 0.238),
        ("bert-6.7b", 0.395),
    ] {
        let spec = load(name);
        let run = profile(
            &spec,
            &Device::parse("analytic:v100-16gb").unwrap(),
            &quick(),
        )
        .unwrap();
        let predicted = single_device_latency_s(&run.profile).unwrap();
        let ratio = predicted / published_s;
        assert!(
            (1.0 / 1.5..=1.5).contains(&ratio),
            "{name}: predicted {predicted:.3} s, published {published_s} s"
        );
        // The fit itself is tighter than the acceptance bound; keep it from drifting unnoticed.
        assert!((0.85..=1.15).contains(&ratio), "{name}: ratio {ratio:.3}");
    }
}

#[test]
fn calibration_cross_check_llama_7b_on_a100() {
    // MuxServe's A100-80GB profile (llm-serving.md §1.2): TP1, batch 32, 128-token prefill
    // 306 ms; one decode step at context 128, 14.4 ms.
    let mut f: plexserve_profiler::SpecFile =
        serde_json::from_str(&std::fs::read_to_string(specs().join("llama-7b.json")).unwrap())
            .unwrap();
    f.seq_len = 128;
    f.batch_sizes = vec![32];
    f.tp_degrees = vec![1];
    let device = Device::parse("analytic:a100-80gb").unwrap();
    let prefill = ModelSpec::from_file(Path::new("prefill"), &f).unwrap();
    let total = |spec: &ModelSpec| -> f64 {
        profile(spec, &device, &quick())
            .unwrap()
            .profile
            .layers
            .iter()
            .map(|l| l.latency_s[0][0])
            .sum()
    };
    let t = total(&prefill);
    assert!((0.306 / 1.5..=0.306 * 1.5).contains(&t), "prefill {t}");
    f.phase = plexserve_profiler::Phase::Decode;
    f.context_len = Some(128);
    let decode = ModelSpec::from_file(Path::new("decode"), &f).unwrap();
    let t = total(&decode);
    assert!((0.0144 / 1.5..=0.0144 * 1.5).contains(&t), "decode {t}");
}

#[test]
fn every_shipped_spec_profiles_analytically_on_every_gpu() {
    let mut names: Vec<_> = std::fs::read_dir(specs())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    for path in names {
        let spec = ModelSpec::load(&path).unwrap();
        for gpu in plexserve_profiler::GPUS {
            let run = profile(&spec, &Device::Analytic(gpu), &quick()).unwrap();
            round_trip(&run);
            // More devices never make a layer slower than twice... but must make big layers faster.
            let block = &run.profile.layers[1];
            if spec.tp_degrees.len() > 1 && spec.hidden >= 4096 {
                assert!(
                    block.latency_s[1][0] < block.latency_s[0][0],
                    "{} on {}",
                    spec.name,
                    gpu.name
                );
            }
        }
    }
}

#[test]
fn shipped_spec_sizes_match_the_papers() {
    let params = |n: &str| load(n).parameters() as f64 / 1e9;
    for (name, want) in [
        ("bert-1.3b", 1.3),
        ("bert-2.6b", 2.6),
        ("bert-6.7b", 6.7),
        ("moe-1.3b", 1.3),
        ("llama-7b", 6.7),
        ("llama-13b", 13.0),
        ("llama-30b", 32.5),
        ("llama-65b", 65.2),
        ("qwen2.5-32b", 32.8),
    ] {
        let got = params(name);
        assert!(
            (got / want - 1.0).abs() < 0.06,
            "{name}: {got:.2}e9 parameters, expected about {want}e9"
        );
    }
}

fn spec_error(json: &str) -> (String, String) {
    match ModelSpec::from_json(Path::new("spec.json"), json) {
        Err(ProfilerError::Spec {
            json_path, message, ..
        }) => (json_path, message),
        other => panic!("expected a spec error, got {other:?}"),
    }
}

const GOOD: &str = r#"{"schema": "plexserve/model-spec/v1", "name": "m", "family": "gpt", "layers": 2, "hidden": 64,
  "heads": 4, "vocab": 100, "seq_len": 8, "batch_sizes": [1, 2], "tp_degrees": [1, 2]}"#;

#[test]
fn spec_validation_names_the_field() {
    assert!(ModelSpec::from_json(Path::new("spec.json"), GOOD).is_ok());
    let with = |from: &str, to: &str| GOOD.replace(from, to);
    assert_eq!(spec_error(&with("\"heads\": 4", "\"heads\": 0")).0, "heads");
    assert_eq!(spec_error(&with("\"heads\": 4", "\"heads\": 5")).0, "heads");
    assert_eq!(spec_error(&with("[1, 2]}", "[1, 8]}")).0, "tp_degrees[1]");
    assert_eq!(
        spec_error(&with("\"layers\": 2", "\"layers\": 2, \"layer\": 2")).0,
        "layer"
    );
    assert!(
        spec_error(&with("\"layers\": 2", "\"layers\": 2, \"layer\": 2"))
            .1
            .contains("unknown field")
    );
    assert_eq!(
        spec_error(&with("\"heads\": 4", "\"heads\": 4, \"kv_heads\": 3")).0,
        "kv_heads"
    );
    assert_eq!(spec_error(&with("\"gpt\"", "\"moe\"")).0, "experts");
    assert_eq!(
        spec_error(&with("\"heads\": 4", "\"heads\": 4, \"experts\": 4")).0,
        "experts"
    );
    assert_eq!(
        spec_error(&with("[1, 2], \"tp", "[2, 1], \"tp")).0,
        "batch_sizes"
    );
    assert_eq!(
        spec_error(&with("\"gpt\"", "\"gpt\", \"dtype\": \"f8\"")).0,
        "dtype"
    );
    assert_eq!(
        spec_error(&with("\"hidden\": 64", "\"hidden\": -1")).0,
        "hidden"
    );
    assert_eq!(spec_error("").0, "$");
    // Sizes with digits too many are refused, not allocated.
    let (at, msg) = spec_error(&with("\"layers\": 2", "\"layers\": 4194304"));
    assert_eq!(
        (at.as_str(), msg.as_str()),
        ("layers", "expected at most 1024, found 4194304")
    );
    assert_eq!(
        spec_error(&with("[1, 2], \"tp", "[1, 1048576], \"tp")).0,
        "batch_sizes[1]"
    );
    let e = ModelSpec::load(Path::new("/nonexistent/spec.json")).unwrap_err();
    assert!(e.is_input_error());
}

/// The analytic model costs a spec at every size limit without overflow (sizes multiply in f64:
/// a prefill's m·k·n·count exceeds 2⁶⁴ there) and with finite, positive latencies.
#[test]
fn the_largest_accepted_spec_costs_analytically() {
    for (family, extra) in [("gpt", ""), ("moe", r#", "experts": 1024, "top_k": 1024"#)] {
        let json = format!(
            r#"{{"schema": "plexserve/model-spec/v1", "name": "max", "family": "{family}", "layers": 1024,
              "hidden": 131072, "heads": 4096, "ffn": 524288, "vocab": 4194304, "seq_len": 16777216,
              "batch_sizes": [1, 65536], "tp_degrees": [1, 4096]{extra}}}"#
        );
        let spec = ModelSpec::from_json(Path::new("max.json"), &json).unwrap();
        let dev = Device::parse("analytic:h100-80gb").unwrap();
        let p = profile(&spec, &dev, &ProfileOptions::default()).unwrap();
        let json = serde_json::to_value(p.to_file()).unwrap();
        let mut n = 0;
        let mut walk = vec![&json];
        while let Some(v) = walk.pop() {
            match v {
                serde_json::Value::Array(a) => walk.extend(a),
                serde_json::Value::Object(o) => walk.extend(o.values()),
                serde_json::Value::Number(x) => {
                    let x = x.as_f64().unwrap();
                    assert!(x.is_finite() && x >= 0.0, "{family}: {x}");
                    n += 1;
                }
                _ => {}
            }
        }
        assert!(n > 20, "{family}: {n} numbers");
    }
}

#[test]
fn absent_or_unknown_devices_are_input_errors() {
    for bad in ["gpu", "cuda:x", "analytic:tpu-v4", "analytic"] {
        let e = Device::parse(bad).unwrap_err();
        assert!(e.is_input_error(), "{bad}: {e}");
    }
    let spec = load("tiny-gpt");
    if let Err(e) = profile(&spec, &Device::Cuda(1_000), &quick()) {
        assert!(e.is_input_error(), "{e}");
    }
}

/// On a GPU machine the tiny spec profiles on `cuda:0` and the solver loads the result; without
/// one the test skips, unless `PLEXSERVE_REQUIRE_GPU=1`.
#[test]
fn cuda_profile_of_the_tiny_spec() {
    let spec = load("tiny-gpt");
    match profile(&spec, &Device::Cuda(0), &quick()) {
        Ok(run) => {
            let file = round_trip(&run);
            let src = file.profiles["tiny-gpt"].source.clone().unwrap();
            assert!(src.device.starts_with("cuda:0"), "{}", src.device);
            assert!(src.software.contains_key("cuda-driver"));
        }
        Err(e) if std::env::var("PLEXSERVE_REQUIRE_GPU").is_ok_and(|v| v == "1") => {
            panic!("PLEXSERVE_REQUIRE_GPU=1 but cuda:0 cannot be profiled: {e}")
        }
        Err(e) => {
            assert!(e.is_input_error(), "{e}");
            eprintln!("skipped: {e}");
        }
    }
}

#[test]
fn too_large_for_the_cpu_is_an_error_not_an_abort() {
    let spec = load("llama-65b");
    let e = profile(
        &spec,
        &Device::Cpu,
        &ProfileOptions {
            max_cpu_operator_bytes: 1 << 28,
            ..quick()
        },
    )
    .unwrap_err();
    assert!(matches!(e, ProfilerError::TooLarge(_)), "{e}");
    assert!(e.is_input_error());
}

#[test]
fn analytic_profiles_are_deterministic() {
    let spec = load("qwen2.5-32b");
    let d = Device::parse("analytic:h100-80gb").unwrap();
    let a = profile(&spec, &d, &quick()).unwrap();
    let b = profile(&spec, &d, &quick()).unwrap();
    assert_eq!(a.profile.layers, b.profile.layers);
}

#[test]
fn sample_statistics() {
    let s = plexserve_profiler::Samples(vec![5.0, 1.0, 4.0, 2.0, 3.0, 100.0]);
    assert_eq!(s.median_s(), 3.5);
    assert_eq!(s.quantile_s(0.0), 1.0);
    assert_eq!(s.quantile_s(1.0), 100.0);
    assert_eq!(s.quantile_s(0.25), 2.25);
    assert_eq!(s.quantile_s(0.75), 4.75);
    // One outlier moves the full spread but not the interquartile one.
    assert!((s.iqr_ratio() - 2.5 / 3.5).abs() < 1e-12);
    assert!((s.spread() - 99.0 / 3.5).abs() < 1e-12);
    assert_eq!(plexserve_profiler::Samples(vec![]).median_s(), 0.0);
}

#[test]
fn repeatability_report_finds_the_entry_that_moved() {
    let spec = load("tiny-moe");
    let d = Device::parse("analytic:a100-80gb").unwrap();
    let a = profile(&spec, &d, &quick()).unwrap();
    let same = plexserve_profiler::compare_runs(&[a.clone(), a.clone()]).unwrap();
    assert_eq!(same.max_layer_diff(), 0.0);
    assert!(same.within(0.05));
    let entries: usize = a.kinds.iter().map(|(_, t)| t.len() * t[0].len()).sum();
    assert_eq!(same.layers.len(), entries);
    assert_eq!(
        entries,
        4 * spec.tp_degrees.len() * spec.batch_sizes.len(),
        "embedding, block, moe-block, head"
    );

    // Make one operator and one layer entry 10 % slower in a second run.
    let mut b = a.clone();
    b.ops[2].median_s *= 1.1;
    b.kinds[1].1[0][0] *= 1.1;
    let r = plexserve_profiler::compare_runs(&[a.clone(), b.clone()]).unwrap();
    assert!((r.max_layer_diff() - 0.1).abs() < 1e-9);
    assert!((r.mean_layer_diff() - 0.1 / entries as f64).abs() < 1e-9);
    assert!(!r.within(0.05) && r.within(0.11));
    let moved = r.layers.iter().find(|l| l.rel_diff > 0.0).unwrap();
    assert_eq!(
        (moved.kind, moved.tp, moved.batch),
        (a.kinds[1].0, spec.tp_degrees[0], spec.batch_sizes[0])
    );
    assert_eq!(r.ops[0].op, a.ops[2].op);
    assert!((r.ops[0].rel_diff - 0.1).abs() < 1e-9);
    assert_eq!(r.model_s.len(), 2);

    // Runs of different specs or a single run are refused.
    let other = profile(&load("tiny-gpt"), &d, &quick()).unwrap();
    assert!(plexserve_profiler::compare_runs(&[a.clone(), other]).is_err());
    assert!(plexserve_profiler::compare_runs(&[a]).is_err());
}

fn src_speed(run: &plexserve_profiler::ProfileRun) -> &str {
    &run.profile.source.as_ref().unwrap().software["speed-correction"]
}

/// A repeatability check on the CPU computes and reports every statistic; wall times are not
/// asserted, because CI machines are shared.
#[test]
fn cpu_repeatability_check_reports_complete_statistics() {
    let spec = load("tiny-gpt");
    let opts = ProfileOptions {
        threads: Some(1),
        ..quick()
    };
    let (report, runs) = plexserve_profiler::repeatability(&spec, &Device::Cpu, &opts, 2).unwrap();
    assert_eq!(report.runs, 2);
    assert_eq!(runs.len(), 2);
    // The probe is calibrated on the first run: both runs are scaled to its probe times.
    assert_eq!(runs[0].probe_reference_s, runs[0].probe_s);
    assert_eq!(runs[1].probe_reference_s, runs[0].probe_s);
    assert_eq!(runs[0].groups[0].probe_scale, 1.0);
    assert_eq!(report.ops.len(), runs[0].ops.len());
    assert!(report.layers.iter().all(|l| l.latency_s.len() == 2
        && l.latency_s.iter().all(|&t| t > 0.0)
        && l.rel_diff.is_finite()));
    assert!(report
        .ops
        .windows(2)
        .all(|w| w[0].rel_diff >= w[1].rel_diff));
    for run in &runs {
        for c in &run.ops {
            // At least `repeats` samples; more (up to `max_repeats`) where the median's
            // confidence interval was still wide. Short operators, over `short_epochs` epochs,
            // take at least two per epoch, which is more than this small `max_repeats`.
            let most = opts
                .max_repeats
                .max(opts.short_epochs * plexserve_profiler::measure::MIN_SHORT_EPOCH_SAMPLES);
            assert!(
                (opts.repeats..=most).contains(&c.repeats),
                "{}: {}",
                c.op,
                c.repeats
            );
            assert!(c.ci_half_width.is_finite() && c.ci_half_width >= 0.0);
            assert!(c.warmup_samples >= opts.warmup, "{}", c.op);
            assert!(c.runs_per_sample >= 1);
            // The latency is the epochs' medians' median of the samples divided by their
            // rounds' speed factors, times the typical factor and the probe's scale: within the
            // samples' range stretched by those factors, not necessarily between the quartiles
            // of all samples pooled (min, max and quartiles are of the raw samples).
            assert!(c.min_s <= c.q1_s && c.q1_s <= c.q3_s && c.q3_s <= c.max_s);
            let g = &run.groups[0];
            let lo = g
                .round_factors
                .iter()
                .copied()
                .fold(f64::INFINITY, f64::min);
            let hi = g.round_factors.iter().copied().fold(0.0, f64::max);
            let scale = g.median_factor * g.probe_scale;
            assert!(
                c.min_s * scale / hi <= c.median_s * (1.0 + 1e-12)
                    && c.median_s <= c.max_s * scale / lo * (1.0 + 1e-12),
                "{}: {} not in [{}, {}] stretched by {lo}-{hi}, scale {scale}",
                c.op,
                c.median_s,
                c.min_s,
                c.max_s
            );
        }
        // Corrected for the machine's speed by default, with the probe measured in every
        // round; the stamp says so.
        assert_eq!(run.speed, SpeedCorrection::Probe);
        assert_eq!(src_speed(run), "probe");
        assert_eq!(run.probe_s.len(), speed_probe().len());
        assert!(run.probe_s.iter().all(|&t| t > 0.0));
        assert!(run.groups[0]
            .round_factors
            .iter()
            .all(|f| f.is_finite() && *f > 0.0));
        let src = run.profile.source.as_ref().unwrap();
        assert_eq!(src.software["rayon-threads"], "1");
        assert!(src.method.contains("in rounds"), "{}", src.method);
        // All work on the measuring thread (one rayon worker, one GEMM thread) is timed with
        // its CPU time; otherwise with wall time.
        let clock = CpuClock::for_threads(Some(1), &plexserve_profiler::matmul_threads());
        assert_eq!(
            src.software["clock"],
            if clock == CpuClock::Thread {
                "thread-cpu"
            } else {
                "wall"
            }
        );
        assert!(src.device.contains("(1 threads)"), "{}", src.device);
        // Samples are pooled over placement epochs, and the measuring thread is pinned (and
        // says to which CPU) exactly when it does all the work.
        assert!(
            src.method
                .contains(&format!("{} placement epoch", opts.epochs)),
            "{}",
            src.method
        );
        let pin = &src.software["cpu-pin"];
        if clock == CpuClock::Thread && cfg!(target_os = "linux") {
            let cpu: usize = pin.parse().expect("a CPU number");
            assert!(
                src.method
                    .contains(&format!("measuring thread pinned to CPU {cpu}")),
                "{}",
                src.method
            );
        } else {
            assert_eq!(pin, "none");
        }
    }
    // Each run stamps its own probe times in the format a later run takes as its reference
    // (microseconds, 3 decimals); a run given the first run's stamp is scaled to exactly those.
    for run in &runs {
        let stamp = &run.profile.source.as_ref().unwrap().software["speed-probe-us"];
        let back = parse_probe_us(stamp).unwrap();
        assert_eq!(back.len(), run.probe_s.len());
        for (b, p) in back.iter().zip(&run.probe_s) {
            assert!((b - p).abs() <= 0.6e-9, "{stamp}: {b} vs {p}");
        }
    }
    let reference =
        parse_probe_us(&runs[0].profile.source.as_ref().unwrap().software["speed-probe-us"])
            .unwrap();
    let later = profile(
        &spec,
        &Device::Cpu,
        &ProfileOptions {
            probe_reference_s: Some(reference.clone()),
            ..opts.clone()
        },
    )
    .unwrap();
    assert_eq!(later.probe_reference_s, reference);
    assert!(later
        .profile
        .source
        .as_ref()
        .unwrap()
        .method
        .contains(&format!(
            "at reference times {} us",
            reference
                .iter()
                .map(|t| format!("{:.3}", t * 1e6))
                .collect::<Vec<_>>()
                .join(" / ")
        )));
    // A reference of the wrong length or with a non-positive time, or one without the probe
    // correction, is refused before anything is measured.
    for (reference, speed) in [
        (vec![1e-5; 3], SpeedCorrection::Probe),
        ([vec![1e-5; 7], vec![0.0]].concat(), SpeedCorrection::Probe),
        (vec![1e-5; 8], SpeedCorrection::None),
    ] {
        let bad = ProfileOptions {
            probe_reference_s: Some(reference),
            speed,
            ..quick()
        };
        assert!(profile(&spec, &Device::Cpu, &bad)
            .unwrap_err()
            .is_input_error());
    }
    for text in [
        "",
        "1,2,3",
        "1,2,3,4,5,6,7,x",
        "1,2,3,4,5,6,7,-8",
        "1,2,3,4,5,6,7,8,9",
    ] {
        let e = parse_probe_us(text).unwrap_err();
        assert!(
            e.is_input_error() && e.to_string().contains("expected 8"),
            "{e}"
        );
    }
    assert!((parse_probe_us(" 1, 2,3,4,5,6,7,8.5").unwrap()[7] / 8.5e-6 - 1.0).abs() < 1e-12);
    assert!(report.model_diff().is_finite() && report.max_iqr_ratio().is_finite());
    assert!(plexserve_profiler::repeatability(&spec, &Device::Cpu, &opts, 1).is_err());
    let zero = ProfileOptions {
        threads: Some(0),
        ..quick()
    };
    assert!(profile(&spec, &Device::Cpu, &zero)
        .unwrap_err()
        .is_input_error());
    let no_epochs = ProfileOptions {
        epochs: 0,
        ..quick()
    };
    assert!(profile(&spec, &Device::Cpu, &no_epochs)
        .unwrap_err()
        .is_input_error());
}

#[test]
fn dtype_option_replaces_the_spec_dtype() {
    let spec = load("bert-1.3b");
    let d = Device::parse("analytic:v100-16gb").unwrap();
    let f16 = profile(&spec, &d, &quick()).unwrap();
    let f32 = profile(
        &spec,
        &d,
        &ProfileOptions {
            dtype: Some(plexserve_kernels::Dtype::F32),
            ..quick()
        },
    )
    .unwrap();
    let w = |r: &plexserve_profiler::ProfileRun| r.profile.layers[1].weight_gib[0];
    assert!((w(&f32) / w(&f16) - 2.0).abs() < 1e-9);
    // f32 runs on CUDA cores, far slower than f16 tensor cores.
    let t = |r: &plexserve_profiler::ProfileRun| single_device_latency_s(&r.profile).unwrap();
    assert!(t(&f32) > 3.0 * t(&f16), "{} vs {}", t(&f32), t(&f16));
    assert!(f32
        .profile
        .source
        .unwrap()
        .method
        .contains("counted in f32"));
}
