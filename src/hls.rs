// SPDX-License-Identifier: MPL-2.0
//! HLS with standard AES-128 encryption (RFC 8216, section 4.3.2.4): each media
//! segment AES-128-CBC with PKCS#7 padding under a key from a key file, with an IV
//! of its own, and an `#EXT-X-KEY` line before each segment in the playlist. No
//! GStreamer in here: `streamcrypthlssink` hands over each finished segment.
//!
//! Plaintext segments never touch the disk: they are encrypted in memory and
//! written once. Key files are written with permissions 0600, playlists by
//! renaming a complete temporary file over the old one, so a player never reads a
//! half-written playlist.

use std::collections::VecDeque;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use m3u8_rs::{Key, KeyMethod, MediaPlaylist, MediaSegment};

use crate::compat::aes_cbc::{AesCbc, CbcEncrypter, CbcOptions};
use crate::keys::SecretKey;

pub const KEY_LEN: usize = 16;

#[derive(Debug, Clone)]
pub struct HlsSettings {
    /// Segment file names, with one printf-style `%d` (e.g. `segment%05d.ts`).
    pub location: String,
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
    /// Key file names, with one printf-style `%d` for the key's number.
    pub key_location: String,
    /// Key URIs in the playlist, with an optional `%d`; `None`: the key file's name
    /// (after `playlist_root`).
    pub key_uri: Option<String>,
    /// Segments per key; 0: one key for the whole stream.
    pub key_rotation: u32,
    /// A fixed key; `None`: a fresh random key for each key period.
    pub key: Option<SecretKey>,
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
        }
    }
}

/// Fills the first printf-style integer conversion in `pattern` (`%d`, `%5d`,
/// `%05d`, `%u`...) with `n`. A pattern without one is returned as it is.
pub fn format_index(pattern: &str, n: u64) -> String {
    let bytes = pattern.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            if bytes.get(i + 1) == Some(&b'%') {
                i += 2;
                continue;
            }
            let mut j = i + 1;
            let zero = bytes.get(j) == Some(&b'0');
            while j < bytes.len() && bytes[j].is_ascii_digit() {
                j += 1;
            }
            let width: usize = pattern[i + 1..j].parse().unwrap_or(0);
            // Length modifiers (`%ld`, `%lld`, `%lu`).
            while j < bytes.len() && bytes[j] == b'l' {
                j += 1;
            }
            if matches!(bytes.get(j), Some(b'd' | b'u' | b'i')) {
                let number = if zero {
                    format!("{n:0width$}")
                } else {
                    format!("{n:width$}")
                };
                return format!("{}{number}{}", &pattern[..i], &pattern[j + 1..])
                    .replace("%%", "%");
            }
        }
        i += 1;
    }
    pattern.replace("%%", "%")
}

fn random_bytes<const N: usize>() -> io::Result<[u8; N]> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|e| io::Error::other(format!("no randomness: {e}")))?;
    Ok(bytes)
}

/// A key period: the key, its file and the URI players fetch it from.
struct KeyPeriod {
    number: u64,
    key: AesCbc,
    path: PathBuf,
    uri: String,
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
    key: Option<KeyPeriod>,
    /// Key files on disk, oldest first.
    key_files: VecDeque<(u64, PathBuf)>,
    listed: VecDeque<Listed>,
    on_disk: VecDeque<OnDisk>,
    next_segment: u64,
    longest: f64,
}

impl HlsWriter {
    pub fn new(settings: HlsSettings) -> Result<Self, String> {
        if let Some(key) = &settings.key {
            if key.len() != KEY_LEN {
                return Err(format!(
                    "HLS AES-128 needs a key of 16 bytes (32 hex digits); this key has {} bytes",
                    key.len()
                ));
            }
            if settings.key_rotation > 0 {
                return Err(
                    "key-rotation makes a fresh random key for each period: leave `key` unset"
                        .into(),
                );
            }
        }
        Ok(Self {
            settings,
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

    /// The key for segment `number`, starting a new key period when it is due.
    fn key_for(&mut self, number: u64) -> io::Result<&KeyPeriod> {
        let period = match self.settings.key_rotation {
            0 => 0,
            n => number / n as u64,
        };
        if self.key.as_ref().is_none_or(|k| k.number != period) {
            let bytes = match &self.settings.key {
                Some(key) => key.clone(),
                None => SecretKey::from_bytes(&random_bytes::<KEY_LEN>()?),
            };
            let path = PathBuf::from(format_index(&self.settings.key_location, period));
            write_key_file(&path, bytes.as_bytes())?;
            let uri = match &self.settings.key_uri {
                Some(pattern) => format_index(pattern, period),
                None => self.uri_for(&path),
            };
            self.key_files.push_back((period, path.clone()));
            self.key = Some(KeyPeriod {
                number: period,
                key: AesCbc::new(bytes.as_bytes()),
                path,
                uri,
            });
        }
        Ok(self.key.as_ref().expect("set above"))
    }

    /// Encrypts one finished segment, writes it, and rewrites the playlist.
    /// Returns the segment file's path.
    pub fn add_segment(&mut self, plaintext: &[u8], duration: f64) -> io::Result<PathBuf> {
        let number = self.next_segment;
        self.next_segment += 1;
        let iv = random_bytes::<16>()?;
        let key = self.key_for(number)?;
        let (key_number, key_uri) = (key.number, key.uri.clone());
        // The whole segment as one PKCS#7-padded CBC message.
        let mut ciphertext = vec![0u8; CbcEncrypter::max_output_len(plaintext.len())];
        let options = CbcOptions {
            iv,
            serialize_iv: false,
            per_buffer_padding: true,
        };
        let len = CbcEncrypter::new(options).encrypt(&key.key, plaintext, &mut ciphertext);
        let path = PathBuf::from(format_index(&self.settings.location, number));
        fs::write(&path, &ciphertext[..len])?;

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
    fn delete_old_files(&mut self) -> io::Result<()> {
        let max = self.settings.max_files as usize;
        while max > 0 && self.on_disk.len() > max {
            let old = self.on_disk.pop_front().expect("non-empty");
            remove_if_present(&old.path)?;
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
            remove_if_present(path)?;
            self.key_files.pop_front();
        }
        Ok(())
    }

    /// At the end of the stream: the playlist with `#EXT-X-ENDLIST`.
    pub fn finish(&mut self) -> io::Result<()> {
        self.write_playlist(true)
    }

    fn write_playlist(&self, end: bool) -> io::Result<()> {
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
        playlist.write_to(&mut text)?;
        let path = Path::new(&self.settings.playlist_location);
        let temporary = path.with_extension("m3u8.tmp");
        fs::write(&temporary, &text)?;
        fs::rename(&temporary, path)
    }

    /// The current key period's key file (for tests and the element's logs).
    pub fn current_key_file(&self) -> Option<&Path> {
        self.key.as_ref().map(|k| k.path.as_path())
    }
}

fn write_key_file(path: &Path, key: &[u8]) -> io::Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(key)?;
    file.sync_all()
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn printf_patterns() {
        assert_eq!(format_index("segment%05d.ts", 42), "segment00042.ts");
        assert_eq!(format_index("seg%d.ts", 7), "seg7.ts");
        assert_eq!(format_index("seg%3d.ts", 7), "seg  7.ts");
        assert_eq!(format_index("a%%b%lu", 3), "a%b3");
        assert_eq!(format_index("fixed.key", 3), "fixed.key");
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
        let mut files: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        // Segments 6-9 stay; they need keys 2 (6-8) and 3 (9).
        assert_eq!(
            files,
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
                ..HlsSettings::default()
            })
            .is_err()
        );
        let short = SecretKey::from_hex("0011").unwrap();
        let err = HlsWriter::new(HlsSettings {
            key: Some(short),
            ..HlsSettings::default()
        })
        .err()
        .unwrap();
        assert!(err.contains("16 bytes"), "{err}");
    }
}
