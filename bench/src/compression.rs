//! The compression table of the report: fan-out runs of application-like JSON
//! (`--payload json`), with and without permessage-deflate (`--deflate`), Herald and NATS,
//! each against Herald uncompressed: bytes on the subscribers' wire and deliveries per second.

use std::fmt::Write;

use super::args::{Payload, Scenario};
use super::fmt::{fmt_rate, fmt_ratio, goal_cell, ratio};
use super::proto::Target;
use super::report::Report;

/// The goal of the compression issue: this many times fewer bytes ...
const GOAL_BYTES: f64 = 3.0;
/// ... for at most this fraction fewer deliveries/s than Herald uncompressed.
const GOAL_RATE_LOSS: f64 = 0.2;

/// Appends the table (nothing without such runs).
pub fn table(reports: &[Report], s: &mut String) {
    let runs: Vec<&Report> = reports
        .iter()
        .filter(|r| r.scenario == Scenario::Fanout && r.payload == Payload::Json)
        .collect();
    if runs.is_empty() {
        return;
    }
    let ok = |r: &Report| r.errors.is_empty() && r.received > 0;
    let base = runs
        .iter()
        .rev()
        .find(|r| r.target == Target::Herald && r.deflate.is_none())
        .filter(|r| ok(r));
    let base_rate = base.map(|r| r.deliveries_per_sec);
    let base_bytes = base.and_then(|r| r.wire_bytes_per_delivery);
    let _ = writeln!(
        s,
        "\n### Compression: permessage-deflate\n\n\
         Fan-out of application-like JSON (`--payload json`: a page of orders), 1 publisher → \
         {} subscribers. Wire bytes: what the subscribers read from their sockets, per delivery \
         (frames as sent, compressed or not). Ratios are against Herald uncompressed. A run whose \
         load tool is at 100% of its core measures the tool: inflating a delivery costs a client \
         more than the server's delivery (`1 in N inflated`: the tool inflates one compressed \
         message in N and counts the others unread).\n\n\
         | run | server | wire bytes per delivery | fewer bytes | deliveries/s | ÷ Herald uncompressed | per server CPU-s | server CPU | tool CPU | lost | goal |\n\
         |---|---|---|---|---|---|---|---|---|---|---|",
        runs[0].subscribers
    );
    for r in &runs {
        let good = ok(r);
        let bytes = r.wire_bytes_per_delivery.filter(|_| good);
        let rate = good.then_some(r.deliveries_per_sec);
        let fewer = ratio(base_bytes, bytes);
        let rel = ratio(rate, base_rate);
        let run = match (r.deflate, r.label.as_deref()) {
            (_, Some(l)) => l.to_owned(),
            (None, None) => "uncompressed".into(),
            (Some(1), None) => "permessage-deflate".into(),
            (Some(n), None) => format!("permessage-deflate, 1 in {n} inflated"),
        };
        let goal = if r.target == Target::Herald && r.deflate.is_some() {
            let met = fewer
                .zip(rel)
                .map(|(f, q)| f >= GOAL_BYTES && q >= 1.0 - GOAL_RATE_LOSS);
            goal_cell(met, "≥ 3× fewer bytes, ≤ 20% fewer deliveries/s")
        } else {
            String::new()
        };
        let pct = |c: Option<f64>| {
            c.map(|c| format!("{:.0}%", c * 100.0))
                .unwrap_or_else(|| "–".into())
        };
        let _ = writeln!(
            s,
            "| {run} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {goal} |",
            r.target.label(),
            bytes
                .map(|b| format!("{b:.0}"))
                .unwrap_or_else(|| "–".into()),
            fmt_ratio(fewer),
            fmt_rate(rate),
            fmt_ratio(rel),
            fmt_rate(r.deliveries_per_server_cpu_sec.filter(|_| good)),
            pct(r.server_cpu),
            pct(r.tool_cpu),
            r.lost,
        );
    }
}
