// SPDX-License-Identifier: MPL-2.0
//! A box whose bytes are overwritten with zeros when it is dropped.
//!
//! `ring` keeps its expanded AES key schedule and GHASH table inline in its key
//! types and does not wipe them. We hold such values in a `Wiped` so that the
//! schedule does not linger in freed heap memory.

use std::mem::MaybeUninit;
use std::ops::Deref;

pub struct Wiped<T> {
    // Always initialised until `drop`; `MaybeUninit` lets us zero the bytes after
    // the value has been dropped without ever holding an invalid `T`.
    value: Box<MaybeUninit<T>>,
}

impl<T> Wiped<T> {
    pub fn new(value: T) -> Self {
        Self {
            value: Box::new(MaybeUninit::new(value)),
        }
    }
}

impl<T> Deref for Wiped<T> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: `value` is initialised in `new` and only dropped in `drop`.
        unsafe { self.value.assume_init_ref() }
    }
}

impl<T> Drop for Wiped<T> {
    fn drop(&mut self) {
        // SAFETY: the value is initialised and dropped exactly once, here. Zeroing
        // a `MaybeUninit` is always sound; for types that own heap memory only the
        // inline part is wiped, which is why we use it for flat key types only.
        unsafe {
            self.value.assume_init_drop();
            zeroize::zeroize_flat_type(&mut *self.value as *mut MaybeUninit<T>);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct CountsDrops(Arc<AtomicUsize>, [u8; 32]);

    impl Drop for CountsDrops {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn derefs_and_drops_once() {
        let drops = Arc::new(AtomicUsize::new(0));
        let wiped = Wiped::new(CountsDrops(drops.clone(), [7; 32]));
        assert_eq!(wiped.1, [7; 32]);
        drop(wiped);
        assert_eq!(drops.load(Ordering::SeqCst), 1);
    }
}
