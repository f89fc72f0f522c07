//! `tiketo-gate doctor`: the installer's check before the doors open. One line per check
//! (✓ fine, ! worth a look, ✗ the door will not work as it should), each problem with what to
//! do; `--json` for fleet scripts; exit status 1 when a line is ✗.
//!
//! It changes nothing (but the announced pulses of `--outputs`), never prints a token or a
//! whole code, and bounds every network step in time: a dead network is a ✗ line, not a
//! hang. The judgements (skew, free space, file modes) are pure and tested; the checks are
//! the IO around them.
//!
//! One file per family of checks: [`local`] (the token, the state directory, the store),
//! [`network`] (DNS to the schema: the API as this device sees it), [`device`] (readers,
//! opening hours, the guest screen, the lines), [`broker`] (`[mqtt]`: the broker, the command
//! key), [`hands_on`] (`--scan`, `--outputs`).

mod broker;
mod device;
mod hands_on;
mod local;
mod network;

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use serde::Serialize;
use serde_json::json;

use crate::config::Config;

/// How long each network step may take.
const STEP: Duration = Duration::from_secs(3);
/// The API's answers (a slow Lambda authorizer included).
const ANSWER: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Ok,
    Warn,
    Fail,
}

impl Level {
    fn mark(self) -> &'static str {
        match self {
            Level::Ok => "✓",
            Level::Warn => "!",
            Level::Fail => "✗",
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    pub status: Level,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

fn check(name: impl Into<String>, status: Level, message: impl Into<String>) -> Check {
    Check {
        name: name.into(),
        status,
        message: message.into(),
        fix: None,
    }
}

impl Check {
    fn fix(mut self, f: impl Into<String>) -> Check {
        self.fix = Some(f.into());
        self
    }
}

#[derive(Debug, Clone, Default)]
pub struct Options {
    pub json: bool,
    /// Wait for one code per reader and show the verdict it would get (recording nothing).
    pub scan: bool,
    /// Pulse each output once, announced (only with the daemon stopped).
    pub outputs: bool,
    pub scan_wait: Duration,
}

// ---- the judgements (pure) ----------------------------------------------------------------

/// The clock against the server's `Date` (whole seconds, so a second either way is noise).
pub fn skew_level(skew: Duration) -> Level {
    if skew <= Duration::from_secs(2) {
        Level::Ok
    } else if skew <= Duration::from_secs(30) {
        Level::Warn
    } else {
        Level::Fail
    }
}

/// Free space in the state directory.
pub fn free_space_level(bytes: u64) -> Level {
    if bytes >= 200 << 20 {
        Level::Ok
    } else if bytes >= 20 << 20 {
        Level::Warn
    } else {
        Level::Fail
    }
}

/// A secret's file mode: readable by every user is a leak waiting to happen.
pub fn secret_mode_level(mode: u32) -> Level {
    if mode & 0o007 != 0 {
        Level::Warn
    } else {
        Level::Ok
    }
}

/// The report's text, a line a check (and an arrow line for what to do).
pub fn render(checks: &[Check]) -> String {
    let width = checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
    let mut out = String::new();
    for c in checks {
        out.push_str(&format!(
            "{} {:width$}  {}\n",
            c.status.mark(),
            c.name,
            c.message
        ));
        if let Some(f) = &c.fix {
            out.push_str(&format!("  {:width$}  → {f}\n", ""));
        }
    }
    let fails = checks.iter().filter(|c| c.status == Level::Fail).count();
    let warns = checks.iter().filter(|c| c.status == Level::Warn).count();
    out.push_str(&match (fails, warns) {
        (0, 0) => "ready: every check passed\n".to_owned(),
        (0, w) => format!("ready, with {w} thing(s) worth a look\n"),
        (f, _) => format!("NOT READY: {f} problem(s) to fix\n"),
    });
    out
}

// ---- the checks -------------------------------------------------------------------------

/// `tiketo-gate doctor`.
pub fn run(config_path: &Path, opts: Options) -> ExitCode {
    let checks = match crate::config::load(config_path) {
        Err(e) => vec![check("config", Level::Fail, e.to_string())
            .fix("fix the line named above; tiketo-gate check-config shows the same")],
        Ok(cfg) => {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("tiketo-gate doctor: {e}");
                    return ExitCode::from(1);
                }
            };
            rt.block_on(all(&cfg, &opts))
        }
    };
    if opts.json {
        let ok = checks.iter().all(|c| c.status != Level::Fail);
        println!("{}", json!({"ok": ok, "checks": checks}));
    } else {
        print!("{}", render(&checks));
    }
    if checks.iter().any(|c| c.status == Level::Fail) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

async fn all(cfg: &Config, opts: &Options) -> Vec<Check> {
    crate::api::install_crypto_provider();
    let summary = cfg.summary();
    let mut out = vec![check(
        "config",
        Level::Ok,
        summary.strip_prefix("ok: ").unwrap_or(&summary),
    )];
    let (token, enrolled, token_checks) = local::token(cfg);
    out.extend(token_checks);
    out.extend(local::state_dir(cfg));
    let (store_checks, daemon) = local::store(cfg);
    out.extend(store_checks);
    out.extend(network::api(cfg, token.as_ref(), enrolled).await);
    out.extend(device::readers(cfg, daemon));
    out.extend(device::lines(cfg));
    out.extend(device::hours(cfg));
    out.extend(device::display(cfg, daemon).await);
    out.extend(broker::broker(cfg).await);
    if opts.scan {
        out.extend(hands_on::scan(cfg, token.as_ref(), daemon, opts.scan_wait).await);
    }
    if opts.outputs {
        out.extend(hands_on::pulse(cfg, daemon).await);
    }
    out
}

pub(super) async fn timed<T>(d: Duration, f: impl std::future::Future<Output = T>) -> Option<T> {
    tokio::time::timeout(d, f).await.ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn judgements() {
        assert_eq!(skew_level(Duration::from_millis(1500)), Level::Ok);
        assert_eq!(skew_level(Duration::from_secs(10)), Level::Warn);
        assert_eq!(skew_level(Duration::from_secs(120)), Level::Fail);
        assert_eq!(free_space_level(1 << 30), Level::Ok);
        assert_eq!(free_space_level(50 << 20), Level::Warn);
        assert_eq!(free_space_level(1 << 20), Level::Fail);
        assert_eq!(secret_mode_level(0o640), Level::Ok);
        assert_eq!(secret_mode_level(0o600), Level::Ok);
        assert_eq!(secret_mode_level(0o644), Level::Warn);
    }

    #[test]
    fn the_report_marks_each_line_and_says_what_to_do() {
        let checks = vec![
            check("config", Level::Ok, "fine"),
            check("schema", Level::Fail, "CreateScanEvent: venue").fix("update"),
        ];
        let text = render(&checks);
        assert!(text.contains("✓ config  fine\n"), "{text}");
        assert!(
            text.contains("✗ schema  CreateScanEvent: venue\n"),
            "{text}"
        );
        assert!(text.contains("→ update"), "{text}");
        assert!(text.ends_with("NOT READY: 1 problem(s) to fix\n"), "{text}");
        let v = serde_json::to_value(&checks).unwrap();
        assert_eq!(v[1]["status"], "fail");
        assert!(v[0].get("fix").is_none());
    }
}
