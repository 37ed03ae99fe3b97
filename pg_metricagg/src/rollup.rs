//! `metricagg_rollup(server_id, metric_type, ts, value, width [, origin])`:
//! every bin of every series of the input in one aggregate, no GROUP BY.
//!
//! Profiling `GROUP BY server_id, metric_type, <bin>` shows PostgreSQL
//! spending most of the time in its generic grouping machinery (hashing two
//! text keys per row through fmgr, collation lookups, `texteq`), far more
//! than in any aggregate. This aggregate does the grouping itself: the
//! (server, metric) pair is hashed once per row (`metricagg_core::series`)
//! into a small map of series; within a series, rows arriving in time order
//! land in the bin of the previous row (one integer comparison). Values are
//! kept exactly as `metricagg_stats` keeps them, in the aggregate's memory
//! context, so the results are identical to
//! `GROUP BY server_id, metric_type, metricagg_bin(ts, width)` with
//! `metricagg_stats`. Combine/serialize/deserialize make it parallel safe;
//! a worker's partial state holds its raw values, so one partial state is
//! limited to 1 GB (about 100M values). The serialized state is
//! `metricagg_core::codec::rollup_state`.

use std::collections::HashMap;
use std::ptr::NonNull;

use metricagg_core::codec::rollup_state;
use metricagg_core::codec::{DecodeError, Writer};
use metricagg_core::grid::Grid;
use metricagg_core::series::{cmp_keys, split_key, write_key, FxBuildHasher};
use pgrx::pg_sys;
use pgrx::PgMemoryContexts;

use crate::agg::aggregate_context;
use crate::binned::{
    form_array, form_row, grid_args, grid_of, new_binned, result_type, same_grid, Binned,
};
use crate::bytea::{bytes_of, decode_failed, new_bytea, Carries, Source};
use crate::fmgr::{arg, pg_v1_function};

/// One series: its key (see `metricagg_core::series`) and its bins.
struct Series {
    key: Box<[u8]>,
    bins: NonNull<Binned>,
}

/// The state: series by key. Lives in Rust memory registered for dropping
/// with the aggregate's memory context; the bins and values are allocated
/// in that context itself.
struct Rollup {
    context: pg_sys::MemoryContext,
    grid: Grid,
    index: HashMap<Box<[u8]>, u32, FxBuildHasher>,
    series: Vec<Series>,
    scratch: Vec<u8>,
}

const WHAT: &str = "metricagg_rollup";

unsafe fn new_rollup(context: pg_sys::MemoryContext, grid: Grid) -> NonNull<Rollup> {
    let rollup = Rollup {
        context,
        grid,
        index: HashMap::default(),
        series: Vec::new(),
        scratch: Vec::with_capacity(64),
    };
    let ptr = PgMemoryContexts::For(context).leak_and_drop_on_delete(rollup);
    NonNull::new(ptr).expect("leaked box is not null")
}

impl Rollup {
    /// The bins of the series whose key is in `self.scratch`, created if new.
    unsafe fn series_for_scratch(&mut self) -> NonNull<Binned> {
        if let Some(&i) = self.index.get(&self.scratch[..]) {
            return self.series[i as usize].bins;
        }
        let bins = unsafe { new_binned(self.context, self.grid, 8) };
        self.push(self.scratch.as_slice().into(), bins);
        bins
    }

    fn push(&mut self, key: Box<[u8]>, bins: NonNull<Binned>) {
        let previous = self.index.insert(key.clone(), self.series.len() as u32);
        debug_assert!(previous.is_none(), "a series is added once");
        self.series.push(Series { key, bins });
    }
}

/// The bytes of a text datum, detoasting only when it is compressed or
/// stored out of line (names are short and inline in practice).
unsafe fn text_bytes<'a>(d: pg_sys::Datum) -> &'a [u8] {
    unsafe {
        let mut p = d.cast_mut_ptr::<pg_sys::varlena>();
        if pgrx::varlena::varatt_is_1b_e(p) || pgrx::varlena::varatt_is_4b_c(p) {
            p = pg_sys::pg_detoast_datum_packed(p);
        }
        pgrx::varlena::varlena_to_byte_slice(p)
    }
}

fn rollup_arg(d: Option<pg_sys::Datum>) -> Option<NonNull<Rollup>> {
    d.and_then(|d| NonNull::new(d.cast_mut_ptr::<Rollup>()))
}

fn datum(state: Option<NonNull<Rollup>>, fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
    match state {
        Some(s) => pg_sys::Datum::from(s.as_ptr()),
        None => unsafe { pgrx::fcinfo::pg_return_null(fcinfo) },
    }
}

pg_v1_function! {
    /// `metricagg_rollup_trans(internal, text, text, timestamptz, float8, interval [, timestamptz]) → internal`.
    /// Rows with a NULL server, metric, timestamp or value are skipped.
    fn metricagg_rollup_trans / pg_finfo_metricagg_rollup_trans (fcinfo) {
        unsafe {
            let state = rollup_arg(arg(fcinfo, 0));
            let (Some(server), Some(metric), Some(ts), Some(value)) =
                (arg(fcinfo, 1), arg(fcinfo, 2), arg(fcinfo, 3), arg(fcinfo, 4))
            else {
                return datum(state, fcinfo);
            };
            let args = grid_args(fcinfo, 5, WHAT);
            let state = match state {
                Some(s) => {
                    same_grid(&(*s.as_ptr()).grid, args, WHAT);
                    s
                }
                None => new_rollup(aggregate_context(fcinfo), grid_of(args)),
            };
            let r = &mut *state.as_ptr();
            write_key(&mut r.scratch, text_bytes(server), text_bytes(metric));
            let bins = r.series_for_scratch();
            (*bins.as_ptr()).add(ts.value() as i64, f64::from_bits(value.value() as u64));
            datum(Some(state), fcinfo)
        }
    }
}

pg_v1_function! {
    /// `metricagg_rollup_combine(internal, internal) → internal`.
    fn metricagg_rollup_combine / pg_finfo_metricagg_rollup_combine (fcinfo) {
        unsafe {
            let left = rollup_arg(arg(fcinfo, 0));
            let Some(right) = rollup_arg(arg(fcinfo, 1)) else {
                return datum(left, fcinfo);
            };
            let rr = &*right.as_ptr();
            let left = match left {
                Some(l) => l,
                None => new_rollup(aggregate_context(fcinfo), rr.grid),
            };
            let l = &mut *left.as_ptr();
            for s in &rr.series {
                l.scratch.clear();
                l.scratch.extend_from_slice(&s.key);
                let bins = l.series_for_scratch();
                (*bins.as_ptr()).merge_from(&*s.bins.as_ptr(), WHAT);
            }
            datum(Some(left), fcinfo)
        }
    }
}

pg_v1_function! {
    /// `metricagg_rollup_serialize(internal) → bytea`: see
    /// `metricagg_core::codec::rollup_state`. The length is computed and
    /// checked before anything is allocated.
    fn metricagg_rollup_serialize / pg_finfo_metricagg_rollup_serialize (fcinfo) {
        unsafe {
            let state = rollup_arg(arg(fcinfo, 0)).expect("STRICT: state is not NULL");
            let r = &*state.as_ptr();
            let len = r.series.iter().try_fold(rollup_state::PREFIX_LEN, |len, s| {
                let body = (*s.bins.as_ptr()).body_len()?;
                len.checked_add(rollup_state::series_len(s.key.len(), body)?)
            });
            let (datum, out) = new_bytea(len, WHAT, Carries::PartialState);
            let mut w = Writer::new(out);
            rollup_state::write_prefix(&mut w, &r.grid, r.series.len() as u32);
            for s in &r.series {
                rollup_state::write_series_key(&mut w, &s.key);
                (*s.bins.as_ptr()).write_body(&mut w);
            }
            w.finish();
            datum
        }
    }
}

fn invalid_state(e: DecodeError) -> ! {
    decode_failed(
        "metricagg_rollup: invalid serialized aggregate state",
        &e,
        Source::PartialState,
    )
}

/// Is `bytes` valid text in the database's encoding (no NUL either)?
fn valid_text(bytes: &[u8]) -> bool {
    let Ok(len) = i32::try_from(bytes.len()) else {
        return false;
    };
    // SAFETY: pg_verifymbstr reads `len` bytes and, with noError, only reports.
    unsafe { pg_sys::pg_verifymbstr(bytes.as_ptr().cast(), len, true) }
}

pg_v1_function! {
    /// `metricagg_rollup_deserialize(bytea, internal) → internal`: checked by
    /// `metricagg_core::codec::rollup_state::decode` (and the names against
    /// the database encoding) before anything is allocated.
    fn metricagg_rollup_deserialize / pg_finfo_metricagg_rollup_deserialize (fcinfo) {
        unsafe {
            let bytes = bytes_of(arg(fcinfo, 0).expect("STRICT: bytea is not NULL"));
            let decoded = rollup_state::decode(bytes).unwrap_or_else(|e| invalid_state(e));
            if let Some(index) = decoded.series().position(|s| !valid_text(s.server) || !valid_text(s.metric)) {
                invalid_state(DecodeError::SeriesKey { index });
            }
            let context = pg_sys::CurrentMemoryContext;
            let state = new_rollup(context, decoded.grid);
            let r = &mut *state.as_ptr();
            for s in decoded.series() {
                r.push(s.key.into(), Binned::from_decoded(context, &s.bins));
            }
            pg_sys::Datum::from(state.as_ptr())
        }
    }
}

pg_v1_function! {
    /// `metricagg_rollup_final(internal) → metricagg_rollup_row[]`, ordered by
    /// server, metric and bin.
    fn metricagg_rollup_final / pg_finfo_metricagg_rollup_final (fcinfo) {
        unsafe {
            let Some(state) = rollup_arg(arg(fcinfo, 0)) else {
                return pgrx::fcinfo::pg_return_null(fcinfo);
            };
            let rt = result_type(fcinfo);
            let r = &*state.as_ptr();
            let mut order: Vec<&Series> = r.series.iter().collect();
            order.sort_unstable_by(|a, b| cmp_keys(&a.key, &b.key));
            let mut elements = Vec::new();
            for s in order {
                let (server, metric) = split_key(&s.key).expect("a series key");
                let server = pg_sys::cstring_to_text_with_len(server.as_ptr().cast(), server.len() as i32);
                let metric = pg_sys::cstring_to_text_with_len(metric.as_ptr().cast(), metric.len() as i32);
                (*s.bins.as_ptr()).for_each_stats(|start, st| {
                    elements.push(form_row(rt, [
                        pg_sys::Datum::from(server),
                        pg_sys::Datum::from(metric),
                        pg_sys::Datum::from(start),
                        pg_sys::Datum::from(st.count),
                        pg_sys::Datum::from(st.avg.to_bits()),
                        pg_sys::Datum::from(st.min.to_bits()),
                        pg_sys::Datum::from(st.max.to_bits()),
                        pg_sys::Datum::from(st.p80.to_bits()),
                    ]));
                });
            }
            form_array(rt, elements)
        }
    }
}
