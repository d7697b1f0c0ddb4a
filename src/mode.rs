// SPDX-License-Identifier: MPL-2.0
//! The `mode` property both elements share: which cipher, in which format.

use glib::prelude::*;

use crate::compat::aes_cbc::CbcOptions;
use crate::format::Format;
use crate::keys::{KeyError, KeyText, SecretKey};
use crate::sframe::CipherSuite;

/// Cipher and format, as the `mode` property. Values are part of the ABI: new modes
/// are appended, never renumbered.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Hash, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstStreamCryptMode")]
pub enum Mode {
    #[default]
    #[enum_value(
        name = "SFrame AES-128-GCM (RFC 9605 suite 4): 16-byte key, +25 bytes per buffer",
        nick = "aes-128-gcm"
    )]
    Aes128Gcm = 0,
    #[enum_value(
        name = "SFrame AES-256-GCM (RFC 9605 suite 5): 32-byte key, +25 bytes per buffer",
        nick = "aes-256-gcm"
    )]
    Aes256Gcm = 1,
    #[enum_value(
        name = "SFrame AES-128-CTR with HMAC-SHA256, 80-bit tag (RFC 9605 suite 1): 16-byte key, +19 bytes",
        nick = "aes-128-ctr-hmac-80"
    )]
    Aes128CtrHmac80 = 2,
    #[enum_value(
        name = "SFrame AES-128-CTR with HMAC-SHA256, 64-bit tag (RFC 9605 suite 2): 16-byte key, +17 bytes",
        nick = "aes-128-ctr-hmac-64"
    )]
    Aes128CtrHmac64 = 3,
    #[enum_value(
        name = "SFrame AES-128-CTR with HMAC-SHA256, 32-bit tag (RFC 9605 suite 3): 16-byte key, +13 bytes",
        nick = "aes-128-ctr-hmac-32"
    )]
    Aes128CtrHmac32 = 4,
    #[enum_value(
        name = "SFrame AES-192-GCM (private suite 0xF001): 24-byte key, +25 bytes per buffer",
        nick = "aes-192-gcm"
    )]
    Aes192Gcm = 5,
    #[enum_value(
        name = "SFrame SM4-GCM with SM3 key derivation (private suite 0xF002): 16-byte key, +25 bytes",
        nick = "sm4-gcm"
    )]
    Sm4Gcm = 6,
    #[enum_value(
        name = "SM4-ECB with PKCS#7 per buffer, as NERTC GMCryptoSM4ECB and openssl enc -sm4-ecb: \
                16-byte key, unauthenticated",
        nick = "sm4-ecb"
    )]
    Sm4Ecb = 7,
    #[enum_value(
        name = "QQ TEA (Tencent symmetry_encrypt): 16-byte key (hex, or 16 characters of text), \
                unauthenticated",
        nick = "qq-tea"
    )]
    QqTea = 8,
    #[enum_value(
        name = "AES-128-CBC in the format of aesenc/aesdec (see iv, serialize-iv, \
                per-buffer-padding): 16-byte key, unauthenticated",
        nick = "aes-128-cbc"
    )]
    Aes128Cbc = 9,
    #[enum_value(
        name = "AES-256-CBC in the format of aesenc/aesdec (see iv, serialize-iv, \
                per-buffer-padding): 32-byte key, unauthenticated",
        nick = "aes-256-cbc"
    )]
    Aes256Cbc = 10,
    #[enum_value(
        name = "LiveKit end-to-end encryption frames, for WebRTC (the codec header stays \
                clear; the codec comes from the caps): AES-GCM, key (16 or 32 bytes, HKDF) or \
                passphrase (PBKDF2), key-id is the key index (0-255)",
        nick = "livekit"
    )]
    Livekit = 11,
}

/// How encrypted buffers travel: as buffers, or as records in a byte stream.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstStreamCryptFraming")]
pub enum Framing {
    #[default]
    #[enum_value(
        name = "One encrypted buffer per buffer: for pipelines that keep buffer boundaries \
                (containers, RTP, shared memory)",
        nick = "buffer"
    )]
    Buffer = 0,
    #[enum_value(
        name = "A byte stream of length-prefixed records behind a short header: for files, \
                TCP and pipes, which lose buffer boundaries",
        nick = "stream"
    )]
    Stream = 1,
}

impl Mode {
    pub const ALL: [Mode; 12] = [
        Mode::Aes128Gcm,
        Mode::Aes256Gcm,
        Mode::Aes128CtrHmac80,
        Mode::Aes128CtrHmac64,
        Mode::Aes128CtrHmac32,
        Mode::Aes192Gcm,
        Mode::Sm4Gcm,
        Mode::Sm4Ecb,
        Mode::QqTea,
        Mode::Aes128Cbc,
        Mode::Aes256Cbc,
        Mode::Livekit,
    ];

    /// The format this mode speaks; `cbc` holds the aesenc-compatible options,
    /// which only the AES-CBC modes read.
    pub fn format(self, cbc: CbcOptions) -> Format {
        let sframe = |suite| Format::Sframe(suite);
        match self {
            Mode::Aes128Gcm => sframe(CipherSuite::Aes128GcmSha256),
            Mode::Aes256Gcm => sframe(CipherSuite::Aes256GcmSha512),
            Mode::Aes128CtrHmac80 => sframe(CipherSuite::Aes128CtrHmacSha256_80),
            Mode::Aes128CtrHmac64 => sframe(CipherSuite::Aes128CtrHmacSha256_64),
            Mode::Aes128CtrHmac32 => sframe(CipherSuite::Aes128CtrHmacSha256_32),
            Mode::Aes192Gcm => sframe(CipherSuite::Aes192GcmSha256),
            Mode::Sm4Gcm => sframe(CipherSuite::Sm4GcmSm3),
            Mode::Sm4Ecb => Format::Sm4Ecb,
            Mode::QqTea => Format::QqTea,
            Mode::Aes128Cbc => Format::AesCbc {
                key_len: 16,
                options: cbc,
            },
            Mode::Aes256Cbc => Format::AesCbc {
                key_len: 32,
                options: cbc,
            },
            Mode::Livekit => Format::Livekit,
        }
    }

    /// Whether the mode uses the aesenc-compatible `iv`, `serialize-iv` and
    /// `per-buffer-padding` properties.
    pub fn is_aes_cbc(self) -> bool {
        matches!(self, Mode::Aes128Cbc | Mode::Aes256Cbc)
    }

    /// Reads `text` as a key of this mode.
    pub fn parse_key(self, text: &KeyText) -> Result<SecretKey, KeyError> {
        // The CBC options do not bear on keys.
        self.format(CbcOptions::default())
            .parse_key(text, self.nick())
    }

    /// Checks, before the mode is final, that some mode could use `text`: keys that
    /// no mode reads are refused at once. The error is the one this mode gives.
    pub fn check_plausible_key(self, text: &KeyText) -> Result<(), KeyError> {
        if Self::ALL.iter().any(|mode| mode.parse_key(text).is_ok()) {
            Ok(())
        } else {
            self.parse_key(text).map(drop)
        }
    }

    /// The name users write on a gst-launch line, e.g. `aes-128-gcm`.
    pub fn nick(self) -> &'static str {
        nick_of::<Self>(self as i32)
    }

    /// The mode whose byte-stream header carries `code` (see
    /// `Format::stream_code`).
    pub fn for_stream_code(code: u16) -> Option<Mode> {
        Self::ALL
            .into_iter()
            .find(|mode| mode.format(CbcOptions::default()).stream_code() == code)
    }
}

impl Framing {
    /// The name users write on a gst-launch line: `buffer` or `stream`.
    pub fn nick(self) -> &'static str {
        nick_of::<Self>(self as i32)
    }
}

/// The nick of value `value` of the enum type `E`.
fn nick_of<E: StaticType>(value: i32) -> &'static str {
    glib::EnumClass::with_type(E::static_type())
        .and_then(|class| class.value(value).map(|value| value.nick()))
        .unwrap_or("unknown")
}
