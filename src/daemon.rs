//! `tiketo-gate run`: start-up order, the main loop and shutdown.
//!
//! Order matters: the config is read, then every output is driven to its safe state before
//! anything else happens (a relay that clicks at boot is the classic complaint about door
//! controllers), then the panic hook that restores the safe state is installed, then the
//! token, the API client, the reader and the loop.

use std::process::ExitCode;
use std::sync::OnceLock;

use tokio::sync::{mpsc, watch};

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::api::Client;
use crate::config::Config;
use crate::enrol::Credentials;
use crate::link::{Link, Mode};
use crate::mask::Secret;
use crate::outputs::feedback::{Feedback, LaneFeedback};
use crate::reader::{self, ReaderEvent};
use crate::scan::{ScanSettings, Scanner, Shared};

/// A reader's events with its index.
type Tagged = (usize, ReaderEvent);

/// One reader's pipeline: its settings and its outputs.
#[derive(Clone)]
struct Lane {
    settings: ScanSettings,
    feedback: LaneFeedback,
}
use crate::store::{now_ms, Store, StoreHandle};

/// Consecutive failures to reach the API after which the daemon is offline.
const OFFLINE_AFTER_FAILURES: u32 = 2;

/// The daemon's runtime: one thread (a door does one thing at a time; the store and the
/// reader have threads of their own).
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// What the daemon authenticates with.
enum Auth {
    /// Enrolled: the device token.
    Device(Credentials),
    /// Not enrolled: the workspace token, to call `registerDevice` with.
    Enrol(Secret),
}

/// The live client and the replay client (each keeps its own connection).
fn clients(cfg: &Config, token: &Secret) -> Result<(Client, Client), String> {
    let live = Client::new(cfg.api.url.clone(), token, cfg.api.ca_file.as_deref())?;
    let replay = Client::new(cfg.api.url.clone(), token, cfg.api.ca_file.as_deref())?;
    Ok((live, replay))
}

/// The outputs, for the panic hook.
static SAFE_OUTPUTS: OnceLock<Feedback> = OnceLock::new();

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

    // The device's own token once enrolled; the workspace token only to enrol.
    let auth = match crate::enrol::load_credentials(&cfg.device.state_dir) {
        Ok(Some(creds)) => Auth::Device(creds),
        other => {
            if let Err(e) = other {
                let aside = crate::enrol::move_aside(&cfg.device.state_dir);
                tracing::error!(
                    "{e}; moved aside to {}, enrolling again",
                    aside
                        .map(|p| p.display().to_string())
                        .unwrap_or_else(|| "?".into())
                );
            }
            match crate::enrol::workspace_token(&cfg) {
                Ok(t) => Auth::Enrol(t),
                Err(e) => {
                    tracing::error!("not enrolled yet, and {e}");
                    return ExitCode::from(1);
                }
            }
        }
    };
    crate::api::install_crypto_provider();

    let rt = match runtime() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let code = rt.block_on(main_loop(cfg, auth, feedback.clone()));
    feedback.safe_state();
    code
}

async fn main_loop(cfg: Config, auth: Auth, feedback: Feedback) -> ExitCode {
    let (stop_tx, mut stop_rx) = watch::channel(false);
    tokio::spawn(watch_signals(feedback.clone(), stop_tx));
    tokio::spawn({
        let feedback = feedback.clone();
        async move { feedback.run_timers().await }
    });
    let watchdog = crate::service::Watchdog::from_env();

    let store_path = Store::path_in(&cfg.device.state_dir);
    let store = {
        let p = store_path.clone();
        tokio::task::spawn_blocking(move || StoreHandle::open(&p))
            .await
            .expect("store open task")
    };
    let link = Link::new(OFFLINE_AFTER_FAILURES);
    let shared = Shared::new(store, link.clone());
    if let Ok(c) = shared.store.run(|s| s.counts()).await {
        shared.pending.store(c.pending, Ordering::Relaxed);
        if c.pending > 0 {
            tracing::info!(
                pending = c.pending,
                dead = c.dead,
                "unsent scan events from before are queued for replay"
            );
        }
    }

    if let Some(addr) = cfg.http.listen {
        match crate::http::bind(addr).await {
            Ok(listener) => {
                tracing::info!(%addr, admin = cfg.http.admin_token.is_some(), "status page, /metrics and /healthz on http://{addr}/");
                let state = std::sync::Arc::new(crate::http::HttpState {
                    shared: shared.clone(),
                    link: link.clone(),
                    feedback: feedback.clone(),
                    device: cfg.device.name.clone(),
                    admin_token: cfg.http.admin_token.clone(),
                });
                tokio::spawn(crate::http::serve(listener, state));
            }
            Err(e) => {
                tracing::error!("http.listen {addr}: cannot listen: {e}");
                return ExitCode::from(1);
            }
        }
    }
    tokio::spawn(write_status(shared.clone(), cfg.store.max_pending));
    tokio::spawn(prune(shared.clone(), cfg.store.retention));

    shared.set_readers(&cfg.readers);
    let lanes: Vec<Lane> = cfg
        .readers
        .iter()
        .enumerate()
        .map(|(i, r)| Lane {
            settings: ScanSettings {
                device: cfg.device.name.clone(),
                reader: r.name.clone(),
                direction: r.direction,
                reader_index: i,
                rules: cfg.rules.clone(),
                offline: cfg.offline.rules(),
                cache_ttl: cfg.offline.cache_ttl,
                budget: cfg.api.timeout,
                debounce: r.debounce,
                max_pending: cfg.store.max_pending,
            },
            feedback: feedback.lane(&r.outputs),
        })
        .collect();
    let (tx, mut rx) = mpsc::channel::<Tagged>(64);
    for (i, r) in cfg.readers.iter().enumerate() {
        if let Err(e) = reader::spawn(r, reader::Tx::new(i, tx.clone())) {
            tracing::error!(reader = %r.name, "cannot start the reader: {e}");
            return ExitCode::from(1);
        }
    }
    drop(tx);
    let _inputs = match crate::outputs::inputs::spawn(&cfg.outputs, &cfg.inputs) {
        Ok(Some((handle, events))) => {
            tokio::spawn(crate::door::run(
                events,
                cfg.inputs.clone(),
                feedback.clone(),
                shared.clone(),
            ));
            Some(handle)
        }
        Ok(None) => None,
        Err(e) => {
            tracing::error!("cannot read the inputs: {e}");
            return ExitCode::from(1);
        }
    };
    // Store, outputs and reader are up: tell systemd.
    crate::service::notify_ready();
    tracing::info!(
        device = %cfg.device.name,
        api = %cfg.api.url,
        policy = cfg.offline.policy.as_str(),
        store = %store_path.display(),
        readers = cfg.readers.len(),
        "ready"
    );

    // A code read while the first enrolment attempt was still on its way.
    let mut held_code: Option<Tagged> = None;
    let creds = match auth {
        Auth::Device(c) => {
            tracing::info!(device = %c.device_name, workspace = c.workspace_name.as_deref().unwrap_or("?"), "using the stored device credentials");
            c
        }
        Auth::Enrol(workspace) => {
            match enrol_phase(
                &cfg,
                workspace,
                &shared,
                &feedback,
                &lanes,
                &mut rx,
                &mut stop_rx,
                &watchdog,
            )
            .await
            {
                Some((c, held)) => {
                    held_code = held;
                    c
                }
                None => return ExitCode::SUCCESS,
            }
        }
    };
    shared.enrolled.store(true, Ordering::Relaxed);
    let (client, replay_client) = match clients(&cfg, &creds.token) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::from(1);
        }
    };
    drop(creds);
    tokio::spawn(keep_link(client.clone(), link.clone()));
    tokio::spawn(follow_link_with_status_led(link.clone(), feedback.clone()));
    tokio::spawn(crate::replay::run(replay_client, shared.clone()));
    tokio::spawn(wake_replay_on_sigusr1(shared.clone()));
    let budget = cfg.api.timeout;
    // Each reader is its own lane: scans from different readers are decided concurrently,
    // each in order within its lane.
    let mut lane_tx = Vec::new();
    let mut lane_tasks = Vec::new();
    let mut busy = Vec::new();
    for lane in &lanes {
        let (tx, mut lrx) = mpsc::channel::<ReaderEvent>(64);
        let since = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(0));
        let mut scanner = Scanner::new(
            client.clone(),
            lane.settings.clone(),
            lane.feedback.clone(),
            shared.clone(),
        );
        let lane_busy = since.clone();
        lane_tasks.push(tokio::spawn(async move {
            while let Some(ev) = lrx.recv().await {
                // Monotonic (+1 so that 0 stays "idle"): a clock step at boot is no wedge.
                lane_busy.store(crate::clock::mono_ms() as i64 + 1, Ordering::Relaxed);
                scanner.handle(ev).await;
                lane_busy.store(0, Ordering::Relaxed);
            }
        }));
        lane_tx.push(tx);
        busy.push(since);
    }
    if let Some((i, ev)) = held_code.take() {
        let _ = lane_tx[i].send(ev).await;
    }
    // A scan may take its budget plus time for the store; a lane busy longer is wedged.
    let healthy_ms = (budget + Duration::from_secs(5)).as_millis() as i64;
    let mut ping = watchdog.interval();

    loop {
        tokio::select! {
            biased;
            _ = stop_rx.changed() => {
                tracing::info!("stopped by signal; outputs in safe state");
                crate::service::notify_stopping();
                return ExitCode::SUCCESS;
            }
            // The watchdog is fed while every lane is idle or within a healthy scan's time: a
            // wedged scan stops the pings and systemd restarts the daemon; a slow HTTP call
            // cannot (each scan has its budget).
            _ = ping.tick() => ping_if_healthy(&watchdog, &busy, healthy_ms),
            ev = rx.recv() => match ev {
                Some((_, ReaderEvent::Eof)) | None => {
                    tracing::info!("end of input; finishing the scans and pulses that are running");
                    drop(lane_tx);
                    for t in lane_tasks {
                        let _ = t.await;
                    }
                    feedback.wait_idle().await;
                    return ExitCode::SUCCESS;
                }
                Some((i, ev)) => {
                    // A lane with a backlog (a flood of codes while the API is slow) holds
                    // this hand-over up; meanwhile signals and the watchdog still count.
                    let send = lane_tx[i].send(ev);
                    tokio::pin!(send);
                    loop {
                        tokio::select! {
                            biased;
                            _ = stop_rx.changed() => {
                                tracing::info!("stopped by signal; outputs in safe state");
                                crate::service::notify_stopping();
                                return ExitCode::SUCCESS;
                            }
                            sent = &mut send => {
                                if sent.is_err() {
                                    tracing::error!(reader = %lanes[i].settings.reader, "the reader's lane stopped");
                                    return ExitCode::from(1);
                                }
                                break;
                            }
                            _ = ping.tick() => ping_if_healthy(&watchdog, &busy, healthy_ms),
                        }
                    }
                }
            },
        }
    }
}

fn ping_if_healthy(
    watchdog: &crate::service::Watchdog,
    busy: &[std::sync::Arc<std::sync::atomic::AtomicI64>],
    healthy_ms: i64,
) {
    let now = crate::clock::mono_ms() as i64 + 1;
    let since: Vec<i64> = busy.iter().map(|b| b.load(Ordering::Relaxed)).collect();
    if lanes_healthy(&since, now, healthy_ms) {
        watchdog.ping();
    }
}

/// Whether every lane is idle (0) or busy (since a monotonic ms) for no longer than a
/// healthy scan can take: the watchdog is fed only then.
fn lanes_healthy(busy_since: &[i64], now: i64, healthy_ms: i64) -> bool {
    busy_since.iter().all(|&t| t == 0 || now - t <= healthy_ms)
}

/// Not enrolled yet: register with backoff (1 s doubling to 5 min) while every scan is
/// rejected `not_enrolled`; the status LED blinks fast. Returns the credentials, or `None`
/// when the daemon was stopped first.
#[allow(clippy::too_many_arguments)] // the loop's whole context; a struct would only rename it
async fn enrol_phase(
    cfg: &Config,
    workspace: Secret,
    shared: &Shared,
    feedback: &Feedback,
    lanes: &[Lane],
    rx: &mut mpsc::Receiver<Tagged>,
    stop_rx: &mut watch::Receiver<bool>,
    watchdog: &crate::service::Watchdog,
) -> Option<(Credentials, Option<Tagged>)> {
    feedback.set_status_blink(Duration::from_millis(250));
    crate::service::notify_status("not enrolled: registering this device with Tiketo");
    tracing::info!(device = %cfg.device.name, "not enrolled: registering this device");
    let (done_tx, mut done_rx) = tokio::sync::oneshot::channel();
    let first_attempt = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let enrol = tokio::spawn({
        let cfg = cfg.clone();
        let shared = shared.clone();
        let first_attempt = first_attempt.clone();
        async move {
            let mut delays = crate::replay::replay_backoff();
            loop {
                match crate::enrol::register(&cfg, &workspace, &cfg.device.name).await {
                    Ok(creds) => {
                        let state = cfg.device.state_dir.clone();
                        let c2 = creds.clone();
                        match tokio::task::spawn_blocking(move || {
                            crate::enrol::save_credentials(&state, &c2)
                        })
                        .await
                        {
                            Ok(Ok(())) => {
                                shared.note_auth_error(None);
                                let _ = done_tx.send(creds);
                                return;
                            }
                            Ok(Err(e)) => tracing::error!("{e}"),
                            Err(e) => tracing::error!("{e}"),
                        }
                    }
                    Err(e) => {
                        if e.class == crate::api::classify::ErrorClass::Auth {
                            shared.note_auth_error(Some(&e));
                        }
                        tracing::warn!("enrolment failed: {e}; trying again");
                    }
                }
                first_attempt.store(false, std::sync::atomic::Ordering::Release);
                tokio::time::sleep(delays.next().unwrap_or(Duration::from_secs(300))).await;
            }
        }
    });
    let mut ping = watchdog.interval();
    let mut debounce: Vec<crate::debounce::Debouncer> = lanes
        .iter()
        .map(|l| crate::debounce::Debouncer::new(l.settings.debounce))
        .collect();
    loop {
        tokio::select! {
            biased;
            _ = stop_rx.changed() => {
                enrol.abort();
                tracing::info!("stopped by signal; outputs in safe state");
                crate::service::notify_stopping();
                return None;
            }
            _ = ping.tick() => watchdog.ping(),
            creds = &mut done_rx => {
                let creds = creds.ok()?;
                log_enrolled(&creds);
                return Some((creds, None));
            }
            ev = rx.recv() => match ev {
                Some((i, ReaderEvent::Code { code, last_byte })) => {
                    if !debounce[i].is_new_scan(&code, last_byte) {
                        continue;
                    }
                    // The first attempt may be about to succeed (a device starting up with a
                    // guest already at the door): wait for it within the scan's budget.
                    if first_attempt.load(std::sync::atomic::Ordering::Acquire) {
                        let deadline = tokio::time::Instant::from_std(last_byte) + cfg.api.timeout;
                        if let Ok(Ok(creds)) = tokio::time::timeout_at(deadline, &mut done_rx).await {
                            log_enrolled(&creds);
                            return Some((creds, Some((i, ReaderEvent::Code { code, last_byte }))));
                        }
                    }
                    let lane = &lanes[i];
                    crate::scan::reject_locally(shared, &lane.feedback, &lane.settings, code, last_byte, crate::decision::Reason::NotEnrolled).await;
                }
                Some((_, ReaderEvent::Eof)) | None => {
                    enrol.abort();
                    feedback.wait_idle().await;
                    return None;
                }
                Some((i, ReaderEvent::Malformed { .. })) => lanes[i].feedback.reject(),
                Some((i, ev)) => crate::scan::reader_link_event(shared, &lanes[i].settings.reader, i, &ev),
            },
        }
    }
}

fn log_enrolled(creds: &Credentials) {
    tracing::info!(
        device = %creds.device_name,
        workspace = creds.workspace_name.as_deref().unwrap_or("?"),
        "enrolled: this device now uses its own token"
    );
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

/// Keeps the link's state true and the API connection warm. Online: a tiny request every 45 s
/// while the door is quiet, so a scan never pays a TCP or TLS handshake. Offline: probes the
/// API with backoff (1 s doubling to 30 s) until it answers.
async fn keep_link(client: Client, link: Link) {
    const EVERY: Duration = Duration::from_secs(45);
    // A check that hangs (an API that accepts and never answers) must not stall the probe.
    let check = |client: Client| async move {
        match tokio::time::timeout(Duration::from_secs(5), client.warmup()).await {
            Ok(r) => r,
            Err(_) => Err(crate::api::ApiError {
                class: crate::api::classify::ErrorClass::Retryable { retry_after: None },
                status: None,
                detail: "no answer within 5 s".into(),
            }),
        }
    };
    let mut changes = link.subscribe();
    loop {
        match link.mode() {
            Mode::Online => {
                match check(client.clone()).await {
                    Ok(()) => link.success(),
                    Err(e)
                        if e.class.is_unavailable()
                            && e.class != crate::api::classify::ErrorClass::Auth =>
                    {
                        link.failure(&e.to_string())
                    }
                    Err(e) => tracing::warn!("API check: {e}"),
                }
                if link.mode() == Mode::Online {
                    tokio::select! {
                        _ = tokio::time::sleep(EVERY) => {}
                        _ = changes.changed() => {}
                    }
                }
            }
            Mode::Offline => {
                let mut delays = backon::BackoffBuilder::build(
                    backon::ExponentialBuilder::default()
                        .with_min_delay(Duration::from_millis(500))
                        .with_max_delay(Duration::from_secs(5))
                        .with_jitter()
                        .without_max_times(),
                );
                while link.mode() == Mode::Offline {
                    tokio::time::sleep(delays.next().unwrap_or(Duration::from_secs(5))).await;
                    match check(client.clone()).await {
                        Ok(()) => link.success(),
                        Err(e) => tracing::debug!("API still unreachable: {e}"),
                    }
                }
            }
        }
    }
}

/// `tiketo-gate queue retry` sends SIGUSR1: look at the queue now.
async fn wake_replay_on_sigusr1(shared: Shared) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut usr1) = signal(SignalKind::user_defined1()) else {
        return;
    };
    while usr1.recv().await.is_some() {
        tracing::info!("queue changed by hand: replaying");
        shared.replay_wake.notify_one();
    }
}

/// Status LED: steady on while online, slow blink while offline (and the systemd STATUS).
async fn follow_link_with_status_led(link: Link, feedback: Feedback) {
    let mut rx = link.subscribe();
    loop {
        match *rx.borrow_and_update() {
            Mode::Online => {
                feedback.set_status(true);
                crate::service::notify_status("online");
            }
            Mode::Offline => {
                feedback.set_status_blink(Duration::from_secs(1));
                crate::service::notify_status(
                    "offline: deciding by the offline policy, probing the API",
                );
            }
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// Writes what `tiketo-gate status` shows into the store's `meta` table, when it changes.
async fn write_status(shared: Shared, max_pending: u64) {
    let mut last: Vec<(String, String)> = Vec::new();
    let mut changes = shared.link.subscribe();
    loop {
        let now: Vec<(String, String)> = vec![
            ("mode".into(), shared.link.mode().as_str().into()),
            ("mode_since_ms".into(), shared.link.since_ms().to_string()),
            (
                "last_sync_ms".into(),
                shared.last_sync_ms.load(Ordering::Relaxed).to_string(),
            ),
            (
                "auth_error".into(),
                shared
                    .auth_error
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone(),
            ),
            (
                "queue_full".into(),
                (shared.pending.load(Ordering::Relaxed) >= max_pending as i64).to_string(),
            ),
            (
                "clock_synced".into(),
                crate::clock::clock_synced().to_string(),
            ),
            ("daemon_pid".into(), std::process::id().to_string()),
            (
                "readers".into(),
                serde_json::to_string(&*shared.readers.lock().unwrap_or_else(|p| p.into_inner()))
                    .unwrap_or_default(),
            ),
            (
                "door".into(),
                serde_json::to_string(&*shared.door.lock().unwrap_or_else(|p| p.into_inner()))
                    .unwrap_or_default(),
            ),
        ];
        if now != last {
            let changed: Vec<(String, String)> = now
                .iter()
                .filter(|kv| !last.contains(kv))
                .cloned()
                .collect();
            let write = shared
                .store
                .run(move |s| {
                    for (k, v) in &changed {
                        s.set_meta(k, v)?;
                    }
                    s.set_meta("status_at_ms", &now_ms().to_string())
                })
                .await;
            if write.is_ok() {
                last = now;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(10)) => {}
            _ = changes.changed() => {}
            _ = shared.status_wake.notified() => {}
        }
    }
}

/// Prunes sent and rejected rows past the retention, at start and hourly; checkpoints the
/// WAL every 30 s (the scan path never does).
async fn prune(shared: Shared, retention: Duration) {
    tokio::spawn({
        let shared = shared.clone();
        async move {
            loop {
                tokio::time::sleep(Duration::from_secs(30)).await;
                if let Err(e) = shared.store.run(|s| s.checkpoint()).await {
                    tracing::warn!("checkpoint: {e}");
                }
            }
        }
    });
    loop {
        match shared
            .store
            .run(move |s| s.prune(retention, now_ms()))
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::info!(rows = n, "pruned old scans"),
            Err(e) => tracing::warn!("prune: {e}"),
        }
        tokio::time::sleep(Duration::from_secs(3600)).await;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_wedged_lane_stops_the_watchdog_however_busy_the_others_are() {
        let healthy = 5_800;
        assert!(lanes_healthy(&[], 100, healthy));
        assert!(lanes_healthy(&[0, 0], 100_000, healthy), "idle lanes");
        assert!(
            lanes_healthy(&[95_000, 0], 100_000, healthy),
            "a scan within its budget"
        );
        assert!(lanes_healthy(&[94_200, 99_999], 100_000, healthy));
        assert!(
            !lanes_healthy(&[0, 94_000], 100_000, healthy),
            "the exit lane stuck past budget + 5 s"
        );
    }
}
