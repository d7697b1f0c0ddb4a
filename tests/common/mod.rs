// SPDX-License-Identifier: MPL-2.0
//! Helpers shared by the integration tests.
#![allow(dead_code)]

use gst::prelude::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Once;

pub const KEY_A: &str = "000102030405060708090a0b0c0d0e0f";
pub const KEY_B: &str = "f0e0d0c0b0a090807060504030201000";
pub const KEY_256: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

/// (mode, key length in bytes, carries a KID).
pub const MODES: [(&str, usize, bool); 11] = [
    ("aes-128-gcm", 16, true),
    ("aes-256-gcm", 32, true),
    ("aes-128-ctr-hmac-80", 16, true),
    ("aes-128-ctr-hmac-64", 16, true),
    ("aes-128-ctr-hmac-32", 16, true),
    ("aes-192-gcm", 24, true),
    ("sm4-gcm", 16, true),
    ("sm4-ecb", 16, false),
    ("qq-tea", 16, false),
    ("aes-128-cbc", 16, false),
    ("aes-256-cbc", 32, false),
];

/// A key of `len` bytes in hex, different for each `seed`.
pub fn key_of(len: usize, seed: u8) -> String {
    (0..len)
        .map(|i| {
            format!(
                "{:02x}",
                seed.wrapping_mul(37)
                    .wrapping_add((i as u8).wrapping_mul(11))
            )
        })
        .collect()
}

pub fn init() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        // A GStreamer critical (an API misused, a failed assertion) aborts the
        // test rather than scrolling past in its output.
        glib::log_set_always_fatal(glib::LogLevels::LEVEL_CRITICAL | glib::LogLevels::LEVEL_ERROR);
        gst::init().unwrap();
        gststreamcrypt::plugin_register_static().unwrap();
    });
}

/// One element from a gst-launch description, e.g. `streamencrypt key=... key-id=3`:
/// properties are set in the order written, as on a gst-launch line.
pub fn make(description: &str) -> gst::Element {
    init();
    gst::parse::launch(description)
        .unwrap()
        .downcast::<gst::Element>()
        .unwrap()
}

/// A pipeline from a gst-launch description.
pub fn launch(description: &str) -> gst::Pipeline {
    init();
    gst::parse::launch(description)
        .unwrap_or_else(|e| panic!("{description}: {e}"))
        .downcast::<gst::Pipeline>()
        .unwrap()
}

/// The `appsrc` named `name` in `pipeline`.
pub fn app_src(pipeline: &gst::Pipeline, name: &str) -> gst_app::AppSrc {
    pipeline
        .by_name(name)
        .unwrap_or_else(|| panic!("no element {name}"))
        .downcast::<gst_app::AppSrc>()
        .unwrap()
}

/// The `appsink` named `name` in `pipeline`.
pub fn app_sink(pipeline: &gst::Pipeline, name: &str) -> gst_app::AppSink {
    pipeline
        .by_name(name)
        .unwrap_or_else(|| panic!("no element {name}"))
        .downcast::<gst_app::AppSink>()
        .unwrap()
}

/// A started harness around `element`, with a bus to read its messages from.
pub fn harness(element: &gst::Element) -> (gst_check::Harness, gst::Bus) {
    let bus = gst::Bus::new();
    element.set_bus(Some(&bus));
    let mut h = gst_check::Harness::with_element(element, Some("sink"), Some("src"));
    h.set_src_caps_str("application/x-streamcrypt-test");
    (h, bus)
}

pub fn encrypter(key: &str, kid: u64) -> (gst_check::Harness, gst::Bus) {
    harness(&make(&format!("streamencrypt key={key} key-id={kid}")))
}

pub fn decrypter(key: &str, kid: u64) -> (gst_check::Harness, gst::Bus) {
    harness(&make(&format!("streamdecrypt key={key} key-id={kid}")))
}

/// Deterministic payload `i`, 1..=3000 bytes long.
pub fn payload(i: u64) -> Vec<u8> {
    let len = 1 + (i.wrapping_mul(2654435761) % 3000) as usize;
    (0..len)
        .map(|j| (i as usize).wrapping_mul(31).wrapping_add(j * 7) as u8)
        .collect()
}

/// Buffer `i`: `payload(i)` with every timestamp, offset and a mix of flags set.
pub fn media_buffer(i: u64) -> gst::Buffer {
    let mut buffer = gst::Buffer::from_mut_slice(payload(i));
    {
        let b = buffer.get_mut().unwrap();
        b.set_pts(gst::ClockTime::from_mseconds(20 * i));
        b.set_dts(
            gst::ClockTime::from_mseconds(20 * i).checked_sub(gst::ClockTime::from_mseconds(5)),
        );
        b.set_duration(gst::ClockTime::from_mseconds(20));
        b.set_offset(1000 + i);
        b.set_offset_end(1001 + i);
        let mut flags = gst::BufferFlags::empty();
        if !i.is_multiple_of(10) {
            flags |= gst::BufferFlags::DELTA_UNIT;
        }
        if i % 7 == 3 {
            flags |= gst::BufferFlags::HEADER;
        }
        if i % 5 == 1 {
            flags |= gst::BufferFlags::MARKER;
        }
        b.set_flags(flags);
    }
    buffer
}

/// Asserts that `got` is `media_buffer(i)`: bytes, timestamps, offsets and flags.
pub fn assert_is_media_buffer(got: &gst::BufferRef, i: u64) {
    let want = media_buffer(i);
    assert_eq!(
        got.map_readable().unwrap().as_slice(),
        payload(i),
        "payload {i}"
    );
    assert_eq!(got.pts(), want.pts(), "pts {i}");
    assert_eq!(got.dts(), want.dts(), "dts {i}");
    assert_eq!(got.duration(), want.duration(), "duration {i}");
    assert_eq!(got.offset(), want.offset(), "offset {i}");
    assert_eq!(got.offset_end(), want.offset_end(), "offset_end {i}");
    // DISCONT may be added by the transform on the first buffer, and TAG_MEMORY
    // (GStreamer's note that the memory was changed, which buffer pools read)
    // marks buffers trimmed in place; all others must come through as they were.
    let mask = !(gst::BufferFlags::DISCONT | gst::BufferFlags::TAG_MEMORY);
    assert_eq!(got.flags() & mask, want.flags() & mask, "flags {i}");
}

/// The KID and counter of an SFrame, read with our own parser.
pub fn sframe_header(frame: &gst::BufferRef) -> (u64, u64) {
    let map = frame.map_readable().unwrap();
    let (header, _) = gststreamcrypt::sframe::Header::decode(&map).unwrap();
    (header.kid, header.ctr)
}

pub fn stats(element: &gst::Element) -> gst::Structure {
    element.property::<gst::Structure>("stats")
}

pub fn stat(element: &gst::Element, field: &str) -> u64 {
    stats(element)
        .get::<u64>(field)
        .unwrap_or_else(|e| panic!("stats field {field}: {e}"))
}

/// Messages on `bus` so far.
pub fn drain(bus: &gst::Bus) -> Vec<gst::Message> {
    std::iter::from_fn(|| bus.pop()).collect()
}

pub fn warnings(messages: &[gst::Message]) -> Vec<String> {
    messages
        .iter()
        .filter_map(|m| match m.view() {
            gst::MessageView::Warning(w) => Some(w.error().to_string()),
            _ => None,
        })
        .collect()
}

/// The first error message's GError and text.
pub fn first_error(messages: &[gst::Message]) -> Option<glib::Error> {
    messages.iter().find_map(|m| match m.view() {
        gst::MessageView::Error(e) => Some(e.error()),
        _ => None,
    })
}

/// `appsrc ! elements... ! appsink`, for tests that need a real pipeline: streaming
/// threads, restarts, property changes from other threads.
pub struct AppPipeline {
    pub pipeline: gst::Pipeline,
    pub src: gst_app::AppSrc,
    pub sink: gst_app::AppSink,
}

impl AppPipeline {
    pub fn new(elements: &[&gst::Element]) -> Self {
        init();
        let src = gst_app::AppSrc::builder()
            .caps(&gst::Caps::new_empty_simple(
                "application/x-streamcrypt-test",
            ))
            .format(gst::Format::Time)
            .build();
        let sink = gst_app::AppSink::builder().sync(false).build();
        let pipeline = gst::Pipeline::new();
        let mut chain: Vec<&gst::Element> = vec![src.upcast_ref()];
        chain.extend(elements);
        chain.push(sink.upcast_ref());
        pipeline.add_many(chain.iter().copied()).unwrap();
        gst::Element::link_many(chain.iter().copied()).unwrap();
        Self {
            pipeline,
            src,
            sink,
        }
    }

    /// Plays `buffers` through to EOS and returns what came out; panics on an error.
    pub fn run(&self, buffers: impl IntoIterator<Item = gst::Buffer>) -> Vec<gst::Buffer> {
        self.pipeline.set_state(gst::State::Playing).unwrap();
        for buffer in buffers {
            self.src.push_buffer(buffer).unwrap();
        }
        self.src.end_of_stream().unwrap();
        let out = self.collect();
        self.stop();
        out
    }

    /// Pulls until EOS.
    pub fn collect(&self) -> Vec<gst::Buffer> {
        let mut out = Vec::new();
        while let Ok(sample) = self.sink.pull_sample() {
            out.push(sample.buffer_owned().unwrap());
        }
        out
    }

    /// Sets the pipeline to NULL, panicking if an error was posted.
    pub fn stop(&self) {
        let messages = drain(&self.pipeline.bus().unwrap());
        self.pipeline.set_state(gst::State::Null).unwrap();
        if let Some(err) = first_error(&messages) {
            panic!("pipeline error: {err}");
        }
    }
}

/// A directory holding only the plugin this test binary was built with. `cargo test`
/// builds the cdylib into target/<profile>/deps (next to this binary) but, unlike
/// `cargo build`, does not copy it up to target/<profile>; deps/ also holds
/// proc-macro libraries that GStreamer must not try to load.
pub fn plugin_dir(scratch: &Path) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let built = exe.parent().unwrap().join("libgststreamcrypt.so");
    assert!(built.exists(), "{} not built", built.display());
    let dir = scratch.join("plugin");
    std::fs::create_dir_all(&dir).unwrap();
    let link = dir.join("libgststreamcrypt.so");
    if !link.exists() {
        std::os::unix::fs::symlink(&built, &link).unwrap();
    }
    dir
}

/// A command that sees only the freshly built plugin, with a registry of its own.
pub fn gst_command(program: &str, scratch: &Path) -> Command {
    let mut command = Command::new(program);
    command
        .env("GST_PLUGIN_PATH", plugin_dir(scratch))
        .env("GST_REGISTRY", scratch.join("registry.bin"))
        .env_remove("GST_DEBUG");
    command
}

// Bounded waits for pipelines with streaming threads of their own: a pipeline
// that hangs fails its test instead of holding CI.

/// The longest any one wait on a pipeline may take.
pub const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Waits until `done` holds; panics naming `what` after `TIMEOUT`.
pub fn wait_until(what: &str, done: impl FnMut() -> bool) {
    wait_until_or(what, done, String::new);
}

/// `wait_until`, adding what `context` says then to the panic message.
pub fn wait_until_or(what: &str, mut done: impl FnMut() -> bool, context: impl Fn() -> String) {
    let deadline = std::time::Instant::now() + TIMEOUT;
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {TIMEOUT:?} waiting for {what}; {}",
            context()
        );
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// Pops the messages on `bus` up to and including the first EOS or error;
/// panics after `TIMEOUT` without either.
pub fn messages_until_end(bus: &gst::Bus) -> Vec<gst::Message> {
    let deadline = std::time::Instant::now() + TIMEOUT;
    let mut messages = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let Some(message) = bus.timed_pop(gst::ClockTime::from_nseconds(left.as_nanos() as u64))
        else {
            panic!("no EOS or error within {TIMEOUT:?}; messages so far: {messages:?}");
        };
        let end = matches!(
            message.view(),
            gst::MessageView::Eos(_) | gst::MessageView::Error(_)
        );
        messages.push(message);
        if end {
            return messages;
        }
    }
}

/// What an appsink received, gathered by its callbacks as it arrives, so that
/// tests can wait for a count or for EOS with a bound.
#[derive(Default)]
pub struct Received {
    samples: std::sync::Mutex<Vec<gst::Sample>>,
    eos: std::sync::atomic::AtomicBool,
}

impl Received {
    /// Collects what `sink` receives from now on (replacing its callbacks).
    pub fn attach(sink: &gst_app::AppSink) -> std::sync::Arc<Self> {
        let received = std::sync::Arc::new(Self::default());
        let (on_sample, on_eos) = (received.clone(), received.clone());
        sink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |sink| {
                    let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                    on_sample.samples.lock().unwrap().push(sample);
                    Ok(gst::FlowSuccess::Ok)
                })
                .eos(move |_| on_eos.eos.store(true, std::sync::atomic::Ordering::SeqCst))
                .build(),
        );
        received
    }

    pub fn len(&self) -> usize {
        self.samples.lock().unwrap().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn samples(&self) -> Vec<gst::Sample> {
        self.samples.lock().unwrap().clone()
    }

    pub fn buffers(&self) -> Vec<gst::Buffer> {
        self.samples()
            .iter()
            .map(|sample| sample.buffer_owned().unwrap())
            .collect()
    }

    pub fn wait_for(&self, count: usize) {
        wait_until(&format!("{count} buffers out"), || self.len() >= count);
    }

    pub fn wait_for_eos(&self) {
        wait_until("EOS", || self.eos.load(std::sync::atomic::Ordering::SeqCst));
    }
}

/// The next sample `sink` receives; `None` at EOS. Panics when an error
/// reaches `bus` first, or after `TIMEOUT`.
pub fn next_sample(sink: &gst_app::AppSink, bus: &gst::Bus) -> Option<gst::Sample> {
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        if let Some(sample) = sink.try_pull_sample(gst::ClockTime::from_mseconds(20)) {
            return Some(sample);
        }
        if sink.is_eos() {
            return None;
        }
        if let Some(error) = bus.pop_filtered(&[gst::MessageType::Error]) {
            panic!("error instead of a sample: {error:?}");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no sample and no EOS within {TIMEOUT:?}"
        );
    }
}

/// Where a memory's bytes begin in its allocation: the same for a memory that
/// was only resized, so a buffer encrypted in its own memory keeps it.
pub fn allocation_start(memory: &gst::MemoryRef) -> usize {
    memory.map_readable().unwrap().as_ptr() as usize - memory.offset()
}
