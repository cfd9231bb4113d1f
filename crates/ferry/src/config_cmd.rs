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
            let settings = args.load()?;
            print!("{}", toml::to_string_pretty(&settings)?);
            Ok(())
        }
    }
}
