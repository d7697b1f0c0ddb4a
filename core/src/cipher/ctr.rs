// SPDX-License-Identifier: MPL-2.0
//! CTR mode with a 12-byte nonce and a 32-bit big-endian block counter (GCM's and
//! RFC 9605's AES-CTR), for any block cipher of the `cipher` traits.
//!
//! The counter blocks of a batch are written to a stack buffer and encrypted with
//! one `encrypt_blocks` call, which lets the cipher run its widest kernel (8 to 32
//! blocks side by side: VAES in the `aes` crate, our SM4 kernels); the `ctr` crate
//! hands the cipher a few blocks at a time. Each chunk of data is passed on right
//! after its keystream is ready, so a MAC can read it while it is in the L1 cache.

use aes::cipher::consts::U16;
use aes::cipher::{Block, BlockCipherEncrypt};
use zeroize::Zeroize;

pub const BLOCK_LEN: usize = 16;
pub const NONCE_LEN: usize = 12;
/// Counter blocks encrypted per call, 1 KiB of stack: what the `aes` crate's
/// VAES-512 kernel takes at once (it encrypts shorter runs a block at a time:
/// with 32, AES-CTR-HMAC ran 13% slower on long messages), two passes of the SM4
/// AVX2 kernel (4 sets of 8; SM4-GCM measured the same with 32, 64 and 128).
pub const BATCH: usize = 64;
pub const BATCH_LEN: usize = BATCH * BLOCK_LEN;

/// A stack buffer for counter blocks and keystream, wiped on drop. As a slice:
/// zeroize wipes `[u8]` with one fill, but `[u8; N]` a volatile byte at a time,
/// which with a 1 KiB buffer took a fifth of the time of a 64-byte message.
pub struct Keystream(pub [u8; BATCH_LEN]);

impl Keystream {
    pub fn new() -> Self {
        Keystream([0; BATCH_LEN])
    }
}

impl Drop for Keystream {
    fn drop(&mut self) {
        self.0.as_mut_slice().zeroize();
    }
}

/// Keystream bytes to compute for `len` bytes: whole sets of 8 blocks, which the
/// kernels encrypt where they lie (other lengths are padded to sets in a copy,
/// which costs more than the few extra counter blocks).
pub fn keystream_len(len: usize) -> usize {
    len.next_multiple_of(8 * BLOCK_LEN).min(BATCH_LEN)
}

/// Counter blocks nonce || counter (big-endian, incremented mod 2^32) over `blocks`.
pub fn fill_counters(blocks: &mut [u8], nonce: &[u8; NONCE_LEN], first: u32) {
    for (i, block) in blocks.as_chunks_mut::<BLOCK_LEN>().0.iter_mut().enumerate() {
        block[..NONCE_LEN].copy_from_slice(nonce);
        block[NONCE_LEN..].copy_from_slice(&first.wrapping_add(i as u32).to_be_bytes());
    }
}

/// Encrypts the counter blocks from `first` on over `blocks` (whole blocks).
pub fn encrypt_counters<C: BlockCipherEncrypt<BlockSize = U16>>(
    cipher: &C,
    blocks: &mut [u8],
    nonce: &[u8; NONCE_LEN],
    first: u32,
) {
    fill_counters(blocks, nonce, first);
    cipher.encrypt_blocks(Block::<C>::slice_as_chunks_mut(blocks).0);
}

/// `data[i] ^= keystream[i]` over `data` (`keystream` may be longer); a loop the
/// compiler vectorizes.
pub fn xor(data: &mut [u8], keystream: &[u8]) {
    for (byte, key) in data.iter_mut().zip(keystream) {
        *byte ^= key;
    }
}

/// Runs CTR over `data` with counters from `counter` on, a batch per cipher call:
/// `each` gets every chunk of data with its keystream and XORs them itself, so it
/// can read the chunk before (to authenticate ciphertext) or after (to
/// authenticate what it wrote). The caller keeps the counter from wrapping.
pub fn apply_keystream<C: BlockCipherEncrypt<BlockSize = U16>>(
    cipher: &C,
    nonce: &[u8; NONCE_LEN],
    mut counter: u32,
    data: &mut [u8],
    keystream: &mut Keystream,
    mut each: impl FnMut(&mut [u8], &[u8]),
) {
    for chunk in data.chunks_mut(BATCH_LEN) {
        let blocks = &mut keystream.0[..keystream_len(chunk.len())];
        encrypt_counters(cipher, blocks, nonce, counter);
        each(chunk, blocks);
        counter = counter.wrapping_add(BATCH as u32);
    }
}
