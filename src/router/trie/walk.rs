//! The match walk: from the root along the topic's segments, prefetching the levels ahead,
//! into `*`, `**` and glob children where the node's flags say they exist.

use std::hash::Hash;
use std::ops::ControlFlow;

use super::node::{DOUBLE_STAR, Kind, Node, STAR};
use super::{
    GLOB_PREFETCH, NEAR_SLOTS, Trie, child_hash, child_hash_of, edge_hash, matches_source,
};
use crate::router::subs::Subscribers;

/// Topics with up to this many segments have their segment hashes on the stack.
const STACK_SEGMENTS: usize = 16;

/// Levels of the topic's literal path a walk prefetches before reading any node.
const PATH_PREFETCH: usize = 2;

impl<V> Trie<V> {
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
