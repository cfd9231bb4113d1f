//! Comparisons that stay valid however often they are looked at: always-valid confidence sequences and p-values for
//! the difference between two arms, and an always-valid check that traffic split as intended.
//!
//! - [`sequential_difference`]: GrowthBook's `SequentialTwoSidedTTest` (gbstats 0.8, Waudby-Smith et al. 2023's
//!   asymptotic confidence sequence, eqs. 9, 155 and 161) for the absolute difference of two means, tuned by
//!   `N*` (the total sample size at which the interval should be tightest). Equal to gbstats within 1e-9.
//! - [`msprt`]: the mixture sequential probability ratio test with a normal mixing distribution N(θ₀, τ²)
//!   (Johari, Pekelis, Walsh), its likelihood ratio and the half-width of the interval it inverts to.
//! - [`sample_ratio_mismatch`]: the Dirichlet-multinomial Bayes factor of Lindon and Malek (savvi) against the
//!   intended assignment shares, with its always-valid p-value (1/BF, not above 1).
//!
//! A p-value here may be compared with α at every look without raising the false-positive rate above α (Ville's
//! inequality); a fixed-horizon t-test looked at daily cannot promise that.

/// One arm's summary: count, mean and (sample) variance of the metric.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Arm {
    /// Units (requests, labelled predictions).
    pub n: f64,
    /// Mean of the metric.
    pub mean: f64,
    /// Variance of the metric (for a 0/1 metric, p(1 − p)).
    pub variance: f64,
}

impl Arm {
    /// From a count, a sum and a sum of squares (variance with Bessel's correction, as gbstats computes it).
    #[must_use]
    pub fn from_sums(n: f64, sum: f64, sum_squares: f64) -> Self {
        let mean = if n > 0.0 { sum / n } else { 0.0 };
        let variance = if n > 1.0 { (sum_squares - sum * sum / n) / (n - 1.0) } else { 0.0 };
        Self { n, mean, variance: variance.max(0.0) }
    }
}

/// An always-valid comparison of B against A.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Comparison {
    /// mean(B) − mean(A).
    pub estimate: f64,
    /// Lower end of the confidence interval.
    pub lower: f64,
    /// Upper end.
    pub upper: f64,
    /// Always-valid p-value of "no difference".
    pub p_value: f64,
}

/// GrowthBook's sequential two-sided test of mean(B) − mean(A) at level `alpha`, tuned for `n_star` units in all.
/// `None` when an arm is empty or both variances are zero.
#[must_use]
pub fn sequential_difference(a: Arm, b: Arm, alpha: f64, n_star: f64) -> Option<Comparison> {
    if a.n <= 0.0 || b.n <= 0.0 {
        return None;
    }
    let estimate = b.mean - a.mean;
    let v = a.variance / a.n + b.variance / b.n;
    if v.is_nan() || v <= 0.0 {
        return None;
    }
    let n = a.n + b.n;
    // Waudby-Smith et al. (2023) eq. 161: the mixture's rho for the chosen N*.
    let rho2 = (-2.0 * alpha.ln() + (1.0 - 2.0 * alpha.ln()).ln()) / n_star;
    let s2 = v * n;
    let nr2 = n * rho2 + 1.0;
    // Eq. 9: the half-width.
    let half = s2.sqrt() * (2.0 * nr2 * (nr2.sqrt() / alpha).ln() / (n * n * rho2)).sqrt();
    // Eq. 155: the e-value of "no difference", its p-value 1/e.
    let st2 = estimate * estimate * n / v;
    let e = (rho2 * st2 / (2.0 * nr2)).exp() / nr2.sqrt();
    Some(Comparison { estimate, lower: estimate - half, upper: estimate + half, p_value: (1.0 / e).min(1.0) })
}

/// The mSPRT's mixture likelihood ratio Λ of "the effect is θ₀" for an estimate `theta` with variance `v`, mixing
/// variance `tau2`; and the half-width of the always-valid interval at level `alpha` (Λ(θ) < 1/α inverted).
#[must_use]
pub fn msprt(theta: f64, theta0: f64, v: f64, tau2: f64, alpha: f64) -> (f64, f64) {
    let d = theta - theta0;
    let ratio = (v / (v + tau2)).sqrt() * (tau2 * d * d / (2.0 * v * (v + tau2))).exp();
    let half = (v * (v + tau2) / tau2 * (2.0 * (1.0 / alpha).ln() + ((v + tau2) / v).ln())).sqrt();
    (ratio, half)
}

/// The Dirichlet-multinomial Bayes factor of the observed `counts` against the intended `shares` (summing to 1),
/// with concentration `k` (savvi's default 100), and its p-value `min(1, 1/BF)`. A p-value under 0.001 means the
/// traffic did not split as configured: the comparison of the arms cannot be trusted.
#[must_use]
pub fn sample_ratio_mismatch(counts: &[u64], shares: &[f64], k: f64) -> (f64, f64) {
    let prior: Vec<f64> = shares.iter().map(|s| k * s).collect();
    #[allow(clippy::cast_precision_loss)]
    let posterior: Vec<f64> = prior.iter().zip(counts).map(|(a, &x)| a + x as f64).collect();
    #[allow(clippy::cast_precision_loss)]
    let log_null: f64 = shares.iter().zip(counts).map(|(s, &x)| x as f64 * s.ln()).sum();
    let log_bf = log_beta(&posterior) - log_beta(&prior) - log_null;
    let bf = log_bf.exp();
    (bf, (-log_bf).exp().min(1.0))
}

/// ln B(a) = Σ ln Γ(aᵢ) − ln Γ(Σ aᵢ).
fn log_beta(a: &[f64]) -> f64 {
    a.iter().map(|&x| statrs::function::gamma::ln_gamma(x)).sum::<f64>()
        - statrs::function::gamma::ln_gamma(a.iter().sum())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tolerance: f64) -> bool {
        (a - b).abs() <= tolerance * b.abs().max(1e-300)
    }

    #[test]
    fn growthbook_sequential_test_is_reproduced() {
        // gbstats 0.8.0 SequentialTwoSidedTTest, absolute difference, 5,000 units per arm, means 10.0 and 10.2,
        // N* = 5,000 (../shared/ROLLOUTS.md §5.5); the sums of squares are those of a population variance of 4,
        // which gbstats (as `Arm::from_sums`) turns into a sample variance with n − 1.
        let arm = |mean: f64| Arm::from_sums(5_000.0, 5_000.0 * mean, 5_000.0 * (4.0 + mean * mean));
        let (a, b) = (arm(10.0), arm(10.2));
        let c = sequential_difference(a, b, 0.05, 5_000.0).expect("defined");
        assert!(close(c.lower, 0.077_528_663_499_234_64, 1e-9), "{c:?}");
        assert!(close(c.upper, 0.322_471_336_500_763_9, 1e-9), "{c:?}");
        assert!(close(c.p_value, 3.218_685_518_094_801e-5, 1e-9), "{c:?}");
        assert!(sequential_difference(Arm { n: 0.0, ..a }, b, 0.05, 5_000.0).is_none());
    }

    #[test]
    fn msprt_ratio_and_interval_are_reproduced() {
        let (ratio, half) = msprt(0.1, 0.0, 0.005, 0.01, 0.05);
        assert!(close(ratio, 1.124_524_772_91, 1e-10) && close(1.0 / ratio, 0.889_264_535_64, 1e-10), "{ratio}");
        assert!(close(half, 0.230_598_300_662, 1e-10), "{half}");
        let (ratio, half) = msprt(0.02, 0.0, 1e-4, 4e-4, 0.05);
        assert!(close(ratio, 2.215_063_439_14, 1e-10) && close(half, 0.030_823_899_938_9, 1e-10), "{ratio} {half}");
    }

    #[test]
    fn sample_ratio_mismatch_matches_savvi() {
        let (bf, p) = sample_ratio_mismatch(&[2_600, 2_400], &[0.5, 0.5], 100.0);
        assert!(close(bf, 7.063_779_601_352_357, 1e-9) && close(p, 0.141_567_270_843_013_07, 1e-9), "{bf} {p}");
        // A split far from the intended one is flagged.
        let (_, p) = sample_ratio_mismatch(&[5_600, 4_400], &[0.5, 0.5], 100.0);
        assert!(p < 0.001, "{p}");
    }

    #[test]
    fn sums_give_bessel_corrected_variance() {
        let arm = Arm::from_sums(4.0, 10.0, 30.0);
        assert!(close(arm.mean, 2.5, 1e-15) && close(arm.variance, 5.0 / 3.0, 1e-15), "{arm:?}");
    }
}
