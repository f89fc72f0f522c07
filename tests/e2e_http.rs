//! The HTTP endpoint: metrics checked by promtool, health, the status page's JSON and the
//! admin-token output tests, the connection limits.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::{free_port, Harness, Opts, TOKEN};

const T: Duration = Duration::from_secs(15);
const ADMIN: &str = "admin-token-7c1e9f3b";

fn opts(port: u16, admin: bool) -> Opts {
    let mut tail = format!("[http]\nlisten = \"127.0.0.1:{port}\"\n");
    if admin {
        tail.push_str(&format!("admin_token = \"{ADMIN}\"\n"));
    }
    Opts {
        tail,
        policy: "accept",
        budget_ms: 300,
        ..Opts::default()
    }
}

use common::http_get as get;

async fn post(port: u16, path: &str, token: Option<&str>) -> u16 {
    tiketo_gate::api::install_crypto_provider();
    let mut req = reqwest::Client::new().post(format!("http://127.0.0.1:{port}{path}"));
    if let Some(t) = token {
        req = req.header("x-admin-token", t);
    }
    req.send().await.unwrap().status().as_u16()
}

fn sample(metrics: &str, prefix: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix} in\n{metrics}"))
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_what_happened_and_pass_promtool() {
    let port = free_port();
    let mut h = Harness::start(opts(port, false)).await;
    h.write(b"VALID-0001\r\n");
    h.wait_scan(1);
    h.write(b"VOIDED-0001\r\n");
    h.wait_scan(2);
    h.write(b"\xff\xfe\r\n");
    h.wait_scan(3);
    h.sim.stop().await;
    h.write(b"VALID-0002\r\n");
    h.wait_scan(4);
    let (status, m) = get(port, "/metrics").await;
    assert_eq!(status, 200);
    assert_eq!(
        sample(
            &m,
            r#"tiketo_gate_scans_total{verdict="accept",reason="valid",mode="online"}"#
        ),
        1.0,
        "{m}"
    );
    assert_eq!(
        sample(
            &m,
            r#"tiketo_gate_scans_total{verdict="reject",reason="voided",mode="online"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(
            &m,
            r#"tiketo_gate_scans_total{verdict="reject",reason="malformed",mode="local"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(
            &m,
            r#"tiketo_gate_scans_total{verdict="accept",reason="offline_policy",mode="offline"}"#
        ),
        1.0
    );
    assert_eq!(sample(&m, "tiketo_gate_scan_decision_seconds_count"), 4.0);
    assert_eq!(sample(&m, "tiketo_gate_pending_events "), 1.0);
    assert_eq!(sample(&m, "tiketo_gate_reader_connected "), 1.0);
    assert_eq!(sample(&m, "tiketo_gate_enrolled "), 1.0);
    assert!(
        sample(
            &m,
            r#"tiketo_gate_api_requests_total{operation="PassByScanCode",outcome="ok"}"#
        ) >= 2.0
    );
    assert!(m.contains("tiketo_gate_build_info{version=\""), "{m}");
    assert!(!m.contains("VALID-0001") && !m.contains(TOKEN));
    // Prometheus asks for OpenMetrics and gets it.
    let om = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .header(
            "accept",
            "application/openmetrics-text;version=1.0.0,text/plain;q=0.5",
        )
        .send()
        .await
        .unwrap();
    assert!(om.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/openmetrics-text"));
    assert!(om.text().await.unwrap().ends_with("# EOF\n"));
    // promtool (Debian's prometheus package) lints a real scrape.
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .output_child();
    child
        .stdin
        .as_mut()
        .unwrap()
        .write_all(m.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}\n{m}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    h.check_invariants();
}

trait OutputChild {
    fn output_child(&mut self) -> std::process::Child;
}

impl OutputChild for std::process::Command {
    fn output_child(&mut self) -> std::process::Child {
        self.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("promtool is installed (apt-get install prometheus)")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_follows_the_reader() {
    let port = free_port();
    let mut h = Harness::start(opts(port, false)).await;
    assert_eq!(get(port, "/healthz").await, (200, "ok\n".to_string()));
    h.unplug();
    h.wait_log("reader disconnected", T);
    let (status, body) = get(port, "/healthz").await;
    assert_eq!(status, 503);
    assert!(body.contains("reader"), "{body}");
    h.plug();
    let mut ok = false;
    for _ in 0..100 {
        if get(port, "/healthz").await.0 == 200 {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "healthz never came back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_says_when_the_store_is_broken() {
    let port = free_port();
    let sim = tiketo_sim::Sim::start(tiketo_sim::SimOptions {
        token: TOKEN.into(),
        ..Default::default()
    })
    .await
    .unwrap();
    // A file where the state directory should be: the store cannot open.
    let h = {
        let mut h = Harness::start_unenrolled(sim, opts(port, false), Vec::new(), true).await;
        h.kill9();
        let state = h.dir.path().join("state");
        std::fs::remove_dir_all(&state).unwrap();
        std::fs::write(&state, "not a directory").unwrap();
        h.spawn_daemon();
        h
    };
    // The daemon restarts: nothing may listen yet.
    let mut got = (0, String::new());
    for _ in 0..100 {
        if let Some(g) = common::http_try_get(port, "/healthz").await {
            got = g;
            if got.0 == 503 {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(got.0, 503, "{got:?}");
    assert!(got.1.starts_with("store:"), "{got:?}");
    // Fixed by hand: the store opens on its next retry and health comes back.
    let state = h.dir.path().join("state");
    std::fs::remove_file(&state).unwrap();
    // The daemon's retry may make the directory itself first, the moment the file is gone.
    std::fs::create_dir_all(&state).unwrap();
    let mut ok = false;
    for _ in 0..150 {
        if common::http_try_get(port, "/healthz").await.map(|g| g.0) == Some(200) {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "healthz never came back:\n{}", h.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_json_shows_scans_masked_and_no_secrets() {
    let port = free_port();
    let mut h = Harness::start(opts(port, true)).await;
    h.write(b"VALID-0001\r\n");
    h.wait_scan(1);
    let (status, body) = get(port, "/api/status").await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["recent"][0]["code"], "…0001");
    assert_eq!(v["recent"][0]["verdict"], "accept");
    assert_eq!(v["mode"], "online");
    assert_eq!(v["reader_connected"], true);
    assert_eq!(v["admin"], true);
    let (_, page) = get(port, "/").await;
    assert!(page.contains("<title>tiketo-gate</title>"));
    for text in [&body, &page] {
        assert!(!text.contains("VALID-0001") && !text.contains(TOKEN) && !text.contains(ADMIN));
        for t in h.sim.device_tokens() {
            assert!(!text.contains(&t));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_tests_need_the_admin_token() {
    let port = free_port();
    let h = Harness::start(opts(port, true)).await;
    assert_eq!(post(port, "/api/pulse/relay", None).await, 403);
    assert_eq!(
        post(port, "/api/pulse/relay", Some("admin-token-7c1e9f3X")).await,
        403
    );
    assert!(!h.changes_of("relay").contains(&true));
    assert_eq!(post(port, "/api/pulse/nonsense", Some(ADMIN)).await, 404);
    assert_eq!(post(port, "/api/pulse/relay", Some(ADMIN)).await, 200);
    assert!(h.wait_switched("relay", true, 1, T));
    assert!(h.wait_switched("relay", false, 2, T));
    h.wait_log("output test: pulsed from the status page", T);
    h.wait_log("output test refused", T);
    assert!(!h.logs().contains(ADMIN), "the admin token is in the log");

    // Without a configured token there is nothing to press.
    let port2 = free_port();
    let h2 = Harness::start(opts(port2, false)).await;
    assert_eq!(post(port2, "/api/pulse/relay", Some(ADMIN)).await, 404);
    let (_, body) = get(port2, "/api/status").await;
    assert!(body.contains("\"admin\":false"), "{body}");
    assert!(!h2.changes_of("relay").contains(&true));
}

/// A connection from `ip` (any 127.x address is this machine's loopback: a peer of its own).
async fn connect_from(ip: &str, port: u16) -> std::net::TcpStream {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(format!("{ip}:0").parse().unwrap()).unwrap();
    let s = sock
        .connect(format!("127.0.0.1:{port}").parse().unwrap())
        .await
        .unwrap()
        .into_std()
        .unwrap();
    s.set_nonblocking(false).unwrap();
    s
}

fn healthz_over(mut s: std::net::TcpStream) -> std::io::Result<String> {
    s.set_read_timeout(Some(Duration::from_secs(3)))?;
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

/// 40 idle or slow connections from one peer do not keep another peer from its answer: a peer
/// holds at most `PER_PEER` connections (its own oldest make room for its newest), and a new
/// connection is always taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_excess_connections_cannot_exhaust_it() {
    let port = free_port();
    let mut h = Harness::start(opts(port, false)).await;
    let mut flood = Vec::new();
    for i in 0..40 {
        let mut s = connect_from("127.0.0.2", port).await;
        if i % 2 == 1 {
            // Slow: half a request line, then nothing.
            s.write_all(b"GET /metr").unwrap();
        }
        flood.push(s);
    }
    std::thread::sleep(Duration::from_millis(200));
    // Another peer is answered at once.
    let started = std::time::Instant::now();
    let out = healthz_over(connect_from("127.0.0.1", port).await).unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out:?}");
    eprintln!(
        "healthz beside 40 idle connections of another peer: {:?}",
        started.elapsed()
    );
    // The flooding peer kept only its newest.
    let mut closed = 0;
    for s in &mut flood {
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let mut buf = [0u8; 16];
        match s.read(&mut buf) {
            // Closed, or reset (a slow one had sent bytes nobody read).
            Ok(0) => closed += 1,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => closed += 1,
            _ => {}
        }
    }
    assert_eq!(
        closed,
        40 - tiketo_gate::http::PER_PEER,
        "closed of the flood"
    );
    // The flooding peer's newest idle connection still works.
    let out = healthz_over(flood.remove(38)).unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out:?}");
    // Scans go on meanwhile.
    h.write(b"VALID-0001\r\n");
    assert_eq!(common::field(&h.wait_scan(1), "verdict"), Some("accept"));
    // Sixteen peers, one idle connection each: full; a seventeenth is answered all the same.
    let mut many = Vec::new();
    for i in 0..tiketo_gate::http::MAX_CONNECTIONS {
        many.push(connect_from(&format!("127.0.1.{}", i + 1), port).await);
    }
    std::thread::sleep(Duration::from_millis(200));
    let out = healthz_over(connect_from("127.0.2.1", port).await).unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out:?}");
    drop((flood, many));
}

#[test]
fn the_shipped_alert_rules_pass_promtool() {
    let rules =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/prometheus-alerts.yml");
    let out = std::process::Command::new("promtool")
        .args(["check", "rules"])
        .arg(&rules)
        .output()
        .expect("promtool is installed (apt-get install prometheus)");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
