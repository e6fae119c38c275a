//! The interconnect between the devices of a tensor-parallel group: ring collectives costed from
//! a bus bandwidth and a per-step latency (the α–β model NCCL's own bandwidth figures follow).

/// A link model. `bus_gb_per_s` is NCCL's "bus bandwidth" (10⁹ bytes/s): what each device moves
/// per second in a ring collective, independent of the group size.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkModel {
    pub name: String,
    pub bus_gb_per_s: f64,
    /// Fixed cost of each of the ring's steps, in seconds.
    pub step_latency_s: f64,
}

impl LinkModel {
    /// What measured (CPU, CUDA) profiles assume unless told otherwise: an NVLink-class link
    /// of 150 GB/s bus bandwidth and 10 µs per ring step, between a V100's and an A100's.
    pub fn default_measured() -> LinkModel {
        LinkModel {
            name: "nvlink-default".into(),
            bus_gb_per_s: 150.0,
            step_latency_s: 10e-6,
        }
    }

    /// Ring all-reduce: every device sends and receives `2 (t−1)/t` of the data in `2 (t−1)` steps.
    pub fn all_reduce_s(&self, bytes: u64, tp: usize) -> f64 {
        if tp <= 1 {
            return 0.0;
        }
        let t = tp as f64;
        2.0 * (t - 1.0) / t * bytes as f64 / (self.bus_gb_per_s * 1e9)
            + 2.0 * (t - 1.0) * self.step_latency_s
    }

    /// Ring all-gather of a result of `bytes`: `(t−1)/t` of it moves, in `t−1` steps.
    pub fn all_gather_s(&self, bytes: u64, tp: usize) -> f64 {
        if tp <= 1 {
            return 0.0;
        }
        let t = tp as f64;
        (t - 1.0) / t * bytes as f64 / (self.bus_gb_per_s * 1e9) + (t - 1.0) * self.step_latency_s
    }

    /// One line for `source.method`.
    pub fn describe(&self) -> String {
        format!(
            "tensor-parallel collectives from a ring link model \"{}\" ({} GB/s bus bandwidth, {} us per step)",
            self.name,
            self.bus_gb_per_s,
            self.step_latency_s * 1e6
        )
    }
}
