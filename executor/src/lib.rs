//! plexserve-executor: deploys a plan and serves real traffic.
//!
//! Admission and dispatch are the simulator's own [`Controller`](plexserve_solver::sim::Controller)
//! (a deterministic state machine) driven by an injected [`Clock`]; the stages run behind a
//! [`StageRunner`] (emulated, CPU, CUDA). The same plan, instance and arrivals therefore give the
//! server the simulator's decisions, which is what the fidelity tests check.
//!
//! ```no_run
//! use std::sync::Arc;
//! use plexserve_executor::{Executor, ExecutorOptions, EmulateRunner, RealClock};
//! use plexserve_solver::{Instance, PlanFile};
//! let inst = Instance::load("instances/tiny/two-test-models.json".as_ref()).unwrap();
//! let plan = "instances/tiny/two-test-models.plan.json";
//! let schedule = PlanFile::load(plan.as_ref()).unwrap().resolve(plan.as_ref(), &inst).unwrap();
//! let exec = Executor::start(&inst, &schedule, Arc::new(EmulateRunner), Arc::new(RealClock::new()),
//!                            &ExecutorOptions::default()).unwrap();
//! let rt = tokio::runtime::Runtime::new().unwrap();
//! let served = rt.block_on(exec.infer(0, None)).unwrap();
//! println!("{} s on group {}", served.latency_s, served.ticket.global_group);
//! ```

mod clock;
mod core;
mod error;
mod executor;
mod fidelity;
mod http;
mod metrics;
mod replay;
mod runner;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use plexserve_solver::{Instance, Schedule};

pub use crate::clock::{Clock, ManualClock, RealClock};
pub use crate::core::{Admission, AdmissionCore, RejectReason, Ticket};
pub use crate::error::{ExecutorError, Result};
pub use crate::executor::{Executor, ExecutorOptions, InferError, Pending, Served};
pub use crate::fidelity::{simulate_and_measure, with_slo_scale, CpuPipeline, FidelityRun};
pub use crate::http::{bind, router, serve, HttpOptions, InferResponse};
pub use crate::metrics::{Metrics, ModelCounts, StageCounts, StageTimeRatios, LATENCY_BUCKETS_S};
pub use crate::replay::{
    http_request, replay, replay_trace, summarize, write_records_csv, ModelSummary, ReplayOptions,
    ReplayReport, RequestRecord, Target, REPLAY_SCHEMA,
};
pub use crate::runner::{
    CpuRunner, CudaRunner, EmulateRunner, LayerRunner, LayerSpec, RunnerKind, StageCalibration,
    StageRunner, StageWork,
};

/// Builds the runner `kind` for `schedule` (the CPU and CUDA runners time one layer at every tp
/// degree the plan uses; the CUDA runner opens the GPUs its devices map to).
pub fn build_runner(
    kind: RunnerKind,
    inst: &Instance,
    schedule: &Schedule,
) -> Result<Arc<dyn StageRunner>> {
    let mut tps: Vec<usize> = schedule
        .segments
        .iter()
        .flat_map(|(_, p)| p.groups.iter().map(|g| g.tp as usize))
        .collect();
    tps.sort_unstable();
    tps.dedup();
    Ok(match kind {
        RunnerKind::Emulate => Arc::new(EmulateRunner),
        RunnerKind::Cpu => Arc::new(CpuRunner::new(LayerSpec::default(), &tps)?),
        RunnerKind::Cuda => Arc::new(CudaRunner::new(
            LayerSpec::default(),
            &tps,
            inst.cluster.devices as usize,
        )?),
    })
}

/// `plexserve serve`: deploys the plan, serves HTTP on `listen` until Ctrl-C, then drains.
/// `on_ready` gets the bound address (the CLI prints it).
pub fn serve_blocking(
    inst: &Instance,
    schedule: &Schedule,
    listen: SocketAddr,
    kind: RunnerKind,
    on_ready: impl FnOnce(SocketAddr),
) -> Result<()> {
    let runner = build_runner(kind, inst, schedule)?;
    runtime()?.block_on(async {
        let (listener, addr, exec) = deploy(inst, schedule, runner, listen).await?;
        on_ready(addr);
        let stop = async {
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("shutting down: draining accepted requests");
        };
        serve(
            listener,
            exec,
            HttpOptions::default(),
            stop,
            Duration::from_secs(60),
        )
        .await
    })
}

/// `plexserve replay`: replays the trace against `target` on a fresh runtime.
pub fn replay_blocking(
    inst: &Instance,
    trace: &plexserve_solver::Trace,
    target: &str,
    opts: &ReplayOptions,
) -> Result<(ReplayReport, Vec<RequestRecord>)> {
    runtime()?.block_on(replay(inst, trace, target, opts))
}

/// Binds `listen` and starts the executor of `schedule` with `runner` on the real clock: the
/// deployment `plexserve serve` and the fidelity check share. Returns the listener, the address
/// it is bound to (port 0 picks one) and the executor.
pub(crate) async fn deploy(
    inst: &Instance,
    schedule: &Schedule,
    runner: Arc<dyn StageRunner>,
    listen: SocketAddr,
) -> Result<(tokio::net::TcpListener, SocketAddr, Arc<Executor>)> {
    let listener = bind(listen).await?;
    let addr = listener
        .local_addr()
        .map_err(|e| ExecutorError::io("cannot read the bound address", e))?;
    let exec = Arc::new(Executor::start(
        inst,
        schedule,
        runner,
        Arc::new(RealClock::new()),
        &ExecutorOptions::default(),
    )?);
    Ok((listener, addr, exec))
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| ExecutorError::io("cannot start the async runtime", e))
}
