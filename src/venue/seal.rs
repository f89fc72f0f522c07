//! The venue key (pure but for the nonce's randomness): the same secret on every door of a
//! venue (`mqtt.venue_key_file`, surrounding whitespace trimmed, at least 32 bytes). Three keys
//! are derived from it with HKDF-SHA256 (ring), one per use, so that no value is ever used
//! under one key for two purposes:
//!
//! - the **address** of a code: HMAC-SHA256 under the address key, 128 bits in hex. The broker
//!   and its operator see addresses, never codes, and cannot tell which pass an address stands
//!   for without the key (a code's address is not its fingerprint: another key);
//! - the **seal**: ChaCha20-Poly1305 under the seal key, a random 96-bit nonce per message, the
//!   topic as associated data (a message moved to another pass's topic does not open);
//! - the **key id**: 4 bytes that say which venue key sealed a message, so a door with another
//!   key says "another venue key" (once) instead of "damaged".
//!
//! A sealed message: version (1 byte, 1), key id (4), nonce (12), ciphertext and tag.

use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::hkdf;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

/// The shortest venue key accepted.
pub const MIN_KEY_BYTES: usize = 32;
const VERSION: u8 = 1;
const SALT: &[u8] = b"tiketo-gate venue v1";
const HEADER: usize = 1 + 4 + NONCE_LEN;

/// Why a sealed message does not open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenError {
    /// Sealed with another venue key (another venue on the broker, or a door set up wrong).
    ForeignKey,
    /// Not a sealed message of this version, or altered, or moved to another topic.
    Damaged,
}

/// The venue's keys, derived from its secret.
pub struct VenueKey {
    address: hmac::Key,
    seal: LessSafeKey,
    id: [u8; 4],
    rng: SystemRandom,
}

struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

fn expand(prk: &hkdf::Prk, info: &[u8], len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    prk.expand(&[info], Len(len))
        .and_then(|okm| okm.fill(&mut out))
        .expect("HKDF-SHA256 expands 32 bytes");
    out
}

impl VenueKey {
    /// From `venue_key_file`'s content.
    pub fn from_text(text: &str) -> Result<VenueKey, String> {
        let secret = text.trim();
        if secret.len() < MIN_KEY_BYTES {
            return Err(format!(
                "the key has {} bytes; at least {MIN_KEY_BYTES} are needed (e.g. openssl rand -hex 32), the same on every door of the venue",
                secret.len()
            ));
        }
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, SALT).extract(secret.as_bytes());
        let address = hmac::Key::new(hmac::HMAC_SHA256, &expand(&prk, b"address", 32));
        let seal = LessSafeKey::new(
            UnboundKey::new(&CHACHA20_POLY1305, &expand(&prk, b"seal", 32))
                .expect("a 32-byte ChaCha20-Poly1305 key"),
        );
        let mut id = [0u8; 4];
        id.copy_from_slice(&expand(&prk, b"key id", 4));
        Ok(VenueKey {
            address,
            seal,
            id,
            rng: SystemRandom::new(),
        })
    }

    /// A code's address on the broker: 32 hex digits.
    pub fn address(&self, code: &str) -> String {
        let tag = hmac::sign(&self.address, code.as_bytes());
        tag.as_ref()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// The key's id, as hex (what doctor and the log show).
    pub fn id(&self) -> String {
        self.id.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Seals `plain` for `topic`.
    pub fn seal(&self, topic: &str, plain: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng
            .fill(&mut nonce)
            .expect("the system's random numbers");
        let mut body = plain.to_vec();
        self.seal
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(topic.as_bytes()),
                &mut body,
            )
            .expect("ChaCha20-Poly1305 seals any length here");
        let mut out = Vec::with_capacity(HEADER + body.len());
        out.push(VERSION);
        out.extend_from_slice(&self.id);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&body);
        out
    }

    /// Opens a sealed message of `topic`.
    pub fn open(&self, topic: &str, sealed: &[u8]) -> Result<Vec<u8>, OpenError> {
        if sealed.len() < HEADER + aead::CHACHA20_POLY1305.tag_len() || sealed[0] != VERSION {
            return Err(OpenError::Damaged);
        }
        if sealed[1..5] != self.id {
            return Err(OpenError::ForeignKey);
        }
        let nonce =
            Nonce::try_assume_unique_for_key(&sealed[5..HEADER]).map_err(|_| OpenError::Damaged)?;
        let mut body = sealed[HEADER..].to_vec();
        let plain = self
            .seal
            .open_in_place(nonce, Aad::from(topic.as_bytes()), &mut body)
            .map_err(|_| OpenError::Damaged)?;
        Ok(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "venue-main-hall-0123456789abcdef-0123456789";

    #[test]
    fn sealed_messages_open_only_with_the_key_and_on_their_topic() {
        let k = VenueKey::from_text(&format!("  {SECRET}\n")).unwrap();
        let topic = "tiketo-gate/venues/main-hall/pass/abc";
        let plain = br#"{"holder":"Eva Nov\u00e1kov\u00e1","code":"VALID-0001"}"#;
        let sealed = k.seal(topic, plain);
        assert_eq!(k.open(topic, &sealed).unwrap(), plain);
        // Nothing of it in clear; a second seal differs (a fresh nonce).
        let text = String::from_utf8_lossy(&sealed);
        assert!(!text.contains("VALID") && !text.contains("Eva"));
        assert_ne!(k.seal(topic, plain), sealed);
        // Moved to another topic, altered, cut short: damaged.
        assert_eq!(
            k.open("tiketo-gate/venues/main-hall/pass/abd", &sealed),
            Err(OpenError::Damaged)
        );
        let mut altered = sealed.clone();
        *altered.last_mut().unwrap() ^= 1;
        assert_eq!(k.open(topic, &altered), Err(OpenError::Damaged));
        assert_eq!(k.open(topic, &sealed[..10]), Err(OpenError::Damaged));
        assert_eq!(k.open(topic, b""), Err(OpenError::Damaged));
        // Another venue's key: said so, not "damaged".
        let other = VenueKey::from_text("another-venue-0123456789abcdef-0123456789").unwrap();
        assert_eq!(other.open(topic, &sealed), Err(OpenError::ForeignKey));
        assert_ne!(other.id(), k.id());
    }

    #[test]
    fn addresses_are_keyed_stable_and_not_the_code() {
        let k = VenueKey::from_text(SECRET).unwrap();
        let a = k.address("VALID-0001");
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        // The same on every door with the key (derived, not random), another with another key.
        assert_eq!(
            VenueKey::from_text(SECRET).unwrap().address("VALID-0001"),
            a
        );
        assert_ne!(k.address("VALID-0002"), a);
        let other = VenueKey::from_text("another-venue-0123456789abcdef-0123456789").unwrap();
        assert_ne!(other.address("VALID-0001"), a);
        // Not the plain HMAC of the secret (the address key is derived for this use only).
        let plain = hmac::sign(
            &hmac::Key::new(hmac::HMAC_SHA256, SECRET.as_bytes()),
            b"VALID-0001",
        );
        let plain_hex: String = plain.as_ref()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_ne!(plain_hex, a);
    }

    #[test]
    fn a_short_key_is_refused_with_what_to_do() {
        let e = VenueKey::from_text("short\n").err().unwrap();
        assert!(
            e.contains("at least 32") && e.contains("openssl rand"),
            "{e}"
        );
    }
}
