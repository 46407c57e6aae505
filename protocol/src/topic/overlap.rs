//! Whether two patterns can match a common topic: a proxy route (`[[proxy.subscribe]]`)
//! applies to every `sub` that could receive one of its topics, not only to those it
//! contains (`*/room1` overlaps `chat/**`).
//!
//! Conservative: `true` unless the patterns are provably disjoint. Two partial globs in one
//! position (`a*` against `*b`) count as overlapping without a character-level product: a
//! wrong `true` costs one call to the backend, a wrong `false` would let a subscription past
//! it.

use super::{Pattern, Segment};

impl Pattern {
    /// See the module comment.
    pub fn may_overlap(&self, other: &Pattern) -> bool {
        if self.is_system() != other.is_system() {
            return false;
        }
        let (a, b) = (self.segments(), other.segments());
        // seen[i][j]: the suffixes a[i..] and b[j..] were already found disjoint.
        let mut seen = vec![false; (a.len() + 1) * (b.len() + 1)];
        overlap(a, b, 0, 0, &mut seen)
    }
}

fn overlap(a: &[Segment], b: &[Segment], i: usize, j: usize, seen: &mut [bool]) -> bool {
    let at = i * (b.len() + 1) + j;
    if seen[at] {
        return false;
    }
    let found = match (a.get(i), b.get(j)) {
        (None, None) => true,
        (Some(Segment::DoubleStar), _) => {
            overlap(a, b, i + 1, j, seen) || (j < b.len() && overlap(a, b, i, j + 1, seen))
        }
        (_, Some(Segment::DoubleStar)) => {
            overlap(a, b, i, j + 1, seen) || (i < a.len() && overlap(a, b, i + 1, j, seen))
        }
        (None, Some(_)) | (Some(_), None) => false,
        (Some(x), Some(y)) => one(x, y) && overlap(a, b, i + 1, j + 1, seen),
    };
    if !found {
        seen[at] = true;
    }
    found
}

/// Whether two single-segment tokens can match one segment.
fn one(x: &Segment, y: &Segment) -> bool {
    match (x, y) {
        (Segment::Literal(l), Segment::Literal(m)) => l == m,
        (Segment::Literal(l), other) | (other, Segment::Literal(l)) => other.matches_one(l),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Pattern {
        Pattern::parse(s).unwrap()
    }

    #[test]
    fn overlaps() {
        let yes = [
            ("chat/**", "chat/room1"),
            ("chat/**", "*/room1"),
            ("chat/**", "**"),
            ("chat/**", "chat"),
            ("a/**/z", "a/b/c/z"),
            ("a/*/z", "**/z"),
            ("chat/room-*", "chat/*-1"),
            ("chat/{a,b}", "chat/b"),
            ("$dlq/**", "$dlq/x"),
        ];
        for (x, y) in yes {
            assert!(p(x).may_overlap(&p(y)), "{x} {y}");
            assert!(p(y).may_overlap(&p(x)), "{y} {x}");
        }
        let no = [
            ("chat/**", "news/**"),
            ("chat/*", "chat/a/b"),
            ("chat/{a,b}", "chat/c"),
            ("a/*/z", "a/z"),
            ("**", "$dlq/x"),
            ("chat/room-*", "chat/lobby"),
        ];
        for (x, y) in no {
            assert!(!p(x).may_overlap(&p(y)), "{x} {y}");
            assert!(!p(y).may_overlap(&p(x)), "{y} {x}");
        }
    }
}
