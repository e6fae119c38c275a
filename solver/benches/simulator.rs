//! Simulator throughput (requests per second, one core) on the S3 MAF2-style workload (> 1 M
//! requests), with single-device groups up to 8-stage pipelines.
//!
//! `simulate_s3` measures wall time, as before. `simulate_s3_cpu` measures the benchmark thread's
//! CPU time, which is what "requests per second per core" means and stays meaningful on a loaded
//! machine; next to the evaluation it times the per-request [`Controller::admit`] loop (the
//! executor's entry point, and what the simulator ran before its table loop) on the same
//! placement, so both figures come from one run under one load.

use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use plexserve_solver::sim::{Compiled, Controller, Decision};
use plexserve_solver::{Instance, Placement, Scratch, Simulator};
use std::time::Duration;

fn s3() -> (Instance, plexserve_solver::Trace) {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../instances/paper/s3-maf2.json");
    let inst = Instance::load(&path).expect("S3 instance");
    let trace = inst.workload.generate(inst.base_dir()).expect("trace");
    assert!(
        trace.len() >= 1_000_000,
        "the benchmark needs a ≥ 1 M-request workload"
    );
    (inst, trace)
}

/// Groups of shape (pp, 1) over all devices; group g takes models from a rotating start
/// (g·7 mod M) while memory lasts, so every model gets replicas on several groups.
fn filled(inst: &Instance, pp: u32) -> Placement {
    let n = inst.cluster.devices / pp;
    let n_models = inst.models.len();
    let mut p = Placement::from_shapes(&vec![(pp, 1); n as usize]);
    for g in 0..p.groups.len() {
        for j in 0..n_models {
            let m = (g * 7 + j) % n_models;
            let w = plexserve_solver::model_weight_gib(inst, m, pp, 1);
            if p.used_gib(inst, g) + w <= inst.budget_gib() {
                p.groups[g].models.push(m as u32);
            }
        }
        p.groups[g].models.sort_unstable();
    }
    p
}

/// CPU time of the calling thread (`CLOCK_THREAD_CPUTIME_ID`): time other processes take on a
/// shared machine does not count.
struct ThreadCpuTime;

#[cfg(all(target_os = "linux", target_pointer_width = "64"))]
fn thread_cpu_time() -> Duration {
    #[repr(C)]
    struct Timespec {
        tv_sec: i64,
        tv_nsec: i64,
    }
    extern "C" {
        fn clock_gettime(clock: i32, ts: *mut Timespec) -> i32;
    }
    const CLOCK_THREAD_CPUTIME_ID: i32 = 3;
    let mut ts = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec (two 64-bit fields on 64-bit Linux).
    let rc = unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Elsewhere: wall time since the first call.
#[cfg(not(all(target_os = "linux", target_pointer_width = "64")))]
fn thread_cpu_time() -> Duration {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START.get_or_init(std::time::Instant::now).elapsed()
}

static WALL: WallTime = WallTime;

impl Measurement for ThreadCpuTime {
    type Intermediate = Duration;
    type Value = Duration;
    fn start(&self) -> Duration {
        thread_cpu_time()
    }
    fn end(&self, start: Duration) -> Duration {
        thread_cpu_time().saturating_sub(start)
    }
    fn add(&self, a: &Duration, b: &Duration) -> Duration {
        *a + *b
    }
    fn zero(&self) -> Duration {
        Duration::ZERO
    }
    fn to_f64(&self, d: &Duration) -> f64 {
        d.as_nanos() as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        WALL.formatter()
    }
}

const PPS: [u32; 4] = [1, 2, 4, 8];

fn wall(c: &mut Criterion) {
    let (inst, trace) = s3();
    let sim = Simulator::new(&inst, &trace);
    let mut group = c.benchmark_group("simulate_s3");
    group.throughput(Throughput::Elements(trace.len() as u64));
    group.sample_size(10);
    for pp in PPS {
        let p = filled(&inst, pp);
        let mut scratch = Scratch::default();
        group.bench_function(format!("pp{pp}_replicas{}", p.replicas()), |b| {
            b.iter(|| sim.evaluate(&p, &mut scratch))
        });
    }
    group.finish();
}

fn cpu(c: &mut Criterion<ThreadCpuTime>) {
    let (inst, trace) = s3();
    let sim = Simulator::new(&inst, &trace);
    let mut group = c.benchmark_group("simulate_s3_cpu");
    group.throughput(Throughput::Elements(trace.len() as u64));
    group.sample_size(10);
    for pp in PPS {
        let p = filled(&inst, pp);
        let mut scratch = Scratch::default();
        group.bench_function(format!("pp{pp}/evaluate"), |b| {
            b.iter(|| sim.evaluate(&p, &mut scratch))
        });
        let compiled = Compiled::new(&inst, &p, 0, inst.simulator.pp_penalty);
        let mut clocks = vec![0.0; compiled.n_clocks()];
        group.bench_function(format!("pp{pp}/controller_admit"), |b| {
            b.iter(|| {
                clocks.fill(0.0);
                let mut ctl = Controller::new(
                    &compiled,
                    sim.slo_s(),
                    inst.simulator.overhead_s,
                    false,
                    &mut clocks,
                );
                let mut admitted = 0u64;
                for (&t, &m) in trace.arrival_s.iter().zip(&trace.model) {
                    admitted += matches!(ctl.admit(t, m as usize), Decision::Admit { .. }) as u64;
                }
                admitted
            })
        });
    }
    group.finish();
}

criterion_group!(wall_time, wall);
criterion_group! {
    name = cpu_time;
    config = Criterion::default().with_measurement(ThreadCpuTime);
    targets = cpu
}
criterion_main!(wall_time, cpu_time);
