//! What the client's handles and its connection task share.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};

use parking_lot::Mutex;
use tokio::sync::{broadcast, oneshot};

use herald_protocol::OkFrame;

use crate::positions::ServerClock;
use crate::subscription::LocalSub;
use crate::{ClientError, ClientEvent, ClientOptions};

/// What answers a request: `ok` (or `pong`), or a `req`'s `reply`.
#[derive(Debug)]
pub(crate) enum Answer {
    Ok(OkFrame),
    Reply(serde_json::Value),
}

pub(crate) struct Shared {
    pub(crate) subs: Mutex<Vec<LocalSub>>,
    pub(crate) pending: Mutex<HashMap<i64, oneshot::Sender<Result<Answer, ClientError>>>>,
    pub(crate) next_id: AtomicI64,
    pub(crate) next_sub: AtomicU64,
    pub(crate) last_seq: AtomicU64,
    pub(crate) session: Mutex<Option<String>>,
    pub(crate) events: broadcast::Sender<ClientEvent>,
    pub(crate) options: ClientOptions,
    /// Fires on [`Client::close`], also while reconnecting.
    pub(crate) closing: tokio_util::sync::CancellationToken,
    /// The URLs to connect to, and which one is in use.
    pub(crate) urls: Vec<String>,
    pub(crate) url: AtomicUsize,
    /// Counts deliveries: the recency order of the position maps.
    pub(crate) tick: AtomicU64,
    /// The newest `ts` seen, for when a subscription started.
    pub(crate) clock: Mutex<ServerClock>,
    /// Ids of the recovery `sub`s awaiting their answer, with their pattern.
    pub(crate) recovering: Mutex<HashMap<i64, String>>,
    /// Server-side `subscribed`/`unsubscribed` frames since the last message.
    pub(crate) notes: Mutex<Notes>,
}

/// A resume sends again the seq-less frames that came after the last message the client
/// saw (PROTOCOL.md §6): those already handled are recognised and skipped.
#[derive(Default)]
pub(crate) struct Notes {
    /// Handled since the last message, in order.
    seen: Vec<String>,
    /// After a resume: what the server will send again first.
    replay: std::collections::VecDeque<String>,
}

impl Notes {
    /// A message arrived: notes before it will not come again.
    pub(crate) fn message(&mut self) {
        self.seen.clear();
        self.replay.clear();
    }

    /// Whether this note is new (and records it), or a resume's repeat.
    pub(crate) fn is_new(&mut self, text: &str) -> bool {
        if self.replay.front().is_some_and(|t| t == text) {
            self.replay.pop_front();
            return false;
        }
        self.replay.clear();
        self.seen.push(text.to_owned());
        true
    }

    /// A new connection: a resumed session repeats what was seen; a new one nothing.
    pub(crate) fn connected(&mut self, resumed: bool) {
        if resumed {
            self.replay = self.seen.iter().cloned().collect();
        } else {
            self.message();
        }
    }
}

impl Shared {
    pub(crate) fn new(urls: Vec<String>, options: ClientOptions) -> Shared {
        let (events, _) = broadcast::channel(256);
        Shared {
            subs: Mutex::new(Vec::new()),
            pending: Mutex::new(HashMap::new()),
            next_id: AtomicI64::new(1),
            next_sub: AtomicU64::new(1),
            last_seq: AtomicU64::new(0),
            session: Mutex::new(None),
            events,
            options,
            closing: Default::default(),
            urls,
            url: AtomicUsize::new(0),
            tick: AtomicU64::new(0),
            clock: Mutex::new(ServerClock::default()),
            recovering: Mutex::new(HashMap::new()),
            notes: Mutex::new(Notes::default()),
        }
    }

    pub(crate) fn tick(&self) -> u64 {
        self.tick.fetch_add(1, Ordering::Relaxed)
    }
}

pub(crate) enum Command {
    Send(String),
    DropConnection,
    Close,
}
