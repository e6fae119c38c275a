//! Iteration-level LLM serving simulator (llm-serving.md §1.7, §1.8, §3.4, §3.5).
//!
//! - **Engines**: one per (mesh, LLM). Each has a prefill worker and a decode worker; a worker runs
//!   one iteration at a time. Prefill admits FCFS from the waiting queue while Σ prompt tokens ≤
//!   `max_prefill_tokens` (one longer prompt runs alone), running + executing < quota, and KV blocks
//!   for the prompt are free. Decode runs one step over up to `quota` running sequences.
//! - **KV**: one pool of 16 KiB head-blocks per GPU of a mesh, shared by its LLMs; a token-block of
//!   `block_tokens` tokens of LLM m at tp t takes ⌈block_tokens · kv_bytes_per_token / t / 16 KiB⌉
//!   head-blocks. Decode that needs more blocks than are free preempts the tail of its batch
//!   (recompute: the request re-enters the front of the waiting queue and later re-prefills
//!   prompt + generated tokens). Allocation never exceeds the pool.
//! - **SM**: a mesh has `sm_parts` parts plus an overload allowance; a job holds its share for one
//!   iteration; overloaded parts slow the job (MuxServe's spatial-temporal sharing).
//! - **ADBS**: a scheduling tick runs after every event on a mesh: prefill pass round-robin, no
//!   decode while a prefill waits for SM parts, then a decode pass; quotas rebalance periodically.
//! - **Routing**: a request goes to the least-loaded replica of its LLM that can hold it (load =
//!   outstanding tokens per GPU); long requests prefer larger meshes.
//! - **TP transformation** (Amoeba): TP1 units of a group merge into one TP-N engine when a long
//!   request arrives, and split back after a quiet period, with the cost model of §3.5. The
//!   adaptive policy (`TransformPolicy::Adaptive`) also merges and splits on load: see
//!   `Run::decide`.
//!
//! Deterministic: events are ordered by (time, sequence number); no hash maps.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use super::cost::StepCost;
use super::instance::{BatchPolicy, LlmInstance};
use super::plan::{Deployment, TransformKnobs, TransformPolicy};
use super::workload::LlmTrace;

/// Bytes of one head-block: K and V of one (layer, head) for 32 tokens at head_dim 128 in fp16.
pub const HEAD_BLOCK_BYTES: f64 = 16384.0;

const ST_PENDING: u8 = 0;
const ST_QUEUED: u8 = 1;
const ST_DONE: u8 = 2;
const ST_DROPPED: u8 = 3;

/// Why a request was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// No replica of its LLM can ever hold the whole request.
    TooLong,
    /// Preempted more than `max_preemptions` times.
    Preempted,
    /// Unfinished at the simulator horizon.
    Horizon,
    /// Left in a queue with no further events (a bug if it ever happens; tests check it).
    Stuck,
}

/// What happened to every request (columns indexed by request id).
#[derive(Debug, Clone, Default)]
pub struct Outcomes {
    pub first_token_s: Vec<f64>,
    pub finish_s: Vec<f64>,
    pub dropped: Vec<Option<DropReason>>,
    pub preemptions: Vec<u32>,
    /// Engine of the last assignment (u32::MAX when dropped at arrival).
    pub engine: Vec<u32>,
}

/// One simulated iteration (recorded only on request, for timeline tests).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IterRecord {
    pub engine: u32,
    pub prefill: bool,
    pub start_s: f64,
    pub end_s: f64,
    pub batch: u32,
}

/// Counters of the run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SimStats {
    pub iterations: u64,
    pub prefill_iterations: u64,
    pub decode_iterations: u64,
    pub preemptions: u64,
    /// Largest fraction of any mesh's KV pool in use at any time (≤ 1 by construction).
    pub kv_peak_fraction: f64,
    pub merges: u32,
    pub splits: u32,
    /// Total wall time spent transforming (merge + split), seconds.
    pub transform_s: f64,
    /// Per-engine (llm, tp, unit devices) for reports.
    pub engines: Vec<EngineInfo>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EngineInfo {
    pub llm: usize,
    pub tp: u32,
    pub unit: usize,
    pub quota: u32,
    pub capacity_tokens: u64,
    pub requests: u64,
}

struct Engine {
    llm: u32,
    unit: u32,
    tp: u32,
    cost: StepCost,
    hb_per_block: u64,
    capacity_tokens: u64,
    pre_parts: u32,
    dec_parts: u32,
    pre_sm: f64,
    dec_sm: f64,
    quota: u32,
    waiting: VecDeque<u32>,
    running: Vec<u32>,
    pre_batch: Vec<u32>,
    dec_batch: Vec<u32>,
    pre_busy: bool,
    dec_busy: bool,
    pre_parts_held: u32,
    dec_parts_held: u32,
    waiting_cache: bool,
    active: bool,
    load_tokens: f64,
    /// Long requests routed here and not yet finished (short requests avoid such engines
    /// unless long prefills are chunked).
    long_count: u32,
    /// Requests routed here whose prompts are prefilled in chunks, not yet finished: the
    /// prefill scheduler searches the queue for them only when there are some (an overloaded
    /// engine's queue holds thousands of short requests).
    chunked_count: u32,
    /// Chunked long prefills wait until this time while short requests decode here.
    chunk_hold_until: f64,
    /// Start of the running prefill iteration.
    pre_started: f64,
    /// Transformation group this engine's unit is a member of (u32::MAX: none).
    group: u32,
    /// Transformation group whose merged engine this is (u32::MAX: none).
    merged_of: u32,
    assigned: u64,
    // Ring of the last 500 decode batch sizes (ADBS rebalancing).
    hist: Vec<u32>,
    hist_pos: usize,
    hist_len: usize,
    hist_sum: u64,
}

impl Engine {
    fn idle(&self) -> bool {
        !self.pre_busy && !self.dec_busy
    }
    fn in_flight(&self) -> usize {
        self.running.len() + self.pre_batch.len() + self.dec_batch.len()
    }
}

struct Unit {
    pool_total: u64,
    pool_free: u64,
    parts_free: i32,
    engines: Vec<u32>,
    pre_ptr: usize,
    dec_ptr: usize,
    active: bool,
    /// Launches are blocked until this time (paused transformation) or while draining.
    stall_until: f64,
    draining: bool,
    /// Added to every iteration launched before `extra_until` (staggered transformation).
    extra_s: f64,
    extra_until: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GState {
    Split,
    Merging,
    Merged,
    Splitting,
}

struct Group {
    /// Units that merge: TP1 units, or the merged units of child groups (stepwise merges).
    members: Vec<u32>,
    /// Child groups whose merged engines are the members (empty at the first level).
    children: Vec<u32>,
    /// The group that merges this group's merged engine further (u32::MAX: none).
    parent: u32,
    merged_unit: u32,
    merged_engine: u32,
    llm: u32,
    state: GState,
    knobs: TransformKnobs,
    last_long_s: f64,
    /// When the group last finished a transformation (adaptive policy: minimum dwell).
    last_change_s: f64,
    /// When the transformation in progress completes.
    ready_s: f64,
    /// Merged, no longer needed, waiting to split: short requests are routed elsewhere until
    /// the resident KV fits the members' pools (splitting earlier would recompute requests).
    closing: bool,
    /// Requests routed to the group's engines, with arrival times, over the last
    /// `mix_window_s` (adaptive policy's view of the load).
    recent: VecDeque<(f64, u32)>,
}

const EV_PREFILL: u32 = 0;
const EV_DECODE: u32 = 1;
const EV_REBALANCE: u32 = 2;
const EV_READY: u32 = 3;
const EV_SPLIT_CHECK: u32 = 4;
const EV_DECIDE: u32 = 5;
const EV_PENDING: u32 = 6;

/// Whether an event kind is work in flight rather than a periodic timer.
fn is_live(kind: u32) -> bool {
    matches!(kind, EV_PREFILL | EV_DECODE | EV_READY | EV_SPLIT_CHECK)
}

/// Options of one run.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Record every iteration (timeline tests).
    pub record: bool,
}

/// The simulator: built once per (instance, trace, deployment); `run` may be called many times.
pub struct LlmSim<'a> {
    inst: &'a LlmInstance,
    trace: &'a LlmTrace,
    dep: &'a Deployment,
    /// Predicted output length per LLM (quantile of its outputs in the trace).
    pred_out: Vec<Vec<u32>>,
    /// Output lengths per LLM, sorted, and their suffix sums: the adaptive policy's expected
    /// remaining output of a request that has generated g tokens is E[out − g | out > g] over this
    /// profile (the trace's distribution plays the part of a historical profile; a request's own
    /// length is never looked at).
    out_sorted: Vec<Vec<u32>>,
    out_suffix: Vec<Vec<f64>>,
}

/// Everything a run produces.
#[derive(Debug, Clone, Default)]
pub struct RunResult {
    pub outcomes: Outcomes,
    pub stats: SimStats,
    pub iterations: Vec<IterRecord>,
}

fn quantile_u32(v: &mut [u32], q: f64) -> u32 {
    if v.is_empty() {
        return 0;
    }
    v.sort_unstable();
    let i = ((v.len() - 1) as f64 * q).round() as usize;
    v[i.min(v.len() - 1)]
}

impl<'a> LlmSim<'a> {
    pub fn new(inst: &'a LlmInstance, trace: &'a LlmTrace, dep: &'a Deployment) -> LlmSim<'a> {
        let n = inst.llms.len();
        let mut outs: Vec<Vec<u32>> = vec![Vec::new(); n];
        for i in 0..trace.len() {
            outs[trace.llm[i] as usize].push(trace.output[i]);
        }
        // Predicted output per transformation group's quantile; index by knob quantile lazily:
        // groups of one LLM share knobs in practice, so one quantile per (LLM, group) suffices.
        let mut pred_out = vec![Vec::new(); n];
        for t in &dep.transforms {
            let q = quantile_u32(&mut outs[t.llm].clone(), t.knobs.output_quantile);
            pred_out[t.llm].push(q);
        }
        for (m, p) in pred_out.iter_mut().enumerate() {
            if p.is_empty() {
                p.push(quantile_u32(
                    &mut outs[m].clone(),
                    TransformKnobs::default().output_quantile,
                ));
            }
        }
        let mut out_suffix = Vec::with_capacity(n);
        for o in outs.iter_mut() {
            o.sort_unstable();
            let mut suf = vec![0.0; o.len() + 1];
            for i in (0..o.len()).rev() {
                suf[i] = suf[i + 1] + o[i] as f64;
            }
            out_suffix.push(suf);
        }
        LlmSim {
            inst,
            trace,
            dep,
            pred_out,
            out_sorted: outs,
            out_suffix,
        }
    }

    /// Expected decode steps left for a request of LLM `m` that has generated `gen` tokens.
    fn residual_output(&self, m: usize, gen: u32) -> f64 {
        let o = &self.out_sorted[m];
        let i = o.partition_point(|&x| x <= gen);
        let n = o.len() - i;
        if n == 0 {
            // Longer than every profiled output: expect at least one more step.
            return 1.0;
        }
        ((self.out_suffix[m][i] - gen as f64 * n as f64) / n as f64).max(1.0)
    }

    pub fn run(&self, opts: &RunOptions) -> RunResult {
        Run::new(self, opts).go()
    }
}

/// Where the transformation-aware scheduler sends a long request.
enum LongRoute {
    Engine(u32),
    /// Wait for a lull or the deferral deadline, then merge.
    Pending,
    /// No engine or group can hold it.
    Nowhere,
}

/// A request's lengths (copied from the trace) and progress: what a decode iteration reads and
/// writes for each request of its batch.
#[derive(Clone, Copy)]
struct ReqState {
    prompt: u32,
    output: u32,
    /// Output tokens generated so far.
    gen: u32,
    /// KV blocks held on its engine.
    blocks: u32,
}

impl ReqState {
    /// Tokens in its KV once its next step runs: the prompt and what it has generated.
    fn tokens(&self) -> u32 {
        self.prompt + self.gen
    }
}

struct Run<'s, 'a> {
    sim: &'s LlmSim<'a>,
    record: bool,
    engines: Vec<Engine>,
    units: Vec<Unit>,
    groups: Vec<Group>,
    /// Active engine ids per LLM (rebuilt on transformations, which are rare).
    by_llm: Vec<Vec<u32>>,
    heap: BinaryHeap<Reverse<(u64, u64, u32, u32)>>,
    seq: u64,
    now: f64,
    // Per-request state.
    status: Vec<u8>,
    /// Per-request state read at every iteration of the request's engine, in one record so that
    /// a batch of scattered request ids costs one cache line per request, not four.
    req: Vec<ReqState>,
    long: Vec<bool>,
    /// A long request's prefill waits for the short requests decoding on its engine to finish
    /// (so a long prefill never stalls them) until this time; 0 for short requests.
    defer_until: Vec<f64>,
    /// Long and chunked requests: the latest end of the prefill that still meets the SLO, as
    /// the scheduler can know it: arrival + slo_scale × the isolated latency of the prompt with
    /// one output token (the output's own share of the SLO pays for its decode steps, and a
    /// predicted output would promise slack that a short actual output does not have; the
    /// conversation trace's 0.9-quantile output is ≈ 10 × a long request's typical one);
    /// −∞ without an SLO.
    deadline: Vec<f64>,
    /// Tokens of the current prefill pass done so far (chunked long prefills) and in the
    /// running iteration.
    pre_done: Vec<u32>,
    chunk: Vec<u32>,
    /// Long requests waiting for a merge (transformation-aware scheduler), FCFS.
    pending: VecDeque<u32>,
    pending_tick: bool,
    /// Events in the heap that are work in flight (iterations, transformations, split
    /// checks), as opposed to the periodic timers (rebalance, adaptive decisions, pending
    /// retries), which recur while requests remain even when nothing can move.
    live_events: u32,
    /// When the current stretch with nothing in flight began (None: something is).
    stall_from: Option<f64>,
    /// Short requests' arrivals (time, prompt tokens) per LLM over the longest burst window,
    /// with their token sum: the burst-aware merge timing's view of the offered load.
    recent_short: Vec<VecDeque<(f64, u32)>>,
    recent_short_tokens: Vec<u64>,
    /// Mean (prompt, output) tokens per LLM over the trace (the dynamic SM quotas' sequence size).
    mean_lens: Vec<(f64, f64)>,
    out: Outcomes,
    stats: SimStats,
    iters: Vec<IterRecord>,
    remaining: usize,
    scratch: Vec<u32>,
}

impl<'s, 'a> Run<'s, 'a> {
    fn new(sim: &'s LlmSim<'a>, opts: &RunOptions) -> Self {
        let inst = sim.inst;
        let cfg = &inst.sim;
        let trace = sim.trace;
        let n_req = trace.len();
        let rates = trace.rates(inst.llms.len());
        let lens = trace.mean_lengths(inst.llms.len());
        let mut replicas = vec![0usize; inst.llms.len()];
        for u in &sim.dep.units {
            for e in &u.engines {
                replicas[e.llm] += 1;
            }
        }
        let mut engines = Vec::new();
        let mut units = Vec::new();
        let bt = cfg.block_tokens as f64;
        let mk_unit = |devices: u32, llms: &[usize]| -> Unit {
            let pool_bytes = inst.kv_pool_bytes_per_gpu(devices, llms).max(0.0);
            // MuxServe rounds the pool down to a multiple of 128 head-blocks.
            let pool = ((pool_bytes / HEAD_BLOCK_BYTES / 128.0).floor() as u64) * 128;
            Unit {
                pool_total: pool,
                pool_free: pool,
                parts_free: cfg.sm_parts as i32,
                engines: Vec::new(),
                pre_ptr: 0,
                dec_ptr: 0,
                active: true,
                stall_until: 0.0,
                draining: false,
                extra_s: 0.0,
                extra_until: 0.0,
            }
        };
        let mk_engine = |m: usize, u: usize, tp: u32, pool: u64, pre: u32, dec: u32| -> Engine {
            let spec = &inst.llms[m].spec;
            let hb = ((bt * spec.kv_bytes_per_token() / tp as f64) / HEAD_BLOCK_BYTES)
                .ceil()
                .max(1.0) as u64;
            let part = |pct: u32| (pct as f64 / (100.0 / cfg.sm_parts as f64)).ceil() as u32;
            Engine {
                llm: m as u32,
                unit: u as u32,
                tp,
                cost: inst.step_cost(m, tp),
                hb_per_block: hb,
                capacity_tokens: pool / hb * cfg.block_tokens as u64,
                pre_parts: part(pre).max(1),
                dec_parts: part(dec).max(1),
                pre_sm: pre as f64 / 100.0,
                dec_sm: dec as f64 / 100.0,
                quota: u32::MAX,
                waiting: VecDeque::new(),
                running: Vec::new(),
                pre_batch: Vec::new(),
                dec_batch: Vec::new(),
                pre_busy: false,
                dec_busy: false,
                pre_parts_held: 0,
                dec_parts_held: 0,
                waiting_cache: false,
                active: true,
                load_tokens: 0.0,
                long_count: 0,
                chunked_count: 0,
                chunk_hold_until: 0.0,
                pre_started: 0.0,
                group: u32::MAX,
                merged_of: u32::MAX,
                assigned: 0,
                hist: vec![0; 500],
                hist_pos: 0,
                hist_len: 0,
                hist_sum: 0,
            }
        };
        for (ui, u) in sim.dep.units.iter().enumerate() {
            let llms: Vec<usize> = u.engines.iter().map(|e| e.llm).collect();
            let mut unit = mk_unit(u.tp(), &llms);
            // Quota initialisation (§1.7): blocks split ∝ λ·group, quota = blocks / blocks per average sequence.
            let weight: Vec<f64> = u
                .engines
                .iter()
                .map(|e| {
                    let lam = if cfg.policy == BatchPolicy::StaticQuota {
                        1.0
                    } else {
                        (rates[e.llm] / replicas[e.llm] as f64).max(1e-3)
                    };
                    let hb = inst.llms[e.llm].spec.kv_bytes_per_token() * bt
                        / u.tp() as f64
                        / HEAD_BLOCK_BYTES;
                    lam * hb
                })
                .collect();
            let wsum: f64 = weight.iter().sum();
            for (k, e) in u.engines.iter().enumerate() {
                let mut eng = mk_engine(
                    e.llm,
                    ui,
                    u.tp(),
                    unit.pool_total,
                    e.prefill_sm_pct,
                    e.decode_sm_pct,
                );
                eng.quota = match (e.quota, cfg.policy) {
                    (Some(q), _) => q,
                    (None, BatchPolicy::Fcfs) => u32::MAX,
                    (None, _) => {
                        let blocks = unit.pool_total as f64 * weight[k] / wsum.max(1e-12);
                        let avg_len = lens[e.llm].0 + lens[e.llm].1;
                        let per_seq = (avg_len / bt).floor().max(1.0);
                        ((blocks / eng.hb_per_block as f64 / per_seq).floor() as u32).max(1)
                    }
                };
                unit.engines.push(engines.len() as u32);
                engines.push(eng);
            }
            units.push(unit);
        }
        let mut groups = Vec::new();
        for (gi, t) in sim.dep.transforms.iter().enumerate() {
            // Members: TP1 units, or the merged units of earlier (child) groups.
            let members: Vec<u32> = if t.groups.is_empty() {
                t.units.iter().map(|&u| u as u32).collect()
            } else {
                t.groups
                    .iter()
                    .map(|&c| {
                        let c: &Group = &groups[c];
                        c.merged_unit
                    })
                    .collect()
            };
            let n: u32 = members
                .iter()
                .map(|&u| engines[units[u as usize].engines[0] as usize].tp)
                .sum();
            let mut unit = mk_unit(n, &[t.llm]);
            unit.active = false;
            let uid = units.len();
            let mut eng = mk_engine(t.llm, uid, n, unit.pool_total, 100, 100);
            eng.active = false;
            eng.merged_of = gi as u32;
            let eid = engines.len() as u32;
            unit.engines.push(eid);
            engines.push(eng);
            units.push(unit);
            for &u in &members {
                let e = units[u as usize].engines[0] as usize;
                engines[e].group = gi as u32;
            }
            for &c in &t.groups {
                groups[c].parent = gi as u32;
            }
            groups.push(Group {
                members,
                children: t.groups.iter().map(|&c| c as u32).collect(),
                parent: u32::MAX,
                merged_unit: uid as u32,
                merged_engine: eid,
                llm: t.llm as u32,
                state: GState::Split,
                knobs: t.knobs.clone(),
                last_long_s: f64::NEG_INFINITY,
                last_change_s: f64::NEG_INFINITY,
                ready_s: 0.0,
                closing: false,
                recent: VecDeque::new(),
            });
        }
        let nan = f64::NAN;
        let stats = SimStats {
            engines: engines
                .iter()
                .map(|e| EngineInfo {
                    llm: e.llm as usize,
                    tp: e.tp,
                    unit: e.unit as usize,
                    quota: e.quota,
                    capacity_tokens: e.capacity_tokens,
                    requests: 0,
                })
                .collect(),
            ..SimStats::default()
        };
        let mut r = Run {
            sim,
            record: opts.record,
            engines,
            units,
            groups,
            by_llm: Vec::new(),
            heap: BinaryHeap::with_capacity(1024),
            seq: 0,
            now: 0.0,
            status: vec![ST_PENDING; n_req],
            req: (0..n_req)
                .map(|r| ReqState {
                    prompt: sim.trace.prompt[r],
                    output: sim.trace.output[r],
                    gen: 0,
                    blocks: 0,
                })
                .collect(),
            long: vec![false; n_req],
            defer_until: vec![0.0; n_req],
            deadline: vec![f64::NEG_INFINITY; n_req],
            pre_done: vec![0; n_req],
            chunk: vec![0; n_req],
            pending: VecDeque::new(),
            pending_tick: false,
            live_events: 0,
            stall_from: None,
            recent_short: vec![VecDeque::new(); inst.llms.len()],
            recent_short_tokens: vec![0; inst.llms.len()],
            mean_lens: lens,
            out: Outcomes {
                first_token_s: vec![nan; n_req],
                finish_s: vec![nan; n_req],
                dropped: vec![None; n_req],
                preemptions: vec![0; n_req],
                engine: vec![u32::MAX; n_req],
            },
            stats,
            iters: Vec::new(),
            remaining: n_req,
            scratch: Vec::with_capacity(64),
        };
        // Groups at or below their base degree start merged (children first: groups are
        // listed after their children), with no requests yet, so nothing moves and nothing is
        // charged: the deployment starts as static TP-base engines.
        for g in 0..r.groups.len() {
            let base = r.groups[g].knobs.base_tp;
            let me = r.groups[g].merged_engine as usize;
            if r.engines[me].tp > base {
                continue;
            }
            for &u in &r.groups[g].members {
                let unit = &mut r.units[u as usize];
                unit.active = false;
                let e = unit.engines[0] as usize;
                r.engines[e].active = false;
            }
            r.engines[me].active = true;
            let mu = r.groups[g].merged_unit as usize;
            r.units[mu].active = true;
            r.groups[g].state = GState::Merged;
        }
        r.rebuild_by_llm();
        r
    }

    /// With no work in flight and no arrivals left, whether the timers have run for more than
    /// `stall_s` past the last deadline a pending long request waits for (a merge forced by
    /// its deadline is the last thing that could still move it). The stall's clock starts at
    /// the first call after something was last in flight.
    fn stalled_since(&mut self, stall_s: f64) -> bool {
        let wake = self
            .pending
            .iter()
            .map(|&r| self.deadline[r as usize])
            .filter(|d| d.is_finite())
            .fold(f64::NEG_INFINITY, f64::max);
        let since = *self.stall_from.get_or_insert(self.now);
        self.now > since.max(wake) + stall_s
    }

    fn rebuild_by_llm(&mut self) {
        self.by_llm = vec![Vec::new(); self.sim.inst.llms.len()];
        for (i, e) in self.engines.iter().enumerate() {
            if e.active {
                self.by_llm[e.llm as usize].push(i as u32);
            }
        }
    }

    fn push(&mut self, t: f64, kind: u32, a: u32) {
        self.seq += 1;
        self.live_events += is_live(kind) as u32;
        self.heap
            .push(Reverse((t.max(0.0).to_bits(), self.seq, kind, a)));
    }

    fn go(mut self) -> RunResult {
        let trace = self.sim.trace;
        let cfg = &self.sim.inst.sim;
        let horizon = cfg.horizon_s.unwrap_or(f64::INFINITY);
        let mut next = 0usize;
        // How long the periodic timers may run with nothing in flight before the remaining
        // requests are declared stuck: longer than any policy waits on its own clock.
        let stall_s = self.groups.iter().fold(cfg.rebalance_s, |a, g| {
            let k = &g.knobs;
            a.max(k.decide_s + k.min_dwell_s + k.hysteresis_s + k.mix_window_s + k.burst_window_s)
        }) + 1.0;
        if cfg.policy == BatchPolicy::Adbs && !trace.is_empty() {
            self.push(trace.arrival_s[0] + cfg.rebalance_s, EV_REBALANCE, 0);
        }
        if !trace.is_empty() {
            for g in 0..self.groups.len() {
                let k = &self.groups[g].knobs;
                if k.policy == TransformPolicy::Adaptive {
                    self.push(trace.arrival_s[0] + k.decide_s, EV_DECIDE, g as u32);
                }
            }
        }
        loop {
            let t_arr = trace.arrival_s.get(next).copied().unwrap_or(f64::INFINITY);
            let t_ev = self
                .heap
                .peek()
                .map_or(f64::INFINITY, |Reverse(e)| f64::from_bits(e.0));
            // Arrivals at the same instant as a completion are processed first (the request is
            // visible to the tick that the completion triggers).
            if t_arr.is_infinite() && t_ev.is_infinite() {
                break;
            }
            if t_arr.min(t_ev) > horizon {
                break;
            }
            if t_arr <= t_ev {
                self.now = t_arr;
                let r = next;
                next += 1;
                self.arrive(r);
            } else {
                let Some(Reverse((tb, _, kind, a))) = self.heap.pop() else {
                    break;
                };
                self.now = f64::from_bits(tb);
                self.live_events -= is_live(kind) as u32;
                match kind {
                    EV_PREFILL => self.prefill_done(a as usize),
                    EV_DECODE => self.decode_done(a as usize),
                    EV_REBALANCE => {
                        self.rebalance();
                        if self.remaining > 0 {
                            self.push(self.now + cfg.rebalance_s, EV_REBALANCE, 0);
                        }
                    }
                    EV_READY => self.transform_ready(a as usize),
                    EV_SPLIT_CHECK => self.split_check(a as usize),
                    EV_PENDING => {
                        self.pending_tick = false;
                        self.serve_pending();
                    }
                    EV_DECIDE => {
                        let g = a as usize;
                        self.decide(g);
                        if self.remaining > 0 {
                            // A floor keeps a hand-built zero period from stalling the clock.
                            let dt = self.groups[g].knobs.decide_s.max(1e-3);
                            self.push(self.now + dt, EV_DECIDE, a);
                        }
                    }
                    _ => {}
                }
            }
            if self.remaining == 0 && next >= trace.len() {
                break;
            }
            if self.live_events > 0 || next < trace.len() {
                self.stall_from = None;
            } else if self.stalled_since(stall_s) {
                break;
            }
        }
        let reason = if self.now >= horizon {
            DropReason::Horizon
        } else {
            DropReason::Stuck
        };
        for r in 0..trace.len() {
            if self.status[r] != ST_DONE && self.status[r] != ST_DROPPED {
                self.out.dropped[r] = Some(if r >= next {
                    DropReason::Horizon
                } else {
                    reason
                });
                self.status[r] = ST_DROPPED;
            }
        }
        for (i, e) in self.engines.iter().enumerate() {
            self.stats.engines[i].requests = e.assigned;
            self.stats.engines[i].quota = e.quota;
        }
        RunResult {
            outcomes: self.out,
            stats: self.stats,
            iterations: self.iters,
        }
    }

    // ---------------------------------------------------------------- routing

    fn arrive(&mut self, r: usize) {
        let trace = self.sim.trace;
        let m = trace.llm[r] as usize;
        let total = (trace.prompt[r] + trace.output[r]) as u64;
        let knobs = self
            .groups
            .iter()
            .find(|g| g.llm as usize == m)
            .map(|g| g.knobs.clone())
            .unwrap_or_default();
        let need = (trace.prompt[r] + self.sim.pred_out[m][0]) as f64;
        let mut cap_min = u64::MAX;
        for &e in &self.by_llm[m] {
            cap_min = cap_min.min(self.engines[e as usize].capacity_tokens);
        }
        cap_min = cap_min.min(self.base_capacity(m));
        // merge=prefill: a long prompt is long too (its prefill is what the merge is for).
        let long = cap_min != u64::MAX
            && (need > knobs.long_fraction * cap_min as f64
                || (knobs.merge_prefill_above > 0 && trace.prompt[r] > knobs.merge_prefill_above));
        self.long[r] = long;
        if long {
            // Deferring the long prefill costs the long request at most this share of its SLO.
            let slo = self.sim.inst.llms[m].slo_scale.map_or(0.0, |k| {
                k * self
                    .sim
                    .inst
                    .step_cost(m, self.sim.inst.home_tp(m))
                    .isolated_latency_s(trace.prompt[r], self.sim.pred_out[m][0].max(1))
            });
            self.defer_until[r] = self.now + knobs.slack_fraction * slo;
        }
        if long || self.is_chunked(r) {
            self.deadline[r] = self.sim.inst.llms[m]
                .slo_scale
                .map_or(f64::NEG_INFINITY, |k| {
                    self.now
                        + k * self
                            .sim
                            .inst
                            .step_cost(m, self.sim.inst.home_tp(m))
                            .isolated_latency_s(trace.prompt[r], 1)
                });
        }
        if !long && knobs.burst_window_s > 0.0 {
            self.recent_short[m].push_back((self.now, trace.prompt[r]));
            self.recent_short_tokens[m] += trace.prompt[r] as u64;
        }
        let mut best: Option<(f64, u32)> = None;
        if long {
            match self.route_long(r, m, total, cap_min, &knobs) {
                LongRoute::Engine(e) => best = Some((0.0, e)),
                LongRoute::Pending => {
                    self.status[r] = ST_QUEUED;
                    self.pending.push_back(r as u32);
                    self.schedule_pending(knobs.decide_s);
                    return;
                }
                LongRoute::Nowhere => {}
            }
        }
        if best.is_none() {
            // Short requests (and long ones with nowhere better to go): the least-loaded engine
            // that can hold the request, avoiding engines that hold long requests while another
            // engine can take it (a long prefill would stall the short request's decode).
            // With chunked long prefills a long request no longer stalls its engine, so short
            // requests are routed by load alone (a hard avoidance piles every short request on
            // the few engines without a long one when long requests cluster).
            let spread = self.is_chunked(r);
            let first = if self.sim.inst.sim.prefill_chunk_tokens > 0 {
                1
            } else {
                0
            };
            for pass in first..2 {
                for &e in &self.by_llm[m] {
                    let eng = &self.engines[e as usize];
                    if eng.capacity_tokens >= total && (pass == 1 || eng.long_count == 0) {
                        // A merged engine waiting to split takes short requests only when no
                        // other engine can hold them.
                        // So does a merged engine for long prefills (merge=prefill): short
                        // requests there would hold its chunks back, as on the base engines.
                        let closing = eng.merged_of != u32::MAX
                            && (self.groups[eng.merged_of as usize].closing
                                || self.prefill_engine(e as usize));
                        // A chunked long request goes first to the engine with the least chunked
                        // work: the routing load leaves chunked prefills out, so it would not
                        // spread them.
                        let chunked = if spread {
                            self.chunked_tokens(e as usize) / eng.tp as f64 * 1e6
                        } else {
                            0.0
                        };
                        let l = eng.load_tokens / eng.tp as f64
                            + chunked
                            + if closing { 1e15 } else { 0.0 };
                        if best.is_none_or(|(b, _)| l < b) {
                            best = Some((l, e));
                        }
                    }
                }
                if best.is_some() {
                    break;
                }
            }
        }
        let Some((_, e)) = best else {
            self.drop_req(r, DropReason::TooLong);
            return;
        };
        self.assign(r, e as usize);
    }

    /// Queues request `r` on engine `e`.
    fn assign(&mut self, r: usize, e: usize) {
        let long = self.long[r];
        let chunked = self.is_chunked(r) as u32;
        let w = self.load_weight(r);
        self.status[r] = ST_QUEUED;
        self.out.engine[r] = e as u32;
        let eng = &mut self.engines[e];
        eng.waiting.push_back(r as u32);
        eng.chunked_count += chunked;
        eng.load_tokens += w;
        eng.assigned += 1;
        if long {
            eng.long_count += 1;
            if eng.merged_of != u32::MAX {
                self.groups[eng.merged_of as usize].closing = false;
                self.groups[eng.merged_of as usize].last_long_s = self.now;
            }
        }
        // The adaptive policy's load sample: the group deciding on this engine's split (it is
        // a merged engine) and the group deciding on merging it (it is a member).
        for g in [self.engines[e].merged_of, self.engines[e].group] {
            if g != u32::MAX && self.groups[g as usize].knobs.policy == TransformPolicy::Adaptive {
                self.groups[g as usize]
                    .recent
                    .push_back((self.now, r as u32));
            }
        }
        let u = self.engines[e].unit as usize;
        self.tick(u);
    }

    /// Transformation-aware routing of a long request (one whose predicted footprint does not
    /// fit a TP1 engine's KV): llm-serving.md §3.4, made stepwise.
    ///
    /// 1. Candidates that already hold TP-N memory: active engines larger than TP1 and merges in
    ///    progress whose capacity holds the request. Each gets an estimated wait: the prefill time
    ///    of the work queued ahead, plus the rest of the transformation for a merge in progress;
    ///    a candidate whose free KV cannot take the request now waits for residents to finish,
    ///    which the estimate counts as unbounded (with chunked long prefills only long
    ///    requests' KV counts: short requests' KV is transient).
    /// 2. If the best wait is within `slack_fraction` of the request's SLO, the request joins
    ///    that engine: a merge would cost more than it saves.
    /// 3. Otherwise the wait justifies a transformation: merge the group with the smallest
    ///    degree that holds the request (TP1 → TP2 before TP2 → TP4) and, among those, the least
    ///    resident KV (the cheapest to move). Higher-level groups can merge only once their
    ///    children are merged, so degrees grow one step at a time.
    /// 4. If no group can merge, the request takes the best candidate anyway (or is dropped when
    ///    none can ever hold it).
    fn route_long(
        &mut self,
        r: usize,
        m: usize,
        total: u64,
        cap_min: u64,
        knobs: &TransformKnobs,
    ) -> LongRoute {
        let trace = self.sim.trace;
        let inst = self.sim.inst;
        let p = trace.prompt[r];
        let pred = self.sim.pred_out[m][0];
        let bt = inst.sim.block_tokens;
        let mut best: Option<(f64, u32)> = None;
        let mut consider = |this: &Self, e: usize, ready_in: f64| {
            let eng = &this.engines[e];
            if eng.capacity_tokens <= cap_min || eng.capacity_tokens < total {
                return;
            }
            // A merged engine that is splitting (staggered: it serves until the split ends)
            // hands its requests to members that cannot hold this one.
            if eng.merged_of != u32::MAX
                && this.groups[eng.merged_of as usize].state == GState::Splitting
            {
                return;
            }
            let u = eng.unit as usize;
            let blocks = (p + pred).div_ceil(bt) as u64 * eng.hb_per_block;
            let chunked = this.sim.inst.sim.prefill_chunk_tokens > 0;
            // With chunked long prefills, short requests' KV is transient (they are served
            // first and leave within seconds): only long requests' KV, held or queued, is
            // counted against the pool.
            let queued_blocks: u64 = eng
                .waiting
                .iter()
                .filter(|&&q| !chunked || this.long[q as usize])
                .map(|&q| (trace.prompt[q as usize] + pred).div_ceil(bt) as u64 * eng.hb_per_block)
                .sum();
            let free = if this.units[u].active && chunked {
                let held: u64 = eng
                    .running
                    .iter()
                    .chain(&eng.waiting)
                    .chain(&eng.pre_batch)
                    .chain(&eng.dec_batch)
                    .filter(|&&q| this.long[q as usize])
                    .map(|&q| this.req[q as usize].blocks as u64 * eng.hb_per_block)
                    .sum();
                this.units[u].pool_total.saturating_sub(held)
            } else if this.units[u].active {
                this.units[u].pool_free
            } else {
                // A merge in progress: the merged pool less what the members hold.
                this.units[u].pool_total.saturating_sub(
                    this.groups[eng.merged_of as usize]
                        .members
                        .iter()
                        .map(|&x| {
                            let mu = &this.units[x as usize];
                            (mu.pool_total - mu.pool_free) * eng.hb_per_block
                                / this.engines[mu.engines[0] as usize].hb_per_block.max(1)
                        })
                        .sum::<u64>(),
                )
            };
            let wait = if blocks + queued_blocks > free {
                f64::INFINITY
            } else {
                ready_in
                    + eng
                        .waiting
                        .iter()
                        .map(|&q| {
                            let x = trace.prompt[q as usize] as f64;
                            eng.cost.prefill_s(x, x * x, 1.0)
                        })
                        .sum::<f64>()
            };
            let key = wait * 1e6 + eng.load_tokens / eng.tp as f64 * 1e-9;
            if best.is_none_or(|(b, _)| key < b) {
                best = Some((key, e as u32));
            }
        };
        for &e in &self.by_llm[m] {
            consider(self, e as usize, 0.0);
        }
        for g in &self.groups {
            if g.llm as usize == m && g.state == GState::Merging {
                consider(
                    self,
                    g.merged_engine as usize,
                    (g.ready_s - self.now).max(0.0),
                );
            }
        }
        let slo = inst.llms[m].slo_scale.map_or(f64::INFINITY, |k| {
            k * inst
                .step_cost(m, inst.home_tp(m))
                .isolated_latency_s(p, pred.max(1))
        });
        if let Some((key, e)) = best {
            if key / 1e6 <= knobs.slack_fraction * slo {
                return LongRoute::Engine(e);
            }
        }
        // The wait justifies a transformation: the smallest mergeable degree that holds it.
        let cand = (0..self.groups.len())
            .filter(|&g| self.groups[g].llm as usize == m && self.can_merge(g))
            .filter(|&g| {
                self.engines[self.groups[g].merged_engine as usize].capacity_tokens >= total
            })
            .min_by_key(|&g| {
                (
                    self.engines[self.groups[g].merged_engine as usize].tp,
                    self.group_resident(g),
                    g,
                )
            });
        let can_ever = (0..self.groups.len()).any(|g| {
            self.groups[g].llm as usize == m
                && self.engines[self.groups[g].merged_engine as usize].capacity_tokens >= total
        });
        if let Some(g) = cand {
            // A merge takes GPUs from the short requests, and goodput counts requests: a long
            // request costs as much prefill as dozens of short ones. So the merge waits for a
            // lull (little queued prefill work on the engines that keep serving short
            // requests); in a burst the long request waits, even past its SLO, rather than
            // take capacity the burst needs.
            // Latest merge start that still meets the long request's SLO, with its prefill
            // slowed by the chunk duty cycle beside short requests' decodes.
            let me = &self.engines[self.groups[g].merged_engine as usize];
            let pf = p as f64;
            let service = (1.0 + inst.sim.long_decode_ratio) * me.cost.prefill_s(pf, pf * pf, 1.0);
            let late = self.now >= self.deadline[r] - 1.5 * service;
            if late || (self.lull(m, g, knobs) && self.quiet(m, g, knobs)) {
                self.start_merge(g);
                return LongRoute::Engine(self.groups[g].merged_engine);
            }
            return LongRoute::Pending;
        }
        match best {
            Some((_, e)) => LongRoute::Engine(e),
            // No group can merge now (all busy transforming or absorbed): wait for one.
            None if can_ever => LongRoute::Pending,
            None => LongRoute::Nowhere,
        }
    }

    /// Whether the engines of LLM `m` outside group `g` have little queued prefill work: on
    /// average at most `lull_queue_tokens` waiting prompt tokens each.
    fn lull(&self, m: usize, g: usize, knobs: &TransformKnobs) -> bool {
        let trace = self.sim.trace;
        let members: &[u32] = &self.groups[g].members;
        let (mut tokens, mut n) = (0u64, 0u64);
        for &e in &self.by_llm[m] {
            let eng = &self.engines[e as usize];
            if members.contains(&eng.unit) {
                continue;
            }
            n += 1;
            tokens += eng
                .waiting
                .iter()
                .filter(|&&q| !self.long[q as usize])
                .map(|&q| trace.prompt[q as usize] as u64)
                .sum::<u64>();
        }
        n == 0 || tokens as f64 <= knobs.lull_queue_tokens * n as f64
    }

    /// Burst test of the merge timing: the short prompt tokens that arrived over the last
    /// `burst_window_s` are at most `burst_load` of what the GPUs outside group `g` can prefill
    /// in that time (at TP1 speed, 2048-token batches).
    fn quiet(&mut self, m: usize, g: usize, knobs: &TransformKnobs) -> bool {
        if knobs.burst_window_s <= 0.0 {
            return true;
        }
        let since = self.now - knobs.burst_window_s;
        while let Some(&(t, p)) = self.recent_short[m].front() {
            if t >= since {
                break;
            }
            self.recent_short[m].pop_front();
            self.recent_short_tokens[m] -= p as u64;
        }
        let members: &[u32] = &self.groups[g].members;
        let gpus: u32 = self.by_llm[m]
            .iter()
            .map(|&e| &self.engines[e as usize])
            .filter(|eng| !members.contains(&eng.unit))
            .map(|eng| eng.tp)
            .sum();
        let tp1 = self.sim.inst.step_cost(m, 1);
        let per_gpu_tok_s = 2048.0 / tp1.prefill_s(2048.0, 2048.0 * 2048.0, 1.0);
        let offered = self.recent_short_tokens[m] as f64;
        offered <= knobs.burst_load * per_gpu_tok_s * gpus as f64 * knobs.burst_window_s
    }

    fn schedule_pending(&mut self, dt: f64) {
        if !self.pending_tick {
            self.pending_tick = true;
            self.push(self.now + dt.max(1e-3), EV_PENDING, 0);
        }
    }

    /// Retries the long requests waiting for a merge, in arrival order.
    fn serve_pending(&mut self) {
        let trace = self.sim.trace;
        let n = self.pending.len();
        let mut dt = f64::INFINITY;
        for _ in 0..n {
            let Some(r) = self.pending.pop_front() else {
                break;
            };
            let r = r as usize;
            let m = trace.llm[r] as usize;
            let knobs = self
                .groups
                .iter()
                .find(|g| g.llm as usize == m)
                .map(|g| g.knobs.clone())
                .unwrap_or_default();
            dt = dt.min(knobs.decide_s);
            let total = (trace.prompt[r] + trace.output[r]) as u64;
            let cap_min = self.base_capacity(m);
            match self.route_long(r, m, total, cap_min, &knobs) {
                LongRoute::Engine(e) => {
                    self.assign(r, e as usize);
                }
                LongRoute::Pending => self.pending.push_back(r as u32),
                LongRoute::Nowhere => self.drop_req(r, DropReason::TooLong),
            }
        }
        if !self.pending.is_empty() {
            self.schedule_pending(dt);
        }
    }

    /// A group can merge when it is split, every member is active and not transforming, and
    /// (for a higher-level group) every child group is merged.
    /// KV capacity of the smallest engine LLM `m`'s transformation groups serve with when split
    /// to their base: a TP1 member, or the merged engine of a first-level group at or below its
    /// base degree (its members never serve, so "long" means too long for the base engine).
    /// `u64::MAX` without groups.
    fn base_capacity(&self, m: usize) -> u64 {
        let mut cap = u64::MAX;
        for g in &self.groups {
            if g.llm as usize == m && g.children.is_empty() {
                let me = g.merged_engine as usize;
                let e = if self.engines[me].tp > g.knobs.base_tp {
                    self.units[g.members[0] as usize].engines[0] as usize
                } else {
                    me
                };
                cap = cap.min(self.engines[e].capacity_tokens);
            }
        }
        cap
    }

    fn can_merge(&self, g: usize) -> bool {
        let grp = &self.groups[g];
        grp.state == GState::Split
            && grp.members.iter().all(|&u| {
                let unit = &self.units[u as usize];
                unit.active && !unit.draining
            })
            && grp
                .children
                .iter()
                .all(|&c| self.groups[c as usize].state == GState::Merged)
    }

    /// A merged group can split when its merged engine is serving on its own: not absorbed by
    /// a merged or transforming parent.
    fn can_split(&self, g: usize) -> bool {
        let grp = &self.groups[g];
        let unit = &self.units[grp.merged_unit as usize];
        grp.state == GState::Merged
            && unit.active
            && !unit.draining
            && self.engines[grp.merged_engine as usize].tp > grp.knobs.base_tp
            && (grp.parent == u32::MAX || self.groups[grp.parent as usize].state == GState::Split)
    }

    fn drop_req(&mut self, r: usize, why: DropReason) {
        self.status[r] = ST_DROPPED;
        self.out.dropped[r] = Some(why);
        self.remaining -= 1;
    }

    /// Called when request r leaves engine e for good (finish or drop).
    fn release(&mut self, e: usize, r: usize) {
        let w = self.load_weight(r);
        let chunked = self.is_chunked(r) as u32;
        let eng = &mut self.engines[e];
        eng.load_tokens -= w;
        eng.chunked_count = eng.chunked_count.saturating_sub(chunked);
        if self.long[r] {
            eng.long_count = eng.long_count.saturating_sub(1);
            if eng.merged_of != u32::MAX && !self.holds_long_work(e) {
                let g = self.engines[e].merged_of as usize;
                let t = self.now + self.groups[g].knobs.hysteresis_s;
                self.push(t, EV_SPLIT_CHECK, g as u32);
            }
        }
    }

    // ---------------------------------------------------------------- SM parts and KV

    /// Tries to take `k` parts; returns the slowdown factor on success.
    fn take_parts(&mut self, u: usize, k: u32) -> Option<f64> {
        let cfg = &self.sim.inst.sim;
        let unit = &mut self.units[u];
        let k = k as i32;
        if unit.parts_free - k < -(cfg.overload_parts as i32) {
            return None;
        }
        let over = (k - unit.parts_free.max(0)).max(0);
        unit.parts_free -= k;
        Some(1.0 + cfg.overload_slowdown * over as f64 / k as f64)
    }

    fn note_kv(&mut self, u: usize) {
        let unit = &self.units[u];
        if unit.pool_total > 0 {
            let f = (unit.pool_total - unit.pool_free) as f64 / unit.pool_total as f64;
            if f > self.stats.kv_peak_fraction {
                self.stats.kv_peak_fraction = f;
            }
        }
    }

    fn extra(&self, u: usize) -> f64 {
        let unit = &self.units[u];
        if self.now < unit.extra_until {
            unit.extra_s
        } else {
            0.0
        }
    }

    // ---------------------------------------------------------------- scheduling tick

    fn tick(&mut self, u: usize) {
        if !self.units[u].active || self.units[u].draining || self.now < self.units[u].stall_until {
            return;
        }
        let n = self.units[u].engines.len();
        let mut prefill_blocked = false;
        let start = self.units[u].pre_ptr;
        for k in 0..n {
            let e = self.units[u].engines[(start + k) % n] as usize;
            let eng = &self.engines[e];
            if eng.pre_busy || eng.waiting.is_empty() || eng.in_flight() >= eng.quota as usize {
                continue;
            }
            if eng.waiting_cache && (!eng.running.is_empty() || eng.dec_busy) {
                continue;
            }
            let parts = eng.pre_parts;
            let Some(slow) = self.take_parts(u, parts) else {
                prefill_blocked = true;
                continue;
            };
            if self.launch_prefill(e, slow) {
                self.units[u].pre_ptr = (start + k + 1) % n;
            } else {
                self.units[u].parts_free += parts as i32;
            }
        }
        if prefill_blocked {
            return;
        }
        let start = self.units[u].dec_ptr;
        for k in 0..n {
            let e = self.units[u].engines[(start + k) % n] as usize;
            let eng = &self.engines[e];
            if eng.dec_busy || eng.running.is_empty() {
                continue;
            }
            let parts = eng.dec_parts;
            let Some(slow) = self.take_parts(u, parts) else {
                continue;
            };
            if self.launch_decode(e, slow) {
                self.units[u].dec_ptr = (start + k + 1) % n;
            } else {
                self.units[u].parts_free += parts as i32;
            }
        }
    }

    fn launch_prefill(&mut self, e: usize, slow: f64) -> bool {
        let cfg = &self.sim.inst.sim;
        let bt = cfg.block_tokens;
        let u = self.engines[e].unit as usize;
        let mut tokens = 0u64;
        let mut sum_sq = 0.0;
        if cfg.prefill_chunk_tokens > 0 {
            return self.launch_prefill_chunked(e, slow);
        }
        // Long requests whose deferral has not expired wait while short requests decode here.
        debug_assert!(
            self.engines[e].long_count > 0
                || !self.engines[e]
                    .waiting
                    .iter()
                    .any(|&q| self.long[q as usize]),
            "long_count missed a queued long request"
        );
        let shorts_decoding = self.engines[e].long_count > 0 && {
            let eng = &self.engines[e];
            eng.waiting
                .iter()
                .any(|&q| self.long[q as usize] && self.now < self.defer_until[q as usize])
                && eng
                    .running
                    .iter()
                    .chain(&eng.dec_batch)
                    .any(|&q| !self.long[q as usize])
        };
        loop {
            let eng = &self.engines[e];
            let pos = if shorts_decoding {
                eng.waiting.iter().position(|&q| {
                    !self.long[q as usize] || self.now >= self.defer_until[q as usize]
                })
            } else if eng.waiting.is_empty() {
                None
            } else {
                Some(0)
            };
            let Some(pos) = pos else { break };
            let r = eng.waiting[pos] as usize;
            let len = self.req[r].tokens();
            if !eng.pre_batch.is_empty() && tokens + len as u64 > cfg.max_prefill_tokens as u64 {
                break;
            }
            if eng.in_flight() >= eng.quota as usize {
                break;
            }
            if !self.reserve_kv(e, u, r, len, bt) {
                break;
            }
            let eng = &mut self.engines[e];
            eng.waiting.remove(pos);
            eng.pre_batch.push(r as u32);
            tokens += len as u64;
            sum_sq += len as f64 * len as f64;
        }
        let eng = &mut self.engines[e];
        if eng.pre_batch.is_empty() {
            return false;
        }
        let dur = eng.cost.prefill_s(tokens as f64, sum_sq, eng.pre_sm) * slow + self.extra(u);
        self.start_prefill(e, dur);
        true
    }

    /// Reserves the KV blocks of request `r`'s `len`-token sequence (`bt` tokens per block) in
    /// the pool of engine `e`'s unit `u`; when the pool cannot hold them the engine is marked
    /// waiting for cache and nothing is reserved.
    fn reserve_kv(&mut self, e: usize, u: usize, r: usize, len: u32, bt: u32) -> bool {
        let blocks = len.div_ceil(bt);
        let need = u64::from(blocks) * self.engines[e].hb_per_block;
        if need > self.units[u].pool_free {
            self.engines[e].waiting_cache = true;
            return false;
        }
        self.units[u].pool_free -= need;
        self.req[r].blocks = blocks;
        true
    }

    /// Prefill admission with chunked long prefills (`prefill_chunk_tokens` > 0): short
    /// requests FCFS first, whole; then long requests FCFS, one chunk each, while no chunk hold
    /// is in force (a hold follows each chunk while short requests decode here). A long
    /// request's KV is taken at its first chunk; a short request that does not fit stops the
    /// admission of new requests, not the chunks of long requests that already hold their KV.
    fn launch_prefill_chunked(&mut self, e: usize, slow: f64) -> bool {
        let cfg = &self.sim.inst.sim;
        let bt = cfg.block_tokens;
        let u = self.engines[e].unit as usize;
        let mut tokens = 0u64;
        let mut sum_sq = 0.0;
        // A merged engine for long prefills (merge=prefill) exists to run them: its chunks do
        // not yield to the short requests it brought along from its members.
        let dedicated = self.prefill_engine(e);
        let decoding = !dedicated && {
            let eng = &self.engines[e];
            eng.running
                .iter()
                .chain(&eng.dec_batch)
                .any(|&q| !self.is_chunked(q as usize))
        };
        let chunks_allowed = self.now >= self.engines[e].chunk_hold_until || !decoding;
        // Short requests served by this engine now: decoding, or admitted to this batch (a
        // short one that waits for KV does not hold chunks back, or nothing would free it).
        let mut took_short = false;
        let mut new_blocked = false;
        loop {
            let eng = &self.engines[e];
            // A long request at risk of missing its deadline leads the batch, hold or not.
            let any_chunked = eng.chunked_count > 0;
            debug_assert!(
                any_chunked || !eng.waiting.iter().any(|&q| self.is_chunked(q as usize)),
                "chunked_count missed a queued chunked prefill"
            );
            let urgent = if any_chunked && eng.pre_batch.is_empty() && !new_blocked {
                eng.waiting
                    .iter()
                    .position(|&q| self.is_chunked(q as usize) && self.urgent(e, q as usize))
            } else {
                None
            };
            let short = if new_blocked {
                None
            } else {
                eng.waiting
                    .iter()
                    .position(|&q| !self.is_chunked(q as usize))
            };
            let pos = urgent.or(short).or_else(|| {
                if !(any_chunked && chunks_allowed) {
                    return None;
                }
                eng.waiting.iter().position(|&q| {
                    let q = q as usize;
                    self.is_chunked(q)
                        && (!new_blocked || self.req[q].blocks > 0)
                        && (!(decoding || (took_short && !dedicated)) || self.urgent(e, q))
                })
            });
            let Some(pos) = pos else { break };
            let r = eng.waiting[pos] as usize;
            let len = self.req[r].tokens();
            let c = if self.is_chunked(r) {
                (len - self.pre_done[r]).min(cfg.prefill_chunk_tokens)
            } else {
                len
            };
            if !eng.pre_batch.is_empty() && tokens + c as u64 > cfg.max_prefill_tokens as u64 {
                break;
            }
            if self.req[r].blocks == 0 {
                if eng.in_flight() >= eng.quota as usize {
                    break;
                }
                if !self.reserve_kv(e, u, r, len, bt) {
                    new_blocked = true;
                    continue;
                }
            }
            took_short |= !self.is_chunked(r);
            let eng = &mut self.engines[e];
            eng.waiting.remove(pos);
            eng.pre_batch.push(r as u32);
            let o = self.pre_done[r] as f64;
            self.chunk[r] = c;
            tokens += c as u64;
            // Attention over the chunk sees the prefix: (o + c)² − o² of the causal square.
            sum_sq += (o + c as f64) * (o + c as f64) - o * o;
        }
        let eng = &mut self.engines[e];
        if eng.pre_batch.is_empty() {
            return false;
        }
        let dur = eng.cost.prefill_s(tokens as f64, sum_sq, eng.pre_sm) * slow + self.extra(u);
        self.start_prefill(e, dur);
        true
    }

    /// Whether chunked request `r` on engine `e` must run now to meet its deadline: its remaining
    /// prefill at the chunk duty cycle beside short decodes, with a 1.5× margin (the margin of
    /// the merge deadline), reaches the deadline. Until then its chunks run only while no short
    /// request is admitted or decoding on the engine: a long
    /// request is one request, and its prefill costs the capacity of dozens of short ones.
    /// From then on each of its chunks leads a prefill batch, ahead of short prompts and
    /// without the decode hold.
    fn urgent(&self, e: usize, r: usize) -> bool {
        let eng = &self.engines[e];
        let len = self.req[r].tokens() as f64;
        let done = self.pre_done[r] as f64;
        let ratio = self.sim.inst.sim.long_decode_ratio;
        let rest = (1.0 + ratio) * eng.cost.prefill_s(len - done, len * len - done * done, 1.0);
        self.now + 1.5 * rest >= self.deadline[r]
    }

    /// Prompt tokens of the chunked requests on engine `e` (queued, prefilling or decoding).
    fn chunked_tokens(&self, e: usize) -> f64 {
        let eng = &self.engines[e];
        eng.waiting
            .iter()
            .chain(&eng.running)
            .chain(&eng.pre_batch)
            .chain(&eng.dec_batch)
            .filter(|&&q| self.is_chunked(q as usize))
            .map(|&q| self.sim.trace.prompt[q as usize] as f64)
            .sum()
    }

    /// What request `r` adds to its engine's routing load (`load_tokens`): its tokens, prompt
    /// and output. A chunked long prefill adds nothing: its chunks run only after the short
    /// prefills queued on its engine and yield to their decodes, so it does not delay a short
    /// request sent there, and counting its tens of thousands of tokens would keep short
    /// requests off an engine (a TP-N engine that holds it) that has capacity to spare.
    fn load_weight(&self, r: usize) -> f64 {
        if self.is_chunked(r) {
            0.0
        } else {
            let trace = self.sim.trace;
            (trace.prompt[r] + trace.output[r]) as f64
        }
    }

    /// Whether request `r`'s prompt is prefilled in chunks.
    fn is_chunked(&self, r: usize) -> bool {
        let cfg = &self.sim.inst.sim;
        cfg.prefill_chunk_tokens > 0 && self.sim.trace.prompt[r] > cfg.chunk_above_tokens
    }

    /// Marks engine `e`'s prefill batch as running for `dur` seconds.
    fn start_prefill(&mut self, e: usize, dur: f64) {
        let u = self.engines[e].unit as usize;
        let eng = &mut self.engines[e];
        eng.pre_busy = true;
        eng.pre_parts_held = eng.pre_parts;
        eng.pre_started = self.now;
        let batch = eng.pre_batch.len() as u32;
        self.note_kv(u);
        self.stats.iterations += 1;
        self.stats.prefill_iterations += 1;
        if self.record {
            self.iters.push(IterRecord {
                engine: e as u32,
                prefill: true,
                start_s: self.now,
                end_s: self.now + dur,
                batch,
            });
        }
        self.push(self.now + dur, EV_PREFILL, e as u32);
    }

    fn launch_decode(&mut self, e: usize, slow: f64) -> bool {
        let cfg = &self.sim.inst.sim;
        let bt = cfg.block_tokens;
        let u = self.engines[e].unit as usize;
        let hb = self.engines[e].hb_per_block;
        let b = self.engines[e]
            .running
            .len()
            .min(self.engines[e].quota as usize);
        // Tail preemption (§1.8): the longest prefix whose new blocks fit in the free blocks plus
        // the blocks the suffix would release.
        let mut suffix_held: u64 = 0;
        for i in 0..b {
            suffix_held += self.req[self.engines[e].running[i] as usize].blocks as u64 * hb;
        }
        let free = self.units[u].pool_free;
        let mut need: u64 = 0;
        let mut k = 0;
        while k < b {
            let r = self.engines[e].running[k] as usize;
            let want = self.req[r].tokens().div_ceil(bt);
            let extra = want.saturating_sub(self.req[r].blocks) as u64 * hb;
            let held = self.req[r].blocks as u64 * hb;
            if need + extra > free + (suffix_held - held) {
                break;
            }
            need += extra;
            suffix_held -= held;
            k += 1;
        }
        if k < b {
            // Preempt running[k..b]; keep their order at the front of the waiting queue.
            self.scratch.clear();
            self.scratch.extend(self.engines[e].running.drain(k..b));
            for i in (0..self.scratch.len()).rev() {
                let r = self.scratch[i] as usize;
                self.units[u].pool_free += self.req[r].blocks as u64 * hb;
                self.req[r].blocks = 0;
                self.out.preemptions[r] += 1;
                self.stats.preemptions += 1;
                if self.out.preemptions[r] > cfg.max_preemptions {
                    self.release(e, r);
                    self.drop_req(r, DropReason::Preempted);
                } else {
                    self.engines[e].waiting.push_front(r as u32);
                }
            }
            self.engines[e].waiting_cache = true;
        }
        if k == 0 {
            return false;
        }
        let mut ctx = 0u64;
        let eng = &mut self.engines[e];
        for r in eng.running.drain(..k) {
            let r = r as usize;
            let want = self.req[r].tokens().div_ceil(bt);
            if want > self.req[r].blocks {
                self.units[u].pool_free -= (want - self.req[r].blocks) as u64 * hb;
                self.req[r].blocks = want;
            }
            ctx += self.req[r].tokens() as u64;
            eng.dec_batch.push(r as u32);
        }
        let dur = eng.cost.decode_s(k as f64, ctx as f64, eng.dec_sm) * slow;
        eng.dec_busy = true;
        eng.dec_parts_held = eng.dec_parts;
        let kk = k as u32;
        let old = eng.hist[eng.hist_pos];
        eng.hist_sum = eng.hist_sum + kk as u64
            - if eng.hist_len == eng.hist.len() {
                old as u64
            } else {
                0
            };
        eng.hist[eng.hist_pos] = kk;
        eng.hist_pos = (eng.hist_pos + 1) % eng.hist.len();
        eng.hist_len = (eng.hist_len + 1).min(eng.hist.len());
        let dur = dur + self.extra(u);
        self.note_kv(u);
        self.stats.iterations += 1;
        self.stats.decode_iterations += 1;
        if self.record {
            self.iters.push(IterRecord {
                engine: e as u32,
                prefill: false,
                start_s: self.now,
                end_s: self.now + dur,
                batch: kk,
            });
        }
        self.push(self.now + dur, EV_DECODE, e as u32);
        true
    }

    fn finish(&mut self, e: usize, r: usize) {
        let u = self.engines[e].unit as usize;
        self.units[u].pool_free += self.req[r].blocks as u64 * self.engines[e].hb_per_block;
        self.req[r].blocks = 0;
        self.status[r] = ST_DONE;
        self.out.finish_s[r] = self.now;
        self.remaining -= 1;
        self.release(e, r);
        // Freed blocks let engines that stopped admitting after a preemption try again.
        for i in 0..self.units[u].engines.len() {
            let x = self.units[u].engines[i] as usize;
            self.engines[x].waiting_cache = false;
        }
    }

    fn prefill_done(&mut self, e: usize) {
        let u = self.engines[e].unit as usize;
        self.units[u].parts_free += self.engines[e].pre_parts_held as i32;
        self.engines[e].pre_busy = false;
        let batch = std::mem::take(&mut self.engines[e].pre_batch);
        let chunked = self.sim.inst.sim.prefill_chunk_tokens > 0;
        let mut partial = false;
        for &r in batch.iter().rev() {
            let r = r as usize;
            if !chunked || !self.is_chunked(r) {
                continue;
            }
            self.pre_done[r] += self.chunk[r];
            if self.pre_done[r] < self.req[r].tokens() {
                // More chunks to go: back to the front of the queue, KV kept.
                partial = true;
                self.engines[e].waiting.push_front(r as u32);
            }
        }
        if partial {
            let ratio = self.sim.inst.sim.long_decode_ratio;
            let eng = &mut self.engines[e];
            eng.chunk_hold_until = self.now + ratio * (self.now - eng.pre_started);
        }
        // merge=prefill: the last long prefill on a merged engine is done, so it may split back.
        if self.prefill_engine(e)
            && batch.iter().any(|&r| self.long[r as usize])
            && !self.holds_long_work(e)
        {
            let g = self.engines[e].merged_of as usize;
            let t = self.now + self.groups[g].knobs.hysteresis_s;
            self.push(t, EV_SPLIT_CHECK, g as u32);
        }
        for &r in &batch {
            let r = r as usize;
            if chunked && self.is_chunked(r) {
                if self.pre_done[r] < self.req[r].tokens() {
                    continue;
                }
                self.pre_done[r] = 0;
            }
            if self.req[r].gen == 0 {
                self.req[r].gen = 1;
                self.out.first_token_s[r] = self.now;
            }
            if self.req[r].gen >= self.req[r].output {
                self.finish(e, r);
            } else {
                self.engines[e].running.push(r as u32);
            }
        }
        let mut batch = batch;
        batch.clear();
        self.engines[e].pre_batch = batch;
        self.after_job(u);
    }

    fn decode_done(&mut self, e: usize) {
        let u = self.engines[e].unit as usize;
        self.units[u].parts_free += self.engines[e].dec_parts_held as i32;
        self.engines[e].dec_busy = false;
        let mut batch = std::mem::take(&mut self.engines[e].dec_batch);
        for &r in &batch {
            let r = r as usize;
            self.req[r].gen += 1;
            if self.req[r].gen >= self.req[r].output {
                self.finish(e, r);
            } else {
                self.engines[e].running.push(r as u32);
            }
        }
        batch.clear();
        self.engines[e].dec_batch = batch;
        self.after_job(u);
    }

    fn after_job(&mut self, u: usize) {
        if self.units[u].draining {
            self.try_finalize_unit(u);
        } else {
            self.tick(u);
        }
    }

    // ---------------------------------------------------------------- ADBS quota rebalancing

    fn rebalance(&mut self) {
        let bt = self.sim.inst.sim.block_tokens as f64;
        for u in 0..self.units.len() {
            if !self.units[u].active || self.units[u].engines.len() < 2 {
                continue;
            }
            let ids = self.units[u].engines.clone();
            // Sequences' worth of head-blocks per engine: blocks of an average sequence.
            let seq_hb = |eng: &Engine, lens: (f64, f64)| {
                ((lens.0 + lens.1) / bt).ceil().max(1.0) * eng.hb_per_block as f64
            };
            let mut donated = 0.0;
            let mut wants: Vec<(usize, f64)> = Vec::new();
            for &e in &ids {
                let e = e as usize;
                let eng = &self.engines[e];
                if eng.hist_len == 0 || eng.quota == u32::MAX {
                    continue;
                }
                let avgbs = eng.hist_sum as f64 / eng.hist_len as f64;
                let util = avgbs / eng.quota as f64;
                let q = (eng.waiting.len() + eng.running.len()) as f64;
                let sh = seq_hb(eng, self.mean_lens[eng.llm as usize]);
                if util < 0.9 {
                    let give = ((0.95 - util) * eng.quota as f64).floor();
                    let give = give.min(eng.quota as f64 - 1.0).max(0.0);
                    self.engines[e].quota -= give as u32;
                    donated += give * sh;
                } else if q >= 1.1 * avgbs {
                    let want = (0.1 * avgbs).max(1.0).min(q - avgbs).max(0.0);
                    wants.push((e, want * sh));
                }
            }
            let total_want: f64 = wants.iter().map(|w| w.1).sum();
            if total_want <= 0.0 {
                // Nobody needs the donation: give it back where it came from is not tracked, so
                // return it evenly to the donors' successors — simplest: spread over all engines.
                if donated > 0.0 {
                    for &e in &ids {
                        let e = e as usize;
                        let sh = seq_hb(
                            &self.engines[e],
                            self.mean_lens[self.engines[e].llm as usize],
                        );
                        let add = (donated / ids.len() as f64 / sh).floor() as u32;
                        self.engines[e].quota = self.engines[e].quota.saturating_add(add);
                    }
                }
                continue;
            }
            for (e, w) in wants {
                let sh = seq_hb(
                    &self.engines[e],
                    self.mean_lens[self.engines[e].llm as usize],
                );
                let grant = (donated * w / total_want).min(w);
                self.engines[e].quota = self.engines[e]
                    .quota
                    .saturating_add((grant / sh).floor() as u32);
            }
        }
        for u in 0..self.units.len() {
            self.tick(u);
        }
    }

    // ---------------------------------------------------------------- TP transformation

    /// Resident KV of a split group's members, head-blocks summed over members.
    fn group_resident(&self, g: usize) -> u64 {
        self.groups[g]
            .members
            .iter()
            .map(|&u| self.units[u as usize].pool_total - self.units[u as usize].pool_free)
            .sum()
    }

    /// Duration of a transformation moving `resident_hb` head-blocks per GPU (max over GPUs).
    fn transform_time(&self, g: usize, resident_hb: u64, split: bool) -> f64 {
        let inst = self.sim.inst;
        let grp = &self.groups[g];
        let k = &grp.knobs;
        let spec = &inst.llms[grp.llm as usize].spec;
        let n = grp.members.len() as f64;
        let frac = (n - 1.0) / n;
        // Degree of each member engine (1 for TP1 units, N for a child group's TP-N engine).
        let d = self.engines[self.units[grp.members[0] as usize].engines[0] as usize].tp as f64;
        let bw = inst.gpu.nvlink_gbps * 1e9;
        let moved_bytes = frac * resident_hb as f64 * HEAD_BLOCK_BYTES;
        let copies = if k.head_centric {
            frac * resident_hb as f64
        } else {
            // Token-major layout: one strided copy per (token, KV head, layer).
            let per_token_hb = spec.kv_bytes_per_token() / HEAD_BLOCK_BYTES;
            let tokens = resident_hb as f64 / per_token_hb.max(1e-9);
            frac * tokens * spec.kv_heads as f64 * spec.layers as f64
        };
        let t_kv = moved_bytes / bw + k.c_copy_s * copies + k.c_launch_s * spec.layers as f64;
        // Weights per GPU at the members' degree: a split regathers the (n − 1)/n of them that
        // the merged layout dropped.
        let w = spec.weight_bytes() / d;
        let t_w = if split {
            let src = if k.split_from_host {
                inst.gpu.host_gbps
            } else {
                inst.gpu.nvlink_gbps
            };
            frac * w / (src * 1e9)
        } else if k.weight_padding {
            0.0
        } else {
            w / n / (inst.gpu.hbm_gbps * 1e9)
        };
        t_kv + t_w + k.c_init_s
    }

    fn start_merge(&mut self, g: usize) {
        let per_gpu = self.groups[g]
            .members
            .iter()
            .map(|&u| self.units[u as usize].pool_total - self.units[u as usize].pool_free)
            .max()
            .unwrap_or(0);
        let t = self.transform_time(g, per_gpu, false);
        self.groups[g].state = GState::Merging;
        let members = self.groups[g].members.clone();
        let ready = self.begin_transform(g, &members, t);
        self.groups[g].ready_s = ready;
        self.stats.merges += 1;
        self.push(ready, EV_READY, g as u32);
    }

    fn begin_transform(&mut self, g: usize, units: &[u32], t: f64) -> f64 {
        let k = self.groups[g].knobs.clone();
        let layers = self.sim.inst.llms[self.groups[g].llm as usize].spec.layers as f64;
        let ready = if k.staggered {
            let dur = t + layers * k.c_sync_s;
            for &u in units {
                let unit = &mut self.units[u as usize];
                unit.extra_s = t / layers + k.c_sync_s;
                unit.extra_until = self.now + dur;
            }
            self.now + dur
        } else {
            for &u in units {
                self.units[u as usize].stall_until = self.now + t;
            }
            self.now + t
        };
        self.stats.transform_s += ready - self.now;
        ready
    }

    fn transform_ready(&mut self, g: usize) {
        let units: Vec<u32> = match self.groups[g].state {
            GState::Merging => self.groups[g].members.clone(),
            GState::Splitting => vec![self.groups[g].merged_unit],
            _ => return,
        };
        for &u in &units {
            self.units[u as usize].draining = true;
            self.units[u as usize].stall_until = 0.0;
        }
        self.try_finalize_group(g);
    }

    fn try_finalize_unit(&mut self, u: usize) {
        let u32u = u as u32;
        let Some(g) = self.groups.iter().position(|gr| {
            (gr.state == GState::Merging && gr.members.contains(&u32u))
                || (gr.state == GState::Splitting && gr.merged_unit == u32u)
        }) else {
            return;
        };
        self.try_finalize_group(g);
    }

    fn try_finalize_group(&mut self, g: usize) {
        let units: Vec<u32> = match self.groups[g].state {
            GState::Merging => self.groups[g].members.clone(),
            GState::Splitting => vec![self.groups[g].merged_unit],
            _ => return,
        };
        let busy = units.iter().any(|&u| {
            let unit = &self.units[u as usize];
            !unit.draining
                || unit
                    .engines
                    .iter()
                    .any(|&e| !self.engines[e as usize].idle())
        });
        if busy {
            return;
        }
        if self.groups[g].state == GState::Merging {
            self.finish_merge(g);
        } else {
            self.finish_split(g);
        }
    }

    fn finish_merge(&mut self, g: usize) {
        let me = self.groups[g].merged_engine as usize;
        let mu = self.groups[g].merged_unit as usize;
        let mut running: Vec<u32> = Vec::new();
        let mut waiting: Vec<u32> = self.engines[me].waiting.drain(..).collect();
        let mut used: u64 = 0;
        let mhb = self.engines[me].hb_per_block;
        for &u in &self.groups[g].members.clone() {
            let u = u as usize;
            let e = self.units[u].engines[0] as usize;
            // Running requests and partly prefilled (chunked) ones keep their KV pages.
            for &r in self.engines[e]
                .running
                .iter()
                .chain(&self.engines[e].waiting)
            {
                used += self.req[r as usize].blocks as u64 * mhb;
            }
            running.append(&mut self.engines[e].running);
            waiting.extend(self.engines[e].waiting.drain(..));
            let load = self.engines[e].load_tokens;
            self.engines[me].load_tokens += load;
            self.engines[e].load_tokens = 0.0;
            self.engines[e].active = false;
            let unit = &mut self.units[u];
            unit.active = false;
            unit.draining = false;
            unit.pool_free = unit.pool_total;
            unit.extra_until = 0.0;
        }
        waiting.sort_unstable();
        for &r in running.iter().chain(waiting.iter()) {
            self.out.engine[r as usize] = me as u32;
        }
        for &u in &self.groups[g].members.clone() {
            let e = self.units[u as usize].engines[0] as usize;
            self.engines[e].long_count = 0;
            self.engines[e].chunked_count = 0;
        }
        let here = || running.iter().chain(waiting.iter()).map(|&r| r as usize);
        let long_here = here().filter(|&r| self.long[r]).count() as u32;
        let chunked_here = here().filter(|&r| self.is_chunked(r)).count() as u32;
        let eng = &mut self.engines[me];
        eng.long_count = long_here;
        eng.chunked_count = chunked_here;
        eng.running = running;
        eng.waiting = waiting.into();
        eng.active = true;
        let unit = &mut self.units[mu];
        unit.active = true;
        unit.draining = false;
        unit.pool_free = unit.pool_total.saturating_sub(used);
        unit.parts_free = self.sim.inst.sim.sm_parts as i32;
        self.groups[g].state = GState::Merged;
        self.groups[g].last_change_s = self.now;
        self.note_kv(mu);
        self.rebuild_by_llm();
        if !self.holds_long_work(me) {
            let t = self.now + self.groups[g].knobs.hysteresis_s;
            self.push(t, EV_SPLIT_CHECK, g as u32);
        }
        self.tick(mu);
    }

    fn split_check(&mut self, g: usize) {
        let grp = &self.groups[g];
        // The adaptive policy splits from `decide`, which also weighs the queued work.
        if grp.state != GState::Merged
            || grp.knobs.policy == TransformPolicy::Adaptive
            || !self.can_split(g)
        {
            return;
        }
        if self.now < grp.last_long_s + grp.knobs.hysteresis_s - 1e-9 {
            return;
        }
        // Long requests waiting for a merge get this engine's memory first (joining it costs
        // no transformation); only if none takes it does the group split back.
        if !self.pending.is_empty() {
            self.serve_pending();
        }
        let grp = &self.groups[g];
        if grp.state != GState::Merged
            || !self.can_split(g)
            || self.holds_long_work(grp.merged_engine as usize)
        {
            return;
        }
        if !self.resident_fits_members(g) {
            // Too much short-request KV for the TP1 pools: take no new short requests and
            // look again shortly, as they finish.
            self.groups[g].closing = true;
            let dt = self.groups[g].knobs.decide_s.max(1e-3);
            self.push(self.now + dt, EV_SPLIT_CHECK, g as u32);
            return;
        }
        self.start_split(g);
    }

    fn start_split(&mut self, g: usize) {
        let mu = self.groups[g].merged_unit as usize;
        let resident = self.units[mu].pool_total - self.units[mu].pool_free;
        let t = self.transform_time(g, resident, true);
        self.groups[g].state = GState::Splitting;
        let ready = self.begin_transform(g, &[mu as u32], t);
        self.groups[g].ready_s = ready;
        self.stats.splits += 1;
        self.push(ready, EV_READY, g as u32);
    }

    // ---------------------------------------------------------------- adaptive policy

    /// Fluid estimate of the time `n_eng` engines of engine `proto`'s kind (capacity, step cost)
    /// need for the requests `reqs`, counted from their arrival (whole prompt to prefill,
    /// expected output from the first token), when they run at full efficiency; i.e. the load
    /// sample measured in units of the configuration's capacity for this request mix:
    /// - prefill: the cost model's time for every prompt, spread over the engines;
    /// - decode: Σ expected steps, in batches as large as the engine's KV holds average final
    ///   footprints (prompt + expected output). This cap is what makes TP1 slow on long
    ///   contexts: Qwen2.5-32B at TP1 holds ≈ 25 k tokens, so a handful of 4 k-token requests
    ///   serialises it, while TP2 holds ≈ 300 k.
    ///
    /// Capacity, not the latency of the few requests queued now, is the yardstick: at low load
    /// every configuration meets the SLO and TP-N's lower latency buys no goodput, while a merge
    /// made in a lull is caught by the next prefill burst at a fraction of the prefill
    /// throughput (an earlier version that weighed the queue merged 30–50 times on the code
    /// trace and lost 10–25 % goodput to static TP1). Prefill and decode add up because a unit
    /// does not run them concurrently at full SM shares.
    fn mix_time(&self, reqs: &[u32], n_eng: usize, proto: usize) -> f64 {
        if reqs.is_empty() {
            return 0.0;
        }
        let trace = self.sim.trace;
        let eng = &self.engines[proto];
        let m = eng.llm as usize;
        let rest = self.sim.residual_output(m, 1);
        let (mut prefill, mut foot, mut mid_ctx) = (0.0, 0.0, 0.0);
        for &r in reqs {
            let p = trace.prompt[r as usize] as f64;
            prefill += eng.cost.prefill_s(p, p * p, 1.0);
            foot += p + rest;
            mid_ctx += p + rest / 2.0;
        }
        let n = reqs.len() as f64;
        let k = n_eng.max(1) as f64;
        // Decode batch: as many average footprints as the KV holds, but no more sequences than
        // the sample gives each engine (a fluid bound on concurrency).
        let batch = (eng.capacity_tokens as f64 / (foot / n))
            .floor()
            .min((n / k).ceil())
            .max(1.0);
        let per_step = eng.cost.decode_s(batch, batch * mid_ctx / n, 1.0);
        prefill / k + n * rest / k / batch * per_step
    }

    /// Wall time a transformation of group `g` costs its engines: the §3.5 duration plus, when
    /// staggered, one synchronisation per layer step.
    fn transform_penalty(&self, g: usize, resident_hb: u64, split: bool) -> f64 {
        let k = &self.groups[g].knobs;
        let t = self.transform_time(g, resident_hb, split);
        if k.staggered {
            let layers = self.sim.inst.llms[self.groups[g].llm as usize].spec.layers as f64;
            t + layers * k.c_sync_s
        } else {
            t
        }
    }

    /// The adaptive policy's sample of a group's load: its arrivals of the last `mix_window_s`,
    /// less those whose expected footprint does not fit a TP1 engine (they force a merge on
    /// arrival and pin the group merged while present; once gone they should not argue against
    /// splitting).
    fn load_mix(&mut self, g: usize) -> Vec<u32> {
        let horizon = self.now - self.groups[g].knobs.mix_window_s;
        while self.groups[g]
            .recent
            .front()
            .is_some_and(|&(t, _)| t < horizon)
        {
            self.groups[g].recent.pop_front();
        }
        let trace = self.sim.trace;
        let grp = &self.groups[g];
        let m = grp.llm as usize;
        let e1 = self.units[grp.members[0] as usize].engines[0] as usize;
        let cap1 = self.engines[e1].capacity_tokens as f64;
        grp.recent
            .iter()
            .map(|&(_, r)| r)
            .filter(|&r| trace.prompt[r as usize] as f64 + self.sim.residual_output(m, 1) <= cap1)
            .collect()
    }

    /// Adaptive policy, run every `decide_s` per group. The group compares the time its recent
    /// arrivals (`load_mix`) take at full efficiency as N × TP1 (`t1`) and as one TP-N engine
    /// (`tn`), i.e. which configuration has more capacity for the request mix it is receiving:
    /// - split → merged when `tn` + merge cost + `gain_margin` · `t1` < `t1` (a merge must pay
    ///   for itself with a margin, since a wrong one costs a merge and a split);
    /// - merged → split when no request that needs TP-N memory is left, `hysteresis_s` has passed
    ///   since the last one arrived, the resident KV fits the TP1 pools, and either no load is
    ///   left in the window or `t1` + split cost ≤ `tn` (TP1 is the home configuration: the merged
    ///   state has to keep earning its place, and the band between the two rules is the
    ///   hysteresis);
    /// - never within `min_dwell_s` of the last transformation, nor while one is in progress.
    ///
    /// Long requests that do not fit TP1 are not decided here: `arrive` merges for them at once.
    fn decide(&mut self, g: usize) {
        let mix = self.load_mix(g);
        let grp = &self.groups[g];
        if self.now < grp.last_change_s + grp.knobs.min_dwell_s - 1e-9 {
            return;
        }
        let members: Vec<usize> = grp
            .members
            .iter()
            .map(|&u| self.units[u as usize].engines[0] as usize)
            .collect();
        let me = grp.merged_engine as usize;
        let n = members.len();
        match grp.state {
            GState::Split => {
                if mix.is_empty() || !self.can_merge(g) {
                    return;
                }
                let t1 = self.mix_time(&mix, n, members[0]);
                let tn = self.mix_time(&mix, 1, me);
                let resident = grp
                    .members
                    .iter()
                    .map(|&u| self.units[u as usize].pool_total - self.units[u as usize].pool_free)
                    .max()
                    .unwrap_or(0);
                let cost = self.transform_penalty(g, resident, false);
                if tn + cost + self.groups[g].knobs.gain_margin * t1 < t1 {
                    self.start_merge(g);
                }
            }
            GState::Merged => {
                let k = &grp.knobs;
                if !self.can_split(g)
                    || self.now < grp.last_long_s + k.hysteresis_s - 1e-9
                    || self.needs_merged(g)
                {
                    return;
                }
                if !self.resident_fits_members(g) {
                    return;
                }
                // Split back unless the merged engine is clearly faster for the load (the merge
                // rule without the transformation cost: the band between the two is the
                // hysteresis). A group merged for long requests thus returns to its members as
                // soon as those have drained and the load does not argue for staying merged.
                let go = mix.is_empty() || {
                    let t1 = self.mix_time(&mix, n, members[0]);
                    let tn = self.mix_time(&mix, 1, me);
                    tn + self.groups[g].knobs.gain_margin * t1 >= t1
                };
                if go {
                    self.start_split(g);
                }
            }
            GState::Merging | GState::Splitting => {}
        }
    }

    /// Whether the KV resident on group `g`'s merged engine fits 90 % of its members' pools (a
    /// TP1 engine needs N× the head-blocks per token-block of the TP-N engine), so that a split
    /// keeps every resident request's pages instead of recomputing some.
    fn resident_fits_members(&self, g: usize) -> bool {
        let grp = &self.groups[g];
        let mu = grp.merged_unit as usize;
        let resident = self.units[mu].pool_total - self.units[mu].pool_free;
        let tp1_pool: u64 = grp
            .members
            .iter()
            .map(|&u| self.units[u as usize].pool_total)
            .sum();
        let member = self.units[grp.members[0] as usize].engines[0] as usize;
        let resident_tp1 = resident * self.engines[member].hb_per_block
            / self.engines[grp.merged_engine as usize].hb_per_block.max(1);
        resident_tp1 <= tp1_pool * 9 / 10
    }

    /// Whether a request in group `g`'s merged engine would not fit a member engine: its
    /// footprint (prompt plus the larger of the predicted output and what it has generated)
    /// exceeds `long_fraction` of a member's KV capacity.
    fn needs_merged(&self, g: usize) -> bool {
        let eng = &self.engines[self.groups[g].merged_engine as usize];
        eng.waiting
            .iter()
            .chain(&eng.running)
            .chain(&eng.pre_batch)
            .chain(&eng.dec_batch)
            .any(|&r| self.too_long_for_members(g, r as usize))
    }

    /// Whether request `r`'s footprint (prompt plus the larger of the predicted output and what
    /// it has generated) exceeds `long_fraction` of a member engine's KV capacity in group `g`.
    fn too_long_for_members(&self, g: usize, r: usize) -> bool {
        let grp = &self.groups[g];
        let member = &self.engines[self.units[grp.members[0] as usize].engines[0] as usize];
        let limit = grp.knobs.long_fraction * member.capacity_tokens as f64;
        let pred = self.sim.pred_out[grp.llm as usize][0];
        (self.req[r].prompt + pred.max(self.req[r].gen + 1)) as f64 > limit
    }

    /// Whether engine `e` holds long requests that keep its group merged: any long request,
    /// or with merge=prefill (on a merged engine above its base) only those whose prefill is not
    /// done (queued, partly prefilled or prefilling) and those that would not fit a member
    /// engine (footprint as in `needs_merged`): the rest decode on the members after the split.
    fn holds_long_work(&self, e: usize) -> bool {
        let eng = &self.engines[e];
        if eng.long_count == 0 {
            return false;
        }
        if !self.prefill_engine(e) {
            return true;
        }
        let g = eng.merged_of as usize;
        let prefilling = eng
            .waiting
            .iter()
            .chain(&eng.pre_batch)
            .any(|&r| self.long[r as usize]);
        prefilling
            || eng.running.iter().chain(&eng.dec_batch).any(|&r| {
                let r = r as usize;
                self.long[r] && self.too_long_for_members(g, r)
            })
    }

    /// Whether engine `e` is the merged engine, above its base degree, of a group with
    /// transient merges for long prefills (merge=prefill).
    fn prefill_engine(&self, e: usize) -> bool {
        let eng = &self.engines[e];
        eng.merged_of != u32::MAX && {
            let g = &self.groups[eng.merged_of as usize];
            g.knobs.merge_prefill_above > 0 && eng.tp > g.knobs.base_tp
        }
    }

    fn finish_split(&mut self, g: usize) {
        let me = self.groups[g].merged_engine as usize;
        let mu = self.groups[g].merged_unit as usize;
        let members: Vec<usize> = self.groups[g].members.iter().map(|&u| u as usize).collect();
        let running: Vec<u32> = self.engines[me].running.drain(..).collect();
        let waiting: Vec<u32> = self.engines[me].waiting.drain(..).collect();
        for &u in &members {
            let e = self.units[u].engines[0] as usize;
            self.engines[e].active = true;
            let unit = &mut self.units[u];
            unit.active = true;
            unit.draining = false;
            unit.pool_free = unit.pool_total;
            unit.parts_free = self.sim.inst.sim.sm_parts as i32;
        }
        let member_cap = self.engines[self.units[members[0]].engines[0] as usize].capacity_tokens;
        let trace = self.sim.trace;
        let mut rerouted = false;
        let mut place = |this: &mut Self, r: usize, keep_kv: bool| {
            // A request the members cannot hold (a long one that reached the engine while it
            // was splitting) goes back to the long-request scheduler, which merges for it;
            // on a member it would wait forever.
            if (trace.prompt[r] + trace.output[r]) as u64 > member_cap {
                if keep_kv {
                    this.out.preemptions[r] += 1;
                    this.stats.preemptions += 1;
                }
                this.req[r].blocks = 0;
                this.pre_done[r] = 0;
                this.status[r] = ST_QUEUED;
                this.pending.push_back(r as u32);
                rerouted = true;
                return;
            }
            // The member with the most free KV keeps the request's pages; else recompute.
            let u = *members
                .iter()
                .max_by_key(|&&u| (this.units[u].pool_free, std::cmp::Reverse(u)))
                .unwrap_or(&members[0]);
            let e = this.units[u].engines[0] as usize;
            let need = this.req[r].blocks as u64 * this.engines[e].hb_per_block;
            let w = this.load_weight(r);
            this.engines[e].load_tokens += w;
            this.out.engine[r] = e as u32;
            let long = this.long[r] as u32;
            let chunked = this.is_chunked(r) as u32;
            if keep_kv && need <= this.units[u].pool_free {
                this.units[u].pool_free -= need;
                this.engines[e].running.push(r as u32);
                this.engines[e].long_count += long;
                this.engines[e].chunked_count += chunked;
            } else {
                if keep_kv {
                    this.out.preemptions[r] += 1;
                    this.stats.preemptions += 1;
                }
                this.req[r].blocks = 0;
                this.pre_done[r] = 0;
                // Least-loaded member by outstanding tokens.
                let u2 = *members
                    .iter()
                    .min_by(|&&a, &&b| {
                        let la = this.engines[this.units[a].engines[0] as usize].load_tokens;
                        let lb = this.engines[this.units[b].engines[0] as usize].load_tokens;
                        la.total_cmp(&lb).then(a.cmp(&b))
                    })
                    .unwrap_or(&members[0]);
                let e2 = this.units[u2].engines[0] as usize;
                if e2 != e {
                    this.engines[e].load_tokens -= w;
                    this.engines[e2].load_tokens += w;
                    this.out.engine[r] = e2 as u32;
                }
                this.engines[e2].waiting.push_back(r as u32);
                this.engines[e2].long_count += long;
                this.engines[e2].chunked_count += chunked;
            }
        };
        for &r in &running {
            place(self, r as usize, true);
        }
        for &r in &waiting {
            place(self, r as usize, false);
        }
        let eng = &mut self.engines[me];
        eng.active = false;
        eng.load_tokens = 0.0;
        eng.long_count = 0;
        eng.chunked_count = 0;
        let unit = &mut self.units[mu];
        unit.active = false;
        unit.draining = false;
        unit.pool_free = unit.pool_total;
        unit.extra_until = 0.0;
        self.groups[g].state = GState::Split;
        self.groups[g].closing = false;
        self.groups[g].last_change_s = self.now;
        self.rebuild_by_llm();
        for &u in &members {
            self.note_kv(u);
            self.tick(u);
        }
        // Stepwise: the children's merged engines serve on their own again; each splits
        // further once nothing on it needs its memory (a child left holding no long request
        // would otherwise stay merged until the next long request happened to finish there).
        for c in self.groups[g].children.clone() {
            let t = self.now + self.groups[c as usize].knobs.hysteresis_s;
            self.push(t, EV_SPLIT_CHECK, c);
        }
        if rerouted {
            self.serve_pending();
        }
    }
}
