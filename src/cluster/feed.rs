//! The feed: this node's one Redis pub/sub connection, carrying exactly the channels its
//! local sessions need.
//!
//! The task owns the reference counts of channels and channel patterns, so a channel is
//! subscribed once however many local subscriptions need it, and dropped with the last. When
//! the connection breaks it reconnects with backoff, subscribes everything again and tells
//! the bus ([`Incoming::Resynced`]) so it can fetch from the history streams what was
//! published while it was away.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::error::ClusterError;
use super::keys::{self, CONTROL, CONTROL_REPLY_PREFIX, REPLY_PREFIX};

/// What the feed hands to the bus.
#[derive(Debug)]
pub enum Incoming {
    /// A message published on `topic` (possibly twice, when a channel and a pattern of this
    /// node both match: offsets tell).
    Message { topic: String, payload: Vec<u8> },
    /// A reply for one of this node's request inboxes: `<inbox> <data>`.
    Reply { payload: Vec<u8> },
    /// A control command for every node (JSON, see `bus::remote::control`).
    Control { payload: Vec<u8> },
    /// A node's answer to one of this node's control commands.
    ControlReply { payload: Vec<u8> },
    /// The feed (re)connected; `lost_at_ms` is when it was lost (none on first connect).
    Resynced { lost_at_ms: Option<u64> },
}

/// Longest wait for Redis to answer a (re)connect or a subscribe.
const ANSWER: Duration = Duration::from_secs(2);
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

pub(super) enum Command {
    /// Subscribe to a channel (`pattern: false`) or channel pattern; `done` says whether the
    /// subscription is active in Redis now.
    Watch {
        name: String,
        pattern: bool,
        done: Option<oneshot::Sender<Result<(), ClusterError>>>,
    },
    Unwatch {
        name: String,
        pattern: bool,
    },
}

#[derive(Default)]
struct Counts {
    channels: HashMap<String, usize>,
    patterns: HashMap<String, usize>,
}

impl Counts {
    fn of(&mut self, pattern: bool) -> &mut HashMap<String, usize> {
        if pattern {
            &mut self.patterns
        } else {
            &mut self.channels
        }
    }

    /// Counts one more user of `name`; true for the first (it must be subscribed now).
    fn add(&mut self, name: &str, pattern: bool) -> bool {
        let n = self.of(pattern).entry(name.to_owned()).or_insert(0);
        *n += 1;
        *n == 1
    }

    /// Counts one user less of `name`; true for the last (it must be unsubscribed now).
    fn remove(&mut self, name: &str, pattern: bool) -> bool {
        let map = self.of(pattern);
        let Some(n) = map.get_mut(name) else {
            return false;
        };
        *n -= 1;
        if *n > 0 {
            return false;
        }
        map.remove(name);
        true
    }
}

pub(super) struct Feed {
    pub client: redis::Client,
    pub node: Arc<str>,
    pub up: Arc<AtomicBool>,
    /// Times the connection came back after a loss.
    pub reconnects: Arc<AtomicU64>,
    pub incoming: mpsc::Sender<Incoming>,
    pub commands: mpsc::UnboundedReceiver<Command>,
    pub cancel: CancellationToken,
}

impl Feed {
    pub async fn run(mut self) {
        let mut counts = Counts::default();
        let mut backoff = BACKOFF_MIN;
        let mut lost_at: Option<u64> = None;
        loop {
            let session = tokio::select! {
                _ = self.cancel.cancelled() => return,
                s = self.connect(&counts) => s,
            };
            let (sink, stream) = match session {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?backoff, "redis pub/sub unavailable");
                    let wait = tokio::time::sleep(backoff);
                    tokio::pin!(wait);
                    loop {
                        tokio::select! {
                            _ = self.cancel.cancelled() => return,
                            _ = &mut wait => break,
                            Some(c) = self.commands.recv() => refuse(&mut counts, c),
                        }
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
            };
            backoff = BACKOFF_MIN;
            if lost_at.is_some() {
                self.reconnects.fetch_add(1, Ordering::Relaxed);
            }
            self.up.store(true, Ordering::Release);
            tracing::info!("redis pub/sub connected");
            let _ = self
                .incoming
                .send(Incoming::Resynced {
                    lost_at_ms: lost_at.take(),
                })
                .await;
            let ended = self.serve(&mut counts, sink, stream).await;
            self.up.store(false, Ordering::Release);
            lost_at = Some(crate::event::now_ms());
            match ended {
                Ended::Cancelled => return,
                Ended::Broken(e) => tracing::warn!(error = %e, "redis pub/sub lost; reconnecting"),
            }
        }
    }

    /// Opens the connection and subscribes to everything counted.
    async fn connect(
        &self,
        counts: &Counts,
    ) -> Result<(redis::aio::PubSubSink, redis::aio::PubSubStream), ClusterError> {
        let pubsub = tokio::time::timeout(ANSWER, self.client.get_async_pubsub())
            .await
            .map_err(|_| ClusterError::Unavailable("no answer from Redis".into()))??;
        let (mut sink, stream) = pubsub.split();
        let mine = keys::reply_channel(&self.node);
        let channels: Vec<&String> = counts.channels.keys().collect();
        let patterns: Vec<&String> = counts.patterns.keys().collect();
        timed(sink.subscribe(&mine)).await?;
        timed(sink.subscribe(CONTROL)).await?;
        timed(sink.subscribe(keys::control_reply_channel(&self.node))).await?;
        if !channels.is_empty() {
            timed(sink.subscribe(channels)).await?;
        }
        if !patterns.is_empty() {
            timed(sink.psubscribe(patterns)).await?;
        }
        Ok((sink, stream))
    }

    async fn serve(
        &mut self,
        counts: &mut Counts,
        mut sink: redis::aio::PubSubSink,
        mut stream: redis::aio::PubSubStream,
    ) -> Ended {
        loop {
            tokio::select! {
                _ = self.cancel.cancelled() => return Ended::Cancelled,
                msg = stream.next() => {
                    let Some(msg) = msg else {
                        return Ended::Broken(ClusterError::Unavailable("connection closed".into()));
                    };
                    let channel = msg.get_channel_name();
                    let payload = msg.get_payload_bytes().to_vec();
                    let incoming = if channel.starts_with(REPLY_PREFIX) {
                        Incoming::Reply { payload }
                    } else if channel == CONTROL {
                        Incoming::Control { payload }
                    } else if channel.starts_with(CONTROL_REPLY_PREFIX) {
                        Incoming::ControlReply { payload }
                    } else if let Some(topic) = keys::topic_of(channel) {
                        Incoming::Message { topic: topic.to_owned(), payload }
                    } else {
                        continue;
                    };
                    if self.incoming.send(incoming).await.is_err() {
                        return Ended::Cancelled; // the bus is gone
                    }
                }
                Some(cmd) = self.commands.recv() => {
                    if let Err(e) = apply(counts, &mut sink, cmd).await {
                        return Ended::Broken(e);
                    }
                }
            }
        }
    }
}

enum Ended {
    Cancelled,
    Broken(ClusterError),
}

/// Applies a command on a live connection.
async fn apply(
    counts: &mut Counts,
    sink: &mut redis::aio::PubSubSink,
    cmd: Command,
) -> Result<(), ClusterError> {
    match cmd {
        Command::Watch {
            name,
            pattern,
            done,
        } => {
            let r = if counts.add(&name, pattern) {
                if pattern {
                    timed(sink.psubscribe(&name)).await
                } else {
                    timed(sink.subscribe(&name)).await
                }
            } else {
                Ok(())
            };
            if let Some(done) = done {
                let _ = done.send(r.clone());
            }
            r
        }
        Command::Unwatch { name, pattern } => {
            if !counts.remove(&name, pattern) {
                return Ok(());
            }
            if pattern {
                timed(sink.punsubscribe(&name)).await
            } else {
                timed(sink.unsubscribe(&name)).await
            }
        }
    }
}

/// Counts a command while disconnected (it takes effect on reconnect) and says so.
fn refuse(counts: &mut Counts, cmd: Command) {
    match cmd {
        Command::Watch {
            name,
            pattern,
            done,
        } => {
            counts.add(&name, pattern);
            if let Some(done) = done {
                let _ = done.send(Err(ClusterError::Unavailable(
                    "not connected to Redis".into(),
                )));
            }
        }
        Command::Unwatch { name, pattern } => {
            counts.remove(&name, pattern);
        }
    }
}

async fn timed(
    f: impl std::future::Future<Output = redis::RedisResult<()>>,
) -> Result<(), ClusterError> {
    tokio::time::timeout(ANSWER, f)
        .await
        .map_err(|_| ClusterError::Unavailable("no answer from Redis".into()))?
        .map_err(ClusterError::from)
}
