//! Power cuts between any two writes. The daemon runs under strace, which kills it at its N-th
//! `pwrite64` (SQLite's writes), for many N, while scans keep arriving offline (accept policy:
//! every admission is a pending row, the only record of that guest). After each cut, what a
//! power cut would also lose is thrown away: the WAL is cut back to the length it had at its
//! last `fdatasync`. Then the store must open, pass `PRAGMA integrity_check`, and hold at least
//! as many admitted scans as there were relay pulses: every scan whose feedback was given.

mod common;

use std::time::{Duration, Instant};

use common::{wait_until, Harness, Opts};

/// The WAL's durable length: the furthest byte written to it before its last fdatasync/fsync.
fn durable_wal_len(strace_log: &str) -> Option<u64> {
    let mut written: u64 = 0;
    let mut durable: Option<u64> = None;
    for line in strace_log.lines() {
        let Some(wal_at) = line.find("-wal>") else {
            continue;
        };
        let _ = wal_at;
        if line.contains("pwrite64(") && !line.contains("<unfinished") && !line.contains("killed") {
            // pwrite64(5</path/x.db-wal>, "..."..., 4120, 32) = 4120
            let args = line.rsplit_once(") = ").map(|(a, _)| a).unwrap_or(line);
            let mut nums = args.rsplit(", ");
            let offset: u64 = nums.next().and_then(|v| v.trim().parse().ok()).unwrap_or(0);
            let count: u64 = nums.next().and_then(|v| v.trim().parse().ok()).unwrap_or(0);
            if line
                .rsplit_once(") = ")
                .is_some_and(|(_, r)| r.trim().starts_with(|c: char| c.is_ascii_digit()))
            {
                written = written.max(offset + count);
            }
        } else if (line.contains("fdatasync(") || line.contains("fsync(")) && line.contains(") = 0")
        {
            durable = Some(written);
        }
    }
    durable
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scan_with_feedback_survives_a_cut_between_any_two_writes() {
    assert!(
        std::process::Command::new("strace")
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success()),
        "strace is needed (apt-get install strace)"
    );
    let cuts: u32 = std::env::var("POWER_CUTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let mut h = Harness::start(Opts {
        policy: "accept",
        budget_ms: 200,
        relay_ms: 5,
        ..Opts::default()
    })
    .await;
    h.sim.stop().await;
    h.kill9();
    let state = h.dir.path().join("state");
    let db = state.join("tiketo-gate.db");
    let wal = state.join("tiketo-gate.db-wal");
    let strace_log = h.dir.path().join("strace.log");
    let mut relay_pulses = 0usize;
    let mut seen_outputs = 0usize;
    let started = Instant::now();
    for cut in 0..cuts {
        // Spread the cut over start-up and the first hundred or so scans.
        let n = 1 + (cut * 37 + cut * cut) % 400;
        h.wrapper = vec![
            "strace".into(),
            "-f".into(),
            "-y".into(),
            "-o".into(),
            strace_log.display().to_string(),
            "-e".into(),
            "trace=pwrite64,fdatasync,fsync".into(),
            "-e".into(),
            format!("inject=pwrite64:signal=SIGKILL:when={n}"),
        ];
        let connected = h.logs().matches("reader connected").count();
        h.spawn_daemon();
        // (A cut may come during start-up, before the reader is even open.)
        assert!(wait_until(Duration::from_secs(20), || {
            h.logs().matches("reader connected").count() > connected
                || h.child.as_mut().unwrap().try_wait().unwrap().is_some()
        }));
        // Scans until the cut.
        let mut i = 0;
        while h.child.as_mut().unwrap().try_wait().unwrap().is_none() {
            if i < 200 {
                h.write(format!("CUT-{cut:03}-{i:04}\r\n").as_bytes());
                i += 1;
            }
            std::thread::sleep(Duration::from_millis(15));
            assert!(
                started.elapsed() < Duration::from_secs(600),
                "the cut never came (n={n})"
            );
        }
        h.child = None;
        // Throw away what was written to the WAL after its last sync, as a power cut would.
        let log = std::fs::read_to_string(&strace_log).unwrap_or_default();
        if let (Some(len), Ok(meta)) = (durable_wal_len(&log), std::fs::metadata(&wal)) {
            if meta.len() > len {
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&wal)
                    .unwrap()
                    .set_len(len)
                    .unwrap();
            }
        }
        let outs = h.outputs();
        relay_pulses += outs[seen_outputs..]
            .iter()
            .filter(|c| c.output == "relay" && c.on)
            .count();
        seen_outputs = outs.len();
        // Reopen as the daemon would, and check.
        let store = tiketo_gate::store::Store::open(&db).expect("the store opens after the cut");
        assert_eq!(
            store.integrity_check().unwrap(),
            "ok",
            "after cut {cut} (n={n})"
        );
        let admitted = store.all_scan_ids("pending").unwrap().len();
        assert!(
            admitted >= relay_pulses,
            "cut {cut} (n={n}): {relay_pulses} relay pulses but only {admitted} admitted scans in the store"
        );
        drop(store);
    }
    eprintln!("power cuts: {cuts} cuts, {relay_pulses} relay pulses, all in the store");
    assert!(
        relay_pulses as u32 >= cuts,
        "only {relay_pulses} scans admitted over {cuts} cuts: the cuts came too early to test much"
    );
}
