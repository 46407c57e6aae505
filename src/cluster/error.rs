//! What can go wrong talking to Redis, as the rest of the server sees it.

use std::sync::Arc;

use super::wire;

#[derive(Debug, Clone, thiserror::Error)]
pub enum ClusterError {
    #[error("invalid Redis URL {url:?}: {message}")]
    Url { url: String, message: String },
    #[error("Redis is unavailable: {0}")]
    Unavailable(String),
    #[error("Redis refused: {0}")]
    Redis(String),
    #[error(transparent)]
    Malformed(Arc<wire::Malformed>),
}

impl From<redis::RedisError> for ClusterError {
    fn from(e: redis::RedisError) -> Self {
        if e.is_io_error()
            || e.is_timeout()
            || e.is_connection_dropped()
            || e.is_connection_refusal()
        {
            ClusterError::Unavailable(e.to_string())
        } else {
            ClusterError::Redis(e.to_string())
        }
    }
}

impl From<wire::Malformed> for ClusterError {
    fn from(e: wire::Malformed) -> Self {
        ClusterError::Malformed(Arc::new(e))
    }
}
