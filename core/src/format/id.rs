//! Identifier formats. Randomness is supplied by the caller (`crypto.getRandomValues` in the SDK, getrandom at the edge).

use super::encode::hex_digit;
use alloc::string::String;

/// Formats 16 random bytes as an RFC 4122 version-4 UUID (`xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx`).
pub fn uuid_v4(mut bytes: [u8; 16]) -> String {
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let mut out = String::with_capacity(36);
    for (i, b) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out.push('-');
        }
        out.push(hex_digit(b >> 4));
        out.push(hex_digit(b & 0x0f));
    }
    out
}

/// A message ID in the analytics.js style, `<prefix>-<epochms>-<uuid>`: unique, and sortable by
/// send time when read by a person.
pub fn message_id(prefix: &str, epoch_ms: i64, random: [u8; 16]) -> String {
    let mut out = String::with_capacity(prefix.len() + 52);
    out.push_str(prefix);
    out.push('-');
    crate::format::jsontext::push_integer(&mut out, epoch_ms);
    out.push('-');
    out.push_str(&uuid_v4(random));
    out
}

/// True when `s` looks like a UUID of any version (used to adopt IDs minted elsewhere).
pub fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_has_version_and_variant_bits() {
        let id = uuid_v4([0xff; 16]);
        assert_eq!(id, "ffffffff-ffff-4fff-bfff-ffffffffffff");
        assert!(is_uuid(&id));
        assert_eq!(uuid_v4([0; 16]), "00000000-0000-4000-8000-000000000000");
    }

    #[test]
    fn message_id_embeds_time_and_uuid() {
        let id = message_id("seam", 1_700_000_000_000, [1; 16]);
        assert!(id.starts_with("seam-1700000000000-"));
        assert!(id.len() < 100);
        assert!(is_uuid(&id["seam-1700000000000-".len()..]));
    }

    #[test]
    fn is_uuid_rejects_near_misses() {
        assert!(!is_uuid("ffffffff-ffff-4fff-bfff-fffffffffff"));
        assert!(!is_uuid("ffffffffxffff-4fff-bfff-ffffffffffff"));
        assert!(!is_uuid("gfffffff-ffff-4fff-bfff-ffffffffffff"));
    }
}
