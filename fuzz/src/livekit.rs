// SPDX-License-Identifier: MPL-2.0
//! LiveKit frames for the `livekit_frame` target: the codecs, the keys, the IV,
//! and its input (codec selector, flags with bit 0 for a key frame, frame).

use std::sync::LazyLock;

use streamcrypt::cipher::{Aead, GcmCipher};
use streamcrypt::livekit::{IV_LEN, MediaCodec};

pub const CODECS: [MediaCodec; 5] = [
    MediaCodec::Vp8,
    MediaCodec::Vp9,
    MediaCodec::H264,
    MediaCodec::H265,
    MediaCodec::Audio,
];

pub const IV: [u8; IV_LEN] = [0x5a; IV_LEN];
pub const KEY_INDEX: u8 = 7;

/// The key frames are sealed with, and another.
pub static KEYS: LazyLock<[Aead; 2]> = LazyLock::new(|| {
    [
        Aead::gcm(GcmCipher::Aes, &[0x11; 16]),
        Aead::gcm(GcmCipher::Aes, &[0x22; 32]),
    ]
});

pub fn input(codec: MediaCodec, keyframe: bool, frame: &[u8]) -> Vec<u8> {
    let selector = CODECS.iter().position(|c| *c == codec).expect("a codec");
    let mut data = vec![selector as u8, u8::from(keyframe)];
    data.extend(frame);
    data
}
