//! What a backend does to sessions (PROTOCOL.md §8, the control endpoints): disconnect them,
//! subscribe or unsubscribe them, list them, and revoke a user's older tokens.
//!
//! A [`Control`] is plain data, so that in cluster mode it can travel to every node through
//! Redis (`remote/control.rs`) and run there exactly as here ([`Bus::control_here`]); the
//! [`Answer`]s of the nodes add up. Server-side subscribe and unsubscribe tell the client with
//! a `subscribed` / `unsubscribed` frame pushed as a ring *note*: it keeps its place among the
//! session's messages (before what the new subscription delivers) and is sent again on
//! resume like them, also to a session that is disconnected right now.

use std::sync::Arc;

use dashmap::DashMap;
use serde::{Deserialize, Serialize};

use super::{Bus, BusError, SubOptions};
use crate::protocol::{ServerFrame, SubscribedFrame, UnsubscribedFrame, UnsubscribedReason, close};
use crate::session::{Close, Session, SubKey};
use crate::topic::Pattern;

/// Most rows `GET /v1/sessions` lists (per node) without `?user=`.
pub const MAX_SESSION_ROWS: usize = 1000;

/// One control command, as the HTTP API received it (validated) and as it travels between
/// nodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Control {
    Disconnect {
        user: Option<String>,
        session: Option<String>,
        code: u16,
        reason: String,
        resumable: bool,
    },
    Unsubscribe {
        target: Target,
        pattern: String,
        group: Option<String>,
    },
    Subscribe {
        target: Target,
        pattern: String,
        group: Option<String>,
        rewind: Option<u64>,
    },
    Sessions {
        user: Option<String>,
    },
    Revoke {
        user: String,
        before: u64,
    },
}

/// Whose sessions a command acts on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    User(String),
    Session(String),
}

/// What a command did on one node (or, summed, on all).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    /// Sessions disconnected, subscribed, unsubscribed.
    pub count: usize,
    /// `Sessions`: the rows.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sessions: Vec<SessionRow>,
    /// Why the command failed on a node (a server-side subscribe of one session that the
    /// session's node refused): the asker answers with it, as a single node would.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Failure>,
}

impl Answer {
    /// Adds a node's answer; the first failure is kept.
    pub fn add(&mut self, other: Answer) {
        self.count += other.count;
        self.sessions.extend(other.sessions);
        if self.error.is_none() {
            self.error = other.error;
        }
    }
}

/// A [`BusError`] as it travels back from another node. The typed pattern and topic errors
/// travel as their message (the asker validated both already).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "code", content = "detail", rename_all = "snake_case")]
pub enum Failure {
    BadRequest(String),
    Forbidden(String),
    TooManySubscriptions(usize),
    TooLarge(String),
    RateLimited(String),
    NoResponders(String),
    Timeout(u64),
    NotFound(String),
    Unavailable(String),
}

impl From<&BusError> for Failure {
    fn from(e: &BusError) -> Failure {
        match e {
            BusError::BadTopic(_)
            | BusError::BadPattern(_)
            | BusError::BadRequest(_)
            | BusError::NotSupported(_) => Failure::BadRequest(e.to_string()),
            BusError::Forbidden(m) => Failure::Forbidden(m.clone()),
            BusError::TooManySubscriptions(n) => Failure::TooManySubscriptions(*n),
            BusError::TooLarge(m) => Failure::TooLarge(m.clone()),
            BusError::RateLimited(m) => Failure::RateLimited(m.clone()),
            BusError::NoResponders(m) => Failure::NoResponders(m.clone()),
            BusError::Timeout(ms) => Failure::Timeout(*ms),
            BusError::NotFound(m) => Failure::NotFound(m.clone()),
            BusError::Unavailable(m) => Failure::Unavailable(m.clone()),
        }
    }
}

impl From<Failure> for BusError {
    fn from(f: Failure) -> BusError {
        match f {
            Failure::BadRequest(m) => BusError::BadRequest(m),
            Failure::Forbidden(m) => BusError::Forbidden(m),
            Failure::TooManySubscriptions(n) => BusError::TooManySubscriptions(n),
            Failure::TooLarge(m) => BusError::TooLarge(m),
            Failure::RateLimited(m) => BusError::RateLimited(m),
            Failure::NoResponders(m) => BusError::NoResponders(m),
            Failure::Timeout(ms) => BusError::Timeout(ms),
            Failure::NotFound(m) => BusError::NotFound(m),
            Failure::Unavailable(m) => BusError::Unavailable(m),
        }
    }
}

/// A row of `GET /v1/sessions`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionRow {
    pub session: String,
    pub user: Option<String>,
    pub connected: bool,
    pub subscriptions: Vec<SubRow>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubRow {
    pub pattern: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

/// Revoked users: tokens of `user` issued before `before` (Unix seconds) are refused. One
/// entry per user (a later revocation with a later `before` covers an earlier one), dropped
/// once `before + auth.revocation_ttl` has passed: what bounds their memory.
#[derive(Debug, Default)]
pub(super) struct Revocations {
    map: DashMap<Box<str>, u64>,
}

impl Revocations {
    /// Records a revocation; keeps the later `before` of two.
    pub(super) fn insert(&self, user: &str, before: u64) {
        let mut e = self.map.entry(user.into()).or_insert(before);
        *e = (*e).max(before);
    }

    /// Whether a token of `user` issued at `iat` is revoked. A token without `iat` cannot be
    /// told to be newer: it is refused while the user has a revocation.
    pub(super) fn refuses(&self, user: &str, iat: Option<u64>, now: u64, ttl: u64) -> bool {
        self.map
            .get(user)
            .is_some_and(|b| b.saturating_add(ttl) >= now && iat.is_none_or(|i| i < *b))
    }

    /// Forgets revocations past their time.
    pub(super) fn prune(&self, now: u64, ttl: u64) {
        self.map.retain(|_, b| b.saturating_add(ttl) >= now);
    }

    pub(super) fn len(&self) -> usize {
        self.map.len()
    }
}

fn now_s() -> u64 {
    crate::event::now_ms() / 1000
}

impl Bus {
    /// `auth.revocation_ttl` in seconds (its default without `[auth]`).
    pub(super) fn revocation_ttl(&self) -> u64 {
        let c = self.config();
        c.auth
            .as_ref()
            .map_or(crate::config::AuthConfig::default().revocation_ttl, |a| {
                a.revocation_ttl
            })
            .as_secs()
    }

    /// Whether a token of `user` issued at `iat` was revoked (`POST /v1/revoke`).
    pub fn is_revoked(&self, user: Option<&str>, iat: Option<u64>) -> bool {
        user.is_some_and(|u| {
            self.inner
                .revocations
                .refuses(u, iat, now_s(), self.revocation_ttl())
        })
    }

    /// Revocations held (for tests and stats).
    pub fn revocation_count(&self) -> usize {
        self.inner.revocations.len()
    }

    pub(super) fn prune_revocations(&self) {
        self.inner.revocations.prune(now_s(), self.revocation_ttl());
    }

    /// Runs a control command on every node (this one only, on a single node).
    pub async fn control(&self, cmd: Control) -> Result<Answer, BusError> {
        self.inner.backplane.control(self, cmd).await
    }

    /// Runs a control command on this node's sessions.
    pub(super) async fn control_here(&self, cmd: &Control) -> Result<Answer, BusError> {
        let count = match cmd {
            Control::Disconnect {
                user,
                session,
                code,
                reason,
                resumable,
            } => self.disconnect_here(
                user.as_deref(),
                session.as_deref(),
                *code,
                reason,
                *resumable,
            ),
            Control::Unsubscribe {
                target,
                pattern,
                group,
            } => self.unsubscribe_here(target, pattern, group.as_deref())?,
            Control::Subscribe {
                target,
                pattern,
                group,
                rewind,
            } => {
                self.server_subscribe_here(target, pattern, group.as_deref(), *rewind)
                    .await?
            }
            Control::Sessions { user } => {
                return Ok(Answer {
                    sessions: self.sessions_here(user.as_deref()),
                    ..Answer::default()
                });
            }
            Control::Revoke { user, before } => self.revoke_here(user, *before),
        };
        Ok(Answer {
            count,
            ..Answer::default()
        })
    }

    /// The live sessions of `user` and/or with id `session` (both given: both must hold).
    fn targets(&self, user: Option<&str>, session: Option<&str>) -> Vec<Arc<Session>> {
        let belongs =
            |s: &Arc<Session>| user.is_none_or(|u| s.identity().user.as_deref() == Some(u));
        if let Some(id) = session {
            return self.find_session(id).filter(belongs).into_iter().collect();
        }
        let Some(user) = user else {
            return Vec::new();
        };
        // Collected first: a registry shard lock is held for the visit, and a session's
        // state (an earlier row of the lock order) may not be taken under it.
        let mut all = Vec::new();
        self.inner.sessions.for_each(|s| all.push(s.clone()));
        all.retain(|s| !s.is_closed() && s.identity().user.as_deref() == Some(user));
        all
    }

    fn target(&self, t: &Target) -> Vec<Arc<Session>> {
        match t {
            Target::User(u) => self.targets(Some(u), None),
            Target::Session(s) => self.targets(None, Some(s)),
        }
    }

    fn disconnect_here(
        &self,
        user: Option<&str>,
        session: Option<&str>,
        code: u16,
        reason: &str,
        resumable: bool,
    ) -> usize {
        let mut n = 0;
        for s in self.targets(user, session) {
            let connected = s.close_connection(Close {
                code,
                reason: reason.into(),
                last_words: None,
            });
            if !resumable {
                self.close_session(&s);
            }
            if connected || !resumable {
                n += 1;
            }
        }
        n
    }

    fn unsubscribe_here(
        &self,
        target: &Target,
        pattern: &str,
        group: Option<&str>,
    ) -> Result<usize, BusError> {
        let parsed = Pattern::parse(pattern)?;
        let key = SubKey {
            pattern: parsed.as_str().into(),
            group: group.map(Into::into),
        };
        let mut n = 0;
        for s in self.target(target) {
            if self.drop_sub(&s, &key, UnsubscribedReason::Server) {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Removes one of a session's subscriptions and tells the client why; false when the
    /// session did not have it.
    pub fn drop_sub(
        &self,
        session: &Arc<Session>,
        key: &SubKey,
        reason: UnsubscribedReason,
    ) -> bool {
        let Some(p) = session.remove_sub(key) else {
            return false;
        };
        self.forget_sub(session, key, &p);
        let frame = ServerFrame::Unsubscribed(UnsubscribedFrame {
            pattern: key.pattern.to_string(),
            group: key.group.as_deref().map(Into::into),
            reason,
        });
        session.push_note(frame.encode().into());
        true
    }

    async fn server_subscribe_here(
        &self,
        target: &Target,
        pattern: &str,
        group: Option<&str>,
        rewind: Option<u64>,
    ) -> Result<usize, BusError> {
        let parsed = Pattern::parse(pattern)?;
        let key = SubKey {
            pattern: parsed.as_str().into(),
            group: group.map(Into::into),
        };
        let opts = SubOptions {
            group,
            rewind,
            ..Default::default()
        };
        // The cap in effect now, as for a client's `sub`.
        let max_subs = self.inner.live.load().config.limits.max_subscriptions;
        let mut n = 0;
        for s in self.target(target) {
            let subs = s.subscriptions();
            // Already subscribed: nothing changes (as a repeated `sub`), nothing is said.
            // Not allowed by the session's permissions: it could deliver nothing.
            if subs.contains(&key) || !s.allows_pattern(&parsed) {
                continue;
            }
            // Full: refused before the note, so the client hears nothing of it (one that
            // fills up meanwhile is refused below, and the note taken back).
            if subs.len() >= max_subs {
                let e = BusError::TooManySubscriptions(max_subs);
                if matches!(target, Target::Session(_)) {
                    return Err(e);
                }
                tracing::debug!(session = %s.id(), error = %e, "server-side subscribe refused");
                continue;
            }
            // The note first, so that it precedes what the subscription replays or delivers.
            let frame = ServerFrame::Subscribed(SubscribedFrame {
                pattern: key.pattern.to_string(),
                group: group.map(Into::into),
            });
            s.push_note(frame.encode().into());
            match self.subscribe_with(&s, parsed.as_str(), &opts).await {
                Ok(o) if o.new => n += 1,
                Ok(_) => {}
                Err(e) => {
                    // Take back what the note announced.
                    let undo = ServerFrame::Unsubscribed(UnsubscribedFrame {
                        pattern: key.pattern.to_string(),
                        group: group.map(Into::into),
                        reason: UnsubscribedReason::Server,
                    });
                    s.push_note(undo.encode().into());
                    if matches!(target, Target::Session(_)) {
                        return Err(e);
                    }
                    tracing::debug!(session = %s.id(), error = %e, "server-side subscribe failed");
                }
            }
        }
        Ok(n)
    }

    fn sessions_here(&self, user: Option<&str>) -> Vec<SessionRow> {
        let sessions = match user {
            Some(u) => self.targets(Some(u), None),
            None => {
                let mut all = Vec::new();
                self.inner.sessions.for_each(|s| {
                    if all.len() < MAX_SESSION_ROWS {
                        all.push(s.clone());
                    }
                });
                all
            }
        };
        let mut rows: Vec<SessionRow> = sessions
            .iter()
            .filter(|s| !s.is_closed())
            .map(|s| SessionRow {
                session: s.id().to_string(),
                user: s.identity().user.clone(),
                connected: s.is_connected(),
                subscriptions: s
                    .subscriptions()
                    .into_iter()
                    .map(|k| SubRow {
                        pattern: k.pattern.to_string(),
                        group: k.group.as_deref().map(Into::into),
                    })
                    .collect(),
            })
            .collect();
        rows.sort_by(|a, b| a.session.cmp(&b.session));
        rows
    }

    fn revoke_here(&self, user: &str, before: u64) -> usize {
        self.inner.revocations.insert(user, before);
        let mut n = 0;
        for s in self.targets(Some(user), None) {
            if s.identity().issued_at.is_none_or(|iat| iat < before)
                && s.close_connection(Close {
                    code: close::UNAUTHORIZED,
                    reason: "token revoked".into(),
                    last_words: None,
                })
            {
                n += 1;
            }
        }
        n
    }

    /// Records revocations read from Redis (a node that starts, or comes back).
    pub(super) fn load_revocations(&self, rows: &[(String, u64)]) {
        for (user, before) in rows {
            self.inner.revocations.insert(user, *before);
        }
    }
}

/// Close codes a backend may disconnect with: 1000, or one of the application range.
pub fn valid_disconnect_code(code: u16) -> bool {
    code == close::NORMAL || (4000..=4999).contains(&code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revocations_keep_the_later_before_and_expire() {
        let r = Revocations::default();
        r.insert("u", 100);
        r.insert("u", 50);
        assert!(r.refuses("u", Some(99), 120, 60));
        assert!(!r.refuses("u", Some(100), 120, 60));
        assert!(r.refuses("u", None, 120, 60), "no iat: refused");
        assert!(!r.refuses("v", Some(1), 120, 60));
        // Past before + ttl the revocation no longer counts, and is pruned.
        assert!(!r.refuses("u", Some(1), 161, 60));
        r.prune(161, 60);
        assert_eq!(r.len(), 0);
    }

    #[test]
    fn control_travels_as_json() {
        let c = Control::Subscribe {
            target: Target::User("ann".into()),
            pattern: "a/**".into(),
            group: None,
            rewind: Some(3),
        };
        let text = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<Control>(&text).unwrap(), c);
    }

    #[test]
    fn a_failure_travels_back_as_the_same_error() {
        let e = BusError::TooManySubscriptions(2);
        let a = Answer {
            error: Some((&e).into()),
            ..Answer::default()
        };
        let back: Answer = serde_json::from_str(&serde_json::to_string(&a).unwrap()).unwrap();
        assert_eq!(BusError::from(back.error.unwrap()), e);
        // An answer without one still reads (and is written) as before.
        let plain: Answer = serde_json::from_str(r#"{"count":3}"#).unwrap();
        assert_eq!((plain.count, plain.error), (3, None));
    }
}
