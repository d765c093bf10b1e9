//! UTC timestamps as epoch milliseconds <-> ISO-8601 strings.
//!
//! Pure so both the SDK and the edge format time identically, and so that nothing here ever asks
//! the platform for the clock (`SystemTime::now()` traps on wasm32-unknown-unknown).

use alloc::string::String;

use crate::format::jsontext::push_padded;

/// Milliseconds in a day.
pub const DAY_MS: i64 = 86_400_000;

/// Formats epoch milliseconds as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn format_iso8601(epoch_ms: i64) -> String {
    let days = epoch_ms.div_euclid(DAY_MS);
    let ms_of_day = epoch_ms.rem_euclid(DAY_MS);
    let (y, m, d) = civil_from_days(days);
    let (h, rest) = (ms_of_day / 3_600_000, ms_of_day % 3_600_000);
    let (min, rest) = (rest / 60_000, rest % 60_000);
    let (s, ms) = (rest / 1000, rest % 1000);
    // Written by hand rather than with `format!`: the browser SDK calls this and must stay small.
    let mut out = String::with_capacity(24);
    if y < 0 {
        out.push('-');
        push_padded(&mut out, y.unsigned_abs(), 3);
    } else {
        push_padded(&mut out, y as u64, 4);
    }
    for (sep, value, width) in [
        ('-', m, 2),
        ('-', d, 2),
        ('T', h, 2),
        (':', min, 2),
        (':', s, 2),
        ('.', ms, 3),
    ] {
        out.push(sep);
        push_padded(&mut out, value as u64, width);
    }
    out.push('Z');
    out
}

/// Parses an RFC 3339 / ISO-8601 date-time (`2024-01-02T03:04:05.678Z`, `+02:00` offsets, or a
/// bare date) into epoch milliseconds. Returns `None` for anything else.
pub fn parse_iso8601(text: &str) -> Option<i64> {
    let b = text.trim().as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let part = b.get(from..from + len)?;
        if !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        core::str::from_utf8(part).ok()?.parse().ok()
    };
    let sep = |at: usize, ch: u8| b.get(at) == Some(&ch);
    let (y, m, d) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    if !sep(4, b'-') || !sep(7, b'-') || !(1..=12).contains(&m) || d < 1 || d > days_in_month(y, m)
    {
        return None;
    }
    let days = days_from_civil(y, m, d);
    if b.len() == 10 {
        return Some(days * DAY_MS);
    }
    if !(sep(10, b'T') || sep(10, b't') || sep(10, b' ')) || !sep(13, b':') || !sep(16, b':') {
        return None;
    }
    let (h, min, s) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    if h > 23 || min > 59 || s > 60 {
        return None;
    }
    let mut i = 19;
    let mut ms = 0;
    if sep(i, b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        let digits = i - start;
        if digits == 0 {
            return None;
        }
        // Keep millisecond precision; finer digits are truncated.
        let take = digits.min(3);
        ms = num(start, take)? * 10_i64.pow(3 - take as u32);
    }
    let offset_min = match b.get(i) {
        Some(b'Z') | Some(b'z') if i + 1 == b.len() => 0,
        Some(&sign @ (b'+' | b'-')) if b.len() == i + 6 && sep(i + 3, b':') => {
            let (oh, om) = (num(i + 1, 2)?, num(i + 4, 2)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let off = oh * 60 + om;
            if sign == b'+' {
                off
            } else {
                -off
            }
        }
        _ => return None,
    };
    Some(days * DAY_MS + ((h * 60 + min - offset_min) * 60 + s) * 1000 + ms)
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

// Howard Hinnant's days_from_civil / civil_from_days (proleptic Gregorian).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (
        if m <= 2 {
            yoe + era * 400 + 1
        } else {
            yoe + era * 400
        },
        m,
        d,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(format_iso8601(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            format_iso8601(1_709_683_200_123),
            "2024-03-06T00:00:00.123Z"
        );
        assert_eq!(format_iso8601(-1), "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn parses_offsets_fractions_and_dates() {
        assert_eq!(
            parse_iso8601("2024-03-06T00:00:00.123Z"),
            Some(1_709_683_200_123)
        );
        assert_eq!(
            parse_iso8601("2024-03-06T02:00:00+02:00"),
            Some(1_709_683_200_000)
        );
        assert_eq!(
            parse_iso8601("2024-03-06T00:00:00.123456Z"),
            Some(1_709_683_200_123)
        );
        assert_eq!(
            parse_iso8601("2024-03-06T00:00:00.1Z"),
            Some(1_709_683_200_100)
        );
        assert_eq!(parse_iso8601("2024-03-06"), Some(1_709_683_200_000));
    }

    #[test]
    fn rejects_malformed_timestamps() {
        for bad in [
            "",
            "yesterday",
            "2024-02-30T00:00:00Z",
            "2024-13-01T00:00:00Z",
            "2024-01-01T25:00:00Z",
            "2024-01-01T00:00:00",
            "2024-01-01T00:00:00.Z",
            "2024-01-01T00:00:00+0200",
            "２０２４-01-01",
        ] {
            assert_eq!(parse_iso8601(bad), None, "{bad}");
        }
    }

    proptest! {
        #[test]
        fn format_then_parse_round_trips(ms in -62_135_596_800_000_i64..253_402_300_799_999) {
            prop_assert_eq!(parse_iso8601(&format_iso8601(ms)), Some(ms));
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,40}") {
            let _ = parse_iso8601(&s);
        }
    }
}
