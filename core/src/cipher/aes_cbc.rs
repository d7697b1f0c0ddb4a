// SPDX-License-Identifier: MPL-2.0
//! AES-128/256 in CBC mode, with AES-NI where the CPU has it.
//!
//! CBC encryption is a chain: each block waits for the one before, so its speed
//! is the latency of the rounds. The `aes` crate encrypts one block per call,
//! reloading the round keys and leaving the XOR with the previous block on the
//! chain. Here the round keys stay in registers for the whole buffer and the next
//! plaintext block and the first round key are folded into the last round's key,
//! off the chain, so a block costs exactly its AES rounds. Decryption has no
//! chain: eight blocks run at once and the XOR with the previous ciphertext is
//! folded into the last round the same way. Other CPUs use the `aes` crate (which
//! uses the ARMv8 AES instructions where they exist).

// Without x86_64 only the tests use the AES-NI helpers.
#![cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]

use aes::cipher::{Block, BlockCipherDecrypt, BlockCipherEncrypt, KeyInit};
use aes::{Aes128, Aes256};

pub const BLOCK_LEN: usize = 16;
type RawBlock = [u8; BLOCK_LEN];

/// An AES key ready for CBC, its schedule built once.
pub struct AesCbc {
    engine: Engine,
}

enum Engine {
    #[cfg(target_arch = "x86_64")]
    AesNi(Box<x86::Schedule>),
    /// The `aes` crate; wipes its own keys on drop.
    Portable128(Box<Aes128>),
    Portable256(Box<Aes256>),
}

impl AesCbc {
    /// # Panics
    /// On a key that is not 16 or 32 bytes.
    pub fn new(key: &[u8]) -> Self {
        assert!(
            matches!(key.len(), 16 | 32),
            "AES-CBC key of {} bytes",
            key.len()
        );
        #[cfg(target_arch = "x86_64")]
        if let Some(schedule) = x86::Schedule::new(key) {
            return Self {
                engine: Engine::AesNi(schedule),
            };
        }
        Self::portable(key)
    }

    fn portable(key: &[u8]) -> Self {
        let engine = match key.len() {
            16 => Engine::Portable128(Box::new(Aes128::new_from_slice(key).expect("16 bytes"))),
            _ => Engine::Portable256(Box::new(Aes256::new_from_slice(key).expect("32 bytes"))),
        };
        Self { engine }
    }

    /// CBC-encrypts whole blocks in place, chaining from `chain`, which is left
    /// holding the last ciphertext block.
    ///
    /// # Panics
    /// If `data` is not whole blocks.
    pub fn encrypt(&self, chain: &mut RawBlock, data: &mut [u8]) {
        self.crypt_in_place(Direction::Encrypt, chain, data);
    }

    /// CBC-decrypts `ciphertext` (whole blocks) into the start of `out`, chaining
    /// from `chain`.
    ///
    /// # Panics
    /// If `ciphertext` is not whole blocks or `out` is shorter.
    pub fn decrypt(&self, chain: &RawBlock, ciphertext: &[u8], out: &mut [u8]) {
        self.crypt_into(Direction::Decrypt, &mut chain.clone(), ciphertext, out);
    }

    /// Like `decrypt`, where the ciphertext lies.
    ///
    /// # Panics
    /// If `data` is not whole blocks.
    pub fn decrypt_in_place(&self, chain: &RawBlock, data: &mut [u8]) {
        self.crypt_in_place(Direction::Decrypt, &mut chain.clone(), data);
    }

    /// `input` through the cipher into the start of `out`: in one pass with
    /// AES-NI, else copied and then run in place.
    fn crypt_into(&self, direction: Direction, chain: &mut RawBlock, input: &[u8], out: &mut [u8]) {
        assert_whole_blocks(input.len());
        let out = &mut out[..input.len()];
        match &self.engine {
            #[cfg(target_arch = "x86_64")]
            Engine::AesNi(schedule) => {
                // SAFETY: both hold `input.len()` bytes, whole blocks.
                unsafe {
                    schedule.crypt(
                        direction,
                        chain,
                        input.as_ptr(),
                        out.as_mut_ptr(),
                        input.len() / BLOCK_LEN,
                    )
                }
            }
            _ => {
                out.copy_from_slice(input);
                self.crypt_in_place(direction, chain, out);
            }
        }
    }

    fn crypt_in_place(&self, direction: Direction, chain: &mut RawBlock, data: &mut [u8]) {
        assert_whole_blocks(data.len());
        match (&self.engine, direction) {
            #[cfg(target_arch = "x86_64")]
            (Engine::AesNi(schedule), _) => {
                let at = data.as_mut_ptr();
                // SAFETY: `data` is whole blocks, read and written through one pointer.
                unsafe { schedule.crypt(direction, chain, at, at, data.len() / BLOCK_LEN) }
            }
            (Engine::Portable128(key), Direction::Encrypt) => encrypt_portable(&**key, chain, data),
            (Engine::Portable256(key), Direction::Encrypt) => encrypt_portable(&**key, chain, data),
            (Engine::Portable128(key), Direction::Decrypt) => decrypt_portable(&**key, chain, data),
            (Engine::Portable256(key), Direction::Decrypt) => decrypt_portable(&**key, chain, data),
        }
    }
}

/// AES-128's encryption round keys for AES-NI, for the kernels of other modes
/// (`ctr_hmac`'s one pass); `None` where the CPU lacks AES-NI.
#[cfg(target_arch = "x86_64")]
pub(crate) fn aes128_round_keys(key: &[u8; 16]) -> Option<zeroize::Zeroizing<[RawBlock; 11]>> {
    let schedule = x86::Schedule::new(key)?;
    let keys: [RawBlock; 11] = schedule.encrypt[..11].try_into().expect("11 round keys");
    Some(zeroize::Zeroizing::new(keys))
}

#[derive(Clone, Copy)]
enum Direction {
    /// Advances the chain to the last ciphertext block.
    Encrypt,
    /// Leaves the chain alone: the caller has the ciphertext.
    Decrypt,
}

fn assert_whole_blocks(len: usize) {
    assert!(
        len.is_multiple_of(BLOCK_LEN),
        "AES-CBC input of {len} bytes is not whole blocks"
    );
}

fn encrypt_portable(
    key: &impl BlockCipherEncrypt<BlockSize = aes::cipher::consts::U16>,
    chain: &mut RawBlock,
    data: &mut [u8],
) {
    for block in data.chunks_exact_mut(BLOCK_LEN) {
        let block: &mut RawBlock = block.try_into().expect("one block");
        xor_into(block, chain);
        key.encrypt_block(block.into());
        *chain = *block;
    }
}

/// In place, 8 blocks at a time (the crate runs them in parallel), each group's
/// ciphertext kept aside for the XOR.
fn decrypt_portable(
    key: &impl BlockCipherDecrypt<BlockSize = aes::cipher::consts::U16>,
    chain: &RawBlock,
    data: &mut [u8],
) {
    let mut previous = *chain;
    for group in data.chunks_mut(8 * BLOCK_LEN) {
        let mut ciphertext = [0u8; 8 * BLOCK_LEN];
        let ciphertext = &mut ciphertext[..group.len()];
        ciphertext.copy_from_slice(group);
        key.decrypt_blocks(Block::<Aes128>::slice_as_chunks_mut(group).0);
        for (block, ciphertext) in group
            .chunks_exact_mut(BLOCK_LEN)
            .zip(ciphertext.chunks_exact(BLOCK_LEN))
        {
            xor_into(block.try_into().expect("one block"), &previous);
            previous.copy_from_slice(ciphertext);
        }
    }
}

fn xor_into(block: &mut RawBlock, other: &RawBlock) {
    for (b, o) in block.iter_mut().zip(other) {
        *b ^= o;
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{BLOCK_LEN, Direction, RawBlock};
    use std::arch::x86_64::*;
    use std::sync::OnceLock;
    use zeroize::Zeroize;

    /// Round keys for AES-NI, for both directions. Only `new` makes one, after
    /// checking the CPU, so holding one makes the kernels safe to call.
    pub(super) struct Schedule {
        rounds: usize,
        /// Whether the CPU has VAES with AVX-512: decryption then runs four blocks
        /// per instruction.
        vaes: bool,
        pub(super) encrypt: [RawBlock; 15],
        /// In the order decryption uses them, the middle ones through
        /// InvMixColumns (the "equivalent inverse cipher" of FIPS 197).
        decrypt: [RawBlock; 15],
    }

    /// AES-NI, and VAES with AVX-512; CPUID is asked once.
    fn detect() -> (bool, bool) {
        static DETECTED: OnceLock<(bool, bool)> = OnceLock::new();
        *DETECTED.get_or_init(|| {
            let aes_ni = is_x86_feature_detected!("aes");
            let vaes =
                aes_ni && is_x86_feature_detected!("vaes") && is_x86_feature_detected!("avx512f");
            (aes_ni, vaes)
        })
    }

    impl Schedule {
        /// The schedule for a 16- or 32-byte key; `None` without AES-NI.
        pub(super) fn new(key: &[u8]) -> Option<Box<Self>> {
            let (aes_ni, vaes) = detect();
            if !aes_ni {
                return None;
            }
            let mut schedule = Box::new(Schedule {
                rounds: if key.len() == 16 { 10 } else { 14 },
                vaes,
                encrypt: [[0; BLOCK_LEN]; 15],
                decrypt: [[0; BLOCK_LEN]; 15],
            });
            // SAFETY: the CPU has AES-NI (checked above).
            unsafe { expand(key, &mut schedule) };
            Some(schedule)
        }

        /// The same schedule without the VAES kernel.
        #[cfg(test)]
        pub(super) fn without_vaes(mut self: Box<Self>) -> Option<Box<Self>> {
            let had = self.vaes;
            self.vaes = false;
            had.then_some(self)
        }

        /// # Safety
        /// `input` and `out` hold `blocks` blocks (they may be the same).
        pub(super) unsafe fn crypt(
            &self,
            direction: Direction,
            chain: &mut RawBlock,
            input: *const u8,
            out: *mut u8,
            blocks: usize,
        ) {
            let (encrypt, decrypt) = (&self.encrypt, &self.decrypt);
            // SAFETY: a `Schedule` exists only where the CPU has AES-NI (and VAES
            // with AVX-512 when `vaes` is set); the caller vouches for the pointers.
            unsafe {
                match (direction, self.rounds, self.vaes) {
                    (Direction::Encrypt, 10, _) => {
                        encrypt_cbc::<10>(encrypt, chain, input, out, blocks)
                    }
                    (Direction::Encrypt, _, _) => {
                        encrypt_cbc::<14>(encrypt, chain, input, out, blocks)
                    }
                    (Direction::Decrypt, 10, true) => {
                        decrypt_cbc_vaes::<10>(decrypt, chain, input, out, blocks)
                    }
                    (Direction::Decrypt, _, true) => {
                        decrypt_cbc_vaes::<14>(decrypt, chain, input, out, blocks)
                    }
                    (Direction::Decrypt, 10, false) => {
                        decrypt_cbc::<10>(decrypt, chain, input, out, blocks)
                    }
                    (Direction::Decrypt, _, false) => {
                        decrypt_cbc::<14>(decrypt, chain, input, out, blocks)
                    }
                }
            }
        }
    }

    impl Drop for Schedule {
        fn drop(&mut self) {
            self.encrypt.zeroize();
            self.decrypt.zeroize();
        }
    }

    #[inline(always)]
    unsafe fn load(block: &[u8]) -> __m128i {
        debug_assert!(block.len() >= BLOCK_LEN);
        // SAFETY: at least 16 readable bytes; unaligned load.
        unsafe { _mm_loadu_si128(block.as_ptr().cast()) }
    }

    #[inline(always)]
    unsafe fn store(block: &mut [u8], value: __m128i) {
        debug_assert!(block.len() >= BLOCK_LEN);
        // SAFETY: at least 16 writable bytes; unaligned store.
        unsafe { _mm_storeu_si128(block.as_mut_ptr().cast(), value) }
    }

    /// Block `i` at `base`.
    #[inline(always)]
    unsafe fn load_at(base: *const u8, i: usize) -> __m128i {
        // SAFETY: the caller vouches that block `i` is readable.
        unsafe { _mm_loadu_si128(base.add(i * BLOCK_LEN).cast()) }
    }

    #[inline(always)]
    unsafe fn store_at(base: *mut u8, i: usize, value: __m128i) {
        // SAFETY: the caller vouches that block `i` is writable.
        unsafe { _mm_storeu_si128(base.add(i * BLOCK_LEN).cast(), value) }
    }

    /// One step of the key expansion (FIPS 197, 5.2): the previous same-parity
    /// round key with each word XORed into the next, then the word from
    /// AESKEYGENASSIST that `SELECT` picks (RotWord+SubWord+Rcon, or SubWord).
    #[target_feature(enable = "sse2")]
    fn next_round_key<const SELECT: i32>(previous: __m128i, assisted: __m128i) -> __m128i {
        let mut key = previous;
        key = _mm_xor_si128(key, _mm_slli_si128::<4>(key));
        key = _mm_xor_si128(key, _mm_slli_si128::<4>(key));
        key = _mm_xor_si128(key, _mm_slli_si128::<4>(key));
        _mm_xor_si128(key, _mm_shuffle_epi32::<SELECT>(assisted))
    }

    /// Fills both directions of `schedule` from `key`.
    #[target_feature(enable = "aes,sse2")]
    unsafe fn expand(key: &[u8], schedule: &mut Schedule) {
        let mut keys = [_mm_setzero_si128(); 15];
        // AESKEYGENASSIST takes Rcon as an immediate, so each step is spelled out.
        macro_rules! step {
            ($i:expr, $rcon:expr) => {
                keys[$i] = next_round_key::<0xff>(
                    keys[$i - 1 - (schedule.rounds == 14) as usize],
                    _mm_aeskeygenassist_si128::<$rcon>(keys[$i - 1]),
                )
            };
        }
        // SAFETY: `key` is 16 or 32 bytes (checked by `AesCbc::new`).
        keys[0] = unsafe { load(key) };
        if schedule.rounds == 10 {
            step!(1, 0x01);
            step!(2, 0x02);
            step!(3, 0x04);
            step!(4, 0x08);
            step!(5, 0x10);
            step!(6, 0x20);
            step!(7, 0x40);
            step!(8, 0x80);
            step!(9, 0x1b);
            step!(10, 0x36);
        } else {
            // SAFETY: as above.
            keys[1] = unsafe { load(&key[16..]) };
            // Odd round keys of AES-256 take SubWord without rotation or Rcon.
            macro_rules! odd {
                ($i:expr) => {
                    keys[$i] = next_round_key::<0xaa>(
                        keys[$i - 2],
                        _mm_aeskeygenassist_si128::<0>(keys[$i - 1]),
                    )
                };
            }
            step!(2, 0x01);
            odd!(3);
            step!(4, 0x02);
            odd!(5);
            step!(6, 0x04);
            odd!(7);
            step!(8, 0x08);
            odd!(9);
            step!(10, 0x10);
            odd!(11);
            step!(12, 0x20);
            odd!(13);
            step!(14, 0x40);
        }
        let rounds = schedule.rounds;
        for (i, key) in keys[..=rounds].iter().enumerate() {
            // SAFETY: each entry is 16 bytes.
            unsafe { store(&mut schedule.encrypt[i], *key) };
            let inverse = match i {
                0 => keys[rounds],
                _ if i == rounds => keys[0],
                _ => _mm_aesimc_si128(keys[rounds - i]),
            };
            // SAFETY: as above.
            unsafe { store(&mut schedule.decrypt[i], inverse) };
        }
        keys.zeroize();
    }

    /// The first `ROUNDS + 1` round keys, into registers for the whole buffer.
    #[inline(always)]
    unsafe fn load_keys<const ROUNDS: usize>(raw: &[RawBlock; 15]) -> [__m128i; 15] {
        // SAFETY: SSE2 is part of x86_64.
        let mut keys = [unsafe { _mm_setzero_si128() }; 15];
        for (key, raw) in keys.iter_mut().zip(&raw[..=ROUNDS]) {
            // SAFETY: 16 bytes.
            *key = unsafe { load(raw) };
        }
        keys
    }

    /// # Safety
    /// AES-NI; `input` and `out` hold `blocks` blocks (they may be the same: each
    /// block is read before it is written, and never after).
    #[target_feature(enable = "aes,sse2")]
    unsafe fn encrypt_cbc<const ROUNDS: usize>(
        raw_keys: &[RawBlock; 15],
        chain: &mut RawBlock,
        input: *const u8,
        out: *mut u8,
        blocks: usize,
    ) {
        if blocks == 0 {
            return;
        }
        // SAFETY (all loads and stores): blocks below `blocks`, as the caller vouches.
        let keys = unsafe { load_keys::<ROUNDS>(raw_keys) };
        // The state entering round 1: plaintext ^ previous ciphertext ^ key 0.
        let mut state = _mm_xor_si128(
            _mm_xor_si128(unsafe { load_at(input, 0) }, keys[0]),
            unsafe { load(chain) },
        );
        for i in 0..blocks {
            for key in &keys[1..ROUNDS] {
                state = _mm_aesenc_si128(state, *key);
            }
            if i + 1 < blocks {
                // The next block's input is this ciphertext ^ (its plaintext ^ key 0):
                // that XOR joins the last round key, so the chain waits on AES only.
                let whitened = _mm_xor_si128(unsafe { load_at(input, i + 1) }, keys[0]);
                let next = _mm_aesenclast_si128(state, _mm_xor_si128(keys[ROUNDS], whitened));
                unsafe { store_at(out, i, _mm_xor_si128(next, whitened)) };
                state = next;
            } else {
                let last = _mm_aesenclast_si128(state, keys[ROUNDS]);
                unsafe { store_at(out, i, last) };
                unsafe { store(chain, last) };
            }
        }
    }

    /// Blocks decrypted at once: enough to cover the latency of AESDEC.
    const LANES: usize = 8;

    /// # Safety
    /// AES-NI; `input` and `out` hold `blocks` blocks (they may be the same: each
    /// group of blocks is read before it is written, and never after).
    #[target_feature(enable = "aes,sse2")]
    unsafe fn decrypt_cbc<const ROUNDS: usize>(
        raw_keys: &[RawBlock; 15],
        chain: &RawBlock,
        input: *const u8,
        out: *mut u8,
        blocks: usize,
    ) {
        // SAFETY (all): `chain` is one block; the groups lie below `blocks`, as the
        // caller vouches.
        let keys = unsafe { load_keys::<ROUNDS>(raw_keys) };
        unsafe { decrypt_from::<ROUNDS>(&keys, load(chain), input, out, blocks) }
    }

    /// `decrypt_cbc` with round keys in registers, chained from `previous`.
    ///
    /// # Safety
    /// As `decrypt_cbc`.
    #[inline(always)]
    unsafe fn decrypt_from<const ROUNDS: usize>(
        keys: &[__m128i; 15],
        mut previous: __m128i,
        input: *const u8,
        out: *mut u8,
        blocks: usize,
    ) {
        let mut at = 0;
        while at + LANES <= blocks {
            let offset = at * BLOCK_LEN;
            // SAFETY: blocks below `blocks`, as the caller vouches.
            previous = unsafe {
                decrypt_lanes::<ROUNDS, LANES>(keys, previous, input.add(offset), out.add(offset))
            };
            at += LANES;
        }
        while at < blocks {
            let offset = at * BLOCK_LEN;
            // SAFETY: as above.
            previous = unsafe {
                decrypt_lanes::<ROUNDS, 1>(keys, previous, input.add(offset), out.add(offset))
            };
            at += 1;
        }
    }

    /// Blocks per step of the VAES kernel: four 512-bit registers of four blocks.
    const WIDE_BLOCKS: usize = 16;

    /// `decrypt_cbc` with VAES on 512-bit registers, 16 blocks a step; the
    /// remaining blocks go to the 128-bit kernel.
    ///
    /// # Safety
    /// As `decrypt_cbc`, and the CPU has VAES and AVX-512F.
    #[target_feature(enable = "vaes,avx512f,aes,sse2")]
    unsafe fn decrypt_cbc_vaes<const ROUNDS: usize>(
        raw_keys: &[RawBlock; 15],
        chain: &RawBlock,
        input: *const u8,
        out: *mut u8,
        blocks: usize,
    ) {
        // SAFETY (all): `chain` is one block; the steps lie below `blocks`, as the
        // caller vouches; every register is loaded before any is stored.
        let keys = unsafe { load_keys::<ROUNDS>(raw_keys) };
        let wide_keys = keys.map(|key| _mm512_broadcast_i32x4(key));
        // Only its last block matters: the ciphertext before the first block.
        let mut last = _mm512_broadcast_i32x4(unsafe { load(chain) });
        let mut at = 0;
        while at + WIDE_BLOCKS <= blocks {
            let offset = at * BLOCK_LEN;
            let ciphertext: [__m512i; 4] = std::array::from_fn(|i| unsafe {
                _mm512_loadu_si512(input.add(offset + 64 * i).cast())
            });
            let mut state = ciphertext.map(|c| _mm512_xor_si512(c, wide_keys[0]));
            for key in &wide_keys[1..ROUNDS] {
                for lane in &mut state {
                    *lane = _mm512_aesdec_epi128(*lane, *key);
                }
            }
            for (i, lane) in state.into_iter().enumerate() {
                // Each block's predecessor: the register shifted back by one block,
                // the block before it coming from the register before.
                let before = if i == 0 { last } else { ciphertext[i - 1] };
                let previous = _mm512_alignr_epi64::<6>(ciphertext[i], before);
                let last_key = _mm512_xor_si512(wide_keys[ROUNDS], previous);
                let plain = _mm512_aesdeclast_epi128(lane, last_key);
                unsafe { _mm512_storeu_si512(out.add(offset + 64 * i).cast(), plain) };
            }
            last = ciphertext[3];
            at += WIDE_BLOCKS;
        }
        let previous = _mm512_extracti32x4_epi32::<3>(last);
        let offset = at * BLOCK_LEN;
        unsafe {
            decrypt_from::<ROUNDS>(
                &keys,
                previous,
                input.add(offset),
                out.add(offset),
                blocks - at,
            )
        }
    }

    /// Decrypts `N` consecutive blocks chained from `previous`; returns the last
    /// ciphertext block, the next chain.
    ///
    /// # Safety
    /// AES-NI; `ciphertext` and `out` hold `N` blocks.
    #[inline(always)]
    unsafe fn decrypt_lanes<const ROUNDS: usize, const N: usize>(
        keys: &[__m128i; 15],
        mut previous: __m128i,
        ciphertext: *const u8,
        out: *mut u8,
    ) -> __m128i {
        // SAFETY (all): blocks below `N`, AES-NI, as the caller vouches.
        let input: [__m128i; N] = std::array::from_fn(|i| unsafe { load_at(ciphertext, i) });
        let mut state = input.map(|block| unsafe { _mm_xor_si128(block, keys[0]) });
        for key in &keys[1..ROUNDS] {
            for lane in &mut state {
                *lane = unsafe { _mm_aesdec_si128(*lane, *key) };
            }
        }
        for (i, (lane, block)) in state.into_iter().zip(input).enumerate() {
            // The XOR with the previous ciphertext rides on the last round key.
            let last_key = unsafe { _mm_xor_si128(keys[ROUNDS], previous) };
            unsafe { store_at(out, i, _mm_aesdeclast_si128(lane, last_key)) };
            previous = block;
        }
        previous
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{hex, noise};

    /// Every engine this CPU can run for `key`.
    fn engines(key: &[u8]) -> Vec<(&'static str, AesCbc)> {
        let mut engines = vec![("portable", AesCbc::portable(key))];
        #[cfg(target_arch = "x86_64")]
        if let Some(schedule) = x86::Schedule::new(key) {
            engines.push((
                "aes-ni",
                AesCbc {
                    engine: Engine::AesNi(schedule),
                },
            ));
        }
        #[cfg(target_arch = "x86_64")]
        match x86::Schedule::new(key).and_then(|schedule| schedule.without_vaes()) {
            Some(schedule) => engines.push((
                "aes-ni without vaes",
                AesCbc {
                    engine: Engine::AesNi(schedule),
                },
            )),
            None => println!("note: no VAES/AVX-512 on this CPU, only the 128-bit kernel runs"),
        }
        engines
    }

    const SP800_38A_IV: &str = "000102030405060708090a0b0c0d0e0f";
    const SP800_38A_PLAINTEXT: &str = "6bc1bee22e409f96e93d7e117393172a
        ae2d8a571e03ac9c9eb76fac45af8e51 30c81c46a35ce411e5fbc1191a0a52ef
        f69f2445df4f9b17ad2b417be66c3710";

    /// NIST SP 800-38A, F.2.1-F.2.2 and F.2.5-F.2.6.
    #[test]
    fn sp800_38a_vectors() {
        let cases = [
            (
                "2b7e151628aed2a6abf7158809cf4f3c",
                "7649abac8119b246cee98e9b12e9197d 5086cb9b507219ee95db113a917678b2
                 73bed6b8e3c1743b7116e69e22229516 3ff1caa1681fac09120eca307586e1a7",
            ),
            (
                "603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4",
                "f58c4c04d6e5f1ba779eabfb5f7bfbd6 9cfc4e967edb808d679f777bc6702c7d
                 39f23369a9d9bacfa530e26304231461 b2eb05e2c39be9fcda6c19078c6a9d1b",
            ),
        ];
        let iv: RawBlock = hex(SP800_38A_IV).try_into().unwrap();
        let plaintext = hex(SP800_38A_PLAINTEXT);
        for (key, ciphertext) in cases {
            let ciphertext = hex(ciphertext);
            for (name, cipher) in engines(&hex(key)) {
                let mut chain = iv;
                let mut data = plaintext.clone();
                cipher.encrypt(&mut chain, &mut data);
                assert_eq!(data, ciphertext, "{name} encrypt, key {key}");
                assert_eq!(chain[..], ciphertext[48..], "{name} chain");
                let mut out = vec![0u8; data.len()];
                cipher.decrypt(&iv, &ciphertext, &mut out);
                assert_eq!(out, plaintext, "{name} decrypt, key {key}");
            }
        }
    }

    /// The engines agree with each other on random keys, IVs and lengths around
    /// the 8-block lanes of the decrypter, and a buffer split anywhere encrypts as
    /// the whole does.
    #[test]
    fn engines_agree_on_random_inputs() {
        for seed in 0..200u64 {
            let key = noise(seed, if seed % 2 == 0 { 16 } else { 32 });
            let iv: RawBlock = noise(seed + 1000, 16).try_into().unwrap();
            let blocks = (seed as usize * 7) % 37;
            let plaintext = noise(seed + 2000, blocks * BLOCK_LEN);
            let mut results = Vec::new();
            for (name, cipher) in engines(&key) {
                let mut whole = plaintext.clone();
                let mut chain = iv;
                cipher.encrypt(&mut chain, &mut whole);
                let split = (seed as usize % (blocks + 1)) * BLOCK_LEN;
                let mut parts = plaintext.clone();
                let mut part_chain = iv;
                let (head, tail) = parts.split_at_mut(split);
                cipher.encrypt(&mut part_chain, head);
                cipher.encrypt(&mut part_chain, tail);
                assert_eq!(parts, whole, "{name}: split at {split}");
                assert_eq!(part_chain, chain, "{name}");
                let mut decrypted = vec![0u8; whole.len() + 5];
                cipher.decrypt(&iv, &whole, &mut decrypted);
                assert_eq!(decrypted[..whole.len()], plaintext[..], "{name}");
                let mut in_place = whole.clone();
                cipher.decrypt_in_place(&iv, &mut in_place);
                assert_eq!(in_place, plaintext, "{name}: in place");
                results.push((whole, chain));
            }
            assert!(
                results.windows(2).all(|pair| pair[0] == pair[1]),
                "seed {seed}"
            );
        }
    }

    #[test]
    #[should_panic(expected = "not whole blocks")]
    fn partial_blocks_are_refused() {
        AesCbc::new(&[0; 16]).encrypt(&mut [0; 16], &mut [0; 17]);
    }
}
