//! What an event carries: its identifiers, read from the fields in the module docs' table,
//! normalised, blocked values dropped.

use serde_json::{Map, Value};

use super::identifier::{is_sha256_hex, IdType, Identifier};
use super::rules::Rules;
use crate::collect::event::{Event, EventType};
use crate::format::id::is_uuid;

/// Where the `context.seam.identity` marker is kept: the collector writes it on every event
/// from a browser source (and removes whatever the client sent there).
pub const PROOF_FIELD: &str = "identity";

/// How far an event's identifiers are proven, from the marker the collector wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proof {
    /// No marker: a server source (or a browser source that trusts browsers): every identifier
    /// counts.
    Trusted,
    /// `"verified"`: a browser event whose `userId` carried a valid identity token. The user ID
    /// and the event's own anonymous ID count (and a `context.seam.cookieId` that earlier
    /// versions of the collector recorded); a device ID is only a claim ([`claims_of`]); emails,
    /// phones, external IDs and anonymous IDs named elsewhere are not identifiers (they stay on
    /// the event).
    Verified,
    /// `"claimed"` (or any other marker: fail closed): a browser event without a valid token.
    /// As `Verified`, but the user ID is not an identifier either.
    Claimed,
}

impl Proof {
    /// The marker's value for this level (`None` for [`Proof::Trusted`]: no marker).
    pub fn marker(self) -> Option<&'static str> {
        match self {
            Proof::Trusted => None,
            Proof::Verified => Some("verified"),
            Proof::Claimed => Some("claimed"),
        }
    }

    /// The level recorded on `event`.
    pub fn of(event: &Event) -> Self {
        Self::of_body(event.body.get("context"))
    }

    /// The level recorded in a stored event's `context`.
    pub fn of_body(context: Option<&Value>) -> Self {
        let marker = context
            .and_then(|c| c.get("seam"))
            .and_then(|s| s.get(PROOF_FIELD));
        match marker {
            None => Proof::Trusted,
            Some(Value::String(v)) if v == "verified" => Proof::Verified,
            Some(_) => Proof::Claimed,
        }
    }

    /// Whether an identifier of `kind` read anywhere but the event's own `userId` and
    /// `anonymousId` counts. From a browser, an anonymous ID named elsewhere (an alias's
    /// `previousId`, `context.externalIds`) is someone else's for all anyone knows: anonymous IDs
    /// are not secret (destinations receive them).
    fn admits(self, kind: &IdType) -> bool {
        self == Proof::Trusted || matches!(kind, IdType::CookieId | IdType::DeviceId)
    }
}

/// Which of `identifiers` (those [`identifiers_of`] read from `event`) the sender only claims:
/// for a browser event its device ID. A browser event's own anonymous ID is its identity: the
/// ID of the collector's sealed cookie when the browser sent one (`collect::cookie`), else the
/// one its script keeps; a device ID (`context.device.id`) may be shared with other apps and ad
/// networks, so naming one proves nothing.
pub fn claims_of(event: &Event, identifiers: &[Identifier]) -> Vec<Identifier> {
    if Proof::of(event) == Proof::Trusted {
        return Vec::new();
    }
    identifiers
        .iter()
        .filter(|id| id.kind == IdType::DeviceId)
        .cloned()
        .collect()
}

/// The identifiers an event carries (see the table in the module docs): normalised, blocked
/// values dropped, duplicates removed, best first. For a browser event only those its
/// [`Proof`] admits.
pub fn identifiers_of(event: &Event, rules: &Rules) -> Vec<Identifier> {
    read_identifiers(event, rules, Proof::of(event))
}

/// Every identifier an event names, proven or not: what suppression and erasure look for (a
/// suppressed person's email must not come back as someone else's claim).
pub fn mentioned_identifiers(event: &Event, rules: &Rules) -> Vec<Identifier> {
    read_identifiers(event, rules, Proof::Trusted)
}

fn read_identifiers(event: &Event, rules: &Rules, proof: Proof) -> Vec<Identifier> {
    if event.anonymized {
        return Vec::new();
    }
    let body = &event.body;
    let mut ids = Vec::new();
    if proof != Proof::Claimed {
        // The token verified this user ID (and only this one).
        ids.extend(
            event
                .user_id
                .as_deref()
                .and_then(|raw| Identifier::normalized(IdType::UserId, raw, rules)),
        );
    }
    // The event's own: for a browser, the sealed cookie's ID when it sent one (`bind_cookie` put
    // it there), else the ID its script keeps.
    ids.extend(
        event
            .anonymous_id
            .as_deref()
            .and_then(|raw| Identifier::normalized(IdType::AnonymousId, raw, rules)),
    );
    let mut add = |kind: IdType, raw: Option<String>| {
        if !proof.admits(&kind) {
            return;
        }
        if let Some(id) = raw.and_then(|raw| Identifier::normalized(kind, &raw, rules)) {
            ids.push(id);
        }
    };
    if event.kind == EventType::Identify {
        let traits = body.get("traits").and_then(Value::as_object);
        add(IdType::Email, field_text(traits, "email"));
        add(IdType::Phone, field_text(traits, "phone"));
    }
    let context = body.get("context").and_then(Value::as_object);
    let context_traits = object_field(context, "traits");
    add(IdType::Email, field_text(context_traits, "email"));
    add(IdType::Phone, field_text(context_traits, "phone"));
    add(
        IdType::CookieId,
        field_text(object_field(context, "seam"), "cookieId"),
    );
    add(
        IdType::DeviceId,
        field_text(object_field(context, "device"), "id"),
    );
    if event.kind == EventType::Alias {
        if let Some(previous) = body.get("previousId").and_then(scalar_text) {
            let trimmed = previous.trim();
            let anonymous = is_uuid(trimmed)
                || event
                    .anonymous_id
                    .as_deref()
                    .is_some_and(|a| a.trim() == trimmed);
            let kind = if anonymous {
                IdType::AnonymousId
            } else {
                IdType::UserId
            };
            add(kind, Some(previous));
        }
    }
    if let Some(Value::Array(entries)) = context.and_then(|c| c.get("externalIds")) {
        ids.extend(
            entries
                .iter()
                .filter_map(|entry| external_identifier(entry, rules))
                .filter(|id| proof.admits(&id.kind)),
        );
    }
    rules.canonical_ids(&ids)
}

fn object_field<'a>(
    object: Option<&'a Map<String, Value>>,
    field: &str,
) -> Option<&'a Map<String, Value>> {
    object.and_then(|o| o.get(field)).and_then(Value::as_object)
}

fn field_text(object: Option<&Map<String, Value>>, field: &str) -> Option<String> {
    object.and_then(|o| o.get(field)).and_then(scalar_text)
}

/// A string, or a number as text (server libraries send numeric IDs and phones).
fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn external_identifier(entry: &Value, rules: &Rules) -> Option<Identifier> {
    let entry = entry.as_object()?;
    match entry.get("collection") {
        None | Some(Value::Null) => {}
        Some(Value::String(c)) if c.trim().eq_ignore_ascii_case("users") => {}
        Some(_) => return None,
    }
    let raw = entry.get("id").and_then(scalar_text)?;
    let type_name = entry.get("type")?.as_str()?.trim().to_lowercase();
    if type_name.is_empty() {
        return None;
    }
    let encoding = match entry.get("encoding") {
        None | Some(Value::Null) => None,
        Some(Value::String(e)) => {
            let e = e.trim().to_lowercase();
            (!e.is_empty() && e != "none").then_some(e)
        }
        Some(_) => return None,
    };
    let known = match type_name.as_str() {
        "email" => Some(IdType::Email),
        "phone" => Some(IdType::Phone),
        "user_id" | "userid" => Some(IdType::UserId),
        "anonymous_id" | "anonymousid" => Some(IdType::AnonymousId),
        _ => None,
    };
    match (encoding, known) {
        (None, Some(kind)) => Identifier::normalized(kind, &raw, rules),
        (None, None) => Identifier::normalized(IdType::External(type_name), &raw, rules),
        (Some(enc), Some(kind @ (IdType::Email | IdType::Phone)))
            if rules.hash_pii
                && rules.pii_salt.is_none()
                && (enc == "sha256" || enc == "sha-256") =>
        {
            let hex = raw.trim().to_ascii_lowercase();
            is_sha256_hex(&hex).then(|| Identifier::new(kind, hex))
        }
        (Some(enc), _) => {
            Identifier::normalized(IdType::External(format!("{type_name}.{enc}")), &raw, rules)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::test_support::{anon, email, event, uid};
    use crate::identity::{partition, stitch, Link};
    use serde_json::json;

    #[test]
    fn reads_every_identifier_source_best_first() {
        let rules = Rules::default();
        let e = event(json!({
            "type": "identify", "userId": "u1", "anonymousId": "a1",
            "traits": {"email": "Ann@Shop.Example", "phone": 15551234567_u64},
            "context": {
                "traits": {"email": "ann@shop.example"},
                "seam": {"cookieId": "ck"},
                "device": {"id": "dev"},
                "externalIds": [
                    {"id": "GA.1", "type": "GA_Client_ID", "collection": "users", "encoding": "none"},
                    {"id": "acct-9", "type": "account", "collection": "accounts"},
                    {"id": "work@corp.example", "type": "email"},
                    {"id": "abc", "type": "braze_id", "encoding": "base64"},
                    "garbage"
                ]
            }
        }));
        let ids: Vec<String> = identifiers_of(&e, &rules)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            ids,
            [
                "user_id:u1",
                "email:ann@shop.example",
                "email:work@corp.example",
                "phone:15551234567",
                "external:braze_id.base64:abc",
                "external:ga_client_id:GA.1",
                "cookie_id:ck",
                "device_id:dev",
                "anonymous_id:a1",
            ]
        );
    }

    #[test]
    fn group_traits_are_not_user_traits() {
        let e = event(json!({
            "type": "group", "userId": "u1", "groupId": "g",
            "traits": {"email": "billing@corp.example"}
        }));
        assert_eq!(identifiers_of(&e, &Rules::default()), [uid("u1")]);
    }

    #[test]
    fn alias_previous_id_keeps_its_kind() {
        let rules = Rules::default();
        let uuid = "0b5a1c2e-3f4d-4e5f-8a6b-7c8d9e0f1a2b";
        let e = event(json!({"type": "alias", "userId": "u1", "previousId": uuid}));
        assert_eq!(identifiers_of(&e, &rules), [uid("u1"), anon(uuid)]);
        let e = event(
            json!({"type": "alias", "userId": "u1", "previousId": "a1", "anonymousId": "a1"}),
        );
        assert_eq!(identifiers_of(&e, &rules), [uid("u1"), anon("a1")]);
        let e = event(json!({"type": "alias", "userId": "u2", "previousId": "u1"}));
        assert_eq!(identifiers_of(&e, &rules), [uid("u1"), uid("u2")]);
        // Previous user ID to a new one: refused under the default user-ID limit.
        let p = partition(&[Link::from_event(&e, &rules)], &rules);
        assert_eq!(p.profiles.len(), 2);
        assert_eq!(p.conflicts[0].reason.code(), "user_id_conflict");
    }

    #[test]
    fn a_browser_event_joins_no_anonymous_id_but_its_own() {
        let rules = Rules::default();
        let other = "0b5a1c2e-3f4d-4e5f-8a6b-7c8d9e0f1a2b";
        for marker in ["claimed", "verified"] {
            let seam = json!({"identity": marker});
            let alias = event(json!({"type": "alias", "userId": "u1", "previousId": other,
                "anonymousId": "mine", "context": {"seam": seam}}));
            let ids = identifiers_of(&alias, &rules);
            assert!(!ids.contains(&anon(other)), "{marker}: {ids:?}");
            assert!(ids.contains(&anon("mine")), "{marker}: {ids:?}");
            let external = event(json!({"type": "track", "event": "x", "anonymousId": "mine",
                "context": {"seam": seam, "externalIds": [{"id": other, "type": "anonymous_id"}]}}));
            assert_eq!(
                identifiers_of(&external, &rules),
                [anon("mine")],
                "{marker}"
            );
        }
        // A server names whom it likes.
        let server = event(json!({"type": "track", "event": "x", "anonymousId": "mine",
            "context": {"externalIds": [{"id": other, "type": "anonymous_id"}]}}));
        assert_eq!(identifiers_of(&server, &rules).len(), 2);
    }

    #[test]
    fn hashed_external_email_matches_hashed_traits() {
        let rules = Rules {
            hash_pii: true,
            ..Rules::default()
        };
        let hash = "EBB18A030BF15174F5714E24D63AF1A81355C951EA7389BD2A9BD18E3D0C2477";
        let e = event(json!({
            "type": "track", "event": "x", "anonymousId": "a1",
            "context": {"externalIds": [{"id": hash, "type": "email", "encoding": "sha256"}],
                        "traits": {"email": "a@b.example"}}
        }));
        assert_eq!(
            identifiers_of(&e, &rules),
            [email(&hash.to_lowercase()), anon("a1")]
        );
        let plain = identifiers_of(&e, &Rules::default());
        assert!(plain.contains(&Identifier::new(
            IdType::External("email.sha256".into()),
            hash
        )));
    }

    #[test]
    fn anonymized_events_have_no_identifiers() {
        let mut e = event(json!({"type": "page", "anonymousId": "a1"}));
        e.anonymized = true;
        assert!(identifiers_of(&e, &Rules::default()).is_empty());
        let plan = stitch(
            &[],
            Link::from_event(&e, &Rules::default()),
            &Rules::default(),
        );
        assert_eq!(plan.profile_id, None);
        assert!(plan.assignments.is_empty());
    }
}
