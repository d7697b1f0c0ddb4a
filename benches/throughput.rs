// SPDX-License-Identifier: MPL-2.0
//! Throughput and cost per buffer, measured in one run on the same machine, side by
//! side: streamencrypt/streamdecrypt in every mode through real pipelines
//! (`appsrc ! element ! fakesink`), `identity` in their place (the floor),
//! gst-plugins-bad's `aesenc`/`aesdec`, the cipher core alone (no GStreamer), and
//! `openssl speed -evp` for the same cipher.
//!
//! Run with `cargo bench --bench throughput` (or `scripts/bench.sh`). Arguments
//! filter: `-- aes-128-gcm 1200` measures only that mode and size.

mod common;
use common::EncoderAllocation;

use std::process::Command;
use std::time::{Duration, Instant};

use gst::prelude::*;
use gststreamcrypt::compat::aes_cbc::CbcOptions;
use gststreamcrypt::format::{Encoder, Format, ReadyKey, TrialDecoder};
use gststreamcrypt::keys::KeyText;
use gststreamcrypt::livekit::{Layout, MediaCodec, SealedFrame};
use gststreamcrypt::mode::Mode;
use gststreamcrypt::sframe::ParsedFrame;

const SIZES: [usize; 4] = [188, 1200, 16 * 1024, 1024 * 1024];
/// Each measurement aims at about this long.
const TARGET: Duration = Duration::from_millis(250);
/// Runs of each pipeline, taken in turn with the others of the same row (floor,
/// ours, aesenc/aesdec), so that a slow spell of the machine does not favour one
/// of them; the fastest run counts.
const ROUNDS: usize = 5;

fn key_for(mode: Mode) -> String {
    let len = match mode {
        Mode::Aes256Gcm | Mode::Aes256Cbc => 32,
        Mode::Aes192Gcm => 24,
        _ => 16,
    };
    (0..len).map(|i| format!("{:02x}", i * 7 + 1)).collect()
}

/// The caps of the bench's buffers: bytes, for every mode but LiveKit.
const BYTE_CAPS: &str = "application/x-bench";
/// mode=livekit lays frames out by codec: H.264 access units in Annex B, the
/// layout whose ciphertext is escaped (the most work).
const LIVEKIT_CAPS: &str = "video/x-h264,stream-format=byte-stream,alignment=au";
/// The start of every LiveKit bench frame: a start code and the header of an IDR
/// slice NAL unit (the rest of its slice header stays clear too).
const H264_IDR_START: [u8; 5] = [0, 0, 0, 1, 0x65];

fn caps_for(mode: Mode) -> &'static str {
    if mode == Mode::Livekit {
        LIVEKIT_CAPS
    } else {
        BYTE_CAPS
    }
}

/// The bench's plaintext of `size` bytes in `mode`: an H.264 access unit for
/// LiveKit, bytes for the others.
fn plaintext_for(mode: Mode, size: usize) -> Vec<u8> {
    let mut plaintext: Vec<u8> = (0..size).map(|i| (i * 31 + 7) as u8).collect();
    if mode == Mode::Livekit {
        plaintext[..H264_IDR_START.len()].copy_from_slice(&H264_IDR_START);
    }
    plaintext
}

/// What an encrypting pipeline's source writes in `mode`: a LiveKit frame starts
/// as an H.264 access unit.
fn written_input(mode: Mode, len: usize) -> Input {
    let head: &[u8] = if mode == Mode::Livekit {
        &H264_IDR_START
    } else {
        &[]
    };
    Input::Written(len, head)
}

/// What the source puts in each buffer.
#[derive(Clone)]
enum Input {
    /// `len` bytes written in place, as an encoder writes its output, starting
    /// with `head` (a LiveKit frame's start code and NAL unit header): what the
    /// encrypting pipelines get (the other bytes do not matter to them).
    Written(usize, &'static [u8]),
    /// These bytes copied in, as a demuxer or a socket delivers them: what the
    /// decrypting pipelines get (ciphertext that must authenticate). The copy
    /// reads the bytes too, so twice the buffer passes through the caches.
    Copied(Vec<u8>),
}

impl Input {
    fn len(&self) -> usize {
        match self {
            Input::Written(len, _) => *len,
            Input::Copied(bytes) => bytes.len(),
        }
    }
}

/// One pipeline of a row: `appsrc caps=<caps> ! <description> ! fakesink`, fed
/// `input`.
#[derive(Clone)]
struct Pipeline {
    caps: &'static str,
    description: String,
    input: Input,
}

/// Time to push `count` buffers through `pipeline` and see EOS. The source makes each buffer as it goes, so
/// the bytes reach the element as they would from an encoder or a socket, and
/// the floor (`identity`) pays for that making too.
fn run_pipeline(bench: &Pipeline, count: usize) -> Duration {
    let Pipeline {
        caps,
        description,
        input,
    } = bench;
    let pipeline = gst::parse::launch(&format!(
        "appsrc name=src caps={caps} format=bytes ! {description} ! fakesink sync=false"
    ))
    .expect("pipeline")
    .downcast::<gst::Pipeline>()
    .unwrap();
    let src = pipeline
        .by_name("src")
        .unwrap()
        .downcast::<gst_app::AppSrc>()
        .unwrap();
    let input = input.clone();
    let mut left = count;
    // Asked once the first buffer has taken the caps downstream.
    let mut allocation: Option<EncoderAllocation> = None;
    src.set_callbacks(
        gst_app::AppSrcCallbacks::builder()
            .need_data(move |src, _| {
                if left == 0 {
                    let _ = src.end_of_stream();
                    return;
                }
                if left < count && allocation.is_none() {
                    allocation = Some(EncoderAllocation::query(&src.static_pad("src").unwrap()));
                }
                left -= 1;
                let mut buffer = match (&input, &allocation) {
                    // Encoder output: allocated as encoders do.
                    (Input::Written(..), Some(allocation)) => allocation.buffer(input.len()),
                    // Demuxer or socket output, or the first buffer.
                    _ => gst::Buffer::with_size(input.len()).unwrap(),
                };
                let buffer_ref = buffer.get_mut().unwrap();
                match &input {
                    Input::Written(_, head) => {
                        let mut map = buffer_ref.map_writable().unwrap();
                        map.fill(0x5a);
                        map[..head.len()].copy_from_slice(head);
                    }
                    Input::Copied(bytes) => {
                        buffer_ref.copy_from_slice(0, bytes).unwrap();
                    }
                }
                let _ = src.push_buffer(buffer);
            })
            .build(),
    );
    pipeline.set_state(gst::State::Paused).unwrap();
    let start = Instant::now();
    pipeline.set_state(gst::State::Playing).unwrap();
    let message = pipeline
        .bus()
        .unwrap()
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(600),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .expect("EOS");
    let elapsed = start.elapsed();
    if let gst::MessageView::Error(err) = message.view() {
        panic!("{description}: {}", err.error());
    }
    pipeline.set_state(gst::State::Null).unwrap();
    elapsed
}

/// How many runs make a measurement of about TARGET, from a short probe run.
fn calibrate(size: usize, mut probe: impl FnMut(usize) -> Duration) -> usize {
    let probe_count = ((4 << 20) / size.max(1)).clamp(20, 5000);
    let elapsed = probe(probe_count).max(Duration::from_micros(100));
    let count = (TARGET.as_secs_f64() / elapsed.as_secs_f64() * probe_count as f64) as usize;
    count.clamp(20, 2_000_000)
}

/// Cost of one buffer through each pipeline (description and buffer): the fastest
/// of ROUNDS runs, the pipelines taking turns.
fn pipeline_costs(pipelines: &[Pipeline]) -> Vec<Duration> {
    let counts: Vec<usize> = pipelines
        .iter()
        .map(|pipeline| calibrate(pipeline.input.len(), |n| run_pipeline(pipeline, n)))
        .collect();
    let mut best = vec![Duration::MAX; pipelines.len()];
    for _ in 0..ROUNDS {
        for ((pipeline, &count), best) in pipelines.iter().zip(&counts).zip(&mut best) {
            *best = (*best).min(run_pipeline(pipeline, count) / count as u32);
        }
    }
    best
}

/// `plaintext` encrypted as streamencrypt does it, for the decrypt runs. The same
/// frame is sent again and again: the decrypter runs with its replay window off.
fn ciphertext(format: &Format, key: &ReadyKey, plaintext: &[u8]) -> Vec<u8> {
    let mut encoder = encoder(format, key);
    if let Some(frame) = encoder.encrypt_frame(key, plaintext, true) {
        return frame.unwrap();
    }
    let mut out = vec![0u8; format.max_encrypted_len(plaintext.len())];
    let len = encoder.encrypt(key, plaintext, &mut out).unwrap();
    out.truncate(len);
    out
}

/// The encoder of `format`, told the codec of the LiveKit bench frames.
fn encoder(format: &Format, key: &ReadyKey) -> Encoder {
    let mut encoder = Encoder::new(format, key);
    encoder.set_codec(MediaCodec::H264);
    encoder
}

/// Encrypts one buffer as the element does: a LiveKit frame into a new one, the
/// other formats into `out`.
fn encrypt_once(encoder: &mut Encoder, key: &ReadyKey, input: &[u8], out: &mut [u8]) -> usize {
    match encoder.encrypt_frame(key, input, true) {
        Some(frame) => frame.unwrap().len(),
        None => encoder.encrypt(key, input, out).unwrap(),
    }
}

/// The cipher core alone: encrypt and decrypt one buffer, best of three.
fn core_costs(format: &Format, key: &ReadyKey, plaintext: &[u8]) -> (Duration, Duration) {
    let size = plaintext.len();
    let input = plaintext;
    let mut encrypted = vec![0u8; format.max_encrypted_len(size)];
    let mut encoder = encoder(format, key);
    let count = calibrate(size, |n| {
        let start = Instant::now();
        for _ in 0..n {
            encrypt_once(&mut encoder, key, input, &mut encrypted);
        }
        start.elapsed()
    });
    let encrypt = (0..3)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..count {
                std::hint::black_box(encrypt_once(&mut encoder, key, input, &mut encrypted));
            }
            start.elapsed() / count as u32
        })
        .min()
        .unwrap();
    let frame = &ciphertext(format, key, input);
    let mut out = vec![0u8; frame.len() + 32];
    let decrypt = (0..3)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..count {
                match format {
                    Format::Livekit => {
                        let layout = Layout::of(MediaCodec::H264, frame, true);
                        let sealed = SealedFrame::parse(frame, layout).unwrap();
                        let aead = key.frame_key().unwrap().aead();
                        std::hint::black_box(sealed.open(aead).unwrap());
                    }
                    Format::Sframe(_) => {
                        let parsed = ParsedFrame::parse(frame).unwrap();
                        std::hint::black_box(
                            key.sframe()
                                .unwrap()
                                .decrypt_into(&parsed, &[], &mut out)
                                .unwrap(),
                        );
                    }
                    _ => {
                        let mut decoder = TrialDecoder::new(format).unwrap();
                        std::hint::black_box(decoder.decrypt(&[key], frame, &mut out).unwrap());
                    }
                }
            }
            start.elapsed() / count as u32
        })
        .min()
        .unwrap();
    (encrypt, decrypt)
}

/// Runs of `openssl speed` per figure, the fastest counting, as for our
/// pipelines: one run of a second varies by a fifth from run to run.
const OPENSSL_RUNS: usize = 3;

/// `openssl speed` for one algorithm (`-evp aes-128-gcm`, `-hmac sha256`) at
/// `size`, in MB/s: the best of OPENSSL_RUNS runs of a second.
fn openssl_speed_of(algorithm: &str, size: usize) -> Option<f64> {
    (0..OPENSSL_RUNS)
        .filter_map(|_| {
            let output = Command::new("openssl")
                .args(["speed", "-mr", "-seconds", "1", "-bytes", &size.to_string()])
                .args(algorithm.split(' '))
                .output()
                .ok()?;
            let text = String::from_utf8_lossy(&output.stdout);
            // "+F:<n>:<name>:<bytes per second>"
            let line = text.lines().find(|line| line.starts_with("+F:"))?;
            let bytes_per_second: f64 = line.rsplit(':').next()?.trim().parse().ok()?;
            Some(bytes_per_second / 1e6)
        })
        .reduce(f64::max)
}

/// OpenSSL doing what a mode does, in MB/s: each algorithm in turn over the same
/// bytes (for AES-CTR-HMAC, the cipher then the MAC), so their times add up.
fn openssl_speed(algorithms: &[&str], size: usize) -> Option<f64> {
    let seconds_per_mb = algorithms
        .iter()
        .map(|algorithm| openssl_speed_of(algorithm, size).map(|mbps| 1.0 / mbps))
        .sum::<Option<f64>>()?;
    Some(1.0 / seconds_per_mb)
}

fn mbps(size: usize, per_buffer: Duration) -> f64 {
    size as f64 / per_buffer.as_secs_f64() / 1e6
}

fn us(per_buffer: Duration) -> f64 {
    per_buffer.as_secs_f64() * 1e6
}

/// What `openssl speed` runs for a mode (OpenSSL 3.0 has no SM4-GCM: SM4-CTR,
/// its cipher without GHASH, stands in), and the reference pipelines of the same
/// cipher run beside ours: aesenc/aesdec's AES-CBC of the same key size, and for
/// LiveKit, SFrame with its cipher (AES-128-GCM) on the same frames.
fn references(mode: Mode) -> (&'static [&'static str], Option<Reference>) {
    let aesenc = |mode| {
        Some(Reference {
            mode,
            encrypter: "aesenc",
            decrypter: "aesdec",
        })
    };
    match mode {
        Mode::Aes128Gcm => (&["-evp aes-128-gcm"], aesenc(Mode::Aes128Cbc)),
        Mode::Aes256Gcm => (&["-evp aes-256-gcm"], aesenc(Mode::Aes256Cbc)),
        Mode::Aes192Gcm => (&["-evp aes-192-gcm"], None),
        Mode::Aes128CtrHmac80 | Mode::Aes128CtrHmac64 | Mode::Aes128CtrHmac32 => {
            (&["-evp aes-128-ctr", "-hmac sha256"], None)
        }
        Mode::Sm4Gcm => (&["-evp sm4-ctr"], None),
        Mode::Sm4Ecb => (&["-evp sm4-ecb"], None),
        Mode::QqTea => (&[], None),
        Mode::Aes128Cbc => (&["-evp aes-128-cbc"], aesenc(Mode::Aes128Cbc)),
        Mode::Aes256Cbc => (&["-evp aes-256-cbc"], aesenc(Mode::Aes256Cbc)),
        Mode::Livekit => (
            &["-evp aes-128-gcm"],
            Some(Reference {
                mode: Mode::Aes128Gcm,
                encrypter: "streamencrypt",
                decrypter: "streamdecrypt",
            }),
        ),
    }
}

/// Pipelines measured beside ours: these elements in this mode.
#[derive(Clone, Copy)]
struct Reference {
    mode: Mode,
    encrypter: &'static str,
    decrypter: &'static str,
}

impl Reference {
    fn name(&self) -> String {
        format!("{}/{} {}", self.encrypter, self.decrypter, self.mode.nick())
    }
}

fn ready_key(mode: Mode) -> (String, Format, ReadyKey) {
    let key_hex = key_for(mode);
    let format = mode.format(CbcOptions::default());
    let key = format
        .parse_key(&KeyText::new(&key_hex), mode.nick())
        .unwrap();
    let key = ReadyKey::new(&format, 1, &key);
    (key_hex, format, key)
}

/// The encrypting and decrypting pipelines of `mode` with these elements, each
/// with what its source feeds it, with the caps and frames of `caps_mode`.
fn element_pipelines(
    mode: Mode,
    encrypter: &str,
    decrypter: &str,
    caps_mode: Mode,
    plaintext: &[u8],
) -> [Pipeline; 2] {
    let (key_hex, format, key) = ready_key(mode);
    let options = match mode {
        Mode::Aes128Cbc | Mode::Aes256Cbc if encrypter == "aesenc" => {
            format!("cipher={} key={key_hex}", mode.nick())
        }
        _ => format!("mode={} key={key_hex}", mode.nick()),
    };
    let decrypter_options = if decrypter == "streamdecrypt" {
        " key-id=1 replay-window=0"
    } else {
        ""
    };
    let caps = caps_for(caps_mode);
    [
        Pipeline {
            caps,
            description: format!("{encrypter} {options}"),
            input: written_input(caps_mode, plaintext.len()),
        },
        Pipeline {
            caps,
            description: format!("{decrypter} {options}{decrypter_options}"),
            input: Input::Copied(ciphertext(&format, &key, plaintext)),
        },
    ]
}

/// What the element adds to the floor, never below a nanosecond.
fn marginal(cost: Duration, floor: Duration) -> Duration {
    cost.saturating_sub(floor).max(Duration::from_nanos(1))
}

fn ratio(a: f64, b: f64) -> String {
    format!("{:.2}", a / b)
}

fn main() {
    let (size_filters, mode_filters) = common::start();
    let sizes: Vec<usize> = SIZES
        .iter()
        .copied()
        .filter(|s| size_filters.is_empty() || size_filters.contains(s))
        .collect();
    let modes: Vec<Mode> = if mode_filters.is_empty() {
        Mode::ALL.to_vec()
    } else {
        mode_filters
    };

    println!(
        "streamcrypt throughput: {} cores, best of {ROUNDS} runs of about {:?} each, \
         the pipelines of a row taking turns",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        TARGET
    );
    println!(
        "pipelines: appsrc ! <element> ! fakesink sync=false, the source writing each buffer\n\
         floor enc/dec = the same with identity, fed as the encrypter (buffers written) and the\n\
         decrypter (ciphertext copied in) are; us = microseconds per buffer through the whole pipeline\n\
         MB/s = 10^6 plaintext bytes/s of the element alone (its cost above the floor)\n\
         core = the cipher alone, no GStreamer; openssl = `openssl speed -evp`, best of 3 runs of 1 s\n\
         ref = the reference pipelines named in each title (aesenc/aesdec; for livekit, SFrame\n\
         AES-128-GCM on the same H.264 frames)\n\
         x = ratios: ours/openssl and ours/ref (MB/s, higher is better); \
         cost = us / (floor us + core us), 1.00 = the element adds nothing of its own\n"
    );

    for mode in modes {
        let (openssl_algorithms, reference) = references(mode);
        println!(
            "\n{} (openssl speed: {}; ref: {})",
            mode.nick(),
            if openssl_algorithms.is_empty() {
                "none".to_string()
            } else {
                openssl_algorithms.join(" + ")
            },
            reference.map_or("none".into(), |r| r.name())
        );
        println!(
            "  {:>8} | {:>13} | {:>8} {:>7} | {:>8} {:>7} | {:>13} | {:>7} | {:>13} | {:>11} | {:>11} | {:>11}",
            "size",
            "floor enc/dec",
            "enc us",
            "MB/s",
            "dec us",
            "MB/s",
            "core enc/dec",
            "openssl",
            "ref enc/dec",
            "x openssl",
            "x ref",
            "cost enc/dec"
        );
        let (_, format, key) = ready_key(mode);
        for &size in &sizes {
            let plaintext = &plaintext_for(mode, size);
            // Each direction has its own floor: its source makes buffers its way.
            let floor_inputs = [written_input(mode, size), Input::Copied(plaintext.clone())];
            let floors = floor_inputs.map(|input| Pipeline {
                caps: caps_for(mode),
                description: "identity".into(),
                input,
            });
            let mut pipelines = floors.to_vec();
            pipelines.extend(element_pipelines(
                mode,
                "streamencrypt",
                "streamdecrypt",
                mode,
                plaintext,
            ));
            if let Some(Reference {
                mode: reference_mode,
                encrypter,
                decrypter,
            }) = reference
            {
                pipelines.extend(element_pipelines(
                    reference_mode,
                    encrypter,
                    decrypter,
                    mode,
                    plaintext,
                ));
            }
            let costs = pipeline_costs(&pipelines);
            let (enc_floor, dec_floor, enc, dec) = (costs[0], costs[1], costs[2], costs[3]);
            let aes = (costs.len() == 6).then(|| [costs[4], costs[5]]);
            let (core_enc, core_dec) = core_costs(&format, &key, plaintext);
            let openssl = (!openssl_algorithms.is_empty())
                .then(|| openssl_speed(openssl_algorithms, size))
                .flatten();
            let enc_mbps = mbps(size, marginal(enc, enc_floor));
            let dec_mbps = mbps(size, marginal(dec, dec_floor));
            let aes_mbps = aes.map(|[e, d]| {
                (
                    mbps(size, marginal(e, enc_floor)),
                    mbps(size, marginal(d, dec_floor)),
                )
            });
            println!(
                "  {:>8} | {:>13} | {:>8.2} {:>7.0} | {:>8.2} {:>7.0} | {:>13} | {:>7} | {:>13} | {:>11} | {:>11} | {:>11}",
                size,
                format!("{:.2}/{:.2}", us(enc_floor), us(dec_floor)),
                us(enc),
                enc_mbps,
                us(dec),
                dec_mbps,
                format!("{:.2}/{:.2}", us(core_enc), us(core_dec)),
                openssl.map_or("-".into(), |v| format!("{v:.0}")),
                aes_mbps.map_or("-".into(), |(e, d)| format!("{e:.0}/{d:.0}")),
                openssl.map_or("-".into(), |v| format!(
                    "{}/{}",
                    ratio(enc_mbps, v),
                    ratio(dec_mbps, v)
                )),
                aes_mbps.map_or("-".into(), |(e, d)| format!(
                    "{}/{}",
                    ratio(enc_mbps, e),
                    ratio(dec_mbps, d)
                )),
                format!(
                    "{}/{}",
                    ratio(enc.as_secs_f64(), (enc_floor + core_enc).as_secs_f64()),
                    ratio(dec.as_secs_f64(), (dec_floor + core_dec).as_secs_f64())
                ),
            );
        }
    }
}
