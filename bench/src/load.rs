//! Throughput and latency runs: subscribers count (and time) what they receive, publishers
//! publish closed-loop (a window of messages in flight), at a fixed rate, or flat out
//! (overload: as fast as their sockets take it).
//!
//! Everything runs on one thread (a `LocalSet`), so the counters publishers read to keep
//! their window are plain `Cell`s, updated by subscribers after each socket read.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use hdrhistogram::Histogram;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::BenchError;
use super::args::{Payload, Plan, Scenario};
use super::proc::CpuMeter;
use super::proto::Client;
use super::report::{Latency, Report};

/// Connections opened at once while setting up.
pub(super) const CONNECT_CONCURRENCY: usize = 32;
/// Width of the send time written at the start of every payload (nanoseconds, zero-padded).
pub(super) const STAMP: usize = 16;
/// Most messages a publisher writes at once.
const MAX_BATCH: u64 = 64;
/// Fixed-rate publishers wake this often.
const TICK: Duration = Duration::from_millis(1);

/// What all tasks of a run share.
struct Shared {
    epoch: Instant,
    /// Deliveries per subscriber.
    received: Vec<Cell<u64>>,
    total_received: Cell<u64>,
    /// Messages published, all publishers together.
    published: Cell<u64>,
    /// Fires after subscribers made progress (publishers wait on it for window room).
    progress: Notify,
    last_rx: Cell<Instant>,
    /// Latency samples (nanoseconds), when the run measures latency.
    hist: Option<RefCell<Histogram<u64>>>,
    /// Messages sent before this (ns since `epoch`) are not sampled.
    sample_from_ns: u64,
    gaps: Cell<u64>,
    /// Bytes the subscribers read from their sockets during the run.
    wire_in: Cell<u64>,
    errors: RefCell<Vec<String>>,
    stop: CancellationToken,
}

impl Shared {
    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    fn min_received(&self) -> u64 {
        self.received.iter().map(Cell::get).min().unwrap_or(0)
    }

    fn fail(&self, who: &str, e: BenchError) {
        let mut errors = self.errors.borrow_mut();
        if errors.len() < 20 {
            errors.push(format!("{who}: {e}"));
        }
        self.stop.cancel();
    }
}

pub async fn run(plan: &Plan) -> Result<Report, BenchError> {
    let subscribers = connect_all(plan, Side::Subscribers, 0, plan.subscribers).await?;
    let mut subs = Vec::with_capacity(subscribers.len());
    // Subscriptions are confirmed one connection at a time but concurrently.
    let topic = plan.sub_topic.as_str();
    let mut confirmed = futures_util::stream::iter(
        subscribers
            .into_iter()
            .map(|mut c| async move { c.subscribe(&[topic]).await.map(|()| c) }),
    )
    .buffer_unordered(CONNECT_CONCURRENCY);
    while let Some(c) = confirmed.next().await {
        subs.push(c?);
    }
    drop(confirmed);
    let pubs = connect_all(plan, Side::Publishers, plan.subscribers, plan.publishers).await?;
    // Subscribers on other nodes than the publishers (`--sub-url`): each subscription was
    // confirmed by its node, but a cluster may tell the publisher's node later.
    if !plan.settle.is_zero() {
        tokio::time::sleep(plan.settle).await;
    }

    let epoch = Instant::now();
    let latency = plan.rate.is_some() || plan.scenario == Scenario::Overload;
    let shared = Rc::new(Shared {
        epoch,
        received: (0..subs.len()).map(|_| Cell::new(0)).collect(),
        total_received: Cell::new(0),
        published: Cell::new(0),
        progress: Notify::new(),
        last_rx: Cell::new(epoch),
        hist: latency.then(|| {
            RefCell::new(
                Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid histogram bounds"),
            )
        }),
        sample_from_ns: plan.warmup.as_nanos() as u64,
        gaps: Cell::new(0),
        wire_in: Cell::new(0),
        errors: RefCell::new(Vec::new()),
        stop: CancellationToken::new(),
    });
    let cpu = CpuMeter::start(&plan.server_pids);

    let sub_tasks: Vec<_> = subs
        .into_iter()
        .enumerate()
        .map(|(i, c)| tokio::task::spawn_local(subscriber(i, c, shared.clone())))
        .collect();
    let pub_tasks: Vec<_> = pubs
        .into_iter()
        .enumerate()
        .map(|(i, c)| tokio::task::spawn_local(publisher(i, c, plan.clone(), shared.clone())))
        .collect();
    for t in pub_tasks {
        let _ = t.await;
    }
    // Drain: wait for the last deliveries, but not forever.
    let subscribers = shared.received.len() as u64;
    loop {
        let expected = shared.published.get() * subscribers;
        if shared.total_received.get() >= expected || shared.stop.is_cancelled() {
            break;
        }
        if shared.last_rx.get().elapsed() > plan.drain {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let cpu = cpu.stop();
    shared.stop.cancel();
    for t in sub_tasks {
        let _ = t.await;
    }

    let mut report = Report::new(plan);
    if !plan.sub_urls.is_empty() {
        let mut per_url = vec![0; plan.sub_urls.len()];
        for (i, r) in shared.received.iter().enumerate() {
            per_url[i % plan.sub_urls.len()] += r.get();
        }
        report.received_per_sub_url = per_url;
    }
    report.published = shared.published.get();
    report.expected = report.published * subscribers;
    report.received = shared.total_received.get();
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
    if report.received > 0 {
        report.wire_bytes_per_delivery = Some(shared.wire_in.get() as f64 / report.received as f64);
    }
    report.server_cpu = cpu.server;
    report.server_syscalls = cpu.server_syscalls;
    report.tool_cpu = cpu.tool;
    report.set_server_processes(cpu.processes);
    report.deliveries_per_server_cpu_sec = cpu
        .server_seconds
        .filter(|&s| s > 0.0)
        .map(|s| report.received as f64 / s);
    if let Some(h) = &shared.hist {
        let h = h.borrow();
        let us = |ns: u64| ns as f64 / 1000.0;
        report.latency = Some(Latency {
            samples: h.len(),
            p50_us: us(h.value_at_quantile(0.50)),
            p99_us: us(h.value_at_quantile(0.99)),
            p999_us: us(h.value_at_quantile(0.999)),
            max_us: us(h.max()),
        });
    }
    report.errors = shared.errors.take();
    Ok(report)
}

/// Which connections [`connect_all`] opens, and so to which URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Side {
    /// To the `--sub-url`s round-robin (`--url` without them).
    Subscribers,
    /// To `--url`.
    Publishers,
}

/// Opens `n` connections of `side`; the `k`-th gets source address number `first + k`.
pub(super) async fn connect_all(
    plan: &Plan,
    side: Side,
    first: usize,
    n: usize,
) -> Result<Vec<Client>, BenchError> {
    let mut out = Vec::with_capacity(n);
    let mut opening = futures_util::stream::iter((0..n).map(|k| {
        let source = plan.source(first + k);
        let url = match side {
            Side::Subscribers => plan.sub_url(k),
            Side::Publishers => &plan.url,
        };
        async move { Client::connect_with(plan.target, url, source, plan.deflate).await }
    }))
    .buffered(CONNECT_CONCURRENCY);
    while let Some(c) = opening.next().await {
        out.push(c?);
    }
    Ok(out)
}

async fn subscriber(i: usize, mut c: Client, shared: Rc<Shared>) {
    let before = c.bytes_in();
    if let Err(e) = receive(i, &mut c, &shared).await
        && !shared.stop.is_cancelled()
    {
        shared.fail(&format!("subscriber {i}"), e);
    }
    shared
        .wire_in
        .set(shared.wire_in.get() + c.bytes_in() - before);
}

async fn receive(i: usize, c: &mut Client, shared: &Shared) -> Result<(), BenchError> {
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
        let n = match &shared.hist {
            None => c.poll(|_| {})?,
            Some(hist) => {
                let now = shared.now_ns();
                let mut hist = hist.borrow_mut();
                c.poll(|payload| {
                    if let Some(sent) = stamp(payload)
                        && sent >= shared.sample_from_ns
                    {
                        let _ = hist.record(now.saturating_sub(sent).max(1));
                    }
                })?
            }
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
            let r = &shared.received[i];
            r.set(r.get() + n);
            shared.total_received.set(shared.total_received.get() + n);
            shared.last_rx.set(Instant::now());
            shared.progress.notify_waiters();
        }
    }
}

async fn publisher(p: usize, mut c: Client, plan: Plan, shared: Rc<Shared>) {
    let result = match plan.rate {
        Some(rate) => publish_at_rate(p, &mut c, &plan, rate, &shared).await,
        None if plan.scenario == Scenario::Overload => {
            publish_flat_out(p, &mut c, &plan, &shared).await
        }
        None => publish_windowed(p, &mut c, &plan, &shared).await,
    };
    if let Err(e) = result
        && !shared.stop.is_cancelled()
    {
        shared.fail(&format!("publisher {p}"), e);
    }
}

/// A payload of `size` bytes: a JSON string whose first characters are the send time.
pub(super) fn payload_template(size: usize) -> Vec<u8> {
    let mut p = vec![b'x'; size];
    p[0] = b'"';
    p[size - 1] = b'"';
    p
}

/// The start of a `--payload json` payload; the send time follows.
const JSON_PREFIX: &[u8] = br#"{"sent":""#;

/// Distinct JSON payloads a publisher cycles through: consecutive messages differ as an
/// application's do (other ids, amounts), so that a server compressing several messages
/// together (NATS batches what is pending into one frame) finds no copies of whole messages.
const JSON_VARIANTS: usize = 64;

/// The payloads of `plan`'s messages (`--payload`), `plan.size` bytes each, used in turn.
struct Payloads {
    variants: Vec<Vec<u8>>,
    next: usize,
}

impl Payloads {
    fn for_plan(plan: &Plan) -> Payloads {
        let variants = match plan.payload {
            Payload::String => vec![payload_template(plan.size)],
            Payload::Json => (0..JSON_VARIANTS)
                .map(|v| json_template(plan.size, v))
                .collect(),
        };
        Payloads { variants, next: 0 }
    }

    fn next(&mut self) -> &mut [u8] {
        let i = self.next % self.variants.len();
        self.next = self.next.wrapping_add(1);
        &mut self.variants[i]
    }
}

/// A JSON object of exactly `size` bytes (at least 64) like an application's: the send time,
/// then a page of orders (ids, customers, cities, amounts; `variant` picks which), then a note
/// that pads it.
pub(super) fn json_template(size: usize, variant: usize) -> Vec<u8> {
    const STATUS: [&str; 4] = ["paid", "pending", "shipped", "refunded"];
    const CITY: [&str; 6] = ["Lyon", "Porto", "Gdansk", "Utrecht", "Bilbao", "Graz"];
    const NOTE: &[u8] = b"Leave the parcel at the front desk, ring twice. ";
    const TAIL: usize = br#"],"note":""#.len() + 1 + 2;
    let mut p = Vec::with_capacity(size);
    p.extend_from_slice(JSON_PREFIX);
    p.extend_from_slice(&[b'0'; STAMP]);
    p.extend_from_slice(br#"","orders":["#);
    for r in 0usize.. {
        let i = variant * 1000 + r;
        let rec = format!(
            r#"{{"id":"ord_{:08x}","customer":"cus_{}","city":"{}","status":"{}","total":{}.{:02},"items":{}}}"#,
            (i as u32 + 1).wrapping_mul(0x9e37_79b9),
            104_729 + i * 7_919,
            CITY[i % CITY.len()],
            STATUS[(i * 7) % STATUS.len()],
            12 + (i * 37) % 480,
            (i * 53) % 100,
            1 + i % 5
        );
        let sep = usize::from(r > 0);
        if p.len() + sep + rec.len() + TAIL > size {
            break;
        }
        if r > 0 {
            p.push(b',');
        }
        p.extend_from_slice(rec.as_bytes());
    }
    p.extend_from_slice(br#"],"note":""#);
    let mut k = 0;
    while p.len() < size - 2 {
        p.push(NOTE[k % NOTE.len()]);
        k += 1;
    }
    p.extend_from_slice(b"\"}");
    p
}

pub(super) fn write_stamp(payload: &mut [u8], ns: u64) {
    let at = if payload.starts_with(JSON_PREFIX) {
        JSON_PREFIX.len()
    } else {
        1
    };
    let mut n = ns;
    for b in payload[at..at + STAMP].iter_mut().rev() {
        *b = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

/// The send time written at the start of a payload (after its opening quote, or the
/// `{"sent":"` of a JSON payload).
pub(super) fn stamp(payload: &[u8]) -> Option<u64> {
    let payload = payload.strip_prefix(JSON_PREFIX).unwrap_or(payload);
    let digits = payload.get(..STAMP)?;
    let mut n = 0u64;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n * 10 + u64::from(d - b'0');
    }
    Some(n)
}

/// Encodes the next `n` publishes into `batch` (cleared first), all stamped with the time
/// now, cycling publisher `k`'s share of the topics, and counts them as published.
fn encode_batch(
    c: &Client,
    plan: &Plan,
    shared: &Shared,
    payloads: &mut Payloads,
    batch: &mut Vec<u8>,
    k: &mut usize,
    n: u64,
) {
    let topics = &plan.pub_topics;
    batch.clear();
    let now = shared.now_ns();
    for _ in 0..n {
        let payload = payloads.next();
        write_stamp(payload, now);
        c.encode_publish(&topics[*k % topics.len()], payload, batch);
        *k += plan.publishers;
    }
    shared.published.set(shared.published.get() + n);
}

/// Closed loop: publish whenever every subscriber has fewer than `window` messages in flight.
async fn publish_windowed(
    p: usize,
    c: &mut Client,
    plan: &Plan,
    shared: &Shared,
) -> Result<(), BenchError> {
    let mut payload = Payloads::for_plan(plan);
    let mut batch = Vec::with_capacity(64 * 1024);
    let max_batch = (plan.window / (2 * plan.publishers as u64)).clamp(1, MAX_BATCH);
    let mut k = p;
    let end = shared.epoch + plan.duration;
    while Instant::now() < end && !shared.stop.is_cancelled() {
        let progress = shared.progress.notified();
        let in_flight = shared.published.get() - shared.min_received();
        if in_flight >= plan.window {
            tokio::select! {
                _ = progress => {}
                _ = tokio::time::sleep_until(end.into()) => {}
                _ = shared.stop.cancelled() => {}
            }
            continue;
        }
        let n = (plan.window - in_flight).min(max_batch);
        encode_batch(c, plan, shared, &mut payload, &mut batch, &mut k, n);
        c.send_batch(&batch).await?;
        answer_pings(c).await?;
    }
    Ok(())
}

/// Open loop: `rate` deliveries per second in all, whatever the server does.
async fn publish_at_rate(
    p: usize,
    c: &mut Client,
    plan: &Plan,
    rate: u64,
    shared: &Shared,
) -> Result<(), BenchError> {
    let mut payload = Payloads::for_plan(plan);
    let mut batch = Vec::with_capacity(64 * 1024);
    let per_sec = rate as f64 / (plan.subscribers * plan.publishers) as f64;
    let mut k = p;
    let mut sent = 0u64;
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shared.stop.cancelled() => return Ok(()),
        }
        let elapsed = shared.epoch.elapsed();
        if elapsed >= plan.duration {
            return Ok(());
        }
        let due = (elapsed.as_secs_f64() * per_sec) as u64;
        if due <= sent {
            continue;
        }
        encode_batch(
            c,
            plan,
            shared,
            &mut payload,
            &mut batch,
            &mut k,
            due - sent,
        );
        sent = due;
        c.send_batch(&batch).await?;
        answer_pings(c).await?;
    }
}

/// Open loop without a rate: batches of [`MAX_BATCH`] as fast as the socket takes them. A
/// server that reads less (backpressure) slows this publisher through TCP; one that reads
/// everything it is sent must then drop what it cannot write.
async fn publish_flat_out(
    p: usize,
    c: &mut Client,
    plan: &Plan,
    shared: &Shared,
) -> Result<(), BenchError> {
    let mut payload = Payloads::for_plan(plan);
    let mut batch = Vec::with_capacity(64 * 1024);
    let mut k = p;
    let end = shared.epoch + plan.duration;
    while Instant::now() < end && !shared.stop.is_cancelled() {
        encode_batch(c, plan, shared, &mut payload, &mut batch, &mut k, MAX_BATCH);
        c.send_batch(&batch).await?;
        answer_pings(c).await?;
        // Subscribers share this thread: without a yield, a socket that always takes the
        // batch would starve them, and the tool, not the server, would be measured.
        tokio::task::yield_now().await;
    }
    Ok(())
}

/// Publishers read too: servers ping them, and errors arrive there.
async fn answer_pings(c: &mut Client) -> Result<(), BenchError> {
    if c.try_fill()? {
        c.poll(|_| {})?;
        c.flush().await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip() {
        let mut p = payload_template(100);
        write_stamp(&mut p, 1_234_567_890);
        assert_eq!(p.len(), 100);
        assert_eq!(stamp(&p[1..]), Some(1_234_567_890));
        assert_eq!(p[0], b'"');
        assert_eq!(p[99], b'"');
        assert_eq!(stamp(b"xx"), None);
    }

    #[test]
    fn json_payloads_are_json_of_the_size_asked_with_a_stamp() {
        for (size, variant) in [(64, 0), (100, 1), (1024, 0), (1024, 63), (4000, 2)] {
            let mut p = json_template(size, variant);
            assert_eq!(p.len(), size);
            write_stamp(&mut p, 987_654_321);
            let v: serde_json::Value = serde_json::from_slice(&p).unwrap();
            assert_eq!(v["sent"], "0000000987654321");
            assert_eq!(stamp(&p), Some(987_654_321));
            if size >= 1024 {
                assert!(v["orders"].as_array().unwrap().len() >= 8, "{v}");
                if variant > 0 {
                    assert_ne!(json_template(size, 0), json_template(size, variant));
                }
            }
        }
    }
}
