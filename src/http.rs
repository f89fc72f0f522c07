//! The daemon's HTTP endpoint (off unless `[http] listen` is set): `/metrics` (Prometheus),
//! `/healthz`, `/` (the installer's status page), `/api/status` (what the page polls) and
//! `POST /api/pulse/{output}` (wiring test; needs `[http] admin_token`).
//!
//! It never delays a scan: it runs on its own tasks and only reads shared state (the store
//! through the same one-at-a-time seam as everything else, for counts). A slow or hostile
//! client cannot exhaust the daemon or lock another client out: at most `MAX_CONNECTIONS` at
//! once and `PER_PEER` from one address, a new connection always taken and an older one closed
//! for it ([`crate::slots`]), 5 s to send the request headers, 8 KiB of body, 30 s per
//! connection.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::json;
use tokio::net::TcpListener;

use crate::clock::now_ms;
use crate::link::Mode;
use crate::mask::Secret;
use crate::outputs::feedback::Feedback;
use crate::state::Shared;
use crate::status::{PageExtras, Status};

pub const MAX_CONNECTIONS: usize = 16;
/// Connections one address may hold (a browser opens up to 6 to one host).
pub const PER_PEER: usize = 6;
const PAGE: &str = include_str!("status.html");

pub struct HttpState {
    pub shared: Shared,
    pub feedback: Feedback,
    pub device: String,
    pub admin_token: Option<Secret>,
    /// `store.max_pending`, for the status's `queue_full`.
    pub max_pending: u64,
}

/// Constant-time comparison (the length may leak; the content does not).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Accepts connections until the daemon stops, each on its own task, at most `limits.max` at
/// once and `limits.per_peer` from one address: a new connection is always taken, and the one
/// [`crate::slots::Slots`] chooses is closed to make room (logged at debug, with `what`). The
/// status endpoint's and the guest screen's.
pub async fn accept_loop<F, Fut>(
    listener: TcpListener,
    limits: crate::slots::Limits,
    what: &'static str,
    conn: F,
) where
    F: Fn(tokio::net::TcpStream) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    type Open = std::collections::HashMap<u64, tokio::sync::oneshot::Sender<()>>;
    let slots = Arc::new(std::sync::Mutex::new((
        crate::slots::Slots::default(),
        Open::new(),
    )));
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            continue;
        };
        let (close, closed) = tokio::sync::oneshot::channel();
        let id = {
            let mut guard = slots.lock().unwrap_or_else(|p| p.into_inner());
            let (s, open) = &mut *guard;
            let a = s.admit(peer.ip(), limits);
            if let Some(old) = a.evict.and_then(|e| open.remove(&e)) {
                tracing::debug!(%peer, "{what}: all connections taken; closing the one that gives way");
                let _ = old.send(());
            }
            open.insert(a.id, close);
            a.id
        };
        let served = conn(stream);
        let slots = slots.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = served => {}
                _ = closed => {}
            }
            let mut guard = slots.lock().unwrap_or_else(|p| p.into_inner());
            guard.0.release(id);
            guard.1.remove(&id);
        });
    }
}

/// One HTTP/1.1 connection's settings: 5 s for the request headers, 16 KiB of buffer.
pub fn http1() -> hyper::server::conn::http1::Builder {
    let mut b = hyper::server::conn::http1::Builder::new();
    b.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_secs(5))
        .max_buf_size(16 * 1024);
    b
}

/// Serves until the daemon stops.
pub async fn serve(listener: TcpListener, state: Arc<HttpState>) {
    let limits = crate::slots::Limits {
        max: MAX_CONNECTIONS,
        per_peer: PER_PEER,
    };
    accept_loop(listener, limits, "http", move |stream| {
        let state = state.clone();
        async move {
            let svc = hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(route(&state, req).await) }
            });
            let conn = http1().serve_connection(hyper_util::rt::TokioIo::new(stream), svc);
            let _ = tokio::time::timeout(Duration::from_secs(30), conn).await;
        }
    })
    .await
}

fn respond(
    status: StatusCode,
    content_type: &str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("cache-control", "no-store")
        .header("x-content-type-options", "nosniff")
        .body(Full::new(body.into()))
        .expect("valid response")
}

fn text(status: StatusCode, body: impl Into<String>) -> Response<Full<Bytes>> {
    respond(status, "text/plain; charset=utf-8", body.into())
}

async fn route(state: &HttpState, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let token = req
        .headers()
        .get("x-admin-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let openmetrics = req
        .headers()
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/openmetrics-text"));
    // Bodies are not used; read (at most 8 KiB) so keep-alive stays sound.
    if Limited::new(req.into_body(), 8 * 1024)
        .collect()
        .await
        .is_err()
    {
        return text(StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n");
    }
    match (method, path.as_str()) {
        (Method::GET, "/metrics") => metrics(state, openmetrics).await,
        (Method::GET, "/healthz") => healthz(state).await,
        (Method::GET, "/") => respond(StatusCode::OK, "text/html; charset=utf-8", PAGE),
        (Method::GET, "/api/status") => respond(
            StatusCode::OK,
            "application/json",
            status_json(state).await.to_string(),
        ),
        (Method::POST, p) if p.starts_with("/api/pulse/") => {
            pulse(state, &p["/api/pulse/".len()..], token.as_deref())
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// Refreshes the gauges that are read from the store or the clock.
async fn refresh_gauges(state: &HttpState) -> Result<(), String> {
    let m = crate::metrics::metrics();
    m.online
        .set((state.shared.api.link.mode() == Mode::Online) as i64);
    m.clock_synced.set(crate::clock::clock_synced() as i64);
    m.enrolled.set(state.shared.board.enrolled() as i64);
    m.api_mismatch.set(state.shared.api.has_mismatch() as i64);
    m.reader_connected
        .set(state.shared.board.all_readers_connected() as i64);
    let counts = state
        .shared
        .store
        .read(|s| s.outbox_counts())
        .await
        .map_err(|e| e.to_string())?;
    m.pending.set(counts.pending);
    m.dead.set(counts.dead);
    m.oldest_pending_age.set(
        counts
            .oldest_pending_ms
            .map(|t| (now_ms() - t).max(0) / 1000)
            .unwrap_or(0),
    );
    Ok(())
}

/// OpenMetrics for scrapers that ask for it (Prometheus does), the Prometheus text format
/// otherwise.
async fn metrics(state: &HttpState, openmetrics: bool) -> Response<Full<Bytes>> {
    let _ = refresh_gauges(state).await;
    if openmetrics {
        respond(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            crate::metrics::encode_openmetrics(),
        )
    } else {
        respond(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            crate::metrics::encode_prometheus(),
        )
    }
}

async fn healthz(state: &HttpState) -> Response<Full<Bytes>> {
    if let Err(e) = state.shared.store.read(|s| s.pending_count()).await {
        return text(StatusCode::SERVICE_UNAVAILABLE, format!("store: {e}\n"));
    }
    if !state.shared.board.all_readers_connected() {
        let (readers, down) = state.shared.board.disconnected_readers();
        let msg = if readers <= 1 {
            "reader: not connected (retrying)\n".to_owned()
        } else {
            format!("reader: not connected (retrying): {}\n", down.join(", "))
        };
        return text(StatusCode::SERVICE_UNAVAILABLE, msg);
    }
    if let Some(m) = state.shared.api.mismatch() {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("api: mismatch: {}\n", m.detail),
        );
    }
    text(StatusCode::OK, "ok\n")
}

async fn status_json(state: &HttpState) -> serde_json::Value {
    let store = refresh_gauges(state).await;
    let m = crate::metrics::metrics();
    let outputs: serde_json::Map<String, serde_json::Value> = state
        .feedback
        .states()
        .into_iter()
        .map(|(o, on)| (o, json!(on)))
        .collect();
    Status::now(&state.shared, state.max_pending).page_json(PageExtras {
        device: state.device.clone(),
        enrolled: state.shared.board.enrolled(),
        pending: m.pending.get(),
        oldest_pending_age_s: m.oldest_pending_age.get(),
        dead: m.dead.get(),
        store_ok: store.is_ok(),
        outputs,
        recent: state.shared.board.recent(),
        admin: state.admin_token.is_some(),
    })
}

fn pulse(state: &HttpState, output: &str, token: Option<&str>) -> Response<Full<Bytes>> {
    let Some(admin) = &state.admin_token else {
        return text(
            StatusCode::NOT_FOUND,
            "output tests are off (no http.admin_token)\n",
        );
    };
    let configured = state.feedback.states().iter().any(|(n, _)| n == output);
    if !configured && !crate::config::STANDARD_OUTPUTS.contains(&output) {
        return text(StatusCode::NOT_FOUND, "no such output\n");
    }
    let out = output;
    match token {
        Some(t) if ct_eq(t.as_bytes(), admin.expose().as_bytes()) => {}
        _ => {
            tracing::warn!(output = %out, "output test refused: wrong or missing admin token");
            return text(StatusCode::FORBIDDEN, "wrong admin token\n");
        }
    }
    if state.feedback.pulse_output(out) {
        tracing::info!(output = %out, "output test: pulsed from the status page");
        text(StatusCode::OK, "pulsed\n")
    } else {
        text(StatusCode::CONFLICT, "that output is not configured\n")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn constant_time_eq() {
        assert!(super::ct_eq(b"abc", b"abc"));
        assert!(!super::ct_eq(b"abc", b"abd"));
        assert!(!super::ct_eq(b"abc", b"abcd"));
        assert!(super::ct_eq(b"", b""));
    }
}
