//! End-to-end security of the real binary: nothing but health without a key, the first admin key printed once,
//! keys by role through the CLI, revocation, and an audit chain that catches tampering done directly in the
//! database.

use std::path::Path;
use std::process::{Command, Output};

use ferry_registry::Registry;
use ferry_test_support::{FerryProcess, http_request, http_request_as, repo_root};

fn ferry() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_ferry"))
}

fn cli(dir: &Path, server: &FerryProcess, key: &str, args: &[&str]) -> Output {
    Command::new(ferry())
        .args(args)
        .current_dir(dir)
        .env("FERRY_SERVER", &server.base_url)
        .env("FERRY_API_KEY", key)
        .output()
        .expect("run ferry")
}

fn stdout_of(out: &Output) -> String {
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

const INFER: &[u8] = br#"{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[5.1,3.5,1.4,0.2]}]}"#;

#[test]
fn a_fresh_server_prints_its_first_admin_key_once_and_opens_nothing_but_health() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let repo = repo_root().join("examples/models");
    let repo = repo.to_str().expect("utf8");
    // No FERRY_ADMIN_KEY: a key is generated and printed to stderr once.
    let mut child = Command::new(ferry())
        .args(["serve", "--model-repository", repo, "--host", "127.0.0.1", "--http-port", "0", "--grpc-port", "0"])
        .current_dir(d)
        .env_remove("FERRY_ADMIN_KEY")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stderr = std::io::BufReader::new(child.stderr.take().expect("stderr"));
    let mut admin = None;
    for _ in 0..200 {
        let mut line = String::new();
        if std::io::BufRead::read_line(&mut stderr, &mut line).expect("read") == 0 {
            break;
        }
        if let Some(k) = line.trim().strip_prefix("fry_") {
            admin = Some(format!("fry_{k}"));
            break;
        }
    }
    drop(child.kill());
    drop(child.wait());
    let admin = admin.expect("the first admin key is printed");
    assert_eq!(admin.len(), 68);

    // The second start finds it stored (as a hash) and prints nothing.
    let server =
        FerryProcess::start_in(ferry(), d, &["--model-repository", repo], &[("FERRY_ADMIN_KEY", "")]).expect("restart");
    for path in ["/v2/health/live", "/v2/health/ready"] {
        assert_eq!(http_request(&server.addr, "GET", path, None).expect("health").0, 200, "{path}");
    }
    for (method, path) in [
        ("GET", "/v2"),
        ("GET", "/v2/models/iris"),
        ("POST", "/v2/models/iris/infer"),
        ("GET", "/v2/models/stats"),
        ("GET", "/metrics"),
        ("POST", "/v2/repository/index"),
        ("GET", "/api/v1/models"),
        ("GET", "/api/v1/keys"),
        ("GET", "/api/v1/openapi.json"),
    ] {
        let (status, body) = http_request(&server.addr, method, path, Some(INFER)).expect("call");
        assert_eq!(status, 401, "{method} {path}: {body}");
    }
    let (status, _) =
        http_request_as(&server.addr, Some(&admin), "POST", "/v2/models/iris/infer", Some(INFER)).expect("infer");
    assert_eq!(status, 200, "the printed key works");

    // Keys by role from the CLI.
    let predictor = stdout_of(&cli(d, &server, &admin, &["keys", "create", "--name", "app", "--role", "predictor"]));
    let predictor = predictor.trim();
    let viewer = stdout_of(&cli(d, &server, &admin, &["keys", "create", "--name", "dash", "--role", "viewer"]));
    let viewer = viewer.trim();
    assert_eq!(
        http_request_as(&server.addr, Some(predictor), "POST", "/v2/models/iris/infer", Some(INFER)).expect("infer").0,
        200
    );
    assert_eq!(http_request_as(&server.addr, Some(predictor), "GET", "/api/v1/models", None).expect("models").0, 403);
    assert_eq!(
        http_request_as(&server.addr, Some(viewer), "POST", "/v2/models/iris/infer", Some(INFER)).expect("infer").0,
        403
    );
    let denied = cli(d, &server, viewer, &["keys", "list"]);
    assert!(!denied.status.success() && String::from_utf8_lossy(&denied.stderr).contains("HTTP 403"));
    let listed = stdout_of(&cli(d, &server, &admin, &["keys", "list"]));
    assert!(listed.contains("predictor") && listed.contains("viewer") && !listed.contains(predictor), "{listed}");

    // Per-key quota and rate: the fourth request of a 3-a-day key and the second of a 1-per-second key get 429.
    let quota = stdout_of(&cli(
        d,
        &server,
        &admin,
        &["keys", "create", "--name", "q", "--role", "predictor", "--daily-quota", "3"],
    ));
    let statuses: Vec<u16> = (0..4)
        .map(|_| {
            http_request_as(&server.addr, Some(quota.trim()), "POST", "/v2/models/iris/infer", Some(INFER))
                .expect("infer")
                .0
        })
        .collect();
    assert_eq!(statuses, [200, 200, 200, 429]);
    let slow =
        stdout_of(&cli(d, &server, &admin, &["keys", "create", "--name", "r", "--role", "predictor", "--rate", "1"]));
    let first =
        http_request_as(&server.addr, Some(slow.trim()), "POST", "/v2/models/iris/infer", Some(INFER)).expect("infer");
    let (status, body) =
        http_request_as(&server.addr, Some(slow.trim()), "POST", "/v2/models/iris/infer", Some(INFER)).expect("infer");
    assert_eq!((first.0, status), (200, 429), "{body}");
    assert!(body.contains("rate limit of 1 requests per second"), "{body}");

    // Revocation is effective at once.
    let id = ferry_auth::key_id(&ferry_auth::hash_key(predictor));
    stdout_of(&cli(d, &server, &admin, &["keys", "revoke", &id]));
    assert_eq!(
        http_request_as(&server.addr, Some(predictor), "POST", "/v2/models/iris/infer", Some(INFER)).expect("infer").0,
        401
    );

    // The audit chain verifies, then catches an edit made directly in the database.
    let verified = stdout_of(&cli(d, &server, &admin, &["audit", "verify"]));
    assert!(verified.contains("intact"), "{verified}");
    let audit = stdout_of(&cli(d, &server, &admin, &["audit", "list"]));
    assert!(audit.contains("create_key") && audit.contains("revoke_key") && audit.contains("auth_failure"), "{audit}");
    let url = Registry::sqlite_url(&d.join("ferry-data/registry.db"));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let edited = rt
        .block_on(ferry_registry::testing::execute_raw(&url, "UPDATE audit SET actor = 'someone-else' WHERE seq = 2"))
        .expect("tamper");
    assert_eq!(edited, 1);
    let broken = cli(d, &server, &admin, &["audit", "verify"]);
    assert!(!broken.status.success());
    let err = String::from_utf8_lossy(&broken.stderr);
    assert!(err.contains("audit record 2") && err.contains("changed"), "{err}");
}

#[test]
fn a_server_that_requires_signatures_takes_only_packages_signed_by_a_trusted_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let run = |args: &[&str]| {
        let out = Command::new(ferry()).args(args).current_dir(d).output().expect("run ferry");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
        )
    };
    assert!(run(&["keygen", "-o", "trusted"]).0);
    assert!(run(&["keygen", "-o", "other"]).0);
    assert!(!run(&["keygen", "-o", "trusted"]).0, "an existing key is never overwritten");
    let model = repo_root().join("examples/models/iris/1/model.onnx");
    let model = model.to_str().expect("utf8");
    for (out, desc) in [("unsigned.ferry", "u"), ("good.ferry", "g"), ("other.ferry", "o")] {
        assert!(run(&["pack", model, "--name", "iris", "--description", desc, "-o", out]).0);
    }
    assert!(run(&["sign", "good.ferry", "--key", "trusted.key"]).0);
    assert!(run(&["sign", "other.ferry", "--key", "other.key"]).0);
    let (ok, text) = run(&["verify", "good.ferry", "--trusted-key", "trusted.pub"]);
    assert!(ok && text.contains("signed by trusted key"), "{text}");
    let (ok, text) = run(&["verify", "other.ferry", "--trusted-key", "trusted.pub"]);
    assert!(!ok && text.contains("not a trusted key"), "{text}");

    std::fs::write(d.join("ferry.toml"), "trusted_signers = [\"trusted.pub\"]\nrequire_signature = true\n")
        .expect("toml");
    let server = FerryProcess::start_in(ferry(), d, &[], &[]).expect("serve");
    let admin = ferry_test_support::TEST_ADMIN_KEY;
    let push = |pkg: &str| {
        let out = cli(d, &server, admin, &["push", pkg]);
        (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (ok, err) = push("unsigned.ferry");
    assert!(!ok && err.contains("not signed") && err.contains("HTTP 400"), "{err}");
    let (ok, err) = push("other.ferry");
    assert!(!ok && err.contains("does not trust"), "{err}");
    let (ok, err) = push("good.ferry");
    assert!(ok, "{err}");
}

/// A CA, a server certificate for localhost and 127.0.0.1, and a client certificate, as PEM files in `dir`.
fn make_certificates(dir: &Path) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().expect("ca key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "ferry test CA");
    let ca_cert = ca_params.self_signed(&ca_key).expect("ca");
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf = |names: Vec<String>, purpose: ExtendedKeyUsagePurpose, stem: &str| {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(names).expect("params");
        params.extended_key_usages = vec![purpose];
        let cert = params.signed_by(&key, &issuer).expect("sign");
        std::fs::write(dir.join(format!("{stem}.pem")), cert.pem()).expect("cert");
        std::fs::write(dir.join(format!("{stem}.key")), key.serialize_pem()).expect("key");
    };
    leaf(vec!["localhost".into(), "127.0.0.1".into()], ExtendedKeyUsagePurpose::ServerAuth, "server");
    leaf(vec!["client".into()], ExtendedKeyUsagePurpose::ClientAuth, "client");
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).expect("ca pem");
}

#[test]
fn tritonclient_works_over_mutual_tls_on_http_and_grpc() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    make_certificates(d);
    let repo = tempfile::tempdir().expect("repo");
    let models = ["tiny_add", "mlp_classifier"];
    for name in models {
        let version = repo.path().join(name).join("1");
        std::fs::create_dir_all(&version).expect("mkdir");
        std::fs::copy(
            ferry_test_support::fixtures_dir().join(format!("models/{name}.onnx")),
            version.join("model.onnx"),
        )
        .expect("copy");
    }
    let path = |name: &str| d.join(name).to_str().expect("utf8").to_owned();
    let mut child = Command::new(ferry())
        .args(["serve", "--model-repository", repo.path().to_str().expect("utf8")])
        .args(["--host", "127.0.0.1", "--http-port", "0", "--grpc-port", "0"])
        .args(["--tls-cert", &path("server.pem"), "--tls-key", &path("server.key"), "--tls-client-ca", &path("ca.pem")])
        .env("FERRY_ADMIN_KEY", ferry_test_support::TEST_ADMIN_KEY)
        .current_dir(d)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let mut out = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let (mut http, mut grpc) = (String::new(), String::new());
    out.read_line(&mut http).expect("line");
    out.read_line(&mut grpc).expect("line");
    let http = http.trim().strip_prefix("ferry listening on https://").expect("https address").to_owned();
    let grpc = grpc.trim().strip_prefix("ferry gRPC listening on ").expect("grpc address").to_owned();
    // Plain HTTP to a TLS port gets nowhere.
    assert!(http_request(&http, "GET", "/v2/health/live", None).is_err(), "plain HTTP gets no answer");
    let script = repo_root().join("tests/interop/tritonclient_interop.py");
    for (protocol, addr) in [("http", &http), ("grpc", &grpc)] {
        let addr = addr.replacen("127.0.0.1", "localhost", 1);
        let result = Command::new("python3")
            .arg(&script)
            .arg(protocol)
            .arg(&addr)
            .arg(ferry_test_support::fixtures_dir())
            .args(models)
            .env("FERRY_API_KEY", ferry_test_support::TEST_ADMIN_KEY)
            .env("FERRY_TLS_CA", path("ca.pem"))
            .env("FERRY_TLS_CERT", path("client.pem"))
            .env("FERRY_TLS_KEY", path("client.key"))
            .output()
            .expect("python3");
        assert!(
            result.status.success(),
            "tritonclient {protocol} over mutual TLS failed:\n{}\n{}",
            String::from_utf8_lossy(&result.stdout),
            String::from_utf8_lossy(&result.stderr)
        );
    }
    // The ferry CLI speaks mutual TLS too.
    let identity = std::fs::read_to_string(d.join("client.pem")).expect("pem")
        + &std::fs::read_to_string(d.join("client.key")).expect("key");
    std::fs::write(d.join("client-identity.pem"), identity).expect("identity");
    let https = format!("https://{}", http.replacen("127.0.0.1", "localhost", 1));
    let models = Command::new(ferry())
        .args([
            "models",
            "--server",
            &https,
            "--ca-cert",
            &path("ca.pem"),
            "--client-cert",
            &path("client-identity.pem"),
        ])
        .env("FERRY_API_KEY", ferry_test_support::TEST_ADMIN_KEY)
        .output()
        .expect("ferry models");
    assert!(models.status.success(), "{}", String::from_utf8_lossy(&models.stderr));
    let refused = Command::new(ferry())
        .args(["models", "--server", &https, "--ca-cert", &path("ca.pem")])
        .env("FERRY_API_KEY", ferry_test_support::TEST_ADMIN_KEY)
        .output()
        .expect("ferry models");
    assert!(!refused.status.success(), "no client certificate, no access");
    drop(child.kill());
    drop(child.wait());
}

/// POSTs an inference with a data-subject header.
fn infer_as_subject(addr: &str, subject: Option<&str>) -> u16 {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(std::time::Duration::from_secs(10))).expect("timeout");
    let subject = subject.map(|s| format!("X-Subject-Id: {s}\r\n")).unwrap_or_default();
    write!(
        stream,
        "POST /v2/models/iris/infer HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {}\r\n\
         {subject}Content-Length: {}\r\n\r\n",
        ferry_test_support::TEST_ADMIN_KEY,
        INFER.len()
    )
    .expect("head");
    stream.write_all(INFER).expect("body");
    let mut reply = String::new();
    drop(stream.read_to_string(&mut reply));
    reply.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}

#[test]
fn logged_predictions_are_kept_per_subject_redacted_and_erased_on_request() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    std::fs::write(
        d.join("ferry.toml"),
        "[prediction_log]\nmodels = [\"iris\"]\nredact = [\"probabilities\"]\nretention_days = 7\n",
    )
    .expect("toml");
    let repo = repo_root().join("examples/models");
    let server =
        FerryProcess::start_in(ferry(), d, &["--model-repository", repo.to_str().expect("utf8")], &[]).expect("serve");
    for subject in [Some("alice"), Some("alice"), Some("bob"), None] {
        assert_eq!(infer_as_subject(&server.addr, subject), 200);
    }
    let admin = ferry_test_support::TEST_ADMIN_KEY;
    let records_of = |who: &str| -> Vec<serde_json::Value> {
        let (status, body) =
            http_request_as(&server.addr, Some(admin), "GET", &format!("/api/v1/subjects/{who}"), None)
                .expect("subject");
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).expect("json")
    };
    // The writer is asynchronous: wait (bounded) until alice's two records are stored.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while records_of("alice").len() < 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let alice = records_of("alice");
    assert_eq!(alice.len(), 2);
    let request = alice[0]["request"].as_str().expect("request");
    let response = alice[0]["response"].as_str().expect("response");
    assert!(request.contains("5.1") && request.contains("\"input\""), "{request}");
    assert!(response.contains("\"label\"") && response.contains("[redacted]"), "{response}");
    assert!(!response.contains("0.98"), "redacted probabilities are not stored: {response}");
    assert_eq!(records_of("bob").len(), 1);

    let out = cli(d, &server, admin, &["subjects", "delete", "alice"]);
    assert!(stdout_of(&out).contains("2 logged prediction(s) erased"));
    assert!(records_of("alice").is_empty());
    assert_eq!(records_of("bob").len(), 1, "other subjects are untouched");
    let audit = stdout_of(&cli(d, &server, admin, &["audit", "list"]));
    assert!(
        audit.contains("erase_subject") && audit.contains("subject/alice") && audit.contains("2 record(s)"),
        "{audit}"
    );
}
