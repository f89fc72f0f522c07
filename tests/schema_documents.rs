//! Every GraphQL document the daemon can send fits the SDL file, and the SDL file covers the
//! whole public API reference.

use apollo_compiler::{ExecutableDocument, Schema};
use tiketo_gate::api::{ops, SCHEMA};

#[test]
fn every_document_validates_against_the_schema() {
    let schema = Schema::parse_and_validate(SCHEMA, "schema.graphql").expect("the SDL is valid");
    for op in ops::ALL {
        let doc = ExecutableDocument::parse_and_validate(&schema, op.document, op.name)
            .unwrap_or_else(|e| panic!("{} does not fit the schema:\n{}", op.name, e.errors));
        assert!(
            doc.operations.get(Some(op.name)).is_ok(),
            "{} has no operation named {}",
            op.name,
            op.name
        );
    }
}

#[test]
fn replay_batches_validate_against_the_schema() {
    let schema = Schema::parse_and_validate(SCHEMA, "schema.graphql").unwrap();
    for n in [1, 2, 17, 100] {
        let doc = tiketo_gate::api::replay_document(n);
        ExecutableDocument::parse_and_validate(&schema, &doc, "replay.graphql")
            .unwrap_or_else(|e| panic!("batch of {n} does not fit:\n{}", e.errors));
    }
}

#[test]
fn the_schema_covers_the_reference() {
    let schema = Schema::parse_and_validate(SCHEMA, "schema.graphql").unwrap();
    let queries = [
        "eventTickets",
        "loyaltyCards",
        "pass",
        "passByScanCode",
        "passTemplates",
        "projects",
    ];
    let mutations = [
        "createEventTicketPass",
        "createLoyaltyCardPass",
        "createPass",
        "createScanEvent",
        "deletePassMessage",
        "deletePassTemplateMessage",
        "putPassMessage",
        "putPassTemplateMessage",
        "registerDevice",
        "updateEventTicketPass",
        "updateLoyaltyCardPass",
        "updatePass",
    ];
    let types = [
        "AWSDateTime",
        "AWSJSON",
        "DeviceInput",
        "EventTicket",
        "EventTicketPassInput",
        "LoyaltyCard",
        "LoyaltyCardPassInput",
        "Message",
        "MessageInput",
        "Pass",
        "PassDownload",
        "PassFiles",
        "PassFilesInput",
        "PassInput",
        "PassTemplate",
        "PassTemplateVariable",
        "PassTemplateVariableScope",
        "PassTemplateVariableType",
        "Platform",
        "Project",
        "RegisterDeviceResult",
        "ScanEvent",
        "ScanEventInput",
        "PassShare",
    ];
    let query = schema.get_object("Query").unwrap();
    for q in queries {
        assert!(query.fields.contains_key(q), "Query.{q} missing");
    }
    let mutation = schema.get_object("Mutation").unwrap();
    for m in mutations {
        assert!(mutation.fields.contains_key(m), "Mutation.{m} missing");
    }
    for t in types {
        assert!(schema.types.contains_key(t), "type {t} missing");
    }
    // The fixed inferences of issue 2.
    let nullable = |obj: &str, field: &str| {
        !schema.get_object(obj).unwrap().fields[field]
            .ty
            .is_non_null()
    };
    assert!(nullable("Query", "passByScanCode"));
    assert!(nullable("Query", "pass"));
    let input = schema.get_input_object("ScanEventInput").unwrap();
    let fields: Vec<String> = input.fields.keys().map(|k| k.to_string()).collect();
    assert_eq!(fields, ["code", "rewardPoints", "voided", "data"]);
    assert!(input.fields["code"].ty.is_non_null());
}

#[test]
fn the_examples_of_the_reference_validate() {
    // Documents from the reference itself (less the undefined fragment of its
    // createScanEvent example).
    let schema = Schema::parse_and_validate(SCHEMA, "schema.graphql").unwrap();
    for doc in [
        "query GetProjects { projects { id name } }",
        "query GetPassTemplates { passTemplates { id name } }",
        "query EventTickets { eventTickets { id name } }",
        "mutation CreateScanEvent($input: ScanEventInput!) { createScanEvent(input: $input) { id code rewardPoints voided data createdAt pass { id templateId parameters files { background footer icon logo strip thumbnail } type expirationDate voided download { url expiration } downloadGooglePay { url expiration } share { url expiration } template { id name downloadUrl downloadUrlGooglePay variables { name type scope } } project { id name scanConfig } } } }",
        "mutation RegisterDevice($input: DeviceInput!) { registerDevice(input: $input) { workspaceName token } }",
        "mutation CreateOrUpdatePass($projectId: ID!, $id: ID, $input: PassInput!) { createPass(projectId: $projectId, id: $id, input: $input) { share { url expiration } } }",
        "mutation DeletePassMessage($projectId: ID!, $passId: ID!, $id: ID!) { deletePassMessage(projectId: $projectId, passId: $passId, id: $id) { id body header destinations notifications order dateFrom dateTo } }",
    ] {
        ExecutableDocument::parse_and_validate(&schema, doc, "example.graphql")
            .unwrap_or_else(|e| panic!("{doc}\n{}", e.errors));
    }
}
