//! Reading and writing times: ISO-8601 in, UTC with milliseconds out
//! (`2026-11-28T10:37:14.724Z`), by arithmetic for the shapes clients send, through jiff for
//! the rest.

/// An instant read from an event.
#[derive(Clone, Copy)]
pub(crate) struct Time<'a> {
    pub(crate) at: jiff::Timestamp,
    /// The text as sent, when it is already the stored form (`toISOString`'s): written
    /// back as it is instead of formatted again.
    pub(crate) stored: Option<&'a str>,
}

impl Time<'_> {
    pub(crate) fn new<'a>(at: jiff::Timestamp) -> Time<'a> {
        Time { at, stored: None }
    }
}

/// ISO-8601 with `Z` or an offset; without an offset the time is taken as UTC.
pub fn parse_time(text: &str) -> Option<jiff::Timestamp> {
    if let Some(ts) = parse_canonical_time(text) {
        return Some(ts);
    }
    if let Ok(ts) = text.parse::<jiff::Timestamp>() {
        return Some(ts);
    }
    let civil: jiff::civil::DateTime = text.parse().ok()?;
    jiff::tz::TimeZone::UTC.to_timestamp(civil).ok()
}

/// UTC ISO-8601 with milliseconds, truncating finer precision: `2026-11-28T10:37:14.724Z`.
pub fn format_time(ts: jiff::Timestamp) -> String {
    let mut out = Vec::with_capacity(24);
    write_time(&mut out, ts);
    String::from_utf8(out).unwrap_or_default()
}

/// [`format_time`] appended to `out` (a reused buffer: no allocation once it has room).
pub fn write_time_into(out: &mut String, ts: jiff::Timestamp) {
    let mut bytes = std::mem::take(out).into_bytes();
    write_time(&mut bytes, ts);
    *out = String::from_utf8(bytes).unwrap_or_default();
}

/// [`format_time`] into a buffer, by arithmetic for years 1970 to 9999 (what clients
/// send), through jiff for the rest.
pub(crate) fn write_time(out: &mut Vec<u8>, ts: jiff::Timestamp) {
    let ms = ts.as_millisecond();
    // 1970-01-01 to 9999-12-31T23:59:59.999Z.
    if !(0..253_402_300_800_000).contains(&ms) {
        return write_time_slow(out, ts);
    }
    let (days, ms_of_day) = (ms / 86_400_000, ms % 86_400_000);
    let (year, month, day) = civil_from_days(days);
    let mut text = *b"0000-00-00T00:00:00.000Z";
    // Every part is non-negative and within its width, so the casts cannot wrap.
    for (at, value, width) in [
        (0, year as u32, 4),
        (5, month, 2),
        (8, day, 2),
        (11, (ms_of_day / 3_600_000) as u32, 2),
        (14, (ms_of_day / 60_000 % 60) as u32, 2),
        (17, (ms_of_day / 1000 % 60) as u32, 2),
        (20, (ms_of_day % 1000) as u32, 3),
    ] {
        let mut rest = value;
        for slot in text[at..at + width].iter_mut().rev() {
            *slot = b'0' + (rest % 10) as u8;
            rest /= 10;
        }
    }
    out.extend_from_slice(&text);
}

/// [`write_time`] through jiff's calendar; negative years keep jiff's signed six-digit
/// spelling.
fn write_time_slow(out: &mut Vec<u8>, ts: jiff::Timestamp) {
    let ts = jiff::Timestamp::from_millisecond(ts.as_millisecond()).unwrap_or(ts);
    let dt = jiff::tz::Offset::UTC.to_datetime(ts);
    if (0..=9999).contains(&dt.year()) {
        out.extend_from_slice(format!("{dt:.3}Z").as_bytes());
    } else {
        out.extend_from_slice(format!("{ts:.3}").as_bytes());
    }
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (days ≥ 0), by Howard
/// Hinnant's `civil_from_days`.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year - era * 400;
    let month = i64::from(month);
    let doy = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `YYYY-MM-DDTHH:MM:SS.sssZ` exactly (what JavaScript's `toISOString` and ferry itself
/// write), by arithmetic; anything else is left to jiff.
pub(crate) fn parse_canonical_time(text: &str) -> Option<jiff::Timestamp> {
    let b = text.as_bytes();
    if b.len() != 24 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    if b[19] != b'.' || b[23] != b'Z' {
        return None;
    }
    let number = |range: std::ops::Range<usize>| {
        b[range].iter().try_fold(0u32, |n, &d| d.is_ascii_digit().then(|| n * 10 + u32::from(d - b'0')))
    };
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second, ms) = (number(11..13)?, number(14..16)?, number(17..19)?, number(20..23)?);
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    let days_in_month = *month_days.get(month.checked_sub(1)? as usize)?;
    if day == 0 || day > days_in_month || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let days = days_from_civil(i64::from(year), month, day);
    let seconds = days * 86_400 + i64::from(hour * 3600 + minute * 60 + second);
    jiff::Timestamp::new(seconds, (ms * 1_000_000) as i32).ok()
}
