//! A JWKS kept fresh: fetched at once, again every `jwks_refresh`, and on demand when a
//! token names an unknown `kid` (at most once per [`UNKNOWN_KID_INTERVAL`]).
//!
//! Invariants:
//! - Verification reads the current set through an `ArcSwap` (no lock) and never waits on
//!   the network while holding anything: fetching belongs to one task per URL. A verifier
//!   that wants a fresher set asks the task ([`Remote::ask`]) and may wait, bounded, on a
//!   `watch` for the fetch that saw its ask.
//! - A fetch that fails, or answers something that is not a JWKS with a usable key, changes
//!   nothing: the last good set stays (a warning, and `herald_jwks_fetches_total{result=
//!   "failed"}`). A good answer replaces the set whole, so a key removed from the document is
//!   refused from then on.
//! - The task lives as long as a [`Remote`]: dropping the last `Auth` holding it (a reload
//!   to another URL, the server's end) cancels it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::fetch::{FETCH_TIMEOUT, Target};
use super::jwks;
use super::keyset::{Key, KeySet};

/// At most one refetch per this interval is caused by unknown `kid`s.
pub(crate) const UNKNOWN_KID_INTERVAL: Duration = Duration::from_secs(10);
/// After a failed fetch the next comes this soon (or at `jwks_refresh`, if sooner).
pub(crate) const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(30);

/// JWKS fetches of this process, good and failed (every server in it: metrics read them at
/// scrape time).
static FETCHED: AtomicU64 = AtomicU64::new(0);
static FAILED: AtomicU64 = AtomicU64::new(0);

/// (good, failed) JWKS fetches so far.
pub fn fetch_counts() -> (u64, u64) {
    (
        FETCHED.load(Ordering::Relaxed),
        FAILED.load(Ordering::Relaxed),
    )
}

/// The handle on one URL's set and its refresh task.
pub(crate) struct Remote {
    shared: Arc<Shared>,
    _stop: DropGuard,
}

struct Shared {
    target: Target,
    refresh_ms: AtomicU64,
    set: ArcSwap<KeySet>,
    /// A good set has been fetched at least once.
    good: AtomicBool,
    last_error: Mutex<Option<String>>,
    /// Fetch now (an ask).
    wake: Notify,
    /// `jwks_refresh` changed: compute the next fetch time again.
    rearm: Notify,
    asks: Mutex<Asks>,
    /// The ask count the last finished fetch had seen when it started: a fetch serves every
    /// ask made before it began, not one made while it was already on the wire.
    served: watch::Sender<u64>,
}

struct Asks {
    /// Asks so far; the first fetch counts as one, so that start-up can wait for it.
    requested: u64,
    last: Option<Instant>,
}

/// A wait for the fetch that serves an ask.
pub(crate) struct Ticket {
    rx: watch::Receiver<u64>,
    wanted: u64,
}

impl Ticket {
    /// Returns when the fetch is done (good or not), or after `bound`.
    pub(crate) async fn wait(mut self, bound: Duration) {
        let wanted = self.wanted;
        let _ = tokio::time::timeout(bound, self.rx.wait_for(|s| *s >= wanted)).await;
    }
}

impl Remote {
    /// Starts the refresh task, which fetches at once. Outside a Tokio runtime no task can
    /// run: the set stays empty (logged), which refuses tokens with a `kid`, never panics.
    pub(crate) fn start(target: Target, refresh: Duration) -> Remote {
        let shared = Arc::new(Shared {
            target,
            refresh_ms: AtomicU64::new(millis(refresh)),
            set: ArcSwap::from_pointee(KeySet::default()),
            good: AtomicBool::new(false),
            last_error: Mutex::new(None),
            wake: Notify::new(),
            rearm: Notify::new(),
            asks: Mutex::new(Asks {
                requested: 1,
                last: None,
            }),
            served: watch::Sender::new(0),
        });
        let stop = CancellationToken::new();
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(run(shared.clone(), stop.clone()));
            }
            Err(_) => {
                tracing::error!(
                    url = shared.target.url(),
                    "no runtime: the JWKS is not fetched"
                );
                *shared.last_error.lock() = Some("not fetched (no async runtime)".into());
            }
        }
        Remote {
            shared,
            _stop: stop.drop_guard(),
        }
    }

    pub(crate) fn url(&self) -> &str {
        self.shared.target.url()
    }

    /// A reload's new `jwks_refresh`: takes effect from the last fetch, without a fetch.
    pub(crate) fn set_refresh(&self, refresh: Duration) {
        if self
            .shared
            .refresh_ms
            .swap(millis(refresh), Ordering::Relaxed)
            != millis(refresh)
        {
            self.shared.rearm.notify_one();
        }
    }

    pub(crate) fn key(&self, kid: &str) -> Option<Arc<Key>> {
        self.shared.set.load().get(kid)
    }

    /// Asks for a fetch because a token's `kid` is unknown. A ticket when a fetch that will
    /// see the ask is owed (asked now, or asked by someone else and not finished); `None`
    /// when one finished less than [`UNKNOWN_KID_INTERVAL`] ago: the kid is unknown, and
    /// asking again so soon would let any client make the server hammer its IdP.
    pub(crate) fn ask(&self) -> Option<Ticket> {
        let served = *self.shared.served.borrow();
        let wanted = {
            let mut asks = self.shared.asks.lock();
            if asks.requested <= served {
                if asks
                    .last
                    .is_some_and(|t| t.elapsed() < UNKNOWN_KID_INTERVAL)
                {
                    return None;
                }
                asks.requested += 1;
                asks.last = Some(Instant::now());
                self.shared.wake.notify_one();
            }
            asks.requested
        };
        Some(Ticket {
            rx: self.shared.served.subscribe(),
            wanted,
        })
    }

    /// Waits for the first fetch (bounded); `Err` with its failure when no good set came.
    pub(crate) async fn first_fetch(&self) -> Result<(), String> {
        let first = Ticket {
            rx: self.shared.served.subscribe(),
            wanted: 1,
        };
        first.wait(FETCH_TIMEOUT + Duration::from_secs(1)).await;
        if self.shared.good.load(Ordering::Acquire) {
            return Ok(());
        }
        Err(self
            .shared
            .last_error
            .lock()
            .clone()
            .unwrap_or_else(|| "no answer".into()))
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The refresh task: one fetch at a time, at start, on an ask, on the timer.
async fn run(shared: Arc<Shared>, stop: CancellationToken) {
    let mut last: Option<(Instant, bool)> = None;
    loop {
        let next = match last {
            None => Instant::now(),
            Some((at, ok)) => {
                let refresh = Duration::from_millis(shared.refresh_ms.load(Ordering::Relaxed));
                at + if ok {
                    refresh
                } else {
                    refresh.min(RETRY_AFTER_FAILURE)
                }
            }
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep_until(next) => {}
            _ = shared.wake.notified() => {}
            _ = shared.rearm.notified() => continue,
        }
        let seen = shared.asks.lock().requested;
        let ok = tokio::select! {
            _ = stop.cancelled() => return,
            ok = shared.fetch() => ok,
        };
        shared.served.send_replace(seen);
        last = Some((Instant::now(), ok));
    }
}

impl Shared {
    /// One fetch; the set replaced on success. Whether it succeeded.
    async fn fetch(&self) -> bool {
        let url = self.target.url();
        let got = match self.target.get().await {
            Ok(body) => jwks::parse(&body).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match got {
            Ok(parsed) => {
                FETCHED.fetch_add(1, Ordering::Relaxed);
                let changed = self.set.load().kids() != parsed.set.kids();
                if changed {
                    tracing::info!(url, kids = ?parsed.set.kids(), "JWKS key set loaded");
                }
                for why in &parsed.skipped {
                    if changed {
                        tracing::warn!(url, "JWKS key skipped: {why}");
                    } else {
                        tracing::debug!(url, "JWKS key skipped: {why}");
                    }
                }
                self.set.store(Arc::new(parsed.set));
                *self.last_error.lock() = None;
                self.good.store(true, Ordering::Release);
                true
            }
            Err(error) => {
                FAILED.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    url,
                    %error,
                    keys = self.set.load().len(),
                    "JWKS fetch failed; keeping the last good key set"
                );
                *self.last_error.lock() = Some(error);
                false
            }
        }
    }
}
