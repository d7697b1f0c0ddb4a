// SPDX-License-Identifier: MPL-2.0
//! The `aes-128-cbc` and `aes-256-cbc` modes against gst-plugins-bad's own `aesenc`
//! and `aesdec`, for each of their IV and padding options: our output is theirs
//! byte for byte, and each side decrypts the other.

mod common;

use common::*;
use gst::prelude::*;

const IV: &str = "f0e1d2c3b4a5968778695a4b3c2d1e0f";

/// Buffers of awkward sizes: empty, under, at and over block boundaries.
fn inputs() -> Vec<gst::Buffer> {
    // 70,000 bytes: above the size the elements write into a Vec.
    [0usize, 1, 15, 16, 17, 31, 32, 100, 1000, 70_000, 5]
        .iter()
        .enumerate()
        .map(|(i, &len)| {
            let bytes: Vec<u8> = (0..len).map(|j| (i * 53 + j * 7) as u8).collect();
            gst::Buffer::from_mut_slice(bytes)
        })
        .collect()
}

fn bytes_of(buffers: &[gst::Buffer]) -> Vec<Vec<u8>> {
    buffers
        .iter()
        .map(|b| b.map_readable().unwrap().to_vec())
        .collect()
}

/// gst-plugins-bad before 1.23.1 (Debian 12 ships 1.22) sizes every `aesenc`
/// buffer after the first 16 bytes too long when `serialize-iv` is set; with
/// `per-buffer-padding=false` the buffer has room for them and they go out as
/// uninitialised memory (with per-buffer padding the resize fails and the buffer
/// keeps its right size). Fixed upstream by commit f2087cd ("aesenc: Fix IV length
/// addition to output buffer length").
fn aesenc_appends_garbage() -> bool {
    let plugin = gst::ElementFactory::find("aesenc")
        .and_then(|factory| factory.plugin())
        .expect("aesenc");
    let version: Vec<u32> = plugin
        .version()
        .split('.')
        .map(|part| part.parse().unwrap_or(0))
        .collect();
    version < vec![1, 23, 1]
}

fn run(descriptions: &[String]) -> Vec<Vec<u8>> {
    let elements: Vec<gst::Element> = descriptions.iter().map(|d| make(d)).collect();
    let refs: Vec<&gst::Element> = elements.iter().collect();
    bytes_of(&AppPipeline::new(&refs).run(inputs()))
}

#[test]
fn byte_identical_to_aesenc_and_each_side_decrypts_the_other() {
    init();
    // aesenc of GStreamer 1.22 trips an assertion of its own with serialize-iv
    // and per-buffer padding (see `aesenc_appends_garbage`).
    glib::log_set_always_fatal(glib::LogLevels::LEVEL_ERROR);
    assert!(
        gst::ElementFactory::find("aesenc").is_some(),
        "gst-plugins-bad's aesenc is needed (gstreamer1.0-plugins-bad)"
    );
    let plain = bytes_of(&inputs());
    for (cipher, key) in [("aes-128-cbc", KEY_A), ("aes-256-cbc", KEY_256)] {
        for serialize_iv in [false, true] {
            for per_buffer_padding in [true, false] {
                let options = format!(
                    "key={key} iv={IV} serialize-iv={serialize_iv} \
                     per-buffer-padding={per_buffer_padding}"
                );
                let what = format!("{cipher} {options}");
                let aesenc = format!("aesenc cipher={cipher} {options}");
                let aesdec = format!("aesdec cipher={cipher} {options}");
                let ours_enc = format!("streamencrypt mode={cipher} {options}");
                let ours_dec = format!("streamdecrypt mode={cipher} {options} on-error=fail");

                let theirs = run(std::slice::from_ref(&aesenc));
                let ours = run(std::slice::from_ref(&ours_enc));
                let broken_aesenc = serialize_iv && !per_buffer_padding && aesenc_appends_garbage();
                if broken_aesenc {
                    // What aesenc means to write: the IV, then each buffer's whole
                    // blocks; its buffers after the first carry extra bytes after it.
                    let mut fed = 0;
                    let mut meant = Vec::new();
                    for (i, theirs) in theirs.iter().enumerate() {
                        let len = if i == plain.len() {
                            16
                        } else {
                            let before = fed / 16 * 16;
                            fed += plain[i].len();
                            fed / 16 * 16 - before + if i == 0 { 16 } else { 0 }
                        };
                        assert_eq!(theirs.len() > len, i > 0 && i < plain.len(), "{what}: {i}");
                        meant.extend_from_slice(&theirs[..len]);
                    }
                    assert_eq!(ours.concat(), meant, "{what}: stream differs");
                } else if per_buffer_padding {
                    assert_eq!(ours, theirs, "{what}: buffers differ from aesenc's");
                } else {
                    // One byte stream, padded at its end: aesenc sends empty buffers
                    // and the IV alone where we wait for a whole block (aesdec
                    // aborts on a first buffer holding the IV alone).
                    assert_eq!(ours.concat(), theirs.concat(), "{what}: stream differs");
                    assert!(ours.iter().all(|b| !b.is_empty()), "{what}");
                }

                let mut directions = vec![(
                    [ours_enc.clone(), aesdec.clone()],
                    "streamencrypt to aesdec",
                )];
                if !broken_aesenc {
                    directions.push((
                        [aesenc.clone(), ours_dec.clone()],
                        "aesenc to streamdecrypt",
                    ));
                }
                for (pair, direction) in directions {
                    let decrypted = run(&pair);
                    if per_buffer_padding {
                        assert_eq!(decrypted, plain, "{what}: {direction}");
                    } else {
                        assert_eq!(decrypted.concat(), plain.concat(), "{what}: {direction}");
                    }
                }
            }
        }
    }
}
