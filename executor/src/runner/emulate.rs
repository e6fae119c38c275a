//! The emulated device: a stage takes exactly its profiled latency.

use super::{StageRunner, StageWork};
use crate::clock::Clock;
use crate::error::Result;

/// Each stage occupies its devices for its profiled, penalized latency and does no computation.
///
/// The stage ends at `start + profiled` on the device's own timeline, not at whenever the worker
/// thread happened to wake: a late wake-up delays the answer by that much but never shifts the
/// next stage's schedule, as on a real accelerator whose host thread is late to notice.
#[derive(Debug, Default, Clone, Copy)]
pub struct EmulateRunner;

impl StageRunner for EmulateRunner {
    fn name(&self) -> &'static str {
        "emulate"
    }

    fn run(&self, work: &mut StageWork<'_>, clock: &dyn Clock) -> Result<f64> {
        let finish = work.start_s + work.profiled_s;
        clock.sleep_until(finish);
        Ok(finish)
    }
}
