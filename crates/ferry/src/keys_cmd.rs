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
    /// Write a new random master key (for encryption at rest) to a file only you can read.
    GenerateMaster(GenerateMasterArgs),
    /// Re-wrap every package's data key under a new master key (packages are not rewritten), and encrypt packages
    /// stored before encryption was on. Works on the data directory and registry directly, like `ferry serve`.
    RotateMaster(RotateMasterArgs),
}

/// `ferry keys generate-master FILE`
#[derive(Debug, Args)]
pub struct GenerateMasterArgs {
    /// Where to write it (refuses to overwrite).
    pub out: std::path::PathBuf,
}

/// `ferry keys rotate-master --new-key-file FILE`
#[derive(Debug, Args)]
pub struct RotateMasterArgs {
    /// The new master key (`ferry keys generate-master`). The current one comes from the settings
    /// (master_key_file or FERRY_MASTER_KEY); without one, this turns encryption on.
    #[arg(long, value_name = "FILE")]
    pub new_key_file: std::path::PathBuf,
    #[command(flatten)]
    pub settings: crate::settings::SettingsArgs,
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
            KeysCommand::GenerateMaster(args) => generate_master(&args.out)?,
            KeysCommand::RotateMaster(args) => rotate_master(&args).await?,
        }
        Ok(())
    })
}

fn generate_master(out: &std::path::Path) -> anyhow::Result<()> {
    use std::io::Write;
    let key = ferry_registry::MasterKey::generate()?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(out).with_context(|| format!("cannot create {} (it must not exist)", out.display()))?;
    writeln!(file, "{}", key.to_hex().as_str()).with_context(|| format!("cannot write {}", out.display()))?;
    println!(
        "master key {} written to {}; keep a copy: packages stored under it cannot be read without it",
        key.id(),
        out.display()
    );
    Ok(())
}

async fn rotate_master(args: &RotateMasterArgs) -> anyhow::Result<()> {
    let settings = args.settings.load()?;
    let new = crate::settings::read_master_key(&args.new_key_file)?;
    let current = settings.master_key()?;
    let registry = crate::serve::open_registry(&settings).await?;
    let from = current.as_ref().map_or("none", |k| k.id()).to_owned();
    let result = registry.artifacts().rotate_master(current.as_ref(), &new).await;
    let outcome = match &result {
        Ok(r) => format!("ok: {} re-wrapped, {} encrypted, {} already under it", r.rewrapped, r.encrypted, r.already),
        Err(e) => format!("failed: {e}"),
    };
    registry.audit("cli", "rotate_master_key", &format!("{from} -> {}", new.id()), &outcome).await?;
    registry.close().await;
    let report = result?;
    println!(
        "master key {from} -> {}: {} data key(s) re-wrapped, {} package(s) encrypted, {} already under the new key",
        new.id(),
        report.rewrapped,
        report.encrypted,
        report.already
    );
    println!("configure the new key (master_key_file or FERRY_MASTER_KEY) and restart the servers");
    Ok(())
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
