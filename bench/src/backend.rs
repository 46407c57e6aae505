//! The Backend table of the report: the `proxy` and `webhooks` runs (PROTOCOL.md §10),
//! Herald only: no peer has a publish proxy or webhooks to compare with.

use std::fmt::Write;

use super::args::Scenario;
use super::fmt::{fmt_rate, fmt_us, goal_cell};
use super::proto::Target;
use super::report::{ProxyRun, Report};

/// The goals for the publish proxy.
const PROXIED_RATE_GOAL: f64 = 20_000.0;
const ADDED_P99_GOAL_US: f64 = 2000.0;

/// Appends the table (nothing when neither scenario ran).
pub fn table(reports: &[Report], s: &mut String) {
    let herald = |sc: Scenario| {
        reports
            .iter()
            .filter(move |r| r.target == Target::Herald && r.scenario == sc)
    };
    let proxies: Vec<&Report> = herald(Scenario::Proxy)
        .filter(|r| r.proxy.is_some())
        .collect();
    let hooks = reports.iter().rev().find(|r| {
        r.target == Target::Herald && r.scenario == Scenario::Webhooks && r.webhooks.is_some()
    });
    if proxies.is_empty() && hooks.is_none() {
        return;
    }
    let _ = writeln!(
        s,
        "\n### Backend: publish proxy and webhooks (Herald only)\n\n\
         No peer has these features (nats-server and Socket.IO have no publish proxy and no \
         webhooks), so only Herald runs them. The load tool serves the backend itself on \
         loopback, on its own core: the proxy's backend answers `{{\"allow\":true}}` at once, \
         the webhook sink answers 204, both over keep-alive HTTP/1.1.\n\n\
         Proxy: two phases on the same connections. First every publisher publishes to \
         `bench/proxied/<i>` (a `[[proxy.publish]]` route), in a closed loop (at most its \
         window awaiting the `ok`) or at a fixed rate; then to `bench/plain/<i>` (no route) at \
         the rate the first phase reached. Latency is publish to delivery; added = proxied − \
         plain; server CPU per publish includes its deliveries. In the closed loop Herald runs \
         at its limit, where latency is mostly the queue of publishes in flight (publishers × \
         window ÷ rate): the added-p99 goal is judged at the fixed rate.\n\n\
         Webhooks: connections subscribe and unsubscribe exact topics of their own and \
         reconnect (`session.ttl` 1 s), with at most the window of events made and not yet \
         received.\n\n\
         | scenario | measure | Herald | goal |\n|---|---|---|---|"
    );
    let mut notes = Vec::new();
    let fixed_rate_runs = proxies
        .iter()
        .any(|r| r.proxy.as_ref().is_some_and(|p| p.proxied.rate.is_some()));
    for r in &proxies {
        let Some(p) = &r.proxy else { continue };
        proxy_rows(r, p, !fixed_rate_runs || p.proxied.rate.is_some(), s);
        if !r.errors.is_empty() {
            notes.push(format!(
                "the proxy run {} had errors: {}",
                proxy_title(r, p),
                r.errors.join("; ")
            ));
        }
    }
    if let Some(r) = hooks
        && let Some(w) = &r.webhooks
    {
        let expected: u64 = w.expected.values().sum();
        let _ = writeln!(
            s,
            "| webhooks ({} connections, window {}) | events received/s | {} | |",
            w.connections,
            w.window,
            fmt_rate(Some(w.events_per_sec)),
        );
        let _ = writeln!(
            s,
            "| | batches/s (events per batch, largest) | {:.0} ({:.1}, {}) | |",
            w.batches_per_sec,
            w.events_per_batch().unwrap_or(0.0),
            w.largest_batch
        );
        let _ = writeln!(
            s,
            "| | events received / made (duplicates) | {} / {expected} ({}) | {} |",
            w.events(),
            w.duplicates,
            goal_cell(Some(w.events() >= expected), "all received"),
        );
        let ms = |pick: fn(&super::Latency) -> f64| {
            w.age
                .as_ref()
                .map(|a| format!("{:.0}", pick(a) / 1000.0))
                .unwrap_or("–".into())
        };
        let _ = writeln!(
            s,
            "| | event age at the sink p50 / p99 ms | {} / {} | |",
            ms(|a| a.p50_us),
            ms(|a| a.p99_us),
        );
        let _ = writeln!(s, "| | server CPU | {} | |", cpu(r.server_cpu));
        if !r.errors.is_empty() {
            notes.push(format!(
                "the webhooks run had errors: {}",
                r.errors.join("; ")
            ));
        }
    }
    for n in notes {
        let _ = writeln!(s, "\nNote: {}", n.replace('|', "/"));
    }
}

fn proxy_title(r: &Report, p: &ProxyRun) -> String {
    let how = match p.proxied.rate {
        Some(rate) => format!("at {}/s", fmt_rate(Some(rate))),
        None => format!("closed loop, window {}", p.window),
    };
    format!(
        "publish proxy, {how} ({} pubs → {} subs, {} B)",
        p.publishers, r.subscribers, r.size
    )
}

/// The rows of one proxy run; `p99_goal`: whether the added-p99 goal is judged on it.
fn proxy_rows(r: &Report, p: &ProxyRun, p99_goal: bool, s: &mut String) {
    let ok = r.errors.is_empty();
    let (pl, nl) = (p.proxied.latency.as_ref(), p.plain.latency.as_ref());
    let lat = |l: Option<&super::Latency>, pick: fn(&super::Latency) -> f64| fmt_us(l.map(pick));
    let signed = |v: Option<f64>| v.map(|v| format!("{v:+.0}")).unwrap_or("–".into());
    let rate_goal = match p.proxied.rate {
        None => goal_cell(
            ok.then_some(p.proxied.acked_per_sec >= PROXIED_RATE_GOAL),
            "≥ 20k/s",
        ),
        Some(rate) => goal_cell(
            ok.then_some(p.proxied.acked_per_sec >= 0.98 * rate),
            "keeps the rate",
        ),
    };
    let _ = writeln!(
        s,
        "| {} | proxied publishes acked/s | {} | {rate_goal} |",
        proxy_title(r, p),
        fmt_rate(Some(p.proxied.acked_per_sec)),
    );
    let _ = writeln!(
        s,
        "| | plain publishes acked/s (at the proxied phase's rate) | {} | |",
        fmt_rate(Some(p.plain.acked_per_sec))
    );
    let _ = writeln!(
        s,
        "| | p50 µs: proxied / plain / added | {} / {} / {} | |",
        lat(pl, |l| l.p50_us),
        lat(nl, |l| l.p50_us),
        signed(p.added_p50_us())
    );
    let goal = if p99_goal {
        goal_cell(
            p.added_p99_us()
                .filter(|_| ok)
                .map(|a| a <= ADDED_P99_GOAL_US),
            "added p99 ≤ 2 ms",
        )
    } else {
        String::new()
    };
    let _ = writeln!(
        s,
        "| | p99 µs: proxied / plain / added | {} / {} / {} | {goal} |",
        lat(pl, |l| l.p99_us),
        lat(nl, |l| l.p99_us),
        signed(p.added_p99_us()),
    );
    let _ = writeln!(
        s,
        "| | p99.9 µs: proxied / plain | {} / {} | |",
        lat(pl, |l| l.p999_us),
        lat(nl, |l| l.p999_us),
    );
    let us = |v: Option<f64>| v.map(|v| format!("{v:.1}")).unwrap_or("–".into());
    let added_cpu = p
        .proxied
        .server_us_per_publish
        .zip(p.plain.server_us_per_publish)
        .map(|(a, b)| format!("{:+.1}", a - b))
        .unwrap_or("–".into());
    let _ = writeln!(
        s,
        "| | server CPU µs per publish: proxied / plain / added ({} / {} of a core) | {} / {} / {added_cpu} | |",
        cpu_share(p.proxied.server_cpu),
        cpu_share(p.plain.server_cpu),
        us(p.proxied.server_us_per_publish),
        us(p.plain.server_us_per_publish),
    );
    let _ = writeln!(
        s,
        "| | backend requests / proxied publishes | {} / {}{} | {} |",
        p.backend_requests,
        p.proxied.published,
        if p.backend_unexpected > 0 {
            format!(" ({} not for a proxied topic)", p.backend_unexpected)
        } else {
            String::new()
        },
        goal_cell(Some(p.requests_match()), "equal"),
    );
    let _ = writeln!(s, "| | deliveries lost | {} | |", r.lost);
}

fn cpu_share(c: Option<f64>) -> String {
    c.map(|c| format!("{:.0}%", c * 100.0))
        .unwrap_or_else(|| "–".into())
}

fn cpu(c: Option<f64>) -> String {
    c.map(|c| format!("{:.0}% of a core", c * 100.0))
        .unwrap_or_else(|| "–".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{Latency, PublishStream, WebhookRun};

    fn report(scenario: &str) -> Report {
        serde_json::from_value(serde_json::json!({
            "target": "herald", "scenario": scenario, "url": "ws://x",
            "subscribers": 10, "publishers": 64, "topics": 128, "size": 100,
            "published": 1000, "expected": 10000, "received": 10000, "lost": 0,
            "gap_reported": 0, "seconds": 1.0, "deliveries_per_sec": 10000.0,
            "target_rate": null, "latency": null, "connections": null,
            "rss_before": null, "rss_after": null, "rss_per_connection": null,
            "server_cpu": 0.5, "tool_cpu": 0.5, "deliveries_per_server_cpu_sec": null,
            "errors": []
        }))
        .unwrap()
    }

    fn lat(p50: f64, p99: f64) -> Option<Latency> {
        Some(Latency {
            samples: 100,
            p50_us: p50,
            p99_us: p99,
            p999_us: p99,
            max_us: p99,
        })
    }

    fn proxy_run(rate: Option<f64>, acked_per_sec: f64, p99: f64) -> Report {
        let mut r = report("proxy");
        let phase = |rate, p50, p99, us| PublishStream {
            rate,
            published: 500,
            acked: 500,
            acked_per_sec,
            latency: lat(p50, p99),
            server_cpu: Some(0.5),
            server_us_per_publish: Some(us),
        };
        r.proxy = Some(ProxyRun {
            publishers: 64,
            window: 1,
            proxied: phase(rate, 400.0, p99, 30.0),
            plain: phase(Some(acked_per_sec), 150.0, 1000.0, 12.5),
            backend_requests: 500,
            backend_unexpected: 0,
            backend_connections: 64,
        });
        r
    }

    #[test]
    fn proxy_and_webhook_rows_with_their_goals() {
        let closed = proxy_run(None, 25_000.0, 9000.0);
        let fixed = proxy_run(Some(20_000.0), 20_000.0, 2500.0);
        let mut w = report("webhooks");
        w.webhooks = Some(WebhookRun {
            connections: 64,
            window: 5000,
            expected: [("presence.join".to_owned(), 40)].into(),
            received: [("presence.join".to_owned(), 40)].into(),
            batches: 2,
            largest_batch: 30,
            events_per_sec: 4000.0,
            batches_per_sec: 200.0,
            ..Default::default()
        });
        let mut s = String::new();
        table(&[closed, fixed, w], &mut s);
        assert!(
            s.contains("| publish proxy, closed loop, window 1 (64 pubs → 10 subs, 100 B) | proxied publishes acked/s | 25k | ≥ 20k/s: met |"),
            "{s}"
        );
        assert!(
            s.contains("| publish proxy, at 20k/s (64 pubs → 10 subs, 100 B) | proxied publishes acked/s | 20k | keeps the rate: met |"),
            "{s}"
        );
        assert!(s.contains("| 400 / 150 / +250 |"), "{s}");
        // The closed loop's p99 is its queue's: the goal is judged at the fixed rate.
        assert!(s.contains("| 9000 / 1000 / +8000 |  |"), "{s}");
        assert!(
            s.contains("| 2500 / 1000 / +1500 | added p99 ≤ 2 ms: met |"),
            "{s}"
        );
        assert!(s.contains("| 30.0 / 12.5 / +17.5 |"), "{s}");
        assert!(s.contains("| 500 / 500 | equal: met |"), "{s}");
        assert!(s.contains("webhooks (64 connections, window 5000)"), "{s}");
        assert!(s.contains("| 200 (20.0, 30) |"), "{s}");
        assert!(s.contains("| 40 / 40 (0) | all received: met |"), "{s}");
    }

    #[test]
    fn no_backend_runs_no_table() {
        let mut s = String::new();
        table(&[report("fanout")], &mut s);
        assert!(s.is_empty());
    }
}
