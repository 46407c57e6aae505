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
    /// The retain flag (`n`, `r` or `c`) and the ts, as in `args`.
    pub flag: u8,
    pub ts: u64,
    /// Where the record's rest lies in `args`: a run copies it from there.
    pub rest: std::ops::Range<usize>,
    pub done: Done,
}

impl Job {
    /// This message as an item of its topic's run: `<len>:<item>`.
    fn run_item_len(&self) -> usize {
        let item = self.item_len();
        itoa::Buffer::new().format(item).len() + 1 + item
    }

    fn write_run_item(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(itoa::Buffer::new().format(self.item_len()).as_bytes());
        out.push(b':');
        self.write_item(out);
    }

    /// This message as a run stores it: `<flag> <ts> <rest>`.
    fn item_len(&self) -> usize {
        2 + itoa::Buffer::new().format(self.ts).len() + 1 + self.rest.len()
    }

    fn write_item(&self, out: &mut Vec<u8>) {
        out.push(self.flag);
        out.push(b' ');
        out.extend_from_slice(itoa::Buffer::new().format(self.ts).as_bytes());
        out.push(b' ');
        out.extend_from_slice(&self.args[self.rest.clone()]);
    }
}

/// Arguments per message in the script's ARGV, its topic index included.
const MESSAGE_ARGS: usize = 5;
const TOPIC_ARGS: usize = 8;

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
        /// Each publish's answer and its topic's index.
        jobs: Vec<(Done, usize)>,
        /// Per topic of the batch: whether its messages went as a run.
        runs: Vec<bool>,
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
            Waiting::Batch { jobs, runs } => {
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
                deliver_answers(reply, jobs, &runs);
            }
        }
    }
    Ok(())
}

/// Answers every publish of a batch, in the batch's order. A message of a run has the
/// run's first offset plus its place in the run.
fn deliver_answers(reply: Reply, jobs: Vec<(Done, usize)>, runs: &[bool]) {
    let bad = |why: &str| ClusterError::Redis(format!("unexpected answer to a publish: {why}"));
    let topics = runs.len();
    let singles = jobs.iter().filter(|(_, t)| !runs[*t]).count();
    let items = match reply {
        Reply::Array(items) if items.len() == 3 * topics + 3 * singles => items,
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
    // Per topic: the next offset of its run, and the run's receivers.
    let mut next: Vec<(Option<i64>, Option<i64>)> = items[topics..3 * topics]
        .chunks(2)
        .map(|r| (r[0].as_int(), r[1].as_int()))
        .collect();
    let mut rows = items[3 * topics..].chunks(3);
    for (done, topic) in jobs {
        let row = if runs[topic] {
            let (first, receivers) = &mut next[topic];
            let row = (Some(1), *first, *receivers);
            *first = first.map(|o| o + 1);
            row
        } else {
            match rows.next() {
                Some(r) => (r[0].as_int(), r[1].as_int(), r[2].as_int()),
                None => (None, None, None),
            }
        };
        let r = match (row, epochs[topic].clone()) {
            ((Some(new), Some(offset), Some(receivers)), Some(epoch)) if offset > 0 => Ok(Answer {
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

/// A topic of one batch.
struct BatchTopic<'a> {
    name: &'a str,
    settings: TopicArgs,
    /// Add it to the topic set.
    note: bool,
    /// A message has a de-duplication key.
    dedup: bool,
    /// Its messages go as one run (see `lua/publish.lua`): no dedup key and nothing done
    /// to the retained message, so the script builds nothing per message (with history it
    /// stores each as it came).
    run: bool,
    /// Its jobs' places in the batch, in order.
    jobs: Vec<usize>,
}

/// Writes one script call for `jobs` (in their order) into `out`.
fn encode(sha: &str, jobs: impl Iterator<Item = Job>, out: &mut Vec<u8>) -> Waiting {
    let jobs: Vec<Job> = jobs.collect();
    // Topics numbered in order of first appearance (a batch has few: a linear scan).
    let mut topics: Vec<BatchTopic<'_>> = Vec::new();
    let mut index = Vec::with_capacity(jobs.len());
    for (at, j) in jobs.iter().enumerate() {
        let i = match topics.iter().position(|t| t.name == &*j.topic) {
            Some(i) => i,
            None => {
                topics.push(BatchTopic {
                    name: &j.topic,
                    settings: j.settings,
                    note: false,
                    dedup: false,
                    run: true,
                    jobs: Vec::new(),
                });
                topics.len() - 1
            }
        };
        let t = &mut topics[i];
        t.note |= j.note;
        t.dedup |= j.dedup.is_some();
        t.run &= j.dedup.is_none() && j.flag == b'n';
        t.jobs.push(at);
        index.push(i);
    }
    let singles = jobs.iter().zip(&index).filter(|(_, i)| !topics[**i].run);
    let (dedups, nsingles) = singles.fold((0, 0), |(d, n), (j, _)| {
        (d + usize::from(j.dedup.is_some()), n + 1)
    });
    let nkeys = 2 + 4 * topics.len() + dedups;
    // A run with history sends its messages again, one argument each, to be stored.
    let stored: usize = topics
        .iter()
        .filter(|t| t.run && t.settings.history > 0)
        .map(|t| t.jobs.len())
        .sum();
    let argc = 3 + nkeys + 3 + TOPIC_ARGS * topics.len() + stored + MESSAGE_ARGS * nsingles;
    let mut c = Command::with_argc(argc, out);
    c.str("EVALSHA").str(sha).int(nkeys as u64);
    c.str(keys::TOPICS).str(keys::RETAINED);
    for t in &topics {
        let k = TopicKeys::new(t.name);
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
        .int(nsingles as u64)
        .str(&crate::store::new_epoch());
    for t in &topics {
        let a = &t.settings;
        c.str(t.name)
            .str(&keys::channel(t.name))
            .int(a.history as u64)
            .int(a.history_ttl_ms)
            .int(a.dedup_window_ms)
            .str(if t.note { "1" } else { "0" })
            .int(if t.dedup { 0 } else { t.jobs.len() as u64 });
        if t.run {
            let len = t.jobs.iter().map(|&at| jobs[at].run_item_len()).sum();
            c.bulk_with(len, |out| {
                for &at in &t.jobs {
                    jobs[at].write_run_item(out);
                }
            });
        } else {
            c.str("");
        }
    }
    for t in topics.iter().filter(|t| t.run && t.settings.history > 0) {
        for &at in &t.jobs {
            let j = &jobs[at];
            c.bulk_with(j.item_len(), |out| j.write_item(out));
        }
    }
    for (j, i) in jobs.iter().zip(&index) {
        if !topics[*i].run {
            c.int(*i as u64 + 1).raw(&j.args, MESSAGE_ARGS - 1);
        }
    }
    c.finish();
    let runs: Vec<bool> = topics.iter().map(|t| t.run).collect();
    Waiting::Batch {
        jobs: jobs
            .into_iter()
            .zip(index)
            .map(|(j, i)| (j.done, i))
            .collect(),
        runs,
    }
}
