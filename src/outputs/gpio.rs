//! The `gpio` backend: the Pi's GPIO through rppal.

use std::io;

use rppal::gpio::{Gpio, OutputPin};

use super::{OutputBackend, OutputName};
use crate::config::OutputSpec;

pub struct GpioBackend {
    pins: Vec<(OutputName, OutputPin, bool)>,
}

impl GpioBackend {
    pub fn open(outputs: &[(OutputName, OutputSpec)]) -> io::Result<Self> {
        let gpio =
            Gpio::new().map_err(|e| io::Error::other(format!("cannot open the GPIO: {e}")))?;
        let mut pins = Vec::new();
        for (name, spec) in outputs {
            let pin = gpio
                .get(spec.pin)
                .map_err(|e| io::Error::other(format!("outputs.{name}: GPIO {}: {e}", spec.pin)))?;
            // Straight to the "off" level: an active-low relay must never see a low glitch.
            let mut out = if spec.active_low {
                pin.into_output_high()
            } else {
                pin.into_output_low()
            };
            // On exit keep driving "off" rather than floating back to an input.
            out.set_reset_on_drop(false);
            pins.push((*name, out, spec.active_low));
        }
        Ok(GpioBackend { pins })
    }
}

impl OutputBackend for GpioBackend {
    fn set(&mut self, output: OutputName, on: bool) -> io::Result<()> {
        if let Some((_, pin, active_low)) = self.pins.iter_mut().find(|(n, _, _)| *n == output) {
            if on != *active_low {
                pin.set_high();
            } else {
                pin.set_low();
            }
        }
        Ok(())
    }
}
