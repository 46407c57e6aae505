//! Frames a client sends (PROTOCOL.md §4) and their decoding.
//!
//! Decoding goes through one flat struct of optional fields rather than a serde-tagged enum:
//! serde's internally tagged enums buffer their content, which would both cost a copy of
//! every `pub` payload and make borrowing `data` as raw JSON impossible. The flat struct
//! also lets us tell the protocol's error cases apart (`bad_json`, `bad_frame`,
//! `unknown_op`, `bad_request`) and still echo the request's `id`.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

use super::ErrorCode;

/// A request id: an integer or a string of at most 64 bytes, echoed in the answer.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Id {
    Num(i64),
    Str(String),
}

impl From<i64> for Id {
    fn from(n: i64) -> Self {
        Id::Num(n)
    }
}

impl From<&str> for Id {
    fn from(s: &str) -> Self {
        Id::Str(s.to_owned())
    }
}

/// `sub.ack`: who acknowledges group messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AckMode {
    Auto,
    Manual,
}

/// Where a client stands in one topic: the last offset it has, in an epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    pub epoch: String,
    pub offset: u64,
}

/// Most topics one `sub.since` may list (PROTOCOL.md §4): the replay is computed with all of
/// them locked, so the cap bounds what one request can make the server hold up.
pub const MAX_SINCE_TOPICS: usize = 1000;

/// `sub.since`: what a subscription recovers first (PROTOCOL.md §5).
///
/// Decoded through one flat struct, so that a mix of the two forms or a half-given position
/// is refused with a message saying so instead of serde's "did not match any variant".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged, try_from = "RawSince")]
pub enum Since {
    /// `{"epoch","offset"}`: everything after a position of an exact topic.
    Position(Position),
    /// `{"topics":{…},"ts":…}`: for any pattern, every listed topic after its position, and
    /// the other matching topics after a time.
    Topics(TopicPositions),
}

/// The `{"topics","ts"}` form of [`Since`]. Both parts are optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicPositions {
    /// Per topic, the last position the client has (at most [`MAX_SINCE_TOPICS`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub topics: BTreeMap<String, Position>,
    /// Unix milliseconds: matching topics not in `topics` replay their messages newer
    /// than this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ts: Option<u64>,
}

impl Since {
    /// The `{"epoch","offset"}` form.
    pub fn at(epoch: impl Into<String>, offset: u64) -> Since {
        Since::Position(Position {
            epoch: epoch.into(),
            offset,
        })
    }
}

#[derive(Deserialize)]
struct RawSince {
    #[serde(default)]
    epoch: Option<String>,
    #[serde(default)]
    offset: Option<u64>,
    #[serde(default)]
    topics: Option<BTreeMap<String, Position>>,
    #[serde(default)]
    ts: Option<u64>,
}

impl TryFrom<RawSince> for Since {
    type Error = String;

    fn try_from(r: RawSince) -> Result<Since, String> {
        let position = r.epoch.is_some() || r.offset.is_some();
        let topics = r.topics.is_some() || r.ts.is_some();
        match (r.epoch, r.offset) {
            _ if position && topics => {
                Err("use either {\"epoch\",\"offset\"} or {\"topics\",\"ts\"}, not both".into())
            }
            (Some(epoch), Some(offset)) => Ok(Since::Position(Position { epoch, offset })),
            (Some(_), None) | (None, Some(_)) => {
                Err("a position needs both 'epoch' and 'offset'".into())
            }
            (None, None) => {
                let topics = r.topics.unwrap_or_default();
                if topics.len() > MAX_SINCE_TOPICS {
                    return Err(format!(
                        "'since.topics' lists {} topics; at most {MAX_SINCE_TOPICS} are allowed",
                        topics.len()
                    ));
                }
                Ok(Since::Topics(TopicPositions { topics, ts: r.ts }))
            }
        }
    }
}

/// A decoded client frame. `data` borrows the socket's text: it is raw JSON, validated but
/// not re-encoded.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ClientFrame<'a> {
    Hello {
        #[serde(skip_serializing_if = "Option::is_none")]
        token: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        session: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        last_seq: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        client: Option<&'a RawValue>,
    },
    Sub {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<Id>,
        pattern: Cow<'a, str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        group: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        ack: Option<AckMode>,
        #[serde(skip_serializing_if = "Option::is_none")]
        rewind: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        since: Option<Since>,
    },
    Unsub {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<Id>,
        pattern: Cow<'a, str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        group: Option<String>,
    },
    Pub {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<Id>,
        topic: Cow<'a, str>,
        data: &'a RawValue,
        #[serde(skip_serializing_if = "Option::is_none")]
        msg_id: Option<String>,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        retain: bool,
    },
    Req {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<Id>,
        topic: Cow<'a, str>,
        data: &'a RawValue,
        #[serde(skip_serializing_if = "Option::is_none")]
        timeout_ms: Option<u64>,
    },
    Ack {
        seq: u64,
    },
    History {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<Id>,
        topic: Cow<'a, str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        since: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        limit: Option<u64>,
    },
    Presence {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<Id>,
        topic: Cow<'a, str>,
    },
    Ping {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<Id>,
    },
    /// A call to the application's backend (`[proxy] rpc`), answered by `reply {id, data}`.
    Rpc {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<Id>,
        method: Cow<'a, str>,
        data: &'a RawValue,
    },
    /// A new token for the open connection (same `sub`): its permissions replace the old
    /// ones at once, and its `exp` the old expiry.
    Refresh {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<Id>,
        token: String,
    },
}

impl ClientFrame<'_> {
    /// The frame's `id`, if it has one.
    pub fn id(&self) -> Option<&Id> {
        match self {
            ClientFrame::Sub { id, .. }
            | ClientFrame::Unsub { id, .. }
            | ClientFrame::Pub { id, .. }
            | ClientFrame::Req { id, .. }
            | ClientFrame::History { id, .. }
            | ClientFrame::Presence { id, .. }
            | ClientFrame::Ping { id }
            | ClientFrame::Refresh { id, .. }
            | ClientFrame::Rpc { id, .. } => id.as_ref(),
            ClientFrame::Hello { .. } | ClientFrame::Ack { .. } => None,
        }
    }

    pub fn op(&self) -> &'static str {
        match self {
            ClientFrame::Hello { .. } => "hello",
            ClientFrame::Sub { .. } => "sub",
            ClientFrame::Unsub { .. } => "unsub",
            ClientFrame::Pub { .. } => "pub",
            ClientFrame::Req { .. } => "req",
            ClientFrame::Ack { .. } => "ack",
            ClientFrame::History { .. } => "history",
            ClientFrame::Presence { .. } => "presence",
            ClientFrame::Ping { .. } => "ping",
            ClientFrame::Refresh { .. } => "refresh",
            ClientFrame::Rpc { .. } => "rpc",
        }
    }
}

/// Why a frame could not be decoded; becomes an `error` frame.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct DecodeError {
    pub code: ErrorCode,
    pub message: String,
    pub id: Option<Id>,
}

impl DecodeError {
    fn new(code: ErrorCode, message: impl Into<String>, id: Option<Id>) -> Self {
        DecodeError {
            code,
            message: message.into(),
            id,
        }
    }
}

/// Every field any client frame can carry. Unknown fields are ignored (PROTOCOL.md §2).
#[derive(Deserialize)]
struct RawFrame<'a> {
    #[serde(borrow, default)]
    op: Option<Cow<'a, str>>,
    #[serde(default)]
    id: Option<Id>,
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    session: Option<String>,
    #[serde(default)]
    last_seq: Option<u64>,
    #[serde(borrow, default)]
    client: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pattern: Option<Cow<'a, str>>,
    #[serde(default)]
    group: Option<String>,
    #[serde(default)]
    ack: Option<AckMode>,
    #[serde(default)]
    rewind: Option<u64>,
    #[serde(borrow, default, deserialize_with = "some_raw")]
    since: Option<&'a RawValue>,
    #[serde(borrow, default)]
    topic: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "some_raw")]
    data: Option<&'a RawValue>,
    #[serde(default)]
    msg_id: Option<String>,
    #[serde(default)]
    retain: Option<bool>,
    #[serde(default)]
    timeout_ms: Option<u64>,
    #[serde(default)]
    seq: Option<u64>,
    #[serde(default)]
    limit: Option<u64>,
    #[serde(borrow, default)]
    method: Option<Cow<'a, str>>,
}

/// `Option<&RawValue>` would turn a JSON `null` into `None`; `data: null` is meaningful
/// (it clears a retained message), so present-but-null must stay `Some("null")`.
fn some_raw<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// Salvages `id` from a frame whose other fields failed to decode, so the error can echo it.
#[derive(Deserialize)]
struct IdOnly {
    #[serde(default)]
    id: Option<Id>,
}

/// Maximum length of a string `id`.
const MAX_ID_LEN: usize = 64;

/// Decodes one text frame into a [`ClientFrame`], or the error frame it deserves.
pub fn decode(text: &str) -> Result<ClientFrame<'_>, DecodeError> {
    // serde reads a struct from an array too (fields by position): not a frame here.
    if text.trim_start().starts_with('[') {
        return Err(DecodeError::new(
            ErrorCode::BadFrame,
            "a frame must be a JSON object with a string field 'op'",
            None,
        ));
    }
    let raw: RawFrame<'_> = match serde_json::from_str(text) {
        Ok(raw) => raw,
        Err(e) => return Err(classify(text, e)),
    };
    let id = raw.id.clone();
    if let Some(Id::Str(s)) = &id
        && s.len() > MAX_ID_LEN
    {
        return Err(DecodeError::new(
            ErrorCode::BadRequest,
            format!("'id' is longer than {MAX_ID_LEN} bytes"),
            None,
        ));
    }
    let Some(op) = raw.op.as_deref() else {
        return Err(DecodeError::new(
            ErrorCode::BadFrame,
            "frame has no 'op' field",
            id,
        ));
    };
    let missing = |field: &str| {
        DecodeError::new(
            ErrorCode::BadRequest,
            format!("'{op}' needs '{field}'"),
            id.clone(),
        )
    };
    let frame = match op {
        "hello" => ClientFrame::Hello {
            token: raw.token,
            session: raw.session,
            last_seq: raw.last_seq,
            client: raw.client,
        },
        "sub" => {
            let since = match raw.since {
                None => None,
                Some(v) => Some(serde_json::from_str::<Since>(v.get()).map_err(|e| {
                    DecodeError::new(
                        ErrorCode::BadRequest,
                        format!(
                            "'since' must be {{\"topics\":{{\"<topic>\":{{\"epoch\",\"offset\"}}}},\"ts\"}} \
                             or {{\"epoch\",\"offset\"}}: {e}"
                        ),
                        id.clone(),
                    )
                })?),
            };
            ClientFrame::Sub {
                pattern: raw.pattern.ok_or_else(|| missing("pattern"))?,
                id: raw.id,
                group: raw.group,
                ack: raw.ack,
                rewind: raw.rewind,
                since,
            }
        }
        "unsub" => ClientFrame::Unsub {
            pattern: raw.pattern.ok_or_else(|| missing("pattern"))?,
            id: raw.id,
            group: raw.group,
        },
        "pub" => ClientFrame::Pub {
            topic: raw.topic.ok_or_else(|| missing("topic"))?,
            data: raw.data.ok_or_else(|| missing("data"))?,
            id: raw.id,
            msg_id: raw.msg_id,
            retain: raw.retain.unwrap_or(false),
        },
        "req" => ClientFrame::Req {
            topic: raw.topic.ok_or_else(|| missing("topic"))?,
            data: raw.data.ok_or_else(|| missing("data"))?,
            id: raw.id,
            timeout_ms: raw.timeout_ms,
        },
        "ack" => ClientFrame::Ack {
            seq: raw.seq.ok_or_else(|| missing("seq"))?,
        },
        "history" => {
            let since = match raw.since {
                None => None,
                Some(v) => Some(serde_json::from_str::<u64>(v.get()).map_err(|_| {
                    DecodeError::new(
                        ErrorCode::BadRequest,
                        "'since' of 'history' must be an offset (a non-negative integer)",
                        id.clone(),
                    )
                })?),
            };
            ClientFrame::History {
                topic: raw.topic.ok_or_else(|| missing("topic"))?,
                id: raw.id,
                since,
                limit: raw.limit,
            }
        }
        "presence" => ClientFrame::Presence {
            topic: raw.topic.ok_or_else(|| missing("topic"))?,
            id: raw.id,
        },
        "ping" => ClientFrame::Ping { id: raw.id },
        "rpc" => ClientFrame::Rpc {
            method: raw.method.ok_or_else(|| missing("method"))?,
            data: raw.data.ok_or_else(|| missing("data"))?,
            id: raw.id,
        },
        "refresh" => ClientFrame::Refresh {
            token: raw.token.ok_or_else(|| missing("token"))?,
            id: raw.id,
        },
        other => {
            let shown: String = other.chars().take(32).collect();
            return Err(DecodeError::new(
                ErrorCode::UnknownOp,
                format!("unknown op '{shown}'"),
                id,
            ));
        }
    };
    Ok(frame)
}

fn classify(text: &str, e: serde_json::Error) -> DecodeError {
    use serde_json::error::Category;
    match e.classify() {
        Category::Syntax | Category::Eof | Category::Io => {
            DecodeError::new(ErrorCode::BadJson, format!("invalid JSON: {e}"), None)
        }
        Category::Data => {
            if !text.trim_start().starts_with('{') {
                return DecodeError::new(
                    ErrorCode::BadFrame,
                    "a frame must be a JSON object with a string field 'op'",
                    None,
                );
            }
            let id = serde_json::from_str::<IdOnly>(text).ok().and_then(|x| x.id);
            DecodeError::new(ErrorCode::BadRequest, format!("invalid field: {e}"), id)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(text: &str) -> ErrorCode {
        decode(text).unwrap_err().code
    }

    #[test]
    fn an_array_is_not_a_frame() {
        assert_eq!(code(r#"["pub","a/b",1]"#), ErrorCode::BadFrame);
        assert_eq!(code(r#"  ["op","ping"]"#), ErrorCode::BadFrame);
    }

    #[test]
    fn decodes_pub_with_raw_data() {
        let f =
            decode(r#"{"op":"pub","id":3,"topic":"a/b","data":{"x": [1, 2]},"extra":1}"#).unwrap();
        match f {
            ClientFrame::Pub {
                id, topic, data, ..
            } => {
                assert_eq!(id, Some(Id::Num(3)));
                assert_eq!(topic, "a/b");
                assert_eq!(data.get(), r#"{"x": [1, 2]}"#);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn null_data_is_present() {
        let f = decode(r#"{"op":"pub","topic":"a","data":null,"retain":true}"#).unwrap();
        assert!(matches!(f, ClientFrame::Pub { data, retain: true, .. } if data.get() == "null"));
        assert_eq!(code(r#"{"op":"pub","topic":"a"}"#), ErrorCode::BadRequest);
    }

    #[test]
    fn error_classes() {
        assert_eq!(code("{nope"), ErrorCode::BadJson);
        assert_eq!(code(""), ErrorCode::BadJson);
        assert_eq!(code("[1,2]"), ErrorCode::BadFrame);
        assert_eq!(code("\"pub\""), ErrorCode::BadFrame);
        assert_eq!(code(r#"{"topic":"a"}"#), ErrorCode::BadFrame);
        assert_eq!(code(r#"{"op":"fly"}"#), ErrorCode::UnknownOp);
        assert_eq!(code(r#"{"op":"sub"}"#), ErrorCode::BadRequest);
        assert_eq!(code(r#"{"op":"ack","seq":"x"}"#), ErrorCode::BadRequest);
        let deep = "[".repeat(10_000);
        assert_eq!(
            code(&format!(r#"{{"op":"pub","topic":"a","data":{deep}"#)),
            ErrorCode::BadJson
        );
    }

    fn since(text: &str) -> Result<Option<Since>, DecodeError> {
        match decode(text)? {
            ClientFrame::Sub { since, .. } => Ok(since),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn since_has_two_forms() {
        assert_eq!(
            since(r#"{"op":"sub","pattern":"a","since":{"epoch":"e","offset":4}}"#).unwrap(),
            Some(Since::at("e", 4))
        );
        let s = since(
            r#"{"op":"sub","pattern":"t/**","since":{"topics":{"t/a":{"epoch":"e","offset":2}},"ts":7}}"#,
        )
        .unwrap();
        let Some(Since::Topics(p)) = s else {
            panic!("{s:?}")
        };
        assert_eq!(p.ts, Some(7));
        assert_eq!(
            p.topics["t/a"],
            Position {
                epoch: "e".into(),
                offset: 2
            }
        );
        assert_eq!(
            since(r#"{"op":"sub","pattern":"t/**","since":{}}"#).unwrap(),
            Some(Since::Topics(TopicPositions::default()))
        );
        // What the client encodes, the server decodes.
        let back = serde_json::to_string(&Since::Topics(p.clone())).unwrap();
        assert_eq!(
            serde_json::from_str::<Since>(&back).unwrap(),
            Since::Topics(p)
        );
    }

    #[test]
    fn bad_since_is_a_bad_request_that_says_why() {
        for (text, says) in [
            (r#"{"epoch":"e"}"#, "both 'epoch' and 'offset'"),
            (r#"{"offset":3}"#, "both 'epoch' and 'offset'"),
            (r#"{"epoch":"e","offset":1,"ts":5}"#, "not both"),
            (r#"{"topics":{"a":{"epoch":"e"}}}"#, "offset"),
            (r#"{"topics":{"a":{"epoch":"e","offset":-1}}}"#, "since"),
            (r#"{"topics":[1]}"#, "since"),
            (r#"{"ts":"yesterday"}"#, "since"),
            (r#"5"#, "since"),
        ] {
            let e = since(&format!(
                r#"{{"op":"sub","id":1,"pattern":"t/**","since":{text}}}"#
            ))
            .unwrap_err();
            assert_eq!(e.code, ErrorCode::BadRequest, "{text}");
            assert_eq!(e.id, Some(Id::Num(1)));
            assert!(e.message.contains(says), "{text}: {}", e.message);
        }
        let many: Vec<String> = (0..=MAX_SINCE_TOPICS)
            .map(|i| format!(r#""t/{i}":{{"epoch":"e","offset":1}}"#))
            .collect();
        let text = format!(
            r#"{{"op":"sub","pattern":"t/*","since":{{"topics":{{{}}}}}}}"#,
            many.join(",")
        );
        let e = since(&text).unwrap_err();
        assert!(e.message.contains("at most 1000"), "{}", e.message);
    }

    #[test]
    fn echoes_id_on_errors() {
        let e = decode(r#"{"op":"fly","id":"x1"}"#).unwrap_err();
        assert_eq!(e.id, Some(Id::Str("x1".into())));
        let e = decode(r#"{"op":"pub","id":9,"topic":5,"data":1}"#).unwrap_err();
        assert_eq!(e.code, ErrorCode::BadRequest);
        assert_eq!(e.id, Some(Id::Num(9)));
        let long = "x".repeat(65);
        assert_eq!(
            code(&format!(r#"{{"op":"ping","id":"{long}"}}"#)),
            ErrorCode::BadRequest
        );
    }

    #[test]
    fn rpc_needs_a_method_and_data() {
        let f = decode(r#"{"op":"rpc","id":1,"method":"ban","data":{"u":1}}"#).unwrap();
        assert!(matches!(f, ClientFrame::Rpc { ref method, data, .. }
            if method == "ban" && data.get() == r#"{"u":1}"#));
        for bad in [
            r#"{"op":"rpc","id":2,"data":1}"#,
            r#"{"op":"rpc","id":2,"method":"m"}"#,
        ] {
            let e = decode(bad).unwrap_err();
            assert_eq!(
                (e.code, e.id),
                (ErrorCode::BadRequest, Some(Id::Num(2))),
                "{bad}"
            );
        }
    }

    #[test]
    fn refresh_needs_a_token() {
        let f = decode(r#"{"op":"refresh","id":1,"token":"t"}"#).unwrap();
        assert!(matches!(f, ClientFrame::Refresh { ref token, .. } if token == "t"));
        assert_eq!(f.id(), Some(&Id::Num(1)));
        let e = decode(r#"{"op":"refresh","id":2}"#).unwrap_err();
        assert_eq!(e.code, ErrorCode::BadRequest);
        assert_eq!(e.id, Some(Id::Num(2)));
    }

    #[test]
    fn since_shapes() {
        let f = decode(r#"{"op":"sub","pattern":"a","since":{"epoch":"e1","offset":4}}"#).unwrap();
        assert!(matches!(
            f,
            ClientFrame::Sub {
                since: Some(Since::Position(Position { offset: 4, .. })),
                ..
            }
        ));
        let f = decode(r#"{"op":"history","topic":"a","since":7}"#).unwrap();
        assert!(matches!(f, ClientFrame::History { since: Some(7), .. }));
        assert_eq!(
            code(r#"{"op":"history","topic":"a","since":"x"}"#),
            ErrorCode::BadRequest
        );
    }

    #[test]
    fn encodes_for_the_client() {
        let data = RawValue::from_string("[1]".into()).unwrap();
        let f = ClientFrame::Pub {
            id: Some(Id::Num(1)),
            topic: "t".into(),
            data: &data,
            msg_id: None,
            retain: false,
        };
        let text = serde_json::to_string(&f).unwrap();
        assert_eq!(text, r#"{"op":"pub","id":1,"topic":"t","data":[1]}"#);
        assert!(matches!(decode(&text).unwrap(), ClientFrame::Pub { .. }));
    }
}
