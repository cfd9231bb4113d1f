//! `ferry`: packs, serves and watches ONNX models. A thin `main`: parse the command line, run the subcommand, print
//! any error with its whole chain, and exit with a code that means something (0 ok, 1 failed, 2 bad usage).

mod config_cmd;
mod logging;
mod serve;
mod settings;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc instead of glibc malloc: request buffers are allocated on the async runtime's threads and freed on the
/// inference threads (and back), and glibc's arena locks made that cross-thread traffic the top of the profile.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Inspect the effective configuration.
    #[command(subcommand)]
    Config(config_cmd::ConfigCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Config(cmd) => config_cmd::run(cmd),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
