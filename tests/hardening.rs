// SPDX-License-Identifier: MPL-2.0
//! Mistakes and attacks users meet first: re-keying that must not reopen the
//! replay window, forged KIDs that must not flood `request-key` or push out
//! keys in use, plaintext fed to the decrypter, settings changed at the wrong
//! time, drops that must be summed up, key files that say which line is wrong,
//! and short tags that must stop being tried.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use common::*;
use gst::prelude::*;
use gststreamcrypt::key_requests;

fn encrypt_all(h: &mut gst_check::Harness, range: std::ops::Range<u64>) -> Vec<gst::Buffer> {
    range
        .map(|i| h.push_and_pull(media_buffer(i)).unwrap())
        .collect()
}

fn push_eos(h: &mut gst_check::Harness) {
    assert!(h.push_event(gst::event::Eos::new()));
}

/// A key file in `dir` holding `text`, readable by its owner only.
fn key_file(dir: &std::path::Path, name: &str, text: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

#[test]
fn the_same_key_again_keeps_the_replay_window() {
    let dir = tempfile::tempdir().unwrap();
    let same_key_file = key_file(dir.path(), "keys", &format!("1 {KEY_A}\n"));
    let (mut enc, _) = encrypter(KEY_A, 1);
    let frames = encrypt_all(&mut enc, 0..10);
    let (mut dec, _) = decrypter(KEY_A, 1);
    let element = dec.element().unwrap();
    for (i, frame) in frames.iter().enumerate() {
        assert_is_media_buffer(&dec.push_and_pull(frame.clone()).unwrap(), i as u64);
    }
    // The README's rotation recipe sets the key file again; applications
    // repeat add-key or `key`. None of it may reopen the window.
    type AddAgain<'a> = (&'a str, Box<dyn Fn() + 'a>);
    let again: [AddAgain; 3] = [
        (
            "add-key",
            Box::new(|| assert!(element.emit_by_name::<bool>("add-key", &[&1u64, &KEY_A]))),
        ),
        (
            "key",
            Box::new(|| {
                element.set_property("key-id", 1u64);
                element.set_property("key", KEY_A);
            }),
        ),
        (
            "key-file",
            Box::new(|| element.set_property("key-file", &same_key_file)),
        ),
    ];
    for (round, (how, add_again)) in again.iter().enumerate() {
        add_again();
        for frame in &frames {
            dec.push(frame.clone()).unwrap();
        }
        assert!(dec.try_pull().is_none(), "{how}: a replay went through");
        assert_eq!(
            stat(&element, "dropped-replay"),
            10 * (round as u64 + 1),
            "{how}"
        );
    }
    // A different key for the KID starts afresh.
    assert!(element.emit_by_name::<bool>("add-key", &[&1u64, &KEY_B]));
    let (mut enc_b, _) = encrypter(KEY_B, 1);
    for i in 10..15 {
        let frame = enc_b.push_and_pull(media_buffer(i)).unwrap();
        assert_is_media_buffer(&dec.push_and_pull(frame).unwrap(), i);
    }
}

/// A frame under `kid` with counter `ctr` that no key opens: a valid header
/// and random bytes.
fn forged_frame(kid: u64, ctr: u64) -> gst::Buffer {
    let seed = ctr;
    let mut bytes = vec![0u8; 64];
    let header = gststreamcrypt::sframe::Header { kid, ctr };
    let len = header.encode(&mut bytes);
    for (i, byte) in bytes[len..].iter_mut().enumerate() {
        *byte = (seed.wrapping_mul(31).wrapping_add(i as u64 * 0x5851_f42d) >> 7) as u8;
    }
    gst::Buffer::from_mut_slice(bytes)
}

#[test]
fn forged_kids_neither_flood_request_key_nor_push_out_keys_in_use() {
    let dec = make(&format!("streamdecrypt max-keys=2 key={KEY_A} key-id=1"));
    assert!(dec.emit_by_name::<bool>("add-key", &[&2u64, &KEY_B]));
    let asked = Arc::new(Mutex::new(Vec::new()));
    let asked_in_handler = asked.clone();
    // A key service that answers for any KID, as a derived-key service does.
    dec.connect("request-key", false, move |args| {
        let kid = args[1].get::<u64>().unwrap();
        asked_in_handler.lock().unwrap().push(kid);
        Some(Some(format!("{:032x}", kid.wrapping_mul(0x1234_5678_9abc_def1))).to_value())
    });
    let (mut dec, _) = harness(&dec);
    let element = dec.element().unwrap();
    let (mut enc1, _) = encrypter(KEY_A, 1);
    assert_is_media_buffer(
        &dec.push_and_pull(enc1.push_and_pull(media_buffer(0)).unwrap())
            .unwrap(),
        0,
    );
    let started = Instant::now();
    for i in 0..1000u64 {
        dec.push(forged_frame(1000 + i % 200, i)).unwrap();
    }
    let elapsed = started.elapsed();
    assert!(dec.try_pull().is_none());
    let asked = asked.lock().unwrap().clone();
    let allowed =
        key_requests::BURST as u128 + elapsed.as_millis() / key_requests::REFILL.as_millis();
    assert!(
        asked.len() as u128 <= allowed,
        "{} requests for 1,000 forged frames in {elapsed:?}",
        asked.len()
    );
    let mut unique = asked.clone();
    unique.sort_unstable();
    unique.dedup();
    assert!(
        unique.len() as u128 * (1 + elapsed.as_millis() / key_requests::RETRY.as_millis())
            >= asked.len() as u128,
        "a KID was asked for again within the retry interval: {asked:?}"
    );
    assert_eq!(stat(&element, "dropped"), 1000);
    // The keys in use are all still there and still work; the answers for
    // forged KIDs never authenticated anything, and there are at most max-keys
    // of them.
    assert!(stat_u32(&element, "keys") <= 4);
    let (mut enc2, _) = encrypter(KEY_B, 2);
    for i in 1..5 {
        let enc = if i % 2 == 0 { &mut enc1 } else { &mut enc2 };
        let frame = enc.push_and_pull(media_buffer(i)).unwrap();
        assert_is_media_buffer(&dec.push_and_pull(frame).unwrap(), i);
    }
}

fn stat_u32(element: &gst::Element, field: &str) -> u32 {
    stats(element).get::<u32>(field).unwrap()
}

#[test]
fn a_late_answer_through_add_key_is_taken() {
    // The handler answers later, from another thread: frames until then are
    // dropped, the rest decrypt, and the KID is asked for once.
    let dec = make("streamdecrypt");
    let asked = Arc::new(AtomicU64::new(0));
    let asked_in_handler = asked.clone();
    dec.connect("request-key", false, move |args| {
        let element = args[0].get::<gst::Element>().unwrap();
        let kid = args[1].get::<u64>().unwrap();
        asked_in_handler.fetch_add(1, Ordering::SeqCst);
        std::thread::spawn(move || {
            assert!(element.emit_by_name::<bool>("add-key", &[&kid, &KEY_B]));
        });
        Some(None::<String>.to_value())
    });
    let (mut dec, _) = harness(&dec);
    let element = dec.element().unwrap();
    let (mut enc, _) = encrypter(KEY_B, 9);
    let frames = encrypt_all(&mut enc, 0..50);
    let mut out = Vec::new();
    for frame in frames {
        if let Ok(buffer) = {
            dec.push(frame).unwrap();
            dec.try_pull().ok_or(())
        } {
            out.push(buffer);
        }
        if out.is_empty() {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
    assert!(!out.is_empty(), "the late key was never used");
    assert_eq!(asked.load(Ordering::SeqCst), 1);
    let dropped = stat(&element, "dropped-no-key");
    assert_eq!(out.len() as u64 + dropped, 50);
    for (buffer, i) in out.iter().zip(dropped..) {
        assert_is_media_buffer(buffer, i);
    }
}

#[test]
fn plaintext_is_named_as_such_and_no_key_is_asked_for() {
    let dec = make(&format!("streamdecrypt key={KEY_A} key-id=0"));
    dec.connect("request-key", false, |args| {
        panic!(
            "asked for KID {} of plaintext",
            args[1].get::<u64>().unwrap()
        )
    });
    let (mut dec, bus) = harness(&dec);
    // Raw video (the first bytes read as some large KID), and H.264 in Annex B
    // (its first byte reads as KID 0, which has a key: authentication fails).
    let raw: Vec<u8> = (0..6000).map(|i| [16u8, 128, 235, 128][i % 4]).collect();
    let mut annexb = vec![0, 0, 0, 1, 0x65];
    annexb.extend(payload(3));
    for (what, bytes) in [("raw video", raw), ("H.264", annexb)] {
        for _ in 0..5 {
            dec.push(gst::Buffer::from_slice(bytes.clone())).unwrap();
        }
        let warnings = warnings(&drain(&bus));
        assert_eq!(
            warnings[0]
                .matches("the input does not look encrypted")
                .count(),
            1,
            "{what}: {warnings:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    push_eos(&mut dec);
    let error = first_error(&drain(&bus)).expect("an error at EOS");
    assert!(error.matches(gst::StreamError::Decrypt), "{error}");
    assert!(
        error
            .message()
            .starts_with("None of the 10 buffers could be decrypted"),
        "{error}"
    );
    assert!(
        error
            .message()
            .contains("the input does not look encrypted"),
        "{error}"
    );
}

#[test]
fn plaintext_in_modes_without_a_kid_is_named_too() {
    for mode in ["sm4-ecb", "qq-tea", "aes-128-cbc"] {
        let dec = make(&format!("streamdecrypt mode={mode} key={KEY_A}"));
        let (mut dec, bus) = harness(&dec);
        let mut annexb = vec![0, 0, 0, 1, 0x65];
        annexb.extend(payload(7));
        annexb.truncate(1024);
        dec.push(gst::Buffer::from_slice(annexb)).unwrap();
        let warnings = warnings(&drain(&bus));
        assert!(
            warnings[0].contains("the input does not look encrypted: it looks like an H.264"),
            "{mode}: {warnings:?}"
        );
    }
}

#[test]
fn a_byte_stream_read_as_buffers_says_which_framing() {
    let enc = make(&format!("streamencrypt framing=stream key={KEY_A}"));
    let (mut enc, _) = harness(&enc);
    enc.push(media_buffer(1)).unwrap();
    let header = enc.pull().unwrap();
    let (mut dec, bus) = decrypter(KEY_A, 0);
    dec.push(header).unwrap();
    let warnings = warnings(&drain(&bus));
    assert!(
        warnings[0].contains("written with framing=stream: set framing=stream here too"),
        "{warnings:?}"
    );
}

#[test]
fn drops_are_summed_up_at_eos() {
    // Every buffer dropped: an error, so that gst-launch does not exit 0.
    let (mut enc, _) = encrypter(KEY_A, 1);
    let frames = encrypt_all(&mut enc, 0..30);
    let (mut dec, bus) = decrypter(KEY_B, 1);
    for frame in &frames {
        dec.push(frame.clone()).unwrap();
    }
    push_eos(&mut dec);
    let messages = drain(&bus);
    let warned = warnings(&messages);
    assert_eq!(warned.len(), 1, "rate-limited: {warned:?}");
    let details: Vec<String> = messages
        .iter()
        .filter_map(|m| match m.view() {
            gst::MessageView::Warning(w) => w.debug().map(|d| d.to_string()),
            _ => None,
        })
        .collect();
    assert!(
        !details.iter().any(|d| d.contains(" 0 more")),
        "{details:?}"
    );
    let error = first_error(&messages).unwrap();
    assert!(error.matches(gst::StreamError::Decrypt));
    assert_eq!(
        error.message(),
        "None of the 30 buffers could be decrypted: 30 failing authentication"
    );

    // With on-error=fail the first failure said it all: no second error at EOS.
    let dec = make(&format!("streamdecrypt key={KEY_B} key-id=1 on-error=fail"));
    let (mut dec, bus) = harness(&dec);
    assert_eq!(dec.push(frames[0].clone()), Err(gst::FlowError::Error));
    push_eos(&mut dec);
    let errors = drain(&bus)
        .iter()
        .filter(|m| matches!(m.view(), gst::MessageView::Error(_)))
        .count();
    assert_eq!(errors, 1);

    // Some dropped: a warning with the totals by cause.
    let (mut dec, bus) = decrypter(KEY_A, 1);
    for (i, frame) in frames.iter().enumerate() {
        let mut bytes = frame.map_readable().unwrap().to_vec();
        if i % 6 == 5 {
            let last = bytes.len() - 1;
            bytes[last] ^= 1;
        }
        dec.push(gst::Buffer::from_mut_slice(bytes)).unwrap();
    }
    dec.push(frames[0].clone()).unwrap();
    push_eos(&mut dec);
    let messages = drain(&bus);
    assert_eq!(first_error(&messages), None);
    let warnings = warnings(&messages);
    assert_eq!(
        warnings.last().unwrap(),
        "Dropped 6 of 31 buffers: 5 failing authentication, 1 replayed or too late"
    );
}

#[test]
fn mode_and_framing_cannot_change_while_running() {
    let (mut enc, bus) = encrypter(KEY_A, 1);
    let element = enc.element().unwrap();
    element.set_property_from_str("mode", "aes-256-gcm");
    element.set_property_from_str("framing", "stream");
    assert_eq!(
        element
            .property::<gststreamcrypt::mode::Mode>("mode")
            .nick(),
        "aes-128-gcm"
    );
    assert_eq!(
        element
            .property::<gststreamcrypt::mode::Framing>("framing")
            .nick(),
        "buffer"
    );
    // A 32-byte key is measured against the mode in use.
    element.set_property("key", KEY_256);
    let warnings = warnings(&drain(&bus));
    assert!(
        warnings[0].starts_with("mode refused: it cannot change while the element is running"),
        "{warnings:?}"
    );
    assert!(
        warnings[0].contains("aes-128-gcm stays in use"),
        "{warnings:?}"
    );
    assert!(warnings[1].contains("buffer stays in use"), "{warnings:?}");
    assert!(
        warnings[2].contains("mode aes-128-gcm needs a key of 16 bytes"),
        "{warnings:?}"
    );
    // And the stream goes on as it was.
    let frame = enc.push_and_pull(media_buffer(1)).unwrap();
    let (mut dec, _) = decrypter(KEY_A, 1);
    let dec_element = dec.element().unwrap();
    assert_is_media_buffer(&dec.push_and_pull(frame).unwrap(), 1);
    dec_element.set_property("replay-window", 5u32);
    assert_eq!(dec_element.property::<u32>("replay-window"), 128);
    // In NULL or READY they change.
    element.set_state(gst::State::Null).unwrap();
    element.set_property_from_str("mode", "aes-256-gcm");
    assert_eq!(
        element
            .property::<gststreamcrypt::mode::Mode>("mode")
            .nick(),
        "aes-256-gcm"
    );
}

#[test]
fn key_errors_name_the_key_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = key_file(
        dir.path(),
        "keys",
        &format!("# current and next\n1 {KEY_A}\n2 {KEY_256}\n"),
    );
    let expected = format!(
        "key file {}: line 3: mode aes-128-gcm needs a key of 16 bytes (32 hex digits); this \
         key has 32 bytes (64 hex digits)",
        path.display()
    );
    let dec = make(&format!("streamdecrypt key-file={}", path.display()));
    let bus = gst::Bus::new();
    dec.set_bus(Some(&bus));
    assert!(dec.set_state(gst::State::Paused).is_err());
    let error = first_error(&drain(&bus)).unwrap();
    assert_eq!(error.message(), expected);
    let _ = dec.set_state(gst::State::Null);

    let path = key_file(dir.path(), "first", &format!("\n\n7 {KEY_256}\n"));
    let enc = make(&format!("streamencrypt key-file={}", path.display()));
    enc.set_bus(Some(&bus));
    assert!(enc.set_state(gst::State::Paused).is_err());
    let error = first_error(&drain(&bus)).unwrap();
    assert!(
        error.message().starts_with(&format!(
            "key file {}: line 3: mode aes-128-gcm",
            path.display()
        )),
        "{error}"
    );
    let _ = enc.set_state(gst::State::Null);
}

#[test]
fn key_files_others_can_read_are_warned_about() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = key_file(dir.path(), "keys", &format!("1 {KEY_A}\n"));
    for (mode, warned) in [(0o600, false), (0o640, true), (0o644, true)] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        for element in ["streamencrypt", "streamdecrypt"] {
            let (_h, bus) = harness(&make(&format!("{element} key-file={}", path.display())));
            let warnings = warnings(&drain(&bus));
            let found = warnings.iter().any(|w| {
                w.contains("can be read by others than its owner") && w.contains("chmod 600")
            });
            assert_eq!(found, warned, "{element} {mode:o}: {warnings:?}");
        }
    }
}

#[test]
fn a_byte_stream_in_another_mode_names_both_modes() {
    let enc = make(&format!(
        "streamencrypt framing=stream mode=sm4-gcm key={KEY_A}"
    ));
    let (mut enc, _) = harness(&enc);
    let mut bytes = Vec::new();
    for i in 0..3 {
        bytes.extend_from_slice(
            &enc.push_and_pull(media_buffer(i))
                .unwrap()
                .map_readable()
                .unwrap(),
        );
    }
    let dec = make(&format!("streamdecrypt framing=stream key={KEY_A}"));
    let (mut dec, bus) = harness(&dec);
    assert_eq!(
        dec.push(gst::Buffer::from_mut_slice(bytes)),
        Err(gst::FlowError::Error)
    );
    let error = first_error(&drain(&bus)).unwrap();
    assert!(error.matches(gst::StreamError::WrongType));
    assert_eq!(
        error.message(),
        "The stream was written in mode sm4-gcm (format 0xf002), but this element is set to \
         mode aes-128-gcm (format 0x0004): set mode=sm4-gcm to read it"
    );
}

#[test]
fn short_tags_retire_their_key_after_too_many_forgeries() {
    let mode = "mode=aes-128-ctr-hmac-32";
    let (mut enc, _) = harness(&make(&format!("streamencrypt {mode} key={KEY_A} key-id=1")));
    let dec = make(&format!("streamdecrypt {mode} key={KEY_A} key-id=1"));
    let (mut dec, bus) = harness(&dec);
    let element = dec.element().unwrap();
    let limit = gststreamcrypt::sframe::CipherSuite::Aes128CtrHmacSha256_32.max_auth_failures();
    assert_eq!(limit, 1 << 16);
    let genuine = encrypt_all(&mut enc, 0..2);
    assert_is_media_buffer(&dec.push_and_pull(genuine[0].clone()).unwrap(), 0);
    // Forgeries under KID 1, with counters the replay window lets through:
    // each passes a 32-bit tag with probability 2^-32.
    let (_, ctr) = sframe_header(&genuine[0]);
    for i in 0..limit {
        dec.push(forged_frame(1, ctr + 100 + i)).unwrap();
    }
    assert_eq!(stat(&element, "dropped-auth"), limit);
    let warnings = warnings(&drain(&bus));
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("65536 frames under KID 1 failed authentication")),
        "{warnings:?}"
    );
    // Retired: even a genuine frame is no longer opened with it, nor after the
    // same key is added again; a new key for the KID is.
    dec.push(genuine[1].clone()).unwrap();
    assert!(dec.try_pull().is_none());
    assert_eq!(stat(&element, "dropped-no-key"), 1);
    assert!(element.emit_by_name::<bool>("add-key", &[&1u64, &KEY_A]));
    dec.push(genuine[1].clone()).unwrap();
    assert_eq!(stat(&element, "dropped-no-key"), 2);
    assert!(element.emit_by_name::<bool>("add-key", &[&1u64, &KEY_B]));
    let (mut enc_b, _) = harness(&make(&format!("streamencrypt {mode} key={KEY_B} key-id=1")));
    let frame = enc_b.push_and_pull(media_buffer(5)).unwrap();
    assert_is_media_buffer(&dec.push_and_pull(frame).unwrap(), 5);
}

#[test]
fn key_switches_say_pts_and_running_time() {
    let dec = make("streamdecrypt");
    for (kid, key) in [(1u64, KEY_A), (2, KEY_B)] {
        assert!(dec.emit_by_name::<bool>("add-key", &[&kid, &key]));
    }
    let (mut dec, bus) = harness(&dec);
    // A segment that starts at 1 s: running time = pts - 1 s.
    let mut segment = gst::FormattedSegment::<gst::ClockTime>::new();
    segment.set_start(gst::ClockTime::from_seconds(1));
    assert!(dec.push_event(gst::event::Segment::new(&segment)));
    let (mut enc1, _) = encrypter(KEY_A, 1);
    let (mut enc2, _) = encrypter(KEY_B, 2);
    let frame = |enc: &mut gst_check::Harness, ms: u64| {
        let mut buffer = enc.push_and_pull(media_buffer(1)).unwrap();
        buffer.make_mut().set_pts(gst::ClockTime::from_mseconds(ms));
        buffer
    };
    dec.push(frame(&mut enc1, 1500)).unwrap();
    dec.push(frame(&mut enc2, 1520)).unwrap();
    let switch = drain(&bus)
        .into_iter()
        .find_map(|m| match m.view() {
            gst::MessageView::Element(e) => Some(e.structure().unwrap().to_owned()),
            _ => None,
        })
        .expect("a key-switch message");
    assert_eq!(switch.name(), "streamcrypt-key-switch");
    assert_eq!(switch.get::<u64>("kid"), Ok(2));
    assert_eq!(switch.get::<u64>("previous-kid"), Ok(1));
    assert_eq!(switch.get::<u64>("pts"), Ok(1_520_000_000));
    assert_eq!(switch.get::<u64>("running-time"), Ok(520_000_000));
}
