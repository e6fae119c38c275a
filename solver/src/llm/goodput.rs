//! Goodput at an SLO level, as the serving literature defines it (DistServe, OSDI'24; MuxServe's
//! "rate sustained at 99 % attainment"): the highest request rate a configuration sustains while
//! at least `level` of the requests meet their SLOs.
//!
//! The search runs over a rate scale s (the workload's arrivals compressed by s, so the offered
//! rate is s × the trace's base rate). It brackets the answer on a sweep's points, then bisects the
//! bracket to a relative resolution. Attainment is not guaranteed monotone in the rate (bursty
//! traces, routing effects), so the bracket's low end is the largest sweep point *below the first
//! failing one* (every swept scale up to it meets the level), and bisection keeps the invariant
//! "lo meets, hi fails"; on a monotone curve that is the maximum rate, on any curve it is a rate
//! that meets the level with a failing rate within the resolution above it.

use crate::error::{Result, SolverError};

/// One evaluated rate scale.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RatePoint {
    pub scale: f64,
    /// Fraction of the requests that met their SLO (dropped requests count as missed).
    pub attainment: f64,
    /// Offered load at this scale: requests per second of the trace's arrival span.
    pub offered_rps: f64,
}

/// Search settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GoodputSearch {
    /// Required attainment, in (0, 1].
    pub level: f64,
    /// Bisection stops when (hi − lo) ≤ resolution × hi (relative bracket width).
    pub resolution: f64,
    /// When even the smallest swept scale misses the level: how many times to halve it.
    pub max_halvings: u32,
    /// When every swept scale meets the level: how many times to double the largest.
    pub max_doublings: u32,
}

impl Default for GoodputSearch {
    fn default() -> Self {
        GoodputSearch {
            level: 0.99,
            resolution: 0.01,
            max_halvings: 6,
            max_doublings: 3,
        }
    }
}

/// How the search ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GoodputStatus {
    /// Bracketed and bisected: `lo` meets the level, `hi` misses it.
    Found,
    /// Even the smallest scale tested (`hi`) misses the level; `lo` is 0.
    NotReached,
    /// Every scale tested meets the level; `hi` is infinite and `lo` a lower bound.
    Open,
}

impl GoodputStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            GoodputStatus::Found => "found",
            GoodputStatus::NotReached => "not_reached",
            GoodputStatus::Open => "open",
        }
    }
}

/// Result of one search.
#[derive(Debug, Clone, PartialEq)]
pub struct GoodputAtLevel {
    pub level: f64,
    pub status: GoodputStatus,
    /// The largest scale found to meet the level (None when not reached).
    pub scale: Option<f64>,
    /// Offered rate at `scale`, req/s (0 when not reached): the goodput at `level`.
    pub rps: f64,
    /// Attainment at `scale`, or at the smallest scale tested when not reached.
    pub attainment: f64,
    /// Bracket: `lo` meets the level (0 when none does), `hi` misses it (∞ when none does).
    pub lo: f64,
    pub hi: f64,
    /// Simulations run by the search beyond the sweep's points.
    pub evaluations: usize,
}

/// Searches the largest rate scale whose attainment is at least `opts.level`, starting from the
/// sweep's `points` (any order; none is re-evaluated) and calling `eval(scale)` for new scales.
pub fn max_rate_at_level(
    points: &[RatePoint],
    opts: &GoodputSearch,
    mut eval: impl FnMut(f64) -> Result<RatePoint>,
) -> Result<GoodputAtLevel> {
    if !(opts.level > 0.0 && opts.level <= 1.0) {
        return Err(SolverError::Option(format!(
            "goodput level: expected a fraction in (0, 1], found {}",
            opts.level
        )));
    }
    if !(opts.resolution > 0.0 && opts.resolution < 1.0) {
        return Err(SolverError::Option(format!(
            "goodput resolution: expected a fraction in (0, 1), found {}",
            opts.resolution
        )));
    }
    let mut pts: Vec<RatePoint> = points
        .iter()
        .copied()
        .filter(|p| p.scale.is_finite() && p.scale > 0.0)
        .collect();
    pts.sort_by(|a, b| a.scale.total_cmp(&b.scale));
    pts.dedup_by(|a, b| a.scale == b.scale);
    // A Cell, so the count can be read while `run` still holds `eval`.
    let evaluations = std::cell::Cell::new(0usize);
    let mut run = |s: f64| -> Result<RatePoint> {
        evaluations.set(evaluations.get() + 1);
        eval(s)
    };
    if pts.is_empty() {
        pts.push(run(1.0)?);
    }
    let meets = |p: &RatePoint| p.attainment >= opts.level;
    let (mut lo, mut hi) = match pts.iter().position(|p| !meets(p)) {
        Some(0) => {
            let mut hi = pts[0];
            let mut lo = None;
            for _ in 0..opts.max_halvings {
                let p = run(hi.scale / 2.0)?;
                if meets(&p) {
                    lo = Some(p);
                    break;
                }
                hi = p;
            }
            match lo {
                Some(lo) => (lo, hi),
                None => {
                    return Ok(GoodputAtLevel {
                        level: opts.level,
                        status: GoodputStatus::NotReached,
                        scale: None,
                        rps: 0.0,
                        attainment: hi.attainment,
                        lo: 0.0,
                        hi: hi.scale,
                        evaluations: evaluations.get(),
                    })
                }
            }
        }
        Some(i) => (pts[i - 1], pts[i]),
        None => {
            let mut lo = pts[pts.len() - 1];
            let mut hi = None;
            for _ in 0..opts.max_doublings {
                let p = run(lo.scale * 2.0)?;
                if meets(&p) {
                    lo = p;
                } else {
                    hi = Some(p);
                    break;
                }
            }
            match hi {
                Some(hi) => (lo, hi),
                None => {
                    return Ok(GoodputAtLevel {
                        level: opts.level,
                        status: GoodputStatus::Open,
                        scale: Some(lo.scale),
                        rps: lo.offered_rps,
                        attainment: lo.attainment,
                        lo: lo.scale,
                        hi: f64::INFINITY,
                        evaluations: evaluations.get(),
                    })
                }
            }
        }
    };
    while hi.scale - lo.scale > opts.resolution * hi.scale {
        let p = run(0.5 * (lo.scale + hi.scale))?;
        if meets(&p) {
            lo = p;
        } else {
            hi = p;
        }
    }
    Ok(GoodputAtLevel {
        level: opts.level,
        status: GoodputStatus::Found,
        scale: Some(lo.scale),
        rps: lo.offered_rps,
        attainment: lo.attainment,
        lo: lo.scale,
        hi: hi.scale,
        evaluations: evaluations.get(),
    })
}
