//! The reference profile: per-column statistics of the training inputs and of the model's outputs on them, the
//! baseline drift monitoring compares live traffic against.
//!
//! Built in one streaming pass: count, missing, mean, standard deviation, min, max and category frequencies are
//! exact over every row; quantiles and the quantile-binned histogram come from a uniform reservoir sample of up to
//! [`SAMPLE_SIZE`] values by default (exact when the column has no more rows than that; `ferry pack --reference-cap`
//! sets another cap), which is also stored for the tests that need raw values (Kolmogorov–Smirnov, Wasserstein), so
//! that live drift equals Evidently's on the whole reference whenever it fits the cap.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Values kept per column in the uniform sample, by default.
pub const SAMPLE_SIZE: usize = 100_000;
/// Distinct values tracked per column; past this a column's category frequencies are dropped (numerical) or
/// marked truncated (categorical).
pub const MAX_CATEGORIES: usize = 1_000;
/// Quantiles recorded per numerical column.
pub const QUANTILES: [f64; 9] = [0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99];
/// Histogram bins (deciles of the sample).
const HISTOGRAM_BINS: usize = 10;

/// Whether a column holds numbers or categories.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ColumnKind {
    /// Every present value parses as a number.
    Numerical,
    /// At least one present value is not a number.
    Categorical,
}

/// Counts over bin edges: `counts[i]` counts values in `[edges[i], edges[i+1])`, the last bin closed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    /// Bin edges, ascending, `counts.len() + 1` of them; the outer ones are the sample's min and max.
    pub edges: Vec<f64>,
    /// Values per bin, over the sample.
    pub counts: Vec<u64>,
}

/// Statistics of one column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColumnProfile {
    /// Column (feature or output) name.
    pub name: String,
    /// Numerical or categorical.
    pub kind: ColumnKind,
    /// Present values.
    pub count: u64,
    /// Missing values: empty, `NA`, `NaN`, `null`, `None`, or ±infinity.
    pub missing: u64,
    /// Mean (numerical).
    pub mean: Option<f64>,
    /// Population standard deviation, ddof = 0 (numerical).
    pub std: Option<f64>,
    /// Smallest value (numerical).
    pub min: Option<f64>,
    /// Largest value (numerical).
    pub max: Option<f64>,
    /// `[q, value]` pairs at [`QUANTILES`], linear interpolation like numpy's default (numerical).
    pub quantiles: Vec<[f64; 2]>,
    /// Decile-binned histogram of the sample (numerical).
    pub histogram: Option<Histogram>,
    /// Value → count over every row, while the column has at most [`MAX_CATEGORIES`] distinct values.
    pub categories: Option<BTreeMap<String, u64>>,
    /// Whether `categories` stopped counting new values (categorical columns only).
    pub categories_truncated: bool,
    /// Uniform sample of present numerical values.
    pub sample: Vec<f64>,
    /// Uniform sample of present categorical values.
    pub category_sample: Vec<String>,
}

/// The reference profile (`profile.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    /// Rows profiled.
    pub rows: u64,
    /// One profile per input feature, in CSV order.
    pub features: Vec<ColumnProfile>,
    /// One profile per output column (a `[N, k]` output gives `name[0]` … `name[k-1]`).
    pub outputs: Vec<ColumnProfile>,
}

/// Whether a CSV cell counts as missing.
#[must_use]
pub fn is_missing(cell: &str) -> bool {
    let t = cell.trim();
    t.is_empty() || ["na", "nan", "null", "none", "n/a"].iter().any(|m| t.eq_ignore_ascii_case(m))
}

/// Accumulates one column, one value at a time, in bounded memory.
#[derive(Debug, Clone)]
pub struct ColumnProfiler {
    name: String,
    count: u64,
    missing: u64,
    numeric_seen: u64,
    mean: f64,
    m2: f64,
    min: f64,
    max: f64,
    categorical: bool,
    categories: Option<BTreeMap<String, u64>>,
    truncated: bool,
    sample: Vec<f64>,
    category_sample: Vec<String>,
    /// Values kept in the sample.
    cap: usize,
    rng: SplitMix64,
}

impl ColumnProfiler {
    /// A profiler for column `name` keeping [`SAMPLE_SIZE`] values; `seed` makes the sample reproducible.
    #[must_use]
    pub fn new(name: impl Into<String>, seed: u64) -> Self {
        Self::with_cap(name, seed, SAMPLE_SIZE)
    }

    /// A profiler keeping at most `cap` raw values (at least 1).
    #[must_use]
    pub fn with_cap(name: impl Into<String>, seed: u64, cap: usize) -> Self {
        Self {
            name: name.into(),
            count: 0,
            missing: 0,
            numeric_seen: 0,
            mean: 0.0,
            m2: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            categorical: false,
            categories: Some(BTreeMap::new()),
            truncated: false,
            sample: Vec::new(),
            category_sample: Vec::new(),
            cap: cap.max(1),
            rng: SplitMix64(seed ^ 0x9E37_79B9_7F4A_7C15),
        }
    }

    /// Adds one CSV cell.
    pub fn push_str(&mut self, cell: &str) {
        if is_missing(cell) {
            self.missing += 1;
            return;
        }
        let cell = cell.trim();
        match cell.parse::<f64>() {
            Ok(v) if !self.categorical => self.push_number(v, Some(cell)),
            Ok(v) if !v.is_finite() => self.missing += 1,
            _ => self.push_category(cell),
        }
    }

    /// Adds one number (a model output, say). NaN and ±infinity count as missing.
    pub fn push_f64(&mut self, v: f64) {
        self.push_number(v, None);
    }

    fn push_number(&mut self, v: f64, text: Option<&str>) {
        if !v.is_finite() {
            self.missing += 1;
            return;
        }
        self.count += 1;
        self.numeric_seen += 1;
        let delta = v - self.mean;
        #[expect(clippy::cast_precision_loss, reason = "row counts stay far below 2^52")]
        let n = self.numeric_seen as f64;
        self.mean += delta / n;
        self.m2 += delta * (v - self.mean);
        self.min = self.min.min(v);
        self.max = self.max.max(v);
        let key = text.map_or_else(|| format_number(v), |t| format_number(t.parse::<f64>().unwrap_or(v)));
        self.count_category(key);
        if let Some(i) = self.reservoir_slot() {
            if i == self.sample.len() {
                self.sample.push(v);
            } else {
                self.sample[i] = v;
            }
        }
    }

    fn push_category(&mut self, cell: &str) {
        if !self.categorical {
            // The first non-number turns the column categorical: keep the numbers seen so far as categories.
            self.categorical = true;
            self.category_sample = self.sample.iter().map(|v| format_number(*v)).collect();
            if self.categories.is_none() {
                self.categories = Some(BTreeMap::new());
                self.truncated = true;
            }
        }
        self.count += 1;
        self.count_category(cell.to_owned());
        if let Some(i) = self.reservoir_slot() {
            if i == self.category_sample.len() {
                self.category_sample.push(cell.to_owned());
            } else {
                self.category_sample[i] = cell.to_owned();
            }
        }
    }

    fn count_category(&mut self, key: String) {
        let Some(categories) = &mut self.categories else { return };
        if let Some(c) = categories.get_mut(&key) {
            *c += 1;
        } else if categories.len() < MAX_CATEGORIES {
            categories.insert(key, 1);
        } else if self.categorical {
            self.truncated = true;
        } else {
            self.categories = None;
        }
    }

    /// Algorithm R: the n-th present value replaces a uniformly chosen slot with probability cap / n.
    fn reservoir_slot(&mut self) -> Option<usize> {
        let n = self.count;
        if n <= self.cap as u64 {
            return usize::try_from(n - 1).ok();
        }
        let j = self.rng.next() % n;
        usize::try_from(j).ok().filter(|&j| j < self.cap)
    }

    /// The finished profile.
    #[must_use]
    pub fn finish(self) -> ColumnProfile {
        let numerical = !self.categorical && self.count > 0;
        let mut sorted = self.sample.clone();
        sorted.sort_by(f64::total_cmp);
        #[expect(clippy::cast_precision_loss, reason = "row counts stay far below 2^52")]
        let n = self.numeric_seen as f64;
        ColumnProfile {
            kind: if self.categorical { ColumnKind::Categorical } else { ColumnKind::Numerical },
            count: self.count,
            missing: self.missing,
            mean: numerical.then_some(self.mean),
            std: numerical.then(|| (self.m2 / n).sqrt()),
            min: numerical.then_some(self.min),
            max: numerical.then_some(self.max),
            quantiles: if numerical { QUANTILES.iter().map(|&q| [q, quantile(&sorted, q)]).collect() } else { vec![] },
            histogram: numerical.then(|| histogram(&sorted)),
            categories: self.categories,
            categories_truncated: self.truncated,
            sample: if self.categorical { Vec::new() } else { self.sample },
            category_sample: self.category_sample,
            name: self.name,
        }
    }
}

/// Numbers as category keys: integers without a fraction (`1`, not `1.0`), others in shortest round-trip form.
fn format_number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 { format!("{v:.0}") } else { v.to_string() }
}

/// numpy's default (linear) quantile of sorted values.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    match sorted.len() {
        0 => f64::NAN,
        1 => sorted[0],
        n => {
            #[expect(clippy::cast_precision_loss, reason = "the sample holds at most 5,000 values")]
            let pos = q * (n - 1) as f64;
            #[expect(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "0 <= pos < n")]
            let lo = pos.floor() as usize;
            let hi = (lo + 1).min(n - 1);
            sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - pos.floor())
        }
    }
}

/// Counts the sorted sample over its decile edges (duplicates removed, so constant stretches make one bin).
fn histogram(sorted: &[f64]) -> Histogram {
    #[expect(clippy::cast_precision_loss, reason = "a handful of bins")]
    let mut edges: Vec<f64> =
        (0..=HISTOGRAM_BINS).map(|i| quantile(sorted, i as f64 / HISTOGRAM_BINS as f64)).collect();
    edges.dedup();
    if edges.len() == 1 {
        edges.push(edges[0]);
    }
    let mut counts = vec![0u64; edges.len() - 1];
    for &v in sorted {
        // Half-open bins except the last, which is closed.
        let i = edges.partition_point(|&e| e <= v).saturating_sub(1).min(counts.len() - 1);
        counts[i] += 1;
    }
    Histogram { edges, counts }
}

/// A tiny deterministic generator, so that packing the same data twice gives the same sample.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numerical_statistics_match_numpy() {
        let mut p = ColumnProfiler::new("x", 1);
        for cell in ["1", "2", "", "3", "4", "NaN", "inf", "10"] {
            p.push_str(cell);
        }
        let c = p.finish();
        assert_eq!(c.kind, ColumnKind::Numerical);
        assert_eq!((c.count, c.missing), (5, 3));
        assert_eq!(c.mean, Some(4.0));
        // numpy.std([1,2,3,4,10]) = 3.1622776601683795
        assert!((c.std.expect("std") - 3.162_277_660_168_379_5).abs() < 1e-12);
        assert_eq!((c.min, c.max), (Some(1.0), Some(10.0)));
        // numpy.quantile([1,2,3,4,10], 0.9) = 7.6
        let q90 = c.quantiles.iter().find(|q| q[0] == 0.9).expect("q90")[1];
        assert!((q90 - 7.6).abs() < 1e-12);
        let h = c.histogram.expect("histogram");
        assert_eq!(h.counts.iter().sum::<u64>(), 5);
        assert_eq!(h.edges.len(), h.counts.len() + 1);
        assert_eq!(c.categories.expect("few values").get("10"), Some(&1));
    }

    #[test]
    fn a_non_number_makes_the_column_categorical() {
        let mut p = ColumnProfiler::new("colour", 1);
        for cell in ["1", "red", "blue", "red", "NA"] {
            p.push_str(cell);
        }
        let c = p.finish();
        assert_eq!(c.kind, ColumnKind::Categorical);
        assert_eq!((c.count, c.missing), (4, 1));
        let cats = c.categories.expect("categories");
        assert_eq!(cats.get("red"), Some(&2));
        assert_eq!(cats.get("1"), Some(&1));
        assert!(c.mean.is_none() && c.sample.is_empty());
        assert_eq!(c.category_sample.len(), 4);
    }

    #[test]
    fn the_sample_is_bounded_uniform_and_reproducible() {
        let run = || {
            let mut p = ColumnProfiler::with_cap("x", 7, 5_000);
            for i in 0..100_000 {
                p.push_f64(f64::from(i));
            }
            p.finish()
        };
        let (a, b) = (run(), run());
        assert_eq!(a.sample.len(), 5_000);
        assert_eq!(a.sample, b.sample);
        assert!(a.categories.is_none(), "too many distinct values");
        // Uniform: the sample's median is near the true median (49,999.5); a biased sampler would be far off.
        let median = a.quantiles.iter().find(|q| q[0] == 0.5).expect("median")[1];
        assert!((median - 49_999.5).abs() < 3_000.0, "{median}");
        assert_eq!(a.count, 100_000);
        assert!((a.mean.expect("mean") - 49_999.5).abs() < 1e-6);
    }
}
