//! `ferry serve`: load models, answer the Open Inference Protocol, drain on SIGTERM/SIGINT.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Args;
use ferry_server::{AppState, ServerLimits};
use ferry_serving::{EngineSettings, ModelRepository, sources_from_files, sources_from_repository};
use tokio::net::TcpListener;

use crate::settings::{Settings, SettingsArgs};

/// `ferry serve [MODEL.onnx …] [--model-repository DIR]`
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// ONNX model files to serve, each under its file stem as version 1.
    #[arg(value_name = "MODEL.onnx")]
    pub models: Vec<PathBuf>,
    #[command(flatten)]
    pub settings: SettingsArgs,
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let settings = args.settings.load()?;
    crate::logging::init(settings.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    runtime.block_on(serve(args.models, settings))
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
    if sources.is_empty() {
        bail!("no models to serve: name model files (ferry serve model.onnx) or a repository (--model-repository DIR)");
    }

    let repository = Arc::new(ModelRepository::new());
    let names = {
        let mut names: Vec<String> = sources.iter().map(|s| s.name.to_string()).collect();
        names.dedup();
        names
    };
    let engines = EngineSettings { onnxruntime_lib: settings.onnxruntime_lib.clone() };
    repository.set_catalog(sources, settings.models.clone(), engines);
    let state = AppState::new(repository.clone(), ServerLimits { max_request_bytes: settings.max_request_bytes });

    let http_addr = format!("{}:{}", settings.host, settings.http_port);
    let http = TcpListener::bind(&http_addr).await.with_context(|| format!("cannot listen on {http_addr}"))?;
    let grpc_addr = format!("{}:{}", settings.host, settings.grpc_port);
    let grpc = TcpListener::bind(&grpc_addr).await.with_context(|| format!("cannot listen on {grpc_addr}"))?;
    let (http_local, grpc_local) = (http.local_addr()?, grpc.local_addr()?);
    // Printed as plain lines too, so that scripts and tests started with port 0 can find the ports.
    println!("ferry listening on http://{http_local}");
    println!("ferry gRPC listening on {grpc_local}");
    tracing::info!(http = %http_local, grpc = %grpc_local, "listening; live now, ready once every model is loaded");

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>, state: AppState| async move {
        drop(rx.wait_for(|stop| *stop).await);
        // Not ready first, so that load balancers stop sending while in-flight requests finish.
        state.set_ready(false);
    };
    let http_server = tokio::spawn(ferry_server::serve(http, state.clone(), stopped(stop_rx.clone(), state.clone())));
    let grpc_server =
        tokio::spawn(ferry_server::serve_grpc(grpc, state.clone(), stopped(stop_rx.clone(), state.clone())));
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down: finishing in-flight requests");
        stop_tx.send_replace(true);
    });

    let count = names.len();
    let loader = repository.clone();
    let loading = tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        names.iter().try_for_each(|name| loader.load(name).map_err(anyhow::Error::from))
    });
    let mut load_stop = stop_rx;
    let loaded = tokio::select! {
        loaded = loading => loaded.context("model loading panicked")?,
        _ = async { drop(load_stop.wait_for(|stop| *stop).await) } => bail!("stopped before the models finished loading"),
    };
    loaded.context("a model failed to load; not serving")?;
    state.set_ready(true);
    tracing::info!(models = count, "ready");

    http_server.await.context("the HTTP server panicked")?.context("the HTTP server failed")?;
    grpc_server.await.context("the gRPC server panicked")?.context("the gRPC server failed")?;
    // Every request has been answered; stop the instance threads off the async runtime.
    let models = repository.take_all();
    tokio::task::spawn_blocking(move || drop(models)).await.context("stopping model instances")?;
    tracing::info!("stopped");
    Ok(())
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
