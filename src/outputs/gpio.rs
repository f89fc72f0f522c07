//! The `gpio` backend: the Pi's GPIO through rppal.

use std::io;

use rppal::gpio::{Gpio, OutputPin};

use super::OutputBackend;
use crate::config::{LineRef, OutputSpec};

pub struct GpioBackend {
    pins: Vec<(OutputPin, bool)>,
}

impl GpioBackend {
    pub fn open(outputs: &[(String, OutputSpec)]) -> io::Result<Self> {
        let gpio =
            Gpio::new().map_err(|e| io::Error::other(format!("cannot open the GPIO: {e}")))?;
        let mut pins = Vec::new();
        for (name, spec) in outputs {
            let LineRef::Pin(number) = spec.line else {
                return Err(io::Error::other(format!(
                    "outputs.{name}: the gpio backend takes pin numbers (use backend = \"gpiod\" for {})",
                    spec.line
                )));
            };
            let pin = u8::try_from(number)
                .map_err(|_| io::Error::other(format!("outputs.{name}: no GPIO {number}")))
                .and_then(|n| {
                    gpio.get(n).map_err(|e| {
                        io::Error::other(format!("outputs.{name}: GPIO {number}: {e}"))
                    })
                })?;
            // Straight to the "off" level: an active-low relay must never see a low glitch.
            let mut out = if spec.active_low {
                pin.into_output_high()
            } else {
                pin.into_output_low()
            };
            // On exit keep driving "off" rather than floating back to an input.
            out.set_reset_on_drop(false);
            pins.push((out, spec.active_low));
        }
        Ok(GpioBackend { pins })
    }
}

impl OutputBackend for GpioBackend {
    fn set(&mut self, index: usize, on: bool) -> io::Result<()> {
        if let Some((pin, active_low)) = self.pins.get_mut(index) {
            if on != *active_low {
                pin.set_high();
            } else {
                pin.set_low();
            }
        }
        Ok(())
    }
}
