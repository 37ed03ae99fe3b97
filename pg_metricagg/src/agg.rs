//! State and support functions of `p80`, `metricagg_percentile` and
//! `metricagg_stats`.
//!
//! All three keep every non-NULL value of the group, encoded as an
//! order-preserving `u64` key (see `metricagg_core::percentile::key`), plus the
//! running sum for `avg`. The state is one allocation: a 24-byte header
//! followed by the keys, sized to a power of two so it fills PostgreSQL's
//! allocator chunks exactly (512 bytes hold 61 values: a one-minute bin of
//! 1 Hz samples). The header starts with a varlena length word holding the
//! allocation's size (the capacity follows from it), so the same bytes are a
//! `metricagg_values` datum.
//!
//! The aggregates' transition type is `metricagg_values`, a real type, not
//! `internal`: PostgreSQL's parallel workers pass it to the leader as it is,
//! and Citus ships it between its nodes in its text form (`values.rs`), so
//! both can run the aggregation partially and combine it (Citus does not do
//! that for `internal` states). Its transition function appends in place
//! (allowed inside an aggregate); when the state must grow, it returns a
//! larger copy made in the per-call memory context, which PostgreSQL copies
//! into the aggregate context, freeing the old state, as it does for every
//! pass-by-reference transition value whose pointer changed. So a group holds
//! at most 1 GB of values (134 million). PostgreSQL sees and accounts for
//! every byte, so a hash aggregate that outgrows `work_mem` spills rather than
//! exhausting memory. Combining appends one group's keys to another's, so the
//! final answer is exact whatever the plan.
//!
//! The `internal` entry points of pg_metricagg 0.1.0 (transition, combine,
//! serialize, deserialize) stay, with that version's semantics, so that the
//! 0.1.0 SQL keeps working on this library until `ALTER EXTENSION ... UPDATE`;
//! `metricagg_stats_by_bin` and `metricagg_rollup` keep their bins' values in
//! the same state, grown in place.

use std::mem::size_of;
use std::ptr::{self, NonNull};

use metricagg_core::codec::{values_state, Keys};
use metricagg_core::percentile::{self, check_fraction, key, P80};
use metricagg_core::stats::summarize;
use pgrx::pg_sys;
use pgrx::PgSqlErrorCode;

use crate::bytea::{bytes_of, decode_failed, new_bytea, Carries, Source, MAX_ALLOC_SIZE};
use crate::fmgr::{arg, pg_v1_function, raise};

/// Header of the state; the keys follow it in the same chunk.
#[repr(C)]
pub(crate) struct State {
    /// The varlena length word: the allocation's size in bytes.
    vl_len: u32,
    /// Number of keys (non-NULL values) in the group.
    pub(crate) len: u32,
    /// The percentile fraction: 0.8 for `p80` and `metricagg_stats`, the
    /// caller's fraction for `metricagg_percentile`.
    pub(crate) fraction: f64,
    /// Running sum of the values, for `avg`.
    pub(crate) sum: f64,
}

pub(crate) const HEADER: usize = size_of::<State>();
const FIRST_CHUNK: usize = 128;
/// The most keys one state holds: a varlena is at most 1 GB.
const MAX_KEYS: usize = (MAX_ALLOC_SIZE - HEADER) / size_of::<u64>();

fn bytes_for(cap: usize) -> usize {
    HEADER + cap * size_of::<u64>()
}

/// The allocation for at least `needed` keys: a power of two from
/// `FIRST_CHUNK`, at most 1 GB.
fn size_for(needed: usize) -> usize {
    if needed > MAX_KEYS {
        raise(
            PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
            "pg_metricagg: too many values in one group",
            Some(&format!(
                "A group holds at most {MAX_KEYS} values (its state is one value of at most 1 GB)."
            )),
            "Group by a narrower bin or time range; percentile_cont has no such limit.",
        );
    }
    bytes_for(needed)
        .next_power_of_two()
        .clamp(FIRST_CHUNK, bytes_for(MAX_KEYS))
}

impl State {
    /// How many keys the allocation holds.
    ///
    /// # Safety
    /// `this` points to a live state.
    #[inline(always)]
    pub(crate) unsafe fn cap(this: NonNull<State>) -> usize {
        (unsafe { pgrx::varsize_4b(this.as_ptr().cast()) } - HEADER) / size_of::<u64>()
    }

    #[inline(always)]
    unsafe fn data(this: NonNull<State>) -> *mut u64 {
        unsafe { this.as_ptr().cast::<u8>().add(HEADER).cast::<u64>() }
    }

    /// The keys, mutable so that selection can reorder them.
    ///
    /// # Safety
    /// `this` points to a live state.
    pub(crate) unsafe fn keys<'a>(this: NonNull<State>) -> &'a mut [u64] {
        unsafe { std::slice::from_raw_parts_mut(State::data(this), (*this.as_ptr()).len as usize) }
    }
}

/// How a state grows.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Growth {
    /// In its memory context (repalloc): `internal` states, which
    /// PostgreSQL passes around as pointers it never copies.
    InPlace,
    /// Into a new copy in the current (per-call) memory context:
    /// `metricagg_values` transition values (see the module comment).
    Copy,
}

/// The memory context that lives as long as the aggregate's groups.
pub(crate) unsafe fn aggregate_context(fcinfo: pg_sys::FunctionCallInfo) -> pg_sys::MemoryContext {
    let mut context: pg_sys::MemoryContext = ptr::null_mut();
    if unsafe { pg_sys::AggCheckCallContext(fcinfo, &mut context) } == 0 {
        outside_aggregate();
    }
    context
}

#[cold]
fn outside_aggregate() -> ! {
    raise(
        PgSqlErrorCode::ERRCODE_FEATURE_NOT_SUPPORTED,
        "pg_metricagg: aggregate support function called outside an aggregate",
        None,
        "Call p80, metricagg_percentile or metricagg_stats as aggregates.",
    )
}

/// Errors unless called by an aggregate (or window aggregate): only there
/// may a transition value be changed in place. Reads the call context's
/// node tag, no function call: this runs once per row.
#[inline(always)]
unsafe fn require_aggregate(fcinfo: pg_sys::FunctionCallInfo) {
    unsafe {
        let context = (*fcinfo).context;
        if context.is_null()
            || !(pgrx::is_a(context, pg_sys::NodeTag::T_AggState)
                || pgrx::is_a(context, pg_sys::NodeTag::T_WindowAggState))
        {
            outside_aggregate();
        }
    }
}

/// A new, empty state of `bytes` bytes in `context`; the key area is zeroed
/// (a `metricagg_values` datum carries all of it).
unsafe fn alloc_state(
    context: pg_sys::MemoryContext,
    bytes: usize,
    fraction: f64,
) -> NonNull<State> {
    unsafe {
        let raw = pg_sys::MemoryContextAllocZero(context, bytes);
        let state = NonNull::new(raw.cast::<State>()).expect("palloc does not return NULL");
        pgrx::set_varsize_4b(raw.cast(), bytes as i32);
        let s = &mut *state.as_ptr();
        s.len = 0;
        s.fraction = fraction;
        s.sum = 0.0;
        state
    }
}

/// Allocates an empty state with room for at least `min_cap` keys.
pub(crate) unsafe fn new_state(
    context: pg_sys::MemoryContext,
    fraction: f64,
    min_cap: usize,
) -> NonNull<State> {
    unsafe { alloc_state(context, size_for(min_cap), fraction) }
}

/// Makes room for `extra` more keys, moving the state.
#[cold]
#[inline(never)]
pub(crate) unsafe fn grow(state: NonNull<State>, extra: usize, growth: Growth) -> NonNull<State> {
    unsafe {
        let (len, old) = (
            (*state.as_ptr()).len as usize,
            pgrx::varsize_4b(state.as_ptr().cast()),
        );
        let bytes = size_for(len + extra);
        let grown = match growth {
            Growth::InPlace => {
                let raw = pg_sys::repalloc(state.as_ptr().cast(), bytes);
                ptr::write_bytes(raw.cast::<u8>().add(old), 0, bytes - old);
                NonNull::new(raw.cast::<State>()).expect("repalloc does not return NULL")
            }
            Growth::Copy => {
                let copy = alloc_state(pg_sys::CurrentMemoryContext, bytes, 0.0);
                ptr::copy_nonoverlapping(
                    state.as_ptr().cast::<u8>().add(4),
                    copy.as_ptr().cast::<u8>().add(4),
                    bytes_for(len) - 4,
                );
                copy
            }
        };
        pgrx::set_varsize_4b(grown.as_ptr().cast(), bytes as i32);
        grown
    }
}

/// Appends `keys` (with their `sum`) to `state`, growing it if needed.
///
/// # Safety
/// `state` points to a live state.
pub(crate) unsafe fn append(
    mut state: NonNull<State>,
    keys: &[u64],
    sum: f64,
    growth: Growth,
) -> NonNull<State> {
    unsafe {
        let len = (*state.as_ptr()).len as usize;
        if State::cap(state) - len < keys.len() {
            state = grow(state, keys.len(), growth);
        }
        ptr::copy_nonoverlapping(keys.as_ptr(), State::data(state).add(len), keys.len());
        let s = &mut *state.as_ptr();
        s.len += keys.len() as u32;
        s.sum += sum;
    }
    state
}

/// A new state in `context` holding the decoded `keys`, with room for
/// exactly those (`exact`) or sized like a growing state.
///
/// # Safety
/// `context` is a live memory context.
pub(crate) unsafe fn state_from_keys(
    context: pg_sys::MemoryContext,
    fraction: f64,
    sum: f64,
    keys: Keys<'_>,
    exact: bool,
) -> NonNull<State> {
    unsafe {
        let bytes = if exact {
            bytes_for(keys.len())
        } else {
            size_for(keys.len())
        };
        let state = alloc_state(context, bytes, fraction);
        keys.copy_to(std::slice::from_raw_parts_mut(
            State::data(state),
            keys.len(),
        ));
        let s = &mut *state.as_ptr();
        s.len = keys.len() as u32;
        s.sum = sum;
        state
    }
}

#[inline(always)]
pub(crate) unsafe fn push(mut state: NonNull<State>, value: f64, growth: Growth) -> NonNull<State> {
    unsafe {
        let len = (*state.as_ptr()).len as usize;
        if len == State::cap(state) {
            state = grow(state, 1, growth);
        }
        State::data(state).add(len).write(key(value));
        let s = &mut *state.as_ptr();
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

/// A `metricagg_values` datum this aggregate did not make itself (an input
/// of the combine function, the argument of a final function or of the
/// output functions), detoasted (`copy`: always into a new copy) and checked
/// to be a consistent state.
pub(crate) unsafe fn foreign_state(datum: pg_sys::Datum, copy: bool) -> NonNull<State> {
    unsafe {
        let p = datum.cast_mut_ptr::<pg_sys::varlena>();
        let p = if copy {
            pg_sys::pg_detoast_datum_copy(p)
        } else {
            pg_sys::pg_detoast_datum(p)
        };
        let size = pgrx::varsize_4b(p);
        let state = NonNull::new(p.cast::<State>()).expect("detoasting does not return NULL");
        if size < HEADER || (*state.as_ptr()).len as usize > (size - HEADER) / size_of::<u64>() {
            raise(
                PgSqlErrorCode::ERRCODE_DATA_CORRUPTED,
                "pg_metricagg: corrupt metricagg_values value",
                Some(&format!("{size} bytes do not hold the values the header counts.")),
                "A metricagg_values value comes from p80, metricagg_percentile or metricagg_stats, or from its text or binary form.",
            );
        }
        state
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

/// `p80`'s and `metricagg_stats`'s transition: NULL values are skipped.
#[inline(always)]
unsafe fn values_trans(fcinfo: pg_sys::FunctionCallInfo, growth: Growth) -> pg_sys::Datum {
    unsafe {
        let state = state_arg(arg(fcinfo, 0));
        let Some(value) = arg(fcinfo, 1) else {
            return state_datum(state, fcinfo);
        };
        let state = match state {
            Some(s) => s,
            None => new_state(first_context(fcinfo, growth), P80, 0),
        };
        state_datum(
            Some(push(state, f64::from_bits(value.value() as u64), growth)),
            fcinfo,
        )
    }
}

/// Where a group's first state goes: into the aggregate context for an
/// `internal` state; the per-call context for a `metricagg_values` one
/// (PostgreSQL copies it into the aggregate context).
#[inline(always)]
unsafe fn first_context(fcinfo: pg_sys::FunctionCallInfo, growth: Growth) -> pg_sys::MemoryContext {
    match growth {
        Growth::InPlace => unsafe { aggregate_context(fcinfo) },
        Growth::Copy => unsafe { pg_sys::CurrentMemoryContext },
    }
}

/// `metricagg_percentile`'s transition: the fraction is checked on every
/// row and must not change within a group.
unsafe fn percentile_trans(fcinfo: pg_sys::FunctionCallInfo, growth: Growth) -> pg_sys::Datum {
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
            None => new_state(first_context(fcinfo, growth), fraction, 0),
        };
        state_datum(
            Some(push(state, f64::from_bits(value.value() as u64), growth)),
            fcinfo,
        )
    }
}

/// The combine function: appends the second group's values to the first.
/// Not STRICT: either side may be NULL. The right side may come from
/// elsewhere (a parallel worker, a deserial or input function): it is never
/// kept, only copied.
unsafe fn values_combine(
    fcinfo: pg_sys::FunctionCallInfo,
    left: Option<NonNull<State>>,
    right: NonNull<State>,
    growth: Growth,
) -> pg_sys::Datum {
    unsafe {
        let r = &*right.as_ptr();
        let left = match left {
            Some(l) => l,
            None => new_state(first_context(fcinfo, growth), r.fraction, r.len as usize),
        };
        let (first, other) = ((*left.as_ptr()).fraction, r.fraction);
        if (*left.as_ptr()).len > 0 && r.len > 0 && first != other {
            fraction_mismatch(first, other);
        }
        (*left.as_ptr()).fraction = other;
        let left = append(left, State::keys(right), r.sum, growth);
        state_datum(Some(left), fcinfo)
    }
}

pg_v1_function! {
    /// `metricagg_values_trans(metricagg_values, float8) → metricagg_values`:
    /// the transition of `p80` and `metricagg_stats`.
    fn metricagg_values_add / pg_finfo_metricagg_values_add (fcinfo) {
        unsafe {
            require_aggregate(fcinfo);
            values_trans(fcinfo, Growth::Copy)
        }
    }
}

pg_v1_function! {
    /// `metricagg_percentile_trans(metricagg_values, float8, float8) → metricagg_values`.
    fn metricagg_percentile_add / pg_finfo_metricagg_percentile_add (fcinfo) {
        unsafe {
            require_aggregate(fcinfo);
            percentile_trans(fcinfo, Growth::Copy)
        }
    }
}

pg_v1_function! {
    /// `metricagg_values_combine(metricagg_values, metricagg_values) → metricagg_values`.
    fn metricagg_values_merge / pg_finfo_metricagg_values_merge (fcinfo) {
        unsafe {
            require_aggregate(fcinfo);
            let left = state_arg(arg(fcinfo, 0));
            let Some(right) = arg(fcinfo, 1) else {
                return state_datum(left, fcinfo);
            };
            values_combine(fcinfo, left, foreign_state(right, false), Growth::Copy)
        }
    }
}

pg_v1_function! {
    /// pg_metricagg 0.1.0's `metricagg_values_trans(internal, float8) → internal`.
    fn metricagg_values_trans / pg_finfo_metricagg_values_trans (fcinfo) {
        unsafe { values_trans(fcinfo, Growth::InPlace) }
    }
}

pg_v1_function! {
    /// pg_metricagg 0.1.0's `metricagg_percentile_trans(internal, float8, float8) → internal`.
    fn metricagg_percentile_trans / pg_finfo_metricagg_percentile_trans (fcinfo) {
        unsafe { percentile_trans(fcinfo, Growth::InPlace) }
    }
}

pg_v1_function! {
    /// pg_metricagg 0.1.0's `metricagg_values_combine(internal, internal) → internal`.
    fn metricagg_values_combine / pg_finfo_metricagg_values_combine (fcinfo) {
        unsafe {
            let left = state_arg(arg(fcinfo, 0));
            let Some(right) = state_arg(arg(fcinfo, 1)) else {
                return state_datum(left, fcinfo);
            };
            aggregate_context(fcinfo);
            values_combine(fcinfo, left, right, Growth::InPlace)
        }
    }
}

pg_v1_function! {
    /// pg_metricagg 0.1.0's `metricagg_values_serialize(internal) → bytea`:
    /// see `metricagg_core::codec::values_state`.
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
    /// pg_metricagg 0.1.0's `metricagg_values_deserialize(bytea, internal) →
    /// internal`: every field checked by
    /// `metricagg_core::codec::values_state::decode` before the state is
    /// allocated.
    fn metricagg_values_deserialize / pg_finfo_metricagg_values_deserialize (fcinfo) {
        unsafe {
            let bytes = bytes_of(arg(fcinfo, 0).expect("STRICT: bytea is not NULL"));
            let v = values_state::decode(bytes).unwrap_or_else(|e| {
                decode_failed("pg_metricagg: invalid serialized aggregate state", &e, Source::PartialState)
            });
            // Short-lived: the combine function copies it into the aggregate
            // context (or appends it to a state that lives there).
            let state = state_from_keys(pg_sys::CurrentMemoryContext, v.fraction, v.sum, v.keys, false);
            pg_sys::Datum::from(state.as_ptr())
        }
    }
}

/// The state a final function works on: in an aggregate, the transition
/// value itself (its keys may be reordered: the multiset, and so every later
/// answer, stays the same, which is what READ_ONLY means to PostgreSQL);
/// called any other way, a copy.
unsafe fn final_state(fcinfo: pg_sys::FunctionCallInfo) -> Option<NonNull<State>> {
    unsafe {
        let datum = arg(fcinfo, 0)?;
        let in_aggregate = pg_sys::AggCheckCallContext(fcinfo, ptr::null_mut()) != 0;
        Some(foreign_state(datum, !in_aggregate))
    }
}

pg_v1_function! {
    /// `metricagg_percentile_final(metricagg_values) → float8`, for `p80` and
    /// `metricagg_percentile` (and 0.1.0's, over `internal`): the exact
    /// percentile by selection; NULL for an empty group.
    fn metricagg_percentile_final / pg_finfo_metricagg_percentile_final (fcinfo) {
        unsafe {
            let value = final_state(fcinfo)
                .and_then(|s| percentile::percentile_cont(State::keys(s), (*s.as_ptr()).fraction));
            match value {
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
    /// `metricagg_stats_final(metricagg_values) → metricagg_stats_result`
    /// (and 0.1.0's, over `internal`): (count, avg, min, max, p80). An empty
    /// group has count 0 and NULLs.
    fn metricagg_stats_final / pg_finfo_metricagg_stats_final (fcinfo) {
        unsafe {
            let tupdesc = stats_tupdesc(fcinfo);
            let mut values = [pg_sys::Datum::from(0usize); 5];
            let mut nulls = [true; 5];
            values[0] = pg_sys::Datum::from(0i64);
            nulls[0] = false;
            if let Some(state) = final_state(fcinfo) {
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
