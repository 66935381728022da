//! Planning a load: a batch of events of one source becomes, per table, the rows to
//! insert, the tables and columns to create, the columns to widen, and the values that
//! cannot be stored (discards). Pure: the schema and the load time arrive as values, so
//! the rules are tested with data and both backends share them.
//!
//! # Tables and columns (Segment's warehouse schema)
//!
//! | call | tables | columns beyond the common ones |
//! | --- | --- | --- |
//! | identify | `identifies`, `users` (one row per user id, upserted) | traits |
//! | track | `tracks` (no properties) and the event's own table | `event` (slug), `event_text`; properties in the event table |
//! | page, screen | `pages`, `screens` | `name`, `category`, properties |
//! | group | `groups` | `group_id`, traits |
//! | alias | `aliases` | `previous_id` |
//!
//! Common columns: `id` (messageId, the primary key), `anonymous_id`, `user_id`,
//! `received_at`, `sent_at`, `timestamp`, `original_timestamp`, `uuid_ts` (load time), and
//! `context_*` (the flattened context). `users` has `id` (the user id), `received_at`,
//! `uuid_ts` and the traits. Nested objects flatten with `_`, arrays are stored as JSON
//! text, `null`s create nothing.
//!
//! # Types
//!
//! A column's type is the type of the first value seen: `integer`, `float`, `boolean`,
//! `timestamp` (a string holding an ISO-8601 date and time) or `text`. Later values are
//! cast when that loses nothing (a number into a text column, a numeric string into a
//! number column, `"true"` into a boolean one); an integer column that meets a fraction is
//! widened to float. Anything else is not stored in its column: the row loads without it
//! and the value goes to the `discards` table with the reason.

use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::ops::Range;
use std::sync::Arc;

use ferry_event::CallType;

use super::flatten::{Leaf, flatten};
use super::naming;
use crate::Event;

/// A column's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum ColumnType {
    Integer,
    Float,
    Boolean,
    Timestamp,
    Text,
}

impl ColumnType {
    /// The name used in `discards.expected_type` and in ferry's column bookkeeping.
    pub(crate) fn name(self) -> &'static str {
        match self {
            ColumnType::Integer => "integer",
            ColumnType::Float => "float",
            ColumnType::Boolean => "boolean",
            ColumnType::Timestamp => "timestamp",
            ColumnType::Text => "text",
        }
    }

    pub(crate) fn parse(name: &str) -> Option<ColumnType> {
        Some(match name {
            "integer" => ColumnType::Integer,
            "float" => ColumnType::Float,
            "boolean" => ColumnType::Boolean,
            "timestamp" => ColumnType::Timestamp,
            "text" => ColumnType::Text,
            _ => return None,
        })
    }
}

/// A value ready for a column of its type.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value<'a> {
    Int(i64),
    Float(f64),
    Bool(bool),
    Time(jiff::Timestamp),
    Text(Cow<'a, str>),
}

/// What the warehouse is known to hold for one namespace: each table's columns.
#[derive(Debug, Clone, Default)]
pub(crate) struct Schema {
    pub(crate) tables: HashMap<String, TableSchema>,
}

impl Schema {
    /// The schema as it is once `plan` is loaded: its tables and columns, with their types.
    pub(crate) fn absorb(&mut self, plan: &Plan<'_>) {
        for table in &plan.tables {
            let entry = self.tables.entry(table.name.clone()).or_default();
            for (column, t) in &table.columns {
                entry.columns.insert(column.clone(), *t);
            }
        }
    }
}

/// One table's columns and their types.
#[derive(Debug, Clone, Default)]
pub(crate) struct TableSchema {
    pub(crate) columns: HashMap<String, ColumnType>,
}

/// How rows go into a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TableKind {
    /// Insert; a row whose key is present already is left alone (idempotent loads).
    Events,
    /// `users`: insert, or update the columns given when this row is at least as recent.
    Users,
    /// `discards`: insert, keyed by message id, table and column.
    Discards,
}

impl TableKind {
    /// The primary key.
    pub(crate) fn key(self) -> &'static [&'static str] {
        match self {
            TableKind::Events | TableKind::Users => &["id"],
            TableKind::Discards => &["message_id", "table_name", "column_name"],
        }
    }
}

/// Rows for one table, and the schema changes they need first.
#[derive(Debug)]
pub(crate) struct TableLoad<'a> {
    pub(crate) name: String,
    pub(crate) kind: TableKind,
    /// The table does not exist yet: create it with every column in `columns`.
    pub(crate) create: bool,
    /// Columns to add to the existing table.
    pub(crate) add: Vec<(String, ColumnType)>,
    /// Existing integer columns to change to float.
    pub(crate) widen: Vec<String>,
    /// Every column the rows use, with the type it will have after the changes.
    pub(crate) columns: Vec<(String, ColumnType)>,
    pub(crate) rows: Vec<Row<'a>>,
    index: FastMap<String, usize>,
    /// Per column, the serial of the last row that set it (duplicate check in O(1)).
    stamps: Vec<u32>,
}

/// One row: the event it came from (an index into the batch) and its values, by
/// position in [`TableLoad::columns`].
#[derive(Debug, Clone)]
pub(crate) struct Row<'a> {
    pub(crate) event: usize,
    pub(crate) values: Vec<(usize, Value<'a>)>,
    /// Unique within a plan: marks the columns this row set.
    serial: u32,
}

impl<'a> Row<'a> {
    /// The row's values laid out by column into `out` (`None` for absent).
    pub(crate) fn dense_into<'r>(&'r self, width: usize, out: &mut Vec<Option<&'r Value<'a>>>) {
        out.clear();
        out.resize(width, None);
        for (column, value) in &self.values {
            out[*column] = Some(value);
        }
    }
}

/// Everything one batch of one source needs.
#[derive(Debug)]
pub(crate) struct Plan<'a> {
    /// The schema (PostgreSQL) or table prefix (SQLite) of the source.
    pub(crate) namespace: String,
    pub(crate) tables: Vec<TableLoad<'a>>,
}

impl Plan<'_> {
    /// Whether loading needs any DDL.
    pub(crate) fn changes_schema(&self) -> bool {
        self.tables.iter().any(|t| t.create || !t.add.is_empty() || !t.widen.is_empty())
    }
}

/// FxHash (as in rustc): column and table names are short and not attacker-chosen in a
/// way that matters here (a bounded number per table), and SipHash showed in profiles.
#[derive(Default, Clone, Copy)]
pub(crate) struct FxHasher(u64);

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(word)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.0 = (self.0.rotate_left(5) ^ u64::from(i)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

pub(crate) type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// A table accepts at most this many columns (PostgreSQL's hard limit is 1,600); values
/// for more go to `discards`.
pub(crate) const MAX_COLUMNS: usize = 1000;

const COMMON: &[(&str, ColumnType)] = &[
    ("id", ColumnType::Text),
    ("anonymous_id", ColumnType::Text),
    ("user_id", ColumnType::Text),
    ("received_at", ColumnType::Timestamp),
    ("sent_at", ColumnType::Timestamp),
    ("timestamp", ColumnType::Timestamp),
    ("original_timestamp", ColumnType::Timestamp),
    ("uuid_ts", ColumnType::Timestamp),
];
const TRACK: &[(&str, ColumnType)] = &[("event", ColumnType::Text), ("event_text", ColumnType::Text)];
const PAGE: &[(&str, ColumnType)] = &[("name", ColumnType::Text), ("category", ColumnType::Text)];
const GROUP: &[(&str, ColumnType)] = &[("group_id", ColumnType::Text)];
const ALIAS: &[(&str, ColumnType)] = &[("previous_id", ColumnType::Text)];
const USERS: &[(&str, ColumnType)] =
    &[("id", ColumnType::Text), ("received_at", ColumnType::Timestamp), ("uuid_ts", ColumnType::Timestamp)];
const DISCARDS: &[(&str, ColumnType)] = &[
    ("message_id", ColumnType::Text),
    ("table_name", ColumnType::Text),
    ("column_name", ColumnType::Text),
    ("value", ColumnType::Text),
    ("expected_type", ColumnType::Text),
    ("reason", ColumnType::Text),
    ("received_at", ColumnType::Timestamp),
    ("uuid_ts", ColumnType::Timestamp),
];

/// Column names a property or trait may not take (it gets a `_` in front): every fixed
/// column, and Segment's top-level fields.
const RESERVED: &[&str] = &[
    "id",
    "anonymous_id",
    "user_id",
    "received_at",
    "sent_at",
    "timestamp",
    "original_timestamp",
    "uuid_ts",
    "uuid",
    "loaded_at",
    "event",
    "event_text",
    "group_id",
    "previous_id",
    "message_id",
    "type",
    "channel",
    "version",
    "source_id",
];

/// The fixed columns of a table.
pub(crate) fn fixed_columns(table: &str, kind: TableKind) -> Vec<(&'static str, ColumnType)> {
    match kind {
        TableKind::Users => USERS.to_vec(),
        TableKind::Discards => DISCARDS.to_vec(),
        TableKind::Events => {
            let extra = match table {
                "identifies" => &[][..],
                "pages" | "screens" => PAGE,
                "groups" => GROUP,
                "aliases" => ALIAS,
                _ => TRACK,
            };
            COMMON.iter().chain(extra).copied().collect()
        }
    }
}

/// Plan the load of `events` (all of one source, whose namespace is given) against what
/// the warehouse is known to hold. `uuid_ts` is the load time.
pub(crate) fn plan<'a>(
    namespace: &str,
    events: &'a [Arc<Event>],
    schema: &Schema,
    uuid_ts: jiff::Timestamp,
) -> Plan<'a> {
    let mut builder = Builder {
        schema,
        uuid_ts,
        current: 0,
        serial: 0,
        tables: Vec::new(),
        by_name: FastMap::default(),
        users: FastMap::default(),
        name: String::with_capacity(64),
    };
    // The flattened context of the event at hand: names in one buffer, reused.
    let mut context: Vec<(Range<usize>, Leaf<'a>)> = Vec::new();
    let mut names = String::new();
    for (index, event) in events.iter().enumerate() {
        context.clear();
        names.clear();
        if let Some(raw) = event.context() {
            flatten(raw, &mut |path, leaf| {
                let start = names.len();
                if naming::context_column_into(path, &mut names) {
                    context.push((start..names.len(), leaf));
                }
            });
        }
        builder.current = index;
        builder.event(index, event, &context, &names);
    }
    let mut tables = builder.tables;
    // Tables in a stable order (and so locks taken in one order by every loader).
    tables.sort_by(|a, b| a.name.cmp(&b.name));
    Plan { namespace: namespace.to_owned(), tables }
}

struct Builder<'s, 'a> {
    schema: &'s Schema,
    uuid_ts: jiff::Timestamp,
    /// The index of the event being planned.
    current: usize,
    /// The serial of the last row started.
    serial: u32,
    tables: Vec<TableLoad<'a>>,
    by_name: FastMap<String, usize>,
    /// The `users` row of each user id in this batch.
    users: FastMap<&'a str, usize>,
    /// A column name being built (reused).
    name: String,
}

/// Why a value is not stored in its column.
struct Mismatch(&'static str);

impl<'a> Builder<'_, 'a> {
    /// A new row for `table`, with room for as many values as the table has columns.
    fn row(&mut self, table: usize, index: usize) -> Row<'a> {
        self.serial += 1;
        Row { event: index, values: Vec::with_capacity(self.tables[table].columns.len()), serial: self.serial }
    }

    fn event(&mut self, index: usize, event: &'a Event, context: &[(Range<usize>, Leaf<'a>)], names: &str) {
        let common = |b: &mut Self, table: usize, row: &mut Row<'a>| {
            b.fixed(table, row, "id", Value::Text(Cow::Borrowed(&event.message_id)));
            if let Some(v) = &event.anonymous_id {
                b.fixed(table, row, "anonymous_id", Value::Text(Cow::Borrowed(v)));
            }
            if let Some(v) = &event.user_id {
                b.fixed(table, row, "user_id", Value::Text(Cow::Borrowed(v)));
            }
            b.fixed(table, row, "received_at", Value::Time(event.received_at));
            if let Some(v) = event.sent_at {
                b.fixed(table, row, "sent_at", Value::Time(v));
            }
            b.fixed(table, row, "timestamp", Value::Time(event.timestamp));
            if let Some(v) = event.original_timestamp {
                b.fixed(table, row, "original_timestamp", Value::Time(v));
            }
            b.fixed(table, row, "uuid_ts", Value::Time(b.uuid_ts));
            for (column, leaf) in context {
                b.set(table, row, event, &names[column.clone()], leaf.clone());
            }
        };
        let text = |v: &'a Option<String>| v.as_deref().map(|s| Value::Text(Cow::Borrowed(s)));
        match event.kind {
            CallType::Track => {
                let name = event.event.as_deref().unwrap_or_default();
                let slug = naming::event_slug(name);
                let table = naming::event_table(&slug);
                for (table, with_properties) in [("tracks".to_owned(), false), (table, true)] {
                    let t = self.table(&table, TableKind::Events);
                    let mut row = self.row(t, index);
                    common(self, t, &mut row);
                    self.fixed(t, &mut row, "event", Value::Text(Cow::Owned(slug.clone())));
                    self.fixed(t, &mut row, "event_text", Value::Text(Cow::Borrowed(name)));
                    if with_properties {
                        self.object(t, &mut row, event, event.properties());
                    }
                    self.tables[t].rows.push(row);
                }
            }
            CallType::Page | CallType::Screen => {
                let t = self.table(if event.kind == CallType::Page { "pages" } else { "screens" }, TableKind::Events);
                let mut row = self.row(t, index);
                common(self, t, &mut row);
                if let Some(v) = text(&event.name) {
                    self.fixed(t, &mut row, "name", v);
                }
                if let Some(v) = text(&event.category) {
                    self.fixed(t, &mut row, "category", v);
                }
                self.object(t, &mut row, event, event.properties());
                self.tables[t].rows.push(row);
            }
            CallType::Identify => {
                let t = self.table("identifies", TableKind::Events);
                let mut row = self.row(t, index);
                common(self, t, &mut row);
                self.object(t, &mut row, event, event.traits());
                self.tables[t].rows.push(row);
                if let Some(user_id) = event.user_id.as_deref() {
                    self.user(index, event, user_id);
                }
            }
            CallType::Group => {
                let t = self.table("groups", TableKind::Events);
                let mut row = self.row(t, index);
                common(self, t, &mut row);
                if let Some(v) = text(&event.group_id) {
                    self.fixed(t, &mut row, "group_id", v);
                }
                self.object(t, &mut row, event, event.traits());
                self.tables[t].rows.push(row);
            }
            CallType::Alias => {
                let t = self.table("aliases", TableKind::Events);
                let mut row = self.row(t, index);
                common(self, t, &mut row);
                if let Some(v) = text(&event.previous_id) {
                    self.fixed(t, &mut row, "previous_id", v);
                }
                self.tables[t].rows.push(row);
            }
        }
    }

    /// The `users` row of an identify: one per user id in the batch; a later identify's
    /// traits win over an earlier one's, column by column.
    fn user(&mut self, index: usize, event: &'a Event, user_id: &'a str) {
        let t = self.table("users", TableKind::Users);
        let mut row = self.row(t, index);
        self.fixed(t, &mut row, "id", Value::Text(Cow::Borrowed(user_id)));
        self.fixed(t, &mut row, "received_at", Value::Time(event.received_at));
        self.fixed(t, &mut row, "uuid_ts", Value::Time(self.uuid_ts));
        self.object(t, &mut row, event, event.traits());
        let Some(&existing) = self.users.get(user_id) else {
            self.users.insert(user_id, self.tables[t].rows.len());
            self.tables[t].rows.push(row);
            return;
        };
        let received_column = self.tables[t].index["received_at"];
        let received = |r: &Row<'_>| {
            r.values.iter().find_map(|(c, v)| match v {
                Value::Time(ts) if *c == received_column => Some(*ts),
                _ => None,
            })
        };
        let old = &mut self.tables[t].rows[existing];
        let newer = received(&row) >= received(old);
        for (column, value) in row.values {
            match old.values.iter_mut().find(|(c, _)| *c == column) {
                Some(slot) if newer => slot.1 = value,
                Some(_) => {}
                None => old.values.push((column, value)),
            }
        }
        if newer {
            old.event = index;
        }
    }

    /// The load of table `name`, started on first use with its fixed columns.
    fn table(&mut self, name: &str, kind: TableKind) -> usize {
        if let Some(&t) = self.by_name.get(name) {
            return t;
        }
        let existing = self.schema.tables.get(name);
        let mut load = TableLoad {
            name: name.to_owned(),
            kind,
            create: existing.is_none(),
            add: Vec::new(),
            widen: Vec::new(),
            columns: Vec::new(),
            rows: Vec::new(),
            index: FastMap::default(),
            stamps: Vec::new(),
        };
        for (column, column_type) in fixed_columns(name, kind) {
            let known = existing.and_then(|e| e.columns.get(column).copied());
            if existing.is_some() && known.is_none() {
                load.add.push((column.to_owned(), column_type));
            }
            load.index.insert(column.to_owned(), load.columns.len());
            load.columns.push((column.to_owned(), known.unwrap_or(column_type)));
            load.stamps.push(0);
        }
        let t = self.tables.len();
        self.tables.push(load);
        self.by_name.insert(name.to_owned(), t);
        t
    }

    /// A fixed column's value (always of the column's type).
    fn fixed(&mut self, table: usize, row: &mut Row<'a>, column: &str, value: Value<'a>) {
        let load = &mut self.tables[table];
        if let Some(&c) = load.index.get(column) {
            load.stamps[c] = row.serial;
            row.values.push((c, value));
        }
    }

    /// Every leaf of a properties or traits object as its own column.
    fn object(&mut self, table: usize, row: &mut Row<'a>, event: &'a Event, raw: Option<&'a str>) {
        let Some(raw) = raw else { return };
        let mut name = std::mem::take(&mut self.name);
        flatten(raw, &mut |path, leaf| {
            if naming::property_column_into(path, RESERVED, &mut name) {
                self.set(table, row, event, &name, leaf);
            }
        });
        self.name = name;
    }

    /// Put a leaf into `column` of the row: infer or check the type, or discard it.
    fn set(&mut self, table: usize, row: &mut Row<'a>, event: &'a Event, column: &str, leaf: Leaf<'a>) {
        let leaf = match leaf {
            Leaf::Str(s) if s.contains('\0') => {
                // PostgreSQL text cannot hold NUL: store it with U+FFFD, keep the original.
                self.discard(table, event, column, &Leaf::Str(s.clone()), "text", "nul_replaced");
                Leaf::Str(Cow::Owned(s.replace('\0', "\u{fffd}")))
            }
            Leaf::Float(f) if !f.is_finite() => {
                self.discard(table, event, column, &leaf, "float", "not_finite");
                return;
            }
            other => other,
        };
        let load = &mut self.tables[table];
        let position = match load.index.get(column) {
            Some(&c) => c,
            None => {
                let known = self.schema.tables.get(&load.name).and_then(|t| t.columns.get(column).copied());
                let column_type = match known {
                    Some(t) => t,
                    None => {
                        let total = self.schema.tables.get(&load.name).map_or(0, |t| t.columns.len()) + load.add.len();
                        let total = if load.create { load.columns.len() } else { total };
                        if total >= MAX_COLUMNS {
                            self.discard(table, event, column, &leaf, "text", "column_limit");
                            return;
                        }
                        let inferred = infer(&leaf);
                        if !load.create {
                            load.add.push((column.to_owned(), inferred));
                        }
                        inferred
                    }
                };
                load.index.insert(column.to_owned(), load.columns.len());
                load.columns.push((column.to_owned(), column_type));
                load.stamps.push(0);
                load.columns.len() - 1
            }
        };
        if self.tables[table].stamps[position] == row.serial {
            // Two names for one column (`page.name` and `properties.name`): the same value
            // twice is no conflict; a different one is kept in discards.
            let column_type = self.tables[table].columns[position].1;
            let existing = row.values.iter().find(|(c, _)| *c == position).map(|(_, v)| v);
            if coerce(&leaf, column_type).ok().as_ref() != existing {
                self.discard(table, event, column, &leaf, column_type.name(), "duplicate_column");
            }
            return;
        }
        let load = &mut self.tables[table];
        let column_type = load.columns[position].1;
        if column_type == ColumnType::Integer && matches!(leaf, Leaf::Float(_)) {
            load.columns[position].1 = ColumnType::Float;
            if let Some(added) = load.add.iter_mut().find(|(c, _)| c == column) {
                added.1 = ColumnType::Float;
            } else if !load.create {
                load.widen.push(column.to_owned());
            }
        }
        match coerce(&leaf, load.columns[position].1) {
            Ok(value) => {
                load.stamps[position] = row.serial;
                row.values.push((position, value));
            }
            Err(Mismatch(reason)) => {
                let expected = load.columns[position].1.name();
                self.discard(table, event, column, &leaf, expected, reason);
            }
        }
    }

    /// Record a value that is not stored in its column.
    fn discard(&mut self, table: usize, event: &'a Event, column: &str, leaf: &Leaf<'a>, expected: &str, reason: &str) {
        let table_name = self.tables[table].name.clone();
        let d = self.table("discards", TableKind::Discards);
        let mut row = self.row(d, self.current);
        let value = match leaf {
            Leaf::Int(i) => i.to_string(),
            Leaf::Float(f) => f.to_string(),
            Leaf::Bool(b) => b.to_string(),
            Leaf::Str(s) => serde_json::to_string(s.as_ref()).unwrap_or_default(),
            Leaf::Json(raw) => raw.to_string(),
        };
        let texts = [
            ("message_id", Cow::Borrowed(event.message_id.as_str())),
            ("table_name", Cow::Owned(table_name)),
            ("column_name", Cow::Owned(column.to_owned())),
            ("value", Cow::Owned(value)),
            ("expected_type", Cow::Owned(expected.to_owned())),
            ("reason", Cow::Owned(reason.to_owned())),
        ];
        let key = (texts[1].1.clone(), texts[2].1.clone());
        for (column, value) in texts {
            self.fixed(d, &mut row, column, Value::Text(value));
        }
        self.fixed(d, &mut row, "received_at", Value::Time(event.received_at));
        self.fixed(d, &mut row, "uuid_ts", Value::Time(self.uuid_ts));
        // One discard per event, table and column (the key of the table).
        let load = &mut self.tables[d];
        let duplicate = load.rows.iter().any(|r| {
            let text = |c: usize| {
                r.values.iter().find_map(|(i, v)| match v {
                    Value::Text(t) if *i == c => Some(t.as_ref()),
                    _ => None,
                })
            };
            text(0) == Some(event.message_id.as_str()) && text(1) == Some(&key.0) && text(2) == Some(&key.1)
        });
        if !duplicate {
            load.rows.push(row);
        }
    }
}

/// The type a first value gives its column.
fn infer(leaf: &Leaf<'_>) -> ColumnType {
    match leaf {
        Leaf::Int(_) => ColumnType::Integer,
        Leaf::Float(_) => ColumnType::Float,
        Leaf::Bool(_) => ColumnType::Boolean,
        Leaf::Str(s) if as_time(s).is_some() => ColumnType::Timestamp,
        Leaf::Str(_) | Leaf::Json(_) => ColumnType::Text,
    }
}

/// A string that holds an ISO-8601 date and time (`2024-01-15T10:00:00Z`, with or without
/// fraction and offset; a space instead of `T` too).
pub(crate) fn as_time(text: &str) -> Option<jiff::Timestamp> {
    let b = text.as_bytes();
    let shaped = b.len() >= 16
        && b.len() <= 40
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[4] == b'-'
        && b[7] == b'-'
        && (b[10] == b'T' || b[10] == b' ')
        && b[13] == b':';
    if !shaped {
        return None;
    }
    if b[10] == b' ' {
        let t = format!("{}T{}", &text[..10], &text[11..]);
        return ferry_event::parse_time(&t);
    }
    ferry_event::parse_time(text)
}

/// A leaf as a value of `column_type`, when that loses nothing.
fn coerce<'a>(leaf: &Leaf<'a>, column_type: ColumnType) -> Result<Value<'a>, Mismatch> {
    use ColumnType as T;
    const MISMATCH: Mismatch = Mismatch("type_mismatch");
    Ok(match (leaf, column_type) {
        (Leaf::Int(i), T::Integer) => Value::Int(*i),
        (Leaf::Int(i), T::Float) => Value::Float(*i as f64),
        (Leaf::Float(f), T::Float) => Value::Float(*f),
        (Leaf::Bool(b), T::Boolean) => Value::Bool(*b),
        (Leaf::Int(i), T::Text) => Value::Text(Cow::Owned(i.to_string())),
        (Leaf::Float(f), T::Text) => Value::Text(Cow::Owned(f.to_string())),
        (Leaf::Bool(b), T::Text) => Value::Text(Cow::Borrowed(if *b { "true" } else { "false" })),
        (Leaf::Str(s), T::Text) => Value::Text(s.clone()),
        (Leaf::Json(raw), T::Text) => Value::Text(raw.clone()),
        (Leaf::Str(s), T::Timestamp) => Value::Time(as_time(s).ok_or(MISMATCH)?),
        (Leaf::Str(s), T::Integer) => Value::Int(s.trim().parse().map_err(|_| MISMATCH)?),
        (Leaf::Str(s), T::Float) => {
            let f: f64 = s.trim().parse().map_err(|_| MISMATCH)?;
            if !f.is_finite() {
                return Err(MISMATCH);
            }
            Value::Float(f)
        }
        (Leaf::Str(s), T::Boolean) => match s.as_ref() {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => return Err(MISMATCH),
        },
        _ => return Err(MISMATCH),
    })
}

#[cfg(test)]
mod tests;
