//! Public input links (`service.publicInputLinks: true`): each pending input request gets
//! a token that answers it without a bearer token, once, through
//! `POST /v1/inputs/resolve/{token}` — the link a backend puts in an approval email.
//!
//! A token is the request's id (its 16 UUID bytes) followed by the first 16 bytes of
//! HMAC-SHA256 of that id under the server's key, base64url without padding (43
//! characters): unguessable without the key (128 bits), checked without any state, and the
//! same across restarts while the key is. The key is 32 random bytes kept in
//! `<data-dir>/input-links.key` (created on first use, mode 0600), so links outlive a
//! restart; without a data directory it lives as long as the process. A token works once:
//! the request it names must still be pending.

use std::io::Write;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The file of the key, in the data directory.
pub const KEY_FILE: &str = "input-links.key";

/// Bytes of the HMAC a token carries.
const TAG: usize = 16;

/// Makes and checks public input links.
#[derive(Clone)]
pub struct InputLinks {
    key: [u8; 32],
}

impl std::fmt::Debug for InputLinks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InputLinks { key: <hidden> }")
    }
}

impl InputLinks {
    /// Links under `key`.
    pub fn with_key(key: [u8; 32]) -> InputLinks {
        InputLinks { key }
    }

    /// The key kept in `dir` (created, with fresh random bytes, when absent); a fresh one
    /// for this process when there is no directory.
    ///
    /// # Errors
    /// When the key file cannot be read or written, or is not 32 bytes.
    pub fn open(dir: Option<&Path>) -> std::io::Result<InputLinks> {
        let Some(dir) = dir else {
            return Ok(InputLinks::with_key(fresh_key()?));
        };
        let path = dir.join(KEY_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => {
                let key: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!(
                            "{} holds {} bytes, not the 32 of a key: remove it to start a new key (old links stop working)",
                            path.display(),
                            bytes.len()
                        ),
                    )
                })?;
                Ok(InputLinks::with_key(key))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(dir)?;
                let key = fresh_key()?;
                let mut file = std::fs::OpenOptions::new();
                file.write(true).create_new(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut file, 0o600);
                let mut file = file.open(&path)?;
                file.write_all(&key)?;
                file.sync_all()?;
                Ok(InputLinks::with_key(key))
            }
            Err(e) => Err(e),
        }
    }

    /// The token of request `request_id`; `None` when the id is not a UUID (every id the
    /// engine makes is one).
    pub fn token(&self, request_id: &str) -> Option<String> {
        let id = uuid::Uuid::parse_str(request_id).ok()?;
        let mut bytes = Vec::with_capacity(16 + TAG);
        bytes.extend_from_slice(id.as_bytes());
        bytes.extend_from_slice(&self.tag(id.as_bytes())[..TAG]);
        Some(URL_SAFE_NO_PAD.encode(bytes))
    }

    /// The request `token` names, when it is one of this key's.
    pub fn request_of(&self, token: &str) -> Option<String> {
        let bytes = URL_SAFE_NO_PAD.decode(token).ok()?;
        if bytes.len() != 16 + TAG {
            return None;
        }
        let (id, tag) = bytes.split_at(16);
        let mut mac = self.mac();
        mac.update(id);
        // Constant-time comparison of the truncated tag.
        mac.verify_truncated_left(tag).ok()?;
        let id = uuid::Uuid::from_slice(id).ok()?;
        Some(id.to_string())
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC takes a key of any length.
        Hmac::<Sha256>::new_from_slice(&self.key).expect("an HMAC key of 32 bytes")
    }

    fn tag(&self, id: &[u8]) -> Vec<u8> {
        let mut mac = self.mac();
        mac.update(id);
        mac.finalize().into_bytes().to_vec()
    }
}

fn fresh_key() -> std::io::Result<[u8; 32]> {
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).map_err(|e| std::io::Error::other(format!("no randomness: {e}")))?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0b7f2a9e-5f2c-5a8b-9a8e-3f1d2c4b5a69";

    #[test]
    fn a_token_names_its_request_under_its_key_only() {
        let links = InputLinks::with_key([7; 32]);
        let token = links.token(ID).expect("a UUID");
        assert_eq!(token.len(), 43);
        assert_eq!(links.request_of(&token).as_deref(), Some(ID));
        assert_eq!(InputLinks::with_key([8; 32]).request_of(&token), None);
        let mut tampered = token.clone().into_bytes();
        tampered[40] = if tampered[40] == b'A' { b'B' } else { b'A' };
        assert_eq!(
            links.request_of(&String::from_utf8(tampered).unwrap()),
            None
        );
        assert_eq!(links.request_of("not-a-token"), None);
        assert_eq!(links.token("not-a-uuid"), None);
    }

    #[test]
    fn the_key_is_kept_in_the_data_directory() {
        let dir = std::env::temp_dir().join(format!("shipsec-links-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let first = InputLinks::open(Some(&dir)).expect("created");
        let again = InputLinks::open(Some(&dir)).expect("read");
        assert_eq!(first.token(ID), again.token(ID));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(dir.join(KEY_FILE), b"short").unwrap();
        assert!(InputLinks::open(Some(&dir)).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
