// SPDX-License-Identifier: MPL-2.0
//! One front for every format the elements speak: keys made ready for a format,
//! and the per-stream state that encrypts and decrypts buffer after buffer. No
//! GStreamer in here; the elements drive it.

use std::ops::{Deref, Range};

use crate::compat::aes_cbc::{AesCbc, CbcDecrypter, CbcEncrypter, CbcOptions};
use crate::compat::qq_tea::{self, QqTea};
use crate::compat::sm4_ecb::{self, Sm4Ecb};
use crate::compat::{Invalid, first_valid, pick_by_padding};
use crate::keys::{KeyError, KeyText, SecretKey};
use crate::livekit::keys::{FrameKey, KeyParams, Material};
use crate::livekit::{self, Layout, MediaCodec, SealError};
use crate::sframe::{
    CipherSuite, CounterError, FrameError, MAX_OVERHEAD, SealedParts, SendCounter, SframeKey,
};

/// How buffers are turned into ciphertext and back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One SFrame (RFC 9605) per buffer.
    Sframe(CipherSuite),
    /// SM4-ECB, PKCS#7 per buffer.
    Sm4Ecb,
    /// QQ TEA "symmetry_encrypt" per buffer.
    QqTea,
    /// AES-CBC as gst-plugins-bad's `aesenc`/`aesdec` (key of 16 or 32 bytes).
    AesCbc { key_len: usize, options: CbcOptions },
    /// LiveKit's end-to-end encryption frames (`crate::livekit`): the codec's
    /// header in the clear, the key index in a trailer.
    Livekit,
}

impl Format {
    /// Key lengths the format accepts, in bytes.
    pub fn key_lens(&self) -> &'static [usize] {
        match self {
            Format::Sframe(suite) => suite.base_key_lens(),
            Format::Sm4Ecb => &[Sm4Ecb::KEY_LEN],
            Format::QqTea => &[QqTea::KEY_LEN],
            Format::AesCbc { key_len: 32, .. } => &[32],
            Format::AesCbc { .. } => &[16],
            // The raw key LiveKit's HKDF starts from.
            Format::Livekit => &[16, 32],
        }
    }

    /// Reads a key as this format takes it; `mode` names the mode in errors.
    pub fn parse_key(&self, text: &KeyText, mode: &str) -> Result<SecretKey, KeyError> {
        // QQ TEA keys are held as 16 characters of text.
        let raw_text_len = matches!(self, Format::QqTea).then_some(QqTea::KEY_LEN);
        text.parse(self.key_lens(), raw_text_len, mode)
    }

    /// Whether each buffer names its key (SFrame's KID); otherwise a decrypter
    /// tries the keys it holds.
    pub fn carries_kid(&self) -> bool {
        matches!(self, Format::Sframe(_))
    }

    /// Checks that `kid` can name a key in this format: LiveKit's key index is
    /// one byte.
    pub fn check_kid(&self, kid: u64, mode: &str) -> Result<(), KeyError> {
        if *self == Format::Livekit && kid > u64::from(u8::MAX) {
            return Err(KeyError::KeyIndex {
                kid,
                mode: mode.to_owned(),
            });
        }
        Ok(())
    }

    /// Whether every encrypted buffer decrypts on its own into one buffer: all but
    /// aesenc's unpadded stream, one CBC message across buffers. Such a buffer
    /// decrypts where it lies: its plaintext fits in its ciphertext, and a key
    /// that fails leaves it as it came.
    pub fn decrypts_per_buffer(&self) -> bool {
        !matches!(
            self,
            Format::AesCbc {
                options: CbcOptions {
                    per_buffer_padding: false,
                    ..
                },
                ..
            }
        )
    }

    /// The format's code in a `framing=stream` header (`crate::framing`): the SFrame
    /// suite's IANA value, or 0xFF01-0xFF04 for SM4-ECB, QQ TEA, AES-128-CBC and
    /// AES-256-CBC.
    pub fn stream_code(&self) -> u16 {
        match self {
            Format::Sframe(suite) => suite.id(),
            Format::Sm4Ecb => 0xFF01,
            Format::QqTea => 0xFF02,
            Format::AesCbc { key_len: 32, .. } => 0xFF04,
            Format::AesCbc { .. } => 0xFF03,
            Format::Livekit => 0xFF10,
        }
    }

    /// Whether a buffer with room behind it encrypts where it lies, its output
    /// starting where its input does (`Encoder::encrypt_in_room`).
    pub fn encrypts_in_room(&self) -> bool {
        matches!(self, Format::Sm4Ecb | Format::AesCbc { .. })
    }

    /// Most bytes one buffer of `input_len` bytes becomes when encrypted.
    pub fn max_encrypted_len(&self, input_len: usize) -> usize {
        match self {
            Format::Sframe(_) => input_len + MAX_OVERHEAD,
            Format::Sm4Ecb => Sm4Ecb::encrypted_len(input_len),
            Format::QqTea => QqTea::encrypted_len(input_len),
            Format::AesCbc { .. } => CbcEncrypter::max_output_len(input_len),
            // Escaping adds at most one byte in three, normalized start codes one
            // in four of the header.
            Format::Livekit => input_len + input_len / 2 + 2 * livekit::OVERHEAD,
        }
    }
}

enum KeyCipher {
    Sframe(SframeKey),
    Sm4Ecb(Sm4Ecb),
    QqTea(QqTea),
    AesCbc(AesCbc),
    Livekit(FrameKey),
}

/// A key ready for one format, with its key schedule (and for SFrame its derived
/// key and salt) built once.
pub struct ReadyKey {
    kid: u64,
    cipher: KeyCipher,
}

impl ReadyKey {
    /// `key` must have one of `format.key_lens()`. LiveKit keys are made with
    /// LiveKit's default parameters (see `from_text` for others).
    pub fn new(format: &Format, kid: u64, key: &SecretKey) -> Self {
        let bytes = key.as_bytes();
        let cipher = match format {
            Format::Sframe(suite) => KeyCipher::Sframe(SframeKey::derive(*suite, kid, bytes)),
            Format::Sm4Ecb => KeyCipher::Sm4Ecb(Sm4Ecb::new(bytes)),
            Format::QqTea => KeyCipher::QqTea(QqTea::new(bytes)),
            Format::AesCbc { .. } => KeyCipher::AesCbc(AesCbc::new(bytes)),
            Format::Livekit => KeyCipher::Livekit(FrameKey::new(
                Material::from_raw_key(bytes),
                &KeyParams::default(),
            )),
        };
        Self { kid, cipher }
    }

    /// `text` read as `format` takes keys (a LiveKit passphrase too), made ready
    /// with `params`; `mode` names the mode in errors.
    pub fn from_text(
        format: &Format,
        params: &KeyParams,
        kid: u64,
        text: &KeyText,
        mode: &str,
    ) -> Result<Self, KeyError> {
        if *format != Format::Livekit {
            return Ok(Self::new(format, kid, &format.parse_key(text, mode)?));
        }
        let material = if text.is_passphrase() {
            Material::from_passphrase(text.as_str())
        } else {
            Material::from_raw_key(format.parse_key(text, mode)?.as_bytes())
        };
        Ok(Self::livekit(kid, FrameKey::new(material, params)))
    }

    /// A LiveKit key for key index `kid`.
    pub fn livekit(kid: u64, key: FrameKey) -> Self {
        Self {
            kid,
            cipher: KeyCipher::Livekit(key),
        }
    }

    pub fn frame_key(&self) -> Option<&FrameKey> {
        match &self.cipher {
            KeyCipher::Livekit(key) => Some(key),
            _ => None,
        }
    }

    pub fn kid(&self) -> u64 {
        self.kid
    }

    pub fn sframe(&self) -> Option<&SframeKey> {
        match &self.cipher {
            KeyCipher::Sframe(key) => Some(key),
            _ => None,
        }
    }

    fn aes_cbc(&self) -> Option<&AesCbc> {
        match &self.cipher {
            KeyCipher::AesCbc(key) => Some(key),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncryptError {
    /// The key has protected as many frames as its suite allows.
    Exhausted {
        limit: u64,
    },
    Frame(FrameError),
    /// The system's random generator failed (QQ TEA framing, SFrame's first
    /// counter).
    Random,
    /// LiveKit: a frame its codec's clear header does not fit in.
    Livekit(SealError),
    /// LiveKit: the codec is not known (the caps name it).
    NoCodec,
}

impl From<CounterError> for EncryptError {
    fn from(e: CounterError) -> Self {
        match e {
            CounterError::Exhausted { limit } => EncryptError::Exhausted { limit },
            CounterError::NoRandom => EncryptError::Random,
        }
    }
}

impl std::fmt::Display for EncryptError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EncryptError::Exhausted { limit } => write!(f, "key used for {limit} frames"),
            EncryptError::Frame(e) => e.fmt(f),
            EncryptError::Random => write!(f, "no random bytes from the system"),
            EncryptError::Livekit(e) => e.fmt(f),
            EncryptError::NoCodec => write!(
                f,
                "mode=livekit needs caps that name the codec (VP8, VP9, H.264, H.265 or audio): \
                 its frames keep the codec's header clear"
            ),
        }
    }
}

/// LiveKit's sending side: the frames' codec, and where IVs come from. An IV
/// is 4 random bytes drawn for each key taken into use, then a counter that
/// never repeats under the key (`SendCounter`: a process-wide registry, a
/// random start across processes). Two runs with the same key repeat an IV only
/// if both the random bytes and the counter ranges meet: at most
/// (a + b) / 2^96 for runs of a and b frames.
pub struct LivekitEncoder {
    codec: Option<MediaCodec>,
    counter: SendCounter,
    prefix: Option<[u8; 4]>,
}

/// Frames one LiveKit key may protect: NIST SP 800-38D's bound for one GCM key.
pub const LIVEKIT_MAX_FRAMES_PER_KEY: u64 = 1 << 32;

impl LivekitEncoder {
    fn new(key: &ReadyKey) -> Self {
        let key = key.frame_key().expect("a LiveKit key");
        Self {
            codec: None,
            counter: SendCounter::new(key.fingerprint(), LIVEKIT_MAX_FRAMES_PER_KEY),
            prefix: None,
        }
    }

    /// The next frame's layout, IV and key index (the KID: the elements keep
    /// LiveKit's below 256, as it travels in one byte).
    fn next_frame(
        &mut self,
        key: &ReadyKey,
        frame: &[u8],
        keyframe: bool,
    ) -> Result<(Layout, [u8; livekit::IV_LEN], u8), EncryptError> {
        let codec = self.codec.ok_or(EncryptError::NoCodec)?;
        let layout = Layout::of(codec, frame, keyframe);
        Ok((layout, self.next_iv()?, key.kid as u8))
    }

    fn next_iv(&mut self) -> Result<[u8; livekit::IV_LEN], EncryptError> {
        let prefix = match self.prefix {
            Some(prefix) => prefix,
            None => {
                let mut prefix = [0u8; 4];
                getrandom::fill(&mut prefix).map_err(|_| EncryptError::Random)?;
                *self.prefix.insert(prefix)
            }
        };
        let mut iv = [0u8; livekit::IV_LEN];
        iv[..4].copy_from_slice(&prefix);
        iv[4..].copy_from_slice(&self.counter.next_counter()?.to_be_bytes());
        Ok(iv)
    }
}

/// The encrypting side of one stream.
pub enum Encoder {
    /// The counter of the key in use.
    Sframe(SendCounter),
    Sm4Ecb,
    /// Random bytes for each message's framing.
    QqTea(qq_tea::RandomPool),
    AesCbc(CbcEncrypter),
    Livekit(LivekitEncoder),
}

impl Encoder {
    pub fn new(format: &Format, key: &ReadyKey) -> Self {
        match format {
            Format::Sframe(_) => Encoder::Sframe(Self::counter_for(key)),
            Format::Sm4Ecb => Encoder::Sm4Ecb,
            Format::QqTea => Encoder::QqTea(qq_tea::RandomPool::new()),
            Format::AesCbc { options, .. } => Encoder::AesCbc(CbcEncrypter::new(*options)),
            Format::Livekit => Encoder::Livekit(LivekitEncoder::new(key)),
        }
    }

    fn counter_for(key: &ReadyKey) -> SendCounter {
        let key = key.sframe().expect("an SFrame key");
        SendCounter::new(key.fingerprint(), key.suite().max_frames_per_key())
    }

    /// `key` replaces the key in use from the next buffer on.
    pub fn switch_key(&mut self, key: &ReadyKey) {
        match self {
            Encoder::Sframe(counter) => *counter = Self::counter_for(key),
            Encoder::Livekit(encoder) => {
                let codec = encoder.codec;
                *encoder = LivekitEncoder::new(key);
                encoder.codec = codec;
            }
            _ => {}
        }
    }

    /// LiveKit: the codec of the frames to come, from the caps.
    pub fn set_codec(&mut self, codec: MediaCodec) {
        if let Encoder::Livekit(encoder) = self {
            encoder.codec = Some(codec);
        }
    }

    /// Encrypts a frame into a new one, for the formats whose output size the
    /// frame's content decides (LiveKit); `keyframe` says whether the frame is a
    /// key frame. `None`: use `encrypt` or `encrypt_in_place`.
    pub fn encrypt_frame(
        &mut self,
        key: &ReadyKey,
        frame: &[u8],
        keyframe: bool,
    ) -> Option<Result<Vec<u8>, EncryptError>> {
        let (Encoder::Livekit(encoder), KeyCipher::Livekit(frame_key)) = (self, &key.cipher) else {
            return None;
        };
        Some((|| {
            // Empty frames (audio DTX) carry nothing to protect.
            if frame.is_empty() {
                return Ok(Vec::new());
            }
            let (layout, iv, key_index) = encoder.next_frame(key, frame, keyframe)?;
            livekit::seal(frame_key.aead(), key_index, &iv, layout, frame)
                .map_err(EncryptError::Livekit)
        })())
    }

    /// LiveKit: encrypts the frame in `buf[..len]` (not empty) where it lies, as
    /// `encrypt_frame` does, growing into the rest of `buf` (at least
    /// `livekit::SEAL_ROOM` bytes). `Ok(None)`: nothing done, use
    /// `encrypt_frame`. `None`: not LiveKit.
    pub fn encrypt_frame_in_place(
        &mut self,
        key: &ReadyKey,
        buf: &mut [u8],
        len: usize,
        keyframe: bool,
    ) -> Option<Result<Option<livekit::InPlace>, EncryptError>> {
        let (Encoder::Livekit(encoder), KeyCipher::Livekit(frame_key)) = (self, &key.cipher) else {
            return None;
        };
        Some((|| {
            let (layout, iv, key_index) = encoder.next_frame(key, &buf[..len], keyframe)?;
            livekit::seal_in_place(frame_key.aead(), key_index, &iv, layout, buf, len)
                .map_err(EncryptError::Livekit)
        })())
    }

    /// Encrypts the next buffer into `out` (of `Format::max_encrypted_len`);
    /// returns the length written.
    pub fn encrypt(
        &mut self,
        key: &ReadyKey,
        input: &[u8],
        out: &mut [u8],
    ) -> Result<usize, EncryptError> {
        match (self, &key.cipher) {
            (Encoder::Sframe(counter), KeyCipher::Sframe(key)) => {
                let ctr = counter.next_counter()?;
                key.encrypt_into(ctr, &[], input, out)
                    .map_err(EncryptError::Frame)
            }
            (Encoder::Sm4Ecb, KeyCipher::Sm4Ecb(key)) => Ok(key.encrypt_into(input, out)),
            (Encoder::QqTea(pool), KeyCipher::QqTea(key)) => {
                let random = pool.take().map_err(|_| EncryptError::Random)?;
                Ok(key.encrypt_into(input, &random, out))
            }
            (Encoder::AesCbc(stream), KeyCipher::AesCbc(key)) => {
                Ok(stream.encrypt(key, input, out))
            }
            (Encoder::Livekit(_), _) => unreachable!("LiveKit frames go through encrypt_frame"),
            _ => unreachable!("key made for another format"),
        }
    }

    /// Encrypts `payload` where it lies, for the formats that can (SFrame):
    /// returns what goes before and after it. `None`: use `encrypt`.
    pub fn encrypt_in_place(
        &mut self,
        key: &ReadyKey,
        payload: &mut [u8],
    ) -> Result<Option<SealedParts>, EncryptError> {
        match (self, &key.cipher) {
            (Encoder::Sframe(counter), KeyCipher::Sframe(key)) => {
                let ctr = counter.next_counter()?;
                key.encrypt_in_place(ctr, payload)
                    .map(Some)
                    .map_err(EncryptError::Frame)
            }
            _ => Ok(None),
        }
    }

    /// Encrypts the first `len` bytes of `buf` where they lie, for the formats
    /// whose output starts where their input does (SM4-ECB, AES-CBC); `buf` has
    /// room for `Format::max_encrypted_len(len)`. Returns the output's length;
    /// `None`: use `encrypt`.
    pub fn encrypt_in_room(&mut self, key: &ReadyKey, buf: &mut [u8], len: usize) -> Option<usize> {
        match (self, &key.cipher) {
            (Encoder::Sm4Ecb, KeyCipher::Sm4Ecb(key)) => Some(key.encrypt_in_place(buf, len)),
            (Encoder::AesCbc(stream), KeyCipher::AesCbc(key)) => {
                Some(stream.encrypt_in_place(key, buf, len))
            }
            _ => None,
        }
    }

    /// What the stream still owes at EOS (`aesenc`'s final block).
    pub fn finish(&mut self, key: &ReadyKey) -> Option<Vec<u8>> {
        match (self, key.aes_cbc()) {
            (Encoder::AesCbc(stream), Some(key)) => stream.finish(key),
            _ => None,
        }
    }
}

/// The decrypting side of one stream, for the formats without a KID: it tries
/// the keys it is given, in order.
pub enum TrialDecoder {
    Sm4Ecb,
    QqTea,
    AesCbc(CbcDecrypter),
}

impl TrialDecoder {
    /// `None` for SFrame and LiveKit, whose frames name their key.
    pub fn new(format: &Format) -> Option<Self> {
        match format {
            Format::Sframe(_) | Format::Livekit => None,
            Format::Sm4Ecb => Some(TrialDecoder::Sm4Ecb),
            Format::QqTea => Some(TrialDecoder::QqTea),
            Format::AesCbc { options, .. } => {
                Some(TrialDecoder::AesCbc(CbcDecrypter::new(*options)))
            }
        }
    }

    /// Most bytes `decrypt` writes for `input_len` bytes in.
    pub fn max_decrypted_len(&self, input_len: usize) -> usize {
        match self {
            TrialDecoder::AesCbc(stream) => stream.max_output_len(input_len),
            _ => input_len,
        }
    }

    /// Decrypts the next buffer into `out` with the key among `keys` (the key in
    /// use first) that passes the format's validity check (see `crate::compat`);
    /// returns that key's index and the length. `keys` may be anything that
    /// leads to a `ReadyKey` of this format (`&ReadyKey`, an `Arc` of a holder).
    pub fn decrypt<K>(
        &mut self,
        keys: &[K],
        input: &[u8],
        out: &mut [u8],
    ) -> Result<(usize, usize), Invalid>
    where
        K: Deref<Target: AsRef<ReadyKey>>,
    {
        match self {
            TrialDecoder::Sm4Ecb => {
                let out = out.get_mut(..input.len()).ok_or(Invalid)?;
                out.copy_from_slice(input);
                sm4_ecb_in_place(keys, out).map(|(index, plaintext)| (index, plaintext.len()))
            }
            TrialDecoder::QqTea => first_valid(keys, |key| tea(key).decrypt_into(input, out)),
            TrialDecoder::AesCbc(stream) => stream.decrypt(keys, aes_cbc, input, out),
        }
    }

    /// `decrypt` where `data` lies, for the formats that `decrypts_per_buffer`:
    /// returns the key's index and where the plaintext is in `data`; `None` for
    /// the others.
    pub fn decrypt_in_place<K>(
        &mut self,
        keys: &[K],
        data: &mut [u8],
    ) -> Option<Result<(usize, Range<usize>), Invalid>>
    where
        K: Deref<Target: AsRef<ReadyKey>>,
    {
        match self {
            TrialDecoder::Sm4Ecb => Some(sm4_ecb_in_place(keys, data)),
            TrialDecoder::QqTea => Some(first_valid(keys, |key| tea(key).decrypt_in_place(data))),
            TrialDecoder::AesCbc(stream) if stream.per_buffer_padding() => {
                Some(stream.decrypt_in_place(keys, aes_cbc, data))
            }
            _ => None,
        }
    }

    /// What the stream still holds at EOS (`aesdec`'s final block), decrypted
    /// with `key`.
    pub fn finish(&mut self, key: &ReadyKey) -> Option<Result<Vec<u8>, Invalid>> {
        match (self, key.aes_cbc()) {
            (TrialDecoder::AesCbc(stream), Some(key)) => stream.finish(key),
            _ => None,
        }
    }
}

/// SM4-ECB where `data` lies, with the key among `keys` its padding picks.
fn sm4_ecb_in_place<K>(keys: &[K], data: &mut [u8]) -> Result<(usize, Range<usize>), Invalid>
where
    K: Deref<Target: AsRef<ReadyKey>>,
{
    if !sm4_ecb::is_whole_blocks(data) {
        return Err(Invalid);
    }
    let index = pick_by_padding(keys, |key| sm4(key).decrypt_last_block(data)).ok_or(Invalid)?;
    let len = sm4(&keys[index]).decrypt_in_place(data)?;
    Ok((index, 0..len))
}

fn ready<K: Deref<Target: AsRef<ReadyKey>>>(key: &K) -> &ReadyKey {
    (**key).as_ref()
}

// A running decoder's keys are all made for its format.
fn sm4(key: &impl Deref<Target: AsRef<ReadyKey>>) -> &Sm4Ecb {
    match &ready(key).cipher {
        KeyCipher::Sm4Ecb(key) => key,
        _ => unreachable!("an SM4-ECB decoder got a key of another format"),
    }
}

fn tea(key: &impl Deref<Target: AsRef<ReadyKey>>) -> &QqTea {
    match &ready(key).cipher {
        KeyCipher::QqTea(key) => key,
        _ => unreachable!("a QQ TEA decoder got a key of another format"),
    }
}

fn aes_cbc(key: &impl Deref<Target: AsRef<ReadyKey>>) -> &AesCbc {
    ready(key)
        .aes_cbc()
        .expect("an AES-CBC decoder got a key of another format")
}

impl AsRef<ReadyKey> for ReadyKey {
    fn as_ref(&self) -> &ReadyKey {
        self
    }
}
