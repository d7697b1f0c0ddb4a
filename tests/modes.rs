// SPDX-License-Identifier: MPL-2.0
//! Every mode through the elements: round trips, key lengths, published vectors,
//! rotation in the modes without a KID, and bad input.

mod common;

use common::*;
use gst::prelude::*;

fn pair(mode: &str, key: &str, kid: u64) -> (gst_check::Harness, gst_check::Harness) {
    let enc = make(&format!("streamencrypt mode={mode} key={key} key-id={kid}"));
    let dec = make(&format!(
        "streamdecrypt mode={mode} key={key} key-id={kid} on-error=fail"
    ));
    (harness(&enc).0, harness(&dec).0)
}

#[test]
fn every_mode_round_trips() {
    for (mode, key_len, _) in MODES {
        let (mut enc, mut dec) = pair(mode, &key_of(key_len, 1), 3);
        for i in 0..40 {
            let frame = enc.push_and_pull(media_buffer(i)).unwrap();
            assert_ne!(
                frame.map_readable().unwrap().as_slice(),
                payload(i).as_slice(),
                "{mode}: plaintext went through"
            );
            let plain = dec.push_and_pull(frame).unwrap();
            assert_is_media_buffer(&plain, i);
        }
        assert_eq!(stat(&dec.element().unwrap(), "buffers-out"), 40, "{mode}");
    }
}

#[test]
fn every_mode_names_the_key_lengths_it_accepts() {
    for (mode, key_len, _) in MODES {
        let enc = make(&format!(
            "streamencrypt mode={mode} key={}",
            key_of(key_len + 8, 2)
        ));
        let bus = gst::Bus::new();
        enc.set_bus(Some(&bus));
        assert!(enc.set_state(gst::State::Paused).is_err(), "{mode}");
        let _ = enc.set_state(gst::State::Null);
        let err = first_error(&drain(&bus)).unwrap();
        let expected = format!(
            "mode {mode} needs a key of {key_len} bytes ({} hex digits)",
            2 * key_len
        );
        assert!(
            err.message().contains(&expected),
            "{mode}: {}",
            err.message()
        );
    }
}

#[test]
fn qq_tea_decrypts_the_tencent_vector() {
    // ../shared/vectors/README.md: the key as its users hold it (16 characters),
    // and the same key in hex.
    let ciphertext = "b7b2e52af7f5b1fbf37fc3d5546ac7569aecd01bbacf09bf";
    let bytes: Vec<u8> = (0..ciphertext.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&ciphertext[i..i + 2], 16).unwrap())
        .collect();
    let as_hex: String = b"0123456789ABCDEF"
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    for key in ["0123456789ABCDEF", as_hex.as_str()] {
        let dec = make(&format!("streamdecrypt mode=qq-tea key={key}"));
        let (mut dec, _) = harness(&dec);
        let out = dec
            .push_and_pull(gst::Buffer::from_slice(bytes.clone()))
            .unwrap();
        assert_eq!(out.map_readable().unwrap().as_slice(), b"MiraiGO Here");
    }
}

/// QQ TEA decryption written from the description in ../shared/vectors/README.md,
/// independently of core/src/compat/qq_tea.rs: whole-message byte arithmetic.
fn reference_tea_decrypt(key: &[u8; 16], ciphertext: &[u8]) -> Option<Vec<u8>> {
    let word = |b: &[u8], i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    let k: Vec<u32> = (0..4).map(|i| word(key, 4 * i)).collect();
    let tea_decrypt = |block: [u8; 8]| -> [u8; 8] {
        let (mut v0, mut v1) = (word(&block, 0), word(&block, 4));
        let mut sum: u32 = 0xE377_9B90; // 16 * 0x9E3779B9 mod 2^32
        for _ in 0..16 {
            v1 = v1.wrapping_sub(
                (v0 << 4).wrapping_add(k[2]) ^ v0.wrapping_add(sum) ^ (v0 >> 5).wrapping_add(k[3]),
            );
            v0 = v0.wrapping_sub(
                (v1 << 4).wrapping_add(k[0]) ^ v1.wrapping_add(sum) ^ (v1 >> 5).wrapping_add(k[1]),
            );
            sum = sum.wrapping_sub(0x9E37_79B9);
        }
        let mut out = [0u8; 8];
        out[..4].copy_from_slice(&v0.to_be_bytes());
        out[4..].copy_from_slice(&v1.to_be_bytes());
        out
    };
    if ciphertext.len() < 16 || !ciphertext.len().is_multiple_of(8) {
        return None;
    }
    let mut plain = Vec::new();
    let (mut prev_c, mut prev_x) = ([0u8; 8], [0u8; 8]);
    for c in ciphertext.chunks(8) {
        let mut input = [0u8; 8];
        for j in 0..8 {
            input[j] = c[j] ^ prev_x[j];
        }
        let x = tea_decrypt(input);
        for j in 0..8 {
            plain.push(x[j] ^ prev_c[j]);
        }
        prev_c.copy_from_slice(c);
        prev_x = x;
    }
    let pad = (plain[0] & 7) as usize;
    let tail = plain.len() - 7;
    if plain[tail..].iter().any(|&b| b != 0) || 3 + pad > tail {
        return None;
    }
    Some(plain[3 + pad..tail].to_vec())
}

#[test]
fn reference_tea_agrees_with_the_vector() {
    let ciphertext = [
        0xb7, 0xb2, 0xe5, 0x2a, 0xf7, 0xf5, 0xb1, 0xfb, 0xf3, 0x7f, 0xc3, 0xd5, 0x54, 0x6a, 0xc7,
        0x56, 0x9a, 0xec, 0xd0, 0x1b, 0xba, 0xcf, 0x09, 0xbf,
    ];
    assert_eq!(
        reference_tea_decrypt(b"0123456789ABCDEF", &ciphertext).as_deref(),
        Some(&b"MiraiGO Here"[..])
    );
}

#[test]
fn qq_tea_output_opens_with_an_independent_implementation() {
    let enc = make("streamencrypt mode=qq-tea key=fedcba9876543210");
    let (mut enc, _) = harness(&enc);
    let mut distinct = std::collections::HashSet::new();
    for i in 0..30 {
        let frame = enc.push_and_pull(media_buffer(i)).unwrap();
        let bytes = frame.map_readable().unwrap().to_vec();
        assert_eq!(
            reference_tea_decrypt(b"fedcba9876543210", &bytes),
            Some(payload(i)),
            "buffer {i}"
        );
        distinct.insert(bytes);
    }
    // Random framing: the same body never encrypts the same way twice.
    let again = enc.push_and_pull(media_buffer(0)).unwrap();
    assert!(distinct.insert(again.map_readable().unwrap().to_vec()));
}

#[test]
fn sm4_ecb_matches_the_published_vector() {
    let enc = make("streamencrypt mode=sm4-ecb key=0123456789abcdeffedcba9876543210");
    let (mut enc, _) = harness(&enc);
    let out = enc
        .push_and_pull(gst::Buffer::from_slice(b"hello"))
        .unwrap();
    assert_eq!(
        out.map_readable().unwrap().as_slice(),
        &[
            0xdb, 0x06, 0x69, 0xbd, 0x84, 0x1e, 0x54, 0x50, 0xec, 0x16, 0x52, 0xec, 0xd4, 0x2b,
            0x6d, 0x60
        ]
    );
}

/// Receiver first: the decrypter gets each new key, then the encrypter switches.
/// Without a KID the decrypter tries the key in use, then the others; nothing may
/// be lost or garbled across the switches.
#[test]
fn modes_without_kid_rotate_without_loss() {
    for (mode, key_len, carries_kid) in MODES {
        if carries_kid {
            continue;
        }
        let (mut enc, mut dec) = pair(mode, &key_of(key_len, 0), 0);
        let (enc_element, dec_element) = (enc.element().unwrap(), dec.element().unwrap());
        let mut i = 0;
        for kid in 1..=20u64 {
            let key = key_of(key_len, kid as u8);
            assert!(dec_element.emit_by_name::<bool>("add-key", &[&kid, &key]));
            // Some buffers under the old key while the decrypter holds both.
            for _ in 0..3 {
                let plain = dec.push_and_pull(enc.push_and_pull(media_buffer(i)).unwrap());
                assert_is_media_buffer(&plain.unwrap(), i);
                i += 1;
            }
            assert!(enc_element.emit_by_name::<bool>("set-key", &[&kid, &key]));
            for _ in 0..3 {
                let plain = dec.push_and_pull(enc.push_and_pull(media_buffer(i)).unwrap());
                assert_is_media_buffer(&plain.unwrap(), i);
                i += 1;
            }
        }
        let stats = stats(&dec_element);
        assert_eq!(stats.get::<u64>("key-switches"), Ok(20), "{mode}: {stats}");
        assert_eq!(stats.get::<u64>("kid"), Ok(20), "{mode}");
        assert_eq!(stats.get::<u64>("dropped"), Ok(0), "{mode}");
    }
}

#[test]
fn modes_without_kid_drop_what_no_key_opens() {
    for (mode, key_len, carries_kid) in MODES {
        if carries_kid {
            continue;
        }
        let enc = make(&format!(
            "streamencrypt mode={mode} key={}",
            key_of(key_len, 1)
        ));
        let (mut enc, _) = harness(&enc);
        let dec = make(&format!(
            "streamdecrypt mode={mode} key={}",
            key_of(key_len, 2)
        ));
        let (mut dec, bus) = harness(&dec);
        // Multi-block buffers: a wrong key passes the padding check with about
        // 1/255 probability per buffer, so the buffers here are fixed.
        for i in 0..10 {
            dec.push(enc.push_and_pull(media_buffer(i)).unwrap())
                .unwrap();
        }
        dec.push(gst::Buffer::from_slice([1u8, 2, 3])).unwrap();
        dec.push(gst::Buffer::new()).unwrap();
        assert!(dec.try_pull().is_none(), "{mode}: garbage went downstream");
        assert_eq!(stat(&dec.element().unwrap(), "dropped-auth"), 12, "{mode}");
        let warnings = warnings(&drain(&bus));
        assert_eq!(warnings.len(), 1, "{mode}: {warnings:?}");
        assert!(
            warnings[0].contains("no key (1 tried)"),
            "{mode}: {warnings:?}"
        );
    }
}

#[test]
fn aes_cbc_without_per_buffer_padding_round_trips_through_eos() {
    for serialize_iv in [false, true] {
        let options = format!(
            "mode=aes-256-cbc key={} iv=000102030405060708090a0b0c0d0e0f \
             serialize-iv={serialize_iv} per-buffer-padding=false",
            key_of(32, 9)
        );
        let enc = make(&format!("streamencrypt {options}"));
        let dec = make(&format!("streamdecrypt {options} on-error=fail"));
        let out = AppPipeline::new(&[&enc, &dec]).run((0..25).map(media_buffer));
        let plain: Vec<u8> = out
            .iter()
            .flat_map(|b| b.map_readable().unwrap().to_vec())
            .collect();
        let expected: Vec<u8> = (0..25).flat_map(payload).collect();
        assert_eq!(plain, expected, "serialize-iv={serialize_iv}");
    }
}

#[test]
fn iv_must_be_sixteen_bytes() {
    let enc = make("streamencrypt mode=aes-128-cbc");
    let bus = gst::Bus::new();
    enc.set_bus(Some(&bus));
    enc.set_property("iv", "00112233445566778899aabbccddeeff");
    enc.set_property("iv", "0011");
    assert_eq!(
        enc.property::<String>("iv"),
        "00112233445566778899aabbccddeeff"
    );
    let warnings = warnings(&drain(&bus));
    assert!(
        warnings[0].contains("the IV must be 32 hex digits (16 bytes), not 4 characters"),
        "{warnings:?}"
    );
    // Never silently zeros: the element refuses to start until the IV is right.
    enc.set_property("key", KEY_A);
    assert!(enc.set_state(gst::State::Paused).is_err());
    let err = first_error(&drain(&bus)).unwrap();
    assert!(err.matches(gst::LibraryError::Settings));
    assert!(err.message().contains("`iv`: the IV must be"), "{err}");
    let _ = enc.set_state(gst::State::Null);
    enc.set_property("iv", "000102030405060708090a0b0c0d0e0f");
    let (mut h, _) = harness(&enc);
    assert!(h.push_and_pull(media_buffer(1)).is_ok());
}

#[test]
fn sframe_request_key_is_not_asked_in_modes_without_kid() {
    let dec = make("streamdecrypt mode=sm4-ecb");
    dec.connect("request-key", false, |_| panic!("no KID to ask for"));
    let (mut dec, _) = harness(&dec);
    dec.push(gst::Buffer::from_slice([0u8; 32])).unwrap();
    assert_eq!(stat(&dec.element().unwrap(), "dropped-no-key"), 1);
}
