//! Meta Conversions API: `POST {baseUrl}/{apiVersion}/{pixelId}/events?access_token=…` with
//! `{data: [{event_name, event_time, event_id, action_source, event_source_url, user_data,
//! custom_data}], test_event_code?}`.
//!
//! | Segment event | Meta event |
//! |---|---|
//! | page | `PageView` |
//! | Product Viewed | `ViewContent` |
//! | Product Added | `AddToCart` |
//! | Checkout Started | `InitiateCheckout` |
//! | Order Completed | `Purchase` |
//! | Products Searched | `Search` |
//! | Signed Up | `CompleteRegistration` |
//! | any other track | its own name (a custom event) |
//!
//! `event_id` is the `messageId`, so Meta deduplicates against the browser pixel sending the same
//! ID. `user_data`: `em`/`ph` as SHA-256 of the normalised email / phone (digits only),
//! `external_id` as SHA-256 of the user ID, else of the anonymous ID; `client_ip_address`,
//! `client_user_agent`, and `fbp`/`fbc` from `context` when present (never hashed).
//! `custom_data`: `value`, `currency`, `content_ids`, `contents[{id, quantity, item_price}]`,
//! `content_type: "product"`, `order_id`.

use serde_json::{json, Map, Value};

use super::destination::{DestinationConfigError, Fields};
use super::{
    contact, event_name, number, properties, text, user_id, HttpRequest, Mapped, Outgoing,
};
use crate::format::encode::percent;
use crate::identity::{sha256_hex, IdType, Identifier, Rules};

/// The real endpoint; tests point `baseUrl` at a local receiver.
pub const DEFAULT_BASE_URL: &str = "https://graph.facebook.com";
/// Graph API version used unless `apiVersion` says otherwise.
pub const DEFAULT_API_VERSION: &str = "v21.0";
/// Meta refuses events older than seven days.
pub const MAX_AGE_MS: i64 = 7 * 24 * 60 * 60 * 1000;

/// Meta settings: `{"pixelId", "accessToken", "apiVersion"?, "testEventCode"?, "baseUrl"?}`.
#[allow(missing_docs)] // the fields say what they hold
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub pixel_id: String,
    pub access_token: String,
    pub api_version: String,
    pub test_event_code: Option<String>,
    pub base_url: String,
}

impl Settings {
    pub(crate) fn parse(f: &Fields<'_>) -> Result<Self, DestinationConfigError> {
        let pixel_id = f.required("pixelId", "settings.pixelId")?;
        if !pixel_id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(f.error("settings.pixelId", "must be the pixel's numeric ID"));
        }
        let api_version = f
            .optional("apiVersion", "settings.apiVersion")?
            .unwrap_or_else(|| DEFAULT_API_VERSION.to_owned());
        let version_digits = api_version.strip_prefix('v').unwrap_or_default();
        if version_digits.is_empty()
            || !version_digits
                .bytes()
                .all(|b| b.is_ascii_digit() || b == b'.')
        {
            return Err(f.error("settings.apiVersion", "must look like v21.0"));
        }
        Ok(Self {
            pixel_id,
            access_token: f.required("accessToken", "settings.accessToken")?,
            api_version,
            test_event_code: f.optional("testEventCode", "settings.testEventCode")?,
            base_url: f.base_url("baseUrl", "settings.baseUrl", DEFAULT_BASE_URL)?,
        })
    }
}

fn meta_name(event: &Value) -> String {
    let name = event_name(event);
    match name.as_str() {
        "Page Viewed" => "PageView",
        "Product Viewed" => "ViewContent",
        "Product Added" => "AddToCart",
        "Checkout Started" => "InitiateCheckout",
        "Order Completed" => "Purchase",
        "Products Searched" => "Search",
        "Signed Up" => "CompleteRegistration",
        _ => return name,
    }
    .to_owned()
}

/// SHA-256 of a normalised email or phone; a value that already is a 64-hex-digit hash (Seam
/// stores hashes under `hashPii`) is passed on as it is.
fn hashed(kind: IdType, raw: &str) -> Option<String> {
    let trimmed = raw.trim().to_ascii_lowercase();
    if trimmed.len() == 64 && trimmed.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Some(trimmed);
    }
    let normalised = Identifier::normalized(kind.clone(), raw, &Rules::default())?;
    let value = match kind {
        // Meta wants digits only, country code included.
        IdType::Phone => normalised.value.trim_start_matches('+').to_owned(),
        _ => normalised.value,
    };
    Some(sha256_hex(value.as_bytes()))
}

fn user_data(event: &Value) -> Map<String, Value> {
    let context = event.get("context");
    let mut data = Map::new();
    if let Some(em) = contact(event, "email").and_then(|e| hashed(IdType::Email, &e)) {
        data.insert("em".into(), json!([em]));
    }
    if let Some(ph) = contact(event, "phone").and_then(|p| hashed(IdType::Phone, &p)) {
        data.insert("ph".into(), json!([ph]));
    }
    if let Some(id) = user_id(event).or_else(|| text(event.get("anonymousId"))) {
        data.insert("external_id".into(), json!([sha256_hex(id.as_bytes())]));
    }
    for (from, to) in [
        ("ip", "client_ip_address"),
        ("userAgent", "client_user_agent"),
        ("fbp", "fbp"),
        ("fbc", "fbc"),
    ] {
        if let Some(v) = text(context.and_then(|c| c.get(from))) {
            data.insert(to.into(), Value::from(v));
        }
    }
    data
}

fn custom_data(event: &Value) -> Map<String, Value> {
    let p = properties(event);
    let mut data = Map::new();
    let value = number(p.get("revenue"))
        .or_else(|| number(p.get("total")))
        .or_else(|| number(p.get("value")))
        .or_else(|| number(p.get("price")));
    if let Some(v) = value {
        data.insert("value".into(), json!(v));
    }
    if let Some(c) = text(p.get("currency")) {
        data.insert("currency".into(), Value::from(c.to_uppercase()));
    }
    if let Some(o) = text(p.get("order_id")) {
        data.insert("order_id".into(), Value::from(o));
    }
    let products: Vec<&Map<String, Value>> = match p.get("products").and_then(Value::as_array) {
        Some(list) => list.iter().filter_map(Value::as_object).collect(),
        None if p.contains_key("product_id") || p.contains_key("sku") => vec![p],
        None => Vec::new(),
    };
    let contents: Vec<Value> = products
        .iter()
        .filter_map(|item| {
            let id = text(item.get("product_id")).or_else(|| text(item.get("sku")))?;
            let mut c = json!({"id": id, "quantity": number(item.get("quantity")).unwrap_or(1.0)});
            if let Some(price) = number(item.get("price")) {
                c["item_price"] = json!(price);
            }
            Some(c)
        })
        .take(200)
        .collect();
    if !contents.is_empty() {
        let ids: Vec<Value> = contents.iter().map(|c| c["id"].clone()).collect();
        data.insert("content_ids".into(), Value::Array(ids));
        data.insert("contents".into(), Value::Array(contents));
        data.insert("content_type".into(), Value::from("product"));
    }
    data
}

/// The request for one event.
pub fn map(settings: &Settings, out: Outgoing<'_>) -> Mapped {
    let event = out.event;
    let name = meta_name(event);
    if name.is_empty() || matches!(name.as_str(), "Identify" | "Group" | "Alias") {
        return Mapped::Skip("not_a_conversion");
    }
    let Some(event_id) = text(event.get("messageId")) else {
        return Mapped::Skip("no_message_id");
    };
    let user_data = user_data(event);
    if user_data.is_empty() {
        return Mapped::Skip("no_user_data");
    }
    let mut data = json!({
        "event_name": name,
        "event_time": out.timestamp_ms.div_euclid(1000),
        "event_id": event_id,
        "action_source": "website",
        "user_data": user_data,
    });
    if let Some(url) = text(
        event
            .get("context")
            .and_then(|c| c.get("page"))
            .and_then(|p| p.get("url")),
    ) {
        data["event_source_url"] = Value::from(url);
    }
    let custom = custom_data(event);
    if !custom.is_empty() {
        data["custom_data"] = Value::Object(custom);
    }
    let mut body = json!({ "data": [data] });
    if let Some(code) = &settings.test_event_code {
        body["test_event_code"] = Value::from(code.as_str());
    }
    let url = format!(
        "{}/{}/{}/events?access_token={}",
        settings.base_url,
        settings.api_version,
        settings.pixel_id,
        percent(&settings.access_token)
    );
    Mapped::Send(HttpRequest::post_json(url, &body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            pixel_id: "1234567890".into(),
            access_token: "EAAB".into(),
            api_version: DEFAULT_API_VERSION.into(),
            test_event_code: None,
            base_url: DEFAULT_BASE_URL.into(),
        }
    }

    fn send(event: &Value) -> (String, Value) {
        match map(
            &settings(),
            Outgoing {
                event,
                delivery_id: "dlv",
                attempt: 1,
                timestamp_ms: 1_767_225_600_999,
            },
        ) {
            Mapped::Send(r) => (r.url, serde_json::from_str(&r.body).unwrap()),
            other => panic!("not sent: {other:?}"),
        }
    }

    #[test]
    fn a_purchase_with_hashed_user_data_and_contents() {
        let event = json!({
            "type": "track", "event": "Order Completed", "messageId": "m-1", "userId": "u1", "anonymousId": "a1",
            "properties": {"order_id": "o1", "revenue": 58.5, "currency": "eur",
                           "products": [{"product_id": "p1", "price": 49.5, "quantity": 1}, {"sku": "s2", "price": 9}]},
            "context": {"traits": {"email": " Ann@Shop.Example ", "phone": "+1 (555) 010-9999"},
                        "ip": "203.0.113.0", "userAgent": "UA", "fbp": "fb.1.1.1",
                        "page": {"url": "https://shop.example/checkout"}}
        });
        let (url, body) = send(&event);
        assert_eq!(
            url,
            "https://graph.facebook.com/v21.0/1234567890/events?access_token=EAAB"
        );
        assert_eq!(
            body,
            json!({"data": [{
                "event_name": "Purchase", "event_time": 1_767_225_600, "event_id": "m-1",
                "action_source": "website", "event_source_url": "https://shop.example/checkout",
                "user_data": {
                    "em": [sha256_hex(b"ann@shop.example")],
                    "ph": [sha256_hex(b"15550109999")],
                    "external_id": [sha256_hex(b"u1")],
                    "client_ip_address": "203.0.113.0", "client_user_agent": "UA", "fbp": "fb.1.1.1"
                },
                "custom_data": {
                    "value": 58.5, "currency": "EUR", "order_id": "o1", "content_ids": ["p1", "s2"],
                    "contents": [{"id": "p1", "quantity": 1.0, "item_price": 49.5}, {"id": "s2", "quantity": 1.0, "item_price": 9.0}],
                    "content_type": "product"
                }
            }]})
        );
    }

    #[test]
    fn a_minimal_page_view_and_what_is_not_sent() {
        let (_, body) = send(&json!({"type": "page", "messageId": "m2", "anonymousId": "a1"}));
        assert_eq!(body["data"][0]["event_name"], json!("PageView"));
        assert_eq!(
            body["data"][0]["user_data"],
            json!({"external_id": [sha256_hex(b"a1")]})
        );
        assert!(body["data"][0].get("custom_data").is_none());
        let identify = json!({"type": "identify", "messageId": "m3", "userId": "u1"});
        assert_eq!(
            map(
                &settings(),
                Outgoing {
                    event: &identify,
                    delivery_id: "d",
                    attempt: 1,
                    timestamp_ms: 0
                }
            ),
            Mapped::Skip("not_a_conversion")
        );
        // A hashed email (hashPii) passes through unchanged.
        let h = sha256_hex(b"ann@shop.example");
        assert_eq!(hashed(IdType::Email, &h.to_uppercase()), Some(h));
    }
}
