//! Twilio Messages API, for SMS and WhatsApp: `POST
//! {baseUrl}/2010-04-01/Accounts/{accountSid}/Messages.json`, HTTP Basic `accountSid:authToken`,
//! a form-encoded body: `To`, `From` (`whatsapp:+…` for WhatsApp), and `Body`, or `ContentSid`
//! with `ContentVariables` (an approved template: WhatsApp needs one outside the 24-hour window),
//! plus `StatusCallback` for delivery and read receipts. Journeys build the [`Message`]; this
//! module only shapes the request.

use super::destination::{DestinationConfigError, Fields};
use super::HttpRequest;
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
}
