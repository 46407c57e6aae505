//! A subscription as the application holds it, and as the connection task routes to it.

use tokio::sync::mpsc;

use herald_protocol::topic::Pattern;
use herald_protocol::{ClientFrame, GapFrame, MsgFrame, Since, TopicGapFrame};

use crate::positions::Positions;
use crate::{Client, ClientError};

/// What a subscription yields.
#[derive(Debug, Clone, PartialEq)]
pub enum Delivery {
    Msg(MsgFrame),
    /// Messages `from_seq..=to_seq` of the session were lost (the buffer overflowed).
    Gap(GapFrame),
    /// A recovery could not replay `from_offset..=to_offset` of one topic (history no
    /// longer holds them, or the topic's epoch changed); what follows them comes next.
    TopicGap(TopicGapFrame),
    /// The subscription was made again on a new session (the old one was lost), asking for
    /// what it missed. `recovered` is false when something could not be replayed (see the
    /// [`Delivery::TopicGap`]s), or the server refused the recovery. Replayed messages
    /// (`replay: true`) may come before or after this.
    Recovered {
        recovered: bool,
    },
}

/// Options of [`Client::subscribe_with`] (the optional fields of `sub`).
#[derive(Debug, Clone, Default)]
pub struct SubscribeOptions {
    /// Join a queue group: each message goes to one member.
    pub group: Option<String>,
    /// With a group: messages must be acked ([`Client::ack`]) or they are redelivered.
    pub manual_ack: bool,
    /// Replay the N latest messages of each matching topic first.
    pub rewind: Option<u64>,
    /// Replay what follows these positions first (for the first subscribe only: a
    /// recovery asks for what follows what the subscription delivered).
    pub since: Option<Since>,
}

/// The connection task's side of a subscription.
pub(crate) struct LocalSub {
    pub(crate) key: u64,
    pub(crate) pattern: Pattern,
    pub(crate) group: Option<String>,
    pub(crate) manual_ack: bool,
    /// Plain subscriptions only: group members share messages and get redeliveries, so
    /// neither duplicates nor recovery apply to them.
    pub(crate) positions: Option<Positions>,
    pub(crate) tx: mpsc::UnboundedSender<Delivery>,
}

/// A stream of deliveries for one pattern. Dropping it unsubscribes.
pub struct Subscription {
    pub(crate) rx: mpsc::UnboundedReceiver<Delivery>,
    pub(crate) key: u64,
    pub(crate) pattern: String,
    pub(crate) group: Option<String>,
    pub(crate) recovered: Option<bool>,
    pub(crate) client: Client,
}

impl Subscription {
    /// The next delivery; `None` once the client is closed.
    pub async fn next(&mut self) -> Option<Delivery> {
        self.rx.recv().await
    }

    /// The next message, skipping gaps and recovery notices.
    pub async fn next_msg(&mut self) -> Option<MsgFrame> {
        loop {
            if let Delivery::Msg(m) = self.next().await? {
                return Some(m);
            }
        }
    }

    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// With `since`: whether the first subscribe replayed everything after it. (Later
    /// recoveries report as [`Delivery::Recovered`].)
    pub fn recovered(&self) -> Option<bool> {
        self.recovered
    }

    /// Where the subscription stands, as the `since` a recovery would send now: the last
    /// position of each topic it delivered (the newest 1000) and when it was made. `None`
    /// for a group subscription. A program that saves it can give it as
    /// [`SubscribeOptions::since`] when it starts again, and continue where it stopped.
    pub fn recovery_point(&self) -> Option<Since> {
        let subs = self.client.shared.subs.lock();
        let s = subs.iter().find(|s| s.key == self.key)?;
        s.positions.as_ref().map(|p| Since::Topics(p.since()))
    }

    /// Acknowledges a message of a manual-ack group subscription.
    pub fn ack(&self, msg: &MsgFrame) -> Result<(), ClientError> {
        self.client.ack(msg.seq)
    }
}

impl futures_util::Stream for Subscription {
    type Item = Delivery;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Delivery>> {
        self.rx.poll_recv(cx)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let still_used = {
            let mut subs = self.client.shared.subs.lock();
            subs.retain(|s| s.key != self.key);
            subs.iter()
                .any(|s| s.pattern.as_str() == self.pattern && s.group == self.group)
        };
        if !still_used {
            let _ = self.client.send_frame(&ClientFrame::Unsub {
                id: None,
                pattern: self.pattern.as_str().into(),
                group: self.group.clone(),
            });
        }
    }
}
