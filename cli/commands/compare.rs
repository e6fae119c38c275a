//! `plexserve compare`: several placers over sweeps of one instance parameter; a TSV of every
//! (axis, value, placer) and one SVG + PNG plot of SLO attainment per axis.

use std::path::{Path, PathBuf};

use plexserve_solver::compare::{
    from_tsv, status_word, threshold_points, to_tsv, Axis, Experiment, Row, Sweep,
};
use plexserve_solver::{by_name, parse_placer_spec};

use super::{print_json, with_threads, write_file};
use crate::args::SearchArgs;
use crate::plot::{self, Plot, Series};
use crate::progress::Bar;
use crate::Exit;

/// Attainment at which the plots place their marker.
const TARGET: f64 = 0.99;

pub fn run(
    instance: &Path,
    placers: &[String],
    sweeps: &[String],
    out_dir: &Path,
    json: bool,
    search: &SearchArgs,
) -> Result<(), Exit> {
    let placers = split_placers(placers);
    let sweeps = sweeps
        .iter()
        .map(|s| s.parse::<Sweep>())
        .collect::<Result<Vec<_>, _>>()?;
    let opts = search.place_options(Default::default())?;
    let exp = Experiment::load(instance)?;
    std::fs::create_dir_all(out_dir).map_err(|e| Exit {
        code: 1,
        message: format!(
            "{}: cannot create the output folder: {e}",
            out_dir.display()
        ),
    })?;
    let bar = Bar::new(&format!("compare {}", exp.base.name));
    let rows = with_threads(search.threads, || {
        exp.run(&placers, &sweeps, opts.seed, opts.time_limit_s, &bar)
    })??;
    bar.finish();

    let stem = file_stem(&exp.base.name);
    let mut written: Vec<PathBuf> = Vec::new();
    let tsv = out_dir.join(format!("{stem}.tsv"));
    write_file(&tsv, &to_tsv(&rows))?;
    written.push(tsv);
    let axes: Vec<Axis> = sweeps.iter().map(|s| s.axis).collect();
    written.extend(plots(&rows, &axes, &exp.base.name, out_dir)?);
    for r in &rows {
        if let Err((word, msg)) = &r.outcome {
            eprintln!(
                "warning: {} at {}={}: {word}: {msg}",
                r.placer,
                r.axis.map_or("fixed", Axis::name),
                r.value
            );
        }
    }
    if json {
        let doc = serde_json::json!({
            "schema": "plexserve/compare/v1",
            "instance": exp.base.name,
            "rows": rows.iter().map(row_json).collect::<Vec<_>>(),
            "files": written.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
        });
        return print_json(&doc);
    }
    println!(
        "{:<10}  {:>8}  {:<22}  {:>10}  {:<10}  plan",
        "axis", "value", "placer", "attainment", "status"
    );
    for r in &rows {
        let (att, status, plan) = match &r.outcome {
            Ok(o) => (
                format!("{:.4}", o.slo_attainment),
                status_word(o.status).to_string(),
                format!("{} groups, {} replicas, {}", o.groups, o.replicas, o.shapes),
            ),
            Err((word, _)) => ("-".into(), word.clone(), String::new()),
        };
        println!(
            "{:<10}  {:>8}  {:<22}  {att:>10}  {status:<10}  {plan}",
            r.axis.map_or("fixed", Axis::name),
            if r.axis.is_some() {
                r.value.to_string()
            } else {
                "-".into()
            },
            r.placer
        );
    }
    for p in &written {
        eprintln!("wrote {}", p.display());
    }
    Ok(())
}

/// `compare --replot TSV`: the plots of every axis in a TSV written by `compare`, drawn again.
pub fn replot(tsv: &Path, out_dir: &Path) -> Result<(), Exit> {
    let text = std::fs::read_to_string(tsv).map_err(|e| Exit {
        code: 2,
        message: format!("{}: cannot read: {e}", tsv.display()),
    })?;
    let rows = from_tsv(&text).map_err(|e| Exit::input(format!("{}: {e}", tsv.display())))?;
    let mut axes: Vec<Axis> = Vec::new();
    for a in rows.iter().filter_map(|r| r.axis) {
        if !axes.contains(&a) {
            axes.push(a);
        }
    }
    let name = rows.first().map_or("compare", |r| r.instance.as_str());
    std::fs::create_dir_all(out_dir)?;
    for p in plots(&rows, &axes, name, out_dir)? {
        eprintln!("wrote {}", p.display());
    }
    Ok(())
}

/// One SVG and one PNG per axis, `DIR/<instance>-<axis>.svg/.png`.
fn plots(
    rows: &[Row],
    axes: &[Axis],
    instance: &str,
    out_dir: &Path,
) -> Result<Vec<PathBuf>, Exit> {
    let stem = file_stem(instance);
    let mut written = Vec::new();
    for &axis in axes {
        let series = series_of(rows, axis);
        let title = format!("{instance}: SLO attainment vs {}", axis.name());
        let plot = Plot {
            title: &title,
            x_label: axis.label(),
            target: TARGET,
            integral_x: matches!(axis, Axis::Devices | Axis::Models),
            legend_left: !axis.more_is_easier(),
            series: &series,
        };
        let svg = out_dir.join(format!("{stem}-{}.svg", axis.name()));
        let png = out_dir.join(format!("{stem}-{}.png", axis.name()));
        plot::write(&plot, &svg, &png).map_err(|message| Exit { code: 1, message })?;
        written.push(svg);
        written.push(png);
    }
    Ok(written)
}

/// `--placers` items split on commas; an item that is not itself a placer name continues the
/// options of the previous placer when that one has options (`clockwork++:window_s=60,faithful`).
fn split_placers(args: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for arg in args {
        for item in arg.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let is_placer = parse_placer_spec(item)
                .ok()
                .is_some_and(|(name, _)| by_name(&name).is_ok());
            match out.last_mut() {
                Some(prev) if prev.contains(':') && !is_placer => {
                    prev.push(',');
                    prev.push_str(item);
                }
                _ => out.push(item.to_string()),
            }
        }
    }
    out
}

/// The instance name made safe as a file name.
fn file_stem(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '+') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn series_of(rows: &[Row], axis: Axis) -> Vec<Series> {
    threshold_points(rows, axis, TARGET)
        .into_iter()
        .map(|(placer, marker)| {
            let points = rows
                .iter()
                .filter(|r| r.axis == Some(axis) && r.placer == placer)
                .map(|r| (r.value, r.outcome.as_ref().ok().map(|o| o.slo_attainment)))
                .collect();
            let pct = TARGET * 100.0;
            let label = match (marker, axis.more_is_easier()) {
                (Some(x), true) => format!("{placer}: ≥ {pct:.0} % from {x}"),
                (Some(x), false) => format!("{placer}: ≥ {pct:.0} % up to {x}"),
                (None, _) => format!("{placer}: never ≥ {pct:.0} %"),
            };
            Series {
                label,
                points,
                marker,
            }
        })
        .collect()
}

fn row_json(r: &Row) -> serde_json::Value {
    let p = &r.point;
    let mut v = serde_json::json!({
        "axis": r.axis.map(Axis::name),
        "value": r.axis.map(|_| r.value),
        "devices": p.devices,
        "models": p.models,
        "rate_scale": p.rate_scale,
        "cv_scale": p.cv_scale,
        "slo_scale": p.slo_scale,
        "placer": r.placer,
    });
    let extra = match &r.outcome {
        Ok(o) => serde_json::json!({
            "status": o.status,
            "segments": o.segments,
            "groups": o.groups,
            "replicas": o.replicas,
            "shapes": o.shapes,
            "requests": o.requests,
            "good": o.good,
            "slo_attainment": o.slo_attainment,
            "evaluations": o.evaluations,
            "solve_time_s": o.solve_time_s,
        }),
        Err((word, msg)) => serde_json::json!({ "status": word, "error": msg }),
    };
    if let (Some(a), serde_json::Value::Object(b)) = (v.as_object_mut(), extra) {
        a.extend(b);
    }
    v
}
