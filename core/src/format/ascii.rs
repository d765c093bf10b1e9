//! Splitting at an ASCII byte and reading decimal integers, for the browser SDK's stored queue and
//! headers. Same results as `str::split(char)` and `str::parse` for these cases, without core's
//! pattern searchers (`memchr`, char decoding) and integer parser, which cost the shipped wasm
//! about 1.5 KB.

/// `s.split(sep as char)` for an ASCII `sep`.
pub fn split_ascii(s: &str, sep: u8) -> SplitAscii<'_> {
    SplitAscii { rest: Some(s), sep }
}

/// Iterator of [`split_ascii`].
#[derive(Debug, Clone)]
pub struct SplitAscii<'a> {
    rest: Option<&'a str>,
    sep: u8,
}

impl<'a> SplitAscii<'a> {
    /// What the iterator has not returned yet (`None` once it is exhausted): after `n - 1` calls
    /// to `next`, the `n`th item of `splitn(n, sep)`.
    pub fn remainder(self) -> Option<&'a str> {
        self.rest
    }
}

impl<'a> Iterator for SplitAscii<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let s = self.rest?;
        match s.bytes().position(|b| b == self.sep) {
            // `sep` is ASCII, so both sides of it are on char boundaries.
            Some(i) => {
                self.rest = s.get(i + 1..);
                s.get(..i)
            }
            None => {
                self.rest = None;
                Some(s)
            }
        }
    }
}

/// `s.trim()` (Unicode `White_Space` at both ends), in one forward pass: core's `trim` also
/// decodes UTF-8 backwards and goes through its generic pattern matcher, which costs the shipped
/// wasm about 300 bytes.
pub fn trim(s: &str) -> &str {
    let mut start = None;
    let mut end = 0;
    for (i, c) in s.char_indices() {
        // `char::is_whitespace` (Unicode `White_Space`), without its lookup table.
        if !matches!(c, '\t'..='\r' | ' ' | '\u{85}' | '\u{a0}' | '\u{1680}' | '\u{2000}'..='\u{200a}' | '\u{2028}' | '\u{2029}' | '\u{202f}' | '\u{205f}' | '\u{3000}')
        {
            start.get_or_insert(i);
            end = i + c.len_utf8();
        }
    }
    s.get(start.unwrap_or(0)..end).unwrap_or_default()
}

/// `s.parse::<u64>()`: an optional `+`, then one or more ASCII digits, no overflow.
pub fn parse_u64(s: &str) -> Option<u64> {
    let digits = match s.as_bytes() {
        [b'+', rest @ ..] => rest,
        all => all,
    };
    if digits.is_empty() {
        return None;
    }
    let mut n: u64 = 0;
    for &b in digits {
        if !b.is_ascii_digit() {
            return None;
        }
        // `n * 10 + d` when it fits (not `checked_mul`: a 64-bit overflowing multiply is a
        // 128-bit one on wasm32, `__multi3`).
        let d = u64::from(b - b'0');
        if n > (u64::MAX - d) / 10 {
            return None;
        }
        n = n * 10 + d;
    }
    Some(n)
}

/// `s.parse::<i64>()`: an optional `+` or `-`, then one or more ASCII digits, in range.
pub fn parse_i64(s: &str) -> Option<i64> {
    match s.as_bytes() {
        [b'-', rest @ ..] if rest.first() != Some(&b'+') => {
            let n = parse_u64(s.get(1..)?)?;
            0i64.checked_sub_unsigned(n)
        }
        _ => i64::try_from(parse_u64(s)?).ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_like_core() {
        for s in [
            "",
            "+",
            "-",
            "0",
            "+0",
            "-0",
            "-+1",
            "+-1",
            "++1",
            "12",
            " 1",
            "1 ",
            "1a",
            "00042",
            "18446744073709551615",
            "18446744073709551616",
            "9223372036854775807",
            "9223372036854775808",
            "-9223372036854775808",
            "-9223372036854775809",
            "٣",
        ] {
            assert_eq!(parse_u64(s), s.parse::<u64>().ok(), "{s:?}");
            assert_eq!(parse_i64(s), s.parse::<i64>().ok(), "{s:?}");
        }
    }

    #[test]
    fn trims_every_char_like_core() {
        for c in char::MIN..=char::MAX {
            let s = alloc::format!("{c}x{c}{c}");
            assert_eq!(trim(&s), s.trim(), "{c:?}");
        }
    }

    proptest! {
        #[test]
        fn split_matches_core(s in "[a-c\\t\\né-]{0,12}", sep in prop::sample::select(vec![b'\t', b'\n', b'-'])) {
            let ours: Vec<&str> = split_ascii(&s, sep).collect();
            let core: Vec<&str> = s.split(char::from(sep)).collect();
            prop_assert_eq!(ours, core);
            let mut it = split_ascii(&s, sep);
            let (a, b, c) = (it.next(), it.next(), it.next());
            let ours4 = [a, b, c, it.remainder()].into_iter().flatten().collect::<Vec<_>>();
            let core4: Vec<&str> = s.splitn(4, char::from(sep)).collect();
            prop_assert_eq!(ours4, core4);
        }

        #[test]
        fn trim_matches_core(s in "[a \\t\\n\\r\u{b}\u{c}\u{85}\u{a0}\u{1680}\u{2000}\u{2028}\u{2029}\u{202f}\u{205f}\u{3000}\u{feff}\u{180e}\u{200b}é]{0,8}") {
            prop_assert_eq!(trim(&s), s.trim());
        }

        #[test]
        fn parse_matches_core(s in "[-+0-9 a]{0,22}") {
            prop_assert_eq!(parse_u64(&s), s.parse::<u64>().ok());
            prop_assert_eq!(parse_i64(&s), s.parse::<i64>().ok());
        }
    }
}
