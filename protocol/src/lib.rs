//! What Herald's client and server share: the wire format of PROTOCOL.md (every frame both
//! ways, error codes and close codes) and the topic and pattern syntax of its §1.
//!
//! One definition below both the `herald` server and the `herald-client` crate, so that the two
//! (and the tests) cannot drift apart, and so that a program that only talks to Herald compiles
//! none of the server. Client frames are decoded borrowing from the socket's text (the `data`
//! of a `pub` stays raw JSON, copied once into the event body); server frames are plain serde
//! structs, except `msg`, which the server writes by hand from a shared body (the server's
//! `event` module).
//!
//! [`units`] is the duration and size syntax (`"250ms"`, `"64KiB"`) of the server's config and
//! of the load generator's flags.

mod client;
mod codes;
pub mod msgpack;
mod server;
pub mod topic;
pub mod units;

pub use client::{
    AckMode, ClientFrame, DecodeError, Id, MAX_SINCE_TOPICS, Position, Since, TopicPositions,
    decode,
};
pub use codes::{ErrorCode, close};
pub use server::{
    ByeFrame, ErrorFrame, Gap, GapFrame, GapReason, HistoryMessage, MsgFrame, OkFrame,
    PresenceClient, ServerFrame, SubscribedFrame, TopicGapFrame, TopicGapReason, UnsubscribedFrame,
    UnsubscribedReason, WelcomeFrame,
};

/// The WebSocket subprotocol a client may ask for.
pub const SUBPROTOCOL: &str = "herald.v1";
