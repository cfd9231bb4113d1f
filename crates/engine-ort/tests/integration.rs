//! The engine conformance suite on ONNX Runtime: every fixture must load and match its reference outputs.

use ferry_engine::conformance::{Expectation, run_suite};
use ferry_engine::{Engine, EngineOptions};
use ferry_engine_ort::OrtRuntime;

#[test]
fn onnxruntime_passes_the_conformance_suite() {
    let runtime = OrtRuntime::init(None)
        .expect("ONNX Runtime must be installed for the tests: python3 -m pip install -r requirements.txt");
    let load = |p: &std::path::Path| runtime.load(p, &EngineOptions::default()).map(|e| Box::new(e) as Box<dyn Engine>);
    let failures = run_suite(&load, &|_| Expectation::Runs);
    assert!(failures.is_empty(), "conformance failures:\n{}", failures.join("\n"));
}

#[test]
fn models_loaded_from_memory_pass_the_same_suite() {
    let runtime = OrtRuntime::init(None).expect("ONNX Runtime");
    let load = |p: &std::path::Path| {
        let bytes = std::fs::read(p).expect("read the fixture");
        runtime.load_bytes(&bytes, p, &EngineOptions::default()).map(|e| Box::new(e) as Box<dyn Engine>)
    };
    let failures = run_suite(&load, &|_| Expectation::Runs);
    assert!(failures.is_empty(), "conformance failures:\n{}", failures.join("\n"));
}

#[test]
fn a_file_that_is_not_onnx_is_a_load_error() {
    let runtime = OrtRuntime::init(None).expect("ONNX Runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("junk.onnx");
    std::fs::write(&path, b"definitely not protobuf").expect("write");
    let err = runtime.load(&path, &EngineOptions::default()).expect_err("junk must not load");
    let msg = ferry_engine::error_chain(&err);
    assert!(msg.contains("junk.onnx"), "{msg}");
}
