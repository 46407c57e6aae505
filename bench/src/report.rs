//! The result of one run: printed for a person, written as JSON for `herald-bench report`.

use std::fmt::Write;

use serde::{Deserialize, Serialize};

use super::args::{Payload, Plan, Scenario};
use super::proc::{ProcessCpu, Syscalls};
use super::proto::Target;

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Latency {
    pub samples: u64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
}

/// One phase of the proxy scenario: proxied publishes, or plain ones.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct PublishStream {
    /// Publishes per second asked for (`None`: closed loop).
    pub rate: Option<f64>,
    pub published: u64,
    /// `ok`s received (Herald sends one once the message was allowed and routed).
    pub acked: u64,
    /// Over the phase, from its start to its last `ok`.
    pub acked_per_sec: f64,
    /// Publish to delivery, all subscribers, after the phase's warm-up.
    pub latency: Option<Latency>,
    /// The server's CPU use during the phase, as a fraction of one core.
    pub server_cpu: Option<f64>,
    /// The server's CPU time per acked publish (its deliveries included), in µs.
    pub server_us_per_publish: Option<f64>,
}

/// What the proxy scenario measured beside the common figures.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ProxyRun {
    /// Publisher connections (each publishes in both phases).
    pub publishers: usize,
    /// Publishes awaiting their `ok`, per connection, at most.
    pub window: u64,
    /// First phase, to `bench/proxied/…`: each publish asked of the backend.
    pub proxied: PublishStream,
    /// Second phase, to `bench/plain/…` (not routed) at the rate the first one published:
    /// the baseline.
    pub plain: PublishStream,
    /// Requests the backend answered (should equal the proxied publishes).
    pub backend_requests: u64,
    /// Of those, requests that were not a POST for a topic under `bench/proxied/` (should be
    /// 0).
    pub backend_unexpected: u64,
    /// Connections Herald opened to the backend.
    pub backend_connections: u64,
}

impl ProxyRun {
    /// Proxied p99 minus plain p99, in µs.
    pub fn added_p99_us(&self) -> Option<f64> {
        Some(self.proxied.latency.as_ref()?.p99_us - self.plain.latency.as_ref()?.p99_us)
    }

    pub fn added_p50_us(&self) -> Option<f64> {
        Some(self.proxied.latency.as_ref()?.p50_us - self.plain.latency.as_ref()?.p50_us)
    }

    /// Whether the backend was asked exactly once per proxied publish, and only for those.
    pub fn requests_match(&self) -> bool {
        self.backend_requests == self.proxied.published && self.backend_unexpected == 0
    }
}

/// What the webhooks scenario measured beside the common figures.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct WebhookRun {
    /// Connections making events.
    pub connections: usize,
    /// Events made and not yet received, at most.
    pub window: u64,
    /// Events the load should cause, by type (`session.closed` ones come `session.ttl` after
    /// the socket closed).
    pub expected: std::collections::BTreeMap<String, u64>,
    /// Events the sink received, by type.
    pub received: std::collections::BTreeMap<String, u64>,
    /// Requests (batches) the sink received.
    pub batches: u64,
    pub largest_batch: u64,
    /// Events whose id had been received before (delivery is at least once).
    pub duplicates: u64,
    /// Requests the sink could not read as a JSON array of events.
    pub malformed: u64,
    /// From the first event made to the last batch received that held an event other than
    /// `session.closed` (the rates are of what arrived until then): the closes of the last
    /// sessions come `session.ttl` after the load, and are counted but not timed.
    pub seconds: f64,
    pub events_per_sec: f64,
    pub batches_per_sec: f64,
    /// From the event's `ts` (Herald's clock, milliseconds) to its arrival at the sink.
    pub age: Option<Latency>,
}

impl WebhookRun {
    pub fn events(&self) -> u64 {
        self.received.values().sum()
    }

    pub fn events_per_batch(&self) -> Option<f64> {
        (self.batches > 0).then(|| self.events() as f64 / self.batches as f64)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Report {
    pub target: Target,
    pub scenario: Scenario,
    /// The load's name (`--label`), for runs shown in the table of loads.
    #[serde(default)]
    pub label: Option<String>,
    /// Where the publishers connected (and every connection, without `sub_urls`).
    pub url: String,
    /// Where the subscribers connected, round-robin (`--sub-url`): a cluster run, publisher
    /// and subscribers on different nodes. Empty: all on `url`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sub_urls: Vec<String>,
    /// Deliveries received by the subscribers of each of `sub_urls`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub received_per_sub_url: Vec<u64>,
    /// Wait between the last subscription confirmed and the first publish (`--settle`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settle_ms: Option<u64>,
    pub subscribers: usize,
    pub publishers: usize,
    pub topics: usize,
    pub size: usize,
    /// What the payloads held (`--payload`).
    #[serde(default)]
    pub payload: Payload,
    /// The clients offered permessage-deflate (`--deflate`) and inflated one compressed
    /// message in this many (`--inflate-every`).
    #[serde(default)]
    pub deflate: Option<u32>,
    /// Bytes the subscribers read from their sockets per delivery (frames as on the wire:
    /// headers, compressed payloads, the server's other frames).
    #[serde(default)]
    pub wire_bytes_per_delivery: Option<f64>,
    /// Messages published.
    pub published: u64,
    /// Deliveries expected (published × matching subscribers).
    pub expected: u64,
    pub received: u64,
    /// `expected - received` after the drain.
    pub lost: u64,
    /// Messages the server itself reported as dropped (Herald `gap` frames).
    pub gap_reported: u64,
    /// From the first publish to the last delivery.
    pub seconds: f64,
    pub deliveries_per_sec: f64,
    /// Fixed rate asked for (latency scenario), deliveries per second.
    pub target_rate: Option<u64>,
    pub latency: Option<Latency>,
    /// Idle scenario: connections held open while the server's memory was read.
    pub connections: Option<usize>,
    pub rss_before: Option<u64>,
    pub rss_after: Option<u64>,
    pub rss_per_connection: Option<f64>,
    /// CPU use during the measured interval, as a fraction of one core.
    pub server_cpu: Option<f64>,
    pub tool_cpu: Option<f64>,
    /// Deliveries per second of server CPU time: the server's efficiency, which stays
    /// comparable when other work on the machine takes part of the server's core.
    pub deliveries_per_server_cpu_sec: Option<f64>,
    /// The server's read and write system calls during the run.
    #[serde(default)]
    pub server_syscalls: Option<Syscalls>,
    /// With several `--server-pid`s (a cluster): each process's CPU, in their order;
    /// `server_cpu` is their sum.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub server_processes: Vec<ProcessCpu>,
    /// Proxy scenario.
    #[serde(default)]
    pub proxy: Option<ProxyRun>,
    /// Webhooks scenario.
    #[serde(default)]
    pub webhooks: Option<WebhookRun>,
    /// Errors seen by clients (a non-empty list means the figures are not to be trusted).
    pub errors: Vec<String>,
}

impl Report {
    /// An empty report for `plan`, to be filled in by the scenario.
    pub fn new(plan: &Plan) -> Report {
        Report {
            target: plan.target,
            scenario: plan.scenario,
            label: plan.label.clone(),
            url: plan.url_text.clone(),
            sub_urls: plan.sub_url_texts.clone(),
            received_per_sub_url: Vec::new(),
            settle_ms: (!plan.settle.is_zero()).then_some(plan.settle.as_millis() as u64),
            subscribers: plan.subscribers,
            publishers: plan.publishers,
            topics: plan.pub_topics.len(),
            size: plan.size,
            payload: plan.payload,
            deflate: plan.deflate,
            wire_bytes_per_delivery: None,
            published: 0,
            expected: 0,
            received: 0,
            lost: 0,
            gap_reported: 0,
            seconds: 0.0,
            deliveries_per_sec: 0.0,
            target_rate: plan.rate,
            latency: None,
            connections: None,
            rss_before: None,
            rss_after: None,
            rss_per_connection: None,
            server_cpu: None,
            tool_cpu: None,
            deliveries_per_server_cpu_sec: None,
            server_syscalls: None,
            server_processes: Vec::new(),
            proxy: None,
            webhooks: None,
            errors: Vec::new(),
        }
    }

    /// Keeps each server process's CPU when there are several (one is `server_cpu` itself).
    pub fn set_server_processes(&mut self, processes: Vec<ProcessCpu>) {
        if processes.len() > 1 {
            self.server_processes = processes;
        }
    }

    /// Whether the subscribers were on other servers than the publishers (`--sub-url`).
    pub fn is_cluster(&self) -> bool {
        !self.sub_urls.is_empty()
    }

    /// Each server process's CPU share, as in `herald 31% + herald 30% + redis-server 5%`.
    pub fn processes_text(&self) -> Option<String> {
        if self.server_processes.is_empty() {
            return None;
        }
        let parts: Vec<String> = self
            .server_processes
            .iter()
            .map(|p| {
                let cpu = p
                    .cpu
                    .map(|c| format!("{:.0}%", c * 100.0))
                    .unwrap_or_else(|| "?".into());
                format!("{} {cpu}", p.name)
            })
            .collect();
        Some(parts.join(" + "))
    }

    /// The server's write system calls per delivery.
    pub fn writes_per_delivery(&self) -> Option<f64> {
        let w = self.server_syscalls?.writes;
        (self.received > 0).then(|| w as f64 / self.received as f64)
    }

    /// The human-readable summary.
    pub fn text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{} {} ({})",
            self.target.label(),
            self.scenario.name(),
            self.url
        );
        if !self.sub_urls.is_empty() {
            let per_url: Vec<String> = self
                .sub_urls
                .iter()
                .enumerate()
                .map(|(i, u)| match self.received_per_sub_url.get(i) {
                    Some(n) => format!("{u} ({n} received)"),
                    None => u.clone(),
                })
                .collect();
            let _ = writeln!(
                s,
                "  subscribers on    {}{}",
                per_url.join(", "),
                self.settle_ms
                    .map(|ms| format!("; first publish {ms} ms after the last sub confirmed"))
                    .unwrap_or_default()
            );
        }
        if self.scenario == Scenario::Idle {
            if let (Some(n), Some(per)) = (self.connections, self.rss_per_connection) {
                let _ = writeln!(
                    s,
                    "  connections       {n}\n  server RSS        {} -> {} KiB\n  per connection    {:.2} KiB",
                    self.rss_before.unwrap_or(0) / 1024,
                    self.rss_after.unwrap_or(0) / 1024,
                    per / 1024.0
                );
            } else if let Some(n) = self.connections {
                let _ = writeln!(
                    s,
                    "  connections       {n} (no --server-pid: memory not read)"
                );
            }
        } else if let Some(w) = &self.webhooks {
            webhooks_text(w, &mut s);
        } else {
            let _ = writeln!(
                s,
                "  shape             {} publisher(s) -> {} subscriber(s), {} topic(s), {} B messages{}{}",
                self.publishers,
                self.subscribers,
                self.topics,
                self.size,
                if self.payload == Payload::Json {
                    " of JSON"
                } else {
                    ""
                },
                match self.deflate {
                    None => String::new(),
                    Some(1) => ", permessage-deflate".into(),
                    Some(n) => format!(", permessage-deflate (1 in {n} inflated)"),
                }
            );
            if let Some(r) = self.target_rate {
                let unit = match self.scenario {
                    Scenario::Proxy => "publishes/s in each phase",
                    _ => "deliveries/s",
                };
                let _ = writeln!(s, "  target rate       {r} {unit}");
            }
            let _ = writeln!(
                s,
                "  published         {}\n  deliveries        {} of {} expected ({} lost, {} reported dropped)\n  time              {:.3} s\n  deliveries/s      {:.0}",
                self.published,
                self.received,
                self.expected,
                self.lost,
                self.gap_reported,
                self.seconds,
                self.deliveries_per_sec
            );
            if let Some(b) = self.wire_bytes_per_delivery {
                let _ = writeln!(
                    s,
                    "  wire bytes        {b:.1} per delivery (subscribers' sockets)"
                );
            }
            if let Some(l) = &self.latency {
                let _ = writeln!(
                    s,
                    "  latency (us)      p50 {:.0}  p99 {:.0}  p99.9 {:.0}  max {:.0}  ({} samples)",
                    l.p50_us, l.p99_us, l.p999_us, l.max_us, l.samples
                );
            }
            if let Some(p) = &self.proxy {
                proxy_text(p, &mut s);
            }
        }
        if let Some(c) = self.server_cpu {
            let _ = writeln!(
                s,
                "  server CPU        {:.0}% of a core{}",
                c * 100.0,
                self.processes_text()
                    .map(|p| format!(" ({p})"))
                    .unwrap_or_default()
            );
        }
        // A webhooks run's "deliveries" are the events the sink received.
        let (what, per) = match self.scenario {
            Scenario::Webhooks => ("webhook events", "event"),
            _ => ("deliveries", "delivery"),
        };
        if let Some(d) = self.deliveries_per_server_cpu_sec {
            let _ = writeln!(s, "  per server CPU-s  {d:.0} {what}");
        }
        if let Some(c) = self.server_syscalls {
            let _ = writeln!(
                s,
                "  server syscalls   {} writes, {} reads{}",
                c.writes,
                c.reads,
                self.writes_per_delivery()
                    .map(|w| format!(" ({w:.4} writes per {per})"))
                    .unwrap_or_default()
            );
        }
        if let Some(c) = self.tool_cpu {
            let _ = writeln!(s, "  load tool CPU     {:.0}% of a core", c * 100.0);
        }
        for e in &self.errors {
            let _ = writeln!(s, "  error: {e}");
        }
        s
    }
}

fn latency_line(s: &mut String, what: &str, l: Option<&Latency>) {
    match l {
        Some(l) => {
            let _ = writeln!(
                s,
                "  {what:<17} p50 {:.0}  p99 {:.0}  p99.9 {:.0}  max {:.0}  ({} samples)",
                l.p50_us, l.p99_us, l.p999_us, l.max_us, l.samples
            );
        }
        None => {
            let _ = writeln!(s, "  {what:<17} no samples");
        }
    }
}

fn proxy_text(p: &ProxyRun, s: &mut String) {
    for (what, st) in [("proxied", &p.proxied), ("plain", &p.plain)] {
        let _ = writeln!(
            s,
            "  {what:<17} {} published, {} acked, {:.0} acked/s ({}); server {} of a core, {} us per publish",
            st.published,
            st.acked,
            st.acked_per_sec,
            st.rate
                .map(|r| format!("at {r:.0}/s"))
                .unwrap_or_else(|| format!("closed loop, window {}", p.window)),
            st.server_cpu
                .map(|c| format!("{:.0}%", c * 100.0))
                .unwrap_or_else(|| "?".into()),
            st.server_us_per_publish
                .map(|u| format!("{u:.1}"))
                .unwrap_or_else(|| "?".into()),
        );
    }
    latency_line(s, "proxied (us)", p.proxied.latency.as_ref());
    latency_line(s, "plain (us)", p.plain.latency.as_ref());
    if let (Some(p50), Some(p99)) = (p.added_p50_us(), p.added_p99_us()) {
        let _ = writeln!(s, "  added by proxy    p50 {p50:.0} us  p99 {p99:.0} us");
    }
    let _ = writeln!(
        s,
        "  backend           {} requests for {} proxied publishes ({}), {} for other topics, {} connections",
        p.backend_requests,
        p.proxied.published,
        if p.backend_requests == p.proxied.published {
            "equal"
        } else {
            "NOT equal"
        },
        p.backend_unexpected,
        p.backend_connections
    );
}

fn webhooks_text(w: &WebhookRun, s: &mut String) {
    let expected: u64 = w.expected.values().sum();
    let _ = writeln!(
        s,
        "  shape             {} connections subscribing, unsubscribing, reconnecting",
        w.connections
    );
    let _ = writeln!(
        s,
        "  events            {} of {expected} expected ({} duplicates, {} malformed batches)",
        w.events(),
        w.duplicates,
        w.malformed
    );
    for (kind, want) in &w.expected {
        let got = w.received.get(kind).copied().unwrap_or(0);
        let _ = writeln!(s, "    {kind:<18} {got} of {want}");
    }
    for (kind, got) in w
        .received
        .iter()
        .filter(|(k, _)| !w.expected.contains_key(*k))
    {
        let _ = writeln!(s, "    {kind:<18} {got} (not made by the load)");
    }
    let _ = writeln!(
        s,
        "  time              {:.3} s\n  events/s          {:.0}\n  batches/s         {:.1} ({} batches, {:.1} events per batch, largest {})",
        w.seconds,
        w.events_per_sec,
        w.batches_per_sec,
        w.batches,
        w.events_per_batch().unwrap_or(0.0),
        w.largest_batch
    );
    if let Some(a) = &w.age {
        let _ = writeln!(
            s,
            "  event age (ms)    p50 {:.0}  p99 {:.0}  max {:.0}  (event ts to the sink)",
            a.p50_us / 1000.0,
            a.p99_us / 1000.0,
            a.max_us / 1000.0
        );
    }
}
