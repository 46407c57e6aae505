//! Request-reply: a service answering requests, and a caller.
//!
//! ```text
//! cargo run -p herald-client --example rpc -- serve ws://127.0.0.1:7400/ws       # run one or several
//! cargo run -p herald-client --example rpc -- call ws://127.0.0.1:7400/ws "hello"
//! ```
//!
//! Services join the queue group `upper`, so each request is answered by one of them. A
//! request with no service running fails at once with `no_responders`.

use std::time::Duration;

use herald_client::{Client, SubscribeOptions};
use serde_json::json;

const TOPIC: &str = "rpc/upper";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mode = args.first().map(String::as_str).unwrap_or("call");
    let url = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "ws://127.0.0.1:7400/ws".into());
    let client = Client::connect(&url).await?;
    match mode {
        "serve" => {
            let opts = SubscribeOptions {
                group: Some("upper".into()),
                ..Default::default()
            };
            let mut requests = client.subscribe_with(TOPIC, opts).await?;
            println!("serving {TOPIC}");
            while let Some(req) = requests.next_msg().await {
                let Some(reply_to) = req.reply_to else {
                    continue; // a plain publish, not a request
                };
                let text = req.data["text"].as_str().unwrap_or_default();
                let answer = json!({"text": text.to_uppercase()});
                // Replies go to the request's inbox; the first one wins.
                client.publish(&reply_to, &answer).await?;
                println!("answered {text:?}");
            }
        }
        "call" => {
            let text = args.get(2).cloned().unwrap_or_else(|| "hello".into());
            match client
                .request(TOPIC, &json!({"text": text}), Duration::from_secs(5))
                .await
            {
                Ok(reply) => println!("reply {}", reply["text"].as_str().unwrap_or_default()),
                Err(e) => {
                    // e.g. "no_responders: no subscriber matches 'rpc/upper'"
                    eprintln!("request failed: {e}");
                    std::process::exit(1);
                }
            }
        }
        other => return Err(format!("unknown mode {other:?}: use serve or call").into()),
    }
    client.close();
    Ok(())
}
