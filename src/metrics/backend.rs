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
/// What became of webhook events, as metric labels: delivered (a 2xx answer), in a request
/// that failed and will be sent again, given up (queue overflow, `retry_for` over, or still
/// queued at shutdown).
pub const WEBHOOK_RESULTS: [&str; 3] = ["sent", "retried", "dropped"];

/// A webhook event's fate, indexing [`WEBHOOK_RESULTS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookResult {
    Sent,
    Retried,
    Dropped,
}

#[derive(Debug, Default)]
pub struct BackendMetrics {
    calls: [[AtomicU64; PROXY_OUTCOMES.len()]; PROXY_KINDS.len()],
    /// Per kind: from the request to the backend's whole answer (failed calls included).
    pub latency: [LatencyHistogram; PROXY_KINDS.len()],
    webhook_events: [AtomicU64; WEBHOOK_RESULTS.len()],
    /// Webhook requests (batches) answered 2xx, and those that failed.
    webhook_batches: [AtomicU64; 2],
    /// Events waiting in the webhooks' queues (all endpoints), in flight included.
    webhook_queued: AtomicU64,
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

    /// Counts `n` webhook events that came to `result`.
    pub fn webhook_events(&self, result: WebhookResult, n: usize) {
        if n > 0 {
            self.webhook_events[result as usize].fetch_add(n as u64, Ordering::Relaxed);
        }
    }

    pub fn webhook_events_total(&self, result: WebhookResult) -> u64 {
        self.webhook_events[result as usize].load(Ordering::Relaxed)
    }

    /// Counts one webhook request, delivered (`ok`) or not.
    pub fn webhook_batch(&self, ok: bool) {
        self.webhook_batches[usize::from(!ok)].fetch_add(1, Ordering::Relaxed);
    }

    /// Webhook requests: (delivered, failed).
    pub fn webhook_batches(&self) -> (u64, u64) {
        (
            self.webhook_batches[0].load(Ordering::Relaxed),
            self.webhook_batches[1].load(Ordering::Relaxed),
        )
    }

    /// `n` events entered a webhook queue.
    pub fn webhook_queued(&self, n: usize) {
        self.webhook_queued.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// `n` events left a webhook queue (delivered or dropped).
    pub fn webhook_dequeued(&self, n: usize) {
        self.webhook_queued.fetch_sub(n as u64, Ordering::Relaxed);
    }

    pub fn webhook_queue_len(&self) -> u64 {
        self.webhook_queued.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_index_their_lists() {
        let m = BackendMetrics::default();
        m.proxy_call("publish", "denied", Duration::from_millis(3));
        m.proxy_call("publish", "nonsense", Duration::from_millis(3));
        assert_eq!(m.proxy_calls("publish", "denied"), 1);
        assert_eq!(m.latency[2].snapshot().count(), 1);
        m.webhook_events(WebhookResult::Dropped, 4);
        m.webhook_events(WebhookResult::Sent, 2);
        assert_eq!(WEBHOOK_RESULTS[WebhookResult::Dropped as usize], "dropped");
        assert_eq!(m.webhook_events_total(WebhookResult::Dropped), 4);
        assert_eq!(m.webhook_events_total(WebhookResult::Retried), 0);
        m.webhook_batch(true);
        m.webhook_batch(false);
        m.webhook_batch(false);
        assert_eq!(m.webhook_batches(), (1, 2));
        m.webhook_queued(5);
        m.webhook_dequeued(3);
        assert_eq!(m.webhook_queue_len(), 2);
    }
}
