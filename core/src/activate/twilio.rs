//! Twilio Messages API, for SMS and WhatsApp: `POST
//! {baseUrl}/2010-04-01/Accounts/{accountSid}/Messages.json`, HTTP Basic `accountSid:authToken`,
//! a form-encoded body: `To`, `From` (`whatsapp:+…` for WhatsApp), and `Body`, or `ContentSid`
//! with `ContentVariables` (an approved template: WhatsApp needs one outside the 24-hour window),
//! plus `StatusCallback` for delivery and read receipts. Journeys build the [`Message`]; this
//! module only shapes the request.

use serde_json::Value;

use super::destination::{DestinationConfigError, Fields};
use super::policy::Purpose;
use super::{contact, HttpRequest, Mapped, Outgoing};
use crate::collect::auth::base64_encode;
use crate::format::encode::percent;

/// The real endpoint; tests point `baseUrl` at a local receiver.
pub const DEFAULT_BASE_URL: &str = "https://api.twilio.com";

/// Twilio settings: `{"accountSid": "AC…", "authToken", "from": "+…" | "whatsapp:+…",
/// "statusCallback"?, "baseUrl"?}`.
#[allow(missing_docs)] // the fields say what they hold
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub account_sid: String,
    pub auth_token: String,
    pub from: String,
    pub status_callback: Option<String>,
    pub base_url: String,
}

impl Settings {
    /// Validates Twilio settings.
    pub fn parse(f: &Fields<'_>) -> Result<Self, DestinationConfigError> {
        let account_sid = f.required("accountSid", "settings.accountSid")?;
        if !account_sid.starts_with("AC") || !account_sid.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return Err(f.error("settings.accountSid", "must look like AC…"));
        }
        let from = f.required("from", "settings.from")?;
        if phone_of(&from).is_none() {
            return Err(f.error("settings.from", "must be +<digits> or whatsapp:+<digits>"));
        }
        Ok(Self {
            account_sid,
            auth_token: f.required("authToken", "settings.authToken")?,
            from,
            status_callback: f.optional("statusCallback", "settings.statusCallback")?,
            base_url: f.base_url("baseUrl", "settings.baseUrl", DEFAULT_BASE_URL)?,
        })
    }
}

/// Twilio as a destination, for transactional messages: each event it takes becomes a message
/// to the person's phone (from a trusted event only). Settings: those of [`Settings`] plus
/// either `text` (fixed) or `contentSid` (an approved template, needed for WhatsApp) with
/// `variables` (`{"1": "properties.order_id"}`: template variable -> dotted event path), and
/// `purpose` (default `necessary`).
#[allow(missing_docs)] // the fields say what they hold
#[derive(Debug, Clone, PartialEq)]
pub struct Transactional {
    pub settings: Settings,
    pub text: Option<String>,
    pub content_sid: Option<String>,
    pub variables: Vec<(String, String)>,
    pub purpose: Purpose,
}

impl Transactional {
    /// Validates the destination's settings.
    pub fn parse(f: &Fields<'_>) -> Result<Self, DestinationConfigError> {
        let text = f.optional("text", "settings.text")?;
        let content_sid = f.optional("contentSid", "settings.contentSid")?;
        if text.is_some() && content_sid.is_some() {
            return Err(f.error(
                "settings.text",
                "and settings.contentSid exclude each other",
            ));
        }
        Ok(Self {
            settings: Settings::parse(f)?,
            text,
            content_sid,
            variables: f.string_map("variables", "settings.variables")?,
            purpose: f.purpose(Purpose::Necessary)?,
        })
    }

    /// The message for one event.
    pub fn map(&self, out: Outgoing<'_>) -> Mapped {
        let Some(to) = contact(out.event, "phone") else {
            return Mapped::Skip("no_trusted_phone");
        };
        let to: String = to
            .chars()
            .filter(|c| c.is_ascii_digit() || *c == '+')
            .collect();
        let content = match (&self.content_sid, &self.text) {
            (Some(sid), _) => {
                let variables: serde_json::Map<String, Value> = self
                    .variables
                    .iter()
                    .filter_map(|(name, path)| {
                        let value = path.split('.').try_fold(out.event, |v, seg| v.get(seg))?;
                        let text = match value {
                            Value::String(s) => s.clone(),
                            Value::Number(n) => n.to_string(),
                            _ => return None,
                        };
                        Some((name.clone(), Value::from(text)))
                    })
                    .collect();
                Content::Template {
                    sid: sid.clone(),
                    variables: Value::Object(variables).to_string(),
                }
            }
            (None, Some(text)) => Content::Text(text.clone()),
            (None, None) => return Mapped::Skip("no_content"),
        };
        match request(&self.settings, &Message { to, content }) {
            Ok(request) => Mapped::Send(request),
            Err(_) => Mapped::Skip("invalid_recipient"),
        }
    }
}

impl Transactional {
    /// Whether it takes events (a fixed text or template); without either it sends only
    /// journey messages.
    pub fn takes_events(&self) -> bool {
        self.text.is_some() || self.content_sid.is_some()
    }

    /// The message for a journey message (`core::journey::message::render`'s payload, SMS or
    /// WhatsApp): its text, or an approved template with its variables.
    pub fn message(&self, out: Outgoing<'_>) -> Mapped {
        let field = |k: &str| out.event.get(k).and_then(Value::as_str).map(str::to_owned);
        let channel = out.event.get("channel").and_then(Value::as_str);
        if !matches!(channel, Some("sms" | "whatsapp")) {
            return Mapped::Skip("not_a_text_message");
        }
        let Some(to) = field("to") else {
            return Mapped::Skip("invalid_recipient");
        };
        let content = match (field("contentSid"), field("text")) {
            (Some(sid), _) => Content::Template {
                sid,
                variables: out
                    .event
                    .get("variables")
                    .cloned()
                    .unwrap_or_else(|| Value::Object(Default::default()))
                    .to_string(),
            },
            (None, Some(text)) => Content::Text(text),
            (None, None) => return Mapped::Skip("no_content"),
        };
        match request(&self.settings, &Message { to, content }) {
            Ok(request) => Mapped::Send(request),
            Err(_) => Mapped::Skip("invalid_recipient"),
        }
    }
}

/// The number of a `+<digits>` or `whatsapp:+<digits>` address.
fn phone_of(address: &str) -> Option<&str> {
    let number = address.strip_prefix("whatsapp:").unwrap_or(address);
    let digits = number.strip_prefix('+')?;
    (digits.len() >= 6 && digits.len() <= 15 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then_some(number)
}

/// What to send to whom.
#[derive(Debug, Clone, PartialEq)]
pub enum Content {
    /// Free text (SMS, or WhatsApp inside the 24-hour window).
    Text(String),
    /// An approved template and its variables as a JSON object's text (`{"1": "Ann"}`).
    Template {
        /// The template's `HX…` SID.
        sid: String,
        /// `ContentVariables`: JSON text.
        variables: String,
    },
}

/// One message.
#[allow(missing_docs)] // the fields say what they hold
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// E.164 phone number (`+31612345678`); sent over WhatsApp when the sender is `whatsapp:`.
    pub to: String,
    pub content: Content,
}

/// Why a message cannot be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// The recipient is not a `+<digits>` number.
    #[error("the recipient must be an E.164 phone number")]
    InvalidRecipient,
}

/// The request for one message.
pub fn request(settings: &Settings, message: &Message) -> Result<HttpRequest, MessageError> {
    // A `whatsapp:` recipient needs a WhatsApp sender; a plain number follows the sender.
    if message.to.starts_with("whatsapp:") && !settings.from.starts_with("whatsapp:") {
        return Err(MessageError::InvalidRecipient);
    }
    let to = phone_of(&message.to).ok_or(MessageError::InvalidRecipient)?;
    let to = if settings.from.starts_with("whatsapp:") {
        format!("whatsapp:{to}")
    } else {
        to.to_owned()
    };
    let mut form = vec![("To", to), ("From", settings.from.clone())];
    match &message.content {
        Content::Text(body) => form.push(("Body", body.clone())),
        Content::Template { sid, variables } => {
            form.push(("ContentSid", sid.clone()));
            form.push(("ContentVariables", variables.clone()));
        }
    }
    if let Some(callback) = &settings.status_callback {
        form.push(("StatusCallback", callback.clone()));
    }
    let body = form
        .iter()
        .map(|(k, v)| format!("{k}={}", percent(v)))
        .collect::<Vec<_>>()
        .join("&");
    let credentials =
        base64_encode(format!("{}:{}", settings.account_sid, settings.auth_token).as_bytes());
    Ok(HttpRequest {
        method: "POST",
        url: format!(
            "{}/2010-04-01/Accounts/{}/Messages.json",
            settings.base_url, settings.account_sid
        ),
        headers: vec![
            ("authorization".into(), format!("Basic {credentials}")),
            (
                "content-type".into(),
                "application/x-www-form-urlencoded".into(),
            ),
        ],
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(from: &str) -> Settings {
        Settings {
            account_sid: "AC123".into(),
            auth_token: "tok".into(),
            from: from.into(),
            status_callback: Some("https://shop.example/v1/hooks/twilio".into()),
            base_url: DEFAULT_BASE_URL.into(),
        }
    }

    #[test]
    fn a_shipping_notice_fills_template_variables_from_the_event() {
        let destination = Transactional {
            settings: settings("whatsapp:+3197010"),
            text: None,
            content_sid: Some("HXship".into()),
            variables: vec![
                ("1".into(), "properties.order_id".into()),
                ("2".into(), "properties.eta_days".into()),
                ("3".into(), "properties.missing".into()),
            ],
            purpose: Purpose::Necessary,
        };
        let shipped = serde_json::json!({"type": "track", "event": "Order Shipped", "userId": "u1",
            "properties": {"order_id": "o1", "eta_days": 2},
            "context": {"traits": {"phone": "+31 6 1234 5678"}}});
        let out = Outgoing {
            event: &shipped,
            delivery_id: "dlv_1",
            attempt: 1,
            timestamp_ms: 0,
        };
        let Mapped::Send(r) = destination.map(out) else {
            panic!("expected a message");
        };
        assert_eq!(
            r.body,
            "To=whatsapp%3A%2B31612345678&From=whatsapp%3A%2B3197010&ContentSid=HXship\
             &ContentVariables=%7B%221%22%3A%22o1%22%2C%222%22%3A%222%22%7D\
             &StatusCallback=https%3A%2F%2Fshop.example%2Fv1%2Fhooks%2Ftwilio"
        );
        let anonymous =
            serde_json::json!({"type": "track", "event": "Order Shipped", "anonymousId": "a"});
        assert_eq!(
            destination.map(Outgoing {
                event: &anonymous,
                ..out
            }),
            Mapped::Skip("no_trusted_phone")
        );
    }

    #[test]
    fn a_whatsapp_template_with_its_variables_and_status_callback() {
        let message = Message {
            to: "+31612345678".into(),
            content: Content::Template {
                sid: "HX9".into(),
                variables: r#"{"1":"Ann","2":"TEN10"}"#.into(),
            },
        };
        let r = request(&settings("whatsapp:+14155238886"), &message).unwrap();
        assert_eq!(
            r.url,
            "https://api.twilio.com/2010-04-01/Accounts/AC123/Messages.json"
        );
        assert_eq!(r.header("Authorization"), Some("Basic QUMxMjM6dG9r"));
        assert_eq!(
            r.header("Content-Type"),
            Some("application/x-www-form-urlencoded")
        );
        assert_eq!(
            r.body,
            "To=whatsapp%3A%2B31612345678&From=whatsapp%3A%2B14155238886&ContentSid=HX9\
             &ContentVariables=%7B%221%22%3A%22Ann%22%2C%222%22%3A%22TEN10%22%7D\
             &StatusCallback=https%3A%2F%2Fshop.example%2Fv1%2Fhooks%2Ftwilio"
        );
    }

    #[test]
    fn a_plain_sms_and_a_bad_recipient() {
        let mut s = settings("+15005550006");
        s.status_callback = None;
        let sms = Message {
            to: "+15551234567".into(),
            content: Content::Text("Hi & bye".into()),
        };
        assert_eq!(
            request(&s, &sms).unwrap().body,
            "To=%2B15551234567&From=%2B15005550006&Body=Hi%20%26%20bye"
        );
        let bad = Message {
            to: "0612345678".into(),
            content: Content::Text("x".into()),
        };
        assert_eq!(request(&s, &bad), Err(MessageError::InvalidRecipient));
    }

    #[test]
    fn journey_messages_as_text_or_approved_template() {
        let destination = Transactional {
            settings: settings("whatsapp:+14155238886"),
            text: None,
            content_sid: None,
            variables: Vec::new(),
            purpose: Purpose::Necessary,
        };
        assert!(!destination.takes_events());
        let out = |event| Outgoing {
            event,
            delivery_id: "dlv_1",
            attempt: 1,
            timestamp_ms: 0,
        };
        let text = serde_json::json!({"channel": "whatsapp", "to": "+31612345678", "text": "10% off: SAVE10-AB"});
        let Mapped::Send(r) = destination.message(out(&text)) else {
            panic!("expected a message");
        };
        assert!(r.body.starts_with("To=whatsapp%3A%2B31612345678&From=whatsapp%3A%2B14155238886&Body=10%25%20off%3A%20SAVE10-AB"), "{}", r.body);
        let approved = serde_json::json!({"channel": "whatsapp", "to": "+31612345678",
                                          "contentSid": "HX9", "variables": {"1": "Ann"}});
        let Mapped::Send(r) = destination.message(out(&approved)) else {
            panic!("expected a message");
        };
        assert!(
            r.body
                .contains("ContentSid=HX9&ContentVariables=%7B%221%22%3A%22Ann%22%7D"),
            "{}",
            r.body
        );
        let email = serde_json::json!({"channel": "email", "to": "a@b.example"});
        assert_eq!(
            destination.message(out(&email)),
            Mapped::Skip("not_a_text_message")
        );
    }
}
