// SPDX-License-Identifier: MPL-2.0
//! The AEAD ciphers behind the SFrame suites, with one in-place interface.
//!
//! AES-128/256-GCM run on `ring`, whose assembly (AES-NI/VAES, PCLMUL, NEON, chosen
//! at run time) is several times faster than portable code. AES-192-GCM, which
//! `ring` lacks, and SM4-GCM are our `gcm`: CTR in wide batches around the `aes`
//! crate (VAES) or the GFNI or AES-NI SM4 of `sm4_fast`, and the GHASH of
//! `ghash_fast` (VPCLMULQDQ or PCLMULQDQ). AES-CTR-HMAC is one pass of
//! AES-NI and SHA-NI where the CPU has both, else CTR over the `aes` crate, then
//! HMAC on `sha2`'s compression function (`ctr_hmac`). Key
//! schedules are built once per key, when the `Aead` is made, never per buffer, and
//! wiped when it is dropped. `aes_cbc` is the block cipher mode behind the
//! aesenc-compatible format and HLS (`crate::compat`), not an AEAD.

pub mod aes_cbc;
mod ctr;
mod ctr_hmac;
pub mod gcm;
pub mod ghash_fast;
pub mod sm4_fast;
pub(crate) mod wiped;

use aes::Aes192;
use aes::cipher::consts::U16;
use aes::cipher::{BlockCipherEncrypt, KeyInit};
use ring::aead::{AES_128_GCM, AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};

pub use ctr_hmac::CtrHmac;
pub use gcm::{Aes192Gcm, Gcm, Sm4Gcm};
use wiped::Wiped;

pub const NONCE_LEN: usize = 12;
/// The longest tag of any suite.
pub const MAX_TAG_LEN: usize = 16;
const GCM_TAG_LEN: usize = 16;

/// Why a seal or open failed. Neither carries detail on purpose: an opener must not
/// tell an attacker why a forgery was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CipherError {
    /// Wrong key, tampered or truncated data.
    Authentication,
    /// The cipher cannot process that much data under one nonce.
    TooLong,
}

/// The block cipher under a GCM key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GcmCipher {
    Aes,
    Sm4,
}

pub enum Aead {
    /// AES-128/256-GCM (ring).
    RingGcm(Wiped<LessSafeKey>),
    /// AES-192-GCM (`gcm` over the `aes` crate; wiped on drop).
    Aes192Gcm(Box<Aes192Gcm>),
    /// SM4-GCM (`sm4_gcm`; wiped on drop).
    Sm4Gcm(Box<Sm4Gcm>),
    /// AES-128-CTR with truncated HMAC-SHA256 (RFC 9605 suites 1-3).
    CtrHmac(Box<CtrHmac>),
}

impl Aead {
    /// GCM over `cipher` with `key` (AES: 16, 24 or 32 bytes; SM4: 16 bytes).
    ///
    /// # Panics
    /// On any other key length: the suites derive keys of exactly that length.
    pub fn gcm(cipher: GcmCipher, key: &[u8]) -> Self {
        match (cipher, key.len()) {
            (GcmCipher::Aes, 16 | 32) => {
                let algorithm = if key.len() == 16 {
                    &AES_128_GCM
                } else {
                    &AES_256_GCM
                };
                let unbound = UnboundKey::new(algorithm, key).expect("key length checked");
                Aead::RingGcm(Wiped::new(LessSafeKey::new(unbound)))
            }
            (GcmCipher::Aes, 24) => {
                let cipher = Aes192::new_from_slice(key).expect("24 bytes");
                Aead::Aes192Gcm(Box::new(Aes192Gcm::new(cipher)))
            }
            (GcmCipher::Sm4, 16) => {
                Aead::Sm4Gcm(Box::new(Sm4Gcm::sm4(key.try_into().expect("16 bytes"))))
            }
            (cipher, n) => panic!("{cipher:?}-GCM key of {n} bytes"),
        }
    }

    pub fn ctr_hmac(key: &[u8], tag_len: usize) -> Self {
        Aead::CtrHmac(Box::new(CtrHmac::new(key, tag_len)))
    }

    pub fn tag_len(&self) -> usize {
        match self {
            Aead::CtrHmac(aead) => aead.tag_len(),
            _ => GCM_TAG_LEN,
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
            Aead::RingGcm(key) => {
                let computed = key
                    .seal_in_place_separate_tag(
                        Nonce::assume_unique_for_key(*nonce),
                        Aad::from(aad),
                        in_out,
                    )
                    .map_err(|_| CipherError::TooLong)?;
                tag.copy_from_slice(computed.as_ref());
            }
            Aead::Aes192Gcm(key) => tag.copy_from_slice(&key.seal_in_place(nonce, aad, in_out)?),
            Aead::Sm4Gcm(key) => tag.copy_from_slice(&key.seal_in_place(nonce, aad, in_out)?),
            Aead::CtrHmac(key) => key.seal_in_place(nonce, aad, in_out, tag)?,
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
            Aead::RingGcm(key) => key
                .open_in_place(Nonce::assume_unique_for_key(*nonce), Aad::from(aad), in_out)
                .map(|plaintext| plaintext.len())
                .map_err(|_| CipherError::Authentication),
            Aead::Aes192Gcm(key) => open_gcm(key, nonce, aad, in_out),
            Aead::Sm4Gcm(key) => open_gcm(key, nonce, aad, in_out),
            Aead::CtrHmac(key) => key.open_in_place(nonce, aad, in_out),
        }
    }
}

/// Opens `in_out` (ciphertext then tag) with one of our GCMs.
fn open_gcm<C: BlockCipherEncrypt<BlockSize = U16>>(
    gcm: &Gcm<C>,
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    in_out: &mut [u8],
) -> Result<usize, CipherError> {
    let (ct, tag) = in_out.split_at_mut(in_out.len() - GCM_TAG_LEN);
    let tag = (&*tag).try_into().expect("16-byte tag");
    gcm.open_in_place(nonce, aad, ct, tag)?;
    Ok(ct.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::hex;

    #[test]
    fn aes_192_gcm_known_answer() {
        // NIST GCM test vector (gcmEncryptExtIV192, Count 0 with 128-bit PT):
        // McGrew & Viega, "The Galois/Counter Mode of Operation", test case 9.
        let key = hex("feffe9928665731c6d6a8f9467308308feffe9928665731c");
        let nonce: [u8; 12] = hex("cafebabefacedbaddecaf888").try_into().unwrap();
        let pt = hex(
            "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72\
             1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255",
        );
        let ct = hex(
            "3980ca0b3c00e841eb06fac4872a2757859e1ceaa6efd984628593b40ca1e19c\
             7d773d00c144c525ac619d18c84a3f4718e2448b2fe324d9ccda2710acade256",
        );
        let tag = hex("9924a7c8587336bfb118024db8674a14");
        let aead = Aead::gcm(GcmCipher::Aes, &key);
        let mut buf = pt.clone();
        let mut got_tag = [0u8; 16];
        aead.seal_in_place(&nonce, &[], &mut buf, &mut got_tag)
            .unwrap();
        assert_eq!(buf, ct);
        assert_eq!(got_tag.to_vec(), tag);
        buf.extend(&tag);
        assert_eq!(aead.open_in_place(&nonce, &[], &mut buf), Ok(pt.len()));
        assert_eq!(&buf[..pt.len()], &pt[..]);
    }

    #[test]
    fn sm4_gcm_known_answer() {
        // RFC 8998, appendix A.1: SM4-GCM.
        let key = hex("0123456789abcdeffedcba9876543210");
        let nonce: [u8; 12] = hex("00001234567800000000abcd").try_into().unwrap();
        let aad = hex("feedfacedeadbeeffeedfacedeadbeefabaddad2");
        let pt = hex(
            "aaaaaaaaaaaaaaaabbbbbbbbbbbbbbbbccccccccccccccccdddddddddddddddd\
             eeeeeeeeeeeeeeeeffffffffffffffffeeeeeeeeeeeeeeeeaaaaaaaaaaaaaaaa",
        );
        let ct = hex(
            "17f399f08c67d5ee19d0dc9969c4bb7d5fd46fd3756489069157b282bb200735\
             d82710ca5c22f0ccfa7cbf93d496ac15a56834cbcf98c397b4024a2691233b8d",
        );
        let tag = hex("83de3541e4c2b58177e065a9bf7b62ec");
        let aead = Aead::gcm(GcmCipher::Sm4, &key);
        let mut buf = pt.clone();
        let mut got_tag = [0u8; 16];
        aead.seal_in_place(&nonce, &aad, &mut buf, &mut got_tag)
            .unwrap();
        assert_eq!(buf, ct);
        assert_eq!(got_tag.to_vec(), tag);
        buf.extend(&tag);
        buf[3] ^= 1;
        assert_eq!(
            aead.open_in_place(&nonce, &aad, &mut buf),
            Err(CipherError::Authentication)
        );
    }
}
