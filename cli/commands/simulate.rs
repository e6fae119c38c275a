//! `plexserve simulate`: run a plan through the simulator on the instance's workload.

use std::path::Path;

use plexserve_solver::sim::{request_rows, write_requests_csv};
use plexserve_solver::{PlanFile, Simulator};

use super::{load_instance, write_csv};
use crate::Exit;

pub fn run(
    instance: &Path,
    plan: &Path,
    json: bool,
    requests_out: Option<&Path>,
) -> Result<(), Exit> {
    let inst = load_instance(instance)?;
    let plan_file = PlanFile::load(plan)?;
    let schedule = plan_file.resolve(plan, &inst)?;
    let trace = inst.workload.generate(inst.base_dir())?;
    let mut sim = Simulator::new(&inst, &trace);
    if let Some(d) = plan_file.dispatch {
        sim.config.dispatch = d;
    }
    let (report, outcomes) = sim.report(&schedule);
    if let Some(path) = requests_out {
        write_csv(path, |w| {
            write_requests_csv(&request_rows(&sim, &outcomes), w)
        })?;
    }
    if json {
        print!("{}", report.to_json());
        return Ok(());
    }
    println!("attainment  {:.4}", report.slo_attainment);
    println!(
        "requests    {} ({} good, {} rejected, {} late; {} trimmed at each end)",
        report.requests, report.good, report.rejected, report.late, report.trimmed_each_end
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
    println!("{:<6} {:>9} {:>9}", "group", "requests", "good");
    for (g, gr) in report.per_group.iter().enumerate() {
        println!("{g:<6} {:>9} {:>9}", gr.requests, gr.good);
    }
    Ok(())
}
