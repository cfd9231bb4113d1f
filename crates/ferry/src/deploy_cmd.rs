//! `ferry deploy NAME [--split production=90,staging=10] [--sticky-header H] [--delete]`: shows or sets how a model's
//! traffic is split between its versions.

use anyhow::Context;
use clap::Args;
use serde_json::{Value, json};

use crate::client::{Client, ServerArgs, runtime};

/// `ferry deploy NAME ...`
#[derive(Debug, Args)]
pub struct DeployArgs {
    /// Model name.
    pub name: String,
    /// Targets (aliases or version numbers) and their percentages, the primary first:
    /// `production=90,staging=10`. Without it, the current deployment is shown.
    #[arg(long, value_name = "TARGET=PERCENT,...")]
    pub split: Option<String>,
    /// Keep each client on one variant by this request header's value (for example x-user-id).
    #[arg(long, value_name = "HEADER", requires = "split")]
    pub sticky_header: Option<String>,
    /// Copy a share of the requests to this version, off the request path: `staging=20` (20%).
    #[arg(long, value_name = "TARGET=PERCENT", requires = "split")]
    pub shadow: Option<String>,
    /// Remove the deployment: the serving alias takes all traffic again.
    #[arg(long, conflicts_with_all = ["split", "sticky_header", "shadow"])]
    pub delete: bool,
    /// Print the answer as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub server: ServerArgs,
}

pub fn run(args: DeployArgs) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let client = Client::new(&args.server)?;
        let url = client.url(&format!("/models/{}/deployment", args.name));
        if args.delete {
            client.send(client.http.delete(url)).await?;
            println!("{}: deployment deleted; the serving alias takes all traffic", args.name);
            return Ok(());
        }
        let answer: Value = match &args.split {
            None => client.get(&format!("/models/{}/deployment", args.name)).await?,
            Some(split) => {
                let variants = ferry_rollout::DeploymentSpec::parse_split(split)?;
                let mut body = json!({ "variants": variants });
                if let Some(h) = &args.sticky_header {
                    body["sticky_header"] = json!(h);
                }
                if let Some(shadow) = &args.shadow {
                    match ferry_rollout::DeploymentSpec::parse_split(shadow)?.as_slice() {
                        [s] => body["shadow"] = json!({"target": s.target, "percent": s.weight}),
                        _ => anyhow::bail!("--shadow takes one TARGET=PERCENT, got {shadow:?}"),
                    }
                }
                client.send(client.http.put(url).json(&body)).await?.json().await.context("reading the answer")?
            }
        };
        if args.json {
            println!("{}", serde_json::to_string_pretty(&answer)?);
        } else {
            print!("{}", describe(&answer));
        }
        Ok(())
    })
}

/// The deployment as a short table.
fn describe(d: &Value) -> String {
    let mut out = format!(
        "{} deployment (revision {}, by {})\n",
        d["model"].as_str().unwrap_or("?"),
        d["revision"],
        d["updated_by"].as_str().unwrap_or("?")
    );
    let mut table = crate::table::new(&["VARIANT", "VERSION", "WEIGHT"]);
    match d["serving"].as_array() {
        Some(variants) => {
            for (i, v) in variants.iter().enumerate() {
                let target = v["target"].as_str().unwrap_or("?");
                let label = if i == 0 { format!("{target} (primary)") } else { target.to_owned() };
                #[allow(clippy::cast_precision_loss)]
                let weight = v["weight_bp"].as_u64().map_or_else(|| "?".into(), |bp| format!("{}%", bp as f64 / 100.0));
                table.add_row(vec![label, v["version"].to_string(), weight]);
            }
        }
        None => out.push_str("not served by this server\n"),
    }
    out.push_str(&table.to_string());
    out.push('\n');
    if let Some(s) = d["shadow"].as_object() {
        out.push_str(&format!(
            "shadow: {} (v{}) gets a copy of {}% of requests\n",
            s.get("target").and_then(Value::as_str).unwrap_or("?"),
            s.get("version").map_or_else(String::new, ToString::to_string),
            s.get("share_bp").and_then(Value::as_u64).map_or(0.0, |bp| bp as f64 / 100.0)
        ));
    }
    if let Some(h) = d["sticky_header"].as_str() {
        out.push_str("sticky by header ");
        out.push_str(h);
        out.push('\n');
    }
    out
}
