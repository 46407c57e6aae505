//! The HTTP API's static keys: `api_keys` publish and read, `admin_keys` also list stats,
//! topics and presence.

use std::sync::Arc;

use super::{Access, AuthError};

/// Who is calling the HTTP API.
#[derive(Debug, Clone)]
pub enum Caller {
    /// No `[auth]`: everything is allowed.
    Open,
    Admin,
    ApiKey,
    /// A user's token: its permissions apply.
    Token(Arc<Access>),
}

impl Caller {
    /// Publishing to `topic` (a token needs publish permission for it).
    pub fn may_publish(&self, topic: &str) -> Result<(), AuthError> {
        match self {
            Caller::Token(a) if !a.may_publish(topic) => Err(AuthError::Forbidden(format!(
                "no permission to publish to '{topic}'"
            ))),
            _ => Ok(()),
        }
    }

    /// Reading the history of `topic` (a token needs subscribe permission for it).
    pub fn may_read(&self, topic: &str) -> Result<(), AuthError> {
        match self {
            Caller::Token(a) if !a.subscribe.allows_topic(topic) => Err(AuthError::Forbidden(
                format!("no permission to read '{topic}'"),
            )),
            _ => Ok(()),
        }
    }

    /// Server-wide listings: stats, topics, presence.
    pub fn may_list(&self) -> Result<(), AuthError> {
        match self {
            Caller::Open | Caller::Admin => Ok(()),
            _ => Err(AuthError::Forbidden(
                "this listing needs an admin key".into(),
            )),
        }
    }
}

pub(super) struct Keys {
    api: Vec<String>,
    admin: Vec<String>,
}

impl Keys {
    pub(super) fn new(api: &[String], admin: &[String]) -> Keys {
        Keys {
            api: api.to_vec(),
            admin: admin.to_vec(),
        }
    }

    /// The caller a key belongs to. Every configured key is compared, in constant time
    /// for equal lengths, so timing does not reveal which prefix matched.
    pub(super) fn find(&self, presented: &str) -> Option<Caller> {
        let admin = self
            .admin
            .iter()
            .fold(false, |hit, k| hit | same(k, presented));
        let api = self
            .api
            .iter()
            .fold(false, |hit, k| hit | same(k, presented));
        if admin {
            Some(Caller::Admin)
        } else if api {
            Some(Caller::ApiKey)
        } else {
            None
        }
    }
}

fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
