use std::ops::ControlFlow;

use super::*;
use crate::topic::Pattern;

fn segs(p: &str) -> Vec<Segment> {
    Pattern::parse(p).expect("valid").segments().to_vec()
}

fn matched(t: &Trie<u32>, topic: &str) -> Vec<u32> {
    let parts: Vec<&str> = topic.split('/').collect();
    let mut seen = Vec::new();
    let _ = t.walk(&parts, topic.starts_with('$'), |s| {
        seen.extend(s.iter().copied());
        ControlFlow::Continue(())
    });
    seen.sort();
    seen
}

/// A trie holding pattern `i` of `pats` with subscriber `i` (each insert is new, and a
/// second one of the same pair changes nothing).
fn numbered(pats: &[&str]) -> Trie<u32> {
    let mut t = Trie::default();
    for (i, p) in pats.iter().enumerate() {
        assert!(t.insert(&segs(p), i as u32).pair);
        assert!(!t.insert(&segs(p), i as u32).pair);
    }
    t
}

#[test]
fn a_childless_double_star_reports_once_from_any_entry() {
    // Trailing `**` nodes reached from several positions (the second `**` of `**/a/**`
    // from every `a`), or whose prefix is the whole topic (`a/b/**` on `a/b`): each
    // pattern's subscribers come out exactly once, and only where the `**` may match.
    let t = numbered(&[
        "**",
        "a/**",
        "**/a/**",
        "a/**/b/**",
        "a/b/**",
        "b/**",
        "**/b",
    ]);
    assert_eq!(matched(&t, "a/a/b/a/b"), [0, 1, 2, 3, 6]);
    assert_eq!(matched(&t, "a/b"), [0, 1, 2, 3, 4, 6]);
    assert_eq!(matched(&t, "a"), [0, 1, 2]);
    assert_eq!(matched(&t, "b/a"), [0, 2, 5]);
    assert_eq!(matched(&t, "c"), [0]);
    // A `**` with children is still walked through: `a/**/b/**` needs its `b`.
    assert_eq!(matched(&t, "a/c/c"), [0, 1, 2]);
    assert_eq!(matched(&t, "a/c/b/c"), [0, 1, 2, 3]);
}

#[test]
fn removing_every_pattern_empties_the_table() {
    let pats = [
        "a/*",
        "a/b/*",
        "a/**",
        "a/**/c",
        "a/{x,y}/c",
        "a/x*/d",
        "*/b",
        "**",
        "a/b/c/*",
        "$sys/*",
    ];
    let mut t = numbered(&pats);
    assert_eq!(matched(&t, "a/x/c"), [2, 3, 4, 7]);
    assert_eq!(matched(&t, "a/b/c"), [1, 2, 3, 7]);
    assert_eq!(matched(&t, "z/b"), [6, 7]);
    assert_eq!(matched(&t, "$sys/x"), [9]);
    for (i, p) in pats.iter().enumerate() {
        assert_eq!(
            t.remove(&segs(p), &(i as u32)),
            Change {
                pair: true,
                pattern: true
            }
        );
        assert_eq!(t.remove(&segs(p), &(i as u32)), NO_CHANGE);
    }
    assert_eq!(t.nodes(), 0);
    assert!(t.root.is_empty() && t.compiled.is_empty());
    // Freed ids are reused, and a reused id does not resurrect old children.
    assert!(t.insert(&segs("q/*"), 1).pair);
    assert_eq!(matched(&t, "q/z"), [1]);
    assert_eq!(matched(&t, "a/b/c"), Vec::<u32>::new());
}

#[test]
fn glob_index_stays_dense_through_removals() {
    // More globs under one node than its count holds (31): the walk then scans the
    // index to its end, through removals too.
    const GLOBS_N: usize = 40;
    let mut t: Trie<u32> = Trie::default();
    let globs: Vec<String> = (0..GLOBS_N)
        .map(|i| match i % 3 {
            0 => format!("x{i}y*"),
            1 => format!("{{x{i}y,y{i}y}}"),
            _ => format!("x{i}y?"),
        })
        .collect();
    for (i, g) in globs.iter().enumerate() {
        assert!(t.insert(&segs(&format!("a/{g}")), i as u32).pair);
    }
    for i in (0..GLOBS_N).filter(|i| i % 2 == 1) {
        assert!(
            t.remove(&segs(&format!("a/{}", globs[i])), &(i as u32))
                .pair
        );
    }
    for i in 0..GLOBS_N as u32 {
        let topic = if i % 3 == 2 {
            format!("a/x{i}yz")
        } else {
            format!("a/x{i}y")
        };
        let want = if i % 2 == 0 { vec![i] } else { vec![] };
        assert_eq!(matched(&t, &topic), want, "{topic}");
    }
    for i in (0..GLOBS_N).filter(|i| i % 2 == 0) {
        assert!(
            t.remove(&segs(&format!("a/{}", globs[i])), &(i as u32))
                .pair
        );
    }
    assert_eq!(t.nodes(), 0);
    assert!(t.compiled.is_empty());
}

#[test]
fn literal_child_filter_never_hides_a_child() {
    let mut t: Trie<u32> = Trie::default();
    // 40 literal children of `a` set every bit of its filter; removals leave them set.
    for i in 0..40u32 {
        assert!(t.insert(&segs(&format!("a/b{i}/*")), i).pair);
    }
    for i in 0..40u32 {
        assert_eq!(matched(&t, &format!("a/b{i}/x")), vec![i]);
    }
    for i in 1..40u32 {
        assert!(t.remove(&segs(&format!("a/b{i}/*")), &i).pair);
    }
    assert_eq!(matched(&t, "a/b0/x"), vec![0]);
    assert_eq!(matched(&t, "a/b7/x"), Vec::<u32>::new());
    // The last child gone, the filter is cleared; a new child sets its own bit.
    assert!(t.remove(&segs("a/b0/*"), &0).pair);
    assert_eq!(t.nodes(), 0);
    assert!(t.insert(&segs("a/c/*"), 9).pair);
    assert_eq!(matched(&t, "a/c/x"), vec![9]);
    assert_eq!(matched(&t, "a/b0/x"), Vec::<u32>::new());
    // Under `**`, every position's literal child is found through the filter.
    assert!(t.insert(&segs("a/**/z"), 5).pair);
    assert_eq!(matched(&t, "a/z"), vec![5]);
    assert_eq!(matched(&t, "a/c/d/z"), vec![5]);
}

#[test]
fn wildcard_children_sit_after_their_parent() {
    let t: Trie<u32> = Trie::default();
    let parent = child_hash(t.root_hash, edge_hash(&t.state, Kind::Literal, "a"));
    let star = child_hash_of(parent, Kind::Star, t.star_hash);
    let double_star = child_hash_of(parent, Kind::DoubleStar, t.double_star_hash);
    let globs = [t.glob_index_hash(parent, 0), t.glob_index_hash(parent, 1)];
    // Whatever the table's size, the home slots follow the parent's, wrapping around.
    for mask in [15u64, (1 << 20) - 1, (1 << 31) - 1] {
        let home = |h: u64| h & mask;
        assert_eq!(home(star), (home(parent) + 1) & mask);
        assert_eq!(home(double_star), (home(parent) + 2) & mask);
        assert_eq!(home(globs[0]), (home(parent) + 3) & mask);
        assert_eq!(home(globs[1]), (home(parent) + 4) & mask);
    }
    // The full hashes still differ, from each other and across parents.
    let other = child_hash(t.root_hash, edge_hash(&t.state, Kind::Literal, "b"));
    let all = [
        parent,
        star,
        double_star,
        globs[0],
        globs[1],
        child_hash_of(other, Kind::Star, t.star_hash),
    ];
    let distinct: std::collections::HashSet<u64> = all.iter().copied().collect();
    assert_eq!(distinct.len(), all.len());
    // Literal children are spread as before.
    assert_eq!(
        child_hash_of(parent, Kind::Literal, 7),
        child_hash(parent, 7)
    );
}

#[test]
fn node_fits_a_slot() {
    assert!(std::mem::size_of::<Option<Node<u64>>>() <= 56);
}
