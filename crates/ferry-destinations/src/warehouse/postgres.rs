//! The PostgreSQL warehouse: one schema per source, tables as in Segment's warehouses.
//!
//! A batch loads in one transaction: each table's rows are written with binary `COPY`,
//! straight into the table when none of them is there yet, else into a temporary staging
//! table (dropped at commit) and moved with `insert ... on conflict do nothing` (`users`:
//! `do update`, newest identify first), so a batch loaded twice leaves one row per
//! message id.
//!
//! Schema changes (create schema, create table, add column, widen a column) take a
//! transaction-scoped advisory lock per table first and read the table's columns again
//! under it: two loaders (two ferry nodes, or `ferry replay` beside `ferry serve`) never
//! race to add one column, and a loader whose idea of a table is out of date plans again
//! instead of failing.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use futures_util::SinkExt;
use tokio::sync::Mutex;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls, Transaction};

use super::naming::quote;
use super::plan::{self, ColumnType, Plan, Schema, TableKind, TableLoad, Value};
use super::{LoadError, by_namespace, load_bisecting};
use crate::{BoxFuture, Destination, Event, Outcome};

/// How to reach the database.
#[derive(Debug, Clone)]
pub struct PostgresConfig {
    /// A libpq-style URL or key=value string (`postgres://user@host:5432/db`). TLS is not
    /// supported yet: use it on a trusted network or through a local proxy.
    pub url: String,
    /// Give up connecting after this long.
    pub connect_timeout: Duration,
}

/// The PostgreSQL warehouse destination.
pub struct PostgresWarehouse {
    config: PostgresConfig,
    conn: Mutex<Option<Conn>>,
}

struct Conn {
    client: Client,
    /// What each namespace is known to hold; read on first use, updated after every load
    /// that changed it.
    schemas: HashMap<String, Schema>,
}

/// Microseconds between the Unix epoch and PostgreSQL's (2000-01-01).
const PG_EPOCH_US: i64 = 946_684_800_000_000;

impl PostgresWarehouse {
    /// A destination that connects on first use (and again after a failure).
    pub fn new(config: PostgresConfig) -> PostgresWarehouse {
        PostgresWarehouse { config, conn: Mutex::new(None) }
    }

    /// Connect now, to report a bad URL or an unreachable server at start-up.
    pub async fn check(&self) -> Result<(), String> {
        let mut conn = self.conn.lock().await;
        self.connected(&mut conn).await.map(|_| ()).map_err(|e| match e {
            LoadError::Transient(e) | LoadError::Data(e) => e,
        })
    }

    async fn connected<'c>(&self, slot: &'c mut Option<Conn>) -> Result<&'c mut Conn, LoadError> {
        if slot.as_ref().is_some_and(|c| c.client.is_closed()) {
            *slot = None;
        }
        if slot.is_none() {
            let connect = tokio_postgres::connect(&self.config.url, NoTls);
            let (client, connection) = tokio::time::timeout(self.config.connect_timeout, connect)
                .await
                .map_err(|_| LoadError::Transient("timed out connecting to postgresql".into()))?
                .map_err(|e| LoadError::Transient(format!("cannot connect to postgresql: {e}")))?;
            tokio::spawn(async move {
                if let Err(error) = connection.await {
                    tracing::warn!(%error, "postgresql connection ended");
                }
            });
            *slot = Some(Conn { client, schemas: HashMap::new() });
        }
        slot.as_mut().ok_or_else(|| LoadError::Transient("no postgresql connection".into()))
    }

    /// Load one batch in one transaction, planning again when the schema moved.
    async fn load(&self, events: Vec<Arc<Event>>) -> Result<(), LoadError> {
        let mut slot = self.conn.lock().await;
        let result = self.load_on(&mut slot, &events).await;
        if let Err(LoadError::Transient(_)) = &result {
            // Start afresh next time: the connection or our schema cache may be stale.
            *slot = None;
        }
        result
    }

    async fn load_on(&self, slot: &mut Option<Conn>, events: &[Arc<Event>]) -> Result<(), LoadError> {
        let conn = self.connected(slot).await?;
        let groups = by_namespace(events);
        let uuid_ts = jiff::Timestamp::now();
        for namespace in groups.keys() {
            if !conn.schemas.contains_key(namespace) {
                let schema = read_schema(&conn.client, namespace, None).await.map_err(classify)?;
                conn.schemas.insert(namespace.clone(), schema);
            }
        }
        for _ in 0..3 {
            let plans: Vec<Plan<'_>> =
                groups.iter().map(|(ns, events)| plan::plan(ns, events, &conn.schemas[ns], uuid_ts)).collect();
            let tx = conn.client.transaction().await.map_err(classify)?;
            match apply(&tx, &plans, &mut conn.schemas).await {
                Ok(true) => {
                    tx.commit().await.map_err(classify)?;
                    for plan in &plans {
                        conn.schemas.entry(plan.namespace.clone()).or_default().absorb(plan);
                    }
                    return Ok(());
                }
                Ok(false) => {
                    // The cache was refreshed for the tables that moved; plan again.
                    drop(tx);
                }
                Err(e)
                    if e.code() == Some(&SqlState::UNDEFINED_TABLE)
                        || e.code() == Some(&SqlState::UNDEFINED_COLUMN) =>
                {
                    drop(tx);
                    for namespace in groups.keys() {
                        let schema = read_schema(&conn.client, namespace, None).await.map_err(classify)?;
                        conn.schemas.insert(namespace.clone(), schema);
                    }
                }
                Err(e) => return Err(classify(e)),
            }
        }
        Err(LoadError::Transient("the postgresql schema keeps changing under the loader".into()))
    }
}

impl Destination for PostgresWarehouse {
    fn follows_integrations(&self) -> bool {
        false
    }

    fn send<'a>(&'a self, events: &'a [Arc<Event>]) -> BoxFuture<'a, Vec<Outcome>> {
        Box::pin(async move {
            let load = |batch: Vec<Arc<Event>>| self.load(batch);
            load_bisecting(events, &load).await
        })
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            *self.conn.lock().await = None;
        })
    }
}

fn classify(e: tokio_postgres::Error) -> LoadError {
    let transient = e.is_closed()
        || e.code().is_none_or(|code| {
            let class = &code.code()[..2];
            // Connection, transaction rollback (serialization, deadlock), resources,
            // operator intervention, system errors.
            matches!(class, "08" | "40" | "53" | "57" | "58" | "XX") || *code == SqlState::LOCK_NOT_AVAILABLE
        });
    let text = match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => e.to_string(),
    };
    if transient { LoadError::Transient(text) } else { LoadError::Data(text) }
}

fn sql_type(t: ColumnType) -> &'static str {
    match t {
        ColumnType::Integer => "bigint",
        ColumnType::Float => "double precision",
        ColumnType::Boolean => "boolean",
        ColumnType::Timestamp => "timestamptz",
        ColumnType::Text => "text",
    }
}

fn column_type(data_type: &str) -> ColumnType {
    match data_type {
        "bigint" | "integer" | "smallint" => ColumnType::Integer,
        "double precision" | "real" | "numeric" => ColumnType::Float,
        "boolean" => ColumnType::Boolean,
        "timestamp with time zone" | "timestamp without time zone" => ColumnType::Timestamp,
        _ => ColumnType::Text,
    }
}

/// The columns of the namespace's tables (all, or only `tables`).
async fn read_schema(
    client: &impl tokio_postgres::GenericClient,
    namespace: &str,
    tables: Option<&[String]>,
) -> Result<Schema, tokio_postgres::Error> {
    let rows = match tables {
        None => {
            client
                .query(
                    "select table_name::text, column_name::text, data_type::text from information_schema.columns
                     where table_schema = $1",
                    &[&namespace],
                )
                .await?
        }
        Some(tables) => {
            client
                .query(
                    "select table_name::text, column_name::text, data_type::text from information_schema.columns
                     where table_schema = $1 and table_name = any($2)",
                    &[&namespace, &tables],
                )
                .await?
        }
    };
    let mut schema = Schema::default();
    for row in rows {
        let (table, column, data_type): (String, String, String) = (row.get(0), row.get(1), row.get(2));
        schema.tables.entry(table).or_default().columns.insert(column, column_type(&data_type));
    }
    Ok(schema)
}

/// Lock key of a table's (or, with `""`, a schema's) definition.
fn lock_key(namespace: &str, table: &str) -> String {
    format!("ferry:{namespace}.{table}")
}

/// Apply the plans inside `tx`. `Ok(false)`: a table that needs changes is not what the
/// cache said; the cache now holds the truth for it and nothing should be committed.
async fn apply(
    tx: &Transaction<'_>,
    plans: &[Plan<'_>],
    schemas: &mut HashMap<String, Schema>,
) -> Result<bool, tokio_postgres::Error> {
    for plan in plans {
        if plan.changes_schema() {
            let ns = &plan.namespace;
            let changed: Vec<String> = plan
                .tables
                .iter()
                .filter(|t| t.create || !t.add.is_empty() || !t.widen.is_empty())
                .map(|t| t.name.clone())
                .collect();
            tx.execute("select pg_advisory_xact_lock(hashtextextended($1, 0))", &[&lock_key(ns, "")]).await?;
            tx.batch_execute(&format!("create schema if not exists {}", quote(ns))).await?;
            // Sorted names: every loader takes the locks in the same order.
            for table in &changed {
                tx.execute("select pg_advisory_xact_lock(hashtextextended($1, 0))", &[&lock_key(ns, table)]).await?;
            }
            let actual = read_schema(tx, ns, Some(&changed)).await?;
            let cached = schemas.entry(ns.clone()).or_default();
            let mut stale = false;
            for table in &changed {
                let now = actual.tables.get(table);
                let before = cached.tables.get(table);
                if now.map(|t| &t.columns) != before.map(|t| &t.columns) {
                    stale = true;
                    match now {
                        Some(t) => cached.tables.insert(table.clone(), t.clone()),
                        None => cached.tables.remove(table),
                    };
                }
            }
            if stale {
                return Ok(false);
            }
            for table in plan.tables.iter().filter(|t| changed.contains(&t.name)) {
                change_schema(tx, ns, table).await?;
            }
        }
        for (i, table) in plan.tables.iter().enumerate() {
            copy_rows(tx, &plan.namespace, table, i).await?;
        }
    }
    Ok(true)
}

async fn change_schema(tx: &Transaction<'_>, ns: &str, table: &TableLoad<'_>) -> Result<(), tokio_postgres::Error> {
    let target = format!("{}.{}", quote(ns), quote(&table.name));
    if table.create {
        let columns: Vec<String> =
            table.columns.iter().map(|(c, t)| format!("{} {}", quote(c), sql_type(*t))).collect();
        let key: Vec<String> = table.kind.key().iter().map(|c| quote(c)).collect();
        tx.batch_execute(&format!(
            "create table if not exists {target} ({}, primary key ({}))",
            columns.join(", "),
            key.join(", ")
        ))
        .await?;
    }
    for (column, t) in &table.add {
        tx.batch_execute(&format!("alter table {target} add column if not exists {} {}", quote(column), sql_type(*t)))
            .await?;
    }
    for column in &table.widen {
        tx.batch_execute(&format!("alter table {target} alter column {} type double precision", quote(column))).await?;
    }
    Ok(())
}

/// Move the rows into the table. Events and discards first try a binary `COPY` straight
/// into the table (inside a savepoint): the common case, where none of the rows is there
/// yet, costs PostgreSQL one write. When a row is there already (a redelivery, a replay),
/// the COPY fails on the key, the savepoint is rolled back, and the rows go through a
/// staging table and `insert ... on conflict do nothing`. `users` always goes the second
/// way (it upserts).
async fn copy_rows(
    tx: &Transaction<'_>,
    ns: &str,
    table: &TableLoad<'_>,
    i: usize,
) -> Result<(), tokio_postgres::Error> {
    if table.rows.is_empty() {
        return Ok(());
    }
    let target = format!("{}.{}", quote(ns), quote(&table.name));
    let names: Vec<String> = table.columns.iter().map(|(c, _)| quote(c)).collect();
    let columns = names.join(", ");
    if table.kind != TableKind::Users {
        tx.batch_execute("savepoint ferry_direct").await?;
        match copy_binary(tx, &target, &columns, table).await {
            Ok(()) => return tx.batch_execute("release savepoint ferry_direct").await,
            Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                tx.batch_execute("rollback to savepoint ferry_direct").await?;
            }
            Err(e) => return Err(e),
        }
    }
    let stage = quote(&format!("ferry_stage_{i}"));
    let defs: Vec<String> = table.columns.iter().map(|(c, t)| format!("{} {}", quote(c), sql_type(*t))).collect();
    tx.batch_execute(&format!(
        "drop table if exists {stage}; create temp table {stage} ({}) on commit drop",
        defs.join(", ")
    ))
    .await?;
    copy_binary(tx, &stage, &columns, table).await?;
    let sql = match table.kind {
        TableKind::Events | TableKind::Discards => {
            let key: Vec<String> = table.kind.key().iter().map(|c| quote(c)).collect();
            format!(
                "insert into {target} ({columns}) select {columns} from {stage} on conflict ({}) do nothing",
                key.join(", ")
            )
        }
        TableKind::Users => {
            // The newer identify's traits win column by column; an older one only fills
            // columns the row does not have yet.
            let newer = "excluded.received_at >= t.received_at";
            let sets: Vec<String> = table
                .columns
                .iter()
                .filter(|(c, _)| c != "id")
                .map(|(c, _)| {
                    let c = quote(c);
                    if c == "\"received_at\"" {
                        format!("{c} = greatest(excluded.{c}, t.{c})")
                    } else {
                        format!("{c} = case when {newer} then coalesce(excluded.{c}, t.{c}) else coalesce(t.{c}, excluded.{c}) end")
                    }
                })
                .collect();
            format!(
                "insert into {target} as t ({columns}) select {columns} from {stage} on conflict (\"id\") do update set {}",
                sets.join(", ")
            )
        }
    };
    tx.batch_execute(&sql).await?;
    Ok(())
}

/// The rows of `table` into `target` (its `columns`), in binary COPY format.
async fn copy_binary(
    tx: &Transaction<'_>,
    target: &str,
    columns: &str,
    table: &TableLoad<'_>,
) -> Result<(), tokio_postgres::Error> {
    let sink = tx.copy_in(&format!("copy {target} ({columns}) from stdin (format binary)")).await?;
    futures_util::pin_mut!(sink);
    let mut buf = BytesMut::with_capacity(1 << 20);
    buf.put_slice(b"PGCOPY\n\xff\r\n\0");
    buf.put_i32(0);
    buf.put_i32(0);
    let width = table.columns.len();
    let mut dense = Vec::with_capacity(width);
    for row in &table.rows {
        row.dense_into(width, &mut dense);
        encode_row(&mut buf, &dense, &table.columns);
        if buf.len() > (1 << 20) - 64 * 1024 {
            sink.send(buf.split().freeze()).await?;
        }
    }
    buf.put_i16(-1);
    sink.send(buf.freeze()).await?;
    sink.finish().await?;
    Ok(())
}

/// One row in PostgreSQL's binary COPY format.
fn encode_row(buf: &mut BytesMut, values: &[Option<&Value<'_>>], columns: &[(String, ColumnType)]) {
    buf.put_i16(values.len() as i16);
    for (value, (_, t)) in values.iter().zip(columns) {
        match value {
            None => buf.put_i32(-1),
            Some(Value::Int(i)) if *t == ColumnType::Float => {
                buf.put_i32(8);
                buf.put_f64(*i as f64);
            }
            Some(Value::Int(i)) => {
                buf.put_i32(8);
                buf.put_i64(*i);
            }
            Some(Value::Float(f)) => {
                buf.put_i32(8);
                buf.put_f64(*f);
            }
            Some(Value::Bool(b)) => {
                buf.put_i32(1);
                buf.put_u8(u8::from(*b));
            }
            Some(Value::Time(ts)) => {
                buf.put_i32(8);
                buf.put_i64(ts.as_microsecond() - PG_EPOCH_US);
            }
            Some(Value::Text(s)) => {
                buf.put_i32(s.len() as i32);
                buf.put_slice(s.as_bytes());
            }
        }
    }
}
