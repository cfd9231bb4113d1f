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
    let mut out = format!(
        "{} version {} — window of {} rows: {} gathered, {} completed, {} samples dropped\n",
        s["model"].as_str().unwrap_or("?"),
        s["version"],
        s["window_rows"],
        s["rows_in_window"],
        s["windows_completed"],
        s["samples_dropped"]
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
    let at = |ms: &Value| {
        ms.as_u64()
            .map(|ms| humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_millis(ms)).to_string())
            .unwrap_or_default()
    };
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
