//! Google Analytics 4 through the Measurement Protocol:
//! `POST {baseUrl}/mp/collect?measurement_id=…&api_secret=…` with
//! `{client_id, user_id?, timestamp_micros, consent, events: [{name, params}]}`.
//!
//! | Segment event | GA4 event | params |
//! |---|---|---|
//! | page | `page_view` | `page_location`, `page_title`, `page_referrer` |
//! | Products Searched | `search` | `search_term` |
//! | Product List Viewed | `view_item_list` | `item_list_id`, `items` |
//! | Product Viewed | `view_item` | `currency`, `value`, `items` |
//! | Product Added / Removed | `add_to_cart` / `remove_from_cart` | `currency`, `value`, `items` |
//! | Cart Viewed | `view_cart` | `currency`, `value`, `items` |
//! | Checkout Started | `begin_checkout` | `currency`, `value`, `coupon`, `items` |
//! | Order Completed | `purchase` | `transaction_id`, `currency`, `value`, `tax`, `shipping`, `coupon`, `items` |
//! | Order Refunded | `refund` | `transaction_id`, `currency`, `value`, `items` |
//! | Signed Up / Signed In | `sign_up` / `login` | `method` |
//! | any other track | its name in snake_case (≤ 40 characters) | its scalar properties (≤ 25) |
//!
//! `client_id` is the anonymous ID (an event with none is skipped); `items` are
//! `{item_id, item_name, item_category, item_brand, item_variant, price, quantity, coupon}`.

use serde_json::{json, Map, Value};

use super::destination::{DestinationConfigError, Fields};
use super::{event_name, number, properties, text, user_id, HttpRequest, Mapped, Outgoing};
use crate::consent::{self, ConsentState};
use crate::format::encode::percent;

/// The real endpoint; tests point `baseUrl` at a local receiver.
pub const DEFAULT_BASE_URL: &str = "https://www.google-analytics.com";

/// GA4 settings: `{"measurementId": "G-…", "apiSecret", "baseUrl"?}`.
#[allow(missing_docs)] // the fields say what they hold
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub measurement_id: String,
    pub api_secret: String,
    pub base_url: String,
}

impl Settings {
    pub(crate) fn parse(f: &Fields<'_>) -> Result<Self, DestinationConfigError> {
        let measurement_id = f.required("measurementId", "settings.measurementId")?;
        if !measurement_id.starts_with("G-")
            || !measurement_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(f.error("settings.measurementId", "must look like G-XXXXXXX"));
        }
        Ok(Self {
            measurement_id,
            api_secret: f.required("apiSecret", "settings.apiSecret")?,
            base_url: f.base_url("baseUrl", "settings.baseUrl", DEFAULT_BASE_URL)?,
        })
    }
}

fn ga4_name(event: &Value) -> String {
    let name = event_name(event);
    let mapped = match name.as_str() {
        "Page Viewed" => "page_view",
        "Screen Viewed" => "screen_view",
        "Products Searched" => "search",
        "Product List Viewed" => "view_item_list",
        "Product Viewed" => "view_item",
        "Product Added" => "add_to_cart",
        "Product Removed" => "remove_from_cart",
        "Cart Viewed" => "view_cart",
        "Checkout Started" => "begin_checkout",
        "Order Completed" => "purchase",
        "Order Refunded" => "refund",
        "Signed Up" => "sign_up",
        "Signed In" => "login",
        _ => {
            let mut snake = String::new();
            for c in name.chars() {
                if c.is_ascii_alphanumeric() {
                    snake.push(c.to_ascii_lowercase());
                } else if !snake.ends_with('_') && !snake.is_empty() {
                    snake.push('_');
                }
            }
            let snake = snake.trim_end_matches('_');
            return snake.chars().take(40).collect();
        }
    };
    mapped.to_owned()
}

fn item(p: &Map<String, Value>) -> Value {
    let mut item = Map::new();
    for (from, to) in [
        ("product_id", "item_id"),
        ("sku", "item_id"),
        ("name", "item_name"),
        ("category", "item_category"),
        ("brand", "item_brand"),
        ("variant", "item_variant"),
        ("coupon", "coupon"),
    ] {
        if let (false, Some(v)) = (item.contains_key(to), text(p.get(from))) {
            item.insert(to.into(), Value::from(v));
        }
    }
    for (from, to) in [("price", "price"), ("quantity", "quantity")] {
        if let Some(v) = number(p.get(from)) {
            item.insert(to.into(), json!(v));
        }
    }
    Value::Object(item)
}

fn items(p: &Map<String, Value>) -> Vec<Value> {
    match p.get("products").and_then(Value::as_array) {
        Some(products) => products
            .iter()
            .filter_map(Value::as_object)
            .map(item)
            .take(200)
            .collect(),
        None if p.contains_key("product_id") || p.contains_key("sku") => vec![item(p)],
        None => Vec::new(),
    }
}

fn params(event: &Value, name: &str) -> Map<String, Value> {
    let p = properties(event);
    let mut out = Map::new();
    let mut put = |key: &str, value: Option<Value>| {
        if let Some(v) = value {
            out.insert(key.into(), v);
        }
    };
    let money = |k: &str| number(p.get(k)).map(|v| json!(v));
    match name {
        "page_view" => {
            let page = event.get("context").and_then(|c| c.get("page"));
            put(
                "page_location",
                text(page.and_then(|p| p.get("url"))).map(Value::from),
            );
            put(
                "page_title",
                text(page.and_then(|p| p.get("title"))).map(Value::from),
            );
            put(
                "page_referrer",
                text(page.and_then(|p| p.get("referrer"))).map(Value::from),
            );
        }
        "search" => put("search_term", text(p.get("query")).map(Value::from)),
        "sign_up" | "login" => put("method", text(p.get("method")).map(Value::from)),
        "view_item_list" | "view_item" | "add_to_cart" | "remove_from_cart" | "view_cart"
        | "begin_checkout" | "purchase" | "refund" => {
            put("item_list_id", text(p.get("list_id")).map(Value::from));
            put("transaction_id", text(p.get("order_id")).map(Value::from));
            put(
                "value",
                money("revenue")
                    .or_else(|| money("total"))
                    .or_else(|| money("value"))
                    .or_else(|| {
                        let price = number(p.get("price"))?;
                        Some(json!(price * number(p.get("quantity")).unwrap_or(1.0)))
                    }),
            );
            put(
                "currency",
                text(p.get("currency")).map(|c| Value::from(c.to_uppercase())),
            );
            put("tax", money("tax"));
            put("shipping", money("shipping"));
            put("coupon", text(p.get("coupon")).map(Value::from));
            let items = items(p);
            if !items.is_empty() {
                out.insert("items".into(), Value::Array(items));
            }
        }
        _ => {
            for (k, v) in p
                .iter()
                .filter(|(_, v)| v.is_string() || v.is_number() || v.is_boolean())
                .take(25)
            {
                let key: String = k.chars().take(40).collect();
                out.insert(key, v.clone());
            }
        }
    }
    out
}

/// The request for one event.
pub fn map(settings: &Settings, out: Outgoing<'_>) -> Mapped {
    let event = out.event;
    let Some(client_id) = text(event.get("anonymousId")) else {
        return Mapped::Skip("no_client_id");
    };
    let name = ga4_name(event);
    if name.is_empty() {
        return Mapped::Skip("no_event_name");
    }
    let state = ConsentState::from_context(event.get("context"), false);
    let flag = |p| if state.allows(p) { "GRANTED" } else { "DENIED" };
    let mut body = json!({
        "client_id": client_id,
        "consent": {
            "ad_user_data": flag(consent::Purpose::AdUserData),
            "ad_personalization": flag(consent::Purpose::AdPersonalization),
        },
        "events": [{"name": name, "params": params(event, &name)}],
    });
    if let Some(user) = user_id(event) {
        body["user_id"] = Value::from(user);
    }
    body["timestamp_micros"] = json!(out.timestamp_ms.saturating_mul(1000));
    let url = format!(
        "{}/mp/collect?measurement_id={}&api_secret={}",
        settings.base_url,
        settings.measurement_id,
        percent(&settings.api_secret)
    );
    Mapped::Send(HttpRequest::post_json(url, &body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            measurement_id: "G-TEST123".into(),
            api_secret: "s3cr/t".into(),
            base_url: DEFAULT_BASE_URL.into(),
        }
    }

    fn body(event: &Value) -> Value {
        match map(
            &settings(),
            Outgoing {
                event,
                delivery_id: "dlv_1",
                attempt: 1,
                timestamp_ms: 1_767_225_600_000,
            },
        ) {
            Mapped::Send(r) => {
                assert_eq!(
                    r.url,
                    "https://www.google-analytics.com/mp/collect?measurement_id=G-TEST123&api_secret=s3cr%2Ft"
                );
                serde_json::from_str(&r.body).unwrap()
            }
            other => panic!("not sent: {other:?}"),
        }
    }

    #[test]
    fn an_order_becomes_a_purchase_with_items() {
        let event = json!({
            "type": "track", "event": "Order Completed", "anonymousId": "a1", "userId": "u1",
            "timestamp": "2026-01-01T00:00:00.000Z",
            "properties": {"order_id": "o1", "revenue": 58.5, "tax": 4, "currency": "eur", "coupon": "TEN",
                           "products": [{"product_id": "p1", "name": "Trail Runner", "category": "Shoes", "price": 49.5, "quantity": 1},
                                        {"sku": "s2", "price": "9", "quantity": 1}]},
            "context": {"consent": {"gcm": {"analytics_storage": "granted", "ad_user_data": "granted", "ad_personalization": "denied"}}}
        });
        assert_eq!(
            body(&event),
            json!({
                "client_id": "a1", "user_id": "u1", "timestamp_micros": 1_767_225_600_000_000_i64,
                "consent": {"ad_user_data": "GRANTED", "ad_personalization": "DENIED"},
                "events": [{"name": "purchase", "params": {
                    "transaction_id": "o1", "value": 58.5, "currency": "EUR", "tax": 4.0, "coupon": "TEN",
                    "items": [
                        {"item_id": "p1", "item_name": "Trail Runner", "item_category": "Shoes", "price": 49.5, "quantity": 1.0},
                        {"item_id": "s2", "price": 9.0, "quantity": 1.0}
                    ]}}]
            })
        );
    }

    #[test]
    fn a_minimal_view_a_page_and_a_custom_event() {
        let view = json!({"type": "track", "event": "Product Viewed", "anonymousId": "a1",
                          "properties": {"product_id": "p1", "price": 20, "quantity": 2}});
        let b = body(&view);
        assert_eq!(b["events"][0]["name"], json!("view_item"));
        assert_eq!(b["events"][0]["params"]["value"], json!(40.0));
        assert_eq!(
            b["consent"],
            json!({"ad_user_data": "GRANTED", "ad_personalization": "GRANTED"}),
            "no consent object: not restricted"
        );
        assert!(b.get("user_id").is_none());
        let page = json!({"type": "page", "anonymousId": "a1", "context": {"page": {"url": "https://shop.example/p", "title": "P"}}});
        assert_eq!(
            body(&page)["events"][0],
            json!({"name": "page_view", "params": {"page_location": "https://shop.example/p", "page_title": "P"}})
        );
        let custom = json!({"type": "track", "event": "Wishlist: Item Saved!", "anonymousId": "a1", "properties": {"list": "x", "nested": {"no": 1}}});
        assert_eq!(
            body(&custom)["events"][0],
            json!({"name": "wishlist_item_saved", "params": {"list": "x"}})
        );
    }

    #[test]
    fn an_event_without_an_anonymous_id_is_skipped() {
        let server = json!({"type": "track", "event": "Order Completed", "userId": "u1"});
        assert_eq!(
            map(
                &settings(),
                Outgoing {
                    event: &server,
                    delivery_id: "d",
                    attempt: 1,
                    timestamp_ms: 0
                }
            ),
            Mapped::Skip("no_client_id")
        );
    }
}
