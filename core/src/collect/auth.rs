//! Write-key authentication, as analytics clients send it: `writeKey` in the body, or HTTP Basic
//! with the write key as the user name and an empty password.

/// Why a request could not be tied to a source. Each variant has a stable [`AuthError::code`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No write key in the body or the `Authorization` header.
    #[error("a write key is required (writeKey in the body or HTTP Basic auth)")]
    MissingWriteKey,
    /// A write key that names no source.
    #[error("the write key is not valid")]
    UnknownWriteKey,
}

impl AuthError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::MissingWriteKey => "missing_write_key",
            Self::UnknownWriteKey => "invalid_write_key",
        }
    }
}

/// The user name of an `Authorization: Basic <base64(user:password)>` header.
pub fn basic_user(header: &str) -> Option<String> {
    let (scheme, encoded) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(base64_decode(encoded.trim())?).ok()?;
    let user = decoded.split_once(':').map_or(decoded.as_str(), |(u, _)| u);
    (!user.is_empty()).then(|| user.to_owned())
}

/// Standard base64 with padding (for HTTP Basic credentials Seam sends).
pub fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk.first().copied().unwrap_or(0),
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                let index = ((n >> (18 - 6 * i)) & 63) as usize;
                out.push(char::from(ALPHABET.get(index).copied().unwrap_or(b'A')));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Standard base64 (padding optional). `None` on any invalid character.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.trim_end_matches('=').bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// Compares without an early exit on the first differing byte.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_encodes_what_it_decodes() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("AC123:tok", "QUMxMjM6dG9r"),
        ] {
            assert_eq!(base64_encode(plain.as_bytes()), encoded);
            assert_eq!(base64_decode(encoded).as_deref(), Some(plain.as_bytes()));
        }
    }

    #[test]
    fn reads_write_key_from_basic_auth() {
        // base64("seam_dev_write_key:")
        assert_eq!(
            basic_user("Basic c2VhbV9kZXZfd3JpdGVfa2V5Og==").as_deref(),
            Some("seam_dev_write_key")
        );
        assert_eq!(basic_user("basic a2V5").as_deref(), Some("key"));
        assert_eq!(basic_user("Bearer abc"), None);
        assert_eq!(basic_user("Basic !!!"), None);
        assert_eq!(basic_user("Basic Og=="), None);
    }
}
