//! Comparison experiments (contract.md §5, alpaserve-semantics.md §4): vary one instance parameter
//! at a time, run several placers at every value, and simulate every plan the way `solve` does.
//!
//! ```no_run
//! use plexserve_solver::compare::{Experiment, Sweep};
//! use plexserve_solver::Silent;
//! let exp = Experiment::load("instances/tiny/two-test-models.json".as_ref()).unwrap();
//! let sweeps = vec!["devices=2,4".parse::<Sweep>().unwrap()];
//! let rows = exp.run(&["sr".to_string()], &sweeps, 0, None, &Silent).unwrap();
//! print!("{}", plexserve_solver::compare::to_tsv(&rows));
//! ```
//!
//! # Axes
//!
//! Every point starts from the instance as written (its *fixed point*) and changes one thing:
//!
//! - `devices=N`: `cluster.devices` (layer-level profiles re-derive their configurations for it);
//! - `rate_scale=F`, `cv_scale=F`: **factors relative to the instance's workload**
//!   ([`crate::WorkloadSpec::try_scaled`]); 1 is the fixed point. Relative factors work for every workload
//!   kind and for synthetic traces whose absolute `rate_scale` differs from the paper's (see
//!   `instances/README.md`): the paper's S1@MAF1 rate scales 5e-4…8e-3 around 2e-3 are
//!   `rate_scale=0.25,…,4` here, its CV scales 1…8 around 4 are `cv_scale=0.25,…,2`;
//! - `slo_scale=F`: **absolute**: every model's SLO becomes F × its profile's single-device batch-1
//!   latency ([`single_device_latency_s`]), whatever the file said (`slo_s` or `slo_scale`);
//! - `models=K`: the first K *model sets*. A model set is `s` consecutive models, `s` being the number
//!   of distinct profiles the instance's models use: S3 interleaves its six types, so a set is one
//!   model of every type and K sets are 6K models (alpaserve-semantics.md §4: "#models = 6 × #model
//!   sets"); a single-type instance (S1, S2) has sets of one model. The workload is re-read for the
//!   kept models: trace replays map functions onto fewer models (same total traffic, as in the
//!   paper), `gamma` power laws spread the same total rate, explicit `streams` and `requests` of
//!   dropped models are dropped. K may not exceed the instance's own number of sets.
//!
//! # Determinism
//!
//! Points run in parallel (rayon) and results are collected in input order, so [`to_tsv`] gives the
//! same bytes for any thread count, except the last column (solve wall time).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};

use rayon::prelude::*;

use crate::error::{parse_document, read_file, Result, SolverError};
use crate::instance::{single_device_latency_s, Instance, InstanceFile};
use crate::placer::{by_name, parse_placer_spec, Observer, PlaceOptions, Silent};
use crate::plan::{Schedule, SolveStatus};
use crate::sim::Simulator;

/// A parameter a comparison can sweep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Axis {
    Devices,
    RateScale,
    CvScale,
    SloScale,
    Models,
}

/// Axis names as written on the command line, in the order they are listed in messages.
pub const AXES: &str = "devices, rate_scale, cv_scale, slo_scale, models";

impl Axis {
    pub fn name(self) -> &'static str {
        match self {
            Axis::Devices => "devices",
            Axis::RateScale => "rate_scale",
            Axis::CvScale => "cv_scale",
            Axis::SloScale => "slo_scale",
            Axis::Models => "models",
        }
    }

    /// Axis label for plots, with the unit or reference the value is measured against.
    pub fn label(self) -> &'static str {
        match self {
            Axis::Devices => "devices",
            Axis::RateScale => "rate scale (× the instance's rate)",
            Axis::CvScale => "CV scale (× the instance's CV)",
            Axis::SloScale => "SLO scale (× single-device latency)",
            Axis::Models => "model sets",
        }
    }

    /// True when a larger value makes serving easier (more devices, looser SLOs). Decides which
    /// point is "where a placer reaches 99 %": the smallest such value on these axes, the largest
    /// value before attainment first drops below on the others (the highest load it sustains).
    pub fn more_is_easier(self) -> bool {
        matches!(self, Axis::Devices | Axis::SloScale)
    }

    /// Whether values must be whole numbers.
    fn integral(self) -> bool {
        matches!(self, Axis::Devices | Axis::Models)
    }
}

impl FromStr for Axis {
    type Err = SolverError;
    fn from_str(s: &str) -> Result<Axis> {
        Ok(match s {
            "devices" => Axis::Devices,
            "rate_scale" => Axis::RateScale,
            "cv_scale" => Axis::CvScale,
            "slo_scale" => Axis::SloScale,
            "models" => Axis::Models,
            other => {
                return Err(SolverError::Option(format!(
                    "--sweep: unknown axis \"{other}\"; expected one of {AXES}"
                )))
            }
        })
    }
}

/// One `--sweep AXIS=V1,V2,...`: an axis and its values in the order given.
#[derive(Debug, Clone, PartialEq)]
pub struct Sweep {
    pub axis: Axis,
    pub values: Vec<f64>,
}

impl FromStr for Sweep {
    type Err = SolverError;
    fn from_str(s: &str) -> Result<Sweep> {
        let bad = |msg: String| SolverError::Option(format!("--sweep \"{s}\": {msg}"));
        let (axis, list) = s
            .split_once('=')
            .ok_or_else(|| bad(format!("expected AXIS=V1,V2,... with AXIS one of {AXES}")))?;
        let axis: Axis = axis.trim().parse()?;
        let mut values = Vec::new();
        for item in list.split(',') {
            let item = item.trim();
            let v: f64 = item
                .parse()
                .ok()
                .filter(|v: &f64| v.is_finite() && *v > 0.0)
                .ok_or_else(|| {
                    bad(format!(
                        "expected positive numbers for {}, found \"{item}\"",
                        axis.name()
                    ))
                })?;
            if axis.integral() && (v.fract() != 0.0 || v > f64::from(u32::MAX)) {
                return Err(bad(format!(
                    "{} takes whole numbers, found \"{item}\"",
                    axis.name()
                )));
            }
            values.push(v);
        }
        Ok(Sweep { axis, values })
    }
}

/// The parameters of one experiment point, as reported in every row.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub devices: u32,
    pub models: usize,
    /// Factor on the instance's rates (1 at the fixed point).
    pub rate_scale: f64,
    /// Factor on the instance's CVs (1 at the fixed point).
    pub cv_scale: f64,
    /// SLO / single-device latency, when every model has the same ratio.
    pub slo_scale: Option<f64>,
}

/// What one placer achieved at one point.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    pub status: SolveStatus,
    pub segments: usize,
    /// Groups, replicas and group shapes of the plan's first segment.
    pub groups: usize,
    pub replicas: usize,
    /// `count*PPxTP` terms joined by `+`, largest groups first, e.g. `4*2x1+8*1x1`.
    pub shapes: String,
    /// Warm-up trimmed simulation of the plan (as `solve` predicts it).
    pub slo_attainment: f64,
    pub requests: u64,
    pub good: u64,
    pub evaluations: u64,
    pub solve_time_s: f64,
}

/// One TSV row: a point, a placer and its outcome, or why it has none.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub instance: String,
    /// `None` for the fixed point run without any sweep.
    pub axis: Option<Axis>,
    pub value: f64,
    pub point: Point,
    /// The placer as given, options included.
    pub placer: String,
    /// `Err` holds the placer's error (e.g. infeasible at this point) with its status word.
    pub outcome: std::result::Result<Outcome, (String, String)>,
}

/// An instance file, kept both as written (to re-derive model subsets and device counts) and
/// validated (the fixed point).
#[derive(Debug, Clone)]
pub struct Experiment {
    pub path: PathBuf,
    pub file: InstanceFile,
    pub base: Instance,
}

impl Experiment {
    pub fn load(path: &Path) -> Result<Experiment> {
        let text = read_file(path)?;
        let file: InstanceFile = parse_document(path, &text, crate::instance::INSTANCE_SCHEMA)?;
        let base = Instance::from_file(path, file.clone())?;
        Ok(Experiment {
            path: path.to_path_buf(),
            file,
            base,
        })
    }

    /// Models per model set: the number of distinct profiles the models use.
    pub fn set_size(&self) -> usize {
        let mut used: Vec<usize> = self.base.models.iter().map(|m| m.profile).collect();
        used.sort_unstable();
        used.dedup();
        used.len().max(1)
    }

    /// The parameters of the instance as written.
    pub fn fixed_point(&self) -> Point {
        point_of(&self.base, 1.0, 1.0)
    }

    /// The instance with `axis` set to `value` and everything else at the fixed point.
    pub fn apply(&self, axis: Axis, value: f64) -> Result<(Instance, Point)> {
        let whole = |what: &str| -> Result<u32> {
            if value.fract() == 0.0 && value >= 1.0 && value <= f64::from(u32::MAX) {
                Ok(value as u32)
            } else {
                Err(SolverError::Option(format!(
                    "{what}: expected a positive whole number, found {value}"
                )))
            }
        };
        match axis {
            Axis::Devices => {
                let mut file = self.file.clone();
                file.cluster.devices = whole("devices")?;
                let inst = Instance::from_file(&self.path, file)?;
                let p = point_of(&inst, 1.0, 1.0);
                Ok((inst, p))
            }
            Axis::Models => {
                let sets = whole("models")? as usize;
                let size = self.set_size();
                let have = self.base.models.len() / size;
                if sets > have {
                    return Err(SolverError::Option(format!(
                        "models={sets}: the instance has {} models, {have} sets of {size}",
                        self.base.models.len()
                    )));
                }
                let inst = Instance::from_file(&self.path, self.subset_file(sets * size))?;
                let p = point_of(&inst, 1.0, 1.0);
                Ok((inst, p))
            }
            Axis::RateScale | Axis::CvScale => {
                let (r, c) = if axis == Axis::RateScale {
                    (value, 1.0)
                } else {
                    (1.0, value)
                };
                let mut inst = self.base.clone();
                inst.workload = inst.workload.try_scaled(r, c)?;
                let p = point_of(&inst, r, c);
                Ok((inst, p))
            }
            Axis::SloScale => {
                let mut inst = self.base.clone();
                for m in 0..inst.models.len() {
                    let base = single_device_latency_s(inst.profile_of(m)).ok_or_else(|| {
                        SolverError::Option(format!(
                            "slo_scale: model \"{}\" has no single-device batch-1 latency to scale",
                            inst.models[m].name
                        ))
                    })?;
                    inst.models[m].slo_s = value * base;
                }
                let p = point_of(&inst, 1.0, 1.0);
                Ok((inst, p))
            }
        }
    }

    /// The instance file with only the first `n` models, and their part of the workload.
    fn subset_file(&self, n: usize) -> InstanceFile {
        let mut file = self.file.clone();
        file.models.truncate(n);
        let kept: Vec<&str> = file.models.iter().map(|m| m.name.as_str()).collect();
        let keep = |v: &serde_json::Value| {
            v.get("model")
                .and_then(|m| m.as_str())
                .is_none_or(|m| kept.contains(&m))
        };
        let mut workload = file.workload.clone();
        // Explicit per-model entries of dropped models would be "unknown model" errors.
        for key in ["streams", "requests"] {
            if let Some(list) = workload.get_mut(key).and_then(|l| l.as_array_mut()) {
                list.retain(keep);
            }
        }
        file.workload = workload;
        file
    }

    /// Runs every placer at every point of every sweep (the fixed point alone when `sweeps` is
    /// empty). Fails before any solve on a bad placer name or axis value; a placer failing at one
    /// point (infeasible, unsupported device count) gives a row with its error instead.
    pub fn run(
        &self,
        placers: &[String],
        sweeps: &[Sweep],
        seed: u64,
        time_limit_s: Option<f64>,
        observer: &dyn Observer,
    ) -> Result<Vec<Row>> {
        if placers.is_empty() {
            return Err(SolverError::Option(
                "--placers: name at least one placer".into(),
            ));
        }
        let mut specs = Vec::with_capacity(placers.len());
        for spec in placers {
            let (name, params) = parse_placer_spec(spec)?;
            let placer = by_name(&name)?;
            specs.push((spec.clone(), placer, params));
        }
        for (i, s) in sweeps.iter().enumerate() {
            if sweeps[..i].iter().any(|o| o.axis == s.axis) {
                return Err(SolverError::Option(format!(
                    "--sweep: axis {} is given twice; list all its values in one --sweep",
                    s.axis.name()
                )));
            }
        }
        // Build every point first, so that a bad value fails fast rather than after hours.
        let mut points: Vec<(Option<Axis>, f64, Instance, Point)> = Vec::new();
        if sweeps.is_empty() {
            points.push((None, f64::NAN, self.base.clone(), self.fixed_point()));
        }
        for s in sweeps {
            for &v in &s.values {
                let (inst, p) = self.apply(s.axis, v)?;
                points.push((Some(s.axis), v, inst, p));
            }
        }
        let total = (points.len() * specs.len()) as u64;
        let done = AtomicU64::new(0);
        observer.progress(0, total);
        let per_point: Vec<Result<Vec<Row>>> = points
            .par_iter()
            .map(|(axis, value, inst, point)| {
                let trace = inst.workload.generate(inst.base_dir())?;
                let rows = specs
                    .par_iter()
                    .map(|(spec, placer, params)| {
                        let opts = PlaceOptions {
                            time_limit_s,
                            seed,
                            params: params.clone(),
                        };
                        let outcome = placer
                            .place(inst, &trace, &opts, &Silent)
                            .map(|solved| {
                                let mut sim = Simulator::new(inst, &trace);
                                if let Some(d) = solved.dispatch {
                                    sim.config.dispatch = d;
                                }
                                let (report, _) = sim.report(&solved.schedule);
                                let (groups, replicas, shapes) = summary(&solved.schedule);
                                Outcome {
                                    status: solved.status,
                                    segments: solved.schedule.segments.len(),
                                    groups,
                                    replicas,
                                    shapes,
                                    slo_attainment: report.slo_attainment,
                                    requests: report.requests,
                                    good: report.good,
                                    evaluations: solved.evaluations,
                                    solve_time_s: solved.time_s,
                                }
                            })
                            .map_err(|e| {
                                let word = match e {
                                    SolverError::Infeasible(_) => "infeasible",
                                    _ => "error",
                                };
                                (word.to_string(), e.to_string())
                            });
                        let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                        observer.progress(n, total);
                        tracing::info!(
                            "{} {}={} {spec}: done",
                            inst.name,
                            axis.map_or("fixed", Axis::name),
                            value
                        );
                        Row {
                            instance: self.base.name.clone(),
                            axis: *axis,
                            value: *value,
                            point: point.clone(),
                            placer: spec.clone(),
                            outcome,
                        }
                    })
                    .collect();
                Ok(rows)
            })
            .collect();
        let mut rows = Vec::with_capacity(total as usize);
        for r in per_point {
            rows.extend(r?);
        }
        Ok(rows)
    }
}

fn point_of(inst: &Instance, rate_scale: f64, cv_scale: f64) -> Point {
    Point {
        devices: inst.cluster.devices,
        models: inst.models.len(),
        rate_scale,
        cv_scale,
        slo_scale: common_slo_scale(inst),
    }
}

/// The SLO scale shared by every model, if they share one (to 1e-9 relative).
fn common_slo_scale(inst: &Instance) -> Option<f64> {
    let mut scale: Option<f64> = None;
    for m in 0..inst.models.len() {
        let s = inst.models[m].slo_s / single_device_latency_s(inst.profile_of(m))?;
        match scale {
            None => scale = Some(s),
            Some(prev) if (prev - s).abs() <= 1e-9 * prev.abs() => {}
            Some(_) => return None,
        }
    }
    // Round away float noise from scale × latency / latency so the TSV shows 5, not 5.000000000001.
    scale.map(|s| (s * 1e9).round() / 1e9)
}

/// Groups, replicas and shapes of the first segment.
fn summary(schedule: &Schedule) -> (usize, usize, String) {
    let Some((_, p)) = schedule.segments.first() else {
        return (0, 0, String::new());
    };
    let mut shapes: Vec<(u32, u32, usize)> = Vec::new();
    for g in &p.groups {
        match shapes.iter_mut().find(|s| s.0 == g.pp && s.1 == g.tp) {
            Some(s) => s.2 += 1,
            None => shapes.push((g.pp, g.tp, 1)),
        }
    }
    shapes.sort_by_key(|s| std::cmp::Reverse((s.0 * s.1, s.0)));
    let text = shapes
        .iter()
        .map(|(pp, tp, n)| format!("{n}*{pp}x{tp}"))
        .collect::<Vec<_>>()
        .join("+");
    (p.groups.len(), p.replicas(), text)
}

/// Column names of [`to_tsv`]; the nondeterministic solve time is last so tests can drop it.
pub const TSV_COLUMNS: [&str; 20] = [
    "instance",
    "axis",
    "value",
    "devices",
    "models",
    "rate_scale",
    "cv_scale",
    "slo_scale",
    "placer",
    "status",
    "segments",
    "groups",
    "replicas",
    "shapes",
    "requests",
    "good",
    "slo_attainment",
    "evaluations",
    "error",
    "solve_time_s",
];

/// The rows as TSV with a header line. Missing values are `-`; numbers are written in Rust's
/// shortest round-trip form except attainment (6 decimals) and solve time (3 decimals).
pub fn to_tsv(rows: &[Row]) -> String {
    let mut s = TSV_COLUMNS.join("\t");
    s.push('\n');
    for r in rows {
        let p = &r.point;
        let slo = p.slo_scale.map_or("-".to_string(), |v| v.to_string());
        let (axis, value) = match r.axis {
            Some(a) => (a.name(), r.value.to_string()),
            None => ("-", "-".to_string()),
        };
        let _ = write!(
            s,
            "{}\t{axis}\t{value}\t{}\t{}\t{}\t{}\t{slo}\t{}\t",
            clean(&r.instance),
            p.devices,
            p.models,
            p.rate_scale,
            p.cv_scale,
            clean(&r.placer)
        );
        match &r.outcome {
            Ok(o) => {
                let status = status_word(o.status);
                let _ = writeln!(
                    s,
                    "{status}\t{}\t{}\t{}\t{}\t{}\t{}\t{:.6}\t{}\t-\t{:.3}",
                    o.segments,
                    o.groups,
                    o.replicas,
                    if o.shapes.is_empty() { "-" } else { &o.shapes },
                    o.requests,
                    o.good,
                    o.slo_attainment,
                    o.evaluations,
                    o.solve_time_s
                );
            }
            Err((word, msg)) => {
                let _ = writeln!(s, "{word}\t-\t-\t-\t-\t-\t-\t-\t-\t{}\t-", clean(msg));
            }
        }
    }
    s
}

/// The status as plan files spell it (`time_limit`, not `TimeLimit`).
pub fn status_word(status: SolveStatus) -> &'static str {
    match status {
        SolveStatus::Optimal => "optimal",
        SolveStatus::GapLimit => "gap_limit",
        SolveStatus::TimeLimit => "time_limit",
        SolveStatus::Heuristic => "heuristic",
    }
}

/// A TSV field: tabs and line breaks become spaces.
fn clean(s: &str) -> String {
    s.replace(['\t', '\n', '\r'], " ")
}

/// Where each placer reaches 99 % on one sweep: for every placer (in order of first appearance),
/// the axis value of its marker, if any. See [`Axis::more_is_easier`].
pub fn threshold_points(rows: &[Row], axis: Axis, target: f64) -> Vec<(String, Option<f64>)> {
    let mut placers: Vec<String> = Vec::new();
    for r in rows.iter().filter(|r| r.axis == Some(axis)) {
        if !placers.contains(&r.placer) {
            placers.push(r.placer.clone());
        }
    }
    placers
        .into_iter()
        .map(|p| {
            let mut pts: Vec<(f64, f64)> = rows
                .iter()
                .filter(|r| r.axis == Some(axis) && r.placer == p)
                .map(|r| {
                    (
                        r.value,
                        r.outcome.as_ref().map_or(0.0, |o| o.slo_attainment),
                    )
                })
                .collect();
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            let hit = if axis.more_is_easier() {
                pts.iter().find(|q| q.1 >= target).map(|q| q.0)
            } else {
                pts.iter().take_while(|q| q.1 >= target).last().map(|q| q.0)
            };
            (p, hit)
        })
        .collect()
}

/// Reads rows back from [`to_tsv`] output (to redraw plots without solving again). Fields the TSV
/// does not carry exactly (float formatting) come back as written.
pub fn from_tsv(text: &str) -> Result<Vec<Row>> {
    let bad = |line: usize, msg: String| SolverError::Option(format!("TSV line {line}: {msg}"));
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default();
    if header != TSV_COLUMNS.join("\t") {
        return Err(bad(
            1,
            "expected the header written by `plexserve compare`".into(),
        ));
    }
    let mut rows = Vec::new();
    for (i, line) in lines.enumerate().filter(|(_, l)| !l.is_empty()) {
        let n = i + 2;
        let f: Vec<&str> = line.split('\t').collect();
        if f.len() != TSV_COLUMNS.len() {
            return Err(bad(
                n,
                format!("expected {} fields, found {}", TSV_COLUMNS.len(), f.len()),
            ));
        }
        let num = |k: usize| -> Result<f64> {
            f[k].parse::<f64>().map_err(|_| {
                bad(
                    n,
                    format!("{}: expected a number, found \"{}\"", TSV_COLUMNS[k], f[k]),
                )
            })
        };
        let int = |k: usize| -> Result<u64> {
            f[k].parse::<u64>().map_err(|_| {
                bad(
                    n,
                    format!("{}: expected a count, found \"{}\"", TSV_COLUMNS[k], f[k]),
                )
            })
        };
        let axis = match f[1] {
            "-" => None,
            a => Some(a.parse::<Axis>()?),
        };
        let status = match f[9] {
            "optimal" => Some(SolveStatus::Optimal),
            "gap_limit" => Some(SolveStatus::GapLimit),
            "time_limit" => Some(SolveStatus::TimeLimit),
            "heuristic" => Some(SolveStatus::Heuristic),
            _ => None,
        };
        let outcome = match status {
            Some(status) => Ok(Outcome {
                status,
                segments: int(10)? as usize,
                groups: int(11)? as usize,
                replicas: int(12)? as usize,
                shapes: if f[13] == "-" {
                    String::new()
                } else {
                    f[13].to_string()
                },
                requests: int(14)?,
                good: int(15)?,
                slo_attainment: num(16)?,
                evaluations: int(17)?,
                solve_time_s: num(19)?,
            }),
            None => Err((f[9].to_string(), f[18].to_string())),
        };
        rows.push(Row {
            instance: f[0].to_string(),
            axis,
            value: if axis.is_some() { num(2)? } else { f64::NAN },
            point: Point {
                devices: int(3)? as u32,
                models: int(4)? as usize,
                rate_scale: num(5)?,
                cv_scale: num(6)?,
                slo_scale: if f[7] == "-" { None } else { Some(num(7)?) },
            },
            placer: f[8].to_string(),
            outcome,
        });
    }
    Ok(rows)
}
