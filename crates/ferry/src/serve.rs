//! `ferry serve`: load models, answer the Open Inference Protocol, drain on SIGTERM/SIGINT.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Args;
use ferry_registry::{ArtifactStore, Registry};
use ferry_server::{AppState, RegistryContext, ServerLimits};
use ferry_serving::{EngineSettings, MemoryBudget, ModelRepository, sources_from_files, sources_from_repository};
use tokio::net::TcpListener;

use crate::settings::{Settings, SettingsArgs};

/// How often every model's autoscaler looks at its queue.
const AUTOSCALE_TICK: std::time::Duration = std::time::Duration::from_millis(250);

/// `ferry serve [MODEL.onnx …] [--model-repository DIR]`; with neither, the registry's `production` versions.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// ONNX model files to serve, each under its file stem as version 1. The registry's models with a serving
    /// alias are served as well.
    #[arg(value_name = "MODEL.onnx")]
    pub models: Vec<PathBuf>,
    #[command(flatten)]
    pub settings: SettingsArgs,
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let settings = args.settings.load()?;
    crate::logging::init(settings.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_park(collect_when_idle)
        .build()
        .context("starting the runtime")?;
    runtime.block_on(serve(args.models, settings))
}

/// A runtime thread going idle hands its allocator's free pages back, at most once a second: requests, answers and
/// scrapes are freed into the heaps of the threads that allocated them, and an idle thread's heap would otherwise keep
/// them until it allocates again (after a burst, or after models scaled to zero, that can be tens of MiB).
fn collect_when_idle() {
    thread_local! {
        static LAST: std::cell::Cell<Option<std::time::Instant>> = const { std::cell::Cell::new(None) };
    }
    LAST.with(|last| {
        if last.get().is_none_or(|at| at.elapsed() >= std::time::Duration::from_secs(1)) {
            last.set(Some(std::time::Instant::now()));
            crate::allocator::mimalloc_collect();
        }
    });
}

async fn serve(files: Vec<PathBuf>, settings: Settings) -> anyhow::Result<()> {
    let mut sources = sources_from_files(&files)?;
    if let Some(dir) = &settings.model_repository {
        for source in sources_from_repository(dir)? {
            if sources.iter().any(|s| s.name == source.name) {
                bail!("model {:?} is given both as a file and in the model repository", source.name.as_str());
            }
            sources.push(source);
        }
    }
    let registry = open_registry(&settings).await?;

    let repository = Arc::new(ModelRepository::new());
    let names = {
        let mut names: Vec<String> = sources.iter().map(|s| s.name.to_string()).collect();
        names.dedup();
        names
    };
    let engines = EngineSettings {
        onnxruntime_lib: settings.onnxruntime_lib.clone(),
        budget: MemoryBudget::new(settings.memory_budget_mb.map(|mb| mb.saturating_mul(1 << 20))),
    };
    repository.set_catalog(sources, settings.models.clone(), engines);
    bootstrap_admin_key(&registry).await?;
    let mut context = RegistryContext::new(registry, settings.serve_alias.clone(), settings.max_package_bytes);
    context.allow_anonymous_inference = settings.allow_anonymous_inference;
    context.require_signature = settings.require_signature;
    context.default_limits = ferry_server::DefaultLimits {
        rate_per_second: settings.rate_limit_per_key,
        daily_quota: settings.daily_quota_per_key,
    };
    for path in &settings.trusted_signers {
        let text = std::fs::read_to_string(path).with_context(|| format!("trusted signer {}", path.display()))?;
        let key =
            ferry_package::parse_public_key(&text).with_context(|| format!("trusted signer {}", path.display()))?;
        context
            .trusted_signers
            .push(ferry_package::public_key_text(&key).split_whitespace().nth(1).unwrap_or_default().to_owned());
    }
    context.keys.refresh(&context.registry).await.map_err(|e| anyhow::anyhow!("{}", e.message()))?;
    if !settings.prediction_log.models.is_empty() {
        let p = &settings.prediction_log;
        let config = ferry_server::PredictionLogConfig {
            models: p.models.clone(),
            subject_header: p.subject_header.clone(),
            redact: p.redact.clone(),
            retention: std::time::Duration::from_secs(p.retention_days.saturating_mul(86_400)),
        };
        context.prediction_log = Some(ferry_server::PredictionLog::start(config, context.registry.clone()));
        tracing::info!(models = ?p.models, retention_days = p.retention_days, "prediction logging on");
    }
    if settings.monitoring.enabled {
        let m = &settings.monitoring;
        context.drift_watch = Some(ferry_server::DriftWatch::start(ferry_server::DriftWatchConfig {
            sample_rate: m.sample_rate,
            window_rows: m.window_rows,
            buffer: m.buffer,
            drift_share: m.drift_share,
        }));
    }
    if settings.monitoring.feedback {
        let m = &settings.monitoring;
        let config = ferry_server::QualityConfig {
            window: m.feedback_window,
            retention: std::time::Duration::from_secs(m.feedback_retention_days.saturating_mul(86_400)),
            buffer: m.feedback_buffer,
            min_rows: m.min_feedback_rows,
            spool_bytes: m.feedback_spool_mb.saturating_mul(1 << 20),
        };
        context.quality_watch = Some(ferry_server::QualityWatch::start(config, context.registry.clone()));
    }
    let mut webhooks = Vec::new();
    for hook in &settings.alerting.webhooks {
        let secret = match &hook.secret_env {
            None => None,
            Some(var) => Some(
                std::env::var(var)
                    .ok()
                    .filter(|v| !v.is_empty())
                    .with_context(|| format!("alerting.webhooks: {var} (the secret of {}) is not set", hook.url))?
                    .into_bytes(),
            ),
        };
        webhooks.push(ferry_server::Webhook {
            url: hook.url.clone(),
            secret,
            max_attempts: hook.max_attempts,
            initial_backoff: hook.initial_backoff,
            timeout: hook.timeout,
        });
    }
    let alerting = ferry_server::Alerting::new(ferry_server::AlertingConfig {
        rules: settings.alerts.clone(),
        webhooks,
        evaluation_interval: settings.monitoring.evaluation_interval,
    })
    .map_err(anyhow::Error::msg)?;
    context.alerting = Some(alerting.clone());
    let limits = ServerLimits {
        max_request_bytes: settings.max_request_bytes,
        max_concurrent_requests: settings.max_concurrent_requests,
    };
    let state = AppState::with_registry(repository.clone(), limits, Some(context));
    state.metrics().performance.configure(ferry_server::PerformanceConfig {
        window: settings.monitoring.performance_window,
        warmup: settings.monitoring.baseline_warmup,
    });
    tokio::spawn(alerting.run(state.clone()));
    if !settings.alerts.is_empty() {
        tracing::info!(rules = settings.alerts.len(), webhooks = settings.alerting.webhooks.len(), "alerting on");
    }

    let http_addr = format!("{}:{}", settings.host, settings.http_port);
    let http = TcpListener::bind(&http_addr).await.with_context(|| format!("cannot listen on {http_addr}"))?;
    let grpc_addr = format!("{}:{}", settings.host, settings.grpc_port);
    let grpc = TcpListener::bind(&grpc_addr).await.with_context(|| format!("cannot listen on {grpc_addr}"))?;
    let (http_local, grpc_local) = (http.local_addr()?, grpc.local_addr()?);
    let tls = match (&settings.tls_cert, &settings.tls_key) {
        (Some(cert), Some(key)) => {
            let files = ferry_server::TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: settings.tls_client_ca.clone(),
            };
            Some((files.server_config()?, files.grpc_config()?))
        }
        _ => None,
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    // Printed as plain lines too, so that scripts and tests started with port 0 can find the ports.
    println!("ferry listening on {scheme}://{http_local}");
    println!("ferry gRPC listening on {grpc_local}");
    tracing::info!(http = %http_local, grpc = %grpc_local, "listening; live now, ready once every model is loaded");

    // Keys created or revoked by another replica sharing the registry take effect within KEY_REFRESH.
    if let Some(ctx) = state.registry_context().cloned() {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(ferry_server::KEY_REFRESH);
            loop {
                tick.tick().await;
                if let Err(e) = ctx.keys.refresh(&ctx.registry).await {
                    tracing::warn!(error = e.message(), "could not refresh the API keys; keeping the last ones");
                }
            }
        });
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>, state: AppState| async move {
        drop(rx.wait_for(|stop| *stop).await);
        // Not ready first, so that load balancers stop sending while in-flight requests finish.
        state.set_ready(false);
    };
    let (http_tls, grpc_tls) = tls.map_or((None, None), |(h, g)| (Some(h), Some(g)));
    let http_stop = stopped(stop_rx.clone(), state.clone());
    let http_server = match http_tls {
        Some(config) => tokio::spawn(ferry_server::serve_tls(http, state.clone(), http_stop, config)),
        None => tokio::spawn(ferry_server::serve(http, state.clone(), http_stop)),
    };
    let grpc_server =
        tokio::spawn(ferry_server::serve_grpc(grpc, state.clone(), stopped(stop_rx.clone(), state.clone()), grpc_tls));
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down: finishing in-flight requests");
        stop_tx.send_replace(true);
    });

    let loader = repository.clone();
    let loading = tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        names.iter().try_for_each(|name| loader.load(name).map_err(anyhow::Error::from))
    });
    let from_registry = {
        let state = state.clone();
        async move {
            let ctx = state.registry_context().context("registry context")?.clone();
            ctx.sync_all(&state).await.map_err(|e| anyhow::anyhow!("{}", e.message()))
        }
    };
    let mut load_stop = stop_rx;
    let (loaded, served) = tokio::select! {
        both = async { tokio::join!(loading, from_registry) } => both,
        _ = async { drop(load_stop.wait_for(|stop| *stop).await) } => bail!("stopped before the models finished loading"),
    };
    loaded.context("model loading panicked")?.context("a model failed to load; not serving")?;
    let served = served.context("a registry model failed to load; not serving")?;
    state.set_ready(true);
    let count = repository.summaries().len();
    if count == 0 {
        tracing::warn!("no models yet: push a package (ferry push) and point its production alias at a version");
    }
    tracing::info!(models = count, from_registry = served, "ready");
    // Alias moves and deployments made through another replica sharing the registry take effect here too.
    if let Some(ctx) = state.registry_context().cloned() {
        let state = state.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(ferry_server::KEY_REFRESH);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                ctx.reconcile(&state).await;
            }
        });
    }
    // Instances follow the load: more under queue pressure, fewer when it falls, none after idling with
    // `min_instances = 0`.
    {
        let repository = repository.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(AUTOSCALE_TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let repository = repository.clone();
                if tokio::task::spawn_blocking(move || repository.autoscale()).await.is_err() {
                    tracing::error!("the autoscaler panicked");
                }
            }
        });
    }
    // Canary rollouts are judged at the end of each of their intervals.
    if let Some(ctx) = state.registry_context().cloned() {
        let state = state.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(ferry_server::rollouts::TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                ctx.rollouts.tick(&state).await;
            }
        });
    }

    http_server.await.context("the HTTP server panicked")?.context("the HTTP server failed")?;
    grpc_server.await.context("the gRPC server panicked")?.context("the gRPC server failed")?;
    // The predictions kept for feedback that are still buffered are written before the process ends.
    if let Some(quality) = state.registry_context().and_then(|c| c.quality_watch.clone()) {
        quality.close().await;
    }
    // Every request has been answered; stop the instance threads off the async runtime.
    let models = repository.take_all();
    tokio::task::spawn_blocking(move || drop(models)).await.context("stopping model instances")?;
    tracing::info!("stopped");
    Ok(())
}

/// A fresh registry gets its first admin key: `FERRY_ADMIN_KEY` if set, else a new one printed once to stderr.
async fn bootstrap_admin_key(registry: &Registry) -> anyhow::Result<()> {
    if registry.has_keys().await? {
        return Ok(());
    }
    let scopes = [ferry_auth::Scope::new("*")?];
    match std::env::var("FERRY_ADMIN_KEY") {
        Ok(key) if !key.is_empty() => {
            let info = registry
                .insert_key(&key, "bootstrap admin", ferry_auth::Role::Admin, &scopes, Default::default(), "bootstrap")
                .await?;
            registry
                .audit("ferry", "create_key", &format!("key/{} (admin, from FERRY_ADMIN_KEY)", info.id), "ok")
                .await?;
        }
        _ => {
            let (key, info) = registry
                .create_key("bootstrap admin", ferry_auth::Role::Admin, &scopes, Default::default(), "bootstrap")
                .await?;
            registry.audit("ferry", "create_key", &format!("key/{} (admin, bootstrap)", info.id), "ok").await?;
            eprintln!(
                "\nA new registry: its first admin key is printed here once and stored only as a hash.\n\n    {key}\n\n\
                 Use it as FERRY_API_KEY for the ferry CLI, or as `Authorization: Bearer <key>`.\n"
            );
        }
    }
    Ok(())
}

/// Opens the registry (SQLite in the data directory unless configured otherwise) and removes what interrupted
/// uploads left behind.
pub(crate) async fn open_registry(settings: &Settings) -> anyhow::Result<Registry> {
    let data = &settings.data_dir;
    std::fs::create_dir_all(data).with_context(|| format!("cannot create the data directory {}", data.display()))?;
    let artifacts = ArtifactStore::local(&data.join("artifacts"), &data.join("staging"))?
        .with_master_key(settings.master_key()?)
        .with_previous_master_keys(settings.previous_master_keys()?);
    if let Some(id) = artifacts.master_key_id() {
        tracing::info!(master_key = id, "packages are stored encrypted");
    }
    let registry = Registry::open(&settings.registry_url(), artifacts).await?;
    // Earlier versions unpacked models under `cache/`; models now load from memory, and no plaintext copy may stay.
    let cache = data.join("cache");
    if cache.is_dir() {
        std::fs::remove_dir_all(&cache)
            .with_context(|| format!("cannot remove the old model cache {}", cache.display()))?;
    }
    let grace = std::time::Duration::from_secs(settings.orphan_grace_seconds);
    registry.clean_orphans(grace).await.context("cleaning up after interrupted uploads")?;
    tracing::info!(backend = registry.backend(), data_dir = %data.display(), "registry open");
    Ok(registry)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
