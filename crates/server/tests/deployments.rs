//! Deployments in process over a real SQLite registry and real ONNX models: weighted and sticky splits, overrides,
//! pinned versions, every mistake, and no failed request while the split changes under load.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use axum::body::{Body, Bytes};
use axum::http::{Method, Request, StatusCode};
use ferry_package::{FORMAT_VERSION, Framework, Lineage, Manifest, PackageInput, write_package};
use ferry_registry::{ArtifactStore, Registry};
use ferry_server::{AppState, RegistryContext, ServerLimits, app};
use ferry_serving::ModelRepository;
use ferry_test_support::fixtures_dir;
use ferry_types::{DataType, ModelName, ModelSignature, TensorSpec};
use serde_json::{Value, json};
use tower::ServiceExt;

struct Env {
    state: AppState,
    dir: tempfile::TempDir,
    key: String,
}

async fn env() -> Env {
    env_with(None).await
}

async fn env_with(alerting: Option<Arc<ferry_server::Alerting>>) -> Env {
    let dir = tempfile::tempdir().expect("tempdir");
    let artifacts = ArtifactStore::local(&dir.path().join("artifacts"), &dir.path().join("staging")).expect("store");
    let registry = Registry::open(&Registry::sqlite_url(&dir.path().join("r.db")), artifacts).await.expect("open");
    let scopes = [ferry_auth::Scope::new("*").expect("scope")];
    let (key, _) = registry
        .create_key("test admin", ferry_auth::Role::Admin, &scopes, Default::default(), "test")
        .await
        .expect("key");
    let mut ctx = RegistryContext::new(registry, "production".into(), 1 << 30);
    ctx.alerting = alerting;
    ctx.keys.refresh(&ctx.registry).await.expect("keys");
    let state = AppState::with_registry(Arc::new(ModelRepository::new()), ServerLimits::default(), Some(ctx));
    state.set_ready(true);
    Env { state, dir, key }
}

/// Pushes versions `versions` of the tiny add-one model as `tiny` (each package distinct by its description).
async fn push(env: &Env, versions: std::ops::RangeInclusive<u64>) {
    for v in versions {
        push_model(env, "tiny_add", -1, &format!("version {v}")).await;
    }
}

/// Pushes fixture `model` (an add-one model of input `x` and output `y`, `[batch, 4]`) as a version of `tiny`.
async fn push_model(env: &Env, model: &str, batch: i64, description: &str) {
    let spec = |name: &str| TensorSpec { name: name.into(), datatype: DataType::Fp32, shape: vec![batch, 4] };
    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        name: ModelName::new("tiny").expect("name"),
        description: description.into(),
        owner: String::new(),
        tags: vec![],
        metadata: Default::default(),
        framework: Framework::default(),
        signature: ModelSignature { inputs: vec![spec("x")], outputs: vec![spec("y")] },
        created_at: "2026-01-01T00:00:00Z".into(),
        files: vec![],
        lineage: Lineage::default(),
        features: vec![],
        validation: None,
    };
    let out = env.dir.path().join(format!("{model}-{}.ferry", description.replace(' ', "-")));
    let model = fixtures_dir().join(format!("models/{model}.onnx"));
    write_package(PackageInput { manifest, model: &model, profile: None, validation: None }, &out, &|_| {})
        .expect("pack");
    let (status, body) =
        call(env, Method::POST, "/api/v1/models/tiny/versions", &[], std::fs::read(out).expect("read")).await;
    assert_eq!(status, StatusCode::CREATED, "{body:?}");
}

async fn call(
    env: &Env,
    method: Method,
    uri: &str,
    headers: &[(&str, &str)],
    body: impl Into<Body>,
) -> (StatusCode, Bytes) {
    let (status, _, bytes) = call_with_headers(env, method, uri, headers, body).await;
    (status, bytes)
}

async fn call_with_headers(
    env: &Env,
    method: Method,
    uri: &str,
    headers: &[(&str, &str)],
    body: impl Into<Body>,
) -> (StatusCode, axum::http::HeaderMap, Bytes) {
    let mut req = Request::builder().method(method).uri(uri).header("authorization", format!("Bearer {}", env.key));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = app(env.state.clone()).oneshot(req.body(body.into()).expect("request")).await.expect("infallible");
    let (status, headers) = (resp.status(), resp.headers().clone());
    (status, headers, axum::body::to_bytes(resp.into_body(), usize::MAX).await.expect("body"))
}

async fn json_call(env: &Env, method: Method, uri: &str, body: impl Into<Body>) -> (StatusCode, Value) {
    let (status, bytes) = call(env, method, uri, &[], body).await;
    (status, serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("not JSON ({e}): {bytes:?}")))
}

fn infer_body() -> String {
    json!({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1.0, 2.0, 3.0, 4.0]}]}).to_string()
}

/// One inference without a version: (the version that answered, the variant header).
async fn infer(env: &Env, headers: &[(&str, &str)]) -> (u64, String) {
    let (status, h, bytes) = call_with_headers(env, Method::POST, "/v2/models/tiny/infer", headers, infer_body()).await;
    assert_eq!(status, StatusCode::OK, "{bytes:?}");
    let body: Value = serde_json::from_slice(&bytes).expect("JSON");
    assert_eq!(body["outputs"][0]["data"], json!([2.0, 3.0, 4.0, 5.0]));
    let version = body["model_version"].as_str().and_then(|v| v.parse().ok()).expect("model_version");
    let variant = h.get("x-ferry-variant").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    (version, variant)
}

async fn deploy(env: &Env, spec: Value) -> (StatusCode, Value) {
    json_call(env, Method::PUT, "/api/v1/models/tiny/deployment", spec.to_string()).await
}

fn split(parts: &[(&str, f64)]) -> Value {
    json!({"variants": parts.iter().map(|(t, w)| json!({"target": t, "weight": w})).collect::<Vec<_>>()})
}

#[tokio::test]
async fn a_weighted_split_serves_every_variant_in_its_share_and_says_which() {
    let env = env().await;
    push(&env, 1..=3).await;
    let (status, _) =
        json_call(&env, Method::PUT, "/api/v1/models/tiny/aliases/production", json!({"version": 1}).to_string()).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) =
        json_call(&env, Method::PUT, "/api/v1/models/tiny/aliases/staging", json!({"version": 2}).to_string()).await;
    assert_eq!(status, StatusCode::OK);

    let (status, d) = deploy(&env, split(&[("production", 60.0), ("staging", 30.0), ("3", 10.0)])).await;
    assert_eq!(status, StatusCode::OK, "{d}");
    assert_eq!(d["revision"], 1);
    assert_eq!(
        d["serving"],
        json!([{"target": "production", "version": 1, "weight_bp": 6000}, {"target": "staging", "version": 2,
            "weight_bp": 3000}, {"target": "3", "version": 3, "weight_bp": 1000}])
    );
    assert_eq!(env.state.repository().versions_of("tiny"), vec![1, 2, 3]);

    let mut counts: HashMap<(u64, String), u32> = HashMap::new();
    let n = 10_000;
    for _ in 0..n {
        *counts.entry(infer(&env, &[]).await).or_default() += 1;
    }
    let share =
        |v: u64, target: &str| f64::from(counts.get(&(v, target.to_owned())).copied().unwrap_or(0)) / f64::from(n);
    assert_eq!(counts.len(), 3, "every answer names its version and variant: {counts:?}");
    for (v, target, weight) in [(1, "production", 0.6), (2, "staging", 0.3), (3, "3", 0.1)] {
        assert!((share(v, target) - weight).abs() <= 0.03, "{target}: {} vs {weight} ({counts:?})", share(v, target));
    }

    // The unversioned metadata and readiness are the primary's; a pinned version is that version.
    let (_, meta) = json_call(&env, Method::GET, "/v2/models/tiny", Body::empty()).await;
    assert_eq!(meta["versions"].as_array().map(Vec::len), Some(3), "{meta}");
    let (status, bytes) = call(&env, Method::POST, "/v2/models/tiny/versions/3/infer", &[], infer_body()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(serde_json::from_slice::<Value>(&bytes).expect("JSON")["model_version"], "3");

    // An override names a variant by target or version; an unknown one is refused with the variants listed.
    assert_eq!(infer(&env, &[("x-ferry-variant", "staging")]).await, (2, "staging".into()));
    assert_eq!(infer(&env, &[("x-ferry-variant", "v3")]).await, (3, "3".into()));
    let (status, bytes) =
        call(&env, Method::POST, "/v2/models/tiny/infer", &[("x-ferry-variant", "canary")], infer_body()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let message = String::from_utf8_lossy(&bytes);
    assert!(message.contains("production (v1), staging (v2), 3 (v3)"), "{message}");

    // Moving an alias the deployment uses moves its share; two targets on one version (a promotion) are one
    // variant with both shares.
    let (status, e) =
        json_call(&env, Method::PUT, "/api/v1/models/tiny/aliases/staging", json!({"version": 3}).to_string()).await;
    assert_eq!(status, StatusCode::OK, "{e}");
    let (_, d) = json_call(&env, Method::GET, "/api/v1/models/tiny/deployment", Body::empty()).await;
    assert_eq!(
        d["serving"],
        json!([{"target": "production", "version": 1, "weight_bp": 6000},
            {"target": "staging", "version": 3, "weight_bp": 4000}]),
        "{d}"
    );
    assert_eq!(env.state.repository().versions_of("tiny"), vec![1, 3]);
    push(&env, 4..=4).await;
    let (status, e) =
        json_call(&env, Method::PUT, "/api/v1/models/tiny/aliases/staging", json!({"version": 4}).to_string()).await;
    assert_eq!(status, StatusCode::OK, "{e}");
    let (_, d) = json_call(&env, Method::GET, "/api/v1/models/tiny/deployment", Body::empty()).await;
    assert_eq!(d["serving"][1], json!({"target": "staging", "version": 4, "weight_bp": 3000}), "{d}");
    assert_eq!(env.state.repository().versions_of("tiny"), vec![1, 3, 4]);
    assert_eq!(infer(&env, &[("x-ferry-variant", "staging")]).await, (4, "staging".into()));

    // What the deployment routes to cannot be deleted under it.
    let (status, e) = json_call(&env, Method::DELETE, "/api/v1/models/tiny/aliases/staging", Body::empty()).await;
    assert_eq!(status, StatusCode::CONFLICT, "{e}");
    let (status, e) = json_call(&env, Method::DELETE, "/api/v1/models/tiny/versions/3", Body::empty()).await;
    assert_eq!(status, StatusCode::CONFLICT, "{e}");

    // Deleting the deployment gives all traffic back to the serving alias.
    let (status, _) = call(&env, Method::DELETE, "/api/v1/models/tiny/deployment", &[], Body::empty()).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(env.state.repository().versions_of("tiny"), vec![1]);
    assert_eq!(infer(&env, &[]).await, (1, String::new()));
    let (status, _) = json_call(&env, Method::GET, "/api/v1/models/tiny/deployment", Body::empty()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Every change is an event of the model and in the audit log.
    let (_, events) = json_call(&env, Method::GET, "/api/v1/models/tiny/events", Body::empty()).await;
    let actions: Vec<&str> = events.as_array().expect("events").iter().filter_map(|e| e["action"].as_str()).collect();
    assert!(actions.contains(&"set_deployment") && actions.contains(&"delete_deployment"), "{actions:?}");
    let (_, audit) = json_call(&env, Method::GET, "/api/v1/audit", Body::empty()).await;
    let audited: Vec<&str> = audit.as_array().expect("audit").iter().filter_map(|e| e["action"].as_str()).collect();
    assert!(audited.contains(&"set_deployment") && audited.contains(&"delete_deployment"), "{audited:?}");
}

#[tokio::test]
async fn a_sticky_key_keeps_its_variant_and_a_growing_candidate_keeps_its_clients() {
    let env = env().await;
    push(&env, 1..=2).await;
    let steps = [5.0, 25.0, 50.0];
    let mut on_candidate: HashMap<String, bool> = HashMap::new();
    for candidate in steps {
        let mut spec = split(&[("1", 100.0 - candidate), ("2", candidate)]);
        spec["sticky_header"] = json!("X-User-Id");
        let (status, d) = deploy(&env, spec).await;
        assert_eq!(status, StatusCode::OK, "{d}");
        assert_eq!(d["sticky_header"], "x-user-id");
        let mut exposed = 0;
        for user in 0..400 {
            let key = format!("user-{user}");
            let (version, _) = infer(&env, &[("x-user-id", &key)]).await;
            // Again: the same answer.
            assert_eq!(infer(&env, &[("x-user-id", &key)]).await.0, version);
            if on_candidate.get(&key).copied().unwrap_or(false) {
                assert_eq!(version, 2, "{key} went back to the primary when the candidate grew to {candidate}%");
            }
            on_candidate.insert(key, version == 2);
            exposed += u32::from(version == 2);
        }
        let share = f64::from(exposed) / 400.0;
        assert!((share - candidate / 100.0).abs() < 0.08, "{share} of keys on a {candidate}% candidate");
    }
}

#[tokio::test]
async fn malformed_deployments_are_refused_precisely_and_change_nothing() {
    let env = env().await;
    push(&env, 1..=2).await;
    let (status, _) = deploy(&env, split(&[("1", 50.0), ("2", 50.0)])).await;
    assert_eq!(status, StatusCode::OK);
    for (body, status, needle) in [
        (split(&[("1", 90.0), ("2", 20.0)]).to_string(), StatusCode::BAD_REQUEST, "add up to 110%"),
        (split(&[("1", 50.0), ("staging", 50.0)]).to_string(), StatusCode::BAD_REQUEST, "no such alias"),
        (split(&[("1", 50.0), ("7", 50.0)]).to_string(), StatusCode::BAD_REQUEST, "no version 7"),
        (split(&[("1", 50.0), ("1", 50.0)]).to_string(), StatusCode::BAD_REQUEST, "named twice"),
        (split(&[]).to_string(), StatusCode::BAD_REQUEST, "at least one variant"),
        (
            json!({"variants": [{"target": "1", "weight": 100}], "sticky_header": "bad header"}).to_string(),
            StatusCode::BAD_REQUEST,
            "not a header name",
        ),
        (
            json!({"variants": [{"target": "1", "weight": 100}], "color": "red"}).to_string(),
            StatusCode::BAD_REQUEST,
            "unknown field",
        ),
        ("{not json".into(), StatusCode::BAD_REQUEST, "deployment body"),
    ] {
        let (got, bytes) = call(&env, Method::PUT, "/api/v1/models/tiny/deployment", &[], body.clone()).await;
        let message = String::from_utf8_lossy(&bytes);
        assert_eq!(got, status, "{body}: {message}");
        assert!(message.contains(needle), "{body}: {message}");
    }
    let (status, e) =
        json_call(&env, Method::PUT, "/api/v1/models/nope/deployment", split(&[("1", 100.0)]).to_string()).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{e}");
    // Nothing changed: still the first deployment, both versions served.
    let (_, d) = json_call(&env, Method::GET, "/api/v1/models/tiny/deployment", Body::empty()).await;
    assert_eq!(d["revision"], 1, "{d}");
    assert_eq!(env.state.repository().versions_of("tiny"), vec![1, 2]);
}

#[tokio::test]
async fn no_request_fails_while_the_split_changes_under_load() {
    let env = Arc::new(env().await);
    push(&env, 1..=3).await;
    let (status, _) = deploy(&env, split(&[("1", 100.0)])).await;
    assert_eq!(status, StatusCode::OK);
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut clients = Vec::new();
    for _ in 0..8 {
        let (env, stop, ok, failed) = (env.clone(), stop.clone(), ok.clone(), failed.clone());
        clients.push(tokio::spawn(async move {
            // Bounded: at most 20,000 requests per client, and the test stops them after the changes.
            for _ in 0..20_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let (status, bytes) = call(&env, Method::POST, "/v2/models/tiny/infer", &[], infer_body()).await;
                if status == StatusCode::OK {
                    ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                    eprintln!("{status}: {bytes:?}");
                }
            }
        }));
    }
    let changes = [
        split(&[("1", 90.0), ("2", 10.0)]),
        split(&[("1", 50.0), ("2", 50.0)]),
        split(&[("2", 100.0)]),
        split(&[("2", 80.0), ("3", 20.0)]),
        split(&[("3", 100.0)]),
        split(&[("1", 100.0)]),
    ];
    for spec in changes {
        let before = ok.load(Ordering::Relaxed);
        let (status, d) = deploy(&env, spec).await;
        assert_eq!(status, StatusCode::OK, "{d}");
        // Let some requests through on each split.
        for _ in 0..500 {
            if ok.load(Ordering::Relaxed) > before + 200 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.expect("client");
    }
    assert_eq!(failed.load(Ordering::Relaxed), 0);
    assert!(ok.load(Ordering::Relaxed) > 1_000, "{} requests", ok.load(Ordering::Relaxed));
    assert_eq!(env.state.repository().versions_of("tiny"), vec![1]);
}

#[tokio::test]
async fn a_shadow_gets_copies_off_the_request_path_and_its_agreement_and_errors_are_recorded() {
    let env = env().await;
    push(&env, 1..=2).await;
    // Version 3 takes exactly two rows: every one-row copy it gets fails.
    push_model(&env, "static_shape", 2, "two rows only").await;
    let mut spec = split(&[("1", 100.0)]);
    spec["shadow"] = json!({"target": "2", "percent": 100});
    let (status, d) = deploy(&env, spec).await;
    assert_eq!(status, StatusCode::OK, "{d}");
    assert_eq!(d["shadow"], json!({"target": "2", "version": 2, "share_bp": 10000}));
    assert_eq!(env.state.repository().versions_of("tiny"), vec![1, 2]);
    for _ in 0..200 {
        // The caller only ever sees the primary.
        assert_eq!(infer(&env, &[]).await, (1, "1".into()));
    }
    let shadow = wait_for_shadow(&env, 2, 200).await;
    let answered = shadow["requests"].as_u64().unwrap_or(0);
    // Copies find room unless 32 are already running: nearly all of them here.
    assert!(answered >= 150, "{shadow}");
    assert_eq!(
        (shadow["errors"].as_u64(), shadow["values_compared"].as_u64()),
        (Some(0), Some(answered * 4)),
        "{shadow}"
    );
    assert_eq!(shadow["mean_abs_diff"], 0.0, "{shadow}");
    assert!(shadow["mean_latency_seconds"].as_f64().is_some_and(|s| s > 0.0), "{shadow}");

    // A failing shadow changes no answer; its failures are counted.
    let mut spec = split(&[("1", 100.0)]);
    spec["shadow"] = json!({"target": "3", "percent": 50});
    let (status, d) = deploy(&env, spec).await;
    assert_eq!(status, StatusCode::OK, "{d}");
    for _ in 0..400 {
        assert_eq!(infer(&env, &[]).await, (1, "1".into()));
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let failed = loop {
        let (_, m) = json_call(&env, Method::GET, "/api/v1/models/tiny/monitoring", Body::empty()).await;
        let s = m["shadow"].as_array().and_then(|a| a.iter().find(|s| s["version"] == 3).cloned()).unwrap_or_default();
        let done = s["errors"].as_u64().unwrap_or(0) + s["shed"].as_u64().unwrap_or(0);
        if done >= 120 || std::time::Instant::now() > deadline {
            break s;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let errors = failed["errors"].as_u64().unwrap_or(0);
    // About half of 400 requests are copied (and a copy finding no room is shed, not sent).
    assert!((120..=280).contains(&(errors + failed["shed"].as_u64().unwrap_or(0))), "{failed}");
    assert!(errors > 0 && failed["requests"] == 0, "{failed}");

    let (_, metrics) = call(&env, Method::GET, "/metrics", &[], Body::empty()).await;
    let metrics = String::from_utf8_lossy(&metrics);
    for line in [
        format!(r#"ferry_shadow_requests_total{{model="tiny",version="2",result="ok"}} {answered}"#),
        r#"ferry_shadow_mean_abs_diff{model="tiny",version="2"} 0"#.to_owned(),
        format!(r#"ferry_shadow_requests_total{{model="tiny",version="3",result="error"}} {errors}"#),
    ] {
        assert!(metrics.contains(&line), "{line} missing from\n{metrics}");
    }
}

/// The monitoring API's record of shadow `version`, once it has answered `requests` copies (at most 20 s).
async fn wait_for_shadow(env: &Env, version: u64, requests: u64) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (_, m) = json_call(env, Method::GET, "/api/v1/models/tiny/monitoring", Body::empty()).await;
        let s = m["shadow"].as_array().and_then(|a| a.iter().find(|s| s["version"] == version).cloned());
        if let Some(s) = s.filter(|s| s["requests"].as_u64().unwrap_or(0) + s["shed"].as_u64().unwrap_or(0) >= requests)
        {
            return s;
        }
        assert!(std::time::Instant::now() < deadline, "shadow {version} never answered {requests} copies: {m}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn an_experiment_reports_its_arms_comparisons_and_a_sample_ratio_mismatch() {
    let env = env().await;
    push(&env, 1..=2).await;
    let (status, d) = deploy(&env, split(&[("1", 50.0), ("2", 50.0)])).await;
    assert_eq!(status, StatusCode::OK, "{d}");
    for _ in 0..1_000 {
        infer(&env, &[]).await;
    }
    // Requests pinned to a version are the version's, not its arm's: a probe must not tilt the comparison.
    for _ in 0..50 {
        let (status, _) = call(&env, Method::POST, "/v2/models/tiny/versions/2/infer", &[], infer_body()).await;
        assert_eq!(status, StatusCode::OK);
    }
    let (status, e) = json_call(&env, Method::GET, "/api/v1/models/tiny/experiments/current", Body::empty()).await;
    assert_eq!(status, StatusCode::OK, "{e}");
    assert_eq!(e["id"], 1);
    let arms = e["arms"].as_array().expect("arms");
    let requests: Vec<u64> = arms.iter().map(|a| a["requests"].as_u64().unwrap_or(0)).collect();
    assert_eq!(requests.iter().sum::<u64>(), 1_000, "{e}");
    assert!(arms.iter().all(|a| a["errors"] == 0 && a["latency_p99"].as_f64().is_some_and(|s| s > 0.0)), "{e}");
    let metrics: Vec<&str> =
        e["comparisons"].as_array().expect("comparisons").iter().filter_map(|c| c["metric"].as_str()).collect();
    // No error on either side: the error-rate interval is undefined and left out; latency is compared.
    assert_eq!(metrics, ["latency_ratio"], "{e}");
    assert!(e["comparisons"][0]["lower"].as_f64() < e["comparisons"][0]["upper"].as_f64(), "{e}");
    assert_eq!(
        (e["sample_ratio_mismatch"].as_bool(), e["too_few_requests"].as_bool()),
        (Some(false), Some(false)),
        "{e}"
    );

    // Traffic forced onto one arm no longer splits as the weights say: flagged.
    for _ in 0..1_000 {
        infer(&env, &[("x-ferry-variant", "2")]).await;
    }
    let (_, e) = json_call(&env, Method::GET, "/api/v1/models/tiny/experiments/1", Body::empty()).await;
    assert_eq!(e["sample_ratio_mismatch"], true, "{e}");
    assert!(e["sample_ratio_p_value"].as_f64().is_some_and(|p| p < 1e-6), "{e}");

    // Another revision starts another experiment; an old id is gone.
    let (status, _) = deploy(&env, split(&[("1", 90.0), ("2", 10.0)])).await;
    assert_eq!(status, StatusCode::OK);
    let (status, e) = json_call(&env, Method::GET, "/api/v1/models/tiny/experiments/1", Body::empty()).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{e}");
    let (_, e) = json_call(&env, Method::GET, "/api/v1/models/tiny/experiments/2", Body::empty()).await;
    assert_eq!(e["arms"][0]["requests"], 0, "counting restarts with the revision: {e}");
}

/// Sends unversioned requests until stopped (at most 200,000), counting answers by status.
fn traffic(env: &Arc<Env>, stop: &Arc<AtomicBool>) -> tokio::task::JoinHandle<HashMap<u16, u64>> {
    let (env, stop) = (env.clone(), stop.clone());
    tokio::spawn(async move {
        let mut seen: HashMap<u16, u64> = HashMap::new();
        for _ in 0..200_000 {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let (status, _) = call(&env, Method::POST, "/v2/models/tiny/infer", &[], infer_body()).await;
            *seen.entry(status.as_u16()).or_default() += 1;
        }
        seen
    })
}

/// Waits (at most 60 s, judging every 50 ms as the server's loop does) until the rollout reaches `phase`.
async fn rollout_until(env: &Arc<Env>, phase: &str) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let ctx = env.state.registry_context().expect("registry").clone();
    loop {
        ctx.rollouts.tick(&env.state).await;
        let (_, r) = json_call(env, Method::GET, "/api/v1/models/tiny/rollout", Body::empty()).await;
        if r["canary"]["phase"] == phase {
            return r;
        }
        assert!(std::time::Instant::now() < deadline, "the rollout never got {phase}: {r}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// A local webhook receiver: every POSTed body with its signature header.
async fn receiver() -> (String, Arc<parking_lot::Mutex<Vec<(String, Bytes)>>>) {
    let got: Arc<parking_lot::Mutex<Vec<(String, Bytes)>>> = Arc::default();
    let sink = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: Bytes| {
            let sink = sink.clone();
            async move {
                let signature = headers.get("x-ferry-signature").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
                let stamp = headers.get("x-ferry-timestamp").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
                sink.lock().push((format!("{stamp} {signature}"), body));
                StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_canary_promotes_itself_and_a_broken_one_rolls_itself_back() {
    let (url, notices) = receiver().await;
    let webhook = ferry_server::Webhook {
        url,
        secret: Some(b"s3cret".to_vec()),
        max_attempts: 3,
        initial_backoff: std::time::Duration::from_millis(50),
        timeout: std::time::Duration::from_secs(5),
    };
    let config = ferry_server::AlertingConfig {
        rules: vec![],
        webhooks: vec![webhook],
        evaluation_interval: std::time::Duration::from_secs(60),
    };
    let env = Arc::new(env_with(Some(ferry_server::Alerting::new(config).expect("alerting"))).await);
    push(&env, 1..=2).await;
    // Version 3 refuses the one-row requests versions 1 and 2 answer.
    push_model(&env, "static_shape", 2, "two rows only").await;
    let (status, _) =
        json_call(&env, Method::PUT, "/api/v1/models/tiny/aliases/production", json!({"version": 1}).to_string()).await;
    assert_eq!(status, StatusCode::OK);
    let stop = Arc::new(AtomicBool::new(false));
    let load = traffic(&env, &stop);
    let start = |candidate: &str| {
        // Latency is not what this test is about: a version taking a quarter of the traffic idles more between
        // requests, and waking its instance thread makes it measurably slower on a busy 2-core machine.
        json!({"candidate": candidate, "steps": [25, 50, 100], "interval": "300ms", "min_requests": 30,
            "error_tolerance": 0.02, "latency_tolerance": 3.0})
        .to_string()
    };

    let (status, r) = json_call(&env, Method::POST, "/api/v1/models/tiny/rollout", start("2")).await;
    assert_eq!(status, StatusCode::OK, "{r}");
    assert_eq!((r["primary"].as_u64(), r["candidate"].as_u64()), (Some(1), Some(2)));
    let (_, d) = json_call(&env, Method::GET, "/api/v1/models/tiny/deployment", Body::empty()).await;
    assert_eq!(d["serving"][1]["weight_bp"], 2_500, "{d}");
    let (status, e) = json_call(&env, Method::POST, "/api/v1/models/tiny/rollout", start("2")).await;
    assert_eq!(status, StatusCode::CONFLICT, "one rollout at a time: {e}");
    let (status, e) = deploy(&env, split(&[("1", 50.0), ("2", 50.0)])).await;
    assert_eq!(status, StatusCode::CONFLICT, "the rollout owns the deployment: {e}");
    let r = rollout_until(&env, "promoted").await;
    let actions: Vec<&str> =
        r["history"].as_array().expect("history").iter().filter_map(|s| s["judgement"]["action"].as_str()).collect();
    assert!(actions.starts_with(&["start"]) && actions.contains(&"advance") && actions.ends_with(&["promote"]), "{r}");
    let (_, alias) = json_call(&env, Method::GET, "/api/v1/models/tiny/aliases/production", Body::empty()).await;
    assert_eq!(alias["version"], 2, "promotion moves the serving alias");
    let (status, _) = json_call(&env, Method::GET, "/api/v1/models/tiny/deployment", Body::empty()).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "and removes the rollout's deployment");
    assert_eq!(env.state.repository().versions_of("tiny"), vec![2]);

    let (status, r) = json_call(&env, Method::POST, "/api/v1/models/tiny/rollout", start("3")).await;
    assert_eq!(status, StatusCode::OK, "{r}");
    let r = rollout_until(&env, "rolled_back").await;
    let last = &r["history"].as_array().expect("history").last().cloned().unwrap_or_default()["judgement"];
    assert_eq!(last["action"], "rollback", "{r}");
    assert!(last["reason"].as_str().is_some_and(|m| m.contains("error_rate")), "{last}");
    // Judged at the end of its first interval, not later.
    let judged = r["history"].as_array().map_or(0, |h| h.iter().filter(|s| s["actor"] == "ferry").count());
    assert_eq!(judged, 1, "{r}");
    let (_, alias) = json_call(&env, Method::GET, "/api/v1/models/tiny/aliases/production", Body::empty()).await;
    assert_eq!(alias["version"], 2, "a rollback leaves the serving alias");
    assert_eq!(env.state.repository().versions_of("tiny"), vec![2]);
    let (status, e) = json_call(&env, Method::POST, "/api/v1/models/tiny/rollout/resume", Body::empty()).await;
    assert_eq!(status, StatusCode::CONFLICT, "{e}");
    // The rollback is an alert at the webhook, signed like every notice.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let (signed, notice) = loop {
        if let Some(first) = notices.lock().first().cloned() {
            break first;
        }
        assert!(std::time::Instant::now() < deadline, "no rollback notice reached the webhook");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let n: Value = serde_json::from_slice(&notice).expect("JSON notice");
    assert_eq!(
        (n["rule"].as_str(), n["model"].as_str(), n["version"].as_u64()),
        (Some("rollout-rolled-back"), Some("tiny"), Some(3)),
        "{n}"
    );
    assert_eq!((n["status"].as_str(), n["severity"].as_str()), (Some("firing"), Some("critical")), "{n}");
    let (stamp, signature) = signed.split_once(' ').expect("timestamp and signature");
    assert_eq!(signature, ferry_server::webhook_signature(b"s3cret", stamp, &notice));

    stop.store(true, Ordering::Relaxed);
    let seen = load.await.expect("traffic");
    // The primary never failed; the refusals are the broken candidate's, during its single interval.
    assert_eq!(seen.keys().filter(|s| **s != 200 && **s != 400).count(), 0, "{seen:?}");
    let (_, events) = json_call(&env, Method::GET, "/api/v1/models/tiny/events", Body::empty()).await;
    let details: Vec<&str> = events
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["action"] == "rollout")
        .filter_map(|e| e["detail"].as_str())
        .collect();
    assert!(
        details.iter().any(|d| d.starts_with("promote")) && details.iter().any(|d| d.starts_with("rollback")),
        "{details:?}"
    );
    let (_, audit) = json_call(&env, Method::GET, "/api/v1/audit", Body::empty()).await;
    let audited: Vec<&str> = audit.as_array().expect("audit").iter().filter_map(|e| e["action"].as_str()).collect();
    assert!(audited.contains(&"rollout_rollback") && audited.contains(&"start_rollout"), "{audited:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_rollouts_started_at_once_on_two_replicas_exactly_one_wins() {
    let env = env().await;
    push(&env, 1..=3).await;
    let (status, _) =
        json_call(&env, Method::PUT, "/api/v1/models/tiny/aliases/production", json!({"version": 1}).to_string()).await;
    assert_eq!(status, StatusCode::OK);
    // A second replica: its own models and controller, the same registry.
    let registry = env.state.registry_context().expect("registry").registry.clone();
    let other = AppState::with_registry(
        Arc::new(ModelRepository::new()),
        ServerLimits::default(),
        Some(RegistryContext::new(registry, "production".into(), 1 << 30)),
    );
    let request = |candidate: &str| -> ferry_server::rollouts::StartRollout {
        serde_json::from_value(json!({"candidate": candidate, "interval": "1h"})).expect("request")
    };
    let (two, three) = (request("2"), request("3"));
    let (a, b) = tokio::join!(
        ferry_server::rollouts::start(&env.state, "tiny", &two, "replica a"),
        ferry_server::rollouts::start(&other, "tiny", &three, "replica b"),
    );
    let (won, lost) = match (a, b) {
        (Ok(w), Err(l)) | (Err(l), Ok(w)) => (w, l),
        (a, b) => panic!("exactly one start wins: {:?} / {:?}", a.map(|r| r.candidate), b.map(|r| r.candidate)),
    };
    assert_eq!(lost.kind(), ferry_types::ErrorKind::Conflict, "{}", lost.message());
    let (_, stored) = json_call(&env, Method::GET, "/api/v1/models/tiny/rollout", Body::empty()).await;
    assert_eq!(stored["candidate"].as_u64(), Some(won.candidate), "{stored}");
    assert_eq!(stored["canary"]["phase"], "progressing", "{stored}");
    // The registry's deployment (this replica may not serve it yet: the winner may be the other one).
    let (_, d) = json_call(&env, Method::GET, "/api/v1/models/tiny/deployment", Body::empty()).await;
    let targets: Vec<&str> =
        d["spec"]["variants"].as_array().expect("variants").iter().filter_map(|v| v["target"].as_str()).collect();
    assert_eq!(targets, vec!["1".to_owned(), won.candidate.to_string()], "the deployment is the winner's: {d}");
}

#[tokio::test]
async fn an_end_stored_but_not_applied_is_applied_by_the_next_tick() {
    let (env, r) = rolling_out().await;
    assert_eq!(r["applied"], false, "{r}");
    // A promotion stored, then interrupted before the alias moved and the deployment went (a crash, a failed write).
    let ctx = env.state.registry_context().expect("registry").clone();
    let mut stored = r.clone();
    stored["canary"]["phase"] = json!("promoted");
    ctx.registry.set_rollout("tiny", &stored.to_string(), "", "test").await.expect("store");
    let (status, _) = json_call(&env, Method::GET, "/api/v1/models/tiny/deployment", Body::empty()).await;
    assert_eq!(status, StatusCode::OK, "not applied yet");

    ctx.rollouts.tick(&env.state).await;
    let (_, alias) = json_call(&env, Method::GET, "/api/v1/models/tiny/aliases/production", Body::empty()).await;
    assert_eq!(alias["version"], 2, "the promotion moved the serving alias: {alias}");
    let (status, _) = json_call(&env, Method::GET, "/api/v1/models/tiny/deployment", Body::empty()).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "and removed the rollout's deployment");
    let (_, r) = json_call(&env, Method::GET, "/api/v1/models/tiny/rollout", Body::empty()).await;
    assert_eq!((r["canary"]["phase"].as_str(), r["applied"].as_bool()), (Some("promoted"), Some(true)), "{r}");
}

#[tokio::test]
async fn a_person_waits_while_another_replica_judges_the_rollout() {
    let (env, _) = rolling_out().await;
    // Another replica claims an interval, as its controller does: the state with a judging lease, over what it read.
    let registry = env.state.registry_context().expect("registry").registry.clone();
    let claim = |until_ms: i64| {
        let registry = registry.clone();
        async move {
            let (text, seen) = registry.rollout_record("tiny").await.expect("read").expect("stored");
            let mut state: Value = serde_json::from_str(&text).expect("json");
            state["judging_until_ms"] = json!(until_ms);
            assert!(registry.claim_rollout("tiny", seen, &state.to_string()).await.expect("claim").is_some());
        }
    };
    let now_ms =
        i64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis())
            .expect("ms");
    claim(now_ms + 30_000).await;
    let (status, e) = json_call(&env, Method::POST, "/api/v1/models/tiny/rollout/abort", Body::empty()).await;
    assert_eq!(status, StatusCode::CONFLICT, "an abort must not interleave with a judgement: {e}");
    let (status, _) = json_call(&env, Method::GET, "/api/v1/models/tiny/deployment", Body::empty()).await;
    assert_eq!(status, StatusCode::OK, "nothing was undone");
    // The judgement ends (its state written without the lease): the person's action goes through.
    claim(0).await;
    let (status, r) = json_call(&env, Method::POST, "/api/v1/models/tiny/rollout/abort", Body::empty()).await;
    assert_eq!(status, StatusCode::OK, "{r}");
    assert_eq!((r["canary"]["phase"].as_str(), r["applied"].as_bool()), (Some("rolled_back"), Some(true)), "{r}");
    let (status, _) = json_call(&env, Method::GET, "/api/v1/models/tiny/deployment", Body::empty()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

/// Versions 1 (serving) and 2 of `tiny`, and a rollout of 2 whose first judgement is an hour away.
async fn rolling_out() -> (Env, Value) {
    let env = env().await;
    push(&env, 1..=2).await;
    let (status, _) =
        json_call(&env, Method::PUT, "/api/v1/models/tiny/aliases/production", json!({"version": 1}).to_string()).await;
    assert_eq!(status, StatusCode::OK);
    let start = json!({"candidate": "2", "interval": "1h"}).to_string();
    let (status, r) = json_call(&env, Method::POST, "/api/v1/models/tiny/rollout", start).await;
    assert_eq!(status, StatusCode::OK, "{r}");
    (env, r)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_is_judged_on_every_replicas_requests() {
    let env = env().await;
    push(&env, 1..=2).await;
    let (status, _) =
        json_call(&env, Method::PUT, "/api/v1/models/tiny/aliases/production", json!({"version": 1}).to_string()).await;
    assert_eq!(status, StatusCode::OK);
    // A second replica on the same registry.
    let ctx = env.state.registry_context().expect("registry").clone();
    let other_ctx = RegistryContext::new(ctx.registry.clone(), "production".into(), 1 << 30);
    other_ctx.keys.refresh(&other_ctx.registry).await.expect("keys");
    let other = AppState::with_registry(Arc::new(ModelRepository::new()), ServerLimits::default(), Some(other_ctx));
    other.set_ready(true);
    let other = Env { state: other, dir: tempfile::tempdir().expect("tempdir"), key: env.key.clone() };
    // Each arm needs 70 requests; each replica gets 100 at 50/50, so only the fleet's sum has enough. Tolerances wide
    // enough that a healthy candidate with enough requests passes at once.
    let start = json!({"candidate": "2", "interval": "1h", "steps": [50, 100], "min_requests": 70,
                       "error_tolerance": 0.1, "latency_tolerance": 10.0})
    .to_string();
    let (status, r) = json_call(&env, Method::POST, "/api/v1/models/tiny/rollout", start).await;
    assert_eq!(status, StatusCode::OK, "{r}");
    let other_ctx = other.state.registry_context().expect("registry").clone();
    other_ctx.sync_model(&other.state, "tiny").await.expect("the other replica follows the deployment");
    let mut per_replica = [HashMap::<u64, u64>::new(), HashMap::new()];
    for (replica, counts) in [&env, &other].into_iter().zip(&mut per_replica) {
        for _ in 0..100 {
            *counts.entry(infer(replica, &[]).await.0).or_default() += 1;
        }
    }
    for counts in &per_replica {
        assert!(counts.values().all(|&n| n < 70), "one replica alone has too few for an arm: {per_replica:?}");
    }
    // The other replica publishes its counts (its rollout is not due yet), then this one judges.
    other_ctx.rollouts.tick(&other.state).await;
    let (text, _) = ctx.registry.rollout_record("tiny").await.expect("read").expect("stored");
    let mut due: Value = serde_json::from_str(&text).expect("json");
    due["next_judgement_ms"] = json!(0);
    ctx.registry.set_rollout("tiny", &due.to_string(), "", "test").await.expect("store");
    ctx.rollouts.tick(&env.state).await;

    let (_, r) = json_call(&env, Method::GET, "/api/v1/models/tiny/rollout", Body::empty()).await;
    let judged = r["history"].as_array().and_then(|h| h.last()).expect("a judgement").clone();
    assert_eq!(judged["judgement"]["action"], "promote", "judged on both replicas' 200 requests: {judged}");
    let latency = &judged["judgement"]["metrics"][1];
    assert_eq!(latency["metric"], "log_latency");
    assert!(latency["comparison"].is_object(), "both arms had enough requests over the fleet: {latency}");
    assert_eq!(r["canary"]["phase"], "promoted", "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_experiment_reports_every_replicas_requests() {
    let env = env().await;
    push(&env, 1..=2).await;
    let (status, d) = deploy(&env, split(&[("1", 50.0), ("2", 50.0)])).await;
    assert_eq!(status, StatusCode::OK, "{d}");
    // A second replica on the same registry, following the deployment.
    let ctx = env.state.registry_context().expect("registry").clone();
    let other_ctx = RegistryContext::new(ctx.registry.clone(), "production".into(), 1 << 30);
    other_ctx.keys.refresh(&other_ctx.registry).await.expect("keys");
    let other = AppState::with_registry(Arc::new(ModelRepository::new()), ServerLimits::default(), Some(other_ctx));
    other.set_ready(true);
    let other = Env { state: other, dir: tempfile::tempdir().expect("tempdir"), key: env.key.clone() };
    let other_ctx = other.state.registry_context().expect("registry").clone();
    other_ctx.sync_model(&other.state, "tiny").await.expect("the other replica follows the deployment");
    for (replica, n) in [(&env, 60), (&other, 140)] {
        for _ in 0..n {
            infer(replica, &[]).await;
        }
    }
    // The other replica publishes its counts on its tick; the one asked adds its own as they are now.
    other_ctx.rollouts.tick(&other.state).await;
    let (status, r) = json_call(&env, Method::GET, "/api/v1/models/tiny/experiments/current", Body::empty()).await;
    assert_eq!(status, StatusCode::OK, "{r}");
    assert_eq!(r["replicas"], 2, "{r}");
    let arms = r["arms"].as_array().expect("arms");
    let requests: Vec<u64> = arms.iter().map(|a| a["requests"].as_u64().expect("requests")).collect();
    assert_eq!(requests.iter().sum::<u64>(), 200, "both replicas' requests: {r}");
    // Asked on the other replica once this one has published on its tick: the same sums.
    ctx.rollouts.tick(&env.state).await;
    let (_, again) = json_call(&other, Method::GET, "/api/v1/models/tiny/experiments/current", Body::empty()).await;
    let same: Vec<u64> =
        again["arms"].as_array().expect("arms").iter().map(|a| a["requests"].as_u64().unwrap_or(0)).collect();
    assert_eq!(same, requests, "{again}");
    assert_eq!(again["replicas"], 2, "{again}");
}
