// SPDX-License-Identifier: MPL-2.0
//! Key material as users hand it over: hex strings and key files.
//!
//! Nothing here knows about GStreamer. Error messages name positions, lengths and
//! line numbers, never the key text itself, so they are safe to log and to post on
//! the bus.

use std::fmt;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use zeroize::Zeroizing;

/// A key as the user wrote it (hex, or for QQ TEA also plain text), or a
/// passphrase (LiveKit's), wiped from memory when dropped. It is read once the
/// mode that gives it meaning is known, so that `key` may be set before `mode`.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyText {
    text: Zeroizing<String>,
    passphrase: bool,
}

impl KeyText {
    pub fn new(text: &str) -> Self {
        Self {
            text: Zeroizing::new(text.trim().to_owned()),
            passphrase: false,
        }
    }

    /// A passphrase, taken as it is written (spaces included).
    pub fn passphrase(text: &str) -> Self {
        Self {
            text: Zeroizing::new(text.to_owned()),
            passphrase: true,
        }
    }

    pub fn is_passphrase(&self) -> bool {
        self.passphrase
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The key bytes: `raw_text_len` characters of text taken as they are (QQ TEA
    /// keys are held that way), anything else as hex; the length must be one of
    /// `accepted`. `mode` names the mode in errors.
    pub fn parse(
        &self,
        accepted: &[usize],
        raw_text_len: Option<usize>,
        mode: &str,
    ) -> Result<SecretKey, KeyError> {
        if self.passphrase {
            return Err(KeyError::Passphrase {
                mode: mode.to_owned(),
            });
        }
        let key = match raw_text_len {
            Some(len) if self.text.len() == len => SecretKey::from_bytes(self.text.as_bytes()),
            _ => SecretKey::from_hex(&self.text)?,
        };
        if accepted.contains(&key.len()) {
            Ok(key)
        } else {
            Err(KeyError::WrongLength {
                got: key.len(),
                accepted: accepted.to_vec(),
                raw_text_len,
                mode: mode.to_owned(),
            })
        }
    }
}

impl fmt::Debug for KeyText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = if self.passphrase {
            "passphrase"
        } else {
            "characters"
        };
        write!(f, "KeyText(<{} {what}>)", self.text.chars().count())
    }
}

/// Secret key bytes, wiped from memory when dropped. `Debug` shows the length only.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretKey(Zeroizing<Vec<u8>>);

impl SecretKey {
    pub fn from_bytes(bytes: &[u8]) -> Self {
        Self(Zeroizing::new(bytes.to_vec()))
    }

    /// Parses a key written in hex (either case, surrounding whitespace ignored).
    pub fn from_hex(text: &str) -> Result<Self, KeyError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(KeyError::Empty);
        }
        // Characters are checked before they are counted as digits: "é0" has two
        // characters but three bytes, and is not hex at all.
        if let Some(index) = text.chars().position(|c| !c.is_ascii_hexdigit()) {
            return Err(KeyError::NotHex {
                position: index + 1,
            });
        }
        if !text.len().is_multiple_of(2) {
            return Err(KeyError::OddLength { digits: text.len() });
        }
        let mut bytes = Zeroizing::new(Vec::with_capacity(text.len() / 2));
        for (index, pair) in text.as_bytes().chunks_exact(2).enumerate() {
            let high = hex_value(pair[0]).ok_or(KeyError::NotHex {
                position: 2 * index + 1,
            })?;
            let low = hex_value(pair[1]).ok_or(KeyError::NotHex {
                position: 2 * index + 2,
            })?;
            bytes.push(high << 4 | low);
        }
        Ok(Self(bytes))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey(<{} bytes>)", self.len())
    }
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

/// Why a key was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyError {
    Empty,
    OddLength {
        digits: usize,
    },
    /// 1-based position of the first character that is not a hex digit.
    NotHex {
        position: usize,
    },
    WrongLength {
        got: usize,
        accepted: Vec<usize>,
        /// Characters of text the mode also takes as a key.
        raw_text_len: Option<usize>,
        mode: String,
    },
    /// A key file could not be read or parsed.
    File {
        path: String,
        reason: String,
    },
    /// A passphrase, in a mode that takes keys only.
    Passphrase {
        mode: String,
    },
    /// A KID the mode cannot name a key by.
    KeyIndex {
        kid: u64,
        mode: String,
    },
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::Empty => write!(f, "the key is empty; expected hex digits"),
            KeyError::OddLength { digits } => write!(
                f,
                "the key has {digits} hex digits; a key needs an even number (two per byte)"
            ),
            KeyError::NotHex { position } => write!(
                f,
                "the key is not hex: character {position} is not one of 0-9, a-f, A-F"
            ),
            KeyError::WrongLength {
                got,
                accepted,
                raw_text_len,
                mode,
            } => {
                let lengths = accepted
                    .iter()
                    .map(|n| format!("{n} bytes ({} hex digits)", 2 * n))
                    .chain(raw_text_len.map(|n| format!("{n} characters of text")))
                    .collect::<Vec<_>>()
                    .join(" or ");
                write!(
                    f,
                    "mode {mode} needs a key of {lengths}; this key has {got} bytes ({} hex digits)",
                    2 * got
                )
            }
            KeyError::File { path, reason } => write!(f, "key file {path}: {reason}"),
            KeyError::KeyIndex { kid, mode } => write!(
                f,
                "mode {mode} names a key by its key index, 0 to 255; key-id {kid} is not one"
            ),
            KeyError::Passphrase { mode } => write!(
                f,
                "mode {mode} takes a key, not a passphrase (passphrases are for mode=livekit)"
            ),
        }
    }
}

impl std::error::Error for KeyError {}

impl KeyError {
    /// This error, about the key on `line` of the key file at `path`.
    pub fn in_key_file(self, path: &str, line: usize) -> KeyError {
        match self {
            // Already names its file and line.
            KeyError::File { .. } => self,
            other => KeyError::File {
                path: path.to_owned(),
                reason: format!("line {line}: {other}"),
            },
        }
    }
}

/// One key line of a key file: `HEX` (kid `None`) or `KID HEX`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyLine {
    pub kid: Option<u64>,
    pub key: KeyText,
    /// 1-based line number, for errors about this key.
    pub line: usize,
}

/// The keys of a key file, and what to warn about it.
#[derive(Debug)]
pub struct KeyFile {
    /// The path as given, to name the file in messages.
    pub path: String,
    pub lines: Vec<KeyLine>,
    /// Set when others than the owner may read the file.
    pub exposed: Option<String>,
}

impl KeyFile {
    /// `what` (a key read from `line`) with errors naming this file and line.
    pub fn check<T>(&self, line: &KeyLine, what: Result<T, KeyError>) -> Result<T, KeyError> {
        what.map_err(|e| e.in_key_file(&self.path, line.line))
    }
}

/// Parses key-file text: one key per line, `KEY` or `KID KEY` (KID in decimal, KEY
/// as the mode reads it: hex, or QQ TEA's text). Blank lines and lines starting
/// with `#` are skipped. `path` only names the file in errors.
pub fn parse_key_file(text: &str, path: &str) -> Result<Vec<KeyLine>, KeyError> {
    let file_error = |line: usize, reason: String| KeyError::File {
        path: path.to_owned(),
        reason: format!("line {line}: {reason}"),
    };
    let mut keys = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line_no = index + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (kid, hex) = match fields.as_slice() {
            [hex] => (None, *hex),
            [kid, hex] => {
                let kid = kid.parse::<u64>().map_err(|_| {
                    file_error(
                        line_no,
                        "the key id must be a decimal number from 0 to 18446744073709551615".into(),
                    )
                })?;
                (Some(kid), *hex)
            }
            _ => {
                return Err(file_error(
                    line_no,
                    format!("expected `HEX` or `KID HEX`, found {} fields", fields.len()),
                ));
            }
        };
        keys.push(KeyLine {
            kid,
            key: KeyText::new(hex),
            line: line_no,
        });
    }
    if keys.is_empty() {
        return Err(KeyError::File {
            path: path.to_owned(),
            reason: "no key in the file (expected `HEX` or `KID HEX` lines)".into(),
        });
    }
    Ok(keys)
}

/// Reads and parses a key file; the file's text is wiped from memory afterwards.
pub fn read_key_file(path: &Path) -> Result<KeyFile, KeyError> {
    let shown = path.display().to_string();
    let file_error = |e: std::io::Error| KeyError::File {
        path: shown.clone(),
        reason: e.to_string(),
    };
    let mut file = std::fs::File::open(path).map_err(file_error)?;
    let mode = file.metadata().map_err(file_error)?.permissions().mode();
    let mut text = Zeroizing::new(String::new());
    file.read_to_string(&mut text).map_err(file_error)?;
    let lines = parse_key_file(&text, &shown)?;
    let exposed = (mode & 0o077 != 0).then(|| {
        format!(
            "key file {shown} can be read by others than its owner (mode {:04o}): \
             `chmod 600 {shown}`",
            mode & 0o7777
        )
    });
    Ok(KeyFile {
        path: shown,
        lines,
        exposed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_either_case() {
        let key = SecretKey::from_hex("  00ff10Ab\n").unwrap();
        assert_eq!(key.as_bytes(), &[0x00, 0xff, 0x10, 0xab]);
    }

    #[test]
    fn hex_errors_name_position_not_content() {
        assert_eq!(SecretKey::from_hex(""), Err(KeyError::Empty));
        assert_eq!(
            SecretKey::from_hex("abc"),
            Err(KeyError::OddLength { digits: 3 })
        );
        let err = SecretKey::from_hex("00zz").unwrap_err();
        assert_eq!(err, KeyError::NotHex { position: 3 });
        assert!(!err.to_string().contains("zz"));
        // Multi-byte characters must not panic on slicing.
        assert!(SecretKey::from_hex("é0").is_err());
    }

    #[test]
    fn non_hex_characters_are_named_before_the_digits_are_counted() {
        // Found by the key_text fuzz target: "é0" (three bytes) was refused as "2 hex
        // digits; a key needs an even number", and "zzz" as 3 hex digits.
        assert_eq!(
            SecretKey::from_hex("é0"),
            Err(KeyError::NotHex { position: 1 })
        );
        assert_eq!(
            SecretKey::from_hex("zzz"),
            Err(KeyError::NotHex { position: 1 })
        );
        assert_eq!(
            SecretKey::from_hex("0aé"),
            Err(KeyError::NotHex { position: 3 })
        );
        assert_eq!(
            SecretKey::from_hex("0aB"),
            Err(KeyError::OddLength { digits: 3 })
        );
    }

    #[test]
    fn wrong_length_names_accepted_lengths() {
        let text = KeyText::new(&"11".repeat(24));
        let err = text.parse(&[16], None, "aes-128-gcm").unwrap_err();
        assert_eq!(
            err.to_string(),
            "mode aes-128-gcm needs a key of 16 bytes (32 hex digits); \
             this key has 24 bytes (48 hex digits)"
        );
        assert_eq!(text.parse(&[16, 24, 32], None, "x").unwrap().len(), 24);
        let err = KeyText::new("00")
            .parse(&[16], Some(16), "qq-tea")
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "mode qq-tea needs a key of 16 bytes (32 hex digits) or 16 characters of text; \
             this key has 1 bytes (2 hex digits)"
        );
    }

    #[test]
    fn text_keys_where_the_mode_takes_them() {
        let text = KeyText::new("0123456789ABCDEF");
        assert_eq!(
            text.parse(&[16], Some(16), "qq-tea").unwrap().as_bytes(),
            b"0123456789ABCDEF"
        );
        // Elsewhere the same 16 characters are 8 bytes of hex.
        assert!(text.parse(&[16], None, "aes-128-gcm").is_err());
        let hex = KeyText::new(&"ab".repeat(16));
        assert_eq!(
            hex.parse(&[16], Some(16), "qq-tea").unwrap().as_bytes(),
            &[0xab; 16]
        );
        assert_eq!(format!("{text:?}"), "KeyText(<16 characters>)");
    }

    #[test]
    fn debug_hides_key() {
        let key = SecretKey::from_hex("deadbeef").unwrap();
        let shown = format!("{key:?}");
        assert_eq!(shown, "SecretKey(<4 bytes>)");
    }

    #[test]
    fn key_file_lines() {
        let text = "# keys\n\n0011\n7 aabb\n  18446744073709551615   CCDD  \n";
        let keys = parse_key_file(text, "k").unwrap();
        assert_eq!(keys.len(), 3);
        assert_eq!(keys[0].kid, None);
        assert_eq!(keys[0].key.as_str(), "0011");
        assert_eq!(keys[1].kid, Some(7));
        assert_eq!(keys[2].kid, Some(u64::MAX));
        assert_eq!(keys[2].key.as_str(), "CCDD");
    }

    #[test]
    fn key_file_errors_name_the_line() {
        let err = parse_key_file("0011\nseven aabb\n", "/k").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("key file /k: line 2: the key id")
        );
        let err = parse_key_file("1 2 3\n", "/k").unwrap_err();
        assert!(
            err.to_string()
                .contains("line 1: expected `HEX` or `KID HEX`")
        );
        let err = parse_key_file("# nothing\n", "/k").unwrap_err();
        assert!(err.to_string().contains("no key in the file"));
    }

    #[test]
    fn key_errors_name_the_file_and_line() {
        let file = KeyFile {
            path: "/etc/k".into(),
            lines: parse_key_file("# keys\n\n7 0011\n", "/etc/k").unwrap(),
            exposed: None,
        };
        let line = &file.lines[0];
        assert_eq!(line.line, 3);
        let err = file
            .check(line, line.key.parse(&[16], None, "aes-128-gcm"))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "key file /etc/k: line 3: mode aes-128-gcm needs a key of 16 bytes (32 hex \
             digits); this key has 2 bytes (4 hex digits)"
        );
    }

    #[test]
    fn key_files_others_can_read_are_named() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        std::fs::write(&path, "1 00112233445566778899aabbccddeeff\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_key_file(&path).unwrap().exposed, None);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let warning = read_key_file(&path).unwrap().exposed.unwrap();
        assert!(warning.contains("mode 0644"), "{warning}");
        assert!(warning.contains("chmod 600"), "{warning}");
        assert!(!warning.contains("0011223344"), "{warning}");
    }

    #[test]
    fn missing_key_file() {
        let err = read_key_file(Path::new("/nonexistent/streamcrypt.key")).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("key file /nonexistent/streamcrypt.key:")
        );
    }
}
