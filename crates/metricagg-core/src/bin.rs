//! UTC time binning on PostgreSQL's timestamp representation.
//!
//! PostgreSQL stores `timestamp` and `timestamptz` alike as a signed count of
//! microseconds since 2000-01-01 00:00:00 UTC, with `i64::MIN` and `i64::MAX`
//! reserved for `-infinity` and `infinity`. Everything here works on that
//! absolute value, so a bin never depends on the session `TimeZone`.
//!
//! * Fixed widths (days and time) floor toward minus infinity from an origin,
//!   exactly as PostgreSQL's `date_bin(width, ts, origin)`; a day is 24 hours.
//! * Month widths give calendar months in UTC, counted in multiples of the
//!   width from the origin's month (TimescaleDB's `time_bucket` counts from
//!   January 2000, which is the month of our default origin). The origin's
//!   day and time never shift a month bin.

use std::fmt;

/// Microseconds in one second.
pub const USECS_PER_SEC: i64 = 1_000_000;
/// Microseconds in one day.
pub const USECS_PER_DAY: i64 = 86_400_000_000;

/// 2000-01-03 00:00:00 UTC (a Monday), in microseconds since the PostgreSQL
/// epoch: the default origin, identical to TimescaleDB's `time_bucket`.
pub const DEFAULT_ORIGIN: i64 = 2 * USECS_PER_DAY;

/// The PostgreSQL epoch, 2000-01-01 00:00:00 UTC, in seconds since the Unix
/// epoch (1970-01-01 00:00:00 UTC).
pub const PG_EPOCH_UNIX_SECS: i64 = 946_684_800;
/// The PostgreSQL epoch in microseconds since the Unix epoch.
pub const PG_EPOCH_UNIX_MICROS: i64 = PG_EPOCH_UNIX_SECS * USECS_PER_SEC;
/// [`DEFAULT_ORIGIN`] in seconds since the Unix epoch.
pub const DEFAULT_ORIGIN_UNIX_SECS: i64 = PG_EPOCH_UNIX_SECS + DEFAULT_ORIGIN / USECS_PER_SEC;

/// PostgreSQL's `-infinity` timestamp.
pub const NEG_INFINITY: i64 = i64::MIN;
/// PostgreSQL's `infinity` timestamp.
pub const POS_INFINITY: i64 = i64::MAX;

/// Smallest valid timestamp: 4714-11-24 00:00:00 BC (Julian day 0), as
/// PostgreSQL's `MIN_TIMESTAMP`.
pub const MIN_TIMESTAMP: i64 = -211_813_488_000_000_000;
/// One past the largest valid timestamp (294277-01-01 00:00:00), as
/// PostgreSQL's `END_TIMESTAMP`.
pub const END_TIMESTAMP: i64 = 9_223_371_331_200_000_000;

/// Days from 1970-01-01 to 2000-01-01.
const UNIX_TO_PG_DAYS: i64 = 10_957;

/// A PostgreSQL `interval` as its three stored fields. Two intervals that
/// compare equal in SQL (`'1 day'` and `'24 hours'`) may differ here; a width
/// is decoded from it with [`Width::from_interval`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Interval {
    pub months: i32,
    pub days: i32,
    pub micros: i64,
}

impl Interval {
    /// The bin width this interval stands for, or why it cannot be one.
    pub fn width(self) -> Result<Width, BinError> {
        Width::from_interval(self.months, self.days, self.micros)
    }
}

/// A bin width, decoded from a PostgreSQL `interval` or a number of seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Width {
    /// A fixed width in microseconds (always > 0). Days count as 24 hours.
    Micros(i64),
    /// A whole number of calendar months (always > 0).
    Months(i32),
}

/// Why a value cannot be binned. Each variant carries a message and a hint
/// that the extension reports as `ERROR` / `HINT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BinError {
    /// The width is zero or negative.
    NonPositiveWidth,
    /// The width mixes months with days or time.
    MixedMonths,
    /// The width in microseconds does not fit in 64 bits.
    WidthOutOfRange,
    /// The timestamp to bin is `infinity` or `-infinity`.
    InfiniteTimestamp,
    /// The origin is `infinity` or `-infinity`.
    InfiniteOrigin,
    /// The bin start falls outside PostgreSQL's timestamp range.
    ResultOutOfRange,
}

impl BinError {
    /// The primary error message.
    pub fn message(&self) -> &'static str {
        match self {
            BinError::NonPositiveWidth => "metricagg_bin: width must be greater than zero",
            BinError::MixedMonths => {
                "metricagg_bin: a width in months cannot also have days or time"
            }
            BinError::WidthOutOfRange => "metricagg_bin: width out of range",
            BinError::InfiniteTimestamp => "metricagg_bin: cannot bin an infinite timestamp",
            BinError::InfiniteOrigin => "metricagg_bin: origin must be finite",
            BinError::ResultOutOfRange => "metricagg_bin: bin start out of range",
        }
    }

    /// A hint that tells the user what to do instead.
    pub fn hint(&self) -> &'static str {
        match self {
            BinError::NonPositiveWidth => "Use a positive width such as '1 minute' or '1 hour'.",
            BinError::MixedMonths => {
                "Use either whole months ('1 month', '3 months', '1 year') or days and time \
                 ('1 day', '90 minutes'), not both."
            }
            BinError::WidthOutOfRange => "Use a width shorter than about 292,000 years.",
            BinError::InfiniteTimestamp => {
                "Filter out infinite timestamps first, e.g. WHERE isfinite(ts)."
            }
            BinError::InfiniteOrigin => {
                "Pass a finite origin, or omit it for 2000-01-03 00:00 UTC."
            }
            BinError::ResultOutOfRange => {
                "The timestamp is too close to the limits of the timestamp type for this width."
            }
        }
    }
}

impl fmt::Display for BinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for BinError {}

impl Width {
    /// A fixed width of `secs` seconds.
    pub fn from_secs(secs: i64) -> Result<Width, BinError> {
        if secs <= 0 {
            return Err(BinError::NonPositiveWidth);
        }
        secs.checked_mul(USECS_PER_SEC)
            .map(Width::Micros)
            .ok_or(BinError::WidthOutOfRange)
    }

    /// The width in whole seconds: `None` for months and for fixed widths
    /// that are not a whole number of seconds.
    pub fn as_secs(self) -> Option<i64> {
        match self {
            Width::Micros(us) if us % USECS_PER_SEC == 0 => Some(us / USECS_PER_SEC),
            _ => None,
        }
    }

    /// Decodes a PostgreSQL interval (`month`, `day`, `time` fields).
    pub fn from_interval(months: i32, days: i32, micros: i64) -> Result<Width, BinError> {
        if months != 0 {
            if days != 0 || micros != 0 {
                return Err(BinError::MixedMonths);
            }
            if months < 0 {
                return Err(BinError::NonPositiveWidth);
            }
            return Ok(Width::Months(months));
        }
        let total = i64::from(days)
            .checked_mul(USECS_PER_DAY)
            .and_then(|d| d.checked_add(micros))
            .ok_or(BinError::WidthOutOfRange)?;
        if total <= 0 {
            return Err(BinError::NonPositiveWidth);
        }
        Ok(Width::Micros(total))
    }
}

/// The width as `metricagg.interval_label()` writes it in the job's
/// summaries: `1 minute`, `5 minutes`, `1 hour`, `1 day`, `3 months`,
/// `1.5 seconds`: the largest unit that divides it, plural unless it is one.
impl fmt::Display for Width {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (n, unit) = match *self {
            Width::Months(m) => (i64::from(m), "month"),
            Width::Micros(us) => {
                let secs = us / USECS_PER_SEC;
                if us % USECS_PER_SEC != 0 {
                    let frac = format!("{:06}", us % USECS_PER_SEC);
                    return write!(f, "{secs}.{} seconds", frac.trim_end_matches('0'));
                }
                match secs {
                    s if s % 86_400 == 0 => (s / 86_400, "day"),
                    s if s % 3_600 == 0 => (s / 3_600, "hour"),
                    s if s % 60 == 0 => (s / 60, "minute"),
                    s => (s, "second"),
                }
            }
        };
        let plural = if n == 1 { "" } else { "s" };
        write!(f, "{n} {unit}{plural}")
    }
}

/// Is `ts` a finite timestamp PostgreSQL accepts?
pub fn is_valid(ts: i64) -> bool {
    (MIN_TIMESTAMP..END_TIMESTAMP).contains(&ts)
}

/// Microseconds since the Unix epoch of `ts` (microseconds since the
/// PostgreSQL epoch). `None` for the last 30 years of PostgreSQL's range
/// (after 294246 AD), which an `i64` of Unix microseconds cannot hold.
#[inline]
pub fn to_unix_micros(ts: i64) -> Option<i64> {
    ts.checked_add(PG_EPOCH_UNIX_MICROS)
}

/// Inverse of [`to_unix_micros`]: microseconds since the PostgreSQL epoch.
#[inline]
pub fn from_unix_micros(unix_micros: i64) -> Option<i64> {
    unix_micros.checked_sub(PG_EPOCH_UNIX_MICROS)
}

/// The start of the bin of `width` (from [`DEFAULT_ORIGIN`]) that contains
/// `unix_secs`, both in seconds since the Unix epoch: `metricagg_bin` for
/// clients that count in Unix seconds. A bin start that is not a whole second
/// (widths below a second) is floored to one.
pub fn bin_unix_secs(unix_secs: i64, width: Width) -> Result<i64, BinError> {
    let ts = unix_secs
        .checked_sub(PG_EPOCH_UNIX_SECS)
        .and_then(|s| s.checked_mul(USECS_PER_SEC))
        .filter(|&ts| is_valid(ts))
        .ok_or(BinError::ResultOutOfRange)?;
    let start = bin(ts, width, DEFAULT_ORIGIN)?;
    Ok(start.div_euclid(USECS_PER_SEC) + PG_EPOCH_UNIX_SECS)
}

/// The start of the bin that contains `ts`.
///
/// `ts` and `origin` are microseconds since 2000-01-01 00:00:00 UTC.
pub fn bin(ts: i64, width: Width, origin: i64) -> Result<i64, BinError> {
    if ts == NEG_INFINITY || ts == POS_INFINITY {
        return Err(BinError::InfiniteTimestamp);
    }
    if origin == NEG_INFINITY || origin == POS_INFINITY {
        return Err(BinError::InfiniteOrigin);
    }
    let start = match width {
        Width::Micros(w) => bin_fixed(ts, w, origin)?,
        Width::Months(m) => bin_months(ts, m, origin)?,
    };
    if is_valid(start) {
        Ok(start)
    } else {
        Err(BinError::ResultOutOfRange)
    }
}

/// The end (exclusive) of the bin that starts at `start`: `start + width`, or
/// the same day of the month `width` months later. Saturates at the end of
/// the timestamp range.
pub fn bin_end(start: i64, width: Width) -> i64 {
    match width {
        Width::Micros(w) => start.saturating_add(w),
        Width::Months(m) => {
            let month = month_index(start) + i64::from(m);
            let (year, month0) = (month.div_euclid(12), month.rem_euclid(12));
            days_from_civil(2000 + year, (month0 + 1) as u32, 1).saturating_mul(USECS_PER_DAY)
        }
    }
}

/// `date_bin` arithmetic: floor toward minus infinity, in 128 bits so that no
/// intermediate can overflow.
#[inline]
fn bin_fixed(ts: i64, width: i64, origin: i64) -> Result<i64, BinError> {
    debug_assert!(width > 0);
    // Fast path in 64 bits (a 128-bit division is several times slower).
    if let Some(diff) = ts.checked_sub(origin) {
        if let Some(start) = diff
            .div_euclid(width)
            .checked_mul(width)
            .and_then(|d| origin.checked_add(d))
        {
            return Ok(start);
        }
    }
    let diff = i128::from(ts) - i128::from(origin);
    let start = i128::from(origin) + diff.div_euclid(i128::from(width)) * i128::from(width);
    i64::try_from(start).map_err(|_| BinError::ResultOutOfRange)
}

fn bin_months(ts: i64, width: i32, origin: i64) -> Result<i64, BinError> {
    debug_assert!(width > 0);
    let width = i64::from(width);
    let month = month_index(ts);
    let anchor = month_index(origin);
    let start_month = anchor + (month - anchor).div_euclid(width) * width;
    let (year, month0) = (start_month.div_euclid(12), start_month.rem_euclid(12));
    let days = days_from_civil(2000 + year, (month0 + 1) as u32, 1);
    days.checked_mul(USECS_PER_DAY)
        .ok_or(BinError::ResultOutOfRange)
}

/// Months since January 2000 of the UTC calendar month containing `ts`.
fn month_index(ts: i64) -> i64 {
    let (y, m, _) = civil_from_days(ts.div_euclid(USECS_PER_DAY));
    (y - 2000) * 12 + i64::from(m) - 1
}

/// Proleptic Gregorian (year, month 1-12, day 1-31) of a day number counted
/// from 2000-01-01 (Howard Hinnant's `civil_from_days`).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + UNIX_TO_PG_DAYS + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11]
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32; // [1, 31]
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32; // [1, 12]
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Day number counted from 2000-01-01 of a proleptic Gregorian date
/// (Howard Hinnant's `days_from_civil`).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400); // [0, 399]
    let m = i64::from(month);
    let mp = if m > 2 { m - 3 } else { m + 9 }; // [0, 11]
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1; // [0, 365]
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy; // [0, 146096]
    era * 146_097 + doe - 719_468 - UNIX_TO_PG_DAYS
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::SplitMix64;

    const MINUTE: i64 = 60_000_000;
    const HOUR: i64 = 60 * MINUTE;

    fn ts(y: i64, mo: u32, d: u32, h: i64, mi: i64, s: i64) -> i64 {
        days_from_civil(y, mo, d) * USECS_PER_DAY + h * HOUR + mi * MINUTE + s * 1_000_000
    }

    #[test]
    fn civil_round_trips_over_a_wide_range() {
        for days in (-3_000_000..3_000_000).step_by(7) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days, "day {days}");
        }
        assert_eq!(civil_from_days(0), (2000, 1, 1));
        assert_eq!(civil_from_days(-1), (1999, 12, 31));
        assert_eq!(civil_from_days(59), (2000, 2, 29));
    }

    #[test]
    fn fixed_widths_floor_toward_minus_infinity() {
        let w = Width::Micros(MINUTE);
        let t = ts(2025, 11, 15, 20, 20, 59);
        assert_eq!(bin(t, w, DEFAULT_ORIGIN), Ok(ts(2025, 11, 15, 20, 20, 0)));
        // Before the origin: floor, not truncation toward zero.
        let before = ts(1999, 12, 31, 23, 59, 30);
        assert_eq!(
            bin(before, w, DEFAULT_ORIGIN),
            Ok(ts(1999, 12, 31, 23, 59, 0))
        );
        // Exactly on a boundary stays there.
        let on = ts(2025, 1, 1, 0, 0, 0);
        assert_eq!(bin(on, Width::Micros(HOUR), DEFAULT_ORIGIN), Ok(on));
    }

    #[test]
    fn weeks_start_on_monday_with_the_default_origin() {
        let week = Width::from_interval(0, 7, 0).unwrap();
        // 2025-11-15 is a Saturday; its week starts Monday 2025-11-10.
        let sat = ts(2025, 11, 15, 13, 0, 0);
        assert_eq!(
            bin(sat, week, DEFAULT_ORIGIN),
            Ok(ts(2025, 11, 10, 0, 0, 0))
        );
    }

    #[test]
    fn months_are_utc_calendar_months_from_january_2000() {
        let q = Width::from_interval(3, 0, 0).unwrap();
        let t = ts(2025, 5, 17, 23, 59, 59);
        assert_eq!(bin(t, q, DEFAULT_ORIGIN), Ok(ts(2025, 4, 1, 0, 0, 0)));
        let m = Width::Months(1);
        assert_eq!(
            bin(ts(2024, 2, 29, 12, 0, 0), m, DEFAULT_ORIGIN),
            Ok(ts(2024, 2, 1, 0, 0, 0))
        );
        // The origin's day and time do not shift month bins.
        let odd_origin = ts(2000, 1, 17, 13, 45, 0);
        assert_eq!(bin(t, q, odd_origin), Ok(ts(2025, 4, 1, 0, 0, 0)));
        // Before 2000, still floors.
        assert_eq!(
            bin(ts(1999, 11, 30, 0, 0, 0), q, DEFAULT_ORIGIN),
            Ok(ts(1999, 10, 1, 0, 0, 0))
        );
        let year = Width::from_interval(12, 0, 0).unwrap();
        assert_eq!(
            bin(ts(1969, 7, 20, 20, 17, 0), year, DEFAULT_ORIGIN),
            Ok(ts(1969, 1, 1, 0, 0, 0))
        );
    }

    #[test]
    fn bad_widths_and_infinities_are_errors() {
        assert_eq!(
            Width::from_interval(0, 0, 0),
            Err(BinError::NonPositiveWidth)
        );
        assert_eq!(
            Width::from_interval(0, 0, -1),
            Err(BinError::NonPositiveWidth)
        );
        assert_eq!(
            Width::from_interval(0, 1, -USECS_PER_DAY),
            Err(BinError::NonPositiveWidth)
        );
        assert_eq!(
            Width::from_interval(-1, 0, 0),
            Err(BinError::NonPositiveWidth)
        );
        assert_eq!(Width::from_interval(1, 1, 0), Err(BinError::MixedMonths));
        assert_eq!(Width::from_interval(1, 0, 1), Err(BinError::MixedMonths));
        assert_eq!(
            Width::from_interval(0, i32::MAX, i64::MAX),
            Err(BinError::WidthOutOfRange)
        );
        // '1 day -1 hour' is 23 hours, as date_bin computes it.
        assert_eq!(
            Width::from_interval(0, 1, -HOUR),
            Ok(Width::Micros(23 * HOUR))
        );
        let w = Width::Micros(MINUTE);
        assert_eq!(
            bin(POS_INFINITY, w, DEFAULT_ORIGIN),
            Err(BinError::InfiniteTimestamp)
        );
        assert_eq!(
            bin(NEG_INFINITY, w, DEFAULT_ORIGIN),
            Err(BinError::InfiniteTimestamp)
        );
        assert_eq!(bin(0, w, POS_INFINITY), Err(BinError::InfiniteOrigin));
        assert_eq!(
            bin(
                MIN_TIMESTAMP + USECS_PER_DAY,
                Width::Micros(7 * USECS_PER_DAY),
                4 * USECS_PER_DAY
            ),
            Err(BinError::ResultOutOfRange)
        );
        for e in [
            BinError::NonPositiveWidth,
            BinError::MixedMonths,
            BinError::ResultOutOfRange,
        ] {
            assert!(!e.hint().is_empty() && e.to_string() == e.message());
        }
    }

    #[test]
    fn widths_from_seconds_and_their_labels() {
        assert_eq!(Width::from_secs(60), Ok(Width::Micros(MINUTE)));
        assert_eq!(Width::from_secs(0), Err(BinError::NonPositiveWidth));
        assert_eq!(Width::from_secs(-60), Err(BinError::NonPositiveWidth));
        assert_eq!(Width::from_secs(i64::MAX), Err(BinError::WidthOutOfRange));
        assert_eq!(Width::from_secs(3600).unwrap().as_secs(), Some(3600));
        assert_eq!(Width::Micros(1_500_000).as_secs(), None);
        assert_eq!(Width::Months(1).as_secs(), None);
        assert_eq!(
            Interval {
                months: 0,
                days: 1,
                micros: 0
            }
            .width(),
            Ok(Width::Micros(USECS_PER_DAY))
        );
        // The same labels as metricagg.interval_label() in sql/analytics.sql.
        for (w, label) in [
            (Width::Micros(MINUTE), "1 minute"),
            (Width::Micros(5 * MINUTE), "5 minutes"),
            (Width::Micros(HOUR), "1 hour"),
            (Width::Micros(90 * MINUTE), "90 minutes"),
            (Width::Micros(USECS_PER_DAY), "1 day"),
            (Width::Micros(7 * USECS_PER_DAY), "7 days"),
            (Width::Micros(1_000_000), "1 second"),
            (Width::Micros(61_000_000), "61 seconds"),
            (Width::Micros(1_500_000), "1.5 seconds"),
            (Width::Micros(1), "0.000001 seconds"),
            (Width::Months(1), "1 month"),
            (Width::Months(12), "12 months"),
        ] {
            assert_eq!(w.to_string(), label);
        }
    }

    #[test]
    fn epochs_and_origin_agree() {
        // 2000-01-03 00:00:00 UTC is 946857600 s after 1970-01-01.
        assert_eq!(DEFAULT_ORIGIN_UNIX_SECS, 946_857_600);
        assert_eq!(
            days_from_civil(1970, 1, 1) * USECS_PER_DAY,
            -PG_EPOCH_UNIX_MICROS
        );
        assert_eq!(to_unix_micros(0), Some(PG_EPOCH_UNIX_MICROS));
        assert_eq!(from_unix_micros(PG_EPOCH_UNIX_MICROS), Some(0));
        assert_eq!(to_unix_micros(END_TIMESTAMP - 1), None);
        assert_eq!(from_unix_micros(i64::MIN), None);
    }

    /// Property: binning Unix seconds equals binning the same instant in
    /// PostgreSQL microseconds, and the plain formula over Unix seconds.
    #[test]
    fn unix_seconds_bin_like_metricagg_bin() {
        let mut rng = SplitMix64::new(0x5eed_0006);
        for _ in 0..50_000 {
            let t = rng.range_i64(-5_000_000_000, 5_000_000_000);
            let secs = [
                60,
                300,
                3600,
                86_400,
                7 * 86_400,
                13,
                rng.range_i64(1, 100_000),
            ][(rng.next_u64() % 7) as usize];
            let w = Width::from_secs(secs).unwrap();
            let got = bin_unix_secs(t, w).unwrap();
            let formula =
                DEFAULT_ORIGIN_UNIX_SECS + (t - DEFAULT_ORIGIN_UNIX_SECS).div_euclid(secs) * secs;
            assert_eq!(got, formula, "t={t} w={secs}");
            let pg = bin((t - PG_EPOCH_UNIX_SECS) * USECS_PER_SEC, w, DEFAULT_ORIGIN).unwrap();
            assert_eq!(got, pg / USECS_PER_SEC + PG_EPOCH_UNIX_SECS);
        }
        // 2025-11-15T10:00:00Z (a Saturday): its week starts on Monday the 10th.
        assert_eq!(
            bin_unix_secs(1_763_200_800, Width::from_secs(7 * 86_400).unwrap()),
            Ok(1_762_732_800)
        );
        assert_eq!(
            bin_unix_secs(1_763_200_800, Width::Months(1)),
            Ok(1_761_955_200) // 2025-11-01
        );
        assert_eq!(
            bin_unix_secs(i64::MAX / 2, Width::Micros(MINUTE)),
            Err(BinError::ResultOutOfRange)
        );
    }

    /// Property: for random timestamps, origins and widths, the bin start is
    /// <= ts, within one width of it, and on the origin's grid.
    #[test]
    fn fixed_bins_contain_their_timestamp_and_sit_on_the_grid() {
        let mut rng = SplitMix64::new(0x5eed_0001);
        for _ in 0..200_000 {
            let t = rng.range_i64(-4_000_000_000_000_000, 4_000_000_000_000_000);
            let origin = rng.range_i64(-2_000_000_000_000_000, 2_000_000_000_000_000);
            let w = match rng.next_u64() % 3 {
                0 => rng.range_i64(1, 1_000),
                1 => rng.range_i64(1, 10 * USECS_PER_DAY),
                _ => [MINUTE, 5 * MINUTE, HOUR, USECS_PER_DAY, 7 * USECS_PER_DAY]
                    [(rng.next_u64() % 5) as usize],
            };
            let b = bin(t, Width::Micros(w), origin).unwrap();
            assert!(b <= t && t - b < w, "t={t} w={w} origin={origin} b={b}");
            assert_eq!((i128::from(b) - i128::from(origin)) % i128::from(w), 0);
        }
    }

    /// Property: every timestamp in [start, bin_end(start)) bins to start,
    /// and bin_end(start) starts the next bin.
    #[test]
    fn bin_end_is_the_next_bin_start() {
        let mut rng = SplitMix64::new(0x5eed_0005);
        for _ in 0..50_000 {
            let t = rng.range_i64(-60_000_000_000_000_000, 60_000_000_000_000_000);
            let width = match rng.next_u64() % 3 {
                0 => Width::Months((rng.next_u64() % 13 + 1) as i32),
                1 => Width::Micros(rng.range_i64(1, 10 * USECS_PER_DAY)),
                _ => Width::Micros(MINUTE),
            };
            let start = bin(t, width, DEFAULT_ORIGIN).unwrap();
            let end = bin_end(start, width);
            assert!(start <= t && t < end, "{t} {width:?} {start} {end}");
            assert_eq!(bin(end - 1, width, DEFAULT_ORIGIN), Ok(start));
            assert_eq!(bin(end, width, DEFAULT_ORIGIN), Ok(end));
        }
    }

    /// Property: month bins start at 00:00 UTC on the first of a month, contain
    /// their timestamp, and the next bin starts `width` months later.
    #[test]
    fn month_bins_contain_their_timestamp() {
        let mut rng = SplitMix64::new(0x5eed_0002);
        for _ in 0..100_000 {
            let t = rng.range_i64(-60_000_000_000_000_000, 60_000_000_000_000_000);
            let width = (rng.next_u64() % 24 + 1) as i32;
            let b = bin(t, Width::Months(width), DEFAULT_ORIGIN).unwrap();
            let (_, _, d) = civil_from_days(b.div_euclid(USECS_PER_DAY));
            assert_eq!((d, b.rem_euclid(USECS_PER_DAY)), (1, 0));
            assert!(b <= t);
            assert!(month_index(t) - month_index(b) < i64::from(width));
            assert_eq!(month_index(b).rem_euclid(i64::from(width)), 0);
        }
    }
}
