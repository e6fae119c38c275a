//! Instance files (`plexserve/instance/v1`, contract.md §2): what is read, and the validated,
//! densely indexed [`Instance`] every other module works on.

use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

use crate::error::{check_schema, parse_document, read_file, Result, SolverError};
use crate::workload::WorkloadSpec;

pub const INSTANCE_SCHEMA: &str = "plexserve/instance/v1";

/// The instance file as written on disk.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceFile {
    pub schema: String,
    pub name: String,
    pub cluster: Cluster,
    pub profiles: IndexMap<String, Profile>,
    pub models: Vec<ModelEntry>,
    /// Parsed per `kind` by [`WorkloadSpec::parse`], so that each kind rejects its own unknown fields.
    pub workload: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub simulator: Option<SimulatorConfig>,
}

/// The devices and their memory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    pub devices: u32,
    /// Per-device budget for weights, in GiB.
    pub memory_budget_gib: f64,
    #[serde(default = "default_devices_per_node")]
    pub devices_per_node: u32,
    /// Inter-stage link bandwidth in GiB/s; the stage DP charges a boundary activation
    /// `activation_gib / link_gib_per_s`. Absent: stage boundaries are free.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_gib_per_s: Option<f64>,
}

fn default_devices_per_node() -> u32 {
    8
}

/// Measured or derived costs of one model type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Batch sizes, ascending; `stage_latency_s[b]` and `layers[*].latency_s[*][b]` follow this order.
    pub batch_sizes: Vec<u32>,
    #[serde(default)]
    pub configs: Vec<ParallelConfig>,
    /// Tensor-parallel degrees of `layers[*].latency_s` and `layers[*].weight_gib`, ascending.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tp_degrees: Vec<u32>,
    /// Layer-level costs; the stage DP derives configurations from them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<LayerCost>,
    /// Where the numbers come from (device, date, software); informational.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<ProfileSource>,
}

/// Latency and weight of every pipeline stage of one (pp, tp) configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParallelConfig {
    pub pp: u32,
    pub tp: u32,
    /// `stage_latency_s[batch_index][stage]`.
    pub stage_latency_s: Vec<Vec<f64>>,
    /// Per-device weight of every stage.
    pub stage_weight_gib: Vec<f64>,
}

/// One layer of a layer-level profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerCost {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// `latency_s[tp_index][batch_index]`, including the layer's tensor-parallel all-reduces.
    pub latency_s: Vec<Vec<f64>>,
    /// Per-device weight at each tp degree, `weight_gib[tp_index]`.
    pub weight_gib: Vec<f64>,
    /// Size of the layer's output activation, `activation_gib[batch_index]` (what a stage boundary sends).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub activation_gib: Vec<f64>,
}

/// Provenance of a profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileSource {
    pub device: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub method: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub measured_at: String,
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub software: IndexMap<String, String>,
}

/// A served model: a name, the profile of its type, and its latency SLO.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelEntry {
    pub name: String,
    pub profile: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slo_s: Option<f64>,
    /// SLO as a multiple of the single-device batch-1 latency of the profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slo_scale: Option<f64>,
}

/// Request dispatch policy of the simulator (and of the executor's controller).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Dispatch {
    /// AlpaServe's fast simulator: the replica whose last stage frees first (lowest index on ties);
    /// reject when that replica misses the deadline.
    #[default]
    EarliestLastStage,
    /// AlpaServe's real controller: fewest outstanding requests, group-side admission, jittered
    /// network and scheduling overheads.
    ShortestQueue,
    /// Ours: the replica that finishes the request earliest; reject only when no replica meets
    /// the deadline.
    SloAware,
}

/// Simulator settings (contract.md §2); the defaults are AlpaServe's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimulatorConfig {
    #[serde(default)]
    pub dispatch: Dispatch,
    /// Fixed per-request overhead added after the last stage.
    #[serde(default = "default_overhead_s")]
    pub overhead_s: f64,
    /// Every stage latency of a pp-stage pipeline is multiplied by `1 + pp_penalty·pp`.
    #[serde(default = "default_pp_penalty")]
    pub pp_penalty: f64,
    /// Requests within this many seconds' worth of the trace are trimmed from reported statistics.
    #[serde(default = "default_warmup_s")]
    pub warmup_s: f64,
    /// Largest batch; 1 disables batching (the batching variant of alpaserve-semantics.md §1.3).
    #[serde(default = "default_max_batch")]
    pub max_batch: u32,
    /// Seed of the jitter of `shortest_queue` dispatch.
    #[serde(default)]
    pub seed: u64,
}

fn default_overhead_s() -> f64 {
    0.011
}
fn default_pp_penalty() -> f64 {
    0.009
}
fn default_warmup_s() -> f64 {
    10.0
}
fn default_max_batch() -> u32 {
    1
}

impl Default for SimulatorConfig {
    fn default() -> Self {
        SimulatorConfig {
            dispatch: Dispatch::default(),
            overhead_s: default_overhead_s(),
            pp_penalty: default_pp_penalty(),
            warmup_s: default_warmup_s(),
            max_batch: default_max_batch(),
            seed: 0,
        }
    }
}

/// A validated instance with dense ids: model `i` is `models[i]`, profile `j` is `profiles[j]`.
#[derive(Debug, Clone)]
pub struct Instance {
    pub name: String,
    /// The file the instance came from (error messages, relative paths).
    pub file: PathBuf,
    pub cluster: Cluster,
    pub profile_names: Vec<String>,
    pub profiles: Vec<Profile>,
    pub models: Vec<Model>,
    pub workload: WorkloadSpec,
    pub simulator: SimulatorConfig,
}

/// A model with its profile resolved to an index and its SLO resolved to seconds.
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    pub name: String,
    pub profile: usize,
    pub slo_s: f64,
}

impl Instance {
    /// Reads and validates an instance file.
    pub fn load(path: &Path) -> Result<Instance> {
        let text = read_file(path)?;
        Instance::from_json(path, &text)
    }

    /// Validates instance JSON text; `path` names the file in errors and anchors relative paths.
    pub fn from_json(path: &Path, text: &str) -> Result<Instance> {
        let file: InstanceFile = parse_document(path, text, INSTANCE_SCHEMA)?;
        Instance::from_file(path, file)
    }

    /// Validates an already parsed instance file.
    pub fn from_file(path: &Path, file: InstanceFile) -> Result<Instance> {
        let bad = |json_path: String, msg: String| SolverError::invalid(path, json_path, msg);
        check_schema(path, INSTANCE_SCHEMA, &file.schema)?;
        validate_cluster(path, &file.cluster)?;
        let mut profile_names = Vec::with_capacity(file.profiles.len());
        let mut profiles = Vec::with_capacity(file.profiles.len());
        for (name, profile) in &file.profiles {
            validate_profile(path, &format!("profiles.{name}"), profile)?;
            // --- stage DP hook (stage_dp.rs): a layer-level profile gets every uniform (pp, tp)
            // configuration this cluster can host; configurations listed in the file win.
            let mut profile = profile.clone();
            crate::stage_dp::add_derived_configs(&mut profile, &file.cluster)
                .map_err(|e| bad(format!("profiles.{name}.layers"), e.to_string()))?;
            // --- end stage DP hook
            profile_names.push(name.clone());
            profiles.push(profile);
        }
        if file.models.is_empty() {
            return Err(bad("models".into(), "expected at least one model".into()));
        }
        let mut models = Vec::with_capacity(file.models.len());
        let mut seen: IndexMap<&str, usize> = IndexMap::new();
        for (i, entry) in file.models.iter().enumerate() {
            let at = format!("models[{i}]");
            if entry.name.is_empty() {
                return Err(bad(
                    format!("{at}.name"),
                    "expected a non-empty name".into(),
                ));
            }
            if let Some(j) = seen.insert(&entry.name, i) {
                return Err(bad(
                    format!("{at}.name"),
                    format!("model \"{}\" is already defined at models[{j}]", entry.name),
                ));
            }
            let Some(profile) = profile_names.iter().position(|p| *p == entry.profile) else {
                return Err(bad(
                    format!("{at}.profile"),
                    format!(
                        "unknown profile \"{}\"; the instance defines: {}",
                        entry.profile,
                        profile_names.join(", ")
                    ),
                ));
            };
            let slo_s = match (entry.slo_s, entry.slo_scale) {
                (Some(_), Some(_)) => {
                    return Err(bad(at, "give either slo_s or slo_scale, not both".into()))
                }
                (None, None) => {
                    return Err(bad(at, "expected slo_s or slo_scale".into()));
                }
                (Some(s), None) => {
                    positive(path, &format!("{at}.slo_s"), s)?;
                    s
                }
                (None, Some(scale)) => {
                    positive(path, &format!("{at}.slo_scale"), scale)?;
                    let base = single_device_latency_s(&profiles[profile]).ok_or_else(|| {
                        bad(
                            format!("{at}.slo_scale"),
                            format!(
                                "profile \"{}\" has no single-device (pp 1, tp 1) batch-1 latency to scale; give slo_s",
                                entry.profile
                            ),
                        )
                    })?;
                    scale * base
                }
            };
            models.push(Model {
                name: entry.name.clone(),
                profile,
                slo_s,
            });
        }
        let model_names: Vec<&str> = models.iter().map(|m| m.name.as_str()).collect();
        let workload = WorkloadSpec::parse(path, &file.workload, &model_names)?;
        let simulator = file.simulator.unwrap_or_default();
        validate_simulator(path, &simulator)?;
        Ok(Instance {
            name: file.name,
            file: path.to_path_buf(),
            cluster: file.cluster,
            profile_names,
            profiles,
            models,
            workload,
            simulator,
        })
    }

    /// Index of a model by name.
    pub fn model_id(&self, name: &str) -> Option<usize> {
        self.models.iter().position(|m| m.name == name)
    }

    /// The profile of model `m`.
    pub fn profile_of(&self, m: usize) -> &Profile {
        &self.profiles[self.models[m].profile]
    }

    /// Directory that relative paths inside the instance are resolved against.
    pub fn base_dir(&self) -> &Path {
        self.file.parent().unwrap_or(Path::new("."))
    }

    /// Per-device weight budget in GiB.
    pub fn budget_gib(&self) -> f64 {
        self.cluster.memory_budget_gib
    }
}

impl Profile {
    /// The configuration with this (pp, tp), if profiled.
    pub fn config(&self, pp: u32, tp: u32) -> Option<&ParallelConfig> {
        self.configs.iter().find(|c| c.pp == pp && c.tp == tp)
    }

    /// Index of batch size 1, if profiled.
    pub fn batch1_index(&self) -> Option<usize> {
        self.batch_sizes.iter().position(|&b| b == 1)
    }
}

impl ParallelConfig {
    /// Per-device weight of a model in this configuration: its heaviest stage.
    pub fn weight_gib(&self) -> f64 {
        self.stage_weight_gib.iter().copied().fold(0.0, f64::max)
    }
}

/// Single-device batch-1 latency of a profile: the stage sum of its (pp 1, tp 1) configuration,
/// or the tp-1 layer sum of a layer-level profile.
pub fn single_device_latency_s(profile: &Profile) -> Option<f64> {
    let b = profile.batch1_index()?;
    if let Some(c) = profile.config(1, 1) {
        return Some(c.stage_latency_s[b].iter().sum());
    }
    let tp1 = profile.tp_degrees.iter().position(|&t| t == 1)?;
    if profile.layers.is_empty() {
        return None;
    }
    Some(profile.layers.iter().map(|l| l.latency_s[tp1][b]).sum())
}

fn positive(file: &Path, json_path: &str, v: f64) -> Result<()> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(SolverError::invalid(
            file,
            json_path,
            format!("expected a positive finite number, found {v}"),
        ))
    }
}

fn non_negative(file: &Path, json_path: &str, v: f64) -> Result<()> {
    if v.is_finite() && v >= 0.0 {
        Ok(())
    } else {
        Err(SolverError::invalid(
            file,
            json_path,
            format!("expected a non-negative finite number, found {v}"),
        ))
    }
}

/// The largest cluster plexserve places: far beyond any instance in the papers, small enough that
/// a device count typed with a few digits too many is an error, not an exhausted machine.
pub const MAX_DEVICES: u32 = 65_536;

/// Checks a cluster's `devices` and `devices_per_node` (JSON path `at`): 1 … [`MAX_DEVICES`].
pub fn validate_device_counts(file: &Path, at: &str, devices: u32, per_node: u32) -> Result<()> {
    for (key, n) in [("devices", devices), ("devices_per_node", per_node)] {
        if !(1..=MAX_DEVICES).contains(&n) {
            return Err(SolverError::invalid(
                file,
                format!("{at}.{key}"),
                format!("expected 1 to {MAX_DEVICES} devices, found {n}"),
            ));
        }
    }
    Ok(())
}

fn validate_cluster(file: &Path, c: &Cluster) -> Result<()> {
    validate_device_counts(file, "cluster", c.devices, c.devices_per_node)?;
    if let Some(bw) = c.link_gib_per_s {
        positive(file, "cluster.link_gib_per_s", bw)?;
    }
    positive(file, "cluster.memory_budget_gib", c.memory_budget_gib)
}

/// Checks the shapes and values of a profile; `at` is its JSON path.
pub fn validate_profile(file: &Path, at: &str, p: &Profile) -> Result<()> {
    let bad = |json_path: String, msg: String| SolverError::invalid(file, json_path, msg);
    if p.batch_sizes.is_empty() {
        return Err(bad(
            format!("{at}.batch_sizes"),
            "expected at least one batch size".into(),
        ));
    }
    if p.batch_sizes[0] == 0 || p.batch_sizes.windows(2).any(|w| w[0] >= w[1]) {
        return Err(bad(
            format!("{at}.batch_sizes"),
            "expected positive batch sizes in strictly ascending order".into(),
        ));
    }
    if p.configs.is_empty() && p.layers.is_empty() {
        return Err(bad(
            at.to_string(),
            "expected `configs` or `layers` (or both)".into(),
        ));
    }
    let nb = p.batch_sizes.len();
    for (ci, c) in p.configs.iter().enumerate() {
        let cat = format!("{at}.configs[{ci}]");
        if c.pp == 0 || c.tp == 0 {
            return Err(bad(cat, "expected pp ≥ 1 and tp ≥ 1".into()));
        }
        if p.configs[..ci].iter().any(|o| o.pp == c.pp && o.tp == c.tp) {
            return Err(bad(
                cat,
                format!("configuration pp={} tp={} appears twice", c.pp, c.tp),
            ));
        }
        if c.stage_latency_s.len() != nb {
            return Err(bad(
                format!("{cat}.stage_latency_s"),
                format!(
                    "expected one row per batch size ({nb}), found {}",
                    c.stage_latency_s.len()
                ),
            ));
        }
        for (bi, row) in c.stage_latency_s.iter().enumerate() {
            if row.len() != c.pp as usize {
                return Err(bad(
                    format!("{cat}.stage_latency_s[{bi}]"),
                    format!(
                        "expected {} stage latencies (pp), found {}",
                        c.pp,
                        row.len()
                    ),
                ));
            }
            for (k, &v) in row.iter().enumerate() {
                positive(file, &format!("{cat}.stage_latency_s[{bi}][{k}]"), v)?;
            }
        }
        if c.stage_weight_gib.len() != c.pp as usize {
            return Err(bad(
                format!("{cat}.stage_weight_gib"),
                format!(
                    "expected {} stage weights (pp), found {}",
                    c.pp,
                    c.stage_weight_gib.len()
                ),
            ));
        }
        for (k, &v) in c.stage_weight_gib.iter().enumerate() {
            non_negative(file, &format!("{cat}.stage_weight_gib[{k}]"), v)?;
        }
    }
    if !p.layers.is_empty() {
        let nt = p.tp_degrees.len();
        if nt == 0 || p.tp_degrees[0] == 0 || p.tp_degrees.windows(2).any(|w| w[0] >= w[1]) {
            return Err(bad(
                format!("{at}.tp_degrees"),
                "a layer-level profile needs positive tp degrees in strictly ascending order"
                    .into(),
            ));
        }
        for (li, l) in p.layers.iter().enumerate() {
            let lat = format!("{at}.layers[{li}]");
            if l.latency_s.len() != nt {
                return Err(bad(
                    format!("{lat}.latency_s"),
                    format!(
                        "expected one row per tp degree ({nt}), found {}",
                        l.latency_s.len()
                    ),
                ));
            }
            for (ti, row) in l.latency_s.iter().enumerate() {
                if row.len() != nb {
                    return Err(bad(
                        format!("{lat}.latency_s[{ti}]"),
                        format!(
                            "expected one latency per batch size ({nb}), found {}",
                            row.len()
                        ),
                    ));
                }
                for (bi, &v) in row.iter().enumerate() {
                    non_negative(file, &format!("{lat}.latency_s[{ti}][{bi}]"), v)?;
                }
            }
            if l.weight_gib.len() != nt {
                return Err(bad(
                    format!("{lat}.weight_gib"),
                    format!(
                        "expected one weight per tp degree ({nt}), found {}",
                        l.weight_gib.len()
                    ),
                ));
            }
            for (ti, &v) in l.weight_gib.iter().enumerate() {
                non_negative(file, &format!("{lat}.weight_gib[{ti}]"), v)?;
            }
            if !l.activation_gib.is_empty() && l.activation_gib.len() != nb {
                return Err(bad(
                    format!("{lat}.activation_gib"),
                    format!(
                        "expected one activation size per batch size ({nb}), found {}",
                        l.activation_gib.len()
                    ),
                ));
            }
            for (bi, &v) in l.activation_gib.iter().enumerate() {
                non_negative(file, &format!("{lat}.activation_gib[{bi}]"), v)?;
            }
        }
    }
    Ok(())
}

fn validate_simulator(file: &Path, s: &SimulatorConfig) -> Result<()> {
    non_negative(file, "simulator.overhead_s", s.overhead_s)?;
    non_negative(file, "simulator.pp_penalty", s.pp_penalty)?;
    non_negative(file, "simulator.warmup_s", s.warmup_s)?;
    if s.max_batch == 0 {
        return Err(SolverError::invalid(
            file,
            "simulator.max_batch",
            "expected a batch size ≥ 1",
        ));
    }
    Ok(())
}
