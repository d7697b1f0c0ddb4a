// SPDX-License-Identifier: MPL-2.0
//! Known-answer tests against the RFC 9605 vectors (tests/data/sframe-rfc9605.json,
//! a copy of ../shared/vectors/sframe-rfc9605.json) and our private suites' vectors
//! (tests/data/sframe-private-suites.json).

use super::*;

use crate::test_util::vectors as load;

fn vectors() -> serde_json::Value {
    load("sframe-rfc9605.json")
}

fn hex(value: &serde_json::Value) -> Vec<u8> {
    crate::test_util::hex(value.as_str().unwrap())
}

#[test]
fn header_vectors() {
    let vectors = vectors();
    let cases = vectors["header"].as_array().unwrap();
    assert_eq!(cases.len(), 289);
    for case in cases {
        let header = Header {
            kid: case["kid"].as_u64().unwrap(),
            ctr: case["ctr"].as_u64().unwrap(),
        };
        let encoded = hex(&case["encoded"]);
        let mut buf = [0u8; MAX_HEADER_LEN];
        let len = header.encode(&mut buf);
        assert_eq!(&buf[..len], &encoded[..], "{header:?}");
        assert_eq!(Header::decode(&encoded), Ok((header, encoded.len())));
    }
}

/// Checks every case of an `sframe` vector section end to end; returns how many.
fn check_sframe_vectors(vectors: &serde_json::Value) -> usize {
    let mut checked = 0;
    for case in vectors["sframe"].as_array().unwrap() {
        let id = case["cipher_suite"].as_u64().unwrap() as u16;
        let suite = CipherSuite::from_id(id).unwrap_or_else(|| panic!("suite {id:#x}"));
        let kid = case["kid"].as_u64().unwrap();
        let ctr = case["ctr"].as_u64().unwrap();
        let key = SframeKey::derive(suite, kid, &hex(&case["base_key"]));
        assert_eq!(
            key.nonce(ctr).to_vec(),
            hex(&case["nonce"]),
            "suite {id:#x}"
        );

        let metadata = hex(&case["metadata"]);
        let plaintext = hex(&case["pt"]);
        let expected = hex(&case["ct"]);
        let mut out = vec![0u8; key.encrypted_len(ctr, plaintext.len())];
        let len = key
            .encrypt_into(ctr, &metadata, &plaintext, &mut out)
            .unwrap();
        assert_eq!(&out[..len], &expected[..], "suite {id:#x}");

        let frame = ParsedFrame::parse(&expected).unwrap();
        assert_eq!(frame.header, Header { kid, ctr });
        let mut decrypted = vec![0u8; expected.len()];
        let len = key.decrypt_into(&frame, &metadata, &mut decrypted).unwrap();
        assert_eq!(&decrypted[..len], &plaintext[..], "suite {id:#x}");

        // The metadata is authenticated: without it the frame must not open.
        assert_eq!(
            key.decrypt_into(&frame, &[], &mut decrypted),
            Err(FrameError::Authentication)
        );
        checked += 1;
    }
    checked
}

#[test]
fn rfc_sframe_vectors() {
    // Suites 1-5.
    assert_eq!(check_sframe_vectors(&vectors()), 5);
}

#[test]
fn private_suite_vectors() {
    // Computed independently by scripts/private-suite-vectors.py.
    assert_eq!(check_sframe_vectors(&load("sframe-private-suites.json")), 2);
}

fn sealed(key: &SframeKey, ctr: u64, plaintext: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; key.encrypted_len(ctr, plaintext.len())];
    key.encrypt_into(ctr, &[], plaintext, &mut out).unwrap();
    out
}

fn open(key: &SframeKey, frame: &[u8]) -> Result<Vec<u8>, FrameError> {
    let parsed = ParsedFrame::parse(frame)?;
    let mut out = vec![0u8; frame.len()];
    let len = key.decrypt_into(&parsed, &[], &mut out)?;
    out.truncate(len);
    Ok(out)
}

#[test]
fn every_tampered_bit_is_detected() {
    for suite in CipherSuite::ALL {
        let key = SframeKey::derive(suite, 3, &[0x42; 16]);
        let frame = sealed(&key, 1234, b"a small media frame");
        assert_eq!(open(&key, &frame).unwrap(), b"a small media frame");
        for bit in 0..frame.len() * 8 {
            let mut altered = frame.clone();
            altered[bit / 8] ^= 1 << (bit % 8);
            // A flipped header bit may change the KID: the frame then does not
            // belong to this key, which the element finds out by lookup.
            if ParsedFrame::parse(&altered).is_ok_and(|f| f.header.kid != 3) {
                continue;
            }
            assert!(open(&key, &altered).is_err(), "bit {bit} undetected");
        }
    }
}

#[test]
fn truncation_and_wrong_key_are_detected() {
    let key = SframeKey::derive(CipherSuite::Aes128GcmSha256, 9, &[1; 16]);
    let other = SframeKey::derive(CipherSuite::Aes128GcmSha256, 9, &[2; 16]);
    let frame = sealed(&key, 77, &[0xab; 100]);
    assert_eq!(open(&other, &frame), Err(FrameError::Authentication));
    for len in 0..frame.len() {
        assert!(open(&key, &frame[..len]).is_err(), "length {len}");
    }
}

#[test]
fn empty_payload_round_trips() {
    let key = SframeKey::derive(CipherSuite::Aes256GcmSha512, 0, &[5; 32]);
    let frame = sealed(&key, 0, &[]);
    assert_eq!(frame.len(), 1 + 16);
    assert_eq!(open(&key, &frame).unwrap(), b"");
}

#[test]
fn output_too_small_is_an_error() {
    let key = SframeKey::derive(CipherSuite::Aes128GcmSha256, 0, &[5; 16]);
    let mut out = [0u8; 20];
    assert_eq!(
        key.encrypt_into(0, &[], &[0; 10], &mut out),
        Err(FrameError::OutputTooSmall {
            needed: 27,
            got: 20
        })
    );
}

#[test]
fn kid_and_key_both_enter_the_fingerprint() {
    let a = SframeKey::derive(CipherSuite::Aes128GcmSha256, 1, &[1; 16]);
    let b = SframeKey::derive(CipherSuite::Aes128GcmSha256, 2, &[1; 16]);
    let c = SframeKey::derive(CipherSuite::Aes128GcmSha256, 1, &[2; 16]);
    let a2 = SframeKey::derive(CipherSuite::Aes128GcmSha256, 1, &[1; 16]);
    assert_ne!(a.fingerprint(), b.fingerprint());
    assert_ne!(a.fingerprint(), c.fingerprint());
    assert_eq!(a.fingerprint(), a2.fingerprint());
}

#[test]
fn in_place_matches_the_copying_path() {
    for suite in CipherSuite::ALL {
        let key = SframeKey::derive(suite, 300, &[9; 16]);
        for len in [0, 1, 15, 16, 17, 1000] {
            let plaintext: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let copied = sealed(&key, 77, &plaintext);
            let mut payload = plaintext.clone();
            let parts = key.encrypt_in_place(77, &mut payload).unwrap();
            let in_place = [parts.header(), &payload, parts.tag()].concat();
            assert_eq!(in_place, copied, "{suite:?}, {len} bytes");

            let mut frame = in_place.clone();
            let range = key.decrypt_in_place(&mut frame).unwrap();
            assert_eq!(&frame[range], &plaintext[..]);
            let mut altered = in_place.clone();
            *altered.last_mut().unwrap() ^= 1;
            assert_eq!(
                key.decrypt_in_place(&mut altered),
                Err(FrameError::Authentication)
            );
            assert!(key.decrypt_in_place(&mut in_place.clone()[..5]).is_err());
        }
    }
}
