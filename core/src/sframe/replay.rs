// SPDX-License-Identifier: MPL-2.0
//! Sliding-window replay protection over frame counters, as in SRTP (RFC 3711,
//! section 3.3.2): the highest counter seen and a bitmap of the `size` counters
//! below it. `check` before decrypting, `record` only once the frame has
//! authenticated, so forged headers cannot move the window.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU64};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replay {
    /// Older than the window: it can no longer be told apart from a replay.
    TooOld,
    /// Already received.
    Duplicate,
}

/// The window's state is atomics, so that every method takes `&self` and the
/// decrypter checks and records a frame's counter without a lock (the lock was
/// a tenth of what it costs beyond the cipher on small frames). The atomics
/// make the window safe to share; they do not make two writers safe: the
/// window must have one writer at a time (the decrypter's streaming thread,
/// through which flushes come too), or a counter recorded by one could be lost
/// to the other.
#[derive(Debug)]
pub struct ReplayWindow {
    size: u64,
    /// Whether a counter was recorded, and the newest.
    recorded: AtomicBool,
    highest: AtomicU64,
    /// Bit `ctr % capacity` is set when `ctr` (within the window) was received.
    bits: Bits,
}

/// Words of the bitmap held in the window itself: up to 128 counters (the
/// decrypter's default) need no allocation of their own, so checking a frame
/// touches no second place in memory (which shows with many streams, whose
/// windows are not all in the caches).
const INLINE_WORDS: usize = 2;

#[derive(Debug)]
enum Bits {
    Inline {
        words: [AtomicU64; INLINE_WORDS],
        len: usize,
    },
    Heap(Box<[AtomicU64]>),
}

impl Bits {
    fn zeroed(len: usize) -> Self {
        if len <= INLINE_WORDS {
            Bits::Inline {
                words: Default::default(),
                len,
            }
        } else {
            Bits::Heap((0..len).map(|_| AtomicU64::new(0)).collect())
        }
    }

    fn words(&self) -> &[AtomicU64] {
        match self {
            Bits::Inline { words, len } => &words[..*len],
            Bits::Heap(words) => words,
        }
    }

    fn get(&self, word: usize) -> u64 {
        self.words()[word].load(Relaxed)
    }

    /// Loaded and stored, not read-modify-written: there is one writer.
    fn update(&self, word: usize, change: impl FnOnce(u64) -> u64) {
        let word = &self.words()[word];
        word.store(change(word.load(Relaxed)), Relaxed);
    }

    fn clear(&self) {
        for word in self.words() {
            word.store(0, Relaxed);
        }
    }
}

impl ReplayWindow {
    /// A window of `size` counters; 0 disables replay protection.
    pub fn new(size: u32) -> Self {
        let words = (size as usize).div_ceil(64);
        Self {
            size: size as u64,
            recorded: AtomicBool::new(false),
            highest: AtomicU64::new(0),
            bits: Bits::zeroed(words),
        }
    }

    fn capacity(&self) -> u64 {
        self.bits.words().len() as u64 * 64
    }

    fn bit(&self, ctr: u64) -> (usize, u64) {
        let index = ctr % self.capacity();
        ((index / 64) as usize, 1 << (index % 64))
    }

    pub fn check(&self, ctr: u64) -> Result<(), Replay> {
        let Some(highest) = self.highest() else {
            return Ok(());
        };
        if self.size == 0 || ctr > highest {
            return Ok(());
        }
        if highest - ctr >= self.size {
            return Err(Replay::TooOld);
        }
        let (word, mask) = self.bit(ctr);
        if self.bits.get(word) & mask != 0 {
            Err(Replay::Duplicate)
        } else {
            Ok(())
        }
    }

    /// The newest counter recorded, if any.
    pub fn highest(&self) -> Option<u64> {
        self.recorded
            .load(Relaxed)
            .then(|| self.highest.load(Relaxed))
    }

    /// Forgets every counter seen: for a stream the application restarts or
    /// seeks in, where earlier frames legitimately come again.
    pub fn reset(&self) {
        self.recorded.store(false, Relaxed);
        self.bits.clear();
    }

    /// Marks `ctr` as received. Call only after `check` passed and the frame
    /// authenticated.
    pub fn record(&self, ctr: u64) {
        if self.size == 0 {
            return;
        }
        match self.highest() {
            Some(highest) if ctr <= highest => {}
            Some(highest) if ctr - highest < self.capacity() => {
                // Slots between the old and the new highest now stand for
                // counters not received yet.
                for skipped in highest + 1..ctr {
                    let (word, mask) = self.bit(skipped);
                    self.bits.update(word, |bits| bits & !mask);
                }
                self.highest.store(ctr, Relaxed);
            }
            _ => {
                self.bits.clear();
                self.highest.store(ctr, Relaxed);
                self.recorded.store(true, Relaxed);
            }
        }
        let (word, mask) = self.bit(ctr);
        self.bits.update(word, |bits| bits | mask);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(window: &ReplayWindow, ctr: u64) -> Result<(), Replay> {
        window.check(ctr)?;
        window.record(ctr);
        Ok(())
    }

    #[test]
    fn in_order_and_duplicates() {
        let w = ReplayWindow::new(128);
        for ctr in 1000..1300 {
            assert_eq!(accept(&w, ctr), Ok(()));
            assert_eq!(accept(&w, ctr), Err(Replay::Duplicate));
        }
    }

    #[test]
    fn reordering_within_the_window() {
        let w = ReplayWindow::new(64);
        assert_eq!(accept(&w, 100), Ok(()));
        assert_eq!(accept(&w, 90), Ok(()));
        assert_eq!(accept(&w, 37), Ok(()));
        assert_eq!(accept(&w, 36), Err(Replay::TooOld));
        assert_eq!(accept(&w, 90), Err(Replay::Duplicate));
        assert_eq!(accept(&w, 101), Ok(()));
        assert_eq!(accept(&w, 99), Ok(()));
        assert_eq!(accept(&w, 99), Err(Replay::Duplicate));
    }

    #[test]
    fn big_jump_clears_the_window() {
        let w = ReplayWindow::new(100);
        for ctr in 0..100 {
            accept(&w, ctr).unwrap();
        }
        assert_eq!(accept(&w, 1_000_000), Ok(()));
        // Old slots must not claim that these were seen.
        for ctr in 999_901..1_000_000 {
            assert_eq!(accept(&w, ctr), Ok(()), "{ctr}");
        }
        assert_eq!(accept(&w, 999_900), Err(Replay::TooOld));
    }

    #[test]
    fn slots_reused_after_a_small_jump_are_cleared() {
        let w = ReplayWindow::new(64);
        for ctr in 0..64 {
            accept(&w, ctr).unwrap();
        }
        // 64..=80 reuse the slots of 0..=16; 64..80 were not received.
        assert_eq!(accept(&w, 80), Ok(()));
        for ctr in 64..80 {
            assert_eq!(accept(&w, ctr), Ok(()), "{ctr}");
        }
    }

    #[test]
    fn check_alone_does_not_record() {
        let w = ReplayWindow::new(16);
        assert_eq!(w.check(5), Ok(()));
        assert_eq!(w.check(5), Ok(()));
        w.record(5);
        assert_eq!(w.check(5), Err(Replay::Duplicate));
    }

    #[test]
    fn reset_forgets_what_was_seen() {
        let w = ReplayWindow::new(16);
        accept(&w, 100).unwrap();
        assert_eq!(accept(&w, 100), Err(Replay::Duplicate));
        assert_eq!(accept(&w, 3), Err(Replay::TooOld));
        w.reset();
        assert_eq!(accept(&w, 3), Ok(()), "no highest survives a reset");
        assert_eq!(accept(&w, 100), Ok(()));
    }

    #[test]
    fn zero_disables() {
        let w = ReplayWindow::new(0);
        for _ in 0..3 {
            assert_eq!(accept(&w, 7), Ok(()));
        }
    }

    #[test]
    fn windows_held_inline_or_on_the_heap_work_alike() {
        // 1 and 2 words inline, 16 on the heap.
        for size in [40, 128, 1000] {
            let w = ReplayWindow::new(size);
            let size = u64::from(size);
            for ctr in 0..3 * size {
                assert_eq!(accept(&w, ctr), Ok(()), "{size}: {ctr}");
                assert_eq!(accept(&w, ctr), Err(Replay::Duplicate), "{size}: {ctr}");
            }
            let highest = 3 * size - 1;
            assert_eq!(accept(&w, highest - size), Err(Replay::TooOld));
            // A jump of half the window: the counters skipped arrive late.
            let jump = highest + size / 2;
            assert_eq!(accept(&w, jump), Ok(()));
            for ctr in highest + 1..jump {
                assert_eq!(accept(&w, ctr), Ok(()), "{size}: {ctr}");
            }
            assert_eq!(accept(&w, highest), Err(Replay::Duplicate));
        }
    }

    #[test]
    fn window_size_not_a_multiple_of_64() {
        let w = ReplayWindow::new(10);
        accept(&w, 50).unwrap();
        assert_eq!(accept(&w, 41), Ok(()));
        assert_eq!(accept(&w, 40), Err(Replay::TooOld));
    }
}
