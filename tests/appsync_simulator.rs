//! The daemon against AWS's own Amplify AppSync simulator (graphql-js with AppSync's scalars
//! and VTL mapping templates, a Lambda data source), behind a stand-in for Tiketo's Lambda
//! authorizer: `tests/appsync-simulator/host.js`. tiketo-sim is our reading of AppSync; this is
//! a second, independent one. Where the two word their errors differently (graphql-js against
//! graphql-java) the daemon must read both.
//!
//! Needs Node.js and `npm install` in `tests/appsync-simulator` (`.ci/test` does both and sets
//! `TIKETO_REQUIRE_APPSYNC_SIMULATOR=1`, so CI cannot skip it); without them a plain
//! `cargo test` says so and skips.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tiketo_gate::api::classify::{classify_gql_errors, ErrorClass};
use tiketo_gate::api::{AliasOutcome, Client, ScanEventInput};
use tiketo_gate::mask::Secret;

const WORKSPACE: &str = "appsync-sim-workspace-token";

struct Host {
    child: Child,
    url: String,
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn host_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/appsync-simulator")
}

/// Starts the host, or `None` (with a note) when Node.js or the package is missing and CI
/// did not ask for it.
fn start() -> Option<Host> {
    let ready = host_dir()
        .join("node_modules/amplify-appsync-simulator")
        .exists()
        && Command::new("node").arg("--version").output().is_ok();
    if !ready {
        assert!(
            std::env::var_os("TIKETO_REQUIRE_APPSYNC_SIMULATOR").is_none(),
            "the AppSync simulator is required here: run npm install in tests/appsync-simulator"
        );
        eprintln!(
            "skipped: no Node.js or no `npm install` in tests/appsync-simulator (.ci/test does it)"
        );
        return None;
    }
    // The host listens on port, port + 1 and port + 2: only the first was found free, so a
    // neighbour another socket holds (an outgoing connection's ephemeral port) ends the host
    // at once; it then tries other ports, and says why it stopped when it runs out of tries.
    let mut why = String::new();
    for _ in 0..4 {
        let port = common::free_port();
        let mut child = Command::new("node")
            .arg(host_dir().join("host.js"))
            .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/api/schema.graphql"))
            .arg(port.to_string())
            .arg(WORKSPACE)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("node starts");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let deadline = Instant::now() + Duration::from_secs(30);
        let started = loop {
            match lines.next() {
                Some(Ok(l)) if l.starts_with("listening ") => break true,
                Some(Ok(_)) => {}
                _ => break false,
            }
            assert!(
                Instant::now() < deadline,
                "the simulator host did not start in 30 s"
            );
        };
        if !started {
            let _ = child.wait();
            why.clear();
            if let Some(mut e) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut why);
            }
            continue;
        }
        // Drain both pipes so the host never blocks on a full one.
        let err = child.stderr.take();
        std::thread::spawn(move || {
            if let Some(e) = err {
                for _ in BufReader::new(e).lines() {}
            }
        });
        std::thread::spawn(move || for _ in lines {});
        return Some(Host {
            child,
            url: format!("http://127.0.0.1:{port}/graphql"),
        });
    }
    panic!("the simulator host did not start (4 tries); its last words:\n{why}");
}

fn events(host: &Host) -> Vec<Value> {
    let url = host.url.replace("/graphql", "/__events");
    let body = std::process::Command::new("curl")
        .args(["-s", &url])
        .output()
        .map(|o| o.stdout)
        .unwrap_or_default();
    serde_json::from_slice(&body).unwrap_or_default()
}

fn input(code: &str) -> ScanEventInput {
    ScanEventInput {
        code: code.into(),
        reward_points: None,
        data: json!({"scanId": uuid::Uuid::new_v4().to_string()}).to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_reads_the_appsync_simulators_answers_as_it_reads_appsyncs() {
    let Some(host) = start() else { return };
    let c = Client::new(host.url.parse().unwrap(), &Secret::new(WORKSPACE), None).unwrap();
    c.warmup().await.unwrap();
    let p = c.pass_by_scan_code("VALID-0001").await.unwrap().unwrap();
    assert_eq!(p.id, "pass-valid-1");
    assert_eq!(p.expires.unwrap().year(), 2099);
    assert!(c.pass_by_scan_code("NOPE").await.unwrap().is_none());
    // A document that does not fit: graphql-js words, the same class.
    let r = c
        .execute(
            "Bad",
            "query Bad { passByScanCode(code: \"x\") { id nosuchfield } }",
            json!({}),
        )
        .await
        .expect("HTTP 200");
    assert!(r.data.is_none());
    assert_eq!(
        classify_gql_errors(&r.errors),
        Some(ErrorClass::Mismatch),
        "{:?}",
        r.errors
    );
    // A value AppSync's AWSJSON cannot parse, and an Int that does not fit: a mismatch naming
    // the variable.
    let mut bad = input("VALID-0001");
    bad.data = "{not json".into();
    let e = c.create_scan_event(&bad).await.unwrap_err();
    assert_eq!(e.class, ErrorClass::Mismatch, "{e}");
    assert_eq!(e.variable.as_deref(), Some("input"), "{e}");
    let mut huge = input("VALID-0001");
    huge.reward_points = Some(5_000_000_000);
    let e = c
        .create_scan_events(&[input("VALID-0001"), huge])
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Mismatch, "{e}");
    assert_eq!(e.variable.as_deref(), Some("i1"), "{e}");
    assert!(events(&host).is_empty(), "a refused document runs nothing");
    // A Lambda that throws inside a batch: the aliases before ran, the failing one is
    // ambiguous, the ones after did not run.
    let out = c
        .create_scan_events(&[
            input("VALID-0001"),
            input("THROW-0001"),
            input("VALID-0001"),
        ])
        .await
        .unwrap();
    assert_eq!(
        out[0],
        AliasOutcome::Sent {
            event_id: None,
            voided: false
        }
    );
    assert!(
        matches!(
            &out[1],
            AliasOutcome::Failed {
                class: ErrorClass::Ambiguous,
                ..
            }
        ),
        "{out:?}"
    );
    assert_eq!(out[2], AliasOutcome::NotRun);
    assert_eq!(events(&host).len(), 1, "stopped at the failing field");
    // The authorizer's refusal.
    let wrong = Client::new(host.url.parse().unwrap(), &Secret::new("wrong"), None).unwrap();
    let e = wrong.warmup().await.unwrap_err();
    assert_eq!((e.class, e.status), (ErrorClass::Auth, Some(401)));
    // Introspection: every document the daemon sends fits the simulator's schema.
    let r = c
        .execute(
            "Introspection",
            tiketo_gate::api::introspect::QUERY,
            json!({}),
        )
        .await
        .unwrap();
    let sdl = tiketo_gate::api::introspect::sdl_from_introspection(&r.data.unwrap()).unwrap();
    let schema = tiketo_gate::api::introspect::schema(&sdl).unwrap();
    let breaks = tiketo_gate::api::introspect::check(&schema, &tiketo_gate::api::documents_sent());
    assert_eq!(breaks, vec![]);
}

#[test]
fn the_daemon_runs_its_door_against_the_appsync_simulator() {
    let Some(host) = start() else { return };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), format!("{WORKSPACE}\n")).unwrap();
    let cfg = dir.path().join("config.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"[device]
name = "appsync-door"
state_dir = "{dir}/state"

[api]
url = "{url}"
token_file = "{dir}/token"
timeout_ms = 3000

[reader]
kind = "stdin"

[offline]
policy = "reject"

[outputs]
backend = "sim"
sim_log = "{dir}/outputs.jsonl"
relay = {{ pin = 17, pulse_ms = 100 }}
green = {{ pin = 27, pulse_ms = 100 }}
red = {{ pin = 22, pulse_ms = 100 }}
"#,
            dir = dir.path().display(),
            url = host.url
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tiketo-gate"))
        .args(["run", "--config"])
        .arg(&cfg)
        .env_remove("TIKETO_GATE_TOKEN")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    let sink = log.clone();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let mut s = sink.lock().unwrap();
            s.push_str(&line);
            s.push('\n');
        }
    });
    let wait_for = |needle: &str, n: usize| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if log.lock().unwrap().matches(needle).count() >= n {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("no {needle:?} (x{n}) in:\n{}", log.lock().unwrap());
    };
    wait_for("enrolled: this device now uses its own token", 1);
    let mut stdin = child.stdin.take().unwrap();
    for (i, code) in ["VALID-0001", "VOIDED-0001", "EXPIRED-0001", "NOPE-0001"]
        .iter()
        .enumerate()
    {
        writeln!(stdin, "{code}").unwrap();
        wait_for(" scan ", i + 1);
    }
    drop(stdin);
    let status = child.wait().unwrap();
    assert!(status.success(), "{}", log.lock().unwrap());
    let log = log.lock().unwrap().clone();
    let scans: Vec<&str> = log.lines().filter(|l| l.contains(" scan ")).collect();
    let f = |l: &str, k: &str| common::field(l, k).map(str::to_owned);
    let got: Vec<(Option<String>, Option<String>, Option<String>)> = scans
        .iter()
        .map(|l| (f(l, "verdict"), f(l, "reason"), f(l, "mode")))
        .collect();
    let want = |v: &str, r: &str| {
        (
            Some(v.to_owned()),
            Some(r.to_owned()),
            Some("online".to_owned()),
        )
    };
    assert_eq!(
        got,
        vec![
            want("accept", "valid"),
            want("reject", "voided"),
            want("reject", "expired"),
            want("reject", "not_found"),
        ],
        "{log}"
    );
    let ev = events(&host);
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!(ev[0]["code"], "VALID-0001");
    // AppSync hands an AWSJSON input to the resolver parsed.
    let data = match &ev[0]["data"] {
        Value::String(s) => serde_json::from_str(s).unwrap(),
        v => v.clone(),
    };
    assert_eq!(data["device"], "appsync-door");
    for code in ["VALID-0001", "VOIDED-0001", "EXPIRED-0001", WORKSPACE] {
        assert!(!log.contains(code), "{code} in the log");
    }
}
