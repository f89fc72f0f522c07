//! The guest screen (`[display]`, off unless `listen` is set): a full-screen page for a kiosk
//! browser on the door's own display, and the verdicts pushed to it as server-sent events.
//!
//! - `strings.toml`: the words, one table per language;
//! - `template.rs`: the greeting template (pure);
//! - this file: what the screen says for a verdict (pure, [`message`]) and the [`Hub`] the
//!   commit step hands each verdict to;
//! - `server.rs`: the page and `/events`.
//!
//! The screen never shows a code or a token: a verdict's message holds the verdict, the
//! reason, the reader's name and the words.

pub mod server;
pub mod template;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde_json::json;
use tokio::sync::broadcast;

use crate::decision::{Reason, Verdict};
use template::{escape_html, Template};

/// Every language's words: language -> key -> text.
pub fn languages() -> &'static BTreeMap<String, BTreeMap<String, String>> {
    static L: OnceLock<BTreeMap<String, BTreeMap<String, String>>> = OnceLock::new();
    L.get_or_init(|| toml::from_str(include_str!("strings.toml")).expect("strings.toml parses"))
}

/// The keys every language has (English's).
pub fn string_keys() -> Vec<&'static str> {
    languages()["en"].keys().map(String::as_str).collect()
}

/// `[display]`, validated.
#[derive(Debug, Clone)]
pub struct DisplayConfig {
    pub listen: SocketAddr,
    /// The readers whose verdicts it shows; empty: all.
    pub readers: Vec<String>,
    /// How long a verdict stays before the idle screen.
    pub hold: Duration,
    pub greeting: Option<Template>,
    pub language: String,
    /// The words: the language's, with `[display.strings]` over them.
    pub strings: BTreeMap<String, String>,
    /// The door's name on the idle screen.
    pub door: String,
}

impl DisplayConfig {
    /// Whether the lookup must ask for the pass's parameters.
    pub fn wants_parameters(&self) -> bool {
        self.greeting
            .as_ref()
            .is_some_and(Template::uses_parameters)
    }

    fn word<'a>(&'a self, key: &'a str) -> &'a str {
        self.strings.get(key).map(String::as_str).unwrap_or(key)
    }

    pub fn shows(&self, reader: &str) -> bool {
        self.readers.is_empty() || self.readers.iter().any(|r| r == reader)
    }
}

/// The word for a verdict (pure): what a guest understands of the reason.
pub fn word_key(verdict: Verdict, reason: Reason) -> &'static str {
    if verdict == Verdict::Accept {
        return "welcome";
    }
    match reason {
        Reason::Expired => "expired",
        Reason::WrongProject | Reason::WrongTemplate => "wrong_door",
        Reason::AlreadyUsed => "already_used",
        Reason::Malformed => "try_again",
        Reason::NotFound => "not_found",
        Reason::Voided => "voided",
        Reason::Refused => "refused",
        Reason::OutsideHours => "closed",
        Reason::Lockdown => "locked",
        Reason::NotEnrolled => "not_ready",
        Reason::OfflinePolicy | Reason::QueueFull | Reason::ApiError | Reason::Valid => "ask_staff",
    }
}

/// What the screen shows for a verdict (pure): `kind` (accept or reject), `tone` (accept,
/// reject or attention: the colour, as the buzzer's patterns), the reason, the
/// headline as HTML (escaped), the reader, and how long to hold it.
pub fn message(
    cfg: &DisplayConfig,
    reader: &str,
    verdict: Verdict,
    reason: Reason,
    parameters: Option<&str>,
) -> serde_json::Value {
    let plain = escape_html(cfg.word(word_key(verdict, reason)));
    let headline = match (verdict, &cfg.greeting) {
        (Verdict::Accept, Some(t)) => t.render_html(parameters).unwrap_or(plain),
        _ => plain,
    };
    let tone = match verdict {
        Verdict::Accept => "accept",
        Verdict::Reject if reason.needs_attention() => "attention",
        Verdict::Reject => "reject",
    };
    json!({
        "kind": verdict.as_str(),
        "tone": tone,
        "reason": reason.as_str(),
        "headline_html": headline,
        "reader": reader,
        "hold_ms": cfg.hold.as_millis() as u64,
    })
}

/// The idle screen's facts.
pub fn idle_state(cfg: &DisplayConfig, online: bool) -> serde_json::Value {
    json!({
        "idle": cfg.word("idle"),
        "door": cfg.door,
        "offline": !online,
        "offline_text": cfg.word("offline"),
        "hold_ms": cfg.hold.as_millis() as u64,
        "lang": cfg.language,
    })
}

struct HubInner {
    cfg: OnceLock<DisplayConfig>,
    tx: broadcast::Sender<Arc<str>>,
    seq: AtomicU64,
}

/// Where the commit step hands each verdict; the screen's connections listen to it. Does
/// nothing until [`Hub::configure`] (no `[display]`).
#[derive(Clone)]
pub struct Hub {
    inner: Arc<HubInner>,
}

impl Default for Hub {
    fn default() -> Self {
        let (tx, _) = broadcast::channel(32);
        Hub {
            inner: Arc::new(HubInner {
                cfg: OnceLock::new(),
                tx,
                seq: AtomicU64::new(0),
            }),
        }
    }
}

impl Hub {
    pub fn configure(&self, cfg: DisplayConfig) {
        let _ = self.inner.cfg.set(cfg);
    }

    pub fn config(&self) -> Option<&DisplayConfig> {
        self.inner.cfg.get()
    }

    /// Whether the lookups should ask for the parameters.
    pub fn wants_parameters(&self) -> bool {
        self.config().is_some_and(DisplayConfig::wants_parameters)
    }

    /// A verdict at `reader`: pushed to every open screen (none open: nothing happens).
    pub fn verdict(
        &self,
        reader: &str,
        verdict: Verdict,
        reason: Reason,
        parameters: Option<&str>,
    ) {
        let Some(cfg) = self.config() else { return };
        if !cfg.shows(reader) || self.inner.tx.receiver_count() == 0 {
            return;
        }
        let mut m = message(cfg, reader, verdict, reason, parameters);
        m["seq"] = json!(self.inner.seq.fetch_add(1, Ordering::Relaxed) + 1);
        let _ = self.inner.tx.send(sse("verdict", &m).into());
    }

    /// The idle screen changed (online or offline).
    pub fn state(&self, online: bool) {
        let Some(cfg) = self.config() else { return };
        let _ = self
            .inner
            .tx
            .send(sse("state", &idle_state(cfg, online)).into());
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<str>> {
        self.inner.tx.subscribe()
    }
}

/// One server-sent event.
pub fn sse(event: &str, data: &serde_json::Value) -> String {
    format!("event: {event}\ndata: {data}\n\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(greeting: Option<&str>, lang: &str) -> DisplayConfig {
        DisplayConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            readers: vec![],
            hold: Duration::from_millis(3000),
            greeting: greeting.map(|g| Template::parse(g).unwrap()),
            language: lang.into(),
            strings: languages()[lang].clone(),
            door: "Front <door>".into(),
        }
    }

    #[tokio::test]
    async fn the_hub_pushes_only_what_its_screen_shows() {
        let off = Hub::default();
        let mut rx = off.subscribe();
        off.verdict("front", Verdict::Accept, Reason::Valid, None);
        assert!(rx.try_recv().is_err(), "no [display]: nothing");
        let hub = Hub::default();
        hub.configure(DisplayConfig {
            readers: vec!["front".into()],
            ..cfg(None, "en")
        });
        let mut rx = hub.subscribe();
        hub.verdict("side", Verdict::Accept, Reason::Valid, None);
        assert!(rx.try_recv().is_err(), "not a reader it shows");
        hub.verdict("front", Verdict::Reject, Reason::Malformed, None);
        let ev = rx.try_recv().unwrap();
        assert!(ev.starts_with("event: verdict\ndata: {"), "{ev}");
        assert!(ev.ends_with("}\n\n"), "{ev}");
        assert!(
            ev.contains(r#""tone":"attention""#) && ev.contains(r#""seq":1"#),
            "{ev}"
        );
        hub.state(false);
        let ev = rx.try_recv().unwrap();
        assert!(
            ev.starts_with("event: state\n") && ev.contains(r#""offline":true"#),
            "{ev}"
        );
    }

    #[test]
    fn every_language_has_every_word() {
        let keys = string_keys();
        for lang in ["en", "de", "cs"] {
            let l = &languages()[lang];
            let have: Vec<&str> = l.keys().map(String::as_str).collect();
            assert_eq!(have, keys, "{lang}");
            assert!(l.values().all(|v| !v.trim().is_empty()), "{lang}");
        }
    }

    #[test]
    fn words_a_guest_understands() {
        let c = cfg(None, "en");
        let h = |v, r| {
            message(&c, "front", v, r, None)["headline_html"]
                .as_str()
                .unwrap()
                .to_owned()
        };
        assert_eq!(h(Verdict::Reject, Reason::Expired), "This pass has expired");
        assert_eq!(
            h(Verdict::Reject, Reason::WrongTemplate),
            "This pass is not valid at this door"
        );
        assert_eq!(h(Verdict::Reject, Reason::AlreadyUsed), "Already used");
        assert_eq!(h(Verdict::Reject, Reason::Malformed), "Please try again");
        assert_eq!(
            h(Verdict::Reject, Reason::OutsideHours),
            "This door is closed now"
        );
        assert_eq!(h(Verdict::Accept, Reason::OfflinePolicy), "Welcome");
        let de = cfg(None, "de");
        assert_eq!(
            message(&de, "x", Verdict::Reject, Reason::Expired, None)["headline_html"],
            "Dieser Pass ist abgelaufen"
        );
        // Every reason has a word in every language.
        for r in [
            Reason::Valid,
            Reason::NotFound,
            Reason::Voided,
            Reason::Expired,
            Reason::WrongProject,
            Reason::WrongTemplate,
            Reason::Refused,
            Reason::Malformed,
            Reason::OfflinePolicy,
            Reason::ApiError,
            Reason::AlreadyUsed,
            Reason::QueueFull,
            Reason::NotEnrolled,
            Reason::OutsideHours,
        ] {
            assert!(string_keys().contains(&word_key(Verdict::Reject, r)), "{r}");
        }
    }

    #[test]
    fn the_greeting_only_for_an_accept_and_escaped() {
        let c = cfg(Some("Welcome, {firstName}!"), "en");
        let p = Some(r#"{"firstName":"<b>Eva</b>"}"#);
        let m = message(&c, "front", Verdict::Accept, Reason::Valid, p);
        assert_eq!(m["headline_html"], "Welcome, &lt;b&gt;Eva&lt;/b&gt;!");
        assert_eq!(m["kind"], "accept");
        assert_eq!(
            message(&c, "front", Verdict::Accept, Reason::Valid, Some("{oops"))["headline_html"],
            "Welcome"
        );
        assert_eq!(
            message(&c, "front", Verdict::Reject, Reason::Expired, p)["headline_html"],
            "This pass has expired"
        );
        assert!(c.wants_parameters());
        assert!(!cfg(Some("Hello"), "en").wants_parameters());
        assert_eq!(idle_state(&c, false)["offline"], true);
    }
}
