//! Reading request bodies: bounded on the wire, gunzipped when the header says so or the
//! bytes start with the gzip magic, and bounded again after inflating (gzip bombs).

use std::io::Read;

use axum::body::Body;
use axum::http::{HeaderMap, header};
use bytes::Bytes;

use crate::ApiError;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Read the whole body, refusing it once it passes `max_bytes`.
pub(crate) async fn read(headers: &HeaderMap, body: Body, max_bytes: usize) -> Result<Bytes, ApiError> {
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > max_bytes as u64) {
        return Err(too_large(max_bytes));
    }
    axum::body::to_bytes(body, max_bytes).await.map_err(|error| {
        // `to_bytes` fails on a body over the limit or on a broken connection.
        let is_limit =
            std::error::Error::source(&error).is_some_and(|source| source.is::<http_body_util::LengthLimitError>());
        if is_limit {
            too_large(max_bytes)
        } else {
            ApiError::BadRequest {
                code: "body_read_failed",
                message: format!("could not read the request body: {error}"),
            }
        }
    })
}

/// Gunzip the body when it is gzip, by header or by magic bytes; cap the inflated size.
pub(crate) fn inflate(headers: &HeaderMap, raw: Bytes, max_inflated: usize) -> Result<Bytes, ApiError> {
    if !is_gzip(headers, &raw) {
        return Ok(raw);
    }
    let mut out = Vec::with_capacity((raw.len() * 4).min(max_inflated));
    // Read one byte past the cap to tell "exactly at the cap" from "over it".
    let mut decoder = flate2::read::MultiGzDecoder::new(&raw[..]).take(max_inflated as u64 + 1);
    decoder.read_to_end(&mut out).map_err(|error| ApiError::BadRequest {
        code: "invalid_gzip",
        message: format!("the body is not valid gzip: {error}"),
    })?;
    if out.len() > max_inflated {
        return Err(ApiError::TooLarge {
            code: "payload_too_large",
            message: format!("the gunzipped body is over {max_inflated} bytes"),
        });
    }
    Ok(Bytes::from(out))
}

/// Whether the body is gzip: `Content-Encoding: gzip`, or the magic bytes.
pub(crate) fn is_gzip(headers: &HeaderMap, raw: &[u8]) -> bool {
    let says_gzip = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("gzip"));
    says_gzip || raw.starts_with(&GZIP_MAGIC)
}

fn too_large(max_bytes: usize) -> ApiError {
    ApiError::TooLarge { code: "payload_too_large", message: format!("the request body is over {max_bytes} bytes") }
}
