// SPDX-License-Identifier: MPL-2.0
//! What the fuzz targets share: how a target reads its input, the fixed keys, and
//! the checks that compare one decoding path with another or with a reference.
//! Each module also writes inputs in its target's layout, for the seed corpus
//! (`src/bin/seed_corpus.rs`), so the two cannot drift apart.

pub mod key_errors;
pub mod livekit;
pub mod records;
pub mod sframe_keys;
pub mod trial;

/// Reads a fuzz input front to back; past its end every read gives zeros or
/// nothing, so any input is a valid one.
pub struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Self(data)
    }

    pub fn byte(&mut self) -> u8 {
        self.bytes(1).first().copied().unwrap_or(0)
    }

    /// Up to `n` bytes.
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (taken, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        taken
    }

    pub fn u16(&mut self) -> u16 {
        self.bytes(2)
            .iter()
            .fold(0, |acc, &b| acc << 8 | u16::from(b))
    }

    pub fn u64(&mut self) -> u64 {
        self.bytes(8)
            .iter()
            .fold(0, |acc, &b| acc << 8 | u64::from(b))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn rest(self) -> &'a [u8] {
        self.0
    }
}

/// Reads buffers written as a big-endian u16 length and that many bytes, until the
/// input ends (the last one may be cut short).
pub fn buffers<'a>(mut input: Input<'a>) -> impl Iterator<Item = &'a [u8]> {
    std::iter::from_fn(move || {
        if input.is_empty() {
            return None;
        }
        let len = usize::from(input.u16());
        Some(input.bytes(len))
    })
}

/// Writes `buffers` the way [`buffers`] reads them.
pub fn write_buffers<'a>(out: &mut Vec<u8>, buffers: impl IntoIterator<Item = &'a [u8]>) {
    for buffer in buffers {
        let len = u16::try_from(buffer.len()).expect("a seed buffer under 64 KiB");
        out.extend(len.to_be_bytes());
        out.extend(buffer);
    }
}
