//! The partial state of `metricagg_rollup` between parallel workers: the
//! width, the origin and every series with its bins.
//!
//! Layout: header (version 1), `i32 months, i32 days, i64 micros` (the width
//! interval), `i64 origin`, `u32 n`, then `n` series, each
//! `u32 key_len, u32 server_len`, the key (see [`crate::series`]), then the
//! series' bins as a [`binned_state`] body (which repeats the width and
//! origin). Series keys are distinct; every series has at least one bin.

use std::collections::HashSet;

use super::binned_state::{self, BinnedState};
use super::{DecodeError, Reader, Writer, HEADER_LEN};
use crate::grid::Grid;
use crate::series::{split_key, FxBuildHasher};

pub const VERSION: u8 = 1;
/// The header, width, origin and series count.
pub const PREFIX_LEN: usize = HEADER_LEN + 4 + 4 + 8 + 8 + 4;
/// A series' key length and server length.
pub const SERIES_PREFIX_LEN: usize = 8;

/// The length of one series with a key of `key_len` bytes and bins whose
/// body is `body_len` bytes (see [`binned_state::body_len`]).
pub fn series_len(key_len: usize, body_len: usize) -> Option<usize> {
    SERIES_PREFIX_LEN
        .checked_add(key_len)?
        .checked_add(body_len)
}

/// Writes the header, width, origin and number of series.
pub fn write_prefix(w: &mut Writer<'_>, grid: &Grid, n: u32) {
    w.header(VERSION);
    w.grid(grid);
    w.u32(n);
}

/// Writes a series' key; its bins follow with
/// [`binned_state::write_body_prefix`] and [`binned_state::write_bin`].
///
/// # Panics
/// When `key` is not a series key.
pub fn write_series_key(w: &mut Writer<'_>, key: &[u8]) {
    let (server, _) = split_key(key).expect("a series key");
    w.u32(u32::try_from(key.len()).expect("a key is below 4 GB"));
    w.u32(server.len() as u32);
    w.bytes(key);
}

/// A series with its bins, owned: for tests and for building states by hand.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub key: Vec<u8>,
    pub bins: Vec<binned_state::Bin>,
}

/// A whole state into a new vector.
pub fn encode_to_vec(grid: &Grid, series: &[Series]) -> Vec<u8> {
    let len = series.iter().try_fold(PREFIX_LEN, |len, s| {
        let body = binned_state::body_len(s.bins.iter().map(|b| b.keys.len()))?;
        len.checked_add(series_len(s.key.len(), body)?)
    });
    let mut out = vec![0; len.expect("fits in memory")];
    let mut w = Writer::new(&mut out);
    write_prefix(
        &mut w,
        grid,
        u32::try_from(series.len()).expect("at most u32::MAX series"),
    );
    for s in series {
        write_series_key(&mut w, &s.key);
        binned_state::write_body(&mut w, grid, &s.bins);
    }
    w.finish();
    out
}

/// A checked state.
#[derive(Debug, Clone, Copy)]
pub struct RollupState<'a> {
    pub grid: Grid,
    n: usize,
    series: &'a [u8],
}

/// One series of a checked state.
#[derive(Debug, Clone, Copy)]
pub struct DecodedSeries<'a> {
    pub key: &'a [u8],
    pub server: &'a [u8],
    pub metric: &'a [u8],
    pub bins: BinnedState<'a>,
}

impl<'a> RollupState<'a> {
    /// The number of series.
    pub fn len(&self) -> usize {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// The series, in stored order.
    pub fn series(&self) -> impl ExactSizeIterator<Item = DecodedSeries<'a>> + 'a {
        let mut r = Reader::new(self.series);
        (0..self.n).map(move |index| read_series(&mut r, index).expect("checked by decode"))
    }

    /// Owned copies of the series.
    pub fn to_series(&self) -> Vec<Series> {
        self.series()
            .map(|s| Series {
                key: s.key.to_vec(),
                bins: s.bins.to_bins(),
            })
            .collect()
    }
}

fn read_series<'a>(r: &mut Reader<'a>, index: usize) -> Result<DecodedSeries<'a>, DecodeError> {
    let key_len = r.u32()? as usize;
    let server_len = r.u32()? as usize;
    let key = r.take(key_len)?;
    let (server, metric) = split_key(key)
        .filter(|(s, _)| s.len() == server_len)
        .ok_or(DecodeError::SeriesKey { index })?;
    let bins = binned_state::decode_body(r)?;
    Ok(DecodedSeries {
        key,
        server,
        metric,
        bins,
    })
}

/// Checks a state: header, a width and origin an aggregate accepts, every
/// series with a well-formed key seen once, bins of the same width and
/// origin (checked as [`binned_state::decode`] checks them), at least one.
/// Set membership of the keys takes memory in proportion to the value's
/// length, never to a count the value claims.
pub fn decode(bytes: &[u8]) -> Result<RollupState<'_>, DecodeError> {
    let mut r = Reader::new(bytes);
    r.header(VERSION)?;
    let grid = r.grid()?;
    let n = r.u32()? as usize;
    let begin = r.position();
    let mut seen: HashSet<&[u8], FxBuildHasher> = HashSet::default();
    for index in 0..n {
        let s = read_series(&mut r, index)?;
        if s.bins.grid != grid {
            return Err(DecodeError::GridMismatch { index });
        }
        if s.bins.is_empty() {
            return Err(DecodeError::Count { index, count: 0 });
        }
        if !seen.insert(s.key) {
            return Err(DecodeError::Order { index });
        }
    }
    let end = r.position();
    r.finish()?;
    Ok(RollupState {
        grid,
        n,
        series: r.slice(begin, end),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{
        decoder_is_total_and_canonical, minute_grid_from, random_grid, random_series, SplitMix64,
    };

    fn reencode(b: &[u8]) -> Result<Vec<u8>, DecodeError> {
        let s = decode(b)?;
        Ok(encode_to_vec(&s.grid, &s.to_series()))
    }

    #[test]
    fn round_trips() {
        let mut rng = SplitMix64::new(0x5eed_0601);
        for _ in 0..200 {
            let grid = random_grid(&mut rng);
            let n = (rng.next_u64() % 6) as usize;
            let series = random_series(&mut rng, &grid, n);
            let b = encode_to_vec(&grid, &series);
            let s = decode(&b).unwrap();
            assert_eq!((s.grid, s.len()), (grid, series.len()));
            for (d, want) in s.series().zip(&series) {
                let (server, metric) = split_key(&want.key).unwrap();
                assert_eq!((d.key, d.server, d.metric), (&want.key[..], server, metric));
                assert_eq!(d.bins.len(), want.bins.len());
            }
            assert_eq!(reencode(&b).unwrap(), b);
        }
    }

    #[test]
    fn refuses_bad_contents() {
        let mut rng = SplitMix64::new(0x5eed_0602);
        let grid = random_grid(&mut rng);
        let series = random_series(&mut rng, &grid, 2);
        let check = |s: &[Series]| decode(&encode_to_vec(&grid, s)).map(|_| ());
        assert_eq!(check(&series), Ok(()));
        let mut dup = series.clone();
        dup[1].key = dup[0].key.clone();
        assert_eq!(check(&dup), Err(DecodeError::Order { index: 1 }));
        let mut empty = series.clone();
        empty[0].bins.clear();
        assert_eq!(
            check(&empty),
            Err(DecodeError::Count { index: 0, count: 0 })
        );
        // A key whose length word points past its bytes, and one whose
        // server length disagrees with the key's own.
        let mut b = encode_to_vec(&grid, &series);
        let key_at = PREFIX_LEN + SERIES_PREFIX_LEN;
        let key_len = series[0].key.len();
        b[key_at + key_len - 4..key_at + key_len].copy_from_slice(&999u32.to_le_bytes());
        assert_eq!(decode(&b).unwrap_err(), DecodeError::SeriesKey { index: 0 });
        let mut b = encode_to_vec(&grid, &series);
        b[PREFIX_LEN + 4..PREFIX_LEN + 8].copy_from_slice(&1u32.to_le_bytes());
        assert_eq!(decode(&b).unwrap_err(), DecodeError::SeriesKey { index: 0 });
        // A series body with another width than the state's: the state's
        // width patched from one minute to two.
        let minute = minute_grid_from(0);
        let mut b = encode_to_vec(&minute, &random_series(&mut rng, &minute, 1));
        b[12..20].copy_from_slice(&120_000_000i64.to_le_bytes());
        assert_eq!(
            decode(&b).unwrap_err(),
            DecodeError::GridMismatch { index: 0 }
        );
    }

    #[test]
    fn fuzzed_bytes_fail_cleanly_or_round_trip() {
        let mut rng = SplitMix64::new(0x5eed_0603);
        let valid: Vec<Vec<u8>> = (0..10)
            .map(|i| {
                let grid = random_grid(&mut rng);
                encode_to_vec(&grid, &random_series(&mut rng, &grid, i % 3))
            })
            .collect();
        decoder_is_total_and_canonical(0x5eed_0604, &valid, reencode);
    }
}
