//! What observing costs: the writer's per-message latency observation (the hot path), and a
//! scrape of `/metrics` or `/v1/stats` as the number of sessions grows (off the hot path, but
//! a scrape walks every session's buffer counters).
//!
//! ```text
//! cargo bench --bench metrics
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use herald::Bus;
use herald::event::Delivery;
use herald::metrics::{Counters, Exporter, Metrics, RateMeter, WriteTally, stats_json};

fn write_path(c: &mut Criterion) {
    let metrics = Metrics::new();
    let published = Instant::now();
    let mut g = c.benchmark_group("writer");
    // One flushed batch of 256 messages: 256 observations into the writer's local tally,
    // then one fold into the shared atomics.
    g.bench_function("observe 256 messages + fold", |b| {
        let mut tally = WriteTally::default();
        b.iter(|| {
            let now = Instant::now();
            for _ in 0..256 {
                tally.message(Delivery::LIVE, now.saturating_duration_since(published));
            }
            metrics.record_writes(&mut tally);
        })
    });
    g.bench_function("observe 1 message + fold", |b| {
        let mut tally = WriteTally::default();
        b.iter(|| {
            tally.message(Delivery::LIVE, Duration::from_micros(120));
            metrics.record_writes(&mut tally);
        })
    });
    g.finish();
}

fn scrape(c: &mut Criterion) {
    let mut g = c.benchmark_group("scrape");
    for sessions in [1_000usize, 100_000] {
        let bus = Bus::new(herald::Config::default());
        let mut keep = Vec::with_capacity(sessions);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        for i in 0..sessions {
            let s = bus.open_session();
            rt.block_on(bus.subscribe_session(&s, &format!("t/{}", i % 1000), None))
                .unwrap();
            keep.push(s);
        }
        for i in 0..1000 {
            bus.publish_json(&format!("t/{i}"), &i).unwrap();
        }
        let metrics = Arc::new(Metrics::new());
        let exporter = Exporter::new(bus.clone(), metrics.clone());
        let meter = RateMeter::new(Instant::now(), Counters::read(&bus, &metrics));
        g.bench_with_input(BenchmarkId::new("/metrics", sessions), &(), |b, _| {
            b.iter(|| exporter.render())
        });
        g.bench_with_input(BenchmarkId::new("/v1/stats", sessions), &(), |b, _| {
            b.iter(|| stats_json(&bus, &metrics, &meter))
        });
        drop(keep);
    }
    g.finish();
}

criterion_group!(benches, write_path, scrape);
criterion_main!(benches);
