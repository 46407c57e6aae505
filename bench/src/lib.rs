//! `herald-bench`: the load generator that measures Herald side by side with the servers
//! people would pick instead (nats-server over WebSocket, Socket.IO 4), driven the same way.
//!
//! Scenarios (each against one server, chosen with `--target`):
//! - `fanout`: one publisher, N subscribers of one topic;
//! - `fanin`: N publishers, one subscriber;
//! - `topics`: publishers spread over many topics, subscribers on a wildcard over all of them;
//! - `latency`: the fan-out shape at a fixed delivery rate, latency in an HDR histogram;
//! - `idle`: many connections with one subscription each; server memory per connection.
//! - `proxy` (Herald only): publishes asked of a backend the tool serves itself, then the same
//!   load not asked: proxied publishes per second and the latency and CPU the proxy adds;
//! - `webhooks` (Herald only): subscriptions and sessions coming and going, the events POSTed
//!   to a sink the tool serves itself: events and batches per second.
//!
//! The throughput and latency scenarios also run against a cluster: `--sub-url` puts the
//! subscribers on other nodes than the publishers (`--url`), and `--server-pid` repeated sums
//! the CPU of all the cluster's processes (`COMPARE_ONLY=cluster bench/compare.sh`).
//!
//! Throughput runs are closed-loop: publishers keep at most `--window` messages in flight per
//! subscriber (published, not yet received). That measures the most a server delivers without
//! loss, instead of how fast a server drops what its buffers cannot hold. Loss is still
//! counted (sent × subscribers − received) and reported.
//!
//! The tool is single-threaded on purpose: `bench/compare.sh` pins it to one core and the
//! server to the other, so the server, not the tool, is measured; the report shows both
//! processes' CPU use so that a run limited by the tool can be told apart.
//!
//! `herald-bench report` turns the JSON results of a run into the `BENCHMARKS.md` section and
//! its SVG chart.

mod args;
mod backend;
mod chart;
mod cluster;
mod compression;
mod fmt;
mod http;
mod idle;
mod load;
mod loads;
pub mod proc;
mod proto;
mod proxy;
mod report;
mod summary;
mod syscalls;
mod webhooks;
mod ws;

pub use args::{BenchCommand, Payload, ReportArgs, RunArgs, Scenario};
pub use proto::Target;
pub use report::{Latency, ProxyRun, PublishStream, Report, WebhookRun};

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{0}")]
    Usage(String),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("WebSocket handshake: {0}")]
    Handshake(String),
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("{0}")]
    Closed(String),
    #[error("timeout: {0}")]
    Timeout(String),
}

/// Runs `herald-bench …`; returns the process exit code.
pub fn run(cmd: &BenchCommand) -> i32 {
    let result = match (cmd, cmd.run_args()) {
        (_, Some((scenario, args))) => run_scenario(scenario, args),
        (BenchCommand::Report(args), None) => summary::write(args),
        (_, None) => Err(BenchError::Usage("nothing to run".into())),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("herald-bench: {e}");
            1
        }
    }
}

fn run_scenario(scenario: Scenario, args: &RunArgs) -> Result<(), BenchError> {
    let plan = args.plan(scenario)?;
    // One thread: the tool gets one core, and its tasks share counters without atomics.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    let report = local.block_on(&runtime, async {
        match plan.scenario {
            Scenario::Idle => idle::run(&plan).await,
            Scenario::Proxy => proxy::run(&plan).await,
            Scenario::Webhooks => webhooks::run(&plan).await,
            _ => load::run(&plan).await,
        }
    })?;
    print!("{}", report.text());
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&report)
            .map_err(|e| BenchError::Usage(format!("cannot encode the report: {e}")))?;
        std::fs::write(path, json + "\n")?;
    }
    Ok(())
}
