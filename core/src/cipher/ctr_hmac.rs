// SPDX-License-Identifier: MPL-2.0
//! The AES-CTR + HMAC-SHA256 AEAD of RFC 9605 (section 4.5.1), with tags truncated
//! to 10, 8 or 4 bytes (suites 1-3).
//!
//! Encryption is AES-128-CTR (a kiB of counter blocks per `aes` call, its VAES
//! width) with the counter block `nonce || 0x00000000`; the tag
//! is HMAC-SHA256 over `len(aad) || len(ct) || tag_len` (each 8 bytes, big-endian),
//! `nonce`, `aad` and `ct`, truncated.

use aes::Aes128;
use aes::cipher::KeyInit;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::ctr::{self, Keystream};
use super::{CipherError, NONCE_LEN};

pub struct CtrHmac {
    /// The AES key schedule, built once per key.
    cipher: Aes128,
    /// HMAC keyed once (its inner and outer hash states); cloned per frame.
    mac: Hmac<Sha256>,
    tag_len: usize,
}

/// The counter of the first block: the counter block is `nonce || 0x00000000`.
const FIRST_COUNTER: u32 = 0;

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

    /// The MAC with everything before the ciphertext hashed.
    fn mac_before_ciphertext(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        ct_len: usize,
    ) -> Hmac<Sha256> {
        let mut lengths = [0u8; 24];
        lengths[..8].copy_from_slice(&(aad.len() as u64).to_be_bytes());
        lengths[8..16].copy_from_slice(&(ct_len as u64).to_be_bytes());
        lengths[16..].copy_from_slice(&(self.tag_len as u64).to_be_bytes());
        self.mac
            .clone()
            .chain_update(lengths)
            .chain_update(nonce)
            .chain_update(aad)
    }

    /// CTR over `data`.
    fn apply_keystream(&self, nonce: &[u8; NONCE_LEN], data: &mut [u8]) {
        let mut keystream = Keystream::new();
        ctr::apply_keystream(
            &self.cipher,
            nonce,
            FIRST_COUNTER,
            data,
            &mut keystream,
            ctr::xor,
        );
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
        // Two passes: hashing each kiB right after encrypting it measured 3-5%
        // slower from 16 KiB on (two SHA-256 calls per chunk, where one call
        // hashes the whole frame).
        self.apply_keystream(nonce, in_out);
        let full = self
            .mac_before_ciphertext(nonce, aad, in_out.len())
            .chain_update(&*in_out)
            .finalize()
            .into_bytes();
        tag.copy_from_slice(&full[..self.tag_len]);
        Ok(())
    }

    /// On failure `in_out` is left as it was.
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
        self.mac_before_ciphertext(nonce, aad, ct_len)
            .chain_update(&*ct)
            .verify_truncated_left(tag)
            .map_err(|_| CipherError::Authentication)?;
        self.apply_keystream(nonce, ct);
        Ok(ct_len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cipher::ctr::BATCH_LEN;
    use crate::test_util::{XorShift, hex, noise};

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

    /// RFC 9605's construction written out with the `ctr` and `hmac` crates.
    fn reference_seal(
        key: &[u8],
        tag_len: usize,
        nonce: &[u8; 12],
        aad: &[u8],
        data: &mut [u8],
    ) -> Vec<u8> {
        use aes::cipher::{KeyIvInit, StreamCipher};
        let mut iv = [0u8; 16];
        iv[..12].copy_from_slice(nonce);
        ::ctr::Ctr32BE::<Aes128>::new_from_slices(&key[..16], &iv)
            .unwrap()
            .apply_keystream(data);
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&key[16..]).unwrap();
        for part in [
            &(aad.len() as u64).to_be_bytes()[..],
            &(data.len() as u64).to_be_bytes(),
            &(tag_len as u64).to_be_bytes(),
            nonce,
            aad,
            data,
        ] {
            mac.update(part);
        }
        mac.finalize().into_bytes()[..tag_len].to_vec()
    }

    #[test]
    fn matches_the_ctr_and_hmac_crates_on_random_input() {
        let mut rng = XorShift(0xc7_4a3c);
        let lens = (0..=2100).chain([BATCH_LEN - 1, 3 * BATCH_LEN + 5, 16 << 10, 100_003, 1 << 20]);
        for len in lens {
            let key: [u8; 48] = rng.array();
            let nonce = rng.array();
            let tag_len = [4, 8, 10][rng.below(3)];
            let mut aad = vec![0u8; rng.below(70)];
            rng.fill(&mut aad);
            let plaintext = noise(rng.next(), len);
            let mut expected = plaintext.clone();
            let expected_tag = reference_seal(&key, tag_len, &nonce, &aad, &mut expected);

            let aead = CtrHmac::new(&key, tag_len);
            let mut sealed = plaintext.clone();
            let mut tag = vec![0u8; tag_len];
            aead.seal_in_place(&nonce, &aad, &mut sealed, &mut tag)
                .unwrap();
            assert!(sealed == expected, "ciphertext of {len} bytes");
            assert_eq!(tag, expected_tag, "tag of {len} bytes");

            sealed.extend(&tag);
            let mut forged = sealed.clone();
            let at = rng.below(forged.len());
            forged[at] ^= 0x20;
            let before = forged.clone();
            assert_eq!(
                aead.open_in_place(&nonce, &aad, &mut forged),
                Err(CipherError::Authentication)
            );
            // A refused frame is left as it came, not half decrypted.
            assert!(forged == before, "forgery of {len} bytes left alone");
            assert_eq!(aead.open_in_place(&nonce, &aad, &mut sealed), Ok(len));
            assert!(sealed[..len] == plaintext[..], "opening {len} bytes");
        }
    }
}
