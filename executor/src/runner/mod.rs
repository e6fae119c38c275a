//! Stage runners: what executes one pipeline stage of one request on its devices.
//!
//! The executor's workers are the same for every runner; only this seam differs:
//! - [`EmulateRunner`] takes exactly the profiled, penalized stage latency on the clock, so the
//!   control logic runs at cluster scale on any machine;
//! - [`CpuRunner`] runs real transformer layers on the CPU, as many as fit the profiled latency,
//!   one core per device;
//! - [`CudaRunner`] (feature `cuda`) runs the same layers on GPUs, or reports
//!   `NotCompiled`/`NoDevice`.

mod cpu;
mod cuda;
mod emulate;
mod transformer;

use std::str::FromStr;

pub use cpu::{CpuRunner, StageCalibration};
pub use cuda::CudaRunner;
pub use emulate::EmulateRunner;
pub use transformer::{LayerRunner, LayerSpec};

use crate::clock::Clock;
use crate::error::{ExecutorError, Result};

/// One stage of one request, as handed to a runner.
#[derive(Debug)]
pub struct StageWork<'a> {
    pub model: usize,
    /// Global group index.
    pub group: usize,
    pub stage: usize,
    pub pp: usize,
    pub tp: usize,
    /// The `tp` devices of this stage.
    pub devices: &'a [u32],
    /// When the stage may start: its input is ready and its devices are free (clock seconds).
    pub start_s: f64,
    /// Profiled latency of the stage, pipeline penalty included.
    pub profiled_s: f64,
    /// The request's activations, carried from stage to stage.
    pub activations: &'a mut Vec<f32>,
}

/// Executes pipeline stages. Called from the stage's worker thread, one stage at a time per
/// worker (per-stage FIFO); implementations may use more threads inside a stage (tp).
pub trait StageRunner: Send + Sync + std::fmt::Debug {
    fn name(&self) -> &'static str;
    /// Runs the stage and returns when it finished on `clock`.
    fn run(&self, work: &mut StageWork<'_>, clock: &dyn Clock) -> Result<f64>;
    /// Activations a request enters the first stage with (`input` from the request, if any).
    fn initial_activations(&self, model: usize, input: Option<&[f32]>) -> Vec<f32> {
        let _ = model;
        input.map(<[f32]>::to_vec).unwrap_or_default()
    }
    /// What to answer with after the last stage.
    fn output(&self, model: usize, activations: &[f32]) -> Option<Vec<f32>> {
        let _ = (model, activations);
        None
    }
}

/// The runners by name, as `serve --runner` spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunnerKind {
    Emulate,
    Cpu,
    Cuda,
}

impl FromStr for RunnerKind {
    type Err = ExecutorError;

    fn from_str(s: &str) -> Result<RunnerKind> {
        match s {
            "emulate" => Ok(RunnerKind::Emulate),
            "cpu" => Ok(RunnerKind::Cpu),
            "cuda" => Ok(RunnerKind::Cuda),
            other => Err(ExecutorError::UnknownRunner(other.to_string())),
        }
    }
}

impl RunnerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RunnerKind::Emulate => "emulate",
            RunnerKind::Cpu => "cpu",
            RunnerKind::Cuda => "cuda",
        }
    }
}
