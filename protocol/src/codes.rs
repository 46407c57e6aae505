//! Error codes (`error.code`, HTTP `error.code`) and WebSocket close codes of PROTOCOL.md §6.

use serde::{Deserialize, Serialize};

/// Every error code of PROTOCOL.md §6. The serialized form is the protocol's string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadFrame,
    BadJson,
    UnknownOp,
    BadTopic,
    BadPattern,
    BadRequest,
    Unauthorized,
    Forbidden,
    TooLarge,
    RateLimited,
    TooManySubscriptions,
    NoResponders,
    Timeout,
    NotFound,
    Unavailable,
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadFrame => "bad_frame",
            ErrorCode::BadJson => "bad_json",
            ErrorCode::UnknownOp => "unknown_op",
            ErrorCode::BadTopic => "bad_topic",
            ErrorCode::BadPattern => "bad_pattern",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::TooManySubscriptions => "too_many_subscriptions",
            ErrorCode::NoResponders => "no_responders",
            ErrorCode::Timeout => "timeout",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
        }
    }

    /// The HTTP status for this code in the HTTP API (PROTOCOL.md §8).
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::Unauthorized => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::TooLarge => 413,
            ErrorCode::RateLimited | ErrorCode::TooManySubscriptions => 429,
            ErrorCode::Unavailable | ErrorCode::NoResponders => 503,
            ErrorCode::Timeout => 504,
            ErrorCode::Internal => 500,
            _ => 400,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// WebSocket close codes used by Herald.
pub mod close {
    pub const NORMAL: u16 = 1000;
    pub const SHUTDOWN: u16 = 1001;
    pub const PROTOCOL_ERROR: u16 = 1002;
    pub const INVALID_PAYLOAD: u16 = 1007;
    pub const POLICY: u16 = 1008;
    pub const TOO_LARGE: u16 = 1009;
    pub const UNAUTHORIZED: u16 = 4001;
    /// Disconnected by the server (`POST /v1/disconnect`) or refused by the backend.
    pub const FORBIDDEN: u16 = 4003;
    pub const SLOW_CONSUMER: u16 = 4008;
    pub const RATE_LIMITED: u16 = 4029;
}
