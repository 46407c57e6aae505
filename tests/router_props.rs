//! Property tests: `Pattern::matches` and `Router::matches` against a brute-force oracle
//! built from globset.
//!
//! Patterns and topics are generated over a small abstract alphabet and rendered twice: in
//! ASCII for the oracle, and either in ASCII or in non-ASCII letters (order-preserving, so
//! class ranges keep their meaning) for the code under test. globset matches bytes, not
//! characters, which is why the oracle only ever sees ASCII.
//!
//! Oracle adjustments to globset (`literal_separator`, no backslash escapes, empty
//! alternatives allowed), each a documented rule of PROTOCOL.md §1:
//! - a trailing `/**` also matches the prefix itself (`orders/**` matches `orders`);
//! - a pattern whose first segment does not start with `$` never matches a system topic;
//! - a negated class never matches `/` (it is one character inside a segment).

use std::collections::{BTreeSet, HashSet};

use globset::{GlobBuilder, GlobMatcher};
use herald::router::Router;
use herald::topic::{Pattern, Topic};
use proptest::prelude::*;

/// Letters 0..4; `$` is only ever the first character of a first segment.
const ASCII: [char; 4] = ['a', 'b', 'c', 'd'];
/// Same order as ASCII, so `[a-c]` and `[à-日]` select the same letters.
const UNICODE: [char; 4] = ['à', 'é', '日', '😀'];

#[derive(Clone, Debug)]
enum Atom {
    Lit(usize),
    Any,
    Star,
    Class {
        negated: bool,
        items: Vec<(usize, usize)>,
    },
    Alt(Vec<Vec<Atom>>),
}

#[derive(Clone, Debug)]
enum Seg {
    Word(Vec<usize>),
    Star,
    DoubleStar,
    Glob(Vec<Atom>),
}

#[derive(Clone, Debug)]
struct Pat {
    dollar: bool,
    segs: Vec<Seg>,
}

#[derive(Clone, Debug)]
struct Top {
    dollar: bool,
    segs: Vec<Vec<usize>>,
}

#[derive(Clone, Copy, PartialEq)]
enum Render {
    Subject(bool),
    Oracle,
}

fn letter(i: usize, r: Render) -> char {
    match r {
        Render::Subject(true) => UNICODE[i],
        _ => ASCII[i],
    }
}

fn render_atoms(atoms: &[Atom], r: Render, out: &mut String) {
    for a in atoms {
        match a {
            Atom::Lit(i) => out.push(letter(*i, r)),
            Atom::Any => out.push('?'),
            Atom::Star => out.push('*'),
            Atom::Class { negated, items } => {
                out.push('[');
                if *negated {
                    out.push('!');
                    if r == Render::Oracle {
                        out.push('/');
                    }
                }
                for &(lo, hi) in items {
                    out.push(letter(lo, r));
                    if hi > lo {
                        out.push('-');
                        out.push(letter(hi, r));
                    }
                }
                out.push(']');
            }
            Atom::Alt(branches) => {
                out.push('{');
                for (k, b) in branches.iter().enumerate() {
                    if k > 0 {
                        out.push(',');
                    }
                    render_atoms(b, r, out);
                }
                out.push('}');
            }
        }
    }
}

impl Pat {
    fn render(&self, r: Render) -> String {
        let mut out = String::new();
        if self.dollar {
            out.push('$');
        }
        for (k, s) in self.segs.iter().enumerate() {
            if k > 0 {
                out.push('/');
            }
            match s {
                Seg::Word(w) => out.extend(w.iter().map(|&i| letter(i, r))),
                Seg::Star => out.push('*'),
                Seg::DoubleStar => out.push_str("**"),
                Seg::Glob(atoms) => render_atoms(atoms, r, &mut out),
            }
        }
        out
    }
}

impl Top {
    fn render(&self, r: Render) -> String {
        let mut out = String::new();
        if self.dollar {
            out.push('$');
        }
        for (k, s) in self.segs.iter().enumerate() {
            if k > 0 {
                out.push('/');
            }
            out.extend(s.iter().map(|&i| letter(i, r)));
        }
        out
    }
}

/// Two `*` in a row would be `**` glued to a segment (invalid); merge them.
fn no_double_star(atoms: Vec<Atom>) -> Vec<Atom> {
    let mut out: Vec<Atom> = Vec::new();
    for a in atoms {
        if matches!(a, Atom::Star) && matches!(out.last(), Some(Atom::Star)) {
            continue;
        }
        out.push(a);
    }
    out
}

fn word() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(0..4usize, 1..3)
}

fn leaf() -> BoxedStrategy<Atom> {
    prop_oneof![
        6 => (0..4usize).prop_map(Atom::Lit),
        2 => Just(Atom::Any),
        3 => Just(Atom::Star),
        2 => (any::<bool>(), prop::collection::vec((0..4usize, 0..3usize), 1..3)).prop_map(
            |(negated, items)| Atom::Class {
                negated,
                items: items.into_iter().map(|(lo, span)| (lo, (lo + span).min(3))).collect(),
            }
        ),
    ]
    .boxed()
}

/// `{…}` over `inner`; branches may be empty (`x{,s}`).
fn alt(inner: BoxedStrategy<Atom>) -> BoxedStrategy<Atom> {
    prop::collection::vec(
        prop::collection::vec(inner, 0..4).prop_map(no_double_star),
        1..4,
    )
    .prop_map(Atom::Alt)
    .boxed()
}

/// Mostly plain atoms, sometimes an alternation, rarely a nested one.
fn atom() -> BoxedStrategy<Atom> {
    let nested = prop_oneof![6 => leaf(), 1 => alt(leaf())].boxed();
    prop_oneof![10 => leaf(), 2 => alt(nested)].boxed()
}

fn seg() -> impl Strategy<Value = Seg> {
    prop_oneof![
        3 => word().prop_map(Seg::Word),
        2 => Just(Seg::Star),
        2 => Just(Seg::DoubleStar),
        4 => prop::collection::vec(atom(), 1..4).prop_map(|a| Seg::Glob(no_double_star(a))),
    ]
}

fn pat() -> impl Strategy<Value = Pat> {
    (
        prop::bool::weighted(0.2),
        prop::collection::vec(seg(), 1..5),
    )
        .prop_map(|(dollar, segs)| {
            // A `$` must start the first segment: give a `**`/`*` first segment a word to stick to.
            let mut segs = segs;
            if dollar && matches!(segs[0], Seg::DoubleStar | Seg::Star) {
                segs.insert(0, Seg::Word(vec![0]));
            }
            Pat { dollar, segs }
        })
}

fn top() -> impl Strategy<Value = Top> {
    (
        prop::bool::weighted(0.2),
        prop::collection::vec(word(), 1..6),
    )
        .prop_map(|(dollar, segs)| Top { dollar, segs })
}

struct Oracle {
    system: bool,
    /// The pattern and, for each trailing `/**`, the pattern without it.
    globs: Vec<GlobMatcher>,
}

impl Oracle {
    fn new(p: &Pat) -> Oracle {
        let mut src = p.render(Render::Oracle);
        let mut globs = Vec::new();
        loop {
            let g = GlobBuilder::new(&src)
                .literal_separator(true)
                .backslash_escape(false)
                .empty_alternates(true)
                .build()
                .unwrap_or_else(|e| panic!("globset rejects {src}: {e}"));
            globs.push(g.compile_matcher());
            match src.strip_suffix("/**") {
                Some(s) => src = s.to_owned(),
                None => break,
            }
        }
        Oracle {
            system: src.starts_with('$'),
            globs,
        }
    }

    fn matches(&self, topic: &str) -> bool {
        if topic.starts_with('$') && !self.system {
            return false;
        }
        self.globs.iter().any(|g| g.is_match(topic))
    }
}

fn parse(p: &Pat, unicode: bool) -> Pattern {
    let s = p.render(Render::Subject(unicode));
    Pattern::parse(&s).unwrap_or_else(|e| panic!("generated pattern {s:?} rejected: {e}"))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 768, ..ProptestConfig::default() })]

    #[test]
    fn pattern_agrees_with_globset(
        p in pat(),
        topics in prop::collection::vec(top(), 1..24),
        unicode in any::<bool>(),
    ) {
        let oracle = Oracle::new(&p);
        let pattern = parse(&p, unicode);
        for t in &topics {
            let expect = oracle.matches(&t.render(Render::Oracle));
            let subject = t.render(Render::Subject(unicode));
            prop_assert_eq!(pattern.matches(&subject), expect,
                "pattern {} topic {}", pattern.as_str(), subject);
        }
    }

    /// Longer single-segment globs against many words: stresses the segment glob engine.
    #[test]
    fn segment_glob_agrees_with_globset(
        atoms in prop::collection::vec(atom(), 1..8),
        words in prop::collection::vec(prop::collection::vec(0..4usize, 1..7), 1..48),
        unicode in any::<bool>(),
    ) {
        let p = Pat { dollar: false, segs: vec![Seg::Glob(no_double_star(atoms))] };
        let oracle = Oracle::new(&p);
        let pattern = parse(&p, unicode);
        for w in words {
            let t = Top { dollar: false, segs: vec![w] };
            let subject = t.render(Render::Subject(unicode));
            prop_assert_eq!(pattern.matches(&subject), oracle.matches(&t.render(Render::Oracle)),
                "pattern {} topic {}", pattern.as_str(), subject);
        }
    }

    #[test]
    fn router_agrees_with_oracle(
        pool in prop::collection::vec(pat(), 1..10),
        ops in prop::collection::vec((prop::bool::weighted(0.7), 0..10usize, 0..5u8), 1..40),
        topics in prop::collection::vec(top(), 1..10),
        unicode in any::<bool>(),
        cache in prop_oneof![Just(0usize), Just(4), Just(4096)],
    ) {
        check_router(&pool, &ops, &topics, unicode, cache)?;
    }

    #[test]
    fn topic_is_its_own_exact_pattern(t in top(), unicode in any::<bool>()) {
        let s = t.render(Render::Subject(unicode));
        let topic = Topic::parse(&s).expect("generated topic is valid");
        prop_assert_eq!(topic.is_system(), t.dollar);
        let p = Pattern::parse(&s).expect("a topic is a pattern");
        prop_assert!(p.is_exact());
        prop_assert!(p.matches(&s));
        prop_assert_eq!(p.is_system(), t.dollar);
    }

    #[test]
    fn arbitrary_input_never_panics(
        p in "[ab$/*?\\[\\]{}!^,#+\\\\é\u{0}\u{85}-]{0,40}",
        t in "[ab$/é\u{1}*]{0,12}",
        junk in any::<String>(),
    ) {
        let router: Router<u8> = Router::new();
        for s in [&p, &junk] {
            let _ = Topic::parse(s);
            if let Ok(pattern) = Pattern::parse(s) {
                let direct = pattern.matches(&t);
                router.insert(&pattern, 1);
                prop_assert_eq!(router.matches(&t).len(), usize::from(direct));
                prop_assert!(router.remove(&pattern, &1));
            }
        }
        prop_assert!(router.matches(&t).is_empty());
        prop_assert!(router.matches(&junk).is_empty());
    }
}

/// Applies `ops` (insert or remove pool pattern `i` with value `v`) to a router and to a
/// model of (pattern, value) pairs, and after each one checks counts and, for some of
/// `topics`, every way to ask for matches against the oracle. Then removes every pair left
/// and checks the router is empty.
fn check_router(
    pool: &[Pat],
    ops: &[(bool, usize, u8)],
    topics: &[Top],
    unicode: bool,
    cache: usize,
) -> Result<(), TestCaseError> {
    let patterns: Vec<Pattern> = pool.iter().map(|p| parse(p, unicode)).collect();
    let oracles: Vec<Oracle> = pool.iter().map(Oracle::new).collect();
    let router: Router<u8> = Router::with_cache_capacity(cache);
    // The model: (pattern source, value) pairs, and which pool entry each source came from.
    let mut model: HashSet<(String, u8)> = HashSet::new();
    for (step, &(insert, i, v)) in ops.iter().enumerate() {
        let i = i % pool.len();
        let key = (patterns[i].as_str().to_owned(), v);
        if insert {
            prop_assert_eq!(router.insert(&patterns[i], v), model.insert(key));
        } else {
            prop_assert_eq!(router.remove(&patterns[i], &v), model.remove(&key));
        }
        prop_assert_eq!(router.len(), model.len());
        let distinct: HashSet<&str> = model.iter().map(|(s, _)| s.as_str()).collect();
        prop_assert_eq!(router.patterns(), distinct.len());
        // Query some topics after every change, so cached results get invalidated.
        for t in topics.iter().skip(step % 3).step_by(2) {
            let oracle_topic = t.render(Render::Oracle);
            let expect: BTreeSet<u8> = model
                .iter()
                .filter(|(src, _)| {
                    let k = patterns.iter().position(|p| p.as_str() == src.as_str());
                    k.is_some_and(|k| oracles[k].matches(&oracle_topic))
                })
                .map(|&(_, v)| v)
                .collect();
            let subject = t.render(Render::Subject(unicode));
            for got in [router.matches(&subject), router.matches_uncached(&subject)] {
                let set: BTreeSet<u8> = got.iter().copied().collect();
                prop_assert_eq!(got.len(), set.len(), "duplicates for {}", subject);
                prop_assert_eq!(&set, &expect, "topic {}", subject);
            }
            prop_assert_eq!(router.has_match(&subject), !expect.is_empty());
        }
    }
    for (src, v) in &model {
        let p = Pattern::parse(src).expect("was parsed");
        prop_assert!(router.remove(&p, v), "{} {}", src, v);
    }
    prop_assert!(router.is_empty());
    prop_assert_eq!(router.patterns(), 0);
    for t in topics {
        prop_assert!(
            router
                .matches_uncached(&t.render(Render::Subject(unicode)))
                .is_empty()
        );
    }
    Ok(())
}

/// A pattern that starts with up to two `a` segments: many patterns then share a prefix,
/// so trie nodes get many children of every kind (literal-child filters fill up, glob
/// indexes grow past what a walk prefetches), and removing them all must prune every one.
fn crowded_pat() -> impl Strategy<Value = Pat> {
    (pat(), 0..3usize).prop_map(|(mut p, k)| {
        for _ in 0..k {
            p.segs.insert(0, Seg::Word(vec![0]));
        }
        p
    })
}

fn crowded_top() -> impl Strategy<Value = Top> {
    (top(), 0..3usize).prop_map(|(mut t, k)| {
        for _ in 0..k {
            t.segs.insert(0, vec![0]);
        }
        t
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// Many patterns under shared prefixes, changed at random, then all removed.
    #[test]
    fn router_agrees_with_oracle_when_crowded(
        pool in prop::collection::vec(crowded_pat(), 24..96),
        ops in prop::collection::vec((prop::bool::weighted(0.8), 0..96usize, 0..3u8), 60..240),
        topics in prop::collection::vec(crowded_top(), 1..8),
        unicode in any::<bool>(),
        cache in prop_oneof![Just(0usize), Just(64)],
    ) {
        check_router(&pool, &ops, &topics, unicode, cache)?;
    }
}

#[test]
fn dedup_across_many_patterns() {
    let router: Router<u32> = Router::new();
    let pats = [
        "a/b/c",
        "a/*/c",
        "a/**",
        "**",
        "*/b/*",
        "a/b/?",
        "{a,x}/b/c",
        "a/**/c",
    ];
    for (k, p) in pats.iter().enumerate() {
        let p = Pattern::parse(p).expect("valid");
        for v in 0..40u32 {
            router.insert(&p, v);
        }
        router.insert(&p, 100 + k as u32);
    }
    let got = router.matches("a/b/c");
    let set: BTreeSet<u32> = got.iter().copied().collect();
    assert_eq!(got.len(), set.len());
    assert_eq!(set.len(), 40 + pats.len());
}
