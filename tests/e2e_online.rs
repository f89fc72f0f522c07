//! End to end: the real daemon, its serial reader on a pseudo-terminal, tiketo-sim on
//! loopback, the `sim` outputs. See `common/mod.rs`.

mod common;

use std::time::Duration;

use common::{field, wait_until, Harness, Opts};
use tiketo_sim::{Fault, FaultRule};

const T: Duration = Duration::from_secs(10);

fn uuid_like(s: &str) -> bool {
    s.len() == 36 && s.chars().filter(|c| *c == '-').count() == 4
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_pulses_relay_and_records_one_scan_event() {
    let mut h = Harness::start(Opts::default()).await;
    // Safe state first: every output written off before anything else.
    let first = h.outputs();
    assert!(
        first.len() >= 5 && first[..5].iter().all(|c| !c.on),
        "{first:?}"
    );

    h.write(b"VALID-0001\r\n");
    assert!(h.wait_switched("relay", true, 1, T), "relay never on");
    assert!(
        h.wait_switched("relay", false, 2, T),
        "relay never off again"
    );
    let relay: Vec<_> = h
        .outputs()
        .into_iter()
        .filter(|c| c.output == "relay")
        .collect();
    let on = relay.iter().find(|c| c.on).unwrap();
    let off = relay.iter().rev().find(|c| !c.on).unwrap();
    assert!(off.ts_ms - on.ts_ms >= 290, "pulse too short: {relay:?}");
    assert!(h.changes_of("green").contains(&true));
    assert!(!h.changes_of("red").contains(&true));

    let line = h.wait_scan(1);
    assert_eq!(field(&line, "verdict"), Some("accept"), "{line}");
    assert_eq!(field(&line, "reason"), Some("valid"));
    assert_eq!(field(&line, "mode"), Some("online"));
    assert_eq!(field(&line, "code"), Some("…0001"));
    assert_eq!(h.sim.requests_for("passByScanCode").len(), 1);
    assert_eq!(h.sim.requests_for("createScanEvent").len(), 1);
    assert!(h.status_json()["opening_hours"].is_null(), "no hours set");
    // No guest screen greeting: the holder's parameters are not asked for.
    assert!(!h.sim.requests_for("passByScanCode")[0]
        .query
        .contains("parameters"));
    let events = h.sim.scan_events();
    assert_eq!(events.len(), 1);
    let ev = &events[0];
    assert_eq!(ev.code, "VALID-0001");
    assert!(uuid_like(ev.scan_id().unwrap()), "{ev:?}");
    assert_eq!(ev.data["device"], "test-door");
    let scanned_at = ev.data["scannedAt"].as_str().unwrap();
    assert!(
        scanned_at.ends_with('Z') && scanned_at.contains('T'),
        "{scanned_at}"
    );
    assert_eq!(ev.reward_points, None, "0 reward points are omitted");

    // A second accept gets a fresh scan id.
    h.write(b"VALID-0002\n");
    h.wait_scan(2);
    let events = h.sim.scan_events();
    assert_eq!(events.len(), 2);
    assert_ne!(events[0].scan_id(), events[1].scan_id());
    h.check_invariants();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_accept_during_the_pulse_says_the_door_stays_open_longer() {
    // A pulse long enough that the second scan falls inside it on a slow machine too.
    let mut h = Harness::start(Opts {
        relay_ms: 1500,
        ..Opts::default()
    })
    .await;
    h.write(b"VALID-0001\r\n");
    h.wait_scan(1);
    h.write(b"VALID-0002\r\n");
    h.wait_scan(2);
    assert!(
        h.wait_switched("relay", false, 2, T),
        "relay never off again"
    );
    // One "on" edge, one line saying its time started over, one "off" a full pulse later.
    let relay: Vec<_> = h
        .outputs()
        .into_iter()
        .filter(|c| c.output == "relay")
        .collect();
    assert_eq!(relay.iter().filter(|c| c.on).count(), 1, "{relay:?}");
    let restarts = h.restarts_of("relay");
    assert_eq!(restarts.len(), 1, "{restarts:?}");
    let on = relay.iter().find(|c| c.on).unwrap().ts_ms;
    let off = relay.iter().rev().find(|c| !c.on).unwrap().ts_ms;
    assert!(
        on <= restarts[0] && restarts[0] < off,
        "{relay:?} {restarts:?}"
    );
    assert!(
        off - restarts[0] >= 1490,
        "the second guest's pulse was cut short"
    );
    assert_eq!(h.restarts_of("green").len(), 1);
    // A reject during the pulse does not touch the relay.
    h.write(b"VOIDED-0001\r\n");
    h.wait_scan(3);
    assert_eq!(h.restarts_of("relay").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejections_light_red_and_record_nothing() {
    let mut h = Harness::start(Opts {
        rules: "projects = [\"proj-main\", \"proj-loyalty\"]\ntemplates = [\"tpl-entry\"]",
        ..Opts::default()
    })
    .await;
    let cases = [
        ("NO-SUCH-PASS-42", "not_found"),
        ("VOIDED-0001", "voided"),
        ("EXPIRED-0001", "expired"),
        ("OTHER-0001", "wrong_project"),
        ("VALID-0002", "wrong_template"),
    ];
    for (i, (code, reason)) in cases.iter().enumerate() {
        // One verdict at a time: wait for the previous red pulse to end.
        assert!(wait_until(T, || h.changes_of("red").last() == Some(&false)));
        h.write(format!("{code}\r\n").as_bytes());
        let line = h.wait_scan(i + 1);
        assert_eq!(field(&line, "verdict"), Some("reject"), "{code}: {line}");
        assert_eq!(field(&line, "reason"), Some(*reason), "{code}: {line}");
        assert!(h.wait_switched("red", true, i + 1, T), "red for {code}");
    }
    assert!(
        !h.changes_of("relay").contains(&true),
        "the relay moved on a rejection"
    );
    assert!(h.changes_of("buzzer").contains(&true));
    assert!(h.sim.scan_events().is_empty());
    assert!(h.sim.requests_for("createScanEvent").is_empty());
    assert_eq!(h.sim.requests_for("passByScanCode").len(), 5);
    assert!(!h.logs().contains("NO-SUCH-PASS-42"));
    h.check_invariants();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_ticket_with_one_entry_is_accepted_once_then_refused() {
    let mut h = Harness::start(Opts::default()).await;
    h.write(b"ONCE-0001\r\n");
    let first = h.wait_scan(1);
    assert_eq!(field(&first, "verdict"), Some("accept"), "{first}");
    h.write(b"ONCE-0001\r\n");
    let second = h.wait_scan(2);
    assert_eq!(field(&second, "verdict"), Some("reject"), "{second}");
    assert_eq!(field(&second, "reason"), Some("refused"), "{second}");
    assert!(second.contains("NoEntriesLeft"), "{second}");
    assert_eq!(h.sim.scan_events().len(), 1);
    assert_eq!(h.changes_of("relay").iter().filter(|on| **on).count(), 1);
    // A server that answers with a voided ScanEvent refuses too.
    h.write(b"REFUSED-0001\r\n");
    let third = h.wait_scan(3);
    assert_eq!(field(&third, "reason"), Some("refused"), "{third}");
    assert_eq!(h.changes_of("relay").iter().filter(|on| **on).count(), 1);
    h.check_invariants();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_dates_in_forms_only_appsync_takes_are_honoured() {
    // 2099-12-31T23:59Z (no seconds), ...+05:30:10 (an offset with seconds), and an expired
    // 2020-01-01T00:00-07:00: a guest is admitted or turned away by the date, never api_error.
    let mut h = Harness::start(Opts::default()).await;
    let cases = [
        ("APPSYNC-0001", "accept", "valid"),
        ("APPSYNC-0002", "accept", "valid"),
        ("APPSYNC-EXPIRED", "reject", "expired"),
    ];
    for (i, (code, verdict, reason)) in cases.iter().enumerate() {
        h.write(format!("{code}\r\n").as_bytes());
        let line = h.wait_scan(i + 1);
        assert_eq!(field(&line, "verdict"), Some(*verdict), "{code}: {line}");
        assert_eq!(field(&line, "reason"), Some(*reason), "{code}: {line}");
        assert_eq!(field(&line, "mode"), Some("online"), "{code}: {line}");
    }
    assert_eq!(h.sim.scan_events().len(), 2);
    h.check_invariants();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loyalty_project_scan_config_sets_reward_points() {
    let mut h = Harness::start(Opts::default()).await;
    h.write(b"LOYAL-0001\r\n");
    h.wait_scan(1);
    let events = h.sim.scan_events();
    assert_eq!(events[0].reward_points, Some(10));
    h.check_invariants();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debounce_makes_a_held_phone_one_scan() {
    let mut h = Harness::start(Opts {
        debounce_ms: 1500,
        ..Opts::default()
    })
    .await;
    h.write(b"VALID-0001\r\n");
    h.wait_scan(1);
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(100));
        h.write(b"VALID-0001\r\n");
    }
    // Another code is not held back by the first one's window.
    h.write(b"VALID-0002\r\n");
    h.wait_scan(2);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(h.scan_lines().len(), 2, "{}", h.logs());
    assert_eq!(h.sim.scan_events().len(), 2);
    assert_eq!(h.sim.requests_for("passByScanCode").len(), 2);
    h.check_invariants();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cr_lf_and_crlf_each_end_a_code() {
    let mut h = Harness::start(Opts::default()).await;
    h.write(b"VALID-0001\r");
    h.wait_scan(1);
    h.write(b"VALID-0002\n");
    h.wait_scan(2);
    h.write(b"VALID-0003\r\n");
    h.wait_scan(3);
    std::thread::sleep(Duration::from_millis(300));
    let codes: Vec<String> = h.sim.scan_events().into_iter().map(|e| e.code).collect();
    assert_eq!(codes, ["VALID-0001", "VALID-0002", "VALID-0003"]);
    assert_eq!(h.scan_lines().len(), 3, "CRLF must not make an extra scan");
    h.check_invariants();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_without_terminator_is_rejected_then_a_code_works() {
    let mut h = Harness::start(Opts::default()).await;
    let garbage = vec![b'x'; 64 * 1024];
    // 64 KiB then the reader goes quiet: dropped as too long after the frame timeout.
    h.write(&garbage);
    let line = h.wait_scan(1);
    assert_eq!(field(&line, "reason"), Some("malformed"), "{line}");
    assert_eq!(field(&line, "detail"), Some("too_long"), "{line}");
    h.write(b"VALID-0001\r\n");
    let line = h.wait_scan(2);
    assert_eq!(field(&line, "verdict"), Some("accept"), "{line}");
    // 64 KiB glued to a line end: the whole line is garbage, the next line is a code.
    h.write(&garbage);
    h.write(b"\r\nVALID-0002\r\n");
    let line = h.wait_scan(3);
    assert_eq!(field(&line, "reason"), Some("malformed"), "{line}");
    let line = h.wait_scan(4);
    assert_eq!(field(&line, "verdict"), Some("accept"), "{line}");
    assert_eq!(
        h.sim.requests_for("passByScanCode").len(),
        2,
        "garbage never reached the API"
    );
    h.check_invariants();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_utf8_is_malformed_and_the_daemon_goes_on() {
    let mut h = Harness::start(Opts::default()).await;
    h.write(b"\xff\xfe\xc3\x28BAD\r\n");
    let line = h.wait_scan(1);
    assert_eq!(field(&line, "reason"), Some("malformed"), "{line}");
    assert_eq!(field(&line, "detail"), Some("not_utf8"), "{line}");
    assert!(h.wait_switched("red", true, 1, T));
    h.write(b"VALID-0001\r\n");
    let line = h.wait_scan(2);
    assert_eq!(field(&line, "verdict"), Some("accept"), "{line}");
    h.check_invariants();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unplugged_reader_is_reopened_and_the_next_code_works() {
    let mut h = Harness::start(Opts::default()).await;
    h.write(b"VALID-0001\r\n");
    h.wait_scan(1);
    h.unplug();
    h.wait_log("reader disconnected", T);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        h.child.as_mut().unwrap().try_wait().unwrap().is_none(),
        "daemon died"
    );
    h.plug();
    assert!(
        wait_until(T, || h.logs().matches("reader connected").count() >= 2),
        "never reconnected:\n{}",
        h.logs()
    );
    h.write(b"VALID-0002\r\n");
    let line = h.wait_scan(2);
    assert_eq!(field(&line, "verdict"), Some("accept"), "{line}");
    h.check_invariants();
}

async fn api_failure_case(policy: &'static str, fault: Fault) -> (Harness, String) {
    let mut h = Harness::start(Opts {
        policy,
        budget_ms: 300,
        ..Opts::default()
    })
    .await;
    h.sim.push_fault(FaultRule::always(fault));
    h.write(b"VALID-0001\r\n");
    let line = h.wait_scan(1);
    (h, line)
}

fn latency_ms(line: &str) -> f64 {
    field(line, "latency_ms").unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_500_with_reject_policy_keeps_the_door_shut() {
    let (h, line) = api_failure_case(
        "reject",
        Fault::Status {
            status: 500,
            retry_after: None,
        },
    )
    .await;
    assert_eq!(field(&line, "verdict"), Some("reject"), "{line}");
    assert_eq!(field(&line, "reason"), Some("offline_policy"), "{line}");
    assert_eq!(field(&line, "mode"), Some("offline"), "{line}");
    assert!(line.contains("HTTP 500"), "{line}");
    assert!(!h.changes_of("relay").contains(&true));
    assert!(h.wait_switched("red", true, 1, T));
    h.check_invariants();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_500_with_accept_policy_opens() {
    let (h, line) = api_failure_case(
        "accept",
        Fault::Status {
            status: 500,
            retry_after: None,
        },
    )
    .await;
    assert_eq!(field(&line, "verdict"), Some("accept"), "{line}");
    assert_eq!(field(&line, "mode"), Some("offline"), "{line}");
    assert!(h.wait_switched("relay", true, 1, T));
    h.check_invariants();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_that_never_answers_is_decided_within_the_budget_reject() {
    let (h, line) = api_failure_case("reject", Fault::Hang).await;
    assert_eq!(field(&line, "verdict"), Some("reject"), "{line}");
    assert_eq!(field(&line, "reason"), Some("offline_policy"), "{line}");
    // The budget is 300 ms; without it the scan would wait for the HTTP timeout (35 s).
    assert!(latency_ms(&line) < 3000.0, "{line}");
    assert!(line.contains("no answer within 300 ms"), "{line}");
    assert!(!h.changes_of("relay").contains(&true));
    h.check_invariants();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_that_never_answers_is_decided_within_the_budget_accept() {
    let (h, line) = api_failure_case("accept", Fault::Hang).await;
    assert_eq!(field(&line, "verdict"), Some("accept"), "{line}");
    assert!(latency_ms(&line) < 3000.0, "{line}");
    assert!(h.wait_switched("relay", true, 1, T));
    assert!(
        h.sim.scan_events().is_empty(),
        "the lookup never answered: nothing recorded"
    );
    h.check_invariants();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_failure_is_decided_by_policy_and_logged_without_the_token() {
    let mut h = Harness::start(Opts {
        policy: "reject",
        ..Opts::default()
    })
    .await;
    h.sim.push_fault(FaultRule::always(Fault::Status {
        status: 401,
        retry_after: None,
    }));
    h.write(b"VALID-0001\r\n");
    let line = h.wait_scan(1);
    assert_eq!(field(&line, "reason"), Some("offline_policy"), "{line}");
    assert!(line.contains("auth error"), "{line}");
    h.check_invariants();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_pulse_turns_every_output_off() {
    let mut h = Harness::start(Opts {
        relay_ms: 20_000,
        ..Opts::default()
    })
    .await;
    h.write(b"VALID-0001\r\n");
    assert!(h.wait_switched("relay", true, 1, T));
    h.signal("TERM");
    let status = h.wait_exit(T).expect("daemon exits on SIGTERM");
    assert!(status.success(), "{status:?}");
    let outs = h.outputs();
    let on_at = outs
        .iter()
        .find(|c| c.output == "relay" && c.on)
        .unwrap()
        .ts_ms;
    let last_relay = outs.iter().rev().find(|c| c.output == "relay").unwrap();
    assert!(!last_relay.on, "relay left on: {outs:?}");
    assert!(
        last_relay.ts_ms - on_at < 10_000,
        "relay released by the pulse, not by SIGTERM"
    );
    for name in ["relay", "green", "red", "buzzer", "status"] {
        let last = outs.iter().rev().find(|c| c.output == name).unwrap();
        assert!(!last.on, "{name} left on");
    }
    h.check_invariants();
}

/// Closed today (by `rules.closed_dates`, which cover today in every zone): a code is rejected
/// `outside_hours` without a call to the API, online and offline. On a machine whose clock is
/// not synced the documented rule decides: `rules.unsynced_clock = "reject"` rejects (the
/// default, `ignore_hours`, is shown by `an_unsynced_clock_ignores_the_hours_by_default`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outside_the_opening_hours_the_api_is_not_asked() {
    let dates = common::dates_around_today();
    let rules: &'static str = Box::leak(
        format!("hours = [\"Daily 00:00-24:00\"]\nclosed_dates = [{dates}]\nunsynced_clock = \"reject\"")
            .into_boxed_str(),
    );
    let mut h = Harness::start(Opts {
        rules,
        policy: "accept",
        ..Opts::default()
    })
    .await;
    h.write(b"VALID-0001\r\n");
    let line = h.wait_scan(1);
    assert_eq!(field(&line, "verdict"), Some("reject"), "{line}");
    assert_eq!(field(&line, "reason"), Some("outside_hours"), "{line}");
    assert_eq!(field(&line, "mode"), Some("local"), "{line}");
    let why = if tiketo_gate::clock::clock_synced() {
        "outside the opening hours"
    } else {
        "the clock is not synced"
    };
    assert!(line.contains(why), "{line}");
    // Offline too (the policy would admit anyone).
    h.sim.stop().await;
    h.write(b"VALID-0003\r\n");
    let line = h.wait_scan(2);
    assert_eq!(field(&line, "reason"), Some("outside_hours"), "{line}");
    assert!(h.sim.requests_for("passByScanCode").is_empty());
    assert!(!h.changes_of("relay").contains(&true));
    assert!(h.changes_of("red").contains(&true));
    assert_eq!(h.store().counts().unwrap().pending, 0);
    // `status` says so, by the same rule.
    let hours = &h.status_json()["opening_hours"];
    assert_eq!(hours[0]["reader"], "reader", "{hours}");
    assert_eq!(hours[0]["open"], false, "{hours}");
    h.check_invariants();
}

/// With the clock not synced and the default rule (`ignore_hours`), the hours are not kept:
/// a wrong clock cannot lock the door. (On a synced machine: the hours are kept.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsynced_clock_ignores_the_hours_by_default() {
    let dates = common::dates_around_today();
    let rules: &'static str = Box::leak(format!("closed_dates = [{dates}]").into_boxed_str());
    let mut h = Harness::start(Opts {
        rules,
        ..Opts::default()
    })
    .await;
    h.write(b"VALID-0001\r\n");
    let line = h.wait_scan(1);
    if tiketo_gate::clock::clock_synced() {
        assert_eq!(field(&line, "reason"), Some("outside_hours"), "{line}");
    } else {
        assert_eq!(field(&line, "reason"), Some("valid"), "{line}");
        assert_eq!(h.sim.requests_for("passByScanCode").len(), 1);
        let hours = &h.status_json()["opening_hours"][0];
        assert_eq!(hours["open"], true, "{hours}");
        assert_eq!(hours["detail"], "not kept until the clock is synced");
    }
}
