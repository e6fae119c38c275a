//! The batching variant (alpaserve-semantics.md §1.3): per-model FIFO queues shared by the model's
//! replicas, groups that take a batch whenever their first stage frees.
//!
//! Fixed by default: the deadline check and the execution both add the overhead after the last
//! stage, a group woken with nothing to do does not stall later wake-ups, and every member of a
//! batch is checked against its own deadline. `SimOptions::faithful_batching` restores AlpaServe's
//! behaviour on all three points.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use super::{Compiled, Counters, Outcomes, Simulator};

struct Batcher<'s, 'a> {
    sim: &'s Simulator<'a>,
    c: &'s Compiled,
    arrival: &'s [f64],
    /// `lat[rep][batch_index][stage]`, penalized.
    lat: Vec<Vec<Vec<f64>>>,
    batch_sizes: Vec<Vec<u32>>,
    clocks: Vec<f64>,
    idle: Vec<f64>,
    queue: Vec<VecDeque<usize>>,
    /// Models hosted by each group, with the replica index of each.
    group_models: Vec<Vec<(usize, usize)>>,
    heap: BinaryHeap<Reverse<(u64, usize)>>,
}

impl Batcher<'_, '_> {
    fn fits(&self, tau: f64, g: usize, lat: &[f64], deadline: f64) -> bool {
        let base = self.c.group_clock[g] as usize;
        let mut x = tau;
        for (s, l) in lat.iter().enumerate() {
            x = self.clocks[base + s].max(x) + l;
        }
        x + self.sim.config.overhead_s <= deadline
    }

    fn deadline(&self, i: usize, m: usize) -> f64 {
        self.arrival[i] + self.sim.slo_s()[m]
    }

    fn head_model(&self, g: usize) -> Option<usize> {
        self.group_models[g]
            .iter()
            .filter_map(|&(m, _)| self.queue[m].front().map(|&i| (self.arrival[i], i, m)))
            .min_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)))
            .map(|x| x.2)
    }

    fn serve(&mut self, tau: f64, m: usize, g: usize, k: &mut Counters, out: &mut Outcomes) {
        let faithful = self.sim.options.faithful_batching;
        let r = self.group_models[g]
            .iter()
            .find(|x| x.0 == m)
            .map(|x| x.1)
            .expect("hosted");
        // Drop heads that cannot make their deadline even alone.
        while let Some(&i) = self.queue[m].front() {
            if self.fits(tau, g, &self.lat[r][0], self.deadline(i, m)) {
                break;
            }
            self.queue[m].pop_front();
            k.routed_g[g] += 1;
            out.group[i] = g as u32;
        }
        if self.queue[m].is_empty() {
            if let Some(m2) = self.head_model(g) {
                self.serve(tau, m2, g, k, out);
            }
            return;
        }
        let len = self.queue[m].len();
        let mut bi = 0;
        for (j, &b) in self.batch_sizes[r].iter().enumerate().skip(1) {
            let b = b as usize;
            if b > self.sim.config.max_batch as usize {
                break;
            }
            let too_many = if faithful { b - 1 > len } else { b > len };
            // Same model, FIFO: the head has the earliest deadline, so checking it checks all.
            let head = self.queue[m][0];
            if too_many || !self.fits(tau, g, &self.lat[r][j], self.deadline(head, m)) {
                break;
            }
            bi = j;
        }
        let bs = (self.batch_sizes[r][bi] as usize).min(len);
        let base = self.c.group_clock[g] as usize;
        let overhead = self.sim.config.overhead_s;
        let mut x = if faithful { tau + overhead } else { tau };
        for (s, l) in self.lat[r][bi].iter().enumerate() {
            x = x.max(self.clocks[base + s]) + l;
            self.clocks[base + s] = x;
        }
        let finish = if faithful { x } else { x + overhead };
        for _ in 0..bs {
            let i = self.queue[m].pop_front().expect("batch member");
            out.group[i] = g as u32;
            out.start_s[i] = tau;
            out.finish_s[i] = finish;
            let ok = faithful || finish <= self.deadline(i, m);
            if ok {
                out.good[i] = true;
                k.good_m[m] += 1;
                k.good_g[g] += 1;
                k.latency_sum_good_s += finish - self.arrival[i];
            } else {
                out.late[i] = true;
            }
        }
        k.routed_g[g] += bs as u64;
        self.idle[g] = self.clocks[base];
        self.heap
            .push(Reverse((self.idle[g].max(0.0).to_bits(), g)));
    }
}

pub(super) fn run(
    sim: &Simulator,
    c: &Compiled,
    arrival: &[f64],
    model: &[u32],
    k: &mut Counters,
    out: &mut Outcomes,
) {
    let inst = sim.inst;
    let n_groups = c.n_groups();
    let mut lat = Vec::with_capacity(c.rep_group.len());
    let mut batch_sizes = Vec::with_capacity(c.rep_group.len());
    let mut group_models = vec![Vec::new(); n_groups];
    for m in 0..inst.models.len() {
        let profile = inst.profile_of(m);
        for r in c.replicas(m) {
            let g = c.rep_group[r] as usize;
            let pp = c.rep_pp[r];
            let factor = 1.0 + sim.config.pp_penalty * pp as f64;
            let cfg = profile
                .config(pp, c.rep_tp[r])
                .expect("compiled replicas have a profiled configuration");
            lat.push(
                cfg.stage_latency_s
                    .iter()
                    .map(|row| row.iter().map(|l| l * factor).collect())
                    .collect(),
            );
            batch_sizes.push(profile.batch_sizes.clone());
            group_models[g].push((m, r));
        }
    }
    let mut b = Batcher {
        sim,
        c,
        arrival,
        lat,
        batch_sizes,
        clocks: vec![0.0; c.n_clocks()],
        idle: vec![0.0; n_groups],
        queue: vec![VecDeque::new(); inst.models.len()],
        group_models,
        heap: BinaryHeap::new(),
    };
    for (i, (&t, &m)) in arrival.iter().zip(model).enumerate() {
        while let Some(&Reverse((tb, g))) = b.heap.peek() {
            let tau = f64::from_bits(tb);
            if tau > t {
                break;
            }
            b.heap.pop();
            match b.head_model(g) {
                Some(m2) => b.serve(tau, m2, g, k, out),
                None if sim.options.faithful_batching => break,
                None => {}
            }
        }
        let m = m as usize;
        k.req_m[m] += 1;
        out.start_s[i] = t;
        out.finish_s[i] = t;
        let reps = c.replicas(m);
        if reps.is_empty() {
            continue;
        }
        let mut best = reps.start;
        for r in reps.start + 1..reps.end {
            let last = |r: usize| {
                let g = c.rep_group[r] as usize;
                b.clocks[c.group_clock[g + 1] as usize - 1]
            };
            if last(r) < last(best) {
                best = r;
            }
        }
        let g = c.rep_group[best] as usize;
        b.queue[m].push_back(i);
        if t >= b.idle[g] {
            b.serve(t, m, g, k, out);
        }
    }
    while let Some(Reverse((tb, g))) = b.heap.pop() {
        if let Some(m2) = b.head_model(g) {
            b.serve(f64::from_bits(tb), m2, g, k, out);
        }
    }
    // Anything still queued was never served: it failed.
    for q in &b.queue {
        debug_assert!(q.is_empty() || sim.options.faithful_batching);
    }
}
