//! Presence in Redis: per topic, a sorted set of member sessions scored by expiry and a hash
//! of their info. A member's node refreshes it; when a node dies its members expire, and
//! whichever node reaps them first announces their leave.

use std::time::Duration;

use redis::aio::ConnectionManager;

use super::error::ClusterError;
use super::keys::{self, TopicKeys};

/// Removes the members whose expiry passed and returns them, each to exactly one caller
/// however many nodes reap at once. Its KEYS, ARGV and answer are listed at the top of
/// `lua/reap_presence.lua`.
pub(super) const REAP_SCRIPT: &str = include_str!("lua/reap_presence.lua");

/// A presence member as stored in Redis.
#[derive(Debug, Clone)]
pub struct RemoteMember {
    pub session: String,
    /// `{"user":…,"info":…}`.
    pub info: serde_json::Value,
}

/// How long a presence entry lives without a refresh from its node.
pub const PRESENCE_TTL: Duration = Duration::from_secs(15);
/// How often a node refreshes its members and reaps expired ones.
pub const PRESENCE_REFRESH: Duration = Duration::from_secs(5);

/// Adds or refreshes members of `topic` (`(session, info json)`).
pub(super) async fn join(
    conn: &ConnectionManager,
    topic: &str,
    members: &[(String, String)],
) -> Result<(), ClusterError> {
    if members.is_empty() {
        return Ok(());
    }
    let keys = TopicKeys::new(topic);
    let expires = crate::event::now_ms() + PRESENCE_TTL.as_millis() as u64;
    let mut pipe = redis::pipe();
    for (session, info) in members {
        pipe.cmd("ZADD")
            .arg(&keys.presence)
            .arg(expires)
            .arg(session)
            .ignore();
        pipe.cmd("HSET")
            .arg(&keys.presence_info)
            .arg(session)
            .arg(info)
            .ignore();
    }
    pipe.cmd("SADD")
        .arg(keys::PRESENCE_TOPICS)
        .arg(topic)
        .ignore();
    pipe.query_async::<()>(&mut conn.clone()).await?;
    Ok(())
}

/// Removes a member; true when it was one.
pub(super) async fn leave(
    conn: &ConnectionManager,
    topic: &str,
    session: &str,
) -> Result<bool, ClusterError> {
    let keys = TopicKeys::new(topic);
    let (removed, _): (u64, u64) = redis::pipe()
        .cmd("ZREM")
        .arg(&keys.presence)
        .arg(session)
        .cmd("HDEL")
        .arg(&keys.presence_info)
        .arg(session)
        .query_async(&mut conn.clone())
        .await?;
    Ok(removed > 0)
}

/// The live members of `topic`, ordered by session id.
pub(super) async fn members(
    conn: &ConnectionManager,
    topic: &str,
) -> Result<Vec<RemoteMember>, ClusterError> {
    let keys = TopicKeys::new(topic);
    let now = crate::event::now_ms();
    let sessions: Vec<String> = redis::cmd("ZRANGEBYSCORE")
        .arg(&keys.presence)
        .arg(format!("({now}"))
        .arg("+inf")
        .query_async(&mut conn.clone())
        .await?;
    if sessions.is_empty() {
        return Ok(Vec::new());
    }
    let infos: Vec<Option<String>> = redis::cmd("HMGET")
        .arg(&keys.presence_info)
        .arg(&sessions)
        .query_async(&mut conn.clone())
        .await?;
    let mut members: Vec<RemoteMember> = sessions
        .into_iter()
        .zip(infos)
        .map(|(session, info)| RemoteMember {
            session,
            info: info
                .and_then(|i| serde_json::from_str(&i).ok())
                .unwrap_or(serde_json::Value::Null),
        })
        .collect();
    members.sort_by(|a, b| a.session.cmp(&b.session));
    Ok(members)
}

/// Removes members whose node stopped refreshing them with `script` (the loaded
/// [`REAP_SCRIPT`]); returns `(topic, member)` for each. Each expired member is returned to
/// one node only.
pub(super) async fn reap(
    conn: &ConnectionManager,
    script: &redis::Script,
) -> Result<Vec<(String, RemoteMember)>, ClusterError> {
    let topics: Vec<String> = redis::cmd("SMEMBERS")
        .arg(keys::PRESENCE_TOPICS)
        .query_async(&mut conn.clone())
        .await?;
    let now = crate::event::now_ms();
    let mut gone = Vec::new();
    for topic in topics {
        let keys = TopicKeys::new(&topic);
        let flat: Vec<String> = script
            .key(&keys.presence)
            .key(&keys.presence_info)
            .arg(now)
            .invoke_async(&mut conn.clone())
            .await?;
        for pair in flat.chunks_exact(2) {
            gone.push((
                topic.clone(),
                RemoteMember {
                    session: pair[0].clone(),
                    info: serde_json::from_str(&pair[1]).unwrap_or(serde_json::Value::Null),
                },
            ));
        }
    }
    Ok(gone)
}
