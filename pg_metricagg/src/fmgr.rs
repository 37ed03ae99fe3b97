//! Small helpers for version-1 C functions written by hand.
//!
//! The aggregate support functions and `metricagg_bin` run once per row, so
//! they take `fcinfo` directly instead of going through `#[pg_extern]`'s
//! argument conversion. Their SQL declarations live in `sql/metricagg.sql`.

use pgrx::pg_sys;
use pgrx::pg_sys::panic::ErrorReport;
use pgrx::{PgLogLevel, PgSqlErrorCode};

/// Declares a version-1 C function: the `pg_finfo_*` record PostgreSQL looks
/// up with `dlsym`, and the function itself, guarded so that a Rust panic or
/// an `ERROR` raised inside unwinds into a PostgreSQL error.
macro_rules! pg_v1_function {
    ($(#[$meta:meta])* fn $name:ident / $finfo:ident ($fcinfo:ident) $body:block) => {
        #[unsafe(no_mangle)]
        #[doc(hidden)]
        pub extern "C" fn $finfo() -> &'static ::pgrx::pg_sys::Pg_finfo_record {
            const V1: ::pgrx::pg_sys::Pg_finfo_record =
                ::pgrx::pg_sys::Pg_finfo_record { api_version: 1 };
            &V1
        }

        $(#[$meta])*
        #[unsafe(no_mangle)]
        pub unsafe extern "C-unwind" fn $name(
            $fcinfo: ::pgrx::pg_sys::FunctionCallInfo,
        ) -> ::pgrx::pg_sys::Datum {
            // SAFETY: called by PostgreSQL's fmgr with a valid fcinfo; the
            // guard turns panics and reported errors into PostgreSQL ERRORs.
            let body = || -> ::pgrx::pg_sys::Datum { $body };
            unsafe { ::pgrx::pg_sys::submodules::panic::pgrx_extern_c_guard(body) }
        }
    };
}
pub(crate) use pg_v1_function;

/// Argument `n`, or `None` when it is SQL NULL.
///
/// # Safety
/// `fcinfo` must be a valid call with at least `n + 1` arguments.
#[inline(always)]
pub unsafe fn arg(fcinfo: pg_sys::FunctionCallInfo, n: usize) -> Option<pg_sys::Datum> {
    unsafe {
        if pgrx::fcinfo::pg_arg_is_null(fcinfo, n) {
            None
        } else {
            Some(pgrx::fcinfo::pg_getarg_datum_raw(fcinfo, n))
        }
    }
}

/// Raises `ERROR` with a SQLSTATE, message, optional detail and hint.
pub fn raise(code: PgSqlErrorCode, message: &str, detail: Option<&str>, hint: &str) -> ! {
    let mut report = ErrorReport::new(code, message.to_string(), "pg_metricagg");
    if let Some(detail) = detail {
        report = report.set_detail(detail);
    }
    report.set_hint(hint).report(PgLogLevel::ERROR);
    unreachable!("ERROR does not return")
}
