//! Pattern containment: may a client subscribe to pattern P when it is allowed patterns
//! A₁…Aₙ? Only when every topic P can match is matched by some Aᵢ.
//!
//! Deciding this exactly for globs is expensive in general, so this is a *sound* but
//! incomplete decision procedure: when it says yes, P really is contained; when in doubt it
//! says no (the client gets `forbidden` and can subscribe to something narrower). Soundness
//! is property-tested against brute-force enumeration over a small alphabet
//! (`tests/containment_props.rs`).
//!
//! The procedure works on the same syntax the matcher runs (segments from
//! [`crate::topic::Pattern`], tokens from the router's glob parser):
//! - Across segments, P ⊆ A is a dynamic program like wildcard matching, with `**` of A
//!   absorbing any run of P's segments (including P's own `**`), while a `**` of P can only
//!   be absorbed by a `**` of A (it stands for arbitrarily many arbitrary segments).
//! - Within a segment, alternations are expanded first (bounded); then each alternative of P
//!   must be contained in one alternative of A, again by a wildcard-matching style program
//!   where A's `*` absorbs anything, `?` absorbs any one-character token, and a class absorbs
//!   a literal or a class that is its subset.
//! - The `$` rule of PROTOCOL.md §1: a system pattern only ever matches system topics and a
//!   non-system pattern only non-system ones, so P and A must agree on it.
//! - Unions: if no single Aᵢ contains P, P's alternations are expanded across segments and
//!   each expansion must be contained in some Aᵢ (so `chat/{a,b}` is allowed by `chat/a`
//!   plus `chat/b`).
//!
//! Every check runs under a work budget; running out means "no". A hostile client sending
//! huge patterns gets a quick refusal, never a CPU-bound server.

use crate::topic::Pattern;
use crate::topic::glob::{Glob, Tok};
use crate::topic::segment::Segment;

/// Most alternatives one segment (or one whole pattern, across segments) expands into.
const MAX_EXPANSIONS: usize = 256;
/// Dynamic-programming cells one containment question may fill.
const BUDGET: usize = 4_000_000;

/// Highest Unicode scalar value.
const MAX_CHAR: u32 = 0x10_FFFF;

/// A set of characters that may appear in a topic segment, as sorted, disjoint,
/// non-adjacent inclusive ranges. `/` and the surrogate range are never members (no
/// segment holds them), so that set comparisons are about real segment characters.
#[derive(Clone, Debug, PartialEq, Eq)]
struct CharSet(Vec<(u32, u32)>);

impl CharSet {
    fn from_ranges(ranges: &[(char, char)], negated: bool) -> CharSet {
        let mut v: Vec<(u32, u32)> = ranges.iter().map(|&(a, b)| (a as u32, b as u32)).collect();
        v.sort_unstable();
        let mut merged: Vec<(u32, u32)> = Vec::with_capacity(v.len());
        for (lo, hi) in v {
            match merged.last_mut() {
                Some(last) if lo <= last.1.saturating_add(1) => last.1 = last.1.max(hi),
                _ => merged.push((lo, hi)),
            }
        }
        let set = if negated {
            let mut out = Vec::with_capacity(merged.len() + 1);
            let mut next = 0u32;
            for (lo, hi) in merged {
                if lo > next {
                    out.push((next, lo - 1));
                }
                next = hi.saturating_add(1);
            }
            if next <= MAX_CHAR {
                out.push((next, MAX_CHAR));
            }
            out
        } else {
            merged
        };
        CharSet(set)
            .without('/' as u32, '/' as u32)
            .without(0xD800, 0xDFFF)
    }

    fn full() -> CharSet {
        CharSet::from_ranges(&[], true)
    }

    fn without(self, lo: u32, hi: u32) -> CharSet {
        let mut out = Vec::with_capacity(self.0.len() + 1);
        for (a, b) in self.0 {
            if b < lo || a > hi {
                out.push((a, b));
                continue;
            }
            if a < lo {
                out.push((a, lo - 1));
            }
            if b > hi {
                out.push((hi + 1, b));
            }
        }
        CharSet(out)
    }

    fn contains(&self, c: u32) -> bool {
        self.0.iter().any(|&(lo, hi)| lo <= c && c <= hi)
    }

    /// Whether every member of `self` is in `other`.
    fn subset_of(&self, other: &CharSet) -> bool {
        // Both are sorted and merged, so each range of `self` must sit inside one range
        // of `other`.
        self.0
            .iter()
            .all(|&(lo, hi)| other.0.iter().any(|&(a, b)| a <= lo && hi <= b))
    }

    /// Number of members.
    fn len(&self) -> u32 {
        self.0.iter().map(|&(lo, hi)| hi - lo + 1).sum()
    }

    /// The members (call only on small sets).
    fn chars(&self) -> impl Iterator<Item = char> + '_ {
        self.0
            .iter()
            .flat_map(|&(lo, hi)| (lo..=hi).filter_map(char::from_u32))
    }

    fn is_single(&self, c: u32) -> bool {
        self.0 == [(c, c)]
    }
}

/// One alternation-free token.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Atom {
    Lit(char),
    /// `?`
    Any,
    /// `*` inside a segment.
    Star,
    Set(CharSet),
}

/// A segment for containment: `**`, or the alternatives one segment can spell.
#[derive(Clone, Debug)]
enum Seg {
    Double,
    One(Vec<Vec<Atom>>),
}

/// A pattern prepared for containment questions.
#[derive(Clone, Debug)]
pub(crate) struct Shape {
    system: bool,
    segs: Vec<Seg>,
}

impl Shape {
    /// `None` when the pattern spells more alternatives than the bound: such a pattern is
    /// never used to grant anything and is never granted.
    pub(crate) fn of(p: &Pattern) -> Option<Shape> {
        let mut segs = Vec::with_capacity(p.segments().len());
        for s in p.segments() {
            segs.push(match s {
                Segment::DoubleStar => Seg::Double,
                Segment::Star => Seg::One(vec![vec![Atom::Star]]),
                Segment::Literal(l) => Seg::One(vec![l.chars().map(Atom::Lit).collect()]),
                Segment::Glob(g) => {
                    let toks = Glob::tokens(g.source()).ok()?;
                    let mut alts = vec![Vec::new()];
                    if !expand(&toks, &mut alts) {
                        return None;
                    }
                    // An empty alternative matches only the empty string, which is never
                    // a segment: dropping it changes nothing that can be matched.
                    alts.retain(|a| !a.is_empty());
                    Seg::One(alts)
                }
            });
        }
        Some(Shape {
            system: p.is_system(),
            segs,
        })
    }

    /// The cross-segment expansions of this shape (each segment down to one alternative),
    /// or `None` past the bound.
    fn expansions(&self) -> Option<Vec<Shape>> {
        let mut out = vec![Vec::new()];
        for seg in &self.segs {
            match seg {
                Seg::Double => out
                    .iter_mut()
                    .for_each(|v: &mut Vec<Seg>| v.push(Seg::Double)),
                Seg::One(alts) => {
                    if out.len().saturating_mul(alts.len()) > MAX_EXPANSIONS {
                        return None;
                    }
                    let mut next = Vec::with_capacity(out.len() * alts.len());
                    for prefix in &out {
                        for alt in alts {
                            let mut v = prefix.clone();
                            v.push(Seg::One(vec![alt.clone()]));
                            next.push(v);
                        }
                    }
                    out = next;
                }
            }
        }
        Some(
            out.into_iter()
                .map(|segs| Shape {
                    system: self.system,
                    segs,
                })
                .collect(),
        )
    }

    fn has_alternatives(&self) -> bool {
        self.segs
            .iter()
            .any(|s| matches!(s, Seg::One(alts) if alts.len() > 1))
    }
}

/// Appends the expansion of `toks` to every prefix in `alts`. False past the bound.
fn expand(toks: &[Tok], alts: &mut Vec<Vec<Atom>>) -> bool {
    for t in toks {
        match t {
            Tok::Lit(c) => alts.iter_mut().for_each(|a| a.push(Atom::Lit(*c))),
            Tok::Any => alts.iter_mut().for_each(|a| a.push(Atom::Any)),
            Tok::Star => alts.iter_mut().for_each(|a| {
                // `**` inside a segment is refused by the parser; two stars in a row
                // through an alternation (`*{*,a}`) mean the same as one.
                if a.last() != Some(&Atom::Star) {
                    a.push(Atom::Star)
                }
            }),
            Tok::Class(c) => {
                let set = CharSet::from_ranges(&c.ranges, c.negated);
                alts.iter_mut().for_each(|a| a.push(Atom::Set(set.clone())));
            }
            Tok::Alt(branches) => {
                let mut next = Vec::new();
                for prefix in alts.iter() {
                    for b in branches {
                        let mut sub = vec![prefix.clone()];
                        if !expand(b, &mut sub) {
                            return false;
                        }
                        next.extend(sub);
                        if next.len() > MAX_EXPANSIONS {
                            return false;
                        }
                    }
                }
                *alts = next;
            }
        }
    }
    true
}

/// Whether every topic `p` can match is matched by one of `grants` (soundly; see the
/// module documentation).
pub(crate) fn contained(p: &Shape, grants: &[Shape]) -> bool {
    let mut budget = BUDGET;
    if grants.iter().any(|g| within(p, g, &mut budget)) {
        return true;
    }
    if !p.has_alternatives() {
        return false;
    }
    let Some(parts) = p.expansions() else {
        return false;
    };
    parts
        .iter()
        .all(|part| grants.iter().any(|g| within(part, g, &mut budget)))
}

/// P ⊆ A for one grant, over segments.
fn within(p: &Shape, a: &Shape, budget: &mut usize) -> bool {
    if p.system != a.system {
        return false;
    }
    let (n, m) = (p.segs.len(), a.segs.len());
    let cells = (n + 1) * (m + 1);
    if cells > *budget {
        *budget = 0;
        return false;
    }
    *budget -= cells;
    // dp[i][j]: p.segs[i..] ⊆ a.segs[j..]
    let mut dp = vec![false; cells];
    let at = |i: usize, j: usize| i * (m + 1) + j;
    dp[at(n, m)] = true;
    for i in (0..=n).rev() {
        for j in (0..m).rev() {
            let v = match &a.segs[j] {
                Seg::Double => dp[at(i, j + 1)] || (i < n && dp[at(i + 1, j)]),
                Seg::One(a_alts) => {
                    i < n
                        && dp[at(i + 1, j + 1)]
                        && match &p.segs[i] {
                            Seg::Double => false,
                            Seg::One(p_alts) => {
                                p_alts.iter().all(|v| covered(v, a_alts, SPLITS, budget))
                            }
                        }
                }
            };
            dp[at(i, j)] = v;
        }
    }
    dp[at(0, 0)]
}

/// Character classes of P at most this large may be split into their characters when no
/// single alternative of A contains them (`[ab]` within `{a,b}`).
const MAX_SPLIT_CLASS: u32 = 16;
/// Classes split per alternative, at most.
const SPLITS: u32 = 3;

/// v ⊆ w₁ ∪ w₂ ∪ …: one wᵢ containing v, or else v's first small class split into its
/// characters, each variant covered in turn.
fn covered(v: &[Atom], ws: &[Vec<Atom>], splits: u32, budget: &mut usize) -> bool {
    if ws.iter().any(|w| glob_within(v, w, budget)) {
        return true;
    }
    if splits == 0 || *budget == 0 {
        return false;
    }
    let Some((at, set)) = v.iter().enumerate().find_map(|(i, a)| match a {
        Atom::Set(s) if s.len() <= MAX_SPLIT_CLASS => Some((i, s)),
        _ => None,
    }) else {
        return false;
    };
    set.chars().all(|c| {
        let mut variant = v.to_vec();
        variant[at] = Atom::Lit(c);
        covered(&variant, ws, splits - 1, budget)
    })
}

/// v ⊆ w for alternation-free segment globs.
fn glob_within(v: &[Atom], w: &[Atom], budget: &mut usize) -> bool {
    let (n, m) = (v.len(), w.len());
    let cells = (n + 1) * (m + 1);
    if cells > *budget {
        *budget = 0;
        return false;
    }
    *budget -= cells;
    let mut dp = vec![false; cells];
    let at = |i: usize, j: usize| i * (m + 1) + j;
    dp[at(n, m)] = true;
    for i in (0..=n).rev() {
        for j in (0..m).rev() {
            let r = match &w[j] {
                Atom::Star => dp[at(i, j + 1)] || (i < n && dp[at(i + 1, j)]),
                wj => i < n && dp[at(i + 1, j + 1)] && atom_within(&v[i], wj),
            };
            dp[at(i, j)] = r;
        }
    }
    dp[at(0, 0)]
}

/// Whether every character token `a` matches is matched by the one-character token `b`.
fn atom_within(a: &Atom, b: &Atom) -> bool {
    match (a, b) {
        (Atom::Star, _) => false,
        (_, Atom::Any) => true,
        (Atom::Lit(x), Atom::Lit(y)) => x == y,
        (Atom::Set(s), Atom::Lit(y)) => s.is_single(*y as u32),
        (Atom::Any, Atom::Lit(_)) => false,
        (Atom::Lit(x), Atom::Set(s)) => s.contains(*x as u32),
        (Atom::Set(x), Atom::Set(s)) => x.subset_of(s),
        (Atom::Any, Atom::Set(s)) => CharSet::full().subset_of(s),
        (_, Atom::Star) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(p: &str, grants: &[&str]) -> bool {
        let p = Shape::of(&Pattern::parse(p).unwrap()).unwrap();
        let g: Vec<Shape> = grants
            .iter()
            .map(|g| Shape::of(&Pattern::parse(g).unwrap()).unwrap())
            .collect();
        contained(&p, &g)
    }

    #[test]
    fn accepts_what_is_inside() {
        for (p, g) in [
            ("chat/general", &["chat/*"][..]),
            ("chat/general", &["chat/**"]),
            ("chat/**", &["chat/**"]),
            ("chat/a/**", &["chat/**"]),
            ("chat/*/x", &["chat/**"]),
            ("chat/{a,b}", &["chat/a", "chat/b"]),
            ("chat/{a,b}", &["chat/[ab]"]),
            ("chat/[ab]", &["chat/{a,b}"]),
            ("chat/a?", &["chat/a*"]),
            ("chat/a[xy]z", &["chat/a?z"]),
            ("**", &["**"]),
            ("a/**/b", &["a/**"]),
            ("$inbox/x", &["$inbox/*"]),
            ("orders/{eu,us}/**", &["orders/eu/**", "orders/us/**"]),
            ("x/[!a]", &["x/*"]),
        ] {
            assert!(ok(p, g), "{p} should be within {g:?}");
        }
    }

    #[test]
    fn refuses_escalation() {
        for (p, g) in [
            ("chat/**", &["chat/*"][..]),
            ("**", &["chat/**"]),
            ("chat/*", &["chat/a"]),
            ("chat/{a,b}", &["chat/a"]),
            ("chat/[a-c]", &["chat/[ab]"]),
            ("chat/[!a]", &["chat/[b-z]"]),
            ("chat/?", &["chat/[a-z]"]),
            ("$inbox/x", &["**"]),
            ("$sys/**", &["*/**"]),
            ("chat", &["$chat"]),
            ("a/**/b", &["a/*/b"]),
            ("a*", &["a?"]),
            ("*/x", &["a/x", "b/x"]),
        ] {
            assert!(!ok(p, g), "{p} must not be within {g:?}");
        }
    }

    #[test]
    fn char_sets() {
        let s = CharSet::from_ranges(&[('a', 'c'), ('b', 'f')], false);
        assert_eq!(s.0, vec![('a' as u32, 'f' as u32)]);
        let n = CharSet::from_ranges(&[('a', 'a')], true);
        assert!(!n.contains('a' as u32) && !n.contains('/' as u32) && n.contains('b' as u32));
        assert!(CharSet::from_ranges(&[('b', 'c')], false).subset_of(&s));
        assert!(!n.subset_of(&s));
    }

    #[test]
    fn budget_bounds_hostile_patterns() {
        let p = format!("{}/x", vec!["*?"; 60].concat());
        let g = vec!["?*"; 60].concat() + "/x";
        let t = std::time::Instant::now();
        let _ = ok(&p[..p.len().min(250)], &[&g[..g.len().min(250)]]);
        assert!(t.elapsed() < std::time::Duration::from_secs(2));
    }
}
