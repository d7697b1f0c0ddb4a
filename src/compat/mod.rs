// SPDX-License-Identifier: MPL-2.0
//! Compatibility formats: no SFrame header, byte for byte what the systems our users
//! come from produce and expect. None of them is authenticated and none carries a
//! key id; a decrypter holding several keys tries them in turn and accepts the
//! first whose output passes the format's validity check (PKCS#7 padding, or QQ
//! TEA's seven zero bytes).

pub mod aes_cbc;
mod pkcs7;
pub mod qq_tea;
pub mod sm4_ecb;

use aes::cipher::Block;
use aes::cipher::array::Array;

/// The input does not decrypt to a valid message under any key tried: wrong key,
/// corrupt or truncated data, or not this format at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Invalid;

/// Runs `attempt` with each key in order until one succeeds; returns the index of
/// that key and what it returned.
pub fn first_valid<K, T>(
    keys: &[K],
    mut attempt: impl FnMut(&K) -> Result<T, Invalid>,
) -> Result<(usize, T), Invalid> {
    keys.iter()
        .enumerate()
        .find_map(|(index, key)| attempt(key).ok().map(|value| (index, value)))
        .ok_or(Invalid)
}

/// A byte slice whose length is a multiple of 16, as cipher blocks.
///
/// # Panics
/// If the length is not a multiple of 16.
fn blocks_mut<C: aes::cipher::BlockSizeUser<BlockSize = aes::cipher::consts::U16>>(
    data: &mut [u8],
) -> &mut [Block<C>] {
    let (blocks, rest) = Array::slice_as_chunks_mut(data);
    assert!(rest.is_empty(), "not a whole number of blocks");
    blocks
}
