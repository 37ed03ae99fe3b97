//! Exact percentiles with PostgreSQL's `percentile_cont` semantics.
//!
//! `percentile_cont(f)` over `n` values sorted in PostgreSQL's float8 order
//! (NaN above every number, `-0 = +0`) takes the values at ranks
//! `floor(f·(n−1))` and `ceil(f·(n−1))` and interpolates linearly between them
//! (Hyndman–Fan definition 7). We reproduce the same floating-point
//! operations in the same order, so the result is bit-identical; instead of
//! sorting we select the two ranks in O(n).
//!
//! Values are stored as [`key`]s: `u64`s whose unsigned order is PostgreSQL's
//! float8 order. Integer comparison makes selection, min and max cheap and
//! branch-light. The encoding is invertible except that every NaN maps to
//! one canonical NaN, which PostgreSQL's `float8out` prints the same way.

/// The key every NaN maps to: above every number, as in PostgreSQL.
pub const NAN_KEY: u64 = u64::MAX;

/// Encodes `x` so that unsigned integer order is PostgreSQL's float8 order.
///
/// Negative numbers have their bits flipped, non-negative numbers get the
/// sign bit set. `-0.0` sorts immediately below `+0.0`; PostgreSQL considers
/// them equal and leaves their relative order to its sort, so any
/// consistent choice is one PostgreSQL could make.
#[inline(always)]
pub fn key(x: f64) -> u64 {
    if x.is_nan() {
        return NAN_KEY;
    }
    let bits = x.to_bits();
    if bits >> 63 == 1 {
        !bits
    } else {
        bits | (1 << 63)
    }
}

/// Inverse of [`key`].
#[inline(always)]
pub fn value(k: u64) -> f64 {
    if k == NAN_KEY {
        return f64::NAN;
    }
    if k >> 63 == 1 {
        f64::from_bits(k & !(1 << 63))
    } else {
        f64::from_bits(!k)
    }
}

/// Why a percentile fraction is refused.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FractionError(pub f64);

impl std::fmt::Display for FractionError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "percentile fraction {} is not between 0 and 1", self.0)
    }
}

impl std::error::Error for FractionError {}

/// Checks a fraction the way `percentile_cont` does: within [0, 1], not NaN.
pub fn check_fraction(fraction: f64) -> Result<f64, FractionError> {
    if (0.0..=1.0).contains(&fraction) {
        Ok(fraction)
    } else {
        Err(FractionError(fraction))
    }
}

/// `percentile_cont(fraction)` of the values whose keys are in `keys`.
///
/// Reorders `keys` (selection, O(n) expected). `None` for an empty slice.
/// `fraction` must already have passed [`check_fraction`].
pub fn percentile_cont(keys: &mut [u64], fraction: f64) -> Option<f64> {
    let n = keys.len();
    if n == 0 {
        return None;
    }
    debug_assert!((0.0..=1.0).contains(&fraction));
    // The same expressions as PostgreSQL's percentile_cont_final_common.
    let pos = fraction * (n - 1) as f64;
    let first_row = pos.floor() as usize;
    let second_row = pos.ceil() as usize;
    let (_, first, right) = keys.select_nth_unstable(first_row);
    let first = value(*first);
    if second_row == first_row {
        return Some(first);
    }
    // The next rank is the smallest key to the right of the selected one.
    let second = value(
        *right
            .iter()
            .min()
            .expect("second rank exists when ceil > floor"),
    );
    let proportion = pos - first_row as f64;
    Some(lerp(first, second, proportion))
}

/// PostgreSQL's `float8_lerp`: `lo + pct * (hi - lo)`, in that order.
#[inline(always)]
pub fn lerp(lo: f64, hi: f64, pct: f64) -> f64 {
    lo + (pct * (hi - lo))
}

/// The 0.8 fraction used by `p80`.
pub const P80: f64 = 0.8;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{adversarial_value, pg_cmp, SplitMix64};

    /// The oracle: a full sort in PostgreSQL's order, then the textbook
    /// formula. Shares nothing with the selection path except `lerp`, whose
    /// operation order is the specification.
    fn oracle(values: &[f64], fraction: f64) -> Option<f64> {
        if values.is_empty() {
            return None;
        }
        let mut sorted = values.to_vec();
        sorted.sort_by(pg_cmp);
        let pos = fraction * (sorted.len() - 1) as f64;
        let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
        if lo == hi {
            Some(sorted[lo])
        } else {
            Some(sorted[lo] + (pos - lo as f64) * (sorted[hi] - sorted[lo]))
        }
    }

    /// Bit equality, except that NaNs are equal to each other and the sign of
    /// a zero is free (PostgreSQL's sort leaves the order of -0 and +0 open).
    fn same(a: f64, b: f64) -> bool {
        (a.is_nan() && b.is_nan()) || a.to_bits() == b.to_bits() || (a == 0.0 && b == 0.0)
    }

    fn check(values: &[f64], fraction: f64) {
        let mut keys: Vec<u64> = values.iter().map(|&v| key(v)).collect();
        let got = percentile_cont(&mut keys, fraction);
        let want = oracle(values, fraction);
        match (got, want) {
            (None, None) => {}
            (Some(g), Some(w)) => assert!(
                same(g, w),
                "fraction {fraction}: got {g:?} want {w:?} for {values:?}"
            ),
            _ => panic!("got {got:?} want {want:?} for {values:?}"),
        }
    }

    #[test]
    fn key_order_is_postgres_float8_order() {
        let mut rng = SplitMix64::new(7);
        for _ in 0..200_000 {
            let (a, b) = (adversarial_value(&mut rng), adversarial_value(&mut rng));
            let by_key = key(a).cmp(&key(b));
            let by_pg = pg_cmp(&a, &b);
            // -0 and +0: PostgreSQL says Equal, the key says Less/Greater.
            if a == 0.0 && b == 0.0 {
                continue;
            }
            assert_eq!(by_key, by_pg, "{a:?} vs {b:?}");
            if !a.is_nan() {
                assert_eq!(value(key(a)).to_bits(), a.to_bits());
            }
        }
        assert!(value(NAN_KEY).is_nan());
        assert!(key(-0.0) < key(0.0) && key(f64::NEG_INFINITY) < key(f64::MIN));
        assert!(key(f64::INFINITY) < key(f64::NAN) && key(-f64::NAN) == NAN_KEY);
    }

    #[test]
    fn small_cases() {
        check(&[], 0.8);
        check(&[42.0], 0.8);
        check(&[1.0, 2.0], 0.8);
        check(&[1.0, 2.0, 3.0, 4.0, 5.0], 0.8);
        check(&[f64::NAN, 1.0], 0.8);
        check(&[f64::NAN, f64::NAN], 0.5);
        check(&[f64::INFINITY, f64::INFINITY, 1.0], 0.8);
        check(&[f64::NEG_INFINITY, f64::INFINITY], 0.5);
        check(&[-0.0, 0.0, -0.0], 0.8);
        check(&[-0.0, -0.0], 1.0);
        // 0.8 * 4 = 3.2 exactly in binary? No: 3.2000000000000002; both sides agree.
        check(&[10.0, 20.0, 30.0, 40.0, 50.0], 0.8);
        let mut k = vec![key(1.0), key(2.0), key(3.0), key(4.0), key(5.0)];
        assert_eq!(percentile_cont(&mut k, P80), Some(4.2));
        let mut k = vec![key(-0.0)];
        assert_eq!(
            percentile_cont(&mut k, P80).map(f64::to_bits),
            Some((-0.0f64).to_bits())
        );
    }

    #[test]
    fn fractions_outside_zero_one_are_refused() {
        for f in [-0.01, 1.01, f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            assert!(check_fraction(f).is_err(), "{f}");
        }
        for f in [0.0, -0.0, 0.5, 0.8, 0.99, 1.0] {
            assert_eq!(check_fraction(f), Ok(f));
        }
        assert!(FractionError(2.0)
            .to_string()
            .contains("not between 0 and 1"));
    }

    /// Property: random multisets (with duplicates, zeros of both signs,
    /// infinities and NaN) at random fractions agree with the sort oracle.
    #[test]
    fn selection_matches_sort_oracle() {
        let mut rng = SplitMix64::new(0x5eed_0003);
        for case in 0..20_000 {
            let n = match case % 4 {
                0 => (rng.next_u64() % 5) as usize,
                1 => (rng.next_u64() % 70) as usize,
                2 => (rng.next_u64() % 600) as usize,
                _ => (rng.next_u64() % 4000) as usize,
            };
            let values: Vec<f64> = (0..n).map(|_| adversarial_value(&mut rng)).collect();
            let fraction = match rng.next_u64() % 4 {
                0 => P80,
                1 => 0.0,
                2 => 1.0,
                _ => rng.unit_f64(),
            };
            check(&values, fraction);
        }
    }
}
