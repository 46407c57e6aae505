//! What `tests/auth_keys.rs` drives the server with: the fixture keys, tokens signed with
//! them, a `hello` that says whether a token was taken, and a JWKS endpoint (a real axum
//! server on port 0) whose answer the test changes and whose requests it counts.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::StatusCode;
use futures_util::StreamExt;
use herald::Config;
use herald::config::AuthConfig;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::common::{self, Raw, config, http};

pub fn key_file(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/keys")
        .join(name)
}

pub fn jwk(name: &str) -> Value {
    serde_json::from_slice(&std::fs::read(key_file(&format!("{name}.jwk.json"))).unwrap()).unwrap()
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Claims allowing `x/**`, valid for an hour.
pub fn claims() -> Value {
    json!({"sub": "u", "exp": now() + 3600, "publish": ["x/**"], "subscribe": ["x/**"]})
}

/// A token signed with the private key `name` (`rsa-*`, `ec-*`, `ed-*`) and its algorithm.
pub fn token(name: &str, kid: Option<&str>, claims: &Value) -> String {
    let pem = std::fs::read(key_file(&format!("{name}.pem"))).unwrap();
    let (alg, key) = match &name[..2] {
        "rs" => (Algorithm::RS256, EncodingKey::from_rsa_pem(&pem).unwrap()),
        "ec" => (Algorithm::ES256, EncodingKey::from_ec_pem(&pem).unwrap()),
        _ => (Algorithm::EdDSA, EncodingKey::from_ed_pem(&pem).unwrap()),
    };
    signed(alg, kid, claims, &key)
}

pub fn signed(alg: Algorithm, kid: Option<&str>, claims: &Value, key: &EncodingKey) -> String {
    let mut h = Header::new(alg);
    h.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&h, claims, key).unwrap()
}

/// `hello` with `token`: `Ok` on `welcome`, else the close code and the error's message.
pub async fn try_token(addr: SocketAddr, token: &str) -> Result<(), String> {
    let mut c = Raw::connect(&format!("ws://{addr}/ws")).await;
    c.send(json!({"op": "hello", "token": token})).await;
    let mut message = String::new();
    loop {
        match tokio::time::timeout(common::WAIT, c.ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                match v["op"].as_str() {
                    Some("welcome") => return Ok(()),
                    Some("error") => {
                        assert_eq!(v["code"], "unauthorized", "{v}");
                        message = v["message"].as_str().unwrap_or("").to_owned();
                    }
                    _ => {}
                }
            }
            Ok(Some(Ok(Message::Close(Some(f))))) => {
                return Err(format!("{}: {message}", u16::from(f.code)));
            }
            Ok(Some(Ok(_))) => {}
            other => panic!("no answer to hello: {other:?}"),
        }
    }
}

pub async fn accepted(addr: SocketAddr, token: &str, what: &str) {
    if let Err(e) = try_token(addr, token).await {
        panic!("{what}: refused ({e})");
    }
}

/// Refused with close 4001; returns the error's message.
pub async fn refused(addr: SocketAddr, token: &str, what: &str) -> String {
    match try_token(addr, token).await {
        Ok(()) => panic!("{what}: accepted"),
        Err(e) => {
            assert!(e.starts_with("4001: "), "{what}: {e}");
            e
        }
    }
}

/// The status of an HTTP publish with `token` as the bearer.
pub async fn http_publish(addr: SocketAddr, token: &str) -> u16 {
    http()
        .post(format!("http://{addr}/v1/publish"))
        .bearer_auth(token)
        .json(&json!({"topic": "x/1", "data": 1}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// A JWKS endpoint: serves the keys it is given, or any status and body; counts requests.
pub struct Jwks {
    addr: SocketAddr,
    state: Arc<JwksState>,
    task: tokio::task::JoinHandle<()>,
}

struct JwksState {
    answer: Mutex<(u16, String)>,
    hits: AtomicUsize,
}

impl Jwks {
    pub async fn start(keys: &[&str]) -> Jwks {
        let state = Arc::new(JwksState {
            answer: Mutex::new((200, String::new())),
            hits: AtomicUsize::new(0),
        });
        let app = axum::Router::new()
            .route(
                "/jwks.json",
                axum::routing::get(|State(s): State<Arc<JwksState>>| async move {
                    s.hits.fetch_add(1, Ordering::SeqCst);
                    let (status, body) = s.answer.lock().clone();
                    (StatusCode::from_u16(status).unwrap(), body)
                }),
            )
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let jwks = Jwks { addr, state, task };
        jwks.serve(keys);
        jwks
    }

    pub fn url(&self) -> String {
        format!("http://{}/jwks.json", self.addr)
    }

    pub fn serve(&self, keys: &[&str]) {
        let keys: Vec<Value> = keys.iter().map(|k| jwk(k)).collect();
        self.answer(200, &json!({ "keys": keys }).to_string());
    }

    pub fn answer(&self, status: u16, body: &str) {
        *self.state.answer.lock() = (status, body.to_owned());
    }

    pub fn hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }

    /// Waits until the server has been asked `n` times in all.
    pub async fn wait_hits(&self, n: usize) {
        let deadline = Instant::now() + common::WAIT;
        while self.hits() < n {
            assert!(Instant::now() < deadline, "{} hits, not {n}", self.hits());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops listening: connections are refused from now on.
    pub async fn stop(&self) {
        self.task.abort();
        while tokio::net::TcpStream::connect(self.addr).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

pub fn jwks_config(url: &str, refresh: Duration) -> Config {
    let mut c = config();
    c.auth = Some(AuthConfig {
        jwks_url: Some(url.to_owned()),
        jwks_refresh: refresh,
        ..AuthConfig::default()
    });
    c
}
