// SPDX-License-Identifier: MPL-2.0
//! LiveKit's end-to-end encryption frames (livekit-client's `FrameCryptor`,
//! libwebrtc's `FrameCryptorTransformer`): codec-aware frames that payloaders,
//! SFUs and browsers still read.
//!
//! ```text
//! clear header | AES-GCM ciphertext | tag (16) | IV (12) | 12 | key index
//!               \_________ escaped for H.264/H.265 (emulation prevention) _________/
//! ```
//!
//! The clear header is what receivers and SFUs need of the codec: VP8's frame
//! tag (10 bytes on key frames, 3 on delta frames), audio's first byte (Opus's
//! TOC), nothing of VP9, and for H.264/H.265 everything up to the first slice NAL
//! unit and two bytes of it, with parameter sets, SEI and AUD left readable. The
//! clear header is the AEAD's associated data. No GStreamer in here.

pub mod keys;
pub mod nalu;

use std::borrow::Cow;

use crate::cipher::{Aead, CipherError, NONCE_LEN};

/// Bytes of the IV, as the trailer announces it.
pub const IV_LEN: usize = NONCE_LEN;
pub const TAG_LEN: usize = 16;
/// IV length byte and key index.
const TRAILER_LEN: usize = 2;
/// What a frame grows by, before H.264/H.265 escaping.
pub const OVERHEAD: usize = TAG_LEN + IV_LEN + TRAILER_LEN;

/// The codec of the frames, as the frame format tells them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaCodec {
    Vp8,
    Vp9,
    H264,
    H265,
    /// Any audio codec (Opus in WebRTC): one clear byte.
    Audio,
}

/// Why caps do not name a codec this format takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsupportedCaps(pub String);

impl std::fmt::Display for UnsupportedCaps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl MediaCodec {
    /// The codec of caps named `name`, H.264/H.265 in `stream_format`.
    pub fn from_caps(name: &str, stream_format: Option<&str>) -> Result<Self, UnsupportedCaps> {
        let annex_b = |codec, format_name: &str| match stream_format {
            Some("byte-stream") | None => Ok(codec),
            Some(other) => Err(UnsupportedCaps(format!(
                "{name}, stream-format={other}: LiveKit's frames carry {format_name} in Annex B \
                 form; convert it first (`h264parse ! video/x-h264,stream-format=byte-stream`, \
                 or h265parse likewise)"
            ))),
        };
        match name {
            "video/x-vp8" => Ok(MediaCodec::Vp8),
            "video/x-vp9" => Ok(MediaCodec::Vp9),
            "video/x-h264" => annex_b(MediaCodec::H264, "H.264"),
            "video/x-h265" => annex_b(MediaCodec::H265, "H.265"),
            audio if audio.starts_with("audio/") => Ok(MediaCodec::Audio),
            other => Err(UnsupportedCaps(format!(
                "caps {other}: mode=livekit encrypts VP8, VP9, H.264, H.265 or audio frames"
            ))),
        }
    }
}

/// How a frame splits into its clear header and the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Bytes of the frame left clear (before start-code normalization). A
    /// frame shorter than this cannot be sent in this format: a receiver would
    /// take more bytes for the header than the sender authenticated.
    pub clear: usize,
    /// H.264/H.265 with a slice: the header's start codes are made long and the
    /// rest is escaped.
    pub nal_units: bool,
}

impl Layout {
    /// The layout of `frame`, a key frame or not (for VP8 its own frame tag
    /// says, as receivers read it). H.264/H.265 access units without a slice
    /// NAL unit are laid out as VP8 frames are, as the reference does.
    pub fn of(codec: MediaCodec, frame: &[u8], keyframe: bool) -> Self {
        let by_frame_type = |keyframe| if keyframe { 10 } else { 3 };
        let (clear, nal_units) = match codec {
            MediaCodec::Audio => (1, false),
            MediaCodec::Vp9 => (0, false),
            // Bit 0 of the frame tag is 0 on key frames.
            MediaCodec::Vp8 => (
                by_frame_type(frame.first().is_some_and(|b| b & 1 == 0)),
                false,
            ),
            MediaCodec::H264 | MediaCodec::H265 => match nalu::first_slice(codec, frame) {
                Some(slice) => (slice + 2, true),
                None => (by_frame_type(keyframe), false),
            },
        };
        Self { clear, nal_units }
    }
}

/// Why a frame could not be sealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealError {
    /// Shorter than the clear header its codec keeps (a VP8 key frame under 10
    /// bytes): no receiver could find where its ciphertext starts.
    ShorterThanHeader {
        len: usize,
        clear: usize,
    },
    Cipher(CipherError),
}

impl std::fmt::Display for SealError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SealError::ShorterThanHeader { len, clear } => write!(
                f,
                "a {len}-byte frame is shorter than the {clear} bytes its codec keeps clear"
            ),
            SealError::Cipher(_) => write!(f, "the frame is too large for AES-GCM"),
        }
    }
}

/// Encrypts `frame` under `key` (its key index `key_index`) with `iv`, which
/// must never repeat under the key. Empty frames are not for this: they go as
/// they are, as the reference sends them.
pub fn seal(
    key: &Aead,
    key_index: u8,
    iv: &[u8; IV_LEN],
    layout: Layout,
    frame: &[u8],
) -> Result<Vec<u8>, SealError> {
    let Some(payload) = frame.get(layout.clear..) else {
        return Err(SealError::ShorterThanHeader {
            len: frame.len(),
            clear: layout.clear,
        });
    };
    let clear = &frame[..layout.clear];
    let header = if layout.nal_units {
        nalu::normalized_header(clear)
    } else {
        clear.into()
    };
    // Sealed where it will be sent, escaped there too when it needs it at all (a
    // 1,200-byte ciphertext about once in 3,400 frames, a MiB one in four):
    // one allocation per frame, with room for a few escapes.
    let len = header.len() + payload.len();
    let mut out = Vec::with_capacity(len + SEAL_ROOM);
    out.extend_from_slice(&header);
    out.extend_from_slice(payload);
    out.resize(len + SEAL_ROOM, 0);
    let sealed = seal_normalized(
        key,
        key_index,
        iv,
        header.len(),
        layout.nal_units,
        &mut out,
        len,
    )?;
    Ok(match sealed {
        InPlace::Sealed(sealed_len) => {
            out.truncate(sealed_len);
            out
        }
        InPlace::Moved(moved) => moved,
    })
}

/// What a frame grows by that `seal_in_place` can take where it lies: the
/// trailer and a few escapes.
pub const SEAL_ROOM: usize = OVERHEAD + ESCAPE_ROOM;

/// Escapes a sealed frame takes where it lies.
const ESCAPE_ROOM: usize = 8;

/// Where `seal_in_place` put a frame.
#[derive(Debug, PartialEq, Eq)]
pub enum InPlace {
    /// Where it lay, now this long.
    Sealed(usize),
    /// Into a new allocation: its escapes did not fit.
    Moved(Vec<u8>),
}

/// Encrypts the frame in `buf[..len]` where it lies, as `seal` does, with the
/// rest of `buf` (SEAL_ROOM bytes or more) to grow into. `None`, nothing done:
/// its header's start codes must be made long, which moves the frame (`seal`).
pub fn seal_in_place(
    key: &Aead,
    key_index: u8,
    iv: &[u8; IV_LEN],
    layout: Layout,
    buf: &mut [u8],
    len: usize,
) -> Result<Option<InPlace>, SealError> {
    if len < layout.clear {
        return Err(SealError::ShorterThanHeader {
            len,
            clear: layout.clear,
        });
    }
    if layout.nal_units && matches!(nalu::normalized_header(&buf[..layout.clear]), Cow::Owned(_)) {
        return Ok(None);
    }
    seal_normalized(key, key_index, iv, layout.clear, layout.nal_units, buf, len).map(Some)
}

/// Seals `buf[..len]`, whose first `clear` bytes are its (normalized) clear
/// header, where it lies; `nal_units`: escapes the rest.
fn seal_normalized(
    key: &Aead,
    key_index: u8,
    iv: &[u8; IV_LEN],
    clear: usize,
    nal_units: bool,
    buf: &mut [u8],
    len: usize,
) -> Result<InPlace, SealError> {
    let sealed_len = len + OVERHEAD;
    assert!(buf.len() >= sealed_len, "room for the trailer");
    let (header, rest) = buf.split_at_mut(clear);
    let (text, rest) = rest.split_at_mut(len - clear);
    let (tag, rest) = rest.split_at_mut(TAG_LEN);
    key.seal_in_place(iv, header, text, tag)
        .map_err(SealError::Cipher)?;
    rest[..IV_LEN].copy_from_slice(iv);
    rest[IV_LEN..TRAILER_LEN + IV_LEN].copy_from_slice(&[IV_LEN as u8, key_index]);
    if !nal_units {
        return Ok(InPlace::Sealed(sealed_len));
    }
    Ok(match nalu::escape_within(buf, clear, sealed_len) {
        Some(escaped_len) => InPlace::Sealed(escaped_len),
        None => {
            let mut moved = Vec::with_capacity(sealed_len + sealed_len / 2);
            moved.extend_from_slice(&buf[..clear]);
            nalu::escape_into(&buf[clear..sealed_len], &mut moved);
            InPlace::Moved(moved)
        }
    })
}

/// Why a frame could not be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenError {
    /// Too short for its trailer, or a trailer that is not the format's.
    Malformed(&'static str),
    /// Wrong key, or the frame was altered.
    Authentication,
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::Malformed(why) => write!(f, "not a LiveKit-encrypted frame: {why}"),
            OpenError::Authentication => write!(
                f,
                "authentication failed (wrong key, key index or ratchet, or the frame was \
                 altered or truncated)"
            ),
        }
    }
}

/// What the end of a frame (unescaped, after its clear header) says.
struct Trailer {
    /// Bytes of ciphertext and tag before the IV.
    sealed_len: usize,
    iv: [u8; IV_LEN],
    key_index: u8,
}

impl Trailer {
    /// The trailer of `rest`; `key_index_stripped`: its key index, 0, was cut off
    /// (see `FrameInPlace::parse_into`).
    fn parse(rest: &[u8], key_index_stripped: bool) -> Result<Self, OpenError> {
        let (key_index, rest_without_index) = if key_index_stripped {
            (0, rest)
        } else {
            let Some((&key_index, rest_without_index)) = rest.split_last() else {
                return Err(OpenError::Malformed("no trailer"));
            };
            (key_index, rest_without_index)
        };
        let Some((&iv_len, before_len)) = rest_without_index.split_last() else {
            return Err(OpenError::Malformed("no trailer"));
        };
        if iv_len as usize != IV_LEN {
            return Err(OpenError::Malformed("its IV length byte is not 12"));
        }
        let Some(sealed_len) = before_len.len().checked_sub(IV_LEN) else {
            return Err(OpenError::Malformed("too short for its IV"));
        };
        if sealed_len < TAG_LEN {
            return Err(OpenError::Malformed("too short for its tag"));
        }
        let iv = before_len[sealed_len..].try_into().expect("IV_LEN bytes");
        Ok(Self {
            sealed_len,
            iv,
            key_index,
        })
    }
}

/// An encrypted frame taken apart, ready to be opened with one key or several.
#[derive(Debug)]
pub struct SealedFrame<'a> {
    header: &'a [u8],
    /// Ciphertext and tag (unescaped).
    sealed: Cow<'a, [u8]>,
    pub iv: [u8; IV_LEN],
    pub key_index: u8,
}

impl<'a> SealedFrame<'a> {
    /// Takes `frame` apart, laid out as `layout` says (computed on `frame` as
    /// received, whose header a sender normalized).
    pub fn parse(frame: &'a [u8], layout: Layout) -> Result<Self, OpenError> {
        if frame.len() < layout.clear {
            return Err(OpenError::Malformed("shorter than its clear header"));
        }
        let (header, rest) = frame.split_at(layout.clear);
        let rest: Cow<[u8]> = if layout.nal_units {
            nalu::unescape(rest)
        } else {
            rest.into()
        };
        let Trailer {
            sealed_len,
            iv,
            key_index,
        } = Trailer::parse(&rest, false)?;
        let sealed = match rest {
            Cow::Borrowed(rest) => Cow::Borrowed(&rest[..sealed_len]),
            Cow::Owned(mut rest) => {
                rest.truncate(sealed_len);
                Cow::Owned(rest)
            }
        };
        Ok(Self {
            header,
            sealed,
            iv,
            key_index,
        })
    }

    /// The frame's plaintext (its clear header first) if `key` opens it.
    pub fn open(&self, key: &Aead) -> Result<Vec<u8>, OpenError> {
        let mut out = Vec::with_capacity(self.header.len() + self.sealed.len());
        out.extend_from_slice(self.header);
        out.extend_from_slice(&self.sealed);
        let len = key
            .open_in_place(&self.iv, self.header, &mut out[self.header.len()..])
            .map_err(|_| OpenError::Authentication)?;
        out.truncate(self.header.len() + len);
        Ok(out)
    }
}

/// An encrypted frame opened where it lies, in the memory it came in, with its
/// ciphertext kept aside in a scratch buffer: a failed attempt (AES-GCM wipes
/// what it could not authenticate) is followed by another key's from the same
/// ciphertext. No allocation per frame once the scratch has grown.
#[derive(Debug)]
pub struct FrameInPlace<'a> {
    frame: &'a mut [u8],
    clear: usize,
    /// Ciphertext and tag (unescaped).
    sealed: &'a [u8],
    /// Whether `frame` still holds them after its header, as it does until a
    /// first attempt unless escapes had to be undone.
    sealed_in_frame: bool,
    pub iv: [u8; IV_LEN],
    pub key_index: u8,
}

impl<'a> FrameInPlace<'a> {
    /// Takes `frame` apart as `SealedFrame::parse` does, its ciphertext and tag
    /// unescaped into `scratch`; `frame` is left as it is until `open`, so a
    /// frame that is not one can still be looked at. `key_index_stripped`: the
    /// frame lost its last byte, key index 0, to an RTP payloader that trims
    /// trailing zeros.
    pub fn parse_into(
        frame: &'a mut [u8],
        layout: Layout,
        key_index_stripped: bool,
        scratch: &'a mut Vec<u8>,
    ) -> Result<Self, OpenError> {
        if frame.len() < layout.clear {
            return Err(OpenError::Malformed("shorter than its clear header"));
        }
        scratch.clear();
        let rest = &frame[layout.clear..];
        if layout.nal_units {
            nalu::unescape_into(rest, scratch);
        } else {
            scratch.extend_from_slice(rest);
        }
        let Trailer {
            sealed_len,
            iv,
            key_index,
        } = Trailer::parse(scratch, key_index_stripped)?;
        let sealed_in_frame = scratch.len() == frame.len() - layout.clear;
        let scratch: &'a [u8] = scratch;
        Ok(Self {
            frame,
            clear: layout.clear,
            sealed: &scratch[..sealed_len],
            sealed_in_frame,
            iv,
            key_index,
        })
    }

    /// The length of the frame's plaintext (its clear header first), which is
    /// then at the start of the frame, if `key` opens it.
    pub fn open(&mut self, key: &Aead) -> Result<usize, OpenError> {
        let end = self.clear + self.sealed.len();
        // Unescaping and the trailer only shrink the frame: the ciphertext fits.
        let (header, text) = self.frame[..end].split_at_mut(self.clear);
        if !std::mem::take(&mut self.sealed_in_frame) {
            text.copy_from_slice(self.sealed);
        }
        let len = key
            .open_in_place(&self.iv, header, text)
            .map_err(|_| OpenError::Authentication)?;
        Ok(self.clear + len)
    }
}

/// The IVs of the last frames opened under one key. LiveKit's frames carry no
/// counter, so a replayed frame is recognised only while its IV is remembered:
/// the last `size` frames. Only IVs of frames that authenticated get in, so the
/// set hashes with `FoldHasher`: a frame's check and record took 48 ns with
/// SipHash, 18 with it.
#[derive(Debug, Default)]
pub struct IvWindow {
    size: usize,
    seen: std::collections::HashSet<[u8; IV_LEN], crate::keyring::FoldHash>,
    order: std::collections::VecDeque<[u8; IV_LEN]>,
}

impl IvWindow {
    /// A window of the last `size` IVs; 0 remembers none.
    pub fn new(size: usize) -> Self {
        Self {
            size,
            ..Self::default()
        }
    }

    pub fn contains(&self, iv: &[u8; IV_LEN]) -> bool {
        self.seen.contains(iv)
    }

    /// Remembers `iv`, of a frame that authenticated.
    pub fn record(&mut self, iv: [u8; IV_LEN]) {
        if self.size == 0 || !self.seen.insert(iv) {
            return;
        }
        self.order.push_back(iv);
        if self.order.len() > self.size {
            let oldest = self.order.pop_front().expect("not empty");
            self.seen.remove(&oldest);
        }
    }

    /// Forgets every IV: the application restarted the stream.
    pub fn reset(&mut self) {
        self.seen.clear();
        self.order.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cipher::GcmCipher;

    fn key(byte: u8) -> Aead {
        Aead::gcm(GcmCipher::Aes, &[byte; 16])
    }

    fn round_trip(codec: MediaCodec, frame: &[u8], keyframe: bool) -> (Vec<u8>, Layout) {
        let layout = Layout::of(codec, frame, keyframe);
        let iv = [9u8; IV_LEN];
        let sealed = seal(&key(1), 3, &iv, layout, frame).unwrap();
        let received = Layout::of(codec, &sealed, keyframe);
        let parsed = SealedFrame::parse(&sealed, received).unwrap();
        assert_eq!((parsed.key_index, parsed.iv), (3, iv));
        assert_eq!(parsed.open(&key(2)), Err(OpenError::Authentication));
        (parsed.open(&key(1)).unwrap(), layout)
    }

    #[test]
    fn vp8_keeps_its_frame_tag_clear() {
        let mut keyframe = vec![0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00];
        keyframe.extend([0x55; 100]);
        let (opened, layout) = round_trip(MediaCodec::Vp8, &keyframe, true);
        assert_eq!(layout.clear, 10);
        assert_eq!(opened, keyframe);
        let delta = [0x31, 0x04, 0x00, 1, 2, 3, 4, 5];
        let (opened, layout) = round_trip(MediaCodec::Vp8, &delta, false);
        assert_eq!(layout.clear, 3);
        assert_eq!(opened, delta);
    }

    #[test]
    fn the_layout_follows_the_codec() {
        assert_eq!(Layout::of(MediaCodec::Audio, &[0xfc, 1, 2], false).clear, 1);
        assert_eq!(Layout::of(MediaCodec::Vp9, &[0x82, 1, 2], true).clear, 0);
        // A frame shorter than its clear header cannot be sent or received.
        let short = [0x10, 2, 0, 0x9d];
        let layout = Layout::of(MediaCodec::Vp8, &short, true);
        assert_eq!(layout.clear, 10);
        assert_eq!(
            seal(&key(1), 0, &[0; IV_LEN], layout, &short),
            Err(SealError::ShorterThanHeader { len: 4, clear: 10 })
        );
        assert_eq!(
            SealedFrame::parse(&short, layout).unwrap_err(),
            OpenError::Malformed("shorter than its clear header")
        );
        // A frame that is all header comes back.
        let (opened, _) = round_trip(MediaCodec::Audio, &[0xfc], false);
        assert_eq!(opened, [0xfc]);
        // H.264 without a slice: as VP8, by frame type, and not escaped.
        let sps = [0, 0, 0, 1, 0x67, 0x42, 0xc0];
        assert_eq!(
            Layout::of(MediaCodec::H264, &sps, true),
            Layout {
                clear: 10,
                nal_units: false
            }
        );
    }

    #[test]
    fn h264_escapes_and_normalizes() {
        // SPS with a short start code, then an IDR slice.
        let mut frame = vec![0, 0, 1, 0x67, 0x42, 0, 0, 1, 0x65, 0x88];
        frame.extend([0, 0, 0, 0, 1, 2, 3, 0, 0, 0]);
        let (opened, layout) = round_trip(MediaCodec::H264, &frame, true);
        assert_eq!(
            layout,
            Layout {
                clear: 10,
                nal_units: true
            }
        );
        // The clear header comes back with long start codes.
        let mut expected = vec![0, 0, 0, 1, 0x67, 0x42, 0, 0, 0, 1, 0x65, 0x88];
        expected.extend(&frame[10..]);
        assert_eq!(opened, expected);
    }

    #[test]
    fn ciphertext_is_escaped_where_it_was_sealed() {
        let mut frame = vec![0, 0, 0, 1, 0x65, 0x88];
        frame.resize(256 << 10, 0x5a);
        let layout = Layout::of(MediaCodec::H264, &frame, true);
        let mut escaped_frames = 0;
        for n in 0..64u8 {
            let sealed = seal(&key(1), 0, &[n; IV_LEN], layout, &frame).unwrap();
            let body = &sealed[layout.clear..];
            let unescaped = nalu::unescape(body);
            let mut expected = Vec::new();
            nalu::escape_into(&unescaped, &mut expected);
            assert!(body == expected, "IV {n}");
            escaped_frames += usize::from(unescaped.len() < body.len());
            let parsed = SealedFrame::parse(&sealed, layout).unwrap();
            assert!(parsed.open(&key(1)).unwrap() == frame);
        }
        // 256 KiB of ciphertext needs an escape about once in 16 frames.
        assert!(escaped_frames > 0);
    }

    #[test]
    fn frames_seal_in_place_as_they_do_copied() {
        let idr = |fill: u8, len: usize| {
            let mut frame = vec![0, 0, 0, 1, 0x65, 0x88];
            frame.resize(len, fill);
            frame
        };
        let vp8 = |len: usize| {
            let mut frame = vec![0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00];
            frame.resize(len, 0x33);
            frame
        };
        let cases = [
            (MediaCodec::Vp8, vp8(188)),
            (MediaCodec::Audio, vec![0xfc; 60]),
            (MediaCodec::H264, idr(0x5a, 1200)),
            // Large enough that some IVs make ciphertext that needs escapes.
            (MediaCodec::H264, idr(0x5a, 256 << 10)),
        ];
        let mut escaped = 0;
        for (codec, frame) in &cases {
            let layout = Layout::of(*codec, frame, true);
            for n in 0..24u8 {
                let iv = [n; IV_LEN];
                let wanted = seal(&key(1), 7, &iv, layout, frame).unwrap();
                // Room for the trailer and a few escapes, or for the trailer only.
                for room in [SEAL_ROOM, OVERHEAD] {
                    let mut buf = [&frame[..], &vec![0xee; room]].concat();
                    let sealed = seal_in_place(&key(1), 7, &iv, layout, &mut buf, frame.len())
                        .unwrap()
                        .expect("long start codes: sealed in place");
                    let got = match sealed {
                        InPlace::Sealed(len) => buf[..len].to_vec(),
                        InPlace::Moved(moved) => moved,
                    };
                    assert!(got == wanted, "{codec:?}, {} bytes, IV {n}", frame.len());
                }
                escaped += usize::from(wanted.len() > frame.len() + OVERHEAD);
            }
        }
        assert!(escaped > 0, "no frame needed escapes");
        // Short start codes in the header: not in place.
        let frame = [0, 0, 1, 0x67, 0x42, 0, 0, 1, 0x65, 0x88, 1, 2, 3];
        let layout = Layout::of(MediaCodec::H264, &frame, true);
        let mut buf = [&frame[..], &[0; SEAL_ROOM]].concat();
        let sealed = seal_in_place(&key(1), 0, &[0; IV_LEN], layout, &mut buf, frame.len());
        assert_eq!(sealed, Ok(None));
        assert!(buf[..frame.len()] == frame, "left as it was");
    }

    /// Opens `frame` as `SealedFrame` does and where it lies, with the right
    /// key first and with a wrong one first, and checks both ways agree on
    /// everything.
    fn assert_in_place_matches(frame: &[u8], layout: Layout, scratch: &mut Vec<u8>) {
        for keys in [[1, 2, 1], [2, 1, 3]] {
            assert_in_place_opens_as_copied(frame, layout, scratch, keys);
        }
    }

    fn assert_in_place_opens_as_copied(
        frame: &[u8],
        layout: Layout,
        scratch: &mut Vec<u8>,
        keys: [u8; 3],
    ) {
        let copied = SealedFrame::parse(frame, layout);
        let mut in_place_bytes = frame.to_vec();
        let in_place = FrameInPlace::parse_into(&mut in_place_bytes, layout, false, scratch);
        let (copied, mut in_place) = match (copied, in_place) {
            (Ok(copied), Ok(in_place)) => (copied, in_place),
            (Err(copied), Err(in_place)) => {
                assert_eq!(copied, in_place);
                assert!(
                    in_place_bytes == frame,
                    "a frame that is not one is left as it is"
                );
                return;
            }
            (copied, in_place) => panic!("{copied:?} but in place {in_place:?}"),
        };
        assert_eq!(
            (copied.iv, copied.key_index),
            (in_place.iv, in_place.key_index)
        );
        for key in keys.map(key) {
            let expected = copied.open(&key);
            let opened = in_place
                .open(&key)
                .map(|len| in_place.frame[..len].to_vec());
            assert_eq!(expected, opened);
        }
    }

    #[test]
    fn frames_open_in_place_as_they_do_copied() {
        let mut rng = crate::test_util::XorShift(0x11ce_f00d);
        let mut scratch = Vec::new();
        let codecs = [
            MediaCodec::Vp8,
            MediaCodec::Vp9,
            MediaCodec::H264,
            MediaCodec::H265,
            MediaCodec::Audio,
        ];
        // Sealed frames, H.264 ones with ciphertext that needs escaping (found by
        // trying IVs) and with zero-heavy clear headers.
        let mut escaped = 0;
        for n in 0..400u32 {
            let codec = codecs[n as usize % codecs.len()];
            let len = [0, 1, 3, 11, 40, 200, 1200, 5000][rng.below(8)];
            let mut frame = crate::test_util::noise(rng.next(), len);
            if matches!(codec, MediaCodec::H264 | MediaCodec::H265) {
                frame.splice(0..0, [0, 0, 1, 0x67, 0, 0, 3, 0, 0, 0, 1, 0x65, 0x26, 1]);
            }
            let keyframe = n % 3 == 0;
            let layout = Layout::of(codec, &frame, keyframe);
            let mut iv = [0u8; IV_LEN];
            iv[..4].copy_from_slice(&n.to_be_bytes());
            let Ok(sealed) = seal(&key(1), (n % 5) as u8, &iv, layout, &frame) else {
                continue;
            };
            let received = Layout::of(codec, &sealed, keyframe);
            escaped += usize::from(
                received.nal_units
                    && nalu::unescape(&sealed[received.clear..]).len()
                        < sealed.len() - received.clear,
            );
            assert_in_place_matches(&sealed, received, &mut scratch);
            // Altered, truncated, and with key index 0 cut off.
            let mut altered = sealed.clone();
            let at = rng.below(altered.len());
            altered[at] ^= 1 << rng.below(8);
            assert_in_place_matches(&altered, received, &mut scratch);
            let cut = &sealed[..rng.below(sealed.len() + 1)];
            assert_in_place_matches(cut, Layout::of(codec, cut, keyframe), &mut scratch);
            if sealed.last() == Some(&0) {
                let restored = SealedFrame::parse(&sealed, received).unwrap();
                let mut stripped = sealed[..sealed.len() - 1].to_vec();
                let mut in_place =
                    FrameInPlace::parse_into(&mut stripped, received, true, &mut scratch).unwrap();
                assert_eq!(in_place.iv, restored.iv);
                let len = in_place.open(&key(1)).unwrap();
                assert!(restored.open(&key(1)).unwrap() == in_place.frame[..len]);
            }
        }
        assert!(escaped > 0, "no frame needed escaping");
        // Large frames, whose ciphertext itself needs escaping now and then.
        let mut frame = vec![0, 0, 0, 1, 0x65, 0x88];
        frame.resize(256 << 10, 0x5a);
        let layout = Layout::of(MediaCodec::H264, &frame, true);
        let mut escaped_ciphertexts = 0;
        for n in 0..64u8 {
            let sealed = seal(&key(1), 0, &[n; IV_LEN], layout, &frame).unwrap();
            let ciphertext_end = sealed.len() - OVERHEAD;
            if nalu::needs_escaping(&sealed[layout.clear..ciphertext_end]) {
                escaped_ciphertexts += 1;
                assert_in_place_matches(&sealed, layout, &mut scratch);
            }
        }
        assert!(escaped_ciphertexts > 0, "no ciphertext needed escaping");
        // Noise and escape-heavy bytes, laid out as each codec would.
        let alphabets: [&[u8]; 3] = [&[0, 0, 0, 1, 3, 12, 0xff], &[0, 3], &[0, 12]];
        for n in 0..3000 {
            let alphabet = alphabets[n % alphabets.len()];
            let len = rng.below(80);
            let mut frame: Vec<u8> = (0..len)
                .map(|_| alphabet[rng.below(alphabet.len())])
                .collect();
            if n % 2 == 0 {
                frame.extend([12, rng.below(4) as u8]);
            }
            for layout in [
                Layout {
                    clear: rng.below(12),
                    nal_units: true,
                },
                Layout {
                    clear: rng.below(12),
                    nal_units: false,
                },
            ] {
                assert_in_place_matches(&frame, layout, &mut scratch);
            }
        }
    }

    #[test]
    fn the_iv_window_remembers_the_last_ivs() {
        let iv = |n: u8| [n; IV_LEN];
        let mut window = IvWindow::new(3);
        for n in 0..5 {
            assert!(!window.contains(&iv(n)));
            window.record(iv(n));
            assert!(window.contains(&iv(n)));
        }
        assert!(!window.contains(&iv(1)), "older than the window");
        assert!(window.contains(&iv(2)));
        window.reset();
        assert!(!window.contains(&iv(4)));
        let mut off = IvWindow::new(0);
        off.record(iv(1));
        assert!(!off.contains(&iv(1)));
    }

    #[test]
    fn malformed_frames_are_named() {
        let layout = Layout {
            clear: 0,
            nal_units: false,
        };
        for (frame, why) in [
            (&[][..], "no trailer"),
            (&[5][..], "no trailer"),
            (&[1, 2, 3, 11, 0][..], "its IV length byte is not 12"),
            (
                &[0u8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 12, 0][..],
                "too short for its IV",
            ),
        ] {
            assert_eq!(
                SealedFrame::parse(frame, layout).unwrap_err(),
                OpenError::Malformed(why)
            );
        }
        let mut short = vec![0u8; 15 + IV_LEN];
        short.extend([12, 0]);
        assert_eq!(
            SealedFrame::parse(&short, layout).unwrap_err(),
            OpenError::Malformed("too short for its tag")
        );
    }
}
