//! The series key of `metricagg_rollup`: a (server_id, metric_type) pair as
//! one byte string, and the hasher its grouping uses.
//!
//! Key layout: the server's bytes, the metric's bytes, then the server's
//! length as a little-endian `u32`, so that ("ab", "c") and ("a", "bc") are
//! different keys. The rollup's partial state stores keys in this layout.

use std::cmp::Ordering;
use std::hash::{BuildHasherDefault, Hasher};

/// The key of (`server`, `metric`), written into `out` (cleared first).
pub fn write_key(out: &mut Vec<u8>, server: &[u8], metric: &[u8]) {
    out.clear();
    out.extend_from_slice(server);
    out.extend_from_slice(metric);
    let server_len = u32::try_from(server.len()).expect("a text value is below 1 GB");
    out.extend_from_slice(&server_len.to_le_bytes());
}

/// The (server, metric) bytes of a key; `None` when `key` is not one.
pub fn split_key(key: &[u8]) -> Option<(&[u8], &[u8])> {
    let body = key.len().checked_sub(4)?;
    let server_len = u32::from_le_bytes(key[body..].try_into().expect("4 bytes")) as usize;
    if server_len > body {
        return None;
    }
    let (server, rest) = key[..body].split_at(server_len);
    Some((server, rest))
}

/// The rollup's result order: by server, then metric, bytewise.
///
/// # Panics
/// When either argument is not a key.
pub fn cmp_keys(a: &[u8], b: &[u8]) -> Ordering {
    let split = |k| split_key(k).expect("a series key");
    split(a).cmp(&split(b))
}

/// FxHash (rustc's hasher): a multiply-rotate over 8-byte words. Keys are
/// short server and metric names, hashed once per row; this is several
/// times faster than SipHash, and nobody picks the keys of one query to
/// collide with each other.
#[derive(Default, Clone, Copy)]
pub struct FxHasher(u64);

/// The `BuildHasher` of [`FxHasher`].
pub type FxBuildHasher = BuildHasherDefault<FxHasher>;

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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn keys_split_back_and_keep_the_boundary() {
        let mut k = Vec::new();
        write_key(&mut k, b"ab", b"c");
        assert_eq!(split_key(&k), Some((&b"ab"[..], &b"c"[..])));
        let mut k2 = Vec::new();
        write_key(&mut k2, b"a", b"bc");
        assert_ne!(k, k2);
        assert_eq!(cmp_keys(&k2, &k), Ordering::Less);
        write_key(&mut k, b"", b"");
        assert_eq!(split_key(&k), Some((&b""[..], &b""[..])));
        assert_eq!(split_key(b"abc"), None);
        assert_eq!(split_key(&[b'x', 2, 0, 0, 0]), None);
        assert_eq!(split_key(&[b'x', 1, 0, 0, 0]), Some((&b"x"[..], &b""[..])));
    }

    #[test]
    fn hasher_groups_like_any_hasher() {
        let mut m: HashMap<Vec<u8>, u32, FxBuildHasher> = HashMap::default();
        let mut k = Vec::new();
        for i in 0..1000u32 {
            write_key(&mut k, format!("srv-{}", i % 97).as_bytes(), b"cpu");
            *m.entry(k.clone()).or_default() += 1;
        }
        assert_eq!(m.len(), 97);
        assert_eq!(m.values().sum::<u32>(), 1000);
        let h = |b: &[u8]| {
            let mut h = FxHasher::default();
            h.write(b);
            h.finish()
        };
        assert_ne!(h(b"srv-1cpu"), h(b"srv-1cpv"));
        assert_ne!(h(b""), h(b"\0"));
    }
}
