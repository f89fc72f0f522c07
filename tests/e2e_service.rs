//! Enrolment and the systemd integration, end to end.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use common::{field, wait_until, Harness, Opts, TOKEN};
use tiketo_sim::{Sim, SimOptions};

const T: Duration = Duration::from_secs(15);

async fn sim() -> Sim {
    Sim::start(SimOptions {
        token: TOKEN.into(),
        ..SimOptions::default()
    })
    .await
    .unwrap()
}

fn creds_path(h: &Harness) -> std::path::PathBuf {
    h.dir
        .path()
        .join("state")
        .join(tiketo_gate::enrol::FILE_NAME)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_start_enrols_once_and_then_uses_the_device_token() {
    let mut h = Harness::start(Opts::default()).await;
    assert_eq!(h.sim.registrations(), ["test-door"]);
    let meta = std::fs::metadata(creds_path(&h)).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let text = std::fs::read_to_string(creds_path(&h)).unwrap();
    let device_token = h.sim.device_tokens().pop().unwrap();
    assert!(text.contains(&device_token));
    assert!(!text.contains(TOKEN), "the workspace token is not kept");
    h.write(b"VALID-0001\r\n");
    assert_eq!(field(&h.wait_scan(1), "verdict"), Some("accept"));

    // A restart does not register again; the workspace token can be gone by then.
    h.kill9();
    std::fs::remove_file(h.dir.path().join("token")).unwrap();
    h.restart_daemon();
    h.write(b"VALID-0002\r\n");
    assert_eq!(field(&h.wait_scan(2), "verdict"), Some("accept"));
    assert_eq!(h.sim.registrations().len(), 1);
    let out = h.cli(&["check-config"]);
    assert!(
        out.status.success(),
        "enrolled: no workspace token needed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let st = h.status_json();
    assert_eq!(st["enrolled"], true);
    assert_eq!(st["workspace"], "Demo Venue");
    // check_invariants: every request but registerDevice used the device token, and no
    // token is in the log.
    h.check_invariants();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enroll_force_registers_again_and_without_force_does_nothing() {
    let mut h = Harness::start(Opts::default()).await;
    let out = h.cli(&["enroll"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("already enrolled"));
    assert_eq!(h.sim.registrations().len(), 1);
    let before = std::fs::read_to_string(creds_path(&h)).unwrap();
    let out = h.cli(&["enroll", "--force", "--name", "side-door"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(h.sim.registrations(), ["test-door", "side-door"]);
    let after = std::fs::read_to_string(creds_path(&h)).unwrap();
    assert_ne!(before, after);
    for t in h.sim.device_tokens() {
        assert!(!printed.contains(&t), "enroll printed a token");
    }
    assert!(!printed.contains(TOKEN));
    // The daemon picks the new token up at its next start.
    h.kill9();
    h.restart_daemon();
    h.write(b"VALID-0001\r\n");
    assert_eq!(field(&h.wait_scan(1), "verdict"), Some("accept"));
    h.check_invariants();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_device_token_shows_in_status_without_a_crash_loop() {
    let mut h = Harness::start(Opts {
        policy: "reject",
        ..Opts::default()
    })
    .await;
    h.sim.revoke_device_tokens();
    h.write(b"VALID-0001\r\n");
    let line = h.wait_scan(1);
    assert_eq!(field(&line, "verdict"), Some("reject"), "{line}");
    assert!(line.contains("auth error"), "{line}");
    assert!(
        wait_until(T, || h.status_json()["auth_error"].is_string()),
        "{}",
        h.status_json()
    );
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        h.child.as_mut().unwrap().try_wait().unwrap().is_none(),
        "the daemon exited"
    );
    let out = h.cli(&["status"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("AUTH ERROR"));
    // Re-enrolling by hand fixes it.
    let out = h.cli(&["enroll", "--force"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    h.kill9();
    h.restart_daemon();
    h.write(b"VALID-0002\r\n");
    assert_eq!(field(&h.wait_scan(2), "verdict"), Some("accept"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_at_first_boot_rejects_not_enrolled_then_enrols_when_the_api_is_back() {
    let mut s = sim().await;
    s.stop().await;
    let mut h = Harness::start_unenrolled(s, Opts::default(), Vec::new(), true).await;
    h.wait_log("reader connected", T);
    h.write(b"VALID-0001\r\n");
    let line = h.wait_scan(1);
    assert_eq!(field(&line, "reason"), Some("not_enrolled"), "{line}");
    assert!(!h.changes_of("relay").contains(&true));
    // Fast blink while not enrolled.
    assert!(wait_until(T, || h
        .changes_of("status")
        .iter()
        .filter(|on| **on)
        .count()
        >= 3));
    assert_eq!(h.status_json()["enrolled"], false);
    h.sim.restart().await.unwrap();
    h.wait_log(
        "enrolled: this device now uses its own token",
        Duration::from_secs(30),
    );
    h.write(b"VALID-0002\r\n");
    assert_eq!(field(&h.wait_scan(2), "verdict"), Some("accept"));
    h.check_invariants();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_workspace_token_can_come_from_a_systemd_credential() {
    let creds = tempfile::tempdir().unwrap();
    std::fs::write(creds.path().join("token"), TOKEN).unwrap();
    let env = vec![(
        "CREDENTIALS_DIRECTORY".to_string(),
        creds.path().display().to_string(),
    )];
    let h = Harness::start_unenrolled(sim().await, Opts::default(), env, false).await;
    h.wait_log("enrolled: this device now uses its own token", T);
    assert_eq!(h.sim.registrations().len(), 1);
    h.check_invariants();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifies_systemd_ready_and_feeds_the_watchdog() {
    let sock_dir = tempfile::tempdir().unwrap();
    let sock_path = sock_dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let env = vec![
        ("NOTIFY_SOCKET".to_string(), sock_path.display().to_string()),
        ("WATCHDOG_USEC".to_string(), "400000".to_string()),
    ];
    let mut h = Harness::start_unenrolled(sim().await, Opts::default(), env, true).await;
    let mut got = Vec::new();
    let start = std::time::Instant::now();
    let mut buf = [0u8; 4096];
    while start.elapsed() < Duration::from_secs(3) {
        if let Ok(n) = sock.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).to_string());
        }
    }
    let all = got.join("\n");
    assert!(all.contains("READY=1"), "{all}");
    let pings = got.iter().filter(|m| m.contains("WATCHDOG=1")).count();
    assert!(
        pings >= 3,
        "{pings} watchdog pings in 3 s with WATCHDOG_USEC=400ms:\n{all}"
    );
    assert!(all.contains("STATUS="), "{all}");
    h.signal("TERM");
    h.wait_exit(T).unwrap();
    let mut tail = String::new();
    while let Ok(n) = sock.recv(&mut buf) {
        tail.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(tail.contains("STOPPING=1"), "{tail}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_systemd_log_lines_carry_journal_priorities() {
    let s = sim().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.toml");
    std::fs::write(
        &cfg,
        format!(
            "[device]\nname = \"j\"\nstate_dir = \"{d}/state\"\n[api]\nurl = \"{url}\"\ntoken_file = \"{d}/token\"\n[reader]\nkind = \"stdin\"\n[outputs]\nbackend = \"sim\"\nsim_log = \"{d}/out.jsonl\"\nred = {{ pin = 22 }}\n",
            d = dir.path().display(),
            url = s.url()
        ),
    )
    .unwrap();
    std::fs::write(dir.path().join("token"), TOKEN).unwrap();
    let log_path = dir.path().join("stderr.log");
    let log = std::fs::File::create(&log_path).unwrap();
    use std::os::unix::fs::MetadataExt;
    let meta = log.metadata().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tiketo-gate"))
        .args(["run", "--config"])
        .arg(&cfg)
        .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
        .env_remove("TIKETO_GATE_TOKEN")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    drop(child.stdin.take());
    let status = child.wait().unwrap();
    assert!(status.success());
    let text = std::fs::read_to_string(&log_path).unwrap();
    assert!(!text.is_empty());
    for line in text.lines() {
        assert!(
            line.starts_with("<6>") || line.starts_with("<4>") || line.starts_with("<3>"),
            "{line}"
        );
        assert!(
            !line.contains(" INFO ") || !line[3..].starts_with("20"),
            "no timestamp under the journal: {line}"
        );
    }
    assert!(
        text.contains("<6> INFO starting; outputs in safe state"),
        "{text}"
    );
}

/// On a laptop, the example config fails only for the token it cannot have, says why and
/// how to check the file alone; `--file-only` checks syntax and values and nothing of this
/// machine, and still names the file, line and key of a mistake.
#[test]
fn check_config_file_only_needs_no_token_and_the_error_says_how() {
    let bin = env!("CARGO_BIN_EXE_tiketo-gate");
    let root = env!("CARGO_MANIFEST_DIR");
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(format!("{root}/config/example.toml"))
        .unwrap()
        .replace(
            "/etc/tiketo-gate/token",
            &format!("{}/no-token", dir.path().display()),
        )
        .replace(
            "/var/lib/tiketo-gate",
            &format!("{}/state", dir.path().display()),
        );
    let cfg = dir.path().join("door.toml");
    std::fs::write(&cfg, &text).unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(bin)
            .arg("check-config")
            .args(args)
            .arg("--config")
            .arg(&cfg)
            .env_remove("TIKETO_GATE_TOKEN")
            .output()
            .unwrap()
    };
    let out = run(&[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("not enrolled yet, and api.token_file"),
        "{err}"
    );
    assert!(
        err.contains("registers this device with the workspace API token"),
        "{err}"
    );
    assert!(err.contains("check-config --file-only --config"), "{err}");
    let out = run(&["--file-only"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("ok: "));
    std::fs::write(
        &cfg,
        text.replace("policy = \"cache\"", "policy = \"cashe\""),
    )
    .unwrap();
    let out = run(&["--file-only"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("door.toml:") && err.contains("offline.policy"),
        "{err}"
    );
}
