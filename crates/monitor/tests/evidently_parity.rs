//! ferry's drift statistics against Evidently's on the same columns: the same chosen test, the same verdict, the
//! score within 1e-6, at every size (50 to 100,000 reference rows, K-S included where scipy leaves its exact
//! distribution above 10,000 rows). The cases and Evidently's results are committed, made by
//! `fixtures/make_drift.py`.

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
    let mut ks_sizes = std::collections::BTreeSet::new();
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
            if got.method == Method::Ks {
                ks_sizes.insert(got.reference_count);
            }
            let close = (got.score - score).abs() <= 1e-6 || (got.score.is_nan() && score.is_nan());
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
    assert!(compared >= 350, "the fixture exercises every method: {compared} results");
    for size in [50, 1000, 1001, 10_000, 10_001, 100_000] {
        assert!(ks_sizes.contains(&size), "K-S is compared at {size} reference rows: {ks_sizes:?}");
    }
}
