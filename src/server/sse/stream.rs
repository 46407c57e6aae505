//! The body of an event stream: what the WebSocket writer does for a socket (control frames,
//! then a gap and the session's messages, encoded from the ring without a copy of the shared
//! body), written as SSE events instead of WebSocket frames.
//!
//! ```text
//! retry: 1000
//!
//! id: s_…:0
//! event: welcome
//! data: {"op":"welcome",…}
//!
//! id: s_…:42
//! event: msg
//! data: {"op":"msg","seq":42,…}
//! ```
//! Every event's `id` is `<session>:<the last seq sent>`; a frame without a seq (welcome, a
//! topic gap, `subscribed`) repeats the last one, so a reconnect after it resumes right. A
//! comment line every `heartbeat` keeps proxies from closing an idle stream. The stream ends
//! on a close request (`event: close`), at the token's `exp`, and on shutdown (`event: bye`,
//! after the messages published before it).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use futures_util::stream;

use super::super::AppState;
use crate::metrics::WriteTally;
use crate::protocol::{ByeFrame, Gap, GapFrame, GapReason, ServerFrame, close};
use crate::session::{Drained, Outbox, Session};

/// Messages taken from the session per chunk.
const BATCH: usize = 256;
/// What the browser waits before it reconnects (`retry:`), in ms.
const RETRY_MS: u64 = 1000;

/// The stream's state between chunks; dropping it (the client went away) detaches the
/// session, which then lives its TTL for a resume.
struct Feed {
    state: Arc<AppState>,
    session: Arc<Session>,
    outbox: Arc<Outbox>,
    drained: Drained,
    last_seq: u64,
    heartbeat: tokio::time::Interval,
    /// The token's `exp`: the stream ends then.
    expires: Option<tokio::time::Instant>,
    started: bool,
    ended: bool,
    /// The stream's place in `max_connections` and `max_connections_per_ip`, given back
    /// when it ends.
    _slots: Box<dyn Send>,
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.session.detach(&self.outbox);
        if !self.ended {
            // The client went away (a close we sent is counted where it is sent).
            self.state.metrics.connection_closed(None);
        }
        tracing::debug!(session = %self.session.id(), "event stream closed");
    }
}

/// The response body for `session`, attached to `outbox`.
pub(super) fn body(
    state: Arc<AppState>,
    session: Arc<Session>,
    outbox: Arc<Outbox>,
    time_left: Option<Duration>,
    last_seq: u64,
    slots: Box<dyn Send>,
) -> Body {
    let every = state.config().heartbeat;
    let feed = Feed {
        heartbeat: tokio::time::interval_at(tokio::time::Instant::now() + every, every),
        expires: time_left.map(|d| tokio::time::Instant::now() + d),
        state,
        session,
        outbox,
        drained: Drained::default(),
        last_seq,
        started: false,
        ended: false,
        _slots: slots,
    };
    Body::from_stream(stream::unfold(feed, |mut f| async move {
        let chunk = f.next_chunk().await?;
        Some((Ok::<Bytes, std::convert::Infallible>(chunk), f))
    }))
}

impl Feed {
    /// The next chunk to send; `None` ends the stream.
    async fn next_chunk(&mut self) -> Option<Bytes> {
        if self.ended {
            return None;
        }
        let mut out = Vec::new();
        if !self.started {
            self.started = true;
            out.extend_from_slice(format!("retry: {RETRY_MS}\n\n").as_bytes());
        }
        loop {
            if self.fill(&mut out) {
                self.ended = true;
                return Some(out.into());
            }
            if !out.is_empty() {
                return Some(out.into());
            }
            let shutdown = self.state.shutdown.clone();
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => {
                    self.farewell(&mut out);
                    self.ended = true;
                    return Some(out.into());
                }
                _ = until(self.expires) => {
                    let frame = serde_json::json!({"code": close::UNAUTHORIZED, "reason": "token expired"});
                    self.event(&mut out, "close", frame.to_string().as_bytes());
                    self.state.metrics.connection_closed(Some(close::UNAUTHORIZED));
                    self.ended = true;
                    return Some(out.into());
                }
                _ = self.outbox.woken() => {}
                _ = self.heartbeat.tick() => out.extend_from_slice(b": heartbeat\n\n"),
            }
        }
    }

    /// Appends what is pending: control frames, a gap, notes, up to [`BATCH`] messages.
    /// True when a close was requested (its event is appended, the stream ends).
    fn fill(&mut self, out: &mut Vec<u8>) -> bool {
        self.outbox.drain(&mut self.drained);
        for frame in std::mem::take(&mut self.drained.control) {
            let op = op_of(&frame);
            self.event(out, op, frame.as_bytes());
        }
        if let Some(c) = self.drained.close.take() {
            let frame = serde_json::json!({"code": c.code, "reason": c.reason});
            if let Some(words) = c.last_words {
                self.event(out, op_of(&words), words.as_bytes());
            }
            self.event(out, "close", frame.to_string().as_bytes());
            self.state.metrics.connection_closed(Some(c.code));
            return true;
        }
        let mut msgs = Vec::new();
        let mut tally = WriteTally::default();
        let now = Instant::now();
        let id = self.session.id().clone();
        let mut last = self.last_seq;
        let taken = self
            .session
            .take_each(&self.outbox, BATCH, |seq, event, how| {
                msgs.extend_from_slice(b"id: ");
                msgs.extend_from_slice(id.as_bytes());
                msgs.push(b':');
                msgs.extend_from_slice(itoa::Buffer::new().format(seq).as_bytes());
                msgs.extend_from_slice(b"\nevent: msg\ndata: ");
                let before = msgs.len();
                event.write_msg(seq, how, &mut msgs);
                tally.bytes(msgs.len() - before);
                msgs.extend_from_slice(b"\n\n");
                tally.message(how, now.saturating_duration_since(event.published));
                last = seq;
            });
        if let Some((from_seq, to_seq)) = taken.gap {
            let gap = ServerFrame::Gap(Gap::Seq(GapFrame {
                from_seq,
                to_seq,
                reason: GapReason::Overflow,
            }))
            .encode();
            self.state.metrics.gap(from_seq, to_seq);
            self.last_seq = self.last_seq.max(to_seq);
            self.event(out, "gap", gap.as_bytes());
        }
        for note in &taken.notes {
            self.event(out, op_of(note), note.as_bytes());
        }
        self.last_seq = self.last_seq.max(last);
        out.extend_from_slice(&msgs);
        self.state.metrics.record_writes(&mut tally);
        false
    }

    /// On shutdown: the messages the session held when it came, then `bye`.
    fn farewell(&mut self, out: &mut Vec<u8>) {
        let last = self.session.last_seq();
        while self.last_seq < last {
            let before = out.len();
            if self.fill(out) || out.len() == before {
                break;
            }
        }
        let bye = ServerFrame::Bye(ByeFrame {
            reason: "shutdown".into(),
            retry_ms: RETRY_MS,
        });
        self.event(out, "bye", bye.encode().as_bytes());
        self.state.metrics.connection_closed(Some(close::SHUTDOWN));
    }

    /// Appends one event: its id (the last seq sent), name and one `data:` line (frames are
    /// compact JSON: no newline inside).
    fn event(&self, out: &mut Vec<u8>, name: &str, data: &[u8]) {
        out.extend_from_slice(b"id: ");
        out.extend_from_slice(self.session.id().as_bytes());
        out.push(b':');
        out.extend_from_slice(itoa::Buffer::new().format(self.last_seq).as_bytes());
        out.extend_from_slice(b"\nevent: ");
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"\ndata: ");
        out.extend_from_slice(data);
        out.extend_from_slice(b"\n\n");
    }
}

/// The `op` of an encoded server frame (`{"op":"…",…`: the tag comes first).
fn op_of(frame: &str) -> &str {
    frame
        .strip_prefix("{\"op\":\"")
        .and_then(|rest| rest.split('"').next())
        .unwrap_or("message")
}

async fn until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::op_of;

    #[test]
    fn the_op_names_the_event() {
        assert_eq!(op_of(r#"{"op":"welcome","session":"s"}"#), "welcome");
        assert_eq!(op_of(r#"{"op":"gap","topic":"a"}"#), "gap");
        assert_eq!(op_of("not a frame"), "message");
    }
}
