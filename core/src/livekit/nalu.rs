// SPDX-License-Identifier: MPL-2.0
//! What LiveKit's frame encryption reads of H.264 and H.265 access units in
//! Annex B form: where the first slice NAL unit starts, start codes in the clear
//! header made 4 bytes long, and the emulation-prevention escaping that keeps
//! start codes out of the encrypted part.
//!
//! Every rule here is the reference's (livekit-client's worker, checked against
//! it byte for byte by the interop tests), including its edge cases: a start code
//! in the last three bytes is not one, and bytes before the first start code make
//! the frame unparsable.

use std::borrow::Cow;
use std::sync::LazyLock;

use memchr::memmem;

use super::MediaCodec;

const START_CODE: [u8; 3] = [0, 0, 1];
const ESCAPE: [u8; 3] = [0, 0, 3];

/// The searches, built once: building one took a third of the time of finding
/// the first slice in a 188-byte frame.
static START_CODES: LazyLock<memmem::Finder<'static>> =
    LazyLock::new(|| memmem::Finder::new(&START_CODE));
static ESCAPES: LazyLock<memmem::Finder<'static>> = LazyLock::new(|| memmem::Finder::new(&ESCAPE));
static ZERO_PAIRS: LazyLock<memmem::Finder<'static>> =
    LazyLock::new(|| memmem::Finder::new(&[0, 0]));

/// Offsets just after each start code (`00 00 01`, or `00 00 00 01`), that is
/// where each NAL unit's header is, found as they are needed (a SIMD search);
/// `None` when non-zero bytes come before the first start code.
fn nal_unit_starts(data: &[u8]) -> Option<impl Iterator<Item = usize>> {
    // As the reference scans: a start code must begin before the last 3 bytes,
    // so it ends before the last byte. Start codes cannot overlap, so the
    // reference's scan and a search for each next one find the same.
    let searched = &data[..data.len().saturating_sub(1)];
    let mut starts = START_CODES.find_iter(searched).peekable();
    let before_first = &data[..starts.peek().copied().unwrap_or(data.len())];
    if before_first.iter().any(|&b| b != 0) {
        return None;
    }
    Some(starts.map(|at| at + START_CODE.len()))
}

fn is_slice(codec: MediaCodec, header: u8) -> bool {
    match codec {
        // Non-IDR and IDR slices.
        MediaCodec::H264 => matches!(header & 0x1f, 1 | 5),
        // Slice segments: trailing, TSA, STSA, RADL, RASL, BLA, IDR, CRA.
        MediaCodec::H265 => matches!((header >> 1) & 0x3f, 0..=9 | 16..=21),
        _ => false,
    }
}

/// Where the first slice NAL unit's header is, if the access unit has one.
pub fn first_slice(codec: MediaCodec, data: &[u8]) -> Option<usize> {
    // Access units without parameter sets (all but key frames) start with their
    // slice: read without setting up a search, which was most of the 18 ns it
    // took to find.
    if let Some(header) = leading_nal_unit(data)
        && is_slice(codec, data[header])
    {
        return Some(header);
    }
    nal_unit_starts(data)?.find(|&start| {
        data.get(start)
            .is_some_and(|&header| is_slice(codec, header))
    })
}

/// Where the first NAL unit's header is when `data` starts with a start code
/// that `nal_unit_starts` would find (one ending before the last byte).
fn leading_nal_unit(data: &[u8]) -> Option<usize> {
    let header = if data.starts_with(&START_CODE) {
        START_CODE.len()
    } else if data.starts_with(&[0, 0, 0, 1]) {
        START_CODE.len() + 1
    } else {
        return None;
    };
    (header < data.len()).then_some(header)
}

/// `header` with every 3-byte start code made a 4-byte one (a leading `00`
/// added), as the receiving depacketizer rebuilds them: what the sender
/// authenticates and sends.
pub fn with_long_start_codes(header: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(header.len() + 4);
    for (at, &byte) in header.iter().enumerate() {
        if is_short_start_code(header, at) {
            out.push(0);
        }
        out.push(byte);
    }
    out
}

/// `header` as `with_long_start_codes` makes it, borrowed when it has no short
/// start code (encoders write long ones before parameter sets and first slices).
pub fn normalized_header(header: &[u8]) -> Cow<'_, [u8]> {
    if (0..header.len()).any(|at| is_short_start_code(header, at)) {
        Cow::Owned(with_long_start_codes(header))
    } else {
        Cow::Borrowed(header)
    }
}

/// Whether a 3-byte start code, not the end of a 4-byte one, begins at `at`.
fn is_short_start_code(header: &[u8], at: usize) -> bool {
    header[at..].starts_with(&START_CODE) && (at == 0 || header[at - 1] != 0)
}

/// Where emulation prevention puts a `03` in `data` (offsets in `data`, each
/// before the byte it goes in front of): before every byte of 3 or less that
/// follows two zeros, so that no start code appears; the byte so escaped starts
/// the count of zeros anew.
///
/// Ciphertext has two zeros in a row once in 65,536 bytes, so the pairs are
/// found with a SIMD search (`memmem`). Its leftmost match is the first place
/// two zeros have been seen since the last escape or non-zero byte: after a pair
/// at `at` the count starts again at `at + 2` whatever that byte is.
fn escape_positions(data: &[u8]) -> impl Iterator<Item = usize> + '_ {
    let mut from = 0;
    std::iter::from_fn(move || {
        while let Some(pair) = ZERO_PAIRS.find(&data[from.min(data.len())..]) {
            let after = from + pair + 2;
            from = after;
            if data.get(after).is_some_and(|&byte| byte <= 3) {
                return Some(after);
            }
        }
        from = data.len();
        None
    })
}

/// Appends `data` to `out` with emulation prevention (see `escape_positions`).
pub fn escape_into(data: &[u8], out: &mut Vec<u8>) {
    out.reserve(data.len());
    let mut at = 0;
    for escape in escape_positions(data) {
        out.extend_from_slice(&data[at..escape]);
        out.push(ESCAPE[2]);
        at = escape;
    }
    out.extend_from_slice(&data[at..]);
}

/// Escapes `buf[from..len]` where it lies (see `escape_positions`), growing into
/// the rest of `buf`: each run of bytes moves back once, the last first. Returns
/// the new length, or `None`, with nothing changed, when the escapes do not fit.
/// A ciphertext needs an escape about once in 4 MiB, so the positions are few.
pub fn escape_within(buf: &mut [u8], from: usize, len: usize) -> Option<usize> {
    let escapes: Vec<usize> = escape_positions(&buf[from..len])
        .map(|at| from + at)
        .collect();
    if len + escapes.len() > buf.len() {
        return None;
    }
    let mut end = len;
    for (moved, &escape) in escapes.iter().enumerate().rev() {
        let shift = moved + 1;
        buf.copy_within(escape..end, escape + shift);
        buf[escape + shift - 1] = ESCAPE[2];
        end = escape;
    }
    Some(len + escapes.len())
}

/// Whether escaping would change `data`.
pub fn needs_escaping(data: &[u8]) -> bool {
    escape_positions(data).next().is_some()
}

/// Undoes `escape_into` as the reference does: the `03` of every `00 00 03` goes
/// (found with a SIMD search; escapes cannot overlap, so searching for each next
/// one finds what the reference's scan does). Borrows `data` when it holds none.
pub fn unescape(data: &[u8]) -> Cow<'_, [u8]> {
    if ESCAPES.find(data).is_none() {
        return Cow::Borrowed(data);
    }
    let mut out = Vec::with_capacity(data.len());
    unescape_into(data, &mut out);
    Cow::Owned(out)
}

/// Appends `data` to `out` with `unescape`'s escapes undone: into a buffer that
/// is reused from frame to frame.
pub fn unescape_into(data: &[u8], out: &mut Vec<u8>) {
    out.reserve(data.len());
    let mut at = 0;
    for escape in ESCAPES.find_iter(data) {
        out.extend_from_slice(&data[at..escape + 2]);
        at = escape + ESCAPE.len();
    }
    out.extend_from_slice(&data[at..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::XorShift;

    const SPS: &[u8] = &[0x67, 0x42, 0xc0, 0x1e, 0xd9];
    const PPS: &[u8] = &[0x68, 0xce, 0x3c, 0x80];
    const IDR: &[u8] = &[0x65, 0x88, 0x84, 0x00, 0x33, 0xff];

    fn annex_b(units: &[(&[u8], bool)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (unit, long) in units {
            if *long {
                out.push(0);
            }
            out.extend_from_slice(&[0, 0, 1]);
            out.extend_from_slice(unit);
        }
        out
    }

    #[test]
    fn the_first_slice_is_found_after_parameter_sets() {
        let au = annex_b(&[(SPS, true), (PPS, true), (IDR, true)]);
        // 4 + 5 + 4 + 4 + 4 = 21: the IDR's header byte.
        assert_eq!(first_slice(MediaCodec::H264, &au), Some(21));
        let au = annex_b(&[(PPS, false), (IDR, false)]);
        assert_eq!(first_slice(MediaCodec::H264, &au), Some(10));
        // Parameter sets only: no slice.
        let au = annex_b(&[(SPS, true), (PPS, true)]);
        assert_eq!(first_slice(MediaCodec::H264, &au), None);
        // Bytes before the first start code: not an Annex B access unit.
        let mut au = vec![7];
        au.extend(annex_b(&[(IDR, true)]));
        assert_eq!(first_slice(MediaCodec::H264, &au), None);
        // H.265: VPS (32), then an IDR_W_RADL slice (19).
        let vps = [0x40, 0x01, 0x0c];
        let idr = [0x26, 0x01, 0xaf, 0x09];
        let au = annex_b(&[(&vps, true), (&idr, true)]);
        assert_eq!(first_slice(MediaCodec::H265, &au), Some(11));
        assert_eq!(first_slice(MediaCodec::H264, &au), None);
    }

    #[test]
    fn a_start_code_in_the_last_three_bytes_is_none() {
        let mut au = annex_b(&[(SPS, true)]);
        au.extend_from_slice(&[0, 0, 1]);
        assert_eq!(nal_unit_starts(&au).map(Iterator::collect), Some(vec![4]));
    }

    #[test]
    fn short_start_codes_are_made_long() {
        let header = annex_b(&[(SPS, false), (PPS, true), (&IDR[..2], false)]);
        let long = with_long_start_codes(&header);
        assert_eq!(
            long,
            annex_b(&[(SPS, true), (PPS, true), (&IDR[..2], true)])
        );
        assert_eq!(
            with_long_start_codes(&long),
            long,
            "long ones stay as they are"
        );
        assert!(matches!(normalized_header(&long), Cow::Borrowed(h) if h == long));
        assert!(matches!(normalized_header(&header), Cow::Owned(h) if h == long));
    }

    #[test]
    fn escaping_keeps_start_codes_out_and_comes_back() {
        let mut escaped = Vec::new();
        escape_into(&[0, 0, 1, 0, 0, 0, 0, 0, 3, 7, 0, 0], &mut escaped);
        assert_eq!(escaped, [0, 0, 3, 1, 0, 0, 3, 0, 0, 3, 0, 3, 7, 0, 0]);
        let mut rng = XorShift(77);
        for len in [0, 1, 2, 3, 4, 17, 100, 1000] {
            for _ in 0..200 {
                // Many zeros, so that escapes happen.
                let data: Vec<u8> = (0..len)
                    .map(|_| [0, 0, 0, 1, 2, 3, 4, 0xff][rng.below(8)])
                    .collect();
                let mut escaped = Vec::new();
                escape_into(&data, &mut escaped);
                assert!(
                    !escaped
                        .windows(3)
                        .any(|w| w[0] == 0 && w[1] == 0 && w[2] <= 2),
                    "a start code or 00 00 0x slipped through"
                );
                assert_eq!(unescape(&escaped), data);
            }
        }
    }

    /// The scalar scans the SIMD searches replaced, byte by byte as the reference.
    mod scalar {
        pub fn nal_unit_starts(data: &[u8]) -> Option<Vec<usize>> {
            let search_end = data.len().saturating_sub(3);
            let mut starts = Vec::new();
            let mut at = 0;
            while at < search_end {
                if data[at] == 0 && data[at + 1] == 0 && data[at + 2] == 1 {
                    if starts.is_empty() && data[..at].iter().any(|&b| b != 0) {
                        return None;
                    }
                    at += 3;
                    starts.push(at);
                } else {
                    at += 1;
                }
            }
            if starts.is_empty() && data.iter().any(|&b| b != 0) {
                return None;
            }
            Some(starts)
        }

        pub fn escape(data: &[u8]) -> Vec<u8> {
            let mut out = Vec::new();
            let mut zeros = 0;
            for &byte in data {
                if byte <= 3 && zeros >= 2 {
                    out.push(3);
                    zeros = 0;
                }
                out.push(byte);
                zeros = if byte == 0 { zeros + 1 } else { 0 };
            }
            out
        }

        pub fn unescape(data: &[u8]) -> Vec<u8> {
            let mut out = Vec::with_capacity(data.len());
            let mut at = 0;
            while at < data.len() {
                if data.len() - at >= 3 && data[at] == 0 && data[at + 1] == 0 && data[at + 2] == 3 {
                    out.extend_from_slice(&[0, 0]);
                    at += 3;
                } else {
                    out.push(data[at]);
                    at += 1;
                }
            }
            out
        }
    }

    /// Random bytes, zero-heavy runs, and runs of the bytes escaping turns on
    /// (00, 01, 02, 03), long enough to cross the SIMD searches' 16-, 32- and
    /// 64-byte blocks.
    fn inputs() -> Vec<Vec<u8>> {
        let mut rng = XorShift(0x0e5c_a9e5);
        let mut inputs: Vec<Vec<u8>> = vec![
            vec![],
            vec![0; 200],
            [0, 0, 3].repeat(70),
            [0, 0, 1].repeat(70),
            [0, 0, 0, 3].repeat(50),
            [0, 0, 0, 1].repeat(50),
            [1, 0, 0].repeat(70),
        ];
        for len in (0..300).chain([1000, 4096, 65_537]) {
            let alphabets: [&[u8]; 4] = [
                &[0, 0, 0, 1, 2, 3, 4, 0xff],
                &[0, 3],
                &[0, 1],
                &[0, 0, 0, 0, 0, 0, 0, 0x65],
            ];
            for alphabet in alphabets {
                inputs.push(
                    (0..len)
                        .map(|_| alphabet[rng.below(alphabet.len())])
                        .collect(),
                );
            }
            inputs.push(crate::test_util::noise(rng.next(), len));
        }
        inputs
    }

    #[test]
    fn simd_searches_match_the_scalar_scans() {
        let leading: [&[u8]; 6] = [
            &[0, 0, 1],
            &[0, 0, 1, 0x65],
            &[0, 0, 0, 1],
            &[0, 0, 0, 1, 0x41],
            &[0, 0, 0, 1, 0x67, 0, 0, 1, 0x65, 9],
            &[0, 0, 1, 0x26, 1, 0xaf],
        ];
        for data in inputs().iter().map(Vec::as_slice).chain(leading) {
            let len = data.len();
            let starts = scalar::nal_unit_starts(data);
            assert_eq!(
                nal_unit_starts(data).map(Iterator::collect::<Vec<_>>),
                starts,
                "start codes in {len} bytes"
            );
            for codec in [MediaCodec::H264, MediaCodec::H265] {
                let slice = starts.iter().flatten().copied().find(|&start| {
                    data.get(start)
                        .is_some_and(|&header| is_slice(codec, header))
                });
                assert_eq!(
                    first_slice(codec, data),
                    slice,
                    "{codec:?} slice in {data:?}"
                );
            }
            let data = data.to_vec();
            let mut escaped = vec![0x77];
            escape_into(&data, &mut escaped);
            assert!(
                escaped[1..] == scalar::escape(&data)[..],
                "escaping {len} bytes"
            );
            assert_eq!(needs_escaping(&data), escaped.len() > len + 1);
            let wanted = scalar::escape(&data);
            let mut in_place = [&[0x77, 0, 0][..], &data, &vec![0xee; len]].concat();
            let escaped_len = escape_within(&mut in_place, 3, 3 + len);
            assert!(
                escaped_len == Some(3 + wanted.len())
                    && in_place[3..3 + wanted.len()] == wanted[..]
                    && in_place[..3] == [0x77, 0, 0],
                "escaping {len} bytes in place"
            );
            // Without the room for its escapes: left as it was.
            if wanted.len() > len {
                let mut tight = data.clone();
                assert_eq!(escape_within(&mut tight, 0, len), None);
                assert!(tight == data, "{len} bytes changed without room");
            }
            assert!(
                unescape(&data)[..] == scalar::unescape(&data)[..],
                "unescaping {len} bytes"
            );
            let mut reused = vec![0x77];
            unescape_into(&data, &mut reused);
            assert!(
                reused[1..] == scalar::unescape(&data)[..],
                "unescaping {len} bytes after others"
            );
            assert!(
                unescape(&escaped[1..])[..] == data[..],
                "round trip of {len} bytes"
            );
        }
    }
}
