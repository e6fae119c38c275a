//! The GPU runner. Without the `cuda` feature (or without a driver) it is a typed error, so no
//! code outside this file mentions the feature.

use super::{StageRunner, StageWork};
use crate::clock::Clock;
use crate::error::{ExecutorError, Result};

/// Runs stages on CUDA devices.
#[derive(Debug)]
pub struct CudaRunner {
    _private: (),
}

impl CudaRunner {
    /// Probes for the runtime; fails with `NotCompiled` or `NoDevice` when it cannot run.
    pub fn new() -> Result<CudaRunner> {
        if !cfg!(feature = "cuda") {
            return Err(ExecutorError::NotCompiled {
                runner: "cuda",
                feature: "cuda",
            });
        }
        // The kernels crate owns the CUDA bindings; until it exposes a stage API the executor
        // cannot place work on a GPU, so say so instead of pretending.
        Err(ExecutorError::NoDevice {
            runner: "cuda",
            reason: "the CUDA stage path is not available in this build (kernels expose no device API yet)".into(),
        })
    }
}

impl StageRunner for CudaRunner {
    fn name(&self) -> &'static str {
        "cuda"
    }

    fn run(&self, work: &mut StageWork<'_>, _clock: &dyn Clock) -> Result<f64> {
        Err(ExecutorError::Stage {
            group: work.group,
            stage: work.stage,
            reason: "no CUDA device".into(),
        })
    }
}
