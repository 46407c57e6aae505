//! The segment trie holding wildcard patterns, after nats-server's sublist: one level per
//! pattern segment, so a match walks the topic's segments and never scans subscriptions.
//!
//! Layout, tuned for the cold walk through an index far larger than the CPU caches: a
//! node's literal children live *in* the node's child table, next to their inline keys
//! ([`Key`]), so stepping down one level costs about one cache miss: a short vector scanned
//! in order for the common node with a few children, a hash map only for wide nodes (such
//! as one child per tenant). A pattern's single subscriber is inline too ([`Subscribers`]).

use std::collections::HashMap;
use std::hash::Hash;
use std::ops::ControlFlow;

use super::glob::Glob;
use super::key::Key;
use super::segment::Segment;
use super::subs::Subscribers;

/// Literal segments up to this many bytes are stored inline (24-byte keys).
const SEG_INLINE: usize = 22;
type SegKey = Key<SEG_INLINE>;

/// A node's literal children are a vector scanned in order up to this many; a hash map
/// beyond (and back to a vector at half of it).
const SMALL_LITERALS: usize = 8;

/// One trie level. The path from the root spells a pattern, so each node's `subs` are the
/// subscribers of exactly one pattern.
#[derive(Debug)]
pub(crate) struct Node<V> {
    literal: Literals<V>,
    star: Option<Box<Node<V>>>,
    double_star: Option<Box<Node<V>>>,
    /// Segments needing a glob, keyed by their source text. Scanned in order: this is the
    /// one place where match cost grows with the number of *distinct* glob segments that
    /// share a parent (e.g. `a/x*`, `a/y*`, … under `a`).
    globs: Option<Globs<V>>,
    subs: Subscribers<V>,
}

/// Boxed: most nodes have none, and `None` costs 8 bytes instead of an empty `Vec`'s 24.
type Globs<V> = Box<Vec<(Glob, Node<V>)>>;

#[derive(Debug)]
// The map is boxed so that the common small case keeps the node small; wide nodes are few.
#[allow(clippy::box_collection)]
enum Literals<V> {
    Small(Vec<(SegKey, Node<V>)>),
    Large(Box<HashMap<SegKey, Node<V>, super::FastState>>),
}

impl<V> Default for Node<V> {
    fn default() -> Self {
        Node {
            literal: Literals::Small(Vec::new()),
            star: None,
            double_star: None,
            globs: None,
            subs: Subscribers::default(),
        }
    }
}

impl<V> Literals<V> {
    #[inline]
    fn get(&self, seg: &[u8]) -> Option<&Node<V>> {
        match self {
            Literals::Small(v) => v.iter().find(|(k, _)| k.as_bytes() == seg).map(|(_, n)| n),
            Literals::Large(m) => m.get(seg),
        }
    }

    fn get_mut(&mut self, seg: &[u8]) -> Option<&mut Node<V>> {
        match self {
            Literals::Small(v) => v
                .iter_mut()
                .find(|(k, _)| k.as_bytes() == seg)
                .map(|(_, n)| n),
            Literals::Large(m) => m.get_mut(seg),
        }
    }

    fn get_or_insert(&mut self, seg: &str) -> &mut Node<V> {
        if let Literals::Small(v) = self
            && v.len() >= SMALL_LITERALS
            && !v.iter().any(|(k, _)| k.as_bytes() == seg.as_bytes())
        {
            let map = v.drain(..).collect();
            *self = Literals::Large(Box::new(map));
        }
        match self {
            Literals::Small(v) => {
                let at = match v.iter().position(|(k, _)| k.as_bytes() == seg.as_bytes()) {
                    Some(at) => at,
                    None => {
                        v.push((Key::new(seg), Node::default()));
                        v.len() - 1
                    }
                };
                &mut v[at].1
            }
            Literals::Large(m) => m.entry(Key::new(seg)).or_default(),
        }
    }

    fn remove(&mut self, seg: &[u8]) {
        match self {
            Literals::Small(v) => {
                if let Some(at) = v.iter().position(|(k, _)| k.as_bytes() == seg) {
                    v.swap_remove(at);
                }
            }
            Literals::Large(m) => {
                m.remove(seg);
                if m.len() <= SMALL_LITERALS / 2 {
                    *self = Literals::Small(m.drain().collect());
                }
            }
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            Literals::Small(v) => v.is_empty(),
            Literals::Large(m) => m.is_empty(),
        }
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

impl<V: Eq + Hash> Node<V> {
    fn is_empty(&self) -> bool {
        self.subs.is_empty()
            && self.literal.is_empty()
            && self.star.is_none()
            && self.double_star.is_none()
            && self.globs.is_none()
    }

    pub(crate) fn insert(&mut self, segs: &[Segment], value: V) -> Change {
        let mut node = self;
        for seg in segs {
            node = match seg {
                Segment::Literal(s) => node.literal.get_or_insert(s),
                Segment::Star => node.star.get_or_insert_with(Box::default),
                Segment::DoubleStar => node.double_star.get_or_insert_with(Box::default),
                Segment::Glob(g) => {
                    let globs = node.globs.get_or_insert_with(Box::default);
                    let at = match globs.iter().position(|(x, _)| x.source() == g.source()) {
                        Some(at) => at,
                        None => {
                            globs.push((g.clone(), Node::default()));
                            globs.len() - 1
                        }
                    };
                    &mut globs[at].1
                }
            };
        }
        let was_empty = node.subs.is_empty();
        let pair = node.subs.insert(value);
        Change {
            pair,
            pattern: pair && was_empty,
        }
    }

    /// Removes `value` from the pattern `segs`, pruning nodes left empty.
    pub(crate) fn remove(&mut self, segs: &[Segment], value: &V) -> Change {
        let Some((seg, rest)) = segs.split_first() else {
            let pair = self.subs.remove(value);
            return Change {
                pair,
                pattern: pair && self.subs.is_empty(),
            };
        };
        match seg {
            Segment::Literal(s) => {
                let Some(child) = self.literal.get_mut(s.as_bytes()) else {
                    return NO_CHANGE;
                };
                let change = child.remove(rest, value);
                if child.is_empty() {
                    self.literal.remove(s.as_bytes());
                }
                change
            }
            Segment::Star => prune(&mut self.star, rest, value),
            Segment::DoubleStar => prune(&mut self.double_star, rest, value),
            Segment::Glob(g) => {
                let Some(globs) = &mut self.globs else {
                    return NO_CHANGE;
                };
                let Some(at) = globs.iter().position(|(x, _)| x.source() == g.source()) else {
                    return NO_CHANGE;
                };
                let child = &mut globs[at].1;
                let change = child.remove(rest, value);
                if child.is_empty() {
                    globs.swap_remove(at);
                    if globs.is_empty() {
                        self.globs = None;
                    }
                }
                change
            }
        }
    }
}

fn prune<V: Eq + Hash>(slot: &mut Option<Box<Node<V>>>, rest: &[Segment], value: &V) -> Change {
    let Some(child) = slot else { return NO_CHANGE };
    let change = child.remove(rest, value);
    if child.is_empty() {
        *slot = None;
    }
    change
}

/// For each `**` node entered during a walk: its address and the lowest topic position it
/// was entered at. Entering it at `i` covers every position from `i` on, so a later entry
/// at `j >= i` adds nothing. This keeps patterns like `**/a/**/a/**/b` linear instead of
/// exponential. The first few live on the stack: a walk allocates nothing.
struct Entered {
    len: usize,
    inline: [(usize, usize); 8],
    spill: Vec<(usize, usize)>,
}

impl Entered {
    /// Records entering node `me` at `from`; returns the end (exclusive) of the positions
    /// still to visit from `from`, or `None` if an earlier entry already covers them.
    fn enter(&mut self, me: usize, from: usize, topic_len: usize) -> Option<usize> {
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
struct Walk<'t, 'n, V, F> {
    topic: &'t [&'t str],
    system: bool,
    found: F,
    entered: Entered,
    _nodes: std::marker::PhantomData<&'n Node<V>>,
}

impl<'n, V: Eq + Hash> Node<V> {
    /// Calls `found` with the subscribers of every pattern matching `topic` (the topic's
    /// segments), stopping early if it breaks. `system`: the topic starts with `$`, so only
    /// edges whose segment starts with `$` may match.
    pub(crate) fn walk<F>(&'n self, topic: &[&str], system: bool, found: F) -> ControlFlow<()>
    where
        F: FnMut(&'n Subscribers<V>) -> ControlFlow<()>,
    {
        let mut w = Walk {
            topic,
            system,
            found,
            entered: Entered {
                len: 0,
                inline: [(0, 0); 8],
                spill: Vec::new(),
            },
            _nodes: std::marker::PhantomData,
        };
        self.visit(&mut w, 0, true)
    }

    fn visit<F>(&'n self, w: &mut Walk<'_, 'n, V, F>, i: usize, root: bool) -> ControlFlow<()>
    where
        F: FnMut(&'n Subscribers<V>) -> ControlFlow<()>,
    {
        // The `$` rule: at the root, a system topic may only take edges whose segment
        // starts with `$` (no `*`, no `**`, no glob like `?inbox`).
        let dollar_only = root && w.system;
        match w.topic.get(i) {
            None => {
                if !self.subs.is_empty() {
                    (w.found)(&self.subs)?;
                }
            }
            Some(seg) => {
                if let Some(child) = self.literal.get(seg.as_bytes()) {
                    child.visit(w, i + 1, false)?;
                }
                if let Some(child) = &self.star
                    && !dollar_only
                {
                    child.visit(w, i + 1, false)?;
                }
                if let Some(globs) = &self.globs {
                    for (glob, child) in globs.iter() {
                        if (!dollar_only || glob.source().starts_with('$')) && glob.matches(seg) {
                            child.visit(w, i + 1, false)?;
                        }
                    }
                }
            }
        }
        match &self.double_star {
            Some(ds) if !dollar_only => ds.enter(w, i),
            _ => ControlFlow::Continue(()),
        }
    }

    /// `self` is a `**` node reached at topic position `from`: the `**` may swallow
    /// `topic[from..j]` for every `j` up to the topic's end.
    fn enter<F>(&'n self, w: &mut Walk<'_, 'n, V, F>, from: usize) -> ControlFlow<()>
    where
        F: FnMut(&'n Subscribers<V>) -> ControlFlow<()>,
    {
        // The address only identifies the node; it is never turned back into a reference.
        let me = std::ptr::from_ref(self) as usize;
        let Some(upto) = w.entered.enter(me, from, w.topic.len()) else {
            return ControlFlow::Continue(());
        };
        for j in from..upto {
            self.visit(w, j, false)?;
        }
        ControlFlow::Continue(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_grow_into_a_map_and_back() {
        let mut root: Node<u32> = Node::default();
        let pats: Vec<Vec<Segment>> = (0..40)
            .map(|i| vec![Segment::Literal(format!("k{i}").into()), Segment::Star])
            .collect();
        for (i, p) in pats.iter().enumerate() {
            assert!(root.insert(p, i as u32).pair);
        }
        assert!(matches!(root.literal, Literals::Large(_)));
        for (i, p) in pats.iter().enumerate().skip(3) {
            assert!(root.remove(p, &(i as u32)).pair);
        }
        assert!(matches!(root.literal, Literals::Small(_)));
        let mut seen = Vec::new();
        let _ = root.walk(&["k1", "x"], false, |s| {
            seen.extend(s.iter().copied());
            ControlFlow::Continue(())
        });
        assert_eq!(seen, [1]);
    }

    #[test]
    fn node_stays_small() {
        assert!(std::mem::size_of::<Node<u64>>() <= 80);
    }
}
