//! The JSON error every bad request gets.

use axum::Json;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use qdn_relay_core::{InputError, RelayError, StoreError};
use qdn_relay_twilio::{Secret, SignatureError, WebhookError};
use serde_json::json;
use subtle::ConstantTimeEq;

/// An HTTP error: a status, a stable machine code and a message saying what
/// is wrong. Renders as `{"error": {"code": ..., "message": ...}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// A stable code (`invalid_signature`, `bad_request`, `not_found`, …).
    pub code: &'static str,
    /// What is wrong, for people.
    pub message: String,
}

impl ApiError {
    /// An error with a status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    /// 400 Bad Request.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 404 Not Found.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 401 Unauthorized.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 415 Unsupported Media Type.
    pub fn media_type(expected: &str) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("expected Content-Type {expected}"),
        )
    }

    /// 403 for a missing or wrong `X-Twilio-Signature`.
    pub fn signature(e: &SignatureError) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "invalid_signature",
            format!("X-Twilio-Signature rejected: {e}"),
        )
    }

    /// 400 for a webhook that lacks or garbles a field.
    pub fn webhook(e: &WebhookError) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_webhook", e.to_string())
    }

    /// Maps a relay error to its status.
    pub fn relay(e: &RelayError) -> Self {
        match e {
            RelayError::UnknownLine(_) => {
                Self::new(StatusCode::BAD_REQUEST, "unknown_line", e.to_string())
            }
            RelayError::Loop(_) => Self::new(StatusCode::BAD_REQUEST, "loop", e.to_string()),
            RelayError::NotFound(_) => Self::not_found(e.to_string()),
            RelayError::NoOpenDispatch { .. } => {
                Self::new(StatusCode::NOT_FOUND, "no_open_dispatch", e.to_string())
            }
            RelayError::UnknownMessage(_) => {
                Self::new(StatusCode::NOT_FOUND, "unknown_message", e.to_string())
            }
            RelayError::Input(InputError::NotOpen(_)) => {
                Self::new(StatusCode::CONFLICT, "not_open", e.to_string())
            }
            RelayError::Input(InputError::Acknowledged(_)) => {
                Self::new(StatusCode::CONFLICT, "acknowledged", e.to_string())
            }
            RelayError::Input(_) => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, "refused", e.to_string())
            }
            RelayError::Store(StoreError::Backend {
                retryable: true, ..
            })
            | RelayError::Contended(_)
            | RelayError::ContendedOpen(_) => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                "the relay is busy; retry shortly",
            ),
            _ => {
                tracing::error!(error = %e, "request failed");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error; see the relay's logs",
                )
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut res = (
            self.status,
            Json(json!({"error": {"code": self.code, "message": self.message}})),
        )
            .into_response();
        match self.status {
            StatusCode::UNAUTHORIZED => {
                res.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    header::HeaderValue::from_static("Bearer"),
                );
            }
            StatusCode::SERVICE_UNAVAILABLE => {
                res.headers_mut()
                    .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
            }
            _ => {}
        }
        res
    }
}

/// A body that could not be read: 413 over the size limit, else 400.
impl From<BytesRejection> for ApiError {
    fn from(e: BytesRejection) -> Self {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                "request body is over the size limit",
            )
        } else {
            ApiError::bad_request(format!("could not read the request body: {e}"))
        }
    }
}

/// Checks `Authorization: Bearer <token>` (or `query_token`, for clients
/// such as `EventSource` that cannot set headers) against `expected` in
/// constant time; 401 otherwise. The relay's dashboard routes use it; a
/// host's own routes can share the same token with it.
pub fn check_bearer(
    headers: &HeaderMap,
    expected: &Secret,
    query_token: Option<&str>,
) -> Result<(), ApiError> {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .or(query_token)
        .ok_or_else(|| ApiError::unauthorized("missing Authorization: Bearer <token>"))?;
    if bool::from(given.as_bytes().ct_eq(expected.expose().as_bytes())) {
        Ok(())
    } else {
        Err(ApiError::unauthorized("invalid dashboard token"))
    }
}

impl From<RelayError> for ApiError {
    fn from(e: RelayError) -> Self {
        Self::relay(&e)
    }
}
