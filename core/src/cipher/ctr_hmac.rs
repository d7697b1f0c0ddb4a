// SPDX-License-Identifier: MPL-2.0
//! The AES-CTR + HMAC-SHA256 AEAD of RFC 9605 (section 4.5.1), with tags truncated
//! to 10, 8 or 4 bytes (suites 1-3).
//!
//! Encryption is AES-128-CTR with the counter block `nonce || 0x00000000`; the tag
//! is HMAC-SHA256 over `len(aad) || len(ct) || tag_len` (each 8 bytes, big-endian),
//! `nonce`, `aad` and `ct`, truncated.
//!
//! Where the CPU has AES-NI and SHA-NI (x86_64), a frame takes one pass (`x86`):
//! the CTR of the next 64 bytes runs while SHA-NI hashes the last, in the AES
//! units SHA-256's chain of rounds leaves idle; it measured 9-17% faster than
//! two passes from 188 B to 16 KiB. Elsewhere CTR runs first, a kiB of counter
//! blocks per `aes` call (its VAES width), then the MAC on `sha2`'s compression
//! function. Either way the MAC starts from the inner and outer states the key
//! leaves, computed once per key: a frame costs its own blocks and one outer
//! block, as HMAC allows at best. The block that starts the frame's input
//! (lengths, nonce, AAD and the first ciphertext bytes) and the last one
//! (padding) are built on the stack; every whole block between is hashed where
//! it lies. `hmac`'s buffered interface, cloned per frame, cost a fifth more at
//! 188 bytes.

use aes::Aes128;
use aes::cipher::KeyInit;
use ctutils::CtEq;
use sha2::block_api::compress256;
use zeroize::Zeroize;

use super::ctr::{self, Keystream};
use super::{CipherError, NONCE_LEN};

const SHA256_BLOCK: usize = 64;
/// AES-128's round keys for AES-NI.
#[cfg(target_arch = "x86_64")]
type RoundKeys = [[u8; 16]; 11];
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
    /// AES-NI round keys where the CPU has AES-NI and SHA-NI: frames then take
    /// one pass (`x86`).
    #[cfg(target_arch = "x86_64")]
    one_pass: Option<zeroize::Zeroizing<RoundKeys>>,
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
            #[cfg(target_arch = "x86_64")]
            one_pass: x86::detect()
                .then(|| super::aes_cbc::aes128_round_keys(enc_key.try_into().expect("16 bytes")))
                .flatten(),
            mac: PrekeyedHmac::new(auth_key),
            tag_len,
        }
    }

    /// The same key without the one-pass kernel, for the tests of both.
    #[cfg(test)]
    fn two_pass(key: &[u8], tag_len: usize) -> Self {
        Self {
            #[cfg(target_arch = "x86_64")]
            one_pass: None,
            ..Self::new(key, tag_len)
        }
    }

    pub fn tag_len(&self) -> usize {
        self.tag_len
    }

    /// What the MAC reads before the ciphertext: len(aad), len(ct), tag_len,
    /// nonce, then the AAD (an SFrame header, at most 17 bytes), in a block with
    /// its length; `None` when the AAD does not fit the block.
    fn mac_head(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        ct_len: usize,
    ) -> ([u8; SHA256_BLOCK], Option<usize>) {
        let mut head = [0u8; SHA256_BLOCK];
        let lengths = [aad.len(), ct_len, self.tag_len];
        for (field, len) in head.as_chunks_mut::<8>().0.iter_mut().zip(lengths) {
            *field = (len as u64).to_be_bytes();
        }
        head[24..36].copy_from_slice(nonce);
        let len = head.get_mut(36..36 + aad.len()).map(|field| {
            field.copy_from_slice(aad);
            36 + aad.len()
        });
        (head, len)
    }

    /// The untruncated tag of ciphertext `ct`.
    fn tag(&self, nonce: &[u8; NONCE_LEN], aad: &[u8], ct: &[u8]) -> [u8; 32] {
        match self.mac_head(nonce, aad, ct.len()) {
            (head, Some(len)) => self.mac.mac(&head[..len], ct),
            (head, None) => self.mac.mac(&head[..36], &[aad, ct].concat()),
        }
    }

    /// The one-pass kernel's keys and the MAC's head, where both exist.
    #[cfg(target_arch = "x86_64")]
    fn one_pass(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        ct_len: usize,
    ) -> Option<(&RoundKeys, [u8; SHA256_BLOCK], usize)> {
        let keys = self.one_pass.as_deref()?;
        match self.mac_head(nonce, aad, ct_len) {
            (head, Some(len)) => Some((keys, head, len)),
            (_, None) => None,
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
        #[cfg(target_arch = "x86_64")]
        if let Some((keys, head, head_len)) = self.one_pass(nonce, aad, in_out.len()) {
            // SAFETY: `one_pass` holds keys only where the CPU has the kernel's
            // features.
            let full = unsafe { x86::seal(keys, nonce, &self.mac, &head[..head_len], in_out) };
            tag.copy_from_slice(&full[..self.tag_len]);
            return Ok(());
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
        #[cfg(target_arch = "x86_64")]
        if let Some((keys, head, head_len)) = self.one_pass(nonce, aad, ct_len) {
            // SAFETY: as in `seal_in_place`.
            let expected = unsafe { x86::open(keys, nonce, &self.mac, &head[..head_len], ct) };
            if !bool::from(expected[..self.tag_len].ct_eq(&*tag)) {
                // Decrypted while hashing: the same keystream puts it back.
                self.apply_keystream(nonce, ct);
                return Err(CipherError::Authentication);
            }
            return Ok(ct_len);
        }
        let expected = self.tag(nonce, aad, ct);
        if !bool::from(expected[..self.tag_len].ct_eq(&*tag)) {
            return Err(CipherError::Authentication);
        }
        self.apply_keystream(nonce, ct);
        Ok(ct_len)
    }
}

/// The one-pass kernel: AES-128-CTR (AES-NI) and HMAC-SHA256 (SHA-NI) over the
/// frame together. SHA-256 is one chain of rounds, each waiting on the last, so it
/// leaves the AES units idle; encrypting the next 64 bytes while hashing the last
/// fills them, and the CTR costs next to nothing. OpenSSL's stitched AES-CBC-HMAC
/// does the same for TLS.
///
/// The MAC's input is `head || ct`: message block 0 is the head and the first
/// `64 - h` ciphertext bytes, block `i > 0` starts at ciphertext byte `64 i - h`.
/// Sealing encrypts 64-byte chunk `i + 1` while hashing block `i` (which ends
/// inside chunk `i`); opening hashes block `i` before decrypting chunk `i - 1`
/// (block `i` starts inside it). What is left after the whole chunks, under two
/// blocks, is copied out and padded.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use zeroize::Zeroize;

    use super::{NONCE_LEN, PrekeyedHmac, RoundKeys, SHA256_BLOCK};

    /// Whether the CPU has what the kernel uses.
    pub(super) fn detect() -> bool {
        is_x86_feature_detected!("aes")
            && is_x86_feature_detected!("sha")
            && is_x86_feature_detected!("sse4.1")
            && is_x86_feature_detected!("ssse3")
    }

    /// SHA-256's round constants (FIPS 180-4, 4.2.2).
    static K: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
        0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
        0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
        0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
        0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
        0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
        0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
        0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2,
    ];

    /// A SHA-256 state as SHA-NI keeps it: words A, B, E, F in one register and
    /// C, D, G, H in the other, first word highest.
    #[derive(Clone, Copy)]
    struct State {
        abef: __m128i,
        cdgh: __m128i,
    }

    impl State {
        #[inline(always)]
        unsafe fn from_words(words: &[u32; 8]) -> Self {
            let [a, b, c, d, e, f, g, h] = words.map(|word| word as i32);
            // SAFETY: SSE2 is part of x86_64.
            unsafe {
                Self {
                    abef: _mm_set_epi32(a, b, e, f),
                    cdgh: _mm_set_epi32(c, d, g, h),
                }
            }
        }

        /// The hash: the words big-endian, A first.
        #[inline(always)]
        unsafe fn bytes(self) -> [u8; 32] {
            let mut words = [[0u32; 4]; 2];
            // SAFETY: 16 writable bytes each.
            unsafe {
                _mm_storeu_si128(words[0].as_mut_ptr().cast(), self.abef);
                _mm_storeu_si128(words[1].as_mut_ptr().cast(), self.cdgh);
            }
            // Stored lowest first: F, E, B, A and H, G, D, C.
            let [[f, e, b, a], [h, g, d, c]] = words;
            let mut hash = [0u8; 32];
            for (out, word) in hash
                .as_chunks_mut::<4>()
                .0
                .iter_mut()
                .zip([a, b, c, d, e, f, g, h])
            {
                *out = word.to_be_bytes();
            }
            hash
        }

        /// Hashes the 64 bytes at `block`.
        ///
        /// # Safety
        /// SHA-NI, SSSE3 and SSE4.1; 64 readable bytes at `block`.
        #[inline(always)]
        unsafe fn compress(&mut self, block: *const u8) {
            // SAFETY: the caller vouches for the CPU and the bytes.
            unsafe {
                let big_endian = _mm_set_epi64x(0x0c0d0e0f_08090a0b, 0x04050607_00010203);
                let word = |i: usize| block.add(16 * i).cast::<__m128i>();
                // The message words of the next four groups, in registers (an
                // array indexed by group number went through the stack).
                let mut w0 = _mm_shuffle_epi8(_mm_loadu_si128(word(0)), big_endian);
                let mut w1 = _mm_shuffle_epi8(_mm_loadu_si128(word(1)), big_endian);
                let mut w2 = _mm_shuffle_epi8(_mm_loadu_si128(word(2)), big_endian);
                let mut w3 = _mm_shuffle_epi8(_mm_loadu_si128(word(3)), big_endian);
                let start = *self;
                // 16 groups of four rounds; the words of group g + 4 are made from
                // those of groups g to g + 3 while group g runs.
                for group in 0..16 {
                    let wk = _mm_add_epi32(w0, _mm_loadu_si128(K.as_ptr().add(4 * group).cast()));
                    // Two rounds per instruction; after two, C, D, G, H are the
                    // A, B, E, F of before, so the registers swap roles.
                    self.cdgh = _mm_sha256rnds2_epu32(self.cdgh, self.abef, wk);
                    self.abef =
                        _mm_sha256rnds2_epu32(self.abef, self.cdgh, _mm_shuffle_epi32::<0x0e>(wk));
                    let partial =
                        _mm_add_epi32(_mm_sha256msg1_epu32(w0, w1), _mm_alignr_epi8::<4>(w3, w2));
                    (w0, w1, w2, w3) = (w1, w2, w3, _mm_sha256msg2_epu32(partial, w3));
                }
                self.abef = _mm_add_epi32(self.abef, start.abef);
                self.cdgh = _mm_add_epi32(self.cdgh, start.cdgh);
            }
        }

        /// Hashes the message's last `rest` bytes (at most two blocks) with its
        /// padding, the message being `message_len` bytes; returns the hash.
        ///
        /// # Safety
        /// As `compress`.
        #[inline(always)]
        unsafe fn finish(mut self, rest: &[&[u8]], message_len: usize) -> [u8; 32] {
            let mut tail = [0u8; 3 * SHA256_BLOCK];
            let mut filled = 0;
            for part in rest {
                tail[filled..filled + part.len()].copy_from_slice(part);
                filled += part.len();
            }
            tail[filled] = 0x80;
            // 0x80 and the 8-byte length follow the message.
            let blocks = (filled + 1 + 8).div_ceil(SHA256_BLOCK);
            let end = blocks * SHA256_BLOCK;
            tail[end - 8..end].copy_from_slice(&(message_len as u64 * 8).to_be_bytes());
            for block in 0..blocks {
                // SAFETY: the caller vouches for the CPU; the block is in `tail`.
                unsafe { self.compress(tail.as_ptr().add(block * SHA256_BLOCK)) };
            }
            // Nothing to wipe: the MAC reads ciphertext, never plaintext.
            // SAFETY: as above.
            unsafe { self.bytes() }
        }
    }

    /// AES-128-CTR over 64-byte chunks, the round keys in registers.
    struct Ctr {
        keys: [__m128i; 11],
        /// The nonce with a zero counter.
        base: __m128i,
    }

    impl Ctr {
        #[inline(always)]
        unsafe fn new(keys: &RoundKeys, nonce: &[u8; NONCE_LEN]) -> Self {
            let mut block = [0u8; 16];
            block[..NONCE_LEN].copy_from_slice(nonce);
            // SAFETY: 16 readable bytes each.
            unsafe {
                Self {
                    keys: keys.map(|key| _mm_loadu_si128(key.as_ptr().cast())),
                    base: _mm_loadu_si128(block.as_ptr().cast()),
                }
            }
        }

        /// The keystream of chunk `chunk`: counter blocks 4 chunk to 4 chunk + 3.
        ///
        /// # Safety
        /// AES-NI and SSE4.1.
        #[inline(always)]
        unsafe fn keystream(&self, chunk: usize) -> [__m128i; 4] {
            // SAFETY: the caller vouches for the CPU.
            unsafe {
                let first = (4 * chunk) as u32;
                let mut blocks = [_mm_setzero_si128(); 4];
                for (i, block) in (0u32..).zip(&mut blocks) {
                    let counter = first.wrapping_add(i).swap_bytes() as i32;
                    *block = _mm_xor_si128(_mm_insert_epi32::<3>(self.base, counter), self.keys[0]);
                }
                for key in &self.keys[1..10] {
                    for block in &mut blocks {
                        *block = _mm_aesenc_si128(*block, *key);
                    }
                }
                for block in &mut blocks {
                    *block = _mm_aesenclast_si128(*block, self.keys[10]);
                }
                blocks
            }
        }

        /// XORs the keystream into whole chunk `chunk` of `data`.
        ///
        /// # Safety
        /// As `keystream`; 64 bytes at `data + 64 chunk`.
        #[inline(always)]
        unsafe fn apply(&self, data: *mut u8, chunk: usize) {
            // SAFETY: the caller vouches for the CPU and the bytes.
            unsafe { self.xor(data, chunk, self.keystream(chunk)) }
        }

        /// XORs `keystream` into whole chunk `chunk` of `data`.
        ///
        /// # Safety
        /// 64 bytes at `data + 64 chunk`.
        #[inline(always)]
        unsafe fn xor(&self, data: *mut u8, chunk: usize, keystream: [__m128i; 4]) {
            // SAFETY: the caller vouches for the bytes; SSE2 is part of x86_64.
            unsafe {
                for (i, key) in keystream.into_iter().enumerate() {
                    let at = data.add(SHA256_BLOCK * chunk + 16 * i).cast::<__m128i>();
                    _mm_storeu_si128(at, _mm_xor_si128(_mm_loadu_si128(at), key));
                }
            }
        }

        /// XORs the keystream into the bytes after the whole chunks, `tail`
        /// (under 64), which start chunk `chunk`.
        ///
        /// # Safety
        /// As `keystream`.
        #[inline(always)]
        unsafe fn apply_tail(&self, tail: &mut [u8], chunk: usize) {
            if tail.is_empty() {
                return;
            }
            let mut keystream = [0u8; SHA256_BLOCK];
            // SAFETY: the caller vouches for the CPU; 64 writable bytes.
            unsafe {
                for (i, key) in self.keystream(chunk).into_iter().enumerate() {
                    _mm_storeu_si128(keystream.as_mut_ptr().add(16 * i).cast(), key);
                }
            }
            super::super::ctr::xor(tail, &keystream);
            // As a slice: one fill, where an array is wiped a volatile byte at a time.
            keystream.as_mut_slice().zeroize();
        }
    }

    /// Message block 0: the head, then the first ciphertext bytes (`data` holds
    /// a whole chunk or more).
    #[inline(always)]
    fn first_block(head: &[u8], data: &[u8]) -> [u8; SHA256_BLOCK] {
        let mut block = [0u8; SHA256_BLOCK];
        let (from_head, from_data) = block.split_at_mut(head.len());
        from_head.copy_from_slice(head);
        from_data.copy_from_slice(&data[..from_data.len()]);
        block
    }

    /// HMAC's outer hash over the inner one.
    ///
    /// # Safety
    /// As `State::compress`.
    #[inline(always)]
    unsafe fn outer(mac: &PrekeyedHmac, inner: [u8; 32]) -> [u8; 32] {
        // SAFETY: the caller vouches for the CPU.
        unsafe { State::from_words(&mac.outer).finish(&[&inner], SHA256_BLOCK + 32) }
    }

    /// Encrypts `data` in place; returns the untruncated HMAC of `head ||
    /// ciphertext`.
    ///
    /// # Safety
    /// The CPU has what `detect` asks for. `head` is 1 to 64 bytes.
    #[target_feature(enable = "aes,sha,sse2,ssse3,sse4.1")]
    pub(super) unsafe fn seal(
        keys: &RoundKeys,
        nonce: &[u8; NONCE_LEN],
        mac: &PrekeyedHmac,
        head: &[u8],
        data: &mut [u8],
    ) -> [u8; 32] {
        let h = head.len();
        debug_assert!((1..=SHA256_BLOCK).contains(&h));
        let chunks = data.len() / SHA256_BLOCK;
        let at = data.as_mut_ptr();
        // SAFETY (the kernels): the CPU as the caller vouches; chunks below
        // `chunks` lie in `data`, and message block i > 0 (64 bytes from
        // ciphertext byte 64 i - h) ends inside chunk i.
        unsafe {
            let ctr = Ctr::new(keys, nonce);
            let mut state = State::from_words(&mac.inner);
            if chunks > 0 {
                ctr.apply(at, 0);
                let first = first_block(head, data);
                if chunks > 1 {
                    ctr.apply(at, 1);
                }
                state.compress(first.as_ptr());
                for i in 1..chunks {
                    if i + 1 < chunks {
                        ctr.apply(at, i + 1);
                    }
                    state.compress(at.add(SHA256_BLOCK * i - h));
                }
            }
            ctr.apply_tail(&mut data[SHA256_BLOCK * chunks..], chunks);
            // The key's inner pad block came first.
            let message_len = SHA256_BLOCK + h + data.len();
            let inner = match chunks {
                0 => state.finish(&[head, data], message_len),
                _ => state.finish(&[&data[SHA256_BLOCK * chunks - h..]], message_len),
            };
            outer(mac, inner)
        }
    }

    /// Decrypts `data` in place; returns the untruncated HMAC of `head ||
    /// ciphertext`, which the caller checks (and on a mismatch encrypts `data`
    /// again).
    ///
    /// # Safety
    /// As `seal`.
    #[target_feature(enable = "aes,sha,sse2,ssse3,sse4.1")]
    pub(super) unsafe fn open(
        keys: &RoundKeys,
        nonce: &[u8; NONCE_LEN],
        mac: &PrekeyedHmac,
        head: &[u8],
        data: &mut [u8],
    ) -> [u8; 32] {
        let h = head.len();
        debug_assert!((1..=SHA256_BLOCK).contains(&h));
        let chunks = data.len() / SHA256_BLOCK;
        let at = data.as_mut_ptr();
        // The key's inner pad block came first.
        let message_len = SHA256_BLOCK + h + data.len();
        // SAFETY (the kernels): as in `seal`; message block i starts inside chunk
        // i - 1, which is decrypted only after it is hashed.
        unsafe {
            let ctr = Ctr::new(keys, nonce);
            let mut state = State::from_words(&mac.inner);
            if chunks == 0 {
                let inner = state.finish(&[head, data], message_len);
                ctr.apply_tail(data, 0);
                return outer(mac, inner);
            }
            let first = first_block(head, data);
            state.compress(first.as_ptr());
            for i in 1..chunks {
                let keystream = ctr.keystream(i - 1);
                state.compress(at.add(SHA256_BLOCK * i - h));
                ctr.xor(at, i - 1, keystream);
            }
            let inner = state.finish(&[&data[SHA256_BLOCK * chunks - h..]], message_len);
            ctr.apply(at, chunks - 1);
            ctr.apply_tail(&mut data[SHA256_BLOCK * chunks..], chunks);
            outer(mac, inner)
        }
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
            let key = hex(case["key"].as_str().unwrap());
            let nonce: [u8; 12] = hex(case["nonce"].as_str().unwrap()).try_into().unwrap();
            let aad = hex(case["aad"].as_str().unwrap());
            let pt = hex(case["pt"].as_str().unwrap());
            let ct = hex(case["ct"].as_str().unwrap());
            for (engine, aead) in engines(&key, tag_len) {
                let mut sealed = pt.clone();
                let mut tag = vec![0u8; tag_len];
                aead.seal_in_place(&nonce, &aad, &mut sealed, &mut tag)
                    .unwrap();
                sealed.extend(&tag);
                assert_eq!(sealed, ct, "{engine}: tag length {tag_len}");

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

    /// The one-pass kernel where the CPU has it, and the two passes.
    fn engines(key: &[u8], tag_len: usize) -> Vec<(&'static str, CtrHmac)> {
        let mut engines = vec![("two passes", CtrHmac::two_pass(key, tag_len))];
        #[cfg(target_arch = "x86_64")]
        if x86::detect() {
            let one_pass = CtrHmac::new(key, tag_len);
            assert!(one_pass.one_pass.is_some());
            engines.push(("one pass", one_pass));
        }
        engines
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

            let at = rng.below(len + tag_len);
            for (engine, aead) in engines(&key, tag_len) {
                let mut sealed = plaintext.clone();
                let mut tag = vec![0u8; tag_len];
                aead.seal_in_place(&nonce, &aad, &mut sealed, &mut tag)
                    .unwrap();
                assert!(sealed == expected, "{engine}: ciphertext of {len} bytes");
                assert_eq!(tag, expected_tag, "{engine}: tag of {len} bytes");

                sealed.extend(&tag);
                let mut forged = sealed.clone();
                forged[at] ^= 0x20;
                let before = forged.clone();
                assert_eq!(
                    aead.open_in_place(&nonce, &aad, &mut forged),
                    Err(CipherError::Authentication)
                );
                // A refused frame is left as it came, not half decrypted.
                assert!(
                    forged == before,
                    "{engine}: forgery of {len} bytes left alone"
                );
                assert_eq!(aead.open_in_place(&nonce, &aad, &mut sealed), Ok(len));
                assert!(
                    sealed[..len] == plaintext[..],
                    "{engine}: opening {len} bytes"
                );
            }
        }
    }
}
