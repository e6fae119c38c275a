//! Shared helpers of the executor tests: small instances built in memory, a loopback server.

#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use plexserve_executor::{
    bind, serve, Clock, Executor, ExecutorOptions, HttpOptions, RealClock, StageRunner,
};
use plexserve_solver::{Instance, PlanFile, Schedule};

pub fn repo_root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// The tiny two-model instance and its plan (2 groups of pp 2 over 4 devices).
pub fn tiny() -> (Instance, Schedule) {
    let ipath = repo_root().join("instances/tiny/two-test-models.json");
    let ppath = repo_root().join("instances/tiny/two-test-models.plan.json");
    let inst = Instance::load(&ipath).expect("tiny instance");
    let schedule = PlanFile::load(&ppath)
        .expect("tiny plan")
        .resolve(&ppath, &inst)
        .expect("tiny plan resolves");
    (inst, schedule)
}

/// The tiny instance with another workload (gamma streams of `rate` per model).
pub fn tiny_with_workload(rate: f64, cv: f64, duration_s: f64, seed: u64) -> (Instance, Schedule) {
    let (inst, schedule) = tiny();
    let text = format!(
        r#"{{ "schema": "plexserve/instance/v1", "name": "two-test-models",
  "cluster": {{ "devices": 4, "memory_budget_gib": 4.5, "devices_per_node": 8 }},
  "profiles": {{ "test-2gb-100ms": {{ "batch_sizes": [1], "configs": [
    {{ "pp": 1, "tp": 1, "stage_latency_s": [[0.100]], "stage_weight_gib": [2.0] }},
    {{ "pp": 2, "tp": 1, "stage_latency_s": [[0.051, 0.051]], "stage_weight_gib": [1.0, 1.0] }} ] }} }},
  "models": [ {{ "name": "m0", "profile": "test-2gb-100ms", "slo_s": 1.0 }},
              {{ "name": "m1", "profile": "test-2gb-100ms", "slo_scale": 5.0 }} ],
  "workload": {{ "kind": "gamma", "duration_s": {duration_s}, "seed": {seed},
    "streams": [ {{ "model": "m0", "rate": {rate}, "cv": {cv} }}, {{ "model": "m1", "rate": {rate}, "cv": {cv} }} ] }},
  "simulator": {{ "dispatch": "earliest_last_stage", "overhead_s": 0.011, "pp_penalty": 0.009, "warmup_s": 0 }} }}"#
    );
    let inst2 = Instance::from_json(&inst.file, &text).expect("test instance");
    (inst2, schedule)
}

/// A running loopback server over `exec`; dropping the handle does not stop it, `stop` does.
pub struct Server {
    pub url: String,
    pub exec: Arc<Executor>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<plexserve_executor::Result<()>>>,
}

impl Server {
    /// The plan served by the emulating runner with default options.
    pub async fn emulated(inst: &Instance, schedule: &Schedule) -> Server {
        let runner = Arc::new(plexserve_executor::EmulateRunner);
        let (opts, http) = (ExecutorOptions::default(), HttpOptions::default());
        Server::start(inst, schedule, runner, opts, http).await
    }

    pub async fn start(
        inst: &Instance,
        schedule: &Schedule,
        runner: Arc<dyn StageRunner>,
        opts: ExecutorOptions,
        http: HttpOptions,
    ) -> Server {
        let clock: Arc<dyn Clock> = Arc::new(RealClock::new());
        let exec =
            Arc::new(Executor::start(inst, schedule, runner, clock, &opts).expect("deploys"));
        let listener = bind("127.0.0.1:0".parse().unwrap())
            .await
            .expect("binds loopback");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(serve(
            listener,
            exec.clone(),
            http,
            async move {
                let _ = rx.await;
            },
            Duration::from_secs(20),
        ));
        Server {
            url,
            exec,
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// Graceful stop: no new connections, accepted requests finish, workers stop.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            let r = tokio::time::timeout(Duration::from_secs(30), t)
                .await
                .expect("server stops within 30 s");
            r.expect("server task").expect("server ran cleanly");
        }
    }
}

/// Value of a metric line `name{labels} value` summed over all label sets matching `filter`.
pub fn metric_sum(text: &str, name: &str, filter: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter(|l| l.contains(filter))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
