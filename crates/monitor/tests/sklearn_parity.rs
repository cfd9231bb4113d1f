//! The metrics equal scikit-learn's on the tabular fixtures.
//!
//! Every `fixtures/tabular/*.metrics.json` (written by `fixtures/make_tabular.py`) holds a model's predictions
//! and the metrics scikit-learn computed from them; feeding the same numbers to `ferry-monitor` must give the same
//! metric names and values within 1e-9.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ferry_monitor::{Probabilities, classification_metrics, regression_metrics};
use serde_json::Value;

const TOLERANCE: f64 = 1e-9;

fn tabular_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/tabular")
}

fn cases() -> Vec<PathBuf> {
    let dir = tabular_dir();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e} (run fixtures/make_tabular.py)", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.ends_with(".metrics.json")))
        .collect();
    paths.sort();
    paths
}

fn field<'a>(value: &'a Value, key: &str, path: &Path) -> &'a Value {
    value.get(key).unwrap_or_else(|| panic!("{}: missing `{key}`", path.display()))
}

fn ints(value: &Value, what: &str) -> Vec<i64> {
    let items = value.as_array().unwrap_or_else(|| panic!("{what}: not an array"));
    items.iter().map(|v| v.as_i64().unwrap_or_else(|| panic!("{what}: {v} is not an integer"))).collect()
}

fn floats(value: &Value, what: &str) -> Vec<f64> {
    let items = value.as_array().unwrap_or_else(|| panic!("{what}: not an array"));
    items.iter().map(|v| v.as_f64().unwrap_or_else(|| panic!("{what}: {v} is not a number"))).collect()
}

fn expected_metrics(case: &Value, path: &Path) -> BTreeMap<String, f64> {
    let metrics = field(case, "metrics", path).as_object().expect("`metrics` is an object");
    metrics.iter().map(|(k, v)| (k.clone(), v.as_f64().unwrap_or_else(|| panic!("metric {k}: {v}")))).collect()
}

fn compare(path: &Path, actual: &BTreeMap<String, f64>, expected: &BTreeMap<String, f64>) {
    let actual_names: Vec<&String> = actual.keys().collect();
    let expected_names: Vec<&String> = expected.keys().collect();
    assert_eq!(actual_names, expected_names, "{}: metric names differ", path.display());
    for (name, want) in expected {
        let got = actual[name];
        assert!(
            (got - want).abs() <= TOLERANCE,
            "{}: {name} = {got:?}, scikit-learn says {want:?} (difference {:e})",
            path.display(),
            got - want
        );
    }
}

#[test]
fn metrics_equal_scikit_learn() {
    let paths = cases();
    assert!(paths.len() >= 3, "expected at least 3 fixtures in {}, found {paths:?}", tabular_dir().display());
    let mut tasks = Vec::new();
    for path in &paths {
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
        let case: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()));
        let predictions = field(&case, "predictions", path);
        let task = field(&case, "task", path).as_str().expect("`task` is a string").to_owned();
        let actual = match task.as_str() {
            "classification" => {
                let y_true = ints(field(&case, "y_true", path), "y_true");
                let y_pred = ints(field(predictions, "y_pred", path), "predictions.y_pred");
                let proba = Probabilities {
                    classes: ints(field(&case, "classes", path), "classes"),
                    values: floats(field(predictions, "proba", path), "predictions.proba"),
                };
                classification_metrics(&y_true, &y_pred, Some(&proba))
            }
            "regression" => {
                let y_true = floats(field(&case, "y_true", path), "y_true");
                let y_pred = floats(field(predictions, "y_pred", path), "predictions.y_pred");
                regression_metrics(&y_true, &y_pred)
            }
            other => panic!("{}: unknown task {other:?}", path.display()),
        }
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        compare(path, &actual, &expected_metrics(&case, path));
        tasks.push(task);
    }
    // The fixtures cover binary and multiclass classification and regression.
    assert!(tasks.iter().filter(|t| *t == "classification").count() >= 2, "{tasks:?}");
    assert!(tasks.iter().any(|t| t == "regression"), "{tasks:?}");
}
