//! Destination secrets at rest: AES-256-GCM under a key derived from the `SECRETS_KEY` Worker
//! secret, so a D1 export, a backup or a KV listing holds no usable credential. Each value is
//! bound to its destination and field, so a sealed value cannot be moved to another one.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use serde_json::Value;

use super::destination::SECRET_FIELDS;
use crate::collect::proof::hmac_sha256;
use crate::format::encode::hex;

/// How a sealed value starts.
pub const PREFIX: &str = "sealed:v1:";
/// What the admin API shows instead of a secret; sent back unchanged, it keeps the stored one.
pub const MASK: &str = "********";

/// Why secrets could not be sealed or opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// No `SECRETS_KEY` is configured (or it is shorter than 16 bytes).
    #[error("destination secrets need the SECRETS_KEY secret (at least 16 bytes)")]
    NoKey,
    /// A secret was given as the mask with no stored value behind it.
    #[error("destination {0}: settings.{1} is required (\"********\" keeps a stored value only)")]
    NothingStored(String, String),
    /// A secret was given as the mask while the URL it is sent to changed: whoever may edit a
    /// destination could otherwise send its key to a host of their own.
    #[error("destination {0}: settings.{1} must be sent again when the URL changes")]
    UrlChanged(String, String),
    /// A stored value does not open with this key (a changed key, or tampering).
    #[error("a stored destination secret could not be opened")]
    Unreadable,
}

impl SealError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            SealError::NoKey => "secrets_key_missing",
            SealError::NothingStored(..) | SealError::UrlChanged(..) => {
                "invalid_destination_config"
            }
            SealError::Unreadable => "secret_unreadable",
        }
    }
}

/// The sealing key for the `SECRETS_KEY` secret.
pub fn key(secret: &[u8]) -> Result<[u8; 32], SealError> {
    if secret.len() < 16 {
        return Err(SealError::NoKey);
    }
    Ok(hmac_sha256(secret, b"seam/destination-secrets/v1"))
}

/// `value` sealed for `name`'s `field` with a fresh 12-byte `nonce`.
pub fn seal(key: &[u8; 32], nonce: [u8; 12], name: &str, field: &str, value: &str) -> String {
    let aad = format!("{name}/{field}");
    let cipher = Aes256Gcm::new(key.into());
    // Encryption only fails for inputs of gigabytes.
    let sealed = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: value.as_bytes(),
                aad: aad.as_bytes(),
            },
        )
        .unwrap_or_default();
    format!("{PREFIX}{}{}", hex(&nonce), hex(&sealed))
}

/// The value sealed for `name`'s `field`.
pub fn open(key: &[u8; 32], name: &str, field: &str, sealed: &str) -> Result<String, SealError> {
    let bytes = sealed
        .strip_prefix(PREFIX)
        .and_then(unhex)
        .filter(|b| b.len() > 12)
        .ok_or(SealError::Unreadable)?;
    let (nonce, ciphertext) = bytes.split_at(12);
    let aad = format!("{name}/{field}");
    let plain = Aes256Gcm::new(key.into())
        .decrypt(
            Nonce::from_slice(nonce),
            Payload {
                msg: ciphertext,
                aad: aad.as_bytes(),
            },
        )
        .map_err(|_| SealError::Unreadable)?;
    String::from_utf8(plain).map_err(|_| SealError::Unreadable)
}

/// A destination entry as stored: each secret settings field sealed. A field sent as
/// [`MASK`] keeps the value `previous` (the stored entry) holds.
pub fn seal_entry(
    key: &[u8; 32],
    name: &str,
    entry: &Value,
    previous: Option<&Value>,
    mut nonce: impl FnMut() -> [u8; 12],
) -> Result<Value, SealError> {
    let mut out = entry.clone();
    if let Some(Value::Object(settings)) = out.get_mut("settings") {
        for field in SECRET_FIELDS {
            let Some(Value::String(value)) = settings.get(field) else {
                continue;
            };
            let sealed = if value == MASK {
                let url_of = |entry: Option<&Value>, key: &str| {
                    entry
                        .and_then(|e| e.get("settings"))
                        .and_then(|s| s.get(key))
                        .cloned()
                };
                if previous.is_some()
                    && ["url", "baseUrl"]
                        .iter()
                        .any(|k| url_of(Some(entry), k) != url_of(previous, k))
                {
                    return Err(SealError::UrlChanged(name.into(), field.into()));
                }
                previous
                    .and_then(|p| p.get("settings"))
                    .and_then(|s| s.get(field))
                    .and_then(Value::as_str)
                    .filter(|s| s.starts_with(PREFIX))
                    .ok_or_else(|| SealError::NothingStored(name.into(), field.into()))?
                    .to_owned()
            } else {
                seal(key, nonce(), name, field, value)
            };
            settings.insert(field.into(), Value::String(sealed));
        }
    }
    Ok(out)
}

/// A stored entry with its secrets opened, ready to parse. Values that are not sealed (the
/// committed file's) pass as they are.
pub fn open_entry(key: Option<&[u8; 32]>, name: &str, entry: &Value) -> Result<Value, SealError> {
    let mut out = entry.clone();
    if let Some(Value::Object(settings)) = out.get_mut("settings") {
        for field in SECRET_FIELDS {
            let Some(Value::String(value)) = settings.get(field) else {
                continue;
            };
            if value.starts_with(PREFIX) {
                let key = key.ok_or(SealError::NoKey)?;
                let opened = open(key, name, field, value)?;
                settings.insert(field.into(), Value::String(opened));
            }
        }
    }
    Ok(out)
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn k() -> [u8; 32] {
        key(b"0123456789abcdef-test").unwrap()
    }

    #[test]
    fn seals_and_opens_a_secret_bound_to_its_field() {
        let sealed = seal(&k(), [7; 12], "hooks", "secret", "whsec_abc");
        assert!(sealed.starts_with(PREFIX));
        assert!(!sealed.contains("whsec_abc"));
        assert_eq!(
            open(&k(), "hooks", "secret", &sealed).as_deref(),
            Ok("whsec_abc")
        );
        assert_eq!(
            open(&k(), "other", "secret", &sealed),
            Err(SealError::Unreadable),
            "moved to another destination"
        );
        let other_key = key(b"another-key-of-16+bytes").unwrap();
        assert_eq!(
            open(&other_key, "hooks", "secret", &sealed),
            Err(SealError::Unreadable)
        );
        let last = sealed.chars().last().unwrap();
        let tampered = format!(
            "{}{}",
            &sealed[..sealed.len() - 1],
            if last == '0' { '1' } else { '0' }
        );
        assert_eq!(
            open(&k(), "hooks", "secret", &tampered),
            Err(SealError::Unreadable)
        );
        assert_eq!(key(b"short"), Err(SealError::NoKey));
    }

    #[test]
    fn an_entry_keeps_a_masked_secret_and_seals_a_new_one() {
        let mut n = 0u8;
        let mut nonce = || {
            n += 1;
            [n; 12]
        };
        let first = json!({"type": "webhook", "settings": {"url": "https://h.example", "secret": "s1-0123456789abcdef"}});
        let stored = seal_entry(&k(), "hooks", &first, None, &mut nonce).unwrap();
        assert!(!stored.to_string().contains("s1-0123456789abcdef"));
        assert_eq!(stored["settings"]["url"], json!("https://h.example"));
        let moved =
            json!({"type": "webhook", "settings": {"url": "https://evil.example", "secret": MASK}});
        assert_eq!(
            seal_entry(&k(), "hooks", &moved, Some(&stored), &mut nonce),
            Err(SealError::UrlChanged("hooks".into(), "secret".into())),
            "a kept secret never follows a new URL"
        );
        let edit = json!({"type": "webhook", "settings": {"url": "https://h.example", "secret": MASK,
                                                          "purpose": "necessary"}});
        let stored2 = seal_entry(&k(), "hooks", &edit, Some(&stored), &mut nonce).unwrap();
        assert_eq!(stored2["settings"]["secret"], stored["settings"]["secret"]);
        let opened = open_entry(Some(&k()), "hooks", &stored2).unwrap();
        assert_eq!(opened["settings"]["secret"], json!("s1-0123456789abcdef"));
        assert_eq!(opened["settings"]["purpose"], json!("necessary"));
        assert!(matches!(
            seal_entry(&k(), "new", &edit, None, &mut nonce),
            Err(SealError::NothingStored(..))
        ));
        assert_eq!(
            open_entry(None, "hooks", &stored2),
            Err(SealError::NoKey),
            "no key, no secrets"
        );
    }
}
