//! The open-addressing hash table both halves of the index live in.
//!
//! Why our own table instead of `std`'s (hashbrown): a cold match at a million subscriptions
//! is a string of cache misses into an index far larger than the CPU caches, and what it
//! costs is how many of them happen one after another. Here:
//! - a slot is one cache line holding the hash, the key and the value, so a lookup is one
//!   miss (hashbrown reads a control byte, then the bucket: two dependent misses);
//! - a slot's address follows from the hash alone, so a caller that knows the hashes of
//!   several lookups up front (the exact topic, every prefix of the topic's path in the
//!   trie) [prefetches](Table::prefetch) them all at once and pays for one miss, not five;
//! - large tables ask the kernel for 2 MiB pages (`MADV_HUGEPAGE`): with 4 KiB pages every
//!   miss into a few hundred MiB also misses the TLB, and under virtualisation a page walk
//!   costs about as much as the miss itself.
//!
//! Linear probing with backward-shift deletion (no tombstones), at most half full.

use std::mem::size_of;

/// One slot: a cache line (for values up to 56 bytes), so a probe touches one line.
#[repr(align(64))]
struct Slot<T> {
    hash: u64,
    entry: Option<T>,
}

pub(crate) struct Table<T> {
    slots: Vec<Slot<T>>,
    mask: usize,
    len: usize,
}

const MIN_SLOTS: usize = 16;

/// Tables at least this large ask for huge pages.
const HUGE_FROM: usize = 4 << 20;
const HUGE_PAGE: usize = 2 << 20;

impl<T> Default for Table<T> {
    fn default() -> Self {
        Table {
            slots: Vec::new(),
            mask: 0,
            len: 0,
        }
    }
}

impl<T> Table<T> {
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    #[inline]
    fn home(&self, hash: u64) -> usize {
        // Truncation is the point: the low bits pick the slot.
        (hash as usize) & self.mask
    }

    /// Hints the CPU to start loading the slot `hash` probes first.
    #[inline]
    pub(crate) fn prefetch(&self, hash: u64) {
        self.prefetch_run(hash, 0);
    }

    /// [`prefetch`](Self::prefetch), and the `n` slots after it.
    #[inline]
    pub(crate) fn prefetch_run(&self, hash: u64, n: usize) {
        if self.slots.is_empty() {
            return;
        }
        let home = self.home(hash);
        for k in 0..=n {
            crate::prefetch::line(&self.slots[(home + k) & self.mask]);
        }
    }

    #[inline]
    pub(crate) fn find(&self, hash: u64, eq: impl FnMut(&T) -> bool) -> Option<&T> {
        let i = self.position(hash, eq)?;
        self.slots[i].entry.as_ref()
    }

    #[inline]
    fn position(&self, hash: u64, mut eq: impl FnMut(&T) -> bool) -> Option<usize> {
        if self.slots.is_empty() {
            return None;
        }
        let mut i = self.home(hash);
        loop {
            let slot = &self.slots[i];
            match &slot.entry {
                None => return None,
                Some(e) if slot.hash == hash && eq(e) => return Some(i),
                Some(_) => i = (i + 1) & self.mask,
            }
        }
    }

    pub(crate) fn find_mut(&mut self, hash: u64, eq: impl FnMut(&T) -> bool) -> Option<&mut T> {
        let i = self.position(hash, eq)?;
        self.slots[i].entry.as_mut()
    }

    /// Inserts `entry`, which the caller knows is not in the table yet.
    pub(crate) fn insert_new(&mut self, hash: u64, entry: T) {
        if (self.len + 1) * 2 > self.slots.len() {
            self.resize((self.slots.len() * 2).max(MIN_SLOTS));
        }
        self.len += 1;
        self.put(hash, entry);
    }

    /// Stores `entry` in the first free slot of `hash`'s probe run (there is one: the table
    /// is never full).
    fn put(&mut self, hash: u64, entry: T) {
        let mut i = self.home(hash);
        while self.slots[i].entry.is_some() {
            i = (i + 1) & self.mask;
        }
        self.slots[i] = Slot {
            hash,
            entry: Some(entry),
        };
    }

    pub(crate) fn remove(&mut self, hash: u64, eq: impl FnMut(&T) -> bool) -> Option<T> {
        let mut hole = self.position(hash, eq)?;
        let out = self.slots[hole].entry.take();
        self.len -= 1;
        // Backward shift: pull later entries of the probe run into the hole unless that
        // would move one before its home slot.
        let mut j = hole;
        loop {
            j = (j + 1) & self.mask;
            if self.slots[j].entry.is_none() {
                break;
            }
            let home = self.home(self.slots[j].hash);
            let between = if hole <= j {
                hole < home && home <= j
            } else {
                hole < home || home <= j
            };
            if !between {
                self.slots.swap(hole, j);
                hole = j;
            }
        }
        if self.len * 8 < self.slots.len() && self.slots.len() > MIN_SLOTS {
            self.resize((self.slots.len() / 4).max(MIN_SLOTS));
        }
        out
    }

    fn resize(&mut self, slots: usize) {
        let old = std::mem::replace(&mut self.slots, allocate(slots));
        self.mask = slots - 1;
        for slot in old {
            if let Some(e) = slot.entry {
                self.put(slot.hash, e);
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.slots.len()
    }
}

/// `n` empty slots (a power of two), on huge pages when large.
fn allocate<T>(n: usize) -> Vec<Slot<T>> {
    let mut v: Vec<Slot<T>> = Vec::with_capacity(n);
    advise_huge(v.as_ptr().cast(), n * size_of::<Slot<T>>());
    // Filling the slots is the first touch: the kernel backs them with huge pages if it can.
    v.resize_with(n, || Slot {
        hash: 0,
        entry: None,
    });
    v
}

#[cfg(target_os = "linux")]
fn advise_huge(start: *const u8, len: usize) {
    if len < HUGE_FROM {
        return;
    }
    let addr = start as usize;
    let from = addr.next_multiple_of(HUGE_PAGE);
    let to = (addr + len) / HUGE_PAGE * HUGE_PAGE;
    if to > from {
        // SAFETY: `madvise(MADV_HUGEPAGE)` only changes how the kernel backs this range of
        // our own allocation; it never changes its contents or validity. A failure (e.g.
        // transparent huge pages disabled) leaves ordinary pages, so the result is ignored.
        unsafe {
            libc::madvise(from as *mut libc::c_void, to - from, libc::MADV_HUGEPAGE);
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn advise_huge(_start: *const u8, _len: usize) {
    let _ = (HUGE_FROM, HUGE_PAGE);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_find_remove_with_collisions() {
        let mut t: Table<u32> = Table::default();
        // Hashes crafted to collide on home slots and wrap around the end.
        let hashes: Vec<u64> = (0..200u64).map(|i| (i % 7) * 3 + 13 + (i << 40)).collect();
        for (i, &h) in hashes.iter().enumerate() {
            t.insert_new(h, i as u32);
        }
        assert_eq!(t.len(), 200);
        for (i, &h) in hashes.iter().enumerate() {
            assert_eq!(t.find(h, |&v| v == i as u32), Some(&(i as u32)));
        }
        for (i, &h) in hashes.iter().enumerate().step_by(2) {
            assert_eq!(t.remove(h, |&v| v == i as u32), Some(i as u32));
            assert_eq!(t.find(h, |&v| v == i as u32), None);
        }
        for (i, &h) in hashes.iter().enumerate().skip(1).step_by(2) {
            assert_eq!(t.find(h, |&v| v == i as u32), Some(&(i as u32)), "{i}");
        }
        for (i, &h) in hashes.iter().enumerate().skip(1).step_by(2) {
            assert!(t.remove(h, |&v| v == i as u32).is_some());
        }
        assert_eq!(t.len(), 0);
        assert_eq!(t.capacity(), MIN_SLOTS);
    }

    #[test]
    fn random_ops_agree_with_a_map() {
        let mut t: Table<u64> = Table::default();
        let mut model = std::collections::HashMap::new();
        let mut x = 7u64;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let key = x % 500;
            // Few distinct hashes: long probe runs, wrap-around, backward shifts.
            let h = key % 61;
            if x.is_multiple_of(3) {
                assert_eq!(t.remove(h, |&v| v == key), model.remove(&key));
            } else if let std::collections::hash_map::Entry::Vacant(e) = model.entry(key) {
                t.insert_new(h, key);
                e.insert(key);
            }
            assert_eq!(t.len(), model.len());
        }
        for k in 0..500 {
            assert_eq!(t.find(k % 61, |&v| v == k), model.get(&k));
        }
    }

    #[test]
    fn slot_is_a_cache_line() {
        // `Option` of a type with a niche adds nothing: 8 bytes of hash, 56 of entry.
        assert_eq!(size_of::<Slot<(Box<u8>, [u64; 6])>>(), 64);
    }
}
