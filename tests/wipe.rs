// SPDX-License-Identifier: MPL-2.0
//! Keys are wiped from memory when dropped. A test binary of its own: its global
//! allocator looks into every heap block freed while a check runs, for the bytes of
//! a key (base key, or the AES key derived from it, which is also the first round
//! key of its schedule).

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use common::*;
use gst::prelude::*;
use zeroize::Zeroizing;

/// The needles, as (bytes, length); at most 4 of 32 bytes. Read by the allocator,
/// which must not allocate itself.
static NEEDLES: Mutex<[([u8; 32], usize); 4]> = Mutex::new([([0; 32], 0); 4]);
static WATCHING: AtomicBool = AtomicBool::new(false);
static FOUND: AtomicUsize = AtomicUsize::new(0);

struct Inspecting;

unsafe impl GlobalAlloc for Inspecting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if WATCHING.load(Ordering::SeqCst) {
            // Copied out under the lock, scanned after: a `try_lock` here missed
            // blocks whenever another thread was scanning one of its own. No
            // thread frees memory while it holds the lock, so waiting is safe.
            let needles = *NEEDLES.lock().unwrap_or_else(PoisonError::into_inner);
            // SAFETY: the block is still ours until System.dealloc below.
            let block = unsafe { std::slice::from_raw_parts(ptr, layout.size()) };
            for (needle, len) in needles.iter().filter(|(_, len)| *len > 0) {
                if block.windows(*len).any(|w| w == &needle[..*len]) {
                    FOUND.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Inspecting = Inspecting;

/// Key bytes from hex, in a buffer that is wiped when dropped: the tests' own
/// copies of a key must not be found in another test's watch.
fn hex(text: &str) -> Zeroizing<Vec<u8>> {
    Zeroizing::new(
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect(),
    )
}

/// Runs `work` with the allocator watching for `needles`; returns how many freed
/// blocks still held one of them.
fn freed_blocks_holding(needles: &[&[u8]], work: impl FnOnce()) -> usize {
    // One check at a time: the allocator watches every thread.
    static SERIAL: Mutex<()> = Mutex::new(());
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    {
        let mut slots = NEEDLES.lock().unwrap_or_else(PoisonError::into_inner);
        for (slot, needle) in slots.iter_mut().zip(needles) {
            slot.0[..needle.len()].copy_from_slice(needle);
            slot.1 = needle.len();
        }
    }
    FOUND.store(0, Ordering::SeqCst);
    WATCHING.store(true, Ordering::SeqCst);
    work();
    WATCHING.store(false, Ordering::SeqCst);
    *NEEDLES.lock().unwrap_or_else(PoisonError::into_inner) = [([0; 32], 0); 4];
    FOUND.load(Ordering::SeqCst)
}

// RFC 9605 vector, suite 4: base key, KID 0x123, and the AES key HKDF derives.
const BASE_KEY: &str = "000102030405060708090a0b0c0d0e0f";
const KID: u64 = 0x123;
const DERIVED_KEY: &str = "d34f547f4ca4f9a7447006fe7fcbf768";

#[test]
fn the_allocator_sees_keys_that_are_not_wiped() {
    // The check itself works: a plain Vec holding the key is found when freed.
    let base = hex(BASE_KEY);
    let found = freed_blocks_holding(&[&base], || drop(base.to_vec()));
    // At least: another test may free its copy of the key meanwhile.
    assert!(found >= 1);
}

#[test]
fn derived_keys_and_schedules_are_wiped() {
    use gststreamcrypt::keys::SecretKey;
    use gststreamcrypt::sframe::{CipherSuite, SframeKey};
    let (base, derived) = (hex(BASE_KEY), hex(DERIVED_KEY));
    let found = freed_blocks_holding(&[&base, &derived], || {
        let secret = SecretKey::from_hex(BASE_KEY).unwrap();
        let key = SframeKey::derive(CipherSuite::Aes128GcmSha256, KID, secret.as_bytes());
        let mut out = vec![0u8; 64];
        key.encrypt_into(1, &[], b"frame", &mut out).unwrap();
        drop(key);
        drop(secret);
    });
    assert_eq!(found, 0);
}

#[test]
fn aes_cbc_schedules_are_wiped() {
    // An AES schedule begins with the key itself.
    use gststreamcrypt::cipher::aes_cbc::AesCbc;
    let base = hex(BASE_KEY);
    let found = freed_blocks_holding(&[&base], || {
        let key = AesCbc::new(&base);
        let mut data = [0u8; 64];
        key.encrypt(&mut [0; 16], &mut data);
        drop(key);
    });
    assert_eq!(found, 0);
}

#[test]
fn elements_wipe_their_keys_on_stop_and_drop() {
    init();
    let (base, derived) = (hex(BASE_KEY), hex(DERIVED_KEY));
    let found = freed_blocks_holding(&[&base, &derived], || {
        let enc = make(&format!("streamencrypt key={BASE_KEY} key-id={KID}"));
        let dec = make(&format!("streamdecrypt key={BASE_KEY} key-id={KID}"));
        let _: bool = dec.emit_by_name("add-key", &[&7u64, &BASE_KEY]);
        let pipeline = AppPipeline::new(&[&enc, &dec]);
        assert_eq!(pipeline.run((0..10).map(media_buffer)).len(), 10);
        drop(pipeline);
        drop(enc);
        drop(dec);
    });
    assert_eq!(found, 0);
}

/// The key text the element is handed in a signal or a `request-key` answer:
/// GLib's copy is GLib's (see the README), but no copy the plugin makes of it
/// may outlive its use unwiped.
#[test]
fn key_text_from_signals_and_answers_is_wiped() {
    init();
    const KEY_TEXT: &str = "5f4dcc3b5aa765d61d8327deb882cf99";
    let text = Zeroizing::new(KEY_TEXT.to_owned());
    let key = hex(KEY_TEXT);
    // Frames to decrypt, made before the watch starts.
    let (mut enc, _) = encrypter(KEY_TEXT, 9);
    let frames: Vec<gst::Buffer> = (0..3)
        .map(|i| enc.push_and_pull(media_buffer(i)).unwrap())
        .collect();
    drop(enc);
    let found = freed_blocks_holding(&[text.as_bytes(), &key], || {
        let enc = make("streamencrypt");
        assert!(enc.emit_by_name::<bool>("set-key", &[&9u64, &text.as_str()]));
        drop(enc);
        let dec = make("streamdecrypt");
        assert!(dec.emit_by_name::<bool>("add-key", &[&4u64, &text.as_str()]));
        let answer = text.clone();
        dec.connect("request-key", false, move |_| {
            Some(answer.as_str().to_value())
        });
        let (mut h, _) = harness(&dec);
        for (i, frame) in frames.iter().enumerate() {
            assert_is_media_buffer(&h.push_and_pull(frame.clone()).unwrap(), i as u64);
        }
        drop(h);
        drop(dec);
    });
    assert_eq!(found, 0);
}
