//! State and support functions of `p80`, `metricagg_percentile` and
//! `metricagg_stats`.
//!
//! All three keep every non-NULL value of the group, encoded as an
//! order-preserving `u64` key (see `metricagg_core::percentile::key`), plus the
//! running sum for `avg`. The state is one allocation in the aggregate's
//! memory context: a 24-byte header followed by the keys, sized to a power of
//! two so it fills PostgreSQL's allocator chunks exactly (512 bytes hold 61
//! values: a one-minute bin of 1 Hz samples). PostgreSQL sees and accounts
//! for every byte, so a hash aggregate that outgrows `work_mem` spills rather
//! than exhausting memory.
//!
//! Parallel and distributed plans use `serialize` / `deserialize` /
//! `combine`; combining appends one group's keys to another's, so the final
//! answer is exact whatever the plan.

use std::mem::size_of;
use std::ptr::{self, NonNull};

use metricagg_core::codec::values_state;
use metricagg_core::percentile::{self, check_fraction, key, P80};
use metricagg_core::stats::summarize;
use pgrx::pg_sys;
use pgrx::PgSqlErrorCode;

use crate::bytea::{bytes_of, decode_failed, new_bytea, Carries, Source};
use crate::fmgr::{arg, pg_v1_function, raise};

/// Header of the transition state; the keys follow it in the same chunk.
#[repr(C)]
pub(crate) struct State {
    /// Capacity of the key array.
    pub(crate) cap: u32,
    /// Number of keys (non-NULL values) in the group.
    pub(crate) len: u32,
    /// The percentile fraction: 0.8 for `p80` and `metricagg_stats`, the
    /// caller's fraction for `metricagg_percentile`.
    pub(crate) fraction: f64,
    /// Running sum of the values, for `avg`.
    pub(crate) sum: f64,
}

const HEADER: usize = size_of::<State>();
const FIRST_CHUNK: usize = 128;

fn cap_for(bytes: usize) -> u32 {
    u32::try_from((bytes - HEADER) / size_of::<u64>()).unwrap_or(u32::MAX)
}

fn bytes_for(cap: u32) -> usize {
    HEADER + cap as usize * size_of::<u64>()
}

impl State {
    /// The keys, mutable so that selection can reorder them.
    ///
    /// # Safety
    /// `this` points to a live state whose chunk holds `cap` keys.
    pub(crate) unsafe fn keys<'a>(this: NonNull<State>) -> &'a mut [u64] {
        unsafe {
            let len = (*this.as_ptr()).len as usize;
            let data = this.as_ptr().cast::<u8>().add(HEADER).cast::<u64>();
            std::slice::from_raw_parts_mut(data, len)
        }
    }
}

/// The memory context that lives as long as the aggregate's groups.
pub(crate) unsafe fn aggregate_context(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::MemoryContext {
    let mut context: pg_sys::MemoryContext = ptr::null_mut();
    if unsafe { pg_sys::AggCheckCallContext(fcinfo, &mut context) } == 0 {
        raise(
            PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
            "pg_metricagg: aggregate support function called outside an aggregate",
            None,
            "Call p80, metricagg_percentile or metricagg_stats as aggregates.",
        );
    }
    context
}

/// Allocates an empty state with room for at least `min_cap` keys.
pub(crate) unsafe fn new_state(
    context: pg_sys::MemoryContext,
    fraction: f64,
    min_cap: usize,
) -> NonNull<State> {
    let bytes = bytes_for(u32::try_from(min_cap).unwrap_or(u32::MAX))
        .next_power_of_two()
        .max(FIRST_CHUNK);
    let raw = unsafe {
        pg_sys::MemoryContextAllocExtended(context, bytes, pg_sys::MCXT_ALLOC_HUGE as i32)
    };
    let state = NonNull::new(raw.cast::<State>()).expect("palloc does not return NULL");
    unsafe {
        state.as_ptr().write(State {
            cap: cap_for(bytes),
            len: 0,
            fraction,
            sum: 0.0,
        });
    }
    state
}

/// Makes room for `extra` more keys, moving the state if it must grow.
#[cold]
#[inline(never)]
pub(crate) unsafe fn grow(state: NonNull<State>, extra: usize) -> NonNull<State> {
    let s = unsafe { &*state.as_ptr() };
    let needed = s.len as usize + extra;
    if needed > u32::MAX as usize {
        raise(
            PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
            "pg_metricagg: too many values in one group",
            Some(&format!("A group holds at most {} values.", u32::MAX)),
            "Group by a narrower bin.",
        );
    }
    let bytes = bytes_for(needed as u32).next_power_of_two();
    let raw = unsafe { pg_sys::repalloc_huge(state.as_ptr().cast(), bytes) };
    let grown = NonNull::new(raw.cast::<State>()).expect("repalloc does not return NULL");
    unsafe { (*grown.as_ptr()).cap = cap_for(bytes).max(needed as u32) };
    grown
}

/// Appends `keys` (with their `sum`) to `state`, growing it if needed.
///
/// # Safety
/// `state` points to a live state.
pub(crate) unsafe fn append(mut state: NonNull<State>, keys: &[u64], sum: f64) -> NonNull<State> {
    unsafe {
        let s = &*state.as_ptr();
        if ((s.cap - s.len) as usize) < keys.len() {
            state = grow(state, keys.len());
        }
        let s = &mut *state.as_ptr();
        let dst = state.as_ptr().cast::<u8>().add(HEADER).cast::<u64>();
        ptr::copy_nonoverlapping(keys.as_ptr(), dst.add(s.len as usize), keys.len());
        s.len += keys.len() as u32;
        s.sum += sum;
    }
    state
}

/// A new state in `context` holding exactly the decoded `keys`.
///
/// # Safety
/// `context` is a live memory context.
pub(crate) unsafe fn state_from_keys(
    context: pg_sys::MemoryContext,
    fraction: f64,
    sum: f64,
    keys: metricagg_core::codec::Keys<'_>,
) -> NonNull<State> {
    unsafe {
        let state = new_state(context, fraction, keys.len());
        let s = &mut *state.as_ptr();
        let dst = state.as_ptr().cast::<u8>().add(HEADER).cast::<u64>();
        keys.copy_to(std::slice::from_raw_parts_mut(dst, keys.len()));
        s.len = keys.len() as u32;
        s.sum = sum;
        state
    }
}

#[inline(always)]
pub(crate) unsafe fn push(mut state: NonNull<State>, value: f64) -> NonNull<State> {
    unsafe {
        if (*state.as_ptr()).len == (*state.as_ptr()).cap {
            state = grow(state, 1);
        }
        let s = &mut *state.as_ptr();
        let data = state.as_ptr().cast::<u8>().add(HEADER).cast::<u64>();
        data.add(s.len as usize).write(key(value));
        s.len += 1;
        s.sum += value;
    }
    state
}

#[inline(always)]
fn state_arg(datum: Option<pg_sys::Datum>) -> Option<NonNull<State>> {
    datum.and_then(|d| NonNull::new(d.cast_mut_ptr::<State>()))
}

#[inline(always)]
fn state_datum(state: Option<NonNull<State>>, fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::Datum {
    match state {
        Some(s) => pg_sys::Datum::from(s.as_ptr()),
        None => unsafe { pgrx::fcinfo::pg_return_null(fcinfo) },
    }
}

fn fraction_mismatch(first: f64, other: f64) -> ! {
    raise(
        PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
        "metricagg_percentile: the fraction must be the same for every row of a group",
        Some(&format!(
            "The group started with fraction {first} and then got {other}."
        )),
        "Pass a constant fraction, e.g. metricagg_percentile(value, 0.9).",
    )
}

pg_v1_function! {
    /// `metricagg_values_trans(internal, float8) → internal`: the transition of
    /// `p80` and `metricagg_stats`. NULL values are skipped.
    fn metricagg_values_trans / pg_finfo_metricagg_values_trans (fcinfo) {
        unsafe {
            let state = state_arg(arg(fcinfo, 0));
            let Some(value) = arg(fcinfo, 1) else {
                return state_datum(state, fcinfo);
            };
            let state = match state {
                Some(s) => s,
                None => new_state(aggregate_context(fcinfo), P80, 0),
            };
            state_datum(Some(push(state, f64::from_bits(value.value() as u64))), fcinfo)
        }
    }
}

pg_v1_function! {
    /// `metricagg_percentile_trans(internal, float8, float8) → internal`.
    fn metricagg_percentile_trans / pg_finfo_metricagg_percentile_trans (fcinfo) {
        unsafe {
            let state = state_arg(arg(fcinfo, 0));
            let Some(fraction) = arg(fcinfo, 2) else {
                raise(
                    PgSqlErrorCode::ERRCODE_NULL_VALUE_NOT_ALLOWED,
                    "metricagg_percentile: fraction must not be NULL",
                    None,
                    "Pass a fraction between 0 and 1, e.g. 0.9 for p90.",
                );
            };
            let fraction = f64::from_bits(fraction.value() as u64);
            if let Err(err) = check_fraction(fraction) {
                raise(
                    PgSqlErrorCode::ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE,
                    &format!("metricagg_percentile: {err}"),
                    None,
                    "Pass a fraction between 0 and 1, e.g. 0.9 for p90 or 0.99 for p99.",
                );
            }
            if let Some(s) = state {
                let first = (*s.as_ptr()).fraction;
                if first != fraction {
                    fraction_mismatch(first, fraction);
                }
            }
            let Some(value) = arg(fcinfo, 1) else {
                return state_datum(state, fcinfo);
            };
            let state = match state {
                Some(s) => s,
                None => new_state(aggregate_context(fcinfo), fraction, 0),
            };
            state_datum(Some(push(state, f64::from_bits(value.value() as u64))), fcinfo)
        }
    }
}

pg_v1_function! {
    /// `metricagg_values_combine(internal, internal) → internal`: appends the
    /// second group's values to the first. Not STRICT: either side may be
    /// NULL, and a state that comes from `deserialize` is copied into the
    /// aggregate context before it is kept.
    fn metricagg_values_combine / pg_finfo_metricagg_values_combine (fcinfo) {
        unsafe {
            let context = aggregate_context(fcinfo);
            let left = state_arg(arg(fcinfo, 0));
            let Some(right) = state_arg(arg(fcinfo, 1)) else {
                return state_datum(left, fcinfo);
            };
            let r = &*right.as_ptr();
            let left = match left {
                Some(l) => l,
                None => new_state(context, r.fraction, r.len as usize),
            };
            let (first, other) = ((*left.as_ptr()).fraction, r.fraction);
            if (*left.as_ptr()).len > 0 && r.len > 0 && first != other {
                fraction_mismatch(first, other);
            }
            (*left.as_ptr()).fraction = other;
            let left = append(left, State::keys(right), r.sum);
            state_datum(Some(left), fcinfo)
        }
    }
}

pg_v1_function! {
    /// `metricagg_values_serialize(internal) → bytea`: see
    /// `metricagg_core::codec::values_state`.
    fn metricagg_values_serialize / pg_finfo_metricagg_values_serialize (fcinfo) {
        unsafe {
            let state = state_arg(arg(fcinfo, 0)).expect("STRICT: state is not NULL");
            let s = &*state.as_ptr();
            let keys = State::keys(state);
            let (datum, out) = new_bytea(
                values_state::encoded_len(keys.len()),
                "pg_metricagg",
                Carries::PartialState,
            );
            values_state::encode(s.fraction, s.sum, keys, out);
            datum
        }
    }
}

pg_v1_function! {
    /// `metricagg_values_deserialize(bytea, internal) → internal`: every
    /// field checked by `metricagg_core::codec::values_state::decode` before
    /// the state is allocated.
    fn metricagg_values_deserialize / pg_finfo_metricagg_values_deserialize (fcinfo) {
        unsafe {
            let bytes = bytes_of(arg(fcinfo, 0).expect("STRICT: bytea is not NULL"));
            let v = values_state::decode(bytes).unwrap_or_else(|e| {
                decode_failed("pg_metricagg: invalid serialized aggregate state", &e, Source::PartialState)
            });
            // Short-lived: the combine function copies it into the aggregate
            // context (or appends it to a state that lives there).
            let state = state_from_keys(pg_sys::CurrentMemoryContext, v.fraction, v.sum, v.keys);
            pg_sys::Datum::from(state.as_ptr())
        }
    }
}

/// The group's percentile at its fraction; `None` for an empty group.
unsafe fn group_percentile(fcinfo: pg_sys::FunctionCallInfo) -> Option<f64> {
    let state = state_arg(unsafe { arg(fcinfo, 0) })?;
    let fraction = unsafe { (*state.as_ptr()).fraction };
    // Reordering the keys leaves the multiset, and so every later answer,
    // unchanged: the final function is READ_ONLY in the sense PostgreSQL means.
    percentile::percentile_cont(unsafe { State::keys(state) }, fraction)
}

pg_v1_function! {
    /// `metricagg_percentile_final(internal) → float8`, for `p80` and
    /// `metricagg_percentile`.
    fn metricagg_percentile_final / pg_finfo_metricagg_percentile_final (fcinfo) {
        unsafe {
            match group_percentile(fcinfo) {
                Some(v) => pg_sys::Datum::from(v.to_bits()),
                None => pgrx::fcinfo::pg_return_null(fcinfo),
            }
        }
    }
}

/// The blessed tuple descriptor of `metricagg_stats_result`, looked up once
/// per aggregate and kept in `fn_extra`.
unsafe fn stats_tupdesc(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::TupleDesc {
    unsafe {
        let flinfo = (*fcinfo).flinfo;
        if !(*flinfo).fn_extra.is_null() {
            return (*flinfo).fn_extra.cast();
        }
        let mut tupdesc: pg_sys::TupleDesc = ptr::null_mut();
        let kind = pg_sys::get_call_result_type(fcinfo, ptr::null_mut(), &mut tupdesc);
        if kind != pg_sys::TypeFuncClass::TYPEFUNC_COMPOSITE {
            raise(
                PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
                "metricagg_stats: result type is not composite",
                None,
                "Reinstall the extension: metricagg_stats_result must be a composite type.",
            );
        }
        let old = pg_sys::MemoryContextSwitchTo((*flinfo).fn_mcxt);
        let copy = pg_sys::BlessTupleDesc(pg_sys::CreateTupleDescCopy(tupdesc));
        pg_sys::MemoryContextSwitchTo(old);
        (*flinfo).fn_extra = copy.cast();
        copy
    }
}

pg_v1_function! {
    /// `metricagg_stats_final(internal) → metricagg_stats_result`:
    /// (count, avg, min, max, p80). An empty group has count 0 and NULLs.
    fn metricagg_stats_final / pg_finfo_metricagg_stats_final (fcinfo) {
        unsafe {
            let tupdesc = stats_tupdesc(fcinfo);
            let mut values = [pg_sys::Datum::from(0usize); 5];
            let mut nulls = [true; 5];
            values[0] = pg_sys::Datum::from(0i64);
            nulls[0] = false;
            if let Some(state) = state_arg(arg(fcinfo, 0)) {
                if let Some(stats) = summarize(State::keys(state), (*state.as_ptr()).sum) {
                    values = [
                        pg_sys::Datum::from(stats.count),
                        pg_sys::Datum::from(stats.avg.to_bits()),
                        pg_sys::Datum::from(stats.min.to_bits()),
                        pg_sys::Datum::from(stats.max.to_bits()),
                        pg_sys::Datum::from(stats.p80.to_bits()),
                    ];
                    nulls = [false; 5];
                }
            }
            let tuple = pg_sys::heap_form_tuple(tupdesc, values.as_mut_ptr(), nulls.as_mut_ptr());
            pg_sys::HeapTupleHeaderGetDatum((*tuple).t_data)
        }
    }
}
