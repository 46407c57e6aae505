//! One trie node and its flags: what a walk reads to decide which edges to probe.

use std::hash::Hash;

use super::super::key::Key;
use super::super::subs::Subscribers;

/// Literal segments up to this many bytes are stored inline (24-byte keys).
pub(super) const SEG_INLINE: usize = 22;
pub(super) type SegKey = Key<SEG_INLINE>;

/// Node flags: which non-literal children exist (glob children: their count, see
/// [`GLOB_SHIFT`]).
pub(super) const STAR: u8 = 1;
pub(super) const DOUBLE_STAR: u8 = 2;
/// The glob children count's place in the flags, and its saturation value: from there on
/// the index is scanned to its end.
pub(super) const GLOB_SHIFT: u8 = 2;
pub(super) const GLOB_COUNT_MAX: u8 = 31;
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Kind {
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
pub(super) struct Node<V> {
    pub(super) id: u32,
    pub(super) parent: u32,
    /// Number of literal children.
    pub(super) literals: u32,
    pub(super) kind: Kind,
    /// `STAR`, `DOUBLE_STAR`, and above [`GLOB_SHIFT`] the number of glob children
    /// (saturating at [`GLOB_COUNT_MAX`]; not zero while there is one).
    pub(super) flags: u8,
    /// A one-hash Bloom filter of the literal children's edges: a clear bit means no such
    /// child, so a walk neither probes nor prefetches for it (an absent key's probe run is
    /// about 2.5 slots, each a cache miss in a large index). Bits are set on insert and only
    /// cleared when the last literal child goes: a stale bit costs a probe, never a match.
    pub(super) children: u16,
    /// The edge's literal segment, or a glob's source text (empty for `*` and `**`).
    pub(super) seg: SegKey,
    pub(super) subs: Subscribers<V>,
}

impl<V> Node<V> {
    pub(super) fn new(id: u32, parent: u32, kind: Kind, seg: &str) -> Self {
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
    pub(super) fn is_empty(&self) -> bool {
        self.subs.is_empty() && !self.has_children()
    }
}

impl<V> Node<V> {
    /// Whether the node has any child: literal, `*`, `**` or glob.
    #[inline]
    pub(super) fn has_children(&self) -> bool {
        self.literals != 0 || self.flags != 0
    }

    /// Whether a literal child along `edge` (its edge hash) may exist.
    #[inline]
    pub(super) fn may_have(&self, edge: u64) -> bool {
        self.literals > 0 && self.children & child_bit(edge) != 0
    }

    /// Whether the node has glob children.
    #[inline]
    pub(super) fn has_globs(&self) -> bool {
        self.flags >> GLOB_SHIFT != 0
    }

    /// The number of glob children, if below the saturation point.
    #[inline]
    pub(super) fn globs_known(&self) -> Option<u32> {
        let n = u32::from(self.flags >> GLOB_SHIFT);
        (n < u32::from(GLOB_COUNT_MAX)).then_some(n)
    }

    /// Counts a glob child in (a saturated count stays so: it means "scan to the end").
    pub(super) fn glob_added(&mut self) {
        let n = self.flags >> GLOB_SHIFT;
        if n < GLOB_COUNT_MAX {
            self.set_glob_count(n + 1);
        }
    }

    /// Counts a glob child out; `last`: it was the only one.
    pub(super) fn glob_removed(&mut self, last: bool) {
        let n = self.flags >> GLOB_SHIFT;
        if last {
            self.set_glob_count(0);
        } else if n < GLOB_COUNT_MAX {
            self.set_glob_count(n.saturating_sub(1));
        }
    }

    pub(super) fn set_glob_count(&mut self, n: u8) {
        self.flags = (self.flags & ((1 << GLOB_SHIFT) - 1)) | (n << GLOB_SHIFT);
    }
}

/// The filter bit of a literal edge: from the edge hash's top bits (the low ones pick the
/// table slot).
#[inline]
pub(super) fn child_bit(edge: u64) -> u16 {
    1 << (edge >> 60)
}
