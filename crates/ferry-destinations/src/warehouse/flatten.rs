//! Flattening a raw JSON object into warehouse leaves: nested objects become paths
//! (`{"address": {"street": "x"}}` → `address.street`), arrays stay one value (their
//! JSON text), `null`s are left out. Nothing is parsed into a DOM.

use std::borrow::Cow;

use ferry_wire::{Fields, Kind, kind};
use serde_json::value::RawValue;

/// One scalar found in an object, borrowed from the record.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Leaf<'a> {
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(Cow<'a, str>),
    /// An array, as JSON text.
    Json(&'a str),
}

/// Nested objects deeper than this are stored as JSON text instead of more columns; the
/// log already refuses events nested deeper than 64.
const MAX_FLATTEN_DEPTH: usize = 8;

/// Call `leaf(path, value)` for every non-null leaf of the object `raw`, in document
/// order. Malformed input (never stored by ferry) yields nothing past the fault.
pub(crate) fn flatten<'a>(raw: &'a str, leaf: &mut dyn FnMut(&[Cow<'a, str>], Leaf<'a>)) {
    let Ok(fields) = Fields::parse(raw) else { return };
    let mut path = Vec::with_capacity(4);
    walk(fields, &mut path, leaf);
}

fn walk<'a>(fields: Fields<'a>, path: &mut Vec<Cow<'a, str>>, leaf: &mut dyn FnMut(&[Cow<'a, str>], Leaf<'a>)) {
    for (key, value) in fields.members {
        path.push(key);
        match kind(value) {
            Kind::Object if path.len() < MAX_FLATTEN_DEPTH => {
                if let Ok(inner) = Fields::parse(value.get()) {
                    walk(inner, path, leaf);
                }
            }
            _ => {
                if let Some(value) = scalar(value) {
                    leaf(path, value);
                }
            }
        }
        path.pop();
    }
}

/// A raw value as a leaf; `None` for `null`.
pub(crate) fn scalar(raw: &RawValue) -> Option<Leaf<'_>> {
    let text = raw.get();
    match kind(raw) {
        Kind::Null => None,
        Kind::Bool => Some(Leaf::Bool(text == "true")),
        Kind::String => serde_json::from_str::<Cow<'_, str>>(text).ok().map(Leaf::Str),
        Kind::Array | Kind::Object => Some(Leaf::Json(text)),
        Kind::Number => Some(number(text)),
    }
}

/// A JSON number: an integer when it has no fraction or exponent and fits 64 bits.
fn number(text: &str) -> Leaf<'_> {
    if !text.contains(['.', 'e', 'E'])
        && let Ok(int) = text.parse::<i64>()
    {
        return Leaf::Int(int);
    }
    Leaf::Float(text.parse::<f64>().unwrap_or(f64::NAN))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(raw: &str) -> Vec<(String, Leaf<'_>)> {
        let mut out = Vec::new();
        flatten(raw, &mut |path, leaf| out.push((path.iter().map(|p| p.as_ref()).collect::<Vec<_>>().join("."), leaf)));
        out
    }

    #[test]
    fn nested_objects_become_paths_and_arrays_stay_json() {
        let raw = r#"{"a": 1, "b": {"c": "x", "d": {"e": true}}, "f": [1, {"g": 2}], "h": null, "i": 2.5, "j": 1e3, "k": 99999999999999999999}"#;
        assert_eq!(
            leaves(raw),
            vec![
                ("a".to_owned(), Leaf::Int(1)),
                ("b.c".to_owned(), Leaf::Str("x".into())),
                ("b.d.e".to_owned(), Leaf::Bool(true)),
                ("f".to_owned(), Leaf::Json(r#"[1, {"g": 2}]"#)),
                ("i".to_owned(), Leaf::Float(2.5)),
                ("j".to_owned(), Leaf::Float(1000.0)),
                ("k".to_owned(), Leaf::Float(1e20)),
            ]
        );
    }

    #[test]
    fn escaped_strings_are_decoded_and_deep_nesting_is_bounded() {
        assert_eq!(leaves(r#"{"a\"b": "c\nd"}"#), vec![("a\"b".to_owned(), Leaf::Str("c\nd".into()))]);
        let deep = format!("{}1{}", r#"{"x":"#.repeat(12), "}".repeat(12));
        let found = leaves(&deep);
        assert_eq!(found.len(), 1);
        assert!(matches!(found[0].1, Leaf::Json(_)), "{found:?}");
        assert!(leaves("not json").is_empty());
    }
}
