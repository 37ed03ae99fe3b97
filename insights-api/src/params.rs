//! Parsing of query parameters: times (RFC 3339, or naive = UTC) and widths.

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};

/// Parses an RFC 3339 time, or a naive `YYYY-MM-DDTHH:MM[:SS[.f]]` (also with a
/// space) or a bare date, which mean UTC.
pub fn parse_time(name: &str, s: &str) -> Result<DateTime<Utc>, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err(format!(
            "`{name}` is empty; expected an RFC 3339 time such as 2025-11-15T10:00:00Z"
        ));
    }
    if let Ok(dt) = DateTime::parse_from_rfc3339(t) {
        return Ok(dt.with_timezone(&Utc));
    }
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(n) = NaiveDateTime::parse_from_str(t, fmt) {
            return Ok(n.and_utc());
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc());
    }
    Err(format!(
        "`{name}`={t:?} is not a time; expected RFC 3339 (2025-11-15T10:00:00Z) or a naive UTC time (2025-11-15T10:00:00)"
    ))
}

/// Parses a bin width into seconds: `5m`, `1h`, `1d`, `90s`, `300`, `5 minutes`,
/// `1 hour`, `2 hours`, `1 day`. Must be a whole number of minutes, at least one.
pub fn parse_width(s: &str) -> Result<i64, String> {
    let t = s.trim().to_ascii_lowercase();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: i64 = num
        .parse()
        .map_err(|_| format!("width {s:?} must start with a whole number, e.g. 5m, 1h, 1d"))?;
    let mult = match unit.trim() {
        "" | "s" | "sec" | "secs" | "second" | "seconds" => 1,
        "m" | "min" | "mins" | "minute" | "minutes" => 60,
        "h" | "hr" | "hrs" | "hour" | "hours" => 3600,
        "d" | "day" | "days" => 86400,
        "w" | "week" | "weeks" => 7 * 86400,
        other => {
            return Err(format!(
                "width unit {other:?} is not supported; use s, m, h, d or w (months are not fixed widths)"
            ))
        }
    };
    let secs = n
        .checked_mul(mult)
        .ok_or_else(|| format!("width {s:?} is too large"))?;
    if secs < 60 || secs % 60 != 0 {
        return Err(format!(
            "width {s:?} must be a whole number of minutes, at least 1 minute (the finest stored bin)"
        ));
    }
    if secs > 366 * 86400 {
        return Err(format!("width {s:?} is longer than a year"));
    }
    Ok(secs)
}

/// A human name for a width in seconds (`1 minute`, `5 minutes`, `1 hour`).
pub fn width_name(secs: i64) -> String {
    let (n, unit) = if secs % 86400 == 0 {
        (secs / 86400, "day")
    } else if secs % 3600 == 0 {
        (secs / 3600, "hour")
    } else if secs % 60 == 0 {
        (secs / 60, "minute")
    } else {
        (secs, "second")
    };
    if n == 1 {
        format!("1 {unit}")
    } else {
        format!("{n} {unit}s")
    }
}

/// Validates a server id: `srv-` style ids, letters, digits, `-`, `_`, `.`.
pub fn check_ident(name: &str, s: &str) -> Result<(), String> {
    if s.is_empty()
        || s.len() > 128
        || !s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(format!("`{name}`={s:?} is not a valid identifier"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        let a = parse_time("start", "2025-11-15T10:00:00").unwrap();
        let b = parse_time("start", "2025-11-15T10:00:00Z").unwrap();
        let c = parse_time("start", "2025-11-15T12:00:00+02:00").unwrap();
        assert_eq!(a, b);
        assert_eq!(b, c);
        assert_eq!(a.timestamp(), 1_763_200_800);
        assert!(parse_time("start", "yesterday")
            .unwrap_err()
            .contains("start"));
        assert_eq!(
            parse_time("s", "2025-11-15").unwrap().timestamp(),
            1_763_164_800
        );
    }

    #[test]
    fn widths() {
        assert_eq!(parse_width("5m").unwrap(), 300);
        assert_eq!(parse_width("1 hour").unwrap(), 3600);
        assert_eq!(parse_width("2 hours").unwrap(), 7200);
        assert_eq!(parse_width("1d").unwrap(), 86400);
        assert_eq!(parse_width("120").unwrap(), 120);
        assert!(parse_width("30s").is_err());
        assert!(parse_width("1 month").is_err());
        assert!(parse_width("abc").is_err());
        assert_eq!(width_name(300), "5 minutes");
        assert_eq!(width_name(3600), "1 hour");
    }
}
