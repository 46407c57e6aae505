//! The per-connection checks of PROTOCOL.md §7 and `[limits]`: permissions for each
//! operation and the publish rate. The connection asks before it acts on a frame; the
//! answer is to go ahead, to refuse the frame with an error, or to close.

use std::sync::Arc;
use std::time::Instant;

use crate::auth::{Access, TokenBucket};
use crate::protocol::{ClientFrame, ErrorCode, close};
use crate::topic::{Pattern, validate_topic};

/// What to do with a frame.
#[derive(Debug, PartialEq)]
pub(super) enum Verdict {
    Allow,
    Deny(ErrorCode, String),
    /// Refuse, then close the connection with this code.
    Close(u16, String),
}

pub(super) struct Guard {
    access: Arc<Access>,
    /// `limits.publish_rate` the bucket was made for: a reload that changes it replaces the
    /// bucket at the connection's next publish.
    rate: u32,
    bucket: Option<TokenBucket>,
    /// Publishes refused for going over the rate, less those let through since. A client
    /// that keeps going until this is a whole burst is not listening and gets closed with
    /// 4029. Not "refused in a row": a flood at ten times the rate gets a token every tenth
    /// frame, which would reset such a count forever.
    refused: u32,
}

impl Guard {
    pub(super) fn new(access: Arc<Access>, publish_rate: u32) -> Guard {
        Guard {
            access,
            rate: publish_rate,
            bucket: TokenBucket::new(publish_rate),
            refused: 0,
        }
    }

    pub(super) fn access(&self) -> &Arc<Access> {
        &self.access
    }

    pub(super) fn set_access(&mut self, access: Arc<Access>) {
        self.access = access;
    }

    /// `publish_rate`: the `limits.publish_rate` in effect now, asked for publishes only.
    pub(super) fn check(
        &mut self,
        frame: &ClientFrame<'_>,
        publish_rate: impl FnOnce() -> u32,
    ) -> Verdict {
        let a = &self.access;
        match frame {
            // Without `[auth]` everything is allowed: no per-frame parsing on the hot path.
            ClientFrame::Sub { .. } if a.subscribe.is_all() => Verdict::Allow,
            ClientFrame::Pub { .. } | ClientFrame::Req { .. } if a.publish.is_all() => {
                self.rate(publish_rate())
            }
            ClientFrame::History { .. } | ClientFrame::Presence { .. } if a.subscribe.is_all() => {
                Verdict::Allow
            }
            ClientFrame::Sub { pattern, .. } => match Pattern::parse(pattern) {
                // An invalid pattern is the bus's to report (`bad_pattern`).
                Err(_) => Verdict::Allow,
                Ok(p) if a.subscribe.allows_pattern(&p) => Verdict::Allow,
                Ok(_) => forbidden(format!("no permission to subscribe to '{pattern}'")),
            },
            ClientFrame::Pub { topic, .. } => {
                if validate_topic(topic).is_ok() && !a.may_publish(topic) {
                    return forbidden(format!("no permission to publish to '{topic}'"));
                }
                self.rate(publish_rate())
            }
            ClientFrame::Req { topic, .. } => {
                if validate_topic(topic).is_ok() && !a.publish.allows_topic(topic) {
                    return forbidden(format!("no permission to send requests to '{topic}'"));
                }
                self.rate(publish_rate())
            }
            ClientFrame::History { topic, .. } | ClientFrame::Presence { topic, .. } => {
                if validate_topic(topic).is_ok() && !a.subscribe.allows_topic(topic) {
                    return forbidden(format!("no permission to read '{topic}'"));
                }
                Verdict::Allow
            }
            // Each one is a call to the backend: limited like a publish.
            ClientFrame::Rpc { .. } => self.rate(publish_rate()),
            ClientFrame::Hello { .. }
            | ClientFrame::Unsub { .. }
            | ClientFrame::Ack { .. }
            | ClientFrame::Ping { .. }
            | ClientFrame::Refresh { .. } => Verdict::Allow,
        }
    }

    /// Takes a publish token, under the rate in effect (`limit`).
    fn rate(&mut self, limit: u32) -> Verdict {
        if limit != self.rate {
            // A reload changed the limit: a fresh bucket (a full burst) at the new rate.
            self.rate = limit;
            self.bucket = TokenBucket::new(limit);
            self.refused = 0;
        }
        let Some(bucket) = &mut self.bucket else {
            return Verdict::Allow;
        };
        if bucket.take(Instant::now()) {
            self.refused = self.refused.saturating_sub(1);
            return Verdict::Allow;
        }
        self.refused += 1;
        if self.refused > bucket.burst() {
            return Verdict::Close(
                close::RATE_LIMITED,
                "publish rate exceeded; slow down".into(),
            );
        }
        Verdict::Deny(
            ErrorCode::RateLimited,
            format!(
                "publish rate limit ({} per second, bursts of {})",
                bucket.burst() / 2,
                bucket.burst()
            ),
        )
    }
}

fn forbidden(message: String) -> Verdict {
    Verdict::Deny(ErrorCode::Forbidden, message)
}
