//! bytea in and out: the size check before any allocation, detoasting, and
//! the errors of the decoders in `metricagg_core::codec`.

use metricagg_core::codec::DecodeError;
use pgrx::pg_sys;
use pgrx::PgSqlErrorCode;

use crate::fmgr::raise;

/// PostgreSQL's MaxAllocSize: the largest varlena.
pub(crate) const MAX_ALLOC_SIZE: usize = 0x3fff_ffff;
/// The most payload one bytea holds.
pub(crate) const MAX_PAYLOAD: usize = MAX_ALLOC_SIZE - pg_sys::VARHDRSZ;

/// What a bytea made by [`new_bytea`] carries: it decides the error when the
/// bytes would not fit.
#[derive(Clone, Copy)]
pub(crate) enum Carries {
    /// A partial aggregate state passed between parallel workers.
    PartialState,
    /// An aggregate's result.
    Result,
}

/// A new bytea of `len` payload bytes (`None`: a length that overflowed
/// while it was summed), and the payload to write. The size is checked
/// before anything is allocated.
pub(crate) fn new_bytea(
    len: Option<usize>,
    what: &str,
    carries: Carries,
) -> (pg_sys::Datum, &'static mut [u8]) {
    let len = match len {
        Some(len) if len <= MAX_PAYLOAD => len,
        _ => too_large(len, what, carries),
    };
    let total = len + pg_sys::VARHDRSZ;
    // SAFETY: palloc returns `total` writable bytes in the current memory
    // context; the varlena header is set before the datum is used, and the
    // payload slice lives as long as that context, which outlives this call.
    unsafe {
        let bytea = pg_sys::palloc(total).cast::<pg_sys::varlena>();
        pgrx::set_varsize_4b(bytea, total as i32);
        let payload = std::slice::from_raw_parts_mut(bytea.cast::<u8>().add(pg_sys::VARHDRSZ), len);
        (pg_sys::Datum::from(bytea), payload)
    }
}

#[cold]
fn too_large(len: Option<usize>, what: &str, carries: Carries) -> ! {
    let detail = match len {
        Some(len) => format!("It takes {len} bytes; a bytea holds at most 1 GB."),
        None => "It takes more bytes than a bytea holds (1 GB).".to_string(),
    };
    let (message, hint) = match carries {
        Carries::PartialState => (
            format!("{what}: partial state too large to pass between parallel workers"),
            "SET max_parallel_workers_per_gather = 0 for this query, or aggregate a narrower time range.",
        ),
        Carries::Result => (
            format!("{what}: result too large for one bytea"),
            "Aggregate a narrower time range, or group by more columns.",
        ),
    };
    raise(
        PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
        &message,
        Some(&detail),
        hint,
    )
}

/// The bytes of a bytea argument, detoasted.
///
/// # Safety
/// `datum` must be a non-NULL bytea.
pub(crate) unsafe fn bytes_of<'a>(datum: pg_sys::Datum) -> &'a [u8] {
    unsafe {
        let bytea = pg_sys::pg_detoast_datum_packed(datum.cast_mut_ptr());
        pgrx::varlena::varlena_to_byte_slice(bytea)
    }
}

/// Where a value that failed to decode came from.
#[derive(Clone, Copy)]
pub(crate) enum Source {
    /// A partial aggregate state, from another process of the same query.
    PartialState,
    /// A packed value a function was given as an argument, made by the
    /// named aggregate.
    Argument { made_by: &'static str },
}

/// Raises the error for a value that `metricagg_core::codec` refused:
/// `message` says what the value should have been, DETAIL what is wrong.
#[cold]
pub(crate) fn decode_failed(message: &str, err: &DecodeError, source: Source) -> ! {
    let version = env!("CARGO_PKG_VERSION");
    let detail = match err {
        DecodeError::UnknownVersion { found, supported } => format!(
            "The value is version {found} of the format; pg_metricagg {version} reads version {supported}."
        ),
        other => other.to_string(),
    };
    let (code, hint) = match (source, err) {
        (_, DecodeError::UnknownVersion { .. }) => (
            PgSqlErrorCode::ERRCODE_INVALID_BINARY_REPRESENTATION,
            "Another pg_metricagg version made it (across postgres_fdw, the other server's): install the same pg_metricagg on every server, then run ALTER EXTENSION pg_metricagg UPDATE in each database."
                .to_string(),
        ),
        (Source::PartialState, _) => (
            PgSqlErrorCode::ERRCODE_DATA_CORRUPTED,
            "Partial states pass only between the processes of one query, made by pg_metricagg itself; this one was not."
                .to_string(),
        ),
        (Source::Argument { made_by }, _) => (
            PgSqlErrorCode::ERRCODE_INVALID_BINARY_REPRESENTATION,
            format!("Pass the bytea that {made_by} returned, unchanged."),
        ),
    };
    raise(code, message, Some(&detail), &hint)
}
