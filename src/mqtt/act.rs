//! Remote commands at work: a checked [`Command`] becomes what the door does (the relay and
//! green pulse, a lockdown, a release held on the relay, back to normal), the store's record
//! of it (the lockdown or release durable before the door changes; the command's event for
//! the broker in the same transaction), status, metrics and the log line.

use serde_json::json;

use crate::config::ReaderConfig;
use crate::outputs::feedback::{Feedback, LaneFeedback};
use crate::state::Shared;
use crate::store::OverrideMode;

use super::command::{Action, Command};

/// One reader as commands see it.
struct Reader {
    name: String,
    relay: Option<String>,
    lane: LaneFeedback,
}

/// The door's side of the commands.
pub struct Door {
    device: String,
    readers: Vec<Reader>,
    feedback: Feedback,
    shared: Shared,
}

impl Door {
    pub fn new(
        device: &str,
        readers: &[ReaderConfig],
        feedback: &Feedback,
        shared: &Shared,
    ) -> Door {
        Door {
            device: device.to_owned(),
            readers: readers
                .iter()
                .map(|r| Reader {
                    name: r.name.clone(),
                    relay: r.outputs.relay.clone(),
                    lane: feedback.lane(&r.outputs),
                })
                .collect(),
            feedback: feedback.clone(),
            shared: shared.clone(),
        }
    }

    /// (name, has a relay) per reader.
    pub fn readers_with_relay(&self) -> Vec<(String, bool)> {
        self.readers
            .iter()
            .map(|r| (r.name.clone(), r.relay.is_some()))
            .collect()
    }

    pub fn reader_names(&self) -> Vec<String> {
        self.readers.iter().map(|r| r.name.clone()).collect()
    }

    /// The readers a command applies to: the one it names, or every reader (with a relay for
    /// `open` and `release`).
    fn targets(&self, c: &Command) -> Result<Vec<&Reader>, String> {
        let needs_relay = matches!(c.action, Action::Open | Action::Release);
        match &c.reader {
            Some(name) => {
                let r = self
                    .readers
                    .iter()
                    .find(|r| &r.name == name)
                    .ok_or_else(|| format!("no reader named {name:?}"))?;
                if needs_relay && r.relay.is_none() {
                    return Err(format!("reader {name:?} has no relay"));
                }
                Ok(vec![r])
            }
            None => {
                let all: Vec<&Reader> = self
                    .readers
                    .iter()
                    .filter(|r| !needs_relay || r.relay.is_some())
                    .collect();
                if all.is_empty() {
                    return Err("no reader has a relay".into());
                }
                Ok(all)
            }
        }
    }

    /// Does a checked command; returns the readers it was done at.
    pub async fn apply(&self, c: &Command, source: &'static str) -> Result<Vec<String>, String> {
        let targets = self.targets(c)?;
        let names: Vec<String> = targets.iter().map(|r| r.name.clone()).collect();
        let event = json!({
            "type": "command",
            "id": uuid::Uuid::new_v4().to_string(),
            "at": crate::clock::rfc3339_ms(time::OffsetDateTime::now_utc()),
            "device": self.device,
            "action": c.action.as_str(),
            "readers": names,
            "jti": c.jti,
            "source": source,
        })
        .to_string();
        match c.action {
            Action::Open => {
                for r in &targets {
                    r.lane.accept();
                }
                let ev = event.clone();
                if let Err(e) = self.shared.store.run(move |s| s.push_event(&ev)).await {
                    tracing::error!("the open command's event is not stored: {e}");
                }
            }
            Action::Lockdown | Action::Release | Action::Normal => {
                let mode = match c.action {
                    Action::Lockdown => Some(OverrideMode::Lockdown),
                    Action::Release => Some(OverrideMode::Release),
                    _ => None,
                };
                let (readers, jti) = (names.clone(), c.jti.clone());
                let all = self
                    .shared
                    .store
                    .run(move |s| {
                        s.set_overrides(&readers, mode, jti.as_deref(), &event)?;
                        s.overrides()
                    })
                    .await
                    .map_err(|e| format!("not stored, nothing done: {e}"))?;
                self.shared.board.set_overrides(all);
                self.apply_holds();
            }
        }
        Ok(names)
    }

    /// Each relay held on while a reader it serves is released, let go otherwise (at start,
    /// after a restart, and after each command).
    pub fn apply_holds(&self) {
        let mut relays: Vec<(&str, bool)> = Vec::new();
        for r in &self.readers {
            let Some(relay) = r.relay.as_deref() else {
                continue;
            };
            let released = self.shared.board.override_of(&r.name) == Some(OverrideMode::Release);
            match relays.iter_mut().find(|(n, _)| *n == relay) {
                Some((_, held)) => *held |= released,
                None => relays.push((relay, released)),
            }
        }
        for (relay, held) in relays {
            self.feedback.hold(relay, held);
        }
    }
}

/// The log line and the metric of a command, done or refused.
pub fn note(
    action: Option<Action>,
    jti: Option<&str>,
    source: &'static str,
    result: Result<&[String], &str>,
) {
    let action_s = action.map(Action::as_str).unwrap_or("unknown");
    crate::metrics::metrics()
        .mqtt_commands
        .get_or_create(&crate::metrics::CommandLabels {
            action: action_s.to_owned(),
            outcome: if result.is_ok() { "done" } else { "refused" },
            source,
        })
        .inc();
    match result {
        Ok(readers) => tracing::info!(
            action = action_s,
            readers = %readers.join(","),
            jti = jti.unwrap_or("-"),
            source,
            "mqtt command done"
        ),
        Err(e) => tracing::warn!(
            action = action_s,
            jti = jti.unwrap_or("-"),
            source,
            error = %e,
            "mqtt command refused"
        ),
    }
}
