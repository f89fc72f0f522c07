//! The end-to-end harness: `tiketo-sim` in-process on loopback, the real daemon binary as a
//! child process, its serial reader on one end of a pseudo-terminal pair (the real
//! `serialport` code path; only the wire is virtual) and the `sim` outputs in a JSON-lines
//! file. A symlink stands for `/dev/serial/by-id/...`, so a test can unplug the reader and
//! plug a new one in under another pts name.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tiketo_sim::{Sim, SimOptions};

pub mod broker;

pub const TOKEN: &str = "test-workspace-token-5f2c9a";

/// Every code the seed knows, to check that none of them is ever logged in full.
pub const SEED_CODES: &[&str] = &[
    "VALID-0001",
    "VALID-0002",
    "VALID-0003",
    "VOIDED-0001",
    "EXPIRED-0001",
    "OTHER-0001",
    "ONCE-0001",
    "LOYAL-0001",
    "REFUSED-0001",
    "APPSYNC-0001",
    "APPSYNC-0002",
    "APPSYNC-EXPIRED",
];

#[derive(Debug, Clone)]
pub struct Opts {
    /// Extra lines for the `[offline]` table.
    pub offline_extra: &'static str,
    /// Extra tables at the end of the config (e.g. `[http]`).
    pub tail: String,
    pub policy: &'static str,
    pub budget_ms: u64,
    pub debounce_ms: u64,
    pub relay_ms: u64,
    pub rules: &'static str,
    /// Replaces the `[reader]` table when not empty (`@DIR@` and `@LINK@` are filled in).
    pub readers: String,
    /// More lines for the `[outputs]` table (`@DIR@` is filled in).
    pub outputs_extra: String,
    /// `device.name`.
    pub device: &'static str,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            offline_extra: "",
            tail: String::new(),
            policy: "reject",
            budget_ms: 800,
            debounce_ms: 0,
            relay_ms: 300,
            rules: "projects = [\"proj-main\", \"proj-loyalty\"]",
            readers: String::new(),
            outputs_extra: String::new(),
            device: "test-door",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputChange {
    pub ts_ms: u64,
    pub output: String,
    pub on: bool,
}

/// A pseudo-terminal pair: the test writes to the master; the daemon opens the slave by path
/// with `serialport`, exactly as it opens a real port.
pub struct Pty {
    pub master: std::fs::File,
    slave_path: PathBuf,
}

impl Pty {
    pub fn new() -> Pty {
        use rustix::pty::{grantpt, openpt, ptsname, unlockpt, OpenptFlags};
        // CLOEXEC: a daemon spawned by this (or a parallel) test must not inherit the master,
        // or closing it here would not hang up the line.
        let master =
            openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC).expect("openpt");
        grantpt(&master).expect("grantpt");
        unlockpt(&master).expect("unlockpt");
        let name = ptsname(&master, Vec::new()).expect("ptsname");
        let slave_path = PathBuf::from(name.to_string_lossy().into_owned());
        Pty {
            master: std::fs::File::from(master),
            slave_path,
        }
    }

    pub fn slave_path(&self) -> PathBuf {
        self.slave_path.clone()
    }
}

pub struct Harness {
    pub sim: Sim,
    pub dir: tempfile::TempDir,
    pub pty: Option<Pty>,
    pub link: PathBuf,
    pub outputs_path: PathBuf,
    pub child: Option<Child>,
    pub stderr: Arc<Mutex<String>>,
    pub opts: Opts,
    /// Extra environment for the daemon.
    pub env: Vec<(String, String)>,
    /// A command the daemon runs under (e.g. strace with fault injection).
    pub wrapper: Vec<String>,
}

impl Harness {
    pub async fn start(opts: Opts) -> Harness {
        let sim = Sim::start(SimOptions {
            token: TOKEN.into(),
            ..SimOptions::default()
        })
        .await
        .expect("sim starts");
        Self::start_with_sim(sim, opts).await
    }

    /// Starts without waiting for enrolment (the test decides what to wait for).
    pub async fn start_unenrolled(
        sim: Sim,
        opts: Opts,
        env: Vec<(String, String)>,
        token_file: bool,
    ) -> Harness {
        let dir = tempfile::tempdir().expect("tempdir");
        let pty = Pty::new();
        let link = dir.path().join("reader");
        std::os::unix::fs::symlink(pty.slave_path(), &link).expect("symlink");
        let outputs_path = dir.path().join("outputs.jsonl");
        if token_file {
            std::fs::write(dir.path().join("token"), format!("{TOKEN}\n")).unwrap();
        }
        let mut h = Harness {
            sim,
            dir,
            pty: Some(pty),
            link,
            outputs_path,
            child: None,
            stderr: Arc::new(Mutex::new(String::new())),
            opts,
            env,
            wrapper: Vec::new(),
        };
        h.spawn_daemon();
        h.wait_log(" ready ", Duration::from_secs(10));
        h
    }

    /// Starts and waits until the daemon is enrolled and its reader is open.
    pub async fn start_with_sim(sim: Sim, opts: Opts) -> Harness {
        let h = Self::start_unenrolled(sim, opts, Vec::new(), true).await;
        h.wait_log("reader connected", Duration::from_secs(10));
        h.wait_log(
            "enrolled: this device now uses its own token",
            Duration::from_secs(10),
        );
        h
    }

    pub fn config_text(&self) -> String {
        let o = &self.opts;
        format!(
            r#"[device]
name = "{device}"
state_dir = "{dir}/state"

[api]
url = "{url}"
token_file = "{dir}/token"
timeout_ms = {budget}

{readers}

[rules]
{rules}

[offline]
policy = "{policy}"
{offline_extra}

[outputs]
backend = "sim"
sim_log = "{outputs}"
relay  = {{ pin = 17, pulse_ms = {relay} }}
green  = {{ pin = 27, pulse_ms = 200 }}
red    = {{ pin = 22, pulse_ms = 200 }}
buzzer = {{ pin = 23, pulse_ms = 20 }}
status = {{ pin = 24 }}
{outputs_extra}

{tail}
"#,
            dir = self.dir.path().display(),
            device = o.device,
            url = self.sim.url(),
            budget = o.budget_ms,
            rules = o.rules,
            policy = o.policy,
            offline_extra = o.offline_extra,
            tail = o.tail,
            outputs = self.outputs_path.display(),
            relay = o.relay_ms,
            readers = self.readers_text(),
            outputs_extra = o
                .outputs_extra
                .replace("@DIR@", &self.dir.path().display().to_string()),
        )
    }

    fn readers_text(&self) -> String {
        let o = &self.opts;
        if o.readers.is_empty() {
            format!(
                "[reader]\nkind = \"serial\"\npath = \"{link}\"\nbaud = 115200\nmax_len = 512\ndebounce_ms = {debounce}\nframe_timeout_ms = 200\n",
                link = self.link.display(),
                debounce = o.debounce_ms,
            )
        } else {
            o.readers
                .replace("@DIR@", &self.dir.path().display().to_string())
                .replace("@LINK@", &self.link.display().to_string())
        }
    }

    pub fn spawn_daemon(&mut self) {
        let cfg = self.dir.path().join("config.toml");
        std::fs::write(&cfg, self.config_text()).unwrap();
        let mut cmd = match self.wrapper.split_first() {
            None => Command::new(env!("CARGO_BIN_EXE_tiketo-gate")),
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(env!("CARGO_BIN_EXE_tiketo-gate"));
                c
            }
        };
        let mut child = cmd
            .args(["run", "--config"])
            .arg(&cfg)
            .env_remove("TIKETO_GATE_TOKEN")
            .env("TIKETO_GATE_LOG", "debug")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("daemon starts");
        let stderr = child.stderr.take().unwrap();
        let sink = self.stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        self.child = Some(child);
    }

    pub fn logs(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits until the daemon's log holds `needle` (panics with the log otherwise).
    pub fn wait_log(&self, needle: &str, timeout: Duration) {
        if !wait_until(timeout, || self.logs().contains(needle)) {
            panic!("log never showed {needle:?}; log:\n{}", self.logs());
        }
    }

    /// How many scan lines the log holds.
    pub fn scan_lines(&self) -> Vec<String> {
        self.logs()
            .lines()
            .filter(|l| l.contains(" INFO scan "))
            .map(str::to_owned)
            .collect()
    }

    /// Waits for the n-th scan line (1-based) and returns it.
    pub fn wait_scan(&self, n: usize) -> String {
        if !wait_until(Duration::from_secs(10), || self.scan_lines().len() >= n) {
            panic!("no scan #{n}; log:\n{}", self.logs());
        }
        self.scan_lines()[n - 1].clone()
    }

    pub fn write(&mut self, bytes: &[u8]) {
        let m = &mut self.pty.as_mut().expect("reader plugged in").master;
        m.write_all(bytes).expect("write to pty");
        m.flush().unwrap();
    }

    /// The outputs' changes (not the lines of an output that was on already and started its
    /// time over: [`Harness::restarts_of`]).
    pub fn outputs(&self) -> Vec<OutputChange> {
        let text = std::fs::read_to_string(&self.outputs_path).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["restarted"].as_bool() != Some(true))
            .map(|v| OutputChange {
                ts_ms: v["ts_ms"].as_u64().unwrap(),
                output: v["output"].as_str().unwrap().to_owned(),
                on: v["on"].as_bool().unwrap(),
            })
            .collect()
    }

    /// When `output` started its time over while on (`"restarted": true` lines), unix ms.
    pub fn restarts_of(&self, output: &str) -> Vec<u64> {
        let text = std::fs::read_to_string(&self.outputs_path).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["restarted"].as_bool() == Some(true) && v["output"] == output)
            .map(|v| v["ts_ms"].as_u64().unwrap())
            .collect()
    }

    pub fn changes_of(&self, output: &str) -> Vec<bool> {
        self.outputs()
            .into_iter()
            .filter(|c| c.output == output)
            .map(|c| c.on)
            .collect()
    }

    /// Waits until `output` has been switched `on` at least `count` times.
    pub fn wait_switched(&self, output: &str, on: bool, count: usize, timeout: Duration) -> bool {
        wait_until(timeout, || {
            self.changes_of(output).iter().filter(|s| **s == on).count() >= count
        })
    }

    /// Unplugs the reader: both ends of the pty close, the by-id link dangles.
    pub fn unplug(&mut self) {
        self.pty = None;
    }

    /// Plugs a new reader in (a new pts name) behind the same link.
    pub fn plug(&mut self) {
        let pty = Pty::new();
        let _ = std::fs::remove_file(&self.link);
        std::os::unix::fs::symlink(pty.slave_path(), &self.link).unwrap();
        self.pty = Some(pty);
    }

    /// SIGKILL: no cleanup at all, as a power cut or the OOM killer would do.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the daemon again on the same state, config and reader.
    pub fn restart_daemon(&mut self) {
        let before = self.logs().matches("reader connected").count();
        let creds = self
            .logs()
            .matches("using the stored device credentials")
            .count();
        self.spawn_daemon();
        if !wait_until(Duration::from_secs(10), || {
            self.logs().matches("reader connected").count() > before
                && self
                    .logs()
                    .matches("using the stored device credentials")
                    .count()
                    > creds
        }) {
            panic!("daemon did not come back; log:\n{}", self.logs());
        }
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.toml")
    }

    /// Runs `tiketo-gate ARGS --config <this config>`.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_tiketo-gate"))
            .args(args)
            .arg("--config")
            .arg(self.config_path())
            .output()
            .expect("cli runs")
    }

    pub fn status_json(&self) -> serde_json::Value {
        let out = self.cli(&["status", "--json"]);
        assert!(
            out.status.success(),
            "status failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("status --json is JSON")
    }

    /// Opens the daemon's store file read-only (as the CLI does).
    pub fn store(&self) -> tiketo_gate::store::Store {
        let path = tiketo_gate::store::Store::path_in(&self.dir.path().join("state"));
        tiketo_gate::store::Store::open_existing(&path, false).expect("store opens")
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut().unwrap();
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Some(s) = child.try_wait().unwrap() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    /// Checks that hold after every test: every request fitted the schema and carried the
    /// token, and neither the token nor a full pass code is in the daemon's log.
    pub fn check_invariants(&self) {
        self.check_invariants_with(true)
    }

    /// [`Harness::check_invariants`]; `fits: false` for a test whose server changed its
    /// schema under the daemon (its requests are expected not to fit).
    pub fn check_invariants_with(&self, fits: bool) {
        for r in self.sim.requests() {
            if r.fault.is_none() && fits {
                assert!(r.valid, "request did not fit the schema: {r:?}");
                assert!(r.authorized, "request without the token: {r:?}");
            }
            // After enrolment everything but registerDevice uses the device token.
            if r.operation_name.as_deref() != Some("RegisterDevice") {
                assert_eq!(r.token_kind, "device", "{r:?}");
            }
        }
        let logs = self.logs();
        assert!(!logs.contains(TOKEN), "the workspace token is in the log");
        for t in self.sim.device_tokens() {
            assert!(!logs.contains(&t), "the device token is in the log");
        }
        for code in SEED_CODES {
            assert!(
                !logs.contains(code),
                "full code {code} is in the log:\n{logs}"
            );
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A small xorshift generator, seeded from the clock; the seed is printed so a failing run
/// can be told apart (and its choices reasoned about).
pub struct Rng(u64);

impl Rng {
    pub fn from_clock(what: &str) -> Rng {
        // TIKETO_TEST_SEED replays a run whose seed a failure printed.
        let seed = std::env::var("TIKETO_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        eprintln!("{what}: seed {seed}");
        Rng(seed | 1)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// What reached the fake API, against what the store says was admitted.
pub struct Delivery {
    pub admitted: usize,
    pub dead: usize,
    pub received: usize,
    pub duplicates: usize,
}

/// Once the queue is drained: every admitted scan marked sent reached the API, nothing reached
/// it that was not admitted (by scanId), and every dead letter is a refusal the server gave
/// for a reason (`allowed_dead` substrings of its error).
pub fn check_delivery(h: &Harness, allowed_dead: &[&str]) -> Delivery {
    use std::collections::{BTreeSet, HashMap};
    let store = h.store();
    assert_eq!(store.integrity_check().unwrap(), "ok");
    let sent: BTreeSet<String> = store.all_scan_ids("sent").unwrap().into_iter().collect();
    let dead = store.list(true, 100_000).unwrap();
    for d in &dead {
        let e = d.last_error.as_deref().unwrap_or("");
        assert!(
            allowed_dead.iter().any(|a| e.contains(a)),
            "unexpected dead letter: {d:?}"
        );
    }
    let dead_ids: BTreeSet<String> = dead.iter().map(|d| d.scan_id.clone()).collect();
    let admitted: BTreeSet<String> = sent.union(&dead_ids).cloned().collect();
    let mut per_id: HashMap<String, usize> = HashMap::new();
    for e in h.sim.scan_events() {
        *per_id.entry(e.scan_id().unwrap().to_owned()).or_default() += 1;
    }
    let received: BTreeSet<String> = per_id.keys().cloned().collect();
    let missing: Vec<_> = sent.difference(&received).collect();
    assert!(
        missing.is_empty(),
        "admitted, marked sent, never received: {missing:?}"
    );
    let unknown: Vec<_> = received.difference(&admitted).collect();
    if !unknown.is_empty() {
        let path = tiketo_gate::store::Store::path_in(&h.dir.path().join("state"));
        let conn = rusqlite::Connection::open(path).unwrap();
        let rows: Vec<String> = unknown
            .iter()
            .map(|id| {
                conn.query_row(
                    "SELECT seq, verdict, reason, online, outbox, attempts, last_error FROM scans WHERE scan_id = ?1",
                    [id],
                    |r| {
                        Ok(format!(
                            "{id}: seq {:?} {:?}/{:?} online {:?} outbox {:?} attempts {:?} error {:?}",
                            r.get::<_, i64>(0)?,
                            r.get::<_, Option<String>>(1)?,
                            r.get::<_, Option<String>>(2)?,
                            r.get::<_, Option<i64>>(3)?,
                            r.get::<_, Option<String>>(4)?,
                            r.get::<_, Option<i64>>(5)?,
                            r.get::<_, Option<String>>(6)?,
                        ))
                    },
                )
                .unwrap_or_else(|e| format!("{id}: no row ({e})"))
            })
            .collect();
        panic!("received but never admitted: {rows:#?}");
    }
    Delivery {
        admitted: admitted.len(),
        dead: dead_ids.len(),
        received: received.len(),
        duplicates: per_id.values().filter(|n| **n > 1).count(),
    }
}

/// A free loopback port (bound and released: good enough for tests).
/// `GET http://127.0.0.1:PORT/PATH`: status and body.
pub async fn http_get(port: u16, path: &str) -> (u16, String) {
    tiketo_gate::api::install_crypto_provider();
    let r = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}{path}"))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// The same, `None` while nothing listens there yet (a daemon starting).
pub async fn http_try_get(port: u16, path: &str) -> Option<(u16, String)> {
    tiketo_gate::api::install_crypto_provider();
    let r = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}{path}"))
        .send()
        .await
        .ok()?;
    Some((r.status().as_u16(), r.text().await.ok()?))
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if cond() {
            return true;
        }
        if start.elapsed() > timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A field of a tracing log line: `key=value`.
pub fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let pat = format!(" {key}=");
    let start = line.find(&pat)? + pat.len();
    let rest = &line[start..];
    Some(rest.split(' ').next().unwrap_or(rest).trim_matches('"'))
}

pub fn path_str(p: &Path) -> String {
    p.display().to_string()
}

/// A TOML list of yesterday, today and tomorrow (UTC): every zone's today is among them, so
/// `closed_dates` set to it closes the door now wherever the machine is.
pub fn dates_around_today() -> String {
    let today = time::OffsetDateTime::now_utc().date();
    [today.previous_day(), Some(today), today.next_day()]
        .map(|d| format!("\"{}\"", d.unwrap()))
        .join(", ")
}

/// The `doctor --json` check named `name`.
pub fn doctor_line(h: &Harness, name: &str) -> serde_json::Value {
    let out = h.cli(&["doctor", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no {name} line in {v}"))
}
