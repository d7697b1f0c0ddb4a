// SPDX-License-Identifier: MPL-2.0
//! `framing=stream`: the `record_reader` input, and a reference parse of a whole
//! stream in one piece, written straight from the format in `framing.rs`'s
//! documentation.

use streamcrypt::framing::{HEADER_LEN, LENGTH_LEN, MAGIC, MAX_RECORD, StreamError, VERSION};

use crate::Input;

/// The `record_reader` input: the reader's format code, how many chunk sizes
/// follow (up to 15), the sizes (one byte each, used in turn; 255 takes the rest),
/// then the stream's bytes.
pub struct RecordInput<'a> {
    pub code: u16,
    pub chunk_sizes: &'a [u8],
    pub stream: &'a [u8],
}

pub const TAKE_THE_REST: u8 = 255;

impl<'a> RecordInput<'a> {
    pub fn read(data: &'a [u8]) -> Self {
        let mut input = Input::new(data);
        let code = input.u16();
        let count = usize::from(input.byte() % 16);
        let chunk_sizes = input.bytes(count);
        Self {
            code,
            chunk_sizes,
            stream: input.rest(),
        }
    }

    pub fn write(&self) -> Vec<u8> {
        let mut data = self.code.to_be_bytes().to_vec();
        data.push(self.chunk_sizes.len() as u8);
        data.extend(self.chunk_sizes);
        data.extend(self.stream);
        data
    }

    /// The stream cut into chunks as the sizes say (a single chunk without sizes).
    pub fn chunks(&self) -> Vec<&'a [u8]> {
        let mut rest = self.stream;
        let mut chunks = Vec::new();
        // A size of 0 pushes an empty chunk; if all are 0, the stream goes whole.
        let progress = self.chunk_sizes.iter().any(|&size| size > 0);
        let mut sizes = self.chunk_sizes.iter().cycle().take_while(|_| progress);
        while !rest.is_empty() {
            let size = match sizes.next() {
                None | Some(&TAKE_THE_REST) => rest.len(),
                Some(&size) => usize::from(size).min(rest.len()),
            };
            let (chunk, tail) = rest.split_at(size);
            chunks.push(chunk);
            rest = tail;
        }
        chunks
    }
}

/// A record's stream offset (of its length field) and bytes.
pub type PlacedRecord<'a> = (u64, &'a [u8]);

/// The records of `stream` read in one piece, and how it ends: `Ok` at a record
/// boundary, or the error the reader must give.
pub fn reference_parse(
    code: u16,
    stream: &[u8],
) -> (Vec<PlacedRecord<'_>>, Result<(), StreamError>) {
    let mut records = Vec::new();
    let len = stream.len();
    let truncated = |missing| StreamError::Truncated {
        at: len as u64,
        missing,
    };
    if stream.is_empty() {
        return (records, Ok(()));
    }
    let magic_seen = len.min(MAGIC.len());
    if stream[..magic_seen] != MAGIC[..magic_seen] {
        let start = stream[..len.min(HEADER_LEN)].to_vec();
        return (records, Err(StreamError::NotOurs { start }));
    }
    if len < HEADER_LEN {
        return (records, Err(truncated(HEADER_LEN - len)));
    }
    if stream[4] != VERSION {
        return (records, Err(StreamError::Version(stream[4])));
    }
    let found = u16::from_be_bytes([stream[6], stream[7]]);
    if found != code {
        let error = StreamError::OtherFormat {
            found,
            expected: code,
        };
        return (records, Err(error));
    }
    let mut at = HEADER_LEN;
    while at < len {
        let left = len - at;
        if left < LENGTH_LEN {
            return (records, Err(truncated(LENGTH_LEN - left)));
        }
        let prefix: [u8; LENGTH_LEN] = stream[at..at + LENGTH_LEN].try_into().unwrap();
        let record_len = u32::from_be_bytes(prefix) as usize;
        if record_len == 0 || record_len > MAX_RECORD {
            let error = StreamError::BadLength {
                len: record_len,
                at: at as u64,
            };
            return (records, Err(error));
        }
        if left - LENGTH_LEN < record_len {
            return (records, Err(truncated(LENGTH_LEN + record_len - left)));
        }
        records.push((
            at as u64,
            &stream[at + LENGTH_LEN..at + LENGTH_LEN + record_len],
        ));
        at += LENGTH_LEN + record_len;
    }
    (records, Ok(()))
}

/// Whether the reader's error is the reference's. "Not ours" is said as soon as
/// the bytes seen cannot start our header, so the reader may quote fewer of the
/// first bytes than the reference: at least up to the first that differs.
pub fn same_error(got: &StreamError, expected: &StreamError, stream: &[u8]) -> bool {
    match (got, expected) {
        (StreamError::NotOurs { start: got }, StreamError::NotOurs { start: all }) => {
            let first_different = stream
                .iter()
                .zip(MAGIC)
                .take_while(|(a, b)| *a == b)
                .count();
            all.starts_with(got) && got.len() > first_different
        }
        _ => got == expected,
    }
}
