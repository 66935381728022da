//! Delivery end to end, through the real binary: events sent over HTTP land in the
//! embedded SQLite warehouse (and PostgreSQL, when `FERRY_TEST_POSTGRES_URL` is set);
//! dead letters are listed, shown and redriven with `ferry dlq`; `ferry replay` restores
//! rows, beside a running server, without duplicating any. Each runs on both logs, the
//! embedded one and JetStream (the files destination only on the embedded log).

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use support::{
    BOTH, Backend, Server, backend_config, basic, eventually, ferry, http, postgres_url, sqlite_rows, temp_dir,
    terminate, unique, webhook_receiver,
};

fn send_batch(server: &Server, write_key: &str, items: &[String]) {
    let body = format!(r#"{{"batch":[{}]}}"#, items.join(","));
    let (status, response) =
        http(server.addr, "POST", "/v1/batch", &[("Authorization", &basic(write_key))], body.as_bytes()).unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&response));
}

fn track(id: &str, event: &str, properties: &str, integrations: &str) -> String {
    format!(
        r#"{{"type":"track","messageId":"{id}","userId":"u1","event":"{event}","properties":{properties},"integrations":{integrations}}}"#
    )
}

fn write_config(dir: &Path, text: &str) -> String {
    let path = dir.join("ferry.toml");
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn events_reach_the_embedded_warehouse_in_seconds() {
    for backend in BOTH {
        events_reach_the_embedded_warehouse_on(backend);
    }
}

fn events_reach_the_embedded_warehouse_on(backend: Backend) {
    let dir = temp_dir();
    let (_nats, log_section) = backend_config(backend, dir.path());
    let config = write_config(dir.path(), &log_section);
    let server = Server::start(dir.path(), &["--config", &config]);
    let started = Instant::now();
    let mut items: Vec<String> = (0..40)
        .map(|i| {
            track(
                &format!("t{i}"),
                if i % 2 == 0 { "Signed Up" } else { "Order Completed" },
                &format!(r#"{{"n": {i}, "plan": "pro"}}"#),
                "{}",
            )
        })
        .collect();
    // Warehouses ignore `integrations`, as in Segment.
    items.push(track("off", "Signed Up", "{}", r#"{"All": false}"#));
    items.push(
        r#"{"type":"identify","messageId":"i1","userId":"u1","traits":{"email":"peter@example.com","plan":"pro"}}"#
            .to_owned(),
    );
    items.push(
        r#"{"type":"page","messageId":"p1","anonymousId":"a1","name":"Home","properties":{"path":"/"}}"#.to_owned(),
    );
    send_batch(&server, "wk_fast", &items);
    let counts = eventually("rows in the warehouse", 30, || {
        let rows = sqlite_rows(dir.path(), "select event, count(*) from tracks group by 1 order by 1");
        (rows.iter().map(|r| r[1].parse::<usize>().unwrap()).sum::<usize>() == 41).then_some(rows)
    });
    let visible_after = started.elapsed();
    eprintln!("events visible in the embedded warehouse {visible_after:?} after their 2xx");
    assert_eq!(counts, [["order_completed", "20"], ["signed_up", "21"]]);
    assert!(visible_after < Duration::from_secs(15), "{visible_after:?}");
    let users = eventually("the users row", 10, || {
        let rows = sqlite_rows(dir.path(), "select id, email, plan from users");
        (!rows.is_empty()).then_some(rows)
    });
    assert_eq!(users, [["u1", "peter@example.com", "pro"]]);
    let pages = sqlite_rows(dir.path(), "select name, path from pages");
    assert_eq!(pages, [["Home", "/"]]);
    let n = sqlite_rows(dir.path(), "select sum(n) from order_completed");
    assert_eq!(n, [[(1..40).step_by(2).sum::<i32>().to_string()]]);
    terminate(server);
}

#[test]
fn postgres_destination_receives_every_event() {
    for backend in BOTH {
        postgres_destination_receives_every_event_on(backend);
    }
}

fn postgres_destination_receives_every_event_on(backend: Backend) {
    let Some(url) = postgres_url("postgres destination") else { return };
    let dir = temp_dir();
    let (_nats, log_section) = backend_config(backend, dir.path());
    let source = unique("e2e");
    let config = write_config(
        dir.path(),
        &format!(
            "{log_section}[[sources]]\nid = \"{source}\"\nwrite_keys = [\"wk_pg\"]\n\n[[destinations]]\nname = \"pg\"\ntype = \"postgres\"\nurl = \"{url}\"\nbatch_ms = 100\n"
        ),
    );
    let server = Server::start(dir.path(), &["--config", &config]);
    let items: Vec<String> =
        (0..25).map(|i| track(&format!("t{i}"), "Signed Up", &format!(r#"{{"n": {i}}}"#), "{}")).collect();
    send_batch(&server, "wk_pg", &items);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(row) =
                client.query_one(&format!("select count(*), sum(n)::bigint from \"{source}\".signed_up"), &[]).await
            {
                let (count, sum): (i64, Option<i64>) = (row.get(0), row.get(1));
                if count == 25 {
                    assert_eq!(sum, Some((0..25).sum()));
                    break;
                }
            }
            assert!(Instant::now() < deadline, "postgresql did not get the events");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        client.batch_execute(&format!("drop schema \"{source}\" cascade")).await.unwrap();
    });
    terminate(server);
}

#[test]
fn dead_letters_are_listed_shown_and_redriven() {
    for backend in BOTH {
        dead_letters_are_listed_shown_and_redriven_on(backend);
    }
}

fn dead_letters_are_listed_shown_and_redriven_on(backend: Backend) {
    let Some(url) = postgres_url("dead letters and redrive") else { return };
    let dir = temp_dir();
    let (_nats, log_section) = backend_config(backend, dir.path());
    let data = dir.path().to_str().unwrap().to_owned();
    let source = unique("dlq");
    let config_for = |url: &str| {
        format!(
            "{log_section}[[sources]]\nid = \"{source}\"\nwrite_keys = [\"wk_dlq\"]\n\n[[destinations]]\nname = \"pg\"\ntype = \"postgres\"\nurl = \"{url}\"\nbatch_ms = 50\nmax_age_seconds = 1\nretry_initial_ms = 100\nretry_max_ms = 200\n"
        )
    };
    // A database that is not there: every attempt fails until the maximum age.
    let config = write_config(dir.path(), &config_for("postgres://postgres@127.0.0.1:1/test"));
    let server = Server::start(dir.path(), &["--config", &config]);
    let items: Vec<String> = (0..3).map(|i| track(&format!("d{i}"), "Order Completed", "{}", "{}")).collect();
    send_batch(&server, "wk_dlq", &items);
    let listed = eventually("three dead letters", 30, || {
        let (ok, out, _) = ferry(&["dlq", "list", "--json", "--data-dir", &data, "--config", &config]);
        (ok && out.lines().count() == 3).then_some(out)
    });
    terminate(server);
    let first: serde_json::Value = serde_json::from_str(listed.lines().next().unwrap()).unwrap();
    assert_eq!(first["destination"], "pg");
    assert_eq!(first["event"], "Order Completed");
    assert!(first["reason"].as_str().unwrap().contains("gave up after"), "{first}");
    assert!(first["attempts"].as_array().unwrap().len() >= 2, "{first}");
    let (ok, table, _) = ferry(&["dlq", "list", "--data-dir", &data, "--config", &config]);
    assert!(ok && table.contains("Order Completed") && table.contains("3 shown"), "{table}");
    let id = first["id"].to_string();
    let (ok, shown, _) = ferry(&["dlq", "show", &id, "--data-dir", &data, "--config", &config]);
    assert!(ok, "{shown}");
    let shown: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(shown["payload"]["messageId"], first["messageId"]);
    assert!(shown["attempts"][0]["error"].as_str().unwrap().contains("connect"), "{shown}");

    // Redrive to a broken destination keeps them, with the new attempt.
    let (ok, _, err) = ferry(&["dlq", "redrive", "--data-dir", &data, "--config", &config]);
    assert!(!ok && err.contains("still failing"), "{err}");
    // Fixed configuration: the redrive delivers them and they leave the list.
    let config = write_config(dir.path(), &config_for(&url));
    let (ok, out, err) = ferry(&["dlq", "redrive", "--destination", "pg", "--data-dir", &data, "--config", &config]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("3 delivered"), "{out}");
    assert!(err.contains("3/3"), "progress is shown: {err}");
    let (_, out, _) = ferry(&["dlq", "list", "--data-dir", &data, "--config", &config]);
    assert!(out.contains("no dead letters match"), "{out}");
    let (_, out, _) = ferry(&["dlq", "list", "--all", "--json", "--data-dir", &data, "--config", &config]);
    assert!(out.lines().all(|l| l.contains("\"redrivenAt\":\"")), "{out}");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        let row = client.query_one(&format!("select count(*) from \"{source}\".order_completed"), &[]).await.unwrap();
        assert_eq!(row.get::<_, i64>(0), 3);
        client.batch_execute(&format!("drop schema \"{source}\" cascade")).await.unwrap();
    });
}

#[test]
fn replay_restores_rows_beside_a_running_server_without_duplicates() {
    for backend in BOTH {
        replay_restores_rows_on(backend);
    }
}

fn replay_restores_rows_on(backend: Backend) {
    let dir = temp_dir();
    let (_nats, log_section) = backend_config(backend, dir.path());
    let config = write_config(dir.path(), &log_section);
    let data = dir.path().to_str().unwrap().to_owned();
    let server = Server::start(dir.path(), &["--config", &config]);
    let items: Vec<String> =
        (0..30).map(|i| track(&format!("r{i}"), "Signed Up", &format!(r#"{{"n": {i}}}"#), "{}")).collect();
    send_batch(&server, "wk_replay", &items);
    let table = eventually("the rows", 30, || {
        let names = sqlite_rows(dir.path(), "select name from _ferry_tables where table_name = 'signed_up'");
        let name = names.first()?.first()?.clone();
        (sqlite_rows(dir.path(), &format!("select count(*) from \"{name}\""))[0][0] == "30").then_some(name)
    });
    // Somebody deletes rows; a replay brings them back while ferry keeps running.
    let conn = rusqlite::Connection::open(dir.path().join("warehouse.db")).unwrap();
    conn.execute(&format!("delete from \"{table}\" where n >= 10"), []).unwrap();
    drop(conn);
    let (ok, out, err) =
        ferry(&["replay", "--destination", "warehouse", "--since", "1h", "--data-dir", &data, "--config", &config]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("delivered 30 events"), "{out}");
    assert!(err.contains("30/30"), "progress is shown: {err}");
    let rows = sqlite_rows(dir.path(), &format!("select count(*), count(distinct id) from \"{table}\""));
    assert_eq!(rows, [["30", "30"]]);
    // Again: nothing changes.
    let (ok, _, _) =
        ferry(&["replay", "--destination", "warehouse", "--since", "1h", "--data-dir", &data, "--config", &config]);
    assert!(ok);
    assert_eq!(sqlite_rows(dir.path(), &format!("select count(*) from \"{table}\"")), [["30"]]);
    // A range before the events replays nothing; an unknown destination is a clear error.
    let (ok, out, _) = ferry(&[
        "replay",
        "--destination",
        "warehouse",
        "--since",
        "3h",
        "--until",
        "2h",
        "--data-dir",
        &data,
        "--config",
        &config,
    ]);
    assert!(ok && out.contains("delivered 0 events"), "{out}");
    let (ok, _, err) =
        ferry(&["replay", "--destination", "nope", "--since", "1h", "--data-dir", &data, "--config", &config]);
    assert!(!ok && err.contains("no destination named \"nope\"") && err.contains("warehouse"), "{err}");
    terminate(server);
}

#[test]
fn webhooks_files_and_the_warehouse_each_get_what_integrations_allow() {
    let (receiver, seen) = webhook_receiver();
    let dir = temp_dir();
    let config = write_config(
        dir.path(),
        &format!(
            "[[destinations]]\nname = \"hook\"\ntype = \"webhook\"\nurls = [\"http://{receiver}/hook\"]\nshared_secret = \"s3cret\"\nbatch = true\nbatch_ms = 50\n\n\
             [[destinations]]\nname = \"lake\"\ntype = \"files\"\nbatch_ms = 100\n\n\
             [[destinations]]\nname = \"warehouse\"\ntype = \"sqlite\"\nbatch_ms = 100\n"
        ),
    );
    let server = Server::start(dir.path(), &["--config", &config]);
    let items = vec![
        track("plain", "Order Completed", r#"{"revenue": 19.99, "currency": "EUR"}"#, "{}"),
        track("all-off", "Order Completed", "{}", r#"{"All": false}"#),
        track("hook-only", "Order Completed", "{}", r#"{"All": false, "hook": true}"#),
        track("hook-off", "Order Completed", "{}", r#"{"hook": false}"#),
    ];
    send_batch(&server, "wk_routes", &items);
    let bodies = eventually("the webhook", 30, || {
        let seen = seen.lock().unwrap();
        let ids: Vec<String> = seen
            .iter()
            .flat_map(|(signature, body)| {
                assert_eq!(*signature, ferry_destinations::webhook::signature("s3cret", body), "signed");
                serde_json::from_slice::<Vec<serde_json::Value>>(body).unwrap()
            })
            .map(|e| e["messageId"].as_str().unwrap().to_owned())
            .collect();
        (ids.len() >= 2).then_some(ids)
    });
    let mut bodies = bodies;
    bodies.sort();
    assert_eq!(bodies, ["hook-only", "plain"], "the webhook follows integrations");
    // Storage destinations ignore integrations, as in Segment.
    let rows = eventually("the warehouse", 30, || {
        let rows = sqlite_rows(dir.path(), "select id from order_completed order by id");
        (rows.len() == 4).then_some(rows)
    });
    assert_eq!(rows, [["all-off"], ["hook-off"], ["hook-only"], ["plain"]]);
    let lines = eventually("the files", 30, || {
        let mut ids = Vec::new();
        let mut dirs = vec![dir.path().join("files")];
        while let Some(d) = dirs.pop() {
            for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    dirs.push(path);
                } else if !entry.file_name().to_string_lossy().starts_with('.') {
                    let out = std::process::Command::new("zcat").arg(&path).output().unwrap();
                    for line in String::from_utf8(out.stdout).unwrap().lines() {
                        let v: serde_json::Value = serde_json::from_str(line).unwrap();
                        ids.push(v["messageId"].as_str().unwrap().to_owned());
                    }
                }
            }
        }
        ids.sort();
        (ids.len() == 4).then_some(ids)
    });
    assert_eq!(lines, ["all-off", "hook-off", "hook-only", "plain"]);
    terminate(server);
}
