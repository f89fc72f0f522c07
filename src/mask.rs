//! Keeping secrets out of logs: masked pass codes and a redacting wrapper for tokens.

use std::fmt;

/// The short form of a pass code that may appear in logs and on screens: an ellipsis and the
/// last 4 characters; a code of 8 characters or fewer shows only its last half, so a short
/// code is never shown whole.
pub fn mask_code(code: &str) -> String {
    let n = code.chars().count();
    let visible = if n > 8 { 4 } else { n / 2 };
    let tail: String = code.chars().skip(n - visible).collect();
    format!("…{tail}")
}

/// Replaces every occurrence of `code` in `text` by its masked form (server error messages
/// may echo what they were sent).
pub fn scrub(text: &str, code: &str) -> String {
    if code.is_empty() {
        return text.to_owned();
    }
    text.replace(code, &mask_code(code))
}

/// A secret string (API or device token). `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_keep_at_most_four_and_a_third() {
        assert_eq!(mask_code("ABCDEFGHIJKL"), "…IJKL");
        assert_eq!(mask_code("VALID-0001"), "…0001");
        assert_eq!(mask_code("TICKET-0001-XYZ"), "…-XYZ");
        assert_eq!(mask_code("ABCDEFGHI"), "…FGHI");
        assert_eq!(mask_code("ABCDEFGH"), "…EFGH");
        assert_eq!(mask_code("ABCDEF"), "…DEF");
        assert_eq!(mask_code("AB"), "…B");
        assert_eq!(mask_code("A"), "…");
        assert_eq!(mask_code(""), "…");
        assert_eq!(mask_code("ÄÖÜäöüß€ab"), "…ß€ab");
    }

    #[test]
    fn scrub_replaces_every_occurrence() {
        assert_eq!(
            scrub("no pass SECRET-CODE-1; SECRET-CODE-1", "SECRET-CODE-1"),
            "no pass …DE-1; …DE-1"
        );
    }

    #[test]
    fn secret_is_never_printed() {
        let s = Secret::new("tok-123");
        assert_eq!(format!("{s} {s:?}"), "[redacted] Secret([redacted])");
        assert_eq!(s.expose(), "tok-123");
    }
}
