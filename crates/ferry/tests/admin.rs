//! The admin API through the real binary: every route refuses requests without the
//! token, and does its work with it (destinations, dead letters and a redrive job,
//! quarantine and a re-submission after a fix, replay jobs and their cancellation); the
//! OpenAPI document lists exactly these routes; ferry refuses to listen beyond loopback
//! with the admin API open.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{Value, json};
use support::{
    BOTH, Backend, FERRY, Server, backend_config, basic, eventually, http, serve_on_loopback, sqlite_rows, temp_dir,
};

const TOKEN: &str = "admin-s3cret";

/// A webhook receiver that refuses (400) everything until `open` is set.
fn receiver(open: Arc<AtomicBool>) -> SocketAddr {
    serve_on_loopback(axum::Router::new().route(
        "/hook",
        axum::routing::post(move || {
            let open = open.clone();
            async move {
                if open.load(Ordering::Relaxed) {
                    (axum::http::StatusCode::OK, "ok")
                } else {
                    (axum::http::StatusCode::BAD_REQUEST, "not yet")
                }
            }
        }),
    ))
}

fn call(server: &Server, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let auth = format!("Bearer {TOKEN}");
    let bytes = body.map(|b| b.to_string()).unwrap_or_default();
    let headers: Vec<(&str, &str)> = vec![("Authorization", &auth), ("Content-Type", "application/json")];
    let (status, answer) = http(server.addr, method, path, &headers, bytes.as_bytes()).unwrap();
    (status, serde_json::from_slice(&answer).unwrap_or(Value::Null))
}

#[test]
fn every_admin_route_needs_the_token_and_does_its_work_with_it() {
    for backend in BOTH {
        admin_routes_on(backend);
    }
}

fn admin_routes_on(backend: Backend) {
    let open = Arc::new(AtomicBool::new(false));
    let hook = receiver(open.clone());
    let dir = temp_dir();
    let (_nats, log_section) = backend_config(backend, dir.path());
    let config = dir.path().join("ferry.toml");
    std::fs::write(
        &config,
        format!(
            "{log_section}[admin]\ntoken = \"{TOKEN}\"\n\n[[sources]]\nid = \"web\"\nwrite_keys = [\"wk_web\"]\n\n\
             [[destinations]]\nname = \"warehouse\"\ntype = \"sqlite\"\nbatch_ms = 50\n\n\
             [[destinations]]\nname = \"hook\"\ntype = \"webhook\"\nurls = [\"http://{hook}/hook\"]\nbatch_ms = 50\nstart = \"beginning\"\n"
        ),
    )
    .unwrap();
    let server = Server::start(dir.path(), &["--config", config.to_str().unwrap()]);

    // The OpenAPI document lists the admin routes; every one refuses without the token.
    let (status, doc) = http(server.addr, "GET", "/openapi.json", &[], b"").unwrap();
    assert_eq!(status, 200);
    let doc: Value = serde_json::from_slice(&doc).unwrap();
    let mut routes: Vec<(String, String)> = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            routes.push((method.to_uppercase(), path.replace("{id}", "1").replace("{offset}", "0")));
        }
    }
    routes.sort();
    let expected = [
        ("DELETE", "/admin/v1/jobs/1"),
        ("GET", "/admin/v1/dead-letters"),
        ("GET", "/admin/v1/dead-letters/1"),
        ("GET", "/admin/v1/destinations"),
        ("GET", "/admin/v1/jobs"),
        ("GET", "/admin/v1/jobs/1"),
        ("GET", "/admin/v1/quarantine"),
        ("GET", "/admin/v1/quarantine/0"),
        ("GET", "/admin/v1/sources"),
        ("POST", "/admin/v1/dead-letters/redrive"),
        ("POST", "/admin/v1/quarantine/0/resubmit"),
        ("POST", "/admin/v1/replays"),
    ];
    assert_eq!(routes.iter().map(|(m, p)| (m.as_str(), p.as_str())).collect::<Vec<_>>(), expected);
    for (method, path) in &routes {
        for headers in [vec![], vec![("Authorization", "Bearer wrong")], vec![("Authorization", "Basic YWRtaW46")]] {
            let (status, body) = http(server.addr, method, path, &headers, b"").unwrap();
            assert_eq!(status, 401, "{method} {path} with {headers:?}");
            let body: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(body["code"], "admin_token_required");
        }
    }

    // Traffic: three events, one invalid item.
    let items = [
        r#"{"type":"track","messageId":"a1","userId":"u1","event":"Signed Up"}"#,
        r#"{"type":"track","messageId":"a2","userId":"u1","event":"Signed Up"}"#,
        r#"{"type":"track","messageId":"a3","userId":"u1","event":"Order Completed"}"#,
        r#"{"type":"track","messageId":"bad","userId":"u1"}"#,
    ];
    let (status, _) = http(
        server.addr,
        "POST",
        "/v1/batch",
        &[("Authorization", &basic("wk_web"))],
        format!(r#"{{"batch":[{}]}}"#, items.join(",")).as_bytes(),
    )
    .unwrap();
    assert_eq!(status, 200);

    let (status, sources) = call(&server, "GET", "/admin/v1/sources", None);
    assert_eq!(status, 200);
    assert_eq!(sources["configured"], json!(["web"]));
    assert_eq!(
        sources["sources"][0],
        json!({"id": "web", "accepted": 3, "acceptedBytes": sources["sources"][0]["acceptedBytes"], "duplicate": 0, "rejected": 1})
    );

    // The webhook refuses all three: dead letters.
    let letters = eventually("three dead letters", 30, || {
        let (_, body) = call(&server, "GET", "/admin/v1/dead-letters?destination=hook", None);
        (body["deadLetters"].as_array().map(Vec::len) == Some(3)).then_some(body)
    });
    // The cursor moves once the dead letters are stored.
    let hook_state = eventually("the hook's cursor past them", 30, || {
        let (status, destinations) = call(&server, "GET", "/admin/v1/destinations", None);
        assert_eq!(status, 200);
        let hook =
            destinations["destinations"].as_array().unwrap().iter().find(|d| d["name"] == "hook").unwrap().clone();
        (hook["lagEvents"] == 0).then_some(hook)
    });
    assert_eq!(
        (hook_state["type"].as_str(), hook_state["deadLetters"].as_u64(), hook_state["lagEvents"].as_u64()),
        (Some("webhook"), Some(3), Some(0))
    );
    assert!(hook_state["lastError"]["error"].as_str().unwrap().contains("400"), "{hook_state}");
    let id = letters["deadLetters"][0]["id"].as_i64().unwrap();
    let (status, one) = call(&server, "GET", &format!("/admin/v1/dead-letters/{id}"), None);
    assert_eq!(status, 200);
    assert_eq!(one["payload"]["messageId"], letters["deadLetters"][0]["messageId"]);
    assert_eq!(call(&server, "GET", "/admin/v1/dead-letters/999999", None).0, 404);
    let (status, filtered) = call(&server, "GET", "/admin/v1/dead-letters?event=Order%20Completed", None);
    assert_eq!((status, filtered["deadLetters"].as_array().unwrap().len()), (200, 1));
    // The caller's mistakes are 400s in the API's error shape, not 500s.
    for path in
        ["/admin/v1/dead-letters?since=garbage", "/admin/v1/dead-letters?colour=red", "/admin/v1/dead-letters/abc"]
    {
        let (status, refused) = call(&server, "GET", path, None);
        assert_eq!(status, 400, "{path}: {refused}");
        assert!(refused["code"] == "invalid_filter" || refused["code"] == "invalid_request", "{path}: {refused}");
    }

    // The receiver is fixed; a redrive job of one event name, then of the rest.
    open.store(true, Ordering::Relaxed);
    let (status, job) = call(
        &server,
        "POST",
        "/admin/v1/dead-letters/redrive",
        Some(json!({"destination": "hook", "event": "Signed Up"})),
    );
    assert_eq!(status, 200);
    let job_id = job["id"].as_u64().unwrap();
    let done = eventually("the redrive job", 30, || {
        let (_, job) = call(&server, "GET", &format!("/admin/v1/jobs/{job_id}"), None);
        (job["state"] == "done").then_some(job)
    });
    assert_eq!(
        (done["kind"].as_str(), done["delivered"].as_u64(), done["failed"].as_u64()),
        (Some("redrive"), Some(2), Some(0))
    );
    let (_, left) = call(&server, "GET", "/admin/v1/dead-letters", None);
    assert_eq!(left["deadLetters"].as_array().unwrap().len(), 1);

    // Quarantine: list, show, re-submit as it was (still invalid), then fixed.
    let (status, quarantine) = call(&server, "GET", "/admin/v1/quarantine", None);
    assert_eq!(status, 200);
    assert_eq!(quarantine["items"].as_array().unwrap().len(), 1);
    assert_eq!(quarantine["items"][0]["record"]["code"], "missing_event");
    // Offsets are the log's positions: from 0 in the embedded log, stream sequences in JetStream.
    let offset = quarantine["items"][0]["offset"].as_u64().unwrap();
    let (status, item) = call(&server, "GET", &format!("/admin/v1/quarantine/{offset}"), None);
    assert_eq!((status, item["record"]["messageId"].as_str()), (200, Some("bad")));
    assert_eq!(call(&server, "GET", "/admin/v1/quarantine/999", None).0, 404);
    let (status, again) = call(&server, "POST", &format!("/admin/v1/quarantine/{offset}/resubmit"), None);
    assert_eq!(
        (status, again["resubmitted"].as_bool(), again["code"].as_str()),
        (200, Some(false), Some("missing_event"))
    );
    let fixed = json!({"item": {"type": "track", "messageId": "bad", "userId": "u1", "event": "Fixed Later"}});
    let (status, again) = call(&server, "POST", &format!("/admin/v1/quarantine/{offset}/resubmit"), Some(fixed));
    assert_eq!((status, again["resubmitted"].as_bool()), (200, Some(true)), "{again}");
    eventually("the fixed event in the warehouse", 30, || {
        let rows = sqlite_rows(dir.path(), "select id from fixed_later");
        (rows.len() == 1).then_some(())
    });

    // A replay job to the warehouse; an unknown destination is refused; a job is cancelled.
    let (status, replay) = call(
        &server,
        "POST",
        "/admin/v1/replays",
        Some(json!({"destination": "warehouse", "since": "2000-01-01T00:00:00Z"})),
    );
    assert_eq!(status, 200, "{replay}");
    let replay_id = replay["id"].as_u64().unwrap();
    let done = eventually("the replay", 30, || {
        let (_, job) = call(&server, "GET", &format!("/admin/v1/jobs/{replay_id}"), None);
        (job["state"] == "done").then_some(job)
    });
    assert_eq!(done["delivered"].as_u64(), Some(4), "{done}");
    let (status, refused) = call(
        &server,
        "POST",
        "/admin/v1/replays",
        Some(json!({"destination": "nope", "since": "2000-01-01T00:00:00Z"})),
    );
    assert_eq!((status, refused["code"].as_str()), (400, Some("invalid_replay")));
    let (status, cancelled) = call(&server, "DELETE", &format!("/admin/v1/jobs/{replay_id}"), None);
    assert_eq!((status, cancelled["id"].as_u64()), (200, Some(replay_id)));
    assert_eq!(call(&server, "DELETE", "/admin/v1/jobs/999", None).0, 404);
    let (_, jobs) = call(&server, "GET", "/admin/v1/jobs", None);
    assert_eq!(jobs["jobs"].as_array().unwrap().len(), 2);
    support::terminate(server);
}

#[test]
fn ferry_refuses_to_listen_beyond_loopback_with_the_admin_api_open() {
    let dir = temp_dir();
    let output = std::process::Command::new(FERRY)
        .args(["serve", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(dir.path())
        .env_remove("FERRY_ADMIN_TOKEN")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("admin api open") && stderr.contains("admin.token"), "{stderr}");
    // With a token it starts.
    let server = Server::start(dir.path(), &["--admin-token", TOKEN]);
    assert_eq!(call(&server, "GET", "/admin/v1/sources", None).0, 200);
}
