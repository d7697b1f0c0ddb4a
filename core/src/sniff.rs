// SPDX-License-Identifier: MPL-2.0
//! Telling media that was never encrypted from ciphertext, so that a decrypter
//! fed plaintext says so instead of reporting a nonsense key id.
//!
//! Only buffers that already failed to decrypt are looked at, so a false match
//! changes an error message, never what is delivered. Ciphertext is
//! indistinguishable from random bytes, so two kinds of evidence are strong:
//! the signature a media format starts with, and too few distinct byte values
//! for random data of that length.

/// What `data` looks like, if it looks like media rather than ciphertext:
/// e.g. "an H.264/H.265 byte stream (it starts with a start code)".
pub fn plaintext_hint(data: &[u8]) -> Option<String> {
    signature_hint(data).or_else(|| low_entropy(data))
}

/// `plaintext_hint` from the signatures alone, which the first
/// [`SIGNATURE_LEN`] bytes of a buffer hold (all but the transport stream's):
/// for buffers whose bytes a failed decryption has overwritten since.
pub fn signature_hint(data: &[u8]) -> Option<String> {
    signature(data).map(|name| format!("{name} (it starts like one)"))
}

/// Bytes the signatures of `signature_hint` need.
pub const SIGNATURE_LEN: usize = 8;

/// The first bytes of a buffer, kept before decrypting it where it lies
/// overwrites them, for `signature_hint` if decrypting fails.
#[derive(Debug, Clone, Copy)]
pub struct Prefix {
    bytes: [u8; SIGNATURE_LEN],
    len: usize,
}

impl Prefix {
    pub fn of(data: &[u8]) -> Self {
        let len = data.len().min(SIGNATURE_LEN);
        // One load where the buffer is long enough: a copy of a length known
        // only at run time goes through `memcpy`, whose narrower stores the
        // decrypter then waited on (they cannot be forwarded to a wider load).
        let bytes = data.first_chunk().copied().unwrap_or_else(|| {
            let mut bytes = [0u8; SIGNATURE_LEN];
            bytes[..len].copy_from_slice(&data[..len]);
            bytes
        });
        Self { bytes, len }
    }

    pub fn hint(&self) -> Option<String> {
        signature_hint(&self.bytes[..self.len])
    }
}

fn signature(data: &[u8]) -> Option<&'static str> {
    let starts = |magic: &[u8]| data.starts_with(magic);
    let at = |offset: usize, magic: &[u8]| data.get(offset..offset + magic.len()) == Some(magic);
    // Signatures of at least 4 bytes (or three sync bytes 188 apart): random data
    // matches one with a probability below 2^-23.
    if starts(&[0, 0, 0, 1]) {
        Some("an H.264/H.265 byte stream")
    } else if starts(&[0x1a, 0x45, 0xdf, 0xa3]) {
        Some("a Matroska/WebM file")
    } else if [&b"ftyp"[..], b"moov", b"moof", b"styp", b"mdat"]
        .iter()
        .any(|tag| at(4, tag))
    {
        Some("an MP4 (ISO BMFF) file")
    } else if starts(b"OggS") {
        Some("an Ogg stream")
    } else if starts(b"RIFF") {
        Some("a RIFF (WAV/AVI) file")
    } else if starts(b"fLaC") {
        Some("a FLAC file")
    } else if data.len() >= 3 * 188 && (0..3).all(|i| data[i * 188] == 0x47) {
        Some("an MPEG transport stream")
    } else {
        None
    }
}

/// Bytes looked at for the distinct-value count.
const SAMPLE: usize = 256;
/// Shortest sample the count says anything about.
const MIN_SAMPLE: usize = 48;

/// Random data of `n` bytes shows about `256 * (1 - (255/256)^n)` distinct
/// values (42 of 48, 162 of 256), with a spread of a few values; fewer than half
/// of that is beyond any chance for ciphertext (well below 2^-100), and typical
/// of raw video, audio and text.
fn low_entropy(data: &[u8]) -> Option<String> {
    let sample = &data[..data.len().min(SAMPLE)];
    if sample.len() < MIN_SAMPLE {
        return None;
    }
    let mut seen = [false; 256];
    for &byte in sample {
        seen[byte as usize] = true;
    }
    let distinct = seen.iter().filter(|&&s| s).count();
    let expected = 256.0 * (1.0 - (255.0f64 / 256.0).powi(sample.len() as i32));
    ((distinct as f64) < expected / 2.0).then(|| {
        format!(
            "unencrypted data (its first {} bytes take only {distinct} of the 256 byte \
             values, where ciphertext takes about {expected:.0})",
            sample.len()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::XorShift;

    #[test]
    fn media_is_recognised() {
        let mut annexb = vec![0, 0, 0, 1, 0x67];
        annexb.extend([0x42; 20]);
        assert!(plaintext_hint(&annexb).unwrap().contains("H.264"));
        assert!(
            plaintext_hint(&[0x1a, 0x45, 0xdf, 0xa3, 1, 2])
                .unwrap()
                .contains("Matroska")
        );
        assert!(
            plaintext_hint(b"\0\0\0\x18ftypisom")
                .unwrap()
                .contains("MP4")
        );
        let mut ts = vec![0u8; 188 * 3];
        for packet in ts.chunks_mut(188) {
            packet[0] = 0x47;
            packet[1..]
                .iter_mut()
                .enumerate()
                .for_each(|(i, b)| *b = i as u8);
        }
        assert!(plaintext_hint(&ts).unwrap().contains("transport stream"));
        // Raw video: a few values repeated.
        let raw: Vec<u8> = (0..4096).map(|i| [16u8, 128, 235][i % 3]).collect();
        assert!(
            plaintext_hint(&raw)
                .unwrap()
                .starts_with("unencrypted data (its first 256 bytes take only 3 of")
        );
    }

    #[test]
    fn a_prefix_keeps_the_first_bytes_of_any_buffer() {
        let ogg = b"OggS\0\x02\0\0\0\0\0";
        for len in 0..=ogg.len() {
            let prefix = Prefix::of(&ogg[..len]);
            assert_eq!(prefix.bytes[..prefix.len], ogg[..len.min(SIGNATURE_LEN)]);
            assert_eq!(prefix.hint().is_some(), len >= 4, "{len} bytes");
        }
    }

    #[test]
    fn ciphertext_is_never_taken_for_media() {
        let mut rng = XorShift(0x5eed);
        for len in [0, 1, 16, 47, 48, 64, 100, 256, 1500, 5000] {
            for _ in 0..2000 {
                let mut data = vec![0u8; len];
                rng.fill(&mut data);
                assert_eq!(plaintext_hint(&data), None, "{len} random bytes");
            }
        }
    }
}
