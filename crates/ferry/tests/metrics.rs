//! `/metrics` after known traffic: every per-source and per-destination counter, the
//! HTTP histograms, the logs, and the reconciliation accepted = delivered + pending +
//! dead-lettered + filtered.

mod support;

use std::collections::HashMap;

use support::{Server, basic, eventually, http, temp_dir};

/// `name{labels}` → value, from the text format.
fn scrape(server: &Server) -> HashMap<String, f64> {
    let (status, body) = http(server.addr, "GET", "/metrics", &[], b"").unwrap();
    assert_eq!(status, 200);
    let text = String::from_utf8(body).unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (key, value) = l.rsplit_once(' ').unwrap();
            (key.to_owned(), value.parse::<f64>().unwrap())
        })
        .collect()
}

fn value(metrics: &HashMap<String, f64>, key: &str) -> f64 {
    *metrics.get(key).unwrap_or_else(|| {
        panic!(
            "no {key} in {:?}",
            metrics.keys().filter(|k| k.starts_with(key.split('{').next().unwrap())).collect::<Vec<_>>()
        )
    })
}

/// A webhook receiver that refuses (400) the event whose message id is "refused".
fn receiver() -> std::net::SocketAddr {
    support::serve_on_loopback(axum::Router::new().route(
        "/hook",
        axum::routing::post(|body: axum::body::Bytes| async move {
            let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
            if json["messageId"] == "refused" {
                (axum::http::StatusCode::BAD_REQUEST, "no")
            } else {
                (axum::http::StatusCode::OK, "ok")
            }
        }),
    ))
}

fn track(id: &str, integrations: &str) -> String {
    format!(r#"{{"type":"track","messageId":"{id}","userId":"u1","event":"Signed Up","integrations":{integrations}}}"#)
}

#[test]
fn known_traffic_shows_in_every_counter_and_the_reconciliation_holds() {
    let hook = receiver();
    let dir = temp_dir();
    let config = dir.path().join("ferry.toml");
    std::fs::write(
        &config,
        format!(
            "[[sources]]\nid = \"web\"\nwrite_keys = [\"wk_web\"]\n\n\
             [[destinations]]\nname = \"warehouse\"\ntype = \"sqlite\"\nbatch_ms = 50\n\n\
             [[destinations]]\nname = \"hook\"\ntype = \"webhook\"\nurls = [\"http://{hook}/hook\"]\nbatch_ms = 50\nstart = \"beginning\"\n"
        ),
    )
    .unwrap();
    let server = Server::start(dir.path(), &["--config", config.to_str().unwrap()]);
    let auth = basic("wk_web");
    let post = |body: String| {
        let (status, answer) =
            http(server.addr, "POST", "/v1/batch", &[("Authorization", &auth)], body.as_bytes()).unwrap();
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
    };
    // 10 good events, one the webhook refuses, one switched off for it; one invalid item.
    let mut items: Vec<String> = (0..10).map(|i| track(&format!("e{i}"), "{}")).collect();
    items.push(track("refused", "{}"));
    items.push(track("not-for-hook", r#"{"hook": false}"#));
    items.push(r#"{"type":"track","messageId":"bad","userId":"u1"}"#.to_owned());
    post(format!(r#"{{"batch":[{}]}}"#, items.join(",")));
    // Three duplicates, sent again.
    post(format!(r#"{{"batch":[{},{},{}]}}"#, track("e0", "{}"), track("e1", "{}"), track("e2", "{}")));
    // A request refused whole: no write key.
    let (status, _) = http(server.addr, "POST", "/v1/batch", &[], br#"{"batch":[]}"#).unwrap();
    assert_eq!(status, 401);

    let metrics = eventually("both destinations through the log", 30, || {
        let m = scrape(&server);
        let done = |d: &str| m.get(&format!("ferry_destination_lag_events{{destination=\"{d}\"}}")) == Some(&0.0);
        (done("warehouse") && done("hook")).then_some(m)
    });
    let source =
        |outcome: &str| value(&metrics, &format!("ferry_source_events_total{{source=\"web\",outcome=\"{outcome}\"}}"));
    assert_eq!((source("accepted"), source("duplicate"), source("rejected")), (12.0, 3.0, 1.0));
    assert!(value(&metrics, r#"ferry_source_bytes_total{source="web",outcome="accepted"}"#) > 12.0 * 100.0);
    let destination = |d: &str, outcome: &str| {
        value(&metrics, &format!("ferry_destination_events_total{{destination=\"{d}\",outcome=\"{outcome}\"}}"))
    };
    assert_eq!((destination("warehouse", "delivered"), destination("warehouse", "filtered")), (12.0, 0.0));
    assert_eq!(destination("hook", "delivered"), 10.0);
    assert_eq!(destination("hook", "filtered"), 1.0);
    assert_eq!((destination("hook", "rejected"), destination("hook", "dead_lettered")), (1.0, 1.0));
    assert_eq!(value(&metrics, r#"ferry_destination_dead_letters{destination="hook"}"#), 1.0);
    for d in ["warehouse", "hook"] {
        let term = |t: &str| {
            value(&metrics, &format!("ferry_destination_reconciliation_events{{destination=\"{d}\",term=\"{t}\"}}"))
        };
        assert_eq!(term("accepted"), 12.0, "{d}");
        assert_eq!(
            term("accepted"),
            term("delivered") + term("pending") + term("dead_lettered") + term("filtered") + term("skipped"),
            "{d}"
        );
        assert_eq!(value(&metrics, &format!("ferry_destination_reconciled{{destination=\"{d}\"}}")), 1.0);
    }
    assert_eq!(value(&metrics, r#"ferry_log_records_total{log="events"}"#), 12.0);
    assert_eq!(value(&metrics, r#"ferry_log_records_total{log="quarantine"}"#), 1.0);
    // One group commit: the duplicates of the second request wrote nothing.
    assert_eq!(value(&metrics, r#"ferry_log_fsync_duration_seconds_count{log="events"}"#), 1.0);
    assert_eq!(value(&metrics, r#"ferry_log_writable{log="events"}"#), 1.0);
    assert_eq!(value(&metrics, r#"ferry_http_request_duration_seconds_count{route="/v1/batch",status="200"}"#), 2.0);
    assert_eq!(value(&metrics, r#"ferry_http_request_duration_seconds_count{route="/v1/batch",status="401"}"#), 1.0);
    // No user data in label values: ids and event names never become labels.
    let (_, body) = http(server.addr, "GET", "/metrics", &[], b"").unwrap();
    let text = String::from_utf8(body).unwrap();
    assert!(!text.contains("Signed Up") && !text.contains("e0") && !text.contains("u1"));
    support::terminate(server);
}
