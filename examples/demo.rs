// SPDX-License-Identifier: MPL-2.0
//! The main job, end to end: encrypt a live video stream, rotate the key every
//! second from application code while it plays, decrypt, and show that every frame
//! came back bit-exact.
//!
//! Rotations alternate between the two orders a real deployment sees:
//! - receiver first: `add-key` on the decrypter, then `set-key` on the encrypter;
//! - sender first: `set-key` only; the decrypter meets an unknown KID and asks the
//!   application through `request-key`.
//!
//! Run with `cargo run --release --example demo [seconds]`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gst::prelude::*;

const FPS: u64 = 30;

/// A fresh random 16-byte key, in hex.
fn new_key() -> String {
    let mut key = [0u8; 16];
    getrandom::fill(&mut key).expect("system randomness");
    key.iter().map(|b| format!("{b:02x}")).collect()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let seconds: u64 = std::env::args().nth(1).map_or(Ok(5), |s| s.parse())?;
    gst::init()?;
    gststreamcrypt::plugin_register_static()?;

    let frames = seconds * FPS;
    let first_key = new_key();
    let pipeline = gst::parse::launch(&format!(
        "videotestsrc is-live=true num-buffers={frames} pattern=ball \
           ! video/x-raw,width=320,height=240,framerate={FPS}/1 ! vp8enc deadline=1 ! tee name=t \
         t. ! queue ! appsink name=original sync=false wait-on-eos=false \
         t. ! queue ! streamencrypt name=enc key-id=1 key={first_key} \
            ! streamdecrypt name=dec key-id=1 key={first_key} \
            ! appsink name=decrypted sync=false wait-on-eos=false"
    ))?
    .downcast::<gst::Pipeline>()
    .expect("a pipeline");
    let enc = pipeline.by_name("enc").expect("enc");
    let dec = pipeline.by_name("dec").expect("dec");
    let original = pipeline.by_name("original").expect("original");
    let decrypted = pipeline.by_name("decrypted").expect("decrypted");

    // The application's key server: each key is published here before use.
    let keys: Arc<Mutex<HashMap<u64, String>>> = Arc::default();
    keys.lock().unwrap().insert(1, first_key);
    let start = Instant::now();
    let at = move || format!("[{:5.2}s]", start.elapsed().as_secs_f64());
    {
        let keys = keys.clone();
        dec.connect("request-key", false, move |args| {
            let kid = args[1].get::<u64>().expect("kid");
            let key = keys.lock().unwrap().get(&kid).cloned();
            println!(
                "{} decrypter asked for KID {kid}: {}",
                at(),
                if key.is_some() { "supplied" } else { "unknown" }
            );
            Some(key.to_value())
        });
    }

    println!(
        "streamcrypt demo: {frames} frames of live VP8 video, SFrame AES-128-GCM, a new key every second"
    );
    pipeline.set_state(gst::State::Playing)?;

    let rotator = {
        let (enc, dec, keys, at) = (enc.clone(), dec.clone(), keys.clone(), at);
        std::thread::spawn(move || {
            for kid in 2..=seconds {
                std::thread::sleep(Duration::from_secs(1));
                let key = new_key();
                keys.lock().unwrap().insert(kid, key.clone());
                if kid % 2 == 0 {
                    let _: bool = dec.emit_by_name("add-key", &[&kid, &key]);
                    println!(
                        "{} receiver first: decrypter got KID {kid}, then the encrypter switches",
                        at()
                    );
                } else {
                    println!("{} sender first: the encrypter switches to KID {kid}", at());
                }
                let accepted: bool = enc.emit_by_name("set-key", &[&kid, &key]);
                assert!(accepted);
            }
        })
    };

    let bus = pipeline.bus().expect("bus");
    for message in bus.iter_timed(gst::ClockTime::NONE) {
        match message.view() {
            gst::MessageView::Element(element) => {
                let s = element.structure().expect("structure");
                if s.name() == "streamcrypt-key-switch" {
                    let pts = gst::ClockTime::from_nseconds(s.get::<u64>("pts")?);
                    println!(
                        "{} decrypter: stream switched from KID {} to KID {} at pts {pts:.3}",
                        at(),
                        s.get::<u64>("previous-kid")?,
                        s.get::<u64>("kid")?,
                    );
                }
            }
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(err) => {
                pipeline.set_state(gst::State::Null)?;
                return Err(format!("{}: {}", err.error(), err.debug().unwrap_or_default()).into());
            }
            _ => (),
        }
    }
    rotator.join().expect("rotator");

    let pull_all = |sink: &gst::Element| {
        let sink = sink
            .clone()
            .downcast::<gst_app::AppSink>()
            .expect("appsink");
        std::iter::from_fn(move || sink.try_pull_sample(gst::ClockTime::ZERO))
            .map(|sample| {
                sample
                    .buffer()
                    .expect("buffer")
                    .map_readable()
                    .expect("map")
                    .to_vec()
            })
            .collect::<Vec<_>>()
    };
    let originals = pull_all(&original);
    let decrypted_frames = pull_all(&decrypted);
    let enc_stats = enc.property::<gst::Structure>("stats");
    let dec_stats = dec.property::<gst::Structure>("stats");
    pipeline.set_state(gst::State::Null)?;

    let identical = originals.len() == decrypted_frames.len()
        && originals.iter().zip(&decrypted_frames).all(|(a, b)| a == b);
    println!("encrypter: {enc_stats}");
    println!("decrypter: {dec_stats}");
    println!(
        "result: {}/{} frames decrypted bit-exact, {} key switches, {} dropped",
        if identical { decrypted_frames.len() } else { 0 },
        originals.len(),
        dec_stats.get::<u64>("key-switches")?,
        dec_stats.get::<u64>("dropped")?,
    );
    if !identical || originals.len() as u64 != frames {
        return Err("the decrypted stream differs from the original".into());
    }
    Ok(())
}
