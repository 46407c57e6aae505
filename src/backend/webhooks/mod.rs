//! Webhooks (`[[webhooks]]`, PROTOCOL.md §10): the bus's events, POSTed to the application's
//! backend as JSON arrays of `{"id","type","ts","data"}`.
//!
//! Delivery is at least once: an event stays queued until a 2xx answer to a request that
//! carried it, and a request sent again carries the same ids (`<node prefix>-<counter>`,
//! unique per event), so a backend drops the duplicates by id. Each endpoint has its own
//! bounded queue and task (`queue`, `sender`): one endpoint down never delays another, and
//! the bus, which only queues, is never delayed by any.

mod queue;
mod sender;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::json;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use sender::{SIGNATURE, signature};

use super::{Client, Endpoint};
use crate::bus::{BusEvent, Observer};
use crate::config::WebhookConfig;
use crate::event::now_ms;
use crate::metrics::{Metrics, WebhookResult};
use queue::Queue;
use sender::Hook;

/// How long a graceful shutdown keeps sending what is queued.
pub const FLUSH: Duration = Duration::from_secs(2);

/// The endpoints and their delivery tasks; the bus's observer.
pub struct Webhooks {
    hooks: Vec<Arc<Hook>>,
    metrics: Arc<Metrics>,
    /// Leads every event id: random per process, so ids are unique across nodes and
    /// restarts.
    prefix: String,
    next_id: AtomicU64,
    tasks: parking_lot::Mutex<Vec<JoinHandle<()>>>,
    cancel: CancellationToken,
    stopped: AtomicBool,
}

impl Webhooks {
    /// Starts one delivery task per endpoint, until `cancel` or [`Webhooks::shutdown`].
    /// The error names the key.
    pub fn start(
        configs: &[WebhookConfig],
        client: Client,
        metrics: Arc<Metrics>,
        cancel: CancellationToken,
    ) -> Result<Arc<Webhooks>, String> {
        let mut hooks = Vec::with_capacity(configs.len());
        for (i, c) in configs.iter().enumerate() {
            let endpoint =
                Endpoint::parse(&c.url).map_err(|e| format!("webhooks[{i}].url: {e}"))?;
            let mut wants = [c.events.is_empty(); WebhookConfig::EVENTS.len()];
            for e in &c.events {
                let k = kind_of(e).ok_or_else(|| format!("webhooks[{i}].events: unknown {e}"))?;
                wants[k] = true;
            }
            hooks.push(Arc::new(Hook {
                url: c.url.clone(),
                endpoint,
                secret: c.secret.clone(),
                retry_for: c.retry_for,
                wants,
                queue: Queue::new(c.queue),
                draining: AtomicBool::new(false),
            }));
        }
        let tasks = hooks
            .iter()
            .map(|h| {
                tokio::spawn(
                    h.clone()
                        .run(client.clone(), metrics.clone(), cancel.clone()),
                )
            })
            .collect();
        Ok(Arc::new(Webhooks {
            hooks,
            metrics,
            prefix: format!("{:016x}", rand::random::<u64>()),
            next_id: AtomicU64::new(1),
            tasks: parking_lot::Mutex::new(tasks),
            cancel,
            stopped: AtomicBool::new(false),
        }))
    }

    /// Sends what is queued for up to [`FLUSH`], then stops; what is left is counted as
    /// dropped. Events observed afterwards are not queued.
    pub async fn shutdown(&self) {
        for h in &self.hooks {
            h.draining.store(true, Ordering::Release);
            h.queue.wake.notify_one();
        }
        let tasks = std::mem::take(&mut *self.tasks.lock());
        let all = futures_util::future::join_all(tasks);
        tokio::pin!(all);
        if tokio::time::timeout(FLUSH, &mut all).await.is_err() {
            self.cancel.cancel();
            let _ = all.await;
        }
        self.stop();
    }

    /// Stops at once (nothing more is sent or queued).
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        self.cancel.cancel();
        for h in &self.hooks {
            let left = h.queue.clear();
            if left > 0 {
                self.metrics
                    .backend
                    .webhook_events(WebhookResult::Dropped, left);
                self.metrics.backend.webhook_dequeued(left);
                tracing::warn!(url = %h.url, events = left, "webhook events not delivered before shutdown");
            }
        }
    }

    fn next_id(&self) -> String {
        format!(
            "{}-{}",
            self.prefix,
            self.next_id.fetch_add(1, Ordering::Relaxed)
        )
    }
}

impl Observer for Webhooks {
    fn observe(&self, event: BusEvent) {
        if self.stopped.load(Ordering::Acquire) {
            return;
        }
        let Some(kind) = kind_of(event.name()) else {
            return;
        };
        if !self.hooks.iter().any(|h| h.wants[kind]) {
            return;
        }
        let json = encode(&self.next_id(), &event, now_ms());
        let now = Instant::now();
        for h in self.hooks.iter().filter(|h| h.wants[kind]) {
            let pushed = h.queue.push(json.clone(), now);
            let m = &self.metrics.backend;
            m.webhook_queued(1);
            m.webhook_dequeued(pushed.dropped);
            m.webhook_events(WebhookResult::Dropped, pushed.dropped);
            if let Some(n) = pushed.report {
                tracing::warn!(url = %h.url, events = n, queue = ?h.queue.len(),
                    "webhook queue full: oldest events dropped");
            }
        }
    }
}

fn kind_of(name: &str) -> Option<usize> {
    WebhookConfig::EVENTS.iter().position(|e| *e == name)
}

/// One event as sent: `{"id","type","ts","data"}`.
fn encode(id: &str, event: &BusEvent, ts: u64) -> Bytes {
    let v = json!({
        "id": id,
        "type": event.name(),
        "ts": ts,
        "data": data(event),
    });
    Bytes::from(v.to_string())
}

/// An event's `data`.
fn data(event: &BusEvent) -> serde_json::Value {
    match event {
        BusEvent::SessionOpened { session, user } => json!({
            "session": &**session,
            "user": user,
        }),
        BusEvent::SessionClosed {
            session,
            user,
            reason,
        } => json!({
            "session": &**session,
            "user": user,
            "reason": reason,
        }),
        BusEvent::PresenceJoin {
            topic,
            session,
            user,
            info,
        }
        | BusEvent::PresenceLeave {
            topic,
            session,
            user,
            info,
        } => json!({
            "topic": topic,
            "session": &**session,
            "user": user,
            "info": info,
        }),
        BusEvent::TopicOccupied { pattern } | BusEvent::TopicVacated { pattern } => {
            json!({ "pattern": pattern })
        }
        BusEvent::MessageDead {
            topic,
            group,
            deliveries,
            data,
            msg_id,
        } => json!({
            "topic": topic,
            "group": group,
            "deliveries": deliveries,
            "msg_id": msg_id,
            "data": data,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_type_is_a_config_name() {
        let events = [
            BusEvent::SessionOpened {
                session: "s_1".into(),
                user: Some("u".into()),
            },
            BusEvent::SessionClosed {
                session: "s_1".into(),
                user: None,
                reason: "expired",
            },
            BusEvent::PresenceJoin {
                topic: "room".into(),
                session: "s_1".into(),
                user: None,
                info: serde_json::Value::Null,
            },
            BusEvent::PresenceLeave {
                topic: "room".into(),
                session: "s_1".into(),
                user: None,
                info: json!({"n": 1}),
            },
            BusEvent::TopicOccupied {
                pattern: "a/*".into(),
            },
            BusEvent::TopicVacated {
                pattern: "a/*".into(),
            },
            BusEvent::MessageDead {
                topic: "jobs".into(),
                group: "w".into(),
                deliveries: 3,
                data: json!({"job": 1}),
                msg_id: None,
            },
        ];
        let names: Vec<&str> = events.iter().map(BusEvent::name).collect();
        assert_eq!(names, WebhookConfig::EVENTS);
        let v: serde_json::Value = serde_json::from_slice(&encode("x-1", &events[6], 42)).unwrap();
        assert_eq!(
            v,
            json!({"id": "x-1", "type": "message.dead", "ts": 42, "data": {
                "topic": "jobs", "group": "w", "deliveries": 3, "msg_id": null, "data": {"job": 1}
            }})
        );
    }
}
