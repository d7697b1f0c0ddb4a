// SPDX-License-Identifier: MPL-2.0
//! The AES-CTR + HMAC-SHA256 AEAD of RFC 9605 (section 4.5.1), with tags truncated
//! to 10, 8 or 4 bytes (suites 1-3).
//!
//! Encryption is AES-128-CTR with the counter block `nonce || 0x00000000`; the tag
//! is HMAC-SHA256 over `len(aad) || len(ct) || tag_len` (each 8 bytes, big-endian),
//! `nonce`, `aad` and `ct`, truncated.

use aes::Aes128;
use aes::cipher::{InnerIvInit, KeyInit, StreamCipher, StreamCipherCoreWrapper};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::{CipherError, NONCE_LEN};

type Aes128CtrCore = ctr::CtrCore<Aes128, ctr::flavors::Ctr32BE>;

pub struct CtrHmac {
    cipher: Aes128,
    /// HMAC keyed once; cloned per frame.
    mac: Hmac<Sha256>,
    tag_len: usize,
}

impl CtrHmac {
    /// `key` is the suite's Nk = 48 bytes: the AES key (16) then the HMAC key (32).
    ///
    /// # Panics
    /// On another key length or a tag longer than 32 bytes.
    pub fn new(key: &[u8], tag_len: usize) -> Self {
        assert_eq!(key.len(), 48, "AES-CTR-HMAC key");
        assert!(tag_len <= 32);
        let (enc_key, auth_key) = key.split_at(16);
        Self {
            cipher: Aes128::new_from_slice(enc_key).expect("16-byte key"),
            mac: <Hmac<Sha256> as KeyInit>::new_from_slice(auth_key).expect("HMAC takes any key"),
            tag_len,
        }
    }

    pub fn tag_len(&self) -> usize {
        self.tag_len
    }

    fn apply_keystream(&self, nonce: &[u8; NONCE_LEN], data: &mut [u8]) {
        let mut counter_block = [0u8; 16];
        counter_block[..NONCE_LEN].copy_from_slice(nonce);
        // Reuses the key schedule built in `new`.
        let core = Aes128CtrCore::inner_iv_init(self.cipher.clone(), &counter_block.into());
        StreamCipherCoreWrapper::from_core(core).apply_keystream(data);
    }

    fn mac(&self, nonce: &[u8; NONCE_LEN], aad: &[u8], ct: &[u8]) -> Hmac<Sha256> {
        self.mac
            .clone()
            .chain_update((aad.len() as u64).to_be_bytes())
            .chain_update((ct.len() as u64).to_be_bytes())
            .chain_update((self.tag_len as u64).to_be_bytes())
            .chain_update(nonce)
            .chain_update(aad)
            .chain_update(ct)
    }

    pub fn seal_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        in_out: &mut [u8],
        tag: &mut [u8],
    ) -> Result<(), CipherError> {
        // The 32-bit block counter covers 64 GiB per frame.
        if in_out.len() as u64 > (1u64 << 32) * 16 {
            return Err(CipherError::TooLong);
        }
        self.apply_keystream(nonce, in_out);
        let full = self.mac(nonce, aad, in_out).finalize().into_bytes();
        tag.copy_from_slice(&full[..self.tag_len]);
        Ok(())
    }

    pub fn open_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        in_out: &mut [u8],
    ) -> Result<usize, CipherError> {
        let ct_len = in_out
            .len()
            .checked_sub(self.tag_len)
            .ok_or(CipherError::Authentication)?;
        let (ct, tag) = in_out.split_at_mut(ct_len);
        // Constant-time comparison of the truncated tag.
        self.mac(nonce, aad, ct)
            .verify_truncated_left(tag)
            .map_err(|_| CipherError::Authentication)?;
        self.apply_keystream(nonce, ct);
        Ok(ct_len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::hex;

    /// RFC 9605 `aes_ctr_hmac` vectors: the AEAD alone.
    #[test]
    fn rfc_vectors() {
        let vectors = crate::test_util::vectors("sframe-rfc9605.json");
        let cases = vectors["aes_ctr_hmac"].as_array().unwrap();
        assert_eq!(cases.len(), 3);
        for case in cases {
            let tag_len = match case["cipher_suite"].as_u64().unwrap() {
                1 => 10,
                2 => 8,
                3 => 4,
                other => panic!("suite {other}"),
            };
            let aead = CtrHmac::new(&hex(case["key"].as_str().unwrap()), tag_len);
            let nonce: [u8; 12] = hex(case["nonce"].as_str().unwrap()).try_into().unwrap();
            let aad = hex(case["aad"].as_str().unwrap());
            let pt = hex(case["pt"].as_str().unwrap());
            let ct = hex(case["ct"].as_str().unwrap());

            let mut sealed = pt.clone();
            let mut tag = vec![0u8; tag_len];
            aead.seal_in_place(&nonce, &aad, &mut sealed, &mut tag)
                .unwrap();
            sealed.extend(&tag);
            assert_eq!(sealed, ct, "tag length {tag_len}");

            let mut opened = ct.clone();
            let len = aead.open_in_place(&nonce, &aad, &mut opened).unwrap();
            assert_eq!(&opened[..len], &pt[..]);

            for bit in 0..ct.len() * 8 {
                let mut altered = ct.clone();
                altered[bit / 8] ^= 1 << (bit % 8);
                assert_eq!(
                    aead.open_in_place(&nonce, &aad, &mut altered),
                    Err(CipherError::Authentication)
                );
            }
        }
    }
}
