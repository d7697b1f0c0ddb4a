// SPDX-License-Identifier: MPL-2.0
//! The compatibility formats (no KID: a decrypter tries the keys it holds) and the
//! check that runs every decoding path side by side.
//!
//! The reference for trying several keys is the same buffer decrypted by one
//! decoder per key, each holding that key alone: by `crate::compat`'s rules, the
//! decoder holding all of them must pick the key whose padding is longest (the
//! shortest plaintext; ties to the earlier key), or for QQ TEA the first key that
//! decrypts; aesenc's unpadded stream uses only the first key.

use std::sync::LazyLock;

use streamcrypt::compat::Invalid;
use streamcrypt::compat::aes_cbc::CbcOptions;
use streamcrypt::format::{Format, ReadyKey, TrialDecoder};
use streamcrypt::keys::SecretKey;

/// The formats, by selector byte (modulo their number).
pub const FORMATS: usize = 10;
const CBC_IV: [u8; 16] = *b"fuzzing the iv..";

pub fn format(selector: u8) -> Format {
    match usize::from(selector) % FORMATS {
        0 => Format::Sm4Ecb,
        1 => Format::QqTea,
        n => {
            let bits = n - 2;
            Format::AesCbc {
                key_len: if bits & 4 != 0 { 32 } else { 16 },
                options: CbcOptions {
                    iv: CBC_IV,
                    serialize_iv: bits & 1 != 0,
                    per_buffer_padding: bits & 2 == 0,
                },
            }
        }
    }
}

/// Keys in each format's pool.
pub const POOL: usize = 4;

static POOLS: LazyLock<Vec<Vec<ReadyKey>>> = LazyLock::new(|| {
    (0..FORMATS as u8)
        .map(|selector| {
            let format = format(selector);
            let len = format.key_lens()[0];
            (0..POOL as u8)
                .map(|n| {
                    let bytes: Vec<u8> = (0..len as u8).map(|i| i.wrapping_mul(17) ^ n).collect();
                    ReadyKey::new(&format, u64::from(n), &SecretKey::from_bytes(&bytes))
                })
                .collect()
        })
        .collect()
});

/// The keys a decoder holds, in order: a count byte (1 to 4) and a byte of
/// 2-bit indices into the format's pool; repeats allowed.
pub fn keys(format_selector: u8, count: u8, indices: u8) -> Vec<&'static ReadyKey> {
    let pool = &POOLS[usize::from(format_selector) % FORMATS];
    (0..1 + usize::from(count) % POOL)
        .map(|k| &pool[usize::from(indices >> (2 * k)) % POOL])
        .collect()
}

/// The bytes [`keys`] reads as these pool indices.
pub fn key_bytes(indices: &[usize]) -> [u8; 2] {
    assert!((1..=POOL).contains(&indices.len()));
    let packed = indices
        .iter()
        .enumerate()
        .fold(0u8, |acc, (k, &index)| acc | (index as u8) << (2 * k));
    [(indices.len() - 1) as u8, packed]
}

/// What a decoder made of one buffer: the index of the key used, and the
/// plaintext.
pub type Decoded = Result<(usize, Vec<u8>), Invalid>;

fn decrypt(decoder: &mut TrialDecoder, keys: &[&ReadyKey], input: &[u8]) -> Decoded {
    let max = decoder.max_decrypted_len(input.len());
    let mut out = vec![0u8; max];
    let (index, len) = decoder.decrypt(keys, input, &mut out)?;
    assert!(index < keys.len(), "key {index} of {}", keys.len());
    assert!(len <= max, "{len} bytes written, {max} announced");
    Ok((index, out[..len].to_vec()))
}

/// A stream decrypted every way at once: by a decoder holding all the keys, by
/// another decrypting in place where the format can, and by one decoder per key.
pub struct TrialCheck {
    format: Format,
    keys: Vec<&'static ReadyKey>,
    all_keys: TrialDecoder,
    in_place: Option<TrialDecoder>,
    one_key_each: Vec<TrialDecoder>,
}

impl TrialCheck {
    pub fn new(format: Format, keys: Vec<&'static ReadyKey>) -> Self {
        let decoder = || TrialDecoder::new(&format).expect("a format without KID");
        Self {
            format,
            all_keys: decoder(),
            in_place: format.decrypts_per_buffer().then(decoder),
            one_key_each: keys.iter().map(|_| decoder()).collect(),
            keys,
        }
    }

    /// Decrypts the next buffer every way and checks that the results agree;
    /// returns what each single-key decoder made of it.
    pub fn buffer(&mut self, input: &[u8]) -> Vec<Decoded> {
        let each: Vec<Decoded> = self
            .one_key_each
            .iter_mut()
            .zip(&self.keys)
            .map(|(decoder, key)| decrypt(decoder, &[*key], input))
            .collect();
        let expected = self.expected(&each);
        let got = decrypt(&mut self.all_keys, &self.keys, input);
        assert_eq!(
            got,
            expected,
            "{:?}: trial over {} keys",
            self.format,
            self.keys.len()
        );
        if let Some(decoder) = &mut self.in_place {
            let mut data = input.to_vec();
            let in_place = decoder
                .decrypt_in_place(&self.keys, &mut data)
                .expect("decrypts_per_buffer says it does");
            let in_place = in_place.map(|(index, range)| (index, data[range].to_vec()));
            assert_eq!(
                in_place, got,
                "{:?}: in place and into disagree",
                self.format
            );
        }
        each
    }

    /// What the decoder holding all the keys must make of a buffer, given what
    /// each key alone makes of it.
    fn expected(&self, each: &[Decoded]) -> Decoded {
        let valid = || {
            each.iter()
                .enumerate()
                .filter_map(|(index, decoded)| Some((index, decoded.as_ref().ok()?.1.clone())))
        };
        if !self.format.decrypts_per_buffer() || each.len() == 1 {
            // Only the first key is used (the unpadded stream), or there is no choice.
            return each[0].clone();
        }
        match self.format {
            Format::QqTea => valid().next().ok_or(Invalid),
            // The longest padding is the shortest plaintext; `min_by_key` keeps the
            // first of equals.
            _ => valid()
                .min_by_key(|(_, plaintext)| plaintext.len())
                .ok_or(Invalid),
        }
    }

    /// At the end of the stream: what each single-key decoder still holds (only
    /// the unpadded stream holds anything), checked against the all-keys decoder,
    /// which finishes with the first key.
    pub fn finish(&mut self) -> Vec<Option<Result<Vec<u8>, Invalid>>> {
        let each: Vec<_> = self
            .one_key_each
            .iter_mut()
            .zip(&self.keys)
            .map(|(decoder, key)| decoder.finish(key))
            .collect();
        assert_eq!(self.all_keys.finish(self.keys[0]), each[0]);
        if self.format.decrypts_per_buffer() {
            assert!(each.iter().all(Option::is_none));
        }
        each
    }
}
