//! Per-second rates for the dashboard (`GET /v1/stats` → `rates`).
//!
//! Prometheus computes rates itself from counters; a dashboard polling JSON should not have
//! to. A sampler task records the counters once a second into a short ring; a rate is the
//! difference between the counters *now* and the oldest sample still inside the window,
//! divided by the time between them. Reading "now" at request time (not the last tick) means
//! a burst shows up in the very next poll.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::Metrics;
use crate::bus::Bus;

/// Rates average over this much history.
pub const WINDOW: Duration = Duration::from_secs(10);
/// How often the sampler records the counters.
pub const TICK: Duration = Duration::from_secs(1);

/// The monotonic counters that rates are derived from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub published: u64,
    pub delivered: u64,
    pub written: u64,
    pub bytes_written: u64,
    pub dropped: u64,
    pub gaps: u64,
}

impl Counters {
    pub fn read(bus: &Bus, metrics: &Metrics) -> Counters {
        let s = bus.stats();
        Counters {
            published: s.published.load(Ordering::Relaxed),
            delivered: s.delivered.load(Ordering::Relaxed),
            written: metrics.written_total(),
            bytes_written: metrics.bytes_written(),
            dropped: s.dropped.load(Ordering::Relaxed),
            gaps: metrics.gaps(),
        }
    }
}

/// Per-second rates over `window_ms`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Rates {
    pub window_ms: u64,
    /// Messages published (in).
    pub published: f64,
    /// Messages handed to sessions.
    pub delivered: f64,
    /// `msg` frames written to sockets (out).
    pub written: f64,
    pub bytes_written: f64,
    /// Unsent messages dropped from full buffers.
    pub dropped: f64,
    /// `gap` frames sent.
    pub gaps: f64,
}

/// A short history of counter samples.
#[derive(Debug)]
pub struct RateMeter {
    samples: Mutex<VecDeque<(Instant, Counters)>>,
}

impl RateMeter {
    /// Starts with a first sample, so rates exist before the sampler's first tick.
    pub fn new(now: Instant, first: Counters) -> RateMeter {
        RateMeter {
            samples: Mutex::new(VecDeque::from([(now, first)])),
        }
    }

    /// Records a sample and forgets those that have left the window (keeping at least one
    /// that is at least `WINDOW` old, so the window stays full).
    pub fn record(&self, now: Instant, c: Counters) {
        let mut s = self.samples.lock();
        s.push_back((now, c));
        while s.len() > 2
            && s.get(1)
                .is_some_and(|(t, _)| now.duration_since(*t) >= WINDOW)
        {
            s.pop_front();
        }
    }

    /// Rates from the oldest sample to `current` at `now`.
    pub fn rates(&self, now: Instant, current: Counters) -> Rates {
        let Some((at, old)) = self.samples.lock().front().copied() else {
            return Rates::default();
        };
        let dt = now.saturating_duration_since(at);
        let secs = dt.as_secs_f64();
        if secs <= 0.0 {
            return Rates::default();
        }
        let per = |new: u64, old: u64| new.saturating_sub(old) as f64 / secs;
        Rates {
            window_ms: dt.as_millis() as u64,
            published: per(current.published, old.published),
            delivered: per(current.delivered, old.delivered),
            written: per(current.written, old.written),
            bytes_written: per(current.bytes_written, old.bytes_written),
            dropped: per(current.dropped, old.dropped),
            gaps: per(current.gaps, old.gaps),
        }
    }
}

/// Samples the counters every [`TICK`] until `cancel` fires.
pub fn spawn_sampler(
    bus: Bus,
    metrics: Arc<Metrics>,
    meter: Arc<RateMeter>,
    cancel: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last = Instant::now();
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {
                    let now = Instant::now();
                    meter.record(now, Counters::read(&bus, &metrics));
                    metrics.sample_busy(now.saturating_duration_since(last));
                    last = now;
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(published: u64) -> Counters {
        Counters {
            published,
            ..Counters::default()
        }
    }

    #[test]
    fn rates_over_the_window() {
        let t0 = Instant::now();
        let m = RateMeter::new(t0, c(0));
        assert_eq!(m.rates(t0, c(5)), Rates::default());
        let r = m.rates(t0 + Duration::from_secs(2), c(10));
        assert_eq!((r.window_ms, r.published), (2000, 5.0));
        for i in 1..=30u64 {
            m.record(t0 + Duration::from_secs(i), c(i * 100));
        }
        // The window now starts 10s before the newest sample.
        let now = t0 + Duration::from_secs(30);
        let r = m.rates(now, c(3000));
        assert_eq!(r.window_ms, 10_000);
        assert_eq!(r.published, 100.0);
        // Counters never run backwards, but a rate must not go negative if they did.
        assert_eq!(m.rates(now, c(0)).published, 0.0);
    }
}
