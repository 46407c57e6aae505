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

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::error::ClusterError;
use super::keys::{self, CONTROL, CONTROL_REPLY_PREFIX, REPLY_PREFIX, SLOW};
use super::resp::{self, Endpoint, Reply, Stream};
use super::slowdown::Slowdown;

/// What the feed hands to the bus.
#[derive(Debug)]
pub enum Incoming {
    /// Messages published on `topic`, a batch (`wire::decode_batch`; possibly twice, when
    /// a channel and a pattern of this node both match: offsets tell). `read_at`: when the
    /// feed read it, to tell how far behind the node applies its feed.
    Message {
        topic: String,
        payload: Bytes,
        read_at: std::time::Instant,
    },
    /// A reply for one of this node's request inboxes: `<inbox> <data>`.
    Reply { payload: Bytes },
    /// A control command for every node (JSON, see `bus::remote::control`).
    Control { payload: Bytes },
    /// A node's answer to one of this node's control commands.
    ControlReply { payload: Bytes },
    /// A lagging node's ask to hold publishes (`slowdown.rs`); the feed applies it itself.
    Slow { payload: Bytes },
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
    pub at: Endpoint,
    pub node: Arc<str>,
    /// Carries the node's own channels (replies, control) too: the first shard's feed.
    pub global: bool,
    pub up: Arc<AtomicBool>,
    /// Holds asked by lagging nodes, applied as soon as they are read (never queued
    /// behind the messages this node is late with).
    pub slowdown: Arc<Slowdown>,
    /// Times the connection came back after a loss.
    pub reconnects: Arc<AtomicU64>,
    pub incoming: mpsc::Sender<Incoming>,
    pub commands: mpsc::UnboundedReceiver<Command>,
    pub cancel: CancellationToken,
}

/// A `SUBSCRIBE` or `PSUBSCRIBE` of one name waiting for Redis to confirm it.
struct Unconfirmed {
    pattern: bool,
    name: String,
    /// Who waits for it (several when the name was watched again before Redis confirmed).
    done: Vec<oneshot::Sender<Result<(), ClusterError>>>,
    deadline: Instant,
}

/// A live connection: its halves, what was read and not parsed yet, and the subscriptions
/// not yet confirmed (Redis confirms them in the order they were sent).
struct Live {
    stream: Stream,
    buf: BytesMut,
    unconfirmed: VecDeque<Unconfirmed>,
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
            let (live, early) = match session {
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
            let resynced = Incoming::Resynced {
                lost_at_ms: lost_at.take(),
            };
            if self.incoming.send(resynced).await.is_err() {
                return;
            }
            for m in early {
                if self.incoming.send(m).await.is_err() {
                    return;
                }
            }
            let mut live = live;
            let ended = self.serve(&mut counts, &mut live).await;
            self.up.store(false, Ordering::Release);
            for u in live.unconfirmed.drain(..) {
                for done in u.done {
                    let _ = done.send(Err(ClusterError::Unavailable(
                        "not connected to Redis".into(),
                    )));
                }
            }
            lost_at = Some(crate::event::now_ms());
            match ended {
                Ended::Cancelled => return,
                Ended::Broken(e) => tracing::warn!(error = %e, "redis pub/sub lost; reconnecting"),
            }
        }
    }

    /// Opens the connection and subscribes to everything counted. Messages that arrive
    /// before every subscription is confirmed are returned, to be applied after
    /// [`Incoming::Resynced`].
    async fn connect(&self, counts: &Counts) -> Result<(Live, Vec<Incoming>), ClusterError> {
        let (stream, buf) = resp::connect(&self.at).await?;
        let mut live = Live {
            stream,
            buf,
            unconfirmed: VecDeque::new(),
        };
        let mut channels = Vec::new();
        if self.global {
            channels.extend([
                keys::reply_channel(&self.node),
                CONTROL.to_owned(),
                keys::control_reply_channel(&self.node),
                SLOW.to_owned(),
            ]);
        }
        channels.extend(counts.channels.keys().cloned());
        let patterns: Vec<String> = counts.patterns.keys().cloned().collect();
        let mut out = Vec::new();
        for (names, pattern) in [(channels, false), (patterns, true)] {
            // In commands of bounded size: a node may need many channels.
            for chunk in names.chunks(1024) {
                let mut c = resp::Command::new(if pattern { "PSUBSCRIBE" } else { "SUBSCRIBE" });
                for name in chunk {
                    c.str(name);
                    live.unconfirmed.push_back(Unconfirmed {
                        pattern,
                        name: name.clone(),
                        done: Vec::new(),
                        deadline: Instant::now() + ANSWER,
                    });
                }
                c.write_to(&mut out);
            }
        }
        let unavailable = |e: std::io::Error| ClusterError::Unavailable(e.to_string());
        live.stream
            .write
            .write_all(&out)
            .await
            .map_err(unavailable)?;
        let mut early = Vec::new();
        let confirmed = async {
            while !live.unconfirmed.is_empty() {
                let reply = resp::read_reply(&mut live.stream, &mut live.buf).await?;
                if let Some(m) = push(reply, &mut live.unconfirmed, std::time::Instant::now())? {
                    early.push(m);
                }
            }
            Ok::<_, ClusterError>(())
        };
        tokio::time::timeout(ANSWER, confirmed)
            .await
            .map_err(|_| ClusterError::Unavailable("no answer from Redis".into()))??;
        Ok((live, early))
    }

    async fn serve(&mut self, counts: &mut Counts, live: &mut Live) -> Ended {
        let mut out = Vec::new();
        loop {
            if !out.is_empty() {
                if let Err(e) = live.stream.write.write_all(&out).await {
                    return Ended::Broken(ClusterError::Unavailable(e.to_string()));
                }
                out.clear();
            }
            if live.buf.capacity() - live.buf.len() < 4096 {
                live.buf.reserve(64 * 1024);
            }
            let deadline = live.unconfirmed.front().map(|u| u.deadline);
            tokio::select! {
                _ = self.cancel.cancelled() => return Ended::Cancelled,
                read = live.stream.read.read_buf(&mut live.buf) => {
                    match read {
                        Ok(0) => return Ended::Broken(ClusterError::Unavailable("connection closed".into())),
                        Err(e) => return Ended::Broken(ClusterError::Unavailable(e.to_string())),
                        Ok(_) => {}
                    }
                    let read_at = std::time::Instant::now();
                    loop {
                        let reply = match resp::parse(&mut live.buf) {
                            Ok(Some(r)) => r,
                            Ok(None) => break,
                            Err(e) => return Ended::Broken(ClusterError::Redis(e.to_string())),
                        };
                        match push(reply, &mut live.unconfirmed, read_at) {
                            Ok(Some(Incoming::Slow { payload })) => self.slowdown.heard(&payload),
                            Ok(Some(m)) => {
                                if self.incoming.send(m).await.is_err() {
                                    return Ended::Cancelled; // the bus is gone
                                }
                            }
                            Ok(None) => {}
                            Err(e) => return Ended::Broken(e),
                        }
                    }
                }
                Some(cmd) = self.commands.recv() => apply(counts, &mut live.unconfirmed, &mut out, cmd),
                _ = sleep_until(deadline), if deadline.is_some() => {
                    return Ended::Broken(ClusterError::Unavailable("no answer from Redis".into()));
                }
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at).await;
    }
}

/// What one push from Redis means: a message for the bus, or a confirmation (matched to
/// the oldest unconfirmed subscription).
fn push(
    reply: Reply,
    unconfirmed: &mut VecDeque<Unconfirmed>,
    read_at: std::time::Instant,
) -> Result<Option<Incoming>, ClusterError> {
    let bad = |what: &str| ClusterError::Redis(format!("unexpected push from Redis: {what}"));
    if let Some(e) = reply.error_text() {
        return Err(ClusterError::Redis(e));
    }
    let Reply::Array(mut items) = reply else {
        return Err(bad("not an array"));
    };
    let kind = items.first().and_then(Reply::as_bytes).cloned();
    let (channel, payload) = match (kind.as_deref(), items.len()) {
        (Some(b"message"), 3) => (items.swap_remove(1), items.swap_remove(1)),
        (Some(b"pmessage"), 4) => (items.swap_remove(2), items.swap_remove(2)),
        (Some(k @ (b"subscribe" | b"psubscribe")), 3) => {
            let pattern = k == b"psubscribe";
            let name = items[1].as_bytes().map(|b| b.as_ref());
            match unconfirmed.front() {
                Some(u) if u.pattern == pattern && name == Some(u.name.as_bytes()) => {
                    for done in unconfirmed.pop_front().into_iter().flat_map(|u| u.done) {
                        let _ = done.send(Ok(()));
                    }
                    return Ok(None);
                }
                _ => return Err(bad("a confirmation out of order")),
            }
        }
        (Some(b"unsubscribe" | b"punsubscribe"), 3) => return Ok(None),
        _ => return Err(bad("unknown kind")),
    };
    let (Some(channel), Some(payload)) = (channel.as_bytes(), payload.as_bytes()) else {
        return Err(bad("message without a channel or payload"));
    };
    let Ok(channel) = std::str::from_utf8(channel) else {
        return Ok(None);
    };
    let payload = payload.clone();
    Ok(Some(if channel.starts_with(REPLY_PREFIX) {
        Incoming::Reply { payload }
    } else if channel == CONTROL {
        Incoming::Control { payload }
    } else if channel == SLOW {
        Incoming::Slow { payload }
    } else if channel.starts_with(CONTROL_REPLY_PREFIX) {
        Incoming::ControlReply { payload }
    } else if let Some(topic) = keys::topic_of(channel) {
        Incoming::Message {
            topic: topic.to_owned(),
            payload,
            read_at,
        }
    } else {
        return Ok(None);
    }))
}

enum Ended {
    Cancelled,
    Broken(ClusterError),
}

/// Applies a command on a live connection: counted, and (un)subscribed in Redis when it is
/// the first (last) user of its name.
fn apply(
    counts: &mut Counts,
    unconfirmed: &mut VecDeque<Unconfirmed>,
    out: &mut Vec<u8>,
    cmd: Command,
) {
    match cmd {
        Command::Watch {
            name,
            pattern,
            done,
        } => {
            if counts.add(&name, pattern) {
                resp::Command::new(if pattern { "PSUBSCRIBE" } else { "SUBSCRIBE" })
                    .str(&name)
                    .write_to(out);
                unconfirmed.push_back(Unconfirmed {
                    pattern,
                    name,
                    done: done.into_iter().collect(),
                    deadline: Instant::now() + ANSWER,
                });
            } else if let Some(done) = done {
                // Subscribed already; but a subscription still unconfirmed is not active
                // yet: answer when it is.
                match unconfirmed
                    .iter_mut()
                    .rev()
                    .find(|u| u.pattern == pattern && u.name == name)
                {
                    Some(u) => u.done.push(done),
                    None => {
                        let _ = done.send(Ok(()));
                    }
                }
            }
        }
        Command::Unwatch { name, pattern } => {
            if counts.remove(&name, pattern) {
                resp::Command::new(if pattern {
                    "PUNSUBSCRIBE"
                } else {
                    "UNSUBSCRIBE"
                })
                .str(&name)
                .write_to(out);
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
