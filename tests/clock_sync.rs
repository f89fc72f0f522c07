//! The clock counts as synced by the kernel's own word (`adjtimex`: what `timedatectl` shows as
//! "System clock synchronized"), which every NTP daemon that disciplines the clock sets
//! (timesyncd, chrony, ntpsec, gpsd through chrony), and by timesyncd's file as a second source.
//!
//! This test sets the kernel's sync state itself (`adjtimex` with `ADJ_STATUS | ADJ_MAXERROR`,
//! as an NTP daemon does): it needs `CAP_SYS_TIME` (root on a machine or VM of its own; CI runs
//! as root and requires it with TIKETO_REQUIRE_CLOCK_CONTROL=1). It is the only test in this
//! binary, and cargo runs test binaries one after another, so no other test sees the change;
//! the state is put back as it was when the test ends, however it ends. Only the kernel's sync
//! bookkeeping is touched, never the time.

// rtime-clock builds for 64-bit targets only (Cargo.toml).
#![cfg(target_pointer_width = "64")]

mod common;

use std::time::Duration;

use common::{field, free_port, http_get, wait_until, Harness, Opts};

const ADJ_MAXERROR: u32 = 0x0004;
const ADJ_STATUS: u32 = 0x0010;
const STA_UNSYNC: i32 = 0x0040;

fn read_kernel() -> (i32, i64) {
    let mut tx = rtime_clock::adjtime::Timex::new();
    rtime_clock::adjtime::adjtimex(&mut tx).expect("adjtimex read");
    (tx.0.status, tx.0.maxerror)
}

fn write_kernel(status: i32, maxerror_us: i64) -> std::io::Result<()> {
    let mut tx = rtime_clock::adjtime::Timex::new();
    tx.0.modes = ADJ_STATUS | ADJ_MAXERROR;
    tx.0.status = status;
    tx.0.maxerror = maxerror_us as _;
    rtime_clock::adjtime::adjtimex(&mut tx).map(|_| ())
}

/// As an NTP daemon leaves it after an update, or as a board boots.
fn kernel_synced(synced: bool) {
    if synced {
        write_kernel(0, 1_500).unwrap();
    } else {
        write_kernel(STA_UNSYNC, 16_000_000).unwrap();
    }
}

/// Puts the kernel's state (and timesyncd's file, if the test made it) back.
struct Restore {
    status: i32,
    maxerror_us: i64,
    made_file: bool,
}

impl Drop for Restore {
    fn drop(&mut self) {
        let _ = write_kernel(self.status, self.maxerror_us);
        if self.made_file {
            let _ = std::fs::remove_file(tiketo_gate::clock::TIMESYNCD_FILE);
        }
    }
}

fn scan_event_synced(h: &Harness, n: usize) -> bool {
    assert!(
        wait_until(Duration::from_secs(10), || h.sim.scan_events().len() >= n),
        "{}",
        h.logs()
    );
    h.sim.scan_events()[n - 1].data["clockSynced"]
        .as_bool()
        .expect("clockSynced")
}

async fn metric(port: u16) -> String {
    let (_, text) = http_get(port, "/metrics").await;
    text.lines()
        .find(|l| l.starts_with("tiketo_gate_clock_synced "))
        .unwrap_or("")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kernel_says_whether_the_clock_is_synced_whoever_disciplines_it() {
    let (status, maxerror_us) = read_kernel();
    if let Err(e) = write_kernel(status, maxerror_us) {
        assert!(
            std::env::var_os("TIKETO_REQUIRE_CLOCK_CONTROL").is_none(),
            "cannot set the kernel's clock state: {e}"
        );
        eprintln!("skipped: setting the kernel's clock state needs CAP_SYS_TIME ({e})");
        return;
    }
    let file = std::path::Path::new(tiketo_gate::clock::TIMESYNCD_FILE);
    let mut restore = Restore {
        status,
        maxerror_us,
        made_file: false,
    };
    assert!(
        !file.exists(),
        "systemd-timesyncd's file exists here: this test needs a machine whose clock it may mark"
    );

    // Closed today: kept only while the clock is synced (default rules.unsynced_clock:
    // ignore_hours).
    let dates = common::dates_around_today();
    let rules: &'static str = Box::leak(format!("closed_dates = [{dates}]").into_boxed_str());
    let port = free_port();
    let mut h = Harness::start(Opts {
        rules,
        tail: format!("[http]\nlisten = \"127.0.0.1:{port}\"\n"),
        ..Opts::default()
    })
    .await;

    // Nothing disciplines the clock (how a board boots).
    kernel_synced(false);
    assert!(!tiketo_gate::clock::clock_synced());
    h.write(b"VALID-0001\r\n");
    let line = h.wait_scan(1);
    assert_eq!(field(&line, "verdict"), Some("accept"), "{line}");
    assert!(!scan_event_synced(&h, 1));
    let st = h.status_json();
    assert_eq!(st["clock_synced"], false, "{st}");
    assert!(st["clock_sync_source"].is_null(), "{st}");
    assert_eq!(metric(port).await, "tiketo_gate_clock_synced 0");

    // An NTP daemon (chrony, ntpsec, timesyncd: the kernel does not say which) synced it.
    kernel_synced(true);
    let st = h.status_json();
    assert_eq!(st["clock_synced"], true, "{st}");
    assert_eq!(st["clock_sync_source"], "kernel", "{st}");
    assert_eq!(st["opening_hours"][0]["open"], false, "{st}");
    assert_eq!(metric(port).await, "tiketo_gate_clock_synced 1");
    let text = String::from_utf8_lossy(&h.cli(&["status"]).stdout).into_owned();
    assert!(
        text.contains("clock synced:  yes (the kernel: an NTP daemon disciplines it)"),
        "{text}"
    );
    h.write(b"VALID-0002\r\n");
    let line = h.wait_scan(2);
    assert_eq!(field(&line, "reason"), Some("outside_hours"), "{line}");

    // chrony without rtcsync keeps STA_UNSYNC set while its clock is fine: synced all the same.
    write_kernel(STA_UNSYNC, 2_000).unwrap();
    assert!(tiketo_gate::clock::clock_synced());
    assert_eq!(h.status_json()["clock_sync_source"], "kernel");

    // The kernel says not synced, timesyncd's file says it is: the second source.
    kernel_synced(false);
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(file, b"").unwrap();
    restore.made_file = true;
    let st = h.status_json();
    assert_eq!(st["clock_synced"], true, "{st}");
    assert_eq!(st["clock_sync_source"], "timesyncd", "{st}");
    h.write(b"VALID-0003\r\n");
    let line = h.wait_scan(3);
    assert_eq!(field(&line, "reason"), Some("outside_hours"), "{line}");

    // Neither: the hours are ignored again and the scan event says the clock was not synced.
    std::fs::remove_file(file).unwrap();
    restore.made_file = false;
    h.write(b"VALID-0003\r\n");
    let line = h.wait_scan(4);
    assert_eq!(field(&line, "verdict"), Some("accept"), "{line}");
    assert!(!scan_event_synced(&h, 2));
    drop(restore);
    h.check_invariants();
}
