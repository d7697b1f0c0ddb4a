// SPDX-License-Identifier: MPL-2.0
//! Framing for byte streams (files, TCP, pipes), which do not keep buffer
//! boundaries: a short header naming the format, then one length-prefixed record
//! per encrypted buffer.
//!
//! ```text
//! stream header (8 bytes): "SCRY" | version 1 | 0 | format code (u16, big-endian)
//! record:                  length (u32, big-endian, 1..=MAX_RECORD) | that many bytes
//! ```
//!
//! The format code is the SFrame suite's IANA value, or 0xFF00 + n for the formats
//! without a KID (see [`crate::codec::Format::stream_code`]). A record holds what
//! the element would have sent as one buffer with `framing=buffer`.

use std::fmt;

pub const MAGIC: [u8; 4] = *b"SCRY";
pub const VERSION: u8 = 1;
pub const HEADER_LEN: usize = 8;
pub const LENGTH_LEN: usize = 4;
/// Largest record accepted: a bound on what a corrupt length field can make us
/// wait for.
pub const MAX_RECORD: usize = 1 << 28;

pub fn stream_header(code: u16) -> [u8; HEADER_LEN] {
    let mut header = [0u8; HEADER_LEN];
    header[..4].copy_from_slice(&MAGIC);
    header[4] = VERSION;
    header[6..].copy_from_slice(&code.to_be_bytes());
    header
}

pub fn length_prefix(len: usize) -> [u8; LENGTH_LEN] {
    debug_assert!(len > 0 && len <= MAX_RECORD);
    (len as u32).to_be_bytes()
}

/// Why a stream cannot be read on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamError {
    /// The stream does not start with our header.
    NotOurs {
        start: Vec<u8>,
    },
    Version(u8),
    /// The header names another format than the element is set to.
    OtherFormat {
        found: u16,
    },
    /// A length field out of range: the stream is corrupt.
    BadLength {
        len: usize,
        at: u64,
    },
    /// The stream ends inside the header or a record.
    Truncated {
        at: u64,
        missing: usize,
    },
}

impl fmt::Display for StreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamError::NotOurs { start } => write!(
                f,
                "not a streamcrypt stream: it starts with {}, not \"SCRY\" (was it written \
                 with framing=stream?)",
                start.iter().map(|b| format!("{b:02x}")).collect::<String>()
            ),
            StreamError::Version(version) => {
                write!(
                    f,
                    "streamcrypt stream version {version}; this element reads version {VERSION}"
                )
            }
            StreamError::OtherFormat { found } => {
                write!(
                    f,
                    "the stream was written in format {found:#06x}, another mode than the one set"
                )
            }
            StreamError::BadLength { len, at } => write!(
                f,
                "corrupt stream: record length {len} at byte {at} (1 to {MAX_RECORD} allowed)"
            ),
            StreamError::Truncated { at, missing } => write!(
                f,
                "the stream is cut short: it ends at byte {at}, {missing} bytes before the end \
                 of the record it is in"
            ),
        }
    }
}

impl std::error::Error for StreamError {}

/// Reassembles the records of a stream from chunks cut anywhere.
#[derive(Debug)]
pub struct RecordReader {
    code: u16,
    data: Vec<u8>,
    /// Bytes of `data` already taken.
    read: usize,
    /// Stream offset of `data[0]`.
    offset: u64,
    header_seen: bool,
    /// An error has been returned: the stream is not read on.
    failed: bool,
}

impl RecordReader {
    /// A reader for a stream of `code` (see `stream_header`).
    pub fn new(code: u16) -> Self {
        Self {
            code,
            data: Vec::new(),
            read: 0,
            offset: 0,
            header_seen: false,
            failed: false,
        }
    }

    pub fn push(&mut self, chunk: &[u8]) {
        if self.read > 0 && self.read >= self.data.len() / 2 {
            self.data.drain(..self.read);
            self.offset += self.read as u64;
            self.read = 0;
        }
        self.data.extend_from_slice(chunk);
    }

    fn available(&self) -> &[u8] {
        &self.data[self.read..]
    }

    fn position(&self) -> u64 {
        self.offset + self.read as u64
    }

    /// The next complete record, if one has arrived.
    pub fn next_record(&mut self) -> Result<Option<&[u8]>, StreamError> {
        let result = self.read_record();
        self.failed |= result.is_err();
        result.map(|range| range.map(|range| &self.data[range]))
    }

    fn read_record(&mut self) -> Result<Option<std::ops::Range<usize>>, StreamError> {
        if self.failed {
            return Ok(None);
        }
        if !self.header_seen {
            let available = self.available();
            // Say "not ours" as soon as the bytes so far cannot be our header.
            let seen = available.len().min(MAGIC.len());
            if available[..seen] != MAGIC[..seen] {
                return Err(StreamError::NotOurs {
                    start: available[..available.len().min(HEADER_LEN)].to_vec(),
                });
            }
            if available.len() < HEADER_LEN {
                return Ok(None);
            }
            if available[4] != VERSION {
                return Err(StreamError::Version(available[4]));
            }
            let found = u16::from_be_bytes([available[6], available[7]]);
            if found != self.code {
                return Err(StreamError::OtherFormat { found });
            }
            self.read += HEADER_LEN;
            self.header_seen = true;
        }
        let available = self.available();
        let Some(prefix) = available.get(..LENGTH_LEN) else {
            return Ok(None);
        };
        let len = u32::from_be_bytes(prefix.try_into().expect("4 bytes")) as usize;
        if len == 0 || len > MAX_RECORD {
            return Err(StreamError::BadLength {
                len,
                at: self.position(),
            });
        }
        if available.len() < LENGTH_LEN + len {
            return Ok(None);
        }
        let start = self.read + LENGTH_LEN;
        self.read = start + len;
        Ok(Some(start..start + len))
    }

    /// At the end of the stream: an error if it stops inside the header or a record
    /// (and none was returned before).
    pub fn finish(&self) -> Result<(), StreamError> {
        let available = self.available();
        if self.failed {
            return Ok(());
        }
        let missing = if !self.header_seen {
            if available.is_empty() {
                return Ok(());
            }
            HEADER_LEN - available.len()
        } else if available.is_empty() {
            return Ok(());
        } else if let Some(prefix) = available.get(..LENGTH_LEN) {
            let len = u32::from_be_bytes(prefix.try_into().expect("4 bytes")) as usize;
            LENGTH_LEN + len - available.len()
        } else {
            LENGTH_LEN - available.len()
        };
        Err(StreamError::Truncated {
            at: self.offset + self.data.len() as u64,
            missing,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CODE: u16 = 0x0004;

    fn stream(records: &[&[u8]]) -> Vec<u8> {
        let mut out = stream_header(CODE).to_vec();
        for record in records {
            out.extend(length_prefix(record.len()));
            out.extend(*record);
        }
        out
    }

    fn read_all(chunks: impl Iterator<Item = Vec<u8>>) -> Result<Vec<Vec<u8>>, StreamError> {
        let mut reader = RecordReader::new(CODE);
        let mut records = Vec::new();
        for chunk in chunks {
            reader.push(&chunk);
            while let Some(record) = reader.next_record()? {
                records.push(record.to_vec());
            }
        }
        reader.finish()?;
        Ok(records)
    }

    #[test]
    fn any_chunking_gives_the_records_back() {
        let records: Vec<Vec<u8>> = (0..20u8).map(|i| vec![i; 1 + i as usize * 37]).collect();
        let refs: Vec<&[u8]> = records.iter().map(Vec::as_slice).collect();
        let bytes = stream(&refs);
        for size in [1, 2, 3, 4, 5, 7, 8, 9, 11, 13, 64, 1000, bytes.len()] {
            let chunks = bytes.chunks(size).map(<[u8]>::to_vec);
            assert_eq!(read_all(chunks).unwrap(), records, "chunks of {size}");
        }
    }

    #[test]
    fn not_ours_is_said_at_once() {
        let mut reader = RecordReader::new(CODE);
        reader.push(b"\x1aE\xdf\xa3");
        let err = reader.next_record().unwrap_err();
        assert_eq!(
            err,
            StreamError::NotOurs {
                start: b"\x1aE\xdf\xa3".to_vec()
            }
        );
        assert!(
            err.to_string()
                .starts_with("not a streamcrypt stream: it starts with 1a45dfa3")
        );
    }

    #[test]
    fn header_mismatches() {
        let mut bytes = stream(&[b"x"]);
        bytes[4] = 9;
        assert_eq!(read_all([bytes].into_iter()), Err(StreamError::Version(9)));
        let mut reader = RecordReader::new(0x0005);
        reader.push(&stream(&[b"x"]));
        assert_eq!(
            reader.next_record(),
            Err(StreamError::OtherFormat { found: 4 })
        );
    }

    #[test]
    fn truncation_keeps_the_complete_records() {
        let bytes = stream(&[b"first", b"second", b"third"]);
        for cut in [HEADER_LEN - 3, HEADER_LEN + 2, bytes.len() - 3] {
            let mut reader = RecordReader::new(CODE);
            reader.push(&bytes[..cut]);
            let mut delivered = 0;
            while reader.next_record().unwrap().is_some() {
                delivered += 1;
            }
            let err = reader.finish().unwrap_err();
            assert!(
                matches!(err, StreamError::Truncated { at, .. } if at == cut as u64),
                "{err}"
            );
            if cut == bytes.len() - 3 {
                assert_eq!(delivered, 2);
                assert_eq!(
                    err,
                    StreamError::Truncated {
                        at: cut as u64,
                        missing: 3
                    }
                );
            }
        }
        assert!(read_all([Vec::new()].into_iter()).unwrap().is_empty());
    }

    #[test]
    fn corrupt_lengths_are_refused() {
        let mut bytes = stream(&[b"ok"]);
        bytes.extend([0xff, 0xff, 0xff, 0xff]);
        let err = read_all([bytes].into_iter()).unwrap_err();
        assert_eq!(
            err,
            StreamError::BadLength {
                len: u32::MAX as usize,
                at: 14
            }
        );
        let err = read_all([stream(&[]), vec![0, 0, 0, 0]].into_iter()).unwrap_err();
        assert_eq!(err, StreamError::BadLength { len: 0, at: 8 });
    }
}
