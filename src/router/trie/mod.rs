//! The segment trie holding wildcard patterns, after nats-server's sublist: one level per
//! pattern segment, so a match walks the topic's segments and never scans subscriptions.
//!
//! Layout, tuned for the cold walk through an index far larger than the CPU caches. The
//! nodes are not linked by pointers: every node lives in one hash [`Table`], keyed by the
//! hash of its *path* (the chain of its edges from the root), and records its parent's id,
//! its edge kind and its segment, which is what a lookup compares. A walk therefore knows
//! where every node on the topic's literal path lives before reading any of them: it
//! [prefetches](Table::prefetch) the path's first `PATH_PREFETCH` levels at once, paying
//! about one memory latency for them instead of one per level, then stays one level ahead
//! of itself; when it reaches a node with a `*` child it prefetches that child and the
//! next level of its path the same way. (Not the whole path: deep paths mostly do not
//! exist, and a prefetched absent node costs a line all the same. Prefetching whole paths,
//! 5.6 of the 14 lines a cold match touched at 1M subscriptions were never read.) Per
//! node, flags say whether a `*`, a `**` or glob children exist (and how many globs), and a
//! 16-bit filter which literal children may, so a walk probes only edges that are there: in
//! an index far larger than the caches what a cold match costs is mostly the number of
//! cache lines it touches, and a probe for an absent key touches two or three.
//!
//! Glob children are listed in the table too: a node's `k`-th glob has an index entry at a
//! hash made from the node's and `k`, holding the glob's source text. A walk prefetches the
//! first entries with the node's other children and, for the common shapes, matches the
//! source text in place (no compiled matcher to follow a pointer to). A node's `*` and `**`
//! children and first glob index entries sit in the slots right after it
//! ([`child_hash_of`]), so the walk's up-front prefetch covers them too.
//!
//! Files: this one holds the index and its edits (insert, remove, the path hashing both
//! sides share); `node.rs` a node and its flags; `walk.rs` the match.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};

mod node;
mod walk;

use super::FastState;
use super::table::Table;
use crate::topic::glob::{Glob, matches_source};
use crate::topic::segment::Segment;
use node::{DOUBLE_STAR, Kind, Node, STAR, child_bit};

/// The root's id; the root itself is not in the table.
const ROOT: u32 = 0;

/// Glob index entries prefetched with a node's other children.
const GLOB_PREFETCH: u32 = 2;

/// Where a node's `*` child, `**` child and first [`GLOB_PREFETCH`] glob index entries
/// live: this many slots after the node's own (see [`child_hash_of`]).
const STAR_SLOT: u64 = 1;
const DOUBLE_STAR_SLOT: u64 = 2;
const FIRST_GLOB_SLOT: u64 = 3;

/// Slots after a node's that a walk prefetches with it: all of the above.
const NEAR_SLOTS: usize = FIRST_GLOB_SLOT as usize + GLOB_PREFETCH as usize - 1;

pub(crate) struct Trie<V> {
    nodes: Table<Node<V>>,
    root: Node<V>,
    /// The root's path hash: a per-process random start, so paths hash unpredictably.
    root_hash: u64,
    /// Compiled globs of the glob children whose source text [`matches_source`] cannot
    /// match, by child id.
    compiled: HashMap<u32, Glob, FastState>,
    state: FastState,
    star_hash: u64,
    double_star_hash: u64,
    next_id: u32,
    free_ids: Vec<u32>,
}

impl<V> Default for Trie<V> {
    fn default() -> Self {
        let state = FastState::default();
        Trie {
            nodes: Table::default(),
            root: Node::new(ROOT, ROOT, Kind::Literal, ""),
            root_hash: state.hash_one(0xC0FFEEu32),
            compiled: HashMap::default(),
            star_hash: edge_hash(&state, Kind::Star, ""),
            double_star_hash: edge_hash(&state, Kind::DoubleStar, ""),
            state,
            next_id: ROOT + 1,
            free_ids: Vec::new(),
        }
    }
}

/// An edge's own hash: its kind and segment.
fn edge_hash(state: &FastState, kind: Kind, seg: &str) -> u64 {
    state.hash_one((kind as u8, seg.as_bytes()))
}

/// A child's path hash from its parent's and its edge's. Cheap (the segments were hashed
/// once each), order-sensitive, and well mixed in the low bits the table indexes by.
#[inline]
fn child_hash(parent: u64, edge: u64) -> u64 {
    let mut x = parent.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ edge;
    x ^= x >> 33;
    x = x.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
    x ^= x >> 33;
    x = x.wrapping_mul(0xC4CE_B9FE_1A85_EC53);
    x ^ (x >> 33)
}

/// The path hash of a child of the node at path hash `parent` along an edge of `kind`
/// (whose own hash is `edge`). A node's `*` and `**` children, then its first
/// [`GLOB_PREFETCH`] glob index entries, get the table slots right after their parent's:
/// their hash's low half is the parent's plus one to four (the table indexes by low bits;
/// the high half still tells paths apart). A walk then finds them on the lines next to the
/// node's, in the same page, and prefetches them with it: on this VM, lines of one page cost
/// about two thirds of lines on separate pages. At 1M subscriptions this took the cold pages
/// a match touches from 7.5 to 4.8. Literal children stay spread out: a node may have a
/// million of them.
#[inline]
fn child_hash_of(parent: u64, kind: Kind, edge: u64) -> u64 {
    let h = child_hash(parent, edge);
    match kind {
        Kind::Star => near(parent, STAR_SLOT, h),
        Kind::DoubleStar => near(parent, DOUBLE_STAR_SLOT, h),
        _ => h,
    }
}

/// `mixed` with its low half replaced by `parent`'s plus `offset`.
#[inline]
fn near(parent: u64, offset: u64, mixed: u64) -> u64 {
    const LOW: u64 = 0xFFFF_FFFF;
    (mixed & !LOW) | (parent.wrapping_add(offset) & LOW)
}

/// Matches entry `k` of node `parent`'s glob index.
fn is_glob_entry<V>(parent: u32, k: u32) -> impl Fn(&Node<V>) -> bool {
    move |n| n.parent == parent && n.kind == Kind::GlobIndex && n.literals == k
}

fn edge_of(seg: &Segment) -> (Kind, &str) {
    match seg {
        Segment::Literal(s) => (Kind::Literal, s),
        Segment::Star => (Kind::Star, ""),
        Segment::DoubleStar => (Kind::DoubleStar, ""),
        Segment::Glob(g) => (Kind::Glob, g.source()),
    }
}

/// Outcome of an insert or remove: whether the (pattern, value) pair changed, and whether
/// the pattern itself appeared (insert) or disappeared (remove).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Change {
    pub(crate) pair: bool,
    pub(crate) pattern: bool,
}

const NO_CHANGE: Change = Change {
    pair: false,
    pattern: false,
};

impl<V: Eq + Hash> Trie<V> {
    fn edge_hash(&self, kind: Kind, seg: &str) -> u64 {
        match kind {
            Kind::Star => self.star_hash,
            Kind::DoubleStar => self.double_star_hash,
            _ => edge_hash(&self.state, kind, seg),
        }
    }

    /// Path hash of entry `k` of the glob index of the node at path hash `node`.
    #[inline]
    fn glob_index_hash(&self, node: u64, k: u32) -> u64 {
        let edge = (u64::from(k) + 1).wrapping_mul(0xA24B_AED4_963E_E407);
        let h = child_hash(node, self.double_star_hash ^ edge);
        // The first entries next to the node, after its `*` and `**` children.
        if k < GLOB_PREFETCH {
            near(node, FIRST_GLOB_SLOT + u64::from(k), h)
        } else {
            h
        }
    }

    /// Entry `k` of node `parent`'s glob index.
    #[inline]
    fn glob_index(&self, node: u64, parent: u32, k: u32) -> Option<&Node<V>> {
        self.nodes
            .find(self.glob_index_hash(node, k), is_glob_entry(parent, k))
    }

    /// Number of entries in the glob index of node `parent` (at path hash `node`).
    fn glob_count(&self, node: u64, parent: u32) -> u32 {
        (0..)
            .find(|&k| self.glob_index(node, parent, k).is_none())
            .expect("fewer than 2^32 globs")
    }

    fn add_glob(&mut self, node: u64, parent: u32, child: u32, glob: &Glob) {
        let k = self.glob_count(node, parent);
        let mut entry = Node::new(child, parent, Kind::GlobIndex, glob.source());
        entry.literals = k;
        self.nodes.insert_new(self.glob_index_hash(node, k), entry);
        // Whether the source text alone answers depends on the glob, not on the input.
        if matches_source(glob.source(), "").is_none() {
            self.compiled.insert(child, glob.clone());
        }
    }

    /// Removes glob child `child` from node `parent`'s index, moving the last entry into
    /// its place; false if the index is now empty.
    fn remove_glob(&mut self, node: u64, parent: u32, child: u32) -> bool {
        self.compiled.remove(&child);
        let count = self.glob_count(node, parent);
        let at = (0..count)
            .find(|&k| {
                self.glob_index(node, parent, k)
                    .is_some_and(|e| e.id == child)
            })
            .expect("a glob child is in its parent's index");
        let last = count - 1;
        let moved = self
            .nodes
            .remove(
                self.glob_index_hash(node, last),
                is_glob_entry(parent, last),
            )
            .expect("the last index entry exists");
        if at != last {
            let hash = self.glob_index_hash(node, at);
            let entry = self
                .nodes
                .find_mut(hash, is_glob_entry(parent, at))
                .expect("index entries are dense");
            entry.id = moved.id;
            entry.seg = moved.seg;
        }
        last > 0
    }

    /// The child of node `parent` along edge (`kind`, `seg`), whose path hash is `hash`.
    #[inline]
    fn child(&self, hash: u64, parent: u32, kind: Kind, seg: &str) -> Option<&Node<V>> {
        self.nodes.find(hash, |n| {
            n.parent == parent && n.kind == kind && n.seg.as_bytes() == seg.as_bytes()
        })
    }

    fn node_mut(&mut self, id: u32, hash: u64) -> &mut Node<V> {
        if id == ROOT {
            return &mut self.root;
        }
        self.nodes
            .find_mut(hash, |n| n.id == id)
            .expect("a node on a walked path is in the table")
    }

    fn alloc_id(&mut self) -> u32 {
        self.free_ids.pop().unwrap_or_else(|| {
            let id = self.next_id;
            self.next_id = id.checked_add(1).expect("fewer than 2^32 trie nodes");
            id
        })
    }

    pub(crate) fn insert(&mut self, segs: &[Segment], value: V) -> Change {
        let (mut id, mut hash) = (ROOT, self.root_hash);
        for seg in segs {
            let (kind, text) = edge_of(seg);
            let edge = self.edge_hash(kind, text);
            let child = child_hash_of(hash, kind, edge);
            id = match self.child(child, id, kind, text) {
                Some(node) => node.id,
                None => {
                    let new = self.alloc_id();
                    let parent = self.node_mut(id, hash);
                    match kind {
                        Kind::Literal => {
                            parent.literals += 1;
                            parent.children |= child_bit(edge);
                        }
                        Kind::Star => parent.flags |= STAR,
                        Kind::DoubleStar => parent.flags |= DOUBLE_STAR,
                        Kind::Glob | Kind::GlobIndex => parent.glob_added(),
                    }
                    if let Segment::Glob(g) = seg {
                        self.add_glob(hash, id, new, g);
                    }
                    self.nodes.insert_new(child, Node::new(new, id, kind, text));
                    new
                }
            };
            hash = child;
        }
        let node = self.node_mut(id, hash);
        let was_empty = node.subs.is_empty();
        let pair = node.subs.insert(value);
        Change {
            pair,
            pattern: pair && was_empty,
        }
    }

    /// Removes `value` from the pattern `segs`, pruning nodes left empty.
    pub(crate) fn remove(&mut self, segs: &[Segment], value: &V) -> Change {
        let mut path = Vec::with_capacity(segs.len() + 1);
        path.push((ROOT, self.root_hash));
        for seg in segs {
            let (kind, text) = edge_of(seg);
            let &(id, hash) = path.last().expect("starts at the root");
            let child = child_hash_of(hash, kind, self.edge_hash(kind, text));
            let Some(node) = self.child(child, id, kind, text) else {
                return NO_CHANGE;
            };
            path.push((node.id, child));
        }
        let &(id, hash) = path.last().expect("starts at the root");
        let node = self.node_mut(id, hash);
        if !node.subs.remove(value) {
            return NO_CHANGE;
        }
        let pattern = node.subs.is_empty();
        for at in (1..path.len()).rev() {
            let (id, hash) = path[at];
            if !self.node_mut(id, hash).is_empty() {
                break;
            }
            let gone = self
                .nodes
                .remove(hash, |n| n.id == id)
                .expect("a node on a walked path is in the table");
            self.free_ids.push(id);
            let (parent_id, parent_hash) = path[at - 1];
            match gone.kind {
                Kind::Literal => {
                    let parent = self.node_mut(parent_id, parent_hash);
                    parent.literals -= 1;
                    if parent.literals == 0 {
                        parent.children = 0;
                    }
                }
                Kind::Star => self.node_mut(parent_id, parent_hash).flags &= !STAR,
                Kind::DoubleStar => self.node_mut(parent_id, parent_hash).flags &= !DOUBLE_STAR,
                Kind::Glob | Kind::GlobIndex => {
                    let more = self.remove_glob(parent_hash, parent_id, id);
                    let parent = self.node_mut(parent_id, parent_hash);
                    parent.glob_removed(!more);
                }
            }
        }
        Change {
            pair: true,
            pattern,
        }
    }

    /// Nodes in the index (the root excluded).
    #[cfg(test)]
    fn nodes(&self) -> usize {
        self.nodes.len()
    }
}

#[cfg(test)]
mod tests;
