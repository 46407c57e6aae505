//! One endpoint's delivery task: takes batches from its queue, signs and POSTs them, and
//! retries with exponential backoff until a 2xx answer. One request at a time per endpoint
//! (events arrive in order, and a slow endpoint holds up only itself).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use hmac::{Hmac, Mac};
use hyper::header::{HeaderName, HeaderValue};
use sha2::Sha256;
use tokio_util::sync::CancellationToken;

use super::queue::{Queue, Queued, Throttle};
use crate::backend::{CallError, Client, Endpoint};
use crate::metrics::{Metrics, WebhookResult};

/// Longest wait for an endpoint's answer.
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// First retry delay; it doubles up to [`BACKOFF_MAX`].
pub const BACKOFF_MIN: Duration = Duration::from_millis(100);
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Longest retry delay while flushing at shutdown.
const DRAIN_BACKOFF: Duration = Duration::from_millis(200);

/// The signature header: `sha256=<hex of HMAC-SHA256(secret, body)>`.
pub const SIGNATURE: HeaderName = HeaderName::from_static("herald-signature");

/// One `[[webhooks]]` endpoint.
pub struct Hook {
    pub url: String,
    pub endpoint: Endpoint,
    pub secret: Option<String>,
    pub retry_for: Duration,
    /// The event types it takes, by index into `WebhookConfig::EVENTS`.
    pub wants: [bool; crate::config::WebhookConfig::EVENTS.len()],
    pub queue: Queue,
    /// Shutting down: send what is queued without waiting, then stop.
    pub draining: AtomicBool,
}

/// `sha256=<hex>` of `body` under `secret`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    // HMAC takes a key of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256=");
    for b in digest {
        out.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
        out.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
    }
    out
}

/// The request body: the events' JSON objects as one array.
pub fn body(batch: &[Queued]) -> Bytes {
    let len = batch.iter().map(|e| e.json.len() + 1).sum::<usize>() + 2;
    let mut b = BytesMut::with_capacity(len);
    b.put_u8(b'[');
    for (i, e) in batch.iter().enumerate() {
        if i > 0 {
            b.put_u8(b',');
        }
        b.put_slice(&e.json);
    }
    b.put_u8(b']');
    b.freeze()
}

/// Exponential backoff with jitter: each delay is drawn from the upper half of the current
/// step, so endpoints that failed together do not retry in step.
#[derive(Debug)]
struct Backoff {
    step: Duration,
}

impl Backoff {
    fn new() -> Backoff {
        Backoff { step: BACKOFF_MIN }
    }

    fn next(&mut self) -> Duration {
        let d = self.step.mul_f64(0.5 + rand::random::<f64>() / 2.0);
        self.step = (self.step * 2).min(BACKOFF_MAX);
        d
    }
}

impl Hook {
    fn draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Delivers the queue until `cancel`, or until it is empty once draining.
    pub async fn run(
        self: Arc<Hook>,
        client: Client,
        metrics: Arc<Metrics>,
        cancel: CancellationToken,
    ) {
        let m = &metrics.backend;
        let mut backoff = Backoff::new();
        let mut failing: Option<Throttle> = None;
        let mut expired = Throttle::default();
        loop {
            // Wait for a batch to be due.
            loop {
                match self.queue.due_in(Instant::now(), self.draining()) {
                    Some(d) if d.is_zero() => break,
                    Some(d) => tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(d) => {}
                        _ = self.queue.wake.notified() => {}
                    },
                    None if self.draining() => return,
                    None => tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = self.queue.wake.notified() => {}
                    },
                }
            }
            let now = Instant::now();
            let gone = self.queue.expire(now, self.retry_for);
            if gone > 0 {
                m.webhook_events(WebhookResult::Dropped, gone);
                m.webhook_dequeued(gone);
                if let Some(n) = expired.add(gone as u64, now) {
                    tracing::warn!(url = %self.url, events = n, retry_for = ?self.retry_for,
                        "webhook events given up: not delivered within retry_for");
                }
            }
            let batch = self.queue.peek();
            let Some(last) = batch.last().map(|e| e.seq) else {
                continue;
            };
            let r = tokio::select! {
                _ = cancel.cancelled() => return,
                r = self.send(&client, &batch) => r,
            };
            match r {
                Ok(()) => {
                    m.webhook_batch(true);
                    m.webhook_events(WebhookResult::Sent, batch.len());
                    m.webhook_dequeued(self.queue.confirm(last));
                    backoff = Backoff::new();
                    if failing.take().is_some() {
                        tracing::info!(url = %self.url, "webhook endpoint delivers again");
                    }
                }
                Err(e) => {
                    m.webhook_batch(false);
                    m.webhook_events(WebhookResult::Retried, batch.len());
                    let log = failing.get_or_insert_with(Throttle::default);
                    if let Some(n) = log.add(1, Instant::now()) {
                        tracing::warn!(url = %self.url, error = %e, failed_requests = n,
                            queued = self.queue.len(), "webhook not delivered; retrying");
                    }
                    let mut wait = backoff.next();
                    if self.draining() {
                        wait = wait.min(DRAIN_BACKOFF);
                    }
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
    }

    /// One POST of `batch`; Ok on a 2xx answer.
    async fn send(&self, client: &Client, batch: &[Queued]) -> Result<(), CallError> {
        let body = body(batch);
        let mut headers = Vec::with_capacity(1);
        if let Some(secret) = &self.secret {
            let sig = HeaderValue::from_str(&signature(secret, &body))
                .expect("hex is a valid header value");
            headers.push((SIGNATURE, sig));
        }
        let (r, _took) = client.post(&self.endpoint, &body, &headers, TIMEOUT).await;
        r.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_rfc_4231_hmac_sha256() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn body_is_a_json_array_of_the_events() {
        let now = Instant::now();
        let e = |seq, s: &'static str| Queued {
            seq,
            at: now,
            json: Bytes::from_static(s.as_bytes()),
        };
        assert_eq!(&body(&[])[..], b"[]");
        let b = body(&[e(0, r#"{"id":"a"}"#), e(1, r#"{"id":"b"}"#)]);
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v, serde_json::json!([{"id": "a"}, {"id": "b"}]));
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let mut b = Backoff::new();
        let mut step = BACKOFF_MIN;
        for _ in 0..20 {
            let d = b.next();
            assert!(
                d >= step / 2 && d <= step,
                "{d:?} outside the half of {step:?}"
            );
            step = (step * 2).min(BACKOFF_MAX);
        }
        assert_eq!(b.step, BACKOFF_MAX);
    }
}
