//! Routes. Each is decode -> core -> execute plan -> encode.

pub mod admin;
pub mod decide;
pub mod health;
pub mod ingest;
pub mod preflight;
pub mod privacy;
pub mod profiles;
pub mod render;

use seam_core::identity::{IdType, Identifier, Rules};
use worker::Request;

use crate::error::ApiError;

/// Parses an identifier type name: a standard type or `external:<type>`.
fn id_type(name: &str) -> Option<IdType> {
    if let Some(external) = name.strip_prefix("external:") {
        return (!external.is_empty()).then(|| IdType::External(external.to_ascii_lowercase()));
    }
    Some(match name {
        "user_id" => IdType::UserId,
        "email" => IdType::Email,
        "phone" => IdType::Phone,
        "anonymous_id" => IdType::AnonymousId,
        "cookie_id" => IdType::CookieId,
        "device_id" => IdType::DeviceId,
        _ => return None,
    })
}

/// The normalised identifier named by a type name and a raw value (as the store holds it).
pub(crate) fn identifier(
    kind: Option<&str>,
    value: Option<&str>,
    rules: &Rules,
) -> Result<Identifier, ApiError> {
    let kind = kind.and_then(id_type).ok_or(ApiError::InvalidIdentifier)?;
    let value = value.ok_or(ApiError::InvalidIdentifier)?;
    Identifier::normalized(kind, value, rules).ok_or(ApiError::InvalidIdentifier)
}

/// A query parameter of the request URL.
pub(crate) fn query_param(req: &Request, name: &str) -> Option<String> {
    req.url().ok().and_then(|url| {
        url.query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    })
}
