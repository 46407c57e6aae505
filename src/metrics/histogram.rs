//! The publish-to-socket-write latency histogram.
//!
//! `prometheus-client`'s own `Histogram` takes a mutex on every observation. This one is
//! observed once per written message by every writer task, so it is built from atomics, and
//! writers first count into a [`LocalHistogram`] on their own stack and fold it into the
//! shared one once per flushed batch: a handful of relaxed atomic adds per batch, whatever its
//! size. Buckets are fixed (no allocation, no resizing) and span 50µs to 10s.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets, in nanoseconds (a `+Inf` bucket follows).
pub const BOUNDS_NS: [u64; 17] = [
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// Buckets including `+Inf`.
pub const BUCKETS: usize = BOUNDS_NS.len() + 1;

fn bucket_of(ns: u64) -> usize {
    // The first bound that is >= ns (Prometheus buckets are `le`); past the last: +Inf.
    BOUNDS_NS.partition_point(|&b| b < ns)
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Shared by every writer; read by `/metrics` and `/v1/stats`.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    counts: [AtomicU64; BUCKETS],
    sum_ns: AtomicU64,
}

/// One task's observations since its last [`LatencyHistogram::merge`].
#[derive(Debug, Default, Clone)]
pub struct LocalHistogram {
    counts: [u64; BUCKETS],
    sum_ns: u64,
    n: u64,
}

impl LocalHistogram {
    pub fn observe(&mut self, d: Duration) {
        let ns = nanos(d);
        self.counts[bucket_of(ns)] += 1;
        self.sum_ns = self.sum_ns.saturating_add(ns);
        self.n += 1;
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }
}

impl LatencyHistogram {
    /// Records one observation directly (for callers without a batch).
    pub fn observe(&self, d: Duration) {
        let ns = nanos(d);
        self.counts[bucket_of(ns)].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// Adds a task's local observations and clears them.
    pub fn merge(&self, local: &mut LocalHistogram) {
        if local.is_empty() {
            return;
        }
        for (shared, n) in self.counts.iter().zip(local.counts.iter()) {
            if *n > 0 {
                shared.fetch_add(*n, Ordering::Relaxed);
            }
        }
        self.sum_ns.fetch_add(local.sum_ns, Ordering::Relaxed);
        *local = LocalHistogram::default();
    }

    /// The current counts. Buckets are read one by one while writers may add, so a snapshot
    /// can be a few observations inconsistent; scrapes do not need better.
    pub fn snapshot(&self) -> Snapshot {
        let mut counts = [0; BUCKETS];
        for (c, a) in counts.iter_mut().zip(self.counts.iter()) {
            *c = a.load(Ordering::Relaxed);
        }
        Snapshot {
            counts,
            sum_ns: self.sum_ns.load(Ordering::Relaxed),
        }
    }
}

/// A histogram's counts at one moment (per bucket, not cumulative).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    pub counts: [u64; BUCKETS],
    pub sum_ns: u64,
}

impl Snapshot {
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    pub fn sum(&self) -> Duration {
        Duration::from_nanos(self.sum_ns)
    }

    /// The upper bound of the bucket holding the `q`-quantile (0 < q ≤ 1): the latency that
    /// at least that share of observations did not exceed. `None` without observations, or
    /// when the quantile lies beyond the last bound (over 10s).
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return BOUNDS_NS.get(i).map(|&b| Duration::from_nanos(b));
            }
        }
        None
    }

    /// Buckets as `prometheus-client` encodes them: (upper bound in seconds, count).
    pub fn buckets_seconds(&self) -> Vec<(f64, u64)> {
        BOUNDS_NS
            .iter()
            .map(|&b| b as f64 / 1e9)
            .chain(std::iter::once(f64::INFINITY))
            .zip(self.counts.iter().copied())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_le() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(50_000), 0);
        assert_eq!(bucket_of(50_001), 1);
        assert_eq!(bucket_of(10_000_000_000), BOUNDS_NS.len() - 1);
        assert_eq!(bucket_of(10_000_000_001), BOUNDS_NS.len());
        assert!(BOUNDS_NS.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn local_merges_into_shared() {
        let shared = LatencyHistogram::default();
        let mut local = LocalHistogram::default();
        for ms in [0u64, 1, 1, 3, 40, 20_000] {
            local.observe(Duration::from_millis(ms));
        }
        shared.merge(&mut local);
        assert!(local.is_empty());
        shared.observe(Duration::from_micros(10));
        let s = shared.snapshot();
        assert_eq!(s.count(), 7);
        assert_eq!(
            s.sum(),
            Duration::from_millis(20_045) + Duration::from_micros(10)
        );
        // 0, 1, 1, 3, 40 ms, 10 µs, 20 s: the median is 1 ms, the max beyond the last bound.
        assert_eq!(s.quantile(0.5), Some(Duration::from_millis(1)));
        assert_eq!(s.quantile(0.8), Some(Duration::from_millis(50)));
        assert_eq!(s.quantile(1.0), None);
        let b = s.buckets_seconds();
        assert_eq!(b.len(), BUCKETS);
        assert_eq!(b.last().unwrap(), &(f64::INFINITY, 1));
        assert_eq!(LatencyHistogram::default().snapshot().quantile(0.5), None);
    }
}
