// SPDX-License-Identifier: MPL-2.0
//! The SFrame header (RFC 9605, section 4.3): a config byte, then the key id and
//! the counter, each either inline (values 0-7) or as 1-8 big-endian bytes.
//!
//! ```text
//!  0 1 2 3 4 5 6 7
//! +-+-+-+-+-+-+-+-+------------------+------------------+
//! |X|  K  |Y|  C  |   KID (K+1 B)    |   CTR (C+1 B)    |
//! +-+-+-+-+-+-+-+-+------------------+------------------+
//! ```

/// Longest possible header: config byte, 8 KID bytes, 8 CTR bytes.
pub const MAX_HEADER_LEN: usize = 17;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub kid: u64,
    pub ctr: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderError {
    /// The buffer ends before the header does.
    Truncated { needed: usize, got: usize },
}

impl std::fmt::Display for HeaderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeaderError::Truncated { needed: _, got: 0 } => write!(f, "empty buffer"),
            HeaderError::Truncated { needed, got } => write!(
                f,
                "{got}-byte buffer is shorter than its {needed}-byte SFrame header"
            ),
        }
    }
}

/// Bytes needed to write `value` big-endian without leading zeros (at least 1).
fn min_len(value: u64) -> usize {
    (8 - value.leading_zeros() as usize / 8).max(1)
}

/// The 3-bit field and extension flag for one value, and its extra bytes.
fn field(value: u64) -> (u8, bool, usize) {
    if value < 8 {
        (value as u8, false, 0)
    } else {
        let len = min_len(value);
        ((len - 1) as u8, true, len)
    }
}

impl Header {
    pub fn encoded_len(&self) -> usize {
        1 + field(self.kid).2 + field(self.ctr).2
    }

    /// Writes the header to the start of `out` and returns its length.
    ///
    /// # Panics
    /// If `out` is shorter than `encoded_len()`.
    pub fn encode(&self, out: &mut [u8]) -> usize {
        let (k, kid_ext, kid_len) = field(self.kid);
        let (c, ctr_ext, ctr_len) = field(self.ctr);
        out[0] = (kid_ext as u8) << 7 | k << 4 | (ctr_ext as u8) << 3 | c;
        out[1..1 + kid_len].copy_from_slice(&self.kid.to_be_bytes()[8 - kid_len..]);
        out[1 + kid_len..1 + kid_len + ctr_len]
            .copy_from_slice(&self.ctr.to_be_bytes()[8 - ctr_len..]);
        1 + kid_len + ctr_len
    }

    /// Reads a header from the start of `data`; returns it and its encoded length.
    /// Non-minimal encodings are accepted: the header is authenticated as AAD.
    pub fn decode(data: &[u8]) -> Result<(Header, usize), HeaderError> {
        let Some(&config) = data.first() else {
            return Err(HeaderError::Truncated { needed: 1, got: 0 });
        };
        let kid_field = (config >> 4) & 0x7;
        let ctr_field = config & 0x7;
        let kid_len = if config & 0x80 != 0 {
            kid_field as usize + 1
        } else {
            0
        };
        let ctr_len = if config & 0x08 != 0 {
            ctr_field as usize + 1
        } else {
            0
        };
        let len = 1 + kid_len + ctr_len;
        if data.len() < len {
            return Err(HeaderError::Truncated {
                needed: len,
                got: data.len(),
            });
        }
        let read = |bytes: &[u8]| bytes.iter().fold(0u64, |acc, &b| acc << 8 | b as u64);
        let kid = if kid_len > 0 {
            read(&data[1..1 + kid_len])
        } else {
            kid_field as u64
        };
        let ctr = if ctr_len > 0 {
            read(&data[1 + kid_len..len])
        } else {
            ctr_field as u64
        };
        Ok((Header { kid, ctr }, len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_edges() {
        let values = [0, 1, 7, 8, 0xff, 0x100, 0xffff_ffff, u64::MAX];
        for &kid in &values {
            for &ctr in &values {
                let header = Header { kid, ctr };
                let mut buf = [0u8; MAX_HEADER_LEN];
                let len = header.encode(&mut buf);
                assert_eq!(len, header.encoded_len());
                assert_eq!(Header::decode(&buf[..len]), Ok((header, len)));
                assert!(Header::decode(&buf[..len - 1]).is_err() || len == 1);
            }
        }
    }

    #[test]
    fn truncation_is_an_error_not_a_panic() {
        assert_eq!(
            Header::decode(&[]),
            Err(HeaderError::Truncated { needed: 1, got: 0 })
        );
        // X=1, K=7: 8 KID bytes follow, Y=1, C=7: 8 CTR bytes follow.
        assert_eq!(
            Header::decode(&[0xff, 1, 2]),
            Err(HeaderError::Truncated { needed: 17, got: 3 })
        );
    }

    #[test]
    fn non_minimal_encoding_decodes() {
        // KID 5 written as one extension byte, CTR 2 inline.
        assert_eq!(
            Header::decode(&[0x82, 0x05]),
            Ok((Header { kid: 5, ctr: 2 }, 2))
        );
    }
}
