//! The chaos soak: the real daemon, tiketo-sim, two pseudo-terminal readers (an entry and an
//! exit, each with its own relay) and the `sim` outputs, under a driver that scans a mix of valid, invalid, repeated and garbage codes
//! while, at random, the API fails in each way tiketo-sim can fail, stops answering, comes
//! back, the reader is unplugged and plugged in again, and the daemon is killed with SIGKILL
//! and restarted. Bounded in time (`SOAK_SECS`, default 40) and loopback only. Afterwards:
//! - every scan the daemon admitted reached the fake API, by scanId, and nothing else did;
//! - no more relay pulses than admitted scans, and the relay was never on at a start;
//! - `PRAGMA integrity_check` was ok after every kill;
//! - memory did not grow without bound;
//! - the logs hold no token and no full pass code.
//!
//! `SOAK_SECS=600 cargo test --release --test soak -- --nocapture` is the long version.

mod common;

use std::time::{Duration, Instant};

use std::io::Write;

use common::{check_delivery, wait_until, Harness, Opts, Pty, Rng};
use tiketo_sim::{Fault, FaultRule};

fn rss_kb(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_soak() {
    let secs: u64 = std::env::var("SOAK_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    eprintln!("soak: {secs} s");
    let mut rng = Rng::from_clock("soak");
    let mut next = move |n: u64| rng.below(n);
    // Accept: every offline admission is a pending row the replay must deliver (the cache
    // policy has its own tests); the server then refuses the unknown and voided ones.
    let mut exit_pty = Pty::new();
    let mut h = Harness::start(Opts {
        policy: "accept",
        budget_ms: 250,
        debounce_ms: 100,
        relay_ms: 20,
        readers: format!(
            "[[readers]]\nname = \"in\"\npath = \"@LINK@\"\nbaud = 115200\ndebounce_ms = 100\nframe_timeout_ms = 200\n\n[[readers]]\nname = \"out\"\npath = \"{}\"\nbaud = 115200\ndirection = \"exit\"\ndebounce_ms = 100\nframe_timeout_ms = 200\noutputs = {{ relay = \"relay_exit\", red = \"red\", buzzer = \"buzzer\" }}\n",
            exit_pty.slave_path().display()
        ),
        outputs_extra: "relay_exit = { pin = 5, pulse_ms = 20 }\n".into(),
        ..Opts::default()
    })
    .await;
    assert!(wait_until(Duration::from_secs(10), || h
        .logs()
        .matches("reader connected")
        .count()
        >= 2));
    let codes = [
        "VALID-0001",
        "VALID-0002",
        "VALID-0003",
        "LOYAL-0001",
        "VOIDED-0001",
        "EXPIRED-0001",
        "OTHER-0001",
        "NOPE-0042",
        "ONCE-0001",
    ];
    let mut api_up = true;
    let mut plugged = true;
    let (mut kills, mut faults, mut unplugs, mut scans) = (0, 0, 0, 0);
    let mut rss: Vec<u64> = Vec::new();
    let mut starts: Vec<usize> = vec![0];
    let begin = Instant::now();
    while begin.elapsed() < Duration::from_secs(secs) {
        // A scan, a repeat, or garbage.
        if plugged {
            match next(10) {
                0 => h.write(&[0xff, 0x00, 0x9f, b'\r', b'\n']),
                1 => h.write(&vec![b'Z'; 700]),
                2 => h.write(b"\r\n"),
                _ => {
                    let code = codes[next(codes.len() as u64) as usize];
                    let line = format!("{code}\r\n");
                    // One scan in three at the exit reader (which is never unplugged).
                    if next(3) == 0 {
                        exit_pty.master.write_all(line.as_bytes()).unwrap();
                    } else {
                        h.write(line.as_bytes());
                        if next(4) == 0 {
                            h.write(format!("{code}\n").as_bytes()); // held in front of it
                        }
                    }
                    scans += 1;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20 + next(40)));
        match next(150) {
            0..=2 => {
                faults += 1;
                let fault = match next(6) {
                    0 => Fault::Status {
                        status: 500,
                        retry_after: None,
                    },
                    1 => Fault::Status {
                        status: 503,
                        retry_after: Some(1),
                    },
                    2 => Fault::Status {
                        status: 429,
                        retry_after: Some(1),
                    },
                    3 => Fault::GraphqlError {
                        error_type: "Lambda:ExecutionTimeoutException".into(),
                        message: "slow".into(),
                    },
                    4 => Fault::GraphqlError {
                        error_type: "ThrottlingException".into(),
                        message: "slow down".into(),
                    },
                    _ => Fault::Hang,
                };
                let times = if fault == Fault::Hang {
                    1
                } else {
                    1 + next(5) as u32
                };
                h.sim.push_fault(FaultRule::times(fault, times));
            }
            3 => h.sim.set_delay(Duration::from_millis(next(100))),
            4 => {
                if api_up {
                    h.sim.stop().await;
                } else {
                    h.sim.restart().await.unwrap();
                }
                api_up = !api_up;
            }
            5 if plugged => {
                h.unplug();
                plugged = false;
                unplugs += 1;
            }
            6 if !plugged => {
                h.plug();
                plugged = true;
            }
            7 => {
                if let Some(pid) = h.child.as_ref().map(|c| c.id()) {
                    if let Some(kb) = rss_kb(pid) {
                        rss.push(kb);
                    }
                }
                h.kill9();
                kills += 1;
                assert_eq!(
                    h.store().integrity_check().unwrap(),
                    "ok",
                    "after kill {kills}"
                );
                if !plugged {
                    h.plug();
                    plugged = true;
                }
                starts.push(h.outputs().len());
                h.restart_daemon();
            }
            _ => {}
        }
    }
    // Calm: the API answers, the reader is in, the queue drains.
    h.sim.clear_faults();
    h.sim.set_delay(Duration::ZERO);
    if !api_up {
        h.sim.restart().await.unwrap();
    }
    if !plugged {
        h.plug();
    }
    assert!(
        wait_until(Duration::from_secs(120), || h.status_json()["pending"] == 0),
        "never drained: {}",
        h.status_json()
    );
    if let Some(kb) = h.child.as_ref().and_then(|c| rss_kb(c.id())) {
        rss.push(kb);
    }

    let d = check_delivery(&h, &["NotFound", "voided", "NoEntriesLeft"]);
    // Relay: never more pulses than admissions; never on at a start.
    let outs = h.outputs();
    let relay_on = outs
        .iter()
        .filter(|c| (c.output == "relay" || c.output == "relay_exit") && c.on)
        .count();
    assert!(
        relay_on <= d.admitted,
        "{relay_on} relay pulses for {} admitted scans",
        d.admitted
    );
    for &at in &starts {
        for relay in ["relay", "relay_exit"] {
            let first = outs[at..]
                .iter()
                .find(|c| c.output == relay)
                .expect("a start writes both relays");
            assert!(!first.on, "{relay} was on at a start");
        }
    }
    let exits = h
        .sim
        .scan_events()
        .iter()
        .filter(|e| e.data["direction"] == "exit")
        .count();
    assert!(
        exits > 0 || scans < 30,
        "no exit reached the API in {scans} scans"
    );
    // Memory: bounded (the store is on disk; the daemon keeps little in memory).
    let max_rss = rss.iter().copied().max().unwrap_or(0);
    assert!(max_rss < 64 * 1024, "RSS reached {max_rss} kB");
    h.check_invariants();
    let mut reasons: std::collections::BTreeMap<String, usize> = Default::default();
    for l in h.scan_lines() {
        let key = format!(
            "{}/{}",
            common::field(&l, "reason").unwrap_or("?"),
            common::field(&l, "mode").unwrap_or("?")
        );
        *reasons.entry(key).or_default() += 1;
    }
    eprintln!("soak: decisions {reasons:?}");
    if std::env::var("SOAK_LOG").is_ok() {
        eprintln!("{}", h.logs());
    }
    eprintln!(
        "soak: {scans} scans, {} admitted ({} dead letters), {} received, {} duplicates, {kills} kills, {faults} faults, {unplugs} unplugs, RSS max {} kB, {} s",
        d.admitted,
        d.dead,
        d.received,
        d.duplicates,
        max_rss,
        begin.elapsed().as_secs()
    );
}
