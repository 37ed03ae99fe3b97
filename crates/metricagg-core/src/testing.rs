//! Deterministic randomness and PostgreSQL's float8 comparison, for tests.

use std::cmp::Ordering;

/// SplitMix64: tiny, fast, and good enough to drive randomised tests. A
/// failing case is reproduced from the seed in the test.
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [lo, hi).
    pub fn range_i64(&mut self, lo: i64, hi: i64) -> i64 {
        let span = (hi as i128 - lo as i128) as u128;
        (lo as i128 + (u128::from(self.next_u64()) % span) as i128) as i64
    }
}

/// A value from a distribution that favours the hard cases: duplicates,
/// both zeros, infinities, NaN, extremes, subnormals.
pub fn adversarial_value(rng: &mut SplitMix64) -> f64 {
    match rng.next_u64() % 16 {
        0 => f64::NAN,
        1 => f64::INFINITY,
        2 => f64::NEG_INFINITY,
        3 => 0.0,
        4 => -0.0,
        5 => {
            [f64::MAX, f64::MIN, f64::MIN_POSITIVE, 5e-324, -5e-324][(rng.next_u64() % 5) as usize]
        }
        6..=8 => (rng.next_u64() % 8) as f64, // many duplicates
        _ => (rng.unit_f64() - 0.5) * 200.0,
    }
}

/// PostgreSQL's `float8_cmp_internal`: NaN equals NaN and sorts above all.
pub fn pg_cmp(a: &f64, b: &f64) -> Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        _ => a.partial_cmp(b).expect("no NaN here"),
    }
}
