//! Whole-daemon figures: the real daemon with its serial reader on a pseudo-terminal,
//! tiketo-sim on loopback, the `sim` outputs on a pipe. `cargo bench --bench scan_latency --
//! --mode M`, with M one of:
//!
//! - `online [--scans 200] [--delay-ms 0]`: code's last byte -> relay on over N online scans;
//!   beside it the fake API's own time for the two requests of each scan, and the daemon's
//!   overhead (the difference).
//! - `hid [--scans 200]`: the online path through the keyboard-mode reader (raw evdev records
//!   of a German-layout scanner on a FIFO): last key event -> relay on, and the overhead.
//! - `python [--scans 200]`: the same for `baseline.py` (termios, urllib, sqlite3).
//! - `tls [--scans 100] [--link-ms 25]`: online over HTTPS (a test CA through api.ca_file)
//!   behind a TCP proxy that adds `link-ms` each way.
//! - `offline [--scans 200]`: with the API stopped, after the offline switch (durable write
//!   included).
//! - `drain [--events 10000] [--delay-ms 50]`: time for the replay to deliver N pending scan
//!   events, and live scans during the drain.
//! - `write [--scans 2000]`: the durable write of one scan (one fsync'd SQLite commit).
//! - `idle [--secs 20]`: resident memory, CPU time and wake-ups per second of an idle daemon.
//! - `rss [--scans 100000]`: resident memory after N (offline) scans.
//! - `ready [--rows 100000]`: start to systemd READY with N rows in the store.
//!
//! `--state-on tmpfs` puts the daemon's state directory in /dev/shm (fsync costs nothing
//! there): the daemon's own figures without the disk's tail.
//! - `mqtt [--scans 300] [--rounds 2] [--commands 200] [--backlog 10000] [--broker-nodelay
//!   true]`: against a mosquitto on loopback: the scan overhead with `[mqtt]` on and off in
//!   alternating rounds, the events at a subscriber, signed command -> relay on, resident memory
//!   on and off, and a backlog of N stored events drained.
//! - `venue [--doors 10] [--rate 20] [--secs 60] [--scans 300] [--rounds 2]`: one venue of
//!   N daemons on one mosquitto on loopback, scans at `rate`/s across them (each a pass no
//!   door saw before): propagation (a scan's code written at one door -> its admission in the
//!   venue's record at a subscriber, as every other door receives it), every door converged,
//!   the broker's CPU and memory, a late joiner's time to the venue's whole memory, and the
//!   scan overhead with the venue on and off in alternating rounds.
//! - `busy [--path online|offline] [--scans 10000] [--backlog 30000] [--cli-every-ms 250]`: the
//!   tail under the background work of a door at work: a `/metrics` scrape every second,
//!   `status` and `queue list` run from another process in a loop (a pause of
//!   `cli-every-ms` after each pair; 0: back to back), (online) the replay draining a backlog
//!   of N pending events, and the daemon's own WAL checkpoints. Reports p99 and p99.9 of the
//!   overhead (online: latency minus the fake API's time; offline: the latency itself).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tiketo_gate::decision::{Reason, Verdict};
use tiketo_gate::store::{NewScan, Store};
use tiketo_sim::{Sim, SimOptions};

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn arg_str(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| default.to_owned())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

fn summary(name: &str, mut v: Vec<f64>) -> String {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    format!(
        "{name:<36} median {:>8.3} ms   p99 {:>8.3} ms   max {:>8.3} ms",
        percentile(&v, 0.5),
        percentile(&v, 0.99),
        v[v.len() - 1]
    )
}

/// Median, p99, p99.9 and max, for the tail figures.
fn tail_summary(name: &str, mut v: Vec<f64>) -> String {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    format!(
        "{name:<36} median {:>8.3} ms   p99 {:>8.3} ms   p99.9 {:>8.3} ms   max {:>8.3} ms",
        percentile(&v, 0.5),
        percentile(&v, 0.99),
        percentile(&v, 0.999),
        v[v.len() - 1]
    )
}

fn pty() -> (std::fs::File, PathBuf) {
    use rustix::pty::{grantpt, openpt, ptsname, unlockpt, OpenptFlags};
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC).unwrap();
    grantpt(&master).unwrap();
    unlockpt(&master).unwrap();
    let slave = PathBuf::from(
        ptsname(&master, Vec::new())
            .unwrap()
            .to_string_lossy()
            .into_owned(),
    );
    (std::fs::File::from(master), slave)
}

fn lines_of(child: &mut Child) -> mpsc::Receiver<(Instant, String)> {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<(Instant, String)>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send((Instant::now(), line)).is_err() {
                break;
            }
        }
    });
    rx
}

fn pending_row(i: usize, code: &str, pending: bool) -> NewScan {
    NewScan {
        scan_id: uuid::Uuid::new_v4(),
        code: code.into(),
        verdict: Verdict::Accept,
        reason: if pending {
            Reason::OfflinePolicy
        } else {
            Reason::Valid
        },
        online: !pending,
        scanned_at: time::OffsetDateTime::now_utc(),
        boot_id: "bench".into(),
        mono_ms: i as u64,
        clock_synced: true,
        device: "bench-door".into(),
        reader: "reader".into(),
        direction: tiketo_gate::decision::Direction::Entry,
        reward_points: None,
        pending,
    }
}

struct Rig {
    dir: tempfile::TempDir,
    master: std::fs::File,
    hid: bool,
    child: Child,
    rx: mpsc::Receiver<(Instant, String)>,
    /// With `--stages`: the daemon's `scan stages` lines, one per scan.
    stages: Option<mpsc::Receiver<String>>,
    /// When the last scan's code was written (CLOCK_MONOTONIC, µs).
    written_mono_us: f64,
}

fn mono_us() -> f64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as f64 * 1e6 + t.tv_nsec as f64 / 1e3
}

/// `--stages`: the daemon logs each scan's stages (`tiketo_gate::stages=debug`) and the
/// online modes take the slowest scans apart.
fn stages_wanted() -> bool {
    std::env::args().any(|a| a == "--stages")
}

/// The daemon's stderr: `scan stages` lines to the channel, the rest passed on.
fn stage_lines_of(child: &mut Child) -> mpsc::Receiver<String> {
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if line.contains("scan stages") {
                if tx.send(line).is_err() {
                    break;
                }
            } else {
                eprintln!("{line}");
            }
        }
    });
    rx
}

/// A `scan stages` line's `name_us=N` fields.
fn stage_fields(line: &str) -> std::collections::HashMap<String, f64> {
    line.split_whitespace()
        .filter_map(|w| {
            let w = w.trim_start_matches("stages=");
            let (k, v) = w.split_once('=')?;
            let k = k.strip_suffix("_us")?;
            Some((
                k.to_owned(),
                v.trim_matches('"').parse::<f64>().ok()? / 1000.0,
            ))
        })
        .collect()
}

struct RigOpts<'a> {
    /// `device.name` (and so the MQTT client id).
    device: &'a str,
    policy: &'a str,
    budget_ms: u64,
    url: String,
    api_extra: String,
    env: Vec<(&'a str, String)>,
    /// A keyboard-mode reader (German layout) fed raw evdev records through a FIFO, instead
    /// of the serial reader.
    hid: bool,
}

impl Rig {
    fn daemon(sim: &Sim, o: RigOpts<'_>, prepare: impl FnOnce(&Path)) -> Rig {
        // `--state-on tmpfs`: the store in /dev/shm, where fsync costs nothing: the daemon's
        // own tail without the disk's.
        let dir = match arg_str("--state-on", "disk").as_str() {
            "tmpfs" => tempfile::tempdir_in("/dev/shm").unwrap(),
            _ => tempfile::tempdir().unwrap(),
        };
        let state = dir.path().join("state");
        prepare(&state);
        let (mut master, slave) = pty();
        let reader = if o.hid {
            let fifo = dir.path().join("scanner.events");
            rustix::fs::mknodat(
                rustix::fs::CWD,
                &fifo,
                rustix::fs::FileType::Fifo,
                rustix::fs::Mode::from_raw_mode(0o600),
                0,
            )
            .unwrap();
            // Read-write: opening never waits for the daemon's end.
            master = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&fifo)
                .unwrap();
            format!(
                "[reader]\nkind = \"hid\"\nhid_source = \"recording\"\npath = \"{}\"\nlayout = \"de\"\ndebounce_ms = 0\n",
                fifo.display()
            )
        } else {
            format!(
                "[reader]\nkind = \"serial\"\npath = \"{}\"\nbaud = 115200\ndebounce_ms = 0\n",
                slave.display()
            )
        };
        let cfg = dir.path().join("config.toml");
        std::fs::write(
            &cfg,
            format!(
                "[device]\nname = \"{device}\"\nstate_dir = \"{state}\"\n[api]\nurl = \"{url}\"\ntoken_file = \"{dir}/token\"\ntimeout_ms = {budget}\n{extra}\n{reader}[rules]\nprojects = [\"proj-main\"]\n[offline]\npolicy = \"{policy}\"\n[outputs]\nbackend = \"sim\"\nsim_log = \"-\"\nrelay = {{ pin = 17, pulse_ms = 2 }}\n",
                state = state.display(),
                device = o.device,
                url = o.url,
                dir = dir.path().display(),
                budget = o.budget_ms,
                extra = o.api_extra,
                policy = o.policy,
            ),
        )
        .unwrap();
        std::fs::write(dir.path().join("token"), sim.token()).unwrap();
        let traced = stages_wanted();
        let mut child = Command::new(daemon_bin())
            .args(["run", "--config"])
            .arg(&cfg)
            .env(
                "TIKETO_GATE_LOG",
                if traced {
                    "warn,tiketo_gate::stages=debug"
                } else {
                    "warn"
                },
            )
            .envs(o.env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::piped())
            .stderr(if traced {
                Stdio::piped()
            } else {
                Stdio::inherit()
            })
            .spawn()
            .unwrap();
        let rx = lines_of(&mut child);
        let stages = traced.then(|| stage_lines_of(&mut child));
        let rig = Rig {
            dir,
            master,
            hid: o.hid,
            child,
            rx,
            stages,
            written_mono_us: 0.0,
        };
        std::thread::sleep(Duration::from_millis(800));
        while rig.rx.try_recv().is_ok() {}
        rig
    }

    fn python(sim: &Sim) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let (master, slave) = pty();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/benches/baseline.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg(&slave)
            .arg(sim.url())
            .arg(sim.token())
            .arg(dir.path().join("baseline.db"))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let rx = lines_of(&mut child);
        std::thread::sleep(Duration::from_millis(800));
        Rig {
            dir,
            master,
            hid: false,
            child,
            rx,
            stages: None,
            written_mono_us: 0.0,
        }
    }

    /// Writes a code; returns the time from its last byte to the relay's "on" line (None when
    /// rejected: red instead).
    fn scan(&mut self, code: &str) -> Option<f64> {
        let bytes: Vec<u8> = if self.hid {
            use tiketo_gate::hid::{keystrokes, record, Layout};
            keystrokes(Layout::De, code)
                .unwrap()
                .into_iter()
                .flat_map(|(t, c, v)| record(t, c, v))
                .collect()
        } else {
            format!("{code}\r\n").into_bytes()
        };
        // One write, as a reader delivers a code (the timer starts after its last byte).
        self.master.write_all(&bytes).unwrap();
        let t0 = Instant::now();
        self.written_mono_us = mono_us();
        let t1 = loop {
            let (t, line) = self
                .rx
                .recv_timeout(Duration::from_secs(10))
                .expect("no feedback");
            if line.contains("\"on\":true") {
                if line.contains("\"relay\"") {
                    break Some(t);
                }
                break None;
            }
        };
        if t1.is_some() {
            self.relay_line(false, "relay never off");
        }
        t1.map(|t| (t - t0).as_secs_f64() * 1000.0)
    }

    /// Waits for the relay's line saying `on`; returns when it arrived.
    fn relay_line(&self, on: bool, missing: &str) -> Instant {
        let want = format!("\"on\":{on}");
        loop {
            let (t, line) = self
                .rx
                .recv_timeout(Duration::from_secs(10))
                .expect(missing);
            if line.contains("\"relay\"") && line.contains(&want) {
                return t;
            }
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn online_rig(sim: &Sim) -> Rig {
    online_rig_with(sim, false)
}

fn online_rig_with(sim: &Sim, hid: bool) -> Rig {
    Rig::daemon(
        sim,
        RigOpts {
            device: "bench-door",
            hid,
            policy: "reject",
            budget_ms: 5000,
            url: sim.url(),
            api_extra: String::new(),
            env: vec![],
        },
        |_| {},
    )
}

/// latency, fake API time, overhead for N scans (after a warm-up). With `--stages`, the
/// slowest scans are then taken apart stage by stage ([`stage_report`]).
fn measure(rig: &mut Rig, sim: &Sim, scans: usize) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let codes = ["VALID-0001", "VALID-0002", "VALID-0003"];
    let warmup = 20;
    let (mut latency, mut api, mut overhead) = (Vec::new(), Vec::new(), Vec::new());
    let mut traces = Vec::new();
    for i in 0..(warmup + scans) {
        let before = sim.request_count();
        let l = rig.scan(codes[i % codes.len()]).expect("accepted");
        let reqs = sim.requests_since(before);
        let a = api_ms(&reqs, "");
        let trace = rig.trace(&reqs, l, a);
        if i >= warmup {
            latency.push(l);
            api.push(a);
            overhead.push(l - a);
            traces.extend(trace);
        }
    }
    if !traces.is_empty() {
        stage_report(traces);
    }
    (latency, api, overhead)
}

/// The fake API's time for the scan's requests whose operation starts with `op` ("": the
/// lookup and the event, not the connection warm-ups or the replay).
fn api_ms(reqs: &[tiketo_sim::Recorded], op: &str) -> f64 {
    reqs.iter()
        .filter(|r| {
            let name = r.operation_name.as_deref().unwrap_or("");
            (name.starts_with("PassByScanCode") || name == "CreateScanEvent")
                && name.starts_with(op)
        })
        .map(|r| r.handling_us + r.delay_us)
        .sum::<u64>() as f64
        / 1000.0
}

impl Rig {
    /// With `--stages`: the last scan's stages from the daemon's line, beside the bench's
    /// latency `l` and the fake API's time `api` (the scan's requests: `reqs`).
    fn trace(&self, reqs: &[tiketo_sim::Recorded], l: f64, api: f64) -> Option<Trace> {
        let rx = self.stages.as_ref()?;
        let mut st = stage_fields(
            &rx.recv_timeout(Duration::from_secs(10))
                .expect("no scan stages line"),
        );
        // The reader thread's read returned this long after the bench's write.
        let read_at = st.remove("last_byte_mono").unwrap_or(f64::NAN) * 1000.0;
        st.insert("pty".into(), (read_at - self.written_mono_us) / 1000.0);
        Some(Trace {
            latency: l,
            overhead: l - api,
            lookup_api: api_ms(reqs, "PassByScanCode"),
            event_api: api_ms(reqs, "CreateScanEvent"),
            st,
        })
    }
}

/// One traced scan: the bench's figures and the daemon's own stage times (ms since the last
/// byte as the reader thread saw it).
struct Trace {
    latency: f64,
    overhead: f64,
    lookup_api: f64,
    event_api: f64,
    st: std::collections::HashMap<String, f64>,
}

impl Trace {
    /// Where the overhead went: each step's time beyond the fake API's.
    fn steps(&self) -> Vec<(&'static str, f64)> {
        let at = |k: &str| self.st.get(k).copied().unwrap_or(f64::NAN);
        let feedback = at("feedback");
        vec![
            // The bench's write -> the reader thread's read returning (the pty, the thread's
            // wake-up), and the relay's line -> the bench (the pipe, the bench's wake-up).
            ("pty -> reader's read", at("pty")),
            ("relay line -> bench", self.latency - feedback - at("pty")),
            ("reader -> lane", at("lane")),
            ("lane -> online task", at("task") - at("lane")),
            (
                "lookup beyond the API",
                at("looked_up") - at("task") - self.lookup_api,
            ),
            ("row: to the store", at("row_store") - at("looked_up")),
            ("row: insert, commit", at("row_done") - at("row_store")),
            ("row: back to the task", at("written") - at("row_done")),
            (
                "event beyond the API",
                at("recorded") - at("written") - self.event_api,
            ),
            ("task -> lane", at("decided") - at("recorded")),
            ("commit store step", at("stored") - at("decided")),
            ("outputs told", feedback - at("stored")),
        ]
    }
}

/// The median of each step over all scans and over the slowest 1 %, and the ten slowest scans
/// step by step: where the tail's time goes.
fn stage_report(mut traces: Vec<Trace>) {
    traces.sort_by(|a, b| a.overhead.partial_cmp(&b.overhead).unwrap());
    let n = traces.len();
    let tail = &traces[n - (n / 100).max(1)..];
    let names: Vec<&str> = traces[0].steps().iter().map(|(k, _)| *k).collect();
    let median_of = |set: &[Trace], i: usize| {
        let mut v: Vec<f64> = set.iter().map(|t| t.steps()[i].1).collect();
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        percentile(&v, 0.5)
    };
    println!("\nstages (ms): median over all {n} scans, median over the slowest {} by overhead, and their largest", tail.len());
    for (i, name) in names.iter().enumerate() {
        let worst = tail.iter().map(|t| t.steps()[i].1).fold(f64::MIN, f64::max);
        println!(
            "  {name:<30} {:>8.3} {:>8.3} {:>8.3}",
            median_of(&traces, i),
            median_of(tail, i),
            worst
        );
    }
    // The daemon's own part: from its reader's read to the outputs, minus the fake API.
    let inside: Vec<f64> = traces
        .iter()
        .map(|t| t.st.get("feedback").copied().unwrap_or(f64::NAN) - t.lookup_api - t.event_api)
        .collect();
    println!(
        "{}",
        tail_summary("inside the daemon (read -> outputs)", inside)
    );
    println!("the ten slowest scans, step by step (ms):");
    println!(
        "  {:>8} {}",
        "overhead",
        names
            .iter()
            .map(|n| format!("{:>9}", n.split_whitespace().next().unwrap()))
            .collect::<String>()
    );
    for t in traces.iter().rev().take(10) {
        println!(
            "  {:>8.3} {}",
            t.overhead,
            t.steps()
                .iter()
                .map(|(_, v)| format!("{v:>9.3}"))
                .collect::<String>()
        );
    }
    println!();
}

fn online(rt: &tokio::runtime::Runtime) {
    let scans = arg("--scans", 200) as usize;
    let delay_ms = arg("--delay-ms", 0);
    let sim = rt.block_on(Sim::start(SimOptions::default())).unwrap();
    sim.set_delay(Duration::from_millis(delay_ms));
    let mut rig = online_rig(&sim);
    println!(
        "online: {scans} scans (after 20 warm-up), tiketo-sim delay {delay_ms} ms per response"
    );
    report("last byte -> relay on", measure(&mut rig, &sim, scans));
}

/// The three lines of an online measurement: latency, the fake API's part, the overhead.
fn report(latency_label: &str, (latency, api, overhead): (Vec<f64>, Vec<f64>, Vec<f64>)) {
    println!("{}", summary(latency_label, latency));
    println!("{}", summary("fake API time (2 requests)", api));
    println!("{}", tail_summary("daemon overhead", overhead));
}

/// The online path with a keyboard-mode reader: a German-layout scanner's key events for
/// each code (about 100 records) written to the FIFO the daemon's HID reader decodes.
fn hid(rt: &tokio::runtime::Runtime) {
    let scans = arg("--scans", 200) as usize;
    let sim = rt.block_on(Sim::start(SimOptions::default())).unwrap();
    let mut rig = online_rig_with(&sim, true);
    println!("hid: {scans} online scans (after 20 warm-up) through the keyboard-mode reader (raw evdev records on a FIFO, German layout)");
    report("last key event -> relay on", measure(&mut rig, &sim, scans));
}

fn python(rt: &tokio::runtime::Runtime) {
    let scans = arg("--scans", 200) as usize;
    let sim = rt.block_on(Sim::start(SimOptions::default())).unwrap();
    let mut rig = Rig::python(&sim);
    let (latency, api, overhead) = measure(&mut rig, &sim, scans);
    println!("python baseline (tests/benches/baseline.py): {scans} scans (after 20 warm-up)");
    println!("{}", summary("last byte -> relay on", latency));
    println!("{}", summary("fake API time (2 requests)", api));
    println!("{}", tail_summary("baseline overhead", overhead));
}

/// A TCP proxy that delays every chunk by `delay` in each direction (order kept).
async fn delaying_proxy(target: std::net::SocketAddr, delay: Duration) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((inbound, _)) = listener.accept().await else {
                continue;
            };
            let _ = inbound.set_nodelay(true);
            tokio::spawn(async move {
                let Ok(outbound) = tokio::net::TcpStream::connect(target).await else {
                    return;
                };
                let _ = outbound.set_nodelay(true);
                let (ri, wi) = inbound.into_split();
                let (ro, wo) = outbound.into_split();
                tokio::spawn(pipe(ri, wo, delay));
                tokio::spawn(pipe(ro, wi, delay));
            });
        }
    });
    addr
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    tokio::spawn(async move {
        while let Some((at, data)) = rx.recv().await {
            // A timer sleeps a millisecond or so past its deadline; sleep to just before it,
            // then yield until it, so the link adds what it says and no more.
            tokio::time::sleep_until(at - Duration::from_millis(2)).await;
            while tokio::time::Instant::now() < at {
                tokio::task::yield_now().await;
            }
            if to.write_all(&data).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    });
    let mut buf = vec![0u8; 16384];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if tx
                    .send((tokio::time::Instant::now() + delay, buf[..n].to_vec()))
                    .is_err()
                {
                    return;
                }
            }
        }
    }
}

fn tls(rt: &tokio::runtime::Runtime) {
    let scans = arg("--scans", 100) as usize;
    let link = Duration::from_millis(arg("--link-ms", 25));
    let sim = rt
        .block_on(Sim::start(SimOptions {
            tls: true,
            ..SimOptions::default()
        }))
        .unwrap();
    let proxy = rt.block_on(delaying_proxy(sim.addr(), link));
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, sim.ca_pem().unwrap()).unwrap();
    let opts = RigOpts {
        device: "bench-door",
        hid: false,
        policy: "reject",
        budget_ms: 5000,
        url: format!("https://localhost:{}/graphql", proxy.port()),
        api_extra: format!("ca_file = \"{}\"", ca.display()),
        env: vec![],
    };
    let mut rig = Rig::daemon(&sim, opts, |_| {});
    let (latency, api, _) = measure(&mut rig, &sim, scans);
    let rtt = 2.0 * link.as_secs_f64() * 1000.0;
    let conns: std::collections::BTreeSet<u64> =
        sim.requests().iter().map(|r| r.connection).collect();
    let h2 = sim
        .requests()
        .iter()
        .filter(|r| r.http_version == "HTTP/2.0")
        .count();
    println!(
        "tls: {scans} scans over HTTPS through a proxy adding {} ms each way (round trip {rtt} ms); {} connections, {h2}/{} requests on HTTP/2",
        link.as_millis(),
        conns.len(),
        sim.requests().len()
    );
    let over: Vec<f64> = latency.iter().map(|l| l - 2.0 * rtt).collect();
    println!("{}", summary("last byte -> relay on", latency));
    println!("{}", summary("fake API time (2 requests)", api));
    println!("{}", summary("above 2 round trips", over));
}

/// A daemon whose offline policy admits every code (each one a durable pending row).
fn offline_rig(sim: &Sim) -> Rig {
    let opts = RigOpts {
        device: "bench-door",
        hid: false,
        policy: "accept",
        budget_ms: 800,
        url: sim.url(),
        api_extra: String::new(),
        env: vec![],
    };
    Rig::daemon(sim, opts, |_| {})
}

fn offline(rt: &tokio::runtime::Runtime) {
    let scans = arg("--scans", 200) as usize;
    let mut sim = rt.block_on(Sim::start(SimOptions::default())).unwrap();
    let mut rig = offline_rig(&sim);
    rt.block_on(sim.stop());
    for _ in 0..3 {
        rig.scan("VALID-0001");
    }
    let mut latency = Vec::new();
    for i in 0..(20 + scans) {
        let l = rig.scan(&format!("OFFLINE-{i:05}")).expect("accepted");
        if i >= 20 {
            latency.push(l);
        }
    }
    println!("offline (policy accept, after the offline switch): {scans} scans");
    println!("{}", tail_summary("last byte -> relay on", latency));
}

fn drain(rt: &tokio::runtime::Runtime) {
    let events = arg("--events", 10_000) as usize;
    let delay_ms = arg("--delay-ms", 50);
    let sim = rt.block_on(Sim::start(SimOptions::default())).unwrap();
    sim.set_delay(Duration::from_millis(delay_ms));
    let codes = ["VALID-0001", "VALID-0002", "VALID-0003"];
    let t0 = Instant::now();
    let mut rig = Rig::daemon(
        &sim,
        RigOpts {
            device: "bench-door",
            hid: false,
            policy: "accept",
            budget_ms: 5000,
            url: sim.url(),
            api_extra: String::new(),
            env: vec![],
        },
        |state| {
            let mut store = Store::open(&Store::path_in(state)).unwrap();
            for i in 0..events {
                store
                    .insert_scan(&pending_row(i, codes[i % 3], true), false)
                    .unwrap();
            }
        },
    );
    let fill = t0.elapsed();
    let t0 = Instant::now() - Duration::from_millis(800);
    let (mut live, mut live_api) = (Vec::new(), Vec::new());
    while sim.scan_event_count() < events {
        assert!(
            t0.elapsed() < Duration::from_secs(600),
            "drain stalled at {}",
            sim.scan_event_count()
        );
        if live.len() < 20 {
            let before = sim.requests().len();
            if let Some(l) = rig.scan("VALID-0002") {
                let api: u64 = sim.requests()[before..]
                    .iter()
                    .filter(|r| {
                        r.operation_name.as_deref() == Some("PassByScanCode")
                            || r.operation_name.as_deref() == Some("CreateScanEvent")
                    })
                    .map(|r| r.handling_us + r.delay_us)
                    .sum();
                live.push(l);
                live_api.push(api as f64 / 1000.0);
            }
        } else {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let took = t0.elapsed();
    let replays = sim
        .requests()
        .iter()
        .filter(|r| r.operation_name.as_deref() == Some("Replay"))
        .count();
    println!(
        "drain: {events} pending scan events delivered in {:.2} s ({replays} requests, tiketo-sim delay {delay_ms} ms per response; store filled in {:.1} s)",
        took.as_secs_f64(),
        fill.as_secs_f64()
    );
    let overhead: Vec<f64> = live.iter().zip(&live_api).map(|(l, a)| l - a).collect();
    println!("{}", summary("live scans during the drain", live));
    println!("{}", summary("their fake API time", live_api));
    println!("{}", summary("their daemon overhead", overhead));
}

fn write() {
    let n = arg("--scans", 2000) as usize;
    let dir =
        tempfile::tempdir_in(std::env::var("TMPDIR").unwrap_or_else(|_| "target".into())).unwrap();
    let mut store = Store::open(&dir.path().join("bench.db")).unwrap();
    // As the daemon does: checkpoints between writes (every `checkpoint-every` writes; 0: none).
    let every = arg("--checkpoint-every", 0) as usize;
    let side = Store::open_existing(&dir.path().join("bench.db"), true).unwrap();
    let mut times = Vec::new();
    for i in 0..n {
        let scan = pending_row(i, &format!("CODE-{i:06}"), true);
        let t = Instant::now();
        store.insert_scan(&scan, true).unwrap();
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        if every > 0 && i % every == every - 1 {
            side.checkpoint().unwrap();
        }
    }
    println!(
        "durable write of one scan (WAL, synchronous=FULL, in {}): {n} writes",
        dir.path().display()
    );
    println!("{}", tail_summary("insert + commit (fsync)", times));
}

fn proc_status(pid: u32, key: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Context switches per thread id.
fn switches(pid: u32) -> std::collections::HashMap<String, u64> {
    let mut out = std::collections::HashMap::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let s = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
        let n: u64 = s
            .lines()
            .filter(|l| {
                l.starts_with("voluntary_ctxt_switches")
                    || l.starts_with("nonvoluntary_ctxt_switches")
            })
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum();
        out.insert(t.file_name().to_string_lossy().into_owned(), n);
    }
    out
}

/// (utime + stime in ticks, voluntary + involuntary context switches of all threads)
fn cpu_and_switches(pid: u32) -> (u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    let mut switches = 0;
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let s = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
        for l in s.lines() {
            if l.starts_with("voluntary_ctxt_switches")
                || l.starts_with("nonvoluntary_ctxt_switches")
            {
                switches += l
                    .split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
    }
    (ticks, switches)
}

fn idle(rt: &tokio::runtime::Runtime) {
    let secs = arg("--secs", 20);
    let sim = rt.block_on(Sim::start(SimOptions::default())).unwrap();
    let mut rig = online_rig(&sim);
    for c in ["VALID-0001", "VALID-0002", "VALID-0003"] {
        rig.scan(c);
    }
    std::thread::sleep(Duration::from_secs(2));
    let pid = rig.pid();
    let (t0, _) = cpu_and_switches(pid);
    let before = switches(pid);
    std::thread::sleep(Duration::from_secs(secs));
    let (t1, _) = cpu_and_switches(pid);
    let after = switches(pid);
    // Threads that came or went in between count from zero / up to their last sample.
    let delta: u64 = after
        .iter()
        .map(|(tid, n)| n.saturating_sub(*before.get(tid).unwrap_or(&0)))
        .sum();
    let (s0, s1) = (0, delta);
    let hz = 100.0;
    println!("idle: {secs} s with no scans, online, enrolled");
    println!(
        "resident memory (VmRSS)              {} kB (peak VmHWM {} kB)",
        proc_status(pid, "VmRSS:"),
        proc_status(pid, "VmHWM:")
    );
    println!(
        "CPU                                  {:.3} % of one core",
        (t1 - t0) as f64 / hz / secs as f64 * 100.0
    );
    println!(
        "context switches (wake-ups)          {:.2} per second",
        (s1 - s0) as f64 / secs as f64
    );
}

fn rss(rt: &tokio::runtime::Runtime) {
    let scans = arg("--scans", 100_000) as usize;
    let mut sim = rt.block_on(Sim::start(SimOptions::default())).unwrap();
    let mut rig = offline_rig(&sim);
    let pid = rig.pid();
    let idle = proc_status(pid, "VmRSS:");
    rt.block_on(sim.stop());
    let t = Instant::now();
    for i in 0..scans {
        rig.scan(&format!("RSS-{i:07}"));
    }
    println!(
        "rss: {scans} scans (offline, accept: each one a durable row) in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    println!(
        "resident memory before {idle} kB, after {} kB (peak {} kB)",
        proc_status(pid, "VmRSS:"),
        proc_status(pid, "VmHWM:")
    );
}

fn ready(rt: &tokio::runtime::Runtime) {
    let rows = arg("--rows", 100_000) as usize;
    let sim = rt.block_on(Sim::start(SimOptions::default())).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    // Timestamp each READY=1 as it arrives.
    let (ready_tx, ready_rx) = mpsc::channel::<Instant>();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok(n) = sock.recv(&mut buf) {
            if String::from_utf8_lossy(&buf[..n]).contains("READY=1")
                && ready_tx.send(Instant::now()).is_err()
            {
                return;
            }
        }
    });
    let mut times = Vec::new();
    let state_dir = dir.path().join("state");
    {
        let mut store = Store::open(&Store::path_in(&state_dir)).unwrap();
        for i in 0..rows {
            store
                .insert_scan(&pending_row(i, "VALID-0001", false), false)
                .unwrap();
        }
        store.checkpoint().unwrap();
    }
    for _ in 0..5 {
        let sd = state_dir.clone();
        let t0 = Instant::now();
        let opts = RigOpts {
            device: "bench-door",
            hid: false,
            policy: "accept",
            budget_ms: 800,
            url: sim.url(),
            api_extra: String::new(),
            env: vec![("NOTIFY_SOCKET", sock_path.display().to_string())],
        };
        // The rig copies nothing: point its state at the filled store.
        let rig = Rig::daemon(&sim, opts, move |state| {
            std::os::unix::fs::symlink(&sd, state).unwrap();
        });
        let at = ready_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("READY within 30 s");
        times.push((at - t0).as_secs_f64() * 1000.0);
        drop(rig);
    }
    println!("ready: start to READY=1 with {rows} rows in the store, 5 starts (includes the process spawn)");
    println!("{}", summary("start -> READY", times));
}

/// Background work beside the scans; stops when the returned flag is set.
fn background(
    cfg: PathBuf,
    metrics: std::net::SocketAddr,
    cli_every: Duration,
) -> (
    std::sync::Arc<std::sync::atomic::AtomicBool>,
    Vec<std::thread::JoinHandle<u64>>,
) {
    use std::sync::atomic::{AtomicBool, Ordering};
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    // A Prometheus scrape every second.
    threads.push(std::thread::spawn({
        let stop = stop.clone();
        move || {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                if let Ok(mut c) = std::net::TcpStream::connect(metrics) {
                    let _ = c.write_all(
                        b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: application/openmetrics-text\r\nConnection: close\r\n\r\n",
                    );
                    let mut body = Vec::new();
                    let _ = std::io::Read::read_to_end(&mut c, &mut body);
                    n += 1;
                }
                std::thread::sleep(Duration::from_secs(1));
            }
            n
        }
    }));
    // `status` and `queue list` from another process, in a loop (none: `cli-every-ms` of
    // a day).
    threads.push(std::thread::spawn({
        let stop = stop.clone();
        move || {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) && cli_every < Duration::from_secs(86_400) {
                for args in [&["status"][..], &["queue", "list"][..]] {
                    let _ = Command::new(daemon_bin())
                        .args(args)
                        .arg("--config")
                        .arg(&cfg)
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status();
                    n += 1;
                }
                let until = Instant::now() + cli_every;
                while Instant::now() < until && !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            n
        }
    }));
    (stop, threads)
}

fn free_port() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn busy(rt: &tokio::runtime::Runtime) {
    let scans = arg("--scans", 10_000) as usize;
    let backlog = arg("--backlog", 30_000) as usize;
    let path = arg_str("--path", "online");
    let online = path == "online";
    let mut sim = rt.block_on(Sim::start(SimOptions::default())).unwrap();
    let addr = free_port();
    let codes = ["VALID-0001", "VALID-0002", "VALID-0003"];
    let mut rig = Rig::daemon(
        &sim,
        RigOpts {
            device: "bench-door",
            hid: false,
            policy: if online { "reject" } else { "accept" },
            budget_ms: if online { 5000 } else { 800 },
            url: sim.url(),
            api_extra: format!("[http]\nlisten = \"{addr}\"\n"),
            env: vec![],
        },
        |state| {
            if online {
                let mut store = Store::open(&Store::path_in(state)).unwrap();
                for i in 0..backlog {
                    store
                        .insert_scan(&pending_row(i, codes[i % 3], true), false)
                        .unwrap();
                }
            }
        },
    );
    if !online {
        rt.block_on(sim.stop());
        for _ in 0..3 {
            rig.scan("VALID-0001");
        }
    }
    let cli_every = Duration::from_millis(arg("--cli-every-ms", 250));
    let (stop, threads) = background(rig.dir.path().join("config.toml"), addr, cli_every);
    let t0 = Instant::now();
    let (mut overhead, mut traces) = (Vec::new(), Vec::new());
    for i in 0..(20 + scans) {
        let before = if online { sim.request_count() } else { 0 };
        let code = if online {
            codes[i % 3].to_owned()
        } else {
            format!("OFFLINE-{i:06}")
        };
        let l = rig.scan(&code).expect("accepted");
        let reqs = if online {
            sim.requests_since(before)
        } else {
            Vec::new()
        };
        let api = api_ms(&reqs, "");
        let trace = rig.trace(&reqs, l, api);
        if i >= 20 {
            overhead.push(l - api);
            traces.extend(trace);
        }
    }
    let took = t0.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let counts: Vec<u64> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let replayed = if online {
        sim.requests()
            .iter()
            .filter(|r| r.operation_name.as_deref() == Some("Replay"))
            .count()
    } else {
        0
    };
    println!(
        "busy {path}: {scans} scans in {:.1} s beside {} metrics scrapes, {} status/queue list runs ({} ms apart){}",
        took.as_secs_f64(),
        counts[0],
        counts[1],
        cli_every.as_millis(),
        if online {
            format!(", {replayed} replay requests draining a backlog of {backlog}")
        } else {
            String::new()
        }
    );
    if !traces.is_empty() {
        stage_report(traces);
    }
    println!("{}", tail_summary("daemon overhead", overhead));
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    match arg_str("--mode", "online").as_str() {
        "online" => online(&rt),
        "python" => python(&rt),
        "hid" => hid(&rt),
        "tls" => tls(&rt),
        "offline" => offline(&rt),
        "drain" => drain(&rt),
        "write" => write(),
        "idle" => idle(&rt),
        "rss" => rss(&rt),
        "ready" => ready(&rt),
        "busy" => busy(&rt),
        "mqtt" => mqtt(&rt),
        "venue" => venue(&rt),
        other => panic!("unknown --mode {other}"),
    }
}

/// The daemon under test: this build's, or `TIKETO_BENCH_DAEMON` (another build's binary, for
/// a before/after on the same machine in the same hour).
fn daemon_bin() -> std::ffi::OsString {
    std::env::var_os("TIKETO_BENCH_DAEMON")
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_tiketo-gate").into())
}

/// A mosquitto of the bench's own (Debian's package): anonymous, loopback, a free port.
struct Mosquitto {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    fn start() -> Mosquitto {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port().port();
        let conf = dir.path().join("m.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 100000\nset_tcp_nodelay {}\n",
                arg_str("--broker-nodelay", "true")
            ),
        )
        .unwrap();
        let bin = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("mosquitto (Debian's package) is installed");
        let child = Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let end = Instant::now() + Duration::from_secs(5);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < end, "mosquitto never listened");
            std::thread::sleep(Duration::from_millis(20));
        }
        Mosquitto {
            child,
            port,
            _dir: dir,
        }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A subscriber on `topic` (QoS 1, no Nagle delay, messages up to 1 MiB) that hands each
/// message to `on`, with when it came; returns once the broker took the subscription.
fn subscribe(
    rt: &tokio::runtime::Runtime,
    port: u16,
    id: &str,
    topic: &str,
    mut on: impl FnMut(Instant, rumqttc::v5::mqttbytes::v5::Publish) + Send + 'static,
) {
    use rumqttc::v5::mqttbytes::v5::Packet;
    use rumqttc::v5::{AsyncClient, Event, MqttOptions};
    let topic = topic.to_owned();
    let id = format!("{id}-{}", std::process::id());
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    rt.spawn(async move {
        let mut o = MqttOptions::new(id, "127.0.0.1", port);
        o.set_keep_alive(Duration::from_secs(10));
        o.set_max_packet_size(Some(1 << 20));
        let mut net = rumqttc::NetworkOptions::new();
        net.set_tcp_nodelay(true);
        o.set_network_options(net);
        let (client, mut ev) = AsyncClient::new(o, 1024);
        loop {
            match ev.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    let _ = client
                        .subscribe(topic.clone(), rumqttc::v5::mqttbytes::QoS::AtLeastOnce)
                        .await;
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    let _ = ready_tx.send(());
                }
                Ok(Event::Incoming(Packet::Publish(p))) => on(Instant::now(), p),
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    ready_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("subscribed");
}

/// A subscriber counting the messages on `topic` (with when the last one came).
fn count_messages(
    rt: &tokio::runtime::Runtime,
    port: u16,
    topic: &str,
) -> std::sync::Arc<std::sync::Mutex<(usize, Option<Instant>)>> {
    let seen = std::sync::Arc::new(std::sync::Mutex::new((0usize, None)));
    let s2 = seen.clone();
    subscribe(rt, port, "bench-sub", topic, move |at, _| {
        let mut g = s2.lock().unwrap();
        g.0 += 1;
        g.1 = Some(at);
    });
    seen
}

/// `--mode mqtt`: the figures of issue 20, each against a real mosquitto on loopback.
/// 1. scan overhead with `[mqtt]` on and off, alternating rounds in the same run;
/// 2. events per second a door publishes while scanning (the on rounds' events at a subscriber);
/// 3. a backlog of `--backlog` (10,000) events in the store drained after an outage;
/// 4. command -> relay: a signed `open` published to `<topic>/cmd` until the relay's "on";
/// 5. resident memory with it on, after all that.
fn mqtt(rt: &tokio::runtime::Runtime) {
    let scans = arg("--scans", 300) as usize;
    let rounds = arg("--rounds", 2) as usize;
    let backlog = arg("--backlog", 10_000) as usize;
    let commands = arg("--commands", 200) as usize;
    let sim = rt.block_on(Sim::start(SimOptions::default())).unwrap();
    let broker = Mosquitto::start();
    let key = "bench-command-key-0123456789abcdef-0123";
    let key_dir = tempfile::tempdir().unwrap();
    let key_file = key_dir.path().join("command.key");
    std::fs::write(&key_file, key).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let mqtt_table = format!(
        "\n[mqtt]\nurl = \"mqtt://127.0.0.1:{}\"\ncommand_key_file = \"{}\"\n",
        broker.port,
        key_file.display()
    );
    let rig_with = |table: &str| {
        Rig::daemon(
            &sim,
            RigOpts {
                device: "bench-door",
                hid: false,
                policy: "reject",
                budget_ms: 5000,
                url: sim.url(),
                api_extra: table.to_owned(),
                env: vec![],
            },
            |_| {},
        )
    };
    let events = count_messages(rt, broker.port, "tiketo-gate/bench-door/events");
    let mut on = rig_with(&mqtt_table);
    let mut off = rig_with("");
    println!("mqtt: {rounds} rounds of {scans} scans each with [mqtt] on and off, alternating (mosquitto on loopback)");
    let (mut over_on, mut over_off) = (Vec::new(), Vec::new());
    let mut on_time = Duration::ZERO;
    let mut on_scans = 0;
    for _ in 0..rounds {
        let before = events.lock().unwrap().0;
        let t = Instant::now();
        let (_, _, o) = measure(&mut on, &sim, scans);
        on_time += t.elapsed();
        on_scans += scans + 20;
        over_on.extend(o);
        // Every event of the round reached the subscriber.
        let end = Instant::now() + Duration::from_secs(10);
        while events.lock().unwrap().0 < before + scans + 20 && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(10));
        }
        let (_, _, o) = measure(&mut off, &sim, scans);
        over_off.extend(o);
    }
    println!("{}", tail_summary("daemon overhead, [mqtt] on ", over_on));
    println!("{}", tail_summary("daemon overhead, [mqtt] off", over_off));
    let got = events.lock().unwrap().0;
    println!(
        "events while scanning: {got} of {on_scans} scans' events at the subscriber; {:.0} scans (and events) per second, the scan loop's own pace",
        on_scans as f64 / on_time.as_secs_f64()
    );
    let off_rss = (
        proc_status(off.pid(), "VmRSS:"),
        proc_status(off.pid(), "VmHWM:"),
    );
    drop(off);

    // 4. Command -> relay.
    let mut lat = Vec::new();
    {
        use rumqttc::v5::{AsyncClient, MqttOptions};
        let mut o = MqttOptions::new("bench-controller", "127.0.0.1", broker.port);
        o.set_keep_alive(Duration::from_secs(10));
        let mut net = rumqttc::NetworkOptions::new();
        net.set_tcp_nodelay(true);
        o.set_network_options(net);
        let (client, mut ev) = AsyncClient::new(o, 64);
        rt.spawn(async move {
            loop {
                if ev.poll().await.is_err() {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        });
        std::thread::sleep(Duration::from_millis(300));
        while on.rx.try_recv().is_ok() {}
        for i in 0..(commands + 10) {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs();
            let token = jsonwebtoken::encode(
                &jsonwebtoken::Header::default(),
                &serde_json::json!({"aud": "bench-door", "act": "open", "iat": now, "exp": now + 60, "jti": format!("bench-{i}-{}", std::process::id())}),
                &jsonwebtoken::EncodingKey::from_secret(key.as_bytes()),
            )
            .unwrap();
            let t0 = Instant::now();
            client
                .try_publish(
                    "tiketo-gate/bench-door/cmd",
                    rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                    false,
                    token,
                )
                .unwrap();
            let t1 = on.relay_line(true, "no relay after a command");
            on.relay_line(false, "relay never off");
            if i >= 10 {
                lat.push((t1 - t0).as_secs_f64() * 1000.0);
            }
        }
    }
    println!(
        "{}",
        summary(
            &format!("command -> relay on ({commands} signed opens)"),
            lat
        )
    );
    println!(
        "resident memory with [mqtt] on: {} kB (peak {} kB); off, after its rounds: {} kB (peak {} kB)",
        proc_status(on.pid(), "VmRSS:"),
        proc_status(on.pid(), "VmHWM:"),
        off_rss.0,
        off_rss.1
    );
    drop(on);

    // 3. A backlog after an outage: the store holds `backlog` events when the daemon starts.
    let before = events.lock().unwrap().0;
    let rig = Rig::daemon(
        &sim,
        RigOpts {
            device: "bench-door",
            hid: false,
            policy: "reject",
            budget_ms: 5000,
            url: sim.url(),
            api_extra: mqtt_table.clone(),
            env: vec![],
        },
        |state| {
            let mut store = Store::open(&Store::path_in(state)).unwrap();
            store.keep_events(Some(100_000));
            for i in 0..backlog {
                store
                    .push_event(&format!("{{\"type\":\"door\",\"event\":\"opened\",\"id\":\"bench-{i}\",\"at\":\"2026-12-05T12:00:00.000Z\",\"device\":\"bench-door\"}}"))
                    .unwrap();
            }
        },
    );
    // Rig::daemon waited 800 ms for the start: counted.
    let t0 = Instant::now() - Duration::from_millis(800);
    let end = t0 + Duration::from_secs(300);
    loop {
        let (n, last) = *events.lock().unwrap();
        if n >= before + backlog {
            let took = last.unwrap() - t0;
            println!(
                "backlog: {backlog} stored events delivered in {:.2} s from the daemon's start ({:.0} events/s)",
                took.as_secs_f64(),
                backlog as f64 / took.as_secs_f64()
            );
            break;
        }
        assert!(Instant::now() < end, "backlog stalled at {}", n - before);
        std::thread::sleep(Duration::from_millis(5));
    }
    let path = Store::path_in(&rig.dir.path().join("state"));
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        let left = Store::open_existing(&path, false)
            .unwrap()
            .events_pending()
            .unwrap();
        if left == 0 {
            println!(
                "backlog: the store's copy empty {:.2} s after the start",
                (Instant::now() - t0).as_secs_f64()
            );
            break;
        }
        assert!(Instant::now() < end, "{left} events never deleted");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `--mode venue`: the figures of issue 21, against a mosquitto on loopback.
fn venue(rt: &tokio::runtime::Runtime) {
    use tiketo_gate::venue::ledger::PassRecord;
    use tiketo_gate::venue::seal::VenueKey;
    let doors = arg("--doors", 10) as usize;
    let rate = arg("--rate", 20);
    let secs = arg("--secs", 60);
    let scans = arg("--scans", 300) as usize;
    let rounds = arg("--rounds", 2) as usize;
    let total = (rate * secs) as usize;
    // A pass for every scan (none seen before): each scan is a lookup and an admission to share.
    let mut seed = tiketo_sim::Seed::demo();
    let template = seed.templates[0].id.clone();
    for i in 0..total + 100 {
        seed.passes.push(tiketo_sim::SeedPass {
            code: format!("VENUE-{i:06}"),
            id: format!("pass-venue-{i}"),
            project: "proj-main".into(),
            template: template.clone(),
            expires: None,
            voided: false,
            entries: None,
            scan_voided: false,
            parameters: None,
        });
    }
    let sim = rt
        .block_on(Sim::start(SimOptions {
            seed,
            ..SimOptions::default()
        }))
        .unwrap();
    let broker = Mosquitto::start();
    let secret = "bench-venue-secret-0123456789abcdef-0123";
    let key = VenueKey::from_text(secret).unwrap();
    let key_dir = tempfile::tempdir().unwrap();
    let key_file = key_dir.path().join("venue.key");
    std::fs::write(&key_file, secret).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let prefix = "tiketo-gate/venues/bench";
    let table = |venue: bool| {
        format!(
            "\n[mqtt]\nurl = \"mqtt://127.0.0.1:{}\"\n{}",
            broker.port,
            if venue {
                format!(
                    "venue = \"{prefix}\"\nvenue_key_file = \"{}\"\n",
                    key_file.display()
                )
            } else {
                String::new()
            }
        )
    };
    let names: Vec<String> = (0..=doors + 2).map(|i| format!("door-{i:02}")).collect();
    let rig = |name: &str, venue: bool| {
        Rig::daemon(
            &sim,
            RigOpts {
                device: name,
                hid: false,
                policy: "cache",
                budget_ms: 5000,
                url: sim.url(),
                api_extra: table(venue),
                env: vec![],
            },
            |_| {},
        )
    };
    // A subscriber with the key: when each code's admission first reaches it.
    let seen: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, Instant>>> =
        Default::default();
    let messages = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    {
        let (seen, messages) = (seen.clone(), messages.clone());
        let key = VenueKey::from_text(secret).unwrap();
        let filter = format!("{prefix}/p/+");
        subscribe(
            rt,
            broker.port,
            "bench-venue-watch",
            &filter,
            move |at, p| {
                messages.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let topic = String::from_utf8_lossy(&p.topic).into_owned();
                let Ok(plain) = key.open(&topic, &p.payload) else {
                    return;
                };
                let Ok(r) = serde_json::from_slice::<PassRecord>(&plain) else {
                    return;
                };
                if !r.admissions.is_empty() {
                    let address = topic.rsplit('/').next().unwrap_or("").to_owned();
                    seen.lock().unwrap().entry(address).or_insert(at);
                }
            },
        );
    }
    let mut rigs: Vec<Rig> = names[..doors].iter().map(|n| rig(n, true)).collect();
    std::thread::sleep(Duration::from_millis(500));
    let broker_cpu = |pid: u32| -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let f: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap()
            .split_whitespace()
            .collect();
        f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
    };
    let ticks = 100.0; // USER_HZ
    let cpu0 = broker_cpu(broker.child.id());
    println!(
        "venue: {doors} daemons on one mosquitto (loopback), {rate} scans/s across them for {secs} s ({total} scans, each a pass no door saw before)"
    );
    let mut written: Vec<(String, Instant)> = Vec::with_capacity(total);
    let t_start = Instant::now();
    for i in 0..total {
        let due = t_start + Duration::from_secs_f64(i as f64 / rate as f64);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let code = format!("VENUE-{i:06}");
        let r = &mut rigs[i % doors];
        r.master
            .write_all(format!("{code}\r\n").as_bytes())
            .unwrap();
        written.push((key.address(&code), Instant::now()));
        while r.rx.try_recv().is_ok() {}
    }
    let run = t_start.elapsed();
    // Every admission on the broker, and every door converged on every record.
    let end = Instant::now() + Duration::from_secs(60);
    while seen.lock().unwrap().len() < total && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    let cpu1 = broker_cpu(broker.child.id());
    let seen = seen.lock().unwrap().clone();
    let mut prop: Vec<f64> = written
        .iter()
        .filter_map(|(a, t)| seen.get(a).map(|s| (*s - *t).as_secs_f64() * 1000.0))
        .collect();
    println!(
        "admissions seen on the broker: {} of {total}; {} venue messages in all at the subscriber",
        prop.len(),
        messages.load(std::sync::atomic::Ordering::Relaxed)
    );
    prop.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "{}",
        tail_summary(
            "propagation (code written at a door -> its admission at a subscriber)",
            prop
        )
    );
    let stores: Vec<Store> = rigs
        .iter()
        .map(|r| Store::open_existing(&Store::path_in(&r.dir.path().join("state")), false).unwrap())
        .collect();
    let converge_start = Instant::now();
    let converged = loop {
        let differing = written
            .iter()
            .filter(|(a, _)| {
                let first = stores[0].venue_record_at(a).unwrap();
                first.is_none()
                    || stores[1..]
                        .iter()
                        .any(|s| s.venue_record_at(a).unwrap() != first)
            })
            .count();
        if differing == 0 || converge_start.elapsed() > Duration::from_secs(60) {
            break differing;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    println!(
        "converged: {} of {total} records identical at all {doors} doors ({:.1} s after the last scan)",
        total - converged,
        converge_start.elapsed().as_secs_f64()
    );
    println!(
        "broker (mosquitto): {:.2} s CPU over the {:.0} s run ({:.1} % of one core); resident {} kB (peak {} kB); scan pace {:.1}/s",
        (cpu1 - cpu0) as f64 / ticks,
        run.as_secs_f64(),
        (cpu1 - cpu0) as f64 / ticks / run.as_secs_f64() * 100.0,
        proc_status(broker.child.id(), "VmRSS:"),
        proc_status(broker.child.id(), "VmHWM:"),
        total as f64 / run.as_secs_f64()
    );
    let door_rss: Vec<u64> = rigs
        .iter()
        .map(|r| proc_status(r.pid(), "VmRSS:"))
        .collect();
    println!(
        "doors' resident memory: {}-{} kB",
        door_rss.iter().min().unwrap(),
        door_rss.iter().max().unwrap()
    );
    // A late joiner: a door started with an empty store learns the venue from the broker.
    let t0 = Instant::now();
    let late = rig(&names[doors], true);
    let late_store = Store::path_in(&late.dir.path().join("state"));
    let known_at = loop {
        let n = Store::open_existing(&late_store, false)
            .and_then(|s| s.venue_known())
            .unwrap_or(0);
        if n >= total as i64 {
            break Some(t0.elapsed());
        }
        if t0.elapsed() > Duration::from_secs(120) {
            println!("late joiner: only {n} of {total} records after 120 s");
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    if let Some(t) = known_at {
        println!(
            "late joiner: all {total} records in its store {:.2} s after its daemon was spawned (the rig's 0.8 s start wait included)",
            t.as_secs_f64()
        );
    }
    drop(late);
    drop(stores);
    drop(rigs);
    // Scan overhead with the venue on and off, alternating rounds.
    let mut on = rig(&names[doors + 1], true);
    let mut off = rig(&names[doors + 2], false);
    let (mut over_on, mut over_off) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        over_on.extend(measure(&mut on, &sim, scans).2);
        over_off.extend(measure(&mut off, &sim, scans).2);
    }
    println!("{}", tail_summary("daemon overhead, venue on ", over_on));
    println!("{}", tail_summary("daemon overhead, venue off", over_off));
}
