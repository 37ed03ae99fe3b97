//! The state behind `metricagg_stats`: count, sum, and every value as a key,
//! so that min, max and any percentile are exact at the end.
//!
//! The extension keeps the same fields in PostgreSQL memory; this module owns
//! the arithmetic so it can be tested without a server.

use crate::percentile::{self, value};

/// count, avg, min, max and p80 of one group, with PostgreSQL's semantics:
/// NaN is the largest value (so `max` is NaN when any value is), and `avg`
/// is the plain sum divided by the count, as `avg(float8)` computes it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats {
    pub count: i64,
    pub avg: f64,
    pub min: f64,
    pub max: f64,
    pub p80: f64,
}

/// Summarises a group from its keys and running sum. Reorders `keys`.
/// `None` for an empty group (PostgreSQL's aggregates return NULL there).
pub fn summarize(keys: &mut [u64], sum: f64) -> Option<Stats> {
    if keys.is_empty() {
        return None;
    }
    let (mut lo, mut hi) = (u64::MAX, 0u64);
    for &k in keys.iter() {
        lo = lo.min(k);
        hi = hi.max(k);
    }
    let count = keys.len() as i64;
    let p80 = percentile::percentile_cont(keys, percentile::P80)?;
    Some(Stats {
        count,
        avg: sum / count as f64,
        min: value(lo),
        max: value(hi),
        p80,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::percentile::key;
    use crate::testing::{adversarial_value, pg_cmp, SplitMix64};

    #[test]
    fn empty_group_has_no_stats() {
        assert_eq!(summarize(&mut [], 0.0), None);
    }

    #[test]
    fn nan_is_the_maximum_and_never_the_minimum_unless_alone() {
        let vals = [3.0, f64::NAN, -1.0];
        let mut keys: Vec<u64> = vals.iter().map(|&v| key(v)).collect();
        let s = summarize(&mut keys, vals.iter().sum()).unwrap();
        assert_eq!((s.count, s.min), (3, -1.0));
        assert!(s.max.is_nan() && s.avg.is_nan() && s.p80.is_nan());
        let mut keys = vec![key(f64::NAN)];
        assert!(summarize(&mut keys, f64::NAN).unwrap().min.is_nan());
    }

    /// Property: against min/max by PostgreSQL's comparison and the mean.
    #[test]
    fn matches_sequential_oracle() {
        let mut rng = SplitMix64::new(0x5eed_0004);
        for _ in 0..5_000 {
            let n = (rng.next_u64() % 300 + 1) as usize;
            let vals: Vec<f64> = (0..n).map(|_| adversarial_value(&mut rng)).collect();
            let sum: f64 = vals.iter().sum();
            let mut keys: Vec<u64> = vals.iter().map(|&v| key(v)).collect();
            let s = summarize(&mut keys, sum).unwrap();
            let min = vals.iter().copied().min_by(pg_cmp).unwrap();
            let max = vals.iter().copied().max_by(pg_cmp).unwrap();
            assert_eq!(s.count, n as i64);
            assert!(s.min == min || (s.min.is_nan() && min.is_nan()), "{vals:?}");
            assert!(s.max == max || (s.max.is_nan() && max.is_nan()), "{vals:?}");
            let avg = sum / n as f64;
            assert!(s.avg.to_bits() == avg.to_bits() || (s.avg.is_nan() && avg.is_nan()));
        }
    }
}
