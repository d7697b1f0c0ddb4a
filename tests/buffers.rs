// SPDX-License-Identifier: MPL-2.0
//! How the elements treat the buffers they are given: SFrames are encrypted and
//! decrypted where they lie when the buffer is theirs to change, and never when
//! someone else still holds it or its memory is read-only; buffers of several
//! memories and payloads of every size around the in-place threshold come out
//! right.

mod common;

use common::*;
use gst::prelude::*;

/// Sizes around the point (4 KiB) where the encrypter switches from one new
/// memory to encrypting in place with header and tag as memories of their own.
const SIZES: [usize; 8] = [0, 1, 188, 1200, 4095, 4096, 4097, 300_000];

fn bytes(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(13).wrapping_add(seed))
        .collect()
}

fn contents(buffer: &gst::BufferRef) -> Vec<u8> {
    buffer.map_readable().unwrap().to_vec()
}

/// `data` cut into memories of at most `piece` bytes.
fn in_pieces(data: &[u8], piece: usize) -> gst::Buffer {
    let mut buffer = gst::Buffer::new();
    for chunk in data.chunks(piece.max(1)) {
        buffer
            .get_mut()
            .unwrap()
            .append_memory(gst::Memory::from_mut_slice(chunk.to_vec()));
    }
    buffer
}

/// `plaintext` in a buffer allocated as `h`'s element proposes (the ALLOCATION
/// query), as an encoder allocates and writes its output.
fn allocated_with(h: &mut gst_check::Harness, plaintext: &[u8]) -> gst::Buffer {
    let mut buffer = h.create_buffer(plaintext.len()).unwrap();
    buffer
        .get_mut()
        .unwrap()
        .copy_from_slice(0, plaintext)
        .unwrap();
    buffer
}

/// A second buffer over `buffer`'s only memory: writable itself, its memory not.
fn sharing_memory_of(buffer: &gst::Buffer) -> gst::Buffer {
    let mut sharing = gst::Buffer::new();
    sharing
        .get_mut()
        .unwrap()
        .append_memory(buffer.peek_memory(0).to_owned());
    sharing
}

/// `frame` opened by the independent `sframe` crate with KEY_A under KID 5.
fn decrypt_with_sframe_crate(frame: &[u8]) -> Vec<u8> {
    use sframe::CipherSuite;
    use sframe::frame::EncryptedFrame;
    use sframe::key::DecryptionKey;
    let key: Vec<u8> = (0..KEY_A.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&KEY_A[i..i + 2], 16).unwrap())
        .collect();
    let keys = std::collections::HashMap::from([(
        5u64,
        DecryptionKey::derive_from(CipherSuite::AesGcm128Sha256, 5u64, key).unwrap(),
    )]);
    let frame = EncryptedFrame::try_new(frame).unwrap();
    frame.decrypt(&keys).unwrap().payload().to_vec()
}

#[test]
fn every_size_round_trips_and_reads_as_rfc_9605() {
    for framing in ["buffer", "stream"] {
        let (mut enc, _) = harness(&make(&format!(
            "streamencrypt key={KEY_A} key-id=5 framing={framing}"
        )));
        let (mut dec, _) = harness(&make(&format!(
            "streamdecrypt key={KEY_A} key-id=5 framing={framing}"
        )));
        for (i, &size) in SIZES.iter().enumerate() {
            let plaintext = bytes(size, i as u8);
            let mut input = gst::Buffer::from_mut_slice(plaintext.clone());
            input
                .get_mut()
                .unwrap()
                .set_pts(gst::ClockTime::from_mseconds(i as u64));
            let encrypted = enc.push_and_pull(input).unwrap();
            let mut encrypted = vec![encrypted];
            if framing == "stream" && i == 0 {
                // The stream header comes first, as a buffer of its own.
                encrypted.push(enc.pull().unwrap());
            }
            if framing == "buffer" {
                let frame = contents(&encrypted[0]);
                assert_eq!(decrypt_with_sframe_crate(&frame), plaintext, "{size} bytes");
            }
            for buffer in encrypted {
                dec.push(buffer).unwrap();
            }
            let decrypted = dec.pull().unwrap();
            assert_eq!(contents(&decrypted), plaintext, "{framing}: {size} bytes");
            if framing == "buffer" {
                // A byte stream carries no timestamps; SFrames keep theirs.
                assert_eq!(
                    decrypted.pts(),
                    Some(gst::ClockTime::from_mseconds(i as u64))
                );
            }
        }
    }
}

#[test]
fn a_buffer_someone_else_holds_is_left_alone() {
    let (mut enc, _) = encrypter(KEY_A, 5);
    let (mut dec, _) = decrypter(KEY_A, 5);
    for (i, &size) in SIZES.iter().enumerate() {
        let plaintext = bytes(size, i as u8);
        let input = gst::Buffer::from_mut_slice(plaintext.clone());
        let encrypted = enc.push_and_pull(input.clone()).unwrap();
        assert_eq!(
            contents(&input),
            plaintext,
            "encrypter wrote into a shared buffer"
        );

        let ciphertext = contents(&encrypted);
        let decrypted = dec.push_and_pull(encrypted.clone()).unwrap();
        assert_eq!(
            contents(&encrypted),
            ciphertext,
            "decrypter wrote into a shared buffer"
        );
        assert_eq!(contents(&decrypted), plaintext, "{size} bytes");
    }
}

/// The formats without a KID write every buffer into a new memory (a `Vec`
/// up to 64 KiB, a `GstMemory` above): each size round-trips, from a buffer
/// someone else holds, which is left alone.
#[test]
fn modes_without_kid_round_trip_every_size() {
    let modes = [
        ("sm4-ecb", KEY_A, ""),
        ("qq-tea", "fedcba9876543210", ""),
        ("aes-128-cbc", KEY_A, ""),
        ("aes-256-cbc", KEY_256, "serialize-iv=true"),
    ];
    let sizes = SIZES.iter().chain(&[65_535, 65_536, 70_000]);
    for (mode, key, options) in modes {
        let settings = format!("mode={mode} key={key} {options}");
        let (mut enc, _) = harness(&make(&format!("streamencrypt {settings}")));
        let (mut dec, _) = harness(&make(&format!("streamdecrypt {settings} on-error=fail")));
        for (i, &size) in sizes.clone().enumerate() {
            let plaintext = bytes(size, i as u8);
            let input = gst::Buffer::from_mut_slice(plaintext.clone());
            let encrypted = enc.push_and_pull(input.clone()).unwrap();
            assert_eq!(contents(&input), plaintext, "{mode}: input written");
            assert!(encrypted.size() > size, "{mode}: {size} bytes");
            let ciphertext = contents(&encrypted);
            let decrypted = dec.push_and_pull(encrypted.clone()).unwrap();
            assert_eq!(contents(&encrypted), ciphertext, "{mode}: input written");
            assert_eq!(contents(&decrypted), plaintext, "{mode}: {size} bytes");
        }
    }
}

#[test]
fn memory_shared_between_buffers_is_left_alone() {
    let (mut enc, _) = encrypter(KEY_A, 5);
    let (mut dec, _) = decrypter(KEY_A, 5);
    for (i, &size) in SIZES.iter().enumerate() {
        let plaintext = bytes(size, i as u8);
        let original = gst::Buffer::from_mut_slice(plaintext.clone());
        let input = sharing_memory_of(&original);
        let encrypted = enc.push_and_pull(input).unwrap();
        assert_eq!(contents(&original), plaintext, "{size} bytes");

        let ciphertext = contents(&encrypted);
        let copy = gst::Buffer::from_mut_slice(ciphertext.clone());
        let decrypted = dec.push_and_pull(sharing_memory_of(&copy)).unwrap();
        assert_eq!(contents(&copy), ciphertext, "{size} bytes");
        assert_eq!(contents(&decrypted), plaintext, "{size} bytes");
    }
}

#[test]
fn read_only_memory_is_read_not_written() {
    // Demuxers and `Buffer::from_slice` hand out memory flagged read-only.
    let (mut enc, _) = encrypter(KEY_A, 5);
    let (mut dec, _) = decrypter(KEY_A, 5);
    for (i, &size) in SIZES.iter().enumerate() {
        let plaintext = bytes(size, i as u8);
        let input = gst::Buffer::from_slice(plaintext.clone());
        assert!(
            size == 0
                || input
                    .peek_memory(0)
                    .flags()
                    .contains(gst::MemoryFlags::READONLY)
        );
        let encrypted = enc.push_and_pull(input).unwrap();
        let decrypted = dec
            .push_and_pull(gst::Buffer::from_slice(contents(&encrypted)))
            .unwrap();
        assert_eq!(contents(&decrypted), plaintext, "{size} bytes");
    }
}

#[test]
fn buffers_of_several_memories() {
    let (mut enc, _) = encrypter(KEY_A, 5);
    let (mut dec, _) = decrypter(KEY_A, 5);
    for (i, &size) in SIZES.iter().enumerate() {
        let plaintext = bytes(size, i as u8);
        let encrypted = enc.push_and_pull(in_pieces(&plaintext, 1000)).unwrap();
        // Cut so that header and tag are split across memories too.
        let decrypted = dec
            .push_and_pull(in_pieces(&contents(&encrypted), 7))
            .unwrap();
        assert_eq!(contents(&decrypted), plaintext, "{size} bytes");
    }
}

/// Buffers allocated as encoders allocate them, with the prefix and padding the
/// encrypter proposes in the ALLOCATION query, are encrypted in their own
/// memory: SFrame, and SM4-ECB and AES-CBC in buffers, of any size where it
/// lies, the other formats below 4 KiB through a scratch. The same memory comes
/// out, grown into its room, and
/// decrypts; a buffer that also holds the memory keeps its plaintext.
#[test]
fn buffers_with_room_are_encrypted_in_their_own_memory() {
    let modes = [
        format!("key={KEY_A} key-id=5"),
        format!("key={KEY_A} key-id=5 framing=stream"),
        format!("mode=aes-128-ctr-hmac-32 key={KEY_A} key-id=300"),
        format!("mode=sm4-gcm key={KEY_A} key-id=5"),
        format!("mode=sm4-ecb key={KEY_A}"),
        format!("mode=sm4-ecb key={KEY_A} framing=stream"),
        "mode=qq-tea key=fedcba9876543210".to_string(),
        format!("mode=aes-128-cbc key={KEY_A}"),
        format!("mode=aes-256-cbc key={KEY_256} serialize-iv=true"),
    ];
    for settings in modes {
        let any_size = settings.contains("key-id")
            || ((settings.contains("sm4-ecb") || settings.contains("-cbc"))
                && !settings.contains("framing=stream"));
        let (mut enc, _) = harness(&make(&format!("streamencrypt {settings}")));
        let (mut dec, _) = harness(&make(&format!("streamdecrypt {settings} on-error=fail")));
        let mut in_place = 0;
        for (i, &size) in SIZES.iter().enumerate().filter(|(_, size)| **size > 0) {
            let plaintext = bytes(size, i as u8);
            let input = allocated_with(&mut enc, &plaintext);
            let memory = input.peek_memory(0);
            assert!(
                memory.offset() > 0 || memory.maxsize() > size,
                "{settings}: no room proposed"
            );
            let start = allocation_start(memory);
            let mut encrypted = enc.push_and_pull(input).unwrap();
            if settings.contains("framing=stream") && i == 1 {
                // The stream header goes first, as a buffer of its own.
                dec.push(encrypted).unwrap();
                encrypted = enc.pull().unwrap();
            }
            if any_size || size < 4096 {
                in_place += 1;
                assert_eq!(encrypted.n_memory(), 1, "{settings}: {size} bytes");
                assert_eq!(
                    allocation_start(encrypted.peek_memory(0)),
                    start,
                    "{settings}: {size} bytes went into a new memory"
                );
            }
            let decrypted = dec.push_and_pull(encrypted).unwrap();
            assert_eq!(contents(&decrypted), plaintext, "{settings}: {size} bytes");
        }

        let stats = enc.element().unwrap().property::<gst::Structure>("stats");
        assert_eq!(
            stats.get::<u64>("buffers-in-place").unwrap(),
            in_place,
            "{settings}: {stats}"
        );

        // A memory another buffer also holds is not written.
        let plaintext = bytes(188, 1);
        let original = allocated_with(&mut enc, &plaintext);
        let encrypted = enc.push_and_pull(sharing_memory_of(&original)).unwrap();
        assert_eq!(
            contents(&original),
            plaintext,
            "{settings}: shared memory written"
        );
        assert_eq!(
            contents(&dec.push_and_pull(encrypted).unwrap()),
            plaintext,
            "{settings}"
        );
    }
}

/// aesenc's format encrypted where the buffer lies (in the room the encrypter
/// proposes) comes out byte for byte as encrypted into a new memory, for every
/// IV and padding option. Without per-buffer padding each buffer's last partial
/// block waits for the next buffer: its plaintext must not stay behind the
/// output in the memory that goes downstream.
#[test]
fn aes_cbc_in_room_matches_new_memory_and_leaves_no_plaintext_behind() {
    const SIZES: [usize; 9] = [1, 15, 16, 17, 100, 188, 1000, 5000, 31];
    for serialize_iv in [false, true] {
        for padding in [true, false] {
            let settings = format!(
                "mode=aes-128-cbc key={KEY_A} iv=f0e1d2c3b4a5968778695a4b3c2d1e0f \
                 serialize-iv={serialize_iv} per-buffer-padding={padding}"
            );
            let what = &settings[settings.find("serialize").unwrap()..];
            let (mut in_room, _) = harness(&make(&format!("streamencrypt {settings}")));
            let (mut into_new, _) = harness(&make(&format!("streamencrypt {settings}")));
            let (mut sealed_in_room, mut sealed_into_new) = (Vec::new(), Vec::new());
            let mut held_back = 0;
            for (i, &size) in SIZES.iter().enumerate() {
                let plaintext = bytes(size, 101 + i as u8);
                let input = allocated_with(&mut in_room, &plaintext);
                in_room.push(input).unwrap();
                held_back = if padding { 0 } else { (held_back + size) % 16 };
                while let Some(out) = in_room.try_pull() {
                    let whole = out.peek_memory(0).share_maxsize(..);
                    let whole = whole.map_readable().unwrap();
                    let tail = &plaintext[size - held_back.min(size)..];
                    assert!(
                        tail.len() < 8 || !whole.windows(tail.len()).any(|w| w == tail),
                        "{what}: {size} bytes: the held-back plaintext stayed in the memory"
                    );
                    sealed_in_room.extend(contents(&out));
                }
                into_new
                    .push(gst::Buffer::from_mut_slice(plaintext))
                    .unwrap();
                while let Some(out) = into_new.try_pull() {
                    sealed_into_new.extend(contents(&out));
                }
            }
            for (h, sealed) in [
                (&mut in_room, &mut sealed_in_room),
                (&mut into_new, &mut sealed_into_new),
            ] {
                h.push_event(gst::event::Eos::new());
                while let Some(out) = h.try_pull() {
                    sealed.extend(contents(&out));
                }
            }
            assert_eq!(sealed_in_room, sealed_into_new, "{what}");
            let element = in_room.element().unwrap();
            assert!(
                stat(&element, "buffers-in-place") > 0,
                "{what}: never in room"
            );
        }
    }
}
