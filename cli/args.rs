//! Command-line arguments (contract.md §1).

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use plexserve_solver::PlaceOptions;

#[derive(Debug, Parser)]
#[command(
    name = "plexserve",
    version,
    about = "Place many models on a GPU cluster with model parallelism, simulate the plan, serve it."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Options of every command that searches.
#[derive(Debug, Clone, Args)]
pub struct SearchArgs {
    /// Worker threads for parallel candidate evaluation (default: all cores). Results do not depend on it.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Wall-clock limit of the search in seconds; a stopped search says so in the plan.
    #[arg(long = "time-limit-s")]
    pub time_limit_s: Option<f64>,
    /// Seed of every random choice.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

impl SearchArgs {
    /// The placer options these flags give, with `params` from the placer's name; a time limit
    /// that is not a positive number is refused.
    pub fn place_options(
        &self,
        params: BTreeMap<String, String>,
    ) -> Result<PlaceOptions, crate::Exit> {
        if let Some(l) = self.time_limit_s {
            if !(l.is_finite() && l > 0.0) {
                return Err(crate::Exit::input(format!(
                    "--time-limit-s: expected a positive number, found {l}"
                )));
            }
        }
        Ok(PlaceOptions {
            time_limit_s: self.time_limit_s,
            seed: self.seed,
            params,
        })
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Find a placement for an instance and write the plan.
    Solve {
        instance: PathBuf,
        /// Placer name, optionally with options: NAME[:key=value,...] (see `plexserve placers`).
        #[arg(long)]
        placer: Option<String>,
        /// Where to write the plan (default: stdout unless --json).
        #[arg(short = 'o', long = "output")]
        output: Option<PathBuf>,
        /// Print one JSON document (the plan) on stdout.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        search: SearchArgs,
    },
    /// Simulate a plan on an instance's workload.
    Simulate {
        instance: PathBuf,
        #[arg(long)]
        plan: PathBuf,
        #[arg(long)]
        json: bool,
        /// Write one CSV row per request.
        #[arg(long = "requests-out")]
        requests_out: Option<PathBuf>,
    },
    /// Run several placers over sweeps of one instance parameter; write a TSV and SVG/PNG plots.
    Compare {
        #[arg(required_unless_present = "replot")]
        instance: Option<PathBuf>,
        /// Placers, comma-separated, each NAME[:key=value,...] (see `plexserve placers`).
        #[arg(long, required_unless_present = "replot")]
        placers: Vec<String>,
        /// AXIS=V1,V2,... with AXIS one of devices, rate_scale, cv_scale, slo_scale, models
        /// (rate and cv scales are factors on the instance's); repeat for one plot per axis.
        #[arg(long)]
        sweep: Vec<String>,
        /// Folder for INSTANCE.tsv and INSTANCE-AXIS.svg/.png.
        #[arg(short = 'o', long = "output", default_value = ".")]
        output: PathBuf,
        /// Print one JSON document (every row) on stdout.
        #[arg(long)]
        json: bool,
        /// Redraw the plots of a TSV written by compare, without solving anything.
        #[arg(long, conflicts_with_all = ["instance", "placers", "sweep"])]
        replot: Option<PathBuf>,
        #[command(flatten)]
        search: SearchArgs,
    },
    /// Deploy a plan and serve it over HTTP (Ctrl-C drains and stops).
    Serve {
        instance: PathBuf,
        #[arg(long)]
        plan: PathBuf,
        /// Address to listen on; loopback unless told otherwise.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
        /// Stage runner: emulate (profiled latencies), cpu (real transformer layers), cuda.
        #[arg(long, default_value = "emulate")]
        runner: String,
    },
    /// Send the instance's workload to a server as open-loop HTTP requests and report attainment.
    Replay {
        instance: PathBuf,
        /// Base URL of the server, e.g. http://127.0.0.1:8080.
        #[arg(long)]
        target: String,
        #[arg(long)]
        json: bool,
        /// Write one CSV row per request.
        #[arg(long = "requests-out")]
        requests_out: Option<PathBuf>,
    },
    /// Measure (cpu, cuda:K) or predict (analytic:NAME) per-layer latencies of a model spec.
    Profile {
        /// cpu, cuda:K, or analytic:NAME (v100-16gb, a100-40gb, a100-80gb, h100-80gb, h200).
        #[arg(long)]
        device: String,
        /// Model spec file (plexserve/model-spec/v1), e.g. instances/specs/bert-1.3b.json.
        #[arg(long)]
        model: PathBuf,
        /// Where to write the profile file.
        #[arg(short = 'o', long = "output")]
        output: Option<PathBuf>,
        /// Print the profile file on stdout.
        #[arg(long)]
        json: bool,
        /// Unmeasured runs of each operator.
        #[arg(long, default_value_t = 2)]
        warmup: usize,
        /// Measured runs of each operator (the median is kept).
        #[arg(long, default_value_t = 7)]
        repeats: usize,
        /// Bus bandwidth of tensor-parallel collectives, 1e9 bytes/s (default: the GPU's for analytic devices, 150 otherwise).
        #[arg(long = "link-gb-per-s")]
        link_gb_per_s: Option<f64>,
        /// Latency of each ring step of a collective, microseconds.
        #[arg(long = "link-latency-us")]
        link_latency_us: Option<f64>,
        /// Element type of GPU kernels and of weight/activation sizes: f32, f16, bf16 (default: the spec's).
        #[arg(long)]
        dtype: Option<String>,
        /// Worker threads of the CPU kernels (default: one per core).
        #[arg(long)]
        threads: Option<usize>,
        /// Profile RUNS times and report how far apart the runs' per-layer medians are.
        #[arg(long, value_name = "RUNS")]
        repeatability: Option<usize>,
        /// Scale the profile to another run's machine speed: that profile's
        /// source.software.speed-probe-us (the speed probe's 8 times, comma-separated).
        #[arg(long = "probe-reference-us", value_name = "US,US,...")]
        probe_reference_us: Option<String>,
    },
    /// Build an instance file from profile files: copies of every profiled model on a cluster,
    /// with gamma arrivals, ready for `solve`, `simulate`, `serve` and `replay`.
    Instance(InstanceArgs),
    /// What is compiled in (milp, cuda) and what hardware is present.
    Doctor {
        #[arg(long)]
        json: bool,
    },
    /// List the placers.
    Placers {
        #[arg(long)]
        json: bool,
    },
    /// Split one model's layers into pipeline stages (exact stage DP) and print the stages.
    Partition {
        /// A profile file (plexserve/profile/v1) or an instance file.
        file: PathBuf,
        /// The profile (profile file) or the model or profile (instance) to partition.
        #[arg(long)]
        model: String,
        /// Devices in the group; idle devices are allowed.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        devices: u32,
        /// Pipeline depth (default: chosen by the objective).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        pp: Option<u32>,
        /// One tensor-parallel degree for every stage (default: chosen per stage).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        tp: Option<u32>,
        /// min-max: smallest bottleneck, then smallest sum; alpa: stages × bottleneck.
        #[arg(long, default_value = "min-max", value_parser = ["min-max", "alpa"])]
        objective: String,
        /// Per-device weight budget (required for a profile file; overrides an instance's).
        #[arg(long = "memory-budget-gib")]
        memory_budget_gib: Option<f64>,
        /// Inter-stage link bandwidth (overrides an instance's `cluster.link_gib_per_s`).
        #[arg(long = "link-gib-per-s")]
        link_gib_per_s: Option<f64>,
        #[arg(long)]
        json: bool,
    },
    /// LLM serving: place, simulate and compare LLMs (MuxServe, Amoeba); see `plexserve llm --help`.
    Llm {
        #[command(subcommand)]
        command: crate::commands::llm::LlmCommand,
    },
}

/// `plexserve instance`: what the instance is built from.
#[derive(Debug, clap::Args)]
pub struct InstanceArgs {
    /// A profile file (plexserve/profile/v1), e.g. from `plexserve profile`; repeatable.
    #[arg(long = "profile", required = true, value_name = "FILE")]
    pub profiles: Vec<PathBuf>,
    /// Models per profile (named PROFILE-0, PROFILE-1, …; just PROFILE when 1).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub copies: u32,
    /// Devices in the cluster.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub devices: u32,
    /// Per-device weight budget.
    #[arg(long = "memory-budget-gib")]
    pub memory_budget_gib: f64,
    /// Requests per second over all models.
    #[arg(long = "total-rate")]
    pub total_rate: f64,
    /// Spread the total rate by a power law with this exponent (rate_i ∝ (i+1)^−alpha)
    /// instead of evenly.
    #[arg(long)]
    pub alpha: Option<f64>,
    /// Coefficient of variation of inter-arrival times (1: Poisson).
    #[arg(long, default_value_t = 1.0)]
    pub cv: f64,
    /// Length of the workload.
    #[arg(long = "duration-s", default_value_t = 60.0)]
    pub duration_s: f64,
    /// Every model's SLO as a multiple of its single-device latency.
    #[arg(long = "slo-scale", default_value_t = 5.0)]
    pub slo_scale: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// The instance's name (default: the profiles' names joined by '+').
    #[arg(long)]
    pub name: Option<String>,
    /// Where to write the instance (default: stdout).
    #[arg(short = 'o', long = "output")]
    pub output: Option<PathBuf>,
}
