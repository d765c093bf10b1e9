//! SendGrid v3 mail send, for e-mail: `POST {baseUrl}/v3/mail/send`, `Authorization: Bearer
//! <key>`, JSON `{personalizations: [{to: [{email}], dynamic_template_data?}], from: {email,
//! name?}, subject?, content?: [{type: "text/html", value}], template_id?, custom_args}`; 202 on
//! success. `custom_args` carries the delivery ID, which SendGrid's Event Webhook echoes back,
//! so opens and clicks come home to the right delivery. Journeys build the [`Mail`]; this module
//! only shapes the request.

use serde_json::{json, Value};

use super::destination::{DestinationConfigError, Fields};
use super::policy::Purpose;
use super::{contact, event_name, properties, HttpRequest, Mapped, Outgoing};
use crate::identity::{IdType, Identifier, Rules};

/// The real endpoint; tests point `baseUrl` at a local receiver.
pub const DEFAULT_BASE_URL: &str = "https://api.sendgrid.com";

/// SendGrid settings: `{"apiKey", "fromEmail", "fromName"?, "baseUrl"?}`.
#[allow(missing_docs)] // the fields say what they hold
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub api_key: String,
    pub from_email: String,
    pub from_name: Option<String>,
    pub base_url: String,
}

impl Settings {
    /// Validates SendGrid settings.
    pub fn parse(f: &Fields<'_>) -> Result<Self, DestinationConfigError> {
        let from_email = f.required("fromEmail", "settings.fromEmail")?;
        if Identifier::normalized(IdType::Email, &from_email, &Rules::default()).is_none() {
            return Err(f.error("settings.fromEmail", "must be an email address"));
        }
        Ok(Self {
            api_key: f.required("apiKey", "settings.apiKey")?,
            from_email,
            from_name: f.optional("fromName", "settings.fromName")?,
            base_url: f.base_url("baseUrl", "settings.baseUrl", DEFAULT_BASE_URL)?,
        })
    }
}

/// SendGrid as a destination, for transactional mail and journey messages. With `templateId`,
/// each event it takes becomes that dynamic template sent to the person's email (from a
/// trusted event only: a page's claimed address is anyone's), with `{event, properties,
/// traits}` as `dynamic_template_data` and the delivery ID in `custom_args`; without one it
/// takes no events and sends only journey messages ([`Transactional::message`]). Settings:
/// those of [`Settings`] plus `templateId`? and `purpose` (default `necessary`: an order
/// confirmation needs no analytics consent).
#[allow(missing_docs)] // the fields say what they hold
#[derive(Debug, Clone, PartialEq)]
pub struct Transactional {
    pub settings: Settings,
    pub template_id: Option<String>,
    pub purpose: Purpose,
}

impl Transactional {
    /// Validates the destination's settings.
    pub fn parse(f: &Fields<'_>) -> Result<Self, DestinationConfigError> {
        let template_id = f.optional("templateId", "settings.templateId")?;
        if template_id.as_ref().is_some_and(|t| !t.starts_with("d-")) {
            return Err(f.error("settings.templateId", "must be a dynamic template ID (d-…)"));
        }
        Ok(Self {
            settings: Settings::parse(f)?,
            template_id,
            purpose: f.purpose(Purpose::Necessary)?,
        })
    }

    /// The mail for one event.
    pub fn map(&self, out: Outgoing<'_>) -> Mapped {
        let Some(template_id) = &self.template_id else {
            return Mapped::Skip("no_template");
        };
        let Some(to) = contact(out.event, "email") else {
            return Mapped::Skip("no_trusted_email");
        };
        let traits = out
            .event
            .get("context")
            .and_then(|c| c.get("traits"))
            .or_else(|| out.event.get("traits"))
            .cloned()
            .unwrap_or_else(|| json!({}));
        let mail = Mail {
            to,
            body: Body::Template {
                id: template_id.clone(),
                data: json!({
                    "event": event_name(out.event),
                    "properties": properties(out.event),
                    "traits": traits,
                }),
            },
            custom_args: vec![("seam_delivery".into(), out.delivery_id.to_owned())],
        };
        match request(&self.settings, &mail) {
            Ok(request) => Mapped::Send(request),
            Err(_) => Mapped::Skip("invalid_recipient"),
        }
    }
}

impl Transactional {
    /// The mail for a journey message (`core::journey::message::render`'s payload, an e-mail):
    /// its subject and HTML, with the delivery ID, journey and step in `custom_args` so the
    /// Event Webhook's opens and clicks come home to the journey.
    pub fn message(&self, out: Outgoing<'_>) -> Mapped {
        let field = |k: &str| out.event.get(k).and_then(Value::as_str).map(str::to_owned);
        let (Some("email"), Some(to), Some(subject), Some(html)) = (
            out.event.get("channel").and_then(Value::as_str),
            field("to"),
            field("subject"),
            field("html"),
        ) else {
            return Mapped::Skip("not_an_email");
        };
        let mut custom_args = vec![("seam_delivery".into(), out.delivery_id.to_owned())];
        for (arg, key) in [("seam_journey", "journey"), ("seam_step", "step")] {
            if let Some(v) = field(key) {
                custom_args.push((arg.into(), v));
            }
        }
        let mail = Mail {
            to,
            body: Body::Html { subject, html },
            custom_args,
        };
        match request(&self.settings, &mail) {
            Ok(request) => Mapped::Send(request),
            Err(_) => Mapped::Skip("invalid_recipient"),
        }
    }
}

/// What the mail says.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    /// A subject and HTML the journey rendered (already escaped for HTML).
    Html {
        /// The subject line.
        subject: String,
        /// The HTML.
        html: String,
    },
    /// A SendGrid dynamic template and its data.
    Template {
        /// `d-…` template ID.
        id: String,
        /// `dynamic_template_data`.
        data: Value,
    },
}

/// One mail.
#[allow(missing_docs)] // the fields say what they hold
#[derive(Debug, Clone, PartialEq)]
pub struct Mail {
    pub to: String,
    pub body: Body,
    /// Echoed by the Event Webhook: the delivery ID, and whatever the journey adds.
    pub custom_args: Vec<(String, String)>,
}

/// Why a mail cannot be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MailError {
    /// The recipient is not an email address.
    #[error("the recipient must be an email address")]
    InvalidRecipient,
}

/// The request for one mail.
pub fn request(settings: &Settings, mail: &Mail) -> Result<HttpRequest, MailError> {
    let to = Identifier::normalized(IdType::Email, &mail.to, &Rules::default())
        .ok_or(MailError::InvalidRecipient)?;
    let mut personalization = json!({"to": [{"email": to.value}]});
    let mut from = json!({"email": settings.from_email});
    if let Some(name) = &settings.from_name {
        from["name"] = Value::from(name.as_str());
    }
    let args: serde_json::Map<String, Value> = mail
        .custom_args
        .iter()
        .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
        .collect();
    let mut body = json!({"from": from, "custom_args": args});
    match &mail.body {
        Body::Html { subject, html } => {
            body["subject"] = Value::from(subject.as_str());
            body["content"] = json!([{"type": "text/html", "value": html}]);
        }
        Body::Template { id, data } => {
            body["template_id"] = Value::from(id.as_str());
            personalization["dynamic_template_data"] = data.clone();
        }
    }
    body["personalizations"] = json!([personalization]);
    let mut request = HttpRequest::post_json(format!("{}/v3/mail/send", settings.base_url), &body);
    request.headers.push((
        "authorization".into(),
        format!("Bearer {}", settings.api_key),
    ));
    Ok(request)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            api_key: "SG.key".into(),
            from_email: "shop@shop.example".into(),
            from_name: Some("Seam Shop".into()),
            base_url: DEFAULT_BASE_URL.into(),
        }
    }

    fn out(event: &Value) -> Outgoing<'_> {
        Outgoing {
            event,
            delivery_id: "dlv_7",
            attempt: 1,
            timestamp_ms: 0,
        }
    }

    #[test]
    fn an_order_confirmation_goes_to_a_trusted_email_only() {
        let destination = Transactional {
            settings: settings(),
            template_id: Some("d-confirm".into()),
            purpose: Purpose::Necessary,
        };
        let order = json!({"type": "track", "event": "Order Completed", "userId": "u1",
                           "properties": {"order_id": "o1", "total": 58.5},
                           "context": {"traits": {"email": "ann@shop.example", "first_name": "Ann"}}});
        let Mapped::Send(r) = destination.map(out(&order)) else {
            panic!("expected a mail");
        };
        assert_eq!(
            serde_json::from_str::<Value>(&r.body).unwrap(),
            json!({
                "from": {"email": "shop@shop.example", "name": "Seam Shop"},
                "template_id": "d-confirm",
                "custom_args": {"seam_delivery": "dlv_7"},
                "personalizations": [{"to": [{"email": "ann@shop.example"}], "dynamic_template_data": {
                    "event": "Order Completed",
                    "properties": {"order_id": "o1", "total": 58.5},
                    "traits": {"email": "ann@shop.example", "first_name": "Ann"}}}]
            })
        );
        let claimed = json!({"type": "track", "event": "Order Completed", "anonymousId": "a",
                             "context": {"traits": {"email": "victim@shop.example"},
                                         "seam": {"identity": "claimed"}}});
        assert_eq!(
            destination.map(out(&claimed)),
            Mapped::Skip("no_trusted_email")
        );
    }

    #[test]
    fn a_rendered_reminder_with_the_delivery_id_for_the_event_webhook() {
        let mail = Mail {
            to: " Ann@Shop.Example ".into(),
            body: Body::Html {
                subject: "You left something".into(),
                html: "<p>Trail Runner</p>".into(),
            },
            custom_args: vec![("seam_delivery".into(), "dlv_1".into())],
        };
        let r = request(&settings(), &mail).unwrap();
        assert_eq!(r.url, "https://api.sendgrid.com/v3/mail/send");
        assert_eq!(r.header("Authorization"), Some("Bearer SG.key"));
        assert_eq!(
            serde_json::from_str::<Value>(&r.body).unwrap(),
            json!({
                "personalizations": [{"to": [{"email": "ann@shop.example"}]}],
                "from": {"email": "shop@shop.example", "name": "Seam Shop"},
                "subject": "You left something",
                "content": [{"type": "text/html", "value": "<p>Trail Runner</p>"}],
                "custom_args": {"seam_delivery": "dlv_1"}
            })
        );
    }

    #[test]
    fn a_template_mail_and_a_bad_recipient() {
        let mail = Mail {
            to: "ann@shop.example".into(),
            body: Body::Template {
                id: "d-1".into(),
                data: json!({"first_name": "Ann"}),
            },
            custom_args: Vec::new(),
        };
        let body: Value = serde_json::from_str(&request(&settings(), &mail).unwrap().body).unwrap();
        assert_eq!(body["template_id"], json!("d-1"));
        assert_eq!(
            body["personalizations"][0]["dynamic_template_data"],
            json!({"first_name": "Ann"})
        );
        assert!(body.get("content").is_none());
        let bad = Mail {
            to: "not-an-email".into(),
            ..mail
        };
        assert_eq!(request(&settings(), &bad), Err(MailError::InvalidRecipient));
    }

    #[test]
    fn a_journey_message_becomes_its_mail_and_a_journey_only_destination_takes_no_events() {
        let destination = Transactional {
            settings: settings(),
            template_id: None,
            purpose: Purpose::Necessary,
        };
        let message = json!({"channel": "email", "to": "ann@shop.example", "subject": "Your cart",
                             "html": "<p>Hi</p>", "journey": "abandoned_checkout", "step": "reminder"});
        let Mapped::Send(r) = destination.message(out(&message)) else {
            panic!("expected a mail");
        };
        let body: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(body["subject"], json!("Your cart"));
        assert_eq!(body["content"][0]["value"], json!("<p>Hi</p>"));
        assert_eq!(
            body["custom_args"],
            json!({"seam_delivery": "dlv_7", "seam_journey": "abandoned_checkout", "seam_step": "reminder"})
        );
        let sms = json!({"channel": "sms", "to": "+31612345678", "text": "Hi"});
        assert_eq!(destination.message(out(&sms)), Mapped::Skip("not_an_email"));
        let order = json!({"type": "track", "event": "Order Completed"});
        assert_eq!(destination.map(out(&order)), Mapped::Skip("no_template"));
    }
}
