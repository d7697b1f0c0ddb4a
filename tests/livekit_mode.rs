// SPDX-License-Identifier: MPL-2.0
//! mode=livekit in the elements themselves (tests/livekit.rs checks the frames
//! against LiveKit's own code): every codec round-trips with its header in the
//! clear, caps that cannot work are refused with a reason, ratchets are
//! followed however many steps the sender took, a key that keeps failing is
//! taken as invalid, replays of recent frames are dropped, empty frames pass.

mod common;

use common::*;
use gst::prelude::*;

const KEY: &str = "00112233445566778899aabbccddeeff";

/// (caps, frame, key frame or not, bytes the format keeps clear).
fn frames() -> Vec<(&'static str, Vec<u8>, bool, usize)> {
    let mut vp8_key = vec![0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0xa0, 0x00, 0x78, 0x00];
    vp8_key.extend(payload(1));
    let mut vp8_delta = vec![0x31, 0x04, 0x00];
    vp8_delta.extend(payload(2));
    // SPS, PPS, then an IDR slice whose header the format keeps (2 bytes).
    let mut h264 = vec![0, 0, 0, 1, 0x67, 0x42, 0xc0, 0x1e, 0, 0, 0, 1, 0x68, 0xce];
    h264.extend([0, 0, 0, 1, 0x65, 0x88]);
    h264.extend(payload(3).iter().map(|b| b | 1)); // no start code in the slice data
    let mut opus = vec![0xfc];
    opus.extend(payload(4));
    vec![
        ("video/x-vp8", vp8_key, true, 10),
        ("video/x-vp8", vp8_delta, false, 3),
        ("video/x-vp9", payload(5), true, 0),
        ("video/x-h264,stream-format=byte-stream", h264, true, 20),
        ("audio/x-opus", opus, false, 1),
    ]
}

fn buffer(frame: &[u8], keyframe: bool) -> gst::Buffer {
    let mut buffer = gst::Buffer::from_slice(frame.to_vec());
    if !keyframe {
        buffer
            .get_mut()
            .unwrap()
            .set_flags(gst::BufferFlags::DELTA_UNIT);
    }
    buffer
}

/// A started harness around `element` that has no caps yet, and its bus.
fn bare_harness(element: &str) -> (gst_check::Harness, gst::Bus) {
    let element = make(element);
    let bus = gst::Bus::new();
    element.set_bus(Some(&bus));
    let h = gst_check::Harness::with_element(&element, Some("sink"), Some("src"));
    (h, bus)
}

fn harness_with(element: &str, caps: &str) -> (gst_check::Harness, gst::Bus) {
    let (mut h, bus) = bare_harness(element);
    h.set_src_caps_str(caps);
    (h, bus)
}

#[test]
fn every_codec_round_trips_with_its_header_clear() {
    for (caps, frame, keyframe, clear) in frames() {
        let (mut enc, _) = harness_with(
            &format!("streamencrypt mode=livekit key={KEY} key-id=4"),
            caps,
        );
        let (mut dec, _) = harness_with(
            &format!("streamdecrypt mode=livekit key={KEY} key-id=4 on-error=fail"),
            caps,
        );
        let sealed = enc.push_and_pull(buffer(&frame, keyframe)).unwrap();
        let bytes = sealed.map_readable().unwrap().to_vec();
        assert_eq!(
            bytes[..clear],
            frame[..clear],
            "{caps}: the header stays clear"
        );
        assert_ne!(bytes[clear..clear + 16], frame[clear..clear + 16], "{caps}");
        // Trailer: IV (12), its length, the key index.
        assert_eq!(bytes[bytes.len() - 2..], [12, 4], "{caps}");
        let opened = dec.push_and_pull(sealed).unwrap();
        assert_eq!(opened.map_readable().unwrap().as_slice(), frame, "{caps}");
    }
}

#[test]
fn caps_that_cannot_work_are_refused_with_the_reason() {
    for (caps, why) in [
        (
            "video/x-h264,stream-format=avc",
            "stream-format=avc: LiveKit's frames carry H.264 in Annex B form",
        ),
        (
            "video/x-raw",
            "mode=livekit encrypts VP8, VP9, H.264, H.265 or audio",
        ),
    ] {
        for element in ["streamencrypt", "streamdecrypt"] {
            let (mut h, bus) = harness_with(&format!("{element} mode=livekit key={KEY}"), caps);
            assert_eq!(
                h.push(buffer(&payload(1), true)),
                Err(gst::FlowError::NotNegotiated),
                "{element} {caps}"
            );
            let error = first_error(&drain(&bus)).expect("an error");
            assert!(error.message().contains(why), "{element}: {error}");
        }
    }
    // No caps at all: nothing says which codec.
    let (mut h, bus) = bare_harness(&format!("streamencrypt mode=livekit key={KEY}"));
    assert_eq!(
        h.push(buffer(&payload(1), true)),
        Err(gst::FlowError::Error)
    );
    let error = first_error(&drain(&bus)).expect("an error");
    assert!(
        error.message().contains("needs caps that name the codec"),
        "{error}"
    );
}

#[test]
fn the_key_index_is_one_byte() {
    let element = make(&format!("streamencrypt mode=livekit key={KEY} key-id=256"));
    let bus = gst::Bus::new();
    element.set_bus(Some(&bus));
    assert!(element.set_state(gst::State::Paused).is_err());
    let error = first_error(&drain(&bus)).unwrap();
    assert!(
        error
            .message()
            .contains("key index, 0 to 255; key-id 256 is not one"),
        "{error}"
    );
    let _ = element.set_state(gst::State::Null);
}

#[test]
fn ratchets_are_followed_however_many_steps_the_sender_took() {
    let (mut enc, _) = harness_with(
        &format!("streamencrypt mode=livekit key={KEY} key-id=1"),
        "video/x-vp9",
    );
    let enc_element = enc.element().unwrap();
    let (mut dec, _) = harness_with(
        &format!("streamdecrypt mode=livekit key={KEY} key-id=1"),
        "video/x-vp9",
    );
    let dec_element = dec.element().unwrap();
    let mut sealed = Vec::new();
    for i in 0..6u64 {
        // Three steps at once before frame 2 (LiveKit's own receivers follow one
        // at a time only), one more before frame 4.
        let steps = match i {
            2 => 3,
            4 => 1,
            _ => 0,
        };
        for _ in 0..steps {
            assert!(enc_element.emit_by_name::<bool>("ratchet-key", &[&1u64]));
        }
        sealed.push(enc.push_and_pull(buffer(&payload(i), true)).unwrap());
    }
    for (i, frame) in sealed.iter().enumerate() {
        let opened = dec.push_and_pull(frame.clone()).unwrap();
        assert_eq!(opened.map_readable().unwrap().as_slice(), payload(i as u64));
    }
    // Without a ratchet window, a ratcheted frame is not opened.
    let (mut strict, _) = harness_with(
        &format!("streamdecrypt mode=livekit key={KEY} key-id=1 ratchet-window=0"),
        "video/x-vp9",
    );
    strict.push(sealed[1].clone()).unwrap();
    assert!(strict.try_pull().is_some());
    strict.push(sealed[2].clone()).unwrap();
    assert!(strict.try_pull().is_none());
    // The decrypter's own ratchet-key moves its key the same way.
    assert!(
        strict
            .element()
            .unwrap()
            .emit_by_name::<bool>("ratchet-key", &[&1u64])
    );
    drop(dec_element);
}

#[test]
fn a_key_that_keeps_failing_is_taken_as_invalid() {
    let other = "ffeeddccbbaa99887766554433221100";
    let (mut enc, _) = harness_with(
        &format!("streamencrypt mode=livekit key={other} key-id=1"),
        "video/x-vp9",
    );
    let (mut good, _) = harness_with(
        &format!("streamencrypt mode=livekit key={KEY} key-id=1"),
        "video/x-vp9",
    );
    let (mut dec, _) = harness_with(
        &format!(
            "streamdecrypt mode=livekit key={KEY} key-id=1 failure-tolerance=3 ratchet-window=0"
        ),
        "video/x-vp9",
    );
    let element = dec.element().unwrap();
    for i in 0..4 {
        dec.push(enc.push_and_pull(buffer(&payload(i), true)).unwrap())
            .unwrap();
    }
    assert_eq!(stat(&element, "dropped-auth"), 4);
    // Four in a row is more than 3: a good frame is not even tried now.
    dec.push(good.push_and_pull(buffer(&payload(9), true)).unwrap())
        .unwrap();
    assert!(dec.try_pull().is_none());
    assert_eq!(stat(&element, "dropped-no-key"), 1);
    // Setting the key again makes it valid again.
    assert!(element.emit_by_name::<bool>("add-key", &[&1u64, &KEY]));
    let frame = good.push_and_pull(buffer(&payload(10), true)).unwrap();
    assert_eq!(
        dec.push_and_pull(frame)
            .unwrap()
            .map_readable()
            .unwrap()
            .as_slice(),
        payload(10)
    );
}

#[test]
fn recent_frames_replayed_are_dropped_and_empty_frames_pass() {
    let (mut enc, _) = harness_with(
        &format!("streamencrypt mode=livekit key={KEY}"),
        "audio/x-opus",
    );
    let (mut dec, _) = harness_with(
        &format!("streamdecrypt mode=livekit key={KEY}"),
        "audio/x-opus",
    );
    let element = dec.element().unwrap();
    let frame = enc.push_and_pull(buffer(&payload(3), false)).unwrap();
    assert!(dec.push_and_pull(frame.clone()).is_ok());
    dec.push(frame).unwrap();
    assert!(dec.try_pull().is_none());
    assert_eq!(stat(&element, "dropped-replay"), 1);
    // Empty frames (DTX) go as they are, as LiveKit sends them.
    let empty = gst::Buffer::new();
    assert!(enc.push(empty.clone()).is_ok());
    assert!(enc.try_pull().is_none(), "nothing to send");
    let passed = dec.push_and_pull(empty).unwrap();
    assert_eq!(passed.size(), 0);
}

#[test]
fn a_passphrase_and_a_key_the_last_set_wins() {
    let phrase = "a shared secret";
    let (mut by_phrase, _) = harness_with(
        &format!("streamencrypt mode=livekit key={KEY} passphrase=\"{phrase}\""),
        "video/x-vp9",
    );
    let (mut dec, _) = harness_with(
        &format!("streamdecrypt mode=livekit passphrase=\"{phrase}\" on-error=fail"),
        "video/x-vp9",
    );
    let frame = by_phrase.push_and_pull(buffer(&payload(6), true)).unwrap();
    assert_eq!(
        dec.push_and_pull(frame)
            .unwrap()
            .map_readable()
            .unwrap()
            .as_slice(),
        payload(6)
    );
    // A passphrase in a mode that takes keys only is refused at start.
    let element = make(&format!("streamencrypt passphrase=\"{phrase}\""));
    let bus = gst::Bus::new();
    element.set_bus(Some(&bus));
    assert!(element.set_state(gst::State::Paused).is_err());
    let error = first_error(&drain(&bus)).unwrap();
    assert!(
        error.message().contains("takes a key, not a passphrase"),
        "{error}"
    );
    let _ = element.set_state(gst::State::Null);
}

#[test]
fn byte_streams_of_livekit_frames_round_trip() {
    let enc = make(&format!(
        "streamencrypt mode=livekit framing=stream key={KEY}"
    ));
    let dec = make(&format!(
        "streamdecrypt mode=livekit framing=stream key={KEY} on-error=fail"
    ));
    let pipeline = AppPipeline::new(&[&enc, &dec]);
    pipeline
        .src
        .set_caps(Some(&gst::Caps::builder("video/x-vp9").build()));
    let out = pipeline.run((0..20).map(|i| buffer(&payload(i), true)));
    let got: Vec<u8> = out
        .iter()
        .flat_map(|b| b.map_readable().unwrap().to_vec())
        .collect();
    let sent: Vec<u8> = (0..20).flat_map(payload).collect();
    assert_eq!(got, sent);
}

#[test]
fn an_unknown_key_index_is_asked_for_whatever_the_clear_header_shows() {
    // An H.264 frame starts with a start code in the clear: that is no reason to
    // take it for plaintext and ask for nothing (sender-first rotation).
    let (caps, frame, keyframe, _) = frames().remove(3);
    let (mut enc, _) = harness_with(
        &format!("streamencrypt mode=livekit key={KEY} key-id=9"),
        caps,
    );
    let dec = make("streamdecrypt mode=livekit on-error=fail");
    dec.connect("request-key", false, |args| {
        assert_eq!(args[1].get::<u64>().unwrap(), 9);
        Some(Some(KEY.to_owned()).to_value())
    });
    let mut dec = gst_check::Harness::with_element(&dec, Some("sink"), Some("src"));
    dec.set_src_caps_str(caps);
    let sealed = enc.push_and_pull(buffer(&frame, keyframe)).unwrap();
    let opened = dec.push_and_pull(sealed).unwrap();
    assert_eq!(opened.map_readable().unwrap().as_slice(), frame);
    assert_eq!(stat(&dec.element().unwrap(), "key-requests"), 1);
}

#[test]
fn key_index_zero_survives_payloaders_that_trim_trailing_zeros() {
    // rtph264pay trims the zeros at the end of a NAL unit: with key index 0 the
    // frame's last byte goes. The decrypter puts it back.
    let (caps, frame, keyframe, _) = frames().remove(3);
    let (mut enc, _) = harness_with(
        &format!("streamencrypt mode=livekit key={KEY} key-id=0"),
        caps,
    );
    let (mut dec, _) = harness_with(
        &format!("streamdecrypt mode=livekit key={KEY} key-id=0 on-error=fail"),
        caps,
    );
    for i in 0..40 {
        let sealed = enc.push_and_pull(buffer(&frame, keyframe)).unwrap();
        let bytes = sealed.map_readable().unwrap();
        assert_eq!(bytes[bytes.len() - 2..], [12, 0]);
        let trimmed = gst::Buffer::from_slice(bytes[..bytes.len() - 1].to_vec());
        let opened = dec.push_and_pull(trimmed).unwrap();
        assert_eq!(
            opened.map_readable().unwrap().as_slice(),
            frame,
            "frame {i}"
        );
    }
}

/// Frames open in the memory they came in when it can be written there (no
/// copy: the plaintext lies where the frame did), ratchet steps and a key
/// index cut off by a payloader included, and in any memory otherwise: split
/// in two, or read-only.
#[test]
fn frames_open_where_they_lie_or_wherever_they_are() {
    for (caps, frame, keyframe, _) in frames() {
        let (mut enc, _) = harness_with(
            &format!("streamencrypt mode=livekit key={KEY} key-id=0"),
            caps,
        );
        let mut decs: Vec<_> = (0..3)
            .map(|_| {
                harness_with(
                    &format!("streamdecrypt mode=livekit key={KEY} key-id=0 on-error=fail"),
                    caps,
                )
                .0
            })
            .collect();
        for steps in [0, 2, 0] {
            for _ in 0..steps {
                let enc_element = enc.element().unwrap();
                assert!(enc_element.emit_by_name::<bool>("ratchet-key", &[&0u64]));
            }
            let sealed = enc.push_and_pull(buffer(&frame, keyframe)).unwrap();
            let mut bytes = sealed.map_readable().unwrap().to_vec();
            if caps.starts_with("video/x-h264") {
                assert_eq!(bytes.pop(), Some(0), "as rtph264pay trims it");
            }
            let writable = gst::Buffer::from_mut_slice(bytes.clone());
            let written_at = writable.map_readable().unwrap().as_ptr();
            let mut split = gst::Buffer::new();
            let half = bytes.len() / 2;
            for part in [&bytes[..half], &bytes[half..]] {
                let memory = gst::Memory::from_mut_slice(part.to_vec());
                split.get_mut().unwrap().append_memory(memory);
            }
            let read_only = gst::Buffer::from_slice(bytes);
            for (n, (dec, mut input)) in decs
                .iter_mut()
                .zip([writable, split, read_only])
                .enumerate()
            {
                if !keyframe {
                    let input = input.get_mut().unwrap();
                    input.set_flags(gst::BufferFlags::DELTA_UNIT);
                }
                let opened = dec.push_and_pull(input).unwrap();
                let opened = opened.map_readable().unwrap();
                assert_eq!(opened.as_slice(), frame, "{caps}, {steps} steps, input {n}");
                if n == 0 {
                    assert_eq!(opened.as_ptr(), written_at, "{caps}: opened where it lay");
                }
            }
        }
    }
}

/// Frames allocated as encoders allocate them, with the room the encrypter
/// proposes in the ALLOCATION query, are sealed in their own memory: the same
/// memory comes out, grown by the trailer (and a record length in a byte
/// stream), and opens. A header whose start codes must be made long, and a
/// frame shorter than its header, take the copying path as before.
#[test]
fn frames_with_room_are_sealed_in_their_own_memory() {
    // SPS with a short start code, then an IDR slice: normalized, so moved.
    let mut short_start = vec![0, 0, 1, 0x67, 0x42, 0, 0, 0, 1, 0x65, 0x88];
    short_start.extend(payload(6).iter().map(|b| b | 1));
    let mut cases: Vec<(&str, Vec<u8>, bool, bool)> = frames()
        .into_iter()
        .map(|(caps, frame, keyframe, _)| (caps, frame, keyframe, true))
        .collect();
    cases.push((
        "video/x-h264,stream-format=byte-stream",
        short_start,
        true,
        false,
    ));
    for framing in ["buffer", "stream"] {
        for (caps, frame, keyframe, in_place) in &cases {
            let settings = format!("mode=livekit key={KEY} key-id=4 framing={framing}");
            let (mut enc, _) = harness_with(&format!("streamencrypt {settings}"), caps);
            let (mut dec, _) =
                harness_with(&format!("streamdecrypt {settings} on-error=fail"), caps);
            let mut input = enc.create_buffer(frame.len()).unwrap();
            {
                let input = input.get_mut().unwrap();
                input.copy_from_slice(0, frame).unwrap();
                if !keyframe {
                    input.set_flags(gst::BufferFlags::DELTA_UNIT);
                }
            }
            let start = allocation_start(input.peek_memory(0));
            let mut sealed = enc.push_and_pull(input).unwrap();
            if framing == "stream" {
                // The stream header goes first, as a buffer of its own.
                dec.push(sealed).unwrap();
                sealed = enc.pull().unwrap();
            }
            let same = sealed.n_memory() == 1 && allocation_start(sealed.peek_memory(0)) == start;
            assert_eq!(
                same, *in_place,
                "{caps} {framing}: sealed in its own memory"
            );
            let opened = dec.push_and_pull(sealed).unwrap();
            let opened = opened.map_readable().unwrap().to_vec();
            if *in_place {
                assert_eq!(&opened, frame, "{caps} {framing}");
            } else {
                // The clear header comes back with long start codes.
                assert_eq!(opened[4..], frame[3..], "{caps} {framing}");
            }
        }
    }
}
