//! Sessions: the per-subscriber stream of PROTOCOL.md §3 that outlives sockets.
//!
//! A session numbers every message it receives (`seq` 1, 2, …) and keeps them in a bounded
//! ring (`ring.rs`): the unsent backlog plus already-sent messages kept for a resume.
//! Because the oldest message is always the one dropped, the ring is always a *contiguous*
//! run of seqs `[first, next_seq)`. The writer's cursor `sent` is the last seq written (or
//! covered by a gap). So a gap is never stored: whenever `sent + 1 < first` the writer
//! reports `gap {sent+1, first-1}` and moves on. That makes the protocol's invariant — every
//! seq is delivered once as `msg` or covered by exactly one `gap` — hold by construction,
//! live and across resumes alike (a resume just sets `sent` to the client's `last_seq`).
//!
//! Everything here is synchronous and lock-scoped: no lock is held across an `.await`.

mod identity;
mod outbox;
mod registry;
mod ring;
mod subs;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use parking_lot::Mutex;

pub use identity::Identity;
pub use outbox::{CONTROL_QUEUE_MAX, Close, Drained, Outbox};
pub use registry::Registry;
pub use ring::{Batch, Entry, Taken};
pub use subs::SubKey;

use crate::config::SlowConsumer;
use crate::event::{Delivery, Event};
use crate::protocol::close;
use crate::topic::Pattern;

/// Caps that bound one session's memory (from `[session]` of the config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub buffer_messages: usize,
    pub buffer_bytes: usize,
    pub slow_consumer: SlowConsumer,
    pub max_subscriptions: usize,
}

/// Where one seq stands in a session's stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqState {
    /// Written to the connection (or resent after a resume).
    Sent,
    /// In the buffer, not written yet.
    Unsent,
    /// No longer held and not known to be written (dropped from a full buffer, or the
    /// session closed).
    Gone,
}

/// Result of pushing a message into a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pushed {
    /// The seq the message got (0 when the session is closed and took nothing).
    pub seq: u64,
    /// Unsent messages dropped to make room (each becomes part of a `gap`).
    pub dropped_unsent: u32,
    /// The connection was told to close as a slow consumer.
    pub kicked: bool,
    /// Half the buffer is unsent while the connection's socket takes what it is given: its
    /// writer is waiting for CPU, not for its reader (see [`crate::bus::PubAck::backlogged`]).
    pub backlogged: bool,
}

static NEXT_KEY: AtomicU64 = AtomicU64::new(1);

/// A session. Shared as `Arc<Session>` by the registry, the router and its connection.
#[derive(Debug)]
pub struct Session {
    id: Arc<str>,
    /// Process-unique number: a cheap key for this session in the maps of pending acks,
    /// group members and presence. (The router compares [`SessionRef`]s by address.)
    key: u64,
    limits: Limits,
    state: Mutex<State>,
    /// Who the session belongs to (from the token), shown in presence.
    identity: Mutex<Arc<Identity>>,
    /// A `session.opened` webhook event was sent for it, so its end gets a `session.closed`
    /// (the bus's embedded sessions are never announced and never reported).
    announced: AtomicBool,
}

#[derive(Debug)]
struct State {
    ring: ring::Ring,
    subs: subs::Subs,
    outbox: Option<Arc<Outbox>>,
    /// When the last connection left; `None` while attached.
    detached_at: Option<Instant>,
    /// Expired or removed: accepts nothing more.
    closed: bool,
    /// What may be delivered at all (the connection's subscribe permissions).
    filter: Option<Arc<dyn DeliveryFilter>>,
}

/// Decides whether a message may enter a session at all: the auth layer's defence in depth
/// behind the subscribe-time check. Consulted under the session lock before a seq is
/// assigned, so a refused message leaves no hole in the seq stream.
pub trait DeliveryFilter: Send + Sync + std::fmt::Debug {
    fn allows(&self, topic: &str) -> bool;
    /// Whether every topic `pattern` matches is allowed (a server-side subscribe is made
    /// only where it could deliver something; see `bus::control`).
    fn allows_pattern(&self, _pattern: &Pattern) -> bool {
        true
    }
}

impl Session {
    /// A new session with a fresh random id.
    pub fn new(limits: Limits) -> Session {
        Session::with_id(new_session_id().into(), limits)
    }

    pub fn with_id(id: Arc<str>, limits: Limits) -> Session {
        Session {
            id,
            key: NEXT_KEY.fetch_add(1, Ordering::Relaxed),
            limits,
            state: Mutex::new(State {
                ring: ring::Ring::new(),
                subs: subs::Subs::default(),
                outbox: None,
                detached_at: Some(Instant::now()),
                closed: false,
                filter: None,
            }),
            identity: Mutex::new(identity::anonymous()),
            announced: AtomicBool::new(false),
        }
    }

    pub fn id(&self) -> &Arc<str> {
        &self.id
    }

    pub fn key(&self) -> u64 {
        self.key
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn identity(&self) -> Arc<Identity> {
        self.identity.lock().clone()
    }

    /// Records that the session's opening was announced (`session.opened`): its end will be
    /// announced too. Called by the transport that opened it, once the identity is known.
    pub fn mark_announced(&self) {
        self.announced.store(true, Ordering::Release);
    }

    /// Whether the session's end is to be announced, for the one caller that ends it: true
    /// at most once per session, however many paths (expiry, close) race to end it.
    pub fn take_announced(&self) -> bool {
        self.announced.swap(false, Ordering::AcqRel)
    }

    pub fn set_identity(&self, identity: Identity) {
        let mut cur = self.identity.lock();
        if **cur != identity {
            *cur = if identity == Identity::default() {
                identity::anonymous()
            } else {
                Arc::new(identity)
            };
        }
    }

    /// Sets what may be delivered to this session from now on (`None`: anything), and
    /// applies it to what the buffer already holds.
    ///
    /// A resume may come with a narrower token than the one the buffered messages were
    /// accepted under (PROTOCOL.md §7: nothing outside the subscribe permissions is ever
    /// delivered, whatever the subscribe-time check decided). Those messages already have
    /// their seq, so they cannot vanish without breaking the §3 invariant (every seq is a
    /// `msg` or covered by exactly one `gap`). They are *withheld* instead: kept in their slot
    /// (so the ring stays the contiguous run `[first, next_seq)` and the caps and the
    /// accounting do not change) but never handed out; the writer reports them as a gap,
    /// exactly as §3 treats any buffered message the client can no longer get ("a `gap` for
    /// those no longer held"). The gap carries reason `overflow`: §3 defines no other reason
    /// that fits, and a new one would be a wire change that existing clients (the Rust
    /// client's strict `GapReason`) would refuse. Withholding is never undone: a later,
    /// broader token does not bring a withheld message back.
    pub fn set_filter(&self, filter: Option<Arc<dyn DeliveryFilter>>) {
        let mut s = self.state.lock();
        if let Some(f) = &filter {
            s.ring.withhold_unless(|topic| f.allows(topic));
        }
        s.filter = filter;
    }

    /// Whether one of the session's plain (non-group) subscriptions matches `topic`: a group
    /// delivery to a session that already gets the message is skipped (delivered once).
    pub fn matches_plain(&self, topic: &str) -> bool {
        self.state
            .lock()
            .subs
            .iter()
            .any(|(k, p)| k.group.is_none() && p.matches(topic))
    }

    /// Appends a message. Never blocks and never fails: when the buffer is full the oldest
    /// message goes (PROTOCOL.md §3), and with `slow_consumer = "disconnect"` a connection
    /// whose unsent backlog is full is told to close with 4008.
    pub fn push(&self, event: &Arc<Event>, how: Delivery) -> Pushed {
        let mut out = Pushed::default();
        let mut s = self.state.lock();
        if s.closed {
            return out;
        }
        if let Some(f) = &s.filter
            && !f.allows(event.topic.as_str())
        {
            return out;
        }
        let pushed = s.ring.push(
            event,
            how,
            self.limits.buffer_messages,
            self.limits.buffer_bytes,
        );
        out.seq = pushed.seq;
        out.dropped_unsent = pushed.dropped_unsent;
        if pushed.writer_behind
            && let Some(ob) = &s.outbox
        {
            out.backlogged =
                s.ring.behind() as usize * 2 >= self.limits.buffer_messages && ob.runnable();
        }
        if self.limits.slow_consumer == SlowConsumer::Disconnect
            && let Some(ob) = &s.outbox
        {
            let unsent = s.ring.behind() as usize;
            if (unsent >= self.limits.buffer_messages
                || s.ring.unsent_bytes() >= self.limits.buffer_bytes)
                && !ob.is_closing()
            {
                ob.close(Close {
                    code: close::SLOW_CONSUMER,
                    reason: "slow consumer".into(),
                    last_words: None,
                });
                out.kicked = true;
            }
        }
        // Only a writer that had taken everything waits for a wake (see `writer_behind`).
        if !pushed.writer_behind
            && let Some(ob) = &s.outbox
        {
            ob.wake();
        }
        out
    }

    /// Queues a frame that takes no seq (a topic gap) after every message pushed so far and
    /// before the next one (see `ring.rs`). Kept across a resume like the messages.
    pub fn push_note(&self, frame: Arc<str>) {
        let mut s = self.state.lock();
        if s.closed {
            return;
        }
        s.ring.push_note(frame);
        if let Some(ob) = &s.outbox {
            ob.wake();
        }
    }

    /// Moves up to `max` messages (and a gap, if any) past the cursor into `batch`.
    pub fn take(&self, batch: &mut Batch, max: usize) {
        let mut s = self.state.lock();
        let taken = s.ring.take(max, |seq, event, how| {
            batch.entries.push(Entry {
                seq,
                event: event.clone(),
                how,
            })
        });
        batch.gap = taken.gap;
        batch.notes = taken.notes;
    }

    /// [`Session::take`] for the connection whose outbox is `outbox`: takes nothing once
    /// another connection has resumed the session, so that a writer about to stop cannot
    /// take (and lose) messages meant for its successor.
    pub fn take_for(&self, outbox: &Arc<Outbox>, batch: &mut Batch, max: usize) {
        let mut s = self.state.lock();
        if s.outbox.as_ref().is_some_and(|o| Arc::ptr_eq(o, outbox)) {
            let taken = s.ring.take(max, |seq, event, how| {
                batch.entries.push(Entry {
                    seq,
                    event: event.clone(),
                    how,
                })
            });
            batch.gap = taken.gap;
            batch.notes = taken.notes;
        }
    }

    /// [`Session::take_for`] without copies: calls `f` with each message taken, in order,
    /// under the session's lock (so `f` must be quick and must not call back into the
    /// session). The writer encodes frames straight from the ring this way, touching no
    /// reference count. The gap, if any, comes before the messages and must be sent first.
    pub fn take_each(
        &self,
        outbox: &Arc<Outbox>,
        max: usize,
        f: impl FnMut(u64, &Arc<Event>, Delivery),
    ) -> Taken {
        let mut s = self.state.lock();
        if s.outbox.as_ref().is_some_and(|o| Arc::ptr_eq(o, outbox)) {
            s.ring.take(max, f)
        } else {
            Taken::default()
        }
    }

    /// Whether messages or a gap are waiting for the writer.
    pub fn has_pending(&self) -> bool {
        self.state.lock().ring.has_pending()
    }

    /// Attaches a connection. With `last_seq` (a resume), delivery restarts after it: the
    /// buffered messages after `last_seq` are sent again, and what is no longer held becomes
    /// a gap. Returns the previous connection's outbox, which the caller should close.
    pub fn attach(&self, outbox: Arc<Outbox>, last_seq: Option<u64>) -> Option<Arc<Outbox>> {
        let mut s = self.state.lock();
        if let Some(last) = last_seq {
            s.ring.resume(last);
        }
        s.detached_at = None;
        let previous = s.outbox.replace(outbox.clone());
        drop(s);
        outbox.wake();
        previous.filter(|p| !Arc::ptr_eq(p, &outbox))
    }

    /// Detaches `outbox` if it is still the session's connection. The session keeps
    /// buffering until its TTL runs out.
    pub fn detach(&self, outbox: &Arc<Outbox>) {
        let mut s = self.state.lock();
        if s.outbox.as_ref().is_some_and(|o| Arc::ptr_eq(o, outbox)) {
            s.outbox = None;
            s.detached_at = Some(Instant::now());
        }
    }

    /// Whether the session has been detached for at least `ttl`.
    pub fn expired(&self, now: Instant, ttl: std::time::Duration) -> bool {
        let s = self.state.lock();
        s.closed || s.detached_at.is_some_and(|t| now.duration_since(t) >= ttl)
    }

    pub fn is_attached(&self) -> bool {
        self.state.lock().outbox.is_some()
    }

    /// Attached to a connection that is not closing: what `GET /v1/sessions` calls
    /// connected (right after a resumable disconnect the socket is still letting go).
    pub fn is_connected(&self) -> bool {
        self.state
            .lock()
            .outbox
            .as_ref()
            .is_some_and(|o| !o.is_closing())
    }

    /// Asks the attached connection, if any, to close with `close`; true when there was
    /// one. The session itself stays (resumable) unless the caller closes it too.
    pub fn close_connection(&self, close: Close) -> bool {
        let s = self.state.lock();
        match &s.outbox {
            Some(ob) => {
                ob.close(close);
                true
            }
            None => false,
        }
    }

    /// Whether the session's delivery filter lets every topic of `pattern` through.
    pub fn allows_pattern(&self, pattern: &Pattern) -> bool {
        self.state
            .lock()
            .filter
            .as_ref()
            .is_none_or(|f| f.allows_pattern(pattern))
    }

    /// Ends the session: frees its buffer and returns its subscriptions so the caller can
    /// remove them from the router.
    pub fn close(&self) -> Vec<(SubKey, Pattern)> {
        let mut s = self.state.lock();
        s.closed = true;
        s.ring.clear();
        s.outbox = None;
        s.subs.take()
    }

    pub fn is_closed(&self) -> bool {
        self.state.lock().closed
    }

    /// Records a subscription. `Ok(true)` if new, `Ok(false)` if it already existed
    /// (subscribing twice is idempotent), `Err(limit)` over `max_subscriptions`.
    pub fn add_sub(&self, key: SubKey, pattern: Pattern) -> Result<bool, usize> {
        self.add_sub_capped(key, pattern, self.limits.max_subscriptions)
    }

    /// [`Session::add_sub`] with the cap given: the server passes the one in effect now, which
    /// a configuration reload may have changed since the session started.
    pub fn add_sub_capped(&self, key: SubKey, pattern: Pattern, max: usize) -> Result<bool, usize> {
        let mut s = self.state.lock();
        if s.closed {
            return Ok(false);
        }
        if s.subs.contains_key(&key) {
            return Ok(false);
        }
        if s.subs.len() >= max {
            return Err(max);
        }
        s.subs.insert(key, pattern);
        Ok(true)
    }

    /// Forgets a subscription; returns its pattern if it existed.
    pub fn remove_sub(&self, key: &SubKey) -> Option<Pattern> {
        self.state.lock().subs.remove(key)
    }

    /// Whether another of the session's plain subscriptions still uses `pattern`.
    pub fn has_pattern(&self, pattern: &str) -> bool {
        self.state
            .lock()
            .subs
            .keys()
            .any(|k| k.group.is_none() && &*k.pattern == pattern)
    }

    pub fn subscriptions(&self) -> Vec<SubKey> {
        self.state.lock().subs.keys().cloned().collect()
    }

    /// Occupancy, for stats: (messages held, bytes held, unsent messages held).
    ///
    /// Unsent counts messages in the buffer past the writer's cursor, not seqs: the seqs
    /// dropped from a full buffer are not held (the writer will report them as a gap), and
    /// counting them would show a capped, stalled session's backlog growing without bound.
    pub fn usage(&self) -> (usize, usize, u64) {
        let s = self.state.lock();
        let held = s.ring.len();
        (held, s.ring.bytes(), s.ring.behind().min(held as u64))
    }

    /// Whether `more` messages pushed now would overflow the buffer while the writer is
    /// runnable (see [`Session::behind_over`]).
    pub fn could_not_take(&self, more: usize) -> bool {
        let s = self.state.lock();
        s.ring.behind() as usize + more > self.limits.buffer_messages
            && s.outbox.as_ref().is_some_and(|ob| ob.runnable())
    }

    /// Whether more than `eighths`/8 of the buffer is unsent while the writer is runnable
    /// (not waiting for its reader: that backlog is the reader's, never the node's).
    pub fn behind_over(&self, eighths: usize) -> bool {
        let s = self.state.lock();
        s.ring.behind() as usize * 8 > self.limits.buffer_messages * eighths
            && s.outbox.as_ref().is_some_and(|ob| ob.runnable())
    }

    /// Whether the unsent backlog is below the buffer caps (a group prefers such members).
    pub fn has_room(&self) -> bool {
        let s = self.state.lock();
        let unsent = s.ring.behind() as usize;
        unsent < self.limits.buffer_messages / 2
            && s.ring.unsent_bytes() < self.limits.buffer_bytes / 2
    }

    /// Withholds one buffered message from now on (see [`Session::set_filter`]): a resume
    /// reports it as part of a gap instead of sending it again. A group member holds its
    /// unacked message only until it is redelivered (PROTOCOL.md §5), so the bus withholds
    /// the member's copy when it hands the message on. False when `seq` is not held.
    pub fn withhold(&self, seq: u64) -> bool {
        self.state.lock().ring.withhold(seq)
    }

    /// Whether `seq` reached the connection yet.
    pub fn seq_state(&self, seq: u64) -> SeqState {
        let s = self.state.lock();
        if s.closed || seq < s.ring.first() {
            SeqState::Gone
        } else if seq <= s.ring.sent() {
            SeqState::Sent
        } else {
            SeqState::Unsent
        }
    }

    /// The last seq assigned.
    pub fn last_seq(&self) -> u64 {
        self.state.lock().ring.last_seq()
    }
}

/// `s_` followed by 24 random hex digits: unguessable enough that a session id works as a
/// resume credential within its TTL.
pub fn new_session_id() -> String {
    let a: u64 = rand::random();
    let b: u32 = rand::random();
    format!("s_{a:016x}{b:08x}")
}

/// The router's handle for a session: identity and hash by the `Arc`'s address.
///
/// Why the address and not the session's `key`: a cold match deduplicates the subscribers
/// it found by comparing handles, and a shared pattern's set hashes every member when it
/// grows. Comparing keys reads each session through its pointer, a cache miss per
/// subscriber when there are many sessions; comparing addresses reads nothing. The two are
/// the same identity: every `Session` gets its own key and lives in one `Arc`, and a live
/// handle keeps that allocation alive, so its address cannot be reused while the router
/// holds it.
#[derive(Debug, Clone)]
pub struct SessionRef(pub Arc<Session>);

impl PartialEq for SessionRef {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}
impl Eq for SessionRef {}
impl std::hash::Hash for SessionRef {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        std::ptr::hash(Arc::as_ptr(&self.0), state);
    }
}

#[cfg(test)]
mod tests;
