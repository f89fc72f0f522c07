//! Device credentials: the token `registerDevice` returned, kept in `device.state_dir`.
//!
//! Written atomically (a temp file, fsync, rename, fsync of the directory) with mode 0600, so
//! a power cut leaves either the old file or the new one, never half of one.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::api::{ApiError, Client};
use crate::config::Config;
use crate::mask::Secret;

pub const FILE_NAME: &str = "device-credentials.json";

/// The name of the systemd credential (`LoadCredential=token:/etc/tiketo-gate/token`).
pub const CREDENTIAL_NAME: &str = "token";

/// The workspace API token, for enrolment: `TIKETO_GATE_TOKEN`, else the systemd credential
/// `token` (`$CREDENTIALS_DIRECTORY/token`), else `api.token_file`. Errors name the file,
/// never the content.
pub fn workspace_token(cfg: &Config) -> Result<Secret, String> {
    if let Ok(t) = std::env::var("TIKETO_GATE_TOKEN") {
        let t = t.trim();
        if !t.is_empty() {
            return Ok(Secret::new(t));
        }
    }
    if let Ok(dir) = std::env::var("CREDENTIALS_DIRECTORY") {
        let p = Path::new(&dir).join(CREDENTIAL_NAME);
        if p.exists() {
            return read_token_file(&p, "systemd credential");
        }
    }
    read_token_file(&cfg.api.token_file, "api.token_file")
}

fn read_token_file(path: &Path, what: &str) -> Result<Secret, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{what} {}: cannot read the API token: {e}", path.display()))?;
    let t = text.trim();
    if t.is_empty() {
        return Err(format!("{what} {}: the file is empty", path.display()));
    }
    if t.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(format!(
            "{what} {}: the token must be one line without spaces",
            path.display()
        ));
    }
    Ok(Secret::new(t))
}

/// Registers this device with the workspace token and returns its credentials.
pub async fn register(
    cfg: &Config,
    workspace: &Secret,
    name: &str,
) -> Result<Credentials, ApiError> {
    let client = Client::new(cfg.api.url.clone(), workspace, cfg.api.ca_file.as_deref())
        .map_err(|e| ApiError::new(crate::api::classify::ErrorClass::Permanent, None, e))?;
    let r = client.register_device(name).await?;
    Ok(Credentials {
        token: r.token,
        workspace_name: r.workspace_name,
        device_name: name.to_owned(),
        enrolled_at: crate::clock::rfc3339_ms(time::OffsetDateTime::now_utc()),
    })
}

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
    })?;
    // `tiketo-gate enroll` run as root: the file belongs to whoever owns the state directory
    // (the service user), or the daemon could not read it.
    if let Ok(meta) = std::fs::metadata(state_dir) {
        use std::os::unix::fs::MetadataExt;
        let _ = std::os::unix::fs::chown(&path, Some(meta.uid()), Some(meta.gid()));
    }
    Ok(())
}

/// Moves an unreadable credentials file aside (never deletes it).
pub fn move_aside(state_dir: &Path) -> Option<PathBuf> {
    let path = path_in(state_dir);
    let aside = state_dir.join(format!(
        "{FILE_NAME}.bad-{}",
        time::OffsetDateTime::now_utc().unix_timestamp()
    ));
    std::fs::rename(&path, &aside).ok().map(|_| aside)
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
