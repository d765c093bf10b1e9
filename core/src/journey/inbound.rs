//! Engagement coming back: SendGrid's Event Webhook and Twilio's status callbacks become events
//! on the person's profile (`Email Opened`, `Email Link Clicked`, `Message Read`, ...), which
//! journeys branch on and which stop later sends (`Unsubscribed`).
//!
//! The person is named by the address the message went to (the provider's word, received on a
//! URL that carries a secret), so the events are a trusted source's. Each event's `messageId`
//! derives from the provider's own event ID, so a webhook the provider retries stores nothing
//! twice.

use serde_json::{json, Map, Value};

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
pub fn sendgrid_events(body: &Value) -> Vec<Value> {
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
            let mut traits = json!({"email": email});
            if name == "Unsubscribed" {
                properties.insert("channel_opt_out".into(), Value::from("email"));
                // The opt-out every later send checks (`message::Medium::opt_out_trait`).
                traits["unsubscribed_email"] = Value::Bool(true);
            }
            Some(json!({
                "type": "track",
                "event": name,
                "messageId": message_id("sendgrid", &id),
                "timestamp": format_iso8601(seconds.saturating_mul(1000)),
                "properties": properties,
                "context": {"traits": traits},
            }))
        })
        .collect()
}

/// A Seam event for a Twilio status callback (its form fields): `delivered` and `read` (WhatsApp)
/// become `Message Delivered` / `Message Read`, `failed` and `undelivered` `Message Failed`; a
/// STOP reply (the inbound-message webhook, `OptOutType=STOP`) becomes `Unsubscribed` for the
/// channel, on the sender's number. Others are
/// `None`. `received_ms` dates it (Twilio sends no time).
pub fn twilio_event(fields: &[(String, String)], received_ms: i64) -> Option<Value> {
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
    let mut traits = json!({"phone": phone});
    if name == "Unsubscribed" {
        properties["channel_opt_out"] = Value::from(channel);
        traits[format!("unsubscribed_{channel}")] = Value::Bool(true);
    }
    Some(json!({
        "type": "track",
        "event": name,
        "messageId": message_id("twilio", &format!("{sid}/{status}")),
        "timestamp": format_iso8601(received_ms),
        "properties": properties,
        "context": {"traits": traits},
    }))
}

fn message_id(provider: &str, id: &str) -> String {
    let mut hex = sha256_hex(format!("{provider}\n{id}").as_bytes());
    hex.truncate(32);
    format!("{provider}-{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let events = sendgrid_events(&body);
        let names: Vec<&str> = events
            .iter()
            .map(|e| e["event"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            ["Email Opened", "Email Link Clicked", "Unsubscribed"]
        );
        assert_eq!(
            events[0]["context"]["traits"]["email"],
            json!("ann@shop.example")
        );
        assert_eq!(events[0]["properties"]["seam_delivery"], json!("jrn_1"));
        assert_eq!(
            events[2]["context"]["traits"]["unsubscribed_email"],
            json!(true)
        );
        assert!(events[0]["context"]["traits"]
            .get("unsubscribed_email")
            .is_none());
        assert_eq!(events[0]["timestamp"], json!("2027-01-15T08:00:00.000Z"));
        assert_eq!(
            events[1]["properties"]["url"],
            json!("https://shop.example/cart")
        );
        assert_eq!(events[2]["properties"]["channel_opt_out"], json!("email"));
        assert_eq!(
            sendgrid_events(&body)[0]["messageId"],
            events[0]["messageId"],
            "a retried webhook names the same events"
        );
        assert!(sendgrid_events(&json!({"not": "a list"})).is_empty());
    }

    #[test]
    fn twilio_statuses_and_stop_replies_become_profile_events() {
        let form = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        let read = twilio_event(
            &form(&[
                ("MessageSid", "SM1"),
                ("MessageStatus", "read"),
                ("To", "whatsapp:+31612345678"),
            ]),
            1_800_000_000_000,
        )
        .unwrap();
        assert_eq!(read["event"], json!("Message Read"));
        assert_eq!(read["properties"]["channel"], json!("whatsapp"));
        assert_eq!(read["context"]["traits"]["phone"], json!("+31612345678"));
        let delivered = twilio_event(
            &form(&[
                ("MessageSid", "SM1"),
                ("MessageStatus", "delivered"),
                ("To", "+31612345678"),
            ]),
            0,
        )
        .unwrap();
        assert_eq!(delivered["event"], json!("Message Delivered"));
        assert_ne!(delivered["messageId"], read["messageId"]);
        let stop = twilio_event(
            &form(&[
                ("MessageSid", "SM2"),
                ("SmsStatus", "received"),
                ("From", "+31612345678"),
                ("To", "+3197010"),
                ("OptOutType", "STOP"),
            ]),
            0,
        )
        .unwrap();
        assert_eq!(stop["event"], json!("Unsubscribed"));
        assert_eq!(stop["properties"]["channel_opt_out"], json!("sms"));
        assert_eq!(
            stop["context"]["traits"]["phone"],
            json!("+31612345678"),
            "the shopper, not the business"
        );
        assert!(twilio_event(
            &form(&[
                ("MessageSid", "SM3"),
                ("MessageStatus", "queued"),
                ("To", "+31")
            ]),
            0
        )
        .is_none());
    }
}
