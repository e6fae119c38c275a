//! Command-line arguments (contract.md §1).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "plexserve", version, about = "Place many models on a GPU cluster with model parallelism, simulate the plan, serve it.")]
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
    /// List the placers.
    Placers {
        #[arg(long)]
        json: bool,
    },
}
