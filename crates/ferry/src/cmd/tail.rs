//! `ferry tail`: the debugger's live feed (`GET /debugger/stream`, server-sent events) in
//! the terminal. The filters are the page's, applied by the server.

use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use http_body_util::BodyExt;
use serde_json::Value;

use crate::cmd::client::{self, ServerArgs};
use crate::config::Config;

#[derive(Debug, clap::Args)]
#[command(after_help = "Shows the events ferry saw recently (while someone watched), then new ones as they
arrive, until interrupted. Filters are case-insensitive substrings.

Examples:
  ferry tail
  ferry tail --event 'order' --type track
  ferry tail --user u_123 --deliveries
  ferry tail --json --count 100 > sample.jsonl
  ferry tail --url http://ferry.internal:8088 --token $FERRY_ADMIN_TOKEN")]
pub(crate) struct TailArgs {
    /// Only this source (its id).
    #[arg(long)]
    source: Option<String>,
    /// Only this call: track, identify, page, screen, group or alias.
    #[arg(long = "type")]
    call: Option<String>,
    /// Only events whose name contains this.
    #[arg(long)]
    event: Option<String>,
    /// Only events whose userId or anonymousId contains this.
    #[arg(long)]
    user: Option<String>,
    /// Only items whose JSON, as sent, contains this.
    #[arg(long)]
    text: Option<String>,
    /// Also show what each destination made of the events.
    #[arg(long)]
    deliveries: bool,
    /// One JSON object per line instead of the readable form.
    #[arg(long)]
    json: bool,
    /// Stop after this many events (rejected items included).
    #[arg(long)]
    count: Option<u64>,
    /// The admin token (default: admin.token from the configuration, or FERRY_ADMIN_TOKEN).
    #[arg(long, env = "FERRY_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[command(flatten)]
    server: ServerArgs,
}

/// Percent-encoding for a query value (RFC 3986 unreserved characters pass).
fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn query(args: &TailArgs) -> String {
    let pairs = [
        ("source", &args.source),
        ("type", &args.call),
        ("event", &args.event),
        ("user", &args.user),
        ("text", &args.text),
    ];
    let parts: Vec<String> =
        pairs.iter().filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", encode(v)))).collect();
    if parts.is_empty() { String::new() } else { format!("?{}", parts.join("&")) }
}

/// Splits a byte stream into server-sent events: `(event name, data)`.
#[derive(Debug, Default)]
struct SseParser {
    buffer: Vec<u8>,
}

impl SseParser {
    fn push(&mut self, bytes: &[u8]) -> Vec<(String, String)> {
        self.buffer.extend_from_slice(bytes);
        let mut events = Vec::new();
        while let Some(end) = find_blank_line(&self.buffer) {
            let block: Vec<u8> = self.buffer.drain(..end.1).collect();
            let text = String::from_utf8_lossy(&block[..end.0]);
            let (mut name, mut data) = (String::from("message"), Vec::new());
            for line in text.lines() {
                if let Some(value) = line.strip_prefix("event:") {
                    name = value.trim_start().to_owned();
                } else if let Some(value) = line.strip_prefix("data:") {
                    data.push(value.strip_prefix(' ').unwrap_or(value).to_owned());
                }
                // Comments (`:`, keep-alives), `id:` and `retry:` lines are not needed.
            }
            if !data.is_empty() {
                events.push((name, data.join("\n")));
            }
        }
        events
    }
}

/// Where the first event block ends: (end of its text, end including the blank line).
fn find_blank_line(buffer: &[u8]) -> Option<(usize, usize)> {
    let lf = buffer.windows(2).position(|w| w == b"\n\n").map(|p| (p, p + 2));
    let crlf = buffer.windows(4).position(|w| w == b"\r\n\r\n").map(|p| (p, p + 4));
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(if a.0 < b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

fn text(value: &Value, key: &str) -> String {
    value.get(key).and_then(Value::as_str).unwrap_or_default().to_owned()
}

/// Time of day from an ISO timestamp, with milliseconds.
fn clock(at: &str) -> &str {
    at.get(11..23).unwrap_or(at)
}

/// The lines to print for one observation, and how many events they count as.
fn render(name: &str, data: &str, args: &TailArgs) -> (Vec<String>, u64) {
    let Ok(value) = serde_json::from_str::<Value>(data) else {
        return (Vec::new(), 0);
    };
    let mut lines = Vec::new();
    let mut events = 0;
    match name {
        "request" => {
            let (at, source, route) = (text(&value, "at"), text(&value, "source"), text(&value, "route"));
            for e in value["events"].as_array().into_iter().flatten() {
                events += 1;
                if args.json {
                    let mut e = e.clone();
                    if let Some(o) = e.as_object_mut() {
                        o.insert("kind".into(), "event".into());
                        o.insert("at".into(), at.clone().into());
                        o.insert("source".into(), source.clone().into());
                        o.insert("route".into(), route.clone().into());
                        for key in ["raw", "stored"] {
                            if let Some(parsed) =
                                o.get(key).and_then(Value::as_str).and_then(|s| serde_json::from_str::<Value>(s).ok())
                            {
                                o.insert(key.into(), parsed);
                            }
                        }
                    }
                    lines.push(e.to_string());
                    continue;
                }
                let call = text(e, "type");
                let what = e.get("event").and_then(Value::as_str).map(|n| format!(" {n:?}")).unwrap_or_default();
                let who = match (e.get("userId").and_then(Value::as_str), e.get("anonymousId").and_then(Value::as_str))
                {
                    (Some(user), _) => format!(" user={user}"),
                    (None, Some(anonymous)) => format!(" anonymous={anonymous}"),
                    (None, None) => String::new(),
                };
                let mut line = format!("{} {source} {call}{what}{who} messageId={}", clock(&at), text(e, "messageId"));
                if e["duplicate"].as_bool() == Some(true) {
                    line.push_str(" (duplicate, not stored again)");
                }
                let warnings: Vec<String> = e["warnings"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|w| format!("{}: {}", text(w, "code"), text(w, "message")))
                    .collect();
                if !warnings.is_empty() {
                    line.push_str(&format!("\n    warning {}", warnings.join("\n    warning ")));
                }
                lines.push(line);
            }
            for r in value["rejected"].as_array().into_iter().flatten() {
                events += 1;
                if args.json {
                    let mut r = r.clone();
                    if let Some(o) = r.as_object_mut() {
                        o.insert("kind".into(), "rejected".into());
                        o.insert("at".into(), at.clone().into());
                        o.insert("source".into(), source.clone().into());
                        o.insert("route".into(), route.clone().into());
                    }
                    lines.push(r.to_string());
                    continue;
                }
                let id =
                    r.get("messageId").and_then(Value::as_str).map(|m| format!(" messageId={m}")).unwrap_or_default();
                lines.push(format!(
                    "{} {source} REJECTED {}: {} (item {}{id}; in quarantine)",
                    clock(&at),
                    text(r, "code"),
                    text(r, "message"),
                    r["index"]
                ));
            }
            let omitted = value["omitted"].as_u64().unwrap_or(0);
            if omitted > 0 && !args.json {
                lines.push(format!(
                    "    ({omitted} more items of this request not shown: the feed shows about 64 KiB per request)"
                ));
            }
        }
        "delivery" if args.deliveries => {
            if args.json {
                lines.push(value.to_string());
            } else {
                let n = value["messageIds"].as_array().map_or(0, Vec::len);
                let error = value.get("error").and_then(Value::as_str).map(|e| format!(": {e}")).unwrap_or_default();
                lines.push(format!(
                    "{} -> {} {} {n} event{}{error}",
                    clock(&text(&value, "at")),
                    text(&value, "destination"),
                    text(&value, "outcome").replace('_', " "),
                    if n == 1 { "" } else { "s" }
                ));
            }
        }
        "lagged" => {
            let _ = writeln!(
                std::io::stderr(),
                "({} observations missed: the feed went faster than this terminal read it)",
                value["missed"]
            );
        }
        _ => {}
    }
    (lines, events)
}

pub(crate) fn run(config: &Config, args: TailArgs) -> anyhow::Result<()> {
    let base = client::base_url(config, &args.server);
    let url = format!("{base}/debugger/stream{}", query(&args));
    let mut headers = vec![(hyper::header::ACCEPT, "text/event-stream".parse()?)];
    headers.extend(client::bearer(config, args.token.clone())?);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let http = client::client()?;
        let response = http
            .open(hyper::Method::GET, &url, &headers, Duration::from_secs(10))
            .await
            .map_err(|e| client::unreachable(&base, &e))?;
        let status = response.status().as_u16();
        if status != 200 {
            let body = response.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            let why = client::explain(status, &body);
            if status == 401 {
                anyhow::bail!("ferry wants the admin token ({why}); pass --token or set FERRY_ADMIN_TOKEN");
            }
            anyhow::bail!("ferry did not open the stream: {why}");
        }
        eprintln!("watching {base} (ctrl-c to stop)");
        let mut body = response.into_body();
        let mut parser = SseParser::default();
        let mut shown = 0u64;
        let mut out = std::io::stdout().lock();
        while let Some(frame) = body.frame().await {
            let frame = frame.context("the stream broke off")?;
            let Some(data) = frame.data_ref() else { continue };
            for (name, data) in parser.push(data) {
                let (lines, events) = render(&name, &data, &args);
                for line in lines {
                    // A closed pipe (`ferry tail | head`) ends the command quietly.
                    if writeln!(out, "{line}").is_err() {
                        return Ok(());
                    }
                }
                let _ = out.flush();
                shown += events;
                if args.count.is_some_and(|c| shown >= c) {
                    return Ok(());
                }
            }
        }
        anyhow::bail!("ferry closed the stream (did it stop?)")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: TailArgs,
    }

    fn args(line: &[&str]) -> TailArgs {
        Wrapper::try_parse_from(std::iter::once("tail").chain(line.iter().copied())).unwrap().args
    }

    #[test]
    fn server_sent_events_are_split_across_chunks() {
        let mut parser = SseParser::default();
        assert!(parser.push(b"event: request\ndata: {\"a\"").is_empty());
        let events =
            parser.push(b":1}\n\n: keep-alive\n\nevent: lagged\r\ndata: {\"missed\":3}\r\n\r\ndata: x\ndata: y\n\n");
        assert_eq!(
            events,
            [
                ("request".to_owned(), "{\"a\":1}".to_owned()),
                ("lagged".to_owned(), "{\"missed\":3}".to_owned()),
                ("message".to_owned(), "x\ny".to_owned())
            ]
        );
    }

    #[test]
    fn filters_become_the_query() {
        assert_eq!(query(&args(&[])), "");
        assert_eq!(
            query(&args(&["--event", "Order Completed", "--type", "track"])),
            "?type=track&event=Order%20Completed"
        );
    }

    #[test]
    fn events_render_readably_or_as_json() {
        let data = r#"{"kind":"request","at":"2026-12-01T10:11:12.345Z","source":"web","route":"/v1/batch",
            "events":[{"messageId":"m1","type":"track","event":"Order Completed","userId":"u1","anonymousId":null,
              "raw":"{\"event\":\"Order Completed\"}","stored":"{\"receivedAt\":\"x\"}","duplicate":false,
              "warnings":[{"code":"invalid_currency","message":"bad","field":"properties.currency"}]}],
            "rejected":[{"index":1,"messageId":null,"code":"missing_field","message":"`event` is required","field":"event","item":"{}"}]}"#;
        let (lines, events) = render("request", data, &args(&[]));
        assert_eq!(events, 2);
        assert_eq!(
            lines[0],
            "10:11:12.345 web track \"Order Completed\" user=u1 messageId=m1\n    warning invalid_currency: bad"
        );
        assert_eq!(lines[1], "10:11:12.345 web REJECTED missing_field: `event` is required (item 1; in quarantine)");
        let (lines, _) = render("request", data, &args(&["--json"]));
        let first: Value = serde_json::from_str(&lines[0]).unwrap();
        assert_eq!((first["kind"].as_str(), first["source"].as_str()), (Some("event"), Some("web")));
        assert_eq!(first["raw"]["event"], "Order Completed", "raw and stored are JSON, not strings");
        let delivery = r#"{"kind":"delivery","at":"2026-12-01T10:11:13.000Z","destination":"warehouse","outcome":"dead_lettered","messageIds":["m1"],"error":"400 nope"}"#;
        assert!(render("delivery", delivery, &args(&[])).0.is_empty(), "deliveries only when asked");
        assert_eq!(
            render("delivery", delivery, &args(&["--deliveries"])).0,
            ["10:11:13.000 -> warehouse dead lettered 1 event: 400 nope"]
        );
    }
}
