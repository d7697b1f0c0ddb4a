// SPDX-License-Identifier: MPL-2.0
//! 1,000 key rotations while buffers flow, driven from another thread, in both
//! orders of arrival and through both interfaces (properties and action signals).
//! Every buffer must come out, in order, bit-exact, with its metadata.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use gst::prelude::*;

const ROTATIONS: u64 = 1000;

#[derive(Clone, Copy, Debug)]
enum Order {
    /// The receiver gets the new key, then the sender switches.
    ReceiverFirst,
    /// The sender switches first; the receiver asks for the key via request-key.
    SenderFirst,
}

#[derive(Clone, Copy, Debug)]
enum Interface {
    Properties,
    Signals,
}

fn key_for(kid: u64) -> String {
    format!(
        "{:016x}{:016x}",
        kid.wrapping_mul(0x9e37_79b9_7f4a_7c15),
        !kid
    )
}

fn rotate_while_flowing(order: Order, interface: Interface) {
    let enc = make(&format!("streamencrypt key-id=0 key={}", key_for(0)));
    let dec = make(&format!("streamdecrypt key-id=0 key={}", key_for(0)));
    // The application's key server: the rotating thread publishes each key here
    // before anyone uses it.
    let server: Arc<Mutex<HashMap<u64, String>>> = Arc::default();
    let requests = Arc::new(AtomicU64::new(0));
    if let Order::SenderFirst = order {
        let server = server.clone();
        let requests = requests.clone();
        dec.connect("request-key", false, move |args| {
            let kid = args[1].get::<u64>().unwrap();
            requests.fetch_add(1, Ordering::SeqCst);
            Some(server.lock().unwrap().get(&kid).cloned().to_value())
        });
    }
    let encrypted = Arc::new(AtomicU64::new(0));
    let counted = encrypted.clone();
    enc.static_pad("src")
        .unwrap()
        .add_probe(gst::PadProbeType::BUFFER, move |_, _| {
            counted.fetch_add(1, Ordering::SeqCst);
            gst::PadProbeReturn::Ok
        });

    let pipeline = AppPipeline::new(&[&enc, &dec]);
    // Keep the queue short, so that buffers flow while the keys change.
    pipeline.src.set_block(true);
    pipeline.src.set_max_bytes(32 * 1024);
    pipeline.pipeline.set_state(gst::State::Playing).unwrap();

    let done = Arc::new(AtomicBool::new(false));
    let rotator = {
        let (enc, dec, done, encrypted) =
            (enc.clone(), dec.clone(), done.clone(), encrypted.clone());
        std::thread::spawn(move || {
            for kid in 1..=ROTATIONS {
                // Let a few buffers go out under the current key first.
                let start = encrypted.load(Ordering::SeqCst);
                let deadline = Instant::now() + Duration::from_secs(30);
                while encrypted.load(Ordering::SeqCst) < start + 3 {
                    assert!(Instant::now() < deadline, "buffers stopped flowing");
                    std::thread::sleep(Duration::from_micros(50));
                }
                let key = key_for(kid);
                server.lock().unwrap().insert(kid, key.clone());
                if let Order::ReceiverFirst = order {
                    match interface {
                        Interface::Properties => {
                            dec.set_property("key-id", kid);
                            dec.set_property("key", &key);
                        }
                        Interface::Signals => {
                            assert!(dec.emit_by_name::<bool>("add-key", &[&kid, &key]));
                        }
                    }
                }
                match interface {
                    Interface::Properties => {
                        enc.set_property("key-id", kid);
                        enc.set_property("key", &key);
                    }
                    Interface::Signals => {
                        assert!(enc.emit_by_name::<bool>("set-key", &[&kid, &key]));
                    }
                }
            }
            done.store(true, Ordering::SeqCst);
        })
    };

    let collector = {
        let sink = pipeline.sink.clone();
        std::thread::spawn(move || {
            let mut out = Vec::new();
            while let Ok(sample) = sink.pull_sample() {
                out.push(sample.buffer_owned().unwrap());
            }
            out
        })
    };
    let mut pushed = 0;
    while !done.load(Ordering::SeqCst) || pushed < 5 * ROTATIONS {
        pipeline.src.push_buffer(media_buffer(pushed)).unwrap();
        pushed += 1;
    }
    // A few more, so that the last key is used too.
    for _ in 0..10 {
        pipeline.src.push_buffer(media_buffer(pushed)).unwrap();
        pushed += 1;
    }
    pipeline.src.end_of_stream().unwrap();
    rotator.join().unwrap();
    let out = collector.join().unwrap();
    pipeline.stop();

    let what = format!("{order:?} with {interface:?}");
    assert_eq!(out.len() as u64, pushed, "{what}: buffers lost");
    for (i, buffer) in out.iter().enumerate() {
        assert_is_media_buffer(buffer, i as u64);
        if i > 0 {
            assert!(
                !buffer.flags().contains(gst::BufferFlags::DISCONT),
                "{what}: {i}"
            );
        }
    }
    let stats = stats(&dec);
    assert_eq!(
        stats.get::<u64>("key-switches"),
        Ok(ROTATIONS),
        "{what}: {stats}"
    );
    assert_eq!(stats.get::<u64>("dropped"), Ok(0), "{what}: {stats}");
    assert_eq!(stats.get::<u64>("kid"), Ok(ROTATIONS), "{what}: {stats}");
    assert_eq!(
        self::stats(&enc).get::<u64>("key-switches"),
        Ok(ROTATIONS),
        "{what}"
    );
    let expected_requests = match order {
        Order::ReceiverFirst => 0,
        Order::SenderFirst => ROTATIONS,
    };
    assert_eq!(requests.load(Ordering::SeqCst), expected_requests, "{what}");
    assert_eq!(
        stats.get::<u64>("key-requests"),
        Ok(expected_requests),
        "{what}"
    );
}

#[test]
fn receiver_first_with_properties() {
    rotate_while_flowing(Order::ReceiverFirst, Interface::Properties);
}

#[test]
fn receiver_first_with_signals() {
    rotate_while_flowing(Order::ReceiverFirst, Interface::Signals);
}

#[test]
fn sender_first_with_properties() {
    rotate_while_flowing(Order::SenderFirst, Interface::Properties);
}

#[test]
fn sender_first_with_signals() {
    rotate_while_flowing(Order::SenderFirst, Interface::Signals);
}
