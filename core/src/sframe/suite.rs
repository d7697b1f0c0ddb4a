// SPDX-License-Identifier: MPL-2.0
//! SFrame cipher suites: the five of RFC 9605 (section 4.5), and two of our own in
//! the registry's private-use range (0xF000-0xFFFF) for the ciphers our users need
//! that the RFC lacks: AES-192 for 24-byte keys, and SM4 for deployments bound to
//! the Chinese national standards (paired with SM3 for key derivation, as TLS does
//! in RFC 8998). Both are built exactly like suite 4, only the cipher and hash
//! differ; the README documents them and `tests/data/sframe-private-suites.json`
//! holds their vectors.

use crate::cipher::GcmCipher;

/// The hash behind a suite's key derivation (HKDF).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kdf {
    Sha256,
    Sha512,
    Sm3,
}

/// The AEAD a suite uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AeadKind {
    Gcm(GcmCipher),
    /// AES-128-CTR + HMAC-SHA256 with a tag of this many bytes.
    CtrHmac(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CipherSuite {
    /// 0x0001 AES_128_CTR_HMAC_SHA256_80
    Aes128CtrHmacSha256_80,
    /// 0x0002 AES_128_CTR_HMAC_SHA256_64
    Aes128CtrHmacSha256_64,
    /// 0x0003 AES_128_CTR_HMAC_SHA256_32
    Aes128CtrHmacSha256_32,
    /// 0x0004 AES_128_GCM_SHA256_128
    Aes128GcmSha256,
    /// 0x0005 AES_256_GCM_SHA512_128
    Aes256GcmSha512,
    /// 0xF001 AES_192_GCM_SHA256_128 (private use)
    Aes192GcmSha256,
    /// 0xF002 SM4_128_GCM_SM3_128 (private use)
    Sm4GcmSm3,
}

impl CipherSuite {
    pub const ALL: [CipherSuite; 7] = [
        CipherSuite::Aes128CtrHmacSha256_80,
        CipherSuite::Aes128CtrHmacSha256_64,
        CipherSuite::Aes128CtrHmacSha256_32,
        CipherSuite::Aes128GcmSha256,
        CipherSuite::Aes256GcmSha512,
        CipherSuite::Aes192GcmSha256,
        CipherSuite::Sm4GcmSm3,
    ];

    /// The suite's value in the IANA "SFrame Cipher Suites" registry.
    pub fn id(self) -> u16 {
        match self {
            CipherSuite::Aes128CtrHmacSha256_80 => 0x0001,
            CipherSuite::Aes128CtrHmacSha256_64 => 0x0002,
            CipherSuite::Aes128CtrHmacSha256_32 => 0x0003,
            CipherSuite::Aes128GcmSha256 => 0x0004,
            CipherSuite::Aes256GcmSha512 => 0x0005,
            CipherSuite::Aes192GcmSha256 => 0xF001,
            CipherSuite::Sm4GcmSm3 => 0xF002,
        }
    }

    pub fn from_id(id: u16) -> Option<Self> {
        Self::ALL.into_iter().find(|suite| suite.id() == id)
    }

    pub fn kdf(self) -> Kdf {
        match self {
            CipherSuite::Aes256GcmSha512 => Kdf::Sha512,
            CipherSuite::Sm4GcmSm3 => Kdf::Sm3,
            _ => Kdf::Sha256,
        }
    }

    pub fn aead(self) -> AeadKind {
        match self {
            CipherSuite::Aes128CtrHmacSha256_80 => AeadKind::CtrHmac(10),
            CipherSuite::Aes128CtrHmacSha256_64 => AeadKind::CtrHmac(8),
            CipherSuite::Aes128CtrHmacSha256_32 => AeadKind::CtrHmac(4),
            CipherSuite::Sm4GcmSm3 => AeadKind::Gcm(GcmCipher::Sm4),
            _ => AeadKind::Gcm(GcmCipher::Aes),
        }
    }

    /// Nk: length of the derived AEAD key (for CTR-HMAC, AES key and HMAC key).
    pub fn key_len(self) -> usize {
        match self {
            CipherSuite::Aes128CtrHmacSha256_80
            | CipherSuite::Aes128CtrHmacSha256_64
            | CipherSuite::Aes128CtrHmacSha256_32 => 48,
            CipherSuite::Aes128GcmSha256 | CipherSuite::Sm4GcmSm3 => 16,
            CipherSuite::Aes192GcmSha256 => 24,
            CipherSuite::Aes256GcmSha512 => 32,
        }
    }

    /// Nn: nonce (and salt) length.
    pub fn nonce_len(self) -> usize {
        12
    }

    /// Nt: authentication tag length.
    pub fn tag_len(self) -> usize {
        match self.aead() {
            AeadKind::CtrHmac(tag_len) => tag_len,
            AeadKind::Gcm(_) => 16,
        }
    }

    /// Base keys the elements accept: as long as the cipher's own key, so that a
    /// 128-bit secret is never stretched over a 256-bit cipher. (HKDF itself takes
    /// any length; the RFC's vectors use 16-byte base keys for every suite.)
    pub fn base_key_lens(self) -> &'static [usize] {
        match self {
            CipherSuite::Aes192GcmSha256 => &[24],
            CipherSuite::Aes256GcmSha512 => &[32],
            _ => &[16],
        }
    }

    /// Most frames one key may protect. GCM: 2^32, the ceiling NIST SP 800-38D
    /// (section 8.3) sets on invocations of one key. CTR-HMAC: also 2^32, which keeps
    /// the forgery odds of the short tags bounded (RFC 9605 section 9.5 asks
    /// applications to limit use of those suites).
    pub fn max_frames_per_key(self) -> u64 {
        1 << 32
    }

    /// Frames that may fail authentication under one key before the receiver
    /// stops using it. Each forged frame passes an Nt-byte tag with probability
    /// 2^-(8 Nt); capping the failures at 2^(4 Nt) keeps the chance that any
    /// forgery ever passes below 2^-(4 Nt) (2^-16 for the 32-bit tag), as RFC 9605
    /// section 9.5 advises for the short tags. The cap never exceeds 2^36, QUIC's
    /// integrity limit for AES-GCM (RFC 9001, 6.6), which binds the long tags.
    pub fn max_auth_failures(self) -> u64 {
        1 << (4 * self.tag_len()).min(36)
    }
}
