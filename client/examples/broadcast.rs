//! A backend service broadcasting events to every interested subscriber.
//!
//! ```text
//! cargo run --release                                   # the bus, in another terminal
//! cargo run -p herald-client --example broadcast -- ws://127.0.0.1:7400/ws 10
//! ```
//!
//! Publishes `count` order events to `orders/<region>/created` and prints each
//! acknowledgement: the topic's offset and epoch, assigned by the bus.

use herald_client::Client;
use serde_json::json;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "ws://127.0.0.1:7400/ws".into());
    let count: u64 = args.next().map(|n| n.parse()).transpose()?.unwrap_or(10);

    let client = Client::connect(&url).await?;
    let regions = ["eu", "us", "ap"];
    for id in 1..=count {
        let region = regions[(id as usize) % regions.len()];
        let topic = format!("orders/{region}/created");
        let event = json!({"id": id, "region": region, "amount_cents": 1000 + id * 7});
        let ack = client.publish(&topic, &event).await?;
        println!(
            "published {topic} offset={} epoch={}",
            ack.offset, ack.epoch
        );
    }
    client.close();
    Ok(())
}
