// SPDX-License-Identifier: MPL-2.0
//! Compatibility formats: no SFrame header, byte for byte what the systems our users
//! come from produce and expect. None of them is authenticated and none carries a
//! key id, so a decrypter holding several keys has to find the one that fits:
//!
//! * QQ TEA: the keys are tried in turn (the key in use first); a wrong key passes
//!   the check on the seven zero bytes at the end with probability 2^-56.
//! * PKCS#7-padded formats (SM4-ECB, AES-CBC): every key decrypts the last block
//!   only, and the key giving the longest valid padding wins, ties going to the key
//!   in use. A wrong key yields valid padding of length k with probability about
//!   256^-k, so it is picked over the right key, whose padding is p bytes long,
//!   with probability about 256^-p: 1/255 for buffers one byte short of a whole
//!   block, 2^-128 for buffers of whole blocks (padded with a full block), about
//!   1/4000 over buffers of random sizes. A false pick sends one garbled buffer
//!   downstream. With a single key there is nothing to pick: the buffer is
//!   decrypted and its padding checked.

pub mod aes_cbc;
mod pkcs7;
pub mod qq_tea;
pub mod sm4_ecb;

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

/// The index of the key to decrypt a PKCS#7-padded buffer with: `last_block`
/// gives the plaintext of the buffer's last block under a key; the longest valid
/// padding wins, ties going to the earlier key. `None` if no key gives valid
/// padding. A single key is picked without a look: the caller checks the padding
/// of what it decrypts anyway, and a separate pass over the last block costs as
/// much as a whole short buffer with SM4.
pub fn pick_by_padding<K>(keys: &[K], mut last_block: impl FnMut(&K) -> [u8; 16]) -> Option<usize> {
    if keys.len() == 1 {
        return Some(0);
    }
    let mut best: Option<(usize, usize)> = None;
    for (index, key) in keys.iter().enumerate() {
        let block = last_block(key);
        let Some(data_len) = pkcs7::unpadded_len(&block) else {
            continue;
        };
        let padding = 16 - data_len;
        if best.is_none_or(|(_, longest)| padding > longest) {
            best = Some((index, padding));
        }
    }
    best.map(|(index, _)| index)
}

#[cfg(test)]
mod tests {
    use super::sm4_ecb::Sm4Ecb;
    use super::*;
    use crate::test_util::noise;

    fn encrypt(key: &Sm4Ecb, data: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8; Sm4Ecb::encrypted_len(data.len())];
        let len = key.encrypt_into(data, &mut out);
        out.truncate(len);
        out
    }

    #[test]
    fn a_wrong_key_passes_padding_one_time_in_255() {
        // Buffers one byte short of a block: the right padding is a single 0x01, the
        // easiest for a wrong key to fake.
        let (right, wrong) = (Sm4Ecb::new(&[1; 16]), Sm4Ecb::new(&[2; 16]));
        let trials = 51_000;
        let passed = (0..trials)
            .filter(|&i| {
                let ciphertext = encrypt(&right, &noise(i, 15));
                pkcs7::unpadded_len(&wrong.decrypt_last_block(&ciphertext)).is_some()
            })
            .count();
        // Expected 51,000 / 255 = 200.
        assert!((140..=260).contains(&passed), "{passed}");
    }

    #[test]
    fn the_longest_padding_wins_over_the_key_in_use() {
        let (in_use, new) = (Sm4Ecb::new(&[1; 16]), Sm4Ecb::new(&[2; 16]));
        // A buffer under the new key whose last block, under the key in use, ends
        // in 0x01: valid padding, but shorter than the real two bytes.
        let ciphertext = (0..)
            .map(|seed| encrypt(&new, &noise(seed, 30)))
            .find(|ciphertext| in_use.decrypt_last_block(ciphertext)[15] == 1)
            .unwrap();
        let keys = [&in_use, &new];
        assert_eq!(
            pick_by_padding(&keys, |key| key.decrypt_last_block(&ciphertext)),
            Some(1)
        );
        // Between equals, the key in use goes first.
        let own = encrypt(&in_use, &noise(7, 30));
        assert_eq!(
            pick_by_padding(&[&in_use, &in_use], |key| key.decrypt_last_block(&own)),
            Some(0)
        );
    }

    #[test]
    fn picks_over_buffers_of_random_sizes_are_rarely_wrong() {
        let (in_use, new) = (Sm4Ecb::new(&[1; 16]), Sm4Ecb::new(&[2; 16]));
        let trials = 20_000;
        let wrong = (0..trials)
            .filter(|&i| {
                let size = (noise(i, 1)[0] % 64) as usize;
                let ciphertext = encrypt(&new, &noise(i + 1_000_000, size));
                let keys = [&in_use, &new];
                pick_by_padding(&keys, |key| key.decrypt_last_block(&ciphertext)) != Some(1)
            })
            .count();
        // About 1/4000 expected: 5 of 20,000.
        assert!(wrong <= 20, "{wrong}");
    }
}
