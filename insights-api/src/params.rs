//! Query parameters: one typed extractor for every endpoint ([`Query`]),
//! times (RFC 3339, or naive = UTC), widths and identifiers.
//!
//! Every endpoint declares the parameters it knows ([`FromQuery::NAMES`]); an
//! unknown one, a repeated one, a missing one or one that does not parse is a
//! 400 naming it. A range is `start`/`end`, both within years 0001-9999,
//! `start < end`, at most MAX_RANGE_HOURS apart.

use std::collections::BTreeMap;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, Utc};
use metricagg_core::bin::{bin_unix_secs, Width};

use crate::error::ApiError;

/// The query string of one request, parsed by the rules above.
pub struct Query<T>(pub T);

/// A query an endpoint accepts.
pub trait FromQuery: Sized {
    /// Every parameter the endpoint accepts.
    const NAMES: &'static [&'static str];
    fn from_query(q: &mut Pairs, limits: &Limits) -> Result<Self, ApiError>;
}

/// What bounds a query (from the configuration).
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_range_hours: i64,
}

impl<T: FromQuery, S: Send + Sync> FromRequestParts<S> for Query<T>
where
    Limits: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, st: &S) -> Result<Self, ApiError> {
        let limits = Limits::from_ref(st);
        parse_query::<T>(parts.uri.query().unwrap_or(""), &limits).map(Query)
    }
}

/// Parses a raw query string (without the `?`) for `T`.
pub fn parse_query<T: FromQuery>(raw: &str, limits: &Limits) -> Result<T, ApiError> {
    let mut pairs = Pairs::parse(raw, T::NAMES)?;
    T::from_query(&mut pairs, limits)
}

/// The parameters of a query: each known name at most once.
pub struct Pairs {
    map: BTreeMap<&'static str, String>,
}

/// At most this many characters of client input are echoed in an error.
const ECHO_CHARS: usize = 64;

fn echo(s: &str) -> String {
    let mut out: String = s.chars().take(ECHO_CHARS).collect();
    if s.chars().count() > ECHO_CHARS {
        out.push('…');
    }
    out
}

impl Pairs {
    pub fn parse(raw: &str, names: &'static [&'static str]) -> Result<Pairs, ApiError> {
        let mut map = BTreeMap::new();
        for (k, v) in form_urlencoded::parse(raw.as_bytes()) {
            let Some(&name) = names.iter().find(|n| **n == k) else {
                return Err(ApiError::BadRequest(if names.is_empty() {
                    format!("unknown parameter `{}`; this endpoint takes none", echo(&k))
                } else {
                    format!(
                        "unknown parameter `{}`; allowed: {}",
                        echo(&k),
                        names.join(", ")
                    )
                }));
            };
            if map.insert(name, v.into_owned()).is_some() {
                return Err(ApiError::BadRequest(format!(
                    "parameter `{name}` is given more than once; give it once"
                )));
            }
        }
        Ok(Pairs { map })
    }

    /// A parameter that must be there.
    pub fn required(&mut self, name: &str) -> Result<String, ApiError> {
        self.map
            .remove(name)
            .ok_or_else(|| ApiError::BadRequest(format!("missing required parameter `{name}`")))
    }

    /// A parameter that may be absent; empty counts as absent.
    pub fn optional(&mut self, name: &str) -> Option<String> {
        self.map.remove(name).filter(|v| !v.is_empty())
    }

    /// A required identifier (server or metric name).
    pub fn ident(&mut self, name: &str) -> Result<String, ApiError> {
        let v = self.required(name)?;
        check_ident(name, &v).map_err(ApiError::BadRequest)?;
        Ok(v)
    }

    /// An optional identifier.
    pub fn optional_ident(&mut self, name: &str) -> Result<Option<String>, ApiError> {
        self.optional(name)
            .map(|v| check_ident(name, &v).map(|()| v))
            .transpose()
            .map_err(ApiError::BadRequest)
    }

    /// An optional bin width, in seconds.
    pub fn width(&mut self) -> Result<Option<i64>, ApiError> {
        self.optional("width")
            .map(|w| parse_width(&w))
            .transpose()
            .map_err(ApiError::BadRequest)
    }
}

/// `[start, end)`, validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

impl Range {
    pub fn from_query(q: &mut Pairs, limits: &Limits) -> Result<Range, ApiError> {
        let start = parse_time("start", &q.required("start")?).map_err(ApiError::BadRequest)?;
        let end = parse_time("end", &q.required("end")?).map_err(ApiError::BadRequest)?;
        if start >= end {
            return Err(ApiError::BadRequest(format!(
                "`start` ({start}) must be before `end` ({end})"
            )));
        }
        let max_hours = limits.max_range_hours;
        if (end - start).num_seconds() > max_hours.saturating_mul(3600) {
            return Err(ApiError::BadRequest(format!(
                "the range is {} hours; the maximum is {max_hours} hours",
                (end - start).num_seconds() / 3600
            )));
        }
        Ok(Range { start, end })
    }

    pub fn secs(&self) -> i64 {
        (self.end - self.start).num_seconds()
    }

    /// The range widened to whole bins of `width` seconds (`metricagg_bin`'s
    /// bins, from the core's origin), as Unix seconds.
    pub fn aligned(&self, width: i64) -> Result<(i64, i64), ApiError> {
        let floor = |t: i64| {
            Width::from_secs(width)
                .and_then(|w| bin_unix_secs(t, w))
                .map_err(|e| ApiError::BadRequest(format!("{}: {e}", width_name(width))))
        };
        let s = floor(self.start.timestamp())?;
        let f = floor(self.end.timestamp())?;
        Ok((
            s,
            if f < self.end.timestamp() {
                f + width
            } else {
                f
            },
        ))
    }
}

/// `GET /series`.
#[derive(Clone, Debug)]
pub struct SeriesQuery {
    pub server: String,
    pub metric: String,
    pub range: Range,
    pub width: Option<i64>,
}

impl FromQuery for SeriesQuery {
    const NAMES: &'static [&'static str] = &["server", "metric", "start", "end", "width"];
    fn from_query(q: &mut Pairs, limits: &Limits) -> Result<Self, ApiError> {
        Ok(SeriesQuery {
            server: q.ident("server")?,
            metric: q.ident("metric")?,
            range: Range::from_query(q, limits)?,
            width: q.width()?,
        })
    }
}

/// `GET /insights`.
#[derive(Clone, Debug)]
pub struct InsightsQuery {
    pub range: Range,
    pub server: Option<String>,
    pub metric: Option<String>,
}

impl FromQuery for InsightsQuery {
    const NAMES: &'static [&'static str] = &["start", "end", "server", "metric"];
    fn from_query(q: &mut Pairs, limits: &Limits) -> Result<Self, ApiError> {
        Ok(InsightsQuery {
            range: Range::from_query(q, limits)?,
            server: q.optional_ident("server")?,
            metric: q.optional_ident("metric")?,
        })
    }
}

/// `GET /fleet`.
#[derive(Clone, Debug)]
pub struct FleetQuery {
    pub metric: String,
    pub range: Range,
    pub width: Option<i64>,
}

impl FromQuery for FleetQuery {
    const NAMES: &'static [&'static str] = &["metric", "start", "end", "width"];
    fn from_query(q: &mut Pairs, limits: &Limits) -> Result<Self, ApiError> {
        Ok(FleetQuery {
            metric: q.ident("metric")?,
            range: Range::from_query(q, limits)?,
            width: q.width()?,
        })
    }
}

/// `GET /assets/{name}`: the build version the page links.
#[derive(Clone, Debug)]
pub struct AssetQuery {
    pub v: Option<String>,
}

impl FromQuery for AssetQuery {
    const NAMES: &'static [&'static str] = &["v"];
    fn from_query(q: &mut Pairs, _: &Limits) -> Result<Self, ApiError> {
        Ok(AssetQuery { v: q.optional("v") })
    }
}

/// Endpoints without parameters.
#[derive(Clone, Copy, Debug)]
pub struct NoQuery;

impl FromQuery for NoQuery {
    const NAMES: &'static [&'static str] = &[];
    fn from_query(_: &mut Pairs, _: &Limits) -> Result<Self, ApiError> {
        Ok(NoQuery)
    }
}

/// A Unix time in seconds as a UTC time (the Unix epoch when out of range,
/// which the callers' validated ranges never are).
pub fn utc(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(secs, 0).unwrap_or_default()
}

/// Years a time may have: what RFC 3339 can write.
pub const YEARS: std::ops::RangeInclusive<i32> = 1..=9999;

/// Parses an RFC 3339 time, or a naive `YYYY-MM-DDTHH:MM[:SS[.f]]` (also with a
/// space) or a bare date, which mean UTC.
pub fn parse_time(name: &str, s: &str) -> Result<DateTime<Utc>, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err(format!(
            "`{name}` is empty; expected an RFC 3339 time such as 2025-11-15T10:00:00Z"
        ));
    }
    let parsed = DateTime::parse_from_rfc3339(t)
        .map(|dt| dt.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            [
                "%Y-%m-%dT%H:%M:%S%.f",
                "%Y-%m-%d %H:%M:%S%.f",
                "%Y-%m-%dT%H:%M",
                "%Y-%m-%d %H:%M",
            ]
            .into_iter()
            .find_map(|fmt| NaiveDateTime::parse_from_str(t, fmt).ok())
            .or_else(|| {
                NaiveDate::parse_from_str(t, "%Y-%m-%d")
                    .ok()
                    .and_then(|d| d.and_hms_opt(0, 0, 0))
            })
            .map(|n| n.and_utc())
        });
    match parsed {
        Some(dt) if YEARS.contains(&dt.year()) => Ok(dt),
        Some(dt) => Err(format!(
            "`{name}`={:?} is in year {} (UTC); times must be within years {:04}-{:04}",
            echo(t),
            dt.year(),
            YEARS.start(),
            YEARS.end()
        )),
        None => Err(format!(
            "`{name}`={:?} is not a time; expected RFC 3339 (2025-11-15T10:00:00Z) or a naive UTC time (2025-11-15T10:00:00)",
            echo(t)
        )),
    }
}

/// Parses a bin width into seconds: `5m`, `1h`, `1d`, `90s`, `300`, `5 minutes`,
/// `1 hour`, `2 hours`, `1 day`. Must be a whole number of minutes, at least one.
pub fn parse_width(s: &str) -> Result<i64, String> {
    let t = s.trim().to_ascii_lowercase();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let s = echo(s);
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

/// A human name for a width in seconds (`1 minute`, `5 minutes`, `1 hour`),
/// as `metricagg.interval_label()` writes it.
pub fn width_name(secs: i64) -> String {
    Width::from_secs(secs).map_or_else(|_| format!("{secs} seconds"), |w| w.to_string())
}

/// Validates a server id: `srv-` style ids, letters, digits, `-`, `_`, `.`.
pub fn check_ident(name: &str, s: &str) -> Result<(), String> {
    if s.is_empty()
        || s.len() > 128
        || !s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(format!(
            "`{name}`={:?} is not a valid identifier: 1 to 128 of the letters A-Z and a-z, digits, `-`, `_` and `.`",
            echo(s)
        ));
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
    fn years_outside_rfc3339_are_refused() {
        for bad in [
            "+20000-01-01T00:00:00",
            "270000-01-01",
            "0000-12-31T23:00:00Z",
            "0001-01-01T00:30:00+01:00",
        ] {
            let e = parse_time("start", bad).unwrap_err();
            assert!(e.contains("year") || e.contains("not a time"), "{bad}: {e}");
        }
        assert_eq!(
            parse_time("end", "9999-12-31T23:59:59Z").unwrap().year(),
            9999
        );
        assert_eq!(parse_time("end", "0001-01-01").unwrap().year(), 1);
    }

    fn limits() -> Limits {
        Limits {
            max_range_hours: 48,
        }
    }

    #[test]
    fn one_extractor_for_every_rule() {
        let q: InsightsQuery = parse_query(
            "start=2025-11-15T10:00:00&end=2025-11-15T12:00:00Z&server=srv-2&metric=",
            &limits(),
        )
        .unwrap();
        assert_eq!(q.range.secs(), 7200);
        assert_eq!(q.server.as_deref(), Some("srv-2"));
        assert_eq!(q.metric, None, "empty is absent");
        let err = |raw: &str| match parse_query::<SeriesQuery>(raw, &limits()) {
            Err(ApiError::BadRequest(m)) => m,
            other => panic!("{raw}: {other:?}"),
        };
        let ok = "server=a&metric=cpu&start=2025-11-15&end=2025-11-16";
        assert!(parse_query::<SeriesQuery>(ok, &limits()).is_ok());
        assert!(err(&format!("{ok}&start=2025-11-15")).contains("more than once"));
        assert!(err(&format!("{ok}&width=5m&width=5m")).contains("`width`"));
        assert!(err(&format!("{ok}&x=1")).contains("unknown parameter `x`"));
        assert!(err("server=a&metric=cpu&start=2025-11-15").contains("`end`"));
        assert!(err("server=a%0A&metric=cpu&start=2025-11-15&end=2025-11-16").contains("server"));
        assert!(err("server=a&metric=cpu&start=2025-11-15&end=2025-11-20").contains("maximum"));
        assert!(err(&format!("{ok}&width=7s")).contains("minute"));
        let long = "y".repeat(5000);
        let m = err(&format!("{ok}&{long}=1"));
        assert!(m.len() < 300, "the echo is bounded: {}", m.len());
        assert!(matches!(
            parse_query::<NoQuery>("a=1", &limits()),
            Err(ApiError::BadRequest(m)) if m.contains("takes none")
        ));
    }

    #[test]
    fn ranges_align_outward_to_whole_bins() {
        let r = Range {
            start: parse_time("s", "2025-11-15T10:02:00").unwrap(),
            end: parse_time("e", "2025-11-15T10:09:00").unwrap(),
        };
        let (s, e) = r.aligned(300).unwrap();
        assert_eq!(utc(s), parse_time("s", "2025-11-15T10:00:00").unwrap());
        assert_eq!(utc(e), parse_time("e", "2025-11-15T10:10:00").unwrap());
        assert_eq!(
            r.aligned(60).unwrap(),
            (r.start.timestamp(), r.end.timestamp())
        );
        // weeks start on Mondays (the origin 2000-01-03 is one)
        let sat = Range {
            start: parse_time("s", "2025-11-15T10:00:00Z").unwrap(),
            end: parse_time("e", "2025-11-15T11:00:00Z").unwrap(),
        };
        let (s, e) = sat.aligned(7 * 86400).unwrap();
        assert_eq!(utc(s), parse_time("s", "2025-11-10T00:00:00Z").unwrap());
        assert_eq!(utc(e), parse_time("e", "2025-11-17T00:00:00Z").unwrap());
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
