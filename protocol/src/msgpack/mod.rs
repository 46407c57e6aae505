//! MessagePack, the `herald.v1.msgpack` subprotocol (PROTOCOL.md §2): the same frames as the
//! JSON ones, as MessagePack maps.
//!
//! Herald's canonical form of a frame is its JSON, and binary data in JSON is an object with
//! the single key `$base64`. So MessagePack is a transcoding at the edge, both ways: a msgpack
//! frame is turned into the JSON text the JSON decoder reads (`bin` becomes `{"$base64":…}`),
//! and JSON is turned into MessagePack for a msgpack connection (such an object becomes `bin`
//! again). Neither direction builds a tree: [`to_json`] walks the bytes, [`from_json`] is a
//! serde visitor that writes as it parses, so a frame costs one pass and its output.
//!
//! The server encodes each published message once per encoding, not once per subscriber (its
//! `event` module uses [`write`] for the shared part).

mod from_json;
mod to_json;
pub mod write;

pub use from_json::{from_json, from_json_into};
pub use to_json::{to_json, to_json_into};

/// The WebSocket subprotocol of MessagePack frames.
pub const SUBPROTOCOL: &str = "herald.v1.msgpack";

/// How deep arrays and maps may nest (serde_json's own limit for JSON, so both encodings
/// accept the same frames).
pub const MAX_DEPTH: usize = 128;

/// Why bytes are not a MessagePack frame Herald accepts (PROTOCOL.md §2: each is `bad_frame`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MsgpackError {
    #[error("MessagePack ends in the middle of a value")]
    Truncated,
    #[error("MessagePack has {0} bytes after its value")]
    Trailing(usize),
    #[error("MessagePack type byte 0x{0:02x} is not used by MessagePack")]
    BadByte(u8),
    #[error("MessagePack ext values are not accepted")]
    Ext,
    #[error("MessagePack map keys must be strings")]
    KeyNotString,
    #[error("MessagePack string is not valid UTF-8")]
    Utf8,
    #[error("MessagePack float is NaN or infinite, which JSON cannot carry")]
    NotFinite,
    #[error("MessagePack nests deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("not valid JSON: {0}")]
    Json(String),
}

/// Binary data as a JSON value, the form it takes in a JSON frame: `{"$base64": "…"}`.
pub fn binary(bytes: &[u8]) -> serde_json::Value {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
    serde_json::json!({ "$base64": b64 })
}

/// The bytes of a binary value (`{"$base64": "…"}`, that one key, valid base64), if `v` is one.
pub fn binary_of(v: &serde_json::Value) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let m = v.as_object().filter(|m| m.len() == 1)?;
    let s = m.get("$base64")?.as_str()?;
    base64::engine::general_purpose::STANDARD.decode(s).ok()
}

#[cfg(test)]
mod tests;
