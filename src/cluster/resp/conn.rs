//! Opening a connection: where to (from the same `redis://` URL redis-rs reads), and the
//! handshake (`AUTH`, `SELECT`) before a connection is handed over.

use std::path::PathBuf;
use std::time::Duration;

use bytes::BytesMut;
use redis::{ConnectionAddr, IntoConnectionInfo};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{Command, Reply, parse};
use crate::cluster::ClusterError;

/// Longest wait for a connection and its handshake.
const CONNECT: Duration = Duration::from_secs(1);

/// Where a Redis server is and how to log in.
#[derive(Debug, Clone)]
pub struct Endpoint {
    addr: Addr,
    username: Option<String>,
    password: Option<String>,
    db: i64,
}

#[derive(Debug, Clone)]
enum Addr {
    Tcp(String, u16),
    Unix(PathBuf),
}

impl Endpoint {
    pub fn parse(url: &str) -> Result<Endpoint, ClusterError> {
        let bad = |message: String| ClusterError::Url {
            url: url.to_owned(),
            message,
        };
        let info = url.into_connection_info().map_err(|e| bad(e.to_string()))?;
        let addr = match info.addr() {
            ConnectionAddr::Tcp(host, port) => Addr::Tcp(host.clone(), *port),
            ConnectionAddr::Unix(path) => Addr::Unix(path.clone()),
            _ => return Err(bad("TLS (rediss://) is not supported".into())),
        };
        let r = info.redis_settings();
        Ok(Endpoint {
            addr,
            username: r.username().map(str::to_owned),
            password: r.password().map(str::to_owned),
            db: r.db(),
        })
    }
}

/// The two halves of a connection, each owned by one task.
pub struct Stream {
    pub read: Box<dyn AsyncRead + Send + Unpin>,
    pub write: Box<dyn AsyncWrite + Send + Unpin>,
}

/// Connects and logs in. Whatever Redis sent after the handshake's answers stays in the
/// returned buffer for the reader.
pub async fn connect(at: &Endpoint) -> Result<(Stream, BytesMut), ClusterError> {
    tokio::time::timeout(CONNECT, open(at))
        .await
        .map_err(|_| ClusterError::Unavailable("no answer from Redis".into()))?
}

async fn open(at: &Endpoint) -> Result<(Stream, BytesMut), ClusterError> {
    let down = |e: std::io::Error| ClusterError::Unavailable(e.to_string());
    let mut stream = match &at.addr {
        Addr::Tcp(host, port) => {
            let s = tokio::net::TcpStream::connect((host.as_str(), *port))
                .await
                .map_err(down)?;
            s.set_nodelay(true).map_err(down)?;
            let (r, w) = s.into_split();
            Stream {
                read: Box::new(r),
                write: Box::new(w),
            }
        }
        Addr::Unix(path) => {
            let s = tokio::net::UnixStream::connect(path).await.map_err(down)?;
            let (r, w) = s.into_split();
            Stream {
                read: Box::new(r),
                write: Box::new(w),
            }
        }
    };
    let mut hello = Vec::new();
    let mut expect = 0;
    if let Some(pw) = &at.password {
        let mut c = Command::new("AUTH");
        if let Some(user) = &at.username {
            c.str(user);
        }
        c.str(pw).write_to(&mut hello);
        expect += 1;
    }
    if at.db != 0 {
        Command::new("SELECT")
            .int(at.db as u64)
            .write_to(&mut hello);
        expect += 1;
    }
    let mut buf = BytesMut::with_capacity(64 * 1024);
    if expect > 0 {
        stream.write.write_all(&hello).await.map_err(down)?;
        for _ in 0..expect {
            let reply = read_reply(&mut stream, &mut buf).await?;
            if let Some(e) = reply.error_text() {
                return Err(ClusterError::Redis(e));
            }
        }
    }
    Ok((stream, buf))
}

/// Reads until one whole reply is in `buf` and takes it.
pub(in crate::cluster) async fn read_reply(
    stream: &mut Stream,
    buf: &mut BytesMut,
) -> Result<Reply, ClusterError> {
    loop {
        if let Some(r) = parse(buf).map_err(|e| ClusterError::Redis(e.to_string()))? {
            return Ok(r);
        }
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(64 * 1024);
        }
        let n = stream
            .read
            .read_buf(buf)
            .await
            .map_err(|e| ClusterError::Unavailable(e.to_string()))?;
        if n == 0 {
            return Err(ClusterError::Unavailable("connection closed".into()));
        }
    }
}
