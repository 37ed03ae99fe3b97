//! `metricagg_stats_by_bin(ts, value, width [, origin])`: count, avg, min, max
//! and p80 of every bin of a group, from one aggregate over the group.
//!
//! `GROUP BY server_id, metric_type, metricagg_bin(ts, w)` makes PostgreSQL
//! hash three keys (two of them text) for every row, and that machinery, not
//! the statistics, dominates the cost. Grouping by (server, metric) only and
//! binning inside the aggregate replaces it with integer comparisons: samples
//! arrive in time order, so a row almost always belongs to the bin the
//! previous row used ("sorted-input streaming"); any other row finds its bin
//! by binary search over the group's sorted bins. Every bin keeps its values
//! as the same keys `metricagg_stats` keeps, in the aggregate's memory
//! context, so results are exact and identical to the per-bin aggregate.

use std::ptr::{self, NonNull};

use metricagg_core::bin::{bin, bin_end, Width, DEFAULT_ORIGIN};
use metricagg_core::percentile::P80;
use metricagg_core::stats::summarize;
use pgrx::pg_sys;
use pgrx::PgSqlErrorCode;

use crate::agg::{aggregate_context, corrupt, grow, new_state, push, State, MAX_ALLOC_SIZE};
use crate::binning::report;
use crate::fmgr::{arg, pg_v1_function, raise};

/// One bin of a group: [start, end) and its values.
#[derive(Clone, Copy)]
struct Bin {
    start: i64,
    end: i64,
    values: NonNull<State>,
}

/// The group's state. `bins` is sorted by `start`; `cur` is the bin the last
/// row went to.
pub(crate) struct Binned {
    context: pg_sys::MemoryContext,
    interval: (i32, i32, i64),
    width: Width,
    origin: i64,
    bins: *mut Bin,
    len: u32,
    cap: u32,
    cur: u32,
}

const SERIAL_VERSION: u32 = 1;

unsafe fn alloc<T>(context: pg_sys::MemoryContext, count: usize) -> *mut T {
    let bytes = std::mem::size_of::<T>() * count.max(1);
    unsafe {
        pg_sys::MemoryContextAllocExtended(context, bytes, pg_sys::MCXT_ALLOC_HUGE as i32).cast()
    }
}

pub(crate) unsafe fn new_binned(
    context: pg_sys::MemoryContext,
    interval: (i32, i32, i64),
    origin: i64,
) -> NonNull<Binned> {
    let width =
        Width::from_interval(interval.0, interval.1, interval.2).unwrap_or_else(|e| report(e));
    if origin == i64::MIN || origin == i64::MAX {
        report(metricagg_core::bin::BinError::InfiniteOrigin);
    }
    unsafe {
        let state = alloc::<Binned>(context, 1);
        let cap = 8;
        state.write(Binned {
            context,
            interval,
            width,
            origin,
            bins: alloc::<Bin>(context, cap),
            len: 0,
            cap: cap as u32,
            cur: 0,
        });
        NonNull::new(state).expect("palloc does not return NULL")
    }
}

impl Binned {
    fn bins(&self) -> &[Bin] {
        // SAFETY: `bins` holds `len` initialised entries.
        unsafe { std::slice::from_raw_parts(self.bins, self.len as usize) }
    }

    /// Index of the bin starting at `start`, inserting an empty one if needed.
    unsafe fn bin_index(&mut self, start: i64, end: i64) -> u32 {
        match self.bins().binary_search_by_key(&start, |b| b.start) {
            Ok(i) => i as u32,
            Err(i) => unsafe {
                if self.len == self.cap {
                    let cap = (self.cap as usize * 2).max(8);
                    let bytes = cap * std::mem::size_of::<Bin>();
                    if bytes > MAX_ALLOC_SIZE * 4 {
                        raise(
                            PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
                            "metricagg_stats_by_bin: too many bins in one group",
                            None,
                            "Use a wider bin, or group by a time range as well.",
                        );
                    }
                    self.bins = pg_sys::repalloc_huge(self.bins.cast(), bytes).cast();
                    self.cap = cap as u32;
                }
                ptr::copy(
                    self.bins.add(i),
                    self.bins.add(i + 1),
                    self.len as usize - i,
                );
                self.bins.add(i).write(Bin {
                    start,
                    end,
                    values: new_state(self.context, P80, 0),
                });
                self.len += 1;
                i as u32
            },
        }
    }

    /// Adds one value at `ts`: to the bin of the previous row when it
    /// contains `ts` (the common case for time-ordered input), otherwise to
    /// the bin found, or created, by binary search.
    #[inline(always)]
    pub(crate) unsafe fn add(&mut self, ts: i64, value: f64) {
        let idx = match self.bins().get(self.cur as usize) {
            Some(c) if c.start <= ts && ts < c.end => self.cur,
            _ => {
                let start = bin(ts, self.width, self.origin).unwrap_or_else(|e| report(e));
                unsafe { self.bin_index(start, bin_end(start, self.width)) }
            }
        };
        unsafe {
            let slot = &mut *self.bins.add(idx as usize);
            slot.values = push(slot.values, value);
        }
        self.cur = idx;
    }

    /// Appends every bin of `other` (same width and origin) to this state.
    pub(crate) unsafe fn merge_from(&mut self, other: &Binned) {
        if self.interval != other.interval || self.origin != other.origin {
            width_mismatch();
        }
        for rb in other.bins() {
            unsafe {
                let idx = self.bin_index(rb.start, rb.end);
                let slot = &mut *self.bins.add(idx as usize);
                let add = &*rb.values.as_ptr();
                let have = &*slot.values.as_ptr();
                if have.cap - have.len < add.len {
                    slot.values = grow(slot.values, add.len as usize);
                }
                let dst = State::keys(slot.values)
                    .as_mut_ptr()
                    .add((*slot.values.as_ptr()).len as usize);
                ptr::copy_nonoverlapping(State::keys(rb.values).as_ptr(), dst, add.len as usize);
                (*slot.values.as_ptr()).len += add.len;
                (*slot.values.as_ptr()).sum += add.sum;
            }
        }
    }

    /// Writes the width, origin and every bin with its values.
    pub(crate) fn serialize_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.interval.0.to_le_bytes());
        out.extend_from_slice(&self.interval.1.to_le_bytes());
        out.extend_from_slice(&self.interval.2.to_le_bytes());
        out.extend_from_slice(&self.origin.to_le_bytes());
        out.extend_from_slice(&self.len.to_le_bytes());
        for bin in self.bins() {
            // SAFETY: every bin's values point to a live state.
            let v = unsafe { &*bin.values.as_ptr() };
            out.extend_from_slice(&bin.start.to_le_bytes());
            out.extend_from_slice(&bin.end.to_le_bytes());
            out.extend_from_slice(&v.len.to_le_bytes());
            out.extend_from_slice(&v.sum.to_le_bytes());
            for k in unsafe { State::keys(bin.values) }.iter() {
                out.extend_from_slice(&k.to_le_bytes());
            }
        }
    }

    /// Reads what `serialize_into` wrote, into a new state in `context`.
    pub(crate) unsafe fn deserialize_from(
        r: &mut Reader<'_>,
        context: pg_sys::MemoryContext,
    ) -> NonNull<Binned> {
        let interval = (
            i32::from_le_bytes(r.take()),
            i32::from_le_bytes(r.take()),
            i64::from_le_bytes(r.take()),
        );
        let origin = i64::from_le_bytes(r.take());
        let nbins = u32::from_le_bytes(r.take());
        unsafe {
            let state = new_binned(context, interval, origin);
            let b = &mut *state.as_ptr();
            for _ in 0..nbins {
                let start = i64::from_le_bytes(r.take());
                let end = i64::from_le_bytes(r.take());
                let len = u32::from_le_bytes(r.take()) as usize;
                let sum = f64::from_le_bytes(r.take());
                if r.0.len() < len * 8 {
                    corrupt("A bin holds fewer values than it claims.");
                }
                let idx = b.bin_index(start, end);
                let slot = &mut *b.bins.add(idx as usize);
                slot.values = grow(slot.values, len);
                let keys = std::slice::from_raw_parts_mut(
                    slot.values
                        .as_ptr()
                        .cast::<u8>()
                        .add(crate::agg::HEADER)
                        .cast::<u64>(),
                    len,
                );
                for k in keys.iter_mut() {
                    *k = u64::from_le_bytes(r.take());
                }
                (*slot.values.as_ptr()).len = len as u32;
                (*slot.values.as_ptr()).sum = sum;
            }
            state
        }
    }

    /// Calls `f(bin start, stats)` for every non-empty bin, in time order.
    /// Reorders each bin's keys (selection), which leaves the state valid.
    pub(crate) fn for_each_stats(&self, mut f: impl FnMut(i64, metricagg_core::stats::Stats)) {
        for bin in self.bins() {
            // SAFETY: every bin's values point to a live state.
            let sum = unsafe { (*bin.values.as_ptr()).sum };
            if let Some(s) = summarize(unsafe { State::keys(bin.values) }, sum) {
                f(bin.start, s);
            }
        }
    }
}

fn width_mismatch() -> ! {
    raise(
        PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
        "metricagg_stats_by_bin: width and origin must be the same for every row of a group",
        None,
        "Pass constants, e.g. metricagg_stats_by_bin(ts, value, '1 minute').",
    )
}

#[inline(always)]
fn datum(state: Option<NonNull<Binned>>, fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
    match state {
        Some(s) => pg_sys::Datum::from(s.as_ptr()),
        None => unsafe { pgrx::fcinfo::pg_return_null(fcinfo) },
    }
}

pub(crate) fn binned_arg(d: Option<pg_sys::Datum>) -> Option<NonNull<Binned>> {
    d.and_then(|d| NonNull::new(d.cast_mut_ptr::<Binned>()))
}

pg_v1_function! {
    /// `metricagg_by_bin_trans(internal, timestamptz, float8, interval [, timestamptz]) → internal`.
    /// Rows with a NULL timestamp or value are skipped.
    fn metricagg_by_bin_trans / pg_finfo_metricagg_by_bin_trans (fcinfo) {
        unsafe {
            let state = binned_arg(arg(fcinfo, 0));
            let (Some(ts), Some(value)) = (arg(fcinfo, 1), arg(fcinfo, 2)) else {
                return datum(state, fcinfo);
            };
            let Some(width) = arg(fcinfo, 3) else {
                raise(
                    PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
                    "metricagg_stats_by_bin: width must not be NULL",
                    None,
                    "Pass a bin width such as '1 minute'.",
                );
            };
            let iv = &*width.cast_mut_ptr::<pg_sys::Interval>();
            let interval = (iv.month, iv.day, iv.time);
            let origin = if (*fcinfo).nargs > 4 {
                match arg(fcinfo, 4) {
                    Some(o) => o.value() as i64,
                    None => report(metricagg_core::bin::BinError::InfiniteOrigin),
                }
            } else {
                DEFAULT_ORIGIN
            };
            let state = match state {
                Some(s) => {
                    let b = &*s.as_ptr();
                    if b.interval != interval || b.origin != origin {
                        width_mismatch();
                    }
                    s
                }
                None => new_binned(aggregate_context(fcinfo), interval, origin),
            };
            (*state.as_ptr()).add(ts.value() as i64, f64::from_bits(value.value() as u64));
            datum(Some(state), fcinfo)
        }
    }
}

pg_v1_function! {
    /// `metricagg_by_bin_combine(internal, internal) → internal`: merges bins
    /// by start, appending values. Copies into the aggregate context.
    fn metricagg_by_bin_combine / pg_finfo_metricagg_by_bin_combine (fcinfo) {
        unsafe {
            let left = binned_arg(arg(fcinfo, 0));
            let Some(right) = binned_arg(arg(fcinfo, 1)) else {
                return datum(left, fcinfo);
            };
            let r = &*right.as_ptr();
            let left = match left {
                Some(l) => l,
                None => new_binned(aggregate_context(fcinfo), r.interval, r.origin),
            };
            (*left.as_ptr()).merge_from(r);
            datum(Some(left), fcinfo)
        }
    }
}

pg_v1_function! {
    /// `metricagg_by_bin_serialize(internal) → bytea`.
    fn metricagg_by_bin_serialize / pg_finfo_metricagg_by_bin_serialize (fcinfo) {
        unsafe {
            let state = binned_arg(arg(fcinfo, 0)).expect("STRICT: state is not NULL");
            let b = &*state.as_ptr();
            let mut out = Vec::with_capacity(36 + b.len as usize * 64);
            out.extend_from_slice(&SERIAL_VERSION.to_le_bytes());
            b.serialize_into(&mut out);
            to_bytea(&out, "metricagg_stats_by_bin", Carries::PartialState)
        }
    }
}

/// What a bytea made by [`to_bytea`] carries: it decides the error when the
/// bytes would not fit.
#[derive(Clone, Copy)]
pub(crate) enum Carries {
    /// A partial aggregate state passed between parallel workers.
    PartialState,
    /// An aggregate's result.
    Result,
}

/// Copies bytes into a new bytea, refusing more than a varlena holds.
pub(crate) fn to_bytea(out: &[u8], what: &str, carries: Carries) -> pg_sys::Datum {
    if out.len() + pg_sys::VARHDRSZ > MAX_ALLOC_SIZE {
        let detail = format!("It takes {} bytes; a bytea holds at most 1 GB.", out.len());
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
        );
    }
    let total = out.len() + pg_sys::VARHDRSZ;
    // SAFETY: palloc returns `total` writable bytes; the varlena header is set before use.
    unsafe {
        let bytea = pg_sys::palloc(total).cast::<pg_sys::varlena>();
        pgrx::set_varsize_4b(bytea, total as i32);
        ptr::copy_nonoverlapping(
            out.as_ptr(),
            bytea.cast::<u8>().add(pg_sys::VARHDRSZ),
            out.len(),
        );
        pg_sys::Datum::from(bytea)
    }
}

/// A little-endian reader over a serialized state.
pub(crate) struct Reader<'a>(pub(crate) &'a [u8]);

impl Reader<'_> {
    pub(crate) fn take<const N: usize>(&mut self) -> [u8; N] {
        if self.0.len() < N {
            corrupt("The state ends early.");
        }
        let (head, rest) = self.0.split_at(N);
        self.0 = rest;
        head.try_into().expect("N bytes")
    }
}

pg_v1_function! {
    /// `metricagg_by_bin_deserialize(bytea, internal) → internal`.
    fn metricagg_by_bin_deserialize / pg_finfo_metricagg_by_bin_deserialize (fcinfo) {
        unsafe {
            let datum = arg(fcinfo, 0).expect("STRICT: bytea is not NULL");
            let bytea = pg_sys::pg_detoast_datum(datum.cast_mut_ptr());
            let mut r = Reader(pgrx::varlena::varlena_to_byte_slice(bytea));
            if u32::from_le_bytes(r.take()) != SERIAL_VERSION {
                corrupt("Unknown state version.");
            }
            // Short-lived, like the plain aggregates' deserialized states:
            // combine copies it into the aggregate context.
            let state = Binned::deserialize_from(&mut r, pg_sys::CurrentMemoryContext);
            if !r.0.is_empty() {
                corrupt("Trailing bytes after the last bin.");
            }
            pg_sys::Datum::from(state.as_ptr())
        }
    }
}

/// The element type of the result array and its blessed descriptor, looked
/// up once per aggregate and kept in `fn_extra`.
pub(crate) struct ResultType {
    pub(crate) element: pg_sys::Oid,
    pub(crate) tupdesc: pg_sys::TupleDesc,
}

pub(crate) unsafe fn result_type(fcinfo: pg_sys::FunctionCallInfo) -> &'static ResultType {
    unsafe {
        let flinfo = (*fcinfo).flinfo;
        if (*flinfo).fn_extra.is_null() {
            let array = pg_sys::get_fn_expr_rettype(flinfo);
            let element = pg_sys::get_element_type(array);
            if element == pg_sys::InvalidOid {
                raise(
                    PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
                    "metricagg_stats_by_bin: cannot determine the result type",
                    None,
                    "Reinstall the extension.",
                );
            }
            let old = pg_sys::MemoryContextSwitchTo((*flinfo).fn_mcxt);
            let tupdesc = pg_sys::BlessTupleDesc(pg_sys::lookup_rowtype_tupdesc_copy(element, -1));
            let cached = pg_sys::palloc(std::mem::size_of::<ResultType>()).cast::<ResultType>();
            cached.write(ResultType { element, tupdesc });
            pg_sys::MemoryContextSwitchTo(old);
            (*flinfo).fn_extra = cached.cast();
        }
        &*(*flinfo).fn_extra.cast::<ResultType>()
    }
}

/// One composite datum of the result's row type; no field is NULL.
///
/// # Safety
/// `values` must match the row type of `rt` field for field.
pub(crate) unsafe fn form_row<const N: usize>(
    rt: &ResultType,
    mut values: [pg_sys::Datum; N],
) -> pg_sys::Datum {
    let mut nulls = [false; N];
    unsafe {
        let tuple = pg_sys::heap_form_tuple(rt.tupdesc, values.as_mut_ptr(), nulls.as_mut_ptr());
        pg_sys::HeapTupleHeaderGetDatum((*tuple).t_data)
    }
}

/// An array of the result's row type from datums made by [`form_row`].
///
/// # Safety
/// Every element must be a composite datum of `rt.element`.
pub(crate) unsafe fn form_array(
    rt: &ResultType,
    mut elements: Vec<pg_sys::Datum>,
) -> pg_sys::Datum {
    let array = unsafe {
        pg_sys::construct_array(
            elements.as_mut_ptr(),
            elements.len() as i32,
            rt.element,
            -1,
            false,
            pg_sys::TYPALIGN_DOUBLE as std::os::raw::c_char,
        )
    };
    pg_sys::Datum::from(array)
}

pg_v1_function! {
    /// `metricagg_by_bin_final(internal) → metricagg_bin_stats[]`, ordered by bin.
    fn metricagg_by_bin_final / pg_finfo_metricagg_by_bin_final (fcinfo) {
        unsafe {
            let Some(state) = binned_arg(arg(fcinfo, 0)) else {
                return pgrx::fcinfo::pg_return_null(fcinfo);
            };
            let rt = result_type(fcinfo);
            let b = &*state.as_ptr();
            let mut elements = Vec::with_capacity(b.len as usize);
            b.for_each_stats(|start, s| {
                elements.push(form_row(rt, [
                    pg_sys::Datum::from(start),
                    pg_sys::Datum::from(s.count),
                    pg_sys::Datum::from(s.avg.to_bits()),
                    pg_sys::Datum::from(s.min.to_bits()),
                    pg_sys::Datum::from(s.max.to_bits()),
                    pg_sys::Datum::from(s.p80.to_bits()),
                ]));
            });
            form_array(rt, elements)
        }
    }
}
