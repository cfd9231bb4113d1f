//! Live quality, baselines and alerts end to end: a served registry model, ground-truth feedback through the API, alert
//! rules from `ferry.toml`, and a real webhook receiver on loopback that checks every notice's HMAC signature.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferry_test_support::{FerryProcess, TEST_ADMIN_KEY, http_request_as};
use serde_json::{Value, json};

const SECRET: &str = "webhook-secret-for-tests";

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("JSON notice")
    }
}

/// A webhook receiver: answers 500 to the first request (so that ferry must retry) and 200 to the rest.
struct Receiver {
    url: String,
    got: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
        let got: Arc<Mutex<Vec<Received>>> = Arc::default();
        let sink = got.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().take(1_000) {
                let Ok(mut stream) = stream else { continue };
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                let (mut headers, mut line) = (Vec::new(), String::new());
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                loop {
                    line.clear();
                    if reader.read_line(&mut line).is_err() || line.trim().is_empty() {
                        break;
                    }
                    if let Some((k, v)) = line.trim().split_once(':') {
                        headers.push((k.trim().to_owned(), v.trim().to_owned()));
                    }
                }
                let len = headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                    .and_then(|(_, v)| v.parse().ok())
                    .unwrap_or(0usize);
                let mut body = vec![0; len];
                if reader.read_exact(&mut body).is_err() {
                    continue;
                }
                let first = {
                    let mut got = sink.lock().expect("lock");
                    got.push(Received { headers, body });
                    got.len() == 1
                };
                let status = if first { "500 Internal Server Error" } else { "200 OK" };
                let _ = write!(stream, "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            }
        });
        Self { url, got }
    }

    fn received(&self) -> Vec<Received> {
        self.got.lock().expect("lock").clone()
    }

    /// Waits (bounded) until a notice matching `pred` arrived with a 2xx answer, i.e. not only the first one.
    fn wait_for(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Received {
        let started = Instant::now();
        loop {
            let got = self.received();
            // The first request was answered 500: what counts is a delivery after it.
            if let Some(r) = got.iter().skip(1).find(|r| pred(&r.json())) {
                return r.clone();
            }
            assert!(started.elapsed() < Duration::from_secs(30), "no {what} notice arrived: {got:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn fixture(name: &str) -> PathBuf {
    ferry_test_support::fixtures_dir().join("tabular").join(name)
}

fn rows_of(csv: &str) -> Vec<[f64; 4]> {
    std::fs::read_to_string(fixture(csv))
        .expect("csv")
        .lines()
        .skip(1)
        .map(|l| {
            let v: Vec<f64> = l.split(',').map(|x| x.parse().expect("number")).collect();
            [v[0], v[1], v[2], v[3]]
        })
        .collect()
}

fn ferry(dir: &Path, args: &[&str], server: Option<&FerryProcess>) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferry"));
    cmd.args(args).current_dir(dir).env("FERRY_API_KEY", TEST_ADMIN_KEY);
    if let Some(s) = server {
        cmd.env("FERRY_SERVER", &s.base_url);
    }
    cmd.output().expect("ferry")
}

fn api(server: &FerryProcess, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let text = body.map(Value::to_string);
    let (status, out) =
        http_request_as(&server.addr, Some(TEST_ADMIN_KEY), method, path, text.as_deref().map(str::as_bytes))
            .expect("request");
    (status, serde_json::from_str(&out).unwrap_or(Value::String(out)))
}

/// Sends `rows` 40 at a time with ids `{prefix}-{k}`; returns (request id, row, predicted label) per row.
fn infer(server: &FerryProcess, rows: &[[f64; 4]], prefix: &str) -> Vec<(String, u64, i64)> {
    let mut out = Vec::new();
    for (k, chunk) in rows.chunks(40).enumerate() {
        let data: Vec<f64> = chunk.iter().flatten().copied().collect();
        let id = format!("{prefix}-{k}");
        let body = json!({"id": id, "inputs": [{"name": "input", "shape": [chunk.len(), 4], "datatype": "FP32", "data": data}]});
        let (status, response) = api(server, "POST", "/v2/models/iris/infer", Some(&body));
        assert_eq!(status, 200, "{response}");
        assert_eq!(response["id"], id.as_str());
        let labels = response["outputs"]
            .as_array()
            .expect("outputs")
            .iter()
            .find(|o| o["name"] == "label")
            .expect("label")["data"]
            .as_array()
            .expect("data")
            .clone();
        for (row, l) in labels.iter().enumerate() {
            out.push((id.clone(), row as u64, l.as_i64().expect("label")));
        }
    }
    out
}

fn monitoring(server: &FerryProcess) -> Value {
    let (status, v) = api(server, "GET", "/api/v1/models/iris/monitoring", None);
    assert_eq!(status, 200, "{v}");
    v
}

fn wait_until(what: &str, mut check: impl FnMut() -> Option<Value>) -> Value {
    let started = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn alert_state(server: &FerryProcess, rule: &str) -> Value {
    let (status, v) = api(server, "GET", "/api/v1/alerts", None);
    assert_eq!(status, 200, "{v}");
    let r = v["rules"].as_array().expect("rules").iter().find(|r| r["rule"]["name"] == rule).expect("rule").clone();
    r["alerts"].as_array().and_then(|a| a.iter().find(|a| a["model"] == "iris").cloned()).unwrap_or(Value::Null)
}

fn verify_signature(r: &Received) {
    use hmac::{Hmac, Mac};
    let timestamp = r.header("x-ferry-timestamp").expect("timestamp header");
    let signature = r.header("x-ferry-signature").expect("signature header");
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).expect("key");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(&r.body);
    assert_eq!(signature, format!("sha256={}", hex::encode(mac.finalize().into_bytes())), "HMAC over timestamp.body");
}

#[test]
fn feedback_drift_and_alerts_work_end_to_end_through_the_api_the_cli_and_a_real_webhook() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let model = ferry_test_support::repo_root().join("examples/models/iris/1/model.onnx");
    let (reference, validation) = (fixture("iris_reference.csv"), fixture("iris_validation.csv"));
    let packed = ferry(
        d,
        &[
            "pack",
            model.to_str().expect("utf8"),
            "--name",
            "iris",
            "--reference",
            reference.to_str().expect("utf8"),
            "--validation",
            validation.to_str().expect("utf8"),
            "--label",
            "species",
            "-o",
            "iris.ferry",
        ],
        None,
    );
    assert!(packed.status.success(), "{}", String::from_utf8_lossy(&packed.stderr));
    let receiver = Receiver::start();
    std::fs::write(
        d.join("ferry.toml"),
        format!(
            r#"
allow_anonymous_inference = true

[monitoring]
window_rows = 240
evaluation_interval = "100ms"
performance_window = "10s"
baseline_warmup = "1s"

[[alerting.webhooks]]
url = "{}"
secret_env = "TEST_WEBHOOK_SECRET"
initial_backoff = "50ms"

[[alerts]]
name = "iris-drift"
metric = "drift_share"
model = "iris"
op = ">="
threshold = 0.25
severity = "critical"
labels = {{ team = "ml" }}

[[alerts]]
name = "iris-accuracy"
metric = "accuracy"
op = "<"
threshold = 0.85
for = "200ms"

[[alerts]]
name = "iris-accuracy-drop"
metric = "accuracy"
relative_to_baseline = true
op = "<"
threshold = -0.1
"#,
            receiver.url
        ),
    )
    .expect("config");
    let server =
        FerryProcess::start_in(Path::new(env!("CARGO_BIN_EXE_ferry")), d, &[], &[("TEST_WEBHOOK_SECRET", SECRET)])
            .expect("serve");
    let pushed = ferry(d, &["push", "iris.ferry", "--alias", "production"], Some(&server));
    assert!(pushed.status.success(), "{}", String::from_utf8_lossy(&pushed.stderr));

    // Unshifted traffic: two full drift windows of the reference's own rows, and no alert of any kind.
    let calm = rows_of("iris_reference.csv");
    let mut predictions = infer(&server, &[calm.clone(), calm.clone()].concat(), "calm");
    predictions.extend(infer(&server, &[calm.clone(), calm.clone()].concat(), "calm2"));
    assert_eq!(predictions.len(), 480);
    let m = wait_until("two drift windows", || {
        let m = monitoring(&server);
        (m["windows_completed"].as_u64() >= Some(2)).then_some(m)
    });
    assert_eq!(m["latest"]["drifted_share"], 0.0, "{m}");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(alert_state(&server, "iris-drift")["state"], "inactive");
    assert!(receiver.received().is_empty(), "unshifted traffic raised {:?}", receiver.received());

    // Bad feedback is refused precisely and changes nothing.
    let (status, v) =
        api(&server, "POST", "/api/v1/models/iris/feedback", Some(&json!([{"request_id": "calm-0", "value": 1.5}])));
    assert_eq!(status, 400, "{v}");
    assert!(v["error"].as_str().expect("error").contains("give `label`"), "{v}");
    let (status, v) = api(&server, "POST", "/api/v1/models/iris/feedback", Some(&json!({"nope": 1})));
    assert_eq!(status, 400, "{v}");
    let (status, v) =
        api(&server, "POST", "/api/v1/models/iris/feedback", Some(&json!([{"request_id": "calm-0", "label": 0.5}])));
    assert_eq!(status, 400, "{v}");
    let huge: Vec<Value> = (0..10_001).map(|i| json!({"request_id": format!("x{i}"), "label": 0})).collect();
    let (status, v) = api(&server, "POST", "/api/v1/models/iris/feedback", Some(&Value::Array(huge)));
    assert_eq!(status, 413, "{v}");
    let (status, v) = api(&server, "POST", "/api/v1/models/nope/feedback", Some(&json!([])));
    assert_eq!(status, 404, "{v}");

    // Ground truth: the first 240 predictions right, then 60% of the next 240 wrong: 30% wrong overall.
    let mut feedback: Vec<Value> = predictions
        .iter()
        .enumerate()
        .map(|(i, (id, row, label))| {
            let wrong = i >= 240 && i % 5 < 3;
            json!({"request_id": id, "row": row, "label": if wrong { (label + 1) % 3 } else { *label }})
        })
        .collect();
    feedback.push(json!({"request_id": "never-sent", "label": 1}));
    let (status, report) = api(&server, "POST", "/api/v1/models/iris/feedback", Some(&Value::Array(feedback)));
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["matched"], 480, "{report}");
    assert_eq!(report["unmatched"], 1, "{report}");
    assert_eq!(report["unmatched_ids"], json!(["never-sent"]));
    // A resent batch is stored again but not counted twice by the detectors.
    let resent: Vec<Value> =
        predictions[..10].iter().map(|(id, row, l)| json!({"request_id": id, "row": row, "label": l})).collect();
    let (status, report) = api(&server, "POST", "/api/v1/models/iris/feedback", Some(&Value::Array(resent)));
    assert_eq!(
        (status, report["matched"].clone(), report["repeated"].clone()),
        (200, json!(10), json!(10)),
        "{report}"
    );
    // A request without an id (or with an empty one) gets a fresh one to send the truth under.
    let body = json!({"id": "", "inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": calm[0]}]});
    let (status, response) = api(&server, "POST", "/v2/models/iris/infer", Some(&body));
    assert_eq!(status, 200, "{response}");
    assert_eq!(response["id"].as_str().map(str::len), Some(32), "a fresh 128-bit id: {response}");

    let m = monitoring(&server);
    let q = &m["quality"];
    assert_eq!(q["task"], "classification", "{m}");
    let v1 = q["versions"].as_array().expect("versions").iter().find(|v| v["version"] == 1).expect("v1").clone();
    assert_eq!(v1["rows"], 480, "{v1}");
    assert!((v1["metrics"]["accuracy"].as_f64().expect("accuracy") - 0.7).abs() < 1e-12, "{v1}");
    let baseline = v1["baseline"]["accuracy"].as_f64().expect("baseline from the package's validation metrics");
    let change = v1["change"]["accuracy"].as_f64().expect("change");
    assert!((change - (0.7 - baseline) / baseline).abs() < 1e-12, "{v1}");
    assert!(v1["metrics"]["roc_auc"].is_number() && v1["metrics"]["log_loss"].is_number(), "{v1}");
    assert_eq!(v1["errors_seen"], 480);
    let detections: u64 =
        v1["concept_drift"].as_array().expect("detectors").iter().map(|d| d["detections"].as_u64().unwrap_or(0)).sum();
    assert!(detections >= 1, "the error rate jumping from 0 to 0.6 is concept drift: {v1}");
    assert!(m["performance"]["live"]["requests"].as_u64() > Some(0), "live latency and throughput: {m}");

    // The accuracy rules fire (after their `for`), and the webhook gets signed notices, retried past its 500.
    let fired = receiver.wait_for("accuracy firing", |n| n["rule"] == "iris-accuracy" && n["status"] == "firing");
    verify_signature(&fired);
    let n = fired.json();
    assert_eq!(n["model"], "iris");
    assert_eq!(n["version"], 1);
    assert!((n["value"].as_f64().expect("value") - 0.7).abs() < 1e-12, "{n}");
    let dropped = receiver.wait_for("accuracy drop", |n| n["rule"] == "iris-accuracy-drop" && n["status"] == "firing");
    verify_signature(&dropped);
    let first = &receiver.received()[0];
    let retried = receiver
        .received()
        .into_iter()
        .skip(1)
        .any(|r| r.header("x-ferry-delivery") == first.header("x-ferry-delivery"));
    assert!(retried, "the notice answered 500 was delivered again with the same delivery id");
    assert_eq!(alert_state(&server, "iris-accuracy")["state"], "firing");
    assert!(receiver.received().iter().all(|r| r.json()["rule"] != "iris-drift"), "no drift yet");

    // Shifted petals: the next window drifts and the drift alert fires within it.
    let shifted: Vec<[f64; 4]> = calm.iter().map(|r| [r[0], r[1], r[2] + 2.0, r[3] + 1.0]).collect();
    infer(&server, &[shifted.clone(), shifted].concat(), "shifted");
    let notice = receiver.wait_for("drift firing", |n| n["rule"] == "iris-drift" && n["status"] == "firing");
    verify_signature(&notice);
    let n = notice.json();
    assert_eq!(n["severity"], "critical");
    assert_eq!(n["labels"]["team"], "ml");
    assert!(n["value"].as_f64().expect("share") >= 0.25, "{n}");
    let history = alert_state(&server, "iris-drift")["history"].clone();
    assert_eq!(history[0]["from"], "inactive", "{history}");
    assert_eq!(history[0]["to"], "firing", "{history}");

    let expected = [
        r#"ferry_model_metric{model="iris",version="1",metric="accuracy"} 0.7"#,
        r#"ferry_alerts_firing{rule="iris-drift"} 1"#,
        r#"ferry_alerts_firing{rule="iris-accuracy"} 1"#,
        r#"ferry_feedback_total{model="iris",result="unmatched"} 1"#,
        r#"ferry_model_baseline{model="iris",version="1",metric="accuracy"}"#,
        // Learned once the 1 s warm-up after the first request is over: waited for below.
        r#"ferry_model_baseline{model="iris",version="1",metric="throughput"}"#,
        r#"ferry_model_metric{model="iris",version="1",metric="latency_p99_seconds"}"#,
    ];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let metrics = loop {
        let (_, metrics) =
            http_request_as(&server.addr, Some(TEST_ADMIN_KEY), "GET", "/metrics", None).expect("metrics");
        if expected.iter().all(|line| metrics.contains(line)) || std::time::Instant::now() > deadline {
            break metrics;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    for line in expected {
        assert!(metrics.contains(line), "{line} missing from\n{metrics}");
    }

    // The dashboard's monitoring panels read only what a full server exposes.
    let exposed: std::collections::BTreeSet<&str> = metrics
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    let named = ferry_test_support::dashboard_metric_names();
    let missing: Vec<&String> = named.iter().filter(|n| !exposed.contains(n.as_str())).collect();
    assert!(missing.is_empty(), "the dashboard names metrics a monitored server does not expose: {missing:?}");
    for family in [
        "ferry_drift_share",
        "ferry_model_metric",
        "ferry_model_baseline",
        "ferry_alerts_firing",
        "ferry_concept_drift",
    ] {
        assert!(named.contains(family), "the dashboard shows {family}");
    }

    // The CLI reads the same.
    let listed = ferry(d, &["alerts", "list"], Some(&server));
    let text = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.status.success() && text.contains("iris-drift") && text.contains("FIRING"), "{text}");
    let shown = ferry(d, &["monitor", "iris", "--once"], Some(&server));
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.status.success() && text.contains("accuracy") && text.contains("0.7000"), "{text}");
    let exported = ferry(d, &["alerts", "export-prometheus"], None);
    let rules = String::from_utf8_lossy(&exported.stdout);
    assert!(exported.status.success(), "{}", String::from_utf8_lossy(&exported.stderr));
    assert!(
        rules
            .contains(r#"expr: "ferry_drift_share{model=\"iris\"} >= 0.25 and on (model, version) ferry_model_loaded"#),
        "{rules}"
    );
    assert!(
        rules.contains(r#"expr: "ferry_model_metric{metric=\"accuracy\"} < 0.85 and on (model, version)"#),
        "{rules}"
    );
    assert!(rules.contains(r#"ferry_feedback_rows >= 100"#), "{rules}");
}

#[test]
fn a_canary_that_ground_truth_shows_less_accurate_rolls_itself_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let model = ferry_test_support::repo_root().join("examples/models/iris/1/model.onnx");
    let reference = fixture("iris_reference.csv");
    for (file, description) in [("v1.ferry", "first"), ("v2.ferry", "second")] {
        let packed = ferry(
            d,
            &[
                "pack",
                model.to_str().expect("utf8"),
                "--name",
                "iris",
                "--reference",
                reference.to_str().expect("utf8"),
                "--label",
                "species",
                "--description",
                description,
                "-o",
                file,
            ],
            None,
        );
        assert!(packed.status.success(), "{}", String::from_utf8_lossy(&packed.stderr));
    }
    std::fs::write(d.join("ferry.toml"), "allow_anonymous_inference = true\n").expect("config");
    let server = FerryProcess::start_in(Path::new(env!("CARGO_BIN_EXE_ferry")), d, &[], &[]).expect("serve");
    for (file, alias) in [("v1.ferry", Some("production")), ("v2.ferry", None)] {
        let mut args = vec!["push", file];
        args.extend(alias.iter().flat_map(|a| ["--alias", *a]));
        let pushed = ferry(d, &args, Some(&server));
        assert!(pushed.status.success(), "{}", String::from_utf8_lossy(&pushed.stderr));
    }
    // Error rate and latency cannot tell the two apart (they are the same network); only ground truth can.
    let started = ferry(
        d,
        &[
            "rollout",
            "iris",
            "--candidate",
            "2",
            "--steps",
            "50,100",
            "--interval",
            "1s",
            "--min-requests",
            "5",
            "--min-labelled",
            "40",
            "--latency-tolerance",
            "5",
            "--quality-tolerance",
            "0.05",
        ],
        Some(&server),
    );
    assert!(started.status.success(), "{}", String::from_utf8_lossy(&started.stderr));

    // Traffic, and its ground truth a moment later (predictions are stored in batches): version 1 is always right,
    // version 2 wrong on 40% of rows.
    let rows = rows_of("iris_reference.csv");
    let started = Instant::now();
    let mut k = 0usize;
    let mut truth: Vec<Value> = Vec::new();
    let mut experiment: Option<Value> = None;
    let rollout = loop {
        let (_, rollout) = api(&server, "GET", "/api/v1/models/iris/rollout", None);
        if rollout["canary"]["phase"] != "progressing" {
            break rollout;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "no verdict within 60 s: {rollout}");
        for _ in 0..10 {
            let chunk = &rows[(k % 3) * 40..(k % 3) * 40 + 40];
            let data: Vec<f64> = chunk.iter().flatten().copied().collect();
            let id = format!("c-{k}");
            k += 1;
            let body =
                json!({"id": id, "inputs": [{"name": "input", "shape": [40, 4], "datatype": "FP32", "data": data}]});
            let (status, response) = api(&server, "POST", "/v2/models/iris/infer", Some(&body));
            assert_eq!(status, 200, "{response}");
            let version = response["model_version"].as_str().unwrap_or_default().to_owned();
            let outputs = response["outputs"].as_array().expect("outputs");
            let labels = outputs.iter().find(|o| o["name"] == "label").expect("label")["data"].clone();
            for (row, l) in labels.as_array().expect("data").iter().enumerate() {
                let predicted = l.as_i64().expect("label");
                let label = if version == "2" && row % 5 < 2 { (predicted + 1) % 3 } else { predicted };
                truth.push(json!({"request_id": id, "row": row, "label": label}));
            }
        }
        std::thread::sleep(Duration::from_millis(300));
        let (status, report) =
            api(&server, "POST", "/api/v1/models/iris/feedback", Some(&Value::Array(std::mem::take(&mut truth))));
        assert_eq!(status, 200, "{report}");
        assert_eq!(report["unmatched"], 0, "{report}");
        // The A/B view of the same step shows each arm's live accuracy beside its requests.
        let (status, view) = api(&server, "GET", "/api/v1/models/iris/experiments/current", None);
        if status == 200
            && view["arms"].as_array().is_some_and(|a| a.iter().all(|arm| arm["labelled"].as_u64() > Some(0)))
        {
            experiment = Some(view);
        }
    };
    let view = experiment.expect("the experiment showed ground truth for both arms while the rollout ran");
    let arms = view["arms"].as_array().expect("arms");
    assert_eq!(
        (arms[0]["version"].as_u64(), arms[0]["quality_metric"].as_str()),
        (Some(1), Some("accuracy")),
        "{view}"
    );
    assert_eq!(arms[0]["quality"].as_f64(), Some(1.0), "version 1 is always right: {view}");
    let candidate = arms[1]["quality"].as_f64().expect("candidate accuracy");
    assert!((0.45..0.75).contains(&candidate), "version 2 is right on about 60% of rows: {view}");
    let interval = arms[1]["quality_interval"].as_array().expect("interval");
    assert!(interval[0].as_f64() < Some(candidate) && interval[1].as_f64() > Some(candidate), "{view}");
    assert!(
        view["comparisons"].as_array().expect("comparisons").iter().any(|c| c["metric"] == "misclassified"),
        "{view}"
    );
    assert_eq!(rollout["canary"]["phase"], "rolled_back", "{rollout}");
    let last = &rollout["history"].as_array().expect("history").last().cloned().unwrap_or_default()["judgement"];
    let check = last["metrics"].as_array().expect("metrics").iter().find(|m| m["metric"] == "misclassified").cloned();
    assert_eq!(check.as_ref().map(|c| c["verdict"].clone()), Some(json!("fail")), "{last}");
    assert!(last["reason"].as_str().is_some_and(|r| r.contains("misclassified")), "{last}");
    let (_, alias) = api(&server, "GET", "/api/v1/models/iris/aliases/production", None);
    assert_eq!(alias["version"], 1, "{alias}");
}
