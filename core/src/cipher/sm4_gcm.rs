// SPDX-License-Identifier: MPL-2.0
//! SM4-GCM (NIST SP 800-38D with SM4, RFC 8998): 12-byte nonce, 16-byte tag,
//! detached, in place.
//!
//! It exists for speed. `Sm4Fast` is fast only when it gets many blocks per call:
//! its kernels run 8 to 32 blocks side by side, and a call with one block costs
//! about as much as one with 16. RustCrypto's `AesGcm<Sm4Fast>` drives the cipher
//! through the `ctr` crate, 8 blocks at a time, plus a separate call for the tag
//! mask, which made it slower than the plain `sm4` crate on short messages and
//! left a third of the cipher's speed on long ones. Here CTR is run directly: the
//! counter blocks of a batch are written to a stack buffer and encrypted with one
//! `Sm4Fast::encrypt_blocks` call, and the tag mask E(K, J0) rides in the first
//! batch, so a message of up to `BATCH - 1` blocks costs one call. GHASH is the
//! `ghash` crate (PCLMULQDQ where available).

use ghash::GHash;
use ghash::universal_hash::UniversalHash;
use std::fmt;
use zeroize::{Zeroize, Zeroizing};

use super::CipherError;
use super::sm4_fast::Sm4Fast;

pub const KEY_LEN: usize = 16;
pub const NONCE_LEN: usize = 12;
pub const TAG_LEN: usize = 16;

const BLOCK_LEN: usize = 16;
/// Counter blocks encrypted per call: one pass of the AVX2 kernel (4 sets of 8),
/// 512 bytes of stack. 64 and 128 measured the same on long messages and no
/// better on short ones.
const BATCH: usize = 32;
const BATCH_LEN: usize = BATCH * BLOCK_LEN;

/// The longest plaintext GCM allows under one nonce, 2^36 - 32 bytes (SP 800-38D,
/// 5.2.1.1): the 32-bit counter must not wrap back to the tag mask's block.
const MAX_PLAINTEXT_LEN: u64 = (1 << 36) - 32;
/// The longest additional data: 2^64 - 1 bits.
const MAX_AAD_LEN: u64 = (1 << 61) - 1;

/// SM4-GCM under one key. The round keys (in `Sm4Fast`) and the hash key H (in
/// `GHash`, with the `zeroize` feature) are wiped on drop, and so is every
/// keystream buffer once a call returns.
#[derive(Clone)]
pub struct Sm4Gcm {
    cipher: Sm4Fast,
    /// GHASH keyed with H = E(K, 0^128), cloned for each message.
    ghash: GHash,
}

impl Sm4Gcm {
    pub fn new(key: &[u8; KEY_LEN]) -> Self {
        Self::with_cipher(Sm4Fast::new(key))
    }

    fn with_cipher(cipher: Sm4Fast) -> Self {
        let mut h = Zeroizing::new(ghash::Key::default());
        cipher.encrypt_blocks(&mut h);
        let ghash = GHash::new(&h);
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
        let mut keystream = Keystream([0; BATCH_LEN]);
        let keystream = &mut keystream.0;
        let mut ghash = self.ghash.clone();
        ghash.update_padded(aad);
        let (first, rest) = self.first_batch(nonce, data, keystream);
        xor(first, &keystream[BLOCK_LEN..]);
        // Every chunk but the last is whole blocks, so padding each is padding the
        // last; hashing a chunk right after writing it finds it in the L1 cache.
        ghash.update_padded(first);
        let mask = Zeroizing::new(first_block(keystream));
        let counter = first_counter_after(first.len());
        self.apply_keystream(nonce, counter, rest, keystream, |chunk| {
            ghash.update_padded(chunk)
        });
        ghash.update(&[lengths_block(aad, data)]);
        let mut tag: [u8; TAG_LEN] = ghash.finalize().into();
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
        let mut ghash = self.ghash.clone();
        ghash.update_padded(aad);
        ghash.update_padded(data);
        ghash.update(&[lengths_block(aad, data)]);
        let mut keystream = Keystream([0; BATCH_LEN]);
        let keystream = &mut keystream.0;
        let (first, rest) = self.first_batch(nonce, data, keystream);
        // GHASH(...) == tag ^ E(K, J0), compared in constant time by `verify`.
        let mut expected = Zeroizing::new(ghash::Block::from(*tag));
        xor(&mut expected, &keystream[..BLOCK_LEN]);
        ghash
            .verify(&expected)
            .map_err(|_| CipherError::Authentication)?;
        xor(first, &keystream[BLOCK_LEN..]);
        let counter = first_counter_after(first.len());
        self.apply_keystream(nonce, counter, rest, keystream, |_| {});
        Ok(())
    }

    /// Encrypts the tag mask's counter block J0 and those of the first data
    /// blocks, up to a batch, into `keystream`; returns the data they cover and
    /// the rest.
    fn first_batch<'a>(
        &self,
        nonce: &[u8; NONCE_LEN],
        data: &'a mut [u8],
        keystream: &mut [u8; BATCH_LEN],
    ) -> (&'a mut [u8], &'a mut [u8]) {
        let first_len = data.len().min(BATCH_LEN - BLOCK_LEN);
        let blocks = &mut keystream[..keystream_len(BLOCK_LEN + first_len)];
        fill_counters(blocks, nonce, J0_COUNTER);
        self.cipher.encrypt_blocks(blocks);
        data.split_at_mut(first_len)
    }

    /// CTR over `data` with counters from `counter` on, a batch per cipher call;
    /// `then` sees each chunk of output.
    fn apply_keystream(
        &self,
        nonce: &[u8; NONCE_LEN],
        mut counter: u32,
        data: &mut [u8],
        keystream: &mut [u8; BATCH_LEN],
        mut then: impl FnMut(&[u8]),
    ) {
        for chunk in data.chunks_mut(BATCH_LEN) {
            let blocks = &mut keystream[..keystream_len(chunk.len())];
            fill_counters(blocks, nonce, counter);
            self.cipher.encrypt_blocks(blocks);
            xor(chunk, blocks);
            then(chunk);
            // Cannot wrap within MAX_PLAINTEXT_LEN.
            counter = counter.wrapping_add(BATCH as u32);
        }
    }
}

impl fmt::Debug for Sm4Gcm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sm4Gcm { ... }")
    }
}

/// A stack buffer for counter blocks and keystream, wiped on drop. As a slice:
/// zeroize wipes `[u8]` with one fill, but `[u8; N]` a volatile byte at a time,
/// which with a 1 KiB buffer took a fifth of the time of a 64-byte message.
struct Keystream([u8; BATCH_LEN]);

impl Drop for Keystream {
    fn drop(&mut self) {
        self.0.as_mut_slice().zeroize();
    }
}

/// Keystream bytes to compute for `len` bytes: whole sets of 8 blocks, which
/// `Sm4Fast` encrypts where they lie (other lengths are padded to sets in a
/// copy, which costs more than the few extra counter blocks).
fn keystream_len(len: usize) -> usize {
    len.next_multiple_of(8 * BLOCK_LEN).min(BATCH_LEN)
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

/// Counter blocks nonce || counter (big-endian, incremented mod 2^32) over `blocks`.
fn fill_counters(blocks: &mut [u8], nonce: &[u8; NONCE_LEN], first: u32) {
    for (i, block) in blocks.as_chunks_mut::<BLOCK_LEN>().0.iter_mut().enumerate() {
        block[..NONCE_LEN].copy_from_slice(nonce);
        block[NONCE_LEN..].copy_from_slice(&first.wrapping_add(i as u32).to_be_bytes());
    }
}

fn first_block(keystream: &[u8; BATCH_LEN]) -> [u8; BLOCK_LEN] {
    keystream[..BLOCK_LEN].try_into().unwrap()
}

/// GHASH's last block: the bit lengths of the additional data and the ciphertext.
fn lengths_block(aad: &[u8], data: &[u8]) -> ghash::Block {
    let mut block = [0u8; BLOCK_LEN];
    block[..8].copy_from_slice(&(aad.len() as u64 * 8).to_be_bytes());
    block[8..].copy_from_slice(&(data.len() as u64 * 8).to_be_bytes());
    block.into()
}

/// `data[i] ^= keystream[i]` over `data` (`keystream` may be longer); a loop the
/// compiler vectorizes.
fn xor(data: &mut [u8], keystream: &[u8]) {
    for (byte, key) in data.iter_mut().zip(keystream) {
        *byte ^= key;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cipher::sm4_fast;
    use crate::test_util::{XorShift, measure_mbps};
    use aes_gcm::AesGcm;
    use aes_gcm::aead::{AeadInOut, KeyInit};
    use aes_gcm::aes::cipher::consts::U12;

    type Reference = AesGcm<sm4::Sm4, U12>;

    /// `key` in every engine this CPU can run, named.
    fn engines(key: &[u8; 16]) -> Vec<(&'static str, Sm4Gcm)> {
        sm4_fast::test_engines(key)
            .into_iter()
            .map(|(name, cipher)| (name, Sm4Gcm::with_cipher(cipher)))
            .collect()
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
    fn check_against_reference(
        name: &str,
        gcm: &Sm4Gcm,
        reference: &Reference,
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
        let gcm = Sm4Gcm::new(&key);
        let mut data = vec![0u8; 70_000 * BLOCK_LEN];
        gcm.seal_in_place(&nonce, &[], &mut data).unwrap();
        let cipher = Sm4Fast::new(&key);
        for counter in [2u32, 255, 256, 257, 65_535, 65_536, 65_537, 70_001] {
            let mut block = [0u8; 16];
            fill_counters(&mut block, &nonce, counter);
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
        let ours = Sm4Gcm::new(&key);
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
