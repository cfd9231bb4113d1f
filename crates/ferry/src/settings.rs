//! The settings tree and its layers: built-in defaults → `ferry.toml` → `FERRY_…` environment → flags.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use ferry_serving::{EngineChoice, ModelConfig};
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Every setting of a ferry server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Address to listen on.
    pub host: String,
    /// HTTP port (0 picks a free one).
    pub http_port: u16,
    /// gRPC port (0 picks a free one).
    pub grpc_port: u16,
    /// Log format.
    pub log_format: LogFormat,
    /// `libonnxruntime` to load instead of searching for it.
    pub onnxruntime_lib: Option<PathBuf>,
    /// A Triton-style model repository to serve.
    pub model_repository: Option<PathBuf>,
    /// Largest request body in bytes.
    pub max_request_bytes: usize,
    /// HTTP requests handled at once; more get 503 at once.
    pub max_concurrent_requests: usize,
    /// Requests per second per API key (unset: no limit); a key's own limit overrides it.
    pub rate_limit_per_key: Option<u32>,
    /// Requests per API key per UTC day (unset: no quota); a key's own quota overrides it.
    pub daily_quota_per_key: Option<u64>,
    /// Where ferry keeps its data: the SQLite registry, package files, unpacked models.
    pub data_dir: PathBuf,
    /// The registry database: `sqlite://PATH` or `postgres://USER@HOST/DB`; empty means SQLite in `data_dir`.
    pub registry: String,
    /// The alias whose versions are served.
    pub serve_alias: String,
    /// Largest package upload in bytes.
    pub max_package_bytes: u64,
    /// Serve inference without an API key (as an anonymous predictor); management always needs a key.
    pub allow_anonymous_inference: bool,
    /// Public key files (`ferry keygen`) whose package signatures are trusted; packages signed by other keys are
    /// refused once any is listed.
    pub trusted_signers: Vec<PathBuf>,
    /// Refuse packages that are not signed by a trusted key.
    pub require_signature: bool,
    /// PEM certificate chain: serve HTTPS and gRPC over TLS.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificates: require client certificates signed by them (mutual TLS).
    pub tls_client_ca: Option<PathBuf>,
    /// A file holding the master key (64 hex digits): packages are stored encrypted under it. `FERRY_MASTER_KEY`
    /// gives the key itself instead (never a setting, so that `ferry config show` cannot print it).
    pub master_key_file: Option<PathBuf>,
    /// Earlier master key files, read-only: packages they wrapped stay readable while `ferry keys rotate-master`
    /// moves them to the current key (zero-downtime rotation).
    pub previous_master_key_files: Vec<PathBuf>,
    /// Leftovers of interrupted uploads older than this are removed at start-up (seconds). Keep it longer than any
    /// upload when several replicas share one artifact store.
    pub orphan_grace_seconds: u64,
    /// Prediction logging (off unless `models` names some).
    pub prediction_log: PredictionLogSettings,
    /// Live drift of registry models against their packages' reference profiles.
    pub monitoring: MonitoringSettings,
    /// Where alert notices go.
    pub alerting: AlertingSettings,
    /// Alert rules (`[[alerts]]`).
    pub alerts: Vec<ferry_monitor::alerts::AlertRule>,
    /// Defaults for every model; a model's own `config.toml` overrides them.
    pub models: ModelConfig,
    /// Memory the instances of every loaded model may hold together, in MiB (none by default). To load another
    /// instance past it, ferry stops instances of the least recently used idle models down to their
    /// `min_instances` (models with `min_instances = 0` restart on their next request).
    pub memory_budget_mb: Option<u64>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            http_port: 8000,
            grpc_port: 8001,
            log_format: LogFormat::Text,
            onnxruntime_lib: None,
            model_repository: None,
            max_request_bytes: 64 * 1024 * 1024,
            max_concurrent_requests: 4096,
            rate_limit_per_key: None,
            daily_quota_per_key: None,
            data_dir: PathBuf::from("ferry-data"),
            registry: String::new(),
            serve_alias: "production".into(),
            max_package_bytes: 8 * 1024 * 1024 * 1024,
            orphan_grace_seconds: 0,
            allow_anonymous_inference: false,
            trusted_signers: Vec::new(),
            require_signature: false,
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            master_key_file: None,
            previous_master_key_files: Vec::new(),
            models: ModelConfig::default(),
            memory_budget_mb: None,
            prediction_log: PredictionLogSettings::default(),
            monitoring: MonitoringSettings::default(),
            alerting: AlertingSettings::default(),
            alerts: Vec::new(),
        }
    }
}

/// `[prediction_log]`: which models' predictions are kept, about whom, without what, for how long.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PredictionLogSettings {
    /// Models whose requests and responses are logged (`"*"` for all); empty: logging off.
    pub models: Vec<String>,
    /// The request header (HTTP) or metadata key (gRPC) naming the data subject.
    pub subject_header: String,
    /// Input and output names whose values are never stored.
    pub redact: Vec<String>,
    /// Days a logged prediction is kept.
    pub retention_days: u64,
}

impl Default for PredictionLogSettings {
    fn default() -> Self {
        Self { models: Vec::new(), subject_header: "x-subject-id".into(), redact: Vec::new(), retention_days: 30 }
    }
}

/// `[monitoring]`: live drift of served registry models.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MonitoringSettings {
    /// Watch drift at all.
    pub enabled: bool,
    /// Share of requests copied for drift (0 to 1).
    pub sample_rate: f64,
    /// Rows per drift window.
    pub window_rows: usize,
    /// Rows of full drift windows waiting for the evaluator (at least one window); past this they are dropped (and
    /// counted), never waited for.
    pub buffer: usize,
    /// Share of drifted columns at which a window counts as drifted.
    pub drift_share: f64,
    /// Keep each registry model's predictions for ground-truth feedback and compute live quality from it.
    pub feedback: bool,
    /// Live quality feeds alerts only once the window has at least this many feedback pairs.
    pub min_feedback_rows: u64,
    /// Live quality covers the predictions made within this window (`"1day"`, `"6h"`).
    #[serde(with = "duration_text")]
    pub feedback_window: std::time::Duration,
    /// Prediction rows waiting for the feedback writer, which takes them every 100 ms (a saturated 2-core server
    /// makes about 10,000 in that time); past this they are dropped (and counted), never waited for.
    pub feedback_buffer: usize,
    /// Predictions kept for feedback are deleted after this many days.
    pub feedback_retention_days: u64,
    /// SQLite registries: MiB the spool of kept predictions may hold on disk (rows appended and not yet indexed into
    /// the database, which a saturated server does when it has CPU to spare, plus up to 64 MiB already indexed);
    /// past this, predictions are dropped and counted.
    pub feedback_spool_mb: u64,
    /// Live latency and throughput cover this much of the recent past.
    #[serde(with = "duration_text")]
    pub performance_window: std::time::Duration,
    /// Latency and throughput baselines are learned over this long after a version's first request.
    #[serde(with = "duration_text")]
    pub baseline_warmup: std::time::Duration,
    /// How often live figures are computed and alert rules evaluated.
    #[serde(with = "duration_text")]
    pub evaluation_interval: std::time::Duration,
}

impl Default for MonitoringSettings {
    fn default() -> Self {
        use std::time::Duration;
        Self {
            enabled: true,
            sample_rate: 1.0,
            window_rows: 1000,
            buffer: 10_000,
            drift_share: 0.5,
            feedback: true,
            min_feedback_rows: 100,
            feedback_window: Duration::from_secs(86_400),
            feedback_buffer: 100_000,
            feedback_retention_days: 30,
            feedback_spool_mb: 1024,
            performance_window: Duration::from_secs(60),
            baseline_warmup: Duration::from_secs(600),
            evaluation_interval: Duration::from_secs(15),
        }
    }
}

/// `[alerting]`: the receivers of alert notices (the log always gets them).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertingSettings {
    /// Webhooks (`[[alerting.webhooks]]`).
    pub webhooks: Vec<WebhookSettings>,
}

/// One webhook receiver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    /// `http://` or `https://` URL notices are POSTed to.
    pub url: String,
    /// The environment variable holding the HMAC-SHA256 key (never the key itself in a file that
    /// `ferry config show` prints); without it, notices are not signed.
    #[serde(default)]
    pub secret_env: Option<String>,
    /// Attempts per notice.
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// Wait before the first retry, doubled for each further one.
    #[serde(default = "default_backoff", with = "duration_text")]
    pub initial_backoff: std::time::Duration,
    /// Time limit of one attempt.
    #[serde(default = "default_webhook_timeout", with = "duration_text")]
    pub timeout: std::time::Duration,
}

fn default_attempts() -> u32 {
    5
}

fn default_backoff() -> std::time::Duration {
    std::time::Duration::from_millis(500)
}

fn default_webhook_timeout() -> std::time::Duration {
    std::time::Duration::from_secs(10)
}

/// Durations written as text (`"30s"`, `"5m"`, `"1day"`), read and written through humantime.
mod duration_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(text.trim())
            .map_err(|e| serde::de::Error::custom(format!("{text:?} is not a duration like \"30s\" or \"5m\": {e}")))
    }
}

/// Top-level keys that `FERRY_<KEY>` may set; other `FERRY_…` variables belong to the client commands.
const ENV_KEYS: &[&str] = &[
    "host",
    "memory_budget_mb",
    "http_port",
    "grpc_port",
    "log_format",
    "onnxruntime_lib",
    "model_repository",
    "max_request_bytes",
    "max_concurrent_requests",
    "rate_limit_per_key",
    "daily_quota_per_key",
    "data_dir",
    "registry",
    "serve_alias",
    "max_package_bytes",
    "orphan_grace_seconds",
    "allow_anonymous_inference",
    "trusted_signers",
    "require_signature",
    "tls_cert",
    "tls_key",
    "tls_client_ca",
    "master_key_file",
    "previous_master_key_files",
    "models",
    "prediction_log",
    "monitoring",
    "alerting",
    "alerts",
];

impl Settings {
    /// Checks values that the types alone do not.
    ///
    /// # Errors
    /// A message naming the setting.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.host.trim().is_empty() {
            bail!("host must not be empty");
        }
        if self.memory_budget_mb == Some(0) {
            bail!("memory_budget_mb must be at least 1 (leave it out for no budget)");
        }
        if self.max_request_bytes < 1024 {
            bail!("max_request_bytes must be at least 1024, got {}", self.max_request_bytes);
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            bail!("tls_cert and tls_key go together: give both or neither");
        }
        if self.tls_client_ca.is_some() && self.tls_cert.is_none() {
            bail!("tls_client_ca needs tls_cert and tls_key");
        }
        if self.require_signature && self.trusted_signers.is_empty() {
            bail!("require_signature is on but trusted_signers lists no public key");
        }
        if ferry_types::ModelName::new(self.serve_alias.as_str()).is_err() {
            bail!("serve_alias {:?} is not a valid alias name", self.serve_alias);
        }
        if !self.previous_master_key_files.is_empty() && self.master_key_file.is_none() {
            let from_env = std::env::var("FERRY_MASTER_KEY").is_ok_and(|v| !v.trim().is_empty());
            if !from_env {
                bail!("previous_master_key_files needs a current master key (master_key_file or FERRY_MASTER_KEY)");
            }
        }
        let m = &self.monitoring;
        if !(0.0..=1.0).contains(&m.sample_rate) || !(0.0..=1.0).contains(&m.drift_share) {
            bail!("monitoring.sample_rate and monitoring.drift_share must be between 0 and 1");
        }
        if m.window_rows == 0 || m.buffer == 0 || m.feedback_buffer == 0 {
            bail!("monitoring.window_rows, monitoring.buffer and monitoring.feedback_buffer must be at least 1");
        }
        if m.feedback_retention_days == 0 || m.feedback_spool_mb == 0 {
            bail!("monitoring.feedback_retention_days and monitoring.feedback_spool_mb must be at least 1");
        }
        for (name, d) in [
            ("feedback_window", m.feedback_window),
            ("performance_window", m.performance_window),
            ("evaluation_interval", m.evaluation_interval),
        ] {
            if d < std::time::Duration::from_millis(10) {
                bail!("monitoring.{name} must be at least 10ms");
            }
        }
        let mut names = std::collections::HashSet::new();
        for rule in &self.alerts {
            rule.validate().map_err(|e| anyhow::anyhow!("[[alerts]]: {e}"))?;
            if !names.insert(rule.name.as_str()) {
                bail!("[[alerts]]: two rules are named {:?}; names must be unique", rule.name);
            }
        }
        for hook in &self.alerting.webhooks {
            let url = reqwest::Url::parse(&hook.url)
                .with_context(|| format!("alerting.webhooks: {:?} is not a URL", hook.url))?;
            if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
                bail!("alerting.webhooks: {:?} must be an http:// or https:// URL", hook.url);
            }
            if hook.max_attempts == 0 {
                bail!("alerting.webhooks: max_attempts of {:?} must be at least 1", hook.url);
            }
        }
        if self.prediction_log.retention_days == 0 {
            bail!("prediction_log.retention_days must be at least 1");
        }
        if axum_free_header_name(&self.prediction_log.subject_header).is_none() {
            bail!("prediction_log.subject_header {:?} is not a valid header name", self.prediction_log.subject_header);
        }
        self.models.resolve().map_err(|e| anyhow::anyhow!("[models]: {e}"))?;
        Ok(())
    }

    /// The master key, from `FERRY_MASTER_KEY` or `master_key_file`; `None` when neither is set (packages are then
    /// stored in plaintext).
    ///
    /// # Errors
    /// Both set, an unreadable file, or a malformed key (the message never contains the key).
    pub fn master_key(&self) -> anyhow::Result<Option<ferry_registry::MasterKey>> {
        let from_env = std::env::var("FERRY_MASTER_KEY").ok().filter(|v| !v.trim().is_empty());
        match (from_env, &self.master_key_file) {
            (Some(_), Some(_)) => bail!("FERRY_MASTER_KEY and master_key_file are both set; give the master key once"),
            (Some(text), None) => Ok(Some(ferry_registry::MasterKey::from_hex(&text).context("FERRY_MASTER_KEY")?)),
            (None, Some(path)) => read_master_key(path).map(Some),
            (None, None) => Ok(None),
        }
    }

    /// The earlier master keys, read from their files.
    ///
    /// # Errors
    /// An unreadable file or a malformed key.
    pub fn previous_master_keys(&self) -> anyhow::Result<Vec<ferry_registry::MasterKey>> {
        self.previous_master_key_files.iter().map(|p| read_master_key(p)).collect()
    }

    /// The registry database URL: the configured one, or SQLite under the data directory.
    #[must_use]
    pub fn registry_url(&self) -> String {
        if self.registry.is_empty() {
            ferry_registry::Registry::sqlite_url(&self.data_dir.join("registry.db"))
        } else {
            self.registry.clone()
        }
    }
}

/// Reads a master key file, warning when others may read it.
///
/// # Errors
/// An unreadable file or a malformed key.
pub fn read_master_key(path: &Path) -> anyhow::Result<ferry_registry::MasterKey> {
    let text = zeroize::Zeroizing::new(
        std::fs::read_to_string(path).with_context(|| format!("master key file {}", path.display()))?,
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o077 != 0) {
            tracing::warn!(file = %path.display(), "the master key file is readable by other users; chmod 600 it");
        }
    }
    ferry_registry::MasterKey::from_hex(&text).with_context(|| format!("master key file {}", path.display()))
}

/// A lowercase HTTP header name of token characters, or `None`.
fn axum_free_header_name(name: &str) -> Option<String> {
    let ok = !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    ok.then(|| name.to_ascii_lowercase())
}

/// Flags that override settings; each names its environment variable and `ferry.toml` key.
#[derive(Debug, Clone, Default, Args, Serialize)]
pub struct SettingsArgs {
    /// Settings file [env: FERRY_CONFIG] [default: ./ferry.toml if present].
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Address to listen on [env: FERRY_HOST] [default: 127.0.0.1].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// HTTP port; 0 picks a free one [env: FERRY_HTTP_PORT] [default: 8000].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_port: Option<u16>,
    /// gRPC port; 0 picks a free one [env: FERRY_GRPC_PORT] [default: 8001].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grpc_port: Option<u16>,
    /// Log format [env: FERRY_LOG_FORMAT] [default: text].
    #[arg(long, value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<LogFormat>,
    /// Path of libonnxruntime.so, instead of searching ORT_DYLIB_PATH, the onnxruntime Python package and the
    /// system library path [env: FERRY_ONNXRUNTIME_LIB].
    #[arg(long, value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub onnxruntime_lib: Option<PathBuf>,
    /// Serve a Triton-style model repository: DIR/<name>/<version>/model.onnx, with an optional
    /// DIR/<name>/config.toml [env: FERRY_MODEL_REPOSITORY].
    #[arg(long, value_name = "DIR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_repository: Option<PathBuf>,
    /// Largest request body in bytes [env: FERRY_MAX_REQUEST_BYTES] [default: 67108864].
    #[arg(long, value_name = "BYTES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_request_bytes: Option<usize>,
    /// Data directory [env: FERRY_DATA_DIR] [default: ./ferry-data].
    #[arg(long, value_name = "DIR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// Registry database: sqlite://PATH or postgres://USER@HOST/DB [env: FERRY_REGISTRY] [default: SQLite in the
    /// data directory].
    #[arg(long, value_name = "URL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registry: Option<String>,
    /// Serve the registry versions this alias points at [env: FERRY_SERVE_ALIAS] [default: production].
    #[arg(long, value_name = "ALIAS")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serve_alias: Option<String>,
    /// Largest package upload in bytes [env: FERRY_MAX_PACKAGE_BYTES] [default: 8 GiB].
    #[arg(long, value_name = "BYTES")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_package_bytes: Option<u64>,
    /// Memory budget for model instances in MiB [env: FERRY_MEMORY_BUDGET_MB] [default: none].
    #[arg(long, value_name = "MIB")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_budget_mb: Option<u64>,
    /// Serve inference without an API key; management still needs one [env: FERRY_ALLOW_ANONYMOUS_INFERENCE]
    /// [default: false].
    #[arg(long)]
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub allow_anonymous_inference: bool,
    /// PEM certificate chain: serve HTTPS and gRPC over TLS [env: FERRY_TLS_CERT].
    #[arg(long, value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert [env: FERRY_TLS_KEY].
    #[arg(long, value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,
    /// PEM CA: require client certificates signed by it (mutual TLS) [env: FERRY_TLS_CLIENT_CA].
    #[arg(long, value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_client_ca: Option<PathBuf>,
    /// Master key file: store packages encrypted (AES-256-GCM) [env: FERRY_MASTER_KEY_FILE; FERRY_MASTER_KEY gives
    /// the key itself].
    #[arg(long, value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub master_key_file: Option<PathBuf>,
    /// Default engine for every model: auto (ONNX Runtime when found, else tract), onnxruntime or tract
    /// [env: FERRY_MODELS__ENGINE] [default: auto].
    #[arg(long, value_enum)]
    #[serde(skip)]
    pub engine: Option<EngineArg>,
    /// Default instances per model [env: FERRY_MODELS__INSTANCES] [default: 1].
    #[arg(long)]
    #[serde(skip)]
    pub instances: Option<usize>,
}

/// `--engine` values.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum EngineArg {
    /// ONNX Runtime when found, else tract.
    Auto,
    /// ONNX Runtime.
    Onnxruntime,
    /// tract.
    Tract,
}

impl From<EngineArg> for EngineChoice {
    fn from(e: EngineArg) -> Self {
        match e {
            EngineArg::Auto => Self::Auto,
            EngineArg::Onnxruntime => Self::Onnxruntime,
            EngineArg::Tract => Self::Tract,
        }
    }
}

impl SettingsArgs {
    /// Layers defaults, the settings file, the environment and these flags, then validates.
    ///
    /// # Errors
    /// A message naming the file, variable or key that is wrong.
    pub fn load(&self) -> anyhow::Result<Settings> {
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        let explicit = self.config.clone().or_else(|| std::env::var_os("FERRY_CONFIG").map(PathBuf::from));
        match explicit {
            Some(path) => {
                if !path.is_file() {
                    bail!("settings file {} does not exist", path.display());
                }
                figment = figment.merge(Toml::file_exact(&path));
            }
            None if Path::new("ferry.toml").is_file() => figment = figment.merge(Toml::file_exact("ferry.toml")),
            None => {}
        }
        figment = figment
            .merge(Env::prefixed("FERRY_").split("__").filter(|k| {
                // The filter sees the key after `split` made `MODELS__ENGINE` into `models.engine`; only its first
                // part decides.
                let key = k.as_str().to_ascii_lowercase();
                let top = key.split("__").next().and_then(|k| k.split('.').next()).unwrap_or_default();
                ENV_KEYS.contains(&top)
            }))
            .merge(Serialized::defaults(self));
        if let Some(engine) = self.engine {
            figment = figment.merge(Serialized::default("models.engine", EngineChoice::from(engine)));
        }
        if let Some(n) = self.instances {
            figment = figment.merge(Serialized::default("models.instances", n));
        }
        let settings: Settings = figment.extract().context("invalid settings")?;
        settings.validate()?;
        Ok(settings)
    }
}

#[cfg(test)]
#[expect(clippy::result_large_err, reason = "figment::Jail's closure signature is fixed")]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_load_and_validate() {
        let s = Settings::default();
        s.validate().expect("defaults are valid");
        assert_eq!((s.host.as_str(), s.http_port), ("127.0.0.1", 8000));
        let mut unbuffered = Settings::default();
        unbuffered.monitoring.feedback_buffer = 0;
        let err = unbuffered.validate().expect_err("no room for kept predictions").to_string();
        assert!(err.contains("monitoring.feedback_buffer"), "{err}");
    }

    #[test]
    fn nested_settings_come_from_double_underscore_variables() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("FERRY_MONITORING__WINDOW_ROWS", "200");
            jail.set_env("FERRY_MONITORING__FEEDBACK_BUFFER", "500");
            jail.set_env("FERRY_PREDICTION_LOG__RETENTION_DAYS", "5");
            jail.set_env("FERRY_MODELS__INSTANCES", "3");
            let s = SettingsArgs::default().load().map_err(|e| e.to_string())?;
            assert_eq!((s.monitoring.window_rows, s.monitoring.feedback_buffer), (200, 500));
            assert_eq!(s.prediction_log.retention_days, 5);
            assert_eq!(s.models.instances, Some(3));
            Ok(())
        });
    }

    #[test]
    fn flags_beat_the_file_which_beats_the_defaults() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("f.toml", "http_port = 9000\nhost = \"0.0.0.0\"\n[models]\ninstances = 2\n")?;
            jail.set_env("FERRY_HOST", "127.0.0.2");
            jail.set_env("FERRY_SERVER", "http://elsewhere:1");
            let args = SettingsArgs { config: Some("f.toml".into()), http_port: Some(9100), ..SettingsArgs::default() };
            let s = args.load().map_err(|e| e.to_string())?;
            assert_eq!(s.http_port, 9100);
            assert_eq!(s.host, "127.0.0.2");
            assert_eq!(s.models.instances, Some(2));
            Ok(())
        });
    }

    #[test]
    fn database_passwords_are_masked() {
        assert_eq!(
            ferry_registry::redact_url("postgres://ferry:s3cret@db:5432/ferry"),
            "postgres://ferry:***@db:5432/ferry"
        );
        assert_eq!(ferry_registry::redact_url("sqlite://x.db"), "sqlite://x.db");
    }

    #[test]
    fn unknown_keys_and_missing_files_are_errors() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("f.toml", "http_prot = 9000\n")?;
            let args = SettingsArgs { config: Some("f.toml".into()), ..SettingsArgs::default() };
            let err = format!("{:#}", args.load().expect_err("typo"));
            assert!(err.contains("http_prot"), "{err}");
            let args = SettingsArgs { config: Some("missing.toml".into()), ..SettingsArgs::default() };
            assert!(args.load().is_err());
            Ok(())
        });
    }
}
