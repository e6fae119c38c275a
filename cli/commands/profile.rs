//! `plexserve profile`: per-layer latencies of a model spec on a device (measured on the CPU or a
//! GPU, or predicted for a named GPU), written as a `plexserve/profile/v1` file.

use std::path::{Path, PathBuf};

use plexserve_profiler::{profile, Device, LinkModel, ModelSpec, ProfileOptions, ProfilerError};

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
    let opts = ProfileOptions {
        warmup: a.warmup,
        repeats: a.repeats,
        link,
        ..ProfileOptions::default()
    };
    let run = profile(&spec, &device, &opts).map_err(exit_of)?;
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
    match a.output {
        Some(p) => println!("written   {}", p.display()),
        None => println!("(not written: give -o PROFILE, or --json for the profile on stdout)"),
    }
    Ok(())
}
