//! A small, fast, fully specified PRNG so the generated data never depends on
//! a dependency's stream stability: the same seed gives the same bytes forever.
//!
//! SplitMix64 (Steele, Lea & Flood 2014) for the streams and the same finaliser
//! for hashing keys into seeds.

/// The golden-ratio increment of SplitMix64.
const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64's finaliser: a bijective 64-bit mix with good avalanche.
#[inline]
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Hashes a list of words into one; order matters.
pub fn hash(parts: &[u64]) -> u64 {
    parts
        .iter()
        .fold(GAMMA, |h, &p| mix64(h ^ mix64(p.wrapping_add(GAMMA))))
}

/// FNV-1a of a string, mixed: a stable key for names such as server ids.
pub fn hash_str(s: &str) -> u64 {
    let mut h: u64 = 0xCBF2_9CE4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01B3);
    }
    mix64(h)
}

/// One SplitMix64 stream.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GAMMA);
        mix64(self.0)
    }

    /// Uniform in [0, 1), 53 bits.
    #[inline]
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in [lo, hi).
    #[inline]
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }

    /// Uniform integer in [lo, hi] (inclusive); `lo <= hi`.
    #[inline]
    pub fn int_in(&mut self, lo: u64, hi: u64) -> u64 {
        let span = hi - lo + 1;
        lo + ((u128::from(self.next_u64()) * u128::from(span)) >> 64) as u64
    }

    /// Approximately standard normal: the Irwin–Hall sum of four 16-bit
    /// uniforms, centred and scaled to unit variance (bounded by ±2√3).
    /// One draw per value and no transcendental functions: the generator's
    /// hot loop takes eight of these per server and step.
    #[inline]
    pub fn normal(&mut self) -> f64 {
        let x = self.next_u64();
        let s = (x & 0xFFFF) + ((x >> 16) & 0xFFFF) + ((x >> 32) & 0xFFFF) + (x >> 48);
        (s as f64 * (1.0 / 65536.0) - 2.0) * 1.732_050_807_568_877_2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_is_fixed() {
        // SplitMix64 reference values for seed 0 (the algorithm's published output).
        let mut r = Rng::new(0);
        assert_eq!(r.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(r.next_u64(), 0x6E78_9E6A_A1B9_65F4);
    }

    #[test]
    fn normal_has_unit_moments() {
        let mut r = Rng::new(7);
        let n = 200_000;
        let (mut s, mut s2) = (0.0, 0.0);
        for _ in 0..n {
            let x = r.normal();
            s += x;
            s2 += x * x;
        }
        let mean = s / n as f64;
        let var = s2 / n as f64 - mean * mean;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.02, "var {var}");
    }

    #[test]
    fn int_in_stays_in_bounds_and_hits_both_ends() {
        let mut r = Rng::new(3);
        let (mut lo, mut hi) = (false, false);
        for _ in 0..10_000 {
            let v = r.int_in(5, 9);
            assert!((5..=9).contains(&v));
            lo |= v == 5;
            hi |= v == 9;
        }
        assert!(lo && hi);
    }

    #[test]
    fn hashes_depend_on_order_and_content() {
        assert_ne!(hash(&[1, 2]), hash(&[2, 1]));
        assert_ne!(hash_str("srv-1"), hash_str("srv-2"));
        assert_eq!(hash_str("srv-1"), hash_str("srv-1"));
    }
}
