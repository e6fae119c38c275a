//! `plexserve solve`: find a placement, predict its attainment, write the plan.

use std::path::Path;

use plexserve_solver::{
    by_name, parse_placer_spec, placer::DEFAULT_PLACER, PlanFile, Predicted, Simulator, SolveInfo,
};

use super::{load_instance, with_threads, write_file};
use crate::args::SearchArgs;
use crate::progress::Bar;
use crate::Exit;

pub fn run(
    instance: &Path,
    placer: Option<&str>,
    output: Option<&Path>,
    json: bool,
    search: &SearchArgs,
) -> Result<(), Exit> {
    let inst = load_instance(instance)?;
    let spec = placer.unwrap_or(DEFAULT_PLACER);
    let (name, params) = parse_placer_spec(spec).map_err(|e| Exit::input(e.to_string()))?;
    let placer = by_name(&name).map_err(|e| Exit::input(e.to_string()))?;
    let opts = search.place_options(params)?;
    let trace = inst.workload.generate(inst.base_dir())?;
    let bar = Bar::new(&format!("solve {spec}"));
    let solved = with_threads(search.threads, || placer.place(&inst, &trace, &opts, &bar))??;
    bar.finish();
    let mut sim = Simulator::new(&inst, &trace);
    if let Some(d) = solved.dispatch {
        sim.config.dispatch = d;
    }
    let (report, _) = sim.report(&solved.schedule);
    let mut plan = PlanFile::from_schedule(&inst, spec, &solved.schedule);
    plan.dispatch = solved.dispatch;
    plan.predicted = Some(Predicted {
        slo_attainment: report.slo_attainment,
        requests: report.requests,
        good: report.good,
    });
    plan.solve = Some(SolveInfo {
        status: solved.status,
        time_s: solved.time_s,
        evaluations: solved.evaluations,
        objective: solved.objective,
        bound: solved.bound,
        gap: solved.gap,
        time_limited: solved.time_limited,
    });
    let text = plan.to_json();
    if let Some(out) = output {
        write_file(out, &text)?;
    }
    if json {
        print!("{text}");
        return Ok(());
    }
    println!("instance     {}", inst.name);
    println!("placer       {spec}");
    println!(
        "solve        {:?}, {:.3} s, {} evaluations",
        solved.status, solved.time_s, solved.evaluations
    );
    println!(
        "attainment   {:.4}  ({} of {} requests within SLO, {} trimmed at each end)",
        report.slo_attainment, report.good, report.requests, report.trimmed_each_end
    );
    for (k, seg) in plan.segments.iter().enumerate() {
        if plan.segments.len() > 1 {
            println!("segment {k} from {:.1} s", seg.start_s);
        }
        println!(
            "  {:>5}  {:>3}  {:>3}  {:<14}  models",
            "group", "pp", "tp", "devices"
        );
        for (g, gr) in seg.groups.iter().enumerate() {
            let devices = match (gr.devices.first(), gr.devices.last()) {
                (Some(a), Some(b)) if gr.devices.len() > 1 => format!("{a}-{b}"),
                (Some(a), _) => a.to_string(),
                _ => String::new(),
            };
            println!(
                "  {g:>5}  {:>3}  {:>3}  {devices:<14}  {}",
                gr.pp,
                gr.tp,
                gr.models.join(" ")
            );
        }
    }
    if output.is_none() {
        eprintln!("(plan not written: pass -o PLAN to save it)");
    }
    Ok(())
}
