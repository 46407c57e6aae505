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

use super::{Bus, BusError};
use crate::event::{Delivery, Event};
use crate::protocol::Since;
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
    /// Replay everything after this offset of an exact topic first.
    pub since: Option<&'a Since>,
}

/// What a subscribe did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SubOutcome {
    /// False when the subscription already existed (subscribing is idempotent).
    pub new: bool,
    /// With `since`: whether everything after the offset could be replayed.
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
        if let Some(Since::Topics(_)) = opts.since {
            return Err(BusError::BadRequest("not yet".into()));
        }
        if opts.since.is_some() {
            if !pattern.is_exact() {
                return Err(BusError::BadRequest(
                    "'since' needs an exact topic, not a wildcard pattern".into(),
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
        let recovered = self.attach_plain(session, &pattern, opts);
        self.inner.backplane.watch(&pattern, true);
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
    /// the topics concerned locked (see the module comment).
    fn attach_plain(
        &self,
        session: &Arc<Session>,
        pattern: &Pattern,
        opts: &SubOptions<'_>,
    ) -> Option<bool> {
        let entries: Vec<(Topic, Arc<TopicEntry>)> = if pattern.is_exact() {
            let wants = opts.rewind.is_some()
                || opts.since.is_some()
                || self.inner.retained.contains(pattern.as_str());
            match (wants, Topic::parse(pattern.as_str())) {
                (true, Ok(t)) => {
                    let e = self.inner.topics.entry(&t);
                    vec![(t, e)]
                }
                _ => Vec::new(),
            }
        } else if opts.rewind.is_some() {
            self.inner
                .topics
                .entries()
                .into_iter()
                .filter(|(t, _)| pattern.matches(t.as_str()))
                .collect()
        } else {
            let mut v: Vec<(Topic, Arc<TopicEntry>)> = self
                .inner
                .retained
                .iter()
                .filter(|t| pattern.matches(t.as_str()))
                .filter_map(|t| Some((t.clone(), self.inner.topics.existing(t.as_str())?)))
                .collect();
            v.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
            v
        };
        let mut guards: Vec<MutexGuard<'_, TopicState>> =
            entries.iter().map(|(_, e)| e.lock()).collect();
        let mut recovered = None;
        let mut budget = entries
            .iter()
            .map(|(_, e)| e.settings().max_rewind)
            .min()
            .unwrap_or(0);
        for ((_, entry), state) in entries.iter().zip(guards.iter_mut()) {
            let replay: Vec<Arc<Event>> = if let Some(Since::Position(since)) = opts.since {
                let same_epoch = *state.epoch == *since.epoch;
                recovered = Some(same_epoch && state.holds_after(since.offset));
                let after = if same_epoch { since.offset } else { 0 };
                let cap = entry.settings().max_rewind.min(budget);
                let all = state.after(after, usize::MAX);
                // When more is held than may be replayed, the newest go.
                all[all.len().saturating_sub(cap)..].to_vec()
            } else if let Some(n) = opts.rewind {
                let n = (n as usize).min(entry.settings().max_rewind).min(budget);
                state.latest(n)
            } else {
                Vec::new()
            };
            budget = budget.saturating_sub(replay.len());
            if let Some(r) = &state.retained
                && !replay.iter().any(|e| e.offset == r.offset)
                && opts.since.is_none()
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
            for e in &replay {
                self.push_counted(session, e, how);
            }
        }
        self.inner
            .router
            .insert(pattern, SessionRef(session.clone()));
        drop(guards);
        recovered
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
    fn forget_sub(&self, session: &Arc<Session>, key: &SubKey, pattern: &Pattern) {
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

    /// Publishes a join or leave to `$presence/<topic>`.
    fn announce_member(&self, topic: &str, m: &super::presence::Member, event: &str) {
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
