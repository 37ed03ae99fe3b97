//! `metricagg_stats_by_bin(ts, value, width [, origin])`: count, avg, min, max
//! and p80 of every bin of a group, from one aggregate over the group.
//!
//! `GROUP BY server_id, metric_type, metricagg_bin(ts, w)` makes PostgreSQL
//! hash three keys (two of them text) for every row, and that machinery, not
//! the statistics, dominates the cost. Grouping by (server, metric) only and
//! binning inside the aggregate replaces it with integer comparisons: samples
//! arrive in time order, so a row almost always belongs to the bin the
//! previous row used ("sorted-input streaming"); any other row finds its bin
//! by binary search over the group's sorted bins (`metricagg_core::grid`
//! decides both). Every bin keeps its values as the same keys
//! `metricagg_stats` keeps, in the aggregate's memory context, so results are
//! exact and identical to the per-bin aggregate. The serialized state is
//! `metricagg_core::codec::binned_state`.

use std::ptr::{self, NonNull};

use metricagg_core::bin::{Interval, DEFAULT_ORIGIN};
use metricagg_core::codec::binned_state::{self, BinnedState};
use metricagg_core::codec::Writer;
use metricagg_core::grid::{self, Grid, Slot, Span, Step};
use metricagg_core::percentile::P80;
use metricagg_core::stats::summarize;
use pgrx::pg_sys;
use pgrx::PgSqlErrorCode;

use crate::agg::{aggregate_context, append, new_state, push, state_from_keys, State};
use crate::binning::report;
use crate::bytea::{bytes_of, decode_failed, new_bytea, Carries, Source, MAX_ALLOC_SIZE};
use crate::fmgr::{arg, pg_v1_function, raise};

/// One bin of a group: its span and its values.
#[repr(C)]
#[derive(Clone, Copy)]
struct Bin {
    span: Span,
    values: NonNull<State>,
}

impl AsRef<Span> for Bin {
    fn as_ref(&self) -> &Span {
        &self.span
    }
}

/// The group's state. `bins` is sorted by start; `cur` is the bin the last
/// row went to.
pub(crate) struct Binned {
    context: pg_sys::MemoryContext,
    grid: Grid,
    bins: *mut Bin,
    len: u32,
    cap: u32,
    cur: u32,
}

unsafe fn alloc<T>(context: pg_sys::MemoryContext, count: usize) -> *mut T {
    let bytes = std::mem::size_of::<T>() * count.max(1);
    unsafe {
        pg_sys::MemoryContextAllocExtended(context, bytes, pg_sys::MCXT_ALLOC_HUGE as i32).cast()
    }
}

/// The width and origin arguments of a binning aggregate's transition
/// function: the width at `at`, the origin after it when the SQL function
/// has one. `what` names the aggregate in errors.
///
/// # Safety
/// `fcinfo` is a call with at least `at + 1` arguments, the width an interval.
pub(crate) unsafe fn grid_args(
    fcinfo: pg_sys::FunctionCallInfo,
    at: usize,
    what: &str,
) -> (Interval, i64) {
    unsafe {
        let Some(width) = arg(fcinfo, at) else {
            raise(
                PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
                &format!("{what}: width must not be NULL"),
                None,
                "Pass a bin width such as '1 minute'.",
            );
        };
        let iv = &*width.cast_mut_ptr::<pg_sys::Interval>();
        let interval = Interval {
            months: iv.month,
            days: iv.day,
            micros: iv.time,
        };
        let origin = if (*fcinfo).nargs as usize > at + 1 {
            match arg(fcinfo, at + 1) {
                Some(o) => o.value() as i64,
                None => report(metricagg_core::bin::BinError::InfiniteOrigin),
            }
        } else {
            DEFAULT_ORIGIN
        };
        (interval, origin)
    }
}

/// A grid from transition arguments, with `metricagg_bin`'s errors.
pub(crate) fn grid_of((interval, origin): (Interval, i64)) -> Grid {
    Grid::new(interval, origin).unwrap_or_else(|e| report(e))
}

/// Errors unless a row's width and origin are the group's.
#[inline(always)]
pub(crate) fn same_grid(grid: &Grid, (interval, origin): (Interval, i64), what: &str) {
    if grid.interval() != interval || grid.origin() != origin {
        grid_mismatch(what);
    }
}

#[cold]
fn grid_mismatch(what: &str) -> ! {
    raise(
        PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
        &format!("{what}: width and origin must be the same for every row of a group"),
        None,
        "Pass constants, e.g. '1 minute' for the width.",
    )
}

/// An empty state with room for `cap` bins.
pub(crate) unsafe fn new_binned(
    context: pg_sys::MemoryContext,
    grid: Grid,
    cap: usize,
) -> NonNull<Binned> {
    let cap = cap.max(8);
    unsafe {
        let state = alloc::<Binned>(context, 1);
        state.write(Binned {
            context,
            grid,
            bins: alloc::<Bin>(context, cap),
            len: 0,
            cap: cap_u32(cap),
            cur: 0,
        });
        NonNull::new(state).expect("palloc does not return NULL")
    }
}

fn cap_u32(cap: usize) -> u32 {
    match u32::try_from(cap) {
        Ok(c) if cap * std::mem::size_of::<Bin>() <= MAX_ALLOC_SIZE * 4 => c,
        _ => raise(
            PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
            "metricagg_stats_by_bin: too many bins in one group",
            None,
            "Use a wider bin, or group by a time range as well.",
        ),
    }
}

impl Binned {
    fn bins(&self) -> &[Bin] {
        // SAFETY: `bins` holds `len` initialised entries.
        unsafe { std::slice::from_raw_parts(self.bins, self.len as usize) }
    }

    /// Inserts `bin` at `i`, moving the later bins up.
    unsafe fn insert(&mut self, i: usize, bin: Bin) {
        unsafe {
            if self.len == self.cap {
                let cap = self.cap as usize * 2;
                let cap32 = cap_u32(cap);
                self.bins =
                    pg_sys::repalloc_huge(self.bins.cast(), cap * std::mem::size_of::<Bin>())
                        .cast();
                self.cap = cap32;
            }
            ptr::copy(
                self.bins.add(i),
                self.bins.add(i + 1),
                self.len as usize - i,
            );
            self.bins.add(i).write(bin);
            self.len += 1;
        }
    }

    /// Adds one value at `ts` to its bin, created if new.
    #[inline(always)]
    pub(crate) unsafe fn add(&mut self, ts: i64, value: f64) {
        let idx = match self.grid.locate(self.bins(), self.cur as usize, ts) {
            Ok(Slot::Found(i)) => i,
            Ok(Slot::Missing(i, span)) => unsafe {
                let values = new_state(self.context, P80, 0);
                self.insert(i, Bin { span, values });
                i
            },
            Err(e) => report(e),
        };
        unsafe {
            let slot = &mut *self.bins.add(idx);
            slot.values = push(slot.values, value);
        }
        self.cur = idx as u32;
    }

    /// Merges every bin of `other` (same width and origin) into this state:
    /// values of bins both have are appended, the others' bins copied in.
    pub(crate) unsafe fn merge_from(&mut self, other: &Binned, what: &str) {
        if self.grid != other.grid {
            grid_mismatch(what);
        }
        let (mine, theirs) = (self.bins(), other.bins());
        let new = grid::merge(mine, theirs)
            .filter(|s| matches!(s, Step::Right(_)))
            .count();
        unsafe {
            if new == 0 {
                // Every bin exists here already: append in place.
                for theirs in theirs {
                    let i = grid::search(self.bins(), theirs.span.start).expect("a bin both have");
                    let slot = &mut *self.bins.add(i);
                    slot.values = copy_values(slot.values, theirs.values);
                }
                return;
            }
            let cap = self.len as usize + new;
            let merged = alloc::<Bin>(self.context, cap);
            for (k, step) in grid::merge(mine, theirs).enumerate() {
                let bin = match step {
                    Step::Left(i) => mine[i],
                    Step::Right(j) => Bin {
                        span: theirs[j].span,
                        values: copy_values(new_state(self.context, P80, 0), theirs[j].values),
                    },
                    Step::Both(i, j) => Bin {
                        span: mine[i].span,
                        values: copy_values(mine[i].values, theirs[j].values),
                    },
                };
                merged.add(k).write(bin);
            }
            pg_sys::pfree(self.bins.cast());
            self.bins = merged;
            self.len = cap_u32(cap);
            self.cap = self.len;
            self.cur = 0;
        }
    }

    /// The serialized length of the bins as a `binned_state` body.
    pub(crate) fn body_len(&self) -> Option<usize> {
        // SAFETY: every bin's values point to a live state.
        binned_state::body_len(
            self.bins()
                .iter()
                .map(|b| unsafe { (*b.values.as_ptr()).len } as usize),
        )
    }

    /// Writes the width, origin and every bin with its values.
    pub(crate) fn write_body(&self, w: &mut Writer<'_>) {
        binned_state::write_body_prefix(w, &self.grid, self.len);
        for b in self.bins() {
            // SAFETY: every bin's values point to a live state.
            unsafe {
                binned_state::write_bin(w, b.span, (*b.values.as_ptr()).sum, State::keys(b.values))
            };
        }
    }

    /// A new state in `context` holding a decoded body.
    pub(crate) unsafe fn from_decoded(
        context: pg_sys::MemoryContext,
        d: &BinnedState<'_>,
    ) -> NonNull<Binned> {
        unsafe {
            let state = new_binned(context, d.grid, d.len());
            let b = &mut *state.as_ptr();
            for (i, bin) in d.bins().enumerate() {
                let values = state_from_keys(context, P80, bin.sum, bin.keys);
                b.bins.add(i).write(Bin {
                    span: bin.span,
                    values,
                });
            }
            b.len = d.len() as u32;
            state
        }
    }

    /// The number of non-empty bins.
    pub(crate) fn nonempty(&self) -> usize {
        // SAFETY: every bin's values point to a live state.
        self.bins()
            .iter()
            .filter(|b| unsafe { (*b.values.as_ptr()).len } > 0)
            .count()
    }

    /// Calls `f(bin start, stats)` for every non-empty bin, in time order.
    /// Reorders each bin's keys (selection), which leaves the state valid.
    pub(crate) fn for_each_stats(&self, mut f: impl FnMut(i64, metricagg_core::stats::Stats)) {
        for bin in self.bins() {
            // SAFETY: every bin's values point to a live state.
            let sum = unsafe { (*bin.values.as_ptr()).sum };
            if let Some(s) = summarize(unsafe { State::keys(bin.values) }, sum) {
                f(bin.span.start, s);
            }
        }
    }
}

/// Appends the values of `from` to `to`.
unsafe fn copy_values(to: NonNull<State>, from: NonNull<State>) -> NonNull<State> {
    unsafe { append(to, State::keys(from), (*from.as_ptr()).sum) }
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

const WHAT: &str = "metricagg_stats_by_bin";

pg_v1_function! {
    /// `metricagg_by_bin_trans(internal, timestamptz, float8, interval [, timestamptz]) → internal`.
    /// Rows with a NULL timestamp or value are skipped.
    fn metricagg_by_bin_trans / pg_finfo_metricagg_by_bin_trans (fcinfo) {
        unsafe {
            let state = binned_arg(arg(fcinfo, 0));
            let (Some(ts), Some(value)) = (arg(fcinfo, 1), arg(fcinfo, 2)) else {
                return datum(state, fcinfo);
            };
            let args = grid_args(fcinfo, 3, WHAT);
            let state = match state {
                Some(s) => {
                    same_grid(&(*s.as_ptr()).grid, args, WHAT);
                    s
                }
                None => new_binned(aggregate_context(fcinfo), grid_of(args), 8),
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
                None => new_binned(aggregate_context(fcinfo), r.grid, r.len as usize),
            };
            (*left.as_ptr()).merge_from(r, WHAT);
            datum(Some(left), fcinfo)
        }
    }
}

pg_v1_function! {
    /// `metricagg_by_bin_serialize(internal) → bytea`: see
    /// `metricagg_core::codec::binned_state`.
    fn metricagg_by_bin_serialize / pg_finfo_metricagg_by_bin_serialize (fcinfo) {
        unsafe {
            let state = binned_arg(arg(fcinfo, 0)).expect("STRICT: state is not NULL");
            let b = &*state.as_ptr();
            let len = b.body_len().and_then(|n| n.checked_add(metricagg_core::codec::HEADER_LEN));
            let (datum, out) = new_bytea(len, WHAT, Carries::PartialState);
            let mut w = Writer::new(out);
            binned_state::write_header(&mut w);
            b.write_body(&mut w);
            w.finish();
            datum
        }
    }
}

pg_v1_function! {
    /// `metricagg_by_bin_deserialize(bytea, internal) → internal`: checked by
    /// `metricagg_core::codec::binned_state::decode` before anything is
    /// allocated.
    fn metricagg_by_bin_deserialize / pg_finfo_metricagg_by_bin_deserialize (fcinfo) {
        unsafe {
            let bytes = bytes_of(arg(fcinfo, 0).expect("STRICT: bytea is not NULL"));
            let decoded = binned_state::decode(bytes).unwrap_or_else(|e| {
                decode_failed("metricagg_stats_by_bin: invalid serialized aggregate state", &e, Source::PartialState)
            });
            // Short-lived, like the plain aggregates' deserialized states:
            // combine copies it into the aggregate context.
            let state = Binned::from_decoded(pg_sys::CurrentMemoryContext, &decoded);
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
