//! `plexserve partition`: the exact stage DP on one model of a profile or instance file.

use std::path::Path;

use plexserve_solver::{
    parse_json, partition, read_file, Instance, PartitionOptions, Profile, ProfileFile,
    StageObjective, StagePlan, INSTANCE_SCHEMA, PROFILE_SCHEMA,
};
use serde::Serialize;

use super::print_json;
use crate::Exit;

/// Options of one `partition` call, as given on the command line.
pub struct PartitionArgs<'a> {
    pub file: &'a Path,
    pub model: &'a str,
    pub devices: u32,
    pub pp: Option<u32>,
    pub tp: Option<u32>,
    pub objective: &'a str,
    pub memory_budget_gib: Option<f64>,
    pub link_gib_per_s: Option<f64>,
    pub json: bool,
}

/// `--json` output (`plexserve/partition/v1`).
#[derive(Serialize)]
struct Report<'a> {
    schema: &'static str,
    model: &'a str,
    profile: &'a str,
    devices: u32,
    memory_budget_gib: f64,
    #[serde(flatten)]
    plan: &'a StagePlan,
}

/// Just the schema field, to tell a profile file from an instance file before full parsing.
#[derive(serde::Deserialize)]
struct Schema {
    schema: String,
}

pub fn run(a: &PartitionArgs) -> Result<(), Exit> {
    let objective = StageObjective::parse(a.objective).ok_or_else(|| {
        Exit::input(format!(
            "--objective: expected min-max or alpa, found \"{}\"",
            a.objective
        ))
    })?;
    let text = read_file(a.file)?;
    let value: serde_json::Value = parse_json(a.file, &text)?;
    let schema = serde_json::from_value::<Schema>(value)
        .map(|s| s.schema)
        .map_err(|_| {
            Exit::input(format!(
                "{}: at schema: expected a schema string",
                a.file.display()
            ))
        })?;
    // Resolve the profile, its name, and the cluster-derived defaults of the options.
    let (profile, profile_name, mut opts): (Profile, String, PartitionOptions) = if schema
        == PROFILE_SCHEMA
    {
        let file = ProfileFile::from_json(a.file, &text)?;
        let Some(profile) = file.profiles.get(a.model) else {
            return Err(Exit::input(format!(
                "{}: no profile \"{}\"; the file defines: {}",
                a.file.display(),
                a.model,
                file.profiles.keys().cloned().collect::<Vec<_>>().join(", ")
            )));
        };
        let budget = a.memory_budget_gib.ok_or_else(|| {
            Exit::input("a profile file has no memory budget: give --memory-budget-gib")
        })?;
        (
            profile.clone(),
            a.model.to_string(),
            PartitionOptions::new(a.devices, budget),
        )
    } else if schema == INSTANCE_SCHEMA {
        let inst = Instance::from_json(a.file, &text)?;
        let p = match inst.model_id(a.model) {
            Some(m) => inst.models[m].profile,
            None => inst
                .profile_names
                .iter()
                .position(|n| n == a.model)
                .ok_or_else(|| {
                    Exit::input(format!(
                        "{}: \"{}\" is neither a model nor a profile of the instance",
                        a.file.display(),
                        a.model
                    ))
                })?,
        };
        let mut opts = PartitionOptions::for_cluster(&inst.cluster, a.devices);
        if let Some(b) = a.memory_budget_gib {
            opts.memory_budget_gib = b;
        }
        (
            inst.profiles[p].clone(),
            inst.profile_names[p].clone(),
            opts,
        )
    } else {
        let what = plexserve_solver::document_kind(&schema)
            .map_or(String::new(), |k| format!(": the file is {k}"));
        return Err(Exit::input(format!(
            "{}: at schema: expected \"{PROFILE_SCHEMA}\" or \"{INSTANCE_SCHEMA}\", found \"{schema}\"{what}",
            a.file.display()
        )));
    };
    opts.pp = a.pp;
    opts.tp = a.tp;
    opts.objective = objective;
    if let Some(bw) = a.link_gib_per_s {
        opts.link_gib_per_s = Some(bw);
    }
    let plan = partition(&profile, &opts)?;
    if a.json {
        let report = Report {
            schema: "plexserve/partition/v1",
            model: a.model,
            profile: &profile_name,
            devices: a.devices,
            memory_budget_gib: opts.memory_budget_gib,
            plan: &plan,
        };
        return print_json(&report);
    }
    println!(
        "model {}  profile {profile_name}  devices {} (using {})  budget {} GiB/device  objective {}  batch size {}",
        a.model,
        a.devices,
        plan.devices_used,
        opts.memory_budget_gib,
        objective.name(),
        plan.batch_size
    );
    println!(
        "{:<6} {:>12} {:>4} {:>12} {:>12}",
        "stage", "layers", "tp", "latency_s", "weight_gib"
    );
    for (k, s) in plan.stages.iter().enumerate() {
        let b = profile
            .batch_sizes
            .iter()
            .position(|&x| x == plan.batch_size)
            .unwrap_or(0);
        println!(
            "{k:<6} {:>12} {:>4} {:>12.6} {:>12.4}",
            format!("[{}, {})", s.start, s.end),
            s.tp,
            s.latency_s[b],
            s.weight_gib
        );
    }
    println!("bottleneck  {:.6} s", plan.bottleneck_s);
    println!("sum         {:.6} s", plan.total_s);
    if objective == StageObjective::Alpa {
        println!(
            "objective   {:.6} s (stages × bottleneck)",
            plan.objective_s
        );
    }
    Ok(())
}
