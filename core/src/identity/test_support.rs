//! Identifiers, links and events the identity tests share.

use serde_json::Value;

use super::{IdType, Identifier, Link, Partition, ProfileId};
use crate::collect::event::{validate, Envelope, Event};

pub(crate) fn event(raw: Value) -> Event {
    let len = raw.to_string().len();
    let envelope = Envelope {
        received_at_ms: 1_700_000_000_000,
        ..Envelope::default()
    };
    validate(raw, len, &envelope, || "generated".into()).unwrap()
}

pub(crate) fn uid(v: &str) -> Identifier {
    Identifier::new(IdType::UserId, v)
}
pub(crate) fn email(v: &str) -> Identifier {
    Identifier::new(IdType::Email, v)
}
pub(crate) fn anon(v: &str) -> Identifier {
    Identifier::new(IdType::AnonymousId, v)
}
pub(crate) fn cookie(v: &str) -> Identifier {
    Identifier::new(IdType::CookieId, v)
}
pub(crate) fn link(ts: i64, mid: &str, ids: &[Identifier]) -> Link {
    Link::new(ts, mid, ids.to_vec())
}
pub(crate) fn owner_of(p: &Partition, id: &Identifier) -> ProfileId {
    p.profile_of(id).unwrap().id.clone()
}
