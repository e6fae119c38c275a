//! Simulator semantics against hand-computed timelines (alpaserve-semantics.md §1).
//!
//! Latencies are powers of two so that every expected time is exact in binary floating point.

use plexserve_solver::sim::{warmup_skip, SimOptions, NO_GROUP};
use plexserve_solver::{Group, Instance, Placement, Schedule, Simulator};

/// One profile `p` with pp 1 latency `l1`, pp 2 stages `l2`, and models m0..m{n-1} with SLO `slo`.
fn instance(
    devices: u32,
    n_models: usize,
    slo: f64,
    requests: &[(f64, usize)],
    sim: &str,
) -> Instance {
    let models: Vec<String> = (0..n_models)
        .map(|i| format!(r#"{{"name":"m{i}","profile":"p","slo_s":{slo}}}"#))
        .collect();
    let reqs: Vec<String> = requests
        .iter()
        .map(|(t, m)| format!(r#"{{"t_s":{t},"model":"m{m}"}}"#))
        .collect();
    let json = format!(
        r#"{{"schema":"plexserve/instance/v1","name":"t","cluster":{{"devices":{devices},"memory_budget_gib":16}},
        "profiles":{{"p":{{"batch_sizes":[1,2,4],"configs":[
          {{"pp":1,"tp":1,"stage_latency_s":[[0.25],[0.375],[0.5]],"stage_weight_gib":[2]}},
          {{"pp":2,"tp":1,"stage_latency_s":[[0.125,0.125],[0.1875,0.1875],[0.25,0.25]],"stage_weight_gib":[1,1]}}]}}}},
        "models":[{}],
        "workload":{{"kind":"requests","requests":[{}]}},
        "simulator":{sim}}}"#,
        models.join(","),
        reqs.join(",")
    );
    Instance::from_json("test.json".as_ref(), &json).expect("valid test instance")
}

const NO_OVERHEAD: &str = r#"{"overhead_s":0,"pp_penalty":0,"warmup_s":0}"#;

fn group(pp: u32, devices: &[u32], models: &[u32]) -> Group {
    Group {
        pp,
        tp: 1,
        devices: devices.to_vec(),
        models: models.to_vec(),
    }
}

fn run(inst: &Instance, p: Placement) -> plexserve_solver::sim::Outcomes {
    let trace = inst.workload.generate(inst.base_dir()).unwrap();
    Simulator::new(inst, &trace).run(&Schedule::fixed(p)).1
}

#[test]
fn pipeline_stages_overlap() {
    let inst = instance(
        2,
        1,
        10.0,
        &[(0.0, 0), (0.0625, 0), (0.0625, 0)],
        NO_OVERHEAD,
    );
    let out = run(
        &inst,
        Placement {
            groups: vec![group(2, &[0, 1], &[0])],
        },
    );
    // r0: stage 0 [0, .125], stage 1 [.125, .25]
    // r1: stage 0 waits for r0 -> [.125, .25], stage 1 [.25, .375]
    // r2: stage 0 [.25, .375], stage 1 [.375, .5]
    assert_eq!(out.finish_s, vec![0.25, 0.375, 0.5]);
    assert_eq!(out.start_s, vec![0.0, 0.125, 0.25]);
    assert!(out.good.iter().all(|&g| g));
}

#[test]
fn penalty_applies_to_every_stage_and_overhead_once() {
    let inst = instance(
        2,
        1,
        10.0,
        &[(0.0, 0), (0.0, 0)],
        r#"{"overhead_s":0.011,"pp_penalty":0.009,"warmup_s":0}"#,
    );
    let out = run(
        &inst,
        Placement {
            groups: vec![group(2, &[0, 1], &[0])],
        },
    );
    let stage = 0.125 * (1.0 + 0.009 * 2.0);
    assert!((out.finish_s[0] - (2.0 * stage + 0.011)).abs() < 1e-12);
    // The second request's stage 0 waits one penalized stage; overhead does not occupy stages.
    assert!((out.finish_s[1] - (3.0 * stage + 0.011)).abs() < 1e-12);
}

#[test]
fn dispatch_to_earliest_last_stage_lowest_index_on_ties() {
    let inst = instance(
        2,
        1,
        10.0,
        &[(0.0, 0), (0.0, 0), (0.0, 0), (0.0, 0)],
        NO_OVERHEAD,
    );
    let out = run(
        &inst,
        Placement {
            groups: vec![group(1, &[0], &[0]), group(1, &[1], &[0])],
        },
    );
    assert_eq!(out.group, vec![0, 1, 0, 1]);
    assert_eq!(out.finish_s, vec![0.25, 0.25, 0.5, 0.5]);
}

#[test]
fn rejection_at_arrival_equality_is_good_and_rejected_work_is_free() {
    // SLO 0.5 with 0.25 latency: queueing one request ahead is exactly on the deadline.
    let reqs = [(0.0, 0), (0.0, 0), (0.0, 0), (0.25, 0)];
    let inst = instance(1, 1, 0.5, &reqs, NO_OVERHEAD);
    let out = run(
        &inst,
        Placement {
            groups: vec![group(1, &[0], &[0])],
        },
    );
    // r0 [0, .25]; r1 [.25, .5]: latency .5 = SLO -> good; r2 would end at .75 -> rejected;
    // r3 at .25 queues behind r1 only (r2 cost nothing) -> [.5, .75], latency .5 -> good.
    assert_eq!(out.good, vec![true, true, false, true]);
    assert_eq!(
        out.finish_s[2], 0.0,
        "a rejected request finishes at its arrival"
    );
    assert_eq!(out.finish_s[3], 0.75);
}

#[test]
fn slo_aware_serves_a_request_the_earliest_last_stage_rule_drops() {
    // g0: one device shared with m1; g1: a two-stage pipeline of m0 only.
    let reqs = [(0.0, 1), (0.0, 0), (0.0, 0), (0.0, 0)];
    let mk = |dispatch: &str| {
        instance(
            3,
            2,
            0.4375,
            &reqs,
            &format!(r#"{{"overhead_s":0,"pp_penalty":0,"warmup_s":0,"dispatch":"{dispatch}"}}"#),
        )
    };
    let p = Placement {
        groups: vec![group(1, &[2], &[0, 1]), group(2, &[0, 1], &[0])],
    };
    let fast = run(&mk("earliest_last_stage"), p.clone());
    let aware = run(&mk("slo_aware"), p);
    // r0 (m1) -> g0 [0,.25]. r1 (m0): g0 last .25, g1 last 0 -> g1 [0,.125][.125,.25].
    // r2 (m0): g0 .25, g1 .25 tie -> g0: [.25,.5] -> .5 > .4375 rejected by AlpaServe;
    //   slo_aware: g0 .5, g1 [.125,.25][.25,.375] -> .375 -> good on g1.
    assert!(!fast.good[2]);
    assert!(aware.good[2]);
    assert_eq!(aware.group[2], 1);
    assert_eq!(aware.finish_s[2], 0.375);
    let served = |o: &plexserve_solver::sim::Outcomes| o.good.iter().filter(|&&g| g).count();
    assert!(served(&aware) > served(&fast));
}

#[test]
fn a_group_too_slow_for_the_slo_never_admits() {
    let reqs: Vec<(f64, usize)> = (0..50).map(|i| (i as f64 * 0.5, 0)).collect();
    let inst = instance(
        1,
        1,
        0.26,
        &reqs,
        r#"{"overhead_s":0.011,"pp_penalty":0,"warmup_s":0}"#,
    );
    let out = run(
        &inst,
        Placement {
            groups: vec![group(1, &[0], &[0])],
        },
    );
    assert!(out.good.iter().all(|&g| !g), "0.25 + 0.011 > 0.26");
}

#[test]
fn unplaced_model_requests_fail_without_touching_state() {
    let inst = instance(1, 2, 10.0, &[(0.0, 1), (0.0, 0)], NO_OVERHEAD);
    let out = run(
        &inst,
        Placement {
            groups: vec![group(1, &[0], &[0])],
        },
    );
    assert_eq!(out.good, vec![false, true]);
    assert_eq!(out.finish_s[1], 0.25);
}

#[test]
fn warmup_trims_by_request_count_at_both_ends() {
    let arr: Vec<f64> = (0..101).map(|i| i as f64).collect(); // span 100 s, 101 requests
    assert_eq!(warmup_skip(&arr, 10.0), 10); // floor(10/100 * 101)
    assert_eq!(warmup_skip(&arr, 0.0), 0);
    assert_eq!(warmup_skip(&arr, 60.0), 0, "trimming everything is refused");
    // Found by the mutated-instance property test: 2 · usize::MAX overflowed.
    assert_eq!(
        warmup_skip(&arr, 1e300),
        0,
        "so is a warm-up beyond the span"
    );
    // In the report: the slow start is trimmed away.
    let mut reqs: Vec<(f64, usize)> = (0..10).map(|i| (i as f64 * 0.01, 0)).collect();
    reqs.extend((0..90).map(|i| (1.0 + i as f64, 0)));
    let inst = instance(
        1,
        1,
        0.3,
        &reqs,
        r#"{"overhead_s":0,"pp_penalty":0,"warmup_s":10}"#,
    );
    let trace = inst.workload.generate(inst.base_dir()).unwrap();
    let sched = Schedule::fixed(Placement {
        groups: vec![group(1, &[0], &[0])],
    });
    let (report, out) = Simulator::new(&inst, &trace).report(&sched);
    let skip = warmup_skip(&trace.arrival_s, 10.0);
    assert_eq!(report.trimmed_each_end as usize, skip);
    assert_eq!(report.requests as usize, 100 - 2 * skip);
    let good_kept = out.good[skip..100 - skip].iter().filter(|&&g| g).count();
    assert_eq!(report.good as usize, good_kept);
    assert!(
        out.good[..10].iter().any(|&g| !g),
        "the burst at the start drops requests"
    );
    assert_eq!(report.slo_attainment, 1.0, "…but they are trimmed");
}

#[test]
fn segments_switch_placement_at_their_start() {
    let reqs = [(0.0, 0), (0.0, 1), (1.0, 0), (1.0, 1), (2.0, 1)];
    let inst = instance(1, 2, 10.0, &reqs, NO_OVERHEAD);
    let trace = inst.workload.generate(inst.base_dir()).unwrap();
    let a = Placement {
        groups: vec![group(1, &[0], &[0])],
    };
    let b = Placement {
        groups: vec![group(1, &[0], &[1])],
    };
    let sched = Schedule {
        segments: vec![(0.0, a), (1.0, b)],
    };
    let (_, out) = Simulator::new(&inst, &trace).run(&sched);
    // Default: a segment owns the arrivals at or after its start.
    assert_eq!(out.good, vec![true, false, false, true, true]);
    assert_eq!(
        out.group[3], 1,
        "groups of later segments are numbered after earlier ones"
    );
    // AlpaServe's Clockwork++ boundary: an arrival exactly at the start stays in the old segment.
    let faithful = SimOptions {
        faithful_segments: true,
        ..SimOptions::default()
    };
    let (_, out) = Simulator::new(&inst, &trace)
        .with_options(faithful)
        .run(&sched);
    assert_eq!(out.good, vec![true, false, true, false, true]);
}

#[test]
fn segments_carry_device_busy_time_unless_faithful() {
    // Two m0 requests at 0 keep device 0 busy until .5; the new segment's group on device 0
    // cannot start m1 before that, unless queues reset (AlpaServe's Clockwork++).
    let reqs = [(0.0, 0), (0.0, 0), (0.25, 1)];
    let inst = instance(1, 2, 10.0, &reqs, NO_OVERHEAD);
    let trace = inst.workload.generate(inst.base_dir()).unwrap();
    let sched = Schedule {
        segments: vec![
            (
                0.0,
                Placement {
                    groups: vec![group(1, &[0], &[0])],
                },
            ),
            (
                0.25,
                Placement {
                    groups: vec![group(1, &[0], &[1])],
                },
            ),
        ],
    };
    let (_, out) = Simulator::new(&inst, &trace).run(&sched);
    assert_eq!(out.finish_s[2], 0.75);
    let faithful = SimOptions {
        faithful_segments: true,
        ..SimOptions::default()
    };
    // Faithful: the request at exactly .25 still belongs to segment 0, where m1 is not placed.
    let (_, out) = Simulator::new(&inst, &trace)
        .with_options(faithful)
        .run(&sched);
    assert!(!out.good[2]);
}

#[test]
fn batching_groups_queued_requests_of_one_model() {
    // max_batch 4, no overhead. r0 at 0 runs alone [0,.25]; r1..r3 arrive while busy and are
    // served together at .25 as a batch of... 3 requests -> largest profiled size ≤ 3 is 2:
    // batch {r1,r2} [.25,.625] (bs 2 latency .375), then r3 alone [.625,.875].
    let reqs = [(0.0, 0), (0.0625, 0), (0.125, 0), (0.1875, 0)];
    let inst = instance(
        1,
        1,
        10.0,
        &reqs,
        r#"{"overhead_s":0,"pp_penalty":0,"warmup_s":0,"max_batch":4}"#,
    );
    let out = run(
        &inst,
        Placement {
            groups: vec![group(1, &[0], &[0])],
        },
    );
    assert_eq!(out.finish_s, vec![0.25, 0.625, 0.625, 0.875]);
    assert!(out.good.iter().all(|&g| g));
    assert!(out.group.iter().all(|&g| g != NO_GROUP));
}

#[test]
fn batching_respects_deadlines_of_the_head() {
    // SLO .5: at .25 the batch of 2 would end at .625 (latency .5625 for r1) -> too late, so
    // r1 runs alone [.25,.5] (latency .4375), then r2 [.5,.75] (latency .625) misses -> dropped.
    let reqs = [(0.0, 0), (0.0625, 0), (0.125, 0)];
    let inst = instance(
        1,
        1,
        0.5,
        &reqs,
        r#"{"overhead_s":0,"pp_penalty":0,"warmup_s":0,"max_batch":4}"#,
    );
    let out = run(
        &inst,
        Placement {
            groups: vec![group(1, &[0], &[0])],
        },
    );
    assert_eq!(out.good, vec![true, true, false]);
    assert_eq!(out.finish_s[1], 0.5);
}

#[test]
fn shortest_queue_dispatch_is_seeded_and_can_be_late() {
    let reqs: Vec<(f64, usize)> = (0..400).map(|i| (i as f64 * 0.07, i % 2)).collect();
    let sim_cfg =
        |seed: u64| format!(r#"{{"dispatch":"shortest_queue","warmup_s":0,"seed":{seed}}}"#);
    let p = Placement {
        groups: vec![group(2, &[0, 1], &[0, 1]), group(1, &[2], &[0, 1])],
    };
    let a = run(&instance(3, 2, 0.262, &reqs, &sim_cfg(1)), p.clone());
    let b = run(&instance(3, 2, 0.262, &reqs, &sim_cfg(1)), p.clone());
    let c = run(&instance(3, 2, 0.262, &reqs, &sim_cfg(2)), p);
    assert_eq!(a, b, "same seed, same outcomes");
    assert_ne!(a.finish_s, c.finish_s, "the seed drives the jitter");
    // Admission uses unpenalized bookkeeping latencies, so some admitted requests run late.
    assert!(a.late.iter().any(|&l| l));
    assert!(a.good.iter().any(|&g| g));
    for i in 0..reqs.len() {
        assert!(!(a.good[i] && a.late[i]));
    }
}

/// A plain transcription of alpaserve-semantics.md §1.1 (and of `slo_aware`: the replica that
/// would finish first), one request at a time, to check the optimized loops against.
mod reference {
    /// Per-request result: (group, good, start, finish), as `Outcomes` reports them.
    pub type Row = (Option<usize>, bool, f64, f64);

    pub struct Run {
        pub rows: Vec<Row>,
        pub req_m: Vec<u64>,
        pub good_m: Vec<u64>,
        pub routed_g: Vec<u64>,
        pub good_g: Vec<u64>,
        pub latency_sum_good_s: f64,
    }

    /// `lat[m][g]`: penalized stage latencies of model m on group g, None when m is not on g
    /// (or has no profile for g's shape). `clock_len[g]` is g's stage count.
    pub fn simulate(
        lat: &[Vec<Option<Vec<f64>>>],
        clock_len: &[usize],
        slo_s: &[f64],
        overhead_s: f64,
        slo_aware: bool,
        arrival: &[f64],
        model: &[u32],
    ) -> Run {
        let n_models = lat.len();
        let n_groups = clock_len.len();
        let mut clock: Vec<Vec<f64>> = clock_len.iter().map(|&pp| vec![0.0; pp]).collect();
        let mut run = Run {
            rows: Vec::new(),
            req_m: vec![0; n_models],
            good_m: vec![0; n_models],
            routed_g: vec![0; n_groups],
            good_g: vec![0; n_groups],
            latency_sum_good_s: 0.0,
        };
        for (&t, &m) in arrival.iter().zip(model) {
            let m = m as usize;
            run.req_m[m] += 1;
            let replicas: Vec<usize> = (0..n_groups).filter(|&g| lat[m][g].is_some()).collect();
            let stage_ends = |g: usize| -> Vec<f64> {
                let mut x = t;
                let mut ends = Vec::new();
                for (k, l) in lat[m][g].as_ref().unwrap().iter().enumerate() {
                    x = x.max(clock[g][k]) + l;
                    ends.push(x);
                }
                ends
            };
            let mut chosen: Option<usize> = None;
            for &g in &replicas {
                let better = match chosen {
                    None => true,
                    Some(b) if slo_aware => {
                        stage_ends(g).last().unwrap() < stage_ends(b).last().unwrap()
                    }
                    Some(b) => clock[g].last().unwrap() < clock[b].last().unwrap(),
                };
                if better {
                    chosen = Some(g);
                }
            }
            let Some(g) = chosen else {
                run.rows.push((None, false, 0.0, t));
                continue;
            };
            let ends = stage_ends(g);
            let finish = ends.last().unwrap() + overhead_s;
            run.routed_g[g] += 1;
            if finish - t <= slo_s[m] {
                let start = t.max(clock[g][0]);
                clock[g] = ends;
                run.good_m[m] += 1;
                run.good_g[g] += 1;
                run.latency_sum_good_s += finish - t;
                run.rows.push((Some(g), true, start, finish));
            } else {
                run.rows.push((Some(g), false, t, t));
            }
        }
        run
    }
}

/// Random instances, placements and traces: the fast loop (every stage-count specialisation, the
/// mixed-depth loop, the >16-stage fallback), the detailed run, the scored evaluation and the
/// executor's `Controller` all take the reference's decisions, bit for bit.
#[test]
fn fast_loop_matches_a_plain_reference_on_random_cases() {
    use plexserve_solver::sim::{Controller, Decision};
    use plexserve_solver::{Scratch, Trace};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    let shapes: [&[u32]; 7] = [&[1], &[2], &[4], &[8], &[3], &[1, 2, 4, 8, 16], &[1, 32]];
    let mut branch_free_stretches = 0;
    for case in 0..120u64 {
        let mut rng = ChaCha8Rng::seed_from_u64(case);
        let n_models = rng.random_range(1..7usize);
        let pps = shapes[case as usize % shapes.len()];
        // Profiles: random stage latencies; a model lacks a shape now and then.
        let mut profiles = Vec::new();
        let mut raw: Vec<Vec<Option<Vec<f64>>>> = Vec::new(); // [model][pp index]
        for m in 0..n_models {
            let mut configs = Vec::new();
            let mut per_pp = Vec::new();
            for &pp in pps {
                if rng.random_bool(0.15) {
                    per_pp.push(None);
                    continue;
                }
                let stages: Vec<f64> = (0..pp)
                    .map(|_| rng.random_range(0.01..0.4) / pp as f64)
                    .collect();
                let s: Vec<String> = stages.iter().map(|l| format!("{l}")).collect();
                configs.push(format!(
                    r#"{{"pp":{pp},"tp":1,"stage_latency_s":[[{}]],"stage_weight_gib":[{}]}}"#,
                    s.join(","),
                    vec!["1"; pp as usize].join(",")
                ));
                per_pp.push(Some(stages));
            }
            if configs.is_empty() {
                configs.push(
                    r#"{"pp":1,"tp":2,"stage_latency_s":[[0.1]],"stage_weight_gib":[1]}"#.into(),
                );
            }
            profiles.push(format!(
                r#""p{m}":{{"batch_sizes":[1],"configs":[{}]}}"#,
                configs.join(",")
            ));
            raw.push(per_pp);
        }
        let slo_s: Vec<f64> = (0..n_models).map(|_| rng.random_range(0.05..0.9)).collect();
        let models: Vec<String> = (0..n_models)
            .map(|m| format!(r#"{{"name":"m{m}","profile":"p{m}","slo_s":{}}}"#, slo_s[m]))
            .collect();
        let json = format!(
            r#"{{"schema":"plexserve/instance/v1","name":"r","cluster":{{"devices":512,"memory_budget_gib":1000}},
            "profiles":{{{}}},"models":[{}],
            "workload":{{"kind":"requests","requests":[{{"t_s":0,"model":"m0"}}]}},
            "simulator":{{"overhead_s":0.011,"pp_penalty":0.009,"warmup_s":0}}}}"#,
            profiles.join(","),
            models.join(",")
        );
        let inst = Instance::from_json("random.json".as_ref(), &json).expect("valid instance");
        let slo_s: Vec<f64> = inst.models.iter().map(|m| m.slo_s).collect();

        // Placement: random shapes, each group hosting a random subset (some models unplaced).
        let n_groups = rng.random_range(0..7usize);
        let mut groups = Vec::new();
        let mut next_device = 0;
        for _ in 0..n_groups {
            let pp = pps[rng.random_range(0..pps.len())];
            let hosted: Vec<u32> = (0..n_models as u32)
                .filter(|_| rng.random_bool(0.5))
                .collect();
            let devices: Vec<u32> = (next_device..next_device + pp).collect();
            next_device += pp;
            groups.push(group(pp, &devices, &hosted));
        }
        let placement = Placement { groups };
        let lat: Vec<Vec<Option<Vec<f64>>>> = (0..n_models)
            .map(|m| {
                placement
                    .groups
                    .iter()
                    .map(|g| {
                        let i = pps.iter().position(|&p| p == g.pp).unwrap();
                        let factor = 1.0 + 0.009 * g.pp as f64;
                        match (&raw[m][i], g.models.contains(&(m as u32))) {
                            (Some(stages), true) => {
                                Some(stages.iter().map(|l| l * factor).collect())
                            }
                            _ => None,
                        }
                    })
                    .collect()
            })
            .collect();
        let clock_len: Vec<usize> = placement.groups.iter().map(|g| g.pp as usize).collect();

        // Trace: bursts that queue and reject, idle gaps, and exact ties. Every fourth trace is
        // long and busy: the fast loop switches to its branch-free variant after a stretch of
        // 16384 requests with many rejections, and that variant must agree too.
        let long = case % 4 == 0;
        let n = if long {
            rng.random_range(20_000..40_000usize)
        } else {
            rng.random_range(0..3000usize)
        };
        let mut t = 0.0f64;
        let mut arrival = Vec::with_capacity(n);
        let mut model = Vec::with_capacity(n);
        for _ in 0..n {
            match rng.random_range(0..10) {
                0 => {}
                1 if !long => t += rng.random_range(0.0..2.0),
                _ if long => t += rng.random_range(0.0..0.02),
                _ => t += rng.random_range(0.0..0.05),
            }
            arrival.push(t);
            model.push(rng.random_range(0..n_models as u32));
        }
        let trace = Trace {
            arrival_s: arrival.clone(),
            model: model.clone(),
        };

        for slo_aware in [false, true] {
            let want =
                reference::simulate(&lat, &clock_len, &slo_s, 0.011, slo_aware, &arrival, &model);
            let mut config = inst.simulator.clone();
            if slo_aware {
                config.dispatch = plexserve_solver::Dispatch::SloAware;
            }
            config.warmup_s = [0.0, 5.0, 40.0][case as usize % 3];
            let sim = Simulator::new(&inst, &trace).with_config(config.clone());
            let ctx = format!("case {case}, slo_aware {slo_aware}, shapes {pps:?}");
            if !slo_aware && n > 16_384 {
                let placed_rejects = want.rows[..16_384]
                    .iter()
                    .filter(|r| r.0.is_some() && !r.1)
                    .count();
                // Above 20 % (the highest threshold, 16 stages) every table loop switches.
                branch_free_stretches += usize::from(placed_rejects > 16_384 / 5);
            }

            // Detailed run: every decision.
            let (k, out) = sim.run(&Schedule::fixed(placement.clone()));
            for (i, &(g, good, start, finish)) in want.rows.iter().enumerate() {
                let got_group = (out.group[i] != NO_GROUP).then_some(out.group[i] as usize);
                assert_eq!(got_group, g, "{ctx}: group of request {i}");
                assert_eq!(out.good[i], good, "{ctx}: admission of request {i}");
                assert_eq!(
                    out.start_s[i].to_bits(),
                    start.to_bits(),
                    "{ctx}: start of request {i}"
                );
                assert_eq!(
                    out.finish_s[i].to_bits(),
                    finish.to_bits(),
                    "{ctx}: finish of request {i}"
                );
            }
            assert_eq!(k.req_m, want.req_m, "{ctx}");
            assert_eq!(k.good_m, want.good_m, "{ctx}");
            assert_eq!(k.routed_g, want.routed_g, "{ctx}");
            assert_eq!(k.good_g, want.good_g, "{ctx}");
            assert_eq!(
                k.latency_sum_good_s.to_bits(),
                want.latency_sum_good_s.to_bits(),
                "{ctx}"
            );

            // Scored evaluation (reused scratch, as the placers do): counters and both scores.
            let mut scratch = Scratch::default();
            for faithful in [false, true] {
                let sim = Simulator::new(&inst, &trace)
                    .with_config(config.clone())
                    .with_options(SimOptions {
                        faithful_search_stats: faithful,
                        ..SimOptions::default()
                    });
                let score = sim.evaluate(&placement, &mut scratch);
                let k = &scratch.counters;
                assert_eq!(k.req_m, want.req_m, "{ctx}");
                assert_eq!(k.good_m, want.good_m, "{ctx}");
                assert_eq!(k.routed_g, want.routed_g, "{ctx}");
                assert_eq!(k.good_g, want.good_g, "{ctx}");
                assert_eq!(
                    k.latency_sum_good_s.to_bits(),
                    want.latency_sum_good_s.to_bits(),
                    "{ctx}"
                );
                let good: u64 = want.good_m.iter().sum();
                let (attainment, latency) = if faithful {
                    let a = if n == 0 { 0.0 } else { good as f64 / n as f64 };
                    (a, want.latency_sum_good_s / n.max(1) as f64)
                } else {
                    let skip = warmup_skip(&arrival, config.warmup_s);
                    let kept = want.rows[skip..n - skip].iter().filter(|r| r.1).count();
                    let a = if n == 2 * skip {
                        0.0
                    } else {
                        kept as f64 / (n - 2 * skip) as f64
                    };
                    (a, want.latency_sum_good_s / good.max(1) as f64)
                };
                assert_eq!(
                    score.attainment.to_bits(),
                    attainment.to_bits(),
                    "{ctx}, faithful {faithful}"
                );
                assert_eq!(
                    score.mean_latency_s.to_bits(),
                    latency.to_bits(),
                    "{ctx}, faithful {faithful}"
                );
            }

            // The executor's entry point: one `Controller::admit` per request.
            let compiled = plexserve_solver::sim::Compiled::new(&inst, &placement, 0, 0.009);
            let mut clocks = vec![0.0; compiled.n_clocks()];
            let mut ctl = Controller::new(&compiled, &slo_s, 0.011, slo_aware, &mut clocks);
            for (i, (&t, &m)) in arrival.iter().zip(&model).enumerate() {
                let got = match ctl.admit(t, m as usize) {
                    Decision::NoReplica => (None, false, 0.0, t),
                    Decision::Reject { group, .. } => (Some(group), false, t, t),
                    Decision::Admit {
                        group,
                        start_s,
                        finish_s,
                        ..
                    } => (Some(group), true, start_s, finish_s),
                };
                let w = want.rows[i];
                assert_eq!((got.0, got.1), (w.0, w.1), "{ctx}: controller, request {i}");
                assert_eq!(
                    got.2.to_bits(),
                    w.2.to_bits(),
                    "{ctx}: controller start, request {i}"
                );
                assert_eq!(
                    got.3.to_bits(),
                    w.3.to_bits(),
                    "{ctx}: controller finish, request {i}"
                );
            }
        }
    }
    assert!(
        branch_free_stretches >= 5,
        "only {branch_free_stretches} long traces reject enough to switch the fast loop"
    );
}

/// CSV fields keep their row's columns whatever a model name holds (RFC 4180 quoting).
#[test]
fn csv_fields_are_quoted_only_when_they_must_be() {
    use plexserve_solver::sim::csv_field;
    assert_eq!(csv_field("bert-1.3b"), "bert-1.3b");
    assert_eq!(csv_field("a,b"), "\"a,b\"");
    assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
    assert_eq!(csv_field("two\nlines"), "\"two\nlines\"");
}
