//! What the commands that talk to a running `ferry serve` share (`send`, `import`,
//! `tail`): where it is, how to authenticate, and errors that say what to do next.

use std::time::Duration;

use anyhow::Context;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ferry_destinations::http::{HttpClient, HttpError};
use hyper::header::{HeaderName, HeaderValue};

use crate::config::Config;

/// Where the server is and who we are to it.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ServerArgs {
    /// The server's base URL (default: from `server.listen` in the configuration, e.g.
    /// http://127.0.0.1:8088).
    #[arg(long, env = "FERRY_URL")]
    pub(crate) url: Option<String>,
}

/// The base URL: `--url`, or where the configuration says the server listens (an
/// unspecified address such as 0.0.0.0 is reached through loopback).
pub(crate) fn base_url(config: &Config, args: &ServerArgs) -> String {
    if let Some(url) = &args.url {
        return url.trim_end_matches('/').to_owned();
    }
    let listen = config.server.listen;
    let host = if listen.ip().is_unspecified() {
        if listen.is_ipv4() { "127.0.0.1".to_owned() } else { "[::1]".to_owned() }
    } else if listen.is_ipv6() {
        format!("[{}]", listen.ip())
    } else {
        listen.ip().to_string()
    };
    format!("http://{host}:{}", listen.port())
}

/// The write key: `--write-key`, else the first one configured. With no sources ferry
/// runs open and takes any key, so `cli` will do.
pub(crate) fn write_key(config: &Config, given: Option<String>) -> String {
    given
        .or_else(|| config.sources.iter().flat_map(|s| s.write_keys.first()).next().cloned())
        .unwrap_or_else(|| "cli".to_owned())
}

/// `Authorization: Basic base64(key:)`, as Segment's libraries send it.
pub(crate) fn basic(write_key: &str) -> anyhow::Result<(HeaderName, HeaderValue)> {
    let value = format!("Basic {}", STANDARD.encode(format!("{write_key}:")));
    Ok((hyper::header::AUTHORIZATION, HeaderValue::from_str(&value).context("the write key is not valid in a header")?))
}

/// `Authorization: Bearer <token>` when there is a token: `--token`, else the
/// configuration's `admin.token` (or `FERRY_ADMIN_TOKEN`).
pub(crate) fn bearer(config: &Config, given: Option<String>) -> anyhow::Result<Option<(HeaderName, HeaderValue)>> {
    let Some(token) = given.or_else(|| config.admin.token.clone()).filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    let value =
        HeaderValue::from_str(&format!("Bearer {token}")).context("the admin token is not valid in a header")?;
    Ok(Some((hyper::header::AUTHORIZATION, value)))
}

pub(crate) fn client() -> anyhow::Result<HttpClient> {
    HttpClient::new().context("cannot set up the http client")
}

/// A transport failure, with what to try.
pub(crate) fn unreachable(base: &str, error: &HttpError) -> anyhow::Error {
    anyhow::anyhow!(
        "cannot reach ferry at {base}: {error}; is `ferry serve` running there? start it, or point --url (or FERRY_URL) at it"
    )
}

/// The `code` and `message` of one of ferry's JSON errors, else the start of the body.
pub(crate) fn explain(status: u16, body: &[u8]) -> String {
    let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    match parsed.as_ref().and_then(|v| Some((v.get("code")?.as_str()?, v.get("message")?.as_str()?))) {
        Some((code, message)) => format!("{status} {code}: {message}"),
        None => format!("{status}: {}", String::from_utf8_lossy(&body[..body.len().min(300)])),
    }
}

/// How long a single request may take.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_comes_from_the_flag_or_the_listen_address() {
        let mut config: Config = toml::from_str("[server]\nlisten = \"0.0.0.0:9000\"\n").unwrap();
        assert_eq!(base_url(&config, &ServerArgs { url: None }), "http://127.0.0.1:9000");
        config.server.listen = "[::1]:9001".parse().unwrap();
        assert_eq!(base_url(&config, &ServerArgs { url: None }), "http://[::1]:9001");
        assert_eq!(base_url(&config, &ServerArgs { url: Some("http://h:1/".into()) }), "http://h:1");
    }

    #[test]
    fn errors_show_code_and_message() {
        assert_eq!(
            explain(401, br#"{"code":"invalid_write_key","message":"unknown write key"}"#),
            "401 invalid_write_key: unknown write key"
        );
        assert_eq!(explain(502, b"bad gateway"), "502: bad gateway");
    }
}
