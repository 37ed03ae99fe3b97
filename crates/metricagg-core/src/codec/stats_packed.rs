//! `metricagg_stats_by_bin_packed(ts, value, width [, origin])`: a group's
//! computed bins as one value, so that postgres_fdw ships one value per group
//! instead of one row per bin; `metricagg_unpack_stats` reads it back.
//!
//! Layout: header (version 1), `u32 n`, then `n` records of 48 bytes:
//! `i64 start` (microseconds since 1970-01-01 UTC), `i64 count` (>= 1),
//! `f64 avg, min, max, p80`. Records are in strictly increasing start order,
//! every start a finite PostgreSQL timestamp.

use super::{DecodeError, EncodeError, Reader, Writer, HEADER_LEN};
use crate::bin::{from_unix_micros, is_valid, to_unix_micros};
use crate::stats::Stats;

pub const VERSION: u8 = 1;
/// Header and count.
pub const PREFIX_LEN: usize = HEADER_LEN + 4;
pub const RECORD_LEN: usize = 48;

/// The encoded length of `n` bins.
pub fn encoded_len(n: usize) -> Option<usize> {
    n.checked_mul(RECORD_LEN)?.checked_add(PREFIX_LEN)
}

/// Writes a packed value bin by bin into a buffer of [`encoded_len`] bytes.
pub struct Encoder<'a> {
    w: Writer<'a>,
    n: u32,
    last: Option<i64>,
}

impl<'a> Encoder<'a> {
    pub fn new(out: &'a mut [u8]) -> Encoder<'a> {
        let mut w = Writer::new(out);
        w.header(VERSION);
        w.u32(0);
        Encoder {
            w,
            n: 0,
            last: None,
        }
    }

    /// Appends the bin starting at `start` (microseconds since the PostgreSQL
    /// epoch; after the previous bin's start).
    pub fn push(&mut self, start: i64, s: &Stats) -> Result<(), EncodeError> {
        debug_assert!(self.last.is_none_or(|l| l < start) && s.count >= 1);
        let unix = to_unix_micros(start).ok_or(EncodeError::UnixOverflow(start))?;
        self.w.i64(unix);
        self.w.i64(s.count);
        for v in [s.avg, s.min, s.max, s.p80] {
            self.w.f64(v);
        }
        self.n += 1;
        self.last = Some(start);
        Ok(())
    }

    /// Writes the count into the header; the buffer must be full.
    pub fn finish(mut self) {
        self.w.patch_u32(HEADER_LEN, self.n);
        self.w.finish();
    }
}

/// Encodes `(start, stats)` bins into a new vector.
pub fn encode_to_vec(bins: &[(i64, Stats)]) -> Result<Vec<u8>, EncodeError> {
    let mut out = vec![0; encoded_len(bins.len()).expect("fits in memory")];
    let mut e = Encoder::new(&mut out);
    for (start, s) in bins {
        e.push(*start, s)?;
    }
    e.finish();
    Ok(out)
}

/// A checked packed value; [`StatsPacked::iter`] reads its bins.
#[derive(Debug, Clone, Copy)]
pub struct StatsPacked<'a> {
    records: &'a [u8],
}

impl<'a> StatsPacked<'a> {
    pub fn len(&self) -> usize {
        self.records.len() / RECORD_LEN
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// `(start, stats)` of every bin, start in microseconds since the
    /// PostgreSQL epoch.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (i64, Stats)> + 'a {
        self.records.chunks_exact(RECORD_LEN).map(|rec| {
            let w = |at: usize| -> [u8; 8] { rec[at..at + 8].try_into().expect("8 bytes") };
            let f = |at: usize| f64::from_le_bytes(w(at));
            let start = from_unix_micros(i64::from_le_bytes(w(0))).expect("checked by decode");
            let stats = Stats {
                count: i64::from_le_bytes(w(8)),
                avg: f(16),
                min: f(24),
                max: f(32),
                p80: f(40),
            };
            (start, stats)
        })
    }
}

/// Checks a packed value: version, length, every start a finite
/// PostgreSQL timestamp after the previous one, every count >= 1.
pub fn decode(bytes: &[u8]) -> Result<StatsPacked<'_>, DecodeError> {
    let mut r = Reader::new(bytes);
    let n = r.counted(VERSION, encoded_len)?;
    let mut prev = None;
    for index in 0..n {
        let unix = r.i64()?;
        let count = r.i64()?;
        r.take(32)?;
        let start = from_unix_micros(unix)
            .filter(|&s| is_valid(s))
            .ok_or(DecodeError::Timestamp { index, ts: unix })?;
        if prev.is_some_and(|p| p >= start) {
            return Err(DecodeError::Order { index });
        }
        if count < 1 {
            return Err(DecodeError::Count { index, count });
        }
        prev = Some(start);
    }
    Ok(StatsPacked {
        records: &bytes[PREFIX_LEN..],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bin::{END_TIMESTAMP, MIN_TIMESTAMP, PG_EPOCH_UNIX_MICROS};
    use crate::testing::{decoder_is_total_and_canonical, random_stats_bins, SplitMix64};

    fn reencode(b: &[u8]) -> Result<Vec<u8>, DecodeError> {
        let bins: Vec<(i64, Stats)> = decode(b)?.iter().collect();
        Ok(encode_to_vec(&bins).expect("decoded bins encode"))
    }

    fn same(a: &[(i64, Stats)], b: &[(i64, Stats)]) -> bool {
        let bits = |s: &Stats| [s.avg, s.min, s.max, s.p80].map(f64::to_bits);
        a.len() == b.len()
            && a.iter()
                .zip(b)
                .all(|((sa, x), (sb, y))| sa == sb && x.count == y.count && bits(x) == bits(y))
    }

    #[test]
    fn layout_is_the_documented_one() {
        let s = Stats {
            count: 3,
            avg: 1.0,
            min: 0.5,
            max: 2.0,
            p80: 1.5,
        };
        let b = encode_to_vec(&[(60_000_000, s)]).unwrap();
        let mut want = vec![1, 0, 0, 0, 1, 0, 0, 0];
        want.extend_from_slice(&(PG_EPOCH_UNIX_MICROS + 60_000_000).to_le_bytes());
        want.extend_from_slice(&3i64.to_le_bytes());
        for v in [1.0f64, 0.5, 2.0, 1.5] {
            want.extend_from_slice(&v.to_le_bytes());
        }
        assert_eq!(b, want);
    }

    #[test]
    fn round_trips() {
        let mut rng = SplitMix64::new(0x5eed_0301);
        for _ in 0..500 {
            let n = (rng.next_u64() % 40) as usize;
            let bins = random_stats_bins(&mut rng, n);
            let b = encode_to_vec(&bins).unwrap();
            let back: Vec<(i64, Stats)> = decode(&b).unwrap().iter().collect();
            assert!(same(&back, &bins));
        }
    }

    #[test]
    fn refuses_bad_contents() {
        let s = Stats {
            count: 1,
            avg: 0.0,
            min: 0.0,
            max: 0.0,
            p80: 0.0,
        };
        assert_eq!(
            encode_to_vec(&[(END_TIMESTAMP - 1, s)]),
            Err(EncodeError::UnixOverflow(END_TIMESTAMP - 1))
        );
        let b = encode_to_vec(&[(0, s), (1, s)]).unwrap();
        let patch = |at: usize, v: i64| {
            let mut m = b.clone();
            m[at..at + 8].copy_from_slice(&v.to_le_bytes());
            m
        };
        // Timestamps that would wrap when converted back.
        assert_eq!(
            decode(&patch(8, i64::MIN)).unwrap_err(),
            DecodeError::Timestamp {
                index: 0,
                ts: i64::MIN
            }
        );
        let early = MIN_TIMESTAMP + PG_EPOCH_UNIX_MICROS - 1;
        assert_eq!(
            decode(&patch(8, early)).unwrap_err(),
            DecodeError::Timestamp {
                index: 0,
                ts: early
            }
        );
        assert_eq!(
            decode(&patch(16, 0)).unwrap_err(),
            DecodeError::Count { index: 0, count: 0 }
        );
        assert_eq!(
            decode(&patch(16, -7)).unwrap_err(),
            DecodeError::Count {
                index: 0,
                count: -7
            }
        );
        assert_eq!(
            decode(&patch(8 + 48, PG_EPOCH_UNIX_MICROS)).unwrap_err(),
            DecodeError::Order { index: 1 }
        );
        assert!(matches!(
            decode(&b[..b.len() - 1]).unwrap_err(),
            DecodeError::Length { .. }
        ));
        assert!(decode(&b[..6]).is_err());
        assert_eq!(decode(&encode_to_vec(&[]).unwrap()).unwrap().len(), 0);
    }

    #[test]
    fn fuzzed_bytes_fail_cleanly_or_round_trip() {
        let mut rng = SplitMix64::new(0x5eed_0302);
        let valid: Vec<Vec<u8>> = (0..20)
            .map(|i| encode_to_vec(&random_stats_bins(&mut rng, i % 5)).unwrap())
            .collect();
        decoder_is_total_and_canonical(0x5eed_0303, &valid, reencode);
    }
}
