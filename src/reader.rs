//! Readers: a thread per reader turns bytes into [`ReaderEvent`]s.
//!
//! The serial reader opens the port with `serialport` (8N1, no flow control), frames codes
//! with [`Framer`], and when the port goes away (USB reader unplugged) reports it and reopens
//! the same path with backoff until it is back. The stdin reader is for the demo and for
//! trying things: it ends the daemon at end of input. The HID reader reads a keyboard-mode
//! scanner through evdev (grabbed, so its keystrokes reach nothing else), decodes its keys
//! with [`crate::hid::HidDecoder`], and reconnects like the serial reader; it can also read a
//! recording of raw events from a file or FIFO.

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use evdev::raw_stream::RawDevice;
use tokio::sync::mpsc;

use crate::config::{HidSource, ReaderConfig, ReaderKind};
use crate::framing::{Frame, Framer, MalformedKind};
use crate::hid::{HidDecoder, Layout};

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

/// Where a reader sends its events: its lane's channel.
#[derive(Clone)]
pub struct Tx {
    tx: mpsc::Sender<ReaderEvent>,
}

impl Tx {
    pub fn new(tx: mpsc::Sender<ReaderEvent>) -> Self {
        Tx { tx }
    }

    fn blocking_send(&self, ev: ReaderEvent) -> Result<(), ()> {
        self.tx.blocking_send(ev).map_err(|_| ())
    }

    fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// Starts the configured reader on its own thread.
pub fn spawn(cfg: &ReaderConfig, tx: Tx) -> io::Result<std::thread::JoinHandle<()>> {
    let cfg = cfg.clone();
    std::thread::Builder::new()
        .name(format!("reader {}", cfg.name))
        .spawn(move || match &cfg.kind {
            ReaderKind::Serial { path, baud } => serial_loop(path, *baud, &cfg, &tx),
            ReaderKind::Stdin => stdin_loop(&cfg, &tx),
            ReaderKind::Hid {
                source: HidSource::Recording(path),
                layout,
                ..
            } => recording_loop(path, *layout, &cfg, &tx),
            ReaderKind::Hid {
                source,
                layout,
                grab,
            } => hid_loop(source, *layout, *grab, &cfg, &tx),
        })
}

/// Opens a HID reader's event device: its path, or the first keyboard-like device with its
/// USB id. Returns the path it opened.
///
/// evdev's raw device, not its `Device`: that one ungrabs in its `Drop` and prints "Failed to
/// ungrab device" straight to stderr, outside the log, whenever an unplugged reader goes. The
/// kernel ends a grab when the device's file is closed, which is all a drop needs.
pub(crate) fn open_hid(source: &HidSource) -> io::Result<(PathBuf, RawDevice)> {
    let keyboard = |d: &RawDevice| {
        d.supported_keys()
            .is_some_and(|k| k.contains(evdev::KeyCode::KEY_ENTER))
    };
    match source {
        HidSource::Path(p) | HidSource::Recording(p) => {
            let d = RawDevice::open(p)?;
            if !keyboard(&d) {
                return Err(io::Error::other(format!(
                    "{} is not a keyboard-mode reader (it has no Enter key)",
                    p.display()
                )));
            }
            Ok((p.clone(), d))
        }
        HidSource::UsbId { vendor, product } => {
            let mut found: Vec<(PathBuf, RawDevice)> = evdev::raw_stream::enumerate()
                .filter(|(_, d)| {
                    let id = d.input_id();
                    id.vendor() == *vendor && id.product() == *product && keyboard(d)
                })
                .collect();
            found.sort_by(|a, b| a.0.cmp(&b.0));
            found.into_iter().next().ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("no keyboard-mode input device with USB id {vendor:04x}:{product:04x}"),
                )
            })
        }
    }
}

fn hid_loop(source: &HidSource, layout: Layout, grab: bool, cfg: &ReaderConfig, tx: &Tx) {
    let what = match source {
        HidSource::UsbId { vendor, product } => {
            PathBuf::from(format!("usb:{vendor:04x}:{product:04x}"))
        }
        HidSource::Path(p) | HidSource::Recording(p) => p.clone(),
    };
    let open = || {
        let (path, mut dev) = open_hid(source)?;
        if grab {
            // Exclusive: the scanner's "typing" must not reach a console or a browser.
            dev.grab().map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!(
                        "cannot grab {} ({e}); another program holds it",
                        path.display()
                    ),
                )
            })?;
        }
        let flags = rustix::fs::fcntl_getfl(&dev)?;
        rustix::fs::fcntl_setfl(&dev, flags | rustix::fs::OFlags::NONBLOCK)?;
        io::Result::Ok((path, dev))
    };
    reconnecting(cfg, tx, &what, open, |dev| read_hid(dev, layout, cfg, tx));
}

/// Waits until `fd` is readable or `timeout` passes; true when readable (or hung up).
fn wait_readable(fd: impl std::os::fd::AsFd, timeout: Duration) -> io::Result<bool> {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let ts = Timespec {
        tv_sec: timeout.as_secs() as _,
        tv_nsec: timeout.subsec_nanos() as _,
    };
    let mut fds = [PollFd::new(&fd, PollFlags::IN)];
    loop {
        match poll(&mut fds, Some(&ts)) {
            Ok(n) => return Ok(n > 0),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Reads key events until the device fails (returns the error) or the daemon stops (None).
fn read_hid(dev: &mut RawDevice, layout: Layout, cfg: &ReaderConfig, tx: &Tx) -> Option<String> {
    let mut decoder = HidDecoder::new(layout, cfg.max_len);
    let idle = Duration::from_secs(60);
    loop {
        let timeout = if decoder.has_partial() {
            cfg.frame_timeout
        } else {
            idle
        };
        match wait_readable(&*dev, timeout) {
            Ok(true) => {}
            Ok(false) => {
                if let Some(f) = decoder.flush_partial() {
                    if !emit(f, Instant::now(), tx) {
                        return None;
                    }
                }
                if tx.is_closed() {
                    return None;
                }
                continue;
            }
            Err(e) => return Some(e.to_string()),
        }
        let events: Vec<(u16, i32)> = match dev.fetch_events() {
            Ok(evs) => evs
                .filter(|e| e.event_type() == evdev::EventType::KEY)
                .map(|e| (e.code(), e.value()))
                .collect(),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Some(e.to_string()),
        };
        let now = Instant::now();
        let mut open = true;
        for (code, value) in events {
            decoder.key(code, value, |f| open &= emit(f, now, tx));
        }
        if !open {
            return None;
        }
    }
}

/// `hid_source = "recording"`: raw `struct input_event` records from a file or FIFO, decoded
/// like a live device. A FIFO is read for as long as the daemon runs; a file to its end.
fn recording_loop(path: &Path, layout: Layout, cfg: &ReaderConfig, tx: &Tx) {
    use std::os::unix::fs::FileTypeExt;
    let mut backoff = crate::backoff::reconnect();
    let mut warned = false;
    let mut file = loop {
        let is_fifo = std::fs::metadata(path).map(|m| m.file_type().is_fifo());
        // A FIFO is opened read-write: it never reaches end of file when a writer closes.
        let opened = is_fifo.and_then(|fifo| {
            std::fs::OpenOptions::new()
                .read(true)
                .write(fifo)
                .open(path)
        });
        match opened {
            Ok(f) => break f,
            Err(e) => {
                if !warned {
                    tracing::warn!(reader = %cfg.name, path = %path.display(), "recording cannot be opened: {e}; retrying");
                    warned = true;
                }
                if tx.is_closed() {
                    return;
                }
                std::thread::sleep(backoff.next().unwrap_or(Duration::from_secs(5)));
            }
        }
    };
    if tx
        .blocking_send(ReaderEvent::Connected {
            path: path.to_owned(),
        })
        .is_err()
    {
        return;
    }
    let disconnected = |error: String| {
        let _ = tx.blocking_send(ReaderEvent::Disconnected {
            path: path.to_owned(),
            error,
        });
    };
    const SIZE: usize = crate::hid::RECORD_SIZE;
    let mut decoder = HidDecoder::new(layout, cfg.max_len);
    let mut pending: Vec<u8> = Vec::with_capacity(SIZE * 64);
    let mut buf = [0u8; SIZE * 64];
    loop {
        let timeout = if decoder.has_partial() {
            cfg.frame_timeout
        } else {
            Duration::from_secs(60)
        };
        match wait_readable(&file, timeout) {
            Ok(true) => {}
            Ok(false) => {
                if let Some(f) = decoder.flush_partial() {
                    if !emit(f, Instant::now(), tx) {
                        return;
                    }
                }
                if tx.is_closed() {
                    return;
                }
                continue;
            }
            Err(e) => return disconnected(e.to_string()),
        }
        let n = match file.read(&mut buf) {
            Ok(0) => {
                if let Some(f) = decoder.flush_partial() {
                    emit(f, Instant::now(), tx);
                }
                tracing::info!(reader = %cfg.name, path = %path.display(), "end of the recording");
                return disconnected("end of the recording".into());
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return disconnected(e.to_string()),
        };
        pending.extend_from_slice(&buf[..n]);
        let whole = pending.len() / SIZE * SIZE;
        let now = Instant::now();
        let mut open = true;
        for rec in pending[..whole].chunks_exact(SIZE) {
            if let Some((ty, code, value)) = crate::hid::parse_record(rec) {
                if ty == crate::hid::EV_KEY {
                    decoder.key(code, value, |f| open &= emit(f, now, tx));
                }
            }
        }
        pending.drain(..whole);
        if !open {
            return;
        }
    }
}

fn emit(frame: Frame, last_byte: Instant, tx: &Tx) -> bool {
    let ev = match frame {
        Frame::Code(code) => ReaderEvent::Code { code, last_byte },
        Frame::Malformed(kind) => ReaderEvent::Malformed { kind, last_byte },
    };
    tx.blocking_send(ev).is_ok()
}

pub(crate) fn open_port(path: &Path, baud: u32) -> serialport::Result<serialport::TTYPort> {
    serialport::new(path.to_string_lossy(), baud)
        .data_bits(serialport::DataBits::Eight)
        .parity(serialport::Parity::None)
        .stop_bits(serialport::StopBits::One)
        .flow_control(serialport::FlowControl::None)
        .timeout(Duration::from_secs(60))
        .open_native()
}

fn serial_loop(path: &Path, baud: u32, cfg: &ReaderConfig, tx: &Tx) {
    reconnecting(
        cfg,
        tx,
        path,
        || open_port(path, baud).map(|p| (path.to_owned(), p)),
        |port| read_port(port, cfg, tx),
    );
}

/// A reader's life: open the device (retrying with backoff while it is not there, saying so
/// once per distinct error), report it connected, read until it fails, report it gone, and
/// start again; until the daemon stops. `open` returns the path it opened and the device;
/// `read` returns the error that ended reading, or `None` when the daemon is stopping.
fn reconnecting<D, E: std::fmt::Display>(
    cfg: &ReaderConfig,
    tx: &Tx,
    what: &Path,
    mut open: impl FnMut() -> Result<(PathBuf, D), E>,
    mut read: impl FnMut(&mut D) -> Option<String>,
) {
    let mut backoff = crate::backoff::reconnect();
    let mut last_error: Option<String> = None;
    loop {
        if tx.is_closed() {
            return;
        }
        let (path, mut dev) = match open() {
            Ok(x) => x,
            Err(e) => {
                let msg = e.to_string();
                if last_error.as_deref() != Some(msg.as_str()) {
                    tracing::warn!(reader = %cfg.name, path = %what.display(), "reader cannot be opened: {msg}; retrying until it is back");
                    last_error = Some(msg);
                }
                std::thread::sleep(backoff.next().unwrap_or(Duration::from_secs(5)));
                continue;
            }
        };
        last_error = None;
        backoff = crate::backoff::reconnect();
        if tx
            .blocking_send(ReaderEvent::Connected { path: path.clone() })
            .is_err()
        {
            return;
        }
        let error = read(&mut dev);
        drop(dev);
        match error {
            None => return, // the daemon is stopping
            Some(error) => {
                if tx
                    .blocking_send(ReaderEvent::Disconnected { path, error })
                    .is_err()
                {
                    return;
                }
            }
        }
    }
}

/// Reads until the port fails (returns the error) or the daemon stops (returns None).
fn read_port(port: &mut serialport::TTYPort, cfg: &ReaderConfig, tx: &Tx) -> Option<String> {
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

fn stdin_loop(cfg: &ReaderConfig, tx: &Tx) {
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
