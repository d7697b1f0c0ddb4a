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

use zeroize::Zeroizing;

use super::Invalid;

const DELTA: u32 = 0x9E37_79B9;
const ROUNDS: u32 = 16;
/// Bytes of random framing a message needs at most: byte 0, 7 pad, 2 salt.
pub const RANDOM_LEN: usize = 10;

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

        let (mut previous_c, mut previous_x) = (0u64, 0u64);
        for chunk in out.chunks_exact_mut(8) {
            let p = u64::from_be_bytes(chunk.try_into().expect("8 bytes"));
            let x = p ^ previous_c;
            let c = self.encrypt_block(x) ^ previous_x;
            chunk.copy_from_slice(&c.to_be_bytes());
            (previous_c, previous_x) = (c, x);
        }
        len
    }

    /// Decrypts `ciphertext` and writes the body to the start of `out` (which must
    /// hold `ciphertext.len()` bytes); returns the body length.
    pub fn decrypt_into(&self, ciphertext: &[u8], out: &mut [u8]) -> Result<usize, Invalid> {
        let len = ciphertext.len();
        if len < 16 || !len.is_multiple_of(8) || out.len() < len {
            return Err(Invalid);
        }
        let plain = &mut out[..len];
        let (mut previous_c, mut previous_x) = (0u64, 0u64);
        for (chunk, out) in ciphertext.chunks_exact(8).zip(plain.chunks_exact_mut(8)) {
            let c = u64::from_be_bytes(chunk.try_into().expect("8 bytes"));
            let x = self.decrypt_block(c ^ previous_x);
            out.copy_from_slice(&(x ^ previous_c).to_be_bytes());
            (previous_c, previous_x) = (c, x);
        }
        let pad = (plain[0] & 0x07) as usize;
        let body_start = 1 + pad + 2;
        if body_start + 7 > len || plain[len - 7..].iter().any(|&b| b != 0) {
            return Err(Invalid);
        }
        let body_len = len - 7 - body_start;
        plain.copy_within(body_start..body_start + body_len, 0);
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
