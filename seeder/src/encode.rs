//! PostgreSQL's binary COPY format, written directly: the generator emits
//! ready-to-send bytes for `COPY metricagg.samples (server_id, metric_type,
//! ts, value) FROM STDIN (FORMAT binary)`.
//!
//! Each tuple is a 16-bit field count and, per field, a 32-bit length and the
//! value in its binary send format: text as UTF-8, `timestamptz` as
//! microseconds since 2000-01-01 UTC, `float8` as IEEE 754, all big-endian.

use crate::gen::RowSink;
use crate::model::Metric;
use crate::timefmt::PG_EPOCH_OFFSET_US;

/// The 11-byte signature, flags (0) and header-extension length (0).
pub const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
/// The file trailer: a field count of -1.
pub const TRAILER: &[u8] = &[0xff, 0xff];

/// Appends rows in binary COPY format to a buffer. The per-(server, metric)
/// prefix (field count, server id, metric name, timestamp length) is encoded
/// once, so a row costs three copies.
pub struct CopyEncoder {
    prefixes: Vec<[Vec<u8>; 4]>,
    pub buf: Vec<u8>,
    rows: u64,
}

/// Bytes of one row with a server id of `server_len` bytes and `metric`.
pub fn row_len(server_len: usize, metric: Metric) -> usize {
    2 + 4 + server_len + 4 + metric.name().len() + 4 + 8 + 4 + 8
}

impl CopyEncoder {
    pub fn new(servers: &[String]) -> CopyEncoder {
        let prefixes = servers
            .iter()
            .map(|s| {
                Metric::ALL.map(|m| {
                    let mut p = Vec::with_capacity(32);
                    p.extend_from_slice(&4i16.to_be_bytes());
                    p.extend_from_slice(&(s.len() as i32).to_be_bytes());
                    p.extend_from_slice(s.as_bytes());
                    p.extend_from_slice(&(m.name().len() as i32).to_be_bytes());
                    p.extend_from_slice(m.name().as_bytes());
                    p.extend_from_slice(&8i32.to_be_bytes());
                    p
                })
            })
            .collect();
        CopyEncoder {
            prefixes,
            buf: Vec::new(),
            rows: 0,
        }
    }

    /// Starts a new COPY stream: clears the buffer and writes the header.
    pub fn begin(&mut self, capacity: usize) {
        self.buf = Vec::with_capacity(capacity + HEADER.len() + TRAILER.len());
        self.buf.extend_from_slice(HEADER);
        self.rows = 0;
    }

    /// Empties the buffer (keeping its memory) for a stream written in pieces.
    pub fn clear(&mut self) {
        self.buf.clear();
        self.rows = 0;
    }

    /// Ends the stream and hands out its bytes.
    pub fn finish(&mut self) -> Vec<u8> {
        self.buf.extend_from_slice(TRAILER);
        std::mem::take(&mut self.buf)
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }
}

impl RowSink for CopyEncoder {
    #[inline]
    fn row(&mut self, server: usize, metric: Metric, ts_us: i64, value: f64) {
        let p = &self.prefixes[server][metric.index()];
        let mut tail = [0u8; 20];
        tail[..8].copy_from_slice(&(ts_us - PG_EPOCH_OFFSET_US).to_be_bytes());
        tail[8..12].copy_from_slice(&8i32.to_be_bytes());
        tail[12..].copy_from_slice(&value.to_bits().to_be_bytes());
        self.buf.extend_from_slice(p);
        self.buf.extend_from_slice(&tail);
        self.rows += 1;
    }
}

/// A fast, stable 64-bit hash of a byte stream (8 bytes at a time), used to
/// show that two runs produced identical data. Not cryptographic.
#[derive(Clone, Debug)]
pub struct StreamHash {
    h: u64,
    len: u64,
    pending: Vec<u8>,
}

impl Default for StreamHash {
    fn default() -> Self {
        StreamHash {
            h: 0x243F_6A88_85A3_08D3,
            len: 0,
            pending: Vec::new(),
        }
    }
}

impl StreamHash {
    fn word(&mut self, w: u64) {
        self.h = (self.h ^ w)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .rotate_left(29);
    }

    pub fn update(&mut self, mut data: &[u8]) {
        self.len += data.len() as u64;
        if !self.pending.is_empty() {
            let need = 8 - self.pending.len();
            let take = need.min(data.len());
            self.pending.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.pending.len() < 8 {
                return;
            }
            let w = u64::from_le_bytes(self.pending[..8].try_into().expect("8 bytes"));
            self.word(w);
            self.pending.clear();
        }
        let mut chunks = data.chunks_exact(8);
        for c in &mut chunks {
            self.word(u64::from_le_bytes(c.try_into().expect("8 bytes")));
        }
        self.pending.extend_from_slice(chunks.remainder());
    }

    pub fn finish(&self) -> u64 {
        let mut last = [0u8; 8];
        last[..self.pending.len()].copy_from_slice(&self.pending);
        let mut h = self.clone();
        h.word(u64::from_le_bytes(last));
        h.word(self.len);
        crate::rng::mix64(h.h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_row_is_encoded_as_postgres_expects() {
        let mut e = CopyEncoder::new(&["srv-1".to_string()]);
        e.begin(0);
        // 2000-01-01T00:00:01Z is 1_000_000 µs after PostgreSQL's epoch.
        e.row(0, Metric::Cpu, PG_EPOCH_OFFSET_US + 1_000_000, 1.5);
        let b = e.finish();
        let mut want = HEADER.to_vec();
        want.extend_from_slice(&[0, 4]);
        want.extend_from_slice(&[0, 0, 0, 5]);
        want.extend_from_slice(b"srv-1");
        want.extend_from_slice(&[0, 0, 0, 3]);
        want.extend_from_slice(b"cpu");
        want.extend_from_slice(&[0, 0, 0, 8, 0, 0, 0, 0, 0, 0x0f, 0x42, 0x40]);
        want.extend_from_slice(&[0, 0, 0, 8, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0]);
        want.extend_from_slice(&[0xff, 0xff]);
        assert_eq!(b, want);
        assert_eq!(b.len() - HEADER.len() - 2, row_len(5, Metric::Cpu));
        assert_eq!(HEADER.len(), 19);
    }

    #[test]
    fn stream_hash_ignores_chunking_but_not_content() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut a = StreamHash::default();
        a.update(&data);
        let mut b = StreamHash::default();
        for c in data.chunks(13) {
            b.update(c);
        }
        assert_eq!(a.finish(), b.finish());
        let mut c = StreamHash::default();
        let mut d2 = data.clone();
        d2[500] ^= 1;
        c.update(&d2);
        assert_ne!(a.finish(), c.finish());
        let mut d = StreamHash::default();
        d.update(&data[..999]);
        assert_ne!(a.finish(), d.finish());
    }
}
