// SPDX-License-Identifier: MPL-2.0
//! When the decrypter may ask the application for a key (`request-key`).
//!
//! Anyone who can put a frame on the wire chooses its KID, so a stream of forged
//! frames with random KIDs must not turn into a stream of requests to the
//! application (which may in turn call a key service). The gate allows at most
//! one request per KID until it is answered or `RETRY` has passed, and at most
//! `BURST` requests at once, refilled at one per `REFILL`, across all KIDs. A
//! request whose key then authenticates a frame gives its allowance back: a
//! sender that switches keys first, however often, is never held up, while
//! requests for forged KIDs, whose keys never authenticate anything, soon are.
//! It remembers the KIDs asked for and not yet answered: a key that arrives for
//! one of them is an answer, and is held on probation (see `crate::keyring`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// A KID asked for is not asked for again before this.
pub const RETRY: Duration = Duration::from_secs(1);
/// Requests that may go out at once.
pub const BURST: u32 = 8;
/// One more request is allowed per this interval, up to `BURST`.
pub const REFILL: Duration = Duration::from_millis(250);
/// Unanswered KIDs remembered; the oldest are forgotten first.
pub const MAX_PENDING: usize = 1024;

/// Why a request was not made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    /// This KID was asked for less than `RETRY` ago.
    AskedRecently,
    /// Too many requests lately.
    RateLimited,
}

#[derive(Debug)]
pub struct RequestGate {
    /// KIDs asked for and not answered, with when they were last asked for.
    pending: HashMap<u64, Instant>,
    tokens: u32,
    refilled: Option<Instant>,
}

impl Default for RequestGate {
    fn default() -> Self {
        Self {
            pending: HashMap::new(),
            tokens: BURST,
            refilled: None,
        }
    }
}

impl RequestGate {
    /// Whether to ask for `kid`'s key now; if so, the request is counted.
    pub fn ask(&mut self, kid: u64, now: Instant) -> Result<(), Held> {
        if let Some(asked) = self.pending.get(&kid)
            && now.saturating_duration_since(*asked) < RETRY
        {
            return Err(Held::AskedRecently);
        }
        self.refill(now);
        if self.tokens == 0 {
            return Err(Held::RateLimited);
        }
        self.tokens -= 1;
        if self.pending.len() >= MAX_PENDING && !self.pending.contains_key(&kid) {
            let oldest = self
                .pending
                .iter()
                .min_by_key(|(_, asked)| **asked)
                .map(|(kid, _)| *kid)
                .expect("not empty");
            self.pending.remove(&oldest);
        }
        self.pending.insert(kid, now);
        Ok(())
    }

    fn refill(&mut self, now: Instant) {
        let Some(refilled) = self.refilled else {
            self.refilled = Some(now);
            return;
        };
        let elapsed = now.saturating_duration_since(refilled);
        let earned = (elapsed.as_nanos() / REFILL.as_nanos()).min(BURST as u128) as u32;
        if earned > 0 {
            self.tokens = (self.tokens + earned).min(BURST);
            self.refilled = Some(refilled + REFILL * earned);
            if self.tokens == BURST {
                self.refilled = Some(now);
            }
        }
    }

    /// Whether `kid` was asked for and has not been answered yet.
    pub fn is_pending(&self, kid: u64) -> bool {
        self.pending.contains_key(&kid)
    }

    /// A key arrived for `kid`: it is no longer asked for.
    pub fn answered(&mut self, kid: u64) {
        self.pending.remove(&kid);
    }

    /// A requested key authenticated a frame: the request was a real one, and
    /// its allowance comes back.
    pub fn proven(&mut self) {
        self.tokens = (self.tokens + 1).min(BURST);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_request_per_kid_until_retry() {
        let start = Instant::now();
        let mut gate = RequestGate::default();
        assert_eq!(gate.ask(7, start), Ok(()));
        for ms in [0, 10, 999] {
            let now = start + Duration::from_millis(ms);
            assert_eq!(gate.ask(7, now), Err(Held::AskedRecently));
        }
        assert!(gate.is_pending(7));
        assert_eq!(gate.ask(7, start + RETRY), Ok(()));
        gate.answered(7);
        assert!(!gate.is_pending(7));
        assert_eq!(
            gate.ask(7, start + RETRY),
            Ok(()),
            "answered: may ask again"
        );
    }

    #[test]
    fn bursts_are_bounded_and_refill() {
        let start = Instant::now();
        let mut gate = RequestGate::default();
        // 1,000 forged frames with 200 KIDs, all at once: BURST requests.
        let mut asked = 0;
        for i in 0..1000u64 {
            if gate.ask(i % 200, start).is_ok() {
                asked += 1;
            }
        }
        assert_eq!(asked, BURST);
        assert_eq!(gate.ask(5000, start), Err(Held::RateLimited));
        // One more per REFILL.
        assert_eq!(gate.ask(5000, start + REFILL), Ok(()));
        assert_eq!(gate.ask(5001, start + REFILL), Err(Held::RateLimited));
        // A long pause refills to BURST, no more.
        let later = start + REFILL * 100;
        let granted = (6000..6100)
            .filter(|kid| gate.ask(*kid, later).is_ok())
            .count();
        assert_eq!(granted, BURST as usize);
    }

    #[test]
    fn sustained_rate_is_one_per_refill() {
        let start = Instant::now();
        let mut gate = RequestGate::default();
        let mut granted = 0;
        // Ten seconds of forged frames, one every millisecond, each a new KID.
        for ms in 0..10_000u64 {
            if gate.ask(ms, start + Duration::from_millis(ms)).is_ok() {
                granted += 1;
            }
        }
        let most = BURST as u64 + 10_000 / REFILL.as_millis() as u64;
        assert!(granted <= most, "{granted} > {most}");
        assert!(granted >= most - 1, "{granted}");
    }

    #[test]
    fn requests_whose_keys_prove_real_cost_nothing() {
        // A sender switching keys first 1,000 times in a second: each request
        // is answered with a key that authenticates the next frame.
        let start = Instant::now();
        let mut gate = RequestGate::default();
        for kid in 0..1000u64 {
            let now = start + Duration::from_millis(kid);
            assert_eq!(gate.ask(kid, now), Ok(()), "KID {kid}");
            gate.answered(kid);
            gate.proven();
        }
        // Forged KIDs right after still meet the limit.
        let later = start + Duration::from_millis(1000);
        let granted = (5000..5100)
            .filter(|kid| gate.ask(*kid, later).is_ok())
            .count();
        assert_eq!(granted, BURST as usize);
    }

    #[test]
    fn pending_kids_are_bounded() {
        let mut gate = RequestGate::default();
        let start = Instant::now();
        for kid in 0..(MAX_PENDING as u64 + 500) {
            let _ = gate.ask(kid, start + REFILL * kid as u32 * BURST);
        }
        assert!(gate.pending.len() <= MAX_PENDING);
        assert!(gate.is_pending(MAX_PENDING as u64 + 499));
        assert!(!gate.is_pending(0), "the oldest are forgotten first");
    }
}
