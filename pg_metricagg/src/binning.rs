//! `metricagg_bin(ts, width [, origin])` for `timestamptz` and `timestamp`.
//!
//! Both types are microseconds since 2000-01-01 00:00:00 (UTC for
//! `timestamptz`; taken as UTC for `timestamp`), so one implementation
//! serves both: the session `TimeZone` is never consulted.

use metricagg_core::bin::{bin, BinError, Width};
use pgrx::pg_sys;
use pgrx::PgSqlErrorCode;

use crate::fmgr::{pg_v1_function, raise};

pub(crate) fn report(err: BinError) -> ! {
    let code = match err {
        BinError::NonPositiveWidth | BinError::MixedMonths | BinError::WidthOutOfRange => {
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE
        }
        BinError::InfiniteTimestamp | BinError::InfiniteOrigin | BinError::ResultOutOfRange => {
            PgSqlErrorCode::ERRCODE_DATETIME_FIELD_OVERFLOW
        }
    };
    raise(code, err.message(), None, err.hint())
}

/// Shared body: arguments are (ts, width interval, origin), all non-NULL
/// because the SQL functions are STRICT.
#[inline(always)]
unsafe fn bin_call(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
    let (ts, width, origin) = unsafe {
        let ts = pgrx::fcinfo::pg_getarg_datum_raw(fcinfo, 0).value() as i64;
        let width =
            &*pgrx::fcinfo::pg_getarg_datum_raw(fcinfo, 1).cast_mut_ptr::<pg_sys::Interval>();
        let origin = pgrx::fcinfo::pg_getarg_datum_raw(fcinfo, 2).value() as i64;
        (ts, width, origin)
    };
    match Width::from_interval(width.month, width.day, width.time).and_then(|w| bin(ts, w, origin))
    {
        Ok(start) => pg_sys::Datum::from(start),
        Err(err) => report(err),
    }
}

pg_v1_function! {
    /// `metricagg_bin(timestamptz, interval, timestamptz) → timestamptz`
    fn metricagg_bin_tstz / pg_finfo_metricagg_bin_tstz (fcinfo) {
        unsafe { bin_call(fcinfo) }
    }
}

pg_v1_function! {
    /// `metricagg_bin(timestamp, interval, timestamp) → timestamp`, the value
    /// taken as UTC.
    fn metricagg_bin_ts / pg_finfo_metricagg_bin_ts (fcinfo) {
        unsafe { bin_call(fcinfo) }
    }
}
