//! The monitor loop and alert delivery. Every evaluation interval it snapshots latency and throughput (setting
//! baselines whose warm-up is over), recomputes the live quality of every monitored model from its feedback, reads
//! each `[[alerts]]` rule's value for every served model (or the one the rule names), steps the rule's state machine
//! (`ferry_monitor::alerts`) and delivers what changed: to the log, and to every webhook as a JSON body signed with
//! HMAC-SHA256, retried with exponential backoff on network errors, 5xx and 429.
//!
//! The signature covers the timestamp and the body, `HMAC-SHA256(secret, "{X-Ferry-Timestamp}.{body}")`, sent as
//! `X-Ferry-Signature: sha256=<hex>`, so that a receiver can refuse a replayed notice; `X-Ferry-Delivery` is the same
//! on every retry of one notice, so that a receiver can drop duplicates.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ferry_monitor::alerts::{Alert, AlertMetric, AlertRule, AlertState, Notice};
use hmac::{Hmac, Mac};
use parking_lot::Mutex;
use serde::Serialize;

use crate::AppState;
use crate::quality::now_ms;

/// A webhook receiver.
#[derive(Clone)]
pub struct Webhook {
    /// Where notices are POSTed.
    pub url: String,
    /// The HMAC key; without one, notices are not signed.
    pub secret: Option<Vec<u8>>,
    /// Attempts per notice (at least 1).
    pub max_attempts: u32,
    /// Wait before the first retry; doubled for each further one (at most 60 s).
    pub initial_backoff: Duration,
    /// Time limit of one attempt.
    pub timeout: Duration,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        f.debug_struct("Webhook").field("url", &redacted(&self.url)).field("signed", &self.secret.is_some()).finish()
    }
}

/// Rules, receivers and the evaluation interval.
#[derive(Debug, Clone)]
pub struct AlertingConfig {
    /// The `[[alerts]]` rules.
    pub rules: Vec<AlertRule>,
    /// Webhook receivers.
    pub webhooks: Vec<Webhook>,
    /// How often values are read and rules evaluated.
    pub evaluation_interval: Duration,
}

/// One alert as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct AlertView {
    /// The model it concerns.
    pub model: String,
    /// State, value, times and history.
    #[serde(flatten)]
    pub alert: Alert,
}

/// One rule and its alerts, as the API shows them.
#[derive(Debug, Clone, Serialize)]
pub struct RuleView {
    /// The rule as configured.
    pub rule: AlertRule,
    /// Its alerts, one per model it has watched.
    pub alerts: Vec<AlertView>,
}

/// What `GET /api/v1/alerts` answers.
#[derive(Debug, Clone, Serialize)]
pub struct AlertsView {
    /// Seconds between evaluations.
    pub evaluation_interval_seconds: f64,
    /// Every rule with its alerts.
    pub rules: Vec<RuleView>,
    /// Notices delivered to a webhook.
    pub notifications_delivered: u64,
    /// Notices that failed every attempt.
    pub notifications_failed: u64,
}

/// The body POSTed to webhooks.
#[derive(Debug, Clone, Serialize)]
struct Notification<'a> {
    /// `firing` or `resolved`.
    status: &'static str,
    rule: &'a str,
    model: &'a str,
    version: Option<u64>,
    metric: &'static str,
    feature: Option<&'a str>,
    relative_to_baseline: bool,
    value: Option<f64>,
    op: &'static str,
    threshold: f64,
    severity: &'a str,
    labels: &'a BTreeMap<String, String>,
    /// When the condition started holding (milliseconds since the epoch).
    active_since_ms: Option<i64>,
    fired_at_ms: Option<i64>,
    /// When this notice was raised.
    at_ms: i64,
    /// Increases with every notice of this server: a receiver keeps the highest per (rule, model) and drops an
    /// older notice that arrives late (retries can reorder them).
    sequence: u64,
    summary: String,
}

/// The running alerting.
pub struct Alerting {
    config: AlertingConfig,
    alerts: Mutex<BTreeMap<(String, String), Alert>>,
    client: reqwest::Client,
    delivered: AtomicU64,
    failed: AtomicU64,
    sequence: AtomicU64,
}

impl std::fmt::Debug for Alerting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Alerting").field("config", &self.config).finish_non_exhaustive()
    }
}

impl Alerting {
    /// Alerting with `config`, not yet running (see [`Alerting::run`]).
    ///
    /// # Errors
    /// The HTTP client cannot be built.
    pub fn new(config: AlertingConfig) -> Result<Arc<Self>, String> {
        // Webhooks may be https: rustls needs its crypto provider.
        drop(rustls::crypto::ring::default_provider().install_default());
        let client = reqwest::Client::builder()
            .user_agent(concat!("ferry/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the webhook client: {e}"))?;
        Ok(Arc::new(Self {
            config,
            alerts: Mutex::default(),
            client,
            delivered: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            sequence: AtomicU64::new(0),
        }))
    }

    /// The monitor loop: evaluates every interval, forever (spawn it).
    pub async fn run(self: Arc<Self>, state: AppState) {
        let mut tick = tokio::time::interval(self.config.evaluation_interval.max(Duration::from_millis(10)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.evaluate(&state).await;
        }
    }

    /// One evaluation: snapshots, live quality, every rule.
    pub async fn evaluate(self: &Arc<Self>, state: &AppState) {
        state.metrics().performance.tick();
        let quality = state.registry_context().and_then(|c| c.quality_watch.clone());
        if let Some(quality) = &quality {
            for (model, _) in quality.targets() {
                if let Err(e) = quality.evaluate(&model).await {
                    tracing::warn!(model, error = %e.message(), "could not compute live quality");
                }
            }
        }
        let served: BTreeMap<String, u64> = state
            .repository()
            .summaries()
            .into_iter()
            .filter_map(|s| s.versions.last().map(|v| (s.name, *v)))
            .collect();
        let now = now_ms();
        let mut notices = Vec::new();
        {
            let mut alerts = self.alerts.lock();
            let mut visited = std::collections::BTreeSet::new();
            for rule in &self.config.rules {
                let models: Vec<String> = match &rule.model {
                    Some(m) => vec![m.clone()],
                    None => served.keys().cloned().collect(),
                };
                for model in models {
                    let version = served.get(&model).copied();
                    let value = version.and_then(|v| value_of(state, rule, &model, v));
                    visited.insert((rule.name.clone(), model.clone()));
                    let alert = alerts.entry((rule.name.clone(), model.clone())).or_default();
                    if let Some(notice) = alert.step(rule, value, now) {
                        notices.push((rule.clone(), model, version, alert.clone(), notice));
                    }
                }
            }
            // A model no longer served: its firing alerts resolve, then it is forgotten.
            let gone: Vec<(String, String)> = alerts.keys().filter(|k| !visited.contains(*k)).cloned().collect();
            for key in gone {
                let Some(rule) = self.config.rules.iter().find(|r| r.name == key.0) else { continue };
                if let Some(mut alert) = alerts.remove(&key)
                    && let Some(notice) = alert.step(rule, None, now)
                {
                    notices.push((rule.clone(), key.1, None, alert, notice));
                }
            }
        }
        for (rule, model, version, alert, notice) in notices {
            self.notify(&rule, &model, version, &alert, notice, now);
        }
    }

    fn notify(
        self: &Arc<Self>,
        rule: &AlertRule,
        model: &str,
        version: Option<u64>,
        alert: &Alert,
        notice: Notice,
        now: i64,
    ) {
        let status = match notice {
            Notice::Firing => "firing",
            Notice::Resolved => "resolved",
        };
        let what = rule
            .feature
            .as_ref()
            .map_or_else(|| rule.metric.name().to_owned(), |f| format!("{} of {f}", rule.metric.name()));
        let value = alert.value.map_or_else(|| "no data".to_owned(), |v| format!("{v:.6}"));
        let summary = format!(
            "{status}: {what}{} of {model} is {value} ({} {} {})",
            if rule.relative_to_baseline { " (change from baseline)" } else { "" },
            rule.metric.name(),
            rule.op.symbol(),
            rule.threshold
        );
        match notice {
            Notice::Firing => tracing::warn!(rule = %rule.name, model, severity = %rule.severity, "alert {summary}"),
            Notice::Resolved => tracing::info!(rule = %rule.name, model, severity = %rule.severity, "alert {summary}"),
        }
        let body = Notification {
            status,
            rule: &rule.name,
            model,
            version,
            metric: rule.metric.name(),
            feature: rule.feature.as_deref(),
            relative_to_baseline: rule.relative_to_baseline,
            value: alert.value,
            op: rule.op.symbol(),
            threshold: rule.threshold,
            severity: &rule.severity,
            labels: &rule.labels,
            active_since_ms: alert.active_since_ms,
            fired_at_ms: alert.fired_at_ms,
            at_ms: now,
            sequence: self.sequence.fetch_add(1, Ordering::Relaxed),
            summary,
        };
        let Ok(body) = serde_json::to_vec(&body) else { return };
        let delivery = crate::quality::fresh_request_id();
        for hook in &self.config.webhooks {
            let (this, hook, body, delivery) = (self.clone(), hook.clone(), body.clone(), delivery.clone());
            tokio::spawn(async move { this.deliver(&hook, body, &delivery).await });
        }
    }

    /// Sends a one-off event (an automatic rollback) to the log and every webhook, signed and retried as alerts are:
    /// `{"status": "firing", "rule": event, "model", "version", "severity", "summary", "at_ms", "sequence"}`.
    pub fn announce(self: &Arc<Self>, event: &str, model: &str, version: Option<u64>, severity: &str, summary: &str) {
        tracing::warn!(event, model, severity, "alert firing: {summary}");
        let now = now_ms();
        let body = serde_json::json!({
            "status": "firing", "rule": event, "model": model, "version": version, "severity": severity,
            "summary": summary, "at_ms": now, "sequence": self.sequence.fetch_add(1, Ordering::Relaxed),
        });
        let Ok(body) = serde_json::to_vec(&body) else { return };
        let delivery = crate::quality::fresh_request_id();
        for hook in &self.config.webhooks {
            let (this, hook, body, delivery) = (self.clone(), hook.clone(), body.clone(), delivery.clone());
            tokio::spawn(async move { this.deliver(&hook, body, &delivery).await });
        }
    }

    /// POSTs one notice to one webhook, retrying with backoff.
    async fn deliver(&self, hook: &Webhook, body: Vec<u8>, delivery: &str) {
        let mut backoff = hook.initial_backoff;
        let attempts = hook.max_attempts.max(1);
        for attempt in 1..=attempts {
            let timestamp = (now_ms() / 1000).to_string();
            let mut request = self
                .client
                .post(&hook.url)
                .timeout(hook.timeout)
                .header("content-type", "application/json")
                .header("x-ferry-delivery", delivery)
                .header("x-ferry-timestamp", &timestamp);
            if let Some(secret) = &hook.secret {
                request = request.header("x-ferry-signature", signature(secret, &timestamp, &body));
            }
            let outcome = request.body(body.clone()).send().await;
            let retry = match &outcome {
                Ok(r) if r.status().is_success() => {
                    self.delivered.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Ok(r) => r.status().is_server_error() || r.status() == reqwest::StatusCode::TOO_MANY_REQUESTS,
                Err(_) => true,
            };
            let why = match outcome {
                Ok(r) => format!("HTTP {}", r.status()),
                Err(e) => e.without_url().to_string(),
            };
            // Chat webhooks carry their credential in the path: log the host only.
            let url = redacted(&hook.url);
            if !retry || attempt == attempts {
                tracing::error!(url = %url, attempt, error = %why, "alert webhook failed; giving up on this notice");
                self.failed.fetch_add(1, Ordering::Relaxed);
                return;
            }
            tracing::warn!(url = %url, attempt, error = %why, retry_in = ?backoff, "alert webhook failed; retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(60));
        }
    }

    /// Every rule and its alerts, keeping only the models `visible` allows.
    #[must_use]
    pub fn view(&self, visible: impl Fn(&str) -> bool) -> AlertsView {
        let alerts = self.alerts.lock();
        let rules = self
            .config
            .rules
            .iter()
            .map(|rule| RuleView {
                rule: rule.clone(),
                alerts: alerts
                    .iter()
                    .filter(|((r, m), _)| *r == rule.name && visible(m))
                    .map(|((_, model), alert)| AlertView { model: model.clone(), alert: alert.clone() })
                    .collect(),
            })
            .collect();
        AlertsView {
            evaluation_interval_seconds: self.config.evaluation_interval.as_secs_f64(),
            rules,
            notifications_delivered: self.delivered.load(Ordering::Relaxed),
            notifications_failed: self.failed.load(Ordering::Relaxed),
        }
    }

    /// Firing alerts per rule (every rule, zeros included).
    #[must_use]
    pub fn firing(&self) -> Vec<(String, usize)> {
        let alerts = self.alerts.lock();
        self.config
            .rules
            .iter()
            .map(|rule| {
                let n = alerts.iter().filter(|((r, _), a)| *r == rule.name && a.state == AlertState::Firing).count();
                (rule.name.clone(), n)
            })
            .collect()
    }
}

/// A webhook URL with its path and query hidden (`https://hooks.example.com/…`).
fn redacted(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => format!("{}://{}/…", u.scheme(), u.host_str().unwrap_or("?")),
        Err(_) => "(invalid URL)".into(),
    }
}

/// `sha256=<hex of HMAC-SHA256(secret, "{timestamp}.{body}")>`.
#[must_use]
pub fn signature(secret: &[u8], timestamp: &str, body: &[u8]) -> String {
    let Ok(mut mac) = Hmac::<sha2::Sha256>::new_from_slice(secret) else { return String::new() };
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The rule's current value for `model` served at `version` (none: no data yet).
fn value_of(state: &AppState, rule: &AlertRule, model: &str, version: u64) -> Option<f64> {
    let ctx = state.registry_context();
    match rule.metric {
        AlertMetric::DriftShare | AlertMetric::DatasetDrift | AlertMetric::FeatureDrift | AlertMetric::DriftScore => {
            let latest = ctx?.drift_watch.as_ref()?.status(model)?.latest.filter(|w| w.version == version)?;
            match rule.metric {
                AlertMetric::DriftShare => Some(latest.drifted_share),
                AlertMetric::DatasetDrift => Some(f64::from(u8::from(latest.dataset_drift))),
                _ => {
                    let column = latest.columns.iter().find(|c| Some(&c.column) == rule.feature.as_ref())?;
                    Some(if rule.metric == AlertMetric::FeatureDrift {
                        f64::from(u8::from(column.drift.drifted))
                    } else {
                        column.drift.score
                    })
                }
            }
        }
        AlertMetric::LatencyP50Seconds
        | AlertMetric::LatencyP99Seconds
        | AlertMetric::Throughput
        | AlertMetric::ErrorRate => {
            let perf = state.metrics().performance.status(model, version)?;
            if rule.relative_to_baseline {
                perf.change.get(rule.metric.name()).copied()
            } else {
                perf.live?.get(rule.metric.name())
            }
        }
        AlertMetric::ConceptDrift => {
            let quality = ctx?.quality_watch.as_ref()?;
            let window = i64::try_from(quality.window().as_millis()).unwrap_or(i64::MAX);
            let latest = quality.latest().into_iter().find(|(m, _)| m == model)?.1;
            let v = latest.versions.into_iter().find(|v| v.version == version)?;
            if v.errors_seen == 0 {
                return None;
            }
            let recent = v
                .concept_drift
                .iter()
                .any(|d| d.last_detection_ms.is_some_and(|t| now_ms().saturating_sub(t) <= window));
            Some(f64::from(u8::from(recent)))
        }
        _ => {
            let quality = ctx?.quality_watch.as_ref()?;
            let latest = quality.latest().into_iter().find(|(m, _)| m == model)?.1;
            let v = latest.versions.into_iter().find(|v| v.version == version)?;
            // A handful of pairs would page on noise (one wrong answer right after a deploy is accuracy 0).
            if (v.rows as u64) < quality.min_rows() {
                return None;
            }
            if rule.relative_to_baseline {
                v.change.get(rule.metric.name()).copied()
            } else {
                v.metrics.get(rule.metric.name()).copied()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_of_timestamp_dot_body() {
        // Computed independently: Python's hmac.new(b"secret", b'1700000000.{"a":1}', hashlib.sha256).hexdigest().
        assert_eq!(
            signature(b"secret", "1700000000", br#"{"a":1}"#),
            "sha256=49f24e537407743fa4a0242bb63b94b9a47ee99cbbe071ccd8a22550ae411686"
        );
    }
}
