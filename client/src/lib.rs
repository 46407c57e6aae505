//! A Rust client for Herald over WebSocket, on the same frame types as the server.
//!
//! ```no_run
//! # async fn demo() -> Result<(), herald_client::ClientError> {
//! use herald_client::{Client, Delivery};
//! let client = Client::connect("ws://127.0.0.1:7400/ws").await?;
//! let mut orders = client.subscribe("orders/**").await?;
//! client.publish("orders/eu/created", &serde_json::json!({"id": 7})).await?;
//! while let Some(Delivery::Msg(m)) = orders.next().await {
//!     println!("{} {}", m.topic, m.data);
//! }
//! # Ok(()) }
//! ```
//!
//! # Reconnecting, resuming, recovering
//!
//! A background task owns the socket. When the connection drops it reconnects with
//! exponential backoff and jitter, and says `hello` with its session and `last_seq`:
//!
//! - If the server still has the session, it **resumes**: the server sends what the
//!   session buffered meanwhile, in order. Messages the buffer had to drop reach every
//!   subscription as [`Delivery::Gap`] and the event stream as [`ClientEvent::Gap`].
//! - If not (the session's TTL ran out, the server restarted, or the client reached
//!   another node), each subscription **recovers**: every plain subscription remembers the
//!   last epoch and offset of each topic it delivered (the 1000 most recently delivered
//!   topics) and when it was made, and subscribes again asking for what follows them
//!   (`sub.since {topics, ts}`; topics it never had a message of replay what is newer than
//!   `ts`), so topics with history lose nothing. What the server can no longer replay
//!   arrives as a [`Delivery::TopicGap`] with the exact offsets, before what it still holds;
//!   each subscription also gets [`Delivery::Recovered`] (and the event stream
//!   [`ClientEvent::Recovered`]) saying whether nothing is missing. Group subscriptions are
//!   made again without recovery: their unacked messages are redelivered anyway.
//!
//! A subscription never shows a message twice: one whose epoch and offset it already
//! delivered is dropped, which makes the seam between a replay and live messages safe.
//! The time a subscription was made is taken from the server's timestamps when the client
//! has seen any (the newest one, plus the time since it came), as the local clock may be
//! off; else from the local clock, a second early (and earlier if the first message shows
//! the server's clock behind).
//!
//! # Several servers
//!
//! [`Client::connect_urls`] takes several URLs (the nodes of a cluster, or standbys): the
//! first connect tries them in turn, and every reconnect attempt moves to the next one, so a
//! client whose node died reaches another; recovery then fetches what it missed there.

mod events;
mod positions;
mod recovery;
mod shared;
mod subscription;
mod task;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{broadcast, mpsc, oneshot};

pub use events::{ClientError, ClientEvent};
pub use herald_protocol::msgpack::{binary, binary_of};
use herald_protocol::topic::Pattern;
use herald_protocol::{AckMode, ClientFrame, Id, OkFrame};
pub use herald_protocol::{
    ErrorCode, GapFrame, HistoryMessage, MsgFrame, Position, PresenceClient, Since, TopicGapFrame,
    TopicGapReason, TopicPositions,
};
pub use subscription::{Delivery, SubscribeOptions, Subscription};

use positions::Positions;
use shared::{Answer, Command, Shared};
use subscription::LocalSub;

/// Tuning for [`Client::connect_with`] and [`Client::connect_urls`].
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Reconnect and resume after the connection drops (default true).
    pub reconnect: bool,
    /// Wait before the first reconnect attempt, doubled per failed attempt up to
    /// `backoff_max` (with jitter).
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// How long `publish`/`subscribe` wait for their `ok`.
    pub request_timeout: Duration,
    /// Sent in `hello`.
    pub token: Option<String>,
    /// Where tokens come from, called before every connection (first connect and every
    /// reconnect) and when the server says the token is `expiring`: the new token is then
    /// sent with `refresh` on the open connection, no reconnect. Wins over `token`.
    pub get_token: Option<GetToken>,
    /// Speak `herald.v1.msgpack` (PROTOCOL.md §2): MessagePack in binary frames, so binary
    /// data travels as bytes, not base64. `data` stays a [`serde_json::Value`] either way,
    /// with binary values as `{"$base64": …}` objects: see [`binary`] and [`binary_of`].
    /// Connecting fails when the server does not choose the subprotocol.
    pub msgpack: bool,
}

/// A source of tokens for [`ClientOptions::get_token`]: an async function returning a
/// fresh token (or why it could not).
#[derive(Clone)]
pub struct GetToken(
    Arc<dyn Fn() -> futures_util::future::BoxFuture<'static, Result<String, String>> + Send + Sync>,
);

impl GetToken {
    pub fn new<F, Fut>(f: F) -> GetToken
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<String, String>> + Send + 'static,
    {
        GetToken(Arc::new(move || Box::pin(f())))
    }

    pub(crate) async fn get(&self) -> Result<String, String> {
        (self.0)().await
    }
}

impl std::fmt::Debug for GetToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GetToken(..)")
    }
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            reconnect: true,
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            token: None,
            get_token: None,
            msgpack: false,
        }
    }
}

/// The answer to a publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PubAck {
    pub offset: u64,
    pub epoch: String,
    pub duplicate: bool,
}

/// Options of a publish.
#[derive(Debug, Clone, Default)]
pub struct PublishOptions {
    pub msg_id: Option<String>,
    pub retain: bool,
}

/// A connected client. Cheap to clone; the connection ends when the last clone is dropped
/// or [`Client::close`] is called.
#[derive(Clone)]
pub struct Client {
    shared: Arc<Shared>,
    cmd: mpsc::UnboundedSender<Command>,
}

impl Client {
    /// Connects with default options; returns once the server said `welcome`.
    pub async fn connect(url: &str) -> Result<Client, ClientError> {
        Self::connect_with(url, ClientOptions::default()).await
    }

    /// Connects to one URL with options.
    pub async fn connect_with(url: &str, options: ClientOptions) -> Result<Client, ClientError> {
        Self::connect_urls([url], options).await
    }

    /// Connects to the first of `urls` that works (tried in turn); each reconnect attempt
    /// then moves to the next one, round robin. With one URL, its error is returned as is;
    /// with several, a [`ClientError::Connect`] lists each one's.
    pub async fn connect_urls<I, S>(urls: I, options: ClientOptions) -> Result<Client, ClientError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let urls: Vec<String> = urls.into_iter().map(Into::into).collect();
        if urls.is_empty() {
            return Err(ClientError::Invalid("no URL to connect to".into()));
        }
        let shared = Arc::new(Shared::new(urls, options));
        let mut failed = Vec::new();
        for i in 0..shared.urls.len() {
            match task::open(&shared, i).await {
                Ok(ws) => {
                    let (cmd, rx) = mpsc::unbounded_channel();
                    tokio::spawn(task::run(ws, shared.clone(), rx));
                    return Ok(Client { shared, cmd });
                }
                Err(e) => failed.push(e),
            }
        }
        if failed.len() == 1 {
            return Err(failed.remove(0));
        }
        let each: Vec<String> = shared
            .urls
            .iter()
            .zip(&failed)
            .map(|(u, e)| format!("{u}: {e}"))
            .collect();
        Err(ClientError::Connect(each.join("; ")))
    }

    /// The URL of the current connection (while reconnecting: of the last one).
    pub fn url(&self) -> &str {
        &self.shared.urls[self.shared.url.load(Ordering::Acquire)]
    }

    /// The current session id.
    pub fn session(&self) -> Option<String> {
        self.shared.session.lock().clone()
    }

    /// The last `seq` received.
    pub fn last_seq(&self) -> u64 {
        self.shared.last_seq.load(Ordering::Acquire)
    }

    /// Connection events (connected, disconnected, gaps, recoveries, bye).
    pub fn events(&self) -> broadcast::Receiver<ClientEvent> {
        self.shared.events.subscribe()
    }

    /// Subscribes to a pattern; the returned stream gets every matching message.
    pub async fn subscribe(&self, pattern: &str) -> Result<Subscription, ClientError> {
        self.subscribe_with(pattern, SubscribeOptions::default())
            .await
    }

    /// Subscribes with options: a queue group (with manual acks), `rewind` or `since`.
    /// Returns once the server confirmed; [`Subscription::recovered`] tells whether a
    /// `since` replay was complete. `rewind` and `since` apply to this subscribe only: when
    /// the session is lost, the subscription recovers from what it delivered.
    pub async fn subscribe_with(
        &self,
        pattern: &str,
        opts: SubscribeOptions,
    ) -> Result<Subscription, ClientError> {
        let parsed = Pattern::parse(pattern).map_err(|e| ClientError::Invalid(e.to_string()))?;
        let (tx, rx) = mpsc::unbounded_channel();
        let key = self.shared.next_sub.fetch_add(1, Ordering::Relaxed);
        let positions = opts.group.is_none().then(|| {
            let mut p = Positions::new(self.shared.clock.lock().start_ts());
            if let Some(since) = &opts.since {
                p.seed(pattern, since, &mut || self.shared.tick());
            }
            p
        });
        self.shared.subs.lock().push(LocalSub {
            key,
            pattern: parsed,
            group: opts.group.clone(),
            manual_ack: opts.manual_ack,
            positions,
            tx,
        });
        let mut sub = Subscription {
            rx,
            key,
            pattern: pattern.to_owned(),
            group: opts.group.clone(),
            recovered: None,
            client: self.clone(),
        };
        let ok = self
            .request_ok(|id| ClientFrame::Sub {
                id: Some(id),
                pattern: pattern.into(),
                group: opts.group.clone(),
                ack: opts.manual_ack.then_some(AckMode::Manual),
                rewind: opts.rewind,
                since: opts.since.clone(),
            })
            .await?;
        sub.recovered = ok.recovered;
        Ok(sub)
    }

    /// Acknowledges a message of a manual-ack group subscription.
    pub fn ack(&self, seq: u64) -> Result<(), ClientError> {
        self.send_frame(&ClientFrame::Ack { seq })
    }

    /// Sends a request to whoever subscribes to `topic` and waits for the first reply.
    /// Fails with `no_responders` at once when nobody does, and with `timeout` after
    /// `timeout` (at most 60 s).
    pub async fn request<T: Serialize>(
        &self,
        topic: &str,
        data: &T,
        timeout: Duration,
    ) -> Result<serde_json::Value, ClientError> {
        let raw = serde_json::value::to_raw_value(data)
            .map_err(|e| ClientError::Invalid(format!("data is not JSON: {e}")))?;
        let timeout_ms = timeout.as_millis().max(1) as u64;
        let answer = self
            .call(
                |id| ClientFrame::Req {
                    id: Some(id),
                    topic: topic.into(),
                    data: &raw,
                    timeout_ms: Some(timeout_ms),
                },
                timeout + self.shared.options.request_timeout,
            )
            .await?;
        match answer {
            Answer::Reply(v) => Ok(v),
            Answer::Ok(_) => Err(ClientError::Invalid("server answered 'ok' to 'req'".into())),
        }
    }

    /// A topic's stored messages (oldest first) and its epoch: with `since`, the first
    /// `limit` after that offset; without, the newest `limit`.
    pub async fn history(
        &self,
        topic: &str,
        since: Option<u64>,
        limit: Option<u64>,
    ) -> Result<(String, Vec<HistoryMessage>), ClientError> {
        let ok = self
            .request_ok(|id| ClientFrame::History {
                id: Some(id),
                topic: topic.into(),
                since,
                limit,
            })
            .await?;
        Ok((
            ok.epoch.unwrap_or_default(),
            ok.messages.unwrap_or_default(),
        ))
    }

    /// Who is subscribed to an exact topic.
    pub async fn presence(&self, topic: &str) -> Result<Vec<PresenceClient>, ClientError> {
        let ok = self
            .request_ok(|id| ClientFrame::Presence {
                id: Some(id),
                topic: topic.into(),
            })
            .await?;
        Ok(ok.clients.unwrap_or_default())
    }

    /// Publishes and waits for the server's `ok`.
    pub async fn publish<T: Serialize>(
        &self,
        topic: &str,
        data: &T,
    ) -> Result<PubAck, ClientError> {
        self.publish_with(topic, data, PublishOptions::default())
            .await
    }

    pub async fn publish_with<T: Serialize>(
        &self,
        topic: &str,
        data: &T,
        opts: PublishOptions,
    ) -> Result<PubAck, ClientError> {
        let raw = serde_json::value::to_raw_value(data)
            .map_err(|e| ClientError::Invalid(format!("data is not JSON: {e}")))?;
        let ok = self
            .request_ok(|id| ClientFrame::Pub {
                id: Some(id),
                topic: topic.into(),
                data: &raw,
                msg_id: opts.msg_id.clone(),
                retain: opts.retain,
            })
            .await?;
        Ok(PubAck {
            offset: ok.offset.unwrap_or(0),
            epoch: ok.epoch.unwrap_or_default(),
            duplicate: ok.duplicate.unwrap_or(false),
        })
    }

    /// Publishes without waiting for an answer (errors still arrive as events… and are
    /// otherwise dropped). The fastest way to publish.
    pub fn publish_nowait<T: Serialize>(&self, topic: &str, data: &T) -> Result<(), ClientError> {
        let raw = serde_json::value::to_raw_value(data)
            .map_err(|e| ClientError::Invalid(format!("data is not JSON: {e}")))?;
        let frame = ClientFrame::Pub {
            id: None,
            topic: topic.into(),
            data: &raw,
            msg_id: None,
            retain: false,
        };
        self.send_frame(&frame)
    }

    /// Round trip to the server.
    pub async fn ping(&self) -> Result<(), ClientError> {
        self.request_ok(|id| ClientFrame::Ping { id: Some(id) })
            .await
            .map(|_| ())
    }

    /// Drops the socket without a close handshake, as a network failure would. The client
    /// reconnects and resumes (when `reconnect` is on). Meant for tests and demos.
    pub fn drop_connection(&self) {
        let _ = self.cmd.send(Command::DropConnection);
    }

    /// Closes the connection; pending requests fail with [`ClientError::Closed`].
    pub fn close(&self) {
        self.shared.closing.cancel();
        let _ = self.cmd.send(Command::Close);
    }

    pub(crate) fn send_frame(&self, frame: &ClientFrame<'_>) -> Result<(), ClientError> {
        let text = serde_json::to_string(frame).map_err(|e| ClientError::Invalid(e.to_string()))?;
        self.cmd
            .send(Command::Send(text))
            .map_err(|_| ClientError::Closed)
    }

    async fn request_ok<'a>(
        &self,
        make: impl FnOnce(Id) -> ClientFrame<'a>,
    ) -> Result<OkFrame, ClientError> {
        match self.call(make, self.shared.options.request_timeout).await? {
            Answer::Ok(ok) => Ok(ok),
            Answer::Reply(_) => Err(ClientError::Invalid("unexpected 'reply'".into())),
        }
    }

    async fn call<'a>(
        &self,
        make: impl FnOnce(Id) -> ClientFrame<'a>,
        timeout: Duration,
    ) -> Result<Answer, ClientError> {
        let n = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.shared.pending.lock().insert(n, tx);
        if let Err(e) = self.send_frame(&make(Id::Num(n))) {
            self.shared.pending.lock().remove(&n);
            return Err(e);
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(ClientError::Closed),
            Err(_) => {
                self.shared.pending.lock().remove(&n);
                Err(ClientError::Timeout(timeout))
            }
        }
    }
}
