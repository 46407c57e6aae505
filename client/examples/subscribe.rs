//! A consumer following every topic that matches a wildcard pattern.
//!
//! ```text
//! cargo run -p herald-client --example subscribe -- ws://127.0.0.1:7400/ws 'orders/**'
//! cargo run -p herald-client --example subscribe -- ws://127.0.0.1:7400/ws 'orders/*/created' --count 5
//! ```
//!
//! The client reconnects by itself and resumes its session: a brief outage loses nothing,
//! and if the server had to drop messages meanwhile, the exact range is reported as a gap.

use herald_client::{Client, Delivery};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let url = args
        .first()
        .cloned()
        .unwrap_or_else(|| "ws://127.0.0.1:7400/ws".into());
    let pattern = args.get(1).cloned().unwrap_or_else(|| "orders/**".into());
    let limit: Option<usize> = match args.iter().position(|a| a == "--count") {
        Some(i) => Some(args.get(i + 1).ok_or("--count needs a number")?.parse()?),
        None => None,
    };

    let client = Client::connect(&url).await?;
    let mut sub = client.subscribe(&pattern).await?;
    println!(
        "subscribed to {pattern} (session {})",
        client.session().unwrap_or_default()
    );

    let mut seen = 0;
    while let Some(delivery) = sub.next().await {
        match delivery {
            Delivery::Msg(m) => {
                println!("#{} {} offset={} {}", m.seq, m.topic, m.offset, m.data);
                seen += 1;
                if limit.is_some_and(|n| seen >= n) {
                    break;
                }
            }
            Delivery::Gap(g) => println!("missed #{}..#{} ({:?})", g.from_seq, g.to_seq, g.reason),
        }
    }
    client.close();
    Ok(())
}
