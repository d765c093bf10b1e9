//! Message templates for journeys: `{{path}}` fields and `{{#each path}}…{{/each}}` loops over
//! lists (the cart's items), filled from the person's profile, the triggering event and a
//! coupon code, and escaped for their channel (HTML for e-mail, plain text for SMS and
//! WhatsApp). Parsed once, so a broken template is refused when uploaded, not when sent.
//!
//! Paths read a JSON context: `profile.first_name`, `cart.0.name`, `coupon`; inside a loop,
//! paths are relative to the item (`name`, `price`, `url`), and `this` is the item itself. A
//! missing value renders as nothing.

use serde_json::Value;

use crate::collect::proof::hmac_sha256;

/// Longest template source.
pub const MAX_TEMPLATE_BYTES: usize = 64 * 1024;
/// Most items one loop renders.
pub const MAX_LOOP_ITEMS: usize = 50;

/// How values are escaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// E-mail HTML: `&<>"'` escaped, and URLs other than http(s) or site-relative dropped from
    /// `{{url …}}` fields.
    Html,
    /// SMS and WhatsApp: control characters removed.
    Text,
}

/// Why a template was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// Longer than [`MAX_TEMPLATE_BYTES`].
    #[error("is longer than 64 KB")]
    TooLong,
    /// A `{{` without its `}}`.
    #[error("has a {{{{ without }}}} at byte {0}")]
    Unclosed(usize),
    /// An `{{#each}}` without `{{/each}}`, or the reverse, or loops inside loops.
    #[error("has an unmatched or nested {{{{#each}}}} at byte {0}")]
    Loop(usize),
    /// A path with empty segments or odd characters.
    #[error("has a field that is not a dotted path at byte {0}")]
    BadPath(usize),
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    Field {
        path: Vec<String>,
        url: bool,
        fallback: Option<String>,
    },
    Each {
        path: Vec<String>,
        body: Vec<Part>,
    },
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    parts: Vec<Part>,
}

impl Template {
    /// Parses `source`.
    pub fn parse(source: &str) -> Result<Self, TemplateError> {
        if source.len() > MAX_TEMPLATE_BYTES {
            return Err(TemplateError::TooLong);
        }
        let mut parts: Vec<Part> = Vec::new();
        let mut open_loop: Option<(usize, Vec<String>, Vec<Part>)> = None;
        let mut rest = source;
        let mut at = 0;
        while let Some(start) = rest.find("{{") {
            let text = &rest[..start];
            let close = rest[start..]
                .find("}}")
                .ok_or(TemplateError::Unclosed(at + start))?;
            let tag = rest[start + 2..start + close].trim();
            let here = at + start;
            let target = match &mut open_loop {
                Some((_, _, body)) => body,
                None => &mut parts,
            };
            if !text.is_empty() {
                target.push(Part::Text(text.to_owned()));
            }
            if let Some(path) = tag.strip_prefix("#each") {
                if open_loop.is_some() {
                    return Err(TemplateError::Loop(here));
                }
                open_loop = Some((here, path_of(path, here)?, Vec::new()));
            } else if tag == "/each" {
                let (_, path, body) = open_loop.take().ok_or(TemplateError::Loop(here))?;
                parts.push(Part::Each { path, body });
            } else {
                // `{{path|fallback}}`: the fallback text stands in for a missing or empty value.
                let (field, fallback) = match tag.split_once('|') {
                    Some((field, fallback)) => (field, Some(fallback.trim().to_owned())),
                    None => (tag, None),
                };
                let (field, url) = match field.strip_prefix("url ") {
                    Some(path) => (path, true),
                    None => (field, false),
                };
                target.push(Part::Field {
                    path: path_of(field, here)?,
                    url,
                    fallback,
                });
            }
            let consumed = start + close + 2;
            at += consumed;
            rest = &rest[consumed..];
        }
        if let Some((start, _, _)) = open_loop {
            return Err(TemplateError::Loop(start));
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        Ok(Self { parts })
    }

    /// The template filled from `context`, escaped for `channel`.
    pub fn render(&self, context: &Value, channel: Channel) -> String {
        let mut out = String::new();
        render_parts(&self.parts, context, context, channel, &mut out);
        out
    }
}

fn path_of(text: &str, at: usize) -> Result<Vec<String>, TemplateError> {
    let text = text.trim();
    let ok = !text.is_empty()
        && text.split('.').all(|seg| {
            !seg.is_empty()
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        });
    if !ok {
        return Err(TemplateError::BadPath(at));
    }
    Ok(text.split('.').map(str::to_owned).collect())
}

fn lookup<'a>(root: &'a Value, item: &'a Value, path: &[String]) -> Option<&'a Value> {
    let (first, rest) = path.split_first()?;
    // The context's own names come first: a cart item (a page's claim) cannot stand in for
    // `coupon` or `profile` inside a loop.
    let start = if first == "this" {
        item
    } else {
        match root.get(first.as_str()) {
            Some(v) => v,
            None => item.get(first.as_str())?,
        }
    };
    rest.iter().try_fold(start, |v, seg| match v {
        Value::Array(list) => seg.parse::<usize>().ok().and_then(|i| list.get(i)),
        _ => v.get(seg.as_str()),
    })
}

fn render_parts(parts: &[Part], root: &Value, item: &Value, channel: Channel, out: &mut String) {
    for part in parts {
        match part {
            Part::Text(text) => out.push_str(text),
            Part::Field {
                path,
                url,
                fallback,
            } => {
                let mut text = match lookup(root, item, path) {
                    Some(Value::String(s)) => s.clone(),
                    Some(Value::Number(n)) => n.to_string(),
                    Some(Value::Bool(b)) => b.to_string(),
                    _ => String::new(),
                };
                if text.trim().is_empty() {
                    text = fallback.clone().unwrap_or_default();
                }
                // Judged as written: no whitespace or control character may hide a scheme or
                // a second slash that escaping would then reveal.
                if *url && !is_safe_url(&text) {
                    continue;
                }
                escape_into(&text, channel, out);
            }
            Part::Each { path, body } => {
                if let Some(Value::Array(items)) = lookup(root, item, path) {
                    for each in items.iter().take(MAX_LOOP_ITEMS) {
                        render_parts(body, root, each, channel, out);
                    }
                }
            }
        }
    }
}

fn is_safe_url(url: &str) -> bool {
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return false;
    }
    let lower = url.to_ascii_lowercase();
    lower.starts_with("https://")
        || lower.starts_with("http://")
        || (lower.starts_with('/') && !lower.starts_with("//") && !lower.starts_with("/\\"))
}

fn escape_into(text: &str, channel: Channel, out: &mut String) {
    for c in text.chars() {
        match (channel, c) {
            (Channel::Html, '&') => out.push_str("&amp;"),
            (Channel::Html, '<') => out.push_str("&lt;"),
            (Channel::Html, '>') => out.push_str("&gt;"),
            (Channel::Html, '"') => out.push_str("&quot;"),
            (Channel::Html, '\'') => out.push_str("&#39;"),
            (_, c) if c.is_control() && c != '\n' => {}
            (_, c) => out.push(c),
        }
    }
}

/// A coupon code unique to a person in a journey: `prefix` and 8 characters that only the
/// holder of `secret` can compute (so codes cannot be guessed from a profile ID).
pub fn coupon(secret: &[u8], journey: &str, profile_id: &str, prefix: &str) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mac = hmac_sha256(
        secret,
        format!("coupon\n{journey}\n{profile_id}").as_bytes(),
    );
    let code: String = mac
        .iter()
        .take(8)
        .map(|b| ALPHABET[usize::from(*b) % 32] as char)
        .collect();
    format!("{prefix}{code}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn context() -> Value {
        json!({
            "profile": {"first_name": "Ann <script>", "email": "ann@shop.example"},
            "cart": [
                {"name": "Trail Runner", "price": 129, "url": "/product.html?id=p1"},
                {"name": "Sock \"Pro\"", "price": 9.5, "url": "javascript:alert(1)"}
            ],
            "coupon": "SAVE10-ABCD"
        })
    }

    #[test]
    fn fills_fields_and_cart_items_escaped_for_html() {
        let t = Template::parse(
            "<p>Hi {{ profile.first_name }},</p><ul>{{#each cart}}<li><a href=\"{{url url}}\">{{name}}</a> €{{price}}</li>{{/each}}</ul>{{missing.field}}",
        )
        .unwrap();
        assert_eq!(
            t.render(&context(), Channel::Html),
            "<p>Hi Ann &lt;script&gt;,</p><ul><li><a href=\"/product.html?id=p1\">Trail Runner</a> €129</li>\
             <li><a href=\"\">Sock &quot;Pro&quot;</a> €9.5</li></ul>"
        );
    }

    #[test]
    fn hidden_schemes_and_items_posing_as_the_context_render_nothing() {
        let t = Template::parse("{{#each cart}}<a href=\"{{url url}}\">{{coupon}}</a>{{/each}}")
            .unwrap();
        let c = json!({"coupon": "REAL", "cart": [
            {"url": "/\t/evil.example", "coupon": "FAKE"},
            {"url": " https://shop.example/x"},
            {"url": "HTTPS://shop.example/ok"}
        ]});
        assert_eq!(
            t.render(&c, Channel::Html),
            "<a href=\"\">REAL</a><a href=\"\">REAL</a><a href=\"HTTPS://shop.example/ok\">REAL</a>"
        );
    }

    #[test]
    fn a_fallback_stands_in_for_a_missing_or_empty_value() {
        let t =
            Template::parse("Hi {{profile.first_name|there}}, {{profile.nickname | friend <3}}!")
                .unwrap();
        let ctx = json!({"profile": {"first_name": "Ann", "nickname": "  "}});
        assert_eq!(t.render(&ctx, Channel::Html), "Hi Ann, friend &lt;3!");
        assert_eq!(t.render(&json!({}), Channel::Text), "Hi there, friend <3!");
        let link = Template::parse("{{url next|javascript:alert(1)}}").unwrap();
        assert_eq!(
            link.render(&json!({}), Channel::Html),
            "",
            "a fallback URL is checked too"
        );
    }

    #[test]
    fn text_channels_keep_characters_but_no_controls() {
        let t = Template::parse(
            "Hi {{profile.first_name}}! Use {{coupon}} for 10% off {{cart.0.name}}.",
        )
        .unwrap();
        let mut c = context();
        c["profile"]["first_name"] = json!("Ann\u{0007} & co");
        assert_eq!(
            t.render(&c, Channel::Text),
            "Hi Ann & co! Use SAVE10-ABCD for 10% off Trail Runner."
        );
    }

    #[test]
    fn broken_templates_are_refused_where_they_break() {
        assert_eq!(
            Template::parse("Hi {{name"),
            Err(TemplateError::Unclosed(3))
        );
        assert_eq!(
            Template::parse("{{#each cart}}x"),
            Err(TemplateError::Loop(0))
        );
        assert_eq!(Template::parse("x{{/each}}"), Err(TemplateError::Loop(1)));
        assert_eq!(
            Template::parse("{{#each a}}{{#each b}}{{/each}}{{/each}}"),
            Err(TemplateError::Loop(11))
        );
        assert_eq!(Template::parse("{{a..b}}"), Err(TemplateError::BadPath(0)));
        assert_eq!(
            Template::parse(&"x".repeat(MAX_TEMPLATE_BYTES + 1)),
            Err(TemplateError::TooLong)
        );
    }

    #[test]
    fn coupons_are_stable_per_person_and_unguessable_without_the_secret() {
        let a = coupon(
            b"secret-0123456789",
            "abandoned_checkout",
            "prof_1",
            "SAVE10-",
        );
        assert_eq!(
            a,
            coupon(
                b"secret-0123456789",
                "abandoned_checkout",
                "prof_1",
                "SAVE10-"
            )
        );
        assert!(a.starts_with("SAVE10-") && a.len() == 15);
        assert_ne!(
            a,
            coupon(
                b"secret-0123456789",
                "abandoned_checkout",
                "prof_2",
                "SAVE10-"
            )
        );
        assert_ne!(
            a,
            coupon(
                b"another-secret-xyz",
                "abandoned_checkout",
                "prof_1",
                "SAVE10-"
            )
        );
    }
}
