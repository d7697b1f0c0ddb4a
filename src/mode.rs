// SPDX-License-Identifier: MPL-2.0
//! The `mode` property both elements share: which cipher suite protects the stream.

use glib::prelude::*;

use crate::keys::{KeyError, SecretKey};
use crate::sframe::CipherSuite;

/// Cipher suite, as the `mode` property. Values are part of the ABI: new modes are
/// appended, never renumbered.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Hash, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstStreamCryptMode")]
pub enum Mode {
    #[default]
    #[enum_value(
        name = "SFrame AES-128-GCM (RFC 9605 suite 4): 16-byte key, +24 bytes per buffer",
        nick = "aes-128-gcm"
    )]
    Aes128Gcm = 0,
    #[enum_value(
        name = "SFrame AES-256-GCM (RFC 9605 suite 5): 32-byte key, +24 bytes per buffer",
        nick = "aes-256-gcm"
    )]
    Aes256Gcm = 1,
}

impl Mode {
    pub fn suite(self) -> CipherSuite {
        match self {
            Mode::Aes128Gcm => CipherSuite::Aes128GcmSha256,
            Mode::Aes256Gcm => CipherSuite::Aes256GcmSha512,
        }
    }

    /// Checks that `key` has a length this mode accepts.
    pub fn check_key(self, key: &SecretKey) -> Result<(), KeyError> {
        key.check_len(self.suite().base_key_lens(), self.nick())
    }

    /// The name users write on a gst-launch line, e.g. `aes-128-gcm`.
    pub fn nick(self) -> &'static str {
        glib::EnumClass::with_type(Self::static_type())
            .and_then(|class| class.value(self as i32).map(|value| value.nick()))
            .unwrap_or("unknown")
    }
}
