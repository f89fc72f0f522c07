//! One venue, one memory (`mqtt.venue`): two and three real daemons on one real mosquitto
//! (Debian's package) with docs/config.md's ACL, each with its own fake API, share lookups and
//! admissions, so the offline rules hold venue-wide.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::broker::{Broker, Peer, PeerEvent};
use common::{doctor_line, field, wait_until, Harness, Opts};
use tiketo_gate::venue::seal::VenueKey;

const VENUE: &str = "tiketo-gate/venues/main-hall";
const KEY: &str = "the-main-hall-venue-secret-0123456789abcdef";
const T: Duration = Duration::from_secs(15);

fn key_file(broker: &Broker, key: &str) -> PathBuf {
    let p = broker.dir.path().join(format!(
        "venue-{}.key",
        key.len() + key.as_bytes()[0] as usize
    ));
    std::fs::write(&p, format!("{key}\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

/// A door of the venue: `device.name` and broker user `name`, offline policy `cache`.
async fn door(
    broker: &Broker,
    name: &'static str,
    key: &str,
    offline: &'static str,
    extra: &str,
) -> Harness {
    let venue = format!(
        "venue = \"{VENUE}\"\nvenue_key_file = \"{}\"\n",
        key_file(broker, key).display()
    );
    let h = Harness::start(Opts {
        device: name,
        policy: "cache",
        offline_extra: offline,
        tail: format!("{}\n{extra}", broker.mqtt_table_as(name, &venue)),
        ..Opts::default()
    })
    .await;
    h.wait_log("mqtt subscribed", T);
    h
}

/// The door's reader direction set to `exit`.
fn exit_reader() -> String {
    "[reader]\nkind = \"serial\"\npath = \"@LINK@\"\nbaud = 115200\ndirection = \"exit\"\ndebounce_ms = 0\nframe_timeout_ms = 200\n".into()
}

/// Scans `code` and returns the scan's log line.
fn scan(h: &mut Harness, code: &str) -> String {
    let n = h.scan_lines().len();
    h.write(format!("{code}\r\n").as_bytes());
    h.wait_scan(n + 1)
}

fn verdict(line: &str) -> (String, String, String) {
    let f = |k| field(line, k).unwrap_or("?").to_owned();
    (f("verdict"), f("reason"), f("mode"))
}

fn address(code: &str) -> String {
    VenueKey::from_text(KEY).unwrap().address(code)
}

/// The venue's record of `code` in the door's store.
fn record(h: &Harness, code: &str) -> Option<tiketo_gate::venue::ledger::PassRecord> {
    h.store().venue_record_at(&address(code)).unwrap()
}

/// Waits until the door's store holds a record of `code` that satisfies `ok`.
fn wait_record(
    h: &Harness,
    code: &str,
    what: &str,
    ok: impl Fn(&tiketo_gate::venue::ledger::PassRecord) -> bool,
) {
    if !wait_until(T, || record(h, code).is_some_and(|r| ok(&r))) {
        panic!(
            "{what}: the record there is {:?}; log:\n{}",
            record(h, code),
            h.logs()
        );
    }
}

fn offline_entries(r: &tiketo_gate::venue::ledger::PassRecord) -> usize {
    r.admissions.iter().filter(|a| !a.online).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_and_admissions_at_one_door_hold_offline_at_the_others() {
    let broker = Broker::start();
    let offline = "cache_ttl = \"1h\"\nmax_offline_uses = 1\nunknown = \"reject\"\n";
    let mut a = door(&broker, "front-door", KEY, offline, "").await;
    let mut b = door(&broker, "side-door", KEY, offline, "").await;
    let mut c = Harness::start(Opts {
        device: "back-door",
        policy: "cache",
        offline_extra: offline,
        readers: exit_reader(),
        tail: broker.mqtt_table_as(
            "back-door",
            &format!(
                "venue = \"{VENUE}\"\nvenue_key_file = \"{}\"\n",
                key_file(&broker, KEY).display()
            ),
        ),
        ..Opts::default()
    })
    .await;
    c.wait_log("mqtt subscribed", T);

    // Door A looks the pass up online; B and C never did.
    assert_eq!(verdict(&scan(&mut a, "VALID-0001")).0, "accept");
    for h in [&b, &c] {
        wait_record(
            h,
            "VALID-0001",
            "A's lookup and online entry reach the others",
            |r| {
                r.lookup
                    .as_ref()
                    .is_some_and(|l| l.found && l.door == "front-door")
                    && r.admissions
                        .iter()
                        .any(|x| x.online && x.door == "front-door")
            },
        );
    }
    // The API goes away for every door.
    for h in [&mut a, &mut b, &mut c] {
        h.sim.stop().await;
    }
    // B admits it offline from A's lookup; a code no door looked up is offline.unknown's.
    let line = scan(&mut b, "VALID-0001");
    assert_eq!(
        verdict(&line),
        ("accept".into(), "offline_policy".into(), "offline".into()),
        "{line}"
    );
    let line = scan(&mut b, "VALID-0002");
    assert_eq!(verdict(&line).0, "reject", "{line}");
    assert_eq!(verdict(&line).1, "offline_policy", "{line}");
    // A learns B's offline entry: the same pass is already used at A.
    wait_record(&a, "VALID-0001", "B's admission reaches A", |r| {
        offline_entries(r) == 1
    });
    let line = scan(&mut a, "VALID-0001");
    assert_eq!(verdict(&line).0, "reject", "{line}");
    assert_eq!(verdict(&line).1, "already_used", "{line}");
    // The guest leaves through C (an exit door): A lets them in again.
    let line = scan(&mut c, "VALID-0001");
    assert_eq!(verdict(&line).0, "accept", "the exit at C: {line}");
    wait_record(&a, "VALID-0001", "C's exit reaches A", |r| {
        r.admissions
            .iter()
            .any(|x| x.door == "back-door" && x.direction == tiketo_gate::decision::Direction::Exit)
    });
    let line = scan(&mut a, "VALID-0001");
    assert_eq!(
        verdict(&line).0,
        "accept",
        "in again after the exit: {line}"
    );
    // Every door ends with the same record: nothing counted twice.
    wait_until(T, || {
        let (ra, rb, rc) = (
            record(&a, "VALID-0001"),
            record(&b, "VALID-0001"),
            record(&c, "VALID-0001"),
        );
        ra == rb && rb == rc
    });
    let (ra, rb, rc) = (
        record(&a, "VALID-0001"),
        record(&b, "VALID-0001"),
        record(&c, "VALID-0001"),
    );
    assert_eq!(ra, rb, "A and B converge");
    assert_eq!(rb, rc, "B and C converge");
    for h in [&a, &b, &c] {
        assert!(
            !h.logs().contains("venue conflict"),
            "no conflict: {}",
            h.logs()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_door_started_afresh_knows_the_venue_at_once_and_the_broker_reads_nothing_in_clear() {
    let broker = Broker::start();
    // Everything the broker carries, retained messages included.
    let mut watcher = Peer::start(
        broker.port,
        "watcher",
        "watcher-secret",
        &["tiketo-gate/#"],
        false,
    )
    .await;
    let offline = "cache_ttl = \"1h\"\nmax_offline_uses = 1\n";
    // The guest screen's greeting needs the holder's name: the lookups carry it (sealed).
    let display = || {
        format!(
            "[display]\nlisten = \"127.0.0.1:{}\"\ngreeting = \"Welcome, {{firstName}} {{lastName}}!\"\n",
            common::free_port()
        )
    };
    let mut a = door(&broker, "front-door", KEY, offline, &display()).await;
    let codes = ["VALID-0001", "VALID-0002", "VALID-0003", "VOIDED-0001"];
    for code in codes {
        scan(&mut a, code);
    }
    wait_until(T, || a.store().venue_known().unwrap() >= codes.len() as i64);
    // B starts with an empty store: the broker's retained records are the venue's memory.
    let started = Instant::now();
    let mut b = door(&broker, "side-door", KEY, offline, &display()).await;
    let knew = wait_until(T, || {
        codes
            .iter()
            .all(|c| record(&b, c).is_some_and(|r| r.lookup.is_some()))
    });
    assert!(knew, "B never learned the venue: {}", b.logs());
    eprintln!(
        "a late joiner knew {} passes {} ms after its daemon was spawned",
        codes.len(),
        started.elapsed().as_millis()
    );
    b.sim.stop().await;
    let line = scan(&mut b, "VALID-0001");
    assert_eq!(verdict(&line).0, "accept", "{line}");
    let line = scan(&mut b, "VOIDED-0001");
    assert_eq!(
        (verdict(&line).0.as_str(), verdict(&line).1.as_str()),
        ("reject", "voided"),
        "{line}"
    );
    // The greeting offline comes from the venue's (sealed) record.
    let recs = record(&b, "VALID-0001").unwrap();
    assert!(recs.lookup.unwrap().parameters.unwrap().contains("Anna"));

    // Nothing the broker carried names a code, a pass, or a holder (the doors' names are
    // in the presence topics, as in their own topics).
    let seen = watcher.drain(Duration::from_secs(1)).await;
    let venue_msgs: Vec<_> = seen
        .iter()
        .filter_map(|e| match e {
            PeerEvent::Message(t, b, _) if t.starts_with(VENUE) => Some((t.clone(), b.clone())),
            _ => None,
        })
        .collect();
    assert!(
        venue_msgs.len() >= codes.len(),
        "the venue's records went over the broker: {venue_msgs:?}"
    );
    let secrets = common::SEED_CODES.iter().map(|s| s.to_string()).chain(
        [
            "Anna",
            "Nov",
            "pass-valid-1",
            "proj-main",
            "tpl-entry",
            "scanId",
            "VALID",
        ]
        .map(String::from),
    );
    for s in secrets {
        for (t, body) in &venue_msgs {
            assert!(
                !t.contains(&s) && !body.contains(&s),
                "{s:?} readable on {t}: {body:?}"
            );
        }
    }
    // A record's topic is its code's keyed address, not the code's hash or fingerprint.
    assert!(venue_msgs
        .iter()
        .any(|(t, _)| t == &format!("{VENUE}/p/{}", address("VALID-0001"))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_ends_in_a_conflict_that_both_doors_report() {
    let mut broker = Broker::start();
    let offline = "cache_ttl = \"1h\"\nmax_offline_uses = 1\n";
    let mut a = door(&broker, "front-door", KEY, offline, "").await;
    let mut b = door(&broker, "side-door", KEY, offline, "").await;
    scan(&mut a, "VALID-0001");
    wait_record(&b, "VALID-0001", "A's lookup reaches B", |r| {
        r.lookup.is_some()
    });
    // The broker and the API go away: each door decides alone, as before.
    broker.stop_gracefully();
    for h in [&mut a, &mut b] {
        h.sim.stop().await;
    }
    let la = scan(&mut a, "VALID-0001");
    let lb = scan(&mut b, "VALID-0001");
    assert_eq!(verdict(&la).0, "accept", "{la}");
    assert_eq!(verdict(&lb).0, "accept", "{lb}");
    // The broker comes back: the doors catch up, meet, and both say it.
    broker.spawn();
    for h in [&a, &b] {
        h.wait_log("venue conflict", T);
    }
    for (h, me) in [(&a, "front-door"), (&b, "side-door")] {
        let line = h
            .logs()
            .lines()
            .find(|l| l.contains("venue conflict"))
            .unwrap()
            .to_owned();
        assert!(line.contains(" WARN "), "{line}");
        assert!(
            field(&line, "first_door").is_some() && field(&line, "second_door").is_some(),
            "{line}"
        );
        assert!(
            line.contains("front-door") && line.contains("side-door"),
            "both doors named: {line}"
        );
        assert!(
            !line.contains("VALID-0001") && line.contains("0001"),
            "the code masked: {line}"
        );
        assert_eq!(
            h.logs().matches("venue conflict").count(),
            1,
            "{me}: said once"
        );
        let s = h.status_json();
        assert_eq!(s["venue"]["conflicts"], 1, "{me}: {s}");
        assert!(
            s["venue"]["recent_conflicts"][0]["first_door"]
                .as_str()
                .is_some(),
            "{s}"
        );
    }
    // Merged by scanId: two offline entries, not four.
    wait_until(T, || record(&a, "VALID-0001") == record(&b, "VALID-0001"));
    assert_eq!(offline_entries(&record(&a, "VALID-0001").unwrap()), 2);
    assert_eq!(record(&a, "VALID-0001"), record(&b, "VALID-0001"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_door_with_another_venue_key_ignores_the_venue_says_so_once_and_doctor_fails() {
    let broker = Broker::start();
    let offline = "cache_ttl = \"1h\"\n";
    let mut a = door(&broker, "front-door", KEY, offline, "").await;
    scan(&mut a, "VALID-0001");
    scan(&mut a, "VALID-0002");
    // The right key's doctor line opens the venue's records on the broker.
    wait_until(T, || {
        a.store().events_pending().unwrap() == 0 && a.store().venue_known().unwrap() == 2
    });
    let line = doctor_line(&a, "venue");
    assert_eq!(line["status"], "ok", "{line}");
    assert!(
        line["message"]
            .as_str()
            .unwrap()
            .contains("2 pass record(s)"),
        "{line}"
    );
    let wrong = "another-venue-secret-that-is-long-enough-0000";
    let mut b = door(&broker, "side-door", wrong, offline, "").await;
    b.wait_log("sealed with another venue key", T);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        b.logs().matches("sealed with another venue key").count(),
        1,
        "said once: {}",
        b.logs()
    );
    assert_eq!(b.store().venue_known().unwrap(), 0, "nothing merged");
    b.sim.stop().await;
    let line = scan(&mut b, "VALID-0001");
    assert_eq!(verdict(&line).0, "reject", "B decides alone: {line}");
    let venue = doctor_line(&b, "venue");
    assert_eq!(venue["status"], "fail", "{venue}");
    assert!(
        venue["message"]
            .as_str()
            .unwrap()
            .contains("another venue key"),
        "{venue}"
    );
    assert!(!venue.to_string().contains(wrong), "the key is never shown");
    let s = b.status_json();
    assert_eq!(s["venue"]["foreign_key"], true, "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_voided_on_the_server_is_known_voided_offline_after_one_doors_refresh() {
    let broker = Broker::start();
    // A 40 s cache: verifications older than 10 s are refreshed, up to 10 a second.
    let offline = "cache_ttl = \"40s\"\nrefresh_per_minute = 600\n";
    let a = door(&broker, "front-door", KEY, offline, "").await;
    let mut b = door(&broker, "side-door", KEY, offline, "").await;
    assert_eq!(verdict(&scan(&mut b, "VALID-0001")).0, "accept");
    wait_record(&a, "VALID-0001", "B's lookup reaches A", |r| {
        r.lookup.is_some()
    });
    // An operator voids the pass; no door scans it meanwhile.
    for h in [&a, &b] {
        h.sim.set_voided("VALID-0001", true);
    }
    wait_record(&b, "VALID-0001", "the refresh finds it voided", |r| {
        r.lookup.as_ref().is_some_and(|l| l.voided)
    });
    // One door refreshed (the first by name that reaches the API), not each.
    assert!(
        !a.sim.requests_for("pass").is_empty(),
        "front-door refreshed"
    );
    assert!(b.sim.requests_for("pass").is_empty(), "side-door did not");
    b.sim.stop().await;
    let line = scan(&mut b, "VALID-0001");
    assert_eq!(
        (verdict(&line).0.as_str(), verdict(&line).1.as_str()),
        ("reject", "voided"),
        "{line}"
    );
    assert!(
        a.logs()
            .contains("venue refresh: a cached pass is voided now"),
        "{}",
        a.logs()
    );
}
