//! Maximum-likelihood fit of a Gamma distribution with its location fixed at 0, used by the
//! MAF2-style replay (alpaserve-semantics.md §3.4) to turn each window's inter-arrival gaps into a
//! (rate, cv) pair.
//!
//! With `s = ln(mean x) − mean(ln x)` (≥ 0 by Jensen), the MLE shape `k` solves
//! `ln k − ψ(k) = s` and the scale is `θ = mean / k`. We start from the closed-form approximation
//! `k₀ = (3 − s + √((s − 3)² + 24 s)) / (12 s)` (accurate to about 1.5 %) and refine it with Newton's
//! method on `f(k) = ln k − ψ(k) − s`, whose derivative is `1/k − ψ′(k)`. `f` is convex and
//! decreasing, so Newton converges monotonically once an iterate lies left of the root; a step that
//! would leave the positive axis is halved instead.

/// True for a number that is neither NaN, infinite, zero nor negative.
fn is_positive_finite(x: f64) -> bool {
    x.is_finite() && x > 0.0
}

/// `ln x − ψ(x)` for `x > 0`, computed without the cancellation that `ln x − digamma(x)` suffers
/// for large `x` (where both terms are about `ln x` but their difference is about `1/(2x)`).
pub fn log_minus_digamma(x: f64) -> f64 {
    if !is_positive_finite(x) {
        return f64::NAN;
    }
    // ψ(x) = ψ(x + n) − Σ_{i<n} 1/(x + i): shift into the range where the asymptotic series is
    // accurate to machine precision.
    let mut shift_sum = 0.0;
    let mut y = x;
    while y < 10.0 {
        shift_sum += 1.0 / y;
        y += 1.0;
    }
    // ln y − ψ(y) = 1/(2y) + 1/(12y²) − 1/(120y⁴) + 1/(252y⁶) − 1/(240y⁸) + 1/(132y¹⁰) …
    let inv = 1.0 / y;
    let inv2 = inv * inv;
    let series = inv / 2.0
        + inv2
            * (1.0 / 12.0
                - inv2
                    * (1.0 / 120.0 - inv2 * (1.0 / 252.0 - inv2 * (1.0 / 240.0 - inv2 / 132.0))));
    series + (x / y).ln() + shift_sum
}

/// The digamma function ψ(x) = d/dx ln Γ(x), for `x > 0` (NaN otherwise).
pub fn digamma(x: f64) -> f64 {
    x.ln() - log_minus_digamma(x)
}

/// The trigamma function ψ′(x), for `x > 0` (NaN otherwise).
pub fn trigamma(x: f64) -> f64 {
    if !is_positive_finite(x) {
        return f64::NAN;
    }
    let mut acc = 0.0;
    let mut y = x;
    while y < 10.0 {
        acc += 1.0 / (y * y);
        y += 1.0;
    }
    // ψ′(y) = 1/y + 1/(2y²) + 1/(6y³) − 1/(30y⁵) + 1/(42y⁷) − 1/(30y⁹) …
    let inv = 1.0 / y;
    let inv2 = inv * inv;
    acc + inv
        + inv2 / 2.0
        + inv * inv2 * (1.0 / 6.0 - inv2 * (1.0 / 30.0 - inv2 * (1.0 / 42.0 - inv2 / 30.0)))
}

/// Maximum-likelihood `(shape, scale)` of a Gamma distribution with location 0.
///
/// Returns `None` when there are fewer than two samples, any sample is not a positive finite
/// number, or all samples are equal (the likelihood then grows without bound as the shape → ∞).
pub fn fit_gamma_mle(samples: &[f64]) -> Option<(f64, f64)> {
    if samples.len() < 2 || !samples.iter().all(|&x| is_positive_finite(x)) {
        return None;
    }
    let n = samples.len() as f64;
    let mean = samples.iter().sum::<f64>() / n;
    let mean_log = samples.iter().map(|x| x.ln()).sum::<f64>() / n;
    let s = mean.ln() - mean_log;
    if !is_positive_finite(s) {
        return None;
    }
    let mut k = (3.0 - s + ((s - 3.0) * (s - 3.0) + 24.0 * s).sqrt()) / (12.0 * s);
    for _ in 0..100 {
        let f = log_minus_digamma(k) - s;
        let df = 1.0 / k - trigamma(k);
        if df.is_nan() || df >= 0.0 || !f.is_finite() {
            break;
        }
        let mut next = k - f / df;
        if next.is_nan() || next <= 0.0 {
            next = k / 2.0;
        }
        let done = (next - k).abs() <= 1e-13 * k;
        k = next;
        if done {
            break;
        }
    }
    if !is_positive_finite(k) {
        return None;
    }
    let scale = mean / k;
    is_positive_finite(scale).then_some((k, scale))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digamma_known_values() {
        // ψ(1) = −γ, ψ(1/2) = −γ − 2 ln 2, ψ(10) = H₉ − γ.
        let euler = 0.577_215_664_901_532_9;
        assert!((digamma(1.0) + euler).abs() < 1e-13);
        assert!((digamma(0.5) + euler + 2.0 * 2f64.ln()).abs() < 1e-13);
        let h9: f64 = (1..10).map(|i| 1.0 / i as f64).sum();
        assert!((digamma(10.0) - (h9 - euler)).abs() < 1e-13);
        // ψ′(1) = π²/6, ψ′(1/2) = π²/2.
        let pi2 = std::f64::consts::PI * std::f64::consts::PI;
        assert!((trigamma(1.0) - pi2 / 6.0).abs() < 1e-12);
        assert!((trigamma(0.5) - pi2 / 2.0).abs() < 1e-12);
        assert!(digamma(-1.0).is_nan() && trigamma(0.0).is_nan());
    }

    #[test]
    fn log_minus_digamma_is_stable_for_large_arguments() {
        let x = 1e9;
        let v = log_minus_digamma(x);
        assert!((v * 2.0 * x - 1.0).abs() < 1e-6, "{v}");
    }

    #[test]
    fn degenerate_samples_have_no_fit() {
        assert_eq!(fit_gamma_mle(&[1.0]), None);
        assert_eq!(fit_gamma_mle(&[2.0, 2.0, 2.0]), None);
        assert_eq!(fit_gamma_mle(&[1.0, 0.0]), None);
        assert_eq!(fit_gamma_mle(&[1.0, f64::NAN]), None);
    }
}
