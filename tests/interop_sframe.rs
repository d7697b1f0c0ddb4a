// SPDX-License-Identifier: MPL-2.0
//! Interoperability with an independent RFC 9605 implementation, the `sframe`
//! crate, in both directions, over several KIDs (inline and 1..8-byte) and
//! counters.

mod common;

use std::collections::HashMap;

use common::*;
use gst::prelude::*;
use sframe::CipherSuite;
use sframe::frame::{EncryptedFrame, MediaFrame, MonotonicCounter};
use sframe::key::{DecryptionKey, EncryptionKey};

const KIDS: [u64; 6] = [0, 7, 8, 0x1234, 0x00de_adbe_ef01, u64::MAX];

/// Each KID's key: 16 or 32 bytes, derived from the KID so that they all differ.
fn key_hex(kid: u64, len: usize) -> String {
    (0..len)
        .map(|i| {
            format!(
                "{:02x}",
                (kid as usize).wrapping_mul(13).wrapping_add(i * 29) as u8
            )
        })
        .collect()
}

fn key_bytes(kid: u64, len: usize) -> Vec<u8> {
    let hex = key_hex(kid, len);
    (0..len)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
        .collect()
}

/// Our modes for RFC 9605's five suites, all of which the `sframe` crate speaks
/// (with its RustCrypto backend).
fn modes() -> [(&'static str, CipherSuite, usize); 5] {
    [
        (
            "aes-128-ctr-hmac-80",
            CipherSuite::AesCtr128HmacSha256_80,
            16,
        ),
        (
            "aes-128-ctr-hmac-64",
            CipherSuite::AesCtr128HmacSha256_64,
            16,
        ),
        (
            "aes-128-ctr-hmac-32",
            CipherSuite::AesCtr128HmacSha256_32,
            16,
        ),
        ("aes-128-gcm", CipherSuite::AesGcm128Sha256, 16),
        ("aes-256-gcm", CipherSuite::AesGcm256Sha512, 32),
    ]
}

#[test]
fn ours_opened_by_the_sframe_crate() {
    for (mode, suite, key_len) in modes() {
        let enc = make(&format!(
            "streamencrypt mode={mode} key-id={} key={}",
            KIDS[0],
            key_hex(KIDS[0], key_len)
        ));
        let (mut enc, _) = harness(&enc);
        let element = enc.element().unwrap();
        let keys: HashMap<u64, DecryptionKey> = KIDS
            .iter()
            .map(|&kid| {
                let key = DecryptionKey::derive_from(suite, kid, key_bytes(kid, key_len)).unwrap();
                (kid, key)
            })
            .collect();
        let mut i = 0;
        for &kid in &KIDS {
            if kid != KIDS[0] {
                let accepted: bool =
                    element.emit_by_name("set-key", &[&kid, &key_hex(kid, key_len)]);
                assert!(accepted);
            }
            for _ in 0..5 {
                let frame = enc.push_and_pull(media_buffer(i)).unwrap();
                let bytes = frame.map_readable().unwrap().to_vec();
                let parsed = EncryptedFrame::try_new(bytes).unwrap();
                assert_eq!(parsed.header().key_id(), kid, "{mode}");
                let media = parsed
                    .decrypt(&keys)
                    .unwrap_or_else(|e| panic!("{mode} KID {kid}: {e}"));
                assert_eq!(media.payload(), payload(i), "{mode} KID {kid}");
                i += 1;
            }
        }
    }
}

#[test]
fn sframe_crate_opened_by_ours() {
    let starts = [0, 7, 8, 255, 1 << 40, u64::MAX - 10];
    for (mode, suite, key_len) in modes() {
        let dec = make(&format!("streamdecrypt mode={mode}"));
        for &kid in &KIDS {
            let added: bool = dec.emit_by_name("add-key", &[&kid, &key_hex(kid, key_len)]);
            assert!(added);
        }
        dec.set_property("max-keys", KIDS.len() as u32);
        let (mut dec, _) = harness(&dec);
        let mut i = 0;
        for (&kid, &start) in KIDS.iter().zip(&starts) {
            let key = EncryptionKey::derive_from(suite, kid, key_bytes(kid, key_len)).unwrap();
            let mut counter = MonotonicCounter::with_start_value(start, u64::MAX);
            for _ in 0..5 {
                let media = MediaFrame::try_new(&mut counter, payload(i)).unwrap();
                let frame = media.encrypt(&key).unwrap();
                let buffer = gst::Buffer::from_mut_slice(frame.as_ref().to_vec());
                let out = dec
                    .push_and_pull(buffer)
                    .unwrap_or_else(|e| panic!("{mode} KID {kid} counter from {start}: {e}"));
                assert_eq!(out.map_readable().unwrap().as_slice(), payload(i));
                i += 1;
            }
        }
        assert_eq!(stat(&dec.element().unwrap(), "buffers-out"), i);
    }
}
