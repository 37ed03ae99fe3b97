//! Standard base64 (RFC 4648, with padding), the text form of binary values
//! (`metricagg_values`' text I/O, which Citus uses to ship partial states).
//! The decoder is strict: only the alphabet, `=` padding at the end, a
//! length that is a multiple of four, and zero bits where padding drops them,
//! so every text decodes to one value and that value encodes back to it.

use super::DecodeError;

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// The length of the base64 text of `n` bytes.
pub fn encoded_len(n: usize) -> Option<usize> {
    n.div_ceil(3).checked_mul(4)
}

/// Writes the base64 text of `bytes` into `out`, of exactly
/// [`encoded_len`] bytes.
pub fn encode_to_slice(bytes: &[u8], out: &mut [u8]) {
    assert_eq!(
        Some(out.len()),
        encoded_len(bytes.len()),
        "output of the wrong length"
    );
    for (chunk, quad) in bytes.chunks(3).zip(out.chunks_exact_mut(4)) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for (i, c) in quad.iter_mut().enumerate() {
            *c = if i <= chunk.len() {
                ALPHABET[(n >> (18 - 6 * i) & 63) as usize]
            } else {
                b'='
            };
        }
    }
}

/// The base64 text of `bytes`.
pub fn encode(bytes: &[u8]) -> String {
    let mut out = vec![0; encoded_len(bytes.len()).expect("fits in memory")];
    encode_to_slice(bytes, &mut out);
    String::from_utf8(out).expect("base64 is ASCII")
}

fn sextet(c: u8) -> Option<u32> {
    Some(match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => return None,
    } as u32)
}

/// The bytes of a base64 text; [`DecodeError::Text`] names the first
/// character that cannot be there.
pub fn decode(text: &[u8]) -> Result<Vec<u8>, DecodeError> {
    if !text.len().is_multiple_of(4) {
        return Err(DecodeError::Text { at: text.len() });
    }
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let quads = text.len() / 4;
    for (q, quad) in text.chunks_exact(4).enumerate() {
        let last = q + 1 == quads;
        let pad = if last {
            quad.iter().rev().take_while(|&&c| c == b'=').count()
        } else {
            0
        };
        if pad > 2 {
            return Err(DecodeError::Text { at: q * 4 + 1 });
        }
        let mut n = 0u32;
        for (i, &c) in quad[..4 - pad].iter().enumerate() {
            n = n << 6 | sextet(c).ok_or(DecodeError::Text { at: q * 4 + i })?;
        }
        n <<= 6 * pad as u32;
        // The bits padding drops must be zero: one text per value.
        if n & ((1 << (8 * pad)) - 1) != 0 {
            return Err(DecodeError::Text {
                at: q * 4 + 3 - pad,
            });
        }
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..4 - pad]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{random_bytes, SplitMix64};

    #[test]
    fn rfc_4648_vectors() {
        for (plain, text) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(encode(plain.as_bytes()), text);
            assert_eq!(decode(text.as_bytes()).unwrap(), plain.as_bytes());
            assert_eq!(encoded_len(plain.len()), Some(text.len()));
        }
        assert_eq!(encode(&[0xfb, 0xff]), "+/8=");
    }

    #[test]
    fn refuses_what_is_not_canonical_base64() {
        for (bad, at) in [
            ("Zg=", 3),
            ("Zg", 2),
            ("Z===", 1),
            ("Zh==", 1),
            ("Zm9=", 2),
            ("Zm 9", 2),
            ("Zm9v\n", 5),
            ("Zg==Zg==", 2),
            ("Zm-v", 2),
        ] {
            assert_eq!(
                decode(bad.as_bytes()),
                Err(DecodeError::Text { at }),
                "{bad}"
            );
        }
    }

    /// Property: random bytes round-trip; random texts decode only when they
    /// are the encoding of what they decode to.
    #[test]
    fn round_trips_and_is_canonical() {
        let mut rng = SplitMix64::new(0x5eed_0701);
        for _ in 0..3_000 {
            let n = (rng.next_u64() % 100) as usize;
            let bytes = random_bytes(&mut rng, n);
            assert_eq!(decode(encode(&bytes).as_bytes()).unwrap(), bytes);
            let text: Vec<u8> = (0..(rng.next_u64() % 12) as usize)
                .map(|_| b"AQgw+/=a9Z"[(rng.next_u64() % 10) as usize])
                .collect();
            if let Ok(b) = decode(&text) {
                assert_eq!(encode(&b).as_bytes(), &text[..]);
            }
        }
    }
}
