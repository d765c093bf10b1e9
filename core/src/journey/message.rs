//! Journey messages: the templates document (`config/templates.json`) and the message a send
//! becomes, rendered for the person at the time of the send. The message travels as a delivery
//! row's payload ([`MESSAGE_SOURCE`]); the destination (`sendgrid` or `twilio`) only shapes the
//! provider's request from it ([`crate::activate::destination::Kind::map_message`]).
//!
//! A template:
//! Fields read `profile.…` (traits), `computed.…`, `cart` (its items), `coupon` and `event.…`
//! (the event that started the journey, for event triggers).
//!
//! - e-mail: `{"channel": "email", "subject", "html"}`;
//! - SMS or WhatsApp: `{"channel": "sms" | "whatsapp", "text"}`, or for WhatsApp outside the
//!   24-hour window an approved template: `{"contentSid": "HX…", "variables": {"1": "{{…}}"}}`;
//! - either may add `"coupon"`: `{"code": "WELCOME10"}` (one code for all) or `{"prefix":
//!   "SAVE10-"}` (a code per person, [`super::template::coupon`]), rendered as `{{coupon}}`;
//! - and `"siteUrl": "https://shop.example"`, which makes the cart's site-relative product
//!   URLs absolute (a link in an e-mail has no site to be relative to).

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use super::template::{coupon, Channel, Template, TemplateError};

/// The source ID of journey messages' delivery rows (no event source has it: source IDs are
/// configured names).
pub const MESSAGE_SOURCE: &str = "$journey";
/// Most templates in one document.
pub const MAX_TEMPLATES: usize = 200;

/// Why a templates document was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("template {template}: {field} {problem}")]
pub struct TemplateConfigError {
    /// The template's name (empty for the document).
    pub template: String,
    /// The field at fault.
    pub field: String,
    /// What is wrong.
    pub problem: String,
}

impl TemplateConfigError {
    /// Stable error code.
    pub fn code(&self) -> &'static str {
        "invalid_template"
    }
}

/// The channel a template is written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Medium {
    /// E-mail (SendGrid).
    Email,
    /// SMS (Twilio).
    Sms,
    /// WhatsApp (Twilio).
    Whatsapp,
}

impl Medium {
    /// Its name in templates, payloads and opt-out traits (`unsubscribed_email`).
    pub fn name(self) -> &'static str {
        match self {
            Medium::Email => "email",
            Medium::Sms => "sms",
            Medium::Whatsapp => "whatsapp",
        }
    }

    /// The trait that, when true, means the person opted out of this channel (set by an
    /// inbound `Unsubscribed` or STOP, [`super::inbound`]).
    pub fn opt_out_trait(self) -> String {
        format!("unsubscribed_{}", self.name())
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Body {
    Email {
        subject: Template,
        html: Template,
    },
    Text(Template),
    Content {
        sid: String,
        variables: Vec<(String, Template)>,
    },
}

#[derive(Debug, Clone, PartialEq)]
enum Coupon {
    Fixed(String),
    PerPerson(String),
}

/// One parsed template.
#[derive(Debug, Clone, PartialEq)]
pub struct MessageTemplate {
    /// Its channel.
    pub medium: Medium,
    body: Body,
    coupon: Option<Coupon>,
    site_url: Option<String>,
}

impl MessageTemplate {
    /// Whether it makes a per-person coupon code (which needs the coupon secret).
    pub fn needs_secret(&self) -> bool {
        matches!(self.coupon, Some(Coupon::PerPerson(_)))
    }
}

/// Templates by name.
pub type Templates = BTreeMap<String, MessageTemplate>;

/// Parses a templates document (`{"name": {...}, ...}`; keys starting with `_` are comments).
pub fn parse_templates(doc: &Value) -> Result<Templates, TemplateConfigError> {
    let err = |template: &str, field: &str, problem: &str| TemplateConfigError {
        template: template.to_owned(),
        field: field.to_owned(),
        problem: problem.to_owned(),
    };
    let entries = doc
        .as_object()
        .ok_or_else(|| err("", "document", "must be an object keyed by template name"))?;
    if entries.len() > MAX_TEMPLATES {
        return Err(err("", "document", "has more than 200 templates"));
    }
    let mut out = Templates::new();
    for (name, raw) in entries.iter().filter(|(n, _)| !n.starts_with('_')) {
        let raw = raw
            .as_object()
            .ok_or_else(|| err(name, "entry", "must be an object"))?;
        let template = |field: &str| -> Result<Template, TemplateConfigError> {
            let source = raw
                .get(field)
                .and_then(Value::as_str)
                .ok_or_else(|| err(name, field, "is required (text)"))?;
            Template::parse(source).map_err(|e: TemplateError| err(name, field, &e.to_string()))
        };
        let medium = match raw.get("channel").and_then(Value::as_str) {
            Some("email") => Medium::Email,
            Some("sms") => Medium::Sms,
            Some("whatsapp") => Medium::Whatsapp,
            _ => {
                return Err(err(
                    name,
                    "channel",
                    "must be \"email\", \"sms\" or \"whatsapp\"",
                ))
            }
        };
        let body = match medium {
            Medium::Email => Body::Email {
                subject: template("subject")?,
                html: template("html")?,
            },
            Medium::Whatsapp if raw.contains_key("contentSid") => {
                let sid = raw
                    .get("contentSid")
                    .and_then(Value::as_str)
                    .filter(|s| s.starts_with("HX") && s.bytes().all(|b| b.is_ascii_alphanumeric()))
                    .ok_or_else(|| err(name, "contentSid", "must look like HX…"))?;
                let variables = match raw.get("variables") {
                    None => Vec::new(),
                    Some(Value::Object(vars)) => vars
                        .iter()
                        .map(|(k, v)| {
                            let field = format!("variables.{k}");
                            let source = v
                                .as_str()
                                .ok_or_else(|| err(name, &field, "must be text"))?;
                            Template::parse(source)
                                .map(|t| (k.clone(), t))
                                .map_err(|e| err(name, &field, &e.to_string()))
                        })
                        .collect::<Result<_, _>>()?,
                    Some(_) => return Err(err(name, "variables", "must be an object")),
                };
                Body::Content {
                    sid: sid.to_owned(),
                    variables,
                }
            }
            Medium::Sms | Medium::Whatsapp => Body::Text(template("text")?),
        };
        let coupon = match raw.get("coupon") {
            None | Some(Value::Null) => None,
            Some(c) => {
                let text = |k: &str| {
                    c.get(k)
                        .and_then(Value::as_str)
                        .filter(|s| {
                            !s.is_empty()
                                && s.len() <= 32
                                && s.bytes()
                                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                        })
                        .map(str::to_owned)
                };
                match (text("code"), text("prefix")) {
                    (Some(code), None) => Some(Coupon::Fixed(code)),
                    (None, Some(prefix)) => Some(Coupon::PerPerson(prefix)),
                    _ => {
                        return Err(err(
                            name,
                            "coupon",
                            "must be {\"code\": text} or {\"prefix\": text} (letters, digits, '-', '_', up to 32)",
                        ))
                    }
                }
            }
        };
        let site_url = match raw.get("siteUrl") {
            None | Some(Value::Null) => None,
            Some(Value::String(url))
                if (url.starts_with("https://") || url.starts_with("http://"))
                    && url.len() <= 200
                    && !url.chars().any(|c| c.is_whitespace() || c.is_control()) =>
            {
                Some(url.trim_end_matches('/').to_owned())
            }
            Some(_) => return Err(err(name, "siteUrl", "must be an http(s) URL")),
        };
        out.insert(
            name.clone(),
            MessageTemplate {
                medium,
                body,
                coupon,
                site_url,
            },
        );
    }
    Ok(out)
}

/// Who the message is for and what it knows about them.
#[derive(Debug, Clone, Copy)]
pub struct Recipient<'a> {
    /// Profile ID (per-person coupon codes derive from it).
    pub profile_id: &'a str,
    /// A trusted e-mail address, if the profile has one.
    pub email: Option<&'a str>,
    /// A trusted phone number (E.164), if the profile has one.
    pub phone: Option<&'a str>,
    /// Profile traits.
    pub traits: &'a Map<String, Value>,
    /// Computed traits (`cart` among them).
    pub computed: &'a Map<String, Value>,
}

/// Where the send belongs.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    /// Journey name.
    pub journey: &'a str,
    /// Step ID.
    pub step: &'a str,
    /// The send's key (`jrn_…`).
    pub key: &'a str,
    /// The event that started the journey (an event trigger's), as stored: `{{event.…}}`.
    pub event: Option<&'a Value>,
}

/// Why a message could not be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unsendable {
    /// The person opted out of the channel.
    Unsubscribed,
    /// No trusted address for the channel.
    NoContact,
}

impl Unsendable {
    /// Stable code, recorded as the decision's outcome.
    pub fn code(self) -> &'static str {
        match self {
            Unsendable::Unsubscribed => "unsubscribed",
            Unsendable::NoContact => "no_contact",
        }
    }
}

/// The message payload for one send: `{channel, to, journey, step, key, subject?, html?,
/// text?, contentSid?, variables?}`. `coupon_secret` keys per-person coupon codes.
pub fn render(
    template: &MessageTemplate,
    to: Recipient<'_>,
    origin: Origin<'_>,
    coupon_secret: &[u8],
) -> Result<Value, Unsendable> {
    let opted_out = match to.traits.get(&template.medium.opt_out_trait()) {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => matches!(s.as_str(), "true" | "yes"),
        _ => false,
    };
    if opted_out {
        return Err(Unsendable::Unsubscribed);
    }
    let address = match template.medium {
        Medium::Email => to.email,
        Medium::Sms | Medium::Whatsapp => to.phone,
    }
    .ok_or(Unsendable::NoContact)?;
    let code = match &template.coupon {
        Some(Coupon::Fixed(code)) => Some(code.clone()),
        Some(Coupon::PerPerson(prefix)) => {
            Some(coupon(coupon_secret, origin.journey, to.profile_id, prefix))
        }
        None => None,
    };
    let mut cart = to.computed.get("cart").cloned().unwrap_or(Value::Null);
    if let (Some(site), Value::Array(items)) = (&template.site_url, &mut cart) {
        for item in items.iter_mut() {
            let relative = item
                .get("url")
                .and_then(Value::as_str)
                .filter(|u| u.starts_with('/') && !u.starts_with("//"))
                .map(|u| format!("{site}{u}"));
            if let (Some(url), Some(item)) = (relative, item.as_object_mut()) {
                item.insert("url".into(), Value::from(url));
            }
        }
    }
    let context = json!({
        "profile": to.traits,
        "computed": to.computed,
        "cart": cart,
        "coupon": code,
        "journey": origin.journey,
        "event": origin.event,
    });
    let mut out = json!({
        "channel": template.medium.name(),
        "to": address,
        "journey": origin.journey,
        "step": origin.step,
        "key": origin.key,
    });
    match &template.body {
        Body::Email { subject, html } => {
            out["subject"] = Value::from(subject.render(&context, Channel::Text));
            out["html"] = Value::from(html.render(&context, Channel::Html));
        }
        Body::Text(text) => out["text"] = Value::from(text.render(&context, Channel::Text)),
        Body::Content { sid, variables } => {
            let vars: Map<String, Value> = variables
                .iter()
                .map(|(k, t)| (k.clone(), Value::from(t.render(&context, Channel::Text))))
                .collect();
            out["contentSid"] = Value::from(sid.as_str());
            out["variables"] = Value::Object(vars);
        }
    }
    if let Some(code) = code {
        out["coupon"] = Value::from(code);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn templates() -> Templates {
        parse_templates(&json!({
            "_comment": "ignored",
            "cart_reminder": {
                "channel": "email",
                "siteUrl": "https://shop.example/",
                "subject": "{{profile.first_name}}, your cart is waiting",
                "html": "<ul>{{#each cart}}<li><a href=\"{{url url}}\">{{name}}</a> {{price}}</li>{{/each}}</ul>"
            },
            "discount_10": {"channel": "whatsapp", "text": "10% off: {{coupon}}", "coupon": {"prefix": "SAVE10-"}},
            "approved": {"channel": "whatsapp", "contentSid": "HX123", "variables": {"1": "{{profile.first_name}}", "2": "{{coupon}}"}, "coupon": {"code": "WELCOME10"}}
        }))
        .unwrap()
    }

    fn traits() -> Map<String, Value> {
        json!({"first_name": "Ann <b>"})
            .as_object()
            .unwrap()
            .clone()
    }

    fn computed() -> Map<String, Value> {
        json!({"cart": [
            {"product_id": "p1", "name": "Trail <Runner>", "price": 129, "url": "/product?id=p1"},
            {"product_id": "p2", "name": "Sock", "price": 9.5, "url": "javascript:alert(1)"}
        ]})
        .as_object()
        .unwrap()
        .clone()
    }

    fn recipient<'a>(
        traits: &'a Map<String, Value>,
        computed: &'a Map<String, Value>,
    ) -> Recipient<'a> {
        Recipient {
            profile_id: "prof_1",
            email: Some("ann@shop.example"),
            phone: Some("+31612345678"),
            traits,
            computed,
        }
    }

    const ORIGIN: Origin<'static> = Origin {
        journey: "abandoned_checkout",
        step: "reminder",
        key: "jrn_1",
        event: None,
    };

    #[test]
    fn an_email_lists_the_cart_escaped_with_safe_links_only() {
        let (t, c) = (traits(), computed());
        let m = render(
            &templates()["cart_reminder"],
            recipient(&t, &c),
            ORIGIN,
            b"s",
        )
        .unwrap();
        assert_eq!(m["channel"], "email");
        assert_eq!(m["to"], "ann@shop.example");
        assert_eq!(m["subject"], "Ann <b>, your cart is waiting");
        let html = m["html"].as_str().unwrap();
        assert!(html.contains(">Trail &lt;Runner&gt;</a> 129"), "{html}");
        assert!(html.contains("href=\"https://shop.example/product?id=p1\""));
        assert!(html.contains("<a href=\"\">Sock</a> 9.5"), "{html}");
        assert_eq!(m["key"], "jrn_1");
    }

    #[test]
    fn a_per_person_coupon_is_stable_and_differs_between_people() {
        let (t, c) = (traits(), computed());
        let template = &templates()["discount_10"];
        let a = render(template, recipient(&t, &c), ORIGIN, b"s").unwrap();
        let again = render(template, recipient(&t, &c), ORIGIN, b"s").unwrap();
        let mut other = recipient(&t, &c);
        other.profile_id = "prof_2";
        let b = render(template, other, ORIGIN, b"s").unwrap();
        assert_eq!(a["to"], "+31612345678");
        assert!(a["coupon"].as_str().unwrap().starts_with("SAVE10-"));
        assert_eq!(
            a["text"],
            format!("10% off: {}", a["coupon"].as_str().unwrap())
        );
        assert_eq!(a, again);
        assert_ne!(a["coupon"], b["coupon"]);
    }

    #[test]
    fn the_triggering_event_fills_event_fields() {
        let templates = parse_templates(&json!({"thanks": {"channel": "sms",
            "text": "Order {{event.properties.order_id}}: {{event.properties.products.0.name|your items}} ships soon"}}))
        .unwrap();
        let (t, c) = (traits(), computed());
        let order = json!({"event": "Order Completed", "properties": {"order_id": "o-7", "products": [{"name": "Trail Runner"}]}});
        let origin = Origin {
            event: Some(&order),
            ..ORIGIN
        };
        let m = render(&templates["thanks"], recipient(&t, &c), origin, b"s").unwrap();
        assert_eq!(m["text"], "Order o-7: Trail Runner ships soon");
        let m = render(&templates["thanks"], recipient(&t, &c), ORIGIN, b"s").unwrap();
        assert_eq!(
            m["text"], "Order : your items ships soon",
            "no event: fields render empty"
        );
    }

    #[test]
    fn an_approved_whatsapp_template_fills_its_variables() {
        let (t, c) = (traits(), computed());
        let m = render(&templates()["approved"], recipient(&t, &c), ORIGIN, b"s").unwrap();
        assert_eq!(m["contentSid"], "HX123");
        assert_eq!(m["variables"], json!({"1": "Ann <b>", "2": "WELCOME10"}));
    }

    #[test]
    fn an_opt_out_or_a_missing_address_sends_nothing() {
        let c = computed();
        let mut t = traits();
        t.insert("unsubscribed_whatsapp".into(), json!(true));
        let templates = templates();
        assert_eq!(
            render(&templates["discount_10"], recipient(&t, &c), ORIGIN, b"s"),
            Err(Unsendable::Unsubscribed)
        );
        assert!(render(&templates["cart_reminder"], recipient(&t, &c), ORIGIN, b"s").is_ok());
        let mut no_email = recipient(&t, &c);
        no_email.email = None;
        assert_eq!(
            render(&templates["cart_reminder"], no_email, ORIGIN, b"s"),
            Err(Unsendable::NoContact)
        );
    }

    #[test]
    fn mistakes_name_the_template_and_field() {
        let table = [
            (
                json!({"t": {"channel": "fax"}}),
                "template t: channel must be",
            ),
            (
                json!({"t": {"channel": "email", "html": "x"}}),
                "template t: subject is required",
            ),
            (
                json!({"t": {"channel": "sms", "text": "{{#each a}}"}}),
                "template t: text has an unmatched",
            ),
            (
                json!({"t": {"channel": "sms", "text": "x", "coupon": {"code": "a b"}}}),
                "template t: coupon must be",
            ),
            (
                json!({"t": {"channel": "whatsapp", "contentSid": "XX1"}}),
                "template t: contentSid must",
            ),
            (json!([]), "template : document must be"),
        ];
        for (doc, want) in table {
            let e = parse_templates(&doc).unwrap_err().to_string();
            assert!(e.starts_with(want), "{e} should start with {want}");
        }
    }
}
