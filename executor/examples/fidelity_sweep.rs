//! SLO-scale sweep of simulated versus measured attainment (emulate runner, loopback HTTP).
//!
//! `cargo run --release -p plexserve-executor --example fidelity_sweep -- INSTANCE PLAN OUT_PREFIX [SCALES]`
//! writes `OUT_PREFIX.tsv` and `OUT_PREFIX.svg`. Points run concurrently, each on its own server.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;

use plexserve_executor::{simulate_and_measure, with_slo_scale, EmulateRunner};
use plexserve_solver::{Instance, PlanFile};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        return Err("usage: fidelity_sweep INSTANCE PLAN OUT_PREFIX [SCALE,SCALE,...]".into());
    }
    let inst = Instance::load(Path::new(&args[0]))?;
    let schedule = PlanFile::load(Path::new(&args[1]))?.resolve(Path::new(&args[1]), &inst)?;
    let scales: Vec<f64> = args
        .get(3)
        .map(String::as_str)
        .unwrap_or("1,1.2,1.6,2,2.5,3,4,6,8,12")
        .split(',')
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    let rt = tokio::runtime::Runtime::new()?;
    let results = rt.block_on(async {
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
    let mut tsv = String::from(
        "instance\tplan\trunner\tslo_scale\trequests\tsimulated_attainment\tmeasured_attainment\tdiff_points\tmeasured_late\tmeasured_errors\tmeasured_p50_s\tmeasured_p99_s\n",
    );
    for (s, (sim, meas)) in scales.iter().zip(&results) {
        writeln!(
            tsv,
            "{}\t{}\temulate\t{s}\t{}\t{:.4}\t{:.4}\t{:+.2}\t{}\t{}\t{:.4}\t{:.4}",
            inst.name,
            args[1],
            meas.requests,
            sim.slo_attainment,
            meas.slo_attainment,
            (meas.slo_attainment - sim.slo_attainment) * 100.0,
            meas.late,
            meas.errors,
            meas.latency_s.p50,
            meas.latency_s.p99
        )?;
    }
    std::fs::write(format!("{}.tsv", args[2]), &tsv)?;
    let pts: Vec<(f64, f64, f64)> = scales
        .iter()
        .zip(&results)
        .map(|(&s, (a, b))| (s, a.slo_attainment, b.slo_attainment))
        .collect();
    std::fs::write(format!("{}.svg", args[2]), svg(&inst.name, &pts))?;
    print!("{tsv}");
    Ok(())
}

/// A plain SVG line chart (log-scale x): no font files or plotting crate needed.
fn svg(title: &str, pts: &[(f64, f64, f64)]) -> String {
    let (w, h, l, r, t, b) = (640.0, 400.0, 60.0, 20.0, 40.0, 50.0);
    let xmin = pts.iter().map(|p| p.0).fold(f64::INFINITY, f64::min).ln();
    let xmax = pts.iter().map(|p| p.0).fold(0.0, f64::max).ln();
    let x = |v: f64| l + (v.ln() - xmin) / (xmax - xmin).max(1e-9) * (w - l - r);
    let y = |v: f64| t + (1.0 - v) * (h - t - b);
    let mut s = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{}" y="20" text-anchor="middle" font-size="14">{title}: simulated vs measured SLO attainment (emulate runner)</text>
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
