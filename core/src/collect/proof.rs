//! Identity tokens, and the proof level the collector records on each browser event.
//!
//! A site's backend signs the user ID it has authenticated with a secret it shares with Seam
//! (`IDENTITY_SECRET`), the way Intercom's and Customer.io's identity verification work. The wire
//! format is fixed so any language can produce it:
//!
//! ```text
//! context.seam.identityToken = "v1.<expires unix seconds>.<hex HMAC-SHA256(secret, "<userId>.<expires>")>"
//! ```
//!
//! [`Decoded::prove`] checks the token of every event from a browser source and records the
//! outcome as `context.seam.identity` ([`Proof`]), which decides what the identity graph believes
//! (see [`crate::identity`]). The token itself is never stored.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::collect::auth::constant_time_eq;
use crate::collect::ingest::{Decoded, Outcome};
use crate::collect::source::Source;
use crate::format::encode::hex;
use crate::format::time::DAY_MS;
use crate::identity::{Proof, PROOF_FIELD};

/// Where a client puts the token (in `context.seam`).
pub const TOKEN_FIELD: &str = "identityToken";
/// Where the collector notes why a token was not accepted (in `context.seam`).
pub const TOKEN_ERROR_FIELD: &str = "identityError";
const VERSION: &str = "v1";
/// A token is `v1.` + at most 12 digits + `.` + 64 hex digits.
const MAX_TOKEN_BYTES: usize = 96;

/// Why an identity token was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not `v1.<expires>.<64 hex digits>`.
    #[error("the identity token is not in the v1.<expires>.<hex HMAC> format")]
    Malformed,
    /// Its expiry has passed.
    #[error("the identity token has expired")]
    Expired,
    /// It was not made for this user ID with this deployment's secret.
    #[error("the identity token does not verify this user ID")]
    Mismatch,
    /// A token came with an event that has no user ID.
    #[error("an identity token needs a userId")]
    NoUserId,
    /// The deployment has no `IDENTITY_SECRET`, so no token can verify.
    #[error("identity verification is not configured")]
    NotConfigured,
}

impl TokenError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Malformed => "malformed_identity_token",
            Self::Expired => "expired_identity_token",
            Self::Mismatch => "invalid_identity_token",
            Self::NoUserId => "identity_token_without_user_id",
            Self::NotConfigured => "identity_verification_off",
        }
    }
}

/// HMAC-SHA256 (RFC 2104).
pub(crate) fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut block = [0u8; 64];
    if key.len() > block.len() {
        let digest = Sha256::digest(key);
        block
            .iter_mut()
            .zip(digest.iter())
            .for_each(|(b, k)| *b = *k);
    } else {
        block.iter_mut().zip(key).for_each(|(b, k)| *b = *k);
    }
    let pad = |byte: u8| block.map(|b| b ^ byte);
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

/// The token for `user_id` valid until `expires` (unix seconds).
pub fn sign(secret: &[u8], user_id: &str, expires: i64) -> String {
    let mac = hmac_sha256(secret, format!("{user_id}.{expires}").as_bytes());
    format!("{VERSION}.{expires}.{}", hex(&mac))
}

/// Checks that `token` was made for `user_id` with `secret` and has not expired at `now_ms`.
pub fn verify(token: &str, user_id: &str, secret: &[u8], now_ms: i64) -> Result<(), TokenError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::Malformed);
    }
    let mut parts = token.split('.');
    let (Some(VERSION), Some(expires), Some(mac), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    let well_formed = !expires.is_empty()
        && expires.len() <= 12
        && expires.bytes().all(|b| b.is_ascii_digit())
        && mac.len() == 64
        && mac.bytes().all(|b| b.is_ascii_hexdigit());
    let expiry: i64 = match expires.parse() {
        Ok(e) if well_formed => e,
        _ => return Err(TokenError::Malformed),
    };
    let expected = hex(&hmac_sha256(
        secret,
        format!("{user_id}.{expires}").as_bytes(),
    ));
    if !constant_time_eq(expected.as_bytes(), mac.to_ascii_lowercase().as_bytes()) {
        return Err(TokenError::Mismatch);
    }
    if expiry.saturating_mul(1000) <= now_ms {
        return Err(TokenError::Expired);
    }
    Ok(())
}

/// How far past its receipt a browser may date an event (a clock running ahead, or a queue
/// flushed across a time change).
pub const MAX_FUTURE_MS: i64 = 5 * 60 * 1000;

impl Decoded {
    /// Bounds what a browser's clock can claim: unless the source is trusted, each event's time
    /// (which orders the identity graph and decides last-write-wins) is kept between the source's
    /// dedup window before its receipt and [`MAX_FUTURE_MS`] after it. The body keeps the time as
    /// sent. Server sources may backfill any history.
    pub fn clamp_clock(mut self, source: &Source) -> Self {
        if source.is_trusted() {
            return self;
        }
        let window = i64::from(source.dedup_window_days) * DAY_MS;
        for outcome in &mut self.outcomes {
            if let Outcome::Valid(event) = outcome {
                let received = event.received_at_ms;
                event.timestamp_ms = event.timestamp_ms.clamp(
                    received.saturating_sub(window),
                    received.saturating_add(MAX_FUTURE_MS),
                );
            }
        }
        self
    }

    /// Records on every valid event how far its identity is proven (`context.seam.identity`),
    /// checking identity tokens against `secret` at `now_ms`. Tokens are removed, and so is any
    /// proof marker or, from browsers, cookie ID a client sent: only the collector writes those.
    pub fn prove(mut self, source: &Source, secret: Option<&[u8]>, now_ms: i64) -> Self {
        for outcome in &mut self.outcomes {
            let Outcome::Valid(event) = outcome else {
                continue;
            };
            if source.is_trusted() {
                if let Some(seam) = existing_seam(&mut event.body) {
                    for field in [TOKEN_FIELD, PROOF_FIELD, TOKEN_ERROR_FIELD] {
                        seam.remove(field);
                    }
                }
                continue;
            }
            let user_id = event.user_id.clone();
            let Some(seam) = seam_of(&mut event.body) else {
                continue;
            };
            let token = seam.remove(TOKEN_FIELD);
            for field in [PROOF_FIELD, TOKEN_ERROR_FIELD, "cookieId"] {
                seam.remove(field);
            }
            let checked = match (token, user_id, secret) {
                (None, _, _) => None,
                (Some(Value::String(t)), Some(u), Some(secret)) => {
                    Some(verify(&t, &u, secret, now_ms))
                }
                (Some(Value::String(_)), None, _) => Some(Err(TokenError::NoUserId)),
                (Some(Value::String(_)), Some(_), None) => Some(Err(TokenError::NotConfigured)),
                (Some(_), _, _) => Some(Err(TokenError::Malformed)),
            };
            let proof = match checked {
                Some(Ok(())) => Proof::Verified,
                _ => Proof::Claimed,
            };
            if let Some(marker) = proof.marker() {
                seam.insert(PROOF_FIELD.into(), Value::from(marker));
            }
            if let Some(Err(e)) = checked {
                seam.insert(TOKEN_ERROR_FIELD.into(), Value::from(e.code()));
            }
        }
        self
    }
}

fn existing_seam(body: &mut Map<String, Value>) -> Option<&mut Map<String, Value>> {
    body.get_mut("context")?.get_mut("seam")?.as_object_mut()
}

/// `context.seam` of an event body, created when missing (a non-object one is replaced: only
/// the collector's fields live there).
pub(crate) fn seam_of(body: &mut Map<String, Value>) -> Option<&mut Map<String, Value>> {
    let context = body
        .entry("context")
        .or_insert_with(|| Value::Object(Map::new()));
    // `null` or any other non-object: the marker must be written whatever the client sent, or
    // an unmarked event would read as trusted.
    if !context.is_object() {
        *context = Value::Object(Map::new());
    }
    let context = context.as_object_mut()?;
    let seam = context
        .entry("seam")
        .or_insert_with(|| Value::Object(Map::new()));
    if !seam.is_object() {
        *seam = Value::Object(Map::new());
    }
    seam.as_object_mut()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::ingest::decode;
    use crate::collect::source::parse_source;
    use crate::identity::{identifiers_of, IdType, Rules};
    use serde_json::json;

    const SECRET: &[u8] = b"identity-secret";
    const NOW_MS: i64 = 1_767_225_600_000;

    fn source(extra: Value) -> Source {
        let mut raw = json!({"id": "site"});
        if let (Some(raw), Some(extra)) = (raw.as_object_mut(), extra.as_object()) {
            raw.extend(extra.clone());
        }
        parse_source("key", &raw).unwrap()
    }

    fn proven(body: Value, source: &Source) -> Vec<String> {
        let raw = serde_json::to_vec(&json!({"batch": [body]})).unwrap();
        let decoded = decode(&raw, None, NOW_MS, || "generated".into())
            .unwrap()
            .prove(source, Some(SECRET), NOW_MS);
        let event = decoded.valid().next().unwrap();
        identifiers_of(event, &Rules::default())
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    fn identify(token: Option<String>) -> Value {
        json!({
            "type": "identify", "userId": "ann", "anonymousId": "a1",
            "traits": {"email": "ann@shop.example"},
            "context": {"seam": {"identityToken": token, "cookieId": "forged"}}
        })
    }

    #[test]
    fn a_browsers_clock_moves_nothing_outside_the_window() {
        let raw = serde_json::to_vec(&json!({"batch": [
            {"type": "track", "event": "Old", "anonymousId": "a1", "messageId": "m1", "timestamp": "2001-01-01T00:00:00Z"},
            {"type": "track", "event": "Future", "anonymousId": "a1", "messageId": "m2", "timestamp": "9999-01-01T00:00:00Z"},
            {"type": "track", "event": "Recent", "anonymousId": "a1", "messageId": "m3", "timestamp": "2025-12-31T23:00:00Z"}
        ]}))
        .unwrap();
        let decode_now = || decode(&raw, None, NOW_MS, || "generated".into()).unwrap();
        let times = |d: Decoded| d.valid().map(|e| e.timestamp_ms).collect::<Vec<_>>();
        let browser = times(decode_now().clamp_clock(&source(json!({}))));
        assert_eq!(
            browser,
            [
                NOW_MS - 7 * DAY_MS,
                NOW_MS + MAX_FUTURE_MS,
                NOW_MS - 3_600_000
            ]
        );
        let server = times(decode_now().clamp_clock(&source(json!({"kind": "server"}))));
        assert_eq!(server[0], 978_307_200_000, "a server may backfill history");
    }

    #[test]
    fn hmac_matches_rfc_4231() {
        assert_eq!(
            hex(&hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let long_key = [0xaa_u8; 131];
        assert_eq!(
            hex(&hmac_sha256(
                &long_key,
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn a_token_verifies_only_its_own_user_until_it_expires() {
        let expires = NOW_MS / 1000 + 60;
        let token = sign(SECRET, "ann", expires);
        assert_eq!(verify(&token, "ann", SECRET, NOW_MS), Ok(()));
        assert_eq!(
            verify(&token, "bob", SECRET, NOW_MS),
            Err(TokenError::Mismatch)
        );
        assert_eq!(
            verify(&token, "ann", b"other secret", NOW_MS),
            Err(TokenError::Mismatch)
        );
        assert_eq!(
            verify(&token, "ann", SECRET, expires * 1000),
            Err(TokenError::Expired)
        );
        assert_eq!(
            verify(
                &token.to_uppercase().replace("V1", "v1"),
                "ann",
                SECRET,
                NOW_MS
            ),
            Ok(())
        );
        for bad in [
            "",
            "v1",
            "v2.1.00",
            "v1..ab",
            "v1.-5.ab",
            &format!("{token}.x"),
        ] {
            assert_eq!(
                verify(bad, "ann", SECRET, NOW_MS),
                Err(TokenError::Malformed)
            );
        }
    }

    #[test]
    fn browser_claims_without_a_token_are_not_identifiers() {
        let ids = proven(identify(None), &source(json!({})));
        assert_eq!(ids, ["anonymous_id:a1"]);
    }

    #[test]
    fn a_valid_token_proves_the_user_id_but_not_the_email() {
        let token = sign(SECRET, "ann", NOW_MS / 1000 + 60);
        let ids = proven(identify(Some(token)), &source(json!({})));
        assert_eq!(ids, ["user_id:ann", "anonymous_id:a1"]);
    }

    #[test]
    fn a_token_for_someone_else_proves_nothing() {
        let token = sign(SECRET, "bob", NOW_MS / 1000 + 60);
        let ids = proven(identify(Some(token)), &source(json!({})));
        assert_eq!(ids, ["anonymous_id:a1"]);
    }

    #[test]
    fn trusted_sources_are_believed_as_sent() {
        let trusting = source(json!({"identity": "trust-browser"}));
        let ids = proven(identify(None), &trusting);
        assert_eq!(
            ids,
            [
                "user_id:ann",
                "email:ann@shop.example",
                "cookie_id:forged",
                "anonymous_id:a1"
            ]
        );
        let server = source(json!({"kind": "server"}));
        assert_eq!(proven(identify(None), &server), ids);
    }

    #[test]
    fn a_null_or_odd_context_cannot_skip_the_marker() {
        for context in [
            json!(null),
            json!({"seam": null}),
            json!({"seam": "trusted"}),
        ] {
            let body = json!({"type": "identify", "userId": "victim", "anonymousId": "a1", "context": context});
            assert_eq!(
                proven(body, &source(json!({}))),
                ["anonymous_id:a1"],
                "{context}"
            );
        }
    }

    #[test]
    fn the_token_is_not_stored_and_its_failure_is_noted() {
        let raw = serde_json::to_vec(&identify(Some("v1.1.00".into()))).unwrap();
        let decoded = decode(
            &raw,
            Some(crate::collect::event::EventType::Identify),
            NOW_MS,
            || "generated".into(),
        )
        .unwrap()
        .prove(&source(json!({})), Some(SECRET), NOW_MS);
        let event = decoded.valid().next().unwrap();
        let seam = &event.body["context"]["seam"];
        assert_eq!(seam.get(TOKEN_FIELD), None);
        assert_eq!(seam.get("cookieId"), None);
        assert_eq!(seam[PROOF_FIELD], json!("claimed"));
        assert_eq!(seam[TOKEN_ERROR_FIELD], json!("malformed_identity_token"));
        assert_eq!(Proof::of(event), Proof::Claimed);
        assert!(identifiers_of(event, &Rules::default())
            .iter()
            .all(|id| id.kind != IdType::UserId));
    }
}
