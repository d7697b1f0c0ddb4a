// SPDX-License-Identifier: MPL-2.0
//! `streamcrypthlssink`: `splitmuxsink` cuts MPEG-TS segments on keyframes into
//! memory; each finished segment is encrypted (AES-128-CBC, its own IV) and
//! written with its key file and the playlist by `crate::hls::HlsWriter`.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::{Arc, LazyLock, Mutex};

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;

use super::service::ServiceStart;
use crate::hls::{self, HlsError, HlsErrorKind, HlsSettings, HlsWriter};
use crate::keys::SecretKey;
use crate::service::{ServiceSettings, WorkerSlot};
use zeroize::Zeroizing;

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "streamcrypthlssink",
        gst::DebugColorFlags::empty(),
        Some("HLS sink with AES-128 encryption"),
    )
});

const DEFAULT_SEND_KEYFRAME_REQUESTS: bool = true;

/// The element's debug category.
pub(super) fn cat() -> &'static gst::DebugCategory {
    &CAT
}

/// The `key` property.
enum FixedKey {
    /// Unset (or set to NULL): a fresh random key for each key period.
    Random,
    Set(SecretKey),
    /// Refused when set: why (never the key). Starting is refused too.
    Refused(HlsError),
    /// Set, then wiped when the sink went to NULL. Starting again needs `key`
    /// set again (or set to NULL for random keys): a restart never switches to
    /// random keys behind the application's back.
    Wiped,
}

struct Settings {
    /// All but the key, which is in `key`.
    hls: HlsSettings,
    key: FixedKey,
    send_keyframe_requests: bool,
    /// `key-server`, `grant`, `grant-file`, `stream-id`.
    service: ServiceSettings,
    /// `playlist-grant`: the token every key URI carries.
    playlist_grant: Option<Zeroizing<String>>,
    /// Whether `key-location` was set (it means nothing with key-server).
    key_location_set: bool,
    /// From READY->PAUSED to PAUSED->READY the settings are in use and do not
    /// change (GStreamer leaves the mutability flags to the element).
    in_use: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            hls: HlsSettings::default(),
            key: FixedKey::Random,
            send_keyframe_requests: DEFAULT_SEND_KEYFRAME_REQUESTS,
            service: ServiceSettings::default(),
            playlist_grant: None,
            key_location_set: false,
            in_use: false,
        }
    }
}

impl Settings {
    /// With key-server: a setting that means nothing with it, if one is set.
    fn conflict_with_service(&self) -> Option<String> {
        if matches!(self.key, FixedKey::Set(_)) {
            return Some(
                "key is set too: with key-server the keys come from the key service; \
                         unset key (or key-server)"
                    .into(),
            );
        }
        if self.hls.key_rotation != 0 {
            return Some(format!(
                "key-rotation={}: with key-server the key changes with the service's key \
                 period; leave key-rotation at 0",
                self.hls.key_rotation
            ));
        }
        if self.key_location_set {
            return Some(
                "key-location is set, but with key-server no key file is written \
                         (players fetch keys from the service): unset it"
                    .into(),
            );
        }
        None
    }

    /// The writer's settings, key included, or why the sink cannot start.
    fn for_writer(&self) -> Result<HlsSettings, HlsError> {
        if self.service.enabled() {
            return Ok(HlsSettings {
                key: None,
                given_keys: true,
                ..self.hls.clone()
            });
        }
        let key = match &self.key {
            FixedKey::Random => None,
            FixedKey::Set(key) => Some(key.clone()),
            FixedKey::Refused(err) => {
                return Err(HlsError::settings(format!(
                    "{err}. Set a valid `key`, or set it to NULL for random keys"
                )));
            }
            FixedKey::Wiped => {
                return Err(HlsError::settings(
                    "key: the key set earlier was wiped when the sink went to NULL; set `key` \
                     again before starting, or set it to NULL for random keys",
                ));
            }
        };
        Ok(HlsSettings {
            key,
            ..self.hls.clone()
        })
    }
}

/// The bytes of one segment as the muxer writes them. giostreamsink owns the GIO
/// stream around them (it flushes the stream when it stops, and nobody needs to
/// close it); the element owns the bytes and takes them when the segment is done.
#[derive(Clone, Default)]
struct SegmentBytes(Arc<Mutex<Vec<u8>>>);

impl Write for SegmentBytes {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A segment being written by the muxer, in memory.
struct Fragment {
    bytes: SegmentBytes,
    start: Option<gst::ClockTime>,
}

pub struct StreamCryptHlsSink {
    settings: Mutex<Settings>,
    writer: Mutex<Option<HlsWriter>>,
    /// Fragments opened and not yet closed, oldest first.
    fragments: Mutex<VecDeque<Fragment>>,
    splitmuxsink: gst::Element,
    giostreamsink: gst::Element,
    /// With `key-server`: the period keys, and the thread that fetches them.
    pub(super) period_keys: Mutex<Option<super::service::PeriodKeys>>,
    pub(super) worker: WorkerSlot,
}

impl StreamCryptHlsSink {
    /// Posts `err` in the GStreamer error domain its kind belongs to.
    fn post_error(&self, err: &HlsError) {
        match err.kind {
            HlsErrorKind::Settings => {
                gst::element_imp_error!(self, gst::LibraryError::Settings, ("{err}"))
            }
            HlsErrorKind::NotFound => {
                gst::element_imp_error!(self, gst::ResourceError::NotFound, ("{err}"))
            }
            HlsErrorKind::OpenWrite => {
                gst::element_imp_error!(self, gst::ResourceError::OpenWrite, ("{err}"))
            }
            HlsErrorKind::Write => {
                gst::element_imp_error!(self, gst::ResourceError::Write, ("{err}"))
            }
            HlsErrorKind::NoRandomness => {
                gst::element_imp_error!(self, gst::LibraryError::Failed, ("{err}"))
            }
        }
    }

    /// READY->PAUSED: checks the settings and the folders, makes the writer and
    /// hands splitmuxsink its share of the settings. The settings lock is not held
    /// while children's properties are set or messages posted: handlers of their
    /// notifications and of the bus may read this sink's properties.
    fn start(&self) -> Result<(), gst::StateChangeError> {
        let service = {
            let mut settings = self.settings.lock().unwrap();
            settings.in_use = true;
            settings.service.enabled().then(|| {
                (
                    settings.service.clone(),
                    settings.conflict_with_service(),
                    settings.hls.key_uri.clone(),
                    settings.playlist_grant.clone(),
                )
            })
        };
        // The service is asked without the settings lock: property reads do
        // not wait for it.
        if let Some((service, conflict, key_uri, playlist_grant)) = service {
            let started = self.start_service(ServiceStart {
                service: &service,
                conflict,
                key_uri: key_uri.as_deref(),
                playlist_grant: playlist_grant.as_deref().map(String::as_str),
            });
            if let Err(err) = started {
                self.settings.lock().unwrap().in_use = false;
                self.post_error_message(err);
                return Err(gst::StateChangeError);
            }
        }
        let (writer_settings, max_size_time, send_keyframe_requests) = {
            let settings = self.settings.lock().unwrap();
            (
                settings.for_writer(),
                settings.hls.target_duration as u64 * gst::ClockTime::SECOND.nseconds(),
                settings.send_keyframe_requests,
            )
        };
        match writer_settings.and_then(HlsWriter::new) {
            Ok(writer) => *self.writer.lock().unwrap() = Some(writer),
            Err(err) => {
                self.settings.lock().unwrap().in_use = false;
                self.stop_service();
                self.post_error(&err);
                return Err(gst::StateChangeError);
            }
        }
        self.splitmuxsink
            .set_property("max-size-time", max_size_time);
        self.splitmuxsink
            .set_property("send-keyframe-requests", send_keyframe_requests);
        Ok(())
    }

    /// PAUSED->READY: the writer goes with its keys; settings may change again.
    fn stop(&self) {
        self.stop_service();
        *self.writer.lock().unwrap() = None;
        self.fragments.lock().unwrap().clear();
        self.settings.lock().unwrap().in_use = false;
    }

    /// splitmuxsink asks where the next fragment goes: into fresh memory.
    fn open_fragment(&self) {
        let bytes = SegmentBytes::default();
        let stream = gio::WriteOutputStream::new(bytes.clone());
        self.giostreamsink.set_property("stream", &stream);
        self.fragments
            .lock()
            .unwrap()
            .push_back(Fragment { bytes, start: None });
    }

    fn fragment_opened(&self, running_time: Option<gst::ClockTime>) {
        let mut fragments = self.fragments.lock().unwrap();
        if let Some(fragment) = fragments.iter_mut().rev().find(|f| f.start.is_none()) {
            fragment.start = running_time;
        }
    }

    /// A fragment is complete (the muxer's EOS has gone through giostreamsink):
    /// encrypt and write it, then the playlist.
    fn fragment_closed(&self, running_time: Option<gst::ClockTime>) {
        let Some(fragment) = self.fragments.lock().unwrap().pop_front() else {
            gst::element_imp_error!(
                self,
                gst::ResourceError::Write,
                ("A segment was closed that was never opened")
            );
            return;
        };
        let data = std::mem::take(&mut *fragment.bytes.0.lock().unwrap());
        let duration = match (fragment.start, running_time) {
            (Some(start), Some(end)) => end.saturating_sub(start).nseconds() as f64 / 1e9,
            _ => self.settings.lock().unwrap().hls.target_duration as f64,
        };
        let given = self.segment_key();
        let written = match (self.writer.lock().unwrap().as_mut(), given) {
            (Some(writer), Some(given)) => writer.add_segment_with(&data, duration, &given),
            (Some(writer), None) => writer.add_segment(&data, duration),
            (None, _) => return,
        };
        match written {
            Ok(path) => gst::info!(
                CAT,
                imp = self,
                "wrote {} ({} bytes, {duration:.3} s)",
                path.display(),
                data.len()
            ),
            Err(err) => self.post_error(&err),
        }
    }

    fn finish(&self) {
        let finished = match self.writer.lock().unwrap().as_mut() {
            Some(writer) => writer.finish(),
            None => return,
        };
        if let Err(err) = finished {
            self.post_error(&err);
        }
    }
}

#[glib::object_subclass]
impl ObjectSubclass for StreamCryptHlsSink {
    const NAME: &'static str = "GstStreamCryptHlsSink";
    type Type = super::StreamCryptHlsSink;
    type ParentType = gst::Bin;

    fn new() -> Self {
        let splitmuxsink = gst::ElementFactory::make("splitmuxsink")
            .build()
            .expect("splitmuxsink (gst-plugins-good)");
        let giostreamsink = gst::ElementFactory::make("giostreamsink")
            .build()
            .expect("giostreamsink (gst-plugins-base)");
        let muxer = gst::ElementFactory::make("mpegtsmux")
            .build()
            .expect("mpegtsmux (gst-plugins-bad)");
        // max-size-time and send-keyframe-requests are set at start, from the
        // settings.
        splitmuxsink.set_property("muxer", &muxer);
        splitmuxsink.set_property("sink", &giostreamsink);
        splitmuxsink.set_property("reset-muxer", false);
        Self {
            settings: Mutex::new(Settings::default()),
            writer: Mutex::new(None),
            fragments: Mutex::new(VecDeque::new()),
            splitmuxsink,
            giostreamsink,
            period_keys: Mutex::new(None),
            worker: WorkerSlot::default(),
        }
    }
}

impl ObjectImpl for StreamCryptHlsSink {
    fn signals() -> &'static [glib::subclass::Signal] {
        static SIGNALS: LazyLock<Vec<glib::subclass::Signal>> =
            LazyLock::new(|| vec![crate::service::grant_expiring_signal()]);
        SIGNALS.as_ref()
    }

    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            let defaults = HlsSettings::default();
            let mut properties = vec![
                glib::ParamSpecString::builder("location")
                    .nick("Segment location")
                    .blurb(
                        "Segment file names, with one %d (or %05d, %u...) for the segment \
                         number, %% for a literal % (as hlssink2)",
                    )
                    .default_value(Some(defaults.location.as_str()))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("playlist-location")
                    .nick("Playlist location")
                    .blurb("The playlist file (as hlssink2): a fixed name, without %d")
                    .default_value(Some(defaults.playlist_location.as_str()))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("playlist-root")
                    .nick("Playlist root")
                    .blurb(
                        "Prefix of segment (and default key) URIs in the playlist; unset: \
                         names relative to the playlist (as hlssink2)",
                    )
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("target-duration")
                    .nick("Target duration")
                    .blurb("Segment duration aimed at, in seconds; segments start on keyframes")
                    .minimum(1)
                    .default_value(defaults.target_duration)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("playlist-length")
                    .nick("Playlist length")
                    .blurb(
                        "Segments listed in the playlist (a live sliding window); 0 lists \
                         them all (as hlssink2)",
                    )
                    .default_value(defaults.playlist_length)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("max-files")
                    .nick("Maximum files")
                    .blurb(
                        "Segment files kept on disk, older ones (and keys no segment needs) \
                         are deleted; 0 keeps all (as hlssink2)",
                    )
                    .default_value(defaults.max_files)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("key-location")
                    .nick("Key location")
                    .blurb(
                        "Key files (16 raw bytes, mode 0600), with one %d for the key \
                         number (needed with key-rotation); not with key-server, which \
                         writes no key file",
                    )
                    .default_value(Some(defaults.key_location.as_str()))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("key-uri")
                    .nick("Key URI")
                    .blurb(
                        "URI of the key in #EXT-X-KEY, with one %d for the key number \
                         (needed with key-rotation; %% for a literal %); unset: the key \
                         file's name after playlist-root. With key-server: %d is the KID \
                         (needed), and unset the service's own key URL is used; token= \
                         playlist-grant is appended either way",
                    )
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("key-rotation")
                    .nick("Key rotation")
                    .blurb("Segments per key, each new key random; 0: one key for all")
                    .default_value(defaults.key_rotation)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("key")
                    .nick("Key")
                    .blurb(
                        "AES-128 key in hex (16 bytes), write-only; a bad key stops the \
                         sink from starting. Wiped when the sink goes to NULL: set it again \
                         before a restart (or NULL for random keys). Unset: a fresh random \
                         key (the usual choice)",
                    )
                    .write_only()
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoolean::builder("send-keyframe-requests")
                    .nick("Send keyframe requests")
                    .blurb(
                        "Ask upstream for a keyframe where a segment should start (as \
                         hlssink2); otherwise the input needs regular keyframes",
                    )
                    .default_value(DEFAULT_SEND_KEYFRAME_REQUESTS)
                    .mutable_ready()
                    .build(),
            ];
            properties.extend(crate::service::properties(
                "Grant (a JWT from `streamcrypt-keys grant`) for key-server, write-only and \
                 never logged; needs publish and watch rights on stream-id (e.g. --rights \
                 0xff): the sink learns the current KID and fetches each period's key. Set \
                 while playing, it replaces the grant in use (checked first)",
            ));
            properties.push(
                glib::ParamSpecString::builder("playlist-grant")
                    .nick("Playlist grant")
                    .blurb(
                        "With key-server: a grant written into every key URI of the playlist \
                         (token=...), for players that cannot send headers. Every viewer \
                         reads it: it must have watch rights only (--rights 0xab), and a \
                         short lifetime limits what a leaked playlist gives. Write-only",
                    )
                    .write_only()
                    .mutable_ready()
                    .build(),
            );
            properties
        });
        PROPERTIES.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let name = pspec.name();
        let mut settings = self.settings.lock().unwrap();
        if settings.in_use && matches!(name, "grant" | "grant-file") {
            let set = settings
                .service
                .set(name, value)
                .expect("a service property");
            drop(settings);
            if let Err(why) = self.worker.hand_over_grant(set) {
                gst::element_imp_warning!(
                    self,
                    gst::LibraryError::Settings,
                    ("{name} refused: {why}; the grant in use stays")
                );
            }
            return;
        }
        if settings.in_use {
            drop(settings);
            gst::element_imp_warning!(
                self,
                gst::LibraryError::Settings,
                ("{name} cannot change while the sink runs (PAUSED or PLAYING): the value \
                     in use stays; set it in the NULL or READY state")
            );
            return;
        }
        let text = || value.get::<Option<String>>().expect("type checked");
        match name {
            "location" => settings.hls.location = text().unwrap_or_default(),
            "playlist-location" => settings.hls.playlist_location = text().unwrap_or_default(),
            "playlist-root" => settings.hls.playlist_root = text(),
            "target-duration" => settings.hls.target_duration = value.get().expect("type checked"),
            "playlist-length" => settings.hls.playlist_length = value.get().expect("type checked"),
            "max-files" => settings.hls.max_files = value.get().expect("type checked"),
            "key-location" => {
                settings.key_location_set = true;
                settings.hls.key_location = text().unwrap_or_default();
            }
            "playlist-grant" => {
                let token = value.get::<Option<&str>>().expect("type checked");
                settings.playlist_grant = token.map(|t| Zeroizing::new(t.trim().to_owned()));
            }
            "key-uri" => settings.hls.key_uri = text(),
            "key-rotation" => settings.hls.key_rotation = value.get().expect("type checked"),
            "key" => {
                // Read where GLib holds it, without a copy of ours; the old key
                // is wiped as it is replaced.
                let hex = value.get::<Option<&str>>().expect("type checked");
                settings.key = match hex.map(hls::parse_key) {
                    None => FixedKey::Random,
                    Some(Ok(key)) => FixedKey::Set(key),
                    Some(Err(err)) => FixedKey::Refused(err),
                };
                if let FixedKey::Refused(err) = &settings.key {
                    let message = err.message.clone();
                    drop(settings);
                    gst::element_imp_warning!(
                        self,
                        gst::LibraryError::Settings,
                        ("{message}; the sink will not start until `key` is valid or NULL")
                    );
                }
            }
            "send-keyframe-requests" => {
                settings.send_keyframe_requests = value.get().expect("type checked")
            }
            other => {
                // Errors in a grant file are reported at start.
                if settings.service.set(other, value).is_none() {
                    unreachable!("no property {other}")
                }
            }
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        let settings = self.settings.lock().unwrap();
        if let Some(value) = settings.service.get(pspec.name()) {
            return value;
        }
        match pspec.name() {
            "location" => settings.hls.location.to_value(),
            "playlist-location" => settings.hls.playlist_location.to_value(),
            "playlist-root" => settings.hls.playlist_root.to_value(),
            "target-duration" => settings.hls.target_duration.to_value(),
            "playlist-length" => settings.hls.playlist_length.to_value(),
            "max-files" => settings.hls.max_files.to_value(),
            "key-location" => settings.hls.key_location.to_value(),
            "key-uri" => settings.hls.key_uri.to_value(),
            "key-rotation" => settings.hls.key_rotation.to_value(),
            "send-keyframe-requests" => settings.send_keyframe_requests.to_value(),
            other => unreachable!("no readable property {other}"),
        }
    }

    fn constructed(&self) {
        self.parent_constructed();
        let obj = self.obj();
        obj.add(&self.splitmuxsink).expect("a fresh bin");
        obj.set_element_flags(gst::ElementFlags::SINK);
        // Segments go to disk, not to a clock: nothing to preroll for. Keeping
        // splitmuxsink's asynchronous state changes (it restarts its sink for
        // every segment) inside this bin spares the pipeline from racing with
        // them; without this, an EOS racing a late ASYNC_DONE could go unposted.
        obj.set_property("async-handling", true);
        let weak = obj.downgrade();
        self.splitmuxsink
            .connect("format-location", false, move |_args| {
                if let Some(sink) = weak.upgrade() {
                    sink.imp().open_fragment();
                }
                // No location: the fragment goes to the stream set above.
                Some(None::<String>.to_value())
            });
    }
}

impl GstObjectImpl for StreamCryptHlsSink {}

impl ElementImpl for StreamCryptHlsSink {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "HLS sink with AES-128 encryption",
                "Sink/Muxer",
                "HTTP Live Streaming with AES-128 encrypted segments",
                crate::common::AUTHOR,
            )
        });
        Some(&*METADATA)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            ["video", "audio"]
                .iter()
                .map(|name| {
                    gst::PadTemplate::new(
                        name,
                        gst::PadDirection::Sink,
                        gst::PadPresence::Request,
                        &gst::Caps::new_any(),
                    )
                    .unwrap()
                })
                .collect()
        });
        TEMPLATES.as_ref()
    }

    fn request_new_pad(
        &self,
        templ: &gst::PadTemplate,
        _name: Option<&str>,
        _caps: Option<&gst::Caps>,
    ) -> Option<gst::Pad> {
        let (name, target_name) = if templ.name_template() == "video" {
            ("video", "video")
        } else {
            ("audio", "audio_%u")
        };
        if self.obj().static_pad(name).is_some() {
            gst::warning!(CAT, imp = self, "only one {name} pad");
            return None;
        }
        let target = self.splitmuxsink.request_pad_simple(target_name)?;
        let pad = gst::GhostPad::builder_from_template_with_target(templ, &target)
            .ok()?
            .name(name)
            .build();
        pad.set_active(true).ok()?;
        self.obj().add_pad(&pad).ok()?;
        Some(pad.upcast())
    }

    fn release_pad(&self, pad: &gst::Pad) {
        if let Some(target) = pad
            .downcast_ref::<gst::GhostPad>()
            .and_then(|ghost| ghost.target())
        {
            self.splitmuxsink.release_request_pad(&target);
        }
        let _ = self.obj().remove_pad(pad);
    }

    fn change_state(
        &self,
        transition: gst::StateChange,
    ) -> Result<gst::StateChangeSuccess, gst::StateChangeError> {
        if transition == gst::StateChange::ReadyToPaused {
            self.start()?;
        }
        let result = self.parent_change_state(transition);
        match transition {
            gst::StateChange::ReadyToPaused if result.is_err() => self.stop(),
            gst::StateChange::PausedToReady => self.stop(),
            gst::StateChange::ReadyToNull => {
                // A fixed key is wiped here (zeroized as it drops).
                let mut settings = self.settings.lock().unwrap();
                if matches!(settings.key, FixedKey::Set(_)) {
                    settings.key = FixedKey::Wiped;
                }
            }
            _ => {}
        }
        result
    }
}

impl BinImpl for StreamCryptHlsSink {
    fn handle_message(&self, message: gst::Message) {
        match message.view() {
            gst::MessageView::Element(element)
                if message.src() == Some(self.splitmuxsink.upcast_ref()) =>
            {
                if let Some(s) = element.structure() {
                    let running_time = s.get::<gst::ClockTime>("running-time").ok();
                    match s.name().as_str() {
                        "splitmuxsink-fragment-opened" => self.fragment_opened(running_time),
                        "splitmuxsink-fragment-closed" => self.fragment_closed(running_time),
                        _ => {}
                    }
                }
            }
            gst::MessageView::Eos(_) => self.finish(),
            _ => {}
        }
        self.parent_handle_message(message)
    }
}
