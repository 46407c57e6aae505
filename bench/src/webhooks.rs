//! The webhooks scenario: how many events per second Herald's webhook sender delivers, and in
//! what batches (PROTOCOL.md §10).
//!
//! The tool serves the sink itself (`http`, answering 204): it reads every POSTed body as the
//! JSON array of `{"id","type","ts","data"}` it must be, counts the events by type, and
//! notes duplicate ids and each event's age. The load makes events: every connection, in
//! rounds, subscribes to a few exact topics of its own and unsubscribes them again (each pair
//! is `topic.occupied`, `presence.join`, `presence.leave`, `topic.vacated`), and after a few
//! rounds closes and reconnects (`session.opened` now, `session.closed` once the old
//! session's `session.ttl` ran out: run Herald with a short one).
//!
//! Closed loop, as the delivery scenarios: events made and not yet received stay under
//! `--window`, kept below the endpoint's `queue` so that Herald never drops any; the rate is
//! then what the sender sustains. `session.closed` events are left out of that count (they
//! come a TTL later by design) and out of the timing: the closes of the last sessions arrive
//! after the load ended, and are counted, not timed.

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashSet};
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::BenchError;
use super::args::Plan;
use super::http::{Answer, HttpServer};
use super::proc::CpuMeter;
use super::proto::Client;
use super::report::{Latency, Report, WebhookRun};

/// Sub/unsub pairs a connection sends at once (each to a topic of its own).
const PAIRS_PER_ROUND: u64 = 4;
/// Rounds before a connection closes and opens a new session.
const ROUNDS_PER_SESSION: u32 = 4;
/// Longest wait for the `ok`s of a round, or for a connection.
const OP_TIMEOUT: Duration = Duration::from_secs(20);

const SESSION_OPENED: &str = "session.opened";
const SESSION_CLOSED: &str = "session.closed";
/// What one sub/unsub pair causes.
const PAIR_EVENTS: [&str; 4] = [
    "topic.occupied",
    "presence.join",
    "presence.leave",
    "topic.vacated",
];

/// What the sink saw.
struct Sink {
    epoch: Instant,
    received: RefCell<BTreeMap<String, u64>>,
    total: Cell<u64>,
    closed: Cell<u64>,
    batches: Cell<u64>,
    largest: Cell<u64>,
    malformed: Cell<u64>,
    ids: RefCell<HashSet<Box<str>>>,
    duplicates: Cell<u64>,
    /// Event age in µs (from its `ts`, which has millisecond resolution).
    age: RefCell<Histogram<u64>>,
    /// The last batch holding an event other than `session.closed`, and the counts then.
    last_timed: Cell<Option<(Instant, u64, u64)>>,
    last_rx: Cell<Instant>,
    progress: Notify,
}

#[derive(serde::Deserialize)]
struct Event<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(borrow, rename = "type")]
    kind: Cow<'a, str>,
    ts: u64,
}

impl Sink {
    fn new(epoch: Instant) -> Sink {
        Sink {
            epoch,
            received: RefCell::new(BTreeMap::new()),
            total: Cell::new(0),
            closed: Cell::new(0),
            batches: Cell::new(0),
            largest: Cell::new(0),
            malformed: Cell::new(0),
            ids: RefCell::new(HashSet::new()),
            duplicates: Cell::new(0),
            age: RefCell::new(
                Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds"),
            ),
            last_timed: Cell::new(None),
            last_rx: Cell::new(epoch),
            progress: Notify::new(),
        }
    }

    /// Events received that the window counts (all but `session.closed`).
    fn prompt(&self) -> u64 {
        self.total.get() - self.closed.get()
    }

    /// One POSTed body.
    fn take(&self, body: &[u8]) -> Answer {
        let Ok(events) = serde_json::from_slice::<Vec<Event<'_>>>(body) else {
            self.malformed.set(self.malformed.get() + 1);
            return Answer::BadRequest;
        };
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let mut received = self.received.borrow_mut();
        let mut ids = self.ids.borrow_mut();
        let mut age = self.age.borrow_mut();
        let mut prompt = false;
        for e in &events {
            match received.get_mut(&*e.kind) {
                Some(n) => *n += 1,
                None => {
                    received.insert(e.kind.to_string(), 1);
                }
            }
            if e.kind == SESSION_CLOSED {
                self.closed.set(self.closed.get() + 1);
            } else {
                prompt = true;
            }
            if !ids.insert(e.id.as_ref().into()) {
                self.duplicates.set(self.duplicates.get() + 1);
            }
            let _ = age.record((now_ms.saturating_sub(e.ts) * 1000).max(1));
        }
        let n = events.len() as u64;
        self.total.set(self.total.get() + n);
        self.batches.set(self.batches.get() + 1);
        self.largest.set(self.largest.get().max(n));
        let now = Instant::now();
        self.last_rx.set(now);
        if prompt {
            self.last_timed
                .set(Some((now, self.total.get(), self.batches.get())));
        }
        self.progress.notify_waiters();
        Answer::NoContent
    }
}

/// What the load made, by type.
struct Load {
    made: RefCell<BTreeMap<&'static str, u64>>,
    /// Events made that the window counts (all but `session.closed`).
    prompt: Cell<u64>,
    errors: RefCell<Vec<String>>,
    stop: CancellationToken,
}

impl Load {
    fn add(&self, kind: &'static str, n: u64) {
        *self.made.borrow_mut().entry(kind).or_insert(0) += n;
        if kind != SESSION_CLOSED {
            self.prompt.set(self.prompt.get() + n);
        }
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
    // The sink's clock starts with the load; it is up before the first event can be made.
    let epoch = Instant::now();
    let sink = Rc::new(Sink::new(epoch));
    let server = {
        let sink = sink.clone();
        HttpServer::start(plan.http_port, move |r| {
            if r.method == b"POST" {
                sink.take(&r.body)
            } else {
                sink.malformed.set(sink.malformed.get() + 1);
                Answer::BadRequest
            }
        })
        .await?
    };
    let load = Rc::new(Load {
        made: RefCell::new(BTreeMap::new()),
        prompt: Cell::new(0),
        errors: RefCell::new(Vec::new()),
        stop: CancellationToken::new(),
    });
    let cpu = CpuMeter::start(&plan.server_pids);
    let tasks: Vec<_> = (0..plan.publishers)
        .map(|c| tokio::task::spawn_local(connection(c, plan.clone(), sink.clone(), load.clone())))
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    let expected = || load.made.borrow().values().sum::<u64>();
    loop {
        if sink.total.get() >= expected()
            || load.stop.is_cancelled()
            || sink.last_rx.get().elapsed() > plan.drain
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let cpu = cpu.stop();

    let mut report = Report::new(plan);
    report.topics = 0;
    report.expected = expected();
    report.received = sink.total.get();
    report.lost = report.expected.saturating_sub(report.received);
    report.server_cpu = cpu.server;
    report.server_syscalls = cpu.server_syscalls;
    report.tool_cpu = cpu.tool;
    report.set_server_processes(cpu.processes);
    report.deliveries_per_server_cpu_sec = cpu
        .server_seconds
        .filter(|&s| s > 0.0)
        .map(|s| report.received as f64 / s);
    let (seconds, events, batches) = match sink.last_timed.get() {
        Some((at, events, batches)) => (
            at.saturating_duration_since(epoch).as_secs_f64(),
            events,
            batches,
        ),
        None => (0.0, 0, 0),
    };
    let per_sec = |n: u64| {
        if seconds > 0.0 {
            n as f64 / seconds
        } else {
            0.0
        }
    };
    report.seconds = seconds;
    report.deliveries_per_sec = per_sec(events);
    let age = sink.age.borrow();
    report.webhooks = Some(WebhookRun {
        connections: plan.publishers,
        window: plan.window,
        expected: load
            .made
            .borrow()
            .iter()
            .map(|(k, v)| ((*k).to_owned(), *v))
            .collect(),
        received: sink.received.borrow().clone(),
        batches: sink.batches.get(),
        largest_batch: sink.largest.get(),
        duplicates: sink.duplicates.get(),
        malformed: sink.malformed.get(),
        seconds,
        events_per_sec: per_sec(events),
        batches_per_sec: per_sec(batches),
        age: (!age.is_empty()).then(|| Latency {
            samples: age.len(),
            p50_us: age.value_at_quantile(0.50) as f64,
            p99_us: age.value_at_quantile(0.99) as f64,
            p999_us: age.value_at_quantile(0.999) as f64,
            max_us: age.max() as f64,
        }),
    });
    if sink.malformed.get() > 0 || server.stats.malformed.get() > 0 {
        report.errors.push(format!(
            "the sink on {} could not read {} webhook requests",
            server.addr,
            sink.malformed.get() + server.stats.malformed.get()
        ));
    }
    report.errors.extend(load.errors.take());
    Ok(report)
}

async fn connection(c: usize, plan: Plan, sink: Rc<Sink>, load: Rc<Load>) {
    if let Err(e) = churn(c, &plan, &sink, &load).await
        && !load.stop.is_cancelled()
    {
        load.fail(&format!("connection {c}"), e);
    }
}

/// Sessions one after the other, each a few rounds of sub/unsub pairs, until the end.
async fn churn(c: usize, plan: &Plan, sink: &Sink, load: &Load) -> Result<(), BenchError> {
    let end = sink.epoch + plan.duration;
    let topics: Vec<String> = (0..PAIRS_PER_ROUND)
        .map(|j| format!("{}/{c}/{j}", plan.sub_topic))
        .collect();
    let mut batch = Vec::with_capacity(2048);
    while Instant::now() < end && !load.stop.is_cancelled() {
        let mut client = tokio::time::timeout(
            OP_TIMEOUT,
            Client::connect(plan.target, &plan.url, plan.source(c)),
        )
        .await
        .map_err(|_| BenchError::Timeout("no welcome".into()))??;
        load.add(SESSION_OPENED, 1);
        // Closed below by dropping the socket: the session ends when its TTL runs out.
        load.add(SESSION_CLOSED, 1);
        let mut id = 0u64;
        for _ in 0..ROUNDS_PER_SESSION {
            let round = PAIRS_PER_ROUND * PAIR_EVENTS.len() as u64;
            if !wait_for_room(plan, sink, load, round, end).await {
                break;
            }
            batch.clear();
            for t in &topics {
                client.encode_sub_unsub(t, id, &mut batch);
                id += 2;
            }
            for kind in PAIR_EVENTS {
                load.add(kind, PAIRS_PER_ROUND);
            }
            client.send_batch(&batch).await?;
            let want = id as u32;
            tokio::time::timeout(OP_TIMEOUT, async {
                while client.seen().acks < want {
                    if !client.fill().await? {
                        return Err(BenchError::Closed(
                            "the server closed the connection".into(),
                        ));
                    }
                    client.poll(|_| {})?;
                    client.flush().await?;
                }
                Ok(())
            })
            .await
            .map_err(|_| BenchError::Timeout("sub/unsub not answered".into()))??;
        }
    }
    Ok(())
}

/// Waits until `n` more events fit in the window; false when the load is over.
async fn wait_for_room(plan: &Plan, sink: &Sink, load: &Load, n: u64, end: Instant) -> bool {
    loop {
        if Instant::now() >= end || load.stop.is_cancelled() {
            return false;
        }
        let progress = sink.progress.notified();
        let in_flight = load.prompt.get().saturating_sub(sink.prompt());
        if in_flight + n <= plan.window.max(n) {
            return true;
        }
        tokio::select! {
            _ = progress => {}
            _ = tokio::time::sleep_until(end.into()) => {}
            _ = load.stop.cancelled() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sink_counts_events_by_type_and_duplicates() {
        let sink = Sink::new(Instant::now());
        let body = br#"[{"id":"a-1","type":"presence.join","ts":1,"data":{"topic":"t"}},
                        {"id":"a-2","type":"session.closed","ts":1,"data":{}}]"#;
        assert_eq!(sink.take(body), Answer::NoContent);
        assert_eq!(
            sink.take(br#"[{"id":"a-1","type":"presence.join","ts":1,"data":null}]"#),
            Answer::NoContent
        );
        assert_eq!(sink.take(b"{}"), Answer::BadRequest);
        assert_eq!(sink.total.get(), 3);
        assert_eq!(sink.prompt(), 2);
        assert_eq!(sink.batches.get(), 2);
        assert_eq!(sink.largest.get(), 2);
        assert_eq!(sink.duplicates.get(), 1);
        assert_eq!(sink.malformed.get(), 1);
        assert_eq!(sink.received.borrow()["presence.join"], 2);
        assert_eq!(sink.received.borrow()["session.closed"], 1);
    }
}
