//! Readers: a thread per reader turns bytes into [`ReaderEvent`]s.
//!
//! The serial reader opens the port with `serialport` (8N1, no flow control), frames codes
//! with [`Framer`], and when the port goes away (USB reader unplugged) reports it and reopens
//! the same path with backoff until it is back. The stdin reader is for the demo and for
//! trying things: it ends the daemon at end of input.

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use backon::BackoffBuilder;
use tokio::sync::mpsc;

use crate::config::{ReaderConfig, ReaderKind};
use crate::framing::{Frame, Framer, MalformedKind};

/// What a reader reports.
#[derive(Debug, Clone)]
pub enum ReaderEvent {
    /// A framed code; `last_byte` is when the read holding its terminator returned.
    Code {
        code: String,
        last_byte: Instant,
    },
    /// A line that is not a code.
    Malformed {
        kind: MalformedKind,
        last_byte: Instant,
    },
    Connected {
        path: PathBuf,
    },
    Disconnected {
        path: PathBuf,
        error: String,
    },
    /// End of input (stdin only).
    Eof,
}

/// Starts the configured reader on its own thread.
pub fn spawn(
    cfg: &ReaderConfig,
    tx: mpsc::Sender<ReaderEvent>,
) -> io::Result<std::thread::JoinHandle<()>> {
    let cfg = cfg.clone();
    std::thread::Builder::new()
        .name("reader".into())
        .spawn(move || match &cfg.kind {
            ReaderKind::Serial { path, baud } => serial_loop(path, *baud, &cfg, &tx),
            ReaderKind::Stdin => stdin_loop(&cfg, &tx),
        })
}

/// The delays between attempts to reopen a vanished port: 100 ms doubling to 5 s, jittered.
pub fn reconnect_backoff() -> impl Iterator<Item = Duration> {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(5))
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
}

fn emit(frame: Frame, last_byte: Instant, tx: &mpsc::Sender<ReaderEvent>) -> bool {
    let ev = match frame {
        Frame::Code(code) => ReaderEvent::Code { code, last_byte },
        Frame::Malformed(kind) => ReaderEvent::Malformed { kind, last_byte },
    };
    tx.blocking_send(ev).is_ok()
}

fn open_port(path: &Path, baud: u32) -> serialport::Result<serialport::TTYPort> {
    serialport::new(path.to_string_lossy(), baud)
        .data_bits(serialport::DataBits::Eight)
        .parity(serialport::Parity::None)
        .stop_bits(serialport::StopBits::One)
        .flow_control(serialport::FlowControl::None)
        .timeout(Duration::from_secs(60))
        .open_native()
}

fn serial_loop(path: &Path, baud: u32, cfg: &ReaderConfig, tx: &mpsc::Sender<ReaderEvent>) {
    let mut backoff = reconnect_backoff();
    let mut last_error: Option<String> = None;
    loop {
        if tx.is_closed() {
            return;
        }
        let mut port = match open_port(path, baud) {
            Ok(p) => p,
            Err(e) => {
                let msg = e.to_string();
                if last_error.as_deref() != Some(msg.as_str()) {
                    tracing::warn!(path = %path.display(), "reader cannot be opened: {msg}; retrying until it is back");
                    last_error = Some(msg);
                }
                std::thread::sleep(backoff.next().unwrap_or(Duration::from_secs(5)));
                continue;
            }
        };
        last_error = None;
        backoff = reconnect_backoff();
        if tx
            .blocking_send(ReaderEvent::Connected {
                path: path.to_owned(),
            })
            .is_err()
        {
            return;
        }
        let error = read_port(&mut port, cfg, tx);
        drop(port);
        match error {
            None => return, // the daemon is stopping
            Some(e) => {
                if tx
                    .blocking_send(ReaderEvent::Disconnected {
                        path: path.to_owned(),
                        error: e,
                    })
                    .is_err()
                {
                    return;
                }
            }
        }
    }
}

/// Reads until the port fails (returns the error) or the daemon stops (returns None).
fn read_port(
    port: &mut serialport::TTYPort,
    cfg: &ReaderConfig,
    tx: &mpsc::Sender<ReaderEvent>,
) -> Option<String> {
    use serialport::SerialPort;
    let mut framer = Framer::new(cfg.max_len);
    let mut buf = [0u8; 4096];
    let idle = Duration::from_secs(60);
    loop {
        // While half a code waits, wake up in time to drop it as incomplete.
        let timeout = if framer.has_partial() {
            cfg.frame_timeout
        } else {
            idle
        };
        if port.timeout() != timeout {
            if let Err(e) = port.set_timeout(timeout) {
                return Some(e.to_string());
            }
        }
        match port.read(&mut buf) {
            Ok(0) => return Some("end of file".into()),
            Ok(n) => {
                let now = Instant::now();
                let mut open = true;
                framer.feed(&buf[..n], |f| open &= emit(f, now, tx));
                if !open {
                    return None;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                if let Some(f) = framer.flush_partial() {
                    if !emit(f, Instant::now(), tx) {
                        return None;
                    }
                }
                if tx.is_closed() {
                    return None;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Some(e.to_string()),
        }
    }
}

fn stdin_loop(cfg: &ReaderConfig, tx: &mpsc::Sender<ReaderEvent>) {
    let mut framer = Framer::new(cfg.max_len);
    let mut stdin = io::stdin().lock();
    let mut buf = [0u8; 4096];
    loop {
        match stdin.read(&mut buf) {
            Ok(0) => {
                if let Some(f) = framer.finish() {
                    emit(f, Instant::now(), tx);
                }
                let _ = tx.blocking_send(ReaderEvent::Eof);
                return;
            }
            Ok(n) => {
                let now = Instant::now();
                let mut open = true;
                framer.feed(&buf[..n], |f| open &= emit(f, now, tx));
                if !open {
                    return;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                tracing::error!("stdin: {e}");
                let _ = tx.blocking_send(ReaderEvent::Eof);
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnect_backoff_grows_to_a_cap_and_never_ends() {
        let delays: Vec<Duration> = reconnect_backoff().take(50).collect();
        assert_eq!(delays.len(), 50);
        assert!(
            delays[0] >= Duration::from_millis(100) && delays[0] <= Duration::from_millis(200),
            "{:?}",
            delays[0]
        );
        assert!(
            delays.iter().all(|d| *d <= Duration::from_secs(10)),
            "{delays:?}"
        );
        assert!(delays[20] >= Duration::from_secs(5));
    }
}
