//! The bounded per-topic match cache.
//!
//! Sharded `RwLock<HashMap>`s keyed by a 64-bit keyed hash of the topic (foldhash with a
//! per-router random key, so clients cannot aim collisions at one bucket). A hit is: one
//! hash of the topic, a shard *read* lock, an integer-keyed lookup, a string compare, a
//! generation compare and an `Arc` clone. Nothing global is written on a hit.
//!
//! Invalidation: every entry records the generation it was computed at. A change to a
//! wildcard pattern bumps the generation (it may affect any topic); a change to an exact
//! pattern removes just that topic's entry. Entries are only inserted while the router's
//! index read lock is held and invalidated while its write lock is held, so a result
//! computed before a change can never be stored after it.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::RwLock;

const SHARDS: usize = 16;

/// Keys are already well-mixed 64-bit hashes: the inner maps use them as they are.
#[derive(Default)]
struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only `u64` keys are hashed here; fold anything else in for completeness.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type Shard<V> = HashMap<u64, Entry<V>, BuildHasherDefault<IdentityHasher>>;

struct Entry<V> {
    topic: Box<str>,
    generation: u64,
    result: Arc<[V]>,
}

/// One shard per cache line, so two cores reading different shards do not contend.
#[repr(align(128))]
struct Padded<T>(T);

pub(crate) struct Cache<V> {
    hasher: super::FastState,
    shards: Box<[Padded<RwLock<Shard<V>>>]>,
    per_shard: usize,
    generation: AtomicU64,
}

impl<V> Cache<V> {
    /// A cache holding about `capacity` topics (0 disables it).
    pub(crate) fn new(capacity: usize) -> Self {
        Cache {
            hasher: super::FastState::default(),
            shards: (0..SHARDS)
                .map(|_| Padded(RwLock::new(Shard::default())))
                .collect(),
            per_shard: capacity.div_ceil(SHARDS),
            generation: AtomicU64::new(0),
        }
    }

    pub(crate) fn hash(&self, topic: &str) -> u64 {
        self.hasher.hash_one(topic)
    }

    fn shard(&self, hash: u64) -> &RwLock<Shard<V>> {
        // Bits 32.. pick the shard: the inner map uses the low bits for buckets and the top
        // seven as tags, so all three stay independent.
        &self.shards[(hash >> 32) as usize % SHARDS].0
    }

    pub(crate) fn get(&self, hash: u64, topic: &str) -> Option<Arc<[V]>> {
        let shard = self.shard(hash).read();
        let e = shard.get(&hash)?;
        if *e.topic == *topic && e.generation == self.generation.load(Ordering::Acquire) {
            Some(e.result.clone())
        } else {
            None
        }
    }

    /// Caller holds the index read lock; `generation` was read under it.
    pub(crate) fn put(&self, hash: u64, topic: &str, generation: u64, result: Arc<[V]>) {
        if self.per_shard == 0 {
            return;
        }
        let mut shard = self.shard(hash).write();
        if shard.len() >= self.per_shard && !shard.contains_key(&hash) {
            // Cheap eviction, amortized over the next inserts: drop stale entries, and if
            // that is not enough, every other entry.
            let now = self.generation.load(Ordering::Acquire);
            shard.retain(|_, e| e.generation == now);
            if shard.len() >= self.per_shard {
                let mut keep = false;
                shard.retain(|_, _| {
                    keep = !keep;
                    keep
                });
            }
        }
        shard.insert(
            hash,
            Entry {
                topic: topic.into(),
                generation,
                result,
            },
        );
    }

    /// The generation a result computed now should be stored with.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Caller holds the index write lock.
    pub(crate) fn invalidate_all(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// Caller holds the index write lock.
    pub(crate) fn invalidate(&self, topic: &str) {
        let hash = self.hash(topic);
        self.shard(hash).write().remove(&hash);
    }

    pub(crate) fn clear(&self) {
        for s in self.shards.iter() {
            s.0.write().clear();
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.0.read().len()).sum()
    }
}
