//! Remote commands (pure): what a message on `<topic>/cmd` (a compact JWT, HS256) or on
//! `<topic>/ha/<reader>/lock` (Home Assistant's plain payloads) asks for, or why it is
//! refused. No IO here: the key, the clock, the clock's trust and the readers are given.
//!
//! A JWT command is done only when all of this holds: at most [`MAX_COMMAND_BYTES`], not
//! retained, a compact JWT whose header says HS256 and whose signature is the key's; `aud` is
//! this device's name; `act` is `open`, `lockdown`, `release` or `normal`; `reader`, if given,
//! is one of the readers; `iat` and `exp` are numbers with `exp - iat` at most 300 s; `jti`
//! is a non-empty string not seen before (the caller checks its memory last).
//!
//! The clock. Synced: `iat` at most [`LEEWAY_S`] in the future, `exp` at most [`LEEWAY_S`] in
//! the past. Not synced (a Pi has no RTC: until NTP answers its clock is the last shutdown's
//! time, behind): the door's clock cannot say a token is too new, so `iat` is not checked
//! against it; `exp` still is (a clock behind never refuses a fresh token; a clock ahead
//! refuses, which is the safe failure). Instead of the clock, the newest `iat` the door has
//! accepted is its time: a token issued more than 300 s before it is refused (as
//! uhppoted's increasing nonce). The `jti` memory refuses every replay either way.

use serde::Deserialize;

/// Larger messages are refused unread.
pub const MAX_COMMAND_BYTES: usize = 4096;
/// How far the signer's clock may be from the door's.
pub const LEEWAY_S: i64 = 30;
/// The longest a command may live.
pub const MAX_LIFETIME_S: i64 = 300;
/// The shortest key accepted (HS256: at least the hash's 32 bytes).
pub const MIN_KEY_BYTES: usize = 32;

/// What a command does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Open,
    Lockdown,
    Release,
    Normal,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Open => "open",
            Action::Lockdown => "lockdown",
            Action::Release => "release",
            Action::Normal => "normal",
        }
    }

    pub fn parse(s: &str) -> Option<Action> {
        match s {
            "open" => Some(Action::Open),
            "lockdown" => Some(Action::Lockdown),
            "release" => Some(Action::Release),
            "normal" => Some(Action::Normal),
            _ => None,
        }
    }
}

/// A command that may be done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub action: Action,
    /// One reader's name; `None`: every reader it applies to.
    pub reader: Option<String>,
    /// The JWT's id (`None` for Home Assistant's plain commands).
    pub jti: Option<String>,
    pub iat: i64,
    pub exp: i64,
}

/// Why a command was refused; `jti` when it could be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub jti: Option<String>,
    pub action: Option<Action>,
    pub error: String,
}

impl Refusal {
    fn new(error: impl Into<String>) -> Self {
        Refusal {
            jti: None,
            action: None,
            error: error.into(),
        }
    }
}

/// What the door knows when it checks a command.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    pub device: &'a str,
    pub readers: &'a [String],
    /// Unix seconds.
    pub now: i64,
    pub clock_synced: bool,
    /// The newest `iat` accepted so far (0: none).
    pub newest_iat: i64,
}

#[derive(Deserialize)]
struct Claims {
    aud: Option<serde_json::Value>,
    act: Option<String>,
    reader: Option<String>,
    iat: Option<serde_json::Value>,
    exp: Option<serde_json::Value>,
    jti: Option<serde_json::Value>,
}

fn number(v: &Option<serde_json::Value>) -> Option<i64> {
    match v {
        Some(serde_json::Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.is_finite()).map(|f| f as i64)),
        _ => None,
    }
}

/// A `jti` fit to be logged and answered: 1 to 200 characters, none of them a control.
fn readable_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 200 && !s.chars().any(char::is_control)
}

/// Checks a message on `<topic>/cmd` (all but the `jti` memory).
pub fn check_jwt(
    payload: &[u8],
    retained: bool,
    key: &[u8],
    cx: &Context<'_>,
) -> Result<Command, Refusal> {
    if payload.len() > MAX_COMMAND_BYTES {
        return Err(Refusal::new(format!(
            "message of {} bytes (at most {MAX_COMMAND_BYTES})",
            payload.len()
        )));
    }
    let text = std::str::from_utf8(payload)
        .map_err(|_| Refusal::new("not a JWT (not UTF-8 text)"))?
        .trim();
    if text.split('.').count() != 3 {
        return Err(Refusal::new(
            "not a compact JWT (three dot-separated parts)",
        ));
    }
    // The claims as written, before the signature is checked: only to answer with the jti.
    let unverified_jti = {
        let mut v = jsonwebtoken::Validation::default();
        v.insecure_disable_signature_validation();
        v.required_spec_claims.clear();
        v.validate_exp = false;
        v.validate_aud = false;
        v.algorithms = vec![
            jsonwebtoken::Algorithm::HS256,
            jsonwebtoken::Algorithm::HS384,
            jsonwebtoken::Algorithm::HS512,
        ];
        jsonwebtoken::decode::<serde_json::Value>(
            text,
            &jsonwebtoken::DecodingKey::from_secret(b""),
            &v,
        )
        .ok()
        .and_then(|d| {
            d.claims
                .get("jti")
                .and_then(|j| j.as_str())
                .map(str::to_owned)
        })
        .filter(|j| readable_id(j))
    };
    let refuse = |error: String| Refusal {
        jti: unverified_jti.clone(),
        action: None,
        error,
    };
    if retained {
        return Err(refuse(
            "retained message (a command is for now, not for every connect)".into(),
        ));
    }
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    v.required_spec_claims.clear();
    v.validate_exp = false;
    v.validate_nbf = false;
    v.validate_aud = false;
    let data =
        jsonwebtoken::decode::<Claims>(text, &jsonwebtoken::DecodingKey::from_secret(key), &v)
            .map_err(|e| {
                use jsonwebtoken::errors::ErrorKind as K;
                refuse(match e.kind() {
                    K::InvalidSignature => "bad signature".into(),
                    K::InvalidAlgorithm => "not HS256 (the header's alg)".into(),
                    K::InvalidToken | K::Base64(_) | K::Json(_) | K::Utf8(_) => {
                        format!("not a JWT ({e})")
                    }
                    _ => format!("refused ({e})"),
                })
            })?;
    let c = data.claims;
    let jti = match &c.jti {
        Some(serde_json::Value::String(s)) if readable_id(s) => s.clone(),
        _ => return Err(refuse("no jti (a unique string)".into())),
    };
    let refuse = |error: String, action: Option<Action>| Refusal {
        jti: Some(jti.clone()),
        action,
        error,
    };
    let aud_ok = match &c.aud {
        Some(serde_json::Value::String(a)) => a == cx.device,
        Some(serde_json::Value::Array(a)) => a.iter().any(|x| x.as_str() == Some(cx.device)),
        _ => false,
    };
    if !aud_ok {
        return Err(refuse(
            format!("aud is not this device ({})", cx.device),
            None,
        ));
    }
    let action = match c.act.as_deref().map(Action::parse) {
        Some(Some(a)) => a,
        _ => {
            return Err(refuse(
                "act is not one of open, lockdown, release, normal".into(),
                None,
            ))
        }
    };
    let refuse = |error: String| refuse(error, Some(action));
    let (Some(iat), Some(exp)) = (number(&c.iat), number(&c.exp)) else {
        return Err(refuse("iat and exp are required (seconds)".into()));
    };
    if exp <= iat || exp - iat > MAX_LIFETIME_S {
        return Err(refuse(format!(
            "exp must be after iat and at most {MAX_LIFETIME_S} s after it"
        )));
    }
    if exp < cx.now - LEEWAY_S {
        return Err(refuse("expired".into()));
    }
    if cx.clock_synced {
        if iat > cx.now + LEEWAY_S {
            return Err(refuse("not yet valid (iat in the future)".into()));
        }
    } else if cx.newest_iat > 0 && iat < cx.newest_iat - MAX_LIFETIME_S {
        return Err(refuse(
            "issued long before the newest command (the clock is not synced: the newest iat stands for it)".into(),
        ));
    }
    if let Some(r) = &c.reader {
        if !cx.readers.iter().any(|n| n == r) {
            return Err(refuse(format!("no reader named {r:?}")));
        }
    }
    Ok(Command {
        action,
        reader: c.reader,
        jti: Some(jti),
        iat,
        exp,
    })
}

/// Home Assistant's lock payloads on `<topic>/ha/<reader>/lock`: OPEN, UNLOCK, LOCK.
pub fn check_home_assistant(
    payload: &[u8],
    retained: bool,
    reader: &str,
    cx: &Context<'_>,
) -> Result<Command, Refusal> {
    if retained {
        return Err(Refusal::new("retained message"));
    }
    let action = match std::str::from_utf8(payload).map(str::trim) {
        Ok("OPEN") => Action::Open,
        Ok("UNLOCK") => Action::Release,
        Ok("LOCK") => Action::Normal,
        _ => {
            return Err(Refusal::new(
                "Home Assistant's payload is not OPEN, UNLOCK or LOCK",
            ))
        }
    };
    if !cx.readers.iter().any(|n| n == reader) {
        return Err(Refusal {
            jti: None,
            action: Some(action),
            error: format!("no reader named {reader:?}"),
        });
    }
    Ok(Command {
        action,
        reader: Some(reader.to_owned()),
        jti: None,
        iat: cx.now,
        exp: cx.now,
    })
}

/// The key from `command_key_file`'s content: surrounding whitespace trimmed, at least
/// [`MIN_KEY_BYTES`].
pub fn key_from(text: &str) -> Result<Vec<u8>, String> {
    let k = text.trim();
    if k.len() < MIN_KEY_BYTES {
        return Err(format!(
            "the key has {} bytes; at least {MIN_KEY_BYTES} are needed (e.g. openssl rand -hex 32)",
            k.len()
        ));
    }
    Ok(k.as_bytes().to_vec())
}

/// `<topic>/cmd/ack`'s answer.
pub fn ack_json(jti: Option<&str>, result: Result<(), &str>) -> String {
    serde_json::json!({
        "jti": jti,
        "ok": result.is_ok(),
        "error": result.err(),
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef-venue";
    const NOW: i64 = 1_800_000_000;

    fn cx() -> Context<'static> {
        static READERS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
        Context {
            device: "door-1",
            readers: READERS.get_or_init(|| vec!["main".into(), "side".into()]),
            now: NOW,
            clock_synced: true,
            newest_iat: 0,
        }
    }

    fn token(claims: serde_json::Value) -> Vec<u8> {
        encode(&Header::default(), &claims, &EncodingKey::from_secret(KEY))
            .unwrap()
            .into_bytes()
    }

    fn good() -> serde_json::Value {
        json!({"aud": "door-1", "act": "open", "iat": NOW, "exp": NOW + 60, "jti": "j-1"})
    }

    fn with(k: &str, v: serde_json::Value) -> Vec<u8> {
        let mut c = good();
        c[k] = v;
        token(c)
    }

    fn err(p: &[u8]) -> Refusal {
        check_jwt(p, false, KEY, &cx()).unwrap_err()
    }

    #[test]
    fn a_good_command_is_read() {
        let c = check_jwt(&token(good()), false, KEY, &cx()).unwrap();
        assert_eq!(c.action, Action::Open);
        assert_eq!(c.jti.as_deref(), Some("j-1"));
        assert_eq!(c.reader, None);
        let c = check_jwt(&with("reader", json!("side")), false, KEY, &cx()).unwrap();
        assert_eq!(c.reader.as_deref(), Some("side"));
        let c = check_jwt(&with("aud", json!(["x", "door-1"])), false, KEY, &cx()).unwrap();
        assert_eq!(c.action, Action::Open);
    }

    #[test]
    fn each_refusal_says_why_and_keeps_the_jti_it_could_read() {
        let other_key = encode(
            &Header::default(),
            &good(),
            &EncodingKey::from_secret(b"another-key-another-key-another-key"),
        )
        .unwrap();
        let e = err(other_key.as_bytes());
        assert_eq!(
            (e.error.as_str(), e.jti.as_deref()),
            ("bad signature", Some("j-1"))
        );
        assert!(err(&with("aud", json!("door-2"))).error.contains("aud"));
        assert!(err(&with("act", json!("explode"))).error.contains("act"));
        let mut c = good();
        c["iat"] = json!(NOW - 100);
        c["exp"] = json!(NOW - 31);
        assert_eq!(err(&token(c)).error, "expired");
        let mut c = good();
        c["iat"] = json!(NOW + 31);
        c["exp"] = json!(NOW + 90);
        assert!(err(&token(c)).error.contains("not yet valid"));
        assert!(err(&with("exp", json!(NOW + 301))).error.contains("300"));
        assert!(err(&with("jti", json!(""))).error.contains("jti"));
        assert!(err(&with("reader", json!("roof"))).error.contains("roof"));
        let e = check_jwt(&token(good()), true, KEY, &cx()).unwrap_err();
        assert!(e.error.contains("retained"));
        assert_eq!(e.jti.as_deref(), Some("j-1"));
        let e = err(b"open the door please");
        assert!(e.error.contains("not a compact JWT"));
        assert_eq!(e.jti, None);
        assert!(err(&vec![b'a'; 5000]).error.contains("5000 bytes"));
        // alg none, or another algorithm: refused.
        let none = format!("{}.{}.", "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0", {
            use base64::Engine;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(good().to_string())
        });
        assert!(check_jwt(none.as_bytes(), false, KEY, &cx()).is_err());
        let hs512 = encode(
            &Header::new(jsonwebtoken::Algorithm::HS512),
            &good(),
            &EncodingKey::from_secret(KEY),
        )
        .unwrap();
        assert!(err(hs512.as_bytes()).error.contains("HS256"));
    }

    #[test]
    fn an_unsynced_clock_takes_the_newest_iat_for_its_time() {
        let mut c = cx();
        c.clock_synced = false;
        c.now = NOW - 86_400 * 30; // a Pi back from a month in a drawer
        let mut claims = good();
        claims["iat"] = json!(NOW);
        claims["exp"] = json!(NOW + 60);
        assert!(check_jwt(&token(claims.clone()), false, KEY, &c).is_ok());
        c.newest_iat = NOW + 600;
        let e = check_jwt(&token(claims), false, KEY, &c).unwrap_err();
        assert!(e.error.contains("newest"), "{}", e.error);
        // A clock ahead refuses: the safe failure.
        c.now = NOW + 3600;
        c.newest_iat = 0;
        assert_eq!(
            check_jwt(&token(good()), false, KEY, &c).unwrap_err().error,
            "expired"
        );
    }

    #[test]
    fn home_assistants_payloads_and_the_key() {
        let c = check_home_assistant(b"OPEN", false, "main", &cx()).unwrap();
        assert_eq!(c.action, Action::Open);
        assert_eq!(
            check_home_assistant(b"UNLOCK", false, "main", &cx())
                .unwrap()
                .action,
            Action::Release
        );
        assert_eq!(
            check_home_assistant(b"LOCK", false, "main", &cx())
                .unwrap()
                .action,
            Action::Normal
        );
        assert!(check_home_assistant(b"OPEN", true, "main", &cx()).is_err());
        assert!(check_home_assistant(b"open", false, "main", &cx()).is_err());
        assert!(check_home_assistant(b"OPEN", false, "roof", &cx()).is_err());
        assert!(key_from("short\n").unwrap_err().contains("32"));
        assert_eq!(
            key_from(&format!("  {}\n", "k".repeat(32))).unwrap().len(),
            32
        );
        assert_eq!(
            ack_json(Some("j"), Err("expired")),
            r#"{"error":"expired","jti":"j","ok":false}"#
        );
        assert_eq!(
            ack_json(None, Ok(())),
            r#"{"error":null,"jti":null,"ok":true}"#
        );
    }
}
