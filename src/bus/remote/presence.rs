//! Presence across the cluster: each node records its members in Redis, refreshes them
//! while it lives, and announces the leave of members whose node stopped refreshing them.

use std::sync::Weak;

use tokio_util::sync::CancellationToken;

use super::super::{Bus, BusError, Inner, PresenceList};
use super::{Remote, upgrade};
use crate::cluster::PRESENCE_REFRESH;
use crate::session::Session;
use crate::topic::Topic;

/// Refreshes this node's presence members in Redis and announces the leave of members
/// whose node stopped refreshing them.
pub(super) async fn keep_presence(bus: Weak<Inner>, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(PRESENCE_REFRESH);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let Some(bus) = upgrade(&bus) else { return };
        let Some(remote) = bus.redis() else { return };
        for (topic, members) in bus.inner.presence.snapshot() {
            let rows: Vec<(String, String)> = members
                .iter()
                .map(|m| (m.session.to_string(), member_info(&m.identity)))
                .collect();
            if let Err(e) = remote.cluster.presence_join(&topic, &rows).await {
                tracing::debug!(error = %e, "presence not refreshed");
                break;
            }
        }
        match remote.cluster.reap_presence().await {
            Ok(gone) => {
                for (topic, m) in gone {
                    bus.announce_remote_leave(&topic, &m);
                }
            }
            Err(e) => tracing::debug!(error = %e, "presence not reaped"),
        }
    }
}

/// What Redis keeps about a presence member besides its session id.
fn member_info(identity: &crate::session::Identity) -> String {
    serde_json::json!({"user": identity.user, "info": identity.info}).to_string()
}

impl Bus {
    /// A topic's members on every node, from Redis.
    pub(in crate::bus) async fn presence_remote(
        &self,
        remote: &Remote,
        topic: &Topic,
    ) -> Result<PresenceList, BusError> {
        let members = remote.cluster.presence(topic.as_str()).await?;
        let clients: Vec<crate::protocol::PresenceClient> = members
            .into_iter()
            .map(|m| crate::protocol::PresenceClient {
                session: m.session,
                user: m
                    .info
                    .get("user")
                    .and_then(|u| u.as_str())
                    .map(str::to_owned),
                info: m
                    .info
                    .get("info")
                    .cloned()
                    .unwrap_or(serde_json::Value::Null),
            })
            .collect();
        Ok(PresenceList {
            count: clients.len(),
            clients,
        })
    }

    /// Records a local presence join or leave in Redis (in the background: a join is not
    /// held up by Redis, and the refresh task repairs what a failed write missed).
    pub(in crate::bus) fn record_presence(&self, topic: &str, session: &Session, joined: bool) {
        let bus = self.clone();
        let topic = topic.to_owned();
        let id = session.id().to_string();
        let info = member_info(&session.identity());
        tokio::spawn(async move {
            let Some(remote) = bus.redis() else { return };
            let r = if joined {
                remote.cluster.presence_join(&topic, &[(id, info)]).await
            } else {
                remote.cluster.presence_leave(&topic, &id).await.map(|_| ())
            };
            if let Err(e) = r {
                tracing::debug!(error = %e, "presence not recorded in redis");
            }
        });
    }

    /// Publishes the leave of a member whose node stopped refreshing it, and tells the
    /// observer (this node is the one the member's expiry was handed to).
    fn announce_remote_leave(&self, topic: &str, m: &crate::cluster::RemoteMember) {
        if self.observed() {
            let user = m
                .info
                .get("user")
                .and_then(|u| u.as_str())
                .map(str::to_owned);
            let info = m.info.get("info").cloned().unwrap_or_default();
            self.notify(super::super::subscribe::presence_event(
                topic,
                m.session.as_str().into(),
                user,
                info,
                false,
            ));
        }
        let body = serde_json::json!({
            "event": "leave",
            "session": m.session,
            "user": m.info.get("user"),
            "info": m.info.get("info"),
        });
        let presence_topic = format!("$presence/{topic}");
        if let Err(e) = self.publish_json(&presence_topic, &body) {
            tracing::debug!(error = %e, topic = %presence_topic, "presence leave not published");
        }
    }
}
