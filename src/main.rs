#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tiketo_gate::config;

/// Door and check-in terminal for Tiketo wallet passes.
#[derive(Parser)]
#[command(name = "tiketo-gate", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon.
    Run {
        #[arg(long, default_value = config::DEFAULT_PATH)]
        config: PathBuf,
    },
    /// Check the config (and that the API token can be read): one line, or the errors.
    CheckConfig {
        #[arg(long, default_value = config::DEFAULT_PATH)]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config } => match config::load(&config) {
            Ok(cfg) => tiketo_gate::daemon::run(cfg),
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(2)
            }
        },
        Command::CheckConfig { config } => {
            let cfg = match config::load(&config) {
                Ok(cfg) => cfg,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(2);
                }
            };
            let mut problems = Vec::new();
            if let Err(e) = tiketo_gate::daemon::load_token(&cfg) {
                problems.push(e);
            }
            if let Some(ca) = &cfg.api.ca_file {
                if let Err(e) = std::fs::read(ca) {
                    problems.push(format!("api.ca_file {}: cannot read: {e}", ca.display()));
                }
            }
            if problems.is_empty() {
                println!("{}", cfg.summary());
                ExitCode::SUCCESS
            } else {
                for p in problems {
                    eprintln!("{}: {p}", cfg.source.display());
                }
                ExitCode::from(2)
            }
        }
    }
}
