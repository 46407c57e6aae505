//! The segment trie holding wildcard patterns, after nats-server's sublist: one level per
//! pattern segment, so a match walks the topic's segments and never scans subscriptions.

use std::collections::HashMap;
use std::hash::Hash;
use std::ops::ControlFlow;

use super::glob::Glob;
use super::segment::Segment;
use super::subs::Subscribers;

/// One trie level. The path from the root spells a pattern, so each node's `subs` are the
/// subscribers of exactly one pattern.
#[derive(Debug)]
pub(crate) struct Node<V> {
    literal: HashMap<Box<str>, Node<V>, super::FastState>,
    star: Option<Box<Node<V>>>,
    double_star: Option<Box<Node<V>>>,
    /// Segments needing a glob, keyed by their source text. Scanned in order: this is the
    /// one place where match cost grows with the number of *distinct* glob segments that
    /// share a parent (e.g. `a/x*`, `a/y*`, … under `a`).
    globs: Vec<(Glob, Node<V>)>,
    subs: Subscribers<V>,
}

impl<V> Default for Node<V> {
    fn default() -> Self {
        Node {
            literal: HashMap::default(),
            star: None,
            double_star: None,
            globs: Vec::new(),
            subs: Subscribers::default(),
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
            && self.globs.is_empty()
    }

    pub(crate) fn insert(&mut self, segs: &[Segment], value: V) -> Change {
        let mut node = self;
        for seg in segs {
            node = match seg {
                Segment::Literal(s) => {
                    if !node.literal.contains_key(&**s) {
                        node.literal.insert(s.clone(), Node::default());
                    }
                    match node.literal.get_mut(&**s) {
                        Some(n) => n,
                        None => return NO_CHANGE,
                    }
                }
                Segment::Star => node.star.get_or_insert_with(Box::default),
                Segment::DoubleStar => node.double_star.get_or_insert_with(Box::default),
                Segment::Glob(g) => {
                    let at = match node
                        .globs
                        .iter()
                        .position(|(x, _)| x.source() == g.source())
                    {
                        Some(at) => at,
                        None => {
                            node.globs.push((g.clone(), Node::default()));
                            node.globs.len() - 1
                        }
                    };
                    &mut node.globs[at].1
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
                let Some(child) = self.literal.get_mut(&**s) else {
                    return NO_CHANGE;
                };
                let change = child.remove(rest, value);
                if child.is_empty() {
                    self.literal.remove(&**s);
                }
                change
            }
            Segment::Star => prune(&mut self.star, rest, value),
            Segment::DoubleStar => prune(&mut self.double_star, rest, value),
            Segment::Glob(g) => {
                let Some(at) = self
                    .globs
                    .iter()
                    .position(|(x, _)| x.source() == g.source())
                else {
                    return NO_CHANGE;
                };
                let child = &mut self.globs[at].1;
                let change = child.remove(rest, value);
                if child.is_empty() {
                    self.globs.swap_remove(at);
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

/// State of one match walk.
struct Walk<'t, 'n, V, F> {
    topic: &'t [&'t str],
    system: bool,
    found: F,
    /// For each `**` node entered: the lowest topic position it was entered at. Entering it
    /// at `i` covers every position from `i` on, so a later entry at `j >= i` adds nothing.
    /// This keeps patterns like `**/a/**/a/**/b` linear instead of exponential.
    entered: Vec<(*const Node<V>, usize)>,
    _nodes: std::marker::PhantomData<&'n Node<V>>,
}

impl<'n, V: Eq + Hash> Node<V> {
    /// Calls `found` with the subscribers of every pattern matching `topic` (the topic's
    /// segments), each pattern at most once; stops early when `found` breaks. `system` is
    /// whether the topic is a system topic: then only patterns whose first segment starts
    /// with `$` may match.
    pub(crate) fn walk<F>(&'n self, topic: &[&str], system: bool, found: F) -> ControlFlow<()>
    where
        F: FnMut(&'n Subscribers<V>) -> ControlFlow<()>,
    {
        let mut w = Walk {
            topic,
            system,
            found,
            entered: Vec::new(),
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
                if let Some(child) = self.literal.get(*seg) {
                    child.visit(w, i + 1, false)?;
                }
                if let Some(child) = &self.star
                    && !dollar_only
                {
                    child.visit(w, i + 1, false)?;
                }
                for (glob, child) in &self.globs {
                    if (!dollar_only || glob.source().starts_with('$')) && glob.matches(seg) {
                        child.visit(w, i + 1, false)?;
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
        let me: *const Node<V> = self;
        let upto = match w.entered.iter_mut().find(|(p, _)| *p == me) {
            Some((_, lowest)) if *lowest <= from => return ControlFlow::Continue(()),
            Some((_, lowest)) => std::mem::replace(lowest, from),
            None => {
                w.entered.push((me, from));
                w.topic.len() + 1
            }
        };
        for j in from..upto {
            self.visit(w, j, false)?;
        }
        ControlFlow::Continue(())
    }
}
