//! Subscribing and unsubscribing sessions: plain subscriptions, queue groups, presence,
//! and what a new subscription gets first (retained messages, `rewind`, `since`).
//!
//! Ordering: a new subscription's retained and replayed messages must reach the session
//! before any live message of the same topics. So the topics concerned are locked (in
//! name order, the only order anyone takes more than one topic lock in) while the replay
//! is pushed and the subscription enters the router; a publish to one of them waits and
//! then lands after the replay.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use parking_lot::MutexGuard;

use super::recover::{self, Replay, Want};
use super::{Bus, BusError};
use crate::event::{Delivery, Event};
use crate::protocol::{Gap, Position, ServerFrame, Since};
use crate::session::{Session, SessionRef, SubKey};
use crate::store::{TopicEntry, TopicState};
use crate::topic::{Pattern, Topic};

/// How to subscribe (the optional fields of `sub`).
#[derive(Debug, Clone, Default)]
pub struct SubOptions<'a> {
    pub group: Option<&'a str>,
    /// `ack: "manual"` (only with a group).
    pub manual_ack: bool,
    /// Replay the N latest messages of each matching topic first.
    pub rewind: Option<u64>,
    /// Replay what follows these positions first (PROTOCOL.md §5).
    pub since: Option<&'a Since>,
}

/// What a subscribe did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SubOutcome {
    /// False when the subscription already existed (subscribing is idempotent).
    pub new: bool,
    /// With `since`: whether everything after the positions could be replayed (no topic gap).
    pub recovered: Option<bool>,
}

/// Longest accepted group name.
pub const MAX_GROUP: usize = 128;

impl Bus {
    /// Adds a plain or group subscription. `Ok(true)` if new, `Ok(false)` if it existed.
    pub async fn subscribe_session(
        &self,
        session: &Arc<Session>,
        pattern: &str,
        group: Option<&str>,
    ) -> Result<bool, BusError> {
        let opts = SubOptions {
            group,
            ..Default::default()
        };
        Ok(self.subscribe_with(session, pattern, &opts).await?.new)
    }

    /// Adds a subscription with every option of `sub`. In cluster mode the node starts
    /// receiving the pattern from Redis first, and what the subscription replays comes from
    /// Redis (see `remote/queries.rs`).
    pub async fn subscribe_with(
        &self,
        session: &Arc<Session>,
        pattern: &str,
        opts: &SubOptions<'_>,
    ) -> Result<SubOutcome, BusError> {
        self.inner
            .backplane
            .subscribe(self, session, pattern, opts)
            .await
    }

    /// [`Bus::subscribe_with`] against this node's state.
    pub(super) fn subscribe_here(
        &self,
        session: &Arc<Session>,
        pattern: &str,
        opts: &SubOptions<'_>,
    ) -> Result<SubOutcome, BusError> {
        let pattern = Pattern::parse(pattern)?;
        if let Some(g) = opts.group {
            if g.is_empty() || g.len() > MAX_GROUP {
                return Err(BusError::BadRequest(format!(
                    "'group' must be 1 to {MAX_GROUP} bytes"
                )));
            }
            if opts.rewind.is_some() || opts.since.is_some() {
                return Err(BusError::BadRequest(
                    "'rewind' and 'since' cannot be used with 'group'".into(),
                ));
            }
        } else if opts.manual_ack {
            return Err(BusError::BadRequest(
                "'ack' applies only to a 'group' subscription".into(),
            ));
        }
        if let Some(since) = opts.since {
            if matches!(since, Since::Position(_)) && !pattern.is_exact() {
                return Err(BusError::BadRequest(
                    "'since' {\"epoch\",\"offset\"} needs an exact topic; for a wildcard \
                     pattern give {\"topics\":{…},\"ts\"}"
                        .into(),
                ));
            }
            if opts.rewind.is_some() {
                return Err(BusError::BadRequest(
                    "use either 'rewind' or 'since', not both".into(),
                ));
            }
        }
        let key = SubKey {
            pattern: pattern.as_str().into(),
            group: opts.group.map(Into::into),
        };
        // The cap in effect now: a reload that lowers it applies to the next `sub`.
        let max_subs = self.inner.live.load().config.limits.max_subscriptions;
        if let Some(group) = opts.group {
            return match session.add_sub_capped(key, pattern.clone(), max_subs) {
                Err(max) => Err(BusError::TooManySubscriptions(max)),
                Ok(false) => Ok(SubOutcome::default()),
                Ok(true) => {
                    if let Some(g) =
                        self.inner
                            .groups
                            .join(&pattern, group, session, opts.manual_ack)
                    {
                        self.inner.group_router.insert(&pattern, super::GroupRef(g));
                    }
                    self.inner.backplane.watch(&pattern, true);
                    self.occupy(&pattern, true);
                    Ok(SubOutcome {
                        new: true,
                        recovered: None,
                    })
                }
            };
        }
        match session.add_sub_capped(key, pattern.clone(), max_subs) {
            Err(max) => return Err(BusError::TooManySubscriptions(max)),
            Ok(false) => return Ok(SubOutcome::default()),
            Ok(true) => {}
        }
        let recovered = match self.attach_plain(session, &pattern, opts) {
            Ok(r) => r,
            Err(e) => {
                // Nothing was pushed or routed: take back the subscription's slot.
                session.remove_sub(&SubKey {
                    pattern: pattern.as_str().into(),
                    group: None,
                });
                return Err(e);
            }
        };
        self.inner.backplane.watch(&pattern, true);
        self.occupy(&pattern, true);
        if pattern.is_exact() && self.inner.presence.join(pattern.as_str(), session) {
            self.inner
                .backplane
                .presence_changed(self, pattern.as_str(), session, true);
            self.announce(pattern.as_str(), session, "join");
        }
        Ok(SubOutcome {
            new: true,
            recovered,
        })
    }

    /// Pushes what a new plain subscription gets first, then enters it in the router, with
    /// the topics concerned locked (see the module comment). Returns `recovered` for `since`.
    fn attach_plain(
        &self,
        session: &Arc<Session>,
        pattern: &Pattern,
        opts: &SubOptions<'_>,
    ) -> Result<Option<bool>, BusError> {
        let store = &self.inner.topics;
        let since = opts.since.map(|s| match s {
            Since::Position(p) => (vec![(pattern.as_str(), p)], None),
            Since::Topics(t) => (
                t.topics.iter().map(|(k, v)| (k.as_str(), v)).collect(),
                t.ts,
            ),
        });
        // The listed topics that match, created if unknown (their epoch is then a new one).
        let mut listed: Vec<(Topic, Arc<TopicEntry>, &Position)> = Vec::new();
        if let Some((positions, _)) = &since {
            for (name, position) in positions {
                let topic = Topic::parse(name).map_err(|e| {
                    BusError::BadRequest(format!("'since.topics': '{name}' is not a topic: {e}"))
                })?;
                if pattern.matches(topic.as_str()) {
                    let entry = store.entry(&topic);
                    listed.push((topic, entry, position));
                }
            }
        }
        let ts = since.as_ref().and_then(|(_, ts)| *ts);
        // A wildcard that replays by topic needs every matching topic: while they are
        // gathered and locked and the router takes the subscription, no topic may be
        // created (its first messages would be neither replayed nor live).
        let scan = !pattern.is_exact() && (opts.rewind.is_some() || ts.is_some());
        let _no_new_topics = scan.then(|| store.hold_creation());
        let mut entries: Vec<(Topic, Arc<TopicEntry>, Option<&Position>)> = listed
            .into_iter()
            .map(|(t, e, p)| (t, e, Some(p)))
            .collect();
        if scan {
            let listed: std::collections::HashSet<Topic> =
                entries.iter().map(|(t, _, _)| t.clone()).collect();
            for (t, e) in store.entries() {
                if pattern.matches(t.as_str()) && !listed.contains(&t) {
                    entries.push((t, e, None));
                }
            }
        } else if pattern.is_exact() && since.is_none() {
            let wants = opts.rewind.is_some() || self.inner.retained.contains(pattern.as_str());
            if let (true, Ok(t)) = (wants, Topic::parse(pattern.as_str())) {
                let e = store.entry(&t);
                entries.push((t, e, None));
            }
        } else if since.is_none() {
            for t in self.inner.retained.iter() {
                if pattern.matches(t.as_str())
                    && let Some(e) = store.existing(t.as_str())
                {
                    entries.push((t.clone(), e, None));
                }
            }
        }
        // Name order: the one order anyone takes more than one topic lock in.
        entries.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
        let mut guards: Vec<MutexGuard<'_, TopicState>> =
            entries.iter().map(|(_, e, _)| e.lock()).collect();
        let mut recovered = since.is_some().then_some(true);
        let mut budget = entries
            .iter()
            .map(|(_, e, _)| e.settings().max_rewind)
            .min()
            .unwrap_or(0);
        for ((topic, entry, position), state) in entries.iter().zip(guards.iter_mut()) {
            let want = match (position, opts.rewind, ts) {
                (Some(p), _, _) => Some(Want::After(p)),
                (None, Some(n), _) => Some(Want::Latest(n)),
                (None, None, Some(ts)) => Some(Want::Newer(ts)),
                (None, None, None) => None,
            };
            let replay = match want {
                Some(w) => {
                    let cap = entry.settings().max_rewind.min(budget);
                    recover::plan(topic, state, w, cap)
                }
                None => Replay::default(),
            };
            budget = budget.saturating_sub(replay.events.len());
            if let Some(gap) = replay.gap {
                recovered = Some(false);
                let frame = ServerFrame::Gap(Gap::Topic(gap)).encode();
                session.push_note(frame.into());
            }
            if let Some(r) = &state.retained
                && since.is_none()
                && !replay.events.iter().any(|e| e.offset == r.offset)
            {
                let how = Delivery {
                    retained: true,
                    ..Delivery::LIVE
                };
                self.push_counted(session, r, how);
            }
            let how = Delivery {
                replay: true,
                ..Delivery::LIVE
            };
            for e in &replay.events {
                self.push_counted(session, e, how);
            }
        }
        self.inner
            .router
            .insert(pattern, SessionRef(session.clone()));
        drop(guards);
        Ok(recovered)
    }

    fn push_counted(&self, session: &Session, event: &Arc<Event>, how: Delivery) {
        let r = session.push(event, how);
        self.inner.stats.delivered.fetch_add(1, Ordering::Relaxed);
        if r.dropped_unsent > 0 {
            self.inner
                .stats
                .dropped
                .fetch_add(u64::from(r.dropped_unsent), Ordering::Relaxed);
        }
    }

    /// Removes a subscription (no error when it did not exist).
    pub fn unsubscribe_session(
        &self,
        session: &Arc<Session>,
        pattern: &str,
        group: Option<&str>,
    ) -> Result<(), BusError> {
        let parsed = Pattern::parse(pattern)?;
        let key = SubKey {
            pattern: parsed.as_str().into(),
            group: group.map(Into::into),
        };
        if let Some(p) = session.remove_sub(&key) {
            self.forget_sub(session, &key, &p);
        }
        Ok(())
    }

    /// Takes one of a session's subscriptions out of the router, its group or presence.
    pub(super) fn forget_sub(&self, session: &Arc<Session>, key: &SubKey, pattern: &Pattern) {
        self.inner.backplane.watch(pattern, false);
        match &key.group {
            Some(group) => {
                if let Some(g) = self.inner.groups.leave(&key.pattern, group, session) {
                    self.inner.group_router.remove(pattern, &super::GroupRef(g));
                }
            }
            None => {
                self.inner
                    .router
                    .remove(pattern, &SessionRef(session.clone()));
                if pattern.is_exact()
                    && let Some(m) = self.inner.presence.leave(pattern.as_str(), session)
                {
                    self.inner
                        .backplane
                        .presence_changed(self, pattern.as_str(), session, false);
                    self.announce_member(pattern.as_str(), &m, "leave");
                }
            }
        }
        // After the presence leave: a webhook hears of the member leaving, then of the
        // pattern's vacancy.
        self.occupy(pattern, false);
    }

    /// Drops everything a session holds in the bus (on expiry or close).
    pub(super) fn drop_session(&self, session: &Arc<Session>) {
        for (key, pattern) in session.close() {
            self.forget_sub(session, &key, &pattern);
        }
    }

    fn announce(&self, topic: &str, session: &Session, event: &str) {
        let m = super::presence::Member {
            session: session.id().clone(),
            identity: session.identity(),
        };
        self.announce_member(topic, &m, event);
    }

    /// Publishes a join or leave to `$presence/<topic>`, and tells the observer.
    fn announce_member(&self, topic: &str, m: &super::presence::Member, event: &str) {
        if self.observed() {
            self.notify(presence_event(
                topic,
                m.session.clone(),
                m.identity.user.clone(),
                m.identity.info.clone(),
                event == "join",
            ));
        }
        let body = serde_json::json!({
            "event": event,
            "session": &*m.session,
            "user": m.identity.user,
            "info": m.identity.info,
        });
        let presence_topic = format!("$presence/{topic}");
        if let Err(e) = self.publish_json(&presence_topic, &body) {
            tracing::debug!(error = %e, topic = %presence_topic, "presence event not published");
        }
    }
}

/// The observer's `presence.join` or `presence.leave`.
pub(super) fn presence_event(
    topic: &str,
    session: Arc<str>,
    user: Option<String>,
    info: serde_json::Value,
    joined: bool,
) -> super::BusEvent {
    let topic = topic.to_owned();
    if joined {
        super::BusEvent::PresenceJoin {
            topic,
            session,
            user,
            info,
        }
    } else {
        super::BusEvent::PresenceLeave {
            topic,
            session,
            user,
            info,
        }
    }
}
