//! Baseline model-quality metrics, defined to equal scikit-learn 1.9's.
//!
//! # Classification ([`classification_metrics`])
//!
//! The *labels* are the sorted union of `y_true` and `y_pred`; when probabilities are given they are
//! `proba.classes`, and every label of `y_true` and `y_pred` must be one of them.
//!
//! - `accuracy`: `accuracy_score(y_true, y_pred)`.
//! - `precision`, `recall`, `f1`: with exactly two labels, `average='binary'` with `pos_label` = the larger label;
//!   otherwise `average='macro'` over the labels (`labels=labels`). A zero denominator gives 0.0, as
//!   scikit-learn's default `zero_division="warn"` does (it warns and returns 0.0). F1 is `2·tp / (2·tp + fp + fn)`
//!   per label, so it is 0.0 only when that denominator is 0; the macro F1 is the mean of the per-label F1s.
//! - `roc_auc` (probabilities only): with two classes, `roc_auc_score(y_true, proba[:, 1])` (the larger class is
//!   positive); with three or more, `roc_auc_score(y_true, proba, multi_class='ovr', average='macro',
//!   labels=classes)`. The ROC curve is scikit-learn's: one point per distinct score (ties form one step),
//!   collinear points dropped, trapezoidal area. It is undefined — scikit-learn returns NaN with a warning —
//!   when `y_true` has a single class, or (multiclass) when any class is missing from `y_true`; the key is then
//!   **omitted** rather than reported as NaN. With three or more classes scikit-learn requires every row to sum to
//!   1 (`np.allclose`: `|1 - s| <= 1e-8 + 1e-5·|s|`), so other rows are an error here too.
//! - `log_loss` (probabilities only): `log_loss(y_true, proba, labels=classes)`: the mean of `-ln p`, where `p` is
//!   the probability of the true class clipped to `[ε, 1 - ε]` with `ε = f64::EPSILON` (`np.finfo(float64).eps`,
//!   the machine epsilon of the float64 input). Rows are **not** renormalised (scikit-learn 1.9 only warns when a
//!   row does not sum to 1). Values outside `[0, 1]` are an error, as in scikit-learn.
//!
//! # Regression ([`regression_metrics`])
//!
//! `mae` (`mean_absolute_error`), `rmse` (`root_mean_squared_error`, the square root of the MSE) and `r2`
//! (`r2_score` with `force_finite=True`): `1 - SS_res / SS_tot`, except 1.0 when `SS_res == 0` (perfect
//! predictions, even for a constant `y_true`) and 0.0 when `SS_res != 0` but `SS_tot == 0` (constant `y_true`).
//! With fewer than two samples scikit-learn's `r2` is NaN; the key is then omitted.
//!
//! # Floating point
//!
//! Sums and means use NumPy's pairwise summation, in NumPy's order, so that results are bit-for-bit those of
//! scikit-learn on NumPy 2 wherever only `+ - * / sqrt` are involved (the logarithm of `log_loss` may differ from
//! NumPy's in the last bit). This matters beyond rounding noise: for `y_true = [0.1; 10]`, a naive sum makes the
//! mean differ from 0.1, `SS_tot` tiny but non-zero, and `r2` hugely negative instead of scikit-learn's 0.0.

use std::collections::BTreeMap;

/// Probabilities per class, row-major: `values[row * classes.len() + j]` is the probability of `classes[j]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Probabilities {
    /// Class labels of the columns, strictly increasing (scikit-learn's column order for `predict_proba`).
    pub classes: Vec<i64>,
    /// One row of `classes.len()` probabilities per sample, each in `[0, 1]`.
    pub values: Vec<f64>,
}

/// Why metrics could not be computed.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MetricsError {
    /// `y_true` has no rows.
    #[error("no samples: metrics need at least one row")]
    Empty,
    /// An input's length does not match the number of rows of `y_true`.
    #[error("{name} has {actual} values, expected {expected}")]
    LengthMismatch {
        /// Which input (`y_pred` or `proba.values`).
        name: &'static str,
        /// Expected number of values.
        expected: usize,
        /// Number of values given.
        actual: usize,
    },
    /// A regression target or prediction is NaN or infinite.
    #[error("{name}[{index}] is not a finite number")]
    NonFinite {
        /// Which input (`y_true` or `y_pred`).
        name: &'static str,
        /// Position of the first non-finite value.
        index: usize,
    },
    /// The probabilities are malformed (classes not strictly increasing, a value outside `[0, 1]` or not finite,
    /// or a multiclass row not summing to 1).
    #[error("invalid probabilities: {0}")]
    BadProbabilities(String),
    /// The probabilities have a single class; `roc_auc` and `log_loss` need at least two.
    #[error("probabilities cover a single class ({label}); roc_auc and log_loss need at least two")]
    SingleClass {
        /// The only class.
        label: i64,
    },
    /// A label of `y_true` or `y_pred` is not one of the probability classes.
    #[error("label {label} in {name} is not one of the probability classes {classes:?}")]
    UnknownLabel {
        /// Which input (`y_true` or `y_pred`).
        name: &'static str,
        /// The offending label.
        label: i64,
        /// The probability classes.
        classes: Vec<i64>,
    },
}

/// accuracy, precision, recall, f1, and (when `proba` is given) roc_auc and log_loss, keyed by those names.
///
/// See the [module documentation](crate::metrics) for the exact definitions. `roc_auc` is omitted when it is undefined
/// (a single class in `y_true`, or a class of a multiclass `proba` missing from `y_true`).
pub fn classification_metrics(
    y_true: &[i64],
    y_pred: &[i64],
    proba: Option<&Probabilities>,
) -> Result<BTreeMap<String, f64>, MetricsError> {
    let n = y_true.len();
    if n == 0 {
        return Err(MetricsError::Empty);
    }
    check_len("y_pred", n, y_pred.len())?;
    let labels = match proba {
        Some(p) => {
            validate_probabilities(p, y_true, y_pred)?;
            p.classes.clone()
        }
        None => {
            let mut labels: Vec<i64> = y_true.iter().chain(y_pred).copied().collect();
            labels.sort_unstable();
            labels.dedup();
            labels
        }
    };

    let mut out = BTreeMap::new();
    let correct = y_true.iter().zip(y_pred).filter(|(t, p)| t == p).count();
    out.insert("accuracy".to_owned(), correct as f64 / n as f64);

    let (precision, recall, f1) = match labels.as_slice() {
        [_, positive] => label_scores(y_true, y_pred, *positive),
        _ => {
            let per_label: Vec<(f64, f64, f64)> = labels.iter().map(|&l| label_scores(y_true, y_pred, l)).collect();
            let precision: Vec<f64> = per_label.iter().map(|s| s.0).collect();
            let recall: Vec<f64> = per_label.iter().map(|s| s.1).collect();
            let f1: Vec<f64> = per_label.iter().map(|s| s.2).collect();
            (mean(&precision), mean(&recall), mean(&f1))
        }
    };
    out.insert("precision".to_owned(), precision);
    out.insert("recall".to_owned(), recall);
    out.insert("f1".to_owned(), f1);

    if let Some(p) = proba {
        if let Some(auc) = roc_auc(y_true, p)? {
            out.insert("roc_auc".to_owned(), auc);
        }
        out.insert("log_loss".to_owned(), log_loss(y_true, p));
    }
    Ok(out)
}

/// mae, rmse, r2, keyed by those names.
///
/// See the [module documentation](crate::metrics) for the exact definitions. `r2` is omitted for a single sample (it is
/// undefined; scikit-learn returns NaN).
pub fn regression_metrics(y_true: &[f64], y_pred: &[f64]) -> Result<BTreeMap<String, f64>, MetricsError> {
    let n = y_true.len();
    if n == 0 {
        return Err(MetricsError::Empty);
    }
    check_len("y_pred", n, y_pred.len())?;
    check_finite("y_true", y_true)?;
    check_finite("y_pred", y_pred)?;

    let abs_err: Vec<f64> = y_true.iter().zip(y_pred).map(|(t, p)| (p - t).abs()).collect();
    let sq_err: Vec<f64> = y_true.iter().zip(y_pred).map(|(t, p)| (t - p) * (t - p)).collect();

    let mut out = BTreeMap::new();
    out.insert("mae".to_owned(), mean(&abs_err));
    out.insert("rmse".to_owned(), mean(&sq_err).sqrt());
    if n >= 2 {
        let numerator = pairwise_sum(&sq_err);
        let y_mean = mean(y_true);
        let centred: Vec<f64> = y_true.iter().map(|t| (t - y_mean) * (t - y_mean)).collect();
        let denominator = pairwise_sum(&centred);
        let r2 = if numerator == 0.0 {
            1.0
        } else if denominator == 0.0 {
            0.0
        } else {
            1.0 - numerator / denominator
        };
        out.insert("r2".to_owned(), r2);
    }
    Ok(out)
}

fn check_len(name: &'static str, expected: usize, actual: usize) -> Result<(), MetricsError> {
    if expected == actual { Ok(()) } else { Err(MetricsError::LengthMismatch { name, expected, actual }) }
}

fn check_finite(name: &'static str, values: &[f64]) -> Result<(), MetricsError> {
    match values.iter().position(|v| !v.is_finite()) {
        Some(index) => Err(MetricsError::NonFinite { name, index }),
        None => Ok(()),
    }
}

fn validate_probabilities(p: &Probabilities, y_true: &[i64], y_pred: &[i64]) -> Result<(), MetricsError> {
    match p.classes.as_slice() {
        [] => return Err(MetricsError::BadProbabilities("no classes".to_owned())),
        [label] => return Err(MetricsError::SingleClass { label: *label }),
        classes => {
            if classes.windows(2).any(|w| w[0] >= w[1]) {
                return Err(MetricsError::BadProbabilities(format!(
                    "classes must be strictly increasing, got {classes:?}"
                )));
            }
        }
    }
    check_len("proba.values", y_true.len() * p.classes.len(), p.values.len())?;
    if let Some(i) = p.values.iter().position(|v| !(0.0..=1.0).contains(v)) {
        let k = p.classes.len();
        return Err(MetricsError::BadProbabilities(format!(
            "value {} at row {}, class {} is not a probability in [0, 1]",
            p.values[i],
            i / k,
            p.classes[i % k]
        )));
    }
    for (name, labels) in [("y_true", y_true), ("y_pred", y_pred)] {
        if let Some(&label) = labels.iter().find(|l| p.classes.binary_search(l).is_err()) {
            return Err(MetricsError::UnknownLabel { name, label, classes: p.classes.clone() });
        }
    }
    Ok(())
}

/// Precision, recall and F1 of one label, 0.0 on a zero denominator.
fn label_scores(y_true: &[i64], y_pred: &[i64], label: i64) -> (f64, f64, f64) {
    let tp = y_true.iter().zip(y_pred).filter(|&(&t, &p)| t == label && p == label).count();
    let pred_sum = y_pred.iter().filter(|&&p| p == label).count();
    let true_sum = y_true.iter().filter(|&&t| t == label).count();
    (ratio(tp, pred_sum), ratio(tp, true_sum), ratio(2 * tp, true_sum + pred_sum))
}

fn ratio(numerator: usize, denominator: usize) -> f64 {
    if denominator == 0 { 0.0 } else { numerator as f64 / denominator as f64 }
}

/// `None` when undefined (see the module documentation). Expects validated probabilities.
fn roc_auc(y_true: &[i64], p: &Probabilities) -> Result<Option<f64>, MetricsError> {
    let k = p.classes.len();
    let rows = p.values.chunks_exact(k);
    if k == 2 {
        let positive: Vec<bool> = y_true.iter().map(|&t| t == p.classes[1]).collect();
        if positive.iter().all(|&b| b) || !positive.iter().any(|&b| b) {
            return Ok(None);
        }
        let scores: Vec<f64> = rows.map(|row| row[1]).collect();
        return Ok(Some(binary_auc(&positive, &scores)));
    }
    for (i, row) in rows.enumerate() {
        let sum = pairwise_sum(row);
        if (1.0 - sum).abs() > 1e-8 + 1e-5 * sum.abs() {
            return Err(MetricsError::BadProbabilities(format!(
                "row {i} sums to {sum}; multiclass roc_auc needs rows summing to 1"
            )));
        }
    }
    if p.classes.iter().any(|c| !y_true.contains(c)) {
        return Ok(None);
    }
    let per_class: Vec<f64> = p
        .classes
        .iter()
        .enumerate()
        .map(|(j, &c)| {
            let positive: Vec<bool> = y_true.iter().map(|&t| t == c).collect();
            let scores: Vec<f64> = p.values.chunks_exact(k).map(|row| row[j]).collect();
            binary_auc(&positive, &scores)
        })
        .collect();
    Ok(Some(mean(&per_class)))
}

/// Area under the ROC curve as scikit-learn's `roc_curve` + `auc` compute it. Both classes must be present.
fn binary_auc(positive: &[bool], scores: &[f64]) -> f64 {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    // Cumulative (false, true) positive counts at the last row of each run of equal scores.
    let mut points: Vec<(u64, u64)> = Vec::new();
    let (mut fp, mut tp) = (0u64, 0u64);
    for (r, &i) in order.iter().enumerate() {
        if positive[i] {
            tp += 1;
        } else {
            fp += 1;
        }
        if order.get(r + 1).is_none_or(|&next| scores[next] != scores[i]) {
            points.push((fp, tp));
        }
    }
    // drop_intermediate=True: keep the ends and every point where either second difference is non-zero.
    if points.len() > 2 {
        let mut kept = Vec::with_capacity(points.len());
        kept.push(points[0]);
        for w in points.windows(3) {
            let (a, b, c) = (w[0], w[1], w[2]);
            if a.0 + c.0 != 2 * b.0 || a.1 + c.1 != 2 * b.1 {
                kept.push(b);
            }
        }
        kept.push(points[points.len() - 1]);
        points = kept;
    }
    points.insert(0, (0, 0));
    let (fp_total, tp_total) = points[points.len() - 1];
    let (fp_total, tp_total) = (fp_total as f64, tp_total as f64);
    let rates: Vec<(f64, f64)> = points.iter().map(|&(f, t)| (f as f64 / fp_total, t as f64 / tp_total)).collect();
    // np.trapezoid(tpr, fpr): sum of dx * (y1 + y0) / 2.
    let areas: Vec<f64> = rates.windows(2).map(|w| (w[1].0 - w[0].0) * (w[1].1 + w[0].1) / 2.0).collect();
    pairwise_sum(&areas)
}

/// `log_loss(y_true, proba, labels=classes)`. Expects validated probabilities.
fn log_loss(y_true: &[i64], p: &Probabilities) -> f64 {
    let k = p.classes.len();
    let losses: Vec<f64> = y_true
        .iter()
        .zip(p.values.chunks_exact(k))
        .map(|(t, row)| {
            let j = p.classes.binary_search(t).unwrap_or_default();
            -row[j].clamp(f64::EPSILON, 1.0 - f64::EPSILON).ln()
        })
        .collect();
    mean(&losses)
}

/// NumPy's mean: pairwise sum divided by the count.
fn mean(values: &[f64]) -> f64 {
    pairwise_sum(values) / values.len() as f64
}

/// NumPy's pairwise summation (`pairwise_sum_DOUBLE`), which `np.sum` and `np.mean` use on contiguous float64
/// arrays: a plain loop under 8 values, 8 interleaved accumulators up to 128, halves (split on a multiple of 8)
/// above.
fn pairwise_sum(a: &[f64]) -> f64 {
    let n = a.len();
    if n < 8 {
        let mut res = 0.0;
        for &x in a {
            res += x;
        }
        res
    } else if n <= 128 {
        let mut r = [0.0f64; 8];
        r.copy_from_slice(&a[..8]);
        let end = n - n % 8;
        for chunk in a[8..end].chunks_exact(8) {
            for (acc, &x) in r.iter_mut().zip(chunk) {
                *acc += x;
            }
        }
        let mut res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for &x in &a[end..] {
            res += x;
        }
        res
    } else {
        let mut n2 = n / 2;
        n2 -= n2 % 8;
        pairwise_sum(&a[..n2]) + pairwise_sum(&a[n2..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proba(classes: &[i64], values: &[f64]) -> Probabilities {
        Probabilities { classes: classes.to_vec(), values: values.to_vec() }
    }

    /// Binary probabilities from the positive-class column.
    fn binary(p1: &[f64]) -> Probabilities {
        proba(&[0, 1], &p1.iter().flat_map(|&p| [1.0 - p, p]).collect::<Vec<_>>())
    }

    fn get(m: &BTreeMap<String, f64>, key: &str) -> f64 {
        *m.get(key).unwrap_or_else(|| panic!("missing {key} in {m:?}"))
    }

    fn keys(m: &BTreeMap<String, f64>) -> Vec<&str> {
        m.keys().map(String::as_str).collect()
    }

    // Expected values below were computed with scikit-learn 1.9.1 / NumPy 2.4.

    #[test]
    fn pairwise_sum_matches_numpy() {
        let tenths = [0.1; 10];
        assert_eq!(pairwise_sum(&tenths), 1.0); // a plain loop gives 0.9999999999999999
        let ramp: Vec<f64> = (0..200).map(|i| f64::from(i) * 0.1).collect();
        assert_eq!(pairwise_sum(&ramp), 1990.0); // a plain loop gives 1990.0000000000002
        assert_eq!(pairwise_sum(&[]), 0.0);
    }

    #[test]
    fn auc_sklearn_doc_example() {
        let y = [0, 0, 1, 1];
        let m = classification_metrics(&y, &[0, 0, 0, 1], Some(&binary(&[0.1, 0.4, 0.35, 0.8]))).expect("metrics");
        assert_eq!(get(&m, "roc_auc"), 0.75);
    }

    #[test]
    fn auc_with_tied_scores() {
        let y = [0, 1, 0, 1, 1, 0];
        let p1 = [0.5, 0.5, 0.2, 0.8, 0.5, 0.5];
        let m = classification_metrics(&y, &[0, 0, 0, 1, 0, 0], Some(&binary(&p1))).expect("metrics");
        assert_eq!(get(&m, "roc_auc"), 0.7777777777777778);
        // Mann–Whitney with ties counted as 1/2: the positives (0.8, 0.5, 0.5) win 3 + 2 + 2 of 9 pairs.
        assert!((get(&m, "roc_auc") - 7.0 / 9.0).abs() < 1e-15);
        assert!((get(&m, "log_loss") - 0.5364793041447001).abs() < 1e-15);
    }

    #[test]
    fn all_tied_scores_give_half() {
        let m = classification_metrics(&[0, 1, 1, 0], &[0, 1, 1, 0], Some(&binary(&[0.3; 4]))).expect("metrics");
        assert_eq!(get(&m, "roc_auc"), 0.5);
    }

    #[test]
    fn binary_zero_division_gives_zero() {
        // Nothing predicted positive: precision is 0/0, hence 0.0 (zero_division="warn").
        let m = classification_metrics(&[0, 0, 1, 1], &[0, 0, 0, 0], None).expect("metrics");
        assert_eq!(get(&m, "accuracy"), 0.5);
        assert_eq!(get(&m, "precision"), 0.0);
        assert_eq!(get(&m, "recall"), 0.0);
        assert_eq!(get(&m, "f1"), 0.0);
        assert_eq!(keys(&m), ["accuracy", "f1", "precision", "recall"]);
    }

    #[test]
    fn binary_positive_label_is_the_larger() {
        // Labels 3 and 7: 7 is positive. tp = 1, fp = 1, fn = 2.
        let m = classification_metrics(&[7, 7, 7, 3], &[7, 3, 3, 7], None).expect("metrics");
        assert_eq!(get(&m, "precision"), 0.5);
        assert!((get(&m, "recall") - 1.0 / 3.0).abs() < 1e-15);
        assert_eq!(get(&m, "f1"), 0.4);
    }

    #[test]
    fn multiclass_macro_without_probabilities() {
        // Label 5 appears only in y_pred: it takes part in the macro average with precision 0 and recall 0/0 = 0.
        let m = classification_metrics(&[0, 1, 2, 2, 1, 0, 2], &[0, 2, 2, 2, 1, 1, 5], None).expect("metrics");
        assert_eq!(get(&m, "precision"), 0.5416666666666666);
        assert_eq!(get(&m, "recall"), 0.41666666666666663);
        assert_eq!(get(&m, "f1"), 0.45833333333333326);
    }

    #[test]
    fn multiclass_with_probabilities() {
        let y_true = [0, 1, 2, 2, 1, 0, 2];
        let y_pred = [0, 2, 2, 2, 1, 0, 2];
        let values =
            [0.7, 0.2, 0.1, 0.2, 0.3, 0.5, 0.1, 0.1, 0.8, 0.3, 0.3, 0.4, 0.2, 0.6, 0.2, 0.4, 0.4, 0.2, 0.2, 0.2, 0.6];
        let m = classification_metrics(&y_true, &y_pred, Some(&proba(&[0, 1, 2], &values))).expect("metrics");
        assert_eq!(get(&m, "accuracy"), 0.8571428571428571);
        assert_eq!(get(&m, "precision"), 0.9166666666666666);
        assert_eq!(get(&m, "recall"), 0.8333333333333334);
        assert_eq!(get(&m, "f1"), 0.8412698412698413);
        assert_eq!(get(&m, "roc_auc"), 0.9222222222222222);
        assert!((get(&m, "log_loss") - 0.662574858694167).abs() < 1e-15);
        assert_eq!(keys(&m), ["accuracy", "f1", "log_loss", "precision", "recall", "roc_auc"]);
    }

    #[test]
    fn single_class_in_y_true_omits_roc_auc() {
        let m = classification_metrics(&[1, 1, 1], &[1, 0, 1], Some(&binary(&[0.9, 0.4, 0.8]))).expect("metrics");
        assert!(!m.contains_key("roc_auc"));
        assert!(m.contains_key("log_loss"));
        // Multiclass: a class missing from y_true makes the macro OvR AUC undefined too.
        let values = [0.6, 0.3, 0.1, 0.2, 0.7, 0.1, 0.5, 0.25, 0.25];
        let m = classification_metrics(&[0, 1, 0], &[0, 1, 0], Some(&proba(&[0, 1, 2], &values))).expect("metrics");
        assert!(!m.contains_key("roc_auc"));
    }

    #[test]
    fn log_loss_clips_to_machine_epsilon() {
        // True class predicted with probability 0 and 1: -(ln(eps) + ln(1 - eps)) / 2.
        let m = classification_metrics(&[0, 1], &[1, 1], Some(&binary(&[1.0, 1.0]))).expect("metrics");
        assert!((get(&m, "log_loss") - 18.021826694558577).abs() < 1e-12);
    }

    #[test]
    fn log_loss_does_not_renormalise() {
        // Rows summing to 0.5: ln is taken of the raw (clipped) value.
        let m = classification_metrics(&[0, 1], &[0, 1], Some(&proba(&[0, 1], &[0.25, 0.25, 0.25, 0.25])))
            .expect("metrics");
        assert!((get(&m, "log_loss") - 4.0f64.ln()).abs() < 1e-15);
    }

    #[test]
    fn classification_errors() {
        assert_eq!(classification_metrics(&[], &[], None), Err(MetricsError::Empty));
        assert_eq!(
            classification_metrics(&[0, 1], &[0], None),
            Err(MetricsError::LengthMismatch { name: "y_pred", expected: 2, actual: 1 })
        );
        assert_eq!(
            classification_metrics(&[0, 1], &[0, 1], Some(&proba(&[0, 1], &[0.5, 0.5]))),
            Err(MetricsError::LengthMismatch { name: "proba.values", expected: 4, actual: 2 })
        );
        assert_eq!(
            classification_metrics(&[4, 4], &[4, 4], Some(&proba(&[4], &[1.0, 1.0]))),
            Err(MetricsError::SingleClass { label: 4 })
        );
        assert_eq!(
            classification_metrics(&[0, 2], &[0, 1], Some(&binary(&[0.1, 0.9]))),
            Err(MetricsError::UnknownLabel { name: "y_true", label: 2, classes: vec![0, 1] })
        );
        let bad = |r: Result<BTreeMap<String, f64>, MetricsError>| matches!(r, Err(MetricsError::BadProbabilities(_)));
        assert!(bad(classification_metrics(&[0, 1], &[0, 1], Some(&binary(&[1.5, 0.5])))));
        assert!(bad(classification_metrics(&[0, 1], &[0, 1], Some(&binary(&[f64::NAN, 0.5])))));
        assert!(bad(classification_metrics(&[0, 1], &[0, 1], Some(&proba(&[1, 0], &[0.5; 4])))));
        // Multiclass rows must sum to 1 (roc_auc), binary rows need not.
        let values = [0.5, 0.3, 0.1, 0.2, 0.7, 0.1, 0.5, 0.25, 0.25];
        assert!(bad(classification_metrics(&[0, 1, 2], &[0, 1, 2], Some(&proba(&[0, 1, 2], &values)))));
    }

    #[test]
    fn regression_basic() {
        let m = regression_metrics(&[3.0, 1.0, 2.0, 7.0], &[2.5, 1.0, 2.0, 8.0]).expect("metrics");
        assert_eq!(get(&m, "mae"), 0.375);
        assert_eq!(get(&m, "rmse"), 0.5590169943749475);
        assert_eq!(get(&m, "r2"), 0.9397590361445783);
        assert_eq!(keys(&m), ["mae", "r2", "rmse"]);
    }

    #[test]
    fn regression_constant_target() {
        let y = [0.1; 10];
        let m = regression_metrics(&y, &y).expect("metrics");
        assert_eq!(get(&m, "r2"), 1.0);
        let mut off = y;
        off[9] = 0.2;
        let m = regression_metrics(&y, &off).expect("metrics");
        assert_eq!(get(&m, "r2"), 0.0);
        // Single sample: r2 undefined and omitted.
        let m = regression_metrics(&[2.0], &[3.0]).expect("metrics");
        assert_eq!(keys(&m), ["mae", "rmse"]);
        assert_eq!(get(&m, "mae"), 1.0);
    }

    #[test]
    fn regression_errors() {
        assert_eq!(regression_metrics(&[], &[]), Err(MetricsError::Empty));
        assert_eq!(
            regression_metrics(&[1.0], &[1.0, 2.0]),
            Err(MetricsError::LengthMismatch { name: "y_pred", expected: 1, actual: 2 })
        );
        assert_eq!(
            regression_metrics(&[1.0, 2.0], &[1.0, f64::INFINITY]),
            Err(MetricsError::NonFinite { name: "y_pred", index: 1 })
        );
    }
}
