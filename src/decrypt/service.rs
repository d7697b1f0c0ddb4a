// SPDX-License-Identifier: MPL-2.0
//! `streamdecrypt` with `key-server`: a KID met in the stream that has no key
//! is fetched from the key service by the element's worker thread, instead of
//! asking the application (`request-key`).
//!
//! The streaming thread holds a frame whose key is being fetched up to
//! `key-wait` milliseconds (a flush or a stop ends the wait at once); if the
//! key has not come by then, the frame is dropped and counted as without a
//! key. Fetches go through the same gate as `request-key`: one per KID at a
//! time, few at once, so forged KIDs cannot turn into a flood of requests.
//! A fetched key is on probation until a frame authenticates under it (only
//! then does its replay window move); then the next period's key (KID + 1) is
//! fetched ahead, so that a rotation never waits.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use gst::subclass::prelude::*;

use super::OnError;
use super::imp::{KeySource, LiveKey, StreamDecrypt};
use crate::format::Format;
use crate::key_client::{self, ClientError, Role};
use crate::key_requests::{self, Held};
use crate::keys::KeyText;
use crate::service::{ServiceSettings, ServiceUser, Worker};

pub const DEFAULT_KEY_WAIT_MS: u32 = 2000;

/// The KIDs being fetched, and why the last fetch of a KID failed; the
/// streaming thread waits on it.
#[derive(Default)]
pub struct Fetches {
    state: Mutex<FetchState>,
    changed: Condvar,
}

#[derive(Default)]
struct FetchState {
    in_flight: HashSet<u64>,
    failed: HashMap<u64, String>,
    /// A flush or a stop: no waiting.
    interrupted: bool,
}

impl Fetches {
    fn begin(&self, kid: u64) {
        let mut state = self.state.lock().unwrap();
        state.in_flight.insert(kid);
        state.failed.remove(&kid);
    }

    fn is_in_flight(&self, kid: u64) -> bool {
        self.state.lock().unwrap().in_flight.contains(&kid)
    }

    fn done(&self, kid: u64, failure: Option<String>) {
        let mut state = self.state.lock().unwrap();
        state.in_flight.remove(&kid);
        if let Some(why) = failure {
            if state.failed.len() >= key_requests::MAX_PENDING {
                state.failed.clear();
            }
            state.failed.insert(kid, why);
        }
        self.changed.notify_all();
    }

    /// Waits until `kid` is no longer being fetched, at most `wait`; returns
    /// why its fetch failed, if it did.
    fn wait(&self, kid: u64, wait: Duration) -> Result<(), String> {
        let deadline = Instant::now() + wait;
        let mut state = self.state.lock().unwrap();
        while state.in_flight.contains(&kid) && !state.interrupted {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "its key is still being fetched from the key service after key-wait ({} \
                     ms)",
                    wait.as_millis()
                ));
            }
            state = self.changed.wait_timeout(state, left).unwrap().0;
        }
        if state.interrupted {
            return Err("flushing".into());
        }
        match state.failed.get(&kid) {
            Some(why) => Err(why.clone()),
            None => Ok(()),
        }
    }

    /// A flush started or the element stops (`true`), or either ended.
    pub fn interrupt(&self, interrupted: bool) {
        self.state.lock().unwrap().interrupted = interrupted;
        self.changed.notify_all();
    }

    fn clear(&self) {
        let mut state = self.state.lock().unwrap();
        state.in_flight.clear();
        state.failed.clear();
    }
}

impl StreamDecrypt {
    /// At start, with `key-server` set: checks the settings and the grant
    /// (watch rights), asks the service for its key period and fetches the
    /// current period's key (which also proves that the service takes the
    /// grant), then starts the worker, which fetches the next one.
    pub(super) fn start_from_service(
        &self,
        service: &ServiceSettings,
        format: &Format,
        own_keys: Option<&'static str>,
    ) -> Result<(), gst::ErrorMessage> {
        let resolved =
            crate::service::resolve_at_start(self, service, Role::Watcher, Some(format), own_keys)?;
        let service_error = crate::service::start_failed;
        let client = &resolved.client;
        let period = client.key_period().map_err(service_error)?;
        let kid = key_client::unix_now() / period;
        let bits = format.key_lens()[0] * 8;
        let text = client
            .key(&resolved.stream, kid, bits, resolved.grant.token())
            .map_err(service_error)?;
        gst::info!(
            super::imp::cat(),
            imp = self,
            "key service {}: stream {}, a new key every {period} s, now KID {kid}; {}",
            client.server(),
            resolved.stream,
            resolved.grant.describe_expiry()
        );
        self.fetches.clear();
        self.fetches.interrupt(false);
        self.add_key(kid, text, KeySource::Request).map_err(|err| {
            gst::error_msg!(
                gst::ResourceError::OpenRead,
                ("Cannot start: the key service's key for KID {kid} is unusable: {err}")
            )
        })?;
        let worker = Worker::start(self, resolved, bits, Role::Watcher);
        self.worker.install(worker);
        self.prefetch(kid + 1);
        Ok(())
    }

    /// Stops the worker (waiting for it) and wakes a streaming thread that
    /// waits for a key.
    pub(super) fn stop_service(&self) {
        self.fetches.interrupt(true);
        self.worker.stop();
        self.fetches.clear();
    }

    /// Whether keys come from the key service.
    pub(super) fn uses_service(&self) -> bool {
        self.worker.is_running()
    }

    /// Hands `kid` to the worker if the request gate allows; returns whether
    /// a fetch is under way.
    fn ask_service(&self, kid: u64) -> Result<bool, Held> {
        if self.fetches.is_in_flight(kid) {
            return Ok(true);
        }
        {
            let mut state = self.state.lock().unwrap();
            let running = state.running.as_mut().ok_or(Held::RateLimited)?;
            running.requests.ask(kid, Instant::now())?;
            state.stats.key_requests += 1;
        }
        self.fetches.begin(kid);
        let queued = self.worker.fetch(kid);
        if !queued {
            self.fetches
                .done(kid, Some("too many keys are being fetched".into()));
        }
        Ok(queued)
    }

    /// The key of `kid`, fetched from the key service: the streaming thread
    /// waits for it up to `key-wait`. `Err` says why there is none.
    pub(super) fn key_from_service(&self, kid: u64) -> Result<Arc<LiveKey>, String> {
        let wait = Duration::from_millis(self.settings_key_wait().into());
        match self.ask_service(kid) {
            Ok(true) => self.fetches.wait(kid, wait)?,
            Ok(false) => {}
            Err(Held::AskedRecently) => {
                // Asked less than a second ago, and it did not come: why.
                if let Some(why) = self.fetches.state.lock().unwrap().failed.get(&kid) {
                    return Err(why.clone());
                }
            }
            Err(Held::RateLimited) => {
                return Err(format!(
                    "not fetched: too many keys asked for lately (at most {} at once, then one \
                     per {} ms)",
                    key_requests::BURST,
                    key_requests::REFILL.as_millis()
                ));
            }
        }
        self.state.lock().unwrap().live_key(kid).ok_or_else(|| {
            match self.fetches.state.lock().unwrap().failed.get(&kid) {
                Some(why) => why.clone(),
                None => "the key service gave none".into(),
            }
        })
    }

    /// A key fetched from the service authenticated a frame: the next
    /// period's key is fetched ahead, unless it is here or on its way.
    pub(super) fn prefetch(&self, kid: u64) {
        let held = self.state.lock().unwrap().live_key(kid).is_some();
        if !held {
            let _ = self.ask_service(kid);
        }
    }
}

impl ServiceUser for StreamDecrypt {
    fn key_fetched(&self, kid: u64, key: Result<KeyText, ClientError>) {
        let failure = match key {
            Ok(text) => self
                .add_key(kid, text, KeySource::Request)
                .err()
                .map(|err| format!("the key service's key for KID {kid} is unusable: {err}")),
            Err(err) => Some(err.to_string()),
        };
        let Some(why) = failure else {
            self.fetches.done(kid, None);
            return;
        };
        self.fetches.done(kid, Some(why.clone()));
        let fail = self.on_error_setting() == OnError::Fail;
        let message = format!("Cannot fetch the key for KID {kid}: {why}");
        if fail {
            gst::element_imp_error!(self, gst::StreamError::DecryptNokey, ("{message}"));
        } else {
            gst::element_imp_warning!(
                self,
                gst::StreamError::DecryptNokey,
                ("{message}; frames under KID {kid} are dropped")
            );
        }
    }
}
