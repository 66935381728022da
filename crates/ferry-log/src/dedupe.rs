//! The dedupe index: "was this key appended within the last W?".
//!
//! Keys are 128-bit xxh3 hashes of the caller's key bytes (message ids): with n ids in the
//! window the chance of any false positive is about n² / 2¹²⁹ (10⁻²⁰ for a billion ids),
//! so the index is exact for practical purposes. It lives in memory: a hash set of the
//! hashes plus a queue in append order for expiry, about 46 bytes per id (46 MB per million
//! ids). It is rebuilt on open from the key sections of the chunk frames inside the window
//! (frames keep keys uncompressed, so no payload is decompressed), which is why retention
//! keeps every chunk younger than the window.
//!
//! Memory is bounded by `max_ids`: when the window holds more ids than that, the oldest
//! are forgotten early and counted in [`Dedupe::evicted_early`]; the effective window is
//! then shorter than configured, never longer.

use std::collections::{HashSet, VecDeque};

pub struct Dedupe {
    window_ms: u64,
    max_ids: usize,
    seen: HashSet<u128, xxhash_rust::xxh3::Xxh3Builder>,
    order: VecDeque<(u64, u128)>,
    evicted_early: u64,
}

/// A hasher for keys that are already uniform 128-bit hashes would be ideal; xxh3 of 16
/// bytes is a few nanoseconds, cheap enough.
impl Dedupe {
    pub fn new(window_ms: u64, max_ids: usize) -> Dedupe {
        Dedupe {
            window_ms,
            max_ids: max_ids.max(1),
            seen: HashSet::with_hasher(xxhash_rust::xxh3::Xxh3Builder::new()),
            order: VecDeque::new(),
            evicted_early: 0,
        }
    }

    /// Whether `key` was inserted within the window before `now_ms`.
    pub fn contains(&self, key: u128) -> bool {
        self.seen.contains(&key)
    }

    /// Remember `key` as appended at `now_ms`. Returns false if it was already there.
    pub fn insert(&mut self, key: u128, now_ms: u64) -> bool {
        if !self.seen.insert(key) {
            return false;
        }
        self.order.push_back((now_ms, key));
        while self.order.len() > self.max_ids {
            if let Some((_, old)) = self.order.pop_front() {
                self.seen.remove(&old);
                self.evicted_early += 1;
            }
        }
        true
    }

    /// Undo the last `n` inserts (their records could not be written).
    pub fn rollback(&mut self, n: usize) {
        for _ in 0..n {
            if let Some((_, key)) = self.order.pop_back() {
                self.seen.remove(&key);
            }
        }
    }

    /// Forget keys older than the window.
    pub fn expire(&mut self, now_ms: u64) {
        let horizon = now_ms.saturating_sub(self.window_ms);
        while let Some(&(at, key)) = self.order.front() {
            if at >= horizon {
                break;
            }
            self.order.pop_front();
            self.seen.remove(&key);
        }
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    pub fn evicted_early(&self) -> u64 {
        self.evicted_early
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_within_the_window_and_forgets_after() {
        let mut d = Dedupe::new(1000, 100);
        assert!(d.insert(1, 0));
        assert!(!d.insert(1, 10));
        assert!(d.contains(1));
        d.expire(999);
        assert!(d.contains(1));
        d.expire(1001);
        assert!(!d.contains(1));
        assert!(d.insert(1, 1001));
    }

    #[test]
    fn rollback_forgets_the_newest_inserts() {
        let mut d = Dedupe::new(1000, 100);
        d.insert(1, 0);
        d.insert(2, 1);
        d.insert(3, 2);
        d.rollback(2);
        assert!(d.contains(1) && !d.contains(2) && !d.contains(3));
        assert!(d.insert(2, 3));
    }

    #[test]
    fn memory_cap_evicts_oldest_first_and_counts_it() {
        let mut d = Dedupe::new(u64::MAX, 3);
        for k in 0..5 {
            d.insert(k, k as u64);
        }
        assert_eq!(d.len(), 3);
        assert!(!d.contains(0) && !d.contains(1));
        assert!(d.contains(4));
        assert_eq!(d.evicted_early(), 2);
    }
}
