//! Dead letters: events a destination rejected, or kept refusing until their maximum age,
//! with every attempt's error. Durable (SQLite, `synchronous = FULL`, written before the
//! cursor moves past the event), inspectable while ferry runs (`ferry dlq list|show`),
//! and redriven on request (`ferry dlq redrive`).
//!
//! # On-disk format, version 1
//!
//! `dead-letters.db` with `PRAGMA user_version = 1` and one table (the exact schema is
//! checked against `tests/golden/dead-letters-v1.sql`):
//!
//! | column | |
//! | --- | --- |
//! | `id` | integer primary key |
//! | `destination` | the destination's configured name |
//! | `position` | the event's position in the log |
//! | `message_id`, `type`, `event`, `source_id` | from the event (`event`: track name) |
//! | `received_at` | the event's `receivedAt` (ISO-8601) |
//! | `first_attempt_at`, `dead_at` | ISO-8601 |
//! | `reason` | why it is dead: the rejection, or the last error when retries ran out |
//! | `attempts` | JSON array `[{"at": ISO-8601, "error": "..."}]` |
//! | `payload` | the stored event JSON |
//! | `redriven_at` | when a redrive delivered it (then it is no longer listed as dead) |
//! | `redrive_attempts` | redrives tried |

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};

/// The format version in `PRAGMA user_version`.
pub const FORMAT_VERSION: i64 = 1;

const SCHEMA: &str = "create table if not exists dead_letters (
    id integer primary key,
    destination text not null,
    position integer not null,
    message_id text not null,
    type text not null,
    event text,
    source_id text,
    received_at text,
    first_attempt_at text not null,
    dead_at text not null,
    reason text not null,
    attempts text not null,
    payload text not null,
    redriven_at text,
    redrive_attempts integer not null default 0
);
create index if not exists dead_letters_by_destination on dead_letters (destination, redriven_at, id);";

/// One failed attempt.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Attempt {
    pub at: String,
    pub error: String,
}

/// A dead letter as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    pub id: i64,
    pub destination: String,
    pub position: u64,
    pub message_id: String,
    pub kind: String,
    pub event: Option<String>,
    pub source_id: Option<String>,
    pub received_at: Option<String>,
    pub first_attempt_at: String,
    pub dead_at: String,
    pub reason: String,
    pub attempts: Vec<Attempt>,
    pub payload: String,
    pub redriven_at: Option<String>,
    pub redrive_attempts: i64,
}

/// A dead letter to add.
#[derive(Debug, Clone)]
pub struct NewDeadLetter {
    pub destination: String,
    pub position: u64,
    pub message_id: String,
    pub kind: String,
    pub event: Option<String>,
    pub source_id: Option<String>,
    pub received_at: Option<String>,
    pub first_attempt_at: String,
    pub reason: String,
    pub attempts: Vec<Attempt>,
    pub payload: String,
}

/// Which dead letters an operator means.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub destination: Option<String>,
    /// `reason` or an attempt's error contains this text.
    pub error: Option<String>,
    /// The track event name, exactly.
    pub event: Option<String>,
    /// The event's `receivedAt` is at or after this (ISO-8601 UTC).
    pub since: Option<String>,
    /// The event's `receivedAt` is before this.
    pub until: Option<String>,
    /// Include those already redriven.
    pub include_redriven: bool,
    pub limit: Option<usize>,
}

#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    #[error("dead letter store {path}: {source}")]
    Sqlite { path: PathBuf, source: rusqlite::Error },
    #[error("dead letter writer stopped: {0}")]
    Stopped(String),
    #[error("cannot create the directory of the dead letter store {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("dead letter store {path} has format version {found}; this ferry reads version {FORMAT_VERSION}")]
    Version { path: PathBuf, found: i64 },
}

/// The dead letter store.
pub struct DeadLetters {
    path: PathBuf,
    conn: Mutex<Connection>,
}

impl DeadLetters {
    /// Open (or create) the store at `path`.
    pub fn open(path: &Path) -> Result<DeadLetters, DeadLetterError> {
        let err = |source| DeadLetterError::Sqlite { path: path.to_owned(), source };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|source| DeadLetterError::Io { path: path.to_owned(), source })?;
        }
        let conn = Connection::open(path).map_err(err)?;
        conn.busy_timeout(Duration::from_secs(10)).map_err(err)?;
        conn.pragma_update(None, "journal_mode", "wal").map_err(err)?;
        conn.pragma_update(None, "synchronous", "full").map_err(err)?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0)).map_err(err)?;
        match version {
            0 => {
                conn.execute_batch(SCHEMA).map_err(err)?;
                conn.pragma_update(None, "user_version", FORMAT_VERSION).map_err(err)?;
            }
            FORMAT_VERSION => {}
            found => return Err(DeadLetterError::Version { path: path.to_owned(), found }),
        }
        Ok(DeadLetters { path: path.to_owned(), conn: Mutex::new(conn) })
    }

    fn err(&self, source: rusqlite::Error) -> DeadLetterError {
        DeadLetterError::Sqlite { path: self.path.clone(), source }
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Store dead letters durably (one transaction). Blocking.
    pub fn add(&self, letters: &[NewDeadLetter]) -> Result<(), DeadLetterError> {
        if letters.is_empty() {
            return Ok(());
        }
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        {
            let mut insert = tx
                .prepare_cached(
                    "insert into dead_letters (destination, position, message_id, type, event, source_id, received_at,
                     first_attempt_at, dead_at, reason, attempts, payload) values (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                )
                .map_err(|e| self.err(e))?;
            let now = now_iso();
            for letter in letters {
                let attempts = serde_json::to_string(&letter.attempts).unwrap_or_else(|_| "[]".to_owned());
                insert
                    .execute(params![
                        letter.destination,
                        letter.position as i64,
                        letter.message_id,
                        letter.kind,
                        letter.event,
                        letter.source_id,
                        letter.received_at,
                        letter.first_attempt_at,
                        now,
                        letter.reason,
                        attempts,
                        letter.payload
                    ])
                    .map_err(|e| self.err(e))?;
            }
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// Dead letters matching `filter`, oldest first.
    pub fn list(&self, filter: &Filter) -> Result<Vec<DeadLetter>, DeadLetterError> {
        let mut sql = "select id, destination, position, message_id, type, event, source_id, received_at,
            first_attempt_at, dead_at, reason, attempts, payload, redriven_at, redrive_attempts from dead_letters where 1 = 1"
            .to_owned();
        let mut args: Vec<String> = Vec::new();
        let mut arg = |sql: &mut String, clause: &str, value: String| {
            args.push(value);
            sql.push_str(&clause.replace('?', &format!("?{}", args.len())));
        };
        if let Some(d) = &filter.destination {
            arg(&mut sql, " and destination = ?", d.clone());
        }
        if let Some(e) = &filter.error {
            let pattern = format!("%{}%", e.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_"));
            arg(&mut sql, " and (reason like ? escape '\\' or attempts like ? escape '\\')", pattern);
        }
        if let Some(e) = &filter.event {
            arg(&mut sql, " and event = ?", e.clone());
        }
        if let Some(s) = &filter.since {
            arg(&mut sql, " and received_at >= ?", s.clone());
        }
        if let Some(u) = &filter.until {
            arg(&mut sql, " and received_at < ?", u.clone());
        }
        if !filter.include_redriven {
            sql.push_str(" and redriven_at is null");
        }
        sql.push_str(" order by id");
        if let Some(limit) = filter.limit {
            sql.push_str(&format!(" limit {limit}"));
        }
        let conn = self.conn();
        let mut statement = conn.prepare(&sql).map_err(|e| self.err(e))?;
        let rows =
            statement.query_map(rusqlite::params_from_iter(args.iter()), row_to_letter).map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(|e| self.err(e))
    }

    /// One dead letter by id.
    pub fn get(&self, id: i64) -> Result<Option<DeadLetter>, DeadLetterError> {
        let conn = self.conn();
        conn.query_row(
            "select id, destination, position, message_id, type, event, source_id, received_at, first_attempt_at,
             dead_at, reason, attempts, payload, redriven_at, redrive_attempts from dead_letters where id = ?1",
            [id],
            row_to_letter,
        )
        .optional()
        .map_err(|e| self.err(e))
    }

    /// Record a redrive: delivered ones are marked, failed ones get the attempt added.
    pub fn record_redrive(&self, delivered: &[i64], failed: &[(i64, String)]) -> Result<(), DeadLetterError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        let now = now_iso();
        for id in delivered {
            tx.execute(
                "update dead_letters set redriven_at = ?1, redrive_attempts = redrive_attempts + 1 where id = ?2",
                params![now, id],
            )
            .map_err(|e| self.err(e))?;
        }
        for (id, error) in failed {
            let attempts: Option<String> = tx
                .query_row("select attempts from dead_letters where id = ?1", [id], |r| r.get(0))
                .optional()
                .map_err(|e| self.err(e))?;
            let mut attempts: Vec<Attempt> = attempts.and_then(|a| serde_json::from_str(&a).ok()).unwrap_or_default();
            attempts.push(Attempt { at: now.clone(), error: format!("redrive: {error}") });
            tx.execute(
                "update dead_letters set attempts = ?1, redrive_attempts = redrive_attempts + 1 where id = ?2",
                params![serde_json::to_string(&attempts).unwrap_or_default(), id],
            )
            .map_err(|e| self.err(e))?;
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// Dead letters not yet redriven, per destination.
    pub fn counts(&self) -> Result<Vec<(String, u64)>, DeadLetterError> {
        let conn = self.conn();
        let mut statement = conn
            .prepare("select destination, count(*) from dead_letters where redriven_at is null group by 1 order by 1")
            .map_err(|e| self.err(e))?;
        let rows = statement
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64)))
            .map_err(|e| self.err(e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(|e| self.err(e))
    }

    /// The schema as SQLite holds it (for the golden test of the format).
    pub fn schema_sql(&self) -> Result<String, DeadLetterError> {
        let conn = self.conn();
        let mut statement = conn
            .prepare("select sql from sqlite_master where sql is not null and name not like 'sqlite_%' order by name")
            .map_err(|e| self.err(e))?;
        let rows = statement.query_map([], |r| r.get::<_, String>(0)).map_err(|e| self.err(e))?;
        let sql: Vec<String> = rows.collect::<rusqlite::Result<_>>().map_err(|e| self.err(e))?;
        Ok(sql.join(";\n") + ";\n")
    }
}

fn row_to_letter(r: &rusqlite::Row<'_>) -> rusqlite::Result<DeadLetter> {
    let attempts: String = r.get(11)?;
    Ok(DeadLetter {
        id: r.get(0)?,
        destination: r.get(1)?,
        position: r.get::<_, i64>(2)? as u64,
        message_id: r.get(3)?,
        kind: r.get(4)?,
        event: r.get(5)?,
        source_id: r.get(6)?,
        received_at: r.get(7)?,
        first_attempt_at: r.get(8)?,
        dead_at: r.get(9)?,
        reason: r.get(10)?,
        attempts: serde_json::from_str(&attempts).unwrap_or_default(),
        payload: r.get(12)?,
        redriven_at: r.get(13)?,
        redrive_attempts: r.get(14)?,
    })
}

pub(crate) fn now_iso() -> String {
    ferry_event::format_time(jiff::Timestamp::now())
}
