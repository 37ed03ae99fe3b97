//! `metricagg_pack_bins(ts, count, avg, min, max)`: a series of stored bins
//! as one value, for clients that read whole series (insights-api).
//!
//! Layout: header (version 1), `u32 n`, then `n` records of 40 bytes:
//! `i64 ts` (microseconds since 1970-01-01 UTC; `-infinity` and `infinity`
//! are `i64::MIN` and `i64::MAX`), `i64 count` (>= 0), `f64 avg, min, max`
//! (a NULL is NaN). Records are ordered by ts (then count, avg, min, max).

use std::cmp::Ordering;

use super::{DecodeError, EncodeError, Reader, Writer, HEADER_LEN};
use crate::bin::{from_unix_micros, is_valid, to_unix_micros, USECS_PER_SEC};

pub const VERSION: u8 = 1;
/// Header and count.
pub const PREFIX_LEN: usize = HEADER_LEN + 4;
pub const RECORD_LEN: usize = 40;

/// One bin of a packed series.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Record {
    /// Microseconds since the Unix epoch, or `i64::MIN`/`i64::MAX` for
    /// `-infinity`/`infinity`.
    pub ts: i64,
    pub count: i64,
    pub avg: f64,
    pub min: f64,
    pub max: f64,
}

impl Record {
    /// A record of a bin starting at `ts` (microseconds since the PostgreSQL
    /// epoch, or an infinity).
    pub fn new(ts: i64, count: i64, avg: f64, min: f64, max: f64) -> Result<Record, EncodeError> {
        let ts = match ts {
            i64::MIN | i64::MAX => ts,
            t => to_unix_micros(t).ok_or(EncodeError::UnixOverflow(t))?,
        };
        if count < 0 {
            return Err(EncodeError::NegativeCount(count));
        }
        Ok(Record {
            ts,
            count,
            avg,
            min,
            max,
        })
    }

    /// The bin start in whole seconds since the Unix epoch (floored).
    pub fn unix_secs(&self) -> i64 {
        self.ts.div_euclid(USECS_PER_SEC)
    }

    /// The order of records in a packed value.
    pub fn order(&self, other: &Record) -> Ordering {
        self.ts
            .cmp(&other.ts)
            .then(self.count.cmp(&other.count))
            .then(self.avg.total_cmp(&other.avg))
            .then(self.min.total_cmp(&other.min))
            .then(self.max.total_cmp(&other.max))
    }
}

/// Puts records in the order a packed value stores them.
pub fn sort(records: &mut [Record]) {
    records.sort_unstable_by(Record::order);
}

/// The most records one value can hold within `max_bytes`.
pub const fn max_records(max_bytes: usize) -> usize {
    (max_bytes - PREFIX_LEN) / RECORD_LEN
}

/// The encoded length of `n` records.
pub fn encoded_len(n: usize) -> Option<usize> {
    n.checked_mul(RECORD_LEN)?.checked_add(PREFIX_LEN)
}

/// Writes `records` (sorted with [`sort`]) into `out`, of exactly
/// [`encoded_len`] bytes.
pub fn encode(records: &[Record], out: &mut [u8]) {
    let mut w = Writer::new(out);
    w.header(VERSION);
    w.u32(u32::try_from(records.len()).expect("at most u32::MAX records"));
    for r in records {
        w.i64(r.ts);
        w.i64(r.count);
        w.f64(r.avg);
        w.f64(r.min);
        w.f64(r.max);
    }
    w.finish();
}

/// [`encode`] into a new vector.
pub fn encode_to_vec(records: &[Record]) -> Vec<u8> {
    let mut out = vec![0; encoded_len(records.len()).expect("fits in memory")];
    encode(records, &mut out);
    out
}

/// A checked packed series; [`PackedBins::iter`] reads its records.
#[derive(Debug, Clone, Copy)]
pub struct PackedBins<'a> {
    records: &'a [u8],
}

impl<'a> PackedBins<'a> {
    pub fn len(&self) -> usize {
        self.records.len() / RECORD_LEN
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = Record> + 'a {
        self.records.chunks_exact(RECORD_LEN).map(read_record)
    }
}

fn read_record(rec: &[u8]) -> Record {
    let w = |at: usize| -> [u8; 8] { rec[at..at + 8].try_into().expect("8 bytes") };
    Record {
        ts: i64::from_le_bytes(w(0)),
        count: i64::from_le_bytes(w(8)),
        avg: f64::from_le_bytes(w(16)),
        min: f64::from_le_bytes(w(24)),
        max: f64::from_le_bytes(w(32)),
    }
}

/// Checks a packed series: version, length, every timestamp a PostgreSQL
/// timestamp (or an infinity), counts >= 0, records in order.
pub fn decode(bytes: &[u8]) -> Result<PackedBins<'_>, DecodeError> {
    let mut r = Reader::new(bytes);
    let n = r.counted(VERSION, encoded_len)?;
    let packed = PackedBins {
        records: r.take(n * RECORD_LEN)?,
    };
    let mut prev: Option<Record> = None;
    for (index, rec) in packed.iter().enumerate() {
        let finite = from_unix_micros(rec.ts).is_some_and(is_valid);
        if !(finite || rec.ts == i64::MIN || rec.ts == i64::MAX) {
            return Err(DecodeError::Timestamp { index, ts: rec.ts });
        }
        if rec.count < 0 {
            return Err(DecodeError::Count {
                index,
                count: rec.count,
            });
        }
        if prev.is_some_and(|p| p.order(&rec) == Ordering::Greater) {
            return Err(DecodeError::Order { index });
        }
        prev = Some(rec);
    }
    Ok(packed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bin::{END_TIMESTAMP, MIN_TIMESTAMP, PG_EPOCH_UNIX_MICROS};
    use crate::testing::{decoder_is_total_and_canonical, random_records, SplitMix64};

    fn reencode(b: &[u8]) -> Result<Vec<u8>, DecodeError> {
        let recs: Vec<Record> = decode(b)?.iter().collect();
        Ok(encode_to_vec(&recs))
    }

    /// The layout written by pg_metricagg 0.1.0 (its pg test's decoder and
    /// insights-api's read these offsets): still what this version writes.
    #[test]
    fn layout_is_the_documented_one() {
        let rec = Record::new(-PG_EPOCH_UNIX_MICROS - 1_500_000, 60, 1.5, 0.5, 2.5).unwrap();
        let b = encode_to_vec(&[rec]);
        let mut want = vec![1, 0, 0, 0, 1, 0, 0, 0];
        want.extend_from_slice(&(-1_500_000i64).to_le_bytes());
        want.extend_from_slice(&60i64.to_le_bytes());
        for v in [1.5f64, 0.5, 2.5] {
            want.extend_from_slice(&v.to_le_bytes());
        }
        assert_eq!(b, want);
        let got: Vec<Record> = decode(&b).unwrap().iter().collect();
        assert_eq!(got, [rec]);
        assert_eq!(got[0].unix_secs(), -2); // floors
    }

    #[test]
    fn round_trips() {
        let mut rng = SplitMix64::new(0x5eed_0201);
        for _ in 0..500 {
            let n = (rng.next_u64() % 50) as usize;
            let recs = random_records(&mut rng, n);
            let b = encode_to_vec(&recs);
            assert_eq!(b.len(), encoded_len(n).unwrap());
            let back: Vec<Record> = decode(&b).unwrap().iter().collect();
            assert_eq!(back.len(), n);
            for (x, y) in back.iter().zip(&recs) {
                assert_eq!(x.order(y), Ordering::Equal);
            }
        }
    }

    #[test]
    fn encoder_refuses_what_the_format_cannot_hold() {
        assert_eq!(
            Record::new(END_TIMESTAMP - 1, 1, 0.0, 0.0, 0.0),
            Err(EncodeError::UnixOverflow(END_TIMESTAMP - 1))
        );
        assert_eq!(
            Record::new(0, -1, 0.0, 0.0, 0.0),
            Err(EncodeError::NegativeCount(-1))
        );
        assert!(Record::new(i64::MAX, 0, 0.0, 0.0, 0.0).is_ok());
    }

    #[test]
    fn decoder_refuses_bad_contents() {
        let rec = |ts, count| Record {
            ts,
            count,
            avg: 0.0,
            min: 0.0,
            max: 0.0,
        };
        let enc = |r: &[Record]| encode_to_vec(r);
        let b = enc(&[rec(0, 1)]);
        assert_eq!(
            decode(&b[..b.len() - 1]).unwrap_err(),
            DecodeError::Length {
                len: 47,
                expected: 48
            }
        );
        let mut v2 = b.clone();
        v2[0] = 2;
        assert_eq!(
            decode(&v2).unwrap_err(),
            DecodeError::UnknownVersion {
                found: 2,
                supported: 1
            }
        );
        let mut r = b.clone();
        r[3] = 1;
        assert_eq!(decode(&r).unwrap_err(), DecodeError::Reserved);
        assert_eq!(
            decode(&enc(&[rec(0, -5)])).unwrap_err(),
            DecodeError::Count {
                index: 0,
                count: -5
            }
        );
        assert_eq!(
            decode(&enc(&[rec(5, 1), rec(4, 1)])).unwrap_err(),
            DecodeError::Order { index: 1 }
        );
        // Unix microseconds just below infinity are still a PostgreSQL
        // timestamp (its range ends 30 years later).
        assert!(decode(&enc(&[rec(i64::MAX - 1, 1)])).is_ok());
        let early = MIN_TIMESTAMP + PG_EPOCH_UNIX_MICROS - 1;
        assert_eq!(
            decode(&enc(&[rec(early, 1)])).unwrap_err(),
            DecodeError::Timestamp {
                index: 0,
                ts: early
            }
        );
        assert!(decode(&enc(&[rec(early + 1, 1)])).is_ok());
        assert!(decode(&[1, 0, 0]).is_err());
        assert_eq!(decode(&enc(&[])).unwrap().len(), 0);
    }

    #[test]
    fn fuzzed_bytes_fail_cleanly_or_round_trip() {
        let mut rng = SplitMix64::new(0x5eed_0202);
        let valid: Vec<Vec<u8>> = (0..20)
            .map(|i| encode_to_vec(&random_records(&mut rng, i % 6)))
            .collect();
        decoder_is_total_and_canonical(0x5eed_0203, &valid, reencode);
    }
}
