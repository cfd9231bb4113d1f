//! ferry's drift statistics against Evidently's on the same columns: the same chosen test, the same verdict, the
//! score within 1e-6. The cases and Evidently's results are committed, made by `fixtures/make_drift.py`.
//!
//! One documented divergence: a K-S p-value with more than 10,000 rows on a side, where scipy uses the finite-n
//! Kolmogorov distribution and ferry the limiting one; there the verdict must agree and the p-value be within 0.01.

use ferry_monitor::drift::{Column, Method, column_drift};
use serde_json::Value;

fn column(kind: &str, values: &Value) -> Column {
    let texts = values.as_array().expect("values").iter().map(|v| v.as_str().expect("string"));
    if kind == "numerical" {
        Column::Numerical(texts.map(|t| t.parse::<f64>().expect("number")).collect())
    } else {
        Column::Categorical(texts.map(str::to_owned).collect())
    }
}

#[test]
fn scores_tests_and_verdicts_equal_evidently() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/drift/evidently.json");
    let fixture: Value = serde_json::from_str(&std::fs::read_to_string(&path).expect("fixture")).expect("JSON");
    let mut failures = Vec::new();
    let mut compared = 0;
    for case in fixture["cases"].as_array().expect("cases") {
        let name = case["name"].as_str().expect("name");
        let kind = case["kind"].as_str().expect("kind");
        let (reference, current) = (column(kind, &case["reference"]), column(kind, &case["current"]));
        for expected in case["results"].as_array().expect("results") {
            let asked = expected["method"].as_str().expect("method");
            let method = if asked == "default" { None } else { Some(Method::from_name(asked).expect("known method")) };
            let got = match column_drift(&reference, &current, method, None) {
                Ok(got) => got,
                Err(e) => {
                    failures.push(format!("{name} / {asked}: {e}"));
                    continue;
                }
            };
            compared += 1;
            let chosen = expected["chosen"].as_str().expect("chosen");
            let score = expected["score"].as_f64().unwrap_or(f64::NAN);
            let asymptotic_ks = got.method == Method::Ks && got.reference_count.max(got.current_count) > 10_000;
            let tolerance = if asymptotic_ks { 0.01 } else { 1e-6 };
            let close = (got.score - score).abs() <= tolerance || (got.score.is_nan() && score.is_nan());
            if got.method.name() != chosen || !close || got.drifted != expected["drifted"].as_bool().expect("drifted") {
                failures.push(format!(
                    "{name} / {asked}: ferry {} {} {} — Evidently {chosen} {score} {}",
                    got.method.name(),
                    got.score,
                    got.drifted,
                    expected["drifted"]
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{} of {compared} differ:\n{}", failures.len(), failures.join("\n"));
    assert!(compared >= 300, "the fixture exercises every method: {compared} results");
}
