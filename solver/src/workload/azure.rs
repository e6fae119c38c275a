//! Replay of the public Azure Functions traces as piecewise Gamma processes
//! (alpaserve-semantics.md §3.3–3.4).
//!
//! Two steps. [`AzureWorkload::table`] reads the trace slice and produces a [`ReplayTable`]: for
//! every model, the windows of the slice with their invocation count and the *unscaled* Gamma
//! process (rate, cv) that will replay them. [`AzureWorkload::generate`] then scales every process
//! by `rate_scale` / `cv_scale` and draws arrivals, one ChaCha8 stream per (model, window with a
//! process), seeds counting up from `seed` across models in model order and windows in time order.
//! The table does not depend on `rate_scale`, `cv_scale` or `seed`, so it is computed once and
//! shared by every [`AzureWorkload::scaled`] copy (a `compare --sweep` reads the trace once).
//!
//! Times in the generated [`Trace`] are relative to the slice start.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::Deserialize;

use super::csv::LineReader;
use super::fit::fit_gamma_mle;
use super::gamma::gamma_arrivals;
use super::{check_cv, check_requests, parse_at, Trace};
use crate::error::{Result, SolverError};

const DAY_S: u64 = 86_400;
const MINUTES_PER_DAY: usize = 1440;
/// Columns of a 2019 day file before the 1440 per-minute counts.
const HEADER_2019: [&str; 4] = ["HashOwner", "HashApp", "HashFunction", "Trigger"];
const HEADER_2021: [&str; 4] = ["app", "func", "end_timestamp", "duration"];
/// AlpaServe adds this to every inter-arrival gap before fitting, so that simultaneous arrivals
/// do not produce zero gaps (whose log is −∞).
const GAP_EPSILON_S: f64 = 1e-6;
/// A fitted rate above this multiple of the window's empirical rate is considered biased and
/// replaced by the empirical rate (AlpaServe's guard).
const BIASED_FIT_FACTOR: f64 = 5.0;

/// Which public trace a replay reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AzureFormat {
    /// `invocations_per_function_md.anon.dNN.csv`: per-minute counts per function, one file per day.
    Functions2019,
    /// `AzureFunctionsInvocationTraceForTwoWeeksJan2021.txt`: one row per invocation.
    Functions2021,
}

impl AzureFormat {
    pub fn kind(self) -> &'static str {
        match self {
            AzureFormat::Functions2019 => "azure_functions_2019",
            AzureFormat::Functions2021 => "azure_functions_2021",
        }
    }
}

/// How the functions that are active in the slice are assigned to models.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FunctionMapping {
    /// Function `j` → model `j mod n` (AlpaServe's default).
    #[default]
    Stripe,
    /// Function `j` → model `⌊n·j / #functions⌋` (contiguous blocks).
    RoundRobin,
}

/// A validated `azure_functions_2019` / `azure_functions_2021` workload.
#[derive(Debug, Clone, PartialEq)]
pub struct AzureWorkload {
    pub format: AzureFormat,
    /// Trace files as written in the instance (relative to its directory unless absolute); for
    /// 2019, `files[d]` is day `d`; for 2021, exactly one file.
    pub files: Vec<PathBuf>,
    /// Slice bounds as written ("d.h.m") and in seconds from the trace start.
    pub start: String,
    pub end: String,
    pub start_s: u64,
    pub end_s: u64,
    /// Window length; every window gets its own Gamma process.
    pub interval_s: f64,
    pub rate_scale: f64,
    pub cv_scale: f64,
    pub seed: u64,
    /// Reproduce AlpaServe's quirks: 2021 rows keyed by `func` alone, and a last partial window
    /// treated as if it were a full one (rate = count / interval_s, arrivals drawn over a full
    /// interval, i.e. possibly past the slice end).
    pub faithful: bool,
    pub mapping: FunctionMapping,
    /// Number of models of the instance.
    pub n_models: usize,
    /// The instance file (error messages) and the directory relative paths are resolved against.
    pub instance_file: PathBuf,
    cache: TableCache,
}

/// One replay window of one model.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    /// Start, relative to the slice start.
    pub start_s: f64,
    /// Length of the window inside the slice (shorter than `interval_s` only for the last one).
    pub length_s: f64,
    /// Length over which arrivals are drawn: `length_s`, or `interval_s` in faithful mode.
    pub generate_s: f64,
    /// Invocations of the model's functions in the window, from the trace.
    pub invocations: u64,
    /// The unscaled process (rate in requests/s, cv); `None` when the window gets no arrivals.
    pub process: Option<(f64, f64)>,
}

/// What a trace slice turns into, before scaling and sampling.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplayTable {
    /// Functions with at least one invocation in the slice, in first-appearance order (their
    /// keys: `HashFunction`, or `app,func` / `func` for 2021).
    pub functions: Vec<String>,
    /// Model of each entry of `functions`.
    pub function_model: Vec<u32>,
    /// `windows[m]`: the windows of model `m` in time order (all of them, with or without process).
    pub windows: Vec<Vec<Window>>,
    /// Slice length in seconds.
    pub duration_s: f64,
}

impl ReplayTable {
    /// Trace invocations of every model in the slice.
    pub fn invocations(&self) -> Vec<u64> {
        self.windows
            .iter()
            .map(|ws| ws.iter().map(|w| w.invocations).sum())
            .collect()
    }
}

/// The table last read, with the key it was read under.
type CacheSlot = Option<(TableKey, Arc<ReplayTable>)>;

#[derive(Clone, Default)]
struct TableCache(Arc<Mutex<CacheSlot>>);

impl std::fmt::Debug for TableCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TableCache")
    }
}

/// The cache is an optimisation, not part of a workload's value.
impl PartialEq for TableCache {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// Everything the table depends on; a cached table is reused only under an identical key.
#[derive(Debug, Clone, PartialEq)]
struct TableKey {
    format: AzureFormat,
    paths: Vec<PathBuf>,
    start_s: u64,
    end_s: u64,
    interval_bits: u64,
    faithful: bool,
    mapping: FunctionMapping,
    n_models: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AzureFile {
    #[allow(dead_code)]
    kind: String,
    #[serde(default)]
    files: Option<Vec<String>>,
    #[serde(default)]
    file: Option<String>,
    start: String,
    end: String,
    #[serde(default)]
    interval_s: Option<f64>,
    #[serde(default = "one")]
    rate_scale: f64,
    #[serde(default = "one")]
    cv_scale: f64,
    #[serde(default)]
    seed: u64,
    #[serde(default)]
    faithful: bool,
    #[serde(default)]
    mapping: FunctionMapping,
}

fn one() -> f64 {
    1.0
}

/// Parses a time of the form `"d.h.m"` into seconds from the trace start: day `d`, hour
/// `h < 24`, minute `m ≤ 60` (so `"13.23.60"` is the end of day 13, as in AlpaServe).
pub fn parse_slice_time(text: &str) -> std::result::Result<u64, String> {
    let parts: Vec<&str> = text.trim().split('.').collect();
    let expected = "expected \"day.hour.minute\" with hour < 24 and minute ≤ 60, e.g. \"13.23.60\"";
    if parts.len() != 3 {
        return Err(format!("{expected}, found \"{text}\""));
    }
    let mut v = [0u64; 3];
    for (slot, p) in v.iter_mut().zip(&parts) {
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) || p.len() > 9 {
            return Err(format!("{expected}, found \"{text}\""));
        }
        *slot = p
            .parse()
            .map_err(|_| format!("{expected}, found \"{text}\""))?;
    }
    let [d, h, m] = v;
    if h >= 24 || m > 60 {
        return Err(format!("{expected}, found \"{text}\""));
    }
    Ok(d * DAY_S + h * 3600 + m * 60)
}

impl AzureWorkload {
    pub(crate) fn parse(
        format: AzureFormat,
        file: &Path,
        value: &serde_json::Value,
        models: &[&str],
    ) -> Result<AzureWorkload> {
        let f: AzureFile = parse_at(file, "workload", value)?;
        let bad = |p: &str, m: String| SolverError::invalid(file, format!("workload.{p}"), m);
        let files: Vec<PathBuf> = match format {
            AzureFormat::Functions2019 => {
                if f.file.is_some() {
                    return Err(bad(
                        "file",
                        "azure_functions_2019 takes `files`: the day files in day order".into(),
                    ));
                }
                let list = f.files.ok_or_else(|| {
                    bad(
                        "files",
                        "expected a list of day files, e.g. [\"invocations_per_function_md.anon.d01.csv\"]"
                            .into(),
                    )
                })?;
                if list.is_empty() {
                    return Err(bad("files", "expected at least one day file".into()));
                }
                list.into_iter().map(PathBuf::from).collect()
            }
            AzureFormat::Functions2021 => {
                if f.files.is_some() {
                    return Err(bad(
                        "files",
                        "azure_functions_2021 takes one `file` (the invocation CSV)".into(),
                    ));
                }
                let one = f.file.ok_or_else(|| {
                    bad(
                        "file",
                        "expected the path of the invocation trace, e.g. \"AzureFunctionsInvocationTraceForTwoWeeksJan2021.txt\""
                            .into(),
                    )
                })?;
                vec![PathBuf::from(one)]
            }
        };
        for (i, p) in files.iter().enumerate() {
            if p.as_os_str().is_empty() {
                let at = match format {
                    AzureFormat::Functions2019 => format!("files[{i}]"),
                    AzureFormat::Functions2021 => "file".to_string(),
                };
                return Err(bad(&at, "expected a non-empty path".into()));
            }
        }
        let start_s = parse_slice_time(&f.start).map_err(|m| bad("start", m))?;
        let end_s = parse_slice_time(&f.end).map_err(|m| bad("end", m))?;
        if end_s <= start_s {
            return Err(bad(
                "end",
                format!(
                    "expected a slice end after the start \"{}\", found \"{}\"",
                    f.start, f.end
                ),
            ));
        }
        if format == AzureFormat::Functions2019 {
            let covered = files.len() as u64 * DAY_S;
            if end_s > covered {
                return Err(bad(
                    "end",
                    format!(
                        "the slice ends on day {} but `files` lists {} day file(s) (days 0..{})",
                        (end_s - 1) / DAY_S,
                        files.len(),
                        files.len() - 1
                    ),
                ));
            }
        }
        let interval_s = f.interval_s.unwrap_or(match format {
            AzureFormat::Functions2019 => 60.0,
            AzureFormat::Functions2021 => 5400.0,
        });
        if !(interval_s.is_finite() && interval_s > 0.0) {
            return Err(bad(
                "interval_s",
                format!("expected a positive window length in seconds, found {interval_s}"),
            ));
        }
        if format == AzureFormat::Functions2019 {
            let minutes = interval_s / 60.0;
            if minutes < 1.0 || (minutes - minutes.round()).abs() > 1e-9 {
                return Err(bad(
                    "interval_s",
                    format!(
                        "the 2019 trace counts invocations per minute: expected a multiple of 60, found {interval_s}"
                    ),
                ));
            }
        }
        let windows = ((end_s - start_s) as f64 / interval_s).ceil();
        if windows > 1e7 {
            return Err(bad(
                "interval_s",
                format!("{interval_s} s gives {windows} windows; expected at most 10⁷"),
            ));
        }
        if !(f.rate_scale.is_finite() && f.rate_scale >= 0.0) {
            return Err(bad(
                "rate_scale",
                format!(
                    "expected a non-negative finite factor, found {}",
                    f.rate_scale
                ),
            ));
        }
        if !(f.cv_scale.is_finite() && f.cv_scale > 0.0) {
            return Err(bad(
                "cv_scale",
                format!("expected a positive finite factor, found {}", f.cv_scale),
            ));
        }
        Ok(AzureWorkload {
            format,
            files,
            start: f.start,
            end: f.end,
            start_s,
            end_s,
            interval_s,
            rate_scale: f.rate_scale,
            cv_scale: f.cv_scale,
            seed: f.seed,
            faithful: f.faithful,
            mapping: f.mapping,
            n_models: models.len(),
            instance_file: file.to_path_buf(),
            cache: TableCache::default(),
        })
    }

    /// JSON path of trace file `i` in the instance.
    fn file_json_path(&self, i: usize) -> String {
        match self.format {
            AzureFormat::Functions2019 => format!("workload.files[{i}]"),
            AzureFormat::Functions2021 => "workload.file".to_string(),
        }
    }

    /// The trace files resolved against `base_dir`.
    pub fn resolved_files(&self, base_dir: &Path) -> Vec<PathBuf> {
        self.files.iter().map(|p| base_dir.join(p)).collect()
    }

    /// The same replay with rates multiplied by `rate_scale` and cvs by `cv_scale` (on top of the
    /// factors already set); shares the cached table.
    pub fn scaled(&self, rate_scale: f64, cv_scale: f64) -> AzureWorkload {
        let mut w = self.clone();
        w.rate_scale *= rate_scale;
        w.cv_scale *= cv_scale;
        w
    }

    /// Reads the slice (once per distinct key; later calls reuse the table).
    pub fn table(&self, base_dir: &Path) -> Result<Arc<ReplayTable>> {
        let key = TableKey {
            format: self.format,
            paths: self.resolved_files(base_dir),
            start_s: self.start_s,
            end_s: self.end_s,
            interval_bits: self.interval_s.to_bits(),
            faithful: self.faithful,
            mapping: self.mapping,
            n_models: self.n_models,
        };
        // A poisoned lock only means another thread panicked mid-read; the slot is still either
        // empty or a complete table, so recover it instead of propagating the panic.
        let mut slot = self.cache.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((k, t)) = slot.as_ref() {
            if *k == key {
                return Ok(Arc::clone(t));
            }
        }
        let table = Arc::new(match self.format {
            AzureFormat::Functions2019 => self.read_2019(&key.paths)?,
            AzureFormat::Functions2021 => self.read_2021(&key.paths[0])?,
        });
        *slot = Some((key, Arc::clone(&table)));
        Ok(table)
    }

    /// Expected number of requests after scaling.
    pub fn expected_requests(&self, table: &ReplayTable) -> f64 {
        table
            .windows
            .iter()
            .flatten()
            .filter_map(|w| {
                w.process
                    .map(|(rate, _)| rate * self.rate_scale * w.generate_s)
            })
            .sum()
    }

    /// Draws the arrivals.
    pub fn generate(&self, base_dir: &Path) -> Result<Trace> {
        let table = self.table(base_dir)?;
        check_requests(self.expected_requests(&table)).map_err(|e| {
            SolverError::invalid(
                &self.instance_file,
                "workload.rate_scale",
                format!("rate_scale {} gives {e}", self.rate_scale),
            )
        })?;
        let fitted = (table.windows.iter().flatten())
            .filter_map(|w| w.process.map(|(_, cv)| cv))
            .fold(0.0, f64::max);
        if fitted > 0.0 {
            check_cv(fitted * self.cv_scale).map_err(|e| {
                SolverError::invalid(
                    &self.instance_file,
                    "workload.cv_scale",
                    format!(
                        "cv_scale {} on the largest fitted cv {fitted}: {e}",
                        self.cv_scale
                    ),
                )
            })?;
        }
        let mut seed = self.seed;
        let mut per_model = Vec::with_capacity(table.windows.len());
        for windows in &table.windows {
            let mut arrivals = Vec::new();
            for w in windows {
                let Some((rate, cv)) = w.process else {
                    continue;
                };
                arrivals.extend(gamma_arrivals(
                    rate * self.rate_scale,
                    cv * self.cv_scale,
                    w.start_s,
                    w.generate_s,
                    seed,
                ));
                // One seed per window with a process, counted across models (AlpaServe's scheme),
                // so a model's arrivals depend on which windows of earlier models are active.
                seed = seed.wrapping_add(1);
            }
            per_model.push(arrivals);
        }
        Ok(Trace::merge(per_model))
    }

    /// Expected request rate of every model over the slice (requests/s, after `rate_scale`).
    pub fn declared_rates(&self, table: &ReplayTable) -> Vec<f64> {
        table
            .windows
            .iter()
            .map(|ws| {
                ws.iter()
                    .filter_map(|w| w.process.map(|(rate, _)| rate * w.generate_s))
                    .sum::<f64>()
                    * self.rate_scale
                    / table.duration_s
            })
            .collect()
    }

    /// Window `w` of the slice: (start relative to the slice, length inside the slice).
    fn window_bounds(&self, w: usize) -> (f64, f64) {
        let len = (self.end_s - self.start_s) as f64;
        let start = w as f64 * self.interval_s;
        (start, (len - start).min(self.interval_s))
    }

    fn n_windows(&self) -> usize {
        (((self.end_s - self.start_s) as f64 / self.interval_s).ceil() as usize).max(1)
    }

    /// Assigns active functions (first-appearance order) to models.
    fn map_functions(&self, n_active: usize, what: &str) -> Result<Vec<u32>> {
        let n = self.n_models;
        if n_active < n {
            return Err(SolverError::invalid(
                &self.instance_file,
                "workload",
                format!(
                    "{what} has {n_active} function(s) with invocations in the slice {}–{}, fewer than the {n} models; \
                     widen the slice or use fewer models",
                    self.start, self.end
                ),
            ));
        }
        Ok((0..n_active)
            .map(|j| match self.mapping {
                FunctionMapping::Stripe => (j % n) as u32,
                FunctionMapping::RoundRobin => (n * j / n_active) as u32,
            })
            .collect())
    }

    fn read_2019(&self, paths: &[PathBuf]) -> Result<ReplayTable> {
        let start_min = (self.start_s / 60) as usize;
        let end_min = (self.end_s / 60) as usize;
        let first_day = start_min / MINUTES_PER_DAY;
        let last_day = (end_min - 1) / MINUTES_PER_DAY;
        // Columns [lo, hi) of day `d` that fall in the slice.
        let day_range = |d: usize| {
            let base = d * MINUTES_PER_DAY;
            let lo = start_min.saturating_sub(base).min(MINUTES_PER_DAY);
            let hi = end_min.saturating_sub(base).min(MINUTES_PER_DAY);
            (lo, hi)
        };

        // Pass 1: function ids in first-appearance order (days before the slice count too) and
        // each function's total in the slice. Only the slice's columns are parsed.
        let mut index: HashMap<Box<str>, u32> = HashMap::new();
        let mut keys: Vec<Box<str>> = Vec::new();
        let mut totals: Vec<u64> = Vec::new();
        for (d, path) in paths.iter().enumerate().take(last_day + 1) {
            let (lo, hi) = if d >= first_day { day_range(d) } else { (0, 0) };
            let mut r = self.open_2019(path, d)?;
            while r.next_line()? {
                check_2019_row(&r)?;
                let key = r.text(2, "HashFunction")?;
                let id = match index.get(key) {
                    Some(&id) => id,
                    None => {
                        let id = keys.len() as u32;
                        index.insert(key.into(), id);
                        keys.push(key.into());
                        totals.push(0);
                        id
                    }
                };
                let mut s = 0u64;
                for c in lo..hi {
                    s = s.saturating_add(r.count(4 + c, "minute count")?);
                }
                totals[id as usize] = totals[id as usize].saturating_add(s);
            }
        }
        let active: Vec<usize> = (0..keys.len()).filter(|&i| totals[i] > 0).collect();
        let what = format!("the 2019 trace ({} day file(s))", last_day + 1);
        let function_model = self.map_functions(active.len(), &what)?;
        let mut model_of: Vec<Option<u32>> = vec![None; keys.len()];
        for (j, &i) in active.iter().enumerate() {
            model_of[i] = Some(function_model[j]);
        }

        // Pass 2: per-model counts per window. Re-reading keeps memory at O(functions + models ×
        // windows) whatever the slice length, instead of O(functions × minutes).
        let n_w = self.n_windows();
        let minutes_per_window = (self.interval_s / 60.0).round() as usize;
        let mut counts = vec![vec![0u64; n_w]; self.n_models];
        for (d, path) in paths.iter().enumerate().take(last_day + 1).skip(first_day) {
            let (lo, hi) = day_range(d);
            let mut r = self.open_2019(path, d)?;
            while r.next_line()? {
                let key = r.text(2, "HashFunction")?;
                let Some(m) = index.get(key).and_then(|&id| model_of[id as usize]) else {
                    continue;
                };
                let row = &mut counts[m as usize];
                for c in lo..hi {
                    let w = (d * MINUTES_PER_DAY + c - start_min) / minutes_per_window;
                    row[w] = row[w].saturating_add(r.count(4 + c, "minute count")?);
                }
            }
        }

        let windows = counts
            .iter()
            .map(|row| {
                row.iter()
                    .enumerate()
                    .map(|(w, &c)| {
                        let (start_s, length_s) = self.window_bounds(w);
                        // The fix of AlpaServe's last-window quirk: a partial window's count is
                        // spread over its own length, not over a full interval.
                        let (rate_len, gen_len) = if self.faithful {
                            (self.interval_s, self.interval_s)
                        } else {
                            (length_s, length_s)
                        };
                        Window {
                            start_s,
                            length_s,
                            generate_s: gen_len,
                            invocations: c,
                            // MAF1 does not measure the cv: the process is Gamma(c / I, 1) and
                            // `cv_scale` *is* the cv.
                            process: (c > 0).then(|| (c as f64 / rate_len, 1.0)),
                        }
                    })
                    .collect()
            })
            .collect();
        Ok(ReplayTable {
            functions: active.iter().map(|&i| keys[i].to_string()).collect(),
            function_model,
            windows,
            duration_s: (self.end_s - self.start_s) as f64,
        })
    }

    fn open_2019(&self, path: &Path, day: usize) -> Result<LineReader> {
        let mut r = LineReader::open(path, &self.instance_file, &self.file_json_path(day))?;
        if !r.next_line()? {
            return Err(r.error("the file is empty; expected the header HashOwner,HashApp,HashFunction,Trigger,1,…,1440"));
        }
        let ok = r.n_fields() == 4 + MINUTES_PER_DAY
            && HEADER_2019
                .iter()
                .enumerate()
                .all(|(i, h)| r.field(i) == h.as_bytes())
            && (0..MINUTES_PER_DAY).all(|c| r.field(4 + c) == (c + 1).to_string().as_bytes());
        if !ok {
            return Err(r.error(format!(
                "expected the header HashOwner,HashApp,HashFunction,Trigger,1,2,…,1440 of an Azure Functions 2019 day file \
                 (invocations_per_function_md.anon.dNN.csv), found {} field(s) starting \"{}\"",
                r.n_fields(),
                String::from_utf8_lossy(&r.field(0)[..r.field(0).len().min(40)])
            )));
        }
        Ok(r)
    }

    fn read_2021(&self, path: &Path) -> Result<ReplayTable> {
        let mut r = LineReader::open(path, &self.instance_file, &self.file_json_path(0))?;
        if !r.next_line()? {
            return Err(
                r.error("the file is empty; expected the header app,func,end_timestamp,duration")
            );
        }
        // Locate the columns by name so that a re-ordered export still reads.
        let mut col = [usize::MAX; 4];
        for i in 0..r.n_fields() {
            let name = String::from_utf8_lossy(r.field(i)).trim().to_string();
            if let Some(k) = HEADER_2021.iter().position(|h| *h == name) {
                col[k] = i;
            }
        }
        if col.contains(&usize::MAX) || r.n_fields() != 4 {
            return Err(r.error(format!(
                "expected the header app,func,end_timestamp,duration of the Azure Functions 2021 invocation trace, found \"{}\"",
                String::from_utf8_lossy(&r.field(0)[..r.field(0).len().min(60)])
            )));
        }
        let (lo, hi) = (self.start_s as f64, self.end_s as f64);
        let mut index: HashMap<Box<str>, u32> = HashMap::new();
        let mut arrivals: Vec<Vec<f64>> = Vec::new();
        let mut key = String::new();
        while r.next_line()? {
            if r.n_fields() != 4 {
                return Err(r.error(format!(
                    "expected 4 fields (app,func,end_timestamp,duration), found {}",
                    r.n_fields()
                )));
            }
            let end = r.number(col[2], "end_timestamp")?;
            let duration = r.number(col[3], "duration")?;
            if duration < 0.0 {
                return Err(r.error(format!(
                    "field {} (duration): expected a non-negative duration, found {duration}",
                    col[3] + 1
                )));
            }
            key.clear();
            // Function ids are unique only within an app; AlpaServe (faithful) ignores the app.
            if !self.faithful {
                key.push_str(r.text(col[0], "app")?);
                key.push(',');
            }
            key.push_str(r.text(col[1], "func")?);
            let id = match index.get(key.as_str()) {
                Some(&id) => id,
                None => {
                    let id = arrivals.len() as u32;
                    index.insert(key.as_str().into(), id);
                    arrivals.push(Vec::new());
                    id
                }
            };
            let t = end - duration;
            if t >= lo && t < hi {
                arrivals[id as usize].push(t - lo);
            }
        }
        let mut keys: Vec<(u32, Box<str>)> = index.into_iter().map(|(k, v)| (v, k)).collect();
        keys.sort_unstable_by_key(|(v, _)| *v);
        let active: Vec<usize> = (0..arrivals.len())
            .filter(|&i| !arrivals[i].is_empty())
            .collect();
        let function_model = self.map_functions(active.len(), "the 2021 trace")?;
        let mut per_model: Vec<Vec<f64>> = vec![Vec::new(); self.n_models];
        for (j, &i) in active.iter().enumerate() {
            per_model[function_model[j] as usize].extend_from_slice(&arrivals[i]);
        }
        let n_w = self.n_windows();
        let windows = per_model
            .iter_mut()
            .map(|times| {
                times.sort_by(f64::total_cmp);
                let mut out = Vec::with_capacity(n_w);
                let mut pos = 0;
                for w in 0..n_w {
                    let (start_s, length_s) = self.window_bounds(w);
                    let stop = start_s + length_s;
                    let begin = pos;
                    while pos < times.len() && (times[pos] < stop || w + 1 == n_w) {
                        pos += 1;
                    }
                    let slice = &times[begin..pos];
                    let gen_len = if self.faithful {
                        self.interval_s
                    } else {
                        length_s
                    };
                    out.push(Window {
                        start_s,
                        length_s,
                        generate_s: gen_len,
                        invocations: slice.len() as u64,
                        process: fit_window(slice, gen_len),
                    });
                }
                out
            })
            .collect();
        Ok(ReplayTable {
            functions: active.iter().map(|&i| keys[i].1.to_string()).collect(),
            function_model,
            windows,
            duration_s: hi - lo,
        })
    }
}

/// The (rate, cv) of one MAF2 window: a Gamma MLE fit of the gaps, with AlpaServe's guards.
/// `reference_s` is the length the empirical rate is measured over.
fn fit_window(arrivals: &[f64], reference_s: f64) -> Option<(f64, f64)> {
    let n = arrivals.len();
    if n <= 2 {
        return None;
    }
    let gaps: Vec<f64> = arrivals
        .windows(2)
        .map(|p| p[1] - p[0] + GAP_EPSILON_S)
        .collect();
    let (shape, scale) = fit_gamma_mle(&gaps)?;
    let mut rate = 1.0 / (shape * scale);
    let cv = (1.0 / shape).sqrt();
    if !(rate.is_finite() && cv.is_finite()) {
        return None;
    }
    let empirical = n as f64 / reference_s;
    if rate > BIASED_FIT_FACTOR * empirical {
        rate = empirical;
    }
    Some((rate, cv))
}

fn check_2019_row(r: &LineReader) -> Result<()> {
    if r.n_fields() != 4 + MINUTES_PER_DAY {
        return Err(r.error(format!(
            "expected {} fields (HashOwner,HashApp,HashFunction,Trigger and 1440 minute counts), found {}",
            4 + MINUTES_PER_DAY,
            r.n_fields()
        )));
    }
    if r.field(2).is_empty() {
        return Err(r.error("field 3 (HashFunction) is empty"));
    }
    Ok(())
}
