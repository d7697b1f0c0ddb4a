// SPDX-License-Identifier: MPL-2.0
//! What both elements share: pads, the key and mode properties, output buffers.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{LazyLock, Mutex};

use gst::glib;
use gst::prelude::*;
use gst_base::subclass::prelude::*;

use crate::compat::aes_cbc::CbcOptions;
use crate::format::Format;
use crate::keys::{KeyError, KeyFile, KeyText, SecretKey};
use crate::livekit::{self, MediaCodec, UnsupportedCaps, keys::KeyParams};
use crate::mode::{Framing, Mode};

/// The elements' author, as gst-inspect-1.0 shows it: the maintainers and
/// where to reach them (Cargo.toml's `authors`).
pub const AUTHOR: &str = env!("CARGO_PKG_AUTHORS");

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
/// The blurbs that differ are given: one key for the encrypter, several for the
/// decrypter, and each element's statistics.
pub fn key_properties(
    key_blurb: &str,
    key_file_blurb: &str,
    stats_blurb: &str,
) -> Vec<glib::ParamSpec> {
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
        glib::ParamSpecEnum::builder_with_default("framing", Framing::default())
            .nick("Framing")
            .blurb(
                "buffer: one encrypted buffer per buffer; stream: a byte stream of \
                 length-prefixed records, for files, TCP and pipes (both ends must agree)",
            )
            .mutable_ready()
            .build(),
        glib::ParamSpecBoxed::builder::<gst::Structure>("stats")
            .nick("Statistics")
            .blurb(stats_blurb)
            .read_only()
            .build(),
    ]
}

/// `aesenc`'s own properties, with its names, meaning and defaults, read by the
/// `aes-128-cbc` and `aes-256-cbc` modes.
pub fn cbc_properties() -> Vec<glib::ParamSpec> {
    vec![
        glib::ParamSpecString::builder("iv")
            .nick("IV")
            .blurb(
                "aes-*-cbc modes: initialization vector in hex (16 bytes), as aesenc's; \
                 all zeros unless set",
            )
            .mutable_ready()
            .build(),
        glib::ParamSpecBoolean::builder("serialize-iv")
            .nick("Serialize IV")
            .blurb("aes-*-cbc modes: the IV travels in the first 16 bytes of the first buffer")
            .default_value(false)
            .mutable_ready()
            .build(),
        glib::ParamSpecBoolean::builder("per-buffer-padding")
            .nick("Per-buffer padding")
            .blurb(
                "aes-*-cbc modes: pad every buffer with PKCS#7; false pads only the end of \
                 the stream (buffers then do not line up, and keys cannot rotate)",
            )
            .default_value(true)
            .mutable_ready()
            .build(),
    ]
}

/// The properties of `mode=livekit` both elements have: LiveKit's passphrase,
/// ratchet salt and key size.
pub fn livekit_properties() -> Vec<glib::ParamSpec> {
    vec![
        glib::ParamSpecString::builder("passphrase")
            .nick("Passphrase")
            .blurb(
                "mode=livekit: a passphrase instead of a key (PBKDF2-SHA256, 100,000 \
                 iterations, salt ratchet-salt), as LiveKit's clients join a room's \
                 end-to-end encryption; write-only. Of key, key-file and passphrase, the \
                 one set last is used",
            )
            .write_only()
            .mutable_playing()
            .build(),
        glib::ParamSpecString::builder("ratchet-salt")
            .nick("Ratchet salt")
            .blurb(
                "mode=livekit: the salt of every key derivation and ratchet, as LiveKit's \
                 ratchetSalt",
            )
            .default_value(Some(livekit::keys::DEFAULT_RATCHET_SALT))
            .mutable_ready()
            .build(),
        glib::ParamSpecUInt::builder("key-size")
            .nick("Key size")
            .blurb(
                "mode=livekit: AES key size in bits, 128 or 256, as LiveKit's keySize (the \
                 AES key is derived, whatever the length of the key given)",
            )
            .minimum(128)
            .maximum(256)
            .default_value(128)
            .mutable_ready()
            .build(),
    ]
}

/// Key settings both elements keep between runs.
#[derive(Debug)]
pub struct KeySettings {
    pub mode: Mode,
    /// The `key` property, applied with `key_id` at start.
    pub key: Option<KeyText>,
    pub key_id: u64,
    pub key_file: Option<PathBuf>,
    pub clear_keys_on_stop: bool,
    /// Properties set to a value that was refused before start, with why: the
    /// element then refuses to start, rather than run with a value the user did
    /// not ask for.
    pub invalid: BTreeMap<String, String>,
    /// `iv`, `serialize-iv`, `per-buffer-padding`.
    pub cbc: CbcOptions,
    pub framing: Framing,
    /// `ratchet-salt`, `key-size` (mode=livekit).
    pub livekit: KeyParams,
}

impl Default for KeySettings {
    fn default() -> Self {
        Self {
            mode: Mode::default(),
            key: None,
            key_id: 0,
            key_file: None,
            clear_keys_on_stop: true,
            invalid: BTreeMap::new(),
            cbc: CbcOptions::default(),
            framing: Framing::default(),
            livekit: KeyParams::default(),
        }
    }
}

impl KeySettings {
    /// The format the settings describe.
    pub fn format(&self) -> Format {
        self.mode.format(self.cbc)
    }

    /// A `key` property value. It is read at start (or at once while running), once
    /// the mode is known, so that `key` may come before `mode`.
    pub fn key_text(value: &glib::Value) -> Option<KeyText> {
        value
            .get::<Option<&str>>()
            .expect("type checked by GObject")
            .map(KeyText::new)
    }

    /// A `passphrase` property value, read as `key_text` is.
    pub fn passphrase_text(value: &glib::Value) -> Option<KeyText> {
        value
            .get::<Option<&str>>()
            .expect("type checked by GObject")
            .map(KeyText::passphrase)
    }

    /// Sets one of `cbc_properties()`; `Err` says why a value was refused.
    pub fn set_cbc_property(&mut self, name: &str, value: &glib::Value) -> Result<(), String> {
        match name {
            "iv" => {
                let text = value.get::<Option<&str>>().expect("type checked");
                let iv = match text {
                    None => [0; 16],
                    Some(text) => SecretKey::from_hex(text)
                        .ok()
                        .and_then(|iv| iv.as_bytes().try_into().ok())
                        .ok_or_else(|| {
                            format!(
                                "the IV must be 32 hex digits (16 bytes), not {} characters",
                                text.trim().chars().count()
                            )
                        })?,
                };
                self.cbc.iv = iv;
            }
            "serialize-iv" => self.cbc.serialize_iv = value.get().expect("type checked"),
            "per-buffer-padding" => {
                self.cbc.per_buffer_padding = value.get().expect("type checked")
            }
            other => unreachable!("no property {other}"),
        }
        Ok(())
    }

    /// The value of one of `cbc_properties()`.
    pub fn cbc_property(&self, name: &str) -> glib::Value {
        match name {
            "iv" => self
                .cbc
                .iv
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
                .to_value(),
            "serialize-iv" => self.cbc.serialize_iv.to_value(),
            "per-buffer-padding" => self.cbc.per_buffer_padding.to_value(),
            other => unreachable!("no property {other}"),
        }
    }

    /// At start: an error naming every property that was given a value it
    /// refused.
    pub fn check_valid(&self) -> Result<(), gst::ErrorMessage> {
        if self.invalid.is_empty() {
            return Ok(());
        }
        let problems = self
            .invalid
            .iter()
            .map(|(name, why)| format!("`{name}`: {why}"))
            .collect::<Vec<_>>()
            .join("; ");
        Err(gst::error_msg!(
            gst::LibraryError::Settings,
            ("Invalid settings, not starting: {problems}")
        ))
    }

    /// Wipes the keys held in the settings (on stop, unless asked to keep them).
    pub fn clear_keys(&mut self) {
        self.key = None;
        self.invalid.remove("key");
    }

    /// The current value of a setting that cannot change while running, for
    /// the message that refuses a change.
    fn value_in_use(&self, name: &str) -> String {
        match name {
            "mode" => self.mode.nick().to_owned(),
            "framing" => self.framing.nick().to_owned(),
            "iv" => "the IV set before start".to_owned(),
            "serialize-iv" => self.cbc.serialize_iv.to_string(),
            "per-buffer-padding" => self.cbc.per_buffer_padding.to_string(),
            "ratchet-salt" => format!("\"{}\"", self.livekit.ratchet_salt),
            "key-size" => (self.livekit.key_len * 8).to_string(),
            other => other.to_owned(),
        }
    }
}

/// Settings of both elements that take effect at start only.
const READY_ONLY: [&str; 7] = [
    "mode",
    "framing",
    "iv",
    "serialize-iv",
    "per-buffer-padding",
    "ratchet-salt",
    "key-size",
];

/// What the two elements share in handling keys handed to them.
pub trait KeyedElement: ElementImpl + ObjectSubclass<Type: IsA<gst::Element>> {
    fn category() -> &'static gst::DebugCategory;

    /// Runs `f` on the element's key settings, under its settings lock.
    fn with_key_settings<R>(&self, f: impl FnOnce(&mut KeySettings) -> R) -> R;

    /// Takes a key handed over by the `(kid, key)` action signal.
    fn accept_key(&self, kid: u64, key: KeyText) -> Result<(), KeyError>;

    /// `ratchet-key`: moves the key of `kid` one ratchet step on (mode=livekit);
    /// `Err` says why not.
    fn ratchet_key(&self, kid: u64) -> Result<(), String>;

    /// Whether the element has started (PAUSED or PLAYING): settings that take
    /// effect at start can no longer change.
    fn is_running(&self) -> bool;

    /// Reports a refused property value. While running, the value in use stays
    /// and a warning says so; before start the element will refuse to start,
    /// naming it. Call holding none of the element's locks: a bus sync handler
    /// may call back into the element.
    fn refuse_property(&self, name: &str, why: &dyn std::fmt::Display) {
        if self.is_running() {
            self.refuse_setting(name, why, "the value in use stays");
        } else {
            self.with_key_settings(|keys| keys.invalid.insert(name.to_owned(), why.to_string()));
            self.refuse_setting(
                name,
                why,
                "the element will not start until it is set right",
            );
        }
    }

    /// A property took a valid value: an earlier refusal no longer stands.
    fn accept_property(&self, name: &str) {
        self.with_key_settings(|keys| keys.invalid.remove(name));
    }

    /// Logs and posts a warning that a setting was refused.
    fn refuse_setting(&self, what: &str, why: &dyn std::fmt::Display, consequence: &str) {
        gst::warning!(Self::category(), imp = self, "{what} refused: {why}");
        gst::element_imp_warning!(
            self,
            gst::LibraryError::Settings,
            ("{what} refused: {why}; {consequence}")
        );
    }

    /// Posts a warning when a key file can be read by others than its owner.
    fn warn_if_exposed(&self, file: &KeyFile) {
        if let Some(exposure) = &file.exposed {
            gst::warning!(Self::category(), imp = self, "{exposure}");
            gst::element_imp_warning!(self, gst::ResourceError::Settings, ("{exposure}"));
        }
    }

    /// Sets `name` if it is one of the key or mode settings both elements share;
    /// returns whether it was.
    fn set_shared_property(&self, name: &str, value: &glib::Value) -> bool {
        if READY_ONLY.contains(&name) && self.is_running() {
            let in_use = self.with_key_settings(|keys| keys.value_in_use(name));
            self.refuse_setting(
                name,
                &"it cannot change while the element is running (PAUSED or PLAYING); set it \
                  in NULL or READY",
                &format!("{in_use} stays in use"),
            );
            return true;
        }
        match name {
            "mode" => self.with_key_settings(|keys| keys.mode = value.get().expect("type checked")),
            "key-id" => {
                let kid = value.get().expect("type checked");
                self.with_key_settings(|keys| keys.key_id = kid);
                gst::debug!(
                    Self::category(),
                    imp = self,
                    "key-id {kid} will go with the next key"
                );
            }
            "framing" => {
                self.with_key_settings(|keys| keys.framing = value.get().expect("type checked"))
            }
            "clear-keys-on-stop" => self.with_key_settings(|keys| {
                keys.clear_keys_on_stop = value.get().expect("type checked")
            }),
            "iv" | "serialize-iv" | "per-buffer-padding" => {
                match self.with_key_settings(|keys| keys.set_cbc_property(name, value)) {
                    Ok(()) => self.accept_property(name),
                    Err(why) => self.refuse_property(name, &why),
                }
            }
            "ratchet-salt" => {
                let salt = value.get::<Option<String>>().expect("type checked");
                let salt = salt.unwrap_or_else(|| livekit::keys::DEFAULT_RATCHET_SALT.to_owned());
                self.with_key_settings(|keys| keys.livekit.ratchet_salt = salt);
            }
            "key-size" => match value.get::<u32>().expect("type checked") {
                bits @ (128 | 256) => {
                    self.with_key_settings(|keys| keys.livekit.key_len = bits as usize / 8);
                    self.accept_property(name);
                }
                bits => self.refuse_property(name, &format!("{bits} bits: 128 or 256")),
            },
            _ => return false,
        }
        true
    }

    /// The value of `name` if it is one of the settings both elements share.
    fn shared_property(&self, name: &str) -> Option<glib::Value> {
        self.with_key_settings(|keys| match name {
            "mode" => Some(keys.mode.to_value()),
            "key-id" => Some(keys.key_id.to_value()),
            "key-file" => Some(keys.key_file.to_value()),
            "clear-keys-on-stop" => Some(keys.clear_keys_on_stop.to_value()),
            "framing" => Some(keys.framing.to_value()),
            "iv" | "serialize-iv" | "per-buffer-padding" => Some(keys.cbc_property(name)),
            "ratchet-salt" => Some(keys.livekit.ratchet_salt.to_value()),
            "key-size" => Some(((keys.livekit.key_len * 8) as u32).to_value()),
            _ => None,
        })
    }
}

/// The action signal `gboolean name (guint64 kid, gchararray key)`: hands the key
/// to `accept_key`, and returns whether it was taken.
pub fn key_signal<T: KeyedElement>(name: &'static str) -> glib::subclass::Signal {
    glib::subclass::Signal::builder(name)
        .param_types([u64::static_type(), String::static_type()])
        .return_type::<bool>()
        .action()
        .class_handler(move |args| {
            let element = args[0].get::<T::Type>().expect("signal arg");
            let kid = args[1].get::<u64>().expect("signal arg");
            // Read in place: the only copy we make is the wiped `KeyText`.
            let text = args[2].get::<Option<&str>>().expect("signal arg");
            let imp = element.imp();
            let accepted = match imp.accept_key(kid, KeyText::new(text.unwrap_or(""))) {
                Ok(()) => true,
                Err(err) => {
                    imp.refuse_setting(
                        &format!("{name} for KID {kid}"),
                        &err,
                        "the keys in use stay",
                    );
                    false
                }
            };
            Some(accepted.to_value())
        })
        .build()
}

/// The action signal `gboolean ratchet-key (guint64 key-id)`: hands the key
/// index to `ratchet_key`, and returns whether it ratcheted.
pub fn ratchet_signal<T: KeyedElement>() -> glib::subclass::Signal {
    glib::subclass::Signal::builder("ratchet-key")
        .param_types([u64::static_type()])
        .return_type::<bool>()
        .action()
        .class_handler(|args| {
            let element = args[0].get::<T::Type>().expect("signal arg");
            let kid = args[1].get::<u64>().expect("signal arg");
            let imp = element.imp();
            let ratcheted = match imp.ratchet_key(kid) {
                Ok(()) => {
                    gst::info!(T::category(), imp = imp, "ratcheted the key of KID {kid}");
                    true
                }
                Err(why) => {
                    imp.refuse_setting(
                        &format!("ratchet-key for KID {kid}"),
                        &why,
                        "keys unchanged",
                    );
                    false
                }
            };
            Some(ratcheted.to_value())
        })
        .build()
}

/// The codec LiveKit's frames are laid out for, from the caps' first
/// structure; caps that name none are a negotiation error, posted by `imp`.
pub fn livekit_codec<T: KeyedElement>(
    imp: &T,
    caps: &gst::CapsRef,
) -> Result<MediaCodec, gst::LoggableError> {
    let codec = match caps.structure(0) {
        Some(structure) => MediaCodec::from_caps(
            structure.name(),
            structure.get::<&str>("stream-format").ok(),
        ),
        None => Err(UnsupportedCaps("empty caps".into())),
    };
    codec.map_err(|why| {
        gst::element_imp_error!(imp, gst::CoreError::Negotiation, ("{why}"));
        gst::loggable_error!(T::category(), "{why}")
    })
}

/// Answers a SCHEDULING query on the src pad: push mode only. Our output sizes
/// differ from the input's, so byte ranges pulled through us could not be mapped
/// onto the input; downstream demuxers then work in push mode.
pub fn answer_scheduling(direction: gst::PadDirection, query: &mut gst::QueryRef) -> bool {
    if direction != gst::PadDirection::Src {
        return false;
    }
    let gst::QueryViewMut::Scheduling(scheduling) = query.view_mut() else {
        return false;
    };
    scheduling.set(gst::SchedulingFlags::SEQUENTIAL, 1, -1, 0);
    scheduling.add_scheduling_modes([gst::PadMode::Push]);
    true
}

/// Answers a byte SEEKING query "not seekable": a byte stream of records is
/// written and read once, in order. Returns whether `query` was one.
pub fn refuse_byte_seeking(query: &mut gst::QueryRef) -> bool {
    match query.view_mut() {
        gst::QueryViewMut::Seeking(seeking) if seeking.format() == gst::Format::Bytes => {
            seeking.set(false, gst::format::Bytes::ZERO, gst::format::Bytes::NONE);
            true
        }
        _ => false,
    }
}

/// Runs `read` on `buffer`'s bytes: on its only memory, when it has one, which
/// costs less than mapping the whole buffer.
pub fn with_readable<R>(
    buffer: &gst::BufferRef,
    read: impl FnOnce(&[u8]) -> R,
) -> Result<R, gst::FlowError> {
    if buffer.n_memory() == 1 {
        let map = buffer
            .peek_memory(0)
            .map_readable()
            .map_err(|_| gst::FlowError::Error)?;
        Ok(read(&map))
    } else {
        let map = buffer.map_readable().map_err(|_| gst::FlowError::Error)?;
        Ok(read(&map))
    }
}

/// Free bytes around a buffer's bytes in its only memory, which the buffer may
/// grow into (upstream allocated it with the prefix and padding we proposed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Room {
    pub before: usize,
    pub after: usize,
}

/// The room around `buffer`'s bytes, when they are all in one system memory of
/// the buffer's own: not read-only, and not a part of another memory (whose
/// free bytes would be its neighbours' bytes).
pub fn room(buffer: &gst::BufferRef) -> Option<Room> {
    if buffer.n_memory() != 1 {
        return None;
    }
    let memory = buffer.peek_memory(0);
    if memory.parent().is_some()
        || memory.flags().contains(gst::MemoryFlags::READONLY)
        || !is_system_memory(memory)
    {
        return None;
    }
    let before = memory.offset();
    Some(Room {
        before,
        after: memory.maxsize() - before - memory.size(),
    })
}

/// Whether `memory` is of the default allocator's type, `GST_ALLOCATOR_SYSMEM`:
/// one pointer comparison for the memories of the default allocator itself.
fn is_system_memory(memory: &gst::MemoryRef) -> bool {
    const SYSTEM_MEMORY: &str = "SystemMemory";
    static SYSTEM: LazyLock<Option<gst::Allocator>> =
        LazyLock::new(|| gst::Allocator::find(Some(SYSTEM_MEMORY)));
    match (memory.allocator(), SYSTEM.as_ref()) {
        (Some(allocator), Some(system)) if allocator == system => true,
        _ => memory.is_type(SYSTEM_MEMORY),
    }
}

/// Asks the CPU to bring the first cache line of `value` in, for a value read
/// soon through a pointer only just found: its load then overlaps the work in
/// between instead of stalling the first read (with a thousand streams taking
/// turns, a stream's keys are rarely in the caches).
#[inline(always)]
pub fn prefetch<T>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: SSE is part of x86_64; a prefetch is a hint and never faults.
    unsafe {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        _mm_prefetch::<_MM_HINT_T0>(std::ptr::from_ref(value).cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}

/// A buffer's only memory, mapped for writing where it lies, then resized.
/// Without `gst_memory_is_writable`, which `BufferRef::peek_memory_mut` and
/// `gst_memory_resize` each call, and which walks up to the buffer under atomic
/// locks (the two: a sixth of what the decrypter costs on small buffers): the
/// buffer is writable (`&mut`), and mapping the memory for writing fails when it
/// is read-only or shared with another buffer, which is all that check adds.
pub struct SoleMemoryMap<'a> {
    memory: *mut gst::ffi::GstMemory,
    /// Written by `gst_memory_map` in the caller's `MapSlot`.
    info: *mut gst::ffi::GstMapInfo,
    _borrows: std::marker::PhantomData<(&'a mut gst::BufferRef, &'a mut MapSlot)>,
}

/// Where a `SoleMemoryMap` keeps its `GstMapInfo`: on the caller's stack, where
/// `gst_memory_map` writes it and nothing copies it. Copying it (as returning it
/// inside the map did) reads its fields in 16-byte loads over the 8-byte stores
/// that just wrote them, which cannot be forwarded and stall until those stores
/// reach the cache: 7-20 ns a buffer here, up to a fifth of an element's own
/// cost at 188 B.
pub struct MapSlot(std::mem::MaybeUninit<gst::ffi::GstMapInfo>);

impl Default for MapSlot {
    fn default() -> Self {
        Self(std::mem::MaybeUninit::uninit())
    }
}

impl<'a> SoleMemoryMap<'a> {
    pub fn writable(buffer: &'a mut gst::BufferRef, slot: &'a mut MapSlot) -> Option<Self> {
        if buffer.n_memory() != 1 {
            return None;
        }
        // SAFETY: the buffer has a memory at index 0, which it keeps while it
        // is borrowed; the slot is written by a mapping that succeeds, and read
        // only then.
        unsafe {
            let memory = gst::ffi::gst_buffer_peek_memory(buffer.as_mut_ptr(), 0);
            let info = slot.0.as_mut_ptr();
            let mapped = gst::ffi::gst_memory_map(memory, info, gst::ffi::GST_MAP_WRITE);
            // Built only once mapped: dropping it unmaps.
            (mapped != glib::ffi::GFALSE).then(|| Self {
                memory,
                info,
                _borrows: std::marker::PhantomData,
            })
        }
    }

    /// The buffer's bytes.
    pub fn bytes(&mut self) -> &mut [u8] {
        // SAFETY: mapped for writing, `size` bytes at `data`, while `self` lives.
        unsafe {
            let (data, size) = ((*self.info).data, (*self.info).size);
            if size == 0 {
                return &mut [];
            }
            std::slice::from_raw_parts_mut(data, size)
        }
    }

    /// All the bytes the memory was allocated with, and where the buffer's
    /// bytes begin in them. Only for a memory `room` found the buffer's own.
    pub fn whole(&mut self, _room: Room) -> (&mut [u8], usize) {
        // SAFETY: mapped for writing; gst_memory_map returns the memory's bytes
        // at `offset` into the `maxsize` bytes its allocator gave it, which a
        // memory that is no part of another owns (`room`).
        unsafe {
            let offset = (*self.memory).offset;
            let whole = std::slice::from_raw_parts_mut(
                (*self.info).data.sub(offset),
                (*self.memory).maxsize,
            );
            (whole, offset)
        }
    }

    /// Unmaps the memory and keeps only `range` of its bytes: what
    /// `gst_memory_resize` does, less its `gst_memory_is_writable` (see above).
    pub fn trim(self, range: Range<usize>) {
        // SAFETY: `memory` is mapped, so its offset and mapped size can be read.
        let (offset, size) = unsafe { ((*self.memory).offset, (*self.info).size) };
        assert!(range.end <= size, "trimmed within the memory");
        self.resize(offset + range.start..offset + range.end);
    }

    /// Unmaps the memory and makes `range` of all its bytes (as `whole` gives
    /// them) the buffer's.
    pub fn resize(self, range: Range<usize>) {
        let memory = self.memory;
        drop(self);
        // SAFETY: the memory is the writable buffer's own and unshared (it
        // mapped for writing), and `range` lies within it.
        unsafe {
            assert!(range.end <= (*memory).maxsize, "resized within the memory");
            let (start, end) = ((*memory).offset, (*memory).offset + (*memory).size);
            let flags = &mut (*memory).mini_object.flags;
            // Bytes that were the buffer's are no longer known to be zero.
            if range.start > start {
                *flags &= !gst::ffi::GST_MEMORY_FLAG_ZERO_PREFIXED;
            }
            if range.end < end {
                *flags &= !gst::ffi::GST_MEMORY_FLAG_ZERO_PADDED;
            }
            (*memory).offset = range.start;
            (*memory).size = range.len();
        }
    }
}

impl Drop for SoleMemoryMap<'_> {
    fn drop(&mut self) {
        // SAFETY: mapped in `writable`, unmapped once.
        unsafe { gst::ffi::gst_memory_unmap(self.memory, self.info) }
    }
}

/// Largest output written into a `Vec` and then wrapped: for small buffers that
/// measured cheaper than allocating and mapping a `GstMemory`. Larger outputs go
/// into a `GstMemory`, which spares zeroing their bytes first.
const VEC_MEMORY_MAX: usize = 65536;

/// A new memory holding what `fill` writes into its first `max_len` bytes;
/// `fill` returns how many bytes it wrote.
pub fn new_memory<E>(
    max_len: usize,
    fill: impl FnOnce(&mut [u8]) -> Result<usize, E>,
) -> Result<gst::Memory, E> {
    if max_len <= VEC_MEMORY_MAX {
        let mut out = vec![0u8; max_len];
        let len = fill(&mut out)?;
        out.truncate(len);
        return Ok(gst::Memory::from_mut_slice(out));
    }
    let mut memory = gst::Memory::with_size(max_len);
    let memory_ref = memory.get_mut().expect("new memory");
    let len = fill(&mut memory_ref.map_writable().expect("system memory maps"))?;
    memory_ref.resize(..len);
    Ok(memory)
}

/// Input that arrives without caps. BaseTransform refuses buffers before caps
/// as "not negotiated", yet files, pipes, sockets and test sources send none,
/// and our caps are ANY in and out: such buffers are held here instead, and
/// `generate_output` takes them from here.
#[derive(Default)]
pub struct CaplessInput {
    /// Whether caps have been set since start (BaseTransform takes buffers
    /// itself then).
    negotiated: AtomicBool,
    queued: Mutex<Option<gst::Buffer>>,
}

impl CaplessInput {
    /// From `set_caps` (true) and `start`/`stop` (false).
    pub fn set_negotiated(&self, negotiated: bool) {
        self.negotiated.store(negotiated, Ordering::Relaxed);
    }

    /// `submit_input_buffer`: keeps `buffer` when there are no caps; otherwise
    /// hands it back for BaseTransform.
    pub fn submit(&self, buffer: gst::Buffer) -> Option<gst::Buffer> {
        if self.negotiated.load(Ordering::Relaxed) {
            return Some(buffer);
        }
        *self.queued.lock().unwrap() = Some(buffer);
        None
    }

    /// The next input buffer: one kept here, or BaseTransform's queued one.
    pub fn take<T>(&self, imp: &T) -> Option<gst::Buffer>
    where
        T: BaseTransformImpl,
        <T as ObjectSubclass>::ParentType: IsA<gst_base::BaseTransform>,
    {
        if !self.negotiated.load(Ordering::Relaxed)
            && let Some(buffer) = self.queued.lock().unwrap().take()
        {
            return Some(buffer);
        }
        imp.take_queued_buffer()
    }
}

/// BaseTransform's `set_caps`, noting that buffers now come with caps.
pub fn set_caps<T>(
    imp: &T,
    input: &CaplessInput,
    incaps: &gst::Caps,
    outcaps: &gst::Caps,
) -> Result<(), gst::LoggableError>
where
    T: BaseTransformImpl,
    <T as ObjectSubclass>::ParentType: IsA<gst_base::BaseTransform>,
{
    imp.parent_set_caps(incaps, outcaps)?;
    input.set_negotiated(true);
    Ok(())
}

/// BaseTransform's `submit_input_buffer`, keeping buffers that come without
/// caps in `input`.
pub fn submit_input_buffer<T>(
    imp: &T,
    input: &CaplessInput,
    is_discont: bool,
    inbuf: gst::Buffer,
) -> Result<gst::FlowSuccess, gst::FlowError>
where
    T: BaseTransformImpl,
    <T as ObjectSubclass>::ParentType: IsA<gst_base::BaseTransform>,
{
    match input.submit(inbuf) {
        Some(inbuf) => imp.parent_submit_input_buffer(is_discont, inbuf),
        None => Ok(gst::FlowSuccess::Ok),
    }
}

/// BaseTransform's `generate_output` for an element transforming in place: the
/// input buffer, made writable (copied only if it is shared), goes straight to
/// `transform_ip`, without BaseTransform's per-buffer round trip through
/// `prepare_output_buffer` and back (a fifth of the element's own cost on small
/// buffers).
pub fn generate_in_place<T>(
    imp: &T,
    input: &CaplessInput,
) -> Result<gst_base::subclass::base_transform::GenerateOutputSuccess, gst::FlowError>
where
    T: BaseTransformImpl,
    <T as ObjectSubclass>::ParentType: IsA<gst_base::BaseTransform>,
{
    use gst_base::subclass::base_transform::GenerateOutputSuccess;
    let Some(mut buffer) = input.take(imp) else {
        return Ok(GenerateOutputSuccess::NoOutput);
    };
    Ok(match imp.transform_ip(buffer.make_mut())? {
        gst_base::BASE_TRANSFORM_FLOW_DROPPED => GenerateOutputSuccess::Dropped,
        _ => GenerateOutputSuccess::Buffer(buffer),
    })
}

/// Keeps the output in plain system memory, allocated per buffer by BaseTransform
/// at the size `transform_size` gives: our output size varies per buffer, so a
/// downstream pool (buffers of one fixed size) or special allocator does not fit.
pub fn system_memory_allocation(query: &mut gst::query::Allocation) {
    while query.allocation_pools().len() > 0 {
        query.remove_nth_allocation_pool(0);
    }
    while query.allocation_params().len() > 0 {
        query.remove_nth_allocation_param(0);
    }
}
