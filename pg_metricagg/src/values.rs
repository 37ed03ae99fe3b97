//! The `metricagg_values` type: the transition state of `p80`,
//! `metricagg_percentile` and `metricagg_stats` (see `agg.rs`), and its text
//! and binary forms.
//!
//! Both forms carry the state as `metricagg_core::codec::values_state` (a
//! version byte, the count, fraction and sum, the values as sort keys), the
//! text form in base64: Citus ships partial states between its nodes as
//! text. Input is untrusted: it is decoded and checked completely before a
//! state is built from it, and a state built from it holds exactly its values.

use metricagg_core::codec::{base64, values_state, DecodeError};
use pgrx::pg_sys;
use pgrx::PgSqlErrorCode;

use crate::agg::{foreign_state, state_from_keys, State};
use crate::bytea::{decode_failed, new_bytea, Carries, Source, MAX_ALLOC_SIZE};
use crate::fmgr::{arg, pg_v1_function, raise};

const TYPE: &str = "metricagg_values";

/// A state in the current memory context from checked bytes.
unsafe fn state_from(bytes: &[u8], source: Source) -> pg_sys::Datum {
    let v = values_state::decode(bytes)
        .unwrap_or_else(|e| decode_failed(&format!("invalid input for type {TYPE}"), &e, source));
    let state = unsafe {
        state_from_keys(
            pg_sys::CurrentMemoryContext,
            v.fraction,
            v.sum,
            v.keys,
            true,
        )
    };
    pg_sys::Datum::from(state.as_ptr())
}

/// The codec's encoding of a state, once `max_len` (the length of the form
/// made from `n` encoded bytes) is checked to fit PostgreSQL's 1 GB limit.
unsafe fn encoded(
    datum: pg_sys::Datum,
    what: &str,
    max_len: impl Fn(usize) -> Option<usize>,
) -> Vec<u8> {
    unsafe {
        let state = foreign_state(datum, false);
        let s = &*state.as_ptr();
        let keys = State::keys(state);
        let len = values_state::encoded_len(keys.len());
        if len.and_then(&max_len).is_none_or(|n| n > MAX_ALLOC_SIZE) {
            raise(
                PgSqlErrorCode::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
                &format!(
                    "{TYPE}: the state of {} values is too large for its {what}",
                    keys.len()
                ),
                None,
                "Aggregate fewer values per group.",
            );
        }
        let mut out = vec![0; len.expect("checked")];
        values_state::encode(s.fraction, s.sum, keys, &mut out);
        out
    }
}

pg_v1_function! {
    /// `metricagg_values_in(cstring) → metricagg_values`: base64 of the
    /// codec's bytes.
    fn metricagg_values_in / pg_finfo_metricagg_values_in (fcinfo) {
        unsafe {
            let text = std::ffi::CStr::from_ptr(arg(fcinfo, 0).expect("STRICT").cast_mut_ptr::<std::os::raw::c_char>());
            let bytes = base64::decode(text.to_bytes()).unwrap_or_else(|e| {
                decode_failed(&format!("invalid input syntax for type {TYPE}"), &e, Source::Text { type_name: TYPE })
            });
            state_from(&bytes, Source::Text { type_name: TYPE })
        }
    }
}

pg_v1_function! {
    /// `metricagg_values_out(metricagg_values) → cstring`.
    fn metricagg_values_out / pg_finfo_metricagg_values_out (fcinfo) {
        unsafe {
            let bytes = encoded(arg(fcinfo, 0).expect("STRICT"), "text form", |n| base64::encoded_len(n)?.checked_add(1));
            let text_len = base64::encoded_len(bytes.len()).expect("checked");
            let out = pg_sys::palloc(text_len + 1).cast::<u8>();
            base64::encode_to_slice(&bytes, std::slice::from_raw_parts_mut(out, text_len));
            out.add(text_len).write(0);
            pg_sys::Datum::from(out)
        }
    }
}

pg_v1_function! {
    /// `metricagg_values_recv(internal) → metricagg_values`: the codec's bytes.
    fn metricagg_values_recv / pg_finfo_metricagg_values_recv (fcinfo) {
        unsafe {
            let buf = &mut *arg(fcinfo, 0).expect("STRICT").cast_mut_ptr::<pg_sys::StringInfoData>();
            let (from, to) = (buf.cursor as usize, buf.len as usize);
            if from > to {
                decode_failed(&format!("invalid input for type {TYPE}"), &DecodeError::Truncated { at: from, len: to }, Source::Binary { type_name: TYPE });
            }
            let bytes = std::slice::from_raw_parts(buf.data.cast::<u8>().add(from), to - from);
            let state = state_from(bytes, Source::Binary { type_name: TYPE });
            buf.cursor = buf.len;
            state
        }
    }
}

pg_v1_function! {
    /// `metricagg_values_send(metricagg_values) → bytea`.
    fn metricagg_values_send / pg_finfo_metricagg_values_send (fcinfo) {
        unsafe {
            let bytes = encoded(arg(fcinfo, 0).expect("STRICT"), "binary form", |n| n.checked_add(pg_sys::VARHDRSZ));
            let (datum, out) = new_bytea(Some(bytes.len()), TYPE, Carries::Result);
            out.copy_from_slice(&bytes);
            datum
        }
    }
}
