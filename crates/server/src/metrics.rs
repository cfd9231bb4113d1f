//! Prometheus metrics at `GET /metrics` (OpenMetrics text), with the names ARCHITECTURE.md fixes.
//!
//! Per-request figures (requests by outcome, latency by phase) are counted as requests finish: a labelled counter and
//! three histogram observations, a few hundred nanoseconds. Everything else (queue depth, batch sizes, loaded models,
//! load times, process CPU and memory) is read from the serving statistics when scraped, so it costs nothing on the
//! request path.

use std::fmt::Write as _;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::AppState;

/// Labels of `ferry_requests_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    model: String,
    version: String,
    protocol: String,
    code: String,
}

/// Labels of `ferry_request_duration_seconds`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    model: String,
    version: String,
    phase: String,
}

fn latency_histogram() -> Histogram {
    // 50 µs doubling to about 13 s.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 19))
}

/// The metric handles of one model version's successful requests, resolved once so that the hot path allocates
/// nothing (every microsecond per request costs throughput).
#[derive(Debug)]
struct Handles {
    protocol: &'static str,
    version: u64,
    ok: Counter,
    total: Histogram,
    queue: Histogram,
    compute: Histogram,
    /// Live latency and throughput, and their baseline.
    perf: std::sync::Arc<crate::performance::Recorder>,
    /// The version's arm in its deployment's experiment: routed requests only.
    arm: std::sync::Arc<crate::performance::Recorder>,
    /// The performance generation `perf` was taken in: a recorder forgotten since (its version unloaded) must not
    /// keep receiving what a fresh one should count.
    generation: u64,
}

/// The request metrics and their registry.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    durations: Family<PhaseLabels, Histogram, fn() -> Histogram>,
    /// model → handles per (protocol, version), for successful requests.
    fast: parking_lot::RwLock<std::collections::HashMap<String, Vec<std::sync::Arc<Handles>>>>,
    /// Live latency and throughput per model version, and their baselines.
    pub performance: crate::performance::Performance,
    /// Shadow copies and how the shadows agree with what callers got.
    pub shadows: std::sync::Arc<crate::shadow::Shadows>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        let durations = Family::<PhaseLabels, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        registry.register(
            "ferry_requests",
            "Inference requests by model, version, protocol and outcome",
            requests.clone(),
        );
        registry.register(
            "ferry_request_duration_seconds",
            "Inference latency by phase: queue (waiting for an instance), compute (in the instance), total",
            durations.clone(),
        );
        Self {
            registry,
            requests,
            durations,
            fast: parking_lot::RwLock::default(),
            performance: crate::performance::Performance::default(),
            shadows: std::sync::Arc::default(),
        }
    }
}

impl Metrics {
    /// Counts one successful request: once a model version was seen, a map lookup and four atomic updates.
    fn observe_ok(
        &self,
        model: &str,
        version: u64,
        protocol: &'static str,
        routed: bool,
        timing: (Duration, Duration),
        total: Duration,
    ) {
        let generation = self.performance.generation();
        let found = self.fast.read().get(model).and_then(|all| {
            all.iter().find(|h| h.protocol == protocol && h.version == version && h.generation == generation).cloned()
        });
        let handles = found.unwrap_or_else(|| {
            let ok_code = if protocol == "grpc" { "OK" } else { "200" };
            let phase = |phase: &str| {
                self.durations
                    .get_or_create(&PhaseLabels {
                        model: model.to_owned(),
                        version: version.to_string(),
                        phase: phase.to_owned(),
                    })
                    .clone()
            };
            let request = RequestLabels {
                model: model.to_owned(),
                version: version.to_string(),
                protocol: protocol.to_owned(),
                code: ok_code.to_owned(),
            };
            let h = std::sync::Arc::new(Handles {
                protocol,
                version,
                ok: self.requests.get_or_create(&request).clone(),
                total: phase("total"),
                queue: phase("queue"),
                compute: phase("compute"),
                perf: self.performance.recorder(model, version),
                arm: self.performance.arm_recorder(model, version),
                generation,
            });
            let mut fast = self.fast.write();
            let all = fast.entry(model.to_owned()).or_default();
            all.retain(|old| !(old.protocol == protocol && old.version == version));
            all.push(h.clone());
            h
        });
        handles.ok.inc();
        handles.total.observe(total.as_secs_f64());
        handles.perf.record(total.as_secs_f64(), true);
        if routed {
            handles.arm.record(total.as_secs_f64(), true);
        }
        handles.queue.observe(timing.0.as_secs_f64());
        handles.compute.observe(timing.1.as_secs_f64());
    }

    /// Counts one finished inference request; `routed` when the model's deployment chose its version (not pinned
    /// by the caller), so that it also counts in the version's experiment arm.
    #[allow(clippy::too_many_arguments)]
    pub fn observe(
        &self,
        model: &str,
        version: u64,
        protocol: &'static str,
        routed: bool,
        code: &str,
        timing: Option<(Duration, Duration)>,
        total: Duration,
    ) {
        if let (Some(timing), "200" | "OK") = (timing, code) {
            return self.observe_ok(model, version, protocol, routed, timing, total);
        }
        // Only a loaded model version reaches here. Client errors (4xx, gRPC InvalidArgument…) count as requests but
        // not as failures: one client's bad inputs must not page the team.
        let server_error = code.starts_with('5')
            || matches!(
                code,
                "Internal" | "Unavailable" | "DeadlineExceeded" | "Unknown" | "DataLoss" | "ResourceExhausted"
            );
        let recorders = [
            Some(self.performance.recorder(model, version)),
            routed.then(|| self.performance.arm_recorder(model, version)),
        ];
        for recorder in recorders.iter().flatten() {
            if server_error {
                recorder.record(total.as_secs_f64(), false);
            } else {
                recorder.record_rejected(total.as_secs_f64());
            }
        }
        let version = version.to_string();
        self.requests
            .get_or_create(&RequestLabels {
                model: model.to_owned(),
                version: version.clone(),
                protocol: protocol.to_owned(),
                code: code.to_owned(),
            })
            .inc();
        let phase = |phase: &str, d: Duration| {
            self.durations
                .get_or_create(&PhaseLabels {
                    model: model.to_owned(),
                    version: version.clone(),
                    phase: phase.to_owned(),
                })
                .observe(d.as_secs_f64());
        };
        phase("total", total);
        if let Some((queue, compute)) = timing {
            phase("queue", queue);
            phase("compute", compute);
        }
    }

    /// The whole exposition: the request metrics, then what is read at scrape time.
    #[must_use]
    pub fn render(&self, state: &AppState) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        // `encode` ends with `# EOF`; the scrape-time families go before it.
        if let Some(stripped) = out.strip_suffix("# EOF\n") {
            out.truncate(stripped.len());
        }
        scrape_time(&mut out, state);
        out.push_str("# EOF\n");
        out
    }
}

fn scrape_time(out: &mut String, state: &AppState) {
    let models: Vec<_> = state
        .repository()
        .summaries()
        .into_iter()
        .flat_map(|s| {
            s.versions.into_iter().filter_map(move |v| state.repository().get(&s.name, Some(&v.to_string())).ok())
        })
        .collect();
    let _ = writeln!(out, "# HELP ferry_model_loaded Whether the model version is loaded and serving.");
    let _ = writeln!(out, "# TYPE ferry_model_loaded gauge");
    for m in &models {
        let _ = writeln!(out, "ferry_model_loaded{{model=\"{}\",version=\"{}\"}} 1", m.name(), m.version());
    }
    let _ = writeln!(out, "# HELP ferry_model_load_seconds Time to load and warm up the model version.");
    let _ = writeln!(out, "# TYPE ferry_model_load_seconds gauge");
    for m in &models {
        let _ = writeln!(
            out,
            "ferry_model_load_seconds{{model=\"{}\",version=\"{}\"}} {}",
            m.name(),
            m.version(),
            m.load_time().as_secs_f64()
        );
    }
    let _ = writeln!(out, "# HELP ferry_queue_depth Requests waiting for an instance.");
    let _ = writeln!(out, "# TYPE ferry_queue_depth gauge");
    for m in &models {
        let _ = writeln!(
            out,
            "ferry_queue_depth{{model=\"{}\",version=\"{}\"}} {}",
            m.name(),
            m.version(),
            m.queue_depth()
        );
    }
    instance_families(out, &models, state);
    let _ = writeln!(out, "# HELP ferry_batch_size Requests per engine run (dynamic batching).");
    let _ = writeln!(out, "# TYPE ferry_batch_size histogram");
    for m in &models {
        let stats = m.stats();
        let (mut cumulative, mut sum) = (0u64, 0u64);
        let bounds = [1u64, 2, 4, 8, 16, 32, 64, 128, 256];
        let labels = format!("model=\"{}\",version=\"{}\"", m.name(), m.version());
        for bound in bounds {
            let upto: u64 = stats.batches.iter().filter(|b| b.batch_size <= bound).map(|b| b.compute_infer.count).sum();
            cumulative = cumulative.max(upto);
            let _ = writeln!(out, "ferry_batch_size_bucket{{{labels},le=\"{bound}.0\"}} {cumulative}");
        }
        let count: u64 = stats.batches.iter().map(|b| b.compute_infer.count).sum();
        for b in &stats.batches {
            sum += b.batch_size * b.compute_infer.count;
        }
        let _ = writeln!(out, "ferry_batch_size_bucket{{{labels},le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "ferry_batch_size_sum{{{labels}}} {sum}.0");
        let _ = writeln!(out, "ferry_batch_size_count{{{labels}}} {count}");
    }
    if let Some(watch) = state.registry_context().and_then(|c| c.drift_watch.as_ref()) {
        drift_families(out, watch);
    }
    model_metric_families(out, state);
    shadow_families(out, &state.metrics().shadows.all());
    if let Some(alerting) = state.registry_context().and_then(|c| c.alerting.as_ref()) {
        let _ = writeln!(out, "# HELP ferry_alerts_firing Alerts of the rule firing now (one per model).");
        let _ = writeln!(out, "# TYPE ferry_alerts_firing gauge");
        for (rule, n) in alerting.firing() {
            let _ = writeln!(out, "ferry_alerts_firing{{rule=\"{}\"}} {n}", escape_label(&rule));
        }
    }
    let in_use = state.limits().max_concurrent_requests.saturating_sub(state.concurrency().available_permits());
    let _ = writeln!(out, "# HELP ferry_inflight_requests HTTP requests being handled.");
    let _ = writeln!(out, "# TYPE ferry_inflight_requests gauge");
    let _ = writeln!(out, "ferry_inflight_requests {in_use}");
    if let Some((cpu, rss)) = process_usage() {
        let _ = writeln!(out, "# HELP process_cpu_seconds Total user and system CPU time.");
        let _ = writeln!(out, "# TYPE process_cpu_seconds counter");
        let _ = writeln!(out, "process_cpu_seconds_total {cpu}");
        let _ = writeln!(out, "# HELP process_resident_memory_bytes Resident memory.");
        let _ = writeln!(out, "# TYPE process_resident_memory_bytes gauge");
        let _ = writeln!(out, "process_resident_memory_bytes {rss}");
    }
}

/// Shadow copies by result, their latency, and their agreement with the answers callers got.
fn shadow_families(out: &mut String, all: &[(String, crate::ShadowStats)]) {
    let _ = writeln!(out, "# HELP ferry_shadow_requests Copies of requests sent to a shadow version, by result.");
    let _ = writeln!(out, "# TYPE ferry_shadow_requests counter");
    for (model, s) in all {
        let m = escape_label(model);
        for (result, n) in [("ok", s.requests), ("error", s.errors), ("shed", s.shed)] {
            let _ = writeln!(
                out,
                "ferry_shadow_requests_total{{model=\"{m}\",version=\"{}\",result=\"{result}\"}} {n}",
                s.version
            );
        }
    }
    let _ = writeln!(out, "# HELP ferry_shadow_latency_seconds Total shadow latency of answered copies.");
    let _ = writeln!(out, "# TYPE ferry_shadow_latency_seconds summary");
    for (model, s) in all {
        let labels = format!("model=\"{}\",version=\"{}\"", escape_label(model), s.version);
        let _ = writeln!(out, "ferry_shadow_latency_seconds_sum{{{labels}}} {}", s.latency_seconds_sum);
        let _ = writeln!(out, "ferry_shadow_latency_seconds_count{{{labels}}} {}", s.requests);
    }
    let _ = writeln!(out, "# HELP ferry_shadow_agreement Share of label outputs equal to the answer callers got.");
    let _ = writeln!(out, "# TYPE ferry_shadow_agreement gauge");
    for (model, s) in all {
        if let Some(a) = s.label_agreement {
            let _ = writeln!(
                out,
                "ferry_shadow_agreement{{model=\"{}\",version=\"{}\"}} {a}",
                escape_label(model),
                s.version
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP ferry_shadow_mean_abs_diff Mean absolute difference of number outputs from the answer callers got."
    );
    let _ = writeln!(out, "# TYPE ferry_shadow_mean_abs_diff gauge");
    for (model, s) in all {
        if let Some(d) = s.mean_abs_diff {
            let _ = writeln!(
                out,
                "ferry_shadow_mean_abs_diff{{model=\"{}\",version=\"{}\"}} {d}",
                escape_label(model),
                s.version
            );
        }
    }
}

/// The latest drift window of every watched model.
fn drift_families(out: &mut String, watch: &crate::DriftWatch) {
    let all = watch.all();
    let _ = writeln!(out, "# HELP ferry_drift_score The drift test's score (p-value or distance) in the last window.");
    let _ = writeln!(out, "# TYPE ferry_drift_score gauge");
    for m in &all {
        for c in m.latest.iter().flat_map(|w| &w.columns) {
            let _ = writeln!(
                out,
                "ferry_drift_score{{model=\"{}\",version=\"{}\",feature=\"{}\",method=\"{}\"}} {}",
                m.model,
                m.version,
                escape_label(&c.column),
                c.drift.method.name(),
                c.drift.score
            );
        }
    }
    let _ = writeln!(out, "# HELP ferry_drift_detected Whether the column drifted in the last window.");
    let _ = writeln!(out, "# TYPE ferry_drift_detected gauge");
    for m in &all {
        for c in m.latest.iter().flat_map(|w| &w.columns) {
            let _ = writeln!(
                out,
                "ferry_drift_detected{{model=\"{}\",version=\"{}\",feature=\"{}\"}} {}",
                m.model,
                m.version,
                escape_label(&c.column),
                u8::from(c.drift.drifted)
            );
        }
    }
    let _ = writeln!(out, "# HELP ferry_drift_share Share of the columns that drifted in the last window.");
    let _ = writeln!(out, "# TYPE ferry_drift_share gauge");
    for m in &all {
        if let Some(w) = &m.latest {
            let _ = writeln!(
                out,
                "ferry_drift_share{{model=\"{}\",version=\"{}\"}} {}",
                m.model, m.version, w.drifted_share
            );
        }
    }
    let _ =
        writeln!(out, "# HELP ferry_dataset_drift Whether the last window drifted as a whole (drift share reached).");
    let _ = writeln!(out, "# TYPE ferry_dataset_drift gauge");
    for m in &all {
        if let Some(w) = &m.latest {
            let _ = writeln!(
                out,
                "ferry_dataset_drift{{model=\"{}\",version=\"{}\"}} {}",
                m.model,
                m.version,
                u8::from(w.dataset_drift)
            );
        }
    }
    let _ = writeln!(out, "# HELP ferry_drift_samples_dropped Drift samples dropped because the buffer was full.");
    let _ = writeln!(out, "# TYPE ferry_drift_samples_dropped counter");
    let _ = writeln!(out, "ferry_drift_samples_dropped_total {}", watch.dropped());
}

/// A Prometheus label value: backslash, quote and newline escaped (column names come from CSV headers).
fn escape_label(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// CPU seconds and resident bytes of this process, from /proc (Linux); `None` elsewhere.
/// Instances, their memory and how they changed (autoscaling, cold starts, the memory budget).
fn instance_families(out: &mut String, models: &[std::sync::Arc<ferry_serving::LoadedModel>], state: &AppState) {
    let labels = |m: &ferry_serving::LoadedModel| format!("model=\"{}\",version=\"{}\"", m.name(), m.version());
    let _ = writeln!(out, "# HELP ferry_model_instances Instances running or starting.");
    let _ = writeln!(out, "# TYPE ferry_model_instances gauge");
    for m in models {
        let _ = writeln!(out, "ferry_model_instances{{{}}} {}", labels(m), m.instances());
    }
    let _ =
        writeln!(out, "# HELP ferry_model_memory_bytes Memory the running instances hold, as measured at their load.");
    let _ = writeln!(out, "# TYPE ferry_model_memory_bytes gauge");
    for m in models {
        let _ = writeln!(out, "ferry_model_memory_bytes{{{}}} {}", labels(m), m.memory_bytes());
    }
    let _ = writeln!(out, "# HELP ferry_model_cold_starts Requests that found no instance running and started one.");
    let _ = writeln!(out, "# TYPE ferry_model_cold_starts counter");
    for m in models {
        let _ = writeln!(out, "ferry_model_cold_starts_total{{{}}} {}", labels(m), m.stats().scaling.cold_starts);
    }
    let _ = writeln!(
        out,
        "# HELP ferry_model_instance_start_seconds Load and warm-up time of instances started while serving (what a \
         cold start's first request waits)."
    );
    let _ = writeln!(out, "# TYPE ferry_model_instance_start_seconds summary");
    for m in models {
        let starts = m.stats().scaling.instance_starts;
        let _ = writeln!(out, "ferry_model_instance_start_seconds_sum{{{}}} {}", labels(m), starts.ns as f64 / 1e9);
        let _ = writeln!(out, "ferry_model_instance_start_seconds_count{{{}}} {}", labels(m), starts.count);
    }
    let _ = writeln!(out, "# HELP ferry_model_scale_events Instances added or stopped: by the autoscaler, or evicted.");
    let _ = writeln!(out, "# TYPE ferry_model_scale_events counter");
    for m in models {
        let s = m.stats().scaling;
        for (direction, n) in [("up", s.scale_ups), ("down", s.scale_downs), ("evicted", s.evictions)] {
            let _ = writeln!(out, "ferry_model_scale_events_total{{{},direction=\"{direction}\"}} {n}", labels(m));
        }
    }
    let (_, engines) = state.repository().load_settings();
    let _ = writeln!(out, "# HELP ferry_memory_budget_bytes The memory budget for model instances (0: none).");
    let _ = writeln!(out, "# TYPE ferry_memory_budget_bytes gauge");
    let _ = writeln!(out, "ferry_memory_budget_bytes {}", engines.budget.limit().unwrap_or(0));
    let _ = writeln!(out, "# HELP ferry_memory_budget_used_bytes Memory the instances of every model hold.");
    let _ = writeln!(out, "# TYPE ferry_memory_budget_used_bytes gauge");
    let _ = writeln!(out, "ferry_memory_budget_used_bytes {}", engines.budget.used());
}

fn process_usage() -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may contain spaces, hence the last ')').
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // The kernel's USER_HZ is 100 and the page size 4 KiB on every Linux this runs on.
    Some((ticks / 100.0, pages * 4096))
}

/// Live figures and baselines (`ferry_model_metric`, `ferry_model_baseline`), concept drift and feedback counts, as of
/// the last evaluation.
fn model_metric_families(out: &mut String, state: &AppState) {
    let perf = &state.metrics().performance;
    let quality = state.registry_context().and_then(|c| c.quality_watch.as_ref());
    let mut live: Vec<(String, u64, String, f64)> = Vec::new();
    let mut base: Vec<(String, u64, String, f64)> = Vec::new();
    let mut concept: Vec<(String, u64, &'static str, u8)> = Vec::new();
    let mut rows: Vec<(String, u64, usize)> = Vec::new();
    for (model, version) in perf.keys() {
        let Some(s) = perf.status(&model, version) else { continue };
        for (figures, into) in [(s.live, &mut live), (s.baseline, &mut base)] {
            let Some(f) = figures else { continue };
            for metric in ["latency_p50_seconds", "latency_p99_seconds", "throughput", "error_rate"] {
                if let Some(v) = f.get(metric) {
                    into.push((model.clone(), version, metric.to_owned(), v));
                }
            }
        }
    }
    if let Some(quality) = quality {
        let window = i64::try_from(quality.window().as_millis()).unwrap_or(i64::MAX);
        let now = crate::quality::now_ms();
        for (model, q) in quality.latest() {
            for v in &q.versions {
                for (k, x) in &v.metrics {
                    live.push((model.clone(), v.version, k.clone(), *x));
                }
                rows.push((model.clone(), v.version, v.rows));
                for (k, x) in &v.baseline {
                    base.push((model.clone(), v.version, k.clone(), *x));
                }
                for d in &v.concept_drift {
                    let recent = d.last_detection_ms.is_some_and(|t| now.saturating_sub(t) <= window);
                    concept.push((model.clone(), v.version, d.detector, u8::from(recent)));
                }
            }
        }
    }
    for (name, help, rows) in [
        ("ferry_model_metric", "Live model metric: quality from feedback, latency and throughput.", &live),
        (
            "ferry_model_baseline",
            "Baseline of the model metric: validation metrics, warm-up latency and throughput.",
            &base,
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} gauge");
        for (model, version, metric, v) in rows {
            let _ = writeln!(
                out,
                "{name}{{model=\"{}\",version=\"{version}\",metric=\"{metric}\"}} {v}",
                escape_label(model)
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP ferry_concept_drift Whether the detector found concept drift on the error stream within the feedback window."
    );
    let _ = writeln!(out, "# TYPE ferry_concept_drift gauge");
    for (model, version, detector, v) in &concept {
        let _ = writeln!(
            out,
            "ferry_concept_drift{{model=\"{}\",version=\"{version}\",detector=\"{detector}\"}} {v}",
            escape_label(model)
        );
    }
    let _ = writeln!(out, "# HELP ferry_feedback_rows Prediction pairs with their truth in the feedback window.");
    let _ = writeln!(out, "# TYPE ferry_feedback_rows gauge");
    for (model, version, n) in &rows {
        let _ = writeln!(out, "ferry_feedback_rows{{model=\"{}\",version=\"{version}\"}} {n}", escape_label(model));
    }
    if let Some(quality) = quality {
        let _ =
            writeln!(out, "# HELP ferry_feedback Feedback items received, by whether they matched a kept prediction.");
        let _ = writeln!(out, "# TYPE ferry_feedback counter");
        for (model, matched, unmatched) in quality.feedback_counts() {
            let m = escape_label(&model);
            let _ = writeln!(out, "ferry_feedback_total{{model=\"{m}\",result=\"matched\"}} {matched}");
            let _ = writeln!(out, "ferry_feedback_total{{model=\"{m}\",result=\"unmatched\"}} {unmatched}");
        }
        let _ = writeln!(
            out,
            "# HELP ferry_feedback_samples_dropped Predictions not kept for feedback: the buffer or the spool was \
             full, or the write failed."
        );
        let _ = writeln!(out, "# TYPE ferry_feedback_samples_dropped counter");
        let _ = writeln!(out, "ferry_feedback_samples_dropped_total {}", quality.dropped());
        let _ = writeln!(
            out,
            "# HELP ferry_feedback_spool_backlog_bytes Kept predictions appended to the spool and not yet indexed \
             into the registry database (SQLite)."
        );
        let _ = writeln!(out, "# TYPE ferry_feedback_spool_backlog_bytes gauge");
        let _ = writeln!(out, "ferry_feedback_spool_backlog_bytes {}", quality.spool_backlog_bytes());
    }
}
