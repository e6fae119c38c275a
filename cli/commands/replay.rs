//! `plexserve replay`: send the instance's workload to a server as real HTTP requests, on schedule.

use std::path::Path;

use plexserve_executor::{replay_blocking, write_records_csv, ExecutorError, ReplayOptions};

use super::{load_instance, print_json, write_csv};
use crate::Exit;

pub fn run(
    instance: &Path,
    target: &str,
    json: bool,
    requests_out: Option<&Path>,
) -> Result<(), Exit> {
    let inst = load_instance(instance)?;
    let trace = inst.workload.generate(inst.base_dir())?;
    let (report, records) = replay_blocking(&inst, &trace, target, &ReplayOptions::default())
        .map_err(|e| {
            let code = if matches!(e, ExecutorError::Replay(_)) {
                2
            } else {
                1
            };
            Exit {
                code,
                message: e.to_string(),
            }
        })?;
    if let Some(path) = requests_out {
        write_csv(path, |w| write_records_csv(&inst, &records, w))?;
    }
    if json {
        return print_json(&report);
    }
    println!("target      {}", report.target);
    println!("attainment  {:.4}", report.slo_attainment);
    println!(
        "requests    {} ({} good, {} rejected, {} late, {} errors; {} trimmed at each end)",
        report.requests,
        report.good,
        report.rejected,
        report.late,
        report.errors,
        report.trimmed_each_end
    );
    let l = &report.latency_s;
    println!(
        "latency     mean {:.4} s  p50 {:.4}  p90 {:.4}  p99 {:.4}",
        l.mean, l.p50, l.p90, l.p99
    );
    println!("{:<24} {:>9} {:>10}", "model", "requests", "attainment");
    for (name, m) in &report.per_model {
        println!("{name:<24} {:>9} {:>10.4}", m.requests, m.slo_attainment);
    }
    let statuses: Vec<String> = report
        .status_counts
        .iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect();
    println!("statuses    {}", statuses.join(", "));
    Ok(())
}
