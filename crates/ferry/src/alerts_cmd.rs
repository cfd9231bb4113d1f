//! `ferry alerts …`: the configured alert rules as Prometheus alerting rules, and a server's alerts now.

use clap::{Args, Subcommand};
use serde_json::Value;

use crate::client::{Client, ServerArgs, runtime};
use crate::settings::SettingsArgs;

/// `ferry alerts …`
#[derive(Debug, Subcommand)]
pub enum AlertsCommand {
    /// Write the `[[alerts]]` rules of the configuration as a Prometheus rule file, for Alertmanager users.
    ExportPrometheus(Box<ExportArgs>),
    /// Show a server's alert rules and the state of each alert.
    List(ServerArgs),
}

/// `ferry alerts export-prometheus [-o FILE]`
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Write here instead of standard output.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub settings: SettingsArgs,
}

pub fn run(cmd: AlertsCommand) -> anyhow::Result<()> {
    match cmd {
        AlertsCommand::ExportPrometheus(args) => {
            let settings = args.settings.load()?;
            let options = ferry_monitor::alerts::ExportOptions {
                window: settings.monitoring.performance_window,
                min_feedback_rows: settings.monitoring.min_feedback_rows,
            };
            let text = ferry_monitor::alerts::prometheus_rules(&settings.alerts, options);
            match &args.output {
                Some(path) => {
                    std::fs::write(path, text).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
                    eprintln!("wrote {} rule(s) to {}", settings.alerts.len(), path.display());
                }
                None => print!("{text}"),
            }
            Ok(())
        }
        AlertsCommand::List(server) => runtime()?.block_on(async {
            let client = Client::new(&server)?;
            let view = client.get("/alerts").await?;
            println!("{}", render(&view));
            Ok(())
        }),
    }
}

fn render(view: &Value) -> String {
    let mut table = crate::table::new(&["rule", "model", "state", "value", "condition", "since", "severity"]);
    let mut rows = 0;
    for r in view["rules"].as_array().into_iter().flatten() {
        let rule = &r["rule"];
        let relative = if rule["relative_to_baseline"] == true { " vs baseline" } else { "" };
        let feature = rule["feature"].as_str().map(|f| format!("[{f}]")).unwrap_or_default();
        let condition = format!(
            "{}{feature}{relative} {} {} for {}",
            rule["metric"].as_str().unwrap_or(""),
            rule["op"].as_str().unwrap_or(""),
            rule["threshold"],
            rule["for"].as_str().unwrap_or("0s")
        );
        let alerts = r["alerts"].as_array().cloned().unwrap_or_default();
        if alerts.is_empty() {
            table.add_row(vec![
                rule["name"].as_str().unwrap_or("").to_owned(),
                "-".into(),
                "-".into(),
                "-".into(),
                condition.clone(),
            ]);
            rows += 1;
        }
        for a in alerts {
            let since = a["active_since_ms"]
                .as_u64()
                .map(|ms| {
                    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms))
                        .to_string()
                })
                .unwrap_or_default();
            table.add_row(vec![
                rule["name"].as_str().unwrap_or("").to_owned(),
                a["model"].as_str().unwrap_or("").to_owned(),
                a["state"].as_str().unwrap_or("").to_uppercase(),
                a["value"].as_f64().map_or_else(|| "no data".into(), |v| format!("{v:.4}")),
                condition.clone(),
                since,
                rule["severity"].as_str().unwrap_or("").to_owned(),
            ]);
            rows += 1;
        }
    }
    if rows == 0 {
        return "no alert rules are configured ([[alerts]] in ferry.toml)".into();
    }
    format!("{table}\nnotices delivered: {}, failed: {}", view["notifications_delivered"], view["notifications_failed"])
}
