//! `tiketo-gate doctor`: the installer's check before the doors open. One line per check
//! (✓ fine, ! worth a look, ✗ the door will not work as it should), each problem with what to
//! do; `--json` for fleet scripts; exit status 1 when a line is ✗.
//!
//! It changes nothing (but the announced pulses of `--outputs`), never prints a token or a
//! whole code, and bounds every network step in time: a dead network is a ✗ line, not a
//! hang. The judgements (skew, free space, file modes) are pure and tested; the checks are
//! the IO around them.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use serde_json::json;

use crate::api::classify::{classify_gql_errors, ErrorClass};
use crate::api::{introspect, ops, Client};
use crate::config::{Config, OutputBackendKind, ReaderKind};
use crate::mask::{mask_code, Secret};

/// How long each network step may take.
const STEP: Duration = Duration::from_secs(3);
/// The API's answers (a slow Lambda authorizer included).
const ANSWER: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Ok,
    Warn,
    Fail,
}

impl Level {
    fn mark(self) -> &'static str {
        match self {
            Level::Ok => "✓",
            Level::Warn => "!",
            Level::Fail => "✗",
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    pub status: Level,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

fn check(name: impl Into<String>, status: Level, message: impl Into<String>) -> Check {
    Check {
        name: name.into(),
        status,
        message: message.into(),
        fix: None,
    }
}

impl Check {
    fn fix(mut self, f: impl Into<String>) -> Check {
        self.fix = Some(f.into());
        self
    }
}

#[derive(Debug, Clone, Default)]
pub struct Options {
    pub json: bool,
    /// Wait for one code per reader and show the verdict it would get (recording nothing).
    pub scan: bool,
    /// Pulse each output once, announced (only with the daemon stopped).
    pub outputs: bool,
    pub scan_wait: Duration,
}

// ---- the judgements (pure) ----------------------------------------------------------------

/// The clock against the server's `Date` (whole seconds, so a second either way is noise).
pub fn skew_level(skew: Duration) -> Level {
    if skew <= Duration::from_secs(2) {
        Level::Ok
    } else if skew <= Duration::from_secs(30) {
        Level::Warn
    } else {
        Level::Fail
    }
}

/// Free space in the state directory.
pub fn free_space_level(bytes: u64) -> Level {
    if bytes >= 200 << 20 {
        Level::Ok
    } else if bytes >= 20 << 20 {
        Level::Warn
    } else {
        Level::Fail
    }
}

/// A secret's file mode: readable by every user is a leak waiting to happen.
pub fn secret_mode_level(mode: u32) -> Level {
    if mode & 0o007 != 0 {
        Level::Warn
    } else {
        Level::Ok
    }
}

/// The report's text, a line a check (and an arrow line for what to do).
pub fn render(checks: &[Check]) -> String {
    let width = checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
    let mut out = String::new();
    for c in checks {
        out.push_str(&format!(
            "{} {:width$}  {}\n",
            c.status.mark(),
            c.name,
            c.message
        ));
        if let Some(f) = &c.fix {
            out.push_str(&format!("  {:width$}  → {f}\n", ""));
        }
    }
    let fails = checks.iter().filter(|c| c.status == Level::Fail).count();
    let warns = checks.iter().filter(|c| c.status == Level::Warn).count();
    out.push_str(&match (fails, warns) {
        (0, 0) => "ready: every check passed\n".to_owned(),
        (0, w) => format!("ready, with {w} thing(s) worth a look\n"),
        (f, _) => format!("NOT READY: {f} problem(s) to fix\n"),
    });
    out
}

// ---- the checks -------------------------------------------------------------------------

/// `tiketo-gate doctor`.
pub fn run(config_path: &Path, opts: Options) -> ExitCode {
    let checks = match crate::config::load(config_path) {
        Err(e) => vec![check("config", Level::Fail, e.to_string())
            .fix("fix the line named above; tiketo-gate check-config shows the same")],
        Ok(cfg) => {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("tiketo-gate doctor: {e}");
                    return ExitCode::from(1);
                }
            };
            rt.block_on(all(&cfg, &opts))
        }
    };
    if opts.json {
        let ok = checks.iter().all(|c| c.status != Level::Fail);
        println!("{}", json!({"ok": ok, "checks": checks}));
    } else {
        print!("{}", render(&checks));
    }
    if checks.iter().any(|c| c.status == Level::Fail) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

async fn all(cfg: &Config, opts: &Options) -> Vec<Check> {
    crate::api::install_crypto_provider();
    let summary = cfg.summary();
    let mut out = vec![check(
        "config",
        Level::Ok,
        summary.strip_prefix("ok: ").unwrap_or(&summary),
    )];
    let (token, enrolled, token_checks) = token(cfg);
    out.extend(token_checks);
    out.extend(state_dir(cfg));
    let (store_checks, daemon) = store(cfg);
    out.extend(store_checks);
    out.extend(api(cfg, token.as_ref(), enrolled).await);
    out.extend(readers(cfg, daemon));
    out.extend(lines(cfg));
    out.extend(hours(cfg));
    out.extend(display(cfg, daemon).await);
    if opts.scan {
        out.extend(scan(cfg, token.as_ref(), daemon, opts.scan_wait).await);
    }
    if opts.outputs {
        out.extend(pulse(cfg, daemon).await);
    }
    out
}

fn mode_of(path: &Path) -> Option<u32> {
    std::fs::metadata(path)
        .ok()
        .map(|m| m.permissions().mode() & 0o777)
}

/// The token the API is asked with: the device's own, or before enrolment the workspace's.
fn token(cfg: &Config) -> (Option<Secret>, bool, Vec<Check>) {
    let mut out = Vec::new();
    let mode_check = |what: &str, path: &Path| {
        let mode = mode_of(path)?;
        Some(match secret_mode_level(mode) {
            Level::Ok => check(
                "token",
                Level::Ok,
                format!("{what} {} is readable (mode {mode:04o})", path.display()),
            ),
            l => check(
                "token",
                l,
                format!(
                    "{what} {} is readable by every user (mode {mode:04o})",
                    path.display()
                ),
            )
            .fix(format!("chmod 640 {}", path.display())),
        })
    };
    match crate::enrol::load_credentials(&cfg.device.state_dir) {
        Ok(Some(c)) => {
            let path = crate::enrol::path_in(&cfg.device.state_dir);
            out.extend(mode_check("the device credentials", &path));
            (Some(c.token), true, out)
        }
        Ok(None) => match crate::enrol::workspace_token(cfg) {
            Ok(t) => {
                if std::env::var_os("TIKETO_GATE_TOKEN").is_some() {
                    out.push(check(
                        "token",
                        Level::Ok,
                        "not enrolled yet; the workspace token comes from TIKETO_GATE_TOKEN",
                    ));
                } else {
                    out.extend(mode_check(
                        "not enrolled yet; the workspace token",
                        &cfg.api.token_file,
                    ));
                }
                (Some(t), false, out)
            }
            Err(e) => {
                out.push(
                    check("token", Level::Fail, format!("not enrolled yet, and {e}")).fix(
                        format!(
                            "put the workspace API token in {} (mode 640), or enrol: tiketo-gate enroll",
                            cfg.api.token_file.display()
                        ),
                    ),
                );
                (None, false, out)
            }
        },
        Err(e) => {
            out.push(check("token", Level::Fail, e).fix(
                "the device credentials cannot be read: check the state directory's owner, or enrol again with tiketo-gate enroll --force",
            ));
            (None, true, out)
        }
    }
}

fn state_dir(cfg: &Config) -> Vec<Check> {
    let dir = &cfg.device.state_dir;
    if !dir.exists() {
        // The daemon makes it at its first start (systemd's StateDirectory= on a kiosk): fine
        // when the nearest directory that is there can be written.
        let parent = dir.ancestors().skip(1).find(|p| p.exists());
        let parent = parent.unwrap_or(Path::new("/"));
        let parent = if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        };
        return vec![
            if rustix::fs::access(parent, rustix::fs::Access::WRITE_OK).is_ok() {
                check(
                    "state_dir",
                    Level::Ok,
                    format!("{} is made at the daemon's first start", dir.display()),
                )
            } else {
                check(
                    "state_dir",
                    Level::Fail,
                    format!(
                        "{} is not there and {} is not writable",
                        dir.display(),
                        parent.display()
                    ),
                )
                .fix("create it for the service's user, or set StateDirectory= in the unit")
            },
        ];
    }
    let writable = rustix::fs::access(dir, rustix::fs::Access::WRITE_OK).is_ok();
    if !writable {
        return vec![check(
            "state_dir",
            Level::Fail,
            format!("{} is not writable by this user", dir.display()),
        )
        .fix("run doctor as the service's user (or root); check the directory's owner")];
    }
    match rustix::fs::statvfs(dir) {
        Ok(st) => {
            let free = st.f_bavail.saturating_mul(st.f_frsize);
            let c = check(
                "state_dir",
                free_space_level(free),
                format!("{} is writable, {} MiB free", dir.display(), free >> 20),
            );
            vec![match c.status {
                Level::Ok => c,
                _ => c.fix("free space on that file system: offline scans are kept there"),
            }]
        }
        Err(e) => vec![check(
            "state_dir",
            Level::Warn,
            format!("{} is writable; free space unknown: {e}", dir.display()),
        )],
    }
}

/// The store's health and counts, and the running daemon's pid (from its status rows).
fn store(cfg: &Config) -> (Vec<Check>, Option<u32>) {
    let path = crate::store::Store::path_in(&cfg.device.state_dir);
    if !path.exists() {
        return (
            vec![check(
                "store",
                Level::Ok,
                format!("{} not made yet (the daemon makes it)", path.display()),
            )],
            None,
        );
    }
    let store = match crate::store::Store::open_existing(&path, false) {
        Ok(s) => s,
        Err(e) => {
            return (
                vec![check("store", Level::Fail, format!("{}: {e}", path.display()))
                    .fix("the daemon sets a damaged store aside at start and makes a new one; check the disk")],
                None,
            )
        }
    };
    let mut out = Vec::new();
    if let Err(e) = store.quick_check() {
        out.push(
            check(
                "store",
                Level::Fail,
                format!("{}: quick_check: {e}", path.display()),
            )
            .fix("the daemon sets a damaged store aside at its next start; check the SD card"),
        );
    } else {
        match store.outbox_counts() {
            Ok(c) => {
                let msg = format!(
                    "{}: quick_check ok, {} pending, {} dead",
                    path.display(),
                    c.pending,
                    c.dead
                );
                out.push(if c.dead > 0 {
                    check("store", Level::Warn, msg)
                        .fix("tiketo-gate queue list --dead says why Tiketo refused them")
                } else {
                    check("store", Level::Ok, msg)
                });
            }
            Err(e) => out.push(check("store", Level::Fail, e.to_string())),
        }
    }
    let daemon = crate::status::Status::read(&store)
        .ok()
        .map(|s| s.daemon_pid)
        .filter(|pid| *pid > 0 && daemon_alive(*pid));
    (out, daemon)
}

fn daemon_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|c| c.contains("tiketo-gate") && c.contains("run"))
}

async fn timed<T>(d: Duration, f: impl std::future::Future<Output = T>) -> Option<T> {
    tokio::time::timeout(d, f).await.ok()
}

async fn api(cfg: &Config, token: Option<&Secret>, enrolled: bool) -> Vec<Check> {
    let mut out = Vec::new();
    let url = &cfg.api.url;
    let (host, port) = crate::api::host_port(url).unwrap_or_else(|| (String::new(), 443));
    // DNS
    let addrs = match timed(STEP, tokio::net::lookup_host((host.as_str(), port))).await {
        Some(Ok(a)) => a.collect::<Vec<_>>(),
        Some(Err(e)) => {
            out.push(
                check("dns", Level::Fail, format!("{host}: {e}"))
                    .fix("check the venue network's DNS, or api.url"),
            );
            return out;
        }
        None => {
            out.push(
                check(
                    "dns",
                    Level::Fail,
                    format!("{host}: no answer within {STEP:?}"),
                )
                .fix("check the network: is the cable in, is there a DHCP lease?"),
            );
            return out;
        }
    };
    let Some(addr) = addrs.first().copied() else {
        out.push(check("dns", Level::Fail, format!("{host}: no address")));
        return out;
    };
    out.push(check(
        "dns",
        Level::Ok,
        if host.parse::<std::net::IpAddr>().is_ok() {
            format!("{host} is an address (no DNS needed)")
        } else {
            format!("{host} is {}", addr.ip())
        },
    ));
    // TCP
    let t = std::time::Instant::now();
    match timed(STEP, tokio::net::TcpStream::connect(addr)).await {
        Some(Ok(_)) => out.push(check(
            "tcp",
            Level::Ok,
            format!("{addr} connects in {} ms", t.elapsed().as_millis()),
        )),
        Some(Err(e)) => {
            out.push(
                check("tcp", Level::Fail, format!("{addr}: {e}"))
                    .fix("a firewall or proxy between the door and the API? outbound TCP to that port must be open"),
            );
            return out;
        }
        None => {
            out.push(
                check(
                    "tcp",
                    Level::Fail,
                    format!("{addr}: no answer within {STEP:?}"),
                )
                .fix("outbound traffic to the API is dropped: ask the venue's network admin"),
            );
            return out;
        }
    }
    let Some(token) = token else {
        out.push(check(
            "auth",
            Level::Fail,
            "no token to ask the API with (see the token line)",
        ));
        return out;
    };
    let client = match Client::new(url.clone(), token, cfg.api.ca_file.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            out.push(check("tls", Level::Fail, e).fix("check api.ca_file"));
            return out;
        }
    };
    let https = url.scheme() == "https";
    // TLS and HTTP: one cheap authenticated request.
    let probe = match timed(
        ANSWER,
        client.probe(ops::WARMUP.name, ops::WARMUP.document, json!({})),
    )
    .await
    {
        Some(Ok(p)) => p,
        Some(Err(e)) => {
            let name = if https { "tls" } else { "http" };
            out.push(check(name, Level::Fail, e.detail).fix(if https {
                "the TLS handshake failed: a proxy that intercepts TLS needs its CA in api.ca_file; check the clock too"
            } else {
                "the API did not answer HTTP"
            }));
            return out;
        }
        None => {
            out.push(
                check("http", Level::Fail, format!("no answer within {ANSWER:?}"))
                    .fix("the API accepts connections but does not answer: a proxy, or an outage at Tiketo"),
            );
            return out;
        }
    };
    if https {
        out.push(check(
            "tls",
            Level::Ok,
            match &cfg.api.ca_file {
                Some(ca) => format!(
                    "the certificate is trusted (with api.ca_file {})",
                    ca.display()
                ),
                None => "the certificate is trusted".to_owned(),
            },
        ));
    }
    let Some(resp) = &probe.response else {
        out.push(
            check(
                "http",
                Level::Fail,
                format!(
                    "HTTP {}: the answer is not GraphQL (it begins {:?})",
                    probe.status, probe.head
                ),
            )
            .fix("a captive portal or a proxy answers instead of the API: log the venue network in, or check api.url"),
        );
        return out;
    };
    out.push(check(
        "http",
        Level::Ok,
        format!(
            "{}, round trip {} ms",
            probe.version,
            probe.elapsed.as_millis()
        ),
    ));
    out.push(clock(&probe));
    // Auth
    let refused = matches!(probe.status, 401 | 403)
        || classify_gql_errors(&resp.errors) == Some(ErrorClass::Auth);
    let which = if enrolled {
        "the device token"
    } else {
        "the workspace token"
    };
    if refused {
        out.push(
            check("auth", Level::Fail, format!("the API refuses {which} (HTTP {})", probe.status)).fix(
                if enrolled {
                    "the device was removed or its token revoked in Tiketo: tiketo-gate enroll --force (with the workspace token)"
                } else {
                    "check the workspace API token in api.token_file"
                },
            ),
        );
        return out;
    }
    if !(200..300).contains(&probe.status) || !resp.errors.is_empty() {
        out.push(check(
            "auth",
            Level::Warn,
            format!(
                "HTTP {}: {}",
                probe.status,
                resp.errors
                    .first()
                    .map(|e| e.message.clone())
                    .unwrap_or_default()
            ),
        ));
    } else {
        out.push(check(
            "auth",
            Level::Ok,
            if enrolled {
                "the API takes the device token".to_owned()
            } else {
                "the API takes the workspace token (the daemon enrols at its first start)"
                    .to_owned()
            },
        ));
    }
    out.push(schema(&client).await);
    out
}

fn clock(probe: &crate::api::Probe) -> Check {
    let synced = clock_synced();
    let skew = probe.date.map(|date| {
        // The Date header was made about half a round trip ago.
        let now = SystemTime::now() - probe.elapsed / 2;
        match now.duration_since(date) {
            Ok(ahead) => (ahead, '+'),
            Err(e) => (e.duration(), '-'),
        }
    });
    let skew_text = match skew {
        Some((d, sign)) => format!("{sign}{:.1} s against the API", d.as_secs_f64()),
        None => "the API sent no Date".to_owned(),
    };
    let level = skew.map(|(d, _)| skew_level(d)).unwrap_or(Level::Warn);
    let sync_text = match &synced {
        Some(by) => format!("synced ({by})"),
        None => "NOT synced".to_owned(),
    };
    let c = check(
        "clock",
        if synced.is_none() && level == Level::Ok {
            Level::Warn
        } else {
            level
        },
        format!("{skew_text}; {sync_text}"),
    );
    match (c.status, synced) {
        (Level::Ok, _) => c,
        (_, None) => c.fix("timedatectl set-ntp true (or start chrony); pass expiry and offline decisions use this clock"),
        (_, Some(_)) => c.fix("the clock is off although synced: check the NTP servers"),
    }
}

/// Who keeps the clock synced, if it is: the kernel's word (any NTP daemon), timesyncd's
/// file, or chrony.
fn clock_synced() -> Option<&'static str> {
    match crate::clock::sync_source() {
        Some(crate::clock::SyncSource::Kernel) => {
            return Some("the kernel: an NTP daemon disciplines it")
        }
        Some(crate::clock::SyncSource::Timesyncd) => return Some("systemd-timesyncd"),
        None => {}
    }
    let out = std::process::Command::new("chronyc")
        .args(["-n", "tracking"])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    (out.status.success() && text.contains("Leap status     : Normal")).then_some("chrony")
}

async fn schema(client: &Client) -> Check {
    let resp = match timed(
        ANSWER,
        client.execute("Introspection", introspect::QUERY, json!({})),
    )
    .await
    {
        Some(Ok(r)) => r,
        Some(Err(e)) => {
            return check("schema", Level::Warn, format!("skipped: {e}"));
        }
        None => {
            return check(
                "schema",
                Level::Warn,
                format!("skipped: no answer within {ANSWER:?}"),
            )
        }
    };
    let Some(data) = resp
        .data
        .filter(|d| d.get("__schema").is_some_and(|s| !s.is_null()))
    else {
        return check(
            "schema",
            Level::Warn,
            match resp.errors.first() {
                Some(e) if classify_gql_errors(&resp.errors) == Some(ErrorClass::Mismatch) => {
                    format!(
                        "skipped: the server does not answer introspection ({})",
                        e.message
                    )
                }
                Some(e) => format!("skipped: {}", e.message),
                None => "skipped: the server's answer has no schema".to_owned(),
            },
        );
    };
    let sdl = match introspect::sdl_from_introspection(&data) {
        Ok(s) => s,
        Err(e) => {
            return check(
                "schema",
                Level::Fail,
                format!("the server's schema cannot be read: {e}"),
            )
        }
    };
    let schema = match introspect::schema(&sdl) {
        Ok(s) => s,
        Err(e) => return check("schema", Level::Fail, e),
    };
    let sent = crate::api::documents_sent();
    let breaks = introspect::check(&schema, &sent);
    if breaks.is_empty() {
        return check(
            "schema",
            Level::Ok,
            format!(
                "every document the daemon sends fits the live schema ({} operations)",
                sent.len()
            ),
        );
    }
    let text: Vec<String> = breaks
        .iter()
        .map(|b| format!("{}: {}", b.operation, b.problem))
        .collect();
    check("schema", Level::Fail, text.join("; ")).fix(
        "Tiketo's API changed: update tiketo-gate (or ask Tiketo); meanwhile the daemon raises API MISMATCH, decides by the offline policy and keeps every scan",
    )
}

fn readers(cfg: &Config, daemon: Option<u32>) -> Vec<Check> {
    cfg.readers
        .iter()
        .map(|r| {
            let name = format!("reader:{}", r.name);
            match &r.kind {
                ReaderKind::Stdin => check(name, Level::Ok, "stdin (a test setup)"),
                ReaderKind::Serial { path, baud } => {
                    if !path.exists() {
                        return check(name, Level::Fail, format!("{} is not there", path.display()))
                            .fix("plug the reader in; ls -l /dev/serial/by-id/ shows the stable path for reader.path");
                    }
                    if let Some(pid) = daemon {
                        return check(
                            name,
                            Level::Ok,
                            format!("{} is there, held by the running daemon (pid {pid})", path.display()),
                        );
                    }
                    match crate::reader::open_port(path, *baud) {
                        Ok(_) => check(name, Level::Ok, format!("{} opens at {baud} baud", path.display())),
                        Err(e) => check(name, Level::Fail, format!("{}: {e}", path.display()))
                            .fix("the service's user needs the dialout group; is another program holding the port?"),
                    }
                }
                ReaderKind::Hid { source, .. } => match crate::reader::open_hid(source) {
                    Ok((path, dev)) => check(
                        name,
                        Level::Ok,
                        format!(
                            "{} ({}) is a keyboard-mode reader{}",
                            path.display(),
                            dev.name().unwrap_or("?"),
                            match daemon {
                                Some(pid) => format!(", in use by the running daemon (pid {pid})"),
                                None => String::new(),
                            }
                        ),
                    ),
                    Err(e) => check(name, Level::Fail, e.to_string())
                        .fix("plug the reader in; the service's user needs the input group; ls -l /dev/input/by-id/"),
                },
            }
        })
        .collect()
}

/// The opening hours, by the lanes' rule, and whether the clock lets them be kept.
fn hours(cfg: &Config) -> Vec<Check> {
    let synced = crate::clock::clock_synced();
    let zone = cfg
        .hours
        .zone_name
        .clone()
        .unwrap_or_else(|| "the system's zone".into());
    cfg.readers
        .iter()
        .filter(|r| r.hours.is_set())
        .map(|r| {
            let name = format!("hours:{}", r.name);
            let closed = crate::hours::closed_now(
                &r.hours,
                cfg.hours.unsynced_clock,
                synced,
                jiff::Timestamp::now(),
                &cfg.hours.zone,
            );
            match (closed, synced) {
                (None, true) => check(name, Level::Ok, format!("open now ({zone})")),
                (Some(why), true) => check(name, Level::Ok, format!("closed now: {why} ({zone})")),
                (_, false) => check(
                    name,
                    Level::Warn,
                    format!(
                        "the clock is not synced: {} (rules.unsynced_clock = \"{}\")",
                        match cfg.hours.unsynced_clock {
                            crate::hours::UnsyncedClock::IgnoreHours => "the hours are not kept until it is",
                            crate::hours::UnsyncedClock::Reject => "every code is rejected outside_hours until it is",
                        },
                        cfg.hours.unsynced_clock.as_str()
                    ),
                )
                .fix("let an NTP daemon (systemd-timesyncd, chrony, ntpsec) reach its servers; timedatectl says \"System clock synchronized: yes\" once it has"),
            }
        })
        .collect()
}

/// The guest screen: served by the running daemon, or its address free for it.
async fn display(cfg: &Config, daemon: Option<u32>) -> Vec<Check> {
    let Some(d) = &cfg.display else {
        return Vec::new();
    };
    let mut addr = d.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let url = format!("http://{addr}/");
    if daemon.is_none() {
        return vec![match std::net::TcpListener::bind(d.listen) {
            Ok(_) => check("display", Level::Ok, format!("{} is free for the guest screen ({})", d.listen, d.language)),
            Err(e) => check("display", Level::Fail, format!("display.listen {}: {e}", d.listen))
                .fix("another program listens there (ss -ltnp shows which): choose another display.listen"),
        }];
    }
    let got = timed(Duration::from_secs(2), async {
        let r = reqwest::Client::new().get(&url).send().await?;
        let status = r.status();
        r.text().await.map(|t| (status, t))
    })
    .await;
    vec![match got {
        Some(Ok((s, body))) if s.is_success() && body.contains("EventSource") => check(
            "display",
            Level::Ok,
            format!("the running daemon serves the guest screen at {url} ({} bytes, {})", body.len(), d.language),
        ),
        Some(Ok((s, _))) => check("display", Level::Fail, format!("{url} answered {s}, not the guest screen"))
            .fix("another program answers there: choose another display.listen, restart tiketo-gate"),
        Some(Err(e)) => check("display", Level::Fail, format!("{url}: {e}"))
            .fix("restart tiketo-gate after changing [display]; journalctl -u tiketo-gate says why it does not listen"),
        None => check("display", Level::Fail, format!("{url}: no answer within 2 s"))
            .fix("journalctl -u tiketo-gate"),
    }]
}

fn lines(cfg: &Config) -> Vec<Check> {
    let mut out = Vec::new();
    let n = cfg.outputs.lines.len();
    let inputs = crate::outputs::inputs::lines(&cfg.inputs);
    match &cfg.outputs.backend {
        OutputBackendKind::Sim { .. } => out.push(check(
            "lines",
            Level::Ok,
            format!("sim backend: {n} outputs, no hardware"),
        )),
        OutputBackendKind::Gpiod => {
            let problems = crate::outputs::gpiod::probe(&cfg.outputs, &inputs);
            if problems.is_empty() {
                out.push(check(
                    "lines",
                    Level::Ok,
                    format!(
                        "every line resolves ({n} outputs, {} inputs) on {}",
                        inputs.len(),
                        cfg.outputs.chip
                    ),
                ));
            } else {
                for p in problems {
                    out.push(check("lines", Level::Fail, p).fix(
                        "gpioinfo lists the chip's lines and who holds them; fix the line in [outputs] or [inputs]",
                    ));
                }
            }
        }
        OutputBackendKind::Gpio => {
            let dev = Path::new("/dev/gpiomem");
            out.push(if dev.exists() {
                check(
                    "lines",
                    Level::Ok,
                    format!(
                        "rppal: /dev/gpiomem is there ({n} outputs, {} inputs)",
                        inputs.len()
                    ),
                )
            } else {
                check(
                    "lines",
                    Level::Fail,
                    "rppal: /dev/gpiomem is not there (not a Raspberry Pi?)",
                )
                .fix("on a Pi, check the kernel; elsewhere use outputs.backend = \"gpiod\"")
            });
        }
    }
    for w in crate::outputs::safety_warnings(cfg) {
        out.push(check("lines", Level::Warn, w));
    }
    out
}

/// `--scan`: one code per reader, shown masked with the verdict it would get now.
async fn scan(
    cfg: &Config,
    token: Option<&Secret>,
    daemon: Option<u32>,
    wait: Duration,
) -> Vec<Check> {
    if let Some(pid) = daemon {
        return vec![check(
            "scan",
            Level::Fail,
            format!("the daemon (pid {pid}) holds the readers"),
        )
        .fix("systemctl stop tiketo-gate, run doctor --scan, then systemctl start tiketo-gate")];
    }
    let client =
        token.and_then(|t| Client::new(cfg.api.url.clone(), t, cfg.api.ca_file.as_deref()).ok());
    let mut out = Vec::new();
    for r in &cfg.readers {
        let name = format!("scan:{}", r.name);
        let (tx, mut rx) = tokio::sync::mpsc::channel(16);
        if let Err(e) = crate::reader::spawn(r, crate::reader::Tx::new(tx)) {
            out.push(check(name, Level::Fail, e.to_string()));
            continue;
        }
        eprintln!(
            "doctor: scan a pass at reader {} (waiting {} s)",
            r.name,
            wait.as_secs()
        );
        let code = tokio::time::timeout(wait, async {
            while let Some(ev) = rx.recv().await {
                match ev {
                    crate::reader::ReaderEvent::Code { code, .. } => return Ok(code),
                    crate::reader::ReaderEvent::Malformed { kind, .. } => {
                        eprintln!("doctor: that was not a code ({}); again", kind.as_str());
                    }
                    crate::reader::ReaderEvent::Disconnected { error, .. } => return Err(error),
                    _ => {}
                }
            }
            Err("the reader stopped".to_owned())
        })
        .await;
        let code = match code {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                out.push(check(name, Level::Fail, e));
                continue;
            }
            Err(_) => {
                out.push(
                    check(
                        name,
                        Level::Fail,
                        format!("no code within {} s", wait.as_secs()),
                    )
                    .fix("check the reader's cable and its terminator (CR or LF) and baud rate"),
                );
                continue;
            }
        };
        let masked = mask_code(&code);
        let Some(client) = &client else {
            out.push(check(
                name,
                Level::Warn,
                format!("{masked} read; no token to look it up"),
            ));
            continue;
        };
        let looked_up = timed(cfg.api.timeout.max(ANSWER), client.pass_by_scan_code(&code)).await;
        out.push(match looked_up {
            Some(Ok(pass)) => {
                match crate::decision::decide(
                    pass.as_ref(),
                    &cfg.rules,
                    time::OffsetDateTime::now_utc(),
                ) {
                    Ok(()) => check(
                        name,
                        Level::Ok,
                        format!("{masked} → accept (nothing recorded)"),
                    ),
                    Err(reason) => check(
                        name,
                        Level::Warn,
                        format!("{masked} → reject: {} (nothing recorded)", reason.as_str()),
                    ),
                }
            }
            Some(Err(e)) => check(
                name,
                Level::Warn,
                format!(
                    "{masked} read; the lookup failed: {}",
                    crate::mask::scrub(&e.to_string(), &code)
                ),
            ),
            None => check(
                name,
                Level::Warn,
                format!("{masked} read; the lookup did not answer"),
            ),
        });
    }
    out
}

/// `--outputs`: each output on for its pulse (at least 300 ms), in turn, announced.
async fn pulse(cfg: &Config, daemon: Option<u32>) -> Vec<Check> {
    if let Some(pid) = daemon {
        return vec![check(
            "outputs",
            Level::Fail,
            format!("the daemon (pid {pid}) drives the outputs"),
        )
        .fix("systemctl stop tiketo-gate first (or use the status page's test buttons)")];
    }
    let mut backend = match crate::outputs::open_backend(&cfg.outputs) {
        Ok(b) => b,
        Err(e) => {
            return vec![check(
                "outputs",
                Level::Fail,
                format!("cannot open the outputs: {e}"),
            )]
        }
    };
    let mut out = Vec::new();
    for (i, (name, spec)) in cfg.outputs.lines.iter().enumerate() {
        let on_for = spec.pulse.max(Duration::from_millis(300));
        eprintln!("doctor: pulsing {name} for {} ms", on_for.as_millis());
        let r = backend.set(i, true);
        tokio::time::sleep(on_for).await;
        let off = backend.set(i, false);
        tokio::time::sleep(Duration::from_millis(300)).await;
        out.push(match r.and(off) {
            Ok(()) => check(
                format!("pulse:{name}"),
                Level::Ok,
                format!(
                    "pulsed for {} ms: did it click or light?",
                    on_for.as_millis()
                ),
            ),
            Err(e) => check(format!("pulse:{name}"), Level::Fail, e.to_string()),
        });
    }
    let _ = backend.release();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn judgements() {
        assert_eq!(skew_level(Duration::from_millis(1500)), Level::Ok);
        assert_eq!(skew_level(Duration::from_secs(10)), Level::Warn);
        assert_eq!(skew_level(Duration::from_secs(120)), Level::Fail);
        assert_eq!(free_space_level(1 << 30), Level::Ok);
        assert_eq!(free_space_level(50 << 20), Level::Warn);
        assert_eq!(free_space_level(1 << 20), Level::Fail);
        assert_eq!(secret_mode_level(0o640), Level::Ok);
        assert_eq!(secret_mode_level(0o600), Level::Ok);
        assert_eq!(secret_mode_level(0o644), Level::Warn);
    }

    #[test]
    fn the_report_marks_each_line_and_says_what_to_do() {
        let checks = vec![
            check("config", Level::Ok, "fine"),
            check("schema", Level::Fail, "CreateScanEvent: venue").fix("update"),
        ];
        let text = render(&checks);
        assert!(text.contains("✓ config  fine\n"), "{text}");
        assert!(
            text.contains("✗ schema  CreateScanEvent: venue\n"),
            "{text}"
        );
        assert!(text.contains("→ update"), "{text}");
        assert!(text.ends_with("NOT READY: 1 problem(s) to fix\n"), "{text}");
        let v = serde_json::to_value(&checks).unwrap();
        assert_eq!(v[1]["status"], "fail");
        assert!(v[0].get("fix").is_none());
    }
}
