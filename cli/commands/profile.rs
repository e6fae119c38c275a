//! `plexserve profile`: per-layer latencies of a model spec on a device (measured on the CPU or a
//! GPU, or predicted for a named GPU), written as a `plexserve/profile/v1` file.

use std::path::{Path, PathBuf};

use plexserve_kernels::Dtype;
use plexserve_profiler::{
    parse_probe_us, probe_us_text, profile, repeatability, Device, LinkModel, ModelSpec,
    ProfileOptions, ProfileRun, ProfilerError, RepeatabilityReport,
};

use crate::Exit;

/// What `plexserve profile` was asked.
pub struct ProfileArgs<'a> {
    pub device: &'a str,
    pub model: &'a Path,
    pub output: Option<&'a PathBuf>,
    pub json: bool,
    pub warmup: usize,
    pub repeats: usize,
    pub link_gb_per_s: Option<f64>,
    pub link_latency_us: Option<f64>,
    /// Replaces the spec's element type (`f32`, `f16`, `bf16`).
    pub dtype: Option<&'a str>,
    /// Worker threads of the CPU kernels.
    pub threads: Option<usize>,
    /// Profile this many times and report how far apart the runs are.
    pub repeatability: Option<usize>,
    /// Another profile's speed-probe times (`source.software.speed-probe-us`) to scale to.
    pub probe_reference_us: Option<&'a str>,
}

/// A bad spec, an unknown or absent device, or a bad option is the user's (exit 2).
pub fn exit_of(e: ProfilerError) -> Exit {
    Exit {
        code: if e.is_input_error() { 2 } else { 1 },
        message: e.to_string(),
    }
}

pub fn run(a: &ProfileArgs) -> Result<(), Exit> {
    let device = Device::parse(a.device).map_err(exit_of)?;
    let spec = ModelSpec::load(a.model).map_err(exit_of)?;
    let link = match (a.link_gb_per_s, a.link_latency_us) {
        (None, None) => None,
        (bw, lat) => {
            let base = match &device {
                Device::Analytic(g) => g.link(),
                _ => LinkModel::default_measured(),
            };
            Some(LinkModel {
                name: "command line".into(),
                bus_gb_per_s: bw.unwrap_or(base.bus_gb_per_s),
                step_latency_s: lat.map_or(base.step_latency_s, |us| us * 1e-6),
            })
        }
    };
    let dtype = match a.dtype {
        None => None,
        Some(s) => Some(Dtype::parse(s).ok_or_else(|| Exit {
            code: 2,
            message: format!("--dtype: expected f32, f16 or bf16, found \"{s}\""),
        })?),
    };
    // Printed tables name the element type the profile was made in.
    let spec = ModelSpec {
        dtype: dtype.unwrap_or(spec.dtype),
        ..spec
    };
    let probe_reference_s = match a.probe_reference_us {
        None => None,
        Some(_) if matches!(device, Device::Analytic(_)) => {
            return Err(Exit {
                code: 2,
                message: "--probe-reference-us: an analytic device measures nothing to scale"
                    .into(),
            })
        }
        Some(s) => Some(parse_probe_us(s).map_err(|e| Exit {
            code: 2,
            message: format!("--probe-reference-us: {e}"),
        })?),
    };
    let opts = ProfileOptions {
        warmup: a.warmup,
        repeats: a.repeats,
        link,
        dtype,
        threads: a.threads,
        probe_reference_s,
        ..ProfileOptions::default()
    };
    let (run, report) = match a.repeatability {
        None => (profile(&spec, &device, &opts).map_err(exit_of)?, None),
        Some(runs) => {
            let (report, mut all) = repeatability(&spec, &device, &opts, runs).map_err(exit_of)?;
            (all.swap_remove(0), Some(report))
        }
    };
    let text = serde_json::to_string_pretty(&run.to_file()).map_err(|e| Exit {
        code: 1,
        message: format!("cannot encode the profile: {e}"),
    })? + "\n";
    if let Some(path) = a.output {
        super::write_file(path, &text)?;
    }
    if a.json {
        print!("{text}");
        return Ok(());
    }
    if let Some(report) = &report {
        print_repeatability(&spec, &run, report);
        if let Some(p) = a.output {
            println!("written   {} (the first run)", p.display());
        }
        return Ok(());
    }
    let b1 = spec.batch_sizes[0];
    println!(
        "model     {} ({:?}, {:.2}e9 parameters, {})",
        spec.name,
        spec.family,
        spec.parameters() as f64 / 1e9,
        spec.dtype.name()
    );
    if let Some(src) = &run.profile.source {
        println!("device    {}", src.device);
    }
    println!(
        "layers    {} (embedding, {} blocks, head)",
        run.profile.layers.len(),
        spec.layers
    );
    print!("{:<12}", "latency_ms");
    for t in &spec.tp_degrees {
        print!("  {:>10}", format!("tp{t} b{b1}"));
    }
    println!();
    for (kind, table) in &run.kinds {
        print!("{:<12}", kind.label());
        for row in table {
            print!("  {:>10.3}", row[0] * 1e3);
        }
        println!();
    }
    print!("{:<12}", "model");
    for ti in 0..spec.tp_degrees.len() {
        let total: f64 = run.profile.layers.iter().map(|l| l.latency_s[ti][0]).sum();
        print!("  {:>10.3}", total * 1e3);
    }
    println!();
    let weight: f64 = run.profile.layers.iter().map(|l| l.weight_gib[0]).sum();
    println!(
        "weights   {weight:.3} GiB per device at tp {}",
        spec.tp_degrees[0]
    );
    if !run.probe_s.is_empty() {
        // Stamped as source.software.speed-probe-us too: a later run given these with
        // --probe-reference-us is expressed at this run's machine speed.
        println!(
            "probe     {} us (scaled to {} us; --probe-reference-us takes these)",
            probe_us_text(&run.probe_s),
            probe_us_text(&run.probe_reference_s)
        );
    }
    match a.output {
        Some(p) => println!("written   {}", p.display()),
        None => println!("(not written: give -o PROFILE, or --json for the profile on stdout)"),
    }
    Ok(())
}

/// The repeatability table: every (layer kind, tp, batch) entry's latency per run and how far
/// apart the runs are, the most varying operators, and the in-run noise.
fn print_repeatability(spec: &ModelSpec, run: &ProfileRun, r: &RepeatabilityReport) {
    println!("model     {} ({})", spec.name, spec.dtype.name());
    if let Some(src) = &run.profile.source {
        println!("device    {}", src.device);
    }
    println!(
        "runs      {} (each: every operator warmed up until settled, median of samples taken in rounds, over {} placement epochs, {} for operators of {} ms or less per run; speed correction: {})",
        r.runs,
        ProfileOptions::default().epochs,
        ProfileOptions::default().short_epochs,
        plexserve_profiler::measure::SHORT_OPERATOR_S * 1e3,
        run.speed.name()
    );
    print!("{:<10} {:>3} {:>5}", "layer", "tp", "batch");
    for i in 0..r.runs {
        print!(" {:>11}", format!("run{}_ms", i + 1));
    }
    println!(" {:>8}", "diff_%");
    for l in &r.layers {
        print!("{:<10} {:>3} {:>5}", l.kind.label(), l.tp, l.batch);
        for t in &l.latency_s {
            print!(" {:>11.4}", t * 1e3);
        }
        println!(" {:>8.2}", l.rel_diff * 100.0);
    }
    println!(
        "layers    medians differ by {:.2} % on average, {:.2} % at most ({} entries); {} within 5 %",
        r.mean_layer_diff() * 100.0,
        r.max_layer_diff() * 100.0,
        r.layers.len(),
        if r.within(0.05) { "all" } else { "NOT all" }
    );
    println!(
        "model     forward pass at tp{} b{}: {} ms ({:.2} % apart)",
        spec.tp_degrees[0],
        spec.batch_sizes[0],
        r.model_s
            .iter()
            .map(|t| format!("{:.3}", t * 1e3))
            .collect::<Vec<_>>()
            .join(" vs "),
        r.model_diff() * 100.0
    );
    for c in r.by_size() {
        if !c.diffs.is_empty() {
            println!("  {c}");
        }
    }
    println!(
        "noise     largest in-run IQR/median {:.2} %",
        r.max_iqr_ratio() * 100.0
    );
    println!("most varying operators:");
    for o in r.ops.iter().take(5) {
        println!(
            "  {:<44} {:>7.2} % apart (in-run IQR/median {:.2} %)",
            o.op.to_string(),
            o.rel_diff * 100.0,
            o.iqr_ratio * 100.0
        );
    }
}
