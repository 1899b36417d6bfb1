//! Secrets: API keys (shown once, stored only as a SHA-256 hash), webhook signing secrets and
//! webhook callback API keys (stored sealed with XChaCha20-Poly1305 under the master key).
//!
//! The master key comes from `EASEL_MASTER_KEY` (base64 of 32 bytes) or from `master.key` in the
//! data directory, which Easel creates with mode 0600 on first start. Each sealed value is bound to
//! the row and purpose it belongs to (associated data), so a sealed value copied to another row does
//! not open.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use sha2::{Digest, Sha256};

use crate::ids::ApiKeyId;

/// Format version of sealed values: `1 || nonce (24 bytes) || ciphertext and tag`.
const SEALED_V1: u8 = 1;
const NONCE_LEN: usize = 24;
pub const MASTER_KEY_FILE: &str = "master.key";

#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("the master key must be base64 of exactly 32 bytes")]
    BadMasterKey,
    #[error("master key file {path}: {source}")]
    KeyFile { path: PathBuf, source: std::io::Error },
    #[error("a sealed secret does not open with this master key (wrong EASEL_MASTER_KEY or master.key?)")]
    CannotOpen,
}

/// The key that seals secrets at rest. Its `Debug` output never shows it.
#[derive(Clone)]
pub struct MasterKey([u8; 32]);

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey([redacted])")
    }
}

impl MasterKey {
    pub fn from_base64(text: &str) -> Result<MasterKey, SecretsError> {
        let bytes = BASE64.decode(text.trim()).map_err(|_| SecretsError::BadMasterKey)?;
        let key: [u8; 32] = bytes.try_into().map_err(|_| SecretsError::BadMasterKey)?;
        Ok(MasterKey(key))
    }

    /// A key for one `purpose`, derived from this one (HMAC-SHA256), so no two uses share a key.
    pub fn derive(&self, purpose: &[u8]) -> [u8; 32] {
        use hmac::{Hmac, Mac};
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC takes keys of any length");
        mac.update(purpose);
        mac.finalize().into_bytes().into()
    }

    /// `configured` (from `EASEL_MASTER_KEY`) if set; otherwise the key file in `data_dir`,
    /// created (mode 0600) if it does not exist yet.
    pub fn load(configured: Option<&str>, data_dir: &Path) -> Result<MasterKey, SecretsError> {
        if let Some(text) = configured {
            return MasterKey::from_base64(text);
        }
        let path = data_dir.join(MASTER_KEY_FILE);
        let key_file_error = |source| SecretsError::KeyFile { path: path.clone(), source };
        match std::fs::read_to_string(&path) {
            Ok(text) => MasterKey::from_base64(&text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(data_dir).map_err(key_file_error)?;
                let key = MasterKey(random_bytes());
                // Written whole under a name of its own, then published with a hard link, which
                // fails if the file exists: a process starting at the same moment reads either no
                // file or the whole key, never a file still being written.
                let draft = data_dir.join(format!(".{MASTER_KEY_FILE}.{}", uuid::Uuid::new_v4().simple()));
                let mut options = std::fs::OpenOptions::new();
                options.write(true).create_new(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
                let written = options.open(&draft).and_then(|mut file| {
                    writeln!(file, "{}", BASE64.encode(key.0))?;
                    file.sync_all()
                });
                let published = written.and_then(|()| std::fs::hard_link(&draft, &path));
                let _ = std::fs::remove_file(&draft);
                match published {
                    Ok(()) => Ok(key),
                    // Another process published one first: use theirs.
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        let text = std::fs::read_to_string(&path).map_err(key_file_error)?;
                        MasterKey::from_base64(&text)
                    }
                    Err(e) => Err(key_file_error(e)),
                }
            }
            Err(e) => Err(key_file_error(e)),
        }
    }

    pub fn seal(&self, plaintext: &[u8], context: &[u8]) -> Vec<u8> {
        let cipher = XChaCha20Poly1305::new((&self.0).into());
        let nonce: [u8; NONCE_LEN] = random_bytes();
        let ciphertext = cipher
            .encrypt(XNonce::from_slice(&nonce), Payload { msg: plaintext, aad: context })
            .expect("XChaCha20-Poly1305 encryption does not fail for in-memory inputs");
        let mut sealed = Vec::with_capacity(1 + NONCE_LEN + ciphertext.len());
        sealed.push(SEALED_V1);
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&ciphertext);
        sealed
    }

    pub fn open(&self, sealed: &[u8], context: &[u8]) -> Result<Vec<u8>, SecretsError> {
        if sealed.len() < 1 + NONCE_LEN || sealed[0] != SEALED_V1 {
            return Err(SecretsError::CannotOpen);
        }
        let cipher = XChaCha20Poly1305::new((&self.0).into());
        let (nonce, ciphertext) = sealed[1..].split_at(NONCE_LEN);
        cipher
            .decrypt(XNonce::from_slice(nonce), Payload { msg: ciphertext, aad: context })
            .map_err(|_| SecretsError::CannotOpen)
    }
}

pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).expect("the operating system's random number generator is available");
    bytes
}

/// A new API key: a random UUID string, like Leonardo's keys.
pub fn new_api_key() -> String {
    uuid::Builder::from_random_bytes(random_bytes()).into_uuid().hyphenated().to_string()
}

/// What a listing shows of an API key: its last four characters (of 122 random bits, 16 are
/// shown), enough for its owner to tell keys apart.
pub fn key_hint(key: &str) -> String {
    let chars: Vec<char> = key.trim().chars().collect();
    chars[chars.len().saturating_sub(4)..].iter().collect()
}

/// What the database stores of an API key: its SHA-256, hex. Keys are 122 random bits, so a fast
/// hash is enough; a slow password hash would only slow every request down.
pub fn hash_api_key(key: &str) -> String {
    let digest = Sha256::digest(key.trim().to_ascii_lowercase().as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// A new Standard Webhooks signing secret: `whsec_` + base64 of 32 random bytes.
pub fn new_signing_secret() -> String {
    format!("whsec_{}", BASE64.encode(random_bytes::<32>()))
}

/// Hides a secret in listings and payloads that must show that it exists without revealing it:
/// long secrets keep their last four characters (`********wxyz`) so their owner can tell them
/// apart; short ones show nothing.
pub fn mask(secret: &str) -> String {
    let chars: Vec<char> = secret.chars().collect();
    if chars.len() >= 16 {
        let tail: String = chars[chars.len() - 4..].iter().collect();
        format!("********{tail}")
    } else {
        "********".to_string()
    }
}

/// What a key's webhook secrets are bound to when sealed.
pub fn seal_context(key: ApiKeyId, purpose: &str) -> Vec<u8> {
    format!("api_key:{key}:{purpose}").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn processes_starting_together_on_a_fresh_data_dir_all_load_the_one_key_created() {
        for _ in 0..100 {
            let dir = tempfile::tempdir().unwrap();
            let keys: Vec<[u8; 32]> = std::thread::scope(|scope| {
                let loads: Vec<_> =
                    (0..8).map(|_| scope.spawn(|| MasterKey::load(None, dir.path()).map(|key| key.0))).collect();
                loads.into_iter().map(|load| load.join().unwrap().expect("the key loads")).collect()
            });
            assert!(keys.iter().all(|key| *key == keys[0]), "every process got the same key");
            assert_eq!(MasterKey::load(None, dir.path()).unwrap().0, keys[0], "the file holds it");
        }
    }

    #[test]
    fn sealed_secrets_open_only_with_the_same_key_and_context() {
        let key = MasterKey(random_bytes());
        let sealed = key.seal(b"abcd", b"api_key:1:webhook");
        assert!(!sealed.windows(4).any(|w| w == b"abcd"));
        assert_eq!(key.open(&sealed, b"api_key:1:webhook").unwrap(), b"abcd");
        assert!(key.open(&sealed, b"api_key:2:webhook").is_err());
        assert!(MasterKey(random_bytes()).open(&sealed, b"api_key:1:webhook").is_err());
    }

    #[test]
    fn key_file_is_created_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let first = MasterKey::load(None, dir.path()).unwrap();
        let second = MasterKey::load(None, dir.path()).unwrap();
        assert_eq!(first.0, second.0);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(MASTER_KEY_FILE)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(format!("{first:?}").contains("redacted"));
    }

    #[test]
    fn master_key_must_be_32_bytes_of_base64() {
        assert!(MasterKey::from_base64(&BASE64.encode([7u8; 32])).is_ok());
        assert!(MasterKey::from_base64(&BASE64.encode([7u8; 16])).is_err());
        assert!(MasterKey::from_base64("not base64!").is_err());
    }

    #[test]
    fn api_keys_are_uuids_and_hash_case_insensitively() {
        let key = new_api_key();
        assert!(uuid::Uuid::parse_str(&key).is_ok());
        assert_eq!(hash_api_key(&key), hash_api_key(&key.to_uppercase()));
        assert_ne!(hash_api_key(&key), hash_api_key(&new_api_key()));
    }

    #[test]
    fn signing_secrets_follow_standard_webhooks() {
        let secret = new_signing_secret();
        let raw = BASE64.decode(secret.strip_prefix("whsec_").unwrap()).unwrap();
        assert_eq!(raw.len(), 32);
    }

    #[test]
    fn key_hints_are_the_last_four_characters() {
        assert_eq!(key_hint("b29dfe0f-83b4-4980-a068-2bd9854a33ff"), "33ff");
        assert_eq!(key_hint(" abc "), "abc");
    }

    #[test]
    fn masks_reveal_at_most_the_last_four_characters_of_long_secrets() {
        assert_eq!(mask("abcd"), "********");
        assert_eq!(mask("0123456789abcdefWXYZ"), "********WXYZ");
        assert!(!mask("supersecretvalue").contains("secret"));
    }
}
