//! `ferry rollout NAME --candidate VERSION [--steps 5,25,50,100] [--interval 10m] ...`: a canary that judges itself
//! and promotes or rolls back; `ferry rollout NAME` shows it; `--pause`, `--resume`, `--promote`, `--abort` act on it.

use anyhow::Context;
use clap::Args;
use serde_json::{Value, json};

use crate::client::{Client, ServerArgs, runtime};

/// `ferry rollout NAME ...`
#[derive(Debug, Args)]
pub struct RolloutArgs {
    /// Model name.
    pub name: String,
    /// Start rolling this alias or version out over the serving one.
    #[arg(long, value_name = "VERSION|ALIAS")]
    pub candidate: Option<String>,
    /// The candidate's share at each step, in percent, ending at 100.
    #[arg(long, value_name = "P,P,...", value_delimiter = ',', default_value = "5,25,50,100", requires = "candidate")]
    pub steps: Vec<f64>,
    /// Length of an interval: each ends with a judgement.
    #[arg(long, default_value = "1m", requires = "candidate")]
    pub interval: String,
    /// Guard: highest candidate error share over an interval (for example 0.01).
    #[arg(long, requires = "candidate")]
    pub max_error_rate: Option<f64>,
    /// Guard: highest candidate p99 latency over an interval, in milliseconds.
    #[arg(long, requires = "candidate")]
    pub max_latency_p99_ms: Option<f64>,
    /// Failed guard checks that roll back.
    #[arg(long, requires = "candidate")]
    pub threshold: Option<u32>,
    /// Harm allowed in error share, candidate minus primary (default 0.005).
    #[arg(long, requires = "candidate")]
    pub error_tolerance: Option<f64>,
    /// Harm allowed in latency, as a ratio (default 0.1: 10% slower).
    #[arg(long, requires = "candidate")]
    pub latency_tolerance: Option<f64>,
    /// Requests each arm needs in a step before the comparison counts (default 100).
    #[arg(long, requires = "candidate")]
    pub min_requests: Option<u64>,
    /// Harm allowed in the feedback loss: misclassified share (default 0.01), or a regressor's mean absolute error
    /// as a ratio of the primary's.
    #[arg(long, requires = "candidate")]
    pub quality_tolerance: Option<f64>,
    /// Rows with ground truth each arm needs in a step before their quality is compared (default 50).
    #[arg(long, requires = "candidate")]
    pub min_labelled: Option<u64>,
    /// Prediction drift allowed either way: a predicted class's share (default 0.1: ten points), or a regressor's
    /// mean prediction in standard deviations of the primary's.
    #[arg(long, requires = "candidate")]
    pub drift_tolerance: Option<f64>,
    /// Act on the running rollout instead: pause, resume, promote or abort.
    #[arg(long, value_parser = ["pause", "resume", "promote", "abort"], conflicts_with = "candidate")]
    pub action: Option<String>,
    /// Print the answer as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub server: ServerArgs,
}

pub fn run(args: RolloutArgs) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let client = Client::new(&args.server)?;
        let path = format!("/models/{}/rollout", args.name);
        let answer: Value = match (&args.candidate, &args.action) {
            (Some(candidate), _) => {
                let mut body = json!({ "candidate": candidate, "steps": args.steps, "interval": args.interval });
                for (key, value) in [
                    ("max_error_rate", args.max_error_rate.map(Value::from)),
                    ("max_latency_p99_ms", args.max_latency_p99_ms.map(Value::from)),
                    ("threshold", args.threshold.map(Value::from)),
                    ("error_tolerance", args.error_tolerance.map(Value::from)),
                    ("latency_tolerance", args.latency_tolerance.map(Value::from)),
                    ("min_requests", args.min_requests.map(Value::from)),
                    ("quality_tolerance", args.quality_tolerance.map(Value::from)),
                    ("min_labelled", args.min_labelled.map(Value::from)),
                    ("drift_tolerance", args.drift_tolerance.map(Value::from)),
                ] {
                    if let Some(v) = value {
                        body[key] = v;
                    }
                }
                let request = client.http.post(client.url(&path)).json(&body);
                client.send(request).await?.json().await.context("reading the answer")?
            }
            (None, Some(action)) => {
                let request = client.http.post(client.url(&format!("{path}/{action}")));
                client.send(request).await?.json().await.context("reading the answer")?
            }
            (None, None) => client.get(&path).await?,
        };
        if args.json {
            println!("{}", serde_json::to_string_pretty(&answer)?);
        } else {
            print!("{}", describe(&answer));
        }
        Ok(())
    })
}

/// The rollout in a few lines: versions, phase, share, and its judgements.
fn describe(r: &Value) -> String {
    let weight = |bp: &Value| bp.as_u64().map_or_else(|| "?".to_owned(), |bp| format!("{}%", bp as f64 / 100.0));
    let history = r["history"].as_array().cloned().unwrap_or_default();
    let share = history.last().map_or_else(|| "?".to_owned(), |s| weight(&s["judgement"]["weight_bp"]));
    let mut out = format!(
        "{}: version {} over version {}, {} (candidate at {share}), {} failed check(s)\n",
        r["model"].as_str().unwrap_or("?"),
        r["candidate"],
        r["primary"],
        r["canary"]["phase"].as_str().unwrap_or("?"),
        r["canary"]["failed_checks"],
    );
    let mut table = crate::table::new(&["AT", "BY", "ACTION", "SHARE", "WHY"]);
    for s in history.iter().filter(|s| s["judgement"]["action"] != "wait") {
        let at = s["at_ms"].as_i64().and_then(|ms| {
            std::time::UNIX_EPOCH.checked_add(std::time::Duration::from_millis(u64::try_from(ms).ok()?))
        });
        let at = at.map_or_else(|| "?".to_owned(), |t| humantime::format_rfc3339_seconds(t).to_string());
        table.add_row(vec![
            at,
            s["actor"].as_str().unwrap_or("?").to_owned(),
            s["judgement"]["action"].as_str().unwrap_or("?").to_owned(),
            weight(&s["judgement"]["weight_bp"]),
            s["judgement"]["reason"].as_str().unwrap_or("").to_owned(),
        ]);
    }
    out.push_str(&table.to_string());
    out.push('\n');
    out
}
