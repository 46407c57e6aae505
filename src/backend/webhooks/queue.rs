//! One endpoint's queue: the events not delivered yet, oldest first, bounded. Past the bound
//! the oldest go (an endpoint down for long loses its oldest events, not the newest), and the
//! loss is reported at most once per [`REPORT_EVERY`].
//!
//! The batch in flight stays in the queue until its answer: the bound counts every event not
//! delivered, and a batch sent again holds the same events (less any the bound dropped).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::Notify;

/// Most events in one request.
pub const MAX_BATCH: usize = 100;
/// How long the first event of a batch waits for others.
pub const LINGER: Duration = Duration::from_millis(100);
/// Shortest interval between two log lines about one kind of loss.
pub const REPORT_EVERY: Duration = Duration::from_secs(10);

/// An event as sent: its JSON object, encoded once for every endpoint.
#[derive(Debug, Clone)]
pub struct Queued {
    /// Position in this queue (what a delivered batch confirms up to).
    pub seq: u64,
    pub at: Instant,
    pub json: Bytes,
}

/// Counts losses and says when to log them: at most once per [`REPORT_EVERY`], with
/// everything lost since the last line.
#[derive(Debug, Default)]
pub struct Throttle {
    last: Option<Instant>,
    held: u64,
}

impl Throttle {
    /// Adds `n` lost events; `Some(total)` when a line is due.
    pub fn add(&mut self, n: u64, now: Instant) -> Option<u64> {
        self.held += n;
        if self.held == 0
            || self
                .last
                .is_some_and(|t| now.duration_since(t) < REPORT_EVERY)
        {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.held))
    }
}

#[derive(Debug)]
pub struct Queue {
    state: parking_lot::Mutex<State>,
    cap: usize,
    /// Woken on every push (a permit is kept when the sender is busy).
    pub wake: Notify,
}

#[derive(Debug, Default)]
struct State {
    events: VecDeque<Queued>,
    next_seq: u64,
    overflow: Throttle,
}

/// What a push did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pushed {
    /// Oldest events dropped to make room (0 or 1).
    pub dropped: usize,
    /// Overflow losses to log now.
    pub report: Option<u64>,
}

impl Queue {
    pub fn new(cap: usize) -> Queue {
        Queue {
            state: parking_lot::Mutex::new(State::default()),
            cap: cap.max(1),
            wake: Notify::new(),
        }
    }

    pub fn push(&self, json: Bytes, now: Instant) -> Pushed {
        let mut out = Pushed::default();
        {
            let mut s = self.state.lock();
            while s.events.len() >= self.cap {
                s.events.pop_front();
                out.dropped += 1;
            }
            let seq = s.next_seq;
            s.next_seq += 1;
            s.events.push_back(Queued { seq, at: now, json });
            if out.dropped > 0 {
                out.report = s.overflow.add(out.dropped as u64, now);
            }
        }
        self.wake.notify_one();
        out
    }

    /// How long until a batch is due: now when one is full, when the oldest event has
    /// waited [`LINGER`], or at once while `draining`; `None` when empty.
    pub fn due_in(&self, now: Instant, draining: bool) -> Option<Duration> {
        let s = self.state.lock();
        let oldest = s.events.front()?;
        if draining || s.events.len() >= MAX_BATCH {
            return Some(Duration::ZERO);
        }
        Some((oldest.at + LINGER).saturating_duration_since(now))
    }

    /// Drops the events queued for `retry_for` or longer; how many.
    pub fn expire(&self, now: Instant, retry_for: Duration) -> usize {
        let mut s = self.state.lock();
        let mut n = 0;
        while s
            .events
            .front()
            .is_some_and(|e| now.duration_since(e.at) >= retry_for)
        {
            s.events.pop_front();
            n += 1;
        }
        n
    }

    /// The oldest events, up to a batch.
    pub fn peek(&self) -> Vec<Queued> {
        let s = self.state.lock();
        s.events.iter().take(MAX_BATCH).cloned().collect()
    }

    /// Removes the delivered events (those up to `seq` still queued); how many.
    pub fn confirm(&self, seq: u64) -> usize {
        let mut s = self.state.lock();
        let mut n = 0;
        while s.events.front().is_some_and(|e| e.seq <= seq) {
            s.events.pop_front();
            n += 1;
        }
        n
    }

    /// Empties the queue (at shutdown); how many were left.
    pub fn clear(&self) -> usize {
        let mut s = self.state.lock();
        let n = s.events.len();
        s.events.clear();
        n
    }

    pub fn len(&self) -> usize {
        self.state.lock().events.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(i: usize) -> Bytes {
        Bytes::from(format!("{{\"i\":{i}}}"))
    }

    #[test]
    fn overflow_drops_the_oldest_and_reports_once_in_a_while() {
        let q = Queue::new(3);
        let t0 = Instant::now();
        let mut reports = Vec::new();
        for i in 0..6 {
            let p = q.push(json(i), t0);
            assert_eq!(p.dropped, usize::from(i >= 3));
            reports.extend(p.report);
        }
        // The first loss is logged at once, the next two wait for the next report.
        assert_eq!(reports, vec![1]);
        let kept: Vec<Bytes> = q.peek().into_iter().map(|e| e.json).collect();
        assert_eq!(kept, vec![json(3), json(4), json(5)]);
        let p = q.push(json(6), t0 + REPORT_EVERY);
        assert_eq!(p.report, Some(3));
    }

    #[test]
    fn a_batch_is_due_when_full_lingered_or_draining() {
        let q = Queue::new(1000);
        let t0 = Instant::now();
        assert_eq!(q.due_in(t0, false), None);
        q.push(json(0), t0);
        assert_eq!(q.due_in(t0, false), Some(LINGER));
        assert_eq!(q.due_in(t0, true), Some(Duration::ZERO));
        assert_eq!(q.due_in(t0 + LINGER, false), Some(Duration::ZERO));
        for i in 1..MAX_BATCH {
            q.push(json(i), t0);
        }
        assert_eq!(q.due_in(t0, false), Some(Duration::ZERO));
        q.push(json(MAX_BATCH), t0);
        assert_eq!(q.peek().len(), MAX_BATCH);
    }

    #[test]
    fn confirm_removes_what_was_sent_even_after_overflow() {
        let q = Queue::new(4);
        let t0 = Instant::now();
        for i in 0..3 {
            q.push(json(i), t0);
        }
        let batch = q.peek();
        let last = batch.last().unwrap().seq;
        // While the batch is in flight, two more arrive and the oldest is dropped.
        q.push(json(3), t0);
        assert_eq!(q.push(json(4), t0).dropped, 1);
        assert_eq!(q.confirm(last), 2);
        let left: Vec<Bytes> = q.peek().into_iter().map(|e| e.json).collect();
        assert_eq!(left, vec![json(3), json(4)]);
    }

    #[test]
    fn events_expire_after_retry_for() {
        let q = Queue::new(10);
        let t0 = Instant::now();
        q.push(json(0), t0);
        q.push(json(1), t0 + Duration::from_secs(2));
        assert_eq!(
            q.expire(t0 + Duration::from_secs(1), Duration::from_secs(3)),
            0
        );
        assert_eq!(
            q.expire(t0 + Duration::from_secs(3), Duration::from_secs(3)),
            1
        );
        assert_eq!(q.len(), 1);
        assert_eq!(q.clear(), 1);
        assert_eq!(q.len(), 0);
    }
}
