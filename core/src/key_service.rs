// SPDX-License-Identifier: MPL-2.0
//! What the key service (`streamcrypt-keys serve`) and its clients (the elements)
//! agree on: how keys are derived, which KID is current, which keys a grant may
//! be handed, and the request paths and answers.
//!
//! Keys are derived, never stored: `derive_key` is HKDF-SHA256 over the master
//! secret, with the stream name, the KID and the length in `info`, so that every
//! replica of the service hands out the same key and keys of different streams,
//! KIDs or lengths are unrelated.

use std::fmt;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use hkdf::Hkdf;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::grant::is_stream_name;
use crate::keys::SecretKey;

/// HKDF salt: names this scheme and its version.
pub const SALT: &[u8] = b"streamcrypt key service v1";
/// Key lengths the service derives, in bytes.
pub const KEY_LENS: [usize; 3] = [16, 24, 32];
/// Master secret lengths accepted, in bytes.
pub const MASTER_SECRET_LENS: std::ops::RangeInclusive<usize> = 32..=64;
/// Response header naming the key period in seconds.
pub const KEY_PERIOD_HEADER: &str = "Streamcrypt-Key-Period";

/// The key of `stream` for `kid`, `len` bytes long, wiped when dropped:
/// HKDF-SHA256 (RFC 5869) with salt [`SALT`] and info = stream length (one
/// byte) | stream | kid (u64 big-endian) | len (u16 big-endian).
///
/// # Panics
/// If `stream` is not a stream name or `len` is not one of [`KEY_LENS`]; callers
/// check both first (they come from requests).
pub fn derive_key(master_secret: &[u8], stream: &str, kid: u64, len: usize) -> Zeroizing<Vec<u8>> {
    assert!(is_stream_name(stream), "derive_key: not a stream name");
    assert!(KEY_LENS.contains(&len), "derive_key: key length {len}");
    let mut info = Vec::with_capacity(1 + stream.len() + 8 + 2);
    info.push(stream.len() as u8);
    info.extend_from_slice(stream.as_bytes());
    info.extend_from_slice(&kid.to_be_bytes());
    info.extend_from_slice(&(len as u16).to_be_bytes());
    let mut key = Zeroizing::new(vec![0u8; len]);
    Hkdf::<Sha256>::new(Some(SALT), master_secret)
        .expand(&info, &mut key)
        .expect("at most 32 bytes from HKDF-SHA256");
    key
}

/// The key length for a `bits` request parameter (128, 192 or 256).
pub fn key_len_of_bits(bits: u32) -> Option<usize> {
    let len = (bits / 8) as usize;
    (bits.is_multiple_of(8) && KEY_LENS.contains(&len)).then_some(len)
}

/// The KID of the period holding `unix` seconds: floor(unix / key_period).
///
/// # Panics
/// If `key_period` is 0.
pub fn kid_at(unix: u64, key_period: u64) -> u64 {
    unix / key_period
}

/// The first second of period `kid` (saturates at u64::MAX).
pub fn period_start(kid: u64, key_period: u64) -> u64 {
    kid.saturating_mul(key_period)
}

/// The first second after period `kid` (saturates at u64::MAX).
pub fn period_end(kid: u64, key_period: u64) -> u64 {
    kid.saturating_add(1).saturating_mul(key_period)
}

/// Whether the key for `kid` may be handed out at `now` under a grant that
/// expires at `grant_exp`: only keys up to the period of min(now, exp) plus the
/// next one (for prefetch). A stolen grant so never yields keys of periods after
/// the one following its expiry.
pub fn issuable(kid: u64, now: u64, grant_exp: u64, key_period: u64) -> bool {
    kid <= last_issuable(now, grant_exp, key_period)
}

/// The highest KID issuable at `now` under a grant expiring at `grant_exp`.
pub fn last_issuable(now: u64, grant_exp: u64, key_period: u64) -> u64 {
    kid_at(now.min(grant_exp), key_period).saturating_add(1)
}

/// When the key for `kid` becomes issuable: the start of the period before it.
pub fn issued_from(kid: u64, key_period: u64) -> u64 {
    period_start(kid.saturating_sub(1), key_period)
}

/// How a key is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyFormat {
    /// Lowercase hex, no newline (`text/plain`): for our elements.
    #[default]
    Hex,
    /// The bytes (`application/octet-stream`): for HLS players.
    Raw,
}

impl KeyFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyFormat::Hex => "hex",
            KeyFormat::Raw => "raw",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "hex" => Some(KeyFormat::Hex),
            "raw" => Some(KeyFormat::Raw),
            _ => None,
        }
    }
}

/// The path and query of the key of `stream` for `kid` (names need no
/// percent-encoding: they are restricted to `[A-Za-z0-9._-]`).
pub fn key_path(stream: &str, kid: u64, bits: u32, format: KeyFormat) -> String {
    format!(
        "/v1/streams/{stream}/keys/{kid}?bits={bits}&format={}",
        format.as_str()
    )
}

/// The path of the current KID of `stream`.
pub fn current_path(stream: &str) -> String {
    format!("/v1/streams/{stream}/current")
}

/// The answer of `GET /v1/streams/{stream}/current`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Current {
    pub stream: String,
    pub kid: u64,
    pub key_period: u64,
    /// UNIX second at which `kid + 1` becomes current.
    pub period_ends: u64,
}

/// The answer of `GET /health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    pub status: String,
    pub key_period: u64,
}

/// The text of a file holding a secret (`what` names it in errors), wiped when
/// dropped. Refuses a file that others than its owner may access.
pub fn read_private_file(path: &Path, what: &str) -> Result<Zeroizing<String>, String> {
    let shown = path.display();
    let with_path = |e: String| format!("{what} {shown}: {e}");
    let mut file = std::fs::File::open(path).map_err(|e| with_path(e.to_string()))?;
    let mode = file
        .metadata()
        .map_err(|e| with_path(e.to_string()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(with_path(format!(
            "others than its owner may access it (mode {:04o}): `chmod 600 {shown}`",
            mode & 0o7777
        )));
    }
    let mut text = Zeroizing::new(String::new());
    file.read_to_string(&mut text)
        .map_err(|e| with_path(e.to_string()))?;
    Ok(text)
}

/// The master secret the service derives keys from, wiped when dropped.
pub struct MasterSecret(SecretKey);

impl MasterSecret {
    /// From the first line of a master secret file: hex, 32 to 64 bytes.
    pub fn from_text(text: &str) -> Result<Self, String> {
        let line = text.lines().next().unwrap_or("");
        let key = SecretKey::from_hex(line).map_err(|e| format!("first line: {e}"))?;
        if !MASTER_SECRET_LENS.contains(&key.len()) {
            return Err(format!(
                "the master secret has {} bytes; it needs {} to {} bytes ({} to {} hex digits)",
                key.len(),
                MASTER_SECRET_LENS.start(),
                MASTER_SECRET_LENS.end(),
                2 * MASTER_SECRET_LENS.start(),
                2 * MASTER_SECRET_LENS.end()
            ));
        }
        Ok(Self(key))
    }

    /// Reads a master secret file. Refuses files that others than the owner may
    /// access.
    pub fn from_file(path: &Path) -> Result<Self, String> {
        let text = read_private_file(path, "master secret file")?;
        Self::from_text(&text).map_err(|e| format!("master secret file {}: {e}", path.display()))
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for MasterSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MasterSecret(<{} bytes>)", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn master() -> Vec<u8> {
        (0u8..32).collect()
    }

    #[test]
    fn derive_key_known_answers() {
        // Computed independently with Python's `cryptography` (38.0, Debian 12):
        //   HKDF(algorithm=SHA256(), length=L, salt=b"streamcrypt key service v1",
        //        info=bytes([len(s)]) + s + struct.pack(">QH", kid, L))
        //   .derive(bytes(range(32))).hex()
        assert_eq!(
            derive_key(&master(), "room1", 27_000_000, 16)[..],
            crate::test_util::hex("9741e77406326b203984060795b844e1")[..]
        );
        assert_eq!(
            derive_key(&master(), "live.cam-2", 0, 32)[..],
            crate::test_util::hex(
                "ff7af43af55b819aeaf3442c14bd137995eed8e341361de8871a45cce353b01d"
            )[..]
        );
    }

    #[test]
    fn derive_key_separates_stream_kid_length_and_secret() {
        let base = derive_key(&master(), "room1", 7, 32);
        assert_eq!(base.len(), 32);
        assert_eq!(derive_key(&master(), "room1", 7, 32), base);
        assert_ne!(derive_key(&master(), "room2", 7, 32), base);
        assert_ne!(derive_key(&master(), "room1", 8, 32), base);
        let mut other = master();
        other[0] ^= 1;
        assert_ne!(derive_key(&other, "room1", 7, 32), base);
        // A shorter key is not a prefix of a longer one: the length is in info.
        let short = derive_key(&master(), "room1", 7, 16);
        assert_eq!(short.len(), 16);
        assert_ne!(short[..], base[..16]);
        let middle = derive_key(&master(), "room1", 7, 24);
        assert_ne!(middle[..16], short[..]);
        // The stream's length prefix keeps "ab"+kid apart from "a"+kid bytes.
        assert_ne!(
            derive_key(&master(), "ab", 0, 16),
            derive_key(&master(), "a", 0x62 << 56, 16)
        );
    }

    #[test]
    #[should_panic(expected = "not a stream name")]
    fn derive_key_refuses_bad_names() {
        derive_key(&master(), "../x", 0, 16);
    }

    #[test]
    fn bits_to_lengths() {
        assert_eq!(key_len_of_bits(128), Some(16));
        assert_eq!(key_len_of_bits(192), Some(24));
        assert_eq!(key_len_of_bits(256), Some(32));
        for bits in [0, 64, 129, 130, 512, u32::MAX] {
            assert_eq!(key_len_of_bits(bits), None, "{bits}");
        }
    }

    #[test]
    fn periods() {
        assert_eq!(kid_at(119, 60), 1);
        assert_eq!(kid_at(120, 60), 2);
        assert_eq!(period_start(2, 60), 120);
        assert_eq!(period_end(2, 60), 180);
        assert_eq!(period_end(u64::MAX, 60), u64::MAX);
        assert_eq!(issued_from(3, 60), 120);
        assert_eq!(issued_from(0, 60), 0);
    }

    #[test]
    fn issuable_edges() {
        let p = 60;
        // now in period 10, grant valid long after: keys up to 11.
        assert!(issuable(0, 600, 10_000, p));
        assert!(issuable(10, 600, 10_000, p));
        assert!(issuable(11, 659, 10_000, p));
        assert!(!issuable(12, 659, 10_000, p));
        assert!(issuable(12, 660, 10_000, p));
        // The grant expires in period 10: nothing after 11, however late it is
        // asked (the service refuses expired grants anyway; this is the bound).
        assert!(issuable(11, 600, 610, p));
        assert!(!issuable(12, 600, 610, p));
        assert!(!issuable(12, 5_000, 610, p));
        // exp exactly at a period start counts that period.
        assert!(issuable(11, 600, 600, p));
        assert!(!issuable(12, 600, 600, p));
        assert_eq!(last_issuable(600, 10_000, p), 11);
        // No overflow at the ends.
        assert!(issuable(u64::MAX, u64::MAX, u64::MAX, 1));
        assert!(!issuable(u64::MAX, 0, 0, 1));
    }

    #[test]
    fn paths() {
        assert_eq!(
            key_path("room1", 42, 128, KeyFormat::Raw),
            "/v1/streams/room1/keys/42?bits=128&format=raw"
        );
        assert_eq!(current_path("room1"), "/v1/streams/room1/current");
        assert_eq!(KeyFormat::parse("hex"), Some(KeyFormat::Hex));
        assert_eq!(KeyFormat::parse("HEX"), None);
        assert_eq!(KeyFormat::default(), KeyFormat::Hex);
    }

    #[test]
    fn master_secret_text() {
        assert_eq!(
            MasterSecret::from_text(&format!("{}\nignored", "ab".repeat(32)))
                .unwrap()
                .as_bytes(),
            &[0xab; 32]
        );
        assert!(MasterSecret::from_text(&"ab".repeat(64)).is_ok());
        let err = MasterSecret::from_text(&"ab".repeat(31)).unwrap_err();
        assert_eq!(
            err,
            "the master secret has 31 bytes; it needs 32 to 64 bytes (64 to 128 hex digits)"
        );
        assert!(MasterSecret::from_text(&"ab".repeat(65)).is_err());
        let err = MasterSecret::from_text("").unwrap_err();
        assert!(err.contains("first line"), "{err}");
        let err = MasterSecret::from_text(&format!("{}zz", "ab".repeat(32))).unwrap_err();
        assert!(err.contains("character 65"), "{err}");
        assert!(!err.contains("abab"), "{err}");
    }

    #[test]
    fn master_secret_file_modes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master");
        std::fs::write(&path, "cd".repeat(32)).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = MasterSecret::from_file(&path).unwrap_err();
        assert!(
            err.contains("mode 0644") && err.contains("chmod 600"),
            "{err}"
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(
            MasterSecret::from_file(&path).unwrap().as_bytes(),
            &[0xcd; 32]
        );
        let err = MasterSecret::from_file(&dir.path().join("missing")).unwrap_err();
        assert!(
            err.contains("missing") && err.contains("No such file"),
            "{err}"
        );
        // The Debug form never shows the bytes.
        let secret = MasterSecret::from_file(&path).unwrap();
        assert_eq!(format!("{secret:?}"), "MasterSecret(<32 bytes>)");
    }
}
