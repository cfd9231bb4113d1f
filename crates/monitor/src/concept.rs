//! Concept-drift detectors for a stream of per-prediction errors (0/1 for classification, a loss for regression):
//! ADWIN, Page-Hinkley and DDM, ported from river 0.23 (BSD-3-Clause) expression by expression, so that on the same
//! stream they raise at the same indices as river does (checked against river's own output on committed streams).
//!
//! As in river, `drift_detected` holds for exactly one update: the next update starts the detector afresh.

/// river's `stats.Mean`: a running mean updated as `mean += (1/n)·(x − mean)`, in that grouping, for equal bits.
#[derive(Debug, Clone, Copy, Default)]
struct RunningMean {
    n: f64,
    mean: f64,
}

impl RunningMean {
    fn update(&mut self, x: f64) {
        self.n += 1.0;
        self.mean += (1.0 / self.n) * (x - self.mean);
    }
}

/// What a detector says after an update.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DriftState {
    /// Nothing unusual.
    #[default]
    Stable,
    /// Unusual, not yet drift (DDM only).
    Warning,
    /// Drift: the stream's distribution changed.
    Drift,
}

/// A detector fed one value at a time.
pub trait DriftDetector: Send {
    /// Feeds the next value and says the state after it.
    fn update(&mut self, x: f64) -> DriftState;
}

// ---------------------------------------------------------------------------------------------------------------
// ADWIN (Bifet & Gavaldà 2007), river's `ADWIN` / `AdaptiveWindowing` in `adwin_c.pyx`.

/// ADWIN's settings; the defaults are river's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdwinConfig {
    /// Confidence: the false-positive rate is bounded by it.
    pub delta: f64,
    /// Cuts are looked for every `clock` values.
    pub clock: u64,
    /// Buckets per row of the exponential histogram before two merge.
    pub max_buckets: usize,
    /// Neither side of a cut may be shorter than this.
    pub min_window_length: f64,
    /// No cut is looked for until the window is longer than this.
    pub grace_period: f64,
}

impl Default for AdwinConfig {
    fn default() -> Self {
        Self { delta: 0.002, clock: 32, max_buckets: 5, min_window_length: 5.0, grace_period: 10.0 }
    }
}

/// One row of the exponential histogram: buckets of 2^row values each, oldest first.
#[derive(Debug, Clone)]
struct BucketRow {
    totals: Vec<f64>,
    variances: Vec<f64>,
}

impl BucketRow {
    fn new(capacity: usize) -> Self {
        Self { totals: Vec::with_capacity(capacity + 1), variances: Vec::with_capacity(capacity + 1) }
    }

    fn len(&self) -> usize {
        self.totals.len()
    }

    fn push(&mut self, total: f64, variance: f64) {
        self.totals.push(total);
        self.variances.push(variance);
    }

    /// Drops the `n` oldest buckets.
    fn drop_oldest(&mut self, n: usize) {
        self.totals.drain(..n);
        self.variances.drain(..n);
    }
}

/// ADWIN: an adaptive window over the stream that drops its older part whenever the means of the two parts differ
/// by more than a bound that holds with confidence `1 − delta`.
#[derive(Debug, Clone)]
pub struct Adwin {
    config: AdwinConfig,
    rows: Vec<BucketRow>,
    total: f64,
    variance: f64,
    width: f64,
    tick: u64,
    drift: bool,
}

impl Adwin {
    /// A new, empty window.
    #[must_use]
    pub fn new(config: AdwinConfig) -> Self {
        Self {
            config,
            rows: vec![BucketRow::new(config.max_buckets)],
            total: 0.0,
            variance: 0.0,
            width: 0.0,
            tick: 0,
            drift: false,
        }
    }

    /// Values in the window (how much history is still considered valid).
    #[must_use]
    pub fn width(&self) -> f64 {
        self.width
    }

    /// The window's mean.
    #[must_use]
    pub fn estimation(&self) -> f64 {
        if self.width > 0.0 { self.total / self.width } else { 0.0 }
    }

    fn insert(&mut self, value: f64) {
        self.rows[0].push(value, 0.0);
        self.width += 1.0;
        let mut incremental = 0.0;
        if self.width > 1.0 {
            let w = self.width;
            let d = value - self.total / (w - 1.0);
            incremental = (((w - 1.0) * d) * d) / w;
        }
        self.variance += incremental;
        self.total += value;
        self.compress();
    }

    fn compress(&mut self) {
        let max = self.config.max_buckets;
        let mut idx = 0;
        while idx < self.rows.len() && self.rows[idx].len() == max + 1 {
            if idx + 1 == self.rows.len() {
                self.rows.push(BucketRow::new(max));
            }
            let size = 2f64.powi(i32::try_from(idx).unwrap_or(i32::MAX));
            let row = &self.rows[idx];
            let (n1, n2) = (size, size);
            let (mu1, mu2) = (row.totals[0] / n1, row.totals[1] / n2);
            let total12 = row.totals[0] + row.totals[1];
            let temp = n1 * n2 * (mu1 - mu2) * (mu1 - mu2) / (n1 + n2);
            let v12 = row.variances[0] + row.variances[1] + temp;
            self.rows[idx + 1].push(total12, v12);
            self.rows[idx].drop_oldest(2);
            if self.rows[idx + 1].len() <= max {
                break;
            }
            idx += 1;
        }
    }

    fn cut(&self, n0: f64, n1: f64, delta_mean: f64) -> bool {
        let delta_prime = (2.0 * self.width.ln() / self.config.delta).ln();
        let m = self.config.min_window_length;
        let m_recip = (1.0 / (n0 - m + 1.0)) + (1.0 / (n1 - m + 1.0));
        let variance_in_window = self.variance / self.width;
        let epsilon =
            (((2.0 * m_recip) * variance_in_window) * delta_prime).sqrt() + ((2.0 / 3.0) * delta_prime) * m_recip;
        delta_mean.abs() > epsilon
    }

    /// Deletes the oldest bucket; returns how many values it held.
    fn delete_oldest(&mut self) -> f64 {
        let last = self.rows.len() - 1;
        let n = 2f64.powi(i32::try_from(last).unwrap_or(i32::MAX));
        let (u, v) = (self.rows[last].totals[0], self.rows[last].variances[0]);
        let mu = u / n;
        self.width -= n;
        self.total -= u;
        let mu_window = self.total / self.width;
        self.variance -= v + n * self.width * (mu - mu_window) * (mu - mu_window) / (n + self.width);
        self.rows[last].drop_oldest(1);
        if self.rows[last].len() == 0 {
            self.rows.pop();
        }
        n
    }

    fn detect(&mut self) -> bool {
        let mut detected = false;
        self.tick += 1;
        if !self.tick.is_multiple_of(self.config.clock) || self.width <= self.config.grace_period {
            return false;
        }
        let mut reduce = true;
        while reduce {
            reduce = false;
            let (mut n0, mut n1, mut u0, mut u1) = (0.0, self.width, 0.0, self.total);
            // From the oldest (largest) buckets to the newest; a cut is tried after each bucket but the newest.
            'scan: for idx in (0..self.rows.len()).rev() {
                let size = 2f64.powi(i32::try_from(idx).unwrap_or(i32::MAX));
                for k in 0..self.rows[idx].len() {
                    n0 += size;
                    n1 -= size;
                    u0 += self.rows[idx].totals[k];
                    u1 -= self.rows[idx].totals[k];
                    if idx == 0 && k == self.rows[idx].len() - 1 {
                        break 'scan;
                    }
                    let delta_mean = (u0 / n0) - (u1 / n1);
                    let m = self.config.min_window_length;
                    if n1 >= m && n0 >= m && self.cut(n0, n1, delta_mean) {
                        reduce = true;
                        detected = true;
                        if self.width > 0.0 {
                            self.delete_oldest();
                            break 'scan;
                        }
                    }
                }
            }
        }
        detected
    }
}

impl DriftDetector for Adwin {
    fn update(&mut self, x: f64) -> DriftState {
        if self.drift {
            *self = Self::new(self.config);
        }
        self.insert(x);
        self.drift = self.detect();
        if self.drift { DriftState::Drift } else { DriftState::Stable }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Page-Hinkley, river's `PageHinkley`.

/// Which direction of change Page-Hinkley looks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Increases of the mean (errors getting worse).
    Up,
    /// Decreases.
    Down,
    /// Either.
    #[default]
    Both,
}

/// Page-Hinkley's settings; the defaults are river's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PageHinkleyConfig {
    /// Values seen before any test.
    pub min_instances: f64,
    /// Magnitude of change tolerated.
    pub delta: f64,
    /// The cumulative deviation that signals drift (λ).
    pub threshold: f64,
    /// Forgetting factor on the cumulative sums.
    pub alpha: f64,
    /// Direction of change looked for.
    pub mode: Direction,
}

impl Default for PageHinkleyConfig {
    fn default() -> Self {
        Self { min_instances: 30.0, delta: 0.005, threshold: 50.0, alpha: 1.0 - 0.0001, mode: Direction::Both }
    }
}

/// Page-Hinkley: the cumulative deviation from the running mean against its running extreme.
#[derive(Debug, Clone)]
pub struct PageHinkley {
    config: PageHinkleyConfig,
    mean: RunningMean,
    sum_increase: f64,
    sum_decrease: f64,
    min_increase: f64,
    max_decrease: f64,
    drift: bool,
}

impl PageHinkley {
    /// A fresh detector.
    #[must_use]
    pub fn new(config: PageHinkleyConfig) -> Self {
        Self {
            config,
            mean: RunningMean::default(),
            sum_increase: 0.0,
            sum_decrease: 0.0,
            min_increase: f64::INFINITY,
            // river starts this at -1, not -inf.
            max_decrease: -1.0,
            drift: false,
        }
    }
}

impl DriftDetector for PageHinkley {
    fn update(&mut self, x: f64) -> DriftState {
        if self.drift {
            *self = Self::new(self.config);
        }
        self.mean.update(x);
        let dev = x - self.mean.mean;
        let c = self.config;
        self.sum_increase = ((c.alpha * self.sum_increase) + dev) - c.delta;
        self.sum_decrease = ((c.alpha * self.sum_decrease) + dev) + c.delta;
        if self.sum_increase < self.min_increase {
            self.min_increase = self.sum_increase;
        }
        if self.sum_decrease > self.max_decrease {
            self.max_decrease = self.sum_decrease;
        }
        if self.mean.n >= c.min_instances {
            let up = self.sum_increase - self.min_increase > c.threshold;
            let down = self.max_decrease - self.sum_decrease > c.threshold;
            self.drift = match c.mode {
                Direction::Up => up,
                Direction::Down => down,
                Direction::Both => up || down,
            };
        }
        if self.drift { DriftState::Drift } else { DriftState::Stable }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// DDM (Gama et al. 2004), river's `binary.DDM`.

/// DDM's settings; the defaults are river's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DdmConfig {
    /// Values seen before any test.
    pub warm_start: f64,
    /// Standard deviations above the best error rate that warn.
    pub warning_threshold: f64,
    /// Standard deviations above the best error rate that signal drift.
    pub drift_threshold: f64,
}

impl Default for DdmConfig {
    fn default() -> Self {
        Self { warm_start: 30.0, warning_threshold: 2.0, drift_threshold: 3.0 }
    }
}

/// DDM: the error rate's running mean plus its binomial standard deviation, against the lowest seen.
#[derive(Debug, Clone)]
pub struct Ddm {
    config: DdmConfig,
    p: RunningMean,
    p_min: f64,
    s_min: f64,
    ps_min: f64,
    warning: bool,
    drift: bool,
}

impl Ddm {
    /// A fresh detector.
    #[must_use]
    pub fn new(config: DdmConfig) -> Self {
        Self {
            config,
            p: RunningMean::default(),
            p_min: f64::NAN,
            s_min: f64::NAN,
            ps_min: f64::INFINITY,
            warning: false,
            drift: false,
        }
    }
}

impl DriftDetector for Ddm {
    /// `x` is an error indicator: any value above 0.5 counts as an error.
    fn update(&mut self, x: f64) -> DriftState {
        if self.drift {
            *self = Self::new(self.config);
        }
        self.p.update(if x > 0.5 { 1.0 } else { 0.0 });
        let (p_i, n) = (self.p.mean, self.p.n);
        let s_i = (p_i * (1.0 - p_i) / n).sqrt();
        let c = self.config;
        if n > c.warm_start {
            if p_i + s_i <= self.ps_min {
                self.p_min = p_i;
                self.s_min = s_i;
                self.ps_min = self.p_min + self.s_min;
            }
            self.warning = p_i + s_i > self.p_min + c.warning_threshold * self.s_min;
            if p_i + s_i > self.p_min + c.drift_threshold * self.s_min {
                self.drift = true;
                self.warning = false;
            }
        }
        if self.drift {
            DriftState::Drift
        } else if self.warning {
            DriftState::Warning
        } else {
            DriftState::Stable
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// river's docstring examples: the indices they print.
    fn first_drift(detector: &mut dyn DriftDetector, stream: impl Iterator<Item = f64>) -> Option<usize> {
        stream.enumerate().find(|(_, x)| detector.update(*x) == DriftState::Drift).map(|(i, _)| i)
    }

    #[test]
    fn a_constant_stream_never_drifts() {
        for detector in [
            &mut Adwin::new(AdwinConfig::default()) as &mut dyn DriftDetector,
            &mut PageHinkley::new(PageHinkleyConfig::default()),
            &mut Ddm::new(DdmConfig::default()),
        ] {
            assert_eq!(first_drift(detector, std::iter::repeat_n(0.0, 5_000)), None);
        }
    }

    #[test]
    fn a_jump_in_the_error_rate_is_caught_soon_after() {
        let stream = || (0..4_000).map(|i| if i < 2_000 { f64::from(u8::from(i % 10 == 0)) } else { 1.0 });
        for (name, detector) in [
            ("adwin", &mut Adwin::new(AdwinConfig::default()) as &mut dyn DriftDetector),
            ("page-hinkley", &mut PageHinkley::new(PageHinkleyConfig::default())),
            ("ddm", &mut Ddm::new(DdmConfig::default())),
        ] {
            let at = first_drift(detector, stream()).unwrap_or(usize::MAX);
            assert!((2_000..2_200).contains(&at), "{name} raised at {at}");
        }
    }
}
