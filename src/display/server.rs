//! The guest screen's endpoint: `GET /` (the page, everything inline: it works with the
//! network gone) and `GET /events` (server-sent events: `state` on connect and whenever the
//! daemon goes offline or online again, `verdict` for each scan at the readers it shows).
//!
//! Like the status endpoint it never delays a scan: a verdict is one broadcast send, and each
//! screen's connection forwards what it receives on its own task. At most `MAX_SCREENS`
//! connections, `SCREENS_PER_PEER` from one address; a screen that connects always gets in and
//! an older connection gives way ([`crate::slots`]); a screen that falls behind skips what it
//! missed (the next verdict replaces it).

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc};

use super::{idle_state, sse, Hub};
use crate::state::Shared;

pub const MAX_SCREENS: usize = 8;
/// Connections one address may hold (a kiosk browser holds two: the page and its events).
pub const SCREENS_PER_PEER: usize = 4;
/// A comment line this often: a connection whose screen has gone fails its next write but
/// one (the first is answered by a reset), so its slot is free within 2 s.
const KEEPALIVE: Duration = Duration::from_millis(700);
pub const PAGE: &str = include_str!("page.html");

type Body = Either<Full<Bytes>, Events>;

/// The event stream's body: what the connection's forwarding task sends.
pub struct Events {
    rx: mpsc::Receiver<Bytes>,
}

impl hyper::body::Body for Events {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    }
}

/// Whether the screen should wear its offline mark: the link is down, or the API does not fit
/// (the lanes decide offline then too).
fn online(shared: &Shared) -> bool {
    !shared.api.link.is_offline() && !shared.api.has_mismatch()
}

/// Serves the screen until the daemon stops.
pub async fn serve(listener: TcpListener, hub: Hub, shared: Shared) {
    tokio::spawn(follow_mode(hub.clone(), shared.clone()));
    // No time limit on a connection: a screen's event stream lasts as long as the screen.
    let limits = crate::slots::Limits {
        max: MAX_SCREENS,
        per_peer: SCREENS_PER_PEER,
    };
    crate::http::accept_loop(listener, limits, "display", move |stream| {
        let (hub, shared) = (hub.clone(), shared.clone());
        async move {
            let svc = hyper::service::service_fn(move |req| {
                let (hub, shared) = (hub.clone(), shared.clone());
                async move { Ok::<_, Infallible>(route(&hub, &shared, req)) }
            });
            let _ = crate::http::http1()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                .await;
        }
    })
    .await
}

/// Tells the screens when the daemon goes offline or online (and into or out of a mismatch).
async fn follow_mode(hub: Hub, shared: Shared) {
    let mut link = shared.api.link.subscribe();
    let mut mismatch = shared.api.watch_mismatch();
    let mut last = online(&shared);
    loop {
        tokio::select! {
            r = link.changed() => if r.is_err() { return },
            r = mismatch.changed() => if r.is_err() { return },
        }
        let now = online(&shared);
        if now != last {
            last = now;
            hub.state(now);
        }
    }
}

fn respond(status: StatusCode, content_type: &str, body: Body) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("cache-control", "no-store")
        .header("x-content-type-options", "nosniff")
        .header("referrer-policy", "no-referrer")
        .body(body)
        .expect("valid response")
}

fn full(s: impl Into<Bytes>) -> Body {
    Either::Left(Full::new(s.into()))
}

fn route(hub: &Hub, shared: &Shared, req: Request<Incoming>) -> Response<Body> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/") => {
            let mut r = respond(StatusCode::OK, "text/html; charset=utf-8", full(PAGE));
            r.headers_mut().insert(
                "content-security-policy",
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:"
                    .parse()
                    .expect("valid header"),
            );
            r
        }
        (&Method::GET, "/events") => {
            let Some(cfg) = hub.config() else {
                return respond(StatusCode::NOT_FOUND, "text/plain", full("no display\n"));
            };
            let first = format!(
                "retry: 1000\n\n{}",
                sse("state", &idle_state(cfg, online(shared)))
            );
            let (tx, rx) = mpsc::channel(16);
            let sub = hub.subscribe();
            let _ = tx.try_send(Bytes::from(first));
            tokio::spawn(forward(sub, tx));
            respond(
                StatusCode::OK,
                "text/event-stream",
                Either::Right(Events { rx }),
            )
        }
        _ => respond(StatusCode::NOT_FOUND, "text/plain", full("not found\n")),
    }
}

/// One screen's connection: the hub's events, a keep-alive comment when quiet, until it closes.
async fn forward(mut sub: broadcast::Receiver<Arc<str>>, tx: mpsc::Sender<Bytes>) {
    loop {
        let out = tokio::select! {
            m = sub.recv() => match m {
                Ok(m) => Bytes::copy_from_slice(m.as_bytes()),
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = tokio::time::sleep(KEEPALIVE) => Bytes::from_static(b":\n\n"),
            _ = tx.closed() => return,
        };
        if tx.send(out).await.is_err() {
            return;
        }
    }
}
