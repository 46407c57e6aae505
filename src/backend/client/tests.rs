//! The client against a raw TCP backend that answers as told: pooling, a closed idle
//! connection sent again, timeouts.

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;

/// How the test backend answers each request.
#[derive(Clone, Copy)]
enum Mode {
    /// 200 with `{"ok":true}`, keeping the connection.
    KeepAlive,
    /// 200, then closes the connection.
    CloseAfter,
    /// `Connection: close` in the answer.
    SaysClose,
    /// 500, keeping the connection.
    Error,
    /// Reads the request and never answers.
    Silent,
}

struct Backend {
    url: String,
    connections: Arc<AtomicUsize>,
    requests: Arc<Mutex<Vec<String>>>,
}

async fn backend(mode: Mode) -> Backend {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook?x=1", listener.local_addr().unwrap());
    let connections = Arc::new(AtomicUsize::new(0));
    let requests = Arc::new(Mutex::new(Vec::new()));
    let (c, r) = (connections.clone(), requests.clone());
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            c.fetch_add(1, Ordering::SeqCst);
            let r = r.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    // One request: a head and a Content-Length body.
                    let mut chunk = [0; 4096];
                    let end = loop {
                        if let Some(i) = memchr::memmem::find(&buf, b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&buf[..i]).to_lowercase();
                            let len: usize = head
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length: "))
                                .map_or(0, |v| v.trim().parse().unwrap());
                            if buf.len() >= i + 4 + len {
                                break i + 4 + len;
                            }
                        }
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    r.lock()
                        .push(String::from_utf8_lossy(&buf[..end]).into_owned());
                    buf.drain(..end);
                    let answer: &[u8] = match mode {
                        Mode::Silent => {
                            let _ = s.read(&mut chunk).await;
                            return;
                        }
                        Mode::Error => b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n",
                        Mode::SaysClose => {
                            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 11\r\n\r\n{\"ok\":true}"
                        }
                        _ => b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n{\"ok\":true}",
                    };
                    if s.write_all(answer).await.is_err() {
                        return;
                    }
                    if matches!(mode, Mode::CloseAfter | Mode::SaysClose) {
                        return;
                    }
                }
            });
        }
    });
    Backend {
        url,
        connections,
        requests,
    }
}

async fn post(c: &Client, to: &Endpoint, body: &'static str) -> Result<Bytes, CallError> {
    let sig = (
        HeaderName::from_static("herald-signature"),
        HeaderValue::from_static("sha256=ab"),
    );
    c.post(to, body.as_bytes(), &[sig], Duration::from_secs(2))
        .await
        .0
}

#[tokio::test]
async fn requests_are_well_formed_and_share_one_connection() {
    let b = backend(Mode::KeepAlive).await;
    let (c, to) = (Client::new(), Endpoint::parse(&b.url).unwrap());
    for _ in 0..20 {
        assert_eq!(
            &post(&c, &to, r#"{"a":1}"#).await.unwrap()[..],
            br#"{"ok":true}"#
        );
    }
    assert_eq!(b.connections.load(Ordering::SeqCst), 1);
    let requests = b.requests.lock();
    assert_eq!(requests.len(), 20);
    let r = &requests[0];
    let port = to.port;
    assert!(r.starts_with("POST /hook?x=1 HTTP/1.1\r\n"), "{r}");
    assert!(
        r.contains(&format!("\r\nHost: 127.0.0.1:{port}\r\n")),
        "{r}"
    );
    assert!(r.contains("\r\nContent-Type: application/json\r\n"), "{r}");
    assert!(r.contains("\r\nherald-signature: sha256=ab\r\n"), "{r}");
    assert!(r.ends_with("\r\nContent-Length: 7\r\n\r\n{\"a\":1}"), "{r}");
}

#[tokio::test]
async fn calls_at_once_open_connections_that_are_then_reused() {
    let b = backend(Mode::KeepAlive).await;
    let (c, to) = (Client::new(), Endpoint::parse(&b.url).unwrap());
    let round = || futures_util::future::join_all((0..8).map(|_| post(&c, &to, "{}")));
    for r in round().await {
        r.unwrap();
    }
    let opened = b.connections.load(Ordering::SeqCst);
    assert!((1..=8).contains(&opened), "{opened}");
    for r in round().await {
        r.unwrap();
    }
    assert_eq!(b.connections.load(Ordering::SeqCst), opened);
}

#[tokio::test]
async fn a_connection_the_backend_closed_is_replaced_without_failing_the_call() {
    let b = backend(Mode::CloseAfter).await;
    let (c, to) = (Client::new(), Endpoint::parse(&b.url).unwrap());
    for i in 1..=5 {
        post(&c, &to, "{}").await.unwrap();
        // Let the close arrive before the next call, or not: both must work.
        if i % 2 == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert_eq!(b.connections.load(Ordering::SeqCst), 5);
    assert_eq!(
        b.requests.lock().len(),
        5,
        "each request reached the backend once"
    );
}

#[tokio::test]
async fn connection_close_and_errors() {
    let b = backend(Mode::SaysClose).await;
    let (c, to) = (Client::new(), Endpoint::parse(&b.url).unwrap());
    post(&c, &to, "{}").await.unwrap();
    post(&c, &to, "{}").await.unwrap();
    assert_eq!(b.connections.load(Ordering::SeqCst), 2);

    let b = backend(Mode::Error).await;
    let to = Endpoint::parse(&b.url).unwrap();
    assert!(matches!(
        post(&c, &to, "{}").await,
        Err(CallError::Status(500))
    ));
    assert!(matches!(
        post(&c, &to, "{}").await,
        Err(CallError::Status(500))
    ));
    assert_eq!(
        b.connections.load(Ordering::SeqCst),
        1,
        "an error answer keeps the connection"
    );

    // Nothing listens on a port just freed.
    let port = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let to = Endpoint::parse(&format!("http://127.0.0.1:{port}/")).unwrap();
    assert!(matches!(
        post(&c, &to, "{}").await,
        Err(CallError::Connect(_))
    ));
}

#[tokio::test]
async fn a_silent_backend_times_out_and_its_connection_is_not_reused() {
    let b = backend(Mode::Silent).await;
    let (c, to) = (Client::new(), Endpoint::parse(&b.url).unwrap());
    for _ in 0..2 {
        let started = Instant::now();
        let (r, took) = c.post(&to, b"{}", &[], Duration::from_millis(100)).await;
        assert!(matches!(r, Err(CallError::Timeout(_))), "{r:?}");
        assert!(took >= Duration::from_millis(100) && started.elapsed() < Duration::from_secs(2));
    }
    assert_eq!(b.connections.load(Ordering::SeqCst), 2);
}

#[test]
fn endpoints() {
    let e = Endpoint::parse("http://[::1]:9000/x").unwrap();
    assert_eq!(
        (&*e.host, e.port, &*e.authority),
        ("::1", 9000, "[::1]:9000")
    );
    let e = Endpoint::parse(" http://backend/ ").unwrap();
    assert_eq!((&*e.host, e.port), ("backend", 80));
    assert!(String::from_utf8_lossy(&e.head).starts_with("POST / HTTP/1.1\r\nHost: backend\r\n"));
    let e = Endpoint::parse("http://user:secret@backend:81/x?y=1").unwrap();
    let head = String::from_utf8_lossy(&e.head).into_owned();
    assert!(
        head.starts_with("POST /x?y=1 HTTP/1.1\r\nHost: backend:81\r\n"),
        "{head}"
    );
    assert!(!head.contains("secret"));
    assert_eq!(&*e.authority, "backend:81");
    for bad in [
        "https://x/",
        "ftp://x/",
        "http:///x",
        "not a url",
        "/relative",
    ] {
        assert!(Endpoint::parse(bad).is_err(), "{bad}");
    }
}
