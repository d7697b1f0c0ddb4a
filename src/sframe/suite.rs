// SPDX-License-Identifier: MPL-2.0
//! SFrame cipher suites (RFC 9605, section 4.5).

/// The hash behind a suite's key derivation (HKDF).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kdf {
    Sha256,
    Sha512,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CipherSuite {
    /// 0x0004 AES_128_GCM_SHA256_128
    Aes128GcmSha256,
    /// 0x0005 AES_256_GCM_SHA512_128
    Aes256GcmSha512,
}

impl CipherSuite {
    pub const ALL: [CipherSuite; 2] = [CipherSuite::Aes128GcmSha256, CipherSuite::Aes256GcmSha512];

    /// The suite's value in the IANA "SFrame Cipher Suites" registry.
    pub fn id(self) -> u16 {
        match self {
            CipherSuite::Aes128GcmSha256 => 0x0004,
            CipherSuite::Aes256GcmSha512 => 0x0005,
        }
    }

    pub fn from_id(id: u16) -> Option<Self> {
        Self::ALL.into_iter().find(|suite| suite.id() == id)
    }

    pub fn kdf(self) -> Kdf {
        match self {
            CipherSuite::Aes128GcmSha256 => Kdf::Sha256,
            CipherSuite::Aes256GcmSha512 => Kdf::Sha512,
        }
    }

    /// Nk: length of the derived AEAD key.
    pub fn key_len(self) -> usize {
        match self {
            CipherSuite::Aes128GcmSha256 => 16,
            CipherSuite::Aes256GcmSha512 => 32,
        }
    }

    /// Nn: nonce (and salt) length.
    pub fn nonce_len(self) -> usize {
        12
    }

    /// Nt: authentication tag length.
    pub fn tag_len(self) -> usize {
        16
    }

    /// Base keys the elements accept: as long as the cipher's own key, so that a
    /// 128-bit secret is never stretched over a 256-bit cipher. (HKDF itself takes
    /// any length; the RFC's vectors use 16-byte base keys for every suite.)
    pub fn base_key_lens(self) -> &'static [usize] {
        match self {
            CipherSuite::Aes128GcmSha256 => &[16],
            CipherSuite::Aes256GcmSha512 => &[32],
        }
    }

    /// Most frames one key may protect. AES-GCM: 2^32, the ceiling NIST SP 800-38D
    /// (section 8.3) sets on invocations of one key; far below the 2^64 counters the
    /// header can carry, it also keeps the forgery bound small.
    pub fn max_frames_per_key(self) -> u64 {
        1 << 32
    }
}
