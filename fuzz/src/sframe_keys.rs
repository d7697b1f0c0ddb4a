// SPDX-License-Identifier: MPL-2.0
//! SFrame keys for the targets: each suite's keys derived once, for a few KIDs,
//! from two base keys: the one of the RFC 9605 vectors (and of our private-suite
//! vectors), so that the vectors are valid inputs, and one of the length the
//! elements take for the suite.

use std::sync::LazyLock;

use streamcrypt::sframe::{CipherSuite, FrameError, Header, ParsedFrame, SframeKey};

/// KIDs under the vectors' base key; 0x123 is the vectors' own.
pub const VECTOR_KIDS: [u64; 3] = [0x123, 0, 7];
/// KIDs under the suite-length base key: inline, one byte, five bytes, eight.
pub const OWN_KIDS: [u64; 4] = [1, 8, 1 << 40, u64::MAX];

pub fn suite(selector: u8) -> CipherSuite {
    CipherSuite::ALL[usize::from(selector) % CipherSuite::ALL.len()]
}

/// The selector byte [`suite`] reads as `suite`.
pub fn selector(suite: CipherSuite) -> u8 {
    let index = CipherSuite::ALL.iter().position(|s| *s == suite);
    index.expect("a known suite") as u8
}

/// The base key of the vectors: 00 01 02 ..., 24 bytes for AES-192, else 16.
pub fn vector_base_key(suite: CipherSuite) -> Vec<u8> {
    let len = if suite == CipherSuite::Aes192GcmSha256 {
        24
    } else {
        16
    };
    (0..len).collect()
}

/// A base key of the length the elements accept for `suite`.
pub fn own_base_key(suite: CipherSuite) -> Vec<u8> {
    (0..suite.base_key_lens()[0] as u8)
        .map(|i| i.wrapping_mul(29) ^ 0xa5)
        .collect()
}

static KEYS: LazyLock<Vec<Vec<SframeKey>>> = LazyLock::new(|| {
    CipherSuite::ALL
        .iter()
        .map(|&suite| {
            let vector_keys = VECTOR_KIDS
                .iter()
                .map(|&kid| SframeKey::derive(suite, kid, &vector_base_key(suite)));
            let own_keys = OWN_KIDS
                .iter()
                .map(|&kid| SframeKey::derive(suite, kid, &own_base_key(suite)));
            vector_keys.chain(own_keys).collect()
        })
        .collect()
});

/// The keys of `suite`, each for its KID.
pub fn keys(suite: CipherSuite) -> &'static [SframeKey] {
    &KEYS[usize::from(selector(suite))]
}

/// The key for `kid`, if there is one: a decrypter has no key for other KIDs.
pub fn key_for(suite: CipherSuite, kid: u64) -> Option<&'static SframeKey> {
    keys(suite).iter().find(|key| key.kid() == kid)
}

/// Opens `frame` with `key` where it lies, as a decrypter does.
fn open_in_place(key: &SframeKey, frame: &[u8]) -> Result<Vec<u8>, FrameError> {
    let mut data = frame.to_vec();
    let range = key.decrypt_in_place(&mut data)?;
    Ok(data[range].to_vec())
}

/// Opens `frame` both ways (into a new buffer, and in place when there is no
/// metadata, which only the first takes) with the suite's key for its KID and
/// checks that they agree; returns the outcome, `None` for a KID without key.
pub fn open_both_ways(
    suite: CipherSuite,
    metadata: &[u8],
    frame: &[u8],
) -> Option<Result<Vec<u8>, FrameError>> {
    let parsed = match ParsedFrame::parse(frame) {
        Ok(parsed) => parsed,
        Err(error) => {
            // No header: every key refuses it the same way, whatever its KID.
            assert_eq!(open_in_place(&keys(suite)[0], frame), Err(error));
            let _ = error.to_string();
            return Some(Err(error));
        }
    };
    let key = key_for(suite, parsed.header.kid)?;
    let (_, header_len) = Header::decode(frame).expect("parsed above");
    let ciphertext_len = frame.len() - header_len;

    let mut out = vec![0u8; ciphertext_len];
    let into = key
        .decrypt_into(&parsed, metadata, &mut out)
        .map(|len| out[..len].to_vec());
    match &into {
        Ok(plaintext) => assert_eq!(plaintext.len() + suite.tag_len(), ciphertext_len),
        Err(error) => {
            let _ = error.to_string();
        }
    }
    if metadata.is_empty() {
        assert_eq!(
            open_in_place(key, frame),
            into,
            "in place and into disagree"
        );
    }
    // An output shorter than the ciphertext is refused, never overrun.
    if ciphertext_len >= suite.tag_len() && ciphertext_len > 0 {
        let mut short = vec![0u8; ciphertext_len - 1];
        assert_eq!(
            key.decrypt_into(&parsed, metadata, &mut short),
            Err(FrameError::OutputTooSmall {
                needed: ciphertext_len,
                got: ciphertext_len - 1,
            })
        );
    }
    Some(into)
}

/// The `sframe_open` input: suite selector, metadata length, metadata, frame.
pub fn open_input(suite: CipherSuite, metadata: &[u8], frame: &[u8]) -> Vec<u8> {
    let mut data = vec![selector(suite), metadata.len() as u8];
    data.extend(metadata);
    data.extend(frame);
    data
}

/// Longest metadata `sframe_open` reads.
pub const MAX_METADATA: u8 = 64;
