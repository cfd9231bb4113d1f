//! Alert rules and their state machine, pure: the server feeds each rule's current value at every evaluation and
//! delivers the notices this module returns; [`prometheus_rules`] writes the same rules as Prometheus alerting rules
//! for teams that route alerts through Alertmanager.
//!
//! A rule watches one [`AlertMetric`] of every served model (or of one, with `model`), compares it with a threshold,
//! and goes, per model, `inactive → pending` when the comparison first holds, `pending → firing` once it has held for
//! the rule's `for` duration (at once when that is zero), and `firing → resolved` when it stops holding. A pending
//! alert whose condition stops holding goes back to `inactive` without a notice, as in Prometheus. A missing value
//! (no window yet, no feedback yet) does not hold.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What a rule watches. Quality metrics are the live ones over the feedback window; latency, throughput and error
/// rate are over the performance window; drift is the latest completed drift window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertMetric {
    /// Share of drifted columns in the latest drift window (0 to 1).
    DriftShare,
    /// 1 when the latest drift window drifted as a whole, else 0.
    DatasetDrift,
    /// 1 when `feature` drifted in the latest window, else 0.
    FeatureDrift,
    /// `feature`'s drift score (p-value or distance) in the latest window.
    DriftScore,
    /// 1 when a concept-drift detector fired on the error stream within the feedback window, else 0.
    ConceptDrift,
    /// Live accuracy from feedback.
    Accuracy,
    /// Live precision.
    Precision,
    /// Live recall.
    Recall,
    /// Live F1.
    F1,
    /// Live ROC AUC.
    RocAuc,
    /// Live log loss.
    LogLoss,
    /// Live mean absolute error.
    Mae,
    /// Live root mean squared error.
    Rmse,
    /// Live R².
    R2,
    /// Median request latency in seconds.
    LatencyP50Seconds,
    /// 99th percentile request latency in seconds.
    LatencyP99Seconds,
    /// Requests per second.
    Throughput,
    /// Share of requests that failed on the server's side (5xx and their gRPC equivalents).
    ErrorRate,
}

impl AlertMetric {
    /// Every metric, for error messages and documentation.
    pub const ALL: [Self; 18] = [
        Self::DriftShare,
        Self::DatasetDrift,
        Self::FeatureDrift,
        Self::DriftScore,
        Self::ConceptDrift,
        Self::Accuracy,
        Self::Precision,
        Self::Recall,
        Self::F1,
        Self::RocAuc,
        Self::LogLoss,
        Self::Mae,
        Self::Rmse,
        Self::R2,
        Self::LatencyP50Seconds,
        Self::LatencyP99Seconds,
        Self::Throughput,
        Self::ErrorRate,
    ];

    /// The snake_case name used in configuration, the API and `ferry_model_metric{metric}`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::DriftShare => "drift_share",
            Self::DatasetDrift => "dataset_drift",
            Self::FeatureDrift => "feature_drift",
            Self::DriftScore => "drift_score",
            Self::ConceptDrift => "concept_drift",
            Self::Accuracy => "accuracy",
            Self::Precision => "precision",
            Self::Recall => "recall",
            Self::F1 => "f1",
            Self::RocAuc => "roc_auc",
            Self::LogLoss => "log_loss",
            Self::Mae => "mae",
            Self::Rmse => "rmse",
            Self::R2 => "r2",
            Self::LatencyP50Seconds => "latency_p50_seconds",
            Self::LatencyP99Seconds => "latency_p99_seconds",
            Self::Throughput => "throughput",
            Self::ErrorRate => "error_rate",
        }
    }

    /// Whether the value comes from ground-truth feedback.
    #[must_use]
    pub fn is_quality(self) -> bool {
        matches!(
            self,
            Self::Accuracy
                | Self::Precision
                | Self::Recall
                | Self::F1
                | Self::RocAuc
                | Self::LogLoss
                | Self::Mae
                | Self::Rmse
                | Self::R2
        )
    }

    /// Whether the rule must name a feature.
    #[must_use]
    pub fn needs_feature(self) -> bool {
        matches!(self, Self::FeatureDrift | Self::DriftScore)
    }

    /// Whether the metric has a baseline a rule can compare against (`relative_to_baseline`).
    #[must_use]
    pub fn has_baseline(self) -> bool {
        matches!(
            self,
            Self::Accuracy
                | Self::Precision
                | Self::Recall
                | Self::F1
                | Self::RocAuc
                | Self::LogLoss
                | Self::Mae
                | Self::Rmse
                | Self::R2
                | Self::LatencyP50Seconds
                | Self::LatencyP99Seconds
                | Self::Throughput
        )
    }
}

/// How the value is compared with the threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Comparison {
    /// Greater than.
    #[serde(rename = ">")]
    Greater,
    /// Greater than or equal.
    #[serde(rename = ">=")]
    GreaterOrEqual,
    /// Less than.
    #[serde(rename = "<")]
    Less,
    /// Less than or equal.
    #[serde(rename = "<=")]
    LessOrEqual,
    /// Equal.
    #[serde(rename = "==")]
    Equal,
    /// Not equal.
    #[serde(rename = "!=")]
    NotEqual,
}

impl Comparison {
    /// Whether `value` compares to `threshold` this way.
    #[must_use]
    #[allow(clippy::float_cmp)]
    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Self::Greater => value > threshold,
            Self::GreaterOrEqual => value >= threshold,
            Self::Less => value < threshold,
            Self::LessOrEqual => value <= threshold,
            Self::Equal => value == threshold,
            Self::NotEqual => value != threshold,
        }
    }

    /// The operator as written (also PromQL's).
    #[must_use]
    pub fn symbol(self) -> &'static str {
        match self {
            Self::Greater => ">",
            Self::GreaterOrEqual => ">=",
            Self::Less => "<",
            Self::LessOrEqual => "<=",
            Self::Equal => "==",
            Self::NotEqual => "!=",
        }
    }
}

/// One `[[alerts]]` rule of the configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertRule {
    /// Unique name (the `alertname`).
    pub name: String,
    /// What is watched.
    pub metric: AlertMetric,
    /// Only this model; every served model when absent.
    #[serde(default)]
    pub model: Option<String>,
    /// The feature or output column, for `feature_drift` and `drift_score`.
    #[serde(default)]
    pub feature: Option<String>,
    /// Compare the relative change from the baseline, `(live − baseline) / |baseline|`, instead of the value.
    #[serde(default)]
    pub relative_to_baseline: bool,
    /// The comparison.
    pub op: Comparison,
    /// The threshold.
    pub threshold: f64,
    /// How long the comparison must hold before the alert fires (`"0s"`, `"30s"`, `"5m"`).
    #[serde(default = "zero", rename = "for", with = "humantime_serde_compat")]
    pub for_duration: Duration,
    /// `info`, `warning`, `critical` or anything the receivers understand.
    #[serde(default = "warning")]
    pub severity: String,
    /// Extra labels sent with every notification.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

fn zero() -> Duration {
    Duration::ZERO
}

fn warning() -> String {
    "warning".into()
}

/// `for = "5m"` through humantime, serialised back the same way.
mod humantime_serde_compat {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(text.trim()).map_err(|e| {
            serde::de::Error::custom(format!("`for` = {text:?} is not a duration like \"30s\" or \"5m\": {e}"))
        })
    }
}

impl AlertRule {
    /// Checks what the types alone do not.
    ///
    /// # Errors
    /// A message naming the rule and the field.
    pub fn validate(&self) -> Result<(), String> {
        let valid_name = !self.name.is_empty()
            && self.name.len() <= 128
            && self.name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if !valid_name {
            return Err(format!(
                "alert rule name {:?} must be 1 to 128 characters of letters, digits, '_', '-' or '.'",
                self.name
            ));
        }
        if !self.threshold.is_finite() {
            return Err(format!("alert rule {:?}: threshold must be a finite number", self.name));
        }
        match (self.metric.needs_feature(), &self.feature) {
            (true, None) => {
                return Err(format!("alert rule {:?}: metric {} needs `feature`", self.name, self.metric.name()));
            }
            (false, Some(_)) => {
                return Err(format!(
                    "alert rule {:?}: `feature` only applies to feature_drift and drift_score",
                    self.name
                ));
            }
            _ => {}
        }
        if self.relative_to_baseline && !self.metric.has_baseline() {
            return Err(format!(
                "alert rule {:?}: {} has no baseline to be relative to",
                self.name,
                self.metric.name()
            ));
        }
        for k in self.labels.keys() {
            if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') || k.starts_with("__") {
                return Err(format!("alert rule {:?}: label name {k:?} is not a valid Prometheus label", self.name));
            }
        }
        Ok(())
    }
}

/// Where an alert (one rule on one model) stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    /// The condition has not held (or never has).
    #[default]
    Inactive,
    /// The condition holds, not yet for the rule's `for` duration.
    Pending,
    /// The condition has held long enough: notified.
    Firing,
    /// It fired and the condition no longer holds: notified.
    Resolved,
}

/// One change of state.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Transition {
    /// Milliseconds since the epoch.
    pub at_ms: i64,
    /// Before.
    pub from: AlertState,
    /// After.
    pub to: AlertState,
    /// The value that caused it (none when the value went missing).
    pub value: Option<f64>,
}

/// What to tell the receivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    /// The alert started firing.
    Firing,
    /// The alert stopped firing.
    Resolved,
}

/// Transitions kept per alert.
const HISTORY: usize = 100;

/// One rule on one model.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Alert {
    /// Current state.
    pub state: AlertState,
    /// The latest value (none: no data).
    pub value: Option<f64>,
    /// Since when the condition has held (pending or firing), milliseconds since the epoch.
    pub active_since_ms: Option<i64>,
    /// When it last started firing.
    pub fired_at_ms: Option<i64>,
    /// The latest transitions, oldest first (at most 100).
    pub history: VecDeque<Transition>,
}

impl Alert {
    /// Feeds the rule's current value; returns the notice to deliver, if any.
    pub fn step(&mut self, rule: &AlertRule, value: Option<f64>, now_ms: i64) -> Option<Notice> {
        self.value = value;
        let holds = value.is_some_and(|v| v.is_finite() && rule.op.holds(v, rule.threshold));
        let for_ms = i64::try_from(rule.for_duration.as_millis()).unwrap_or(i64::MAX);
        match (self.state, holds) {
            (AlertState::Inactive | AlertState::Resolved, true) => {
                self.active_since_ms = Some(now_ms);
                if for_ms == 0 {
                    self.fire(value, now_ms)
                } else {
                    self.change(AlertState::Pending, value, now_ms);
                    None
                }
            }
            (AlertState::Pending, true) => {
                let since = self.active_since_ms.unwrap_or(now_ms);
                (now_ms.saturating_sub(since) >= for_ms).then(|| self.fire(value, now_ms)).flatten()
            }
            (AlertState::Pending, false) => {
                self.active_since_ms = None;
                self.change(AlertState::Inactive, value, now_ms);
                None
            }
            (AlertState::Firing, false) => {
                self.active_since_ms = None;
                self.change(AlertState::Resolved, value, now_ms);
                Some(Notice::Resolved)
            }
            (AlertState::Firing, true) | (AlertState::Inactive | AlertState::Resolved, false) => None,
        }
    }

    fn fire(&mut self, value: Option<f64>, now_ms: i64) -> Option<Notice> {
        self.fired_at_ms = Some(now_ms);
        self.change(AlertState::Firing, value, now_ms);
        Some(Notice::Firing)
    }

    fn change(&mut self, to: AlertState, value: Option<f64>, at_ms: i64) {
        if self.history.len() == HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(Transition { at_ms, from: self.state, to, value });
        self.state = to;
    }
}

/// The PromQL expression of a rule's value over ferry's `/metrics`, `window` being the performance window.
#[must_use]
pub fn promql(rule: &AlertRule, window: Duration) -> String {
    let mut selector = String::new();
    if let Some(model) = &rule.model {
        let _ = write!(selector, "model={}", quote(model));
    }
    let with = |extra: &str| {
        let parts: Vec<&str> = [selector.as_str(), extra].into_iter().filter(|s| !s.is_empty()).collect();
        format!("{{{}}}", parts.join(","))
    };
    let range = prometheus_duration(window);
    let feature = rule.feature.as_deref().map(|f| format!("feature={}", quote(f))).unwrap_or_default();
    let metric = format!("metric={}", quote(rule.metric.name()));
    let quantile = |q: &str| {
        format!(
            "histogram_quantile({q}, sum by (model, version, le) (rate(ferry_request_duration_seconds_bucket{}[{range}])))",
            with("phase=\"total\"")
        )
    };
    let live = match rule.metric {
        AlertMetric::DriftShare => format!("ferry_drift_share{}", with("")),
        AlertMetric::DatasetDrift => format!("ferry_dataset_drift{}", with("")),
        AlertMetric::FeatureDrift => format!("ferry_drift_detected{}", with(&feature)),
        AlertMetric::DriftScore => format!("ferry_drift_score{}", with(&feature)),
        AlertMetric::ConceptDrift => format!("max by (model, version) (ferry_concept_drift{})", with("")),
        AlertMetric::LatencyP50Seconds => quantile("0.5"),
        AlertMetric::LatencyP99Seconds => quantile("0.99"),
        AlertMetric::Throughput => {
            format!("sum by (model, version) (rate(ferry_requests_total{}[{range}]))", with(""))
        }
        AlertMetric::ErrorRate => format!(
            "sum by (model, version) (rate(ferry_requests_total{}[{range}])) / sum by (model, version) \
             (rate(ferry_requests_total{}[{range}]))",
            with("code=~\"5..|Internal|Unavailable|DeadlineExceeded|Unknown|DataLoss|ResourceExhausted\""),
            with("")
        ),
        _ => format!("ferry_model_metric{}", with(&metric)),
    };
    if rule.relative_to_baseline {
        // One baseline per (model, version), whatever the number of replicas reporting it.
        let baseline = format!("max by (model, version) (ferry_model_baseline{})", with(&metric));
        format!(
            "(({live}) - on (model, version) group_left {baseline}) / on (model, version) group_left abs({baseline})"
        )
    } else {
        live
    }
}

/// What the export needs besides the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportOptions {
    /// The performance window: the range of `rate` and `histogram_quantile` (keep it at least twice the scrape
    /// interval, or Prometheus finds too few samples in it).
    pub window: Duration,
    /// Live quality counts only over at least this many feedback pairs (`[monitoring] min_feedback_rows`).
    pub min_feedback_rows: u64,
}

/// The whole condition of a rule as ferry evaluates it: the comparison, on served versions only, and for quality
/// metrics only once the window has enough feedback.
#[must_use]
pub fn promql_condition(rule: &AlertRule, options: ExportOptions) -> String {
    let selector = rule.model.as_ref().map(|m| format!("{{model={}}}", quote(m))).unwrap_or_default();
    let mut expr = format!(
        "{} {} {} and on (model, version) ferry_model_loaded{selector}",
        promql(rule, options.window),
        rule.op.symbol(),
        rule.threshold
    );
    if rule.metric.is_quality() {
        let _ = write!(expr, " and on (model, version) ferry_feedback_rows{selector} >= {}", options.min_feedback_rows);
    }
    expr
}

/// Every rule as a Prometheus rule file (YAML), one group named `ferry`.
#[must_use]
pub fn prometheus_rules(rules: &[AlertRule], options: ExportOptions) -> String {
    let mut out =
        String::from("# Generated by `ferry alerts export-prometheus`: the same rules ferry evaluates itself,\n");
    out.push_str("# over the metrics ferry exposes at /metrics.\ngroups:\n  - name: ferry\n    rules:\n");
    if rules.is_empty() {
        out.truncate(out.len() - "    rules:\n".len());
        out.push_str("    rules: []\n");
        return out;
    }
    for rule in rules {
        let expr = promql_condition(rule, options);
        let _ = writeln!(out, "      - alert: {}", quote(&rule.name));
        let _ = writeln!(out, "        expr: {}", quote(&expr));
        let _ = writeln!(out, "        for: {}", prometheus_duration(rule.for_duration));
        out.push_str("        labels:\n");
        let _ = writeln!(out, "          severity: {}", quote(&rule.severity));
        for (k, v) in &rule.labels {
            let _ = writeln!(out, "          {k}: {}", quote(v));
        }
        out.push_str("        annotations:\n");
        let what = rule
            .feature
            .as_ref()
            .map_or_else(|| rule.metric.name().to_owned(), |f| format!("{} of {f}", rule.metric.name()));
        let relative = if rule.relative_to_baseline { " (relative change from the baseline)" } else { "" };
        let summary = format!(
            "{what}{relative} {} {} on {{{{ $labels.model }}}} version {{{{ $labels.version }}}}",
            rule.op.symbol(),
            rule.threshold
        );
        let _ = writeln!(out, "          summary: {}", quote(&summary));
    }
    out
}

/// A double-quoted string, valid in both YAML and PromQL.
fn quote(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

/// A Prometheus duration (`90s`, `5m`, `0s`), at least `1s` for a range.
fn prometheus_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let s = ms / 1000;
    if s != 0 && s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s != 0 && s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(op: Comparison, threshold: f64, for_secs: u64) -> AlertRule {
        AlertRule {
            name: "accuracy-low".into(),
            metric: AlertMetric::Accuracy,
            model: Some("iris".into()),
            feature: None,
            relative_to_baseline: false,
            op,
            threshold,
            for_duration: Duration::from_secs(for_secs),
            severity: "critical".into(),
            labels: BTreeMap::from([("team".into(), "ml".into())]),
        }
    }

    #[test]
    fn an_alert_goes_pending_then_firing_after_its_for_duration_then_resolved() {
        let r = rule(Comparison::Less, 0.9, 60);
        let mut a = Alert::default();
        assert_eq!(a.step(&r, Some(0.95), 0), None);
        assert_eq!(a.state, AlertState::Inactive);
        assert_eq!(a.step(&r, Some(0.7), 1_000), None);
        assert_eq!(a.state, AlertState::Pending);
        assert_eq!(a.step(&r, Some(0.7), 60_999), None, "59.999 s is not yet 60 s");
        assert_eq!(a.step(&r, Some(0.7), 61_000), Some(Notice::Firing));
        assert_eq!(a.state, AlertState::Firing);
        assert_eq!(a.step(&r, Some(0.6), 62_000), None, "firing once, not at every evaluation");
        assert_eq!(a.step(&r, Some(0.95), 63_000), Some(Notice::Resolved));
        assert_eq!(a.state, AlertState::Resolved);
        let path: Vec<_> = a.history.iter().map(|t| (t.from, t.to)).collect();
        assert_eq!(
            path,
            [
                (AlertState::Inactive, AlertState::Pending),
                (AlertState::Pending, AlertState::Firing),
                (AlertState::Firing, AlertState::Resolved)
            ]
        );
    }

    #[test]
    fn a_pending_alert_whose_condition_stops_goes_back_to_inactive_silently_and_missing_data_does_not_hold() {
        let r = rule(Comparison::Less, 0.9, 60);
        let mut a = Alert::default();
        assert_eq!(a.step(&r, Some(0.5), 0), None);
        assert_eq!(a.step(&r, None, 1_000), None);
        assert_eq!(a.state, AlertState::Inactive);
        assert_eq!(a.step(&r, Some(f64::NAN), 2_000), None);
        assert_eq!(a.state, AlertState::Inactive);
        let zero = rule(Comparison::Less, 0.9, 0);
        let mut b = Alert::default();
        assert_eq!(b.step(&zero, Some(0.5), 0), Some(Notice::Firing), "for = 0 fires at once");
    }

    #[test]
    fn history_is_bounded() {
        let r = rule(Comparison::Less, 0.9, 0);
        let mut a = Alert::default();
        for i in 0..500 {
            a.step(&r, Some(if i % 2 == 0 { 0.1 } else { 0.99 }), i);
        }
        assert_eq!(a.history.len(), HISTORY);
        assert_eq!(a.history.back().map(|t| t.at_ms), Some(499));
    }

    #[test]
    fn rules_are_validated() {
        let mut r = rule(Comparison::Less, 0.9, 0);
        assert!(r.validate().is_ok());
        r.metric = AlertMetric::FeatureDrift;
        assert!(r.validate().expect_err("refused").contains("needs `feature`"));
        r.feature = Some("petal_length".into());
        assert!(r.validate().is_ok());
        r.relative_to_baseline = true;
        assert!(r.validate().expect_err("refused").contains("no baseline"));
        r.relative_to_baseline = false;
        r.name = "bad name".into();
        assert!(r.validate().expect_err("refused").contains("letters, digits"));
        let parsed: Result<AlertRule, _> =
            serde_json::from_str(r#"{"name":"x","metric":"accuracy","op":"<","threshold":0.9,"for":"soon"}"#);
        assert!(parsed.expect_err("refused").to_string().contains("not a duration"));
        let parsed: AlertRule =
            serde_json::from_str(r#"{"name":"x","metric":"accuracy","op":"<","threshold":0.9,"for":"5m"}"#)
                .expect("rule");
        assert_eq!(parsed.for_duration, Duration::from_secs(300));
        assert_eq!(parsed.severity, "warning");
    }

    #[test]
    fn rules_export_as_prometheus_alerting_rules() {
        let mut latency = rule(Comparison::Greater, 0.25, 300);
        latency.name = "slow".into();
        latency.metric = AlertMetric::LatencyP99Seconds;
        latency.relative_to_baseline = false;
        let options = ExportOptions { window: Duration::from_secs(60), min_feedback_rows: 30 };
        let text = prometheus_rules(&[rule(Comparison::Less, 0.9, 60), latency], options);
        assert!(text.contains("      - alert: \"accuracy-low\"\n"), "{text}");
        assert!(
            text.contains(
                r#"expr: "ferry_model_metric{model=\"iris\",metric=\"accuracy\"} < 0.9 and on (model, version) ferry_model_loaded{model=\"iris\"} and on (model, version) ferry_feedback_rows{model=\"iris\"} >= 30""#
            ),
            "{text}"
        );
        assert!(text.contains("        for: 1m\n"), "{text}");
        assert!(text.contains("          severity: \"critical\"\n          team: \"ml\"\n"), "{text}");
        assert!(
            text.contains(
                r#"histogram_quantile(0.99, sum by (model, version, le) (rate(ferry_request_duration_seconds_bucket{model=\"iris\",phase=\"total\"}[1m]))) > 0.25 and on (model, version) ferry_model_loaded{model=\"iris\"}""#
            ),
            "{text}"
        );
        assert!(text.contains("        for: 5m\n"), "{text}");
        assert!(prometheus_rules(&[], options).ends_with("    rules: []\n"));
        let mut relative = rule(Comparison::Less, -0.1, 0);
        relative.relative_to_baseline = true;
        assert!(
            promql(&relative, Duration::from_secs(60)).contains(
                r#"group_left max by (model, version) (ferry_model_baseline{model="iris",metric="accuracy"})"#
            ),
            "one baseline per model version, whatever the replicas"
        );
    }
}
