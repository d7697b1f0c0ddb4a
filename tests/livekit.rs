// SPDX-License-Identifier: MPL-2.0
//! mode=livekit against LiveKit's own code: livekit-client's published E2EE
//! worker (the pinned npm package, driven by tests/livekit/harness.mjs through
//! scripts/livekit-peer.sh) decrypts our frames and encrypts frames we decrypt,
//! for VP8, VP9, H.264, H.265 and Opus from real encoders, with a raw key and a
//! passphrase, across a key-index switch and ratchets; and our sealing of
//! LiveKit's frames, with LiveKit's IV, gives its bytes exactly.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use common::*;
use gst::prelude::*;
use gststreamcrypt::cipher::{Aead, GcmCipher};
use gststreamcrypt::livekit::keys::{DEFAULT_RATCHET_SALT, Material};
use gststreamcrypt::livekit::{self, Layout, MediaCodec, nalu};
use serde_json::{Value, json};

const RAW_KEY: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";
const OTHER_KEY: &str = "a0b1c2d3e4f5061728394a5b6c7d8e9f";
const PASSPHRASE: &str = "correct horse battery staple";

/// One request to LiveKit's worker, its JSON response.
fn livekit(request: &Value) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/livekit-peer.sh");
    let mut child = Command::new("sh")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sh");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(request.to_string().as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "LiveKit harness failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("JSON from the harness")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

/// (name for LiveKit, our codec, encoder pipeline ending in appsink "sink").
const CODECS: [(&str, MediaCodec, &str); 5] = [
    (
        "vp8",
        MediaCodec::Vp8,
        "videotestsrc num-buffers=12 pattern=ball ! video/x-raw,width=160,height=120 \
         ! vp8enc keyframe-max-dist=5 deadline=1 ! appsink name=sink sync=false",
    ),
    (
        "vp9",
        MediaCodec::Vp9,
        "videotestsrc num-buffers=12 pattern=ball ! video/x-raw,width=160,height=120 \
         ! vp9enc keyframe-max-dist=5 deadline=1 ! appsink name=sink sync=false",
    ),
    (
        "h264",
        MediaCodec::H264,
        "videotestsrc num-buffers=12 pattern=ball ! video/x-raw,width=160,height=120 \
         ! openh264enc gop-size=5 ! h264parse \
         ! video/x-h264,stream-format=byte-stream,alignment=au ! appsink name=sink sync=false",
    ),
    (
        "h265",
        MediaCodec::H265,
        "videotestsrc num-buffers=12 pattern=ball ! video/x-raw,width=160,height=120 \
         ! x265enc key-int-max=5 speed-preset=ultrafast ! h265parse \
         ! video/x-h265,stream-format=byte-stream,alignment=au ! appsink name=sink sync=false",
    ),
    (
        "opus",
        MediaCodec::Audio,
        "audiotestsrc num-buffers=12 ! opusenc ! appsink name=sink sync=false",
    ),
];

/// The encoded frames of `pipeline` and their caps.
fn encoded(pipeline: &str) -> (gst::Caps, Vec<gst::Buffer>) {
    let pipeline = launch(pipeline);
    let sink = app_sink(&pipeline, "sink");
    pipeline.set_state(gst::State::Playing).unwrap();
    let mut caps = None;
    let mut frames = Vec::new();
    while let Ok(sample) = sink.pull_sample() {
        caps.get_or_insert_with(|| sample.caps().unwrap().to_owned());
        frames.push(sample.buffer_owned().unwrap());
    }
    pipeline.set_state(gst::State::Null).unwrap();
    assert!(frames.len() >= 10, "{} frames", frames.len());
    (caps.unwrap(), frames)
}

fn is_keyframe(buffer: &gst::BufferRef) -> bool {
    !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT)
}

/// `frames` as LiveKit's request lists them.
fn frame_list(codec: &str, frames: &[gst::Buffer]) -> Vec<Value> {
    frames
        .iter()
        .map(|frame| {
            let data = hex(&frame.map_readable().unwrap());
            if codec == "opus" {
                json!({ "data": data })
            } else {
                let kind = if is_keyframe(frame) { "key" } else { "delta" };
                json!({ "data": data, "type": kind })
            }
        })
        .collect()
}

/// What a frame decrypts to: itself, its H.264/H.265 clear header with long
/// start codes (as the sender authenticates and sends it).
fn as_decrypted(codec: MediaCodec, frame: &gst::BufferRef) -> Vec<u8> {
    let bytes = frame.map_readable().unwrap();
    let layout = Layout::of(codec, &bytes, is_keyframe(frame));
    if !layout.nal_units {
        return bytes.to_vec();
    }
    let mut out = nalu::with_long_start_codes(&bytes[..layout.clear]);
    out.extend_from_slice(&bytes[layout.clear..]);
    out
}

/// `element` (a gst-launch description) in a harness whose input has `caps`.
fn harness_with_caps(element: &str, caps: &gst::Caps) -> gst_check::Harness {
    let mut h = gst_check::Harness::with_element(&make(element), Some("sink"), Some("src"));
    h.set_src_caps(caps.clone());
    h
}

/// The key options of both sides: ours (a gst-launch fragment) and LiveKit's.
fn key_options(passphrase: bool) -> (String, Value) {
    if passphrase {
        (
            format!("passphrase=\"{PASSPHRASE}\""),
            json!({ "passphrase": PASSPHRASE }),
        )
    } else {
        (format!("key={RAW_KEY}"), json!({ "raw": RAW_KEY }))
    }
}

#[test]
fn livekit_opens_our_frames_of_every_codec() {
    for (name, codec, pipeline) in CODECS {
        let (caps, frames) = encoded(pipeline);
        for passphrase in [false, true] {
            let (ours, theirs) = key_options(passphrase);
            let mut enc = harness_with_caps(
                &format!("streamencrypt mode=livekit {ours} key-id=3"),
                &caps,
            );
            let sealed: Vec<gst::Buffer> = frames
                .iter()
                .map(|frame| enc.push_and_pull(frame.clone()).unwrap())
                .collect();
            for (frame, original) in sealed.iter().zip(&frames) {
                assert_ne!(
                    frame.map_readable().unwrap().as_slice(),
                    original.map_readable().unwrap().as_slice()
                );
                // TAG_MEMORY: GStreamer's note that the memory was replaced.
                let mask = !gst::BufferFlags::TAG_MEMORY;
                assert_eq!(frame.flags() & mask, original.flags() & mask, "flags kept");
            }
            let response = livekit(&json!({
                "op": "decrypt", "codec": name, "key": theirs, "keyIndex": 3,
                "frames": frame_list(name, &sealed),
            }));
            let opened = response["frames"].as_array().unwrap();
            for (i, (got, original)) in opened.iter().zip(&frames).enumerate() {
                assert_eq!(got["ok"], true, "{name} frame {i}: {got}");
                assert_eq!(
                    unhex(got["data"].as_str().unwrap()),
                    as_decrypted(codec, original),
                    "{name} passphrase={passphrase} frame {i}"
                );
            }
        }
    }
}

#[test]
fn we_open_livekits_frames_of_every_codec() {
    for (name, codec, pipeline) in CODECS {
        let (caps, frames) = encoded(pipeline);
        for passphrase in [false, true] {
            let (ours, theirs) = key_options(passphrase);
            let response = livekit(&json!({
                "op": "encrypt", "codec": name, "key": theirs, "keyIndex": 5,
                "frames": frame_list(name, &frames),
            }));
            let mut dec = harness_with_caps(
                &format!("streamdecrypt mode=livekit {ours} key-id=5 on-error=fail"),
                &caps,
            );
            for (i, (sealed, original)) in response["frames"]
                .as_array()
                .unwrap()
                .iter()
                .zip(&frames)
                .enumerate()
            {
                let mut buffer =
                    gst::Buffer::from_mut_slice(unhex(sealed["data"].as_str().unwrap()));
                buffer.get_mut().unwrap().set_flags(original.flags());
                let opened = dec.push_and_pull(buffer).unwrap();
                assert_eq!(
                    opened.map_readable().unwrap().as_slice(),
                    as_decrypted(codec, original),
                    "{name} passphrase={passphrase} frame {i}"
                );
            }
        }
    }
}

#[test]
fn our_sealing_gives_livekits_bytes() {
    // With LiveKit's IV, our `seal` of the same frame under the same derived key
    // and key index writes what LiveKit wrote, byte for byte (the IV is the only
    // choice a sender makes).
    let salt = DEFAULT_RATCHET_SALT.as_bytes();
    for (name, codec, pipeline) in CODECS {
        let (_, frames) = encoded(pipeline);
        for (material, theirs) in [
            (
                Material::from_raw_key(&unhex(RAW_KEY)),
                json!({ "raw": RAW_KEY }),
            ),
            (
                Material::from_passphrase(PASSPHRASE),
                json!({ "passphrase": PASSPHRASE }),
            ),
        ] {
            let aead = Aead::gcm(GcmCipher::Aes, &material.frame_key(salt, 16));
            let response = livekit(&json!({
                "op": "encrypt", "codec": name, "key": theirs, "keyIndex": 7,
                "frames": frame_list(name, &frames),
            }));
            for (i, (sealed, frame)) in response["frames"]
                .as_array()
                .unwrap()
                .iter()
                .zip(&frames)
                .enumerate()
            {
                let theirs = unhex(sealed["data"].as_str().unwrap());
                let iv: [u8; livekit::IV_LEN] =
                    unhex(sealed["iv"].as_str().unwrap()).try_into().unwrap();
                let bytes = frame.map_readable().unwrap();
                let layout = Layout::of(codec, &bytes, is_keyframe(frame));
                let ours = livekit::seal(&aead, 7, &iv, layout, &bytes).unwrap();
                assert!(
                    ours == theirs,
                    "{name} frame {i}: our bytes differ from LiveKit's"
                );
            }
        }
    }
}

#[test]
fn key_index_switches_and_ratchets_both_ways() {
    let (name, codec, pipeline) = CODECS[0];
    let (caps, frames) = encoded(pipeline);
    // We send: key index 1, then 2 (set-key), then key 2 ratcheted twice, one
    // step at a time, as LiveKit's receivers follow ratchets.
    let mut enc = harness_with_caps(
        &format!("streamencrypt mode=livekit key={RAW_KEY} key-id=1"),
        &caps,
    );
    let element = enc.element().unwrap();
    let mut sealed = Vec::new();
    for (i, frame) in frames.iter().enumerate() {
        match i {
            4 => assert!(element.emit_by_name::<bool>("set-key", &[&2u64, &OTHER_KEY])),
            7 | 9 => assert!(element.emit_by_name::<bool>("ratchet-key", &[&2u64])),
            _ => {}
        }
        sealed.push(enc.push_and_pull(frame.clone()).unwrap());
    }
    assert!(
        !element.emit_by_name::<bool>("ratchet-key", &[&1u64]),
        "not the key in use"
    );
    let response = livekit(&json!({
        "op": "decrypt", "codec": name, "key": { "raw": OTHER_KEY }, "keyIndex": 2,
        "keys": [{ "key": { "raw": RAW_KEY }, "keyIndex": 1 }],
        "frames": frame_list(name, &sealed),
    }));
    for (i, (got, original)) in response["frames"]
        .as_array()
        .unwrap()
        .iter()
        .zip(&frames)
        .enumerate()
    {
        assert_eq!(got["ok"], true, "frame {i}: {got}");
        assert_eq!(
            unhex(got["data"].as_str().unwrap()),
            as_decrypted(codec, original)
        );
    }

    // LiveKit sends: key index 1, a switch to key 2, then a ratchet of it.
    let mut list = frame_list(name, &frames);
    list.insert(9, json!({ "action": "ratchet", "keyIndex": 2 }));
    list.insert(
        5,
        json!({ "action": "setKey", "keyIndex": 2, "key": { "raw": OTHER_KEY } }),
    );
    let response = livekit(&json!({
        "op": "encrypt", "codec": name, "key": { "raw": RAW_KEY }, "keyIndex": 1,
        "frames": list,
    }));
    let dec = make("streamdecrypt mode=livekit on-error=fail");
    for (kid, key) in [(1u64, RAW_KEY), (2, OTHER_KEY)] {
        assert!(dec.emit_by_name::<bool>("add-key", &[&kid, &key]));
    }
    let mut dec = gst_check::Harness::with_element(&dec, Some("sink"), Some("src"));
    dec.set_src_caps(caps.clone());
    let mut sealed = response["frames"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|entry| entry.get("action").is_none());
    for (i, original) in frames.iter().enumerate() {
        let entry = sealed.next().unwrap();
        let mut buffer = gst::Buffer::from_mut_slice(unhex(entry["data"].as_str().unwrap()));
        buffer.get_mut().unwrap().set_flags(original.flags());
        let opened = dec.push_and_pull(buffer).unwrap();
        assert_eq!(
            opened.map_readable().unwrap().as_slice(),
            as_decrypted(codec, original),
            "frame {i}"
        );
    }
    assert_eq!(stat(&dec.element().unwrap(), "key-switches"), 1);
}
