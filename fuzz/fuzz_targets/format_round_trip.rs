// SPDX-License-Identifier: MPL-2.0
//! `format::Encoder` then `format::TrialDecoder` for every compatibility format:
//! the decoder holding the encoder's key alone gives back every buffer (for
//! aesenc's unpadded stream, the whole stream), and the decoders holding 1 to 4
//! keys follow the trial rules. Input: format selector, key count, key indices,
//! which of those keys encrypts, then plaintext buffers (u16 length, bytes).
#![no_main]

use libfuzzer_sys::fuzz_target;
use streamcrypt::format::Encoder;
use streamcrypt_fuzz::trial::{TrialCheck, format, keys};
use streamcrypt_fuzz::{Input, buffers};

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let selector = input.byte();
    let (count, indices) = (input.byte(), input.byte());
    let format = format(selector);
    let keys = keys(selector, count, indices);
    let right = usize::from(input.byte()) % keys.len();
    let mut encoder = Encoder::new(&format, keys[right]);
    let mut check = TrialCheck::new(format, keys.clone());

    let mut plaintext = Vec::new();
    let mut decrypted = Vec::new();
    for buffer in buffers(input) {
        let max = format.max_encrypted_len(buffer.len());
        let mut out = vec![0u8; max];
        let len = encoder.encrypt(keys[right], buffer, &mut out).unwrap();
        assert!(
            len <= max,
            "{format:?}: {len} bytes written, {max} announced"
        );
        plaintext.extend_from_slice(buffer);
        // The element sends no empty buffers (the unpadded stream's first ones).
        if len == 0 {
            continue;
        }
        let mine = check.buffer(&out[..len]).swap_remove(right);
        let (_, mine) = mine.unwrap_or_else(|_| panic!("{format:?}: own key refused"));
        if format.decrypts_per_buffer() {
            assert_eq!(mine, buffer, "{format:?}");
        }
        decrypted.extend(mine);
    }
    if let Some(last) = encoder.finish(keys[right]) {
        let (_, mine) = check.buffer(&last).swap_remove(right).unwrap();
        decrypted.extend(mine);
    }
    if let Some(held) = check.finish().swap_remove(right) {
        decrypted.extend(held.unwrap());
    }
    assert_eq!(
        decrypted, plaintext,
        "{format:?}: the stream does not round-trip"
    );
});
