//! The Tiketo GraphQL client.
//!
//! One `reqwest` client for the daemon's life: its connection is opened at start (`warmup`)
//! and kept alive, so a scan never pays a TCP or TLS handshake. Every document it can send is
//! in `operations/` and is validated against `schema.graphql` by the tests (and by tiketo-sim
//! on every request). Failures are classified by [`classify`].

mod batch;
pub mod classify;
pub mod introspect;
pub mod scalars;

pub use batch::{replay_document, split_batch, AliasOutcome};

use std::fmt;
use std::path::Path;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use reqwest::Url;
use serde::Serialize;
use serde_json::Value;
use time::OffsetDateTime;

use crate::decision::PassFacts;
use crate::mask::Secret;
use classify::{classify_gql_errors, classify_status, parse_retry_after, ErrorClass, GqlError};

/// The reconstructed SDL of the Tiketo API.
pub const SCHEMA: &str = include_str!("schema.graphql");

/// A named GraphQL document the daemon sends.
#[derive(Debug, Clone, Copy)]
pub struct Operation {
    pub name: &'static str,
    pub document: &'static str,
}

pub mod ops {
    use super::Operation;

    pub const PASS_BY_SCAN_CODE: Operation = Operation {
        name: "PassByScanCode",
        document: include_str!("operations/PassByScanCode.graphql"),
    };
    /// The same, with the pass's `parameters` (for the guest screen's greeting).
    pub const PASS_BY_SCAN_CODE_WITH_PARAMETERS: Operation = Operation {
        name: "PassByScanCodeWithParameters",
        document: include_str!("operations/PassByScanCodeWithParameters.graphql"),
    };
    pub const CREATE_SCAN_EVENT: Operation = Operation {
        name: "CreateScanEvent",
        document: include_str!("operations/CreateScanEvent.graphql"),
    };
    pub const REGISTER_DEVICE: Operation = Operation {
        name: "RegisterDevice",
        document: include_str!("operations/RegisterDevice.graphql"),
    };
    pub const PROJECTS: Operation = Operation {
        name: "Projects",
        document: include_str!("operations/Projects.graphql"),
    };
    /// A cached pass verified again by its ids (the venue's background refresh).
    pub const PASS: Operation = Operation {
        name: "Pass",
        document: include_str!("operations/Pass.graphql"),
    };
    pub const WARMUP: Operation = Operation {
        name: "Warmup",
        document: include_str!("operations/Warmup.graphql"),
    };

    /// Every fixed document the client can send.
    pub const ALL: &[Operation] = &[
        PASS_BY_SCAN_CODE,
        PASS_BY_SCAN_CODE_WITH_PARAMETERS,
        CREATE_SCAN_EVENT,
        REGISTER_DEVICE,
        PROJECTS,
        PASS,
        WARMUP,
    ];
}

/// Every document the daemon can send, with variables of the shape it sends (a sample scan
/// event, a lookup, an enrolment, a replay batch of two): what `doctor` checks against the
/// server's live schema.
pub fn documents_sent() -> Vec<introspect::Sent> {
    let event = ScanEventInput {
        code: "TIKETO-GATE-DOCTOR".into(),
        reward_points: Some(1),
        data: scan_data(
            uuid::Uuid::nil(),
            OffsetDateTime::now_utc(),
            true,
            false,
            "doctor",
            "reader",
            crate::decision::Direction::Entry,
        ),
    };
    let event = serde_json::to_value(&event).unwrap_or(Value::Null);
    let op = |o: Operation, variables: Value| introspect::Sent {
        operation: o.name,
        document: o.document.to_owned(),
        variables,
    };
    vec![
        op(ops::WARMUP, serde_json::json!({})),
        op(
            ops::PASS_BY_SCAN_CODE,
            serde_json::json!({"code": "TIKETO-GATE-DOCTOR"}),
        ),
        op(
            ops::PASS_BY_SCAN_CODE_WITH_PARAMETERS,
            serde_json::json!({"code": "TIKETO-GATE-DOCTOR"}),
        ),
        op(ops::CREATE_SCAN_EVENT, serde_json::json!({"input": event})),
        op(
            ops::REGISTER_DEVICE,
            serde_json::json!({"input": {"name": "doctor"}}),
        ),
        op(ops::PROJECTS, serde_json::json!({})),
        op(
            ops::PASS,
            serde_json::json!({"projectId": "doctor", "id": "doctor"}),
        ),
        introspect::Sent {
            operation: "Replay",
            document: replay_document(2),
            variables: serde_json::json!({"i0": event, "i1": event}),
        },
    ]
}

/// A failed API call. Its text never holds a token; callers scrub pass codes from it.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub class: ErrorClass,
    pub status: Option<u16>,
    pub detail: String,
    /// The variable a schema error names (`i3` of a replay batch), when it names one.
    pub variable: Option<String>,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} error", self.class.as_str())?;
        if let Some(s) = self.status {
            write!(f, " (HTTP {s})")?;
        }
        write!(f, ": {}", self.detail)
    }
}

impl std::error::Error for ApiError {}

impl ApiError {
    /// The same error with every occurrence of `code` masked (a server message may quote a
    /// variable's value).
    pub fn scrub(mut self, code: &str) -> Self {
        self.detail = crate::mask::scrub(&self.detail, code);
        self
    }

    pub fn new(class: ErrorClass, status: Option<u16>, detail: impl Into<String>) -> Self {
        ApiError {
            class,
            status,
            detail: detail.into(),
            variable: None,
        }
    }

    fn from_gql(errors: &[GqlError], status: Option<u16>) -> Self {
        let class = classify_gql_errors(errors).unwrap_or(ErrorClass::Permanent);
        let detail = errors
            .iter()
            .take(3)
            .map(|e| match &e.error_type {
                Some(t) => format!("{t}: {}", truncate(&e.message, 200)),
                None => truncate(&e.message, 200),
            })
            .collect::<Vec<_>>()
            .join("; ");
        let mut e = ApiError::new(class, status, detail);
        e.variable = errors
            .iter()
            .filter(|e| classify::is_schema_error(e))
            .find_map(classify::named_variable)
            .map(str::to_owned);
        e
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(max).collect();
        t.push('…');
        t
    }
}

/// A GraphQL response: `data` and `errors` as the server sent them.
#[derive(Debug, Clone, Default)]
pub struct GqlResponse {
    pub data: Option<Value>,
    pub errors: Vec<GqlError>,
}

/// What [`Client::probe`] saw.
#[derive(Debug, Clone)]
pub struct Probe {
    pub status: u16,
    /// `HTTP/2.0` or `HTTP/1.1`.
    pub version: String,
    /// The server's `Date` header.
    pub date: Option<std::time::SystemTime>,
    pub elapsed: Duration,
    /// The body as a GraphQL response; `None`: it is not one.
    pub response: Option<GqlResponse>,
    /// The body's first bytes, for an answer that is not GraphQL.
    pub head: String,
}

/// The input of `createScanEvent`.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ScanEventInput {
    pub code: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reward_points: Option<i64>,
    /// AWSJSON: a JSON document as a string.
    pub data: String,
}

/// What the server answered to `createScanEvent`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanEventAck {
    pub id: String,
    pub voided: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub workspace_name: Option<String>,
    pub token: Secret,
}

/// The Tiketo API client.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    url: Url,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("url", &self.url.as_str())
            .finish_non_exhaustive()
    }
}

/// Installs the process-wide rustls crypto provider (ring: builds with any C cross compiler).
/// The API's host (as a resolver takes it: an IPv6 address without brackets) and port, for
/// doctor's DNS and TCP checks and the offline probe's connection check.
pub fn host_port(url: &Url) -> Option<(String, u16)> {
    let host = match url.host()? {
        url::Host::Domain(d) => d.to_owned(),
        url::Host::Ipv4(a) => a.to_string(),
        url::Host::Ipv6(a) => a.to_string(),
    };
    Some((host, url.port_or_known_default()?))
}

pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl Client {
    /// Builds the client. `url` must already be checked (https, or http to loopback).
    pub fn new(url: Url, token: &Secret, ca_file: Option<&Path>) -> Result<Client, String> {
        install_crypto_provider();
        let mut auth =
            HeaderValue::from_str(&format!("TOKEN {}", token.expose())).map_err(|_| {
                "the API token contains characters that cannot go in an HTTP header".to_owned()
            })?;
        auth.set_sensitive(true);
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, auth);
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let mut builder = reqwest::Client::builder()
            .default_headers(headers)
            .user_agent(concat!("tiketo-gate/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(Duration::from_secs(5))
            // AppSync ends a request after 30 s; a request still open past that is dead.
            .timeout(Duration::from_secs(35))
            .pool_idle_timeout(None)
            .pool_max_idle_per_host(4)
            .tcp_nodelay(true)
            .tcp_keepalive(Duration::from_secs(30))
            .http2_keep_alive_interval(Duration::from_secs(30))
            .http2_keep_alive_while_idle(true)
            .https_only(url.scheme() == "https");
        if let Some(path) = ca_file {
            let pem = std::fs::read(path)
                .map_err(|e| format!("api.ca_file {}: cannot read: {e}", path.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| format!("api.ca_file {}: not a PEM bundle: {e}", path.display()))?;
            if certs.is_empty() {
                return Err(format!(
                    "api.ca_file {}: holds no certificate",
                    path.display()
                ));
            }
            builder = builder.tls_certs_merge(certs);
        }
        let http = builder
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {}", with_sources(&e)))?;
        Ok(Client { http, url })
    }

    pub fn url(&self) -> &Url {
        &self.url
    }

    /// POSTs one encoded request body to the API (the one place a request leaves).
    async fn post(&self, body: impl Into<reqwest::Body>) -> Result<reqwest::Response, ApiError> {
        self.http
            .post(self.url.clone())
            .body(body)
            .send()
            .await
            .map_err(transport_error)
    }

    /// One request as `doctor` looks at it: the HTTP status, version and `Date`, the round
    /// trip, and the body read as GraphQL (or its first bytes when it is not). `Err`: no
    /// HTTP answer (DNS, TCP, TLS, timeout), with the transport's words.
    pub async fn probe(
        &self,
        operation_name: &str,
        document: &str,
        variables: Value,
    ) -> Result<Probe, ApiError> {
        let body = serde_json::json!({
            "query": document,
            "operationName": operation_name,
            "variables": variables,
        })
        .to_string();
        let started = std::time::Instant::now();
        let resp = self.post(body).await?;
        let status = resp.status().as_u16();
        let version = format!("{:?}", resp.version());
        let date = resp
            .headers()
            .get(reqwest::header::DATE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v).ok());
        let bytes = resp.bytes().await.map_err(transport_error)?;
        let elapsed = started.elapsed();
        let head: String = String::from_utf8_lossy(&bytes[..bytes.len().min(80)])
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        Ok(Probe {
            status,
            version,
            date,
            elapsed,
            response: parse_response(&bytes),
            head,
        })
    }

    /// Sends one document; returns the GraphQL response of an HTTP 2xx answer.
    pub async fn execute(
        &self,
        operation_name: &str,
        document: &str,
        variables: Value,
    ) -> Result<GqlResponse, ApiError> {
        let r = self
            .execute_inner(operation_name, document, variables)
            .await;
        let outcome = match &r {
            Ok(resp) => match classify_gql_errors(&resp.errors) {
                None => "ok",
                Some(c) => c.as_str(),
            },
            Err(e) => e.class.as_str(),
        };
        crate::metrics::api(operation_name, outcome);
        r
    }

    async fn execute_inner(
        &self,
        operation_name: &str,
        document: &str,
        variables: Value,
    ) -> Result<GqlResponse, ApiError> {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Body<'a> {
            query: &'a str,
            operation_name: &'a str,
            variables: Value,
        }
        let body = serde_json::to_vec(&Body {
            query: document,
            operation_name,
            variables,
        })
        .map_err(|e| {
            ApiError::new(
                ErrorClass::Permanent,
                None,
                format!("cannot encode request: {e}"),
            )
        })?;
        let resp = self.post(body).await?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, std::time::SystemTime::now()));
        let bytes = resp.bytes().await.map_err(transport_error)?;
        let parsed = parse_response(&bytes);
        if !(200..300).contains(&status) {
            let mut class = classify_status(status, retry_after);
            // A 400 that says the document does not fit the schema is a mismatch too.
            if let Some(ErrorClass::Mismatch) =
                parsed.as_ref().and_then(|r| classify_gql_errors(&r.errors))
            {
                if status == 400 {
                    class = ErrorClass::Mismatch;
                }
            }
            let detail = match &parsed {
                Some(r) if !r.errors.is_empty() => ApiError::from_gql(&r.errors, None).detail,
                _ => format!("HTTP {status}"),
            };
            let mut e = ApiError::new(class, Some(status), detail);
            if let Some(r) = &parsed {
                e.variable = ApiError::from_gql(&r.errors, None).variable;
            }
            return Err(e);
        }
        match parsed {
            Some(r) => Ok(r),
            // A captive portal or a proxy page: the API was not reached.
            None => Err(ApiError::new(
                ErrorClass::Retryable { retry_after: None },
                Some(status),
                "the answer is not a GraphQL response (a proxy or captive portal?)",
            )),
        }
    }

    async fn execute_op(&self, op: Operation, variables: Value) -> Result<Value, ApiError> {
        let r = self.execute(op.name, op.document, variables).await?;
        if !r.errors.is_empty() {
            return Err(ApiError::from_gql(&r.errors, Some(200)));
        }
        r.data
            .ok_or_else(|| bad_shape("the response has neither data nor errors"))
    }

    /// Opens (or checks) the connection with a request that costs the API nothing.
    pub async fn warmup(&self) -> Result<(), ApiError> {
        self.execute_op(ops::WARMUP, serde_json::json!({}))
            .await
            .map(|_| ())
    }

    /// `passByScanCode`: `None` when no pass has this code.
    pub async fn pass_by_scan_code(&self, code: &str) -> Result<Option<PassFacts>, ApiError> {
        self.look_up(code, false).await
    }

    /// `passByScanCode`, with the pass's `parameters` when `parameters` (the guest screen's
    /// greeting uses them; otherwise they are not asked for).
    pub async fn look_up(
        &self,
        code: &str,
        parameters: bool,
    ) -> Result<Option<PassFacts>, ApiError> {
        let op = if parameters {
            ops::PASS_BY_SCAN_CODE_WITH_PARAMETERS
        } else {
            ops::PASS_BY_SCAN_CODE
        };
        let data = self
            .execute_op(op, serde_json::json!({ "code": code }))
            .await?;
        parse_pass(data.get("passByScanCode").unwrap_or(&Value::Null))
    }

    /// `pass(projectId, id)`: `None` when the API knows the pass no more.
    pub async fn pass(&self, project_id: &str, id: &str) -> Result<Option<PassFacts>, ApiError> {
        let data = self
            .execute_op(
                ops::PASS,
                serde_json::json!({ "projectId": project_id, "id": id }),
            )
            .await?;
        parse_pass(data.get("pass").unwrap_or(&Value::Null))
    }

    /// `createScanEvent`.
    pub async fn create_scan_event(
        &self,
        input: &ScanEventInput,
    ) -> Result<ScanEventAck, ApiError> {
        let data = self
            .execute_op(
                ops::CREATE_SCAN_EVENT,
                serde_json::json!({ "input": input }),
            )
            .await?;
        parse_scan_event(data.get("createScanEvent").unwrap_or(&Value::Null))
    }

    /// `registerDevice`.
    pub async fn register_device(&self, name: &str) -> Result<Registration, ApiError> {
        let data = self
            .execute_op(
                ops::REGISTER_DEVICE,
                serde_json::json!({ "input": { "name": name } }),
            )
            .await?;
        let r = data.get("registerDevice").unwrap_or(&Value::Null);
        let token = r
            .get("token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| bad_shape("registerDevice.token is missing"))?;
        Ok(Registration {
            workspace_name: r
                .get("workspaceName")
                .and_then(Value::as_str)
                .map(str::to_owned),
            token: Secret::new(token),
        })
    }

    /// `projects`: (id, name) of every project the token sees.
    pub async fn projects(&self) -> Result<Vec<(String, Option<String>)>, ApiError> {
        let data = self
            .execute_op(ops::PROJECTS, serde_json::json!({}))
            .await?;
        let list = data
            .get("projects")
            .and_then(Value::as_array)
            .ok_or_else(|| bad_shape("projects is not a list"))?;
        list.iter()
            .map(|p| {
                let id = id_string(p.get("id")).ok_or_else(|| bad_shape("project without id"))?;
                Ok((id, p.get("name").and_then(Value::as_str).map(str::to_owned)))
            })
            .collect()
    }
}

/// An error and its sources, `: `-joined: reqwest's own message is only its kind ("builder
/// error"), the reason is in its sources (no CA certificates, a bad proxy, a refused connect).
fn with_sources(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(&format!(": {s}"));
        source = s.source();
    }
    out
}

fn transport_error(e: reqwest::Error) -> ApiError {
    // reqwest's message names the URL, never the headers.
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "transport error"
    };
    let detail = format!("{what}: {}", with_sources(&e));
    ApiError::new(
        ErrorClass::Retryable { retry_after: None },
        None,
        truncate(&detail, 300),
    )
}

/// An answer the daemon cannot read (a field missing, a scalar in no form it knows): the
/// server and this daemon disagree on the schema, whoever is right.
fn bad_shape(what: &str) -> ApiError {
    ApiError::new(
        ErrorClass::Mismatch,
        Some(200),
        format!("unexpected response: {what}"),
    )
}

/// Parses a GraphQL response body; `None` when it is not one.
pub fn parse_response(bytes: &[u8]) -> Option<GqlResponse> {
    let v: Value = serde_json::from_slice(bytes).ok()?;
    let obj = v.as_object()?;
    if !obj.contains_key("data") && !obj.contains_key("errors") {
        return None;
    }
    let errors = match obj.get("errors") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(list)) => list
            .iter()
            .map(|e| {
                serde_json::from_value::<GqlError>(e.clone()).unwrap_or_else(|_| GqlError {
                    message: truncate(&e.to_string(), 200),
                    ..GqlError::default()
                })
            })
            .collect(),
        Some(other) => vec![GqlError {
            message: truncate(&other.to_string(), 200),
            ..GqlError::default()
        }],
    };
    let data = obj.get("data").filter(|d| !d.is_null()).cloned();
    Some(GqlResponse { data, errors })
}

/// An `ID` comes as a string, and in some of the reference's examples as a number.
pub fn id_string(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Parses an `AWSDateTime` in any form AppSync takes (seconds optional, `+hh:mm:ss`...).
pub fn parse_aws_datetime(s: &str) -> Option<OffsetDateTime> {
    scalars::parse_datetime(s)
}

/// Parses the `passByScanCode` selection into the facts the decision needs.
pub fn parse_pass(v: &Value) -> Result<Option<PassFacts>, ApiError> {
    if v.is_null() {
        return Ok(None);
    }
    let id = id_string(v.get("id")).ok_or_else(|| bad_shape("pass without id"))?;
    let template_id =
        id_string(v.get("templateId")).ok_or_else(|| bad_shape("pass without templateId"))?;
    let expires = match v.get("expirationDate") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(
            parse_aws_datetime(s)
                .ok_or_else(|| bad_shape("expirationDate is not an AWSDateTime"))?,
        ),
        Some(_) => return Err(bad_shape("expirationDate is not a string")),
    };
    let voided = match v.get("voided") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(bad_shape("voided is not a boolean")),
    };
    let project = v.get("project").filter(|p| !p.is_null());
    Ok(Some(PassFacts {
        id,
        template_id,
        project_id: project.and_then(|p| id_string(p.get("id"))),
        expires,
        voided,
        scan_config: project
            .and_then(|p| p.get("scanConfig"))
            .and_then(Value::as_str)
            .map(str::to_owned),
        // AWSJSON arrives as a string; anything else is not read (the plain welcome shows).
        parameters: v
            .get("parameters")
            .and_then(Value::as_str)
            .map(str::to_owned),
    }))
}

/// Parses the `createScanEvent` selection.
pub fn parse_scan_event(v: &Value) -> Result<ScanEventAck, ApiError> {
    let id = id_string(v.get("id")).ok_or_else(|| bad_shape("createScanEvent without id"))?;
    Ok(ScanEventAck {
        id,
        voided: v.get("voided").and_then(Value::as_bool).unwrap_or(false),
    })
}

/// `ScanEventInput.data`: what the server needs to recognise a replay and to know when the
/// scan really happened.
pub fn scan_data(
    scan_id: uuid::Uuid,
    scanned_at: time::OffsetDateTime,
    clock_synced: bool,
    offline: bool,
    device: &str,
    reader: &str,
    direction: crate::decision::Direction,
) -> String {
    serde_json::json!({
        "scanId": scan_id.to_string(),
        "scannedAt": crate::clock::rfc3339_ms(scanned_at),
        "clockSynced": clock_synced,
        "offline": offline,
        "device": device,
        "reader": reader,
        "direction": direction.as_str(),
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_error_is_told_with_its_sources() {
        let e = Wrapped(std::io::Error::other("no CA certificates found"));
        assert_eq!(
            super::with_sources(&e),
            "builder error: no CA certificates found"
        );

        #[derive(Debug)]
        struct Wrapped(std::io::Error);
        impl std::fmt::Display for Wrapped {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("builder error")
            }
        }
        impl std::error::Error for Wrapped {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
    }

    #[test]
    fn host_port_is_what_a_resolver_takes() {
        let hp = |u: &str| super::host_port(&u.parse().unwrap());
        assert_eq!(
            hp("https://api.tiketo.example/graphql"),
            Some(("api.tiketo.example".into(), 443))
        );
        assert_eq!(
            hp("http://127.0.0.1:8787/graphql"),
            Some(("127.0.0.1".into(), 8787))
        );
        assert_eq!(hp("https://[::1]:9443/graphql"), Some(("::1".into(), 9443)));
    }

    #[test]
    fn scan_data_has_id_time_and_device() {
        let id = uuid::Uuid::new_v4();
        let t = time::OffsetDateTime::from_unix_timestamp_nanos(1_764_278_723_123_456_789).unwrap();
        let v: serde_json::Value = serde_json::from_str(&scan_data(
            id,
            t,
            true,
            true,
            "front-door",
            "lane-2",
            crate::decision::Direction::Exit,
        ))
        .unwrap();
        assert_eq!(v["scanId"], id.to_string());
        assert_eq!(v["scannedAt"], "2025-11-27T21:25:23.123Z");
        assert_eq!(v["device"], "front-door");
        assert_eq!(v["offline"], true);
        assert_eq!(v["clockSynced"], true);
        assert_eq!(v["direction"], "exit");
        assert_eq!(v["reader"], "lane-2");
    }

    use super::*;
    use serde_json::json;

    #[test]
    fn pass_parsing_handles_nulls_numbers_and_dates() {
        assert_eq!(parse_pass(&Value::Null).unwrap(), None);
        let p = parse_pass(&json!({
            "id": 4, "templateId": "t", "expirationDate": "2020-01-01T15:00:00.123Z",
            "voided": null, "project": {"id": "p", "scanConfig": "{\"rewardPoints\":3}"}
        }))
        .unwrap()
        .unwrap();
        assert_eq!(p.id, "4");
        assert!(!p.voided);
        assert_eq!(p.expires.unwrap().year(), 2020);
        assert_eq!(p.project_id.as_deref(), Some("p"));
        // Forms AppSync takes and RFC 3339 does not: a valid guest, not an api_error.
        for (form, want) in [
            ("2099-12-31T23:59Z", "2099-12-31 23:59:00.0 +00:00:00"),
            (
                "2099-12-31T23:59:59+01:00:30",
                "2099-12-31 22:59:29.0 +00:00:00",
            ),
        ] {
            let p = parse_pass(&json!({"id": "x", "templateId": "t", "expirationDate": form}))
                .unwrap()
                .unwrap();
            let utc = p.expires.unwrap().to_offset(time::UtcOffset::UTC);
            assert_eq!(utc.to_string(), want, "{form}");
        }
        let e = parse_pass(&json!({"id": "x", "templateId": "t", "expirationDate": "tomorrow"}))
            .unwrap_err();
        assert_eq!(
            e.class,
            ErrorClass::Mismatch,
            "an answer the daemon cannot read"
        );
        assert_eq!(
            parse_pass(&json!({"templateId": "t"})).unwrap_err().class,
            ErrorClass::Mismatch
        );
    }

    #[test]
    fn response_parsing() {
        assert!(parse_response(b"<html>captive portal</html>").is_none());
        assert!(parse_response(b"{\"message\": \"hi\"}").is_none());
        let r = parse_response(
            br#"{"data": null, "errors": [{"errorType": "MappingTemplate", "message": "m"}]}"#,
        )
        .unwrap();
        assert!(r.data.is_none());
        assert_eq!(r.errors[0].error_type.as_deref(), Some("MappingTemplate"));
        let r = parse_response(br#"{"data": {"a": 1}, "errors": [{"weird": true}]}"#).unwrap();
        assert_eq!(r.data, Some(json!({"a": 1})));
        assert_eq!(r.errors.len(), 1);
    }

    #[test]
    fn api_error_text_summarises_errors() {
        let errors = vec![GqlError {
            message: "No entries left".into(),
            error_type: Some("NoEntriesLeft".into()),
            path: None,
        }];
        let e = ApiError::from_gql(&errors, Some(200));
        assert_eq!(
            e.to_string(),
            "permanent error (HTTP 200): NoEntriesLeft: No entries left"
        );
    }

    #[test]
    fn batch_outcomes_per_alias() {
        let r = parse_response(br#"{"data": {"e0": {"id": "a", "voided": false}, "e1": null, "e2": {"id": "c", "voided": true}},
            "errors": [{"path": ["e1"], "errorType": "MappingTemplate", "message": "bad"}]}"#).unwrap();
        let out = split_batch(&r, 3).unwrap();
        assert_eq!(
            out[0],
            AliasOutcome::Sent {
                event_id: Some("a".into()),
                voided: false
            }
        );
        assert!(matches!(
            &out[1],
            AliasOutcome::Failed {
                class: ErrorClass::Permanent,
                ..
            }
        ));
        assert_eq!(
            out[2],
            AliasOutcome::Sent {
                event_id: Some("c".into()),
                voided: true
            }
        );
        // data nulled by propagation: the aliases without an error were run
        let r = parse_response(br#"{"data": null, "errors": [{"path": ["e1"], "errorType": "Lambda:Unhandled", "message": "x"}]}"#).unwrap();
        let out = split_batch(&r, 3).unwrap();
        assert_eq!(
            out[0],
            AliasOutcome::Sent {
                event_id: None,
                voided: false
            }
        );
        assert!(matches!(
            &out[1],
            AliasOutcome::Failed {
                class: ErrorClass::Ambiguous,
                ..
            }
        ));
        assert_eq!(
            out[2],
            AliasOutcome::NotRun,
            "after the failure: not known to have run"
        );
        // a request-level error fails the whole batch
        let r = parse_response(br#"{"data": null, "errors": [{"errorType": "ThrottlingException", "message": "slow down"}]}"#).unwrap();
        assert_eq!(
            split_batch(&r, 2).unwrap_err().class,
            ErrorClass::Retryable { retry_after: None }
        );
    }

    #[test]
    fn replay_document_shape() {
        assert_eq!(
            replay_document(2),
            "mutation Replay($i0: ScanEventInput!, $i1: ScanEventInput!) { e0: createScanEvent(input: $i0) { id voided } e1: createScanEvent(input: $i1) { id voided } }"
        );
    }

    #[test]
    fn scan_event_input_omits_zero_reward_points() {
        let input = ScanEventInput {
            code: "C".into(),
            reward_points: None,
            data: "{}".into(),
        };
        assert_eq!(
            serde_json::to_value(&input).unwrap(),
            json!({"code": "C", "data": "{}"})
        );
    }
}
