//! `Secret`: a password that never prints; and the key file that encrypts
//! passwords at rest.
//!
//! A `Secret`'s `Debug`, `Display` and `Serialize` all write `******`, so a
//! secret that reaches an API response, a log line or a metric label by
//! accident shows nothing. The only way to the clear text is
//! [`Secret::expose`], which the code calls exactly where a password must
//! leave the process: when logging in to a server and when the meta store
//! persists it. Every secret made is also remembered (see [`crate::redact`]),
//! so that its text is masked where a server's error message quotes it.
//!
//! At rest, with a key file (32 random bytes), the store keeps each password
//! as `enc1:` and the hex of a random 96-bit nonce followed by its AES-256-GCM
//! ciphertext and tag ([`Key::seal`]); the job's name and the side are the
//! associated data, so a ciphertext copied to another job or side does not
//! open.

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::path::{Path, PathBuf};

/// What every secret prints as.
pub const MASK: &str = "******";

#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        let value = value.into();
        crate::redact::remember(&value);
        Secret(value)
    }

    /// The clear text. Call only to log in to a server or to persist the secret.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(MASK)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(MASK)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret::new)
    }
}

/// Prefix of a password sealed with a key.
const SEALED: &str = "enc1:";
/// Bytes in a key file.
pub const KEY_BYTES: usize = 32;

/// An AES-256-GCM key read from a key file.
pub struct Key {
    key: LessSafeKey,
    path: PathBuf,
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({})", self.path.display())
    }
}

impl Key {
    /// Reads a key file: 32 raw bytes, or 64 hex digits (and a newline).
    pub fn read(path: &Path) -> Result<Key, String> {
        let bytes = std::fs::read(path)
            .map_err(|e| format!("cannot read the key file {}: {e}", path.display()))?;
        let text = std::str::from_utf8(&bytes).map(str::trim).unwrap_or("");
        let raw = if bytes.len() == KEY_BYTES {
            bytes
        } else if text.len() == 2 * KEY_BYTES {
            from_hex(text)
                .ok_or_else(|| format!("the key file {} is not 64 hex digits", path.display()))?
        } else {
            return Err(format!(
                "the key file {} holds {} bytes; a key is {KEY_BYTES} random bytes \
                 (ccr-syncer secret-key generate PATH writes one)",
                path.display(),
                bytes.len()
            ));
        };
        let key = UnboundKey::new(&AES_256_GCM, &raw)
            .map_err(|_| format!("the key file {} is not an AES-256 key", path.display()))?;
        if let Ok(meta) = std::fs::metadata(path) {
            use std::os::unix::fs::PermissionsExt;
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(path = %path.display(), mode = %format!("{:o}", meta.permissions().mode() & 0o777),
                    "the key file can be read by other users; chmod 600 it");
            }
        }
        Ok(Key {
            key: LessSafeKey::new(key),
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The stored form of `plain`, bound to `context`.
    pub fn seal(&self, context: &str, plain: &str) -> Result<String, String> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| "no randomness for a nonce".to_string())?;
        let mut data = plain.as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context.as_bytes()),
                &mut data,
            )
            .map_err(|_| "encryption failed".to_string())?;
        let mut out = String::with_capacity(SEALED.len() + 2 * (NONCE_LEN + data.len()));
        out.push_str(SEALED);
        out.push_str(&to_hex(&nonce));
        out.push_str(&to_hex(&data));
        Ok(out)
    }

    /// The clear text of a sealed value; `None` if this key did not seal it
    /// for `context` (or it was changed).
    pub fn open(&self, context: &str, stored: &str) -> Option<String> {
        let bytes = from_hex(stored.strip_prefix(SEALED)?)?;
        if bytes.len() < NONCE_LEN {
            return None;
        }
        let (nonce, sealed) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut sealed = sealed.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(context.as_bytes()), &mut sealed)
            .ok()?;
        String::from_utf8(plain.to_vec()).ok()
    }
}

/// Whether a stored password is sealed.
pub fn is_sealed(stored: &str) -> bool {
    stored.starts_with(SEALED)
}

/// The keys the store works with.
#[derive(Debug, Default)]
pub struct Keys {
    /// Passwords are sealed with this one (none: kept in clear).
    pub current: Option<Key>,
    /// Passwords sealed with this one are opened and sealed again with
    /// `current` at start (key rotation).
    pub previous: Option<Key>,
}

impl Keys {
    pub fn load(current: Option<&Path>, previous: Option<&Path>) -> Result<Keys, String> {
        Ok(Keys {
            current: current.map(Key::read).transpose()?,
            previous: previous.map(Key::read).transpose()?,
        })
    }
}

/// Writes a new key file (32 random bytes, mode 0600); refuses to replace
/// an existing file, which may be the only key to a store.
pub fn generate_key_file(path: &Path) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut key = [0u8; KEY_BYTES];
    SystemRandom::new()
        .fill(&mut key)
        .map_err(|_| "no randomness for a key".to_string())?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => format!(
                "{} exists; a key file is never overwritten (it may be the only key to a store)",
                path.display()
            ),
            _ => format!("cannot create {}: {e}", path.display()),
        })?;
    file.write_all(&key)
        .and_then(|_| file.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Compares without stopping at the first differing byte (tokens).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints_the_clear_text() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), MASK);
        assert_eq!(format!("{s}"), MASK);
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"******\"");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn sealed_passwords_open_only_with_their_key_and_context() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        generate_key_file(&a).unwrap();
        generate_key_file(&b).unwrap();
        assert!(generate_key_file(&a)
            .unwrap_err()
            .contains("never overwritten"));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&a).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (ka, kb) = (Key::read(&a).unwrap(), Key::read(&b).unwrap());
        let sealed = ka.seal("j/src", "hunter2").unwrap();
        assert!(is_sealed(&sealed) && !sealed.contains("hunter2"));
        assert_ne!(
            sealed,
            ka.seal("j/src", "hunter2").unwrap(),
            "a fresh nonce each time"
        );
        assert_eq!(ka.open("j/src", &sealed).unwrap(), "hunter2");
        assert!(ka.open("j/dest", &sealed).is_none());
        assert!(kb.open("j/src", &sealed).is_none());
        let mut tampered = sealed.clone();
        tampered.pop();
        tampered.push('0');
        assert!(ka.open("j/src", &tampered).is_none() || tampered == sealed);
        std::fs::write(&b, "00".repeat(32) + "\n").unwrap();
        assert!(Key::read(&b).is_ok());
        std::fs::write(&b, "short").unwrap();
        assert!(Key::read(&b).unwrap_err().contains("32 random bytes"));
    }

    #[test]
    fn deserializes_the_clear_text() {
        let s: Secret = serde_json::from_str("\"pw\"").unwrap();
        assert_eq!(s.expose(), "pw");
    }
}
