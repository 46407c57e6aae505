//! The result of one run: printed for a person, written as JSON for `herald-bench report`.

use std::fmt::Write;

use serde::{Deserialize, Serialize};

use super::args::{Plan, Scenario};
use super::proc::Syscalls;
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

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Report {
    pub target: Target,
    pub scenario: Scenario,
    /// The load's name (`--label`), for runs shown in the table of loads.
    #[serde(default)]
    pub label: Option<String>,
    pub url: String,
    pub subscribers: usize,
    pub publishers: usize,
    pub topics: usize,
    pub size: usize,
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
            subscribers: plan.subscribers,
            publishers: plan.publishers,
            topics: plan.pub_topics.len(),
            size: plan.size,
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
            errors: Vec::new(),
        }
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
        } else {
            let _ = writeln!(
                s,
                "  shape             {} publisher(s) -> {} subscriber(s), {} topic(s), {} B messages",
                self.publishers, self.subscribers, self.topics, self.size
            );
            if let Some(r) = self.target_rate {
                let _ = writeln!(s, "  target rate       {r} deliveries/s");
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
            if let Some(l) = &self.latency {
                let _ = writeln!(
                    s,
                    "  latency (us)      p50 {:.0}  p99 {:.0}  p99.9 {:.0}  max {:.0}  ({} samples)",
                    l.p50_us, l.p99_us, l.p999_us, l.max_us, l.samples
                );
            }
        }
        if let Some(c) = self.server_cpu {
            let _ = writeln!(s, "  server CPU        {:.0}% of a core", c * 100.0);
        }
        if let Some(d) = self.deliveries_per_server_cpu_sec {
            let _ = writeln!(s, "  per server CPU-s  {d:.0} deliveries");
        }
        if let Some(c) = self.server_syscalls {
            let _ = writeln!(
                s,
                "  server syscalls   {} writes, {} reads{}",
                c.writes,
                c.reads,
                self.writes_per_delivery()
                    .map(|w| format!(" ({w:.4} writes per delivery)"))
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
