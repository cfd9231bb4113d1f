//! Canary analysis: a candidate version takes a growing share of traffic in steps (for example 5, 25, 50, 100%) and
//! is judged at the end of every interval in two layers:
//!
//! 1. **Guards**, with Flagger's rules: the candidate's error rate and p99 latency over the last interval must stay
//!    within their limits, and an interval without candidate requests fails too (no data is not good news). After
//!    `threshold` failed checks over the whole rollout it is rolled back.
//! 2. **A comparison with the primary that stays valid however often it is looked at**: per metric (error rate,
//!    mean log-latency, prediction drift — each predicted class's share, or a regressor's mean prediction — when
//!    the model's predictions are tallied, and the feedback loss — misclassified share or absolute error — once both
//!    arms have `min_labelled` rows with ground truth) an always-valid confidence interval of candidate − primary over the step
//!    so far ([`crate::sequential::sequential_difference`], α split over the metrics compared; for per-row figures the
//!    units are requests, not rows, see [`PredictionTally`] and [`LossSums`]). The candidate is rolled back as soon
//!    as a lower bound shows harm beyond the metric's tolerance, and advances when every upper bound shows it within
//!    tolerance and the step has lasted an interval. Kayenta's per-interval Mann–Whitney judge tests afresh at every
//!    look, so looking every interval multiplies its false alarms; a confidence sequence holds its level over all
//!    looks at once (tested below against a per-look z-test on the same A/A streams).
//!
//! The interval restarts at each step (the traffic shares change, so the comparison starts afresh): a product of
//! valid tests per segment stays valid. A step that stays inconclusive for `max_step_intervals` pauses the rollout
//! for a person to decide.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::sequential::{Arm, Comparison, sequential_difference};
use crate::split::TOTAL_BP;

/// How a canary is run and judged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CanaryConfig {
    /// The candidate's share at each step, in basis points, ascending; the last is 10,000 (promotion).
    pub steps_bp: Vec<u32>,
    /// Failed guard checks, over the whole rollout, that roll it back (Flagger's `threshold`, default 5).
    pub threshold: u32,
    /// Guard: highest error share of the candidate over an interval (for example 0.01), if any.
    pub max_error_rate: Option<f64>,
    /// Guard: highest p99 latency of the candidate over an interval, in seconds, if any.
    pub max_latency_p99: Option<f64>,
    /// Harm allowed in error share, candidate − primary (for example 0.005: half a percentage point).
    pub error_tolerance: f64,
    /// Harm allowed in latency, as a ratio of the primary's (0.1: 10% slower).
    pub latency_tolerance: f64,
    /// Level of the comparison, split evenly over its metrics.
    pub alpha: f64,
    /// Requests (both arms) at which the intervals are tightest (GrowthBook's N*).
    pub n_star: f64,
    /// Requests each arm needs in a step before the comparison counts.
    pub min_requests: u64,
    /// Intervals a step may stay inconclusive before the rollout pauses.
    pub max_step_intervals: u32,
    /// Harm allowed in the feedback loss: misclassified share for a classifier (0.01: one point of accuracy), or
    /// mean absolute error as a ratio of the primary's for a regressor (0.01: 1% larger).
    #[serde(default = "default_quality_tolerance")]
    pub quality_tolerance: f64,
    /// Rows with ground truth each arm needs in a step before the feedback loss is compared.
    #[serde(default = "default_min_labelled")]
    pub min_labelled: u64,
    /// Prediction drift allowed, either way: a classifier's share of any predicted class may move by this much
    /// (0.1: ten points), a regressor's mean prediction by this many of the primary's standard deviations (0.1, as
    /// Evidently's default threshold on the Wasserstein distance normed by the reference's deviation, which a mean
    /// shift bounds from below).
    #[serde(default = "default_drift_tolerance")]
    pub drift_tolerance: f64,
}

fn default_drift_tolerance() -> f64 {
    0.1
}

fn default_quality_tolerance() -> f64 {
    0.01
}

fn default_min_labelled() -> u64 {
    50
}

impl Default for CanaryConfig {
    fn default() -> Self {
        Self {
            steps_bp: vec![500, 2_500, 5_000, 10_000],
            threshold: 5,
            max_error_rate: None,
            max_latency_p99: None,
            error_tolerance: 0.005,
            latency_tolerance: 0.1,
            alpha: 0.05,
            n_star: 5_000.0,
            min_requests: 100,
            max_step_intervals: 10,
            quality_tolerance: default_quality_tolerance(),
            min_labelled: default_min_labelled(),
            drift_tolerance: default_drift_tolerance(),
        }
    }
}

impl CanaryConfig {
    /// Checks the steps and limits.
    ///
    /// # Errors
    /// A message naming what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.steps_bp.len() < 2 || self.steps_bp.last() != Some(&TOTAL_BP) {
            return Err("the steps must end at 100%, after at least one step below it".into());
        }
        if self.steps_bp.windows(2).any(|w| w[0] >= w[1]) || self.steps_bp[0] == 0 {
            return Err("the steps must rise, from above 0% to 100%".into());
        }
        if self.threshold == 0 || self.max_step_intervals == 0 {
            return Err("threshold and max_step_intervals must be at least 1".into());
        }
        let positive = |x: f64| x.is_finite() && x >= 0.0;
        let tolerances = [self.error_tolerance, self.latency_tolerance, self.quality_tolerance, self.drift_tolerance];
        if !tolerances.into_iter().all(positive) {
            return Err("tolerances must be finite and not negative".into());
        }
        let in_range = self.alpha > 0.0 && self.alpha < 1.0 && self.n_star >= 1.0;
        if !in_range {
            return Err("alpha must be in (0, 1) and n_star at least 1".into());
        }
        Ok(())
    }
}

/// Where a rollout is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Taking traffic in steps and being judged.
    Progressing,
    /// Held by a person or by an inconclusive step; nothing moves until resumed.
    Paused,
    /// The candidate took all traffic.
    Promoted,
    /// The primary took all traffic back.
    RolledBack,
}

/// One arm's requests over a span: counts and log-latency sums (for means and variances), and its p99.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ArmStats {
    /// Requests answered or failed.
    pub requests: u64,
    /// Failed by the server (5xx, not the client's mistakes).
    pub errors: u64,
    /// Sum of ln(latency in seconds) over answered requests.
    pub log_latency_sum: f64,
    /// Sum of its squares.
    pub log_latency_sq_sum: f64,
    /// Answered requests (the latency sums' count).
    pub answered: u64,
    /// The 99th percentile latency in seconds, when known.
    pub latency_p99: Option<f64>,
    /// The feedback loss of its predictions whose ground truth has arrived (see [`QualityLoss`]).
    #[serde(default)]
    pub loss: LossSums,
}

/// An arm's feedback loss over its labelled rows, with requests as the units (see [`PredictionTally`]): a request's
/// rows share its customer, its moment and often its input's make-up, so they are not independent draws.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct LossSums {
    /// Labelled rows (Σ m).
    pub rows: u64,
    /// Σ loss over rows.
    pub sum: f64,
    /// Σ loss² over rows.
    pub sq_sum: f64,
    /// Requests with at least one labelled row.
    pub requests: u64,
    /// Σ m² over requests.
    pub rows_sq: f64,
    /// Σ over requests of (the request's loss sum)².
    pub request_sq: f64,
    /// Σ over requests of the request's loss sum × its labelled rows.
    pub by_rows: f64,
}

impl LossSums {
    /// Counts one request's labelled rows' losses.
    #[allow(clippy::cast_precision_loss)]
    pub fn add_request(&mut self, losses: &[f64]) {
        if losses.is_empty() {
            return;
        }
        let (m, total) = (losses.len() as f64, losses.iter().sum::<f64>());
        self.rows += losses.len() as u64;
        self.sum += total;
        self.sq_sum += losses.iter().map(|l| l * l).sum::<f64>();
        self.requests += 1;
        self.rows_sq += m * m;
        self.request_sq += total * total;
        self.by_rows += total * m;
    }

    /// The mean loss per row.
    #[must_use]
    #[allow(clippy::cast_precision_loss)]
    pub fn mean(&self) -> f64 {
        self.sum / self.rows.max(1) as f64
    }

    /// The mean loss per row as an arm whose units are the requests (delta-method variance of a ratio).
    #[must_use]
    pub fn arm(&self) -> Arm {
        ratio_arm(self.requests, self.rows, self.rows_sq, self.sum, self.request_sq, self.by_rows)
    }
}

/// The per-row mean of `y` (Σ y over `rows` rows in `requests` requests, with Σ m², Σ y² and Σ y·m over requests) as
/// an arm whose units are the requests: the delta-method variance of a ratio of sums, as GrowthBook's ratio metrics,
/// with their n − 1. With one row per request it is the plain sample variance. Under two requests there is no
/// spread to estimate: the arm counts as empty (no comparison), however many rows the one request had.
#[allow(clippy::cast_precision_loss)]
fn ratio_arm(requests: u64, rows: u64, rows_sq: f64, sum: f64, sum_sq: f64, sum_by_rows: f64) -> Arm {
    let (n, rows) = (requests as f64, rows as f64);
    if n < 2.0 || rows == 0.0 {
        return Arm { n: 0.0, mean: if rows > 0.0 { sum / rows } else { 0.0 }, variance: 0.0 };
    }
    let mean = sum / rows;
    let variance_of_mean = (sum_sq - 2.0 * mean * sum_by_rows + mean * mean * rows_sq) / (rows * rows);
    Arm { n, mean, variance: (variance_of_mean * n * n / (n - 1.0)).max(0.0) }
}

/// Most distinct classes a tally keeps apart; rows of further classes count in `rows` only (a "class" output with
/// thousands of values is a regressor's in disguise).
const MAX_CLASSES: usize = 1_024;

/// An arm's predictions: rows per predicted class for a classifier, sums of the predicted values for a regressor.
///
/// The unit is the request, not the row: a request of 40 rows from one customer is not 40 independent draws, and
/// counting its rows as such would make a batch's chance make-up look like drift. So besides the row totals the
/// tally keeps, per request `i` with `m_i` rows and `y_i` of them (or their sum), Σ y², Σ y·m and Σ m², from which
/// a share's (or mean's) delta-method variance over requests follows, as GrowthBook does for ratio metrics. With one
/// row per request it is the plain proportion's variance. Cumulative, like the other totals: a step's tally is the
/// difference of two.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PredictionTally {
    /// Requests with at least one finite prediction.
    pub requests: u64,
    /// Rows predicted (Σ m).
    pub rows: u64,
    /// Σ m².
    #[serde(default)]
    pub rows_sq: f64,
    /// A regressor's Σ of predicted values over rows.
    #[serde(default)]
    pub sum: f64,
    /// Σ of their squares over rows (the rows' spread, for the tolerance).
    #[serde(default)]
    pub sq_sum: f64,
    /// Σ over requests of (the request's sum)².
    #[serde(default)]
    pub request_sum_sq: f64,
    /// Σ over requests of the request's sum × its rows.
    #[serde(default)]
    pub request_sum_by_rows: f64,
    /// A classifier's tally per predicted class id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub classes: BTreeMap<i64, ClassTally>,
}

/// One predicted class's rows in an arm: Σ y, Σ y² and Σ y·m over requests (y: the request's rows of the class).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ClassTally {
    /// Rows predicted as the class.
    pub rows: u64,
    /// Σ y².
    pub sq: f64,
    /// Σ y·m.
    pub by_rows: f64,
}

impl PredictionTally {
    /// Counts one request's predictions (non-finite ones are skipped): class ids for a `classifier`, else values.
    #[allow(clippy::cast_precision_loss)]
    pub fn add(&mut self, predicted: &[f64], classifier: bool) {
        let finite: Vec<f64> = predicted.iter().copied().filter(|p| p.is_finite()).collect();
        if finite.is_empty() {
            return;
        }
        let m = finite.len() as f64;
        self.requests += 1;
        self.rows += finite.len() as u64;
        self.rows_sq += m * m;
        if classifier {
            let mut here: BTreeMap<i64, u64> = BTreeMap::new();
            for p in finite {
                #[allow(clippy::cast_possible_truncation)]
                let class = p.round() as i64;
                *here.entry(class).or_default() += 1;
            }
            for (class, y) in here {
                if !self.classes.contains_key(&class) && self.classes.len() >= MAX_CLASSES {
                    continue;
                }
                let t = self.classes.entry(class).or_default();
                let y64 = y as f64;
                t.rows += y;
                t.sq += y64 * y64;
                t.by_rows += y64 * m;
            }
        } else {
            let s: f64 = finite.iter().sum();
            self.sum += s;
            self.sq_sum += finite.iter().map(|v| v * v).sum::<f64>();
            self.request_sum_sq += s * s;
            self.request_sum_by_rows += s * m;
        }
    }

    /// What was counted after `earlier`.
    #[must_use]
    pub fn since(&self, earlier: &Self) -> Self {
        let classes = self
            .classes
            .iter()
            .map(|(&k, t)| {
                let e = earlier.classes.get(&k).copied().unwrap_or_default();
                (k, ClassTally { rows: t.rows.saturating_sub(e.rows), sq: t.sq - e.sq, by_rows: t.by_rows - e.by_rows })
            })
            .filter(|(_, t)| t.rows > 0)
            .collect();
        Self {
            requests: self.requests.saturating_sub(earlier.requests),
            rows: self.rows.saturating_sub(earlier.rows),
            rows_sq: self.rows_sq - earlier.rows_sq,
            sum: self.sum - earlier.sum,
            sq_sum: self.sq_sum - earlier.sq_sum,
            request_sum_sq: self.request_sum_sq - earlier.request_sum_sq,
            request_sum_by_rows: self.request_sum_by_rows - earlier.request_sum_by_rows,
            classes,
        }
    }

    /// Adds another tally (another replica's, say).
    pub fn merge(&mut self, other: &Self) {
        self.requests += other.requests;
        self.rows += other.rows;
        self.rows_sq += other.rows_sq;
        self.sum += other.sum;
        self.sq_sum += other.sq_sum;
        self.request_sum_sq += other.request_sum_sq;
        self.request_sum_by_rows += other.request_sum_by_rows;
        for (&k, t) in &other.classes {
            let mine = self.classes.entry(k).or_default();
            mine.rows += t.rows;
            mine.sq += t.sq;
            mine.by_rows += t.by_rows;
        }
    }

    fn class_arm(&self, class: i64) -> Arm {
        let t = self.classes.get(&class).copied().unwrap_or_default();
        #[allow(clippy::cast_precision_loss)]
        ratio_arm(self.requests, self.rows, self.rows_sq, t.rows as f64, t.sq, t.by_rows)
    }

    fn mean_arm(&self) -> Arm {
        ratio_arm(self.requests, self.rows, self.rows_sq, self.sum, self.request_sum_sq, self.request_sum_by_rows)
    }
}

/// The loss of one prediction against its ground truth, for the quality comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum QualityLoss {
    /// 1 when the predicted class is not the true one, else 0 (a classifier: the comparison is of accuracy).
    Misclassified,
    /// |predicted − true| (a regressor: the comparison is of mean absolute error).
    AbsoluteError,
}

/// What the judge sees at the end of an interval.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observation {
    /// The primary since the step began.
    pub primary: ArmStats,
    /// The candidate since the step began.
    pub candidate: ArmStats,
    /// The candidate over the last interval (for the guards).
    pub candidate_interval: ArmStats,
    /// What the arms' feedback loss measures, when the model gets ground truth.
    pub quality: Option<QualityLoss>,
    /// The primary's and the candidate's predictions since the step began, when the model's are tallied.
    pub predictions: Option<(PredictionTally, PredictionTally)>,
}

/// One metric's comparison.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MetricCheck {
    /// `error_rate`, `log_latency`, `prediction_drift`, `misclassified` or `absolute_error`.
    pub metric: String,
    /// What exactly was compared, where the metric alone does not say (the predicted class whose share moved most).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Candidate − primary, with its always-valid interval, when both arms have enough requests.
    pub comparison: Option<Comparison>,
    /// Harm allowed.
    pub tolerance: f64,
    /// `pass` (within tolerance), `fail` (harm beyond it) or `inconclusive`.
    pub verdict: String,
}

/// What the judge decided.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Judgement {
    /// `wait`, `advance`, `promote`, `rollback` or `pause`.
    pub action: String,
    /// Why, in words.
    pub reason: String,
    /// The candidate's share after the decision, in basis points.
    pub weight_bp: u32,
    /// Guard checks failed so far.
    pub failed_checks: u32,
    /// The comparisons.
    pub metrics: Vec<MetricCheck>,
}

/// A canary's state: what it was configured with, where it is, and what it has counted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Canary {
    /// Its configuration.
    pub config: CanaryConfig,
    /// Where it is.
    pub phase: Phase,
    /// Index of the current step.
    pub step: usize,
    /// Guard checks failed so far.
    pub failed_checks: u32,
    /// Intervals judged in the current step.
    pub intervals_in_step: u32,
}

impl Canary {
    /// A rollout at its first step.
    ///
    /// # Errors
    /// The configuration's error.
    pub fn start(config: CanaryConfig) -> Result<Self, String> {
        config.validate()?;
        Ok(Self { config, phase: Phase::Progressing, step: 0, failed_checks: 0, intervals_in_step: 0 })
    }

    /// The candidate's share now, in basis points.
    #[must_use]
    pub fn weight_bp(&self) -> u32 {
        match self.phase {
            Phase::RolledBack => 0,
            Phase::Promoted => TOTAL_BP,
            Phase::Progressing | Phase::Paused => self.config.steps_bp[self.step],
        }
    }

    /// Judges the interval that just ended (only while progressing; a paused or finished rollout only waits).
    pub fn judge(&mut self, o: &Observation) -> Judgement {
        if self.phase != Phase::Progressing {
            return self.decided("wait", format!("the rollout is {:?}", self.phase).to_lowercase(), Vec::new());
        }
        let c = &self.config;
        // Layer 1: guards on the last interval (no data fails, as in Flagger).
        let interval = &o.candidate_interval;
        let mut failed = Vec::new();
        if interval.requests == 0 {
            failed.push("no candidate requests in the interval".to_owned());
        }
        #[allow(clippy::cast_precision_loss)]
        let error_rate = if interval.requests > 0 { interval.errors as f64 / interval.requests as f64 } else { 0.0 };
        if let Some(max) = c.max_error_rate
            && interval.requests > 0
            && error_rate > max
        {
            failed.push(format!("error rate {error_rate:.4} above {max}"));
        }
        if let (Some(max), Some(p99)) = (c.max_latency_p99, interval.latency_p99)
            && p99 > max
        {
            failed.push(format!("p99 latency {p99:.6} s above {max} s"));
        }
        // Layer 2: always-valid comparisons over the step, the feedback loss once both arms have enough ground truth
        // (α is split over the metrics compared; a metric joining later only makes the others more conservative).
        let labelled = o.primary.loss.rows >= c.min_labelled && o.candidate.loss.rows >= c.min_labelled;
        let quality = o.quality.filter(|_| labelled);
        let compared = 2 + usize::from(quality.is_some()) + usize::from(o.predictions.is_some());
        #[allow(clippy::cast_precision_loss)]
        let alpha = c.alpha / compared as f64;
        let mut metrics =
            vec![error_check(&o.primary, &o.candidate, c, alpha), latency_check(&o.primary, &o.candidate, c, alpha)];
        if let Some((primary, candidate)) = &o.predictions {
            metrics.push(drift_check(primary, candidate, c, alpha));
        }
        if let Some(loss) = quality {
            metrics.push(quality_check(loss, &o.primary, &o.candidate, c, alpha));
        }
        if let Some(harm) = metrics.iter().find(|m| m.verdict == "fail") {
            let reason = format!("{} worse than the primary beyond its tolerance of {}", harm.metric, harm.tolerance);
            self.phase = Phase::RolledBack;
            return self.decided("rollback", reason, metrics);
        }
        if !failed.is_empty() {
            self.failed_checks += 1;
            if self.failed_checks >= c.threshold {
                self.phase = Phase::RolledBack;
                let reason =
                    format!("{} failed checks (threshold {}): {}", self.failed_checks, c.threshold, failed.join("; "));
                return self.decided("rollback", reason, metrics);
            }
        }
        self.intervals_in_step += 1;
        if failed.is_empty() && metrics.iter().all(|m| m.verdict == "pass") {
            self.intervals_in_step = 0;
            // The last step is 100%: with no primary traffic left to compare with, reaching it is the promotion.
            if self.step + 2 >= c.steps_bp.len() {
                self.phase = Phase::Promoted;
                self.step = c.steps_bp.len() - 1;
                let reason =
                    format!("within tolerance at {}%; promoted", f64::from(c.steps_bp[c.steps_bp.len() - 2]) / 100.0);
                return self.decided("promote", reason, metrics);
            }
            self.step += 1;
            let reason = format!("within tolerance; {}% next", f64::from(self.config.steps_bp[self.step]) / 100.0);
            return self.decided("advance", reason, metrics);
        }
        if self.intervals_in_step >= c.max_step_intervals {
            self.phase = Phase::Paused;
            let reason = format!("inconclusive after {} intervals at this step", self.intervals_in_step);
            return self.decided("pause", reason, metrics);
        }
        let reason = if failed.is_empty() { "not yet conclusive".to_owned() } else { failed.join("; ") };
        self.decided("wait", reason, metrics)
    }

    fn decided(&self, action: &str, reason: String, metrics: Vec<MetricCheck>) -> Judgement {
        Judgement {
            action: action.to_owned(),
            reason,
            weight_bp: self.weight_bp(),
            failed_checks: self.failed_checks,
            metrics,
        }
    }
}

fn verdict(comparison: Option<&Comparison>, tolerance: f64) -> &'static str {
    match comparison {
        Some(c) if c.lower > tolerance => "fail",
        Some(c) if c.upper < tolerance => "pass",
        _ => "inconclusive",
    }
}

/// Error share, candidate − primary.
#[allow(clippy::cast_precision_loss)]
fn error_check(p: &ArmStats, c: &ArmStats, config: &CanaryConfig, alpha: f64) -> MetricCheck {
    let share = |a: &ArmStats| (proportion(a.errors as f64, a.requests), a.requests);
    share_check("error_rate", share(p), share(c), config.error_tolerance, config.min_requests, config, alpha)
}

/// A share of bad outcomes (per arm: the share as an arm, and how many outcomes for the minimum), candidate −
/// primary. With no bad outcome in either arm the plug-in variance is 0 and the interval is undefined: it passes
/// only when even three bad units (the rule of three's 95% bound) would stay within tolerance; a candidate failing
/// everything the primary gets right fails outright.
fn share_check(
    metric: &str,
    p: (Arm, u64),
    c: (Arm, u64),
    tolerance: f64,
    min: u64,
    config: &CanaryConfig,
    alpha: f64,
) -> MetricCheck {
    let enough = p.1 >= min && c.1 >= min;
    let comparison = if enough { sequential_difference(p.0, c.0, alpha, config.n_star) } else { None };
    // Each arm all bad or all good: the plug-in variance is 0, and the difference is what was seen; none bad passes
    // only when even three bad units (the rule of three) would stay within tolerance. Any other arm without a spread
    // (a ratio over fewer than two requests, or requests all alike) proves nothing either way.
    let all_or_none = |a: &Arm| a.n >= 1.0 && (a.mean == 0.0 || a.mean == 1.0);
    let v = match &comparison {
        None if enough && all_or_none(&p.0) && all_or_none(&c.0) => {
            if c.0.mean - p.0.mean > tolerance {
                "fail"
            } else if c.0.mean == 0.0 && 3.0 / c.0.n.max(1.0) <= tolerance {
                "pass"
            } else {
                "inconclusive"
            }
        }
        other => verdict(other.as_ref(), tolerance),
    };
    MetricCheck { metric: metric.into(), detail: None, comparison, tolerance, verdict: v.into() }
}

/// A share of `bad` among `n` independent units, as an arm.
#[allow(clippy::cast_precision_loss)]
fn proportion(bad: f64, n: u64) -> Arm {
    let rate = bad / n.max(1) as f64;
    Arm { n: n as f64, mean: rate, variance: rate * (1.0 - rate) }
}

/// The feedback loss, candidate − primary: the misclassified share (a proportion, like errors), or the mean absolute
/// error with a tolerance relative to the primary's.
#[allow(clippy::cast_precision_loss)]
fn quality_check(loss: QualityLoss, p: &ArmStats, c: &ArmStats, config: &CanaryConfig, alpha: f64) -> MetricCheck {
    match loss {
        QualityLoss::Misclassified => {
            // Labelled rows for the minimum, requests as the units of the share's variance.
            let share = |a: &ArmStats| (a.loss.arm(), a.loss.rows);
            share_check(
                "misclassified",
                share(p),
                share(c),
                config.quality_tolerance,
                config.min_labelled,
                config,
                alpha,
            )
        }
        QualityLoss::AbsoluteError => {
            let tolerance = config.quality_tolerance * p.loss.mean();
            let comparison = sequential_difference(p.loss.arm(), c.loss.arm(), alpha, config.n_star);
            let v = verdict(comparison.as_ref(), tolerance);
            MetricCheck { metric: "absolute_error".into(), detail: None, comparison, tolerance, verdict: v.into() }
        }
    }
}

/// Harm either way: a drift up or down is a change.
fn two_sided_verdict(comparison: Option<&Comparison>, tolerance: f64) -> &'static str {
    match comparison {
        Some(c) if c.lower > tolerance || c.upper < -tolerance => "fail",
        Some(c) if c.lower > -tolerance && c.upper < tolerance => "pass",
        _ => "inconclusive",
    }
}

/// Prediction drift, candidate − primary: every predicted class's share (α split over the classes; the class whose
/// share moved most is reported) for a classifier, the mean prediction for a regressor, each with a two-sided
/// tolerance and requests as the units (see [`PredictionTally`]). When neither arm varies (a class always or never
/// predicted, a constant output) there is no interval: the shares seen decide, passing only when even three
/// requests (the rule of three) could not move a share beyond tolerance.
#[allow(clippy::cast_precision_loss)]
fn drift_check(p: &PredictionTally, c: &PredictionTally, config: &CanaryConfig, alpha: f64) -> MetricCheck {
    let tolerance = config.drift_tolerance;
    let metric = "prediction_drift".to_owned();
    let enough = p.requests >= config.min_requests && c.requests >= config.min_requests;
    if !enough {
        return MetricCheck { metric, detail: None, comparison: None, tolerance, verdict: "inconclusive".into() };
    }
    if p.classes.is_empty() && c.classes.is_empty() {
        let spread = Arm::from_sums(p.rows as f64, p.sum, p.sq_sum).variance.sqrt();
        let tolerance = tolerance * spread;
        let (a, b) = (p.mean_arm(), c.mean_arm());
        let comparison = sequential_difference(a, b, alpha, config.n_star);
        let v = match &comparison {
            None if (b.mean - a.mean).abs() > tolerance => "fail",
            // Both arms constant, within tolerance of each other.
            None => "pass",
            other => two_sided_verdict(other.as_ref(), tolerance),
        };
        return MetricCheck {
            metric,
            detail: Some("mean prediction".into()),
            comparison,
            tolerance,
            verdict: v.into(),
        };
    }
    let classes: std::collections::BTreeSet<i64> = p.classes.keys().chain(c.classes.keys()).copied().collect();
    let alpha = alpha / classes.len() as f64;
    let rule_of_three = 3.0 / p.requests.min(c.requests) as f64;
    let mut verdicts = Vec::new();
    let mut worst: Option<(f64, i64, Option<Comparison>)> = None;
    for k in classes {
        let (a, b) = (p.class_arm(k), c.class_arm(k));
        let comparison = sequential_difference(a, b, alpha, config.n_star);
        let moved = b.mean - a.mean;
        let v = match &comparison {
            None if moved.abs() > tolerance => "fail",
            None if rule_of_three <= tolerance => "pass",
            None => "inconclusive",
            other => two_sided_verdict(other.as_ref(), tolerance),
        };
        verdicts.push(v);
        if worst.as_ref().is_none_or(|w| moved.abs() > w.0) {
            worst = Some((moved.abs(), k, comparison));
        }
    }
    let v = if verdicts.contains(&"fail") {
        "fail"
    } else if verdicts.iter().all(|&v| v == "pass") {
        "pass"
    } else {
        "inconclusive"
    };
    let (detail, comparison) = worst.map_or((None, None), |(_, k, c)| (Some(format!("share of class {k}")), c));
    MetricCheck { metric, detail, comparison, tolerance, verdict: v.into() }
}

/// Mean log-latency, candidate − primary (a ratio of latencies, so the tolerance is ln(1 + latency_tolerance)).
#[allow(clippy::cast_precision_loss)]
fn latency_check(p: &ArmStats, c: &ArmStats, config: &CanaryConfig, alpha: f64) -> MetricCheck {
    let tolerance = config.latency_tolerance.ln_1p();
    let arm = |a: &ArmStats| Arm::from_sums(a.answered as f64, a.log_latency_sum, a.log_latency_sq_sum);
    let enough = p.answered >= config.min_requests && c.answered >= config.min_requests;
    let comparison = if enough { sequential_difference(arm(p), arm(c), alpha, config.n_star) } else { None };
    let v = verdict(comparison.as_ref(), tolerance);
    MetricCheck { metric: "log_latency".into(), detail: None, comparison, tolerance, verdict: v.into() }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An arm of `n` requests, `errors` of them failed, latencies drawn around `latency` seconds.
    fn arm(rng: &mut fastrand::Rng, n: u64, error_rate: f64, latency: f64) -> ArmStats {
        let mut s = ArmStats::default();
        let mut lat = Vec::new();
        for _ in 0..n {
            s.requests += 1;
            if rng.f64() < error_rate {
                s.errors += 1;
                continue;
            }
            // Log-normal-ish: latency × exp(N(0, 0.3²)) by Box–Muller.
            let z = (-2.0 * rng.f64().max(1e-300).ln()).sqrt() * (std::f64::consts::TAU * rng.f64()).cos();
            let l = latency * (0.3 * z).exp();
            s.answered += 1;
            s.log_latency_sum += l.ln();
            s.log_latency_sq_sum += l.ln() * l.ln();
            lat.push(l);
        }
        lat.sort_by(f64::total_cmp);
        s.latency_p99 = lat.get(lat.len().saturating_sub(1) * 99 / 100).copied();
        s
    }

    fn add(a: &ArmStats, b: &ArmStats) -> ArmStats {
        ArmStats {
            requests: a.requests + b.requests,
            errors: a.errors + b.errors,
            log_latency_sum: a.log_latency_sum + b.log_latency_sum,
            log_latency_sq_sum: a.log_latency_sq_sum + b.log_latency_sq_sum,
            answered: a.answered + b.answered,
            latency_p99: b.latency_p99,
            loss: LossSums {
                rows: a.loss.rows + b.loss.rows,
                sum: a.loss.sum + b.loss.sum,
                sq_sum: a.loss.sq_sum + b.loss.sq_sum,
                requests: a.loss.requests + b.loss.requests,
                rows_sq: a.loss.rows_sq + b.loss.rows_sq,
                request_sq: a.loss.request_sq + b.loss.request_sq,
                by_rows: a.loss.by_rows + b.loss.by_rows,
            },
        }
    }

    /// Runs a canary on simulated traffic (`per_interval` requests in all) until it ends or `max_intervals` pass.
    fn run(
        config: CanaryConfig,
        candidate_errors: f64,
        candidate_latency: f64,
        seed: u64,
        max_intervals: u32,
    ) -> (Canary, Vec<Judgement>) {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut canary = Canary::start(config).expect("valid");
        let (mut p_step, mut c_step) = (ArmStats::default(), ArmStats::default());
        let mut judgements = Vec::new();
        for _ in 0..max_intervals {
            let per_interval = 4_000u64;
            let to_candidate = per_interval * u64::from(canary.weight_bp()) / u64::from(TOTAL_BP);
            let p = arm(&mut rng, per_interval - to_candidate, 0.01, 0.010);
            let c = arm(&mut rng, to_candidate, candidate_errors, candidate_latency);
            p_step = add(&p_step, &p);
            c_step = add(&c_step, &c);
            let step_before = canary.step;
            let j = canary.judge(&Observation {
                primary: p_step,
                candidate: c_step,
                candidate_interval: c,
                quality: None,
                predictions: None,
            });
            let done = matches!(canary.phase, Phase::Promoted | Phase::RolledBack | Phase::Paused);
            judgements.push(j);
            if canary.step != step_before {
                (p_step, c_step) = (ArmStats::default(), ArmStats::default());
            }
            if done {
                break;
            }
        }
        (canary, judgements)
    }

    #[test]
    fn a_healthy_candidate_is_promoted_step_by_step() {
        let (canary, judgements) = run(CanaryConfig::default(), 0.01, 0.010, 1, 60);
        assert_eq!(canary.phase, Phase::Promoted, "{judgements:#?}");
        let weights: Vec<u32> = judgements.iter().filter(|j| j.action != "wait").map(|j| j.weight_bp).collect();
        assert_eq!(weights, vec![2_500, 5_000, 10_000]);
        assert_eq!(judgements.last().map(|j| j.action.as_str()), Some("promote"));
    }

    #[test]
    fn a_candidate_that_fails_requests_is_rolled_back_at_the_first_judgement() {
        let (canary, judgements) = run(CanaryConfig::default(), 0.5, 0.010, 2, 60);
        assert_eq!((canary.phase, judgements.len()), (Phase::RolledBack, 1), "{judgements:#?}");
        assert!(judgements[0].reason.contains("error_rate"), "{}", judgements[0].reason);
        assert_eq!(judgements[0].weight_bp, 0);
    }

    #[test]
    fn a_slower_candidate_is_rolled_back_by_the_latency_comparison() {
        let (canary, judgements) = run(CanaryConfig::default(), 0.01, 0.020, 3, 60);
        assert_eq!(canary.phase, Phase::RolledBack, "{judgements:#?}");
        assert!(judgements.len() <= 2, "{judgements:#?}");
        assert!(judgements.last().is_some_and(|j| j.reason.contains("log_latency")));
    }

    #[test]
    fn guards_count_failed_checks_and_no_data_fails() {
        let config = CanaryConfig { threshold: 2, max_error_rate: Some(0.02), ..CanaryConfig::default() };
        let mut canary = Canary::start(config).expect("valid");
        let quiet = Observation::default();
        assert_eq!(canary.judge(&quiet).action, "wait");
        assert_eq!(canary.failed_checks, 1);
        let j = canary.judge(&quiet);
        assert_eq!((j.action.as_str(), canary.phase), ("rollback", Phase::RolledBack), "{j:?}");
        assert!(j.reason.contains("no candidate requests"), "{}", j.reason);
        assert_eq!(canary.judge(&quiet).action, "wait", "a finished rollout only waits");
    }

    #[test]
    fn steps_must_rise_to_one_hundred_percent() {
        let bad = |steps: Vec<u32>| Canary::start(CanaryConfig { steps_bp: steps, ..CanaryConfig::default() }).is_err();
        assert!(bad(vec![500, 2_500]) && bad(vec![2_500, 500, 10_000]) && bad(vec![0, 10_000]) && bad(vec![]));
        assert!(bad(vec![10_000]) && !bad(vec![5_000, 10_000]));
    }

    /// A/A: the candidate equals the primary. Judged every interval for 30 intervals, the confidence sequence rolls
    /// back (at tolerance 0) at most about α of the time; a fixed-horizon one-sided z-test repeated at every look
    /// (what a per-interval judge does) does far more often.
    #[test]
    fn looking_every_interval_does_not_raise_false_rollbacks() {
        let config = CanaryConfig {
            steps_bp: vec![5_000, 10_000],
            error_tolerance: 0.0,
            latency_tolerance: 0.0,
            max_step_intervals: 30,
            threshold: u32::MAX,
            ..CanaryConfig::default()
        };
        let runs = 200;
        let (mut sequential, mut naive) = (0, 0);
        for seed in 0..runs {
            let mut rng = fastrand::Rng::with_seed(1_000 + seed);
            let mut canary = Canary::start(config.clone()).expect("valid");
            let (mut p, mut c) = (ArmStats::default(), ArmStats::default());
            let mut naive_fired = false;
            for _ in 0..30 {
                p = add(&p, &arm(&mut rng, 500, 0.01, 0.010));
                c = add(&c, &arm(&mut rng, 500, 0.01, 0.010));
                let j = canary.judge(&Observation {
                    primary: p,
                    candidate: c,
                    candidate_interval: c,
                    quality: None,
                    predictions: None,
                });
                // Never advance in this test: keep judging the same growing segment.
                canary.step = 0;
                canary.phase = if j.action == "rollback" { Phase::RolledBack } else { Phase::Progressing };
                let lat = j.metrics.iter().find(|m| m.metric == "log_latency").and_then(|m| m.comparison);
                if let Some(cmp) = lat {
                    // The same estimate with its fixed-horizon standard error, one-sided at 2.5%.
                    let se = (p_var(&p) / p.answered as f64 + p_var(&c) / c.answered as f64).sqrt();
                    naive_fired |= cmp.estimate / se > 1.96;
                }
                if canary.phase == Phase::RolledBack {
                    break;
                }
            }
            sequential += u32::from(canary.phase == Phase::RolledBack);
            naive += u32::from(naive_fired);
        }
        assert!(
            f64::from(sequential) / f64::from(runs as u32) <= 0.05,
            "{sequential} of {runs} A/A rollouts rolled back"
        );
        assert!(naive > 2 * sequential.max(5), "per-look testing fired {naive} times, the sequence {sequential}");
    }

    #[allow(clippy::cast_precision_loss)]
    fn p_var(a: &ArmStats) -> f64 {
        Arm::from_sums(a.answered as f64, a.log_latency_sum, a.log_latency_sq_sum).variance
    }
    /// Two healthy arms of 2,000 requests each, with `labelled` rows of ground truth, `wrong` of the candidate's and
    /// 10% of the primary's misclassified.
    fn with_feedback(labelled: u64, wrong: f64) -> Observation {
        let mut rng = fastrand::Rng::with_seed(7);
        let (mut p, mut c) = (arm(&mut rng, 2_000, 0.0, 0.01), arm(&mut rng, 2_000, 0.0, 0.01));
        let p_wrong = (labelled as f64 * 0.1).round();
        let c_wrong = (labelled as f64 * wrong).round();
        // One labelled row per request: the first `wrong` of them misclassified.
        let sums = |wrong: f64| {
            let mut l = LossSums::default();
            for i in 0..labelled {
                l.add_request(&[f64::from(u8::from((i as f64) < wrong))]);
            }
            l
        };
        (p.loss, c.loss) = (sums(p_wrong), sums(c_wrong));
        Observation {
            primary: p,
            candidate: c,
            candidate_interval: c,
            quality: Some(QualityLoss::Misclassified),
            predictions: None,
        }
    }

    #[test]
    fn a_less_accurate_candidate_is_rolled_back_once_enough_ground_truth_arrives() {
        let config = CanaryConfig { latency_tolerance: 0.5, ..CanaryConfig::default() };
        let mut canary = Canary::start(config.clone()).expect("valid");
        // Too little ground truth: accuracy is not compared, and the healthy error rate and latency advance it.
        let j = canary.judge(&with_feedback(config.min_labelled - 1, 0.4));
        assert!(j.metrics.iter().all(|m| m.metric != "misclassified"), "{j:?}");
        assert_eq!(j.action, "advance", "{j:?}");
        // 40% wrong against 10%, over 1,000 labelled rows each: harm far beyond one point of accuracy.
        let j = canary.judge(&with_feedback(1_000, 0.4));
        let check = j.metrics.iter().find(|m| m.metric == "misclassified").expect("compared");
        assert_eq!(check.verdict, "fail", "{j:?}");
        assert_eq!((j.action.as_str(), canary.phase), ("rollback", Phase::RolledBack), "{j:?}");
        // An equally accurate candidate is not held back by the comparison (nor rolled back).
        let mut canary = Canary::start(CanaryConfig { quality_tolerance: 0.05, ..config }).expect("valid");
        let j = canary.judge(&with_feedback(1_000, 0.1));
        let check = j.metrics.iter().find(|m| m.metric == "misclassified").expect("compared");
        assert_eq!(check.verdict, "pass", "{j:?}");
        assert_eq!(j.action, "advance", "{j:?}");
    }

    /// A tally of `n` one-row requests: classes drawn with the given shares, or values around `mean` (σ = 1).
    fn tally(rng: &mut fastrand::Rng, n: usize, shares: Option<&[f64]>, mean: f64) -> PredictionTally {
        let mut t = PredictionTally::default();
        let values: Vec<f64> = (0..n)
            .map(|_| match shares {
                Some(shares) => {
                    let (mut u, mut k) = (rng.f64(), 0);
                    while k + 1 < shares.len() && u >= shares[k] {
                        u -= shares[k];
                        k += 1;
                    }
                    f64::from(u8::try_from(k).expect("few classes"))
                }
                None => mean + (-2.0 * rng.f64().max(1e-300).ln()).sqrt() * (std::f64::consts::TAU * rng.f64()).cos(),
            })
            .collect();
        for v in values {
            t.add(&[v], shares.is_some());
        }
        t
    }

    #[test]
    fn prediction_drift_fails_a_moved_class_share_or_mean_and_passes_the_same_distribution() {
        let mut rng = fastrand::Rng::with_seed(7);
        let config = CanaryConfig::default();
        let same = [0.5, 0.3, 0.2];
        let (p, c) = (tally(&mut rng, 20_000, Some(&same), 0.0), tally(&mut rng, 20_000, Some(&same), 0.0));
        let check = drift_check(&p, &c, &config, 0.05 / 3.0);
        assert_eq!(check.verdict, "pass", "{check:?}");
        // Class 2's share from 20% to 45%: beyond the 10-point tolerance.
        let c = tally(&mut rng, 2_000, Some(&[0.35, 0.2, 0.45]), 0.0);
        let check = drift_check(&p, &c, &config, 0.05 / 3.0);
        assert_eq!((check.verdict.as_str(), check.detail.as_deref()), ("fail", Some("share of class 2")), "{check:?}");
        // A class the primary never predicts counts too.
        let c = tally(&mut rng, 2_000, Some(&[0.3, 0.2, 0.2, 0.3]), 0.0);
        assert_eq!(drift_check(&p, &c, &config, 0.05 / 3.0).verdict, "fail");
        // Too few rows: not yet known.
        let c = tally(&mut rng, 50, Some(&[0.0, 0.0, 1.0]), 0.0);
        assert_eq!(drift_check(&p, &c, &config, 0.05 / 3.0).verdict, "inconclusive");

        let (p, c) = (tally(&mut rng, 20_000, None, 3.0), tally(&mut rng, 20_000, None, 3.0));
        assert_eq!(drift_check(&p, &c, &config, 0.05 / 3.0).verdict, "pass");
        // Half a deviation lower: beyond the 0.1σ tolerance, either way counts.
        let c = tally(&mut rng, 2_000, None, 2.5);
        let check = drift_check(&p, &c, &config, 0.05 / 3.0);
        assert_eq!(check.verdict, "fail", "{check:?}");
        assert!(check.comparison.is_some_and(|c| c.upper < -check.tolerance), "{check:?}");
    }

    #[test]
    fn batched_requests_count_as_requests_so_a_batchs_make_up_is_not_drift() {
        // Every request is 40 rows of one class, the class drawn uniformly: the arms' shares differ by chance far
        // more than 40 × as many independent rows would allow.
        let mut rng = fastrand::Rng::with_seed(3);
        let config = CanaryConfig { min_requests: 20, ..CanaryConfig::default() };
        let mut rollbacks = 0;
        for _ in 0..200 {
            let (mut p, mut c) = (PredictionTally::default(), PredictionTally::default());
            for (arm, n) in [(&mut p, 30), (&mut c, 30)] {
                for _ in 0..n {
                    arm.add(&[f64::from(rng.u8(0..3)); 40], true);
                }
            }
            if drift_check(&p, &c, &config, 0.05 / 3.0).verdict == "fail" {
                rollbacks += 1;
            }
        }
        assert!(rollbacks <= 2, "{rollbacks} of 200 same-distribution pairs called drift");
        // One row per request: the plain sample variance (n − 1).
        let mut t = PredictionTally::default();
        for k in [0.0, 1.0, 1.0, 1.0] {
            t.add(&[k], true);
        }
        let a = t.class_arm(1);
        assert!((a.mean - 0.75).abs() < 1e-12 && (a.variance - 0.25).abs() < 1e-12, "{a:?}");
    }

    #[test]
    fn labelled_batches_count_as_requests_so_a_batch_of_mistakes_is_not_a_worse_candidate() {
        // Each request is 20 rows from one customer, all right or all wrong (a customer the model gets wrong), with the
        // same 20% of customers wrong in both arms: counted as independent rows, chance differences between the
        // arms look 20 × surer than they are.
        let mut rng = fastrand::Rng::with_seed(5);
        let config = CanaryConfig { min_labelled: 100, quality_tolerance: 0.02, ..CanaryConfig::default() };
        let (mut by_requests, mut by_rows) = (0, 0);
        for _ in 0..200 {
            let (mut p, mut c) = (ArmStats::default(), ArmStats::default());
            let (mut p_flat, mut c_flat) = (LossSums::default(), LossSums::default());
            for (arm, flat) in [(&mut p, &mut p_flat), (&mut c, &mut c_flat)] {
                for _ in 0..60 {
                    let losses = [f64::from(u8::from(rng.f64() < 0.2)); 20];
                    arm.loss.add_request(&losses);
                    for l in losses {
                        flat.add_request(&[l]);
                    }
                }
            }
            if quality_check(QualityLoss::Misclassified, &p, &c, &config, 0.05 / 3.0).verdict == "fail" {
                by_requests += 1;
            }
            let (p_rows, c_rows) =
                (ArmStats { loss: p_flat, ..ArmStats::default() }, ArmStats { loss: c_flat, ..ArmStats::default() });
            if quality_check(QualityLoss::Misclassified, &p_rows, &c_rows, &config, 0.05 / 3.0).verdict == "fail" {
                by_rows += 1;
            }
        }
        assert!(by_requests <= 2, "{by_requests} of 200 equally accurate pairs were called worse");
        assert!(by_rows > 5 * by_requests.max(2), "rows as units called {by_rows}, requests {by_requests}");
        // One row per request: the plain sample variance (n − 1).
        let mut l = LossSums::default();
        for k in [0.0, 1.0, 1.0, 1.0] {
            l.add_request(&[k]);
        }
        let a = l.arm();
        assert!((a.mean - 0.75).abs() < 1e-12 && (a.variance - 0.25).abs() < 1e-12, "{a:?}");
        // One 50-row request per arm is one unit each: no spread to go by, so no verdict, however the shares differ.
        let one = |wrong: usize| {
            let mut a = ArmStats::default();
            let losses: Vec<f64> = (0..50).map(|i| f64::from(u8::from(i < wrong))).collect();
            a.loss.add_request(&losses);
            a
        };
        let config = CanaryConfig { min_labelled: 50, ..config };
        for (p, c) in [(5, 6), (5, 40), (0, 50)] {
            let check = quality_check(QualityLoss::Misclassified, &one(p), &one(c), &config, 0.05 / 3.0);
            assert_eq!(check.verdict, "inconclusive", "{p} vs {c} wrong of 50 in one request: {check:?}");
        }
    }

    #[test]
    fn a_candidate_whose_predictions_drift_is_rolled_back_and_tallies_subtract_and_merge() {
        let mut rng = fastrand::Rng::with_seed(11);
        let mut canary = Canary::start(CanaryConfig::default()).expect("valid");
        let (p, c) = (arm(&mut rng, 5_000, 0.01, 0.01), arm(&mut rng, 1_000, 0.01, 0.01));
        let predictions =
            Some((tally(&mut rng, 5_000, Some(&[0.9, 0.1]), 0.0), tally(&mut rng, 1_000, Some(&[0.5, 0.5]), 0.0)));
        let j =
            canary.judge(&Observation { primary: p, candidate: c, candidate_interval: c, quality: None, predictions });
        assert_eq!(j.action, "rollback", "{j:?}");
        assert!(j.reason.starts_with("prediction_drift"), "{}", j.reason);

        let mut a = PredictionTally::default();
        a.add(&[0.0, 1.0, 1.0, f64::NAN], true);
        let mut b = a.clone();
        b.add(&[2.0, 1.0], true);
        let step = b.since(&a);
        let rows: Vec<(i64, u64)> = step.classes.iter().map(|(&k, t)| (k, t.rows)).collect();
        assert_eq!((step.requests, step.rows, rows), (1, 2, vec![(1, 1), (2, 1)]));
        a.merge(&step);
        assert_eq!(a, b);
    }
}
