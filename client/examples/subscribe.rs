//! A consumer following every topic that matches a wildcard pattern, surviving the loss of
//! its server: give it several URLs (comma-separated) and it moves to the next one when the
//! one in use goes away.
//!
//! ```text
//! cargo run -p herald-client --example subscribe -- ws://127.0.0.1:7400/ws 'orders/**'
//! cargo run -p herald-client --example subscribe -- ws://127.0.0.1:7400/ws 'orders/*/created' --count 5
//! cargo run -p herald-client --example subscribe -- ws://10.0.0.1:7400/ws,ws://10.0.0.2:7400/ws 'orders/**'
//! ```
//!
//! The client reconnects by itself. A brief outage loses nothing: the session resumes, and
//! if the server had to drop messages meanwhile, the exact range is reported as a gap. If the
//! session is gone (the server restarted, or this is another node), the subscription
//! recovers what it missed from the topics' history (`[[topics]] history = N`), and reports
//! per topic what history no longer held.

use herald_client::{Client, ClientOptions, Delivery};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let urls = args
        .first()
        .cloned()
        .unwrap_or_else(|| "ws://127.0.0.1:7400/ws".into());
    let pattern = args.get(1).cloned().unwrap_or_else(|| "orders/**".into());
    let limit: Option<usize> = match args.iter().position(|a| a == "--count") {
        Some(i) => Some(args.get(i + 1).ok_or("--count needs a number")?.parse()?),
        None => None,
    };

    let client = Client::connect_urls(urls.split(','), ClientOptions::default()).await?;
    let mut sub = client.subscribe(&pattern).await?;
    println!(
        "subscribed to {pattern} (session {}, {})",
        client.session().unwrap_or_default(),
        client.url()
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
            Delivery::TopicGap(g) => println!(
                "missed {} offsets {}..={} ({:?})",
                g.topic, g.from_offset, g.to_offset, g.reason
            ),
            Delivery::Recovered { recovered } => println!(
                "subscribed again on {} ({})",
                client.url(),
                if recovered {
                    "nothing missed"
                } else {
                    "some messages missed"
                }
            ),
        }
    }
    client.close();
    Ok(())
}
