//! `ferry keys …` and `ferry audit …`: API keys and the audit log, through the server (admin key needed).

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::client::{Client, ServerArgs, runtime};

/// `ferry keys …`
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key; it is printed once and stored only as a hash.
    Create(CreateArgs),
    /// List keys (never the secrets).
    List(ServerArgs),
    /// Revoke a key by id; effective at once.
    Revoke(RevokeArgs),
}

/// `ferry keys create`
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// A name to recognise the key by.
    #[arg(long)]
    pub name: String,
    /// admin, deployer, predictor or viewer.
    #[arg(long)]
    pub role: String,
    /// Model-name patterns the key is limited to (repeatable; default all).
    #[arg(long = "scope", value_name = "PATTERN")]
    pub scopes: Vec<String>,
    /// Requests per second this key may make (default: the server's).
    #[arg(long, value_name = "N")]
    pub rate: Option<u32>,
    /// Requests per UTC day (default: the server's).
    #[arg(long, value_name = "N")]
    pub daily_quota: Option<u64>,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// `ferry keys revoke ID`
#[derive(Debug, Args)]
pub struct RevokeArgs {
    /// The key id (`ferry keys list`).
    pub id: String,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// `ferry subjects …`
#[derive(Debug, Subcommand)]
pub enum SubjectsCommand {
    /// Print every logged prediction about a data subject (an access request).
    Show(SubjectArgs),
    /// Erase every logged prediction about a data subject (audited).
    Delete(SubjectArgs),
}

/// A data subject.
#[derive(Debug, Args)]
pub struct SubjectArgs {
    /// The subject id (the value of the configured subject header).
    pub id: String,
    #[command(flatten)]
    pub server: ServerArgs,
}

pub fn run_subjects(cmd: SubjectsCommand) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        match cmd {
            SubjectsCommand::Show(args) => {
                let client = Client::new(&args.server)?;
                let records = client.get(&format!("/subjects/{}", urlencode(&args.id))).await?;
                println!("{}", serde_json::to_string_pretty(&records)?);
            }
            SubjectsCommand::Delete(args) => {
                let client = Client::new(&args.server)?;
                let url = client.url(&format!("/subjects/{}", urlencode(&args.id)));
                let done: Value = client.send(client.http.delete(url)).await?.json().await?;
                println!("subject {}: {} logged prediction(s) erased", args.id, done["erased"]);
            }
        }
        Ok(())
    })
}

/// Percent-encodes a path segment.
fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// `ferry audit …`
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Print the audit log.
    List(ServerArgs),
    /// Check the hash chain: exits 1 and names the first bad record if any was edited, deleted or reordered.
    Verify(ServerArgs),
}

pub fn run_keys(cmd: KeysCommand) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        match cmd {
            KeysCommand::Create(args) => {
                let client = Client::new(&args.server)?;
                let mut body = json!({"name": args.name, "role": args.role});
                if !args.scopes.is_empty() {
                    body["scopes"] = json!(args.scopes);
                }
                if let Some(r) = args.rate {
                    body["rate_per_second"] = json!(r);
                }
                if let Some(q) = args.daily_quota {
                    body["daily_quota"] = json!(q);
                }
                let created: Value =
                    client.send(client.http.post(client.url("/keys")).json(&body)).await?.json().await?;
                let key = created["key"].as_str().context("the server answered without a key")?;
                eprintln!("key {} ({}); shown once, store it now:", created["info"]["id"], created["info"]["role"]);
                println!("{key}");
            }
            KeysCommand::List(server) => {
                let client = Client::new(&server)?;
                let keys = client.get("/keys").await?;
                let mut table = crate::table::new(&["id", "name", "role", "scopes", "created by", "revoked"]);
                for k in keys.as_array().into_iter().flatten() {
                    let scopes: Vec<&str> =
                        k["scopes"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
                    table.add_row(vec![
                        k["id"].as_str().unwrap_or("").to_owned(),
                        k["name"].as_str().unwrap_or("").to_owned(),
                        k["role"].as_str().unwrap_or("").to_owned(),
                        scopes.join(", "),
                        k["created_by"].as_str().unwrap_or("").to_owned(),
                        if k["revoked_at"].is_null() { String::new() } else { "revoked".into() },
                    ]);
                }
                println!("{table}");
            }
            KeysCommand::Revoke(args) => {
                let client = Client::new(&args.server)?;
                client.send(client.http.delete(client.url(&format!("/keys/{}", args.id)))).await?;
                println!("key {} revoked", args.id);
            }
        }
        Ok(())
    })
}

pub fn run_audit(cmd: AuditCommand) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        match cmd {
            AuditCommand::List(server) => {
                let client = Client::new(&server)?;
                let mut after = 0i64;
                let mut table = crate::table::new(&["seq", "time", "actor", "action", "target", "outcome"]);
                loop {
                    let page = client.get(&format!("/audit?after={after}&limit=1000")).await?;
                    let records = page.as_array().cloned().unwrap_or_default();
                    for r in &records {
                        let at = r["at"].as_u64().map(|ms| {
                            humantime::format_rfc3339_millis(
                                std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms),
                            )
                            .to_string()
                        });
                        table.add_row(vec![
                            r["seq"].to_string(),
                            at.unwrap_or_default(),
                            r["actor"].as_str().unwrap_or("").to_owned(),
                            r["action"].as_str().unwrap_or("").to_owned(),
                            r["target"].as_str().unwrap_or("").to_owned(),
                            r["outcome"].as_str().unwrap_or("").to_owned(),
                        ]);
                    }
                    match records.last().and_then(|r| r["seq"].as_i64()) {
                        Some(last) if records.len() == 1000 => after = last,
                        _ => break,
                    }
                }
                println!("{table}");
            }
            AuditCommand::Verify(server) => {
                let client = Client::new(&server)?;
                let verdict = client.get("/audit/verify").await?;
                if verdict["intact"].as_bool() == Some(true) {
                    println!("audit log intact: {} records, every hash verifies", verdict["records"]);
                } else {
                    anyhow::bail!("audit log tampered with: {}", verdict["error"].as_str().unwrap_or("unknown break"));
                }
            }
        }
        Ok(())
    })
}
