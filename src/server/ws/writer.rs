//! The writer task of a connection: drains control frames and the session's messages into
//! the socket in batches, one `write` per batch.
//!
//! The writer owns the sending half of the TCP stream; tungstenite only reads (see
//! [`super::ReadOnly`]). Server frames are unmasked, so a WebSocket frame is a 2–10-byte
//! header and the payload: each round's frames (control frames, a gap, up to [`BATCH`]
//! messages) are encoded straight into one buffer, a `msg` straight from the session's ring
//! (the per-recipient head `{"op":"msg","seq":N,` and the event's shared body), and the
//! buffer goes to the socket in as few `write`s as it takes. No frame is copied twice and
//! nothing is allocated per message.
//!
//! A round's bytes stay in the buffer until the socket has taken all of them, and how far
//! the socket got is kept, so a write interrupted (by a close request or shutdown) loses
//! nothing and never cuts a frame: on shutdown the writer goes on from where it stopped,
//! writes every message published before the shutdown, and only then says `bye`
//! (PROTOCOL.md §6, bounded by [`FAREWELL`]).
//!
//! Coalescing (`session.write_delay`): a writer that wrote messages less than the interval
//! ago waits out the rest of it before its next round, so that a steady stream goes out as
//! one `write` per interval instead of one per message (the syscall is most of the cost of a
//! delivery when nothing else batches them). A connection written to less often than that
//! never waits, nor do answers (control frames): only a stream pays, at most the interval, in
//! latency. `auto` does this only while the node is busy ([`Metrics::busy`]); a wait ends
//! early on shutdown, whose flush then writes what came meanwhile.
//!
//! [`Metrics::busy`]: crate::metrics::Metrics::busy

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use tokio::io::AsyncWrite;

use super::frame::{OP_BINARY, OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, header};
use super::shared::{Conn, Encoding};
use crate::config::WriteDelay;
use crate::event::Delivery;
use crate::metrics::WriteTally;
use crate::protocol::{ByeFrame, Gap, GapFrame, GapReason, ServerFrame, close, msgpack};
use crate::session::{Close, Drained};

/// Messages taken from the session per round (bounded so control frames are not starved).
const BATCH: usize = 256;
/// How long the shutdown flush, and then the final words (`bye`, a close frame), may each
/// take before the socket is dropped.
const FAREWELL: Duration = Duration::from_secs(2);
/// A write buffer up to this size is freed when the writer goes idle (cheap to get again,
/// and idle connections are many); a larger one, a busy connection's, is kept for reuse.
const KEEP_BELOW: usize = 4 * 1024;
/// A write buffer grown past this (a large replay) is freed after its round.
const KEEP_AT_MOST: usize = 256 * 1024;

/// Why the writer stopped writing.
enum Stop {
    /// A close was requested (slow consumer, protocol error, heartbeat, …).
    Close(Close),
    /// Server shutdown: flush, then say `bye`.
    Shutdown,
    /// The socket failed or the reader ended.
    Gone,
}

pub(super) async fn run<W>(
    mut sink: W,
    conn: Arc<Conn>,
    heartbeat: Duration,
    delay: WriteDelay,
    deflate: bool,
) where
    W: AsyncWrite + Unpin,
{
    let mut w = Writer {
        delay,
        deflate,
        ..Writer::default()
    };
    conn.outbox.set_runnable(true);
    let stop = w.pump(&mut sink, &conn, heartbeat).await;
    // Boxed: only a closing connection pays for the farewell's state, not every idle one.
    Box::pin(farewell(w, stop, sink, conn)).await;
}

/// The last words of a connection: the shutdown flush and `bye`, or a close frame.
async fn farewell<W>(mut w: Writer, stop: Stop, mut sink: W, conn: Arc<Conn>)
where
    W: AsyncWrite + Unpin,
{
    conn.metrics.connection_closed(match &stop {
        Stop::Shutdown => Some(close::SHUTDOWN),
        Stop::Close(c) => Some(c.code),
        Stop::Gone => None,
    });
    if let Stop::Shutdown = stop {
        let _ = tokio::time::timeout(FAREWELL, w.flush_for_shutdown(&mut sink, &conn)).await;
    }
    match stop {
        Stop::Shutdown => {
            let bye = ServerFrame::Bye(ByeFrame {
                reason: "shutdown".into(),
                retry_ms: 1000,
            });
            w.control(&conn, bye.encode().as_bytes());
            w.close(close::SHUTDOWN, "shutdown");
        }
        Stop::Close(c) => {
            if let Some(words) = c.last_words {
                w.control(&conn, words.as_bytes());
            }
            w.close(c.code, &c.reason);
        }
        // The peer's close frame is answered with its own code and reason (RFC 6455 §5.5.1).
        Stop::Gone => {
            if let Some(echo) = conn.take_peer_close() {
                w.frame(OP_CLOSE, &echo);
            }
        }
    }
    let words = async {
        let _ = w.write_out(&mut sink, &conn, true).await;
        let _ = std::future::poll_fn(|cx| Pin::new(&mut sink).poll_flush(cx)).await;
    };
    let _ = tokio::time::timeout(FAREWELL, words).await;
    conn.done.cancel();
}

/// A writer's reusable buffers (nothing is allocated per message; the write buffer is
/// reused from round to round while the connection is busy).
#[derive(Default)]
struct Writer {
    drained: Drained,
    /// Encoded frames of the current round; `out[written..]` is not in the socket yet.
    out: Vec<u8>,
    written: usize,
    /// The `msg`s of the current round, for their latency observations.
    unflushed: Vec<(Delivery, Instant)>,
    /// The last seq put into `out`.
    last_seq: u64,
    /// Payload bytes of the frames in `out` (the written-bytes metric).
    payload_bytes: usize,
    delay: WriteDelay,
    /// When messages last went to the socket (for `delay`).
    last_write: Option<Instant>,
    /// permessage-deflate was negotiated: data frames are compressed (`super::deflate`).
    deflate: bool,
}

impl Writer {
    async fn pump<W>(&mut self, sink: &mut W, conn: &Conn, heartbeat: Duration) -> Stop
    where
        W: AsyncWrite + Unpin,
    {
        let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat);
        loop {
            tokio::select! {
                biased;
                _ = conn.shutdown.cancelled() => return Stop::Shutdown,
                _ = conn.done.cancelled() => return Stop::Gone,
                _ = conn.outbox.woken() => {}
                _ = ping.tick() => self.frame(OP_PING, &[]),
            }
            if let Some(until) = self.hold_until(conn) {
                let sleep = tokio::time::sleep_until(until.into());
                tokio::pin!(sleep);
                loop {
                    tokio::select! {
                        biased;
                        _ = conn.shutdown.cancelled() => return Stop::Shutdown,
                        _ = conn.done.cancelled() => return Stop::Gone,
                        _ = &mut sleep => break,
                        // Messages do not wake a writer that has some to take; answers and
                        // close requests do, and end the wait.
                        _ = conn.outbox.woken() => if conn.outbox.has_control() { break },
                    }
                }
            }
            // Write everything pending, one round at a time, until nothing is left.
            loop {
                if let Some(c) = self.fill(conn) {
                    // What came before the close request goes out if the socket takes it
                    // now; a full socket (a slow consumer) is not waited for.
                    let _ = self.write_out(sink, conn, false).now_or_never();
                    return Stop::Close(c);
                }
                if self.out.is_empty() {
                    break;
                }
                if self.write_out(sink, conn, false).await.is_err() {
                    return stop_reason(conn);
                }
            }
            if self.out.capacity() < KEEP_BELOW {
                self.out = Vec::new();
                self.unflushed = Vec::new();
                self.drained.release_idle();
                conn.outbox.release_idle();
            }
        }
    }

    /// Until when this round waits for more messages (see the module comment), if at all.
    fn hold_until(&self, conn: &Conn) -> Option<Instant> {
        let interval = match self.delay {
            WriteDelay::Off => return None,
            WriteDelay::Every(d) => d,
            WriteDelay::Auto if conn.metrics.busy() => WriteDelay::AUTO,
            WriteDelay::Auto => return None,
        };
        let until = self.last_write? + interval;
        (until > Instant::now() && !conn.outbox.has_control()).then_some(until)
    }

    /// On shutdown: writes what is still pending and every message the session held when the
    /// shutdown came (publishers may still be running; later messages are not waited for).
    async fn flush_for_shutdown<W>(&mut self, sink: &mut W, conn: &Conn)
    where
        W: AsyncWrite + Unpin,
    {
        let last = conn.session().map_or(0, |s| s.last_seq());
        loop {
            let _ = self.fill(conn);
            if self.out.is_empty() {
                return;
            }
            if self.write_out(sink, conn, true).await.is_err() {
                return;
            }
            if self.last_seq >= last {
                return;
            }
        }
    }

    /// Encodes the next round after what is still pending: control frames, then a gap and
    /// up to [`BATCH`] messages. Returns a requested close (nothing of the session is taken
    /// then).
    fn fill(&mut self, conn: &Conn) -> Option<Close> {
        conn.outbox.drain(&mut self.drained);
        let mut control = std::mem::take(&mut self.drained.control);
        for frame in control.drain(..) {
            self.control(conn, frame.as_bytes());
        }
        self.drained.control = control;
        if let Some(pong) = conn.take_pong() {
            self.frame(OP_PONG, &pong);
        }
        if let Some(c) = self.drained.close.take() {
            return Some(c);
        }
        let session = conn.session()?;
        let Writer {
            out,
            unflushed,
            last_seq,
            payload_bytes,
            deflate,
            ..
        } = self;
        let start = out.len();
        let mut bytes = 0;
        let encoding = conn.encoding;
        let taken = session.take_each(&conn.outbox, BATCH, |seq, event, how| {
            if *deflate && let Some(len) = super::deflate::write_msg(out, event, encoding, seq, how)
            {
                bytes += len;
                unflushed.push((how, event.published));
                *last_seq = seq;
                return;
            }
            let before;
            let len = if encoding == Encoding::Msgpack {
                let len = event.msgpack_len(seq, how);
                out.reserve(len + 10);
                header(out, OP_BINARY, len);
                before = out.len();
                event.write_msgpack(seq, how, out);
                len
            } else {
                let len = event.msg_len(seq, how);
                out.reserve(len + 10);
                header(out, OP_TEXT, len);
                before = out.len();
                event.write_msg(seq, how, out);
                len
            };
            debug_assert_eq!(out.len() - before, len);
            bytes += len;
            unflushed.push((how, event.published));
            *last_seq = seq;
        });
        *payload_bytes += bytes;
        if taken.gap.is_some() || !taken.notes.is_empty() {
            // The gap, then the notes, go before the messages (rare: move them behind).
            let msgs = self.out.split_off(start);
            if let Some((from_seq, to_seq)) = taken.gap {
                let gap = ServerFrame::Gap(Gap::Seq(GapFrame {
                    from_seq,
                    to_seq,
                    reason: GapReason::Overflow,
                }))
                .encode();
                conn.metrics.gap(from_seq, to_seq);
                self.control(conn, gap.as_bytes());
            }
            for note in &taken.notes {
                self.control(conn, note.as_bytes());
            }
            self.out.extend_from_slice(&msgs);
        }
        None
    }

    /// Appends a frame the server made as JSON (an answer, a gap, a note, `bye`), in the
    /// connection's encoding: as is, or transcoded to MessagePack (frames are per
    /// connection, so this is not per subscriber); compressed on its own when deflate was
    /// negotiated and it is large enough.
    fn control(&mut self, conn: &Conn, json: &[u8]) {
        let mut mp = Vec::new();
        let (opcode, payload) = match conn.encoding {
            Encoding::Json => (OP_TEXT, json),
            Encoding::Msgpack => {
                let text = std::str::from_utf8(json).unwrap_or("null");
                if msgpack::from_json_into(text, &mut mp).is_ok() {
                    (OP_BINARY, mp.as_slice())
                } else {
                    // The server's own frames are JSON, always: this is not reached.
                    tracing::error!(frame = text, "server frame is not JSON");
                    (OP_TEXT, json)
                }
            }
        };
        if self.deflate
            && let Some(len) = super::deflate::frame(&mut self.out, opcode, payload)
        {
            self.payload_bytes += len;
            return;
        }
        self.payload_bytes += payload.len();
        self.frame(opcode, payload);
    }

    /// Appends a final, unmasked frame.
    fn frame(&mut self, opcode: u8, payload: &[u8]) {
        header(&mut self.out, opcode, payload.len());
        self.out.extend_from_slice(payload);
    }

    /// Appends a close frame: the code and up to 123 bytes of the reason (a control frame's
    /// payload is at most 125 bytes), cut at a character boundary.
    fn close(&mut self, code: u16, reason: &str) {
        let mut end = reason.len().min(123);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        let mut payload = [0u8; 125];
        payload[..2].copy_from_slice(&code.to_be_bytes());
        payload[2..2 + end].copy_from_slice(&reason.as_bytes()[..end]);
        self.frame(OP_CLOSE, &payload[..2 + end]);
    }

    /// Writes the pending bytes to the socket, then counts what they carried: one latency
    /// observation per message, one clock read per round, the shared counters touched once.
    /// Resumable: an interrupted write keeps its place.
    async fn write_out<W>(&mut self, sink: &mut W, conn: &Conn, draining: bool) -> Result<(), ()>
    where
        W: AsyncWrite + Unpin,
    {
        {
            let Writer { out, written, .. } = self;
            let mut write = std::pin::pin!(std::future::poll_fn(|cx| {
                write_all(Pin::new(&mut *sink), cx, out, written)
            }));
            // Usually the socket takes it all at once: no guard (three waker futures and a
            // `select!`) then. Only a write that must wait is guarded.
            match write.as_mut().now_or_never() {
                Some(r) => r.map_err(|_| ())?,
                None => {
                    conn.outbox.set_runnable(false);
                    let r = guarded(conn, write, draining).await;
                    conn.outbox.set_runnable(true);
                    r?
                }
            }
        }
        self.out.clear();
        self.written = 0;
        if self.out.capacity() > KEEP_AT_MOST {
            self.out = Vec::new();
        }
        // A local, not a field: it is not kept across an `.await`, so idle writers do not
        // carry its ~250 bytes of histogram.
        let mut tally = WriteTally::default();
        tally.bytes(std::mem::take(&mut self.payload_bytes));
        if !self.unflushed.is_empty() {
            let now = Instant::now();
            self.last_write = Some(now);
            for (how, published) in self.unflushed.drain(..) {
                tally.message(how, now.saturating_duration_since(published));
            }
        }
        conn.metrics.record_writes(&mut tally);
        Ok(())
    }
}

/// Writes `out[*written..]`, advancing `written` as the socket takes bytes.
fn write_all<W: AsyncWrite>(
    mut sink: Pin<&mut W>,
    cx: &mut Context<'_>,
    out: &[u8],
    written: &mut usize,
) -> Poll<std::io::Result<()>> {
    while *written < out.len() {
        match sink.as_mut().poll_write(cx, &out[*written..]) {
            Poll::Ready(Ok(0)) => return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into())),
            Poll::Ready(Ok(n)) => *written += n,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        }
    }
    Poll::Ready(Ok(()))
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
