//! A cuckoo filter over 128-bit keys: buckets of 4 slots of 16-bit fingerprints, any number
//! of buckets (not only powers of two), never a false negative.
//!
//! A key's first bucket comes from its high 64 bits, so inserting keys in sorted order (as
//! a run file holds them) walks the table front to back. The second bucket is
//! `(h(fp) - i) mod n`, which maps each of the two buckets to the other for any `n`. When
//! an insertion has kicked fingerprints around 500 times without finding a free slot, the
//! fingerprint left over goes to a small stash that lookups also check, so nothing is ever
//! dropped; a filter whose stash is in use counts as full.

/// Slots per bucket.
const SLOTS: usize = 4;
/// Load a filter is sized for.
const LOAD: f64 = 0.85;
/// Fingerprints kicked before one goes to the stash.
const MAX_KICKS: usize = 500;

pub(crate) struct Cuckoo {
    buckets: Vec<[u16; SLOTS]>,
    stash: Vec<(usize, u16)>,
    len: usize,
    victim_seed: u64,
}

impl Cuckoo {
    /// A filter sized for `keys` keys at 85 % load.
    pub(crate) fn for_keys(keys: usize) -> Cuckoo {
        let buckets = Cuckoo::buckets_for(keys);
        Cuckoo { buckets: vec![[0; SLOTS]; buckets], stash: Vec::new(), len: 0, victim_seed: 0x9e37_79b9_7f4a_7c15 }
    }

    /// The same, with every page written (resident): for a filter the writer will fill, so
    /// that it takes no page faults (a first touch costs microseconds, more than an insert).
    pub(crate) fn resident_for_keys(keys: usize) -> Cuckoo {
        let mut filter = Cuckoo::for_keys(keys);
        super::memory::make_resident(&mut filter.buckets);
        filter
    }

    fn buckets_for(keys: usize) -> usize {
        ((keys as f64 / (SLOTS as f64 * LOAD)).ceil() as usize).max(1)
    }

    /// Fingerprints stored (one per insert).
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The keys this filter was sized for.
    pub(crate) fn capacity(&self) -> usize {
        (self.buckets.len() as f64 * SLOTS as f64 * LOAD) as usize
    }

    /// Whether it should take no more keys: at its sized load, or a fingerprint homeless.
    pub(crate) fn is_full(&self) -> bool {
        self.len >= self.capacity() || !self.stash.is_empty()
    }

    /// Fingerprints that found no slot (checked by every lookup).
    pub(crate) fn stash_len(&self) -> usize {
        self.stash.len()
    }

    pub(crate) fn allocated_bytes(&self) -> usize {
        self.buckets.capacity() * SLOTS * 2
    }

    fn fingerprint_and_index(&self, key: u128) -> (u16, usize) {
        let fingerprint = match (key as u64 >> 48) as u16 {
            0 => 1,
            f => f,
        };
        let high = (key >> 64) as u64;
        (fingerprint, ((u128::from(high) * self.buckets.len() as u128) >> 64) as usize)
    }

    fn alt(&self, index: usize, fingerprint: u16) -> usize {
        let n = self.buckets.len();
        let mixed = u64::from(fingerprint).wrapping_mul(0x5bd1_e995_5bd1_e995);
        let h = ((u128::from(mixed) * n as u128) >> 64) as usize;
        if h >= index { h - index } else { h + n - index }
    }

    pub(crate) fn contains(&self, key: u128) -> bool {
        let (fp, i1) = self.fingerprint_and_index(key);
        let i2 = self.alt(i1, fp);
        self.buckets[i1].contains(&fp)
            || self.buckets[i2].contains(&fp)
            || (!self.stash.is_empty() && self.stash.iter().any(|&(i, f)| f == fp && (i == i1 || i == i2)))
    }

    /// Read both buckets `key` could be in (see [`Memory::touch`](super::memory::Memory::touch)).
    pub(crate) fn touch(&self, key: u128) -> u16 {
        let (fp, i1) = self.fingerprint_and_index(key);
        self.buckets[i1][0] ^ self.buckets[self.alt(i1, fp)][0]
    }

    /// Add `key`. Always stored (in the stash if need be); see [`Cuckoo::is_full`].
    pub(crate) fn insert(&mut self, key: u128) {
        self.len += 1;
        let (mut fp, i1) = self.fingerprint_and_index(key);
        let i2 = self.alt(i1, fp);
        for i in [i1, i2] {
            if let Some(slot) = self.buckets[i].iter_mut().find(|s| **s == 0) {
                *slot = fp;
                return;
            }
        }
        let mut i = i1;
        for _ in 0..MAX_KICKS {
            self.victim_seed ^= self.victim_seed << 13;
            self.victim_seed ^= self.victim_seed >> 7;
            self.victim_seed ^= self.victim_seed << 17;
            let slot = (self.victim_seed % SLOTS as u64) as usize;
            std::mem::swap(&mut fp, &mut self.buckets[i][slot]);
            i = self.alt(i, fp);
            if let Some(empty) = self.buckets[i].iter_mut().find(|s| **s == 0) {
                *empty = fp;
                return;
            }
        }
        self.stash.push((i, fp));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u64) -> u128 {
        xxhash_rust::xxh3::xxh3_128(&i.to_le_bytes())
    }

    #[test]
    fn no_false_negatives_even_past_its_size_and_few_false_positives() {
        for buckets_for in [1usize, 7, 1000, 100_003] {
            let mut filter = Cuckoo::for_keys(buckets_for);
            let n = buckets_for * 2 + 10;
            for i in 0..n as u64 {
                filter.insert(key(i));
            }
            assert!(filter.is_full());
            assert!((0..n as u64).all(|i| filter.contains(key(i))), "a key was lost ({buckets_for})");
        }
        let mut filter = Cuckoo::for_keys(100_000);
        for i in 0..100_000u64 {
            filter.insert(key(i));
        }
        let false_positives = (1_000_000..2_000_000u64).filter(|i| filter.contains(key(*i))).count();
        // 8 slots of 16 bits at 85 % load: about 1 in 9,600.
        assert!(false_positives < 200, "{false_positives} false positives in a million");
    }
}
