// SPDX-License-Identifier: MPL-2.0
//! Grants: who may publish or watch which streams, until when. A grant is a JWT
//! (RFC 7519) signed with EdDSA over Ed25519 (RFC 8037), so that any backend can
//! mint one with its usual JWT library, and the key service and the elements can
//! check or read it without a shared secret.
//!
//! Claims: `sub` (the user), `stream` (a stream name or a pattern), `rights`
//! (TRTC's privilege-map bits, see [`rights`]), `exp` and optional `nbf` (UNIX
//! seconds). `iat` and unknown claims are ignored. Times are checked without clock
//! skew leeway: issuers should set `nbf` a little in the past if their clocks
//! may run ahead of the service's.
//!
//! The issuer's private key is held in `ring`'s key pair inside a box that is
//! wiped on drop, and its PKCS#8 text in a `Zeroizing` buffer.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::rand::SystemRandom;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::cipher::wiped::Wiped;

/// The longest token `verify` and `peek` read; longer ones are refused before
/// any decoding, so a client cannot make the service parse megabytes.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;
/// The longest stream name, in bytes.
pub const MAX_STREAM_LEN: usize = 128;

const ED25519_SIGNATURE_LEN: usize = 64;
const ED25519_KEY_LEN: usize = 32;
/// DER of a PKCS#8 v1 Ed25519 private key (RFC 8410) up to its 32-byte seed, as
/// `openssl genpkey -algorithm ed25519` writes it.
const PKCS8_V1_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];
/// DER of an Ed25519 SubjectPublicKeyInfo (RFC 8410) up to its 32-byte key.
const SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];
const PRIVATE_KEY_LABEL: &str = "PRIVATE KEY";
const PUBLIC_KEY_LABEL: &str = "PUBLIC KEY";

/// TRTC's privilege-map bits, which the `rights` claim uses as they are.
pub mod rights {
    /// Create a room (TRTC; no meaning here).
    pub const CREATE_ROOM: u8 = 0x01;
    /// Enter a room (TRTC; no meaning here).
    pub const ENTER_ROOM: u8 = 0x02;
    pub const SEND_AUDIO: u8 = 0x04;
    pub const RECEIVE_AUDIO: u8 = 0x08;
    pub const SEND_VIDEO: u8 = 0x10;
    pub const RECEIVE_VIDEO: u8 = 0x20;
    pub const SEND_SUB_VIDEO: u8 = 0x40;
    pub const RECEIVE_SUB_VIDEO: u8 = 0x80;
    /// Any of these bits gives publish rights.
    pub const PUBLISH: u8 = SEND_AUDIO | SEND_VIDEO | SEND_SUB_VIDEO;
    /// Any of these bits gives watch rights.
    pub const WATCH: u8 = RECEIVE_AUDIO | RECEIVE_VIDEO | RECEIVE_SUB_VIDEO;
    /// TRTC's "all privileges": publish and watch.
    pub const ALL: u8 = 0xff;
    /// TRTC's "watch only".
    pub const WATCH_ONLY: u8 = 0xab;
}

/// What a grant is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Right {
    Watch,
    Publish,
}

impl Right {
    /// The rights bits any of which give this right.
    pub fn bits(self) -> u8 {
        match self {
            Right::Watch => rights::WATCH,
            Right::Publish => rights::PUBLISH,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Right::Watch => "watch",
            Right::Publish => "publish",
        }
    }
}

impl std::str::FromStr for Right {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "watch" => Ok(Right::Watch),
            "publish" => Ok(Right::Publish),
            other => Err(format!(
                "`{other}` is not a right; expected watch or publish"
            )),
        }
    }
}

/// The claims of a grant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    /// A stream name, or a pattern: a prefix and one trailing `*`.
    pub stream: String,
    pub rights: u8,
    pub exp: u64,
    /// 0 when the token has none.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub nbf: u64,
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

/// Why a grant was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GrantError {
    /// Not a JWT we can read; says what is wrong.
    Malformed(String),
    /// The header names another algorithm than EdDSA.
    UnsupportedAlg(String),
    /// No issuer key verifies the signature.
    BadSignature,
    Expired {
        exp: u64,
    },
    NotYetValid {
        nbf: u64,
    },
    TooLong {
        len: usize,
    },
}

impl fmt::Display for GrantError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GrantError::Malformed(what) => write!(f, "malformed grant: {what}"),
            GrantError::UnsupportedAlg(alg) => write!(
                f,
                "unsupported grant algorithm {:?}: grants are signed with EdDSA (Ed25519)",
                truncated(alg, 32)
            ),
            GrantError::BadSignature => write!(
                f,
                "bad grant signature: no trusted issuer key verifies it (forged, altered, or from another issuer)"
            ),
            GrantError::Expired { exp } => {
                write!(f, "grant expired at {} ({exp})", utc_time(*exp))
            }
            GrantError::NotYetValid { nbf } => {
                write!(f, "grant not valid before {} ({nbf})", utc_time(*nbf))
            }
            GrantError::TooLong { len } => write!(
                f,
                "grant too long: {len} bytes, at most {MAX_TOKEN_LEN} are read"
            ),
        }
    }
}

impl std::error::Error for GrantError {}

/// Why a valid grant does not allow a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    OtherStream { granted: String, asked: String },
    MissingRight { right: Right, rights: u8 },
}

impl fmt::Display for Denied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Denied::OtherStream { granted, asked } => {
                write!(f, "the grant is for stream {granted}, not {asked}")
            }
            Denied::MissingRight { right, rights } => write!(
                f,
                "the grant has no {} right (rights {rights:#04x}; {} needs one of {:#04x})",
                right.name(),
                right.name(),
                right.bits()
            ),
        }
    }
}

impl std::error::Error for Denied {}

/// Whether `name` is a stream name: 1 to 128 bytes of `[A-Za-z0-9._-]`, and not
/// `.` or `..` (names become path segments).
pub fn is_stream_name(name: &str) -> bool {
    (1..=MAX_STREAM_LEN).contains(&name.len())
        && name != "."
        && name != ".."
        && name.bytes().all(is_stream_byte)
}

fn is_stream_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-')
}

/// Whether `pattern` is what a grant's `stream` may hold: a stream name, or a
/// prefix of stream-name bytes followed by one `*` (`*` alone: any stream).
pub fn is_stream_pattern(pattern: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => prefix.len() < MAX_STREAM_LEN && prefix.bytes().all(is_stream_byte),
        None => is_stream_name(pattern),
    }
}

impl Claims {
    /// Reads the claims of `token` WITHOUT checking its signature or times: for
    /// holders of a grant who want to know its expiry and scope, never to decide
    /// access.
    pub fn peek(token: &str) -> Result<Claims, GrantError> {
        Token::split(token)?.claims()
    }

    /// Whether the grant names `stream`, itself or by pattern.
    pub fn covers(&self, stream: &str) -> bool {
        if !is_stream_name(stream) {
            return false;
        }
        match self.stream.strip_suffix('*') {
            Some(prefix) => stream.starts_with(prefix),
            None => self.stream == stream,
        }
    }

    pub fn can_watch(&self) -> bool {
        self.rights & rights::WATCH != 0
    }

    pub fn can_publish(&self) -> bool {
        self.rights & rights::PUBLISH != 0
    }

    /// Whether the grant gives `right` on `stream`, and if not, why.
    pub fn allows(&self, stream: &str, right: Right) -> Result<(), Denied> {
        self.check_stream(stream)?;
        self.check_right(right)
    }

    /// Whether the grant covers `stream`, and if not, why.
    pub fn check_stream(&self, stream: &str) -> Result<(), Denied> {
        if self.covers(stream) {
            Ok(())
        } else {
            Err(Denied::OtherStream {
                granted: self.stream.clone(),
                asked: stream.to_owned(),
            })
        }
    }

    /// Whether the grant has `right` (on the streams it covers), and if not, why.
    pub fn check_right(&self, right: Right) -> Result<(), Denied> {
        if self.rights & right.bits() != 0 {
            Ok(())
        } else {
            Err(Denied::MissingRight {
                right,
                rights: self.rights,
            })
        }
    }

    /// Checks the times against `now` (UNIX seconds): valid from `nbf` included
    /// to `exp` excluded (RFC 7519, 4.1.4 and 4.1.5).
    pub fn check_time(&self, now: u64) -> Result<(), GrantError> {
        if now >= self.exp {
            return Err(GrantError::Expired { exp: self.exp });
        }
        if now < self.nbf {
            return Err(GrantError::NotYetValid { nbf: self.nbf });
        }
        Ok(())
    }
}

/// The three parts of a compact JWS, still encoded.
struct Token<'a> {
    header: &'a str,
    payload: &'a str,
    signature: &'a str,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    /// Extensions the verifier must understand (RFC 7515, 4.1.11); we know none.
    #[serde(default)]
    crit: Option<serde_json::Value>,
}

impl<'a> Token<'a> {
    fn split(token: &'a str) -> Result<Self, GrantError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(GrantError::TooLong { len: token.len() });
        }
        if token.is_empty() {
            return Err(GrantError::Malformed("the token is empty".into()));
        }
        let parts: Vec<&str> = token.split('.').collect();
        let [header, payload, signature] = parts[..] else {
            return Err(GrantError::Malformed(format!(
                "a JWT has 3 parts separated by '.', this one has {}",
                parts.len()
            )));
        };
        Ok(Token {
            header,
            payload,
            signature,
        })
    }

    fn check_header(&self) -> Result<(), GrantError> {
        let bytes = decode_part(self.header, "header")?;
        let header: Header = serde_json::from_slice(&bytes)
            .map_err(|e| GrantError::Malformed(format!("the header is not a JWS header: {e}")))?;
        if header.alg != "EdDSA" {
            return Err(GrantError::UnsupportedAlg(header.alg));
        }
        if header.crit.is_some() {
            return Err(GrantError::Malformed(
                "the header has critical extensions (crit), which are not supported".into(),
            ));
        }
        Ok(())
    }

    fn check_signature(
        &self,
        signing_input: &str,
        keys: &[VerifyingKey],
    ) -> Result<(), GrantError> {
        let signature = decode_part(self.signature, "signature")?;
        if signature.len() != ED25519_SIGNATURE_LEN {
            return Err(GrantError::Malformed(format!(
                "the signature has {} bytes; Ed25519 signatures have {ED25519_SIGNATURE_LEN}",
                signature.len()
            )));
        }
        let verifies = |key: &VerifyingKey| {
            UnparsedPublicKey::new(&ED25519, key.bytes)
                .verify(signing_input.as_bytes(), &signature)
                .is_ok()
        };
        if keys.iter().any(verifies) {
            Ok(())
        } else {
            Err(GrantError::BadSignature)
        }
    }

    fn claims(&self) -> Result<Claims, GrantError> {
        let bytes = decode_part(self.payload, "payload")?;
        let claims: Claims = serde_json::from_slice(&bytes)
            .map_err(|e| GrantError::Malformed(format!("the claims are not a grant's: {e}")))?;
        if !is_stream_pattern(&claims.stream) {
            return Err(GrantError::Malformed(format!(
                "the stream claim {:?} is neither a stream name (1 to {MAX_STREAM_LEN} of A-Z a-z 0-9 . _ -) \
                 nor such a prefix followed by *",
                truncated(&claims.stream, 40)
            )));
        }
        Ok(claims)
    }
}

fn decode_part(part: &str, what: &str) -> Result<Vec<u8>, GrantError> {
    URL_SAFE_NO_PAD.decode(part).map_err(|e| {
        GrantError::Malformed(format!("the {what} is not base64url without padding: {e}"))
    })
}

/// At most `max` characters of `text`, for quoting untrusted text in messages.
fn truncated(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text.to_owned(),
    }
}

/// Checks `token`'s algorithm, its signature against any of `keys`, its claims,
/// and that it is valid at `now` (UNIX seconds).
pub fn verify(keys: &[VerifyingKey], token: &str, now: u64) -> Result<Claims, GrantError> {
    let parts = Token::split(token)?;
    parts.check_header()?;
    // The header, '.', and the payload: the bytes the signature covers.
    let signing_input = &token[..parts.header.len() + 1 + parts.payload.len()];
    parts.check_signature(signing_input, keys)?;
    let claims = parts.claims()?;
    claims.check_time(now)?;
    Ok(claims)
}

/// The compact JWT of `claims`, signed by `key`.
pub fn sign(key: &SigningKey, claims: &Claims) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"EdDSA","typ":"JWT"}"#);
    let payload =
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).expect("claims serialise to JSON"));
    key.sign_jws(&format!("{header}.{payload}"))
}

/// An issuer key file that could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuerKeyError(pub String);

impl fmt::Display for IssuerKeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for IssuerKeyError {}

/// An issuer's Ed25519 private key.
pub struct SigningKey {
    pair: Wiped<Ed25519KeyPair>,
    /// PKCS#8 DER, to write the key out.
    pkcs8: Zeroizing<Vec<u8>>,
}

impl SigningKey {
    /// A new random key.
    pub fn generate() -> Result<Self, IssuerKeyError> {
        let document = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .map_err(|_| IssuerKeyError("the system random generator failed".into()))?;
        Self::from_pkcs8(document.as_ref())
    }

    /// From PKCS#8 DER: v1 (seed only, as OpenSSL writes it) or v2 (seed and
    /// public key, as `ring` writes it; the two must match).
    pub fn from_pkcs8(der: &[u8]) -> Result<Self, IssuerKeyError> {
        let pair = if der.len() == PKCS8_V1_PREFIX.len() + ED25519_KEY_LEN
            && der.starts_with(&PKCS8_V1_PREFIX)
        {
            Ed25519KeyPair::from_seed_unchecked(&der[PKCS8_V1_PREFIX.len()..])
        } else {
            Ed25519KeyPair::from_pkcs8(der)
        }
        .map_err(|e| IssuerKeyError(format!("not an Ed25519 PKCS#8 private key: {e}")))?;
        Ok(Self {
            pair: Wiped::new(pair),
            pkcs8: Zeroizing::new(der.to_vec()),
        })
    }

    /// From PEM text with a "PRIVATE KEY" block.
    pub fn from_pem(text: &str) -> Result<Self, IssuerKeyError> {
        Self::from_pkcs8(&pem_decode(text, PRIVATE_KEY_LABEL)?)
    }

    /// PEM text with a "PRIVATE KEY" block (PKCS#8), wiped when dropped.
    pub fn to_pem(&self) -> Zeroizing<String> {
        pem_encode(&self.pkcs8, PRIVATE_KEY_LABEL)
    }

    /// The compact JWS of `signing_input` (the encoded header, '.', the encoded
    /// payload), whatever they hold: for tests and fuzzing; grants are made with
    /// [`sign`].
    pub fn sign_jws(&self, signing_input: &str) -> String {
        let signature = self.pair.sign(signing_input.as_bytes());
        format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature.as_ref())
        )
    }

    pub fn verifying_key(&self) -> VerifyingKey {
        let mut bytes = [0u8; ED25519_KEY_LEN];
        bytes.copy_from_slice(self.pair.public_key().as_ref());
        VerifyingKey { bytes }
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey(public {})", self.verifying_key().to_hex())
    }
}

/// An issuer's Ed25519 public key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifyingKey {
    bytes: [u8; ED25519_KEY_LEN],
}

impl VerifyingKey {
    pub fn from_bytes(bytes: [u8; ED25519_KEY_LEN]) -> Self {
        Self { bytes }
    }

    pub fn as_bytes(&self) -> &[u8; ED25519_KEY_LEN] {
        &self.bytes
    }

    /// From PEM text with a "PUBLIC KEY" block (SubjectPublicKeyInfo).
    pub fn from_pem(text: &str) -> Result<Self, IssuerKeyError> {
        let der = pem_decode(text, PUBLIC_KEY_LABEL)?;
        match der.strip_prefix(&SPKI_PREFIX[..]) {
            Some(key) if key.len() == ED25519_KEY_LEN => Ok(Self {
                bytes: key.try_into().expect("32 bytes"),
            }),
            _ => Err(IssuerKeyError(
                "not an Ed25519 public key (SubjectPublicKeyInfo of 44 bytes)".into(),
            )),
        }
    }

    pub fn to_pem(&self) -> String {
        let mut der = SPKI_PREFIX.to_vec();
        der.extend_from_slice(&self.bytes);
        pem_encode(&der, PUBLIC_KEY_LABEL).to_string()
    }

    fn to_hex(self) -> String {
        self.bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// The DER of the one `label` block of PEM `text`, wiped when dropped.
fn pem_decode(text: &str, label: &str) -> Result<Zeroizing<Vec<u8>>, IssuerKeyError> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let Some(start) = text.find(&begin) else {
        return Err(IssuerKeyError(format!(
            "no \"{begin}\" line (expected a PEM {label})"
        )));
    };
    let body = &text[start + begin.len()..];
    let Some(stop) = body.find(&end) else {
        return Err(IssuerKeyError(format!("no \"{end}\" line")));
    };
    let base64: Zeroizing<String> = Zeroizing::new(body[..stop].split_ascii_whitespace().collect());
    STANDARD
        .decode(base64.as_bytes())
        .map(Zeroizing::new)
        .map_err(|e| IssuerKeyError(format!("the PEM {label} is not base64: {e}")))
}

fn pem_encode(der: &[u8], label: &str) -> Zeroizing<String> {
    let base64 = Zeroizing::new(STANDARD.encode(der));
    let mut text = Zeroizing::new(format!("-----BEGIN {label}-----\n"));
    for line in base64.as_bytes().chunks(64) {
        text.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        text.push('\n');
    }
    text.push_str(&format!("-----END {label}-----\n"));
    text
}

/// `unix` seconds as an ISO 8601 UTC time, e.g. 2024-05-01T12:00:00Z.
pub fn utc_time(unix: u64) -> String {
    let days = unix / 86_400;
    let seconds = unix % 86_400;
    // Civil date from days since 1970-01-01 (the proleptic Gregorian calendar,
    // counted in 400-year eras of 146097 days that start on March 1st).
    let z = days as i128 + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i128::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000;

    fn claims(stream: &str, rights: u8) -> Claims {
        Claims {
            sub: "alice".into(),
            stream: stream.into(),
            rights,
            exp: NOW + 600,
            nbf: 0,
        }
    }

    /// A compact JWS of `header` and `payload` (JSON text) signed by `key`.
    fn jws(key: &SigningKey, header: &str, payload: &str) -> String {
        key.sign_jws(&format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(payload)
        ))
    }

    fn b64url(text: &str) -> Vec<u8> {
        URL_SAFE_NO_PAD.decode(text).unwrap()
    }

    /// The key of RFC 8037, Appendix A.1, as OpenSSL writes it (PKCS#8 v1).
    fn rfc8037_key() -> SigningKey {
        let mut der = PKCS8_V1_PREFIX.to_vec();
        der.extend_from_slice(&b64url("nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"));
        SigningKey::from_pem(&pem_encode(&der, PRIVATE_KEY_LABEL)).unwrap()
    }

    #[test]
    fn sign_verify_round_trip() {
        let key = SigningKey::generate().unwrap();
        let mut grant = claims("room1", rights::ALL);
        grant.nbf = NOW - 10;
        let token = sign(&key, &grant);
        assert_eq!(
            verify(&[key.verifying_key()], &token, NOW),
            Ok(grant.clone())
        );
        assert_eq!(Claims::peek(&token), Ok(grant));
        let header = b64url(token.split('.').next().unwrap());
        assert_eq!(header, br#"{"alg":"EdDSA","typ":"JWT"}"#);
        // No padding, URL alphabet.
        assert!(!token.contains(['=', '+', '/']));
    }

    #[test]
    fn rfc8037_a4_known_answer() {
        // RFC 8037, A.4: the JWS of "Example of Ed25519 signing" with header
        // {"alg":"EdDSA"} under the key of A.1 (Ed25519 signatures are
        // deterministic, so ours must be the RFC's byte for byte).
        let rfc_jws = "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc.\
                       hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg";
        let key = rfc8037_key();
        assert_eq!(
            key.verifying_key().as_bytes()[..],
            b64url("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo")[..]
        );
        assert_eq!(
            key.sign_jws("eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc"),
            rfc_jws
        );
        // The RFC's payload is no grant: verify gets past the header and the
        // signature and stops at the claims.
        let err = verify(&[key.verifying_key()], rfc_jws, NOW).unwrap_err();
        assert!(
            matches!(&err, GrantError::Malformed(what) if what.starts_with("the claims")),
            "{err}"
        );
        let other = SigningKey::generate().unwrap().verifying_key();
        assert_eq!(
            verify(&[other], rfc_jws, NOW),
            Err(GrantError::BadSignature)
        );
    }

    #[test]
    fn pem_round_trips_and_pkcs8_versions() {
        let key = SigningKey::generate().unwrap();
        // ring writes PKCS#8 v2 (with the public key).
        let pem = key.to_pem();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        let again = SigningKey::from_pem(&pem).unwrap();
        assert_eq!(again.verifying_key(), key.verifying_key());
        let public = key.verifying_key().to_pem();
        assert!(public.starts_with("-----BEGIN PUBLIC KEY-----\n"));
        assert_eq!(VerifyingKey::from_pem(&public), Ok(key.verifying_key()));
        // v1 (seed only) round-trips too, as the v1 it was read from.
        let v1 = rfc8037_key();
        assert_eq!(
            SigningKey::from_pem(&v1.to_pem()).unwrap().verifying_key(),
            v1.verifying_key()
        );
        // A v2 key whose public key does not match its seed is refused.
        let mut der = pem_decode(&pem, PRIVATE_KEY_LABEL).unwrap();
        let last = der.len() - 1;
        der[last] ^= 1;
        assert!(SigningKey::from_pkcs8(&der).is_err());
    }

    #[test]
    fn pem_errors() {
        let err = SigningKey::from_pem("hello").unwrap_err();
        assert!(err.0.contains("-----BEGIN PRIVATE KEY-----"), "{err}");
        let public = SigningKey::generate().unwrap().verifying_key().to_pem();
        // A public key where a private one is expected, and the other way round.
        assert!(SigningKey::from_pem(&public).is_err());
        let private = SigningKey::generate().unwrap().to_pem();
        assert!(VerifyingKey::from_pem(&private).is_err());
        let err =
            VerifyingKey::from_pem("-----BEGIN PUBLIC KEY-----\n!!\n-----END PUBLIC KEY-----\n")
                .unwrap_err();
        assert!(err.0.contains("not base64"), "{err}");
        let err = VerifyingKey::from_pem("-----BEGIN PUBLIC KEY-----\nAAAA\n").unwrap_err();
        assert!(err.0.contains("END PUBLIC KEY"), "{err}");
        let err =
            VerifyingKey::from_pem("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----")
                .unwrap_err();
        assert!(err.0.contains("not an Ed25519 public key"), "{err}");
    }

    #[test]
    fn every_error_kind() {
        let key = SigningKey::generate().unwrap();
        let keys = [key.verifying_key()];
        let grant = claims("room1", rights::ALL);
        let token = sign(&key, &grant);

        let long = "a".repeat(MAX_TOKEN_LEN + 1);
        assert_eq!(
            verify(&keys, &long, NOW),
            Err(GrantError::TooLong {
                len: MAX_TOKEN_LEN + 1
            })
        );
        assert_eq!(
            Claims::peek(&long),
            Err(GrantError::TooLong {
                len: MAX_TOKEN_LEN + 1
            })
        );

        let malformed = |token: &str, what: &str| match verify(&keys, token, NOW) {
            Err(GrantError::Malformed(text)) => {
                assert!(text.contains(what), "{token:?}: {text}")
            }
            other => panic!("{token:?}: {other:?}"),
        };
        malformed("", "empty");
        malformed("abc", "3 parts");
        malformed("a.b", "3 parts");
        malformed(&format!("{token}.x"), "this one has 4");
        malformed("!!.e30.AA", "header is not base64url");
        let (head, rest) = token.split_once('.').unwrap();
        malformed(&format!("{head}=.{rest}"), "header is not base64url");
        malformed(
            &format!("{}.{rest}", URL_SAFE_NO_PAD.encode("[]")),
            "not a JWS header",
        );
        malformed(
            &format!("{}.{rest}", URL_SAFE_NO_PAD.encode("{}")),
            "not a JWS header",
        );
        let (body, _) = token.rsplit_once('.').unwrap();
        malformed(&format!("{body}.AAAA"), "signature has 3 bytes");
        malformed(&format!("{body}.!"), "signature is not base64url");

        let signed = |header: &str, payload: &str| jws(&key, header, payload);
        let ed = r#"{"alg":"EdDSA"}"#;
        malformed(
            &signed(r#"{"alg":"EdDSA","crit":["exp"]}"#, "{}"),
            "critical extensions",
        );
        malformed(&signed(ed, "not json"), "the claims are not a grant's");
        malformed(
            &signed(ed, r#"{"sub":"a","stream":"s","rights":256,"exp":1}"#),
            "the claims",
        );
        malformed(
            &signed(ed, r#"{"sub":"a","stream":"s","rights":-1,"exp":1}"#),
            "the claims",
        );
        malformed(&signed(ed, r#"{"sub":"a","stream":"s","exp":1}"#), "rights");
        malformed(
            &signed(ed, r#"{"sub":"a","stream":"s","rights":1,"exp":1,"exp":2}"#),
            "duplicate",
        );
        malformed(
            &signed(ed, r#"{"sub":"a","stream":"../x","rights":1,"exp":1}"#),
            "neither a stream name",
        );
        malformed(
            &signed(ed, r#"{"sub":"a","stream":"a*b*","rights":1,"exp":1}"#),
            "neither a stream name",
        );

        assert_eq!(
            verify(&keys, &signed(r#"{"alg":"none"}"#, "{}"), NOW),
            Err(GrantError::UnsupportedAlg("none".into()))
        );
        let hs256 = format!(
            "{}.{}.AAAA",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","typ":"JWT"}"#),
            URL_SAFE_NO_PAD.encode("{}")
        );
        assert_eq!(
            verify(&keys, &hs256, NOW),
            Err(GrantError::UnsupportedAlg("HS256".into()))
        );

        // Altered claims, another issuer, no issuer at all.
        let forged = format!(
            "{head}.{}.{}",
            URL_SAFE_NO_PAD.encode(
                serde_json::to_vec(&Claims {
                    sub: "mallory".into(),
                    ..grant.clone()
                })
                .unwrap()
            ),
            token.rsplit('.').next().unwrap()
        );
        assert_eq!(verify(&keys, &forged, NOW), Err(GrantError::BadSignature));
        let other = SigningKey::generate().unwrap();
        assert_eq!(
            verify(&[other.verifying_key()], &token, NOW),
            Err(GrantError::BadSignature)
        );
        assert_eq!(verify(&[], &token, NOW), Err(GrantError::BadSignature));
        // Any of several issuers.
        assert!(verify(&[other.verifying_key(), keys[0]], &token, NOW).is_ok());

        // Times: valid from nbf included to exp excluded.
        let timed = Claims {
            nbf: NOW,
            exp: NOW + 1,
            ..grant
        };
        let token = sign(&key, &timed);
        assert_eq!(verify(&keys, &token, NOW), Ok(timed.clone()));
        assert_eq!(
            verify(&keys, &token, NOW + 1),
            Err(GrantError::Expired { exp: NOW + 1 })
        );
        assert_eq!(
            verify(&keys, &token, NOW - 1),
            Err(GrantError::NotYetValid { nbf: NOW })
        );
    }

    #[test]
    fn messages_name_the_cause() {
        assert_eq!(
            GrantError::Expired { exp: 1_700_000_000 }.to_string(),
            "grant expired at 2023-11-14T22:13:20Z (1700000000)"
        );
        assert_eq!(
            GrantError::NotYetValid { nbf: 0 }.to_string(),
            "grant not valid before 1970-01-01T00:00:00Z (0)"
        );
        assert!(GrantError::BadSignature.to_string().contains("signature"));
        assert!(
            GrantError::UnsupportedAlg("HS256".into())
                .to_string()
                .contains("\"HS256\"")
        );
        assert!(
            GrantError::TooLong { len: 9000 }
                .to_string()
                .contains("9000 bytes")
        );
        // Untrusted text is quoted short.
        let long_alg = GrantError::UnsupportedAlg("x".repeat(5000)).to_string();
        assert!(long_alg.len() < 200, "{long_alg}");
    }

    #[test]
    fn utc_times() {
        assert_eq!(utc_time(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc_time(4_102_444_799), "2099-12-31T23:59:59Z");
        assert_eq!(utc_time(u64::MAX), "584554051223-11-09T07:00:15Z");
    }

    #[test]
    fn optional_and_ignored_claims() {
        let key = SigningKey::generate().unwrap();
        let token = jws(
            &key,
            r#"{"alg":"EdDSA","typ":"JWT","kid":"k1"}"#,
            r#"{"sub":"bob","stream":"cam*","rights":171,"exp":1700000600,"iat":1,"aud":"x"}"#,
        );
        let grant = verify(&[key.verifying_key()], &token, NOW).unwrap();
        assert_eq!(
            grant,
            Claims {
                sub: "bob".into(),
                stream: "cam*".into(),
                rights: 0xab,
                exp: 1_700_000_600,
                nbf: 0
            }
        );
        // nbf 0 is not written.
        let written = b64url(sign(&key, &grant).split('.').nth(1).unwrap());
        assert!(!String::from_utf8(written).unwrap().contains("nbf"));
    }

    #[test]
    fn rights_bits() {
        let grant = |rights| claims("s", rights);
        assert!(grant(0xff).can_publish() && grant(0xff).can_watch());
        assert!(!grant(0xab).can_publish() && grant(0xab).can_watch());
        assert!(grant(0x54).can_publish() && !grant(0x54).can_watch());
        assert_eq!(rights::ALL & !rights::WATCH_ONLY, rights::PUBLISH);
        for bit in [0x04, 0x10, 0x40] {
            assert!(
                grant(bit).can_publish() && !grant(bit).can_watch(),
                "{bit:#x}"
            );
        }
        for bit in [0x08, 0x20, 0x80] {
            assert!(
                grant(bit).can_watch() && !grant(bit).can_publish(),
                "{bit:#x}"
            );
        }
        // Create and enter room give neither.
        assert!(!grant(0x03).can_watch() && !grant(0x03).can_publish());
        assert!(!grant(0).can_watch());
        assert_eq!(grant(0xab).allows("s", Right::Watch), Ok(()));
        let denied = grant(0xab).allows("s", Right::Publish).unwrap_err();
        assert_eq!(
            denied.to_string(),
            "the grant has no publish right (rights 0xab; publish needs one of 0x54)"
        );
        let denied = grant(0xff).allows("t", Right::Watch).unwrap_err();
        assert_eq!(denied.to_string(), "the grant is for stream s, not t");
        assert_eq!("watch".parse(), Ok(Right::Watch));
        assert!("read".parse::<Right>().is_err());
    }

    #[test]
    fn stream_names_and_patterns() {
        assert!(is_stream_name("room1"));
        assert!(is_stream_name("a.b_c-D9"));
        assert!(is_stream_name(".x"));
        assert!(is_stream_name(&"a".repeat(128)));
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "a b",
            "a*",
            "%2e",
            "é",
            "a\0",
            &"a".repeat(129),
        ] {
            assert!(!is_stream_name(bad), "{bad:?}");
        }
        assert!(is_stream_pattern("*"));
        assert!(is_stream_pattern("room-*"));
        assert!(is_stream_pattern(&format!("{}*", "a".repeat(127))));
        for bad in [
            "**",
            "a*b",
            "a/*",
            &format!("{}*", "a".repeat(128)),
            "",
            "..",
        ] {
            assert!(!is_stream_pattern(bad), "{bad:?}");
        }

        let exact = claims("room1", 0xff);
        assert!(exact.covers("room1"));
        assert!(!exact.covers("room10") && !exact.covers("room"));
        let prefix = claims("room-*", 0xff);
        assert!(prefix.covers("room-") && prefix.covers("room-42"));
        assert!(!prefix.covers("room") && !prefix.covers("xroom-1"));
        let any = claims("*", 0xff);
        assert!(any.covers("x") && any.covers(&"z".repeat(128)));
        // A pattern never covers what is not a stream name.
        assert!(!any.covers("..") && !any.covers("a/b") && !any.covers(""));
        assert!(!claims(".*", 0xff).covers(".."));
    }
}
