//! `GET /v1/projects/{writeKey}/settings`: the settings document analytics.js loads before
//! it sends anything. Its `Segment.io.apiHost` points back at this server, so the browser
//! library sends its events (and its `/v1/m` metrics) here.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};

use crate::{ApiError, AppState};

pub(crate) async fn settings(
    State(state): State<AppState>,
    Path(write_key): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let config = &state.inner.config;
    if config.sources.source_for(&write_key).is_none() {
        return Err(ApiError::UnknownWriteKey);
    }
    let (protocol, host) = match &config.public_url {
        Some(url) => split_url(url),
        None => {
            let host = headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("127.0.0.1:8088");
            ("http", host.to_owned())
        }
    };
    let api_host = format!("{host}/v1");
    let document = serde_json::json!({
        "integrations": {
            "Segment.io": {
                "apiKey": write_key,
                "apiHost": api_host,
                "protocol": protocol,
                "unbundledIntegrations": [],
                "addBundledMetadata": true,
                "maybeBundledConfigIds": {},
                "versionSettings": { "version": "4.4.7", "componentTypes": ["browser"] }
            }
        },
        "plan": {
            "track": { "__default": { "enabled": true, "integrations": {} } },
            "identify": { "__default": { "enabled": true } },
            "group": { "__default": { "enabled": true } }
        },
        "edgeFunction": {},
        "analyticsNextEnabled": true,
        "middlewareSettings": {},
        "enabledMiddleware": {},
        "metrics": { "sampleRate": 0.1, "host": api_host },
        "legacyVideoPluginsEnabled": false,
        "remotePlugins": []
    });
    let mut response = axum::Json(document).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, axum::http::HeaderValue::from_static("public, max-age=60"));
    Ok(response)
}

/// `https://events.example.com/` → (`https`, `events.example.com`).
fn split_url(url: &str) -> (&'static str, String) {
    let (protocol, rest) = match url.split_once("://") {
        Some(("https", rest)) => ("https", rest),
        Some((_, rest)) => ("http", rest),
        None => ("https", url),
    };
    (protocol, rest.trim_end_matches('/').trim_end_matches("/v1").to_owned())
}

#[cfg(test)]
mod tests {
    use super::split_url;

    #[test]
    fn public_url_becomes_protocol_and_host() {
        assert_eq!(split_url("https://events.example.com/"), ("https", "events.example.com".to_owned()));
        assert_eq!(split_url("http://127.0.0.1:8088"), ("http", "127.0.0.1:8088".to_owned()));
        assert_eq!(split_url("events.example.com/v1"), ("https", "events.example.com".to_owned()));
    }
}
