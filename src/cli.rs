//! The installer's commands on the store: `status` and `queue`. They open the same SQLite
//! file as the daemon (WAL: readers never block the daemon; writers wait their turn).

use std::process::ExitCode;

use crate::clock::now_ms;
use crate::config::Config;
use crate::status::Status;
use crate::store::Store;

fn open(cfg: &Config, write: bool) -> Result<Store, String> {
    let path = Store::path_in(&cfg.device.state_dir);
    if !path.exists() {
        return Err(format!(
            "no scan store at {} (has the daemon run with this config?)",
            path.display()
        ));
    }
    Store::open_existing(&path, write).map_err(|e| e.to_string())
}

fn ago(ms: i64) -> String {
    let s = ((now_ms() - ms).max(0) / 1000) as u64;
    match s {
        0..=59 => format!("{s}s ago"),
        60..=3599 => format!("{}m {}s ago", s / 60, s % 60),
        3600..=86_399 => format!("{}h {}m ago", s / 3600, (s % 3600) / 60),
        _ => format!("{}d {}h ago", s / 86_400, (s % 86_400) / 3600),
    }
}

/// `tiketo-gate status [--json]`.
pub fn status(cfg: &Config, as_json: bool) -> ExitCode {
    let store = match open(cfg, false) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("tiketo-gate status: {e}");
            return ExitCode::from(1);
        }
    };
    let result = (|| -> crate::store::Result<(Status, serde_json::Value)> {
        let st = Status::read(&store)?;
        let counts = store.counts()?;
        let enrolled = crate::enrol::load_credentials(&cfg.device.state_dir)
            .ok()
            .flatten()
            .map(|c| c.workspace_name);
        let v = st.cli_json(&cfg.device.name, &counts, enrolled, store.path());
        Ok((st, v))
    })();
    let (st, mut v) = match result {
        Ok(v) => v,
        Err(e) => {
            eprintln!("tiketo-gate status: {e}");
            return ExitCode::from(1);
        }
    };
    v["opening_hours"] = opening_hours(cfg, v["clock_synced"].as_bool() == Some(true));
    if as_json {
        println!("{v}");
        return ExitCode::SUCCESS;
    }
    let s = |k: &str| v[k].as_str().map(str::to_owned);
    let with_ago = |k: &str, ms_key: Option<i64>| match (s(k), ms_key) {
        (Some(t), Some(ms)) => format!("{t} ({})", ago(ms)),
        (Some(t), None) => t,
        _ => "never".into(),
    };
    let meta_ms = |ms: i64| (ms > 0).then_some(ms);
    println!("device:        {}", cfg.device.name);
    println!(
        "api:           {} since {}",
        v["mode"].as_str().unwrap_or("?"),
        with_ago("mode_since", meta_ms(st.mode_since_ms))
    );
    println!(
        "enrolment:     {}",
        if v["enrolled"].as_bool() == Some(true) {
            format!(
                "enrolled (workspace {})",
                v["workspace"].as_str().unwrap_or("?")
            )
        } else {
            "not enrolled (using the workspace token)".into()
        }
    );
    let oldest = match v["oldest_pending_age_s"].as_i64() {
        Some(age) => format!(", oldest {}", ago(now_ms() - age * 1000)),
        None => String::new(),
    };
    println!(
        "pending:       {}{oldest}{}",
        v["pending"],
        if v["queue_full"].as_bool() == Some(true) {
            "  QUEUE FULL: nothing more is admitted offline"
        } else {
            ""
        }
    );
    println!(
        "dead letters:  {}{}",
        v["dead"],
        if v["dead"].as_i64().unwrap_or(0) > 0 {
            "  (tiketo-gate queue list --dead)"
        } else {
            ""
        }
    );
    println!(
        "last sync:     {}",
        with_ago("last_sync", meta_ms(st.last_sync_ms))
    );
    println!(
        "clock synced:  {}",
        match (
            v["clock_synced"].as_bool() == Some(true),
            v["opening_hours"].is_array()
        ) {
            (true, _) => match v["clock_sync_source"].as_str() {
                Some("kernel") => "yes (the kernel: an NTP daemon disciplines it)".to_owned(),
                Some(by) => format!("yes ({by})"),
                None => "yes".to_owned(),
            },
            (false, false) => "no (scan times are flagged)".to_owned(),
            (false, true) => format!(
                "no (scan times are flagged; opening hours: rules.unsynced_clock = \"{}\")",
                cfg.hours.unsynced_clock.as_str()
            ),
        }
    );
    if let Some(hours) = v["opening_hours"].as_array() {
        for h in hours {
            let state = match (h["open"].as_bool(), h["detail"].as_str()) {
                (Some(true), None) => "open now".to_owned(),
                (Some(true), Some(d)) => format!("open now ({d})"),
                (_, d) => format!("CLOSED now ({})", d.unwrap_or("outside the opening hours")),
            };
            if hours.len() == 1 {
                println!("hours:         {state}");
            } else {
                println!(
                    "hours:         {}: {state}",
                    h["reader"].as_str().unwrap_or("?")
                );
            }
        }
    }
    let connected = |r: &serde_json::Value| {
        if r["connected"].as_bool() == Some(true) {
            "connected"
        } else {
            "NOT CONNECTED"
        }
    };
    if let Some(readers) = v["readers"].as_array().filter(|r| r.len() == 1) {
        println!("reader:        {}", connected(&readers[0]));
    } else if let Some(readers) = v["readers"].as_array().filter(|r| !r.is_empty()) {
        for (i, r) in readers.iter().enumerate() {
            println!(
                "{}{} ({}): {}",
                if i == 0 {
                    "readers:       "
                } else {
                    "               "
                },
                r["name"].as_str().unwrap_or("?"),
                r["direction"].as_str().unwrap_or("?"),
                connected(r)
            );
        }
    }
    if v["door"].is_object() {
        let d = &v["door"];
        let since = d["since_ms"]
            .as_i64()
            .filter(|ms| *ms > 0)
            .map(|ms| format!(" since {}", ago(ms)))
            .unwrap_or_default();
        println!(
            "door:          {}{since}{}",
            d["state"].as_str().unwrap_or("unknown"),
            if d["held_open"].as_bool() == Some(true) {
                "  HELD OPEN"
            } else {
                ""
            }
        );
    }
    for o in st.overrides.iter() {
        println!(
            "{}:{}{} since {} (remote command{})",
            o.mode.as_str().to_uppercase(),
            " ".repeat(15usize.saturating_sub(o.mode.as_str().len() + 1)),
            o.reader,
            ago(o.since_ms),
            o.jti
                .as_deref()
                .map(|j| format!(" {j}"))
                .unwrap_or_default()
        );
    }
    if let Some(venue) = &st.venue {
        println!(
            "venue:         {} ({} passes; doors there: {}{})",
            venue.topic,
            st.venue_passes,
            if venue.doors.is_empty() {
                "none".to_owned()
            } else {
                venue.doors.join(", ")
            },
            if venue.refreshing {
                "; this door refreshes"
            } else {
                ""
            }
        );
        if venue.foreign_key {
            println!("VENUE KEY:     messages sealed with another venue key were ignored (doctor shows which key id this door has)");
        }
        if st.venue_conflicts > 0 {
            let last = st
                .recent_conflicts
                .first()
                .map(|c| {
                    format!(
                        "; last: {} at {} and {} {}",
                        c.code,
                        c.first_door,
                        c.second_door,
                        ago(c.at_ms)
                    )
                })
                .unwrap_or_default();
            println!(
                "VENUE:         {} conflict(s): a pass admitted offline at two doors{last}",
                st.venue_conflicts
            );
        }
    }
    if let Some(e) = s("auth_error") {
        println!("AUTH ERROR:    {e}");
    }
    if let Some(e) = s("api_mismatch") {
        println!("API MISMATCH:  {e}");
    }
    println!(
        "store:         {} ({} scans)",
        v["store"].as_str().unwrap_or("?"),
        v["scans"]
    );
    ExitCode::SUCCESS
}

/// `tiketo-gate queue list [--dead] [--json]`.
pub fn queue_list(cfg: &Config, dead: bool, as_json: bool, limit: usize) -> ExitCode {
    let key = crate::fingerprint::Fingerprint::load(&cfg.device.state_dir);
    let fp = |code: &str| {
        key.as_ref()
            .map(|k| k.of(code))
            .unwrap_or_else(|| "-".into())
    };
    let rows = match open(cfg, false)
        .and_then(|s| s.list_with(dead, limit, fp).map_err(|e| e.to_string()))
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("tiketo-gate queue list: {e}");
            return ExitCode::from(1);
        }
    };
    if as_json {
        println!("{}", serde_json::to_string(&rows).unwrap_or_default());
        return ExitCode::SUCCESS;
    }
    if rows.is_empty() {
        println!(
            "{}",
            if dead {
                "no dead letters"
            } else {
                "nothing pending"
            }
        );
        return ExitCode::SUCCESS;
    }
    println!(
        "{:>8}  {:<36}  {:<10}  {:<24}  {:>8}  {:<8}  error",
        "seq", "scan id", "code", "scanned at", "attempts", "fp"
    );
    for r in rows {
        println!(
            "{:>8}  {:<36}  {:<10}  {:<24}  {:>8}  {:<8}  {}",
            r.seq,
            r.scan_id,
            r.code,
            r.scanned_at,
            r.attempts,
            r.code_fp,
            r.last_error.as_deref().unwrap_or("-")
        );
    }
    ExitCode::SUCCESS
}

/// Tells a running daemon (SIGUSR1 to the pid it wrote in the store) to look at its queue.
fn wake_daemon(cfg: &Config) -> bool {
    let pid = open(cfg, false)
        .ok()
        .and_then(|s| Status::read(&s).ok())
        .and_then(|st| rustix::process::Pid::from_raw(st.daemon_pid as i32));
    match pid {
        Some(pid) => rustix::process::kill_process(pid, rustix::process::Signal::USR1).is_ok(),
        None => false,
    }
}

/// `tiketo-gate queue retry ID|--all-dead`.
pub fn queue_retry(cfg: &Config, id: Option<&str>) -> ExitCode {
    match open(cfg, true).and_then(|s| s.retry(id).map_err(|e| e.to_string())) {
        Ok(0) => {
            eprintln!(
                "tiketo-gate queue retry: no dead letter matches {}",
                id.unwrap_or("--all-dead")
            );
            ExitCode::from(1)
        }
        Ok(n) => {
            let woke = wake_daemon(cfg);
            println!(
                "{n} scan event(s) back in the queue; {}",
                if woke {
                    "the daemon sends them now"
                } else {
                    "the daemon sends them once it runs"
                }
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tiketo-gate queue retry: {e}");
            ExitCode::from(1)
        }
    }
}

/// `tiketo-gate queue drop ID --yes`.
pub fn queue_drop(cfg: &Config, id: &str, yes: bool) -> ExitCode {
    if !yes {
        eprintln!("tiketo-gate queue drop: this removes scan {id} from the queue for good: it will never reach Tiketo. Add --yes to do it.");
        return ExitCode::from(2);
    }
    match open(cfg, true).and_then(|s| s.drop_row(id).map_err(|e| e.to_string())) {
        Ok(true) => {
            println!("dropped {id}");
            ExitCode::SUCCESS
        }
        Ok(false) => {
            eprintln!("tiketo-gate queue drop: no pending or dead scan matches {id}");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("tiketo-gate queue drop: {e}");
            ExitCode::from(1)
        }
    }
}

/// `tiketo-gate enroll [--name N] [--force]`.
pub fn enroll(cfg: &Config, name: Option<String>, force: bool) -> ExitCode {
    let state = &cfg.device.state_dir;
    match crate::enrol::load_credentials(state) {
        Ok(Some(c)) if !force => {
            println!(
                "already enrolled as \"{}\" in workspace {} on {}; --force registers again",
                c.device_name,
                c.workspace_name.as_deref().unwrap_or("?"),
                c.enrolled_at
            );
            return ExitCode::SUCCESS;
        }
        Err(e) if !force => {
            eprintln!("tiketo-gate enroll: {e}; --force registers again");
            return ExitCode::from(1);
        }
        _ => {}
    }
    let token = match crate::enrol::workspace_token(cfg) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("tiketo-gate enroll: {e}");
            return ExitCode::from(2);
        }
    };
    let name = name.unwrap_or_else(|| cfg.device.name.clone());
    crate::api::install_crypto_provider();
    let rt = match crate::daemon::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tiketo-gate enroll: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(crate::enrol::register(cfg, &token, &name)) {
        Ok(creds) => match crate::enrol::save_credentials(state, &creds) {
            Ok(()) => {
                println!(
                    "enrolled as \"{name}\" in workspace {}; the daemon uses the new device token from its next start (systemctl restart tiketo-gate)",
                    creds.workspace_name.as_deref().unwrap_or("?")
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("tiketo-gate enroll: {e}");
                ExitCode::from(1)
            }
        },
        Err(e) => {
            eprintln!("tiketo-gate enroll: registerDevice failed: {e}");
            ExitCode::from(1)
        }
    }
}

/// `tiketo-gate hid-decode FILE [--layout L] [--full]`.
pub fn hid_decode(file: &std::path::Path, layouts: &[crate::hid::Layout], full: bool) -> ExitCode {
    use crate::framing::Frame;
    let bytes = match std::fs::read(file) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("tiketo-gate hid-decode: {}: {e}", file.display());
            return ExitCode::from(1);
        }
    };
    if bytes.len() % crate::hid::RECORD_SIZE != 0 {
        eprintln!(
            "tiketo-gate hid-decode: {}: {} bytes is not a whole number of {}-byte input events (recorded on another architecture, or not a recording?)",
            file.display(),
            bytes.len(),
            crate::hid::RECORD_SIZE
        );
    }
    for layout in layouts {
        let (keys, frames) = crate::hid::decode_recording(&bytes, *layout, 65_536);
        let codes = frames
            .iter()
            .filter(|f| matches!(f, Frame::Code(_)))
            .count();
        println!(
            "layout {}: {keys} key events, {codes} codes, {} malformed",
            layout.as_str(),
            frames.len() - codes
        );
        for (i, f) in frames.iter().enumerate() {
            match f {
                Frame::Code(c) if full => println!("  {:>3}  {c}", i + 1),
                Frame::Code(c) => println!(
                    "  {:>3}  {}  ({} characters; --full shows it whole)",
                    i + 1,
                    crate::mask::mask_code(c),
                    c.chars().count()
                ),
                Frame::Malformed(kind) => println!("  {:>3}  malformed: {kind}", i + 1),
            }
        }
    }
    ExitCode::SUCCESS
}

/// `opening_hours` of `status --json`: for each reader that keeps hours, whether a code would
/// be let past them now (`detail`: why not, or that they are not kept); `null` when no reader
/// has hours. The same rule as the lanes' ([`crate::hours::closed_now`]).
fn opening_hours(cfg: &Config, clock_synced: bool) -> serde_json::Value {
    let now = jiff::Timestamp::now();
    let list: Vec<serde_json::Value> = cfg
        .readers
        .iter()
        .filter(|r| r.hours.is_set())
        .map(|r| {
            let closed = crate::hours::closed_now(
                &r.hours,
                cfg.hours.unsynced_clock,
                clock_synced,
                now,
                &cfg.hours.zone,
            );
            let detail = match (closed, clock_synced) {
                (Some(why), _) => Some(why),
                (None, false) => Some("not kept until the clock is synced"),
                (None, true) => None,
            };
            serde_json::json!({"reader": r.name, "open": closed.is_none(), "detail": detail})
        })
        .collect();
    if list.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::json!(list)
    }
}
