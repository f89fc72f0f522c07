//! Classification of API failures: what the daemon does about each one.
//!
//! Pure: it looks at an HTTP status, a `Retry-After` header and the GraphQL `errors[]`, never
//! at a socket. AppSync answers most failures with HTTP 200 and `errors[]` (sometimes beside
//! partial `data`), so `errors` is always inspected.

use std::time::Duration;

use serde::Deserialize;

/// What to do about a failed request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Transport, timeout, 5xx, 429 and throttling: try again later (after `retry_after` when
    /// the server said so).
    Retryable { retry_after: Option<Duration> },
    /// Bad or revoked token: pause and alert; retrying with the same token will not help.
    Auth,
    /// The request itself is wrong (validation, mapping template, 400): it will never succeed.
    Permanent,
    /// `Lambda:Unhandled`: may be a passing fault or a refusal. Retry a few times, then give up.
    Ambiguous,
    /// The server's schema does not fit this daemon's documents or variables (AppSync:
    /// HTTP 200, `data: null`, errors without `errorType` such as "Validation error of type
    /// FieldUndefined ..."), or its answer has a shape the daemon cannot read. Neither the
    /// guest's fault nor the event's: an alarm; the offline policy decides and events wait.
    Mismatch,
}

impl ErrorClass {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Retryable { .. } => "retryable",
            ErrorClass::Auth => "auth",
            ErrorClass::Permanent => "permanent",
            ErrorClass::Ambiguous => "ambiguous",
            ErrorClass::Mismatch => "mismatch",
        }
    }

    /// The API could not give an answer (the offline policy decides instead).
    pub fn is_unavailable(self) -> bool {
        matches!(
            self,
            ErrorClass::Retryable { .. } | ErrorClass::Auth | ErrorClass::Mismatch
        )
    }
}

/// One entry of a GraphQL `errors[]` as AppSync sends it.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct GqlError {
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub error_type: Option<String>,
    #[serde(default)]
    pub path: Option<Vec<serde_json::Value>>,
}

impl GqlError {
    /// The first path segment: the root field or alias the error belongs to.
    pub fn root_field(&self) -> Option<&str> {
        self.path.as_ref()?.first()?.as_str()
    }
}

/// Whether an error without `errorType` says the request does not fit the server's schema.
/// A request error (GraphQL's term: no `path`, the request as a whole refused) without
/// `errorType` is one: AppSync types everything else it refuses. Its messages, as AppSync
/// (graphql-java) words them, "Validation error of type FieldUndefined: ...", "Variable
/// 'input' has coerced Null value for NonNull type ...", "Variable 'i3' has an invalid value
/// ...", and as AWS's Amplify AppSync simulator (graphql-js) does, "Cannot query field ...",
/// `Variable "$i1" got invalid value ...`, are recognised with a path too.
pub fn is_schema_error(e: &GqlError) -> bool {
    if e.error_type.as_deref().is_some_and(|t| !t.is_empty()) {
        return false;
    }
    let m = e.message.trim_start();
    let no_path = e.path.as_ref().is_none_or(|p| p.is_empty());
    (no_path && !m.starts_with("Cannot return null"))
        || m.starts_with("Validation error")
        || m.starts_with("Cannot query field")
        || (m.starts_with("Variable '")
            && (m.contains("has coerced Null value")
                || m.contains("has an invalid value")
                || m.contains("is undefined")))
        || (m.starts_with("Variable \"$")
            && (m.contains("got invalid value") || m.contains("was not provided")))
        || m.contains("Variable of type")
}

/// The variable a schema error names (`Variable 'i3' has an invalid value ...`, or
/// `Variable "$i3" got invalid value ...`: `i3`), when it names one: in a replay batch, the
/// event whose value the server refused.
pub fn named_variable(e: &GqlError) -> Option<&str> {
    let m = e.message.trim_start();
    let name = if let Some(rest) = m.strip_prefix("Variable '") {
        rest.split_once('\'')?.0
    } else {
        m.strip_prefix("Variable \"$")?.split_once('"')?.0
    };
    (!name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        .then_some(name)
}

/// The class of one GraphQL error.
pub fn classify_gql_error(e: &GqlError) -> ErrorClass {
    if is_schema_error(e) {
        return ErrorClass::Mismatch;
    }
    let ty = e.error_type.as_deref().unwrap_or("");
    let lower = ty.to_ascii_lowercase();
    if lower.starts_with("unauthorized")
        || lower == "unauthenticated"
        || lower == "accessdeniedexception"
    {
        ErrorClass::Auth
    } else if lower.contains("throttl")
        || lower.contains("executiontimeout")
        || lower.contains("provisionedthroughputexceeded")
        || lower.contains("requestlimitexceeded")
        || lower.contains("serviceunavailable")
        || lower.contains("internalfailure")
        || lower.contains("internalservererror")
        || lower.contains("toomanyrequests")
        || lower == "lambda:toomanyrequestsexception"
    {
        ErrorClass::Retryable { retry_after: None }
    } else if ty == "Lambda:Unhandled"
        || (ty.is_empty() && e.message.trim_start().starts_with("Cannot return null"))
    {
        // A Lambda that threw; or a resolver that gave nothing for a non-null field without
        // saying why (AppSync adds this error to a thrown Lambda's; the Amplify simulator
        // sends it alone): a passing fault or a refusal, nobody can tell.
        ErrorClass::Ambiguous
    } else {
        // Validation errors ("Validation error of type ..."), MappingTemplate, DynamoDB
        // condition failures and whatever else the server chose to refuse: retrying the same
        // request gives the same answer.
        ErrorClass::Permanent
    }
}

/// The class of a response's `errors[]` as a whole: auth beats retryable beats mismatch beats
/// ambiguous beats permanent (an auth problem must be seen; a passing fault must not drop a
/// scan; a schema that changed must not turn into per-event refusals).
pub fn classify_gql_errors(errors: &[GqlError]) -> Option<ErrorClass> {
    errors
        .iter()
        .map(classify_gql_error)
        .max_by_key(|c| match c {
            ErrorClass::Auth => 4,
            ErrorClass::Retryable { .. } => 3,
            ErrorClass::Mismatch => 2,
            ErrorClass::Ambiguous => 1,
            ErrorClass::Permanent => 0,
        })
}

/// The class of a non-2xx HTTP answer.
pub fn classify_status(status: u16, retry_after: Option<Duration>) -> ErrorClass {
    match status {
        401 | 403 => ErrorClass::Auth,
        408 | 425 | 429 => ErrorClass::Retryable { retry_after },
        500..=599 => ErrorClass::Retryable { retry_after },
        _ => ErrorClass::Permanent,
    }
}

/// Parses a `Retry-After` header: delta-seconds or an HTTP date (relative to `now`).
pub fn parse_retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs.min(24 * 3600)));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(
        at.duration_since(now)
            .unwrap_or(Duration::ZERO)
            .min(Duration::from_secs(24 * 3600)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(ty: Option<&str>, msg: &str) -> GqlError {
        GqlError {
            message: msg.into(),
            error_type: ty.map(Into::into),
            path: None,
        }
    }

    #[test]
    fn http_statuses() {
        let ra = Some(Duration::from_secs(7));
        assert_eq!(classify_status(401, None), ErrorClass::Auth);
        assert_eq!(classify_status(403, None), ErrorClass::Auth);
        assert_eq!(
            classify_status(429, ra),
            ErrorClass::Retryable { retry_after: ra }
        );
        assert_eq!(
            classify_status(500, None),
            ErrorClass::Retryable { retry_after: None }
        );
        assert_eq!(
            classify_status(502, None),
            ErrorClass::Retryable { retry_after: None }
        );
        assert_eq!(
            classify_status(503, ra),
            ErrorClass::Retryable { retry_after: ra }
        );
        assert_eq!(
            classify_status(504, None),
            ErrorClass::Retryable { retry_after: None }
        );
        assert_eq!(classify_status(400, None), ErrorClass::Permanent);
        assert_eq!(classify_status(404, None), ErrorClass::Permanent);
        assert_eq!(classify_status(413, None), ErrorClass::Permanent);
    }

    #[test]
    fn appsync_error_types() {
        let retry = ErrorClass::Retryable { retry_after: None };
        for (ty, class) in [
            ("Unauthorized", ErrorClass::Auth),
            ("UnauthorizedException", ErrorClass::Auth),
            ("Lambda:ExecutionTimeoutException", retry),
            ("ExecutionTimeout", retry),
            ("ThrottlingException", retry),
            ("Throttling", retry),
            ("DynamoDB:ProvisionedThroughputExceededException", retry),
            ("DynamoDB:ThrottlingException", retry),
            ("Lambda:TooManyRequestsException", retry),
            ("Lambda:Unhandled", ErrorClass::Ambiguous),
            ("MappingTemplate", ErrorClass::Permanent),
            (
                "DynamoDB:ConditionalCheckFailedException",
                ErrorClass::Permanent,
            ),
            ("NoEntriesLeft", ErrorClass::Permanent),
        ] {
            assert_eq!(classify_gql_error(&err(Some(ty), "x")), class, "{ty}");
        }
        // AppSync's validation and coercion errors: HTTP 200, no errorType, no path.
        for msg in [
            "Validation error of type FieldUndefined: Field 'x' in type 'Query' is undefined @ 'x'",
            "Validation error of type WrongType: argument 'input.venue' with value 'x' is missing required fields '[venue]' @ 'createScanEvent'",
            "Validation error of type UnknownType: Unknown type AWSTimestamp",
            "Variable 'input' has coerced Null value for NonNull type 'String!'",
            "Variable 'i3' has an invalid value: Unable to parse `{` as valid JSON.",
        ] {
            assert_eq!(classify_gql_error(&err(None, msg)), ErrorClass::Mismatch, "{msg}");
        }
        // The same words with an errorType are that type's.
        assert_eq!(
            classify_gql_error(&err(Some("MappingTemplate"), "Validation error of x")),
            ErrorClass::Permanent
        );
        // AWS's Amplify AppSync simulator words them as graphql-js does.
        for msg in [
            "Cannot query field \"nosuchfield\" on type \"Pass\".",
            "Variable \"$code\" of required type \"String!\" was not provided.",
            "Variable \"$i1\" got invalid value 5000000000 at \"i1.rewardPoints\"; Expected type Int.",
        ] {
            assert_eq!(classify_gql_error(&err(None, msg)), ErrorClass::Mismatch, "{msg}");
        }
        // A request error without errorType, whatever its words.
        assert_eq!(
            classify_gql_error(&err(None, "something new")),
            ErrorClass::Mismatch
        );
        // A field error without errorType is not.
        let mut field = err(
            None,
            "Can't serialize value (/passByScanCode/expirationDate)",
        );
        field.path = Some(vec!["passByScanCode".into(), "expirationDate".into()]);
        assert_eq!(classify_gql_error(&field), ErrorClass::Permanent);
        // AppSync's second error beside a thrown Lambda error (the simulator's only one):
        // not a schema error; nobody can tell what happened.
        let mut second = err(
            None,
            "Cannot return null for non-nullable type: 'ID' within parent 'ScanEvent' (/e0/id)",
        );
        second.path = Some(vec!["e0".into()]);
        assert_eq!(classify_gql_error(&second), ErrorClass::Ambiguous);
    }

    #[test]
    fn the_variable_a_schema_error_names() {
        let e = err(
            None,
            "Variable 'i3' has an invalid value: Expected type 'Int' but was 'Long'.",
        );
        assert_eq!(named_variable(&e), Some("i3"));
        let e = err(
            None,
            "Variable \"$i1\" got invalid value 5000000000 at \"i1.rewardPoints\"",
        );
        assert_eq!(named_variable(&e), Some("i1"));
        let e = err(None, "Validation error of type FieldUndefined: Field 'x'");
        assert_eq!(named_variable(&e), None);
        assert_eq!(named_variable(&err(None, "Variable '' has")), None);
    }

    #[test]
    fn mixed_errors_take_the_most_urgent_class() {
        let errors = [
            err(Some("MappingTemplate"), "a"),
            err(Some("ThrottlingException"), "b"),
        ];
        assert_eq!(
            classify_gql_errors(&errors),
            Some(ErrorClass::Retryable { retry_after: None })
        );
        let errors = [
            err(Some("ThrottlingException"), "a"),
            err(Some("Unauthorized"), "b"),
        ];
        assert_eq!(classify_gql_errors(&errors), Some(ErrorClass::Auth));
        let errors = [
            err(Some("MappingTemplate"), "a"),
            err(Some("Lambda:Unhandled"), "b"),
        ];
        assert_eq!(classify_gql_errors(&errors), Some(ErrorClass::Ambiguous));
        let errors = [
            err(Some("Lambda:Unhandled"), "a"),
            err(None, "Validation error of type WrongType: b"),
        ];
        assert_eq!(classify_gql_errors(&errors), Some(ErrorClass::Mismatch));
        assert_eq!(classify_gql_errors(&[]), None);
    }

    #[test]
    fn unavailable_means_the_offline_policy_decides() {
        assert!(ErrorClass::Retryable { retry_after: None }.is_unavailable());
        assert!(ErrorClass::Auth.is_unavailable());
        assert!(ErrorClass::Mismatch.is_unavailable());
        assert!(!ErrorClass::Permanent.is_unavailable());
        assert!(!ErrorClass::Ambiguous.is_unavailable());
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(parse_retry_after("5", now), Some(Duration::from_secs(5)));
        assert_eq!(
            parse_retry_after(" 120 ", now),
            Some(Duration::from_secs(120))
        );
        let date = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(parse_retry_after(&date, now), Some(Duration::from_secs(30)));
        let date = httpdate::fmt_http_date(now - Duration::from_secs(100));
        assert_eq!(parse_retry_after(&date, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(
            parse_retry_after("99999999", now),
            Some(Duration::from_secs(86400))
        );
    }

    #[test]
    fn root_field_of_an_error_path() {
        let e: GqlError =
            serde_json::from_str(r#"{"message":"m","errorType":"X","path":["e3","id"]}"#).unwrap();
        assert_eq!(e.root_field(), Some("e3"));
    }
}
