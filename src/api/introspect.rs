//! The live schema: the server's introspection answer turned back into SDL, and every
//! document this daemon can send checked against it (with the variables it sends), so that
//! `tiketo-gate doctor` can say, before the doors open, which operation and which field would
//! break. Pure: the request itself is the caller's.

use std::fmt::Write as _;

use apollo_compiler::validation::Valid;
use apollo_compiler::{ExecutableDocument, Schema};
use serde_json::Value;

/// The standard introspection query (types with their fields, arguments, input fields, enum
/// values, interfaces and possible types; wrapped types seven deep).
pub const QUERY: &str = r#"query Introspection {
  __schema {
    queryType { name }
    mutationType { name }
    subscriptionType { name }
    types {
      kind name
      fields(includeDeprecated: true) { name args { name type { ...T } defaultValue } type { ...T } }
      inputFields { name type { ...T } defaultValue }
      interfaces { name }
      enumValues(includeDeprecated: true) { name }
      possibleTypes { name }
    }
  }
}
fragment T on __Type { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name } } } } } } } }
"#;

const BUILT_IN: &[&str] = &["String", "Int", "Float", "Boolean", "ID"];

fn type_ref(t: &Value) -> Result<String, String> {
    let kind = t["kind"].as_str().ok_or("a type reference without kind")?;
    match kind {
        "NON_NULL" => Ok(format!("{}!", type_ref(&t["ofType"])?)),
        "LIST" => Ok(format!("[{}]", type_ref(&t["ofType"])?)),
        _ => t["name"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| "a named type reference without name".to_owned()),
    }
}

fn default(v: &Value) -> String {
    match v.as_str() {
        Some(d) => format!(" = {d}"),
        None => String::new(),
    }
}

/// The SDL of an introspection answer's `data` (`{"__schema": ...}`).
pub fn sdl_from_introspection(data: &Value) -> Result<String, String> {
    let schema = data
        .get("__schema")
        .filter(|s| s.is_object())
        .ok_or("the answer has no __schema")?;
    let types = schema["types"].as_array().ok_or("__schema has no types")?;
    let mut sdl = String::new();
    let root = |k: &str| schema[k]["name"].as_str().map(str::to_owned);
    let roots: Vec<(&str, String)> = [
        ("query", root("queryType")),
        ("mutation", root("mutationType")),
        ("subscription", root("subscriptionType")),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.map(|v| (k, v)))
    .collect();
    let _ = writeln!(sdl, "schema {{");
    for (k, v) in &roots {
        let _ = writeln!(sdl, "  {k}: {v}");
    }
    let _ = writeln!(sdl, "}}");
    for t in types {
        let name = t["name"].as_str().ok_or("a type without name")?;
        if name.starts_with("__") || BUILT_IN.contains(&name) {
            continue;
        }
        let fields = |key: &str, args: bool| -> Result<String, String> {
            let mut out = String::new();
            for f in t[key].as_array().into_iter().flatten() {
                let fname = f["name"].as_str().ok_or("a field without name")?;
                let mut a = String::new();
                if args {
                    let list: Vec<String> = f["args"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|arg| {
                            Ok(format!(
                                "{}: {}{}",
                                arg["name"].as_str().ok_or("an argument without name")?,
                                type_ref(&arg["type"])?,
                                default(&arg["defaultValue"])
                            ))
                        })
                        .collect::<Result<_, String>>()?;
                    if !list.is_empty() {
                        a = format!("({})", list.join(", "));
                    }
                }
                let _ = writeln!(
                    out,
                    "  {fname}{a}: {}{}",
                    type_ref(&f["type"])?,
                    if args {
                        String::new()
                    } else {
                        default(&f["defaultValue"])
                    }
                );
            }
            Ok(out)
        };
        let names = |key: &str| -> Vec<String> {
            t[key]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|i| i["name"].as_str().map(str::to_owned))
                .collect()
        };
        match t["kind"].as_str().unwrap_or("") {
            "SCALAR" => {
                let _ = writeln!(sdl, "scalar {name}");
            }
            "OBJECT" | "INTERFACE" => {
                let keyword = if t["kind"] == "OBJECT" {
                    "type"
                } else {
                    "interface"
                };
                let interfaces = names("interfaces");
                let imp = if interfaces.is_empty() {
                    String::new()
                } else {
                    format!(" implements {}", interfaces.join(" & "))
                };
                let body = fields("fields", true)?;
                if body.is_empty() {
                    // An object without fields is not valid SDL; it cannot be selected anyway.
                    continue;
                }
                let _ = writeln!(sdl, "{keyword} {name}{imp} {{\n{body}}}");
            }
            "INPUT_OBJECT" => {
                let body = fields("inputFields", false)?;
                if !body.is_empty() {
                    let _ = writeln!(sdl, "input {name} {{\n{body}}}");
                }
            }
            "ENUM" => {
                let values = names("enumValues");
                if !values.is_empty() {
                    let _ = writeln!(sdl, "enum {name} {{ {} }}", values.join(" "));
                }
            }
            "UNION" => {
                let members = names("possibleTypes");
                if !members.is_empty() {
                    let _ = writeln!(sdl, "union {name} = {}", members.join(" | "));
                }
            }
            other => return Err(format!("type {name} has an unknown kind {other:?}")),
        }
    }
    Ok(sdl)
}

/// Parses an SDL into a schema to check documents against.
pub fn schema(sdl: &str) -> Result<Valid<Schema>, String> {
    // AppSync's own directives (`@aws_api_key`...) may be referenced; an introspected schema
    // does not list directives, and none is needed to check documents.
    Schema::parse_and_validate(sdl, "server.graphql").map_err(|e| {
        let first = e.errors.iter().next().map(|d| d.error.to_string());
        format!(
            "the server's schema cannot be read: {}",
            first.unwrap_or_else(|| "invalid".into())
        )
    })
}

/// One document the daemon sends, with variables as it sends them.
pub struct Sent {
    pub operation: &'static str,
    pub document: String,
    pub variables: Value,
}

/// Where a document would break: the operation and the server's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Break {
    pub operation: String,
    pub problem: String,
}

/// Checks each document and its variables against the schema.
pub fn check(schema: &Valid<Schema>, sent: &[Sent]) -> Vec<Break> {
    let mut out = Vec::new();
    for s in sent {
        let br = |problem: String| Break {
            operation: s.operation.to_owned(),
            problem,
        };
        let doc = match ExecutableDocument::parse_and_validate(schema, &s.document, "op.graphql") {
            Ok(d) => d,
            Err(e) => {
                for d in e.errors.iter().take(3) {
                    out.push(br(d.error.to_string()));
                }
                continue;
            }
        };
        let Ok(op) = doc.operations.get(Some(s.operation)) else {
            out.push(br("the document has no such operation".into()));
            continue;
        };
        let vars: apollo_compiler::response::serde_json_bytes::Value = s.variables.clone().into();
        let empty = apollo_compiler::response::serde_json_bytes::Map::new();
        let map = vars.as_object().unwrap_or(&empty);
        if let Err(e) = apollo_compiler::request::coerce_variable_values(schema, op, map) {
            out.push(br(e.message().to_string()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn introspect(sdl: &str) -> Value {
        let schema = Schema::parse_and_validate(sdl, "s.graphql").unwrap();
        let doc = ExecutableDocument::parse_and_validate(&schema, QUERY, "q.graphql").unwrap();
        let op = doc.operations.get(None).unwrap();
        let vars = apollo_compiler::request::coerce_variable_values(
            &schema,
            op,
            &apollo_compiler::response::serde_json_bytes::Map::new(),
        )
        .unwrap();
        let resp = apollo_compiler::introspection::partial_execute(
            &schema,
            &schema.implementers_map(),
            &doc,
            op,
            &vars,
        )
        .unwrap();
        serde_json::to_value(&resp.data).unwrap()
    }

    #[test]
    fn the_project_schema_survives_introspection_and_every_document_fits_it() {
        let data = introspect(crate::api::SCHEMA);
        let sdl = sdl_from_introspection(&data).unwrap();
        let schema = schema(&sdl).unwrap();
        let sent = crate::api::documents_sent();
        assert!(sent.len() >= 5);
        assert_eq!(check(&schema, &sent), vec![]);
    }

    #[test]
    fn a_new_required_input_field_and_a_renamed_field_are_named() {
        let drifted = crate::api::SCHEMA
            .replace(
                "input ScanEventInput {\n  code: String!",
                "input ScanEventInput {\n  venue: String!\n  code: String!",
            )
            .replacen("  templateId: ID!", "  passTemplateId: ID!", 1);
        assert_ne!(drifted, crate::api::SCHEMA);
        let sdl = sdl_from_introspection(&introspect(&drifted)).unwrap();
        let breaks = check(&schema(&sdl).unwrap(), &crate::api::documents_sent());
        let text = format!("{breaks:?}");
        assert!(
            breaks
                .iter()
                .any(|b| b.operation == "CreateScanEvent" && b.problem.contains("venue")),
            "{text}"
        );
        assert!(
            breaks
                .iter()
                .any(|b| b.operation == "Replay" && b.problem.contains("venue")),
            "{text}"
        );
        assert!(
            breaks
                .iter()
                .any(|b| b.operation == "PassByScanCode" && b.problem.contains("templateId")),
            "{text}"
        );
    }

    #[test]
    fn garbage_is_a_clear_error() {
        assert!(sdl_from_introspection(&serde_json::json!({"x": 1})).is_err());
        assert!(sdl_from_introspection(
            &serde_json::json!({"__schema": {"types": [{"kind": "OBJECT"}]}})
        )
        .is_err());
        assert!(schema("type Query { a: Nope }").is_err());
    }
}
