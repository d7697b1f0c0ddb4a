// SPDX-License-Identifier: MPL-2.0
//! `streamdecrypt`: a key ring by KID, replay protection, and drop-or-fail on
//! anything that does not authenticate. SFrame frames name their key; for the
//! compatibility formats, which do not, the keys are tried in turn.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_base::prelude::*;
use gst_base::subclass::prelude::*;
use smallvec::SmallVec;
use zeroize::Zeroizing;

use super::OnError;
use super::service;
use crate::common::{self, CaplessInput, KeySettings, KeyedElement};
use crate::compat::Invalid;
use crate::format::{Format, ReadyKey, TrialDecoder};
use crate::framing::{Record, RecordReader, StreamError};
use crate::key_requests::{self, Held, RequestGate};
use crate::keyring::{KeyRing, Trust};
use crate::keys::{KeyError, KeyText, read_key_file};
use crate::livekit::keys::KeyParams;
use crate::livekit::{self, FrameInPlace, IvWindow, Layout, MediaCodec, OpenError, SealedFrame};
use crate::mode::{Framing, Mode};
use crate::service::{ServiceSettings, WorkerSlot};
use crate::sframe::{
    CipherSuite, FrameError, Header, MAX_OVERHEAD, ParsedFrame, Replay, ReplayWindow, SframeKey,
};
use crate::sniff;

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "streamdecrypt",
        gst::DebugColorFlags::empty(),
        Some("Stream decrypter"),
    )
});

const DEFAULT_REPLAY_WINDOW: u32 = 128;
const DEFAULT_MAX_KEYS: u32 = 16;
/// LiveKit's defaults: ratchets tried on a frame that fails, and consecutive
/// failures before a key is taken as invalid.
const DEFAULT_RATCHET_WINDOW: u32 = 8;
const DEFAULT_FAILURE_TOLERANCE: i32 = 10;
/// At most one drop warning per this interval; the others are counted in it.
const WARNING_INTERVAL: Duration = Duration::from_secs(1);
/// Frames in a row too old for the replay window, with none decrypted between,
/// that say a sender went back (restarted with the same key and KID) rather
/// than the network reordering a few.
const TOO_OLD_RUN: u64 = 16;

/// The element's debug category.
pub(super) fn cat() -> &'static gst::DebugCategory {
    &CAT
}

#[derive(Debug)]
struct Settings {
    keys: KeySettings,
    /// `key-server`, `grant`, `grant-file`, `stream-id`.
    service: ServiceSettings,
    /// `key-wait`: milliseconds a frame waits for its key from the service.
    key_wait: u32,
    /// `None` until set: the default depends on the framing.
    on_error: Option<OnError>,
    replay_window: u32,
    max_keys: u32,
    /// mode=livekit.
    ratchet_window: u32,
    failure_tolerance: i32,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            keys: KeySettings::default(),
            service: ServiceSettings::default(),
            key_wait: service::DEFAULT_KEY_WAIT_MS,
            on_error: None,
            replay_window: DEFAULT_REPLAY_WINDOW,
            max_keys: DEFAULT_MAX_KEYS,
            ratchet_window: DEFAULT_RATCHET_WINDOW,
            failure_tolerance: DEFAULT_FAILURE_TOLERANCE,
        }
    }
}

impl Settings {
    /// `on-error` as set, else `drop` for buffers and `fail` for byte streams: a
    /// record dropped from a byte stream leaves a hole the demuxer after us would
    /// report as a corrupt file, hiding the real cause.
    fn on_error(&self) -> OnError {
        self.on_error.unwrap_or(match self.keys.framing {
            Framing::Buffer => OnError::Drop,
            Framing::Stream => OnError::Fail,
        })
    }
}

/// A key ready to decrypt with, made for the running mode, with what the
/// element tracks per key: its KID's replay window and its authentication
/// failures. Adding the same key for its KID again keeps all of it.
pub(super) struct LiveKey {
    key: Arc<ReadyKey>,
    /// Written by the streaming thread alone (see `ReplayWindow`).
    replay: ReplayWindow,
    /// mode=livekit, whose frames carry no counter: the IVs of recent frames.
    recent_ivs: Mutex<IvWindow>,
    /// Frames that failed authentication under this key.
    auth_failures: AtomicU64,
    /// Failures after which the key is retired (SFrame suites only).
    max_auth_failures: u64,
    /// Failures since the last frame that authenticated, and how many make
    /// the key invalid (mode=livekit's `failure-tolerance`; `None`: never).
    consecutive_failures: AtomicU64,
    failure_tolerance: Option<u64>,
    /// A key fetched through `request-key` that has not yet authenticated a
    /// frame (see `crate::keyring`).
    on_probation: AtomicBool,
    /// mode=livekit: the keys one, two... ratchet steps on, made when first
    /// tried (a passphrase's ratchet costs 100,000 PBKDF2 iterations).
    ratchets: Mutex<Vec<Arc<ReadyKey>>>,
}

impl LiveKey {
    fn retired(&self) -> bool {
        self.auth_failures.load(Ordering::Relaxed) >= self.max_auth_failures
    }

    /// mode=livekit: too many frames in a row failed under this key.
    fn invalid(&self) -> bool {
        self.failure_tolerance
            .is_some_and(|tolerance| self.consecutive_failures.load(Ordering::Relaxed) > tolerance)
    }

    /// Whether `other` is this same key (for its KID and mode).
    fn same_key(&self, other: &LiveKey) -> bool {
        match (self.key.sframe(), other.key.sframe()) {
            (Some(a), Some(b)) => a.fingerprint() == b.fingerprint(),
            _ => match (self.key.frame_key(), other.key.frame_key()) {
                (Some(a), Some(b)) => a.same_as(b),
                // Without a KID there is no per-key state worth keeping.
                _ => false,
            },
        }
    }

    /// mode=livekit: the key `steps` ratchet steps on (1 or more).
    fn ratcheted(&self, steps: usize) -> Arc<ReadyKey> {
        let mut ratchets = self.ratchets.lock().unwrap();
        while ratchets.len() < steps {
            let from = ratchets.last().unwrap_or(&self.key);
            let next = from.frame_key().expect("a LiveKit key").ratcheted();
            ratchets.push(Arc::new(ReadyKey::livekit(self.key.kid(), next)));
        }
        ratchets[steps - 1].clone()
    }
}

impl AsRef<ReadyKey> for LiveKey {
    fn as_ref(&self) -> &ReadyKey {
        &self.key
    }
}

impl Running {
    /// `live` moved `steps` ratchet steps on: fresh per-key state, and the
    /// ratchets already made beyond it.
    fn stepped_on(&self, live: &LiveKey, steps: usize) -> Arc<LiveKey> {
        let stepped = self.made_live(live.ratcheted(steps), Trust::Trusted);
        *stepped.ratchets.lock().unwrap() = live.ratchets.lock().unwrap()[steps..].to_vec();
        stepped
    }
}

/// The keys to try on a buffer without a KID, in order: inline while few, so
/// that a buffer costs no allocation for them.
type TrialKeys = SmallVec<[Arc<LiveKey>; 4]>;

/// The streaming thread's side of the formats without a KID.
#[derive(Default)]
struct Trial {
    /// The stream's decoder (the CBC chain); `None` for formats with a KID.
    decoder: Option<TrialDecoder>,
    /// The keys to try, as read from the state when it was `keys_read` (see
    /// `State::trial_stamp`): read again only once that moves on, since taking
    /// a reference to every key (and building the list) for every buffer was a
    /// fifth of what the decrypter costs on small buffers.
    keys: TrialKeys,
    keys_read: Option<TrialStamp>,
}

impl Trial {
    fn new(format: &Format) -> Self {
        Self {
            decoder: TrialDecoder::new(format),
            ..Self::default()
        }
    }

    /// Lets go of the keys read, so that a key removed or replaced is wiped
    /// now rather than when the next buffer comes.
    fn forget_keys(&mut self) {
        self.keys.clear();
        self.keys_read = None;
    }
}

/// What the keys to try depend on: the key ring's generation and the KID the
/// stream uses (which is tried first).
type TrialStamp = (u64, Option<u64>);

struct RingEntry {
    text: KeyText,
    /// Present while running.
    live: Option<Arc<LiveKey>>,
}

/// Per-run state, built in `start()`.
pub(super) struct Running {
    mode: Mode,
    format: Format,
    framing: Framing,
    /// mode=livekit: key parameters, the codec (from the caps), and LiveKit's
    /// ratchet window and failure tolerance.
    livekit: KeyParams,
    codec: Option<MediaCodec>,
    ratchet_window: u32,
    failure_tolerance: Option<u64>,
    replay_window: u32,
    /// KID of the last frame that authenticated.
    current_kid: Option<u64>,
    warnings: WarningLimiter,
    pub(super) requests: RequestGate,
    /// Why the input seemed not to be encrypted, the last time it did.
    plaintext: Option<String>,
    /// An error stopped the stream (`on-error=fail`): it said all there is.
    failed: bool,
    /// Frames dropped in a row as older than the replay window.
    too_old_run: u64,
}

impl Running {
    fn live_key(&self, kid: u64, text: &KeyText, trust: Trust) -> Result<Arc<LiveKey>, KeyError> {
        let mode = self.mode.nick();
        self.format.check_kid(kid, mode)?;
        let key = ReadyKey::from_text(&self.format, &self.livekit, kid, text, mode)?;
        Ok(self.made_live(Arc::new(key), trust))
    }

    /// `key` with the state the element keeps per key, fresh.
    fn made_live(&self, key: Arc<ReadyKey>, trust: Trust) -> Arc<LiveKey> {
        let (max_auth_failures, recent_ivs) = match self.format {
            Format::Sframe(suite) => (suite.max_auth_failures(), 0),
            // AES-GCM's 128-bit tag (see `CipherSuite::max_auth_failures`).
            Format::Livekit => (1 << 36, self.replay_window as usize),
            _ => (u64::MAX, 0),
        };
        Arc::new(LiveKey {
            key,
            replay: ReplayWindow::new(self.replay_window),
            recent_ivs: Mutex::new(IvWindow::new(recent_ivs)),
            auth_failures: AtomicU64::new(0),
            max_auth_failures,
            consecutive_failures: AtomicU64::new(0),
            // LiveKit's rule; SFrame keys are retired by `max_auth_failures`.
            failure_tolerance: self
                .failure_tolerance
                .filter(|_| self.format == Format::Livekit),
            on_probation: AtomicBool::new(trust == Trust::Probation),
            ratchets: Mutex::new(Vec::new()),
        })
    }
}

#[derive(Debug, Default)]
struct WarningLimiter {
    last: Option<Instant>,
    suppressed: u64,
}

impl WarningLimiter {
    /// `Some(n)` when a warning may go out now, `n` being how many were held back
    /// since the last one.
    fn allow(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.duration_since(last) < WARNING_INTERVAL => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DropReason {
    NoKey,
    Authentication,
    Malformed,
    Replay,
}

#[derive(Debug, Default, Clone)]
pub(super) struct Stats {
    buffers_in: u64,
    buffers_out: u64,
    bytes_in: u64,
    bytes_out: u64,
    dropped_no_key: u64,
    dropped_auth: u64,
    dropped_malformed: u64,
    dropped_replay: u64,
    key_switches: u64,
    pub(super) key_requests: u64,
    kid: Option<u64>,
}

impl Stats {
    fn count_drop(&mut self, reason: DropReason) {
        *match reason {
            DropReason::NoKey => &mut self.dropped_no_key,
            DropReason::Authentication => &mut self.dropped_auth,
            DropReason::Malformed => &mut self.dropped_malformed,
            DropReason::Replay => &mut self.dropped_replay,
        } += 1;
    }

    fn dropped(&self) -> u64 {
        self.dropped_no_key + self.dropped_auth + self.dropped_malformed + self.dropped_replay
    }

    /// "3 without a key, 27 failing authentication" for the causes that occurred.
    fn drops_by_cause(&self) -> String {
        [
            (self.dropped_no_key, "without a key"),
            (self.dropped_auth, "failing authentication"),
            (self.dropped_malformed, "malformed"),
            (self.dropped_replay, "replayed or too late"),
        ]
        .iter()
        .filter(|(count, _)| *count > 0)
        .map(|(count, cause)| format!("{count} {cause}"))
        .collect::<Vec<_>>()
        .join(", ")
    }

    fn to_structure(&self, keys: usize) -> gst::Structure {
        let mut s = gst::Structure::builder("streamdecrypt-stats")
            .field("buffers-in", self.buffers_in)
            .field("buffers-out", self.buffers_out)
            .field("bytes-in", self.bytes_in)
            .field("bytes-out", self.bytes_out)
            .field("dropped", self.dropped())
            .field("dropped-no-key", self.dropped_no_key)
            .field("dropped-auth", self.dropped_auth)
            .field("dropped-malformed", self.dropped_malformed)
            .field("dropped-replay", self.dropped_replay)
            .field("key-switches", self.key_switches)
            .field("key-requests", self.key_requests)
            .field("keys", keys as u32)
            .build();
        if let Some(kid) = self.kid {
            s.set("kid", kid);
        }
        s
    }
}

/// Where a key comes from: the application vouches for the keys it sets; a
/// key answering `request-key` is on probation until it authenticates a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum KeySource {
    Application,
    Request,
}

pub(super) struct State {
    ring: KeyRing<RingEntry>,
    /// The key a frame named last (see `frame_key`).
    last_found: Option<Found>,
    pub(super) running: Option<Running>,
    pub(super) stats: Stats,
}

/// A key found in the ring, while the ring is at `generation`. Weak: the key
/// is dropped (and wiped) when the ring lets go of it, whatever this holds.
struct Found {
    generation: u64,
    kid: u64,
    key: Weak<LiveKey>,
}

impl Default for State {
    fn default() -> Self {
        Self {
            ring: KeyRing::new(DEFAULT_MAX_KEYS as usize),
            last_found: None,
            running: None,
            stats: Stats::default(),
        }
    }
}

impl State {
    /// Adds or replaces the key for `kid`. While running it is read with the mode
    /// and made ready at once; before start, at start. The key the KID already
    /// has, added again, keeps its replay window and failure count.
    fn add_key(
        &mut self,
        kid: u64,
        text: KeyText,
        mode: Mode,
        source: KeySource,
    ) -> Result<Vec<u64>, KeyError> {
        let Some(running) = self.running.as_mut() else {
            mode.check_plausible_key(&text)?;
            return Ok(self
                .ring
                .insert(kid, RingEntry { text, live: None }, Trust::Trusted, None));
        };
        // A key for a KID the stream asked for is an answer, whoever gives it.
        let trust = if source == KeySource::Request || running.requests.is_pending(kid) {
            Trust::Probation
        } else {
            Trust::Trusted
        };
        let live = running.live_key(kid, &text, trust)?;
        running.requests.answered(kid);
        let keep = running.current_kid;
        if let Some(entry) = self.ring.get_mut(kid)
            && let Some(old) = &entry.live
            && old.same_key(&live)
        {
            // Set again: no longer taken as invalid (LiveKit's failure tolerance).
            old.consecutive_failures.store(0, Ordering::Relaxed);
            if trust == Trust::Trusted {
                // The application vouches for it now.
                old.on_probation.store(false, Ordering::Relaxed);
                return Ok(self.ring.trust_key(kid));
            }
            return Ok(Vec::new());
        }
        let entry = RingEntry {
            text,
            live: Some(live),
        };
        Ok(self.ring.insert(kid, entry, trust, keep))
    }

    pub(super) fn live_key(&self, kid: u64) -> Option<Arc<LiveKey>> {
        self.ring.get(kid).and_then(|entry| entry.live.clone())
    }

    /// `live_key` for the key a frame names: the key the last frame named, while
    /// the ring has not changed since, without a search of the ring. With a
    /// thousand streams taking turns, that search was a cache miss or two per
    /// frame; the state is at hand anyway.
    fn frame_key(&mut self, kid: u64) -> Option<Arc<LiveKey>> {
        let generation = self.ring.generation();
        let remembered = self
            .last_found
            .as_ref()
            .filter(|found| (found.generation, found.kid) == (generation, kid))
            .and_then(|found| found.key.upgrade());
        let key = match remembered {
            Some(key) => key,
            None => {
                let key = self.live_key(kid)?;
                self.last_found = Some(Found {
                    generation,
                    kid,
                    key: Arc::downgrade(&key),
                });
                key
            }
        };
        // Decrypting reads it next, behind one more pointer.
        common::prefetch(&*key.key);
        Some(key)
    }

    /// What `trial_keys` reads, which moves on whenever its answer may change.
    fn trial_stamp(&self) -> TrialStamp {
        let current_kid = self.running.as_ref().and_then(|r| r.current_kid);
        (self.ring.generation(), current_kid)
    }

    /// The keys to try on a frame without a KID: the one the stream used last,
    /// then the others, newest first.
    fn trial_keys(&self) -> TrialKeys {
        let current_kid = self.running.as_ref().and_then(|r| r.current_kid);
        let current = current_kid.and_then(|kid| self.live_key(kid));
        let others = self
            .ring
            .iter()
            .rev()
            .filter(|(kid, _)| Some(*kid) != current_kid)
            .filter_map(|(_, entry)| entry.live.clone());
        current.into_iter().chain(others).collect()
    }

    /// Forgets every counter seen: the application restarted the stream. The
    /// windows change behind shared references, so the ring itself does not
    /// (nor its generation, which would make the keys be looked up again).
    fn reset_replay_windows(&self) {
        for (_, entry) in self.ring.iter() {
            if let Some(live) = &entry.live {
                live.replay.reset();
                live.recent_ivs.lock().unwrap().reset();
            }
        }
    }
}

#[derive(Default)]
pub struct StreamDecrypt {
    /// Whether buffers go one by one to `transform_ip` (every format with
    /// `framing=buffer`), read once per buffer without a lock.
    in_place: AtomicBool,
    settings: Mutex<Settings>,
    pub(super) state: Mutex<State>,
    /// For formats without a KID: the streaming thread's decoder and the keys
    /// it tries. Taken after `state` when both are.
    trial: Mutex<Trial>,
    /// The key ring changed while the streaming thread held `trial`: it lets go
    /// of the keys it read when it is done with the buffer.
    trial_keys_stale: AtomicBool,
    /// With `framing=stream`: the records arriving in the byte stream.
    records: Mutex<Option<RecordReader>>,
    input: CaplessInput,
    /// With `key-server`: the thread that fetches keys, and the KIDs it is
    /// fetching.
    pub(super) worker: WorkerSlot,
    pub(super) fetches: service::Fetches,
    /// What went out, counted without the state lock.
    output: OutputCounts,
}

/// The decrypter's output counters, which the streaming thread alone writes
/// (plain loads and stores, no lock and no atomic read-modify-write per
/// buffer) and `stats` reads. The state lock is taken for a buffer out only
/// when its KID is not the steady one: a key switch, the first buffer, or
/// after frames too old for the replay window.
#[derive(Default)]
struct OutputCounts {
    buffers: AtomicU64,
    bytes: AtomicU64,
    /// Whether `steady_kid` is the stream's current KID, with nothing else to
    /// record under the state lock when a buffer of that KID goes out.
    steady: AtomicBool,
    steady_kid: AtomicU64,
}

impl OutputCounts {
    /// Counts a buffer of `len` bytes out; whether its `kid` is the steady one.
    fn count(&self, kid: u64, len: usize) -> bool {
        let add = |counter: &AtomicU64, n: u64| {
            counter.store(counter.load(Ordering::Relaxed) + n, Ordering::Relaxed);
        };
        add(&self.buffers, 1);
        add(&self.bytes, len as u64);
        self.steady.load(Ordering::Relaxed) && self.steady_kid.load(Ordering::Relaxed) == kid
    }

    fn set_steady(&self, kid: Option<u64>) {
        if let Some(kid) = kid {
            self.steady_kid.store(kid, Ordering::Relaxed);
        }
        self.steady.store(kid.is_some(), Ordering::Relaxed);
    }

    /// `stats` with the counters filled in.
    fn with_counts(&self, mut stats: Stats) -> Stats {
        stats.buffers_out = self.buffers.load(Ordering::Relaxed);
        stats.bytes_out = self.bytes.load(Ordering::Relaxed);
        stats
    }

    fn reset(&self) {
        self.buffers.store(0, Ordering::Relaxed);
        self.bytes.store(0, Ordering::Relaxed);
        self.set_steady(None);
    }
}

impl StreamDecrypt {
    pub(super) fn add_key(
        &self,
        kid: u64,
        text: KeyText,
        source: KeySource,
    ) -> Result<(), KeyError> {
        let mode = self.settings.lock().unwrap().keys.mode;
        let evicted = self
            .state
            .lock()
            .unwrap()
            .add_key(kid, text, mode, source)?;
        self.trial_keys_changed();
        gst::info!(CAT, imp = self, "added key for KID {kid} ({source:?})");
        for old in evicted {
            gst::info!(
                CAT,
                imp = self,
                "max-keys reached: dropped key for KID {old}"
            );
        }
        Ok(())
    }

    /// Adds every key of a key file; `KEY` lines take `default_kid`.
    fn add_key_file(&self, path: &Path, default_kid: u64) -> Result<(), KeyError> {
        let file = read_key_file(path)?;
        self.warn_if_exposed(&file);
        for line in &file.lines {
            let kid = line.kid.unwrap_or(default_kid);
            file.check(
                line,
                self.add_key(kid, line.key.clone(), KeySource::Application),
            )?;
        }
        Ok(())
    }

    /// Asks the application for the key of an unknown KID, holding no lock: the
    /// handler may call `add-key` itself, or return the key. At most one
    /// request per KID at a time, and few at once (`crate::key_requests`).
    fn request_key(&self, kid: u64) -> Result<Arc<LiveKey>, Held> {
        {
            let mut state = self.state.lock().unwrap();
            let running = state.running.as_mut().ok_or(Held::RateLimited)?;
            running.requests.ask(kid, Instant::now())?;
            state.stats.key_requests += 1;
        }
        gst::debug!(CAT, imp = self, "requesting key for KID {kid}");
        let answer = self
            .obj()
            .emit_by_name::<Option<String>>("request-key", &[&kid])
            .map(Zeroizing::new);
        if let Some(text) = answer
            && let Err(err) = self.add_key(kid, KeyText::new(&text), KeySource::Request)
        {
            self.refuse_setting(
                &format!("request-key answer for KID {kid}"),
                &err,
                "frames under this KID are dropped",
            );
        }
        // No answer yet: a later `add-key` for this KID is the answer.
        self.state
            .lock()
            .unwrap()
            .live_key(kid)
            .ok_or(Held::AskedRecently)
    }

    pub(super) fn settings_key_wait(&self) -> u32 {
        self.settings.lock().unwrap().key_wait
    }

    pub(super) fn on_error_setting(&self) -> OnError {
        self.settings.lock().unwrap().on_error()
    }

    /// Counts a dropped buffer, then drops it or fails, as `on-error` says.
    fn reject(
        &self,
        reason: DropReason,
        detail: String,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        let on_error = self.settings.lock().unwrap().on_error();
        let fatal = on_error == OnError::Fail && reason != DropReason::Replay;
        let warning = {
            let mut state = self.state.lock().unwrap();
            state.stats.count_drop(reason);
            let now = Instant::now();
            state.running.as_mut().and_then(|running| {
                running.failed |= fatal;
                running.warnings.allow(now)
            })
        };
        let error = match reason {
            DropReason::NoKey => gst::StreamError::DecryptNokey,
            _ => gst::StreamError::Decrypt,
        };
        if reason == DropReason::Replay {
            // Duplicates are normal on UDP: counted, never fatal, not on the bus
            // until the summary at EOS.
            gst::debug!(CAT, imp = self, "dropped: {detail}");
        } else if fatal {
            gst::element_imp_error!(self, error, ("{detail}"));
            if let Some(records) = self.records.lock().unwrap().as_mut() {
                records.stop();
            }
            return Err(gst::FlowError::Error);
        } else if let Some(held_back) = warning {
            let since = match held_back {
                0 => String::new(),
                n => format!("; {n} more were dropped since the previous warning"),
            };
            gst::element_imp_warning!(
                self,
                error,
                ("Dropped a buffer: {detail}"),
                ["`stats` counts every dropped buffer by cause{since}"]
            );
        } else {
            gst::debug!(CAT, imp = self, "dropped: {detail}");
        }
        Ok(gst_base::BASE_TRANSFORM_FLOW_DROPPED)
    }

    /// At EOS: whenever buffers were dropped, say how many and why; when nothing
    /// at all could be decrypted, that is an error, not a stream that quietly
    /// ends empty.
    fn post_drop_summary(&self) {
        let (stats, plaintext, failed) = {
            let state = self.state.lock().unwrap();
            let running = state.running.as_ref();
            let plaintext = running.and_then(|r| r.plaintext.clone());
            let failed = running.is_some_and(|r| r.failed);
            (
                self.output.with_counts(state.stats.clone()),
                plaintext,
                failed,
            )
        };
        let dropped = stats.dropped();
        if dropped == 0 || failed {
            return;
        }
        let causes = stats.drops_by_cause();
        let likely = match plaintext {
            Some(hint) => format!("; the input does not look encrypted: it looks like {hint}"),
            None => String::new(),
        };
        let error = if stats.dropped_no_key == dropped {
            gst::StreamError::DecryptNokey
        } else {
            gst::StreamError::Decrypt
        };
        if stats.buffers_out == 0 && dropped > stats.dropped_replay {
            gst::element_imp_error!(
                self,
                error,
                (
                    "None of the {} buffers could be decrypted: {causes}{likely}",
                    stats.buffers_in
                )
            );
        } else {
            gst::element_imp_warning!(
                self,
                error,
                (
                    "Dropped {dropped} of {} buffers: {causes}{likely}",
                    stats.buffers_in
                )
            );
        }
    }

    fn post_key_switch(&self, kid: u64, previous: u64, pts: Option<gst::ClockTime>) {
        gst::info!(
            CAT,
            imp = self,
            "stream switched from KID {previous} to KID {kid}"
        );
        let running_time = pts.and_then(|pts| {
            self.obj()
                .segment()
                .downcast_ref::<gst::ClockTime>()
                .and_then(|segment| segment.to_running_time(pts))
        });
        let none = u64::MAX; // GST_CLOCK_TIME_NONE
        let structure = gst::Structure::builder("streamcrypt-key-switch")
            .field("kid", kid)
            .field("previous-kid", previous)
            .field("pts", pts.map_or(none, gst::ClockTime::nseconds))
            .field(
                "running-time",
                running_time.map_or(none, gst::ClockTime::nseconds),
            )
            .build();
        let message = gst::message::Element::builder(structure)
            .src(&*self.obj())
            .build();
        let _ = self.obj().post_message(message);
    }
}

impl KeyedElement for StreamDecrypt {
    fn category() -> &'static gst::DebugCategory {
        &CAT
    }

    fn with_key_settings<R>(&self, f: impl FnOnce(&mut KeySettings) -> R) -> R {
        f(&mut self.settings.lock().unwrap().keys)
    }

    fn accept_key(&self, kid: u64, key: KeyText) -> Result<(), KeyError> {
        self.add_key(kid, key, KeySource::Application)
    }

    fn ratchet_key(&self, kid: u64) -> Result<(), String> {
        let mut state = self.state.lock().unwrap();
        let running = state.running.as_ref().ok_or("not running")?;
        if running.format != Format::Livekit {
            return Err("ratchet-key works in mode=livekit".into());
        }
        let live = state.live_key(kid).ok_or("no key for this KID")?;
        let stepped = running.stepped_on(&live, 1);
        state.ring.get_mut(kid).expect("it has a key").live = Some(stepped);
        Ok(())
    }

    fn is_running(&self) -> bool {
        self.state.lock().unwrap().running.is_some()
    }
}

#[glib::object_subclass]
impl ObjectSubclass for StreamDecrypt {
    const NAME: &'static str = "GstStreamDecrypt";
    type Type = super::StreamDecrypt;
    type ParentType = gst_base::BaseTransform;
}

impl ObjectImpl for StreamDecrypt {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            let mut properties = common::key_properties(
                "Key in hex, of the length `mode` needs (write-only). Adds the key under the \
                 current key-id to the key ring; earlier keys stay usable",
                "File of keys, one `KID HEX` (or `HEX`, used with key-id) per line; keeps \
                 keys out of `ps` and shell history. Read at start, and at once when set \
                 while playing",
                "Counters of the current or last run, streamdecrypt-stats: buffers-in, buffers-out, bytes-in, bytes-out (guint64), \
                 dropped and by cause dropped-no-key, dropped-auth, dropped-malformed, \
                 dropped-replay (guint64), key-switches, key-requests (guint64), keys \
                 (guint, keys held), kid (guint64, the KID of the last frame that \
                 authenticated)",
            );
            properties.extend(common::cbc_properties());
            properties.extend(common::livekit_properties());
            properties.extend([
                glib::ParamSpecUInt::builder("ratchet-window")
                    .nick("Ratchet window")
                    .blurb(
                        "mode=livekit: when a frame fails, the key's ratchet steps to try on it \
                         (a sender may have ratcheted); the step that opens it becomes the key. \
                         0 tries none (as LiveKit's ratchetWindowSize). Read at start",
                    )
                    .default_value(DEFAULT_RATCHET_WINDOW)
                    .maximum(64)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecInt::builder("failure-tolerance")
                    .nick("Failure tolerance")
                    .blurb(
                        "mode=livekit: frames in a row that may fail under a key before it is \
                         taken as invalid (its frames are then dropped untried until the key \
                         is set again); -1 never (as LiveKit's failureTolerance). Read at start",
                    )
                    .minimum(-1)
                    .default_value(DEFAULT_FAILURE_TOLERANCE)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("on-error", OnError::default())
                    .nick("On error")
                    .blurb(
                        "What to do with a buffer that fails to authenticate or has no key: \
                         drop it (counted, rate-limited warning, a summary at EOS) or fail \
                         the stream. Unset, it is drop with framing=buffer and fail with \
                         framing=stream (a dropped record would corrupt the byte stream)",
                    )
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt::builder("replay-window")
                    .nick("Replay window")
                    .blurb(
                        "Frames (per KID) below the newest one that may still arrive late; \
                         older or repeated frames are dropped. 0 disables replay protection. \
                         Flushing seeks and restarts reset it",
                    )
                    .default_value(DEFAULT_REPLAY_WINDOW)
                    .maximum(1 << 20)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("key-wait")
                    .nick("Key wait")
                    .blurb(
                        "With key-server: milliseconds the streaming thread holds a frame whose \
                         key is being fetched from the key service (a flush or stop ends the \
                         wait); after that the frame is dropped and counted as without a key",
                    )
                    .default_value(service::DEFAULT_KEY_WAIT_MS)
                    .maximum(60_000)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt::builder("max-keys")
                    .nick("Maximum keys")
                    .blurb(
                        "Keys held at once; adding one more drops the oldest-added key, \
                         never the one in use. Keys answering request-key are held apart \
                         (up to as many again) until a frame authenticates under them",
                    )
                    .default_value(DEFAULT_MAX_KEYS)
                    .minimum(2)
                    .mutable_playing()
                    .build(),
            ]);
            properties.extend(crate::service::properties(
                "Grant (a JWT from `streamcrypt-keys grant`) for key-server, write-only and \
                 never logged; needs watch rights on stream-id (e.g. --rights 0xab). Set \
                 while playing, it replaces the grant in use (checked first)",
            ));
            properties
        });
        PROPERTIES.as_ref()
    }

    fn signals() -> &'static [glib::subclass::Signal] {
        static SIGNALS: LazyLock<Vec<glib::subclass::Signal>> = LazyLock::new(|| {
            vec![
                common::key_signal::<StreamDecrypt>("add-key"),
                common::ratchet_signal::<StreamDecrypt>(),
                crate::service::grant_expiring_signal(),
                // remove-key(kid) -> whether there was such a key
                glib::subclass::Signal::builder("remove-key")
                    .param_types([u64::static_type()])
                    .return_type::<bool>()
                    .action()
                    .class_handler(|args| {
                        let element = args[0].get::<super::StreamDecrypt>().expect("signal arg");
                        let kid = args[1].get::<u64>().expect("signal arg");
                        let imp = element.imp();
                        let removed = imp.state.lock().unwrap().ring.remove(kid).is_some();
                        imp.trial_keys_changed();
                        gst::info!(CAT, imp = imp, "remove-key for KID {kid}: {removed}");
                        Some(removed.to_value())
                    })
                    .build(),
                // clear-keys()
                glib::subclass::Signal::builder("clear-keys")
                    .action()
                    .class_handler(|args| {
                        let element = args[0].get::<super::StreamDecrypt>().expect("signal arg");
                        let imp = element.imp();
                        let mut settings = imp.settings.lock().unwrap();
                        settings.keys.clear_keys();
                        imp.state.lock().unwrap().ring.clear();
                        imp.trial_keys_changed();
                        gst::info!(CAT, imp = imp, "all keys cleared");
                        None
                    })
                    .build(),
                // request-key(kid) -> hex or NULL. The first handler to return a key
                // wins.
                glib::subclass::Signal::builder("request-key")
                    .param_types([u64::static_type()])
                    .return_type::<Option<String>>()
                    .run_last()
                    .accumulator(crate::service::first_string)
                    .build(),
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
            "key-wait" => {
                self.settings.lock().unwrap().key_wait = value.get().expect("type checked")
            }
            "key" | "passphrase" => {
                let text = match name {
                    "key" => KeySettings::key_text(value),
                    _ => KeySettings::passphrase_text(value),
                };
                let kid = self.settings.lock().unwrap().keys.key_id;
                let result = match &text {
                    Some(text) if self.is_running() => {
                        self.add_key(kid, text.clone(), KeySource::Application)
                    }
                    Some(text) if !text.is_passphrase() => {
                        let mode = self.settings.lock().unwrap().keys.mode;
                        mode.check_plausible_key(text)
                    }
                    _ => Ok(()),
                };
                match result {
                    Ok(()) => {
                        self.settings.lock().unwrap().keys.key = text;
                        self.accept_property(name);
                    }
                    Err(err) => self.refuse_property(name, &err),
                }
            }
            "key-file" => {
                let path = value.get::<Option<PathBuf>>().expect("type checked");
                if let (true, Some(path)) = (self.is_running(), &path) {
                    let default_kid = self.settings.lock().unwrap().keys.key_id;
                    if let Err(err) = self.add_key_file(path, default_kid) {
                        self.refuse_property("key-file", &err);
                        return;
                    }
                }
                self.settings.lock().unwrap().keys.key_file = path;
                self.accept_property("key-file");
            }
            "on-error" => {
                self.settings.lock().unwrap().on_error = Some(value.get().expect("type checked"))
            }
            "replay-window" if self.is_running() => {
                let in_use = self.settings.lock().unwrap().replay_window;
                self.refuse_setting(
                    name,
                    &"it cannot change while the element is running (PAUSED or PLAYING); set \
                      it in NULL or READY",
                    &format!("{in_use} stays in use"),
                );
            }
            "replay-window" => {
                self.settings.lock().unwrap().replay_window = value.get().expect("type checked")
            }
            "ratchet-window" => {
                self.settings.lock().unwrap().ratchet_window = value.get().expect("type checked")
            }
            "failure-tolerance" => {
                self.settings.lock().unwrap().failure_tolerance = value.get().expect("type checked")
            }
            "max-keys" => {
                let max_keys = value.get::<u32>().expect("type checked");
                self.settings.lock().unwrap().max_keys = max_keys;
                let mut state = self.state.lock().unwrap();
                let keep = state.running.as_ref().and_then(|r| r.current_kid);
                let evicted = state.ring.set_capacity(max_keys as usize, keep);
                drop(state);
                self.trial_keys_changed();
                for kid in evicted {
                    gst::info!(
                        CAT,
                        imp = self,
                        "max-keys lowered: dropped key for KID {kid}"
                    );
                }
            }
            other => unreachable!("no property {other}"),
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        let name = pspec.name();
        if let Some(value) = self.shared_property(name) {
            return value;
        }
        let settings = self.settings.lock().unwrap();
        if let Some(value) = settings.service.get(name) {
            return value;
        }
        match name {
            "key-wait" => settings.key_wait.to_value(),
            "on-error" => settings.on_error().to_value(),
            "ratchet-window" => settings.ratchet_window.to_value(),
            "failure-tolerance" => settings.failure_tolerance.to_value(),
            "replay-window" => settings.replay_window.to_value(),
            "max-keys" => settings.max_keys.to_value(),
            "stats" => {
                let state = self.state.lock().unwrap();
                let stats = self.output.with_counts(state.stats.clone());
                stats.to_structure(state.ring.len()).to_value()
            }
            other => unreachable!("no readable property {other}"),
        }
    }

    fn constructed(&self) {
        self.parent_constructed();
        self.obj().set_gap_aware(true);
    }
}

impl GstObjectImpl for StreamDecrypt {}

impl ElementImpl for StreamDecrypt {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "Stream decrypter",
                "Filter/Decryptor",
                "Authenticates and decrypts what streamencrypt encrypts, key by key id",
                common::AUTHOR,
            )
        });
        Some(&*METADATA)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        common::pad_templates()
    }

    fn change_state(
        &self,
        transition: gst::StateChange,
    ) -> Result<gst::StateChangeSuccess, gst::StateChangeError> {
        // A streaming thread waiting for a key from the service lets go before
        // the pads deactivate (which waits for it).
        if transition == gst::StateChange::PausedToReady {
            self.fetches.interrupt(true);
        }
        self.parent_change_state(transition)
    }
}

impl BaseTransformImpl for StreamDecrypt {
    // In place for SFrame (the plaintext is trimmed out of the buffer where it
    // lies), into a new memory for the formats without KID.
    const MODE: gst_base::subclass::BaseTransformMode = gst_base::subclass::BaseTransformMode::Both;
    // Caps are ANY on both sides, hence always the same: passthrough would let
    // ciphertext through as if it were media.
    const PASSTHROUGH_ON_SAME_CAPS: bool = false;
    const TRANSFORM_IP_ON_PASSTHROUGH: bool = false;

    fn start(&self) -> Result<(), gst::ErrorMessage> {
        self.input.set_negotiated(false);
        let settings = self.settings.lock().unwrap();
        let keys = &settings.keys;
        keys.check_valid()?;
        let key_file = match &keys.key_file {
            Some(path) => {
                let file = read_key_file(path)
                    .map_err(|e| gst::error_msg!(gst::ResourceError::OpenRead, ("{e}")))?;
                self.warn_if_exposed(&file);
                Some(file)
            }
            None => None,
        };

        let format = keys.format();
        let running = Running {
            mode: keys.mode,
            format,
            framing: keys.framing,
            livekit: keys.livekit.clone(),
            codec: None,
            ratchet_window: settings.ratchet_window,
            failure_tolerance: u64::try_from(settings.failure_tolerance).ok(),
            replay_window: settings.replay_window,
            current_kid: None,
            warnings: WarningLimiter::default(),
            requests: RequestGate::default(),
            plaintext: None,
            failed: false,
            too_old_run: 0,
        };
        let mut state = self.state.lock().unwrap();
        state.ring.set_capacity(settings.max_keys as usize, None);
        // Keys kept from the last run (clear-keys-on-stop=false) are made ready
        // for this run's mode, then the key file's keys and `key` are added.
        for (kid, entry) in state.ring.iter_mut() {
            let live = running.live_key(kid, &entry.text, Trust::Trusted);
            entry.live = Some(live.map_err(|e| {
                gst::error_msg!(gst::LibraryError::Settings, ("Key for KID {kid}: {e}"))
            })?);
        }
        let settings_error = |e: KeyError| gst::error_msg!(gst::LibraryError::Settings, ("{e}"));
        let mut add = |kid, text: &KeyText, live| {
            let entry = RingEntry {
                text: text.clone(),
                live: Some(live),
            };
            state.ring.insert(kid, entry, Trust::Trusted, None);
        };
        if let Some(file) = &key_file {
            for line in &file.lines {
                let kid = line.kid.unwrap_or(keys.key_id);
                let live = running.live_key(kid, &line.key, Trust::Trusted);
                add(
                    kid,
                    &line.key,
                    file.check(line, live).map_err(settings_error)?,
                );
            }
        }
        if let Some(key) = &keys.key {
            let live = running.live_key(keys.key_id, key, Trust::Trusted);
            let live = live.map_err(|e| {
                gst::error_msg!(
                    gst::LibraryError::Settings,
                    ("`key` for KID {}: {e}", keys.key_id)
                )
            })?;
            add(keys.key_id, key, live);
        }
        *self.trial.lock().unwrap() = Trial::new(&format);
        // Buffer in, buffer out: straight to `transform_ip`, which decrypts an
        // SFrame where it lies and other formats into a new memory.
        let in_place = keys.framing == Framing::Buffer;
        self.obj().set_in_place(format.carries_kid() && in_place);
        self.in_place.store(in_place, Ordering::Relaxed);
        *self.records.lock().unwrap() =
            (keys.framing == Framing::Stream).then(|| RecordReader::new(format.stream_code()));
        let no_keys = state.ring.is_empty();
        gst::info!(
            CAT,
            imp = self,
            "starting in mode {} with {} keys",
            keys.mode.nick(),
            state.ring.len()
        );
        state.running = Some(running);
        state.stats = Stats::default();
        self.output.reset();
        drop(state);
        let service = settings
            .service
            .enabled()
            .then(|| (settings.service.clone(), crate::service::own_keys(keys)));
        drop(settings);

        if let Some((service, own_keys)) = service {
            let started = self.start_from_service(&service, &format, own_keys);
            if started.is_err() {
                self.state.lock().unwrap().running = None;
            }
            return started;
        }
        if no_keys {
            gst::element_imp_warning!(
                self,
                gst::StreamError::DecryptNokey,
                ("No key yet: set `key` (with `key-id`) or `key-file`, or answer the \
                     `request-key` signal; buffers are dropped until a key arrives")
            );
        }
        Ok(())
    }

    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        self.input.set_negotiated(false);
        self.stop_service();
        let mut settings = self.settings.lock().unwrap();
        let mut state = self.state.lock().unwrap();
        state.running = None;
        *self.trial.lock().unwrap() = Trial::default();
        *self.records.lock().unwrap() = None;
        for (_, entry) in state.ring.iter_mut() {
            entry.live = None;
        }
        if settings.keys.clear_keys_on_stop {
            state.ring.clear();
            settings.keys.clear_keys();
        }
        gst::info!(CAT, imp = self, "stopped");
        Ok(())
    }

    fn sink_event(&self, event: gst::Event) -> bool {
        match event.type_() {
            gst::EventType::Eos => {
                // A failure has been counted and reported; EOS goes on either way.
                let _ = self.finish_stream();
                let truncated = match self.records.lock().unwrap().as_ref() {
                    Some(records) => records.finish().err(),
                    None => None,
                };
                if let Some(err) = truncated {
                    self.post_stream_error(&err);
                }
                self.post_drop_summary();
            }
            gst::EventType::FlushStart => self.fetches.interrupt(true),
            gst::EventType::FlushStop => {
                self.fetches.interrupt(false);
                self.restart_stream();
            }
            _ => {}
        }
        self.parent_sink_event(event)
    }

    fn query(&self, direction: gst::PadDirection, query: &mut gst::QueryRef) -> bool {
        // Records are read once, in order: downstream cannot seek in bytes.
        let byte_stream = direction == gst::PadDirection::Src
            && self.settings.lock().unwrap().keys.framing == Framing::Stream;
        common::answer_scheduling(direction, query)
            || (byte_stream && common::refuse_byte_seeking(query))
            || BaseTransformImplExt::parent_query(self, direction, query)
    }

    fn src_event(&self, event: gst::Event) -> bool {
        // A demuxer seeking to a byte offset of the decrypted stream (from its
        // index) would land upstream where no record starts: refuse it, and the
        // stream goes on where it was.
        if let gst::EventView::Seek(seek) = event.view()
            && seek.get().3.format() == gst::Format::Bytes
            && self.settings.lock().unwrap().keys.framing == Framing::Stream
        {
            gst::debug!(
                CAT,
                imp = self,
                "seek in bytes refused: byte offsets of the decrypted stream do not map \
                 onto the encrypted one"
            );
            return false;
        }
        self.parent_src_event(event)
    }

    fn set_caps(&self, incaps: &gst::Caps, outcaps: &gst::Caps) -> Result<(), gst::LoggableError> {
        let livekit = self
            .state
            .lock()
            .unwrap()
            .running
            .as_ref()
            .is_some_and(|running| running.format == Format::Livekit);
        if livekit {
            let codec = common::livekit_codec(self, incaps)?;
            if let Some(running) = self.state.lock().unwrap().running.as_mut() {
                running.codec = Some(codec);
            }
        }
        common::set_caps(self, &self.input, incaps, outcaps)
    }

    fn submit_input_buffer(
        &self,
        is_discont: bool,
        inbuf: gst::Buffer,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        if !self.in_place.load(Ordering::Relaxed)
            && let Some(records) = self.records.lock().unwrap().as_mut()
        {
            // A byte stream needs no caps: files and sockets have none.
            let map = inbuf.map_readable().map_err(|_| gst::FlowError::Error)?;
            records.push(&map);
            return Ok(gst::FlowSuccess::Ok);
        }
        common::submit_input_buffer(self, &self.input, is_discont, inbuf)
    }

    fn generate_output(
        &self,
    ) -> Result<gst_base::subclass::base_transform::GenerateOutputSuccess, gst::FlowError> {
        use gst_base::subclass::base_transform::GenerateOutputSuccess;
        if self.in_place.load(Ordering::Relaxed) {
            return common::generate_in_place(self, &self.input);
        }
        // Records that fail are dropped (or fail the stream) right here, so that
        // BaseTransform keeps asking for output while complete records remain.
        loop {
            let next = {
                let mut records = self.records.lock().unwrap();
                let records = records.as_mut().ok_or(gst::FlowError::Flushing)?;
                records
                    .next_record()
                    .map(|record| record.map(OwnedRecord::from))
            };
            let record = match next {
                Ok(Some(record)) => record,
                Ok(None) => return Ok(GenerateOutputSuccess::NoOutput),
                Err(err) => {
                    self.post_stream_error(&err);
                    return Err(gst::FlowError::Error);
                }
            };
            if let Some(outbuf) = self.decrypt_record(&record)? {
                return Ok(GenerateOutputSuccess::Buffer(outbuf));
            }
        }
    }

    fn transform_caps(
        &self,
        direction: gst::PadDirection,
        caps: &gst::Caps,
        filter: Option<&gst::Caps>,
    ) -> Option<gst::Caps> {
        // The stream header that framing=stream announces in the caps is ours:
        // it does not go on with the decrypted stream.
        let mut caps = caps.clone();
        if direction == gst::PadDirection::Sink
            && self.settings.lock().unwrap().keys.framing == Framing::Stream
            && !caps.is_any()
        {
            for structure in caps.make_mut().iter_mut() {
                structure.remove_field("streamheader");
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
        match direction {
            gst::PadDirection::Sink => Some(self.max_decrypted_len(size)),
            _ => Some(size + MAX_OVERHEAD),
        }
    }

    fn decide_allocation(
        &self,
        query: &mut gst::query::Allocation,
    ) -> Result<(), gst::LoggableError> {
        common::system_memory_allocation(query);
        self.parent_decide_allocation(query)
    }

    fn transform_ip(&self, buf: &mut gst::BufferRef) -> Result<gst::FlowSuccess, gst::FlowError> {
        let (format, state) = self.count_input(buf.size())?;
        let pts = buf.pts();
        let opened = match format {
            // The key (or the keys to try) is looked up under the lock that
            // counted the buffer in.
            Format::Sframe(suite) => self.open_sframe_in_place(state, suite, buf),
            // Empty frames (audio DTX) are not encrypted, as the reference sends them.
            Format::Livekit if buf.size() == 0 => return Ok(gst::FlowSuccess::Ok),
            Format::Livekit => self.open_livekit_buffer(state, buf)?,
            _ if format.decrypts_per_buffer() => {
                open_in_place(buf, |data| self.open_by_trial_in_place(state, data))
            }
            _ => self.open_by_trial_into_new_memory(state, buf)?,
        };
        match opened {
            // The unpadded CBC stream holds back bytes that complete no block.
            Ok((_, 0)) if !format.decrypts_per_buffer() => {
                Ok(gst_base::BASE_TRANSFORM_FLOW_DROPPED)
            }
            Ok((kid, len)) => {
                self.count_output(kid, len, pts);
                Ok(gst::FlowSuccess::Ok)
            }
            Err((reason, detail)) => self.reject(reason, detail),
        }
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
}

/// Why a buffer was dropped, and what to say about it.
type Rejection = (DropReason, String);

/// No key of `tried` decrypts a buffer of `len` bytes.
fn no_key_opens(tried: usize, len: usize) -> Rejection {
    (
        DropReason::Authentication,
        format!(
            "no key ({tried} tried) decrypts this {len}-byte buffer to a valid message \
             (wrong key, or corrupt data)"
        ),
    )
}

/// For a buffer that failed as an SFrame: when it is the header of our own
/// byte stream, say that the framings differ.
fn stream_header_rejection(input: &[u8]) -> Option<Rejection> {
    input.starts_with(&crate::framing::MAGIC).then(|| {
        (
            DropReason::Malformed,
            "this is the header of a byte stream written with framing=stream: set \
             framing=stream here too"
                .into(),
        )
    })
}

/// A record taken out of the byte stream, with where it was.
struct OwnedRecord {
    index: u64,
    offset: u64,
    bytes: Vec<u8>,
}

impl From<Record<'_>> for OwnedRecord {
    fn from(record: Record<'_>) -> Self {
        Self {
            index: record.index,
            offset: record.offset,
            bytes: record.bytes.to_vec(),
        }
    }
}

/// Runs `open` on `buffer`'s bytes, writable, and trims the buffer to the
/// plaintext range it returns with the KID: on the buffer's only memory when that
/// can be written (demuxers hand out read-only memory), which costs less than
/// mapping the buffer.
fn open_in_place(
    buffer: &mut gst::BufferRef,
    open: impl FnOnce(&mut [u8]) -> Result<(u64, Range<usize>), Rejection>,
) -> Result<(u64, usize), Rejection> {
    let mut slot = common::MapSlot::default();
    if let Some(mut memory) = common::SoleMemoryMap::writable(buffer, &mut slot) {
        let (kid, range) = open(memory.bytes())?;
        let len = range.len();
        memory.trim(range);
        return Ok((kid, len));
    }
    let cannot_map = |_| (DropReason::Malformed, "cannot map buffer".to_string());
    let (kid, range) = open(&mut buffer.map_writable().map_err(cannot_map)?)?;
    let len = range.len();
    buffer
        .resize(range)
        .map_err(|_| (DropReason::Malformed, "cannot trim buffer".to_string()))?;
    Ok((kid, len))
}

/// A LiveKit trailer's IV length byte.
const IV_LENGTH_BYTE: u8 = livekit::IV_LEN as u8;
/// The key index a frame whose trailer ends in two IV length bytes may have.
const KEY_INDEX_12: u64 = IV_LENGTH_BYTE as u64;

thread_local! {
    /// mode=livekit: the ciphertext of the frame being opened in place, kept for
    /// another key's attempt; one per streaming thread, reused from frame to
    /// frame by every decrypter the thread runs.
    static LIVEKIT_SCRATCH: std::cell::RefCell<Vec<u8>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

impl StreamDecrypt {
    /// A flushing seek (or a new start of the stream by the application): the
    /// frames that come next may legitimately repeat counters seen before, and a
    /// byte stream starts over with its header.
    fn restart_stream(&self) {
        let state = self.state.lock().unwrap();
        state.reset_replay_windows();
        let Some(running) = state.running.as_ref() else {
            return;
        };
        let (format, framing) = (running.format, running.framing);
        drop(state);
        *self.trial.lock().unwrap() = Trial::new(&format);
        if framing == Framing::Stream {
            *self.records.lock().unwrap() = Some(RecordReader::new(format.stream_code()));
        }
        gst::debug!(CAT, imp = self, "flushed: replay windows reset");
    }

    /// `rejection`, or, when `hint` says the input looks like plaintext, one
    /// that says so; the hint is kept for the summary at EOS. `hint` is only
    /// asked when the buffer was rejected.
    fn explain(&self, rejection: Rejection, hint: impl FnOnce() -> Option<String>) -> Rejection {
        let (reason, detail) = rejection;
        let Some(hint) = hint() else {
            return (reason, detail);
        };
        if let Some(running) = self.state.lock().unwrap().running.as_mut() {
            running.plaintext = Some(hint.clone());
        }
        let detail = format!(
            "the input does not look encrypted: it looks like {hint} ({detail}). Is the \
             encrypter missing upstream, or does it use another mode or framing?"
        );
        (reason, detail)
    }

    /// Decrypts the LiveKit frame in `buffer` where it lies and trims the buffer
    /// to the plaintext, or, when its memory cannot be written where it lies,
    /// into a new memory that replaces its bytes; `state` is locked by the caller.
    fn open_livekit_buffer(
        &self,
        state: MutexGuard<'_, State>,
        buffer: &mut gst::BufferRef,
    ) -> Result<Result<(u64, usize), Rejection>, gst::FlowError> {
        let running = state.running.as_ref().ok_or(gst::FlowError::Flushing)?;
        let (codec, ratchet_window) = (running.codec, running.ratchet_window);
        let Some(codec) = codec else {
            return Ok(Err((
                DropReason::Malformed,
                "mode=livekit needs caps that name the codec (VP8, VP9, H.264, H.265 or \
                 audio): its frames keep the codec's header clear"
                    .into(),
            )));
        };
        let keyframe = !buffer.flags().contains(gst::BufferFlags::DELTA_UNIT);
        let mut slot = common::MapSlot::default();
        if let Some(mut memory) = common::SoleMemoryMap::writable(buffer, &mut slot) {
            return Ok(
                match self.open_livekit_in_place(
                    state,
                    codec,
                    ratchet_window,
                    memory.bytes(),
                    keyframe,
                ) {
                    Ok((kid, len)) => {
                        memory.trim(0..len);
                        Ok((kid, len))
                    }
                    Err(rejection) => Err(rejection),
                },
            );
        }
        drop(state);
        let opened = common::with_readable(buffer, |frame| {
            self.open_livekit(codec, ratchet_window, frame, keyframe)
        })?;
        Ok(opened.map(|(kid, plain)| {
            let len = plain.len();
            buffer.replace_all_memory(gst::Memory::from_mut_slice(plain));
            (kid, len)
        }))
    }

    /// Decrypts one record of a byte stream into a new buffer; `None` when it was
    /// dropped.
    fn decrypt_record(&self, record: &OwnedRecord) -> Result<Option<gst::Buffer>, gst::FlowError> {
        let input = &record.bytes[..];
        let (format, state) = self.count_input(input.len())?;
        drop(state);
        let mut outbuf = match format {
            // Decrypted where it lies in a writable copy, as buffers are.
            Format::Livekit => gst::Buffer::from_mut_slice(record.bytes.clone()),
            _ => gst::Buffer::with_size(self.max_decrypted_len(input.len()))
                .map_err(|_| gst::FlowError::Error)?,
        };
        let outbuf_mut = outbuf.get_mut().expect("new buffer");
        let decrypted = match format {
            Format::Sframe(suite) => self.open_sframe(suite, input, outbuf_mut),
            Format::Livekit => self.open_livekit_buffer(self.state.lock().unwrap(), outbuf_mut)?,
            _ => match outbuf_mut.map_writable() {
                Ok(mut output) => {
                    self.open_by_trial(self.state.lock().unwrap(), input, &mut output)
                }
                Err(_) => Err((DropReason::Malformed, "cannot map output".into())),
            },
        };
        match decrypted {
            Ok((_, 0)) if !format.decrypts_per_buffer() => Ok(None),
            Ok((kid, len)) => {
                outbuf_mut.set_size(len);
                self.count_output(kid, len, None);
                Ok(Some(outbuf))
            }
            Err((reason, detail)) => {
                let detail = format!(
                    "record {} at byte {} ({} bytes): {detail}",
                    record.index,
                    record.offset,
                    input.len()
                );
                self.reject(reason, detail)?;
                Ok(None)
            }
        }
    }

    /// Counts a buffer in; returns the running format, and the state still
    /// locked, for looking up the key (or keys) that opens it.
    fn count_input(&self, len: usize) -> Result<(Format, MutexGuard<'_, State>), gst::FlowError> {
        let mut state = self.state.lock().unwrap();
        state.stats.buffers_in += 1;
        state.stats.bytes_in += len as u64;
        let format = state
            .running
            .as_ref()
            .ok_or(gst::FlowError::Flushing)?
            .format;
        Ok((format, state))
    }

    /// A `framing=stream` input that cannot be read on: always fatal.
    fn post_stream_error(&self, err: &StreamError) {
        let kind = match err {
            StreamError::NotOurs { .. }
            | StreamError::Version(_)
            | StreamError::OtherFormat { .. } => gst::StreamError::WrongType,
            StreamError::BadLength { .. } | StreamError::Truncated { .. } => {
                gst::StreamError::Format
            }
        };
        match err {
            StreamError::OtherFormat { found, expected } => {
                let name = |code| Mode::for_stream_code(code).map_or("unknown", Mode::nick);
                gst::element_imp_error!(
                    self,
                    kind,
                    (
                        "The stream was written in mode {} (format {found:#06x}), but this \
                         element is set to mode {} (format {expected:#06x}): set mode={} to \
                         read it",
                        name(*found),
                        name(*expected),
                        name(*found)
                    )
                );
            }
            err => gst::element_imp_error!(self, kind, ("{err}")),
        }
    }

    /// Output buffer size for an input of `size` bytes: SFrame and per-buffer
    /// formats never grow; aesdec's unpadded stream may release held-back bytes.
    fn max_decrypted_len(&self, size: usize) -> usize {
        self.trial
            .lock()
            .unwrap()
            .decoder
            .as_ref()
            .map_or(size, |decoder| decoder.max_decrypted_len(size))
    }

    /// Decrypts one SFrame with the key its KID names; returns the KID and the
    /// plaintext length.
    fn open_sframe(
        &self,
        suite: CipherSuite,
        input: &[u8],
        outbuf: &mut gst::BufferRef,
    ) -> Result<(u64, usize), Rejection> {
        let (key, header) = self.sframe_key_for(self.state.lock().unwrap(), suite, input)?;
        let frame = ParsedFrame::parse(input).expect("checked by sframe_key_for");
        let Ok(mut output) = outbuf.map_writable() else {
            return Err((DropReason::Malformed, "cannot map output".into()));
        };
        self.open_unless_replayed(&key, header, |sframe| {
            sframe.decrypt_into(&frame, &[], &mut output)
        })
    }

    /// Decrypts the SFrame in `buffer` where it lies and trims the buffer to the
    /// plaintext: no allocation, no copy.
    fn open_sframe_in_place(
        &self,
        state: MutexGuard<'_, State>,
        suite: CipherSuite,
        buffer: &mut gst::BufferRef,
    ) -> Result<(u64, usize), Rejection> {
        open_in_place(buffer, |data| {
            let (key, header) = self.sframe_key_for(state, suite, data)?;
            let prefix = sniff::Prefix::of(data);
            self.open_unless_replayed(&key, header, |sframe| sframe.decrypt_in_place(data))
                .map_err(|rejection| self.explain(rejection, || prefix.hint()))
        })
    }

    /// Before decrypting an SFrame: its header and the key its KID names (asking
    /// the application for an unknown one), `state` locked by the caller.
    fn sframe_key_for(
        &self,
        state: MutexGuard<'_, State>,
        suite: CipherSuite,
        input: &[u8],
    ) -> Result<(Arc<LiveKey>, Header), Rejection> {
        let not_an_sframe = |detail: String| {
            stream_header_rejection(input).unwrap_or_else(|| {
                self.explain((DropReason::Malformed, detail), || {
                    sniff::plaintext_hint(input)
                })
            })
        };
        let header = match ParsedFrame::parse(input) {
            Ok(frame) if frame.plaintext_len(suite).is_some() => frame.header,
            Ok(_) => {
                drop(state);
                return Err(not_an_sframe(format!(
                    "not an SFrame: {} bytes is too short for header and tag",
                    input.len()
                )));
            }
            Err(e) => {
                drop(state);
                return Err(not_an_sframe(e.to_string()));
            }
        };
        let key = self.key_for(state, header.kid, Some(input))?;
        Ok((key, header))
    }

    /// Decrypts an SFrame under `key` with `decrypt` unless its counter was
    /// seen or is older than the replay window, and records the counter if it
    /// authenticated. Without a lock: only the streaming thread writes the
    /// window (a flush comes through it too).
    fn open_unless_replayed<T>(
        &self,
        key: &LiveKey,
        header: Header,
        decrypt: impl FnOnce(&SframeKey) -> Result<T, FrameError>,
    ) -> Result<(u64, T), Rejection> {
        let (kid, ctr) = (header.kid, header.ctr);
        let replay = &key.replay;
        if let Err(why) = replay.check(ctr) {
            let highest = replay.highest();
            if why == Replay::TooOld {
                self.count_too_old(kid, ctr, highest);
            }
            return Err((
                DropReason::Replay,
                format!("KID {kid} counter {ctr}: {why:?}"),
            ));
        }
        let decrypted = decrypt(key.key.sframe().expect("SFrame key"));
        if decrypted.is_ok() {
            // Only an authenticated counter may move the replay window.
            replay.record(ctr);
        }
        self.sframe_opened(key, kid, decrypted)
    }

    /// The key a frame names by `kid`, asking the application for an unknown
    /// one, unless it was retired or taken as invalid. `opaque` is the frame
    /// when all of it should look random (SFrame), for saying what it is when
    /// it names a key that does not exist. `state` is locked by the caller.
    fn key_for(
        &self,
        mut state: MutexGuard<'_, State>,
        kid: u64,
        opaque: Option<&[u8]>,
    ) -> Result<Arc<LiveKey>, Rejection> {
        let live = state.frame_key(kid);
        drop(state);
        let key = match live {
            Some(key) => key,
            None => {
                // Plaintext read as an encrypted frame names a random KID: say
                // what it is, and ask nobody for that key.
                if let Some(input) = opaque {
                    if let Some(hint) = sniff::plaintext_hint(input) {
                        let detail = format!("its bytes read as KID {kid}, which has no key");
                        return Err(self.explain((DropReason::Malformed, detail), || Some(hint)));
                    }
                    if let Some(rejection) = stream_header_rejection(input) {
                        return Err(rejection);
                    }
                }
                if self.uses_service() {
                    return self.key_from_service(kid).map_err(|why| {
                        (DropReason::NoKey, format!("no key for KID {kid}: {why}"))
                    });
                }
                self.request_key(kid).map_err(|held| {
                    let why = match held {
                        Held::AskedRecently => "request-key gave none",
                        Held::RateLimited => &format!(
                            "request-key not emitted: too many requests lately (at most {} at \
                             once, then one per {} ms)",
                            key_requests::BURST,
                            key_requests::REFILL.as_millis()
                        ),
                    };
                    (DropReason::NoKey, format!("no key for KID {kid} ({why})"))
                })?
            }
        };
        Self::usable(key, kid)
    }

    /// `key`, the key for `kid`, unless it was retired or taken as invalid.
    fn usable(key: Arc<LiveKey>, kid: u64) -> Result<Arc<LiveKey>, Rejection> {
        if key.retired() {
            return Err((
                DropReason::NoKey,
                format!(
                    "the key for KID {kid} was retired after {} frames failed authentication \
                     under it: add a new key",
                    key.max_auth_failures
                ),
            ));
        }
        if key.invalid() {
            return Err((
                DropReason::NoKey,
                format!(
                    "the key for KID {kid} failed on more than {} frames in a row \
                     (failure-tolerance) and is taken as invalid: set it again, or a new key",
                    key.failure_tolerance.unwrap_or(0)
                ),
            ));
        }
        Ok(key)
    }

    /// A frame older than the replay window: a few are the network reordering;
    /// a long run with nothing decrypted between is a sender that went back,
    /// restarted with the same key and KID. Its frames are refused (they
    /// cannot be told from replays): say why, once per run.
    fn count_too_old(&self, kid: u64, ctr: u64, highest: Option<u64>) {
        let run = {
            let mut state = self.state.lock().unwrap();
            let Some(running) = state.running.as_mut() else {
                return;
            };
            running.too_old_run += 1;
            // The next buffer out resets the run, under the lock.
            self.output.set_steady(None);
            running.too_old_run
        };
        if run == TOO_OLD_RUN {
            let newest = highest.map_or("none".to_owned(), |h| h.to_string());
            gst::element_imp_warning!(
                self,
                gst::StreamError::Decrypt,
                ("{run} frames in a row under KID {kid} come from before the replay window \
                     (counter {ctr}; the newest seen is {newest}): was the sender restarted \
                     with the same key and KID? Such frames cannot be told from replays and \
                     are refused: give each run of a sender its own KID (or a new key)")
            );
        }
    }

    /// After decrypting an SFrame: trust a key on probation that authenticated
    /// it; count a failure if it did not.
    fn sframe_opened<T>(
        &self,
        key: &LiveKey,
        kid: u64,
        decrypted: Result<T, FrameError>,
    ) -> Result<(u64, T), Rejection> {
        match decrypted {
            Ok(plaintext) => {
                self.authenticated(key, kid);
                Ok((kid, plaintext))
            }
            Err(FrameError::Authentication) => {
                self.failed_authentication(key, kid);
                Err((
                    DropReason::Authentication,
                    format!("KID {kid}: {}", FrameError::Authentication),
                ))
            }
            Err(e) => Err((DropReason::Malformed, e.to_string())),
        }
    }

    /// A frame authenticated under `key`: a key on probation is trusted now.
    fn authenticated(&self, key: &LiveKey, kid: u64) {
        key.consecutive_failures.store(0, Ordering::Relaxed);
        // Read first: the swap, a read-modify-write, is for the rare key on
        // probation, not for every frame.
        if key.on_probation.load(Ordering::Relaxed)
            && key.on_probation.swap(false, Ordering::Relaxed)
        {
            let mut state = self.state.lock().unwrap();
            if let Some(running) = state.running.as_mut() {
                running.requests.proven();
            }
            let evicted = state.ring.trust_key(kid);
            drop(state);
            gst::info!(
                CAT,
                imp = self,
                "the requested key for KID {kid} authenticated a frame: trusted (pushed out: \
                 {evicted:?})"
            );
            if self.uses_service() {
                self.prefetch(kid + 1);
            }
        }
    }

    /// A frame failed authentication under `key`: counted towards retiring it
    /// (forgeries) and towards LiveKit's failure tolerance.
    fn failed_authentication(&self, key: &LiveKey, kid: u64) {
        let failures = key.auth_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures == key.max_auth_failures {
            self.retire(kid, failures);
        }
        key.consecutive_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Decrypts a LiveKit frame of `codec` into a new plaintext (see
    /// `open_livekit_sealed`). Returns the KID and the plaintext.
    fn open_livekit(
        &self,
        codec: MediaCodec,
        ratchet_window: u32,
        frame: &[u8],
        keyframe: bool,
    ) -> Result<(u64, Vec<u8>), Rejection> {
        let layout = Layout::of(codec, frame, keyframe);
        let restored;
        let holds_key_12 = || self.state.lock().unwrap().live_key(KEY_INDEX_12).is_some();
        let frame = if Self::key_index_stripped(layout, frame, holds_key_12) {
            restored = [frame, &[0]].concat();
            &restored[..]
        } else {
            frame
        };
        let sealed =
            SealedFrame::parse(frame, layout).map_err(|e| self.malformed_livekit(e, frame))?;
        self.open_livekit_sealed(ratchet_window, sealed.key_index, sealed.iv, None, |key| {
            sealed.open(key)
        })
    }

    /// Decrypts a LiveKit frame of `codec` where it lies (see
    /// `open_livekit_sealed`). Returns the KID and the length of the plaintext,
    /// which is then at the start of `frame`.
    ///
    /// The key is looked up under `state`, the lock that counted the frame in,
    /// by the frame's last byte: its key index, unless the payloader stripped it
    /// (then 0). The trailer, parsed after the lock is let go, has the last word.
    fn open_livekit_in_place(
        &self,
        mut state: MutexGuard<'_, State>,
        codec: MediaCodec,
        ratchet_window: u32,
        frame: &mut [u8],
        keyframe: bool,
    ) -> Result<(u64, usize), Rejection> {
        let layout = Layout::of(codec, frame, keyframe);
        let stripped =
            Self::key_index_stripped(layout, frame, || state.live_key(KEY_INDEX_12).is_some());
        let named = if stripped {
            Some(0)
        } else {
            frame.last().copied()
        };
        let found = named.and_then(|index| Some((index, state.frame_key(u64::from(index))?)));
        drop(state);
        // Taken out while in use: a request-key handler that decrypts on this
        // thread (re-entering) finds it empty, not borrowed.
        let mut scratch = LIVEKIT_SCRATCH.take();
        let opened = (|| {
            let scratch = &mut scratch;
            let mut sealed = match FrameInPlace::parse_into(frame, layout, stripped, scratch) {
                Ok(sealed) => sealed,
                // As the frame came, with the key index put back as `open_livekit`
                // does.
                Err(e) if stripped => {
                    return Err(self.malformed_livekit(e, &[&*frame, &[0]].concat()));
                }
                Err(e) => return Err(self.malformed_livekit(e, frame)),
            };
            let (key_index, iv) = (sealed.key_index, sealed.iv);
            let found = found
                .filter(|(index, _)| *index == key_index)
                .map(|(_, key)| key);
            self.open_livekit_sealed(ratchet_window, key_index, iv, found, |key| sealed.open(key))
        })();
        LIVEKIT_SCRATCH.set(scratch);
        opened
    }

    /// `error` of a LiveKit `frame` that is not one, with a hint when it looks
    /// like plaintext.
    fn malformed_livekit(&self, error: OpenError, frame: &[u8]) -> Rejection {
        self.explain((DropReason::Malformed, error.to_string()), || {
            sniff::plaintext_hint(frame)
        })
    }

    /// Opens a LiveKit frame, whose key index and IV are given, with `open`
    /// under the key its key index names, trying up to `ratchet-window` ratchet
    /// steps of it when it fails; the step that opens it becomes the key.
    /// Returns the KID and what `open` returned.
    /// `found`: the key for its key index, when the caller looked it up already.
    fn open_livekit_sealed<T>(
        &self,
        ratchet_window: u32,
        key_index: u8,
        iv: [u8; livekit::IV_LEN],
        found: Option<Arc<LiveKey>>,
        mut open: impl FnMut(&crate::cipher::Aead) -> Result<T, OpenError>,
    ) -> Result<(u64, T), Rejection> {
        let kid = u64::from(key_index);
        let key = match found {
            Some(key) => Self::usable(key, kid)?,
            // The codec's header is in the clear: the frame does not look random.
            None => self.key_for(self.state.lock().unwrap(), kid, None)?,
        };
        fn aead(key: &ReadyKey) -> &crate::cipher::Aead {
            key.frame_key().expect("a LiveKit key").aead()
        }
        // The key's recent IVs stay locked from the check to the record when
        // the key opens the frame (one lock per frame; only the streaming
        // thread and a flush take it).
        let mut recent_ivs = key.recent_ivs.lock().unwrap();
        if recent_ivs.contains(&iv) {
            return Err((
                DropReason::Replay,
                format!("KID {kid}: the IV of a recent frame (a replay)"),
            ));
        }
        let first = open(aead(&key.key));
        if let Ok(plain) = first {
            recent_ivs.record(iv);
            drop(recent_ivs);
            self.authenticated(&key, kid);
            return Ok((kid, plain));
        }
        drop(recent_ivs);
        let mut opened = first.map(|plain| (plain, key.clone()));
        for steps in 1..=ratchet_window as usize {
            if opened.is_ok() {
                break;
            }
            let ratcheted = key.ratcheted(steps);
            if let Ok(plain) = open(aead(&ratcheted)) {
                gst::info!(
                    CAT,
                    imp = self,
                    "KID {kid}: the sender ratcheted {steps} steps"
                );
                opened = Ok((plain, self.commit_ratchet(kid, &key, steps)));
            }
        }
        match opened {
            Ok((plain, key)) => {
                key.recent_ivs.lock().unwrap().record(iv);
                self.authenticated(&key, kid);
                Ok((kid, plain))
            }
            Err(error) => {
                self.failed_authentication(&key, kid);
                Err((DropReason::Authentication, format!("KID {kid}: {error}")))
            }
        }
    }

    /// H.264/H.265 frames that came through `rtph264pay`/`rtph265pay` lost the
    /// zero bytes at their end, which with key index 0 is the key index itself
    /// (the payloaders trim trailing zeros off a NAL unit; the escaping makes
    /// sure nothing else in a trailer is zero). Such a frame ends in its IV length
    /// byte, 12: its key index 0 is to be put back. A frame whose key index
    /// really is 12 ends in 12, 12; one stripped ends so too when its IV ends in
    /// 12: that is taken as key index 12 only if the decrypter holds a key for it.
    /// `holds_key_12` says whether the decrypter holds that key (asked only
    /// then).
    fn key_index_stripped(
        layout: Layout,
        frame: &[u8],
        holds_key_12: impl FnOnce() -> bool,
    ) -> bool {
        let [.., before, last] = frame else {
            return false;
        };
        if !layout.nal_units || *last != IV_LENGTH_BYTE {
            return false;
        }
        !(*before == IV_LENGTH_BYTE && holds_key_12())
    }

    /// A frame opened under `key` `steps` ratchet steps on: that is the key of
    /// `kid` now, unless the key changed meanwhile.
    fn commit_ratchet(&self, kid: u64, key: &Arc<LiveKey>, steps: usize) -> Arc<LiveKey> {
        let mut state = self.state.lock().unwrap();
        let State { ring, running, .. } = &mut *state;
        let Some(running) = running.as_ref() else {
            return key.clone();
        };
        let stepped = running.stepped_on(key, steps);
        if let Some(entry) = ring.get_mut(kid)
            && entry
                .live
                .as_ref()
                .is_some_and(|live| Arc::ptr_eq(live, key))
        {
            entry.live = Some(stepped.clone());
        }
        stepped
    }

    /// The key for `kid` failed authentication `failures` times, the most its
    /// suite allows: it is used no more (RFC 9605, 9.5).
    fn retire(&self, kid: u64, failures: u64) {
        gst::warning!(CAT, imp = self, "key for KID {kid} retired");
        gst::element_imp_warning!(
            self,
            gst::StreamError::Decrypt,
            ("{failures} frames under KID {kid} failed authentication, the most its cipher \
                 suite allows before a forgery could pass: the key is retired, and frames \
                 under KID {kid} are dropped until a new key is added for it")
        );
    }

    /// Decrypts a buffer of a format without KID, trying the keys in turn; returns
    /// the KID of the key that worked and the plaintext length.
    fn open_by_trial(
        &self,
        state: MutexGuard<'_, State>,
        input: &[u8],
        output: &mut [u8],
    ) -> Result<(u64, usize), Rejection> {
        self.by_trial(state, input.len(), |decoder, keys| {
            decoder.decrypt(keys, input, output)
        })
    }

    /// `open_by_trial` where the ciphertext lies; returns the KID and where the
    /// plaintext is.
    fn open_by_trial_in_place(
        &self,
        state: MutexGuard<'_, State>,
        data: &mut [u8],
    ) -> Result<(u64, Range<usize>), Rejection> {
        let prefix = sniff::Prefix::of(data);
        self.by_trial(state, data.len(), |decoder, keys| {
            decoder
                .decrypt_in_place(keys, data)
                .expect("called only for formats that decrypt in place")
        })
        .map_err(|rejection| self.explain(rejection, || prefix.hint()))
    }

    /// Runs `decrypt` on a buffer of `len` bytes with the streaming thread's
    /// decoder and the keys to try, the key in use first, from `state` (locked by
    /// the caller); turns the index of the key that opened it into its KID.
    fn by_trial<T>(
        &self,
        state: MutexGuard<'_, State>,
        len: usize,
        decrypt: impl FnOnce(&mut TrialDecoder, &TrialKeys) -> Result<(usize, T), Invalid>,
    ) -> Result<(u64, T), Rejection> {
        let mut trial = self.trial.lock().unwrap();
        let stamp = state.trial_stamp();
        if trial.keys_read != Some(stamp) {
            trial.keys = state.trial_keys();
            trial.keys_read = Some(stamp);
        }
        drop(state);
        let Trial { decoder, keys, .. } = &mut *trial;
        let opened = if keys.is_empty() {
            Err((DropReason::NoKey, "no key".into()))
        } else {
            let decoder = decoder.as_mut().expect("a decoder for formats without KID");
            match decrypt(decoder, keys) {
                Ok((index, opened)) => Ok((keys[index].key.kid(), opened)),
                Err(_) => Err(no_key_opens(keys.len(), len)),
            }
        };
        drop(trial);
        if self.trial_keys_stale.load(Ordering::Relaxed)
            && self.trial_keys_stale.swap(false, Ordering::Relaxed)
        {
            self.trial.lock().unwrap().forget_keys();
        }
        opened
    }

    /// After a change to the key ring from outside the streaming thread: the
    /// keys it read for trial decryption go now, or, while it decrypts a
    /// buffer, as soon as it is done (a key removed or replaced is wiped then).
    fn trial_keys_changed(&self) {
        // Flagged first: if the streaming thread holds `trial` now, it sees the
        // flag once it lets go.
        self.trial_keys_stale.store(true, Ordering::SeqCst);
        if let Ok(mut trial) = self.trial.try_lock() {
            trial.forget_keys();
            self.trial_keys_stale.store(false, Ordering::Relaxed);
        }
    }

    /// `open_by_trial` from `buffer` into a new memory that replaces its bytes
    /// when a key opens it; `state` is locked by the caller.
    fn open_by_trial_into_new_memory(
        &self,
        state: MutexGuard<'_, State>,
        buffer: &mut gst::BufferRef,
    ) -> Result<Result<(u64, usize), Rejection>, gst::FlowError> {
        let opened = common::with_readable(buffer, |input| {
            self.by_trial(state, input.len(), |decoder, keys| {
                // Sized under the decoder's lock, which the trial takes anyway.
                let max_len = decoder.max_decrypted_len(input.len());
                let mut index = 0;
                let memory = common::new_memory(max_len, |output| {
                    let (opened, len) = decoder.decrypt(keys, input, output)?;
                    index = opened;
                    Ok(len)
                })?;
                Ok((index, memory))
            })
            .map_err(|rejection| self.explain(rejection, || sniff::plaintext_hint(input)))
        })?;
        Ok(opened.map(|(kid, memory)| {
            let len = memory.size();
            buffer.replace_all_memory(memory);
            (kid, len)
        }))
    }

    /// Counts a decrypted buffer, and posts a message when the key changed.
    fn count_output(&self, kid: u64, len: usize, pts: Option<gst::ClockTime>) {
        if self.output.count(kid, len) {
            return;
        }
        let switched_from = {
            let mut state = self.state.lock().unwrap();
            let State { running, stats, .. } = &mut *state;
            stats.kid = Some(kid);
            self.output.set_steady(running.is_some().then_some(kid));
            if let Some(running) = running.as_mut() {
                running.too_old_run = 0;
            }
            let previous = running.as_mut().and_then(|r| r.current_kid.replace(kid));
            match previous {
                Some(previous) if previous != kid => {
                    stats.key_switches += 1;
                    Some(previous)
                }
                _ => None,
            }
        };
        if let Some(previous) = switched_from {
            self.post_key_switch(kid, previous, pts);
        }
    }

    /// At EOS, pushes what the format still holds back (aesdec's last block).
    fn finish_stream(&self) -> Result<(), gst::FlowError> {
        let Some(key) = self.state.lock().unwrap().trial_keys().into_iter().next() else {
            return Ok(());
        };
        let last = match self.trial.lock().unwrap().decoder.as_mut() {
            Some(decoder) => decoder.finish(&key.key),
            None => None,
        };
        match last {
            Some(Ok(last)) if !last.is_empty() => {
                self.count_output(key.key.kid(), last.len(), None);
                self.obj()
                    .src_pad()
                    .push(gst::Buffer::from_mut_slice(last))?;
            }
            Some(Err(_)) => {
                self.reject(
                    DropReason::Authentication,
                    "the last block of the stream does not decrypt to valid padding".into(),
                )?;
            }
            _ => {}
        }
        Ok(())
    }
}
