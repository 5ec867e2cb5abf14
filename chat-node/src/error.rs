//! [`ApiError`]: what a client is told when something fails, REST and WebSocket alike.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use parley_protocol::{ErrorBody, ErrorCode};

use crate::backend::BackendError;

/// An error with a protocol code and a message a person can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthorized, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::TooLarge, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unavailable, message)
    }

    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            code: self.code,
            message: self.message.clone(),
        }
    }
}

impl From<BackendError> for ApiError {
    fn from(e: BackendError) -> Self {
        match &e {
            BackendError::Unavailable { backend, .. } => {
                tracing::warn!("{e}");
                ApiError::unavailable(format!("{backend} is unavailable; try again shortly"))
            }
            BackendError::Conflict(message) => ApiError::new(ErrorCode::Conflict, message.clone()),
            BackendError::Internal { .. } => {
                tracing::error!("{e}");
                ApiError::new(ErrorCode::Internal, "internal error")
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut res = (status, Json(serde_json::json!({ "error": self.body() }))).into_response();
        // Handlers count errors by code from this marker.
        res.extensions_mut().insert(self.code);
        res
    }
}
