//! The subscription index: which subscribers want a published topic.
//!
//! - Exact patterns (no wildcard; most subscriptions) live in a hash [`table`] from topic
//!   to subscribers: one lookup, one cache line.
//! - Wildcard patterns live in a segment trie ([`trie`]): literal edges, `*`, `**` and glob
//!   segments. A match walks the topic's segments, so its cost grows with topic depth (and
//!   with the `**` and glob edges actually on the way), not with the number of
//!   subscriptions. The exact slot and the first levels of the trie's literal path are
//!   prefetched together, so a cold match waits for memory about once for them, not once
//!   per level.
//! - Results are cached per topic ([`cache`]), bounded, and invalidated on change.
//!
//! Concurrency: the index sits behind one `parking_lot::RwLock`. Subscribe/unsubscribe take
//! it for writing (microseconds); a cache miss takes it for reading; a cache hit does not
//! touch it at all (see [`cache`]).

mod cache;
mod key;
mod subs;
mod table;
mod trie;

use std::collections::HashSet;
use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::ops::ControlFlow;
use std::sync::Arc;

use parking_lot::RwLock;

use crate::topic::{Pattern, validate_topic};
use cache::Cache;
use key::Key;

/// Topic-keyed maps hash with foldhash: several times faster than SipHash on short strings,
/// and still seeded per process, so clients cannot precompute colliding topic names.
pub(crate) type FastState = foldhash::fast::RandomState;
use subs::Subscribers;
use table::Table;
use trie::Trie;

/// Topics whose results the cache holds by default.
pub const DEFAULT_CACHE_CAPACITY: usize = 4096;

/// Thread-safe subscription index. `V` is a subscriber handle (e.g. a session id).
pub struct Router<V> {
    index: RwLock<Index<V>>,
    cache: Cache<V>,
    empty: Arc<[V]>,
}

/// Exact topics up to this many bytes are stored inline in the exact table's slots (32-byte
/// keys; with the hash and the subscribers, a slot is one 64-byte cache line).
const EXACT_INLINE: usize = 30;

/// Topics with up to this many segments are split on the stack.
const STACK_SEGMENTS: usize = 16;

struct Index<V> {
    exact: Table<(Key<EXACT_INLINE>, Subscribers<V>)>,
    exact_state: FastState,
    trie: Trie<V>,
    /// (pattern, value) pairs.
    pairs: usize,
    /// Distinct patterns.
    patterns: usize,
}

impl<V: Clone + Eq + Hash + Send + Sync + 'static> Default for Router<V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<V> fmt::Debug for Router<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let index = self.index.read();
        f.debug_struct("Router")
            .field("pairs", &index.pairs)
            .field("patterns", &index.patterns)
            .finish_non_exhaustive()
    }
}

impl<V: Clone + Eq + Hash + Send + Sync + 'static> Router<V> {
    pub fn new() -> Self {
        Self::with_cache_capacity(DEFAULT_CACHE_CAPACITY)
    }

    /// A router whose match cache holds about `topics` topics (0: no cache).
    pub fn with_cache_capacity(topics: usize) -> Self {
        Router {
            index: RwLock::new(Index {
                exact: Table::default(),
                exact_state: FastState::default(),
                trie: Trie::default(),
                pairs: 0,
                patterns: 0,
            }),
            cache: Cache::new(topics),
            empty: Arc::from(Vec::new()),
        }
    }

    /// Adds `value` as a subscriber of `pattern`; true if the pair was new.
    pub fn insert(&self, pattern: &Pattern, value: V) -> bool {
        let mut index = self.index.write();
        let change = if pattern.is_exact() {
            let topic = pattern.as_str();
            let hash = index.exact_hash(topic);
            let change = match index.exact_mut(hash, topic) {
                Some(subs) => trie::Change {
                    pair: subs.insert(value),
                    pattern: false,
                },
                None => {
                    let mut subs = Subscribers::default();
                    subs.insert(value);
                    index.exact.insert_new(hash, (Key::new(topic), subs));
                    trie::Change {
                        pair: true,
                        pattern: true,
                    }
                }
            };
            if change.pair {
                self.cache.invalidate(topic);
            }
            change
        } else {
            let change = index.trie.insert(pattern.segments(), value);
            if change.pair {
                self.cache.invalidate_all();
            }
            change
        };
        index.pairs += usize::from(change.pair);
        index.patterns += usize::from(change.pattern);
        change.pair
    }

    /// Removes `value` from `pattern`'s subscribers; true if it was there.
    pub fn remove(&self, pattern: &Pattern, value: &V) -> bool {
        let mut index = self.index.write();
        let change = if pattern.is_exact() {
            let topic = pattern.as_str();
            let hash = index.exact_hash(topic);
            let Some(subs) = index.exact_mut(hash, topic) else {
                return false;
            };
            let pair = subs.remove(value);
            let gone = subs.is_empty();
            if gone {
                index
                    .exact
                    .remove(hash, |(k, _)| k.as_bytes() == topic.as_bytes());
            }
            if pair {
                self.cache.invalidate(topic);
            }
            trie::Change {
                pair,
                pattern: gone,
            }
        } else {
            let change = index.trie.remove(pattern.segments(), value);
            if change.pair {
                self.cache.invalidate_all();
            }
            change
        };
        index.pairs -= usize::from(change.pair);
        index.patterns -= usize::from(change.pattern);
        change.pair
    }

    /// Every value with at least one pattern matching `topic`, each value once even if it
    /// subscribed through several matching patterns. Order unspecified. An invalid topic
    /// matches nothing. Cached per topic: a repeated topic costs one hash lookup.
    pub fn matches(&self, topic: &str) -> Arc<[V]> {
        let hash = self.cache.hash(topic);
        if let Some(hit) = self.cache.get(hash, topic) {
            return hit;
        }
        let index = self.index.read();
        let Some(result) = self.compute(&index, topic) else {
            return self.empty.clone();
        };
        self.cache
            .put(hash, topic, self.cache.generation(), result.clone());
        result
    }

    /// Like [`matches`](Self::matches) but bypassing the cache (neither read nor filled):
    /// the cost of a cold match, for benchmarks and diagnostics.
    pub fn matches_uncached(&self, topic: &str) -> Arc<[V]> {
        let index = self.index.read();
        self.compute(&index, topic)
            .unwrap_or_else(|| self.empty.clone())
    }

    /// Whether any pattern matches `topic` (stops at the first; does not fill the cache).
    pub fn has_match(&self, topic: &str) -> bool {
        let hash = self.cache.hash(topic);
        if let Some(hit) = self.cache.get(hash, topic) {
            return !hit.is_empty();
        }
        let index = self.index.read();
        if validate_topic(topic).is_err() {
            return false;
        }
        if index.exact(index.exact_hash(topic), topic).is_some() {
            return true;
        }
        let system = topic.starts_with('$');
        with_segments(topic, |segs| {
            index
                .trie
                .walk(segs, system, |_| ControlFlow::Break(()))
                .is_break()
        })
    }

    /// Number of (pattern, value) pairs.
    pub fn len(&self) -> usize {
        self.index.read().pairs
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of distinct patterns with at least one subscriber.
    pub fn patterns(&self) -> usize {
        self.index.read().patterns
    }

    /// Drops every cached result (they are recomputed on demand).
    pub fn clear_cache(&self) {
        self.cache.clear();
    }

    /// Topics currently cached (including entries made stale by a change).
    pub fn cache_len(&self) -> usize {
        self.cache.len()
    }

    fn compute(&self, index: &Index<V>, topic: &str) -> Option<Arc<[V]>> {
        validate_topic(topic).ok()?;
        let mut found = Found::default();
        // The exact slot is independent of the trie walk: loading it now overlaps its
        // cache miss with the walk's.
        let hash = index.exact_hash(topic);
        index.exact.prefetch(hash);
        let system = topic.starts_with('$');
        with_segments(topic, |segs| {
            let _ = index.trie.walk(segs, system, |subs| {
                subs.prefetch();
                found.push(subs);
                ControlFlow::Continue(())
            });
        });
        if let Some(subs) = index.exact(hash, topic) {
            found.push(subs);
        }
        Some(self.merge(found.as_slice()))
    }

    /// Unions the subscriber sets of the matching patterns, each value once, into one
    /// allocation (the result).
    fn merge(&self, found: &[Option<&Subscribers<V>>]) -> Arc<[V]> {
        let total: usize = found.iter().flatten().map(|s| s.len()).sum();
        if total == 0 {
            return self.empty.clone();
        }
        if let [Some(one)] = found {
            return match one.as_slice() {
                Some(slice) => Arc::from(slice),
                None => one.iter().cloned().collect(),
            };
        }
        let mut all = found.iter().flatten().flat_map(|s| s.iter());
        if total <= SMALL_MERGE
            && let Some(first) = all.next()
        {
            // Deduplicate references on the stack, then clone each value once straight
            // into the result (a slice iterator, exact size: one allocation).
            let mut refs: [&V; SMALL_MERGE] = [first; SMALL_MERGE];
            let mut n = 1;
            for v in all {
                if !refs[..n].contains(&v) {
                    refs[n] = v;
                    n += 1;
                }
            }
            return refs[..n].iter().map(|v| (*v).clone()).collect();
        }
        let mut out: Vec<V> = Vec::with_capacity(total);
        let mut seen: HashSet<&V> = HashSet::with_capacity(total);
        for v in found.iter().flatten().flat_map(|s| s.iter()) {
            if seen.insert(v) {
                out.push(v.clone());
            }
        }
        out.into()
    }
}

impl<V> Index<V> {
    fn exact_hash(&self, topic: &str) -> u64 {
        self.exact_state.hash_one(topic.as_bytes())
    }

    fn exact(&self, hash: u64, topic: &str) -> Option<&Subscribers<V>> {
        self.exact
            .find(hash, |(k, _)| k.as_bytes() == topic.as_bytes())
            .map(|(_, subs)| subs)
    }

    fn exact_mut(&mut self, hash: u64, topic: &str) -> Option<&mut Subscribers<V>> {
        self.exact
            .find_mut(hash, |(k, _)| k.as_bytes() == topic.as_bytes())
            .map(|(_, subs)| subs)
    }
}

/// Results with up to this many (pattern, value) pairs are merged on the stack.
const SMALL_MERGE: usize = 32;

/// The subscriber sets a walk found: the first few on the stack.
struct Found<'a, V> {
    len: usize,
    inline: [Option<&'a Subscribers<V>>; 8],
    spill: Vec<Option<&'a Subscribers<V>>>,
}

impl<V> Default for Found<'_, V> {
    fn default() -> Self {
        Found {
            len: 0,
            inline: [None; 8],
            spill: Vec::new(),
        }
    }
}

impl<'a, V> Found<'a, V> {
    fn push(&mut self, subs: &'a Subscribers<V>) {
        if self.spill.is_empty()
            && let Some(slot) = self.inline.get_mut(self.len)
        {
            *slot = Some(subs);
            self.len += 1;
            return;
        }
        if self.spill.is_empty() {
            self.spill.extend_from_slice(&self.inline);
        }
        self.spill.push(Some(subs));
    }

    /// Every entry is `Some`.
    fn as_slice(&self) -> &[Option<&'a Subscribers<V>>] {
        if self.spill.is_empty() {
            &self.inline[..self.len]
        } else {
            &self.spill
        }
    }
}

/// Calls `f` with `topic`'s `/`-separated segments (on the stack unless there are many).
fn with_segments<R>(topic: &str, f: impl FnOnce(&[&str]) -> R) -> R {
    let mut buf = [""; STACK_SEGMENTS];
    let mut n = 0;
    let mut start = 0;
    for (i, b) in topic.bytes().enumerate() {
        if b == b'/' {
            let Some(slot) = buf.get_mut(n) else {
                return f(&topic.split('/').collect::<Vec<_>>());
            };
            *slot = &topic[start..i];
            n += 1;
            start = i + 1;
        }
    }
    let Some(slot) = buf.get_mut(n) else {
        return f(&topic.split('/').collect::<Vec<_>>());
    };
    *slot = &topic[start..];
    f(&buf[..=n])
}

#[cfg(test)]
mod tests;
