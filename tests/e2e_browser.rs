//! The status page in a real browser: headless Chromium driven by chromedriver (WebDriver over
//! HTTP), a code written to the pseudo-terminal reader, and the scan on the page within two
//! seconds. The screenshot is kept in `target/test-artifacts/status-page.png`.

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
                     "--disable-sync", "--window-size=900,1000", format!("--user-data-dir={}", profile.path().display())]
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
}
