//! The writer task of a connection: drains control frames and the session's messages into
//! the socket in batches (`feed` many, `flush` once).
//!
//! Message frames are assembled from the event's shared body into one buffer per batch and
//! sent as raw text frames, so nothing is re-validated or re-encoded per recipient.

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use futures_util::SinkExt;
use futures_util::stream::SplitSink;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

use super::conn::Conn;
use crate::protocol::{ByeFrame, GapFrame, GapReason, ServerFrame, close};
use crate::session::{Batch, Close, Drained};

/// Messages taken from the session per round (bounded so control frames are not starved).
const BATCH: usize = 256;
/// How long final words (`bye`, a close frame) may take before the socket is dropped.
const FAREWELL: Duration = Duration::from_secs(2);

pub(super) type Sink<S> = SplitSink<WebSocketStream<S>, Message>;

/// Why the writer stopped writing.
enum Stop {
    /// A close was requested (slow consumer, protocol error, heartbeat, …).
    Close(Close),
    /// Server shutdown: say `bye`.
    Shutdown,
    /// The socket failed or the reader ended.
    Gone,
}

pub(super) async fn run<S>(mut sink: Sink<S>, conn: Arc<Conn>, heartbeat: Duration)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let stop = pump(&mut sink, &conn, heartbeat).await;
    let farewell = async {
        match stop {
            Stop::Shutdown => {
                let bye = ServerFrame::Bye(ByeFrame {
                    reason: "shutdown".into(),
                    retry_ms: 1000,
                });
                let _ = sink.feed(Message::text(bye.encode())).await;
                let _ = sink.send(close_msg(close::SHUTDOWN, "shutdown")).await;
            }
            Stop::Close(c) => {
                if let Some(words) = c.last_words {
                    let _ = sink.feed(Message::text(words)).await;
                }
                let _ = sink.send(close_msg(c.code, &c.reason)).await;
            }
            // Flush a close reply tungstenite may have queued after the peer's close.
            Stop::Gone => {
                let _ = sink.flush().await;
            }
        }
    };
    let _ = tokio::time::timeout(FAREWELL, farewell).await;
    conn.done.cancel();
}

fn close_msg(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code: code.into(),
        reason: reason.into(),
    }))
}

async fn pump<S>(sink: &mut Sink<S>, conn: &Conn, heartbeat: Duration) -> Stop
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut drained = Drained::default();
    let mut batch = Batch::default();
    let mut buf = BytesMut::new();
    let mut lens: Vec<usize> = Vec::new();
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat);
    loop {
        let mut pinged = false;
        tokio::select! {
            biased;
            _ = conn.shutdown.cancelled() => return Stop::Shutdown,
            _ = conn.done.cancelled() => return Stop::Gone,
            _ = conn.outbox.woken() => {}
            _ = ping.tick() => {
                if guarded(conn, sink.feed(Message::Ping(Default::default()))).await.is_err() {
                    return stop_reason(conn);
                }
                pinged = true;
            }
        }
        // Write everything pending, flushing after each batch, until nothing is left.
        loop {
            conn.outbox.drain(&mut drained);
            let mut wrote = std::mem::take(&mut pinged) || !drained.control.is_empty();
            for frame in drained.control.drain(..) {
                if guarded(conn, sink.feed(Message::text(frame)))
                    .await
                    .is_err()
                {
                    return stop_reason(conn);
                }
            }
            if let Some(c) = drained.close.take() {
                return Stop::Close(c);
            }
            if let Some(session) = conn.session() {
                batch.clear();
                session.take(&mut batch, BATCH);
                if let Some((from_seq, to_seq)) = batch.gap {
                    let gap = ServerFrame::Gap(GapFrame {
                        from_seq,
                        to_seq,
                        reason: GapReason::Overflow,
                    });
                    if guarded(conn, sink.feed(Message::text(gap.encode())))
                        .await
                        .is_err()
                    {
                        return stop_reason(conn);
                    }
                    wrote = true;
                }
                // Each frame is a slice of one shared buffer: one allocation per batch.
                for e in &batch.entries {
                    let before = buf.len();
                    e.event.write_msg(e.seq, e.how, &mut buf);
                    lens.push(buf.len() - before);
                }
                let mut rest = buf.split().freeze();
                // One guard around the whole batch, not one per frame: a guard is a `select!`
                // over three wakers, which cost more than buffering a frame (feeding only
                // waits when the socket is full, and then the guard is what ends the wait).
                let feed_all = async {
                    for len in lens.drain(..) {
                        let frame = rest.split_to(len);
                        let msg =
                            Message::Frame(Frame::message(frame, OpCode::Data(Data::Text), true));
                        sink.feed(msg).await?;
                    }
                    Ok::<(), tokio_tungstenite::tungstenite::Error>(())
                };
                if guarded(conn, feed_all).await.is_err() {
                    return stop_reason(conn);
                }
                lens.clear();
                wrote |= !batch.entries.is_empty();
            }
            if !wrote {
                break;
            }
            if guarded(conn, sink.flush()).await.is_err() {
                return stop_reason(conn);
            }
        }
    }
}

/// After a write failed or was interrupted: why.
fn stop_reason(conn: &Conn) -> Stop {
    if conn.shutdown.is_cancelled() {
        return Stop::Shutdown;
    }
    let mut d = Drained::default();
    conn.outbox.drain(&mut d);
    match d.close {
        Some(c) => Stop::Close(c),
        None => Stop::Gone,
    }
}

/// Runs one socket write, giving up when the connection is asked to close or the server
/// shuts down meanwhile: a client that stopped reading must not pin its writer forever.
async fn guarded<F, T, E>(conn: &Conn, write: F) -> Result<T, ()>
where
    F: std::future::Future<Output = Result<T, E>>,
{
    tokio::pin!(write);
    loop {
        tokio::select! {
            r = &mut write => return r.map_err(|_| ()),
            _ = conn.shutdown.cancelled() => return Err(()),
            _ = conn.done.cancelled() => return Err(()),
            _ = conn.outbox.woken() => {
                if conn.outbox.is_closing() {
                    return Err(());
                }
                // A wake for new messages: they are picked up after this write.
            }
        }
    }
}
