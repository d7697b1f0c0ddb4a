// SPDX-License-Identifier: MPL-2.0
//! `streamcrypthlssink`: `splitmuxsink` cuts MPEG-TS segments on keyframes into
//! memory; each finished segment is encrypted (AES-128-CBC, its own IV) and
//! written with its key file and the playlist by `crate::hls::HlsWriter`.

use std::collections::VecDeque;
use std::sync::{LazyLock, Mutex};

use gio::prelude::*;
use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;

use crate::hls::{HlsSettings, HlsWriter};
use crate::keys::SecretKey;

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "streamcrypthlssink",
        gst::DebugColorFlags::empty(),
        Some("HLS sink with AES-128 encryption"),
    )
});

const DEFAULT_SEND_KEYFRAME_REQUESTS: bool = true;

struct Settings {
    hls: HlsSettings,
    send_keyframe_requests: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            hls: HlsSettings::default(),
            send_keyframe_requests: DEFAULT_SEND_KEYFRAME_REQUESTS,
        }
    }
}

/// A segment being written by the muxer, in memory.
struct Fragment {
    stream: MemoryStream,
    start: Option<gst::ClockTime>,
}

/// The memory stream giostreamsink writes a fragment into.
struct MemoryStream(gio::MemoryOutputStream);

// SAFETY: GIO streams may move between threads; they must not be used from two
// threads at once. giostreamsink writes to this one between `open_fragment` and
// the fragment-closed message (the muxer's EOS has gone through it by then); we
// touch it only under `fragments`' lock, at creation and after that message.
unsafe impl Send for MemoryStream {}

pub struct StreamCryptHlsSink {
    settings: Mutex<Settings>,
    writer: Mutex<Option<HlsWriter>>,
    /// Fragments opened and not yet closed, oldest first.
    fragments: Mutex<VecDeque<Fragment>>,
    splitmuxsink: gst::Element,
    giostreamsink: gst::Element,
}

impl StreamCryptHlsSink {
    /// splitmuxsink asks where the next fragment goes: into a fresh memory stream.
    fn open_fragment(&self) {
        let stream = gio::MemoryOutputStream::new_resizable();
        self.giostreamsink.set_property("stream", &stream);
        self.fragments.lock().unwrap().push_back(Fragment {
            stream: MemoryStream(stream),
            start: None,
        });
    }

    fn fragment_opened(&self, running_time: Option<gst::ClockTime>) {
        let mut fragments = self.fragments.lock().unwrap();
        if let Some(fragment) = fragments.iter_mut().rev().find(|f| f.start.is_none()) {
            fragment.start = running_time;
        }
    }

    /// A fragment is complete: encrypt and write it, then the playlist.
    fn fragment_closed(&self, running_time: Option<gst::ClockTime>) {
        let Some(fragment) = self.fragments.lock().unwrap().pop_front() else {
            gst::element_imp_error!(
                self,
                gst::ResourceError::Write,
                ("A segment was closed that was never opened")
            );
            return;
        };
        let stream = &fragment.stream.0;
        if let Err(err) = stream.close(gio::Cancellable::NONE) {
            gst::warning!(CAT, imp = self, "closing the segment buffer: {err}");
        }
        let data = stream.steal_as_bytes();
        let duration = match (fragment.start, running_time) {
            (Some(start), Some(end)) => end.saturating_sub(start).nseconds() as f64 / 1e9,
            _ => self.settings.lock().unwrap().hls.target_duration as f64,
        };
        let written = match self.writer.lock().unwrap().as_mut() {
            Some(writer) => writer.add_segment(&data, duration),
            None => return,
        };
        match written {
            Ok(path) => gst::info!(
                CAT,
                imp = self,
                "wrote {} ({} bytes, {duration:.3} s)",
                path.display(),
                data.len()
            ),
            Err(err) => gst::element_imp_error!(
                self,
                gst::ResourceError::Write,
                ("Cannot write the HLS segment or playlist: {err}")
            ),
        }
    }

    fn finish(&self) {
        let finished = match self.writer.lock().unwrap().as_mut() {
            Some(writer) => writer.finish(),
            None => return,
        };
        if let Err(err) = finished {
            gst::element_imp_error!(
                self,
                gst::ResourceError::Write,
                ("Cannot write the final HLS playlist: {err}")
            );
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
        let settings = Settings::default();
        splitmuxsink.set_property("muxer", &muxer);
        splitmuxsink.set_property("sink", &giostreamsink);
        splitmuxsink.set_property("reset-muxer", false);
        splitmuxsink.set_property(
            "max-size-time",
            settings.hls.target_duration as u64 * gst::ClockTime::SECOND.nseconds(),
        );
        splitmuxsink.set_property("send-keyframe-requests", settings.send_keyframe_requests);
        Self {
            settings: Mutex::new(settings),
            writer: Mutex::new(None),
            fragments: Mutex::new(VecDeque::new()),
            splitmuxsink,
            giostreamsink,
        }
    }
}

impl ObjectImpl for StreamCryptHlsSink {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            let defaults = HlsSettings::default();
            vec![
                glib::ParamSpecString::builder("location")
                    .nick("Segment location")
                    .blurb("Segment file names, with one %d for the segment number (as hlssink2)")
                    .default_value(Some(defaults.location.as_str()))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("playlist-location")
                    .nick("Playlist location")
                    .blurb("The playlist file (as hlssink2)")
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
                         number",
                    )
                    .default_value(Some(defaults.key_location.as_str()))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("key-uri")
                    .nick("Key URI")
                    .blurb(
                        "URI of the key in #EXT-X-KEY, with an optional %d for the key \
                         number; unset: the key file's name after playlist-root",
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
                        "AES-128 key in hex (16 bytes), write-only; unset: a fresh random \
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
            ]
        });
        PROPERTIES.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let mut settings = self.settings.lock().unwrap();
        let text = || value.get::<Option<String>>().expect("type checked");
        match pspec.name() {
            "location" => settings.hls.location = text().unwrap_or_default(),
            "playlist-location" => settings.hls.playlist_location = text().unwrap_or_default(),
            "playlist-root" => settings.hls.playlist_root = text(),
            "target-duration" => {
                settings.hls.target_duration = value.get().expect("type checked");
                self.splitmuxsink.set_property(
                    "max-size-time",
                    settings.hls.target_duration as u64 * gst::ClockTime::SECOND.nseconds(),
                );
            }
            "playlist-length" => settings.hls.playlist_length = value.get().expect("type checked"),
            "max-files" => settings.hls.max_files = value.get().expect("type checked"),
            "key-location" => settings.hls.key_location = text().unwrap_or_default(),
            "key-uri" => settings.hls.key_uri = text(),
            "key-rotation" => settings.hls.key_rotation = value.get().expect("type checked"),
            "key" => {
                settings.hls.key = match text().as_deref().map(SecretKey::from_hex) {
                    Some(Ok(key)) => Some(key),
                    Some(Err(err)) => {
                        drop(settings);
                        gst::element_imp_warning!(
                            self,
                            gst::LibraryError::Settings,
                            ("key refused: {err}; random keys will be used")
                        );
                        return;
                    }
                    None => None,
                };
            }
            "send-keyframe-requests" => {
                settings.send_keyframe_requests = value.get().expect("type checked");
                self.splitmuxsink
                    .set_property("send-keyframe-requests", settings.send_keyframe_requests);
            }
            other => unreachable!("no property {other}"),
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        let settings = self.settings.lock().unwrap();
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
                "HTTP Live Streaming with standard AES-128 encryption: MPEG-TS segments cut \
                 on keyframes, each AES-128-CBC with its own IV, key files, and an \
                 #EXT-X-KEY playlist (live or VOD)",
                "streamcrypt developers",
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
        if transition == gst::StateChange::NullToReady {
            let settings = self.settings.lock().unwrap().hls.clone();
            match HlsWriter::new(settings) {
                Ok(writer) => *self.writer.lock().unwrap() = Some(writer),
                Err(err) => {
                    gst::element_imp_error!(self, gst::LibraryError::Settings, ("{err}"));
                    return Err(gst::StateChangeError);
                }
            }
        }
        let result = self.parent_change_state(transition);
        if transition == gst::StateChange::ReadyToNull {
            // Wipes the keys.
            *self.writer.lock().unwrap() = None;
            self.fragments.lock().unwrap().clear();
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
