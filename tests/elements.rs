// SPDX-License-Identifier: MPL-2.0
//! Harness tests of streamencrypt and streamdecrypt: round trips, keys, bad input.

mod common;

use common::*;
use gst::prelude::*;

/// Encrypts `count` media buffers and returns the SFrames.
fn encrypt_all(h: &mut gst_check::Harness, range: std::ops::Range<u64>) -> Vec<gst::Buffer> {
    range
        .map(|i| h.push_and_pull(media_buffer(i)).unwrap())
        .collect()
}

#[test]
fn round_trip_keeps_bytes_timestamps_and_flags() {
    let (mut enc, _) = encrypter(KEY_A, 5);
    let (mut dec, _) = decrypter(KEY_A, 5);
    for i in 0..200 {
        let frame = enc.push_and_pull(media_buffer(i)).unwrap();
        let plain = dec.push_and_pull(frame).unwrap();
        assert_is_media_buffer(&plain, i);
    }
}

#[test]
fn output_is_never_the_plaintext() {
    // Caps are ANY on both pads; a transform that went passthrough would forward the
    // input unchanged.
    let (mut enc, _) = encrypter(KEY_A, 1);
    for i in 0..50 {
        let frame = enc.push_and_pull(media_buffer(i)).unwrap();
        let plain = payload(i);
        let map = frame.map_readable().unwrap();
        // KID 1 fits the config byte; the counter (random start) takes 8 bytes;
        // 16-byte tag.
        assert_eq!(map.len(), plain.len() + 1 + 8 + 16, "buffer {i}");
        // No 16 bytes of the plaintext show in the output (shorter plaintexts
        // would match random bytes by chance).
        if plain.len() >= 16 {
            assert!(!map.windows(16).any(|w| w == &plain[..16]), "buffer {i}");
        }
    }
}

#[test]
fn aes_256_round_trip() {
    let enc = make(&format!(
        "streamencrypt mode=aes-256-gcm key={KEY_256} key-id=9"
    ));
    let dec = make(&format!(
        "streamdecrypt key-id=9 key={KEY_256} mode=aes-256-gcm"
    ));
    let (mut enc, _) = harness(&enc);
    let (mut dec, _) = harness(&dec);
    for i in 0..20 {
        let plain = dec
            .push_and_pull(enc.push_and_pull(media_buffer(i)).unwrap())
            .unwrap();
        assert_is_media_buffer(&plain, i);
    }
}

#[test]
fn key_and_key_id_order_does_not_matter() {
    for description in [
        format!("streamencrypt key={KEY_A} key-id=77"),
        format!("streamencrypt key-id=77 key={KEY_A}"),
    ] {
        let (mut h, _) = harness(&make(&description));
        let frame = h.push_and_pull(media_buffer(0)).unwrap();
        assert_eq!(sframe_header(&frame).0, 77);
        let (mut dec, _) = decrypter(KEY_A, 77);
        assert_is_media_buffer(&dec.push_and_pull(frame).unwrap(), 0);
    }
}

/// Starts `element` outside a harness and returns the error it posts.
fn start_error(element: &gst::Element) -> glib::Error {
    let bus = gst::Bus::new();
    element.set_bus(Some(&bus));
    assert!(element.set_state(gst::State::Paused).is_err());
    let _ = element.set_state(gst::State::Null);
    first_error(&drain(&bus)).expect("an error message")
}

#[test]
fn no_key_is_an_error_naming_the_property() {
    let err = start_error(&make("streamencrypt"));
    assert!(err.matches(gst::LibraryError::Settings));
    assert!(err.message().contains("`key`"), "{}", err.message());
    assert!(err.message().contains("`key-file`"), "{}", err.message());
}

#[test]
fn wrong_length_key_is_an_error_naming_the_lengths() {
    let long = "00".repeat(32);
    let err = start_error(&make(&format!("streamencrypt key={long}")));
    assert_eq!(
        err.message(),
        "Unusable `key`: mode aes-128-gcm needs a key of 16 bytes (32 hex digits); \
         this key has 32 bytes (64 hex digits)"
    );
    // The same key is right for AES-256, whichever property comes first.
    let enc = make(&format!("streamencrypt key={long} mode=aes-256-gcm"));
    let (mut h, _) = harness(&enc);
    assert!(h.push_and_pull(media_buffer(1)).is_ok());
}

#[test]
fn bad_hex_before_start_is_explained_at_start() {
    for element in ["streamencrypt", "streamdecrypt"] {
        let err = start_error(&make(&format!("{element} key=00112233xx")));
        assert!(err.matches(gst::LibraryError::Settings));
        assert_eq!(
            err.message(),
            "Invalid settings, not starting: `key`: the key is not hex: character 9 is not \
             one of 0-9, a-f, A-F",
            "{element}"
        );
    }
}

#[test]
fn decrypter_key_of_wrong_length_fails_at_start() {
    let err = start_error(&make(&format!(
        "streamdecrypt key={KEY_A} key-id=4 mode=aes-256-gcm"
    )));
    assert!(
        err.message()
            .starts_with("`key` for KID 4: mode aes-256-gcm needs a key of 32 bytes"),
        "{}",
        err.message()
    );
}

#[test]
fn refused_key_while_playing_keeps_the_previous_key() {
    let (mut enc, bus) = encrypter(KEY_A, 2);
    let element = enc.element().unwrap();
    let (mut dec, _) = decrypter(KEY_A, 2);
    for bad in ["zz", "0011", &"00".repeat(32), ""] {
        element.set_property("key", bad);
        let accepted: bool = element.emit_by_name("set-key", &[&3u64, &bad]);
        assert!(!accepted, "{bad:?}");
    }
    let refusals = warnings(&drain(&bus));
    assert_eq!(refusals.len(), 8, "{refusals:?}");
    assert!(
        refusals[2].contains("needs a key of 16 bytes"),
        "{refusals:?}"
    );
    let frame = enc.push_and_pull(media_buffer(1)).unwrap();
    assert_eq!(sframe_header(&frame).0, 2);
    assert_is_media_buffer(&dec.push_and_pull(frame).unwrap(), 1);
    assert_eq!(stat(&element, "key-switches"), 0);
}

#[test]
fn key_property_is_write_only() {
    init();
    for factory in ["streamencrypt", "streamdecrypt"] {
        let element = make(factory);
        let pspec = element.find_property("key").unwrap();
        assert!(pspec.flags().contains(glib::ParamFlags::WRITABLE));
        assert!(
            !pspec.flags().contains(glib::ParamFlags::READABLE),
            "{factory}"
        );
    }
}

#[test]
fn set_key_switches_key_and_kid_together_at_the_next_buffer() {
    let (mut enc, _) = encrypter(KEY_A, 1);
    let element = enc.element().unwrap();
    let first = enc.push_and_pull(media_buffer(0)).unwrap();
    let accepted: bool = element.emit_by_name("set-key", &[&2u64, &KEY_B]);
    assert!(accepted);
    assert_eq!(element.property::<u64>("key-id"), 2);
    let second = enc.push_and_pull(media_buffer(1)).unwrap();
    assert_eq!(sframe_header(&first).0, 1);
    assert_eq!(sframe_header(&second).0, 2);

    let dec = element_with_keys(&[(1, KEY_A), (2, KEY_B)]);
    let (mut dec, _) = harness(&dec);
    assert_is_media_buffer(&dec.push_and_pull(first).unwrap(), 0);
    assert_is_media_buffer(&dec.push_and_pull(second.clone()).unwrap(), 1);

    // The frame under KID 2 was sealed with KEY_B, not KEY_A.
    let (mut wrong, _) = decrypter(KEY_A, 2);
    wrong.push(second).unwrap();
    assert!(wrong.try_pull().is_none());
    assert_eq!(
        stats(&wrong.element().unwrap()).get::<u64>("dropped-auth"),
        Ok(1)
    );
    assert_eq!(stat(&element, "key-switches"), 1);
    assert_eq!(stat(&element, "kid"), 2);
}

#[test]
fn key_property_while_playing_uses_the_key_id_in_force() {
    let (mut enc, _) = encrypter(KEY_A, 1);
    let element = enc.element().unwrap();
    enc.push_and_pull(media_buffer(0)).unwrap();
    element.set_property("key-id", 8u64);
    // key-id alone changes nothing: KID 8 must never travel under KEY_A.
    assert_eq!(
        sframe_header(&enc.push_and_pull(media_buffer(1)).unwrap()).0,
        1
    );
    element.set_property("key", KEY_B);
    let frame = enc.push_and_pull(media_buffer(2)).unwrap();
    assert_eq!(sframe_header(&frame).0, 8);
    let (mut dec, _) = decrypter(KEY_B, 8);
    assert_is_media_buffer(&dec.push_and_pull(frame).unwrap(), 2);
}

#[test]
fn rotate_on_keyframe_waits_for_a_keyframe() {
    let enc = make(&format!(
        "streamencrypt key={KEY_A} key-id=1 rotate-on-keyframe=true"
    ));
    let (mut enc, _) = harness(&enc);
    let element = enc.element().unwrap();
    // media_buffer(i) is a keyframe when i % 10 == 0.
    enc.push_and_pull(media_buffer(0)).unwrap();
    let _: bool = element.emit_by_name("set-key", &[&2u64, &KEY_B]);
    let kids: Vec<u64> = encrypt_all(&mut enc, 1..12)
        .iter()
        .map(|f| sframe_header(f).0)
        .collect();
    assert_eq!(kids, [1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2]);
}

fn element_with_keys(keys: &[(u64, &str)]) -> gst::Element {
    let dec = make("streamdecrypt");
    for (kid, key) in keys {
        let added: bool = dec.emit_by_name("add-key", &[kid, key]);
        assert!(added);
    }
    dec
}

#[test]
fn decrypter_picks_the_key_by_kid() {
    let dec = element_with_keys(&[
        (10, KEY_A),
        (20, KEY_B),
        (30, "11223344556677881122334455667788"),
    ]);
    let (mut dec, bus) = harness(&dec);
    let (mut enc_a, _) = encrypter(KEY_A, 10);
    let (mut enc_b, _) = encrypter(KEY_B, 20);
    for i in 0..30 {
        let enc = if (i / 3) % 2 == 0 {
            &mut enc_a
        } else {
            &mut enc_b
        };
        let frame = enc.push_and_pull(media_buffer(i)).unwrap();
        assert_is_media_buffer(&dec.push_and_pull(frame).unwrap(), i);
    }
    let element = dec.element().unwrap();
    assert_eq!(stat(&element, "key-switches"), 9);
    let switches: Vec<(u64, u64, u64)> = drain(&bus)
        .iter()
        .filter_map(|m| match m.view() {
            gst::MessageView::Element(e) => {
                let s = e.structure().unwrap();
                assert_eq!(s.name(), "streamcrypt-key-switch");
                Some((
                    s.get("kid").unwrap(),
                    s.get("previous-kid").unwrap(),
                    s.get("pts").unwrap(),
                ))
            }
            _ => None,
        })
        .collect();
    assert_eq!(switches.len(), 9);
    assert_eq!(
        switches[0],
        (20, 10, gst::ClockTime::from_mseconds(60).nseconds())
    );
    assert_eq!(
        switches[1],
        (10, 20, gst::ClockTime::from_mseconds(120).nseconds())
    );
}

#[test]
fn remove_clear_and_max_keys() {
    let dec = element_with_keys(&[(1, KEY_A), (2, KEY_B)]);
    dec.set_property("max-keys", 2u32);
    let (mut dec, _) = harness(&dec);
    let element = dec.element().unwrap();
    let (mut enc1, _) = encrypter(KEY_A, 1);
    let (mut enc2, _) = encrypter(KEY_B, 2);
    let (mut enc3, _) = encrypter(KEY_A, 3);
    assert!(
        dec.push_and_pull(enc1.push_and_pull(media_buffer(0)).unwrap())
            .is_ok()
    );
    // KID 1 is in use; adding KID 3 pushes out KID 2, the oldest not in use.
    let _: bool = element.emit_by_name("add-key", &[&3u64, &KEY_A]);
    assert_eq!(stat_u32(&element, "keys"), 2);
    dec.push(enc2.push_and_pull(media_buffer(1)).unwrap())
        .unwrap();
    assert!(dec.try_pull().is_none());
    assert_eq!(stat(&element, "dropped-no-key"), 1);
    assert!(
        dec.push_and_pull(enc3.push_and_pull(media_buffer(2)).unwrap())
            .is_ok()
    );

    let removed: bool = element.emit_by_name("remove-key", &[&3u64]);
    assert!(removed);
    let removed: bool = element.emit_by_name("remove-key", &[&3u64]);
    assert!(!removed);
    dec.push(enc3.push_and_pull(media_buffer(3)).unwrap())
        .unwrap();
    assert!(dec.try_pull().is_none());

    element.emit_by_name::<()>("clear-keys", &[]);
    assert_eq!(stat_u32(&element, "keys"), 0);
    dec.push(enc1.push_and_pull(media_buffer(4)).unwrap())
        .unwrap();
    assert!(dec.try_pull().is_none());
    assert_eq!(stat(&element, "dropped-no-key"), 3);
}

/// Formats without a KID try every key the decrypter holds, and it keeps the
/// list from buffer to buffer: each change to the keys shows from the next
/// buffer on, whether the key was removed, replaced, added or all cleared.
#[test]
fn keys_tried_without_a_kid_follow_every_change() {
    init();
    let mode = "mode=sm4-ecb";
    let (mut enc_a, _) = harness(&make(&format!("streamencrypt {mode} key={KEY_A}")));
    let (mut enc_b, _) = harness(&make(&format!("streamencrypt {mode} key={KEY_B}")));
    let (mut dec, _) = harness(&make(&format!("streamdecrypt {mode} key={KEY_A} key-id=1")));
    let element = dec.element().unwrap();
    let mut i = 0;
    let mut opens = |enc: &mut gst_check::Harness, dec: &mut gst_check::Harness| {
        i += 1;
        dec.push(enc.push_and_pull(media_buffer(i)).unwrap())
            .unwrap();
        let out = dec.try_pull();
        if let Some(out) = &out {
            assert_is_media_buffer(out, i);
        }
        out.is_some()
    };
    assert!(opens(&mut enc_a, &mut dec));
    assert!(!opens(&mut enc_b, &mut dec));

    assert!(element.emit_by_name::<bool>("remove-key", &[&1u64]));
    assert!(!opens(&mut enc_a, &mut dec), "a removed key still decrypts");
    assert_eq!(stat(&element, "dropped-no-key"), 1);

    assert!(element.emit_by_name::<bool>("add-key", &[&2u64, &KEY_B]));
    assert!(opens(&mut enc_b, &mut dec));
    assert_eq!(stat(&element, "kid"), 2);
    assert!(!opens(&mut enc_a, &mut dec));

    // KID 2 replaced by KEY_A.
    assert!(element.emit_by_name::<bool>("add-key", &[&2u64, &KEY_A]));
    assert!(opens(&mut enc_a, &mut dec));
    assert!(
        !opens(&mut enc_b, &mut dec),
        "a replaced key still decrypts"
    );

    element.emit_by_name::<()>("clear-keys", &[]);
    assert!(!opens(&mut enc_a, &mut dec), "a cleared key still decrypts");
    assert_eq!(stat(&element, "dropped-no-key"), 2);
    assert_eq!(stat(&element, "dropped-auth"), 3);
}

fn stat_u32(element: &gst::Element, field: &str) -> u32 {
    stats(element).get::<u32>(field).unwrap()
}

#[test]
fn request_key_supplies_unknown_kids() {
    let dec = make("streamdecrypt");
    let asked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let asked_in_handler = asked.clone();
    dec.connect("request-key", false, move |args| {
        let kid = args[1].get::<u64>().unwrap();
        asked_in_handler.lock().unwrap().push(kid);
        let key = match kid {
            7 => Some(KEY_B.to_string()),
            8 => Some("not hex".to_string()),
            _ => None,
        };
        Some(key.to_value())
    });
    let (mut dec, bus) = harness(&dec);
    let element = dec.element().unwrap();
    let (mut enc7, _) = encrypter(KEY_B, 7);
    let (mut enc8, _) = encrypter(KEY_A, 8);
    let (mut enc9, _) = encrypter(KEY_A, 9);
    for i in 0..3 {
        assert_is_media_buffer(
            &dec.push_and_pull(enc7.push_and_pull(media_buffer(i)).unwrap())
                .unwrap(),
            i,
        );
    }
    dec.push(enc8.push_and_pull(media_buffer(3)).unwrap())
        .unwrap();
    dec.push(enc9.push_and_pull(media_buffer(4)).unwrap())
        .unwrap();
    assert!(dec.try_pull().is_none());
    // Asked once for KID 7 (then known), once each for 8 and 9.
    assert_eq!(*asked.lock().unwrap(), [7, 8, 9]);
    assert_eq!(stat(&element, "key-requests"), 3);
    assert_eq!(stat(&element, "dropped-no-key"), 2);
    let warnings = warnings(&drain(&bus));
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("request-key answer for KID 8 refused")),
        "{warnings:?}"
    );
}

#[test]
fn request_key_handler_may_call_add_key() {
    let dec = make("streamdecrypt");
    dec.connect("request-key", false, move |args| {
        let element = args[0].get::<gst::Element>().unwrap();
        let kid = args[1].get::<u64>().unwrap();
        // Re-entering the element from its own streaming thread must not deadlock.
        let _: bool = element.emit_by_name("add-key", &[&kid, &KEY_A]);
        let _ = element.property::<gst::Structure>("stats");
        Some(None::<String>.to_value())
    });
    let (mut dec, _) = harness(&dec);
    let (mut enc, _) = encrypter(KEY_A, 12);
    assert_is_media_buffer(
        &dec.push_and_pull(enc.push_and_pull(media_buffer(1)).unwrap())
            .unwrap(),
        1,
    );
}

/// Frames from `encrypter(KEY_A, 1)`, altered by `alter`.
fn altered_frames(alter: impl Fn(usize, &mut Vec<u8>)) -> Vec<gst::Buffer> {
    let (mut enc, _) = encrypter(KEY_A, 1);
    (0..20)
        .map(|i| {
            let frame = enc.push_and_pull(media_buffer(i)).unwrap();
            let mut bytes = frame.map_readable().unwrap().to_vec();
            alter(i as usize, &mut bytes);
            gst::Buffer::from_mut_slice(bytes)
        })
        .collect()
}

#[test]
fn bad_input_is_dropped_counted_and_warned_about_once() {
    let cases: Vec<(&str, Vec<gst::Buffer>, &str)> = vec![
        (
            "flipped bit",
            altered_frames(|i, b| {
                let n = b.len();
                b[9 + i % (n - 9)] ^= 0x10
            }),
            "dropped-auth",
        ),
        (
            "truncated",
            altered_frames(|i, b| b.truncate(b.len() - 1 - i)),
            "dropped-auth",
        ),
        (
            "empty",
            (0..20).map(|_| gst::Buffer::new()).collect(),
            "dropped-malformed",
        ),
        (
            "too short",
            altered_frames(|i, b| b.truncate(8 + i % 15)),
            "dropped-malformed",
        ),
        (
            "not SFrame",
            (0..20u64)
                .map(|i| {
                    // Unencrypted H.264 (Annex B): its first byte reads as an
                    // SFrame header with KID 0 and counter 0.
                    let mut bytes = vec![0, 0, 0, 1, 0x65];
                    bytes.extend([0x88; 16]);
                    bytes.extend(payload(i));
                    gst::Buffer::from_mut_slice(bytes)
                })
                .collect(),
            "dropped-auth",
        ),
    ];
    for (what, frames, counter) in cases {
        let dec = make(&format!("streamdecrypt key={KEY_A} key-id=1"));
        // "not SFrame" parses as KID 0: with a key for it, it reaches authentication.
        let _: bool = dec.emit_by_name("add-key", &[&0u64, &KEY_B]);
        let (mut dec, bus) = harness(&dec);
        let element = dec.element().unwrap();
        for frame in frames {
            assert_eq!(
                dec.push(frame),
                Ok(gst::FlowSuccess::Ok),
                "{what}: dropping is not an error"
            );
        }
        assert!(dec.try_pull().is_none(), "{what}: garbage went downstream");
        assert_eq!(stat(&element, counter), 20, "{what}");
        assert_eq!(stat(&element, "dropped"), 20, "{what}");
        assert_eq!(stat(&element, "buffers-out"), 0, "{what}");
        let messages = drain(&bus);
        let warned: Vec<_> = messages
            .iter()
            .filter_map(|m| match m.view() {
                gst::MessageView::Warning(w) => Some(w.error()),
                _ => None,
            })
            .collect();
        assert_eq!(
            warned.len(),
            1,
            "{what}: warnings are rate-limited: {warned:?}"
        );
        assert!(warned[0].matches(gst::StreamError::Decrypt), "{what}");
        assert_eq!(
            what == "not SFrame",
            warned[0]
                .message()
                .contains("the input does not look encrypted: it looks like an H.264"),
            "{what}: {}",
            warned[0].message()
        );
        // The valid frames that follow still decrypt.
        let (mut enc, _) = encrypter(KEY_A, 1);
        assert_is_media_buffer(
            &dec.push_and_pull(enc.push_and_pull(media_buffer(3)).unwrap())
                .unwrap(),
            3,
        );
    }
}

#[test]
fn wrong_key_is_dropped() {
    let (mut enc, _) = encrypter(KEY_A, 4);
    let (mut dec, bus) = decrypter(KEY_B, 4);
    for i in 0..10 {
        dec.push(enc.push_and_pull(media_buffer(i)).unwrap())
            .unwrap();
    }
    assert!(dec.try_pull().is_none());
    assert_eq!(stat(&dec.element().unwrap(), "dropped-auth"), 10);
    let warnings = warnings(&drain(&bus));
    assert_eq!(warnings.len(), 1);
    assert!(
        warnings[0].contains("KID 4: authentication failed"),
        "{warnings:?}"
    );
}

#[test]
fn on_error_fail_posts_decrypt_errors() {
    let (mut enc, _) = encrypter(KEY_A, 1);
    let frame = enc.push_and_pull(media_buffer(0)).unwrap();

    let dec = make(&format!("streamdecrypt key={KEY_B} key-id=1 on-error=fail"));
    let (mut dec, bus) = harness(&dec);
    assert_eq!(dec.push(frame.clone()), Err(gst::FlowError::Error));
    assert!(
        first_error(&drain(&bus))
            .unwrap()
            .matches(gst::StreamError::Decrypt)
    );

    let dec = make(&format!("streamdecrypt key={KEY_A} key-id=2 on-error=fail"));
    let (mut dec, bus) = harness(&dec);
    assert_eq!(dec.push(frame), Err(gst::FlowError::Error));
    let err = first_error(&drain(&bus)).unwrap();
    assert!(err.matches(gst::StreamError::DecryptNokey));
    assert_eq!(err.message(), "no key for KID 1 (request-key gave none)");
}

#[test]
fn replayed_buffers_are_dropped() {
    let (mut enc, _) = encrypter(KEY_A, 1);
    let frames = encrypt_all(&mut enc, 0..200);
    let (mut dec, bus) = decrypter(KEY_A, 1);
    let element = dec.element().unwrap();
    for (i, frame) in frames.iter().enumerate().take(150) {
        assert_is_media_buffer(&dec.push_and_pull(frame.clone()).unwrap(), i as u64);
    }
    // A duplicate within the window, and one older than the default window (128).
    dec.push(frames[149].clone()).unwrap();
    dec.push(frames[10].clone()).unwrap();
    assert!(dec.try_pull().is_none());
    assert_eq!(stat(&element, "dropped-replay"), 2);
    // Late but not replayed: frame 199 then 160 both pass.
    assert!(dec.push_and_pull(frames[199].clone()).is_ok());
    assert!(dec.push_and_pull(frames[160].clone()).is_ok());
    // Replays are normal on UDP: not worth a warning on the bus.
    assert!(warnings(&drain(&bus)).is_empty());

    let dec = make(&format!(
        "streamdecrypt key={KEY_A} key-id=1 replay-window=0"
    ));
    let (mut dec, _) = harness(&dec);
    for _ in 0..3 {
        assert!(dec.push_and_pull(frames[5].clone()).is_ok());
    }
}

#[test]
fn forged_counter_does_not_move_the_replay_window() {
    let (mut enc, _) = encrypter(KEY_A, 1);
    let frames = encrypt_all(&mut enc, 0..3);
    let (mut dec, _) = decrypter(KEY_A, 1);
    assert!(dec.push_and_pull(frames[0].clone()).is_ok());
    // A forged frame with a far-ahead counter: KID 1, 8-byte counter 2^63.
    let mut forged = vec![0x1f, 0x80, 0, 0, 0, 0, 0, 0, 0];
    forged.extend([0u8; 40]);
    dec.push(gst::Buffer::from_mut_slice(forged)).unwrap();
    assert!(dec.try_pull().is_none());
    assert!(dec.push_and_pull(frames[1].clone()).is_ok());
    assert!(dec.push_and_pull(frames[2].clone()).is_ok());
}

#[test]
fn restarting_with_the_same_key_never_reuses_a_counter() {
    let enc = make(&format!(
        "streamencrypt key={KEY_A} key-id=3 clear-keys-on-stop=false"
    ));
    let pipeline = AppPipeline::new(&[&enc]);
    let mut seen = std::collections::HashSet::new();
    let mut last_of_previous_run = 0;
    for run in 0..3 {
        let counters: Vec<u64> = pipeline
            .run((0..1500).map(media_buffer))
            .iter()
            .map(|f| sframe_header(f).1)
            .collect();
        assert_eq!(counters.len(), 1500);
        assert!(counters[0] > last_of_previous_run, "run {run} went back");
        for ctr in &counters {
            assert!(seen.insert(*ctr), "counter {ctr} reused in run {run}");
        }
        last_of_previous_run = *counters.last().unwrap();
    }
}

#[test]
fn stop_clears_keys_unless_asked_to_keep_them() {
    // Default: the key is wiped on stop, so a restart has no key.
    let enc = make(&format!("streamencrypt key={KEY_A}"));
    AppPipeline::new(&[&enc]).run([media_buffer(0)]);
    let err = start_error(&enc);
    assert!(err.message().starts_with("No key"));

    let dec = make(&format!("streamdecrypt key={KEY_A} key-id=1"));
    let _: bool = dec.emit_by_name("add-key", &[&2u64, &KEY_B]);
    let pipeline = AppPipeline::new(&[&dec]);
    pipeline.pipeline.set_state(gst::State::Paused).unwrap();
    assert_eq!(stat_u32(&dec, "keys"), 2);
    pipeline.stop();
    assert_eq!(stat_u32(&dec, "keys"), 0);

    // clear-keys-on-stop=false: both keep their keys across restarts.
    let enc = make(&format!(
        "streamencrypt key={KEY_B} key-id=2 clear-keys-on-stop=false"
    ));
    let dec = make(&format!(
        "streamdecrypt key={KEY_A} key-id=1 clear-keys-on-stop=false"
    ));
    let _: bool = dec.emit_by_name("add-key", &[&2u64, &KEY_B]);
    let pipeline = AppPipeline::new(&[&enc, &dec]);
    for _ in 0..2 {
        let out = pipeline.run((0..5).map(media_buffer));
        assert_eq!(out.len(), 5);
        assert_eq!(stat_u32(&dec, "keys"), 2);
    }
}

#[test]
fn key_files() {
    let dir = tempfile::tempdir().unwrap();
    let enc_file = dir.path().join("sender.key");
    std::fs::write(&enc_file, format!("# current key\n42 {KEY_B}\n")).unwrap();
    let dec_file = dir.path().join("receiver.keys");
    std::fs::write(&dec_file, format!("41 {KEY_A}\n42 {KEY_B}\n")).unwrap();

    let enc = make(&format!("streamencrypt key-file={}", enc_file.display()));
    let dec = make(&format!("streamdecrypt key-file={}", dec_file.display()));
    let (mut enc, _) = harness(&enc);
    let (mut dec, _) = harness(&dec);
    let frame = enc.push_and_pull(media_buffer(0)).unwrap();
    assert_eq!(sframe_header(&frame).0, 42);
    assert_is_media_buffer(&dec.push_and_pull(frame).unwrap(), 0);
    assert_eq!(stat_u32(&dec.element().unwrap(), "keys"), 2);

    // A bare HEX line takes key-id; setting key-file while playing switches to it.
    let next = dir.path().join("next.key");
    std::fs::write(&next, format!("{KEY_A}\n")).unwrap();
    let element = enc.element().unwrap();
    element.set_property("key-id", 41u64);
    element.set_property("key-file", next.to_str().unwrap());
    let frame = enc.push_and_pull(media_buffer(1)).unwrap();
    assert_eq!(sframe_header(&frame).0, 41);
    assert_is_media_buffer(&dec.push_and_pull(frame).unwrap(), 1);

    // A missing file at start is an error naming it.
    let err = start_error(&element_missing_key_file());
    assert!(err.matches(gst::ResourceError::OpenRead));
    assert!(
        err.message().starts_with("key file /nonexistent/k:"),
        "{}",
        err.message()
    );
}

fn element_missing_key_file() -> gst::Element {
    make("streamencrypt key-file=/nonexistent/k")
}

#[test]
fn stats_count_buffers_and_bytes() {
    let (mut enc, _) = encrypter(KEY_A, 6);
    let (mut dec, _) = decrypter(KEY_A, 6);
    let mut plain_bytes = 0;
    let mut sframe_bytes = 0;
    for i in 0..10 {
        plain_bytes += payload(i).len() as u64;
        let frame = enc.push_and_pull(media_buffer(i)).unwrap();
        sframe_bytes += frame.size() as u64;
        dec.push_and_pull(frame).unwrap();
    }
    let e = stats(&enc.element().unwrap());
    assert_eq!(e.name(), "streamencrypt-stats");
    assert_eq!(e.get::<u64>("buffers"), Ok(10));
    assert_eq!(e.get::<u64>("bytes-in"), Ok(plain_bytes));
    assert_eq!(e.get::<u64>("bytes-out"), Ok(sframe_bytes));
    assert_eq!(e.get::<u64>("kid"), Ok(6));
    let d = stats(&dec.element().unwrap());
    assert_eq!(d.name(), "streamdecrypt-stats");
    assert_eq!(d.get::<u64>("buffers-in"), Ok(10));
    assert_eq!(d.get::<u64>("buffers-out"), Ok(10));
    assert_eq!(d.get::<u64>("bytes-in"), Ok(sframe_bytes));
    assert_eq!(d.get::<u64>("bytes-out"), Ok(plain_bytes));
    assert_eq!(d.get::<u64>("dropped"), Ok(0));
    assert_eq!(d.get::<u64>("kid"), Ok(6));
}

#[test]
fn gap_buffers_keep_their_flag() {
    let (mut enc, _) = encrypter(KEY_A, 1);
    let (mut dec, _) = decrypter(KEY_A, 1);
    let mut gap = gst::Buffer::new();
    gap.get_mut().unwrap().set_flags(gst::BufferFlags::GAP);
    gap.get_mut().unwrap().set_pts(gst::ClockTime::SECOND);
    let frame = enc.push_and_pull(gap).unwrap();
    assert!(frame.flags().contains(gst::BufferFlags::GAP));
    let plain = dec.push_and_pull(frame).unwrap();
    assert!(plain.flags().contains(gst::BufferFlags::GAP));
    assert_eq!(plain.size(), 0);
    assert_eq!(plain.pts(), Some(gst::ClockTime::SECOND));
}

#[test]
fn tagged_metas_survive_the_round_trip() {
    // Opus decoders rely on the audio clipping meta (pre-skip, end trimming), which
    // carries the "audio" tag that BaseTransform would not copy by default.
    let (mut enc, _) = encrypter(KEY_A, 1);
    let (mut dec, _) = decrypter(KEY_A, 1);
    let mut buffer = media_buffer(0);
    gst_audio::AudioClippingMeta::add(
        buffer.get_mut().unwrap(),
        gst::format::Default::from_u64(312),
        gst::format::Default::from_u64(100),
    );
    let frame = enc.push_and_pull(buffer).unwrap();
    assert!(frame.meta::<gst_audio::AudioClippingMeta>().is_some());
    let plain = dec.push_and_pull(frame).unwrap();
    let meta = plain
        .meta::<gst_audio::AudioClippingMeta>()
        .expect("clipping meta");
    assert_eq!(
        meta.start(),
        gst::GenericFormattedValue::from(gst::format::Default::from_u64(312))
    );
    assert_eq!(
        meta.end(),
        gst::GenericFormattedValue::from(gst::format::Default::from_u64(100))
    );
    assert_is_media_buffer(&plain, 0);
}
