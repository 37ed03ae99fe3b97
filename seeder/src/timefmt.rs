//! Time arithmetic in integer microseconds since the Unix epoch (UTC), and the
//! parsing and printing of RFC 3339 timestamps and human durations.

use chrono::{DateTime, SecondsFormat, Utc};

pub const MICROS_PER_SEC: i64 = 1_000_000;
pub const MICROS_PER_DAY: i64 = 86_400 * MICROS_PER_SEC;
/// PostgreSQL timestamps count microseconds from 2000-01-01 00:00 UTC.
pub const PG_EPOCH_OFFSET_US: i64 = 946_684_800 * MICROS_PER_SEC;

/// Parses an RFC 3339 timestamp (`2025-11-15T10:00:00Z`, `…+01:00`) into
/// microseconds since the Unix epoch.
pub fn parse_rfc3339(s: &str) -> Result<i64, String> {
    let t = DateTime::parse_from_rfc3339(s.trim()).map_err(|e| {
        format!("`{s}` is not an RFC 3339 timestamp ({e}); write e.g. 2025-11-15T10:00:00Z")
    })?;
    Ok(t.timestamp_micros())
}

/// Formats microseconds since the Unix epoch as RFC 3339 in UTC, with as many
/// fractional digits as needed.
pub fn format_ts(us: i64) -> String {
    match DateTime::<Utc>::from_timestamp_micros(us) {
        Some(t) => t.to_rfc3339_opts(SecondsFormat::AutoSi, true),
        None => format!("<{us} µs out of range>"),
    }
}

/// `DateTime<Utc>` for binding as a `timestamptz` parameter.
pub fn to_datetime(us: i64) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp_micros(us).expect("timestamp within chrono's range")
}

pub fn now_us() -> i64 {
    Utc::now().timestamp_micros()
}

/// Parses a duration such as `1s`, `500ms`, `15m`, `24h`, `7d`, `1h30m` into
/// microseconds. Units: us, ms, s, m, h, d, w. It must be positive.
pub fn parse_duration(s: &str) -> Result<i64, String> {
    let bad = || {
        format!("`{s}` is not a duration; write a number and a unit, e.g. 1s, 500ms, 15m, 24h, 7d, 1h30m")
    };
    let t = s.trim();
    if t.is_empty() {
        return Err(bad());
    }
    let mut total: i64 = 0;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(bad());
        }
        let n: i64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "us" | "µs" => 1,
            "ms" => 1_000,
            "s" => MICROS_PER_SEC,
            "m" | "min" => 60 * MICROS_PER_SEC,
            "h" => 3_600 * MICROS_PER_SEC,
            "d" => MICROS_PER_DAY,
            "w" => 7 * MICROS_PER_DAY,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| format!("`{s}` is too long a duration"))?;
    }
    if total <= 0 {
        return Err(format!("`{s}`: a duration must be positive"));
    }
    Ok(total)
}

/// Formats microseconds as a compact duration (`1s`, `250ms`, `1h30m`).
pub fn format_duration(us: i64) -> String {
    let units: [(i64, &str); 7] = [
        (7 * MICROS_PER_DAY, "w"),
        (MICROS_PER_DAY, "d"),
        (3_600 * MICROS_PER_SEC, "h"),
        (60 * MICROS_PER_SEC, "m"),
        (MICROS_PER_SEC, "s"),
        (1_000, "ms"),
        (1, "us"),
    ];
    if us <= 0 {
        return format!("{us}us");
    }
    let mut rest = us;
    let mut out = String::new();
    for (u, name) in units {
        if rest >= u {
            out.push_str(&format!("{}{name}", rest / u));
            rest %= u;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1s"), Ok(1_000_000));
        assert_eq!(parse_duration("500ms"), Ok(500_000));
        assert_eq!(parse_duration("1h30m"), Ok(5_400_000_000));
        assert_eq!(parse_duration("24h"), Ok(MICROS_PER_DAY));
        assert_eq!(parse_duration("2w"), Ok(14 * MICROS_PER_DAY));
        for bad in [
            "",
            "s",
            "10",
            "1x",
            "-1s",
            "0s",
            "1.5h",
            "99999999999999999d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad} should be rejected");
        }
        assert_eq!(format_duration(5_400_000_000), "1h30m");
        assert_eq!(format_duration(250_000), "250ms");
    }

    #[test]
    fn timestamps_round_trip_in_utc() {
        let us = parse_rfc3339("2025-11-15T10:00:00+01:00").unwrap();
        assert_eq!(format_ts(us), "2025-11-15T09:00:00Z");
        assert_eq!(
            parse_rfc3339("2000-01-01T00:00:00Z").unwrap(),
            PG_EPOCH_OFFSET_US
        );
        assert!(parse_rfc3339("2025-11-15 10:00").is_err());
        assert_eq!(
            format_ts(PG_EPOCH_OFFSET_US + 1_500),
            "2000-01-01T00:00:00.001500Z"
        );
    }
}
