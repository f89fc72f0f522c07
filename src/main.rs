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
        /// The file's syntax and values alone: not the token, the CA file or the GPIO chips
        /// of this machine (a config written on a laptop for a door elsewhere).
        #[arg(long)]
        file_only: bool,
    },
    /// Register this device with Tiketo (needs the workspace API token).
    Enroll {
        #[arg(long, default_value = config::DEFAULT_PATH)]
        config: PathBuf,
        /// The device's name (default: device.name).
        #[arg(long)]
        name: Option<String>,
        /// Register again even when the device is enrolled (replaces its credentials).
        #[arg(long)]
        force: bool,
    },
    /// Online or offline, enrolment, pending and dead scan events, last sync, clock.
    Status {
        #[arg(long, default_value = config::DEFAULT_PATH)]
        config: PathBuf,
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Decode a recording of a keyboard-mode reader (`cat /dev/input/by-id/...-event-kbd >
    /// FILE`, a few scans, Ctrl-C) with each layout, to see which one the scanner uses.
    HidDecode {
        file: PathBuf,
        /// Only this layout (us, de); default: every layout.
        #[arg(long)]
        layout: Option<String>,
        /// Show whole codes (they are pass codes: only on a trusted terminal).
        #[arg(long)]
        full: bool,
    },
    /// The installer's check before the doors open: config, token, store, network, clock,
    /// auth, the live API schema, readers and lines; exit status 1 when something is wrong.
    Doctor {
        #[arg(long, default_value = config::DEFAULT_PATH)]
        config: PathBuf,
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
        /// Wait for one code per reader and show it (masked) with the verdict it would get;
        /// nothing is recorded. The daemon must be stopped.
        #[arg(long)]
        scan: bool,
        /// Pulse each output once, in turn, announced. The daemon must be stopped.
        #[arg(long)]
        outputs: bool,
        /// How long --scan waits for a code at each reader (seconds).
        #[arg(long, default_value_t = 30)]
        scan_wait: u64,
    },
    /// The queue of scan events waiting for the server, and its dead letters.
    Queue {
        #[arg(long, default_value = config::DEFAULT_PATH, global = true)]
        config: PathBuf,
        #[command(subcommand)]
        command: QueueCommand,
    },
}

#[derive(Subcommand)]
enum QueueCommand {
    /// List pending scan events (or the dead letters), oldest first.
    List {
        #[arg(long)]
        dead: bool,
        #[arg(long)]
        json: bool,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Put a dead letter (by scan id or seq) back in the queue, or all of them.
    Retry {
        #[arg(required_unless_present = "all_dead", conflicts_with = "all_dead")]
        id: Option<String>,
        #[arg(long)]
        all_dead: bool,
    },
    /// Remove a pending or dead scan event for good (by scan id or seq).
    Drop {
        id: String,
        /// Confirm: the event will never reach Tiketo.
        #[arg(long)]
        yes: bool,
    },
}

fn load_or_exit(path: &std::path::Path) -> Result<config::Config, ExitCode> {
    config::load(path).map_err(|e| {
        eprintln!("{e}");
        ExitCode::from(2)
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Enroll {
            config,
            name,
            force,
        } => match load_or_exit(&config) {
            Ok(cfg) => tiketo_gate::cli::enroll(&cfg, name, force),
            Err(code) => code,
        },
        Command::Status { config, json } => match load_or_exit(&config) {
            Ok(cfg) => tiketo_gate::cli::status(&cfg, json),
            Err(code) => code,
        },
        Command::Queue { config, command } => match load_or_exit(&config) {
            Err(code) => code,
            Ok(cfg) => match command {
                QueueCommand::List { dead, json, limit } => {
                    tiketo_gate::cli::queue_list(&cfg, dead, json, limit)
                }
                QueueCommand::Retry { id, .. } => {
                    tiketo_gate::cli::queue_retry(&cfg, id.as_deref())
                }
                QueueCommand::Drop { id, yes } => tiketo_gate::cli::queue_drop(&cfg, &id, yes),
            },
        },
        Command::HidDecode { file, layout, full } => {
            let layouts = match layout.as_deref() {
                None => vec![tiketo_gate::hid::Layout::Us, tiketo_gate::hid::Layout::De],
                Some(l) => {
                    match tiketo_gate::hid::Layout::parse(l) {
                        Some(l) => vec![l],
                        None => {
                            eprintln!("tiketo-gate hid-decode: --layout must be one of us, de (got \"{l}\")");
                            return ExitCode::from(2);
                        }
                    }
                }
            };
            tiketo_gate::cli::hid_decode(&file, &layouts, full)
        }
        Command::Doctor {
            config,
            json,
            scan,
            outputs,
            scan_wait,
        } => tiketo_gate::doctor::run(
            &config,
            tiketo_gate::doctor::Options {
                json,
                scan,
                outputs,
                scan_wait: std::time::Duration::from_secs(scan_wait),
            },
        ),
        Command::Run { config } => match config::load(&config) {
            Ok(cfg) => tiketo_gate::daemon::run(cfg),
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(2)
            }
        },
        Command::CheckConfig { config, file_only } => {
            let cfg = match config::load(&config) {
                Ok(cfg) => cfg,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(2);
                }
            };
            let mut problems = Vec::new();
            let mut hints = Vec::new();
            if !file_only {
                match tiketo_gate::enrol::load_credentials(&cfg.device.state_dir) {
                    // Enrolled: the workspace token is no longer needed.
                    Ok(Some(_)) => {}
                    Ok(None) => {
                        if let Err(e) = tiketo_gate::enrol::workspace_token(&cfg) {
                            problems.push(format!("not enrolled yet, and {e}"));
                            hints.push(format!(
                                "not enrolled yet: no device credentials in {} (at its first start the daemon \
                                 registers this device with the workspace API token, from api.token_file or \
                                 TIKETO_GATE_TOKEN, and keeps its own token there). To check only this file's \
                                 syntax and values, on a machine without the token: tiketo-gate check-config \
                                 --file-only --config {}",
                                cfg.device.state_dir.display(),
                                cfg.source.display()
                            ));
                        }
                    }
                    Err(e) => problems.push(e),
                }
                if let Some(ca) = &cfg.api.ca_file {
                    if let Err(e) = std::fs::read(ca) {
                        problems.push(format!("api.ca_file {}: cannot read: {e}", ca.display()));
                    }
                }
                // The broker's secrets and files, as the daemon reads them at start.
                if let Some(m) = &cfg.mqtt {
                    if let Some(p) = &m.password_file {
                        if let Err(e) = tiketo_gate::mqtt::link::read_password(p) {
                            problems.push(e);
                        }
                    }
                    if let Some(p) = &m.command_key_file {
                        if let Err(e) = tiketo_gate::mqtt::link::read_command_key(p) {
                            problems.push(e);
                        }
                    }
                    if let Some(v) = &m.venue {
                        if let Err(e) = tiketo_gate::venue::read_key(&v.key_file) {
                            problems.push(e);
                        }
                    }
                    for (key, f) in [("mqtt.ca_file", m.ca_file.as_ref())].into_iter().chain(
                        m.client_cert.iter().flat_map(|(c, k)| {
                            [("mqtt.cert_file", Some(c)), ("mqtt.key_file", Some(k))]
                        }),
                    ) {
                        if let Some(f) = f {
                            if let Err(e) = std::fs::read(f) {
                                problems.push(format!("{key} {}: cannot read: {e}", f.display()));
                            }
                        }
                    }
                }
            }
            let mut warnings = cfg.notes.clone();
            warnings.extend(tiketo_gate::outputs::safety_warnings(&cfg));
            if cfg.outputs.backend == config::OutputBackendKind::Gpiod && !file_only {
                let inputs = tiketo_gate::outputs::inputs::lines(&cfg.inputs);
                warnings.extend(tiketo_gate::outputs::gpiod::probe(&cfg.outputs, &inputs));
            }
            for w in &warnings {
                eprintln!("{}: warning: {w}", cfg.source.display());
            }
            if problems.is_empty() {
                println!("{}", cfg.summary());
                ExitCode::SUCCESS
            } else {
                for p in problems.iter().chain(&hints) {
                    eprintln!("{}: {p}", cfg.source.display());
                }
                ExitCode::from(2)
            }
        }
    }
}
