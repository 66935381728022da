//! The HTTP client every HTTP destination shares (hyper, rustls with ring and the
//! webpki roots: no system OpenSSL, self-signed certificates refused), and the one rule
//! that turns an HTTP answer into an [`Outcome`].

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{HeaderName, HeaderValue};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::Outcome;

/// At most this much of an answer's body is read (it only serves error messages).
const MAX_REPLY_BYTES: usize = 64 * 1024;

/// A pooled HTTP/1.1 client for `http://` and `https://` URLs.
#[derive(Clone)]
pub struct HttpClient {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
}

/// An answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    /// From `Retry-After` (seconds, or an HTTP date).
    pub retry_after: Option<Duration>,
    /// The start of the body.
    pub body: Bytes,
}

/// Why there is no answer.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("invalid url {url}: {reason}")]
    Url { url: String, reason: String },
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("request failed: {0}")]
    Failed(String),
}

impl HttpClient {
    /// A client with its own TLS setup (rustls with ring; no process-wide provider).
    pub fn new() -> Result<HttpClient, HttpError> {
        let tls =
            rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|e| HttpError::Failed(format!("cannot set up tls: {e}")))?
                .with_root_certificates(rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() })
                .with_no_client_auth();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(Duration::from_secs(10)));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(60)).build(connector);
        Ok(HttpClient { client })
    }

    /// Send one request; the answer's status, `Retry-After` and the start of its body.
    pub async fn send(
        &self,
        method: hyper::Method,
        url: &str,
        headers: &[(HeaderName, HeaderValue)],
        body: Bytes,
        timeout: Duration,
    ) -> Result<Reply, HttpError> {
        self.send_reading(method, url, headers, body, timeout, MAX_REPLY_BYTES).await
    }

    /// [`send`](Self::send), reading up to `max_body` bytes of the answer.
    pub async fn send_reading(
        &self,
        method: hyper::Method,
        url: &str,
        headers: &[(HeaderName, HeaderValue)],
        body: Bytes,
        timeout: Duration,
        max_body: usize,
    ) -> Result<Reply, HttpError> {
        let request = request(method, url, headers, body)?;
        let exchange = async {
            let response = self.client.request(request).await.map_err(|e| HttpError::Failed(error_chain(&e)))?;
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get(hyper::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, jiff::Timestamp::now()));
            // A bounded start of the body.
            let body = match Limited::new(response.into_body(), max_body).collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(_) => Bytes::from_static(b"(body too long or unreadable)"),
            };
            Ok(Reply { status, retry_after, body })
        };
        tokio::time::timeout(timeout, exchange).await.map_err(|_| HttpError::Timeout(timeout))?
    }

    /// Start a request and hand back the answer as it arrives (a stream such as
    /// server-sent events); `timeout` bounds only the wait for the answer's head.
    pub async fn open(
        &self,
        method: hyper::Method,
        url: &str,
        headers: &[(HeaderName, HeaderValue)],
        timeout: Duration,
    ) -> Result<hyper::Response<hyper::body::Incoming>, HttpError> {
        let request = request(method, url, headers, Bytes::new())?;
        tokio::time::timeout(timeout, self.client.request(request))
            .await
            .map_err(|_| HttpError::Timeout(timeout))?
            .map_err(|e| HttpError::Failed(error_chain(&e)))
    }
}

fn request(
    method: hyper::Method,
    url: &str,
    headers: &[(HeaderName, HeaderValue)],
    body: Bytes,
) -> Result<hyper::Request<Full<Bytes>>, HttpError> {
    let uri: hyper::Uri = url
        .parse()
        .map_err(|e: hyper::http::uri::InvalidUri| HttpError::Url { url: url.to_owned(), reason: e.to_string() })?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err(HttpError::Url { url: url.to_owned(), reason: "only http and https are supported".into() });
    }
    let mut request = hyper::Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        request = request.header(name, value);
    }
    request.body(Full::new(body)).map_err(|e| HttpError::Url { url: url.to_owned(), reason: e.to_string() })
}

/// Every `source()` of an error, joined: hyper's top-level messages say little.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// `Retry-After`: delay-seconds or an HTTP date (RFC 9110 §10.2.3), capped at a day.
pub fn parse_retry_after(value: &str, now: jiff::Timestamp) -> Option<Duration> {
    let value = value.trim();
    let delay = if let Ok(seconds) = value.parse::<u64>() {
        Duration::from_secs(seconds)
    } else {
        let at = jiff::fmt::rfc2822::parse(value).ok()?.timestamp();
        let seconds = at.as_second().saturating_sub(now.as_second()).max(0);
        Duration::from_secs(seconds as u64)
    };
    Some(delay.min(Duration::from_secs(86_400)))
}

/// The outcome of an HTTP exchange for the events it carried: 2xx delivered; 408, 429
/// and 5xx, timeouts and connection failures retried (honouring `Retry-After`); any other
/// status rejected, with the start of the body as the reason.
pub fn outcome(result: &Result<Reply, HttpError>) -> Outcome {
    match result {
        Ok(reply) if (200..300).contains(&reply.status) => Outcome::Delivered,
        Ok(reply) => {
            let text = String::from_utf8_lossy(&reply.body);
            let text: String = text.chars().take(300).collect();
            let error = format!("http {}: {}", reply.status, text.trim());
            if reply.status == 408 || reply.status == 429 || reply.status >= 500 {
                Outcome::Retry { after: reply.retry_after, error }
            } else {
                Outcome::Reject { reason: error }
            }
        }
        Err(HttpError::Url { .. }) => {
            Outcome::reject(result.as_ref().err().map(ToString::to_string).unwrap_or_default())
        }
        Err(e) => Outcome::retry(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(status: u16, retry_after: Option<u64>) -> Result<Reply, HttpError> {
        Ok(Reply { status, retry_after: retry_after.map(Duration::from_secs), body: Bytes::from_static(b"nope") })
    }

    #[test]
    fn statuses_map_to_outcomes() {
        assert_eq!(outcome(&reply(200, None)), Outcome::Delivered);
        assert_eq!(outcome(&reply(204, None)), Outcome::Delivered);
        assert_eq!(
            outcome(&reply(429, Some(7))),
            Outcome::Retry { after: Some(Duration::from_secs(7)), error: "http 429: nope".into() }
        );
        assert!(matches!(outcome(&reply(503, None)), Outcome::Retry { after: None, .. }));
        assert!(matches!(outcome(&reply(408, None)), Outcome::Retry { .. }));
        assert_eq!(outcome(&reply(400, None)), Outcome::Reject { reason: "http 400: nope".into() });
        assert!(matches!(outcome(&reply(404, None)), Outcome::Reject { .. }));
        assert!(matches!(outcome(&Err(HttpError::Timeout(Duration::from_secs(5)))), Outcome::Retry { .. }));
        assert!(matches!(outcome(&Err(HttpError::Failed("connection refused".into()))), Outcome::Retry { .. }));
        assert!(matches!(
            outcome(&Err(HttpError::Url { url: "x".into(), reason: "y".into() })),
            Outcome::Reject { .. }
        ));
    }

    #[test]
    fn retry_after_takes_seconds_or_a_date() {
        let now: jiff::Timestamp = "2015-10-21T07:27:00Z".parse().unwrap();
        assert_eq!(parse_retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now), Some(Duration::from_secs(60)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("9999999", now), Some(Duration::from_secs(86_400)));
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
