//! CORS for browsers: analytics.js posts cross-origin with an `Authorization` header, so
//! each event path gets a preflight `OPTIONS` first. Without the right answer, and without
//! `Access-Control-Allow-Origin` on every response, the browser sends nothing.
//!
//! The `edge` layer applies these to every request.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

const DEFAULT_ALLOW_HEADERS: &str = "Authorization, Content-Type, Content-Encoding, X-Retry-Count";
const ALLOW_METHODS: &str = "GET, POST, OPTIONS";
/// Browsers cache a preflight answer this long (seconds; Chromium caps at 7200).
const MAX_AGE_SECS: u32 = 600;

/// The answer to a preflight `OPTIONS` request (before [`allow_origin`]).
pub(crate) fn preflight(request_headers: &HeaderMap) -> Response {
    let allow_headers = request_headers
        .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .cloned()
        .unwrap_or(HeaderValue::from_static(DEFAULT_ALLOW_HEADERS));
    let mut response = StatusCode::NO_CONTENT.into_response();
    let headers = response.headers_mut();
    headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static(ALLOW_METHODS));
    headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, allow_headers);
    headers.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from(MAX_AGE_SECS));
    response
}

/// Add the allow-origin headers for a request that came with `origin`.
pub(crate) fn allow_origin(headers: &mut HeaderMap, origin: Option<HeaderValue>) {
    match origin {
        // Credentials are allowed only with an explicit origin, never with `*`.
        Some(origin) => {
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
            headers.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
            headers.append(header::VARY, HeaderValue::from_static("Origin"));
        }
        None => {
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
        }
    }
}
