//! Topics and subscription patterns (PROTOCOL.md §1).
//!
//! A [`Topic`] is what a message is published to; a [`Pattern`] is what a subscriber listens
//! on. Both are validated once, at the edge, so the router and everything behind it can trust
//! them. A pattern is compiled into one [`Segment`] per `/`-separated part
//! (a literal, `*`, `**` or a [`glob`]), which is the unit the server's router is keyed by.
//!
//! Validation never panics and never allocates on success: fuzzers and hostile clients feed
//! these functions arbitrary strings.

use std::borrow::Borrow;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

mod error;
pub mod glob;
mod overlap;
pub mod segment;

pub use error::{
    MAX_PATTERN_BYTES, MAX_PATTERN_SEGMENTS, MAX_TOPIC_BYTES, PatternError, TopicError,
};
pub use segment::Segment;

const OK: u8 = 0;
const SEP: u8 = 1;
const CTRL: u8 = 2;
const RESERVED: u8 = 3;
/// 0xC2 leads the UTF-8 encoding of U+0080..=U+00BF, which holds the C1 control characters.
const C2: u8 = 4;

static BYTE_CLASS: [u8; 256] = {
    let mut t = [OK; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = CTRL;
        i += 1;
    }
    t[0x7f] = CTRL;
    t[b'/' as usize] = SEP;
    let reserved = b"*?[]{},#+";
    let mut j = 0;
    while j < reserved.len() {
        t[reserved[j] as usize] = RESERVED;
        j += 1;
    }
    t[0xc2] = C2;
    t
};

/// True if the UTF-8 byte at `i` starts a C1 control character (U+0080..=U+009F).
fn is_c1_at(b: &[u8], i: usize) -> bool {
    b[i] == 0xc2 && b.get(i + 1).is_some_and(|n| (0x80..=0x9f).contains(n))
}

/// True if `s` contains a control character (C0, DEL or C1), the same set as
/// [`char::is_control`].
#[inline]
pub fn has_control_char(s: &str) -> bool {
    let b = s.as_bytes();
    (0..b.len()).any(|i| BYTE_CLASS[b[i] as usize] == CTRL || is_c1_at(b, i))
}

/// Checks `s` against the topic rules of PROTOCOL.md §1 without allocating (unless it fails).
#[inline]
pub fn validate_topic(s: &str) -> Result<(), TopicError> {
    let b = s.as_bytes();
    if b.is_empty() {
        return Err(TopicError::Empty);
    }
    if b.len() > MAX_TOPIC_BYTES {
        return Err(TopicError::TooLong { len: b.len() });
    }
    let mut after_sep = true;
    for (i, &c) in b.iter().enumerate() {
        match BYTE_CLASS[c as usize] {
            SEP if after_sep => {
                return Err(TopicError::EmptySegment {
                    topic: s.to_owned(),
                });
            }
            SEP => after_sep = true,
            CTRL => {
                return Err(TopicError::ControlChar {
                    topic: s.to_owned(),
                });
            }
            RESERVED => {
                return Err(TopicError::ReservedChar {
                    ch: char::from(c),
                    topic: s.to_owned(),
                });
            }
            C2 if is_c1_at(b, i) => {
                return Err(TopicError::ControlChar {
                    topic: s.to_owned(),
                });
            }
            _ => after_sep = false,
        }
    }
    if after_sep {
        return Err(TopicError::EmptySegment {
            topic: s.to_owned(),
        });
    }
    Ok(())
}

/// True if the first segment of `s` starts with `$` (a system topic or pattern).
fn starts_system(s: &str) -> bool {
    s.starts_with('$')
}

/// A validated topic: UTF-8, 1–256 bytes, non-empty `/`-separated segments, no control
/// characters and none of `* ? [ ] { } , # +`. Cheap to clone (shared string).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct Topic(Arc<str>);

impl Topic {
    pub fn parse(s: &str) -> Result<Topic, TopicError> {
        validate_topic(s)?;
        Ok(Topic(Arc::from(s)))
    }

    #[inline]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A system topic (`$inbox/…`, `$dlq/…`, …): its first segment starts with `$`. Only
    /// patterns whose first segment also starts with `$` match it.
    pub fn is_system(&self) -> bool {
        starts_system(&self.0)
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Topic {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for Topic {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl FromStr for Topic {
    type Err = TopicError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Topic::parse(s)
    }
}

impl TryFrom<&str> for Topic {
    type Error = TopicError;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Topic::parse(s)
    }
}

impl serde::Serialize for Topic {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Topic {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Topic::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A compiled subscription pattern: globset-style syntax with `/` a literal separator.
///
/// | token | matches |
/// |---|---|
/// | `*` | any run of characters inside one segment |
/// | `?` | one character (a Unicode scalar value, not a byte) inside a segment |
/// | `**` (a whole segment) | zero or more complete segments |
/// | `[abc]`, `[a-z]`, `[!a]` / `[^a]` | one character of (or not of) the class |
/// | `{a,b}` | either alternative; alternatives may nest and may be empty (`x{,s}`) |
///
/// Choices beyond PROTOCOL.md §1, each rejected with a clear [`PatternError`]:
/// - An alternation or class may not span a `/` (`{a/b,c}`, `[a/]`): the router indexes
///   patterns segment by segment, and such a pattern is better written as several
///   subscriptions. `{a,b}/c` is fine.
/// - `,` outside braces, a stray `]` or `}`, and `#`/`+` outside a class could never match a
///   topic (topics may not contain them); they are reported instead of silently matching
///   nothing (`#`/`+` with a hint, for MQTT habits).
/// - `\` is an ordinary character, not an escape: a valid topic is a pattern matching
///   exactly itself, and topics may contain `\`.
///
/// A pattern whose first segment does not start with `$` never matches a system topic.
/// Equality and hashing are by the source string.
#[derive(Clone, Debug)]
pub struct Pattern {
    src: Arc<str>,
    segs: Arc<[Segment]>,
    exact: bool,
    system: bool,
}

impl Pattern {
    pub fn parse(s: &str) -> Result<Pattern, PatternError> {
        if s.is_empty() {
            return Err(PatternError::Empty);
        }
        if s.len() > MAX_PATTERN_BYTES {
            return Err(PatternError::TooLong { len: s.len() });
        }
        if has_control_char(s) {
            return Err(PatternError::ControlChar {
                pattern: s.to_owned(),
            });
        }
        let count = s.split('/').count();
        if count > MAX_PATTERN_SEGMENTS {
            return Err(PatternError::TooManySegments { count });
        }
        let mut segs = Vec::with_capacity(count);
        let mut offset = 0;
        for part in s.split('/') {
            offset += part.len() + 1;
            if part.is_empty() {
                return Err(PatternError::EmptySegment {
                    pattern: s.to_owned(),
                });
            }
            let rest = s.get(offset.min(s.len())..).unwrap_or("");
            segs.push(segment::parse(part, rest, s)?);
        }
        let exact = segs.iter().all(|g| matches!(g, Segment::Literal(_)));
        Ok(Pattern {
            src: Arc::from(s),
            segs: segs.into(),
            exact,
            system: starts_system(s),
        })
    }

    #[inline]
    pub fn as_str(&self) -> &str {
        &self.src
    }

    /// No wildcard tokens: the pattern matches exactly one topic, itself.
    #[inline]
    pub fn is_exact(&self) -> bool {
        self.exact
    }

    /// The first segment starts with `$`: only such patterns match system topics.
    pub fn is_system(&self) -> bool {
        self.system
    }

    #[inline]
    pub fn segments(&self) -> &[Segment] {
        &self.segs
    }

    /// Whether `topic` matches, with the full §1 semantics including the `$` rule. An
    /// invalid topic matches nothing.
    #[inline]
    pub fn matches(&self, topic: &str) -> bool {
        if validate_topic(topic).is_err() || starts_system(topic) != self.system {
            return false;
        }
        if self.exact {
            return topic == &*self.src;
        }
        let mut buf = [""; MAX_TOPIC_BYTES / 2 + 1];
        let Some(n) = split_topic(topic, &mut buf) else {
            return false;
        };
        segment::match_segments(&self.segs, &buf[..n])
    }
}

/// Splits a validated topic into `buf`; `None` if it has more segments than `buf` holds.
#[inline]
pub fn split_topic<'a>(topic: &'a str, buf: &mut [&'a str]) -> Option<usize> {
    let mut n = 0;
    for part in topic.split('/') {
        *buf.get_mut(n)? = part;
        n += 1;
    }
    Some(n)
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.src == other.src
    }
}

impl Eq for Pattern {}

impl std::hash::Hash for Pattern {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.src.hash(state)
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.src)
    }
}

impl AsRef<str> for Pattern {
    fn as_ref(&self) -> &str {
        &self.src
    }
}

impl FromStr for Pattern {
    type Err = PatternError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Pattern::parse(s)
    }
}

impl TryFrom<&str> for Pattern {
    type Error = PatternError;
    fn try_from(s: &str) -> Result<Self, Self::Error> {
        Pattern::parse(s)
    }
}

impl serde::Serialize for Pattern {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.src)
    }
}

impl<'de> serde::Deserialize<'de> for Pattern {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Pattern::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pat(s: &str) -> Pattern {
        Pattern::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    /// The wildcard table of PROTOCOL.md §1, plus the cases around it.
    #[test]
    fn wildcard_table() {
        let cases: &[(&str, &[&str], &[&str])] = &[
            (
                "chat/*",
                &["chat/a", "chat/general"],
                &["chat/a/b", "chat", "chatx/a"],
            ),
            (
                "chat/gen*",
                &["chat/general", "chat/gen"],
                &["chat/x", "chat/gen/x"],
            ),
            ("chat/?", &["chat/a", "chat/é"], &["chat/ab", "chat/a/b"]),
            (
                "orders/**",
                &["orders", "orders/eu", "orders/eu/created"],
                &["order", "x/orders"],
            ),
            (
                "a/**/z",
                &["a/z", "a/b/z", "a/b/c/z"],
                &["a", "a/b", "z", "a/z/b"],
            ),
            ("**/z", &["z", "a/z", "a/b/z"], &["z/a"]),
            ("**", &["a", "a/b/c"], &["$inbox/x"]),
            ("s/[abc]", &["s/a", "s/c"], &["s/d", "s/ab"]),
            ("s/[a-z]9", &["s/q9"], &["s/Q9", "s/9"]),
            ("s/[!a]", &["s/b", "s/é"], &["s/a", "s/bb"]),
            (
                "chat/{general,random}",
                &["chat/general", "chat/random"],
                &["chat/x"],
            ),
            ("{a,b}/x{,s}", &["a/x", "b/xs"], &["c/x", "a/xss"]),
            (
                "chat/general",
                &["chat/general"],
                &["chat/generals", "chat"],
            ),
            ("a\\b", &["a\\b"], &["ab"]),
        ];
        for (p, yes, no) in cases {
            let pt = pat(p);
            for t in *yes {
                assert!(pt.matches(t), "{p} should match {t}");
            }
            for t in *no {
                assert!(!pt.matches(t), "{p} should not match {t}");
            }
        }
    }

    #[test]
    fn dollar_rule() {
        for (p, t, expect) in [
            ("**", "$inbox/x", false),
            ("*/x", "$inbox/x", false),
            ("?inbox/x", "$inbox/x", false),
            ("[$]inbox/x", "$inbox/x", false),
            ("**/x", "$inbox/x", false),
            ("$inbox/*", "$inbox/x", true),
            ("$inbox/**", "$inbox", true),
            ("$*/x", "$dlq/x", true),
            ("$inbox/x", "$inbox/x", true),
            ("a/**", "a/$x", true),
            ("*/$x", "a/$x", true),
        ] {
            assert_eq!(pat(p).matches(t), expect, "{p} vs {t}");
        }
        assert!(pat("$inbox/**").is_system());
        assert!(!pat("**").is_system());
        assert!(
            Topic::parse("$dlq/a")
                .map(|t| t.is_system())
                .unwrap_or(false)
        );
        assert!(
            !Topic::parse("a/$dlq")
                .map(|t| t.is_system())
                .unwrap_or(true)
        );
    }

    #[test]
    fn topic_is_exact_pattern() {
        for t in ["chat/general", "$inbox/abc", "a b/ü/日本", "x"] {
            let p = pat(t);
            assert!(p.is_exact());
            assert!(p.matches(t));
            assert_eq!(p.as_str(), t);
        }
        for p in ["a/*", "a/**", "a?", "[a]", "{a}"] {
            assert!(!pat(p).is_exact(), "{p}");
        }
    }

    #[test]
    fn topic_errors() {
        let long = "a".repeat(257);
        let cases = [
            ("", "topic is empty"),
            (long.as_str(), "topic is 257 bytes, over the 256-byte limit"),
            ("chat//x", "topic segment is empty: 'chat//x'"),
            ("/x", "topic segment is empty: '/x'"),
            ("x/", "topic segment is empty: 'x/'"),
            ("a\u{7}b", "topic contains a control character: 'a\\u{7}b'"),
            (
                "a\u{85}b",
                "topic contains a control character: 'a\\u{85}b'",
            ),
            (
                "a/\u{7f}",
                "topic contains a control character: 'a/\\u{7f}'",
            ),
            (
                "chat/*",
                "topic contains '*', which is reserved for patterns: 'chat/*'",
            ),
            (
                "a#",
                "topic contains '#', which is reserved for patterns: 'a#'",
            ),
            (
                "a,b",
                "topic contains ',', which is reserved for patterns: 'a,b'",
            ),
        ];
        for (t, msg) in cases {
            let err = Topic::parse(t).expect_err(t);
            assert_eq!(err.to_string(), msg);
            assert_eq!(validate_topic(t), Err(err));
        }
        assert!(Topic::parse(&"a".repeat(256)).is_ok());
        assert!(
            Topic::parse("a\u{a0}b").is_ok(),
            "U+00A0 is not a control character"
        );
    }

    #[test]
    fn pattern_errors() {
        let long = "a".repeat(257);
        let deep = vec!["a"; 33].join("/");
        let cases = [
            ("", "pattern is empty"),
            (
                long.as_str(),
                "pattern is 257 bytes, over the 256-byte limit",
            ),
            (
                deep.as_str(),
                "pattern has 33 segments, over the 32-segment limit",
            ),
            ("a//b", "pattern segment is empty: 'a//b'"),
            ("a/", "pattern segment is empty: 'a/'"),
            ("a\u{1}", "pattern contains a control character: 'a\\u{1}'"),
            ("a[b", "unbalanced '[' in segment 'a[b'"),
            ("a]", "unbalanced ']' in segment 'a]'"),
            ("x/{a,b", "unbalanced '{' in segment '{a,b'"),
            ("a}", "unbalanced '}' in segment 'a}'"),
            ("a**", "'**' must be a whole segment: 'a**'"),
            ("x/**b/c", "'**' must be a whole segment: '**b'"),
            ("***", "'**' must be a whole segment: '***'"),
            ("{**,a}", "'**' must be a whole segment: '{**,a}'"),
            (
                "{a/b,c}",
                "alternation may not span '/' (subscribe to each alternative separately): \
                 '{a/b,c}'",
            ),
            ("a[x/y]", "a character class may not contain '/': 'a[x/y]'"),
            ("[z-a]", "invalid range 'z-a' in segment '[z-a]'"),
            ("a,b", "',' outside '{...}' in segment 'a,b'"),
            (
                "a/#",
                "'#' is not a wildcard here: use '*' for one segment, '**' for any number: '#'",
            ),
            (
                "+/b",
                "'+' is not a wildcard here: use '*' for one segment, '**' for any number: '+'",
            ),
        ];
        for (p, msg) in cases {
            let err = Pattern::parse(p).expect_err(p);
            assert_eq!(err.to_string(), msg, "{p}");
        }
        assert!(Pattern::parse(&vec!["*"; 32].join("/")).is_ok());
        assert!(Pattern::parse(&"b".repeat(256)).is_ok());
    }

    #[test]
    fn traits() {
        let t = Topic::parse("chat/x").expect("valid");
        assert_eq!(t.to_string(), "chat/x");
        assert_eq!(<Topic as AsRef<str>>::as_ref(&t), "chat/x");
        let set: std::collections::HashSet<Topic> = [t.clone()].into();
        assert!(set.contains("chat/x"));
        assert_eq!("chat/x".parse::<Topic>(), Ok(t));
        assert_eq!(pat("a/*"), pat("a/*"));
        assert_ne!(pat("a/*"), pat("a/?"));
        assert_eq!(pat("a/*").to_string(), "a/*");
    }

    #[test]
    fn invalid_topics_never_match() {
        for t in ["", "a//b", "a/", "a*", "a\u{0}"] {
            assert!(!pat("**").matches(t), "{t:?}");
            assert!(!pat("a*").matches(t), "{t:?}");
        }
    }
}
