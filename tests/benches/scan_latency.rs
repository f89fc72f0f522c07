//! Whole-daemon figures: the real daemon with its serial reader on a pseudo-terminal,
//! tiketo-sim on loopback, the `sim` outputs on a pipe.
//!
//! `cargo bench --bench scan_latency -- --mode online [--scans 200] [--delay-ms 0]`
//!   code's last byte -> relay on over N online scans; beside it the fake API's own time for
//!   the two requests of each scan, and the daemon's overhead (the difference).
//! `cargo bench --bench scan_latency -- --mode offline [--scans 200]`
//!   the same with the API stopped, after the daemon switched offline (durable write included).
//! `cargo bench --bench scan_latency -- --mode drain [--events 10000] [--delay-ms 50]`
//!   time for the replay to deliver N pending scan events, and live scans during the drain.
//! `cargo bench --bench scan_latency -- --mode write [--scans 2000]`
//!   the durable write of one scan (one fsync'd SQLite transaction) in the state directory.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
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
        "{name:<34} median {:>8.3} ms   p99 {:>8.3} ms   max {:>8.3} ms",
        percentile(&v, 0.5),
        percentile(&v, 0.99),
        v[v.len() - 1]
    )
}

struct Rig {
    _dir: tempfile::TempDir,
    state: PathBuf,
    master: std::fs::File,
    child: Child,
    rx: mpsc::Receiver<(Instant, String)>,
}

impl Rig {
    fn start(
        sim: &Sim,
        policy: &str,
        budget_ms: u64,
        prepare: impl FnOnce(&std::path::Path),
    ) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        prepare(&state);
        use rustix::pty::{grantpt, openpt, ptsname, unlockpt, OpenptFlags};
        let master =
            openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC).unwrap();
        grantpt(&master).unwrap();
        unlockpt(&master).unwrap();
        let slave = PathBuf::from(
            ptsname(&master, Vec::new())
                .unwrap()
                .to_string_lossy()
                .into_owned(),
        );
        let cfg = dir.path().join("config.toml");
        std::fs::write(
            &cfg,
            format!(
                r#"[device]
name = "bench-door"
state_dir = "{state}"
[api]
url = "{url}"
token_file = "{dir}/token"
timeout_ms = {budget_ms}
[reader]
kind = "serial"
path = "{slave}"
baud = 115200
debounce_ms = 0
[rules]
projects = ["proj-main"]
[offline]
policy = "{policy}"
[outputs]
backend = "sim"
sim_log = "-"
relay = {{ pin = 17, pulse_ms = 2 }}
"#,
                state = state.display(),
                dir = dir.path().display(),
                url = sim.url(),
                slave = slave.display()
            ),
        )
        .unwrap();
        std::fs::write(dir.path().join("token"), sim.token()).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_tiketo-gate"))
            .args(["run", "--config"])
            .arg(&cfg)
            .env("TIKETO_GATE_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
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
        std::thread::sleep(Duration::from_millis(500));
        while rx.try_recv().is_ok() {}
        Rig {
            _dir: dir,
            state,
            master: std::fs::File::from(master),
            child,
            rx,
        }
    }

    /// Writes a code; returns the time from its last byte to the relay's "on" line (None when
    /// the scan was rejected: red instead).
    fn scan(&mut self, code: &str) -> Option<f64> {
        self.master
            .write_all(format!("{code}\r\n").as_bytes())
            .unwrap();
        let t0 = Instant::now();
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
            loop {
                let (_, line) = self
                    .rx
                    .recv_timeout(Duration::from_secs(10))
                    .expect("relay never off");
                if line.contains("\"relay\"") && line.contains("\"on\":false") {
                    break;
                }
            }
        }
        t1.map(|t| (t - t0).as_secs_f64() * 1000.0)
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn online(rt: &tokio::runtime::Runtime) {
    let scans = arg("--scans", 200) as usize;
    let delay_ms = arg("--delay-ms", 0);
    let sim = rt.block_on(Sim::start(SimOptions::default())).unwrap();
    sim.set_delay(Duration::from_millis(delay_ms));
    let mut rig = Rig::start(&sim, "reject", 5000, |_| {});
    let codes = ["VALID-0001", "VALID-0002", "VALID-0003"];
    let warmup = 20;
    let (mut latency, mut api, mut overhead) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..(warmup + scans) {
        let before = sim.requests().len();
        let l = rig.scan(codes[i % codes.len()]).expect("accepted");
        let reqs = sim.requests();
        let handled: u64 = reqs[before..]
            .iter()
            .filter(|r| r.operation_name.as_deref() != Some("Warmup"))
            .map(|r| r.handling_us + r.delay_us)
            .sum();
        if i >= warmup {
            let a = handled as f64 / 1000.0;
            latency.push(l);
            api.push(a);
            overhead.push(l - a);
        }
    }
    println!("online: {scans} scans (after {warmup} warm-up), tiketo-sim delay {delay_ms} ms per response");
    println!("{}", summary("last byte -> relay on", latency));
    println!("{}", summary("fake API time (2 requests)", api));
    println!("{}", summary("daemon overhead", overhead));
}

fn offline(rt: &tokio::runtime::Runtime) {
    let scans = arg("--scans", 200) as usize;
    let mut sim = rt.block_on(Sim::start(SimOptions::default())).unwrap();
    let mut rig = Rig::start(&sim, "accept", 800, |_| {});
    rt.block_on(sim.stop());
    // Two failures switch the daemon offline.
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
    println!("{}", summary("last byte -> relay on", latency));
}

fn drain(rt: &tokio::runtime::Runtime) {
    let events = arg("--events", 10_000) as usize;
    let delay_ms = arg("--delay-ms", 50);
    let sim = rt.block_on(Sim::start(SimOptions::default())).unwrap();
    sim.set_delay(Duration::from_millis(delay_ms));
    let codes = ["VALID-0001", "VALID-0002", "VALID-0003"];
    let mut rig = Rig::start(&sim, "accept", 5000, |state| {
        let mut store = Store::open(&Store::path_in(state)).unwrap();
        for i in 0..events {
            store
                .insert_scan(
                    &NewScan {
                        scan_id: uuid::Uuid::new_v4(),
                        code: codes[i % 3].into(),
                        verdict: Verdict::Accept,
                        reason: Reason::OfflinePolicy,
                        online: false,
                        scanned_at: time::OffsetDateTime::now_utc(),
                        boot_id: "bench".into(),
                        mono_ms: i as u64,
                        clock_synced: true,
                        device: "bench-door".into(),
                        reward_points: None,
                        pending: true,
                    },
                    false,
                )
                .unwrap();
        }
    });
    // Rig::start slept 500 ms: the drain began when the daemon started.
    let t0 = Instant::now() - Duration::from_millis(500);
    let mut live = Vec::new();
    let mut live_api = Vec::new();
    while sim.scan_event_count() < events {
        if t0.elapsed() > Duration::from_secs(600) {
            panic!("drain stalled at {}", sim.scan_event_count());
        }
        if live.len() < 20 {
            let before = sim.requests().len();
            if let Some(l) = rig.scan("VALID-0002") {
                let reqs = sim.requests();
                let api: u64 = reqs[before..]
                    .iter()
                    .filter(|r| {
                        r.root_fields.iter().any(|f| f == "passByScanCode")
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
        "drain: {events} pending scan events delivered in {:.2} s ({replays} requests, tiketo-sim delay {delay_ms} ms per response)",
        took.as_secs_f64()
    );
    let overhead: Vec<f64> = live.iter().zip(&live_api).map(|(l, a)| l - a).collect();
    println!("{}", summary("live scans during the drain", live));
    println!("{}", summary("their fake API time", live_api));
    println!("{}", summary("their daemon overhead", overhead));
    let _ = rig.state.clone();
}

fn write() {
    let n = arg("--scans", 2000) as usize;
    let dir =
        tempfile::tempdir_in(std::env::var("TMPDIR").unwrap_or_else(|_| "target".into())).unwrap();
    let mut store = Store::open(&dir.path().join("bench.db")).unwrap();
    let mut times = Vec::new();
    for i in 0..n {
        let scan = NewScan {
            scan_id: uuid::Uuid::new_v4(),
            code: format!("CODE-{i:06}"),
            verdict: Verdict::Accept,
            reason: Reason::OfflinePolicy,
            online: false,
            scanned_at: time::OffsetDateTime::now_utc(),
            boot_id: "bench".into(),
            mono_ms: i as u64,
            clock_synced: true,
            device: "bench-door".into(),
            reward_points: None,
            pending: true,
        };
        let t = Instant::now();
        store.insert_scan(&scan, true).unwrap();
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    println!(
        "durable write of one scan (WAL, synchronous=FULL, in {}): {n} writes",
        dir.path().display()
    );
    println!("{}", summary("insert + commit (fsync)", times));
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    match arg_str("--mode", "online").as_str() {
        "online" => online(&rt),
        "offline" => offline(&rt),
        "drain" => drain(&rt),
        "write" => write(),
        other => panic!("unknown --mode {other}"),
    }
}
