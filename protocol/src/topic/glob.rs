//! Single-segment glob matching: `?`, `[..]`, `{..}` and partial `*` inside one segment.
//!
//! Why not `globset::GlobMatcher` per segment: globset compiles to a byte-oriented regex
//! (`(?-u)`), so `?` matches one *byte* (`caf?` does not match `café`) and a class holding a
//! non-ASCII character never matches it (`[é]` does not match `é`). PROTOCOL.md §1 says
//! "one character". We follow globset's *syntax* exactly (classes, ranges, `!`/`^`
//! negation, a leading `]`, nested and empty alternatives) and match by `char`. The property
//! tests check this engine against globset on ASCII input, and on non-ASCII input through a
//! renaming of the alphabet.
//!
//! Matching is a bit-parallel simulation of a Thompson NFA: linear in the segment length
//! times the pattern size, with no backtracking blow-up (`*a*a*a*b` is safe) and no heap
//! allocation. The common shapes (`ab*`, `*ab`, `a*b*c`, `{x,y,z}`) skip the NFA.
//!
//! Public for the server (its trie keys glob edges by source text, its permission checks read
//! [`Tok`]s); a client only ever needs [`Pattern`](super::Pattern).

use super::error::PatternError;

/// A compiled glob for one segment, with the source text it came from.
#[derive(Clone, Debug)]
pub struct Glob {
    src: Box<str>,
    matcher: Matcher,
}

#[derive(Clone, Debug)]
enum Matcher {
    /// Only literals and `*`: the literal pieces between the stars (at least two pieces).
    Stars(Box<[Box<str>]>),
    /// A whole-segment alternation of literals: `{general,random}`.
    OneOf(Box<[Box<str>]>),
    /// Everything else.
    Nfa(Box<[Inst]>),
}

#[derive(Clone, Debug)]
pub struct Class {
    pub negated: bool,
    pub ranges: Box<[(char, char)]>,
}

impl Class {
    fn contains(&self, c: char) -> bool {
        self.negated != self.ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi)
    }
}

/// One parsed token of a segment glob (also read by the server's `auth::contain`).
#[derive(Clone, Debug)]
pub enum Tok {
    Lit(char),
    Any,
    Star,
    Class(Class),
    Alt(Vec<Vec<Tok>>),
}

#[derive(Clone, Debug)]
enum Inst {
    Char(char),
    Any,
    Class(Class),
    Split(u16, u16),
    Jmp(u16),
    Match,
}

/// Each source character yields at most 3 instructions (`*`), plus the final `Match`.
const MAX_INSTS: usize = 3 * super::error::MAX_PATTERN_BYTES + 1;
const WORDS: usize = MAX_INSTS.div_ceil(64);

impl Glob {
    /// Compiles segment `seg`; `rest` (the pattern after this segment) and `pattern` only
    /// improve error messages.
    pub fn compile(seg: &str, rest: &str, pattern: &str) -> Result<Glob, PatternError> {
        let mut p = Parser {
            seg,
            rest,
            pattern,
            chars: seg.chars().peekable(),
        };
        let (toks, _) = p.sequence(0)?;
        let matcher = classify(&toks).unwrap_or_else(|| {
            let mut prog = Vec::new();
            emit(&toks, &mut prog);
            prog.push(Inst::Match);
            Matcher::Nfa(prog.into())
        });
        if let Matcher::Nfa(prog) = &matcher
            && prog.len() > MAX_INSTS
        {
            // Unreachable given the byte limit; refuse rather than mis-match.
            return Err(PatternError::TooLong { len: seg.len() });
        }
        Ok(Glob {
            src: seg.into(),
            matcher,
        })
    }

    #[inline]
    pub fn source(&self) -> &str {
        &self.src
    }

    /// The token tree of a segment, exactly as [`Glob::compile`] parses it: the permission
    /// containment check reasons over the same syntax the matcher runs.
    pub fn tokens(seg: &str) -> Result<Vec<Tok>, PatternError> {
        let mut p = Parser {
            seg,
            rest: "",
            pattern: seg,
            chars: seg.chars().peekable(),
        };
        p.sequence(0).map(|(toks, _)| toks)
    }

    #[inline]
    pub fn matches(&self, s: &str) -> bool {
        match &self.matcher {
            Matcher::Stars(pieces) => match pieces.as_ref() {
                [first, middle @ .., last] => {
                    match_stars(first, middle.iter().map(|p| &**p), last, s)
                }
                _ => false,
            },
            Matcher::OneOf(alts) => alts.iter().any(|a| **a == *s),
            Matcher::Nfa(prog) => run_nfa(prog, s),
        }
    }
}

fn lits(toks: &[Tok]) -> Option<String> {
    toks.iter()
        .map(|t| if let Tok::Lit(c) = t { Some(*c) } else { None })
        .collect()
}

fn classify(toks: &[Tok]) -> Option<Matcher> {
    if let [Tok::Alt(branches)] = toks {
        let alts: Option<Vec<Box<str>>> = branches
            .iter()
            .map(|b| lits(b).map(String::into_boxed_str))
            .collect();
        return alts.map(|a| Matcher::OneOf(a.into()));
    }
    let mut pieces = vec![String::new()];
    for t in toks {
        match t {
            Tok::Lit(c) => pieces.last_mut()?.push(*c),
            Tok::Star => pieces.push(String::new()),
            _ => return None,
        }
    }
    (pieces.len() >= 2).then(|| Matcher::Stars(pieces.into_iter().map(Into::into).collect()))
}

/// Matches `s` against a glob given by its source text, without the compiled form, for the
/// two shapes most globs have: literals and `*` (`ab*`, `*.json`, `a*b`), and a whole-segment
/// alternation of literals (`{eu,us}`). `None` for anything else (`?`, classes, escapes,
/// nested or partial alternation): the caller uses the compiled [`Glob`]. Why: the router
/// keeps a glob's source text inline in its index, so these need no pointer to follow.
#[inline]
pub fn matches_source(src: &str, s: &str) -> Option<bool> {
    // One pass over the bytes classifies the source (a match runs this for every glob child
    // it meets; `str::contains` with a set of chars cost several times more). Every byte
    // tested is ASCII, and UTF-8 never uses ASCII bytes inside a multi-byte character, so
    // this sees exactly the chars a char-by-char scan would.
    let other = |b: u8| matches!(b, b'?' | b'[' | b']' | b'{' | b'}' | b'\\' | b'#' | b'+');
    if let [b'{', inner @ .., b'}'] = src.as_bytes() {
        if inner.iter().any(|&b| b == b'*' || other(b)) {
            return None;
        }
        return Some(src[1..src.len() - 1].split(',').any(|alt| alt == s));
    }
    let (mut first_star, mut last_star) = (None, 0);
    for (i, &b) in src.as_bytes().iter().enumerate() {
        if b == b'*' {
            first_star.get_or_insert(i);
            last_star = i;
        } else if b == b',' || other(b) {
            return None;
        }
    }
    let first_star = first_star?;
    let middle = src
        .get(first_star + 1..last_star)
        .into_iter()
        .flat_map(|m| m.split('*'));
    Some(match_stars(
        &src[..first_star],
        middle,
        &src[last_star + 1..],
        s,
    ))
}

/// Pieces separated by `*`: `first` must be a prefix, `last` a suffix, and the `middle` ones
/// appear in order in between. Taking the leftmost occurrence of each middle piece is
/// optimal, so this is exact.
fn match_stars<'p>(
    first: &str,
    middle: impl IntoIterator<Item = &'p str>,
    last: &str,
    s: &str,
) -> bool {
    let Some(mut rest) = s.strip_prefix(first) else {
        return false;
    };
    for piece in middle {
        match rest.find(piece) {
            Some(at) => rest = &rest[at + piece.len()..],
            None => return false,
        }
    }
    rest.ends_with(last)
}

fn emit(toks: &[Tok], prog: &mut Vec<Inst>) {
    for t in toks {
        match t {
            Tok::Lit(c) => prog.push(Inst::Char(*c)),
            Tok::Any => prog.push(Inst::Any),
            Tok::Class(c) => prog.push(Inst::Class(c.clone())),
            Tok::Star => {
                let at = prog.len() as u16;
                prog.push(Inst::Split(at + 1, at + 3));
                prog.push(Inst::Any);
                prog.push(Inst::Jmp(at));
            }
            Tok::Alt(branches) => {
                let mut jumps = Vec::new();
                for (i, b) in branches.iter().enumerate() {
                    let last = i + 1 == branches.len();
                    let split = prog.len();
                    if !last {
                        prog.push(Inst::Split(split as u16 + 1, 0));
                    }
                    emit(b, prog);
                    if !last {
                        jumps.push(prog.len());
                        prog.push(Inst::Jmp(0));
                        let next = prog.len() as u16;
                        if let Some(Inst::Split(_, alt)) = prog.get_mut(split) {
                            *alt = next;
                        }
                    }
                }
                let end = prog.len() as u16;
                for j in jumps {
                    if let Some(Inst::Jmp(to)) = prog.get_mut(j) {
                        *to = end;
                    }
                }
            }
        }
    }
}

type Set = [u64; WORDS];

/// Adds `pc` and everything reachable from it without consuming a character.
fn add(prog: &[Inst], set: &mut Set, pc: usize) {
    let mut stack = [0u16; 2 * MAX_INSTS + 2];
    let mut top = 0;
    stack[0] = pc as u16;
    top += 1;
    while top > 0 {
        top -= 1;
        let pc = stack[top] as usize;
        let (w, bit) = (pc / 64, 1u64 << (pc % 64));
        if set[w] & bit != 0 {
            continue;
        }
        set[w] |= bit;
        match prog.get(pc) {
            Some(Inst::Split(a, b)) => {
                stack[top] = *b;
                stack[top + 1] = *a;
                top += 2;
            }
            Some(Inst::Jmp(a)) => {
                stack[top] = *a;
                top += 1;
            }
            _ => {}
        }
    }
}

fn run_nfa(prog: &[Inst], s: &str) -> bool {
    let words = prog.len().div_ceil(64);
    if words > WORDS {
        return false;
    }
    let mut cur: Set = [0; WORDS];
    add(prog, &mut cur, 0);
    for c in s.chars() {
        let mut next: Set = [0; WORDS];
        let mut alive = false;
        for (w, &word) in cur.iter().enumerate().take(words) {
            let mut bits = word;
            while bits != 0 {
                let pc = w * 64 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                let step = match &prog[pc] {
                    Inst::Char(x) => *x == c,
                    Inst::Any => true,
                    Inst::Class(cl) => cl.contains(c),
                    _ => false,
                };
                if step {
                    add(prog, &mut next, pc + 1);
                    alive = true;
                }
            }
        }
        if !alive {
            return false;
        }
        cur = next;
    }
    let m = prog.len() - 1;
    cur[m / 64] & (1 << (m % 64)) != 0
}

/// Recursive-descent parser for globset's segment syntax (backslash is not an escape).
struct Parser<'a> {
    seg: &'a str,
    rest: &'a str,
    pattern: &'a str,
    chars: std::iter::Peekable<std::str::Chars<'a>>,
}

#[derive(PartialEq)]
enum End {
    Eof,
    Comma,
    Close,
}

impl Parser<'_> {
    fn unbalanced(&self, ch: char) -> PatternError {
        PatternError::Unbalanced {
            ch,
            segment: self.seg.to_owned(),
        }
    }

    fn sequence(&mut self, depth: usize) -> Result<(Vec<Tok>, End), PatternError> {
        let mut toks = Vec::new();
        while let Some(c) = self.chars.next() {
            match c {
                '*' if self.chars.peek() == Some(&'*') => {
                    return Err(PatternError::GluedDoubleStar {
                        segment: self.seg.to_owned(),
                    });
                }
                '*' => toks.push(Tok::Star),
                '?' => toks.push(Tok::Any),
                '[' => toks.push(Tok::Class(self.class()?)),
                '{' => toks.push(Tok::Alt(self.alternation(depth + 1)?)),
                '}' if depth > 0 => return Ok((toks, End::Close)),
                ',' if depth > 0 => return Ok((toks, End::Comma)),
                '}' | ']' => return Err(self.unbalanced(c)),
                ',' => {
                    return Err(PatternError::StrayComma {
                        segment: self.seg.to_owned(),
                    });
                }
                '#' | '+' => {
                    return Err(PatternError::NotAWildcard {
                        ch: c,
                        segment: self.seg.to_owned(),
                    });
                }
                c => toks.push(Tok::Lit(c)),
            }
        }
        Ok((toks, End::Eof))
    }

    fn alternation(&mut self, depth: usize) -> Result<Vec<Vec<Tok>>, PatternError> {
        let mut branches = Vec::new();
        loop {
            let (toks, end) = self.sequence(depth)?;
            branches.push(toks);
            match end {
                End::Comma => {}
                End::Close => return Ok(branches),
                End::Eof if self.rest.contains('}') => {
                    return Err(PatternError::AlternationSpansSlash {
                        pattern: self.pattern.to_owned(),
                    });
                }
                End::Eof => return Err(self.unbalanced('{')),
            }
        }
    }

    /// A class after its `[`, with globset's rules: `!` or `^` negates; a `]` or `-` first
    /// is literal; `a-z` is a range; a trailing `-` is literal.
    fn class(&mut self) -> Result<Class, PatternError> {
        let negated = self.chars.next_if(|c| *c == '!' || *c == '^').is_some();
        let mut ranges: Vec<(char, char)> = Vec::new();
        let (mut first, mut in_range) = (true, false);
        loop {
            let Some(c) = self.chars.next() else {
                return Err(if self.rest.contains(']') {
                    PatternError::ClassSpansSlash {
                        pattern: self.pattern.to_owned(),
                    }
                } else {
                    self.unbalanced('[')
                });
            };
            match c {
                ']' if !first => break,
                ']' | '-' if first => ranges.push((c, c)),
                '-' if !in_range => in_range = true,
                c if in_range => {
                    if let Some(r) = ranges.last_mut() {
                        if c < r.0 {
                            return Err(PatternError::InvalidRange {
                                lo: r.0,
                                hi: c,
                                segment: self.seg.to_owned(),
                            });
                        }
                        r.1 = c;
                    }
                    in_range = false;
                }
                c => ranges.push((c, c)),
            }
            first = false;
        }
        if in_range {
            ranges.push(('-', '-'));
        }
        Ok(Class {
            negated,
            ranges: ranges.into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(p: &str) -> Glob {
        Glob::compile(p, "", p).expect("valid glob")
    }

    #[test]
    fn source_matching_agrees_with_the_compiled_glob() {
        let sources = [
            "ab*", "*ab", "a*b", "a*b*c", "x*y*", "a*", "*a*a*", "{eu,us}", "{a,,b}", "{é,ü}x",
            "é*", "*ü", "a?", "[ab]*", "{a*,b}", "{a,b}c", "x{a,b}", "\\*a",
        ];
        let inputs = [
            "", "a", "ab", "b", "ba", "aab", "abab", "abc", "aXbYc", "eu", "us", "x", "ax", "é",
            "éa", "aü", "ü", "c", "aa", "aaa", "*a",
        ];
        let mut fast = 0;
        for src in sources {
            let glob = g(src);
            for s in inputs {
                if let Some(m) = matches_source(src, s) {
                    fast += 1;
                    assert_eq!(m, glob.matches(s), "{src} on {s:?}");
                }
            }
        }
        // The simple shapes take the fast path; the others defer to the compiled glob.
        assert_eq!(fast, 11 * inputs.len());
        for complex in [
            "a?", "[ab]*", "{a*,b}", "{a,b}c", "x{a,b}", "\\*a", "{é,ü}x",
        ] {
            assert_eq!(matches_source(complex, "a"), None, "{complex}");
        }
    }

    #[test]
    fn shapes() {
        assert!(matches!(g("ab*").matcher, Matcher::Stars(_)));
        assert!(matches!(g("{a,bc}").matcher, Matcher::OneOf(_)));
        assert!(matches!(g("a?").matcher, Matcher::Nfa(_)));
    }

    #[test]
    fn by_char_not_byte() {
        assert!(g("caf?").matches("café"));
        assert!(g("[é]").matches("é"));
        assert!(!g("[!é]").matches("é"));
        assert!(g("?").matches("😀"));
        assert!(!g("??").matches("é"));
    }

    #[test]
    fn stars_and_nfa_agree() {
        for (p, yes, no) in [
            ("a*", "abc", "ba"),
            ("*c", "abc", "cb"),
            ("a*b*c", "aXbYc", "acb"),
            ("*ab*", "xaby", "ba"),
            ("a*a", "aa", "a"),
            ("x{,s}", "x", "xy"),
            ("{a,{b,c}d}", "cd", "c"),
            ("[]a]", "]", "b"),
            ("[!]a]", "b", "]"),
            ("[a-c-e]", "d", "f"),
            ("[a-]", "-", "b"),
            ("{}x", "x", "y"),
            (
                "*a*a*a*a*a*a*a*b",
                "aaaaaaaaab",
                "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            ),
        ] {
            assert!(g(p).matches(yes), "{p} should match {yes}");
            assert!(!g(p).matches(no), "{p} should not match {no}");
        }
    }

    #[test]
    fn largest_program() {
        let p = "*".to_string() + &"?*".repeat(127);
        let glob = g(&p[..255]);
        assert!(glob.matches(&"x".repeat(200)));
    }
}
