//! What the client reports beside deliveries: connection life events and errors.

use std::time::Duration;

use herald_protocol::{ErrorCode, GapFrame};

#[cfg(doc)]
use crate::{Client, Delivery};

/// Connection life events, from [`Client::events`].
#[derive(Debug, Clone, PartialEq)]
pub enum ClientEvent {
    Connected {
        /// The URL connected to (of those given to [`Client::connect_urls`]).
        url: String,
        session: String,
        resumed: bool,
    },
    Disconnected {
        reason: String,
    },
    Gap(GapFrame),
    /// A subscription was made again on a new session; `recovered` is false when it could
    /// not get everything it missed (see [`Delivery::TopicGap`]).
    Recovered {
        pattern: String,
        recovered: bool,
    },
    /// The server refused to recover a subscription (e.g. a server older than recovery):
    /// it was made again without, so live messages flow but what was missed is lost. A
    /// [`ClientEvent::Recovered`] with `recovered: false` follows.
    RecoveryRefused {
        pattern: String,
        code: ErrorCode,
        message: String,
    },
    /// The server is shutting down.
    Bye {
        retry_ms: u64,
    },
    /// The token expires at `exp` (Unix seconds); with [`ClientOptions::get_token`] the
    /// client refreshes it by itself.
    ///
    /// [`ClientOptions::get_token`]: crate::ClientOptions::get_token
    Expiring {
        exp: u64,
    },
    /// A `refresh` was accepted: the connection's token now expires at `exp`.
    Refreshed {
        exp: Option<u64>,
    },
    /// A refresh failed (no token could be had, or the server refused it); the connection
    /// closes at the old token's `exp`.
    RefreshFailed {
        message: String,
    },
    /// The server subscribed this session to `pattern` (a backend's `POST /v1/subscribe`).
    /// Its messages reach the subscriptions whose pattern matches them.
    Subscribed {
        pattern: String,
        group: Option<String>,
    },
    /// The server removed the subscription to `pattern`: `reason` is `"server"` (a
    /// backend's `POST /v1/unsubscribe`) or `"forbidden"` (a refreshed token no longer
    /// allows it). The client forgets it (a new session does not subscribe it again) and
    /// its [`crate::Subscription`] stream ends.
    Unsubscribed {
        pattern: String,
        group: Option<String>,
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ClientError {
    #[error("could not connect: {0}")]
    Connect(String),
    #[error("{code}: {message}")]
    Server { code: ErrorCode, message: String },
    #[error("the connection dropped before the answer came")]
    Disconnected,
    #[error("the client is closed")]
    Closed,
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Invalid(String),
}
