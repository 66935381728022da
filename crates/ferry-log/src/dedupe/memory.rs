//! The recent layer of the dedupe index: the newest keys in memory, in append order, with a
//! hash index over them. Its capacity is fixed when it is created, so appending never
//! resizes anything: the index is one allocation sized for the capacity, and the keys live
//! in segments of `SEGMENT_ENTRIES` allocated and freed one at a time.
//!
//! Every key gets a sequence number (0, 1, 2, …) in append order; the layer holds the keys
//! numbered `head..tail`. Keys leave at the front (moved to disk, expired, or evicted) or at
//! the back (rolled back).
//!
//! The index is an open-addressing table with linear probing and backward-shift deletion
//! (no tombstones, so it never needs rehashing), at most 80 % full. A slot is one `u64`:
//! the top bits of the key's low half (which also give the home slot) and the entry's
//! sequence number modulo `2^b - 1`, plus one (so that 0 means empty), in the low `b` bits.
//! A lookup compares the slot's key bits and, on a match, the whole key in the segment.

use std::collections::VecDeque;
use std::sync::Arc;

/// Keys per segment: 384 KiB of entries.
pub(crate) const SEGMENT_ENTRIES: usize = 1 << 14;
/// Bytes per key in a segment.
pub(crate) const ENTRY_BYTES: usize = std::mem::size_of::<Entry>();

/// One key and its append time. Two `u64` halves rather than a `u128`, so that an entry is
/// 24 bytes (a `u128` would align it to 32).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Entry {
    lo: u64,
    hi: u64,
    pub(crate) at: u64,
}

impl Entry {
    pub(crate) fn new(key: u128, at: u64) -> Entry {
        Entry { lo: key as u64, hi: (key >> 64) as u64, at }
    }

    pub(crate) fn key(&self) -> u128 {
        (u128::from(self.hi) << 64) | u128::from(self.lo)
    }
}

/// A run of consecutive entries; the segments before the last are full and never change,
/// so a spill shares them with its background thread instead of copying.
pub(crate) type Segment = Arc<Vec<Entry>>;

pub(crate) struct Memory {
    slots: Box<[u64]>,
    /// Low bits of a slot holding the sequence number.
    seq_bits: u32,
    capacity: usize,
    segments: VecDeque<Segment>,
    /// The segment number (`seq / SEGMENT_ENTRIES`) of `segments[0]`.
    first_segment: u64,
    head: u64,
    tail: u64,
}

impl Memory {
    /// Room for `capacity` keys; the index is allocated now and written through (resident:
    /// the writer never takes a page fault on it), the segments as keys arrive.
    pub(crate) fn with_capacity(capacity: usize) -> Memory {
        let capacity = capacity.max(1);
        let slots = capacity + capacity / 4 + 2;
        // 2^b - 1 sequence numbers must exceed the keys held at once.
        let seq_bits = (64 - (capacity as u64 + 1).leading_zeros()).max(1);
        assert!(seq_bits <= 32 && slots < u32::MAX as usize, "dedupe memory capacity too large");
        let mut index = vec![0u64; slots];
        make_resident(&mut index);
        Memory {
            slots: index.into_boxed_slice(),
            seq_bits,
            capacity,
            segments: VecDeque::new(),
            first_segment: 0,
            head: 0,
            tail: 0,
        }
    }

    /// Bytes allocated for the index (fixed) and for the segments (as keys arrive).
    pub(crate) fn allocated_bytes(&self) -> (usize, usize) {
        (self.slots.len() * 8, self.segments.iter().map(|s| s.capacity() * ENTRY_BYTES).sum())
    }

    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    pub(crate) fn head(&self) -> u64 {
        self.head
    }

    pub(crate) fn tail(&self) -> u64 {
        self.tail
    }

    /// Keys held (`tail - head`).
    pub(crate) fn len(&self) -> usize {
        (self.tail - self.head) as usize
    }

    pub(crate) fn is_full(&self) -> bool {
        self.len() >= self.capacity
    }

    /// The entry with sequence number `seq` (`head <= seq < tail`).
    pub(crate) fn entry(&self, seq: u64) -> Entry {
        let segment = (seq / SEGMENT_ENTRIES as u64 - self.first_segment) as usize;
        self.segments[segment][(seq % SEGMENT_ENTRIES as u64) as usize]
    }

    /// The sequence number of `key`, if held.
    pub(crate) fn find(&self, key: u128) -> Option<u64> {
        let lo = key as u64;
        let tag = lo >> self.seq_bits;
        let mut i = self.home(lo);
        loop {
            let slot = self.slots[i];
            if slot == 0 {
                return None;
            }
            if slot >> self.seq_bits == tag {
                let seq = self.decode(slot);
                if self.entry(seq).key() == key {
                    return Some(seq);
                }
            }
            i = self.next(i);
        }
    }

    /// Read the index slot a lookup of `key` starts at. Reading the slots of many keys
    /// before looking any up lets their cache misses overlap.
    pub(crate) fn touch(&self, key: u128) -> u64 {
        self.slots[self.home(key as u64)]
    }

    /// Append `key` (not held, and the layer not full); its sequence number.
    pub(crate) fn push(&mut self, key: u128, at: u64) -> u64 {
        debug_assert!(!self.is_full());
        let seq = self.tail;
        if seq.is_multiple_of(SEGMENT_ENTRIES as u64) {
            if self.segments.is_empty() {
                self.first_segment = seq / SEGMENT_ENTRIES as u64;
            }
            self.segments.push_back(Arc::new(Vec::with_capacity(SEGMENT_ENTRIES)));
        }
        if let Some(last) = self.segments.back_mut() {
            Arc::make_mut(last).push(Entry::new(key, at));
        }
        self.tail += 1;
        self.insert_slot(self.slot_value(key as u64, seq));
        seq
    }

    /// Drop the oldest entry (from the index too, if it is still there).
    pub(crate) fn pop_front(&mut self) -> Option<Entry> {
        if self.head == self.tail {
            return None;
        }
        let entry = self.entry(self.head);
        self.unindex(entry.key(), self.head);
        self.head += 1;
        if self.head.is_multiple_of(SEGMENT_ENTRIES as u64) {
            self.segments.pop_front();
            self.first_segment += 1;
        }
        Some(entry)
    }

    /// Drop the newest entry.
    pub(crate) fn pop_back(&mut self) -> Option<Entry> {
        if self.head == self.tail {
            return None;
        }
        self.tail -= 1;
        let entry = self.entry(self.tail);
        self.unindex(entry.key(), self.tail);
        if let Some(last) = self.segments.back_mut() {
            Arc::make_mut(last).pop();
            if last.is_empty() {
                self.segments.pop_back();
            }
        }
        Some(entry)
    }

    /// Remove entry `seq` of `key` from the index (it stays in its segment, unfindable:
    /// used when a key held past its window is appended again).
    pub(crate) fn unindex(&mut self, key: u128, seq: u64) {
        let value = self.slot_value(key as u64, seq);
        let mut i = self.home(key as u64);
        loop {
            match self.slots[i] {
                0 => return,
                slot if slot == value => break,
                _ => i = self.next(i),
            }
        }
        // Backward shift: move later entries of the cluster into the hole when their home
        // allows it, so that no probe sequence is cut.
        let mut hole = i;
        let mut j = i;
        loop {
            j = self.next(j);
            let slot = self.slots[j];
            if slot == 0 {
                break;
            }
            let home = self.home_of_slot(slot);
            let stays = if hole <= j { hole < home && home <= j } else { hole < home || home <= j };
            if !stays {
                self.slots[hole] = slot;
                hole = j;
            }
        }
        self.slots[hole] = 0;
    }

    /// The entries `from..to` for a background thread: full segments are shared, the part
    /// of the last (still growing) segment is copied.
    pub(crate) fn share(&self, from: u64, to: u64) -> Vec<(Segment, std::ops::Range<usize>)> {
        let mut out = Vec::new();
        let mut seq = from;
        while seq < to {
            let number = seq / SEGMENT_ENTRIES as u64;
            let segment = &self.segments[(number - self.first_segment) as usize];
            let base = number * SEGMENT_ENTRIES as u64;
            let start = (seq - base) as usize;
            let end = ((to - base) as usize).min(SEGMENT_ENTRIES);
            if segment.len() == SEGMENT_ENTRIES {
                out.push((segment.clone(), start..end));
            } else {
                out.push((Arc::new(segment[start..end].to_vec()), 0..end - start));
            }
            seq = base + end as u64;
        }
        out
    }

    /// Rebuild with room for `capacity` keys (an O(n) pause: only when one group commit
    /// holds more new keys than the layer has room for).
    pub(crate) fn grow(&mut self, capacity: usize) {
        let mut bigger = Memory::with_capacity(capacity.max(self.len()));
        bigger.head = self.head;
        bigger.tail = self.tail;
        for seq in self.head..self.tail {
            let key = self.entry(seq).key();
            // Only keys that were findable stay findable.
            if self.find(key) == Some(seq) {
                bigger.insert_slot(bigger.slot_value(key as u64, seq));
            }
        }
        bigger.segments = std::mem::take(&mut self.segments);
        bigger.first_segment = self.first_segment;
        *self = bigger;
    }

    fn insert_slot(&mut self, value: u64) {
        let mut i = self.home_of_slot(value);
        while self.slots[i] != 0 {
            i = self.next(i);
        }
        self.slots[i] = value;
    }

    fn modulus(&self) -> u64 {
        (1u64 << self.seq_bits) - 1
    }

    fn slot_value(&self, lo: u64, seq: u64) -> u64 {
        ((lo >> self.seq_bits) << self.seq_bits) | (seq % self.modulus() + 1)
    }

    /// The sequence number in a slot: the one in `head..head + 2^b - 1` with that residue.
    fn decode(&self, slot: u64) -> u64 {
        let m = self.modulus();
        let residue = (slot & m) - 1;
        self.head + (residue + m - self.head % m) % m
    }

    fn home(&self, lo: u64) -> usize {
        (((lo >> 32) * self.slots.len() as u64) >> 32) as usize
    }

    /// The home slot from a slot's key bits (the top 32 bits of the key's low half).
    fn home_of_slot(&self, slot: u64) -> usize {
        self.home(slot)
    }

    fn next(&self, i: usize) -> usize {
        if i + 1 == self.slots.len() { 0 } else { i + 1 }
    }
}

/// Write every 4 KiB page of `items` (zeroed memory is mapped lazily: the first write to
/// each page would fault later, on the writer, at a few microseconds each).
pub(crate) fn make_resident<T: Copy + Default>(items: &mut [T]) {
    let stride = (4096 / std::mem::size_of::<T>().max(1)).max(1);
    for i in (0..items.len()).step_by(stride) {
        // An opaque value, so that the write is not optimised away.
        items[i] = std::hint::black_box(T::default());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u64) -> u128 {
        xxhash_rust::xxh3::xxh3_128(&i.to_le_bytes())
    }

    /// Against a model, through many wrap-arounds of the sequence numbers and segments.
    #[test]
    fn matches_a_model_through_pushes_pops_and_unindexing() {
        let mut memory = Memory::with_capacity(1000);
        let mut model: VecDeque<(u64, u128, bool)> = VecDeque::new();
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next_key = 0u64;
        for step in 0..200_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            match x % 10 {
                0..=5 if !memory.is_full() => {
                    let k = key(next_key);
                    next_key += 1;
                    let seq = memory.push(k, step);
                    model.push_back((seq, k, true));
                }
                6 | 7 => {
                    let got = memory.pop_front();
                    assert_eq!(got.map(|e| e.key()), model.pop_front().map(|m| m.1));
                }
                8 => {
                    let got = memory.pop_back();
                    assert_eq!(got.map(|e| e.key()), model.pop_back().map(|m| m.1));
                }
                _ => {
                    if let Some(m) = model.iter_mut().find(|m| m.2) {
                        memory.unindex(m.1, m.0);
                        m.2 = false;
                    }
                }
            }
            assert_eq!(memory.len(), model.len());
            if step % 997 == 0 {
                for (seq, k, indexed) in &model {
                    assert_eq!(memory.find(*k), indexed.then_some(*seq));
                }
                assert_eq!(memory.find(key(next_key + 7)), None);
            }
        }
        assert!(next_key > 50_000, "{next_key}");
    }

    #[test]
    fn grow_keeps_what_was_findable() {
        let mut memory = Memory::with_capacity(10);
        for i in 0..10 {
            memory.push(key(i), i);
        }
        memory.unindex(key(3), 3);
        memory.grow(40);
        assert_eq!(memory.capacity(), 40);
        for i in 0..10 {
            assert_eq!(memory.find(key(i)), (i != 3).then_some(i));
        }
        for i in 10..40 {
            memory.push(key(i), i);
        }
        assert!(memory.is_full());
        assert_eq!(memory.find(key(39)), Some(39));
    }

    #[test]
    fn share_splits_at_segments_and_copies_the_growing_one() {
        let mut memory = Memory::with_capacity(3 * SEGMENT_ENTRIES);
        for i in 0..(SEGMENT_ENTRIES + 10) as u64 {
            memory.push(key(i), i);
        }
        let parts = memory.share(5, SEGMENT_ENTRIES as u64 + 4);
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].1, 5..SEGMENT_ENTRIES);
        assert_eq!(parts[1].1, 0..4);
        assert_eq!(Arc::strong_count(&parts[0].0), 2, "a full segment is shared");
        assert_eq!(Arc::strong_count(&parts[1].0), 1, "the growing one is copied");
        assert_eq!(parts[1].0[3].key(), key(SEGMENT_ENTRIES as u64 + 3));
    }
}
