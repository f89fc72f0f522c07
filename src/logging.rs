//! Logging: `tracing` to stderr. Under systemd (`JOURNAL_STREAM` names stderr) each line starts
//! with its syslog priority (`<3>` error ... `<7>` debug), which journald reads as the entry's
//! priority, and carries no timestamp (the journal has its own): `journalctl -p warning`
//! works. Elsewhere: timestamped lines, coloured on a terminal. The level comes from
//! `TIKETO_GATE_LOG` (or `RUST_LOG`), default `info`.

use std::fmt;
use std::io::IsTerminal;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::{DefaultFields, Format, Full, Writer};
use tracing_subscriber::fmt::time::SystemTime;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// `<N>` for a level, as sd-daemon(3) defines the prefixes.
pub fn priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

struct Journal {
    inner: Format<Full, ()>,
}

impl<S, N> FormatEvent<S, N> for Journal
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        write!(writer, "<{}>", priority(event.metadata().level()))?;
        self.inner.format_event(ctx, writer, event)
    }
}

/// True when stderr is the journal's stream (systemd sets `JOURNAL_STREAM=dev:inode`).
fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(v) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = v.split_once(':') else {
        return false;
    };
    let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    dev.parse::<u64>().ok() == Some(meta.dev()) && ino.parse::<u64>().ok() == Some(meta.ino())
}

pub fn init() {
    let filter = std::env::var("TIKETO_GATE_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info".to_owned());
    let filter = EnvFilter::try_new(&filter).unwrap_or_else(|_| EnvFilter::new("info"));
    if stderr_is_journal() {
        let format = Journal {
            inner: Format::default()
                .without_time()
                .with_target(false)
                .with_ansi(false),
        };
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .fmt_fields(DefaultFields::new())
            .event_format(format)
            .try_init();
    } else {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .with_timer(SystemTime)
            .with_target(false)
            .try_init();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn priorities_follow_sd_daemon() {
        use tracing::Level;
        assert_eq!(super::priority(&Level::ERROR), 3);
        assert_eq!(super::priority(&Level::WARN), 4);
        assert_eq!(super::priority(&Level::INFO), 6);
        assert_eq!(super::priority(&Level::DEBUG), 7);
    }
}
