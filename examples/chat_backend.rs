//! A chat backend for Herald: the start of your own. Herald asks it who may connect (by its
//! login cookie), which rooms they may read and what they may post (it moderates), forwards
//! `rpc` calls to it, and tells it what happens (webhooks). PROTOCOL.md §10 has the wire
//! format; examples/chat_backend.toml is the Herald config that points here.
//!
//! ```text
//! cargo run --example chat_backend                      # this, on 127.0.0.1:9000
//! cargo run -- --config examples/chat_backend.toml      # Herald, on 127.0.0.1:7400
//! open http://127.0.0.1:7400/?backend=http://127.0.0.1:9000#chat
//! ```
//!
//! Browser routes (`/login`, `/logout`, `/me`) answer the web app's origin only (CORS with
//! credentials); `/herald/*` is for Herald: keep it off the public network.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use clap::Parser;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::Sha256;

#[derive(Parser)]
#[command(about = "A chat backend for Herald's proxies and webhooks")]
struct Args {
    /// Address to listen on (Herald's config points its proxies and webhooks here).
    #[arg(long, env = "CHAT_BACKEND_LISTEN", default_value = "127.0.0.1:9000")]
    listen: SocketAddr,
    /// The web app's origin: the only one that may log in from a browser and connect with
    /// the cookie.
    #[arg(
        long,
        env = "CHAT_BACKEND_ORIGIN",
        default_value = "http://127.0.0.1:7400"
    )]
    origin: String,
    /// The `secret` of Herald's `[[webhooks]]`: event batches not signed with it are refused.
    #[arg(
        long,
        env = "CHAT_BACKEND_WEBHOOK_SECRET",
        default_value = "chat-example-secret"
    )]
    webhook_secret: String,
    /// Users who may read and write `chat/admin` (comma-separated).
    #[arg(long, env = "CHAT_BACKEND_ADMINS", value_delimiter = ',')]
    admins: Vec<String>,
}

const COOKIE: &str = "chat_user";
const MAX_TEXT: usize = 500;
const BAD_WORDS: &[&str] = &["darn", "heck", "frak"];
/// What the `rooms` rpc lists (admins also get `admin`).
const ROOMS: &[&str] = &["general", "random"];

struct App {
    /// Signs the login cookie. Random per process: a restart logs everybody out. A real
    /// backend keeps its key (and real sessions) where a restart does not lose them.
    cookie_key: [u8; 32],
    origin: String,
    webhook_secret: String,
    admins: Vec<String>,
    /// Server-side message ids: this process's start time and a counter.
    boot: u128,
    next_id: AtomicU64,
}

type Shared = State<Arc<App>>;

/// HMAC-SHA256 of `bytes`, ready to finalize or verify.
fn hmac(key: &[u8], bytes: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(bytes);
    mac
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

impl App {
    /// `name.<hex HMAC(name)>`: only this backend can make one, so the name can be trusted.
    fn cookie_value(&self, name: &str) -> String {
        let mac = hmac(&self.cookie_key, name.as_bytes());
        format!("{name}.{}", hex(&mac.finalize().into_bytes()))
    }

    /// The logged-in user of a `Cookie` header, if its cookie is ours and intact.
    fn user(&self, cookies: &str) -> Option<String> {
        cookies.split(';').find_map(|c| {
            let (name, sig) = c
                .trim()
                .strip_prefix(COOKIE)?
                .strip_prefix('=')?
                .rsplit_once('.')?;
            let mac = hmac(&self.cookie_key, name.as_bytes());
            // verify_slice compares in constant time: no guessing a signature byte by byte.
            mac.verify_slice(&unhex(sig)?).ok()?;
            Some(name.to_owned())
        })
    }

    fn is_admin(&self, user: Option<&str>) -> bool {
        user.is_some_and(|u| self.admins.iter().any(|a| a == u))
    }
}

fn deny(code: &str, message: impl Into<String>) -> Json<Value> {
    Json(json!({"allow": false, "code": code, "message": message.into()}))
}

// ---- the browser's routes -----------------------------------------------------------------

#[derive(Deserialize)]
struct Login {
    name: String,
}

/// Names go into the cookie and the chat as they are: keep them plain.
fn valid_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// `POST /login {"name"}`: no password in this example; put yours here.
async fn login(State(app): Shared, Json(body): Json<Login>) -> Response {
    if !valid_name(&body.name) {
        let error = "a name is 1 to 32 letters, digits, - or _";
        return (StatusCode::BAD_REQUEST, Json(json!({"error": error}))).into_response();
    }
    // HttpOnly: page scripts never see it. SameSite=Strict: a page of another site cannot
    // make the browser send it, to us or to Herald (the WebSocket gets it: cookies are per
    // host, not per port, so the one set here goes to Herald on the same host).
    let cookie = format!(
        "{COOKIE}={}; Path=/; HttpOnly; SameSite=Strict",
        app.cookie_value(&body.name)
    );
    println!("login {}", body.name);
    (
        [(header::SET_COOKIE, cookie)],
        Json(json!({"user": body.name})),
    )
        .into_response()
}

async fn logout() -> Response {
    let cookie = format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    ([(header::SET_COOKIE, cookie)], StatusCode::NO_CONTENT).into_response()
}

/// `GET /me`: who the cookie says, or `null` (the page cannot read an HttpOnly cookie).
async fn me(State(app): Shared, headers: HeaderMap) -> Json<Value> {
    let cookies = headers.get(header::COOKIE).and_then(|v| v.to_str().ok());
    Json(json!({"user": cookies.and_then(|c| app.user(c))}))
}

/// CORS for the web app's origin, with credentials so that its `fetch` may carry and receive
/// the cookie. `Json` bodies need `content-type: application/json`, which another site cannot
/// send without this preflight: that keeps its forms from logging a visitor in as someone.
async fn cors(State(app): Shared, req: Request, next: Next) -> Response {
    let allowed = req
        .headers()
        .get(header::ORIGIN)
        .is_some_and(|o| o == app.origin.as_str());
    let mut res = if req.method() == Method::OPTIONS {
        StatusCode::NO_CONTENT.into_response()
    } else {
        next.run(req).await
    };
    let h = res.headers_mut();
    h.insert(header::VARY, HeaderValue::from_static("origin"));
    if allowed {
        let origin = HeaderValue::from_str(&app.origin).expect("checked equal to a header");
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        h.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("content-type"),
        );
    }
    res
}

// ---- Herald's proxies ----------------------------------------------------------------------

/// At `hello`: the cookie of the WebSocket upgrade says who connects.
async fn connect(State(app): Shared, Json(req): Json<Value>) -> Json<Value> {
    let headers = &req["headers"];
    // A browser always sends Origin: refuse other sites' pages (cross-site WebSocket
    // hijacking). Programs send none and are judged by their cookie alone.
    if let Some(origin) = headers["origin"].as_str()
        && origin != app.origin
    {
        return deny("forbidden", format!("pages of {origin} may not connect"));
    }
    match headers["cookie"].as_str().and_then(|c| app.user(c)) {
        Some(name) => Json(json!({
            "allow": true,
            "user": name,
            "info": {"name": name},
            "publish": ["chat/**"],
            "subscribe": ["chat/**", "$presence/chat/**"],
        })),
        None => deny("unauthorized", "log in first"),
    }
}

/// The room of a topic or pattern `chat/<room>/…` (also `$presence/chat/<room>`).
fn room_of(s: &str) -> Option<&str> {
    let s = s.strip_prefix("$presence/").unwrap_or(s);
    s.strip_prefix("chat/")?.split('/').next()
}

/// At `sub`: the connect answer let everyone subscribe to `chat/**`; here the admin room is
/// kept to admins. A wildcard room could reach it, so others name one room at a time.
/// Only `sub` is asked: `history` and `presence` go by the connect answer's lists, so what
/// must stay secret belongs outside them (e.g. `staff/**`, granted to admins only).
async fn subscribe(State(app): Shared, Json(req): Json<Value>) -> Json<Value> {
    if app.is_admin(req["user"].as_str()) {
        return Json(json!({"allow": true}));
    }
    match room_of(req["pattern"].as_str().unwrap_or_default()) {
        Some("admin") => deny("forbidden", "chat/admin is for admins only"),
        Some(room) if !room.contains(['*', '?', '[', '{']) => Json(json!({"allow": true})),
        _ => deny("forbidden", "subscribe to one room at a time: chat/<room>"),
    }
}

/// Replaces each bad word (whole words, any case) by as many asterisks.
fn censor(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(char::is_alphanumeric) {
        out.push_str(&rest[..start]);
        rest = &rest[start..];
        let end = rest
            .find(|c: char| !c.is_alphanumeric())
            .unwrap_or(rest.len());
        let word = &rest[..end];
        if BAD_WORDS.iter().any(|b| word.eq_ignore_ascii_case(b)) {
            out.extend(std::iter::repeat_n('*', word.chars().count()));
        } else {
            out.push_str(word);
        }
        rest = &rest[end..];
    }
    out + rest
}

/// At every publish to `chat/**`: what the answer's `data` says is what subscribers get.
async fn publish(State(app): Shared, Json(req): Json<Value>) -> Json<Value> {
    // HTTP publishes (without a login) come with no user.
    let Some(user) = req["user"].as_str() else {
        return deny("unauthorized", "log in first");
    };
    let topic = req["topic"].as_str().unwrap_or_default();
    if room_of(topic) == Some("admin") && !app.is_admin(Some(user)) {
        return deny("forbidden", "chat/admin is for admins only");
    }
    let Value::Object(mut data) = req["data"].clone() else {
        return deny("bad_request", "a chat message is a JSON object");
    };
    // Nobody speaks for someone else: who sent it, from which session, is ours to say.
    data.insert("from".into(), user.into());
    data.insert("session".into(), req["session"].clone());
    // A room's messages are on `chat/<room>`; deeper topics (the web app's
    // `chat/<room>/roster`) are the app's own signals and only get `from`.
    if topic.matches('/').count() == 1 {
        let text = data
            .get("text")
            .and_then(Value::as_str)
            .unwrap_or("")
            .trim();
        if text.is_empty() {
            return deny("bad_request", "empty message");
        }
        if text.chars().count() > MAX_TEXT {
            return deny("too_large", format!("at most {MAX_TEXT} characters"));
        }
        let id = app.next_id.fetch_add(1, Ordering::Relaxed);
        data.insert("text".into(), censor(text).into());
        data.insert("id".into(), format!("{}-{id}", app.boot).into());
    }
    Json(json!({"allow": true, "data": data}))
}

/// Every `rpc {method, data}`: `data` is the `reply`, `error` an `error` frame.
async fn rpc(State(app): Shared, Json(req): Json<Value>) -> Json<Value> {
    let user = req["user"].as_str();
    let admin = app.is_admin(user);
    match req["method"].as_str().unwrap_or_default() {
        "whoami" => Json(json!({"data": {"user": user, "admin": admin}})),
        "rooms" => {
            let admin_room = admin.then_some("admin");
            let rooms: Vec<&str> = ROOMS.iter().copied().chain(admin_room).collect();
            Json(json!({"data": rooms}))
        }
        other => Json(json!({"error": {"code": "not_found",
            "message": format!("no method {other:?}: try whoami or rooms")}})),
    }
}

/// Webhooks: batches of `{"id","type","ts","data"}`, signed with the shared secret. Delivery
/// is at least once (a batch is sent again until answered 2xx): a real backend skips ids it
/// has seen.
async fn events(State(app): Shared, headers: HeaderMap, body: Bytes) -> StatusCode {
    let sig = headers
        .get("herald-signature")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("sha256="))
        .and_then(unhex);
    let mac = hmac(app.webhook_secret.as_bytes(), &body);
    if sig.is_none_or(|s| mac.verify_slice(&s).is_err()) {
        eprintln!("webhook refused: bad or missing Herald-Signature");
        return StatusCode::UNAUTHORIZED;
    }
    let Ok(batch) = serde_json::from_slice::<Vec<Value>>(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    for e in batch {
        println!("event {} {}", e["type"].as_str().unwrap_or("?"), e["data"]);
    }
    StatusCode::NO_CONTENT
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let app = Arc::new(App {
        cookie_key: rand::random(),
        origin: args.origin.trim_end_matches('/').to_owned(),
        webhook_secret: args.webhook_secret,
        admins: args.admins,
        boot: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
        next_id: AtomicU64::new(1),
    });
    let browser = Router::new()
        .route("/login", post(login))
        .route("/logout", post(logout))
        .route("/me", get(me))
        .layer(middleware::from_fn_with_state(app.clone(), cors));
    let herald = Router::new()
        .route("/herald/connect", post(connect))
        .route("/herald/subscribe", post(subscribe))
        .route("/herald/publish", post(publish))
        .route("/herald/rpc", post(rpc))
        .route("/herald/events", post(events));
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    // The real address (with `--listen 127.0.0.1:0`, the port picked), as Herald says it.
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, browser.merge(herald).with_state(app)).await
}
