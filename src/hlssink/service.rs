// SPDX-License-Identifier: MPL-2.0
//! `streamcrypthlssink` with `key-server`: each segment is encrypted under the
//! key of the key period it is written in (KID = unix time / the service's
//! key period, as `streamencrypt` does), fetched from the key service; no key
//! file is written, and the playlist's `#EXT-X-KEY` URI is the service's URL
//! for that KID (`bits=128&format=raw`), with `&token=` and `playlist-grant`
//! when that is set, or `key-uri` with `%d` for the KID.
//!
//! The next period's key is fetched while the current one is in use; a
//! segment written before it has come stays under the current key (a warning
//! says so), and the key changes with the first segment after it came.

use std::time::SystemTime;

use gst::subclass::prelude::*;
use zeroize::Zeroizing;

use super::imp::StreamCryptHlsSink;
use crate::hls::{self, GivenKey, Pattern};
use crate::key_client::{self, ClientError, Grant, KeyClient, Role};
use crate::key_service::{self, KeyFormat};
use crate::keys::{KeyText, SecretKey};
use crate::service::{RETRY, ServiceSettings, ServiceUser, Worker};

/// The period keys while running.
pub struct PeriodKeys {
    client: KeyClient,
    stream: String,
    /// `key-uri`, with `%d` for the KID; `None`: the service's key URL.
    key_uri: Option<Pattern>,
    /// `playlist-grant`: goes into every key URI.
    token: Option<Zeroizing<String>>,
    period: u64,
    current: (u64, SecretKey),
    next: Option<(u64, SecretKey)>,
    /// The KID that was due and missing when a segment was written (warned
    /// once).
    late: Option<u64>,
    /// The KID whose fetch last failed (warned once).
    failed: Option<u64>,
}

impl PeriodKeys {
    /// The key URI of `kid` as players see it.
    fn uri(&self, kid: u64) -> String {
        let uri = match &self.key_uri {
            Some(pattern) => pattern.format(kid),
            None => self.client.url(&key_service::key_path(
                &self.stream,
                kid,
                (hls::KEY_LEN * 8) as u32,
                KeyFormat::Raw,
            )),
        };
        match &self.token {
            Some(token) => {
                let separator = if uri.contains('?') { '&' } else { '?' };
                format!("{uri}{separator}token={}", token.as_str())
            }
            None => uri,
        }
    }
}

/// What start needs from the settings besides the service's own.
pub struct ServiceStart<'a> {
    pub service: &'a ServiceSettings,
    /// A property that conflicts with key-server, if one is set.
    pub conflict: Option<String>,
    pub key_uri: Option<&'a str>,
    pub playlist_grant: Option<&'a str>,
}

/// Why the sink cannot start with the key service: a GStreamer error.
fn refused(why: impl std::fmt::Display) -> gst::ErrorMessage {
    crate::service::start_refused(&why)
}

use crate::service::start_failed as service_error;

fn parse_key(kid: u64, text: &KeyText) -> Result<SecretKey, String> {
    hls::parse_key(text.as_str())
        .map_err(|err| format!("the key service's key for KID {kid} is unusable: {err}"))
}

impl StreamCryptHlsSink {
    /// READY->PAUSED with `key-server`: checks the settings, the grant
    /// (publish and watch) and `playlist-grant` (watch only), asks the service
    /// for the current KID and fetches its key, then starts the worker.
    pub(super) fn start_service(&self, start: ServiceStart<'_>) -> Result<(), gst::ErrorMessage> {
        if let Some(conflict) = start.conflict {
            return Err(refused(conflict));
        }
        let resolved =
            crate::service::resolve_at_start(self, start.service, Role::Publisher, None, None)?;
        let (client, stream, grant) = (&resolved.client, &resolved.stream, &resolved.grant);
        let token = match start.playlist_grant {
            Some(token) => {
                let checked =
                    Grant::check(token, stream, Role::PublicViewer, key_client::unix_now())
                        .map_err(|why| refused(format!("playlist-grant: {why}")))?;
                Some(Zeroizing::new(checked.token().to_owned()))
            }
            None => None,
        };
        let key_uri = match start.key_uri {
            Some(text) => {
                let pattern =
                    Pattern::parse(text).map_err(|why| refused(format!("key-uri: {why}")))?;
                if !pattern.is_numbered() {
                    return Err(refused(
                        "key-uri: with key-server it needs one %d, for the KID (each key \
                         period has its own key)",
                    ));
                }
                Some(pattern)
            }
            None => None,
        };
        let current = client
            .current(stream, grant.token())
            .map_err(service_error)?;
        let bits = hls::KEY_LEN * 8;
        let text = client
            .key(stream, current.kid, bits, grant.token())
            .map_err(service_error)?;
        let key = parse_key(current.kid, &text).map_err(refused)?;
        gst::info!(
            super::imp::cat(),
            imp = self,
            "key service {}: stream {}, KID {}, a new key every {} s; {}",
            client.server(),
            stream,
            current.kid,
            current.key_period,
            grant.describe_expiry()
        );
        *self.period_keys.lock().unwrap() = Some(PeriodKeys {
            client: client.clone(),
            stream: stream.clone(),
            key_uri,
            token,
            period: current.key_period,
            current: (current.kid, key),
            next: None,
            late: None,
            failed: None,
        });
        let worker = Worker::start(self, resolved, bits, Role::Publisher);
        worker.fetch(current.kid + 1);
        self.worker.install(worker);
        Ok(())
    }

    /// Stops the worker (waiting for it) and forgets the keys.
    pub(super) fn stop_service(&self) {
        self.worker.stop();
        *self.period_keys.lock().unwrap() = None;
    }

    /// The key for a segment written now; `None` without key-server.
    pub(super) fn segment_key(&self) -> Option<GivenKey> {
        let mut guard = self.period_keys.lock().unwrap();
        let keys = guard.as_mut()?;
        let due = key_client::unix_now() / keys.period;
        if keys.next.as_ref().is_some_and(|(kid, _)| *kid <= due) {
            keys.current = keys.next.take().expect("checked");
            keys.late = None;
            self.worker.fetch(keys.current.0 + 1);
        }
        let (kid, key) = &keys.current;
        let late = (due > *kid && keys.late.replace(due) != Some(due)).then_some(*kid);
        let given = GivenKey {
            number: *kid,
            key: key.clone(),
            uri: keys.uri(*kid),
        };
        drop(guard);
        if let Some(kid) = late {
            self.worker.fetch(due);
            gst::element_imp_warning!(
                self,
                gst::ResourceError::Read,
                ("The key for KID {due} (the current key period) has not come from the key \
                     service yet: segments stay under KID {kid} until it comes")
            );
        }
        Some(given)
    }
}

impl ServiceUser for StreamCryptHlsSink {
    fn key_fetched(&self, kid: u64, key: Result<KeyText, ClientError>) {
        let key = key
            .map_err(|err| err.to_string())
            .and_then(|text| parse_key(kid, &text));
        let mut guard = self.period_keys.lock().unwrap();
        let Some(keys) = guard.as_mut() else {
            return;
        };
        match key {
            Ok(key) => {
                keys.failed = None;
                let newer =
                    kid > keys.current.0 && keys.next.as_ref().is_none_or(|(next, _)| kid > *next);
                if newer {
                    keys.next = Some((kid, key));
                }
            }
            Err(why) => {
                let first = keys.failed.replace(kid) != Some(kid);
                let current = keys.current.0;
                drop(guard);
                if first {
                    gst::element_imp_warning!(
                        self,
                        gst::ResourceError::Read,
                        ("Cannot fetch the key for KID {kid}: {why}; segments stay under KID \
                             {current} until it comes (asked again every second)")
                    );
                }
                self.worker.tick_at(SystemTime::now() + RETRY);
            }
        }
    }

    /// Asks again for the next key after a failed fetch.
    fn tick(&self) -> Option<SystemTime> {
        let next = {
            let guard = self.period_keys.lock().unwrap();
            let keys = guard.as_ref()?;
            keys.next.is_none().then_some(keys.current.0 + 1)
        };
        if let Some(kid) = next {
            self.worker.fetch(kid);
        }
        None
    }
}
