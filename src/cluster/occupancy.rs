//! Occupancy in Redis: per subscription pattern, a sorted set of the nodes with subscribers
//! to it, scored by expiry, so that `topic.occupied` and `topic.vacated` fire once per
//! cluster. The node whose join finds the set empty announces the occupancy, the node whose
//! leave empties it the vacancy; a node refreshes its entries while it lives, and when it
//! dies the reaper that removes its last expired entry (one caller, however many reap)
//! announces the vacancy. An index of the patterns scored by their latest expiry lets the
//! reaper look only at patterns whose nodes all stopped refreshing.
//!
//! Each pattern's operations are one script call (`lua/occupancy.lua`, which lists their
//! answers), sent in pipelines.

use std::sync::Arc;
use std::time::Duration;

use redis::Value;
use redis::aio::ConnectionManager;

use super::error::ClusterError;
use super::keys;

/// The script of every occupancy operation.
pub(super) const SCRIPT: &str = include_str!("lua/occupancy.lua");

/// How long a node's entry lives without a refresh.
pub const OCCUPANCY_TTL: Duration = Duration::from_secs(9);
/// How often a node refreshes its entries and reaps those of dead nodes.
pub const OCCUPANCY_REFRESH: Duration = Duration::from_secs(3);
/// Most patterns per pipeline.
pub const OCCUPANCY_CHUNK: usize = 256;

/// What a node's join or leave did to a pattern's cluster-wide occupancy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Occupancy {
    /// This call changed it: the join found the pattern empty, the leave emptied it.
    Changed,
    /// The pattern is as this call would have left it, but the node's entry already was
    /// (join) or no longer was (leave) there: an earlier call of the node whose answer was
    /// lost may have made the change, or (leave) a reaper removed the node's expired entry.
    Unsure,
    /// Other nodes hold it: nothing changed for the cluster.
    Unchanged,
}

fn occupancy_of(v: &Value) -> Result<Occupancy, ClusterError> {
    match v {
        Value::Int(1) => Ok(Occupancy::Changed),
        Value::Int(2) => Ok(Occupancy::Unsure),
        Value::Int(0) => Ok(Occupancy::Unchanged),
        Value::ServerError(e) => Err(ClusterError::Redis(e.to_string())),
        other => Err(ClusterError::Redis(format!(
            "unexpected answer of the occupancy script: {other:?}"
        ))),
    }
}

/// Adds or refreshes `node`'s entries for `patterns` (at most [`OCCUPANCY_CHUNK`] of them)
/// and keeps them in the index; one answer per pattern.
pub(super) async fn join(
    conn: &ConnectionManager,
    script: &redis::Script,
    node: &str,
    patterns: &[Arc<str>],
) -> Result<Vec<Occupancy>, ClusterError> {
    if patterns.is_empty() {
        return Ok(Vec::new());
    }
    let expires = crate::event::now_ms() + OCCUPANCY_TTL.as_millis() as u64;
    let mut pipe = redis::pipe();
    pipe.load_script(script).ignore();
    for p in patterns {
        pipe.invoke_script(
            script
                .key(keys::occupancy(p))
                .arg("join")
                .arg(node)
                .arg(expires),
        );
    }
    let mut index = redis::cmd("ZADD");
    index.arg(keys::OCCUPIED);
    for p in patterns {
        index.arg(expires).arg(&**p);
    }
    pipe.add_command(index).ignore();
    let answers: Vec<Value> = pipe.query_async(&mut conn.clone()).await?;
    answers.iter().map(occupancy_of).collect()
}

/// Removes `node`'s entries for `patterns` (at most [`OCCUPANCY_CHUNK`]); one answer each.
pub(super) async fn leave(
    conn: &ConnectionManager,
    script: &redis::Script,
    node: &str,
    patterns: &[Arc<str>],
) -> Result<Vec<Occupancy>, ClusterError> {
    if patterns.is_empty() {
        return Ok(Vec::new());
    }
    let now = crate::event::now_ms();
    let mut pipe = redis::pipe();
    pipe.load_script(script).ignore();
    for p in patterns {
        pipe.invoke_script(
            script
                .key(keys::occupancy(p))
                .arg("leave")
                .arg(node)
                .arg(now),
        );
    }
    let answers: Vec<Value> = pipe.query_async(&mut conn.clone()).await?;
    answers.iter().map(occupancy_of).collect()
}

/// Removes the entries of nodes that stopped refreshing them; returns the patterns that this
/// left empty, each to exactly one caller however many nodes reap at once. A failure after
/// some were found still returns those (their entries are gone: nobody else will).
pub(super) async fn reap(
    conn: &ConnectionManager,
    script: &redis::Script,
) -> Result<Vec<String>, ClusterError> {
    let mut vacated = Vec::new();
    match reap_into(conn, script, &mut vacated).await {
        Err(e) if vacated.is_empty() => Err(e),
        Err(e) => {
            tracing::debug!(error = %e, "occupancy reap cut short");
            Ok(vacated)
        }
        Ok(()) => Ok(vacated),
    }
}

async fn reap_into(
    conn: &ConnectionManager,
    script: &redis::Script,
    vacated: &mut Vec<String>,
) -> Result<(), ClusterError> {
    let now = crate::event::now_ms();
    // Patterns with live entries stay in the index (their nodes refresh it): skipped.
    let mut skip = 0;
    loop {
        let due: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(keys::OCCUPIED)
            .arg("-inf")
            .arg(now)
            .arg("LIMIT")
            .arg(skip)
            .arg(OCCUPANCY_CHUNK)
            .query_async(&mut conn.clone())
            .await?;
        if due.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        pipe.load_script(script).ignore();
        for p in &due {
            pipe.invoke_script(script.key(keys::occupancy(p)).arg("reap").arg(now));
        }
        let answers: Vec<Value> = pipe.query_async(&mut conn.clone()).await?;
        let mut forget = redis::pipe();
        forget.load_script(script).ignore();
        for (p, a) in due.iter().zip(&answers) {
            match a {
                Value::Int(0) => skip += 1,
                Value::Int(n @ (1 | -1)) => {
                    if *n == 1 {
                        vacated.push(p.clone());
                    }
                    forget
                        .invoke_script(script.key(keys::OCCUPIED).arg("forget").arg(p).arg(now))
                        .ignore();
                }
                other => {
                    return Err(ClusterError::Redis(format!(
                        "unexpected answer of the occupancy reaper: {other:?}"
                    )));
                }
            }
        }
        forget.query_async::<()>(&mut conn.clone()).await?;
        if due.len() < OCCUPANCY_CHUNK {
            return Ok(());
        }
    }
}
