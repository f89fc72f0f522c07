//! The device's own files: the token, the state directory, the store (and the running daemon it names).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::config::Config;
use crate::mask::Secret;

use super::*;

pub(super) fn mode_of(path: &Path) -> Option<u32> {
    std::fs::metadata(path)
        .ok()
        .map(|m| m.permissions().mode() & 0o777)
}

/// The token the API is asked with: the device's own, or before enrolment the workspace's.
pub(super) fn token(cfg: &Config) -> (Option<Secret>, bool, Vec<Check>) {
    let mut out = Vec::new();
    let mode_check = |what: &str, path: &Path| {
        let mode = mode_of(path)?;
        Some(match secret_mode_level(mode) {
            Level::Ok => check(
                "token",
                Level::Ok,
                format!("{what} {} is readable (mode {mode:04o})", path.display()),
            ),
            l => check(
                "token",
                l,
                format!(
                    "{what} {} is readable by every user (mode {mode:04o})",
                    path.display()
                ),
            )
            .fix(format!("chmod 640 {}", path.display())),
        })
    };
    match crate::enrol::load_credentials(&cfg.device.state_dir) {
        Ok(Some(c)) => {
            let path = crate::enrol::path_in(&cfg.device.state_dir);
            out.extend(mode_check("the device credentials", &path));
            (Some(c.token), true, out)
        }
        Ok(None) => match crate::enrol::workspace_token(cfg) {
            Ok(t) => {
                if std::env::var_os("TIKETO_GATE_TOKEN").is_some() {
                    out.push(check(
                        "token",
                        Level::Ok,
                        "not enrolled yet; the workspace token comes from TIKETO_GATE_TOKEN",
                    ));
                } else {
                    out.extend(mode_check(
                        "not enrolled yet; the workspace token",
                        &cfg.api.token_file,
                    ));
                }
                (Some(t), false, out)
            }
            Err(e) => {
                out.push(
                    check("token", Level::Fail, format!("not enrolled yet, and {e}")).fix(
                        format!(
                            "put the workspace API token in {} (mode 640), or enrol: tiketo-gate enroll",
                            cfg.api.token_file.display()
                        ),
                    ),
                );
                (None, false, out)
            }
        },
        Err(e) => {
            out.push(check("token", Level::Fail, e).fix(
                "the device credentials cannot be read: check the state directory's owner, or enrol again with tiketo-gate enroll --force",
            ));
            (None, true, out)
        }
    }
}

pub(super) fn state_dir(cfg: &Config) -> Vec<Check> {
    let dir = &cfg.device.state_dir;
    if !dir.exists() {
        // The daemon makes it at its first start (systemd's StateDirectory= on a kiosk): fine
        // when the nearest directory that is there can be written.
        let parent = dir.ancestors().skip(1).find(|p| p.exists());
        let parent = parent.unwrap_or(Path::new("/"));
        let parent = if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        };
        return vec![
            if rustix::fs::access(parent, rustix::fs::Access::WRITE_OK).is_ok() {
                check(
                    "state_dir",
                    Level::Ok,
                    format!("{} is made at the daemon's first start", dir.display()),
                )
            } else {
                check(
                    "state_dir",
                    Level::Fail,
                    format!(
                        "{} is not there and {} is not writable",
                        dir.display(),
                        parent.display()
                    ),
                )
                .fix("create it for the service's user, or set StateDirectory= in the unit")
            },
        ];
    }
    let writable = rustix::fs::access(dir, rustix::fs::Access::WRITE_OK).is_ok();
    if !writable {
        return vec![check(
            "state_dir",
            Level::Fail,
            format!("{} is not writable by this user", dir.display()),
        )
        .fix("run doctor as the service's user (or root); check the directory's owner")];
    }
    match rustix::fs::statvfs(dir) {
        Ok(st) => {
            let free = st.f_bavail.saturating_mul(st.f_frsize);
            let c = check(
                "state_dir",
                free_space_level(free),
                format!("{} is writable, {} MiB free", dir.display(), free >> 20),
            );
            vec![match c.status {
                Level::Ok => c,
                _ => c.fix("free space on that file system: offline scans are kept there"),
            }]
        }
        Err(e) => vec![check(
            "state_dir",
            Level::Warn,
            format!("{} is writable; free space unknown: {e}", dir.display()),
        )],
    }
}

/// The store's health and counts, and the running daemon's pid (from its status rows).
pub(super) fn store(cfg: &Config) -> (Vec<Check>, Option<u32>) {
    let path = crate::store::Store::path_in(&cfg.device.state_dir);
    if !path.exists() {
        return (
            vec![check(
                "store",
                Level::Ok,
                format!("{} not made yet (the daemon makes it)", path.display()),
            )],
            None,
        );
    }
    let store = match crate::store::Store::open_existing(&path, false) {
        Ok(s) => s,
        Err(e) => {
            return (
                vec![check("store", Level::Fail, format!("{}: {e}", path.display()))
                    .fix("the daemon sets a damaged store aside at start and makes a new one; check the disk")],
                None,
            )
        }
    };
    let mut out = Vec::new();
    if let Err(e) = store.quick_check() {
        out.push(
            check(
                "store",
                Level::Fail,
                format!("{}: quick_check: {e}", path.display()),
            )
            .fix("the daemon sets a damaged store aside at its next start; check the SD card"),
        );
    } else {
        match store.outbox_counts() {
            Ok(c) => {
                let msg = format!(
                    "{}: quick_check ok, {} pending, {} dead",
                    path.display(),
                    c.pending,
                    c.dead
                );
                out.push(if c.dead > 0 {
                    check("store", Level::Warn, msg)
                        .fix("tiketo-gate queue list --dead says why Tiketo refused them")
                } else {
                    check("store", Level::Ok, msg)
                });
            }
            Err(e) => out.push(check("store", Level::Fail, e.to_string())),
        }
    }
    let daemon = crate::status::Status::read(&store)
        .ok()
        .map(|s| s.daemon_pid)
        .filter(|pid| *pid > 0 && daemon_alive(*pid));
    (out, daemon)
}

pub(super) fn daemon_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|c| c.contains("tiketo-gate") && c.contains("run"))
}
