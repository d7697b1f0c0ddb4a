// SPDX-License-Identifier: MPL-2.0
//! SM4-ECB with PKCS#7 padding, each buffer on its own: the NERTC
//! "GMCryptoSM4ECB" style, byte-identical to `openssl enc -sm4-ecb`.
//!
//! Limits, inherent to ECB: equal 16-byte blocks under one key encrypt to equal
//! blocks, so patterns in the media show through; nothing is authenticated, and a
//! wrong key or corrupt data is noticed only when the padding comes out invalid
//! (missed with probability about 1/255).

use super::{Invalid, pkcs7};
use crate::cipher::sm4_fast::Sm4Fast;

/// Whether `ciphertext` can be SM4-ECB output at all: whole blocks, at least one.
pub fn is_whole_blocks(ciphertext: &[u8]) -> bool {
    !ciphertext.is_empty() && ciphertext.len().is_multiple_of(pkcs7::BLOCK)
}

pub struct Sm4Ecb {
    cipher: Sm4Fast,
}

impl Sm4Ecb {
    pub const KEY_LEN: usize = 16;

    /// # Panics
    /// If `key` is not 16 bytes.
    pub fn new(key: &[u8]) -> Self {
        Self {
            cipher: Sm4Fast::new(key.try_into().expect("16-byte SM4 key")),
        }
    }

    pub fn encrypted_len(plaintext_len: usize) -> usize {
        plaintext_len + pkcs7::pad_len(plaintext_len)
    }

    /// Writes the ciphertext of `plaintext` to the start of `out`; returns its length.
    ///
    /// # Panics
    /// If `out` is shorter than `encrypted_len(plaintext.len())`.
    pub fn encrypt_into(&self, plaintext: &[u8], out: &mut [u8]) -> usize {
        out[..plaintext.len()].copy_from_slice(plaintext);
        self.encrypt_in_place(out, plaintext.len())
    }

    /// `encrypt_into` where the plaintext lies: the first `len` bytes of `buf`,
    /// which has room for `encrypted_len(len)`.
    pub fn encrypt_in_place(&self, buf: &mut [u8], len: usize) -> usize {
        let len = pkcs7::pad(buf, len);
        // The whole buffer in one call: Sm4Fast runs many blocks side by side.
        self.cipher.encrypt_blocks(&mut buf[..len]);
        len
    }

    /// The plaintext of the last block of `ciphertext` (a whole number of blocks),
    /// to pick a key without decrypting everything.
    pub fn decrypt_last_block(&self, ciphertext: &[u8]) -> [u8; 16] {
        let mut block: [u8; 16] = ciphertext[ciphertext.len() - 16..].try_into().unwrap();
        self.cipher.decrypt_blocks(&mut block);
        block
    }

    /// Writes the plaintext of `ciphertext` to the start of `out` (which must hold
    /// `ciphertext.len()` bytes); returns its length.
    pub fn decrypt_into(&self, ciphertext: &[u8], out: &mut [u8]) -> Result<usize, Invalid> {
        let len = ciphertext.len();
        if !is_whole_blocks(ciphertext) || out.len() < len {
            return Err(Invalid);
        }
        let out = &mut out[..len];
        out.copy_from_slice(ciphertext);
        self.decrypt_in_place(out)
    }

    /// Decrypts `data` where it lies; returns the length of the plaintext at its
    /// start.
    pub fn decrypt_in_place(&self, data: &mut [u8]) -> Result<usize, Invalid> {
        if !is_whole_blocks(data) {
            return Err(Invalid);
        }
        self.cipher.decrypt_blocks(data);
        pkcs7::unpadded_len(data).ok_or(Invalid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::hex;

    const KEY: &str = "0123456789abcdeffedcba9876543210";

    #[test]
    fn gbt_32907_block_vector() {
        // GB/T 32907-2016, appendix A, example 1: one block, key and plaintext
        // equal. (Example 2, the block encrypted 1,000,000 times, takes seconds in
        // debug builds; cipher::sm4_fast's tests run it on every engine.)
        let cipher = &Sm4Ecb::new(&hex(KEY)).cipher;
        let mut block: [u8; 16] = hex(KEY).try_into().unwrap();
        cipher.encrypt_blocks(&mut block);
        assert_eq!(block.to_vec(), hex("681edf34d206965e86b3e94f536e4246"));
        cipher.decrypt_blocks(&mut block);
        assert_eq!(block.to_vec(), hex(KEY));
    }

    #[test]
    fn openssl_enc_vector() {
        // `echo -n hello | openssl enc -sm4-ecb -K 0123456789abcdeffedcba9876543210`
        let ecb = Sm4Ecb::new(&hex(KEY));
        let mut out = [0u8; 16];
        assert_eq!(ecb.encrypt_into(b"hello", &mut out), 16);
        assert_eq!(out.to_vec(), hex("db0669bd841e5450ec1652ecd42b6d60"));
        let mut plain = [0u8; 16];
        assert_eq!(ecb.decrypt_into(&out, &mut plain), Ok(5));
        assert_eq!(&plain[..5], b"hello");
    }

    #[test]
    fn round_trips_and_rejects() {
        let ecb = Sm4Ecb::new(&hex(KEY));
        for len in [0, 1, 15, 16, 17, 100] {
            let data: Vec<u8> = (0..len as u8).collect();
            let mut out = vec![0u8; Sm4Ecb::encrypted_len(len)];
            let n = ecb.encrypt_into(&data, &mut out);
            assert_eq!(n, out.len());
            let mut plain = vec![0u8; n];
            assert_eq!(ecb.decrypt_into(&out, &mut plain), Ok(len));
            assert_eq!(&plain[..len], &data[..]);
            assert_eq!(ecb.decrypt_into(&out[..n - 1], &mut plain), Err(Invalid));
        }
        assert_eq!(ecb.decrypt_into(&[], &mut []), Err(Invalid));
    }
}
