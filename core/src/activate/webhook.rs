//! Webhook: the stored event (Segment spec) as JSON to any HTTPS endpoint, signed the way
//! Stripe and GitHub sign theirs.
//!
//! | header | value |
//! |---|---|
//! | `X-Seam-Signature` | `sha256=` + hex HMAC-SHA256(secret, the raw body) |
//! | `X-Seam-Delivery` | the delivery ID: the same on every retry, to deduplicate on |
//! | `X-Seam-Attempt` | 1, 2, ... |

use super::destination::{DestinationConfigError, Fields};
use super::policy::Purpose;
use super::{HttpRequest, Mapped, Outgoing};
use crate::collect::proof::hmac_sha256;
use crate::format::encode::hex;

/// Webhook settings: `{"url", "secret", "purpose"?: "necessary" | "analytics" | "advertising"}`.
#[allow(missing_docs)] // the fields say what they hold
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub url: String,
    pub secret: String,
    /// Default `analytics`: a webhook usually feeds another tool; the site's own order system
    /// can say `necessary`.
    pub purpose: Purpose,
    /// `forwardErasures`: erasure requests are sent here too, signed like events.
    pub forward_erasures: bool,
}

impl Settings {
    pub(crate) fn parse(f: &Fields<'_>) -> Result<Self, DestinationConfigError> {
        let url = f.required("url", "settings.url")?;
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(f.error("settings.url", "must be an http(s) URL"));
        }
        let secret = f.required("secret", "settings.secret")?;
        if secret.len() < 16 {
            return Err(f.error("settings.secret", "must be at least 16 characters"));
        }
        let purpose = f.purpose(Purpose::Analytics)?;
        Ok(Self {
            url,
            secret,
            purpose,
            forward_erasures: f.flag("forwardErasures", "settings.forwardErasures")?,
        })
    }
}

/// The signature header's value for `body`.
pub fn signature(secret: &str, body: &str) -> String {
    format!(
        "sha256={}",
        hex(&hmac_sha256(secret.as_bytes(), body.as_bytes()))
    )
}

/// The request for one event.
pub fn map(settings: &Settings, out: Outgoing<'_>) -> Mapped {
    let mut request = HttpRequest::post_json(settings.url.clone(), out.event);
    let signature = signature(&settings.secret, &request.body);
    request.headers.extend([
        ("user-agent".into(), "Seam-Webhook/1".into()),
        ("x-seam-signature".into(), signature),
        ("x-seam-delivery".into(), out.delivery_id.to_owned()),
        ("x-seam-attempt".into(), out.attempt.to_string()),
    ]);
    Mapped::Send(request)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    #[test]
    fn posts_the_event_signed_with_its_delivery_id_and_attempt() {
        let settings = Settings {
            url: "https://hooks.example/seam".into(),
            secret: "whsec_0123456789abcdef".into(),
            purpose: Purpose::Analytics,
            forward_erasures: false,
        };
        let event = json!({"type": "track", "event": "Order Completed", "messageId": "m1",
                           "properties": {"order_id": "o1", "revenue": 25.5}});
        let Mapped::Send(r) = map(
            &settings,
            Outgoing {
                event: &event,
                delivery_id: "dlv_1",
                attempt: 2,
                timestamp_ms: 0,
            },
        ) else {
            panic!("a webhook sends every event");
        };
        assert_eq!(
            (r.method, r.url.as_str()),
            ("POST", "https://hooks.example/seam")
        );
        assert_eq!(serde_json::from_str::<Value>(&r.body).unwrap(), event);
        assert_eq!(r.header("X-Seam-Delivery"), Some("dlv_1"));
        assert_eq!(r.header("X-Seam-Attempt"), Some("2"));
        assert_eq!(r.header("Content-Type"), Some("application/json"));
        // Verifiable with the receiver's own HMAC of the raw body.
        let expected = signature("whsec_0123456789abcdef", &r.body);
        assert_eq!(r.header("X-Seam-Signature"), Some(expected.as_str()));
        assert_eq!(
            signature("key", "The quick brown fox jumps over the lazy dog"),
            "sha256=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
        );
    }
}
