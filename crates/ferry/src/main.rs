//! `ferry`: packs, serves and watches ONNX models. A thin `main`: parse the command line, run the subcommand, print
//! any error with its whole chain, and exit with a code that means something (0 ok, 1 failed, 2 bad usage).

mod alerts_cmd;
mod allocator;
mod client;
mod config_cmd;
mod deploy_cmd;
mod drift_cmd;
mod keys_cmd;
mod logging;
mod monitor_cmd;
mod pack;
mod progress;
mod rollout_cmd;
mod serve;
mod settings;
mod table;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// ferry — take a trained ONNX model to production and keep it healthy there.
#[derive(Debug, Parser)]
#[command(name = "ferry", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve models over the Open Inference Protocol (KServe v2) on HTTP.
    Serve(serve::ServeArgs),
    /// Pack a trained ONNX model into a versionable .ferry package (profile, validation metrics, checksums).
    Pack(pack::PackArgs),
    /// Print a package's manifest, signature, profile summary and metrics.
    Inspect(pack::InspectArgs),
    /// Check every checksum of a package and that its manifest describes its model.
    Verify(pack::VerifyArgs),
    /// Make an Ed25519 key pair for signing packages.
    Keygen(pack::KeygenArgs),
    /// Sign a package with a secret key.
    Sign(pack::SignArgs),
    /// Upload a package to a server's registry as a new version.
    Push(client::PushArgs),
    /// List the registry's models.
    Models(client::ServerArgs),
    /// List the versions of a model.
    Versions(client::VersionsArgs),
    /// Point an alias (production, staging, …) at a version; moving production swaps what is served.
    Alias(client::AliasArgs),
    /// Download a package from the registry.
    Pull(client::PullArgs),
    /// Show or set how a model's traffic is split between versions (weights, sticky header).
    Deploy(deploy_cmd::DeployArgs),
    /// Roll a version out as a canary that judges itself, or show or act on the running rollout.
    Rollout(rollout_cmd::RolloutArgs),
    /// Create, list and revoke API keys.
    #[command(subcommand)]
    Keys(keys_cmd::KeysCommand),
    /// See or erase what is logged about a data subject.
    #[command(subcommand)]
    Subjects(keys_cmd::SubjectsCommand),
    /// Read and verify the tamper-evident audit log.
    #[command(subcommand)]
    Audit(keys_cmd::AuditCommand),
    /// Compare a current CSV with a reference (CSV or package) for data drift, with Evidently's numbers.
    Drift(drift_cmd::DriftArgs),
    /// Watch a served model's live drift, quality and performance (refreshes; --once for scripts).
    Monitor(monitor_cmd::MonitorArgs),
    /// Export the alert rules for Prometheus, or list a server's alerts.
    #[command(subcommand)]
    Alerts(alerts_cmd::AlertsCommand),
    /// Inspect the effective configuration.
    #[command(subcommand)]
    Config(config_cmd::ConfigCommand),
}

fn main() -> ExitCode {
    allocator::configure_malloc();
    ferry_serving::set_allocator_release(allocator::mimalloc_collect);
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Pack(args) => pack::run_pack(args),
        Command::Inspect(args) => pack::run_inspect(args),
        Command::Verify(args) => pack::run_verify(args),
        Command::Keygen(args) => pack::run_keygen(args),
        Command::Sign(args) => pack::run_sign(args),
        Command::Push(args) => client::run_push(args),
        Command::Models(args) => client::run_models(args),
        Command::Versions(args) => client::run_versions(args),
        Command::Alias(args) => client::run_alias(args),
        Command::Pull(args) => client::run_pull(args),
        Command::Deploy(args) => deploy_cmd::run(args),
        Command::Rollout(args) => rollout_cmd::run(args),
        Command::Keys(cmd) => keys_cmd::run_keys(cmd),
        Command::Audit(cmd) => keys_cmd::run_audit(cmd),
        Command::Subjects(cmd) => keys_cmd::run_subjects(cmd),
        Command::Config(cmd) => config_cmd::run(cmd),
        Command::Monitor(args) => monitor_cmd::run(&args),
        Command::Alerts(cmd) => alerts_cmd::run(cmd),
        Command::Drift(args) => match drift_cmd::run(&args) {
            Ok(true) if args.fail_on_drift => return ExitCode::from(drift_cmd::DRIFT_EXIT),
            Ok(_) => Ok(()),
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        super::Cli::command().debug_assert();
    }
}
