//! Queue groups (PROTOCOL.md §5 "Groups and work queues"): each message goes to one member
//! of each matching group, and with `ack: "manual"` it is redelivered until acked or sent
//! to the dead-letter topic.
//!
//! A group is identified by its (pattern, name): members that subscribe to the same pattern
//! under the same name share the work. The group, not each member, sits in the group
//! router, so matching cost does not grow with the number of members.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use parking_lot::Mutex;

use crate::event::{Delivery, Event};
use crate::session::{SeqState, Session};
use crate::topic::Pattern;

static NEXT_GROUP: AtomicU64 = AtomicU64::new(1);

/// One member of a group: a session and how it acknowledges.
#[derive(Debug, Clone)]
struct Member {
    session: Arc<Session>,
    manual: bool,
}

#[derive(Debug)]
pub struct Group {
    key: u64,
    /// The group's identity across the cluster: its pattern and name.
    pub pattern: Arc<str>,
    pub name: Arc<str>,
    members: Mutex<Members>,
}

#[derive(Debug, Default)]
struct Members {
    list: Vec<Member>,
    /// Round-robin cursor.
    next: usize,
}

/// Where one group message went.
#[derive(Debug, Clone)]
pub struct Picked {
    pub session: Arc<Session>,
    pub manual: bool,
}

impl Group {
    fn new(pattern: Arc<str>, name: Arc<str>) -> Group {
        Group {
            key: NEXT_GROUP.fetch_add(1, Ordering::Relaxed),
            pattern,
            name,
            members: Mutex::new(Members::default()),
        }
    }

    /// The next member in turn, preferring connected members with room in their buffer,
    /// then any connected member, and `avoid` (the member that failed to ack) last.
    pub fn pick(&self, avoid: Option<u64>) -> Option<Picked> {
        let mut m = self.members.lock();
        let n = m.list.len();
        if n == 0 {
            return None;
        }
        let start = m.next;
        let mut fallback: Option<usize> = None;
        for rank in [0u8, 1, 2, 3] {
            for k in 0..n {
                let i = (start + k) % n;
                let member = &m.list[i];
                if member.session.is_closed() {
                    continue;
                }
                let avoided = avoid == Some(member.session.key());
                let attached = member.session.is_attached();
                let ok = match rank {
                    0 => attached && !avoided && member.session.has_room(),
                    1 => attached && !avoided,
                    2 => attached,
                    _ => !avoided,
                };
                if ok {
                    m.next = (i + 1) % n;
                    let p = &m.list[i];
                    return Some(Picked {
                        session: p.session.clone(),
                        manual: p.manual,
                    });
                }
                if fallback.is_none() {
                    fallback = Some(i);
                }
            }
        }
        let i = fallback?;
        m.next = (i + 1) % n;
        Some(Picked {
            session: m.list[i].session.clone(),
            manual: m.list[i].manual,
        })
    }
}

/// The group router's handle for a group: identity by key.
#[derive(Debug, Clone)]
pub struct GroupRef(pub Arc<Group>);

impl PartialEq for GroupRef {
    fn eq(&self, other: &Self) -> bool {
        self.0.key == other.0.key
    }
}
impl Eq for GroupRef {}
impl std::hash::Hash for GroupRef {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.0.key);
    }
}

/// All groups by (pattern, name).
#[derive(Debug, Default)]
pub struct Groups {
    map: DashMap<(Arc<str>, Arc<str>), Arc<Group>>,
}

impl Groups {
    /// Adds `session` to the group; returns the group when it was just created (the caller
    /// puts it in the group router).
    pub fn join(
        &self,
        pattern: &Pattern,
        name: &str,
        session: &Arc<Session>,
        manual: bool,
    ) -> Option<Arc<Group>> {
        let key = (Arc::<str>::from(pattern.as_str()), Arc::<str>::from(name));
        let mut created = None;
        let entry = self.map.entry(key.clone()).or_insert_with(|| {
            let g = Arc::new(Group::new(key.0, key.1));
            created = Some(g.clone());
            g
        });
        let mut m = entry.members.lock();
        if !m.list.iter().any(|x| x.session.key() == session.key()) {
            m.list.push(Member {
                session: session.clone(),
                manual,
            });
        }
        created
    }

    /// Removes `session` from the group; returns the group when it became empty (the caller
    /// takes it out of the group router).
    pub fn leave(&self, pattern: &str, name: &str, session: &Session) -> Option<Arc<Group>> {
        let key = (Arc::<str>::from(pattern), Arc::<str>::from(name));
        let removed = self.map.remove_if(&key, |_, g| {
            let mut m = g.members.lock();
            m.list.retain(|x| x.session.key() != session.key());
            m.list.is_empty()
        });
        removed.map(|(_, g)| g)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// The group now standing for `group`'s (pattern, name): `group` itself, or the one
    /// created when members joined again after it had emptied (and left the map).
    pub fn current(&self, group: &Arc<Group>) -> Option<Arc<Group>> {
        let key = (group.pattern.clone(), group.name.clone());
        self.map.get(&key).map(|g| g.value().clone())
    }

    /// The group of (`pattern`, `name`), if it has members here.
    pub fn get(&self, pattern: &str, name: &str) -> Option<Arc<Group>> {
        let key = (Arc::<str>::from(pattern), Arc::<str>::from(name));
        self.map.get(&key).map(|g| g.value().clone())
    }

    /// The (pattern, name) of every group with members here.
    pub fn names(&self) -> Vec<(Arc<str>, Arc<str>)> {
        self.map.iter().map(|e| e.key().clone()).collect()
    }
}

/// A group message handed out with `ack: "manual"` and not acknowledged yet.
///
/// `ack_wait` runs from when the message is *written* to the member's socket, not from
/// when it entered the member's buffer: a worker with a backlog is not punished for it.
/// Until it is written, the message waits as long as its member stays connected.
#[derive(Debug, Clone)]
pub struct Unacked {
    pub event: Arc<Event>,
    pub group: Arc<Group>,
    pub holder: Arc<Session>,
    /// Deliveries so far, this one included (a delivery that never reached the socket
    /// does not count).
    pub deliveries: u32,
    pub ack_wait: Duration,
    /// While unsent: when it entered the buffer; once sent: when the wait ends.
    pub deadline: Instant,
    pub sent: bool,
    /// Since when its group has had no member to take it (see `Bus::redeliver_due`).
    pub orphaned: Option<Instant>,
}

/// Why an unacked message is handed to another member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Written but not acked within `ack_wait`.
    Expired,
    /// Never written: its member left or dropped it from a full buffer.
    Undelivered,
}

/// What changed about a group's unacked message, for a record kept outside this node
/// (cluster mode: in Redis, so that another node redelivers the messages of a node that
/// died; see `bus/remote/pending.rs`).
#[derive(Debug, Clone)]
pub enum Journaled {
    /// Handed (again) to a member here: `deliveries` so far, the wait that started.
    Held {
        event: Arc<Event>,
        group: Arc<Group>,
        deliveries: u32,
        ack_wait: Duration,
    },
    /// Acked, dead-lettered or handed to a member that does not ack: nothing to redeliver.
    Settled {
        event: Arc<Event>,
        group: Arc<Group>,
    },
}

/// Unacked messages by (session key, seq): `ack {seq}` comes from one session.
#[derive(Debug, Default)]
pub struct Pending {
    map: DashMap<(u64, u64), Unacked>,
    /// Where changes are told (cluster mode). A channel: the fan-out never waits for it.
    journal: std::sync::OnceLock<tokio::sync::mpsc::UnboundedSender<Journaled>>,
}

impl Pending {
    /// From now on, tells `tx` of every message handed out and settled.
    pub fn journal_to(&self, tx: tokio::sync::mpsc::UnboundedSender<Journaled>) {
        let _ = self.journal.set(tx);
    }

    fn tell(&self, change: impl FnOnce() -> Journaled) {
        if let Some(tx) = self.journal.get() {
            let _ = tx.send(change());
        }
    }

    pub fn insert(&self, seq: u64, u: Unacked) {
        self.tell(|| Journaled::Held {
            event: u.event.clone(),
            group: u.group.clone(),
            deliveries: u.deliveries,
            ack_wait: u.ack_wait,
        });
        self.map.insert((u.holder.key(), seq), u);
    }

    /// Settles a message; false when nothing was waiting for that seq.
    pub fn ack(&self, session: u64, seq: u64) -> bool {
        match self.map.remove(&(session, seq)) {
            Some((_, u)) => {
                self.forget(&u);
                true
            }
            None => false,
        }
    }

    /// Tells the journal that a message taken out by [`Pending::take_due`] is settled (it
    /// is not inserted again).
    pub fn forget(&self, u: &Unacked) {
        self.tell(|| Journaled::Settled {
            event: u.event.clone(),
            group: u.group.clone(),
        });
    }

    /// Starts the wait of messages that were written since the last look, and removes and
    /// returns those due for redelivery, oldest first. The journal is not told: each is
    /// either inserted again or [`forget`](Pending::forget)ten by the caller, so a record
    /// outside never loses one in between.
    pub fn take_due(&self, now: Instant) -> Vec<(Due, u64, Unacked)> {
        let mut due = Vec::new();
        for mut e in self.map.iter_mut() {
            let seq = e.key().1;
            let u = e.value_mut();
            if u.sent {
                if u.deadline <= now {
                    due.push((*e.key(), Due::Expired));
                }
                continue;
            }
            match u.holder.seq_state(seq) {
                SeqState::Sent => {
                    u.sent = true;
                    u.deadline = now + u.ack_wait;
                }
                SeqState::Unsent if u.holder.is_attached() => {}
                SeqState::Unsent => {
                    if u.deadline + u.ack_wait <= now {
                        due.push((*e.key(), Due::Undelivered));
                    }
                }
                SeqState::Gone => due.push((*e.key(), Due::Undelivered)),
            }
        }
        let mut out: Vec<(Due, u64, Unacked)> = due
            .into_iter()
            .filter_map(|(k, why)| self.map.remove(&k).map(|(_, u)| (why, k.1, u)))
            .collect();
        out.sort_by_key(|(_, _, u)| u.event.offset);
        out
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// How a group message was (re)delivered, for the msg frame.
pub fn delivery(deliveries: u32) -> Delivery {
    if deliveries > 1 {
        Delivery {
            redelivered: Some(deliveries),
            ..Delivery::LIVE
        }
    } else {
        Delivery::LIVE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SlowConsumer;
    use crate::event::EventParts;
    use crate::session::Limits;
    use crate::topic::Topic;

    fn unacked(session: &Arc<Session>, group: &Arc<Group>, offset: u64) -> (u64, Unacked) {
        let event = Arc::new(Event::new(
            EventParts {
                topic: Topic::parse("jobs/a").unwrap(),
                data: "1",
                msg_id: None,
                reply_to: None,
            },
            offset,
            "e".into(),
            0,
        ));
        let seq = session.push(&event, Delivery::LIVE).seq;
        let u = Unacked {
            event,
            group: group.clone(),
            holder: session.clone(),
            deliveries: 1,
            ack_wait: Duration::ZERO,
            deadline: Instant::now(),
            sent: false,
            orphaned: None,
        };
        (seq, u)
    }

    /// The journal hears of every message handed out and settled, and of nothing that
    /// `take_due` takes out (its caller inserts it again or forgets it).
    #[test]
    fn the_journal_hears_of_holds_and_settlements_only() {
        let session = Arc::new(Session::new(Limits {
            buffer_messages: 16,
            buffer_bytes: 1 << 20,
            slow_consumer: SlowConsumer::DropOldest,
            max_subscriptions: 10,
        }));
        let group = Arc::new(Group::new("jobs/*".into(), "w".into()));
        let pending = Pending::default();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        pending.journal_to(tx);
        let held = |j: Journaled| match j {
            Journaled::Held {
                event, deliveries, ..
            } => (event.offset, deliveries),
            other => panic!("{other:?}"),
        };
        let settled = |j: Journaled| match j {
            Journaled::Settled { event, group } => {
                assert_eq!(&*group.name, "w");
                event.offset
            }
            other => panic!("{other:?}"),
        };

        let (seq1, u1) = unacked(&session, &group, 1);
        let (seq2, u2) = unacked(&session, &group, 2);
        pending.insert(seq1, u1);
        pending.insert(seq2, u2);
        assert_eq!(held(rx.try_recv().unwrap()), (1, 1));
        assert_eq!(held(rx.try_recv().unwrap()), (2, 1));

        assert!(pending.ack(session.key(), seq1));
        assert_eq!(settled(rx.try_recv().unwrap()), 1);
        assert!(!pending.ack(session.key(), seq1), "acked already");
        assert!(rx.try_recv().is_err());

        // Detached and past its wait: due, but not settled yet.
        let due = pending.take_due(Instant::now() + Duration::from_millis(1));
        assert_eq!(due.len(), 1);
        assert!(rx.try_recv().is_err());
        pending.forget(&due[0].2);
        assert_eq!(settled(rx.try_recv().unwrap()), 2);
        assert!(pending.is_empty());
    }
}
