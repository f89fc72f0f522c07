//! The daemon against AppSync's ways, as tiketo-sim plays them: a schema that changed is an
//! alarm (guests decided by the offline policy, events kept, status and /healthz loud) that
//! ends by itself when the schema fits again; a value the server refuses costs one request.

mod common;

use std::time::Duration;

use common::{field, free_port, http_get, wait_until, Harness, Opts, TOKEN};
use tiketo_sim::{Seed, Sim, SimOptions};

const T: Duration = Duration::from_secs(20);

/// The project's SDL with one more required field on `ScanEventInput`: Tiketo changed its API.
fn drifted_schema() -> String {
    let s = tiketo_sim::SCHEMA_SDL.replace(
        "input ScanEventInput {\n  code: String!",
        "input ScanEventInput {\n  venue: String!\n  code: String!",
    );
    assert_ne!(s, tiketo_sim::SCHEMA_SDL, "the SDL changed shape");
    s
}

async fn sim_with(schema: Option<String>, seed: Seed) -> Sim {
    Sim::start(SimOptions {
        token: TOKEN.into(),
        schema,
        seed,
        ..SimOptions::default()
    })
    .await
    .expect("sim starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_that_changed_is_an_alarm_not_a_wall_of_rejects() {
    let sim = sim_with(Some(drifted_schema()), Seed::demo()).await;
    let port = free_port();
    let mut h = Harness::start_with_sim(
        sim,
        Opts {
            policy: "accept",
            budget_ms: 800,
            tail: format!("[http]\nlisten = \"127.0.0.1:{port}\"\n"),
            ..Opts::default()
        },
    )
    .await;
    // The lookup fits; the scan event does not: the offline policy decides, with the pass
    // the lookup found, and the event waits.
    h.write(b"VALID-0001\r\n");
    let line = h.wait_scan(1);
    assert_eq!(field(&line, "verdict"), Some("accept"), "{line}");
    assert_eq!(field(&line, "mode"), Some("offline"), "{line}");
    h.wait_log("API MISMATCH", T);
    assert!(
        h.logs().contains("venue"),
        "the server's message names the field: {}",
        h.logs()
    );
    // The next guest does not wait for the API at all.
    h.write(b"VALID-0002\r\n");
    let line = h.wait_scan(2);
    assert_eq!(field(&line, "mode"), Some("offline"), "{line}");
    assert!(line.contains("api mismatch"), "{line}");
    assert!(wait_until(T, || h.status_json()["api_mismatch"]
        .as_str()
        .is_some_and(|m| m.contains("venue"))));
    let st = h.status_json();
    assert_eq!(st["pending"], 2, "{st}");
    assert_eq!(st["dead"], 0, "nothing dead-lettered: {st}");
    let (code, body) = http_get(port, "/healthz").await;
    assert_eq!(code, 503, "{body}");
    assert!(body.starts_with("api: mismatch:"), "{body}");
    let (_, page) = http_get(port, "/api/status").await;
    assert!(page.contains("\"api_mismatch\":true"), "{page}");
    let (_, metrics) = http_get(port, "/metrics").await;
    assert!(metrics.contains("tiketo_gate_api_mismatch 1"), "{metrics}");
    let text = h.cli(&["status"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("API MISMATCH:"), "{text}");
    assert!(h.sim.scan_events().is_empty());
    // Tiketo fixes its API: the replay's next probe finds the schema fits, the queue goes,
    // the alarm ends, and the next guest is decided online. No restart.
    h.sim.set_schema(tiketo_sim::SCHEMA_SDL).unwrap();
    let fixed = std::time::Instant::now();
    assert!(
        wait_until(Duration::from_secs(90), || h.sim.scan_events().len() == 2),
        "{}",
        h.logs()
    );
    eprintln!(
        "schema fixed -> queue delivered: {} ms",
        fixed.elapsed().as_millis()
    );
    h.wait_log("fits this daemon again", T);
    assert!(wait_until(T, || h.status_json()["api_mismatch"].is_null()));
    assert_eq!(http_get(port, "/healthz").await.0, 200);
    h.write(b"VALID-0003\r\n");
    let line = h.wait_scan(3);
    assert_eq!(field(&line, "mode"), Some("online"), "{line}");
    assert!(wait_until(T, || h.status_json()["pending"] == 0));
    assert_eq!(h.status_json()["dead"], 0);
    h.check_invariants_with(false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lookup_that_no_longer_fits_is_probed_until_it_does() {
    // Tiketo renamed a field the lookup selects.
    let drifted = tiketo_sim::SCHEMA_SDL.replacen("  templateId: ID!", "  passTemplateId: ID!", 1);
    assert_ne!(drifted, tiketo_sim::SCHEMA_SDL);
    let sim = sim_with(None, Seed::demo()).await;
    let mut h = Harness::start_with_sim(
        sim,
        Opts {
            policy: "reject",
            offline_extra: "cache_ttl = \"1h\"",
            ..Opts::default()
        },
    )
    .await;
    // Known while the lookup fitted: cached.
    h.write(b"VALID-0001\r\n");
    assert_eq!(field(&h.wait_scan(1), "mode"), Some("online"));
    h.sim.set_schema(&drifted).unwrap();
    h.write(b"VALID-0001\r\n");
    let line = h.wait_scan(2);
    assert_eq!(field(&line, "mode"), Some("offline"), "{line}");
    h.wait_log("API MISMATCH", T);
    assert_eq!(h.status_json()["dead"], 0);
    h.sim.set_schema(tiketo_sim::SCHEMA_SDL).unwrap();
    h.wait_log("fits this daemon again", Duration::from_secs(90));
    assert!(h
        .sim
        .requests()
        .iter()
        .any(|r| r.variables["code"] == tiketo_gate::daemon::PROBE_CODE));
    h.write(b"VALID-0002\r\n");
    assert_eq!(field(&h.wait_scan(3), "mode"), Some("online"));
    h.check_invariants_with(false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_value_the_server_refuses_costs_one_request_not_the_batch() {
    let sim = sim_with(None, Seed::demo()).await;
    let mut h = Harness::start_with_sim(
        sim,
        Opts {
            policy: "cache",
            budget_ms: 400,
            offline_extra: "cache_ttl = \"1h\"\nmax_offline_uses = 3",
            ..Opts::default()
        },
    )
    .await;
    h.sim.stop().await;
    // A pass the cache knows with reward points that do not fit a GraphQL Int (as a project's
    // scanConfig could say): its events carry a value the server cannot take.
    let facts = |id: &str, scan_config: Option<&str>| tiketo_gate::decision::PassFacts {
        id: id.into(),
        template_id: "tpl-entry".into(),
        project_id: Some("proj-main".into()),
        expires: None,
        voided: false,
        scan_config: scan_config.map(Into::into),
        parameters: None,
    };
    let path = tiketo_gate::store::Store::path_in(&h.dir.path().join("state"));
    let mut store = tiketo_gate::store::Store::open_existing(&path, true).unwrap();
    let now = tiketo_gate::clock::now_ms();
    for (code, f) in [
        ("VALID-0001", facts("pass-valid-1", None)),
        ("VALID-0002", facts("pass-valid-2", None)),
        (
            "VALID-0003",
            facts("pass-valid-3", Some(r#"{"rewardPoints": 5000000000}"#)),
        ),
    ] {
        store.cache_put(code, Some(&f), now).unwrap();
    }
    drop(store);
    let codes = ["VALID-0001", "VALID-0003", "VALID-0002", "VALID-0003"];
    for (i, c) in codes.iter().enumerate() {
        h.write(format!("{c}\r\n").as_bytes());
        let line = h.wait_scan(i + 1);
        assert_eq!(field(&line, "verdict"), Some("accept"), "{line}");
    }
    assert_eq!(h.status_json()["pending"], 4);
    let before = h.sim.request_count();
    h.sim.restart().await.unwrap();
    assert!(
        wait_until(T, || h.status_json()["pending"] == 0),
        "{}",
        h.logs()
    );
    let delivered: Vec<String> = h.sim.scan_events().iter().map(|e| e.code.clone()).collect();
    assert_eq!(delivered, ["VALID-0001", "VALID-0002"], "{}", h.logs());
    let st = h.status_json();
    assert_eq!(
        st["dead"], 2,
        "the two events with the value, nothing else: {st}"
    );
    let replays = h
        .sim
        .requests_since(before)
        .into_iter()
        .filter(|r| r.operation_name.as_deref() == Some("Replay"))
        .count();
    eprintln!("replay requests for 4 events, two with a refused value: {replays}");
    assert_eq!(replays, 3, "one request more for each refused value");
    assert!(st["api_mismatch"].is_null(), "{st}");
    assert!(!h.logs().contains("API MISMATCH"), "no alarm: {}", h.logs());
    let out = h.cli(&["queue", "list", "--dead"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("would not take its value"), "{text}");
    assert!(!text.contains("VALID-0003"), "{text}");
    h.check_invariants_with(false);
}

fn pending_row(i: usize, code: &str) -> tiketo_gate::store::NewScan {
    tiketo_gate::store::NewScan {
        scan_id: uuid::Uuid::new_v4(),
        code: code.into(),
        verdict: tiketo_gate::decision::Verdict::Accept,
        reason: tiketo_gate::decision::Reason::OfflinePolicy,
        online: false,
        scanned_at: time::OffsetDateTime::now_utc(),
        boot_id: "e2e".into(),
        mono_ms: i as u64,
        clock_synced: true,
        device: "test-door".into(),
        reader: "reader".into(),
        direction: tiketo_gate::decision::Direction::Entry,
        reward_points: None,
        pending: true,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_the_lambda_keeps_failing_does_not_hold_the_queue_behind_it() {
    let mut h = Harness::start(Opts {
        policy: "accept",
        ..Opts::default()
    })
    .await;
    h.sim.stop().await;
    // 1,000 pending events; the oldest one's createScanEvent throws in the Lambda.
    let path = tiketo_gate::store::Store::path_in(&h.dir.path().join("state"));
    let mut store = tiketo_gate::store::Store::open_existing(&path, true).unwrap();
    let mut order = Vec::new();
    for i in 0..1000 {
        let code = if i == 0 { "VALID-0002" } else { "VALID-0001" };
        let row = pending_row(i, code);
        if i > 0 {
            order.push(row.scan_id.to_string());
        }
        store.insert_scan(&row, false).unwrap();
    }
    drop(store);
    h.sim.push_fault(
        tiketo_sim::FaultRule::always(tiketo_sim::Fault::Resolver {
            error_type: "Lambda:Unhandled".into(),
            message: "Error: boom".into(),
        })
        .for_code("VALID-0002"),
    );
    h.sim.restart().await.unwrap();
    let back = std::time::Instant::now();
    assert!(
        wait_until(Duration::from_secs(60), || h.sim.scan_events().len() == 999),
        "{}",
        h.logs()
    );
    let others = back.elapsed();
    // When the failing one was first tried, and when the next request went.
    let requests: Vec<_> = h
        .sim
        .requests()
        .into_iter()
        .filter(|r| r.operation_name.as_deref() == Some("Replay"))
        .collect();
    let first = &requests[0];
    let second = &requests[1];
    let held = second.received_at_ms - first.received_at_ms;
    eprintln!(
        "Lambda:Unhandled at the head of 1,000: the others waited {held} ms after its failure; all 999 delivered {} ms after the API came back, in {} requests",
        others.as_millis(),
        requests.len()
    );
    assert!(held < 2000, "held {held} ms");
    // The failing one keeps its own tries, then goes to the dead letters.
    assert!(
        wait_until(T, || h.status_json()["dead"] == 1),
        "{}",
        h.logs()
    );
    assert!(wait_until(T, || h.status_json()["pending"] == 0));
    let out = h.cli(&["queue", "list", "--dead"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("gave up after 3 tries"), "{text}");
    // The others in their order.
    let delivered: Vec<String> = h
        .sim
        .scan_events()
        .iter()
        .map(|e| e.data["scanId"].as_str().unwrap().to_owned())
        .collect();
    assert!(delivered == order, "the others were delivered out of order");
    h.check_invariants();
}

/// The drain of 1,000 events behind a slow Lambda (300 ms an event): every request stays
/// well inside AppSync's 30 s. About five minutes: run it by hand,
/// `cargo test --test e2e_appsync -- --ignored --nocapture a_slow_lambda`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "five minutes; a measurement"]
async fn a_slow_lambda_drains_in_requests_well_inside_the_limit() {
    let mut h = Harness::start(Opts {
        policy: "accept",
        ..Opts::default()
    })
    .await;
    h.sim.stop().await;
    let path = tiketo_gate::store::Store::path_in(&h.dir.path().join("state"));
    let mut store = tiketo_gate::store::Store::open_existing(&path, true).unwrap();
    for i in 0..1000 {
        store
            .insert_scan(&pending_row(i, "VALID-0001"), false)
            .unwrap();
    }
    drop(store);
    h.sim.set_field_delay(Duration::from_millis(300));
    h.sim.restart().await.unwrap();
    let back = std::time::Instant::now();
    assert!(
        wait_until(Duration::from_secs(900), || h.status_json()["pending"] == 0),
        "{}",
        h.logs()
    );
    let total = back.elapsed();
    let replays: Vec<_> = h
        .sim
        .requests()
        .into_iter()
        .filter(|r| r.operation_name.as_deref() == Some("Replay"))
        .collect();
    let longest = replays.iter().map(|r| r.delay_us).max().unwrap_or(0);
    let timed_out = replays.iter().filter(|r| r.status == 504).count();
    let sizes: Vec<usize> = replays.iter().map(|r| r.root_fields.len()).collect();
    eprintln!(
        "slow Lambda (300 ms an event), 1,000 events: total {:.1} s, {} requests, longest {:.1} s, {timed_out} answered 504, sizes {sizes:?}",
        total.as_secs_f64(),
        replays.len(),
        longest as f64 / 1e6
    );
    assert_eq!(timed_out, 0);
    assert!(longest < 10_000_000, "longest request {longest} us");
    assert_eq!(h.status_json()["dead"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_nothing_pending_to_probe_with_a_scan_tries_the_api_again_after_a_while() {
    // Fail closed: the guest whose event did not fit is turned away, and nothing is pending.
    let sim = sim_with(Some(drifted_schema()), Seed::demo()).await;
    let mut h = Harness::start_with_sim(
        sim,
        Opts {
            policy: "reject",
            ..Opts::default()
        },
    )
    .await;
    h.write(b"VALID-0001\r\n");
    let line = h.wait_scan(1);
    assert_eq!(field(&line, "mode"), Some("offline"), "{line}");
    h.wait_log("API MISMATCH", T);
    assert_eq!(h.status_json()["pending"], 0);
    h.sim.set_schema(tiketo_sim::SCHEMA_SDL).unwrap();
    // The lanes leave the API alone for a second, then a scan asks it again.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    h.write(b"VALID-0002\r\n");
    let line = h.wait_scan(2);
    assert_eq!(field(&line, "verdict"), Some("accept"), "{line}");
    assert_eq!(field(&line, "mode"), Some("online"), "{line}");
    h.wait_log("fits this daemon again", T);
    assert!(wait_until(T, || h.status_json()["api_mismatch"].is_null()));
    h.check_invariants_with(false);
}
