// SPDX-License-Identifier: MPL-2.0
//! The key service's answers: from a request's method, path, query and
//! Authorization header to a status, a body and a log line. No network here
//! (see `serve`), and no state but the issuer keys, the master secret and the
//! key period: every key is derived anew for the request that asks for it.

use std::fmt;

use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, StatusCode, Uri};
use streamcrypt_core::grant::{self, Claims, GrantError, Right, VerifyingKey, is_stream_name};
use streamcrypt_core::key_service::{
    Current, Health, KEY_PERIOD_HEADER, KeyFormat, MasterSecret, derive_key, issuable, issued_from,
    key_len_of_bits, kid_at, period_end,
};
use zeroize::Zeroizing;

/// The longest path or value quoted back in a message or a log line.
const QUOTE_MAX: usize = 64;

pub struct Service {
    pub issuers: Vec<VerifyingKey>,
    pub master_secret: MasterSecret,
    /// Seconds; never 0.
    pub key_period: u64,
}

/// An answer to one request, and what its log line says about it.
pub struct Answer {
    pub status: StatusCode,
    pub headers: Vec<(header::HeaderName, HeaderValue)>,
    /// Wiped when dropped: it may be a key.
    pub body: Zeroizing<Vec<u8>>,
    pub user: Option<String>,
    pub stream: Option<String>,
    pub kid: Option<u64>,
    pub outcome: String,
}

impl Answer {
    fn new(status: StatusCode, content_type: &'static str, body: Vec<u8>, outcome: String) -> Self {
        Answer {
            status,
            headers: vec![(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
            body: Zeroizing::new(body),
            user: None,
            stream: None,
            kid: None,
            outcome,
        }
    }

    /// A refusal: `reason` is the body (one line) and the log's outcome.
    fn refusal(status: StatusCode, reason: String) -> Self {
        Answer::new(
            status,
            "text/plain; charset=utf-8",
            format!("{reason}\n").into_bytes(),
            reason,
        )
    }

    fn with_header(mut self, name: header::HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    fn about(mut self, user: Option<&Claims>, stream: &str, kid: Option<u64>) -> Self {
        self.user = user.map(|claims| claims.sub.clone());
        self.stream = Some(stream.to_owned());
        self.kid = kid;
        self
    }
}

/// A refused request: the status and why.
struct Refusal {
    status: StatusCode,
    reason: String,
    /// The user of a valid grant that was refused all the same.
    user: Option<String>,
}

fn refuse(status: StatusCode, reason: impl Into<String>) -> Refusal {
    Refusal {
        status,
        reason: reason.into(),
        user: None,
    }
}

impl From<Refusal> for Answer {
    fn from(refusal: Refusal) -> Self {
        let unauthorized = refusal.status == StatusCode::UNAUTHORIZED;
        let mut answer = Answer::refusal(refusal.status, refusal.reason);
        answer.user = refusal.user;
        if unauthorized {
            answer = answer.with_header(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(r#"Bearer realm="streamcrypt", error="invalid_token""#),
            );
        }
        answer
    }
}

enum Route<'a> {
    Health,
    Key { stream: &'a str, kid: &'a str },
    Current { stream: &'a str },
}

fn route(path: &str) -> Option<Route<'_>> {
    let segments: Vec<&str> = path.strip_prefix('/')?.split('/').collect();
    match segments[..] {
        ["health"] => Some(Route::Health),
        ["v1", "streams", stream, "keys", kid] => Some(Route::Key { stream, kid }),
        ["v1", "streams", stream, "current"] => Some(Route::Current { stream }),
        _ => None,
    }
}

/// The query parameters the key routes take, each at most once.
#[derive(Default)]
struct Query<'a> {
    bits: Option<&'a str>,
    format: Option<&'a str>,
    token: Option<&'a str>,
}

impl<'a> Query<'a> {
    /// Parses `query`, taking only the parameters named in `allowed`.
    fn parse(query: Option<&'a str>, allowed: &[&str]) -> Result<Self, Refusal> {
        let mut parsed = Query::default();
        for pair in query
            .unwrap_or("")
            .split('&')
            .filter(|pair| !pair.is_empty())
        {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let slot = match name {
                "bits" => &mut parsed.bits,
                "format" => &mut parsed.format,
                "token" => &mut parsed.token,
                _ => {
                    return Err(refuse(
                        StatusCode::BAD_REQUEST,
                        format!("unknown query parameter {:?}", quote(name)),
                    ));
                }
            };
            if !allowed.contains(&name) {
                return Err(refuse(
                    StatusCode::BAD_REQUEST,
                    format!("query parameter {name} does not apply here"),
                ));
            }
            if slot.replace(value).is_some() {
                return Err(refuse(
                    StatusCode::BAD_REQUEST,
                    format!("query parameter {name} is given twice"),
                ));
            }
        }
        Ok(parsed)
    }
}

/// At most `QUOTE_MAX` characters of `text`, for messages and logs.
pub fn quote(text: &str) -> &str {
    match text.char_indices().nth(QUOTE_MAX) {
        Some((end, _)) => &text[..end],
        None => text,
    }
}

fn check_stream(stream: &str) -> Result<(), Refusal> {
    if is_stream_name(stream) {
        Ok(())
    } else {
        Err(refuse(
            StatusCode::BAD_REQUEST,
            format!(
                "bad stream name {:?}: a stream name is 1 to {} of A-Z a-z 0-9 . _ - and not . or ..",
                quote(stream),
                grant::MAX_STREAM_LEN
            ),
        ))
    }
}

fn parse_kid(text: &str) -> Result<u64, Refusal> {
    // Digits only: u64's parser would also take a leading '+'.
    if !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_digit())
        && let Ok(kid) = text.parse()
    {
        return Ok(kid);
    }
    Err(refuse(
        StatusCode::BAD_REQUEST,
        format!(
            "bad KID {:?}: a KID is a decimal number from 0 to {}",
            quote(text),
            u64::MAX
        ),
    ))
}

/// The grant of a request: from `Authorization: Bearer` or `token=`, not both.
fn grant_token<'a>(
    headers: &'a HeaderMap,
    query_token: Option<&'a str>,
) -> Result<&'a str, Refusal> {
    let unauthorized = |reason: &str| refuse(StatusCode::UNAUTHORIZED, reason);
    let header = match headers.get(header::AUTHORIZATION) {
        None => None,
        Some(value) => {
            let value = value
                .to_str()
                .map_err(|_| unauthorized("the Authorization header is not ASCII text"))?;
            let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
            if !scheme.eq_ignore_ascii_case("bearer") {
                return Err(unauthorized(
                    "the Authorization header is not `Bearer <grant>`",
                ));
            }
            Some(token.trim())
        }
    };
    match (header, query_token) {
        (Some(_), Some(_)) => Err(refuse(
            StatusCode::BAD_REQUEST,
            "the grant is given both in the Authorization header and as token=; give it once",
        )),
        (Some(token), None) | (None, Some(token)) => Ok(token),
        (None, None) => Err(unauthorized(
            "no grant: send `Authorization: Bearer <grant>` or add token=<grant> to the query",
        )),
    }
}

impl Service {
    /// The answer to one request at `now` (UNIX seconds).
    pub fn answer(&self, method: &Method, uri: &Uri, headers: &HeaderMap, now: u64) -> Answer {
        let Some(route) = route(uri.path()) else {
            return refuse(
                StatusCode::NOT_FOUND,
                format!(
                    "no such path {:?}; the service answers /health, \
                     /v1/streams/STREAM/keys/KID and /v1/streams/STREAM/current",
                    quote(uri.path())
                ),
            )
            .into();
        };
        if method != Method::GET {
            return Answer::from(refuse(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("method {} is not allowed; use GET", quote(method.as_str())),
            ))
            .with_header(header::ALLOW, HeaderValue::from_static("GET"));
        }
        match route {
            Route::Health => self.health(),
            Route::Key { stream, kid } => {
                let kid_number = parse_kid(kid).ok();
                self.key(stream, kid, uri.query(), headers, now)
                    .unwrap_or_else(|refusal| self.refused(refusal, stream, kid_number))
            }
            Route::Current { stream } => self
                .current(stream, uri.query(), headers, now)
                .unwrap_or_else(|refusal| self.refused(refusal, stream, None)),
        }
    }

    fn refused(&self, refusal: Refusal, stream: &str, kid: Option<u64>) -> Answer {
        let user = refusal.user.clone();
        let mut answer = Answer::from(refusal);
        answer.stream = Some(stream.to_owned());
        answer.kid = kid;
        answer.user = user;
        answer
    }

    fn health(&self) -> Answer {
        let body = serde_json::to_vec(&Health {
            status: "ok".into(),
            key_period: self.key_period,
        })
        .expect("JSON");
        Answer::new(StatusCode::OK, "application/json", body, "ok".into())
    }

    /// Checks the grant of a request for `right` on `stream`.
    fn authorize(
        &self,
        headers: &HeaderMap,
        query_token: Option<&str>,
        stream: &str,
        right: Right,
        now: u64,
    ) -> Result<Claims, Refusal> {
        let token = grant_token(headers, query_token)?;
        let claims = grant::verify(&self.issuers, token, now)
            .map_err(|e: GrantError| refuse(StatusCode::UNAUTHORIZED, e.to_string()))?;
        claims.allows(stream, right).map_err(|denied| Refusal {
            status: StatusCode::FORBIDDEN,
            reason: denied.to_string(),
            user: Some(claims.sub.clone()),
        })?;
        Ok(claims)
    }

    fn key(
        &self,
        stream: &str,
        kid: &str,
        query: Option<&str>,
        headers: &HeaderMap,
        now: u64,
    ) -> Result<Answer, Refusal> {
        check_stream(stream)?;
        let kid = parse_kid(kid)?;
        let query = Query::parse(query, &["bits", "format", "token"])?;
        let bits = query.bits.unwrap_or("128");
        let len = bits.parse().ok().and_then(key_len_of_bits).ok_or_else(|| {
            refuse(
                StatusCode::BAD_REQUEST,
                format!("bad bits {:?}: keys have 128, 192 or 256 bits", quote(bits)),
            )
        })?;
        let format_text = query.format.unwrap_or("hex");
        let format = KeyFormat::parse(format_text).ok_or_else(|| {
            refuse(
                StatusCode::BAD_REQUEST,
                format!("bad format {:?}: use hex or raw", quote(format_text)),
            )
        })?;
        let claims = self.authorize(headers, query.token, stream, Right::Watch, now)?;
        if !issuable(kid, now, claims.exp, self.key_period) {
            let from = issued_from(kid, self.key_period);
            let reason = if from >= claims.exp {
                format!(
                    "key {kid} is not issued to this grant: it expires at {} and keys are \
                     issued at most one period ahead",
                    grant::utc_time(claims.exp)
                )
            } else {
                format!("key {kid} is not issued before {}", grant::utc_time(from))
            };
            return Err(Refusal {
                status: StatusCode::FORBIDDEN,
                reason,
                user: Some(claims.sub),
            });
        }
        let key = derive_key(self.master_secret.as_bytes(), stream, kid, len);
        let (content_type, body) = match format {
            KeyFormat::Hex => ("text/plain", hex_lower(&key)),
            KeyFormat::Raw => ("application/octet-stream", Zeroizing::new(key.to_vec())),
        };
        let mut answer = Answer::new(
            StatusCode::OK,
            content_type,
            Vec::new(),
            format!("key issued ({} bits, {})", 8 * len, format.as_str()),
        );
        answer.body = body;
        Ok(self.keyed(answer).about(Some(&claims), stream, Some(kid)))
    }

    fn current(
        &self,
        stream: &str,
        query: Option<&str>,
        headers: &HeaderMap,
        now: u64,
    ) -> Result<Answer, Refusal> {
        check_stream(stream)?;
        let query = Query::parse(query, &["token"])?;
        let claims = self.authorize(headers, query.token, stream, Right::Publish, now)?;
        let kid = kid_at(now, self.key_period);
        let body = serde_json::to_vec(&Current {
            stream: stream.to_owned(),
            kid,
            key_period: self.key_period,
            period_ends: period_end(kid, self.key_period),
        })
        .expect("JSON");
        let answer = Answer::new(
            StatusCode::OK,
            "application/json",
            body,
            "current KID".into(),
        );
        Ok(self.keyed(answer).about(Some(&claims), stream, Some(kid)))
    }

    /// Adds the headers of the answers that depend on the key period.
    fn keyed(&self, answer: Answer) -> Answer {
        answer
            .with_header(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))
            .with_header(
                header::HeaderName::from_bytes(KEY_PERIOD_HEADER.as_bytes())
                    .expect("a valid header name"),
                HeaderValue::from(self.key_period),
            )
    }
}

/// Lowercase hex of `bytes`, wiped when dropped.
pub fn hex_lower(bytes: &[u8]) -> Zeroizing<Vec<u8>> {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = Zeroizing::new(Vec::with_capacity(2 * bytes.len()));
    for byte in bytes {
        text.push(DIGITS[usize::from(byte >> 4)]);
        text.push(DIGITS[usize::from(byte & 15)]);
    }
    text
}

/// One request's log line: time, peer, method, path (never the query: it may
/// hold a grant), status, user, stream, KID, outcome. Text from the request is
/// quoted with escapes, so a request cannot forge log lines.
pub struct LogLine<'a> {
    pub now: u64,
    pub peer: std::net::SocketAddr,
    pub method: &'a str,
    /// None for what happens outside a request (TLS, unreadable heads).
    pub path: Option<&'a str>,
    pub status: Option<StatusCode>,
    pub user: Option<&'a str>,
    pub stream: Option<&'a str>,
    pub kid: Option<u64>,
    pub outcome: &'a str,
}

impl fmt::Display for LogLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let or_dash =
            |value: Option<&str>| value.map_or("-".to_owned(), |v| format!("{:?}", quote(v)));
        write!(
            f,
            "{} {} {} {} {} user={} stream={} kid={} outcome={:?}",
            grant::utc_time(self.now),
            self.peer,
            quote(self.method),
            or_dash(self.path),
            self.status
                .map_or("-".to_owned(), |s| s.as_u16().to_string()),
            or_dash(self.user),
            or_dash(self.stream),
            self.kid.map_or("-".to_owned(), |k| k.to_string()),
            self.outcome
        )
    }
}
