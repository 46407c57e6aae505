//! Control commands across the cluster: the asking node broadcasts the command on
//! `herald:ctl`, every node (itself included) runs it on its own sessions and answers on the
//! asker's channel `herald:cr:<node>` with `<id> <answer json>`. `PUBLISH` says how many
//! nodes heard the command, so the asker waits for exactly that many answers, at most
//! [`CONTROL_WAIT`]: a node that dies meanwhile costs the wait, and its sessions are left
//! out of the count (they are gone with it anyway). A node where the command fails (only a
//! subscribe of one session can: that session's node refuses it) answers with the error,
//! which the asker returns, as a single node would.
//!
//! Revocations also go to Redis (`herald:revoked`, a sorted set scored by `before`), read
//! again by every node whenever its feed (re)connects, so that a node started later refuses
//! the revoked tokens too.

use std::time::Duration;

use dashmap::DashMap;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::Remote;
use crate::bus::control::{Answer, Control};
use crate::bus::{Bus, BusError};

/// Longest wait for the other nodes' answers.
pub const CONTROL_WAIT: Duration = Duration::from_secs(2);

/// Control commands of this node waiting for answers, by id.
#[derive(Default)]
pub(in crate::bus) struct Waiting {
    map: DashMap<u64, mpsc::UnboundedSender<Answer>>,
}

/// A command as it travels.
#[derive(Serialize, Deserialize)]
struct Envelope {
    id: u64,
    from: String,
    #[serde(flatten)]
    cmd: Control,
}

impl Bus {
    pub(in crate::bus) async fn control_remote(
        &self,
        remote: &Remote,
        cmd: Control,
    ) -> Result<Answer, BusError> {
        if !remote.cluster.is_up() {
            return Err(BusError::Unavailable("not connected to Redis".into()));
        }
        let now = crate::event::now_ms() / 1000;
        if let Control::Revoke { user, before } = &cmd {
            let ttl = self.revocation_ttl();
            remote
                .cluster
                .revoke(user, *before, now.saturating_sub(ttl))
                .await?;
        }
        let id: u64 = rand::random();
        let (tx, mut rx) = mpsc::unbounded_channel();
        remote.control.map.insert(id, tx);
        let envelope = Envelope {
            id,
            from: remote.cluster.node().to_owned(),
            cmd,
        };
        let payload = serde_json::to_string(&envelope)
            .map_err(|e| BusError::BadRequest(format!("cannot encode the command: {e}")))?;
        let heard = match remote.cluster.control_broadcast(&payload).await {
            Ok(n) => n,
            Err(e) => {
                remote.control.map.remove(&id);
                return Err(e.into());
            }
        };
        let mut total = Answer::default();
        let mut answered = 0;
        let deadline = tokio::time::Instant::now() + CONTROL_WAIT;
        while answered < heard {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(a)) => {
                    total.add(a);
                    answered += 1;
                }
                _ => break,
            }
        }
        remote.control.map.remove(&id);
        if answered < heard {
            tracing::warn!(
                heard,
                answered,
                "control command: some nodes did not answer in time"
            );
        }
        // A node's refusal is the command's error, as on a single node (only a subscribe of
        // one session fails, and only its node can refuse it).
        if let Some(f) = total.error.take() {
            return Err(f.into());
        }
        total.sessions.sort_by(|a, b| a.session.cmp(&b.session));
        Ok(total)
    }

    /// Runs a command another node (or this one) broadcast, and answers it.
    pub(in crate::bus) fn apply_control(&self, payload: &[u8]) {
        let Ok(env) = serde_json::from_slice::<Envelope>(payload) else {
            tracing::debug!("control command not understood; ignored");
            return;
        };
        let bus = self.clone();
        // A task of its own: a server-side subscribe waits for Redis, which must not hold
        // up the feed.
        tokio::spawn(async move {
            let answer = bus.control_here(&env.cmd).await.unwrap_or_else(|e| {
                tracing::debug!(error = %e, "control command failed on this node");
                Answer {
                    error: Some((&e).into()),
                    ..Answer::default()
                }
            });
            let Some(remote) = bus.redis() else { return };
            let text = serde_json::to_string(&answer).unwrap_or_else(|_| "{}".into());
            let reply = format!("{} {text}", env.id);
            if let Err(e) = remote.cluster.control_reply(&env.from, &reply).await {
                tracing::debug!(error = %e, "control answer not sent");
            }
        });
    }

    /// An answer to one of this node's commands.
    pub(in crate::bus) fn apply_control_reply(&self, payload: &[u8]) {
        let Some(remote) = self.redis() else { return };
        let Ok(text) = std::str::from_utf8(payload) else {
            return;
        };
        let Some((id, body)) = text.split_once(' ') else {
            return;
        };
        let (Ok(id), Ok(answer)) = (id.parse::<u64>(), serde_json::from_str::<Answer>(body)) else {
            return;
        };
        if let Some(tx) = remote.control.map.get(&id) {
            let _ = tx.send(answer);
        }
    }

    /// Reads the revocations in force from Redis (on every feed (re)connect).
    pub(in crate::bus) async fn load_remote_revocations(&self) {
        let Some(remote) = self.redis() else { return };
        let since = (crate::event::now_ms() / 1000).saturating_sub(self.revocation_ttl());
        match remote.cluster.revocations(since).await {
            Ok(rows) => {
                self.load_revocations(&rows);
                remote
                    .revocations_loaded
                    .store(true, std::sync::atomic::Ordering::Release);
            }
            Err(e) => tracing::warn!(error = %e, "revocations not loaded from Redis"),
        }
    }
}
