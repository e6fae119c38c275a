//! Fidelity: the executor must take the simulator's decisions, exactly under a virtual clock and
//! within a point of attainment over real loopback HTTP.

mod common;

use std::sync::Arc;

use plexserve_executor::{
    replay, simulate_and_measure, with_slo_scale, Admission, AdmissionCore, CpuRunner, CudaRunner,
    EmulateRunner, Executor, ExecutorError, ExecutorOptions, LayerRunner, LayerSpec, ManualClock,
    RejectReason, ReplayOptions,
};
use plexserve_solver::sim::NO_GROUP;
use plexserve_solver::{Placement, Schedule, Simulator};

/// Under a virtual clock (arrival times fed directly), admission must equal the simulator's
/// per-request outcome: same admitted set, same group, same projected finish — including across
/// a segment switch.
#[test]
fn admission_core_matches_simulator_exactly() {
    let (inst, schedule) = common::tiny_with_workload(14.0, 3.0, 60.0, 7);
    let trace = inst.workload.generate(inst.base_dir()).unwrap();
    // A second segment at 20 s that moves everything to one pp-4 style... keep shapes profiled:
    // swap the groups' order and give the second group only m1.
    let (_, p0) = &schedule.segments[0];
    let mut p1 = Placement {
        groups: vec![p0.groups[1].clone(), p0.groups[0].clone()],
    };
    p1.groups[0].models = vec![1];
    let multi = Schedule {
        segments: vec![(0.0, p0.clone()), (20.0, p1)],
    };
    for sched in [&schedule, &multi] {
        let sim = Simulator::new(&inst, &trace);
        let (_, out) = sim.run(sched);
        let mut core = AdmissionCore::new(&inst, sched, u32::MAX).unwrap();
        let mut admitted = 0;
        for i in 0..trace.len() {
            let (t, m) = (trace.arrival_s[i], trace.model[i] as usize);
            match core.admit(t, m) {
                Admission::Admitted(tk) => {
                    admitted += 1;
                    assert!(
                        out.good[i],
                        "request {i}: executor admits, simulator rejects"
                    );
                    assert_eq!(tk.global_group as u32, out.group[i], "request {i}: group");
                    assert!(
                        (tk.finish_s - out.finish_s[i]).abs() < 1e-12,
                        "request {i}: finish"
                    );
                }
                Admission::Rejected { reason, group } => {
                    assert!(
                        !out.good[i],
                        "request {i}: executor rejects, simulator admits"
                    );
                    match reason {
                        RejectReason::Deadline => {
                            assert_eq!(group.map(|g| g as u32).unwrap_or(NO_GROUP), out.group[i])
                        }
                        RejectReason::NoReplica => assert_eq!(out.group[i], NO_GROUP),
                        other => panic!("unexpected rejection {other:?}"),
                    }
                }
            }
        }
        assert!(
            admitted > 0 && admitted < trace.len(),
            "the trace must exercise both outcomes"
        );
    }
}

/// A stage that runs longer than profiled pushes the clocks, so a request that the projection
/// alone would admit is rejected instead of being served late.
#[test]
fn measured_overrun_makes_admission_stricter() {
    let (inst, schedule) = common::tiny();
    let mut core = AdmissionCore::new(&inst, &schedule, 64).unwrap();
    let mut tickets = Vec::new();
    // Fill both groups with m0 requests at t = 0 (SLO 1 s).
    while let Admission::Admitted(t) = core.admit(0.0, 0) {
        tickets.push(t);
    }
    let n_admitted = tickets.len();
    assert!(n_admitted > 10);
    let mut fresh = AdmissionCore::new(&inst, &schedule, 64).unwrap();
    for _ in 0..n_admitted {
        fresh.admit(0.0, 0);
    }
    // In `core` the first request's first stage finished 0.3 s late.
    let first = tickets[0];
    core.stage_done(&first, 0, 0.3 + 0.0519);
    // A request at 0.2 s: the honest core must be no more optimistic than the fresh one.
    let honest = core.admit(0.25, 0);
    let naive = fresh.admit(0.25, 0);
    if let (Admission::Admitted(a), Admission::Admitted(b)) = (honest, naive) {
        assert!(a.finish_s >= b.finish_s);
    }
    // Group 0's first stage is now known busy until ≥ 0.35 + queued work: its last-stage clock
    // cannot be earlier than that.
    assert!(
        matches!(honest, Admission::Rejected { .. })
            || matches!(honest, Admission::Admitted(t) if t.finish_s > 0.35)
    );
}

/// SLO-scale sweep with the emulate runner over loopback HTTP: measured attainment within one
/// point of the simulator's at every scale. Points run concurrently (each on its own server) to
/// keep the test short; the emulate runner only sleeps.
///
/// Emulated stages keep to their profile exactly, so the controller admits only requests it can
/// finish in time; an answer that still arrives late was held up outside the controller (the
/// machine descheduled the server, a stage worker or the load generator). On a loaded 2-core
/// machine that happens in bursts (CI once saw 15 late answers at one point, 3 points of
/// attainment), so a sweep that misses is measured again, at most three times; a controller
/// defect misses every time.
#[test]
fn emulate_sweep_within_one_point() {
    let (base, schedule) = common::tiny_with_workload(16.0, 3.0, 15.0, 11);
    let scales = [1.2, 1.6, 2.5, 4.0, 8.0];
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut worst_per_attempt = Vec::new();
    for _ in 0..3 {
        let results = rt.block_on(async {
            let mut handles = Vec::new();
            for &s in &scales {
                let inst = with_slo_scale(&base, s).unwrap();
                let schedule = schedule.clone();
                handles.push(tokio::spawn(async move {
                    let trace = inst.workload.generate(inst.base_dir()).unwrap();
                    simulate_and_measure(&inst, &schedule, &trace, Arc::new(EmulateRunner))
                        .await
                        .unwrap()
                }));
            }
            let mut out = Vec::new();
            for h in handles {
                out.push(h.await.unwrap());
            }
            out
        });
        let mut worst: f64 = 0.0;
        for (s, run) in scales.iter().zip(&results) {
            let (sim, meas) = (&run.simulated, &run.measured);
            let d = (sim.slo_attainment - meas.slo_attainment).abs();
            eprintln!(
                "slo_scale {s}: simulated {:.4} measured {:.4} (n={}, errors {}, late {})",
                sim.slo_attainment, meas.slo_attainment, meas.requests, meas.errors, meas.late
            );
            assert_eq!(sim.requests, meas.requests);
            assert_eq!(meas.errors, 0, "no request may fail or time out");
            // Every stage run is in the ratio histogram, and an emulated stage keeps to its
            // profile (it sleeps until its profiled finish; the median lands in the 100 % bucket
            // or just above it by timer overshoot).
            assert_eq!(run.stage_ratios.count(), run.stages.stages);
            if run.stages.stages > 0 {
                let median = run.stage_ratios.quantile(0.5).unwrap();
                assert!(
                    (1.0..=1.05).contains(&median),
                    "median stage ratio {median}"
                );
            }
            worst = worst.max(d);
        }
        // The sweep must be informative: attainment changes across it.
        let lo = results
            .iter()
            .map(|r| r.simulated.slo_attainment)
            .fold(1.0, f64::min);
        assert!(lo < 0.97, "the sweep never leaves full attainment");
        worst_per_attempt.push(worst);
        if worst <= 0.01 {
            return;
        }
    }
    panic!("every sweep had a gap above one point (largest gap per sweep): {worst_per_attempt:?}");
}

/// The tiny plan as two segments: the groups swap places at `switch_s` (plan time), so global
/// groups 0–1 serve segment 0 and 2–3 segment 1.
fn two_segments(schedule: &Schedule, switch_s: f64) -> Schedule {
    let (_, p0) = &schedule.segments[0];
    let p1 = Placement {
        groups: vec![p0.groups[1].clone(), p0.groups[0].clone()],
    };
    Schedule {
        segments: vec![(0.0, p0.clone()), (switch_s, p1)],
    }
}

/// Segment start times count from the workload's start (its first arrival, or the start a load
/// generator announces), never from when the server started: a server that idles 10 s before
/// traffic must still switch 2 s into the workload.
#[test]
fn segments_switch_on_the_workload_clock() {
    let (inst, schedule) = common::tiny();
    let multi = two_segments(&schedule, 2.0);
    let segment_at = |exec: &Executor, clock: &ManualClock, t: f64| {
        clock.advance_to(t);
        exec.submit(0, None).expect("admitted").ticket.segment
    };
    // Epoch from the first arrival.
    let clock = Arc::new(ManualClock::new(0.0));
    let exec = Executor::start(
        &inst,
        &multi,
        Arc::new(EmulateRunner),
        clock.clone(),
        &ExecutorOptions::default(),
    )
    .unwrap();
    assert_eq!(exec.workload_epoch(), None);
    assert_eq!(segment_at(&exec, &clock, 10.0), 0);
    assert_eq!(exec.workload_epoch(), Some(10.0));
    assert_eq!(segment_at(&exec, &clock, 11.9), 0);
    assert_eq!(segment_at(&exec, &clock, 12.0), 1);
    assert_eq!(
        exec.start_workload_at(0.0),
        Err(10.0),
        "the epoch is set once"
    );
    clock.advance_to(1e6);
    assert_eq!(exec.shutdown(std::time::Duration::from_secs(10)), 0);
    // Epoch announced: at clock 5 the workload is at plan time 1.5, so it switches at clock 5.5.
    let clock = Arc::new(ManualClock::new(0.0));
    let exec = Executor::start(
        &inst,
        &multi,
        Arc::new(EmulateRunner),
        clock.clone(),
        &ExecutorOptions::default(),
    )
    .unwrap();
    clock.advance_to(5.0);
    assert_eq!(exec.start_workload_at(1.5), Ok(3.5));
    assert_eq!(segment_at(&exec, &clock, 5.4), 0);
    assert_eq!(segment_at(&exec, &clock, 5.5), 1);
    clock.advance_to(1e6);
    assert_eq!(exec.shutdown(std::time::Duration::from_secs(10)), 0);
}

/// A replayed trace meets the plan's segments where the simulator puts them: the server idles
/// 1.5 s before the replay, and every request is still served by the segment its trace time
/// falls in (requests within 20 ms of the switch excepted: loopback jitter).
#[test]
fn replay_switches_placement_at_plan_start_times() {
    let (inst, schedule) = common::tiny_with_workload(4.0, 1.0, 6.0, 5);
    let switch_s = 3.0;
    let multi = two_segments(&schedule, switch_s);
    let trace = inst.workload.generate(inst.base_dir()).unwrap();
    let (_, out) = Simulator::new(&inst, &trace).run(&multi);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let records = rt.block_on(async {
        let server = common::Server::emulated(&inst, &multi).await;
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        let (_, records) = replay(
            &inst,
            &trace,
            &server.url,
            &ReplayOptions {
                warmup_s: Some(0.0),
                ..ReplayOptions::default()
            },
        )
        .await
        .unwrap();
        server.stop().await;
        records
    });
    let (mut before, mut after) = (0, 0);
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r.status, 200, "request {i}: {}", r.reason);
        let t = trace.arrival_s[i];
        if (t - switch_s).abs() < 0.02 {
            continue;
        }
        let sim_segment = usize::from(out.group[i] >= 2);
        let served_segment = usize::from(r.group.expect("group in the answer") >= 2);
        assert_eq!(
            served_segment, sim_segment,
            "request {i} at trace time {t:.3} s: served by segment {served_segment}, planned {sim_segment}"
        );
        if sim_segment == 0 {
            before += 1;
        } else {
            after += 1;
        }
    }
    assert!(
        before > 5 && after > 5,
        "{before} before, {after} after the switch"
    );
}

/// The CUDA runner computes what the CPU runner computes (same weights, same layers), at tp 1 and
/// 2, and serves a request through the executor. Without the `cuda` feature it must say it is
/// not compiled in; without a GPU it skips, unless `PLEXSERVE_REQUIRE_GPU=1`.
#[test]
fn cuda_runner_matches_cpu_runner() {
    let spec = LayerSpec {
        hidden: 64,
        heads: 4,
        seq: 16,
        weight_bank: 2,
        headroom: 1.0,
    };
    let gpu = match CudaRunner::new(spec, &[1, 2], 4) {
        Ok(gpu) => gpu,
        Err(e) => {
            assert!(
                matches!(
                    e,
                    ExecutorError::NotCompiled { .. } | ExecutorError::NoDevice { .. }
                ),
                "{e}"
            );
            if !cfg!(feature = "cuda") {
                assert!(matches!(e, ExecutorError::NotCompiled { .. }), "{e}");
            }
            assert!(
                std::env::var("PLEXSERVE_REQUIRE_GPU").as_deref() != Ok("1"),
                "a GPU is required: {e}"
            );
            eprintln!("skipped: {e}");
            return;
        }
    };
    let cpu = CpuRunner::new(spec, &[1, 2]).unwrap();
    for tp in [1usize, 2] {
        let devices: Vec<u32> = (0..tp as u32).collect();
        let mut on_gpu = gpu.input(3, None);
        let mut on_cpu = cpu.input(3, None);
        gpu.run_stage_on(&devices, 3, tp, 3, &mut on_gpu).unwrap();
        cpu.run_stage_on(&devices, 3, tp, 3, &mut on_cpu).unwrap();
        let scale = on_cpu.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1.0);
        let worst = on_gpu
            .iter()
            .zip(on_cpu.iter())
            .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(
            worst <= 1e-3 * scale,
            "tp {tp}: GPU and CPU differ by {worst} (scale {scale})"
        );
    }
    let (inst, schedule) = common::tiny();
    let exec = Executor::start(
        &inst,
        &schedule,
        Arc::new(gpu),
        Arc::new(plexserve_executor::RealClock::new()),
        &ExecutorOptions::default(),
    )
    .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let served = rt.block_on(exec.infer(0, None)).unwrap();
    assert_eq!(served.output.as_ref().map(Vec::len), Some(8));
    assert_eq!(exec.shutdown(std::time::Duration::from_secs(30)), 0);
}
