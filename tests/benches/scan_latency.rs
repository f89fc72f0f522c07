//! Scan latency of the whole daemon: from the code's last byte written to the
//! pseudo-terminal to the relay's "on" line from the `sim` outputs, over N online scans
//! against tiketo-sim on loopback (answering at once, or after `--delay-ms`). Beside it: the
//! fake API's own handling time of the two requests of each scan, and the daemon's overhead
//! (latency minus that handling time).
//!
//! `cargo bench --bench scan_latency -- [--scans 200] [--delay-ms 0]`

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tiketo_sim::{Sim, SimOptions};

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
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

fn main() {
    let scans = arg("--scans", 200) as usize;
    let delay_ms = arg("--delay-ms", 0);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let sim = rt.block_on(Sim::start(SimOptions::default())).unwrap();
    sim.set_delay(Duration::from_millis(delay_ms));

    let dir = tempfile::tempdir().unwrap();
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
    let mut master = std::fs::File::from(master);

    let cfg = dir.path().join("config.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"[device]
name = "bench-door"
state_dir = "{dir}/state"
[api]
url = "{url}"
token_file = "{dir}/token"
timeout_ms = 5000
[reader]
kind = "serial"
path = "{slave}"
baud = 115200
debounce_ms = 0
[rules]
projects = ["proj-main"]
[offline]
policy = "reject"
[outputs]
backend = "sim"
sim_log = "-"
relay = {{ pin = 17, pulse_ms = 2 }}
"#,
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
    // Wait for the safe-state lines and for the reader to be up (its first code goes through).
    std::thread::sleep(Duration::from_millis(500));
    while rx.try_recv().is_ok() {}

    let codes = ["VALID-0001", "VALID-0002", "VALID-0003"];
    let warmup = 20;
    let mut latency = Vec::new();
    let mut api = Vec::new();
    let mut overhead = Vec::new();
    for i in 0..(warmup + scans) {
        let before = sim.requests().len();
        let code = codes[i % codes.len()];
        master.write_all(format!("{code}\r\n").as_bytes()).unwrap();
        let t0 = Instant::now();
        let t1 = loop {
            let (t, line) = rx
                .recv_timeout(Duration::from_secs(10))
                .expect("relay never switched on");
            if line.contains("\"relay\"") && line.contains("\"on\":true") {
                break t;
            }
        };
        // Let the 2 ms pulse end so the next accept switches the relay on again.
        loop {
            let (_, line) = rx
                .recv_timeout(Duration::from_secs(10))
                .expect("relay never switched off");
            if line.contains("\"relay\"") && line.contains("\"on\":false") {
                break;
            }
        }
        let reqs = sim.requests();
        let handled: u64 = reqs[before..]
            .iter()
            .filter(|r| r.operation_name.as_deref() != Some("Warmup"))
            .map(|r| r.handling_us + r.delay_us)
            .sum();
        if i >= warmup {
            let l = (t1 - t0).as_secs_f64() * 1000.0;
            let a = handled as f64 / 1000.0;
            latency.push(l);
            api.push(a);
            overhead.push(l - a);
        }
    }
    let _ = child.kill();
    let _ = child.wait();

    println!("scan latency, {scans} online scans (after {warmup} warm-up), tiketo-sim delay {delay_ms} ms per response");
    println!("{}", summary("last byte -> relay on", latency));
    println!("{}", summary("fake API time (2 requests)", api));
    println!("{}", summary("daemon overhead", overhead));
}
