// SPDX-License-Identifier: MPL-2.0
//! The decrypter's keys, by KID, with a bound on how many are held.

use std::collections::{HashMap, VecDeque};

/// Values by KID. When full, adding a KID pushes out the oldest-added one, except
/// the KID the stream is using now (`keep`): the key that is decrypting frames
/// right now must never be the one to go.
#[derive(Debug)]
pub struct KeyRing<T> {
    capacity: usize,
    entries: HashMap<u64, T>,
    /// KIDs, oldest-added first.
    order: VecDeque<u64>,
}

impl<T> KeyRing<T> {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            entries: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn get(&self, kid: u64) -> Option<&T> {
        self.entries.get(&kid)
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (u64, &mut T)> {
        self.entries.iter_mut().map(|(kid, value)| (*kid, value))
    }

    /// Oldest-added first.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = (u64, &T)> {
        self.order.iter().map(|kid| (*kid, &self.entries[kid]))
    }

    /// Adds or replaces the value for `kid` (it becomes the newest); returns the
    /// KIDs pushed out to make room.
    pub fn insert(&mut self, kid: u64, value: T, keep: Option<u64>) -> Vec<u64> {
        if self.entries.insert(kid, value).is_some() {
            self.order.retain(|k| *k != kid);
        }
        self.order.push_back(kid);
        self.shrink_to(self.capacity, keep.into_iter().chain([kid]))
    }

    pub fn remove(&mut self, kid: u64) -> Option<T> {
        let value = self.entries.remove(&kid)?;
        self.order.retain(|k| *k != kid);
        Some(value)
    }

    pub fn clear(&mut self) {
        self.entries.clear();
        self.order.clear();
    }

    /// Changes the bound; returns the KIDs pushed out.
    pub fn set_capacity(&mut self, capacity: usize, keep: Option<u64>) -> Vec<u64> {
        self.capacity = capacity.max(1);
        self.shrink_to(self.capacity, keep)
    }

    fn shrink_to(&mut self, capacity: usize, keep: impl IntoIterator<Item = u64>) -> Vec<u64> {
        let keep: Vec<u64> = keep.into_iter().collect();
        let mut evicted = Vec::new();
        while self.entries.len() > capacity {
            let Some(position) = self.order.iter().position(|kid| !keep.contains(kid)) else {
                break;
            };
            let kid = self.order.remove(position).expect("position is in range");
            self.entries.remove(&kid);
            evicted.push(kid);
        }
        evicted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_oldest_added() {
        let mut ring = KeyRing::new(2);
        assert!(ring.insert(1, "a", None).is_empty());
        assert!(ring.insert(2, "b", None).is_empty());
        assert_eq!(ring.insert(3, "c", None), vec![1]);
        assert_eq!(ring.get(1), None);
        assert_eq!(ring.get(3), Some(&"c"));
    }

    #[test]
    fn never_evicts_the_key_in_use() {
        let mut ring = KeyRing::new(2);
        ring.insert(1, "in use", None);
        ring.insert(2, "next", None);
        // The stream still runs on KID 1: KID 2 goes instead.
        assert_eq!(ring.insert(3, "after next", Some(1)), vec![2]);
        assert!(ring.get(1).is_some());
    }

    #[test]
    fn replacing_moves_to_newest() {
        let mut ring = KeyRing::new(2);
        ring.insert(1, "a", None);
        ring.insert(2, "b", None);
        ring.insert(1, "a2", None);
        assert_eq!(ring.insert(3, "c", None), vec![2]);
        assert_eq!(ring.get(1), Some(&"a2"));
        assert_eq!(ring.iter().map(|(kid, _)| kid).collect::<Vec<_>>(), [1, 3]);
    }

    #[test]
    fn shrinking_and_removal() {
        let mut ring = KeyRing::new(4);
        for kid in 0..4 {
            ring.insert(kid, kid, None);
        }
        assert_eq!(ring.set_capacity(2, Some(0)), vec![1, 2]);
        assert_eq!(ring.remove(0), Some(0));
        assert_eq!(ring.remove(0), None);
        assert_eq!(ring.len(), 1);
        ring.clear();
        assert!(ring.is_empty());
    }
}
