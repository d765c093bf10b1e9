//! `OPTIONS /v1/*`: CORS preflight. A preflight carries no write key, so an origin passes when
//! any source allows it; the actual request is then checked against its own source.

use worker::{Env, Request, Response};

use crate::error::ApiError;
use crate::{http, store};

/// 204 for an allowed origin (headers are added by the caller), 403 otherwise.
pub async fn options(req: &Request, env: &Env) -> Result<Response, ApiError> {
    let Some(origin) = http::cross_origin(req) else {
        return Ok(Response::empty()?.with_status(204));
    };
    let configured = store::sources::configured(env)?;
    if store::sources::any_allows_origin(env, &configured, &origin).await? {
        Ok(Response::empty()?.with_status(204))
    } else {
        Err(ApiError::OriginNotAllowed)
    }
}
