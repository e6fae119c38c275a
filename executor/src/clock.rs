//! Time sources. The admission controller only ever sees seconds since an origin, so the same
//! logic runs under the wall clock (serving) and under a clock a test moves by hand.

use std::sync::{Condvar, Mutex};
use std::time::Instant;

pub use plexserve_solver::time::{duration_s, instant_after};

/// Seconds since this clock's origin, and a way to wait for a later instant.
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now_s(&self) -> f64;
    /// Blocks the calling thread until `now_s() >= t_s`.
    fn sleep_until(&self, t_s: f64);
}

/// The monotonic wall clock, counting from its creation.
#[derive(Debug, Clone, Copy)]
pub struct RealClock {
    origin: Instant,
}

impl RealClock {
    pub fn new() -> RealClock {
        RealClock {
            origin: Instant::now(),
        }
    }

    /// The instant that is `t_s` on this clock (for async timers).
    pub fn instant_at(&self, t_s: f64) -> Instant {
        instant_after(self.origin, t_s)
    }
}

impl Default for RealClock {
    fn default() -> Self {
        RealClock::new()
    }
}

impl Clock for RealClock {
    fn now_s(&self) -> f64 {
        self.origin.elapsed().as_secs_f64()
    }

    fn sleep_until(&self, t_s: f64) {
        // Absolute deadlines: oversleeping one stage never shifts the next one's schedule.
        let now = self.now_s();
        if t_s > now {
            std::thread::sleep(duration_s(t_s - now));
        }
    }
}

/// A clock that only moves when told to: deterministic tests of the executor's logic.
#[derive(Debug, Default)]
pub struct ManualClock {
    now: Mutex<f64>,
    moved: Condvar,
}

impl ManualClock {
    pub fn new(t_s: f64) -> ManualClock {
        ManualClock {
            now: Mutex::new(t_s),
            moved: Condvar::new(),
        }
    }

    /// Moves time forward to `t_s` (never backwards) and wakes sleepers that are due.
    pub fn advance_to(&self, t_s: f64) {
        let mut now = self.now.lock().unwrap_or_else(|e| e.into_inner());
        if t_s > *now {
            *now = t_s;
        }
        self.moved.notify_all();
    }
}

impl Clock for ManualClock {
    fn now_s(&self) -> f64 {
        *self.now.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn sleep_until(&self, t_s: f64) {
        let mut now = self.now.lock().unwrap_or_else(|e| e.into_inner());
        while *now < t_s {
            now = self.moved.wait(now).unwrap_or_else(|e| e.into_inner());
        }
    }
}
