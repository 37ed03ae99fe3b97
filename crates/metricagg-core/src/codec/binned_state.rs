//! The partial state of `metricagg_stats_by_bin` and
//! `metricagg_stats_by_bin_packed` between parallel workers: the width, the
//! origin and every bin of the group with its values.
//!
//! Layout: header (version 1), then the *body*, which `metricagg_rollup`'s
//! state repeats per series:
//! `i32 months, i32 days, i64 micros` (the width interval), `i64 origin`,
//! `u32 n`, then `n` bins in strictly increasing start order, each
//! `i64 start, i64 end` (a bin of that width and origin), `u32 len` (>= 1),
//! `f64 sum`, then `len` keys (`u64`).

use super::{DecodeError, Keys, Reader, Writer, HEADER_LEN};
use crate::grid::{Grid, Span};

pub const VERSION: u8 = 1;
/// The body's width, origin and bin count.
pub const BODY_PREFIX_LEN: usize = 4 + 4 + 8 + 8 + 4;
/// A bin's span, count and sum.
pub const BIN_PREFIX_LEN: usize = 8 + 8 + 4 + 8;

/// The length of a body whose bins hold `key_counts` keys each.
pub fn body_len(key_counts: impl IntoIterator<Item = usize>) -> Option<usize> {
    key_counts.into_iter().try_fold(BODY_PREFIX_LEN, |len, n| {
        len.checked_add(BIN_PREFIX_LEN)?
            .checked_add(n.checked_mul(8)?)
    })
}

/// The length of a whole state whose bins hold `key_counts` keys each.
pub fn encoded_len(key_counts: impl IntoIterator<Item = usize>) -> Option<usize> {
    body_len(key_counts)?.checked_add(HEADER_LEN)
}

/// Writes the state's header; the body follows.
pub fn write_header(w: &mut Writer<'_>) {
    w.header(VERSION);
}

/// Writes the start of a body: width, origin, number of bins.
pub fn write_body_prefix(w: &mut Writer<'_>, grid: &Grid, n: u32) {
    w.grid(grid);
    w.u32(n);
}

/// Writes one bin (after the previous one, with at least one key).
pub fn write_bin(w: &mut Writer<'_>, span: Span, sum: f64, keys: &[u64]) {
    w.i64(span.start);
    w.i64(span.end);
    w.u32(u32::try_from(keys.len()).expect("at most u32::MAX values"));
    w.f64(sum);
    w.keys(keys);
}

/// A bin with its values, owned: for tests and for building states by hand.
#[derive(Debug, Clone, PartialEq)]
pub struct Bin {
    pub span: Span,
    pub sum: f64,
    pub keys: Vec<u64>,
}

/// A whole state into a new vector.
pub fn encode_to_vec(grid: &Grid, bins: &[Bin]) -> Vec<u8> {
    let len = encoded_len(bins.iter().map(|b| b.keys.len())).expect("fits in memory");
    let mut out = vec![0; len];
    let mut w = Writer::new(&mut out);
    write_header(&mut w);
    write_body(&mut w, grid, bins);
    w.finish();
    out
}

pub(crate) fn write_body(w: &mut Writer<'_>, grid: &Grid, bins: &[Bin]) {
    write_body_prefix(
        w,
        grid,
        u32::try_from(bins.len()).expect("at most u32::MAX bins"),
    );
    for b in bins {
        write_bin(w, b.span, b.sum, &b.keys);
    }
}

/// A checked state (or body): its grid and bins.
#[derive(Debug, Clone, Copy)]
pub struct BinnedState<'a> {
    pub grid: Grid,
    n: usize,
    bins: &'a [u8],
}

/// One bin of a checked state.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DecodedBin<'a> {
    pub span: Span,
    pub sum: f64,
    pub keys: Keys<'a>,
}

impl<'a> BinnedState<'a> {
    /// The number of bins.
    pub fn len(&self) -> usize {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// The bins in start order.
    pub fn bins(&self) -> impl ExactSizeIterator<Item = DecodedBin<'a>> + 'a {
        let mut r = Reader::new(self.bins);
        (0..self.n).map(move |_| read_bin(&mut r).expect("checked by decode").0)
    }

    /// Owned copies of the bins.
    pub fn to_bins(&self) -> Vec<Bin> {
        self.bins()
            .map(|b| Bin {
                span: b.span,
                sum: b.sum,
                keys: b.keys.to_vec(),
            })
            .collect()
    }
}

fn read_bin<'a>(r: &mut Reader<'a>) -> Result<(DecodedBin<'a>, i64), DecodeError> {
    let span = Span {
        start: r.i64()?,
        end: r.i64()?,
    };
    let len = r.u32()?;
    let sum = r.f64()?;
    let keys = r.keys(len as usize)?;
    Ok((DecodedBin { span, sum, keys }, i64::from(len)))
}

/// Checks a whole state: the header, then the body (see [`decode_body`]),
/// and nothing after it.
pub fn decode(bytes: &[u8]) -> Result<BinnedState<'_>, DecodeError> {
    let mut r = Reader::new(bytes);
    r.header(VERSION)?;
    let state = decode_body(&mut r)?;
    r.finish()?;
    Ok(state)
}

/// Checks a body: a width and origin an aggregate accepts, every bin a bin
/// of them, after the one before, holding at least one value, with keys the
/// encoder writes.
pub(crate) fn decode_body<'a>(r: &mut Reader<'a>) -> Result<BinnedState<'a>, DecodeError> {
    let grid = r.grid()?;
    let n = r.u32()? as usize;
    let begin = r.position();
    let mut prev: Option<i64> = None;
    for index in 0..n {
        let (bin, len) = read_bin(r)?;
        if !grid.is_bin(bin.span) {
            return Err(DecodeError::Bin { index });
        }
        if prev.is_some_and(|p| p >= bin.span.start) {
            return Err(DecodeError::Order { index });
        }
        if len < 1 {
            return Err(DecodeError::Count { index, count: len });
        }
        prev = Some(bin.span.start);
    }
    let end = r.position();
    Ok(BinnedState {
        grid,
        n,
        bins: r.slice(begin, end),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::bin::DEFAULT_ORIGIN;
    use crate::percentile::key;
    use crate::testing::{
        decoder_is_total_and_canonical, minute_grid, random_bins, random_grid, SplitMix64,
    };

    fn reencode(b: &[u8]) -> Result<Vec<u8>, DecodeError> {
        let s = decode(b)?;
        Ok(encode_to_vec(&s.grid, &s.to_bins()))
    }

    #[test]
    fn layout_is_the_documented_one() {
        let grid = minute_grid();
        let span = grid.span(0).unwrap();
        let b = encode_to_vec(
            &grid,
            &[Bin {
                span,
                sum: 2.0,
                keys: vec![key(2.0)],
            }],
        );
        let mut want = vec![1, 0, 0, 0];
        want.extend_from_slice(&0i32.to_le_bytes());
        want.extend_from_slice(&0i32.to_le_bytes());
        want.extend_from_slice(&60_000_000i64.to_le_bytes());
        want.extend_from_slice(&DEFAULT_ORIGIN.to_le_bytes());
        want.extend_from_slice(&1u32.to_le_bytes());
        want.extend_from_slice(&span.start.to_le_bytes());
        want.extend_from_slice(&span.end.to_le_bytes());
        want.extend_from_slice(&1u32.to_le_bytes());
        want.extend_from_slice(&2.0f64.to_le_bytes());
        want.extend_from_slice(&key(2.0).to_le_bytes());
        assert_eq!(b, want);
        assert_eq!(b.len(), encoded_len([1]).unwrap());
    }

    #[test]
    fn round_trips() {
        let mut rng = SplitMix64::new(0x5eed_0501);
        for _ in 0..300 {
            let grid = random_grid(&mut rng);
            let n = (rng.next_u64() % 20) as usize;
            let bins = random_bins(&mut rng, &grid, n);
            let b = encode_to_vec(&grid, &bins);
            assert_eq!(
                b.len(),
                encoded_len(bins.iter().map(|b| b.keys.len())).unwrap()
            );
            let s = decode(&b).unwrap();
            assert_eq!(s.grid, grid);
            assert_eq!(s.len(), bins.len());
            let back = s.to_bins();
            assert_eq!(back.len(), bins.len());
            for (x, y) in back.iter().zip(&bins) {
                assert_eq!(
                    (x.span, x.sum.to_bits(), &x.keys),
                    (y.span, y.sum.to_bits(), &y.keys)
                );
            }
        }
    }

    #[test]
    fn refuses_bad_contents() {
        let mut rng = SplitMix64::new(0x5eed_0502);
        let grid = minute_grid();
        let bins = random_bins(&mut rng, &grid, 3);
        let edit = |f: &dyn Fn(&mut Vec<Bin>)| {
            let mut b = bins.clone();
            f(&mut b);
            decode(&encode_to_vec(&grid, &b)).map(|_| ())
        };
        assert_eq!(edit(&|_| ()), Ok(()));
        assert_eq!(
            edit(&|b| b[1].span.start += 1),
            Err(DecodeError::Bin { index: 1 })
        );
        assert_eq!(
            edit(&|b| b[1].span.end += 60_000_000),
            Err(DecodeError::Bin { index: 1 })
        );
        assert_eq!(
            edit(&|b| b.swap(0, 2)),
            Err(DecodeError::Order { index: 1 })
        );
        assert_eq!(
            edit(&|b| b[2] = b[1].clone()),
            Err(DecodeError::Order { index: 2 })
        );
        assert_eq!(
            edit(&|b| b[0].keys.clear()),
            Err(DecodeError::Count { index: 0, count: 0 })
        );
        assert_eq!(
            edit(&|b| b[0].span = Span {
                start: i64::MIN,
                end: i64::MIN + 1
            }),
            Err(DecodeError::Bin { index: 0 })
        );
        // A bad width or an infinite origin in the bytes.
        let mut b = encode_to_vec(&grid, &bins);
        b[4 + 8..4 + 16].copy_from_slice(&0i64.to_le_bytes());
        assert!(matches!(decode(&b), Err(DecodeError::Grid(_))));
        let mut b = encode_to_vec(&grid, &bins);
        b[4 + 16..4 + 24].copy_from_slice(&i64::MAX.to_le_bytes());
        assert!(matches!(decode(&b), Err(DecodeError::Grid(_))));
        // A bin count far beyond the bytes fails without allocating for it.
        let mut b = encode_to_vec(&grid, &bins);
        b[4 + 24..4 + 28].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(decode(&b), Err(DecodeError::Truncated { .. })));
    }

    #[test]
    fn fuzzed_bytes_fail_cleanly_or_round_trip() {
        let mut rng = SplitMix64::new(0x5eed_0503);
        let valid: Vec<Vec<u8>> = (0..12)
            .map(|i| {
                let grid = random_grid(&mut rng);
                encode_to_vec(&grid, &random_bins(&mut rng, &grid, i % 4))
            })
            .collect();
        decoder_is_total_and_canonical(0x5eed_0504, &valid, reencode);
    }
}
