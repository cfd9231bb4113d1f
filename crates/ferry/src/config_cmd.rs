//! `ferry config show`: the effective settings after every layer.

use clap::Subcommand;

use crate::settings::SettingsArgs;

/// `ferry config …`
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the effective settings as TOML (defaults, ferry.toml, FERRY_* variables and flags applied).
    Show(SettingsArgs),
}

pub fn run(cmd: ConfigCommand) -> anyhow::Result<()> {
    match cmd {
        ConfigCommand::Show(args) => {
            let mut settings = args.load()?;
            // Secrets stay out of the output: a database password in the registry URL is masked.
            settings.registry = ferry_registry::redact_url(&settings.registry);
            print!("{}", toml::to_string_pretty(&settings)?);
            Ok(())
        }
    }
}
