//! `metricagg_pack_bins(ts, count, avg, min, max) → bytea`: a group's bins as
//! one compact, time-ordered binary array, for clients that read whole series
//! (insights-api fetches a day of one-minute bins for a fleet this way).
//!
//! Five `array_agg`s cost five transition calls and five growing arrays per
//! row, and a result of five arrays with a length word per element; this is
//! one call per row appending 40 bytes to one buffer in the aggregate memory
//! context, sorted once by the final function.
//!
//! Result: a little-endian header `u32 version (1), u32 n`, then `n` records of
//! `i64 ts (microseconds since 1970-01-01 UTC), i64 count, f64 avg, f64 min,
//! f64 max`, ordered by ts (±infinity: `i64::MIN`/`i64::MAX`). A NULL avg,
//! min or max is NaN (bins never hold NaN); a row whose ts or count is NULL is
//! skipped, as aggregates skip NULL inputs. No rows: NULL.

use std::mem::size_of;
use std::ptr::NonNull;

use pgrx::pg_sys;
use pgrx::PgSqlErrorCode;

use crate::agg::{aggregate_context, MAX_ALLOC_SIZE};
use crate::binned::{to_bytea, Carries};
use crate::fmgr::{arg, pg_v1_function, raise};

const VERSION: u32 = 1;
const RESULT_HEADER: usize = 8;
/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01 UTC).
const PG_EPOCH_US: i64 = 946_684_800_000_000;

#[repr(C)]
#[derive(Clone, Copy)]
struct Record {
    ts: i64,
    count: i64,
    avg: f64,
    min: f64,
    max: f64,
}

const RECORD: usize = size_of::<Record>();
/// The most records one bytea result can hold.
const MAX_RECORDS: usize = (MAX_ALLOC_SIZE - pg_sys::VARHDRSZ - RESULT_HEADER) / RECORD;

/// Header of the state; the records follow it in the same chunk.
#[repr(C)]
struct Pack {
    cap: usize,
    len: usize,
}

const HEADER: usize = size_of::<Pack>();

impl Pack {
    /// The first of the `cap` record slots after the header.
    ///
    /// # Safety
    /// `this` points to a live state.
    unsafe fn data(this: NonNull<Pack>) -> *mut Record {
        unsafe { this.as_ptr().cast::<u8>().add(HEADER).cast::<Record>() }
    }

    /// # Safety
    /// `this` points to a live state whose first `len` records are written.
    unsafe fn records<'a>(this: NonNull<Pack>) -> &'a mut [Record] {
        unsafe { std::slice::from_raw_parts_mut(Pack::data(this), (*this.as_ptr()).len) }
    }
}

unsafe fn alloc(context: pg_sys::MemoryContext, cap: usize) -> NonNull<Pack> {
    let raw = unsafe {
        pg_sys::MemoryContextAllocExtended(
            context,
            HEADER + cap * RECORD,
            pg_sys::MCXT_ALLOC_HUGE as i32,
        )
    };
    let state = NonNull::new(raw.cast::<Pack>()).expect("palloc does not return NULL");
    unsafe { state.as_ptr().write(Pack { cap, len: 0 }) };
    state
}

#[cold]
#[inline(never)]
unsafe fn grow(state: NonNull<Pack>) -> NonNull<Pack> {
    let len = unsafe { (*state.as_ptr()).len };
    if len >= MAX_RECORDS {
        raise(
            PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
            "metricagg_pack_bins: too many bins in one group",
            Some(&format!(
                "The result is one bytea, which holds at most {MAX_RECORDS} bins."
            )),
            "Query a narrower time range, or group by more columns.",
        );
    }
    let cap = (len * 2).clamp(64, MAX_RECORDS);
    let raw = unsafe { pg_sys::repalloc_huge(state.as_ptr().cast(), HEADER + cap * RECORD) };
    let grown = NonNull::new(raw.cast::<Pack>()).expect("repalloc does not return NULL");
    unsafe { (*grown.as_ptr()).cap = cap };
    grown
}

fn float_or_nan(d: Option<pg_sys::Datum>) -> f64 {
    d.map_or(f64::NAN, |d| f64::from_bits(d.value() as u64))
}

pg_v1_function! {
    /// `metricagg_pack_trans(internal, timestamptz, int8, float8, float8, float8) → internal`.
    fn metricagg_pack_trans / pg_finfo_metricagg_pack_trans (fcinfo) {
        unsafe {
            let state = arg(fcinfo, 0).and_then(|d| NonNull::new(d.cast_mut_ptr::<Pack>()));
            let (Some(ts), Some(count)) = (arg(fcinfo, 1), arg(fcinfo, 2)) else {
                return match state {
                    Some(s) => pg_sys::Datum::from(s.as_ptr()),
                    None => pgrx::fcinfo::pg_return_null(fcinfo),
                };
            };
            let mut state = match state {
                Some(s) => s,
                None => alloc(aggregate_context(fcinfo), 64),
            };
            if (*state.as_ptr()).len == (*state.as_ptr()).cap {
                state = grow(state);
            }
            let p = &mut *state.as_ptr();
            let record = Record {
                ts: match ts.value() as i64 {
                    t @ (i64::MIN | i64::MAX) => t, // ±infinity stay the extremes
                    t => t + PG_EPOCH_US,
                },
                count: count.value() as i64,
                avg: float_or_nan(arg(fcinfo, 3)),
                min: float_or_nan(arg(fcinfo, 4)),
                max: float_or_nan(arg(fcinfo, 5)),
            };
            Pack::data(state).add(p.len).write(record);
            p.len += 1;
            pg_sys::Datum::from(state.as_ptr())
        }
    }
}

pg_v1_function! {
    /// `metricagg_pack_final(internal) → bytea`: the records ordered by ts.
    fn metricagg_pack_final / pg_finfo_metricagg_pack_final (fcinfo) {
        unsafe {
            let Some(state) = arg(fcinfo, 0).and_then(|d| NonNull::new(d.cast_mut_ptr::<Pack>())) else {
                return pgrx::fcinfo::pg_return_null(fcinfo);
            };
            let records = Pack::records(state);
            // Sorting reorders the state but not its multiset: a second call
            // (a window frame that did not move) returns the same bytes.
            records.sort_unstable_by(|a, b| {
                a.ts.cmp(&b.ts)
                    .then(a.count.cmp(&b.count))
                    .then(a.avg.total_cmp(&b.avg))
                    .then(a.min.total_cmp(&b.min))
                    .then(a.max.total_cmp(&b.max))
            });
            let mut out = Vec::with_capacity(RESULT_HEADER + records.len() * RECORD);
            out.extend_from_slice(&VERSION.to_le_bytes());
            out.extend_from_slice(&(records.len() as u32).to_le_bytes());
            for r in records.iter() {
                out.extend_from_slice(&r.ts.to_le_bytes());
                out.extend_from_slice(&r.count.to_le_bytes());
                out.extend_from_slice(&r.avg.to_le_bytes());
                out.extend_from_slice(&r.min.to_le_bytes());
                out.extend_from_slice(&r.max.to_le_bytes());
            }
            to_bytea(&out, "metricagg_pack_bins", Carries::Result)
        }
    }
}

/// Records of `metricagg_stats_by_bin_packed`: the bin start, then its stats.
const STATS_RECORD: usize = 48;

pg_v1_function! {
    /// `metricagg_by_bin_packed_final(internal) → bytea`, the final function of
    /// `metricagg_stats_by_bin_packed`: the group's bins, ordered by start, as
    /// a header `u32 version (1), u32 n` and `n` records of `i64 start`
    /// (microseconds since 1970-01-01 UTC), `i64 count`, `f64 avg, min, max,
    /// p80`, little-endian. Read back with `metricagg_unpack_stats`.
    fn metricagg_by_bin_packed_final / pg_finfo_metricagg_by_bin_packed_final (fcinfo) {
        unsafe {
            let Some(state) = crate::binned::binned_arg(arg(fcinfo, 0)) else {
                return pgrx::fcinfo::pg_return_null(fcinfo);
            };
            let b = &*state.as_ptr();
            let mut out = Vec::with_capacity(RESULT_HEADER + 64 * STATS_RECORD);
            out.extend_from_slice(&VERSION.to_le_bytes());
            out.extend_from_slice(&0u32.to_le_bytes());
            let mut n = 0u32;
            b.for_each_stats(|start, s| {
                n += 1;
                out.extend_from_slice(&(start + PG_EPOCH_US).to_le_bytes());
                out.extend_from_slice(&s.count.to_le_bytes());
                for v in [s.avg, s.min, s.max, s.p80] {
                    out.extend_from_slice(&v.to_le_bytes());
                }
            });
            out[4..8].copy_from_slice(&n.to_le_bytes());
            to_bytea(&out, "metricagg_stats_by_bin_packed", Carries::Result)
        }
    }
}

fn bad_packed(detail: &str) -> ! {
    raise(
        PgSqlErrorCode::ERRCODE_INVALID_BINARY_REPRESENTATION,
        "metricagg_unpack_stats: not a metricagg_stats_by_bin_packed value",
        Some(detail),
        "Pass the bytea that metricagg_stats_by_bin_packed returned, unchanged.",
    )
}

pg_v1_function! {
    /// `metricagg_unpack_stats(bytea) → SETOF metricagg_bin_stats`: the rows
    /// of a `metricagg_stats_by_bin_packed` value, in its order.
    fn metricagg_unpack_stats / pg_finfo_metricagg_unpack_stats (fcinfo) {
        unsafe {
            let datum = arg(fcinfo, 0).expect("STRICT: bytea is not NULL");
            let bytea = pg_sys::pg_detoast_datum_packed(datum.cast_mut_ptr());
            let bytes = pgrx::varlena::varlena_to_byte_slice(bytea);
            if bytes.len() < RESULT_HEADER {
                bad_packed(&format!("{} bytes is shorter than the header.", bytes.len()));
            }
            let word = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
            if word(0) != VERSION {
                bad_packed(&format!("Unknown version {}.", word(0)));
            }
            let n = word(4) as usize;
            if bytes.len() != RESULT_HEADER + n * STATS_RECORD {
                bad_packed(&format!("{} bytes for {n} bins.", bytes.len()));
            }
            pg_sys::InitMaterializedSRF(fcinfo, 0);
            let rsinfo = (*fcinfo).resultinfo.cast::<pg_sys::ReturnSetInfo>();
            let (store, desc) = ((*rsinfo).setResult, (*rsinfo).setDesc);
            let mut nulls = [false; 6];
            for rec in bytes[RESULT_HEADER..].chunks_exact(STATS_RECORD) {
                let word8 = |at: usize| u64::from_le_bytes(rec[at..at + 8].try_into().expect("8 bytes"));
                let start = word8(0) as i64 - PG_EPOCH_US;
                let mut values = [
                    pg_sys::Datum::from(start),
                    pg_sys::Datum::from(word8(8) as i64),
                    pg_sys::Datum::from(word8(16)),
                    pg_sys::Datum::from(word8(24)),
                    pg_sys::Datum::from(word8(32)),
                    pg_sys::Datum::from(word8(40)),
                ];
                pg_sys::tuplestore_putvalues(store, desc, values.as_mut_ptr(), nulls.as_mut_ptr());
            }
            pg_sys::Datum::from(0usize)
        }
    }
}
