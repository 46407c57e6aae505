//! A work-queue worker: joins the queue group `workers` with manual acks, so each job goes
//! to one worker, and a job whose worker dies before acking is redelivered to another.
//!
//! ```text
//! cargo run -p herald-client --example worker -- ws://127.0.0.1:7400/ws 'jobs/**'            # run 2 or 3 of these
//! curl -XPOST localhost:7400/v1/publish -d '{"topic":"jobs/resize","data":{"image":"a.png"}}'
//! ```
//!
//! `--count N` exits after N jobs (tests use it).

use std::time::Duration;

use herald_client::{Client, SubscribeOptions};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let url = args
        .first()
        .cloned()
        .unwrap_or_else(|| "ws://127.0.0.1:7400/ws".into());
    let pattern = args.get(1).cloned().unwrap_or_else(|| "jobs/**".into());
    let limit: Option<usize> = match args.iter().position(|a| a == "--count") {
        Some(i) => Some(args.get(i + 1).ok_or("--count needs a number")?.parse()?),
        None => None,
    };

    let client = Client::connect(&url).await?;
    let opts = SubscribeOptions {
        group: Some("workers".into()),
        manual_ack: true,
        ..Default::default()
    };
    let mut jobs = client.subscribe_with(&pattern, opts).await?;
    println!("worker ready on {pattern}");

    let mut done = 0;
    while let Some(job) = jobs.next_msg().await {
        // The real work goes here. A job that is not acked within the topic's `ack_wait`
        // (30 s by default) is handed to another worker.
        tokio::time::sleep(Duration::from_millis(5)).await;
        jobs.ack(&job)?;
        let again = if job.redelivered {
            " (redelivered)"
        } else {
            ""
        };
        println!(
            "done {} offset={} {}{again}",
            job.topic, job.offset, job.data
        );
        done += 1;
        if limit.is_some_and(|n| done >= n) {
            break;
        }
    }
    client.close();
    Ok(())
}
