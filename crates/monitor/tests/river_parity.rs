//! ferry's concept-drift detectors against river's on the same streams: every drift (and DDM warning) at the same
//! index. The streams and river's verdicts are committed, made by `fixtures/make_concept_drift.py`.

use ferry_monitor::concept::{
    Adwin, AdwinConfig, Ddm, DdmConfig, Direction, DriftDetector, DriftState, PageHinkley, PageHinkleyConfig,
};
use serde_json::Value;

fn num(params: &Value, key: &str, default: f64) -> f64 {
    params.get(key).and_then(Value::as_f64).unwrap_or(default)
}

fn detector(kind: &str, params: &Value) -> Box<dyn DriftDetector> {
    match kind {
        "adwin" => {
            let d = AdwinConfig::default();
            Box::new(Adwin::new(AdwinConfig {
                delta: num(params, "delta", d.delta),
                clock: params.get("clock").and_then(Value::as_u64).unwrap_or(d.clock),
                max_buckets: params
                    .get("max_buckets")
                    .and_then(Value::as_u64)
                    .map_or(d.max_buckets, |v| usize::try_from(v).expect("max_buckets")),
                min_window_length: num(params, "min_window_length", d.min_window_length),
                grace_period: num(params, "grace_period", d.grace_period),
            }))
        }
        "page_hinkley" => {
            let d = PageHinkleyConfig::default();
            let mode = match params.get("mode").and_then(Value::as_str) {
                Some("up") => Direction::Up,
                Some("down") => Direction::Down,
                _ => Direction::Both,
            };
            Box::new(PageHinkley::new(PageHinkleyConfig {
                min_instances: num(params, "min_instances", d.min_instances),
                delta: num(params, "delta", d.delta),
                threshold: num(params, "threshold", d.threshold),
                alpha: num(params, "alpha", d.alpha),
                mode,
            }))
        }
        "ddm" => {
            let d = DdmConfig::default();
            Box::new(Ddm::new(DdmConfig {
                warm_start: num(params, "warm_start", d.warm_start),
                warning_threshold: num(params, "warning_threshold", d.warning_threshold),
                drift_threshold: num(params, "drift_threshold", d.drift_threshold),
            }))
        }
        other => panic!("unknown detector {other}"),
    }
}

fn indices(v: &Value) -> Vec<usize> {
    v.as_array().expect("indices").iter().map(|i| usize::try_from(i.as_u64().expect("index")).expect("usize")).collect()
}

#[test]
fn every_detector_raises_where_river_does() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/concept_drift/river.json");
    let fixture: Value = serde_json::from_str(&std::fs::read_to_string(&path).expect("fixture")).expect("JSON");
    let mut compared = 0;
    let mut drifts_seen = 0;
    for stream in fixture["streams"].as_array().expect("streams") {
        let values: Vec<f64> = stream["values"]
            .as_array()
            .expect("values")
            .iter()
            .map(|v| v.as_str().expect("string").parse().expect("float"))
            .collect();
        for case in stream["detectors"].as_array().expect("detectors") {
            let kind = case["kind"].as_str().expect("kind");
            let mut d = detector(kind, &case["params"]);
            let (mut drifts, mut warnings) = (Vec::new(), Vec::new());
            for (i, x) in values.iter().enumerate() {
                match d.update(*x) {
                    DriftState::Drift => drifts.push(i),
                    DriftState::Warning => warnings.push(i),
                    DriftState::Stable => {}
                }
            }
            let label = format!("{} on {} with {}", kind, stream["name"], case["params"]);
            assert_eq!(drifts, indices(&case["drifts"]), "drifts of {label}");
            assert_eq!(warnings, indices(&case["warnings"]), "warnings of {label}");
            compared += 1;
            drifts_seen += drifts.len();
        }
    }
    assert!(
        compared >= 40 && drifts_seen >= 100,
        "the fixture exercises the detectors: {compared} cases, {drifts_seen} drifts"
    );
}
