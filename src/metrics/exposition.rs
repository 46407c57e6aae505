//! `GET /metrics`: the OpenMetrics text exposition, through `prometheus-client`.
//!
//! Everything is read at scrape time by one [`Collector`]: the bus's counters and gauges and
//! the socket side's [`Metrics`]. Nothing on the publish path knows Prometheus exists.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

use super::backend::{BackendMetrics, PROXY_KINDS, PROXY_OUTCOMES, WEBHOOK_RESULTS, WebhookResult};
use super::{CLOSE_REASONS, ERROR_CODES, Kind, Metrics, Snapshot};
use crate::bus::{Bus, StoreHealth};

/// The `Content-Type` of [`Exporter::render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Renders the exposition. Built once per server.
pub struct Exporter {
    registry: Registry,
}

impl fmt::Debug for Exporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Exporter")
    }
}

impl Exporter {
    pub fn new(bus: Bus, metrics: Arc<Metrics>) -> Exporter {
        let mut registry = Registry::with_prefix("herald");
        registry.register(
            "build",
            "Herald's version",
            Info::new([("version", env!("CARGO_PKG_VERSION"))]),
        );
        registry.register_collector(Box::new(HeraldCollector { bus, metrics }));
        Exporter { registry }
    }

    /// The whole exposition, `# EOF` included.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

struct HeraldCollector {
    bus: Bus,
    metrics: Arc<Metrics>,
}

impl fmt::Debug for HeraldCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HeraldCollector")
    }
}

fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> fmt::Result {
    let m = ConstCounter::new(v);
    m.encode(e.encode_descriptor(name, help, None, m.metric_type())?)
}

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> fmt::Result {
    let m = ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX));
    m.encode(e.encode_descriptor(name, help, None, m.metric_type())?)
}

/// A counter family with one label whose values come from a fixed list.
fn labeled_counter<'v>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    values: impl Iterator<Item = (&'v str, u64)>,
) -> fmt::Result {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (value, n) in values {
        ConstCounter::new(n).encode(m.encode_family(&[(label, value)])?)?;
    }
    Ok(())
}

/// `herald_store_up{backend}` always; the durable store's and Redis's own series when they
/// are in use.
fn store_health(e: &mut DescriptorEncoder, h: &StoreHealth) -> fmt::Result {
    {
        let mut g = e.encode_descriptor(
            "store_up",
            "Whether the message store accepts writes (1) or not (0): always for memory; for redb until a commit fails; for redis while connected.",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(i64::from(h.up)).encode(g.encode_family(&[("backend", h.backend)])?)?;
    }
    if let Some(d) = &h.durable {
        let c = &d.committer;
        counter(
            e,
            "store_commits",
            "Durable store transactions committed (one fsync each).",
            c.commits,
        )?;
        counter(
            e,
            "store_written_messages",
            "Messages of persisted topics made durable.",
            c.written,
        )?;
        counter(
            e,
            "store_errors",
            "Durable store writes that failed: those of a failed commit, later ones refused after it, and failed expiry passes.",
            c.errors,
        )?;
        if let Some(bytes) = d.file_bytes {
            let g = ConstGauge::new(i64::try_from(bytes).unwrap_or(i64::MAX));
            g.encode(e.encode_descriptor(
                "store_file",
                "Size of the durable store's file.",
                Some(&Unit::Bytes),
                g.metric_type(),
            )?)?;
        }
    }
    if let Some(r) = &h.redis {
        gauge(
            e,
            "redis_connected",
            "Whether the pub/sub connection to Redis is up (1) or not (0), as /readyz reports.",
            u64::from(r.connected),
        )?;
        counter(
            e,
            "redis_reconnects",
            "Times the connection to Redis came back after a loss.",
            r.reconnects,
        )?;
        counter(
            e,
            "redis_holds_asked",
            "Times this node, behind with its feed or its writers, asked every node to hold \
             publishes (cluster backpressure).",
            r.holds_asked,
        )?;
        counter(
            e,
            "redis_publishes_held",
            "Publishes of this node that waited because a lagging node asked to hold them.",
            r.publishes_held,
        )?;
        {
            let m = ConstCounter::new(r.held_for.as_secs_f64());
            m.encode(e.encode_descriptor(
                "redis_publish_hold",
                "Time publishes of this node spent waiting for lagging nodes' holds.",
                Some(&Unit::Seconds),
                m.metric_type(),
            )?)?;
        }
    }
    Ok(())
}

/// `herald_proxy_calls_total{kind,outcome}` and `herald_proxy_call_seconds{kind}`.
fn proxy(e: &mut DescriptorEncoder, b: &BackendMetrics) -> fmt::Result {
    {
        let mut m = e.encode_descriptor(
            "proxy_calls",
            "Calls to the [proxy] endpoints, by kind and outcome (the backend's verdict, or why there was none).",
            None,
            MetricType::Counter,
        )?;
        for kind in PROXY_KINDS {
            for outcome in PROXY_OUTCOMES {
                ConstCounter::new(b.proxy_calls(kind, outcome))
                    .encode(m.encode_family(&[("kind", kind), ("outcome", outcome)])?)?;
            }
        }
    }
    let mut m = e.encode_descriptor(
        "proxy_call",
        "Time from a proxy call's request to the backend's whole answer, failed calls included.",
        Some(&Unit::Seconds),
        MetricType::Histogram,
    )?;
    for (kind, h) in PROXY_KINDS.iter().zip(&b.latency) {
        Histogram(h.snapshot()).encode(m.encode_family(&[("kind", *kind)])?)?;
    }
    Ok(())
}

/// `herald_webhook_events_total{result}`, the requests and the queue.
fn webhooks(e: &mut DescriptorEncoder, b: &BackendMetrics) -> fmt::Result {
    let results = [
        WebhookResult::Sent,
        WebhookResult::Retried,
        WebhookResult::Dropped,
    ];
    labeled_counter(
        e,
        "webhook_events",
        "Webhook events delivered (sent), in a failed request to be sent again (retried, once per failed attempt), or given up (dropped: queue overflow, retry_for over, or queued at shutdown).",
        "result",
        results
            .iter()
            .map(|r| (WEBHOOK_RESULTS[*r as usize], b.webhook_events_total(*r))),
    )?;
    let (sent, failed) = b.webhook_batches();
    labeled_counter(
        e,
        "webhook_requests",
        "Webhook requests (batches of events), by result: answered 2xx (sent) or not (failed).",
        "result",
        [("sent", sent), ("failed", failed)].into_iter(),
    )?;
    gauge(
        e,
        "webhook_queued",
        "Webhook events waiting for their endpoint, over all endpoints (requests in flight included).",
        b.webhook_queue_len(),
    )
}

/// The latency histogram as `prometheus-client` encodes a classic histogram.
struct Histogram(Snapshot);

impl EncodeMetric for Histogram {
    fn encode(&self, mut e: MetricEncoder) -> fmt::Result {
        let s = &self.0;
        e.encode_histogram::<NoLabelSet>(
            s.sum().as_secs_f64(),
            s.count(),
            &s.buckets_seconds(),
            None,
        )
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

impl Collector for HeraldCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        let (bus, m) = (&self.bus, &*self.metrics);
        let s = bus.stats();
        let e = &mut e;

        gauge(
            e,
            "connections",
            "Open WebSocket connections.",
            s.connections.load(Ordering::Relaxed),
        )?;
        counter(
            e,
            "connections_opened",
            "WebSocket connections accepted.",
            m.connections_opened(),
        )?;
        counter(
            e,
            "connections_rejected",
            "WebSocket upgrades refused at limits.max_connections.",
            m.connections_rejected(),
        )?;
        labeled_counter(
            e,
            "connections_closed",
            "WebSocket connections ended, by reason (peer: the client left or the socket failed).",
            "reason",
            CLOSE_REASONS
                .iter()
                .enumerate()
                .map(|(i, r)| (*r, m.connections_closed(i))),
        )?;
        gauge(
            e,
            "sessions",
            "Live sessions, attached or waiting for a resume.",
            bus.session_count() as u64,
        )?;
        gauge(
            e,
            "subscriptions",
            "Subscriptions (a queue group counts once).",
            bus.subscription_count() as u64,
        )?;
        gauge(e, "topics", "Known topics.", bus.topic_count() as u64)?;
        gauge(
            e,
            "groups",
            "Queue groups with at least one member.",
            bus.group_count() as u64,
        )?;
        gauge(
            e,
            "unacked_messages",
            "Manual-ack group messages awaiting their ack.",
            bus.unacked_count() as u64,
        )?;
        gauge(
            e,
            "pending_requests",
            "Requests waiting for a reply.",
            bus.pending_requests() as u64,
        )?;

        let (held, held_bytes, unsent) = bus.buffer_usage();
        gauge(
            e,
            "buffered_messages",
            "Messages held in session buffers (unsent backlog and sent ones kept for resume).",
            held as u64,
        )?;
        {
            let g = ConstGauge::new(i64::try_from(held_bytes).unwrap_or(i64::MAX));
            g.encode(e.encode_descriptor(
                "buffered",
                "Bytes held in session buffers.",
                Some(&Unit::Bytes),
                g.metric_type(),
            )?)?;
        }
        gauge(
            e,
            "unsent_messages",
            "Sequence numbers not yet written to their socket: buffered messages, and dropped ones a gap will cover.",
            unsent,
        )?;

        counter(
            e,
            "published",
            "Messages published (duplicates excluded).",
            s.published.load(Ordering::Relaxed),
        )?;
        counter(
            e,
            "deliveries",
            "Messages handed to session buffers.",
            s.delivered.load(Ordering::Relaxed),
        )?;
        labeled_counter(
            e,
            "messages_written",
            "msg frames written to sockets, by delivery kind.",
            "kind",
            Kind::ALL.iter().map(|k| (k.as_str(), m.written(*k))),
        )?;
        {
            let c = ConstCounter::new(m.bytes_written());
            c.encode(e.encode_descriptor(
                "written",
                "Bytes of frames written to sockets (before WebSocket framing).",
                Some(&Unit::Bytes),
                c.metric_type(),
            )?)?;
        }
        counter(
            e,
            "dropped_messages",
            "Unsent messages dropped from full session buffers.",
            s.dropped.load(Ordering::Relaxed),
        )?;
        counter(e, "gaps", "gap frames sent.", m.gaps())?;
        counter(
            e,
            "gap_messages",
            "Sequence numbers covered by gap frames.",
            m.gap_messages(),
        )?;
        counter(
            e,
            "publisher_yields",
            "Publishes after which the publisher's reader let the writers run first: the node \
             was accepting faster than it wrote (overload).",
            m.publisher_yields(),
        )?;
        counter(
            e,
            "slow_consumers",
            "Connections closed with 4008 as slow consumers.",
            s.slow_consumers.load(Ordering::Relaxed),
        )?;
        counter(
            e,
            "duplicates",
            "Publishes answered duplicate: true.",
            s.duplicates.load(Ordering::Relaxed),
        )?;
        counter(
            e,
            "redelivered",
            "Group messages redelivered after ack_wait.",
            s.redelivered.load(Ordering::Relaxed),
        )?;
        counter(
            e,
            "dead_lettered",
            "Group messages sent to $dlq after max_deliveries.",
            s.dead_lettered.load(Ordering::Relaxed),
        )?;
        counter(
            e,
            "requests",
            "Requests answered, timed out or without responders.",
            s.requests.load(Ordering::Relaxed),
        )?;
        labeled_counter(
            e,
            "error_frames",
            "error frames sent to WebSocket clients, by code.",
            "code",
            ERROR_CODES.iter().map(|c| (c.as_str(), m.errors(*c))),
        )?;
        let (ok, failed) = m.reloads();
        labeled_counter(
            e,
            "config_reloads",
            "Configuration reloads (SIGHUP), by result.",
            "result",
            [("ok", ok), ("failed", failed)].into_iter(),
        )?;
        let (ok, failed) = crate::auth::jwks_fetch_counts();
        labeled_counter(
            e,
            "jwks_fetches",
            "JWKS fetches ([auth] jwks_url) of this process, by result; a failed one keeps the last good key set.",
            "result",
            [("ok", ok), ("failed", failed)].into_iter(),
        )?;
        store_health(e, &bus.store_health())?;
        // Only where configured: a server without a backend shows none of its series.
        let config = bus.config();
        if config.proxy.is_some() {
            proxy(e, &m.backend)?;
        }
        if !config.webhooks.is_empty() {
            webhooks(e, &m.backend)?;
        }
        {
            let g = ConstGauge::new(m.started_unix().as_secs_f64());
            g.encode(e.encode_descriptor(
                "start_time",
                "When the server started, Unix time.",
                Some(&Unit::Seconds),
                g.metric_type(),
            )?)?;
        }
        Histogram(m.latency.snapshot()).encode(e.encode_descriptor(
            "publish_to_write",
            "Time from a live message's publish to the flush of the socket write carrying it.",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, ProxyConfig, WebhookConfig};

    fn render(config: Config) -> String {
        let metrics = Arc::new(Metrics::new());
        metrics
            .backend
            .proxy_call("rpc", "timeout", std::time::Duration::from_millis(30));
        metrics.backend.webhook_events(WebhookResult::Retried, 3);
        Exporter::new(Bus::new(config), metrics).render()
    }

    #[test]
    fn backend_series_show_where_configured() {
        let none = render(Config::default());
        assert!(!none.contains("herald_proxy"), "{none}");
        assert!(!none.contains("herald_webhook"), "{none}");

        let config = Config {
            proxy: Some(ProxyConfig::default()),
            webhooks: vec![WebhookConfig {
                url: "http://127.0.0.1:9/hook".into(),
                events: Vec::new(),
                secret: None,
                retry_for: WebhookConfig::RETRY_FOR,
                queue: WebhookConfig::QUEUE,
            }],
            ..Config::default()
        };
        let text = render(config);
        for line in [
            "herald_proxy_calls_total{kind=\"rpc\",outcome=\"timeout\"} 1",
            "herald_proxy_calls_total{kind=\"connect\",outcome=\"allowed\"} 0",
            "herald_proxy_call_seconds_bucket{le=\"0.05\",kind=\"rpc\"} 1",
            "herald_proxy_call_seconds_count{kind=\"rpc\"} 1",
            "herald_proxy_call_seconds_count{kind=\"publish\"} 0",
            "herald_webhook_events_total{result=\"retried\"} 3",
            "herald_webhook_events_total{result=\"dropped\"} 0",
            "herald_webhook_requests_total{result=\"failed\"} 0",
            "herald_webhook_queued 0",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line} in\n{text}");
        }
    }
}
