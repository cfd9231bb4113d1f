//! End-to-end tests of the real `ferry` binary: start-up, readiness, engine choice, refusal at load, graceful
//! shutdown, configuration, and interop with NVIDIA's `tritonclient`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use ferry_test_support::{FerryProcess, fixtures_dir, http_status, repo_root};

fn ferry() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_ferry"))
}

/// A Triton-style repository holding the named fixtures as version 1.
fn repository_of(names: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for name in names {
        let version = dir.path().join(name).join("1");
        std::fs::create_dir_all(&version).expect("mkdir");
        std::fs::copy(fixtures_dir().join(format!("models/{name}.onnx")), version.join("model.onnx")).expect("copy");
    }
    dir
}

/// Runs the tritonclient interop script against a server holding the fixtures.
fn tritonclient_interop(protocol: &str) {
    let models = ["tiny_add", "cnn", "mlp_classifier", "random_forest", "identity_all_types"];
    let repo = repository_of(&models);
    let server = FerryProcess::start(ferry(), &["--model-repository", repo.path().to_str().expect("utf8")])
        .expect("ferry serve");
    let addr = if protocol == "grpc" { &server.grpc_addr } else { &server.addr };
    let script = repo_root().join("tests/interop/tritonclient_interop.py");
    let out = Command::new("python3")
        .env("FERRY_API_KEY", ferry_test_support::TEST_ADMIN_KEY)
        .arg(&script)
        .arg(protocol)
        .arg(addr)
        .arg(fixtures_dir())
        .args(models)
        .output()
        .expect("python3 (install the test requirements: python3 -m pip install -r requirements.txt)");
    assert!(
        out.status.success(),
        "tritonclient {protocol} interop failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("checks passed"));
}

#[test]
fn tritonclient_http_gets_the_reference_outputs_in_json_and_binary() {
    tritonclient_interop("http");
}

#[test]
fn tritonclient_grpc_gets_the_reference_outputs() {
    tritonclient_interop("grpc");
}

#[test]
fn the_bundled_example_is_served_on_both_engines() {
    let examples = repo_root().join("examples/models");
    for engine in ["onnxruntime", "tract"] {
        let server =
            FerryProcess::start(ferry(), &["--model-repository", examples.to_str().expect("utf8"), "--engine", engine])
                .expect("ferry serve");
        let body = std::fs::read_to_string(repo_root().join("examples/models/iris/request.json")).expect("request");
        let (status, reply) = post(&server.addr, "/v2/models/iris/infer", &body);
        assert_eq!(status, 200, "{engine}: {reply}");
        assert!(reply.contains(r#""name":"label","datatype":"INT64","shape":[2],"data":[0,2]"#), "{engine}: {reply}");
        let (_, meta) = get(&server.addr, "/v2/models/iris");
        let platform = if engine == "tract" { "tract_onnx" } else { "onnxruntime_onnx" };
        assert!(meta.contains(platform), "{meta}");
    }
}

#[test]
fn a_model_the_engine_cannot_run_fails_at_load_naming_the_operator() {
    let dir = tempfile::tempdir().expect("dir");
    let model = fixtures_dir().join("models/mlp_classifier.onnx");
    let out = Command::new(ferry())
        .args(["serve", model.to_str().expect("utf8"), "--engine", "tract", "--http-port", "0", "--grpc-port", "0"])
        .current_dir(dir.path())
        .output()
        .expect("run ferry");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unsupported operator(s) Scaler"), "{stderr}");
    assert!(stderr.contains("mlp_classifier"), "{stderr}");

    let out = Command::new(ferry())
        .args(["serve", "no/such/model.onnx", "--http-port", "0", "--grpc-port", "0"])
        .current_dir(dir.path())
        .output()
        .expect("run ferry");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such file"));
}

#[test]
fn with_no_models_the_server_starts_empty_and_waits_for_the_registry() {
    let server = FerryProcess::start(ferry(), &[]).expect("an empty server starts and is ready");
    assert_eq!(http_status(&server.addr, "GET", "/v2/health/ready").expect("ready"), 200);
    let key = Some(ferry_test_support::TEST_ADMIN_KEY);
    let (status, models) =
        ferry_test_support::http_request_as(&server.addr, key, "GET", "/api/v1/models", None).expect("models");
    assert_eq!((status, models.as_str()), (200, "[]"));
    // Without a key, the registry is closed.
    let (status, _) = ferry_test_support::http_request(&server.addr, "GET", "/api/v1/models", None).expect("models");
    assert_eq!(status, 401);
}

#[test]
fn sigterm_finishes_the_request_in_flight_then_exits_zero() {
    let repo = repository_of(&["tiny_add"]);
    let mut server =
        FerryProcess::start(ferry(), &["--model-repository", repo.path().to_str().expect("utf8")]).expect("serve");
    let body = r#"{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}"#;
    let mut stream = TcpStream::connect(&server.addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    write!(
        stream,
        "POST /v2/models/tiny_add/infer HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .expect("head");
    stream.write_all(&body.as_bytes()[..10]).expect("first part");
    // The connection is accepted and the request half-sent when the signal arrives.
    std::thread::sleep(Duration::from_millis(300));
    let mut child = server.take_child().expect("child");
    let killed = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
    assert!(killed.success());
    std::thread::sleep(Duration::from_millis(300));
    stream.write_all(&body.as_bytes()[10..]).expect("rest");
    let mut reply = String::new();
    drop(stream.read_to_string(&mut reply));
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.contains(r#""data":[2.0,3.0,4.0,5.0]"#), "{reply}");
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(0));
    assert!(http_status(&server.addr, "GET", "/v2/health/live").is_err(), "still listening after exit");
}

#[test]
fn config_show_prints_the_layered_settings() {
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(dir.path().join("ferry.toml"), "http_port = 9100\n[models]\ninstances = 1\n").expect("toml");
    let out = Command::new(ferry())
        .args(["config", "show", "--log-format", "json"])
        .env("FERRY_HOST", "127.0.0.9")
        .env("FERRY_REGISTRY", "postgres://ferry:hunter2-secret@db.internal:5432/ferry")
        .env("FERRY_ADMIN_KEY", "fry_secret_admin_key_that_must_not_show_up_anywhere")
        .current_dir(dir.path())
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let shown = String::from_utf8_lossy(&out.stdout);
    for line in ["host = \"127.0.0.9\"", "http_port = 9100", "log_format = \"json\"", "instances = 1"] {
        assert!(shown.contains(line), "{line} missing from:\n{shown}");
    }
    assert!(shown.contains("postgres://ferry:***@db.internal:5432/ferry"), "{shown}");
    assert!(!shown.contains("hunter2") && !shown.contains("fry_secret"), "secrets are never shown:\n{shown}");
    std::fs::write(dir.path().join("ferry.toml"), "http_prot = 1\n").expect("toml");
    let out = Command::new(ferry()).args(["config", "show"]).current_dir(dir.path()).output().expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("http_prot"));
}

fn request(addr: &str, head: &str, body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    write!(stream, "{head}\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
        .expect("write");
    let mut reply = String::new();
    drop(stream.read_to_string(&mut reply));
    let status = reply.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = reply.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

fn post(addr: &str, path: &str, body: &str) -> (u16, String) {
    request(addr, &format!("POST {path} HTTP/1.1"), body)
}

fn get(addr: &str, path: &str) -> (u16, String) {
    request(addr, &format!("GET {path} HTTP/1.1"), "")
}

#[test]
fn an_oversized_grpc_message_is_resource_exhausted() {
    let repo = repository_of(&["tiny_add"]);
    let server = FerryProcess::start(
        ferry(),
        &["--model-repository", repo.path().to_str().expect("utf8"), "--max-request-bytes", "2048"],
    )
    .expect("serve");
    let script = r#"
import sys, numpy as np, tritonclient.grpc as g
from tritonclient.utils import InferenceServerException
c = g.InferenceServerClient(sys.argv[1])
x = g.InferInput("x", [1000, 4], "FP32"); x.set_data_from_numpy(np.ones([1000, 4], dtype=np.float32))
try:
    c.infer("tiny_add", [x]); print("accepted")
except InferenceServerException as e:
    print(e.status())
"#;
    let out = Command::new("python3").args(["-c", script, &server.grpc_addr]).output().expect("python3");
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(printed.contains("StatusCode.RESOURCE_EXHAUSTED"), "{printed}{}", String::from_utf8_lossy(&out.stderr));
}
