//! The door's inputs at work: the request-to-exit button releases the door (no scan, no
//! scan event, a log line), the door contact is logged, shown in status and metrics, and
//! warns when the door is held open.

use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::clock::now_ms;
use crate::config::InputsConfig;
use crate::outputs::feedback::Feedback;
use crate::outputs::inputs::{DoorMonitor, DoorNote, InputEvent, InputName, EXIT_REPEAT};
use crate::state::{DoorState, Shared};

pub async fn run(
    mut events: mpsc::Receiver<InputEvent>,
    cfg: InputsConfig,
    feedback: Feedback,
    shared: Shared,
    device: String,
) {
    let note = |what: &'static str, extra: serde_json::Value| {
        let shared = shared.clone();
        let body = door_event(&device, what, extra);
        async move {
            if let Err(e) = shared.store.run(move |s| s.push_event(&body)).await {
                tracing::warn!("the door event is not stored for the broker: {e}");
            }
        }
    };
    let mut door = cfg
        .door_sensor
        .as_ref()
        .map(|d| DoorMonitor::new(d.held_open));
    let held_secs = cfg
        .door_sensor
        .as_ref()
        .map(|d| d.held_open.as_secs())
        .unwrap_or(0);
    if door.is_some() {
        shared.board.set_door(Some(DoorState {
            state: "unknown".into(),
            since_ms: 0,
            held_open: false,
        }));
    }
    let mut last_exit: Option<Instant> = None;
    let mut door_since_ms = 0;
    loop {
        let deadline = door.as_ref().and_then(|d| d.deadline());
        let ev = tokio::select! {
            ev = events.recv() => match ev {
                Some(ev) => ev,
                None => return,
            },
            _ = async { tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)).await }, if deadline.is_some() => {
                if let Some(d) = door.as_mut() {
                    if let Some(DoorNote::HeldOpen { open_for }) = d.tick(Instant::now()) {
                        // Status and the metric first: whoever reads the log line finds them.
                        crate::metrics::metrics().door_held_open.set(1);
                        publish(&shared, d, door_since_ms);
                        tracing::warn!(open_s = open_for.as_secs(), held_open_secs = held_secs, "door held open");
                        note("held_open", serde_json::json!({"open_s": open_for.as_secs()})).await;
                    }
                }
                continue;
            }
        };
        tracing::debug!(
            input = ev.input.as_str(),
            active = ev.active,
            initial = ev.initial,
            "input"
        );
        match ev.input {
            InputName::ExitButton => {
                let Some(button) = &cfg.exit_button else {
                    continue;
                };
                // A press, not a release; a button held down at start is not a press.
                if !ev.active || ev.initial {
                    continue;
                }
                let now = Instant::now();
                if last_exit.is_some_and(|t| now - t < EXIT_REPEAT) {
                    continue;
                }
                last_exit = Some(now);
                if feedback.pulse_output(&button.relay) {
                    crate::metrics::metrics().exit_requests.inc();
                    tracing::info!(output = %button.relay, "exit button: door released");
                    note("exit_button", serde_json::json!({"output": button.relay})).await;
                } else {
                    tracing::warn!(output = %button.relay, "exit button pressed, but the output cannot be pulsed");
                }
            }
            InputName::DoorSensor => {
                let Some(d) = door.as_mut() else { continue };
                let now = Instant::now();
                let d_note = d.update(ev.active, now);
                door_since_ms = if ev.initial { 0 } else { now_ms() };
                let m = crate::metrics::metrics();
                m.door_open.set(ev.active as i64);
                match d_note {
                    Some(DoorNote::Opened) => {
                        tracing::info!("door opened");
                        note("opened", serde_json::json!({})).await;
                    }
                    Some(DoorNote::Closed { was_held, open_for }) => {
                        m.door_held_open.set(0);
                        note("closed", serde_json::json!({"open_ms": open_for.as_millis() as u64, "was_held_open": was_held})).await;
                        if was_held {
                            tracing::info!(
                                open_s = open_for.as_secs(),
                                "door closed after being held open"
                            );
                        } else {
                            tracing::info!(open_ms = open_for.as_millis() as u64, "door closed");
                        }
                    }
                    Some(DoorNote::HeldOpen { .. }) | None => {}
                }
                if ev.initial {
                    tracing::info!(
                        door = if ev.active { "open" } else { "closed" },
                        "door sensor read"
                    );
                }
                publish(&shared, d, door_since_ms);
            }
        }
    }
}

/// A door event for the broker: `type` `door`, `event` (`opened`, `closed`, `held_open`,
/// `exit_button`), `id`, `at`, `device`, and what else it says.
fn door_event(device: &str, what: &str, extra: serde_json::Value) -> String {
    let mut v = serde_json::json!({
        "type": "door",
        "event": what,
        "id": uuid::Uuid::new_v4().to_string(),
        "at": crate::clock::rfc3339_ms(time::OffsetDateTime::now_utc()),
        "device": device,
    });
    if let (Some(m), Some(e)) = (v.as_object_mut(), extra.as_object()) {
        for (k, x) in e {
            m.insert(k.clone(), x.clone());
        }
    }
    v.to_string()
}

fn publish(shared: &Shared, d: &DoorMonitor, since_ms: i64) {
    shared.board.set_door(Some(DoorState {
        state: match d.is_open() {
            Some(true) => "open",
            Some(false) => "closed",
            None => "unknown",
        }
        .into(),
        since_ms,
        held_open: d.is_held_open(),
    }));
}
