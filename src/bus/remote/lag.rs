//! This node's lag behind its feed: what it does about it itself (lets its writers drain
//! before the next batch) and the holds it asks the cluster for (`cluster::slowdown`).
//!
//! Thresholds are in eighths of a session's buffer (`buffer_messages`), counting only
//! writers that are runnable (their socket takes what it is given, so they are short of
//! CPU). A writer waiting for a slow reader never counts (see `Session::push`), so a slow
//! reader never slows this node's feed or the cluster. A batch of up to 512 messages
//! arrives at once, so the node must act while a session still has room for one:
//! - past [`DRAIN_OVER`] the apply task yields, so the writers run before the next batch;
//! - past [`ASK_OVER`] (or when a batch is applied [`LATE`] after the feed read it: Redis's
//!   messages queue in front of the node) the node asks every node to hold publishes;
//! - once the sessions it watches are back to [`RELEASE_AT`] and the feed is on time, it
//!   releases the hold. While holding, it looks every [`TICK`], since no new batch may come
//!   to tell it.
//!
//! A closed loop that keeps up to half a buffer in flight (what a saturated subscriber
//! sees) rarely crosses these; a publisher flat out does, and is held instead of its
//! messages being dropped from session buffers as gaps.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cluster::{Cluster, slowdown};
use crate::session::Session;

/// A batch applied this long after it was read means the node lags. Well above a time
/// slice: a node sharing its cores with others is often a few milliseconds late.
const LATE: Duration = Duration::from_millis(20);
/// How often a holding node looks whether it caught up when no batch comes.
pub(super) const TICK: Duration = Duration::from_millis(1);
/// Sessions watched for having caught up, at most (they get the same messages anyway).
const WATCHED: usize = 8;
/// Unsent share (in eighths) past which the node asks for a hold.
const ASK_OVER: usize = 4;
/// Unsent share (in eighths) past which the writers run before the next batch.
const DRAIN_OVER: usize = 6;
/// Unsent share (in eighths) at which a watched session has caught up.
const RELEASE_AT: usize = 2;
/// Yields at most between two batches (then the batch is applied anyway).
const MAX_YIELDS: usize = 16;

#[derive(Default)]
pub(super) struct Lag {
    /// When this node last asked for a hold; `None` when it is not holding the cluster.
    asked: Option<Instant>,
    /// The last batch was applied late.
    late: bool,
    /// Sessions found behind and not caught up yet.
    behind: Vec<Arc<Session>>,
}

impl Lag {
    pub(super) fn asking(&self) -> bool {
        self.asked.is_some()
    }

    /// After a batch read at `read_at` was applied; `behind`: a session it found behind.
    pub(super) fn applied(
        &mut self,
        cluster: &Cluster,
        read_at: Instant,
        behind: Option<Arc<Session>>,
    ) {
        self.late = read_at.elapsed() > LATE;
        if let Some(s) = behind
            && self.behind.len() < WATCHED
            && !self.behind.iter().any(|b| Arc::ptr_eq(b, &s))
            && s.behind_over(ASK_OVER)
        {
            self.behind.push(s);
        }
        self.settle(cluster);
    }

    /// Lets the writers run while one the node watches could not take another batch.
    pub(super) async fn drain(&self) {
        self.yield_while(|s| s.behind_over(DRAIN_OVER)).await;
    }

    /// Before a batch of `n` messages: lets the writers run while one the node watches
    /// could not take it whole (a batch lands at once, up to 512 messages).
    pub(super) async fn make_room(&self, n: usize) {
        self.yield_while(|s| s.could_not_take(n)).await;
    }

    /// Yields (at most [`MAX_YIELDS`] times) while a watched session is `short`.
    async fn yield_while(&self, short: impl Fn(&Session) -> bool) {
        for _ in 0..MAX_YIELDS {
            if !self.behind.iter().any(|s| short(s)) {
                return;
            }
            tokio::task::yield_now().await;
        }
    }

    /// No batch came for a [`TICK`]: the feed is applied, the writers may have caught up.
    pub(super) fn idle(&mut self, cluster: &Cluster) {
        self.late = false;
        self.settle(cluster);
    }

    /// Asks again (at most every [`slowdown::ASK_EVERY`]) while lagging, releases once not.
    fn settle(&mut self, cluster: &Cluster) {
        if self.asked.is_some() {
            self.behind.retain(|s| s.behind_over(RELEASE_AT));
        }
        let lagging = self.late || !self.behind.is_empty();
        let now = Instant::now();
        match self.asked {
            Some(at) if lagging && now - at < slowdown::ASK_EVERY => {}
            _ if lagging => {
                cluster.ask_hold(slowdown::HOLD);
                self.asked = Some(now);
            }
            Some(_) => {
                cluster.ask_hold(Duration::ZERO);
                self.asked = None;
            }
            None => {}
        }
    }
}
