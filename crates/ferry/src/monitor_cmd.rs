//! `ferry monitor NAME`: a served model's live drift in the terminal, refreshed until interrupted.

use std::time::Duration;

use clap::Args;
use serde_json::Value;

use crate::client::{Client, ServerArgs, runtime};

/// `ferry monitor NAME [--once] [--interval SECONDS] [--json]`
#[derive(Debug, Args)]
pub struct MonitorArgs {
    /// The model.
    pub name: String,
    /// Print once and exit (for scripts) instead of refreshing.
    #[arg(long)]
    pub once: bool,
    /// Seconds between refreshes.
    #[arg(long, default_value_t = 2)]
    pub interval: u64,
    /// Print the server's JSON once.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub server: ServerArgs,
}

pub fn run(args: &MonitorArgs) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let client = Client::new(&args.server)?;
        let path = format!("/models/{}/monitoring", args.name);
        loop {
            let status = client.get(&path).await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&status)?);
                return Ok(());
            }
            if !args.once {
                // Clear the screen and go home, so that the table refreshes in place.
                print!("\x1b[2J\x1b[H");
            }
            println!("{}", render(&status));
            if args.once {
                return Ok(());
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(args.interval.max(1))) => {}
                _ = tokio::signal::ctrl_c() => return Ok(()),
            }
        }
    })
}

fn render(s: &Value) -> String {
    let mut out = format!("{} version {}\n", s["model"].as_str().unwrap_or("?"), s["version"]);
    if s.get("window_rows").is_some() {
        out.push_str(&render_drift(s));
    } else {
        out.push_str("drift: not watched (the package has no reference profile)\n");
    }
    out.push_str(&render_quality(&s["quality"]));
    out.push_str(&render_performance(&s["performance"]));
    out
}

fn number(v: &Value) -> String {
    v.as_f64().map_or_else(|| "-".into(), |x| format!("{x:.4}"))
}

fn percent(v: &Value) -> String {
    v.as_f64().map_or_else(String::new, |x| format!("{:+.1}%", x * 100.0))
}

fn render_drift(s: &Value) -> String {
    let mut out = format!(
        "drift window of {} rows: {} gathered, {} completed, {} samples dropped\n",
        s["window_rows"], s["rows_in_window"], s["windows_completed"], s["samples_dropped"]
    );
    let latest = &s["latest"];
    if latest.is_null() {
        out.push_str("no window completed yet\n");
        return out;
    }
    let mut table = crate::table::new(&["column", "role", "test", "score", "threshold", "drift"]);
    for c in latest["columns"].as_array().into_iter().flatten() {
        table.add_row(vec![
            c["column"].as_str().unwrap_or("").to_owned(),
            c["role"].as_str().unwrap_or("").to_owned(),
            c["method"].as_str().unwrap_or("").to_owned(),
            c["score"].as_f64().map_or_else(String::new, |v| format!("{v:.6}")),
            c["threshold"].to_string(),
            if c["drifted"] == true { "DRIFT".into() } else { "-".into() },
        ]);
    }
    out.push_str(&format!(
        "last window: {} rows, {} to {}\n{table}\ndataset drift: {} (share {:.3})\n",
        latest["rows"],
        at(&latest["started_at_ms"]),
        at(&latest["ended_at_ms"]),
        if latest["dataset_drift"] == true { "YES" } else { "no" },
        latest["drifted_share"].as_f64().unwrap_or(0.0)
    ));
    out
}

fn at(ms: &Value) -> String {
    ms.as_u64()
        .map(|ms| humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_millis(ms)).to_string())
        .unwrap_or_default()
}

/// Live metrics from feedback beside the validation baseline, per version, and the concept-drift detectors.
fn render_quality(q: &Value) -> String {
    if q.is_null() {
        return "quality: no feedback tracking for this model\n".into();
    }
    let mut out = format!(
        "quality ({}, window {} s): {} feedback matched, {} unmatched\n",
        q["task"].as_str().unwrap_or("?"),
        q["window_seconds"],
        q["feedback_matched"],
        q["feedback_unmatched"]
    );
    let mut table = crate::table::new(&["version", "rows", "metric", "live", "baseline", "change"]);
    let mut detectors = crate::table::new(&["version", "detector", "state", "detections", "last at index"]);
    let mut any_detector = false;
    for v in q["versions"].as_array().into_iter().flatten() {
        let metrics = v["metrics"].as_object().cloned().unwrap_or_default();
        if metrics.is_empty() {
            table.add_row(vec![v["version"].to_string(), v["rows"].to_string(), "-".into(), "-".into()]);
        }
        for (name, live) in &metrics {
            table.add_row(vec![
                v["version"].to_string(),
                v["rows"].to_string(),
                name.clone(),
                number(live),
                number(&v["baseline"][name]),
                percent(&v["change"][name]),
            ]);
        }
        for d in v["concept_drift"].as_array().into_iter().flatten() {
            any_detector = true;
            detectors.add_row(vec![
                v["version"].to_string(),
                d["detector"].as_str().unwrap_or("").to_owned(),
                d["state"].as_str().unwrap_or("").to_uppercase(),
                d["detections"].to_string(),
                d["last_detection_index"].as_u64().map_or_else(|| "-".into(), |i| i.to_string()),
            ]);
        }
    }
    out.push_str(&format!("{table}\n"));
    if any_detector {
        out.push_str(&format!("concept drift on the error stream:\n{detectors}\n"));
    }
    out
}

/// Latency and throughput over the live window beside the warm-up baseline.
fn render_performance(p: &Value) -> String {
    if p.is_null() {
        return "performance: no request yet\n".into();
    }
    let mut table = crate::table::new(&["figure", "live", "baseline", "change"]);
    for name in ["throughput", "latency_p50_seconds", "latency_p99_seconds", "error_rate"] {
        table.add_row(vec![
            name.to_owned(),
            number(&p["live"][name]),
            number(&p["baseline"][name]),
            percent(&p["change"][name]),
        ]);
    }
    let warmup = p["warmup_remaining_seconds"].as_f64().unwrap_or(0.0);
    let note = if warmup > 0.0 { format!(" (baseline after {warmup:.0} s more warm-up)") } else { String::new() };
    format!("performance{note}:\n{table}\n")
}
