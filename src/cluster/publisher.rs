//! The publish pipeline: one task and one connection own the order in which this node's
//! publishes reach Redis.
//!
//! Publishers enqueue a [`Job`] whose arguments they encoded themselves (in their own
//! order, on their own task). The pipeline task takes everything queued (up to [`BATCH`])
//! and sends it as **one** call of the publish script, which publishes the batch as one
//! channel message per topic. Up to [`IN_FLIGHT`] calls are on the wire at once, so Redis
//! always has the next batch while the answer to the last one travels back; once that many
//! wait for answers, publishes gather in the queue and the next batch is bigger. A quiet
//! node sends each publish at once, alone: no timer, no added latency. One connection
//! keeps a socket's publishes in order, and a publish is answered only once Redis has it.
//!
//! Invariant: the in-flight queue holds one entry per command written, in writing order,
//! and Redis answers in that order; an answer is matched to the front entry.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::error::ClusterError;
use super::keys::{self, TopicKeys};
use super::resp::{self, Command, Endpoint, Reply};

/// Most publishes in one script call.
const BATCH: usize = 512;
/// Script calls waiting for their answer at most.
const IN_FLIGHT: usize = 3;
/// Publishes queued for the pipeline at most: a publisher takes a permit first (see
/// [`super::Cluster::permit`]), so a node faster than Redis slows its publishers through
/// TCP instead of growing the queue. Small enough that a full queue is tens of
/// milliseconds of Redis's work, not seconds.
pub const QUEUE: usize = 4096;
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// What to do with Redis's answer to one publish (runs on the pipeline task: keep it short).
pub type Done = Box<dyn FnOnce(Result<Answer, ClusterError>) + Send>;

/// Redis's answer to one publish of a batch.
#[derive(Debug, Clone)]
pub struct Answer {
    pub new: bool,
    pub offset: u64,
    pub epoch: Arc<str>,
    pub receivers: u64,
}

/// The per-topic settings a publish carries to the script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicArgs {
    pub history: usize,
    pub history_ttl_ms: u64,
    pub dedup_window_ms: u64,
}

pub(super) struct Job {
    pub topic: Box<str>,
    pub settings: TopicArgs,
    /// Add the topic to the topic set.
    pub note: bool,
    /// The message's de-duplication key, when it has a msg_id and a window.
    pub dedup: Option<String>,
    /// The message's arguments after its topic index (msg_id, retain flag, ts, the
    /// record's rest: see `lua/publish.lua`), encoded as RESP bulk strings.
    pub args: Vec<u8>,
    pub done: Done,
}

/// Arguments per message in the script's ARGV, its topic index included.
const MESSAGE_ARGS: usize = 5;
const TOPIC_ARGS: usize = 7;

/// Starts the task; `script` is the publish script's source.
pub(super) fn spawn(
    at: Endpoint,
    script: &'static str,
    cancel: CancellationToken,
) -> mpsc::UnboundedSender<Job> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(run(at, script, rx, cancel));
    tx
}

enum Waiting {
    /// The answer to `SCRIPT LOAD`.
    Load,
    Batch {
        jobs: Vec<(Done, usize)>,
        topics: usize,
    },
}

async fn run(
    at: Endpoint,
    script: &'static str,
    mut rx: mpsc::UnboundedReceiver<Job>,
    cancel: CancellationToken,
) {
    let sha = redis::Script::new(script).get_hash().to_owned();
    let mut backoff = BACKOFF_MIN;
    loop {
        let conn = tokio::select! {
            _ = cancel.cancelled() => return,
            c = resp::connect(&at) => c,
        };
        let (mut stream, mut buf) = match conn {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(error = %e, "redis publish connection unavailable");
                // While Redis is away publishes fail at once: never held, never a false ok.
                let until = tokio::time::sleep(backoff);
                tokio::pin!(until);
                loop {
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = &mut until => break,
                        job = rx.recv() => match job {
                            Some(j) => (j.done)(Err(e.clone())),
                            None => return,
                        },
                    }
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        backoff = BACKOFF_MIN;
        let mut waiting: VecDeque<Waiting> = VecDeque::new();
        let mut out = Vec::new();
        // A new connection may be to a Redis that restarted: load the script first.
        Command::new("SCRIPT")
            .str("LOAD")
            .str(script)
            .write_to(&mut out);
        waiting.push_back(Waiting::Load);
        let mut jobs: Vec<Job> = Vec::with_capacity(BATCH);
        let broken = loop {
            if !out.is_empty() {
                if let Err(e) = stream.write.write_all(&out).await {
                    break ClusterError::Unavailable(e.to_string());
                }
                out.clear();
            }
            let room = waiting.len() < IN_FLIGHT;
            if buf.capacity() - buf.len() < 4096 {
                buf.reserve(64 * 1024);
            }
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return,
                read = stream.read.read_buf(&mut buf) => {
                    match read {
                        Ok(0) => break ClusterError::Unavailable("connection closed".into()),
                        Err(e) => break ClusterError::Unavailable(e.to_string()),
                        Ok(_) => {}
                    }
                    if let Err(e) = answer(&mut buf, &mut waiting, &sha, &mut out, script) {
                        break e;
                    }
                }
                n = rx.recv_many(&mut jobs, BATCH), if room => {
                    if n == 0 {
                        return; // every sender is gone: the cluster handle was dropped
                    }
                    waiting.push_back(encode(&sha, jobs.drain(..), &mut out));
                }
            }
        };
        tracing::warn!(error = %broken, "redis publish connection lost; reconnecting");
        for w in waiting {
            if let Waiting::Batch { jobs, .. } = w {
                for (done, _) in jobs {
                    done(Err(broken.clone()));
                }
            }
        }
    }
}

/// Matches every complete answer in `buf` to what waits for it.
fn answer(
    buf: &mut BytesMut,
    waiting: &mut VecDeque<Waiting>,
    sha: &str,
    out: &mut Vec<u8>,
    script: &str,
) -> Result<(), ClusterError> {
    while let Some(reply) = resp::parse(buf).map_err(|e| ClusterError::Redis(e.to_string()))? {
        let Some(w) = waiting.pop_front() else {
            return Err(ClusterError::Redis("an answer nobody asked for".into()));
        };
        match w {
            Waiting::Load => match reply.as_bytes() {
                Some(got) if got.as_ref() == sha.as_bytes() => {}
                _ => {
                    return Err(ClusterError::Redis(format!(
                        "SCRIPT LOAD answered {reply:?}"
                    )));
                }
            },
            Waiting::Batch { jobs, topics } => {
                if let Some(e) = reply.error_text() {
                    // NOSCRIPT: the cache was flushed under a live connection. Nothing of
                    // the call ran; its publishers are refused and the script is loaded
                    // again before the next call.
                    let noscript = e.starts_with("NOSCRIPT");
                    let err = if noscript {
                        ClusterError::Unavailable("Redis lost its scripts; retry".into())
                    } else {
                        ClusterError::Redis(e)
                    };
                    for (done, _) in jobs {
                        done(Err(err.clone()));
                    }
                    if noscript && !waiting.iter().any(|w| matches!(w, Waiting::Load)) {
                        Command::new("SCRIPT").str("LOAD").str(script).write_to(out);
                        waiting.push_back(Waiting::Load);
                    }
                    continue;
                }
                deliver_answers(reply, jobs, topics);
            }
        }
    }
    Ok(())
}

fn deliver_answers(reply: Reply, jobs: Vec<(Done, usize)>, topics: usize) {
    let bad = |why: &str| ClusterError::Redis(format!("unexpected answer to a publish: {why}"));
    let items = match reply {
        Reply::Array(items) if items.len() == topics + 3 * jobs.len() => items,
        other => {
            let e = bad(&format!("{other:?}"));
            for (done, _) in jobs {
                done(Err(e.clone()));
            }
            return;
        }
    };
    let epochs: Vec<Option<Arc<str>>> = items[..topics]
        .iter()
        .map(|r| {
            r.as_bytes()
                .and_then(|b| std::str::from_utf8(b).ok())
                .map(Arc::from)
        })
        .collect();
    for ((done, topic), row) in jobs.into_iter().zip(items[topics..].chunks(3)) {
        let r = match (
            row[0].as_int(),
            row[1].as_int(),
            row[2].as_int(),
            epochs[topic].clone(),
        ) {
            (Some(new), Some(offset), Some(receivers), Some(epoch)) => Ok(Answer {
                new: new == 1,
                offset: offset as u64,
                epoch,
                receivers: receivers as u64,
            }),
            _ => Err(bad("not integers")),
        };
        done(r);
    }
}

/// Writes one script call for `jobs` (in their order) into `out`.
fn encode(sha: &str, jobs: impl Iterator<Item = Job>, out: &mut Vec<u8>) -> Waiting {
    let jobs: Vec<Job> = jobs.collect();
    // Topics numbered in order of first appearance (a batch has few: a linear scan).
    // (name, settings, note, messages, any with a dedup key)
    let mut topics: Vec<(&str, TopicArgs, bool, u64, bool)> = Vec::new();
    let mut index = Vec::with_capacity(jobs.len());
    for j in &jobs {
        let i = match topics.iter().position(|(t, ..)| *t == &*j.topic) {
            Some(i) => i,
            None => {
                topics.push((&j.topic, j.settings, false, 0, false));
                topics.len() - 1
            }
        };
        let t = &mut topics[i];
        t.2 |= j.note;
        t.3 += 1;
        t.4 |= j.dedup.is_some();
        index.push(i);
    }
    let dedups = jobs.iter().filter(|j| j.dedup.is_some()).count();
    let nkeys = 2 + 4 * topics.len() + dedups;
    let argc = 3 + nkeys + 3 + TOPIC_ARGS * topics.len() + MESSAGE_ARGS * jobs.len();
    let mut c = Command::with_argc(argc, out);
    c.str("EVALSHA").str(sha).int(nkeys as u64);
    c.str(keys::TOPICS).str(keys::RETAINED);
    for (t, ..) in &topics {
        let k = TopicKeys::new(t);
        c.str(&k.offset)
            .str(&k.epoch)
            .str(&k.history)
            .str(&k.retained);
    }
    for j in &jobs {
        if let Some(d) = &j.dedup {
            c.str(d);
        }
    }
    c.int(topics.len() as u64)
        .int(jobs.len() as u64)
        .str(&crate::store::new_epoch());
    for (t, a, note, count, dedup) in &topics {
        c.str(t)
            .str(&keys::channel(t))
            .int(a.history as u64)
            .int(a.history_ttl_ms)
            .int(a.dedup_window_ms)
            .str(if *note { "1" } else { "0" })
            .int(if *dedup { 0 } else { *count });
    }
    for (j, i) in jobs.iter().zip(&index) {
        c.int(*i as u64 + 1).raw(&j.args, MESSAGE_ARGS - 1);
    }
    c.finish();
    let n = topics.len();
    Waiting::Batch {
        jobs: jobs
            .into_iter()
            .zip(index)
            .map(|(j, i)| (j.done, i))
            .collect(),
        topics: n,
    }
}
