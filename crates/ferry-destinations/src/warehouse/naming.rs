//! Warehouse names: Segment's snake_case, table and column names made safe, bounded and
//! out of the way of the reserved columns.
//!
//! [`snake_case`] follows `segmentio/go-snakecase`, which Segment's warehouses use: ASCII
//! letters and digits are kept, everything else separates words (runs collapse, ends are
//! dropped, non-ASCII bytes vanish); a capital after a lowercase letter starts a word, a
//! run of capitals stays with the lowercase letters after it (`CStringRef` →
//! `cstring_ref`), digits stay in their word, and a name that is already lowercase words
//! joined by single underscores is unchanged.

use std::borrow::Cow;

/// PostgreSQL keeps at most 63 bytes of an identifier and silently cuts the rest; names
/// are bounded here first, so two long names never become one by accident.
pub(crate) const MAX_IDENTIFIER_BYTES: usize = 63;

/// Segment's snake_case of a name (see the module doc). May be empty.
pub(crate) fn snake_case(name: &str) -> Cow<'_, str> {
    let bytes = name.as_bytes();
    let lower = |b: u8| b.is_ascii_lowercase();
    let digit = |b: u8| b.is_ascii_digit();
    let upper = |b: u8| b.is_ascii_uppercase();

    // The longest prefix that needs no change: lowercase letters, digits, and underscores
    // that are neither first nor followed by anything but a lowercase letter or a digit.
    let mut at = 0;
    let mut seen_lower = false;
    let mut seen_underscore = false;
    let mut lower_since_underscore = false;
    while at < bytes.len() {
        let b = bytes[at];
        if lower(b) {
            seen_lower = true;
            lower_since_underscore |= seen_underscore;
        } else if digit(b) {
        } else if b == b'_' && at > 0 && bytes.get(at + 1).is_some_and(|&n| lower(n) || digit(n)) {
            seen_underscore = true;
            lower_since_underscore = false;
        } else {
            break;
        }
        at += 1;
    }
    if at == bytes.len() {
        return Cow::Borrowed(name);
    }

    let mut out = String::with_capacity(name.len() + 4);
    out.push_str(&name[..at]);
    let word = |out: &mut String, at: &mut usize| {
        while *at < bytes.len() && (upper(bytes[*at]) || digit(bytes[*at])) {
            out.push(bytes[*at].to_ascii_lowercase() as char);
            *at += 1;
        }
        while *at < bytes.len() && (lower(bytes[*at]) || digit(bytes[*at])) {
            out.push(bytes[*at] as char);
            *at += 1;
        }
    };
    // A capital right after a prefix without lowercase letters (in its last underscore
    // part) continues that word: `2FA` → `2fa`, `_5TEst` → `5test`.
    if upper(bytes[at]) && (!seen_lower || (seen_underscore && !lower_since_underscore)) {
        word(&mut out, &mut at);
    }
    while at < bytes.len() {
        if !bytes[at].is_ascii_alphanumeric() {
            at += 1;
            continue;
        }
        if !out.is_empty() {
            out.push('_');
        }
        word(&mut out, &mut at);
    }
    Cow::Owned(out)
}

/// Bound a name to [`MAX_IDENTIFIER_BYTES`]: a longer one keeps its start and ends in `_`
/// and 8 hex digits of a hash of the whole name, so distinct long names stay distinct.
pub(crate) fn bounded(name: String) -> String {
    if name.len() <= MAX_IDENTIFIER_BYTES {
        return name;
    }
    let hash = xxhash_rust::xxh3::xxh3_64(name.as_bytes());
    // Names here are ASCII (snake_case output), so any byte index is a char boundary.
    let keep = MAX_IDENTIFIER_BYTES - 9;
    format!("{}_{:08x}", &name[..keep], hash as u32)
}

/// A name that may not start with a digit (tables, schemas): `_` in front, as Segment's
/// warehouses do (`101 Account Update` → `_101_account_update`).
fn not_digit_first(name: String) -> String {
    match name.as_bytes().first() {
        Some(b) if b.is_ascii_digit() => format!("_{name}"),
        _ => name,
    }
}

/// The tables ferry writes for every source; an event whose slug is one of these gets a
/// `_` in front of its table name.
pub(crate) const RESERVED_TABLES: &[&str] =
    &["identifies", "users", "groups", "pages", "screens", "aliases", "tracks", "accounts", "discards"];

/// The `event` column value and the event table of a `track` event name: its snake_case
/// (`Order Completed` → `order_completed`). A name with no letter or digit gets
/// `unnamed_event`.
pub(crate) fn event_slug(event: &str) -> String {
    let slug = snake_case(event);
    if slug.is_empty() { "unnamed_event".to_owned() } else { bounded(slug.into_owned()) }
}

/// The table of an event slug: never a reserved table, never digit-first.
pub(crate) fn event_table(slug: &str) -> String {
    let name = if RESERVED_TABLES.contains(&slug) { format!("_{slug}") } else { slug.to_owned() };
    bounded(not_digit_first(name))
}

/// The schema (PostgreSQL) or table prefix (SQLite) of a source id.
pub(crate) fn namespace(source_id: &str) -> String {
    let slug = snake_case(source_id);
    let slug = if slug.is_empty() { "unnamed_source".to_owned() } else { slug.into_owned() };
    // PostgreSQL refuses to create schemas named pg_*.
    let slug = if slug.starts_with("pg_") { format!("_{slug}") } else { slug };
    bounded(not_digit_first(slug))
}

/// The column of a property or trait path (`["address", "street"]` → `address_street`):
/// each part snake_cased, joined with `_`; a name that collides with one of the table's
/// `reserved` columns, or with the `context_` columns, gets a `_` in front. `None` when
/// no part has a letter or digit.
#[cfg(test)]
pub(crate) fn property_column(path: &[impl AsRef<str>], reserved: &[&str]) -> Option<String> {
    let mut out = String::new();
    property_column_into(path, reserved, &mut out).then_some(out)
}

/// [`property_column`] into `out` (cleared first), so a planner can reuse one buffer;
/// `false` for no name.
pub(crate) fn property_column_into(path: &[impl AsRef<str>], reserved: &[&str], out: &mut String) -> bool {
    out.clear();
    join_into(path, out);
    if out.is_empty() {
        return false;
    }
    if reserved.contains(&out.as_str()) || out.starts_with("context_") {
        out.insert(0, '_');
    }
    bound_in_place(out);
    true
}

/// The column of a context path: `context_` and the joined snake_case parts.
#[cfg(test)]
pub(crate) fn context_column(path: &[impl AsRef<str>]) -> Option<String> {
    let mut out = String::new();
    context_column_into(path, &mut out).then_some(out)
}

/// [`context_column`] appended to `out`; `false` (and `out` as it was) for no name.
pub(crate) fn context_column_into(path: &[impl AsRef<str>], out: &mut String) -> bool {
    let start = out.len();
    out.push_str("context_");
    let before = out.len();
    join_into(path, out);
    if out.len() == before {
        out.truncate(start);
        return false;
    }
    if out.len() - start > MAX_IDENTIFIER_BYTES {
        let name = bounded(out[start..].to_owned());
        out.truncate(start);
        out.push_str(&name);
    }
    true
}

fn bound_in_place(out: &mut String) {
    if out.len() > MAX_IDENTIFIER_BYTES {
        *out = bounded(std::mem::take(out));
    }
}

fn join_into(path: &[impl AsRef<str>], name: &mut String) {
    let start = name.len();
    for part in path {
        let part = snake_case(part.as_ref());
        if part.is_empty() {
            continue;
        }
        if name.len() > start {
            name.push('_');
        }
        name.push_str(&part);
    }
}

/// An identifier quoted for SQL (PostgreSQL and SQLite): in double quotes, inner quotes
/// doubled. Names made here are `[a-z0-9_]` already; quoting is the second fence.
pub(crate) fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snake_case_matches_segment_on_every_vector() {
        // SEGMENT-SPEC.md §6.3 and go-snakecase's own test list.
        let vectors = [
            ("sampleText", "sample_text"),
            ("sample text", "sample_text"),
            ("sample-text", "sample_text"),
            ("sample_text", "sample_text"),
            ("sample___text", "sample_text"),
            ("inviteYourCustomersAddInvites", "invite_your_customers_add_invites"),
            ("sample 2 Text", "sample_2_text"),
            ("   sample   2    Text   ", "sample_2_text"),
            ("   $#$sample   2    Text   ", "sample_2_text"),
            ("SAMPLE 2 TEXT", "sample_2_text"),
            ("___$$Base64Encode", "base64_encode"),
            ("FOO:BAR$BAZ", "foo_bar_baz"),
            ("FOO#BAR#BAZ", "foo_bar_baz"),
            ("something.com", "something_com"),
            ("$something%", "something"),
            ("2FA Enabled", "2fa_enabled"),
            ("f_pX9", "f_p_x9"),
            ("_5TEst", "5test"),
            ("•¶§ƒ˚foo˙∆˚¬", "foo"),
            ("CStringRef", "cstring_ref"),
            ("Order Completed", "order_completed"),
            ("Signed Up", "signed_up"),
            ("Completed Order", "completed_order"),
        ];
        for (input, expected) in vectors {
            assert_eq!(snake_case(input), expected, "snake_case({input:?})");
        }
    }

    #[test]
    fn unchanged_names_are_borrowed() {
        assert!(matches!(snake_case("already_snake_2"), Cow::Borrowed(_)));
        assert_eq!(snake_case(""), "");
        assert_eq!(snake_case("$$$"), "");
    }

    #[test]
    fn tables_avoid_reserved_names_digits_and_injection() {
        assert_eq!(event_table(&event_slug("Order Completed")), "order_completed");
        assert_eq!(event_table(&event_slug("101 Account Update")), "_101_account_update");
        assert_eq!(event_table(&event_slug("Tracks")), "_tracks");
        assert_eq!(event_table(&event_slug("users")), "_users");
        assert_eq!(event_table(&event_slug("\"; drop table users; --")), "drop_table_users");
        assert_eq!(event_table(&event_slug("🎉")), "unnamed_event");
        assert_eq!(namespace("pg_catalog"), "_pg_catalog");
        assert_eq!(namespace("web"), "web");
        assert_eq!(namespace("wk_0123abcd"), "wk_0123abcd");
    }

    #[test]
    fn columns_flatten_and_step_aside_for_reserved_ones() {
        let reserved = ["id", "user_id", "received_at"];
        assert_eq!(property_column(&["address", "street"], &reserved).unwrap(), "address_street");
        assert_eq!(property_column(&["userId"], &reserved).unwrap(), "_user_id");
        assert_eq!(property_column(&["id"], &reserved).unwrap(), "_id");
        assert_eq!(property_column(&["context_ip"], &reserved).unwrap(), "_context_ip");
        assert_eq!(property_column(&["$$$"], &reserved), None);
        assert_eq!(context_column(&["app", "version"]).unwrap(), "context_app_version");
        assert_eq!(context_column(&["userAgentData", "brands"]).unwrap(), "context_user_agent_data_brands");
    }

    #[test]
    fn long_names_are_bounded_and_stay_distinct() {
        let a = property_column(&[&"a".repeat(80)], &[]).unwrap();
        let b = property_column(&[&format!("{}b", "a".repeat(79))], &[]).unwrap();
        assert_eq!(a.len(), MAX_IDENTIFIER_BYTES);
        assert_eq!(b.len(), MAX_IDENTIFIER_BYTES);
        assert_ne!(a, b);
        assert_eq!(quote("a\"b"), "\"a\"\"b\"");
    }
}
