// SPDX-License-Identifier: MPL-2.0
//! `streamencrypt` with `key-server`: the key of each key period from the key
//! service, KID = the period's index, switched at each period boundary (wall
//! clock) through the same path as a key set while playing.
//!
//! The next period's key is fetched while the current one is in use. If it is
//! not there at the boundary (the service is slow or unreachable), the current
//! key stays in use (no frame is held or lost), a warning says so, and the key
//! is switched as soon as it arrives.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gst::subclass::prelude::*;

use super::imp::{Settings, StreamEncrypt};
use crate::format::{Format, ReadyKey};
use crate::key_client::{self, ClientError, Role};
use crate::keys::KeyText;
use crate::service::{RETRY, Resolved, ServiceUser, Worker};

/// The periods' keys while running.
pub struct Rotation {
    format: Format,
    mode: &'static str,
    /// Seconds per key period (the service's).
    period: u64,
    /// The KID (period) whose key is in use or queued for the next buffer.
    current: u64,
    /// The next period's key, fetched ahead.
    next: Option<Arc<ReadyKey>>,
    /// The KID whose fetch last failed (warned once per KID).
    failed: Option<u64>,
    /// The KID that was due and missing at its boundary (warned once).
    late: Option<u64>,
}

impl Rotation {
    fn boundary(&self, kid: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(kid.saturating_mul(self.period))
    }
}

/// What `start()` learned from the service, to start the rotation with.
pub struct Started {
    pub key: Arc<ReadyKey>,
    resolved: Resolved,
    rotation: Rotation,
    bits: usize,
}

impl StreamEncrypt {
    /// At start, with `key-server` set: checks the settings and the grant
    /// (publish and watch rights), asks the service for the current KID and
    /// its key period, and fetches the current key.
    pub(super) fn start_from_service(
        &self,
        settings: &Settings,
        format: &Format,
    ) -> Result<Started, gst::ErrorMessage> {
        let keys = &settings.keys;
        let resolved = crate::service::resolve_at_start(
            self,
            &settings.service,
            Role::Publisher,
            Some(format),
            crate::service::own_keys(keys),
        )?;
        let service_error = crate::service::start_failed;
        let token = resolved.grant.token();
        let current = resolved
            .client
            .current(&resolved.stream, token)
            .map_err(service_error)?;
        let wanted = u64::from(settings.key_period);
        if wanted != 0 && wanted != current.key_period {
            return Err(gst::error_msg!(
                gst::LibraryError::Settings,
                (
                    "key-period is {wanted} s, but the key service at {} changes keys every {} \
                     s: set key-period=0 (the service's period) or {}",
                    resolved.client.server(),
                    current.key_period,
                    current.key_period
                )
            ));
        }
        let bits = format.key_lens()[0] * 8;
        let text = resolved
            .client
            .key(&resolved.stream, current.kid, bits, token)
            .map_err(service_error)?;
        let mode = keys.mode.nick();
        let key = ready_key(format, mode, current.kid, &text).map_err(|why| {
            gst::error_msg!(gst::ResourceError::OpenRead, ("Cannot start: {why}"))
        })?;
        gst::info!(
            super::imp::cat(),
            imp = self,
            "key service {}: stream {}, KID {}, a new key every {} s; {}",
            resolved.client.server(),
            resolved.stream,
            current.kid,
            current.key_period,
            resolved.grant.describe_expiry()
        );
        Ok(Started {
            key: Arc::new(key),
            rotation: Rotation {
                format: *format,
                mode,
                period: current.key_period,
                current: current.kid,
                next: None,
                failed: None,
                late: None,
            },
            resolved,
            bits,
        })
    }

    /// Starts the worker: it fetches the next period's key now and wakes at
    /// the boundary.
    pub(super) fn start_rotation(&self, started: Started) {
        let Started {
            resolved,
            rotation,
            bits,
            ..
        } = started;
        let next = rotation.current + 1;
        let boundary = rotation.boundary(next);
        *self.rotation.lock().unwrap() = Some(rotation);
        let worker = Worker::start(self, resolved, bits, Role::Publisher);
        worker.fetch(next);
        worker.tick_at(boundary);
        self.worker.install(worker);
    }

    /// Stops the worker (and waits for it) and forgets the periods' keys.
    pub(super) fn stop_rotation(&self) {
        self.worker.stop();
        *self.rotation.lock().unwrap() = None;
    }

    /// Switches to `key` (of period `kid`) at the next buffer; the next
    /// period's key is fetched then.
    fn switch_to(&self, rotation: &mut Rotation, key: Arc<ReadyKey>) -> SystemTime {
        let kid = key.kid();
        rotation.current = kid;
        rotation.late = None;
        self.queue_key(key);
        self.worker.fetch(kid + 1);
        rotation.boundary(kid + 1)
    }
}

/// `text` made ready as a key of `format` for `kid`.
fn ready_key(format: &Format, mode: &str, kid: u64, text: &KeyText) -> Result<ReadyKey, String> {
    ReadyKey::from_text(format, &Default::default(), kid, text, mode)
        .map_err(|err| format!("the key service's key for KID {kid} is unusable: {err}"))
}

impl ServiceUser for StreamEncrypt {
    fn key_fetched(&self, kid: u64, key: Result<KeyText, ClientError>) {
        let mut guard = self.rotation.lock().unwrap();
        let Some(rotation) = guard.as_mut() else {
            return;
        };
        if kid <= rotation.current {
            return;
        }
        let key = key
            .map_err(|err| err.to_string())
            .and_then(|text| ready_key(&rotation.format, rotation.mode, kid, &text));
        match key {
            Ok(key) => {
                rotation.failed = None;
                let due = key_client::unix_now() / rotation.period;
                if kid < due {
                    // A period that is over: the current one's key is asked for.
                    return;
                }
                if kid == due {
                    gst::info!(
                        super::imp::cat(),
                        imp = self,
                        "the key for KID {kid} came late: switching now"
                    );
                    let boundary = self.switch_to(rotation, Arc::new(key));
                    drop(guard);
                    self.worker.tick_at(boundary);
                } else {
                    rotation.next = Some(Arc::new(key));
                }
            }
            Err(why) => {
                let first = rotation.failed.replace(kid) != Some(kid);
                let current = rotation.current;
                drop(guard);
                if first {
                    gst::element_imp_warning!(
                        self,
                        gst::ResourceError::Read,
                        ("Cannot fetch the key for KID {kid}: {why}; KID {current} stays in use \
                             until it comes (asked again every second)")
                    );
                }
                self.worker.tick_at(SystemTime::now() + RETRY);
            }
        }
    }

    /// At a period boundary: the next period's key goes into use, or, if it
    /// is not there, the current one stays and the key is asked for again.
    fn tick(&self) -> Option<SystemTime> {
        let mut guard = self.rotation.lock().unwrap();
        let rotation = guard.as_mut()?;
        let due = key_client::unix_now() / rotation.period;
        let next = rotation.current + 1;
        if due < next {
            // Early (or a retry of the next key's fetch).
            if rotation.next.is_none() {
                self.worker.fetch(next);
            }
            return Some(rotation.boundary(next));
        }
        let ready = rotation.next.take().filter(|key| key.kid() == due);
        if let Some(key) = ready {
            return Some(self.switch_to(rotation, key));
        }
        // Periods missed altogether are skipped: the key of the current one is
        // asked for.
        let current = rotation.current;
        let warn = rotation.late.replace(due) != Some(due);
        drop(guard);
        self.worker.fetch(due);
        if warn {
            gst::element_imp_warning!(
                self,
                gst::ResourceError::Read,
                ("The key for KID {due} (the key period that began now) has not come from \
                     the key service yet: KID {current} stays in use until it comes")
            );
        }
        Some(SystemTime::now() + RETRY)
    }
}
