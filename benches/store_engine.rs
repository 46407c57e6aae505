//! The durable engine alone ([`RedbStore::commit`]): wall and CPU time per message for
//! batches of 1,000 to 10,000 messages of 100 bytes over 10 topics, with the trim by
//! count (`history = 1000`; `H=N` changes it). No sockets, no bus.
//!
//! ```text
//! cargo bench --bench store_engine
//! ```

use herald::event::{Event, EventParts};
use herald::store::{Durable, RedbStore, Retention, Write};
use herald::topic::Topic;
use std::sync::Arc;
use std::time::Instant;
/// CPU time of this thread, in seconds.
fn cpu() -> f64 {
    let s = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
    let f: Vec<&str> = s.rsplit(')').next().unwrap().split_whitespace().collect();
    (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / 100.0
}
fn main() {
    let dir = std::env::temp_dir().join(format!("probe-{}", std::process::id()));
    let mut s = RedbStore::open(&dir).unwrap();
    let topics: Vec<Topic> = (0..10)
        .map(|i| Topic::parse(&format!("b/t{i}")).unwrap())
        .collect();
    let data = format!("\"{}\"", "x".repeat(98));
    let keep = Retention {
        history: std::env::var("H")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1000),
        ttl: None,
    };
    for &batch in &[1000usize, 2000, 4000, 10000] {
        let mut offs = [0u64; 10];
        // `cargo test --all-targets` runs this without `--bench`: keep that quick.
        let n = if std::env::args().any(|a| a == "--bench") {
            200_000
        } else {
            2_000
        };
        let mut t_build = 0.0;
        let mut t_commit = 0.0;
        let mut done = 0;
        let c0 = cpu();
        while done < n {
            let t0 = Instant::now();
            let writes: Vec<Write> = (0..batch)
                .map(|i| {
                    let t = i % 10;
                    offs[t] += 1;
                    Write {
                        event: Arc::new(Event::new(
                            EventParts {
                                topic: topics[t].clone(),
                                data: &data,
                                msg_id: None,
                                reply_to: None,
                            },
                            offs[t],
                            "ep".into(),
                            1,
                        )),
                        retain: None,
                        keep,
                    }
                })
                .collect();
            let t1 = Instant::now();
            s.commit(&writes).unwrap();
            t_build += (t1 - t0).as_secs_f64();
            t_commit += t1.elapsed().as_secs_f64();
            done += batch;
        }
        println!(
            "batch {batch}: build {:.2} µs/msg, commit {:.2} µs/msg wall ({:.2} ms/commit), {:.2} µs/msg CPU in all",
            t_build * 1e6 / n as f64,
            t_commit * 1e6 / n as f64,
            t_commit * 1e3 / (n / batch) as f64,
            (cpu() - c0) * 1e6 / n as f64
        );
        drop(s);
        let _ = std::fs::remove_dir_all(&dir);
        s = RedbStore::open(&dir).unwrap();
    }
}
