// SPDX-License-Identifier: MPL-2.0
//! Writes the seed corpus of every fuzz target from what the tests use: the RFC
//! 9605 and private-suite vectors, frames and buffers the encoders produce for each
//! suite and format, record streams, key files, and LiveKit frames of each codec.
//!
//! Usage: `seed_corpus TESTS_DATA_DIR CORPUS_DIR` (scripts/fuzz.sh runs it); each
//! target's seeds go to `CORPUS_DIR/<target>/seed-<n>`.

use std::path::{Path, PathBuf};

use streamcrypt::format::{Encoder, Format, ReadyKey};
use streamcrypt::framing::{length_prefix, stream_header};
use streamcrypt::livekit::{Layout, MediaCodec, seal as livekit_seal};
use streamcrypt::sframe::{CipherSuite, SframeKey};
use streamcrypt_fuzz::livekit;
use streamcrypt_fuzz::records::{RecordInput, TAKE_THE_REST};
use streamcrypt_fuzz::sframe_keys::{keys as sframe_keys, open_input, own_base_key, selector};
use streamcrypt_fuzz::trial::{self, key_bytes, keys as trial_keys};
use streamcrypt_fuzz::write_buffers;

fn hex(value: &serde_json::Value) -> Vec<u8> {
    let text = value.as_str().expect("a hex string");
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
        .collect()
}

fn load(dir: &Path, name: &str) -> serde_json::Value {
    let path = dir.join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Plaintexts of the sizes that matter: empty, one byte, around a block, larger.
fn plaintexts() -> Vec<Vec<u8>> {
    [0usize, 1, 15, 16, 17, 100]
        .iter()
        .map(|&len| (0..len).map(|i| (i * 7 + len) as u8).collect())
        .collect()
}

fn seal(key: &SframeKey, ctr: u64, plaintext: &[u8]) -> Vec<u8> {
    let mut frame = vec![0u8; key.encrypted_len(ctr, plaintext.len())];
    let len = key.encrypt_into(ctr, &[], plaintext, &mut frame).unwrap();
    frame.truncate(len);
    frame
}

/// Encrypts `plaintexts` as one stream of `format` under `key`; the final block
/// of aesenc's unpadded stream is the last buffer.
fn encrypt_stream(format: &Format, key: &ReadyKey, plaintexts: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut encoder = Encoder::new(format, key);
    let mut out: Vec<Vec<u8>> = plaintexts
        .iter()
        .map(|plaintext| {
            let mut buf = vec![0u8; format.max_encrypted_len(plaintext.len())];
            let len = encoder.encrypt(key, plaintext, &mut buf).unwrap();
            buf.truncate(len);
            buf
        })
        .filter(|buf| !buf.is_empty())
        .collect();
    out.extend(encoder.finish(key));
    out
}

struct Corpus {
    dir: PathBuf,
    written: usize,
}

impl Corpus {
    fn write(&mut self, target: &str, seeds: impl IntoIterator<Item = Vec<u8>>) {
        let dir = self.dir.join(target);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for (n, seed) in seeds.into_iter().enumerate() {
            let path = dir.join(format!("seed-{n}"));
            std::fs::write(&path, seed).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            self.written += 1;
        }
    }
}

fn sframe_seeds(corpus: &mut Corpus, data_dir: &Path) {
    let rfc = load(data_dir, "sframe-rfc9605.json");
    let private = load(data_dir, "sframe-private-suites.json");
    let headers: Vec<Vec<u8>> = rfc["header"]
        .as_array()
        .unwrap()
        .iter()
        .map(|case| hex(&case["encoded"]))
        .collect();
    corpus.write("sframe_header", headers);

    let vectors = rfc["sframe"].as_array().unwrap().iter();
    let vectors = vectors.chain(private["sframe"].as_array().unwrap());
    let mut open = Vec::new();
    for case in vectors {
        let id = case["cipher_suite"].as_u64().unwrap() as u16;
        let suite = CipherSuite::from_id(id).unwrap();
        let frame = hex(&case["ct"]);
        open.push(open_input(suite, &hex(&case["metadata"]), &frame));
        open.push(open_input(suite, &[], &frame));
    }
    let plaintexts = plaintexts();
    let mut round_trip = Vec::new();
    for suite in CipherSuite::ALL {
        for (n, key) in sframe_keys(suite).iter().enumerate() {
            let ctr = [0, 7, 255, 1 << 40, u64::MAX][n % 5];
            let frame = seal(key, ctr, &plaintexts[n % plaintexts.len()]);
            open.push(open_input(suite, &[], &frame[..frame.len() - 1]));
            open.push(open_input(suite, &[], &frame));
        }
        for (n, plaintext) in plaintexts.iter().enumerate() {
            let mut seed = vec![selector(suite)];
            seed.extend([0u64, 8, 0x123, 1 << 40, u64::MAX][n % 5].to_be_bytes());
            seed.extend([0u64, 1, 256, 1 << 56, u64::MAX - 1][n % 5].to_be_bytes());
            seed.extend((n as u16 * 37).to_be_bytes());
            seed.extend(plaintext);
            round_trip.push(seed);
        }
    }
    corpus.write("sframe_open", open);
    corpus.write("sframe_round_trip", round_trip);
}

/// Streams as `framing=stream` writes them: encrypted buffers of a few formats
/// behind the header, whole and cut short, and streams that are not ours.
fn record_seeds(corpus: &mut Corpus) {
    let suite = CipherSuite::Aes128GcmSha256;
    let key = SframeKey::derive(suite, 9, &own_base_key(suite));
    let sframe_records: Vec<Vec<u8>> = plaintexts()
        .iter()
        .enumerate()
        .map(|(ctr, plaintext)| seal(&key, ctr as u64, plaintext))
        .collect();
    let sm4_keys = trial_keys(0, 0, 0);
    let sm4_records = encrypt_stream(&trial::format(0), sm4_keys[0], &plaintexts());
    let mut streams = Vec::new();
    for (code, records) in [(suite.id(), &sframe_records), (0xFF01, &sm4_records)] {
        let mut stream = stream_header(code).to_vec();
        for record in records {
            stream.extend(length_prefix(record.len()).expect("a seed record fits"));
            stream.extend(record);
        }
        streams.push((code, stream));
    }
    let (code, good) = streams[0].clone();
    let mut bad_length = good.clone();
    bad_length.extend([0xff, 0xff, 0xff, 0xff]);
    let mut zero_length = good.clone();
    zero_length.extend([0, 0, 0, 0]);
    let mut version = good.clone();
    version[4] = 2;
    streams.extend([
        (code, good[..good.len() - 3].to_vec()),
        (code, good[..5].to_vec()),
        (code, bad_length),
        (code, zero_length),
        (code, version),
        (0x0005, good.clone()),
        (code, b"\x1aE\xdf\xa3 not ours".to_vec()),
        (code, Vec::new()),
    ]);
    let chunkings: [&[u8]; 5] = [&[], &[1], &[3, 7], &[0, 13, 2], &[8, 4, TAKE_THE_REST]];
    let seeds = streams.iter().enumerate().map(|(n, (code, stream))| {
        RecordInput {
            code: *code,
            chunk_sizes: chunkings[n % chunkings.len()],
            stream,
        }
        .write()
    });
    corpus.write("record_reader", seeds);
}

/// For each compatibility format: streams the encoder makes under one key, as
/// ciphertext for `trial_decoder` and as plaintext for `format_round_trip`, with
/// decoders holding one to four keys.
fn compat_seeds(corpus: &mut Corpus) {
    let key_sets: [&[usize]; 4] = [&[0], &[1, 0], &[0, 2, 1], &[3, 2, 1, 0]];
    let plaintexts = plaintexts();
    let mut trial_seeds = Vec::new();
    let mut round_trip_seeds = Vec::new();
    for selector in 0..trial::FORMATS as u8 {
        let format = trial::format(selector);
        for (n, indices) in key_sets.iter().enumerate() {
            let [count, packed] = key_bytes(indices);
            let keys = trial_keys(selector, count, packed);
            let right = n % indices.len();
            let ciphertexts = encrypt_stream(&format, keys[right], &plaintexts);

            let mut seed = vec![selector, count, packed];
            write_buffers(&mut seed, ciphertexts.iter().map(Vec::as_slice));
            trial_seeds.push(seed);
            let mut seed = vec![selector, count, packed, right as u8];
            write_buffers(&mut seed, plaintexts.iter().map(Vec::as_slice));
            round_trip_seeds.push(seed);
        }
    }
    corpus.write("trial_decoder", trial_seeds);
    corpus.write("format_round_trip", round_trip_seeds);
}

/// Key files and key text as the tests and the README write them.
fn key_seeds(corpus: &mut Corpus) {
    let a = "00112233445566778899aabbccddeeff";
    let b = "ffeeddccbbaa99887766554433221100";
    let long = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    let texts = [
        a.to_owned(),
        format!("  {}\n", b.to_uppercase()),
        long.to_owned(),
        long[..48].to_owned(),
        "0123456789ABCDEF".to_owned(),
        format!("# current key\n42 {b}\n"),
        format!("41 {a}\n42 {b}\n"),
        format!("1 {a}\r\n\n# next\n2 {long}\n18446744073709551615 {b}\n"),
        format!("seven {a}\n"),
        format!("1 2 {a}\n"),
        "# nothing\n".to_owned(),
        "abc".to_owned(),
        "00zz".to_owned(),
        "é0".to_owned(),
    ];
    corpus.write("key_text", texts.map(String::into_bytes));
}

/// Grants for grant_token: claims to sign (mode byte 1) and tokens (mode 0).
fn grant_seeds(corpus: &mut Corpus) {
    let claims = [
        r#"{"sub":"alice","stream":"room1","rights":171,"exp":1700000600}"#,
        r#"{"sub":"bob","stream":"room-*","rights":255,"exp":1700000600,"nbf":1699999999,"iat":1}"#,
        r#"{"sub":"","stream":"*","rights":84,"exp":1700000001,"aud":["x"]}"#,
    ];
    let tokens = [
        // RFC 8037, A.4.
        "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc.hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg",
        "eyJhbGciOiJub25lIn0.e30.",
        "a.b.c",
    ];
    let seeds = claims
        .iter()
        .map(|text| [&[1u8][..], text.as_bytes()].concat())
        .chain(tokens.iter().map(|text| [&[0u8][..], text.as_bytes()].concat()));
    corpus.write("grant_token", seeds);
}

/// LiveKit frames of each codec as a sender has them and as a receiver gets them.
fn livekit_seeds(corpus: &mut Corpus) {
    let mut vp8_key = vec![0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00];
    vp8_key.extend([0x55; 40]);
    let vp8_delta = vec![0x31, 0x04, 0x00, 1, 2, 3, 4, 5];
    // H.264: SPS with a short start code, then an IDR slice with bytes to escape.
    let mut h264 = vec![0, 0, 1, 0x67, 0x42, 0, 0, 1, 0x65, 0x88];
    h264.extend([0, 0, 0, 0, 1, 2, 3, 0, 0, 0]);
    // H.265: VPS, then an IDR_W_RADL slice segment.
    let mut h265 = vec![0, 0, 0, 1, 0x40, 0x01, 0x0c, 0, 0, 1, 0x26, 0x01, 0xaf];
    h265.extend([0, 0, 3, 1, 0x80, 0, 0]);
    let opus = vec![0xfc, 0xff, 0xfe, 1, 2, 3];
    let frames = [
        (MediaCodec::Vp8, true, vp8_key),
        (MediaCodec::Vp8, false, vp8_delta),
        (MediaCodec::Vp9, true, vec![0x82, 0x49, 0x83, 0x42, 0, 1, 2]),
        (MediaCodec::H264, true, h264.clone()),
        (MediaCodec::H264, false, h264[..7].to_vec()),
        (MediaCodec::H265, true, h265),
        (MediaCodec::Audio, false, opus),
    ];
    let mut seeds = Vec::new();
    for (codec, keyframe, frame) in frames {
        let layout = Layout::of(codec, &frame, keyframe);
        let sealed = livekit_seal(
            &livekit::KEYS[0],
            livekit::KEY_INDEX,
            &livekit::IV,
            layout,
            &frame,
        );
        seeds.push(livekit::input(codec, keyframe, &frame));
        seeds.push(livekit::input(codec, keyframe, &sealed.unwrap()));
    }
    corpus.write("livekit_frame", seeds);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, data_dir, corpus_dir] = &args[..] else {
        eprintln!("usage: seed_corpus TESTS_DATA_DIR CORPUS_DIR");
        std::process::exit(2);
    };
    let mut corpus = Corpus {
        dir: PathBuf::from(corpus_dir),
        written: 0,
    };
    sframe_seeds(&mut corpus, Path::new(data_dir));
    record_seeds(&mut corpus);
    compat_seeds(&mut corpus);
    key_seeds(&mut corpus);
    livekit_seeds(&mut corpus);
    grant_seeds(&mut corpus);
    println!("seed_corpus: {} seeds in {corpus_dir}", corpus.written);
}
