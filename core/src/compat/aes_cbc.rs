// SPDX-License-Identifier: MPL-2.0
//! AES-128/256-CBC in exactly the stream format of gst-plugins-bad's `aesenc` and
//! `aesdec`, so that either side interoperates with them.
//!
//! One CBC chain runs over the whole stream, starting from the `iv` property:
//! each buffer's first block is chained to the previous buffer's last ciphertext
//! block. With `serialize-iv`, the IV is written in front of the first buffer.
//! With `per-buffer-padding` (the default) every buffer is padded with PKCS#7 on
//! its own and comes out as one buffer; without it, the stream is one CBC message,
//! padded once at the end: output buffers do not line up with input buffers, and
//! the last block follows at EOS as a buffer of its own.
//!
//! One deliberate difference: without per-buffer padding, `aesenc` writes the IV
//! alone when the first buffer is shorter than a block, and `aesdec` aborts the
//! process on a first buffer of 16 bytes or less. We hold the IV back until there
//! is ciphertext to send with it (and the element sends no empty buffers); the
//! byte stream is the same.
//!
//! Limits: nothing is authenticated. A wrong key or corrupt data is noticed only
//! through invalid padding (missed with probability about 1/255), and only with
//! per-buffer padding; a lost buffer garbles the first block of the next one.

pub use crate::cipher::aes_cbc::AesCbc;

use std::ops::Range;

use super::{Invalid, pick_by_padding, pkcs7};

const BLOCK: usize = pkcs7::BLOCK;

/// The plaintext of the last block of `ciphertext` (whole blocks), chained from
/// `chain`: enough to check the padding.
fn decrypt_last_block(key: &AesCbc, chain: &[u8; BLOCK], ciphertext: &[u8]) -> [u8; BLOCK] {
    let len = ciphertext.len();
    let previous = if len > BLOCK {
        &ciphertext[len - 2 * BLOCK..len - BLOCK]
    } else {
        &chain[..]
    };
    let mut block = [0u8; BLOCK];
    key.decrypt(
        previous.try_into().expect("one block"),
        &ciphertext[len - BLOCK..],
        &mut block,
    );
    block
}

/// `aesenc`'s `iv`, `serialize-iv` and `per-buffer-padding`. The defaults are
/// `aesenc`'s: an all-zero IV (its IV when none is set), no serialized IV,
/// per-buffer padding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CbcOptions {
    pub iv: [u8; BLOCK],
    pub serialize_iv: bool,
    pub per_buffer_padding: bool,
}

impl Default for CbcOptions {
    fn default() -> Self {
        Self {
            iv: [0; BLOCK],
            serialize_iv: false,
            per_buffer_padding: true,
        }
    }
}

/// The encrypting side of one stream.
#[derive(Debug)]
pub struct CbcEncrypter {
    options: CbcOptions,
    chain: [u8; BLOCK],
    started: bool,
    /// Whether the IV has gone out (`serialize-iv`).
    iv_sent: bool,
    /// Without per-buffer padding: the bytes of a block not yet complete.
    pending: Vec<u8>,
}

impl CbcEncrypter {
    pub fn new(options: CbcOptions) -> Self {
        Self {
            options,
            chain: options.iv,
            started: false,
            iv_sent: !options.serialize_iv,
            pending: Vec::with_capacity(BLOCK),
        }
    }

    /// Most bytes `encrypt` writes for `input_len` bytes in.
    pub fn max_output_len(input_len: usize) -> usize {
        input_len + 2 * BLOCK
    }

    /// Writes the IV in front of the first ciphertext, if it is to be serialized
    /// and has not gone out yet; returns its length.
    fn write_iv(&mut self, out: &mut [u8]) -> usize {
        if self.iv_sent {
            return 0;
        }
        self.iv_sent = true;
        out[..BLOCK].copy_from_slice(&self.options.iv);
        BLOCK
    }

    /// Encrypts the next buffer of the stream into `out`; returns the length.
    pub fn encrypt(&mut self, key: &AesCbc, input: &[u8], out: &mut [u8]) -> usize {
        out[..input.len()].copy_from_slice(input);
        self.encrypt_in_place(key, out, input.len())
    }

    /// `encrypt` where the input lies: the next buffer of the stream is the first
    /// `len` bytes of `buf`, which has room for `max_output_len(len)`; the output
    /// starts at its start. Returns the output's length.
    pub fn encrypt_in_place(&mut self, key: &AesCbc, buf: &mut [u8], len: usize) -> usize {
        self.started = true;
        let total = self.pending.len() + len;
        if !self.options.per_buffer_padding && total < BLOCK {
            // Not a block yet: nothing goes out, not even the IV.
            self.pending.extend_from_slice(&buf[..len]);
            return 0;
        }
        // Without per-buffer padding, a block begun by earlier buffers goes first,
        // and the serialized IV before everything: the input moves up behind them
        // (only the first buffer, or in a stream whose buffers are not whole blocks).
        let iv_len = if self.iv_sent { 0 } else { BLOCK };
        let shift = iv_len + self.pending.len();
        buf.copy_within(..len, shift);
        let written = self.write_iv(buf);
        buf[written..shift].copy_from_slice(&self.pending);
        self.pending.clear();
        let data = &mut buf[written..];
        let whole = total / BLOCK * BLOCK;
        key.encrypt(&mut self.chain, &mut data[..whole]);
        if self.options.per_buffer_padding {
            let block = &mut data[whole..whole + BLOCK];
            pkcs7::pad(block, total - whole);
            key.encrypt(&mut self.chain, block);
            written + whole + BLOCK
        } else {
            self.pending.extend_from_slice(&data[whole..total]);
            written + whole
        }
    }

    /// At EOS without per-buffer padding: the final padded block, as `aesenc`
    /// pushes it (after the IV if that has not gone out); nothing if no buffer came.
    pub fn finish(&mut self, key: &AesCbc) -> Option<Vec<u8>> {
        if self.options.per_buffer_padding || !self.started {
            return None;
        }
        let mut out = [0u8; 2 * BLOCK];
        let written = self.write_iv(&mut out);
        let block = &mut out[written..written + BLOCK];
        block[..self.pending.len()].copy_from_slice(&self.pending);
        pkcs7::pad(block, self.pending.len());
        self.pending.clear();
        key.encrypt(&mut self.chain, block);
        Some(out[..written + BLOCK].to_vec())
    }
}

/// The decrypting side of one stream.
#[derive(Debug)]
pub struct CbcDecrypter {
    options: CbcOptions,
    chain: [u8; BLOCK],
    started: bool,
    /// Whether the IV is known: from `iv`, or read from the stream.
    iv_read: bool,
    /// Without per-buffer padding: bytes held back, the IV until complete, then
    /// the last whole block (it may be the padded one) and any incomplete block.
    held: Vec<u8>,
}

impl CbcDecrypter {
    pub fn new(options: CbcOptions) -> Self {
        Self {
            options,
            chain: options.iv,
            started: false,
            iv_read: !options.serialize_iv,
            held: Vec::new(),
        }
    }

    /// Whether every buffer carries its own padding (`per-buffer-padding`).
    pub fn per_buffer_padding(&self) -> bool {
        self.options.per_buffer_padding
    }

    /// Most bytes `decrypt` writes for `input_len` bytes in.
    pub fn max_output_len(&self, input_len: usize) -> usize {
        input_len + self.held.len()
    }

    /// Decrypts the next buffer of the stream into `out`. With per-buffer padding,
    /// the key is picked by its padding among `keys` (see `pick_by_padding`) and its
    /// index returned with the length; without, only the first key is used.
    pub fn decrypt<K>(
        &mut self,
        keys: &[K],
        aes: impl Fn(&K) -> &AesCbc,
        input: &[u8],
        out: &mut [u8],
    ) -> Result<(usize, usize), Invalid> {
        self.started = true;
        if self.options.per_buffer_padding {
            let (start, chain, index) = self.begin_padded_buffer(keys, &aes, input)?;
            let input = &input[start..];
            aes(&keys[index]).decrypt(&chain, input, out);
            let len = pkcs7::unpadded_len(&out[..input.len()]).ok_or(Invalid)?;
            Ok((index, len))
        } else {
            let key = aes(keys.first().ok_or(Invalid)?);
            self.held.extend_from_slice(input);
            // The IV is the first 16 bytes of the stream, however they arrive.
            if !self.iv_read {
                if self.held.len() < BLOCK {
                    return Ok((0, 0));
                }
                self.chain.copy_from_slice(&self.held[..BLOCK]);
                self.held.drain(..BLOCK);
                self.iv_read = true;
            }
            // Keep the last whole block back: only EOS tells whether it is the last.
            let ready = self.held.len().saturating_sub(1) / BLOCK * BLOCK;
            key.decrypt(&self.chain, &self.held[..ready], out);
            if ready > 0 {
                self.chain.copy_from_slice(&self.held[ready - BLOCK..ready]);
            }
            self.held.drain(..ready);
            Ok((0, ready))
        }
    }

    /// With per-buffer padding, `decrypt` where the buffer lies: returns the key's
    /// index and where in `data` the plaintext is.
    ///
    /// # Panics
    /// Without per-buffer padding (its output does not line up with its input).
    pub fn decrypt_in_place<K>(
        &mut self,
        keys: &[K],
        aes: impl Fn(&K) -> &AesCbc,
        data: &mut [u8],
    ) -> Result<(usize, Range<usize>), Invalid> {
        assert!(
            self.options.per_buffer_padding,
            "in place needs per-buffer padding"
        );
        self.started = true;
        let (start, chain, index) = self.begin_padded_buffer(keys, &aes, data)?;
        let ciphertext = &mut data[start..];
        aes(&keys[index]).decrypt_in_place(&chain, ciphertext);
        let len = pkcs7::unpadded_len(ciphertext).ok_or(Invalid)?;
        Ok((index, start..start + len))
    }

    /// The checks before a buffer with its own padding is decrypted: takes the
    /// IV if the buffer starts with it, moves the chain on to the buffer's last
    /// block, checks the length and picks the key. Returns where the ciphertext
    /// starts, the chain to decrypt it from and the key's index.
    fn begin_padded_buffer<K>(
        &mut self,
        keys: &[K],
        aes: &impl Fn(&K) -> &AesCbc,
        input: &[u8],
    ) -> Result<(usize, [u8; BLOCK], usize), Invalid> {
        let mut start = 0;
        // aesenc sends the IV with the first buffer's ciphertext.
        if !self.iv_read {
            self.iv_read = true;
            let iv = input.get(..BLOCK).ok_or(Invalid)?;
            self.chain.copy_from_slice(iv);
            start = BLOCK;
        }
        let ciphertext = &input[start..];
        let chain = self.chain;
        // Whatever the outcome, the next buffer chains to this one's last block.
        if let Some(last) = ciphertext.len().checked_sub(BLOCK) {
            self.chain.copy_from_slice(&ciphertext[last..]);
        }
        if ciphertext.is_empty() || !ciphertext.len().is_multiple_of(BLOCK) {
            return Err(Invalid);
        }
        let index = pick_by_padding(keys, |key| decrypt_last_block(aes(key), &chain, ciphertext))
            .ok_or(Invalid)?;
        Ok((start, chain, index))
    }

    /// At EOS without per-buffer padding: the plaintext of the held-back last
    /// block, padding removed (`None` if there is nothing to finish).
    pub fn finish(&mut self, key: &AesCbc) -> Option<Result<Vec<u8>, Invalid>> {
        if self.options.per_buffer_padding || !self.started {
            return None;
        }
        let held = std::mem::take(&mut self.held);
        if held.len() != BLOCK {
            return Some(Err(Invalid));
        }
        let mut out = [0u8; BLOCK];
        key.decrypt(&self.chain, &held, &mut out);
        Some(
            pkcs7::unpadded_len(&out)
                .map(|len| out[..len].to_vec())
                .ok_or(Invalid),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(serialize_iv: bool, per_buffer_padding: bool) -> CbcOptions {
        CbcOptions {
            iv: *b"0123456789abcdef",
            serialize_iv,
            per_buffer_padding,
        }
    }

    /// Buffers of awkward sizes.
    fn buffers() -> Vec<Vec<u8>> {
        [0usize, 1, 15, 16, 17, 33, 100, 5]
            .iter()
            .enumerate()
            .map(|(i, &len)| (0..len).map(|j| (i * 31 + j) as u8).collect())
            .collect()
    }

    fn encrypt_stream(key: &AesCbc, options: CbcOptions) -> Vec<Vec<u8>> {
        let mut enc = CbcEncrypter::new(options);
        let mut out: Vec<Vec<u8>> = buffers()
            .iter()
            .map(|input| {
                let mut buf = vec![0u8; CbcEncrypter::max_output_len(input.len())];
                let len = enc.encrypt(key, input, &mut buf);
                buf.truncate(len);
                buf
            })
            .collect();
        out.extend(enc.finish(key));
        out
    }

    #[test]
    fn one_chain_over_the_stream() {
        // Per-buffer padding, concatenated, equals one CBC run over the padded
        // buffers: the chain carries over.
        let key = AesCbc::new(&[7u8; 16]);
        let stream: Vec<u8> = encrypt_stream(&key, options(false, true)).concat();
        let mut padded = Vec::new();
        for buffer in buffers() {
            let start = padded.len();
            padded.extend(&buffer);
            padded.resize(start + buffer.len() + pkcs7::pad_len(buffer.len()), 0);
            pkcs7::pad(&mut padded[start..], buffer.len());
        }
        let mut chain = *b"0123456789abcdef";
        key.encrypt(&mut chain, &mut padded);
        assert_eq!(stream, padded);
    }

    #[test]
    fn every_option_round_trips() {
        for key in [AesCbc::new(&[1u8; 16]), AesCbc::new(&[2u8; 32])] {
            for serialize_iv in [false, true] {
                for per_buffer_padding in [false, true] {
                    let options = options(serialize_iv, per_buffer_padding);
                    let encrypted = encrypt_stream(&key, options);
                    let mut dec = CbcDecrypter::new(options);
                    let mut plain = Vec::new();
                    for buffer in &encrypted {
                        let mut out = vec![0u8; dec.max_output_len(buffer.len())];
                        match dec.decrypt(&[&key], |key| key, buffer, &mut out) {
                            Ok((0, len)) => plain.push(out[..len].to_vec()),
                            other => panic!("{options:?}: {other:?}"),
                        }
                    }
                    if let Some(last) = dec.finish(&key) {
                        plain.push(last.unwrap());
                    }
                    if per_buffer_padding {
                        assert_eq!(plain, buffers(), "{options:?}");
                    } else {
                        assert_eq!(plain.concat(), buffers().concat(), "{options:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn in_place_decrypts_as_into_a_new_buffer() {
        for serialize_iv in [false, true] {
            let key = AesCbc::new(&[3u8; 32]);
            let options = options(serialize_iv, true);
            let encrypted = encrypt_stream(&key, options);
            let mut dec = CbcDecrypter::new(options);
            for (buffer, plain) in encrypted.iter().zip(buffers()) {
                let mut data = buffer.clone();
                let (index, range) = dec.decrypt_in_place(&[&key], |key| key, &mut data).unwrap();
                assert_eq!(index, 0);
                assert_eq!(data[range], plain[..], "serialize-iv={serialize_iv}");
            }
        }
    }

    #[test]
    fn the_iv_waits_for_ciphertext() {
        // aesdec aborts on a first buffer of one block or less.
        let key = AesCbc::new(&[1u8; 16]);
        let mut enc = CbcEncrypter::new(options(true, false));
        let mut out = [0u8; 64];
        assert_eq!(enc.encrypt(&key, &[1; 5], &mut out), 0);
        assert_eq!(enc.encrypt(&key, &[2; 20], &mut out), 32);
        assert_eq!(&out[..16], b"0123456789abcdef");
        let mut short = CbcEncrypter::new(options(true, false));
        assert_eq!(short.encrypt(&key, &[1; 5], &mut out), 0);
        assert_eq!(short.finish(&key).unwrap().len(), 32);
    }

    #[test]
    fn trial_picks_the_key_whose_padding_holds() {
        let old = AesCbc::new(&[1u8; 16]);
        let new = AesCbc::new(&[2u8; 16]);
        let mut enc = CbcEncrypter::new(options(false, true));
        let mut dec = CbcDecrypter::new(options(false, true));
        for (i, key) in [&old, &old, &new, &new, &old].into_iter().enumerate() {
            let input = vec![i as u8; 20 + i];
            let mut buf = vec![0u8; 64];
            let len = enc.encrypt(key, &input, &mut buf);
            let mut out = vec![0u8; 64];
            let (index, n) = dec
                .decrypt(&[&old, &new], |key| key, &buf[..len], &mut out)
                .unwrap();
            assert_eq!(index, usize::from(std::ptr::eq(key, &new)), "buffer {i}");
            assert_eq!(&out[..n], &input[..]);
        }
    }

    #[test]
    fn bad_input_is_invalid_and_the_stream_recovers() {
        let key = AesCbc::new(&[1u8; 16]);
        let encrypted = encrypt_stream(&key, options(false, true));
        let mut dec = CbcDecrypter::new(options(false, true));
        let mut out = vec![0u8; 256];
        assert!(
            dec.decrypt(&[&key], |key| key, &encrypted[0], &mut out)
                .is_ok()
        );
        // Buffer 1 cut short: invalid. In CBC the damage reaches the first block
        // of buffer 2 and no further: buffer 3 decrypts again.
        assert_eq!(
            dec.decrypt(&[&key], |key| key, &encrypted[1][..15], &mut out),
            Err(Invalid)
        );
        let _ = dec.decrypt(&[&key], |key| key, &encrypted[2], &mut out);
        let wrong = AesCbc::new(&[9u8; 16]);
        let (index, n) = dec
            .decrypt(&[&wrong, &key], |key| key, &encrypted[3], &mut out)
            .unwrap();
        assert_eq!(index, 1);
        assert_eq!(&out[..n], &buffers()[3][..]);
    }
}
