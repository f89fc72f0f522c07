//! End to end with several readers and the door's inputs: two serial readers on two
//! pseudo-terminal pairs (entry and exit, each with its own relay), a keyboard-mode reader fed
//! raw evdev records through a FIFO (this machine has no uinput), and the exit button and
//! door sensor through the `sim` backend's input FIFO.

mod common;

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use common::{field, wait_until, Harness, Opts, Pty};
use tiketo_gate::hid::{keystrokes, record, Layout};

const T: Duration = Duration::from_secs(10);

/// The outputs of a second lane: its own relay and LEDs, the buzzer shared.
const EXIT_OUTPUTS: &str = "relay_exit = { pin = 5, pulse_ms = 300 }\ngreen_exit = { pin = 6, pulse_ms = 200 }\nred_exit = { pin = 13, pulse_ms = 200 }\n";

fn two_lanes(exit_path: &Path, debounce_ms: u64) -> String {
    format!(
        r#"[[readers]]
name = "entrance"
kind = "serial"
path = "@LINK@"
baud = 115200
debounce_ms = {debounce_ms}
frame_timeout_ms = 200

[[readers]]
name = "way-out"
kind = "serial"
path = "{exit}"
baud = 115200
direction = "exit"
debounce_ms = {debounce_ms}
frame_timeout_ms = 200
outputs = {{ relay = "relay_exit", green = "green_exit", red = "red_exit", buzzer = "buzzer" }}
"#,
        exit = exit_path.display()
    )
}

/// Starts the daemon with both lanes' readers and waits until both are connected.
async fn start_two_lanes(opts: Opts) -> Harness {
    let h = Harness::start(opts).await;
    assert!(
        wait_until(T, || h.logs().matches("reader connected").count() >= 2),
        "{}",
        h.logs()
    );
    h
}

fn write_to(pty: &mut Pty, bytes: &[u8]) {
    pty.master.write_all(bytes).unwrap();
    pty.master.flush().unwrap();
}

fn scan_of<'a>(h: &Harness, lines: &'a [String], reader: &str) -> Option<&'a String> {
    let _ = h;
    lines.iter().find(|l| field(l, "reader") == Some(reader))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_serial_readers_decide_at_once_and_drive_their_own_relays() {
    let mut exit_pty = Pty::new();
    let port = common::free_port();
    let opts = Opts {
        budget_ms: 3000,
        readers: two_lanes(&exit_pty.slave_path(), 5000),
        outputs_extra: EXIT_OUTPUTS.into(),
        tail: format!("[http]\nlisten = \"127.0.0.1:{port}\"\n"),
        ..Opts::default()
    };
    let mut h = start_two_lanes(opts).await;
    // Every lookup takes 400 ms: one after the other, the second lookup would reach the
    // API only after the first scan's lookup and record (800 ms).
    h.sim.set_delay(Duration::from_millis(400));
    h.write(b"VALID-0001\r\n");
    write_to(&mut exit_pty, b"VALID-0002\r\n");
    assert!(wait_until(T, || h.scan_lines().len() >= 2), "{}", h.logs());
    let lines = h.scan_lines();
    let entry = scan_of(&h, &lines, "entrance").expect("entrance scan");
    let exit = scan_of(&h, &lines, "way-out").expect("exit scan");
    for l in [entry, exit] {
        assert_eq!(field(l, "verdict"), Some("accept"), "{l}");
        assert_eq!(field(l, "mode"), Some("online"), "{l}");
    }
    assert_eq!(field(entry, "direction"), Some("entry"));
    assert_eq!(field(exit, "direction"), Some("exit"));
    assert_eq!(field(entry, "code"), Some("…0001"));
    assert_eq!(field(exit, "code"), Some("…0002"));

    // Both lookups were at the API together (decided concurrently, not queued).
    let lookups = h.sim.requests_for("passByScanCode");
    assert_eq!(lookups.len(), 2);
    let gap = lookups[1]
        .received_at_ms
        .abs_diff(lookups[0].received_at_ms);
    assert!(
        gap < 400,
        "the second lookup waited for the first one ({gap} ms apart)"
    );

    // Each lane drove its own relay and green LED, once.
    assert!(h.wait_switched("relay", false, 2, T));
    assert!(h.wait_switched("relay_exit", false, 2, T));
    assert_eq!(h.changes_of("relay"), [false, true, false]);
    assert_eq!(h.changes_of("relay_exit"), [false, true, false]);
    assert_eq!(h.changes_of("green"), [false, true, false]);
    assert_eq!(h.changes_of("green_exit"), [false, true, false]);

    // The direction reached the server in ScanEventInput.data.
    let events = h.sim.scan_events();
    let dir_of = |code: &str| {
        events
            .iter()
            .find(|e| e.code == code)
            .map(|e| (e.data["direction"].clone(), e.data["reader"].clone()))
    };
    assert_eq!(
        dir_of("VALID-0001"),
        Some(("entry".into(), "entrance".into()))
    );
    assert_eq!(
        dir_of("VALID-0002"),
        Some(("exit".into(), "way-out".into()))
    );

    // Debounce is per reader: the same pass at the other reader is a new scan, a repeat at
    // the same reader is not.
    h.sim.set_delay(Duration::ZERO);
    write_to(&mut exit_pty, b"VALID-0001\r\n");
    h.write(b"VALID-0001\r\n");
    assert!(wait_until(T, || h.scan_lines().len() >= 3));
    std::thread::sleep(Duration::from_millis(300));
    let lines = h.scan_lines();
    assert_eq!(lines.len(), 3, "{lines:#?}");
    assert_eq!(field(&lines[2], "reader"), Some("way-out"));

    // A rejected scan at the exit lights the exit lane's red LED, not the entrance's.
    write_to(&mut exit_pty, b"VOIDED-0001\r\n");
    assert!(h.wait_switched("red_exit", true, 1, T), "{}", h.logs());
    assert!(!h.changes_of("red").contains(&true));

    // Status names both readers; unplugging one says which.
    let st = h.status_json();
    let readers = st["readers"].as_array().unwrap();
    assert_eq!(readers.len(), 2, "{st}");
    assert_eq!(readers[1]["name"], "way-out");
    assert_eq!(readers[1]["direction"], "exit");
    drop(exit_pty);
    assert!(
        wait_until(T, || {
            h.status_json()["readers"][1]["connected"] == serde_json::json!(false)
        }),
        "{}",
        h.logs()
    );
    let out = h.cli(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("way-out (exit): NOT CONNECTED"), "{text}");
    assert!(text.contains("entrance (entry): connected"), "{text}");
    let (code, body) = common::http_get(port, "/healthz").await;
    assert_eq!(code, 503);
    assert_eq!(body, "reader: not connected (retrying): way-out\n");
    let (_, metrics) = common::http_get(port, "/metrics").await;
    assert!(
        metrics.contains(
            "tiketo_gate_reader_scans_total{reader=\"way-out\",direction=\"exit\",verdict=\"accept\"} 2"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("tiketo_gate_reader_connected 0"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_an_exit_is_not_a_second_entry_and_lets_the_guest_back_in() {
    let mut exit_pty = Pty::new();
    let opts = Opts {
        policy: "cache",
        budget_ms: 400,
        offline_extra: "max_offline_uses = 1\ncache_ttl = \"1h\"",
        readers: two_lanes(&exit_pty.slave_path(), 0),
        outputs_extra: EXIT_OUTPUTS.into(),
        ..Opts::default()
    };
    let mut h = start_two_lanes(opts).await;
    // Looked up online once: the cache knows the pass.
    h.write(b"VALID-0001\r\n");
    let first = h.wait_scan(1);
    assert_eq!(field(&first, "mode"), Some("online"), "{first}");
    h.sim.stop().await;

    let mut n = 1;
    let mut scan = |h: &mut Harness, exit_pty: &mut Pty, at_exit: bool| {
        if at_exit {
            write_to(exit_pty, b"VALID-0001\r\n");
        } else {
            h.write(b"VALID-0001\r\n");
        }
        n += 1;
        let l = h.wait_scan(n);
        (
            field(&l, "verdict").unwrap().to_owned(),
            field(&l, "reason").unwrap().to_owned(),
            field(&l, "mode").unwrap().to_owned(),
        )
    };
    let entry = scan(&mut h, &mut exit_pty, false);
    assert_eq!(
        entry,
        ("accept".into(), "offline_policy".into(), "offline".into())
    );
    let again = scan(&mut h, &mut exit_pty, false);
    assert_eq!(again.0, "reject");
    assert_eq!(again.1, "already_used", "a second entry is anti-passback");
    // Going out is never "already used", and it ends the visit...
    let out = scan(&mut h, &mut exit_pty, true);
    assert_eq!(out.0, "accept", "{out:?}");
    let out_again = scan(&mut h, &mut exit_pty, true);
    assert_eq!(out_again.0, "accept", "{out_again:?}");
    // ...so the guest may come back in once more.
    let back = scan(&mut h, &mut exit_pty, false);
    assert_eq!(back.0, "accept", "{back:?}");
    let twice = scan(&mut h, &mut exit_pty, false);
    assert_eq!(twice.1, "already_used");

    // The queued events carry their directions to the server.
    h.sim.restart().await.unwrap();
    assert!(
        wait_until(T, || h.sim.scan_events().len() >= 5),
        "{}",
        h.logs()
    );
    let dirs: Vec<String> = h
        .sim
        .scan_events()
        .iter()
        .map(|e| e.data["direction"].as_str().unwrap_or("?").to_owned())
        .collect();
    assert_eq!(dirs, ["entry", "entry", "exit", "exit", "entry"]);
}

fn mkfifo(path: &Path) {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .expect("mkfifo");
}

fn records(events: &[(u16, u16, i32)]) -> Vec<u8> {
    events
        .iter()
        .flat_map(|(t, c, v)| record(*t, *c, *v))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyboard_mode_reader_with_a_german_layout_end_to_end() {
    let fifo_dir = tempfile::tempdir().unwrap();
    let fifo = fifo_dir.path().join("scanner.events");
    mkfifo(&fifo);
    let opts = Opts {
        readers: format!(
            "[reader]\nkind = \"hid\"\nhid_source = \"recording\"\npath = \"{}\"\nlayout = \"de\"\ndebounce_ms = 0\nframe_timeout_ms = 200\n",
            fifo.display()
        ),
        ..Opts::default()
    };
    let h = Harness::start(opts).await;
    let mut w = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    // VALID-0003 as a German-layout scanner types it ('-' is its own key there, where a US
    // keymap has '/'), in small writes as the kernel delivers them.
    let typed = records(&keystrokes(Layout::De, "VALID-0003").unwrap());
    for chunk in typed.chunks(100) {
        w.write_all(chunk).unwrap();
        w.flush().unwrap();
    }
    let l = h.wait_scan(1);
    assert_eq!(field(&l, "verdict"), Some("accept"), "{l}");
    assert_eq!(field(&l, "code"), Some("…0003"), "{l}");
    assert_eq!(h.sim.scan_events()[0].code, "VALID-0003");

    // A code cut off mid-way (the guest pulled the phone away) is dropped as incomplete
    // after frame_timeout_ms, and the next one reads.
    let half = keystrokes(Layout::De, "VALID-0002").unwrap();
    w.write_all(&records(&half[..half.len() / 2])).unwrap();
    w.flush().unwrap();
    let l = h.wait_scan(2);
    assert_eq!(field(&l, "reason"), Some("malformed"), "{l}");
    assert!(l.contains("incomplete"), "{l}");
    // A function key in the middle: refused whole, not misread.
    let mut f1 = keystrokes(Layout::De, "VALID-0002").unwrap();
    f1.insert(4, (1, 59, 1));
    w.write_all(&records(&f1)).unwrap();
    w.write_all(&records(&keystrokes(Layout::De, "VALID-0002").unwrap()))
        .unwrap();
    w.flush().unwrap();
    let l = h.wait_scan(3);
    assert!(l.contains("unmapped_key"), "{l}");
    let l = h.wait_scan(4);
    assert_eq!(field(&l, "verdict"), Some("accept"), "{l}");
    assert_eq!(field(&l, "code"), Some("…0002"), "{l}");
    // Nothing else (no Enter from a released key, no duplicate).
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(h.scan_lines().len(), 4);
    assert!(!h.logs().contains("VALID-0002"), "full code in the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_button_releases_the_door_and_the_door_sensor_warns_when_held_open() {
    let opts = Opts {
        outputs_extra: "sim_inputs = \"@DIR@/inputs\"\n".into(),
        tail: "[inputs]\nexit_button = { pin = 5, active_low = true, bias = \"pull-up\" }\ndoor_sensor = { pin = 6, held_open_secs = 1 }\n".into(),
        ..Opts::default()
    };
    let h = Harness::start(opts).await;
    h.wait_log("door sensor read", T);
    let st = h.status_json();
    assert_eq!(st["door"]["state"], "closed", "{st}");
    let mut fifo = std::fs::OpenOptions::new()
        .write(true)
        .open(h.dir.path().join("inputs"))
        .unwrap();
    let mut say = |line: &str| {
        fifo.write_all(format!("{line}\n").as_bytes()).unwrap();
        fifo.flush().unwrap();
    };

    // Request to exit: the relay pulses, no scan, no scan event.
    say(r#"{"input":"exit_button","active":true}"#);
    say(r#"{"input":"exit_button","active":false}"#);
    assert!(h.wait_switched("relay", true, 1, T), "{}", h.logs());
    assert!(h.wait_switched("relay", false, 2, T));
    h.wait_log("exit button: door released", T);
    assert!(h.scan_lines().is_empty());
    assert!(h.sim.scan_events().is_empty());
    assert!(!h.changes_of("green").contains(&true), "no accept feedback");
    // A chattering button (press, release, press at once) does not pulse twice.
    std::thread::sleep(Duration::from_millis(600));
    say(r#"{"input":"exit_button","active":true}"#);
    say(r#"{"input":"exit_button","active":false}"#);
    say(r#"{"input":"exit_button","active":true}"#);
    assert!(h.wait_switched("relay", true, 2, T));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(h.logs().matches("exit button: door released").count(), 2);

    // Garbage on the simulated line is logged and skipped.
    say("door is open");
    h.wait_log("simulated input line ignored", T);

    // The door opens, stays open past held_open_secs, then closes.
    say(r#"{"input":"door_sensor","active":true}"#);
    h.wait_log("door opened", T);
    assert!(wait_until(T, || h.status_json()["door"]["state"] == "open"));
    h.wait_log("door held open", Duration::from_secs(5));
    // The status writer writes it a moment later (in another task than the log line).
    wait_until(T, || h.status_json()["door"]["held_open"] == true);
    let st = h.status_json();
    assert_eq!(st["door"]["held_open"], true, "{st}");
    let text = String::from_utf8_lossy(&h.cli(&["status"]).stdout).into_owned();
    assert!(
        text.contains("door:          open") && text.contains("HELD OPEN"),
        "{text}"
    );
    assert_eq!(h.logs().matches("door held open").count(), 1, "warned once");
    say(r#"{"input":"door_sensor","active":false}"#);
    h.wait_log("door closed after being held open", T);
    assert!(wait_until(T, || {
        let d = &h.status_json()["door"];
        d["state"] == "closed" && d["held_open"] == false
    }));
    // Scans still work alongside.
    let mut h = h;
    h.write(b"VALID-0001\r\n");
    let l = h.wait_scan(1);
    assert_eq!(field(&l, "verdict"), Some("accept"));
}

/// The same through a real evdev device: a virtual keyboard from uinput, found by its USB
/// id, grabbed, unplugged and plugged back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs /dev/uinput (CONFIG_INPUT_UINPUT) and the right to create input devices; this machine's kernel has no uinput, so keyboard_mode_reader_with_a_german_layout_end_to_end covers the decoding end to end from raw records"]
async fn keyboard_mode_reader_through_a_real_uinput_device() {
    use evdev::uinput::VirtualDevice;
    use evdev::{AttributeSet, BusType, InputEvent, InputId, KeyCode};
    let make = || {
        let mut keys = AttributeSet::<KeyCode>::new();
        for c in 1..=127u16 {
            keys.insert(KeyCode::new(c));
        }
        VirtualDevice::builder()
            .expect("/dev/uinput")
            .name("tiketo test scanner")
            .input_id(InputId::new(BusType::BUS_USB, 0x7e57, 0x5ca7, 1))
            .with_keys(&keys)
            .unwrap()
            .build()
            .unwrap()
    };
    let mut dev = make();
    let node = dev
        .enumerate_dev_nodes_blocking()
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    let opts = Opts {
        readers:
            "[reader]\nkind = \"hid\"\nusb_id = \"7e57:5ca7\"\nlayout = \"us\"\ndebounce_ms = 0\n"
                .into(),
        ..Opts::default()
    };
    let h = Harness::start(opts).await;
    let type_code = |dev: &mut VirtualDevice, code: &str| {
        let evs: Vec<InputEvent> = keystrokes(Layout::Us, code)
            .unwrap()
            .into_iter()
            .map(|(t, c, v)| InputEvent::new(t, c, v))
            .collect();
        dev.emit(&evs).unwrap();
    };
    // Grabbed: a second reader of the node (a console, a browser) sees none of the keys.
    let mut other = evdev::Device::open(&node).unwrap();
    other.set_nonblocking(true).unwrap();
    type_code(&mut dev, "VALID-0001");
    let l = h.wait_scan(1);
    assert_eq!(field(&l, "verdict"), Some("accept"), "{l}");
    assert_eq!(field(&l, "code"), Some("…0001"), "{l}");
    let leaked = other.fetch_events().map(|e| e.count()).unwrap_or(0);
    assert_eq!(leaked, 0, "the grab let keystrokes through");
    // Unplugged and back under a new event node: read again.
    drop(dev);
    h.wait_log("reader disconnected", T);
    let mut dev = make();
    assert!(wait_until(T, || h
        .logs()
        .matches("reader connected")
        .count()
        >= 2));
    type_code(&mut dev, "VALID-0002");
    let l = h.wait_scan(2);
    assert_eq!(field(&l, "code"), Some("…0002"), "{l}");
}

#[test]
fn hid_decode_shows_what_each_layout_reads_from_a_recording() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("scan.events");
    std::fs::write(&file, records(&keystrokes(Layout::De, "Zy-0001").unwrap())).unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tiketo-gate"))
            .arg("hid-decode")
            .arg(&file)
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, text) = run(&["--full"]);
    assert_eq!(code, Some(0));
    assert!(
        text.contains("layout us: 18 key events, 1 codes, 0 malformed"),
        "{text}"
    );
    assert!(
        text.contains("  1  Yz/0001"),
        "the German keys on a US keymap: {text}"
    );
    assert!(text.contains("  1  Zy-0001"), "{text}");
    // Masked unless asked.
    let (_, text) = run(&["--layout", "de"]);
    assert!(
        !text.contains("Zy-0001") && text.contains("…001 "),
        "{text}"
    );
    assert!(!text.contains("layout us"), "{text}");
    let (code, _) = run(&["--layout", "fr"]);
    assert_eq!(code, Some(2));
}

/// A flood of codes at one reader while the API is slow (a scanner taped down in continuous
/// mode) backs up its lane; the other reader's guest is decided as if nothing happened (not
/// behind the backlog), SIGTERM still stops the daemon at once (not after the scan in
/// progress, which here takes 2.5 s), and every scan that was decided is in the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooded_lane_does_not_hold_up_a_stop() {
    let mut exit_pty = Pty::new();
    let opts = Opts {
        budget_ms: 60000,
        readers: two_lanes(&exit_pty.slave_path(), 0),
        outputs_extra: EXIT_OUTPUTS.into(),
        ..Opts::default()
    };
    let mut h = start_two_lanes(opts).await;
    // Each lookup (and so each not_found scan) takes 2.5 s.
    h.sim.set_delay(Duration::from_millis(2500));
    let flood: String = (0..300).map(|i| format!("FLOOD-{i:04}\r\n")).collect();
    write_to(&mut exit_pty, flood.as_bytes());
    // The lane works through its backlog one scan at a time.
    assert!(wait_until(T, || !h.scan_lines().is_empty()));
    // The entrance is not behind the exit's backlog: its scan takes its own two requests
    // (5 s here), where a shared queue would put it behind dozens of 2.5 s lookups.
    h.write(b"VALID-0001\r\n");
    assert!(
        wait_until(Duration::from_secs(9), || h
            .scan_lines()
            .iter()
            .any(|l| field(l, "reader") == Some("entrance"))),
        "the entrance waited for the exit's backlog:\n{}",
        h.logs()
    );
    eprintln!(
        "DBG\n{}",
        h.logs()
            .lines()
            .filter(|l| l.contains(" INFO ") || l.contains("WARN"))
            .map(|l| l.chars().take(140).collect::<String>())
            .collect::<Vec<_>>()
            .join("\n")
    );
    // Stop right after an exit scan ends.
    let n = h.scan_lines().len();
    assert!(wait_until(T, || h.scan_lines().len() > n));
    let start = std::time::Instant::now();
    h.signal("TERM");
    let status = h.wait_exit(Duration::from_millis(1500));
    assert!(
        status.is_some_and(|s| s.success()),
        "not stopped within 1.5 s of SIGTERM ({:?}); log:\n{}",
        start.elapsed(),
        h.logs()
    );
    let decided = h.scan_lines().len();
    assert!(
        decided < 300,
        "the flood was not backed up ({decided} scans)"
    );
    // Every logged scan is stored; a scan stopped between its row and its log line is
    // stored too (at most one a lane).
    let stored = h.store().counts().unwrap().scans as usize;
    assert!(
        (decided..=decided + 2).contains(&stored),
        "{stored} stored for {decided} logged"
    );
    assert_eq!(
        h.changes_of("relay_exit").last(),
        Some(&false),
        "door locked at exit"
    );
}

/// Codes that wait behind earlier scans at their reader until their budget is gone are
/// decided offline at once, and do not count against the API (the daemon stays online).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codes_queued_past_their_budget_do_not_take_the_door_offline() {
    let mut h = Harness::start(Opts {
        policy: "accept",
        budget_ms: 1000,
        ..Opts::default()
    })
    .await;
    h.sim.set_delay(Duration::from_millis(700));
    let burst: String = (1..=6).map(|i| format!("NOPE-{i:04}\r\n")).collect();
    h.write(burst.as_bytes());
    let last = h.wait_scan(6);
    let lines = h.scan_lines();
    assert_eq!(
        field(&lines[0], "reason"),
        Some("not_found"),
        "{}",
        lines[0]
    );
    assert_eq!(field(&lines[0], "mode"), Some("online"));
    for l in &lines[2..] {
        assert_eq!(field(l, "mode"), Some("offline"), "{l}");
        assert!(l.contains("the budget ran out while earlier scans"), "{l}");
    }
    assert!(
        !h.logs().contains("API unreachable"),
        "a queue at the reader took the door offline:\n{}",
        h.logs()
    );
    let _ = last;
    // The next guest is decided online as usual.
    h.sim.set_delay(Duration::ZERO);
    h.write(b"VALID-0001\r\n");
    let l = h.wait_scan(7);
    assert_eq!(field(&l, "mode"), Some("online"), "{l}");
    assert_eq!(field(&l, "verdict"), Some("accept"), "{l}");
}
