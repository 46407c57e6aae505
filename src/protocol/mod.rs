//! The wire format of PROTOCOL.md: every frame both ways, error codes and close codes.
//!
//! Shared by the server, the Rust client and the tests, so that all three agree on one
//! definition. Client frames are decoded borrowing from the socket's text (the `data` of a
//! `pub` stays raw JSON, copied once into the event body); server frames are plain serde
//! structs, except `msg`, which the server writes by hand from a shared body (see
//! [`crate::event`]).

mod client;
mod codes;
mod server;

pub use client::{AckMode, ClientFrame, DecodeError, Id, Since, decode};
pub use codes::{ErrorCode, close};
pub use server::{
    ByeFrame, ErrorFrame, GapFrame, GapReason, HistoryMessage, MsgFrame, OkFrame, PresenceClient,
    ServerFrame, WelcomeFrame,
};

/// The WebSocket subprotocol a client may ask for.
pub const SUBPROTOCOL: &str = "herald.v1";
