// SPDX-License-Identifier: MPL-2.0
//! The AES-CTR + HMAC-SHA256 AEAD of RFC 9605 (section 4.5.1), with tags truncated
//! to 10, 8 or 4 bytes (suites 1-3).
//!
//! Encryption is AES-128-CTR (a kiB of counter blocks per `aes` call, its VAES
//! width) with the counter block `nonce || 0x00000000`; the tag
//! is HMAC-SHA256 over `len(aad) || len(ct) || tag_len` (each 8 bytes, big-endian),
//! `nonce`, `aad` and `ct`, truncated.
//!
//! The MAC runs on `sha2`'s compression function (SHA-NI where the CPU has it)
//! from the inner and outer states the key leaves, computed once per key: a frame
//! costs its own blocks and one outer block, as HMAC allows at best. The block
//! that starts the frame's input (lengths, nonce, AAD and the first ciphertext
//! bytes) and the last one (padding) are built on the stack; every whole block
//! between is hashed where it lies. `hmac`'s buffered interface, cloned per frame,
//! cost a fifth more at 188 bytes.

use aes::Aes128;
use aes::cipher::KeyInit;
use ctutils::CtEq;
use sha2::block_api::compress256;
use zeroize::Zeroize;

use super::ctr::{self, Keystream};
use super::{CipherError, NONCE_LEN};

const SHA256_BLOCK: usize = 64;
/// SHA-256's initial hash value (FIPS 180-4, 5.3.3).
const SHA256_INIT: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

/// HMAC-SHA256 (RFC 2104) keyed once: the hash states after the key's inner and
/// outer pad blocks, wiped on drop.
struct PrekeyedHmac {
    inner: [u32; 8],
    outer: [u32; 8],
}

impl PrekeyedHmac {
    /// `key` of at most a block (the suites' keys are 32 bytes).
    fn new(key: &[u8]) -> Self {
        assert!(key.len() <= SHA256_BLOCK, "HMAC key longer than a block");
        let state_after = |pad: u8| {
            let mut block = [pad; SHA256_BLOCK];
            for (b, k) in block.iter_mut().zip(key) {
                *b ^= k;
            }
            let mut state = SHA256_INIT;
            compress256(&mut state, &[block]);
            block.zeroize();
            state
        };
        Self {
            inner: state_after(0x36),
            outer: state_after(0x5c),
        }
    }

    /// The MAC of `head || data`, `head` at most a block.
    fn mac(&self, head: &[u8], data: &[u8]) -> [u8; 32] {
        debug_assert!(head.len() <= SHA256_BLOCK);
        let mut state = self.inner;
        let mut block = [0u8; SHA256_BLOCK];
        block[..head.len()].copy_from_slice(head);
        let first = data.len().min(SHA256_BLOCK - head.len());
        block[head.len()..head.len() + first].copy_from_slice(&data[..first]);
        let mut filled = head.len() + first;
        if filled == SHA256_BLOCK {
            let (blocks, tail) = data[first..].as_chunks::<SHA256_BLOCK>();
            compress256(&mut state, &[block]);
            compress256(&mut state, blocks);
            block[..tail.len()].copy_from_slice(tail);
            filled = tail.len();
        }
        let message_len = SHA256_BLOCK + head.len() + data.len();
        let inner = finish(state, &mut block, filled, message_len);
        block[..32].copy_from_slice(&inner);
        finish(self.outer, &mut block, 32, SHA256_BLOCK + 32)
    }
}

impl Drop for PrekeyedHmac {
    fn drop(&mut self) {
        self.inner.zeroize();
        self.outer.zeroize();
    }
}

/// Pads the message whose last `filled` bytes (under a block) are in `block` and
/// whose length is `message_len` bytes, and returns its hash.
fn finish(
    mut state: [u32; 8],
    block: &mut [u8; SHA256_BLOCK],
    filled: usize,
    message_len: usize,
) -> [u8; 32] {
    block[filled] = 0x80;
    block[filled + 1..].fill(0);
    if filled + 1 > SHA256_BLOCK - 8 {
        compress256(&mut state, &[*block]);
        block.fill(0);
    }
    block[SHA256_BLOCK - 8..].copy_from_slice(&(message_len as u64 * 8).to_be_bytes());
    compress256(&mut state, &[*block]);
    let mut hash = [0u8; 32];
    for (out, word) in hash.as_chunks_mut::<4>().0.iter_mut().zip(state) {
        *out = word.to_be_bytes();
    }
    hash
}

pub struct CtrHmac {
    /// The AES key schedule, built once per key.
    cipher: Aes128,
    mac: PrekeyedHmac,
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
            mac: PrekeyedHmac::new(auth_key),
            tag_len,
        }
    }

    pub fn tag_len(&self) -> usize {
        self.tag_len
    }

    /// The untruncated tag of ciphertext `ct`.
    fn tag(&self, nonce: &[u8; NONCE_LEN], aad: &[u8], ct: &[u8]) -> [u8; 32] {
        // len(aad), len(ct), tag_len, nonce, then the AAD: an SFrame header,
        // at most 17 bytes, so all of it fits a block before the ciphertext.
        let mut head = [0u8; SHA256_BLOCK];
        let lengths = [aad.len(), ct.len(), self.tag_len];
        for (field, len) in head.as_chunks_mut::<8>().0.iter_mut().zip(lengths) {
            *field = (len as u64).to_be_bytes();
        }
        head[24..36].copy_from_slice(nonce);
        match head.get_mut(36..36 + aad.len()) {
            Some(field) => {
                field.copy_from_slice(aad);
                self.mac.mac(&head[..36 + aad.len()], ct)
            }
            None => self.mac.mac(&head[..36], &[aad, ct].concat()),
        }
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
        let full = self.tag(nonce, aad, in_out);
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
        let expected = self.tag(nonce, aad, ct);
        if !bool::from(expected[..self.tag_len].ct_eq(&*tag)) {
            return Err(CipherError::Authentication);
        }
        self.apply_keystream(nonce, ct);
        Ok(ct_len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cipher::ctr::BATCH_LEN;
    use crate::test_util::{XorShift, hex, noise};
    use hmac::{Hmac, Mac};
    use sha2::Sha256;

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
