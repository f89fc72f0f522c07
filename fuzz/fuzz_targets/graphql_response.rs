//! What the API answers: any body is either not a GraphQL response or one whose pass, scan
//! event and batch parts are read (or refused) without a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tiketo_gate::api::{classify, parse_pass, parse_response, parse_scan_event, split_batch};

fuzz_target!(|data: &[u8]| {
    let n = data.first().map(|b| (*b % 8) as usize + 1).unwrap_or(1);
    let Some(resp) = parse_response(data) else { return };
    let _ = classify::classify_gql_errors(&resp.errors);
    if let Some(d) = &resp.data {
        let _ = parse_pass(d.get("passByScanCode").unwrap_or(&serde_json::Value::Null));
        let _ = parse_scan_event(d.get("createScanEvent").unwrap_or(&serde_json::Value::Null));
    }
    if let Ok(outcomes) = split_batch(&resp, n) {
        assert_eq!(outcomes.len(), n);
    }
});
