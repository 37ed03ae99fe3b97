//! The binary formats of pg_metricagg, one codec each: what the extension
//! writes, what it and its clients read back.
//!
//! | module | format | made by | read by |
//! |---|---|---|---|
//! | [`pack_bins`] | a series of stored bins | `metricagg_pack_bins` | insights-api |
//! | [`stats_packed`] | a group's computed bins | `metricagg_stats_by_bin_packed` | `metricagg_unpack_stats` |
//! | [`values_state`] | partial state of `p80`, `metricagg_percentile`, `metricagg_stats` | their serial function | their deserial function |
//! | [`binned_state`] | partial state of `metricagg_stats_by_bin[_packed]` | its serial function | its deserial function |
//! | [`rollup_state`] | partial state of `metricagg_rollup` | its serial function | its deserial function |
//!
//! Every value starts with a 4-byte header: a version byte, then three zero
//! bytes. Everything is little-endian. (pg_metricagg 0.1.0 wrote the header
//! as a `u32` version 1: the same four bytes, so 0.1.0 and 0.2.0 read each
//! other's values.) A decoder refuses a version it does not know, naming both
//! versions, and checks everything else before anything is built from the
//! bytes: lengths against the data actually there, timestamps in range,
//! counts, order, that keys and bins are ones the encoder could have written.
//! Whatever decodes re-encodes to the same bytes.
//!
//! Encoders write into a buffer of exactly the length their `*_len`
//! function computed, so the caller checks the size (PostgreSQL's 1 GB
//! limit) and allocates once, before any encoding.

use std::fmt;

use crate::bin::{BinError, Interval};
use crate::grid::Grid;
use crate::percentile::{key, value};

pub mod binned_state;
pub mod pack_bins;
pub mod rollup_state;
pub mod stats_packed;
pub mod values_state;

/// Length of the header every format starts with.
pub const HEADER_LEN: usize = 4;

/// Why bytes are not a value of the expected format. `Display` is a
/// sentence fit for an error's DETAIL.
#[derive(Debug, Clone, PartialEq)]
pub enum DecodeError {
    /// The bytes end before a field that must be there.
    Truncated { at: usize, len: usize },
    /// The version byte is not one this build reads.
    UnknownVersion { found: u8, supported: u8 },
    /// A byte of the header that must be zero is not.
    Reserved,
    /// The length does not match the number of items the value claims.
    Length { len: usize, expected: usize },
    /// Bytes follow the last item.
    TrailingBytes { extra: usize },
    /// Item `index` has a timestamp outside PostgreSQL's range.
    Timestamp { index: usize, ts: i64 },
    /// Item `index` is out of order (or repeats the previous one's key).
    Order { index: usize },
    /// Item `index` has a count this format cannot hold.
    Count { index: usize, count: i64 },
    /// The percentile fraction is not within [0, 1].
    Fraction(f64),
    /// Value `index` is not a key the encoder writes (a non-canonical NaN).
    Key { index: usize },
    /// The width or origin cannot be one an aggregate was given.
    Grid(BinError),
    /// Bin `index` is not a bin of the state's width and origin.
    Bin { index: usize },
    /// Series `index` has a width or origin other than the whole state's.
    GridMismatch { index: usize },
    /// Series `index` has a malformed key.
    SeriesKey { index: usize },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Truncated { at, len } => {
                write!(
                    f,
                    "The value is cut short: its {len} bytes end inside the field at byte {at}."
                )
            }
            DecodeError::UnknownVersion { found, supported } => write!(
                f,
                "The value is version {found} of the format; this build reads version {supported}."
            ),
            DecodeError::Reserved => f.write_str("The header's reserved bytes are not zero."),
            DecodeError::Length { len, expected } => {
                write!(f, "The value has {len} bytes; its header says {expected}.")
            }
            DecodeError::TrailingBytes { extra } => {
                write!(f, "{extra} bytes follow the last item.")
            }
            DecodeError::Timestamp { index, ts } => write!(
                f,
                "Item {index} has the timestamp {ts}, outside PostgreSQL's range."
            ),
            DecodeError::Order { index } => write!(
                f,
                "Item {index} is not after the one before it: items are stored in order, each once."
            ),
            DecodeError::Count { index, count } => {
                write!(f, "Item {index} has the impossible count {count}.")
            }
            DecodeError::Fraction(x) => {
                write!(f, "The percentile fraction {x} is not between 0 and 1.")
            }
            DecodeError::Key { index } => write!(f, "Value {index} is not a valid sort key."),
            DecodeError::Grid(e) => write!(f, "The state's width or origin is invalid: {e}."),
            DecodeError::Bin { index } => write!(
                f,
                "Bin {index} is not a bin of the state's width and origin."
            ),
            DecodeError::GridMismatch { index } => write!(
                f,
                "Series {index} has another width or origin than the state."
            ),
            DecodeError::SeriesKey { index } => write!(f, "Series {index} has a malformed key."),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Why a value cannot be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodeError {
    /// A timestamp (microseconds since 2000-01-01) that microseconds since
    /// 1970-01-01 cannot hold in 64 bits (after 294246 AD).
    UnixOverflow(i64),
    /// A count below zero.
    NegativeCount(i64),
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::UnixOverflow(_) => f.write_str(
                "a timestamp after 294246 AD does not fit the format's microseconds since 1970",
            ),
            EncodeError::NegativeCount(c) => write!(f, "count {c} is negative"),
        }
    }
}

impl std::error::Error for EncodeError {}

/// A little-endian reader that fails cleanly at the end of its bytes.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes, at: 0 }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len() - self.at
    }

    pub(crate) fn position(&self) -> usize {
        self.at
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.remaining() < n {
            return Err(DecodeError::Truncated {
                at: self.at,
                len: self.bytes.len(),
            });
        }
        let out = &self.bytes[self.at..self.at + n];
        self.at += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        Ok(self.take(N)?.try_into().expect("N bytes"))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    pub(crate) fn i32(&mut self) -> Result<i32, DecodeError> {
        Ok(i32::from_le_bytes(self.array()?))
    }

    pub(crate) fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_le_bytes(self.array()?))
    }

    pub(crate) fn f64(&mut self) -> Result<f64, DecodeError> {
        Ok(f64::from_le_bytes(self.array()?))
    }

    /// The 4-byte header: `version`, then three zero bytes.
    pub(crate) fn header(&mut self, version: u8) -> Result<(), DecodeError> {
        let h: [u8; HEADER_LEN] = self.array()?;
        if h[0] != version {
            return Err(DecodeError::UnknownVersion {
                found: h[0],
                supported: version,
            });
        }
        if h[1..] != [0, 0, 0] {
            return Err(DecodeError::Reserved);
        }
        Ok(())
    }

    /// The header and the item count of a format whose values are exactly
    /// `encoded_len(count)` bytes long: the count, once the length matches.
    pub(crate) fn counted(
        &mut self,
        version: u8,
        encoded_len: impl Fn(usize) -> Option<usize>,
    ) -> Result<usize, DecodeError> {
        self.header(version)?;
        let n = self.u32()? as usize;
        let expected = encoded_len(n).expect("u32 items fit in usize");
        if self.bytes.len() != expected {
            return Err(DecodeError::Length {
                len: self.bytes.len(),
                expected,
            });
        }
        Ok(n)
    }

    /// A width interval and an origin, checked as the aggregates check them.
    pub(crate) fn grid(&mut self) -> Result<Grid, DecodeError> {
        let interval = Interval {
            months: self.i32()?,
            days: self.i32()?,
            micros: self.i64()?,
        };
        let origin = self.i64()?;
        Grid::new(interval, origin).map_err(DecodeError::Grid)
    }

    /// `n` sort keys, checked to be keys the encoder writes.
    pub(crate) fn keys(&mut self, n: usize) -> Result<Keys<'a>, DecodeError> {
        let bytes = self.take(n.checked_mul(8).ok_or(DecodeError::Truncated {
            at: self.at,
            len: self.bytes.len(),
        })?)?;
        let keys = Keys(bytes);
        if let Some(index) = keys.iter().position(|k| key(value(k)) != k) {
            return Err(DecodeError::Key { index });
        }
        Ok(keys)
    }

    /// The bytes from `from` to `to`, both already read.
    pub(crate) fn slice(&self, from: usize, to: usize) -> &'a [u8] {
        assert!(from <= to && to <= self.at, "slicing bytes not yet read");
        &self.bytes[from..to]
    }

    /// Succeeds when every byte has been read.
    pub(crate) fn finish(&self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            extra => Err(DecodeError::TrailingBytes { extra }),
        }
    }
}

/// Sort keys (see [`crate::percentile::key`]) as stored in a value:
/// little-endian `u64`s, already checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keys<'a>(&'a [u8]);

impl<'a> Keys<'a> {
    pub fn len(&self) -> usize {
        self.0.len() / 8
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = u64> + 'a {
        self.0
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
    }

    /// Copies the keys into `out`, which must hold exactly [`Keys::len`].
    pub fn copy_to(&self, out: &mut [u64]) {
        assert_eq!(out.len(), self.len(), "destination of the wrong length");
        for (dst, k) in out.iter_mut().zip(self.iter()) {
            *dst = k;
        }
    }

    pub fn to_vec(&self) -> Vec<u64> {
        self.iter().collect()
    }
}

/// A little-endian writer into a buffer sized beforehand. Running past its
/// end is a bug of the caller's length computation, and panics.
pub struct Writer<'a> {
    buf: &'a mut [u8],
    at: usize,
}

impl<'a> Writer<'a> {
    pub fn new(buf: &'a mut [u8]) -> Writer<'a> {
        Writer { buf, at: 0 }
    }

    /// Bytes written so far.
    pub fn position(&self) -> usize {
        self.at
    }

    fn put(&mut self, bytes: &[u8]) {
        self.buf[self.at..self.at + bytes.len()].copy_from_slice(bytes);
        self.at += bytes.len();
    }

    pub(crate) fn header(&mut self, version: u8) {
        self.put(&[version, 0, 0, 0]);
    }

    pub(crate) fn u32(&mut self, v: u32) {
        self.put(&v.to_le_bytes());
    }

    pub(crate) fn i32(&mut self, v: i32) {
        self.put(&v.to_le_bytes());
    }

    pub(crate) fn i64(&mut self, v: i64) {
        self.put(&v.to_le_bytes());
    }

    pub(crate) fn f64(&mut self, v: f64) {
        self.put(&v.to_le_bytes());
    }

    pub(crate) fn bytes(&mut self, b: &[u8]) {
        self.put(b);
    }

    pub(crate) fn grid(&mut self, grid: &Grid) {
        let iv = grid.interval();
        self.i32(iv.months);
        self.i32(iv.days);
        self.i64(iv.micros);
        self.i64(grid.origin());
    }

    pub(crate) fn keys(&mut self, keys: &[u64]) {
        let dst = &mut self.buf[self.at..self.at + keys.len() * 8];
        for (d, k) in dst.chunks_exact_mut(8).zip(keys) {
            d.copy_from_slice(&k.to_le_bytes());
        }
        self.at += keys.len() * 8;
    }

    /// Overwrites the `u32` at byte `at`, already written.
    pub(crate) fn patch_u32(&mut self, at: usize, v: u32) {
        assert!(at + 4 <= self.at, "patching bytes not yet written");
        self.buf[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }

    /// Asserts that the buffer is exactly full.
    pub fn finish(self) {
        assert_eq!(
            self.at,
            self.buf.len(),
            "encoded length differs from its computed length"
        );
    }
}
