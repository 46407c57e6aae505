//! Router benchmarks: match cost with 1k, 100k and 1M subscriptions (cold and cached), and
//! subscribe/unsubscribe churn. Run with `cargo bench --bench router`; figures go to
//! BENCHMARKS.md.
//!
//! Workload: a multi-tenant deployment. Topics are `t<tenant>/<kind>/<region>/<event>/<id>`
//! cut to depth 2–5, over small vocabularies. The number of tenants grows with the number of
//! subscriptions (about 50 per tenant), so the fan-out of a topic stays about the same and
//! the growth measured is the router's, not the result size's. Subscriptions: 80% exact,
//! 15% with `*` (one in five of those a partial glob such as `d1*` or `{eu,us}`), 5% with
//! `**`, plus three global patterns (`**`, `*/alerts/**`, `$sys/**`).

use std::hint::black_box;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use herald::router::Router;
use herald::topic::Pattern;

const KINDS: [&str; 8] = [
    "orders", "chat", "sensors", "users", "billing", "metrics", "jobs", "alerts",
];
const REGIONS: [&str; 6] = ["eu", "us", "ap", "sa", "af", "me"];
const EVENTS: [&str; 8] = [
    "created", "updated", "deleted", "shipped", "temp", "humidity", "online", "offline",
];
const IDS: usize = 50;
const SUBS_PER_TENANT: usize = 50;

/// splitmix64: deterministic, dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len())]
    }
}

fn segments(rng: &mut Rng, tenants: usize) -> Vec<String> {
    let depth = 2 + rng.below(4);
    let all = [
        format!("t{}", rng.below(tenants)),
        rng.pick(&KINDS).to_owned(),
        rng.pick(&REGIONS).to_owned(),
        rng.pick(&EVENTS).to_owned(),
        format!("d{}", rng.below(IDS)),
    ];
    all[..depth].to_vec()
}

fn topic(rng: &mut Rng, tenants: usize) -> String {
    segments(rng, tenants).join("/")
}

fn pattern(rng: &mut Rng, tenants: usize) -> String {
    let roll = rng.below(100);
    let mut segs = segments(rng, tenants);
    if roll < 80 {
        return segs.join("/");
    }
    if roll < 95 {
        let at = 1 + rng.below(segs.len() - 1);
        segs[at] = match (roll % 5, at) {
            (0, 4) => format!("d{}*", rng.below(10)),
            (0, 2) => "{eu,us}".to_owned(),
            (0, _) => format!("{}*", &segs[at][..2]),
            _ => "*".to_owned(),
        };
        return segs.join("/");
    }
    match roll % 3 {
        0 => format!("{}/**", segs[..segs.len().min(3) - 1].join("/")),
        1 => format!("{}/**/{}", segs[0], rng.pick(&EVENTS)),
        _ => format!("{}/**", segs[0]),
    }
}

struct Fixture {
    label: &'static str,
    router: Router<u64>,
    /// Distinct topics, many more than the cache holds.
    cold: Vec<String>,
    /// A few hundred topics that stay cached.
    hot: Vec<String>,
    /// Patterns for churn, not in the router.
    churn_exact: Vec<Pattern>,
    churn_wild: Vec<Pattern>,
}

fn build(label: &'static str, n: usize) -> Fixture {
    let started = Instant::now();
    let tenants = (n / SUBS_PER_TENANT).max(1);
    let mut rng = Rng(n as u64);
    let router = Router::new();
    let mut exact_topics = Vec::new();
    for p in ["**", "*/alerts/**", "$sys/**"] {
        router.insert(&Pattern::parse(p).expect("valid"), u64::MAX);
    }
    while router.len() < n {
        let src = pattern(&mut rng, tenants);
        let p = Pattern::parse(&src).expect("generated pattern is valid");
        // About two subscriptions per session.
        router.insert(&p, (router.len() / 2) as u64);
        if p.is_exact() && exact_topics.len() < 1 << 16 {
            exact_topics.push(src);
        }
    }
    // Half the published topics have an exact subscriber, half are arbitrary.
    let mut cold: Vec<String> = (0..1 << 16)
        .map(|i| {
            if i % 2 == 0 {
                exact_topics[rng.below(exact_topics.len())].clone()
            } else {
                topic(&mut rng, tenants)
            }
        })
        .collect();
    cold.dedup();
    let hot = cold.iter().take(256).cloned().collect();
    let churn_exact = (0..1024)
        .map(|i| Pattern::parse(&format!("churn/{i}/x")).expect("valid"))
        .collect();
    let churn_wild = (0..1024)
        .map(|i| Pattern::parse(&format!("t{}/churn{i}/*", i % tenants)).expect("valid"))
        .collect();
    let fanout: usize = cold
        .iter()
        .take(4096)
        .map(|t| router.matches_uncached(t).len())
        .sum();
    eprintln!(
        "fixture {label}: {} subscriptions, {} patterns, built in {:.2?}, mean fan-out {:.2}",
        router.len(),
        router.patterns(),
        started.elapsed(),
        fanout as f64 / 4096.0
    );
    Fixture {
        label,
        router,
        cold,
        hot,
        churn_exact,
        churn_wild,
    }
}

fn fixtures() -> &'static [Fixture] {
    static F: OnceLock<Vec<Fixture>> = OnceLock::new();
    F.get_or_init(|| {
        vec![
            build("1k", 1_000),
            build("100k", 100_000),
            build("1M", 1_000_000),
        ]
    })
}

/// Cycles through `xs` one element per iteration.
fn cycle<'a, T>(xs: &'a [T]) -> impl FnMut() -> &'a T {
    let mut i = 0;
    move || {
        i = if i + 1 == xs.len() { 0 } else { i + 1 };
        &xs[i]
    }
}

fn matching(c: &mut Criterion) {
    let mut g = c.benchmark_group("match_cold");
    for f in fixtures() {
        g.bench_with_input(BenchmarkId::from_parameter(f.label), f, |b, f| {
            let mut next = cycle(&f.cold);
            b.iter(|| black_box(f.router.matches_uncached(next())))
        });
    }
    g.finish();

    let mut g = c.benchmark_group("match_miss");
    for f in fixtures() {
        g.bench_with_input(BenchmarkId::from_parameter(f.label), f, |b, f| {
            let mut next = cycle(&f.cold);
            b.iter(|| black_box(f.router.matches(next())))
        });
    }
    g.finish();

    let mut g = c.benchmark_group("match_cached");
    for f in fixtures() {
        for t in &f.hot {
            f.router.matches(t);
        }
        g.bench_with_input(BenchmarkId::from_parameter(f.label), f, |b, f| {
            let mut next = cycle(&f.hot);
            b.iter(|| black_box(f.router.matches(next())))
        });
    }
    g.finish();
}

/// Cached matches from two threads at once: wall time per iteration, in which each thread
/// does one match. With no global lock on the hit path this stays near the 1-thread figure.
fn contended(c: &mut Criterion) {
    let f = &fixtures()[1];
    for t in &f.hot {
        f.router.matches(t);
    }
    let mut g = c.benchmark_group("match_cached_2threads");
    g.bench_function(f.label, |b| {
        b.iter_custom(|iters| {
            let start = Arc::new(std::sync::Barrier::new(2));
            let other = {
                let start = start.clone();
                std::thread::spawn(move || {
                    let f = &fixtures()[1];
                    let mut next = cycle(&f.hot[128..]);
                    start.wait();
                    for _ in 0..iters {
                        black_box(f.router.matches(next()));
                    }
                })
            };
            let mut next = cycle(&f.hot[..128]);
            start.wait();
            let t0 = Instant::now();
            for _ in 0..iters {
                black_box(f.router.matches(next()));
            }
            let mine = t0.elapsed();
            let _ = other.join();
            mine.max(t0.elapsed())
        })
    });
    g.finish();
}

fn churn(c: &mut Criterion) {
    let mut g = c.benchmark_group("churn");
    for f in &fixtures()[1..] {
        g.bench_with_input(BenchmarkId::new("exact", f.label), f, |b, f| {
            let mut next = cycle(&f.churn_exact);
            b.iter(|| {
                let p = next();
                f.router.insert(p, 7);
                f.router.remove(p, &7)
            })
        });
        g.bench_with_input(BenchmarkId::new("wildcard", f.label), f, |b, f| {
            let mut next = cycle(&f.churn_wild);
            b.iter(|| {
                let p = next();
                f.router.insert(p, 7);
                f.router.remove(p, &7)
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("parse");
    let srcs = [
        "t42/orders/eu/created/d7",
        "t42/orders/*/created",
        "t42/**/{eu,us}",
        "t4?/[a-c]*",
    ];
    for src in srcs {
        g.bench_function(src, |b| b.iter(|| Pattern::parse(black_box(src))));
    }
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30)
        .without_plots()
}

criterion_group! { name = benches; config = config(); targets = matching, contended, churn }
criterion_main!(benches);
