// SPDX-License-Identifier: MPL-2.0
//! SFrame (RFC 9605): one encrypted frame per media buffer.
//!
//! `header || AEAD(key, salt XOR CTR, aad = header, payload)`, with the key and salt
//! derived per KID from a base key by HKDF. No GStreamer in here: the elements call
//! [`SframeKey::encrypt_into`] and [`SframeKey::decrypt_into`] on mapped memory.

pub mod counter;
pub mod header;
pub mod replay;
pub mod suite;

use hkdf::Hkdf;
use sha2::{Digest, Sha256, Sha512};
use zeroize::Zeroizing;

use crate::cipher::{Aead, CipherError, MAX_TAG_LEN, NONCE_LEN};
pub use counter::{CounterError, Fingerprint, SendCounter};
pub use header::{Header, HeaderError, MAX_HEADER_LEN};
pub use replay::{Replay, ReplayWindow};
use sm3::Sm3;
pub use suite::{AeadKind, CipherSuite, Kdf};

/// Most bytes an SFrame adds to a payload: the longest header and tag.
pub const MAX_OVERHEAD: usize = MAX_HEADER_LEN + MAX_TAG_LEN;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// Not an SFrame, or cut short before its tag.
    Malformed(HeaderError),
    /// Shorter than header plus tag.
    TooShort { len: usize, min: usize },
    /// Wrong key, tampered or truncated frame.
    Authentication,
    /// The output buffer cannot hold the result.
    OutputTooSmall { needed: usize, got: usize },
    /// The payload is too large for one AEAD invocation.
    TooLong,
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::Malformed(e) => write!(f, "not an SFrame: {e}"),
            FrameError::TooShort { len, min } => write!(
                f,
                "not an SFrame: {len} bytes is shorter than header and tag ({min} bytes)"
            ),
            FrameError::Authentication => write!(
                f,
                "authentication failed (wrong key or mode, or the frame was altered or truncated)"
            ),
            FrameError::OutputTooSmall { needed, got } => {
                write!(f, "output buffer of {got} bytes, {needed} needed")
            }
            FrameError::TooLong => write!(f, "payload too large for one AEAD operation"),
        }
    }
}

impl std::error::Error for FrameError {}

impl From<CipherError> for FrameError {
    fn from(e: CipherError) -> Self {
        match e {
            CipherError::Authentication => FrameError::Authentication,
            CipherError::TooLong => FrameError::TooLong,
        }
    }
}

/// An SFrame as received: its header, and where header and ciphertext are.
#[derive(Debug, Clone, Copy)]
pub struct ParsedFrame<'a> {
    pub header: Header,
    header_bytes: &'a [u8],
    ciphertext: &'a [u8],
}

impl<'a> ParsedFrame<'a> {
    pub fn parse(frame: &'a [u8]) -> Result<Self, FrameError> {
        let (header, len) = Header::decode(frame).map_err(FrameError::Malformed)?;
        let (header_bytes, ciphertext) = frame.split_at(len);
        Ok(Self {
            header,
            header_bytes,
            ciphertext,
        })
    }

    /// Length of the plaintext this frame carries if it authenticates.
    pub fn plaintext_len(&self, suite: CipherSuite) -> Option<usize> {
        self.ciphertext.len().checked_sub(suite.tag_len())
    }
}

/// HKDF-Extract then Expand into `okm`, with the suite's hash.
fn hkdf(kdf: Kdf, ikm: &[u8], info: &[u8], okm: &mut [u8]) {
    // Salt "" as in RFC 9605 section 4.4.2 (HMAC pads it to zeros, as RFC 5869
    // does for an absent salt).
    match kdf {
        Kdf::Sha256 => Hkdf::<Sha256>::new(Some(&[]), ikm).expand(info, okm),
        Kdf::Sha512 => Hkdf::<Sha512>::new(Some(&[]), ikm).expand(info, okm),
        Kdf::Sm3 => Hkdf::<Sm3>::new(Some(&[]), ikm).expand(info, okm),
    }
    .expect("SFrame derives at most 255 hash lengths");
}

/// `"SFrame 1.0 Secret <what> " || KID (8 bytes) || suite (2 bytes)`.
fn label(what: &str, kid: u64, suite: CipherSuite) -> Vec<u8> {
    let mut label = format!("SFrame 1.0 Secret {what} ").into_bytes();
    label.extend_from_slice(&kid.to_be_bytes());
    label.extend_from_slice(&suite.id().to_be_bytes());
    label
}

/// AAD is `header || metadata`; without metadata the header is used as it lies.
fn with_metadata<'a>(header: &'a [u8], metadata: &[u8]) -> std::borrow::Cow<'a, [u8]> {
    if metadata.is_empty() {
        header.into()
    } else {
        [header, metadata].concat().into()
    }
}

/// The per-KID key state of RFC 9605: AEAD key (as a ready key schedule) and salt.
pub struct SframeKey {
    suite: CipherSuite,
    kid: u64,
    salt: Zeroizing<[u8; NONCE_LEN]>,
    aead: Aead,
    fingerprint: Fingerprint,
}

impl SframeKey {
    /// Derives the SFrame key and salt for `kid` from `base_key` (RFC 9605, 4.4.2).
    pub fn derive(suite: CipherSuite, kid: u64, base_key: &[u8]) -> Self {
        let mut key = Zeroizing::new(vec![0u8; suite.key_len()]);
        let mut salt = Zeroizing::new([0u8; NONCE_LEN]);
        hkdf(suite.kdf(), base_key, &label("key", kid, suite), &mut key);
        hkdf(
            suite.kdf(),
            base_key,
            &label("salt", kid, suite),
            &mut *salt,
        );
        let aead = match suite.aead() {
            AeadKind::Gcm(cipher) => Aead::gcm(cipher, &key),
            AeadKind::CtrHmac(tag_len) => Aead::ctr_hmac(&key, tag_len),
        };
        let fingerprint = Sha256::new()
            .chain_update(b"streamcrypt counter registry")
            .chain_update(label("key", kid, suite))
            .chain_update(base_key)
            .finalize()
            .into();
        Self {
            suite,
            kid,
            salt,
            aead,
            fingerprint,
        }
    }

    pub fn suite(&self) -> CipherSuite {
        self.suite
    }

    pub fn kid(&self) -> u64 {
        self.kid
    }

    /// Identifies (suite, KID, base key) without revealing the key.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    fn nonce(&self, ctr: u64) -> [u8; NONCE_LEN] {
        let mut nonce = *self.salt;
        for (n, c) in nonce[NONCE_LEN - 8..].iter_mut().zip(ctr.to_be_bytes()) {
            *n ^= c;
        }
        nonce
    }

    /// Size of the SFrame carrying `payload_len` bytes under counter `ctr`.
    pub fn encrypted_len(&self, ctr: u64, payload_len: usize) -> usize {
        Header { kid: self.kid, ctr }.encoded_len() + payload_len + self.suite.tag_len()
    }

    /// Writes the SFrame for `plaintext` to the start of `out`; returns its length.
    /// `metadata` is authenticated with the frame but not sent (RFC 9605, 4.4.3);
    /// the elements use none.
    pub fn encrypt_into(
        &self,
        ctr: u64,
        metadata: &[u8],
        plaintext: &[u8],
        out: &mut [u8],
    ) -> Result<usize, FrameError> {
        let needed = self.encrypted_len(ctr, plaintext.len());
        if out.len() < needed {
            return Err(FrameError::OutputTooSmall {
                needed,
                got: out.len(),
            });
        }
        let header_len = Header { kid: self.kid, ctr }.encode(out);
        let (header, rest) = out.split_at_mut(header_len);
        let (body, tag) = rest[..needed - header_len].split_at_mut(plaintext.len());
        body.copy_from_slice(plaintext);
        let aad = with_metadata(header, metadata);
        self.aead.seal_in_place(&self.nonce(ctr), &aad, body, tag)?;
        Ok(needed)
    }

    /// Authenticates `frame` (which must carry this key's KID) and writes its
    /// plaintext to the start of `out`; returns the plaintext length. On error
    /// `out` holds no usable data.
    pub fn decrypt_into(
        &self,
        frame: &ParsedFrame,
        metadata: &[u8],
        out: &mut [u8],
    ) -> Result<usize, FrameError> {
        debug_assert_eq!(frame.header.kid, self.kid);
        let min = frame.header_bytes.len() + self.suite.tag_len();
        if frame.plaintext_len(self.suite).is_none() {
            return Err(FrameError::TooShort {
                len: frame.header_bytes.len() + frame.ciphertext.len(),
                min,
            });
        }
        let needed = frame.ciphertext.len();
        if out.len() < needed {
            return Err(FrameError::OutputTooSmall {
                needed,
                got: out.len(),
            });
        }
        let in_out = &mut out[..needed];
        in_out.copy_from_slice(frame.ciphertext);
        let nonce = self.nonce(frame.header.ctr);
        let aad = with_metadata(frame.header_bytes, metadata);
        Ok(self.aead.open_in_place(&nonce, &aad, in_out)?)
    }

    /// Encrypts `payload` in place; returns the header to put in front of it and
    /// the tag to put after it. For buffers that can be changed where they are:
    /// no copy of the payload.
    pub fn encrypt_in_place(
        &self,
        ctr: u64,
        payload: &mut [u8],
    ) -> Result<SealedParts, FrameError> {
        let mut parts = SealedParts {
            header: [0; MAX_HEADER_LEN],
            header_len: 0,
            tag: [0; MAX_TAG_LEN],
            tag_len: self.suite.tag_len(),
        };
        parts.header_len = Header { kid: self.kid, ctr }.encode(&mut parts.header);
        self.aead.seal_in_place(
            &self.nonce(ctr),
            &parts.header[..parts.header_len],
            payload,
            &mut parts.tag[..parts.tag_len],
        )?;
        Ok(parts)
    }

    /// Authenticates and decrypts a whole SFrame where it lies (it must carry this
    /// key's KID); returns where the plaintext is in `frame`.
    pub fn decrypt_in_place(&self, frame: &mut [u8]) -> Result<std::ops::Range<usize>, FrameError> {
        let (header, header_len) = Header::decode(frame).map_err(FrameError::Malformed)?;
        debug_assert_eq!(header.kid, self.kid);
        let min = header_len + self.suite.tag_len();
        if frame.len() < min {
            return Err(FrameError::TooShort {
                len: frame.len(),
                min,
            });
        }
        let (header_bytes, in_out) = frame.split_at_mut(header_len);
        let len = self
            .aead
            .open_in_place(&self.nonce(header.ctr), header_bytes, in_out)?;
        Ok(header_len..header_len + len)
    }
}

/// What `SframeKey::encrypt_in_place` adds around the payload.
#[derive(Debug, Clone, Copy)]
pub struct SealedParts {
    header: [u8; MAX_HEADER_LEN],
    header_len: usize,
    tag: [u8; MAX_TAG_LEN],
    tag_len: usize,
}

impl SealedParts {
    pub fn header(&self) -> &[u8] {
        &self.header[..self.header_len]
    }

    pub fn tag(&self) -> &[u8] {
        &self.tag[..self.tag_len]
    }
}

#[cfg(test)]
mod tests;
