//! Data and prediction drift of one column between a reference sample and a current one, computed as Evidently
//! (0.7, Apache-2.0) computes it: its default choice of test, its statistics (through scipy's definitions), its
//! binning and its comparisons, so that the scores and verdicts equal Evidently's on the same data.
//!
//! Rules, from Evidently's `legacy/calculations/stattests` (which its current API calls):
//! - values that are NaN or ±∞ are dropped from each side first; a side left empty is an error;
//! - default test, by the reference's size (after cleaning) and the number of distinct values of both sides:
//!   up to 1,000 reference rows, K-S for a numerical column with more than 5 values, chi-square for 3–5 values or a
//!   categorical column with more than 2, the two-proportion Z-test for at most 2; above 1,000 rows, the Wasserstein
//!   distance normed by the reference's population standard deviation (floored at 0.001) for a numerical column
//!   with more than 5 values, else the Jensen–Shannon distance (natural log);
//! - K-S drifts at p ≤ threshold, chi-square and Z at p < threshold, every distance at ≥ threshold;
//! - binning for Jensen–Shannon, PSI and KL: numpy's Sturges edges over reference ∪ current when the column is
//!   numerical with more than 20 distinct reference values, else one bin per value; PSI and KL replace empty bins
//!   (each side on its own) by its smallest non-zero share / 10⁶ when that is ≤ 10⁻⁴, else by 10⁻⁴.
//!
//! The K-S p-value is scipy 1.17's at every size (module `ksstats`): exact up to 10,000 rows on the larger side,
//! above that the finite-n Kolmogorov distribution `kstwo`, as `ks_2samp` computes them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use statrs::distribution::{ChiSquared, ContinuousCDF, Normal};

use crate::ksstats;

/// A drift statistic, named as Evidently names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Two-sample Kolmogorov–Smirnov p-value (scipy's `ks_2samp`: exact up to 10,000 rows, else `kstwo`).
    Ks,
    /// Chi-square goodness-of-fit p-value of current counts against reference shares.
    #[serde(rename = "chisquare")]
    ChiSquare,
    /// Two-proportion Z-test p-value (pooled).
    Z,
    /// Wasserstein-1 distance divided by the reference's standard deviation.
    Wasserstein,
    /// Jensen–Shannon distance, natural log.
    #[serde(rename = "jensenshannon")]
    JensenShannon,
    /// Population stability index.
    Psi,
    /// Kullback–Leibler divergence of reference from current.
    KlDiv,
    /// Hellinger distance.
    Hellinger,
}

impl Method {
    /// Every method.
    pub const ALL: [Self; 8] = [
        Self::Ks,
        Self::ChiSquare,
        Self::Z,
        Self::Wasserstein,
        Self::JensenShannon,
        Self::Psi,
        Self::KlDiv,
        Self::Hellinger,
    ];

    /// Evidently's name for it.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Ks => "ks",
            Self::ChiSquare => "chisquare",
            Self::Z => "z",
            Self::Wasserstein => "wasserstein",
            Self::JensenShannon => "jensenshannon",
            Self::Psi => "psi",
            Self::KlDiv => "kl_div",
            Self::Hellinger => "hellinger",
        }
    }

    /// The method of an Evidently name.
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == name)
    }

    /// Whether the score is a p-value (small means drift) rather than a distance (large means drift).
    #[must_use]
    pub const fn is_p_value(self) -> bool {
        matches!(self, Self::Ks | Self::ChiSquare | Self::Z)
    }

    /// Evidently's default threshold.
    #[must_use]
    pub const fn default_threshold(self) -> f64 {
        if self.is_p_value() { 0.05 } else { 0.1 }
    }

    /// Whether `score` means drift at `threshold`, with Evidently's comparison for this method.
    #[must_use]
    pub fn drifted(self, score: f64, threshold: f64) -> bool {
        match self {
            Self::Ks => score <= threshold,
            Self::ChiSquare | Self::Z => score < threshold,
            _ => score >= threshold,
        }
    }

    /// Whether the method may be asked for on a column of this kind (Evidently's allowed types: chi-square and
    /// Z are for categorical columns when named, although the default choice applies them to numerical columns
    /// with few values).
    #[must_use]
    pub const fn allows(self, kind: ColumnKind) -> bool {
        match self {
            Self::Ks | Self::Wasserstein => matches!(kind, ColumnKind::Numerical),
            Self::ChiSquare | Self::Z => matches!(kind, ColumnKind::Categorical),
            _ => true,
        }
    }
}

/// How a column's values are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ColumnKind {
    /// Numbers: order and distance matter.
    Numerical,
    /// Labels: only equality matters.
    Categorical,
}

/// A column's values on one side.
#[derive(Debug, Clone, PartialEq)]
pub enum Column {
    /// Numbers (NaN and ±∞ are dropped before testing).
    Numerical(Vec<f64>),
    /// Labels (missing values should be left out by the caller).
    Categorical(Vec<String>),
}

impl Column {
    /// Numerical or categorical.
    #[must_use]
    pub const fn kind(&self) -> ColumnKind {
        match self {
            Self::Numerical(_) => ColumnKind::Numerical,
            Self::Categorical(_) => ColumnKind::Categorical,
        }
    }
}

/// Why a column cannot be tested.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DriftError {
    /// A side has no values (after dropping NaN and ±∞).
    #[error("the {0} data has no values to compare (after dropping NaN and infinities)")]
    Empty(&'static str),
    /// Reference and current are of different kinds.
    #[error("the reference column is {reference:?} but the current one is {current:?}")]
    KindMismatch {
        /// The reference's kind.
        reference: ColumnKind,
        /// The current data's kind.
        current: ColumnKind,
    },
    /// The method does not apply to this kind of column.
    #[error("{method} does not apply to a {kind:?} column")]
    NotApplicable {
        /// The method's name.
        method: &'static str,
        /// The column's kind.
        kind: ColumnKind,
    },
    /// The values span more than the largest float, so they cannot be binned.
    #[error("the values span {lo} to {hi}, a range too wide to bin")]
    Range {
        /// The smallest value.
        lo: f64,
        /// The largest value.
        hi: f64,
    },
    /// A threshold that is not a finite number.
    #[error("the threshold must be a finite number, got {0}")]
    BadThreshold(f64),
}

/// What one column's test found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ColumnDrift {
    /// The method used.
    pub method: Method,
    /// Whether it was chosen by Evidently's default rule (rather than configured).
    pub default_method: bool,
    /// The p-value or distance.
    pub score: f64,
    /// The threshold it was compared with.
    pub threshold: f64,
    /// The verdict.
    pub drifted: bool,
    /// Reference values after cleaning.
    pub reference_count: usize,
    /// Current values after cleaning.
    pub current_count: usize,
}

/// Evidently's default test for a column (sizes and distinct counts after cleaning).
#[must_use]
pub fn default_method(reference_rows: usize, kind: ColumnKind, distinct_values: usize) -> Method {
    match (reference_rows <= 1000, kind) {
        (true, ColumnKind::Numerical) if distinct_values > 5 => Method::Ks,
        (true, _) if distinct_values > 2 => Method::ChiSquare,
        (true, _) => Method::Z,
        (false, ColumnKind::Numerical) if distinct_values > 5 => Method::Wasserstein,
        (false, _) => Method::JensenShannon,
    }
}

/// A column prepared for testing: values sorted, with the union of distinct values and the counts of each side.
struct Prepared<'a> {
    kind: ColumnKind,
    /// Sorted numerical values (empty for categorical columns).
    reference: &'a [f64],
    current: Vec<f64>,
    /// Smallest and largest value of both sides (numerical columns).
    span: (f64, f64),
    /// Distinct values of both sides in a fixed order, with each side's count.
    keys: Vec<Key>,
    reference_counts: Vec<f64>,
    current_counts: Vec<f64>,
    reference_len: usize,
    current_len: usize,
    /// Distinct values of the reference alone.
    reference_distinct: usize,
}

#[derive(Debug, Clone, PartialEq, PartialOrd)]
enum Key {
    Number(f64),
    Label(String),
}

/// The union of labels in order, with each side's count: the reference's counts as [`PreparedReference`] keeps them.
fn counts_against(reference: &BTreeMap<String, f64>, current: &[String]) -> (Vec<String>, Vec<f64>, Vec<f64>, usize) {
    let mut table: BTreeMap<&str, (f64, f64)> = reference.iter().map(|(k, &n)| (k.as_str(), (n, 0.0))).collect();
    let reference_distinct = table.len();
    for v in current {
        table.entry(v.as_str()).or_default().1 += 1.0;
    }
    let mut keys = Vec::with_capacity(table.len());
    let (mut r, mut c) = (Vec::with_capacity(table.len()), Vec::with_capacity(table.len()));
    for (k, (a, b)) in table {
        keys.push(k.to_owned());
        r.push(a);
        c.push(b);
    }
    (keys, r, c, reference_distinct)
}

/// [`counts_against`] for two sorted numerical columns, by merging them in one pass instead of a map: the same keys in the
/// same order (-0.0 and 0.0 are one value, kept as the reference's first spelling, as the map keeps its first key).
fn sorted_counts(reference: &[f64], current: &[f64]) -> (Vec<Ordered>, Vec<f64>, Vec<f64>, usize) {
    let norm = |x: f64| x + 0.0;
    let (mut keys, mut rc, mut cc) = (Vec::new(), Vec::new(), Vec::new());
    let (mut i, mut j, mut reference_distinct) = (0, 0, 0);
    while i < reference.len() || j < current.len() {
        let next = match (reference.get(i), current.get(j)) {
            (Some(&a), Some(&b)) => {
                if norm(a).total_cmp(&norm(b)).is_le() {
                    a
                } else {
                    b
                }
            }
            (Some(&a), None) => a,
            (None, Some(&b)) => b,
            (None, None) => break,
        };
        let value = norm(next);
        let (start_i, start_j) = (i, j);
        while i < reference.len() && norm(reference[i]).total_cmp(&value).is_eq() {
            i += 1;
        }
        while j < current.len() && norm(current[j]).total_cmp(&value).is_eq() {
            j += 1;
        }
        let key = if i > start_i { reference[start_i] } else { current[start_j] };
        if i > start_i {
            reference_distinct += 1;
        }
        keys.push(Ordered(key));
        #[allow(clippy::cast_precision_loss)]
        {
            rc.push((i - start_i) as f64);
            cc.push((j - start_j) as f64);
        }
    }
    (keys, rc, cc, reference_distinct)
}

/// An `f64` ordered totally, for use as a map key (NaN never reaches here).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Ordered(f64);

impl Eq for Ordered {}
impl PartialOrd for Ordered {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Ordered {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        // -0.0 and 0.0 are one value, as in pandas.
        (self.0 + 0.0).total_cmp(&(other.0 + 0.0))
    }
}

/// A reference column cleaned and sorted (or counted) once, to test many current samples against: the live watcher
/// tests a window every 1,000 requests against a reference of up to 100,000 rows, which it would otherwise sort
/// again each time.
#[derive(Debug, Clone)]
pub struct PreparedReference {
    kind: ColumnKind,
    /// Numerical columns: the finite values, sorted.
    sorted: Vec<f64>,
    /// Categorical columns: the count of each label.
    labels: BTreeMap<String, f64>,
    /// Values after cleaning.
    len: usize,
}

impl PreparedReference {
    /// Cleans and sorts (numerical) or counts (categorical) `reference`.
    #[must_use]
    pub fn new(reference: &Column) -> Self {
        match reference {
            Column::Numerical(v) => {
                let sorted = clean_sorted(v);
                Self { kind: ColumnKind::Numerical, len: sorted.len(), sorted, labels: BTreeMap::new() }
            }
            Column::Categorical(v) => {
                let mut labels = BTreeMap::new();
                for label in v {
                    *labels.entry(label.clone()).or_insert(0.0) += 1.0;
                }
                Self { kind: ColumnKind::Categorical, sorted: Vec::new(), labels, len: v.len() }
            }
        }
    }

    /// Numerical or categorical.
    #[must_use]
    pub const fn kind(&self) -> ColumnKind {
        self.kind
    }
}

/// The finite values of `v`, sorted.
fn clean_sorted(v: &[f64]) -> Vec<f64> {
    let mut out: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    // Values equal under `total_cmp` are the same bits: an unstable sort gives the same order, faster.
    out.sort_unstable_by(f64::total_cmp);
    out
}

fn prepare<'a>(reference: &'a PreparedReference, current: &Column) -> Result<Prepared<'a>, DriftError> {
    match (reference.kind, current) {
        (ColumnKind::Numerical, Column::Numerical(c)) => {
            let (r, c) = (reference.sorted.as_slice(), clean_sorted(c));
            check_sizes(r.len(), c.len())?;
            // Both are sorted: the extremes are the ends. A span past the largest float cannot be binned.
            let (lo, hi) = (r[0].min(c[0]), r[r.len() - 1].max(c[c.len() - 1]));
            if !(hi - lo).is_finite() {
                return Err(DriftError::Range { lo, hi });
            }
            let (keys, rc, cc, distinct) = sorted_counts(r, &c);
            Ok(Prepared {
                kind: ColumnKind::Numerical,
                reference_len: r.len(),
                current_len: c.len(),
                keys: keys.into_iter().map(|k| Key::Number(k.0)).collect(),
                reference_counts: rc,
                current_counts: cc,
                reference_distinct: distinct,
                reference: r,
                current: c,
                span: (lo, hi),
            })
        }
        (ColumnKind::Categorical, Column::Categorical(c)) => {
            check_sizes(reference.len, c.len())?;
            let (keys, rc, cc, distinct) = counts_against(&reference.labels, c);
            Ok(Prepared {
                kind: ColumnKind::Categorical,
                reference_len: reference.len,
                current_len: c.len(),
                keys: keys.into_iter().map(Key::Label).collect(),
                reference_counts: rc,
                current_counts: cc,
                reference_distinct: distinct,
                reference: &[],
                current: Vec::new(),
                span: (0.0, 0.0),
            })
        }
        (kind, c) => Err(DriftError::KindMismatch { reference: kind, current: c.kind() }),
    }
}

fn check_sizes(reference: usize, current: usize) -> Result<(), DriftError> {
    if reference == 0 {
        return Err(DriftError::Empty("reference"));
    }
    if current == 0 {
        return Err(DriftError::Empty("current"));
    }
    Ok(())
}

/// Tests one column for drift: with `method` and `threshold` when given, else Evidently's defaults.
///
/// # Errors
/// [`DriftError`] for an empty side, mismatched kinds, a method that does not apply, or a bad threshold.
pub fn column_drift(
    reference: &Column,
    current: &Column,
    method: Option<Method>,
    threshold: Option<f64>,
) -> Result<ColumnDrift, DriftError> {
    drift_of(&prepare(&PreparedReference::new(reference), current)?, method, threshold)
}

/// [`column_drift`] and [`histograms`] together, sorting and counting the column once.
///
/// # Errors
/// As [`column_drift`].
pub fn column_report(
    reference: &Column,
    current: &Column,
    method: Option<Method>,
    threshold: Option<f64>,
) -> Result<(ColumnDrift, Histograms), DriftError> {
    column_report_against(&PreparedReference::new(reference), current, method, threshold)
}

/// [`column_report`] against a reference prepared once.
///
/// # Errors
/// As [`column_drift`].
pub fn column_report_against(
    reference: &PreparedReference,
    current: &Column,
    method: Option<Method>,
    threshold: Option<f64>,
) -> Result<(ColumnDrift, Histograms), DriftError> {
    let p = prepare(reference, current)?;
    Ok((drift_of(&p, method, threshold)?, histograms_of(&p)))
}

fn drift_of(p: &Prepared, method: Option<Method>, threshold: Option<f64>) -> Result<ColumnDrift, DriftError> {
    let chosen = match method {
        Some(m) if !m.allows(p.kind) => return Err(DriftError::NotApplicable { method: m.name(), kind: p.kind }),
        Some(m) => m,
        None => default_method(p.reference_len, p.kind, p.keys.len()),
    };
    let threshold = threshold.unwrap_or_else(|| chosen.default_threshold());
    if !threshold.is_finite() {
        return Err(DriftError::BadThreshold(threshold));
    }
    let score = match chosen {
        Method::Ks => ksstats::ks_2samp(p.reference, &p.current),
        Method::ChiSquare => chi_square(p),
        Method::Z => z_test(p),
        Method::Wasserstein => wasserstein(p.reference, &p.current) / population_std(p.reference).max(0.001),
        Method::JensenShannon => {
            let (r, c) = binned(p, false);
            jensen_shannon(&r, &c)
        }
        Method::Psi => {
            let (r, c) = binned(p, true);
            r.iter().zip(&c).map(|(a, b)| (a - b) * (a / b).ln()).sum()
        }
        Method::KlDiv => {
            let (r, c) = binned(p, true);
            kl_divergence(&r, &c)
        }
        Method::Hellinger => hellinger(p),
    };
    Ok(ColumnDrift {
        method: chosen,
        default_method: method.is_none(),
        score,
        threshold,
        drifted: chosen.drifted(score, threshold),
        reference_count: p.reference_len,
        current_count: p.current_len,
    })
}

/// The two distributions side by side, binned as Evidently bins them for Jensen–Shannon (no zero filling): for a
/// report or a chart.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Histograms {
    /// The bins, serialized as one label each.
    pub bins: Bins,
    /// Share of reference values per bin.
    pub reference: Vec<f64>,
    /// Share of current values per bin.
    pub current: Vec<f64>,
}

/// A histogram's bins, kept as numbers and written as labels only when shown: the live watcher bins every column of
/// every window, and formatting the labels cost more than binning.
#[derive(Debug, Clone, PartialEq)]
pub enum Bins {
    /// Equal-width ranges between these edges: `[a, b)`, the last `[a, b]`.
    Ranges(Vec<f64>),
    /// One bin per number.
    Numbers(Vec<f64>),
    /// One bin per label.
    Labels(Vec<String>),
}

impl Bins {
    /// How many bins.
    #[must_use]
    pub fn len(&self) -> usize {
        match self {
            Self::Ranges(edges) => edges.len().saturating_sub(1),
            Self::Numbers(v) => v.len(),
            Self::Labels(v) => v.len(),
        }
    }

    /// Whether there are none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// One label per bin: `[a, b)` ranges (4 decimals, the last closed) or the values themselves.
    #[must_use]
    pub fn labels(&self) -> Vec<String> {
        match self {
            Self::Ranges(edges) => {
                let last = edges.len().saturating_sub(2);
                edges
                    .windows(2)
                    .enumerate()
                    .map(|(i, w)| format!("[{:.4}, {:.4}{}", w[0], w[1], if i == last { "]" } else { ")" }))
                    .collect()
            }
            Self::Numbers(v) => v.iter().map(|x| format!("{x}")).collect(),
            Self::Labels(v) => v.clone(),
        }
    }
}

impl Serialize for Bins {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.labels())
    }
}

/// Bins both sides of a column for display.
///
/// # Errors
/// As [`column_drift`].
pub fn histograms(reference: &Column, current: &Column) -> Result<Histograms, DriftError> {
    Ok(histograms_of(&prepare(&PreparedReference::new(reference), current)?))
}

fn histograms_of(p: &Prepared) -> Histograms {
    let (reference, current) = binned(p, false);
    let bins = if p.kind == ColumnKind::Numerical && p.reference_distinct > 20 {
        Bins::Ranges(sturges_edges_over(p.span, p.reference_len + p.current_len))
    } else if p.kind == ColumnKind::Numerical {
        Bins::Numbers(p.keys.iter().filter_map(|k| if let Key::Number(x) = k { Some(*x) } else { None }).collect())
    } else {
        Bins::Labels(p.keys.iter().filter_map(|k| if let Key::Label(l) = k { Some(l.clone()) } else { None }).collect())
    };
    Histograms { bins, reference, current }
}

/// Evidently's dataset verdict: the share of drifted columns, and drift when it reaches `drift_share` (0.5).
#[must_use]
pub fn dataset_drift(columns: &[ColumnDrift], drift_share: f64) -> (f64, bool) {
    if columns.is_empty() {
        return (0.0, false);
    }
    let drifted = columns.iter().filter(|c| c.drifted).count();
    #[allow(clippy::cast_precision_loss)] // column counts are small
    let share = drifted as f64 / columns.len() as f64;
    (share, share >= drift_share)
}

// ---------------------------------------------------------------------------------------------------------------
// Tests on counts.

/// scipy's `chisquare(f_obs, f_exp)` with f_exp = reference counts × (m / n): the upper tail of χ²(k − 1).
fn chi_square(p: &Prepared) -> f64 {
    #[allow(clippy::cast_precision_loss)]
    let k_norm = p.current_len as f64 / p.reference_len as f64;
    let mut stat = 0.0;
    for (r, c) in p.reference_counts.iter().zip(&p.current_counts) {
        let expected = r * k_norm;
        stat += (c - expected) * (c - expected) / expected;
    }
    let df = p.keys.len().saturating_sub(1);
    if df == 0 {
        // One value on both sides: scipy gives NaN (0/0 degrees of freedom); no drift can be shown.
        return f64::NAN;
    }
    if stat.is_infinite() {
        return 0.0;
    }
    #[allow(clippy::cast_precision_loss)]
    ChiSquared::new(df as f64).map_or(f64::NAN, |d| d.sf(stat))
}

/// The pooled two-proportion Z-test: each value is 0 when it equals the smallest key, else 1.
fn z_test(p: &Prepared) -> f64 {
    if p.keys.len() == 1 {
        return 1.0;
    }
    #[allow(clippy::cast_precision_loss)]
    let (n1, n2) = (p.reference_len as f64, p.current_len as f64);
    let p1 = (n1 - p.reference_counts[0]) / n1;
    let p2 = (n2 - p.current_counts[0]) / n2;
    let pooled = (p1 * n1 + p2 * n2) / (n1 + n2);
    let z = (p1 - p2) / (pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2)).sqrt();
    let normal = Normal::standard();
    2.0 * (1.0 - normal.cdf(z.abs()))
}

// ---------------------------------------------------------------------------------------------------------------
// Distances.

/// scipy's `wasserstein_distance(u, v)` (unit weights): ∫ |F_u − F_v| over the merged sorted values.
fn wasserstein(u: &[f64], v: &[f64]) -> f64 {
    #[allow(clippy::cast_precision_loss)]
    let (nu, nv) = (u.len() as f64, v.len() as f64);
    let mut all: Vec<f64> = u.iter().chain(v).copied().collect();
    all.sort_by(f64::total_cmp);
    let (mut i, mut j) = (0, 0);
    let mut total = 0.0;
    for w in all.windows(2) {
        let x = w[0];
        while i < u.len() && u[i] <= x {
            i += 1;
        }
        while j < v.len() && v[j] <= x {
            j += 1;
        }
        #[allow(clippy::cast_precision_loss)]
        let gap = (i as f64 / nu - j as f64 / nv).abs();
        total += gap * (w[1] - w[0]);
    }
    total
}

/// numpy's `std` (ddof = 0), two-pass.
fn population_std(v: &[f64]) -> f64 {
    #[allow(clippy::cast_precision_loss)]
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    (v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n).sqrt()
}

/// scipy's `jensenshannon(p, q)` with natural log (both renormalised to sum 1).
fn jensen_shannon(p: &[f64], q: &[f64]) -> f64 {
    let (sp, sq): (f64, f64) = (p.iter().sum(), q.iter().sum());
    let mut js = 0.0;
    for (a, b) in p.iter().zip(q) {
        let (a, b) = (a / sp, b / sq);
        let m = (a + b) / 2.0;
        js += rel_entr(a, m) + rel_entr(b, m);
    }
    (js / 2.0).sqrt()
}

/// scipy's `rel_entr(x, y)`: x ln(x/y), 0 when x = 0.
fn rel_entr(x: f64, y: f64) -> f64 {
    if x == 0.0 && y >= 0.0 {
        0.0
    } else if x > 0.0 && y > 0.0 {
        x * (x / y).ln()
    } else {
        f64::INFINITY
    }
}

/// scipy's `entropy(p, q)`: Σ p ln(p/q) with both normalised.
fn kl_divergence(p: &[f64], q: &[f64]) -> f64 {
    let (sp, sq): (f64, f64) = (p.iter().sum(), q.iter().sum());
    p.iter().zip(q).map(|(a, b)| rel_entr(a / sp, b / sq)).sum()
}

/// Evidently's Hellinger distance: per value for categorical columns; for numerical ones, numpy density histograms
/// over Sturges edges of the distinct values of both sides, times the bin width.
fn hellinger(p: &Prepared) -> f64 {
    let overlap = match p.kind {
        ColumnKind::Categorical => {
            #[allow(clippy::cast_precision_loss)]
            let (n1, n2) = (p.reference_len as f64, p.current_len as f64);
            p.reference_counts.iter().zip(&p.current_counts).map(|(r, c)| ((r / n1) * (c / n2)).sqrt()).sum::<f64>()
        }
        ColumnKind::Numerical => {
            let keys: Vec<f64> =
                p.keys.iter().filter_map(|k| if let Key::Number(x) = k { Some(*x) } else { None }).collect();
            let edges = sturges_edges(&keys);
            let width = (edges[edges.len() - 1] - edges[0]) / (edges.len() - 1) as f64;
            let (h1, h2) = (density(p.reference, &edges), density(&p.current, &edges));
            h1.iter().zip(&h2).map(|(a, b)| (a * b).sqrt() * width).sum::<f64>()
        }
    };
    (1.0 - overlap.clamp(0.0, 1.0)).sqrt()
}

/// Evidently's `get_binned_data`: shares per bin of each side, zero bins filled when `fill_zeroes`.
fn binned(p: &Prepared, fill_zeroes: bool) -> (Vec<f64>, Vec<f64>) {
    #[allow(clippy::cast_precision_loss)]
    let (n1, n2) = (p.reference_len as f64, p.current_len as f64);
    let (mut r, mut c) = if p.kind == ColumnKind::Numerical && p.reference_distinct > 20 {
        let edges = sturges_edges_over(p.span, p.reference_len + p.current_len);
        let share = |v: &[f64], n: f64| histogram(v, &edges).into_iter().map(|k| k / n).collect::<Vec<_>>();
        (share(p.reference, n1), share(&p.current, n2))
    } else {
        (
            p.reference_counts.iter().map(|k| k / n1).collect::<Vec<_>>(),
            p.current_counts.iter().map(|k| k / n2).collect::<Vec<_>>(),
        )
    };
    if fill_zeroes {
        fill(&mut r);
        fill(&mut c);
    }
    (r, c)
}

/// Replaces zeros by the smallest non-zero share / 10⁶ when that is ≤ 10⁻⁴, else by 10⁻⁴.
fn fill(shares: &mut [f64]) {
    let smallest = shares.iter().copied().filter(|&s| s != 0.0).fold(f64::INFINITY, f64::min);
    if !smallest.is_finite() {
        return;
    }
    let filler = if smallest <= 0.0001 { smallest / 1e6 } else { 0.0001 };
    for s in shares.iter_mut().filter(|s| **s == 0.0) {
        *s = filler;
    }
}

/// numpy's `histogram_bin_edges(values, bins="sturges")`.
fn sturges_edges(values: &[f64]) -> Vec<f64> {
    let span = values.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| (lo.min(x), hi.max(x)));
    sturges_edges_over(span, values.len())
}

/// [`sturges_edges`] of `n` values whose smallest and largest are `(lo, hi)`: all numpy's rule reads of them.
fn sturges_edges_over((lo, hi): (f64, f64), n: usize) -> Vec<f64> {
    #[allow(clippy::cast_precision_loss)]
    let width = (hi - lo) / ((n as f64).log2() + 1.0);
    let (first, last) = if lo == hi { (lo - 0.5, hi + 0.5) } else { (lo, hi) };
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let bins = if width > 0.0 { ((last - first) / width).ceil() as usize } else { 1 };
    linspace(first, last, bins + 1)
}

/// numpy's `linspace(start, stop, num)` with the endpoint.
fn linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    #[allow(clippy::cast_precision_loss)]
    let step = (stop - start) / (num - 1) as f64;
    #[allow(clippy::cast_precision_loss)]
    let mut out: Vec<f64> = (0..num).map(|i| i as f64 * step + start).collect();
    if let Some(last) = out.last_mut() {
        *last = stop;
    }
    out
}

/// numpy's `histogram(values, edges)` for sorted `values`: bins [a, b) except the last, [a, b]; values outside are
/// not counted.
fn histogram(sorted: &[f64], edges: &[f64]) -> Vec<f64> {
    let below = |e: f64| sorted.partition_point(|&x| x < e);
    let mut cumulative: Vec<usize> = edges[..edges.len() - 1].iter().map(|&e| below(e)).collect();
    cumulative.push(sorted.partition_point(|&x| x <= edges[edges.len() - 1]));
    #[allow(clippy::cast_precision_loss)]
    cumulative.windows(2).map(|w| (w[1] - w[0]) as f64).collect()
}

/// numpy's `histogram(values, edges, density=True)`.
fn density(sorted: &[f64], edges: &[f64]) -> Vec<f64> {
    let counts = histogram(sorted, edges);
    let total: f64 = counts.iter().sum();
    counts.iter().zip(edges.windows(2)).map(|(c, w)| c / total / (w[1] - w[0])).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn num(v: &[f64]) -> Column {
        Column::Numerical(v.to_vec())
    }

    #[test]
    fn the_default_test_follows_evidently_rule() {
        use ColumnKind::{Categorical, Numerical};
        assert_eq!(default_method(1000, Numerical, 6), Method::Ks);
        assert_eq!(default_method(1000, Numerical, 5), Method::ChiSquare);
        assert_eq!(default_method(1000, Numerical, 2), Method::Z);
        assert_eq!(default_method(1000, Categorical, 3), Method::ChiSquare);
        assert_eq!(default_method(1001, Numerical, 6), Method::Wasserstein);
        assert_eq!(default_method(1001, Numerical, 5), Method::JensenShannon);
        assert_eq!(default_method(1001, Categorical, 50), Method::JensenShannon);
    }

    #[test]
    fn comparisons_are_evidently_asymmetric_ones() {
        assert!(Method::Ks.drifted(0.05, 0.05));
        assert!(!Method::ChiSquare.drifted(0.05, 0.05));
        assert!(!Method::Z.drifted(0.05, 0.05));
        assert!(Method::Wasserstein.drifted(0.1, 0.1));
    }

    #[test]
    fn known_scipy_values() {
        // scipy.stats.ks_2samp([1,2,3,4,5], [3,4,5,6,7,8]) → p-value 0.35714285714285715 (exact, unequal sizes).
        let r = column_drift(&num(&[1., 2., 3., 4., 5.]), &num(&[3., 4., 5., 6., 7., 8.]), Some(Method::Ks), None)
            .expect("ks");
        assert!((r.score - 0.357_142_857_142_857_15).abs() < 1e-12, "{}", r.score);
        // Equal sizes take the square-path formula: ks_2samp([0..10), [5..15)) → p = 0.16782134274394334.
        let a: Vec<f64> = (0..10).map(f64::from).collect();
        let b: Vec<f64> = (5..15).map(f64::from).collect();
        let r = column_drift(&num(&a), &num(&b), Some(Method::Ks), None).expect("ks");
        assert!((r.score - 0.167_821_342_743_943_34).abs() < 1e-12, "{}", r.score);
        // wasserstein_distance([0,1,3], [5,6,8]) = 5.0; std([0,1,3]) = 1.247219128924647.
        let r = column_drift(&num(&[0., 1., 3.]), &num(&[5., 6., 8.]), Some(Method::Wasserstein), None).expect("w");
        assert!((r.score - 5.0 / 1.247_219_128_924_647).abs() < 1e-12, "{}", r.score);
    }

    #[test]
    fn bad_input_is_an_error_not_a_number() {
        let empty = column_drift(&num(&[f64::NAN, f64::INFINITY]), &num(&[1.0]), None, None).expect_err("empty");
        assert_eq!(empty, DriftError::Empty("reference"));
        let labels = Column::Categorical(vec!["a".into()]);
        assert!(matches!(column_drift(&num(&[1.0]), &labels, None, None), Err(DriftError::KindMismatch { .. })));
        assert!(matches!(
            column_drift(&labels, &labels, Some(Method::Ks), None),
            Err(DriftError::NotApplicable { .. })
        ));
        assert!(column_drift(&num(&[1.0]), &num(&[1.0]), None, Some(f64::NAN)).is_err());
        let wide = column_drift(&num(&[-1e308, 0.0]), &num(&[1e308]), Some(Method::Psi), None).expect_err("range");
        assert!(matches!(wide, DriftError::Range { .. }), "{wide}");
    }

    /// The obvious count, through a map: the oracle of the merge.
    fn counts_of<K: Ord + Clone>(reference: &[K], current: &[K]) -> (Vec<K>, Vec<f64>, Vec<f64>, usize) {
        let mut table: BTreeMap<K, (f64, f64)> = BTreeMap::new();
        for v in reference {
            table.entry(v.clone()).or_default().0 += 1.0;
        }
        let reference_distinct = table.len();
        for v in current {
            table.entry(v.clone()).or_default().1 += 1.0;
        }
        let (mut keys, mut r, mut c) = (Vec::new(), Vec::new(), Vec::new());
        for (k, (a, b)) in table {
            keys.push(k);
            r.push(a);
            c.push(b);
        }
        (keys, r, c, reference_distinct)
    }

    #[test]
    fn a_prepared_reference_gives_the_one_shot_report_window_after_window() {
        let reference = num(&(0..500).map(|i| f64::from(i % 37) * 0.5 + f64::from(i % 3)).collect::<Vec<_>>());
        let labels = |v: &[&str]| Column::Categorical(v.iter().map(|s| (*s).to_owned()).collect());
        let prepared = PreparedReference::new(&reference);
        for shift in [0.0, 0.7, 3.0] {
            let current = num(&(0..300).map(|i| f64::from(i % 29) * 0.6 + shift).collect::<Vec<_>>());
            assert_eq!(
                column_report_against(&prepared, &current, None, None).expect("report"),
                column_report(&reference, &current, None, None).expect("report")
            );
        }
        let (reference, current) = (labels(&["a", "b", "b", "c"]), labels(&["b", "d", "d"]));
        let prepared = PreparedReference::new(&reference);
        let (drift, hist) = column_report_against(&prepared, &current, None, None).expect("report");
        assert_eq!((drift, hist.clone()), column_report(&reference, &current, None, None).expect("report"));
        assert_eq!(hist.bins.labels(), ["a", "b", "c", "d"]);
        assert!(matches!(
            column_report_against(&prepared, &num(&[1.0]), None, None),
            Err(DriftError::KindMismatch { .. })
        ));
    }

    #[test]
    fn bins_are_written_as_labels() {
        let ranges = Bins::Ranges(vec![0.0, 0.5, 1.0]);
        assert_eq!(ranges.len(), 2);
        assert_eq!(
            serde_json::to_value(&ranges).expect("json"),
            serde_json::json!(["[0.0000, 0.5000)", "[0.5000, 1.0000]"])
        );
        assert_eq!(Bins::Numbers(vec![1.0, 2.5]).labels(), ["1", "2.5"]);
        let h = histograms(&num(&[1.0, 2.0, 2.0]), &num(&[2.0, 3.0])).expect("histograms");
        assert_eq!(h.bins.labels(), ["1", "2", "3"]);
        assert_eq!(h.reference.len(), h.bins.len());
    }

    #[test]
    fn merged_counts_equal_the_map_counts() {
        let mut rng = 7u64;
        let mut next = || {
            rng = rng.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            [-0.0, 0.0, 1.5, -2.0, 3.25, 7.0][usize::try_from(rng >> 61).unwrap_or(0) % 6]
        };
        for (n, m) in [(0usize, 5usize), (5, 0), (40, 30), (300, 7)] {
            let mut r: Vec<f64> = (0..n).map(|_| next()).collect();
            let mut c: Vec<f64> = (0..m).map(|_| next()).collect();
            r.sort_by(f64::total_cmp);
            c.sort_by(f64::total_cmp);
            let wrap = |v: &[f64]| v.iter().map(|&x| Ordered(x)).collect::<Vec<_>>();
            let (k1, r1, c1, d1) = counts_of(&wrap(&r), &wrap(&c));
            let (k2, r2, c2, d2) = sorted_counts(&r, &c);
            let bits = |k: &[Ordered]| k.iter().map(|x| x.0.to_bits()).collect::<Vec<_>>();
            assert_eq!((bits(&k1), r1, c1, d1), (bits(&k2), r2, c2, d2), "n={n} m={m}");
        }
    }
}
