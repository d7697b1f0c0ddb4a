// SPDX-License-Identifier: MPL-2.0
//! GCM (NIST SP 800-38D) over a block cipher of the `cipher` traits, for the
//! ciphers `ring` lacks: AES-192 (the `aes` crate) and SM4 (`Sm4Fast`, RFC 8998).
//! 12-byte nonce, 16-byte tag, detached, in place.
//!
//! It exists for speed. RustCrypto's `AesGcm` drives the cipher through the `ctr`
//! crate a few blocks at a time, plus a separate call for the tag mask, then
//! hashes in a second pass with the `ghash` crate (4 blocks per reduction):
//! AES-192-GCM ran at 4.3 GB/s, with AES alone at 45 GB/s and GHASH at 5.8.
//! Here CTR runs a batch of blocks per cipher call (`ctr`), the tag mask E(K, J0)
//! riding in the first batch, so a message of up to `BATCH - 1` blocks costs one
//! call; each chunk is hashed right after it is written, while it is in the L1
//! cache, by `ghash_fast` (16 blocks per reduction with VPCLMULQDQ).

use aes::cipher::BlockCipherEncrypt;
use aes::cipher::consts::U16;
use ctutils::CtEq;
use std::fmt;
use zeroize::Zeroizing;

use super::CipherError;
use super::ctr::{self, BATCH_LEN, BLOCK_LEN, Keystream, xor};
use super::ghash_fast::GhashKey;
use super::sm4_fast::Sm4Fast;

pub const NONCE_LEN: usize = 12;
pub const TAG_LEN: usize = 16;

/// The longest plaintext GCM allows under one nonce, 2^36 - 32 bytes (SP 800-38D,
/// 5.2.1.1): the 32-bit counter must not wrap back to the tag mask's block.
const MAX_PLAINTEXT_LEN: u64 = (1 << 36) - 32;
/// The longest additional data: 2^64 - 1 bits.
const MAX_AAD_LEN: u64 = (1 << 61) - 1;

/// SM4-GCM (RFC 8998).
pub type Sm4Gcm = Gcm<Sm4Fast>;
/// AES-192-GCM.
pub type Aes192Gcm = Gcm<aes::Aes192>;

/// GCM under one key. The round keys (wiped by the cipher's own drop: `Sm4Fast`,
/// the `aes` crate with its `zeroize` feature) and the powers of the hash key H
/// (`GhashKey`) are wiped on drop, and so is every keystream buffer once a call
/// returns.
pub struct Gcm<C> {
    cipher: C,
    /// GHASH keyed with H = E(K, 0^128).
    ghash: GhashKey,
}

impl<C: BlockCipherEncrypt<BlockSize = U16>> Gcm<C> {
    pub fn new(cipher: C) -> Self {
        let mut h = Zeroizing::new([0u8; BLOCK_LEN]);
        cipher.encrypt_block((&mut *h).into());
        let ghash = GhashKey::new(&h);
        Self { cipher, ghash }
    }

    /// Encrypts `data` in place; returns the tag.
    pub fn seal_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        data: &mut [u8],
    ) -> Result<[u8; TAG_LEN], CipherError> {
        check_lengths(aad.len(), data.len())?;
        let mut keystream = Keystream::new();
        let mut ghash = self.ghash.start();
        ghash.update_padded(aad);
        let (first, rest) = self.first_batch(nonce, data, &mut keystream);
        xor(first, &keystream.0[BLOCK_LEN..]);
        // Every chunk but the last is whole blocks, so padding each is padding the
        // last; hashing a chunk right after writing it finds it in the L1 cache.
        ghash.update_padded(first);
        let mask = Zeroizing::new(first_block(&keystream));
        let counter = first_counter_after(first.len());
        ctr::apply_keystream(
            &self.cipher,
            nonce,
            counter,
            rest,
            &mut keystream,
            |chunk, keystream| {
                xor(chunk, keystream);
                ghash.update_padded(chunk);
            },
        );
        ghash.update_padded(&lengths_block(aad, data));
        let mut tag = ghash.finalize();
        xor(&mut tag, &mask[..]);
        Ok(tag)
    }

    /// Checks `tag` and decrypts `data` in place. The tag is checked (in constant
    /// time) before anything is decrypted, so on failure `data` is unchanged.
    pub fn open_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        data: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), CipherError> {
        if check_lengths(aad.len(), data.len()).is_err() {
            return Err(CipherError::Authentication);
        }
        let mut ghash = self.ghash.start();
        ghash.update_padded(aad);
        ghash.update_padded(data);
        ghash.update_padded(&lengths_block(aad, data));
        let mut keystream = Keystream::new();
        let (first, rest) = self.first_batch(nonce, data, &mut keystream);
        // GHASH(...) ^ E(K, J0) == tag, compared in constant time.
        let mut expected = Zeroizing::new(ghash.finalize());
        xor(&mut *expected, &keystream.0[..BLOCK_LEN]);
        if !bool::from(expected.ct_eq(tag)) {
            return Err(CipherError::Authentication);
        }
        xor(first, &keystream.0[BLOCK_LEN..]);
        let counter = first_counter_after(first.len());
        ctr::apply_keystream(&self.cipher, nonce, counter, rest, &mut keystream, xor);
        Ok(())
    }

    /// Encrypts the tag mask's counter block J0 and those of the first data
    /// blocks, up to a batch, into `keystream`; returns the data they cover and
    /// the rest.
    fn first_batch<'a>(
        &self,
        nonce: &[u8; NONCE_LEN],
        data: &'a mut [u8],
        keystream: &mut Keystream,
    ) -> (&'a mut [u8], &'a mut [u8]) {
        let first_len = data.len().min(BATCH_LEN - BLOCK_LEN);
        let blocks = &mut keystream.0[..ctr::keystream_len(BLOCK_LEN + first_len)];
        ctr::encrypt_counters(&self.cipher, blocks, nonce, J0_COUNTER);
        data.split_at_mut(first_len)
    }
}

impl Sm4Gcm {
    pub fn sm4(key: &[u8; 16]) -> Self {
        Self::new(Sm4Fast::new(key))
    }
}

impl<C> fmt::Debug for Gcm<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Gcm { ... }")
    }
}

/// The counter of J0 = nonce || 1, whose encryption masks the tag; the data's
/// counters start at 2 (SP 800-38D, 7.1, for 96-bit nonces).
const J0_COUNTER: u32 = 1;

/// The counter of the data block after the first `first_len` bytes.
fn first_counter_after(first_len: usize) -> u32 {
    J0_COUNTER + 1 + (first_len / BLOCK_LEN) as u32
}

fn check_lengths(aad_len: usize, data_len: usize) -> Result<(), CipherError> {
    if data_len as u64 > MAX_PLAINTEXT_LEN || aad_len as u64 > MAX_AAD_LEN {
        return Err(CipherError::TooLong);
    }
    Ok(())
}

fn first_block(keystream: &Keystream) -> [u8; BLOCK_LEN] {
    keystream.0[..BLOCK_LEN].try_into().unwrap()
}

/// GHASH's last block: the bit lengths of the additional data and the ciphertext.
fn lengths_block(aad: &[u8], data: &[u8]) -> [u8; BLOCK_LEN] {
    let mut block = [0u8; BLOCK_LEN];
    block[..8].copy_from_slice(&(aad.len() as u64 * 8).to_be_bytes());
    block[8..].copy_from_slice(&(data.len() as u64 * 8).to_be_bytes());
    block
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cipher::{ghash_fast, sm4_fast};
    use crate::test_util::{XorShift, measure_mbps};
    use aes_gcm::AesGcm;
    use aes_gcm::aead::{AeadInOut, KeyInit};
    use aes_gcm::aes::cipher::consts::U12;

    type Reference = AesGcm<sm4::Sm4, U12>;

    /// `key` in every engine this CPU can run, named.
    fn engines(key: &[u8; 16]) -> Vec<(&'static str, Sm4Gcm)> {
        sm4_fast::test_engines(key)
            .into_iter()
            .map(|(name, cipher)| (name, Sm4Gcm::new(cipher)))
            .collect()
    }

    /// AES-192-GCM with every GHASH engine this CPU can run, named (the `aes`
    /// crate picks its own engine).
    fn aes_192_engines(key: &[u8; 24]) -> Vec<(&'static str, Aes192Gcm)> {
        let cipher = aes::Aes192::new(key.into());
        let mut h = [0u8; BLOCK_LEN];
        cipher.encrypt_block((&mut h).into());
        ghash_fast::test_engines(&h)
            .into_iter()
            .map(|(name, ghash)| {
                let cipher = cipher.clone();
                (name, Gcm { cipher, ghash })
            })
            .collect()
    }

    #[test]
    fn aes_192_matches_aes_gcm_on_random_input() {
        let mut rng = XorShift(0xa192_0001);
        let lens = (0..=4096).chain([BATCH_LEN * 3 - BLOCK_LEN + 5, 16 << 10, 100_003, 1 << 20]);
        for len in lens {
            let key: [u8; 24] = rng.array();
            let nonce = rng.array();
            let mut aad = vec![0u8; rng.below(3) * rng.below(70)];
            rng.fill(&mut aad);
            let plaintext = crate::test_util::noise(rng.next(), len);
            let reference = AesGcm::<aes::Aes192, U12>::new(&key.into());
            for (name, gcm) in aes_192_engines(&key) {
                check_against_reference(name, &gcm, &reference, &nonce, &aad, &plaintext);
            }
        }
    }

    #[test]
    fn rfc_8998_known_answer() {
        // RFC 8998, appendix A.1.
        let crate::test_util::GcmVector {
            key,
            nonce,
            aad,
            plaintext,
            ciphertext,
            tag,
        } = crate::test_util::rfc_8998_sm4_gcm();
        for (name, gcm) in engines(&key) {
            let mut data = plaintext.clone();
            let got_tag = gcm.seal_in_place(&nonce, &aad, &mut data).unwrap();
            assert_eq!(
                (&data, got_tag.to_vec()),
                (&ciphertext, tag.clone()),
                "{name}"
            );
            gcm.open_in_place(&nonce, &aad, &mut data, &got_tag)
                .unwrap();
            assert_eq!(data, plaintext, "{name}");
        }
    }

    /// Seals with `gcm` and the `sm4` crate under AesGcm, compares, opens.
    fn check_against_reference<C: BlockCipherEncrypt<BlockSize = U16>>(
        name: &str,
        gcm: &Gcm<C>,
        reference: &impl AeadInOut<NonceSize = U12, TagSize = U16>,
        nonce: &[u8; 12],
        aad: &[u8],
        plaintext: &[u8],
    ) {
        let len = plaintext.len();
        let mut expected = plaintext.to_vec();
        let expected_tag = reference
            .encrypt_inout_detached(nonce.into(), aad, expected.as_mut_slice().into())
            .unwrap();
        let mut data = plaintext.to_vec();
        let tag = gcm.seal_in_place(nonce, aad, &mut data).unwrap();
        assert!(data == expected, "{name}: ciphertext of {len} bytes");
        assert_eq!(
            tag,
            <[u8; 16]>::from(expected_tag),
            "{name}: tag of {len} bytes"
        );
        gcm.open_in_place(nonce, aad, &mut data, &tag).unwrap();
        assert!(data == plaintext, "{name}: opening {len} bytes");
    }

    #[test]
    fn matches_aes_gcm_over_the_sm4_crate() {
        let mut rng = XorShift(0x5eed_6c6d_0000_0001);
        for len in 0..=1100 {
            let key = rng.array();
            let nonce = rng.array();
            let mut aad = vec![0u8; rng.below(3) * rng.below(40)];
            rng.fill(&mut aad);
            let mut plaintext = vec![0u8; len];
            rng.fill(&mut plaintext);
            let reference = Reference::new(&key.into());
            for (name, gcm) in engines(&key) {
                check_against_reference(name, &gcm, &reference, &nonce, &aad, &plaintext);
            }
        }
    }

    #[test]
    fn long_messages_match_aes_gcm_over_the_sm4_crate() {
        let mut rng = XorShift(0x10ff_6c6d);
        let key = rng.array();
        let reference = Reference::new(&key.into());
        let engines = engines(&key);
        // Around the batch boundaries, and long enough for many batches.
        for len in [
            BATCH_LEN - BLOCK_LEN - 1,
            BATCH_LEN - BLOCK_LEN,
            BATCH_LEN - BLOCK_LEN + 1,
            2 * BATCH_LEN - BLOCK_LEN,
            2 * BATCH_LEN - BLOCK_LEN + 17,
            16 << 10,
            100_003,
            1 << 20,
        ] {
            let nonce = rng.array();
            let mut aad = vec![0u8; rng.below(300)];
            rng.fill(&mut aad);
            let mut plaintext = vec![0u8; len];
            rng.fill(&mut plaintext);
            for (name, gcm) in &engines {
                check_against_reference(name, gcm, &reference, &nonce, &aad, &plaintext);
            }
        }
    }

    #[test]
    fn counter_goes_big_endian_across_bytes() {
        // Counter blocks past 255 and 65535 carry into the next byte: compare with
        // plain CTR from the cipher, block by block.
        let key = [9u8; 16];
        let nonce = [0xab; 12];
        let gcm = Sm4Gcm::sm4(&key);
        let mut data = vec![0u8; 70_000 * BLOCK_LEN];
        gcm.seal_in_place(&nonce, &[], &mut data).unwrap();
        let cipher = Sm4Fast::new(&key);
        for counter in [2u32, 255, 256, 257, 65_535, 65_536, 65_537, 70_001] {
            let mut block = [0u8; 16];
            ctr::fill_counters(&mut block, &nonce, counter);
            cipher.encrypt_blocks(&mut block);
            let offset = (counter as usize - 2) * BLOCK_LEN;
            assert_eq!(&data[offset..offset + 16], &block, "counter {counter}");
        }
    }

    #[test]
    fn rejects_tampering_and_leaves_data_alone() {
        let mut rng = XorShift(0x7a3e);
        let key = rng.array();
        let nonce: [u8; 12] = rng.array();
        let aad = b"header bytes".to_vec();
        for (name, gcm) in engines(&key) {
            for len in [0, 1, 16, 100, 2000] {
                let mut plaintext = vec![0u8; len];
                rng.fill(&mut plaintext);
                let mut ciphertext = plaintext.clone();
                let tag = gcm.seal_in_place(&nonce, &aad, &mut ciphertext).unwrap();
                let refused = |aad: &[u8], data: &[u8], tag: &[u8; 16], what: &str| {
                    let mut buf = data.to_vec();
                    assert_eq!(
                        gcm.open_in_place(&nonce, aad, &mut buf, tag),
                        Err(CipherError::Authentication),
                        "{name}: {what}, {len} bytes"
                    );
                    assert!(buf == data, "{name}: {what}, {len} bytes: data changed");
                };
                if len > 0 {
                    let mut flipped = ciphertext.clone();
                    flipped[rng.below(len)] ^= 1 << rng.below(8);
                    refused(&aad, &flipped, &tag, "flipped ciphertext bit");
                    refused(&aad, &ciphertext[..len - 1], &tag, "truncated ciphertext");
                }
                let mut flipped_aad = aad.clone();
                flipped_aad[rng.below(aad.len())] ^= 1 << rng.below(8);
                refused(&flipped_aad, &ciphertext, &tag, "flipped aad bit");
                refused(&[], &ciphertext, &tag, "missing aad");
                for bit in [0, 7, 64, 127] {
                    let mut flipped_tag = tag;
                    flipped_tag[bit / 8] ^= 1 << (bit % 8);
                    refused(&aad, &ciphertext, &flipped_tag, "flipped tag bit");
                }
                let mut other_nonce = nonce;
                other_nonce[11] ^= 1;
                let mut buf = ciphertext.clone();
                assert_eq!(
                    gcm.open_in_place(&other_nonce, &aad, &mut buf, &tag),
                    Err(CipherError::Authentication),
                    "{name}: other nonce"
                );
                let mut buf = ciphertext.clone();
                gcm.open_in_place(&nonce, &aad, &mut buf, &tag).unwrap();
                assert!(buf == plaintext, "{name}: {len} bytes");
            }
        }
    }

    #[test]
    fn length_limits() {
        // The longest plaintext's last block takes the last counter before the
        // wrap: 2 + (2^32 - 2) - 1.
        assert_eq!(2 + MAX_PLAINTEXT_LEN / 16 - 1, u64::from(u32::MAX));
        let max = MAX_PLAINTEXT_LEN as usize;
        assert_eq!(check_lengths(0, max), Ok(()));
        assert_eq!(check_lengths(0, max + 1), Err(CipherError::TooLong));
        assert_eq!(check_lengths(usize::MAX, 0), Err(CipherError::TooLong));
    }

    /// Run with `cargo test --release --lib sm4_gcm -- --ignored --nocapture`.
    #[test]
    #[ignore = "benchmark"]
    fn throughput() {
        let key = [7u8; 16];
        let ours = Sm4Gcm::sm4(&key);
        let reference = AesGcm::<sm4::Sm4, U12>::new(&key.into());
        let rust_crypto_fast = AesGcm::<Sm4Fast, U12>::new(&key.into());
        println!("SM4-GCM, MB/s (AesGcm columns: seal):");
        println!(
            "{:>8}  {:>9} {:>9} {:>12} {:>8}",
            "bytes", "AesGcm<", "AesGcm<", "Sm4Gcm", "Sm4Gcm"
        );
        println!(
            "{:>8}  {:>9} {:>9} {:>12} {:>8}",
            "", "sm4::Sm4>", "Sm4Fast>", "seal", "open"
        );
        for len in [64, 188, 1200, 16 << 10, 1 << 20] {
            let mut data = vec![0x5au8; len];
            let nonce = [3u8; 12];
            let reference_rate = measure_mbps(len, || {
                reference
                    .encrypt_inout_detached(&nonce.into(), &[], data.as_mut_slice().into())
                    .unwrap();
            });
            let fast_rate = measure_mbps(len, || {
                rust_crypto_fast
                    .encrypt_inout_detached(&nonce.into(), &[], data.as_mut_slice().into())
                    .unwrap();
            });
            let seal_rate = measure_mbps(len, || {
                ours.seal_in_place(&nonce, &[], &mut data).unwrap();
            });
            let tag = ours.seal_in_place(&nonce, &[], &mut data).unwrap();
            let open_rate = measure_mbps(len, || {
                // Re-seal after each open, so each open sees a valid tag; the
                // seal's time is taken out below.
                ours.open_in_place(&nonce, &[], &mut data, &tag).unwrap();
                ours.seal_in_place(&nonce, &[], &mut data).unwrap();
            });
            let open_rate = 1.0 / (1.0 / open_rate - 1.0 / seal_rate);
            println!(
                "{len:>8}  {reference_rate:>9.0} {fast_rate:>9.0} {seal_rate:>7.0} ({:3.1}x) {open_rate:>8.0}",
                seal_rate / reference_rate
            );
        }
    }
}
