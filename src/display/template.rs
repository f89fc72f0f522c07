//! The greeting template (`display.greeting = "Welcome, {firstName}!"`): text with
//! placeholders that name keys of the pass's `parameters` JSON (`{holder.firstName}` for a
//! nested one). `{{` and `}}` are literal braces. Pure.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    /// A key path into the parameters.
    Key(Vec<String>),
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

impl Template {
    /// Parses a template; an error says which placeholder and why.
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut chars = text.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            match c {
                '{' if chars.peek().map(|p| p.1) == Some('{') => {
                    chars.next();
                    lit.push('{');
                }
                '}' if chars.peek().map(|p| p.1) == Some('}') => {
                    chars.next();
                    lit.push('}');
                }
                '}' => {
                    return Err(format!(
                        "a lone '}}' at character {} (write }}}} for a brace)",
                        i + 1
                    ))
                }
                '{' => {
                    let rest = &text[i + 1..];
                    let Some(end) = rest.find('}') else {
                        return Err(format!(
                            "the placeholder at character {} is not closed with '}}'",
                            i + 1
                        ));
                    };
                    let name = &rest[..end];
                    let key: Vec<String> = name.split('.').map(str::to_owned).collect();
                    let ok = key.iter().all(|k| {
                        !k.is_empty()
                            && k.chars()
                                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                    });
                    if !ok {
                        return Err(format!(
                            "unknown placeholder {{{name}}}: a placeholder is a key of the pass's parameters, like {{firstName}} or {{holder.firstName}} (letters, digits, _ and -)"
                        ));
                    }
                    if !lit.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut lit)));
                    }
                    parts.push(Part::Key(key));
                    // Skip the placeholder's characters.
                    for _ in 0..name.chars().count() + 1 {
                        chars.next();
                    }
                }
                c => lit.push(c),
            }
        }
        if !lit.is_empty() {
            parts.push(Part::Text(lit));
        }
        Ok(Template { parts })
    }

    /// Whether it reads the pass's parameters (then the lookup asks for them).
    pub fn uses_parameters(&self) -> bool {
        self.parts.iter().any(|p| matches!(p, Part::Key(_)))
    }

    /// The text with each placeholder filled from `parameters` (a JSON object as a string),
    /// HTML-escaped; `None` when a key is missing, not a string, number or boolean, or the
    /// parameters are not JSON (the caller falls back to the plain welcome).
    pub fn render_html(&self, parameters: Option<&str>) -> Option<String> {
        let parsed: Option<Value> = parameters.and_then(|p| serde_json::from_str(p).ok());
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(&escape_html(t)),
                Part::Key(path) => {
                    let mut v = parsed.as_ref()?;
                    for k in path {
                        v = v.as_object()?.get(k)?;
                    }
                    let text = match v {
                        Value::String(s) if !s.trim().is_empty() => s.trim().to_owned(),
                        Value::Number(n) => n.to_string(),
                        Value::Bool(b) => b.to_string(),
                        _ => return None,
                    };
                    out.push_str(&escape_html(&text));
                }
            }
        }
        Some(out)
    }
}

/// Escapes text for HTML content and attribute values.
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_escapes_and_falls_back() {
        let t = Template::parse("Welcome, {firstName}!").unwrap();
        assert!(t.uses_parameters());
        assert_eq!(
            t.render_html(Some(r#"{"firstName":"Anna","lastName":"Nováková"}"#))
                .as_deref(),
            Some("Welcome, Anna!")
        );
        assert_eq!(
            t.render_html(Some(r#"{"firstName":"<img src=x onerror=alert(1)>"}"#))
                .as_deref(),
            Some("Welcome, &lt;img src=x onerror=alert(1)&gt;!")
        );
        assert_eq!(
            t.render_html(Some(r#"{"lastName":"X"}"#)),
            None,
            "missing key"
        );
        assert_eq!(t.render_html(Some("not json")), None);
        assert_eq!(t.render_html(Some(r#"{"firstName":null}"#)), None);
        assert_eq!(t.render_html(Some(r#"{"firstName":"  "}"#)), None);
        assert_eq!(t.render_html(Some(r#"["Anna"]"#)), None);
        assert_eq!(t.render_html(None), None);
        let nested = Template::parse("Hi {holder.first_name} ({seat}) {{VIP}}").unwrap();
        assert_eq!(
            nested
                .render_html(Some(r#"{"holder":{"first_name":"Jan"},"seat":12}"#))
                .as_deref(),
            Some("Hi Jan (12) {VIP}")
        );
        let plain = Template::parse("Welcome & enjoy").unwrap();
        assert!(!plain.uses_parameters());
        assert_eq!(
            plain.render_html(None).as_deref(),
            Some("Welcome &amp; enjoy")
        );
    }

    #[test]
    fn bad_placeholders_are_named() {
        for (t, want) in [
            ("Hi {first name}", "unknown placeholder {first name}"),
            ("Hi {}", "unknown placeholder {}"),
            ("Hi {a..b}", "unknown placeholder {a..b}"),
            ("Hi {firstName", "not closed"),
            ("Hi firstName}", "a lone '}'"),
        ] {
            let e = Template::parse(t).unwrap_err();
            assert!(e.contains(want), "{t}: {e}");
        }
    }
}
