//! The API's errors: every one becomes a JSON body `{"error": "..."}` with its status.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request is malformed (bad parameter, not a profile, not an ELF file).
    #[error("{0}")]
    BadRequest(String),
    /// 401: a token is needed and none was sent.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: the token sent is not one of the server's.
    #[error("{0}")]
    Forbidden(String),
    /// 404: no such profile, symbol file or route.
    #[error("{0}")]
    NotFound(String),
    /// 405
    #[error("{0}")]
    MethodNotAllowed(String),
    /// 410: the record exists but its bytes are gone.
    #[error("{0}")]
    Gone(String),
    /// 413: the body is larger than the server accepts.
    #[error("{0}")]
    TooLarge(String),
    /// 500: storage failed, or a worker died.
    #[error("internal error: {0}")]
    Internal(String),
    /// 503: the server cannot serve (storage unreachable).
    #[error("{0}")]
    Unavailable(String),
    /// 507: the storage is full; the request may succeed once space is freed.
    #[error("{0}")]
    InsufficientStorage(String),
}

impl ApiError {
    pub fn bad(msg: impl Into<String>) -> ApiError {
        ApiError::BadRequest(msg.into())
    }

    pub fn not_found(msg: impl Into<String>) -> ApiError {
        ApiError::NotFound(msg.into())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        ApiError::Internal(e.to_string())
    }
}

impl From<actix_web::error::BlockingError> for ApiError {
    fn from(e: actix_web::error::BlockingError) -> ApiError {
        ApiError::Internal(format!("a worker thread failed: {e}"))
    }
}

/// A JSON error response.
pub fn json_error(status: StatusCode, msg: &str) -> HttpResponse {
    let mut r = HttpResponse::build(status);
    if status == StatusCode::UNAUTHORIZED {
        r.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
    }
    r.insert_header((header::CACHE_CONTROL, "no-store"))
        .json(serde_json::json!({ "error": msg }))
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Gone(_) => StatusCode::GONE,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::InsufficientStorage(_) => StatusCode::INSUFFICIENT_STORAGE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if matches!(
            self,
            ApiError::Internal(_) | ApiError::Unavailable(_) | ApiError::InsufficientStorage(_)
        ) {
            tracing::error!(error = %self, "request failed");
        }
        json_error(self.status_code(), &self.to_string())
    }
}
