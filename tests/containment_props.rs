//! Property test of permission containment (PROTOCOL.md §7) against brute force: whenever a
//! `sub` pattern is judged contained in the allowed patterns, every topic it matches — over
//! an enumeration of all small topics on a small alphabet — must be matched by one of the
//! allowed patterns. The alphabet includes a character (`c`) that no pattern names, so that
//! negated classes and `?` are exercised on characters outside the grants, and `$` first
//! segments, so that the system-topic rule is exercised.
//!
//! Completeness is not required (a sound procedure may refuse), but a table of expected
//! acceptances keeps the procedure from being trivially "always no".

use herald::auth::Perms;
use herald::topic::Pattern;
use proptest::prelude::*;

/// Every topic of 1 to 4 segments from a small set over {a, b, c} (one and two characters),
/// the first possibly starting with `$`.
fn topics() -> Vec<String> {
    let segs: Vec<String> = ["a", "b", "c", "ab", "ba", "ca"].map(String::from).to_vec();
    let mut firsts = segs.clone();
    firsts.extend(["$a", "$b"].map(String::from));
    let mut all: Vec<String> = firsts.clone();
    let mut layer = firsts;
    for _ in 1..4 {
        let mut next = Vec::new();
        for t in &layer {
            for s in &segs {
                next.push(format!("{t}/{s}"));
            }
        }
        all.extend(next.iter().cloned());
        layer = next;
    }
    all
}

/// Segments built from the constructs of §1 over {a, b} (and `$` in first position).
fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("a".to_string()),
        Just("b".to_string()),
        Just("ab".to_string()),
        Just("*".to_string()),
        Just("**".to_string()),
        Just("?".to_string()),
        Just("a*".to_string()),
        Just("*b".to_string()),
        Just("a?".to_string()),
        Just("[ab]".to_string()),
        Just("[!a]".to_string()),
        Just("[a-b]?".to_string()),
        Just("{a,b}".to_string()),
        Just("{a,ab}".to_string()),
        Just("{a*,b}".to_string()),
        Just("{,a}b".to_string()),
        Just("[!b]*".to_string()),
        Just("?*".to_string()),
    ]
}

fn pattern() -> impl Strategy<Value = String> {
    (
        prop_oneof![4 => Just(""), 1 => Just("$")],
        prop::collection::vec(segment(), 1..=3),
    )
        .prop_map(|(sys, segs)| {
            let mut p = segs.join("/");
            if !sys.is_empty() && !p.starts_with("**") {
                p.insert(0, '$');
            }
            p
        })
        .prop_filter("valid pattern", |p| Pattern::parse(p).is_ok())
}

/// A pattern and a grant made from it by widening some of its segments: containment
/// holds often, so soundness is exercised where it matters, not only on refusals.
fn widened() -> impl Strategy<Value = (String, String)> {
    let widen = prop_oneof![
        3 => Just(None),
        1 => Just(Some("*")),
        1 => Just(Some("**")),
        1 => Just(Some("?*")),
        1 => Just(Some("{a*,b*}")),
        1 => Just(Some("[!c]*")),
        1 => Just(Some("[ab]")),
        1 => Just(Some("{a,b,ab}")),
    ];
    prop::collection::vec((segment(), widen), 1..=4)
        .prop_map(|segs| {
            let p: Vec<&str> = segs.iter().map(|(s, _)| s.as_str()).collect();
            let g: Vec<&str> = segs.iter().map(|(s, w)| w.unwrap_or(s)).collect();
            (p.join("/"), g.join("/"))
        })
        .prop_filter("valid patterns", |(p, g)| {
            Pattern::parse(p).is_ok() && Pattern::parse(g).is_ok()
        })
}

fn check(p: &str, grants: &[String], topics: &[String]) -> Result<(), TestCaseError> {
    let perms = Perms::parse(grants).unwrap();
    if !perms.allows_pattern_str(p) {
        return Ok(());
    }
    let pat = Pattern::parse(p).unwrap();
    let compiled: Vec<Pattern> = grants.iter().map(|g| Pattern::parse(g).unwrap()).collect();
    for t in topics {
        if pat.matches(t) {
            prop_assert!(
                compiled.iter().any(|g| g.matches(t)),
                "{p} judged within {grants:?}, but topic {t} escapes"
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn containment_is_sound(p in pattern(), grants in prop::collection::vec(pattern(), 1..=3)) {
        thread_local!(static TOPICS: Vec<String> = topics());
        TOPICS.with(|t| check(&p, &grants, t))?;
    }

    #[test]
    fn containment_is_sound_for_widened_grants(
        (p, g) in widened(),
        extra in prop::collection::vec(pattern(), 0..=1),
    ) {
        let mut grants = vec![g];
        grants.extend(extra);
        thread_local!(static TOPICS: Vec<String> = topics());
        TOPICS.with(|t| check(&p, &grants, t))?;
    }

    /// A pattern is always contained in itself, and in `**` unless it is a system pattern.
    #[test]
    fn reflexive_and_double_star(p in pattern()) {
        let own = Perms::parse(std::slice::from_ref(&p)).unwrap();
        prop_assert!(own.allows_pattern_str(&p), "{p} not within itself");
        let all = Perms::parse(&["**"]).unwrap();
        prop_assert_eq!(all.allows_pattern_str(&p), !p.starts_with('$'), "{} vs **", p);
    }
}

#[test]
fn enumeration_is_big_enough_to_mean_something() {
    let t = topics();
    assert_eq!(t.len(), 8 + 8 * 6 + 8 * 36 + 8 * 216);
    assert!(t.contains(&"$a/c/ca/b".to_string()));
}

#[test]
fn expected_acceptances() {
    let topics = topics();
    for (p, grants) in [
        ("a/b", &["a/*"][..]),
        ("a/{a,b}", &["a/a", "a/b"]),
        ("a/[ab]", &["a/{a,b}"]),
        ("a/**", &["**"]),
        ("$a/**", &["$a/**"]),
        ("a?/b", &["a*/b"]),
        ("a/*/b", &["a/**"]),
        ("[!a]", &["*"]),
    ] {
        let g: Vec<String> = grants.iter().map(|s| s.to_string()).collect();
        assert!(
            Perms::parse(&g).unwrap().allows_pattern_str(p),
            "{p} should be within {grants:?}"
        );
        check(p, &g, &topics).unwrap();
    }
}

/// The widened generator must lead to many acceptances, or the soundness property above
/// would be checked on refusals only.
#[test]
fn widened_grants_are_mostly_accepted() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let strategy = widened();
    let mut accepted = 0;
    for _ in 0..500 {
        let (p, g) = strategy.new_tree(&mut runner).unwrap().current();
        if Perms::parse(&[g]).unwrap().allows_pattern_str(&p) {
            accepted += 1;
        }
    }
    // Widening sometimes narrows (`**` → `*`, `ab` → `[ab]`), so not all are accepted.
    assert!(
        accepted > 150,
        "only {accepted} of 500 widened grants accepted"
    );
}
