//! The one place errors become HTTP: status code plus `{"code","message"}`.
//!
//! Messages are the public `Display` of each error enum; internal details (D1 errors, stack
//! traces) are logged, never sent.

use seam_core::auth::AuthError;
use seam_core::ingest::RequestError;
use worker::Response;

/// Every way a request can fail as a whole.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body could not be read as a request.
    #[error(transparent)]
    Request(#[from] RequestError),
    /// No or unknown write key.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// No such route.
    #[error("no such route")]
    NotFound,
    /// Route exists, method does not.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// Storage failed; the client should retry.
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
            Self::Storage(_) => 503,
        }
    }

    /// The JSON error response.
    pub fn into_response(self) -> worker::Result<Response> {
        if let Self::Storage(detail) = &self {
            worker::console_error!("storage error: {detail}");
        }
        let body = serde_json::json!({ "code": self.code(), "message": self.to_string() });
        Ok(Response::from_json(&body)?.with_status(self.status()))
    }
}

impl From<worker::Error> for ApiError {
    fn from(e: worker::Error) -> Self {
        Self::Storage(e.to_string())
    }
}
