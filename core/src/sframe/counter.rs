// SPDX-License-Identifier: MPL-2.0
//! Sender counters that never repeat a (key, KID, CTR) triple, without trusting
//! any clock.
//!
//! SFrame's nonce is the derived salt XOR the frame counter, so a counter reused
//! under the same base key and KID reuses an AES-GCM nonce, which breaks both
//! confidentiality and integrity. Two mechanisms rule that out:
//!
//! * **Across processes** (and devices without a real-time clock, which boot at
//!   1970 every time): the first counter of a key this process has not used yet is
//!   drawn at random from the operating system, uniformly below
//!   [`RANDOM_START_END`]; counters then count up from there. Two runs with the
//!   same key and KID, of `a` and `b` frames, can only overlap if the second
//!   starts within `a + b` counters of the first: probability at most
//!   `(a + b) / 2^64` per pair of runs (see [`overlap_bound`]). Nothing depends on
//!   the wall clock, so a clock that steps back changes nothing.
//! * **Within a process**: counters are reserved in blocks from a process-wide
//!   registry keyed by a fingerprint of (suite, KID, key). Restarted elements, and
//!   several elements sharing one key and KID, draw disjoint ranges from it
//!   whatever their frame rate. The registry forgets only keys no counter uses
//!   any more, and only beyond [`KEPT_UNUSED`] of them (the least recently used
//!   first): a range in use is never handed out again, and a forgotten key that
//!   comes back is as safe as in a new process.
//!
//! The price is an 8-byte counter in every header instead of 1 byte.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

/// Counters reserved per registry visit: one lock per this many frames.
const BLOCK: u64 = 1024;

/// Random starts lie below this, so that a run can count up by the most frames
/// any suite allows per key (2^32) and more without reaching the end of the
/// 64-bit counter space.
pub const RANDOM_START_END: u64 = u64::MAX - (1 << 40);

/// Keys no counter uses any more that the registry still remembers.
pub const KEPT_UNUSED: usize = 4096;

/// A fingerprint of (suite, KID, key): the registry never holds key bytes.
pub type Fingerprint = [u8; 32];

#[derive(Debug, Clone, Copy)]
struct Reserved {
    /// First counter not yet handed out.
    next: u64,
    /// Counters handed out for this key so far in this process.
    used: u64,
    /// Live `SendCounter`s for this key.
    users: usize,
    /// When it was last reserved from or released, in registry ticks: the least
    /// recently used unused keys are forgotten first.
    touched: u64,
}

/// The counters handed out in this process, by key.
#[derive(Default)]
pub struct Registry {
    keys: HashMap<Fingerprint, Reserved>,
    tick: u64,
}

impl Registry {
    fn tick(&mut self) -> u64 {
        self.tick += 1;
        self.tick
    }

    /// A new user of `fingerprint`'s range.
    fn register(&mut self, fingerprint: &Fingerprint) {
        let tick = self.tick();
        if let Some(reserved) = self.keys.get_mut(fingerprint) {
            reserved.users += 1;
            reserved.touched = tick;
        }
    }

    /// A user of `fingerprint`'s range is gone.
    fn release(&mut self, fingerprint: &Fingerprint) {
        let tick = self.tick();
        if let Some(reserved) = self.keys.get_mut(fingerprint) {
            reserved.users = reserved.users.saturating_sub(1);
            reserved.touched = tick;
        }
    }

    /// Reserves the next block of counters for one user of `fingerprint`, at
    /// most `limit` counters for the key in all; a key not known yet starts
    /// where `starts` says.
    fn reserve(
        &mut self,
        fingerprint: &Fingerprint,
        limit: u64,
        starts: &mut dyn StartSource,
    ) -> Result<std::ops::Range<u64>, CounterError> {
        let tick = self.tick();
        if !self.keys.contains_key(fingerprint) {
            let start = starts.start()?;
            self.prune();
            self.keys.insert(
                *fingerprint,
                Reserved {
                    next: start,
                    used: 0,
                    users: 1,
                    touched: tick,
                },
            );
        }
        let reserved = self.keys.get_mut(fingerprint).expect("inserted");
        reserved.touched = tick;
        let start = reserved.next;
        let count = BLOCK
            .min(limit.saturating_sub(reserved.used))
            .min(u64::MAX - start);
        if count == 0 {
            return Err(CounterError::Exhausted { limit });
        }
        reserved.next = start + count;
        reserved.used += count;
        Ok(start..start + count)
    }

    /// Forgets the least recently used keys that no counter uses, beyond
    /// `KEPT_UNUSED` of them.
    fn prune(&mut self) {
        let mut unused: Vec<u64> = self
            .keys
            .values()
            .filter(|r| r.users == 0)
            .map(|r| r.touched)
            .collect();
        if unused.len() <= KEPT_UNUSED {
            return;
        }
        unused.sort_unstable();
        let oldest_kept = unused[unused.len() - KEPT_UNUSED];
        self.keys
            .retain(|_, r| r.users > 0 || r.touched >= oldest_kept);
    }
}

static REGISTRY: LazyLock<Mutex<Registry>> = LazyLock::new(|| Mutex::new(Registry::default()));

/// Where counters for a key start when the registry does not know it.
pub trait StartSource {
    fn start(&mut self) -> Result<u64, CounterError>;
}

/// Random starts from the operating system, below `RANDOM_START_END`.
pub struct RandomStart;

impl StartSource for RandomStart {
    fn start(&mut self) -> Result<u64, CounterError> {
        let mut bytes = [0u8; 8];
        getrandom::fill(&mut bytes).map_err(|_| CounterError::NoRandom)?;
        // The modulo bias is below 2^-23 and only makes some starts slightly
        // likelier than others; it does not bear on the overlap bound.
        Ok(u64::from_le_bytes(bytes) % RANDOM_START_END)
    }
}

/// Upper bound on the probability that two runs with the same key and KID, not
/// sharing a registry (two processes, or one after the registry forgot the key),
/// use a counter twice, when they send `a` and `b` frames.
pub fn overlap_bound(a: u64, b: u64) -> f64 {
    (a as f64 + b as f64) / RANDOM_START_END as f64
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CounterError {
    /// The key has protected as many frames as its suite allows (or, in theory,
    /// the counter space above its start is spent). Only a new key or KID can go
    /// on.
    Exhausted { limit: u64 },
    /// The operating system gave no random bytes for a first counter.
    NoRandom,
}

/// Hands out counters for one key. Made anew each time a key is taken into use;
/// while it lives, the registry keeps its key's range.
pub struct SendCounter {
    registry: &'static Mutex<Registry>,
    fingerprint: Fingerprint,
    limit: u64,
    next: u64,
    end: u64,
}

impl std::fmt::Debug for SendCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendCounter")
            .field("limit", &self.limit)
            .field("next", &self.next)
            .field("end", &self.end)
            .finish_non_exhaustive()
    }
}

impl SendCounter {
    pub fn new(fingerprint: Fingerprint, limit: u64) -> Self {
        Self::in_registry(&REGISTRY, fingerprint, limit)
    }

    fn in_registry(
        registry: &'static Mutex<Registry>,
        fingerprint: Fingerprint,
        limit: u64,
    ) -> Self {
        registry.lock().unwrap().register(&fingerprint);
        Self {
            registry,
            fingerprint,
            limit,
            next: 0,
            end: 0,
        }
    }

    pub fn next_counter(&mut self) -> Result<u64, CounterError> {
        self.next_counter_from(&mut RandomStart)
    }

    /// `next_counter`, drawing the start of a key the registry does not know
    /// from `starts`.
    pub fn next_counter_from(&mut self, starts: &mut dyn StartSource) -> Result<u64, CounterError> {
        if self.next == self.end {
            let block =
                self.registry
                    .lock()
                    .unwrap()
                    .reserve(&self.fingerprint, self.limit, starts)?;
            (self.next, self.end) = (block.start, block.end);
        }
        let counter = self.next;
        self.next += 1;
        Ok(counter)
    }
}

impl Drop for SendCounter {
    fn drop(&mut self) {
        self.registry.lock().unwrap().release(&self.fingerprint);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn fingerprint(tag: u8, n: u32) -> Fingerprint {
        let mut fp = [0u8; 32];
        fp[0] = 0xfe;
        fp[1] = tag;
        fp[2..6].copy_from_slice(&n.to_be_bytes());
        fp
    }

    /// The same start every time, as a device without a real-time clock that
    /// seeded from it would get at every boot.
    struct FixedStart(u64);

    impl StartSource for FixedStart {
        fn start(&mut self) -> Result<u64, CounterError> {
            Ok(self.0)
        }
    }

    struct NoRandom;

    impl StartSource for NoRandom {
        fn start(&mut self) -> Result<u64, CounterError> {
            Err(CounterError::NoRandom)
        }
    }

    #[test]
    fn random_starts_count_up() {
        let mut counter = SendCounter::new(fingerprint(1, 0), u64::MAX);
        let first = counter.next_counter().unwrap();
        assert!(first < RANDOM_START_END);
        for i in 1..3000 {
            assert_eq!(counter.next_counter().unwrap(), first + i);
        }
        // Another key starts elsewhere.
        let mut other = SendCounter::new(fingerprint(1, 1), u64::MAX);
        assert_ne!(other.next_counter().unwrap(), first);
    }

    #[test]
    fn restart_with_the_same_key_never_repeats() {
        // Every run would start at the same point (a clock reading that does not
        // advance between boots): the registry still hands out disjoint ranges.
        let fp = fingerprint(2, 0);
        let mut seen = HashSet::new();
        for _run in 0..3 {
            let mut counter = SendCounter::new(fp, u64::MAX);
            for _ in 0..2500 {
                let ctr = counter.next_counter_from(&mut FixedStart(1000)).unwrap();
                assert!(seen.insert(ctr), "counter reused");
            }
        }
    }

    #[test]
    fn concurrent_users_of_one_key_stay_disjoint() {
        let fp = fingerprint(3, 0);
        let mut a = SendCounter::new(fp, u64::MAX);
        let mut b = SendCounter::new(fp, u64::MAX);
        let mut seen = HashSet::new();
        for _ in 0..5000 {
            assert!(seen.insert(a.next_counter_from(&mut FixedStart(50)).unwrap()));
            assert!(seen.insert(b.next_counter_from(&mut FixedStart(50)).unwrap()));
        }
    }

    #[test]
    fn stops_at_the_usage_limit_across_restarts() {
        let fp = fingerprint(4, 0);
        let mut first = SendCounter::new(fp, 1500);
        for _ in 0..1000 {
            first.next_counter().unwrap();
        }
        // The block reserved by the first run counts against the limit.
        let mut second = SendCounter::new(fp, 1500);
        for _ in 0..476 {
            second.next_counter().unwrap();
        }
        let exhausted = Err(CounterError::Exhausted { limit: 1500 });
        assert_eq!(second.next_counter(), exhausted);
        assert_eq!(second.next_counter(), exhausted);
    }

    #[test]
    fn never_wraps_the_counter_space() {
        let mut counter = SendCounter::new(fingerprint(5, 0), u64::MAX);
        let mut at_the_end = FixedStart(u64::MAX - 3);
        assert_eq!(counter.next_counter_from(&mut at_the_end), Ok(u64::MAX - 3));
        assert_eq!(counter.next_counter_from(&mut at_the_end), Ok(u64::MAX - 2));
        assert_eq!(counter.next_counter_from(&mut at_the_end), Ok(u64::MAX - 1));
        assert_eq!(
            counter.next_counter_from(&mut at_the_end),
            Err(CounterError::Exhausted { limit: u64::MAX })
        );
    }

    #[test]
    fn no_randomness_is_an_error_not_a_zero_start() {
        let mut counter = SendCounter::new(fingerprint(6, 0), u64::MAX);
        assert_eq!(
            counter.next_counter_from(&mut NoRandom),
            Err(CounterError::NoRandom)
        );
    }

    #[test]
    fn pruning_never_forgets_a_key_in_use() {
        // A key in use, then far more unused keys than the registry keeps: its
        // range must survive, so that a second user of it continues above the
        // first instead of starting over.
        let registry: &'static Mutex<Registry> = Box::leak(Box::default());
        let fp = fingerprint(7, 0);
        let mut in_use = SendCounter::in_registry(registry, fp, u64::MAX);
        let mut seen = HashSet::new();
        for _ in 0..10 {
            seen.insert(in_use.next_counter_from(&mut FixedStart(7)).unwrap());
        }
        for n in 1..=(KEPT_UNUSED as u32 + 300) {
            let mut counter = SendCounter::in_registry(registry, fingerprint(7, n), u64::MAX);
            counter.next_counter_from(&mut FixedStart(7)).unwrap();
        }
        let unused_kept = {
            let registry = registry.lock().unwrap();
            assert!(registry.keys.contains_key(&fp));
            registry.keys.values().filter(|r| r.users == 0).count()
        };
        assert!(unused_kept <= KEPT_UNUSED + 1, "{unused_kept}");
        let mut again = SendCounter::in_registry(registry, fp, u64::MAX);
        for _ in 0..2000 {
            let ctr = again.next_counter_from(&mut FixedStart(7)).unwrap();
            assert!(seen.insert(ctr), "range handed out twice");
        }
        drop(in_use);
    }

    #[test]
    fn the_overlap_bound_is_as_documented() {
        // Two runs of a day of 30 fps video each: below 2^-41.
        let day = 30 * 86_400;
        assert!(overlap_bound(day, day) < 2f64.powi(-41));
        // Two runs at the usage limit of 2^32 frames: about 2^-31.
        let at_limit = overlap_bound(1 << 32, 1 << 32);
        assert!(at_limit > 2f64.powi(-32) && at_limit < 2f64.powi(-30));
    }
}
