//! Seconds (f64) to [`Duration`] and [`Instant`], saturating. Times in plexserve are f64 seconds;
//! a valid input can hold one far beyond what `Duration::from_secs_f64` accepts (an SLO of
//! 1e300 s means "no SLO", `--time-limit-s 1e300` "no limit"), and that function panics.

use std::time::{Duration, Instant};

/// `t_s` seconds: zero for a negative time or NaN, [`Duration::MAX`] beyond its range.
pub fn duration_s(t_s: f64) -> Duration {
    if t_s > 0.0 {
        Duration::try_from_secs_f64(t_s).unwrap_or(Duration::MAX)
    } else {
        Duration::ZERO
    }
}

/// `start` + `t_s` seconds, or a century after `start` when that is beyond what an [`Instant`]
/// can hold (a deadline that never comes in practice).
pub fn instant_after(start: Instant, t_s: f64) -> Instant {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 86_400);
    start
        .checked_add(duration_s(t_s))
        .or_else(|| start.checked_add(CENTURY))
        .unwrap_or(start)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_saturate_instead_of_panicking() {
        assert_eq!(duration_s(1.5), Duration::from_millis(1500));
        assert_eq!(duration_s(-1.0), Duration::ZERO);
        assert_eq!(duration_s(f64::NAN), Duration::ZERO);
        assert_eq!(duration_s(1e300), Duration::MAX);
        assert_eq!(duration_s(f64::INFINITY), Duration::MAX);
        let t0 = Instant::now();
        assert_eq!(instant_after(t0, 2.0), t0 + Duration::from_secs(2));
        assert!(instant_after(t0, 1e300) > t0 + Duration::from_secs(50 * 365 * 86_400));
        assert_eq!(instant_after(t0, -5.0), t0);
    }
}
