// SPDX-License-Identifier: MPL-2.0
//! Keys never reach the debug log, even at the most verbose level. A test binary of
//! its own: it changes the process-wide log settings.

mod common;

use common::*;
use gst::prelude::*;

#[test]
fn keys_never_reach_the_debug_log() {
    init();
    let logged = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let sink = logged.clone();
    let log_function =
        gst::log::add_log_function(move |_cat, _level, _file, _func, _line, _obj, msg| {
            if let Some(text) = msg.get() {
                let mut logged = sink.lock().unwrap();
                logged.push_str(&text);
                logged.push('\n');
            }
        });
    gst::log::remove_default_log_function();
    gst::log::set_active(true);
    gst::log::set_threshold_for_name("stream*", gst::DebugLevel::Memdump);

    let (mut enc, _) = encrypter(KEY_A, 1);
    let (mut dec, _) = decrypter(KEY_A, 1);
    let enc_element = enc.element().unwrap();
    let dec_element = dec.element().unwrap();
    let _: bool = enc_element.emit_by_name("set-key", &[&2u64, &KEY_B]);
    let _: bool = dec_element.emit_by_name("add-key", &[&2u64, &KEY_B]);
    enc_element.set_property("key", "00".repeat(40));
    for i in 0..5 {
        dec.push_and_pull(enc.push_and_pull(media_buffer(i)).unwrap())
            .unwrap();
    }
    drop(enc);
    drop(dec);
    gst::log::remove_log_function(log_function);

    let logged = logged.lock().unwrap();
    assert!(logged.contains("KID 2"), "the log was captured: {logged}");
    for key in [KEY_A, KEY_B] {
        assert!(!logged.to_lowercase().contains(key), "key in the log");
        assert!(
            !logged.to_lowercase().contains(&key[..16]),
            "half a key in the log"
        );
    }
}
