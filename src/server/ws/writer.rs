//! The writer task of a connection: drains control frames and the session's messages into
//! the socket in batches (`feed` many, `flush` once).
//!
//! Message frames are assembled from the event's shared body into one buffer per batch and
//! sent as raw text frames, so nothing is re-validated or re-encoded per recipient.
//!
//! Frames wait in a queue until the sink has room for them (`poll_ready`, then
//! `start_send`), so a write interrupted by shutdown loses nothing: on shutdown the writer
//! goes on from where it stopped, writes every message published before the shutdown, and
//! only then says `bye` (PROTOCOL.md §6, bounded by [`FAREWELL`]).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures_util::stream::SplitSink;
use futures_util::{FutureExt, SinkExt};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

use super::conn::Conn;
use crate::event::Delivery;
use crate::metrics::WriteTally;
use crate::protocol::{ByeFrame, GapFrame, GapReason, ServerFrame, close};
use crate::session::{Batch, Close, Drained};

/// Messages taken from the session per round (bounded so control frames are not starved).
const BATCH: usize = 256;
/// How long the shutdown flush, and then the final words (`bye`, a close frame), may each
/// take before the socket is dropped.
const FAREWELL: Duration = Duration::from_secs(2);

pub(super) type Sink<S> = SplitSink<WebSocketStream<S>, Message>;

/// Why the writer stopped writing.
enum Stop {
    /// A close was requested (slow consumer, protocol error, heartbeat, …).
    Close(Close),
    /// Server shutdown: flush, then say `bye`.
    Shutdown,
    /// The socket failed or the reader ended.
    Gone,
}

pub(super) async fn run<S>(mut sink: Sink<S>, conn: Arc<Conn>, heartbeat: Duration)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut w = Writer::default();
    let stop = w.pump(&mut sink, &conn, heartbeat).await;
    conn.metrics.connection_closed(match &stop {
        Stop::Shutdown => Some(close::SHUTDOWN),
        Stop::Close(c) => Some(c.code),
        Stop::Gone => None,
    });
    if let Stop::Shutdown = stop {
        let _ = tokio::time::timeout(FAREWELL, w.flush_for_shutdown(&mut sink, &conn)).await;
    }
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

/// A writer's reusable buffers (nothing is allocated per round once they have grown).
#[derive(Default)]
struct Writer {
    drained: Drained,
    batch: Batch,
    buf: BytesMut,
    lens: Vec<usize>,
    /// Frames built but not yet accepted by the sink, in order; a `msg` carries what its
    /// latency observation needs.
    queue: VecDeque<(Message, Option<(Delivery, Instant)>)>,
    /// `msg`s accepted by the sink since the last flush.
    unflushed: Vec<(Delivery, Instant)>,
    tally: WriteTally,
}

impl Writer {
    async fn pump<S>(&mut self, sink: &mut Sink<S>, conn: &Conn, heartbeat: Duration) -> Stop
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat);
        loop {
            tokio::select! {
                biased;
                _ = conn.shutdown.cancelled() => return Stop::Shutdown,
                _ = conn.done.cancelled() => return Stop::Gone,
                _ = conn.outbox.woken() => {}
                _ = ping.tick() => self.queue.push_back((Message::Ping(Default::default()), None)),
            }
            // Write everything pending, flushing after each batch, until nothing is left.
            loop {
                if let Some(c) = self.fill(conn) {
                    // What came before the close request goes out if the socket takes it
                    // now; a full socket (a slow consumer) is not waited for.
                    let _ =
                        tokio::time::timeout(Duration::ZERO, self.feed(sink, conn, false)).await;
                    return Stop::Close(c);
                }
                if self.queue.is_empty() {
                    break;
                }
                if self.feed(sink, conn, false).await.is_err()
                    || self.flush(sink, conn, false).await.is_err()
                {
                    return stop_reason(conn);
                }
            }
        }
    }

    /// On shutdown: writes what is still queued and every message the session held when the
    /// shutdown came (publishers may still be running; later messages are not waited for).
    async fn flush_for_shutdown<S>(&mut self, sink: &mut Sink<S>, conn: &Conn)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let last = conn.session().map_or(0, |s| s.last_seq());
        loop {
            let _ = self.fill(conn);
            if self.queue.is_empty() {
                return;
            }
            if self.feed(sink, conn, true).await.is_err()
                || self.flush(sink, conn, true).await.is_err()
            {
                return;
            }
            if self.batch.entries.last().is_some_and(|e| e.seq >= last) {
                return;
            }
        }
    }

    /// Queues the next round: control frames, then a gap and up to [`BATCH`] messages.
    /// Returns a requested close (nothing of the session is queued then).
    fn fill(&mut self, conn: &Conn) -> Option<Close> {
        conn.outbox.drain(&mut self.drained);
        for frame in self.drained.control.drain(..) {
            self.queue.push_back((Message::text(frame), None));
        }
        if let Some(c) = self.drained.close.take() {
            return Some(c);
        }
        let session = conn.session()?;
        self.batch.clear();
        session.take_for(&conn.outbox, &mut self.batch, BATCH);
        if let Some((from_seq, to_seq)) = self.batch.gap {
            let gap = ServerFrame::Gap(GapFrame {
                from_seq,
                to_seq,
                reason: GapReason::Overflow,
            })
            .encode();
            conn.metrics.gap(from_seq, to_seq);
            self.queue.push_back((Message::text(gap), None));
        }
        // Each frame is a slice of one shared buffer: one allocation per batch.
        for e in &self.batch.entries {
            let before = self.buf.len();
            e.event.write_msg(e.seq, e.how, &mut self.buf);
            self.lens.push(self.buf.len() - before);
        }
        let mut rest = self.buf.split().freeze();
        for (e, len) in self.batch.entries.iter().zip(self.lens.drain(..)) {
            let frame = rest.split_to(len);
            let msg = Message::Frame(Frame::message(frame, OpCode::Data(Data::Text), true));
            self.queue
                .push_back((msg, Some((e.how, e.event.published))));
        }
        None
    }

    /// Hands the queued frames to the sink. A frame leaves the queue only once the sink has
    /// accepted it, so an interrupted feed can be resumed without a loss.
    async fn feed<S>(&mut self, sink: &mut Sink<S>, conn: &Conn, draining: bool) -> Result<(), ()>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        while !self.queue.is_empty() {
            // Usually the sink has room at once: take it without building the guard (three
            // waker futures and a `select!` per frame showed in fan-out profiles). Only a
            // sink that must wait is guarded; polling it again there replaces the no-op waker.
            let ready = std::future::poll_fn(|cx| sink.poll_ready_unpin(cx)).now_or_never();
            match ready {
                Some(r) => r.map_err(|_| ())?,
                None => {
                    let ready = std::future::poll_fn(|cx| sink.poll_ready_unpin(cx));
                    guarded(conn, ready, draining).await?;
                }
            }
            let Some((msg, timed)) = self.queue.pop_front() else {
                break;
            };
            self.tally.bytes(msg.len());
            sink.start_send_unpin(msg).map_err(|_| ())?;
            if let Some(t) = timed {
                self.unflushed.push(t);
            }
        }
        Ok(())
    }

    /// Flushes the socket, then counts what it carried: one latency observation per message,
    /// one clock read per batch, the shared counters touched once.
    async fn flush<S>(&mut self, sink: &mut Sink<S>, conn: &Conn, draining: bool) -> Result<(), ()>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        guarded(conn, sink.flush(), draining).await?;
        let now = Instant::now();
        for (how, published) in self.unflushed.drain(..) {
            self.tally
                .message(how, now.saturating_duration_since(published));
        }
        conn.metrics.record_writes(&mut self.tally);
        Ok(())
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

/// Runs one socket write, giving up when the connection is asked to close, or (unless
/// `draining` for shutdown) when the server shuts down meanwhile: a client that stopped
/// reading must not pin its writer forever. A write that can complete does.
async fn guarded<F, T, E>(conn: &Conn, write: F, draining: bool) -> Result<T, ()>
where
    F: std::future::Future<Output = Result<T, E>>,
{
    tokio::pin!(write);
    loop {
        tokio::select! {
            biased;
            r = &mut write => return r.map_err(|_| ()),
            _ = conn.shutdown.cancelled(), if !draining => return Err(()),
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
