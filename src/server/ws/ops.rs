//! What each op after `hello` does, once the guard lets it through: `sub`, `unsub`,
//! `pub` (answered at once, or through the ack task on a persisted topic), `req` (with its
//! timeout), `ack`, `history`, `presence`, `ping`, `refresh` and `rpc`. A `sub` or `pub` that a
//! `[proxy]` route covers asks the backend first (`proxied.rs`).

use std::sync::Arc;
use std::time::Duration;

use super::acks::{self, pub_ok};
use super::guard::Verdict;
use super::reader::Reader;
use crate::bus::{PendingAck, Publish, Published, SubOptions};
use crate::protocol::{AckMode, ClientFrame, ErrorCode, ErrorFrame, Id, OkFrame, ServerFrame};
use crate::session::Session;

/// `req.timeout_ms` when absent, and its maximum (PROTOCOL.md §4).
const REQUEST_TIMEOUT_DEFAULT_MS: u64 = 5_000;
const REQUEST_TIMEOUT_MAX_MS: u64 = 60_000;
/// Longest `rpc.method`.
const MAX_METHOD: usize = 256;

impl Reader {
    pub(super) async fn handle(&mut self, frame: ClientFrame<'_>, session: &Arc<Session>) {
        let bus = self.state.bus.clone();
        match self.guard.check(&frame, || bus.publish_rate()) {
            Verdict::Allow => {}
            Verdict::Deny(code, message) => {
                return self.send_error(frame.id().cloned(), code, message).await;
            }
            Verdict::Close(code, reason) => {
                let id = frame.id().cloned();
                self.send_error(id, ErrorCode::RateLimited, reason.clone())
                    .await;
                return self.close(code, &reason);
            }
        }
        match frame {
            ClientFrame::Hello { .. } => {}
            ClientFrame::Ping { id } => self.send(ServerFrame::Pong { id }).await,
            ClientFrame::Refresh { id, token } => self.refresh(id, &token, session).await,
            ClientFrame::Rpc { id, method, data } => {
                if method.is_empty() || method.len() > MAX_METHOD {
                    let msg = format!("'method' must be 1 to {MAX_METHOD} bytes");
                    return self.send_error(id, ErrorCode::BadRequest, msg).await;
                }
                self.rpc(id, session, &method, data).await
            }
            ClientFrame::Sub {
                id,
                pattern,
                group,
                ack,
                rewind,
                since,
            } => {
                if let Err(e) = self
                    .ask_subscribe(session, &pattern, group.as_deref())
                    .await
                {
                    return self.send_error(id, e.code(), e.to_string()).await;
                }
                let opts = SubOptions {
                    group: group.as_deref(),
                    manual_ack: ack == Some(AckMode::Manual),
                    rewind,
                    since: since.as_ref(),
                };
                match bus.subscribe_with(session, &pattern, &opts).await {
                    Ok(outcome) => {
                        let ok = OkFrame {
                            pattern: Some(pattern.into_owned()),
                            recovered: outcome.recovered,
                            ..Default::default()
                        };
                        self.send_ok(id, ok).await
                    }
                    Err(e) => self.send_error(id, e.code(), e.to_string()).await,
                }
            }
            ClientFrame::Unsub { id, pattern, group } => {
                match bus.unsubscribe_session(session, &pattern, group.as_deref()) {
                    Ok(()) => {
                        let ok = OkFrame {
                            pattern: Some(pattern.into_owned()),
                            ..Default::default()
                        };
                        self.send_ok(id, ok).await
                    }
                    Err(e) => self.send_error(id, e.code(), e.to_string()).await,
                }
            }
            ClientFrame::Pub {
                id,
                topic,
                data,
                msg_id,
                retain,
            } => {
                let replaced = match self
                    .ask_publish(session, &topic, data, msg_id.as_deref())
                    .await
                {
                    Ok(r) => r,
                    Err(e) => return self.send_error(id, e.code(), e.to_string()).await,
                };
                let p = Publish {
                    topic: &topic,
                    data: replaced.as_deref().unwrap_or(data),
                    msg_id: msg_id.as_deref(),
                    retain,
                };
                match bus.submit_as_client(p).await {
                    Ok(Published::Done(ack)) => {
                        self.send_ok(id, pub_ok(&ack)).await;
                        self.after_publish(ack.backlogged).await;
                    }
                    Ok(Published::Pending(pending)) => self.ack_when_durable(id, pending).await,
                    Err(e) => self.send_error(id, e.code(), e.to_string()).await,
                }
            }
            ClientFrame::Req {
                id,
                topic,
                data,
                timeout_ms,
            } => self.request(id, &topic, data, timeout_ms).await,
            ClientFrame::Ack { seq } => {
                bus.ack(session, seq);
            }
            ClientFrame::History {
                id,
                topic,
                since,
                limit,
            } => {
                // Reading a topic's past is asked about like subscribing to it.
                if let Err(e) = self.ask_subscribe(session, &topic, None).await {
                    return self.send_error(id, e.code(), e.to_string()).await;
                }
                self.history(id, &topic, since, limit).await
            }
            ClientFrame::Presence { id, topic } => {
                if let Err(e) = self.ask_subscribe(session, &topic, None).await {
                    return self.send_error(id, e.code(), e.to_string()).await;
                }
                self.presence(id, &topic).await
            }
        }
    }

    async fn history(&self, id: Option<Id>, topic: &str, since: Option<u64>, limit: Option<u64>) {
        let bus = &self.state.bus;
        match bus.history(topic, since, limit).await {
            Ok(page) => {
                let ok = OkFrame {
                    epoch: Some(page.epoch.to_string()),
                    messages: Some(page.rows()),
                    ..Default::default()
                };
                self.send_ok(id, ok).await
            }
            Err(e) => self.send_error(id, e.code(), e.to_string()).await,
        }
    }

    async fn presence(&self, id: Option<Id>, topic: &str) {
        match self.state.bus.presence(topic).await {
            Ok(list) => {
                let ok = OkFrame {
                    count: Some(list.count),
                    clients: Some(list.clients),
                    ..Default::default()
                };
                self.send_ok(id, ok).await
            }
            Err(e) => self.send_error(id, e.code(), e.to_string()).await,
        }
    }

    /// Answers a publish to a persisted topic once it is durable, without holding up the
    /// reader: later frames (more publishes to batch with it) keep flowing meanwhile.
    async fn ack_when_durable(&mut self, id: Option<Id>, pending: PendingAck) {
        let conn = &self.conn;
        let acks = self
            .acks
            .get_or_insert_with(|| acks::spawn(conn.outbox.clone(), conn.done.clone()));
        let _ = acks.send((id, pending)).await;
    }

    /// `req`: publishes with a reply inbox and arms the timeout. The reply itself reaches
    /// the outbox from whoever publishes to the inbox (see `bus::requests`).
    async fn request(
        &mut self,
        id: Option<Id>,
        topic: &str,
        data: &serde_json::value::RawValue,
        timeout_ms: Option<u64>,
    ) {
        let timeout_ms = timeout_ms.unwrap_or(REQUEST_TIMEOUT_DEFAULT_MS);
        if timeout_ms == 0 || timeout_ms > REQUEST_TIMEOUT_MAX_MS {
            let msg = format!("'timeout_ms' must be 1 to {REQUEST_TIMEOUT_MAX_MS}");
            return self.send_error(id, ErrorCode::BadRequest, msg).await;
        }
        let max = self.state.config().limits.max_pending_requests;
        self.conn
            .inboxes
            .lock()
            .retain(|i| self.state.bus.request_open(i));
        if self.conn.inboxes.lock().len() >= max {
            let msg = format!("at most {max} requests may wait for a reply at once");
            return self.send_error(id, ErrorCode::RateLimited, msg).await;
        }
        let bus = self.state.bus.clone();
        match bus.request(topic, data, self.conn.outbox.clone(), id.clone()) {
            Ok(inbox) => {
                self.conn.inboxes.lock().push(inbox.clone());
                let outbox = self.conn.outbox.clone();
                let done = self.conn.done.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        _ = done.cancelled() => { bus.cancel_request(&inbox); }
                        _ = tokio::time::sleep(Duration::from_millis(timeout_ms)) => {
                            if bus.cancel_request(&inbox) {
                                let frame = ServerFrame::Error(ErrorFrame {
                                    id,
                                    code: ErrorCode::Timeout,
                                    message: format!("no reply within {timeout_ms} ms"),
                                });
                                let _ = outbox.try_push_control(frame.encode());
                            }
                        }
                    }
                });
            }
            Err(e) => self.send_error(id, e.code(), e.to_string()).await,
        }
    }
}
