//! Flattening a raw JSON object into warehouse leaves: nested objects become paths
//! (`{"address": {"street": "x"}}` → `address.street`), arrays stay one value (their
//! JSON text, compact), `null`s are left out. One pass of serde_json's parser, with no
//! DOM: strings are borrowed from the record unless they hold escapes.

use std::borrow::Cow;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// One scalar found in an object, borrowed from the record where possible.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Leaf<'a> {
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(Cow<'a, str>),
    /// An array (or an object nested too deep), as compact JSON text.
    Json(Cow<'a, str>),
}

/// Nested objects deeper than this are stored as JSON text instead of more columns; the
/// log already refuses events nested deeper than 64.
const MAX_FLATTEN_DEPTH: usize = 8;

type Sink<'s, 'a> = dyn FnMut(&[Cow<'a, str>], Leaf<'a>) + 's;

/// Call `leaf(path, value)` for every non-null leaf of the object `raw`, in document
/// order. Malformed input (never stored by ferry) yields nothing past the fault.
pub(crate) fn flatten<'a>(raw: &'a str, leaf: &mut Sink<'_, 'a>) {
    let mut path = Vec::with_capacity(4);
    let mut de = serde_json::Deserializer::from_str(raw);
    let _ = de.deserialize_map(Object { path: &mut path, leaf });
}

/// An object at `path`: each member is visited with the member's key pushed.
struct Object<'p, 's, 'a> {
    path: &'p mut Vec<Cow<'a, str>>,
    leaf: &'p mut Sink<'s, 'a>,
}

impl<'de: 'a, 'a> Visitor<'de> for Object<'_, '_, 'a> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<(), M::Error> {
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            self.path.push(key);
            map.next_value_seed(Member { path: &mut *self.path, leaf: &mut *self.leaf })?;
            self.path.pop();
        }
        Ok(())
    }
}

/// One member's value.
struct Member<'p, 's, 'a> {
    path: &'p mut Vec<Cow<'a, str>>,
    leaf: &'p mut Sink<'s, 'a>,
}

impl<'de: 'a, 'a> DeserializeSeed<'de> for Member<'_, '_, 'a> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de: 'a, 'a> Visitor<'de> for Member<'_, '_, 'a> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<(), E> {
        (self.leaf)(self.path, Leaf::Bool(v));
        Ok(())
    }

    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        (self.leaf)(self.path, Leaf::Int(v));
        Ok(())
    }

    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        let leaf = i64::try_from(v).map_or(Leaf::Float(v as f64), Leaf::Int);
        (self.leaf)(self.path, leaf);
        Ok(())
    }

    fn visit_f64<E>(self, v: f64) -> Result<(), E> {
        (self.leaf)(self.path, Leaf::Float(v));
        Ok(())
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<(), E> {
        (self.leaf)(self.path, Leaf::Str(Cow::Borrowed(v)));
        Ok(())
    }

    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        (self.leaf)(self.path, Leaf::Str(Cow::Owned(v.to_owned())));
        Ok(())
    }

    fn visit_string<E>(self, v: String) -> Result<(), E> {
        (self.leaf)(self.path, Leaf::Str(Cow::Owned(v)));
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_none<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<(), M::Error> {
        if self.path.len() < MAX_FLATTEN_DEPTH {
            return Object { path: self.path, leaf: self.leaf }.visit_map(map);
        }
        // Too deep for more columns: the rest of the object as one JSON value.
        let mut object = serde_json::Map::new();
        while let Some((key, value)) = map.next_entry::<String, serde_json::Value>()? {
            object.insert(key, value);
        }
        let text = serde_json::Value::Object(object).to_string();
        (self.leaf)(self.path, Leaf::Json(Cow::Owned(text)));
        Ok(())
    }

    fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<(), S::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<serde_json::Value>()? {
            items.push(item);
        }
        let text = serde_json::Value::Array(items).to_string();
        (self.leaf)(self.path, Leaf::Json(Cow::Owned(text)));
        Ok(())
    }
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
        let raw = r#"{"a": 1, "b": {"c": "x", "d": {"e": true}}, "f": [1, {"g": 2}], "h": null, "i": 2.5, "j": 1e3, "k": 99999999999999999999, "l": 18446744073709551615, "m": -7}"#;
        assert_eq!(
            leaves(raw),
            vec![
                ("a".to_owned(), Leaf::Int(1)),
                ("b.c".to_owned(), Leaf::Str("x".into())),
                ("b.d.e".to_owned(), Leaf::Bool(true)),
                ("f".to_owned(), Leaf::Json(r#"[1,{"g":2}]"#.into())),
                ("i".to_owned(), Leaf::Float(2.5)),
                ("j".to_owned(), Leaf::Float(1000.0)),
                ("k".to_owned(), Leaf::Float(1e20)),
                ("l".to_owned(), Leaf::Float(18446744073709551615.0)),
                ("m".to_owned(), Leaf::Int(-7)),
            ]
        );
    }

    #[test]
    fn strings_are_borrowed_unless_escaped_and_deep_nesting_is_bounded() {
        let found = leaves(r#"{"plain": "abc", "a\"b": "c\nd"}"#);
        assert!(matches!(&found[0].1, Leaf::Str(Cow::Borrowed("abc"))), "{found:?}");
        assert_eq!(found[1], ("a\"b".to_owned(), Leaf::Str("c\nd".into())));
        let deep = format!("{}1{}", r#"{"x":"#.repeat(12), "}".repeat(12));
        let found = leaves(&deep);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0], ("x.x.x.x.x.x.x.x".to_owned(), Leaf::Json(r#"{"x":{"x":{"x":{"x":1}}}}"#.into())));
        assert!(leaves("not json").is_empty());
    }
}
