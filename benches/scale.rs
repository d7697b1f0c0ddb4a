// SPDX-License-Identifier: MPL-2.0
//! Scale: many concurrent streams in one process, as a server runs them.
//!
//! Each stream is `source ! element ! fakesink`, built in one pipeline with all
//! the others. The source is a pad of our own linked to the element's sink pad:
//! a small pool of worker threads (one per core) pushes every stream's buffers
//! with `gst_pad_push`, stream after stream, so the source costs the same
//! whatever the number of streams and GStreamer's thread per source (which
//! dominates at thousands of streams) stays out of the measurement. The same
//! total of buffers goes through at every stream count; the cost per buffer is
//! the CPU time of the workers over the buffers (robust to other load on the
//! machine), and what an element adds is its pipeline's cost above the same
//! pipeline with `identity` in its place.
//!
//! Then memory: the heap a stream's element holds (glibc's `mallinfo2`, which
//! counts GLib's allocations and ours alike), over 1,000 streams started and
//! past their first buffer.
//!
//! Run with `cargo bench --bench scale` (or `scripts/bench.sh scale`).
//! Arguments narrow it down: mode names (`aes-128-gcm`, `sm4-gcm`) and stream
//! counts (`1000`).

mod common;
use common::EncoderAllocation;

use std::io::Write;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use gst::prelude::*;
use gststreamcrypt::compat::aes_cbc::CbcOptions;
use gststreamcrypt::format::{Encoder, Format, ReadyKey};
use gststreamcrypt::keys::KeyText;
use gststreamcrypt::mode::Mode;

/// Stream counts measured unless arguments give others.
const STREAM_COUNTS: [usize; 3] = [1, 100, 1000];
/// Buffers pushed in all at each stream count.
const TOTAL_BUFFERS: usize = 400_000;
/// An RTP payload.
const BUFFER_SIZE: usize = 1200;
/// Modes measured unless arguments name others.
const MODES: [Mode; 2] = [Mode::Aes128Gcm, Mode::Sm4Gcm];
/// Runs of each pipeline, taken in turn with the others of the same stream
/// count so that a slow spell of the machine does not favour one; the cheapest
/// run counts.
const ROUNDS: usize = 5;
/// Streams built for the memory measurement.
const MEMORY_STREAMS: usize = 1000;
/// The sink of every stream: no clock, no preroll (the workers push to all the
/// streams in turn, so none may block waiting for the others), and no buffer
/// kept after it is done with.
const SINK: &str = "fakesink sync=false async=false enable-last-sample=false";

/// The floor: an element that passes buffers on. Without its `handoff` signal,
/// whose emission takes GLib's process-wide signal lock for every buffer.
const IDENTITY: &str = "identity signal-handoffs=false";

/// glibc's heap statistics (`struct mallinfo2`).
#[repr(C)]
struct MallInfo2 {
    arena: usize,
    ordblks: usize,
    smblks: usize,
    hblks: usize,
    hblkhd: usize,
    usmblks: usize,
    fsmblks: usize,
    uordblks: usize,
    fordblks: usize,
    keepcost: usize,
}

#[repr(C)]
struct Timespec {
    seconds: i64,
    nanoseconds: i64,
}

/// Linux's clock of the CPU time the calling thread has used.
const CLOCK_THREAD_CPUTIME_ID: i32 = 3;

unsafe extern "C" {
    safe fn mallinfo2() -> MallInfo2;
    fn clock_gettime(clock: i32, time: *mut Timespec) -> i32;
}

/// Bytes allocated on the heap and not yet freed, in every arena and mapping.
fn heap_in_use() -> usize {
    let info = mallinfo2();
    info.uordblks + info.hblkhd
}

/// CPU time the calling thread has used so far.
fn thread_cpu_time() -> Duration {
    let mut time = Timespec {
        seconds: 0,
        nanoseconds: 0,
    };
    // SAFETY: `time` is a valid `struct timespec` to write into.
    let result = unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut time) };
    assert_eq!(result, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(time.seconds as u64, time.nanoseconds as u32)
}

/// Threads the process runs.
fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(0, |tasks| tasks.count())
}

/// The key of stream `stream`: every stream has its own, as a server's do.
fn key_hex(mode: Mode, stream: usize) -> String {
    let len = match mode {
        Mode::Aes256Gcm | Mode::Aes256Cbc => 32,
        Mode::Aes192Gcm => 24,
        _ => 16,
    };
    let seed = stream as u64 * 0x9e37_79b9_7f4a_7c15 + 1;
    (0..len)
        .map(|i| format!("{:02x}", (seed >> ((i % 8) * 8)) as u8 ^ (i as u8 * 29)))
        .collect()
}

/// What one stream runs between its source and its sink.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Chain {
    /// The floor: IDENTITY.
    Identity,
    Encrypt(Mode),
    /// `streamencrypt ! identity`: the floor of the decrypter below.
    EncryptIdentity(Mode),
    EncryptDecrypt(Mode),
}

impl Chain {
    fn description(self, stream: usize) -> String {
        let encrypt = |mode: Mode| {
            format!(
                "streamencrypt mode={} key={}",
                mode.nick(),
                key_hex(mode, stream)
            )
        };
        match self {
            Chain::Identity => IDENTITY.to_string(),
            Chain::Encrypt(mode) => encrypt(mode),
            Chain::EncryptIdentity(mode) => format!("{} ! {IDENTITY}", encrypt(mode)),
            Chain::EncryptDecrypt(mode) => format!(
                "{} ! streamdecrypt mode={} key={}",
                encrypt(mode),
                mode.nick(),
                key_hex(mode, stream)
            ),
        }
    }
}

/// `count` streams of `chain`, each fed by a source pad of its own, all in one
/// pipeline, playing and ready for buffers.
struct Streams {
    pipeline: gst::Pipeline,
    sources: Vec<gst::Pad>,
    /// How each source allocates its buffers, as its chain proposes.
    allocations: Vec<EncoderAllocation>,
}

impl Streams {
    fn new(count: usize, describe: impl Fn(usize) -> String) -> Self {
        let pipeline = gst::Pipeline::new();
        let mut sources = Vec::with_capacity(count);
        for stream in 0..count {
            let chain = describe(stream);
            let description = match chain.as_str() {
                "" => SINK.to_string(),
                chain => format!("{chain} ! {SINK}"),
            };
            let bin = gst::parse::bin_from_description(&description, false)
                .unwrap_or_else(|e| panic!("{description}: {e}"));
            let sink_pad = bin
                .find_unlinked_pad(gst::PadDirection::Sink)
                .expect("the chain's first sink pad");
            pipeline.add(&bin).unwrap();
            let source = gst::Pad::builder(gst::PadDirection::Src)
                .name(format!("source{stream}"))
                .build();
            source.link(&sink_pad).unwrap();
            sources.push(source);
        }
        pipeline
            .set_state(gst::State::Playing)
            .expect("pipeline plays");
        let caps = gst::Caps::builder("application/x-scale").build();
        let segment = gst::FormattedSegment::<gst::ClockTime>::new();
        for (stream, source) in sources.iter().enumerate() {
            source.set_active(true).unwrap();
            assert!(source.push_event(gst::event::StreamStart::new(&format!("scale-{stream}"))));
            assert!(source.push_event(gst::event::Caps::new(&caps)));
            assert!(source.push_event(gst::event::Segment::new(&segment)));
        }
        let allocations = sources.iter().map(EncoderAllocation::query).collect();
        Self {
            pipeline,
            sources,
            allocations,
        }
    }

    /// Pushes `per_stream` buffers into every stream from a pool of `workers`
    /// threads, each taking its share of the streams in turn; returns the wall
    /// time and the CPU time of all workers.
    fn push(&self, per_stream: usize, workers: usize) -> (Duration, Duration) {
        let workers = workers.min(self.sources.len()).max(1);
        let start = Barrier::new(workers + 1);
        std::thread::scope(|scope| {
            let threads: Vec<_> = (0..workers)
                .map(|worker| {
                    let (sources, start) = (&self.sources, &start);
                    let allocations = &self.allocations;
                    scope.spawn(move || {
                        let mine: Vec<(&gst::Pad, &EncoderAllocation)> = sources
                            .iter()
                            .zip(allocations)
                            .skip(worker)
                            .step_by(workers)
                            .collect();
                        start.wait();
                        let cpu = thread_cpu_time();
                        for _ in 0..per_stream {
                            for (source, allocation) in &mine {
                                source
                                    .push(source_buffer(allocation))
                                    .expect("buffer flows");
                            }
                        }
                        thread_cpu_time() - cpu
                    })
                })
                .collect();
            start.wait();
            let wall = Instant::now();
            let cpu: Duration = threads.into_iter().map(|t| t.join().unwrap()).sum();
            (wall.elapsed(), cpu)
        })
    }

    /// Checks that every buffer came through every element: a drop (a replay, a
    /// failed authentication) would make the figures meaningless.
    fn check_counts(&self, per_stream: u64) {
        for element in self
            .pipeline
            .iterate_recurse()
            .into_iter()
            .map(Result::unwrap)
        {
            let name = element.factory().map(|f| f.name().to_string());
            let (field, wanted) = match name.as_deref() {
                Some("streamencrypt") => ("buffers", per_stream),
                Some("streamdecrypt") => ("buffers-out", per_stream),
                _ => continue,
            };
            let stats = element.property::<gst::Structure>("stats");
            let got = stats.get::<u64>(field).unwrap();
            assert_eq!(got, wanted, "{} {field}: {stats}", element.name());
        }
    }
}

impl Drop for Streams {
    fn drop(&mut self) {
        for source in &self.sources {
            let _ = source.set_active(false);
        }
        self.pipeline.set_state(gst::State::Null).unwrap();
    }
}

/// A buffer as an encoder hands it on: new, allocated as its chain proposes,
/// written in place.
fn source_buffer(allocation: &EncoderAllocation) -> gst::Buffer {
    let mut buffer = allocation.buffer(BUFFER_SIZE);
    buffer.get_mut().unwrap().map_writable().unwrap().fill(0x5a);
    buffer
}

/// One run's figures.
#[derive(Clone, Copy)]
struct Run {
    wall: Duration,
    /// CPU time per buffer.
    per_buffer: Duration,
}

/// Runs each chain ROUNDS times over `streams` streams, the chains taking turns;
/// the cheapest run of each counts.
fn measure(chains: &[Chain], streams: usize, workers: usize) -> Vec<Run> {
    let per_stream = TOTAL_BUFFERS / streams;
    let buffers = (per_stream * streams) as u32;
    let mut best: Vec<Option<Run>> = vec![None; chains.len()];
    for _ in 0..ROUNDS {
        for (chain, best) in chains.iter().zip(&mut best) {
            let built = Streams::new(streams, |stream| chain.description(stream));
            let (wall, cpu) = built.push(per_stream, workers);
            built.check_counts(per_stream as u64);
            let run = Run {
                wall,
                per_buffer: cpu / buffers,
            };
            if best.is_none_or(|b| run.per_buffer < b.per_buffer) {
                *best = Some(run);
            }
        }
    }
    best.into_iter().map(Option::unwrap).collect()
}

fn us(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e6
}

/// `cost` above `floor`, in microseconds (negative when within the noise).
fn added_us(cost: Duration, floor: Duration) -> f64 {
    us(cost) - us(floor)
}

/// Stream 0's key with KID 0, ready for `mode`'s format.
fn ready_key(mode: Mode) -> (Format, ReadyKey) {
    let format = mode.format(CbcOptions::default());
    let key = format
        .parse_key(&KeyText::new(&key_hex(mode, 0)), mode.nick())
        .unwrap();
    let key = ReadyKey::new(&format, 0, &key);
    (format, key)
}

/// The cipher alone, no GStreamer: encrypting one buffer, cheapest of 3 runs.
fn cipher_cost(mode: Mode) -> Duration {
    let (format, key) = ready_key(mode);
    let mut encoder = Encoder::new(&format, &key);
    let input = vec![0x5au8; BUFFER_SIZE];
    let mut out = vec![0u8; format.max_encrypted_len(BUFFER_SIZE)];
    let count = 200_000;
    (0..3)
        .map(|_| {
            let cpu = thread_cpu_time();
            for _ in 0..count {
                std::hint::black_box(encoder.encrypt(&key, &input, &mut out).unwrap());
            }
            (thread_cpu_time() - cpu) / count
        })
        .min()
        .unwrap()
}

/// Stream counts and the worker threads that push into them.
type Rows = [(usize, usize)];

fn print_throughput(modes: &[Mode], rows: &Rows) {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("load average at the start: {}", load.trim());
    println!(
        "\nPer-buffer cost: {TOTAL_BUFFERS} buffers of {BUFFER_SIZE} B in all at each stream \
         count; streams xN = pushed by N worker threads; us = CPU microseconds per buffer, \
         cheapest of {ROUNDS} runs; wall = that run's elapsed time\n\
         chains: identity, enc = streamencrypt, enc!id = streamencrypt ! identity, enc!dec = \
         streamencrypt ! streamdecrypt (default replay window)\n\
         adds = what the element adds per buffer: enc - identity for the encrypter, \
         enc!dec - enc!id for the decrypter"
    );
    for &mode in modes {
        let chains = [
            Chain::Identity,
            Chain::Encrypt(mode),
            Chain::EncryptIdentity(mode),
            Chain::EncryptDecrypt(mode),
        ];
        let cipher = cipher_cost(mode);
        println!(
            "\n{} (the cipher alone encrypts a buffer in {:.2} us)",
            mode.nick(),
            us(cipher)
        );
        println!(
            "  {:>9} | {:>33} | {:>33} | {:>17}",
            "streams",
            "wall s: identity enc enc!id enc!dec",
            "us: identity enc enc!id enc!dec",
            "adds us: enc dec"
        );
        for &(streams, workers) in rows {
            let runs = measure(&chains, streams, workers);
            let wall = runs
                .iter()
                .map(|r| format!("{:.2}", r.wall.as_secs_f64()))
                .collect::<Vec<_>>()
                .join(" ");
            let cost = runs
                .iter()
                .map(|r| format!("{:.2}", us(r.per_buffer)))
                .collect::<Vec<_>>()
                .join(" ");
            let [identity, enc, enc_identity, enc_dec] = [0, 1, 2, 3].map(|i| runs[i].per_buffer);
            println!(
                "  {:>9} | {:>33} | {:>33} | {:>17}",
                format!("{streams} x{workers}"),
                wall,
                cost,
                format!(
                    "{:.2} {:.2}",
                    added_us(enc, identity),
                    added_us(enc_dec, enc_identity)
                )
            );
        }
    }
}

/// Heap bytes and threads per stream of `chain` (none: `source ! fakesink`),
/// over MEMORY_STREAMS streams started and past their first buffer.
fn memory_per_stream(chain: &str, first: &gst::Buffer) -> (f64, f64) {
    let (heap, threads) = (heap_in_use(), thread_count());
    let streams = Streams::new(MEMORY_STREAMS, |_| chain.to_string());
    for source in &streams.sources {
        source.push(first.copy()).expect("first buffer flows");
    }
    let per_stream =
        |after: usize, before: usize| (after as f64 - before as f64) / MEMORY_STREAMS as f64;
    let figures = (
        per_stream(heap_in_use(), heap),
        per_stream(thread_count(), threads),
    );
    drop(streams);
    figures
}

fn print_memory(mode: Mode) {
    let (format, key) = ready_key(mode);
    let plaintext = vec![0x5au8; BUFFER_SIZE];
    let mut frame = vec![0u8; format.max_encrypted_len(BUFFER_SIZE)];
    let len = Encoder::new(&format, &key)
        .encrypt(&key, &plaintext, &mut frame)
        .unwrap();
    frame.truncate(len);
    let (plaintext, frame) = (
        gst::Buffer::from_slice(plaintext),
        gst::Buffer::from_slice(frame),
    );
    // The decrypter's two keys, from a key file (`KID KEY` lines).
    let mut key_file = tempfile::NamedTempFile::new().unwrap();
    writeln!(key_file, "0 {}\n1 {}", key_hex(mode, 0), key_hex(mode, 1)).unwrap();
    let decrypter = format!(
        "streamdecrypt mode={} key-file={}",
        mode.nick(),
        key_file.path().display()
    );
    let kinds = [
        ("identity", IDENTITY.to_string(), &plaintext),
        (
            "streamencrypt (one key)",
            Chain::Encrypt(mode).description(0),
            &plaintext,
        ),
        (
            "streamdecrypt (2 keys, replay window 128)",
            decrypter,
            &frame,
        ),
    ];
    println!(
        "\nMemory per stream ({}, {MEMORY_STREAMS} streams started, one buffer through each): \
         heap = bytes allocated (glibc mallinfo2: GLib's and ours) by the element, its pads \
         and state, that is a stream's less a stream of `source ! fakesink`; threads = \
         threads started per element",
        mode.nick()
    );
    println!(
        "  {:>42} | {:>7} | {:>14} | {:>7}",
        "element", "heap B", "over identity", "threads"
    );
    // The first streams of each kind pay for one-time set-up (types, classes,
    // caches): each measurement runs twice, the second counting.
    let measure = |chain: &str, first: &gst::Buffer| {
        memory_per_stream(chain, first);
        memory_per_stream(chain, first)
    };
    let (bare_heap, bare_threads) = measure("", &plaintext);
    let mut identity_heap = None;
    for (name, chain, first) in &kinds {
        let (heap, threads) = measure(chain, first);
        let heap = heap - bare_heap;
        let over_identity = *identity_heap.get_or_insert(heap);
        println!(
            "  {name:>42} | {heap:>7.0} | {:>14.0} | {:>7.2}",
            heap - over_identity,
            threads - bare_threads
        );
    }
}

fn main() {
    // GLib 2.74's slice allocator hands out memory from slabs it keeps; with
    // malloc for everything (as from GLib 2.76 on) the heap figures count each
    // object exactly. It must be set before GLib starts: run again with it.
    if std::env::var_os("G_SLICE").is_none() {
        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .args(std::env::args_os().skip(1))
            .env("G_SLICE", "always-malloc")
            .status()
            .expect("re-run the benchmark");
        std::process::exit(status.code().unwrap_or(1));
    }
    let (mut counts, mode_filters) = common::start();
    if counts.is_empty() {
        counts = STREAM_COUNTS.to_vec();
    }
    let modes: Vec<Mode> = if mode_filters.is_empty() {
        MODES.to_vec()
    } else {
        mode_filters
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "streamcrypt scale: {cores} cores; each stream `source ! <chain> ! {SINK}`, all \
         streams in one pipeline"
    );
    // One worker at every count, so that rows differ only in the number of
    // streams; then the most streams from one worker per core, which shows
    // whether streams slow each other down when they run in parallel.
    let mut rows: Vec<(usize, usize)> = counts.iter().map(|&streams| (streams, 1)).collect();
    let most = counts.iter().copied().max().expect("a stream count");
    if cores > 1 && most > 1 {
        rows.push((most, cores));
    }
    print_throughput(&modes, &rows);
    print_memory(modes[0]);
}
