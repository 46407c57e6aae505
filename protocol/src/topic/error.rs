//! The limits of PROTOCOL.md §1 and the errors that name a bad topic or pattern.
//!
//! A leaf of its own because both halves of the syntax report through it: the topic and
//! pattern validators in this module's parent, and the segment and glob compilers below them.

use std::fmt;
/// Longest topic, in bytes.
pub const MAX_TOPIC_BYTES: usize = 256;
/// Longest pattern, in bytes.
pub const MAX_PATTERN_BYTES: usize = 256;
/// Most `/`-separated segments in a pattern.
pub const MAX_PATTERN_SEGMENTS: usize = 32;

/// Why a string is not a valid topic. Each message names the offending part.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TopicError {
    #[error("topic is empty")]
    Empty,
    #[error("topic is {len} bytes, over the {MAX_TOPIC_BYTES}-byte limit")]
    TooLong { len: usize },
    #[error("topic segment is empty: '{}'", Shown(.topic))]
    EmptySegment { topic: String },
    #[error("topic contains a control character: '{}'", Shown(.topic))]
    ControlChar { topic: String },
    #[error("topic contains '{ch}', which is reserved for patterns: '{}'", Shown(.topic))]
    ReservedChar { ch: char, topic: String },
}

/// Why a string is not a valid pattern. Each message names the offending part.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PatternError {
    #[error("pattern is empty")]
    Empty,
    #[error("pattern is {len} bytes, over the {MAX_PATTERN_BYTES}-byte limit")]
    TooLong { len: usize },
    #[error("pattern has {count} segments, over the {MAX_PATTERN_SEGMENTS}-segment limit")]
    TooManySegments { count: usize },
    #[error("pattern segment is empty: '{}'", Shown(.pattern))]
    EmptySegment { pattern: String },
    #[error("pattern contains a control character: '{}'", Shown(.pattern))]
    ControlChar { pattern: String },
    #[error("unbalanced '{ch}' in segment '{segment}'")]
    Unbalanced { ch: char, segment: String },
    #[error("'**' must be a whole segment: '{segment}'")]
    GluedDoubleStar { segment: String },
    #[error("alternation may not span '/' (subscribe to each alternative separately): '{pattern}'")]
    AlternationSpansSlash { pattern: String },
    #[error("a character class may not contain '/': '{pattern}'")]
    ClassSpansSlash { pattern: String },
    #[error("invalid range '{lo}-{hi}' in segment '{segment}'")]
    InvalidRange { lo: char, hi: char, segment: String },
    #[error("',' outside '{{...}}' in segment '{segment}'")]
    StrayComma { segment: String },
    #[error(
        "'{ch}' is not a wildcard here: use '*' for one segment, '**' for any number: '{segment}'"
    )]
    NotAWildcard { ch: char, segment: String },
}

/// Displays user input inside an error message with control characters escaped.
struct Shown<'a>(&'a str);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            if c.is_control() {
                write!(f, "{}", c.escape_default())?;
            } else {
                fmt::Write::write_char(f, c)?;
            }
        }
        Ok(())
    }
}
