//! `tiketo-gate run`: start-up order, the main loop and shutdown.
//!
//! Order matters: the config is read, then every output is driven to its safe state before
//! anything else happens (a relay that clicks at boot is the classic complaint about door
//! controllers), then the panic hook that restores the safe state is installed, then the
//! token, the API client, the reader and the loop.

use std::process::ExitCode;
use std::sync::OnceLock;

use tokio::sync::{mpsc, watch};

use crate::api::Client;
use crate::config::Config;
use crate::mask::Secret;
use crate::outputs::feedback::Feedback;
use crate::reader::{self, ReaderEvent};
use crate::scan::{ScanSettings, Scanner};

/// The outputs, for the panic hook.
static SAFE_OUTPUTS: OnceLock<Feedback> = OnceLock::new();

/// Reads the workspace API token: `TIKETO_GATE_TOKEN` wins over `api.token_file`. The error
/// names the file, never the content.
pub fn load_token(cfg: &Config) -> Result<Secret, String> {
    if let Ok(t) = std::env::var("TIKETO_GATE_TOKEN") {
        let t = t.trim();
        if !t.is_empty() {
            return Ok(Secret::new(t));
        }
    }
    let path = &cfg.api.token_file;
    let text = std::fs::read_to_string(path).map_err(|e| {
        format!(
            "api.token_file {}: cannot read the API token: {e}",
            path.display()
        )
    })?;
    let t = text.trim();
    if t.is_empty() {
        return Err(format!(
            "api.token_file {}: the file is empty",
            path.display()
        ));
    }
    if t.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(format!(
            "api.token_file {}: the token must be one line without spaces",
            path.display()
        ));
    }
    Ok(Secret::new(t))
}

pub fn run(cfg: Config) -> ExitCode {
    // 1. Outputs to the safe state, before anything else.
    let backend = match crate::outputs::open_backend(&cfg.outputs) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("tiketo-gate: cannot open the outputs: {e}");
            return ExitCode::from(1);
        }
    };
    let feedback = Feedback::new(backend, &cfg.outputs);
    let _ = SAFE_OUTPUTS.set(feedback.clone());
    install_panic_hook();

    crate::logging::init();
    tracing::info!(version = env!("CARGO_PKG_VERSION"), config = %cfg.source.display(), "starting; outputs in safe state");

    let token = match load_token(&cfg) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::from(1);
        }
    };
    let client = match Client::new(cfg.api.url.clone(), &token, cfg.api.ca_file.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::from(1);
        }
    };
    drop(token);

    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let code = rt.block_on(main_loop(cfg, client, feedback.clone()));
    feedback.safe_state();
    code
}

async fn main_loop(cfg: Config, client: Client, feedback: Feedback) -> ExitCode {
    let (stop_tx, mut stop_rx) = watch::channel(false);
    tokio::spawn(watch_signals(feedback.clone(), stop_tx));
    tokio::spawn({
        let feedback = feedback.clone();
        async move { feedback.run_timers().await }
    });
    tokio::spawn(keep_connection_warm(client.clone()));

    let (tx, mut rx) = mpsc::channel::<ReaderEvent>(64);
    if let Err(e) = reader::spawn(&cfg.reader, tx) {
        tracing::error!("cannot start the reader: {e}");
        return ExitCode::from(1);
    }
    let settings = ScanSettings {
        device: cfg.device.name.clone(),
        rules: cfg.rules.clone(),
        policy: cfg.offline.policy,
        budget: cfg.api.timeout,
        debounce: cfg.reader.debounce,
    };
    let mut scanner = Scanner::new(client, settings, feedback.clone());
    feedback.set_status(true);
    tracing::info!(device = %cfg.device.name, api = %cfg.api.url, policy = cfg.offline.policy.as_str(), "ready");

    loop {
        tokio::select! {
            biased;
            _ = stop_rx.changed() => {
                tracing::info!("stopped by signal; outputs in safe state");
                return ExitCode::SUCCESS;
            }
            ev = rx.recv() => match ev {
                Some(ReaderEvent::Eof) | None => {
                    tracing::info!("end of input; finishing the pulses that are running");
                    feedback.wait_idle().await;
                    return ExitCode::SUCCESS;
                }
                Some(ev) => {
                    scanner.handle(ev).await;
                }
            },
        }
    }
}

/// SIGTERM and SIGINT: outputs off first, then the loop is told to stop.
async fn watch_signals(feedback: Feedback, stop: watch::Sender<bool>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    feedback.safe_state();
    let _ = stop.send(true);
}

/// Opens the API connection at start and keeps it open while the door is quiet, so that a
/// scan never pays a TCP or TLS handshake.
async fn keep_connection_warm(client: Client) {
    const EVERY: std::time::Duration = std::time::Duration::from_secs(45);
    let mut failing = false;
    loop {
        match client.warmup().await {
            Ok(()) if failing => {
                tracing::info!("API reachable again");
                failing = false;
            }
            Ok(()) => {}
            Err(e) if !failing => {
                tracing::warn!("API not reachable: {e}");
                failing = true;
            }
            Err(e) => tracing::debug!("API still not reachable: {e}"),
        }
        tokio::time::sleep(EVERY).await;
    }
}

fn install_panic_hook() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if let Some(f) = SAFE_OUTPUTS.get() {
            f.safe_state_from_panic();
        }
        previous(info);
        // A half-dead daemon must not keep the door: systemd restarts a clean one.
        std::process::exit(101);
    }));
}
