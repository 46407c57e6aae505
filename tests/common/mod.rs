//! Test harness: real servers on ephemeral ports and raw WebSocket clients.
#![allow(dead_code)]

pub mod redis;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use herald::{Config, Server, ShutdownHandle};

/// Unix seconds now, for token claims.
pub fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A JWT of `claims` signed HS256 with `secret` (what `[auth] hs256_secret` verifies).
pub fn hs256(secret: &str, claims: &Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

/// Default wait for a frame that should arrive.
pub const WAIT: Duration = Duration::from_secs(10);

/// An in-process server on 127.0.0.1:0.
pub struct TestServer {
    pub addr: SocketAddr,
    pub handle: ShutdownHandle,
    pub bus: herald::Bus,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

pub fn config() -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..Default::default()
    }
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::with_config(config()).await
    }

    pub async fn with_config(config: Config) -> TestServer {
        let server = Server::bind(config).await.expect("bind");
        let bus = server.bus();
        let (addr, handle, task) = server.spawn();
        TestServer {
            addr,
            handle,
            bus,
            task: Some(task),
        }
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    pub fn http(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn connect(&self) -> Raw {
        Raw::connect(&self.ws_url()).await
    }

    /// A connection that has said `hello` (a fresh session): what most tests start from.
    pub async fn client(&self) -> Raw {
        let mut c = self.connect().await;
        c.hello().await;
        c
    }

    /// Shuts down and waits for the drain.
    pub async fn stop(mut self) {
        self.handle.shutdown();
        if let Some(t) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.handle.shutdown();
    }
}

/// A raw protocol client: JSON frames in, JSON frames out, nothing hidden.
pub struct Raw {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Raw {
    pub async fn connect(url: &str) -> Raw {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("connect");
        Raw { ws }
    }

    pub async fn send(&mut self, v: Value) {
        self.ws
            .send(Message::text(v.to_string()))
            .await
            .expect("send");
    }

    pub async fn send_text(&mut self, t: &str) {
        self.ws
            .send(Message::text(t.to_owned()))
            .await
            .expect("send");
    }

    /// The next text frame as JSON (skips pings). Panics on timeout or close.
    pub async fn recv(&mut self) -> Value {
        match self.recv_within(WAIT).await {
            Some(v) => v,
            None => panic!("no frame within {WAIT:?}"),
        }
    }

    /// The next text frame, or `None` if nothing arrives in time. Panics on close.
    pub async fn recv_within(&mut self, wait: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let m = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .ok()?;
            match m {
                Some(Ok(Message::Text(t))) => {
                    return Some(serde_json::from_str(&t).expect("server frame is JSON"));
                }
                Some(Ok(Message::Close(c))) => panic!("closed: {c:?}"),
                Some(Ok(_)) => continue,
                Some(Err(e)) => panic!("socket error: {e}"),
                None => panic!("socket ended"),
            }
        }
    }

    /// The next frame with this `op` (earlier frames of other ops are skipped).
    pub async fn recv_op(&mut self, op: &str) -> Value {
        loop {
            let v = self.recv().await;
            if v["op"] == op {
                return v;
            }
        }
    }

    /// Reads until the server closes; returns the close code (and text frames seen before).
    pub async fn expect_close(&mut self) -> (u16, Vec<Value>) {
        let mut seen = Vec::new();
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => panic!("no close within {WAIT:?}; saw {seen:?}"),
                Ok(Some(Ok(Message::Close(c)))) => {
                    return (c.map(|c| u16::from(c.code)).unwrap_or(1005), seen);
                }
                Ok(Some(Ok(Message::Text(t)))) => seen.push(serde_json::from_str(&t).unwrap()),
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(e))) => panic!("socket error before close: {e}; saw {seen:?}"),
                Ok(None) => panic!("ended without close frame; saw {seen:?}"),
            }
        }
    }

    /// Says hello and returns the welcome.
    pub async fn hello(&mut self) -> Value {
        self.send(json!({"op": "hello"})).await;
        let w = self.recv().await;
        assert_eq!(w["op"], "welcome", "{w}");
        w
    }

    /// Subscribes and waits for the `ok`.
    pub async fn sub(&mut self, pattern: &str) -> Value {
        self.send(json!({"op": "sub", "id": "s", "pattern": pattern}))
            .await;
        let ok = self.recv_op_id("s").await;
        assert_eq!(ok["op"], "ok", "sub {pattern}: {ok}");
        ok
    }

    /// Publishes and waits for the `ok`.
    pub async fn publish(&mut self, topic: &str, data: Value) -> Value {
        self.send(json!({"op": "pub", "id": "p", "topic": topic, "data": data}))
            .await;
        let ok = self.recv_op_id("p").await;
        assert_eq!(ok["op"], "ok", "pub {topic}: {ok}");
        ok
    }

    /// The next `ok` or `error` answering `id` (messages in between are skipped).
    pub async fn recv_op_id(&mut self, id: &str) -> Value {
        loop {
            let v = self.recv().await;
            if (v["op"] == "ok" || v["op"] == "error") && v["id"] == id {
                return v;
            }
        }
    }

    /// Sends a request and returns the answer with its id.
    pub async fn request(&mut self, mut v: Value) -> Value {
        v["id"] = json!("r");
        self.send(v).await;
        self.recv_op_id("r").await
    }
}

/// A raw client whose socket receive buffer is small (4 KiB): once it stops reading, its
/// socket is full at once (with [`fill_sockets`]), and its backlog is the server's to hold.
pub async fn connect_small_window(addr: SocketAddr) -> Raw {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(addr).await.unwrap();
    let url = format!("ws://{addr}/ws");
    let (ws, _) = tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(stream))
        .await
        .unwrap();
    Raw { ws }
}

/// Messages [`fill_sockets`] publishes, and their size (under the default `max_frame`).
pub const FILL: u64 = 120;
pub const FILL_SIZE: usize = 60_000;

/// Publishes [`FILL`] messages of [`FILL_SIZE`] bytes (7 MB) to `topic` and waits for the
/// last one's `ok`: more than a small-window socket and the server's send buffer hold (the
/// kernel grows that one up to `tcp_wmem`, 4 MiB), so that a subscriber of `topic` that
/// does not read has a full socket, and its writer waits for it: a stalled reader.
pub async fn fill_sockets(p: &mut Raw, topic: &str) {
    let big = "b".repeat(FILL_SIZE);
    for i in 1..=FILL {
        let mut f = json!({"op": "pub", "topic": topic, "data": big});
        if i == FILL {
            f["id"] = json!("filled");
        }
        p.ws.feed(Message::text(f.to_string())).await.unwrap();
    }
    p.ws.flush().await.unwrap();
    let ok = p.recv_op_id("filled").await;
    assert_eq!(ok["op"], "ok", "{ok}");
}

/// The `herald` binary, started with arguments; reads its log until it listens.
pub struct Binary {
    pub child: Child,
    pub addr: SocketAddr,
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Binary {
    pub fn spawn(args: &[&str]) -> Binary {
        Self::spawn_env(args, &[])
    }

    pub fn spawn_env(args: &[&str], env: &[(&str, &str)]) -> Binary {
        Self::spawn_program(env!("CARGO_BIN_EXE_herald"), args, env)
    }

    /// Like [`Binary::spawn_env`] through another program, e.g. a shell that sets limits
    /// and then `exec`s the binary (the log and the address are read the same way).
    pub fn spawn_program(program: &str, args: &[&str], env: &[(&str, &str)]) -> Binary {
        let mut cmd = Command::new(program);
        cmd.args(args)
            .env("RUST_LOG", "info")
            .env_remove("HERALD_LISTEN")
            .env_remove("HERALD_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn herald");
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        for pipe in [
            Box::new(stdout) as Box<dyn std::io::Read + Send>,
            Box::new(stderr),
        ] {
            let log = log.clone();
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    // Logged before the address is handed over, so that a test that has the
                    // address also sees the line.
                    log.lock().unwrap().push(line.clone());
                    if let Some(i) = line.find("listening on http://") {
                        let rest = &line[i + "listening on http://".len()..];
                        let addr: String = rest
                            .chars()
                            .take_while(|c| !c.is_whitespace() && *c != '"')
                            .collect();
                        let _ = tx.send(addr);
                    }
                }
            });
        }
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("herald did not start: {:?}", log.lock().unwrap()));
        Binary {
            child,
            addr: addr.parse().expect("listen address"),
            log,
        }
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    /// Waits for the process to exit; returns its exit status code.
    pub fn wait(&mut self, limit: Duration) -> Option<i32> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            if std::time::Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free port for a server that must come back on it. Taken below the kernel's ephemeral
/// range where there is one, so that no server started on port 0 meanwhile (by this test or
/// another) can be handed it while it is free.
pub fn fixed_port() -> String {
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .filter(|low| *low > 11_000);
    let Some(low) = low else {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        return l.local_addr().unwrap().to_string();
    };
    let span = u32::from(low - 10_000);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
        ^ std::process::id();
    for i in 0..span {
        let port = 10_000 + ((seed.wrapping_add(i.wrapping_mul(7919))) % span) as u16;
        let addr = format!("127.0.0.1:{port}");
        if std::net::TcpListener::bind(&addr).is_ok() {
            return addr;
        }
    }
    panic!("no free port below {low}");
}

/// A JSON HTTP client.
pub fn http() -> reqwest::Client {
    reqwest::Client::new()
}

/// `GET url` and its JSON body (panics on a transport error or a body that is not JSON).
pub async fn get_json<T: serde::de::DeserializeOwned>(url: impl reqwest::IntoUrl) -> T {
    http().get(url).send().await.unwrap().json().await.unwrap()
}

/// The body of a GET as text (e.g. `/metrics`).
pub async fn get_text(url: impl reqwest::IntoUrl) -> String {
    http().get(url).send().await.unwrap().text().await.unwrap()
}

/// POSTs `body` as JSON and parses the answer (whatever its status).
pub async fn post_json<T: serde::de::DeserializeOwned>(
    url: impl reqwest::IntoUrl,
    body: &impl serde::Serialize,
) -> T {
    http()
        .post(url)
        .json(body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// What a [`Proxy`] does with the bytes of one direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Passes them on.
    Forward,
    /// Reads and discards them (a peer that hears but is never heard).
    Discard,
    /// Stops reading and writing, and sends no FIN: the peer vanished (a half-open TCP
    /// connection, as after a cable pull or a NAT timeout).
    Freeze,
}

/// A TCP proxy in front of a server, for faults a well-behaved socket cannot show: each
/// direction of each proxied connection can be forwarded, discarded or frozen at any time.
/// Dropping the proxy closes everything.
pub struct Proxy {
    pub addr: SocketAddr,
    /// Client → server.
    up: std::sync::Arc<tokio::sync::watch::Sender<Flow>>,
    /// Server → client.
    down: std::sync::Arc<tokio::sync::watch::Sender<Flow>>,
    tasks: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Proxy {
    pub async fn start(target: SocketAddr) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = std::sync::Arc::new(tokio::sync::watch::channel(Flow::Forward).0);
        let down = std::sync::Arc::new(tokio::sync::watch::channel(Flow::Forward).0);
        let tasks = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (u, d, t) = (up.clone(), down.clone(), tasks.clone());
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(target).await else {
                    continue;
                };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                let mut tasks = t.lock().unwrap();
                tasks.push(tokio::spawn(pump(cr, sw, u.subscribe())));
                tasks.push(tokio::spawn(pump(sr, cw, d.subscribe())));
            }
        });
        tasks.lock().unwrap().push(accept);
        Proxy {
            addr,
            up,
            down,
            tasks,
        }
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// Sets what happens to client → server bytes from now on.
    pub fn up(&self, flow: Flow) {
        self.up.send_replace(flow);
    }

    /// Sets what happens to server → client bytes from now on.
    pub fn down(&self, flow: Flow) {
        self.down.send_replace(flow);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }
}

/// One direction of a proxied connection. A frozen direction keeps both sockets open and
/// touches neither until the proxy is dropped.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut flow: tokio::sync::watch::Receiver<Flow>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if *flow.borrow_and_update() == Flow::Freeze {
            // Hold both halves; wake only if the flow changes.
            if flow.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
            continue;
        }
        let n = tokio::select! {
            r = from.read(&mut buf) => match r {
                Ok(0) | Err(_) => {
                    let forward = *flow.borrow() == Flow::Forward;
                    if forward {
                        let _ = to.shutdown().await;
                    }
                    std::future::pending::<()>().await;
                    return;
                }
                Ok(n) => n,
            },
            _ = flow.changed() => continue,
        };
        let now = *flow.borrow();
        match now {
            Flow::Forward => {
                if to.write_all(&buf[..n]).await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
            Flow::Discard | Flow::Freeze => {}
        }
    }
}
