//! `plexserve serve`: deploy a plan and serve it over HTTP until Ctrl-C.

use std::net::SocketAddr;
use std::path::Path;

use plexserve_executor::{serve_blocking, ExecutorError, RunnerKind};
use plexserve_solver::PlanFile;

use super::load_instance;
use crate::Exit;

fn executor_exit(e: ExecutorError) -> Exit {
    let code = match &e {
        ExecutorError::Solver(s) if s.is_input_error() => 2,
        // An absent backend is a usage error, like `profile --device cuda:0` without a GPU.
        ExecutorError::Unsupported(_)
        | ExecutorError::UnknownRunner(_)
        | ExecutorError::NotCompiled { .. }
        | ExecutorError::NoDevice { .. } => 2,
        _ => 1,
    };
    Exit {
        code,
        message: e.to_string(),
    }
}

pub fn run(instance: &Path, plan: &Path, listen: &str, runner: &str) -> Result<(), Exit> {
    let mut inst = load_instance(instance)?;
    let plan_file = PlanFile::load(plan)?;
    let schedule = plan_file.resolve(plan, &inst)?;
    // A plan made for a dispatch policy (e.g. the plexserve placer's slo_aware) is served with it.
    if let Some(d) = plan_file.dispatch {
        inst.simulator.dispatch = d;
    }
    let addr: SocketAddr = listen.parse().map_err(|_| {
        Exit::input(format!(
            "--listen: expected IP:PORT (e.g. 127.0.0.1:8080), found \"{listen}\""
        ))
    })?;
    let kind: RunnerKind = runner.parse().map_err(executor_exit)?;
    serve_blocking(&inst, &schedule, addr, kind, |bound| {
        eprintln!(
            "plexserve: serving {} ({} runner) on http://{bound}",
            inst.name,
            kind.as_str()
        );
    })
    .map_err(executor_exit)
}
