//! The device's parts: readers, opening hours, the guest screen, the output and input lines.

use std::path::Path;
use std::time::Duration;

use crate::config::{Config, OutputBackendKind, ReaderKind};

use super::*;

pub(super) fn readers(cfg: &Config, daemon: Option<u32>) -> Vec<Check> {
    cfg.readers
        .iter()
        .map(|r| {
            let name = format!("reader:{}", r.name);
            match &r.kind {
                ReaderKind::Stdin => check(name, Level::Ok, "stdin (a test setup)"),
                ReaderKind::Serial { path, baud } => {
                    if !path.exists() {
                        return check(name, Level::Fail, format!("{} is not there", path.display()))
                            .fix("plug the reader in; ls -l /dev/serial/by-id/ shows the stable path for reader.path");
                    }
                    if let Some(pid) = daemon {
                        return check(
                            name,
                            Level::Ok,
                            format!("{} is there, held by the running daemon (pid {pid})", path.display()),
                        );
                    }
                    match crate::reader::open_port(path, *baud) {
                        Ok(_) => check(name, Level::Ok, format!("{} opens at {baud} baud", path.display())),
                        Err(e) => check(name, Level::Fail, format!("{}: {e}", path.display()))
                            .fix("the service's user needs the dialout group; is another program holding the port?"),
                    }
                }
                ReaderKind::Hid { source, .. } => match crate::reader::open_hid(source) {
                    Ok((path, dev)) => check(
                        name,
                        Level::Ok,
                        format!(
                            "{} ({}) is a keyboard-mode reader{}",
                            path.display(),
                            dev.name().unwrap_or("?"),
                            match daemon {
                                Some(pid) => format!(", in use by the running daemon (pid {pid})"),
                                None => String::new(),
                            }
                        ),
                    ),
                    Err(e) => check(name, Level::Fail, e.to_string())
                        .fix("plug the reader in; the service's user needs the input group; ls -l /dev/input/by-id/"),
                },
            }
        })
        .collect()
}

/// The opening hours, by the lanes' rule, and whether the clock lets them be kept.
pub(super) fn hours(cfg: &Config) -> Vec<Check> {
    let synced = crate::clock::clock_synced();
    let zone = cfg
        .hours
        .zone_name
        .clone()
        .unwrap_or_else(|| "the system's zone".into());
    cfg.readers
        .iter()
        .filter(|r| r.hours.is_set())
        .map(|r| {
            let name = format!("hours:{}", r.name);
            let closed = crate::hours::closed_now(
                &r.hours,
                cfg.hours.unsynced_clock,
                synced,
                jiff::Timestamp::now(),
                &cfg.hours.zone,
            );
            match (closed, synced) {
                (None, true) => check(name, Level::Ok, format!("open now ({zone})")),
                (Some(why), true) => check(name, Level::Ok, format!("closed now: {why} ({zone})")),
                (_, false) => check(
                    name,
                    Level::Warn,
                    format!(
                        "the clock is not synced: {} (rules.unsynced_clock = \"{}\")",
                        match cfg.hours.unsynced_clock {
                            crate::hours::UnsyncedClock::IgnoreHours => "the hours are not kept until it is",
                            crate::hours::UnsyncedClock::Reject => "every code is rejected outside_hours until it is",
                        },
                        cfg.hours.unsynced_clock.as_str()
                    ),
                )
                .fix("let an NTP daemon (systemd-timesyncd, chrony, ntpsec) reach its servers; timedatectl says \"System clock synchronized: yes\" once it has"),
            }
        })
        .collect()
}

/// The guest screen: served by the running daemon, or its address free for it.
pub(super) async fn display(cfg: &Config, daemon: Option<u32>) -> Vec<Check> {
    let Some(d) = &cfg.display else {
        return Vec::new();
    };
    let mut addr = d.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let url = format!("http://{addr}/");
    if daemon.is_none() {
        return vec![match std::net::TcpListener::bind(d.listen) {
            Ok(_) => check("display", Level::Ok, format!("{} is free for the guest screen ({})", d.listen, d.language)),
            Err(e) => check("display", Level::Fail, format!("display.listen {}: {e}", d.listen))
                .fix("another program listens there (ss -ltnp shows which): choose another display.listen"),
        }];
    }
    let got = timed(Duration::from_secs(2), async {
        let r = reqwest::Client::new().get(&url).send().await?;
        let status = r.status();
        r.text().await.map(|t| (status, t))
    })
    .await;
    vec![match got {
        Some(Ok((s, body))) if s.is_success() && body.contains("EventSource") => check(
            "display",
            Level::Ok,
            format!("the running daemon serves the guest screen at {url} ({} bytes, {})", body.len(), d.language),
        ),
        Some(Ok((s, _))) => check("display", Level::Fail, format!("{url} answered {s}, not the guest screen"))
            .fix("another program answers there: choose another display.listen, restart tiketo-gate"),
        Some(Err(e)) => check("display", Level::Fail, format!("{url}: {e}"))
            .fix("restart tiketo-gate after changing [display]; journalctl -u tiketo-gate says why it does not listen"),
        None => check("display", Level::Fail, format!("{url}: no answer within 2 s"))
            .fix("journalctl -u tiketo-gate"),
    }]
}

pub(super) fn lines(cfg: &Config) -> Vec<Check> {
    let mut out = Vec::new();
    let n = cfg.outputs.lines.len();
    let inputs = crate::outputs::inputs::lines(&cfg.inputs);
    match &cfg.outputs.backend {
        OutputBackendKind::Sim { .. } => out.push(check(
            "lines",
            Level::Ok,
            format!("sim backend: {n} outputs, no hardware"),
        )),
        OutputBackendKind::Gpiod => {
            let problems = crate::outputs::gpiod::probe(&cfg.outputs, &inputs);
            if problems.is_empty() {
                out.push(check(
                    "lines",
                    Level::Ok,
                    format!(
                        "every line resolves ({n} outputs, {} inputs) on {}",
                        inputs.len(),
                        cfg.outputs.chip
                    ),
                ));
            } else {
                for p in problems {
                    out.push(check("lines", Level::Fail, p).fix(
                        "gpioinfo lists the chip's lines and who holds them; fix the line in [outputs] or [inputs]",
                    ));
                }
            }
        }
        OutputBackendKind::Gpio => {
            let dev = Path::new("/dev/gpiomem");
            out.push(if dev.exists() {
                check(
                    "lines",
                    Level::Ok,
                    format!(
                        "rppal: /dev/gpiomem is there ({n} outputs, {} inputs)",
                        inputs.len()
                    ),
                )
            } else {
                check(
                    "lines",
                    Level::Fail,
                    "rppal: /dev/gpiomem is not there (not a Raspberry Pi?)",
                )
                .fix("on a Pi, check the kernel; elsewhere use outputs.backend = \"gpiod\"")
            });
        }
    }
    for w in crate::outputs::safety_warnings(cfg) {
        out.push(check("lines", Level::Warn, w));
    }
    out
}
