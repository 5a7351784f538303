//! Parsing and printing of the human units on the command line: durations (`7d`, `1h30m`,
//! `500ms`), byte sizes (`64KiB`, `1GB`, `4096`) and points in time (RFC 3339, milliseconds since
//! the Unix epoch, or an age such as `15m`).
//!
//! Every parser returns a message that names the accepted forms; none panics on any input.
//! Arithmetic is checked: a value that overflows is refused, not wrapped.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Duration units, longest suffix first so that `ms` is not read as `m` followed by `s`.
const DURATION_UNITS: &[(&str, u64)] = &[
    ("ms", 1),
    ("s", 1_000),
    ("m", 60_000),
    ("h", 3_600_000),
    ("d", 86_400_000),
    ("w", 604_800_000),
];

/// Byte units (decimal and binary); a bare number is bytes.
const BYTE_UNITS: &[(&str, u64)] = &[
    ("b", 1),
    ("k", 1_000),
    ("kb", 1_000),
    ("kib", 1 << 10),
    ("m", 1_000_000),
    ("mb", 1_000_000),
    ("mib", 1 << 20),
    ("g", 1_000_000_000),
    ("gb", 1_000_000_000),
    ("gib", 1 << 30),
    ("t", 1_000_000_000_000),
    ("tb", 1_000_000_000_000),
    ("tib", 1 << 40),
];

const DURATION_FORMS: &str = "a duration like 30s, 15m, 12h, 7d, 1w, 1h30m or 500ms";

/// Parses a duration: one or more `<number><unit>` parts, units `ms s m h d w`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let invalid = || format!("invalid duration {text:?}: expected {DURATION_FORMS}");
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total_ms: u64 = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(invalid());
        }
        let number: u64 = rest[..digits].parse().map_err(|_| invalid())?;
        rest = &rest[digits..];
        let letters = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = &rest[..letters];
        let factor = DURATION_UNITS
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(unit))
            .map(|(_, factor)| *factor)
            .ok_or_else(invalid)?;
        rest = rest[letters..].trim_start();
        total_ms = number
            .checked_mul(factor)
            .and_then(|part| total_ms.checked_add(part))
            .ok_or_else(invalid)?;
    }
    Ok(Duration::from_millis(total_ms))
}

/// Parses a byte size: a number with an optional unit (`K`, `KB`, `KiB`, `M`, ... `TiB`).
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let invalid =
        || format!("invalid size {text:?}: expected bytes like 4096, 64KiB, 256MiB, 1GiB or 10GB");
    let trimmed = text.trim();
    let digits = trimmed.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Err(invalid());
    }
    let number: u64 = trimmed[..digits].parse().map_err(|_| invalid())?;
    let unit = trimmed[digits..].trim();
    if unit.is_empty() {
        return Ok(number);
    }
    let factor = BYTE_UNITS
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(unit))
        .map(|(_, factor)| *factor)
        .ok_or_else(invalid)?;
    number.checked_mul(factor).ok_or_else(invalid)
}

/// Parses a point in time into milliseconds since the Unix epoch: RFC 3339
/// (`2024-05-01T10:00:00Z`, `2024-05-01T12:00:00.250+02:00`), a bare number of milliseconds, or
/// a duration meaning that long before now.
pub fn parse_time_ms(text: &str) -> Result<i64, String> {
    let trimmed = text.trim();
    if !trimmed.is_empty() && trimmed.bytes().all(|byte| byte.is_ascii_digit()) {
        return trimmed.parse().map_err(|_| format!("invalid time {text:?}: too large"));
    }
    if trimmed.contains('T') || trimmed.contains('t') {
        return parse_rfc3339_ms(trimmed).ok_or_else(|| {
            format!("invalid time {text:?}: expected RFC 3339 like 2024-05-01T10:00:00Z")
        });
    }
    let age = parse_duration(trimmed).map_err(|_| {
        format!(
            "invalid time {text:?}: expected RFC 3339 (2024-05-01T10:00:00Z), milliseconds \
             since the Unix epoch, or an age like 15m, 2h or 7d"
        )
    })?;
    let now_ms = now_ms();
    let age_ms = i64::try_from(age.as_millis()).unwrap_or(i64::MAX);
    Ok(now_ms.saturating_sub(age_ms))
}

/// Milliseconds since the Unix epoch now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

fn number(text: &str) -> Option<i64> {
    if text.is_empty() || !text.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|-HH:MM)`.
fn parse_rfc3339_ms(text: &str) -> Option<i64> {
    let (date, time) = text.split_once(['T', 't'])?;
    let mut date_parts = date.splitn(3, '-');
    let year = number(date_parts.next()?)?;
    let month = number(date_parts.next()?)?;
    let day = number(date_parts.next()?)?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let (clock, offset_minutes) = split_zone(time)?;
    let (clock, fraction) = match clock.split_once('.') {
        Some((clock, fraction)) => (clock, fraction),
        None => (clock, ""),
    };
    let mut clock_parts = clock.splitn(3, ':');
    let hour = number(clock_parts.next()?)?;
    let minute = number(clock_parts.next()?)?;
    let second = number(clock_parts.next()?)?;
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let millis = if fraction.is_empty() {
        0
    } else {
        let padded: String = fraction.chars().chain("000".chars()).take(3).collect();
        number(&padded)?
    };
    let seconds = days_from_civil(year, month, day) * 86_400 + hour * 3_600 + minute * 60 + second
        - offset_minutes * 60;
    seconds.checked_mul(1_000)?.checked_add(millis)
}

/// Splits the zone off a time of day: `Z` is UTC, `+HH:MM` / `-HH:MM` an offset in minutes.
fn split_zone(time: &str) -> Option<(&str, i64)> {
    if let Some(clock) = time.strip_suffix(['Z', 'z']) {
        return Some((clock, 0));
    }
    let sign_at = time.rfind(['+', '-'])?;
    let (clock, zone) = time.split_at(sign_at);
    let sign = if zone.starts_with('-') { -1 } else { 1 };
    let (hours, minutes) = zone[1..].split_once(':')?;
    Some((clock, sign * (number(hours)? * 60 + number(minutes)?)))
}

/// A duration in the largest unit that divides it exactly: `7d`, `90m`, `1500ms`.
pub fn format_duration_ms(total_ms: u64) -> String {
    if total_ms == 0 {
        return "0s".into();
    }
    let (name, factor) = DURATION_UNITS
        .iter()
        .rev()
        .find(|(_, factor)| total_ms % factor == 0)
        .copied()
        .unwrap_or(("ms", 1));
    format!("{}{name}", total_ms / factor)
}

/// A byte count in the largest binary unit that divides it exactly: `1GiB`, `1536KiB`, `100B`.
pub fn format_bytes(bytes: u64) -> String {
    const BINARY: &[(&str, u64)] = &[("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20)];
    for (name, factor) in BINARY.iter().chain([("KiB", 1 << 10)].iter()) {
        if bytes != 0 && bytes % factor == 0 {
            return format!("{}{name}", bytes / factor);
        }
    }
    format!("{bytes}B")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5_400)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m 5s"), Ok(Duration::from_secs(125)));
        for bad in ["", "7", "d", "7x", "-1s", "99999999999999999999s", "1.5h"] {
            let error = parse_duration(bad).unwrap_err();
            assert!(error.contains("expected a duration"), "{bad}: {error}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert_eq!(parse_bytes("64KiB"), Ok(65_536));
        assert_eq!(parse_bytes("1gib"), Ok(1 << 30));
        assert_eq!(parse_bytes("10GB"), Ok(10_000_000_000));
        assert!(parse_bytes("ten").is_err());
        assert!(parse_bytes("1XB").is_err());
        assert!(parse_bytes("99999999999TiB").is_err());
    }

    #[test]
    fn times() {
        assert_eq!(parse_time_ms("1700000000000"), Ok(1_700_000_000_000));
        assert_eq!(parse_time_ms("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(parse_time_ms("2024-05-01T10:00:00Z"), Ok(1_714_557_600_000));
        assert_eq!(parse_time_ms("2024-05-01T12:00:00.25+02:00"), Ok(1_714_557_600_250));
        let hour_ago = parse_time_ms("1h").unwrap();
        assert!((now_ms() - hour_ago - 3_600_000).abs() < 60_000);
        for bad in ["2024-13-01T00:00:00Z", "2024-05-01T10:00Z", "yesterday", "T", "2024-05-01T"] {
            assert!(parse_time_ms(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn formatting() {
        assert_eq!(format_duration_ms(7 * 86_400_000), "1w");
        assert_eq!(format_duration_ms(90 * 60_000), "90m");
        assert_eq!(format_duration_ms(1_500), "1500ms");
        assert_eq!(format_bytes(1 << 30), "1GiB");
        assert_eq!(format_bytes(1_536 << 10), "1536KiB");
        assert_eq!(format_bytes(100), "100B");
    }
}
