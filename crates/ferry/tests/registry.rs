//! End-to-end tests of packages and the registry through the real binary: pack → push → alias → serve → move the
//! alias → roll back, on SQLite and on PostgreSQL; hot swap under load; a crash mid-upload; bad input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ferry_registry::testing::TempPostgres;
use ferry_test_support::{FerryProcess, TEST_ADMIN_KEY, fixtures_dir, http_request, http_request_as, repo_root};
use serde_json::Value;

fn ferry() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_ferry"))
}

fn iris_model() -> PathBuf {
    repo_root().join("examples/models/iris/1/model.onnx")
}

fn tabular(name: &str) -> PathBuf {
    fixtures_dir().join("tabular").join(name)
}

/// Runs `ferry ARGS…` in `dir`.
fn run(dir: &Path, args: &[&str], server: Option<&FerryProcess>) -> Output {
    let mut cmd = Command::new(ferry());
    cmd.args(args).current_dir(dir).env_remove("FERRY_SERVER").env("FERRY_API_KEY", TEST_ADMIN_KEY);
    if let Some(s) = server {
        cmd.env("FERRY_SERVER", &s.base_url);
    }
    cmd.output().expect("run ferry")
}

fn ok(dir: &Path, args: &[&str], server: Option<&FerryProcess>) -> String {
    let out = run(dir, args, server);
    assert!(
        out.status.success(),
        "ferry {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn fails(dir: &Path, args: &[&str], server: Option<&FerryProcess>) -> String {
    let out = run(dir, args, server);
    assert!(!out.status.success(), "ferry {args:?} should fail:\n{}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn served_version(server: &FerryProcess) -> String {
    let body = br#"{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[5.1,3.5,1.4,0.2]}]}"#;
    let (status, text) = http_request(&server.addr, "POST", "/v2/models/iris/infer", Some(body)).expect("infer");
    assert_eq!(status, 200, "{text}");
    let v: Value = serde_json::from_str(&text).expect("json");
    v["model_version"].as_str().expect("model_version").to_owned()
}

fn pack_two_versions(dir: &Path) {
    let (model, reference, validation) = (iris_model(), tabular("iris_reference.csv"), tabular("iris_validation.csv"));
    let (model, reference, validation) =
        (model.to_str().expect("utf8"), reference.to_str().expect("utf8"), validation.to_str().expect("utf8"));
    let common = ["--reference", reference, "--validation", validation, "--label", "species", "--owner", "ml"];
    let mut v1 = vec!["pack", model, "--name", "iris", "--description", "first", "-o", "v1.ferry"];
    v1.extend(common);
    ok(dir, &v1, None);
    let mut v2 = vec!["pack", model, "--name", "iris", "--description", "second", "-o", "v2.ferry"];
    v2.extend(common);
    ok(dir, &v2, None);
}

/// The whole life cycle from the CLI against one registry backend.
fn life_cycle(envs: &[(&str, &str)]) {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    pack_two_versions(d);
    let server = FerryProcess::start_in(ferry(), d, &["--allow-anonymous-inference"], envs)
        .expect("serve with an empty registry");

    let pushed = ok(d, &["push", "v1.ferry", "--alias", "production"], Some(&server));
    assert!(pushed.contains("pushed iris version 1") && pushed.contains("-> version 1"), "{pushed}");
    assert_eq!(served_version(&server), "1");
    ok(d, &["push", "v2.ferry"], Some(&server));
    assert_eq!(served_version(&server), "1", "pushing alone changes nothing that is served");

    let moved = ok(d, &["alias", "iris", "production", "2"], Some(&server));
    assert!(moved.contains("version 1 -> 2"), "{moved}");
    assert_eq!(served_version(&server), "2");
    let (status, _) = http_request(&server.addr, "GET", "/v2/models/iris/versions/2/ready", None).expect("ready");
    assert_eq!(status, 200);

    let models = ok(d, &["models"], Some(&server));
    assert!(models.contains("iris") && models.contains("production=2"), "{models}");
    let versions = ok(d, &["versions", "iris"], Some(&server));
    assert!(versions.contains("accuracy=0.900"), "{versions}");

    // Roll back: a pointer move.
    ok(d, &["alias", "iris", "production", "1"], Some(&server));
    assert_eq!(served_version(&server), "1");
    let (status, _) = http_request(&server.addr, "GET", "/v2/models/iris/versions/2/ready", None).expect("ready");
    assert_ne!(status, 200, "version 2 no longer serves");

    let pulled = ok(d, &["pull", "iris@production", "-o", "pulled.ferry"], Some(&server));
    assert!(pulled.contains("iris version 1"), "{pulled}");
    assert_eq!(std::fs::read(d.join("pulled.ferry")).expect("pulled"), std::fs::read(d.join("v1.ferry")).expect("v1"));

    // Restarting brings back exactly what was served.
    drop(server);
    let server = FerryProcess::start_in(ferry(), d, &["--allow-anonymous-inference"], envs).expect("restart");
    assert_eq!(served_version(&server), "1");
    let (_, meta) = http_request(&server.addr, "GET", "/v2/models/iris", None).expect("metadata");
    let meta: Value = serde_json::from_str(&meta).expect("json");
    assert_eq!(meta["versions"], serde_json::json!(["1"]));
    let (_, events) =
        http_request_as(&server.addr, Some(TEST_ADMIN_KEY), "GET", "/api/v1/models/iris/events", None).expect("events");
    let actions: Vec<String> = serde_json::from_str::<Vec<Value>>(&events)
        .expect("events json")
        .iter()
        .map(|e| e["action"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(actions, ["register", "set_alias", "register", "set_alias", "set_alias"]);
}

#[test]
fn pack_push_alias_serve_and_roll_back_on_sqlite() {
    life_cycle(&[]);
}

#[test]
fn pack_push_alias_serve_and_roll_back_on_postgres() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let pg = rt.block_on(TempPostgres::create()).expect("PostgreSQL must be running for this test");
    life_cycle(&[("FERRY_REGISTRY", pg.url.as_str())]);
    drop(pg);
}

#[test]
fn moving_the_alias_under_load_fails_no_request() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    pack_two_versions(d);
    let server = FerryProcess::start_in(ferry(), d, &["--allow-anonymous-inference"], &[]).expect("serve");
    ok(d, &["push", "v1.ferry", "--alias", "production"], Some(&server));
    ok(d, &["push", "v2.ferry"], Some(&server));

    let stop = Arc::new(AtomicBool::new(false));
    let (done, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let seen = Arc::new(parking_lot_free::Seen::default());
    let started = Instant::now();
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (stop, done, failed, seen, addr) =
                (stop.clone(), done.clone(), failed.clone(), seen.clone(), server.addr.clone());
            std::thread::spawn(move || {
                let body = br#"{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[5.1,3.5,1.4,0.2]}]}"#;
                // Bounded in count and time.
                for _ in 0..20_000 {
                    if stop.load(Ordering::Relaxed) || started.elapsed() > Duration::from_secs(60) {
                        break;
                    }
                    match http_request(&addr, "POST", "/v2/models/iris/infer", Some(body)) {
                        Ok((200, text)) => {
                            seen.add(&text);
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                        other => {
                            eprintln!("failed during the swap: {other:?}");
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    for target in ["2", "1", "2", "1", "2"] {
        std::thread::sleep(Duration::from_millis(150));
        ok(d, &["alias", "iris", "production", target], Some(&server));
    }
    std::thread::sleep(Duration::from_millis(150));
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().expect("worker");
    }
    assert_eq!(failed.load(Ordering::Relaxed), 0, "no request may fail while the alias moves");
    assert!(done.load(Ordering::Relaxed) > 50, "the load ran: {}", done.load(Ordering::Relaxed));
    assert!(seen.both(), "requests were answered by both versions");
    assert_eq!(served_version(&server), "2");
}

/// Which versions answered.
mod parking_lot_free {
    use std::sync::atomic::{AtomicBool, Ordering};

    #[derive(Default)]
    pub struct Seen {
        one: AtomicBool,
        two: AtomicBool,
    }

    impl Seen {
        pub fn add(&self, answer: &str) {
            if answer.contains(r#""model_version":"1""#) {
                self.one.store(true, Ordering::Relaxed);
            }
            if answer.contains(r#""model_version":"2""#) {
                self.two.store(true, Ordering::Relaxed);
            }
        }

        pub fn both(&self) -> bool {
            self.one.load(Ordering::Relaxed) && self.two.load(Ordering::Relaxed)
        }
    }
}

#[test]
fn a_kill_during_an_upload_leaves_no_version_and_start_up_cleans_up() {
    use std::io::Write;
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    pack_two_versions(d);
    let package = std::fs::read(d.join("v1.ferry")).expect("package");
    let mut server = FerryProcess::start_in(ferry(), d, &["--allow-anonymous-inference"], &[]).expect("serve");

    // Half an upload, then SIGKILL while the server holds the staged half.
    let mut stream = std::net::TcpStream::connect(&server.addr).expect("connect");
    write!(
        stream,
        "POST /api/v1/models/iris/versions HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n\
         Authorization: Bearer {TEST_ADMIN_KEY}\r\nContent-Length: {}\r\n\r\n",
        package.len()
    )
    .expect("headers");
    stream.write_all(&package[..package.len() / 2]).expect("half the body");
    stream.flush().expect("flush");
    let staging = d.join("ferry-data/staging");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_dir(&staging).map_or(0, Iterator::count) == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(std::fs::read_dir(&staging).expect("staging").count(), 1, "the upload is being staged");
    let mut child = server.take_child().expect("child");
    child.kill().expect("SIGKILL");
    child.wait().expect("wait");
    drop(stream);

    // A blob stored just before a crash, with no version pointing at it.
    let orphan = d.join("ferry-data/artifacts/sha256").join(format!("{}.ferry", "ab".repeat(32)));
    std::fs::create_dir_all(orphan.parent().expect("parent")).expect("mkdir");
    std::fs::write(&orphan, b"orphan").expect("orphan");

    let server = FerryProcess::start_in(ferry(), d, &["--allow-anonymous-inference"], &[]).expect("restart");
    assert_eq!(std::fs::read_dir(&staging).expect("staging").count(), 0, "staged leftovers are removed");
    assert!(!orphan.exists(), "orphaned blobs are removed");
    let (status, models) =
        http_request_as(&server.addr, Some(TEST_ADMIN_KEY), "GET", "/api/v1/models", None).expect("models");
    assert_eq!((status, models.as_str()), (200, "[]"), "no half-registered version");
    // The registry still works after the crash.
    ok(d, &["push", "v1.ferry"], Some(&server));
}

#[test]
fn pack_stores_metrics_equal_to_scikit_learn() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let cases = [
        ("iris_validation", iris_model(), "species"),
        ("binary_validation", fixtures_dir().join("models/random_forest.onnx"), "label"),
        ("regression_validation", fixtures_dir().join("models/gbt_regressor.onnx"), "target"),
    ];
    for (case, model, label) in cases {
        let csv = tabular(&format!("{case}.csv"));
        let out = format!("{case}.ferry");
        ok(
            d,
            &[
                "pack",
                model.to_str().expect("utf8"),
                "--name",
                case,
                "--validation",
                csv.to_str().expect("utf8"),
                "--label",
                label,
                "-o",
                &out,
            ],
            None,
        );
        let inspected: Value = serde_json::from_str(&ok(d, &["inspect", &out, "--json"], None)).expect("json");
        let ours = inspected["manifest"]["validation"]["metrics"].as_object().expect("metrics").clone();
        let sklearn: Value =
            serde_json::from_str(&std::fs::read_to_string(tabular(&format!("{case}.metrics.json"))).expect("read"))
                .expect("json");
        let sklearn = sklearn["metrics"].as_object().expect("sklearn metrics");
        assert_eq!(ours.keys().collect::<Vec<_>>(), sklearn.keys().collect::<Vec<_>>(), "{case}");
        for (k, v) in sklearn {
            let (a, b) = (ours[k].as_f64().expect("ours"), v.as_f64().expect("sklearn"));
            assert!((a - b).abs() <= 1e-9 * b.abs().max(1.0), "{case} {k}: ferry {a} vs scikit-learn {b}");
        }
        ok(d, &["verify", &out], None);
    }
}

#[test]
fn bad_input_gets_a_precise_error_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let model = iris_model();
    let model = model.to_str().expect("utf8");
    // A CSV with a missing and one with an extra column.
    std::fs::write(d.join("three.csv"), "a,b,c\n1,2,3\n").expect("csv");
    let err = fails(d, &["pack", model, "--name", "iris", "--reference", "three.csv", "-o", "x.ferry"], None);
    assert!(err.contains("3 feature columns") && err.contains("1 column(s) missing"), "{err}");
    std::fs::write(d.join("five.csv"), "a,b,c,d,e\n1,2,3,4,5\n").expect("csv");
    let err = fails(d, &["pack", model, "--name", "iris", "--reference", "five.csv", "-o", "x.ferry"], None);
    assert!(err.contains("too many"), "{err}");
    std::fs::write(d.join("text.csv"), "a,b,c,d\n1,2,x,4\n").expect("csv");
    let err = fails(d, &["pack", model, "--name", "iris", "--reference", "text.csv", "-o", "x.ferry"], None);
    assert!(err.contains("line 2") && err.contains("not a number"), "{err}");
    // A name with path characters.
    let err = fails(d, &["pack", model, "--name", "../etc", "-o", "x.ferry"], None);
    assert!(err.contains("../etc"), "{err}");
    assert!(!d.join("x.ferry").exists() && !d.join("x.ferry.partial").exists(), "nothing was written");

    // A tampered package.
    ok(d, &["pack", model, "--name", "iris", "-o", "good.ferry"], None);
    let mut bytes = std::fs::read(d.join("good.ferry")).expect("read");
    let n = bytes.len();
    bytes[n - 1024 - 512 + 10] ^= 0x55;
    std::fs::write(d.join("tampered.ferry"), &bytes).expect("write");
    let err = fails(d, &["verify", "tampered.ferry"], None);
    assert!(err.contains("model.onnx is corrupted or was tampered with"), "{err}");
    std::fs::write(d.join("cut.ferry"), &bytes[..n / 2]).expect("write");
    let err = fails(d, &["verify", "cut.ferry"], None);
    assert!(err.contains("truncated"), "{err}");

    // A manifest that lies about the model's signature: valid checksums, wrong signature.
    let mut manifest = ferry_package::open_manifest(&d.join("good.ferry")).expect("manifest");
    manifest.signature.inputs[0].name = "features".into();
    let lie = d.join("lie.ferry");
    let input = ferry_package::PackageInput { manifest, model: &iris_model(), profile: None, validation: None };
    ferry_package::write_package(input, &lie, &|_| {}).expect("write the lie");
    let err = fails(d, &["verify", "lie.ferry"], None);
    assert!(err.contains("does not describe the model") && err.contains("features"), "{err}");
    let server = FerryProcess::start_in(ferry(), d, &["--allow-anonymous-inference"], &[]).expect("serve");
    let err = fails(d, &["push", "lie.ferry"], Some(&server));
    assert!(err.contains("does not describe the model") && err.contains("HTTP 400"), "{err}");
    let err = fails(d, &["push", "cut.ferry"], Some(&server));
    assert!(err.contains("truncated"), "{err}");
    let err = fails(d, &["alias", "iris", "production", "1"], Some(&server));
    assert!(err.contains("not in the registry") && err.contains("HTTP 404"), "{err}");
    let (status, models) =
        http_request_as(&server.addr, Some(TEST_ADMIN_KEY), "GET", "/api/v1/models", None).expect("models");
    assert_eq!((status, models.as_str()), (200, "[]"), "nothing was registered");
}

#[test]
fn a_large_reference_csv_is_streamed_into_a_bounded_profile() {
    use std::io::Write;
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let rows = 200_000u32;
    let mut csv = std::io::BufWriter::new(std::fs::File::create(d.join("big.csv")).expect("csv"));
    writeln!(csv, "sepal_length,sepal_width,petal_length,petal_width").expect("header");
    for i in 0..rows {
        let x = f64::from(i % 1000) / 100.0;
        writeln!(csv, "{x},{},{},{}", 3.0 + x / 10.0, 1.0 + x / 2.0, if i % 97 == 0 { "" } else { "0.5" })
            .expect("row");
    }
    csv.flush().expect("flush");
    drop(csv);
    let model = iris_model();
    ok(
        d,
        &[
            "pack",
            model.to_str().expect("utf8"),
            "--name",
            "iris",
            "--reference",
            "big.csv",
            "--reference-cap",
            "5000",
            "-o",
            "big.ferry",
        ],
        None,
    );
    let inspected: Value = serde_json::from_str(&ok(d, &["inspect", "big.ferry", "--json"], None)).expect("json");
    let profile = &inspected["profile"];
    assert_eq!(profile["rows"], rows);
    let first = &profile["features"][0];
    assert_eq!(first["count"], rows);
    assert_eq!(first["sample"].as_array().map(Vec::len), Some(5_000), "the sample is bounded by --reference-cap");
    let missing = profile["features"][3]["missing"].as_u64().expect("missing");
    assert_eq!(missing, u64::from(rows.div_ceil(97)));
    assert!((first["mean"].as_f64().expect("mean") - 4.995).abs() < 1e-9);
    // Every output column was profiled over every row too.
    assert_eq!(profile["outputs"][0]["count"], rows);
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read_dir").filter_map(Result::ok) {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn packages_are_encrypted_at_rest_and_a_master_key_rotation_rewraps_only_the_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    pack_two_versions(d);
    ok(d, &["keys", "generate-master", "old.key"], None);
    ok(d, &["keys", "generate-master", "new.key"], None);
    assert!(fails(d, &["keys", "generate-master", "old.key"], None).contains("must not exist"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(d.join("old.key")).expect("key file").permissions().mode();
        assert_eq!(mode & 0o077, 0, "the key file is readable by its owner only");
    }

    let with_old = ["--allow-anonymous-inference", "--master-key-file", "old.key"];
    let server = FerryProcess::start_in(ferry(), d, &with_old, &[]).expect("serve with a master key");
    ok(d, &["push", "v1.ferry", "--alias", "production"], Some(&server));
    assert_eq!(served_version(&server), "1");
    // Readers get the plaintext package back, byte for byte.
    ok(d, &["pull", "iris@production", "-o", "pulled.ferry"], Some(&server));
    assert_eq!(std::fs::read(d.join("pulled.ferry")).expect("pulled"), std::fs::read(d.join("v1.ferry")).expect("v1"));
    drop(server);

    // Nothing under the data directory holds the model or the package in plaintext (no unpacked cache either).
    let model = std::fs::read(iris_model()).expect("model");
    let needle = &model[model.len() / 2..model.len() / 2 + 48];
    let stored = files_under(&d.join("ferry-data"));
    for file in &stored {
        let bytes = std::fs::read(file).expect("read");
        assert!(!bytes.windows(needle.len()).any(|w| w == needle), "{} holds the model in plaintext", file.display());
    }
    let blob = stored.iter().find(|p| p.extension().is_some_and(|e| e == "ferry")).expect("stored blob").clone();
    let key_file = blob.with_extension("key");
    let (blob_before, key_before) = (std::fs::read(&blob).expect("blob"), std::fs::read(&key_file).expect("key"));

    // Without the key, or with another one, the server says so and serves nothing wrong.
    let err =
        FerryProcess::start_in(ferry(), d, &["--allow-anonymous-inference"], &[]).expect_err("no key").to_string();
    assert!(err.contains("is encrypted") && err.contains("FERRY_MASTER_KEY"), "{err}");
    let with_new = ["--allow-anonymous-inference", "--master-key-file", "new.key"];
    let err = FerryProcess::start_in(ferry(), d, &with_new, &[]).expect_err("wrong key").to_string();
    assert!(err.contains("is encrypted under master key") && err.contains("configured master key is"), "{err}");

    // Rotation re-wraps the data key and leaves the package's bytes alone.
    let rotated = ok(d, &["keys", "rotate-master", "--new-key-file", "new.key", "--master-key-file", "old.key"], None);
    assert!(rotated.contains("1 data key(s) re-wrapped"), "{rotated}");
    assert_eq!(std::fs::read(&blob).expect("blob"), blob_before, "the package itself is not rewritten");
    assert_ne!(std::fs::read(&key_file).expect("key"), key_before, "its key file is");
    let again = ok(d, &["keys", "rotate-master", "--new-key-file", "new.key", "--master-key-file", "new.key"], None);
    assert!(again.contains("1 already under the new key"), "{again}");
    let err = FerryProcess::start_in(ferry(), d, &with_old, &[]).expect_err("old key").to_string();
    assert!(err.contains("is encrypted under master key"), "{err}");
    let server = FerryProcess::start_in(ferry(), d, &with_new, &[]).expect("serve with the new key");
    assert_eq!(served_version(&server), "1");
    let (_, audit) =
        http_request_as(&server.addr, Some(TEST_ADMIN_KEY), "GET", "/api/v1/audit?limit=1000", None).expect("audit");
    assert!(audit.contains("rotate_master_key"), "the rotation is audited: {audit}");

    // A stored package altered in place is refused, never served.
    drop(server);
    let mut tampered = blob_before;
    let middle = tampered.len() / 2;
    tampered[middle] ^= 0x01;
    std::fs::write(&blob, tampered).expect("tamper");
    let err = FerryProcess::start_in(ferry(), d, &with_new, &[]).expect_err("tampered").to_string();
    assert!(err.contains("failed authentication"), "{err}");
}

/// Versions that answer 40 unversioned requests to `server`.
fn versions_answering(server: &FerryProcess) -> std::collections::BTreeSet<String> {
    (0..40).map(|_| served_version(server)).collect()
}

/// Waits (at most 30 s) until `server` answers with exactly `wanted`.
fn until_serving(server: &FerryProcess, wanted: &[&str]) {
    let wanted: std::collections::BTreeSet<String> = wanted.iter().map(|v| (*v).to_owned()).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, _) = http_request(&server.addr, "GET", "/v2/models/iris/ready", None).expect("ready");
        if status == 200 && versions_answering(server) == wanted {
            return;
        }
        assert!(Instant::now() < deadline, "{} never served exactly {wanted:?}", server.base_url);
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn a_deployment_made_through_one_replica_splits_traffic_on_both() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let pg = rt.block_on(TempPostgres::create()).expect("PostgreSQL must be running for this test");
    let envs = [("FERRY_REGISTRY", pg.url.as_str())];
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    pack_two_versions(d);
    let a = FerryProcess::start_in(ferry(), d, &["--allow-anonymous-inference"], &envs).expect("replica a");
    let b = FerryProcess::start_in(ferry(), d, &["--allow-anonymous-inference"], &envs).expect("replica b");
    ok(d, &["push", "v1.ferry", "--alias", "production"], Some(&a));
    ok(d, &["push", "v2.ferry"], Some(&a));
    // Replica b follows the registry by itself.
    until_serving(&b, &["1"]);

    let shown = ok(d, &["deploy", "iris", "--split", "production=50,2=50"], Some(&a));
    assert!(shown.contains("production (primary)") && shown.contains("50%"), "{shown}");
    assert_eq!(versions_answering(&a).len(), 2, "replica a splits at once");
    until_serving(&b, &["1", "2"]);
    let shown = ok(d, &["deploy", "iris"], Some(&b));
    assert!(shown.contains("revision 1") && shown.contains("│ 2 "), "{shown}");
    let refused = fails(d, &["deploy", "iris", "--split", "production=50,2=60"], Some(&a));
    assert!(refused.contains("add up to 110%") && refused.contains("HTTP 400"), "{refused}");
    let refused = fails(d, &["deploy", "iris", "--split", "production"], Some(&a));
    assert!(refused.contains("TARGET=PERCENT"), "{refused}");

    ok(d, &["deploy", "iris", "--delete"], Some(&a));
    until_serving(&a, &["1"]);
    until_serving(&b, &["1"]);

    // Over gRPC (tritonclient): the override header routes (an unknown variant is refused), a version pins, and a
    // shadow gets a copy of every unversioned request (never of one it answers itself).
    let shown = ok(d, &["deploy", "iris", "--split", "production=100", "--shadow", "2=100"], Some(&a));
    assert!(shown.contains("shadow: 2 (v2) gets a copy of 100% of requests"), "{shown}");
    let script = r#"
import sys, numpy as np, tritonclient.grpc as g
c = g.InferenceServerClient(sys.argv[1])
x = g.InferInput("input", [1, 4], "FP32"); x.set_data_from_numpy(np.array([[5.1, 3.5, 1.4, 0.2]], dtype=np.float32))
from tritonclient.utils import InferenceServerException
answered = sorted({c.infer("iris", [x]).get_response().model_version for _ in range(20)})
chosen = c.infer("iris", [x], headers={"x-ferry-variant": "production"}).get_response().model_version
pinned = c.infer("iris", [x], model_version="2").get_response().model_version
try:
    c.infer("iris", [x], headers={"x-ferry-variant": "canary"}); refused = "accepted"
except InferenceServerException as e:
    refused = e.status()
print(",".join(answered), chosen, pinned, refused)
"#;
    let out = Command::new("python3").args(["-c", script, &a.grpc_addr]).output().expect("python3");
    let printed = String::from_utf8_lossy(&out.stdout);
    assert_eq!(printed.trim(), "1 1 2 StatusCode.INVALID_ARGUMENT", "{}", String::from_utf8_lossy(&out.stderr));
    let deadline = Instant::now() + Duration::from_secs(20);
    // The 20 unversioned requests and the one routed to production by the override; not the pinned one.
    let copied = r#"ferry_shadow_requests_total{model="iris",version="2",result="ok"} 21"#;
    loop {
        let (_, metrics) = http_request_as(&a.addr, Some(TEST_ADMIN_KEY), "GET", "/metrics", None).expect("metrics");
        if metrics.contains(copied) {
            break;
        }
        assert!(Instant::now() < deadline, "{copied} never appeared:\n{metrics}");
        std::thread::sleep(Duration::from_millis(100));
    }
    drop((a, b));
    drop(pg);
}

#[test]
fn a_canary_from_the_cli_survives_a_restart_and_promotes_itself() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    pack_two_versions(d);
    let server = FerryProcess::start_in(ferry(), d, &["--allow-anonymous-inference"], &[]).expect("serve");
    ok(d, &["push", "v1.ferry", "--alias", "production"], Some(&server));
    ok(d, &["push", "v2.ferry"], Some(&server));

    // A rollout with a long interval outlives a restart: the split and the state come back from the registry.
    let shown = ok(d, &["rollout", "iris", "--candidate", "2", "--steps", "50,100", "--interval", "1h"], Some(&server));
    assert!(shown.contains("version 2 over version 1, progressing (candidate at 50%)"), "{shown}");
    drop(server);
    let server = FerryProcess::start_in(ferry(), d, &["--allow-anonymous-inference"], &[]).expect("restart");
    until_serving(&server, &["1", "2"]);
    let shown = ok(d, &["rollout", "iris"], Some(&server));
    assert!(shown.contains("progressing") && shown.contains("start"), "{shown}");
    let refused = fails(d, &["rollout", "iris", "--candidate", "2"], Some(&server));
    assert!(refused.contains("HTTP 409"), "{refused}");
    ok(d, &["rollout", "iris", "--action", "abort"], Some(&server));
    until_serving(&server, &["1"]);

    // With traffic and short intervals, a healthy candidate promotes itself.
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (stop, addr) = (stop.clone(), server.addr.clone());
        std::thread::spawn(move || {
            let body = br#"{"inputs":[{"name":"input","shape":[1,4],"datatype":"FP32","data":[5.1,3.5,1.4,0.2]}]}"#;
            let mut failed = 0;
            for _ in 0..100_000 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let (status, _) = http_request(&addr, "POST", "/v2/models/iris/infer", Some(body)).expect("infer");
                failed += usize::from(status != 200);
            }
            failed
        })
    };
    let args = ["rollout", "iris", "--candidate", "2", "--steps", "25,50,100", "--interval", "400ms"];
    let tuning = ["--min-requests", "20", "--error-tolerance", "0.02", "--latency-tolerance", "0.5"];
    ok(d, &[&args[..], &tuning[..]].concat(), Some(&server));
    let deadline = Instant::now() + Duration::from_secs(60);
    let shown = loop {
        let shown = ok(d, &["rollout", "iris"], Some(&server));
        if shown.contains("promoted") || Instant::now() > deadline {
            break shown;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    stop.store(true, Ordering::Relaxed);
    assert_eq!(load.join().expect("traffic"), 0, "no request failed during the rollout");
    assert!(shown.contains("promoted") && shown.contains("advance") && shown.contains("ferry"), "{shown}");
    // A promotion is stored before it is applied (the alias moved, the deployment removed): wait for the latter.
    until_serving(&server, &["2"]);
    assert_eq!(served_version(&server), "2");
    let models = ok(d, &["models"], Some(&server));
    assert!(models.contains("production=2"), "{models}");
}
