//! Writing JSON text and decimal numbers by hand.
//!
//! The browser SDK must stay small: `serde_json` costs about 25 KB gzip and `format!` pulls in
//! the formatting machinery (several KB). These few helpers are all the SDK needs to write its
//! event and batch bodies.

use alloc::string::String;

/// Appends `n` in decimal.
pub fn push_decimal(out: &mut String, n: u64) {
    push_padded(out, n, 1);
}

/// Appends `n` in decimal, left-padded with zeros to at least `width` digits.
pub fn push_padded(out: &mut String, mut n: u64, width: usize) {
    let mut digits = [0u8; 20];
    let mut len = 0;
    while n > 0 || len < width.clamp(1, 20) {
        digits[len] = b'0' + (n % 10) as u8;
        n /= 10;
        len += 1;
        if len == digits.len() {
            break;
        }
    }
    // `& 0x7f`: the digits are ASCII, and saying so lets each push be a byte push (without it,
    // `String::push`'s UTF-8 encoder ships in the SDK's wasm).
    for &d in digits[..len].iter().rev() {
        out.push(char::from(d & 0x7f));
    }
}

/// Appends a signed integer in decimal.
pub fn push_integer(out: &mut String, n: i64) {
    if n < 0 {
        out.push('-');
    }
    push_decimal(out, n.unsigned_abs());
}

/// Appends `s` as a JSON string literal.
pub fn push_json_string(out: &mut String, s: &str) {
    out.reserve(s.len() + 2);
    out.push('"');
    // Runs of bytes that need no escape are copied as they are (every byte escaped is ASCII, so
    // the runs end on char boundaries): no char decoding or encoding.
    let mut run = 0;
    for (i, b) in s.bytes().enumerate() {
        let escape = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f => "\\u00",
            _ => continue,
        };
        out.push_str(s.get(run..i).unwrap_or_default());
        out.push_str(escape);
        if escape.len() == 4 {
            out.push(if b < 0x10 { '0' } else { '1' });
            out.push(super::encode::hex_digit(b));
        }
        run = i + 1;
    }
    out.push_str(s.get(run..).unwrap_or_default());
    out.push('"');
}

/// `s` as a JSON string literal.
pub fn json_string(s: &str) -> String {
    let mut out = String::new();
    push_json_string(&mut out, s);
    out
}

/// Writes a JSON object member by member, for bodies assembled from already-serialised parts.
#[derive(Debug)]
pub struct ObjectWriter {
    out: String,
    /// 1 when writing a whole object (after its `{`), 0 when writing bare members.
    start: usize,
}

impl Default for ObjectWriter {
    fn default() -> Self {
        Self::with_capacity(16)
    }
}

impl ObjectWriter {
    /// Starts an object, reserving room for about `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> Self {
        let mut out = String::with_capacity(capacity);
        out.push('{');
        Self { out, start: 1 }
    }

    /// Writes bare members (`"a":1,"b":2`, no braces), to be embedded in another object.
    pub fn members_only() -> Self {
        Self {
            out: String::with_capacity(64),
            start: 0,
        }
    }

    fn key(&mut self, key: &str) {
        if self.out.len() > self.start {
            self.out.push(',');
        }
        push_json_string(&mut self.out, key);
        self.out.push(':');
    }

    /// Adds a string member.
    pub fn string(mut self, key: &str, value: &str) -> Self {
        self.key(key);
        push_json_string(&mut self.out, value);
        self
    }

    /// Adds a string member when `value` is present.
    pub fn string_opt(self, key: &str, value: Option<&str>) -> Self {
        match value {
            Some(v) => self.string(key, v),
            None => self,
        }
    }

    /// Adds a member whose value is already JSON text (trusted to be valid).
    pub fn raw(mut self, key: &str, json: &str) -> Self {
        self.key(key);
        self.out.push_str(json);
        self
    }

    /// Adds members that are already JSON text (`"a":1,"b":2`, trusted to be valid).
    pub fn members(mut self, members: &str) -> Self {
        if self.out.len() > self.start {
            self.out.push(',');
        }
        self.out.push_str(members);
        self
    }

    /// Adds an integer member.
    pub fn integer(mut self, key: &str, value: i64) -> Self {
        self.key(key);
        push_integer(&mut self.out, value);
        self
    }

    /// Closes the object (bare members stay as they are).
    pub fn finish(mut self) -> String {
        if self.start == 1 {
            self.out.push('}');
        }
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn writes_decimals_with_padding_and_sign() {
        let mut s = String::new();
        push_decimal(&mut s, 0);
        s.push(' ');
        push_padded(&mut s, 7, 3);
        s.push(' ');
        push_integer(&mut s, -1_700_000_000_000);
        s.push(' ');
        push_decimal(&mut s, u64::MAX);
        assert_eq!(s, "0 007 -1700000000000 18446744073709551615");
    }

    #[test]
    fn object_writer_builds_valid_json() {
        let text = ObjectWriter::with_capacity(8)
            .string("a", "x\"y")
            .string_opt("b", None)
            .raw("c", "[1,2]")
            .integer("d", -3)
            .finish();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v, serde_json::json!({"a": "x\"y", "c": [1, 2], "d": -3}));
        assert_eq!(ObjectWriter::with_capacity(0).finish(), "{}");
        let members = ObjectWriter::members_only()
            .string("a", "b")
            .integer("c", 1)
            .finish();
        assert_eq!(members, r#""a":"b","c":1"#);
    }

    /// The char-by-char writer `push_json_string` replaced: the output must not change.
    fn json_string_by_chars(s: &str) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = String::from('"');
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                c if (c as u32) < 0x20 => {
                    out.push_str("\\u00");
                    out.push(char::from(HEX[(c as usize) >> 4]));
                    out.push(char::from(HEX[(c as usize) & 0xf]));
                }
                c => out.push(c),
            }
        }
        out.push('"');
        out
    }

    #[test]
    fn json_string_escapes_every_control_char() {
        for c in (0u8..0x80).map(char::from).chain(['é', '\u{2028}', '😀']) {
            let s = alloc::format!("a{c}b{c}");
            assert_eq!(json_string(&s), json_string_by_chars(&s), "{c:?}");
        }
    }

    proptest! {
        #[test]
        fn json_string_same_as_by_chars(s in "\\PC*|[\\x00-\\x1f\"\\\\é😀a]*") {
            prop_assert_eq!(json_string(&s), json_string_by_chars(&s));
        }

        #[test]
        fn json_string_round_trips(s in "\\PC*|[\\x00-\\x1f\"\\\\]*") {
            let back: String = serde_json::from_str(&json_string(&s)).unwrap();
            prop_assert_eq!(back, s);
        }

        #[test]
        fn decimals_match_display(n: i64) {
            let mut s = String::new();
            push_integer(&mut s, n);
            prop_assert_eq!(s, n.to_string());
        }
    }
}
