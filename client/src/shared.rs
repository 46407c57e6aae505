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
