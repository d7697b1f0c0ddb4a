// SPDX-License-Identifier: MPL-2.0
//! "Errors never contain the key text": every error about a key must read, its
//! numbers aside, as one of the messages the same code gives for probes that hold
//! no key at all. The templates are made by calling the code, so they follow its
//! wording.

use std::collections::HashSet;
use std::sync::LazyLock;

use streamcrypt::format::Format;
use streamcrypt::keys::{KeyError, KeyText, parse_key_file};
use streamcrypt::sframe::CipherSuite;

use crate::trial;

/// The path and mode name the targets give; no digits, so that they survive
/// `without_digits` whole.
pub const PATH: &str = "fuzzed.keys";
pub const MODE: &str = "fuzzed-mode";

/// One format per way of reading a key: the key lengths it takes, and whether
/// it also takes text (QQ TEA); the other formats read keys as one of these does.
pub fn formats() -> &'static [Format] {
    &FORMATS
}

static FORMATS: LazyLock<Vec<Format>> = LazyLock::new(|| {
    let sframe = CipherSuite::ALL.into_iter().map(Format::Sframe);
    let compat = (0..trial::FORMATS as u8).map(trial::format);
    let mut formats: Vec<Format> = Vec::new();
    for format in sframe.chain(compat) {
        let reads_keys_as = |f: &Format| (f.key_lens(), matches!(f, Format::QqTea));
        if !formats
            .iter()
            .any(|f| reads_keys_as(f) == reads_keys_as(&format))
        {
            formats.push(format);
        }
    }
    formats
});

pub fn without_digits(message: &str) -> String {
    message.chars().filter(|c| !c.is_ascii_digit()).collect()
}

/// Key texts that hold no key but make every error the parsers give.
const KEY_PROBES: [&str; 5] = ["", "0", "zz", "00", "0123456789abcdef0123456789abcdef00"];
const FILE_PROBES: [&str; 3] = ["", "1 2 3", "x 00"];

static TEMPLATES: LazyLock<HashSet<String>> = LazyLock::new(|| {
    let key_errors = formats().iter().flat_map(|format| {
        KEY_PROBES
            .iter()
            .filter_map(move |probe| format.parse_key(&KeyText::new(probe), MODE).err())
            .flat_map(|error| [error.clone(), error.in_key_file(PATH, 1)])
    });
    let file_errors = FILE_PROBES
        .iter()
        .filter_map(|probe| parse_key_file(probe, PATH).err());
    key_errors
        .chain(file_errors)
        .map(|error| without_digits(&error.to_string()))
        .collect()
});

/// Panics if `error` says anything but a template with numbers in it.
pub fn check(error: &KeyError) {
    let message = error.to_string();
    assert!(
        TEMPLATES.contains(&without_digits(&message)),
        "an error message that no probe gives (does it quote the key?): {message:?}"
    );
}
