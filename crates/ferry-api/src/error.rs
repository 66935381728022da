//! The one error type of the HTTP boundary: every refusal gets its status, a stable
//! snake_case `code` and a human `message` here, in one `match`.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ferry_event::{Rejection, RequestError};

/// A request refused whole. The client keeps it and can retry or fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// A body the route cannot take (bad gzip, bad base64, an admin body that is not JSON).
    BadRequest { code: &'static str, message: String },
    /// The body was refused by decoding: over a limit (413), or not a request at all (400).
    Request(RequestError),
    /// The body, inflated body, an event or the batch is over a limit.
    TooLarge { code: &'static str, message: String },
    /// No write key was given.
    MissingWriteKey,
    /// The write key names no configured source.
    UnknownWriteKey,
    /// A single-event request whose event failed validation (it is in quarantine).
    InvalidEvent(Rejection),
    /// ferry cannot take more right now (disk budget, in-flight memory); retry later.
    Overloaded { retry_after: Duration },
    /// The log is not writable (poisoned, closed, or its backend is down).
    Unavailable { retry_after: Duration },
    /// No such route.
    NotFound,
    /// An admin route without the admin token (or with a wrong one).
    AdminToken,
    /// An admin request for something that is not there.
    NoSuch { message: String },
    /// An admin request that failed on ferry's side: the details are in ferry's log under
    /// this id; the caller gets only the id.
    Internal { correlation_id: String },
}

impl ApiError {
    /// The HTTP status, the stable code and the message of this error.
    pub fn parts(&self) -> (StatusCode, &'static str, String) {
        match self {
            ApiError::BadRequest { code, message } => (StatusCode::BAD_REQUEST, code, message.clone()),
            ApiError::TooLarge { code, message } => (StatusCode::PAYLOAD_TOO_LARGE, code, message.clone()),
            ApiError::Request(error @ (RequestError::PayloadTooLarge { .. } | RequestError::TooManyEvents { .. })) => {
                (StatusCode::PAYLOAD_TOO_LARGE, error.code(), error.to_string())
            }
            ApiError::Request(error) => (StatusCode::BAD_REQUEST, error.code(), error.to_string()),
            ApiError::MissingWriteKey => (
                StatusCode::UNAUTHORIZED,
                "missing_write_key",
                "no write key: send it as the HTTP Basic username or as `writeKey` in the body".to_owned(),
            ),
            ApiError::UnknownWriteKey => (
                StatusCode::UNAUTHORIZED,
                "unknown_write_key",
                "the write key does not belong to any configured source".to_owned(),
            ),
            ApiError::InvalidEvent(rejection) => (StatusCode::BAD_REQUEST, rejection.code(), rejection.to_string()),
            ApiError::Overloaded { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "overloaded",
                "ferry is over its capacity; retry after the given delay".to_owned(),
            ),
            ApiError::Unavailable { .. } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "log_unavailable",
                "the event log cannot accept writes right now; retry after the given delay".to_owned(),
            ),
            ApiError::NotFound => (StatusCode::NOT_FOUND, "not_found", "no such route".to_owned()),
            ApiError::AdminToken => (
                StatusCode::UNAUTHORIZED,
                "admin_token_required",
                "this route needs the admin token: send `Authorization: Bearer <token>`".to_owned(),
            ),
            ApiError::NoSuch { message } => (StatusCode::NOT_FOUND, "not_found", message.clone()),
            ApiError::Internal { correlation_id } => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                format!("ferry could not do this; its log has the details under correlation id {correlation_id}"),
            ),
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            ApiError::Overloaded { retry_after } | ApiError::Unavailable { retry_after } => Some(*retry_after),
            _ => None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, message) = self.parts();
        let mut body = serde_json::json!({ "success": false, "code": code, "message": message });
        if let ApiError::InvalidEvent(rejection) = &self
            && let Some(field) = rejection.field()
        {
            body["field"] = serde_json::Value::from(field);
        }
        if let ApiError::Internal { correlation_id } = &self {
            body["correlationId"] = serde_json::Value::from(correlation_id.as_str());
        }
        if status.is_server_error() {
            tracing::warn!(code, %status, "request refused");
        } else {
            tracing::debug!(code, %status, "request refused");
        }
        let mut response = (status, axum::Json(body)).into_response();
        if let Some(after) = self.retry_after() {
            let secs = after.as_secs().max(1);
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}
