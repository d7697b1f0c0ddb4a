// SPDX-License-Identifier: MPL-2.0
//! `streamencrypt`: one SFrame per buffer, keys switched atomically with their KID.

use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex};

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_base::prelude::*;
use gst_base::subclass::base_transform::{InputBuffer, PrepareOutputBufferSuccess};
use gst_base::subclass::prelude::*;

use crate::common::{self, KeySettings, KeyedElement};
use crate::keys::{KeyError, SecretKey, read_key_file};
use crate::sframe::{MAX_OVERHEAD, SendCounter, SframeKey};

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "streamencrypt",
        gst::DebugColorFlags::empty(),
        Some("Stream encrypter (SFrame)"),
    )
});

#[derive(Debug, Default)]
struct Settings {
    keys: KeySettings,
    /// Whether `key-file` (rather than `key`) was set last: the later one wins.
    key_from_file: bool,
    rotate_on_keyframe: bool,
}

/// A key in use: its derived SFrame key and the counters it hands out.
struct ActiveKey {
    key: Arc<SframeKey>,
    counter: SendCounter,
}

impl ActiveKey {
    fn new(key: SframeKey) -> Self {
        let counter = SendCounter::new(key.fingerprint(), key.suite().max_frames_per_key());
        Self {
            key: Arc::new(key),
            counter,
        }
    }
}

/// Per-run state, built in `start()`.
struct Running {
    current: ActiveKey,
    /// Key set while playing, taken into use at the next (key)frame.
    pending: Option<SframeKey>,
    rotate_on_keyframe: bool,
}

#[derive(Debug, Default, Clone)]
struct Stats {
    buffers: u64,
    bytes_in: u64,
    bytes_out: u64,
    key_switches: u64,
    kid: Option<u64>,
}

impl Stats {
    fn to_structure(&self) -> gst::Structure {
        let mut s = gst::Structure::builder("streamencrypt-stats")
            .field("buffers", self.buffers)
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
struct State {
    running: Option<Running>,
    stats: Stats,
}

#[derive(Default)]
pub struct StreamEncrypt {
    settings: Mutex<Settings>,
    state: Mutex<State>,
}

impl StreamEncrypt {
    /// Takes (kid, key) as the key to encrypt with: at start if not running, else
    /// at the next buffer (or keyframe). The two always change together.
    fn install_key(&self, kid: u64, key: SecretKey) -> Result<(), KeyError> {
        let mut settings = self.settings.lock().unwrap();
        let mut state = self.state.lock().unwrap();
        if let Some(running) = state.running.as_mut() {
            settings.keys.mode.check_key(&key)?;
            running.pending = Some(SframeKey::derive(
                settings.keys.mode.suite(),
                kid,
                key.as_bytes(),
            ));
            gst::info!(
                CAT,
                imp = self,
                "key for KID {kid} queued for the next buffer"
            );
        }
        settings.keys.key = Some(key);
        settings.keys.key_id = kid;
        settings.keys.refused = None;
        settings.key_from_file = false;
        Ok(())
    }

    /// Reads the first key of a key file: `HEX` (with `default_kid`) or `KID HEX`.
    fn read_first_key(path: &Path, default_kid: u64) -> Result<(u64, SecretKey), KeyError> {
        let first = read_key_file(path)?
            .into_iter()
            .next()
            .expect("never empty");
        Ok((first.kid.unwrap_or(default_kid), first.key))
    }

    fn set_key_file(&self, path: Option<PathBuf>) -> Result<(), KeyError> {
        let running = self.state.lock().unwrap().running.is_some();
        if let (true, Some(path)) = (running, &path) {
            let default_kid = self.settings.lock().unwrap().keys.key_id;
            let (kid, key) = Self::read_first_key(path, default_kid)?;
            self.install_key(kid, key)?;
        }
        let mut settings = self.settings.lock().unwrap();
        settings.key_from_file = path.is_some();
        settings.keys.key_file = path;
        Ok(())
    }

    /// The key to start with, from `key-file` or `key` (whichever was set last).
    fn start_key(settings: &Settings) -> Result<SframeKey, gst::ErrorMessage> {
        let keys = &settings.keys;
        let (kid, key) = match (&keys.key_file, &keys.key) {
            (Some(path), _) if settings.key_from_file || keys.key.is_none() => {
                Self::read_first_key(path, keys.key_id)
                    .map_err(|e| gst::error_msg!(gst::ResourceError::OpenRead, ("{e}")))?
            }
            (_, Some(key)) => (keys.key_id, key.clone()),
            _ => {
                return Err(gst::error_msg!(
                    gst::LibraryError::Settings,
                    (
                        "No key: set the `key` property (hex) or `key-file` before starting{}",
                        keys.refused_hint()
                    )
                ));
            }
        };
        keys.mode
            .check_key(&key)
            .map_err(|e| gst::error_msg!(gst::LibraryError::Settings, ("Unusable `key`: {e}")))?;
        Ok(SframeKey::derive(keys.mode.suite(), kid, key.as_bytes()))
    }

    fn post_exhausted(&self, kid: u64, limit: u64) {
        gst::element_imp_error!(
            self,
            gst::StreamError::Encode,
            ("The key for KID {kid} has protected {limit} frames, the most its cipher \
                 suite allows: set a new key (set-key, or key-id and key) to go on")
        );
    }
}

impl KeyedElement for StreamEncrypt {
    fn category() -> &'static gst::DebugCategory {
        &CAT
    }

    fn with_key_settings<R>(&self, f: impl FnOnce(&mut KeySettings) -> R) -> R {
        f(&mut self.settings.lock().unwrap().keys)
    }

    fn accept_key(&self, kid: u64, key: SecretKey) -> Result<(), KeyError> {
        self.install_key(kid, key)
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
                "Key in hex, of the length `mode` needs (write-only). While playing, the new \
                 key and the current key-id take effect together at the next buffer",
                "File holding the key: the first line is `HEX` (used with key-id) or \
                 `KID HEX`; keeps the key out of `ps` and shell history. Read at start, \
                 and at once when set while playing",
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
            properties
        });
        PROPERTIES.as_ref()
    }

    fn signals() -> &'static [glib::subclass::Signal] {
        static SIGNALS: LazyLock<Vec<glib::subclass::Signal>> =
            LazyLock::new(|| vec![common::key_signal::<StreamEncrypt>("set-key")]);
        SIGNALS.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        match pspec.name() {
            "mode" => self.settings.lock().unwrap().keys.mode = value.get().expect("type checked"),
            "key" => {
                let result = KeySettings::parse_key(value).and_then(|key| match key {
                    Some(key) => {
                        let kid = self.settings.lock().unwrap().keys.key_id;
                        self.install_key(kid, key)
                    }
                    None => {
                        self.settings.lock().unwrap().keys.key = None;
                        Ok(())
                    }
                });
                if let Err(err) = result {
                    self.refuse("key", err);
                }
            }
            "key-id" => {
                let kid = value.get().expect("type checked");
                self.settings.lock().unwrap().keys.key_id = kid;
                gst::debug!(CAT, imp = self, "key-id {kid} will go with the next key");
            }
            "key-file" => {
                let path = value.get::<Option<PathBuf>>().expect("type checked");
                if let Err(err) = self.set_key_file(path) {
                    self.refuse("key-file", err);
                }
            }
            "clear-keys-on-stop" => {
                self.settings.lock().unwrap().keys.clear_keys_on_stop =
                    value.get().expect("type checked")
            }
            "rotate-on-keyframe" => {
                let enabled = value.get().expect("type checked");
                let mut settings = self.settings.lock().unwrap();
                settings.rotate_on_keyframe = enabled;
                if let Some(running) = self.state.lock().unwrap().running.as_mut() {
                    running.rotate_on_keyframe = enabled;
                }
            }
            other => unreachable!("no property {other}"),
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        let settings = self.settings.lock().unwrap();
        match pspec.name() {
            "mode" => settings.keys.mode.to_value(),
            "key-id" => settings.keys.key_id.to_value(),
            "key-file" => settings.keys.key_file.to_value(),
            "clear-keys-on-stop" => settings.keys.clear_keys_on_stop.to_value(),
            "rotate-on-keyframe" => settings.rotate_on_keyframe.to_value(),
            "stats" => self.state.lock().unwrap().stats.to_structure().to_value(),
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
                "Encrypts and authenticates each buffer as one SFrame (RFC 9605). \
                 Action signal set-key(kid, hex) switches key and KID together at the \
                 next buffer, from any thread, while playing",
                "streamcrypt developers",
            )
        });
        Some(&*METADATA)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        common::pad_templates()
    }
}

impl BaseTransformImpl for StreamEncrypt {
    const MODE: gst_base::subclass::BaseTransformMode =
        gst_base::subclass::BaseTransformMode::NeverInPlace;
    // Caps are ANY on both sides, hence always the same: passthrough would let
    // plaintext through.
    const PASSTHROUGH_ON_SAME_CAPS: bool = false;
    const TRANSFORM_IP_ON_PASSTHROUGH: bool = false;

    fn start(&self) -> Result<(), gst::ErrorMessage> {
        let settings = self.settings.lock().unwrap();
        let key = Self::start_key(&settings)?;
        gst::info!(
            CAT,
            imp = self,
            "starting with KID {} in mode {}",
            key.kid(),
            settings.keys.mode.nick()
        );
        let mut state = self.state.lock().unwrap();
        state.stats = Stats {
            kid: Some(key.kid()),
            ..Stats::default()
        };
        state.running = Some(Running {
            current: ActiveKey::new(key),
            pending: None,
            rotate_on_keyframe: settings.rotate_on_keyframe,
        });
        Ok(())
    }

    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        let mut settings = self.settings.lock().unwrap();
        self.state.lock().unwrap().running = None;
        if settings.keys.clear_keys_on_stop {
            settings.keys.clear_keys();
        }
        gst::info!(CAT, imp = self, "stopped");
        Ok(())
    }

    fn transform_size(
        &self,
        direction: gst::PadDirection,
        _caps: &gst::Caps,
        size: usize,
        _othercaps: &gst::Caps,
    ) -> Option<usize> {
        match direction {
            gst::PadDirection::Sink => Some(size + MAX_OVERHEAD),
            _ => Some(size),
        }
    }

    fn prepare_output_buffer(
        &self,
        inbuf: InputBuffer,
    ) -> Result<PrepareOutputBufferSuccess, gst::FlowError> {
        let size = match &inbuf {
            InputBuffer::Readable(buf) => buf.size(),
            InputBuffer::Writable(buf) => buf.size(),
        };
        common::output_buffer(self, inbuf, size + MAX_OVERHEAD)
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

    fn transform(
        &self,
        inbuf: &gst::Buffer,
        outbuf: &mut gst::BufferRef,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        let (key, ctr, switched) = {
            let mut state = self.state.lock().unwrap();
            let State { running, stats } = &mut *state;
            let running = running.as_mut().ok_or(gst::FlowError::Flushing)?;
            let mut switched = None;
            let keyframe = !inbuf.flags().contains(gst::BufferFlags::DELTA_UNIT);
            if running.pending.is_some() && (keyframe || !running.rotate_on_keyframe) {
                let next = ActiveKey::new(running.pending.take().expect("checked"));
                let previous = std::mem::replace(&mut running.current, next);
                switched = Some((previous.key.kid(), running.current.key.kid()));
                stats.key_switches += 1;
                stats.kid = Some(running.current.key.kid());
            }
            let key = running.current.key.clone();
            let ctr = match running.current.counter.next_counter() {
                Ok(ctr) => ctr,
                Err(exhausted) => {
                    drop(state);
                    self.post_exhausted(key.kid(), exhausted.limit);
                    return Err(gst::FlowError::Error);
                }
            };
            stats.buffers += 1;
            stats.bytes_in += inbuf.size() as u64;
            stats.bytes_out += key.encrypted_len(ctr, inbuf.size()) as u64;
            (key, ctr, switched)
        };
        if let Some((from, to)) = switched {
            gst::info!(CAT, imp = self, "switched from KID {from} to KID {to}");
        }

        let input = inbuf.map_readable().map_err(|_| {
            gst::element_imp_error!(self, gst::StreamError::Failed, ("Cannot read buffer"));
            gst::FlowError::Error
        })?;
        let len = {
            let mut output = outbuf.map_writable().map_err(|_| gst::FlowError::Error)?;
            key.encrypt_into(ctr, &[], &input, &mut output)
                .map_err(|e| {
                    gst::element_imp_error!(self, gst::StreamError::Encode, ("{e}"));
                    gst::FlowError::Error
                })?
        };
        outbuf.set_size(len);
        Ok(gst::FlowSuccess::Ok)
    }
}
