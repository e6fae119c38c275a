//! Simulated versus measured attainment: the same instance, plan and arrivals through the
//! simulator and through a real server (loopback HTTP, open-loop replay).

use std::sync::Arc;
use std::time::Duration;

use plexserve_solver::{single_device_latency_s, Instance, Schedule, SimReport, Simulator, Trace};

use crate::clock::RealClock;
use crate::error::{ExecutorError, Result};
use crate::executor::{Executor, ExecutorOptions};
use crate::http::{bind, serve, HttpOptions};
use crate::replay::{replay, ReplayOptions, ReplayReport};
use crate::runner::StageRunner;

/// `inst` with every model's SLO set to `scale` × its single-device batch-1 latency.
pub fn with_slo_scale(inst: &Instance, scale: f64) -> Result<Instance> {
    let mut out = inst.clone();
    for (m, model) in out.models.iter_mut().enumerate() {
        let base = single_device_latency_s(inst.profile_of(m)).ok_or_else(|| {
            ExecutorError::Unsupported(format!(
                "model {} has no single-device latency to scale",
                model.name
            ))
        })?;
        model.slo_s = scale * base;
    }
    Ok(out)
}

/// Serves `schedule` on a loopback port with `runner`, replays `trace` against it, and returns
/// the simulator's report next to the measured one (both trimmed the same way).
pub async fn simulate_and_measure(
    inst: &Instance,
    schedule: &Schedule,
    trace: &Trace,
    runner: Arc<dyn StageRunner>,
) -> Result<(SimReport, ReplayReport)> {
    let (sim, _) = Simulator::new(inst, trace).report(schedule);
    let listener = bind("127.0.0.1:0".parse().expect("literal address")).await?;
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
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(
        listener,
        exec,
        HttpOptions::default(),
        async move {
            let _ = stop_rx.await;
        },
        Duration::from_secs(30),
    ));
    let measured = replay(
        inst,
        trace,
        &format!("http://{addr}"),
        &ReplayOptions::default(),
    )
    .await;
    let _ = stop_tx.send(());
    let _ = server.await;
    Ok((sim, measured?.0))
}
