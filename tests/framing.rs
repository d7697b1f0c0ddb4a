// SPDX-License-Identifier: MPL-2.0
//! `framing=stream`: encrypted byte streams through files and TCP, read back in
//! chunks of any size, with keys rotating across the stream; truncated, corrupted
//! and foreign input.

mod common;

use std::path::Path;

use common::*;
use gst::prelude::*;

/// Encrypts `media_buffer(0..count)` as a byte stream, switching to KEY_B (KID 2)
/// half way; returns the stream.
fn encrypted_stream(mode: &str, count: u64) -> Vec<u8> {
    let key_b = if mode == "aes-256-gcm" {
        KEY_256
    } else {
        KEY_B
    };
    let key_a = if mode == "aes-256-gcm" {
        KEY_256
    } else {
        KEY_A
    };
    let enc = make(&format!(
        "streamencrypt framing=stream mode={mode} key={key_a} key-id=1"
    ));
    let (mut enc, _) = harness(&enc);
    let element = enc.element().unwrap();
    let mut out: Vec<u8> = Vec::new();
    for i in 0..count {
        if i == count / 2 {
            assert!(element.emit_by_name::<bool>("set-key", &[&2u64, &key_b]));
        }
        enc.push(media_buffer(i)).unwrap();
        // The stream header comes as a buffer of its own before the first record.
        while let Some(buffer) = enc.try_pull() {
            out.extend(buffer.map_readable().unwrap().iter());
        }
    }
    out
}

fn plain_stream(count: u64) -> Vec<u8> {
    (0..count).flat_map(payload).collect()
}

/// What `filesrc ! streamdecrypt` makes of `file`, and the first error, if any.
fn decrypt_file(file: &Path, blocksize: usize, options: &str) -> (Vec<u8>, Option<glib::Error>) {
    let pipeline = launch(&format!(
        "filesrc location={} blocksize={blocksize} \
         ! streamdecrypt name=dec framing=stream {options} ! appsink name=sink sync=false",
        file.display()
    ));
    let sink = app_sink(&pipeline, "sink");
    pipeline.set_state(gst::State::Playing).unwrap();
    let mut out: Vec<u8> = Vec::new();
    while let Ok(sample) = sink.pull_sample() {
        out.extend(sample.buffer().unwrap().map_readable().unwrap().iter());
    }
    let bus = pipeline.bus().unwrap();
    let message = bus
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(10),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .unwrap();
    let error = match message.view() {
        gst::MessageView::Error(err) => Some(err.error()),
        _ => None,
    };
    pipeline.set_state(gst::State::Null).unwrap();
    (out, error)
}

#[test]
fn files_read_back_in_chunks_of_any_size() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("receiver.keys");
    std::fs::write(&keys, format!("1 {KEY_A}\n2 {KEY_B}\n")).unwrap();
    for mode in [
        "aes-128-gcm",
        "aes-128-ctr-hmac-32",
        "sm4-ecb",
        "qq-tea",
        "aes-128-cbc",
    ] {
        let file = dir.path().join(format!("{mode}.enc"));
        std::fs::write(&file, encrypted_stream(mode, 40)).unwrap();
        let blocksizes: &[usize] = if mode == "aes-128-gcm" {
            &[1, 2, 3, 5, 7, 8, 9, 11, 12, 13, 100, 4096, 1 << 20]
        } else {
            &[1, 7, 4096]
        };
        for &blocksize in blocksizes {
            let options = format!("mode={mode} key-file={} on-error=fail", keys.display());
            let (out, error) = decrypt_file(&file, blocksize, &options);
            assert!(error.is_none(), "{mode}, blocksize {blocksize}: {error:?}");
            assert!(
                out == plain_stream(40),
                "{mode}, blocksize {blocksize}: stream differs"
            );
        }
    }
}

#[test]
fn a_truncated_file_delivers_every_complete_record_then_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let stream = encrypted_stream("aes-128-gcm", 10);
    let file = dir.path().join("cut.enc");
    // Cut in the middle of the last record.
    std::fs::write(&file, &stream[..stream.len() - 10]).unwrap();
    let key_file = dir.path().join("keys");
    std::fs::write(&key_file, format!("1 {KEY_A}\n2 {KEY_B}\n")).unwrap();
    let options = format!("key-file={} on-error=fail", key_file.display());
    let (out, error) = decrypt_file(&file, 4096, &options);
    let error = error.expect("an error");
    assert!(error.matches(gst::StreamError::Format), "{error}");
    assert!(
        error.message().contains("the stream is cut short"),
        "{error}"
    );
    assert_eq!(out, plain_stream(9), "every record before the cut");
}

#[test]
fn a_corrupted_record_is_dropped_and_the_rest_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let mut stream = encrypted_stream("aes-128-gcm", 10);
    // Flip a byte late in the stream: inside the payload or tag of a record.
    let at = stream.len() - 5;
    stream[at] ^= 0x40;
    let file = dir.path().join("corrupt.enc");
    std::fs::write(&file, &stream).unwrap();
    let key_file = dir.path().join("keys");
    std::fs::write(&key_file, format!("1 {KEY_A}\n2 {KEY_B}\n")).unwrap();
    let keys = format!("key-file={}", key_file.display());

    // On its own, a byte stream stops at the bad record, naming it and where it
    // is, after every good record before it.
    let (out, error) = decrypt_file(&file, 100, &keys);
    let error = error.expect("an error");
    assert!(error.matches(gst::StreamError::Decrypt), "{error}");
    assert!(error.message().starts_with("record 9 at byte "), "{error}");
    assert!(error.message().contains("authentication failed"), "{error}");
    assert_eq!(out, plain_stream(9), "every record before the bad one");

    let (out, error) = decrypt_file(&file, 100, &format!("{keys} on-error=fail"));
    assert!(error.unwrap().matches(gst::StreamError::Decrypt));
    assert_eq!(out, plain_stream(9));

    // Dropping holes into a byte stream is there when asked for; the end of the
    // stream then says what was dropped.
    let (out, error) = decrypt_file(&file, 100, &format!("{keys} on-error=drop"));
    assert!(error.is_none(), "{error:?}");
    assert_eq!(out, plain_stream(9), "all but the last record");
}

/// Stream offsets of the records in `stream` (after the 8-byte header).
fn record_offsets(stream: &[u8]) -> Vec<usize> {
    let mut offsets = Vec::new();
    let mut at = 8;
    while at < stream.len() {
        offsets.push(at);
        let len = u32::from_be_bytes(stream[at..at + 4].try_into().unwrap()) as usize;
        at += 4 + len;
    }
    offsets
}

#[test]
fn a_bad_record_among_buffered_good_ones_stops_there() {
    // The whole stream arrives in one chunk, so good records after the bad one
    // are already buffered when it fails: what came before is delivered, then
    // the error naming the record; no arithmetic on the leftover (a debug build
    // would panic on an underflow) and no false "cut short" at EOS.
    let dir = tempfile::tempdir().unwrap();
    let mut stream = encrypted_stream("aes-128-gcm", 10);
    let offsets = record_offsets(&stream);
    let bad = offsets[3];
    stream[bad + 20] ^= 0x01;
    let file = dir.path().join("bad-record.enc");
    std::fs::write(&file, &stream).unwrap();
    let key_file = dir.path().join("keys");
    std::fs::write(&key_file, format!("1 {KEY_A}\n2 {KEY_B}\n")).unwrap();
    let keys = format!("key-file={}", key_file.display());
    for on_error in ["", "on-error=fail"] {
        let (out, error) = decrypt_file(&file, 1 << 20, &format!("{keys} {on_error}"));
        let error = error.expect("an error");
        assert_eq!(
            error.message(),
            format!(
                "record 3 at byte {bad} ({} bytes): KID 1: authentication failed (wrong key \
                 or mode, or the frame was altered or truncated)",
                offsets[4] - bad - 4
            )
        );
        assert_eq!(out, plain_stream(3));
    }
    let (out, error) = decrypt_file(&file, 1 << 20, &format!("{keys} on-error=drop"));
    assert!(error.is_none(), "{error:?}");
    let expected: Vec<u8> = (0..10).filter(|i| *i != 3).flat_map(payload).collect();
    assert_eq!(out, expected);
}

#[test]
fn a_buffer_larger_than_a_record_goes_as_several() {
    // One buffer over the record limit: it must neither wrap the 32-bit length
    // nor make a record the decrypter refuses.
    let len = gststreamcrypt::framing::MAX_RECORD_PLAINTEXT + 100_000;
    let big: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    let enc = make(&format!("streamencrypt framing=stream key={KEY_A}"));
    let dec = make(&format!("streamdecrypt framing=stream key={KEY_A}"));
    let pipeline = AppPipeline::new(&[&enc, &dec]);
    let out = pipeline.run([gst::Buffer::from_slice(big.clone())]);
    let total: usize = out.iter().map(|b| b.size()).sum();
    assert_eq!(total, len);
    let mut at = 0;
    for buffer in &out {
        let map = buffer.map_readable().unwrap();
        assert!(map[..] == big[at..at + map.len()], "bytes {at}..");
        at += map.len();
    }
    assert_eq!(out.len(), 2, "two records");
    assert_eq!(stat(&dec, "buffers-in"), 2);
}

#[test]
fn foreign_input_is_named_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain.mkv");
    std::fs::write(&file, b"\x1a\x45\xdf\xa3 a Matroska file, say").unwrap();
    let (out, error) = decrypt_file(&file, 3, &format!("key={KEY_A}"));
    let error = error.unwrap();
    assert!(error.matches(gst::StreamError::WrongType));
    assert!(
        error
            .message()
            .starts_with("not a streamcrypt stream: it starts with 1a45df"),
        "{error}"
    );
    assert!(out.is_empty());

    // Ours, but in another mode than the decrypter is set to.
    let file = dir.path().join("gcm.enc");
    std::fs::write(&file, encrypted_stream("aes-256-gcm", 2)).unwrap();
    let (_, error) = decrypt_file(&file, 4096, &format!("key={KEY_A}"));
    let error = error.unwrap();
    assert!(error.matches(gst::StreamError::WrongType));
    assert!(error.message().contains("format 0x0005"), "{error}");
}

#[test]
fn a_muxer_writes_a_streamable_file_for_us() {
    // matroskamux rewrites its headers at the end when downstream can seek; we say
    // it cannot, so it writes a file that needs no rewriting.
    init();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("audio.mka.enc");
    let pipeline = gst::parse::launch(&format!(
        "audiotestsrc num-buffers=50 ! opusenc ! matroskamux \
         ! streamencrypt framing=stream key={KEY_A} ! filesink location={}",
        file.display()
    ))
    .unwrap();
    run_to_eos(&pipeline);
    let pipeline = gst::parse::launch(&format!(
        "filesrc location={} ! streamdecrypt framing=stream key={KEY_A} on-error=fail \
         ! matroskademux ! opusdec ! appsink name=sink sync=false",
        file.display()
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let sink = pipeline
        .by_name("sink")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let mut samples = 0;
    while sink.pull_sample().is_ok() {
        samples += 1;
    }
    pipeline.set_state(gst::State::Null).unwrap();
    assert!(samples >= 49, "{samples} audio buffers decoded");
}

#[test]
fn rewriting_a_byte_stream_is_refused() {
    // Should a muxer seek back anyway, its rewrite would land on our records.
    let enc = make(&format!("streamencrypt framing=stream key={KEY_A}"));
    let (mut h, bus) = harness(&enc);
    h.push_and_pull(media_buffer(0)).unwrap();
    let mut segment = gst::FormattedSegment::<gst::format::Bytes>::new();
    segment.set_start(gst::format::Bytes::from_u64(100));
    // (A sticky event counts as pushed whatever the element answered.)
    h.push_event(gst::event::Segment::new(&segment));
    let err = first_error(&drain(&bus)).unwrap();
    assert!(
        err.message()
            .contains("upstream went back to rewrite byte 100"),
        "{err}"
    );
}

fn run_to_eos(pipeline: &gst::Element) {
    pipeline.set_state(gst::State::Playing).unwrap();
    let message = pipeline
        .bus()
        .unwrap()
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(10),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .unwrap();
    pipeline.set_state(gst::State::Null).unwrap();
    if let gst::MessageView::Error(err) = message.view() {
        panic!("{}", err.error());
    }
}

#[test]
fn tcp_on_loopback() {
    init();
    let sender = gst::parse::launch(&format!(
        "appsrc name=src caps=application/x-streamcrypt-test format=time \
         ! streamencrypt framing=stream key={KEY_A} key-id=1 \
         ! tcpserversink name=server host=127.0.0.1 port=0 sync=false"
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    sender.set_state(gst::State::Playing).unwrap();
    let server = sender.by_name("server").unwrap();
    // The port the server bound once it is listening.
    let mut port = 0;
    for _ in 0..200 {
        port = server.property::<i32>("current-port");
        if port > 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(port > 0, "tcpserversink did not listen");

    let receiver = gst::parse::launch(&format!(
        "tcpclientsrc host=127.0.0.1 port={port} \
         ! streamdecrypt framing=stream key={KEY_A} key-id=1 on-error=fail \
         ! appsink name=sink sync=false"
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    receiver.set_state(gst::State::Playing).unwrap();
    for _ in 0..500 {
        if server.property::<u32>("num-handles") > 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(
        server.property::<u32>("num-handles"),
        1,
        "client did not connect"
    );

    let src = sender
        .by_name("src")
        .unwrap()
        .downcast::<gst_app::AppSrc>()
        .unwrap();
    for i in 0..50 {
        src.push_buffer(media_buffer(i)).unwrap();
    }
    // A client that joins mid-stream gets the stream header first (it travels
    // in the caps' streamheader), then whole records.
    let late = gst::parse::launch(&format!(
        "tcpclientsrc host=127.0.0.1 port={port} \
         ! streamdecrypt framing=stream key={KEY_A} key-id=1 on-error=fail \
         ! appsink name=sink sync=false"
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    late.set_state(gst::State::Playing).unwrap();
    for _ in 0..500 {
        if server.property::<u32>("num-handles") > 1 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(
        server.property::<u32>("num-handles"),
        2,
        "late client did not connect"
    );
    for i in 50..100 {
        src.push_buffer(media_buffer(i)).unwrap();
    }
    src.end_of_stream().unwrap();
    // Read the first client's 100 records before closing the server: a closing
    // tcpserversink drops what it has not sent yet.
    let pull_records = |pipeline: &gst::Pipeline, until: Option<usize>| {
        let sink = pipeline
            .by_name("sink")
            .unwrap()
            .downcast::<gst_app::AppSink>()
            .unwrap();
        let mut out: Vec<Vec<u8>> = Vec::new();
        while until.is_none_or(|n| out.len() < n) {
            let Some(sample) = sink.try_pull_sample(gst::ClockTime::from_seconds(10)) else {
                break;
            };
            out.push(sample.buffer().unwrap().map_readable().unwrap().to_vec());
        }
        out
    };
    let out = pull_records(&receiver, Some(100));
    sender.set_state(gst::State::Null).unwrap();
    receiver.set_state(gst::State::Null).unwrap();
    let expected: Vec<Vec<u8>> = (0..100).map(payload).collect();
    assert!(out == expected, "TCP stream differs: {} records", out.len());

    let late_out = pull_records(&late, None);
    late.set_state(gst::State::Null).unwrap();
    assert!(!late_out.is_empty(), "the late client got nothing");
    // Whole records from a record boundary on, in order.
    let first = (0..100)
        .find(|&i| payload(i) == late_out[0])
        .expect("the late client's first record is one of ours");
    for (i, buffer) in (first..).zip(&late_out) {
        assert!(*buffer == payload(i), "late client: record {i}");
    }
}
