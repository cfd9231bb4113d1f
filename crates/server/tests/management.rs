//! The management API in process (`app(state).oneshot`) over a real SQLite registry: every resource and every
//! client mistake, and the committed OpenAPI document.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{Method, Request, StatusCode};
use ferry_package::{FORMAT_VERSION, Framework, Lineage, Manifest, PackageInput, write_package};
use ferry_registry::{ArtifactStore, Registry};
use ferry_server::{AppState, ManagementApi, RegistryContext, ServerLimits, app};
use ferry_serving::ModelRepository;
use ferry_test_support::{fixtures_dir, repo_root};
use ferry_types::{DataType, ModelName, ModelSignature, TensorSpec};
use serde_json::{Value, json};
use tower::ServiceExt;
use utoipa::OpenApi;

struct Env {
    state: AppState,
    dir: tempfile::TempDir,
    key: String,
}

async fn env(max_package_bytes: u64) -> Env {
    let dir = tempfile::tempdir().expect("tempdir");
    let artifacts = ArtifactStore::local(&dir.path().join("artifacts"), &dir.path().join("staging")).expect("store");
    let registry = Registry::open(&Registry::sqlite_url(&dir.path().join("r.db")), artifacts).await.expect("open");
    let scopes = [ferry_auth::Scope::new("*").expect("scope")];
    let (key, _) = registry
        .create_key("test admin", ferry_auth::Role::Admin, &scopes, Default::default(), "test")
        .await
        .expect("key");
    let ctx = RegistryContext::new(registry, "production".into(), max_package_bytes);
    ctx.keys.refresh(&ctx.registry).await.expect("keys");
    let state = AppState::with_registry(Arc::new(ModelRepository::new()), ServerLimits::default(), Some(ctx));
    state.set_ready(true);
    Env { state, dir, key }
}

fn tiny_signature() -> ModelSignature {
    let spec = |name: &str| TensorSpec { name: name.into(), datatype: DataType::Fp32, shape: vec![-1, 4] };
    ModelSignature { inputs: vec![spec("x")], outputs: vec![spec("y")] }
}

fn package(env: &Env, name: &str, description: &str, signature: ModelSignature) -> Bytes {
    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        name: ModelName::new(name).expect("name"),
        description: description.into(),
        owner: String::new(),
        tags: vec![],
        metadata: Default::default(),
        framework: Framework::default(),
        signature,
        created_at: "2026-01-01T00:00:00Z".into(),
        files: vec![],
        lineage: Lineage::default(),
        features: vec![],
        validation: None,
    };
    let out = env.dir.path().join(format!("{name}-{description}.ferry"));
    let model = fixtures_dir().join("models/tiny_add.onnx");
    write_package(PackageInput { manifest, model: &model, profile: None, validation: None }, &out, &|_| {})
        .expect("pack");
    Bytes::from(std::fs::read(out).expect("read"))
}

async fn call(env: &Env, method: Method, uri: &str, body: impl Into<Body>) -> (StatusCode, Bytes) {
    let req = Request::builder().method(method).uri(uri).header("authorization", format!("Bearer {}", env.key));
    let resp = app(env.state.clone()).oneshot(req.body(body.into()).expect("request")).await.expect("infallible");
    let status = resp.status();
    (status, axum::body::to_bytes(resp.into_body(), usize::MAX).await.expect("body"))
}

async fn json_call(env: &Env, method: Method, uri: &str, body: impl Into<Body>) -> (StatusCode, Value) {
    let (status, bytes) = call(env, method, uri, body).await;
    (status, serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("not JSON ({e}): {bytes:?}")))
}

#[tokio::test]
async fn versions_aliases_and_downloads() {
    let env = env(1 << 30).await;
    let v1 = package(&env, "tiny", "a", tiny_signature());
    let (status, record) = json_call(&env, Method::POST, "/api/v1/models/tiny/versions", v1.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{record}");
    let admin_id = ferry_auth::key_id(&ferry_auth::hash_key(&env.key));
    assert_eq!((record["version"].as_u64(), record["created_by"].as_str()), (Some(1), Some(admin_id.as_str())));
    let v2 = package(&env, "tiny", "b", tiny_signature());
    let (status, _) = json_call(&env, Method::POST, "/api/v1/models/tiny/versions", v2).await;
    assert_eq!(status, StatusCode::CREATED);

    let (status, models) = json_call(&env, Method::GET, "/api/v1/models", Body::empty()).await;
    assert_eq!(
        (status, models[0]["name"].as_str(), models[0]["latest_version"].as_u64()),
        (StatusCode::OK, Some("tiny"), Some(2))
    );
    let (_, versions) = json_call(&env, Method::GET, "/api/v1/models/tiny/versions", Body::empty()).await;
    assert_eq!(versions.as_array().map(Vec::len), Some(2));
    let (_, v) = json_call(&env, Method::GET, "/api/v1/models/tiny/versions/1", Body::empty()).await;
    assert_eq!(v["manifest"]["description"], "a");

    // Serving alias: the version loads and serves.
    let (status, alias) =
        json_call(&env, Method::PUT, "/api/v1/models/tiny/aliases/production", json!({"version": 2}).to_string()).await;
    assert_eq!(status, StatusCode::OK, "{alias}");
    assert_eq!(env.state.repository().versions_of("tiny"), vec![2]);
    let (status, _) = call(&env, Method::GET, "/v2/models/tiny/versions/2/ready", Body::empty()).await;
    assert_eq!(status, StatusCode::OK);
    let (_, resolved) = json_call(&env, Method::GET, "/api/v1/models/tiny/aliases/production", Body::empty()).await;
    assert_eq!(resolved["version"], 2);
    let (_, list) = json_call(&env, Method::GET, "/api/v1/models/tiny/aliases", Body::empty()).await;
    assert_eq!(list, json!([{"alias": "production", "version": 2}]));

    // The repository extension sees registry versions.
    let (_, index) = json_call(&env, Method::POST, "/v2/repository/index", Body::empty()).await;
    assert_eq!(index[0]["state"], "UNAVAILABLE");
    assert_eq!(index[1]["state"], "READY");

    let (status, bytes) = call(&env, Method::GET, "/api/v1/models/tiny/versions/1/package", Body::empty()).await;
    assert_eq!((status, bytes), (StatusCode::OK, v1));

    // Conflicts.
    let (status, e) = json_call(&env, Method::DELETE, "/api/v1/models/tiny/versions/2", Body::empty()).await;
    assert_eq!(status, StatusCode::CONFLICT, "{e}");
    let body = json!({"version": 1, "if_version": 1}).to_string();
    let (status, e) = json_call(&env, Method::PUT, "/api/v1/models/tiny/aliases/production", body).await;
    assert_eq!(status, StatusCode::CONFLICT, "{e}");
    let (status, _) = call(&env, Method::DELETE, "/api/v1/models/tiny/versions/1", Body::empty()).await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    // Deleting the serving alias unloads the model; deleting the model removes the rest.
    let (status, _) = call(&env, Method::DELETE, "/api/v1/models/tiny/aliases/production", Body::empty()).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(env.state.repository().versions_of("tiny").is_empty());
    let (status, _) = call(&env, Method::DELETE, "/api/v1/models/tiny", Body::empty()).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = json_call(&env, Method::GET, "/api/v1/models/tiny", Body::empty()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn every_mistake_has_its_status_and_message() {
    let env = env(50_000).await;
    let good = package(&env, "tiny", "a", tiny_signature());
    let cases: Vec<(Method, &str, Body, StatusCode, &str)> = vec![
        (Method::GET, "/api/v1/models/nope", Body::empty(), StatusCode::NOT_FOUND, "not in the registry"),
        (Method::GET, "/api/v1/models/a%2F..%2Fb", Body::empty(), StatusCode::BAD_REQUEST, "not allowed"),
        (Method::GET, "/api/v1/models/tiny/versions/zero", Body::empty(), StatusCode::BAD_REQUEST, "positive integer"),
        (
            Method::POST,
            "/api/v1/models/other/versions",
            Body::from(good.clone()),
            StatusCode::BAD_REQUEST,
            "uploaded as",
        ),
        (
            Method::POST,
            "/api/v1/models/tiny/versions",
            Body::from("not a package"),
            StatusCode::BAD_REQUEST,
            "not a valid",
        ),
        (
            Method::POST,
            "/api/v1/models/tiny/versions",
            Body::from(vec![0u8; 60_000]),
            StatusCode::PAYLOAD_TOO_LARGE,
            "limit",
        ),
        (
            Method::POST,
            "/api/v1/models/tiny/versions",
            Body::from(good.slice(..good.len() - 1500)),
            StatusCode::BAD_REQUEST,
            "truncated",
        ),
        (
            Method::PUT,
            "/api/v1/models/tiny/aliases/production",
            Body::from("{"),
            StatusCode::BAD_REQUEST,
            "alias request body",
        ),
        (
            Method::PUT,
            "/api/v1/models/tiny/aliases/production",
            Body::from(r#"{"version": 1, "x": 2}"#),
            StatusCode::BAD_REQUEST,
            "unknown field",
        ),
    ];
    for (method, uri, body, want, text) in cases {
        let (status, bytes) = call(&env, method.clone(), uri, body).await;
        let message = String::from_utf8_lossy(&bytes);
        assert_eq!(status, want, "{method} {uri}: {message}");
        assert!(message.contains(text), "{method} {uri}: {message:?} should mention {text:?}");
    }
    // Loading a model nobody has is a 404, not a silent success.
    let (status, bytes) = call(&env, Method::POST, "/v2/repository/models/typo/load", Body::empty()).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{}", String::from_utf8_lossy(&bytes));
    // A streamed body over the limit (no Content-Length) is cut off too.
    let chunks = futures::stream::iter((0..100).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![0u8; 1000]))));
    let (status, _) = call(&env, Method::POST, "/api/v1/models/tiny/versions", Body::from_stream(chunks)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);

    // A manifest that lies about the model: refused at upload.
    let mut lie = tiny_signature();
    lie.outputs[0].datatype = DataType::Int64;
    let lying = package(&env, "tiny", "lie", lie);
    let (status, bytes) = call(&env, Method::POST, "/api/v1/models/tiny/versions", lying).await;
    let message = String::from_utf8_lossy(&bytes);
    assert_eq!(status, StatusCode::BAD_REQUEST, "{message}");
    assert!(message.contains("does not describe the model") && message.contains("INT64"), "{message}");

    // Nothing of the above registered anything or left files behind.
    let (_, models) = json_call(&env, Method::GET, "/api/v1/models", Body::empty()).await;
    assert_eq!(models, json!([]));
    assert_eq!(std::fs::read_dir(env.dir.path().join("staging")).expect("staging").count(), 0);
    let (status, _) = call(&env, Method::POST, "/api/v1/models/tiny/versions", good.clone()).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, e) = json_call(&env, Method::POST, "/api/v1/models/tiny/versions", good).await;
    assert_eq!(status, StatusCode::CONFLICT, "{e}");
    let body = json!({"version": 7}).to_string();
    let (status, _) = json_call(&env, Method::PUT, "/api/v1/models/tiny/aliases/staging", body).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn the_openapi_document_is_served_and_committed() {
    let env = env(1 << 20).await;
    let (status, served) = json_call(&env, Method::GET, "/api/v1/openapi.json", Body::empty()).await;
    assert_eq!(status, StatusCode::OK);
    let generated: Value = serde_json::to_value(ManagementApi::openapi()).expect("openapi");
    assert_eq!(served, generated);
    let path = repo_root().join("docs/openapi.json");
    if std::env::var_os("FERRY_UPDATE_OPENAPI").is_some() {
        let text = ManagementApi::openapi().to_pretty_json().expect("json");
        std::fs::write(&path, text + "\n").expect("write docs/openapi.json");
    }
    let committed: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("docs/openapi.json")).expect("committed JSON");
    assert!(
        committed == generated,
        "docs/openapi.json is out of date: regenerate with FERRY_UPDATE_OPENAPI=1 cargo test -p ferry-server --test management"
    );
    for path in ["/api/v1/models", "/api/v1/models/{name}/versions", "/api/v1/models/{name}/aliases/{alias}"] {
        assert!(generated["paths"][path].is_object(), "{path} documented");
    }
}

#[tokio::test]
async fn keys_roles_scopes_and_the_audit_chain() {
    let env = env(1 << 20).await;
    let send = |key: Option<String>, method: Method, uri: &str, body: String| {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(k) = key {
            req = req.header("authorization", format!("Bearer {k}"));
        }
        let req = req.body(Body::from(body)).expect("request");
        let app = app(env.state.clone());
        async move {
            let resp = app.oneshot(req).await.expect("call");
            let status = resp.status();
            let body = axum::body::to_bytes(resp.into_body(), usize::MAX).await.expect("body");
            (status, String::from_utf8_lossy(&body).into_owned())
        }
    };
    // Nothing but health without a key; 401 says how to authenticate.
    for uri in ["/api/v1/models", "/v2", "/v2/models/tiny", "/api/v1/keys"] {
        let (status, body) = send(None, Method::GET, uri, String::new()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{uri}: {body}");
        assert!(body.contains("Authorization: Bearer"), "{body}");
    }
    assert_eq!(send(None, Method::GET, "/v2/health/live", String::new()).await.0, StatusCode::OK);
    let (status, _) =
        send(Some("fry_not_a_key_at_all_0000000000000000".into()), Method::GET, "/api/v1/models", String::new()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Keys per role and scope.
    let make = |role: &str, scopes: serde_json::Value| {
        let body = json!({"name": role, "role": role, "scopes": scopes}).to_string();
        let send = &send;
        let admin = env.key.clone();
        async move {
            let (status, body) = send(Some(admin), Method::POST, "/api/v1/keys", body).await;
            assert_eq!(status, StatusCode::CREATED, "{body}");
            let v: Value = serde_json::from_str(&body).expect("json");
            (v["key"].as_str().expect("key").to_owned(), v["info"]["id"].as_str().expect("id").to_owned())
        }
    };
    let (viewer, _) = make("viewer", json!(["*"])).await;
    // An admin scoped to some models cannot mint keys (it could otherwise give itself every model).
    let (scoped_admin, _) = make("admin", json!(["fraud-*"])).await;
    let body = json!({"name": "escalate", "role": "admin"}).to_string();
    let (status, text) = send(Some(scoped_admin), Method::POST, "/api/v1/keys", body).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{text}");
    let (predictor, _) = make("predictor", json!(["*"])).await;
    let (deployer, deployer_id) = make("deployer", json!(["fraud-*"])).await;
    assert_eq!(send(Some(viewer.clone()), Method::GET, "/api/v1/models", String::new()).await.0, StatusCode::OK);
    let pkg = package(&env, "tiny", "a", tiny_signature());
    let upload = |key: String, name: &'static str| {
        let req = Request::builder()
            .method(Method::POST)
            .uri(format!("/api/v1/models/{name}/versions"))
            .header("authorization", format!("Bearer {key}"))
            .body(Body::from(pkg.clone()))
            .expect("request");
        let app = app(env.state.clone());
        async move { app.oneshot(req).await.expect("call").status() }
    };
    assert_eq!(upload(viewer.clone(), "tiny").await, StatusCode::FORBIDDEN, "viewers cannot push");
    assert_eq!(upload(predictor.clone(), "tiny").await, StatusCode::FORBIDDEN, "predictors cannot push");
    let (status, body) = send(Some(deployer.clone()), Method::DELETE, "/api/v1/models/tiny", String::new()).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "out of scope");
    assert!(body.contains("not scoped"), "{body}");
    assert_eq!(send(Some(deployer.clone()), Method::GET, "/api/v1/keys", String::new()).await.0, StatusCode::FORBIDDEN);

    // Revocation is effective at once.
    let (status, _) =
        send(Some(env.key.clone()), Method::DELETE, &format!("/api/v1/keys/{deployer_id}"), String::new()).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(send(Some(deployer), Method::GET, "/api/v1/models", String::new()).await.0, StatusCode::UNAUTHORIZED);

    // Everything above is in the audit chain, and it verifies.
    let (status, body) = send(Some(env.key.clone()), Method::GET, "/api/v1/audit", String::new()).await;
    assert_eq!(status, StatusCode::OK);
    let records: Vec<Value> = serde_json::from_str(&body).expect("json");
    let actions: Vec<&str> = records.iter().filter_map(|r| r["action"].as_str()).collect();
    let scope_refusal = records.iter().any(|r| {
        r["action"] == "auth_failure"
            && r["target"] == "model/tiny"
            && r["outcome"].as_str().is_some_and(|o| o.contains("scopes"))
    });
    assert!(scope_refusal, "the out-of-scope delete is audited: {records:?}");
    for want in ["create_key", "auth_failure", "revoke_key"] {
        assert!(actions.contains(&want), "{want} in {actions:?}");
    }
    // Reads are key uses too: this very listing is recorded, with the key that made it.
    let read = records.iter().find(|r| r["action"] == "read" && r["target"] == "/api/v1/audit").expect("read audited");
    assert_eq!(read["outcome"], "allowed");
    assert!(read["actor"].as_str().is_some_and(|a| !a.is_empty() && a != "unauthenticated"), "{read}");
    let (_, verdict) = send(Some(env.key.clone()), Method::GET, "/api/v1/audit/verify", String::new()).await;
    assert!(verdict.contains(r#""intact":true"#), "{verdict}");
}
