//! A validating JSON scanner: one pass over the text checks the grammar (RFC 8259) and the
//! nesting depth, and hands out the members of the objects its caller asks for, each value
//! as raw text borrowed from the input. Nothing is decoded except keys with escapes.
//!
//! It replaces a depth pre-scan plus serde_json's `RawValue` parse, which together walked
//! every byte twice; strings, most of a Segment event, are skipped 8 bytes at a time.
//!
//! What it accepts is what serde_json accepts: no trailing commas, no comments, no
//! control characters in strings, numbers in JSON's grammar, `\u` escapes of four hex
//! digits (surrogates are not paired up in values, as serde_json does not when it skips
//! a value). The text is a `&str`, so it is already valid UTF-8.

use std::borrow::Cow;
use std::fmt;

/// Why a text is not taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanError {
    /// Arrays and objects nest deeper than the limit.
    TooDeep,
    /// Not JSON (or not the shape asked for): what was expected, at which byte.
    Invalid { at: usize, expected: &'static str },
}

impl fmt::Display for ScanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScanError::TooDeep => f.write_str("nested too deep"),
            ScanError::Invalid { at, expected } => write!(f, "expected {expected} at byte {at}"),
        }
    }
}

impl std::error::Error for ScanError {}

/// A scanner over one JSON text. Call [`Scanner::object`], [`Scanner::array`] or
/// [`Scanner::value`] for the top-level value, then [`Scanner::finish`].
pub struct Scanner<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
    depth: usize,
    limit: usize,
    /// Open containers of the value being skipped (true: object); reused.
    stack: Vec<bool>,
}

impl<'a> Scanner<'a> {
    /// A scanner that refuses nesting deeper than `limit` (the top-level object or array
    /// is depth 1).
    pub fn new(text: &'a str, limit: usize) -> Scanner<'a> {
        Scanner { text, bytes: text.as_bytes(), pos: 0, depth: 0, limit, stack: Vec::new() }
    }

    fn invalid<T>(&self, expected: &'static str) -> Result<T, ScanError> {
        Err(ScanError::Invalid { at: self.pos, expected })
    }

    #[inline]
    fn skip_whitespace(&mut self) {
        // Compact JSON has none: one comparison to find none.
        while let Some(&byte) = self.bytes.get(self.pos)
            && byte <= b' '
            && matches!(byte, b' ' | b'\t' | b'\n' | b'\r')
        {
            self.pos += 1;
        }
    }

    /// The next byte that is not whitespace, not consumed.
    #[inline]
    pub fn peek(&mut self) -> Option<u8> {
        self.skip_whitespace();
        self.bytes.get(self.pos).copied()
    }

    /// Where the next value starts (after whitespace).
    #[inline]
    pub fn offset(&mut self) -> usize {
        self.skip_whitespace();
        self.pos
    }

    /// The text from `start` (an [`Scanner::offset`]) to where the scanner is.
    #[inline]
    pub fn since(&self, start: usize) -> &'a str {
        self.text.get(start..self.pos).unwrap_or_default()
    }

    /// Only whitespace may follow the value scanned.
    pub fn finish(&mut self) -> Result<(), ScanError> {
        self.skip_whitespace();
        if self.pos == self.bytes.len() { Ok(()) } else { self.invalid("the end of the text") }
    }

    #[inline]
    fn enter(&mut self) -> Result<(), ScanError> {
        self.depth += 1;
        if self.depth > self.limit { Err(ScanError::TooDeep) } else { Ok(()) }
    }

    #[inline]
    fn expect(&mut self, byte: u8, expected: &'static str) -> Result<(), ScanError> {
        self.skip_whitespace();
        if self.bytes.get(self.pos) != Some(&byte) {
            return self.invalid(expected);
        }
        self.pos += 1;
        Ok(())
    }

    /// An object. `member` is called with each key, the scanner just past the colon, and
    /// must consume the member's value ([`Scanner::value`], [`Scanner::object`] or
    /// [`Scanner::array`]).
    pub fn object(
        &mut self,
        mut member: impl FnMut(&mut Self, Cow<'a, str>) -> Result<(), ScanError>,
    ) -> Result<(), ScanError> {
        self.container(b'{', b'}', "an object", "`,` or `}`", |scanner| {
            let key = scanner.key()?;
            scanner.expect(b':', "`:`")?;
            member(scanner, key)
        })
    }

    /// An array. `element` is called for each element and must consume it.
    pub fn array(&mut self, element: impl FnMut(&mut Self) -> Result<(), ScanError>) -> Result<(), ScanError> {
        self.container(b'[', b']', "an array", "`,` or `]`", element)
    }

    /// `open`, then entries (`entry` consumes one) separated by commas, then `close`.
    fn container(
        &mut self,
        open: u8,
        close: u8,
        what: &'static str,
        between: &'static str,
        mut entry: impl FnMut(&mut Self) -> Result<(), ScanError>,
    ) -> Result<(), ScanError> {
        self.expect(open, what)?;
        self.enter()?;
        if self.peek() != Some(close) {
            loop {
                entry(self)?;
                match self.peek() {
                    Some(b',') => self.pos += 1,
                    Some(byte) if byte == close => break,
                    _ => return self.invalid(between),
                }
            }
        }
        self.leave();
        Ok(())
    }

    /// Past the closing bracket of a container, one level up.
    #[inline]
    fn leave(&mut self) {
        self.pos += 1;
        self.depth -= 1;
    }

    /// A key: the string's contents, decoded only when it has escapes.
    #[inline]
    fn key(&mut self) -> Result<Cow<'a, str>, ScanError> {
        let (raw, escaped) = self.key_text()?;
        let inner = &raw[1..raw.len() - 1];
        if !escaped {
            return Ok(Cow::Borrowed(inner));
        }
        // Rare: let serde_json decode the escapes. An escaped unpaired surrogate has no
        // text: such a key keeps its escapes as characters (`\ud800` stays the six
        // characters `\`, `u`, `d`, `8`, `0`, `0`), so it matches no name ferry looks for
        // and is stored as valid Unicode.
        Ok(Cow::Owned(serde_json::from_str::<String>(raw).unwrap_or_else(|_| inner.to_owned())))
    }

    /// A key's text with its quotes, checked, and whether it has escapes (inside a value
    /// being skipped nothing is decoded, as serde_json decodes nothing when it skips).
    #[inline(always)]
    fn key_text(&mut self) -> Result<(&'a str, bool), ScanError> {
        self.skip_whitespace();
        if self.bytes.get(self.pos) != Some(&b'"') {
            return self.invalid("a string key");
        }
        let start = self.pos;
        let escaped = self.string()?;
        Ok((&self.text[start..self.pos], escaped))
    }

    /// One whole value of any kind, checked; its text.
    pub fn value(&mut self) -> Result<&'a str, ScanError> {
        self.skip_whitespace();
        let start = self.pos;
        let base = self.stack.len();
        'value: loop {
            // A value starts here.
            self.skip_whitespace();
            match self.bytes.get(self.pos) {
                Some(b'"') => {
                    self.string()?;
                }
                Some(&open @ (b'{' | b'[')) => {
                    let object = open == b'{';
                    self.enter()?;
                    self.pos += 1;
                    if self.peek() == Some(if object { b'}' } else { b']' }) {
                        self.leave();
                    } else {
                        self.stack.push(object);
                        if object {
                            self.skip_name()?;
                        }
                        continue 'value;
                    }
                }
                Some(b't') => self.literal(b"true")?,
                Some(b'f') => self.literal(b"false")?,
                Some(b'n') => self.literal(b"null")?,
                Some(b'-' | b'0'..=b'9') => self.number()?,
                _ => return self.invalid("a value"),
            }
            // A value ended: close what it ends, or go on to the container's next value.
            loop {
                let Some(&object) = self.stack.last().filter(|_| self.stack.len() > base) else {
                    return Ok(&self.text[start..self.pos]);
                };
                match (self.peek(), object) {
                    (Some(b','), true) => {
                        self.pos += 1;
                        self.skip_name()?;
                        continue 'value;
                    }
                    (Some(b','), false) => {
                        self.pos += 1;
                        continue 'value;
                    }
                    (Some(b'}'), true) | (Some(b']'), false) => {
                        self.leave();
                        self.stack.pop();
                    }
                    (_, true) => return self.invalid("`,` or `}`"),
                    (_, false) => return self.invalid("`,` or `]`"),
                }
            }
        }
    }

    /// A member's key and colon inside a value being skipped.
    #[inline(always)]
    fn skip_name(&mut self) -> Result<(), ScanError> {
        self.key_text()?;
        self.expect(b':', "`:`")
    }

    fn literal(&mut self, word: &'static [u8]) -> Result<(), ScanError> {
        if self.bytes[self.pos..].starts_with(word) {
            self.pos += word.len();
            Ok(())
        } else {
            self.invalid("a value")
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while let Some(b'0'..=b'9') = self.bytes.get(self.pos) {
            self.pos += 1;
        }
        self.pos - start
    }

    fn number(&mut self) -> Result<(), ScanError> {
        if self.bytes.get(self.pos) == Some(&b'-') {
            self.pos += 1;
        }
        match self.bytes.get(self.pos) {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return self.invalid("a digit"),
        }
        if self.bytes.get(self.pos) == Some(&b'.') {
            self.pos += 1;
            if self.digits() == 0 {
                return self.invalid("a digit");
            }
        }
        if let Some(b'e' | b'E') = self.bytes.get(self.pos) {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.bytes.get(self.pos) {
                self.pos += 1;
            }
            if self.digits() == 0 {
                return self.invalid("a digit");
            }
        }
        Ok(())
    }

    /// A string, the scanner at its opening quote; returns whether it has escapes.
    #[inline(always)]
    fn string(&mut self) -> Result<bool, ScanError> {
        // Most strings have no escape: one inlined skip to the closing quote.
        self.pos = first_special(self.bytes, self.pos + 1);
        if self.bytes.get(self.pos) == Some(&b'"') {
            self.pos += 1;
            return Ok(false);
        }
        self.string_rest()
    }

    /// The rest of a string from a byte that is not a plain character: escapes, or the
    /// errors.
    #[inline(never)]
    fn string_rest(&mut self) -> Result<bool, ScanError> {
        loop {
            match self.bytes.get(self.pos) {
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(true);
                }
                Some(b'\\') => match self.bytes.get(self.pos + 1) {
                    Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => self.pos += 2,
                    Some(b'u') => {
                        let hex = self.bytes.get(self.pos + 2..self.pos + 6);
                        if !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)) {
                            return self.invalid("four hex digits after `\\u`");
                        }
                        self.pos += 6;
                    }
                    _ => return self.invalid("a valid escape"),
                },
                Some(0..0x20) => return self.invalid("no control character in a string"),
                // Not reached: `first_special` stops only at the bytes above.
                Some(_) => self.pos += 1,
                None => return self.invalid("the end of the string"),
            }
            self.pos = first_special(self.bytes, self.pos);
        }
    }
}

/// The bytes of `word` (little-endian) that are `"`, `\` or below 0x20, as their high
/// bits. Borrows can mark a byte above a marked one by mistake, never one below, so the
/// lowest mark is exact: `trailing_zeros() / 8` is the first such byte, and 0 means none.
#[inline]
fn special_bytes(word: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero_byte = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    let quote = zero_byte(word ^ (ONES * u64::from(b'"')));
    let backslash = zero_byte(word ^ (ONES * u64::from(b'\\')));
    let control = word.wrapping_sub(ONES * 0x20) & !word & HIGH;
    quote | backslash | control
}

/// The position of the first quote, backslash or control character in `bytes` from `pos`
/// on (the length if none), eight bytes at a time.
#[inline(always)]
fn first_special(bytes: &[u8], mut pos: usize) -> usize {
    while let Some(chunk) = bytes.get(pos..pos + 8) {
        let special = special_bytes(u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8])));
        if special != 0 {
            return pos + special.trailing_zeros() as usize / 8;
        }
        pos += 8;
    }
    while let Some(&byte) = bytes.get(pos) {
        if byte == b'"' || byte == b'\\' || byte < 0x20 {
            break;
        }
        pos += 1;
    }
    pos
}

/// Whether `text` needs escaping to go between JSON quotes (it has a quote, a backslash
/// or a control character).
pub fn needs_escape(text: &str) -> bool {
    first_special(text.as_bytes(), 0) < text.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Whether `text` is one JSON value (with whitespace around it) of any depth.
    fn is_json(text: &str) -> bool {
        let mut scanner = Scanner::new(text, usize::MAX);
        scanner.value().is_ok() && scanner.finish().is_ok()
    }

    fn accepts(text: &str) -> bool {
        is_json(text)
    }

    fn serde_accepts(text: &str) -> bool {
        serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok()
    }

    #[test]
    fn grammar_matches_serde_json() {
        let cases = [
            "{}",
            "[]",
            " { \"a\" : [1, -2.5e+3, 0, true, false, null, \"x\"] } ",
            "\"\\u00e9\\n\\\"\"",
            "\"\\ud800\"",
            "01",
            "1.",
            ".5",
            "-",
            "1e",
            "1e+",
            "-0.0E-0",
            "[1,]",
            "{\"a\":1,}",
            "{\"a\" 1}",
            "{1:2}",
            "[1 2]",
            "\"a\u{1}\"",
            "\"\\x\"",
            "\"\\u12\"",
            "\"\\u12g4\"",
            "tru",
            "truex",
            "nul",
            "[\"é\", \"日本\"]",
            "{\"a\":{\"b\":{\"c\":[[],{}]}}}",
            "[[[[]]]]]",
            "{\"a\":1}}",
            "",
            "   ",
            "{\"a\":\"bcdefghijklmnopqrstuvwxyz0123456789\\\\\"}",
            "{\"a\":\"unterminated",
            "[1,2",
            "{\"a\":",
        ];
        for case in cases {
            assert_eq!(accepts(case), serde_accepts(case), "{case:?}");
        }
    }

    #[test]
    fn keys_with_unpaired_surrogates_are_taken_as_serde_json_takes_values() {
        // serde_json skips them in values; a member key keeps its escapes as text.
        for text in [r#"{"a":{"\ud800":1}}"#, r#"{"\udaAeb":1}"#, r#"["\udc00"]"#] {
            assert!(is_json(text) && serde_accepts(text), "{text}");
        }
        let mut scanner = Scanner::new(r#"{"x\ud800":1,"\u0061":2}"#, 4);
        let mut keys = Vec::new();
        scanner
            .object(|s, key| {
                keys.push(key.into_owned());
                s.value().map(drop)
            })
            .unwrap();
        assert_eq!(keys, ["x\\ud800", "a"]);
    }

    #[test]
    fn members_and_raw_values() {
        let text = r#" {"a" : [1, {"b": "}"}] , "k\u0065y":"v\"w", "n": -1.5e3 } "#;
        let mut scanner = Scanner::new(text, 8);
        let mut members = Vec::new();
        scanner
            .object(|s, key| {
                members.push((key, s.value()?));
                Ok(())
            })
            .unwrap();
        scanner.finish().unwrap();
        assert_eq!(
            members,
            [(Cow::from("a"), r#"[1, {"b": "}"}]"#), (Cow::from("key"), r#""v\"w""#), (Cow::from("n"), "-1.5e3")]
        );
    }

    #[test]
    fn depth_is_bounded_without_recursion() {
        let deep = "[".repeat(100_000);
        assert_eq!(Scanner::new(&deep, 64).value(), Err(ScanError::TooDeep));
        let ok = format!("{}{}", "[".repeat(64), "]".repeat(64));
        assert!(Scanner::new(&ok, 64).value().is_ok());
        let over = format!("{}{}", "[".repeat(65), "]".repeat(65));
        assert_eq!(Scanner::new(&over, 64).value(), Err(ScanError::TooDeep));
        // Objects count as well, and so does the level an `object` call opens.
        let nested = format!("{{\"a\":{}1{}}}", "{\"b\":".repeat(3), "}".repeat(3));
        let mut scanner = Scanner::new(&nested, 3);
        let result = scanner.object(|s, _| s.value().map(drop));
        assert_eq!(result, Err(ScanError::TooDeep));
        let mut scanner = Scanner::new(&nested, 4);
        assert!(scanner.object(|s, _| s.value().map(drop)).is_ok());
        // Brackets inside strings do not count.
        assert!(Scanner::new(r#"["[[[[[[[[[[["]"#, 1).value().is_ok());
    }

    #[test]
    fn needs_escape_finds_every_special_byte_at_every_position() {
        for len in 0..20 {
            assert!(!needs_escape(&"é".repeat(len)));
            for at in 0..len {
                for special in ['"', '\\', '\u{0}', '\u{1f}', '\n'] {
                    let mut text: Vec<char> = "abcdefghijklmnopqrstuvwxyz".chars().take(len).collect();
                    text[at] = special;
                    let text: String = text.into_iter().collect();
                    assert!(needs_escape(&text), "{text:?}");
                }
            }
        }
    }

    #[test]
    fn the_first_special_byte_is_found_in_every_lane() {
        let first = |bytes: [u8; 8]| match special_bytes(u64::from_le_bytes(bytes)) {
            0 => None,
            mask => Some(mask.trailing_zeros() as usize / 8),
        };
        for lane in 0..8 {
            for byte in [b'"', b'\\', 0, 0x1f] {
                let mut bytes = [b'a'; 8];
                bytes[lane] = byte;
                assert_eq!(first(bytes), Some(lane), "{byte} in lane {lane}");
                // Whatever follows it, specials or bytes that borrow.
                for later in lane + 1..8 {
                    bytes[later] = [0u8, 1, b'"', b'\\', 0x21, 0x5d][later % 6];
                }
                assert_eq!(first(bytes), Some(lane), "{bytes:?}");
            }
            let mut bytes = [0x20u8, b'!', b'#', b'[', b']', 0x7f, 0x80, 0xff];
            bytes.rotate_left(lane);
            assert_eq!(first(bytes), None);
        }
    }

    /// JSON-like text: mostly valid, with the mistakes a broken client makes.
    fn jsonish() -> impl Strategy<Value = String> {
        let atom = prop_oneof![
            Just("null".to_owned()),
            Just("true".to_owned()),
            any::<i64>().prop_map(|n| n.to_string()),
            any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| format!("{f:e}")),
            "[ -~é\\\\\"\u{1}]{0,24}".prop_map(|s| format!("\"{s}\"")),
            "[-+.eE0-9]{1,6}",
            "\\\\u[0-9a-fA-Fg]{0,4}".prop_map(|s| format!("\"{s}\"")),
        ];
        let value = atom.prop_recursive(5, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(|v| format!("[{}]", v.join(","))),
                prop::collection::vec(("[a-z\\\\\"]{0,6}", inner), 0..6).prop_map(|m| {
                    let members: Vec<String> = m.into_iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
                    format!("{{{}}}", members.join(","))
                }),
            ]
        });
        // Sometimes cut or spliced.
        (value, any::<u16>(), prop_oneof![Just(""), Just(","), Just("]"), Just("}"), Just(" "), Just(":")]).prop_map(
            |(text, cut, splice)| {
                if cut % 4 == 0 {
                    let at = usize::from(cut) % (text.len() + 1);
                    let at = (0..=at).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
                    format!("{}{splice}{}", &text[..at], &text[at..])
                } else {
                    text
                }
            },
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]
        #[test]
        fn accepts_what_serde_json_accepts(text in jsonish()) {
            prop_assert_eq!(accepts(&text), serde_accepts(&text), "{:?}", text);
        }
    }
}
