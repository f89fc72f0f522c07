//! What every inputs backend reports, and what keeps its lines: the types the door's inputs
//! (`inputs.rs`) and the backends that read them (`gpiod.rs`, rppal, sim) share.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputName {
    ExitButton,
    DoorSensor,
}

impl InputName {
    pub fn as_str(self) -> &'static str {
        match self {
            InputName::ExitButton => "exit_button",
            InputName::DoorSensor => "door_sensor",
        }
    }

    pub fn parse(s: &str) -> Option<InputName> {
        match s {
            "exit_button" => Some(InputName::ExitButton),
            "door_sensor" => Some(InputName::DoorSensor),
            _ => None,
        }
    }
}

/// An input's logical state: `active` is the button pressed, the door open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputEvent {
    pub input: InputName,
    pub active: bool,
    /// The state read at start (not a change).
    pub initial: bool,
}

/// Keeps the backend's input lines requested for as long as it lives.
pub struct InputsHandle {
    _keep: Vec<Box<dyn Send>>,
}

impl InputsHandle {
    /// Nothing to keep (the lines live in their reading threads).
    pub fn empty() -> Self {
        InputsHandle { _keep: Vec::new() }
    }

    /// Keeps these (requests, or guards that stop a reading thread) until dropped.
    pub fn keeping(keep: Vec<Box<dyn Send>>) -> Self {
        InputsHandle { _keep: keep }
    }
}
