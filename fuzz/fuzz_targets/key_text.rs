// SPDX-License-Identifier: MPL-2.0
//! Key files and key text as users write them: never a panic, hex decodes as a
//! plain reading of it says, and no error quotes the key (see
//! `streamcrypt_fuzz::key_errors`). Input: the text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use streamcrypt::keys::{KeyError, KeyText, SecretKey, parse_key_file};
use streamcrypt_fuzz::key_errors::{self, MODE, PATH, formats};

/// Hex as the README describes keys: either case, surrounding whitespace ignored.
fn reference_hex(text: &str) -> Option<Vec<u8>> {
    let digits = text.trim().as_bytes();
    if digits.is_empty()
        || !digits.len().is_multiple_of(2)
        || !digits.iter().all(u8::is_ascii_hexdigit)
    {
        return None;
    }
    let value = |d: u8| (d as char).to_digit(16).unwrap() as u8;
    Some(
        digits
            .chunks(2)
            .map(|p| value(p[0]) << 4 | value(p[1]))
            .collect(),
    )
}

fn check_hex(text: &str) {
    let parsed = SecretKey::from_hex(text);
    assert_eq!(
        parsed.as_ref().ok().map(SecretKey::as_bytes),
        reference_hex(text).as_deref()
    );
    let Err(error) = parsed else { return };
    key_errors::check(&error);
    let chars: Vec<char> = text.trim().chars().collect();
    match error {
        KeyError::OddLength { digits } => {
            assert!(digits % 2 == 1, "{digits} is not odd: {error}");
        }
        KeyError::NotHex { position } => {
            // Position `position` (from 1) is the first character that is not hex.
            assert!((1..=chars.len()).contains(&position));
            assert!(!chars[position - 1].is_ascii_hexdigit());
            assert!(chars[..position - 1].iter().all(char::is_ascii_hexdigit));
        }
        _ => {}
    }
}

/// The key as each format reads it: a key of an accepted length, or a clean
/// error, also as it names the key file's line.
fn check_key_text(text: &KeyText, line: usize) {
    for format in formats() {
        match format.parse_key(text, MODE) {
            Ok(key) => assert!(format.key_lens().contains(&key.len())),
            Err(error) => {
                key_errors::check(&error);
                key_errors::check(&error.in_key_file(PATH, line));
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    check_hex(text);
    check_key_text(&KeyText::new(text), 1);
    match parse_key_file(text, PATH) {
        Ok(lines) => {
            let count = text.lines().count();
            assert!(!lines.is_empty() && lines.len() <= count);
            assert!(lines.windows(2).all(|pair| pair[0].line < pair[1].line));
            for line in lines {
                assert!((1..=count).contains(&line.line));
                let key = line.key.as_str();
                assert!(!key.is_empty() && !key.contains(char::is_whitespace));
                check_key_text(&line.key, line.line);
            }
        }
        Err(error) => key_errors::check(&error),
    }
});
