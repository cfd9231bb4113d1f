//! Test helpers shared by the crates' integration tests: the fixture models, a model repository loaded from them,
//! and [`FerryProcess`], a real `ferry serve` process on a free loopback port that stops when dropped.
//!
//! Dev-only: nothing shipped depends on it.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use ferry_serving::{EngineChoice, EngineSettings, LoadedModel, ModelConfig, ModelRepository, ModelSource};
use ferry_types::{ModelName, ModelVersion};

pub use ferry_engine::conformance::{Fixture, fixtures_dir, load_fixtures};

/// The repository root.
#[must_use]
pub fn repo_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.canonicalize().unwrap_or(root)
}

/// Every fixture with its reference cases.
///
/// # Panics
/// When the fixture files are missing or malformed (a broken checkout).
#[must_use]
pub fn fixtures() -> Vec<Fixture> {
    load_fixtures(&fixtures_dir()).expect("fixtures/manifest.json and its case files")
}

/// One fixture by name.
///
/// # Panics
/// When there is no such fixture.
#[must_use]
pub fn fixture(name: &str) -> Fixture {
    fixtures().into_iter().find(|f| f.name == name).unwrap_or_else(|| panic!("no fixture {name}"))
}

/// Loads the named fixtures as version 1 of models of the same name, on `engine`.
///
/// # Errors
/// The load error of the first model that fails.
pub fn load_repository(
    names: &[&str],
    engine: EngineChoice,
    config: ModelConfig,
) -> anyhow::Result<Arc<ModelRepository>> {
    let repository = Arc::new(ModelRepository::new());
    for name in names {
        let source = ModelSource {
            name: ModelName::new(*name)?,
            version: ModelVersion::new(1)?,
            path: fixtures_dir().join(format!("models/{name}.onnx")),
            config: config.clone(),
            bytes: None,
            expected_signature: None,
        };
        let defaults = ModelConfig { engine: Some(engine), ..ModelConfig::default() };
        repository.insert(LoadedModel::load(&source, &defaults, &EngineSettings::default())?);
    }
    Ok(repository)
}

/// The admin key every test server starts with (`FERRY_ADMIN_KEY`); test-only, never a real secret.
pub const TEST_ADMIN_KEY: &str = "fry_test_admin_key_0123456789abcdef0123456789abcdef";

/// A `ferry serve` process on 127.0.0.1 with a free port, killed when dropped.
#[derive(Debug)]
pub struct FerryProcess {
    child: Option<Child>,
    /// `http://127.0.0.1:PORT`
    pub base_url: String,
    /// `127.0.0.1:PORT`
    pub addr: String,
    /// `127.0.0.1:PORT` of the gRPC front end.
    pub grpc_addr: String,
    _data: Option<tempfile::TempDir>,
}

impl FerryProcess {
    /// Starts `binary serve ARGS… --http-port 0` in a fresh working directory and waits until it is ready.
    ///
    /// # Errors
    /// When the process exits or is not ready within 60 s; the error carries its output.
    pub fn start(binary: &Path, args: &[&str]) -> anyhow::Result<Self> {
        let data = tempfile::tempdir()?;
        let mut all = vec!["--allow-anonymous-inference"];
        all.extend_from_slice(args);
        let mut process = Self::start_in(binary, data.path(), &all, &[])?;
        process._data = Some(data);
        Ok(process)
    }

    /// Starts `binary serve ARGS…` with `envs` in the working directory `dir` (kept after the process ends, so that
    /// a restart finds the same `./ferry-data`), and waits until it is ready.
    ///
    /// # Errors
    /// As [`FerryProcess::start`].
    pub fn start_in(binary: &Path, dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> anyhow::Result<Self> {
        let mut child = Command::new(binary)
            .arg("serve")
            .args(args)
            .args(["--host", "127.0.0.1", "--http-port", "0", "--grpc-port", "0"])
            .env("FERRY_ADMIN_KEY", TEST_ADMIN_KEY)
            .envs(envs.iter().copied())
            .current_dir(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let stdout = child.stdout.take().context("stdout")?;
        let mut reader = BufReader::new(stdout);
        let (mut line, mut grpc_line) = (String::new(), String::new());
        reader.read_line(&mut line)?;
        reader.read_line(&mut grpc_line)?;
        let (Some(url), Some(grpc)) = (
            line.trim().strip_prefix("ferry listening on "),
            grpc_line.trim().strip_prefix("ferry gRPC listening on "),
        ) else {
            let out = child.wait_with_output()?;
            bail!("ferry did not start: {line}{grpc_line}{}", String::from_utf8_lossy(&out.stderr));
        };
        let base_url = url.to_owned();
        let addr = base_url.trim_start_matches("http://").to_owned();
        let grpc_addr = grpc.to_owned();
        let mut process = Self { child: Some(child), base_url, addr, grpc_addr, _data: None };
        process.wait_ready(Duration::from_secs(60))?;
        Ok(process)
    }

    fn wait_ready(&mut self, limit: Duration) -> anyhow::Result<()> {
        let started = Instant::now();
        while started.elapsed() < limit {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    std::io::Read::read_to_string(&mut e, &mut err)?;
                }
                bail!("ferry exited with {status} before it was ready:\n{err}");
            }
            if http_status(&self.addr, "GET", "/v2/health/ready").ok() == Some(200) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("ferry was not ready within {limit:?}")
    }

    /// The process id.
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Takes the child process, so the test can signal and wait for it itself.
    pub fn take_child(&mut self) -> Option<Child> {
        self.child.take()
    }
}

impl Drop for FerryProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            drop(child.kill());
            drop(child.wait());
        }
    }
}

/// Sends an HTTP/1.1 request with an optional body over a plain socket; returns the status and the body.
///
/// # Errors
/// Connection errors and unparsable responses.
pub fn http_request(addr: &str, method: &str, path: &str, body: Option<&[u8]>) -> anyhow::Result<(u16, String)> {
    http_request_as(addr, None, method, path, body)
}

/// [`http_request`] with `Authorization: Bearer KEY` when `key` is given.
///
/// # Errors
/// Connection errors and unparsable responses.
pub fn http_request_as(
    addr: &str,
    key: Option<&str>,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
) -> anyhow::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let body = body.unwrap_or_default();
    let auth = key.map(|k| format!("Authorization: Bearer {k}\r\n")).unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\n\
         {auth}Content-Length: {}\r\n\r\n",
        body.len()
    )?;
    stream.write_all(body)?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response);
    let (head, rest) = text.split_once("\r\n\r\n").context("no header end")?;
    let status = head.split_whitespace().nth(1).context("no status line")?.parse()?;
    // Chunked bodies (streamed answers) are de-chunked minimally: the tests read JSON answers, which axum sends whole.
    Ok((status, rest.to_owned()))
}

/// Sends a bodyless HTTP/1.1 request over a plain socket and returns the status code (no client library needed).
///
/// # Errors
/// Connection errors and unparsable responses.
pub fn http_status(addr: &str, method: &str, path: &str) -> anyhow::Result<u16> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(stream, "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
    let mut response = String::new();
    drop(stream.read_to_string(&mut response));
    let status = response.split_whitespace().nth(1).context("no status line")?;
    Ok(status.parse()?)
}

/// The ferry and process metric names a PromQL expression reads (for checking dashboards against `/metrics`).
#[must_use]
pub fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let starts_word = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        if starts_word && (expr[i..].starts_with("ferry_") || expr[i..].starts_with("process_")) {
            let end = expr[i..].find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).map_or(expr.len(), |e| i + e);
            names.push(expr[i..end].to_owned());
            i = end;
        } else {
            i += 1;
        }
    }
    names
}

/// Every metric name the Grafana dashboard in `deploy/grafana/` reads, from its panels and variables.
///
/// # Panics
/// When the dashboard is missing or malformed.
#[must_use]
pub fn dashboard_metric_names() -> std::collections::BTreeSet<String> {
    let path = repo_root().join("deploy/grafana/ferry.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("dashboard")).expect("JSON");
    let mut named = std::collections::BTreeSet::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        assert!(panel["title"].as_str().is_some_and(|t| !t.is_empty()), "every panel has a title: {panel}");
        for target in panel["targets"].as_array().expect("targets") {
            named.extend(metric_names(target["expr"].as_str().expect("expr")));
        }
    }
    for query in dashboard["templating"]["list"].as_array().expect("variables") {
        if let Some(q) = query["query"].as_str() {
            named.extend(metric_names(q));
        }
    }
    named
}

/// An ONNX model `y = x · W` with `x: float[batch, inputs]` and a `W` of `inputs × outputs` pseudo-random floats
/// (different for each `seed`), so that a test can load models of a known, large size without committing them.
/// Encoded by hand: the few protobuf fields it needs are not worth a code generator.
#[must_use]
pub fn matmul_model(inputs: usize, outputs: usize, seed: u64) -> Vec<u8> {
    fn varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    fn number(out: &mut Vec<u8>, field: u64, v: u64) {
        varint(out, field << 3);
        varint(out, v);
    }
    fn bytes(out: &mut Vec<u8>, field: u64, b: &[u8]) {
        varint(out, (field << 3) | 2);
        varint(out, b.len() as u64);
        out.extend_from_slice(b);
    }
    fn value_info(name: &str, columns: usize) -> Vec<u8> {
        let mut batch = Vec::new();
        bytes(&mut batch, 2, b"batch");
        let mut width = Vec::new();
        number(&mut width, 1, columns as u64);
        let mut shape = Vec::new();
        bytes(&mut shape, 1, &batch);
        bytes(&mut shape, 1, &width);
        let mut tensor = Vec::new();
        number(&mut tensor, 1, 1); // FLOAT
        bytes(&mut tensor, 2, &shape);
        let mut ty = Vec::new();
        bytes(&mut ty, 1, &tensor);
        let mut info = Vec::new();
        bytes(&mut info, 1, name.as_bytes());
        bytes(&mut info, 2, &ty);
        info
    }
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut raw = Vec::with_capacity(inputs * outputs * 4);
    for _ in 0..inputs * outputs {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let w = ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.1;
        raw.extend_from_slice(&w.to_le_bytes());
    }
    let mut weights = Vec::new();
    number(&mut weights, 1, inputs as u64);
    number(&mut weights, 1, outputs as u64);
    number(&mut weights, 2, 1); // FLOAT
    bytes(&mut weights, 8, b"W");
    bytes(&mut weights, 9, &raw);
    let mut node = Vec::new();
    bytes(&mut node, 1, b"x");
    bytes(&mut node, 1, b"W");
    bytes(&mut node, 2, b"y");
    bytes(&mut node, 3, b"matmul");
    bytes(&mut node, 4, b"MatMul");
    let mut graph = Vec::new();
    bytes(&mut graph, 1, &node);
    bytes(&mut graph, 2, b"matmul");
    bytes(&mut graph, 5, &weights);
    bytes(&mut graph, 11, &value_info("x", inputs));
    bytes(&mut graph, 12, &value_info("y", outputs));
    let mut opset = Vec::new();
    bytes(&mut opset, 1, b"");
    number(&mut opset, 2, 17);
    let mut model = Vec::new();
    number(&mut model, 1, 8); // IR version
    bytes(&mut model, 2, b"ferry-test-support");
    bytes(&mut model, 7, &graph);
    bytes(&mut model, 8, &opset);
    model
}

/// The resident set of process `pid`, in bytes.
///
/// # Errors
/// When `/proc/PID/status` cannot be read or has no `VmRSS` line.
pub fn resident_bytes_of(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("no VmRSS in /proc/PID/status")?;
    Ok(kib * 1024)
}
