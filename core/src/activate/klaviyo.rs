//! Klaviyo (JSON:API, `revision` header), for e-mail flows and profiles.
//!
//! - A track (and page) becomes `POST {baseUrl}/api/events`: `{data: {type: "event", attributes:
//!   {properties, time, value?, value_currency?, unique_id, metric: {data: {type: "metric",
//!   attributes: {name}}}, profile: {data: {type: "profile", attributes: {…}}}}}}`, with the
//!   delivery ID as `unique_id` so a redelivery is not counted twice.
//! - An identify becomes `POST {baseUrl}/api/profile-import`: the profile's identifiers plus
//!   `first_name`, `last_name` and the other traits as `properties`.
//!
//! Profile identifiers: `email`, `phone_number` (E.164), `external_id` (the user ID) and
//! `anonymous_id`; an event with none of them is skipped.

use serde_json::{json, Map, Value};

use super::destination::{DestinationConfigError, Fields};
use super::{
    contact, event_name, number, properties, text, user_id, FollowUp, HttpRequest, Mapped, Outgoing,
};
use crate::format::encode::percent;
use crate::format::time::format_iso8601;
use crate::identity::{IdType, Identifier, Proof, Rules};

/// The real endpoint; tests point `baseUrl` at a local receiver.
pub const DEFAULT_BASE_URL: &str = "https://a.klaviyo.com";
/// API revision sent unless `revision` says otherwise.
pub const DEFAULT_REVISION: &str = "2024-10-15";

/// Klaviyo settings: `{"apiKey" (a private key), "revision"?, "baseUrl"?, "lists"?: {segment
/// name: list ID}}`.
#[allow(missing_docs)] // the fields say what they hold
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub api_key: String,
    pub revision: String,
    pub base_url: String,
    /// Audience sync: members of each segment are kept in a Klaviyo list.
    pub lists: Vec<(String, String)>,
}

impl Settings {
    pub(crate) fn parse(f: &Fields<'_>) -> Result<Self, DestinationConfigError> {
        let revision = f
            .optional("revision", "settings.revision")?
            .unwrap_or_else(|| DEFAULT_REVISION.to_owned());
        if revision.len() != 10 || revision.bytes().filter(|b| *b == b'-').count() != 2 {
            return Err(f.error("settings.revision", "must be a date like 2024-10-15"));
        }
        Ok(Self {
            api_key: f.required("apiKey", "settings.apiKey")?,
            revision,
            base_url: f.base_url("baseUrl", "settings.baseUrl", DEFAULT_BASE_URL)?,
            lists: f.string_map("lists", "settings.lists")?,
        })
    }

    fn request(&self, path: &str, body: &Value) -> HttpRequest {
        self.call("POST", path, body)
    }

    fn call(&self, method: &'static str, path: &str, body: &Value) -> HttpRequest {
        HttpRequest {
            method,
            url: format!("{}{path}", self.base_url),
            headers: vec![
                (
                    "authorization".into(),
                    format!("Klaviyo-API-Key {}", self.api_key),
                ),
                ("revision".into(), self.revision.clone()),
                ("accept".into(), "application/vnd.api+json".into()),
                ("content-type".into(), "application/vnd.api+json".into()),
            ],
            body: body.to_string(),
        }
    }
}

fn profile(event: &Value) -> Map<String, Value> {
    let mut p = Map::new();
    // Klaviyo refuses the whole request for an email that is none (a phone in the field, a
    // misspelt address, or under hashPii the value's `unusable:` form): it is left out.
    let email = contact(event, "email")
        .and_then(|e| Identifier::normalized(IdType::Email, &e, &Rules::default()));
    if let Some(email) = email {
        p.insert("email".into(), Value::from(email.value));
    }
    if let Some(phone) = contact(event, "phone") {
        let digits: String = phone.chars().filter(char::is_ascii_digit).collect();
        if !digits.is_empty() {
            p.insert("phone_number".into(), Value::from(format!("+{digits}")));
        }
    }
    if let Some(user) = user_id(event) {
        p.insert("external_id".into(), Value::from(user));
    }
    if let Some(anonymous) = text(event.get("anonymousId")) {
        p.insert("anonymous_id".into(), Value::from(anonymous));
    }
    p
}

/// A segment transition for a synced list: the profile goes in or out of the list, once
/// `profile-import` has named its Klaviyo ID.
#[derive(Debug, Clone, PartialEq)]
pub struct ListChange {
    settings: Settings,
    list_id: String,
    remove: bool,
}

impl ListChange {
    /// `POST` (add) or `DELETE` (remove) `/api/lists/{id}/relationships/profiles` for the
    /// profile `profile-import` answered with.
    pub fn request(&self, answer: &Value) -> Option<HttpRequest> {
        let profile_id = answer.get("data")?.get("id")?.as_str()?;
        let body = json!({"data": [{"type": "profile", "id": profile_id}]});
        let path = format!(
            "/api/lists/{}/relationships/profiles",
            percent(&self.list_id)
        );
        let method = if self.remove { "DELETE" } else { "POST" };
        Some(self.settings.call(method, &path, &body))
    }
}

/// A forwarded erasure: a data-privacy deletion job for the person's first email, else phone
/// (Klaviyo takes one identifier per job and no external ID).
pub fn erase(settings: &Settings, erasure: &Value) -> Mapped {
    let first = |field: &str| {
        erasure
            .get(field)
            .and_then(Value::as_array)
            .and_then(|values| values.iter().find_map(|v| text(Some(v))))
    };
    let attributes = if let Some(email) = first("emails") {
        json!({"email": email})
    } else if let Some(phone) = first("phones") {
        json!({"phone_number": phone})
    } else {
        return Mapped::Skip("no_deletable_identifier");
    };
    let body = json!({"data": {"type": "data-privacy-deletion-job", "attributes": {
        "profile": {"data": {"type": "profile", "attributes": attributes}}
    }}});
    Mapped::Send(settings.request("/api/data-privacy-deletion-jobs", &body))
}

/// The request for one event.
pub fn map(settings: &Settings, out: Outgoing<'_>) -> Mapped {
    let event = out.event;
    let mut attributes = profile(event);
    if attributes.is_empty() {
        return Mapped::Skip("no_profile_identifier");
    }
    let name = event_name(event);
    let transition = match name.as_str() {
        "Segment Entered" => Some(false),
        "Segment Exited" => Some(true),
        _ => None,
    };
    // Only the collector's own transitions move list members: a page could send any.
    let segment = (Proof::of_body(event.get("context")) == Proof::Trusted)
        .then(|| text(properties(event).get("segment")))
        .flatten();
    let list = segment.and_then(|s| settings.lists.iter().find(|(name, _)| *name == s));
    if let (Some(remove), Some((_, list_id))) = (transition, list) {
        let body = json!({"data": {"type": "profile", "attributes": attributes}});
        return Mapped::SendThen(
            settings.request("/api/profile-import", &body),
            FollowUp::KlaviyoList(ListChange {
                settings: settings.clone(),
                list_id: list_id.clone(),
                remove,
            }),
        );
    }
    if event.get("type").and_then(Value::as_str) == Some("identify") {
        let traits = event.get("traits").and_then(Value::as_object);
        let mut rest = Map::new();
        for (k, v) in traits.into_iter().flatten() {
            match k.as_str() {
                "firstName" | "first_name" => {
                    attributes.insert("first_name".into(), v.clone());
                }
                "lastName" | "last_name" => {
                    attributes.insert("last_name".into(), v.clone());
                }
                "email" | "phone" => {}
                _ => {
                    rest.insert(k.clone(), v.clone());
                }
            }
        }
        if !rest.is_empty() {
            attributes.insert("properties".into(), Value::Object(rest));
        }
        let body = json!({"data": {"type": "profile", "attributes": attributes}});
        return Mapped::Send(settings.request("/api/profile-import", &body));
    }
    if name.is_empty() {
        return Mapped::Skip("no_event_name");
    }
    let props = properties(event);
    let mut event_attributes = json!({
        "properties": props,
        "time": format_iso8601(out.timestamp_ms),
        "unique_id": out.delivery_id,
        "metric": {"data": {"type": "metric", "attributes": {"name": name}}},
        "profile": {"data": {"type": "profile", "attributes": attributes}},
    });
    if let Some(value) = number(props.get("revenue")).or_else(|| number(props.get("value"))) {
        event_attributes["value"] = json!(value);
        if let Some(currency) = text(props.get("currency")) {
            event_attributes["value_currency"] = Value::from(currency.to_uppercase());
        }
    }
    let body = json!({"data": {"type": "event", "attributes": event_attributes}});
    Mapped::Send(settings.request("/api/events", &body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            api_key: "pk_test".into(),
            revision: DEFAULT_REVISION.into(),
            base_url: DEFAULT_BASE_URL.into(),
            lists: vec![("high_value".into(), "LsT1".into())],
        }
    }

    fn send(event: &Value) -> HttpRequest {
        match map(
            &settings(),
            Outgoing {
                event,
                delivery_id: "dlv_9",
                attempt: 1,
                timestamp_ms: 1_767_225_600_000,
            },
        ) {
            Mapped::Send(r) => r,
            other => panic!("not sent: {other:?}"),
        }
    }

    #[test]
    fn an_erasure_becomes_a_deletion_job_by_email_then_phone() {
        let Mapped::Send(r) = erase(
            &settings(),
            &json!({"type": "delete", "emails": ["ann@shop.example"], "phones": ["+316"]}),
        ) else {
            panic!("expected a deletion job");
        };
        assert_eq!(
            r.url,
            "https://a.klaviyo.com/api/data-privacy-deletion-jobs"
        );
        assert_eq!(
            serde_json::from_str::<Value>(&r.body).unwrap(),
            json!({"data": {"type": "data-privacy-deletion-job", "attributes": {
                "profile": {"data": {"type": "profile", "attributes": {"email": "ann@shop.example"}}}}}})
        );
        let Mapped::Send(r) = erase(&settings(), &json!({"phones": ["+316"]})) else {
            panic!("expected a deletion job");
        };
        assert!(r.body.contains(r#""phone_number":"+316""#));
        assert_eq!(
            erase(&settings(), &json!({"userIds": ["u1"]})),
            Mapped::Skip("no_deletable_identifier")
        );
    }

    #[test]
    fn a_segment_transition_moves_the_profile_in_and_out_of_its_list() {
        let entered = json!({"type": "track", "event": "Segment Entered", "userId": "u1",
                             "properties": {"segment": "high_value"}});
        let out = Outgoing {
            event: &entered,
            delivery_id: "dlv_1",
            attempt: 1,
            timestamp_ms: 0,
        };
        let Mapped::SendThen(import, follow) = map(&settings(), out) else {
            panic!("expected a profile import and a list change");
        };
        assert_eq!(import.url, "https://a.klaviyo.com/api/profile-import");
        let body: Value = serde_json::from_str(&import.body).unwrap();
        assert_eq!(body["data"]["attributes"]["external_id"], json!("u1"));
        let answer = json!({"data": {"type": "profile", "id": "01KLAV"}});
        let add = follow.next(&answer).unwrap();
        assert_eq!(add.method, "POST");
        assert_eq!(
            add.url,
            "https://a.klaviyo.com/api/lists/LsT1/relationships/profiles"
        );
        assert_eq!(
            serde_json::from_str::<Value>(&add.body).unwrap(),
            json!({"data": [{"type": "profile", "id": "01KLAV"}]})
        );
        assert_eq!(add.header("revision"), Some(DEFAULT_REVISION));
        assert_eq!(follow.next(&json!({"errors": []})), None);

        let exited = json!({"type": "track", "event": "Segment Exited", "userId": "u1",
                            "properties": {"segment": "high_value"}});
        let Mapped::SendThen(_, follow) = map(
            &settings(),
            Outgoing {
                event: &exited,
                ..out
            },
        ) else {
            panic!("expected a list change");
        };
        assert_eq!(follow.next(&answer).unwrap().method, "DELETE");

        // A segment without a list is an ordinary event.
        let other = json!({"type": "track", "event": "Segment Entered", "userId": "u1",
                           "properties": {"segment": "churn_risk"}});
        assert_eq!(send(&other).url, "https://a.klaviyo.com/api/events");
    }

    #[test]
    fn an_email_field_holding_no_email_is_left_out_of_the_profile() {
        for junk in [
            "+31 6 1234 5678",
            "ann at shop",
            "unusable:abcdefghijklmnop",
        ] {
            let event = json!({
                "type": "track", "event": "Order Completed", "userId": "u1",
                "context": {"traits": {"email": junk}}
            });
            let body: Value = serde_json::from_str(&send(&event).body).unwrap();
            assert_eq!(
                body["data"]["attributes"]["profile"]["data"]["attributes"],
                json!({"external_id": "u1"}),
                "{junk}"
            );
        }
    }

    #[test]
    fn an_order_is_an_event_on_the_profile_with_a_unique_id() {
        let event = json!({
            "type": "track", "event": "Order Completed", "userId": "u1", "anonymousId": "a1",
            "properties": {"order_id": "o1", "revenue": 58.5, "currency": "eur"},
            "context": {"traits": {"email": "Ann@Shop.Example", "phone": "+31 6 1234 5678"}}
        });
        let r = send(&event);
        assert_eq!(r.url, "https://a.klaviyo.com/api/events");
        assert_eq!(r.header("Authorization"), Some("Klaviyo-API-Key pk_test"));
        assert_eq!(r.header("revision"), Some(DEFAULT_REVISION));
        assert_eq!(
            serde_json::from_str::<Value>(&r.body).unwrap(),
            json!({"data": {"type": "event", "attributes": {
                "properties": {"order_id": "o1", "revenue": 58.5, "currency": "eur"},
                "time": "2026-01-01T00:00:00.000Z", "unique_id": "dlv_9",
                "value": 58.5, "value_currency": "EUR",
                "metric": {"data": {"type": "metric", "attributes": {"name": "Order Completed"}}},
                "profile": {"data": {"type": "profile", "attributes": {
                    "email": "ann@shop.example", "phone_number": "+31612345678", "external_id": "u1", "anonymous_id": "a1"}}}
            }}})
        );
    }

    #[test]
    fn a_browsers_claims_never_reach_klaviyo_as_the_person() {
        // Anyone with the public key could send someone's email: it must not update their
        // Klaviyo profile or trigger their flows.
        let claimed = json!({"type": "identify", "userId": "victim", "anonymousId": "a1",
                             "traits": {"email": "victim@shop.example", "firstName": "Eve"},
                             "context": {"seam": {"identity": "claimed"}}});
        let body: Value = serde_json::from_str(&send(&claimed).body).unwrap();
        assert_eq!(
            body["data"]["attributes"],
            json!({"anonymous_id": "a1", "first_name": "Eve"})
        );
        let verified = json!({"type": "track", "event": "X", "userId": "ann", "anonymousId": "a1",
                              "context": {"seam": {"identity": "verified"}, "traits": {"email": "x@y.example"}}});
        let body: Value = serde_json::from_str(&send(&verified).body).unwrap();
        assert_eq!(
            body["data"]["attributes"]["profile"]["data"]["attributes"],
            json!({"external_id": "ann", "anonymous_id": "a1"}),
            "a token verifies the user ID, never the email"
        );
    }

    #[test]
    fn an_identify_imports_the_profile_and_a_bare_event_is_skipped() {
        let r = send(&json!({"type": "identify", "userId": "u1",
                             "traits": {"email": "a@b.example", "firstName": "Ann", "plan": "pro"}}));
        assert_eq!(r.url, "https://a.klaviyo.com/api/profile-import");
        assert_eq!(
            serde_json::from_str::<Value>(&r.body).unwrap(),
            json!({"data": {"type": "profile", "attributes": {
                "email": "a@b.example", "external_id": "u1", "first_name": "Ann", "properties": {"plan": "pro"}}}})
        );
        let minimal = send(&json!({"type": "page", "anonymousId": "a1"}));
        let body: Value = serde_json::from_str(&minimal.body).unwrap();
        assert_eq!(
            body["data"]["attributes"]["metric"]["data"]["attributes"]["name"],
            json!("Page Viewed")
        );
        assert!(body["data"]["attributes"].get("value").is_none());
        let nobody = json!({"type": "track", "event": "X"});
        assert_eq!(
            map(
                &settings(),
                Outgoing {
                    event: &nobody,
                    delivery_id: "d",
                    attempt: 1,
                    timestamp_ms: 0
                }
            ),
            Mapped::Skip("no_profile_identifier")
        );
    }
}
