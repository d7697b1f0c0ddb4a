// SPDX-License-Identifier: MPL-2.0
//! The elements' client of the key service (`streamcrypt-keys serve`), without
//! GStreamer: HTTP/1.1 GETs with the grant as a Bearer token, https through
//! rustls with the system's roots (`SSL_CERT_FILE` and `SSL_CERT_DIR` are
//! honoured), a timeout on every request, and errors that carry the service's
//! status and its one-line reason. A key or a grant is never part of an error,
//! a log line or a URL this module builds for its own requests.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use zeroize::Zeroizing;

use crate::grant::{self, Claims};
use crate::key_service::{self, Current, Health, KeyFormat};
use crate::keys::KeyText;

/// Longest a request may take, connection included.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// Longest answer read: a key or a short JSON document, or a one-line reason.
const MAX_ANSWER: u64 = 4096;

/// Why a request to the key service failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientError {
    /// `key-server` is not an http(s) URL.
    BadUrl(String),
    /// No answer: connection refused, DNS, TLS, timeout.
    Unreachable { server: String, reason: String },
    /// The service answered with an error status and says why.
    Refused {
        server: String,
        status: u16,
        reason: String,
    },
    /// The service answered 200 with something that is not what was asked.
    BadAnswer { server: String, reason: String },
}

impl ClientError {
    /// Whether the service refused the grant (401) or what it asked for (403).
    pub fn is_denied(&self) -> bool {
        matches!(
            self,
            ClientError::Refused {
                status: 401 | 403,
                ..
            }
        )
    }
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::BadUrl(why) => write!(f, "key-server: {why}"),
            ClientError::Unreachable { server, reason } => {
                write!(f, "the key service at {server} cannot be reached: {reason}")
            }
            ClientError::Refused {
                server,
                status,
                reason,
            } => write!(
                f,
                "the key service at {server} answered {status} {}: {reason}",
                status_text(*status)
            ),
            ClientError::BadAnswer { server, reason } => {
                write!(
                    f,
                    "the key service at {server} gave an unusable answer: {reason}"
                )
            }
        }
    }
}

impl std::error::Error for ClientError {}

fn status_text(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "",
    }
}

/// A client of one key service.
#[derive(Clone)]
pub struct KeyClient {
    /// The URL as given, without a trailing `/`.
    server: String,
    agent: ureq::Agent,
}

impl std::fmt::Debug for KeyClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyClient")
            .field("server", &self.server)
            .finish()
    }
}

impl KeyClient {
    /// A client of the service at `server` (`http://` or `https://`, with an
    /// optional path prefix, e.g. behind a reverse proxy).
    pub fn new(server: &str) -> Result<Self, ClientError> {
        let server = server.trim().trim_end_matches('/');
        let rest = server
            .strip_prefix("https://")
            .or_else(|| server.strip_prefix("http://"))
            .ok_or_else(|| {
                ClientError::BadUrl(format!(
                    "\"{server}\" is not an http:// or https:// URL of the key service"
                ))
            })?;
        if rest.is_empty() || rest.contains(['?', '#', ' ']) {
            return Err(ClientError::BadUrl(format!(
                "\"{server}\" needs a host, and no query or fragment"
            )));
        }
        let tls = ureq::tls::TlsConfig::builder()
            .provider(ureq::tls::TlsProvider::Rustls)
            .root_certs(ureq::tls::RootCerts::Specific(Arc::new(system_roots())))
            .build();
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(TIMEOUT))
            .http_status_as_error(false)
            .max_redirects(0)
            .tls_config(tls)
            .build()
            .into();
        Ok(Self {
            server: server.to_owned(),
            agent,
        })
    }

    /// The service's URL, as given (never holds a grant).
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The URL of `path` on the service.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server)
    }

    /// `GET /health`: the service's key period in seconds.
    pub fn key_period(&self) -> Result<u64, ClientError> {
        let health: Health = self.json(&self.get("/health", None)?)?;
        self.check_period(health.key_period)
    }

    /// `GET /v1/streams/{stream}/current` (publish rights).
    pub fn current(&self, stream: &str, grant: &str) -> Result<Current, ClientError> {
        let body = self.get(&key_service::current_path(stream), Some(grant))?;
        let current: Current = self.json(&body)?;
        self.check_period(current.key_period)?;
        Ok(current)
    }

    fn check_period(&self, period: u64) -> Result<u64, ClientError> {
        match period {
            0 => Err(self.bad_answer("a key period of 0 seconds".into())),
            period => Ok(period),
        }
    }

    /// `GET` the key of `stream` for `kid`, `bits` long (128, 192 or 256), in
    /// hex, as the elements take keys (watch rights).
    pub fn key(
        &self,
        stream: &str,
        kid: u64,
        bits: usize,
        grant: &str,
    ) -> Result<KeyText, ClientError> {
        let path = key_service::key_path(stream, kid, bits as u32, KeyFormat::Hex);
        let body = Zeroizing::new(self.get(&path, Some(grant))?);
        let text = std::str::from_utf8(&body)
            .ok()
            .filter(|hex| hex.len() == bits / 4 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| {
                self.bad_answer(format!(
                    "the key for KID {kid} is not {} hex digits ({} bytes came)",
                    bits / 4,
                    body.len()
                ))
            })?;
        Ok(KeyText::new(text))
    }

    /// Sends `GET path` (with `grant` as a Bearer token) and returns the body of
    /// a 200 answer.
    fn get(&self, path: &str, grant: Option<&str>) -> Result<Vec<u8>, ClientError> {
        let mut request = self.agent.get(self.url(path));
        let bearer;
        if let Some(grant) = grant {
            bearer = Zeroizing::new(format!("Bearer {grant}"));
            request = request.header("Authorization", bearer.as_str());
        }
        let mut response = request.call().map_err(|err| ClientError::Unreachable {
            server: self.server.clone(),
            reason: err.to_string(),
        })?;
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER)
            .read_to_vec()
            .map_err(|err| ClientError::Unreachable {
                server: self.server.clone(),
                reason: format!("answer {status} cut short: {err}"),
            })?;
        if status == 200 {
            return Ok(body);
        }
        Err(ClientError::Refused {
            server: self.server.clone(),
            status,
            reason: one_line(&body),
        })
    }

    fn json<T: serde::de::DeserializeOwned>(&self, body: &[u8]) -> Result<T, ClientError> {
        serde_json::from_slice(body).map_err(|err| self.bad_answer(format!("not JSON: {err}")))
    }

    fn bad_answer(&self, reason: String) -> ClientError {
        ClientError::BadAnswer {
            server: self.server.clone(),
            reason,
        }
    }
}

/// The first line of an error body, printable and short.
fn one_line(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let line: String = text
        .lines()
        .next()
        .unwrap_or("")
        .chars()
        .filter(|c| !c.is_control())
        .take(300)
        .collect();
    if line.is_empty() {
        "(no reason given)".to_owned()
    } else {
        line
    }
}

/// The system's trusted roots, as openssl finds them (`SSL_CERT_FILE`,
/// `SSL_CERT_DIR`, then the distribution's bundle). Unreadable ones are
/// skipped: a TLS error then names the certificate that could not be verified.
fn system_roots() -> Vec<ureq::tls::Certificate<'static>> {
    rustls_native_certs::load_native_certs()
        .certs
        .iter()
        .map(|der| ureq::tls::Certificate::from_der(der.as_ref()).to_owned())
        .collect()
}

/// Seconds since 1970, now.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

/// What an element does with the keys its grant gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Fetches keys to decrypt: watch rights.
    Watcher,
    /// Learns the current KID and fetches the keys it encrypts with: publish and
    /// watch rights.
    Publisher,
    /// A grant every viewer will read (in an HLS playlist): watch rights, and
    /// no publish rights, which would let any viewer publish.
    PublicViewer,
}

impl Role {
    fn needs(self) -> &'static str {
        match self {
            Role::Watcher => "a decrypter needs watch rights (e.g. 0xab)",
            Role::Publisher => {
                "a publisher needs publish and watch rights (e.g. 0xff): it learns the \
                 current KID and fetches the keys it encrypts with"
            }
            Role::PublicViewer => {
                "a token in a playlist is read by every viewer: it needs watch rights and \
                 must not have publish rights (mint one with --rights 0xab)"
            }
        }
    }
}

/// A grant as an element holds it: the token (wiped when dropped) and its
/// claims, read without checking the signature (the service does that).
#[derive(Clone)]
pub struct Grant {
    token: Zeroizing<String>,
    pub claims: Claims,
}

impl std::fmt::Debug for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grant")
            .field("sub", &self.claims.sub)
            .field("stream", &self.claims.stream)
            .field("exp", &self.claims.exp)
            .finish_non_exhaustive()
    }
}

impl Grant {
    /// Reads `token` and checks, without the issuer's key, that it can do what
    /// `role` needs on `stream` at `now`: so that a wrong grant fails at start,
    /// naming why, rather than at the first key.
    pub fn check(token: &str, stream: &str, role: Role, now: u64) -> Result<Self, String> {
        let token = token.trim();
        let claims =
            Claims::peek(token).map_err(|err| format!("the grant cannot be read: {err}"))?;
        let user = &claims.sub;
        if !claims.covers(stream) {
            return Err(format!(
                "the grant of user {user} is for stream \"{}\", not stream-id \"{stream}\"",
                claims.stream
            ));
        }
        let enough = match role {
            Role::Watcher => claims.can_watch(),
            Role::Publisher => claims.can_watch() && claims.can_publish(),
            Role::PublicViewer => claims.can_watch() && !claims.can_publish(),
        };
        if !enough {
            return Err(format!(
                "the grant of user {user} has rights {:#04x} ({}): {}",
                claims.rights,
                rights_text(claims.rights),
                role.needs()
            ));
        }
        claims
            .check_time(now)
            .map_err(|err| format!("the grant of user {user}: {err}"))?;
        Ok(Self {
            token: Zeroizing::new(token.to_owned()),
            claims,
        })
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    /// "alice (grant expires at 2025-01-01 12:00:00 UTC, 1735732800)".
    pub fn describe_expiry(&self) -> String {
        format!(
            "the grant of user {} expires at {} ({})",
            self.claims.sub,
            grant::utc_time(self.claims.exp),
            self.claims.exp
        )
    }
}

/// "publish and watch", "watch only", "publish only" or "neither publish nor
/// watch".
fn rights_text(rights: u8) -> &'static str {
    let has = |bits: u8| rights & bits != 0;
    match (has(grant::rights::PUBLISH), has(grant::rights::WATCH)) {
        (true, true) => "publish and watch",
        (false, true) => "watch only",
        (true, false) => "publish only",
        (false, false) => "neither publish nor watch",
    }
}

/// Reads a grant file: the token is its first line. Returns the token and,
/// when others than the owner can read the file, a warning that says so.
pub fn read_grant_file(
    path: &std::path::Path,
) -> Result<(Zeroizing<String>, Option<String>), String> {
    use std::io::Read;
    use std::os::unix::fs::PermissionsExt;
    let shown = path.display();
    let failed = |err: std::io::Error| format!("grant-file {shown}: {err}");
    let file = std::fs::File::open(path).map_err(failed)?;
    let mode = file.metadata().map_err(failed)?.permissions().mode();
    let mut text = Zeroizing::new(String::new());
    file.take(grant::MAX_TOKEN_LEN as u64 + 2)
        .read_to_string(&mut text)
        .map_err(failed)?;
    let token = text.lines().next().unwrap_or("").trim();
    if token.is_empty() {
        return Err(format!(
            "grant-file {shown}: the first line is empty; it must hold the grant"
        ));
    }
    let exposed = (mode & 0o077 != 0).then(|| {
        format!(
            "grant file {shown} can be read by others than its owner (mode {:04o}): \
             `chmod 600 {shown}`",
            mode & 0o7777
        )
    });
    Ok((Zeroizing::new(token.to_owned()), exposed))
}

/// Checks a `stream-id`: a stream name as the service takes them.
pub fn check_stream_name(stream: &str) -> Result<(), String> {
    if grant::is_stream_name(stream) {
        Ok(())
    } else {
        Err(format!(
            "stream-id \"{}\" is not a stream name: 1 to {} characters of A-Z a-z 0-9 . _ - \
             (not . or ..)",
            stream.escape_default(),
            grant::MAX_STREAM_LEN
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_must_be_http() {
        for bad in ["ftp://x", "localhost:8080", "http://", "http://h/?q=1"] {
            assert!(
                matches!(KeyClient::new(bad), Err(ClientError::BadUrl(_))),
                "{bad}"
            );
        }
        let client = KeyClient::new("http://127.0.0.1:1/prefix/").unwrap();
        assert_eq!(client.url("/health"), "http://127.0.0.1:1/prefix/health");
    }

    #[test]
    fn an_unreachable_service_is_named() {
        // A loopback port bound and released at once: nothing listens there.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let client = KeyClient::new(&format!("http://127.0.0.1:{port}")).unwrap();
        let err = client.key_period().unwrap_err();
        assert!(matches!(err, ClientError::Unreachable { .. }), "{err:?}");
        assert!(
            err.to_string()
                .contains(&format!("http://127.0.0.1:{port} cannot be reached")),
            "{err}"
        );
    }

    #[test]
    fn error_bodies_become_one_line() {
        assert_eq!(one_line(b"grant expired\r\nmore"), "grant expired");
        assert_eq!(one_line(b""), "(no reason given)");
        assert_eq!(one_line(b"a\x1bb"), "ab");
    }

    #[test]
    fn stream_names() {
        assert!(check_stream_name("room-1.a_b").is_ok());
        for bad in ["", ".", "..", "a/b", "a b", &"x".repeat(129)] {
            assert!(check_stream_name(bad).is_err(), "{bad}");
        }
    }

    fn token(stream: &str, rights: u8, exp: u64) -> String {
        let key = grant::SigningKey::generate().unwrap();
        grant::sign(
            &key,
            &Claims {
                sub: "alice".into(),
                stream: stream.into(),
                rights,
                exp,
                nbf: 0,
            },
        )
    }

    #[test]
    fn grants_are_checked_for_stream_rights_and_time() {
        let now = 1_800_000_000;
        let ok = |stream, rights, role| {
            Grant::check(&token(stream, rights, now + 60), "room1", role, now)
        };
        assert!(ok("room1", 0xff, Role::Publisher).is_ok());
        assert!(ok("room*", 0xab, Role::Watcher).is_ok());
        assert!(ok("*", 0xab, Role::PublicViewer).is_ok());
        let why = ok("room2", 0xff, Role::Watcher).unwrap_err();
        assert!(
            why.contains("is for stream \"room2\", not stream-id \"room1\""),
            "{why}"
        );
        let why = ok("room1", 0xab, Role::Publisher).unwrap_err();
        assert!(
            why.contains("rights 0xab (watch only): a publisher needs"),
            "{why}"
        );
        let why = ok("room1", 0x54, Role::Watcher).unwrap_err();
        assert!(
            why.contains("(publish only): a decrypter needs watch"),
            "{why}"
        );
        let why = ok("room1", 0xff, Role::PublicViewer).unwrap_err();
        assert!(why.contains("must not have publish rights"), "{why}");
        let expired = Grant::check(&token("room1", 0xff, now), "room1", Role::Watcher, now);
        let why = expired.unwrap_err();
        assert!(
            why.contains("the grant of user alice: grant expired at"),
            "{why}"
        );
        let why = Grant::check("not.a.jwt", "room1", Role::Watcher, now).unwrap_err();
        assert!(why.starts_with("the grant cannot be read"), "{why}");
        // The token is never in what is shown of a grant.
        let grant = ok("room1", 0xff, Role::Publisher).unwrap();
        assert!(!format!("{grant:?}").contains(grant.token()));
    }

    #[test]
    fn rights_in_words() {
        assert_eq!(rights_text(0xff), "publish and watch");
        assert_eq!(rights_text(0xab), "watch only");
        assert_eq!(rights_text(0x54), "publish only");
        assert_eq!(rights_text(0x03), "neither publish nor watch");
    }
}
