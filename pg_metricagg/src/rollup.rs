//! `metricagg_rollup(server_id, metric_type, ts, value, width [, origin])`:
//! every bin of every series of the input in one aggregate, no GROUP BY.
//!
//! Profiling `GROUP BY server_id, metric_type, <bin>` shows PostgreSQL
//! spending most of the time in its generic grouping machinery (hashing two
//! text keys per row through fmgr, collation lookups, `texteq`), far more
//! than in any aggregate. This aggregate does the grouping itself: the
//! (server, metric) pair is hashed once per row with a fast
//! non-cryptographic hash into a small map of series; within a series, rows
//! arriving in time order land in the bin of the previous row (one integer
//! comparison). Values are kept exactly as `metricagg_stats` keeps them, in
//! the aggregate's memory context, so the results are identical to
//! `GROUP BY server_id, metric_type, metricagg_bin(ts, width)` with
//! `metricagg_stats`. Combine/serialize/deserialize make it parallel safe;
//! a worker's partial state holds its raw values, so one partial state is
//! limited to 1 GB (about 100M values).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::ptr::NonNull;

use pgrx::pg_sys;
use pgrx::{PgMemoryContexts, PgSqlErrorCode};

use crate::agg::aggregate_context;
use crate::binned::{
    form_array, form_row, new_binned, result_type, to_bytea, Binned, Carries, Reader,
};
use crate::binning::report;
use crate::fmgr::{arg, pg_v1_function, raise};
use metricagg_core::bin::{BinError, DEFAULT_ORIGIN};

/// FxHash (rustc's hasher): a multiply-rotate over 8-byte words. Keys are
/// short server and metric names; this is several times faster than SipHash
/// and there is no adversary choosing them inside one query.
#[derive(Default)]
struct FxHasher(u64);

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let w = u64::from_le_bytes(c.try_into().expect("8 bytes"));
            self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(SEED);
        }
        let mut tail = [0u8; 8];
        let rest = chunks.remainder();
        tail[..rest.len()].copy_from_slice(rest);
        self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(tail) ^ rest.len() as u64)
            .wrapping_mul(SEED);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

/// One series: its key (server and metric bytes) and its bins.
struct Series {
    key: Box<[u8]>,
    server_len: usize,
    bins: NonNull<Binned>,
}

/// The state: series by key. Lives in Rust memory registered for dropping
/// with the aggregate's memory context; the bins and values are allocated
/// in that context itself.
struct Rollup {
    context: pg_sys::MemoryContext,
    interval: (i32, i32, i64),
    origin: i64,
    index: HashMap<Box<[u8]>, u32, BuildHasherDefault<FxHasher>>,
    series: Vec<Series>,
    scratch: Vec<u8>,
}

const SERIAL_VERSION: u32 = 1;

unsafe fn new_rollup(
    context: pg_sys::MemoryContext,
    interval: (i32, i32, i64),
    origin: i64,
) -> NonNull<Rollup> {
    // Validate the width once, with the same errors as metricagg_bin.
    if let Err(e) = metricagg_core::bin::Width::from_interval(interval.0, interval.1, interval.2) {
        report(e);
    }
    if origin == i64::MIN || origin == i64::MAX {
        report(BinError::InfiniteOrigin);
    }
    let rollup = Rollup {
        context,
        interval,
        origin,
        index: HashMap::default(),
        series: Vec::new(),
        scratch: Vec::with_capacity(64),
    };
    let ptr = PgMemoryContexts::For(context).leak_and_drop_on_delete(rollup);
    NonNull::new(ptr).expect("leaked box is not null")
}

impl Rollup {
    /// The bins of the series whose key is in `self.scratch`, created if new.
    unsafe fn series_for_scratch(&mut self, server_len: usize) -> NonNull<Binned> {
        if let Some(&i) = self.index.get(&self.scratch[..]) {
            return self.series[i as usize].bins;
        }
        let bins = unsafe { new_binned(self.context, self.interval, self.origin) };
        let key: Box<[u8]> = self.scratch.as_slice().into();
        self.index.insert(key.clone(), self.series.len() as u32);
        self.series.push(Series {
            key,
            server_len,
            bins,
        });
        bins
    }

    fn set_scratch(&mut self, server: &[u8], metric: &[u8]) {
        self.scratch.clear();
        self.scratch.extend_from_slice(server);
        self.scratch.extend_from_slice(metric);
        // The split point is part of the key: ("ab", "c") ≠ ("a", "bc").
        self.scratch
            .extend_from_slice(&(server.len() as u32).to_le_bytes());
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

fn width_mismatch() -> ! {
    raise(
        PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
        "metricagg_rollup: width and origin must be the same for every row",
        None,
        "Pass constants, e.g. metricagg_rollup(server_id, metric_type, ts, value, '1 minute').",
    )
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
            let Some(width) = arg(fcinfo, 5) else {
                raise(
                    PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
                    "metricagg_rollup: width must not be NULL",
                    None,
                    "Pass a bin width such as '1 minute'.",
                );
            };
            let iv = &*width.cast_mut_ptr::<pg_sys::Interval>();
            let interval = (iv.month, iv.day, iv.time);
            let origin = if (*fcinfo).nargs > 6 {
                arg(fcinfo, 6).map(|o| o.value() as i64).unwrap_or_else(|| report(BinError::InfiniteOrigin))
            } else {
                DEFAULT_ORIGIN
            };
            let state = match state {
                Some(s) => {
                    let r = &*s.as_ptr();
                    if r.interval != interval || r.origin != origin {
                        width_mismatch();
                    }
                    s
                }
                None => new_rollup(aggregate_context(fcinfo), interval, origin),
            };
            let r = &mut *state.as_ptr();
            let server = text_bytes(server);
            r.set_scratch(server, text_bytes(metric));
            let bins = r.series_for_scratch(server.len());
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
                None => new_rollup(aggregate_context(fcinfo), rr.interval, rr.origin),
            };
            let l = &mut *left.as_ptr();
            if l.interval != rr.interval || l.origin != rr.origin {
                width_mismatch();
            }
            for s in &rr.series {
                l.scratch.clear();
                l.scratch.extend_from_slice(&s.key);
                let bins = l.series_for_scratch(s.server_len);
                (*bins.as_ptr()).merge_from(&*s.bins.as_ptr());
            }
            datum(Some(left), fcinfo)
        }
    }
}

pg_v1_function! {
    /// `metricagg_rollup_serialize(internal) → bytea`.
    fn metricagg_rollup_serialize / pg_finfo_metricagg_rollup_serialize (fcinfo) {
        unsafe {
            let state = rollup_arg(arg(fcinfo, 0)).expect("STRICT: state is not NULL");
            let r = &*state.as_ptr();
            let mut out = Vec::new();
            out.extend_from_slice(&SERIAL_VERSION.to_le_bytes());
            out.extend_from_slice(&r.interval.0.to_le_bytes());
            out.extend_from_slice(&r.interval.1.to_le_bytes());
            out.extend_from_slice(&r.interval.2.to_le_bytes());
            out.extend_from_slice(&r.origin.to_le_bytes());
            out.extend_from_slice(&(r.series.len() as u32).to_le_bytes());
            for s in &r.series {
                out.extend_from_slice(&(s.key.len() as u32).to_le_bytes());
                out.extend_from_slice(&(s.server_len as u32).to_le_bytes());
                out.extend_from_slice(&s.key);
                (*s.bins.as_ptr()).serialize_into(&mut out);
            }
            to_bytea(&out, "metricagg_rollup", Carries::PartialState)
        }
    }
}

pg_v1_function! {
    /// `metricagg_rollup_deserialize(bytea, internal) → internal`.
    fn metricagg_rollup_deserialize / pg_finfo_metricagg_rollup_deserialize (fcinfo) {
        unsafe {
            let datum = arg(fcinfo, 0).expect("STRICT: bytea is not NULL");
            let bytea = pg_sys::pg_detoast_datum(datum.cast_mut_ptr());
            let mut rd = Reader(pgrx::varlena::varlena_to_byte_slice(bytea));
            if u32::from_le_bytes(rd.take()) != SERIAL_VERSION {
                crate::agg::corrupt("Unknown state version.");
            }
            let interval = (i32::from_le_bytes(rd.take()), i32::from_le_bytes(rd.take()), i64::from_le_bytes(rd.take()));
            let origin = i64::from_le_bytes(rd.take());
            let n = u32::from_le_bytes(rd.take());
            let context = pg_sys::CurrentMemoryContext;
            let state = new_rollup(context, interval, origin);
            let r = &mut *state.as_ptr();
            for _ in 0..n {
                let key_len = u32::from_le_bytes(rd.take()) as usize;
                let server_len = u32::from_le_bytes(rd.take()) as usize;
                if rd.0.len() < key_len {
                    crate::agg::corrupt("A series key is cut short.");
                }
                let (key, rest) = rd.0.split_at(key_len);
                rd.0 = rest;
                let bins = Binned::deserialize_from(&mut rd, context);
                let key: Box<[u8]> = key.into();
                r.index.insert(key.clone(), r.series.len() as u32);
                r.series.push(Series { key, server_len, bins });
            }
            if !rd.0.is_empty() {
                crate::agg::corrupt("Trailing bytes after the last series.");
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
            order.sort_unstable_by(|a, b| {
                let (sa, ma) = a.key[..a.key.len() - 4].split_at(a.server_len);
                let (sb, mb) = b.key[..b.key.len() - 4].split_at(b.server_len);
                (sa, ma).cmp(&(sb, mb))
            });
            let mut elements = Vec::new();
            for s in order {
                let (server, metric) = s.key[..s.key.len() - 4].split_at(s.server_len);
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
