//! The publish proxy scenario: what asking the application's backend before every publish
//! costs (PROTOCOL.md §10).
//!
//! The tool serves the backend itself (`http`, answering `{"allow":true}` at once), so the
//! figures are Herald's cost of the call, not a backend's. One run has two phases on the same
//! connections and subscribers, each `--duration` long:
//! 1. proxied: every publisher publishes to `bench/proxied/<i>` (routed to the backend by
//!    Herald's `[[proxy.publish]]`), closed loop (at most `--window` publishes awaiting their
//!    `ok` per connection, 1 by default: Herald's reader awaits each proxied publish, so a
//!    deeper window only queues behind the connection's own publishes), or at `--rate`;
//! 2. plain: the same publishers publish to `bench/plain/<i>` (not routed) at the rate the
//!    first phase published, with the same window: the same load without the proxy.
//!
//! The difference of the two phases' publish-to-delivery latencies is what the proxy adds at
//! that load, and their server CPU per publish is what a proxy call costs Herald. In a closed
//! loop the proxied phase runs at the server's limit, where latency is mostly the queue of
//! the publishes in flight (publishers × window ÷ rate); `--rate` measures below the limit.
//!
//! A payload's kind is the byte after its send time, so a late delivery is never counted in
//! the other phase.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use hdrhistogram::Histogram;
use memchr::memmem;
use tokio_util::sync::CancellationToken;

use super::BenchError;
use super::args::Plan;
use super::http::{Answer, HttpServer};
use super::load::{
    CONNECT_CONCURRENCY, STAMP, Side, connect_all, payload_template, stamp, write_stamp,
};
use super::proc::{CpuMeter, cpu_seconds_sum};
use super::proto::Client;
use super::report::{Latency, ProxyRun, PublishStream, Report};

const ALLOW: &[u8] = br#"{"allow":true}"#;
/// The byte after the send time: which phase a delivery belongs to.
const PROXIED: u8 = b'P';
const PLAIN: u8 = b'N';

static PROXIED_TOPIC: std::sync::LazyLock<memmem::Finder<'static>> =
    std::sync::LazyLock::new(|| memmem::Finder::new(br#""topic":"bench/proxied/"#));

/// One phase's publishing.
#[derive(Debug, Clone, Copy)]
struct Phase {
    marker: u8,
    /// Publishes per second, all publishers together; `None`: closed loop.
    rate: Option<f64>,
    start: Instant,
    end: Instant,
}

/// One phase's counters.
#[derive(Default)]
struct Counts {
    published: Cell<u64>,
    acked: Cell<u64>,
    last_ack: Cell<Option<Instant>>,
}

struct Shared {
    epoch: Instant,
    received: Cell<u64>,
    last_rx: Cell<Instant>,
    hist_proxied: RefCell<Histogram<u64>>,
    hist_plain: RefCell<Histogram<u64>>,
    /// Messages sent before this (ns since `epoch`) are not sampled: the phase's warm-up.
    sample_from_ns: Cell<u64>,
    gaps: Cell<u64>,
    errors: RefCell<Vec<String>>,
    stop: CancellationToken,
}

impl Shared {
    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    fn ns_at(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.epoch).as_nanos() as u64
    }

    fn fail(&self, who: &str, e: BenchError) {
        let mut errors = self.errors.borrow_mut();
        if errors.len() < 20 {
            errors.push(format!("{who}: {e}"));
        }
        self.stop.cancel();
    }
}

fn histogram() -> RefCell<Histogram<u64>> {
    RefCell::new(Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds"))
}

pub async fn run(plan: &Plan) -> Result<Report, BenchError> {
    let requests = Rc::new(Cell::new(0u64));
    let unexpected = Rc::new(Cell::new(0u64));
    let backend = {
        let (requests, unexpected) = (requests.clone(), unexpected.clone());
        HttpServer::start(plan.http_port, move |r| {
            requests.set(requests.get() + 1);
            if r.method != b"POST" || PROXIED_TOPIC.find(&r.body).is_none() {
                unexpected.set(unexpected.get() + 1);
            }
            Answer::Json(ALLOW)
        })
        .await?
    };

    let subscribers = connect_all(plan, Side::Subscribers, 0, plan.subscribers).await?;
    let mut subs = Vec::with_capacity(subscribers.len());
    let mut confirmed = futures_util::stream::iter(subscribers.into_iter().map(|mut c| async {
        c.subscribe(&["bench/proxied/**", "bench/plain/**"])
            .await
            .map(|()| c)
    }))
    .buffer_unordered(CONNECT_CONCURRENCY);
    while let Some(c) = confirmed.next().await {
        subs.push(c?);
    }
    drop(confirmed);
    let mut pubs = connect_all(plan, Side::Publishers, plan.subscribers, plan.publishers).await?;

    let epoch = Instant::now();
    let shared = Rc::new(Shared {
        epoch,
        received: Cell::new(0),
        last_rx: Cell::new(epoch),
        hist_proxied: histogram(),
        hist_plain: histogram(),
        sample_from_ns: Cell::new(0),
        gaps: Cell::new(0),
        errors: RefCell::new(Vec::new()),
        stop: CancellationToken::new(),
    });
    let cpu = CpuMeter::start(&plan.server_pids);
    let sub_tasks: Vec<_> = subs
        .into_iter()
        .enumerate()
        .map(|(i, c)| tokio::task::spawn_local(subscriber(i, c, shared.clone())))
        .collect();

    let proxied = Rc::new(Counts::default());
    let phase = Phase {
        marker: PROXIED,
        rate: plan.rate.map(|r| r as f64),
        start: Instant::now(),
        end: Instant::now() + plan.duration,
    };
    let proxied_phase = phase;
    let proxied_cpu;
    (pubs, proxied_cpu) = run_phase(plan, pubs, phase, &shared, &proxied).await;
    // The same load without the proxy: the rate the first phase published at.
    let plain = Rc::new(Counts::default());
    let phase = Phase {
        marker: PLAIN,
        rate: Some(proxied.published.get() as f64 / plan.duration.as_secs_f64()),
        start: Instant::now(),
        end: Instant::now() + plan.duration,
    };
    let plain_cpu;
    (pubs, plain_cpu) = if shared.stop.is_cancelled() {
        (pubs, None)
    } else {
        run_phase(plan, pubs, phase, &shared, &plain).await
    };
    let cpu = cpu.stop();
    shared.stop.cancel();
    for t in sub_tasks {
        let _ = t.await;
    }
    drop(pubs);

    let mut report = Report::new(plan);
    report.topics = 2 * plan.publishers;
    report.published = proxied.published.get() + plain.published.get();
    report.expected = report.published * plan.subscribers as u64;
    report.received = shared.received.get();
    report.lost = report.expected.saturating_sub(report.received);
    report.gap_reported = shared.gaps.get();
    report.seconds = shared
        .last_rx
        .get()
        .saturating_duration_since(epoch)
        .as_secs_f64();
    if report.seconds > 0.0 {
        report.deliveries_per_sec = report.received as f64 / report.seconds;
    }
    report.server_cpu = cpu.server;
    report.server_syscalls = cpu.server_syscalls;
    report.tool_cpu = cpu.tool;
    report.set_server_processes(cpu.processes);
    report.deliveries_per_server_cpu_sec = cpu
        .server_seconds
        .filter(|&s| s > 0.0)
        .map(|s| report.received as f64 / s);
    report.proxy = Some(ProxyRun {
        publishers: plan.publishers,
        window: plan.window,
        proxied: stream(
            &proxied,
            proxied_phase.rate,
            &shared.hist_proxied,
            proxied_cpu,
            proxied_phase.start,
        ),
        plain: stream(
            &plain,
            phase.rate,
            &shared.hist_plain,
            plain_cpu,
            phase.start,
        ),
        backend_requests: requests.get(),
        backend_unexpected: unexpected.get(),
        backend_connections: backend.stats.connections.get(),
    });
    if backend.stats.malformed.get() > 0 {
        report.errors.push(format!(
            "the backend on {} could not parse {} of Herald's requests",
            backend.addr,
            backend.stats.malformed.get()
        ));
    }
    report.errors.extend(shared.errors.take());
    Ok(report)
}

/// The server's CPU during a phase: its CPU seconds and the phase's wall seconds.
type PhaseCpu = Option<(f64, f64)>;

/// Runs one phase on `pubs` and waits for its last deliveries; gives the connections back.
async fn run_phase(
    plan: &Plan,
    pubs: Vec<Client>,
    phase: Phase,
    shared: &Rc<Shared>,
    counts: &Rc<Counts>,
) -> (Vec<Client>, PhaseCpu) {
    let cpu_before = cpu_seconds_sum(&plan.server_pids);
    shared
        .sample_from_ns
        .set(shared.ns_at(phase.start + plan.warmup));
    let received_before = shared.received.get();
    let tasks: Vec<_> = pubs
        .into_iter()
        .enumerate()
        .map(|(i, mut c)| {
            let (plan, shared, counts) = (plan.clone(), shared.clone(), counts.clone());
            tokio::task::spawn_local(async move {
                if let Err(e) = publish(i, &mut c, &plan, phase, &shared, &counts).await
                    && !shared.stop.is_cancelled()
                {
                    shared.fail(&format!("publisher {i}"), e);
                }
                c
            })
        })
        .collect();
    let mut pubs = Vec::with_capacity(tasks.len());
    for t in tasks {
        if let Ok(c) = t.await {
            pubs.push(c);
        }
    }
    // Every publish was acked, so routed: wait for its deliveries, but not forever.
    let expected = counts.published.get() * plan.subscribers as u64;
    while shared.received.get() - received_before < expected
        && !shared.stop.is_cancelled()
        && shared.last_rx.get().elapsed() <= plan.drain
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let wall = phase.start.elapsed().as_secs_f64();
    let cpu = cpu_before
        .zip(cpu_seconds_sum(&plan.server_pids))
        .map(|(a, b)| (b - a, wall));
    (pubs, cpu)
}

/// A phase's figures.
fn stream(
    counts: &Counts,
    rate: Option<f64>,
    hist: &RefCell<Histogram<u64>>,
    cpu: PhaseCpu,
    start: Instant,
) -> PublishStream {
    let secs = counts
        .last_ack
        .get()
        .map(|t| t.saturating_duration_since(start).as_secs_f64())
        .unwrap_or(0.0);
    let acked = counts.acked.get();
    PublishStream {
        rate,
        published: counts.published.get(),
        acked,
        acked_per_sec: if secs > 0.0 { acked as f64 / secs } else { 0.0 },
        latency: latency(&hist.borrow()),
        server_cpu: cpu.map(|(s, wall)| s / wall.max(1e-9)),
        server_us_per_publish: cpu
            .filter(|_| acked > 0)
            .map(|(s, _)| s * 1e6 / acked as f64),
    }
}

fn latency(h: &Histogram<u64>) -> Option<Latency> {
    let us = |ns: u64| ns as f64 / 1000.0;
    (!h.is_empty()).then(|| Latency {
        samples: h.len(),
        p50_us: us(h.value_at_quantile(0.50)),
        p99_us: us(h.value_at_quantile(0.99)),
        p999_us: us(h.value_at_quantile(0.999)),
        max_us: us(h.max()),
    })
}

async fn subscriber(i: usize, mut c: Client, shared: Rc<Shared>) {
    if let Err(e) = receive(&mut c, &shared).await
        && !shared.stop.is_cancelled()
    {
        shared.fail(&format!("subscriber {i}"), e);
    }
}

async fn receive(c: &mut Client, shared: &Shared) -> Result<(), BenchError> {
    let mut gaps_seen = 0;
    loop {
        tokio::select! {
            biased;
            _ = shared.stop.cancelled() => return Ok(()),
            open = c.fill() => {
                if !open? {
                    return Err(BenchError::Closed("the server closed the connection".into()));
                }
            }
        }
        let now = shared.now_ns();
        let from = shared.sample_from_ns.get();
        let n = {
            let mut proxied = shared.hist_proxied.borrow_mut();
            let mut plain = shared.hist_plain.borrow_mut();
            c.poll(|payload| {
                let Some(sent) = stamp(payload).filter(|&s| s >= from) else {
                    return;
                };
                let h = match payload.get(STAMP) {
                    Some(&PROXIED) => &mut proxied,
                    Some(&PLAIN) => &mut plain,
                    _ => return,
                };
                let _ = h.record(now.saturating_sub(sent).max(1));
            })?
        };
        if c.has_output() {
            c.flush().await?;
        }
        let gaps = c.seen().gap_msgs;
        if gaps != gaps_seen {
            shared.gaps.set(shared.gaps.get() + gaps - gaps_seen);
            gaps_seen = gaps;
        }
        if n > 0 {
            shared.received.set(shared.received.get() + n);
            shared.last_rx.set(Instant::now());
        }
    }
}

/// Publisher `i`'s share of a phase: at most `window` publishes awaiting their `ok`, sent as
/// soon as there is room (closed loop) or when due (at the phase's rate: publisher `i` sends
/// its k-th at `start + (k + i/publishers) × publishers/rate`, so the publishers take turns).
/// At the end, waits for the last `ok`s (Herald answers or refuses every proxied publish
/// within `proxy.timeout`).
async fn publish(
    i: usize,
    c: &mut Client,
    plan: &Plan,
    phase: Phase,
    shared: &Shared,
    counts: &Counts,
) -> Result<(), BenchError> {
    let topic = match phase.marker {
        PROXIED => plan.pub_topics[i].clone(),
        _ => format!("bench/plain/{i}"),
    };
    let mut payload = payload_template(plan.size);
    payload[1 + STAMP] = phase.marker;
    let mut batch = Vec::with_capacity(4096);
    let interval = phase
        .rate
        .filter(|&r| r > 0.0)
        .map(|r| Duration::from_secs_f64(plan.publishers as f64 / r));
    let first = interval.map(|iv| phase.start + iv.mul_f64(i as f64 / plan.publishers as f64));
    let (mut sent, mut acked) = (0u64, 0u64);
    // The connection carries on from the previous phase: its `ok`s so far are not this one's.
    let acks_before = u64::from(c.seen().acks);
    let give_up = phase.end + plan.drain.max(Duration::from_secs(1));
    loop {
        let now = Instant::now();
        let publishing = now < phase.end && !shared.stop.is_cancelled();
        let room = plan.window - (sent - acked);
        let mut next_due = None;
        if publishing && room > 0 {
            let n = match (interval, first) {
                (Some(iv), Some(first)) if now >= first => {
                    let due = (now - first).as_secs_f64() / iv.as_secs_f64();
                    (due as u64 + 1).saturating_sub(sent).min(room)
                }
                (Some(_), Some(_)) => 0,
                _ => room,
            };
            if n > 0 {
                batch.clear();
                write_stamp(&mut payload, shared.now_ns());
                for j in 0..n {
                    c.encode_acked_publish(&topic, sent + j, &payload, &mut batch);
                }
                c.send_batch(&batch).await?;
                sent += n;
                counts.published.set(counts.published.get() + n);
                continue;
            }
            next_due = interval
                .zip(first)
                .map(|(iv, f)| f + iv.mul_f64(sent as f64));
        }
        if !publishing && acked == sent {
            return Ok(());
        }
        if shared.stop.is_cancelled() {
            return Ok(());
        }
        let wake = match next_due {
            Some(t) => t.min(phase.end),
            None if publishing => phase.end,
            None => give_up,
        };
        tokio::select! {
            open = c.fill() => {
                if !open? {
                    return Err(BenchError::Closed("the server closed the connection".into()));
                }
            }
            _ = tokio::time::sleep_until(wake.into()) => {
                if !publishing && Instant::now() >= give_up {
                    return Err(BenchError::Timeout(format!(
                        "{} of {sent} publishes still without an ok",
                        sent - acked
                    )));
                }
                continue;
            }
            _ = shared.stop.cancelled() => return Ok(()),
        }
        c.poll(|_| {})?;
        if c.has_output() {
            c.flush().await?;
        }
        let now_acked = u64::from(c.seen().acks) - acks_before;
        if now_acked != acked {
            counts.acked.set(counts.acked.get() + now_acked - acked);
            counts.last_ack.set(Some(Instant::now()));
            acked = now_acked;
        }
    }
}
