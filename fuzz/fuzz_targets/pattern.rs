//! Pattern parsing and matching. Input: three lines, `pattern`, `grant`, `topic`.
//! - Parsing and validation never panic.
//! - `Pattern::matches` agrees with the router (trie + cache) for the same pattern.
//! - Containment is sound: if `grant` is judged to contain `pattern`, then every topic the
//!   pattern matches is matched by the grant.
#![no_main]

use herald::auth::Perms;
use herald::router::Router;
use herald::topic::{Pattern, Topic};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = text.splitn(3, '\n');
    let (Some(p), Some(g), Some(t)) = (parts.next(), parts.next(), parts.next()) else {
        if let Ok(p) = Pattern::parse(text) {
            let _ = p.matches(text);
        }
        let _ = Topic::parse(text);
        return;
    };
    let pattern = Pattern::parse(p);
    let grant = Pattern::parse(g);
    let topic_ok = Topic::parse(t).is_ok();
    let Ok(pattern) = pattern else { return };
    let matched = pattern.matches(t);
    if matched {
        assert!(topic_ok, "an invalid topic matched {p}");
    }
    if topic_ok {
        let router: Router<u8> = Router::new();
        router.insert(&pattern, 1);
        assert_eq!(
            router.matches(t).len() == 1,
            matched,
            "router vs matches: {p} / {t}"
        );
    }
    if let Ok(grant) = grant {
        let perms = Perms::parse(&[grant.as_str()]).expect("valid grant");
        if perms.allows_pattern(&pattern) && matched {
            assert!(grant.matches(t), "{p} judged within {g} but {t} escapes");
        }
    }
});
