//! Which subscription patterns have subscribers on this node, for `topic.occupied` and
//! `topic.vacated`: a pattern is occupied from its first subscription (plain or group, by
//! any session) to the end of its last. Patterns are the strings as subscribed (an exact
//! topic is its own pattern): `a/{b,c}` and `a/{c,b}` are two patterns, and a subscription
//! to `a/*` does not occupy `a/b`.
//!
//! A single node announces the transitions itself; a cluster node hands them to
//! `remote/occupancy.rs`, which makes them cluster-wide through Redis.

use std::sync::Arc;

use dashmap::DashMap;

use super::{Bus, BusEvent};
use crate::topic::Pattern;

#[derive(Debug, Default)]
pub struct Occupancy {
    /// Subscriptions per pattern. Signed: a subscribe racing with its session's close may
    /// count its end before its start, and the pair must still come back to zero.
    counts: DashMap<Arc<str>, isize>,
}

impl Occupancy {
    /// Counts one subscription more (`delta` 1) or less (-1) of `pattern`; calls `changed`
    /// with `true` when it became occupied, `false` when vacated. `changed` runs under the
    /// pattern's lock, so one pattern's transitions are reported in the order they happened.
    fn count(&self, pattern: &str, delta: isize, changed: impl FnOnce(bool)) {
        let mut entry = self.counts.entry(pattern.into()).or_insert(0);
        let before = *entry;
        *entry += delta;
        let after = *entry;
        if before <= 0 && after > 0 {
            changed(true);
        } else if before > 0 && after <= 0 {
            changed(false);
        }
        if after == 0 {
            drop(entry);
            self.counts.remove_if(pattern, |_, n| *n == 0);
        }
    }

    pub fn is_occupied(&self, pattern: &str) -> bool {
        self.counts.get(pattern).is_some_and(|n| *n > 0)
    }

    /// The occupied patterns.
    pub fn patterns(&self) -> Vec<Arc<str>> {
        self.counts
            .iter()
            .filter(|e| *e.value() > 0)
            .map(|e| e.key().clone())
            .collect()
    }
}

impl Bus {
    /// Follows a subscription of `pattern` that starts (`on`) or ends.
    pub(super) fn occupy(&self, pattern: &Pattern, on: bool) {
        let delta = if on { 1 } else { -1 };
        self.inner
            .occupancy
            .count(pattern.as_str(), delta, |occupied| {
                self.inner
                    .backplane
                    .occupancy_changed(self, pattern.as_str(), occupied);
            });
    }

    /// The occupied patterns of this node.
    pub(super) fn occupied_here(&self) -> Vec<Arc<str>> {
        self.inner.occupancy.patterns()
    }

    pub(super) fn is_occupied_here(&self, pattern: &str) -> bool {
        self.inner.occupancy.is_occupied(pattern)
    }

    /// Reports a transition decided here (a single node) or by Redis (a cluster).
    pub(super) fn announce_occupancy(&self, pattern: &str, occupied: bool) {
        if !self.observed() {
            return;
        }
        let pattern = pattern.to_owned();
        self.notify(if occupied {
            BusEvent::TopicOccupied { pattern }
        } else {
            BusEvent::TopicVacated { pattern }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(o: &Occupancy, steps: &[(&str, isize)]) -> Vec<(String, bool)> {
        let mut seen = Vec::new();
        for (p, d) in steps {
            o.count(p, *d, |occupied| seen.push(((*p).to_owned(), occupied)));
        }
        seen
    }

    #[test]
    fn first_and_last_subscription_are_the_transitions() {
        let o = Occupancy::default();
        let seen = run(
            &o,
            &[
                ("a/*", 1),
                ("a/*", 1),
                ("b", 1),
                ("a/*", -1),
                ("a/*", -1),
                ("b", -1),
            ],
        );
        assert_eq!(
            seen,
            vec![
                ("a/*".into(), true),
                ("b".into(), true),
                ("a/*".into(), false),
                ("b".into(), false)
            ]
        );
        assert!(o.patterns().is_empty());
        assert!(o.counts.is_empty(), "emptied patterns are forgotten");
    }

    #[test]
    fn an_end_counted_before_its_start_reports_nothing() {
        let o = Occupancy::default();
        assert!(run(&o, &[("x", -1), ("x", 1)]).is_empty());
        assert!(o.counts.is_empty());
        assert_eq!(run(&o, &[("x", 1)]), vec![("x".into(), true)]);
        assert_eq!(o.patterns(), vec![Arc::<str>::from("x")]);
    }
}
