//! What an operator watches: the Prometheus endpoint (`GET /metrics`), the dashboard's JSON
//! (`GET /v1/stats`), and the instruments behind both.
//!
//! Most numbers already exist where the work happens: the bus counts publishes, deliveries,
//! drops and slow consumers in [`crate::bus::Stats`], and sessions, subscriptions and topics
//! are counted by their owners. Those are read at scrape time (see [`exposition`]) rather than
//! mirrored into a second set of counters. [`Metrics`] holds only what the socket side
//! observes: messages and bytes written, gaps sent, error frames by code, connections opened
//! and closed by reason, and the publish-to-socket-write latency histogram.
//!
//! Label cardinality is bounded by construction: every label takes its values from a fixed
//! list (error codes, close reasons, delivery kinds). There is never a label per topic, per
//! session or per connection — those belong in `GET /v1/topics` and the logs.

mod backend;
mod exposition;
mod histogram;
mod rates;
mod stats;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use backend::{BackendMetrics, PROXY_KINDS, PROXY_OUTCOMES, WEBHOOK_RESULTS, WebhookResult};
pub use exposition::{CONTENT_TYPE, Exporter};
pub use histogram::{BOUNDS_NS, BUCKETS, LatencyHistogram, LocalHistogram, Snapshot};
pub use rates::{Counters, RateMeter, Rates, spawn_sampler};
pub use stats::stats_json;

use crate::event::Delivery;
use crate::protocol::{ErrorCode, close};

/// Every error code, in declaration order (`code as usize` indexes it).
pub const ERROR_CODES: [ErrorCode; 16] = [
    ErrorCode::BadFrame,
    ErrorCode::BadJson,
    ErrorCode::UnknownOp,
    ErrorCode::BadTopic,
    ErrorCode::BadPattern,
    ErrorCode::BadRequest,
    ErrorCode::Unauthorized,
    ErrorCode::Forbidden,
    ErrorCode::TooLarge,
    ErrorCode::RateLimited,
    ErrorCode::TooManySubscriptions,
    ErrorCode::NoResponders,
    ErrorCode::Timeout,
    ErrorCode::NotFound,
    ErrorCode::Unavailable,
    ErrorCode::Internal,
];

/// How a written `msg` was delivered: the `kind` label of `herald_messages_written_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Live,
    Retained,
    Replay,
    Redelivered,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Live, Kind::Retained, Kind::Replay, Kind::Redelivered];

    pub fn of(how: Delivery) -> Kind {
        if how.redelivered.is_some() {
            Kind::Redelivered
        } else if how.replay {
            Kind::Replay
        } else if how.retained {
            Kind::Retained
        } else {
            Kind::Live
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Live => "live",
            Kind::Retained => "retained",
            Kind::Replay => "replay",
            Kind::Redelivered => "redelivered",
        }
    }
}

/// Why a connection ended: the `reason` label of `herald_connections_closed_total`.
pub const CLOSE_REASONS: [&str; 9] = [
    "peer",
    "normal",
    "shutdown",
    "protocol",
    "policy",
    "too_large",
    "unauthorized",
    "slow_consumer",
    "rate_limited",
];

/// The reason label for a close the server sent (`None`: the peer left or the socket failed).
pub fn close_reason(code: Option<u16>) -> usize {
    match code {
        None => 0,
        Some(close::NORMAL) => 1,
        Some(close::SHUTDOWN) => 2,
        Some(close::PROTOCOL_ERROR | close::INVALID_PAYLOAD) => 3,
        Some(close::POLICY) => 4,
        Some(close::TOO_LARGE) => 5,
        Some(close::UNAUTHORIZED) => 6,
        Some(close::SLOW_CONSUMER) => 7,
        Some(close::RATE_LIMITED) => 8,
        // Any other code is a policy decision of some kind.
        Some(_) => 4,
    }
}

/// The socket side's instruments. Shared as `Arc<Metrics>` by the server and every writer.
#[derive(Debug)]
pub struct Metrics {
    /// From the publish (the event's creation) to the flush of the socket write that carried
    /// the message. Live messages only: replays, retained and redelivered messages are late
    /// on purpose.
    pub latency: LatencyHistogram,
    /// Proxy calls and webhooks (`crate::backend`).
    pub backend: BackendMetrics,
    written: [AtomicU64; 4],
    bytes_written: AtomicU64,
    /// Socket writes that carried messages, and that count when last sampled: whether the
    /// node is busy enough for `write_delay = "auto"` to coalesce (see [`Metrics::busy`]).
    rounds: AtomicU64,
    rounds_sampled: AtomicU64,
    busy: std::sync::atomic::AtomicBool,
    /// `gap` frames sent, and the seqs they covered.
    gaps: AtomicU64,
    gap_messages: AtomicU64,
    /// Publishes after which a WebSocket reader let the writers run first (overload).
    publisher_yields: AtomicU64,
    errors: [AtomicU64; 16],
    connections_opened: AtomicU64,
    connections_rejected: AtomicU64,
    closed: [AtomicU64; CLOSE_REASONS.len()],
    reloads: AtomicU64,
    reload_failures: AtomicU64,
    started: Instant,
    started_unix: Duration,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            latency: LatencyHistogram::default(),
            backend: BackendMetrics::default(),
            written: Default::default(),
            bytes_written: AtomicU64::new(0),
            rounds: AtomicU64::new(0),
            rounds_sampled: AtomicU64::new(0),
            busy: std::sync::atomic::AtomicBool::new(false),
            gaps: AtomicU64::new(0),
            gap_messages: AtomicU64::new(0),
            publisher_yields: AtomicU64::new(0),
            errors: Default::default(),
            connections_opened: AtomicU64::new(0),
            connections_rejected: AtomicU64::new(0),
            closed: Default::default(),
            reloads: AtomicU64::new(0),
            reload_failures: AtomicU64::new(0),
            started: Instant::now(),
            started_unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default(),
        }
    }
}

/// Message writes per second above which the node counts as busy: below it, one `write`
/// per message costs little (under ~10% of a core) and coalescing would only add latency.
pub const BUSY_WRITES_PER_SEC: u64 = 20_000;

impl Metrics {
    /// Takes the rate of message writes since the last call, `elapsed` ago (the sampler
    /// calls it once a second).
    pub fn sample_busy(&self, elapsed: Duration) {
        let now = self.rounds.load(Ordering::Relaxed);
        let before = self.rounds_sampled.swap(now, Ordering::Relaxed);
        let per_sec = (now.saturating_sub(before) as f64) / elapsed.as_secs_f64().max(1e-3);
        self.busy
            .store(per_sec > BUSY_WRITES_PER_SEC as f64, Ordering::Relaxed);
    }

    /// Whether the node wrote messages more than [`BUSY_WRITES_PER_SEC`] times per second
    /// at the last sample.
    pub fn busy(&self) -> bool {
        self.busy.load(Ordering::Relaxed)
    }
}

/// What one writer wrote since its last [`Metrics::record_writes`]: kept on the writer's
/// stack so that the shared atomics are touched once per batch, not once per message.
#[derive(Debug, Default)]
pub struct WriteTally {
    pub latency: LocalHistogram,
    written: [u64; 4],
    bytes: u64,
}

impl WriteTally {
    /// A `msg` frame reached the socket; `age` is the time since its publish.
    pub fn message(&mut self, how: Delivery, age: Duration) {
        let kind = Kind::of(how);
        self.written[kind as usize] += 1;
        if kind == Kind::Live {
            self.latency.observe(age);
        }
    }

    /// `len` bytes of frames (any kind) handed to the socket.
    pub fn bytes(&mut self, len: usize) {
        self.bytes += len as u64;
    }
}

fn load(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

impl Metrics {
    pub fn new() -> Self {
        Self::default()
    }

    /// Folds a writer's tally into the totals and clears it.
    pub fn record_writes(&self, t: &mut WriteTally) {
        if t.written.iter().any(|n| *n > 0) {
            self.rounds.fetch_add(1, Ordering::Relaxed);
        }
        self.latency.merge(&mut t.latency);
        for (shared, n) in self.written.iter().zip(t.written.iter()) {
            if *n > 0 {
                shared.fetch_add(*n, Ordering::Relaxed);
            }
        }
        if t.bytes > 0 {
            self.bytes_written.fetch_add(t.bytes, Ordering::Relaxed);
        }
        t.written = [0; 4];
        t.bytes = 0;
    }

    /// A `gap {from_seq, to_seq}` frame was sent.
    pub fn gap(&self, from_seq: u64, to_seq: u64) {
        self.gaps.fetch_add(1, Ordering::Relaxed);
        self.gap_messages
            .fetch_add(to_seq.saturating_sub(from_seq) + 1, Ordering::Relaxed);
    }

    /// A reader yielded to the writers after a publish found them behind.
    pub fn publisher_yielded(&self) {
        self.publisher_yields.fetch_add(1, Ordering::Relaxed);
    }

    pub fn publisher_yields(&self) -> u64 {
        load(&self.publisher_yields)
    }

    /// An `error` frame was sent.
    pub fn error(&self, code: ErrorCode) {
        self.errors[code as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn connection_opened(&self) {
        self.connections_opened.fetch_add(1, Ordering::Relaxed);
    }

    /// A WebSocket upgrade refused at `max_connections`.
    pub fn connection_rejected(&self) {
        self.connections_rejected.fetch_add(1, Ordering::Relaxed);
    }

    /// A connection ended; `code` is the close code the server sent, if it sent one.
    pub fn connection_closed(&self, code: Option<u16>) {
        self.closed[close_reason(code)].fetch_add(1, Ordering::Relaxed);
    }

    /// A configuration reload was attempted.
    pub fn reload(&self, ok: bool) {
        if ok {
            self.reloads.fetch_add(1, Ordering::Relaxed);
        } else {
            self.reload_failures.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn written(&self, kind: Kind) -> u64 {
        load(&self.written[kind as usize])
    }

    pub fn written_total(&self) -> u64 {
        self.written.iter().map(load).sum()
    }

    pub fn bytes_written(&self) -> u64 {
        load(&self.bytes_written)
    }

    pub fn gaps(&self) -> u64 {
        load(&self.gaps)
    }

    pub fn gap_messages(&self) -> u64 {
        load(&self.gap_messages)
    }

    pub fn errors(&self, code: ErrorCode) -> u64 {
        load(&self.errors[code as usize])
    }

    pub fn connections_opened(&self) -> u64 {
        load(&self.connections_opened)
    }

    pub fn connections_rejected(&self) -> u64 {
        load(&self.connections_rejected)
    }

    /// Connections closed, by index into [`CLOSE_REASONS`].
    pub fn connections_closed(&self, reason: usize) -> u64 {
        self.closed.get(reason).map_or(0, load)
    }

    pub fn reloads(&self) -> (u64, u64) {
        (load(&self.reloads), load(&self.reload_failures))
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Process start as Unix time.
    pub fn started_unix(&self) -> Duration {
        self.started_unix
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_index_in_order() {
        for (i, code) in ERROR_CODES.iter().enumerate() {
            assert_eq!(*code as usize, i, "{code}");
        }
    }

    #[test]
    fn tallies_fold_once_per_batch() {
        let m = Metrics::new();
        let mut t = WriteTally::default();
        t.message(Delivery::LIVE, Duration::from_micros(300));
        t.message(
            Delivery {
                replay: true,
                ..Delivery::LIVE
            },
            Duration::from_secs(60),
        );
        t.bytes(170);
        m.record_writes(&mut t);
        m.record_writes(&mut t); // nothing new
        assert_eq!(m.written(Kind::Live), 1);
        assert_eq!(m.written(Kind::Replay), 1);
        assert_eq!(m.written_total(), 2);
        assert_eq!(m.bytes_written(), 170);
        // Only the live message is timed.
        assert_eq!(m.latency.snapshot().count(), 1);
        m.gap(5, 9);
        assert_eq!((m.gaps(), m.gap_messages()), (1, 5));
        m.connection_closed(Some(close::SLOW_CONSUMER));
        m.connection_closed(None);
        assert_eq!(m.connections_closed(7), 1);
        assert_eq!(m.connections_closed(0), 1);
        assert_eq!(CLOSE_REASONS[close_reason(Some(4008))], "slow_consumer");
    }
}
