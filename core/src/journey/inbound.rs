//! Engagement coming back: SendGrid's Event Webhook and Twilio's status callbacks become events
//! on the person's profile (`Email Opened`, `Email Link Clicked`, `Message Read`, ...), which
//! journeys branch on and which stop later sends (`Unsubscribed`).
//!
//! The person is named by the address the message went to (the provider's word, received on a
//! URL that carries a secret), so the events are a trusted source's. Each event's `messageId`
//! derives from the provider's own event ID, so a webhook the provider retries stores nothing
//! twice.

use serde_json::{json, Map, Value};

use crate::collect::proof::hmac_sha256;
use crate::format::time::format_iso8601;
use crate::identity::sha256_hex;

/// The Seam event name of a SendGrid event type; `None` for types journeys do not use
/// (`processed`, `deferred`).
fn sendgrid_name(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "delivered" => "Email Delivered",
        "open" => "Email Opened",
        "click" => "Email Link Clicked",
        "bounce" | "dropped" => "Email Bounced",
        "spamreport" => "Email Marked as Spam",
        "unsubscribe" | "group_unsubscribe" => "Unsubscribed",
        _ => return None,
    })
}

/// Seam events for a SendGrid Event Webhook body (a JSON array of `{email, timestamp, event,
/// sg_event_id, url?, …custom_args}`). Entries without an email, a known type or a timestamp
/// are left out; the rest carry the `custom_args` the send set (`seam_delivery`, journey and
/// step) as properties.
pub fn sendgrid_events(body: &Value, key: &[u8]) -> Vec<Value> {
    let Some(entries) = body.as_array() else {
        return Vec::new();
    };
    // Every entry counts (the provider does not retry a success); the route caps the body.
    entries
        .iter()
        .filter_map(|entry| {
            let email = entry.get("email")?.as_str()?.trim();
            let name = sendgrid_name(entry.get("event")?.as_str()?)?;
            let seconds = entry.get("timestamp")?.as_i64()?;
            let id = entry
                .get("sg_event_id")
                .and_then(Value::as_str)
                .map_or_else(|| entry.to_string(), str::to_owned);
            let mut properties = Map::new();
            properties.insert("channel".into(), Value::from("email"));
            for key in [
                "url",
                "seam_delivery",
                "seam_journey",
                "seam_step",
                "reason",
            ] {
                if let Some(v) = entry.get(key).filter(|v| v.is_string()) {
                    properties.insert(key.into(), v.clone());
                }
            }
            if name == "Unsubscribed" {
                properties.insert("channel_opt_out".into(), Value::from("email"));
            }
            Some(with_opt_out(
                json!({
                    "type": "track",
                    "event": name,
                    "anonymousId": contact_id(key, email),
                    "messageId": message_id("sendgrid", &id),
                    "timestamp": format_iso8601(seconds.saturating_mul(1000)),
                    "properties": properties,
                    "context": {"traits": {"email": email}},
                }),
                ("email", email),
                "email",
            ))
        })
        .flatten()
        .collect()
}

/// `event`, and for an `Unsubscribed` one also an identify that sets the opt-out trait every
/// later send checks (`message::Medium::opt_out_trait`): traits live on identifies.
fn with_opt_out(event: Value, (field, address): (&str, &str), channel: &str) -> Vec<Value> {
    if event["event"] != "Unsubscribed" {
        return vec![event];
    }
    let mut traits = Map::new();
    traits.insert(field.into(), Value::from(address));
    traits.insert(format!("unsubscribed_{channel}"), Value::Bool(true));
    let identify = json!({
        "type": "identify",
        "anonymousId": event["anonymousId"],
        "messageId": format!("{}-optout", event["messageId"].as_str().unwrap_or_default()),
        "timestamp": event["timestamp"],
        "traits": traits,
    });
    vec![event, identify]
}

/// Seam events for a Twilio status callback (its form fields): `delivered` and `read` (WhatsApp)
/// become `Message Delivered` / `Message Read`, `failed` and `undelivered` `Message Failed`; a
/// STOP reply (the inbound-message webhook, `OptOutType=STOP`) becomes `Unsubscribed` for the
/// channel, on the sender's number, with the identify that records the opt-out. Others make
/// none. `received_ms` dates them (Twilio sends no time).
pub fn twilio_events(fields: &[(String, String)], received_ms: i64, key: &[u8]) -> Vec<Value> {
    twilio_event(fields, received_ms, key).unwrap_or_default()
}

fn twilio_event(fields: &[(String, String)], received_ms: i64, key: &[u8]) -> Option<Vec<Value>> {
    let field = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let stop = field("OptOutType") == Some("STOP");
    // A status callback is about a message to the person (`To`); a STOP reply comes from them
    // (`From`: `To` is the business's own number).
    let address = if stop { field("From")? } else { field("To")? };
    let (channel, phone) = match address.strip_prefix("whatsapp:") {
        Some(phone) => ("whatsapp", phone),
        None => ("sms", address),
    };
    let sid = field("MessageSid").or_else(|| field("SmsSid"))?;
    let status = field("MessageStatus").or_else(|| field("SmsStatus"))?;
    let name = if stop {
        "Unsubscribed"
    } else {
        match status {
            "delivered" => "Message Delivered",
            "read" => "Message Read",
            "failed" | "undelivered" => "Message Failed",
            _ => return None,
        }
    };
    let mut properties = json!({"channel": channel, "message_sid": sid, "status": status});
    if name == "Unsubscribed" {
        properties["channel_opt_out"] = Value::from(channel);
    }
    Some(with_opt_out(
        json!({
            "type": "track",
            "event": name,
            "anonymousId": contact_id(key, phone),
            "messageId": message_id("twilio", &format!("{sid}/{status}")),
            "timestamp": format_iso8601(received_ms),
            "properties": properties,
            "context": {"traits": {"phone": phone}},
        }),
        ("phone", phone),
        channel,
    ))
}

/// Most fields read from a form body (Twilio sends some 20).
pub const MAX_FORM_FIELDS: usize = 100;

/// The fields of an `application/x-www-form-urlencoded` body (Twilio's callbacks), decoded;
/// a malformed escape is kept as written. At most [`MAX_FORM_FIELDS`].
pub fn parse_form(body: &[u8]) -> Vec<(String, String)> {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    fn decode(part: &[u8]) -> String {
        let mut out = Vec::with_capacity(part.len());
        let mut i = 0;
        while i < part.len() {
            match (
                part[i],
                part.get(i + 1).copied().and_then(hex),
                part.get(i + 2).copied().and_then(hex),
            ) {
                (b'%', Some(hi), Some(lo)) => {
                    out.push(hi << 4 | lo);
                    i += 3;
                    continue;
                }
                (b'+', _, _) => out.push(b' '),
                (b, _, _) => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    body.split(|b| *b == b'&')
        .filter(|pair| !pair.is_empty())
        .take(MAX_FORM_FIELDS)
        .map(|pair| {
            let mut halves = pair.splitn(2, |b| *b == b'=');
            let key = decode(halves.next().unwrap_or_default());
            let value = decode(halves.next().unwrap_or_default());
            (key, value)
        })
        .collect()
}

/// The events' `anonymousId` (the Tracking API needs a user or anonymous ID): one per address,
/// so the address in `context.traits` joins it to the person's profile and an erasure of the
/// person finds these events by it. Keyed by `key` (the hooks' secret): an anonymous ID acts as
/// its holder's identity, and a page that could compute the one of someone's address could
/// write into their profile.
fn contact_id(key: &[u8], address: &str) -> String {
    let mac = hmac_sha256(
        key,
        format!("contact\n{}", address.to_lowercase()).as_bytes(),
    );
    let hex: String = mac.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("contact-{hex}")
}

fn message_id(provider: &str, id: &str) -> String {
    let mut hex = sha256_hex(format!("{provider}\n{id}").as_bytes());
    hex.truncate(32);
    format!("{provider}-{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"hooks-secret";

    #[test]
    fn sendgrid_opens_clicks_and_unsubscribes_become_profile_events() {
        let body = json!([
            {"email": "ann@shop.example", "timestamp": 1_800_000_000, "event": "open",
             "sg_event_id": "e1", "seam_delivery": "jrn_1", "seam_journey": "abandoned_checkout"},
            {"email": "ann@shop.example", "timestamp": 1_800_000_060, "event": "click",
             "sg_event_id": "e2", "url": "https://shop.example/cart"},
            {"email": "ann@shop.example", "timestamp": 1_800_000_120, "event": "unsubscribe", "sg_event_id": "e3"},
            {"email": "ann@shop.example", "timestamp": 1_800_000_000, "event": "processed", "sg_event_id": "e4"},
            {"timestamp": 1_800_000_000, "event": "open"}
        ]);
        let events = sendgrid_events(&body, KEY);
        let names: Vec<&str> = events
            .iter()
            .map(|e| e["event"].as_str().unwrap_or("(identify)"))
            .collect();
        assert_eq!(
            names,
            [
                "Email Opened",
                "Email Link Clicked",
                "Unsubscribed",
                "(identify)"
            ]
        );
        assert_eq!(
            events[0]["context"]["traits"]["email"],
            json!("ann@shop.example")
        );
        assert_eq!(events[0]["properties"]["seam_delivery"], json!("jrn_1"));
        assert_eq!(
            events[3]["traits"],
            json!({"email": "ann@shop.example", "unsubscribed_email": true}),
            "the opt-out is recorded as a trait"
        );
        assert_eq!(
            events[0]["anonymousId"], events[3]["anonymousId"],
            "one ID per address"
        );
        assert_ne!(
            events[0]["anonymousId"],
            sendgrid_events(&body, b"another key")[0]["anonymousId"],
            "no one without the key can compute it"
        );
        assert_eq!(events[0]["timestamp"], json!("2027-01-15T08:00:00.000Z"));
        assert_eq!(
            events[1]["properties"]["url"],
            json!("https://shop.example/cart")
        );
        assert_eq!(events[2]["properties"]["channel_opt_out"], json!("email"));
        assert_eq!(
            sendgrid_events(&body, KEY)[0]["messageId"],
            events[0]["messageId"],
            "a retried webhook names the same events"
        );
        assert!(sendgrid_events(&json!({"not": "a list"}), KEY).is_empty());
    }

    #[test]
    fn twilio_statuses_and_stop_replies_become_profile_events() {
        let form = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        let [read] = &twilio_events(
            &form(&[
                ("MessageSid", "SM1"),
                ("MessageStatus", "read"),
                ("To", "whatsapp:+31612345678"),
            ]),
            1_800_000_000_000,
            KEY,
        )[..] else {
            panic!("one event");
        };
        assert_eq!(read["event"], json!("Message Read"));
        assert_eq!(read["properties"]["channel"], json!("whatsapp"));
        assert_eq!(read["context"]["traits"]["phone"], json!("+31612345678"));
        let [delivered] = &twilio_events(
            &form(&[
                ("MessageSid", "SM1"),
                ("MessageStatus", "delivered"),
                ("To", "+31612345678"),
            ]),
            0,
            KEY,
        )[..] else {
            panic!("one event");
        };
        assert_eq!(delivered["event"], json!("Message Delivered"));
        assert_ne!(delivered["messageId"], read["messageId"]);
        let [stop, opt_out] = &twilio_events(
            &form(&[
                ("MessageSid", "SM2"),
                ("SmsStatus", "received"),
                ("From", "+31612345678"),
                ("To", "+3197010"),
                ("OptOutType", "STOP"),
            ]),
            0,
            KEY,
        )[..] else {
            panic!("the event and the opt-out");
        };
        assert_eq!(opt_out["type"], json!("identify"));
        assert_eq!(
            opt_out["traits"],
            json!({"phone": "+31612345678", "unsubscribed_sms": true})
        );
        assert_eq!(opt_out["anonymousId"], stop["anonymousId"]);
        assert_eq!(stop["event"], json!("Unsubscribed"));
        assert_eq!(stop["properties"]["channel_opt_out"], json!("sms"));
        assert_eq!(
            stop["context"]["traits"]["phone"],
            json!("+31612345678"),
            "the shopper, not the business"
        );
        assert!(twilio_events(
            &form(&[
                ("MessageSid", "SM3"),
                ("MessageStatus", "queued"),
                ("To", "+31")
            ]),
            0,
            KEY
        )
        .is_empty());
    }

    #[test]
    fn a_form_body_is_decoded() {
        let fields = parse_form(b"To=whatsapp%3A%2B31612345678&Body=hi+there&Bad=%zz&Empty=&&Flag");
        assert_eq!(
            fields,
            [
                ("To".to_owned(), "whatsapp:+31612345678".to_owned()),
                ("Body".to_owned(), "hi there".to_owned()),
                ("Bad".to_owned(), "%zz".to_owned()),
                ("Empty".to_owned(), String::new()),
                ("Flag".to_owned(), String::new()),
            ]
        );
    }
}
