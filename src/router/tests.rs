use super::*;

fn p(s: &str) -> Pattern {
    Pattern::parse(s).expect("valid pattern")
}

fn sorted(r: &Router<u32>, topic: &str) -> Vec<u32> {
    let mut v = r.matches(topic).to_vec();
    v.sort();
    v
}

#[test]
fn exact_and_wildcards() {
    let r = Router::new();
    assert!(r.insert(&p("chat/general"), 1));
    assert!(r.insert(&p("chat/*"), 2));
    assert!(r.insert(&p("chat/**"), 3));
    assert!(r.insert(&p("**"), 4));
    assert!(r.insert(&p("chat/{general,random}"), 5));
    assert!(r.insert(&p("chat/gen*"), 6));
    assert!(r.insert(&p("orders/**/created"), 7));
    assert_eq!(sorted(&r, "chat/general"), [1, 2, 3, 4, 5, 6]);
    assert_eq!(sorted(&r, "chat/random"), [2, 3, 4, 5]);
    assert_eq!(sorted(&r, "chat"), [3, 4]);
    assert_eq!(sorted(&r, "chat/a/b"), [3, 4]);
    assert_eq!(sorted(&r, "orders/created"), [4, 7]);
    assert_eq!(sorted(&r, "orders/eu/x/created"), [4, 7]);
    assert_eq!(sorted(&r, "orders/eu/x/created/no"), [4]);
    assert_eq!(r.len(), 7);
    assert_eq!(r.patterns(), 7);
}

#[test]
fn each_value_once() {
    let r = Router::new();
    for pat in ["a/b", "a/*", "a/**", "**", "a/?", "{a,x}/b"] {
        assert!(r.insert(&p(pat), 9));
        assert!(!r.insert(&p(pat), 9));
    }
    assert!(r.insert(&p("a/b"), 8));
    assert_eq!(sorted(&r, "a/b"), [8, 9]);
    assert_eq!(r.len(), 7);
    assert_eq!(r.patterns(), 6);
}

#[test]
fn system_topics_need_dollar_patterns() {
    let r = Router::new();
    r.insert(&p("**"), 1);
    r.insert(&p("*/x"), 2);
    r.insert(&p("?inbox/x"), 3);
    r.insert(&p("$inbox/**"), 4);
    r.insert(&p("$*/x"), 5);
    r.insert(&p("$inbox/x"), 6);
    r.insert(&p("a/$inbox"), 7);
    assert_eq!(sorted(&r, "$inbox/x"), [4, 5, 6]);
    assert_eq!(sorted(&r, "a/x"), [1, 2]);
    assert_eq!(sorted(&r, "a/$inbox"), [1, 7]);
    assert!(!r.has_match("$dlq/x/y"));
    assert!(r.has_match("$inbox/y"));
}

#[test]
fn cache_sees_every_change() {
    let r = Router::new();
    assert!(r.matches("a/b").is_empty());
    r.insert(&p("a/b"), 1);
    assert_eq!(sorted(&r, "a/b"), [1]);
    r.insert(&p("a/*"), 2);
    assert_eq!(sorted(&r, "a/b"), [1, 2]);
    assert!(r.remove(&p("a/b"), &1));
    assert!(!r.remove(&p("a/b"), &1));
    assert_eq!(sorted(&r, "a/b"), [2]);
    assert!(r.remove(&p("a/*"), &2));
    assert!(r.matches("a/b").is_empty());
    assert!(!r.has_match("a/b"));
    assert!(r.is_empty());
    assert_eq!(r.patterns(), 0);
}

#[test]
fn remove_prunes_and_counts() {
    let r = Router::new();
    r.insert(&p("a/*/c"), 1);
    r.insert(&p("a/*/c"), 2);
    r.insert(&p("a/**"), 1);
    assert_eq!((r.len(), r.patterns()), (3, 2));
    assert!(!r.remove(&p("a/*/d"), &1));
    assert!(!r.remove(&p("a/*/c"), &3));
    assert!(r.remove(&p("a/*/c"), &1));
    assert_eq!((r.len(), r.patterns()), (2, 2));
    assert!(r.remove(&p("a/*/c"), &2));
    assert_eq!((r.len(), r.patterns()), (1, 1));
    assert_eq!(sorted(&r, "a/x/c"), [1]);
    assert!(r.remove(&p("a/**"), &1));
    assert!(r.is_empty());
    assert!(
        r.index
            .read()
            .trie
            .walk(&["a"], false, |_| ControlFlow::Break(()))
            .is_continue()
    );
}

#[test]
fn invalid_topics_match_nothing() {
    let r = Router::new();
    r.insert(&p("**"), 1);
    for t in ["", "a//b", "/a", "a/", "a*", "a\u{0}", &"x".repeat(300)] {
        assert!(r.matches(t).is_empty(), "{t:?}");
        assert!(r.matches_uncached(t).is_empty(), "{t:?}");
        assert!(!r.has_match(t), "{t:?}");
    }
}

#[test]
fn bounded_cache() {
    let r: Router<u32> = Router::with_cache_capacity(64);
    r.insert(&p("**"), 1);
    for i in 0..1000 {
        assert_eq!(r.matches(&format!("t/{i}")).len(), 1);
    }
    assert!(r.cache_len() <= 64, "{}", r.cache_len());
    r.clear_cache();
    assert_eq!(r.cache_len(), 0);
    let none: Router<u32> = Router::with_cache_capacity(0);
    none.insert(&p("a"), 1);
    assert_eq!(none.matches("a").len(), 1);
    assert_eq!(none.cache_len(), 0);
}

#[test]
fn concurrent_readers_and_writers() {
    let r: Arc<Router<u32>> = Arc::new(Router::new());
    r.insert(&p("stable/**"), 0);
    let writers: Vec<_> = (1..3u32)
        .map(|w| {
            let r = r.clone();
            std::thread::spawn(move || {
                for i in 0..2000u32 {
                    let pat = if i % 2 == 0 {
                        p("stable/x")
                    } else {
                        p("stable/*")
                    };
                    r.insert(&pat, w * 10_000 + i);
                    r.remove(&pat, &(w * 10_000 + i));
                }
            })
        })
        .collect();
    for _ in 0..20_000 {
        let m = r.matches("stable/x");
        assert!(m.contains(&0));
    }
    for w in writers {
        w.join().expect("writer");
    }
    assert_eq!(&*r.matches("stable/x"), &[0]);
    assert_eq!(r.len(), 1);
}

fn assert_send_sync<T: Send + Sync>() {}

#[test]
fn router_is_send_sync() {
    assert_send_sync::<Router<u64>>();
    assert_send_sync::<Pattern>();
}

#[test]
fn deep_topics_and_long_segments() {
    let r = Router::new();
    // Patterns have at most 32 segments; topics may have more (split off the stack).
    let deep: Vec<String> = (0..30).map(|i| format!("s{i}")).collect();
    let topic = deep.join("/");
    let long = "x".repeat(100);
    r.insert(&p(&topic), 1);
    r.insert(&p("s0/**/s29"), 2);
    r.insert(&p(&format!("s0/*/{long}")), 3);
    r.insert(&p(&format!("s0/**/{long}")), 4);
    assert_eq!(sorted(&r, &topic), [1, 2]);
    assert_eq!(sorted(&r, &format!("s0/a/{long}")), [3, 4]);
    assert_eq!(sorted(&r, &format!("{topic}/{long}")), [4]);
    assert!(r.has_match(&topic));
    let deeper = format!("{topic}/{}", deep.join("/"));
    assert_eq!(sorted(&r, &deeper), [2]);
    assert!(r.remove(&p(&format!("s0/*/{long}")), &3));
    assert_eq!(sorted(&r, &format!("s0/a/{long}")), [4]);
}
