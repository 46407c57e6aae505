//! Group commit: one thread owns the [`Durable`] engine and turns whatever publishers queued
//! while the previous sync was running into the next transaction — one fsync for the whole
//! batch, however many publishers wait on it.
//!
//! Each queued write carries a payload `P` (for the bus: the event, its topic and whom to
//! ack). After the batch is durable — or has failed — the payloads are handed to the
//! `deliver` callback in queue order, still on this thread, so a topic's messages are
//! delivered in offset order and nothing reaches a subscriber that a crash could still lose.
//! Writes queued while the callback runs make up the next batch.
//!
//! A failed commit leaves the engine's state unknown, so the committer fails for good: that
//! batch and every later write is answered with the error (clients get `unavailable`) until
//! a restart recovers from what is on disk.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use super::durable::{Durable, StoreError, Write};
use crate::event::now_ms;

/// Writes in one transaction at most, so one batch's delivery cannot hold back acks for long.
pub const MAX_BATCH: usize = 16_384;

/// How often messages past their `history_ttl` are deleted from disk.
pub const EXPIRE_EVERY: Duration = Duration::from_secs(1);

/// Called with each batch's payloads, in order, once the batch is durable (`Ok`) or failed.
pub type Deliver<P> = Box<dyn FnMut(Vec<P>, Result<(), StoreError>) + Send>;

enum Msg<P> {
    Write(Write, P),
    /// Answered once everything queued before it is durable.
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// The handle publishers queue writes on. Dropping it ends the thread after it has
/// committed what was queued.
pub struct Committer<P> {
    tx: Option<mpsc::Sender<Msg<P>>>,
    failed: Arc<OnceLock<String>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl<P> Drop for Committer<P> {
    /// Ends the thread and waits for it (it commits what is queued and closes the engine,
    /// so the data directory can be opened again at once) — unless this is that thread,
    /// which ends by itself once the channel is closed.
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take()
            && t.thread().id() != std::thread::current().id()
        {
            let _ = t.join();
        }
    }
}

impl<P> std::fmt::Debug for Committer<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Committer")
            .field("failed", &self.failed.get())
            .finish()
    }
}

impl<P: Send + 'static> Committer<P> {
    /// Starts the committer thread.
    pub fn start(engine: Box<dyn Durable>, deliver: Deliver<P>) -> std::io::Result<Committer<P>> {
        let (tx, rx) = mpsc::channel();
        let failed = Arc::new(OnceLock::new());
        let worker = Worker {
            engine,
            deliver,
            rx,
            failed: failed.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("herald-commit".into())
            .spawn(move || worker.run())?;
        Ok(Committer {
            tx: Some(tx),
            failed,
            thread: Some(thread),
        })
    }

    /// Queues a write. Fails at once when the store has failed or its thread is gone.
    pub fn submit(&self, write: Write, payload: P) -> Result<(), StoreError> {
        self.check()?;
        self.tx
            .as_ref()
            .ok_or_else(|| StoreError::Failed("the committer is closed".into()))?
            .send(Msg::Write(write, payload))
            .map_err(|_| StoreError::Failed("the commit thread has stopped".into()))
    }

    /// `Err` once a commit has failed.
    pub fn check(&self) -> Result<(), StoreError> {
        match self.failed.get() {
            Some(why) => Err(StoreError::Failed(why.clone())),
            None => Ok(()),
        }
    }

    /// Waits until everything queued so far is durable (or failed).
    pub async fn flush(&self) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.tx.as_ref().is_some_and(|t| t.send(Msg::Flush(tx)).is_ok()) {
            let _ = rx.await;
        }
    }
}

struct Worker<P> {
    engine: Box<dyn Durable>,
    deliver: Deliver<P>,
    rx: mpsc::Receiver<Msg<P>>,
    failed: Arc<OnceLock<String>>,
}

impl<P> Worker<P> {
    fn run(mut self) {
        let mut writes: Vec<Write> = Vec::new();
        let mut payloads: Vec<P> = Vec::new();
        let mut flushes = Vec::new();
        let mut last_expire = Instant::now();
        loop {
            let first = match self.rx.recv_timeout(EXPIRE_EVERY) {
                Ok(m) => Some(m),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let mut next = first;
            while let Some(m) = next.take() {
                match m {
                    Msg::Write(w, p) => {
                        writes.push(w);
                        payloads.push(p);
                    }
                    Msg::Flush(f) => flushes.push(f),
                }
                if writes.len() < MAX_BATCH {
                    next = self.rx.try_recv().ok();
                }
            }
            if !writes.is_empty() {
                let result = match self.failed.get() {
                    Some(why) => Err(StoreError::Failed(why.clone())),
                    None => self.engine.commit(&writes),
                };
                if let Err(e) = &result {
                    self.fail(e);
                }
                writes.clear();
                (self.deliver)(std::mem::take(&mut payloads), result);
            }
            for f in flushes.drain(..) {
                let _ = f.send(());
            }
            if last_expire.elapsed() >= EXPIRE_EVERY && self.failed.get().is_none() {
                last_expire = Instant::now();
                match self.engine.expire(now_ms()) {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(expired = n, "old messages removed from the store"),
                    Err(e) => self.fail(&e),
                }
            }
        }
    }

    fn fail(&self, e: &StoreError) {
        if self.failed.set(e.to_string()).is_ok() {
            tracing::error!(error = %e, "durable store failed; persisted topics are unavailable until restart");
        }
    }
}
