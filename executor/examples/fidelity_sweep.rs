//! SLO-scale sweep of simulated versus measured attainment over loopback HTTP.
//!
//! Emulate runner (points run concurrently, each on its own server):
//! `cargo run --release -p plexserve-executor --example fidelity_sweep -- INSTANCE PLAN OUT_PREFIX [SCALES]`
//!
//! CPU runner on a calibrated 2-device pp-2 pipeline (points one after another, each calibrated
//! right before it is served; run it on an otherwise idle machine):
//! `cargo run --release -p plexserve-executor --example fidelity_sweep -- --cpu OUT_PREFIX [SCALES] [QUANTILE]`
//! (QUANTILE: which quantile of the calibrated stage times becomes the profile; default 0.95).
//!
//! Both write `OUT_PREFIX.tsv` and `OUT_PREFIX.svg`.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

use plexserve_executor::{
    simulate_and_measure, with_slo_scale, CpuPipeline, EmulateRunner, FidelityRun, LayerSpec,
};
use plexserve_solver::{Instance, PlanFile};

fn parse_scales(
    arg: Option<&String>,
    default: &str,
) -> Result<Vec<f64>, Box<dyn std::error::Error>> {
    Ok(arg
        .map(String::as_str)
        .unwrap_or(default)
        .split(',')
        .map(str::parse)
        .collect::<Result<_, _>>()?)
}

/// Instance name, plan description, SLO scales and one run per scale.
type Sweep = (String, String, Vec<f64>, Vec<Point>);

/// One point of the sweep: the run kept, how many runs it took, and whether it was disturbed.
struct Point {
    run: FidelityRun,
    attempts: usize,
    disturbed: bool,
}

/// The emulate sweep: the given instance and plan at every scale, all points at once.
fn emulate(args: &[String]) -> Result<Sweep, Box<dyn std::error::Error>> {
    if args.len() < 3 {
        return Err("usage: fidelity_sweep INSTANCE PLAN OUT_PREFIX [SCALE,SCALE,...]".into());
    }
    let inst = Instance::load(Path::new(&args[0]))?;
    let schedule = PlanFile::load(Path::new(&args[1]))?.resolve(Path::new(&args[1]), &inst)?;
    let scales = parse_scales(args.get(3), "1,1.2,1.6,2,2.5,3,4,6,8,12")?;
    let rt = tokio::runtime::Runtime::new()?;
    let runs = rt.block_on(async {
        let mut handles = Vec::new();
        for &s in &scales {
            let inst = with_slo_scale(&inst, s)?;
            let schedule = schedule.clone();
            handles.push(tokio::spawn(async move {
                let trace = inst.workload.generate(inst.base_dir())?;
                simulate_and_measure(&inst, &schedule, &trace, Arc::new(EmulateRunner)).await
            }));
        }
        let mut out = Vec::new();
        for h in handles {
            out.push(
                h.await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| e.to_string())?,
            );
        }
        Ok::<_, Box<dyn std::error::Error>>(out)
    })?;
    let points = runs
        .into_iter()
        .map(|run| Point {
            run,
            attempts: 1,
            disturbed: false,
        })
        .collect();
    Ok((inst.name.clone(), args[1].clone(), scales, points))
}

/// The CPU sweep: the calibrated pipeline of the `cpu_fidelity` test (loop calibration, then
/// the profile fitted to an 8 s pilot run), 20 s of gamma(cv 2) arrivals at 60 % of its
/// capacity per point.
fn cpu(args: &[String]) -> Result<Sweep, Box<dyn std::error::Error>> {
    if args.is_empty() {
        return Err("usage: fidelity_sweep --cpu OUT_PREFIX [SCALE,SCALE,...] [QUANTILE]".into());
    }
    let scales = parse_scales(args.get(1), "1,1.2,1.6,2,2.5,3,4,6,8,12")?;
    let quantile: f64 = args.get(2).map(|q| q.parse()).transpose()?.unwrap_or(0.95);
    let spec = LayerSpec {
        hidden: 64,
        heads: 4,
        seq: 16,
        weight_bank: 2,
        headroom: 1.0,
    };
    // One runtime thread for the server and the load generator: the two cores are the devices'.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut runs = Vec::new();
    let mut name = String::new();
    for (i, &s) in scales.iter().enumerate() {
        // As in the cpu_fidelity test: a run disturbed by other processes is measured again
        // after a fresh calibration, at most three times; the TSV keeps the last one.
        for attempt in 1..=3 {
            let mut pipeline = CpuPipeline::calibrate(spec, 0.025, 16, quantile)?;
            rt.block_on(pipeline.fit_to_serving(s, 0.6, 2.0, 8.0, 1100 + i as u64, quantile))?;
            let inst = pipeline.instance(s, 0.6, 2.0, 20.0, 100 + i as u64)?;
            name.clone_from(&inst.name);
            let trace = inst.workload.generate(inst.base_dir())?;
            let run = rt.block_on(simulate_and_measure(
                &inst,
                &CpuPipeline::schedule(),
                &trace,
                pipeline.runner.clone(),
            ))?;
            let disturbed = run.disturbed(pipeline.calibration.stage_s);
            eprintln!(
                "slo_scale {s} attempt {attempt}: stage {:.2} ms, simulated {:.4}, measured {:.4}, stages over profile {}/{} (longest overrun {:.1} ms){}",
                pipeline.calibration.stage_s * 1e3,
                run.simulated.slo_attainment,
                run.measured.slo_attainment,
                run.stages.overruns,
                run.stages.stages,
                run.stages.max_overrun_s * 1e3,
                if disturbed { " disturbed" } else { "" }
            );
            if !disturbed || attempt == 3 {
                runs.push(Point {
                    run,
                    attempts: attempt,
                    disturbed,
                });
                break;
            }
        }
    }
    Ok((
        name,
        format!(
            "one pp-2 group on 2 devices, stage profile = p{:.0} of served stage times (pilot run)",
            quantile * 100.0
        ),
        scales,
        runs,
    ))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (runner, out, (name, plan, scales, runs)) =
        if args.first().map(String::as_str) == Some("--cpu") {
            (
                "cpu",
                args.get(1).cloned().unwrap_or_default(),
                cpu(&args[1..])?,
            )
        } else {
            (
                "emulate",
                args.get(2).cloned().unwrap_or_default(),
                emulate(&args)?,
            )
        };
    let mut tsv = String::from(
        "instance\tplan\trunner\tslo_scale\trequests\tsimulated_attainment\tmeasured_attainment\tdiff_points\tmeasured_late\tmeasured_errors\tmeasured_p50_s\tmeasured_p99_s\tstages\tstage_overruns\tmeasured_over_profiled_stage_time\tmax_stage_overrun_s\tattempts\tdisturbed\n",
    );
    for (s, point) in scales.iter().zip(&runs) {
        let run = &point.run;
        let (sim, meas) = (&run.simulated, &run.measured);
        writeln!(
            tsv,
            "{name}\t{plan}\t{runner}\t{s}\t{}\t{:.4}\t{:.4}\t{:+.2}\t{}\t{}\t{:.4}\t{:.4}\t{}\t{}\t{:.3}\t{:.4}\t{}\t{}",
            meas.requests,
            sim.slo_attainment,
            meas.slo_attainment,
            run.gap_points(),
            meas.late,
            meas.errors,
            meas.latency_s.p50,
            meas.latency_s.p99,
            run.stages.stages,
            run.stages.overruns,
            run.stages.busy_s / run.stages.profiled_s.max(1e-12),
            run.stages.max_overrun_s,
            point.attempts,
            point.disturbed
        )?;
    }
    std::fs::write(format!("{out}.tsv"), &tsv)?;
    let pts: Vec<(f64, f64, f64)> = scales
        .iter()
        .zip(&runs)
        .map(|(&s, p)| {
            (
                s,
                p.run.simulated.slo_attainment,
                p.run.measured.slo_attainment,
            )
        })
        .collect();
    std::fs::write(format!("{out}.svg"), svg(&name, runner, &pts))?;
    print!("{tsv}");
    Ok(())
}

/// A plain SVG line chart (log-scale x): no font files or plotting crate needed.
fn svg(title: &str, runner: &str, pts: &[(f64, f64, f64)]) -> String {
    let (w, h, l, r, t, b) = (640.0, 400.0, 60.0, 20.0, 40.0, 50.0);
    let xmin = pts.iter().map(|p| p.0).fold(f64::INFINITY, f64::min).ln();
    let xmax = pts.iter().map(|p| p.0).fold(0.0, f64::max).ln();
    let x = |v: f64| l + (v.ln() - xmin) / (xmax - xmin).max(1e-9) * (w - l - r);
    let y = |v: f64| t + (1.0 - v) * (h - t - b);
    let mut s = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{}" y="20" text-anchor="middle" font-size="14">{title}: simulated vs measured SLO attainment ({runner} runner)</text>
"#,
        w / 2.0
    );
    for i in 0..=5 {
        let v = i as f64 / 5.0;
        let _ = writeln!(
            s,
            r##"<line x1="{l}" x2="{}" y1="{yy}" y2="{yy}" stroke="#ddd"/><text x="{}" y="{}" text-anchor="end">{v:.1}</text>"##,
            w - r,
            l - 6.0,
            y(v) + 4.0,
            yy = y(v)
        );
    }
    for p in pts {
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
            x(p.0),
            h - b + 18.0,
            p.0
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">SLO scale (× single-device latency, log scale)</text>"#,
        (l + w - r) / 2.0,
        h - 10.0
    );
    for (k, color, dash) in [(1usize, "#1f77b4", ""), (2, "#d62728", "6,4")] {
        let path: Vec<String> = pts
            .iter()
            .map(|p| {
                let v = if k == 1 { p.1 } else { p.2 };
                format!("{:.1},{:.1}", x(p.0), y(v))
            })
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" stroke-dasharray="{dash}" points="{}"/>"#,
            path.join(" ")
        );
        for p in pts {
            let v = if k == 1 { p.1 } else { p.2 };
            let _ = writeln!(
                s,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{color}"/>"#,
                x(p.0),
                y(v)
            );
        }
    }
    let _ = writeln!(
        s,
        r##"<line x1="{a}" x2="{b2}" y1="{yy}" y2="{yy}" stroke="#1f77b4" stroke-width="2"/><text x="{c}" y="{ty}">simulated</text>
<line x1="{a}" x2="{b2}" y1="{yy2}" y2="{yy2}" stroke="#d62728" stroke-width="2" stroke-dasharray="6,4"/><text x="{c}" y="{ty2}">measured</text>
</svg>"##,
        a = w - 160.0,
        b2 = w - 130.0,
        c = w - 124.0,
        yy = h - b - 40.0,
        ty = h - b - 36.0,
        yy2 = h - b - 22.0,
        ty2 = h - b - 18.0
    );
    s
}
