//! Admission of write-key requests (ingest, decide): the source the write key names (Basic auth
//! or the body's `writeKey`), the browser origin that source allows, and the rate limits: per
//! client IP for browser sources (a public key is anyone's), per source for all.

use std::rc::Rc;

use seam_core::collect::auth::basic_user;
use seam_core::collect::enrich::RequestFacts;
use seam_core::collect::source::{Source, SourceKind, Sources};
use worker::{Env, Request};

use super::{cross_origin, header, limits};
use crate::error::ApiError;
use crate::store;

/// The write key of a request: the header's now, the body's once it is read.
pub struct WriteKey {
    configured: Rc<Sources>,
    header: Option<String>,
}

impl WriteKey {
    /// The configured sources and the key in the `Authorization` header, if any.
    pub fn read(req: &Request, env: &Env) -> Result<Self, ApiError> {
        Ok(Self {
            configured: store::sources::configured(env)?,
            header: header(req, "Authorization").and_then(|h| basic_user(&h)),
        })
    }

    /// Rejects an unknown key in the header before the body is read, so bad keys cost no
    /// parsing.
    pub async fn check_header(&self, env: &Env) -> Result<(), ApiError> {
        if self.header.is_some() {
            store::sources::source_for(env, &self.configured, self.header.as_deref()).await?;
        }
        Ok(())
    }

    /// The source of the body's key (else the header's), once its origin and rate limits pass.
    pub async fn source(
        &self,
        req: &Request,
        env: &Env,
        facts: &RequestFacts,
        body_key: Option<&str>,
    ) -> Result<Source, ApiError> {
        let key = body_key.or(self.header.as_deref());
        let source = store::sources::source_for(env, &self.configured, key).await?;
        if cross_origin(req).is_some_and(|o| !source.allows_origin(&o)) {
            return Err(ApiError::OriginNotAllowed);
        }
        if source.kind == SourceKind::Browser {
            limits::check_ip(env, facts.ip.as_deref()).await?;
        }
        limits::check_source(env, &source.id).await?;
        Ok(source)
    }
}
