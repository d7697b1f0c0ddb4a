// SPDX-License-Identifier: MPL-2.0
//! HLS with standard AES-128 encryption (RFC 8216, section 4.3.2.4): each media
//! segment AES-128-CBC with PKCS#7 padding under a key from a key file, with an IV
//! of its own, and an `#EXT-X-KEY` line before each segment in the playlist. No
//! GStreamer in here: `streamcrypthlssink` hands over each finished segment.
//!
//! Plaintext segments never touch the disk: they are encrypted in memory and
//! written once. Every file (segment, key, playlist) is written to a temporary
//! file of its own in the same folder, created exclusively (so a symlink planted
//! there is never followed), and renamed over its name once complete: a player
//! never reads half a file, and a key file is a new file with mode 0600 whatever
//! was at its name before. A segment's key file is in place before the segment,
//! and the segment before the playlist that lists it.

use std::collections::VecDeque;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use m3u8_rs::{Key, KeyMethod, MediaPlaylist, MediaSegment};

use crate::compat::aes_cbc::{AesCbc, CbcEncrypter, CbcOptions};
use crate::keys::SecretKey;

pub const KEY_LEN: usize = 16;

/// Key files are readable by their owner only.
const KEY_FILE_MODE: u32 = 0o600;
/// Segments and playlists are for players: as any new file (the umask applies).
const PUBLIC_FILE_MODE: u32 = 0o666;

#[derive(Debug, Clone)]
pub struct HlsSettings {
    /// Segment file names, with one printf-style `%d` (e.g. `segment%05d.ts`).
    pub location: String,
    /// The playlist's file name; no conversion (`%%` is a literal `%`).
    pub playlist_location: String,
    /// Prefix of segment and key URIs in the playlist; `None`: names relative to
    /// the playlist.
    pub playlist_root: Option<String>,
    /// Seconds, the `#EXT-X-TARGETDURATION` aimed at.
    pub target_duration: u32,
    /// Segments listed in the playlist; 0: all of them.
    pub playlist_length: u32,
    /// Segment files kept on disk; 0: all of them.
    pub max_files: u32,
    /// Key file names, with one printf-style `%d` for the key's number (optional
    /// when there is one key for the whole stream).
    pub key_location: String,
    /// Key URIs in the playlist, with a `%d` for the key's number (optional when
    /// there is one key); `None`: the key file's name (after `playlist_root`).
    pub key_uri: Option<String>,
    /// Segments per key; 0: one key for the whole stream.
    pub key_rotation: u32,
    /// A fixed key; `None`: a fresh random key for each key period.
    pub key: Option<SecretKey>,
    /// The caller gives each segment's key (`HlsWriter::add_segment_with`),
    /// e.g. from a key service: no key file is written, and `key_location`,
    /// `key_uri`, `key_rotation` and `key` are not used.
    pub given_keys: bool,
}

impl Default for HlsSettings {
    fn default() -> Self {
        Self {
            location: "segment%05d.ts".into(),
            playlist_location: "playlist.m3u8".into(),
            playlist_root: None,
            target_duration: 15,
            playlist_length: 5,
            max_files: 10,
            key_location: "key%05d.key".into(),
            key_uri: None,
            key_rotation: 0,
            key: None,
            given_keys: false,
        }
    }
}

/// What went wrong, in the terms GStreamer's error domains use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HlsErrorKind {
    /// A property's value cannot work.
    Settings,
    /// A folder the files go to does not exist.
    NotFound,
    /// A file cannot be created.
    OpenWrite,
    /// A file cannot be written, renamed or deleted.
    Write,
    /// The system has no randomness to give.
    NoRandomness,
}

/// An error with a message that names the property or the path concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HlsError {
    pub kind: HlsErrorKind,
    pub message: String,
}

impl HlsError {
    fn new(kind: HlsErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    pub fn settings(message: impl Into<String>) -> Self {
        Self::new(HlsErrorKind::Settings, message)
    }
}

impl fmt::Display for HlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for HlsError {}

/// How many number conversions a pattern takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Numbering {
    /// Exactly one: each file or URI needs a name of its own.
    One,
    /// None or one: there is only ever one of them.
    AtMostOne,
    /// None: a fixed name.
    Never,
}

/// How the number is written: `%05d` pads with zeros to 5 digits, `%5d` with
/// spaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct NumberFormat {
    zero_pad: bool,
    width: usize,
}

/// Widths beyond this would only pad: a u64 has at most 20 digits.
const MAX_WIDTH: usize = 20;

/// A printf-style name as hlssink2 takes them (`segment%05d.ts`): text, at most
/// one integer conversion (`%d`, `%i`, `%u`, with `0`, a width and `l`/`ll`), and
/// `%%` for a literal `%`. Anything else is refused rather than guessed at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    head: String,
    number: Option<NumberFormat>,
    tail: String,
}

impl Pattern {
    /// Parses `text`; the error says what is wrong, without naming the property.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut pattern = Pattern {
            head: String::new(),
            number: None,
            tail: String::new(),
        };
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            let out = if pattern.number.is_some() {
                &mut pattern.tail
            } else {
                &mut pattern.head
            };
            if c != '%' {
                out.push(c);
                continue;
            }
            if chars.next_if_eq(&'%').is_some() {
                out.push('%');
                continue;
            }
            let mut spec = String::from("%");
            let zero_pad = chars.next_if_eq(&'0').is_some();
            if zero_pad {
                spec.push('0');
            }
            let mut digits = String::new();
            while let Some(digit) = chars.next_if(char::is_ascii_digit) {
                digits.push(digit);
            }
            spec.push_str(&digits);
            for _ in 0..2 {
                if let Some(l) = chars.next_if_eq(&'l') {
                    spec.push(l);
                }
            }
            let Some(conversion) = chars.next() else {
                return Err(format!(
                    "`{spec}` at the end is not a conversion; write %% for a literal %"
                ));
            };
            spec.push(conversion);
            if !matches!(conversion, 'd' | 'i' | 'u') {
                return Err(format!(
                    "`{spec}` is not an integer conversion; the number is written with \
                     %d (or %05d, %u, %i, %ld), a literal % as %%"
                ));
            }
            if pattern.number.is_some() {
                return Err(format!(
                    "`{spec}` is a second number conversion; there is one number to write"
                ));
            }
            let width = if digits.is_empty() {
                0
            } else {
                digits.parse().unwrap_or(usize::MAX)
            };
            if width > MAX_WIDTH {
                return Err(format!(
                    "`{spec}` pads to {digits} digits; a number has at most {MAX_WIDTH}"
                ));
            }
            pattern.number = Some(NumberFormat { zero_pad, width });
        }
        Ok(pattern)
    }

    /// Whether the pattern writes a number.
    pub fn is_numbered(&self) -> bool {
        self.number.is_some()
    }

    /// The name for number `n` (the text as it is when there is no conversion).
    pub fn format(&self, n: u64) -> String {
        let number = match self.number {
            None => String::new(),
            Some(NumberFormat {
                zero_pad: true,
                width,
            }) => format!("{n:0width$}"),
            Some(NumberFormat {
                zero_pad: false,
                width,
            }) => format!("{n:width$}"),
        };
        format!("{}{number}{}", self.head, self.tail)
    }
}

/// Parses the value of `property` and checks it has the conversions `numbering`
/// asks for; `why_one` says why a number is needed, for the error.
fn parse_property(
    property: &str,
    text: &str,
    numbering: Numbering,
    why_one: &str,
) -> Result<Pattern, HlsError> {
    let refuse = |what: String| HlsError::settings(format!("{property}=\"{text}\": {what}"));
    let pattern = Pattern::parse(text).map_err(refuse)?;
    match numbering {
        Numbering::One if !pattern.is_numbered() => Err(refuse(format!(
            "no %d for the number; {why_one}: add one (e.g. %05d)"
        ))),
        Numbering::Never if pattern.is_numbered() => Err(refuse(
            "a fixed name takes no number conversion (write %% for a literal %)".into(),
        )),
        _ => Ok(pattern),
    }
}

/// Parses a file-name property: as `parse_property`, not empty, and the number
/// (folders are not created) in the file name.
fn parse_file_property(
    property: &str,
    text: &str,
    numbering: Numbering,
    why_one: &str,
) -> Result<Pattern, HlsError> {
    if text.is_empty() {
        return Err(HlsError::settings(format!(
            "{property} is empty; it needs a file name"
        )));
    }
    if text.ends_with('/') {
        return Err(HlsError::settings(format!(
            "{property}=\"{text}\" names a folder; it needs a file name"
        )));
    }
    let pattern = parse_property(property, text, numbering, why_one)?;
    if pattern.is_numbered() && pattern.tail.contains('/') {
        return Err(HlsError::settings(format!(
            "{property}=\"{text}\": the number must be in the file name, not in a folder \
             (folders are not created)"
        )));
    }
    Ok(pattern)
}

/// The folder `path` is in.
fn folder_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Checks that the folder of `property`'s files exists and takes new files, by
/// creating (and removing) a temporary file in it, as every write does.
fn check_folder(property: &str, text: &str, path: &Path) -> Result<(), HlsError> {
    let folder = folder_of(path);
    let error = |kind, what: String| {
        HlsError::new(
            kind,
            format!(
                "{property}=\"{text}\": the folder {} {what}",
                folder.display()
            ),
        )
    };
    match fs::metadata(&folder) {
        Err(err) if err.kind() == io::ErrorKind::NotFound => Err(error(
            HlsErrorKind::NotFound,
            "does not exist (folders are not created)".into(),
        )),
        Err(err) => Err(error(
            HlsErrorKind::OpenWrite,
            format!("cannot be read: {err}"),
        )),
        Ok(meta) if !meta.is_dir() => Err(error(HlsErrorKind::OpenWrite, "is not a folder".into())),
        Ok(_) => match create_temporary(&folder.join("probe"), PUBLIC_FILE_MODE) {
            Ok((_, temporary)) => {
                let _ = fs::remove_file(&temporary);
                Ok(())
            }
            Err(err) => Err(error(
                HlsErrorKind::OpenWrite,
                format!("does not take new files: {err}"),
            )),
        },
    }
}

/// The names the writer writes to, parsed and checked at start.
#[derive(Debug)]
struct Names {
    location: Pattern,
    playlist: PathBuf,
    key_location: Pattern,
    key_uri: Option<Pattern>,
}

impl HlsSettings {
    /// Checks every name pattern against what the other settings need.
    fn names(&self) -> Result<Names, HlsError> {
        let rotating = self.key_rotation > 0;
        let key_numbering = if rotating {
            Numbering::One
        } else {
            Numbering::AtMostOne
        };
        let why_key = format!(
            "key-rotation={} writes a new key every {} segments, each to a name of its own \
             (or set key-rotation=0 for one key)",
            self.key_rotation, self.key_rotation
        );
        let location = parse_file_property(
            "location",
            &self.location,
            Numbering::One,
            "each segment needs a file of its own",
        )?;
        let playlist = parse_file_property(
            "playlist-location",
            &self.playlist_location,
            Numbering::Never,
            "",
        )?;
        let key_location =
            parse_file_property("key-location", &self.key_location, key_numbering, &why_key)?;
        let key_uri = match &self.key_uri {
            Some(uri) if !self.given_keys => {
                Some(parse_property("key-uri", uri, key_numbering, &why_key)?)
            }
            _ => None,
        };
        Ok(Names {
            location,
            playlist: PathBuf::from(playlist.format(0)),
            key_location,
            key_uri,
        })
    }
}

fn random_bytes<const N: usize>() -> Result<[u8; N], HlsError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|e| {
        HlsError::new(
            HlsErrorKind::NoRandomness,
            format!("the system gives no randomness for keys and IVs: {e}"),
        )
    })?;
    Ok(bytes)
}

/// Creates a new file next to `path` for it (`.NAME.RANDOM.tmp`), with `mode`.
/// `create_new` is O_CREAT|O_EXCL: the call fails on anything already there,
/// a symlink included, rather than open it (POSIX: "If O_CREAT and O_EXCL are
/// set, and path names a symbolic link, open() shall fail"); O_NOFOLLOW would add
/// nothing.
fn create_temporary(path: &Path, mode: u32) -> io::Result<(File, PathBuf)> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let suffix: String = random_bytes::<8>()
        .map_err(|e| io::Error::other(e.message))?
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let temporary = path.with_file_name(format!(".{name}.{suffix}.tmp"));
    let file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&temporary)?;
    Ok((file, temporary))
}

/// A complete file written under a temporary name, waiting to be renamed over
/// its own; dropped without `commit`, the temporary file goes.
struct StagedFile {
    temporary: PathBuf,
    target: PathBuf,
    what: &'static str,
    committed: bool,
}

impl StagedFile {
    /// Writes `data` for `target` (`what` names it in errors); `sync` makes it
    /// durable before it takes the name.
    fn write(
        target: &Path,
        data: &[u8],
        mode: u32,
        sync: bool,
        what: &'static str,
    ) -> Result<Self, HlsError> {
        let (mut file, temporary) = create_temporary(target, mode).map_err(|err| {
            HlsError::new(
                HlsErrorKind::OpenWrite,
                format!(
                    "cannot create the {what} {} (a temporary file next to it): {err}",
                    target.display()
                ),
            )
        })?;
        let staged = StagedFile {
            temporary,
            target: target.to_path_buf(),
            what,
            committed: false,
        };
        file.write_all(data)
            .and_then(|()| if sync { file.sync_all() } else { Ok(()) })
            .map_err(|err| staged.error(format!("cannot write the {what}"), err))?;
        Ok(staged)
    }

    fn error(&self, doing: String, err: io::Error) -> HlsError {
        HlsError::new(
            HlsErrorKind::Write,
            format!("{doing} {}: {err}", self.target.display()),
        )
    }

    /// Gives the file its name, replacing whatever had it (a symlink is replaced,
    /// not followed).
    fn commit(mut self) -> Result<(), HlsError> {
        fs::rename(&self.temporary, &self.target).map_err(|err| {
            self.error(
                format!(
                    "cannot rename {} to the {}",
                    self.temporary.display(),
                    self.what
                ),
                err,
            )
        })?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for StagedFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.temporary);
        }
    }
}

/// Writes a whole file through a temporary one (see `StagedFile`).
fn write_file(
    path: &Path,
    data: &[u8],
    mode: u32,
    sync: bool,
    what: &'static str,
) -> Result<(), HlsError> {
    StagedFile::write(path, data, mode, sync, what)?.commit()
}

fn remove_if_present(path: &Path, what: &str) -> Result<(), HlsError> {
    match fs::remove_file(path) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => Err(HlsError::new(
            HlsErrorKind::Write,
            format!("cannot delete the old {what} {}: {err}", path.display()),
        )),
        _ => Ok(()),
    }
}

/// What a fixed key needs: AES-128.
fn check_key_length(key: &SecretKey) -> Result<(), HlsError> {
    if key.len() == KEY_LEN {
        return Ok(());
    }
    Err(HlsError::settings(format!(
        "key: HLS AES-128 needs a key of {KEY_LEN} bytes ({} hex digits); this key has {} \
         bytes ({} hex digits)",
        2 * KEY_LEN,
        key.len(),
        2 * key.len()
    )))
}

/// Reads the `key` property's hex text; the error names the property and what
/// was expected, never the key.
pub fn parse_key(hex: &str) -> Result<SecretKey, HlsError> {
    let key = SecretKey::from_hex(hex).map_err(|err| {
        HlsError::settings(format!(
            "key: {err}; HLS AES-128 needs {KEY_LEN} bytes ({} hex digits)",
            2 * KEY_LEN
        ))
    })?;
    check_key_length(&key)?;
    Ok(key)
}

/// A fresh random AES-128 key.
fn random_key() -> Result<SecretKey, HlsError> {
    let bytes = zeroize::Zeroizing::new(random_bytes::<KEY_LEN>()?);
    Ok(SecretKey::from_bytes(&*bytes))
}

/// A key period: the key, its file and the URI players fetch it from.
struct KeyPeriod {
    number: u64,
    key: AesCbc,
    /// `None`: a key given by the caller, which has no file.
    path: Option<PathBuf>,
    uri: String,
}

/// A segment's key given by the caller (`HlsWriter::add_segment_with`): its
/// number (a key service's KID), the AES-128 key, and the URI players fetch
/// it from.
pub struct GivenKey {
    pub number: u64,
    pub key: SecretKey,
    pub uri: String,
}

/// A segment listed in the playlist.
struct Listed {
    number: u64,
    uri: String,
    duration: f64,
    key_uri: String,
    iv: [u8; 16],
}

/// A segment file on disk, and the key file it needs.
struct OnDisk {
    path: PathBuf,
    key_number: u64,
}

/// Writes encrypted segments, key files and the playlist as segments come.
pub struct HlsWriter {
    settings: HlsSettings,
    names: Names,
    key: Option<KeyPeriod>,
    /// Key files on disk, oldest first.
    key_files: VecDeque<(u64, PathBuf)>,
    listed: VecDeque<Listed>,
    on_disk: VecDeque<OnDisk>,
    next_segment: u64,
    longest: f64,
}

impl HlsWriter {
    /// Checks the settings: the name patterns, the key, and that the folders
    /// exist and take new files.
    pub fn new(settings: HlsSettings) -> Result<Self, HlsError> {
        if let Some(key) = &settings.key {
            check_key_length(key)?;
            if settings.key_rotation > 0 {
                return Err(HlsError::settings(
                    "key-rotation makes a fresh random key for each period: leave `key` unset",
                ));
            }
        }
        let names = settings.names()?;
        let first = |pattern: &Pattern| PathBuf::from(pattern.format(0));
        check_folder("location", &settings.location, &first(&names.location))?;
        if !settings.given_keys {
            check_folder(
                "key-location",
                &settings.key_location,
                &first(&names.key_location),
            )?;
        }
        check_folder(
            "playlist-location",
            &settings.playlist_location,
            &names.playlist,
        )?;
        Ok(Self {
            settings,
            names,
            key: None,
            key_files: VecDeque::new(),
            listed: VecDeque::new(),
            on_disk: VecDeque::new(),
            next_segment: 0,
            longest: 0.0,
        })
    }

    fn uri_for(&self, path: &Path) -> String {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        match &self.settings.playlist_root {
            Some(root) => format!("{}/{name}", root.trim_end_matches('/')),
            None => name,
        }
    }

    /// The key period segment `number` is in.
    fn period_of(&self, number: u64) -> u64 {
        match self.settings.key_rotation {
            0 => 0,
            n => number / n as u64,
        }
    }

    /// Key period `number`, not yet on disk, and the key bytes for its file.
    fn new_key_period(&self, number: u64) -> Result<(KeyPeriod, SecretKey), HlsError> {
        let secret = match &self.settings.key {
            Some(key) => key.clone(),
            None => random_key()?,
        };
        let path = PathBuf::from(self.names.key_location.format(number));
        let uri = match &self.names.key_uri {
            Some(pattern) => pattern.format(number),
            None => self.uri_for(&path),
        };
        let period = KeyPeriod {
            number,
            key: AesCbc::new(secret.as_bytes()),
            path: Some(path),
            uri,
        };
        Ok((period, secret))
    }

    /// Like `add_segment`, under a key the caller gives: no key file is
    /// written. A key of another number than the last one starts a new key
    /// period.
    pub fn add_segment_with(
        &mut self,
        plaintext: &[u8],
        duration: f64,
        given: &GivenKey,
    ) -> Result<PathBuf, HlsError> {
        check_key_length(&given.key)?;
        let new_period = match &self.key {
            Some(key) if key.number == given.number => None,
            _ => Some(KeyPeriod {
                number: given.number,
                key: AesCbc::new(given.key.as_bytes()),
                path: None,
                uri: given.uri.clone(),
            }),
        };
        self.write_segment(plaintext, duration, new_period.map(|period| (period, None)))
    }

    /// Encrypts one finished segment, writes it (and its key file when it starts
    /// a key period), and rewrites the playlist. Returns the segment file's path.
    /// When the segment cannot be written, its new key file is not left behind.
    pub fn add_segment(&mut self, plaintext: &[u8], duration: f64) -> Result<PathBuf, HlsError> {
        let period = self.period_of(self.next_segment);
        let new_period = match &self.key {
            Some(key) if key.number == period => None,
            _ => Some(self.new_key_period(period)?),
        };
        self.write_segment(
            plaintext,
            duration,
            new_period.map(|(period, secret)| (period, Some(secret))),
        )
    }

    /// Encrypts and writes segment `next_segment` under the current key
    /// period or `new_period` (with the bytes of its key file, if it has one),
    /// then the playlist.
    fn write_segment(
        &mut self,
        plaintext: &[u8],
        duration: f64,
        new_period: Option<(KeyPeriod, Option<SecretKey>)>,
    ) -> Result<PathBuf, HlsError> {
        let number = self.next_segment;
        let key = match &new_period {
            Some((key, _)) => key,
            None => self.key.as_ref().expect("the current period"),
        };
        let iv = random_bytes::<16>()?;
        // The whole segment as one PKCS#7-padded CBC message.
        let mut ciphertext = vec![0u8; CbcEncrypter::max_output_len(plaintext.len())];
        let options = CbcOptions {
            iv,
            serialize_iv: false,
            per_buffer_padding: true,
        };
        let len = CbcEncrypter::new(options).encrypt(&key.key, plaintext, &mut ciphertext);
        let path = PathBuf::from(self.names.location.format(number));
        let segment = StagedFile::write(
            &path,
            &ciphertext[..len],
            PUBLIC_FILE_MODE,
            false,
            "segment",
        )?;
        let key_file = match &new_period {
            Some((
                KeyPeriod {
                    path: Some(path), ..
                },
                Some(secret),
            )) => Some((path, secret)),
            _ => None,
        };
        if let Some((path, secret)) = key_file {
            // Durable before any segment needs it. On failure the segment's
            // temporary file goes with `segment`.
            write_file(path, secret.as_bytes(), KEY_FILE_MODE, true, "key file")?;
        }
        if let Err(err) = segment.commit() {
            if let Some((path, _)) = key_file {
                let _ = fs::remove_file(path);
            }
            return Err(err);
        }
        let key_uri = key.uri.clone();
        let key_number = key.number;
        if let Some((key, _)) = new_period {
            if let Some(path) = &key.path {
                self.key_files.push_back((key.number, path.clone()));
            }
            self.key = Some(key);
        }
        self.next_segment += 1;

        self.listed.push_back(Listed {
            number,
            uri: self.uri_for(&path),
            duration,
            key_uri,
            iv,
        });
        self.longest = self.longest.max(duration);
        let length = self.settings.playlist_length as usize;
        while length > 0 && self.listed.len() > length {
            self.listed.pop_front();
        }
        self.write_playlist(false)?;

        self.on_disk.push_back(OnDisk {
            path: path.clone(),
            key_number,
        });
        self.delete_old_files()?;
        Ok(path)
    }

    /// Deletes the oldest segments beyond `max_files`, then key files that no
    /// segment on disk needs any more.
    fn delete_old_files(&mut self) -> Result<(), HlsError> {
        let max = self.settings.max_files as usize;
        while max > 0 && self.on_disk.len() > max {
            let old = self.on_disk.pop_front().expect("non-empty");
            remove_if_present(&old.path, "segment")?;
        }
        let oldest_needed = self
            .on_disk
            .front()
            .map_or(u64::MAX, |segment| segment.key_number);
        let current = self.key.as_ref().map(|k| k.number);
        while let Some((number, path)) = self.key_files.front()
            && *number < oldest_needed
            && Some(*number) != current
        {
            remove_if_present(path, "key file")?;
            self.key_files.pop_front();
        }
        Ok(())
    }

    /// At the end of the stream: the playlist with `#EXT-X-ENDLIST`.
    pub fn finish(&mut self) -> Result<(), HlsError> {
        self.write_playlist(true)
    }

    fn write_playlist(&self, end: bool) -> Result<(), HlsError> {
        let first = self.listed.front().map_or(self.next_segment, |s| s.number);
        let playlist = MediaPlaylist {
            // IV attributes need version 2, fractional durations version 3.
            version: Some(3),
            target_duration: (self.settings.target_duration as u64).max(self.longest.ceil() as u64),
            media_sequence: first,
            segments: self
                .listed
                .iter()
                .map(|segment| MediaSegment {
                    uri: segment.uri.clone(),
                    duration: segment.duration as f32,
                    key: Some(Key {
                        method: KeyMethod::AES128,
                        uri: Some(segment.key_uri.clone()),
                        iv: Some(format!(
                            "0x{}",
                            segment
                                .iv
                                .iter()
                                .map(|b| format!("{b:02X}"))
                                .collect::<String>()
                        )),
                        keyformat: None,
                        keyformatversions: None,
                    }),
                    ..Default::default()
                })
                .collect(),
            end_list: end,
            ..Default::default()
        };
        let mut text = Vec::new();
        playlist.write_to(&mut text).map_err(|err| {
            HlsError::new(
                HlsErrorKind::Write,
                format!("cannot render the playlist: {err}"),
            )
        })?;
        write_file(
            &self.names.playlist,
            &text,
            PUBLIC_FILE_MODE,
            false,
            "playlist",
        )
    }

    /// The current key period's key file (for tests and the element's logs).
    pub fn current_key_file(&self) -> Option<&Path> {
        self.key.as_ref().and_then(|k| k.path.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn format(pattern: &str, n: u64) -> String {
        Pattern::parse(pattern).unwrap().format(n)
    }

    #[test]
    fn printf_patterns() {
        assert_eq!(format("segment%05d.ts", 42), "segment00042.ts");
        assert_eq!(format("seg%d.ts", 7), "seg7.ts");
        assert_eq!(format("seg%3d.ts", 7), "seg  7.ts");
        assert_eq!(format("seg%i-%%.ts", 7), "seg7-%.ts");
        assert_eq!(format("a%%b%lu", 3), "a%b3");
        assert_eq!(format("x%lld", 12), "x12");
        assert_eq!(format("fixed.key", 3), "fixed.key");
        assert_eq!(format("100%%.key", 3), "100%.key");
        assert!(!Pattern::parse("100%%.key").unwrap().is_numbered());
    }

    #[test]
    fn patterns_other_than_one_integer_are_refused() {
        for (pattern, says) in [
            ("seg%d-%d.ts", "`%d` is a second number conversion"),
            ("seg%s.ts", "`%s` is not an integer conversion"),
            ("seg%05x.ts", "`%05x` is not an integer conversion"),
            ("seg%.ts", "`%.` is not an integer conversion"),
            ("seg%", "`%` at the end is not a conversion"),
            ("seg%05", "`%05` at the end"),
            ("seg%99d.ts", "pads to 99 digits"),
        ] {
            let err = Pattern::parse(pattern).unwrap_err();
            assert!(err.contains(says), "{pattern}: {err}");
        }
    }

    fn settings(dir: &Path) -> HlsSettings {
        let at = |name: &str| dir.join(name).to_string_lossy().into_owned();
        HlsSettings {
            location: at("seg%03d.ts"),
            playlist_location: at("live.m3u8"),
            key_location: at("k%02d.key"),
            ..HlsSettings::default()
        }
    }

    fn refused(settings: HlsSettings) -> HlsError {
        HlsWriter::new(settings).err().expect("refused")
    }

    #[test]
    fn names_must_fit_what_the_settings_need() {
        let dir = tempfile::tempdir().unwrap();
        let base = || settings(dir.path());
        let at = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
        let cases = [
            (
                HlsSettings {
                    key_rotation: 2,
                    key_location: at("fixed.key"),
                    ..base()
                },
                vec![
                    "key-location=",
                    "fixed.key",
                    "no %d",
                    "key-rotation=2",
                    "add one",
                ],
            ),
            (
                HlsSettings {
                    key_rotation: 2,
                    key_uri: Some("https://keys.example/current".into()),
                    ..base()
                },
                vec![
                    "key-uri=\"https://keys.example/current\"",
                    "no %d",
                    "key-rotation=2",
                ],
            ),
            (
                HlsSettings {
                    key_uri: Some("https://keys.example/%s".into()),
                    ..base()
                },
                vec!["key-uri=", "`%s` is not an integer conversion"],
            ),
            (
                HlsSettings {
                    location: at("seg%d-%d.ts"),
                    ..base()
                },
                vec!["location=", "seg%d-%d.ts", "second number conversion"],
            ),
            (
                HlsSettings {
                    location: at("seg%s.ts"),
                    ..base()
                },
                vec!["location=", "seg%s.ts", "`%s` is not an integer conversion"],
            ),
            (
                HlsSettings {
                    location: at("segment.ts"),
                    ..base()
                },
                vec!["location=", "no %d", "each segment needs a file of its own"],
            ),
            (
                HlsSettings {
                    playlist_location: at("live%d.m3u8"),
                    ..base()
                },
                vec!["playlist-location=", "takes no number conversion"],
            ),
            (
                HlsSettings {
                    location: at("seg%d/x.ts"),
                    ..base()
                },
                vec!["location=", "must be in the file name"],
            ),
            (
                HlsSettings {
                    key_location: String::new(),
                    ..base()
                },
                vec!["key-location is empty"],
            ),
            (
                HlsSettings {
                    playlist_location: at("hls/"),
                    ..base()
                },
                vec!["playlist-location=", "names a folder"],
            ),
        ];
        for (settings, says) in cases {
            let err = refused(settings);
            assert_eq!(err.kind, HlsErrorKind::Settings, "{err}");
            for part in says {
                assert!(err.message.contains(part), "{part:?} not in: {err}");
            }
        }
        // One key for the whole stream: a fixed name is fine, and so is %%.
        HlsWriter::new(HlsSettings {
            key_location: at("100%%.key"),
            key_uri: Some("https://keys.example/a%%20b".into()),
            playlist_location: at("live%%.m3u8"),
            ..base()
        })
        .unwrap()
        .add_segment(b"ts", 1.0)
        .unwrap();
        assert!(dir.path().join("100%.key").exists());
        assert!(dir.path().join("live%.m3u8").exists());
    }

    #[test]
    fn folders_are_checked_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        let in_missing = |name: &str| missing.join(name).to_string_lossy().into_owned();
        for (settings, property) in [
            (
                HlsSettings {
                    location: in_missing("s%d.ts"),
                    ..settings(dir.path())
                },
                "location=",
            ),
            (
                HlsSettings {
                    key_location: in_missing("k%d.key"),
                    ..settings(dir.path())
                },
                "key-location=",
            ),
            (
                HlsSettings {
                    playlist_location: in_missing("p.m3u8"),
                    ..settings(dir.path())
                },
                "playlist-location=",
            ),
        ] {
            let err = refused(settings);
            assert_eq!(err.kind, HlsErrorKind::NotFound, "{err}");
            assert!(err.message.starts_with(property), "{err}");
            assert!(
                err.message
                    .contains(&format!("{} does not exist", missing.display())),
                "{err}"
            );
        }

        // sysfs refuses new files, even to root (as the tests may run).
        let err = refused(HlsSettings {
            location: "/sys/seg%d.ts".into(),
            ..settings(dir.path())
        });
        assert_eq!(err.kind, HlsErrorKind::OpenWrite, "{err}");
        assert!(
            err.message
                .contains("the folder /sys does not take new files"),
            "{err}"
        );

        fs::write(dir.path().join("file"), b"").unwrap();
        let err = refused(HlsSettings {
            playlist_location: dir.path().join("file/p.m3u8").display().to_string(),
            ..settings(dir.path())
        });
        assert!(err.message.contains("is not a folder"), "{err}");
        // The probe leaves nothing behind.
        let left: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "{left:?}");
    }

    /// The files in `dir`, sorted.
    fn files_in(dir: &Path) -> Vec<String> {
        let mut files: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        files
    }

    #[test]
    fn a_segment_that_cannot_be_written_is_named_and_leaves_no_key_file() {
        // The segment's temporary file cannot be created: its folder is gone.
        let dir = tempfile::tempdir().unwrap();
        let segments = dir.path().join("segments");
        fs::create_dir(&segments).unwrap();
        let mut writer = HlsWriter::new(HlsSettings {
            location: segments.join("s%d.ts").display().to_string(),
            ..settings(dir.path())
        })
        .unwrap();
        fs::remove_dir(&segments).unwrap();
        let err = writer.add_segment(b"ts", 1.0).unwrap_err();
        assert_eq!(err.kind, HlsErrorKind::OpenWrite, "{err}");
        let path = segments.join("s0.ts");
        assert!(
            err.message
                .starts_with(&format!("cannot create the segment {}", path.display())),
            "{err}"
        );
        assert!(err.message.contains("No such file or directory"), "{err}");
        assert_eq!(files_in(dir.path()), Vec::<String>::new());

        // The segment cannot take its name (a folder has it): the key file that
        // was written for it is removed, and no playlist lists it.
        let dir = tempfile::tempdir().unwrap();
        let mut writer = HlsWriter::new(HlsSettings {
            key_rotation: 1,
            ..settings(dir.path())
        })
        .unwrap();
        writer.add_segment(b"first", 1.0).unwrap();
        fs::create_dir(dir.path().join("seg001.ts")).unwrap();
        let err = writer.add_segment(b"second", 1.0).unwrap_err();
        assert_eq!(err.kind, HlsErrorKind::Write, "{err}");
        assert!(
            err.message.contains(&format!(
                "to the segment {}",
                dir.path().join("seg001.ts").display()
            )),
            "{err}"
        );
        assert_eq!(
            files_in(dir.path()),
            ["k00.key", "live.m3u8", "seg000.ts", "seg001.ts"]
        );
        assert!(dir.path().join("seg001.ts").is_dir());
        let listed = playlist(&settings(dir.path()).playlist_location);
        assert_eq!(listed.segments.len(), 1);
    }

    #[test]
    fn key_files_are_new_files_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        // A key file of an earlier run, readable by all.
        let old = dir.path().join("k00.key");
        fs::write(&old, b"old key, 16 byte").unwrap();
        fs::set_permissions(&old, fs::Permissions::from_mode(0o644)).unwrap();
        // A symlink planted where the next key goes, and at the playlist's and a
        // segment's names, all pointing at a file of someone else's.
        let victim = dir.path().join("victim");
        fs::write(&victim, b"not yours").unwrap();
        for name in ["k01.key", "seg001.ts", "live.m3u8", "live.m3u8.tmp"] {
            std::os::unix::fs::symlink(&victim, dir.path().join(name)).unwrap();
        }
        let mut writer = HlsWriter::new(HlsSettings {
            key_rotation: 1,
            max_files: 0,
            ..settings(dir.path())
        })
        .unwrap();
        writer.add_segment(b"first", 1.0).unwrap();
        writer.add_segment(b"second", 1.0).unwrap();

        assert_eq!(fs::read(&victim).unwrap(), b"not yours");
        for name in ["k00.key", "k01.key"] {
            let meta = fs::symlink_metadata(dir.path().join(name)).unwrap();
            assert!(meta.is_file(), "{name} is a regular file");
            assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{name}");
            assert_eq!(meta.len(), KEY_LEN as u64);
        }
        for name in ["seg001.ts", "live.m3u8"] {
            assert!(
                fs::symlink_metadata(dir.path().join(name))
                    .unwrap()
                    .is_file()
            );
        }
        assert_ne!(fs::read(&old).unwrap(), b"old key, 16 byte");
    }

    /// Decrypts a segment as a player does: AES-128-CBC, PKCS#7.
    fn decrypt(key: &[u8], iv: [u8; 16], ciphertext: &[u8]) -> Vec<u8> {
        use crate::compat::aes_cbc::CbcDecrypter;
        let options = CbcOptions {
            iv,
            serialize_iv: false,
            per_buffer_padding: true,
        };
        let mut out = vec![0u8; ciphertext.len()];
        let (_, len) = CbcDecrypter::new(options)
            .decrypt(&[AesCbc::new(key)], |key| key, ciphertext, &mut out)
            .unwrap();
        out.truncate(len);
        out
    }

    fn playlist(path: &str) -> MediaPlaylist {
        match m3u8_rs::parse_playlist_res(&fs::read(path).unwrap()).unwrap() {
            m3u8_rs::Playlist::MediaPlaylist(playlist) => playlist,
            other => panic!("{other:?}"),
        }
    }

    fn iv_of(key: &Key) -> [u8; 16] {
        let hex = key.iv.as_ref().unwrap().trim_start_matches("0x");
        crate::test_util::hex(hex).try_into().unwrap()
    }

    #[test]
    fn segments_decrypt_with_their_key_and_iv() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = HlsWriter::new(HlsSettings {
            key_rotation: 2,
            playlist_length: 0,
            max_files: 0,
            ..settings(dir.path())
        })
        .unwrap();
        let segments: Vec<Vec<u8>> = (0..5u8)
            .map(|i| vec![0x47 ^ i; 1000 + i as usize * 188])
            .collect();
        for segment in &segments {
            writer.add_segment(segment, 2.0).unwrap();
        }
        writer.finish().unwrap();

        let playlist = playlist(&settings(dir.path()).playlist_location);
        assert!(playlist.end_list);
        assert_eq!(playlist.media_sequence, 0);
        assert_eq!(playlist.segments.len(), 5);
        let mut ivs = std::collections::HashSet::new();
        for (i, entry) in playlist.segments.iter().enumerate() {
            let key = entry.key.as_ref().unwrap();
            assert_eq!(key.method, KeyMethod::AES128);
            // Keys rotate every 2 segments.
            assert_eq!(
                key.uri.as_deref(),
                Some(format!("k{:02}.key", i / 2).as_str())
            );
            assert!(ivs.insert(iv_of(key)), "IV reused");
            let key_file = dir.path().join(key.uri.as_ref().unwrap());
            let mode = fs::metadata(&key_file).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            let key_bytes = fs::read(&key_file).unwrap();
            let ciphertext = fs::read(dir.path().join(&entry.uri)).unwrap();
            assert_ne!(ciphertext[..segments[i].len()], segments[i][..]);
            assert_eq!(decrypt(&key_bytes, iv_of(key), &ciphertext), segments[i]);
        }
    }

    #[test]
    fn given_keys_write_no_key_file_and_their_uris() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = HlsWriter::new(HlsSettings {
            given_keys: true,
            playlist_length: 0,
            max_files: 2,
            ..settings(dir.path())
        })
        .unwrap();
        let key = |number: u64| GivenKey {
            number,
            key: SecretKey::from_bytes(&[number as u8; KEY_LEN]),
            uri: format!("https://keys.example/k/{number}?token=t"),
        };
        let segments: Vec<Vec<u8>> = (0..4u8).map(|i| vec![i; 500]).collect();
        // Periods 7, 7, 8, 9.
        for (segment, number) in segments.iter().zip([7, 7, 8, 9]) {
            writer.add_segment_with(segment, 1.0, &key(number)).unwrap();
        }
        writer.finish().unwrap();
        assert!(writer.current_key_file().is_none());
        let files = files_in(dir.path());
        assert!(
            files.iter().all(|name| !name.ends_with(".key")),
            "{files:?}"
        );
        let playlist = playlist(&settings(dir.path()).playlist_location);
        for (i, (entry, number)) in playlist.segments.iter().zip([7u64, 7, 8, 9]).enumerate() {
            let listed = entry.key.as_ref().unwrap();
            assert_eq!(listed.uri, Some(key(number).uri));
            let path = dir.path().join(&entry.uri);
            // max-files=2 keeps the last two segments.
            if i >= 2 {
                let plain = decrypt(
                    key(number).key.as_bytes(),
                    iv_of(listed),
                    &fs::read(path).unwrap(),
                );
                assert_eq!(plain, segments[i]);
            }
        }
        let short = GivenKey {
            number: 10,
            key: SecretKey::from_bytes(&[0; 8]),
            uri: String::new(),
        };
        assert_eq!(
            writer.add_segment_with(b"x", 1.0, &short).unwrap_err().kind,
            HlsErrorKind::Settings
        );
    }

    #[test]
    fn live_playlists_slide_and_old_files_go() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = HlsWriter::new(HlsSettings {
            key_rotation: 3,
            playlist_length: 3,
            max_files: 4,
            target_duration: 2,
            ..settings(dir.path())
        })
        .unwrap();
        for i in 0..10 {
            writer.add_segment(&[i as u8; 500], 2.5).unwrap();
        }
        let playlist = playlist(&settings(dir.path()).playlist_location);
        assert!(!playlist.end_list);
        assert_eq!(playlist.media_sequence, 7);
        assert_eq!(playlist.target_duration, 3, "covers the longest segment");
        let uris: Vec<&str> = playlist.segments.iter().map(|s| s.uri.as_str()).collect();
        assert_eq!(uris, ["seg007.ts", "seg008.ts", "seg009.ts"]);
        // Segments 6-9 stay; they need keys 2 (6-8) and 3 (9). No temporary
        // file is left.
        assert_eq!(
            files_in(dir.path()),
            [
                "k02.key",
                "k03.key",
                "live.m3u8",
                "seg006.ts",
                "seg007.ts",
                "seg008.ts",
                "seg009.ts"
            ]
        );
    }

    #[test]
    fn a_fixed_key_and_a_playlist_root() {
        let dir = tempfile::tempdir().unwrap();
        let key = SecretKey::from_hex("00112233445566778899aabbccddeeff").unwrap();
        let mut writer = HlsWriter::new(HlsSettings {
            key: Some(key.clone()),
            playlist_root: Some("https://cdn.example/show/".into()),
            key_uri: Some("https://keys.example/show/%d".into()),
            ..settings(dir.path())
        })
        .unwrap();
        writer.add_segment(b"some transport stream", 1.0).unwrap();
        assert_eq!(
            fs::read(writer.current_key_file().unwrap()).unwrap(),
            key.as_bytes()
        );
        let playlist = playlist(&settings(dir.path()).playlist_location);
        assert_eq!(
            playlist.segments[0].uri,
            "https://cdn.example/show/seg000.ts"
        );
        let key_uri = playlist.segments[0].key.as_ref().unwrap().uri.clone();
        assert_eq!(key_uri.as_deref(), Some("https://keys.example/show/0"));

        assert!(
            HlsWriter::new(HlsSettings {
                key_rotation: 2,
                key: Some(key),
                ..settings(dir.path())
            })
            .is_err()
        );
        for (hex, says) in [
            (
                "0011",
                "key: HLS AES-128 needs a key of 16 bytes (32 hex digits); this key has 2 \
                 bytes (4 hex digits)",
            ),
            (
                "zz112233445566778899aabbccddeeff",
                "key: the key is not hex: character 1 is not one of 0-9, a-f, A-F; HLS \
                 AES-128 needs 16 bytes (32 hex digits)",
            ),
        ] {
            let err = parse_key(hex).unwrap_err();
            assert_eq!(
                (err.kind, err.message.as_str()),
                (HlsErrorKind::Settings, says)
            );
        }
        let short = SecretKey::from_hex("0011").unwrap();
        let err = refused(HlsSettings {
            key: Some(short),
            ..settings(dir.path())
        });
        assert!(err.message.contains("16 bytes"), "{err}");
    }
}
