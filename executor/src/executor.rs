//! Deployment of a plan: one worker thread per pipeline stage of every group (each driving its `tp`
//! devices), fed by the admission core under the executor's clock.
//!
//! Life of a request: the front end asks [`Executor::infer`]; the [`AdmissionCore`] (the
//! simulator's controller) admits or rejects it at arrival; an admitted request enters its group's
//! stage-0 FIFO, flows stage to stage, and the last stage answers it. Every stage completion is
//! reported back to the core, which pushes its projected clocks forward when real work ran longer
//! than profiled, so admission never promises what the devices can no longer deliver.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use plexserve_solver::sim::Compiled;
use plexserve_solver::{Instance, Schedule};
use tokio::sync::oneshot;

use crate::clock::{duration_s, Clock};
use crate::core::{Admission, AdmissionCore, RejectReason, Ticket};
use crate::error::{ExecutorError, Result};
use crate::metrics::Metrics;
use crate::runner::{StageRunner, StageWork};

/// Tunables of a deployment.
#[derive(Debug, Clone)]
pub struct ExecutorOptions {
    /// Most outstanding requests per group; more are rejected with `queue_full`. The deadline
    /// check already bounds queues; this bounds them even for very loose SLOs.
    pub max_inflight_per_group: u32,
    /// How long past its deadline a caller waits for an admitted request before giving up.
    pub answer_grace_s: f64,
    /// How often an idle worker checks whether it was stopped or its device failed.
    pub poll_s: f64,
}

impl Default for ExecutorOptions {
    fn default() -> Self {
        ExecutorOptions {
            max_inflight_per_group: 1024,
            answer_grace_s: 30.0,
            poll_s: 0.02,
        }
    }
}

/// A successfully served request.
#[derive(Debug, Clone, PartialEq)]
pub struct Served {
    pub id: u64,
    pub ticket: Ticket,
    /// When the last stage finished (executor clock).
    pub finish_s: f64,
    /// Answer time minus arrival, on the executor clock.
    pub latency_s: f64,
    pub good: bool,
    pub output: Option<Vec<f32>>,
}

/// Why a request got no result.
#[derive(Debug, Clone, PartialEq)]
pub enum InferError {
    /// Turned away at arrival.
    Rejected(RejectReason),
    /// Admitted, then lost its group or failed in a stage.
    Failed(String),
    /// Admitted, but no answer came within the deadline plus the grace period.
    TimedOut,
}

struct Job {
    id: u64,
    model: usize,
    ticket: Ticket,
    stage: usize,
    ready_s: f64,
    activations: Vec<f32>,
    reply: oneshot::Sender<std::result::Result<Done, String>>,
}

struct Done {
    finish_s: f64,
    output: Option<Vec<f32>>,
}

/// What workers share with the front end.
struct Shared {
    core: Mutex<AdmissionCore>,
    clock: Arc<dyn Clock>,
    runner: Arc<dyn StageRunner>,
    metrics: Metrics,
    compiled: Vec<Compiled>,
    device_alive: Vec<AtomicBool>,
    stop: AtomicBool,
    poll: Duration,
}

impl Shared {
    fn core(&self) -> MutexGuard<'_, AdmissionCore> {
        self.core.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes device `d` out of service everywhere (idempotent).
    fn device_failed(&self, d: u32) {
        if let Some(a) = self.device_alive.get(d as usize) {
            a.store(false, Ordering::SeqCst);
        }
        let hit = {
            let mut core = self.core();
            let hit = core.device_down(d);
            hit.into_iter()
                .map(|(k, g)| core.group_offset(k) + g)
                .collect::<Vec<_>>()
        };
        for g in hit {
            self.metrics.group_down(g);
        }
    }

    fn fail(&self, job: Job, from_stage: usize, why: String) {
        {
            let mut core = self.core();
            core.abandon_stages(&job.ticket, from_stage);
            core.finish(&job.ticket);
        }
        let _ = job.reply.send(Err(why));
    }
}

struct Worker {
    handle: Option<JoinHandle<()>>,
}

/// A deployed plan serving requests.
pub struct Executor {
    shared: Arc<Shared>,
    /// Stage-0 queue of every group: `[segment][group]`.
    entry: Vec<Vec<SyncSender<Job>>>,
    workers: Mutex<Vec<Worker>>,
    model_names: Vec<String>,
    slo_s: Vec<f64>,
    next_id: AtomicU64,
    grace_s: f64,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("runner", &self.shared.runner.name())
            .field("models", &self.model_names)
            .finish_non_exhaustive()
    }
}

impl Executor {
    /// Deploys `schedule`: builds the admission core and starts every stage worker.
    pub fn start(
        inst: &Instance,
        schedule: &Schedule,
        runner: Arc<dyn StageRunner>,
        clock: Arc<dyn Clock>,
        opts: &ExecutorOptions,
    ) -> Result<Executor> {
        let core = AdmissionCore::new(inst, schedule, opts.max_inflight_per_group)?;
        let compiled: Vec<Compiled> = (0..core.n_segments())
            .map(|k| core.segment(k).1.clone())
            .collect();
        let n_groups = core.n_groups_total();
        let model_names: Vec<String> = inst.models.iter().map(|m| m.name.clone()).collect();
        let shared = Arc::new(Shared {
            metrics: Metrics::new(model_names.clone(), n_groups),
            core: Mutex::new(core),
            clock,
            runner,
            compiled,
            device_alive: (0..inst.cluster.devices)
                .map(|_| AtomicBool::new(true))
                .collect(),
            stop: AtomicBool::new(false),
            poll: Duration::from_secs_f64(opts.poll_s.clamp(0.001, 1.0)),
        });
        let cap = opts.max_inflight_per_group.max(1) as usize;
        let mut entry = Vec::with_capacity(schedule.segments.len());
        let mut workers = Vec::new();
        let mut offset = 0usize;
        for (k, (_, placement)) in schedule.segments.iter().enumerate() {
            let mut seg_entry = Vec::with_capacity(placement.groups.len());
            for (g, group) in placement.groups.iter().enumerate() {
                let pp = group.pp as usize;
                let tp = group.tp as usize;
                // Build the chain back to front so every stage holds its successor's queue.
                let mut next: Option<SyncSender<Job>> = None;
                for stage in (0..pp).rev() {
                    let (tx, rx) = sync_channel::<Job>(cap);
                    let devices = group.devices[stage * tp..(stage + 1) * tp].to_vec();
                    let ctx = WorkerCtx {
                        shared: shared.clone(),
                        segment: k,
                        global_group: offset + g,
                        stage,
                        pp,
                        tp,
                        devices,
                        next: next.take(),
                    };
                    let handle = std::thread::Builder::new()
                        .name(format!("stage-s{k}-g{g}-k{stage}"))
                        .spawn(move || ctx.run(rx))
                        .map_err(|e| ExecutorError::io("cannot start a stage worker", e))?;
                    workers.push(Worker {
                        handle: Some(handle),
                    });
                    next = Some(tx);
                }
                match next {
                    Some(tx) => seg_entry.push(tx),
                    None => {
                        return Err(ExecutorError::Unsupported(format!(
                            "segment {k} group {g} has no stage"
                        )))
                    }
                }
            }
            offset += placement.groups.len();
            entry.push(seg_entry);
        }
        Ok(Executor {
            shared,
            entry,
            workers: Mutex::new(workers),
            slo_s: inst.models.iter().map(|m| m.slo_s).collect(),
            model_names,
            next_id: AtomicU64::new(0),
            grace_s: opts.answer_grace_s.max(0.0),
        })
    }

    /// Model names in id order.
    pub fn model_names(&self) -> &[String] {
        &self.model_names
    }

    /// Id of a model by name.
    pub fn model_id(&self, name: &str) -> Option<usize> {
        self.model_names.iter().position(|n| n == name)
    }

    /// SLO of model `m`.
    pub fn slo_s(&self, m: usize) -> f64 {
        self.slo_s[m]
    }

    /// The executor's clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.shared.clock
    }

    /// The runner's name.
    pub fn runner_name(&self) -> &'static str {
        self.shared.runner.name()
    }

    /// Counters and histograms.
    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// Requests admitted and not yet answered.
    pub fn inflight(&self) -> u64 {
        self.shared.core().inflight()
    }

    /// Admission only (no waiting): admits or rejects model `m`'s request now and, when admitted,
    /// queues it. The receiver yields the result. Split from [`Executor::infer`] so benches can
    /// time the controller path alone.
    pub fn submit(
        &self,
        m: usize,
        input: Option<&[f32]>,
    ) -> std::result::Result<Pending, InferError> {
        let sh = &self.shared;
        let now = sh.clock.now_s();
        let admission = {
            let mut core = sh.core();
            if core.workload_epoch().is_none() {
                // Nobody announced the workload's start: its first arrival is plan time 0.
                let _ = core.start_workload(now);
            }
            core.admit(now, m)
        };
        let ticket = match admission {
            Admission::Rejected { reason, group } => {
                sh.metrics.rejected(m, group, reason);
                return Err(InferError::Rejected(reason));
            }
            Admission::Admitted(t) => t,
        };
        sh.metrics.admitted(m, ticket.global_group);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let job = Job {
            id,
            model: m,
            ticket,
            stage: 0,
            ready_s: ticket.arrival_s,
            activations: sh.runner.initial_activations(m, input),
            reply: tx,
        };
        match self.entry[ticket.segment][ticket.group].try_send(job) {
            Ok(()) => Ok(Pending { id, m, ticket, rx }),
            Err(TrySendError::Full(job)) | Err(TrySendError::Disconnected(job)) => {
                sh.fail(
                    job,
                    0,
                    "the group's first stage is not accepting work".into(),
                );
                sh.metrics.failed(m, ticket.global_group);
                Err(InferError::Failed(format!(
                    "group {} is down",
                    ticket.global_group
                )))
            }
        }
    }

    /// Announces that the workload starts now, at `plan_time_s` on the plan's timeline (a replay
    /// whose first request is due at trace time `t` announces `t` just before sending it), so the
    /// plan's segments switch at their start times on the workload's clock. Only the first
    /// announcement or arrival counts: `Err` carries the epoch already in force (clock seconds).
    pub fn start_workload_at(&self, plan_time_s: f64) -> std::result::Result<f64, f64> {
        let now = self.shared.clock.now_s();
        self.shared.core().start_workload(now - plan_time_s)
    }

    /// Clock time of plan time 0, once the workload started.
    pub fn workload_epoch(&self) -> Option<f64> {
        self.shared.core().workload_epoch()
    }

    /// Serves one request of model `m`: admission now, then waits for the answer.
    pub async fn infer(
        &self,
        m: usize,
        input: Option<&[f32]>,
    ) -> std::result::Result<Served, InferError> {
        let pending = self.submit(m, input)?;
        self.wait(pending).await
    }

    /// Waits for a submitted request's answer (bounded: deadline plus the grace period).
    pub async fn wait(&self, p: Pending) -> std::result::Result<Served, InferError> {
        let sh = &self.shared;
        let budget = (p.ticket.deadline_s - sh.clock.now_s()).max(0.0) + self.grace_s;
        let res = tokio::time::timeout(duration_s(budget), p.rx).await;
        let g = p.ticket.global_group;
        match res {
            Ok(Ok(Ok(done))) => {
                let latency_s = sh.clock.now_s() - p.ticket.arrival_s;
                let good = latency_s <= self.slo_s[p.m];
                sh.metrics.completed(p.m, g, latency_s, good);
                Ok(Served {
                    id: p.id,
                    ticket: p.ticket,
                    finish_s: done.finish_s,
                    latency_s,
                    good,
                    output: done.output,
                })
            }
            Ok(Ok(Err(why))) => {
                sh.metrics.failed(p.m, g);
                Err(InferError::Failed(why))
            }
            Ok(Err(_)) => {
                sh.metrics.failed(p.m, g);
                Err(InferError::Failed(format!("group {g} dropped the request")))
            }
            Err(_) => {
                sh.metrics.failed(p.m, g);
                Err(InferError::TimedOut)
            }
        }
    }

    /// Simulates the failure of device `d`: its workers stop, every group using it is marked
    /// down, queued requests there get an error, and new ones go to other replicas.
    pub fn kill_device(&self, d: u32) {
        self.shared.device_failed(d);
    }

    /// Stops admitting, waits up to `timeout` for every admitted request to be answered, then
    /// stops the workers. Returns the number of requests still outstanding (0 when drained).
    pub fn shutdown(&self, timeout: Duration) -> u64 {
        self.shared.core().start_draining();
        let deadline = std::time::Instant::now() + timeout;
        let mut left = self.inflight();
        while left > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
            left = self.inflight();
        }
        self.shared.stop.store(true, Ordering::SeqCst);
        let mut workers = self.workers.lock().unwrap_or_else(|e| e.into_inner());
        for w in workers.iter_mut() {
            if let Some(h) = w.handle.take() {
                let _ = h.join();
            }
        }
        left
    }
}

impl Drop for Executor {
    fn drop(&mut self) {
        // Workers poll this flag; without it they would outlive the executor.
        self.shared.stop.store(true, Ordering::SeqCst);
    }
}

/// An admitted request whose answer is on its way.
#[derive(Debug)]
pub struct Pending {
    pub id: u64,
    m: usize,
    pub ticket: Ticket,
    rx: oneshot::Receiver<std::result::Result<Done, String>>,
}

impl std::fmt::Debug for Done {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Done")
            .field("finish_s", &self.finish_s)
            .finish()
    }
}

struct WorkerCtx {
    shared: Arc<Shared>,
    segment: usize,
    global_group: usize,
    stage: usize,
    pp: usize,
    tp: usize,
    devices: Vec<u32>,
    next: Option<SyncSender<Job>>,
}

impl WorkerCtx {
    fn devices_alive(&self) -> bool {
        self.devices.iter().all(|&d| {
            self.shared
                .device_alive
                .get(d as usize)
                .is_some_and(|a| a.load(Ordering::SeqCst))
        })
    }

    fn run(self, rx: Receiver<Job>) {
        // If this thread dies for any reason (a panicking runner included), its group goes down
        // and whatever it still holds is answered with an error rather than left hanging.
        let guard = ExitGuard {
            ctx: &self,
            rx: &rx,
        };
        let mut free_at = 0.0f64;
        loop {
            if self.shared.stop.load(Ordering::SeqCst) || !self.devices_alive() {
                break;
            }
            let job = match rx.recv_timeout(self.shared.poll) {
                Ok(job) => job,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            if !self.devices_alive() {
                self.shared.fail(
                    job,
                    self.stage,
                    format!("group {} is down", self.global_group),
                );
                break;
            }
            free_at = self.process(job, free_at);
        }
        drop(guard);
    }

    /// Runs one stage of `job` and passes it on; returns when this stage is free again.
    fn process(&self, mut job: Job, free_at: f64) -> f64 {
        let sh = &self.shared;
        let c = &sh.compiled[self.segment];
        let profiled_s = c.lat[c.rep_lat[job.ticket.replica] as usize + self.stage];
        // FIFO server: start when the input is ready, the previous request has left this stage,
        // and the devices are handed over from an earlier segment.
        let start_s = job.ready_s.max(free_at).max(job.ticket.not_before_s);
        let mut work = StageWork {
            model: job.model,
            group: self.global_group,
            stage: self.stage,
            pp: self.pp,
            tp: self.tp,
            devices: &self.devices,
            start_s,
            profiled_s,
            activations: &mut job.activations,
        };
        let finish_s = match sh.runner.run(&mut work, sh.clock.as_ref()) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(group = self.global_group, stage = self.stage, error = %e, "stage failed");
                let why = format!(
                    "stage {} of group {} failed: {e}",
                    self.stage, self.global_group
                );
                sh.fail(job, self.stage, why);
                return free_at.max(start_s);
            }
        };
        sh.core().stage_done(&job.ticket, self.stage, finish_s);
        sh.metrics
            .stage_ran(self.global_group, profiled_s, finish_s - start_s);
        if !self.devices_alive() {
            // Killed while the stage ran: the result is lost with the device.
            sh.fail(
                job,
                self.stage + 1,
                format!("group {} is down", self.global_group),
            );
            return finish_s;
        }
        match &self.next {
            None => {
                sh.core().finish(&job.ticket);
                let output = sh.runner.output(job.model, &job.activations);
                tracing::trace!(id = job.id, "answered");
                let _ = job.reply.send(Ok(Done { finish_s, output }));
            }
            Some(next) => {
                job.stage += 1;
                job.ready_s = finish_s;
                // Capacity equals the admission bound, so this never blocks for long; a closed
                // queue means the next stage died.
                if let Err(e) = next.send(job) {
                    let job = e.0;
                    let why = format!("group {} is down", self.global_group);
                    sh.fail(job, self.stage + 1, why);
                }
            }
        }
        finish_s
    }
}

struct ExitGuard<'a> {
    ctx: &'a WorkerCtx,
    rx: &'a Receiver<Job>,
}

impl Drop for ExitGuard<'_> {
    fn drop(&mut self) {
        let ctx = self.ctx;
        let stopping = ctx.shared.stop.load(Ordering::SeqCst);
        if !stopping || std::thread::panicking() {
            for &d in &ctx.devices {
                ctx.shared.device_failed(d);
            }
        }
        while let Ok(job) = self.rx.try_recv() {
            let stage = job.stage;
            let why = if stopping {
                "the server stopped before the request finished".to_string()
            } else {
                format!("group {} is down", ctx.global_group)
            };
            ctx.shared.fail(job, stage, why);
        }
    }
}
