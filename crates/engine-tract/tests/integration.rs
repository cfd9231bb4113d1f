//! The engine conformance suite on tract: plain networks must match ONNX Runtime's reference outputs, and models
//! with operators tract lacks must be refused at load with those operators named.

use ferry_engine::Engine;
use ferry_engine::conformance::{Expectation, run_suite};
use ferry_engine_tract::TractEngine;

fn expectation(fixture: &str) -> Expectation {
    match fixture {
        "mlp_classifier" | "logistic_pipeline" => Expectation::Refuses("Scaler"),
        "gbt_regressor" => Expectation::Refuses("TreeEnsembleRegressor"),
        "identity_all_types" => Expectation::Refuses("Bfloat16"),
        "random_forest" => Expectation::Refuses("TreeEnsembleClassifier"),
        _ => Expectation::Runs,
    }
}

#[test]
fn tract_passes_the_conformance_suite() {
    let load = |p: &std::path::Path| TractEngine::load(p).map(|e| Box::new(e) as Box<dyn Engine>);
    let failures = run_suite(&load, &expectation);
    assert!(failures.is_empty(), "conformance failures:\n{}", failures.join("\n"));
}

#[test]
fn models_loaded_from_memory_pass_the_same_suite() {
    let load = |p: &std::path::Path| {
        let bytes = std::fs::read(p).expect("read the fixture");
        TractEngine::load_bytes(&bytes, p).map(|e| Box::new(e) as Box<dyn Engine>)
    };
    let failures = run_suite(&load, &expectation);
    assert!(failures.is_empty(), "conformance failures:\n{}", failures.join("\n"));
}

#[test]
fn a_file_that_is_not_onnx_is_a_load_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("junk.onnx");
    std::fs::write(&path, b"definitely not protobuf").expect("write");
    let err = TractEngine::load(&path).expect_err("junk must not load");
    assert!(ferry_engine::error_chain(&err).contains("junk.onnx"));
}
