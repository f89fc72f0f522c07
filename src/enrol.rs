//! Device credentials: the token `registerDevice` returned, kept in `device.state_dir`.
//!
//! Written atomically (a temp file, fsync, rename, fsync of the directory) with mode 0600, so
//! a power cut leaves either the old file or the new one, never half of one.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::mask::Secret;

pub const FILE_NAME: &str = "device-credentials.json";

#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub token: Secret,
    pub workspace_name: Option<String>,
    pub device_name: String,
    pub enrolled_at: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("token", &self.token)
            .field("workspace_name", &self.workspace_name)
            .field("device_name", &self.device_name)
            .finish()
    }
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct OnDisk {
    token: String,
    workspace_name: Option<String>,
    device_name: String,
    enrolled_at: String,
}

pub fn path_in(state_dir: &Path) -> PathBuf {
    state_dir.join(FILE_NAME)
}

/// The stored credentials; `Ok(None)` when the device is not enrolled.
pub fn load_credentials(state_dir: &Path) -> Result<Option<Credentials>, String> {
    let path = path_in(state_dir);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: cannot read: {e}", path.display())),
    };
    let d: OnDisk = serde_json::from_str(&text)
        .map_err(|e| format!("{}: not valid credentials: {e}", path.display()))?;
    if d.token.trim().is_empty() {
        return Err(format!("{}: holds an empty token", path.display()));
    }
    Ok(Some(Credentials {
        token: Secret::new(d.token),
        workspace_name: d.workspace_name,
        device_name: d.device_name,
        enrolled_at: d.enrolled_at,
    }))
}

/// Stores credentials atomically with mode 0600.
pub fn save_credentials(state_dir: &Path, c: &Credentials) -> Result<(), String> {
    std::fs::create_dir_all(state_dir).map_err(|e| format!("{}: {e}", state_dir.display()))?;
    let path = path_in(state_dir);
    let tmp = state_dir.join(format!(".{FILE_NAME}.tmp-{}", std::process::id()));
    let body = serde_json::to_vec_pretty(&OnDisk {
        token: c.token.expose().to_owned(),
        workspace_name: c.workspace_name.clone(),
        device_name: c.device_name.clone(),
        enrolled_at: c.enrolled_at.clone(),
    })
    .map_err(|e| e.to_string())?;
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        f.write_all(&body)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(state_dir)?.sync_all()
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!(
            "{}: cannot store the device credentials: {e}",
            path.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load_credentials(dir.path()).unwrap().is_none());
        let c = Credentials {
            token: Secret::new("dev-secret"),
            workspace_name: Some("W".into()),
            device_name: "door".into(),
            enrolled_at: "2026-11-27T00:00:00Z".into(),
        };
        save_credentials(dir.path(), &c).unwrap();
        let meta = std::fs::metadata(path_in(dir.path())).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(load_credentials(dir.path()).unwrap(), Some(c.clone()));
        assert!(!format!("{c:?}").contains("dev-secret"));
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains("tmp"))
            .collect();
        assert!(leftovers.is_empty());
    }
}
