//! Backpressure across nodes: a node that cannot deliver what the feed brings it asks every
//! node to hold its publishes for a moment, so that the cluster publishes at the rate its
//! slowest node delivers instead of queueing in the feed and dropping from session buffers.
//!
//! On one node the publisher's reader is slowed directly (DESIGN.md, "Overload"). Across
//! nodes the publisher is elsewhere, so the lagging node broadcasts `<node> <hold_ms>` on
//! [`keys::SLOW`]: every node holds new publishes until the newest hold it heard lapses,
//! and `<node> 0` ends that node's hold at once. A node keeps asking while it lags, so a
//! node that dies or recovers releases the others within one hold.
//!
//! Only a node's own lag asks (a feed applied late, writers that are runnable but behind):
//! a slow or stalled reader never does, as on one node. A publish waits at most
//! [`MAX_WAIT`] however often it is asked, so a node that lags for good slows the cluster
//! but never stops it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::Notify;

/// How long one ask holds publishes. Asks repeat every [`ASK_EVERY`] while the node lags,
/// so this is what one lost ask (or a dead node) costs at most.
pub const HOLD: Duration = Duration::from_millis(5);
/// How often a lagging node asks again.
pub const ASK_EVERY: Duration = Duration::from_millis(1);
/// The longest one publish waits, however many nodes keep asking.
pub const MAX_WAIT: Duration = Duration::from_millis(100);

/// The holds this node heard, by the node that asked.
pub struct Slowdown {
    /// This node: it holds for itself directly, so its own asks coming back from Redis
    /// are ignored (one would renew a hold it has released meanwhile).
    own: Box<str>,
    held: Mutex<HashMap<Box<str>, Instant>>,
    /// When the latest hold lapses, in µs since `base`; 0 when nothing holds. Publishes
    /// read only this.
    until_us: AtomicU64,
    base: Instant,
    released: Notify,
    /// Publishes that waited for a hold to lapse.
    waited: AtomicU64,
    /// Holds this node asked for.
    asked: AtomicU64,
    /// Time publishes spent waiting, in µs.
    waited_us: AtomicU64,
}

impl Slowdown {
    pub fn new(own: &str) -> Slowdown {
        Slowdown {
            own: own.into(),
            held: Mutex::new(HashMap::new()),
            until_us: AtomicU64::new(0),
            base: Instant::now(),
            released: Notify::new(),
            waited: AtomicU64::new(0),
            asked: AtomicU64::new(0),
            waited_us: AtomicU64::new(0),
        }
    }

    /// An ask as it travels.
    pub fn encode(node: &str, hold: Duration) -> String {
        format!("{node} {}", hold.as_millis())
    }

    /// An ask heard on the channel; anything else there is ignored.
    pub fn heard(&self, payload: &[u8]) {
        let Some((node, ms)) = std::str::from_utf8(payload)
            .ok()
            .and_then(|t| t.split_once(' '))
        else {
            return;
        };
        let Ok(ms) = ms.parse::<u64>() else { return };
        if node == &*self.own {
            return;
        }
        self.hold(
            node,
            Duration::from_millis(ms.min(HOLD.as_millis() as u64 * 4)),
        );
    }

    /// Holds publishes for `hold` on `node`'s behalf (`ZERO` ends its hold).
    pub fn hold(&self, node: &str, hold: Duration) {
        let now = Instant::now();
        let mut held = self.held.lock();
        if hold.is_zero() {
            held.remove(node);
        } else {
            match held.get_mut(node) {
                Some(until) => *until = now + hold,
                None => {
                    held.insert(node.into(), now + hold);
                }
            }
        }
        held.retain(|_, until| *until > now);
        let latest = held.values().max().copied();
        let us = latest.map_or(0, |t| (t - self.base).as_micros() as u64);
        let before = self.until_us.swap(us, Ordering::Release);
        drop(held);
        if us < before {
            self.released.notify_waiters();
        }
    }

    /// Waits while some node's hold is in force, at most [`MAX_WAIT`].
    pub async fn wait(&self) {
        if self.until_us.load(Ordering::Acquire) == 0 {
            return;
        }
        let started = Instant::now();
        let mut counted = false;
        loop {
            let released = self.released.notified();
            let until = self.until_us.load(Ordering::Acquire);
            let now = Instant::now();
            let lapses = self.base + Duration::from_micros(until);
            let deadline = lapses.min(started + MAX_WAIT);
            if until == 0 || deadline <= now {
                if counted {
                    let us = (now - started).as_micros() as u64;
                    self.waited_us.fetch_add(us, Ordering::Relaxed);
                }
                return;
            }
            if !counted {
                counted = true;
                self.waited.fetch_add(1, Ordering::Relaxed);
            }
            tokio::select! {
                _ = released => {}
                _ = tokio::time::sleep_until(deadline.into()) => {}
            }
        }
    }

    /// Counts a hold this node asked for.
    pub fn count_ask(&self) {
        self.asked.fetch_add(1, Ordering::Relaxed);
    }

    /// Holds this node asked for.
    pub fn asked(&self) -> u64 {
        self.asked.load(Ordering::Relaxed)
    }

    /// Publishes that waited for a hold.
    pub fn waited(&self) -> u64 {
        self.waited.load(Ordering::Relaxed)
    }

    /// Time publishes spent waiting for holds, summed.
    pub fn waited_for(&self) -> Duration {
        Duration::from_micros(self.waited_us.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn holds_until_the_hold_lapses() {
        let s = Slowdown::new("me");
        s.wait().await; // nothing holds: no wait
        assert_eq!(s.waited(), 0);
        s.heard(Slowdown::encode("a", Duration::from_millis(18)).as_bytes());
        let t = Instant::now();
        s.wait().await;
        assert!(
            t.elapsed() >= Duration::from_millis(15),
            "{:?}",
            t.elapsed()
        );
        assert_eq!(s.waited(), 1);
        s.wait().await; // lapsed: no wait
        assert_eq!(s.waited(), 1);
    }

    #[tokio::test]
    async fn a_release_ends_that_nodes_hold_only() {
        let s = Arc::new(Slowdown::new("me"));
        s.hold("a", Duration::from_millis(19));
        let w = s.clone();
        let t = Instant::now();
        let waiting = tokio::spawn(async move { w.wait().await });
        tokio::time::sleep(Duration::from_millis(2)).await;
        s.hold("a", Duration::ZERO);
        waiting.await.unwrap();
        assert!(t.elapsed() < Duration::from_millis(15), "{:?}", t.elapsed());

        s.hold("a", Duration::from_millis(19));
        s.hold("b", Duration::from_millis(19));
        let w = s.clone();
        let t = Instant::now();
        let waiting = tokio::spawn(async move { w.wait().await });
        tokio::time::sleep(Duration::from_millis(2)).await;
        s.hold("a", Duration::ZERO); // b still holds
        waiting.await.unwrap();
        assert!(
            t.elapsed() >= Duration::from_millis(15),
            "{:?}",
            t.elapsed()
        );
    }

    #[test]
    fn ignores_what_it_does_not_understand_and_its_own_asks() {
        let s = Slowdown::new("me");
        for bad in [&b"no-space"[..], b"a x", b"\xff 3", b"", b"me 5"] {
            s.heard(bad);
        }
        assert_eq!(s.until_us.load(Ordering::Relaxed), 0);
        // An absurd hold is capped.
        s.heard(b"a 999999");
        let until = s.base + Duration::from_micros(s.until_us.load(Ordering::Relaxed));
        assert!(until <= Instant::now() + HOLD * 4);
    }
}
