//! The one place errors become HTTP: status code plus `{"code","message"}`.
//!
//! Messages are the public `Display` of each error enum; internal details (D1 errors, stack
//! traces) are logged, never sent.

use seam_core::activate::sealed::SealError;
use seam_core::collect::auth::AuthError;
use seam_core::collect::ingest::RequestError;
use seam_core::collect::source::ConfigError;
use seam_core::identity::IdentityConfigError;
use seam_core::privacy::access::AccessError;
use seam_core::privacy::retention::RetentionError;
use worker::Response;

/// Every way a request can fail as a whole.
#[allow(missing_docs)] // each variant's message says what it is
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Request(#[from] RequestError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("no such route")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("this origin may not send to this source")]
    OriginNotAllowed,
    #[error("too many requests, retry later")]
    RateLimited {
        /// Seconds until the limit's window has passed.
        retry_after: u32,
    },
    #[error("the collector's source configuration is invalid")]
    Config(ConfigError),
    #[error("the collector's identity rules are invalid")]
    IdentityConfig(IdentityConfigError),
    #[error(transparent)]
    Access(#[from] AccessError),
    #[error("the collector's retention settings are invalid")]
    Retention(RetentionError),
    #[error("the request body must be a JSON object as documented for this route")]
    InvalidBody,
    #[error("an admin key with this label exists")]
    LabelTaken,
    #[error("no admin key has this label")]
    KeyNotFound,
    #[error("no profile matches")]
    ProfileNotFound,
    #[error("the email or password is wrong")]
    InvalidCredentials,
    #[error("type must be an identifier type (user_id, email, phone, anonymous_id, cookie_id, device_id, external:<type>) and value a usable value")]
    InvalidIdentifier,
    #[error(transparent)]
    Catalog(#[from] seam_core::personalise::recommend::CatalogError),
    #[error(transparent)]
    Personalisation(#[from] seam_core::personalise::PersonalisationConfigError),
    #[error(transparent)]
    Destination(#[from] seam_core::activate::destination::DestinationConfigError),
    #[error(transparent)]
    DestinationUrl(#[from] seam_core::activate::policy::UrlError),
    #[error(transparent)]
    Secrets(#[from] seam_core::activate::sealed::SealError),
    #[error("no destination has this name")]
    DestinationNotFound,
    #[error(transparent)]
    Journeys(#[from] seam_core::journey::JourneysError),
    #[error("no journey has this name")]
    JourneyNotFound,
    #[error("this hook is not configured, or its secret is wrong")]
    HookForbidden,
    #[error(transparent)]
    Export(#[from] seam_core::archive::ExportError),
    #[error(transparent)]
    Import(#[from] seam_core::collect::import::ImportError),
    #[error("storage is unavailable, retry later")]
    Storage(String),
}

impl ApiError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Request(e) => e.code(),
            Self::Auth(e) => e.code(),
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::OriginNotAllowed => "origin_not_allowed",
            Self::RateLimited { .. } => "rate_limited",
            Self::Config(e) => e.code(),
            Self::IdentityConfig(e) => e.code(),
            Self::Access(e) => e.code(),
            Self::Retention(e) => e.code(),
            Self::InvalidBody => "invalid_body",
            Self::LabelTaken => "label_taken",
            Self::KeyNotFound => "key_not_found",
            Self::ProfileNotFound => "profile_not_found",
            Self::InvalidCredentials => "invalid_credentials",
            Self::InvalidIdentifier => "invalid_identifier",
            Self::Catalog(e) => e.code(),
            Self::Personalisation(e) => e.code(),
            Self::Destination(e) => e.code(),
            Self::DestinationUrl(e) => e.code(),
            Self::Secrets(e) => e.code(),
            Self::DestinationNotFound => "destination_not_found",
            Self::Journeys(e) => e.code(),
            Self::JourneyNotFound => "journey_not_found",
            Self::HookForbidden => "hook_forbidden",
            Self::Export(e) => e.code(),
            Self::Import(e) => e.code(),
            Self::Storage(_) => "storage_unavailable",
        }
    }

    /// HTTP status. Storage failures are 503 so clients retry (analytics.js retries 5xx).
    pub fn status(&self) -> u16 {
        match self {
            Self::Request(RequestError::TooLarge | RequestError::TooManyEvents) => 413,
            Self::Request(_) => 400,
            Self::Auth(_) => 401,
            Self::NotFound => 404,
            Self::MethodNotAllowed => 405,
            Self::OriginNotAllowed => 403,
            Self::RateLimited { .. } => 429,
            Self::Config(_) | Self::IdentityConfig(_) | Self::Retention(_) => 500,
            Self::Access(
                AccessError::MissingAdminKey
                | AccessError::InvalidAdminKey
                | AccessError::RevokedKey
                | AccessError::SessionEnded,
            ) => 401,
            Self::Access(
                AccessError::WriteKeyForbidden
                | AccessError::MissingScope(_)
                | AccessError::CrossSiteRequest,
            ) => 403,
            Self::Access(AccessError::InvalidLabel | AccessError::InvalidScopes) => 400,
            Self::InvalidBody => 400,
            Self::LabelTaken => 409,
            Self::KeyNotFound => 404,
            Self::ProfileNotFound => 404,
            Self::InvalidCredentials => 401,
            Self::InvalidIdentifier | Self::Catalog(_) | Self::Personalisation(_) => 400,
            Self::Destination(_) | Self::DestinationUrl(_) => 400,
            Self::Secrets(SealError::NothingStored(..) | SealError::UrlChanged(..)) => 400,
            Self::Secrets(_) => 500,
            Self::DestinationNotFound | Self::JourneyNotFound => 404,
            Self::Journeys(_) => 400,
            Self::HookForbidden => 403,
            Self::Export(_) => 400,
            Self::Import(seam_core::collect::import::ImportError::LengthRequired) => 411,
            Self::Import(_) => 400,
            Self::Storage(_) => 503,
        }
    }

    /// The JSON error response.
    pub fn into_response(self) -> worker::Result<Response> {
        match &self {
            Self::Storage(detail) => worker::console_error!("storage error: {detail}"),
            Self::Config(detail) => worker::console_error!("configuration error: {detail}"),
            Self::IdentityConfig(detail) => {
                worker::console_error!("identity rules error: {detail}")
            }
            Self::Retention(detail) => worker::console_error!("retention error: {detail}"),
            Self::Secrets(detail) => worker::console_error!("destination secrets: {detail}"),
            _ => {}
        }
        let mut body = serde_json::json!({ "code": self.code(), "message": self.to_string() });
        if let Self::Access(AccessError::MissingScope(scope)) = &self {
            body["scope"] = serde_json::Value::from(scope.as_str());
        }
        let mut response = Response::from_json(&body)?.with_status(self.status());
        if let Self::RateLimited { retry_after } = self {
            response
                .headers_mut()
                .set("Retry-After", &retry_after.to_string())?;
        }
        Ok(response)
    }
}

impl From<worker::Error> for ApiError {
    fn from(e: worker::Error) -> Self {
        Self::Storage(e.to_string())
    }
}
