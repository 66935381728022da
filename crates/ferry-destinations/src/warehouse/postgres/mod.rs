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

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::SinkExt;
use tokio::sync::Mutex;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls, Transaction};

use super::naming::quote;
use super::plan::{self, ColumnType, Plan, Schema, TableKind, TableLoad, Value};
use super::{LoadError, by_namespace, load_bisecting, users_upsert};
use crate::{BoxFuture, Destination, Event, Outcome};

mod config;

pub use config::PostgresConfig;

/// The PostgreSQL warehouse destination.
pub struct PostgresWarehouse {
    config: PostgresConfig,
    /// One connection per concurrent load (see [`PARALLEL_LOADS`]).
    conns: Vec<Mutex<Option<Conn>>>,
}

/// A large batch is split across this many connections, loaded at once in separate
/// transactions (each part all or nothing, with its own outcomes): PostgreSQL works one
/// connection on one core, and a warehouse load is mostly its work.
const PARALLEL_LOADS: usize = 2;

/// Batches smaller than this are loaded on one connection.
const PARALLEL_THRESHOLD: usize = 2 * PLAN_CHUNK;

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
        PostgresWarehouse { config, conns: (0..PARALLEL_LOADS).map(|_| Mutex::new(None)).collect() }
    }

    /// Connect now, to report a bad URL or an unreachable server at start-up.
    pub async fn check(&self) -> Result<(), LoadError> {
        let mut conn = self.conns[0].lock().await;
        self.connected(&mut conn).await.map(|_| ())
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
    async fn load(&self, connection: usize, events: Vec<Arc<Event>>) -> Result<(), LoadError> {
        let mut slot = self.conns[connection % self.conns.len()].lock().await;
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
        // COPY straight into the tables first; a key that is there already (a redelivery,
        // a replay) fails it, and the batch is loaded again through staging tables.
        let mut direct = true;
        for _ in 0..4 {
            // Planning and COPY encoding (CPU, on a blocking thread) of the next chunk
            // overlap PostgreSQL loading the last one, in one transaction.
            let snapshot: Vec<(String, Vec<Arc<Event>>, Schema)> =
                groups.iter().map(|(ns, events)| (ns.clone(), events.clone(), conn.schemas[ns].clone())).collect();
            let (send, mut chunks) = tokio::sync::mpsc::channel::<Chunk>(2);
            let planner = tokio::task::spawn_blocking(move || {
                for (ns, events, mut schema) in snapshot {
                    for events in events.chunks(PLAN_CHUNK) {
                        let plan = plan::plan(&ns, events, &schema, uuid_ts);
                        schema.absorb(&plan);
                        if send.blocking_send(Chunk::encode(&plan)).is_err() {
                            return;
                        }
                    }
                }
            });
            let tx = conn.client.transaction().await.map_err(classify)?;
            let mut loaded = Vec::new();
            let mut outcome = Ok(true);
            let mut checked = Checked::default();
            while let Some(chunk) = chunks.recv().await {
                match apply(&tx, &chunk, &mut conn.schemas, &mut checked, direct).await {
                    Ok(true) => loaded.push(chunk),
                    other => {
                        outcome = other;
                        break;
                    }
                }
            }
            drop(chunks);
            let _ = planner.await;
            match outcome {
                Ok(true) => {
                    tx.commit().await.map_err(classify)?;
                    for chunk in &loaded {
                        chunk.absorb_into(conn.schemas.entry(chunk.namespace.clone()).or_default());
                    }
                    return Ok(());
                }
                Ok(false) => {
                    // The cache was refreshed for the tables that moved; plan again.
                    drop(tx);
                }
                Err(e) if direct && e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                    drop(tx);
                    direct = false;
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

/// Events planned and encoded at a time.
const PLAN_CHUNK: usize = 2500;

/// One planned chunk, owned (no borrow of the events), with each table's rows already in
/// binary COPY format.
struct Chunk {
    namespace: String,
    tables: Vec<ChunkTable>,
}

struct ChunkTable {
    name: String,
    kind: TableKind,
    create: bool,
    add: Vec<(String, ColumnType)>,
    widen: Vec<String>,
    columns: Vec<(String, ColumnType)>,
    rows: usize,
    data: Bytes,
}

impl Chunk {
    fn encode(plan: &Plan<'_>) -> Chunk {
        let tables = plan
            .tables
            .iter()
            .map(|t| ChunkTable {
                name: t.name.clone(),
                kind: t.kind,
                create: t.create,
                add: t.add.clone(),
                widen: t.widen.clone(),
                columns: t.columns.clone(),
                rows: t.rows.len(),
                data: encode_table(t),
            })
            .collect();
        Chunk { namespace: plan.namespace.clone(), tables }
    }

    fn changes_schema(&self) -> bool {
        self.tables.iter().any(ChunkTable::changes_schema)
    }

    /// After the commit: the cache holds what the chunk created.
    fn absorb_into(&self, schema: &mut Schema) {
        for table in &self.tables {
            let entry = schema.tables.entry(table.name.clone()).or_default();
            for (column, t) in &table.columns {
                entry.columns.insert(column.clone(), *t);
            }
        }
    }
}

impl ChunkTable {
    fn changes_schema(&self) -> bool {
        self.create || !self.add.is_empty() || !self.widen.is_empty()
    }
}

impl Destination for PostgresWarehouse {
    fn follows_integrations(&self) -> bool {
        false
    }

    fn send<'a>(&'a self, events: &'a [Arc<Event>]) -> BoxFuture<'a, Vec<Outcome>> {
        Box::pin(async move {
            let parts = if events.len() >= PARALLEL_THRESHOLD { self.conns.len() } else { 1 };
            let size = events.len().div_ceil(parts.max(1)).max(1);
            let loads = events.chunks(size).enumerate().map(|(connection, part)| async move {
                let load = |batch: Vec<Arc<Event>>| self.load(connection, batch);
                load_bisecting(part, &load).await
            });
            futures_util::future::join_all(loads).await.into_iter().flatten().collect()
        })
    }

    fn close(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            for conn in &self.conns {
                *conn.lock().await = None;
            }
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

/// The type ferry reads a column as, from its `format_type` spelling.
fn column_type(data_type: &str) -> ColumnType {
    match data_type {
        "bigint" | "integer" | "smallint" => ColumnType::Integer,
        t if t == "double precision" || t == "real" || t.starts_with("numeric") => ColumnType::Float,
        "boolean" => ColumnType::Boolean,
        t if t.starts_with("timestamp") => ColumnType::Timestamp,
        _ => ColumnType::Text,
    }
}

/// How the catalog (`format_type`) spells the type ferry creates for `t`: binary COPY
/// data encoded for `t` may go only into a column of exactly this type.
fn catalog_type(t: ColumnType) -> &'static str {
    match t {
        ColumnType::Integer => "bigint",
        ColumnType::Float => "double precision",
        ColumnType::Boolean => "boolean",
        ColumnType::Timestamp => "timestamp with time zone",
        ColumnType::Text => "text",
    }
}

/// The columns of a namespace's tables (all, or only `tables`) with their exact types as
/// `format_type` spells them (`bigint`, `timestamp with time zone`, `character
/// varying(20)`), read from the catalog (`information_schema` is many times slower).
async fn column_types(
    client: &impl tokio_postgres::GenericClient,
    namespace: &str,
    tables: Option<&[String]>,
) -> Result<Vec<(String, String, String)>, tokio_postgres::Error> {
    let sql = "select c.relname::text, a.attname::text, format_type(a.atttypid, a.atttypmod)
         from pg_attribute a
         join pg_class c on c.oid = a.attrelid
         join pg_namespace n on n.oid = c.relnamespace
         where n.nspname = $1 and c.relkind in ('r', 'p') and a.attnum > 0 and not a.attisdropped
           and ($2::text[] is null or c.relname = any($2))";
    let rows = client.query(sql, &[&namespace, &tables]).await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect())
}

/// The columns of the namespace's tables (all, or only `tables`).
async fn read_schema(
    client: &impl tokio_postgres::GenericClient,
    namespace: &str,
    tables: Option<&[String]>,
) -> Result<Schema, tokio_postgres::Error> {
    let mut schema = Schema::default();
    for (table, column, data_type) in column_types(client, namespace, tables).await? {
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
/// Column types this transaction has read from the catalog (under `row exclusive`, so
/// they hold until it ends), by table.
#[derive(Default)]
struct Checked {
    types: HashMap<String, HashMap<String, String>>,
}

async fn apply(
    tx: &Transaction<'_>,
    chunk: &Chunk,
    schemas: &mut HashMap<String, Schema>,
    checked: &mut Checked,
    direct: bool,
) -> Result<bool, tokio_postgres::Error> {
    let ns = &chunk.namespace;
    if chunk.changes_schema() {
        let changed: Vec<String> = chunk.tables.iter().filter(|t| t.changes_schema()).map(|t| t.name.clone()).collect();
        tx.execute("select pg_advisory_xact_lock(hashtextextended($1, 0))", &[&lock_key(ns, "")]).await?;
        tx.batch_execute(&format!("create schema if not exists {}", quote(ns))).await?;
        // Sorted names: every loader takes the locks in the same order.
        for table in &changed {
            tx.execute("select pg_advisory_xact_lock(hashtextextended($1, 0))", &[&lock_key(ns, table)]).await?;
        }
        // What the plan expects each changed table to look like before its changes: the
        // cache plus what earlier chunks of this transaction did.
        let actual = read_schema(tx, ns, Some(&changed)).await?;
        let cached = schemas.entry(ns.clone()).or_default();
        let mut stale = false;
        for table in chunk.tables.iter().filter(|t| t.changes_schema()) {
            let now = actual.tables.get(&table.name).map(|t| &t.columns);
            let expected: Option<HashMap<String, ColumnType>> = (!table.create).then(|| {
                let added: Vec<&String> = table.add.iter().map(|(c, _)| c).collect();
                table
                    .columns
                    .iter()
                    .filter(|(c, _)| !added.contains(&c))
                    .map(|(c, t)| (c.clone(), if table.widen.contains(c) { ColumnType::Integer } else { *t }))
                    .collect()
            });
            let fits = match (now, &expected) {
                (None, None) => true,
                // Every column the plan relies on is there with the type it assumed.
                (Some(now), Some(expected)) => {
                    expected.iter().all(|(c, t)| now.get(c) == Some(t))
                        && table.add.iter().all(|(c, _)| !now.contains_key(c))
                }
                _ => false,
            };
            if !fits {
                stale = true;
                match actual.tables.get(&table.name) {
                    Some(t) => cached.tables.insert(table.name.clone(), t.clone()),
                    None => cached.tables.remove(&table.name),
                };
            }
        }
        if stale {
            return Ok(false);
        }
        for table in chunk.tables.iter().filter(|t| t.changes_schema()) {
            change_schema(tx, ns, table).await?;
            // Read it again below, with the new columns.
            checked.types.remove(&table.name);
        }
    }
    // Binary COPY data carries no types: it may go straight into a table only while each
    // of its columns has exactly the type it was encoded for. `row exclusive` (which
    // loaders share) keeps every `alter table` out until this transaction ends, so what
    // the catalog says then holds until the commit; each table is read once per
    // transaction.
    let loaded: Vec<&ChunkTable> = chunk.tables.iter().filter(|t| t.rows > 0).collect();
    let unread: Vec<String> =
        loaded.iter().filter(|t| !checked.types.contains_key(&t.name)).map(|t| t.name.clone()).collect();
    if !unread.is_empty() {
        let locks: Vec<String> =
            unread.iter().map(|t| format!("lock table {}.{} in row exclusive mode;", quote(ns), quote(t))).collect();
        tx.batch_execute(&locks.concat()).await?;
        for (table, column, data_type) in column_types(tx, ns, Some(&unread)).await? {
            checked.types.entry(table).or_default().insert(column, data_type);
        }
    }
    for (i, table) in loaded.iter().enumerate() {
        let Some(types) = checked.types.get(&table.name) else {
            // Dropped by hand since the plan: read the table again and plan again.
            schemas.entry(ns.clone()).or_default().tables.remove(&table.name);
            return Ok(false);
        };
        let mut exact = true;
        for (column, t) in &table.columns {
            match types.get(column) {
                Some(actual) if actual == catalog_type(*t) => {}
                // Made by hand with another type (`integer`, `varchar`, ...): staging and
                // an insert cast it.
                Some(_) => exact = false,
                None => {
                    schemas.entry(ns.clone()).or_default().tables.remove(&table.name);
                    return Ok(false);
                }
            }
        }
        copy_rows(tx, ns, table, i, direct && exact).await?;
    }
    Ok(true)
}

async fn change_schema(tx: &Transaction<'_>, ns: &str, table: &ChunkTable) -> Result<(), tokio_postgres::Error> {
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

/// Move the rows into the table. With `direct`, events and discards go by binary `COPY`
/// straight into the table: the common case, where none of the rows is there yet, costs
/// PostgreSQL one write (a row that is there already fails the transaction, which is then
/// loaded again without `direct`). Otherwise the rows go through a staging table and
/// `insert ... on conflict do nothing`; `users` always does (it upserts), and so does a
/// table with a column of a type ferry did not choose, where binary COPY data would be
/// misread.
async fn copy_rows(
    tx: &Transaction<'_>,
    ns: &str,
    table: &ChunkTable,
    i: usize,
    direct: bool,
) -> Result<(), tokio_postgres::Error> {
    if table.rows == 0 {
        return Ok(());
    }
    let target = format!("{}.{}", quote(ns), quote(&table.name));
    let names: Vec<String> = table.columns.iter().map(|(c, _)| quote(c)).collect();
    let columns = names.join(", ");
    if direct && table.kind != TableKind::Users {
        return copy_binary(tx, &target, &columns, &table.data).await;
    }
    let stage = quote(&format!("ferry_stage_{i}"));
    let defs: Vec<String> = table.columns.iter().map(|(c, t)| format!("{} {}", quote(c), sql_type(*t))).collect();
    tx.batch_execute(&format!(
        "drop table if exists {stage}; create temp table {stage} ({}) on commit drop",
        defs.join(", ")
    ))
    .await?;
    copy_binary(tx, &stage, &columns, &table.data).await?;
    let sql = match table.kind {
        TableKind::Events | TableKind::Discards => {
            let key: Vec<String> = table.kind.key().iter().map(|c| quote(c)).collect();
            format!(
                "insert into {target} ({columns}) select {columns} from {stage} on conflict ({}) do nothing",
                key.join(", ")
            )
        }
        TableKind::Users => format!(
            "insert into {target} as t ({columns}) select {columns} from {stage} {}",
            users_upsert(&table.columns, "t", "greatest")
        ),
    };
    tx.batch_execute(&sql).await?;
    Ok(())
}

/// Binary COPY `data` into `target` (its `columns`).
async fn copy_binary(
    tx: &Transaction<'_>,
    target: &str,
    columns: &str,
    data: &Bytes,
) -> Result<(), tokio_postgres::Error> {
    let sink = tx.copy_in(&format!("copy {target} ({columns}) from stdin (format binary)")).await?;
    futures_util::pin_mut!(sink);
    sink.send(data.clone()).await?;
    sink.finish().await?;
    Ok(())
}

/// A table's rows in PostgreSQL's binary COPY format, header and trailer included.
fn encode_table(table: &TableLoad<'_>) -> Bytes {
    let mut buf = BytesMut::with_capacity(table.rows.len() * 512 + 32);
    buf.put_slice(b"PGCOPY\n\xff\r\n\0");
    buf.put_i32(0);
    buf.put_i32(0);
    let width = table.columns.len();
    let mut dense = Vec::with_capacity(width);
    for row in &table.rows {
        row.dense_into(width, &mut dense);
        encode_row(&mut buf, &dense, &table.columns);
    }
    buf.put_i16(-1);
    buf.freeze()
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
