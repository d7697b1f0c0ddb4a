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
//! without a KID (see [`crate::format::Format::stream_code`]). A record holds what
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

/// The length field of a record of `len` bytes; `None` if no record can be that
/// long (the writer must split its input first, never wrap the length).
pub fn length_prefix(len: usize) -> Option<[u8; LENGTH_LEN]> {
    if len == 0 || len > MAX_RECORD {
        return None;
    }
    Some((len as u32).to_be_bytes())
}

/// Most plaintext one record carries: a writer splits larger inputs into records
/// of this size, leaving room for any format's overhead (at most a few dozen
/// bytes) well within `MAX_RECORD`.
pub const MAX_RECORD_PLAINTEXT: usize = MAX_RECORD - (1 << 16);
const _: () = assert!(MAX_RECORD_PLAINTEXT < MAX_RECORD);

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
        expected: u16,
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
            StreamError::OtherFormat { found, expected } => write!(
                f,
                "the stream was written in format {found:#06x}, not in format {expected:#06x} \
                 of the mode set"
            ),
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

/// One record as the reader hands it out: its bytes, and where it was in the
/// stream, so that errors can name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// 0 for the first record of the stream.
    pub index: u64,
    /// Stream offset of the record's length field.
    pub offset: u64,
    pub bytes: &'a [u8],
}

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
    /// Records handed out so far.
    records: u64,
    /// The stream is not read on: an error was returned, or the caller gave up
    /// on it (`stop`). Later input is discarded, not buffered.
    stopped: bool,
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
            records: 0,
            stopped: false,
        }
    }

    pub fn push(&mut self, chunk: &[u8]) {
        if self.stopped {
            return;
        }
        if self.read > 0 && self.read >= self.data.len() / 2 {
            self.data.drain(..self.read);
            self.offset += self.read as u64;
            self.read = 0;
        }
        self.data.extend_from_slice(chunk);
    }

    /// Stops reading: what is buffered is dropped, and later input is ignored.
    /// For a caller that failed on a record.
    pub fn stop(&mut self) {
        self.stopped = true;
        self.data = Vec::new();
        self.read = 0;
    }

    /// Bytes held, waiting for the rest of a record.
    pub fn buffered(&self) -> usize {
        self.data.len() - self.read
    }

    fn available(&self) -> &[u8] {
        &self.data[self.read..]
    }

    fn position(&self) -> u64 {
        self.offset + self.read as u64
    }

    /// The next complete record, if one has arrived.
    pub fn next_record(&mut self) -> Result<Option<Record<'_>>, StreamError> {
        let result = self.read_record();
        if result.is_err() {
            self.stop();
        }
        let record = result?;
        Ok(record.map(|(offset, range)| {
            let index = self.records;
            self.records += 1;
            Record {
                index,
                offset,
                bytes: &self.data[range],
            }
        }))
    }

    /// Checks the stream header, once there are enough bytes to.
    fn read_header(&mut self) -> Result<bool, StreamError> {
        let available = self.available();
        // Say "not ours" as soon as the bytes so far cannot be our header.
        let seen = available.len().min(MAGIC.len());
        if available[..seen] != MAGIC[..seen] {
            return Err(StreamError::NotOurs {
                start: available[..available.len().min(HEADER_LEN)].to_vec(),
            });
        }
        if available.len() < HEADER_LEN {
            return Ok(false);
        }
        if available[4] != VERSION {
            return Err(StreamError::Version(available[4]));
        }
        let found = u16::from_be_bytes([available[6], available[7]]);
        if found != self.code {
            return Err(StreamError::OtherFormat {
                found,
                expected: self.code,
            });
        }
        self.read += HEADER_LEN;
        self.header_seen = true;
        Ok(true)
    }

    /// The length of the record at the read position, once its length field has
    /// arrived.
    fn record_len(&self) -> Result<Option<usize>, StreamError> {
        let Some(prefix) = self.available().get(..LENGTH_LEN) else {
            return Ok(None);
        };
        let len = u32::from_be_bytes(prefix.try_into().expect("4 bytes")) as usize;
        if len == 0 || len > MAX_RECORD {
            return Err(StreamError::BadLength {
                len,
                at: self.position(),
            });
        }
        Ok(Some(len))
    }

    /// The next complete record's stream offset and where its bytes are.
    fn read_record(&mut self) -> Result<Option<(u64, std::ops::Range<usize>)>, StreamError> {
        if self.stopped || (!self.header_seen && !self.read_header()?) {
            return Ok(None);
        }
        let Some(len) = self.record_len()? else {
            return Ok(None);
        };
        if self.available().len() < LENGTH_LEN + len {
            return Ok(None);
        }
        let offset = self.position();
        let start = self.read + LENGTH_LEN;
        self.read = start + len;
        Ok(Some((offset, start..start + len)))
    }

    /// At the end of the stream: an error if it stops inside the header or a
    /// record. Call once every complete record has been taken; a stopped reader
    /// (its error already returned) has nothing more to say.
    pub fn finish(&self) -> Result<(), StreamError> {
        let available = self.available();
        if self.stopped || available.is_empty() {
            return Ok(());
        }
        let needed = if self.header_seen {
            match self.record_len()? {
                Some(len) => LENGTH_LEN + len,
                None => LENGTH_LEN,
            }
        } else {
            HEADER_LEN
        };
        match needed.checked_sub(available.len()) {
            Some(missing) if missing > 0 => Err(StreamError::Truncated {
                at: self.offset + self.data.len() as u64,
                missing,
            }),
            // A complete record or header is still waiting to be taken: that is
            // the caller's to read, not a truncation.
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CODE: u16 = 0x0004;

    fn stream(records: &[&[u8]]) -> Vec<u8> {
        let mut out = stream_header(CODE).to_vec();
        for record in records {
            out.extend(length_prefix(record.len()).unwrap());
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
                assert_eq!(record.index, records.len() as u64);
                records.push(record.bytes.to_vec());
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
            Err(StreamError::OtherFormat {
                found: 4,
                expected: 5
            })
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

    #[test]
    fn records_say_where_they_were() {
        let bytes = stream(&[b"ab", b"cde", b"f"]);
        let mut reader = RecordReader::new(CODE);
        reader.push(&bytes);
        let mut found = Vec::new();
        while let Some(record) = reader.next_record().unwrap() {
            found.push((record.index, record.offset, record.bytes.to_vec()));
        }
        assert_eq!(
            found,
            [
                (0, 8, b"ab".to_vec()),
                (1, 14, b"cde".to_vec()),
                (2, 21, b"f".to_vec())
            ]
        );
    }

    #[test]
    fn finish_with_records_still_buffered_is_no_truncation() {
        // A caller that stopped taking records (it failed on one) and then
        // reached the end: finish() must neither underflow nor claim a cut.
        let bytes = stream(&[b"bad", b"good", b"good too"]);
        let mut reader = RecordReader::new(CODE);
        reader.push(&bytes);
        assert!(reader.next_record().unwrap().is_some());
        assert_eq!(reader.finish(), Ok(()));
        // Two complete records and half a third: the half is the truncation.
        let mut reader = RecordReader::new(CODE);
        reader.push(&bytes[..bytes.len() - 4]);
        assert!(reader.next_record().unwrap().is_some());
        assert_eq!(reader.finish(), Ok(()));
        assert!(reader.next_record().unwrap().is_some());
        assert_eq!(
            reader.finish(),
            Err(StreamError::Truncated {
                at: bytes.len() as u64 - 4,
                missing: 4
            })
        );
    }

    #[test]
    fn a_stopped_reader_buffers_nothing_more() {
        let bytes = stream(&[b"first", b"second"]);
        let mut reader = RecordReader::new(CODE);
        reader.push(&bytes);
        assert!(reader.next_record().unwrap().is_some());
        reader.stop();
        assert_eq!(reader.buffered(), 0);
        reader.push(&vec![0u8; 1 << 20]);
        assert_eq!(reader.buffered(), 0, "input after a failure is not kept");
        assert_eq!(reader.next_record(), Ok(None));
        assert_eq!(reader.finish(), Ok(()));
        // An error stops the reader too.
        let mut reader = RecordReader::new(CODE);
        reader.push(b"not ours at all");
        assert!(reader.next_record().is_err());
        reader.push(&bytes);
        assert_eq!(reader.buffered(), 0);
        assert_eq!(reader.next_record(), Ok(None));
    }

    #[test]
    fn no_length_field_wraps() {
        assert_eq!(length_prefix(0), None);
        assert_eq!(length_prefix(MAX_RECORD + 1), None);
        assert_eq!(length_prefix(1usize << 32), None);
        assert_eq!(
            length_prefix(MAX_RECORD),
            Some((MAX_RECORD as u32).to_be_bytes())
        );
    }
}
