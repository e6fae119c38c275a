//! Exact stage partitioning of a layer-level profile (stage-dp-and-milp.md §2).
//!
//! A model's `L` layers are cut into `P` contiguous stages `[b_{k-1}, b_k)`, each on its own
//! tensor-parallel degree `o_k` (from the profile's `tp_degrees`, at most a node wide), with every
//! stage's per-device weight within the budget and `Σ o_k` within the device group. The objective
//! is the smallest bottleneck `max_k t_k`, then the smallest latency `Σ_k t_k` at that bottleneck.
//!
//! ```no_run
//! use plexserve_solver::{partition, PartitionOptions, ProfileFile};
//! let file = ProfileFile::load("instances/layers/toy-transformer.profile.json".as_ref()).unwrap();
//! let profile = &file.profiles["toy-12l"];
//! let mut opts = PartitionOptions::new(4, 2.0);
//! opts.pp = Some(2);
//! let plan = partition(profile, &opts).unwrap();
//! println!("bottleneck {:.4} s over {} stages", plan.bottleneck_s, plan.stages.len());
//! ```
//!
//! Why two passes instead of one lexicographic `(max, sum)` DP: keeping only the best pair per
//! state throws away prefixes with a worse max but a smaller sum, which win when a later stage sets
//! the bottleneck anyway (§2.2). Pass 1 is a min-max DP and finds the bottleneck `τ*` exactly;
//! pass 2 is a min-sum DP over the transitions with `t ≤ τ*`, which is exact under a fixed
//! threshold. Pass 1 only takes `max`/`min` of table entries, so `τ*` is bit-identical to one of
//! them and the filter `t ≤ τ*` needs no tolerance.
//!
//! Cost of a stage `[i, j)` at degree `o` for the optimised batch size: the layer latencies at `o`
//! summed from `i` upwards, plus sending the boundary activation of layer `j − 1` to the next
//! stage (`activation_gib / link_gib_per_s`, nothing after the last stage or without a link).
//! Memory: the stage's per-device weights at `o`, summed the same way, must be within the budget.
//!
//! Tie-breaks are part of the result: among plans with equal bottleneck and sum, the back-pointer
//! of every state takes the smallest start `i` of its last stage (the earliest cut), then the
//! smallest degree; at the end the fewest devices, then the fewest stages.

use std::path::Path;

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

use crate::error::{parse_document, read_file, Result, SolverError};
use crate::instance::{validate_profile, Cluster, ParallelConfig, Profile};

/// Schema string of a profile file.
pub const PROFILE_SCHEMA: &str = "plexserve/profile/v1";

/// Largest DP table (states) a single call may allocate; beyond it the request is refused rather
/// than exhausting memory.
const MAX_STATES: usize = 1 << 22;

/// A profile file: `{"schema": "plexserve/profile/v1", "profiles": {name: Profile}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileFile {
    pub schema: String,
    pub profiles: IndexMap<String, Profile>,
}

impl ProfileFile {
    /// Reads and validates a profile file.
    pub fn load(path: &Path) -> Result<ProfileFile> {
        let text = read_file(path)?;
        ProfileFile::from_json(path, &text)
    }

    /// Validates profile-file JSON text; `path` names the file in errors.
    pub fn from_json(path: &Path, text: &str) -> Result<ProfileFile> {
        let file: ProfileFile = parse_document(path, text, PROFILE_SCHEMA)?;
        if file.profiles.is_empty() {
            return Err(SolverError::invalid(
                path,
                "profiles",
                "expected at least one profile",
            ));
        }
        for (name, p) in &file.profiles {
            validate_profile(path, &format!("profiles.{name}"), p)?;
        }
        Ok(file)
    }
}

/// What the partition minimises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StageObjective {
    /// The bottleneck stage latency, then the total latency at that bottleneck.
    #[default]
    MinMax,
    /// Alpa's inference objective: stages × bottleneck (one request's latency when every stage is
    /// padded to the slowest); with a free depth the first depth on strict `<` wins, then the
    /// total latency at its bottleneck.
    Alpa,
}

impl StageObjective {
    /// Parses the command-line spelling (`min-max`, `alpa`).
    pub fn parse(s: &str) -> Option<StageObjective> {
        match s {
            "min-max" => Some(StageObjective::MinMax),
            "alpa" => Some(StageObjective::Alpa),
            _ => None,
        }
    }

    /// The command-line spelling.
    pub fn name(self) -> &'static str {
        match self {
            StageObjective::MinMax => "min-max",
            StageObjective::Alpa => "alpa",
        }
    }
}

/// The device group and the rules of one partition problem.
#[derive(Debug, Clone, PartialEq)]
pub struct PartitionOptions {
    /// Devices in the group (`G`).
    pub devices: u32,
    /// Pipeline depth; `None` lets the objective choose it (at most `min(L, G / smallest degree)`).
    pub pp: Option<u32>,
    /// One tensor-parallel degree for every stage (AlpaServe's `(pp, tp)`); `None` chooses a
    /// degree per stage.
    pub tp: Option<u32>,
    pub objective: StageObjective,
    /// Per-device budget for a stage's weights, in GiB.
    pub memory_budget_gib: f64,
    /// Degrees wider than a node are not considered.
    pub devices_per_node: u32,
    /// Inter-stage link bandwidth; `None` makes stage boundaries free.
    pub link_gib_per_s: Option<f64>,
    /// Batch index whose latencies are optimised; `None` is batch size 1, or the smallest profiled.
    pub batch_index: Option<usize>,
    /// Use exactly `devices` devices (`Σ o_k = G`); by default idle devices are allowed, which
    /// makes more devices never worse.
    pub exact_devices: bool,
}

impl PartitionOptions {
    /// Min-max objective, free depth, per-stage degrees, 8 devices per node, free boundaries.
    pub fn new(devices: u32, memory_budget_gib: f64) -> PartitionOptions {
        PartitionOptions {
            devices,
            pp: None,
            tp: None,
            objective: StageObjective::MinMax,
            memory_budget_gib,
            devices_per_node: 8,
            link_gib_per_s: None,
            batch_index: None,
            exact_devices: false,
        }
    }

    /// Options taking the budget, node width and link of a cluster.
    pub fn for_cluster(cluster: &Cluster, devices: u32) -> PartitionOptions {
        PartitionOptions {
            devices_per_node: cluster.devices_per_node,
            link_gib_per_s: cluster.link_gib_per_s,
            ..PartitionOptions::new(devices, cluster.memory_budget_gib)
        }
    }
}

/// One pipeline stage of a [`StagePlan`]: layers `start..end` on `tp` devices.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stage {
    pub start: usize,
    pub end: usize,
    pub tp: u32,
    /// Latency at every batch size of the profile, `latency_s[batch_index]`, boundary send included.
    pub latency_s: Vec<f64>,
    /// Per-device weight of the stage.
    pub weight_gib: f64,
}

/// An optimal partition.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StagePlan {
    pub objective: StageObjective,
    /// Batch size whose latencies were optimised.
    pub batch_size: u32,
    pub stages: Vec<Stage>,
    /// Largest stage latency at the optimised batch size (`τ*`).
    pub bottleneck_s: f64,
    /// Sum of the stage latencies at the optimised batch size.
    pub total_s: f64,
    /// The objective's value: `bottleneck_s` for min-max, stages × bottleneck for Alpa.
    pub objective_s: f64,
    /// `Σ tp` over the stages.
    pub devices_used: u32,
}

/// Finds the optimal partition of `profile`'s layers under `opts`.
///
/// Errors: [`SolverError::Option`] for a malformed request (no layers, zero devices, a degree the
/// profile lacks, …), [`SolverError::Infeasible`] with a reason when no partition fits.
pub fn partition(profile: &Profile, opts: &PartitionOptions) -> Result<StagePlan> {
    let prob = Problem::new(profile, opts)?;
    let (tau, stages) = match opts.tp {
        Some(_) => prob.solve_uniform(),
        None => prob.solve_general()?,
    }
    .ok_or_else(|| prob.infeasible())?;
    Ok(prob.plan(tau, &stages))
}

/// Bottleneck by threshold search (§2.3's cross-check): binary search over the distinct stage
/// costs with a bitset reachability DP, `reach[p][j] |= reach[p−1][i] << o`. Only for the
/// per-stage-degree problem with `G ≤ 127`; `Ok(None)` when infeasible. Depth rules and the
/// device rule are those of [`partition`]; the objective is min-max.
pub fn bottleneck_by_threshold(profile: &Profile, opts: &PartitionOptions) -> Result<Option<f64>> {
    let prob = Problem::new(profile, opts)?;
    if prob.g > 127 {
        return Err(SolverError::Option(format!(
            "the bitset cross-check handles at most 127 devices, found {}",
            prob.g
        )));
    }
    let mut candidates: Vec<f64> = prob
        .tab
        .cost_s
        .iter()
        .copied()
        .filter(|t| t.is_finite())
        .collect();
    candidates.sort_by(f64::total_cmp);
    candidates.dedup_by(|a, b| a.total_cmp(b).is_eq());
    let mut reach = vec![0u128; (prob.p_max + 1) * (prob.l + 1)];
    let mut feasible = |tau: f64| prob.reachable_within(tau, &mut reach);
    // Smallest candidate whose reachability holds; feasibility is monotone in the threshold.
    let (mut lo, mut hi) = (0usize, candidates.len());
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if feasible(candidates[mid]) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    Ok(candidates.get(lo).copied())
}

/// The uniform `(pp, tp)` configuration of a layer-level profile: the optimal cuts of
/// [`partition`] with every stage on `tp` devices, latencies per batch size for those cuts.
/// `Ok(None)` when it does not fit the budget.
pub fn uniform_config(
    profile: &Profile,
    pp: u32,
    tp: u32,
    memory_budget_gib: f64,
    link_gib_per_s: Option<f64>,
) -> Result<Option<ParallelConfig>> {
    let mut opts = PartitionOptions::new(pp.saturating_mul(tp), memory_budget_gib);
    opts.pp = Some(pp);
    opts.tp = Some(tp);
    opts.devices_per_node = tp;
    opts.link_gib_per_s = link_gib_per_s;
    match partition(profile, &opts) {
        Ok(plan) => Ok(Some(plan_to_config(profile, pp, tp, &plan))),
        Err(SolverError::Infeasible(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Every uniform `(pp, tp)` configuration a cluster can host: `pp ∈ {1, 2, 4, …}`, `tp` from the
/// profile's degrees up to a node, `pp·tp ≤ devices`, fitting the per-device budget. Ordered by
/// `pp`, then `tp`. Configurations the profile already lists are skipped (explicit ones win).
pub fn derive_configs(profile: &Profile, cluster: &Cluster) -> Result<Vec<ParallelConfig>> {
    if profile.layers.is_empty() {
        return Ok(Vec::new());
    }
    validate_profile(Path::new("<profile>"), "$", profile)?;
    let l = profile.layers.len();
    let devices = cluster.devices as usize;
    // (pp, tp, config), gathered per tp and then put in (pp, tp) order.
    let mut found: Vec<(u32, u32, ParallelConfig)> = Vec::new();
    for &tp in &profile.tp_degrees {
        if tp > cluster.devices_per_node || tp as usize > devices {
            continue;
        }
        let mut opts = PartitionOptions::for_cluster(cluster, cluster.devices);
        opts.tp = Some(tp);
        // One min-max pass over every depth serves all pp at once: U[pp][L] of a free-depth run
        // equals that of a fixed-depth run (the fixed run only prunes states that cannot reach
        // (pp, L)), so each pp then needs only its own sum pass.
        let prob = Problem::build(profile, &opts, false)?;
        let u = prob.uniform_min_max(0, prob.p_max, None);
        let mut pp = 1usize;
        while pp <= prob.p_max {
            let tau = u[pp * (l + 1) + l];
            if tau.is_finite() && profile.config(pp as u32, tp).is_none() {
                if let Some(stages) = prob.uniform_min_sum(0, tau, pp, Some(pp)) {
                    let plan = prob.plan(tau, &stages);
                    found.push((pp as u32, tp, plan_to_config(profile, pp as u32, tp, &plan)));
                }
            }
            pp *= 2;
        }
    }
    found.sort_by_key(|&(pp, tp, _)| (pp, tp));
    Ok(found.into_iter().map(|(_, _, c)| c).collect())
}

/// Appends [`derive_configs`] to a layer-level profile's configurations (the instance-loading
/// hook); profiles without layers are left alone.
pub fn add_derived_configs(profile: &mut Profile, cluster: &Cluster) -> Result<()> {
    let derived = derive_configs(profile, cluster)?;
    profile.configs.extend(derived);
    Ok(())
}

fn plan_to_config(profile: &Profile, pp: u32, tp: u32, plan: &StagePlan) -> ParallelConfig {
    let nb = profile.batch_sizes.len();
    ParallelConfig {
        pp,
        tp,
        stage_latency_s: (0..nb)
            .map(|b| plan.stages.iter().map(|s| s.latency_s[b]).collect())
            .collect(),
        stage_weight_gib: plan.stages.iter().map(|s| s.weight_gib).collect(),
    }
}

/// Latency of stage `[start, end)` at tp index `ti` and batch index `b`: the layers summed from
/// `start` upwards, then the boundary send. The cost table accumulates in the same order, so a
/// reported latency is bit-identical to the table entry the DP compared.
fn stage_latency_s(
    profile: &Profile,
    start: usize,
    end: usize,
    ti: usize,
    b: usize,
    link_gib_per_s: Option<f64>,
) -> f64 {
    let mut acc = 0.0;
    for layer in &profile.layers[start..end] {
        acc += layer.latency_s[ti][b];
    }
    acc + boundary_send_s(profile, end, b, link_gib_per_s)
}

fn stage_weight_gib(profile: &Profile, start: usize, end: usize, ti: usize) -> f64 {
    let mut acc = 0.0;
    for layer in &profile.layers[start..end] {
        acc += layer.weight_gib[ti];
    }
    acc
}

/// Time to send layer `end − 1`'s output to the next stage; nothing after the last layer.
fn boundary_send_s(profile: &Profile, end: usize, b: usize, link_gib_per_s: Option<f64>) -> f64 {
    match link_gib_per_s {
        Some(bw) if end < profile.layers.len() => profile.layers[end - 1]
            .activation_gib
            .get(b)
            .map_or(0.0, |a| a / bw),
        _ => 0.0,
    }
}

/// Stage costs of every `[i, j)` and allowed degree at one batch size, `+∞` where the stage does
/// not fit; flat, indexed `(j·(L+1) + i)·n_deg + o` so that the DP's inner loops over `i` and `o`
/// for a fixed `j` read contiguous memory.
#[derive(Debug, Clone)]
struct CostTable {
    n_layers: usize,
    /// Allowed degrees, ascending, and their index into the profile's `tp_degrees`.
    degree: Vec<usize>,
    tp_index: Vec<usize>,
    cost_s: Vec<f64>,
    /// `first_fit[j]`: the smallest `i` for which some degree fits `[i, j)` (`j` when none).
    first_fit: Vec<usize>,
}

impl CostTable {
    fn build(
        profile: &Profile,
        tp_index: &[usize],
        b: usize,
        budget_gib: f64,
        link_gib_per_s: Option<f64>,
    ) -> CostTable {
        let l = profile.layers.len();
        let nd = tp_index.len();
        let send: Vec<f64> = (0..=l)
            .map(|j| {
                if j == 0 {
                    0.0
                } else {
                    boundary_send_s(profile, j, b, link_gib_per_s)
                }
            })
            .collect();
        let mut cost_s = vec![f64::INFINITY; (l + 1) * (l + 1) * nd];
        let mut first_fit: Vec<usize> = (0..=l).collect();
        for (o, &ti) in tp_index.iter().enumerate() {
            for i in 0..l {
                let (mut lat, mut w) = (0.0, 0.0);
                for j in i + 1..=l {
                    let layer = &profile.layers[j - 1];
                    lat += layer.latency_s[ti][b];
                    w += layer.weight_gib[ti];
                    // Weights are non-negative, so the running sum only grows: no longer stage
                    // from `i` fits either.
                    if w > budget_gib {
                        break;
                    }
                    cost_s[(j * (l + 1) + i) * nd + o] = lat + send[j];
                    first_fit[j] = first_fit[j].min(i);
                }
            }
        }
        CostTable {
            n_layers: l,
            degree: tp_index
                .iter()
                .map(|&ti| profile.tp_degrees[ti] as usize)
                .collect(),
            tp_index: tp_index.to_vec(),
            cost_s,
            first_fit,
        }
    }

    #[inline]
    fn at(&self, i: usize, j: usize, o: usize) -> f64 {
        self.cost_s[(j * (self.n_layers + 1) + i) * self.degree.len() + o]
    }
}

/// A plan under construction: `(start, end, degree slot)` per stage.
type Cuts = Vec<(usize, usize, usize)>;

/// A validated partition request with its cost table.
struct Problem<'a> {
    profile: &'a Profile,
    opts: &'a PartitionOptions,
    tab: CostTable,
    l: usize,
    g: usize,
    b: usize,
    /// Fixed depth, or `None` for a free one.
    fixed: Option<usize>,
    /// Largest depth considered.
    p_max: usize,
}

// The DP loops index several flat tables by the same coordinates (p, j, i, d); iterators
// would hide that.
#[allow(clippy::needless_range_loop)]
impl<'a> Problem<'a> {
    fn new(profile: &'a Profile, opts: &'a PartitionOptions) -> Result<Problem<'a>> {
        Problem::build(profile, opts, true)
    }

    /// `validate`: check the profile's shapes and values first (skipped only by callers that
    /// just did).
    fn build(
        profile: &'a Profile,
        opts: &'a PartitionOptions,
        validate: bool,
    ) -> Result<Problem<'a>> {
        let opt = |m: String| SolverError::Option(m);
        if validate {
            validate_profile(Path::new("<profile>"), "$", profile)?;
        }
        if profile.layers.is_empty() {
            return Err(opt(
                "the profile has no `layers`; the stage DP needs a layer-level profile".into(),
            ));
        }
        let l = profile.layers.len();
        if l > usize::from(u16::MAX) {
            return Err(opt(format!("at most {} layers, found {l}", u16::MAX)));
        }
        if opts.devices == 0 {
            return Err(opt("expected at least one device".into()));
        }
        if opts.devices_per_node == 0 {
            return Err(opt("expected at least one device per node".into()));
        }
        if !(opts.memory_budget_gib.is_finite() && opts.memory_budget_gib > 0.0) {
            return Err(opt(format!(
                "expected a positive finite memory budget, found {}",
                opts.memory_budget_gib
            )));
        }
        if let Some(bw) = opts.link_gib_per_s {
            if !(bw.is_finite() && bw > 0.0) {
                return Err(opt(format!(
                    "expected a positive finite link bandwidth, found {bw}"
                )));
            }
        }
        if opts.pp == Some(0) {
            return Err(opt("expected pp ≥ 1".into()));
        }
        let b = match opts.batch_index {
            Some(b) if b >= profile.batch_sizes.len() => {
                return Err(opt(format!(
                    "batch index {b} is out of range: the profile has {} batch sizes",
                    profile.batch_sizes.len()
                )))
            }
            Some(b) => b,
            None => profile.batch1_index().unwrap_or(0),
        };
        let g = opts.devices as usize;
        let tp_index: Vec<usize> = match opts.tp {
            Some(t) => {
                let Some(ti) = profile.tp_degrees.iter().position(|&d| d == t) else {
                    return Err(opt(format!(
                        "tp {t} is not profiled; the profile has tp degrees {:?}",
                        profile.tp_degrees
                    )));
                };
                if t > opts.devices_per_node {
                    return Err(opt(format!(
                        "tp {t} exceeds the {} devices of a node",
                        opts.devices_per_node
                    )));
                }
                if t as usize > g {
                    return Err(SolverError::Infeasible(format!(
                        "tp {t} needs more than the {g} devices given"
                    )));
                }
                vec![ti]
            }
            None => (0..profile.tp_degrees.len())
                .filter(|&ti| {
                    let d = profile.tp_degrees[ti];
                    d <= opts.devices_per_node && d as usize <= g
                })
                .collect(),
        };
        if tp_index.is_empty() {
            return Err(SolverError::Infeasible(format!(
                "no profiled tp degree {:?} fits {g} devices and {} devices per node",
                profile.tp_degrees, opts.devices_per_node
            )));
        }
        if tp_index.len() > usize::from(u8::MAX) {
            return Err(opt("at most 255 tp degrees".into()));
        }
        let d_min = profile.tp_degrees[tp_index[0]] as usize;
        let p_cap = l.min(g / d_min);
        let (fixed, p_max) = match opts.pp {
            Some(p) => {
                let p = p as usize;
                if p > l {
                    return Err(SolverError::Infeasible(format!(
                        "{p} stages need at least {p} layers; the model has {l}"
                    )));
                }
                if p * d_min > g {
                    return Err(SolverError::Infeasible(format!(
                        "{p} stages of at least {d_min} devices need more than the {g} devices given"
                    )));
                }
                (Some(p), p)
            }
            None => (None, p_cap),
        };
        let states = (p_max + 1)
            .saturating_mul(l + 1)
            .saturating_mul(if opts.tp.is_some() { 1 } else { g + 1 });
        if states > MAX_STATES {
            return Err(opt(format!(
                "the DP would need {states} states (at most {MAX_STATES}); fix --pp or use fewer devices"
            )));
        }
        let tab = CostTable::build(
            profile,
            &tp_index,
            b,
            opts.memory_budget_gib,
            opts.link_gib_per_s,
        );
        Ok(Problem {
            profile,
            opts,
            tab,
            l,
            g,
            b,
            fixed,
            p_max,
        })
    }

    /// Last layer index a stage `p` may end at: with a fixed depth every later stage needs a layer.
    #[inline]
    fn j_hi(&self, p: usize) -> usize {
        self.fixed.map_or(self.l, |pf| self.l - (pf - p))
    }

    /// Device counts a complete plan may use.
    fn final_devices(&self) -> std::ops::RangeInclusive<usize> {
        if self.opts.exact_devices {
            self.g..=self.g
        } else {
            0..=self.g
        }
    }

    fn infeasible(&self) -> SolverError {
        let o_last = self.tab.degree.len() - 1;
        let widest = self.tab.degree[o_last];
        let ti = self.tab.tp_index[o_last];
        let heavy = self
            .profile
            .layers
            .iter()
            .enumerate()
            .map(|(k, layer)| (k, layer.weight_gib[ti]))
            .max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0)));
        let depth = match self.fixed {
            Some(p) => format!("{p} stages"),
            None => format!("at most {} stages", self.p_max),
        };
        let reason = match heavy {
            Some((k, w)) if w > self.opts.memory_budget_gib => format!(
                "layer {k} alone needs {w} GiB per device even at tp {widest}, over the budget of {} GiB",
                self.opts.memory_budget_gib
            ),
            _ => format!(
                "the weights do not fit the budget of {} GiB per device in {depth} on {}{} devices (tp degrees {:?})",
                self.opts.memory_budget_gib,
                if self.opts.exact_devices { "exactly " } else { "" },
                self.g,
                self.tab.degree
            ),
        };
        SolverError::Infeasible(reason)
    }

    /// Builds the reported plan from `(start, end, degree slot)` stages.
    fn plan(&self, tau: f64, stages: &[(usize, usize, usize)]) -> StagePlan {
        let nb = self.profile.batch_sizes.len();
        let link = self.opts.link_gib_per_s;
        let stages: Vec<Stage> = stages
            .iter()
            .map(|&(s, e, o)| {
                let ti = self.tab.tp_index[o];
                Stage {
                    start: s,
                    end: e,
                    tp: self.tab.degree[o] as u32,
                    latency_s: (0..nb)
                        .map(|b| stage_latency_s(self.profile, s, e, ti, b, link))
                        .collect(),
                    weight_gib: stage_weight_gib(self.profile, s, e, ti),
                }
            })
            .collect();
        let total_s = stages.iter().fold(0.0, |acc, s| acc + s.latency_s[self.b]);
        debug_assert!(stages.iter().all(|s| s.latency_s[self.b] <= tau));
        let objective_s = match self.opts.objective {
            StageObjective::MinMax => tau,
            StageObjective::Alpa => stages.len() as f64 * tau,
        };
        StagePlan {
            objective: self.opts.objective,
            batch_size: self.profile.batch_sizes[self.b],
            devices_used: stages.iter().map(|s| s.tp).sum(),
            stages,
            bottleneck_s: tau,
            total_s,
            objective_s,
        }
    }

    /// Which depths pass 2 covers, and the threshold, from each depth's best bottleneck.
    /// Returns `(threshold, depth of pass 2 tables, fixed depth for pass 2)`.
    fn choose_depth(&self, tau_by_p: &[f64]) -> Option<(f64, usize, Option<usize>)> {
        if let Some(p) = self.fixed {
            let tau = tau_by_p[p];
            return tau.is_finite().then_some((tau, p, Some(p)));
        }
        match self.opts.objective {
            StageObjective::MinMax => {
                let tau = tau_by_p[1..].iter().copied().fold(f64::INFINITY, f64::min);
                tau.is_finite().then_some((tau, self.p_max, None))
            }
            StageObjective::Alpa => {
                let mut best: Option<(f64, usize)> = None;
                for (p, &tau) in tau_by_p.iter().enumerate().skip(1) {
                    let v = p as f64 * tau;
                    if v.is_finite() && best.is_none_or(|(bv, _)| v < bv) {
                        best = Some((v, p));
                    }
                }
                best.map(|(_, p)| (tau_by_p[p], p, Some(p)))
            }
        }
    }

    // ---------------------------------------------------------------- per-stage degrees

    /// Both passes of §2.3; `None` when infeasible.
    fn solve_general(&self) -> Result<Option<(f64, Cuts)>> {
        let (l, row) = (self.l, self.g + 1);
        let plane = (l + 1) * row;
        let mut h = vec![f64::INFINITY; (self.p_max + 1) * plane];
        // Pruning by a uniform plan's bottleneck is exact for min-max (τ* ≤ ub) but not for a
        // free-depth Alpa objective, which needs every depth's own bottleneck; and a uniform plan
        // may not use exactly G devices.
        let ub = if !self.opts.exact_devices
            && (self.fixed.is_some() || self.opts.objective == StageObjective::MinMax)
        {
            self.uniform_upper_bound()
        } else {
            f64::INFINITY
        };
        self.min_max_pass(self.p_max, self.fixed, ub, &mut h);
        let mut tau_by_p = vec![f64::INFINITY; self.p_max + 1];
        for (p, tau) in tau_by_p.iter_mut().enumerate().skip(1) {
            for d in self.final_devices() {
                *tau = tau.min(h[p * plane + l * row + d]);
            }
        }
        drop(h);
        let Some((tau, p_tab, fixed)) = self.choose_depth(&tau_by_p) else {
            return Ok(None);
        };
        // Reuse one allocation size for the sum pass; back-pointers are u16 cut + u8 degree slot.
        let n = (p_tab + 1) * plane;
        let mut f = vec![f64::INFINITY; n];
        let mut back_i = vec![0u16; n];
        let mut back_o = vec![0u8; n];
        self.min_sum_pass(p_tab, fixed, tau, &mut f, &mut back_i, &mut back_o);
        let depths = match fixed {
            Some(p) => p..=p,
            None => 1..=p_tab,
        };
        let mut best: Option<(f64, usize, usize)> = None;
        // Fewest devices, then fewest stages, among equal sums.
        for d in self.final_devices() {
            for p in depths.clone() {
                let v = f[p * plane + l * row + d];
                if v.is_finite() && best.is_none_or(|(bv, _, _)| v < bv) {
                    best = Some((v, p, d));
                }
            }
        }
        let Some((_, p_end, d_end)) = best else {
            // Pass 1 proved a plan with every stage ≤ τ exists, so pass 2 always finds one.
            return Err(SolverError::Infeasible(
                "internal: the sum pass found no plan under the bottleneck of the min-max pass"
                    .into(),
            ));
        };
        let mut stages = Vec::with_capacity(p_end);
        let (mut j, mut d) = (l, d_end);
        for p in (1..=p_end).rev() {
            let k = p * plane + j * row + d;
            let (i, o) = (usize::from(back_i[k]), usize::from(back_o[k]));
            stages.push((i, j, o));
            j = i;
            d -= self.tab.degree[o];
        }
        stages.reverse();
        Ok(Some((tau, stages)))
    }

    /// Pass 1: `H[p][j][d]` = smallest bottleneck of layers `[0, j)` in `p` stages on exactly `d`
    /// devices.
    fn min_max_pass(&self, p_max: usize, fixed: Option<usize>, ub: f64, h: &mut [f64]) {
        let (l, g, row) = (self.l, self.g, self.g + 1);
        let plane = (l + 1) * row;
        let tab = &self.tab;
        let d_max = tab.degree[tab.degree.len() - 1];
        // Finite range `[lo, hi]` of the device counts of every row of the previous and the
        // current depth (`lo > hi`: the row is all +∞), so dead rows cost nothing.
        let mut prev_span = vec![(1usize, 0usize); l + 1];
        let mut cur_span = vec![(1usize, 0usize); l + 1];
        h[0] = 0.0;
        prev_span[0] = (0, 0);
        for p in 1..=p_max {
            let (before, after) = h.split_at_mut(p * plane);
            let prev = &before[(p - 1) * plane..];
            let cur = &mut after[..plane];
            cur_span.fill((1, 0));
            let j_hi = fixed.map_or(l, |pf| l - (pf - p));
            for j in p..=j_hi {
                let dst_row = &mut cur[j * row..(j + 1) * row];
                for i in (p - 1).max(tab.first_fit[j])..j {
                    let (src_lo, src_hi) = prev_span[i];
                    if src_lo > src_hi {
                        continue;
                    }
                    let src_row = &prev[i * row..(i + 1) * row];
                    for (o, &deg) in tab.degree.iter().enumerate() {
                        let t = tab.at(i, j, o);
                        // Beyond the uniform upper bound a transition cannot be on an optimal
                        // path; the bound is itself a table entry, so `>` is exact.
                        if !t.is_finite() || t > ub || src_lo + deg > g {
                            continue;
                        }
                        let hi = src_hi.min(g - deg);
                        let src = &src_row[src_lo..=hi];
                        let dst = &mut dst_row[src_lo + deg..=hi + deg];
                        for (dv, &sv) in dst.iter_mut().zip(src) {
                            let c = sv.max(t);
                            if c < *dv {
                                *dv = c;
                            }
                        }
                    }
                }
                let first = dst_row.iter().position(|v| v.is_finite());
                let last = dst_row.iter().rposition(|v| v.is_finite());
                if let (Some(a), Some(b)) = (first, last) {
                    cur_span[j] = (a, b.min(p * d_max));
                }
            }
            std::mem::swap(&mut prev_span, &mut cur_span);
        }
    }

    /// Pass 2: `F[p][j][d]` = smallest latency sum of layers `[0, j)` in `p` stages on exactly `d`
    /// devices with every stage `≤ tau`, with the back-pointer `(i, o)` of its last stage.
    fn min_sum_pass(
        &self,
        p_max: usize,
        fixed: Option<usize>,
        tau: f64,
        f: &mut [f64],
        back_i: &mut [u16],
        back_o: &mut [u8],
    ) {
        let (l, g, row) = (self.l, self.g, self.g + 1);
        let plane = (l + 1) * row;
        let tab = &self.tab;
        let (d_min, d_max) = (tab.degree[0], tab.degree[tab.degree.len() - 1]);
        f[0] = 0.0;
        for p in 1..=p_max {
            let (before, after) = f.split_at_mut(p * plane);
            let prev = &before[(p - 1) * plane..];
            let cur = &mut after[..plane];
            let src_lo = (p - 1) * d_min;
            let src_hi = ((p - 1) * d_max).min(g);
            if src_lo > g {
                break;
            }
            let j_hi = fixed.map_or(l, |pf| l - (pf - p));
            for j in p..=j_hi {
                let base = j * row;
                let dst_row = &mut cur[base..base + row];
                let bi_row = &mut back_i[p * plane + base..p * plane + base + row];
                let bo_row = &mut back_o[p * plane + base..p * plane + base + row];
                // Order i ascending, then o ascending, strict `<`: the earliest cut, then the
                // smallest degree, wins a tie.
                for i in (p - 1).max(tab.first_fit[j])..j {
                    let src_row = &prev[i * row..(i + 1) * row];
                    for (o, &deg) in tab.degree.iter().enumerate() {
                        let t = tab.at(i, j, o);
                        // Exact comparison: τ is a table entry (see the module docs).
                        if t > tau || src_lo + deg > g {
                            continue;
                        }
                        let hi = src_hi.min(g - deg);
                        for k in src_lo..=hi {
                            let c = src_row[k] + t;
                            let dd = k + deg;
                            if c < dst_row[dd] {
                                dst_row[dd] = c;
                                bi_row[dd] = i as u16;
                                bo_row[dd] = o as u8;
                            }
                        }
                    }
                }
            }
        }
    }

    /// Bitset reachability under threshold `tau` (cross-check of pass 1).
    fn reachable_within(&self, tau: f64, reach: &mut [u128]) -> bool {
        let (l, g) = (self.l, self.g);
        let tab = &self.tab;
        let mask: u128 = if g >= 127 {
            u128::MAX
        } else {
            (1u128 << (g + 1)) - 1
        };
        reach.fill(0);
        reach[0] = 1;
        for p in 1..=self.p_max {
            for j in p..=self.j_hi(p) {
                let mut acc = 0u128;
                for i in (p - 1)..j {
                    let src = reach[(p - 1) * (l + 1) + i];
                    if src == 0 {
                        continue;
                    }
                    for (o, &deg) in tab.degree.iter().enumerate() {
                        if tab.at(i, j, o) <= tau {
                            acc |= (src << deg) & mask;
                        }
                    }
                }
                reach[p * (l + 1) + j] = acc;
            }
        }
        let depths = match self.fixed {
            Some(p) => p..=p,
            None => 1..=self.p_max,
        };
        depths.into_iter().any(|p| {
            let r = reach[p * (l + 1) + l];
            if self.opts.exact_devices {
                (r >> g) & 1 == 1
            } else {
                r != 0
            }
        })
    }

    // ---------------------------------------------------------------- uniform degree

    /// Whether `p` stages of degree slot `o` satisfy the device rule.
    fn uniform_depth_ok(&self, o: usize, p: usize) -> bool {
        let d = p * self.tab.degree[o];
        d <= self.g && (!self.opts.exact_devices || d == self.g)
    }

    /// §2.4's uniform variant: one degree, so the device count is `p·tp` and drops out of the
    /// state; a classic linear-partition min-max pass, then the same min-sum pass. `O(P·L²)`.
    fn solve_uniform(&self) -> Option<(f64, Cuts)> {
        let u = self.uniform_min_max(0, self.p_max, self.fixed);
        let l = self.l;
        let tau_by_p: Vec<f64> = (0..=self.p_max)
            .map(|p| {
                if p >= 1 && self.uniform_depth_ok(0, p) {
                    u[p * (l + 1) + l]
                } else {
                    f64::INFINITY
                }
            })
            .collect();
        let (tau, p_tab, fixed) = self.choose_depth(&tau_by_p)?;
        let stages = self.uniform_min_sum(0, tau, p_tab, fixed)?;
        Some((tau, stages))
    }

    /// Pass 1 of the uniform variant on degree slot `o`: `U[p][j]` = smallest bottleneck of
    /// layers `[0, j)` in `p` stages. With a free depth one run serves every depth at once.
    fn uniform_min_max(&self, o: usize, p_max: usize, fixed: Option<usize>) -> Vec<f64> {
        let (l, tab) = (self.l, &self.tab);
        let mut u = vec![f64::INFINITY; (p_max + 1) * (l + 1)];
        u[0] = 0.0;
        for p in 1..=p_max {
            let (before, after) = u.split_at_mut(p * (l + 1));
            let prev = &before[(p - 1) * (l + 1)..];
            for j in p..=fixed.map_or(l, |pf| l - (pf - p)) {
                let mut best = f64::INFINITY;
                for i in (p - 1).max(tab.first_fit[j])..j {
                    let c = prev[i].max(tab.at(i, j, o));
                    if c < best {
                        best = c;
                    }
                }
                after[j] = best;
            }
        }
        u
    }

    /// Pass 2 of the uniform variant: the smallest sum with every stage `≤ tau`, earliest cut on
    /// ties, over depth `fixed` (or the best depth up to `p_tab`, fewest stages on ties).
    fn uniform_min_sum(
        &self,
        o: usize,
        tau: f64,
        p_tab: usize,
        fixed: Option<usize>,
    ) -> Option<Cuts> {
        let (l, tab) = (self.l, &self.tab);
        let mut s = vec![f64::INFINITY; (p_tab + 1) * (l + 1)];
        let mut back = vec![0u16; (p_tab + 1) * (l + 1)];
        s[0] = 0.0;
        for p in 1..=p_tab {
            let (before, after) = s.split_at_mut(p * (l + 1));
            let prev = &before[(p - 1) * (l + 1)..];
            for j in p..=fixed.map_or(l, |pf| l - (pf - p)) {
                let mut best = f64::INFINITY;
                let mut arg = 0u16;
                for i in (p - 1).max(tab.first_fit[j])..j {
                    let t = tab.at(i, j, o);
                    // Exact comparison: τ is a table entry (see the module docs).
                    if t <= tau {
                        let c = prev[i] + t;
                        if c < best {
                            best = c;
                            arg = i as u16;
                        }
                    }
                }
                after[j] = best;
                back[p * (l + 1) + j] = arg;
            }
        }
        let depths = match fixed {
            Some(p) => p..=p,
            None => 1..=p_tab,
        };
        let mut end: Option<(f64, usize)> = None;
        for p in depths {
            let v = s[p * (l + 1) + l];
            if self.uniform_depth_ok(o, p) && v.is_finite() && end.is_none_or(|(bv, _)| v < bv) {
                end = Some((v, p));
            }
        }
        let (_, p_end) = end?;
        let mut stages = Vec::with_capacity(p_end);
        let mut j = l;
        for p in (1..=p_end).rev() {
            let i = usize::from(back[p * (l + 1) + j]);
            stages.push((i, j, o));
            j = i;
        }
        stages.reverse();
        Some(stages)
    }

    /// An upper bound on the min-max optimum from uniform-degree plans (each is a valid plan of
    /// the general problem when idle devices are allowed), `+∞` when none exists.
    fn uniform_upper_bound(&self) -> f64 {
        let mut ub = f64::INFINITY;
        for o in 0..self.tab.degree.len() {
            let p_max = self.p_max.min(self.g / self.tab.degree[o]);
            if p_max == 0 || self.fixed.is_some_and(|pf| pf > p_max) {
                continue;
            }
            let p_run = self.fixed.unwrap_or(p_max);
            let u = self.uniform_min_max(o, p_run, self.fixed);
            let depths = match self.fixed {
                Some(p) => p..=p,
                None => 1..=p_max,
            };
            for p in depths {
                ub = ub.min(u[p * (self.l + 1) + self.l]);
            }
        }
        ub
    }
}
