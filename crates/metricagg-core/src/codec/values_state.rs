//! The partial state of `p80`, `metricagg_percentile` and `metricagg_stats`
//! between parallel workers: the group's values as sort keys, its fraction
//! and running sum.
//!
//! Layout: header (version 1), `u32 n`, `f64 fraction` (within [0, 1]),
//! `f64 sum`, then `n` keys (`u64`, see [`crate::percentile::key`]).

use super::{DecodeError, Keys, Reader, Writer, HEADER_LEN};
use crate::percentile::check_fraction;

pub const VERSION: u8 = 1;
/// Everything before the keys.
pub const PREFIX_LEN: usize = HEADER_LEN + 4 + 8 + 8;

/// The encoded length of a state with `n` keys.
pub fn encoded_len(n: usize) -> Option<usize> {
    n.checked_mul(8)?.checked_add(PREFIX_LEN)
}

/// Writes a state into `out`, of exactly [`encoded_len`] bytes.
pub fn encode(fraction: f64, sum: f64, keys: &[u64], out: &mut [u8]) {
    let mut w = Writer::new(out);
    w.header(VERSION);
    w.u32(u32::try_from(keys.len()).expect("at most u32::MAX values"));
    w.f64(fraction);
    w.f64(sum);
    w.keys(keys);
    w.finish();
}

/// [`encode`] into a new vector.
pub fn encode_to_vec(fraction: f64, sum: f64, keys: &[u64]) -> Vec<u8> {
    let mut out = vec![0; encoded_len(keys.len()).expect("fits in memory")];
    encode(fraction, sum, keys, &mut out);
    out
}

/// A checked state.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ValuesState<'a> {
    pub fraction: f64,
    pub sum: f64,
    pub keys: Keys<'a>,
}

/// Checks a state: version, length, a fraction within [0, 1], keys that
/// [`crate::percentile::key`] writes.
pub fn decode(bytes: &[u8]) -> Result<ValuesState<'_>, DecodeError> {
    let mut r = Reader::new(bytes);
    let n = r.counted(VERSION, encoded_len)?;
    let fraction = r.f64()?;
    check_fraction(fraction).map_err(|e| DecodeError::Fraction(e.0))?;
    let sum = r.f64()?;
    let keys = r.keys(n)?;
    Ok(ValuesState {
        fraction,
        sum,
        keys,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::percentile::{key, NAN_KEY};
    use crate::testing::{
        adversarial_value, decoder_is_total_and_canonical, random_keys, SplitMix64,
    };

    fn reencode(b: &[u8]) -> Result<Vec<u8>, DecodeError> {
        let s = decode(b)?;
        Ok(encode_to_vec(s.fraction, s.sum, &s.keys.to_vec()))
    }

    #[test]
    fn layout_is_the_documented_one() {
        let b = encode_to_vec(0.8, 3.0, &[key(1.0), key(2.0)]);
        let mut want = vec![1, 0, 0, 0, 2, 0, 0, 0];
        want.extend_from_slice(&0.8f64.to_le_bytes());
        want.extend_from_slice(&3.0f64.to_le_bytes());
        want.extend_from_slice(&key(1.0).to_le_bytes());
        want.extend_from_slice(&key(2.0).to_le_bytes());
        assert_eq!(b, want);
    }

    #[test]
    fn round_trips() {
        let mut rng = SplitMix64::new(0x5eed_0401);
        for _ in 0..500 {
            let n = (rng.next_u64() % 100) as usize;
            let keys = random_keys(&mut rng, n);
            let (fraction, sum) = (rng.unit_f64(), adversarial_value(&mut rng));
            let b = encode_to_vec(fraction, sum, &keys);
            let s = decode(&b).unwrap();
            assert_eq!(s.fraction, fraction);
            assert_eq!(s.sum.to_bits(), sum.to_bits());
            assert_eq!(s.keys.to_vec(), keys);
            let mut copy = vec![0; s.keys.len()];
            s.keys.copy_to(&mut copy);
            assert_eq!(copy, keys);
        }
    }

    #[test]
    fn refuses_bad_contents() {
        for f in [f64::NAN, -0.5, 1.5, f64::INFINITY] {
            assert!(matches!(
                decode(&encode_to_vec(f, 0.0, &[])).unwrap_err(),
                DecodeError::Fraction(_)
            ));
        }
        // A NaN whose key is not the canonical one.
        let b = encode_to_vec(0.5, 0.0, &[key(1.0), NAN_KEY - 1]);
        assert_eq!(decode(&b).unwrap_err(), DecodeError::Key { index: 1 });
        let b = encode_to_vec(0.5, 0.0, &[key(1.0)]);
        assert!(matches!(
            decode(&b[..b.len() - 8]).unwrap_err(),
            DecodeError::Length { .. }
        ));
        // A count that claims more than the bytes hold is refused before
        // anything is read or allocated.
        let mut huge = b.clone();
        huge[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            decode(&huge).unwrap_err(),
            DecodeError::Length { .. }
        ));
    }

    #[test]
    fn fuzzed_bytes_fail_cleanly_or_round_trip() {
        let mut rng = SplitMix64::new(0x5eed_0402);
        let valid: Vec<Vec<u8>> = (0..20)
            .map(|i| encode_to_vec(0.8, 1.0, &random_keys(&mut rng, i % 7)))
            .collect();
        decoder_is_total_and_canonical(0x5eed_0403, &valid, reencode);
    }
}
