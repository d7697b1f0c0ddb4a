// SPDX-License-Identifier: MPL-2.0
//! QQ TEA, the "symmetry_encrypt" format of Tencent's privilege strings and
//! TarsCpp's `tc_tea`: 16-round TEA on big-endian 32-bit words with a 16-byte key,
//! in a chaining mode of its own, over a framed message.
//!
//! Frame: byte 0 = (random & 0xF8) | padLen, padLen random bytes, 2 random salt
//! bytes, the body, 7 zero bytes; padLen = (8 - (len(body) + 10) % 8) % 8.
//! Chaining per 8-byte block i: x_i = P_i ^ C_{i-1}; C_i = TEA(x_i) ^ x_{i-1}, with
//! C_0 = x_0 = 0. The random bytes make each ciphertext differ.
//!
//! Limits: TEA is a 64-bit block cipher with known related-key weaknesses, and
//! nothing is authenticated; a wrong key or corrupt data is caught by the seven zero
//! bytes at the end (missed with probability 2^-56).

use std::ops::Range;

use zeroize::Zeroizing;

use super::Invalid;

const DELTA: u32 = 0x9E37_79B9;
const ROUNDS: u32 = 16;
/// Bytes of random framing a message needs at most: byte 0, 7 pad, 2 salt.
pub const RANDOM_LEN: usize = 10;

/// Random bytes from the OS, fetched a pool at a time: a message takes
/// RANDOM_LEN of them, and a `getrandom` call per message cost a fifth of
/// encrypting a 188-byte one. Bytes handed out are wiped from the pool, the rest
/// on drop.
pub struct RandomPool {
    bytes: Zeroizing<Box<[u8]>>,
    next: usize,
}

/// A pool's size: 51 messages per `getrandom` call.
const POOL_LEN: usize = 512;

impl RandomPool {
    pub fn new() -> Self {
        Self {
            bytes: Zeroizing::new(vec![0; POOL_LEN].into_boxed_slice()),
            next: POOL_LEN,
        }
    }

    /// The random bytes of the next message.
    pub fn take(&mut self) -> Result<[u8; RANDOM_LEN], getrandom::Error> {
        if self.next + RANDOM_LEN > POOL_LEN {
            getrandom::fill(&mut self.bytes)?;
            self.next = 0;
        }
        let taken = &mut self.bytes[self.next..self.next + RANDOM_LEN];
        let random = (&*taken).try_into().expect("RANDOM_LEN bytes");
        taken.fill(0);
        self.next += RANDOM_LEN;
        Ok(random)
    }
}

impl Default for RandomPool {
    fn default() -> Self {
        Self::new()
    }
}

pub struct QqTea {
    key: Zeroizing<[u32; 4]>,
}

fn pad_len(body_len: usize) -> usize {
    (8 - (body_len + 10) % 8) % 8
}

impl QqTea {
    pub const KEY_LEN: usize = 16;

    /// # Panics
    /// If `key` is not 16 bytes.
    pub fn new(key: &[u8]) -> Self {
        assert_eq!(key.len(), Self::KEY_LEN, "TEA key");
        let mut words = Zeroizing::new([0u32; 4]);
        for (word, bytes) in words.iter_mut().zip(key.chunks_exact(4)) {
            *word = u32::from_be_bytes(bytes.try_into().expect("4 bytes"));
        }
        Self { key: words }
    }

    fn encrypt_block(&self, block: u64) -> u64 {
        let [k0, k1, k2, k3] = *self.key;
        let (mut y, mut z) = ((block >> 32) as u32, block as u32);
        let mut sum = 0u32;
        for _ in 0..ROUNDS {
            sum = sum.wrapping_add(DELTA);
            y = y.wrapping_add(
                (z << 4).wrapping_add(k0) ^ z.wrapping_add(sum) ^ (z >> 5).wrapping_add(k1),
            );
            z = z.wrapping_add(
                (y << 4).wrapping_add(k2) ^ y.wrapping_add(sum) ^ (y >> 5).wrapping_add(k3),
            );
        }
        (y as u64) << 32 | z as u64
    }

    fn decrypt_block(&self, block: u64) -> u64 {
        let [k0, k1, k2, k3] = *self.key;
        let (mut y, mut z) = ((block >> 32) as u32, block as u32);
        let mut sum = DELTA.wrapping_mul(ROUNDS);
        for _ in 0..ROUNDS {
            z = z.wrapping_sub(
                (y << 4).wrapping_add(k2) ^ y.wrapping_add(sum) ^ (y >> 5).wrapping_add(k3),
            );
            y = y.wrapping_sub(
                (z << 4).wrapping_add(k0) ^ z.wrapping_add(sum) ^ (z >> 5).wrapping_add(k1),
            );
            sum = sum.wrapping_sub(DELTA);
        }
        (y as u64) << 32 | z as u64
    }

    pub fn encrypted_len(body_len: usize) -> usize {
        body_len + 10 + pad_len(body_len)
    }

    /// Frames `body` with bytes from `random` and encrypts it into the start of
    /// `out`; returns the length.
    ///
    /// # Panics
    /// If `out` is shorter than `encrypted_len(body.len())`.
    pub fn encrypt_into(&self, body: &[u8], random: &[u8; RANDOM_LEN], out: &mut [u8]) -> usize {
        let pad = pad_len(body.len());
        let len = Self::encrypted_len(body.len());
        let out = &mut out[..len];
        out[0] = (random[0] & 0xF8) | pad as u8;
        out[1..1 + pad + 2].copy_from_slice(&random[1..1 + pad + 2]);
        out[3 + pad..3 + pad + body.len()].copy_from_slice(body);
        out[len - 7..].fill(0);
        self.encrypt_chain(out);
        len
    }

    /// The chaining mode over whole blocks, in place.
    fn encrypt_chain(&self, data: &mut [u8]) {
        let (mut previous_c, mut previous_x) = (0u64, 0u64);
        for chunk in data.chunks_exact_mut(8) {
            let p = u64::from_be_bytes(chunk.try_into().expect("8 bytes"));
            let x = p ^ previous_c;
            let c = self.encrypt_block(x) ^ previous_x;
            chunk.copy_from_slice(&c.to_be_bytes());
            (previous_c, previous_x) = (c, x);
        }
    }

    /// Inverse of `encrypt_chain`, whatever the key: each block's ciphertext is
    /// read before it is overwritten.
    fn decrypt_chain(&self, data: &mut [u8]) {
        let (mut previous_c, mut previous_x) = (0u64, 0u64);
        for chunk in data.chunks_exact_mut(8) {
            let c = u64::from_be_bytes(chunk.try_into().expect("8 bytes"));
            let x = self.decrypt_block(c ^ previous_x);
            chunk.copy_from_slice(&(x ^ previous_c).to_be_bytes());
            (previous_c, previous_x) = (c, x);
        }
    }

    /// Decrypts a message where it lies; returns where its body is. On `Invalid`
    /// (not a message, or not under this key) `data` is left as it came: the
    /// chain is run forward again, which gives the ciphertext back under any
    /// key.
    pub fn decrypt_in_place(&self, data: &mut [u8]) -> Result<Range<usize>, Invalid> {
        let len = data.len();
        if len < 16 || !len.is_multiple_of(8) {
            return Err(Invalid);
        }
        self.decrypt_chain(data);
        let pad = (data[0] & 0x07) as usize;
        let body_start = 1 + pad + 2;
        if body_start + 7 > len || data[len - 7..].iter().any(|&b| b != 0) {
            self.encrypt_chain(data);
            return Err(Invalid);
        }
        Ok(body_start..len - 7)
    }

    /// Decrypts `ciphertext` and writes the body to the start of `out` (which must
    /// hold `ciphertext.len()` bytes); returns the body length.
    pub fn decrypt_into(&self, ciphertext: &[u8], out: &mut [u8]) -> Result<usize, Invalid> {
        let plain = out.get_mut(..ciphertext.len()).ok_or(Invalid)?;
        plain.copy_from_slice(ciphertext);
        let body = self.decrypt_in_place(plain)?;
        let body_len = body.len();
        plain.copy_within(body, 0);
        Ok(body_len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::hex;

    #[test]
    fn known_ciphertext() {
        // ../shared/vectors/README.md
        let tea = QqTea::new(b"0123456789ABCDEF");
        let ciphertext = hex("b7b2e52af7f5b1fbf37fc3d5546ac7569aecd01bbacf09bf");
        let mut out = vec![0u8; ciphertext.len()];
        let len = tea.decrypt_into(&ciphertext, &mut out).unwrap();
        assert_eq!(&out[..len], b"MiraiGO Here");
    }

    #[test]
    fn round_trips_every_padding() {
        let tea = QqTea::new(b"fedcba9876543210");
        for len in 0..40 {
            let body: Vec<u8> = (0..len as u8).map(|b| b.wrapping_mul(7)).collect();
            let random = [0xA5, 1, 2, 3, 4, 5, 6, 7, 8, 9];
            let mut out = vec![0u8; QqTea::encrypted_len(len)];
            let n = tea.encrypt_into(&body, &random, &mut out);
            assert_eq!(n % 8, 0);
            let mut plain = vec![0u8; n];
            assert_eq!(tea.decrypt_into(&out, &mut plain), Ok(len), "{len}");
            assert_eq!(&plain[..len], &body[..]);
        }
    }

    #[test]
    fn the_random_pool_hands_out_fresh_bytes_across_refills() {
        let mut pool = RandomPool::new();
        let taken: Vec<[u8; RANDOM_LEN]> = (0..3 * POOL_LEN / RANDOM_LEN)
            .map(|_| pool.take().unwrap())
            .collect();
        let distinct: std::collections::HashSet<_> = taken.iter().collect();
        assert_eq!(distinct.len(), taken.len(), "80-bit draws repeat");
        // What was handed out is not kept.
        assert!(pool.bytes[..pool.next].iter().all(|&b| b == 0));
    }

    #[test]
    fn decrypting_in_place_finds_the_body_or_leaves_the_message_alone() {
        let tea = QqTea::new(b"fedcba9876543210");
        let wrong = QqTea::new(b"fedcba9876543211");
        for len in 0..40 {
            let body: Vec<u8> = (0..len as u8).map(|b| b.wrapping_mul(11)).collect();
            let mut message = vec![0u8; QqTea::encrypted_len(len)];
            tea.encrypt_into(&body, &[0x5A, 9, 8, 7, 6, 5, 4, 3, 2, 1], &mut message);
            let mut data = message.clone();
            assert_eq!(wrong.decrypt_in_place(&mut data), Err(Invalid));
            assert_eq!(data, message, "{len}: a wrong key leaves it as it came");
            let body_range = tea.decrypt_in_place(&mut data).unwrap();
            assert_eq!(&data[body_range], &body[..], "{len}");
        }
    }

    #[test]
    fn rejects_invalid_ciphertexts() {
        let tea = QqTea::new(b"0123456789ABCDEF");
        let good = hex("b7b2e52af7f5b1fbf37fc3d5546ac7569aecd01bbacf09bf");
        let mut out = vec![0u8; 64];
        assert_eq!(tea.decrypt_into(&good[..8], &mut out), Err(Invalid));
        assert_eq!(tea.decrypt_into(&good[..23], &mut out), Err(Invalid));
        let mut corrupt = good.clone();
        corrupt[20] ^= 1;
        assert_eq!(tea.decrypt_into(&corrupt, &mut out), Err(Invalid));
        let wrong = QqTea::new(b"0123456789ABCDEE");
        assert_eq!(wrong.decrypt_into(&good, &mut out), Err(Invalid));
    }
}
