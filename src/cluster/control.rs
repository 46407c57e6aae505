//! Control commands between nodes (`POST /v1/disconnect`, `/v1/subscribe`, …, see
//! `bus::remote::control`): a broadcast on one channel every node listens to, answers on the
//! asking node's own channel, and the revoked users kept in Redis for nodes that start later.

use redis::AsyncCommands;

use super::{Cluster, ClusterError, keys};

impl Cluster {
    /// Sends a command to every node (this one included); returns how many nodes listen.
    pub async fn control_broadcast(&self, payload: &str) -> Result<u64, ClusterError> {
        Ok(redis::cmd("PUBLISH")
            .arg(keys::CONTROL)
            .arg(payload)
            .query_async(&mut self.conn.clone())
            .await?)
    }

    /// Answers a command of `node`.
    pub async fn control_reply(&self, node: &str, payload: &str) -> Result<(), ClusterError> {
        let _: u64 = redis::cmd("PUBLISH")
            .arg(keys::control_reply_channel(node))
            .arg(payload)
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(())
    }

    /// Records a revocation (the later `before` wins) and forgets those older than
    /// `forget_before`.
    pub async fn revoke(
        &self,
        user: &str,
        before: u64,
        forget_before: u64,
    ) -> Result<(), ClusterError> {
        let mut pipe = redis::pipe();
        pipe.cmd("ZADD")
            .arg(keys::REVOKED)
            .arg("GT")
            .arg(before)
            .arg(user)
            .ignore()
            .cmd("ZREMRANGEBYSCORE")
            .arg(keys::REVOKED)
            .arg("-inf")
            .arg(format!("({forget_before}"))
            .ignore();
        let () = pipe.query_async(&mut self.conn.clone()).await?;
        Ok(())
    }

    /// The revocations still in force: `(user, before)`.
    pub async fn revocations(&self, since: u64) -> Result<Vec<(String, u64)>, ClusterError> {
        // Scores are doubles in Redis: read as such (a second fits exactly).
        let rows: Vec<(String, f64)> = self
            .conn
            .clone()
            .zrangebyscore_withscores(keys::REVOKED, since, "+inf")
            .await?;
        Ok(rows.into_iter().map(|(u, b)| (u, b as u64)).collect())
    }
}
