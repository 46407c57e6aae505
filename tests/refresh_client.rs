//! `herald_client` with `ClientOptions::get_token`: a token fetched for the connection, the
//! server's `expiring`, and a `refresh` on the same connection (no reconnect).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{TestServer, config};
use herald::config::AuthConfig;
use herald_client::{Client, ClientEvent, ClientOptions, Delivery, GetToken};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

const SECRET: &str = "refresh-client-secret-of-some-length";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn token(lifetime: u64) -> String {
    let claims = json!({"sub": "ann", "iat": now(), "exp": now() + lifetime, "publish": ["**"], "subscribe": ["**"]});
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

#[tokio::test]
async fn get_token_refreshes_on_expiring_without_a_reconnect() {
    let mut cfg = config();
    cfg.auth = Some(AuthConfig {
        hs256_secret: Some(SECRET.into()),
        refresh_notice: Duration::from_secs(60),
        ..Default::default()
    });
    let s = TestServer::with_config(cfg).await;
    let calls = Arc::new(AtomicU64::new(0));
    let counted = calls.clone();
    let options = ClientOptions {
        // The first token lives 3 s (inside the notice: `expiring` comes at once); the
        // next ones an hour.
        get_token: Some(GetToken::new(move || {
            let n = counted.fetch_add(1, Ordering::SeqCst);
            async move { Ok(token(if n == 0 { 3 } else { 3600 })) }
        })),
        ..Default::default()
    };
    let client = Client::connect_with(&s.ws_url(), options).await.unwrap();
    let mut events = client.events();
    let mut sub = client.subscribe("t/**").await.unwrap();
    let refreshed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match events.recv().await.unwrap() {
                ClientEvent::Refreshed { exp } => return exp,
                ClientEvent::Disconnected { reason } => panic!("reconnected: {reason}"),
                _ => {}
            }
        }
    })
    .await
    .expect("refreshed");
    assert!(refreshed.unwrap() > now() + 3000);
    assert_eq!(calls.load(Ordering::SeqCst), 2, "one for connect, one for the refresh");
    // Past the first token's `exp`: the connection is still the same one.
    tokio::time::sleep(Duration::from_secs(4)).await;
    client.publish("t/x", &json!("still here")).await.unwrap();
    match tokio::time::timeout(Duration::from_secs(5), sub.next()).await {
        Ok(Some(Delivery::Msg(m))) => assert_eq!(m.data, json!("still here")),
        other => panic!("{other:?}"),
    }
    while let Ok(e) = events.try_recv() {
        assert!(!matches!(e, ClientEvent::Disconnected { .. }), "{e:?}");
    }
}
