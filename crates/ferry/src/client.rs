//! The client commands: `push`, `models`, `versions`, `alias`, `pull`, talking to a ferry server's management API.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;
use futures::StreamExt;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::progress;

/// Where the server is.
#[derive(Debug, Clone, Args)]
pub struct ServerArgs {
    /// The ferry server [env: FERRY_SERVER].
    #[arg(long, env = "FERRY_SERVER", default_value = "http://127.0.0.1:8000", global = true)]
    pub server: String,
    /// API key [env: FERRY_API_KEY].
    #[arg(long, env = "FERRY_API_KEY", hide_env_values = true, global = true)]
    pub key: Option<String>,
    /// PEM CA to trust for an https:// server (besides none: only this CA is trusted) [env: FERRY_CA_CERT].
    #[arg(long, env = "FERRY_CA_CERT", value_name = "FILE", global = true)]
    pub ca_cert: Option<PathBuf>,
    /// PEM client certificate followed by its key, for servers that require mutual TLS [env: FERRY_CLIENT_CERT].
    #[arg(long, env = "FERRY_CLIENT_CERT", value_name = "FILE", global = true)]
    pub client_cert: Option<PathBuf>,
}

/// `ferry push PKG [--alias ALIAS]`
#[derive(Debug, Args)]
pub struct PushArgs {
    /// The package.
    #[arg(value_name = "PKG.ferry")]
    pub package: PathBuf,
    /// Point this alias at the new version (`production` starts serving it).
    #[arg(long)]
    pub alias: Option<String>,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// `ferry versions NAME`
#[derive(Debug, Args)]
pub struct VersionsArgs {
    /// Model name.
    pub name: String,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// `ferry alias NAME ALIAS VERSION`
#[derive(Debug, Args)]
pub struct AliasArgs {
    /// Model name.
    pub name: String,
    /// Alias (`production`, `staging`, any name).
    pub alias: String,
    /// Version to point at (omit with --delete).
    #[arg(value_name = "VERSION", required_unless_present = "delete")]
    pub to: Option<u64>,
    /// Only move the alias if it points at this version now.
    #[arg(long, value_name = "VERSION", conflicts_with = "create_only")]
    pub if_version: Option<u64>,
    /// Only create the alias; fail if it exists.
    #[arg(long)]
    pub create_only: bool,
    /// Delete the alias instead.
    #[arg(long, conflicts_with_all = ["to", "if_version", "create_only"])]
    pub delete: bool,
    /// Return at once instead of waiting until the new version serves.
    #[arg(long)]
    pub no_wait: bool,
    #[command(flatten)]
    pub server: ServerArgs,
}

/// `ferry pull NAME[:VERSION|@ALIAS] -o FILE`
#[derive(Debug, Args)]
pub struct PullArgs {
    /// `NAME` (latest), `NAME:VERSION` or `NAME@ALIAS`.
    #[arg(value_name = "NAME[:VERSION|@ALIAS]")]
    pub reference: String,
    /// Where to write the package [default: NAME-VERSION.ferry].
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub server: ServerArgs,
}

pub(crate) struct Client {
    pub(crate) http: reqwest::Client,
    base: String,
    key: Option<String>,
}

impl Client {
    pub(crate) fn new(server: &ServerArgs) -> anyhow::Result<Self> {
        let base = server.server.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            bail!("--server must be an http:// or https:// URL, got {base:?}");
        }
        drop(rustls::crypto::ring::default_provider().install_default());
        let mut builder = reqwest::Client::builder().use_rustls_tls();
        if let Some(ca) = &server.ca_cert {
            let pem = std::fs::read(ca).with_context(|| format!("cannot read {}", ca.display()))?;
            let cert = reqwest::Certificate::from_pem(&pem)
                .with_context(|| format!("{} is not a PEM certificate", ca.display()))?;
            builder = builder.tls_built_in_root_certs(false).add_root_certificate(cert);
        }
        if let Some(path) = &server.client_cert {
            let pem = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            let identity = reqwest::Identity::from_pem(&pem)
                .with_context(|| format!("{} must hold a PEM certificate and its private key", path.display()))?;
            builder = builder.identity(identity);
        }
        Ok(Self { http: builder.build()?, base, key: server.key.clone() })
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}/api/v1{path}", self.base)
    }

    pub(crate) async fn send(&self, request: reqwest::RequestBuilder) -> anyhow::Result<reqwest::Response> {
        let request = match &self.key {
            Some(key) => request.bearer_auth(key),
            None => request,
        };
        let response =
            request.send().await.with_context(|| format!("cannot reach the ferry server at {}", self.base))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        let message = serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_owned))
            .unwrap_or(body);
        let hint = if status.as_u16() == 401 && self.key.is_none() { "; set FERRY_API_KEY or --key" } else { "" };
        bail!("{message} (HTTP {}){hint}", status.as_u16())
    }

    pub(crate) async fn get(&self, path: &str) -> anyhow::Result<Value> {
        Ok(self.send(self.http.get(self.url(path))).await?.json().await?)
    }
}

pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the runtime")
}

pub fn run_push(args: PushArgs) -> anyhow::Result<()> {
    // Check locally first: a damaged package fails here with the precise reason, before any upload.
    let size =
        std::fs::metadata(&args.package).with_context(|| format!("cannot read {}", args.package.display()))?.len();
    let bar = progress::bytes("checking", size);
    let contents = ferry_package::verify(&args.package, None, &|n| bar.set_position(n))
        .with_context(|| format!("{} is not a valid package", args.package.display()))?;
    bar.finish_and_clear();
    let name = contents.manifest.name.to_string();
    runtime()?.block_on(async {
        let client = Client::new(&args.server)?;
        let file = tokio::fs::File::open(&args.package).await?;
        let bar = progress::bytes("pushing", size);
        let progress_bar = bar.clone();
        let mut sent = 0u64;
        let stream = tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024).inspect(move |chunk| {
            if let Ok(c) = chunk {
                sent += c.len() as u64;
                progress_bar.set_position(sent);
            }
        });
        let request = client
            .http
            .post(client.url(&format!("/models/{name}/versions")))
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .header(reqwest::header::CONTENT_LENGTH, size)
            .body(reqwest::Body::wrap_stream(stream));
        let record: Value = client.send(request).await?.json().await?;
        bar.finish_and_clear();
        let version = record["version"].as_u64().context("the server answered without a version")?;
        println!("pushed {name} version {version} (sha256:{})", contents.digest);
        if let Some(alias) = &args.alias {
            set_alias(&client, &name, alias, version, json!({}), true).await?;
        }
        Ok(())
    })
}

async fn set_alias(
    client: &Client,
    name: &str,
    alias: &str,
    version: u64,
    extra: Value,
    wait: bool,
) -> anyhow::Result<()> {
    let mut body = json!({ "version": version });
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    let url = client.url(&format!("/models/{name}/aliases/{alias}?wait={wait}"));
    let record: Value = client.send(client.http.put(url).json(&body)).await?.json().await?;
    match record["previous"].as_u64() {
        Some(p) if p != version => println!("{name}@{alias}: version {p} -> {version}"),
        Some(_) => println!("{name}@{alias}: already version {version}"),
        None => println!("{name}@{alias}: -> version {version}"),
    }
    Ok(())
}

pub fn run_models(server: ServerArgs) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let client = Client::new(&server)?;
        let models = client.get("/models").await?;
        let mut table = crate::table::new(&["model", "latest", "versions", "aliases", "owner", "description"]);
        for m in models.as_array().into_iter().flatten() {
            table.add_row(vec![
                m["name"].as_str().unwrap_or("").to_owned(),
                m["latest_version"].as_u64().map_or_else(|| "-".into(), |v| v.to_string()),
                m["versions"].to_string(),
                aliases_text(&m["aliases"]),
                m["owner"].as_str().unwrap_or("").to_owned(),
                m["description"].as_str().unwrap_or("").to_owned(),
            ]);
        }
        println!("{table}");
        Ok(())
    })
}

fn aliases_text(aliases: &Value) -> String {
    aliases
        .as_object()
        .map_or_else(String::new, |a| a.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", "))
}

pub fn run_versions(args: VersionsArgs) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let client = Client::new(&args.server)?;
        let versions = client.get(&format!("/models/{}/versions", args.name)).await?;
        let mut table = crate::table::new(&["version", "aliases", "created", "by", "size", "sha256", "metrics"]);
        for v in versions.as_array().into_iter().flatten() {
            let aliases: Vec<&str> = v["aliases"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
            let created = v["created_at"]
                .as_u64()
                .map(|ms| {
                    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms))
                        .to_string()
                })
                .unwrap_or_default();
            let metrics = v["manifest"]["validation"]["metrics"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, x)| format!("{k}={:.3}", x.as_f64().unwrap_or(f64::NAN)))
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_default();
            table.add_row(vec![
                v["version"].to_string(),
                aliases.join(", "),
                created,
                v["created_by"].as_str().unwrap_or("").to_owned(),
                v["size"].to_string(),
                v["digest"].as_str().map(|d| d.get(..12).unwrap_or(d).to_owned()).unwrap_or_default(),
                metrics,
            ]);
        }
        println!("{table}");
        Ok(())
    })
}

pub fn run_alias(args: AliasArgs) -> anyhow::Result<()> {
    runtime()?.block_on(async {
        let client = Client::new(&args.server)?;
        if args.delete {
            let url = client.url(&format!("/models/{}/aliases/{}", args.name, args.alias));
            client.send(client.http.delete(url)).await?;
            println!("{}@{}: deleted", args.name, args.alias);
            return Ok(());
        }
        let version = args.to.context("VERSION is required")?;
        let mut extra = json!({});
        if let Some(v) = args.if_version {
            extra["if_version"] = json!(v);
        }
        if args.create_only {
            extra["create_only"] = json!(true);
        }
        set_alias(&client, &args.name, &args.alias, version, extra, !args.no_wait).await
    })
}

pub fn run_pull(args: PullArgs) -> anyhow::Result<()> {
    let (name, selector) = split_reference(&args.reference)?;
    runtime()?.block_on(async {
        let client = Client::new(&args.server)?;
        let version = match selector {
            Sel::Version(v) => v,
            Sel::Alias(a) => client.get(&format!("/models/{name}/aliases/{a}")).await?["version"]
                .as_u64()
                .context("the server answered without a version")?,
            Sel::Latest => client.get(&format!("/models/{name}")).await?["latest_version"]
                .as_u64()
                .with_context(|| format!("model {name:?} has no versions"))?,
        };
        let output = args.output.clone().unwrap_or_else(|| PathBuf::from(format!("{name}-{version}.ferry")));
        let response =
            client.send(client.http.get(client.url(&format!("/models/{name}/versions/{version}/package")))).await?;
        let expected = response
            .headers()
            .get("x-ferry-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .context("the server sent no X-Ferry-Digest")?;
        let bar = progress::bytes("pulling", response.content_length().unwrap_or(0));
        let partial = partial_path(&output);
        let mut file =
            tokio::fs::File::create(&partial).await.with_context(|| format!("cannot create {}", partial.display()))?;
        let mut hasher = Sha256::new();
        let mut stream = response.bytes_stream();
        let mut got = 0u64;
        let result = async {
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.context("the download was interrupted")?;
                hasher.update(&chunk);
                got += chunk.len() as u64;
                bar.set_position(got);
                file.write_all(&chunk).await?;
            }
            file.sync_all().await?;
            let digest = hex::encode(hasher.finalize());
            if digest != expected {
                bail!("the download hashes to {digest}, not {expected}; discarded");
            }
            tokio::fs::rename(&partial, &output).await?;
            anyhow::Ok(digest)
        }
        .await;
        bar.finish_and_clear();
        match result {
            Ok(digest) => {
                println!("{} <- {name} version {version} (sha256:{digest})", output.display());
                Ok(())
            }
            Err(e) => {
                drop(tokio::fs::remove_file(&partial).await);
                Err(e)
            }
        }
    })
}

fn partial_path(output: &Path) -> PathBuf {
    let mut name = output.file_name().map(std::ffi::OsStr::to_os_string).unwrap_or_default();
    name.push(".partial");
    output.with_file_name(name)
}

enum Sel {
    Latest,
    Version(u64),
    Alias(String),
}

fn split_reference(reference: &str) -> anyhow::Result<(String, Sel)> {
    let (name, sel) = if let Some((n, a)) = reference.split_once('@') {
        (n, Sel::Alias(a.to_owned()))
    } else if let Some((n, v)) = reference.split_once(':') {
        let v = v.parse::<u64>().ok().filter(|v| *v > 0).with_context(|| format!("{v:?} is not a version number"))?;
        (n, Sel::Version(v))
    } else {
        (reference, Sel::Latest)
    };
    ferry_types::ModelName::new(name).with_context(|| format!("model name in {reference:?}"))?;
    if let Sel::Alias(a) = &sel {
        ferry_types::ModelName::new(a.as_str()).with_context(|| format!("alias in {reference:?}"))?;
    }
    Ok((name.to_owned(), sel))
}
