//! `herald_client` under the server's control: `ClientOptions::get_token` (a token fetched for
//! the connection, the server's `expiring`, a `refresh` on the same connection), and
//! subscriptions the server removes or adds (`POST /v1/unsubscribe`, `/v1/subscribe`).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::{TestServer, config};
use herald::config::AuthConfig;
use herald_client::{Client, ClientEvent, ClientOptions, Delivery, GetToken};
use serde_json::json;

const SECRET: &str = "refresh-client-secret-of-some-length";
const ADMIN: &str = "adm";

fn token(lifetime: u64) -> String {
    let claims = json!({"sub": "ann", "iat": common::now_s(), "exp": common::now_s() + lifetime, "publish": ["**"], "subscribe": ["**"]});
    common::hs256(SECRET, &claims)
}

#[tokio::test]
async fn get_token_refreshes_on_expiring_without_a_reconnect() {
    let mut cfg = config();
    cfg.auth = Some(AuthConfig {
        hs256_secret: Some(SECRET.into()),
        refresh_notice: Duration::from_secs(60),
        admin_keys: vec![ADMIN.into()],
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
    assert!(refreshed.unwrap() > common::now_s() + 3000);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "one for connect, one for the refresh"
    );
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

async fn admin(s: &TestServer, path: &str, body: serde_json::Value) -> serde_json::Value {
    common::http()
        .post(s.http(path))
        .bearer_auth(ADMIN)
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The next event that `pick` takes, within 10 s.
async fn event<T>(
    events: &mut tokio::sync::broadcast::Receiver<ClientEvent>,
    mut pick: impl FnMut(ClientEvent) -> Option<T>,
) -> T {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(t) = pick(events.recv().await.unwrap()) {
                return t;
            }
        }
    })
    .await
    .expect("event")
}

#[tokio::test]
async fn subscriptions_the_server_removes_are_forgotten_and_its_own_told_once() {
    let mut cfg = config();
    cfg.auth = Some(AuthConfig {
        hs256_secret: Some(SECRET.into()),
        admin_keys: vec![ADMIN.into()],
        ..Default::default()
    });
    let s = TestServer::with_config(cfg).await;
    let options = ClientOptions {
        get_token: Some(GetToken::new(|| async { Ok(token(3600)) })),
        ..Default::default()
    };
    let client = Client::connect_with(&s.ws_url(), options).await.unwrap();
    let mut events = client.events();
    let sid = client.session().expect("a session");
    let mut removed = client.subscribe("t/**").await.unwrap();
    let _kept = client.subscribe("u/**").await.unwrap();

    // Removed by the server: told, and the subscription's stream ends.
    let v = admin(
        &s,
        "/v1/unsubscribe",
        json!({"session": sid, "pattern": "t/**"}),
    )
    .await;
    assert_eq!(v, json!({"unsubscribed": 1}));
    let (pattern, reason) = event(&mut events, |e| match e {
        ClientEvent::Unsubscribed {
            pattern, reason, ..
        } => Some((pattern, reason)),
        _ => None,
    })
    .await;
    assert_eq!((pattern.as_str(), reason.as_str()), ("t/**", "server"));
    let end = tokio::time::timeout(Duration::from_secs(5), removed.next()).await;
    assert!(matches!(end, Ok(None)), "{end:?}");

    // Added by the server, then a resume: `subscribed` is told once, not again when the
    // resumed session sends it a second time.
    let v = admin(
        &s,
        "/v1/subscribe",
        json!({"session": sid, "pattern": "v/**"}),
    )
    .await;
    assert_eq!(v, json!({"subscribed": 1}));
    event(&mut events, |e| {
        matches!(e, ClientEvent::Subscribed { .. }).then_some(())
    })
    .await;
    let body = json!({"session": sid, "resumable": true});
    assert_eq!(
        admin(&s, "/v1/disconnect", body).await,
        json!({"disconnected": 1})
    );
    let resumed = event(&mut events, |e| match e {
        ClientEvent::Connected { resumed, .. } => Some(resumed),
        _ => None,
    })
    .await;
    assert!(resumed);
    client.publish("u/x", &json!(1)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    while let Ok(e) = events.try_recv() {
        assert!(
            !matches!(e, ClientEvent::Subscribed { .. }),
            "told twice: {e:?}"
        );
    }

    // A new session (not resumable): the client subscribes again what it still has, and
    // not what the server removed.
    let body = json!({"session": sid, "resumable": false});
    assert_eq!(
        admin(&s, "/v1/disconnect", body).await,
        json!({"disconnected": 1})
    );
    event(&mut events, |e| match e {
        ClientEvent::Connected { resumed: false, .. } => Some(()),
        _ => None,
    })
    .await;
    let rows: serde_json::Value = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let r: serde_json::Value = common::http()
                .get(s.http("/v1/sessions?user=ann"))
                .bearer_auth(ADMIN)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if r[0]["subscriptions"]
                .as_array()
                .is_some_and(|a| !a.is_empty())
            {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("resubscribed");
    assert_eq!(
        rows[0]["subscriptions"],
        json!([{"pattern": "u/**"}]),
        "{rows}"
    );
}
