//! The command line of `herald-bench` and the run plan it resolves to.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};

use super::BenchError;
use super::proto::Target;
use super::ws::WsUrl;
use herald_protocol::units::parse_duration;

#[derive(Subcommand, Debug, Clone)]
pub enum BenchCommand {
    /// One publisher, N subscribers of one topic (default 100): deliveries per second
    Fanout(RunArgs),
    /// N publishers (default 100), one subscriber: deliveries per second
    Fanin(RunArgs),
    /// Publishers over many topics (default 1000), subscribers on a wildcard over all of them
    Topics(RunArgs),
    /// The fan-out shape at a fixed delivery rate (default 500000/s): p50/p99/p99.9 latency
    Latency(RunArgs),
    /// The fan-out shape with publishers sending as fast as their sockets take (open loop,
    /// no window): goodput, loss and latency when the server is offered more than it can write
    Overload(RunArgs),
    /// Many idle connections (default 10000) with one subscription each: server RSS per
    /// connection (needs --server-pid)
    Idle(RunArgs),
    /// Publish proxy: serves a fast backend on --backend-port itself; publishers (default 64)
    /// publish to bench/proxied/… (routed to it), closed loop or at --rate, then to
    /// bench/plain/… (not routed) at the same rate, to 10 subscribers: proxied publishes
    /// acked/s and the latency the proxy adds. Herald only, started with
    /// `[[proxy.publish]] pattern = "bench/proxied/**"` to that backend.
    Proxy(RunArgs),
    /// Webhooks: serves a sink on --sink-port that counts the events it is POSTed, while
    /// connections (default 64) subscribe and unsubscribe exact topics and open and close
    /// sessions: events and batches received per second. Herald only, started with
    /// `[[webhooks]]` to that sink and a short `session.ttl`.
    Webhooks(RunArgs),
    /// Writes the BENCHMARKS.md section and chart from the JSON results of a run
    Report(ReportArgs),
}

/// What a message's payload holds (`--payload`).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Payload {
    /// A JSON string of filler.
    #[default]
    String,
    /// An application-like JSON object.
    Json,
}

/// The scenario of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    Fanout,
    Fanin,
    Topics,
    Latency,
    Overload,
    Idle,
    Proxy,
    Webhooks,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Fanout => "fanout",
            Scenario::Fanin => "fanin",
            Scenario::Topics => "topics",
            Scenario::Latency => "latency",
            Scenario::Overload => "overload",
            Scenario::Idle => "idle",
            Scenario::Proxy => "proxy",
            Scenario::Webhooks => "webhooks",
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// The server's protocol
    #[arg(long, value_enum, default_value = "herald")]
    pub target: Target,
    /// WebSocket URL [default: the target's URL in bench/peers/: ws://127.0.0.1:7400/ws for
    /// Herald, ws://127.0.0.1:9222 for NATS, ws://127.0.0.1:9300/socket.io/… for Socket.IO]
    #[arg(long)]
    pub url: Option<String>,
    /// Subscribers connect here instead of --url (repeatable: subscriber connections are
    /// spread round-robin over the URLs given), while publishers keep --url: publisher and
    /// subscribers on different nodes of a cluster (fanout, fanin, topics, latency, overload)
    #[arg(long = "sub-url", value_name = "URL")]
    pub sub_url: Vec<String>,
    /// After every subscription was confirmed, wait this long before the first publish, for
    /// interest to propagate between the nodes of a cluster (nats-server routes it
    /// asynchronously) [default: 500ms with --sub-url, else 0s]
    #[arg(long, value_parser = duration)]
    pub settle: Option<Duration>,
    /// Subscriber connections [default: fanout/latency 100, fanin 1, topics 20, proxy 10]
    #[arg(long)]
    pub subscribers: Option<usize>,
    /// Publisher connections [default: fanout/latency 1, fanin 100, topics 4; proxy 64 of
    /// each kind (proxied and plain); webhooks: 64 connections making events]
    #[arg(long)]
    pub publishers: Option<usize>,
    /// Topics published to (topics scenario)
    #[arg(long, default_value_t = 1000)]
    pub topics: usize,
    /// Message payload in bytes (a JSON string, quotes included; at least 18; with
    /// `--payload json` at least 64)
    #[arg(long, default_value_t = 100)]
    pub size: usize,
    /// What a payload holds: `string`, a JSON string of filler (compresses to almost nothing),
    /// or `json`, an application-like JSON object (a page of orders: ids, names, amounts),
    /// which compresses as real data does
    #[arg(long, value_enum, default_value = "string")]
    pub payload: Payload,
    /// Every client offers permessage-deflate (RFC 7692) and inflates what the server sends
    /// compressed; the server must accept it (Herald: `compression = "auto"`, the default;
    /// nats-server: `websocket { compression: true }`). Clients send uncompressed.
    #[arg(long)]
    pub deflate: bool,
    /// With --deflate, against Herald: subscribers inflate one compressed message in N and
    /// count the others unread (each is a `msg`: Herald compresses nothing else that large).
    /// Inflating every delivery costs the one-core tool more than the server's delivery, so
    /// N > 1 measures the server instead of the tool; the inflated ones are checked and timed.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub inflate_every: u32,
    /// How long publishers publish
    #[arg(long, default_value = "5s", value_parser = duration)]
    pub duration: Duration,
    /// Latency scenario: deliveries per second (publish rate × subscribers) [default: 500000].
    /// Proxy scenario: publishes per second of each phase (proxied, then plain) instead of a
    /// closed loop
    #[arg(long)]
    pub rate: Option<u64>,
    /// Latency and proxy scenarios: samples of messages sent during this first part (of each
    /// phase, for proxy) are not recorded
    #[arg(long, default_value = "1s", value_parser = duration)]
    pub warmup: Duration,
    /// Throughput scenarios: messages in flight per subscriber (published, not yet received).
    /// Keep it under the server's per-subscriber buffer (Herald: 1024) for a lossless run.
    /// Proxy: publishes awaiting their `ok` per publisher connection. Webhooks: events made
    /// and not yet received by the sink (keep it under the webhook's `queue`, 10000 by
    /// default). [default: 512; proxy 1; webhooks 5000]
    #[arg(long)]
    pub window: Option<u64>,
    /// After publishing ends, how long to wait for the last deliveries before counting loss
    #[arg(long, default_value = "5s", value_parser = duration)]
    pub drain: Duration,
    /// Idle scenario: connections to open (mind the open-file limits of both processes)
    #[arg(long, default_value_t = 10_000)]
    pub connections: usize,
    /// Client sockets are spread over this many source addresses 127.0.0.1, 127.0.0.2, …
    #[arg(long, default_value_t = 16)]
    pub sources: u8,
    /// The server's process id: its RSS and CPU time are read from /proc. Repeatable for a
    /// server made of several processes (a cluster's nodes and its Redis): their figures are
    /// summed, and each one's CPU use is reported too
    #[arg(long = "server-pid", value_name = "PID")]
    pub server_pid: Vec<u32>,
    /// Also write the report as JSON to this file
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Proxy scenario: the port of the backend it serves on 127.0.0.1 (the URL of Herald's
    /// `[[proxy.publish]]` route)
    #[arg(long, default_value_t = 9100)]
    pub backend_port: u16,
    /// Webhooks scenario: the port of the sink it serves on 127.0.0.1 (Herald's
    /// `[[webhooks]] url`)
    #[arg(long, default_value_t = 9101)]
    pub sink_port: u16,
    /// Names the load of a run (e.g. "1M/s"): `report` puts labelled latency and overload
    /// runs in a table of their own, one row per label
    #[arg(long)]
    pub label: Option<String>,
}

#[derive(Args, Debug, Clone)]
pub struct ReportArgs {
    /// JSON results written by `herald-bench … --json`
    #[arg(required = true)]
    pub results: Vec<PathBuf>,
    /// The Markdown file whose section between `<!-- compare:begin -->` and
    /// `<!-- compare:end -->` is replaced (created if missing)
    #[arg(long, default_value = "BENCHMARKS.md")]
    pub out: PathBuf,
    /// Where to write the SVG chart (linked from the section by its file name)
    #[arg(long, default_value = "bench/compare.svg")]
    pub svg: PathBuf,
    /// The date of the run as it should be printed
    #[arg(long)]
    pub date: Option<String>,
    /// The exact command that produced the results
    #[arg(long)]
    pub command: Option<String>,
    /// Server versions and other facts, one line each
    #[arg(long = "fact")]
    pub facts: Vec<String>,
    /// A Markdown file included at the end of the section (analysis written by hand)
    #[arg(long)]
    pub notes: Option<PathBuf>,
}

/// `--settle` with `--sub-url`: time for nats-server to route the subscriptions' interest to
/// the publisher's node (milliseconds on loopback).
const DEFAULT_SETTLE: Duration = Duration::from_millis(500);

fn duration(s: &str) -> Result<Duration, String> {
    parse_duration(s)
}

/// A resolved run.
#[derive(Debug, Clone)]
pub struct Plan {
    pub scenario: Scenario,
    pub target: Target,
    /// Where publishers connect (and every connection, without `sub_urls`).
    pub url: WsUrl,
    pub url_text: String,
    /// Where subscribers connect, round-robin (`--sub-url`); empty: `url`.
    pub sub_urls: Vec<WsUrl>,
    pub sub_url_texts: Vec<String>,
    /// Wait between the last subscription confirmed and the first publish.
    pub settle: Duration,
    pub subscribers: usize,
    pub publishers: usize,
    /// Topic (or pattern) each subscriber subscribes to.
    pub sub_topic: String,
    /// Topics publishers cycle through.
    pub pub_topics: Vec<String>,
    pub size: usize,
    pub payload: Payload,
    /// Clients offer permessage-deflate and inflate one compressed message in this many.
    pub deflate: Option<u32>,
    pub duration: Duration,
    /// Fixed deliveries per second (latency), publishes per second (proxy), or closed-loop
    /// (`None`).
    pub rate: Option<u64>,
    pub warmup: Duration,
    pub window: u64,
    pub drain: Duration,
    pub connections: usize,
    pub sources: u8,
    /// The server's processes (several for a cluster).
    pub server_pids: Vec<u32>,
    pub label: Option<String>,
    /// Proxy: the backend's port; webhooks: the sink's.
    pub http_port: u16,
}

impl Plan {
    /// The source address of the `i`-th client socket.
    pub fn source(&self, i: usize) -> Option<IpAddr> {
        let n = self.sources.max(1) as usize;
        Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + (i % n) as u8)))
    }

    /// The URL of the `k`-th subscriber connection: `--sub-url`s round-robin, or `--url`.
    pub fn sub_url(&self, k: usize) -> &WsUrl {
        if self.sub_urls.is_empty() {
            &self.url
        } else {
            &self.sub_urls[k % self.sub_urls.len()]
        }
    }
}

impl BenchCommand {
    /// The scenario and its options, for every command but `report`.
    pub fn run_args(&self) -> Option<(Scenario, &RunArgs)> {
        Some(match self {
            BenchCommand::Fanout(a) => (Scenario::Fanout, a),
            BenchCommand::Fanin(a) => (Scenario::Fanin, a),
            BenchCommand::Topics(a) => (Scenario::Topics, a),
            BenchCommand::Latency(a) => (Scenario::Latency, a),
            BenchCommand::Overload(a) => (Scenario::Overload, a),
            BenchCommand::Idle(a) => (Scenario::Idle, a),
            BenchCommand::Proxy(a) => (Scenario::Proxy, a),
            BenchCommand::Webhooks(a) => (Scenario::Webhooks, a),
            BenchCommand::Report(_) => return None,
        })
    }
}

impl RunArgs {
    /// Fills in the scenario's defaults and checks the options.
    pub fn plan(&self, scenario: Scenario) -> Result<Plan, BenchError> {
        let usage = |m: &str| Err(BenchError::Usage(m.into()));
        let (subs, pubs) = match scenario {
            Scenario::Fanout | Scenario::Latency | Scenario::Overload => (100, 1),
            Scenario::Fanin => (1, 100),
            Scenario::Topics => (20, 4),
            Scenario::Idle => (0, 0),
            Scenario::Proxy => (10, 64),
            // Nobody receives messages: the sink receives the events.
            Scenario::Webhooks => (0, 64),
        };
        let subscribers = self.subscribers.unwrap_or(subs);
        let publishers = self.publishers.unwrap_or(pubs);
        match scenario {
            Scenario::Idle => {}
            Scenario::Webhooks if publishers == 0 => {
                return usage("--publishers (connections making events) must be at least 1");
            }
            Scenario::Webhooks => {}
            _ if subscribers == 0 || publishers == 0 => {
                return usage("--subscribers and --publishers must be at least 1");
            }
            _ => {}
        }
        if matches!(scenario, Scenario::Proxy | Scenario::Webhooks) && self.target != Target::Herald
        {
            return usage(
                "the proxy and webhooks scenarios are Herald's: no peer has publish proxies or webhooks",
            );
        }
        let window = self.window.unwrap_or(match scenario {
            // One publish at a time per connection: its latency is then the proxy call's and
            // Herald's, not a queue behind the connection's earlier publishes (the reader
            // awaits each proxied publish).
            Scenario::Proxy => 1,
            Scenario::Webhooks => 5000,
            _ => 512,
        });
        if self.size < 18 {
            return usage("--size must be at least 18 bytes (the send time is written in it)");
        }
        if scenario == Scenario::Proxy && self.size < 19 {
            return usage(
                "--size must be at least 19 bytes (the send time and the kind of publish are written in it)",
            );
        }
        if self.payload == Payload::Json && self.size < 64 {
            return usage("--size must be at least 64 bytes with --payload json");
        }
        if self.payload == Payload::Json
            && !matches!(
                scenario,
                Scenario::Fanout
                    | Scenario::Fanin
                    | Scenario::Topics
                    | Scenario::Latency
                    | Scenario::Overload
            )
        {
            return usage(
                "--payload json is for the fanout, fanin, topics, latency and overload scenarios",
            );
        }
        if self.inflate_every > 1 && (!self.deflate || self.target != Target::Herald) {
            return usage("--inflate-every is for --deflate runs against Herald");
        }
        if window == 0 {
            return usage("--window must be at least 1");
        }
        if self.sources == 0 || self.sources > 250 {
            return usage("--sources must be between 1 and 250");
        }
        let rate = match scenario {
            Scenario::Latency => Some(self.rate.unwrap_or(500_000)),
            Scenario::Proxy => self.rate,
            _ => None,
        };
        if scenario == Scenario::Latency && rate < Some(subscribers as u64) {
            return usage("--rate must be at least the number of subscribers");
        }
        if scenario == Scenario::Proxy && rate == Some(0) {
            return usage("--rate must be at least 1");
        }
        if scenario == Scenario::Idle && self.connections == 0 {
            return usage("--connections must be at least 1");
        }
        let (sub_topic, pub_topics) = match scenario {
            Scenario::Fanout | Scenario::Latency | Scenario::Overload => {
                ("bench/fanout".to_owned(), vec!["bench/fanout".to_owned()])
            }
            Scenario::Fanin => ("bench/fanin".to_owned(), vec!["bench/fanin".to_owned()]),
            Scenario::Topics => {
                if !self.target.has_wildcards() {
                    return usage(
                        "the topics scenario needs wildcard subscriptions, which Socket.IO rooms do not have",
                    );
                }
                if self.topics == 0 {
                    return usage("--topics must be at least 1");
                }
                let topics = (0..self.topics)
                    .map(|i| format!("bench/many/{i}"))
                    .collect();
                ("bench/many/*".to_owned(), topics)
            }
            Scenario::Idle => ("bench/idle".to_owned(), Vec::new()),
            Scenario::Proxy => (
                "bench/proxied/**".to_owned(),
                (0..publishers)
                    .map(|i| format!("bench/proxied/{i}"))
                    .collect(),
            ),
            Scenario::Webhooks => ("bench/hooks".to_owned(), Vec::new()),
        };
        if !self.sub_url.is_empty()
            && !matches!(
                scenario,
                Scenario::Fanout
                    | Scenario::Fanin
                    | Scenario::Topics
                    | Scenario::Latency
                    | Scenario::Overload
            )
        {
            return usage(
                "--sub-url is for the fanout, fanin, topics, latency and overload scenarios",
            );
        }
        let sub_urls = self
            .sub_url
            .iter()
            .map(|u| WsUrl::parse(u))
            .collect::<Result<Vec<_>, _>>()?;
        let settle = self.settle.unwrap_or(if sub_urls.is_empty() {
            Duration::ZERO
        } else {
            DEFAULT_SETTLE
        });
        let url_text = self
            .url
            .clone()
            .unwrap_or_else(|| self.target.default_url().to_owned());
        Ok(Plan {
            scenario,
            target: self.target,
            url: WsUrl::parse(&url_text)?,
            url_text,
            sub_urls,
            sub_url_texts: self.sub_url.clone(),
            settle,
            subscribers,
            publishers,
            sub_topic,
            pub_topics,
            size: self.size,
            payload: self.payload,
            deflate: self.deflate.then_some(self.inflate_every),
            duration: self.duration,
            rate,
            warmup: self.warmup,
            window,
            drain: self.drain,
            connections: self.connections,
            sources: self.sources,
            server_pids: self.server_pid.clone(),
            label: self.label.clone(),
            http_port: match scenario {
                Scenario::Webhooks => self.sink_port,
                _ => self.backend_port,
            },
        })
    }
}
