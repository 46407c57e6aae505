//! Errors of the bus, each mapped to a protocol error code.

use crate::protocol::ErrorCode;
use crate::topic::{PatternError, TopicError};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BusError {
    #[error("{0}")]
    BadTopic(#[from] TopicError),
    #[error("{0}")]
    BadPattern(#[from] PatternError),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("a session may hold at most {0} subscriptions")]
    TooManySubscriptions(usize),
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    RateLimited(String),
    #[error("no subscriber matches '{0}'")]
    NoResponders(String),
    #[error("no reply within {0} ms")]
    Timeout(u64),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0} is not supported yet")]
    NotSupported(&'static str),
}

impl BusError {
    pub fn code(&self) -> ErrorCode {
        match self {
            BusError::BadTopic(_) => ErrorCode::BadTopic,
            BusError::BadPattern(_) => ErrorCode::BadPattern,
            BusError::BadRequest(_) | BusError::NotSupported(_) => ErrorCode::BadRequest,
            BusError::Forbidden(_) => ErrorCode::Forbidden,
            BusError::TooManySubscriptions(_) => ErrorCode::TooManySubscriptions,
            BusError::TooLarge(_) => ErrorCode::TooLarge,
            BusError::RateLimited(_) => ErrorCode::RateLimited,
            BusError::NoResponders(_) => ErrorCode::NoResponders,
            BusError::Timeout(_) => ErrorCode::Timeout,
            BusError::NotFound(_) => ErrorCode::NotFound,
            BusError::Unavailable(_) => ErrorCode::Unavailable,
        }
    }
}

impl From<crate::cluster::ClusterError> for BusError {
    fn from(e: crate::cluster::ClusterError) -> Self {
        BusError::Unavailable(e.to_string())
    }
}
