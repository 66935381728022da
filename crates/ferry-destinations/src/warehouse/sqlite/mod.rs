//! The embedded SQLite warehouse (`ferry-data/warehouse.db` by default).
//!
//! SQLite has no schemas, so each source's tables carry its namespace as a prefix
//! (`web_tracks`, `web_order_completed`); ferry's registry `_ferry_tables` maps each to its
//! source and table, and `_ferry_columns` records a column's type where SQLite's declared
//! type cannot say it (an integer column widened to float). Every table also has a view
//! without the prefix (`tracks`, `users`, `order_completed`, ...) over all sources, with
//! every column and a `source` column, so `select event, count(*) from tracks group by 1`
//! works a second after the first event.
//!
//! The database runs in WAL mode with `synchronous = FULL`: readers (the `sqlite3` shell)
//! never block the loader, and a committed batch survives a power cut before the log's
//! cursor moves past it. Times are stored as UTC ISO-8601 text with milliseconds, which
//! sorts and compares correctly and works with SQLite's date functions.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OptionalExtension};

use super::naming::{self, quote};
use super::plan::{self, ColumnType, Plan, Schema, TableKind, TableLoad, Value};
use super::{LoadError, by_namespace, load_bisecting, users_upsert};
use crate::{BoxFuture, Destination, Event, Outcome};

mod config;

pub use config::Settings;

/// Where the SQLite warehouse lives.
#[derive(Debug, Clone)]
pub struct SqliteConfig {
    pub path: PathBuf,
}

/// Why the SQLite warehouse cannot open.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot create {}: {error}", dir.display())]
    CreateDir { dir: PathBuf, error: std::io::Error },
    #[error("cannot open sqlite warehouse {}: {error}", path.display())]
    Open { path: PathBuf, error: rusqlite::Error },
    #[error("cannot set up sqlite warehouse {}: {error}", path.display())]
    Setup { path: PathBuf, error: rusqlite::Error },
    #[error("cannot read sqlite warehouse schema: {0}")]
    Schema(rusqlite::Error),
    #[error("cannot start the sqlite checkpointer: {0}")]
    Checkpointer(std::io::Error),
}

/// The SQLite warehouse destination.
pub struct SqliteWarehouse {
    inner: Arc<Mutex<Inner>>,
}

struct Inner {
    conn: Connection,
    /// Told after every commit: the checkpointer copies the WAL into the database on its
    /// own thread (and connection), so loads never wait for it.
    checkpoint: std::sync::mpsc::SyncSender<()>,
    /// What the database holds, per namespace, as of `schema_version`.
    schemas: HashMap<String, Schema>,
    /// `table` of a namespace → its SQLite name.
    names: HashMap<(String, String), String>,
    schema_version: i64,
}

impl SqliteWarehouse {
    /// Open (or create) the warehouse file.
    pub fn open(config: &SqliteConfig) -> Result<SqliteWarehouse, OpenError> {
        if let Some(parent) = config.path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|error| OpenError::CreateDir { dir: parent.to_owned(), error })?;
        }
        let conn =
            Connection::open(&config.path).map_err(|error| OpenError::Open { path: config.path.clone(), error })?;
        let setup = || -> rusqlite::Result<()> {
            conn.busy_timeout(Duration::from_secs(10))?;
            conn.pragma_update(None, "journal_mode", "wal")?;
            conn.pragma_update(None, "synchronous", "full")?;
            // 64 MiB of page cache (the default is 2 MiB): inserts into large tables touch
            // index pages all over the file.
            conn.pragma_update(None, "cache_size", -65536)?;
            // Checkpoints run on the checkpointer's thread, not inside the loader's commits.
            conn.pragma_update(None, "wal_autocheckpoint", 0)?;
            conn.set_prepared_statement_cache_capacity(256);
            conn.execute_batch(
                "create table if not exists _ferry_tables (
                     name text primary key, namespace text not null, table_name text not null,
                     unique (namespace, table_name));
                 create table if not exists _ferry_columns (
                     name text not null, column_name text not null, type text not null,
                     primary key (name, column_name));",
            )
        };
        setup().map_err(|error| OpenError::Setup { path: config.path.clone(), error })?;
        let checkpoint = spawn_checkpointer(&config.path)?;
        let mut inner = Inner { conn, checkpoint, schemas: HashMap::new(), names: HashMap::new(), schema_version: -1 };
        inner.refresh().map_err(OpenError::Schema)?;
        Ok(SqliteWarehouse { inner: Arc::new(Mutex::new(inner)) })
    }

    /// Load events now, in this thread (for tools and tests); the outcomes as `send`.
    pub fn load_blocking(&self, events: &[Arc<Event>]) -> Vec<Outcome> {
        let inner = self.inner.clone();
        let load = move |batch: Vec<Arc<Event>>| {
            let inner = inner.clone();
            async move { load(&inner, &batch) }
        };
        futures_util::FutureExt::now_or_never(load_bisecting(events, &load))
            .unwrap_or_else(|| vec![Outcome::retry("sqlite load did not finish"); events.len()])
    }
}

impl Destination for SqliteWarehouse {
    fn follows_integrations(&self) -> bool {
        false
    }

    fn send<'a>(&'a self, events: &'a [Arc<Event>]) -> BoxFuture<'a, Vec<Outcome>> {
        Box::pin(async move {
            let inner = self.inner.clone();
            let load = move |batch: Vec<Arc<Event>>| {
                let inner = inner.clone();
                async move {
                    tokio::task::spawn_blocking(move || load(&inner, &batch))
                        .await
                        .unwrap_or_else(|e| Err(LoadError::Transient(format!("sqlite loader stopped: {e}"))))
                }
            };
            load_bisecting(events, &load).await
        })
    }
}

/// The WAL grows past this before the checkpointer also truncates it (a passive
/// checkpoint copies pages but leaves the file at its size).
const WAL_TRUNCATE_BYTES: u64 = 256 << 20;

/// A thread with its own connection that checkpoints the WAL whenever a load committed
/// (passively: it never blocks the loader or readers), and truncates the WAL when it grew
/// large. It sleeps on a channel, so an idle warehouse costs nothing; it ends when the
/// warehouse is dropped.
fn spawn_checkpointer(path: &std::path::Path) -> Result<std::sync::mpsc::SyncSender<()>, OpenError> {
    let conn = Connection::open(path).map_err(|error| OpenError::Open { path: path.to_owned(), error })?;
    conn.busy_timeout(Duration::from_secs(10)).map_err(|error| OpenError::Setup { path: path.to_owned(), error })?;
    let wal = {
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        std::path::PathBuf::from(wal)
    };
    let (send, committed) = std::sync::mpsc::sync_channel::<()>(1);
    std::thread::Builder::new()
        .name("ferry-sqlite-checkpoint".to_owned())
        .spawn(move || {
            while committed.recv().is_ok() {
                let large = std::fs::metadata(&wal).is_ok_and(|m| m.len() > WAL_TRUNCATE_BYTES);
                let mode = if large { "truncate" } else { "passive" };
                if let Err(error) = conn.query_row(&format!("pragma wal_checkpoint({mode})"), [], |_| Ok(())) {
                    tracing::warn!(%error, mode, "sqlite warehouse checkpoint failed; the next commit tries again");
                }
            }
        })
        .map_err(OpenError::Checkpointer)?;
    Ok(send)
}

/// Load one batch in one transaction.
fn load(inner: &Mutex<Inner>, events: &[Arc<Event>]) -> Result<(), LoadError> {
    let mut inner = inner.lock().map_err(|_| LoadError::Transient("sqlite warehouse lock poisoned".into()))?;
    let groups = by_namespace(events);
    let uuid_ts = jiff::Timestamp::now();
    // Another process (a `ferry replay`) may have changed the schema since we read it:
    // then read it again and plan again.
    for _ in 0..3 {
        match inner.apply(&groups, uuid_ts) {
            Ok(true) => return Ok(()),
            Ok(false) => inner.refresh().map_err(classify)?,
            // A schema we did not expect (a table dropped by hand): read it again.
            Err(e) if is_schema_error(&e) => inner.refresh().map_err(classify)?,
            Err(e) => return Err(classify(e)),
        }
    }
    Err(LoadError::Transient("the sqlite warehouse schema keeps changing under the loader".into()))
}

/// Events planned at a time: planning of the next chunk (one thread) overlaps SQLite
/// writing the last one (this thread), within one transaction.
const PLAN_CHUNK: usize = 1000;

fn is_schema_error(e: &rusqlite::Error) -> bool {
    let text = e.to_string();
    text.contains("no such table") || text.contains("has no column named") || text.contains("duplicate column")
}

fn classify(e: rusqlite::Error) -> LoadError {
    match e.sqlite_error_code() {
        Some(
            ErrorCode::DatabaseBusy
            | ErrorCode::DatabaseLocked
            | ErrorCode::DiskFull
            | ErrorCode::SystemIoFailure
            | ErrorCode::CannotOpen
            | ErrorCode::OutOfMemory
            | ErrorCode::ReadOnly,
        ) => LoadError::Transient(e.to_string()),
        _ if is_schema_error(&e) => LoadError::Transient(e.to_string()),
        _ => LoadError::Data(e.to_string()),
    }
}

fn sql_type(t: ColumnType) -> &'static str {
    match t {
        ColumnType::Integer => "integer",
        ColumnType::Float => "real",
        ColumnType::Boolean => "boolean",
        ColumnType::Timestamp => "timestamp",
        ColumnType::Text => "text",
    }
}

fn column_type(declared: &str) -> ColumnType {
    match declared.to_ascii_lowercase().as_str() {
        "integer" | "int" | "bigint" => ColumnType::Integer,
        "real" | "float" | "double" => ColumnType::Float,
        "boolean" => ColumnType::Boolean,
        "timestamp" | "datetime" => ColumnType::Timestamp,
        _ => ColumnType::Text,
    }
}

impl Inner {
    /// Read every registered table's columns again.
    fn refresh(&mut self) -> rusqlite::Result<()> {
        let version: i64 = self.conn.pragma_query_value(None, "schema_version", |r| r.get(0))?;
        let mut schemas: HashMap<String, Schema> = HashMap::new();
        let mut names = HashMap::new();
        let tables: Vec<(String, String, String)> = self
            .conn
            .prepare("select name, namespace, table_name from _ferry_tables")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<rusqlite::Result<_>>()?;
        let mut overrides: HashMap<(String, String), ColumnType> = HashMap::new();
        for row in self
            .conn
            .prepare("select name, column_name, type from _ferry_columns")?
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?)))?
        {
            let (name, column, t) = row?;
            if let Some(t) = ColumnType::parse(&t) {
                overrides.insert((name, column), t);
            }
        }
        for (name, namespace, table) in tables {
            let mut columns = HashMap::new();
            let mut info = self.conn.prepare(&format!("pragma table_info({})", quote(&name)))?;
            let rows = info.query_map([], |r| Ok((r.get::<_, String>(1)?, r.get::<_, String>(2)?)))?;
            for row in rows {
                let (column, declared) = row?;
                let t =
                    overrides.get(&(name.clone(), column.clone())).copied().unwrap_or_else(|| column_type(&declared));
                columns.insert(column, t);
            }
            if columns.is_empty() {
                // Registered but dropped by hand: it will be created again.
                continue;
            }
            schemas.entry(namespace.clone()).or_default().tables.insert(table.clone(), plan::TableSchema { columns });
            names.insert((namespace, table), name);
        }
        self.schemas = schemas;
        self.names = names;
        self.schema_version = version;
        Ok(())
    }

    /// Plan and load `groups` in one transaction. `Ok(false)`: the schema changed since
    /// it was read; nothing was written. Holding SQLite's write lock from the start, the
    /// schema cannot change under the plans, so chunk after chunk is planned against the
    /// schema as the previous chunks leave it, on a second thread, while this one writes.
    fn apply(
        &mut self,
        groups: &BTreeMap<String, Vec<Arc<Event>>>,
        uuid_ts: jiff::Timestamp,
    ) -> rusqlite::Result<bool> {
        let Inner { conn, schemas, names, schema_version, checkpoint } = self;
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let version: i64 = tx.pragma_query_value(None, "schema_version", |r| r.get(0))?;
        if version != *schema_version {
            return Ok(false);
        }
        let mut changed_views = BTreeSet::new();
        let mut new_names: HashMap<(String, String), String> = HashMap::new();
        let mut changed_schema = false;
        let snapshot: Vec<(&String, &Vec<Arc<Event>>, Schema)> =
            groups.iter().map(|(ns, events)| (ns, events, schemas.get(ns).cloned().unwrap_or_default())).collect();
        std::thread::scope(|scope| -> rusqlite::Result<()> {
            let (send, plans) = std::sync::mpsc::sync_channel::<Plan<'_>>(2);
            scope.spawn(move || {
                for (ns, events, mut schema) in snapshot {
                    for chunk in events.chunks(PLAN_CHUNK) {
                        let plan = plan::plan(ns, chunk, &schema, uuid_ts);
                        schema.absorb(&plan);
                        if send.send(plan).is_err() {
                            return;
                        }
                    }
                }
            });
            for plan in plans {
                changed_schema |= plan.changes_schema();
                for table in &plan.tables {
                    let key = (plan.namespace.clone(), table.name.clone());
                    let name = match names.get(&key).or_else(|| new_names.get(&key)) {
                        Some(name) => name.clone(),
                        None => {
                            let name = unused_name(&tx, &plan.namespace, &table.name)?;
                            new_names.insert(key, name.clone());
                            name
                        }
                    };
                    if table.create {
                        create_table(&tx, &name, &plan.namespace, table)?;
                    }
                    if table.create || !table.add.is_empty() {
                        changed_views.insert(table.name.clone());
                    }
                    for (column, t) in &table.add {
                        tx.execute(
                            &format!("alter table {} add column {} {}", quote(&name), quote(column), sql_type(*t)),
                            [],
                        )?;
                    }
                    for column in &table.widen {
                        tx.execute(
                            "insert or replace into _ferry_columns (name, column_name, type) values (?1, ?2, 'float')",
                            [&name, column],
                        )?;
                    }
                    insert_rows(&tx, &name, table)?;
                }
            }
            Ok(())
        })?;
        for view in &changed_views {
            recreate_view(&tx, view)?;
        }
        tx.commit()?;
        // A full channel means a checkpoint is already due: nothing to add.
        let _ = checkpoint.try_send(());
        names.extend(new_names);
        // Our own DDL moved the version: read what is there now.
        if changed_schema {
            self.refresh()?;
        }
        Ok(true)
    }
}

/// The SQLite name of a namespace's table: `<namespace>_<table>`, or with a hash when that
/// name already belongs to another namespace's table.
fn unused_name(tx: &rusqlite::Transaction<'_>, namespace: &str, table: &str) -> rusqlite::Result<String> {
    let name = naming::bounded(format!("{namespace}_{table}"));
    let taken: Option<(String, String)> = tx
        .query_row("select namespace, table_name from _ferry_tables where name = ?1", [&name], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?;
    match taken {
        Some((ns, t)) if ns != namespace || t != table => {
            let hash = xxhash_rust::xxh3::xxh3_64(format!("{namespace}\0{table}").as_bytes()) as u32;
            Ok(naming::bounded(format!("{namespace}_{table}_{hash:08x}")))
        }
        _ => Ok(name),
    }
}

fn create_table(
    tx: &rusqlite::Transaction<'_>,
    name: &str,
    namespace: &str,
    table: &TableLoad<'_>,
) -> rusqlite::Result<()> {
    let columns: Vec<String> =
        table.columns.iter().map(|(column, t)| format!("{} {}", quote(column), sql_type(*t))).collect();
    let key: Vec<String> = table.kind.key().iter().map(|c| quote(c)).collect();
    tx.execute(
        &format!(
            "create table if not exists {} ({}, primary key ({}))",
            quote(name),
            columns.join(", "),
            key.join(", ")
        ),
        [],
    )?;
    tx.execute(
        "insert or replace into _ferry_tables (name, namespace, table_name) values (?1, ?2, ?3)",
        [name, namespace, &table.name],
    )?;
    Ok(())
}

fn insert_rows(tx: &rusqlite::Transaction<'_>, name: &str, table: &TableLoad<'_>) -> rusqlite::Result<()> {
    if table.rows.is_empty() {
        return Ok(());
    }
    let columns: Vec<String> = table.columns.iter().map(|(c, _)| quote(c)).collect();
    let placeholders = vec!["?"; columns.len()].join(", ");
    let target = quote(name);
    let sql = match table.kind {
        TableKind::Events | TableKind::Discards => {
            format!("insert or ignore into {target} ({}) values ({placeholders})", columns.join(", "))
        }
        TableKind::Users => format!(
            "insert into {target} ({}) values ({placeholders}) {}",
            columns.join(", "),
            users_upsert(&table.columns, &target, "max")
        ),
    };
    let mut statement = tx.prepare_cached(&sql)?;
    let width = table.columns.len();
    let mut dense = Vec::with_capacity(width);
    let mut time = String::with_capacity(24);
    for row in &table.rows {
        row.dense_into(width, &mut dense);
        for (i, (value, (_, t))) in dense.iter().zip(&table.columns).enumerate() {
            // Text is bound borrowed (SQLite copies it at bind time), so nothing is
            // allocated per value.
            let index = i + 1;
            match value {
                None => statement.raw_bind_parameter(index, rusqlite::types::Null)?,
                Some(Value::Int(v)) if *t == ColumnType::Float => statement.raw_bind_parameter(index, *v as f64)?,
                Some(Value::Int(v)) => statement.raw_bind_parameter(index, *v)?,
                Some(Value::Float(v)) => statement.raw_bind_parameter(index, *v)?,
                Some(Value::Bool(v)) => statement.raw_bind_parameter(index, i64::from(*v))?,
                Some(Value::Time(ts)) => {
                    time.clear();
                    ferry_event::write_time_into(&mut time, *ts);
                    statement.raw_bind_parameter(index, time.as_str())?
                }
                Some(Value::Text(s)) => statement.raw_bind_parameter(index, s.as_ref())?,
            }
        }
        statement.raw_execute()?;
    }
    Ok(())
}

/// `create view <table>` over every namespace's table of that name (`web_tracks`,
/// `ios_tracks`, ...): every column any of them has (`null` where one lacks it), and a
/// `source` column. Made again whenever one of those tables is created or gains a column.
fn recreate_view(tx: &rusqlite::Transaction<'_>, table: &str) -> rusqlite::Result<()> {
    // SQLite reserves `sqlite_*`; a table or view of that name made by someone else is
    // left alone.
    if table.starts_with("sqlite_") {
        return Ok(());
    }
    let existing: Option<String> =
        tx.query_row("select type from sqlite_master where name = ?1", [table], |r| r.get(0)).optional()?;
    if existing.as_deref().is_some_and(|t| t != "view") {
        return Ok(());
    }
    let sources: Vec<(String, String)> = tx
        .prepare("select namespace, name from _ferry_tables where table_name = ?1 order by namespace")?
        .query_map([table], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut all: Vec<String> = Vec::new();
    let mut per_source = Vec::new();
    for (namespace, name) in &sources {
        let columns: Vec<String> = tx
            .prepare(&format!("pragma table_info({})", quote(name)))?
            .query_map([], |r| r.get::<_, String>(1))?
            .collect::<rusqlite::Result<_>>()?;
        for column in &columns {
            if !all.contains(column) {
                all.push(column.clone());
            }
        }
        per_source.push((namespace, name, columns));
    }
    let selects: Vec<String> = per_source
        .iter()
        .map(|(namespace, name, columns)| {
            let values: Vec<String> = all
                .iter()
                .map(|c| if columns.contains(c) { quote(c) } else { format!("null as {}", quote(c)) })
                .collect();
            format!("select '{}' as source, {} from {}", namespace.replace('\'', "''"), values.join(", "), quote(name))
        })
        .collect();
    tx.execute(&format!("drop view if exists {}", quote(table)), [])?;
    if !selects.is_empty() {
        tx.execute(&format!("create view {} as {}", quote(table), selects.join(" union all ")), [])?;
    }
    Ok(())
}
