//! `shortest_queue` dispatch: AlpaServe's event-driven simulator of its real controller
//! (alpaserve-semantics.md §1.5).
//!
//! A request reaches the controller after a jittered hop, goes to the hosting group with the fewest
//! outstanding requests, and is admitted by the group from bookkeeping clocks that use the raw
//! (unpenalized) latencies. Execution uses the penalized latencies, so an admitted request can
//! still be late. The per-request overheads are the jitters themselves; `overhead_s` is not added.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

use super::{Compiled, Counters, Outcomes, Simulator};

/// Group-side admission margin of AlpaServe's controller.
const ADMISSION_MARGIN_S: f64 = 0.004;
/// Size of the pre-drawn jitter pools.
const POOL: usize = 2048;

fn abs_normal_pool(rng: &mut ChaCha8Rng, mean: f64, sd: f64, n: usize) -> Vec<f64> {
    let d = Normal::new(mean, sd).expect("valid normal");
    (0..n).map(|_| d.sample(rng).abs()).collect()
}

/// Non-negative f64 ordered by its bits (valid for finite values ≥ 0).
fn key(t: f64) -> u64 {
    t.max(0.0).to_bits()
}

pub(super) fn run(
    sim: &Simulator,
    c: &Compiled,
    arrival: &[f64],
    model: &[u32],
    k: &mut Counters,
    out: &mut Outcomes,
) {
    let n = arrival.len();
    let mut rng = ChaCha8Rng::seed_from_u64(sim.config.seed);
    let hop = abs_normal_pool(&mut rng, 0.0025, 0.0005, n);
    let forward = abs_normal_pool(&mut rng, 0.0025, 0.0005, POOL);
    let exec = abs_normal_pool(&mut rng, 0.005, 0.0005, POOL);
    // The controller sees requests in the order they reach it.
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| {
        (arrival[a] + hop[a])
            .total_cmp(&(arrival[b] + hop[b]))
            .then(a.cmp(&b))
    });
    let n_clocks = c.n_clocks();
    let mut book = vec![0.0f64; n_clocks];
    let mut actual = vec![0.0f64; n_clocks];
    let mut outstanding: Vec<BinaryHeap<Reverse<u64>>> = vec![BinaryHeap::new(); c.n_groups()];
    for (j, &i) in order.iter().enumerate() {
        let t = arrival[i];
        let m = model[i] as usize;
        k.req_m[m] += 1;
        out.start_s[i] = t;
        out.finish_s[i] = t;
        let reps = c.replicas(m);
        if reps.is_empty() {
            continue;
        }
        let now_ctrl = t + hop[i];
        let mut best = reps.start;
        let mut best_len = usize::MAX;
        for r in reps {
            let g = c.rep_group[r] as usize;
            let q = &mut outstanding[g];
            while q.peek().is_some_and(|Reverse(x)| *x <= key(now_ctrl)) {
                q.pop();
            }
            if q.len() < best_len {
                best_len = q.len();
                best = r;
            }
        }
        let r = best;
        let g = c.rep_group[r] as usize;
        k.routed_g[g] += 1;
        out.group[i] = g as u32;
        let now = now_ctrl + forward[j % POOL];
        let base = c.group_clock[g] as usize;
        let pp = c.rep_pp[r] as usize;
        let off = c.rep_lat[r] as usize;
        let mut x = now;
        for s in 0..pp {
            x = x.max(book[base + s]) + c.raw_lat[off + s];
        }
        if x + ADMISSION_MARGIN_S > t + sim.slo_s()[m] {
            continue;
        }
        let mut x = now;
        for s in 0..pp {
            x = x.max(book[base + s]) + c.raw_lat[off + s];
            book[base + s] = x;
        }
        let begin = now + exec[j % POOL];
        let mut y = begin;
        for s in 0..pp {
            y = y.max(actual[base + s]) + c.lat[off + s];
            actual[base + s] = y;
        }
        outstanding[g].push(Reverse(key(y)));
        out.start_s[i] = begin.max(actual[base]);
        out.finish_s[i] = y;
        if y - t <= sim.slo_s()[m] {
            out.good[i] = true;
            k.good_m[m] += 1;
            k.good_g[g] += 1;
            k.latency_sum_good_s += y - t;
        } else {
            out.late[i] = true;
        }
    }
}
