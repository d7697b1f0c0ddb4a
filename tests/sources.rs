// SPDX-License-Identifier: MPL-2.0
//! Both elements behind every kind of source, with caps and without: files,
//! pipes, test sources, applications and sockets send buffers with no caps at
//! all, and BaseTransform would refuse those as "not negotiated". Every mode, in
//! both framings, must encrypt and decrypt them byte for byte.

mod common;

use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use gst::prelude::*;

const FRAMINGS: [&str; 2] = ["buffer", "stream"];

/// `mode=... framing=... key=...`, and aesenc's unpadded stream as a mode of
/// its own (its buffers do not line up with the input).
fn variants() -> Vec<String> {
    let mut variants: Vec<String> = MODES
        .iter()
        .flat_map(|(mode, key_len, _)| {
            FRAMINGS.iter().map(move |framing| {
                format!(
                    "mode={mode} framing={framing} key={} key-id=5",
                    key_of(*key_len, 9)
                )
            })
        })
        .collect();
    for framing in FRAMINGS {
        variants.push(format!(
            "mode=aes-128-cbc per-buffer-padding=false framing={framing} key={}",
            key_of(16, 9)
        ));
    }
    variants
}

/// A pipeline that is set to NULL when dropped.
struct Stopping(gst::Pipeline);

impl Drop for Stopping {
    fn drop(&mut self) {
        let _ = self.0.set_state(gst::State::Null);
    }
}

/// Runs a gst-launch description to EOS; panics on an error or after a minute.
fn run(description: &str) -> Stopping {
    let pipeline = Stopping(launch(description));
    pipeline.0.set_state(gst::State::Playing).unwrap();
    wait_for_eos(&pipeline.0, description);
    pipeline
}

fn wait_for_eos(pipeline: &gst::Pipeline, what: &str) {
    let bus = pipeline.bus().unwrap();
    let message = bus
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(60),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .unwrap_or_else(|| panic!("{what}: no EOS within a minute"));
    if let gst::MessageView::Error(err) = message.view() {
        panic!("{what}: {} ({:?})", err.error(), err.debug());
    }
}

/// Asserts that `got` is `want`, saying where they part instead of printing
/// both.
fn assert_same(got: &[u8], want: &[u8], what: &str) {
    if let Some(at) = got.iter().zip(want).position(|(a, b)| a != b) {
        panic!(
            "{what}: byte {at} differs ({} bytes, {} expected)",
            got.len(),
            want.len()
        );
    }
    assert_eq!(got.len(), want.len(), "{what}: length");
}

/// Everything an appsink received, in one piece.
fn received(pipeline: &gst::Pipeline, name: &str) -> Vec<u8> {
    let sink = app_sink(pipeline, name);
    let mut bytes = Vec::new();
    while let Some(sample) = sink.try_pull_sample(gst::ClockTime::ZERO) {
        bytes.extend_from_slice(&sample.buffer().unwrap().map_readable().unwrap());
    }
    bytes
}

/// The input the file-like sources read: 100 kB that no buffer size divides.
fn input_file(dir: &Path) -> (std::path::PathBuf, Vec<u8>) {
    let bytes: Vec<u8> = (0..100_003u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let path = dir.join("input.bin");
    std::fs::write(&path, &bytes).unwrap();
    (path, bytes)
}

#[test]
fn appsrc_without_caps() {
    init();
    for variant in variants() {
        let pipeline = launch(&format!(
            "appsrc name=src format=bytes ! streamencrypt {variant} \
             ! streamdecrypt {variant} on-error=fail ! appsink name=sink sync=false wait-on-eos=false"
        ));
        let src = app_src(&pipeline, "src");
        assert!(src.caps().is_none());
        pipeline.set_state(gst::State::Playing).unwrap();
        let mut sent = Vec::new();
        for i in 0..25 {
            let bytes = payload(i);
            sent.extend_from_slice(&bytes);
            src.push_buffer(gst::Buffer::from_mut_slice(bytes)).unwrap();
        }
        src.end_of_stream().unwrap();
        wait_for_eos(&pipeline, &variant);
        assert_same(&received(&pipeline, "sink"), &sent, &variant);
        pipeline.set_state(gst::State::Null).unwrap();
    }
}

#[test]
fn fakesrc() {
    for variant in variants() {
        let pipeline = run(&format!(
            "fakesrc num-buffers=30 sizetype=random sizemax=3000 filltype=random \
             ! tee name=t ! queue ! appsink name=plain sync=false wait-on-eos=false \
             t. ! queue ! streamencrypt {variant} ! streamdecrypt {variant} on-error=fail \
             ! appsink name=decrypted sync=false wait-on-eos=false"
        ));
        let plain = received(&pipeline.0, "plain");
        assert!(plain.len() > 1000);
        assert_same(&received(&pipeline.0, "decrypted"), &plain, &variant);
    }
}

/// `filesrc` or `fdsrc` reading `path`, as a gst-launch source description.
/// The file stays open as long as the returned handle lives.
fn file_source(kind: &str, path: &Path, blocksize: usize) -> (String, Option<std::fs::File>) {
    match kind {
        "filesrc" => (
            format!("filesrc location={} blocksize={blocksize}", path.display()),
            None,
        ),
        _ => {
            let file = std::fs::File::open(path).unwrap();
            (
                format!("fdsrc fd={} blocksize={blocksize}", file.as_raw_fd()),
                Some(file),
            )
        }
    }
}

#[test]
fn files_and_pipes() {
    let dir = tempfile::tempdir().unwrap();
    let (input, bytes) = input_file(dir.path());
    let encrypted = dir.path().join("encrypted");
    let output = dir.path().join("output");
    for kind in ["filesrc", "fdsrc"] {
        for variant in variants() {
            if variant.contains("framing=stream") {
                // As with `openssl enc`: a file in, an encrypted file out, and back.
                let (source, _open) = file_source(kind, &input, 4096);
                run(&format!(
                    "{source} ! streamencrypt {variant} ! filesink location={}",
                    encrypted.display()
                ));
                let (source, _open) = file_source(kind, &encrypted, 1000);
                run(&format!(
                    "{source} ! streamdecrypt {variant} ! filesink location={}",
                    output.display()
                ));
            } else {
                let (source, _open) = file_source(kind, &input, 4096);
                run(&format!(
                    "{source} ! streamencrypt {variant} ! streamdecrypt {variant} \
                     on-error=fail ! filesink location={}",
                    output.display()
                ));
            }
            let what = format!("{kind} {variant}");
            assert_same(&std::fs::read(&output).unwrap(), &bytes, &what);
        }
    }
}

/// A free UDP port on loopback (free when asked; the test binds it right after).
fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn udpsrc_without_caps() {
    for variant in variants() {
        let port = free_udp_port();
        let receiver = launch(&format!(
            "udpsrc address=127.0.0.1 port={port} buffer-size=4194304 \
             ! streamdecrypt {variant} on-error=fail ! appsink name=sink sync=false wait-on-eos=false"
        ));
        receiver.set_state(gst::State::Playing).unwrap();
        let sender = launch(&format!(
            "appsrc name=src format=bytes ! streamencrypt {variant} \
             ! udpsink host=127.0.0.1 port={port} sync=false"
        ));
        sender.set_state(gst::State::Playing).unwrap();
        let src = app_src(&sender, "src");
        let sink = app_sink(&receiver, "sink");
        let mut sent = Vec::new();
        let mut got = Vec::new();
        for i in 0..20 {
            let bytes = payload(i)[..1000.min(payload(i).len())].to_vec();
            sent.extend_from_slice(&bytes);
            src.push_buffer(gst::Buffer::from_mut_slice(bytes)).unwrap();
        }
        // The unpadded CBC stream keeps its last bytes until EOS, which UDP does
        // not carry: compare what a datagram stream can deliver.
        let expected = if variant.contains("per-buffer-padding=false") {
            sent.len() / 16 * 16 - 16
        } else {
            sent.len()
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while got.len() < expected && Instant::now() < deadline {
            if let Some(sample) = sink.try_pull_sample(gst::ClockTime::from_mseconds(100)) {
                got.extend_from_slice(&sample.buffer().unwrap().map_readable().unwrap());
            }
        }
        let messages = drain(&receiver.bus().unwrap());
        assert_eq!(first_error(&messages), None, "{variant}");
        assert_same(
            &got,
            &sent[..expected.max(got.len()).min(sent.len())],
            &variant,
        );
        sender.set_state(gst::State::Null).unwrap();
        receiver.set_state(gst::State::Null).unwrap();
    }
}

#[test]
fn tcpclientsrc_without_caps() {
    let dir = tempfile::tempdir().unwrap();
    let (_, bytes) = input_file(dir.path());
    for variant in variants() {
        // A byte stream over TCP: the decrypter reads it behind tcpclientsrc. With
        // framing=buffer, TCP loses the boundaries, so there the plaintext goes
        // over TCP and both elements run behind tcpclientsrc.
        let stream = variant.contains("framing=stream");
        let (send, receive) = if stream {
            (
                format!("streamencrypt name=enc {variant} !"),
                format!("streamdecrypt {variant} !"),
            )
        } else {
            (
                String::new(),
                format!("streamencrypt {variant} ! streamdecrypt {variant} on-error=fail !"),
            )
        };
        let sender = launch(&format!(
            "appsrc name=src format=bytes ! {send} \
             tcpserversink name=server host=127.0.0.1 port=0 sync=false"
        ));
        sender.set_state(gst::State::Playing).unwrap();
        let server = sender.by_name("server").unwrap();
        // tcpclientsrc connects on its way to PAUSED: the server must listen.
        wait_until("server listening", || {
            server.property::<i32>("current-port") > 0
        });
        let port = server.property::<i32>("current-port");
        let receiver = launch(&format!(
            "tcpclientsrc host=127.0.0.1 port={port} blocksize=777 ! {receive} \
             appsink name=sink sync=false wait-on-eos=false"
        ));
        receiver.set_state(gst::State::Playing).unwrap();
        wait_until("client connected", || {
            server.property::<u32>("num-handles") == 1
        });
        let src = app_src(&sender, "src");
        for chunk in bytes.chunks(9_999) {
            src.push_buffer(gst::Buffer::from_slice(chunk.to_vec()))
                .unwrap();
        }
        src.end_of_stream().unwrap();
        // The server closes the connection when it stops, which ends the client;
        // first it must have sent everything.
        wait_for_eos(&sender, &variant);
        let total = match sender.by_name("enc") {
            Some(enc) => stat(&enc, "bytes-out"),
            None => bytes.len() as u64,
        };
        wait_until("everything sent", || {
            server.property::<u64>("bytes-served") >= total
        });
        sender.set_state(gst::State::Null).unwrap();
        wait_for_eos(&receiver, &variant);
        assert_same(&received(&receiver, "sink"), &bytes, &variant);
        sender.set_state(gst::State::Null).unwrap();
        receiver.set_state(gst::State::Null).unwrap();
    }
}

/// `cat file | gst-launch-1.0 fdsrc ! streamencrypt ... ! fdsink > out`, as the
/// README shows, through a real pipe into a process of its own.
#[test]
fn a_pipe_through_gst_launch() {
    let dir = tempfile::tempdir().unwrap();
    let (_, bytes) = input_file(dir.path());
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, format!("4 {}\n", key_of(16, 3))).unwrap();
    let filter = |element: &str, input: &[u8]| -> Vec<u8> {
        let mut child = gst_command("gst-launch-1.0", dir.path())
            .args(["-q", "fdsrc", "!", element, "framing=stream"])
            .arg(format!("key-file={}", key_file.display()))
            .args(["!", "fdsink"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let input = input.to_vec();
        let writer = std::thread::spawn(move || stdin.write_all(&input).unwrap());
        let output = child.wait_with_output().unwrap();
        writer.join().unwrap();
        assert!(
            output.status.success(),
            "{element}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        output.stdout
    };
    let encrypted = filter("streamencrypt", &bytes);
    assert_eq!(&encrypted[..4], b"SCRY");
    assert_same(&filter("streamdecrypt", &encrypted), &bytes, "decrypted");
}

/// Encoders that allocate their output with what downstream proposes
/// (`opusenc` through `GstAudioEncoder`, `openh264enc` through `GstVideoEncoder`)
/// hand the encrypter buffers with the room it asked for: every one is
/// encrypted in its own memory, and decrypts to what the same encoder writes
/// without us. (`vp8enc`, `jpegenc` and gst-libav's encoders copy their
/// library's output into buffers of their own: those take the copying path.)
#[test]
fn encoders_that_take_the_proposal_are_encrypted_in_place() {
    let sources = [
        "audiotestsrc num-buffers=40 ! audioconvert ! opusenc",
        "videotestsrc num-buffers=10 ! video/x-raw,width=320,height=240 ! openh264enc",
    ];
    for source in sources {
        let plain = run(&format!(
            "{source} ! appsink name=out sync=false wait-on-eos=false"
        ));
        let want = received(&plain.0, "out");
        assert!(want.len() > 1000, "{source} wrote {} bytes", want.len());
        for mode in [
            "mode=aes-128-gcm key-id=5",
            "mode=sm4-ecb",
            "mode=aes-128-cbc",
        ] {
            let settings = format!("{mode} key={}", key_of(16, 3));
            let pipeline = run(&format!(
                "{source} ! streamencrypt name=enc {settings} ! \
                 streamdecrypt {settings} on-error=fail ! appsink name=out sync=false wait-on-eos=false"
            ));
            let what = format!("{source}, {mode}");
            assert_same(&received(&pipeline.0, "out"), &want, &what);
            let stats = pipeline
                .0
                .by_name("enc")
                .unwrap()
                .property::<gst::Structure>("stats");
            let buffers = stats.get::<u64>("buffers").unwrap();
            assert!(buffers >= 10, "{what}: {stats}");
            assert_eq!(
                stats.get::<u64>("buffers-in-place").unwrap(),
                buffers,
                "{what}: {stats}"
            );
        }
    }
}
