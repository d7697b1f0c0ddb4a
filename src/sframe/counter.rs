// SPDX-License-Identifier: MPL-2.0
//! Sender counters that never repeat a (key, KID, CTR) triple, even across restarts.
//!
//! SFrame's nonce is the derived salt XOR the frame counter, so a counter reused
//! under the same base key and KID reuses an AES-GCM nonce, which breaks both
//! confidentiality and integrity. Two mechanisms rule that out:
//!
//! * **Across processes**: a new counter starts at the wall clock in microseconds
//!   since 1970. A previous run with the same key stayed below the clock as long as it
//!   sent fewer than one frame per microsecond on average, so a later run starts
//!   above everything it used, provided the system clock did not step back between
//!   the two runs.
//! * **Within a process**: counters are reserved in blocks from a process-wide
//!   registry keyed by a fingerprint of (suite, KID, key). Restarted elements, and
//!   several elements sharing one key and KID, draw disjoint ranges from it whatever
//!   their frame rate.
//!
//! The price is a 7-byte counter in every header instead of 1 byte.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

/// Counters reserved per registry visit: one lock per this many frames.
const BLOCK: u64 = 1024;

/// A fingerprint of (suite, KID, key): the registry never holds key bytes.
pub type Fingerprint = [u8; 32];

#[derive(Debug, Default, Clone, Copy)]
struct Reserved {
    /// First counter not yet handed out.
    next: u64,
    /// Counters handed out for this key so far in this process.
    used: u64,
}

static REGISTRY: LazyLock<Mutex<HashMap<Fingerprint, Reserved>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

fn clock_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|since| since.as_micros().min(u64::MAX as u128) as u64)
        .unwrap_or(0)
}

/// The key has protected as many frames as its suite allows (or, in theory, the
/// 64-bit counter space is spent). Only a new key or KID can go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exhausted {
    pub limit: u64,
}

/// Hands out counters for one key. Made anew each time a key is taken into use.
#[derive(Debug)]
pub struct SendCounter {
    fingerprint: Fingerprint,
    limit: u64,
    next: u64,
    end: u64,
}

impl SendCounter {
    pub fn new(fingerprint: Fingerprint, limit: u64) -> Self {
        Self::starting_at(fingerprint, limit, clock_micros())
    }

    /// Starts no lower than `floor` (the clock, in `new`).
    fn starting_at(fingerprint: Fingerprint, limit: u64, floor: u64) -> Self {
        Self {
            fingerprint,
            limit,
            next: floor,
            end: floor,
        }
    }

    pub fn next_counter(&mut self) -> Result<u64, Exhausted> {
        if self.next == self.end {
            self.reserve()?;
        }
        let counter = self.next;
        self.next += 1;
        Ok(counter)
    }

    fn reserve(&mut self) -> Result<(), Exhausted> {
        let exhausted = Exhausted { limit: self.limit };
        let mut registry = REGISTRY.lock().unwrap();
        if registry.len() > 256 {
            // Entries the clock has overtaken add nothing to the guarantee.
            let now = clock_micros();
            registry.retain(|_, reserved| reserved.next > now);
        }
        let reserved = registry.entry(self.fingerprint).or_default();
        let start = self.next.max(reserved.next);
        let count = BLOCK
            .min(self.limit.saturating_sub(reserved.used))
            .min(u64::MAX - start);
        if count == 0 {
            return Err(exhausted);
        }
        reserved.next = start + count;
        reserved.used += count;
        self.next = start;
        self.end = start + count;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn fingerprint(tag: u8) -> Fingerprint {
        let mut fp = [0u8; 32];
        fp[0] = 0xfe;
        fp[1] = tag;
        fp
    }

    #[test]
    fn starts_at_the_clock_and_counts_up() {
        let before = clock_micros();
        let mut counter = SendCounter::new(fingerprint(1), u64::MAX);
        let first = counter.next_counter().unwrap();
        assert!(first >= before);
        for i in 1..3000 {
            assert_eq!(counter.next_counter().unwrap(), first + i);
        }
    }

    #[test]
    fn restart_with_the_same_key_never_repeats() {
        // Both runs start from the same clock reading, as two runs in quick
        // succession on a coarse clock would.
        let fp = fingerprint(2);
        let mut seen = HashSet::new();
        for _run in 0..3 {
            let mut counter = SendCounter::starting_at(fp, u64::MAX, 1000);
            for _ in 0..2500 {
                assert!(
                    seen.insert(counter.next_counter().unwrap()),
                    "counter reused"
                );
            }
        }
    }

    #[test]
    fn concurrent_users_of_one_key_stay_disjoint() {
        let fp = fingerprint(3);
        let mut a = SendCounter::starting_at(fp, u64::MAX, 50);
        let mut b = SendCounter::starting_at(fp, u64::MAX, 50);
        let mut seen = HashSet::new();
        for _ in 0..5000 {
            assert!(seen.insert(a.next_counter().unwrap()));
            assert!(seen.insert(b.next_counter().unwrap()));
        }
    }

    #[test]
    fn stops_at_the_usage_limit_across_restarts() {
        let fp = fingerprint(4);
        let mut first = SendCounter::starting_at(fp, 1500, 0);
        for _ in 0..1000 {
            first.next_counter().unwrap();
        }
        // The block reserved by the first run counts against the limit.
        let mut second = SendCounter::starting_at(fp, 1500, 0);
        for _ in 0..476 {
            second.next_counter().unwrap();
        }
        assert_eq!(second.next_counter(), Err(Exhausted { limit: 1500 }));
        assert_eq!(second.next_counter(), Err(Exhausted { limit: 1500 }));
    }

    #[test]
    fn never_wraps_the_counter_space() {
        let mut counter = SendCounter::starting_at(fingerprint(5), u64::MAX, u64::MAX - 3);
        assert_eq!(counter.next_counter(), Ok(u64::MAX - 3));
        assert_eq!(counter.next_counter(), Ok(u64::MAX - 2));
        assert_eq!(counter.next_counter(), Ok(u64::MAX - 1));
        assert_eq!(counter.next_counter(), Err(Exhausted { limit: u64::MAX }));
    }
}
