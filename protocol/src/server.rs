//! Frames the server sends (PROTOCOL.md §6). The server serializes all of them with serde
//! except `msg`, which it writes from a shared pre-encoded body; [`MsgFrame`] is how clients
//! read it back.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{ErrorCode, Id};

/// A frame from the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ServerFrame {
    Welcome(WelcomeFrame),
    Ok(OkFrame),
    Msg(MsgFrame),
    Gap(Gap),
    Reply {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<Id>,
        data: Value,
    },
    Pong {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<Id>,
    },
    Error(ErrorFrame),
    Bye(ByeFrame),
    /// The connection's token expires at `exp` (Unix seconds): send `refresh` before then.
    Expiring {
        exp: u64,
    },
    /// The server subscribed the session (HTTP `POST /v1/subscribe`); its messages follow.
    Subscribed(SubscribedFrame),
    /// The server removed one of the session's subscriptions.
    Unsubscribed(UnsubscribedFrame),
}

impl ServerFrame {
    /// Encodes the frame as the text of one WebSocket message.
    pub fn encode(&self) -> String {
        // Serializing these types cannot fail: every map key is a string.
        serde_json::to_string(self).unwrap_or_else(|_| {
            String::from(r#"{"op":"error","code":"internal","message":"encode"}"#)
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WelcomeFrame {
    pub session: String,
    pub resumed: bool,
    pub heartbeat_ms: u64,
    pub max_frame: usize,
}

/// `ok`: the answer to a request with an `id`. Which fields are present depends on the op.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OkFrame {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Id>,
    /// `sub`, `unsub`
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pattern: Option<String>,
    /// `sub` with `since`
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovered: Option<bool>,
    /// `pub`
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// `pub`, `history`
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<String>,
    /// `pub`
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duplicate: Option<bool>,
    /// `history`
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages: Option<Vec<HistoryMessage>>,
    /// `presence`
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<usize>,
    /// `presence`
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clients: Option<Vec<PresenceClient>>,
    /// `refresh`: the new token's expiry (Unix seconds)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryMessage {
    pub offset: u64,
    pub topic: String,
    pub data: Value,
    pub ts: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub msg_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PresenceClient {
    pub session: String,
    pub user: Option<String>,
    pub info: Value,
}

/// A delivered message as a client reads it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MsgFrame {
    pub seq: u64,
    pub topic: String,
    pub data: Value,
    pub offset: u64,
    pub epoch: String,
    pub ts: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub msg_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub retained: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replay: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub redelivered: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deliveries: Option<u32>,
}

/// A `gap`: seqs of the session's stream that will never come (§3), or offsets of one topic
/// that a recovering subscription cannot replay (§5). Told apart by their fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Gap {
    Seq(GapFrame),
    Topic(TopicGapFrame),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GapReason {
    Overflow,
    Expired,
}

/// A gap in the session's seqs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GapFrame {
    pub from_seq: u64,
    pub to_seq: u64,
    pub reason: GapReason,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TopicGapReason {
    /// History no longer holds these offsets (trimmed, or past `max_rewind`).
    History,
    /// The topic's epoch is not the one the client gave: what the old epoch held after the
    /// client's offset cannot be told; the range is in the current epoch.
    Epoch,
}

/// A gap in one topic's offsets, sent before what the subscription still replays of it.
/// `from_offset..=to_offset` are offsets of `epoch`, the topic's current epoch; with reason
/// `epoch` the range may be empty (`to_offset` below `from_offset`) when the current epoch
/// is held from its start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopicGapFrame {
    pub topic: String,
    pub from_offset: u64,
    pub to_offset: u64,
    pub reason: TopicGapReason,
    pub epoch: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorFrame {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Id>,
    pub code: ErrorCode,
    pub message: String,
}

/// `subscribed`: a subscription the server made for the session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubscribedFrame {
    pub pattern: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

/// `unsubscribed`: a subscription the server removed, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnsubscribedFrame {
    pub pattern: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    pub reason: UnsubscribedReason,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnsubscribedReason {
    /// A backend removed it (HTTP `POST /v1/unsubscribe`).
    Server,
    /// A `refresh` token no longer allows it.
    Forbidden,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ByeFrame {
    pub reason: String,
    pub retry_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let ok = ServerFrame::Ok(OkFrame {
            id: Some(Id::Num(7)),
            offset: Some(3),
            epoch: Some("e1".into()),
            duplicate: Some(false),
            ..Default::default()
        });
        let text = ok.encode();
        assert_eq!(
            text,
            r#"{"op":"ok","id":7,"offset":3,"epoch":"e1","duplicate":false}"#
        );
        assert_eq!(serde_json::from_str::<ServerFrame>(&text).unwrap(), ok);
        let err = ServerFrame::Error(ErrorFrame {
            id: None,
            code: ErrorCode::BadTopic,
            message: "x".into(),
        });
        assert_eq!(
            err.encode(),
            r#"{"op":"error","code":"bad_topic","message":"x"}"#
        );
        let gap = r#"{"op":"gap","from_seq":42,"to_seq":97,"reason":"overflow"}"#;
        assert!(matches!(
            serde_json::from_str::<ServerFrame>(gap).unwrap(),
            ServerFrame::Gap(Gap::Seq(GapFrame {
                from_seq: 42,
                to_seq: 97,
                ..
            }))
        ));
    }

    #[test]
    fn control_frames_round_trip() {
        let f = ServerFrame::Unsubscribed(UnsubscribedFrame {
            pattern: "a/**".into(),
            group: None,
            reason: UnsubscribedReason::Forbidden,
        });
        let text = f.encode();
        assert_eq!(
            text,
            r#"{"op":"unsubscribed","pattern":"a/**","reason":"forbidden"}"#
        );
        assert_eq!(serde_json::from_str::<ServerFrame>(&text).unwrap(), f);
        let s = ServerFrame::Subscribed(SubscribedFrame {
            pattern: "a/b".into(),
            group: Some("g".into()),
        });
        assert_eq!(
            s.encode(),
            r#"{"op":"subscribed","pattern":"a/b","group":"g"}"#
        );
        let e = ServerFrame::Expiring { exp: 7 };
        assert_eq!(e.encode(), r#"{"op":"expiring","exp":7}"#);
    }

    #[test]
    fn topic_gaps_round_trip_beside_seq_gaps() {
        let gap = ServerFrame::Gap(Gap::Topic(TopicGapFrame {
            topic: "t/a".into(),
            from_offset: 5,
            to_offset: 9,
            reason: TopicGapReason::History,
            epoch: "e1".into(),
        }));
        let text = gap.encode();
        assert_eq!(
            text,
            r#"{"op":"gap","topic":"t/a","from_offset":5,"to_offset":9,"reason":"history","epoch":"e1"}"#
        );
        assert_eq!(serde_json::from_str::<ServerFrame>(&text).unwrap(), gap);
        let seq = ServerFrame::Gap(Gap::Seq(GapFrame {
            from_seq: 1,
            to_seq: 2,
            reason: GapReason::Expired,
        }));
        assert_eq!(
            serde_json::from_str::<ServerFrame>(&seq.encode()).unwrap(),
            seq
        );
    }
}
