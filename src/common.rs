// SPDX-License-Identifier: MPL-2.0
//! What both elements share: pads, the key properties, output buffers.

use std::path::PathBuf;
use std::sync::LazyLock;

use gst::glib;
use gst::prelude::*;
use gst_base::subclass::prelude::*;

use crate::keys::{KeyError, SecretKey};
use crate::mode::Mode;

/// Sink and src pads with caps ANY: the caps that come in go out unchanged.
pub fn pad_templates() -> &'static [gst::PadTemplate] {
    static TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
        let caps = gst::Caps::new_any();
        vec![
            gst::PadTemplate::new(
                "src",
                gst::PadDirection::Src,
                gst::PadPresence::Always,
                &caps,
            )
            .unwrap(),
            gst::PadTemplate::new(
                "sink",
                gst::PadDirection::Sink,
                gst::PadPresence::Always,
                &caps,
            )
            .unwrap(),
        ]
    });
    TEMPLATES.as_ref()
}

/// The properties both elements have, in the order `gst-inspect-1.0` shows them.
/// `key_file_blurb` differs: one key for the encrypter, several for the decrypter.
pub fn key_properties(key_blurb: &str, key_file_blurb: &str) -> Vec<glib::ParamSpec> {
    vec![
        glib::ParamSpecEnum::builder_with_default("mode", Mode::default())
            .nick("Mode")
            .blurb("Cipher suite; both ends must use the same one")
            .mutable_ready()
            .build(),
        glib::ParamSpecString::builder("key")
            .nick("Key")
            .blurb(key_blurb)
            .write_only()
            .mutable_playing()
            .build(),
        glib::ParamSpecUInt64::builder("key-id")
            .nick("Key ID")
            .blurb(
                "KID (SFrame key id) that goes with `key`. Before start, `key` and `key-id` \
                 are applied together, in any order; while playing, setting `key` uses the \
                 key-id in force at that moment",
            )
            .default_value(0)
            .mutable_playing()
            .build(),
        glib::ParamSpecString::builder("key-file")
            .nick("Key file")
            .blurb(key_file_blurb)
            .mutable_playing()
            .build(),
        glib::ParamSpecBoolean::builder("clear-keys-on-stop")
            .nick("Clear keys on stop")
            .blurb(
                "Wipe all keys when the element stops (PAUSED to READY); false keeps them \
                 for the next start",
            )
            .default_value(true)
            .mutable_playing()
            .build(),
        glib::ParamSpecBoxed::builder::<gst::Structure>("stats")
            .nick("Statistics")
            .blurb("Counters of the current or last run (see the README for the fields)")
            .read_only()
            .build(),
    ]
}

/// Key settings both elements keep between runs.
#[derive(Debug)]
pub struct KeySettings {
    pub mode: Mode,
    /// The `key` property, applied with `key_id` at start.
    pub key: Option<SecretKey>,
    pub key_id: u64,
    pub key_file: Option<PathBuf>,
    pub clear_keys_on_stop: bool,
    /// Why the last key offered was refused, repeated in the start error when that
    /// leaves the element without a key.
    pub refused: Option<String>,
}

impl Default for KeySettings {
    fn default() -> Self {
        Self {
            mode: Mode::default(),
            key: None,
            key_id: 0,
            key_file: None,
            clear_keys_on_stop: true,
            refused: None,
        }
    }
}

impl KeySettings {
    /// Parses a `key` property value. Its length is checked against the mode at start
    /// (or at once while running), so that `key` may come before `mode`.
    pub fn parse_key(value: &glib::Value) -> Result<Option<SecretKey>, KeyError> {
        value
            .get::<Option<&str>>()
            .expect("type checked by GObject")
            .map(SecretKey::from_hex)
            .transpose()
    }

    /// The hint appended to "no key" errors.
    pub fn refused_hint(&self) -> String {
        self.refused
            .as_ref()
            .map(|why| format!(" (the last key given was refused: {why})"))
            .unwrap_or_default()
    }

    /// Wipes the keys held in the settings (on stop, unless asked to keep them).
    pub fn clear_keys(&mut self) {
        self.key = None;
        self.refused = None;
    }
}

/// What the two elements share in handling keys handed to them.
pub trait KeyedElement: ElementImpl + ObjectSubclass<Type: IsA<gst::Element>> {
    fn category() -> &'static gst::DebugCategory;

    /// Runs `f` on the element's key settings, under its settings lock.
    fn with_key_settings<R>(&self, f: impl FnOnce(&mut KeySettings) -> R) -> R;

    /// Takes a key handed over by the `(kid, hex)` action signal.
    fn accept_key(&self, kid: u64, key: SecretKey) -> Result<(), KeyError>;

    /// Records and reports a refused key; the key in use stays. Call holding none
    /// of the element's locks: a bus sync handler may call back into the element.
    fn refuse(&self, what: &str, err: KeyError) {
        gst::warning!(Self::category(), imp = self, "{what} refused: {err}");
        self.with_key_settings(|keys| keys.refused = Some(err.to_string()));
        gst::element_imp_warning!(
            self,
            gst::LibraryError::Settings,
            ("{what} refused: {err}; the previous key stays in use")
        );
    }
}

/// The action signal `gboolean name (guint64 kid, gchararray hex)`: parses the key,
/// hands it to `accept_key`, and returns whether it was taken.
pub fn key_signal<T: KeyedElement>(name: &'static str) -> glib::subclass::Signal {
    glib::subclass::Signal::builder(name)
        .param_types([u64::static_type(), String::static_type()])
        .return_type::<bool>()
        .action()
        .class_handler(move |args| {
            let element = args[0].get::<T::Type>().expect("signal arg");
            let kid = args[1].get::<u64>().expect("signal arg");
            let hex = args[2].get::<Option<String>>().expect("signal arg");
            let imp = element.imp();
            let result = SecretKey::from_hex(hex.as_deref().unwrap_or(""))
                .and_then(|key| imp.accept_key(kid, key));
            let accepted = match result {
                Ok(()) => true,
                Err(err) => {
                    imp.refuse(&format!("{name} for KID {kid}"), err);
                    false
                }
            };
            Some(accepted.to_value())
        })
        .build()
}

/// A fresh output buffer of `size` bytes carrying the input's flags, timestamps,
/// offsets and metas. Our output size varies per buffer, so we never take buffers
/// from a downstream pool, whose buffers have one fixed size.
pub fn output_buffer<T: BaseTransformImpl>(
    imp: &T,
    inbuf: gst_base::subclass::base_transform::InputBuffer,
    size: usize,
) -> Result<gst_base::subclass::base_transform::PrepareOutputBufferSuccess, gst::FlowError> {
    use gst_base::subclass::base_transform::{InputBuffer, PrepareOutputBufferSuccess};
    let inbuf: &gst::BufferRef = match inbuf {
        InputBuffer::Readable(buf) => buf,
        InputBuffer::Writable(buf) => buf,
    };
    let mut outbuf = gst::Buffer::with_size(size).map_err(|_| gst::FlowError::Error)?;
    imp.copy_metadata(inbuf, outbuf.get_mut().expect("new buffer is writable"))
        .map_err(|_| gst::FlowError::Error)?;
    Ok(PrepareOutputBufferSuccess::Buffer(outbuf))
}
