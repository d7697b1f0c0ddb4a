// SPDX-License-Identifier: MPL-2.0
//! Every compatibility decoder on arbitrary buffers with 1 to 4 keys: the decoder
//! holding all the keys, the in-place path and one decoder per key agree (see
//! `streamcrypt_fuzz::trial`). Input: format selector, key count, key indices,
//! then buffers (u16 length, bytes).
#![no_main]

use libfuzzer_sys::fuzz_target;
use streamcrypt_fuzz::trial::{TrialCheck, format, keys};
use streamcrypt_fuzz::{Input, buffers};

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let selector = input.byte();
    let (count, indices) = (input.byte(), input.byte());
    let mut check = TrialCheck::new(format(selector), keys(selector, count, indices));
    for buffer in buffers(input) {
        check.buffer(buffer);
    }
    check.finish();
});
