// SPDX-License-Identifier: MPL-2.0
//! `streamencrypt`: encrypts each buffer in the format `mode` names; keys switch
//! atomically with their KID.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_base::prelude::*;
use gst_base::subclass::prelude::*;

use crate::cipher::MAX_TAG_LEN;
use crate::common::{self, CaplessInput, KeySettings, KeyedElement};
use crate::format::{Encoder, EncryptError, Format, ReadyKey};
use crate::framing;
use crate::keys::{KeyError, KeyText, read_key_file};
use crate::livekit;
use crate::mode::Framing;
use crate::service::{self, ServiceSettings, WorkerSlot};
use crate::sframe::{FrameError, MAX_HEADER_LEN};

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "streamencrypt",
        gst::DebugColorFlags::empty(),
        Some("Stream encrypter"),
    )
});

/// The element's debug category.
pub(super) fn cat() -> &'static gst::DebugCategory {
    &CAT
}

#[derive(Debug, Default)]
pub(super) struct Settings {
    pub(super) keys: KeySettings,
    /// Whether `key-file` (rather than `key`) was set last: the later one wins.
    key_from_file: bool,
    rotate_on_keyframe: bool,
    /// `key-server`, `grant`, `grant-file`, `stream-id`.
    pub(super) service: ServiceSettings,
    /// `key-period`: 0 takes the service's.
    pub(super) key_period: u32,
}

/// What other threads hand to the streaming thread. Never held across the cipher.
#[derive(Default)]
struct Pending {
    /// The running format, to make keys set while playing ready at once.
    format: Option<Format>,
    framing: Framing,
    /// A key set while playing, taken into use at the next buffer (or keyframe).
    key: Option<Arc<ReadyKey>>,
    rotate_on_keyframe: bool,
}

/// Per-run state of the streaming thread, built in `start()`.
struct Stream {
    format: Format,
    framing: Framing,
    key: Arc<ReadyKey>,
    encoder: Encoder,
    /// With `framing=stream`: the stream header, still to be sent before the first
    /// record.
    header: Option<[u8; framing::HEADER_LEN]>,
    /// Whether a buffer has gone out (a byte stream can then no longer seek).
    started: bool,
}

/// SFrame payloads at least this large are encrypted where they lie, with header
/// and tag as memories of their own; smaller ones are encrypted into one new
/// memory, which costs less than two extra small memories (see
/// benches/throughput.rs).
const IN_PLACE_MIN: usize = 4096;

/// Plaintext pieces of an input of `len` bytes: one with `framing=buffer`; with
/// `framing=stream`, as many records as it takes to keep each within the record
/// limit (a length field never wraps, and the decrypter never refuses a record
/// we wrote).
fn pieces(framing: Framing, len: usize) -> impl Iterator<Item = std::ops::Range<usize>> {
    let piece = match framing {
        Framing::Buffer => len.max(1),
        Framing::Stream => framing::MAX_RECORD_PLAINTEXT,
    };
    (0..len.div_ceil(piece).max(1)).map(move |i| i * piece..((i + 1) * piece).min(len))
}

/// Most bytes an input of `len` bytes becomes in an output buffer.
fn max_sealed_len(format: &Format, framing: Framing, len: usize) -> usize {
    pieces(framing, len)
        .map(|piece| prefix_len(framing) + format.max_encrypted_len(piece.len()))
        .sum()
}

/// Encrypts `input` into `out` as one output buffer (records, each with its
/// length first, with `framing=stream`); returns its length, 0 when the format
/// has nothing to send.
fn seal_into(stream: &mut Stream, input: &[u8], out: &mut [u8]) -> Result<usize, EncryptError> {
    let framing = stream.framing;
    let prefix = prefix_len(framing);
    let mut at = 0;
    for piece in pieces(framing, input.len()) {
        let len = stream
            .encoder
            .encrypt(&stream.key, &input[piece], &mut out[at + prefix..])?;
        // No ciphertext, no record.
        if len > 0 {
            write_prefix(framing, len, &mut out[at..])?;
            at += prefix + len;
        }
    }
    Ok(at)
}

/// Bytes in front of the ciphertext in an output buffer.
fn prefix_len(framing: Framing) -> usize {
    match framing {
        Framing::Buffer => 0,
        Framing::Stream => framing::LENGTH_LEN,
    }
}

/// Writes the record length for `len` bytes of ciphertext into `out`.
fn write_prefix(framing: Framing, len: usize, out: &mut [u8]) -> Result<(), EncryptError> {
    if framing == Framing::Stream {
        // `pieces` keeps every record within the limit.
        let prefix = framing::length_prefix(len).ok_or(EncryptError::Frame(FrameError::TooLong))?;
        out[..framing::LENGTH_LEN].copy_from_slice(&prefix);
    }
    Ok(())
}

/// The stream header as a buffer of its own, flagged HEADER, as it also goes in the
/// caps' `streamheader`: multi-client sinks (`tcpserversink`) send it to every
/// client that connects, and only to them.
fn header_buffer(header: &[u8; framing::HEADER_LEN]) -> gst::Buffer {
    let mut buffer = gst::Buffer::from_slice(*header);
    buffer
        .get_mut()
        .expect("new buffer")
        .set_flags(gst::BufferFlags::HEADER);
    buffer
}

#[derive(Debug, Default, Clone)]
struct Stats {
    buffers: u64,
    /// Buffers encrypted in the room upstream allocated around them.
    buffers_in_place: u64,
    bytes_in: u64,
    bytes_out: u64,
    key_switches: u64,
    kid: Option<u64>,
}

/// The streaming thread's state and the statistics, under one lock taken once per
/// buffer.
#[derive(Default)]
struct StreamState {
    /// Built in `start()`, dropped with its keys in `stop()`.
    run: Option<Stream>,
    /// Kept after `stop()` for the `stats` property.
    stats: Stats,
}

impl Stats {
    fn to_structure(&self) -> gst::Structure {
        let mut s = gst::Structure::builder("streamencrypt-stats")
            .field("buffers", self.buffers)
            .field("buffers-in-place", self.buffers_in_place)
            .field("bytes-in", self.bytes_in)
            .field("bytes-out", self.bytes_out)
            .field("key-switches", self.key_switches)
            .build();
        if let Some(kid) = self.kid {
            s.set("kid", kid);
        }
        s
    }
}

#[derive(Default)]
pub struct StreamEncrypt {
    /// Largest payload encrypted where it lies: SFrame payloads up to what one
    /// output buffer (or record) holds; 0 for the other formats. Read once per
    /// buffer without BaseTransform's object lock.
    in_place_max: AtomicUsize,
    settings: Mutex<Settings>,
    pending: Mutex<Pending>,
    /// Whether `pending` holds a key: read once per buffer instead of locking it.
    key_pending: AtomicBool,
    stream: Mutex<StreamState>,
    input: CaplessInput,
    /// With `key-server`: the keys of the periods, and the thread that fetches
    /// them.
    pub(super) rotation: Mutex<Option<super::service::Rotation>>,
    pub(super) worker: WorkerSlot,
}

impl StreamEncrypt {
    /// Takes (kid, key) as the key to encrypt with: at start if not running, else
    /// at the next buffer (or keyframe). The two always change together.
    fn install_key(&self, kid: u64, text: KeyText) -> Result<(), KeyError> {
        let mut settings = self.settings.lock().unwrap();
        let mut pending = self.pending.lock().unwrap();
        let mode = settings.keys.mode.nick();
        if let Some(format) = pending.format {
            format.check_kid(kid, mode)?;
            let key = ReadyKey::from_text(&format, &settings.keys.livekit, kid, &text, mode)?;
            pending.key = Some(Arc::new(key));
            self.key_pending.store(true, Ordering::Release);
            gst::info!(
                CAT,
                imp = self,
                "key for KID {kid} queued for the next buffer"
            );
        } else if !text.is_passphrase() {
            settings.keys.mode.check_plausible_key(&text)?;
        }
        settings.keys.key = Some(text);
        settings.keys.key_id = kid;
        settings.keys.invalid.remove("key");
        settings.key_from_file = false;
        Ok(())
    }

    /// Takes `key` (from the key service) into use at the next buffer (or
    /// keyframe), as a key set while playing is; the settings keep no copy.
    pub(super) fn queue_key(&self, key: Arc<ReadyKey>) {
        let mut pending = self.pending.lock().unwrap();
        if pending.format.is_none() {
            return;
        }
        gst::info!(
            CAT,
            imp = self,
            "key for KID {} queued for the next buffer",
            key.kid()
        );
        pending.key = Some(key);
        self.key_pending.store(true, Ordering::Release);
    }

    /// Reads the first key of a key file, `KEY` (with `default_kid`) or
    /// `KID KEY`, and hands it to `take`; errors name the file and line.
    fn with_first_key<R>(
        &self,
        path: &Path,
        default_kid: u64,
        take: impl FnOnce(u64, KeyText) -> Result<R, KeyError>,
    ) -> Result<R, KeyError> {
        let file = read_key_file(path)?;
        self.warn_if_exposed(&file);
        let first = file.lines.first().expect("never empty");
        file.check(
            first,
            take(first.kid.unwrap_or(default_kid), first.key.clone()),
        )
    }

    fn set_key_file(&self, path: Option<PathBuf>) -> Result<(), KeyError> {
        if let (true, Some(path)) = (self.is_running(), &path) {
            let default_kid = self.settings.lock().unwrap().keys.key_id;
            self.with_first_key(path, default_kid, |kid, key| self.install_key(kid, key))?;
        }
        let mut settings = self.settings.lock().unwrap();
        settings.key_from_file = path.is_some();
        settings.keys.key_file = path;
        Ok(())
    }

    /// The key to start with, from `key-file` or `key` (whichever was set last).
    fn start_key(
        &self,
        settings: &Settings,
        format: &Format,
    ) -> Result<ReadyKey, gst::ErrorMessage> {
        let keys = &settings.keys;
        let mode = keys.mode.nick();
        let ready = |kid, text: KeyText| {
            format.check_kid(kid, mode)?;
            ReadyKey::from_text(format, &keys.livekit, kid, &text, mode)
        };
        match (&keys.key_file, &keys.key) {
            (Some(path), _) if settings.key_from_file || keys.key.is_none() => self
                .with_first_key(path, keys.key_id, ready)
                .map_err(|e| gst::error_msg!(gst::ResourceError::OpenRead, ("{e}"))),
            (_, Some(text)) => ready(keys.key_id, text.clone())
                .map_err(|e| gst::error_msg!(gst::LibraryError::Settings, ("Unusable `key`: {e}"))),
            _ => Err(gst::error_msg!(
                gst::LibraryError::Settings,
                ("No key: set the `key` property or `key-file` before starting")
            )),
        }
    }

    /// The key set while playing, if it is due at a buffer with `flags`.
    fn take_pending_key(&self, flags: gst::BufferFlags) -> Option<Arc<ReadyKey>> {
        if !self.key_pending.load(Ordering::Acquire) {
            return None;
        }
        let mut pending = self.pending.lock().unwrap();
        let keyframe = !flags.contains(gst::BufferFlags::DELTA_UNIT);
        if pending.rotate_on_keyframe && !keyframe {
            return None;
        }
        self.key_pending.store(false, Ordering::Relaxed);
        pending.key.take()
    }

    /// Encrypts one buffer of `bytes_in` bytes (its `flags` say whether it is a
    /// keyframe): switches to a key set while playing if one is due, sends the
    /// stream header first with `framing=stream`, runs `encrypt`, which returns
    /// its result and the bytes it output, and counts the buffer. The state is
    /// held across the cipher, but no other thread waits on it while buffers flow.
    fn encrypt_buffer(
        &self,
        flags: gst::BufferFlags,
        bytes_in: usize,
        encrypt: impl FnOnce(&mut Stream) -> Result<Result<Sealed, EncryptError>, gst::FlowError>,
    ) -> Result<Sealed, gst::FlowError> {
        let next_key = self.take_pending_key(flags);
        let mut state = self.stream.lock().unwrap();
        if let Some(header) = state.run.as_mut().and_then(|s| s.header.take()) {
            drop(state);
            self.push_header_buffer(&header)?;
            state = self.stream.lock().unwrap();
        }
        let StreamState { run, stats } = &mut *state;
        let stream = run.as_mut().ok_or(gst::FlowError::Flushing)?;
        if let Some(next_key) = next_key {
            gst::info!(
                CAT,
                imp = self,
                "switching from KID {} to KID {}",
                stream.key.kid(),
                next_key.kid()
            );
            stream.encoder.switch_key(&next_key);
            stats.key_switches += 1;
            stats.kid = Some(next_key.kid());
            stream.key = next_key;
        }
        stream.started = true;
        match encrypt(stream)? {
            Ok(sealed) => {
                stats.buffers += 1;
                stats.buffers_in_place += u64::from(matches!(sealed, Sealed::InRoom(_)));
                stats.bytes_in += bytes_in as u64;
                stats.bytes_out += sealed.len() as u64;
                Ok(sealed)
            }
            Err(err) => {
                let kid = stream.key.kid();
                drop(state);
                self.post_encrypt_error(kid, err);
                Err(gst::FlowError::Error)
            }
        }
    }

    /// With `framing=stream`, pushes the stream header if it has not gone out yet.
    fn push_header(&self) -> Result<(), gst::FlowError> {
        let header = self
            .stream
            .lock()
            .unwrap()
            .run
            .as_mut()
            .and_then(|s| s.header.take());
        match header {
            Some(header) => self.push_header_buffer(&header),
            None => Ok(()),
        }
    }

    fn push_header_buffer(&self, header: &[u8; framing::HEADER_LEN]) -> Result<(), gst::FlowError> {
        self.stream.lock().unwrap().stats.bytes_out += header.len() as u64;
        self.obj().src_pad().push(header_buffer(header))?;
        Ok(())
    }

    /// A byte stream of records is written once, in order: a muxer that goes back to
    /// rewrite its headers would overwrite records downstream.
    fn check_byte_segment(&self, segment: &gst::Segment) -> Result<(), String> {
        let framing = self.pending.lock().unwrap().framing;
        let started = self
            .stream
            .lock()
            .unwrap()
            .run
            .as_ref()
            .is_some_and(|s| s.started);
        if framing == Framing::Stream && started {
            let to = segment.start().value();
            return Err(format!(
                "framing=stream needs its input written once, in order, but upstream went \
                 back to rewrite byte {to}: make it write a streamable output (for example \
                 matroskamux streamable=true, or mp4mux fragment-duration=...)"
            ));
        }
        Ok(())
    }

    /// Output buffer size for `size` bytes in: the ciphertext, and with
    /// `framing=stream` the stream header and the records' lengths.
    fn max_output_len(format: &Format, framing: Framing, size: usize) -> usize {
        max_sealed_len(format, framing, size) + framing::HEADER_LEN
    }

    fn post_encrypt_error(&self, kid: u64, err: EncryptError) {
        match err {
            EncryptError::Exhausted { limit } => gst::element_imp_error!(
                self,
                gst::StreamError::Encode,
                ("The key for KID {kid} has protected {limit} frames, the most its cipher \
                     suite allows: set a new key (set-key, or key-id and key) to go on")
            ),
            err => gst::element_imp_error!(
                self,
                gst::StreamError::Encode,
                ("Cannot encrypt with KID {kid}: {err}")
            ),
        }
    }

    /// At EOS, pushes what the format still owes (aesenc's final padded block).
    fn finish_stream(&self) -> Result<(), gst::FlowError> {
        let last = {
            let mut state = self.stream.lock().unwrap();
            let Some(stream) = state.run.as_mut() else {
                return Ok(());
            };
            let key = stream.key.clone();
            stream.encoder.finish(&key)
        };
        if let Some(last) = last {
            let framing = self.pending.lock().unwrap().framing;
            self.push_header()?;
            let mut out = vec![0u8; prefix_len(framing)];
            if let Err(err) = write_prefix(framing, last.len(), &mut out) {
                self.post_encrypt_error(0, err);
                return Err(gst::FlowError::Error);
            }
            out.extend(last);
            self.stream.lock().unwrap().stats.bytes_out += out.len() as u64;
            self.obj()
                .src_pad()
                .push(gst::Buffer::from_mut_slice(out))?;
        }
        Ok(())
    }
}

impl KeyedElement for StreamEncrypt {
    fn category() -> &'static gst::DebugCategory {
        &CAT
    }

    fn with_key_settings<R>(&self, f: impl FnOnce(&mut KeySettings) -> R) -> R {
        f(&mut self.settings.lock().unwrap().keys)
    }

    fn accept_key(&self, kid: u64, key: KeyText) -> Result<(), KeyError> {
        self.install_key(kid, key)
    }

    fn ratchet_key(&self, kid: u64) -> Result<(), String> {
        let mut pending = self.pending.lock().unwrap();
        if pending.format != Some(Format::Livekit) {
            return Err("ratchet-key works in mode=livekit, while running".into());
        }
        // The newest key: one set and not yet in use, or the one in use.
        let current = match &pending.key {
            Some(key) => key.clone(),
            None => match &self.stream.lock().unwrap().run {
                Some(stream) => stream.key.clone(),
                None => return Err("not running".into()),
            },
        };
        if current.kid() != kid {
            return Err(format!("the key in use has KID {}", current.kid()));
        }
        let ratcheted = current.frame_key().expect("a LiveKit key").ratcheted();
        pending.key = Some(Arc::new(ReadyKey::livekit(kid, ratcheted)));
        self.key_pending.store(true, Ordering::Release);
        Ok(())
    }

    fn is_running(&self) -> bool {
        self.pending.lock().unwrap().format.is_some()
    }
}

#[glib::object_subclass]
impl ObjectSubclass for StreamEncrypt {
    const NAME: &'static str = "GstStreamEncrypt";
    type Type = super::StreamEncrypt;
    type ParentType = gst_base::BaseTransform;
}

impl ObjectImpl for StreamEncrypt {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            let mut properties = common::key_properties(
                "Key of the length `mode` needs, in hex (qq-tea also takes 16 characters of \
                 text); write-only. While playing, the new key and the current key-id take \
                 effect together at the next buffer",
                "File holding the key: the first line is `KEY` (used with key-id) or \
                 `KID KEY`; keeps the key out of `ps` and shell history. Read at start, \
                 and at once when set while playing",
                "Counters of the current or last run, streamencrypt-stats: buffers, \
                 buffers-in-place (encrypted in the room upstream allocated, nothing \
                 allocated), bytes-in, bytes-out, key-switches (guint64), kid (guint64, \
                 the KID in use)",
            );
            properties.push(
                glib::ParamSpecBoolean::builder("rotate-on-keyframe")
                    .nick("Rotate on keyframe")
                    .blurb(
                        "Hold a new key back until the next buffer without the DELTA_UNIT \
                         flag, so that every keyframe interval uses a single key",
                    )
                    .default_value(false)
                    .mutable_playing()
                    .build(),
            );
            properties.extend(common::cbc_properties());
            properties.extend(common::livekit_properties());
            properties.extend(service::properties(
                "Grant (a JWT from `streamcrypt-keys grant`) for key-server, write-only and \
                 never logged; needs publish and watch rights on stream-id (e.g. --rights \
                 0xff). Set while playing, it replaces the grant in use (checked first)",
            ));
            properties.push(
                glib::ParamSpecUInt::builder("key-period")
                    .nick("Key period")
                    .blurb(
                        "With key-server: seconds per key (the KID is the period's index, \
                         unix time / key-period). 0 takes the service's period; another \
                         value must equal it, or start fails naming both",
                    )
                    .mutable_ready()
                    .build(),
            );
            properties
        });
        PROPERTIES.as_ref()
    }

    fn signals() -> &'static [glib::subclass::Signal] {
        static SIGNALS: LazyLock<Vec<glib::subclass::Signal>> = LazyLock::new(|| {
            vec![
                common::key_signal::<StreamEncrypt>("set-key"),
                common::ratchet_signal::<StreamEncrypt>(),
                service::grant_expiring_signal(),
            ]
        });
        SIGNALS.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let name = pspec.name();
        if self.set_shared_property(name, value) {
            return;
        }
        let service = self.settings.lock().unwrap().service.set(name, value);
        if let Some(set) = service {
            if let Err(why) = self.worker.hand_over_grant(set) {
                self.refuse_setting(name, &why, "the grant in use stays");
            }
            return;
        }
        match name {
            "key-period" => {
                self.settings.lock().unwrap().key_period = value.get().expect("type checked")
            }
            "key" | "passphrase" => {
                let text = match name {
                    "key" => KeySettings::key_text(value),
                    _ => KeySettings::passphrase_text(value),
                };
                let result = match text {
                    Some(text) => {
                        let kid = self.settings.lock().unwrap().keys.key_id;
                        self.install_key(kid, text)
                    }
                    None => {
                        self.settings.lock().unwrap().keys.key = None;
                        Ok(())
                    }
                };
                match result {
                    Ok(()) => self.accept_property(name),
                    Err(err) => self.refuse_property(name, &err),
                }
            }
            "key-file" => {
                let path = value.get::<Option<PathBuf>>().expect("type checked");
                match self.set_key_file(path) {
                    Ok(()) => self.accept_property("key-file"),
                    Err(err) => self.refuse_property("key-file", &err),
                }
            }
            "rotate-on-keyframe" => {
                let enabled = value.get().expect("type checked");
                self.settings.lock().unwrap().rotate_on_keyframe = enabled;
                self.pending.lock().unwrap().rotate_on_keyframe = enabled;
            }
            other => unreachable!("no property {other}"),
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        let name = pspec.name();
        if let Some(value) = self.shared_property(name) {
            return value;
        }
        if let Some(value) = self.settings.lock().unwrap().service.get(name) {
            return value;
        }
        match name {
            "key-period" => self.settings.lock().unwrap().key_period.to_value(),
            "rotate-on-keyframe" => self.settings.lock().unwrap().rotate_on_keyframe.to_value(),
            "stats" => self.stream.lock().unwrap().stats.to_structure().to_value(),
            other => unreachable!("no readable property {other}"),
        }
    }

    fn constructed(&self) {
        self.parent_constructed();
        // GAP buffers are encrypted like any other and keep their flag.
        self.obj().set_gap_aware(true);
    }
}

impl GstObjectImpl for StreamEncrypt {}

impl ElementImpl for StreamEncrypt {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "Stream encrypter",
                "Filter/Encryptor",
                "Encrypts buffers or byte streams (SFrame, SM4, QQ TEA, aesenc's AES-CBC)",
                common::AUTHOR,
            )
        });
        Some(&*METADATA)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        common::pad_templates()
    }
}

impl BaseTransformImpl for StreamEncrypt {
    // In place for SFrame (the payload stays where it is, header and tag go
    // around it), into a new buffer for the formats without KID.
    const MODE: gst_base::subclass::BaseTransformMode = gst_base::subclass::BaseTransformMode::Both;
    // Caps are ANY on both sides, hence always the same: passthrough would let
    // plaintext through.
    const PASSTHROUGH_ON_SAME_CAPS: bool = false;
    const TRANSFORM_IP_ON_PASSTHROUGH: bool = false;

    fn start(&self) -> Result<(), gst::ErrorMessage> {
        self.input.set_negotiated(false);
        let settings = self.settings.lock().unwrap();
        settings.keys.check_valid()?;
        let format = settings.keys.format();
        let service = match settings.service.enabled() {
            true => Some(self.start_from_service(&settings, &format)?),
            false => None,
        };
        let key = match &service {
            Some(started) => started.key.clone(),
            None => Arc::new(self.start_key(&settings, &format)?),
        };
        gst::info!(
            CAT,
            imp = self,
            "starting with KID {} in mode {}",
            key.kid(),
            settings.keys.mode.nick()
        );
        let framing = settings.keys.framing;
        self.obj().set_in_place(format.carries_kid());
        let in_place_max = match format.carries_kid() {
            false => 0,
            true => max_record_plaintext(framing),
        };
        self.in_place_max.store(in_place_max, Ordering::Relaxed);
        *self.pending.lock().unwrap() = Pending {
            format: Some(format),
            framing,
            key: None,
            rotate_on_keyframe: settings.rotate_on_keyframe,
        };
        *self.stream.lock().unwrap() = StreamState {
            stats: Stats {
                kid: Some(key.kid()),
                ..Stats::default()
            },
            run: Some(Stream {
                format,
                framing,
                encoder: Encoder::new(&format, &key),
                key,
                header: (framing == Framing::Stream)
                    .then(|| framing::stream_header(format.stream_code())),
                started: false,
            }),
        };
        drop(settings);
        if let Some(started) = service {
            self.start_rotation(started);
        }
        Ok(())
    }

    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        self.input.set_negotiated(false);
        self.stop_rotation();
        let mut settings = self.settings.lock().unwrap();
        *self.pending.lock().unwrap() = Pending::default();
        self.key_pending.store(false, Ordering::Relaxed);
        self.stream.lock().unwrap().run = None;
        if settings.keys.clear_keys_on_stop {
            settings.keys.clear_keys();
        }
        gst::info!(CAT, imp = self, "stopped");
        Ok(())
    }

    fn sink_event(&self, event: gst::Event) -> bool {
        match event.view() {
            gst::EventView::Eos(_) if self.finish_stream().is_err() => {
                gst::warning!(CAT, imp = self, "could not push the final block");
            }
            gst::EventView::Segment(segment)
                if segment.segment().format() == gst::Format::Bytes =>
            {
                if let Err(err) = self.check_byte_segment(segment.segment()) {
                    gst::element_imp_error!(self, gst::StreamError::NotImplemented, ("{err}"));
                    return false;
                }
            }
            _ => {}
        }
        self.parent_sink_event(event)
    }

    fn query(&self, direction: gst::PadDirection, query: &mut gst::QueryRef) -> bool {
        if common::answer_scheduling(direction, query) {
            return true;
        }
        // A byte stream of records cannot be rewritten in place: tell upstream
        // muxers so, and they write a streamable output instead of seeking back.
        if direction == gst::PadDirection::Sink
            && self.pending.lock().unwrap().framing == Framing::Stream
            && common::refuse_byte_seeking(query)
        {
            return true;
        }
        BaseTransformImplExt::parent_query(self, direction, query)
    }

    fn transform_caps(
        &self,
        direction: gst::PadDirection,
        caps: &gst::Caps,
        filter: Option<&gst::Caps>,
    ) -> Option<gst::Caps> {
        let settings = self.settings.lock().unwrap();
        let header = (settings.keys.framing == Framing::Stream)
            .then(|| framing::stream_header(settings.keys.format().stream_code()));
        drop(settings);
        let mut caps = caps.clone();
        if let Some(header) = header
            && !caps.is_any()
        {
            let caps = caps.make_mut();
            for structure in caps.iter_mut() {
                if direction == gst::PadDirection::Sink {
                    let headers = gst::Array::new([header_buffer(&header).to_send_value()]);
                    structure.set("streamheader", headers);
                } else {
                    structure.remove_field("streamheader");
                }
            }
        }
        Some(match filter {
            Some(filter) => filter.intersect_with_mode(&caps, gst::CapsIntersectMode::First),
            None => caps,
        })
    }

    fn transform_size(
        &self,
        direction: gst::PadDirection,
        _caps: &gst::Caps,
        size: usize,
        _othercaps: &gst::Caps,
    ) -> Option<usize> {
        let pending = self.pending.lock().unwrap();
        let (format, framing) = (pending.format?, pending.framing);
        drop(pending);
        match direction {
            gst::PadDirection::Sink => Some(Self::max_output_len(&format, framing, size)),
            _ => Some(size),
        }
    }

    fn set_caps(&self, incaps: &gst::Caps, outcaps: &gst::Caps) -> Result<(), gst::LoggableError> {
        if self.pending.lock().unwrap().format == Some(Format::Livekit) {
            let codec = common::livekit_codec(self, incaps)?;
            if let Some(stream) = self.stream.lock().unwrap().run.as_mut() {
                stream.encoder.set_codec(codec);
            }
        }
        common::set_caps(self, &self.input, incaps, outcaps)
    }

    fn submit_input_buffer(
        &self,
        is_discont: bool,
        inbuf: gst::Buffer,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        common::submit_input_buffer(self, &self.input, is_discont, inbuf)
    }

    fn generate_output(
        &self,
    ) -> Result<gst_base::subclass::base_transform::GenerateOutputSuccess, gst::FlowError> {
        // Every buffer goes to `transform_ip`, which writes a new memory into the
        // buffer or encrypts where the payload lies: never through BaseTransform's
        // output buffer.
        common::generate_in_place(self, &self.input)
    }

    fn decide_allocation(
        &self,
        query: &mut gst::query::Allocation,
    ) -> Result<(), gst::LoggableError> {
        common::system_memory_allocation(query);
        self.parent_decide_allocation(query)
    }

    fn propose_allocation(
        &self,
        decide_query: Option<&gst::query::Allocation>,
        query: &mut gst::query::Allocation,
    ) -> Result<(), gst::LoggableError> {
        // BaseTransform's answer (downstream's, or the metas it keeps); we answer
        // with our room even when downstream gives none.
        if let Err(err) = self.parent_propose_allocation(decide_query, query) {
            gst::debug!(CAT, imp = self, "no proposal from downstream: {err}");
        }
        let pending = self.pending.lock().unwrap();
        if let Some((prefix, padding)) = pending
            .format
            .and_then(|format| proposed_room(&format, pending.framing))
        {
            gst::debug!(
                CAT,
                imp = self,
                "asking for {prefix} bytes before and {padding} after each buffer"
            );
            // Downstream's room is around our output, which begins `prefix`
            // bytes before the input and ends up to `padding` after it: upstream
            // leaves both.
            let proposed: Vec<_> = query.allocation_params().collect();
            for (i, (allocator, params)) in proposed.iter().enumerate() {
                query.set_nth_allocation_param(
                    i as u32,
                    allocator.as_ref(),
                    gst::AllocationParams::new(
                        params.flags(),
                        params.align(),
                        params.prefix() + prefix,
                        params.padding() + padding,
                    ),
                );
            }
            if proposed.is_empty() {
                query.add_allocation_param(
                    None::<&gst::Allocator>,
                    gst::AllocationParams::new(gst::MemoryFlags::empty(), 0, prefix, padding),
                );
            }
        }
        Ok(())
    }

    fn transform_meta<'a>(
        &self,
        _outbuf: &mut gst::BufferRef,
        _meta: gst::MetaRef<'a, gst::Meta>,
        _inbuf: &'a gst::BufferRef,
    ) -> bool {
        // Every meta goes along, not only untagged ones as BaseTransform's default
        // does: the decrypter must restore what the encrypter was given (audio
        // clipping, video layout, timecodes...), and the bytes they describe come
        // back exactly.
        true
    }

    fn transform_ip(&self, buf: &mut gst::BufferRef) -> Result<gst::FlowSuccess, gst::FlowError> {
        let payload_len = buf.size();
        let flags = buf.flags();
        let in_place_max = self.in_place_max.load(Ordering::Relaxed);
        let sealed = self.encrypt_buffer(flags, payload_len, |stream| {
            if let Some(sealed) = seal_in_room(stream, buf, flags)? {
                return Ok(sealed);
            }
            if (IN_PLACE_MIN..=in_place_max).contains(&payload_len) {
                return seal_around(stream, buf).map(|sealed| sealed.map(Sealed::InBuffer));
            }
            // One map of the input for either kind of format.
            common::with_readable(buf, |input| {
                seal_to_memory(stream, input, flags).map(Sealed::Memory)
            })
        })?;
        match sealed {
            // Only aesenc's unpadded stream completes no block in some buffers:
            // send nothing rather than an empty buffer (aesdec aborts on an empty
            // first buffer when the IV is serialized) or an empty record.
            sealed if sealed.len() == 0 => Ok(gst_base::BASE_TRANSFORM_FLOW_DROPPED),
            Sealed::InRoom(_) | Sealed::InBuffer(_) => Ok(gst::FlowSuccess::Ok),
            Sealed::Memory(memory) => {
                buf.replace_all_memory(memory);
                Ok(gst::FlowSuccess::Ok)
            }
        }
    }
}

/// Where a buffer's encryption went.
enum Sealed {
    /// Into the room around the buffer's bytes in its own memory, now this many
    /// bytes long.
    InRoom(usize),
    /// Into the buffer, with memories added around it, now this many bytes long.
    InBuffer(usize),
    /// Into a new memory, to replace the buffer's.
    Memory(gst::Memory),
}

impl Sealed {
    /// Bytes out.
    fn len(&self) -> usize {
        match self {
            Sealed::InRoom(len) | Sealed::InBuffer(len) => *len,
            Sealed::Memory(memory) => memory.size(),
        }
    }
}

/// Encrypts `buf` in its own memory when upstream allocated it with the room we
/// proposed (`propose_allocation`), as encoders do: no new memory, no memory
/// freed. SFrame and LiveKit are sealed where they lie, SFrame's header written
/// into the room in front and the tag (LiveKit's trailer) into the room behind;
/// SM4-ECB and AES-CBC (`framing=buffer`) are encrypted where they lie, their
/// padding (and a serialized IV) growing into the room behind; the other
/// formats (below IN_PLACE_MIN) encrypt through a scratch of the streaming
/// thread's and are copied back. `None` when the buffer has too little
/// room or is not writable, or LiveKit's header must move.
fn seal_in_room(
    stream: &mut Stream,
    buf: &mut gst::BufferRef,
    flags: gst::BufferFlags,
) -> Result<Option<Result<Sealed, EncryptError>>, gst::FlowError> {
    let Some(room) = common::room(buf) else {
        return Ok(None);
    };
    let len = buf.size();
    let framing = stream.framing;
    let in_place = framing == Framing::Buffer && stream.format.encrypts_in_room();
    let (front, back) = match stream.format {
        Format::Sframe(suite) if len <= max_record_plaintext(framing) => {
            (prefix_len(framing) + MAX_HEADER_LEN, suite.tag_len())
        }
        // Empty frames go out as they are (`seal_to_memory`).
        Format::Livekit if len > 0 && len <= max_record_plaintext(framing) => {
            (prefix_len(framing), livekit::SEAL_ROOM)
        }
        Format::Sframe(_) | Format::Livekit => return Ok(None),
        // At any length: the output grows behind the input only.
        format if in_place => (0, max_sealed_len(&format, framing, len) - len),
        format if len < IN_PLACE_MIN => {
            // Placed as far forward as the room allows: the output starts at
            // most `before` bytes ahead of the input, and ends inside the memory.
            let grows = max_sealed_len(&format, framing, len) - len;
            let front = room.before.min(grows);
            (front, grows - front)
        }
        _ => return Ok(None),
    };
    if room.before < front || room.after < back {
        return Ok(None);
    }
    // Not ours to write when another buffer shares the memory.
    let mut slot = common::MapSlot::default();
    let Some(mut map) = common::SoleMemoryMap::writable(buf, &mut slot) else {
        return Ok(None);
    };
    let (memory, offset) = map.whole(room);
    let start = offset - front;
    let room = &mut memory[start..offset + len + back];
    let written = match stream.format {
        Format::Sframe(_) => seal_sframe_in_room(stream, room, front, len).map(Written::Range),
        Format::Livekit => {
            let keyframe = !flags.contains(gst::BufferFlags::DELTA_UNIT);
            let sealed = stream
                .encoder
                .encrypt_frame_in_place(&stream.key, &mut room[front..], len, keyframe)
                .expect("a LiveKit encoder");
            match sealed {
                Ok(None) => return Ok(None),
                Ok(Some(livekit::InPlace::Sealed(sealed_len))) => {
                    write_prefix(framing, sealed_len, room)
                        .map(|()| Written::Range(0..front + sealed_len))
                }
                Ok(Some(livekit::InPlace::Moved(frame))) => {
                    framed_memory(framing, frame).map(Written::Memory)
                }
                Err(err) => Err(err),
            }
        }
        _ if in_place => Ok(Written::Range(seal_where_it_lies(stream, room, len))),
        _ => seal_through_scratch(stream, room, front, len).map(Written::Range),
    };
    Ok(Some(written.map(|written| match written {
        Written::Range(out) => {
            map.resize(start + out.start..start + out.end);
            Sealed::InRoom(out.len())
        }
        Written::Memory(memory) => Sealed::Memory(memory),
    })))
}

/// What `seal_in_room` wrote: a range of the room, or, for a LiveKit frame
/// whose escapes did not fit, a new memory.
enum Written {
    Range(std::ops::Range<usize>),
    Memory(gst::Memory),
}

/// The room (prefix, padding) to ask upstream to allocate around each buffer's
/// bytes, so that `seal_in_room` can encrypt it there.
fn proposed_room(format: &Format, framing: Framing) -> Option<(usize, usize)> {
    match format {
        Format::Sframe(_) => Some((prefix_len(framing) + MAX_HEADER_LEN, MAX_TAG_LEN)),
        Format::Livekit => Some((prefix_len(framing), livekit::SEAL_ROOM)),
        // What a buffer below IN_PLACE_MIN grows by at most, over a few block
        // lengths (padding to whole blocks depends on the length).
        _ => {
            let grows = (IN_PLACE_MIN - 64..IN_PLACE_MIN)
                .map(|len| max_sealed_len(format, framing, len) - len)
                .max();
            grows.map(|grows| (0, grows))
        }
    }
}

/// Largest plaintext of one SFrame in an output buffer: with `framing=stream`
/// the record limit.
fn max_record_plaintext(framing: Framing) -> usize {
    match framing {
        Framing::Buffer => usize::MAX,
        Framing::Stream => framing::MAX_RECORD_PLAINTEXT,
    }
}

/// Seals the `len` bytes at `front` in `room` (which has MAX_HEADER_LEN and the
/// record length before them and the tag after) where they lie; returns where
/// the output is in `room`.
fn seal_sframe_in_room(
    stream: &mut Stream,
    room: &mut [u8],
    front: usize,
    len: usize,
) -> Result<std::ops::Range<usize>, EncryptError> {
    let (head, rest) = room.split_at_mut(front);
    let (payload, tail) = rest.split_at_mut(len);
    let parts = stream
        .encoder
        .encrypt_in_place(&stream.key, payload)?
        .expect("in place only for formats that encrypt in place");
    let (header, tag) = (parts.header(), parts.tag());
    tail[..tag.len()].copy_from_slice(tag);
    let header_at = front - header.len();
    head[header_at..].copy_from_slice(header);
    let first = header_at - prefix_len(stream.framing);
    write_prefix(
        stream.framing,
        header.len() + len + tag.len(),
        &mut head[first..],
    )?;
    Ok(first..front + len + tag.len())
}

thread_local! {
    /// Output of the formats that cannot encrypt where the input lies, before it
    /// is copied back into the input's memory: one per streaming thread, reused
    /// by every encrypter the thread runs (no allocation per buffer, none per
    /// stream).
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Encrypts the `len` bytes at `front` in `room` into the thread's scratch and
/// copies the output to the start of `room`; returns where the output is.
fn seal_through_scratch(
    stream: &mut Stream,
    room: &mut [u8],
    front: usize,
    len: usize,
) -> Result<std::ops::Range<usize>, EncryptError> {
    SCRATCH.with_borrow_mut(|scratch| {
        scratch.resize(room.len(), 0);
        let written = seal_into(stream, &room[front..front + len], scratch)?;
        room[..written].copy_from_slice(&scratch[..written]);
        clear_behind(room, written, front + len);
        Ok(0..written)
    })
}

/// Encrypts the `len` bytes at the start of `room` where they lie, for the
/// formats that can (`Format::encrypts_in_room`); returns where the output is.
fn seal_where_it_lies(stream: &mut Stream, room: &mut [u8], len: usize) -> std::ops::Range<usize> {
    let written = stream
        .encoder
        .encrypt_in_room(&stream.key, room, len)
        .expect("a format that encrypts in room");
    clear_behind(room, written, len);
    0..written
}

/// No plaintext left behind an output of `written` bytes that replaced `len`
/// bytes of input, where the memory keeps it (aesenc's unpadded stream holds a
/// block's tail back for the next buffer).
fn clear_behind(room: &mut [u8], written: usize, len: usize) {
    if written < len {
        room[written..len].fill(0);
    }
}

/// Seals a payload of IN_PLACE_MIN or more where it lies, the header (after a
/// record length in a byte stream) and the tag going around it as memories of
/// their own: the payload is neither copied nor moved. Returns the bytes out.
fn seal_around(
    stream: &mut Stream,
    buf: &mut gst::BufferRef,
) -> Result<Result<usize, EncryptError>, gst::FlowError> {
    let framing = stream.framing;
    let payload_len = buf.size();
    let sealed = {
        let mut payload = buf.map_writable().map_err(|_| gst::FlowError::Error)?;
        stream.encoder.encrypt_in_place(&stream.key, &mut payload)
    };
    Ok(sealed.and_then(|parts| {
        let parts = parts.expect("in place only for formats that encrypt in place");
        let sealed_len = parts.header().len() + payload_len + parts.tag().len();
        let mut length = [0u8; framing::LENGTH_LEN];
        write_prefix(framing, sealed_len, &mut length)?;
        let prefix = &length[..prefix_len(framing)];
        buf.prepend_memory(memory_of(&[prefix, parts.header()]));
        buf.append_memory(memory_of(&[parts.tag()]));
        Ok(buf.size())
    }))
}

/// A LiveKit frame as a memory: a record of its own with `framing=stream`.
fn framed_memory(framing: Framing, frame: Vec<u8>) -> Result<gst::Memory, EncryptError> {
    let out = if framing == Framing::Stream && !frame.is_empty() {
        let mut record = vec![0u8; framing::LENGTH_LEN];
        write_prefix(framing, frame.len(), &mut record)?;
        record.extend_from_slice(&frame);
        record
    } else {
        frame
    };
    Ok(gst::Memory::from_mut_slice(out))
}

/// Encrypts `input` (a frame; `flags` say whether it is a keyframe) into a new
/// memory.
fn seal_to_memory(
    stream: &mut Stream,
    input: &[u8],
    flags: gst::BufferFlags,
) -> Result<gst::Memory, EncryptError> {
    // Formats whose output size the content decides (LiveKit).
    let keyframe = !flags.contains(gst::BufferFlags::DELTA_UNIT);
    if let Some(framed) = stream.encoder.encrypt_frame(&stream.key, input, keyframe) {
        return framed.and_then(|frame| framed_memory(stream.framing, frame));
    }
    let max_len = max_sealed_len(&stream.format, stream.framing, input.len());
    common::new_memory(max_len, |out| seal_into(stream, input, out))
}

/// One memory holding `parts` one after the other.
fn memory_of(parts: &[&[u8]]) -> gst::Memory {
    let len = parts.iter().map(|part| part.len()).sum();
    let mut memory = gst::Memory::with_size(len);
    {
        let mut map = memory
            .get_mut()
            .expect("new memory")
            .map_writable()
            .expect("system memory maps");
        let mut at = 0;
        for part in parts {
            map[at..at + part.len()].copy_from_slice(part);
            at += part.len();
        }
    }
    memory
}
