//! Group commit: one thread owns the [`Durable`] engine and turns whatever publishers queued
//! while the previous sync was running into the next transaction — one fsync for the whole
//! batch, however many publishers wait on it.
//!
//! Publishers append to the open batch under a short lock (no channel node, no allocation
//! per message) and get a [`Ticket`]: the batch, shared, and their place in it. The commit
//! thread takes the open batch whole when it is ready for the next transaction. After the
//! batch is durable — or has failed — its writes and payloads are handed to the `deliver`
//! callback in queue order, on a second thread, so a topic's messages are delivered in
//! offset order and nothing reaches a subscriber that a crash could still lose. The batch is
//! then completed at once for all its tickets: one wake per waiting task per batch, not one
//! per message. The commit thread meanwhile starts the next batch: fan-out and acks of one
//! batch overlap the fsync of the next.
//!
//! A failed commit leaves the engine's state unknown, so the committer fails for good: that
//! batch and every later write is answered with the error (clients get `unavailable`) until
//! a restart recovers from what is on disk.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::durable::{Durable, StoreError, Write};
use crate::event::now_ms;

/// Writes in one transaction at most, so one batch's delivery cannot hold back acks for long.
pub const MAX_BATCH: usize = 16_384;

/// How often messages past their `history_ttl` are deleted from disk.
pub const EXPIRE_EVERY: Duration = Duration::from_secs(1);

/// Called with each batch, in order, once it is durable (`Ok`) or failed. Returns a number
/// per write that its [`Ticket`] resolves to (for the bus: how many sessions got the
/// message); ignored after a failure.
pub type Deliver<P> =
    Box<dyn FnMut(Vec<Write>, Vec<P>, &Result<(), StoreError>) -> Vec<u32> + Send>;

/// The completion of one batch, shared by its tickets.
#[derive(Debug)]
struct Batch {
    outcome: OnceLock<Result<Vec<u32>, StoreError>>,
    notify: tokio::sync::Notify,
}

impl Batch {
    fn new() -> Arc<Batch> {
        Arc::new(Batch {
            outcome: OnceLock::new(),
            notify: tokio::sync::Notify::new(),
        })
    }
}

/// The committer's side of a batch: completes it when done, or with an error when dropped
/// before (a thread gone), so no ticket waits forever.
#[derive(Debug)]
struct Completion(Arc<Batch>);

impl Completion {
    fn complete(&self, outcome: Result<Vec<u32>, StoreError>) {
        let _ = self.0.outcome.set(outcome);
        self.0.notify.notify_waiters();
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        if self.0.outcome.get().is_none() {
            self.complete(Err(StoreError::Failed(
                "the durable store stopped before the message was written".into(),
            )));
        }
    }
}

/// A queued write's place in its batch; resolves once the batch is durable and delivered.
#[derive(Debug)]
pub struct Ticket {
    batch: Arc<Batch>,
    index: u32,
}

impl Ticket {
    /// The number `deliver` gave this write, once its batch is durable and delivered; the
    /// error when the batch failed.
    pub async fn wait(&self) -> Result<u32, StoreError> {
        loop {
            if let Some(outcome) = self.batch.outcome.get() {
                return match outcome {
                    Ok(v) => Ok(v.get(self.index as usize).copied().unwrap_or(0)),
                    Err(e) => Err(e.clone()),
                };
            }
            // Registered before the second check: a completion in between still wakes us.
            let notified = self.batch.notify.notified();
            if self.batch.outcome.get().is_none() {
                notified.await;
            }
        }
    }
}

/// Writes queued for one transaction.
struct Pending<P> {
    writes: Vec<Write>,
    payloads: Vec<P>,
    done: Completion,
}

impl<P> Pending<P> {
    fn with_capacity(n: usize) -> Pending<P> {
        Pending {
            writes: Vec::with_capacity(n),
            payloads: Vec::with_capacity(n),
            done: Completion(Batch::new()),
        }
    }
}

struct Queue<P> {
    /// The batch publishers append to.
    open: Pending<P>,
    /// Batches closed at [`MAX_BATCH`], oldest first, not yet taken.
    full: VecDeque<Pending<P>>,
    flushes: Vec<tokio::sync::oneshot::Sender<()>>,
    /// The commit thread is waiting for work.
    idle: bool,
    closed: bool,
}

struct Shared<P> {
    queue: Mutex<Queue<P>>,
    work: Condvar,
    failed: OnceLock<String>,
    tally: Tally,
}

/// What the committer did since start: read by the metrics at scrape time.
#[derive(Debug, Default)]
struct Tally {
    commits: AtomicU64,
    written: AtomicU64,
    errors: AtomicU64,
}

/// The durable store's health as the operator sees it (`herald_store_*` metrics).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// No commit has failed: persisted topics accept writes.
    pub up: bool,
    /// Transactions committed (one fsync each).
    pub commits: u64,
    /// Messages made durable.
    pub written: u64,
    /// Writes answered with an error: those of a failed commit, later ones refused because
    /// the store had failed, and failed expiry passes.
    pub errors: u64,
}

/// The handle publishers queue writes on. Dropping it ends the threads after they have
/// committed and delivered what was queued.
pub struct Committer<P> {
    shared: Arc<Shared<P>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

/// What the commit thread hands the delivery thread.
enum Done<P> {
    Batch(Pending<P>, Result<(), StoreError>),
    Flush(tokio::sync::oneshot::Sender<()>),
}

impl<P> Drop for Committer<P> {
    /// Ends the threads and waits for them (they commit what is queued and close the
    /// engine, so the data directory can be opened again at once) — unless this is one of
    /// them, which ends by itself once the queue is closed.
    fn drop(&mut self) {
        self.shared.queue.lock().closed = true;
        self.shared.work.notify_all();
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
            .field("failed", &self.shared.failed.get())
            .finish()
    }
}

impl<P: Send + 'static> Committer<P> {
    /// Starts the commit and delivery threads.
    pub fn start(engine: Box<dyn Durable>, deliver: Deliver<P>) -> std::io::Result<Committer<P>> {
        let (done_tx, done_rx) = mpsc::channel();
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                open: Pending::with_capacity(0),
                full: VecDeque::new(),
                flushes: Vec::new(),
                idle: false,
                closed: false,
            }),
            work: Condvar::new(),
            failed: OnceLock::new(),
            tally: Tally::default(),
        });
        let worker = Worker {
            engine,
            done: done_tx,
            shared: shared.clone(),
        };
        let committing = std::thread::Builder::new()
            .name("herald-commit".into())
            .spawn(move || worker.run())?;
        let delivering = std::thread::Builder::new()
            .name("herald-deliver".into())
            .spawn(move || deliver_loop(done_rx, deliver))?;
        Ok(Committer {
            shared,
            threads: vec![committing, delivering],
        })
    }

    /// Queues a write. Fails at once when the store has failed or its thread is gone.
    pub fn submit(&self, write: Write, payload: P) -> Result<Ticket, StoreError> {
        self.check()?;
        let mut q = self.shared.queue.lock();
        if q.closed {
            return Err(StoreError::Failed("the committer is closed".into()));
        }
        if q.open.writes.len() >= MAX_BATCH {
            let next = Pending::with_capacity(MAX_BATCH);
            let full = std::mem::replace(&mut q.open, next);
            q.full.push_back(full);
        }
        let index = q.open.writes.len() as u32;
        q.open.writes.push(write);
        q.open.payloads.push(payload);
        let ticket = Ticket {
            batch: q.open.done.0.clone(),
            index,
        };
        let wake = std::mem::take(&mut q.idle);
        drop(q);
        if wake {
            self.shared.work.notify_one();
        }
        Ok(ticket)
    }

    /// `Err` once a commit has failed. Ask only for a write about to be made: a refusal
    /// counts as a store error.
    pub fn check(&self) -> Result<(), StoreError> {
        match self.shared.failed.get() {
            Some(why) => {
                self.shared.tally.errors.fetch_add(1, Ordering::Relaxed);
                Err(StoreError::Failed(why.clone()))
            }
            None => Ok(()),
        }
    }

    /// Whether the store still accepts writes, and what it did so far.
    pub fn health(&self) -> Health {
        let t = &self.shared.tally;
        Health {
            up: self.shared.failed.get().is_none(),
            commits: t.commits.load(Ordering::Relaxed),
            written: t.written.load(Ordering::Relaxed),
            errors: t.errors.load(Ordering::Relaxed),
        }
    }

    /// Waits until everything queued so far is durable (or failed) and delivered.
    pub async fn flush(&self) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        {
            let mut q = self.shared.queue.lock();
            if q.closed {
                return;
            }
            q.flushes.push(tx);
            q.idle = false;
        }
        self.shared.work.notify_one();
        let _ = rx.await;
    }
}

/// Hands each finished batch to `deliver`, in order, and completes it; answers flushes after
/// the batches before them are delivered.
fn deliver_loop<P>(rx: mpsc::Receiver<Done<P>>, mut deliver: Deliver<P>) {
    while let Ok(d) = rx.recv() {
        match d {
            Done::Batch(batch, result) => {
                let Pending {
                    writes,
                    payloads,
                    done,
                } = batch;
                let counts = deliver(writes, payloads, &result);
                done.complete(result.map(|()| counts));
            }
            Done::Flush(f) => {
                let _ = f.send(());
            }
        }
    }
}

/// A batch to commit (if any) and the flushes to answer after it.
type Taken<P> = (Option<Pending<P>>, Vec<tokio::sync::oneshot::Sender<()>>);

struct Worker<P> {
    engine: Box<dyn Durable>,
    done: mpsc::Sender<Done<P>>,
    shared: Arc<Shared<P>>,
}

impl<P> Worker<P> {
    /// The next batch to commit and the flushes queued with it, waiting at most until the
    /// next expiry pass is due; `None` once the queue is closed and empty.
    fn take(&self, last_expire: Instant) -> Option<Taken<P>> {
        let mut q = self.shared.queue.lock();
        loop {
            if let Some(full) = q.full.pop_front() {
                return Some((Some(full), Vec::new()));
            }
            if !q.open.writes.is_empty() || !q.flushes.is_empty() {
                // Sized for the next batch like this one, to grow without copies.
                let next = Pending::with_capacity(q.open.writes.len().min(MAX_BATCH));
                let batch = std::mem::replace(&mut q.open, next);
                let flushes = std::mem::take(&mut q.flushes);
                return Some(((!batch.writes.is_empty()).then_some(batch), flushes));
            }
            if q.closed {
                return None;
            }
            let Some(wait) = EXPIRE_EVERY.checked_sub(last_expire.elapsed()) else {
                return Some((None, Vec::new()));
            };
            q.idle = true;
            self.shared.work.wait_for(&mut q, wait);
            q.idle = false;
        }
    }

    fn run(mut self) {
        let mut last_expire = Instant::now();
        while let Some((batch, flushes)) = self.take(last_expire) {
            if let Some(batch) = batch {
                let result = match self.shared.failed.get() {
                    Some(why) => Err(StoreError::Failed(why.clone())),
                    None => {
                        let started = Instant::now();
                        let r = self.engine.commit(&batch.writes);
                        tracing::trace!(batch = batch.writes.len(), took = ?started.elapsed(), "commit");
                        r
                    }
                };
                let tally = &self.shared.tally;
                match &result {
                    Ok(()) => {
                        tally.commits.fetch_add(1, Ordering::Relaxed);
                        let n = batch.writes.len() as u64;
                        tally.written.fetch_add(n, Ordering::Relaxed);
                    }
                    Err(e) => {
                        let n = batch.writes.len() as u64;
                        tally.errors.fetch_add(n, Ordering::Relaxed);
                        self.fail(e);
                    }
                }
                let _ = self.done.send(Done::Batch(batch, result));
            }
            for f in flushes {
                let _ = self.done.send(Done::Flush(f));
            }
            if last_expire.elapsed() >= EXPIRE_EVERY && self.shared.failed.get().is_none() {
                last_expire = Instant::now();
                match self.engine.expire(now_ms()) {
                    Ok(0) => {}
                    Ok(n) => tracing::debug!(expired = n, "old messages removed from the store"),
                    Err(e) => {
                        self.shared.tally.errors.fetch_add(1, Ordering::Relaxed);
                        self.fail(&e);
                    }
                }
            }
        }
    }

    fn fail(&self, e: &StoreError) {
        if self.shared.failed.set(e.to_string()).is_ok() {
            tracing::error!(error = %e, "durable store failed; persisted topics are unavailable until restart");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Event, EventParts};
    use crate::store::Retention;
    use crate::topic::Topic;

    /// Records what it was asked to commit; fails from the `fail_at`th commit on.
    struct Probe {
        seen: Arc<Mutex<Vec<u64>>>,
        commits: usize,
        fail_at: usize,
    }

    impl Durable for Probe {
        fn recover(
            &mut self,
            _: &dyn Fn(&Topic) -> Option<Retention>,
            _: u64,
        ) -> Result<Vec<super::super::Recovered>, StoreError> {
            Ok(Vec::new())
        }
        fn commit(&mut self, batch: &[Write]) -> Result<(), StoreError> {
            self.commits += 1;
            if self.commits >= self.fail_at {
                return Err(StoreError::Engine("disk on fire".into()));
            }
            self.seen
                .lock()
                .extend(batch.iter().map(|w| w.event.offset));
            Ok(())
        }
        fn expire(&mut self, _: u64) -> Result<u64, StoreError> {
            Ok(0)
        }
    }

    fn write(offset: u64) -> Write {
        Write {
            event: Arc::new(Event::new(
                EventParts {
                    topic: Topic::parse("t").unwrap(),
                    data: "1",
                    msg_id: None,
                    reply_to: None,
                },
                offset,
                "ep".into(),
                1,
            )),
            retain: None,
            keep: Retention {
                history: 10,
                ttl: None,
            },
        }
    }

    type Log = Arc<Mutex<Vec<u64>>>;

    fn start(fail_at: usize) -> (Committer<u64>, Log, Log) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let delivered = Arc::new(Mutex::new(Vec::new()));
        let d = delivered.clone();
        let probe = Probe {
            seen: seen.clone(),
            commits: 0,
            fail_at,
        };
        let deliver: Deliver<u64> = Box::new(move |writes, payloads, result| {
            assert_eq!(writes.len(), payloads.len());
            if result.is_ok() {
                d.lock().extend(&payloads);
            }
            payloads.iter().map(|p| *p as u32 * 10).collect()
        });
        (
            Committer::start(Box::new(probe), deliver).unwrap(),
            seen,
            delivered,
        )
    }

    #[tokio::test]
    async fn tickets_resolve_in_order_after_commit() {
        let (c, seen, delivered) = start(usize::MAX);
        let tickets: Vec<Ticket> = (1..=40_000u64)
            .map(|i| c.submit(write(i), i).unwrap())
            .collect();
        for (i, t) in tickets.iter().enumerate() {
            assert_eq!(t.wait().await.unwrap(), (i as u32 + 1) * 10);
        }
        c.flush().await;
        let want: Vec<u64> = (1..=40_000).collect();
        assert_eq!(*seen.lock(), want);
        assert_eq!(*delivered.lock(), want);
    }

    #[tokio::test]
    async fn a_failed_commit_fails_its_tickets_and_later_writes() {
        let (c, _, delivered) = start(2);
        let t = c.submit(write(1), 1).unwrap();
        assert_eq!(t.wait().await.unwrap(), 10);
        let healthy = Health {
            up: true,
            commits: 1,
            written: 1,
            errors: 0,
        };
        assert_eq!(c.health(), healthy);
        let t = c.submit(write(2), 2).unwrap();
        assert!(t.wait().await.is_err());
        assert!(c.check().is_err());
        assert!(c.submit(write(3), 3).is_err());
        assert_eq!(*delivered.lock(), [1]);
        // The failed batch's write and the two refused after it.
        let failed = Health {
            up: false,
            errors: 3,
            ..healthy
        };
        assert_eq!(c.health(), failed);
    }

    #[tokio::test]
    async fn dropping_the_committer_commits_what_was_queued() {
        let (c, seen, _) = start(usize::MAX);
        let tickets: Vec<Ticket> = (1..=100u64)
            .map(|i| c.submit(write(i), i).unwrap())
            .collect();
        drop(c);
        assert_eq!(seen.lock().len(), 100);
        for t in tickets {
            assert!(t.wait().await.is_ok());
        }
    }
}
