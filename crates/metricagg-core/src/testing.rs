//! Deterministic randomness, PostgreSQL's float8 comparison, and generators
//! of valid values of every format, for tests: this crate's, and (with the
//! `testing` feature) pg_metricagg's in-database ones.

use std::cmp::Ordering;

use crate::bin::{Interval, DEFAULT_ORIGIN, MIN_TIMESTAMP, USECS_PER_DAY};
use crate::codec::{binned_state, pack_bins, rollup_state};
use crate::grid::Grid;
use crate::percentile::key;
use crate::series::write_key;
use crate::stats::Stats;

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

/// `n` valid records of a packed series, sorted.
pub fn random_records(rng: &mut SplitMix64, n: usize) -> Vec<pack_bins::Record> {
    let mut v: Vec<pack_bins::Record> = (0..n)
        .map(|_| {
            let ts = match rng.next_u64() % 20 {
                0 => i64::MIN,
                1 => i64::MAX,
                2 => MIN_TIMESTAMP,
                _ => rng.range_i64(-3_000_000_000_000_000, 3_000_000_000_000_000),
            };
            pack_bins::Record::new(
                ts,
                rng.range_i64(0, 1_000),
                adversarial_value(rng),
                adversarial_value(rng),
                adversarial_value(rng),
            )
            .unwrap()
        })
        .collect();
    pack_bins::sort(&mut v);
    v
}

/// `n` valid bins of a `metricagg_stats_by_bin_packed` value.
pub fn random_stats_bins(rng: &mut SplitMix64, n: usize) -> Vec<(i64, Stats)> {
    let mut start = rng.range_i64(MIN_TIMESTAMP, 3_000_000_000_000_000);
    (0..n)
        .map(|_| {
            start += rng.range_i64(1, 10_000_000_000);
            let s = Stats {
                count: rng.range_i64(1, 100_000),
                avg: adversarial_value(rng),
                min: adversarial_value(rng),
                max: adversarial_value(rng),
                p80: adversarial_value(rng),
            };
            (start, s)
        })
        .collect()
}

/// `n` sort keys of adversarial values.
pub fn random_keys(rng: &mut SplitMix64, n: usize) -> Vec<u64> {
    (0..n).map(|_| key(adversarial_value(rng))).collect()
}

/// One-minute bins from the default origin.
pub fn minute_grid() -> Grid {
    minute_grid_from(DEFAULT_ORIGIN)
}

/// One-minute bins from `origin`.
pub fn minute_grid_from(origin: i64) -> Grid {
    let minute = Interval {
        months: 0,
        days: 0,
        micros: 60_000_000,
    };
    Grid::new(minute, origin).expect("a valid grid")
}

/// A valid width (months, a day, or up to two hours) and origin.
pub fn random_grid(rng: &mut SplitMix64) -> Grid {
    let interval = match rng.next_u64() % 4 {
        0 => Interval {
            months: (rng.next_u64() % 13 + 1) as i32,
            days: 0,
            micros: 0,
        },
        1 => Interval {
            months: 0,
            days: 1,
            micros: 0,
        },
        _ => Interval {
            months: 0,
            days: 0,
            micros: rng.range_i64(1, 7_200_000_000),
        },
    };
    let origin = if rng.next_u64().is_multiple_of(2) {
        DEFAULT_ORIGIN
    } else {
        rng.range_i64(-USECS_PER_DAY * 1000, USECS_PER_DAY * 1000)
    };
    Grid::new(interval, origin).unwrap()
}

/// `n` valid bins of `grid`, in order, each with 1 to 5 values.
pub fn random_bins(rng: &mut SplitMix64, grid: &Grid, n: usize) -> Vec<binned_state::Bin> {
    let mut ts = rng.range_i64(-USECS_PER_DAY * 10_000, USECS_PER_DAY * 10_000);
    let mut bins: Vec<binned_state::Bin> = Vec::new();
    while bins.len() < n {
        let span = grid.span(ts).unwrap();
        let keys: Vec<u64> = (0..rng.next_u64() % 5 + 1)
            .map(|_| key(adversarial_value(rng)))
            .collect();
        bins.push(binned_state::Bin {
            span,
            sum: adversarial_value(rng),
            keys,
        });
        ts = span.end + rng.range_i64(0, 3) * (span.end - span.start);
    }
    bins
}

/// `n` valid series of `grid` with distinct keys, each with 1 to 4 bins.
pub fn random_series(rng: &mut SplitMix64, grid: &Grid, n: usize) -> Vec<rollup_state::Series> {
    (0..n)
        .map(|i| {
            let mut key = Vec::new();
            let server = format!("srv-{i}");
            let metric = ["cpu", "", "mémoire"][(rng.next_u64() % 3) as usize];
            write_key(&mut key, server.as_bytes(), metric.as_bytes());
            rollup_state::Series {
                key,
                bins: {
                    let n = (rng.next_u64() % 4 + 1) as usize;
                    random_bins(rng, grid, n)
                },
            }
        })
        .collect()
}

/// Values a decoder must survive, made from a valid one: every prefix
/// (each must be refused), `flips` copies with one bit flipped, and the
/// value with one byte appended (must be refused).
pub fn mutants(rng: &mut SplitMix64, valid: &[u8], flips: usize) -> Mutants {
    let prefixes = (0..valid.len()).map(|cut| valid[..cut].to_vec()).collect();
    let flipped = (0..flips)
        .map(|_| {
            let mut m = valid.to_vec();
            let at = (rng.next_u64() as usize) % m.len();
            m[at] ^= 1 << (rng.next_u64() % 8);
            m
        })
        .collect();
    let mut longer = valid.to_vec();
    longer.push(rng.next_u64() as u8);
    Mutants {
        prefixes,
        flipped,
        longer,
    }
}

/// See [`mutants`].
pub struct Mutants {
    /// Every proper prefix: never a value.
    pub prefixes: Vec<Vec<u8>>,
    /// One bit flipped: a value or an error.
    pub flipped: Vec<Vec<u8>>,
    /// One byte appended: never a value.
    pub longer: Vec<u8>,
}

/// `n` random bytes.
pub fn random_bytes(rng: &mut SplitMix64, n: usize) -> Vec<u8> {
    (0..n).map(|_| rng.next_u64() as u8).collect()
}

/// The property every decoder has: for random bytes and the [`mutants`]
/// of valid values, `reencode` (decode, then encode what was decoded)
/// returns an error or exactly its input, and never panics; valid values and
/// their bit flips that decode round-trip; prefixes and longer values fail.
pub fn decoder_is_total_and_canonical<E: std::fmt::Debug>(
    seed: u64,
    valid: &[Vec<u8>],
    reencode: impl Fn(&[u8]) -> Result<Vec<u8>, E>,
) {
    let mut rng = SplitMix64::new(seed);
    for _ in 0..2_000 {
        let n = (rng.next_u64() % 200) as usize;
        let bytes = random_bytes(&mut rng, n);
        if let Ok(again) = reencode(&bytes) {
            assert_eq!(again, bytes);
        }
    }
    for v in valid {
        assert_eq!(reencode(v).expect("a valid value decodes"), *v);
        let m = mutants(&mut rng, v, 200);
        for p in &m.prefixes {
            assert!(reencode(p).is_err(), "a prefix of {v:?} decoded: {p:?}");
        }
        for f in &m.flipped {
            if let Ok(again) = reencode(f) {
                assert_eq!(again, *f);
            }
        }
        assert!(reencode(&m.longer).is_err());
    }
}
