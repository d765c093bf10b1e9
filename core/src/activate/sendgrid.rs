//! SendGrid v3 mail send, for e-mail: `POST {baseUrl}/v3/mail/send`, `Authorization: Bearer
//! <key>`, JSON `{personalizations: [{to: [{email}], dynamic_template_data?}], from: {email,
//! name?}, subject?, content?: [{type: "text/html", value}], template_id?, custom_args}`; 202 on
//! success. `custom_args` carries the delivery ID, which SendGrid's Event Webhook echoes back,
//! so opens and clicks come home to the right delivery. Journeys build the [`Mail`]; this module
//! only shapes the request.

use serde_json::{json, Value};

use super::destination::{DestinationConfigError, Fields};
use super::HttpRequest;
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
}
