// SPDX-License-Identifier: MPL-2.0
//! What `streamencrypt`, `streamdecrypt` and `streamcrypthlssink` share to take
//! their keys from the key service: the `key-server`, `grant`, `grant-file` and
//! `stream-id` properties, the `grant-expiring` signal, and the worker thread
//! that does all the talking to the service off the streaming thread.
//!
//! The worker is owned by the element: started in `start()`, joined in
//! `stop()`. It holds none of the element's locks while it waits for the
//! service or emits a signal; the element hands it KIDs to fetch and gets the
//! keys back through `ServiceUser`.

use std::collections::VecDeque;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use zeroize::Zeroizing;

use crate::common::KeySettings;
use crate::format::Format;
use crate::grant;
use crate::key_client::{self, ClientError, Grant, KeyClient, Role};
use crate::keys::KeyText;

/// KIDs waiting to be fetched at most: more are refused (the decrypter's
/// request gate keeps forged KIDs far below this).
pub const MAX_QUEUED: usize = 16;
/// The longest warning ahead of a grant's expiry, and the share of its
/// lifetime it is at most: `grant-expiring` is emitted min(60 s, a tenth of
/// the lifetime) before `exp`, at least 1 s before.
const MAX_EXPIRY_LEAD: u64 = 60;

/// The properties of all three elements, in the order gst-inspect-1.0 shows
/// them. `role` says what the element does with the keys (in the blurbs).
pub fn properties(grant_blurb: &str) -> Vec<glib::ParamSpec> {
    vec![
        glib::ParamSpecString::builder("key-server")
            .nick("Key server")
            .blurb(
                "URL of the streamcrypt key service (http:// or https://, system CA roots, \
                 SSL_CERT_FILE honoured); set, keys come from it (with grant or grant-file \
                 and stream-id, in an SFrame mode) and key, key-file must be unset",
            )
            .mutable_ready()
            .build(),
        glib::ParamSpecString::builder("grant")
            .nick("Grant")
            .blurb(grant_blurb)
            .write_only()
            .mutable_playing()
            .build(),
        glib::ParamSpecString::builder("grant-file")
            .nick("Grant file")
            .blurb(
                "File whose first line is the grant (keeps it out of `ps`); a warning if \
                 others can read it. Of grant and grant-file the one set last is used; \
                 read at start, and at once when set while playing",
            )
            .mutable_playing()
            .build(),
        glib::ParamSpecString::builder("stream-id")
            .nick("Stream ID")
            .blurb(
                "The stream's name at the key service (1-128 of A-Z a-z 0-9 . _ -); the \
                 grant must cover it",
            )
            .mutable_ready()
            .build(),
    ]
}

/// The signal `gchararray grant-expiring (guint64 expires_at_unix)`: emitted
/// from the element's key-service thread before the grant expires; a handler
/// returns a new grant, or NULL. The first handler to return one wins.
pub fn grant_expiring_signal() -> glib::subclass::Signal {
    glib::subclass::Signal::builder("grant-expiring")
        .param_types([u64::static_type()])
        .return_type::<Option<String>>()
        .run_last()
        .accumulator(first_string)
        .build()
}

/// The accumulator of a signal that asks handlers for a string (a key, a
/// grant): the first handler to return one wins.
pub fn first_string(
    _hint: &glib::subclass::SignalInvocationHint,
    accumulated: glib::Value,
    value: &glib::Value,
) -> ControlFlow<glib::Value, glib::Value> {
    if matches!(value.get::<Option<&str>>(), Ok(Some(_))) {
        ControlFlow::Break(value.clone())
    } else {
        ControlFlow::Continue(accumulated)
    }
}

/// The key property set along with `key-server`, if any: `key`,
/// `passphrase` or `key-file`.
pub fn own_keys(keys: &KeySettings) -> Option<&'static str> {
    match (&keys.key, &keys.key_file) {
        (Some(text), _) if text.is_passphrase() => Some("passphrase"),
        (Some(_), _) => Some("key"),
        (None, Some(_)) => Some("key-file"),
        (None, None) => None,
    }
}

/// `ServiceSettings::resolve` at an element's start: a refusal becomes the
/// element's start error, and an exposed grant file a warning it posts.
pub fn resolve_at_start<T: ElementImpl>(
    imp: &T,
    service: &ServiceSettings,
    role: Role,
    format: Option<&Format>,
    own_keys: Option<&str>,
) -> Result<Resolved, gst::ErrorMessage> {
    let resolved = service
        .resolve(role, format, own_keys)
        .map_err(|why| start_refused(&why))?;
    if let Some(exposed) = &resolved.exposed {
        gst::element_imp_warning!(imp, gst::ResourceError::Settings, ("{exposed}"));
    }
    Ok(resolved)
}

/// Why an element cannot start with the key service, as its start error.
pub fn start_refused(why: &dyn std::fmt::Display) -> gst::ErrorMessage {
    gst::error_msg!(
        gst::LibraryError::Settings,
        ("Cannot take keys from the key service: {why}")
    )
}

/// A request to the key service that failed at start, as the start error:
/// a refused grant is "not authorized", anything else "cannot read".
pub fn start_failed(err: ClientError) -> gst::ErrorMessage {
    let message = format!("Cannot start: {err}");
    if err.is_denied() {
        gst::error_msg!(gst::ResourceError::NotAuthorized, ("{message}"))
    } else {
        gst::error_msg!(gst::ResourceError::OpenRead, ("{message}"))
    }
}

/// The key-service settings, kept between runs.
#[derive(Default, Clone)]
pub struct ServiceSettings {
    pub server: Option<String>,
    grant: Option<Zeroizing<String>>,
    grant_file: Option<PathBuf>,
    /// Whether `grant-file` (rather than `grant`) was set last.
    grant_from_file: bool,
    pub stream: Option<String>,
}

impl std::fmt::Debug for ServiceSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceSettings")
            .field("server", &self.server)
            .field("grant_file", &self.grant_file)
            .field("stream", &self.stream)
            .finish_non_exhaustive()
    }
}

/// What `ServiceSettings::resolve` found: all a running element needs.
pub struct Resolved {
    pub client: KeyClient,
    pub stream: String,
    pub grant: Grant,
    /// The grant file can be read by others.
    pub exposed: Option<String>,
}

impl ServiceSettings {
    /// Sets one of `properties()`; returns `None` if `name` is not one, else
    /// the new grant's text when `grant` or `grant-file` gave one (to take into
    /// use at once while running).
    pub fn set(
        &mut self,
        name: &str,
        value: &glib::Value,
    ) -> Option<Result<Option<Zeroizing<String>>, String>> {
        let text = || value.get::<Option<String>>().expect("type checked");
        match name {
            "key-server" => self.server = text().filter(|s| !s.trim().is_empty()),
            "stream-id" => self.stream = text(),
            "grant" => {
                // Read where GLib holds it: our only copy is wiped.
                let token = value.get::<Option<&str>>().expect("type checked");
                self.grant = token.map(|t| Zeroizing::new(t.trim().to_owned()));
                self.grant_from_file = false;
                return Some(Ok(self.grant.clone()));
            }
            "grant-file" => {
                self.grant_file = value.get::<Option<PathBuf>>().expect("type checked");
                self.grant_from_file = self.grant_file.is_some();
                return Some(match &self.grant_file {
                    Some(path) => key_client::read_grant_file(path).map(|(token, _)| Some(token)),
                    None => Ok(None),
                });
            }
            _ => return None,
        }
        Some(Ok(None))
    }

    /// The value of one of `properties()` (`grant` is write-only).
    pub fn get(&self, name: &str) -> Option<glib::Value> {
        match name {
            "key-server" => Some(self.server.to_value()),
            "grant-file" => Some(self.grant_file.to_value()),
            "stream-id" => Some(self.stream.to_value()),
            _ => None,
        }
    }

    /// Whether keys come from the service.
    pub fn enabled(&self) -> bool {
        self.server.is_some()
    }

    /// At start, with `key-server` set: checks every setting the service needs
    /// and the grant's claims for `role`; `format` is the mode's and
    /// `own_keys` names a key property also set. The error says what is wrong.
    pub fn resolve(
        &self,
        role: Role,
        format: Option<&Format>,
        own_keys: Option<&str>,
    ) -> Result<Resolved, String> {
        let server = self.server.as_deref().expect("resolve with key-server set");
        let Some(stream) = &self.stream else {
            return Err(format!(
                "key-server is set ({server}) but stream-id is not: set the stream's name at \
                 the key service"
            ));
        };
        key_client::check_stream_name(stream)?;
        if let Some(format) = format
            && !matches!(format, Format::Sframe(_))
        {
            return Err(
                "key-server needs an SFrame mode (aes-128-gcm, aes-256-gcm, aes-192-gcm, \
                 sm4-gcm, aes-128-ctr-hmac-*): the service's keys change every key period, \
                 and only SFrame frames carry the KID that tells a decrypter which \
                 period's key a frame needs"
                    .into(),
            );
        }
        if let Some(own) = own_keys {
            return Err(format!(
                "key-server and {own} are both set: with key-server every key comes from \
                 the key service; unset {own} (or key-server)"
            ));
        }
        let (token, exposed) = match (&self.grant, &self.grant_file) {
            (_, Some(path)) if self.grant_from_file || self.grant.is_none() => {
                let (token, exposed) = key_client::read_grant_file(path)?;
                (token, exposed)
            }
            (Some(token), _) => (token.clone(), None),
            _ => {
                return Err(format!(
                    "key-server is set ({server}) but no grant: set grant or grant-file"
                ));
            }
        };
        let grant = Grant::check(&token, stream, role, key_client::unix_now())?;
        let client = KeyClient::new(server).map_err(|e| e.to_string())?;
        Ok(Resolved {
            client,
            stream: stream.clone(),
            grant,
            exposed,
        })
    }
}

/// What the worker calls back into; implemented by each element's `imp`.
pub trait ServiceUser: ObjectSubclass<Type: IsA<gst::Element> + Send + Sync> {
    /// A key asked for with `Worker::fetch` came, or why not.
    fn key_fetched(&self, kid: u64, key: Result<KeyText, ClientError>);

    /// The element's timer (`Worker::tick_at`) is due; returns when it is due
    /// next.
    fn tick(&self) -> Option<SystemTime> {
        None
    }
}

struct Jobs {
    stop: bool,
    fetch: VecDeque<u64>,
    tick_at: Option<SystemTime>,
    grant: Grant,
    /// When the grant was taken into use (UNIX seconds): its lifetime, for
    /// when to warn, counts from then (or its nbf, if later).
    taken_at: u64,
    /// `grant-expiring` was emitted for this grant.
    warned: bool,
    /// Its expiry was reported.
    expired: bool,
}

impl Jobs {
    /// When `grant-expiring` is due (UNIX seconds).
    fn warn_at(&self) -> u64 {
        let exp = self.grant.claims.exp;
        let lifetime = exp.saturating_sub(self.taken_at.max(self.grant.claims.nbf));
        exp.saturating_sub((lifetime / 10).clamp(1, MAX_EXPIRY_LEAD))
    }

    /// The next time something is due, if any.
    fn next_due(&self) -> Option<SystemTime> {
        let at = |unix: u64| UNIX_EPOCH + Duration::from_secs(unix);
        let grant = if !self.warned {
            Some(at(self.warn_at()))
        } else if !self.expired {
            Some(at(self.grant.claims.exp))
        } else {
            None
        };
        [grant, self.tick_at].into_iter().flatten().min()
    }
}

struct Shared {
    jobs: Mutex<Jobs>,
    wake: Condvar,
    /// The stream and role new grants are checked for.
    stream: String,
    role: Role,
}

/// The element's thread that talks to the key service.
pub struct Worker {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// What the key-service thread needs to fetch keys.
struct Fetcher {
    client: KeyClient,
    stream: String,
    /// Key length in bits (128, 192 or 256).
    bits: usize,
    role: Role,
}

impl Worker {
    /// Starts the thread for `element`: keys of `bits` for `resolved`'s
    /// stream, under its grant, which new grants are checked for `role`.
    pub fn start<T: ServiceUser>(element: &T, resolved: Resolved, bits: usize, role: Role) -> Self {
        let fetcher = Fetcher {
            client: resolved.client,
            stream: resolved.stream,
            bits,
            role,
        };
        let grant = resolved.grant;
        let shared = Arc::new(Shared {
            jobs: Mutex::new(Jobs {
                stop: false,
                fetch: VecDeque::new(),
                tick_at: None,
                grant,
                taken_at: key_client::unix_now(),
                warned: false,
                expired: false,
            }),
            wake: Condvar::new(),
            stream: fetcher.stream.clone(),
            role: fetcher.role,
        });
        let weak = element.obj().downgrade();
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("streamcrypt-keys".into())
            .spawn(move || run::<T>(weak, &thread_shared, &fetcher))
            .expect("a thread for the key service");
        Self {
            shared,
            thread: Some(thread),
        }
    }

    /// Asks for the key of `kid`; false when it is already asked for or too
    /// many are.
    pub fn fetch(&self, kid: u64) -> bool {
        let mut jobs = self.shared.jobs.lock().unwrap();
        if jobs.fetch.contains(&kid) || jobs.fetch.len() >= MAX_QUEUED {
            return false;
        }
        jobs.fetch.push_back(kid);
        self.shared.wake.notify_one();
        true
    }

    /// Calls `ServiceUser::tick` at `at` (or earlier, if it is due earlier).
    pub fn tick_at(&self, at: SystemTime) {
        let mut jobs = self.shared.jobs.lock().unwrap();
        jobs.tick_at = Some(jobs.tick_at.map_or(at, |due| due.min(at)));
        self.shared.wake.notify_one();
    }

    /// `grant` or `grant-file` set while running: the new grant is checked
    /// and, if good, used for later requests; `Err` says why it was refused.
    pub fn take_new_grant(&self, token: &str) -> Result<(), String> {
        let grant = Grant::check(
            token,
            &self.shared.stream,
            self.shared.role,
            key_client::unix_now(),
        )?;
        replace_grant(&self.shared, grant);
        Ok(())
    }
}

fn replace_grant(shared: &Shared, grant: Grant) {
    let mut jobs = shared.jobs.lock().unwrap();
    jobs.grant = grant;
    jobs.taken_at = key_client::unix_now();
    jobs.warned = false;
    jobs.expired = false;
    shared.wake.notify_one();
}

impl Drop for Worker {
    /// Stops the thread and waits for it: a request under way ends within the
    /// client's timeout.
    fn drop(&mut self) {
        self.shared.jobs.lock().unwrap().stop = true;
        self.shared.wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The worker's loop: grant expiry first, then the element's timer, then the
/// keys to fetch; it sleeps until the next of them. No lock is held while
/// the service is asked or a signal emitted.
fn run<T: ServiceUser>(element: glib::WeakRef<T::Type>, shared: &Shared, fetcher: &Fetcher) {
    let mut jobs = shared.jobs.lock().unwrap();
    loop {
        if jobs.stop {
            return;
        }
        let Some(obj) = element.upgrade() else {
            return;
        };
        let imp = obj.imp();
        let now = key_client::unix_now();
        if !jobs.warned && now >= jobs.warn_at() {
            jobs.warned = true;
            let current = jobs.grant.clone();
            drop(jobs);
            ask_for_new_grant(imp, shared, fetcher, &current);
            jobs = shared.jobs.lock().unwrap();
            continue;
        }
        if !jobs.expired && now >= jobs.grant.claims.exp {
            jobs.expired = true;
            let current = jobs.grant.clone();
            drop(jobs);
            let message = format!(
                "{}: no new grant came (answer grant-expiring with one, or set grant); keys \
                 can no longer be fetched",
                current
                    .describe_expiry()
                    .replace(" expires at ", " expired at ")
            );
            gst::element_imp_error!(imp, gst::ResourceError::NotAuthorized, ("{message}"));
            jobs = shared.jobs.lock().unwrap();
            continue;
        }
        if jobs.tick_at.is_some_and(|at| at <= SystemTime::now()) {
            jobs.tick_at = None;
            drop(jobs);
            let next = imp.tick();
            jobs = shared.jobs.lock().unwrap();
            if let Some(next) = next {
                jobs.tick_at = Some(jobs.tick_at.map_or(next, |due| due.min(next)));
            }
            continue;
        }
        if let Some(kid) = jobs.fetch.front().copied() {
            let grant = jobs.grant.clone();
            drop(jobs);
            let key = fetcher
                .client
                .key(&fetcher.stream, kid, fetcher.bits, grant.token());
            drop(grant);
            // Off the queue only now: asking again meanwhile adds nothing.
            shared.jobs.lock().unwrap().fetch.retain(|k| *k != kid);
            imp.key_fetched(kid, key);
            jobs = shared.jobs.lock().unwrap();
            continue;
        }
        drop(obj);
        jobs = match jobs.next_due() {
            Some(due) => {
                let wait = due
                    .duration_since(SystemTime::now())
                    .unwrap_or(Duration::ZERO)
                    // Wall-clock seconds: wake on the next one at the latest.
                    .max(Duration::from_millis(10));
                shared.wake.wait_timeout(jobs, wait).unwrap().0
            }
            None => shared.wake.wait(jobs).unwrap(),
        };
    }
}

/// Emits `grant-expiring` and takes the new grant a handler returns, if it
/// covers the same stream with the rights the element needs.
fn ask_for_new_grant<T: ServiceUser>(imp: &T, shared: &Shared, fetcher: &Fetcher, current: &Grant) {
    let exp = current.claims.exp;
    gst::info!(
        gst::CAT_DEFAULT,
        obj = imp.obj(),
        "{}: emitting grant-expiring",
        current.describe_expiry()
    );
    let answer = imp
        .obj()
        .emit_by_name::<Option<String>>("grant-expiring", &[&exp])
        .map(Zeroizing::new);
    let Some(token) = answer else {
        return;
    };
    match Grant::check(
        &token,
        &fetcher.stream,
        fetcher.role,
        key_client::unix_now(),
    ) {
        Ok(grant) => {
            gst::info!(
                gst::CAT_DEFAULT,
                obj = imp.obj(),
                "new grant taken: {}",
                grant.describe_expiry()
            );
            replace_grant(shared, grant);
        }
        Err(why) => gst::element_imp_warning!(
            imp,
            gst::ResourceError::NotAuthorized,
            (
                "The grant returned by grant-expiring was refused: {why}; the current one stays \
                 until it expires at {} ({exp})",
                grant::utc_time(exp)
            )
        ),
    }
}

/// How often a key the service did not give is asked for again.
pub const RETRY: Duration = Duration::from_secs(1);

/// An element's key-service thread, while it runs: what the element's code
/// asks of it, none of it waiting for the service.
#[derive(Default)]
pub struct WorkerSlot(Mutex<Option<Worker>>);

impl WorkerSlot {
    pub fn install(&self, worker: Worker) {
        *self.0.lock().unwrap() = Some(worker);
    }

    /// Stops the worker and waits for it.
    pub fn stop(&self) {
        let worker = self.0.lock().unwrap().take();
        drop(worker);
    }

    pub fn is_running(&self) -> bool {
        self.0.lock().unwrap().is_some()
    }

    /// Asks for `kid`'s key; false when no worker runs, or it would not take
    /// the request (see `Worker::fetch`).
    pub fn fetch(&self, kid: u64) -> bool {
        self.0
            .lock()
            .unwrap()
            .as_ref()
            .is_some_and(|worker| worker.fetch(kid))
    }

    pub fn tick_at(&self, at: SystemTime) {
        if let Some(worker) = self.0.lock().unwrap().as_ref() {
            worker.tick_at(at);
        }
    }

    /// After `ServiceSettings::set` took `grant` or `grant-file`: while running,
    /// the new grant is checked and handed to the worker for later requests.
    /// `Err` says why it was refused (the grant in use stays). Before start,
    /// the grant is checked at start.
    pub fn hand_over_grant(
        &self,
        set: Result<Option<Zeroizing<String>>, String>,
    ) -> Result<(), String> {
        let worker = self.0.lock().unwrap();
        let Some(worker) = worker.as_ref() else {
            return Ok(());
        };
        match set? {
            Some(token) => worker.take_new_grant(&token),
            None => Ok(()),
        }
    }
}
