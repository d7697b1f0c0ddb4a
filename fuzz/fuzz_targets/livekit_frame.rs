// SPDX-License-Identifier: MPL-2.0
//! LiveKit E2EE frames for every codec: any bytes received are laid out, parsed
//! and opened without a panic; the same bytes as a frame to send are sealed and
//! come back, their H.264/H.265 header with long start codes, under the right key
//! only; emulation prevention round-trips. Input: codec selector, flags (bit 0:
//! key frame), frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use streamcrypt::livekit::{Layout, MediaCodec, SealedFrame, nalu, seal};
use streamcrypt_fuzz::Input;
use streamcrypt_fuzz::livekit::{CODECS, IV, KEY_INDEX, KEYS};

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let codec = CODECS[usize::from(input.byte()) % CODECS.len()];
    let keyframe = input.byte() & 1 != 0;
    let frame = input.rest();
    let [key, other_key] = &*KEYS;

    // As received.
    let layout = Layout::of(codec, frame, keyframe);
    if let Ok(parsed) = SealedFrame::parse(frame, layout)
        && let Err(error) = parsed.open(key)
    {
        let _ = error.to_string();
    }

    // As sent.
    let mut escaped = Vec::new();
    nalu::escape_into(frame, &mut escaped);
    assert_eq!(nalu::unescape(&escaped), frame);
    let Ok(sealed) = seal(key, KEY_INDEX, &IV, layout, frame) else {
        // Only a frame shorter than its clear header is refused.
        assert!(frame.len() < layout.clear);
        return;
    };
    let received = Layout::of(codec, &sealed, keyframe);
    let (header, payload) = frame.split_at(layout.clear);
    let header = if layout.nal_units {
        nalu::with_long_start_codes(header)
    } else {
        header.to_vec()
    };
    // A layout a receiver may not find again, as in the reference (see
    // README.md, "Fuzzing"): an H.264/H.265 frame without a slice keeps a fixed
    // clear length, and its ciphertext may look like a slice (one frame in some
    // 10^8).
    let fixed = matches!(codec, MediaCodec::H264 | MediaCodec::H265) && !layout.nal_units;
    if received.clear != header.len() || received.nal_units != layout.nal_units {
        assert!(
            fixed,
            "{codec:?}: sent {layout:?}, received as {received:?}"
        );
        return;
    }
    let parsed = SealedFrame::parse(&sealed, received).expect("a frame we sealed");
    assert_eq!((parsed.key_index, parsed.iv), (KEY_INDEX, IV));
    assert_eq!(parsed.open(key), Ok([&header[..], payload].concat()));
    assert!(parsed.open(other_key).is_err());
});
