//! `tiketo-gate run`: start-up order, the main loop and shutdown.
//!
//! Start-up: the config is read, then every output is driven to its safe state before
//! anything else happens (a relay that clicks at boot is the classic complaint about door
//! controllers), then the panic hook that restores the safe state is installed, then the
//! token, the store, the API client, the readers, READY, and the loop.
//!
//! On SIGTERM or SIGINT, in this order:
//! 1. the outputs go to their safe state and stay there (the feedback, their one owner, is
//!    halted: nothing switches on again, whatever a task still does);
//! 2. every long-lived task is told to stop ([`crate::shutdown`]): a lane drops a decision
//!    in progress (a slow API does not hold the stop up) but finishes a commit it began (its
//!    row is stored; its feedback is a no-op), the others stop at their next await; the
//!    daemon waits up to [`STOP_WITHIN`] for them;
//! 3. systemd hears STOPPING, the outputs are handed back (gpiod: inputs at their off
//!    pull, so the lines rest off while no daemon runs), and the process exits 0.
//!
//! A panic takes the same first step from the panic hook and exits 101 (systemd restarts).

use std::process::ExitCode;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::api::Client;
use crate::config::Config;
use crate::enrol::Credentials;
use crate::lane::{ApiSlotSender, Budget, Lane, LaneSettings};
use crate::link::{Link, Mode};
use crate::mask::Secret;
use crate::outputs::feedback::Feedback;
use crate::reader::{self, ReaderEvent};
use crate::shutdown::Tasks;
use crate::state::{Caller, Effect, Shared};
use crate::store::{Store, StoreHandle};

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
    // What check-config warns about, in the journal at each start (the unit has no
    // ExecStartPre: a config error ends `run` itself with exit status 2).
    for w in cfg
        .notes
        .iter()
        .cloned()
        .chain(crate::outputs::safety_warnings(&cfg))
    {
        tracing::warn!("{}: warning: {w}", cfg.source.display());
    }

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
    let mut tasks = Tasks::new();
    tasks.spawn("output timers", {
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
    let shared = Shared::new(store, Link::new(OFFLINE_AFTER_FAILURES));
    // The key of the codes' fingerprints (the `fp` of the scan lines), made at first start.
    match crate::fingerprint::Fingerprint::load_or_create(&cfg.device.state_dir) {
        Ok(f) => crate::fingerprint::install(f),
        Err(e) => tracing::warn!("code fingerprints are off (fp=-): {e}"),
    }
    if let Ok(c) = shared.store.run(|s| s.counts()).await {
        shared.outbox.set_pending(c.pending);
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
                let state = Arc::new(crate::http::HttpState {
                    shared: shared.clone(),
                    feedback: feedback.clone(),
                    device: cfg.device.name.clone(),
                    admin_token: cfg.http.admin_token.clone(),
                    max_pending: cfg.store.max_pending,
                });
                tasks.spawn("http", crate::http::serve(listener, state));
            }
            Err(e) => {
                tracing::error!("http.listen {addr}: cannot listen: {e}");
                return ExitCode::from(1);
            }
        }
    }
    if let Some(d) = &cfg.display {
        let addr = d.listen;
        match crate::http::bind(addr).await {
            Ok(listener) => {
                tracing::info!(%addr, language = %d.language, greeting = d.greeting.is_some(), "guest screen on http://{addr}/");
                shared.display.configure(d.clone());
                tasks.spawn(
                    "display",
                    crate::display::server::serve(listener, shared.display.clone(), shared.clone()),
                );
            }
            Err(e) => {
                tracing::error!("display.listen {addr}: cannot listen: {e}");
                return ExitCode::from(1);
            }
        }
    }
    tasks.spawn_with("status writer", |stop| {
        crate::status::write(shared.clone(), cfg.store.max_pending, stop)
    });
    tasks.spawn("prune", prune(shared.clone(), cfg.store.retention));
    tasks.spawn("checkpoint", checkpoint(shared.clone()));

    shared.board.set_readers(&cfg.readers);
    // A lockdown or release from before the stop holds again (the store has it).
    let remote = crate::mqtt::act::Door::new(&cfg.device.name, &cfg.readers, &feedback, &shared);
    match shared.store.read(|s| s.overrides()).await {
        Ok(all) => {
            for o in &all {
                tracing::warn!(reader = %o.reader, mode = o.mode.as_str(), since = %crate::clock::rfc3339_from_ms(o.since_ms), "the reader is in {} (a remote command); a normal command ends it", o.mode.as_str());
            }
            shared.board.set_overrides(all);
            remote.apply_holds();
        }
        Err(e) => tracing::error!("cannot read the lockdown or release from the store: {e}"),
    }
    // The venue's shared memory: its key read once, the store told to keep it.
    let refresher = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let venue =
        cfg.mqtt.as_ref().and_then(|m| m.venue.as_ref()).and_then(
            |v| match crate::venue::read_key(&v.key_file) {
                Ok(key) => Some(crate::mqtt::link::VenueParts {
                    key: Arc::new(key),
                    topic: v.topic.clone(),
                    ttl_ms: cfg.offline.cache_ttl.as_millis() as i64,
                    refresher: refresher.clone(),
                }),
                Err(e) => {
                    tracing::error!("the venue is off, this door decides alone: {e}");
                    None
                }
            },
        );
    if let Some(v) = &venue {
        tracing::info!(venue = %v.topic, key_id = %v.key.id(), "venue: lookups and admissions shared with the venue's doors");
        shared.store.keep_venue(crate::store::VenueCtx {
            key: v.key.clone(),
            door: cfg.device.name.clone(),
            ttl_ms: v.ttl_ms,
            max_uses: cfg.offline.max_offline_uses,
        });
    }
    let venue_on = venue.is_some();
    if let Some(m) = cfg.mqtt.clone() {
        shared.store.keep_events(m.max_pending);
        let parts = crate::mqtt::link::Parts {
            shared: shared.clone(),
            max_pending: cfg.store.max_pending,
            device: cfg.device.name.clone(),
            door: remote,
            door_sensor: cfg.inputs.door_sensor.is_some(),
            venue,
        };
        tasks.spawn_with("mqtt", |stop| crate::mqtt::link::run(m, parts, stop));
    }
    let budget = cfg.api.timeout;
    let auth = match auth {
        Auth::Device(c) => {
            tracing::info!(device = %c.device_name, workspace = c.workspace_name.as_deref().unwrap_or("?"), "using the stored device credentials");
            Ok(c)
        }
        Auth::Enrol(workspace) => Err(workspace),
    };
    // The API client, once there is a device token: the lanes take it from the slot. With
    // stored credentials it is there before the first code can arrive.
    let (slot, api_slot) = crate::lane::api_slot(auth.is_err());
    if venue_on {
        let (shared, api, per_minute, ttl) = (
            shared.clone(),
            api_slot.clone(),
            cfg.offline.refresh_per_minute,
            cfg.offline.cache_ttl,
        );
        tasks.spawn_with("venue refresh", move |stop| {
            crate::venue::refresh::run(shared, api, refresher, per_minute, ttl, stop)
        });
    }
    let workspace = match auth {
        Ok(creds) => {
            if let Err(code) = go_online(&cfg, creds, &shared, &feedback, &slot, &mut tasks) {
                return code;
            }
            None
        }
        Err(workspace) => Some(workspace),
    };
    if cfg.readers.iter().any(|r| r.hours.is_set()) && !crate::clock::clock_synced() {
        tracing::warn!(
            unsynced_clock = %cfg.hours.unsynced_clock.as_str(),
            "opening hours are set but the clock is not synced: until it is, rules.unsynced_clock decides"
        );
    }
    // Each reader is its own lane from the start.
    let (ended_tx, mut ended_rx) = mpsc::channel::<usize>(cfg.readers.len().max(1));
    let mut busy = Vec::new();
    for (i, r) in cfg.readers.iter().enumerate() {
        let (tx, rx) = mpsc::channel::<ReaderEvent>(64);
        if let Err(e) = reader::spawn(r, reader::Tx::new(tx)) {
            tracing::error!(reader = %r.name, "cannot start the reader: {e}");
            return ExitCode::from(1);
        }
        let settings = LaneSettings {
            device: cfg.device.name.clone(),
            reader: r.name.clone(),
            direction: r.direction,
            reader_index: i,
            rules: cfg.rules.clone(),
            offline: cfg.offline.rules(),
            cache_ttl: cfg.offline.cache_ttl,
            budget: Budget(budget),
            debounce: r.debounce,
            max_pending: cfg.store.max_pending,
            hours: r.hours.clone(),
            zone: cfg.hours.zone.clone(),
            unsynced_clock: cfg.hours.unsynced_clock,
        };
        let lane = Lane::new(
            settings,
            feedback.lane(&r.outputs),
            shared.clone(),
            api_slot.clone(),
        );
        busy.push(lane.busy());
        let ended = ended_tx.clone();
        tasks.spawn_with("lane", move |stop| async move {
            lane.run(rx, stop).await;
            let _ = ended.send(i).await;
        });
    }
    drop(ended_tx);
    let _inputs = match crate::outputs::inputs::spawn(&cfg.outputs, &cfg.inputs) {
        Ok(Some((handle, events))) => {
            tasks.spawn(
                "door",
                crate::door::run(
                    events,
                    cfg.inputs.clone(),
                    feedback.clone(),
                    shared.clone(),
                    cfg.device.name.clone(),
                ),
            );
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
    let mut waiting_for_creds = false;
    let slot = Arc::new(slot);
    if let Some(workspace) = workspace {
        feedback.set_status_blink(Duration::from_millis(250));
        crate::service::notify_status("not enrolled: registering this device with Tiketo");
        tracing::info!(device = %cfg.device.name, "not enrolled: registering this device");
        tasks.spawn(
            "enrolment",
            enrol(
                cfg.clone(),
                workspace,
                shared.clone(),
                slot.clone(),
                creds_tx,
            ),
        );
        waiting_for_creds = true;
    }
    // A scan may take its budget plus time for the store; a lane busy longer is wedged.
    let healthy_ms = (budget + Duration::from_secs(5)).as_millis() as i64;
    let mut ping = watchdog.interval();

    let code = loop {
        tokio::select! {
            biased;
            _ = stop_rx.changed() => {
                tracing::info!("stopped by signal; outputs in safe state");
                break ExitCode::SUCCESS;
            }
            // The watchdog is fed while every lane is idle or within a healthy scan's time: a
            // wedged scan stops the pings and systemd restarts the daemon; a slow HTTP call
            // cannot (each scan has its budget).
            _ = ping.tick() => ping_if_healthy(&watchdog, &busy, healthy_ms),
            creds = &mut creds_rx, if waiting_for_creds => {
                waiting_for_creds = false;
                let Ok(creds) = creds else {
                    tracing::error!("enrolment stopped without credentials");
                    break ExitCode::from(1);
                };
                log_enrolled(&creds);
                if let Err(code) = go_online(&cfg, creds, &shared, &feedback, &slot, &mut tasks) {
                    break code;
                }
            }
            // A lane ends only at the end of its input (stdin): the daemon is done.
            _ = ended_rx.recv() => {
                tracing::info!("end of input; finishing the pulses that are running");
                feedback.wait_idle().await;
                break ExitCode::SUCCESS;
            }
        }
    };
    let late = tasks.stop(STOP_WITHIN).await;
    if !late.is_empty() {
        tracing::warn!("stopping: {} did not stop in time", late.join(", "));
    }
    if *stop_rx.borrow() {
        crate::service::notify_stopping();
    }
    code
}

/// How long a stop waits for the tasks (a commit in progress takes milliseconds).
pub const STOP_WITHIN: Duration = Duration::from_secs(2);

/// The device has its token: the API clients, the link keeper, the replay, and the client
/// handed to the lanes.
fn go_online(
    cfg: &Config,
    creds: Credentials,
    shared: &Shared,
    feedback: &Feedback,
    slot: &ApiSlotSender,
    tasks: &mut Tasks,
) -> Result<(), ExitCode> {
    shared.board.set_enrolled();
    let (client, replay_client) = clients(cfg, &creds.token).map_err(|e| {
        tracing::error!("{e}");
        ExitCode::from(1)
    })?;
    drop(creds);
    tasks.spawn(
        "keep-alive",
        keep_link(client.clone(), shared.clone(), cfg.api.url.clone()),
    );
    tasks.spawn(
        "mismatch probe",
        probe_lookups(client.clone(), shared.clone()),
    );
    tasks.spawn(
        "status LED",
        follow_link_with_status_led(shared.clone(), feedback.clone()),
    );
    tasks.spawn("replay", crate::replay::run(replay_client, shared.clone()));
    tasks.spawn("SIGUSR1", wake_replay_on_sigusr1(shared.clone()));
    slot.enrolled(client);
    Ok(())
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

/// Registers the device with backoff ([`crate::backoff::enrolment`]) until it has its
/// token, saves the credentials, and hands them over. The status LED blinks fast meanwhile.
async fn enrol(
    cfg: Config,
    workspace: Secret,
    shared: Shared,
    slot: Arc<ApiSlotSender>,
    done: tokio::sync::oneshot::Sender<Credentials>,
) {
    let mut delays = crate::backoff::enrolment();
    loop {
        let result = crate::enrol::register(&cfg, &workspace, &cfg.device.name).await;
        match result {
            Ok(creds) => {
                let state = cfg.device.state_dir.clone();
                let c2 = creds.clone();
                match tokio::task::spawn_blocking(move || {
                    crate::enrol::save_credentials(&state, &c2)
                })
                .await
                {
                    Ok(Ok(())) => {
                        shared.api.observe(Caller::Enrolment, &Ok(()));
                        let _ = done.send(creds);
                        return;
                    }
                    Ok(Err(e)) => tracing::error!("{e}"),
                    Err(e) => tracing::error!("{e}"),
                }
            }
            Err(e) => {
                shared.api.observe::<()>(Caller::Enrolment, &Err(e.clone()));
                tracing::warn!("enrolment failed: {e}; trying again");
            }
        }
        slot.first_attempt_failed();
        tokio::time::sleep(delays.next().unwrap_or(crate::backoff::LONGEST)).await;
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
/// API ([`crate::backoff::probe`], start to start: a probe that hangs is given up when the next
/// is due) until it answers, and meanwhile tries every second whether a connection to the
/// API's host can be made ([`connectable_again`]): the first that can after one that could
/// not brings the probe forward, so a network that comes back is seen within about a second.
async fn keep_link(client: Client, shared: Shared, url: url::Url) {
    const EVERY: Duration = Duration::from_secs(45);
    let link = shared.api.link.clone();
    // A check that hangs (an API that accepts and never answers) must not stall the probe.
    let check = |client: Client, within: Duration| async move {
        match tokio::time::timeout(within, client.warmup()).await {
            Ok(r) => r,
            Err(_) => Err(crate::api::ApiError::new(
                crate::api::classify::ErrorClass::Retryable { retry_after: None },
                None,
                format!("no answer within {} ms", within.as_millis()),
            )),
        }
    };
    let mut changes = link.subscribe();
    loop {
        match link.mode() {
            Mode::Online => {
                let result = check(client.clone(), Duration::from_secs(5)).await;
                let effect = shared.api.observe(Caller::KeepAlive, &result);
                if let (Err(e), Effect::Nothing | Effect::AuthRefused) = (&result, effect) {
                    tracing::warn!("API check: {e}");
                }
                if link.mode() == Mode::Online {
                    tokio::select! {
                        _ = tokio::time::sleep(EVERY) => {}
                        _ = changes.changed() => {}
                    }
                }
            }
            Mode::Offline => {
                let mut delays = crate::backoff::probe();
                let mut next = tokio::time::Instant::now()
                    + delays.next().unwrap_or(crate::backoff::PROBE_CAP);
                let mut could_not_connect = false;
                while link.mode() == Mode::Offline {
                    tokio::select! {
                        _ = tokio::time::sleep_until(next) => {}
                        _ = connectable_again(&url, &mut could_not_connect) => {
                            tracing::debug!("the API's host takes connections again: probing now");
                        }
                    }
                    let delay = delays.next().unwrap_or(crate::backoff::PROBE_CAP);
                    next = tokio::time::Instant::now() + delay;
                    let within = delay.clamp(Duration::from_secs(1), Duration::from_secs(5));
                    let result = check(client.clone(), within).await;
                    if let Err(e) = &result {
                        tracing::debug!("API still unreachable: {e}");
                    }
                    shared.api.observe(Caller::KeepAlive, &result);
                }
            }
        }
    }
}

/// Resolves once a TCP connection to the API's host can be made after one could not, checking
/// every second. No request is sent: the API (and AppSync's bill) never sees it. Through a
/// proxy, or while only the API's answers fail (5xx), it never resolves and the probe's own
/// schedule decides.
async fn connectable_again(url: &url::Url, could_not: &mut bool) {
    loop {
        let ok = connectable(url).await;
        if ok && *could_not {
            *could_not = false;
            return;
        }
        *could_not = !ok;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Whether a TCP connection to the URL's host and port can be made within a second.
async fn connectable(url: &url::Url) -> bool {
    let Some((host, port)) = crate::api::host_port(url) else {
        return false;
    };
    let attempt = async {
        for addr in tokio::net::lookup_host((host.as_str(), port)).await.ok()? {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return Some(());
            }
        }
        None
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(1), attempt).await,
        Ok(Some(()))
    )
}

/// The status LED while the API's schema does not fit: two short flashes, a pause (apart from
/// offline's slow blink and enrolment's fast one).
pub const MISMATCH_BLINK: [Duration; 4] = [
    Duration::from_millis(150),
    Duration::from_millis(150),
    Duration::from_millis(150),
    Duration::from_millis(900),
];

/// The code the mismatch probe looks up: no pass has it; the lookup costs the API a read.
pub const PROBE_CODE: &str = "tiketo-gate-schema-probe";

/// While the lookup does not fit the API's schema (a mismatch met by `passByScanCode`), the
/// lanes decide offline and do not ask; this asks instead, on [`crate::backoff::mismatch`],
/// so a fixed server is taken again without a restart. (A mismatch of `createScanEvent` is
/// probed by the replay worker with the oldest pending event.)
async fn probe_lookups(client: Client, shared: Shared) {
    let mut watch = shared.api.watch_mismatch();
    loop {
        let by_lookup = |m: &Option<crate::state::Mismatch>| {
            m.as_ref().is_some_and(|m| m.by.contains(&Caller::Lookup))
        };
        if watch.wait_for(by_lookup).await.is_err() {
            return;
        }
        let mut delays = crate::backoff::mismatch();
        while by_lookup(&shared.api.mismatch()) {
            tokio::time::sleep(delays.next().unwrap_or(crate::backoff::LONGEST)).await;
            let result = match tokio::time::timeout(
                Duration::from_secs(5),
                client.pass_by_scan_code(PROBE_CODE),
            )
            .await
            {
                Ok(r) => r,
                Err(_) => Err(crate::api::ApiError::new(
                    crate::api::classify::ErrorClass::Retryable { retry_after: None },
                    None,
                    "no answer within 5 s",
                )),
            };
            if let Err(e) = &result {
                tracing::debug!("the lookup still does not fit: {e}");
            }
            shared.api.observe(Caller::Lookup, &result);
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
        shared.outbox.replay_wake.notify_one();
    }
}

/// Status LED: steady on while online, slow blink (1 s) while offline, a double blink while
/// the API's schema does not fit this daemon (and the systemd STATUS).
async fn follow_link_with_status_led(shared: Shared, feedback: Feedback) {
    let mut rx = shared.api.link.subscribe();
    let mut mismatch = shared.api.watch_mismatch();
    loop {
        let mode = *rx.borrow_and_update();
        let m = mismatch.borrow_and_update().clone();
        match (mode, m) {
            (_, Some(_)) => {
                feedback.set_status_pattern(&MISMATCH_BLINK);
                crate::service::notify_status(
                    "API MISMATCH: the API's schema does not fit this daemon; deciding by the offline policy",
                );
            }
            (Mode::Online, None) => {
                feedback.set_status(true);
                crate::service::notify_status("online");
            }
            (Mode::Offline, None) => {
                feedback.set_status_blink(Duration::from_secs(1));
                crate::service::notify_status(
                    "offline: deciding by the offline policy, probing the API",
                );
            }
        }
        tokio::select! {
            r = rx.changed() => if r.is_err() { return },
            r = mismatch.changed() => if r.is_err() { return },
        }
    }
}

/// Prunes sent and rejected rows past the retention, at start and hourly.
async fn prune(shared: Shared, retention: Duration) {
    loop {
        match shared
            .store
            .run(move |s| s.prune(retention, crate::clock::now_ms()))
            .await
        {
            Ok(0) => {}
            Ok(n) => tracing::info!(rows = n, "pruned old scans"),
            Err(e) => tracing::warn!("prune: {e}"),
        }
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
}

/// Checkpoints the WAL every 30 s, from the second connection (the scan path never does).
/// More often was measured worse: a checkpoint's fsync of the database file beside a scan's
/// fsync of the WAL stretches the scan's (`--mode busy --path offline`: p99.9 8-10 ms with
/// 30 s, 177 ms with a checkpoint after each quiet moment).
async fn checkpoint(shared: Shared) {
    loop {
        tokio::time::sleep(Duration::from_secs(30)).await;
        if let Err(e) = shared.store.read(|s| s.checkpoint()).await {
            tracing::warn!("checkpoint: {e}");
        }
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
