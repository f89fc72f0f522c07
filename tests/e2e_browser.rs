//! The status page in a real browser: headless Chromium driven by chromedriver (WebDriver over
//! HTTP), a code written to the pseudo-terminal reader, and the scan on the page within two
//! seconds. The screenshot is kept in `target/test-artifacts/status-page.png`. The guest screen
//! likewise: each kind of verdict on it, timed, and photographed (`target/test-artifacts/`, and
//! `tests/screenshots/` with `TIKETO_UPDATE_SCREENSHOTS=1`).

mod common;

use std::time::{Duration, Instant};

use common::{free_port, Harness, Opts};
use serde_json::{json, Value};

struct Driver {
    child: std::process::Child,
    base: String,
    session: String,
    http: reqwest::Client,
    _profile: tempfile::TempDir,
}

impl Driver {
    async fn start() -> Driver {
        Driver::start_sized(900, 1000).await
    }

    /// A browser whose window is `w` x `h` (the official 7" touch display: 800 x 480).
    async fn start_sized(w: u32, h: u32) -> Driver {
        tiketo_gate::api::install_crypto_provider();
        let port = free_port();
        let child = std::process::Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("chromedriver is installed (apt-get install chromium chromium-driver)");
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let start = Instant::now();
        while http.get(format!("{base}/status")).send().await.is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "chromedriver did not start"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = tempfile::tempdir().unwrap();
        let caps = json!({"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                     "--no-first-run", "--disable-background-networking", "--disable-component-update",
                     "--disable-sync", format!("--window-size={w},{h}"), "--hide-scrollbars", format!("--user-data-dir={}", profile.path().display())]
        }}}});
        let v: Value = http
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let session = v["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {v}"))
            .to_owned();
        Driver {
            child,
            base,
            session,
            http,
            _profile: profile,
        }
    }

    /// A browser whose page is exactly the official 7" touch display's 800 x 480 (the window's
    /// own frame would take some of a window size).
    async fn touch_display() -> Driver {
        let d = Driver::start_sized(800, 600).await;
        d.cmd(
            "goog/cdp/execute",
            json!({"cmd": "Emulation.setDeviceMetricsOverride",
                   "params": {"width": 800, "height": 480, "deviceScaleFactor": 1, "mobile": false}}),
        )
        .await;
        d
    }

    async fn cmd(&self, path: &str, body: Value) -> Value {
        let v: Value = self
            .http
            .post(format!("{}/session/{}/{path}", self.base, self.session))
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["value"].clone()
    }

    async fn script(&self, js: &str) -> Value {
        self.cmd("execute/sync", json!({"script": js, "args": []}))
            .await
    }

    async fn screenshot(&self, path: &std::path::Path) {
        let v: Value = self
            .http
            .get(format!("{}/session/{}/screenshot", self.base, self.session))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let b64 = v["value"].as_str().unwrap();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, base64_decode(b64)).unwrap();
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // End the session first: chromedriver then quits Chromium, which would otherwise
        // outlive it (and every test run would leave a browser behind). Plain blocking HTTP:
        // this also runs while a failed test unwinds.
        use std::io::{Read, Write};
        let addr = self.base.trim_start_matches("http://");
        if let Ok(mut s) = std::net::TcpStream::connect(addr) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
            let _ = write!(
                s,
                "DELETE /session/{} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                self.session
            );
            // The answer comes once the browser is gone; its headers are enough.
            let mut answer = Vec::new();
            let mut buf = [0u8; 1024];
            while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => answer.extend_from_slice(&buf[..n]),
                }
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    let table = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => (c - b'A') as u32,
            b'a'..=b'z' => (c - b'a' + 26) as u32,
            b'0'..=b'9' => (c - b'0' + 52) as u32,
            b'+' => 62,
            b'/' => 63,
            _ => 0,
        }
    };
    let bytes: Vec<u8> = s.bytes().filter(|c| !c.is_ascii_whitespace()).collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, c)| acc | table(*c) << (18 - 6 * i));
        out.push((n >> 16) as u8);
        if chunk.len() > 2 && chunk[2] != b'=' {
            out.push((n >> 8) as u8);
        }
        if chunk.len() > 3 && chunk[3] != b'=' {
            out.push(n as u8);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_appears_on_the_status_page_within_two_seconds() {
    let port = free_port();
    let tail =
        format!("[http]\nlisten = \"127.0.0.1:{port}\"\nadmin_token = \"admin-token-7c1e9f3b\"\n");
    let mut h = Harness::start(Opts {
        tail,
        ..Opts::default()
    })
    .await;
    let d = Driver::start().await;
    d.cmd("url", json!({"url": format!("http://127.0.0.1:{port}/")}))
        .await;
    // The page is up and live (it says online once its first poll came back).
    let start = Instant::now();
    while d
        .script("return document.getElementById('mode').textContent")
        .await
        != "online"
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the page never showed the state"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    h.write(b"VALID-0001\r\n");
    let line = h.wait_scan(1);
    let decided = Instant::now();
    let rows = loop {
        let rows = d
            .script("return document.getElementById('scans').innerText")
            .await;
        let text = rows.as_str().unwrap_or("").to_owned();
        if text.contains("…0001") && text.contains("accept") {
            break text;
        }
        assert!(
            decided.elapsed() < Duration::from_secs(2),
            "not on the page 2 s after the scan ({line}):\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(!rows.contains("VALID-0001"), "full code on the page");
    // The output-test buttons are there (a token is configured).
    let buttons = d
        .script("return document.querySelectorAll('button[data-output]').length")
        .await;
    assert_eq!(buttons, 5);
    let shot = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/test-artifacts/status-page.png");
    d.screenshot(&shot).await;
    let png = std::fs::read(&shot).unwrap();
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    h.unplug();
    h.wait_log("reader disconnected", Duration::from_secs(10));
    let start = Instant::now();
    while d
        .script("return document.getElementById('reader').textContent")
        .await
        != "disconnected"
    {
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "the page did not show the unplugged reader"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A lockdown (a remote command's, as the store holds it) has a card of its own.
    h.plug();
    h.kill9();
    tiketo_gate::store::Store::open(&tiketo_gate::store::Store::path_in(
        &h.dir.path().join("state"),
    ))
    .unwrap()
    .set_overrides(
        &["reader".into()],
        Some(tiketo_gate::store::OverrideMode::Lockdown),
        Some("ld-page"),
        "{}",
    )
    .unwrap();
    h.restart_daemon();
    let start = Instant::now();
    loop {
        let text = d
            .script("const c = document.getElementById('overridecard'); return c.hidden ? '' : c.innerText")
            .await;
        if text.as_str().unwrap_or("").contains("LOCKDOWN reader") {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the page did not show the lockdown: {text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Where a guest-screen photograph goes.
fn shot_path(name: &str) -> std::path::PathBuf {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    if std::env::var_os("TIKETO_UPDATE_SCREENSHOTS").is_some() {
        root.join("tests/screenshots")
            .join(format!("guest-{name}.png"))
    } else {
        root.join("target/test-artifacts")
            .join(format!("guest-{name}.png"))
    }
}

fn now_ms() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        * 1000.0
}

/// The screen as the page shows it: (screen, headline text, seq, shownAt ms).
async fn screen(d: &Driver) -> (String, String, u64, f64) {
    let v = d
        .script(
            "var b = document.body; return [b.dataset.screen, document.getElementById('headline').textContent, \
             Number(b.dataset.seq || 0), Number(b.dataset.shownAt || 0)]",
        )
        .await;
    (
        v[0].as_str().unwrap_or("").to_owned(),
        v[1].as_str().unwrap_or("").to_owned(),
        v[2].as_u64().unwrap_or(0),
        v[3].as_f64().unwrap_or(0.0),
    )
}

/// Writes `bytes` to the reader and waits for the verdict after `seq` on the screen: (screen,
/// headline, its seq, ms from the code's last byte to the screen showing it).
async fn scan_to_screen(
    h: &mut Harness,
    d: &Driver,
    bytes: &[u8],
    seq: u64,
) -> (String, String, u64, f64) {
    h.write(bytes);
    let written = now_ms();
    let start = Instant::now();
    loop {
        let (s, text, n, shown) = screen(d).await;
        if n > seq {
            return (s, text, n, shown - written);
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "no verdict on the screen 5 s after {:?}; log:\n{}",
            String::from_utf8_lossy(bytes),
            h.logs()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn wait_screen(d: &Driver, want: &str, within: Duration) -> (String, String) {
    let start = Instant::now();
    loop {
        let (s, text, _, _) = screen(d).await;
        if s == want {
            return (s, text);
        }
        assert!(
            start.elapsed() < within,
            "screen {s:?} ({text}), not {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The guest screen in headless Chromium at the official touch display's size: idle, then
/// each kind of verdict in words a guest understands, pushed (no polling) and back to idle
/// after `hold_ms`; the holder's greeting online and, from the cache, offline; the offline
/// mark; never a full code. Prints the latency from the code's last byte to the screen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guest_screen_says_why() {
    let port = free_port();
    let tail = format!(
        "[display]\nlisten = \"127.0.0.1:{port}\"\ngreeting = \"Welcome, {{firstName}}!\"\nhold_ms = 1500\ndoor = \"Main hall\"\n"
    );
    let mut h = Harness::start(Opts {
        tail,
        policy: "cache",
        ..Opts::default()
    })
    .await;
    let d = Driver::touch_display().await;
    d.cmd("url", json!({"url": format!("http://127.0.0.1:{port}/")}))
        .await;
    let (_, idle) = wait_screen(&d, "idle", Duration::from_secs(10)).await;
    let start = Instant::now();
    while screen(&d).await.1.is_empty() {
        assert!(start.elapsed() < Duration::from_secs(10), "no idle line");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let idle = if idle.is_empty() {
        screen(&d).await.1
    } else {
        idle
    };
    assert_eq!(idle, "Hold your pass to the reader");
    let door = d
        .script("return document.getElementById('door').textContent")
        .await;
    assert_eq!(door, "Main hall");
    d.screenshot(&shot_path("idle")).await;

    let mut seq = 0;
    let mut latencies = Vec::new();
    let cases: [(&[u8], &str, &str, Option<&str>); 8] = [
        (
            b"VALID-0001\r\n",
            "accept",
            "Welcome, Anna!",
            Some("accept"),
        ),
        (b"VALID-0003\r\n", "accept", "Welcome", None),
        (
            b"EXPIRED-0001\r\n",
            "reject",
            "This pass has expired",
            Some("expired"),
        ),
        (
            b"OTHER-0001\r\n",
            "reject",
            "This pass is not valid at this door",
            Some("wrong-door"),
        ),
        (
            b"BAD\x01CODE\r\n",
            "attention",
            "Please try again",
            Some("try-again"),
        ),
        (
            b"NOPE-9999\r\n",
            "reject",
            "This pass is not known here",
            Some("not-found"),
        ),
        (
            b"VOIDED-0001\r\n",
            "reject",
            "This pass has been cancelled",
            Some("voided"),
        ),
        (
            b"REFUSED-0001\r\n",
            "reject",
            "This pass cannot be used now",
            Some("refused"),
        ),
    ];
    for (bytes, want_screen, want_text, shot) in cases {
        let (s, text, n, ms) = scan_to_screen(&mut h, &d, bytes, seq).await;
        seq = n;
        assert_eq!((s.as_str(), text.as_str()), (want_screen, want_text));
        latencies.push(ms);
        if let Some(name) = shot {
            d.screenshot(&shot_path(name)).await;
        }
    }
    // Back to idle after hold_ms (1.5 s), not before.
    let shown = Instant::now();
    wait_screen(&d, "idle", Duration::from_secs(4)).await;
    assert!(
        shown.elapsed() >= Duration::from_millis(1000),
        "idle too early"
    );
    // The greeting has a placeholder: the lookups asked for the pass's parameters.
    let lookups = h.sim.requests_for("passByScanCode");
    assert!(!lookups.is_empty() && lookups.iter().all(|r| r.query.contains("parameters")));
    let html = d.script("return document.documentElement.outerHTML").await;
    let html = html.as_str().unwrap();
    for code in ["VALID-0001", "EXPIRED-0001", "NOPE-9999", "OTHER-0001"] {
        assert!(!html.contains(code), "a full code on the guest screen");
    }

    // Fifty more, for the figure: code's last byte -> verdict on the screen.
    for i in 0..50 {
        let code: &[u8] = if i % 2 == 0 {
            b"EXPIRED-0001\r\n"
        } else {
            b"VALID-0002\r\n"
        };
        let (_, _, n, ms) = scan_to_screen(&mut h, &d, code, seq).await;
        seq = n;
        latencies.push(ms);
    }
    let mut sorted = latencies.clone();
    sorted.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let p = |q: f64| sorted[((sorted.len() as f64 - 1.0) * q).round() as usize];
    eprintln!(
        "guest screen: code's last byte -> verdict shown, {} scans: median {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        sorted.len(),
        p(0.5),
        p(0.99),
        sorted[sorted.len() - 1]
    );
    // The bound, on the median (one slow moment of a shared machine is no failure).
    assert!(p(0.5) < 300.0, "median {:.1} ms", p(0.5));

    // Offline: the cached pass's greeting, anti-passback in words, and the offline mark.
    h.sim.stop().await;
    let (s, text, n, _) = scan_to_screen(&mut h, &d, b"VALID-0001\r\n", seq).await;
    seq = n;
    assert_eq!(
        (s.as_str(), text.as_str()),
        ("accept", "Welcome, Anna!"),
        "offline, from the cache"
    );
    let (s, text, _, _) = scan_to_screen(&mut h, &d, b"VALID-0001\r\n", seq).await;
    assert_eq!((s.as_str(), text.as_str()), ("reject", "Already used"));
    d.screenshot(&shot_path("already-used")).await;
    // A code never looked up, offline, with the cache policy: the door cannot tell.
    let (s, text, _, _) = scan_to_screen(&mut h, &d, b"NEVER-SEEN-0001\r\n", seq + 1).await;
    assert_eq!(
        (s.as_str(), text.as_str()),
        ("attention", "Please ask a member of staff")
    );
    d.screenshot(&shot_path("ask-staff")).await;
    wait_screen(&d, "idle", Duration::from_secs(4)).await;
    let start = Instant::now();
    while d
        .script("return getComputedStyle(document.getElementById('offline')).display")
        .await
        == "none"
    {
        assert!(start.elapsed() < Duration::from_secs(10), "no offline mark");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    d.screenshot(&shot_path("idle-offline")).await;
    h.check_invariants();
}

/// Outside the opening hours, in German: the screen says the door is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guest_screen_says_closed_in_german() {
    let port = free_port();
    let dates = common::dates_around_today();
    let rules: &'static str = Box::leak(
        format!("closed_dates = [{dates}]\nunsynced_clock = \"reject\"").into_boxed_str(),
    );
    let tail = format!(
        "[display]\nlisten = \"127.0.0.1:{port}\"\nlanguage = \"de\"\n[display.strings]\nidle = \"Karte bitte hier\"\n"
    );
    let mut h = Harness::start(Opts {
        tail,
        rules,
        ..Opts::default()
    })
    .await;
    let d = Driver::touch_display().await;
    d.cmd("url", json!({"url": format!("http://127.0.0.1:{port}/")}))
        .await;
    let start = Instant::now();
    while screen(&d).await.1 != "Karte bitte hier" {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no idle line: {:?}",
            screen(&d).await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (s, text, _, _) = scan_to_screen(&mut h, &d, b"VALID-0001\r\n", 0).await;
    assert_eq!(
        (s.as_str(), text.as_str()),
        ("reject", "Dieser Eingang ist jetzt geschlossen")
    );
    d.screenshot(&shot_path("closed-de")).await;
}

/// An event stream held open from `ip` (a loopback address of its own: another peer).
async fn hold_events(ip: &str, port: u16) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(format!("{ip}:0").parse().unwrap()).unwrap();
    let mut s = sock
        .connect(format!("127.0.0.1:{port}").parse().unwrap())
        .await
        .unwrap();
    s.write_all(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    s
}

async fn wait_idle(d: &Driver, within: Duration) {
    let start = Instant::now();
    while d
        .script("return document.body.classList.contains('is-lost') || !document.getElementById('headline').textContent")
        .await
        != json!(false)
    {
        assert!(start.elapsed() < within, "the page did not connect: {:?}", screen(d).await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The screen always gets in: with 20 other clients holding the event stream, the kiosk
/// browser reloading three times in a row shows the next verdict each time (the newest
/// connection is taken and another gives way); and the page never gives up: when the browser's
/// EventSource is refused for good (a 503 from whatever answered on the port while the daemon
/// was away) the page opens a new one itself and shows the next verdict once the daemon is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guest_screen_always_gets_in_and_never_gives_up() {
    let port = free_port();
    let tail = format!("[display]\nlisten = \"127.0.0.1:{port}\"\nhold_ms = 500\n");
    let mut h = Harness::start(Opts {
        tail,
        ..Opts::default()
    })
    .await;
    let mut others = Vec::new();
    for i in 1..=20 {
        others.push(hold_events(&format!("127.0.3.{i}"), port).await);
    }
    let d = Driver::touch_display().await;
    let mut seq = 0;
    for round in 0..3 {
        if round == 0 {
            d.cmd("url", json!({"url": format!("http://127.0.0.1:{port}/")}))
                .await;
        } else {
            d.cmd("refresh", json!({})).await;
            seq = 0;
        }
        wait_idle(&d, Duration::from_secs(3)).await;
        let (s, _, n, ms) = scan_to_screen(&mut h, &d, b"VALID-0001\r\n", seq).await;
        assert_eq!(s, "accept");
        seq = n;
        eprintln!(
            "round {round}: verdict on the screen {ms:.1} ms after the code, 20 other streams held"
        );
        // More clients keep coming meanwhile.
        for i in 0..5 {
            others.push(hold_events(&format!("127.0.4.{}", round * 5 + i + 1), port).await);
        }
    }
    drop(others);

    // The daemon away; something answers 503 on its port: the browser's EventSource closes for
    // good, the page wears its mark and keeps asking.
    h.kill9();
    let fake = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    fake.set_nonblocking(true).unwrap();
    let mut refused = 0;
    let start = Instant::now();
    while refused < 3 {
        match fake.accept() {
            Ok((mut s, _)) => {
                use std::io::{Read, Write};
                s.set_nonblocking(false).unwrap();
                s.set_read_timeout(Some(Duration::from_millis(500)))
                    .unwrap();
                let mut buf = [0u8; 1024];
                let n = s.read(&mut buf).unwrap_or(0);
                if String::from_utf8_lossy(&buf[..n]).starts_with("GET /events") {
                    refused += 1;
                }
                let _ = s.write_all(
                    b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                );
            }
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the page stopped asking after {refused} refused streams"
        );
    }
    assert_eq!(
        d.script("return document.body.classList.contains('is-lost')")
            .await,
        json!(true)
    );
    drop(fake);
    h.restart_daemon();
    // The page's next try is at most 10 s away.
    wait_idle(&d, Duration::from_secs(12)).await;
    // The new daemon counts its verdicts from 1 again.
    d.script("delete document.body.dataset.seq; return true")
        .await;
    let (s, _, _, _) = scan_to_screen(&mut h, &d, b"VALID-0002\r\n", 0).await;
    assert_eq!(s, "accept");
}
