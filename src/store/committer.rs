//! Group commit: one thread owns the [`Durable`] engine and turns whatever publishers queued
//! while the previous sync was running into the next transaction — one fsync for the whole
//! batch, however many publishers wait on it.
//!
//! Each queued write carries a payload `P` (for the bus: the event, its topic and whom to
//! ack). After the batch is durable — or has failed — the payloads are handed to the
//! `deliver` callback in queue order, on a second thread, so a topic's messages are
//! delivered in offset order and nothing reaches a subscriber that a crash could still lose.
//! The commit thread meanwhile starts the next batch: fan-out and acks of one batch overlap
//! the fsync of the next.
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
    threads: Vec<std::thread::JoinHandle<()>>,
}

/// What the commit thread hands the delivery thread.
enum Done<P> {
    Batch(Vec<P>, Result<(), StoreError>),
    Flush(tokio::sync::oneshot::Sender<()>),
}

impl<P> Drop for Committer<P> {
    /// Ends the thread and waits for it (it commits what is queued and closes the engine,
    /// so the data directory can be opened again at once) — unless this is that thread,
    /// which ends by itself once the channel is closed.
    fn drop(&mut self) {
        drop(self.tx.take());
        for t in self.threads.drain(..) {
            if t.thread().id() != std::thread::current().id() {
                let _ = t.join();
            }
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
        let (done_tx, done_rx) = mpsc::channel();
        let failed = Arc::new(OnceLock::new());
        let worker = Worker {
            engine,
            done: done_tx,
            rx,
            failed: failed.clone(),
        };
        let committing = std::thread::Builder::new()
            .name("herald-commit".into())
            .spawn(move || worker.run())?;
        let delivering = std::thread::Builder::new()
            .name("herald-deliver".into())
            .spawn(move || deliver_loop(done_rx, deliver))?;
        Ok(Committer {
            tx: Some(tx),
            failed,
            threads: vec![committing, delivering],
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

    /// Waits until everything queued so far is durable (or failed) and delivered.
    pub async fn flush(&self) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self
            .tx
            .as_ref()
            .is_some_and(|t| t.send(Msg::Flush(tx)).is_ok())
        {
            let _ = rx.await;
        }
    }
}

/// Hands each finished batch to `deliver`, in order; answers flushes after the batches
/// before them are delivered.
fn deliver_loop<P>(rx: mpsc::Receiver<Done<P>>, mut deliver: Deliver<P>) {
    while let Ok(d) = rx.recv() {
        match d {
            Done::Batch(payloads, result) => deliver(payloads, result),
            Done::Flush(f) => {
                let _ = f.send(());
            }
        }
    }
}

struct Worker<P> {
    engine: Box<dyn Durable>,
    done: mpsc::Sender<Done<P>>,
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
                    None => {
                        let started = Instant::now();
                        let r = self.engine.commit(&writes);
                        tracing::trace!(batch = writes.len(), took = ?started.elapsed(), "commit");
                        r
                    }
                };
                if let Err(e) = &result {
                    self.fail(e);
                }
                writes.clear();
                let _ = self
                    .done
                    .send(Done::Batch(std::mem::take(&mut payloads), result));
            }
            for f in flushes.drain(..) {
                let _ = self.done.send(Done::Flush(f));
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
