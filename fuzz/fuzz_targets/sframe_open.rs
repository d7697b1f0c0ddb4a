// SPDX-License-Identifier: MPL-2.0
//! Opening arbitrary bytes as an SFrame of every suite, with keys for a few KIDs:
//! never a panic, and the copying and in-place paths give the same plaintext or
//! the same error. Input: suite selector, metadata length, metadata, frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use streamcrypt_fuzz::Input;
use streamcrypt_fuzz::sframe_keys::{MAX_METADATA, open_both_ways, suite};

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let suite = suite(input.byte());
    let metadata_len = input.byte() % MAX_METADATA;
    let metadata = input.bytes(usize::from(metadata_len));
    let _ = open_both_ways(suite, metadata, input.rest());
});
