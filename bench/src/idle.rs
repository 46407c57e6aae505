//! Idle connections: what an open, subscribed, silent connection costs the server.
//!
//! The server's RSS is read before any connection is opened and again once all of them are
//! open, each with one subscription to a topic of its own (so the router holds one entry per
//! connection, as in a real deployment of per-user topics), and quiet for a moment. The
//! difference divided by the number of connections is the figure reported.

use std::time::Duration;

use futures_util::StreamExt;

use super::BenchError;
use super::args::Plan;
use super::proc::{CpuMeter, rss_bytes_sum};
use super::proto::Client;
use super::report::Report;

/// Connections being opened at once.
const CONCURRENCY: usize = 64;
/// Quiet time before the second reading, so that the server is done with the handshakes.
const SETTLE: Duration = Duration::from_secs(2);

pub async fn run(plan: &Plan) -> Result<Report, BenchError> {
    let mut report = Report::new(plan);
    let rss_before = rss_bytes_sum(&plan.server_pids);
    let cpu = CpuMeter::start(&plan.server_pids);
    let started = std::time::Instant::now();
    let mut clients = Vec::with_capacity(plan.connections);
    let mut opening = futures_util::stream::iter((0..plan.connections).map(|i| async move {
        let mut c = Client::connect(plan.target, &plan.url, plan.source(i)).await?;
        c.subscribe(&[&format!("{}/{i}", plan.sub_topic)]).await?;
        Ok::<_, BenchError>(c)
    }))
    .buffer_unordered(CONCURRENCY);
    while let Some(c) = opening.next().await {
        match c {
            Ok(c) => clients.push(c),
            Err(e) => {
                report.errors.push(format!(
                    "connection {} of {}: {e}",
                    clients.len() + 1,
                    plan.connections
                ));
                break;
            }
        }
    }
    drop(opening);
    report.seconds = started.elapsed().as_secs_f64();
    // Keep answering pings while settling, as a live client would.
    let settle = tokio::time::Instant::now() + SETTLE;
    while tokio::time::Instant::now() < settle {
        for c in clients.iter_mut() {
            if c.try_fill()? {
                c.poll(|_| {})?;
                c.flush().await?;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rss_after = rss_bytes_sum(&plan.server_pids);
    let cpu = cpu.stop();
    report.connections = Some(clients.len());
    report.rss_before = rss_before;
    report.rss_after = rss_after;
    if let (Some(b), Some(a)) = (rss_before, rss_after)
        && !clients.is_empty()
    {
        report.rss_per_connection = Some(a.saturating_sub(b) as f64 / clients.len() as f64);
    }
    report.server_cpu = cpu.server;
    report.tool_cpu = cpu.tool;
    report.set_server_processes(cpu.processes);
    drop(clients);
    Ok(report)
}
