//! The API client against tiketo-sim over real HTTP: every failure class the design notes
//! name, as the client sees it, and the sim's own checks (schema, variables, token).

use std::time::Duration;

use serde_json::json;
use tiketo_gate::api::classify::{classify_gql_errors, ErrorClass};
use tiketo_gate::api::{Client, ScanEventInput};
use tiketo_gate::mask::Secret;
use tiketo_sim::{Fault, FaultRule, Sim, SimOptions};

async fn setup() -> (Sim, Client) {
    let sim = Sim::start(SimOptions::default()).await.unwrap();
    let client = Client::new(sim.url().parse().unwrap(), &Secret::new(sim.token()), None).unwrap();
    (sim, client)
}

#[tokio::test]
async fn lookups_answer_the_seeded_passes() {
    let (_sim, c) = setup().await;
    let p = c.pass_by_scan_code("VALID-0001").await.unwrap().unwrap();
    assert_eq!(p.id, "pass-valid-1");
    assert_eq!(p.project_id.as_deref(), Some("proj-main"));
    assert!(c.pass_by_scan_code("NOPE").await.unwrap().is_none());
    let projects = c.projects().await.unwrap();
    assert!(projects.iter().any(|(id, _)| id == "proj-main"));
    c.warmup().await.unwrap();
}

#[tokio::test]
async fn a_document_that_does_not_fit_the_schema_is_a_mismatch_as_appsync_answers_it() {
    let (sim, c) = setup().await;
    // AppSync: HTTP 200, data null, errors without errorType or path.
    let r = c
        .execute(
            "Bad",
            "query Bad { passByScanCode(code: \"x\") { id nosuchfield } }",
            json!({}),
        )
        .await
        .expect("HTTP 200");
    assert!(r.data.is_none());
    assert_eq!(r.errors.len(), 1, "{:?}", r.errors);
    assert!(r.errors[0].error_type.is_none());
    assert!(r.errors[0].path.is_none());
    assert!(
        r.errors[0].message.starts_with("Validation error"),
        "{:?}",
        r.errors
    );
    assert_eq!(classify_gql_errors(&r.errors), Some(ErrorClass::Mismatch));
    // A variable of the wrong type is caught too, named as AppSync names it.
    let r = c
        .execute(
            "PassByScanCode",
            tiketo_gate::api::ops::PASS_BY_SCAN_CODE.document,
            json!({"code": 5}),
        )
        .await
        .expect("HTTP 200");
    assert!(
        r.errors[0]
            .message
            .starts_with("Variable 'code' has an invalid value"),
        "{:?}",
        r.errors
    );
    let e = c
        .execute(
            "PassByScanCode",
            tiketo_gate::api::ops::PASS_BY_SCAN_CODE.document,
            json!({}),
        )
        .await
        .expect("HTTP 200");
    assert_eq!(
        e.errors[0].message,
        "Variable 'code' has coerced Null value for NonNull type 'String!'"
    );
    // AWSJSON must be a string holding JSON.
    let bad = ScanEventInput {
        code: "VALID-0001".into(),
        reward_points: None,
        data: "{not json".into(),
    };
    let e = c.create_scan_event(&bad).await.unwrap_err();
    assert_eq!(e.class, ErrorClass::Mismatch, "{e}");
    assert_eq!(e.status, Some(200));
    assert!(e.detail.contains("AWSJSON"), "{e}");
    assert_eq!(e.variable.as_deref(), Some("input"), "{e}");
    assert!(sim.requests().iter().all(|r| !r.valid));
    assert!(sim.scan_events().is_empty());
}

#[tokio::test]
async fn a_wrong_token_is_an_auth_error_that_never_shows_the_token() {
    let sim = Sim::start(SimOptions::default()).await.unwrap();
    let c = Client::new(
        sim.url().parse().unwrap(),
        &Secret::new("wrong-token-123"),
        None,
    )
    .unwrap();
    let e = c.pass_by_scan_code("VALID-0001").await.unwrap_err();
    assert_eq!(e.class, ErrorClass::Auth);
    assert_eq!(e.status, Some(401));
    assert!(!e.to_string().contains("wrong-token-123"));
    assert!(!format!("{e:?}").contains("wrong-token-123"));
    assert!(!sim.requests()[0].authorized);
}

#[tokio::test]
async fn each_fault_maps_to_its_class() {
    let (sim, c) = setup().await;
    let cases = [
        (
            Fault::Status {
                status: 500,
                retry_after: None,
            },
            ErrorClass::Retryable { retry_after: None },
        ),
        (
            Fault::Status {
                status: 503,
                retry_after: Some(3),
            },
            ErrorClass::Retryable {
                retry_after: Some(Duration::from_secs(3)),
            },
        ),
        (
            Fault::Status {
                status: 429,
                retry_after: Some(7),
            },
            ErrorClass::Retryable {
                retry_after: Some(Duration::from_secs(7)),
            },
        ),
        (
            Fault::Status {
                status: 400,
                retry_after: None,
            },
            ErrorClass::Permanent,
        ),
        (
            Fault::GraphqlError {
                error_type: "Lambda:ExecutionTimeoutException".into(),
                message: "m".into(),
            },
            ErrorClass::Retryable { retry_after: None },
        ),
        (
            Fault::GraphqlError {
                error_type: "ThrottlingException".into(),
                message: "m".into(),
            },
            ErrorClass::Retryable { retry_after: None },
        ),
        (
            Fault::GraphqlError {
                error_type: "Unauthorized".into(),
                message: "m".into(),
            },
            ErrorClass::Auth,
        ),
        (
            Fault::GraphqlError {
                error_type: "MappingTemplate".into(),
                message: "m".into(),
            },
            ErrorClass::Permanent,
        ),
        (
            Fault::GraphqlError {
                error_type: "Lambda:Unhandled".into(),
                message: "m".into(),
            },
            ErrorClass::Ambiguous,
        ),
    ];
    for (fault, class) in cases {
        sim.push_fault(FaultRule::times(fault.clone(), 1));
        let e = c.pass_by_scan_code("VALID-0001").await.unwrap_err();
        assert_eq!(e.class, class, "{fault:?}: {e}");
    }
    // Faults are used up: the next request is answered.
    assert!(c.pass_by_scan_code("VALID-0001").await.unwrap().is_some());
}

#[tokio::test]
async fn a_stopped_api_is_a_retryable_transport_error() {
    let (mut sim, c) = setup().await;
    c.warmup().await.unwrap();
    sim.stop().await;
    let e = c.pass_by_scan_code("VALID-0001").await.unwrap_err();
    assert!(matches!(e.class, ErrorClass::Retryable { .. }), "{e}");
    sim.restart().await.unwrap();
    assert!(c.pass_by_scan_code("VALID-0001").await.unwrap().is_some());
}

#[tokio::test]
async fn one_connection_serves_every_request() {
    let (sim, c) = setup().await;
    c.warmup().await.unwrap();
    for i in 0..20 {
        let code = if i % 2 == 0 { "VALID-0001" } else { "NOPE" };
        c.pass_by_scan_code(code).await.unwrap();
    }
    let conns: std::collections::BTreeSet<u64> =
        sim.requests().iter().map(|r| r.connection).collect();
    assert_eq!(conns.len(), 1, "requests were spread over {conns:?}");
}

#[tokio::test]
async fn event_ticket_entries_run_out() {
    let (sim, c) = setup().await;
    let input = |id: &str| ScanEventInput {
        code: "ONCE-0001".into(),
        reward_points: None,
        data: json!({"scanId": id}).to_string(),
    };
    let ack = c.create_scan_event(&input("a")).await.unwrap();
    assert!(!ack.voided);
    let e = c.create_scan_event(&input("b")).await.unwrap_err();
    assert_eq!(e.class, ErrorClass::Permanent, "{e}");
    assert!(e.detail.contains("NoEntriesLeft"), "{e}");
    assert_eq!(sim.scan_events().len(), 1);
    assert_eq!(sim.scan_events()[0].scan_id(), Some("a"));
}

#[tokio::test]
async fn https_with_an_extra_ca_file_and_one_http2_connection() {
    let sim = Sim::start(SimOptions {
        tls: true,
        ..SimOptions::default()
    })
    .await
    .unwrap();
    assert!(sim.url().starts_with("https://127.0.0.1:"));
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, sim.ca_pem().unwrap()).unwrap();
    // Without the CA the certificate is refused (a transport error, never a silent accept).
    let plain = Client::new(sim.url().parse().unwrap(), &Secret::new(sim.token()), None).unwrap();
    let e = plain.warmup().await.unwrap_err();
    assert!(matches!(e.class, ErrorClass::Retryable { .. }), "{e}");
    // With api.ca_file it works, over one connection for every request.
    let c = Client::new(
        sim.url().parse().unwrap(),
        &Secret::new(sim.token()),
        Some(&ca),
    )
    .unwrap();
    c.warmup().await.unwrap();
    for _ in 0..10 {
        assert!(c.pass_by_scan_code("VALID-0001").await.unwrap().is_some());
    }
    let conns: std::collections::BTreeSet<u64> = sim
        .requests()
        .iter()
        .filter(|r| r.authorized)
        .map(|r| r.connection)
        .collect();
    assert_eq!(conns.len(), 1, "{conns:?}");
    assert!(
        sim.requests()
            .iter()
            .filter(|r| r.authorized)
            .all(|r| r.http_version == "HTTP/2.0"),
        "HTTP/2 where offered"
    );
    // A file that is not a PEM bundle is a clear error at start.
    let bad = dir.path().join("bad.pem");
    std::fs::write(&bad, "not a certificate").unwrap();
    let e = Client::new(
        sim.url().parse().unwrap(),
        &Secret::new(sim.token()),
        Some(&bad),
    )
    .unwrap_err();
    assert!(e.contains("api.ca_file"), "{e}");
}

// ---- AppSync's own behaviours, as tiketo-sim plays them ----------------------------------

fn input(code: &str) -> ScanEventInput {
    ScanEventInput {
        code: code.into(),
        reward_points: None,
        data: json!({"scanId": uuid::Uuid::new_v4().to_string()}).to_string(),
    }
}

#[tokio::test]
async fn the_authorizer_refuses_for_a_while_then_takes_the_token_again() {
    let (sim, c) = setup().await;
    sim.push_fault(FaultRule::lasting(
        Fault::Unauthorized,
        Duration::from_millis(400),
    ));
    // What AppSync sends when the Lambda authorizer says no: 401 and x-amzn-ErrorType.
    let raw = reqwest::Client::new()
        .post(sim.url())
        .header("authorization", format!("TOKEN {}", sim.token()))
        .header("content-type", "application/json")
        .body(r#"{"query":"query Warmup { __typename }","operationName":"Warmup"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status().as_u16(), 401);
    assert_eq!(
        raw.headers()
            .get("x-amzn-errortype")
            .and_then(|v| v.to_str().ok()),
        Some("UnauthorizedException")
    );
    let e = c.pass_by_scan_code("VALID-0001").await.unwrap_err();
    assert_eq!((e.class, e.status), (ErrorClass::Auth, Some(401)));
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert!(c.pass_by_scan_code("VALID-0001").await.unwrap().is_some());
}

#[tokio::test]
async fn a_resolver_level_unauthorized_is_an_auth_error_with_the_field_null() {
    let (sim, c) = setup().await;
    sim.push_fault(FaultRule::times(
        Fault::Resolver {
            error_type: "Unauthorized".into(),
            message: "Not Authorized to access passByScanCode on type Query".into(),
        },
        1,
    ));
    let r = c
        .execute(
            "PassByScanCode",
            tiketo_gate::api::ops::PASS_BY_SCAN_CODE.document,
            json!({"code": "VALID-0001"}),
        )
        .await
        .expect("HTTP 200");
    assert_eq!(r.data, Some(json!({"passByScanCode": null})));
    assert_eq!(r.errors[0].error_type.as_deref(), Some("Unauthorized"));
    assert_eq!(r.errors[0].root_field(), Some("passByScanCode"));
    assert_eq!(r.errors.len(), 1, "a nullable field: no second error");
    sim.push_fault(FaultRule::times(
        Fault::Resolver {
            error_type: "Unauthorized".into(),
            message: "Not Authorized".into(),
        },
        1,
    ));
    let e = c.pass_by_scan_code("VALID-0001").await.unwrap_err();
    assert_eq!(e.class, ErrorClass::Auth, "{e}");
}

#[tokio::test]
async fn a_thrown_lambda_error_stops_a_batch_of_mutations_where_it_fails() {
    let (sim, c) = setup().await;
    sim.push_fault(
        FaultRule::always(Fault::Resolver {
            error_type: "Lambda:Unhandled".into(),
            message: "boom".into(),
        })
        .for_code("VALID-0002"),
    );
    let inputs = [
        input("VALID-0001"),
        input("VALID-0002"),
        input("VALID-0001"),
    ];
    let out = c.create_scan_events(&inputs).await.unwrap();
    // e0 ran (its answer was nulled with the whole data), e1 failed, e2 never ran.
    assert_eq!(
        out[0],
        tiketo_gate::api::AliasOutcome::Sent {
            event_id: None,
            voided: false
        }
    );
    assert!(matches!(
        &out[1],
        tiketo_gate::api::AliasOutcome::Failed {
            class: ErrorClass::Ambiguous,
            ..
        }
    ));
    assert_eq!(out[2], tiketo_gate::api::AliasOutcome::NotRun);
    assert_eq!(sim.scan_events().len(), 1, "stopped at the failing field");
    // AppSync's two errors: the Lambda's, and its own "Cannot return null" without type.
    let r = c
        .execute(
            "Replay",
            &tiketo_gate::api::replay_document(1),
            json!({"i0": input("VALID-0002")}),
        )
        .await
        .unwrap();
    assert!(r.data.is_none());
    assert_eq!(r.errors.len(), 2, "{:?}", r.errors);
    assert_eq!(r.errors[0].error_type.as_deref(), Some("Lambda:Unhandled"));
    assert!(r.errors[1].error_type.is_none());
    assert!(
        r.errors[1]
            .message
            .starts_with("Cannot return null for non-nullable type"),
        "{:?}",
        r.errors
    );
    assert_eq!(r.errors[1].root_field(), Some("e0"));
    assert_eq!(classify_gql_errors(&r.errors), Some(ErrorClass::Ambiguous));
}

#[tokio::test]
async fn a_request_past_the_limit_is_answered_504_and_its_mutations_stand() {
    let sim = Sim::start(SimOptions {
        request_limit: Duration::from_millis(300),
        ..SimOptions::default()
    })
    .await
    .unwrap();
    let c = Client::new(sim.url().parse().unwrap(), &Secret::new(sim.token()), None).unwrap();
    sim.set_field_delay(Duration::from_millis(100));
    let t = std::time::Instant::now();
    let e = c
        .create_scan_events(&[
            input("VALID-0001"),
            input("VALID-0001"),
            input("VALID-0001"),
            input("VALID-0001"),
        ])
        .await
        .unwrap_err();
    assert!(t.elapsed() >= Duration::from_millis(300));
    assert!(
        t.elapsed() < Duration::from_millis(390),
        "answered at the limit"
    );
    assert_eq!(e.status, Some(504));
    assert!(matches!(e.class, ErrorClass::Retryable { .. }), "{e}");
    assert_eq!(sim.scan_events().len(), 4, "recorded without our knowing");
    // Within the limit: answered.
    c.create_scan_events(&[input("VALID-0001"), input("VALID-0001")])
        .await
        .unwrap();
}

#[tokio::test]
async fn introspection_answers_from_the_sdl_or_is_switched_off() {
    let (_sim, c) = setup().await;
    let q = "query I { __schema { queryType { name } } __type(name: \"ScanEventInput\") { inputFields { name } } }";
    let r = c.execute("I", q, json!({})).await.unwrap();
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    let d = r.data.unwrap();
    assert_eq!(d["__schema"]["queryType"]["name"], "Query");
    let fields: Vec<&str> = d["__type"]["inputFields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert!(fields.contains(&"code"), "{fields:?}");
    let off = Sim::start(SimOptions {
        introspection: false,
        ..SimOptions::default()
    })
    .await
    .unwrap();
    let c = Client::new(off.url().parse().unwrap(), &Secret::new(off.token()), None).unwrap();
    let r = c.execute("I", q, json!({})).await.unwrap();
    assert_eq!(classify_gql_errors(&r.errors), Some(ErrorClass::Mismatch));
    c.warmup().await.unwrap();
}

/// The project's SDL with one more required field on `ScanEventInput`: Tiketo changed its API.
pub fn drifted_schema() -> String {
    tiketo_sim::SCHEMA_SDL.replace(
        "input ScanEventInput {\n  code: String!",
        "input ScanEventInput {\n  venue: String!\n  code: String!",
    )
}

#[tokio::test]
async fn a_changed_schema_refuses_the_daemons_events_as_a_mismatch_naming_the_variable() {
    let schema = drifted_schema();
    assert_ne!(schema, tiketo_sim::SCHEMA_SDL);
    let sim = Sim::start(SimOptions {
        schema: Some(schema),
        ..SimOptions::default()
    })
    .await
    .unwrap();
    let c = Client::new(sim.url().parse().unwrap(), &Secret::new(sim.token()), None).unwrap();
    let e = c.create_scan_event(&input("VALID-0001")).await.unwrap_err();
    assert_eq!(e.class, ErrorClass::Mismatch, "{e}");
    assert!(e.detail.contains("venue"), "{e}");
    let e = c
        .create_scan_events(&[input("VALID-0001"), input("VALID-0001")])
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Mismatch, "{e}");
    assert_eq!(e.variable.as_deref(), Some("i0"), "{e}");
    // The lookup still fits.
    assert!(c.pass_by_scan_code("VALID-0001").await.unwrap().is_some());
    assert!(sim.scan_events().is_empty());
}
