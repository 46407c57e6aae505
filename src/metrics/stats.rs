//! `GET /v1/stats`: one JSON object for the dashboard.
//!
//! Totals (`published`, `delivered`, …) stay at the top level, where the web dashboard and
//! scripts already read them; `rates` adds per-second figures over the last seconds,
//! `latency_ms` summarizes the publish-to-socket-write histogram.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{Counters, Kind, Metrics, RateMeter};
use crate::bus::{Bus, StoreHealth};

fn ms(d: Option<Duration>) -> Value {
    d.map_or(Value::Null, |d| json!(d.as_secs_f64() * 1e3))
}

/// The backend's health: `{backend, up}`, plus the durable store's or Redis's figures.
fn store_json(h: &StoreHealth) -> Value {
    let mut v = json!({"backend": h.backend, "up": h.up});
    if let Some(d) = &h.durable {
        let c = &d.committer;
        v["commits"] = json!(c.commits);
        v["written"] = json!(c.written);
        v["errors"] = json!(c.errors);
        v["file_bytes"] = json!(d.file_bytes);
    }
    if let Some(r) = &h.redis {
        v["redis_connected"] = json!(r.connected);
        v["redis_reconnects"] = json!(r.reconnects);
        v["redis_holds_asked"] = json!(r.holds_asked);
        v["redis_publishes_held"] = json!(r.publishes_held);
        v["redis_publish_hold_seconds"] = json!(r.held_for.as_secs_f64());
    }
    v
}

/// The whole stats document.
pub fn stats_json(bus: &Bus, metrics: &Metrics, meter: &RateMeter) -> Value {
    let s = bus.stats();
    let (held, held_bytes, unsent) = bus.buffer_usage();
    let counters = Counters::read(bus, metrics);
    let rates = meter.rates(Instant::now(), counters);
    let lat = metrics.latency.snapshot();
    let count = lat.count();
    let mean = (count > 0).then(|| Duration::from_nanos(lat.sum_ns / count));
    let (reloads, reload_failures) = metrics.reloads();
    let written: serde_json::Map<String, Value> = Kind::ALL
        .iter()
        .map(|k| (k.as_str().to_owned(), json!(metrics.written(*k))))
        .collect();
    json!({
        "uptime_ms": metrics.uptime().as_millis() as u64,
        "connections": s.connections.load(Ordering::Relaxed),
        "connections_opened": metrics.connections_opened(),
        "connections_rejected": metrics.connections_rejected(),
        "sessions": bus.session_count(),
        "subscriptions": bus.subscription_count(),
        "topics": bus.topic_count(),
        "groups": bus.group_count(),
        "unacked": bus.unacked_count(),
        "pending_requests": bus.pending_requests(),
        "published": counters.published,
        "delivered": counters.delivered,
        "written": counters.written,
        "written_by_kind": written,
        "bytes_written": counters.bytes_written,
        "dropped": counters.dropped,
        "gaps": counters.gaps,
        "gap_messages": metrics.gap_messages(),
        "slow_consumers": s.slow_consumers.load(Ordering::Relaxed),
        "duplicates": s.duplicates.load(Ordering::Relaxed),
        "redelivered": s.redelivered.load(Ordering::Relaxed),
        "dead_lettered": s.dead_lettered.load(Ordering::Relaxed),
        "requests": s.requests.load(Ordering::Relaxed),
        "replies_dropped": bus.replies_dropped(),
        "buffer": {"messages": held, "bytes": held_bytes, "unsent": unsent},
        "rates": rates,
        "latency_ms": {
            "count": count,
            "mean": ms(mean),
            "p50": ms(lat.quantile(0.5)),
            "p90": ms(lat.quantile(0.9)),
            "p99": ms(lat.quantile(0.99)),
        },
        "store": store_json(&bus.store_health()),
        "reloads": reloads,
        "reload_failures": reload_failures,
    })
}
