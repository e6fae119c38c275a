//! Simulated versus measured attainment: the same instance, plan and arrivals through the
//! simulator and through a real server (loopback HTTP, open-loop replay).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use plexserve_solver::{
    single_device_latency_s, Group, Instance, Placement, Schedule, SimReport, Simulator, Trace,
};

use crate::error::{ExecutorError, Result};
use crate::http::{serve, HttpOptions};
use crate::metrics::{StageCounts, StageTimeRatios};
use crate::replay::{replay, ReplayOptions, ReplayReport};
use crate::runner::{CpuRunner, LayerRunner, LayerSpec, StageCalibration, StageRunner};

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

/// One fidelity measurement: the simulator's prediction and what the server did.
#[derive(Debug, Clone)]
pub struct FidelityRun {
    pub simulated: SimReport,
    pub measured: ReplayReport,
    /// How the stages kept to their profile while serving.
    pub stages: StageCounts,
    /// Measured ÷ profiled time of every stage run.
    pub stage_ratios: StageTimeRatios,
}

impl FidelityRun {
    /// Measured minus simulated attainment, in percentage points.
    pub fn gap_points(&self) -> f64 {
        (self.measured.slo_attainment - self.simulated.slo_attainment) * 100.0
    }

    /// Whether other processes disturbed the devices during the run, so that it measures the
    /// machine rather than the server: more than 15 % of stages ran over their profile, or one
    /// stage ran over by more than `stage_s` (a stall makes every request queued behind it late).
    pub fn disturbed(&self, stage_s: f64) -> bool {
        let overrun = self.stages.overruns as f64 / self.stages.stages.max(1) as f64;
        overrun > 0.15 || self.stages.max_overrun_s > stage_s
    }
}

/// Serves `schedule` on a loopback port with `runner`, replays `trace` against it, and returns
/// the simulator's report next to the measured one (both trimmed the same way).
pub async fn simulate_and_measure(
    inst: &Instance,
    schedule: &Schedule,
    trace: &Trace,
    runner: Arc<dyn StageRunner>,
) -> Result<FidelityRun> {
    let (sim, _) = Simulator::new(inst, trace).report(schedule);
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let (listener, addr, exec) = crate::deploy(inst, schedule, runner, loopback).await?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(
        listener,
        exec.clone(),
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
    Ok(FidelityRun {
        simulated: sim,
        measured: measured?.0,
        stages: exec.metrics().stages(),
        stage_ratios: exec.metrics().stage_time_ratios(),
    })
}

/// A 2-device, pp-2 pipeline for checking the CPU runner against the simulator: the runner is
/// calibrated the way it will serve (both devices busy at once, one core each) and the instance's
/// profile is that calibration, so the simulator and the server talk about the same devices.
#[derive(Debug)]
pub struct CpuPipeline {
    pub runner: Arc<CpuRunner>,
    pub calibration: StageCalibration,
}

impl CpuPipeline {
    /// Calibrates stages of about `target_stage_s` made of `spec`'s layers: `repeats` stages on
    /// each of the 2 devices at once; the profile is the `quantile` of those durations. Needs
    /// headroom 1 in `spec` for the runner to run exactly the profiled layers.
    pub fn calibrate(
        spec: LayerSpec,
        target_stage_s: f64,
        repeats: usize,
        quantile: f64,
    ) -> Result<CpuPipeline> {
        let mut runner = CpuRunner::new(spec, &[1])?;
        let layer_s = runner
            .layer_time_s(1)
            .ok_or_else(|| ExecutorError::Unsupported("cpu runner: no layer time".into()))?;
        // Size the stage with both devices busy (a short probe), so that it lasts about
        // `target_stage_s` under serving conditions, then profile it.
        let guess = (target_stage_s / layer_s).ceil().max(2.0) as usize;
        let probe = runner.calibrate_stage(1, guess, 2, 3, 0.5)?;
        let layer_busy_s = probe.stage_s / guess as f64;
        let layers = (target_stage_s / layer_busy_s).round().max(2.0) as usize;
        let calibration = runner.calibrate_stage(1, layers, 2, repeats, quantile)?;
        Ok(CpuPipeline {
            runner: Arc::new(runner),
            calibration,
        })
    }

    /// Fits the profile to serving conditions. A stage served between idle gaps, handed over
    /// between threads, next to the HTTP server and the load generator, runs 5–25 % slower than
    /// the same stage in a back-to-back calibration loop (measured on 2-core machines, quiet or
    /// not), and a profile that low makes most served stages overrun it. So: serve a pilot run
    /// of [`CpuPipeline::instance`]`(slo_scale, load, cv, duration_s, seed)` and scale the
    /// profile, and the runner's layer time with it so stages keep their layer count, by the
    /// `quantile` of the measured ÷ profiled stage times (unchanged when the SLO let no request
    /// in). Returns the pilot run.
    pub async fn fit_to_serving(
        &mut self,
        slo_scale: f64,
        load: f64,
        cv: f64,
        duration_s: f64,
        seed: u64,
        quantile: f64,
    ) -> Result<FidelityRun> {
        let inst = self.instance(slo_scale, load, cv, duration_s, seed)?;
        let trace = inst.workload.generate(inst.base_dir())?;
        let pilot =
            simulate_and_measure(&inst, &Self::schedule(), &trace, self.runner.clone()).await?;
        // No stage ran (an SLO no request can meet): nothing is served, so nothing to fit.
        let factor = match pilot.stage_ratios.quantile(quantile) {
            None => return Ok(pilot),
            Some(f) if f.is_finite() => f,
            Some(_) => {
                return Err(ExecutorError::Unsupported(format!(
                    "cpu pipeline: more than {:.0} % of the pilot's {} stages ran over 4× their profile",
                    (1.0 - quantile) * 100.0,
                    pilot.stages.stages
                )))
            }
        };
        self.calibration.stage_s *= factor;
        self.runner.scale_layer_time(1, factor);
        Ok(pilot)
    }

    /// Requests per second the pipeline sustains (one stage time per request).
    pub fn capacity_rps(&self) -> f64 {
        1.0 / self.calibration.stage_s
    }

    /// Two models sharing the pipeline, each sending gamma(`cv`) arrivals at `load / 2` of the
    /// capacity, with SLO = `slo_scale` × the profiled single-device latency (two stage times).
    /// `warmup_s` is trimmed from each end of the reports.
    pub fn instance(
        &self,
        slo_scale: f64,
        load: f64,
        cv: f64,
        duration_s: f64,
        seed: u64,
    ) -> Result<Instance> {
        let stage_s = self.calibration.stage_s;
        let rate = 0.5 * load * self.capacity_rps();
        let text = format!(
            r#"{{ "schema": "plexserve/instance/v1", "name": "cpu-pipeline-2dev",
  "cluster": {{ "devices": 2, "memory_budget_gib": 1.0 }},
  "profiles": {{ "cpu-layers": {{ "batch_sizes": [1], "configs": [
    {{ "pp": 1, "tp": 1, "stage_latency_s": [[{l1}]], "stage_weight_gib": [0.01] }},
    {{ "pp": 2, "tp": 1, "stage_latency_s": [[{stage_s}, {stage_s}]], "stage_weight_gib": [0.005, 0.005] }} ] }} }},
  "models": [ {{ "name": "a", "profile": "cpu-layers", "slo_scale": {slo_scale} }},
              {{ "name": "b", "profile": "cpu-layers", "slo_scale": {slo_scale} }} ],
  "workload": {{ "kind": "gamma", "duration_s": {duration_s}, "seed": {seed},
    "streams": [ {{ "model": "a", "rate": {rate}, "cv": {cv} }}, {{ "model": "b", "rate": {rate}, "cv": {cv} }} ] }},
  "simulator": {{ "pp_penalty": 0, "warmup_s": {warmup} }} }}"#,
            l1 = 2.0 * stage_s,
            warmup = (0.1 * duration_s).min(2.0),
        );
        Ok(Instance::from_json(
            "cpu-pipeline-2dev.json".as_ref(),
            &text,
        )?)
    }

    /// The plan: one pp-2 group over both devices serving both models.
    pub fn schedule() -> Schedule {
        Schedule::fixed(Placement {
            groups: vec![Group {
                pp: 2,
                tp: 1,
                devices: vec![0, 1],
                models: vec![0, 1],
            }],
        })
    }
}
