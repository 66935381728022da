//! The warehouses against real databases: SQLite in a temporary file, and the PostgreSQL
//! named by `FERRY_TEST_POSTGRES_URL` (the PostgreSQL tests say loudly that they skipped
//! when it is unset; `.ci/run` sets it).
//!
//! Both backends load the same events and must hold the same rows: the stored events of
//! every real-client capture (`ferry-event/tests/expected`) end up as the rows in
//! `tests/golden/real-clients.txt` (`UPDATE_GOLDEN=1 cargo test` rewrites it).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ferry_destinations::warehouse::{PostgresConfig, PostgresWarehouse, SqliteConfig, SqliteWarehouse};
use ferry_destinations::{Destination, Event, Outcome};

// ---------------------------------------------------------------------------------------
// The two databases behind one small interface: load, and read back normalised.

#[allow(clippy::large_enum_variant)]
enum Db {
    Sqlite { warehouse: SqliteWarehouse, path: PathBuf, _dir: tempfile::TempDir },
    Postgres { warehouse: PostgresWarehouse, client: tokio_postgres::Client, schemas: Vec<String> },
}

/// A table as read back: its columns (name → type) and rows (column → value as text).
#[derive(Debug, Default)]
struct Table {
    columns: BTreeMap<String, String>,
    rows: Vec<BTreeMap<String, String>>,
}

fn postgres_url() -> Option<String> {
    let url = std::env::var("FERRY_TEST_POSTGRES_URL").ok().filter(|u| !u.is_empty());
    if url.is_none() {
        eprintln!("SKIPPED: FERRY_TEST_POSTGRES_URL is not set; the PostgreSQL warehouse was not tested");
    }
    url
}

impl Db {
    fn sqlite() -> Db {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("warehouse.db");
        let warehouse = SqliteWarehouse::open(&SqliteConfig { path: path.clone() }).unwrap();
        Db::Sqlite { warehouse, path, _dir: dir }
    }

    async fn postgres(url: &str) -> Db {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        let warehouse =
            PostgresWarehouse::new(PostgresConfig { url: url.to_owned(), connect_timeout: Duration::from_secs(10) });
        Db::Postgres { warehouse, client, schemas: Vec::new() }
    }

    fn destination(&self) -> &dyn Destination {
        match self {
            Db::Sqlite { warehouse, .. } => warehouse,
            Db::Postgres { warehouse, .. } => warehouse,
        }
    }

    async fn load(&self, events: &[Arc<Event>]) -> Vec<Outcome> {
        self.destination().send(events).await
    }

    async fn load_ok(&self, events: &[Arc<Event>]) {
        let outcomes = self.load(events).await;
        assert!(outcomes.iter().all(|o| *o == Outcome::Delivered), "{outcomes:?}");
    }

    /// Forget the schemas this test made (PostgreSQL), before and after.
    async fn own_schema(&mut self, namespace: &str) {
        if let Db::Postgres { client, schemas, .. } = self {
            client.batch_execute(&format!("drop schema if exists \"{namespace}\" cascade")).await.unwrap();
            schemas.push(namespace.to_owned());
        }
    }

    async fn cleanup(&self) {
        if let Db::Postgres { client, schemas, .. } = self {
            for schema in schemas {
                client.batch_execute(&format!("drop schema if exists \"{schema}\" cascade")).await.unwrap();
            }
        }
    }

    /// Every table of a namespace, read back.
    async fn tables(&self, namespace: &str) -> BTreeMap<String, Table> {
        match self {
            Db::Sqlite { path, .. } => sqlite_tables(path, namespace),
            Db::Postgres { client, .. } => postgres_tables(client, namespace).await,
        }
    }

    async fn table(&self, namespace: &str, table: &str) -> Table {
        self.tables(namespace).await.remove(table).unwrap_or_default()
    }
}

fn sqlite_tables(path: &Path, namespace: &str) -> BTreeMap<String, Table> {
    let conn = rusqlite::Connection::open(path).unwrap();
    let names: Vec<(String, String)> = conn
        .prepare("select table_name, name from _ferry_tables where namespace = ?1")
        .unwrap()
        .query_map([namespace], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mut out = BTreeMap::new();
    for (table, name) in names {
        let mut t = Table::default();
        let mut info = conn.prepare(&format!("pragma table_info(\"{name}\")")).unwrap();
        let columns: Vec<(String, String)> =
            info.query_map([], |r| Ok((r.get(1)?, r.get(2)?))).unwrap().map(Result::unwrap).collect();
        for (column, declared) in &columns {
            let widened: Option<String> = conn
                .query_row(
                    "select type from _ferry_columns where name = ?1 and column_name = ?2",
                    [&name, column],
                    |r| r.get(0),
                )
                .ok();
            let kind = widened.unwrap_or_else(|| {
                match declared.to_ascii_lowercase().as_str() {
                    "integer" => "integer",
                    "real" => "float",
                    "boolean" => "boolean",
                    "timestamp" => "timestamp",
                    _ => "text",
                }
                .to_owned()
            });
            t.columns.insert(column.clone(), kind);
        }
        let mut select = conn.prepare(&format!("select * from \"{name}\"")).unwrap();
        let mut rows = select.query([]).unwrap();
        while let Some(row) = rows.next().unwrap() {
            let mut values = BTreeMap::new();
            for (i, (column, _)) in columns.iter().enumerate() {
                use rusqlite::types::ValueRef;
                let text = match row.get_ref(i).unwrap() {
                    ValueRef::Null => continue,
                    ValueRef::Integer(v) if t.columns[column] == "boolean" => (v != 0).to_string(),
                    ValueRef::Integer(v) if t.columns[column] == "float" => format!("{:?}", v as f64),
                    ValueRef::Integer(v) => v.to_string(),
                    ValueRef::Real(v) => format!("{v:?}"),
                    ValueRef::Text(v) => String::from_utf8(v.to_vec()).unwrap(),
                    ValueRef::Blob(_) => panic!("blob in {name}.{column}"),
                };
                values.insert(column.clone(), text);
            }
            t.rows.push(values);
        }
        out.insert(table, t);
    }
    out
}

async fn postgres_tables(client: &tokio_postgres::Client, namespace: &str) -> BTreeMap<String, Table> {
    let columns = client
        .query(
            "select table_name::text, column_name::text, data_type::text from information_schema.columns
             where table_schema = $1 order by table_name, ordinal_position",
            &[&namespace],
        )
        .await
        .unwrap();
    let mut out: BTreeMap<String, Table> = BTreeMap::new();
    for row in columns {
        let (table, column, data_type): (String, String, String) = (row.get(0), row.get(1), row.get(2));
        let kind = match data_type.as_str() {
            "bigint" => "integer",
            "double precision" => "float",
            "boolean" => "boolean",
            "timestamp with time zone" => "timestamp",
            _ => "text",
        };
        out.entry(table).or_default().columns.insert(column, kind.to_owned());
    }
    for (name, table) in &mut out {
        let rows = client.query(&format!("select * from \"{namespace}\".\"{name}\""), &[]).await.unwrap();
        for row in rows {
            let mut values = BTreeMap::new();
            for (i, column) in row.columns().iter().enumerate() {
                let text = match table.columns[column.name()].as_str() {
                    "integer" => row.get::<_, Option<i64>>(i).map(|v| v.to_string()),
                    "float" => row.get::<_, Option<f64>>(i).map(|v| format!("{v:?}")),
                    "boolean" => row.get::<_, Option<bool>>(i).map(|v| v.to_string()),
                    "timestamp" => row.get::<_, Option<std::time::SystemTime>>(i).map(|v| {
                        let ts = jiff::Timestamp::try_from(v).unwrap();
                        ferry_event::format_time(ts)
                    }),
                    _ => row.get::<_, Option<String>>(i),
                };
                if let Some(text) = text {
                    values.insert(column.name().to_owned(), text);
                }
            }
            table.rows.push(values);
        }
    }
    out
}

/// The tables as text: columns with types, then rows sorted, without load times.
fn render(tables: &BTreeMap<String, Table>) -> String {
    let mut out = String::new();
    for (name, table) in tables {
        out.push_str(&format!("## {name}\n"));
        let columns: Vec<String> =
            table.columns.iter().filter(|(c, _)| *c != "uuid_ts").map(|(c, t)| format!("{c} {t}")).collect();
        out.push_str(&format!("columns: {}\n", columns.join(", ")));
        let mut rows: Vec<String> = table
            .rows
            .iter()
            .map(|row| {
                let values: Vec<String> =
                    row.iter().filter(|(c, _)| *c != "uuid_ts").map(|(c, v)| format!("{c}={v:?}")).collect();
                values.join(" | ")
            })
            .collect();
        rows.sort();
        for row in rows {
            out.push_str(&row);
            out.push('\n');
        }
        out.push('\n');
    }
    out
}

// ---------------------------------------------------------------------------------------
// Events

/// The stored events of every real-client capture, under the source `namespace`.
fn real_client_events(namespace: &str) -> Vec<Arc<Event>> {
    let events: Vec<Arc<Event>> = ferry_destinations::testing::real_client_events()
        .iter()
        .map(|event| {
            let mut json: serde_json::Value = serde_json::from_str(event.json()).unwrap();
            json["sourceId"] = serde_json::Value::String(namespace.to_owned());
            Arc::new(Event::decode(json.to_string().as_bytes()).unwrap())
        })
        .collect();
    assert_eq!(events.len(), 70, "the real-client captures hold 70 stored events");
    events
}

fn track(namespace: &str, id: &str, name: &str, properties: &str) -> Arc<Event> {
    let json = format!(
        r#"{{"type":"track","messageId":"{id}","userId":"u1","event":{},"properties":{properties},"context":{{"library":{{"name":"analytics-node"}}}},"integrations":{{}},"timestamp":"2026-11-28T10:37:14.869Z","receivedAt":"2026-11-28T10:37:14.899Z","sourceId":"{namespace}"}}"#,
        serde_json::to_string(name).unwrap()
    );
    Arc::new(Event::decode(json.as_bytes()).unwrap())
}

fn identify(namespace: &str, id: &str, received: &str, traits: &str) -> Arc<Event> {
    let json = format!(
        r#"{{"type":"identify","messageId":"{id}","userId":"u1","traits":{traits},"receivedAt":"{received}","sourceId":"{namespace}"}}"#
    );
    Arc::new(Event::decode(json.as_bytes()).unwrap())
}

/// A namespace no other test run uses.
fn unique(prefix: &str) -> String {
    let n = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("t_{prefix}_{}_{}", std::process::id(), n % 1_000_000_000)
}

// ---------------------------------------------------------------------------------------
// The checks, each run against both backends.

async fn real_clients_become_the_golden_rows(mut db: Db) {
    let ns = unique("golden");
    db.own_schema(&ns).await;
    let events = real_client_events(&ns);
    db.load_ok(&events).await;
    let text = render(&db.tables(&ns).await);
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/real-clients.txt");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(golden.parent().unwrap()).unwrap();
        std::fs::write(&golden, &text).unwrap();
    }
    let expected = std::fs::read_to_string(&golden).unwrap_or_default();
    db.cleanup().await;
    assert!(text == expected, "rows differ from {}; run with UPDATE_GOLDEN=1 to see\n{text}", golden.display());
}

async fn loading_twice_leaves_one_row_each(mut db: Db) {
    let ns = unique("twice");
    db.own_schema(&ns).await;
    let events = real_client_events(&ns);
    db.load_ok(&events).await;
    let first = render(&db.tables(&ns).await);
    db.load_ok(&events).await;
    // And in other batch shapes: halves, one by one.
    db.load_ok(&events[..35]).await;
    for event in &events[30..40] {
        db.load_ok(std::slice::from_ref(event)).await;
    }
    let again = render(&db.tables(&ns).await);
    db.cleanup().await;
    assert_eq!(first, again);
}

async fn schema_evolves_and_misfits_are_discarded(mut db: Db) {
    let ns = unique("evolve");
    db.own_schema(&ns).await;
    db.load_ok(&[track(&ns, "m1", "Signed Up", r#"{"plan": "pro", "seats": 3, "trial": true}"#)]).await;
    db.load_ok(&[track(
        &ns,
        "m2",
        "Signed Up",
        r#"{"plan": "team", "seats": 2.5, "trial": "soon", "referrer": {"code": "X1"}}"#,
    )])
    .await;
    let table = db.table(&ns, "signed_up").await;
    assert_eq!(table.columns["seats"], "float", "integer widened to float: {:?}", table.columns);
    assert_eq!(table.columns["trial"], "boolean");
    assert_eq!(table.columns["referrer_code"], "text");
    let m2 = table.rows.iter().find(|r| r["id"] == "m2").unwrap();
    assert_eq!(m2["seats"], "2.5");
    assert!(!m2.contains_key("trial"), "{m2:?}");
    let m1 = table.rows.iter().find(|r| r["id"] == "m1").unwrap();
    assert_eq!(m1["seats"], "3.0", "old integers read as floats after widening");
    let discards = db.table(&ns, "discards").await;
    assert_eq!(discards.rows.len(), 1, "{:?}", discards.rows);
    let d = &discards.rows[0];
    assert_eq!(
        (d["message_id"].as_str(), d["table_name"].as_str(), d["column_name"].as_str(), d["value"].as_str()),
        ("m2", "signed_up", "trial", "\"soon\"")
    );
    assert_eq!((d["expected_type"].as_str(), d["reason"].as_str()), ("boolean", "type_mismatch"));
    db.cleanup().await;
}

async fn injection_shaped_names_are_harmless(mut db: Db) {
    let ns = unique("inject");
    db.own_schema(&ns).await;
    db.load_ok(&[identify(&ns, "i1", "2026-11-28T10:00:00.000Z", r#"{"email": "a@example.com"}"#)]).await;
    db.load_ok(&[track(&ns, "m1", "\"; drop table users; --", r#"{"x'); drop table tracks; --": 1, "\"": 2}"#)]).await;
    let tables = db.tables(&ns).await;
    assert!(tables.contains_key("users") && tables["users"].rows.len() == 1, "users survived: {:?}", tables.keys());
    assert!(tables.contains_key("tracks"));
    let own = &tables["drop_table_users"];
    assert_eq!(own.rows[0]["x_drop_table_tracks"], "1");
    assert_eq!(own.rows[0]["event_text"], "\"; drop table users; --");
    db.cleanup().await;
}

async fn users_keep_the_newest_traits(mut db: Db) {
    let ns = unique("users");
    db.own_schema(&ns).await;
    db.load_ok(&[identify(&ns, "i2", "2026-11-28T10:00:00.000Z", r#"{"email": "new@example.com"}"#)]).await;
    // An older identify arriving later fills only what is missing.
    db.load_ok(&[identify(&ns, "i1", "2026-11-28T09:00:00.000Z", r#"{"email": "old@example.com", "age": 41}"#)]).await;
    let users = db.table(&ns, "users").await;
    assert_eq!(users.rows.len(), 1);
    let u = &users.rows[0];
    assert_eq!((u["id"].as_str(), u["email"].as_str(), u["age"].as_str()), ("u1", "new@example.com", "41"));
    assert_eq!(u["received_at"], "2026-11-28T10:00:00.000Z");
    assert_eq!(db.table(&ns, "identifies").await.rows.len(), 2);
    db.cleanup().await;
}

async fn sources_are_kept_apart(mut db: Db) {
    let (a, b) = (unique("src_a"), unique("src_b"));
    db.own_schema(&a).await;
    db.own_schema(&b).await;
    db.load_ok(&[track(&a, "m1", "E", r#"{"x": 1}"#), track(&b, "m2", "E", r#"{"y": "z"}"#)]).await;
    let (ta, tb) = (db.table(&a, "e").await, db.table(&b, "e").await);
    assert_eq!((ta.rows.len(), tb.rows.len()), (1, 1));
    assert!(ta.columns.contains_key("x") && !ta.columns.contains_key("y"));
    assert!(tb.columns.contains_key("y") && !tb.columns.contains_key("x"));
    db.cleanup().await;
}

// ---------------------------------------------------------------------------------------
// SQLite

#[tokio::test]
async fn sqlite_real_clients_become_the_golden_rows() {
    real_clients_become_the_golden_rows(Db::sqlite()).await;
}

#[tokio::test]
async fn sqlite_loading_twice_leaves_one_row_each() {
    loading_twice_leaves_one_row_each(Db::sqlite()).await;
}

#[tokio::test]
async fn sqlite_schema_evolves_and_misfits_are_discarded() {
    schema_evolves_and_misfits_are_discarded(Db::sqlite()).await;
}

#[tokio::test]
async fn sqlite_injection_shaped_names_are_harmless() {
    injection_shaped_names_are_harmless(Db::sqlite()).await;
}

#[tokio::test]
async fn sqlite_users_keep_the_newest_traits() {
    users_keep_the_newest_traits(Db::sqlite()).await;
}

#[tokio::test]
async fn sqlite_sources_are_kept_apart() {
    sources_are_kept_apart(Db::sqlite()).await;
}

#[tokio::test]
async fn sqlite_views_answer_across_sources() {
    let db = Db::sqlite();
    db.load_ok(&[
        track("web", "m1", "Signed Up", "{}"),
        track("ios", "m2", "Signed Up", "{}"),
        track("ios", "m3", "Order Completed", "{}"),
    ])
    .await;
    let Db::Sqlite { path, .. } = &db else { unreachable!() };
    let conn = rusqlite::Connection::open(path).unwrap();
    let counts: Vec<(String, i64)> = conn
        .prepare("select event, count(*) from tracks group by 1 order by 1")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(counts, [("order_completed".to_owned(), 1), ("signed_up".to_owned(), 2)]);
    let sources: i64 = conn.query_row("select count(distinct source) from tracks", [], |r| r.get(0)).unwrap();
    assert_eq!(sources, 2);
    let web: i64 = conn.query_row("select count(*) from web_signed_up", [], |r| r.get(0)).unwrap();
    assert_eq!(web, 1);
    // Every table has its view, with every column of every source; new columns show up.
    db.load_ok(&[track("ios", "m4", "Signed Up", r#"{"plan": "pro"}"#)]).await;
    let plans: Vec<(String, Option<String>)> = conn
        .prepare("select source, plan from signed_up order by id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(plans, [("web".to_owned(), None), ("ios".to_owned(), None), ("ios".to_owned(), Some("pro".to_owned()))]);
    let email: Option<String> = {
        db.load_ok(&[identify("web", "i1", "2026-11-28T10:00:00.000Z", r#"{"email": "a@example.com"}"#)]).await;
        conn.query_row("select email from users", [], |r| r.get(0)).unwrap()
    };
    assert_eq!(email.as_deref(), Some("a@example.com"));
}

#[tokio::test]
async fn sqlite_a_second_loader_process_changing_the_schema_is_noticed() {
    // Two warehouse handles on one file stand in for `ferry serve` and `ferry replay`.
    let db = Db::sqlite();
    let Db::Sqlite { path, .. } = &db else { unreachable!() };
    let other = SqliteWarehouse::open(&SqliteConfig { path: path.clone() }).unwrap();
    db.load_ok(&[track("web", "m1", "E", r#"{"a": 1}"#)]).await;
    let outcomes = other.send(&[track("web", "m2", "E", r#"{"a": 1, "b": "x"}"#)]).await;
    assert_eq!(outcomes, [Outcome::Delivered]);
    // The first handle still thinks `b` is missing; it must not fail adding it again.
    db.load_ok(&[track("web", "m3", "E", r#"{"b": 7, "c": true}"#)]).await;
    let table = db.table("web", "e").await;
    assert_eq!(table.rows.len(), 3);
    assert_eq!(table.columns["b"], "text");
    assert_eq!(table.rows.iter().find(|r| r["id"] == "m3").unwrap()["b"], "7");
}

// ---------------------------------------------------------------------------------------
// PostgreSQL

macro_rules! postgres_test {
    ($name:ident, $check:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let Some(url) = postgres_url() else { return };
            $check(Db::postgres(&url).await).await;
        }
    };
}

postgres_test!(postgres_real_clients_become_the_golden_rows, real_clients_become_the_golden_rows);
postgres_test!(postgres_loading_twice_leaves_one_row_each, loading_twice_leaves_one_row_each);
postgres_test!(postgres_schema_evolves_and_misfits_are_discarded, schema_evolves_and_misfits_are_discarded);
postgres_test!(postgres_injection_shaped_names_are_harmless, injection_shaped_names_are_harmless);
postgres_test!(postgres_users_keep_the_newest_traits, users_keep_the_newest_traits);
postgres_test!(postgres_sources_are_kept_apart, sources_are_kept_apart);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_racing_loaders_add_each_column_once() {
    let Some(url) = postgres_url() else { return };
    let mut db = Db::postgres(&url).await;
    let ns = unique("race");
    db.own_schema(&ns).await;
    let config = PostgresConfig { url: url.clone(), connect_timeout: Duration::from_secs(10) };
    let loaders: Vec<Arc<PostgresWarehouse>> =
        (0..4).map(|_| Arc::new(PostgresWarehouse::new(config.clone()))).collect();
    let mut tasks = Vec::new();
    for (i, loader) in loaders.iter().enumerate() {
        let loader = loader.clone();
        let ns = ns.clone();
        tasks.push(tokio::spawn(async move {
            // Every loader adds the same new columns, in batches of its own.
            let mut outcomes = Vec::new();
            for round in 0..5 {
                let events: Vec<_> = (0..20)
                    .map(|k| {
                        track(
                            &ns,
                            &format!("l{i}-r{round}-{k}"),
                            "Race",
                            &format!(r#"{{"c{round}": {k}, "shared": "s"}}"#),
                        )
                    })
                    .collect();
                outcomes.extend(loader.send(&events).await);
            }
            outcomes
        }));
    }
    for task in tasks {
        let outcomes = task.await.unwrap();
        assert!(outcomes.iter().all(|o| *o == Outcome::Delivered), "{outcomes:?}");
    }
    let table = db.table(&ns, "race").await;
    assert_eq!(table.rows.len(), 4 * 5 * 20);
    for round in 0..5 {
        assert_eq!(table.columns[&format!("c{round}")], "integer");
    }
    db.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_unreachable_is_a_retry() {
    let warehouse = PostgresWarehouse::new(PostgresConfig {
        url: "postgres://postgres@127.0.0.1:1/test".to_owned(),
        connect_timeout: Duration::from_secs(5),
    });
    let outcomes = warehouse.send(&[track("web", "m1", "E", "{}")]).await;
    assert!(matches!(&outcomes[..], [Outcome::Retry { error, .. }] if error.contains("connect")), "{outcomes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_columns_retyped_by_hand_are_loaded_through_casts() {
    // Binary COPY data is not self-describing: a column someone changed to another type
    // must never receive bytes encoded for the old one.
    let Some(url) = postgres_url() else { return };
    let mut db = Db::postgres(&url).await;
    let ns = unique("retype");
    db.own_schema(&ns).await;
    db.load_ok(&[track(&ns, "m1", "E", r#"{"count": 1, "ratio": 2, "label": "a"}"#)]).await;
    let Db::Postgres { client, .. } = &db else { unreachable!() };
    client
        .batch_execute(&format!(
            "alter table \"{ns}\".e alter column count type integer, alter column ratio type double precision, alter column label type varchar(20)"
        ))
        .await
        .unwrap();
    // A second loader whose cache still says bigint for `ratio` and text for `label`.
    let fresh = PostgresWarehouse::new(PostgresConfig { url: url.clone(), connect_timeout: Duration::from_secs(10) });
    let outcomes = db.load(&[track(&ns, "m2", "E", r#"{"count": 7, "ratio": 3, "label": "b"}"#)]).await;
    assert_eq!(outcomes, [Outcome::Delivered]);
    let outcomes = fresh.send(&[track(&ns, "m3", "E", r#"{"count": 8, "ratio": 4.5, "label": "c"}"#)]).await;
    assert_eq!(outcomes, [Outcome::Delivered]);
    let rows =
        client.query(&format!("select id, count, ratio, label::text from \"{ns}\".e order by id"), &[]).await.unwrap();
    let values: Vec<(String, i32, f64, String)> =
        rows.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3))).collect();
    assert_eq!(
        values,
        [("m1".into(), 1, 2.0, "a".into()), ("m2".into(), 7, 3.0, "b".into()), ("m3".into(), 8, 4.5, "c".into())]
    );
    db.cleanup().await;
}
