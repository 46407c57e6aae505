//! One `/`-separated part of a compiled pattern, and matching a pattern's segments against a
//! topic's segments.
//!
//! Public for the server, whose trie is keyed by these; a client only ever needs
//! [`Pattern`](super::Pattern).

use super::error::PatternError;
use super::glob::Glob;

/// A compiled pattern segment: the key of one edge in the router's trie.
#[derive(Clone, Debug)]
pub enum Segment {
    /// No wildcard: matches exactly this segment.
    Literal(Box<str>),
    /// `*` as the whole segment: any one segment.
    Star,
    /// `**` as the whole segment: zero or more complete segments.
    DoubleStar,
    /// Anything else with wildcards (`?`, classes, alternation, partial `*` such as `ab*`):
    /// matches one segment.
    Glob(Glob),
}

/// Compiles one non-empty segment `part` of `pattern`; `rest` is what follows it after the
/// `/`, used to explain a `[`/`{` left open (it spans a `/` if `rest` closes it).
pub fn parse(part: &str, rest: &str, pattern: &str) -> Result<Segment, PatternError> {
    match part {
        "*" => return Ok(Segment::Star),
        "**" => return Ok(Segment::DoubleStar),
        _ => {}
    }
    if !part.contains(['*', '?', '[', ']', '{', '}', ',', '#', '+']) {
        return Ok(Segment::Literal(part.into()));
    }
    Glob::compile(part, rest, pattern).map(Segment::Glob)
}

impl Segment {
    /// Whether this single-segment matcher accepts `seg`. `DoubleStar` is handled by the
    /// callers (it spans a variable number of segments); here it accepts any one segment.
    #[inline]
    pub fn matches_one(&self, seg: &str) -> bool {
        match self {
            Segment::Literal(l) => **l == *seg,
            Segment::Star | Segment::DoubleStar => true,
            Segment::Glob(g) => g.matches(seg),
        }
    }
}

/// Matches compiled pattern segments against topic segments. `**` behaves like `*` does in
/// classic string wildcard matching, over segments instead of characters; every other
/// segment consumes exactly one topic segment. The greedy match with backtracking to the
/// last `**` is therefore exact and takes O(pattern × topic) steps at worst, whatever the
/// number of `**`.
#[inline]
pub fn match_segments(pat: &[Segment], topic: &[&str]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while t < topic.len() {
        match pat.get(p) {
            Some(Segment::DoubleStar) => {
                backtrack = Some((p, t));
                p += 1;
            }
            Some(seg) if seg.matches_one(topic[t]) => {
                p += 1;
                t += 1;
            }
            _ => match backtrack {
                Some((bp, bt)) => {
                    backtrack = Some((bp, bt + 1));
                    p = bp + 1;
                    t = bt + 1;
                }
                None => return false,
            },
        }
    }
    pat[p.min(pat.len())..]
        .iter()
        .all(|s| matches!(s, Segment::DoubleStar))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segs(p: &str) -> Vec<Segment> {
        let mut out = Vec::new();
        for part in p.split('/') {
            out.push(parse(part, "", p).expect("valid"));
        }
        out
    }

    fn m(p: &str, t: &str) -> bool {
        let topic: Vec<&str> = t.split('/').collect();
        match_segments(&segs(p), &topic)
    }

    #[test]
    fn double_star_positions() {
        assert!(m("**", "a"));
        assert!(m("**", "a/b/c"));
        assert!(m("a/**", "a"));
        assert!(m("a/**", "a/b/c"));
        assert!(!m("a/**", "b/a"));
        assert!(m("**/z", "z"));
        assert!(m("**/z", "a/b/z"));
        assert!(!m("**/z", "a/z/b"));
        assert!(m("a/**/z", "a/z"));
        assert!(m("a/**/z", "a/b/c/z"));
        assert!(!m("a/**/z", "a/b/c"));
        assert!(m("a/**/b/**/c", "a/x/b/y/b/c"));
        assert!(m("**/**/**", "a"));
        assert!(m("a/**/**", "a"));
        assert!(!m("a/*/**", "a"));
        assert!(m("a/*/**", "a/b"));
    }

    #[test]
    fn many_double_stars_stay_fast() {
        let pat = vec!["**/a"; 16].join("/") + "/b";
        let topic = vec!["a"; 128].join("/");
        assert!(!m(&pat, &topic));
    }
}
