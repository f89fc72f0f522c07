//! The API client against tiketo-sim over real HTTP: every failure class the design notes
//! name, as the client sees it, and the sim's own checks (schema, variables, token).

use std::time::Duration;

use serde_json::json;
use tiketo_gate::api::classify::ErrorClass;
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
async fn a_document_that_does_not_fit_the_schema_is_a_permanent_validation_error() {
    let (sim, c) = setup().await;
    let e = c
        .execute(
            "Bad",
            "query Bad { passByScanCode(code: \"x\") { id nosuchfield } }",
            json!({}),
        )
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Permanent);
    assert_eq!(e.status, Some(400));
    assert!(e.detail.contains("Validation error"), "{e}");
    // A variable of the wrong type is caught too.
    let e = c
        .execute(
            "PassByScanCode",
            tiketo_gate::api::ops::PASS_BY_SCAN_CODE.document,
            json!({"code": 5}),
        )
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Permanent, "{e}");
    // AWSJSON must be a string holding JSON.
    let bad = ScanEventInput {
        code: "VALID-0001".into(),
        reward_points: None,
        data: "{not json".into(),
    };
    let e = c.create_scan_event(&bad).await.unwrap_err();
    assert_eq!(e.class, ErrorClass::Permanent, "{e}");
    assert!(e.detail.contains("AWSJSON"), "{e}");
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
