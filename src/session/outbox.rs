//! The link between a session and whoever drains it: a WebSocket writer task, or an
//! embedded [`crate::bus::Subscription`].
//!
//! A session only ever *wakes* its outbox; it never writes. Control frames (`ok`, `error`,
//! `pong`, …) queue here so the writer sends them in order with the session's messages.
//! The queue is bounded: when a client stops reading its answers, the reader stops reading
//! its requests (backpressure reaches the client through TCP) instead of the server growing.

use std::collections::VecDeque;

use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;
use tokio::sync::Notify;

/// Control frames held for a writer before the reader is made to wait.
pub const CONTROL_QUEUE_MAX: usize = 256;

/// A control queue's buffer up to this capacity is freed when its writer goes idle (idle
/// connections are the many); a larger one, a busy connection's, is kept for reuse.
const IDLE_FREE_UP_TO: usize = 16;

#[derive(Debug, Default)]
pub struct Outbox {
    state: Mutex<OutboxState>,
    /// Wakes the writer: new messages, control frames or a close.
    wake: Notify,
    /// Wakes a reader waiting for room in the control queue.
    room: Notify,
    /// The writer is a task of this node that only waits for CPU: a WebSocket writer whose
    /// socket takes what it is given. Off while its socket is full (a slow or stalled
    /// reader: that backlog is its reader's, never a reason to slow publishers) and for
    /// outboxes drained at their user's pace (embedded subscriptions, inboxes).
    runnable: AtomicBool,
}

#[derive(Debug, Default)]
struct OutboxState {
    control: VecDeque<String>,
    close: Option<Close>,
}

/// A request to end the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Close {
    pub code: u16,
    pub reason: String,
    /// Frames to send just before the close frame (e.g. `bye`).
    pub last_words: Option<String>,
}

/// What a writer takes from the outbox in one go.
#[derive(Debug, Default)]
pub struct Drained {
    pub control: Vec<String>,
    pub close: Option<Close>,
}

impl Drained {
    /// [`Outbox::release_idle`] for the writer's side.
    pub fn release_idle(&mut self) {
        if self.control.is_empty() && self.control.capacity() <= IDLE_FREE_UP_TO {
            self.control = Vec::new();
        }
    }
}

impl Outbox {
    pub fn new() -> Self {
        Self::default()
    }

    /// Wakes the writer (a session has new messages).
    /// Set by a WebSocket writer: on while it can write, off while a write waits for the
    /// socket.
    pub fn set_runnable(&self, on: bool) {
        self.runnable.store(on, Ordering::Relaxed);
    }

    /// Whether a backlog here is the node's (see the field).
    pub fn runnable(&self) -> bool {
        self.runnable.load(Ordering::Relaxed)
    }

    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Waits until there is something to drain. A wake that came before this call counts.
    pub async fn woken(&self) {
        self.wake.notified().await
    }

    /// Queues a control frame. Returns false when the queue is full; the caller should wait
    /// with [`Outbox::wait_for_room`] and try again.
    pub fn try_push_control(&self, frame: String) -> Result<(), String> {
        let mut s = self.state.lock();
        if s.close.is_some() {
            return Ok(()); // closing: further answers are moot
        }
        if s.control.len() >= CONTROL_QUEUE_MAX {
            return Err(frame);
        }
        s.control.push_back(frame);
        drop(s);
        self.wake.notify_one();
        Ok(())
    }

    /// Queues a control frame, waiting for room if the client is not reading.
    pub async fn push_control(&self, mut frame: String) {
        loop {
            let room = self.room.notified();
            match self.try_push_control(frame) {
                Ok(()) => return,
                Err(back) => frame = back,
            }
            room.await;
        }
    }

    /// Asks the writer to close the connection. The first request wins.
    pub fn close(&self, close: Close) {
        let mut s = self.state.lock();
        if s.close.is_none() {
            s.close = Some(close);
        }
        drop(s);
        self.wake.notify_one();
        self.room.notify_waiters();
    }

    /// Frees the control queue's buffer if it is empty and small: called by a writer going
    /// idle.
    pub fn release_idle(&self) {
        let mut s = self.state.lock();
        if s.control.is_empty() && s.control.capacity() <= IDLE_FREE_UP_TO {
            s.control = VecDeque::new();
        }
    }

    /// Whether control frames (answers) or a close wait for the writer: those are never
    /// held back by write coalescing.
    pub fn has_control(&self) -> bool {
        let s = self.state.lock();
        !s.control.is_empty() || s.close.is_some()
    }

    pub fn is_closing(&self) -> bool {
        self.state.lock().close.is_some()
    }

    /// Takes every queued control frame and a pending close.
    pub fn drain(&self, into: &mut Drained) {
        let mut s = self.state.lock();
        into.control.extend(s.control.drain(..));
        if into.close.is_none() {
            into.close = s.close.clone();
        }
        if s.control.capacity() > 2 * CONTROL_QUEUE_MAX {
            s.control.shrink_to(CONTROL_QUEUE_MAX);
        }
        drop(s);
        self.room.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bounded_control_queue_waits_for_room() {
        let ob = std::sync::Arc::new(Outbox::new());
        for i in 0..CONTROL_QUEUE_MAX {
            ob.try_push_control(i.to_string()).unwrap();
        }
        assert!(ob.try_push_control("x".into()).is_err());
        let ob2 = ob.clone();
        let pusher = tokio::spawn(async move { ob2.push_control("late".into()).await });
        tokio::task::yield_now().await;
        assert!(!pusher.is_finished());
        let mut d = Drained::default();
        ob.drain(&mut d);
        assert_eq!(d.control.len(), CONTROL_QUEUE_MAX);
        pusher.await.unwrap();
        let mut d = Drained::default();
        ob.drain(&mut d);
        assert_eq!(d.control, vec!["late".to_string()]);
    }
}
