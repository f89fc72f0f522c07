//! `tiketo-gate run`: start-up order, the main loop and shutdown.
//!
//! Order matters: the config is read, then every output is driven to its safe state before
//! anything else happens (a relay that clicks at boot is the classic complaint about door
//! controllers), then the panic hook that restores the safe state is installed, then the
//! token, the API client, the reader and the loop.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicI64};
use std::sync::{Arc, OnceLock};

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
    // Off, then handed back: the lines rest at their off level while the daemon is gone.
    feedback.release();
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
    let budget = cfg.api.timeout;
    // The API client, once there is a device token: the lanes take it from here. With stored
    // credentials it is there before the first code can arrive.
    let (client_tx, client_rx) = watch::channel::<Option<Client>>(None);
    let auth = match auth {
        Auth::Device(c) => {
            tracing::info!(device = %c.device_name, workspace = c.workspace_name.as_deref().unwrap_or("?"), "using the stored device credentials");
            if let Err(code) = go_online(&cfg, c, &shared, &feedback, &client_tx) {
                return code;
            }
            None
        }
        Auth::Enrol(workspace) => Some(workspace),
    };
    // While the first enrolment attempt is on its way, a scan waits for it (within budget).
    let first_attempt = Arc::new(AtomicBool::new(auth.is_some()));
    // Each reader is its own lane from the start: its thread feeds its own channel, and scans
    // from different readers are decided concurrently, each in order within its lane.
    let (ended_tx, mut ended_rx) = mpsc::channel::<usize>(cfg.readers.len().max(1));
    let mut busy = Vec::new();
    for (i, r) in cfg.readers.iter().enumerate() {
        let (tx, rx) = mpsc::channel::<ReaderEvent>(64);
        if let Err(e) = reader::spawn(r, reader::Tx::new(tx)) {
            tracing::error!(reader = %r.name, "cannot start the reader: {e}");
            return ExitCode::from(1);
        }
        let lane = Lane {
            settings: ScanSettings {
                device: cfg.device.name.clone(),
                reader: r.name.clone(),
                direction: r.direction,
                reader_index: i,
                rules: cfg.rules.clone(),
                offline: cfg.offline.rules(),
                cache_ttl: cfg.offline.cache_ttl,
                budget,
                debounce: r.debounce,
                max_pending: cfg.store.max_pending,
            },
            feedback: feedback.lane(&r.outputs),
        };
        let since = Arc::new(AtomicI64::new(0));
        busy.push(since.clone());
        let ctx = LaneCtx {
            shared: shared.clone(),
            clients: client_rx.clone(),
            first_attempt: first_attempt.clone(),
            busy: since,
        };
        let ended = ended_tx.clone();
        tokio::spawn(async move {
            run_lane(rx, lane, ctx).await;
            let _ = ended.send(i).await;
        });
    }
    drop(ended_tx);
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
    // Store, outputs and readers are up: tell systemd.
    crate::service::notify_ready();
    tracing::info!(
        device = %cfg.device.name,
        api = %cfg.api.url,
        policy = cfg.offline.policy.as_str(),
        store = %store_path.display(),
        readers = cfg.readers.len(),
        "ready"
    );

    // Not enrolled: enrolment runs in the background (every scan meanwhile is rejected
    // `not_enrolled` by its lane).
    let (creds_tx, mut creds_rx) = tokio::sync::oneshot::channel::<Credentials>();
    let mut enrolling = None;
    if let Some(workspace) = auth {
        feedback.set_status_blink(Duration::from_millis(250));
        crate::service::notify_status("not enrolled: registering this device with Tiketo");
        tracing::info!(device = %cfg.device.name, "not enrolled: registering this device");
        enrolling = Some(tokio::spawn(enrol(
            cfg.clone(),
            workspace,
            shared.clone(),
            first_attempt.clone(),
            creds_tx,
        )));
    }
    let mut waiting_for_creds = enrolling.is_some();
    // A scan may take its budget plus time for the store; a lane busy longer is wedged.
    let healthy_ms = (budget + Duration::from_secs(5)).as_millis() as i64;
    let mut ping = watchdog.interval();

    loop {
        tokio::select! {
            biased;
            _ = stop_rx.changed() => {
                if let Some(e) = &enrolling {
                    e.abort();
                }
                tracing::info!("stopped by signal; outputs in safe state");
                crate::service::notify_stopping();
                return ExitCode::SUCCESS;
            }
            // The watchdog is fed while every lane is idle or within a healthy scan's time: a
            // wedged scan stops the pings and systemd restarts the daemon; a slow HTTP call
            // cannot (each scan has its budget).
            _ = ping.tick() => ping_if_healthy(&watchdog, &busy, healthy_ms),
            creds = &mut creds_rx, if waiting_for_creds => {
                waiting_for_creds = false;
                let Ok(creds) = creds else {
                    tracing::error!("enrolment stopped without credentials");
                    return ExitCode::from(1);
                };
                log_enrolled(&creds);
                if let Err(code) = go_online(&cfg, creds, &shared, &feedback, &client_tx) {
                    return code;
                }
            }
            // A lane ends only at the end of its input (stdin): the daemon is done.
            _ = ended_rx.recv() => {
                tracing::info!("end of input; finishing the pulses that are running");
                if let Some(e) = &enrolling {
                    e.abort();
                }
                feedback.wait_idle().await;
                return ExitCode::SUCCESS;
            }
        }
    }
}

/// The device has its token: the API clients, the link keeper, the replay, and the client
/// handed to the lanes.
fn go_online(
    cfg: &Config,
    creds: Credentials,
    shared: &Shared,
    feedback: &Feedback,
    client_tx: &watch::Sender<Option<Client>>,
) -> Result<(), ExitCode> {
    shared.enrolled.store(true, Ordering::Relaxed);
    let (client, replay_client) = clients(cfg, &creds.token).map_err(|e| {
        tracing::error!("{e}");
        ExitCode::from(1)
    })?;
    drop(creds);
    let link = shared.link.clone();
    tokio::spawn(keep_link(client.clone(), link.clone()));
    tokio::spawn(follow_link_with_status_led(link, feedback.clone()));
    tokio::spawn(crate::replay::run(replay_client, shared.clone()));
    tokio::spawn(wake_replay_on_sigusr1(shared.clone()));
    client_tx.send_replace(Some(client));
    Ok(())
}

/// What a lane shares with the rest of the daemon.
struct LaneCtx {
    shared: Shared,
    /// The API client, once the device has its token.
    clients: watch::Receiver<Option<Client>>,
    first_attempt: Arc<AtomicBool>,
    /// Since when (monotonic ms + 1) the lane is busy with an event; 0: idle.
    busy: Arc<AtomicI64>,
}

/// One reader's events, in order: scanned through the API once the device is enrolled,
/// rejected `not_enrolled` before (a code read while the first enrolment attempt is on its
/// way waits for it within the scan's budget). Returns at the end of the reader's input.
async fn run_lane(mut rx: mpsc::Receiver<ReaderEvent>, lane: Lane, mut ctx: LaneCtx) {
    let mut scanner: Option<Scanner> = None;
    let mut debounce = crate::debounce::Debouncer::new(lane.settings.debounce);
    let make = |client: Client| {
        Scanner::new(
            client,
            lane.settings.clone(),
            lane.feedback.clone(),
            ctx.shared.clone(),
        )
    };
    while let Some(ev) = rx.recv().await {
        if matches!(ev, ReaderEvent::Eof) {
            return;
        }
        // Monotonic (+1 so that 0 stays "idle"): a clock step at boot is no wedge.
        ctx.busy
            .store(crate::clock::mono_ms() as i64 + 1, Ordering::Relaxed);
        if scanner.is_none() {
            let client = ctx.clients.borrow().clone();
            scanner = client.map(make);
        }
        match (&mut scanner, ev) {
            (Some(s), ev) => {
                s.handle(ev).await;
            }
            (None, ReaderEvent::Code { code, last_byte }) => {
                if debounce.is_new_scan(&code, last_byte) {
                    // The first attempt may be about to succeed (a device starting up with a
                    // guest already at the door): wait for it within the scan's budget.
                    let deadline = tokio::time::Instant::from_std(last_byte) + lane.settings.budget;
                    let waited = if ctx.first_attempt.load(Ordering::Acquire) {
                        tokio::time::timeout_at(deadline, ctx.clients.wait_for(Option::is_some))
                            .await
                            .ok()
                            .and_then(|r| r.ok().and_then(|c| c.clone()))
                    } else {
                        None
                    };
                    match waited {
                        Some(client) => {
                            let s = scanner.insert(make(client));
                            s.handle(ReaderEvent::Code { code, last_byte }).await;
                        }
                        None => {
                            crate::scan::reject_locally(
                                &ctx.shared,
                                &lane.feedback,
                                &lane.settings,
                                code,
                                last_byte,
                                crate::decision::Reason::NotEnrolled,
                            )
                            .await;
                        }
                    }
                }
            }
            (None, ReaderEvent::Malformed { .. }) => lane.feedback.reject(),
            (None, ev) => crate::scan::reader_link_event(
                &ctx.shared,
                &lane.settings.reader,
                lane.settings.reader_index,
                &ev,
            ),
        }
        ctx.busy.store(0, Ordering::Relaxed);
    }
}

fn ping_if_healthy(watchdog: &crate::service::Watchdog, busy: &[Arc<AtomicI64>], healthy_ms: i64) {
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

/// Registers the device with backoff (1 s doubling to 5 min) until it has its token, saves
/// the credentials, and hands them over. The status LED blinks fast meanwhile.
async fn enrol(
    cfg: Config,
    workspace: Secret,
    shared: Shared,
    first_attempt: Arc<AtomicBool>,
    done: tokio::sync::oneshot::Sender<Credentials>,
) {
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
                        let _ = done.send(creds);
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
        first_attempt.store(false, Ordering::Release);
        tokio::time::sleep(delays.next().unwrap_or(Duration::from_secs(300))).await;
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
