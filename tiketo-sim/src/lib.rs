//! tiketo-sim: a fake Tiketo GraphQL API (an AWS AppSync look-alike) for tests, the demo and
//! installers.
//!
//! - Serves `POST /graphql` over HTTP on loopback.
//! - Parses and validates every document and its variables against the project's SDL file and
//!   answers a validation error the way AppSync does when one does not fit.
//! - Checks `Authorization: TOKEN <token>` (the workspace token, or a device token it issued).
//! - Holds seeded passes (see `seed/demo.toml`), including event tickets whose
//!   `createScanEvent` is refused once their entries are used up.
//! - Records every request, so tests can assert on them.
//! - Can be told to fail: an HTTP status (500, 503, 429 with Retry-After), a GraphQL error, a
//!   delay on every answer, or a request that is never answered.
//!
//! Control it in-process through [`Sim`], or over HTTP: `GET /__sim/requests`,
//! `GET /__sim/events`, `POST /__sim/faults` (a [`FaultRule`] as JSON), `DELETE /__sim/faults`,
//! `POST /__sim/delay` (`{"ms": 50, "field_ms": 300}`), `POST /__sim/schema` (an SDL; empty:
//! the project's), `POST /__sim/reset`.
//!
//! AppSync's ways, played as AppSync documents them: a document or variables that do not fit
//! the schema get HTTP 200, `data: null` and errors without `errorType` or `path`; the
//! authorizer's refusal is a 401 with `x-amzn-ErrorType`; a thrown Lambda error is
//! `Lambda:Unhandled` (plus "Cannot return null ..." on a non-null field); aliased mutations
//! run in order and stop at the first failing non-null field; a request past 30 s is a 504;
//! introspection comes from the SDL (or is switched off).
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use apollo_compiler::resolvers::{Execution, FieldError, ObjectValue, ResolveInfo, ResolvedValue};
use apollo_compiler::validation::Valid;
use apollo_compiler::{ExecutableDocument, Schema};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// The project's reconstructed SDL of the Tiketo API.
pub const SCHEMA_SDL: &str = include_str!("../../src/api/schema.graphql");
/// The seed the demo and the tests use.
pub const DEMO_SEED: &str = include_str!("../seed/demo.toml");

// ---- seed -------------------------------------------------------------------------------

#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Seed {
    #[serde(default = "default_workspace")]
    pub workspace: String,
    #[serde(default)]
    pub projects: Vec<SeedProject>,
    #[serde(default)]
    pub templates: Vec<SeedTemplate>,
    #[serde(default)]
    pub passes: Vec<SeedPass>,
}

fn default_workspace() -> String {
    "Sim Workspace".into()
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SeedProject {
    pub id: String,
    pub name: Option<String>,
    pub scan_config: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SeedTemplate {
    pub id: String,
    pub name: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SeedPass {
    pub code: String,
    pub id: String,
    pub project: String,
    pub template: String,
    pub expires: Option<String>,
    #[serde(default)]
    pub voided: bool,
    pub entries: Option<u32>,
    #[serde(default)]
    pub scan_voided: bool,
    /// The pass's `parameters` (a JSON string; default "{}").
    pub parameters: Option<String>,
}

impl Seed {
    pub fn parse(text: &str) -> Result<Seed, String> {
        let seed: Seed = toml::from_str(text).map_err(|e| e.to_string())?;
        for p in &seed.passes {
            if !seed.projects.iter().any(|x| x.id == p.project) {
                return Err(format!("pass {}: unknown project {}", p.id, p.project));
            }
            if !seed.templates.iter().any(|x| x.id == p.template) {
                return Err(format!("pass {}: unknown template {}", p.id, p.template));
            }
            if let Some(e) = &p.expires {
                aws_datetime(e)
                    .ok_or_else(|| format!("pass {}: expires is not an AWSDateTime: {e}", p.id))?;
            }
        }
        Ok(seed)
    }

    pub fn demo() -> Seed {
        Seed::parse(DEMO_SEED).expect("the demo seed parses")
    }
}

// ---- faults -----------------------------------------------------------------------------

/// A way to fail.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    /// Answer this HTTP status (500, 503, 429...), with `Retry-After` when given.
    Status {
        status: u16,
        retry_after: Option<u64>,
    },
    /// HTTP 200 with `data: null` and one error of this `errorType`.
    GraphqlError { error_type: String, message: String },
    /// Never answer (the connection stays open).
    Hang,
    /// The Lambda authorizer refuses the token: HTTP 401 `UnauthorizedException` with the
    /// `x-amzn-ErrorType` header, whatever the token (use `for_ms` or `times` to end it).
    Unauthorized,
    /// The resolver of each matching root field fails with this `errorType` (`Unauthorized`,
    /// `Lambda:Unhandled`, ...): HTTP 200, the error with its `path`, the field null (and
    /// `data: null` when the field is non-null, as AppSync propagates it; a thrown Lambda
    /// error also gets AppSync's second, `errorType`-less "Cannot return null" error). In a
    /// document of aliased mutations the ones before run, the ones after do not.
    Resolver { error_type: String, message: String },
}

/// A fault and when it applies.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
pub struct FaultRule {
    #[serde(flatten)]
    pub fault: Fault,
    /// How many requests it applies to; `None`: until cleared.
    #[serde(default)]
    pub times: Option<u32>,
    /// Only requests with this operation name (e.g. `CreateScanEvent`); `None`: every request.
    #[serde(default)]
    pub operation: Option<String>,
    /// A `resolver` fault: only fields whose `code` argument (or `input.code`) is this.
    #[serde(default)]
    pub code: Option<String>,
    /// For this long after it was added (ms); `None`: by `times`, or until cleared.
    #[serde(default)]
    pub for_ms: Option<u64>,
    /// When a `for_ms` rule ends (set when it is added).
    #[serde(skip)]
    pub until: Option<Instant>,
}

impl FaultRule {
    pub fn always(fault: Fault) -> Self {
        FaultRule {
            fault,
            times: None,
            operation: None,
            code: None,
            for_ms: None,
            until: None,
        }
    }
    pub fn times(fault: Fault, n: u32) -> Self {
        FaultRule {
            times: Some(n),
            ..FaultRule::always(fault)
        }
    }
    /// For this long from when it is pushed, then the sim answers as before.
    pub fn lasting(fault: Fault, d: Duration) -> Self {
        FaultRule {
            for_ms: Some(d.as_millis() as u64),
            ..FaultRule::always(fault)
        }
    }
    /// A `resolver` fault only for this pass code.
    pub fn for_code(mut self, code: &str) -> Self {
        self.code = Some(code.to_owned());
        self
    }
    fn expired(&self, now: Instant) -> bool {
        self.until.is_some_and(|u| now >= u)
    }
    fn armed(mut self) -> Self {
        if let Some(ms) = self.for_ms {
            self.until = Some(Instant::now() + Duration::from_millis(ms));
        }
        self
    }
    pub fn for_operation(mut self, op: &str) -> Self {
        self.operation = Some(op.to_owned());
        self
    }
}

// ---- records ----------------------------------------------------------------------------

/// One request as the sim saw it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Recorded {
    pub seq: u64,
    pub received_at_ms: u64,
    pub operation_name: Option<String>,
    /// Root fields of the executed operation, e.g. `["passByScanCode"]`.
    pub root_fields: Vec<String>,
    pub query: String,
    pub variables: Value,
    /// The `Authorization` header matched a known token.
    pub authorized: bool,
    /// Which token: `workspace`, `device`, or `none`.
    pub token_kind: String,
    /// The document and variables fit the schema.
    pub valid: bool,
    pub status: u16,
    /// The sim's own handling time (without injected delays), microseconds.
    pub handling_us: u64,
    /// The injected delay as it really was (a timer sleeps a little longer than asked).
    pub delay_us: u64,
    pub fault: Option<Fault>,
    /// Which TCP connection carried it (numbered from 1 in accept order).
    pub connection: u64,
    /// `HTTP/1.1` or `HTTP/2.0`.
    pub http_version: String,
}

/// A scan event the sim accepted.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ScanEventRecord {
    pub id: String,
    pub code: String,
    pub reward_points: Option<i64>,
    /// `ScanEventInput.data`, parsed.
    pub data: Value,
    pub voided: bool,
    pub created_at: String,
}

impl ScanEventRecord {
    pub fn scan_id(&self) -> Option<&str> {
        self.data.get("scanId")?.as_str()
    }
}

// ---- state ------------------------------------------------------------------------------

struct Mutable {
    seed: Seed,
    entries_left: HashMap<String, u32>,
    events: Vec<ScanEventRecord>,
    requests: Vec<Recorded>,
    faults: Vec<FaultRule>,
    delay: Duration,
    field_delay: Duration,
    device_tokens: Vec<(String, String)>,
    revoked_tokens: Vec<String>,
    registrations: Vec<String>,
    seq: u64,
    connections: u64,
}

struct SimState {
    /// The schema served (replaced by [`Sim::set_schema`] or `POST /__sim/schema`).
    schema: Mutex<Arc<Valid<Schema>>>,
    introspection: bool,
    request_limit: Duration,
    token: String,
    inner: Mutex<Mutable>,
}

fn parse_schema(sdl: &str) -> Result<Valid<Schema>, String> {
    Schema::parse_and_validate(sdl, "schema.graphql")
        .map_err(|e| format!("the schema is invalid: {}", e.errors))
}

impl SimState {
    fn schema(&self) -> Arc<Valid<Schema>> {
        self.schema
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn lock(&self) -> MutexGuard<'_, Mutable> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// How to start a sim.
#[derive(Debug, Clone)]
pub struct SimOptions {
    pub listen: SocketAddr,
    /// The workspace API token it accepts.
    pub token: String,
    pub seed: Seed,
    /// Serve HTTPS (HTTP/2 and HTTP/1.1 by ALPN) with a certificate for 127.0.0.1 and
    /// localhost from a CA made at start ([`Sim::ca_pem`]).
    pub tls: bool,
    /// The SDL to serve instead of the project's (a schema that changed, for drift tests).
    pub schema: Option<String>,
    /// Answer `__schema` and `__type` (AppSync can switch introspection off).
    pub introspection: bool,
    /// How long a request may run before it is answered 504 (AppSync: 30 s).
    pub request_limit: Duration,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            token: "sim-workspace-token".into(),
            seed: Seed::demo(),
            tls: false,
            schema: None,
            introspection: true,
            request_limit: APPSYNC_LIMIT,
        }
    }
}

/// A running sim. Dropping it stops it.
pub struct Sim {
    addr: SocketAddr,
    state: Arc<SimState>,
    server: Option<tokio::task::JoinHandle<()>>,
    tls: Option<Tls>,
}

#[derive(Clone)]
struct Tls {
    acceptor: tokio_rustls::TlsAcceptor,
    ca_pem: String,
}

impl Tls {
    fn new() -> std::io::Result<Tls> {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        let err = |e: rcgen::Error| std::io::Error::other(e.to_string());
        let ca_key = KeyPair::generate().map_err(err)?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "tiketo-sim test CA");
        let ca_cert = ca_params.self_signed(&ca_key).map_err(err)?;
        let issuer = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate().map_err(err)?;
        let params = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .map_err(err)?;
        let cert = params.signed_by(&key, &issuer).map_err(err)?;
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let mut config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| std::io::Error::other(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone(), ca_cert.der().clone()],
                tokio_rustls::rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Tls {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            ca_pem: ca_cert.pem(),
        })
    }
}

impl Sim {
    /// Starts listening; the server runs on the current tokio runtime.
    pub async fn start(opts: SimOptions) -> std::io::Result<Sim> {
        let tls = if opts.tls { Some(Tls::new()?) } else { None };
        let sdl = opts.schema.as_deref().unwrap_or(SCHEMA_SDL);
        let schema = Mutex::new(Arc::new(parse_schema(sdl).map_err(std::io::Error::other)?));
        let entries_left = opts
            .seed
            .passes
            .iter()
            .filter_map(|p| p.entries.map(|n| (p.code.clone(), n)))
            .collect();
        let state = Arc::new(SimState {
            schema,
            introspection: opts.introspection,
            request_limit: opts.request_limit,
            token: opts.token,
            inner: Mutex::new(Mutable {
                seed: opts.seed,
                entries_left,
                events: Vec::new(),
                requests: Vec::new(),
                faults: Vec::new(),
                delay: Duration::ZERO,
                field_delay: Duration::ZERO,
                device_tokens: Vec::new(),
                revoked_tokens: Vec::new(),
                registrations: Vec::new(),
                seq: 0,
                connections: 0,
            }),
        });
        let listener = bind_reuse(opts.listen)?;
        let addr = listener.local_addr()?;
        let server = tokio::spawn(serve(listener, state.clone(), tls.clone()));
        Ok(Sim {
            addr,
            state,
            server: Some(server),
            tls,
        })
    }

    /// The PEM of the CA that signed the HTTPS certificate (with `tls`).
    pub fn ca_pem(&self) -> Option<&str> {
        self.tls.as_ref().map(|t| t.ca_pem.as_str())
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The GraphQL endpoint, `http://127.0.0.1:PORT/graphql`.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}/graphql", self.addr)
    }

    pub fn token(&self) -> &str {
        &self.state.token
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().requests.clone()
    }

    /// How many requests it has answered (or refused).
    pub fn request_count(&self) -> usize {
        self.state.lock().requests.len()
    }

    /// The requests from the `from`-th on (a benchmark's loop copies only its own).
    pub fn requests_since(&self, from: usize) -> Vec<Recorded> {
        let s = self.state.lock();
        s.requests
            .get(from..)
            .map(<[_]>::to_vec)
            .unwrap_or_default()
    }

    /// Requests whose executed operation has this root field.
    pub fn requests_for(&self, root_field: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.root_fields.iter().any(|f| f == root_field))
            .collect()
    }

    pub fn scan_event_count(&self) -> usize {
        self.state.lock().events.len()
    }

    pub fn scan_events(&self) -> Vec<ScanEventRecord> {
        self.state.lock().events.clone()
    }

    pub fn push_fault(&self, rule: FaultRule) {
        self.state.lock().faults.push(rule.armed());
    }

    pub fn clear_faults(&self) {
        self.state.lock().faults.clear();
    }

    /// Added to every answer.
    /// Serves another SDL from now on (Tiketo changed its API, or changed it back).
    pub fn set_schema(&self, sdl: &str) -> Result<(), String> {
        let schema = parse_schema(sdl)?;
        *self.state.schema.lock().unwrap_or_else(|p| p.into_inner()) = Arc::new(schema);
        Ok(())
    }

    pub fn set_delay(&self, d: Duration) {
        self.state.lock().delay = d;
    }

    /// A further delay for each root field of a document (a slow Lambda behind each
    /// `createScanEvent` of a batch). A request whose delays add up past AppSync's 30 s
    /// limit is answered 504 at 30 s, its mutations run all the same.
    pub fn set_field_delay(&self, d: Duration) {
        self.state.lock().field_delay = d;
    }

    /// Voids (or un-voids) the pass with this code from now on (an operator voided it).
    pub fn set_voided(&self, code: &str, voided: bool) {
        let mut m = self.state.lock();
        for p in m.seed.passes.iter_mut().filter(|p| p.code == code) {
            p.voided = voided;
        }
    }

    /// Revokes every device token issued so far (they get 401 from now on).
    pub fn revoke_device_tokens(&self) {
        let mut m = self.state.lock();
        let tokens: Vec<String> = m.device_tokens.drain(..).map(|(_, t)| t).collect();
        m.revoked_tokens.extend(tokens);
    }

    /// The names devices registered with, in order.
    pub fn registrations(&self) -> Vec<String> {
        self.state.lock().registrations.clone()
    }

    pub fn device_tokens(&self) -> Vec<String> {
        self.state
            .lock()
            .device_tokens
            .iter()
            .map(|(_, t)| t.clone())
            .collect()
    }

    /// Stops serving: the listener closes and every open connection is cut.
    pub async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.abort();
            let _ = server.await;
        }
    }

    /// Serves again on the same address, with the same passes, records and faults.
    pub async fn restart(&mut self) -> std::io::Result<()> {
        self.stop().await;
        let listener = bind_reuse(self.addr)?;
        self.server = Some(tokio::spawn(serve(
            listener,
            self.state.clone(),
            self.tls.clone(),
        )));
        Ok(())
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            s.abort();
        }
    }
}

fn bind_reuse(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Accepts connections until aborted; aborting drops the JoinSet, which cuts every connection.
async fn serve(listener: TcpListener, state: Arc<SimState>, tls: Option<Tls>) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                let state = state.clone();
                let conn_id = {
                    let mut m = state.lock();
                    m.connections += 1;
                    m.connections
                };
                let tls = tls.clone();
                conns.spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(route(state, req, conn_id).await) }
                    });
                    let builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
                    match tls {
                        None => {
                            let _ = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), svc).await;
                        }
                        Some(tls) => {
                            if let Ok(stream) = tls.acceptor.accept(stream).await {
                                let _ = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), svc).await;
                            }
                        }
                    }
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

fn json_response(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("valid response")
}

async fn route(
    state: Arc<SimState>,
    req: Request<Incoming>,
    conn_id: u64,
) -> Response<Full<Bytes>> {
    let method = req.method().clone();
    let version = format!("{:?}", req.version());
    let path = req.uri().path().to_owned();
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = match Limited::new(req.into_body(), 1 << 20).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return json_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                &json!({"errors": [{"message": "body too large"}]}),
            )
        }
    };
    match (method, path.as_str()) {
        (Method::POST, "/graphql") => {
            graphql(&state, auth.as_deref(), &body, conn_id, version).await
        }
        (Method::GET, "/__sim/requests") => {
            json_response(StatusCode::OK, &json!(state.lock().requests))
        }
        (Method::GET, "/__sim/events") => {
            json_response(StatusCode::OK, &json!(state.lock().events))
        }
        (Method::POST, "/__sim/faults") => match serde_json::from_slice::<FaultRule>(&body) {
            Ok(rule) => {
                state.lock().faults.push(rule.armed());
                json_response(StatusCode::OK, &json!({"ok": true}))
            }
            Err(e) => json_response(StatusCode::BAD_REQUEST, &json!({"error": e.to_string()})),
        },
        (Method::POST, "/__sim/schema") => {
            let sdl = String::from_utf8_lossy(&body);
            let sdl = if sdl.trim().is_empty() {
                SCHEMA_SDL.into()
            } else {
                sdl
            };
            match parse_schema(&sdl) {
                Ok(s) => {
                    *state.schema.lock().unwrap_or_else(|p| p.into_inner()) = Arc::new(s);
                    json_response(StatusCode::OK, &json!({"ok": true}))
                }
                Err(e) => json_response(StatusCode::BAD_REQUEST, &json!({"error": e})),
            }
        }
        (Method::DELETE, "/__sim/faults") => {
            state.lock().faults.clear();
            json_response(StatusCode::OK, &json!({"ok": true}))
        }
        (Method::POST, "/__sim/delay") => match serde_json::from_slice::<Value>(&body)
            .ok()
            .filter(|v| v.get("ms").is_some() || v.get("field_ms").is_some())
        {
            Some(v) => {
                let mut m = state.lock();
                if let Some(ms) = v.get("ms").and_then(Value::as_u64) {
                    m.delay = Duration::from_millis(ms);
                }
                if let Some(ms) = v.get("field_ms").and_then(Value::as_u64) {
                    m.field_delay = Duration::from_millis(ms);
                }
                json_response(StatusCode::OK, &json!({"ok": true}))
            }
            None => json_response(
                StatusCode::BAD_REQUEST,
                &json!({"error": "expected {\"ms\": N} and/or {\"field_ms\": N}"}),
            ),
        },
        (Method::POST, "/__sim/revoke") => {
            let mut m = state.lock();
            let tokens: Vec<String> = m.device_tokens.drain(..).map(|(_, t)| t).collect();
            m.revoked_tokens.extend(tokens);
            json_response(StatusCode::OK, &json!({"ok": true}))
        }
        (Method::POST, "/__sim/reset") => {
            let mut m = state.lock();
            m.faults.clear();
            m.delay = Duration::ZERO;
            m.field_delay = Duration::ZERO;
            m.requests.clear();
            m.events.clear();
            m.entries_left = m
                .seed
                .passes
                .iter()
                .filter_map(|p| p.entries.map(|n| (p.code.clone(), n)))
                .collect();
            json_response(StatusCode::OK, &json!({"ok": true}))
        }
        _ => json_response(
            StatusCode::NOT_FOUND,
            &json!({"errors": [{"message": "not found"}]}),
        ),
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GraphqlBody {
    query: String,
    operation_name: Option<String>,
    #[serde(default)]
    variables: Option<Value>,
}

/// How long AppSync lets a request run before it answers 504.
pub const APPSYNC_LIMIT: Duration = Duration::from_secs(30);

/// What AppSync answers when the Lambda authorizer refuses the token.
fn unauthorized() -> (u16, Vec<(&'static str, String)>, Value) {
    (
        401,
        vec![("x-amzn-errortype", "UnauthorizedException".to_owned())],
        json!({"errors": [appsync_error(Some("UnauthorizedException"), "You are not authorized to make this call.")]}),
    )
}

fn appsync_error(error_type: Option<&str>, message: &str) -> Value {
    let mut e = json!({"path": null, "locations": null, "message": message});
    if let Some(t) = error_type {
        e["errorType"] = json!(t);
    }
    e
}

async fn graphql(
    state: &SimState,
    auth: Option<&str>,
    body: &[u8],
    connection: u64,
    http_version: String,
) -> Response<Full<Bytes>> {
    let started = Instant::now();
    let parsed: Result<GraphqlBody, _> = serde_json::from_slice(body);
    let (op_name, query, variables) = match &parsed {
        Ok(b) => (
            b.operation_name.clone(),
            b.query.clone(),
            b.variables.clone().unwrap_or(Value::Null),
        ),
        Err(_) => (None, String::new(), Value::Null),
    };

    let (token_kind, devices_registered) = {
        let m = state.lock();
        let kind = match auth.and_then(|a| a.strip_prefix("TOKEN ")) {
            Some(t) if t == state.token => "workspace",
            Some(t) if m.device_tokens.iter().any(|(_, d)| d == t) => "device",
            Some(t) if m.revoked_tokens.iter().any(|d| d == t) => "revoked",
            _ => "none",
        };
        (
            kind,
            !m.device_tokens.is_empty() || !m.revoked_tokens.is_empty(),
        )
    };
    // Once a device is registered, only registerDevice may use the workspace token: the
    // device must use its own.
    let workspace_misused = token_kind == "workspace"
        && devices_registered
        && op_name.as_deref() != Some("RegisterDevice");
    let token_kind = if workspace_misused {
        "workspace-after-enrolment"
    } else {
        token_kind
    };

    // Faults first: they stand for the network and the service in front of the resolvers.
    let (fault, delay, field_delay) = {
        let mut m = state.lock();
        let delay = m.delay;
        let field_delay = m.field_delay;
        let now = Instant::now();
        m.faults.retain(|r| !r.expired(now));
        let pos = m.faults.iter().position(|r| {
            (r.operation.is_none() || r.operation == op_name)
                && !matches!(r.fault, Fault::Resolver { .. })
        });
        let fault = pos.map(|i| {
            let rule = &mut m.faults[i];
            let fault = rule.fault.clone();
            if let Some(n) = &mut rule.times {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    m.faults.remove(i);
                }
            }
            fault
        });
        (fault, delay, field_delay)
    };

    let mut record = Recorded {
        seq: 0,
        received_at_ms: now_ms(),
        operation_name: op_name.clone(),
        root_fields: Vec::new(),
        query: query.clone(),
        variables: variables.clone(),
        authorized: token_kind == "workspace" || token_kind == "device",
        token_kind: token_kind.to_owned(),
        valid: false,
        status: 200,
        handling_us: 0,
        delay_us: 0,
        fault: fault.clone(),
        connection,
        http_version,
    };

    let (status, headers, body) = match (&fault, parsed) {
        (Some(Fault::Hang), _) => {
            finish(state, record, Some(started));
            std::future::pending::<()>().await;
            unreachable!()
        }
        (
            Some(Fault::Status {
                status,
                retry_after,
            }),
            _,
        ) => {
            let mut headers = Vec::new();
            if let Some(s) = retry_after {
                headers.push(("retry-after", s.to_string()));
            }
            let body = match status {
                429 => {
                    json!({"errors": [appsync_error(Some("ThrottlingException"), "Rate exceeded")]})
                }
                _ => {
                    json!({"errors": [appsync_error(Some("InternalFailure"), "An internal failure occurred")]})
                }
            };
            (*status, headers, body)
        }
        (
            Some(Fault::GraphqlError {
                error_type,
                message,
            }),
            _,
        ) => (
            200,
            Vec::new(),
            json!({"data": null, "errors": [appsync_error(Some(error_type), message)]}),
        ),
        (Some(Fault::Unauthorized), _) => unauthorized(),
        (None, _) if token_kind != "workspace" && token_kind != "device" => unauthorized(),
        (None, Err(e)) => (
            400,
            Vec::new(),
            json!({"errors": [appsync_error(Some("MalformedHttpRequestException"), &format!("Unable to parse the JSON document: {e}"))]}),
        ),
        (Some(Fault::Resolver { .. }), _) => unreachable!("resolver faults act in the resolvers"),
        (None, Ok(_)) => {
            let (status, body, valid, roots) =
                execute(state, &query, op_name.as_deref(), &variables, token_kind);
            record.valid = valid;
            record.root_fields = roots;
            (status, Vec::new(), body)
        }
    };
    let delay = delay + field_delay * record.root_fields.len() as u32;
    // AppSync ends a request at 30 s with a 504; what its resolvers did meanwhile stands.
    let (status, headers, body) = if delay > state.request_limit {
        (
            504,
            Vec::new(),
            json!({"errors": [appsync_error(Some("ExecutionTimeout"), "Execution timed out.")]}),
        )
    } else {
        (status, headers, body)
    };
    record.status = status;
    record.handling_us = started.elapsed().as_micros() as u64;
    let delay = delay.min(state.request_limit);
    if !delay.is_zero() {
        let slept = Instant::now();
        tokio::time::sleep(delay).await;
        record.delay_us = slept.elapsed().as_micros() as u64;
    }
    finish(state, record, None);
    let mut resp = json_response(
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        &body,
    );
    for (k, v) in headers {
        resp.headers_mut()
            .insert(k, v.parse().expect("header value"));
    }
    resp
}

fn finish(state: &SimState, mut record: Recorded, started: Option<Instant>) {
    if let Some(started) = started {
        record.handling_us = started.elapsed().as_micros() as u64;
    }
    let mut m = state.lock();
    m.seq += 1;
    record.seq = m.seq;
    m.requests.push(record);
}

/// Validates and executes; returns (HTTP status, body, valid, root fields).
fn execute(
    state: &SimState,
    query: &str,
    op_name: Option<&str>,
    variables: &Value,
    token_kind: &str,
) -> (u16, Value, bool, Vec<String>) {
    let schema = &*state.schema();
    // AppSync answers a document or variables that do not fit the schema with HTTP 200,
    // `data: null` and errors without `errorType` or `path`.
    let invalid = |errors: Vec<Value>| {
        (
            200,
            json!({"data": null, "errors": errors}),
            false,
            Vec::new(),
        )
    };
    let doc = match ExecutableDocument::parse_and_validate(schema, query, "request.graphql") {
        Ok(d) => d,
        Err(with) => {
            let errors = with
                .errors
                .iter()
                .map(|d| {
                    let e = d.to_json();
                    let mut v = appsync_error(
                        None,
                        &format!("Validation error of type InvalidSyntax: {}", e.message),
                    );
                    v["locations"] = json!(e
                        .locations
                        .iter()
                        .map(|l| json!({"line": l.line, "column": l.column, "sourceName": null}))
                        .collect::<Vec<_>>());
                    v
                })
                .collect();
            return invalid(errors);
        }
    };
    let op = match doc.operations.get(op_name) {
        Ok(op) => op,
        Err(e) => {
            return invalid(vec![appsync_error(
                None,
                &format!("Validation error of type UnknownOperation: {}", e.message()),
            )])
        }
    };
    let roots: Vec<String> = op
        .selection_set
        .fields()
        .map(|f| f.name.to_string())
        .collect();
    let vars_json: serde_json_bytes::Value = match variables {
        Value::Null => serde_json_bytes::Value::Object(Default::default()),
        v => v.clone().into(),
    };
    let Some(vars_map) = vars_json.as_object() else {
        return invalid(vec![appsync_error(
            None,
            "Validation error of type WrongType: variables must be an object",
        )]);
    };
    let coerced = match apollo_compiler::request::coerce_variable_values(schema, op, vars_map) {
        Ok(c) => c,
        Err(e) => {
            return invalid(vec![appsync_error(
                None,
                &variable_error(schema, op, vars_map, &e.message().to_string()),
            )])
        }
    };
    // AppSync checks its own scalars: AWSJSON must be a string of JSON, AWSDateTime a date.
    if let Value::Object(vars) = variables {
        for (name, value) in vars {
            if let Some(msg) = check_aws_scalars(value) {
                return invalid(vec![appsync_error(
                    None,
                    &format!("Variable '{name}' has an invalid value: {msg}"),
                )]);
            }
        }
    }
    if !state.introspection
        && doc
            .operations
            .iter()
            .flat_map(|o| o.selection_set.fields())
            .any(|f| f.name == "__schema" || f.name == "__type")
    {
        return invalid(vec![appsync_error(
            None,
            "Validation error of type FieldUndefined: Field '__schema' in type 'Query' is undefined @ '__schema' (introspection is disabled)",
        )]);
    }

    let mut m = state.lock();
    let response = {
        let ctx = Ctx {
            m: std::cell::RefCell::new(&mut m),
            token_kind,
            op_name,
        };
        let exec = Execution::new(schema, &doc)
            .operation(op)
            .coerced_variable_values(&coerced)
            .enable_schema_introspection(state.introspection);
        match op.operation_type {
            apollo_compiler::executable::OperationType::Mutation => exec.execute_sync(&Root {
                ctx: &ctx,
                mutation: true,
            }),
            _ => exec.execute_sync(&Root {
                ctx: &ctx,
                mutation: false,
            }),
        }
    };
    drop(m);
    match response {
        Ok(resp) => {
            let mut body = serde_json::to_value(&resp).unwrap_or(json!({}));
            if !body.as_object().is_some_and(|o| o.contains_key("data")) {
                body["data"] = Value::Null;
            }
            if let Some(errors) = body.get_mut("errors").and_then(Value::as_array_mut) {
                let mut second = Vec::new();
                for e in errors.iter_mut() {
                    to_appsync_error(e);
                    // A thrown Lambda error on a non-null field: AppSync adds its own.
                    if e["errorType"] == "Lambda:Unhandled" {
                        if let Some(msg) = non_null_message(schema, op, e) {
                            second.push(json!({
                                "path": e["path"].clone(),
                                "locations": e.get("locations").cloned().unwrap_or(Value::Null),
                                "message": msg,
                            }));
                        }
                    }
                }
                errors.extend(second);
            }
            (200, body, true, roots)
        }
        Err(e) => invalid(vec![appsync_error(
            None,
            &format!("Validation error: {}", e.message()),
        )]),
    }
}

/// AppSync's "Cannot return null" error for a resolver error on a non-null root field.
fn non_null_message(
    schema: &Valid<Schema>,
    op: &apollo_compiler::executable::Operation,
    e: &Value,
) -> Option<String> {
    let alias = e["path"].as_array()?.first()?.as_str()?;
    let field = op
        .selection_set
        .fields()
        .find(|f| f.response_key().as_str() == alias)?;
    let parent = op.object_type();
    let def = schema.type_field(parent, &field.name).ok()?;
    def.ty.is_non_null().then(|| {
        format!(
            "Cannot return null for non-nullable type: '{}' within parent '{parent}' (/{alias})",
            def.ty.inner_named_type()
        )
    })
}

/// A variable that does not fit, in AppSync's words: `Variable 'i3' has an invalid value:
/// ...`, or `... has coerced Null value for NonNull type 'T!'` for a missing one. The
/// variables are coerced in order, so the first failing one is found by coercing a growing
/// prefix of them.
fn variable_error(
    schema: &Valid<Schema>,
    op: &apollo_compiler::executable::Operation,
    vars: &serde_json_bytes::Map<serde_json_bytes::ByteString, serde_json_bytes::Value>,
    message: &str,
) -> String {
    for def in &op.variables {
        let name = def.name.as_str();
        let Some(value) = vars.get(name) else {
            return format!(
                "Variable '{name}' has coerced Null value for NonNull type '{}'",
                def.ty
            );
        };
        if value.is_null() && def.ty.is_non_null() {
            return format!(
                "Variable '{name}' has coerced Null value for NonNull type '{}'",
                def.ty
            );
        }
        let mut single = op.clone();
        single.variables = vec![def.clone()];
        let mut one = serde_json_bytes::Map::new();
        one.insert(name, value.clone());
        if let Err(e) = apollo_compiler::request::coerce_variable_values(schema, &single, &one) {
            return format!("Variable '{name}' has an invalid value: {}", e.message());
        }
    }
    format!("Validation error of type WrongType: {message}")
}

/// Resolver errors carry their AppSync `errorType` as a `[Type] ` prefix of the message.
fn to_appsync_error(e: &mut Value) {
    let Some(msg) = e.get("message").and_then(Value::as_str).map(str::to_owned) else {
        return;
    };
    // apollo-compiler prefixes resolver messages ("resolver error: ...").
    let msg = msg
        .strip_prefix("resolver error: ")
        .unwrap_or(&msg)
        .to_owned();
    e["message"] = json!(msg);
    if let Some(rest) = msg.strip_prefix('[') {
        if let Some((ty, text)) = rest.split_once("] ") {
            e["errorType"] = json!(ty);
            e["message"] = json!(text);
        }
    }
    if e.get("errorType").is_none() {
        e["errorType"] = json!("Lambda:Unhandled");
    }
    e["data"] = Value::Null;
    e["errorInfo"] = Value::Null;
}

/// An `AWSDateTime` as AppSync reads one: `YYYY-MM-DDThh:mm`, optional `:ss` and `.f` (1 to 9
/// digits), then a compulsory `Z`, `±hh:mm` or `±hh:mm:ss` (AppSync's extension; Java's
/// offsets go to ±18:00). The sim's own reading, through the time crate's format machinery,
/// kept apart from the daemon's parser so the two check each other.
pub fn aws_datetime(s: &str) -> Option<time::OffsetDateTime> {
    use std::sync::OnceLock;
    use time::format_description::{parse_owned, OwnedFormatItem};
    static FORMAT: OnceLock<OwnedFormatItem> = OnceLock::new();
    let format = FORMAT.get_or_init(|| {
        parse_owned::<2>("[year]-[month]-[day]T[hour]:[minute]:[second][optional [.[subsecond]]]")
            .expect("the AWSDateTime format parses")
    });
    let b = s.as_bytes();
    if b.len() < 17 || !matches!(b[10], b'T' | b't') {
        return None;
    }
    // The offset's own rules, before the time crate sees it: Z, or two-digit fields.
    let (body, offset) = match s.strip_suffix(['Z', 'z']) {
        Some(body) => (body, "+00:00"),
        None => {
            let at = s[11..].find(['+', '-'])? + 11;
            (&s[..at], &s[at..])
        }
    };
    let fields: Vec<&str> = offset[1..].split(':').collect();
    let two_digits = |f: &&str| f.len() == 2 && f.bytes().all(|c| c.is_ascii_digit());
    if !(2..=3).contains(&fields.len()) || !fields.iter().all(two_digits) {
        return None;
    }
    let field = |i: usize| fields.get(i).map_or(0, |f| f.parse::<u32>().unwrap_or(99));
    let secs = field(0) * 3600 + field(1) * 60 + field(2);
    if field(1) > 59 || field(2) > 59 || secs > 18 * 3600 {
        return None;
    }
    if let Some((_, fraction)) = body.split_once('.') {
        if !(1..=9).contains(&fraction.len()) {
            return None;
        }
    }
    // Seconds are optional: hh:mm is hh:mm:00.
    let time_part = &body[11..];
    let time_part = if time_part.len() == 5 {
        format!("{time_part}:00")
    } else {
        time_part.to_owned()
    };
    let local =
        time::PrimitiveDateTime::parse(&format!("{}T{time_part}", &body[..10]), format).ok()?;
    let sign = if offset.starts_with('-') { -1 } else { 1 };
    let offset = time::UtcOffset::from_whole_seconds(sign * secs as i32).ok()?;
    local
        .assume_offset(offset)
        .checked_to_offset(time::UtcOffset::UTC)
}

fn check_aws_scalars(v: &Value) -> Option<String> {
    // The only AWSJSON/AWSDateTime inputs the daemon sends sit in ScanEventInput.data and
    // PassInput.expirationDate; check every key of those names.
    match v {
        Value::Object(map) => {
            for (k, val) in map {
                if k == "data" {
                    match val {
                        Value::Null => {}
                        Value::String(s) if serde_json::from_str::<Value>(s).is_ok() => {}
                        _ => {
                            return Some(format!(
                                "argument 'data' with value '{}' is not a valid 'AWSJSON'",
                                short(val)
                            ))
                        }
                    }
                } else if k == "expirationDate" || k == "dateFrom" || k == "dateTo" {
                    match val {
                        Value::Null => {}
                        Value::String(s) if aws_datetime(s).is_some() => {}
                        _ => {
                            return Some(format!(
                                "argument '{k}' with value '{}' is not a valid 'AWSDateTime'",
                                short(val)
                            ))
                        }
                    }
                } else if let Some(m) = check_aws_scalars(val) {
                    return Some(m);
                }
            }
            None
        }
        Value::Array(items) => items.iter().find_map(check_aws_scalars),
        _ => None,
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 60 {
        format!(
            "{}…",
            &s[..s.char_indices().nth(60).map(|(i, _)| i).unwrap_or(s.len())]
        )
    } else {
        s
    }
}

// ---- resolvers --------------------------------------------------------------------------

struct Ctx<'m, 'g> {
    /// The request's operation name (resolver faults may be for one operation).
    op_name: Option<&'g str>,
    m: std::cell::RefCell<&'m mut MutexGuard<'g, Mutable>>,
    token_kind: &'m str,
}

struct Root<'c, 'm, 'g> {
    ctx: &'c Ctx<'m, 'g>,
    mutation: bool,
}

fn field_error(error_type: &str, message: &str) -> FieldError {
    FieldError {
        message: format!("[{error_type}] {message}"),
    }
}

fn arg_str<'a>(info: &'a ResolveInfo<'a>, name: &str) -> Option<&'a str> {
    info.arguments().get(name)?.as_str()
}

/// Any object held as JSON: fields resolve by name; nested objects by the schema's types.
struct JsonObject {
    type_name: String,
    value: Value,
}

impl ObjectValue for JsonObject {
    fn type_name(&self) -> &str {
        &self.type_name
    }

    fn resolve_field<'a>(
        &'a self,
        info: &'a ResolveInfo<'a>,
    ) -> Result<ResolvedValue<'a>, FieldError> {
        let ty = &info.field_definition().ty;
        let v = self
            .value
            .get(info.field_name())
            .cloned()
            .unwrap_or(Value::Null);
        Ok(resolve_json(info.schema(), ty, v))
    }
}

fn resolve_json<'a>(
    schema: &Schema,
    ty: &apollo_compiler::ast::Type,
    v: Value,
) -> ResolvedValue<'a> {
    if v.is_null() {
        return ResolvedValue::null();
    }
    if let apollo_compiler::ast::Type::List(inner)
    | apollo_compiler::ast::Type::NonNullList(inner) = ty
    {
        let inner = (**inner).clone();
        let items: Vec<Value> = v.as_array().cloned().unwrap_or_default();
        let schema_ptr: Vec<ResolvedValue<'a>> = items
            .into_iter()
            .map(|i| resolve_json(schema, &inner, i))
            .collect();
        return ResolvedValue::list(schema_ptr);
    }
    let name = ty.inner_named_type();
    match schema.types.get(name) {
        Some(apollo_compiler::schema::ExtendedType::Object(_)) => {
            ResolvedValue::object(JsonObject {
                type_name: name.to_string(),
                value: v,
            })
        }
        _ => ResolvedValue::leaf(serde_json_bytes::Value::from(v)),
    }
}

impl Mutable {
    fn project_json(&self, id: &str) -> Value {
        match self.seed.projects.iter().find(|p| p.id == id) {
            Some(p) => json!({"id": p.id, "name": p.name, "scanConfig": p.scan_config}),
            None => Value::Null,
        }
    }

    fn template_json(&self, id: &str) -> Value {
        match self.seed.templates.iter().find(|t| t.id == id) {
            Some(t) => json!({
                "id": t.id, "name": t.name,
                "downloadUrl": format!("https://sim.invalid/templates/{}", t.id),
                "downloadUrlGooglePay": format!("https://sim.invalid/templates/{}/gpay", t.id),
                "variables": [],
            }),
            None => Value::Null,
        }
    }

    fn pass_json(&self, p: &SeedPass) -> Value {
        let files = json!({"background": null, "footer": null, "icon": null, "logo": null, "strip": null, "thumbnail": null});
        json!({
            "id": p.id,
            "templateId": p.template,
            "parameters": p.parameters.as_deref().unwrap_or("{}"),
            "files": files,
            "type": if p.entries.is_some() { "eventTicket" } else { "generic" },
            "expirationDate": p.expires,
            "voided": p.voided,
            "download": {"url": format!("https://sim.invalid/passes/{}.pkpass", p.id), "expiration": null},
            "downloadGooglePay": null,
            "share": {"url": format!("https://sim.invalid/share/{}", p.id), "expiration": null},
            "template": self.template_json(&p.template),
            "project": self.project_json(&p.project),
        })
    }
}

impl ObjectValue for Root<'_, '_, '_> {
    fn type_name(&self) -> &str {
        if self.mutation {
            "Mutation"
        } else {
            "Query"
        }
    }

    fn resolve_field<'a>(
        &'a self,
        info: &'a ResolveInfo<'a>,
    ) -> Result<ResolvedValue<'a>, FieldError> {
        let ty = &info.field_definition().ty;
        let schema = info.schema();
        let mut guard = self.ctx.m.borrow_mut();
        let m: &mut Mutable = &mut guard;
        if let Some(e) = resolver_fault(m, self.ctx.op_name, info) {
            return Err(e);
        }
        let value = match info.field_name() {
            "passByScanCode" => {
                let code = arg_str(info, "code").unwrap_or_default();
                m.seed
                    .passes
                    .iter()
                    .find(|p| p.code == code)
                    .map(|p| m.pass_json(p))
                    .unwrap_or(Value::Null)
            }
            "pass" => {
                let id = arg_str(info, "id").unwrap_or_default();
                let project = arg_str(info, "projectId").unwrap_or_default();
                m.seed
                    .passes
                    .iter()
                    .find(|p| p.id == id && p.project == project)
                    .map(|p| m.pass_json(p))
                    .unwrap_or(Value::Null)
            }
            "projects" => Value::Array(
                m.seed
                    .projects
                    .iter()
                    .map(|p| m.project_json(&p.id))
                    .collect(),
            ),
            "passTemplates" => Value::Array(
                m.seed
                    .templates
                    .iter()
                    .map(|t| m.template_json(&t.id))
                    .collect(),
            ),
            "eventTickets" | "loyaltyCards" => json!([]),
            "createScanEvent" => create_scan_event(m, info)?,
            "registerDevice" => {
                if self.ctx.token_kind != "workspace" {
                    return Err(field_error(
                        "Unauthorized",
                        "registerDevice needs the workspace API token",
                    ));
                }
                let name = info
                    .arguments()
                    .get("input")
                    .and_then(|i| i.as_object()?.get("name")?.as_str())
                    .unwrap_or("device")
                    .to_owned();
                let token = format!("dev-{}", uuid::Uuid::new_v4().simple());
                m.registrations.push(name.clone());
                m.device_tokens.push((name, token.clone()));
                json!({"workspaceName": m.seed.workspace, "token": token})
            }
            other => {
                return Err(field_error(
                    "Sim:NotImplemented",
                    &format!("tiketo-sim does not implement {other}"),
                ))
            }
        };
        drop(guard);
        Ok(resolve_json(schema, ty, value))
    }
}

/// The first resolver fault that applies to this field (its `times` counted down).
fn resolver_fault(
    m: &mut Mutable,
    op_name: Option<&str>,
    info: &ResolveInfo<'_>,
) -> Option<FieldError> {
    let code = arg_str(info, "code").map(str::to_owned).or_else(|| {
        info.arguments()
            .get("input")
            .and_then(|i| i.as_object()?.get("code")?.as_str())
            .map(str::to_owned)
    });
    let pos = m.faults.iter().position(|r| {
        matches!(r.fault, Fault::Resolver { .. })
            && (r.operation.is_none() || r.operation.as_deref() == op_name)
            && (r.code.is_none() || r.code == code)
    })?;
    let fault = m.faults[pos].fault.clone();
    if let Some(n) = &mut m.faults[pos].times {
        *n = n.saturating_sub(1);
        if *n == 0 {
            m.faults.remove(pos);
        }
    }
    match &fault {
        Fault::Resolver {
            error_type,
            message,
        } => Some(field_error(error_type, message)),
        _ => None,
    }
}

fn create_scan_event(m: &mut Mutable, info: &ResolveInfo<'_>) -> Result<Value, FieldError> {
    let input = info
        .arguments()
        .get("input")
        .and_then(|v| v.as_object())
        .ok_or_else(|| field_error("MappingTemplate", "input is missing"))?;
    let code = input
        .get("code")
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_owned();
    let reward_points = input.get("rewardPoints").and_then(|v| v.as_i64());
    let data: Value = match input.get("data").and_then(|v| v.as_str()) {
        Some(s) => serde_json::from_str(s)
            .map_err(|_| field_error("MappingTemplate", "data is not JSON"))?,
        None => Value::Null,
    };
    let pass = m
        .seed
        .passes
        .iter()
        .find(|p| p.code == code)
        .cloned()
        .ok_or_else(|| field_error("NotFound", "no pass has this scan code"))?;
    if let Some(left) = m.entries_left.get_mut(&pass.code) {
        if *left == 0 {
            return Err(field_error(
                "NoEntriesLeft",
                "this event ticket has no entries left",
            ));
        }
        *left -= 1;
    }
    let record = ScanEventRecord {
        id: uuid::Uuid::new_v4().to_string(),
        code: code.clone(),
        reward_points,
        data: data.clone(),
        voided: pass.scan_voided || pass.voided,
        created_at: now_rfc3339(),
    };
    m.events.push(record.clone());
    Ok(json!({
        "id": record.id,
        "code": code,
        "rewardPoints": reward_points,
        "voided": record.voided,
        "data": if data.is_null() { Value::Null } else { Value::String(data.to_string()) },
        "createdAt": record.created_at,
        "pass": m.pass_json(&pass),
    }))
}
