//! A replay batch: up to a hundred `createScanEvent` mutations in one document, with
//! aliases (`e0`, `e1`...), and the server's answer split back into one outcome per alias.

use serde_json::Value;

use super::classify::{ErrorClass, GqlError};
use super::{bad_shape, parse_scan_event, ApiError, Client, GqlResponse, ScanEventInput};

/// The outcome of one aliased `createScanEvent` in a replay batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AliasOutcome {
    /// The server has it (`event_id` is `None` when another alias's error nulled `data`).
    Sent {
        event_id: Option<String>,
        voided: bool,
    },
    Failed {
        class: ErrorClass,
        detail: String,
    },
    /// Not known to have run: an earlier alias failed and nulled the whole `data`, and the
    /// server may have stopped there. Sent again (a duplicate is recognisable by its scanId).
    NotRun,
}

/// `mutation Replay($i0: ScanEventInput!, ...) { e0: createScanEvent(input: $i0) { id voided } ... }`:
/// several scan events in one request. Mutations in one document run in order, and each alias
/// is acknowledged or failed on its own.
pub fn replay_document(n: usize) -> String {
    let vars: Vec<String> = (0..n).map(|i| format!("$i{i}: ScanEventInput!")).collect();
    let fields: Vec<String> = (0..n)
        .map(|i| format!("e{i}: createScanEvent(input: $i{i}) {{ id voided }}"))
        .collect();
    format!(
        "mutation Replay({}) {{ {} }}",
        vars.join(", "),
        fields.join(" ")
    )
}

/// Splits a batch response into one outcome per alias (`e0`, `e1`, ...).
pub fn split_batch(resp: &GqlResponse, n: usize) -> Result<Vec<AliasOutcome>, ApiError> {
    // Errors without a path concern the whole request.
    let whole: Vec<GqlError> = resp
        .errors
        .iter()
        .filter(|e| e.root_field().is_none())
        .cloned()
        .collect();
    if !whole.is_empty() {
        return Err(ApiError::from_gql(&whole, Some(200)));
    }
    let mut out = Vec::with_capacity(n);
    let mut earlier_failed = false;
    for i in 0..n {
        let alias = format!("e{i}");
        let errors: Vec<GqlError> = resp
            .errors
            .iter()
            .filter(|e| e.root_field() == Some(alias.as_str()))
            .cloned()
            .collect();
        if !errors.is_empty() {
            let e = ApiError::from_gql(&errors, Some(200));
            out.push(AliasOutcome::Failed {
                class: e.class,
                detail: e.detail,
            });
            earlier_failed = true;
            continue;
        }
        match resp
            .data
            .as_ref()
            .and_then(|d| d.get(&alias))
            .filter(|v| !v.is_null())
        {
            Some(v) => {
                let ack = parse_scan_event(v)?;
                out.push(AliasOutcome::Sent {
                    event_id: Some(ack.id),
                    voided: ack.voided,
                });
            }
            None if resp.data.is_none() && !resp.errors.is_empty() => {
                // An alias's error nulled the whole `data` (non-null propagation). Mutations
                // run in order: the aliases before the first failure ran; the later ones may
                // not have.
                out.push(if earlier_failed {
                    AliasOutcome::NotRun
                } else {
                    AliasOutcome::Sent {
                        event_id: None,
                        voided: false,
                    }
                });
            }
            None => return Err(bad_shape(&format!("no answer for {alias}"))),
        }
    }
    Ok(out)
}

impl Client {
    /// Sends several scan events in one request (see [`replay_document`]).
    pub async fn create_scan_events(
        &self,
        inputs: &[ScanEventInput],
    ) -> Result<Vec<AliasOutcome>, ApiError> {
        let mut vars = serde_json::Map::new();
        for (i, input) in inputs.iter().enumerate() {
            vars.insert(
                format!("i{i}"),
                serde_json::to_value(input).unwrap_or(Value::Null),
            );
        }
        let resp = self
            .execute(
                "Replay",
                &replay_document(inputs.len()),
                Value::Object(vars),
            )
            .await?;
        split_batch(&resp, inputs.len())
    }
}
