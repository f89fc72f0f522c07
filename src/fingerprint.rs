//! A code's fingerprint: a short tag that tells one guest's scans from another's across the
//! log, the queue and the status page, where the code itself is masked (`…0001` is many
//! passes). It is HMAC-SHA256 of the code under a key of this device's own, cut to 8 hex
//! digits: without the key nobody can tell which code a tag stands for or compute the tag
//! of a code, and the same code has another tag at another door, so tags cannot be matched
//! or looked up elsewhere.
//!
//! The key is 32 random bytes in `<state_dir>/fingerprint.key` (mode 0600), made at the
//! daemon's first start. The commands that show scans (`status`, `queue list`) read it;
//! where they cannot (another user), the field is `-`.
//!
//! HMAC through `ring` (already in the build for rustls): no hand-rolled crypto.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ring::hmac;

/// The key file's name in the state directory.
pub const FILE_NAME: &str = "fingerprint.key";
const KEY_LEN: usize = 32;

/// A device's fingerprint key.
pub struct Fingerprint(hmac::Key);

impl std::fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Fingerprint(..)")
    }
}

impl Fingerprint {
    pub fn from_key(key: &[u8]) -> Self {
        Fingerprint(hmac::Key::new(hmac::HMAC_SHA256, key))
    }

    /// The tag of `code`: the first 4 bytes of its HMAC, as 8 lowercase hex digits.
    pub fn of(&self, code: &str) -> String {
        let tag = hmac::sign(&self.0, code.as_bytes());
        hex8(tag.as_ref())
    }

    /// The key of the state directory `dir`, made if there is none yet (the daemon).
    pub fn load_or_create(dir: &Path) -> Result<Self, String> {
        let path = key_path(dir);
        match read_key(&path) {
            Ok(Some(f)) => return Ok(f),
            Ok(None) => {}
            Err(e) => return Err(e),
        }
        let mut key = [0u8; KEY_LEN];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut key)
            .map_err(|_| "no random bytes from the system".to_owned())?;
        let made = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .and_then(|mut f| f.write_all(&key).and_then(|_| f.sync_all()));
        match made {
            Ok(()) => Ok(Fingerprint::from_key(&key)),
            // Another process made it first: use that one.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read_key(&path)?
                .ok_or_else(|| format!("{} vanished while it was read", path.display())),
            Err(e) => Err(format!("cannot make {}: {e}", path.display())),
        }
    }

    /// The key of the state directory `dir`, if there is one this user can read (the
    /// commands).
    pub fn load(dir: &Path) -> Option<Self> {
        read_key(&key_path(dir)).ok().flatten()
    }
}

fn key_path(dir: &Path) -> PathBuf {
    dir.join(FILE_NAME)
}

fn read_key(path: &Path) -> Result<Option<Fingerprint>, String> {
    match std::fs::read(path) {
        Ok(k) if k.len() == KEY_LEN => Ok(Some(Fingerprint::from_key(&k))),
        Ok(k) => Err(format!(
            "{} holds {} bytes, not {KEY_LEN}: move it aside and a new key is made",
            path.display(),
            k.len()
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// The first 4 bytes as 8 lowercase hex digits. Pure.
pub fn hex8(bytes: &[u8]) -> String {
    bytes.iter().take(4).map(|b| format!("{b:02x}")).collect()
}

static KEY: OnceLock<Fingerprint> = OnceLock::new();

/// Sets this process's key (once; later calls are ignored).
pub fn install(f: Fingerprint) {
    let _ = KEY.set(f);
}

/// The tag of `code` under this process's key, or `-` when it has none.
pub fn of(code: &str) -> String {
    KEY.get().map(|k| k.of(code)).unwrap_or_else(|| "-".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tag_is_the_hmac_sha256_prefix() {
        // python3 -c "import hmac,hashlib; print(hmac.new(b'k'*32, b'VALID-0001', hashlib.sha256).hexdigest()[:8])"
        let f = Fingerprint::from_key(&[b'k'; 32]);
        assert_eq!(f.of("VALID-0001"), KNOWN);
        assert_eq!(f.of("VALID-0001").len(), 8);
        assert_ne!(f.of("VALID-0001"), f.of("VALID-0002"));
        // Another device's key: another tag for the same code.
        assert_ne!(Fingerprint::from_key(&[b'j'; 32]).of("VALID-0001"), KNOWN);
    }
    const KNOWN: &str = "0e2c63de";

    #[test]
    fn the_key_is_made_once_private_and_kept() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        assert!(Fingerprint::load(dir.path()).is_none());
        let a = Fingerprint::load_or_create(dir.path()).unwrap();
        let mode = std::fs::metadata(dir.path().join(FILE_NAME))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let b = Fingerprint::load_or_create(dir.path()).unwrap();
        let c = Fingerprint::load(dir.path()).unwrap();
        assert_eq!(a.of("X"), b.of("X"));
        assert_eq!(a.of("X"), c.of("X"));
        std::fs::write(dir.path().join(FILE_NAME), b"short").unwrap();
        let e = Fingerprint::load_or_create(dir.path()).unwrap_err();
        assert!(e.contains("holds 5 bytes"), "{e}");
        assert!(!format!("{a:?}").contains('k'));
    }

    #[test]
    fn hex8_takes_four_bytes() {
        assert_eq!(hex8(&[0, 0xab, 0x10, 0xff, 0x99]), "00ab10ff");
    }
}
