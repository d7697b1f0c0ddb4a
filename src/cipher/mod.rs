// SPDX-License-Identifier: MPL-2.0
//! The AEAD ciphers behind the SFrame suites, with one in-place interface.
//!
//! AES-GCM runs on `ring`, whose assembly (AES-NI/VAES, PCLMUL, NEON, chosen at run
//! time) is several times faster than portable code. Key schedules are built once
//! per key, when the `Aead` is made, never per buffer.

mod wiped;

use ring::aead::{AES_128_GCM, AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};

use wiped::Wiped;

pub const NONCE_LEN: usize = 12;
/// The longest tag of any suite.
pub const MAX_TAG_LEN: usize = 16;

/// Why a seal or open failed. Neither carries detail on purpose: an opener must not
/// tell an attacker why a forgery was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CipherError {
    /// Wrong key, tampered or truncated data.
    Authentication,
    /// The cipher cannot process that much data under one nonce.
    TooLong,
}

pub enum Aead {
    Gcm(Wiped<LessSafeKey>),
}

impl Aead {
    /// AES-GCM with a 16- or 32-byte key.
    ///
    /// # Panics
    /// On any other key length: the suites derive keys of exactly that length.
    pub fn aes_gcm(key: &[u8]) -> Self {
        let algorithm = match key.len() {
            16 => &AES_128_GCM,
            32 => &AES_256_GCM,
            n => panic!("AES-GCM key of {n} bytes"),
        };
        let unbound = UnboundKey::new(algorithm, key).expect("key length checked above");
        Aead::Gcm(Wiped::new(LessSafeKey::new(unbound)))
    }

    pub fn tag_len(&self) -> usize {
        match self {
            Aead::Gcm(key) => key.algorithm().tag_len(),
        }
    }

    /// Encrypts `in_out` in place and writes the `tag_len()`-byte tag to `tag`.
    pub fn seal_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        in_out: &mut [u8],
        tag: &mut [u8],
    ) -> Result<(), CipherError> {
        match self {
            Aead::Gcm(key) => {
                let computed = key
                    .seal_in_place_separate_tag(
                        Nonce::assume_unique_for_key(*nonce),
                        Aad::from(aad),
                        in_out,
                    )
                    .map_err(|_| CipherError::TooLong)?;
                tag.copy_from_slice(computed.as_ref());
            }
        }
        Ok(())
    }

    /// Authenticates and decrypts `in_out` (ciphertext then tag) in place; returns
    /// the plaintext length. On failure the contents of `in_out` are unspecified.
    pub fn open_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        in_out: &mut [u8],
    ) -> Result<usize, CipherError> {
        if in_out.len() < self.tag_len() {
            return Err(CipherError::Authentication);
        }
        match self {
            Aead::Gcm(key) => key
                .open_in_place(Nonce::assume_unique_for_key(*nonce), Aad::from(aad), in_out)
                .map(|plaintext| plaintext.len())
                .map_err(|_| CipherError::Authentication),
        }
    }
}
