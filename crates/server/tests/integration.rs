//! The HTTP front end, in process (`app(state).oneshot`): every route and every client mistake of the Open
//! Inference Protocol, on real fixture models.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, Request, StatusCode};
use ferry_server::{AppState, ServerLimits, app};
use ferry_serving::{EngineChoice, ModelConfig, ModelRepository};
use ferry_test_support::{fixture, load_repository};
use serde_json::{Value, json};
use tower::ServiceExt;

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
    fn error(&self) -> String {
        self.json()["error"].as_str().map(str::to_owned).unwrap_or_else(|| panic!("no error field: {:?}", self.body))
    }
}

async fn call(state: &AppState, method: Method, uri: &str, headers: &[(&str, String)], body: impl Into<Body>) -> Reply {
    let mut req = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let resp = app(state.clone()).oneshot(req.body(body.into()).expect("request")).await.expect("infallible");
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = axum::body::to_bytes(resp.into_body(), usize::MAX).await.expect("body");
    Reply { status, headers, body }
}

async fn post_json(state: &AppState, uri: &str, body: Value) -> Reply {
    call(state, Method::POST, uri, &[], body.to_string()).await
}

fn state_with(repository: Arc<ModelRepository>, limits: ServerLimits) -> AppState {
    let state = AppState::new(repository, limits);
    state.set_ready(true);
    state
}

fn tiny_state(config: ModelConfig) -> AppState {
    let repo = load_repository(&["tiny_add", "cnn"], EngineChoice::Tract, config).expect("load fixtures");
    state_with(repo, ServerLimits::default())
}

fn tiny_request(rows: usize) -> Value {
    json!({"inputs": [{"name": "x", "shape": [rows, 4], "datatype": "FP32", "data": vec![1.0_f32; rows * 4]}]})
}

#[tokio::test]
async fn health_and_readiness() {
    let repo = load_repository(&["tiny_add"], EngineChoice::Tract, ModelConfig::default()).expect("load");
    let state = AppState::new(repo, ServerLimits::default());
    assert_eq!(call(&state, Method::GET, "/v2/health/live", &[], "").await.status, StatusCode::OK);
    let not_ready = call(&state, Method::GET, "/v2/health/ready", &[], "").await;
    assert_eq!(not_ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(not_ready.headers["retry-after"], "1");
    let infer = post_json(&state, "/v2/models/tiny_add/infer", tiny_request(1)).await;
    assert_eq!(infer.status, StatusCode::SERVICE_UNAVAILABLE, "{:?}", infer.body);
    assert_eq!(
        call(&state, Method::GET, "/v2/models/tiny_add/ready", &[], "").await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    state.set_ready(true);
    assert_eq!(call(&state, Method::GET, "/v2/health/ready", &[], "").await.status, StatusCode::OK);
    assert_eq!(call(&state, Method::GET, "/v2/models/tiny_add/ready", &[], "").await.status, StatusCode::OK);
    assert_eq!(call(&state, Method::GET, "/v2/models/tiny_add/versions/1/ready", &[], "").await.status, StatusCode::OK);
    assert_eq!(
        call(&state, Method::GET, "/v2/models/tiny_add/versions/2/ready", &[], "").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(call(&state, Method::GET, "/v2/models/nope/ready", &[], "").await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn server_and_model_metadata() {
    let state = tiny_state(ModelConfig::default());
    let server = call(&state, Method::GET, "/v2", &[], "").await;
    assert_eq!(
        server.json(),
        json!({"name": "ferry", "version": env!("CARGO_PKG_VERSION"), "extensions": ["binary_tensor_data", "statistics", "model_repository"]})
    );
    let expected = json!({
        "name": "cnn", "versions": ["1"], "platform": "tract_onnx",
        "inputs": [{"name": "image", "datatype": "FP32", "shape": [-1, 1, 8, 8]}],
        "outputs": [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]}]
    });
    assert_eq!(call(&state, Method::GET, "/v2/models/cnn", &[], "").await.json(), expected);
    assert_eq!(call(&state, Method::GET, "/v2/models/cnn/versions/1", &[], "").await.json(), expected);
    let missing = call(&state, Method::GET, "/v2/models/cnn/versions/7", &[], "").await;
    assert_eq!((missing.status, missing.error()), (StatusCode::NOT_FOUND, "model \"cnn\" has no version 7".into()));
}

#[tokio::test]
async fn json_inference_matches_the_reference_and_echoes_the_id() {
    let state = tiny_state(ModelConfig::default());
    let cnn = fixture("cnn");
    let case = &cnn.cases[1];
    let input = &case.inputs[0];
    let ferry_types::TensorData::Fp32(data) = input.tensor.data() else { panic!("fp32") };
    // Nested data, no Content-Type (as tritonclient sends), an id and parameters.
    let rows: Vec<Vec<f32>> = data.chunks(64).map(<[f32]>::to_vec).collect();
    let body = json!({"id": "req-42", "parameters": {"anything": 1},
        "inputs": [{"name": "image", "shape": input.tensor.shape(), "datatype": "FP32", "data": rows}]});
    let reply = post_json(&state, "/v2/models/cnn/infer", body).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(reply.headers["content-type"], "application/json");
    let v = reply.json();
    assert_eq!(
        (v["model_name"].as_str(), v["model_version"].as_str(), v["id"].as_str()),
        (Some("cnn"), Some("1"), Some("req-42"))
    );
    let out = &v["outputs"][0];
    assert_eq!(out["shape"], json!(case.outputs[0].tensor.shape()));
    let ferry_types::TensorData::Fp32(want) = case.outputs[0].tensor.data() else { panic!("fp32") };
    let got: Vec<f64> = out["data"].as_array().expect("data").iter().map(|x| x.as_f64().expect("number")).collect();
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        assert!((g - f64::from(*w)).abs() < 1e-4, "{g} vs {w}");
    }
}

#[tokio::test]
async fn binary_inference_in_and_out() {
    let state = tiny_state(ModelConfig::default());
    let header =
        json!({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "parameters": {"binary_data_size": 16}}],
        "outputs": [{"name": "y", "parameters": {"binary_data": true}}]})
        .to_string();
    let mut body = header.clone().into_bytes();
    for x in [1.0_f32, 2.0, 3.0, -1.0] {
        body.extend_from_slice(&x.to_le_bytes());
    }
    let reply = call(
        &state,
        Method::POST,
        "/v2/models/tiny_add/infer",
        &[("inference-header-content-length", header.len().to_string())],
        body,
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    let n: usize = reply.headers["inference-header-content-length"].to_str().expect("ascii").parse().expect("length");
    let json: Value = serde_json::from_slice(&reply.body[..n]).expect("json part");
    assert_eq!(
        json["outputs"][0],
        json!({"name": "y", "datatype": "FP32", "shape": [1, 4], "parameters": {"binary_data_size": 16}})
    );
    let values: Vec<f32> =
        reply.body[n..].chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().expect("4"))).collect();
    assert_eq!(values, vec![2.0, 3.0, 4.0, 0.0]);

    // binary_data_output asks for every output in binary.
    let reply = post_json(
        &state,
        "/v2/models/tiny_add/infer",
        json!({"parameters": {"binary_data_output": true},
        "inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [0, 0, 0, 0]}]}),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.headers.contains_key("inference-header-content-length"));
}

#[tokio::test]
async fn client_mistakes_get_400_with_a_precise_message() {
    let state = tiny_state(ModelConfig { max_batch_size: Some(4), ..ModelConfig::default() });
    let uri = "/v2/models/tiny_add/infer";
    let x = |shape: Value, datatype: &str, data: Value| json!({"inputs": [{"name": "x", "shape": shape, "datatype": datatype, "data": data}]});
    let cases: Vec<(Body, &str)> = vec![
        (Body::from("{\"inputs\": [}"), "malformed request JSON"),
        (Body::from("[]"), "malformed request JSON"),
        (Body::from(x(json!([1, 4]), "FP32", json!([1, 2, 3])).to_string()), "input \"x\": shape [1, 4] holds 4 elements, but 3 were given"),
        (Body::from(x(json!([1, 3]), "FP32", json!([1, 2, 3])).to_string()), "input \"x\" has shape [1, 3] but the model expects [-1, 4] (-1 = any size)"),
        (Body::from(x(json!([4]), "FP32", json!([1, 2, 3, 4])).to_string()), "input \"x\" has shape [4] but the model expects [-1, 4] (-1 = any size)"),
        (Body::from(x(json!([1, 4]), "FP64", json!([1, 2, 3, 4])).to_string()), "input \"x\" must be FP32, got FP64"),
        (Body::from(x(json!([1, 4]), "FP32", json!([1, 2, "a", 4])).to_string()), "input \"x\": data does not match datatype FP32"),
        (Body::from(x(json!([5, 4]), "FP32", json!(vec![0; 20])).to_string()), "input \"x\" has a batch of 5, more than max_batch_size 4"),
        (Body::from(json!({"inputs": [{"name": "z", "shape": [1], "datatype": "FP32", "data": [1]}]}).to_string()), "model \"tiny_add\" has no input \"z\"; its inputs are [\"x\"]"),
        (Body::from(json!({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}], "outputs": [{"name": "w"}]}).to_string()), "model \"tiny_add\" has no output \"w\"; its outputs are [\"y\"]"),
    ];
    for (body, want) in cases {
        let reply = call(&state, Method::POST, uri, &[], body).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{want}: {:?}", reply.body);
        assert!(reply.error().starts_with(want), "got {:?}, want it to start with {want:?}", reply.error());
    }
    let missing = post_json(
        &state,
        "/v2/models/cnn/infer",
        json!({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]}),
    )
    .await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
    let bad_header = call(
        &state,
        Method::POST,
        uri,
        &[("inference-header-content-length", "ten".into())],
        tiny_request(1).to_string(),
    )
    .await;
    assert_eq!(bad_header.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad_header.error(), "Inference-Header-Content-Length must be a non-negative integer");
    // After all that the server still answers correctly.
    assert_eq!(post_json(&state, uri, tiny_request(2)).await.status, StatusCode::OK);
}

#[tokio::test]
async fn unknown_models_routes_and_methods() {
    let state = tiny_state(ModelConfig::default());
    let reply = post_json(&state, "/v2/models/nope/infer", tiny_request(1)).await;
    assert_eq!((reply.status, reply.error()), (StatusCode::NOT_FOUND, "model \"nope\" is not found".into()));
    let reply = post_json(&state, "/v2/models/tiny_add/versions/2/infer", tiny_request(1)).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    let reply = post_json(&state, "/v2/models/tiny_add/versions/latest/infer", tiny_request(1)).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    let reply = post_json(&state, "/v2/models/tiny_add/versions/1/infer", tiny_request(1)).await;
    assert_eq!(reply.status, StatusCode::OK);
    let reply = call(&state, Method::GET, "/v3/whatever", &[], "").await;
    assert_eq!((reply.status, reply.error()), (StatusCode::NOT_FOUND, "no route for GET /v3/whatever".into()));
    let reply = call(&state, Method::GET, "/v2/models/tiny_add/infer", &[], "").await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(reply.error(), "GET is not allowed on /v2/models/tiny_add/infer");
}

#[tokio::test]
async fn oversized_bodies_get_413() {
    let repo = load_repository(&["tiny_add"], EngineChoice::Tract, ModelConfig::default()).expect("load");
    let state = state_with(repo, ServerLimits { max_request_bytes: 2048, ..ServerLimits::default() });
    let big = tiny_request(200).to_string();
    assert!(big.len() > 2048);
    let reply = post_json(&state, "/v2/models/tiny_add/infer", tiny_request(200)).await;
    assert_eq!(
        (reply.status, reply.error()),
        (StatusCode::PAYLOAD_TOO_LARGE, "the request body exceeds the limit of 2048 bytes".into())
    );
    // A declared Content-Length over the limit is refused before the body is read.
    let reply =
        call(&state, Method::POST, "/v2/models/tiny_add/infer", &[("content-length", big.len().to_string())], big)
            .await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(post_json(&state, "/v2/models/tiny_add/infer", tiny_request(1)).await.status, StatusCode::OK);
}

#[tokio::test]
async fn every_datatype_round_trips_through_json_and_binary() {
    let repo = load_repository(&["identity_all_types"], EngineChoice::Onnxruntime, ModelConfig::default())
        .expect("identity_all_types needs ONNX Runtime: python3 -m pip install -r requirements.txt");
    let state = state_with(repo, ServerLimits::default());
    let case = &fixture("identity_all_types").cases[1];
    // JSON: send the reference inputs as JSON data, read JSON outputs.
    let inputs: Vec<Value> = case
        .inputs
        .iter()
        .map(|t| json!({"name": t.name, "shape": t.tensor.shape(), "datatype": t.tensor.datatype().as_str(), "data": json_data(t.tensor.data())}))
        .collect();
    let reply = post_json(&state, "/v2/models/identity_all_types/infer", json!({"inputs": inputs})).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    let v = reply.json();
    for want in &case.outputs {
        let got =
            v["outputs"].as_array().expect("outputs").iter().find(|o| o["name"] == want.name.as_str()).expect("output");
        assert_eq!(got["datatype"], want.tensor.datatype().as_str());
        assert_same_data(&got["data"], want.tensor.data(), &want.name);
    }
    // Binary: every input raw, every output raw, compared byte for byte.
    let mut header_inputs = Vec::new();
    let mut raw = Vec::new();
    for t in &case.inputs {
        let start = raw.len();
        ferry_protocol::encode_raw(t.tensor.data(), &mut raw);
        header_inputs.push(json!({"name": t.name, "shape": t.tensor.shape(), "datatype": t.tensor.datatype().as_str(),
            "parameters": {"binary_data_size": raw.len() - start}}));
    }
    let header = json!({"inputs": header_inputs, "parameters": {"binary_data_output": true}}).to_string();
    let mut body = header.clone().into_bytes();
    body.extend_from_slice(&raw);
    let reply = call(
        &state,
        Method::POST,
        "/v2/models/identity_all_types/infer",
        &[("inference-header-content-length", header.len().to_string())],
        body,
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    let n: usize = reply.headers["inference-header-content-length"].to_str().expect("ascii").parse().expect("n");
    let json: Value = serde_json::from_slice(&reply.body[..n]).expect("json");
    let mut offset = n;
    for out in json["outputs"].as_array().expect("outputs") {
        let size = out["parameters"]["binary_data_size"].as_u64().expect("size") as usize;
        let want = case.outputs.iter().find(|w| out["name"] == w.name.as_str()).expect("known output");
        let mut expected = Vec::new();
        ferry_protocol::encode_raw(want.tensor.data(), &mut expected);
        assert_eq!(&reply.body[offset..offset + size], expected.as_slice(), "{}", want.name);
        offset += size;
    }
    assert_eq!(offset, reply.body.len());
}

/// JSON numbers of float outputs are compared after rounding to the output's own precision.
fn assert_same_data(got: &Value, want: &ferry_types::TensorData, name: &str) {
    use ferry_types::TensorData as D;
    let floats = |v: &Value| -> Vec<f32> {
        v.as_array().expect("array").iter().map(|x| x.as_f64().expect("number") as f32).collect()
    };
    match want {
        D::Fp32(w) => assert_eq!(floats(got), *w, "{name}"),
        D::Fp16(w) => assert_eq!(floats(got), w.iter().map(|x| x.to_f32()).collect::<Vec<_>>(), "{name}"),
        D::Bf16(w) => assert_eq!(floats(got), w.iter().map(|x| x.to_f32()).collect::<Vec<_>>(), "{name}"),
        other => assert_eq!(*got, json_data(other), "{name}"),
    }
}

fn json_data(data: &ferry_types::TensorData) -> Value {
    use ferry_types::TensorData as D;
    match data {
        D::Bool(v) => json!(v),
        D::Uint8(v) => json!(v),
        D::Uint16(v) => json!(v),
        D::Uint32(v) => json!(v),
        D::Uint64(v) => json!(v),
        D::Int8(v) => json!(v),
        D::Int16(v) => json!(v),
        D::Int32(v) => json!(v),
        D::Int64(v) => json!(v),
        D::Fp16(v) => json!(v.iter().map(|x| x.to_f32()).collect::<Vec<_>>()),
        D::Fp32(v) => json!(v),
        D::Fp64(v) => json!(v),
        D::Bf16(v) => json!(v.iter().map(|x| x.to_f32()).collect::<Vec<_>>()),
        D::Bytes(v) => json!(v.iter().map(|b| String::from_utf8_lossy(b).into_owned()).collect::<Vec<_>>()),
    }
}

#[test]
fn every_error_kind_has_its_status() {
    use ferry_server::status_of;
    use ferry_types::ErrorKind as K;
    let table = [
        (K::NotFound, 404),
        (K::InvalidInput, 400),
        (K::PayloadTooLarge, 413),
        (K::Unauthenticated, 401),
        (K::PermissionDenied, 403),
        (K::RateLimited, 429),
        (K::Overloaded, 503),
        (K::Unavailable, 503),
        (K::Timeout, 504),
        (K::Conflict, 409),
        (K::Internal, 500),
    ];
    for (kind, status) in table {
        assert_eq!(status_of(kind).as_u16(), status, "{kind:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamic_batching_never_changes_an_answer() {
    use ferry_serving::{EngineSettings, LoadedModel, ModelSource};
    use ferry_types::{ModelName, ModelVersion};
    // The same model twice: batched (requests wait up to 20 ms for company) and alone.
    let repo = Arc::new(ModelRepository::new());
    let path = ferry_test_support::fixtures_dir().join("models/mlp_classifier.onnx");
    for (name, batching, delay) in [("batched", true, 20_000), ("alone", false, 0)] {
        let source = ModelSource {
            name: ModelName::new(name).expect("name"),
            version: ModelVersion::new(1).expect("version"),
            path: path.clone(),
            config: ModelConfig {
                engine: Some(EngineChoice::Onnxruntime),
                dynamic_batching: Some(batching),
                max_queue_delay_microseconds: Some(delay),
                ..ModelConfig::default()
            },
            bytes: None,
            expected_signature: None,
        };
        repo.insert(LoadedModel::load(&source, &ModelConfig::default(), &EngineSettings::default()).expect("load"));
    }
    let state = state_with(repo, ServerLimits::default());
    // Requests of 1 to 3 rows with distinct values, sent together.
    let bodies: Vec<Value> = (0..48)
        .map(|i| {
            let rows = 1 + i % 3;
            let data: Vec<f32> = (0..rows * 30).map(|k| ((i * 31 + k) % 17) as f32 * 0.37 - 2.0).collect();
            json!({"inputs": [{"name": "input", "shape": [rows, 30], "datatype": "FP32", "data": data}],
                   "parameters": {"binary_data_output": true}})
        })
        .collect();
    let mut tasks = Vec::new();
    for body in bodies.clone() {
        let state = state.clone();
        tasks.push(tokio::spawn(async move { post_json(&state, "/v2/models/batched/infer", body).await }));
    }
    let mut batched = Vec::new();
    for t in tasks {
        let reply = t.await.expect("task");
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
        batched.push(reply);
    }
    let split = |r: &Reply| -> (Value, Vec<u8>) {
        let n: usize = r.headers["inference-header-content-length"].to_str().expect("ascii").parse().expect("n");
        (serde_json::from_slice(&r.body[..n]).expect("json"), r.body[n..].to_vec())
    };
    for (body, got) in bodies.into_iter().zip(batched) {
        let alone = post_json(&state, "/v2/models/alone/infer", body).await;
        assert_eq!(alone.status, StatusCode::OK);
        let ((mut got_json, got_raw), (want_json, want_raw)) = (split(&got), split(&alone));
        got_json["model_name"] = json!("alone");
        assert_eq!(got_json, want_json);
        // The output tensors, bit for bit.
        assert_eq!(got_raw, want_raw);
    }
    let stats = call(&state, Method::GET, "/v2/models/batched/stats", &[], "").await.json();
    let s = &stats["model_stats"][0];
    let (inferences, executions) =
        (s["inference_count"].as_u64().expect("n"), s["execution_count"].as_u64().expect("n"));
    assert_eq!(inferences, 96, "{s}");
    assert!(executions < 48, "no batch formed: {s}");
    assert_eq!(s["inference_stats"]["success"]["count"], 48);
    assert_eq!(s["inference_stats"]["fail"]["count"], 0);
    let alone = call(&state, Method::GET, "/v2/models/alone/stats", &[], "").await.json();
    assert_eq!(alone["model_stats"][0]["execution_count"], 48);
}

#[tokio::test]
async fn over_the_concurrency_limit_requests_are_shed_but_health_answers() {
    let repo = load_repository(&["tiny_add"], EngineChoice::Tract, ModelConfig::default()).expect("load");
    let state = state_with(repo, ServerLimits { max_concurrent_requests: 1, ..ServerLimits::default() });
    let held = state.concurrency().clone().try_acquire_owned().expect("the only permit");
    let busy = call(&state, Method::POST, "/v2/models/tiny_add/infer", &[], tiny_request(1).to_string()).await;
    assert_eq!(busy.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(busy.error().contains("limit of 1 requests at once"), "{}", busy.error());
    assert_eq!(busy.headers.get("retry-after").map(|v| v.to_str().unwrap_or("")), Some("1"));
    let health = call(&state, Method::GET, "/v2/health/live", &[], Body::empty()).await;
    assert_eq!(health.status, StatusCode::OK);
    drop(held);
    let ok = call(&state, Method::POST, "/v2/models/tiny_add/infer", &[], tiny_request(1).to_string()).await;
    assert_eq!(ok.status, StatusCode::OK);
}

#[tokio::test]
async fn metrics_count_requests_by_outcome_and_time_each_phase() {
    let state = tiny_state(ModelConfig::default());
    for _ in 0..2 {
        assert_eq!(post_json(&state, "/v2/models/tiny_add/infer", tiny_request(1)).await.status, StatusCode::OK);
    }
    let bad = json!({"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]});
    assert_eq!(post_json(&state, "/v2/models/tiny_add/infer", bad).await.status, StatusCode::BAD_REQUEST);
    // Unknown models are not counted: their names would otherwise grow the label set without bound.
    post_json(&state, "/v2/models/no-such-model/infer", tiny_request(1)).await;

    let reply = call(&state, Method::GET, "/metrics", &[], Body::empty()).await;
    assert_eq!(reply.status, StatusCode::OK);
    let text = String::from_utf8_lossy(&reply.body).into_owned();
    for line in [
        r#"ferry_requests_total{model="tiny_add",version="1",protocol="http",code="200"} 2"#,
        r#"ferry_requests_total{model="tiny_add",version="1",protocol="http",code="400"} 1"#,
        r#"ferry_request_duration_seconds_count{model="tiny_add",version="1",phase="total"} 3"#,
        r#"ferry_request_duration_seconds_count{model="tiny_add",version="1",phase="queue"} 2"#,
        r#"ferry_request_duration_seconds_count{model="tiny_add",version="1",phase="compute"} 2"#,
        r#"ferry_model_loaded{model="tiny_add",version="1"} 1"#,
        r#"ferry_batch_size_count{model="tiny_add",version="1"} 2"#,
        r#"ferry_queue_depth{model="tiny_add",version="1"} 0"#,
    ] {
        assert!(text.contains(line), "missing {line} in:\n{text}");
    }
    assert!(text.contains("process_resident_memory_bytes") && text.trim_end().ends_with("# EOF"), "{text}");
    assert!(!text.contains("no-such-model"));
    assert!(text.contains(r#"le="5e-5""#) || text.contains(r#"le="0.00005""#), "buckets start at 50 µs:\n{text}");
}

/// Metric names in a PromQL expression: identifiers starting `ferry_` or `process_`.
#[tokio::test]
async fn the_grafana_dashboard_names_only_metrics_ferry_exposes() {
    let state = tiny_state(ModelConfig::default());
    assert_eq!(post_json(&state, "/v2/models/tiny_add/infer", tiny_request(1)).await.status, StatusCode::OK);
    let reply = call(&state, Method::GET, "/metrics", &[], Body::empty()).await;
    let text = String::from_utf8_lossy(&reply.body).into_owned();
    let exposed: std::collections::BTreeSet<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();

    let named = ferry_test_support::dashboard_metric_names();
    // Monitoring families need a registry, drift windows, feedback and alert rules: crates/ferry/tests/monitoring.rs
    // checks those against a full server.
    let monitoring = [
        "ferry_drift_",
        "ferry_dataset_drift",
        "ferry_model_metric",
        "ferry_model_baseline",
        "ferry_concept_drift",
        "ferry_alerts_firing",
        "ferry_feedback_",
    ];
    let missing: Vec<&String> = named
        .iter()
        .filter(|n| !monitoring.iter().any(|m| n.starts_with(m)))
        .filter(|n| !exposed.contains(n.as_str()))
        .collect();
    assert!(missing.is_empty(), "the dashboard names metrics ferry does not expose: {missing:?}\nexposed: {exposed:?}");
    // And it covers every family: traffic, latency by phase, batching, queues, loading, the process.
    for family in [
        "ferry_requests_total",
        "ferry_request_duration_seconds_bucket",
        "ferry_batch_size_sum",
        "ferry_queue_depth",
        "ferry_inflight_requests",
        "ferry_model_loaded",
        "ferry_model_load_seconds",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
    ] {
        assert!(named.contains(family), "the dashboard shows {family}");
    }
}
