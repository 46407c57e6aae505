//! The backend's instruments: proxy calls by kind and outcome with their latency, and
//! webhook deliveries (sent, retried, dropped).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::histogram::LatencyHistogram;

/// The proxy kinds, as metric labels.
pub const PROXY_KINDS: [&str; 4] = ["connect", "subscribe", "publish", "rpc"];
/// What a proxy call came to, as metric labels: the backend's verdict, or why there was none.
pub const PROXY_OUTCOMES: [&str; 7] = [
    "allowed",
    "denied",
    "timeout",
    "unreachable",
    "status_5xx",
    "status_other",
    "bad_json",
];

#[derive(Debug, Default)]
pub struct BackendMetrics {
    calls: [[AtomicU64; PROXY_OUTCOMES.len()]; PROXY_KINDS.len()],
    /// Per kind: from the request to the backend's whole answer (failed calls included).
    pub latency: [LatencyHistogram; PROXY_KINDS.len()],
}

impl BackendMetrics {
    /// Counts one proxy call. Labels outside the fixed lists are not counted (a bug, never a
    /// new series).
    pub fn proxy_call(&self, kind: &str, outcome: &str, elapsed: Duration) {
        let k = PROXY_KINDS.iter().position(|x| *x == kind);
        let o = PROXY_OUTCOMES.iter().position(|x| *x == outcome);
        if let (Some(k), Some(o)) = (k, o) {
            self.calls[k][o].fetch_add(1, Ordering::Relaxed);
            self.latency[k].observe(elapsed);
        }
    }

    pub fn proxy_calls(&self, kind: &str, outcome: &str) -> u64 {
        let k = PROXY_KINDS.iter().position(|x| *x == kind);
        let o = PROXY_OUTCOMES.iter().position(|x| *x == outcome);
        match (k, o) {
            (Some(k), Some(o)) => self.calls[k][o].load(Ordering::Relaxed),
            _ => 0,
        }
    }
}
