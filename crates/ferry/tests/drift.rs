//! `ferry drift` end to end: a shifted current file is flagged column by column with Evidently's tests, an
//! unshifted one is not, the numbers are the monitor crate's, a package's profile serves as the reference, the HTML
//! report charts every column, and bad input gets a clear error.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ferry_monitor::drift::{Column, Method, column_drift};
use ferry_test_support::fixtures_dir;
use serde_json::Value;

fn ferry(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferry")).args(args).current_dir(dir).output().expect("run ferry")
}

/// A deterministic stream of uniform numbers in [0, 1).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        #[allow(clippy::cast_precision_loss)]
        let x = (self.0 >> 11) as f64 / (1u64 << 53) as f64;
        x
    }
}

/// Rows of `x` (roughly normal, mean `shift`), `colour` (a/b/c with weights) and `constant`.
fn write_csv(path: &Path, rows: usize, shift: f64, weights: [f64; 3], seed: u64) -> Vec<(f64, String)> {
    let mut rng = Lcg(seed);
    let mut out = String::from("x,colour,constant\n");
    let mut values = Vec::new();
    for _ in 0..rows {
        let x = (0..12).map(|_| rng.next()).sum::<f64>() - 6.0 + shift;
        let x = (x * 10_000.0).round() / 10_000.0;
        let u = rng.next();
        let colour = if u < weights[0] {
            "a"
        } else if u < weights[0] + weights[1] {
            "b"
        } else {
            "c"
        };
        out.push_str(&format!("{x},{colour},7\n"));
        values.push((x, colour.to_owned()));
    }
    std::fs::write(path, out).expect("write csv");
    values
}

fn json_of(out: &Output) -> Value {
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("JSON")
}

fn column<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["columns"].as_array().expect("columns").iter().find(|c| c["column"] == name).expect("column")
}

#[test]
fn a_shifted_file_drifts_an_unshifted_one_does_not_with_the_monitor_numbers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let reference = write_csv(&d.join("ref.csv"), 500, 0.0, [0.5, 0.3, 0.2], 1);
    let shifted = write_csv(&d.join("shifted.csv"), 400, 0.6, [0.2, 0.3, 0.5], 2);
    // The first 400 rows of the reference itself: the same distribution, whatever the random draw.
    write_csv(&d.join("same.csv"), 400, 0.0, [0.5, 0.3, 0.2], 1);

    let report = json_of(&ferry(d, &["drift", "--reference", "ref.csv", "--current", "shifted.csv", "--json"]));
    let x = column(&report, "x");
    assert_eq!((x["method"].as_str(), x["drifted"].as_bool()), (Some("ks"), Some(true)), "{x}");
    let colour = column(&report, "colour");
    assert_eq!((colour["method"].as_str(), colour["drifted"].as_bool()), (Some("chisquare"), Some(true)), "{colour}");
    let constant = column(&report, "constant");
    assert_eq!((constant["method"].as_str(), constant["score"].as_f64()), (Some("z"), Some(1.0)), "{constant}");
    assert_eq!(report["dataset_drift"], true);
    assert!((report["drifted_share"].as_f64().expect("share") - 2.0 / 3.0).abs() < 1e-12);

    // The CLI's numbers are the monitor crate's on the same values.
    let expected = column_drift(
        &Column::Numerical(reference.iter().map(|r| r.0).collect()),
        &Column::Numerical(shifted.iter().map(|r| r.0).collect()),
        None,
        None,
    )
    .expect("drift");
    assert_eq!(expected.method, Method::Ks);
    assert!((x["score"].as_f64().expect("score") - expected.score).abs() < 1e-15, "{x} vs {expected:?}");
    assert_eq!(x["histograms"]["reference"].as_array().map(Vec::len), x["histograms"]["bins"].as_array().map(Vec::len));

    let same = json_of(&ferry(d, &["drift", "--reference", "ref.csv", "--current", "same.csv", "--json"]));
    assert!(same["columns"].as_array().expect("columns").iter().all(|c| c["drifted"] == false), "{same}");
    assert_eq!(same["dataset_drift"], false);

    // For pipelines: status 3 on drift, 0 otherwise.
    let table = ferry(d, &["drift", "--reference", "ref.csv", "--current", "shifted.csv", "--fail-on-drift"]);
    assert_eq!(table.status.code(), Some(3));
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.contains("dataset drift: YES") && text.contains("DRIFT"), "{text}");
    let calm = ferry(d, &["drift", "--reference", "ref.csv", "--current", "same.csv", "--fail-on-drift"]);
    assert_eq!(calm.status.code(), Some(0));

    // A chosen method and threshold apply to every column they fit.
    let psi = json_of(&ferry(
        d,
        &[
            "drift",
            "--reference",
            "ref.csv",
            "--current",
            "shifted.csv",
            "--method",
            "psi",
            "--threshold",
            "0.2",
            "--json",
        ],
    ));
    assert!(psi["columns"].as_array().expect("columns").iter().all(|c| c["method"] == "psi" && c["threshold"] == 0.2));

    // The HTML report: the verdict, and a chart per column.
    let out = ferry(d, &["drift", "--reference", "ref.csv", "--current", "shifted.csv", "--html", "report.html"]);
    assert!(out.status.success());
    let html = std::fs::read_to_string(d.join("report.html")).expect("report");
    assert_eq!(html.matches("<svg class=\"histogram\"").count(), 3);
    assert!(html.contains("Dataset drift: yes") && html.contains("<h2>colour</h2>"), "{html}");
}

fn fixture(name: &str) -> PathBuf {
    fixtures_dir().join("tabular").join(name)
}

#[test]
fn a_package_profile_is_a_reference_with_the_same_numbers_as_its_csv() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let model = ferry_test_support::repo_root().join("examples/models/iris/1/model.onnx");
    let (model, reference, current) =
        (model.to_str().expect("utf8"), fixture("iris_reference.csv"), fixture("iris_validation.csv"));
    let (reference, current) = (reference.to_str().expect("utf8"), current.to_str().expect("utf8"));
    let packed = ferry(d, &["pack", model, "--name", "iris", "--reference", reference, "-o", "iris.ferry"]);
    assert!(packed.status.success(), "{}", String::from_utf8_lossy(&packed.stderr));

    let from_package = json_of(&ferry(d, &["drift", "--reference", "iris.ferry", "--current", current, "--json"]));
    let from_csv = json_of(&ferry(d, &["drift", "--reference", reference, "--current", current, "--json"]));
    let columns = from_package["columns"].as_array().expect("columns");
    assert_eq!(columns.len(), 4, "the four features, not the label: {from_package}");
    for c in columns {
        let name = c["column"].as_str().expect("name");
        let other = column(&from_csv, name);
        assert_eq!(c["method"], other["method"], "{name}");
        assert!(
            (c["score"].as_f64().expect("score") - other["score"].as_f64().expect("score")).abs() < 1e-12,
            "{name}"
        );
    }
}

#[test]
fn bad_input_gets_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    write_csv(&d.join("ref.csv"), 50, 0.0, [0.5, 0.3, 0.2], 1);
    std::fs::write(d.join("other.csv"), "y,z\n1,2\n").expect("write");
    std::fs::write(d.join("header_only.csv"), "x,colour\n").expect("write");
    std::fs::write(d.join("ragged.csv"), "x,colour\n1,a\n2\n").expect("write");
    // A column empty on one side is skipped with a note; the others are tested.
    std::fs::write(d.join("empty_colour.csv"), "x,colour,constant\n0.5,,7\n0.1,NA,7\n").expect("write");
    let partial = ferry(d, &["drift", "--reference", "ref.csv", "--current", "empty_colour.csv", "--json"]);
    assert!(String::from_utf8_lossy(&partial.stderr).contains("column \"colour\" skipped"));
    let report = json_of(&partial);
    assert_eq!(report["columns"].as_array().map(Vec::len), Some(2), "{report}");
    for (args, want) in [
        (vec!["--current", "missing.csv"], "missing.csv"),
        (vec!["--current", "other.csv"], "no column in common"),
        (vec!["--current", "header_only.csv"], "no rows"),
        (vec!["--current", "ragged.csv"], "row 3"),
        (vec!["--current", "ref.csv", "--method", "magic"], "unknown drift method \"magic\"; known: ks, chisquare"),
        (vec!["--current", "ref.csv", "--method", "chisquare", "--columns", "x"], "chisquare does not apply"),
        (vec!["--current", "ref.csv", "--drift-share", "2"], "between 0 and 1"),
    ] {
        let mut all = vec!["drift", "--reference", "ref.csv"];
        all.extend(args.iter().copied());
        let out = ferry(d, &all);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(want), "{args:?}: {err}");
    }
}

/// The iris reference rows, as feature vectors.
fn iris_rows() -> Vec<[f64; 4]> {
    std::fs::read_to_string(fixture("iris_reference.csv"))
        .expect("reference")
        .lines()
        .skip(1)
        .map(|l| {
            let v: Vec<f64> = l.split(',').map(|x| x.parse().expect("number")).collect();
            [v[0], v[1], v[2], v[3]]
        })
        .collect()
}

/// Sends `rows` to the served iris model, 40 rows per request, asking for `outputs` only when given.
fn infer_rows(addr: &str, rows: &[[f64; 4]], outputs: Option<&[&str]>) {
    for chunk in rows.chunks(40) {
        let data: Vec<f64> = chunk.iter().flatten().copied().collect();
        let mut body = serde_json::json!({"inputs": [{"name": "input", "shape": [chunk.len(), 4], "datatype": "FP32", "data": data}]});
        if let Some(outputs) = outputs {
            body["outputs"] = outputs.iter().map(|o| serde_json::json!({"name": o})).collect();
        }
        let (status, text) =
            ferry_test_support::http_request(addr, "POST", "/v2/models/iris/infer", Some(body.to_string().as_bytes()))
                .expect("infer");
        assert_eq!(status, 200, "{text}");
    }
}

/// Polls the monitoring endpoint until `windows` windows are complete (bounded in time).
fn monitoring_after(addr: &str, windows: u64) -> Value {
    let started = std::time::Instant::now();
    loop {
        let (status, text) = ferry_test_support::http_request_as(
            addr,
            Some(ferry_test_support::TEST_ADMIN_KEY),
            "GET",
            "/api/v1/models/iris/monitoring",
            None,
        )
        .expect("monitoring");
        assert_eq!(status, 200, "{text}");
        let v: Value = serde_json::from_str(&text).expect("JSON");
        if v["windows_completed"].as_u64() >= Some(windows) {
            return v;
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(20), "no window completed: {v}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[test]
fn a_served_model_under_shifted_traffic_shows_drift_and_under_its_own_data_none() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let model = ferry_test_support::repo_root().join("examples/models/iris/1/model.onnx");
    let reference = fixture("iris_reference.csv");
    let packed = ferry(
        d,
        &[
            "pack",
            model.to_str().expect("utf8"),
            "--name",
            "iris",
            "--reference",
            reference.to_str().expect("utf8"),
            "-o",
            "iris.ferry",
        ],
    );
    assert!(packed.status.success(), "{}", String::from_utf8_lossy(&packed.stderr));
    let server = ferry_test_support::FerryProcess::start_in(
        Path::new(env!("CARGO_BIN_EXE_ferry")),
        d,
        &["--allow-anonymous-inference"],
        &[("FERRY_MONITORING__WINDOW_ROWS", "200")],
    )
    .expect("serve");
    let push = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["push", "iris.ferry", "--alias", "production"])
        .current_dir(d)
        .env("FERRY_SERVER", &server.base_url)
        .env("FERRY_API_KEY", ferry_test_support::TEST_ADMIN_KEY)
        .output()
        .expect("push");
    assert!(push.status.success(), "{}", String::from_utf8_lossy(&push.stderr));

    // The reference's own rows, twice: 240 rows fill one 200-row window, with nothing drifted.
    let rows = iris_rows();
    infer_rows(&server.addr, &[rows.clone(), rows.clone()].concat(), None);
    let calm = monitoring_after(&server.addr, 1);
    let window = &calm["latest"];
    assert_eq!(window["rows"], 200, "{calm}");
    assert_eq!(window["dataset_drift"], false, "{calm}");
    let columns = window["columns"].as_array().expect("columns");
    assert!(columns.iter().any(|c| c["role"] == "output"), "prediction drift is watched too: {calm}");
    for c in columns {
        assert_eq!(c["drifted"], false, "{c}");
    }

    // Shifted petals, from a client that asks for the label only: the features are still watched, column by column.
    let shifted: Vec<[f64; 4]> = rows.iter().map(|r| [r[0], r[1], r[2] + 2.0, r[3] + 1.0]).collect();
    infer_rows(&server.addr, &[shifted.clone(), shifted.clone()].concat(), Some(&["label"]));
    let alarmed = monitoring_after(&server.addr, 2);
    let window = &alarmed["latest"];
    let drifted = |name: &str| {
        window["columns"].as_array().expect("columns").iter().find(|c| c["column"] == name).expect("column")["drifted"]
            .clone()
    };
    assert_eq!(drifted("petal_length"), true, "{alarmed}");
    assert_eq!(drifted("petal_width"), true, "{alarmed}");
    assert_eq!(window["columns"][0]["method"], "ks", "120 reference rows: Evidently picks K-S");

    let (_, metrics) = ferry_test_support::http_request_as(
        &server.addr,
        Some(ferry_test_support::TEST_ADMIN_KEY),
        "GET",
        "/metrics",
        None,
    )
    .expect("metrics");
    assert!(
        metrics.contains(r#"ferry_drift_detected{model="iris",version="1",feature="petal_length"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"ferry_drift_score{model="iris",version="1",feature="petal_length",method="ks"}"#));

    // The same, read from the CLI.
    let shown = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["monitor", "iris", "--once"])
        .current_dir(d)
        .env("FERRY_SERVER", &server.base_url)
        .env("FERRY_API_KEY", ferry_test_support::TEST_ADMIN_KEY)
        .output()
        .expect("monitor");
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.status.success(), "{text}{}", String::from_utf8_lossy(&shown.stderr));
    assert!(text.contains("petal_length") && text.contains("DRIFT") && text.contains("2 completed"), "{text}");
    let unknown = Command::new(env!("CARGO_BIN_EXE_ferry"))
        .args(["monitor", "no-such-model", "--once"])
        .env("FERRY_SERVER", &server.base_url)
        .env("FERRY_API_KEY", ferry_test_support::TEST_ADMIN_KEY)
        .output()
        .expect("monitor");
    assert!(!unknown.status.success());
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("not watched"),
        "{}",
        String::from_utf8_lossy(&unknown.stderr)
    );
}
