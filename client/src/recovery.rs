//! Subscribing again on a new session (`welcome {resumed:false}`: the session expired, the
//! server restarted, or this is another node) without losing what was published meanwhile:
//! each plain subscription asks for what follows the positions it delivered
//! (`sub.since {topics, ts}`), and the server's answer is passed on to it.

use std::collections::BTreeMap;

use herald_protocol::{AckMode, ClientFrame, ErrorCode, Id, Since, TopicPositions};

use crate::positions::{Positions, merge};
use crate::subscription::LocalSub;
use crate::{ClientEvent, Delivery, Shared};

/// One `sub` to send on a new session.
pub(crate) struct Resub {
    pub(crate) pattern: String,
    pub(crate) group: Option<String>,
    pub(crate) manual_ack: bool,
    /// Plain subscriptions: what they have.
    pub(crate) since: Option<TopicPositions>,
}

/// The `sub`s that make the local subscriptions again: one per (pattern, group), as the
/// server holds them. Local subscriptions of the same pattern share one `since`.
pub(crate) fn plan(subs: &[LocalSub]) -> Vec<Resub> {
    type Key = (String, Option<String>, bool);
    let mut by_key: BTreeMap<Key, Vec<&Positions>> = BTreeMap::new();
    for s in subs.iter().filter(|s| !s.tx.is_closed()) {
        let key = (s.pattern.as_str().to_owned(), s.group.clone(), s.manual_ack);
        let positions = by_key.entry(key).or_default();
        positions.extend(s.positions.as_ref());
    }
    by_key
        .into_iter()
        .map(|((pattern, group, manual_ack), positions)| Resub {
            since: group.is_none().then(|| merge(positions)),
            pattern,
            group,
            manual_ack,
        })
        .collect()
}

impl Resub {
    pub(crate) fn frame(&self, id: Option<i64>) -> ClientFrame<'_> {
        ClientFrame::Sub {
            id: id.map(Id::Num),
            pattern: self.pattern.as_str().into(),
            group: self.group.clone(),
            ack: self.manual_ack.then_some(AckMode::Manual),
            rewind: None,
            since: self.since.clone().map(Since::Topics),
        }
    }
}

/// The server took a recovery `sub`: every subscription of the pattern learns whether it
/// got everything, and so does the event stream.
pub(crate) fn done(shared: &Shared, pattern: String, recovered: bool) {
    for s in shared.subs.lock().iter() {
        if s.positions.is_some() && s.pattern.as_str() == pattern {
            let _ = s.tx.send(Delivery::Recovered { recovered });
        }
    }
    let _ = shared
        .events
        .send(ClientEvent::Recovered { pattern, recovered });
}

/// The server refused a recovery `sub` (a server without `since.topics`, or one that
/// refuses it for this pattern): the subscription is made plainly, so that at least live
/// messages flow again, and it is reported as not recovered. Returns that `sub`.
pub(crate) fn refused(
    shared: &Shared,
    pattern: String,
    code: ErrorCode,
    message: String,
) -> String {
    tracing::warn!(%pattern, %code, %message, "recovery refused; subscribing without it");
    let plain = ClientFrame::Sub {
        id: None,
        pattern: pattern.as_str().into(),
        group: None,
        ack: None,
        rewind: None,
        since: None,
    };
    // Serializing a frame of strings cannot fail.
    let text = serde_json::to_string(&plain).unwrap_or_default();
    let _ = shared.events.send(ClientEvent::RecoveryRefused {
        pattern: pattern.clone(),
        code,
        message,
    });
    done(shared, pattern, false);
    text
}

#[cfg(test)]
mod tests {
    use herald_protocol::topic::Pattern;
    use herald_protocol::{MsgFrame, Position};
    use tokio::sync::mpsc;

    use super::*;

    fn local(
        key: u64,
        pattern: &str,
        group: Option<&str>,
        delivered: &[(&str, u64)],
    ) -> (LocalSub, mpsc::UnboundedReceiver<Delivery>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let positions = group.is_none().then(|| {
            let mut p = Positions::new(1000 + key);
            for (i, (topic, offset)) in delivered.iter().enumerate() {
                let m = MsgFrame {
                    seq: 1,
                    topic: (*topic).into(),
                    data: serde_json::Value::Null,
                    offset: *offset,
                    epoch: "e".into(),
                    ts: 5000 + key,
                    msg_id: None,
                    reply_to: None,
                    retained: false,
                    replay: false,
                    redelivered: false,
                    deliveries: None,
                };
                assert!(p.accept(&m, key * 100 + i as u64));
            }
            p
        });
        let sub = LocalSub {
            key,
            pattern: Pattern::parse(pattern).unwrap(),
            group: group.map(Into::into),
            manual_ack: group.is_some(),
            positions,
            tx,
        };
        (sub, rx)
    }

    #[test]
    fn one_sub_per_pattern_plain_ones_with_what_they_have() {
        let (a, _ra) = local(1, "t/**", None, &[("t/x", 4), ("t/y", 2)]);
        let (b, _rb) = local(2, "t/**", None, &[("t/x", 3)]);
        let (c, _rc) = local(3, "u/*", None, &[]);
        let (g, _rg) = local(4, "t/**", Some("w"), &[]);
        let (gone, rgone) = local(5, "v/*", None, &[("v/a", 1)]);
        drop(rgone);
        let plan = plan(&[a, b, c, g, gone]);
        let got: Vec<(&str, Option<&str>)> = plan
            .iter()
            .map(|r| (r.pattern.as_str(), r.group.as_deref()))
            .collect();
        assert_eq!(got, [("t/**", None), ("t/**", Some("w")), ("u/*", None)]);
        let t = plan[0].since.as_ref().unwrap();
        let at = |offset| Position {
            epoch: "e".into(),
            offset,
        };
        assert_eq!(t.topics["t/x"], at(3));
        assert_eq!(t.topics["t/y"], at(2));
        assert_eq!(t.ts, Some(1001), "the earlier start of the two");
        assert!(plan[1].since.is_none() && plan[1].manual_ack);
        let u = plan[2].since.as_ref().unwrap();
        assert!(u.topics.is_empty());
        assert_eq!(u.ts, Some(1003), "when it was made");

        let text = serde_json::to_string(&plan[0].frame(Some(9))).unwrap();
        assert_eq!(
            text,
            r#"{"op":"sub","id":9,"pattern":"t/**","since":{"topics":{"t/x":{"epoch":"e","offset":3},"t/y":{"epoch":"e","offset":2}},"ts":1001}}"#
        );
        let text = serde_json::to_string(&plan[1].frame(None)).unwrap();
        assert_eq!(
            text,
            r#"{"op":"sub","pattern":"t/**","group":"w","ack":"manual"}"#
        );
    }
}
