//! The segment trie holding wildcard patterns, after nats-server's sublist: one level per
//! pattern segment, so a match walks the topic's segments and never scans subscriptions.
//!
//! Layout, tuned for the cold walk through an index far larger than the CPU caches. The
//! nodes are not linked by pointers: every node lives in one hash [`Table`], keyed by the
//! hash of its *path* (the chain of its edges from the root), and records its parent's id,
//! its edge kind and its segment, which is what a lookup compares. A walk therefore knows
//! where every node on the topic's literal path lives before reading any of them: it
//! [prefetches](Table::prefetch) the path's first [`PATH_PREFETCH`] levels at once, paying
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

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};
use std::ops::ControlFlow;

use super::FastState;
use super::key::Key;
use super::subs::Subscribers;
use super::table::Table;
use crate::topic::glob::{Glob, matches_source};
use crate::topic::segment::Segment;

/// Literal segments up to this many bytes are stored inline (24-byte keys).
const SEG_INLINE: usize = 22;
type SegKey = Key<SEG_INLINE>;

/// The root's id; the root itself is not in the table.
const ROOT: u32 = 0;

/// Node flags: which non-literal children exist (glob children: their count, see
/// [`GLOB_SHIFT`]).
const STAR: u8 = 1;
const DOUBLE_STAR: u8 = 2;
/// The glob children count's place in the flags, and its saturation value: from there on
/// the index is scanned to its end.
const GLOB_SHIFT: u8 = 2;
const GLOB_COUNT_MAX: u8 = 31;

/// Topics with up to this many segments have their segment hashes on the stack.
const STACK_SEGMENTS: usize = 16;

/// Glob index entries prefetched with a node's other children.
const GLOB_PREFETCH: u32 = 2;

/// Where a node's `*` child, `**` child and first [`GLOB_PREFETCH`] glob index entries
/// live: this many slots after the node's own (see [`child_hash_of`]).
const STAR_SLOT: u64 = 1;
const DOUBLE_STAR_SLOT: u64 = 2;
const FIRST_GLOB_SLOT: u64 = 3;

/// Slots after a node's that a walk prefetches with it: all of the above.
const NEAR_SLOTS: usize = FIRST_GLOB_SLOT as usize + GLOB_PREFETCH as usize - 1;

/// Levels of the topic's literal path a walk prefetches before reading any node.
const PATH_PREFETCH: usize = 2;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Literal,
    Star,
    DoubleStar,
    Glob,
    /// Not a node: entry `literals` of the glob index of node `parent`; `id` is that glob
    /// child's id and `seg` its source text.
    GlobIndex,
}

/// One trie node: the path from the root spells a pattern, so `subs` are the subscribers of
/// exactly one pattern. 56 bytes: with its hash, one cache line.
#[derive(Debug)]
struct Node<V> {
    id: u32,
    parent: u32,
    /// Number of literal children.
    literals: u32,
    kind: Kind,
    /// `STAR`, `DOUBLE_STAR`, and above [`GLOB_SHIFT`] the number of glob children
    /// (saturating at [`GLOB_COUNT_MAX`]; not zero while there is one).
    flags: u8,
    /// A one-hash Bloom filter of the literal children's edges: a clear bit means no such
    /// child, so a walk neither probes nor prefetches for it (an absent key's probe run is
    /// about 2.5 slots, each a cache miss in a large index). Bits are set on insert and only
    /// cleared when the last literal child goes: a stale bit costs a probe, never a match.
    children: u16,
    /// The edge's literal segment, or a glob's source text (empty for `*` and `**`).
    seg: SegKey,
    subs: Subscribers<V>,
}

impl<V> Node<V> {
    fn new(id: u32, parent: u32, kind: Kind, seg: &str) -> Self {
        Node {
            id,
            parent,
            literals: 0,
            kind,
            flags: 0,
            children: 0,
            seg: Key::new(seg),
            subs: Subscribers::default(),
        }
    }
}

impl<V: Eq + Hash> Node<V> {
    fn is_empty(&self) -> bool {
        self.subs.is_empty() && !self.has_children()
    }
}

impl<V> Node<V> {
    /// Whether the node has any child: literal, `*`, `**` or glob.
    #[inline]
    fn has_children(&self) -> bool {
        self.literals != 0 || self.flags != 0
    }

    /// Whether a literal child along `edge` (its edge hash) may exist.
    #[inline]
    fn may_have(&self, edge: u64) -> bool {
        self.literals > 0 && self.children & child_bit(edge) != 0
    }

    /// Whether the node has glob children.
    #[inline]
    fn has_globs(&self) -> bool {
        self.flags >> GLOB_SHIFT != 0
    }

    /// The number of glob children, if below the saturation point.
    #[inline]
    fn globs_known(&self) -> Option<u32> {
        let n = u32::from(self.flags >> GLOB_SHIFT);
        (n < u32::from(GLOB_COUNT_MAX)).then_some(n)
    }

    /// Counts a glob child in (a saturated count stays so: it means "scan to the end").
    fn glob_added(&mut self) {
        let n = self.flags >> GLOB_SHIFT;
        if n < GLOB_COUNT_MAX {
            self.set_glob_count(n + 1);
        }
    }

    /// Counts a glob child out; `last`: it was the only one.
    fn glob_removed(&mut self, last: bool) {
        let n = self.flags >> GLOB_SHIFT;
        if last {
            self.set_glob_count(0);
        } else if n < GLOB_COUNT_MAX {
            self.set_glob_count(n.saturating_sub(1));
        }
    }

    fn set_glob_count(&mut self, n: u8) {
        self.flags = (self.flags & ((1 << GLOB_SHIFT) - 1)) | (n << GLOB_SHIFT);
    }
}

/// The filter bit of a literal edge: from the edge hash's top bits (the low ones pick the
/// table slot).
#[inline]
fn child_bit(edge: u64) -> u16 {
    1 << (edge >> 60)
}

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

    /// Prefetches the node at path hash `hash` and its descendants along `rest` (segment
    /// hashes of the rest of the topic, as literal edges).
    #[inline]
    fn prefetch_path(&self, mut hash: u64, rest: &[u64]) {
        self.nodes.prefetch_run(hash, NEAR_SLOTS);
        for &edge in rest {
            hash = child_hash(hash, edge);
            self.nodes.prefetch_run(hash, NEAR_SLOTS);
        }
    }
}

/// For each `**` node entered during a walk: its id and the lowest topic position it was
/// entered at. Entering it at `i` covers every position from `i` on, so a later entry at
/// `j >= i` adds nothing. This keeps patterns like `**/a/**/a/**/b` linear instead of
/// exponential. The first few live on the stack: a walk allocates nothing.
struct Entered {
    len: usize,
    inline: [(u32, usize); 8],
    spill: Vec<(u32, usize)>,
}

impl Entered {
    /// Records entering node `me` at `from`; returns the end (exclusive) of the positions
    /// still to visit from `from`, or `None` if an earlier entry already covers them.
    fn enter(&mut self, me: u32, from: usize, topic_len: usize) -> Option<usize> {
        let n = self.len.min(self.inline.len());
        let slot = self.inline[..n]
            .iter_mut()
            .chain(self.spill.iter_mut())
            .find(|(p, _)| *p == me);
        match slot {
            Some((_, lowest)) if *lowest <= from => None,
            Some((_, lowest)) => Some(std::mem::replace(lowest, from)),
            None => {
                match self.inline.get_mut(self.len) {
                    Some(free) => *free = (me, from),
                    None => self.spill.push((me, from)),
                }
                self.len += 1;
                Some(topic_len + 1)
            }
        }
    }
}

/// State of one match walk.
struct Walk<'t, F> {
    topic: &'t [&'t str],
    /// The topic's segments hashed as literal edges.
    edges: &'t [u64],
    system: bool,
    found: F,
    entered: Entered,
}

impl<'n, V: Eq + Hash> Trie<V> {
    /// Calls `found` with the subscribers of every pattern matching `topic` (the topic's
    /// segments), stopping early if it breaks. `system`: the topic starts with `$`, so only
    /// edges whose segment starts with `$` may match.
    pub(crate) fn walk<F>(&'n self, topic: &[&str], system: bool, found: F) -> ControlFlow<()>
    where
        F: FnMut(&'n Subscribers<V>) -> ControlFlow<()>,
    {
        let mut stack = [0u64; STACK_SEGMENTS];
        let mut heap = Vec::new();
        let edges = if topic.len() <= STACK_SEGMENTS {
            &mut stack[..topic.len()]
        } else {
            heap.resize(topic.len(), 0);
            &mut heap[..]
        };
        for (e, seg) in edges.iter_mut().zip(topic) {
            *e = edge_hash(&self.state, Kind::Literal, seg);
        }
        // The first levels of the literal path at once: their misses overlap. (Also
        // prefetching, for every level, the path taking `*` there measured no faster: the
        // walk prefetches each `*` branch when it reaches a node that has one.)
        // (The root itself is not in the table: start at its child.)
        if let Some((&first, rest)) = edges.split_first() {
            let ahead = rest.len().min(PATH_PREFETCH - 1);
            self.prefetch_path(child_hash(self.root_hash, first), &rest[..ahead]);
        }
        let mut w = Walk {
            topic,
            edges,
            system,
            found,
            entered: Entered {
                len: 0,
                inline: [(0, 0); 8],
                spill: Vec::new(),
            },
        };
        self.visit(&mut w, &self.root, self.root_hash, 0, true)
    }

    fn visit<F>(
        &'n self,
        w: &mut Walk<'_, F>,
        node: &'n Node<V>,
        hash: u64,
        i: usize,
        root: bool,
    ) -> ControlFlow<()>
    where
        F: FnMut(&'n Subscribers<V>) -> ControlFlow<()>,
    {
        // The `$` rule: at the root, a system topic may only take edges whose segment
        // starts with `$` (no `*`, no `**`, no glob like `?inbox`).
        let dollar_only = root && w.system;
        let wild = !dollar_only;
        let double_star = (wild && node.flags & DOUBLE_STAR != 0)
            .then(|| child_hash_of(hash, Kind::DoubleStar, self.double_star_hash));
        if let Some(h) = double_star {
            self.nodes.prefetch(h);
        }
        let globs = node.has_globs() && i < w.topic.len();
        if globs {
            let known = node.globs_known().unwrap_or(GLOB_PREFETCH);
            for k in 0..known.min(GLOB_PREFETCH) {
                self.nodes.prefetch(self.glob_index_hash(hash, k));
            }
        }
        if let Some(&seg) = w.topic.get(i) {
            // Start loading the `*` branch (and its literal continuation) before walking
            // the literal child, so both branches' misses overlap.
            let star = (wild && node.flags & STAR != 0)
                .then(|| child_hash_of(hash, Kind::Star, self.star_hash));
            let ahead = w.edges.get(i + 1);
            if let Some(h) = star {
                self.nodes.prefetch(h);
                if let Some(&next) = ahead {
                    self.nodes.prefetch(child_hash(h, next));
                }
            }
            if node.may_have(w.edges[i]) {
                let h = child_hash(hash, w.edges[i]);
                // One level ahead of the walk, past the levels prefetched up front.
                if i + 1 >= PATH_PREFETCH
                    && let Some(&next) = ahead
                {
                    self.nodes.prefetch(child_hash(h, next));
                }
                if let Some(child) = self.child(h, node.id, Kind::Literal, seg) {
                    self.visit(w, child, h, i + 1, false)?;
                }
            }
            if let Some(h) = star
                && let Some(child) = self.child(h, node.id, Kind::Star, "")
            {
                self.visit(w, child, h, i + 1, false)?;
            }
            if globs {
                self.visit_globs(w, node, hash, i, seg, wild)?;
            }
        } else if !node.subs.is_empty() {
            (w.found)(&node.subs)?;
        }
        if let Some(h) = double_star
            && let Some(child) = self.child(h, node.id, Kind::DoubleStar, "")
        {
            return self.enter(w, child, h, i);
        }
        ControlFlow::Continue(())
    }

    /// Visits the glob children of `node` that match `seg` (topic position `i`). Scanned in
    /// order: the one place where match cost grows with the number of *distinct* glob
    /// segments that share a parent (e.g. `a/x*`, `a/y*`, … under `a`).
    fn visit_globs<F>(
        &'n self,
        w: &mut Walk<'_, F>,
        node: &'n Node<V>,
        hash: u64,
        i: usize,
        seg: &str,
        wild: bool,
    ) -> ControlFlow<()>
    where
        F: FnMut(&'n Subscribers<V>) -> ControlFlow<()>,
    {
        // With the count known, the scan does not probe past the last entry to find it.
        let count = node.globs_known().unwrap_or(u32::MAX);
        let mut k = 0;
        while k < count
            && let Some(entry) = self.glob_index(hash, node.id, k)
        {
            k += 1;
            let src = std::str::from_utf8(entry.seg.as_bytes()).unwrap_or_default();
            if !wild && !src.starts_with('$') {
                continue;
            }
            let hit = match matches_source(src, seg) {
                Some(hit) => hit,
                None => self.compiled.get(&entry.id).is_some_and(|g| g.matches(seg)),
            };
            if !hit {
                continue;
            }
            let h = child_hash(hash, self.edge_hash(Kind::Glob, src));
            if let Some(child) = self.child(h, node.id, Kind::Glob, src) {
                self.visit(w, child, h, i + 1, false)?;
            }
        }
        ControlFlow::Continue(())
    }

    /// `node` is a `**` node reached at topic position `from`: the `**` may swallow
    /// `topic[from..j]` for every `j` up to the topic's end.
    fn enter<F>(
        &'n self,
        w: &mut Walk<'_, F>,
        node: &'n Node<V>,
        hash: u64,
        from: usize,
    ) -> ControlFlow<()>
    where
        F: FnMut(&'n Subscribers<V>) -> ControlFlow<()>,
    {
        let Some(upto) = w.entered.enter(node.id, from, w.topic.len()) else {
            return ControlFlow::Continue(());
        };
        // A `**` with no children (`**`, `orders/**`: the usual shape) can only match where
        // the topic ends. Visiting it at every remaining position cost a full visit each:
        // 13.5% of a cold match's instructions with one global `**` subscribed
        // (BENCHMARKS.md). It matches once, when this entry's positions reach the end (a
        // re-entry lower down stops where the earlier one began, so it never reports twice).
        if !node.has_children() {
            if upto > w.topic.len() && !node.subs.is_empty() {
                (w.found)(&node.subs)?;
            }
            return ControlFlow::Continue(());
        }
        // `**/x` tries a literal child at every remaining position: load them all first.
        for &edge in &w.edges[from..upto.min(w.edges.len())] {
            if node.may_have(edge) {
                self.nodes.prefetch(child_hash(hash, edge));
            }
        }
        for j in from..upto {
            self.visit(w, node, hash, j, false)?;
        }
        ControlFlow::Continue(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topic::Pattern;

    fn segs(p: &str) -> Vec<Segment> {
        Pattern::parse(p).expect("valid").segments().to_vec()
    }

    fn matched(t: &Trie<u32>, topic: &str) -> Vec<u32> {
        let parts: Vec<&str> = topic.split('/').collect();
        let mut seen = Vec::new();
        let _ = t.walk(&parts, topic.starts_with('$'), |s| {
            seen.extend(s.iter().copied());
            ControlFlow::Continue(())
        });
        seen.sort();
        seen
    }

    /// A trie holding pattern `i` of `pats` with subscriber `i` (each insert is new, and a
    /// second one of the same pair changes nothing).
    fn numbered(pats: &[&str]) -> Trie<u32> {
        let mut t = Trie::default();
        for (i, p) in pats.iter().enumerate() {
            assert!(t.insert(&segs(p), i as u32).pair);
            assert!(!t.insert(&segs(p), i as u32).pair);
        }
        t
    }

    #[test]
    fn a_childless_double_star_reports_once_from_any_entry() {
        // Trailing `**` nodes reached from several positions (the second `**` of `**/a/**`
        // from every `a`), or whose prefix is the whole topic (`a/b/**` on `a/b`): each
        // pattern's subscribers come out exactly once, and only where the `**` may match.
        let t = numbered(&[
            "**",
            "a/**",
            "**/a/**",
            "a/**/b/**",
            "a/b/**",
            "b/**",
            "**/b",
        ]);
        assert_eq!(matched(&t, "a/a/b/a/b"), [0, 1, 2, 3, 6]);
        assert_eq!(matched(&t, "a/b"), [0, 1, 2, 3, 4, 6]);
        assert_eq!(matched(&t, "a"), [0, 1, 2]);
        assert_eq!(matched(&t, "b/a"), [0, 2, 5]);
        assert_eq!(matched(&t, "c"), [0]);
        // A `**` with children is still walked through: `a/**/b/**` needs its `b`.
        assert_eq!(matched(&t, "a/c/c"), [0, 1, 2]);
        assert_eq!(matched(&t, "a/c/b/c"), [0, 1, 2, 3]);
    }

    #[test]
    fn removing_every_pattern_empties_the_table() {
        let pats = [
            "a/*",
            "a/b/*",
            "a/**",
            "a/**/c",
            "a/{x,y}/c",
            "a/x*/d",
            "*/b",
            "**",
            "a/b/c/*",
            "$sys/*",
        ];
        let mut t = numbered(&pats);
        assert_eq!(matched(&t, "a/x/c"), [2, 3, 4, 7]);
        assert_eq!(matched(&t, "a/b/c"), [1, 2, 3, 7]);
        assert_eq!(matched(&t, "z/b"), [6, 7]);
        assert_eq!(matched(&t, "$sys/x"), [9]);
        for (i, p) in pats.iter().enumerate() {
            assert_eq!(
                t.remove(&segs(p), &(i as u32)),
                Change {
                    pair: true,
                    pattern: true
                }
            );
            assert_eq!(t.remove(&segs(p), &(i as u32)), NO_CHANGE);
        }
        assert_eq!(t.nodes(), 0);
        assert!(t.root.is_empty() && t.compiled.is_empty());
        // Freed ids are reused, and a reused id does not resurrect old children.
        assert!(t.insert(&segs("q/*"), 1).pair);
        assert_eq!(matched(&t, "q/z"), [1]);
        assert_eq!(matched(&t, "a/b/c"), Vec::<u32>::new());
    }

    #[test]
    fn glob_index_stays_dense_through_removals() {
        // More globs under one node than its count holds (31): the walk then scans the
        // index to its end, through removals too.
        const GLOBS_N: usize = 40;
        let mut t: Trie<u32> = Trie::default();
        let globs: Vec<String> = (0..GLOBS_N)
            .map(|i| match i % 3 {
                0 => format!("x{i}y*"),
                1 => format!("{{x{i}y,y{i}y}}"),
                _ => format!("x{i}y?"),
            })
            .collect();
        for (i, g) in globs.iter().enumerate() {
            assert!(t.insert(&segs(&format!("a/{g}")), i as u32).pair);
        }
        for i in (0..GLOBS_N).filter(|i| i % 2 == 1) {
            assert!(
                t.remove(&segs(&format!("a/{}", globs[i])), &(i as u32))
                    .pair
            );
        }
        for i in 0..GLOBS_N as u32 {
            let topic = if i % 3 == 2 {
                format!("a/x{i}yz")
            } else {
                format!("a/x{i}y")
            };
            let want = if i % 2 == 0 { vec![i] } else { vec![] };
            assert_eq!(matched(&t, &topic), want, "{topic}");
        }
        for i in (0..GLOBS_N).filter(|i| i % 2 == 0) {
            assert!(
                t.remove(&segs(&format!("a/{}", globs[i])), &(i as u32))
                    .pair
            );
        }
        assert_eq!(t.nodes(), 0);
        assert!(t.compiled.is_empty());
    }

    #[test]
    fn literal_child_filter_never_hides_a_child() {
        let mut t: Trie<u32> = Trie::default();
        // 40 literal children of `a` set every bit of its filter; removals leave them set.
        for i in 0..40u32 {
            assert!(t.insert(&segs(&format!("a/b{i}/*")), i).pair);
        }
        for i in 0..40u32 {
            assert_eq!(matched(&t, &format!("a/b{i}/x")), vec![i]);
        }
        for i in 1..40u32 {
            assert!(t.remove(&segs(&format!("a/b{i}/*")), &i).pair);
        }
        assert_eq!(matched(&t, "a/b0/x"), vec![0]);
        assert_eq!(matched(&t, "a/b7/x"), Vec::<u32>::new());
        // The last child gone, the filter is cleared; a new child sets its own bit.
        assert!(t.remove(&segs("a/b0/*"), &0).pair);
        assert_eq!(t.nodes(), 0);
        assert!(t.insert(&segs("a/c/*"), 9).pair);
        assert_eq!(matched(&t, "a/c/x"), vec![9]);
        assert_eq!(matched(&t, "a/b0/x"), Vec::<u32>::new());
        // Under `**`, every position's literal child is found through the filter.
        assert!(t.insert(&segs("a/**/z"), 5).pair);
        assert_eq!(matched(&t, "a/z"), vec![5]);
        assert_eq!(matched(&t, "a/c/d/z"), vec![5]);
    }

    #[test]
    fn wildcard_children_sit_after_their_parent() {
        let t: Trie<u32> = Trie::default();
        let parent = child_hash(t.root_hash, edge_hash(&t.state, Kind::Literal, "a"));
        let star = child_hash_of(parent, Kind::Star, t.star_hash);
        let double_star = child_hash_of(parent, Kind::DoubleStar, t.double_star_hash);
        let globs = [t.glob_index_hash(parent, 0), t.glob_index_hash(parent, 1)];
        // Whatever the table's size, the home slots follow the parent's, wrapping around.
        for mask in [15u64, (1 << 20) - 1, (1 << 31) - 1] {
            let home = |h: u64| h & mask;
            assert_eq!(home(star), (home(parent) + 1) & mask);
            assert_eq!(home(double_star), (home(parent) + 2) & mask);
            assert_eq!(home(globs[0]), (home(parent) + 3) & mask);
            assert_eq!(home(globs[1]), (home(parent) + 4) & mask);
        }
        // The full hashes still differ, from each other and across parents.
        let other = child_hash(t.root_hash, edge_hash(&t.state, Kind::Literal, "b"));
        let all = [
            parent,
            star,
            double_star,
            globs[0],
            globs[1],
            child_hash_of(other, Kind::Star, t.star_hash),
        ];
        let distinct: std::collections::HashSet<u64> = all.iter().copied().collect();
        assert_eq!(distinct.len(), all.len());
        // Literal children are spread as before.
        assert_eq!(
            child_hash_of(parent, Kind::Literal, 7),
            child_hash(parent, 7)
        );
    }

    #[test]
    fn node_fits_a_slot() {
        assert!(std::mem::size_of::<Option<Node<u64>>>() <= 56);
    }
}
