// SPDX-License-Identifier: MPL-2.0
//! The decrypter's keys, by KID, with a bound on how many are held.
//!
//! Keys come in two kinds. *Trusted* keys are the ones the application set
//! (`key`, `key-file`, `add-key`). Keys fetched on demand for a KID seen in the
//! stream (`request-key`) are *on probation* until a frame authenticates under
//! them: anyone can put any KID in a forged frame, and a key service may answer
//! for any KID, so such keys must not be able to push out the keys in use. Each
//! kind has its own bound; a probation key that authenticates a frame becomes
//! trusted.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

/// Hashes with one multiplication per 8 bytes: for the maps the decrypter
/// reads for every frame (keys by KID, a LiveKit key's recent IVs), where
/// SipHash (the default) showed in its profile.
/// Flooding is no concern there: such a map holds only what the application
/// gave (keys, a bounded number) or what authenticated (IVs of frames the key
/// opened), so values an attacker picks can only make lookups probe the few
/// entries there are.
#[derive(Default)]
pub struct FoldHasher(u64);

impl Hasher for FoldHasher {
    fn write(&mut self, bytes: &[u8]) {
        let (words, rest) = bytes.as_chunks::<8>();
        for word in words {
            self.write_u64(u64::from_le_bytes(*word));
        }
        if !rest.is_empty() {
            // Slices and arrays hash their length first, so the zeros that fill
            // the last word cannot make two lengths collide.
            let mut last = [0u8; 8];
            last[..rest.len()].copy_from_slice(rest);
            self.write_u64(u64::from_le_bytes(last));
        }
    }

    fn write_u64(&mut self, value: u64) {
        // The high and low halves of the 128-bit product, folded: every bit of
        // the value reaches both the bucket (low bits) and the tag (high bits).
        let product = u128::from(self.0 ^ value) * 0x9e37_79b9_7f4a_7c15;
        self.0 = (product as u64) ^ ((product >> 64) as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// A `HashMap` or `HashSet` hasher of `FoldHasher`s.
pub type FoldHash = BuildHasherDefault<FoldHasher>;

/// Whether the application vouched for a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trust {
    Trusted,
    Probation,
}

#[derive(Debug)]
struct Entry<T> {
    value: T,
    trust: Trust,
}

/// Values by KID. When a kind is full, adding a KID of that kind pushes out the
/// oldest-added one of the same kind, except the KID the stream is using now
/// (`keep`): the key that is decrypting frames right now must never be the one
/// to go. A probation key never pushes out a trusted one.
#[derive(Debug)]
pub struct KeyRing<T> {
    capacity: usize,
    entries: HashMap<u64, Entry<T>, FoldHash>,
    /// KIDs, oldest-added first.
    order: VecDeque<u64>,
    /// Moves on with every change that could be one (every `&mut` access).
    generation: u64,
}

impl<T> KeyRing<T> {
    /// A ring of at most `capacity` trusted keys and `capacity` keys on
    /// probation.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            entries: HashMap::default(),
            order: VecDeque::new(),
            generation: 0,
        }
    }

    /// A number that differs after any change to the ring or its values: what
    /// was read from it can be kept until this moves on.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Every `&mut` access goes through here, so that none can be missed.
    fn changing(&mut self) -> &mut Self {
        self.generation += 1;
        self
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn get(&self, kid: u64) -> Option<&T> {
        self.entries.get(&kid).map(|entry| &entry.value)
    }

    pub fn get_mut(&mut self, kid: u64) -> Option<&mut T> {
        self.changing()
            .entries
            .get_mut(&kid)
            .map(|entry| &mut entry.value)
    }

    pub fn trust(&self, kid: u64) -> Option<Trust> {
        self.entries.get(&kid).map(|entry| entry.trust)
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (u64, &mut T)> {
        self.changing()
            .entries
            .iter_mut()
            .map(|(kid, entry)| (*kid, &mut entry.value))
    }

    /// Oldest-added first.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (u64, &T)> {
        self.order
            .iter()
            .map(|kid| (*kid, &self.entries[kid].value))
    }

    /// Adds or replaces the value for `kid` (it becomes the newest of its kind);
    /// returns the KIDs pushed out to make room. A trusted key stays trusted
    /// when replaced by one on probation.
    pub fn insert(&mut self, kid: u64, value: T, trust: Trust, keep: Option<u64>) -> Vec<u64> {
        self.changing();
        let trust = match self.entries.get(&kid) {
            Some(old) if old.trust == Trust::Trusted => Trust::Trusted,
            _ => trust,
        };
        if self.entries.insert(kid, Entry { value, trust }).is_some() {
            self.order.retain(|k| *k != kid);
        }
        self.order.push_back(kid);
        self.shrink(trust, keep.into_iter().chain([kid]))
    }

    /// A key on probation has proven itself: it becomes the newest trusted key.
    /// Returns the KIDs pushed out to make room.
    pub fn trust_key(&mut self, kid: u64) -> Vec<u64> {
        match self.changing().entries.get_mut(&kid) {
            Some(entry) if entry.trust == Trust::Probation => {
                entry.trust = Trust::Trusted;
                self.order.retain(|k| *k != kid);
                self.order.push_back(kid);
                self.shrink(Trust::Trusted, [kid])
            }
            _ => Vec::new(),
        }
    }

    pub fn remove(&mut self, kid: u64) -> Option<T> {
        let entry = self.changing().entries.remove(&kid)?;
        self.order.retain(|k| *k != kid);
        Some(entry.value)
    }

    pub fn clear(&mut self) {
        self.changing().entries.clear();
        self.order.clear();
    }

    /// Changes the bound; returns the KIDs pushed out.
    pub fn set_capacity(&mut self, capacity: usize, keep: Option<u64>) -> Vec<u64> {
        self.changing().capacity = capacity.max(1);
        let mut evicted = self.shrink(Trust::Probation, keep);
        evicted.extend(self.shrink(Trust::Trusted, keep));
        evicted
    }

    /// Pushes out the oldest keys of kind `trust` beyond the capacity, except
    /// those in `keep`.
    fn shrink(&mut self, trust: Trust, keep: impl IntoIterator<Item = u64>) -> Vec<u64> {
        let keep: Vec<u64> = keep.into_iter().collect();
        let mut held = self
            .order
            .iter()
            .filter(|kid| self.entries[*kid].trust == trust)
            .count();
        let mut evicted = Vec::new();
        while held > self.capacity {
            let Some(position) = self
                .order
                .iter()
                .position(|kid| self.entries[kid].trust == trust && !keep.contains(kid))
            else {
                break;
            };
            let kid = self.order.remove(position).expect("position is in range");
            self.entries.remove(&kid);
            evicted.push(kid);
            held -= 1;
        }
        evicted
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Trust::{Probation, Trusted};

    #[test]
    fn evicts_oldest_added() {
        let mut ring = KeyRing::new(2);
        assert!(ring.insert(1, "a", Trusted, None).is_empty());
        assert!(ring.insert(2, "b", Trusted, None).is_empty());
        assert_eq!(ring.insert(3, "c", Trusted, None), vec![1]);
        assert_eq!(ring.get(1), None);
        assert_eq!(ring.get(3), Some(&"c"));
    }

    #[test]
    fn never_evicts_the_key_in_use() {
        let mut ring = KeyRing::new(2);
        ring.insert(1, "in use", Trusted, None);
        ring.insert(2, "next", Trusted, None);
        // The stream still runs on KID 1: KID 2 goes instead.
        assert_eq!(ring.insert(3, "after next", Trusted, Some(1)), vec![2]);
        assert!(ring.get(1).is_some());
    }

    #[test]
    fn replacing_moves_to_newest() {
        let mut ring = KeyRing::new(2);
        ring.insert(1, "a", Trusted, None);
        ring.insert(2, "b", Trusted, None);
        ring.insert(1, "a2", Trusted, None);
        assert_eq!(ring.insert(3, "c", Trusted, None), vec![2]);
        assert_eq!(ring.get(1), Some(&"a2"));
        assert_eq!(ring.iter().map(|(kid, _)| kid).collect::<Vec<_>>(), [1, 3]);
    }

    #[test]
    fn shrinking_and_removal() {
        let mut ring = KeyRing::new(4);
        for kid in 0..4 {
            ring.insert(kid, kid, Trusted, None);
        }
        assert_eq!(ring.set_capacity(2, Some(0)), vec![1, 2]);
        assert_eq!(ring.remove(0), Some(0));
        assert_eq!(ring.remove(0), None);
        assert_eq!(ring.len(), 1);
        ring.clear();
        assert!(ring.is_empty());
    }

    #[test]
    fn keys_on_probation_never_push_out_trusted_keys() {
        let mut ring = KeyRing::new(2);
        ring.insert(1, 1, Trusted, None);
        ring.insert(2, 2, Trusted, None);
        // A flood of keys fetched for forged KIDs churns only among themselves.
        for kid in 100..1100 {
            for evicted in ring.insert(kid, kid, Probation, Some(1)) {
                assert!(evicted >= 100, "trusted key {evicted} pushed out");
            }
        }
        assert_eq!(ring.trust(1), Some(Trusted));
        assert_eq!(ring.trust(2), Some(Trusted));
        assert_eq!(ring.len(), 4, "two trusted, two on probation");
        assert_eq!(ring.get(1099), Some(&1099));
        assert_eq!(ring.get(1097), None);
    }

    #[test]
    fn every_change_moves_the_generation_on_and_reads_do_not() {
        let mut ring = KeyRing::new(2);
        let mut seen = vec![ring.generation()];
        let mut changed = |ring: &KeyRing<u32>, what: &str| {
            assert!(!seen.contains(&ring.generation()), "{what}");
            seen.push(ring.generation());
        };
        ring.insert(1, 1, Trusted, None);
        changed(&ring, "insert");
        ring.insert(2, 2, Probation, None);
        changed(&ring, "insert on probation");
        *ring.get_mut(1).unwrap() = 11;
        changed(&ring, "get_mut");
        ring.iter_mut().for_each(|(_, value)| *value += 1);
        changed(&ring, "iter_mut");
        ring.trust_key(2);
        changed(&ring, "trust_key");
        ring.set_capacity(1, Some(1));
        changed(&ring, "set_capacity");
        ring.remove(1);
        changed(&ring, "remove");
        ring.clear();
        changed(&ring, "clear");
        let before = ring.generation();
        let _ = (ring.get(1), ring.trust(1), ring.len(), ring.iter().count());
        assert_eq!(ring.generation(), before, "reads");
    }

    #[test]
    fn a_key_that_proves_itself_becomes_trusted() {
        let mut ring = KeyRing::new(2);
        ring.insert(1, 1, Trusted, None);
        ring.insert(2, 2, Trusted, None);
        ring.insert(3, 3, Probation, None);
        assert_eq!(ring.trust(3), Some(Probation));
        // The stream switched to KID 3 (sender first): it joins the trusted
        // keys and the oldest trusted key goes.
        assert_eq!(ring.trust_key(3), vec![1]);
        assert_eq!(ring.trust(3), Some(Trusted));
        assert!(ring.trust_key(3).is_empty());
        // Replacing a trusted key with a probation answer keeps it trusted.
        ring.insert(2, 22, Probation, None);
        assert_eq!(ring.trust(2), Some(Trusted));
        assert_eq!(ring.get(2), Some(&22));
    }
}
