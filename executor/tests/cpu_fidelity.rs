//! Fidelity of the CPU runner: real transformer layers on a 2-device pipeline, measured against
//! the simulator. Its own test binary, one test, so that no other test shares the CPU while it
//! measures (cargo runs test binaries one after another).
//!
//! What made earlier versions of this check miss by 8–14 points on a 2-core machine, and what
//! this one does instead:
//! - the layer time was measured with one stage running alone, its kernels spread over every core
//!   by rayon and matrixmultiply, while serving runs two stages at once that then fight over the
//!   same cores: now each device is one single-thread pool, and the profile is measured with both
//!   devices busy at once, right before serving;
//! - a fixed 1.25 headroom stood in for that measurement: now the stage profile is a high
//!   quantile of the measured stage times, and the runner runs exactly the profiled layers;
//! - even so, a stage served between idle gaps, handed over between threads, next to the HTTP
//!   server and the load generator, ran 5–25 % slower than in that back-to-back loop, and most
//!   served stages overran a profile that low (CI and a quiet machine alike): now a short pilot
//!   run serves the same kind of traffic first and the profile becomes the 95th percentile of
//!   the served stage times (`CpuPipeline::fit_to_serving`);
//! - other processes on a shared machine still slow stages down now and then, and a stall of the
//!   whole process makes every request queued behind it late: the server counts stages that ran
//!   over their profile and the longest overrun (`plexserve_stage_overruns_total`,
//!   `plexserve_stage_max_overrun_seconds`), and a run in which many stages overran, or one stage
//!   took more than twice its profile, is measured again after a fresh calibration (at most five
//!   times). A fidelity defect fails the undisturbed runs; a machine too busy to give one fails
//!   the test too.

use plexserve_executor::{simulate_and_measure, CpuPipeline, FidelityRun, LayerSpec};

/// Measures one point; returns the run and whether other processes disturbed it.
fn measure(slo_scale: f64, seed: u64, rt: &tokio::runtime::Runtime) -> (FidelityRun, bool) {
    let spec = LayerSpec {
        hidden: 64,
        heads: 4,
        seq: 16,
        weight_bank: 2,
        headroom: 1.0,
    };
    let mut pipeline = CpuPipeline::calibrate(spec, 0.025, 16, 0.95).unwrap();
    let loop_stage_s = pipeline.calibration.stage_s;
    rt.block_on(pipeline.fit_to_serving(slo_scale, 0.6, 2.0, 8.0, seed + 1000, 0.95))
        .unwrap();
    let cal = &pipeline.calibration;
    let inst = pipeline.instance(slo_scale, 0.6, 2.0, 20.0, seed).unwrap();
    let schedule = CpuPipeline::schedule();
    let trace = inst.workload.generate(inst.base_dir()).unwrap();
    let run = rt
        .block_on(simulate_and_measure(
            &inst,
            &schedule,
            &trace,
            pipeline.runner.clone(),
        ))
        .unwrap();
    let overrun = run.stages.overruns as f64 / run.stages.stages.max(1) as f64;
    // The profile is the 95th percentile measured with both devices busy, so on an undisturbed
    // machine a few percent of stages run over, by little.
    let disturbed = run.disturbed(cal.stage_s);
    eprintln!(
        "slo_scale {slo_scale}: stage {:.2} ms ({} layers; loop calibration p95 {:.2} ms, p50 {:.2} ms, max {:.2} ms) \
         simulated {:.4} measured {:.4} gap {:+.2} points (n={}, late {}, errors {}); \
         stages {} overran {:.1}% (longest by {:.1} ms), measured/profiled time {:.3}{}",
        cal.stage_s * 1e3,
        cal.layers,
        loop_stage_s * 1e3,
        cal.samples_s[cal.samples_s.len() / 2] * 1e3,
        cal.samples_s[cal.samples_s.len() - 1] * 1e3,
        run.simulated.slo_attainment,
        run.measured.slo_attainment,
        run.gap_points(),
        run.measured.requests,
        run.measured.late,
        run.measured.errors,
        run.stages.stages,
        overrun * 100.0,
        run.stages.max_overrun_s * 1e3,
        run.stages.busy_s / run.stages.profiled_s.max(1e-12),
        if disturbed { " — disturbed" } else { "" },
    );
    (run, disturbed)
}

/// A 2-device instance whose profile is the CPU runner's own calibration under serving
/// conditions; real transformer layers on both stages of a pp-2 pipeline, measured against the
/// simulator at a tight and a loose SLO: within two points.
#[test]
fn cpu_runner_within_two_points() {
    // One runtime thread for the server and the load generator: the two cores are the devices'.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for (slo_scale, seed) in [(2.0, 3u64), (6.0, 4)] {
        let mut attempts = Vec::new();
        for _ in 0..5 {
            let (run, disturbed) = measure(slo_scale, seed, &rt);
            assert_eq!(run.measured.errors, 0, "no request may fail");
            assert_eq!(run.measured.requests, run.simulated.requests);
            attempts.push((run.gap_points(), disturbed));
            if !disturbed {
                assert!(
                    run.gap_points().abs() <= 2.0,
                    "slo_scale {slo_scale}: measured {:.4} vs simulated {:.4} on an undisturbed run",
                    run.measured.slo_attainment,
                    run.simulated.slo_attainment
                );
                break;
            }
        }
        assert!(
            attempts.iter().any(|&(_, disturbed)| !disturbed),
            "slo_scale {slo_scale}: every run was disturbed by other processes \
             (gap points, disturbed): {attempts:?}"
        );
    }
}
