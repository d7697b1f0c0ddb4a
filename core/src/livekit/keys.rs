// SPDX-License-Identifier: MPL-2.0
//! LiveKit's frame keys: key material from a raw key (HKDF-SHA256) or a
//! passphrase (PBKDF2-SHA256, 100,000 iterations), the AES-GCM key derived from
//! it with the ratchet salt, and the ratchet that turns material into the next.

use std::num::NonZeroU32;

use hkdf::Hkdf;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::cipher::{Aead, GcmCipher};

/// The ratchet salt LiveKit's clients use unless configured otherwise.
pub const DEFAULT_RATCHET_SALT: &str = "LKFrameEncryptionKey";
/// PBKDF2 iterations for passphrases, as the reference.
pub const PBKDF2_ITERATIONS: u32 = 100_000;
/// HKDF's info for every derivation: 128 zero bytes, as the reference.
const HKDF_INFO: [u8; 128] = [0; 128];
/// Bytes of material a ratchet produces.
const RATCHETED_LEN: usize = 32;

/// How material turns into keys: the key function of the material's origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFunction {
    /// A raw key (`key`).
    Hkdf,
    /// A passphrase (`passphrase`).
    Pbkdf2,
}

/// Key material, wiped when dropped. A ratchet makes new material of the same
/// kind from it.
#[derive(Clone, PartialEq, Eq)]
pub struct Material {
    function: KeyFunction,
    bytes: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for Material {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Material({:?}, <{} bytes>)",
            self.function,
            self.bytes.len()
        )
    }
}

impl Material {
    pub fn from_raw_key(key: &[u8]) -> Self {
        Self {
            function: KeyFunction::Hkdf,
            bytes: Zeroizing::new(key.to_vec()),
        }
    }

    pub fn from_passphrase(passphrase: &str) -> Self {
        Self {
            function: KeyFunction::Pbkdf2,
            bytes: Zeroizing::new(passphrase.as_bytes().to_vec()),
        }
    }

    pub fn function(&self) -> KeyFunction {
        self.function
    }

    /// `out.len()` bytes derived from this material with `salt`.
    fn derive_into(&self, salt: &[u8], out: &mut [u8]) {
        match self.function {
            KeyFunction::Hkdf => Hkdf::<Sha256>::new(Some(salt), &self.bytes)
                .expand(&HKDF_INFO, out)
                .expect("HKDF-SHA256 gives up to 8160 bytes"),
            KeyFunction::Pbkdf2 => ring::pbkdf2::derive(
                ring::pbkdf2::PBKDF2_HMAC_SHA256,
                NonZeroU32::new(PBKDF2_ITERATIONS).expect("non-zero"),
                salt,
                &self.bytes,
                out,
            ),
        }
    }

    /// The AES-GCM key of `key_len` bytes (16 or 32) for frames.
    pub fn frame_key(&self, salt: &[u8], key_len: usize) -> Zeroizing<Vec<u8>> {
        let mut key = Zeroizing::new(vec![0u8; key_len]);
        self.derive_into(salt, &mut key);
        key
    }

    /// The next material in the ratchet: 256 bits derived the same way.
    pub fn ratchet(&self, salt: &[u8]) -> Material {
        let mut bytes = Zeroizing::new(vec![0u8; RATCHETED_LEN]);
        self.derive_into(salt, &mut bytes);
        Material {
            function: self.function,
            bytes,
        }
    }
}

/// What LiveKit's frame keys are derived with beyond the key: the ratchet salt
/// and the AES key length (LiveKit's `ratchetSalt` and `keySize`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyParams {
    pub ratchet_salt: String,
    /// 16 (AES-128-GCM, LiveKit's default) or 32 bytes.
    pub key_len: usize,
}

impl Default for KeyParams {
    fn default() -> Self {
        Self {
            ratchet_salt: DEFAULT_RATCHET_SALT.to_owned(),
            key_len: 16,
        }
    }
}

/// A frame key: its material (to ratchet from) and the AES-GCM key derived
/// from it, with what it was derived with.
pub struct FrameKey {
    material: Material,
    params: KeyParams,
    aead: Aead,
    /// Identifies the AES key, for the IV registry, without revealing it.
    fingerprint: [u8; 32],
}

impl FrameKey {
    pub fn new(material: Material, params: &KeyParams) -> Self {
        let key = material.frame_key(params.ratchet_salt.as_bytes(), params.key_len);
        let fingerprint = Sha256::new()
            .chain_update(b"streamcrypt livekit iv registry")
            .chain_update(&*key)
            .finalize()
            .into();
        Self {
            aead: Aead::gcm(GcmCipher::Aes, &key),
            material,
            params: params.clone(),
            fingerprint,
        }
    }

    pub fn aead(&self) -> &Aead {
        &self.aead
    }

    pub fn fingerprint(&self) -> [u8; 32] {
        self.fingerprint
    }

    /// The key one ratchet step on.
    pub fn ratcheted(&self) -> FrameKey {
        let material = self.material.ratchet(self.params.ratchet_salt.as_bytes());
        FrameKey::new(material, &self.params)
    }

    /// Whether `other` is the same key (material and parameters).
    pub fn same_as(&self, other: &FrameKey) -> bool {
        self.fingerprint == other.fingerprint
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::hex;

    #[test]
    fn derivations_match_independent_implementations() {
        // HKDF-SHA256 and PBKDF2-SHA256 with LiveKit's parameters, computed by
        // Python's `cryptography`:
        //   HKDF(SHA256(), 16, salt=b"LKFrameEncryptionKey", info=bytes(128))
        //       .derive(bytes(range(32)))
        //   PBKDF2HMAC(SHA256(), 16, b"LKFrameEncryptionKey", 100000)
        //       .derive(b"correct horse battery staple")
        let salt = DEFAULT_RATCHET_SALT.as_bytes();
        let raw = Material::from_raw_key(&(0..32).collect::<Vec<u8>>());
        assert_eq!(
            *raw.frame_key(salt, 16),
            hex("6d0dd7b3d6f4efde47ab9a9e15abde76")
        );
        let passphrase = Material::from_passphrase("correct horse battery staple");
        assert_eq!(
            *passphrase.frame_key(salt, 16),
            hex("dee9745ab873685c2579655a7296d1a4")
        );
    }

    #[test]
    fn a_ratchet_keeps_the_function_and_changes_the_key() {
        let salt = DEFAULT_RATCHET_SALT.as_bytes();
        let raw = Material::from_raw_key(&[7; 16]);
        let next = raw.ratchet(salt);
        assert_eq!(next.function(), KeyFunction::Hkdf);
        assert_ne!(next.frame_key(salt, 16), raw.frame_key(salt, 16));
        assert_eq!(next, raw.ratchet(salt), "deterministic");
        assert_eq!(format!("{next:?}"), "Material(Hkdf, <32 bytes>)");
    }
}
