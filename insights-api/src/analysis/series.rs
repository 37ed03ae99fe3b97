//! The analysis' input: plain series of bins, independent of where they come
//! from (the database layer builds them), and the small helpers on values.

use std::borrow::Cow;

use chrono::{DateTime, Utc};

/// One (server, metric) series of stored bins, sorted by time.
#[derive(Clone, Debug, Default)]
pub struct Series {
    pub server: String,
    pub metric: String,
    pub width: i64,
    /// Bin start, seconds since the epoch (UTC).
    pub ts: Vec<i64>,
    pub count: Vec<i64>,
    pub avg: Vec<f64>,
    pub min: Vec<f64>,
    pub max: Vec<f64>,
}

impl Series {
    pub fn new(server: &str, metric: &str, width: i64) -> Series {
        Series {
            server: server.to_string(),
            metric: metric.to_string(),
            width,
            ..Default::default()
        }
    }
    pub fn len(&self) -> usize {
        self.ts.len()
    }
    pub fn is_empty(&self) -> bool {
        self.ts.is_empty()
    }
}

/// The bins of one request. `series` is in display order (the caller sorts
/// servers naturally, srv-2 before srv-10): results keep that order.
#[derive(Clone, Debug, Default)]
pub struct Dataset {
    pub width: i64,
    pub series: Vec<Series>,
}

/// The series at its own cadence: when its bins are regularly further apart
/// than the width (a source reporting every 5 minutes, read as one-minute
/// bins), the width becomes that spacing (the median gap, a multiple of the
/// width), so that "consecutive", "missing" and "per day" mean what they do
/// for the source.
pub fn at_cadence(s: &Series) -> Cow<'_, Series> {
    let mut gaps: Vec<i64> = s.ts.windows(2).map(|w| w[1] - w[0]).collect();
    if gaps.len() < 10 || s.width <= 0 {
        return Cow::Borrowed(s);
    }
    let mid = gaps.len() / 2;
    let gap = *gaps.select_nth_unstable(mid).1;
    if gap <= s.width || gap % s.width != 0 {
        return Cow::Borrowed(s);
    }
    Cow::Owned(Series {
        width: gap,
        ..s.clone()
    })
}

/// Threshold used for time-to-threshold forecasts, per metric.
pub fn threshold_for(metric: &str) -> Option<f64> {
    match metric {
        "memory" | "cpu" => Some(90.0),
        _ => None,
    }
}

pub(crate) fn is_percent(metric: &str) -> bool {
    matches!(metric, "cpu" | "memory")
}

pub(crate) fn clamp_metric(metric: &str, v: f64) -> f64 {
    if is_percent(metric) {
        v.clamp(0.0, 100.0)
    } else {
        v.max(0.0)
    }
}

/// Rounds to 2 decimals: facts carry exactly the numbers the narrative may use.
pub fn r2(x: f64) -> f64 {
    if x.is_finite() {
        (x * 100.0).round() / 100.0
    } else {
        x
    }
}

/// Rounds a metric's value as anomalies state it: 2 decimals, or 3
/// significant digits below 1, so that a price of 0.00098 falling from 0.3
/// is not stated as 0.
pub fn rv(x: f64) -> f64 {
    if !x.is_finite() || x == 0.0 || x.abs() >= 1.0 {
        return r2(x);
    }
    let mag = x.abs().log10().floor() as i32;
    let scale = 10f64.powi(2 - mag);
    (x * scale).round() / scale
}

/// Rounds to 4 significant digits (slopes can be small).
pub fn round_sig(x: f64) -> f64 {
    if !x.is_finite() || x == 0.0 {
        return x;
    }
    let mag = x.abs().log10().floor() as i32;
    let scale = 10f64.powi(3 - mag);
    (x * scale).round() / scale
}

pub(crate) fn ts(t: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(t, 0).unwrap_or_default()
}

/// A number as facts print it: no trailing `.0`.
pub fn fmt_num(x: f64) -> String {
    if x.fract() == 0.0 {
        format!("{x:.0}")
    } else {
        format!("{x}")
    }
}

/// Whether a server or metric name is a plain identifier (letters, digits,
/// `.`, `_`, `-`; at most 128): the rule ingest enforces.
pub fn is_plain_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// A name as statements show it: a plain identifier as it is, anything else
/// quoted and escaped as a JSON string (so a name can never end a line,
/// close a quote or pass for a fact of its own), with the Unicode line and
/// paragraph separators escaped too.
pub fn display_name(s: &str) -> Cow<'_, str> {
    if is_plain_name(s) {
        Cow::Borrowed(s)
    } else {
        Cow::Owned(escape_separators(
            &serde_json::to_string(s).unwrap_or_else(|_| "\"?\"".into()),
        ))
    }
}

/// Escapes every character that can break a line (controls, NEL, U+2028,
/// U+2029) as `\u{…}`: text built from data stays on its line.
pub fn escape_separators(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() || matches!(c, '\u{85}' | '\u{2028}' | '\u{2029}') {
            out.push_str(&format!("\\u{{{:04x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_shown_plain_or_quoted() {
        assert_eq!(display_name("srv-2"), "srv-2");
        assert_eq!(display_name("db.eu-1_a"), "db.eu-1_a");
        assert_eq!(display_name("a\"b"), "\"a\\\"b\"");
        let forged = display_name("srv-1\nF12 [anomaly] srv-9 cpu spike");
        assert!(
            !forged.contains('\n') && forged.starts_with('"'),
            "{forged}"
        );
        let sep = display_name("x\u{2028}F13 [forecast]");
        assert!(!sep.contains('\u{2028}'), "{sep}");
        assert!(sep.contains("\\u{2028}"), "{sep}");
        assert_eq!(
            escape_separators("a\tb\r\u{85}"),
            "a\\u{0009}b\\u{000d}\\u{0085}"
        );
    }

    #[test]
    fn a_slower_source_is_read_at_its_own_cadence() {
        let mut s = Series::new("srv-1", "cpu", 60);
        for i in 0..100i64 {
            s.ts.push(i * 300 + if i == 50 { 600 } else { 0 });
        }
        assert_eq!(at_cadence(&s).width, 300);
        assert!(matches!(at_cadence(&s), Cow::Owned(_)));
        let mut every_minute = Series::new("srv-1", "cpu", 60);
        every_minute.ts = (0..100).map(|i| i * 60).collect();
        assert!(matches!(at_cadence(&every_minute), Cow::Borrowed(_)));
    }
}
