//! `tiketo-gate doctor` from outside, as an installer runs it: against tiketo-sim, a schema
//! that changed, introspection switched off, a captive portal, a dead network, a revoked
//! device, a broken config. Every network step is bounded; no token and no full code shows.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;
use tiketo_sim::{Sim, SimOptions};

const TOKEN: &str = "doctor-workspace-token-77";

fn config(dir: &Path, url: &str) -> std::path::PathBuf {
    let token = dir.join("token");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o640)).unwrap();
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/demo.toml"))
        .unwrap()
        .replace("http://127.0.0.1:8787/graphql", url)
        .replace("config/demo-token", &token.display().to_string())
        .replace(
            "target/demo-state",
            &dir.join("state").display().to_string(),
        )
        // Each test its own guest screen address (doctor checks that it is free).
        .replace(
            "127.0.0.1:9181",
            &format!("127.0.0.1:{}", common::free_port()),
        );
    let path = dir.join("config.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs doctor; (exit code, the JSON report, wall time).
fn doctor(config: &Path, extra: &[&str]) -> (i32, Value, Duration) {
    let t = Instant::now();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tiketo-gate"))
        .arg("doctor")
        .arg("--config")
        .arg(config)
        .arg("--json")
        .args(extra)
        .env_remove("TIKETO_GATE_TOKEN")
        .output()
        .unwrap();
    let took = t.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !stdout.contains(TOKEN),
        "the token is in the report: {stdout}"
    );
    let v: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    (out.status.code().unwrap_or(-1), v, took)
}

fn line<'a>(v: &'a Value, name: &str) -> &'a Value {
    v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no {name} line: {v}"))
}

async fn sim(opts: SimOptions) -> Sim {
    Sim::start(SimOptions {
        token: TOKEN.into(),
        ..opts
    })
    .await
    .unwrap()
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn against_the_sim_with_the_demo_config_every_line_is_fine() {
    let sim = sim(SimOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &sim.url());
    let (code, v, took) = blocking(move || doctor(&cfg, &[])).await;
    eprintln!("doctor against tiketo-sim: {} ms", took.as_millis());
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["ok"], true);
    for c in v["checks"].as_array().unwrap() {
        // This machine's clock may not be NTP-synced; a door's is.
        if c["name"] == "clock" && !tiketo_gate::clock::clock_synced() {
            assert!(c["message"].as_str().unwrap().contains("NOT synced"), "{c}");
            continue;
        }
        assert_eq!(c["status"], "ok", "{c}");
    }
    for name in [
        "config",
        "token",
        "state_dir",
        "store",
        "dns",
        "tcp",
        "http",
        "auth",
        "schema",
        "reader:reader",
        "lines",
        "display",
    ] {
        line(&v, name);
    }
    assert!(line(&v, "schema")["message"]
        .as_str()
        .unwrap()
        .contains("fits the live schema"));
    // Nothing changed: no state directory made, nothing sent but reads.
    assert!(!dir.path().join("state").exists());
    assert!(sim.scan_events().is_empty());
    assert!(sim.registrations().is_empty());
    // The text report.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tiketo-gate"))
        .args(["doctor", "--config"])
        .arg(dir.path().join("config.toml"))
        .env_remove("TIKETO_GATE_TOKEN")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("✓ schema"), "{text}");
    assert!(text.lines().last().unwrap().starts_with("ready"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_that_changed_names_the_operation_and_the_field() {
    let drifted = tiketo_sim::SCHEMA_SDL.replace(
        "input ScanEventInput {\n  code: String!",
        "input ScanEventInput {\n  venue: String!\n  code: String!",
    );
    let sim = sim(SimOptions {
        schema: Some(drifted),
        ..SimOptions::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &sim.url());
    let (code, v, _) = blocking(move || doctor(&cfg, &[])).await;
    assert_eq!(code, 1, "{v}");
    let s = line(&v, "schema");
    assert_eq!(s["status"], "fail", "{s}");
    let msg = s["message"].as_str().unwrap();
    assert!(
        msg.contains("CreateScanEvent") && msg.contains("ScanEventInput.venue"),
        "{msg}"
    );
    assert!(
        s["fix"].as_str().unwrap().contains("update tiketo-gate"),
        "{s}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn introspection_switched_off_is_a_warning_not_a_failure() {
    let sim = sim(SimOptions {
        introspection: false,
        ..SimOptions::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &sim.url());
    let (code, v, _) = blocking(move || doctor(&cfg, &[])).await;
    assert_eq!(code, 0, "{v}");
    let s = line(&v, "schema");
    assert_eq!(s["status"], "warn", "{s}");
    assert!(s["message"].as_str().unwrap().starts_with("skipped"), "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_device_token_is_refused_with_what_to_do() {
    let sim = sim(SimOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &sim.url());
    let c2 = cfg.clone();
    let out = blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_tiketo-gate"))
            .args(["enroll", "--config"])
            .arg(&c2)
            .env_remove("TIKETO_GATE_TOKEN")
            .output()
            .unwrap()
    })
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let c2 = cfg.clone();
    let (code, v, _) = blocking(move || doctor(&c2, &[])).await;
    assert_eq!(code, 0, "{v}");
    assert!(line(&v, "auth")["message"]
        .as_str()
        .unwrap()
        .contains("device token"));
    let device = sim.device_tokens();
    sim.revoke_device_tokens();
    let (code, v, _) = blocking(move || doctor(&cfg, &[])).await;
    assert_eq!(code, 1, "{v}");
    let a = line(&v, "auth");
    assert_eq!(a["status"], "fail", "{a}");
    assert!(a["fix"].as_str().unwrap().contains("enroll --force"), "{a}");
    for t in device {
        assert!(
            !v.to_string().contains(&t),
            "the device token is in the report"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_captive_portal_a_refused_port_and_a_black_hole_are_clear_lines() {
    // A captive portal: HTML for every request.
    let portal = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let portal_url = format!("http://{}/graphql", portal.local_addr().unwrap());
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for s in portal.incoming() {
            let Ok(mut s) = s else { continue };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let body = "<html><body>Welcome to Venue WiFi. Please log in.</body></html>";
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &portal_url);
    let (code, v, _) = blocking(move || doctor(&cfg, &[])).await;
    assert_eq!(code, 1, "{v}");
    let h = line(&v, "http");
    assert_eq!(h["status"], "fail", "{h}");
    assert!(
        h["message"].as_str().unwrap().contains("not GraphQL"),
        "{h}"
    );
    assert!(h["fix"].as_str().unwrap().contains("captive portal"), "{h}");
    // Nothing listens there.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/graphql", free.local_addr().unwrap());
    drop(free);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &url);
    let (code, v, took) = blocking(move || doctor(&cfg, &[])).await;
    assert_eq!(code, 1, "{v}");
    assert_eq!(line(&v, "tcp")["status"], "fail", "{v}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    // A black hole (packets dropped): a line after the step's bound, not a hang. The
    // address is one of TEST-NET-1's (RFC 5737), never routed.
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "http://192.0.2.1:9/graphql");
    std::fs::write(
        dir.path().join("config.toml"),
        std::fs::read_to_string(&cfg)
            .unwrap()
            .replace("http://192.0.2.1:9/graphql", "https://192.0.2.1:9/graphql"),
    )
    .unwrap();
    let (code, v, took) = blocking(move || doctor(&cfg, &[])).await;
    assert_eq!(code, 1, "{v}");
    assert_eq!(line(&v, "tcp")["status"], "fail", "{v}");
    assert!(took < Duration::from_secs(8), "bounded: {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_config_is_one_line_naming_the_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "http://127.0.0.1:1/graphql");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("policy = \"cache\"", "policy = \"sometimes\"");
    std::fs::write(&cfg, text).unwrap();
    let (code, v, _) = blocking(move || doctor(&cfg, &[])).await;
    assert_eq!(code, 1);
    let c = line(&v, "config");
    assert_eq!(c["status"], "fail");
    let msg = c["message"].as_str().unwrap();
    assert!(
        msg.contains("config.toml") && msg.contains("offline.policy"),
        "{msg}"
    );
    assert_eq!(v["checks"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_waits_for_a_code_and_shows_it_masked_with_its_verdict_recording_nothing() {
    let sim = sim(SimOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &sim.url());
    let pty = common::Pty::new();
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "kind = \"stdin\"",
        &format!(
            "kind = \"serial\"\npath = \"{}\"\nbaud = 115200",
            pty.slave_path().display()
        ),
    );
    std::fs::write(&cfg, text).unwrap();
    let mut master = pty.master.try_clone().unwrap();
    let run = tokio::task::spawn_blocking(move || doctor(&cfg, &["--scan", "--scan-wait", "20"]));
    tokio::time::sleep(Duration::from_millis(700)).await;
    use std::io::Write;
    master.write_all(b"VALID-0001\r\n").unwrap();
    let (code, v, _) = run.await.unwrap();
    assert_eq!(code, 0, "{v}");
    let r = line(&v, "reader:reader");
    assert!(
        r["message"]
            .as_str()
            .unwrap()
            .contains("opens at 115200 baud"),
        "{r}"
    );
    let s = line(&v, "scan:reader");
    assert_eq!(s["status"], "ok", "{s}");
    let msg = s["message"].as_str().unwrap();
    assert!(msg.contains("…0001") && msg.contains("accept"), "{msg}");
    assert!(
        !v.to_string().contains("VALID-0001"),
        "the whole code is in the report"
    );
    assert!(sim.scan_events().is_empty(), "nothing recorded");
    drop(pty);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_daemon_running_readers_are_reported_as_held_and_pulses_refused() {
    let h = common::Harness::start(common::Opts::default()).await;
    let cfg = h.config_path();
    let (_, v, _) = blocking(move || doctor(&cfg, &["--outputs"])).await;
    let r = line(&v, "reader:reader");
    assert_eq!(r["status"], "ok", "{r}");
    assert!(
        r["message"]
            .as_str()
            .unwrap()
            .contains("held by the running daemon"),
        "{r}"
    );
    let o = line(&v, "outputs");
    assert_eq!(o["status"], "fail", "{o}");
    assert!(o["fix"].as_str().unwrap().contains("systemctl stop"), "{o}");
    assert!(
        h.outputs().iter().all(|c| !c.on || c.output != "relay"),
        "nothing pulsed"
    );
}

/// The guest screen's address taken by another program: a ✗ that says so; the opening hours
/// get a line by the lanes' rule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_screen_address_fails_and_the_hours_get_a_line() {
    let sim = sim(SimOptions::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &sim.url());
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let text = std::fs::read_to_string(&cfg).unwrap();
    let text = text
        .lines()
        .map(|l| {
            if l.starts_with("listen = ") {
                format!("listen = \"127.0.0.1:{port}\"")
            } else if l.starts_with("projects = ") {
                format!("{l}\nhours = [\"Daily 00:00-24:00\"]")
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&cfg, text).unwrap();
    let (code, v, _) = blocking(move || doctor(&cfg, &[])).await;
    assert_eq!(code, 1, "{v}");
    let d = line(&v, "display");
    assert_eq!(d["status"], "fail", "{d}");
    assert!(d["fix"].as_str().unwrap().contains("display.listen"), "{d}");
    let h = line(&v, "hours:reader");
    if tiketo_gate::clock::clock_synced() {
        assert_eq!(h["status"], "ok", "{h}");
        assert!(
            h["message"].as_str().unwrap().starts_with("open now"),
            "{h}"
        );
    } else {
        assert_eq!(h["status"], "warn", "{h}");
        assert!(h["message"].as_str().unwrap().contains("not synced"), "{h}");
    }
    drop(taken);
}
