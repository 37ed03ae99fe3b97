//! The packed aggregates and their reader: one bytea per group instead of one
//! row per bin. The formats are `metricagg_core::codec::pack_bins` and
//! `metricagg_core::codec::stats_packed`.
//!
//! `metricagg_pack_bins(ts, count, avg, min, max) → bytea`: a group's stored
//! bins as one compact, time-ordered value, for clients that read whole
//! series (insights-api fetches a day of one-minute bins for a fleet this
//! way). Five `array_agg`s cost five transition calls and five growing arrays
//! per row; this is one call per row appending a 40-byte record to one buffer
//! in the aggregate memory context, sorted once by the final function. A
//! NULL avg, min or max is NaN (bins never hold NaN); a row whose ts or count
//! is NULL is skipped, as aggregates skip NULL inputs. No rows: NULL.
//!
//! `metricagg_stats_by_bin_packed(ts, value, width [, origin])` is
//! `metricagg_stats_by_bin` with a packed result, which
//! `metricagg_unpack_stats(bytea)` turns back into rows.

use std::mem::size_of;
use std::ptr::NonNull;

use metricagg_core::codec::pack_bins::{self, Record};
use metricagg_core::codec::{stats_packed, EncodeError};
use pgrx::pg_sys;
use pgrx::PgSqlErrorCode;

use crate::agg::aggregate_context;
use crate::binned::binned_arg;
use crate::bytea::{bytes_of, decode_failed, new_bytea, Carries, Source, MAX_PAYLOAD};
use crate::fmgr::{arg, pg_v1_function, raise};

/// The most records one bytea result can hold.
const MAX_RECORDS: usize = pack_bins::max_records(MAX_PAYLOAD);

/// Header of the state; the records follow it in the same chunk.
#[repr(C)]
struct Pack {
    cap: usize,
    len: usize,
}

const HEADER: usize = size_of::<Pack>();
const RECORD: usize = size_of::<Record>();

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

/// The error of a value the packed formats cannot hold.
#[cold]
fn unpackable(what: &str, e: EncodeError) -> ! {
    let hint = match e {
        EncodeError::UnixOverflow(_) => {
            "Filter out timestamps after 294246 AD (WHERE ts < '294247-01-01')."
        }
        EncodeError::NegativeCount(_) => "Bins count their samples: pass counts of zero or more.",
    };
    raise(
        PgSqlErrorCode::ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE,
        &format!("{what}: {e}"),
        None,
        hint,
    )
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
            let record = Record::new(
                ts.value() as i64,
                count.value() as i64,
                float_or_nan(arg(fcinfo, 3)),
                float_or_nan(arg(fcinfo, 4)),
                float_or_nan(arg(fcinfo, 5)),
            )
            .unwrap_or_else(|e| unpackable("metricagg_pack_bins", e));
            let mut state = match state {
                Some(s) => s,
                None => alloc(aggregate_context(fcinfo), 64),
            };
            if (*state.as_ptr()).len == (*state.as_ptr()).cap {
                state = grow(state);
            }
            let p = &mut *state.as_ptr();
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
            pack_bins::sort(records);
            let (datum, out) = new_bytea(
                pack_bins::encoded_len(records.len()),
                "metricagg_pack_bins",
                Carries::Result,
            );
            pack_bins::encode(records, out);
            datum
        }
    }
}

pg_v1_function! {
    /// `metricagg_by_bin_packed_final(internal) → bytea`, the final function of
    /// `metricagg_stats_by_bin_packed`: the group's bins, ordered by start.
    /// Read back with `metricagg_unpack_stats`.
    fn metricagg_by_bin_packed_final / pg_finfo_metricagg_by_bin_packed_final (fcinfo) {
        unsafe {
            let Some(state) = binned_arg(arg(fcinfo, 0)) else {
                return pgrx::fcinfo::pg_return_null(fcinfo);
            };
            let b = &*state.as_ptr();
            let (datum, out) = new_bytea(
                stats_packed::encoded_len(b.nonempty()),
                "metricagg_stats_by_bin_packed",
                Carries::Result,
            );
            let mut e = stats_packed::Encoder::new(out);
            b.for_each_stats(|start, s| {
                e.push(start, &s).unwrap_or_else(|err| unpackable("metricagg_stats_by_bin_packed", err));
            });
            e.finish();
            datum
        }
    }
}

pg_v1_function! {
    /// `metricagg_unpack_stats(bytea) → SETOF metricagg_bin_stats`: the rows
    /// of a `metricagg_stats_by_bin_packed` value, in its order. The whole
    /// value is checked (`metricagg_core::codec::stats_packed::decode`)
    /// before the first row.
    fn metricagg_unpack_stats / pg_finfo_metricagg_unpack_stats (fcinfo) {
        unsafe {
            let bytes = bytes_of(arg(fcinfo, 0).expect("STRICT: bytea is not NULL"));
            let packed = stats_packed::decode(bytes).unwrap_or_else(|e| {
                decode_failed(
                    "metricagg_unpack_stats: not a metricagg_stats_by_bin_packed value",
                    &e,
                    Source::Argument { made_by: "metricagg_stats_by_bin_packed" },
                )
            });
            pg_sys::InitMaterializedSRF(fcinfo, 0);
            let rsinfo = (*fcinfo).resultinfo.cast::<pg_sys::ReturnSetInfo>();
            let (store, desc) = ((*rsinfo).setResult, (*rsinfo).setDesc);
            let mut nulls = [false; 6];
            for (start, s) in packed.iter() {
                let mut values = [
                    pg_sys::Datum::from(start),
                    pg_sys::Datum::from(s.count),
                    pg_sys::Datum::from(s.avg.to_bits()),
                    pg_sys::Datum::from(s.min.to_bits()),
                    pg_sys::Datum::from(s.max.to_bits()),
                    pg_sys::Datum::from(s.p80.to_bits()),
                ];
                pg_sys::tuplestore_putvalues(store, desc, values.as_mut_ptr(), nulls.as_mut_ptr());
            }
            pg_sys::Datum::from(0usize)
        }
    }
}
