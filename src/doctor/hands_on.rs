//! The checks that need hands at the door: `--scan` (a code at each reader) and `--outputs` (each output pulsed).

use std::time::Duration;

use crate::api::Client;
use crate::config::Config;
use crate::mask::{mask_code, Secret};

use super::*;

/// `--scan`: one code per reader, shown masked with the verdict it would get now.
pub(super) async fn scan(
    cfg: &Config,
    token: Option<&Secret>,
    daemon: Option<u32>,
    wait: Duration,
) -> Vec<Check> {
    if let Some(pid) = daemon {
        return vec![check(
            "scan",
            Level::Fail,
            format!("the daemon (pid {pid}) holds the readers"),
        )
        .fix("systemctl stop tiketo-gate, run doctor --scan, then systemctl start tiketo-gate")];
    }
    let client =
        token.and_then(|t| Client::new(cfg.api.url.clone(), t, cfg.api.ca_file.as_deref()).ok());
    let mut out = Vec::new();
    for r in &cfg.readers {
        let name = format!("scan:{}", r.name);
        let (tx, mut rx) = tokio::sync::mpsc::channel(16);
        if let Err(e) = crate::reader::spawn(r, crate::reader::Tx::new(tx)) {
            out.push(check(name, Level::Fail, e.to_string()));
            continue;
        }
        eprintln!(
            "doctor: scan a pass at reader {} (waiting {} s)",
            r.name,
            wait.as_secs()
        );
        let code = tokio::time::timeout(wait, async {
            while let Some(ev) = rx.recv().await {
                match ev {
                    crate::reader::ReaderEvent::Code { code, .. } => return Ok(code),
                    crate::reader::ReaderEvent::Malformed { kind, .. } => {
                        eprintln!("doctor: that was not a code ({}); again", kind.as_str());
                    }
                    crate::reader::ReaderEvent::Disconnected { error, .. } => return Err(error),
                    _ => {}
                }
            }
            Err("the reader stopped".to_owned())
        })
        .await;
        let code = match code {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                out.push(check(name, Level::Fail, e));
                continue;
            }
            Err(_) => {
                out.push(
                    check(
                        name,
                        Level::Fail,
                        format!("no code within {} s", wait.as_secs()),
                    )
                    .fix("check the reader's cable and its terminator (CR or LF) and baud rate"),
                );
                continue;
            }
        };
        let masked = mask_code(&code);
        let Some(client) = &client else {
            out.push(check(
                name,
                Level::Warn,
                format!("{masked} read; no token to look it up"),
            ));
            continue;
        };
        let looked_up = timed(cfg.api.timeout.max(ANSWER), client.pass_by_scan_code(&code)).await;
        out.push(match looked_up {
            Some(Ok(pass)) => {
                match crate::decision::decide(
                    pass.as_ref(),
                    &cfg.rules,
                    time::OffsetDateTime::now_utc(),
                ) {
                    Ok(()) => check(
                        name,
                        Level::Ok,
                        format!("{masked} → accept (nothing recorded)"),
                    ),
                    Err(reason) => check(
                        name,
                        Level::Warn,
                        format!("{masked} → reject: {} (nothing recorded)", reason.as_str()),
                    ),
                }
            }
            Some(Err(e)) => check(
                name,
                Level::Warn,
                format!(
                    "{masked} read; the lookup failed: {}",
                    crate::mask::scrub(&e.to_string(), &code)
                ),
            ),
            None => check(
                name,
                Level::Warn,
                format!("{masked} read; the lookup did not answer"),
            ),
        });
    }
    out
}

/// `--outputs`: each output on for its pulse (at least 300 ms), in turn, announced.
pub(super) async fn pulse(cfg: &Config, daemon: Option<u32>) -> Vec<Check> {
    if let Some(pid) = daemon {
        return vec![check(
            "outputs",
            Level::Fail,
            format!("the daemon (pid {pid}) drives the outputs"),
        )
        .fix("systemctl stop tiketo-gate first (or use the status page's test buttons)")];
    }
    let mut backend = match crate::outputs::open_backend(&cfg.outputs) {
        Ok(b) => b,
        Err(e) => {
            return vec![check(
                "outputs",
                Level::Fail,
                format!("cannot open the outputs: {e}"),
            )]
        }
    };
    let mut out = Vec::new();
    for (i, (name, spec)) in cfg.outputs.lines.iter().enumerate() {
        let on_for = spec.pulse.max(Duration::from_millis(300));
        eprintln!("doctor: pulsing {name} for {} ms", on_for.as_millis());
        let r = backend.set(i, true);
        tokio::time::sleep(on_for).await;
        let off = backend.set(i, false);
        tokio::time::sleep(Duration::from_millis(300)).await;
        out.push(match r.and(off) {
            Ok(()) => check(
                format!("pulse:{name}"),
                Level::Ok,
                format!(
                    "pulsed for {} ms: did it click or light?",
                    on_for.as_millis()
                ),
            ),
            Err(e) => check(format!("pulse:{name}"), Level::Fail, e.to_string()),
        });
    }
    let _ = backend.release();
    out
}
