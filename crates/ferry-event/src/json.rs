//! Writing JSON objects byte by byte: ferry's own members, and members copied as scanned.
//! Every object this crate writes (the stored event, merged objects, rewritten
//! `properties`, quarantine records) goes through [`Writer`].

use std::borrow::Cow;

use crate::time::{Time, write_time};

/// Writes `"key":value` members, commas between them.
pub(crate) struct Writer<'o> {
    out: &'o mut Vec<u8>,
    first: bool,
}

/// An object of the members `write` writes, in a buffer of `capacity` bytes.
#[inline]
pub(crate) fn object(capacity: usize, write: impl FnOnce(&mut Writer<'_>)) -> Vec<u8> {
    let mut out = Vec::with_capacity(capacity);
    out.push(b'{');
    write(&mut Writer { out: &mut out, first: true });
    out.push(b'}');
    out
}

/// [`object`] as text (a `Cow` to hand back beside borrowed ones).
pub(crate) fn object_text<'a>(capacity: usize, write: impl FnOnce(&mut Writer<'_>)) -> Cow<'a, str> {
    Cow::Owned(String::from_utf8(object(capacity, write)).unwrap_or_default())
}

impl Writer<'_> {
    /// A key that needs no escaping: one of ferry's own names, or a key scanned without
    /// escapes (a JSON string without escapes has no quote, backslash or control character).
    fn key(&mut self, key: &str) {
        self.separate();
        write_quoted(self.out, key);
        self.out.push(b':');
    }

    /// A comma before every member but the first.
    fn separate(&mut self) {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
    }

    pub(crate) fn string(&mut self, key: &str, value: &str) {
        self.key(key);
        write_json_string(self.out, value);
    }

    /// A string value that needs no escaping: one of ferry's own (a call type, a channel,
    /// a formatted time).
    pub(crate) fn plain(&mut self, key: &str, value: &str) {
        debug_assert!(!ferry_wire::needs_escape(value));
        self.key(key);
        write_quoted(self.out, value);
    }

    pub(crate) fn raw(&mut self, key: &str, raw_json: &str) {
        self.key(key);
        self.out.extend_from_slice(raw_json.as_bytes());
    }

    /// A member as scanned: a key decoded from escapes is escaped again.
    #[expect(clippy::ptr_arg, reason = "the variant tells whether the key was sent with escapes")]
    pub(crate) fn member(&mut self, key: &Cow<'_, str>, raw_json: &str) {
        match key {
            Cow::Borrowed(key) => self.key(key),
            Cow::Owned(key) => {
                self.separate();
                write_json_string(self.out, key);
                self.out.push(b':');
            }
        }
        self.out.extend_from_slice(raw_json.as_bytes());
    }

    /// The raw object `object` with `"ip": ip` added as its first member.
    pub(crate) fn object_with_ip(&mut self, key: &str, object: &str, ip: &str) {
        self.key(key);
        let rest = object.trim_start().strip_prefix('{').unwrap_or("}");
        self.out.extend_from_slice(b"{\"ip\":");
        write_json_string(self.out, ip);
        if !rest.trim_start().starts_with('}') {
            self.out.push(b',');
        }
        self.out.extend_from_slice(rest.as_bytes());
    }

    pub(crate) fn time(&mut self, key: &str, time: Time<'_>) {
        self.key(key);
        self.out.push(b'"');
        match time.stored {
            Some(text) => self.out.extend_from_slice(text.as_bytes()),
            None => write_time(self.out, time.at),
        }
        self.out.push(b'"');
    }
}

/// `text` between quotes, as it is: only for text that needs no escaping.
fn write_quoted(out: &mut Vec<u8>, text: &str) {
    out.push(b'"');
    out.extend_from_slice(text.as_bytes());
    out.push(b'"');
}

fn write_json_string(out: &mut Vec<u8>, value: &str) {
    // Most ids need no escaping: copy them between quotes.
    if !ferry_wire::needs_escape(value) {
        return write_quoted(out, value);
    }
    // Serializing a &str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, value);
}
