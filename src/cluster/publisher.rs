//! The publish pipeline: one task owns the order in which this node's publishes reach
//! Redis. Publishers enqueue a prepared script call (cheap, in their own order); the task
//! takes everything queued, sends it as one pipeline and answers each publisher. One round
//! trip carries hundreds of publishes under load, and a socket's publishes keep their order.

use redis::aio::ConnectionManager;
use redis::{Cmd, Value};
use tokio::sync::mpsc;

use super::error::ClusterError;

/// Most publishes sent in one pipeline.
const BATCH: usize = 512;
/// Publishes queued for the pipeline at most: a publisher takes a permit first (see
/// [`super::Cluster::permit`]), so a node faster than Redis slows its publishers through
/// TCP instead of growing the queue.
pub const QUEUE: usize = 16_384;

/// What to do with Redis's answer to one publish (runs on the pipeline task: keep it short).
pub type Done = Box<dyn FnOnce(Result<Value, ClusterError>) + Send>;

pub(super) struct Job {
    pub cmd: Cmd,
    /// Sent right after `cmd` in the same pipeline; their answers are not looked at.
    pub extra: Vec<Cmd>,
    pub done: Done,
}

/// Starts the task; `script` is the source of the script the jobs call by hash.
pub(super) fn spawn(conn: ConnectionManager, script: &'static str) -> mpsc::UnboundedSender<Job> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(run(conn, script, rx));
    tx
}

async fn run(
    mut conn: ConnectionManager,
    script: &'static str,
    mut rx: mpsc::UnboundedReceiver<Job>,
) {
    let mut batch: Vec<Job> = Vec::with_capacity(BATCH);
    loop {
        if rx.recv_many(&mut batch, BATCH).await == 0 {
            return; // every sender is gone: the cluster handle was dropped
        }
        let pipe = pipeline(
            batch
                .iter()
                .flat_map(|j| std::iter::once(&j.cmd).chain(&j.extra)),
        );
        let results = send(&mut conn, pipe).await.map(|values| {
            // Keep each job's own answer; drop those of its extra commands.
            let mut it = values.into_iter();
            batch
                .iter()
                .map(|j| {
                    let v = it.next().unwrap_or(Value::Nil);
                    for _ in &j.extra {
                        it.next();
                    }
                    v
                })
                .collect::<Vec<Value>>()
        });
        let results = match results {
            Ok(values) if values.iter().any(is_noscript) => {
                // Redis lost its script cache (a restart): load the script and send again
                // the calls that did not run. NOSCRIPT means that call changed nothing.
                let cmds: Vec<Cmd> = batch.iter().map(|j| j.cmd.clone()).collect();
                retry_noscript(&mut conn, script, &cmds, values).await
            }
            other => other,
        };
        match results {
            Ok(values) => {
                for (job, v) in batch.drain(..).zip(values) {
                    let r = match v {
                        Value::ServerError(e) => Err(ClusterError::Redis(e.to_string())),
                        v => Ok(v),
                    };
                    (job.done)(r);
                }
            }
            Err(e) => {
                for job in batch.drain(..) {
                    (job.done)(Err(e.clone()));
                }
            }
        }
    }
}

fn pipeline<'a>(cmds: impl Iterator<Item = &'a Cmd>) -> redis::Pipeline {
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    for c in cmds {
        pipe.add_command(c.clone());
    }
    pipe
}

async fn send(
    conn: &mut ConnectionManager,
    pipe: redis::Pipeline,
) -> Result<Vec<Value>, ClusterError> {
    pipe.query_async::<Vec<Value>>(conn)
        .await
        .map_err(ClusterError::from)
}

fn is_noscript(v: &Value) -> bool {
    matches!(v, Value::ServerError(e) if e.code() == "NOSCRIPT")
}

async fn retry_noscript(
    conn: &mut ConnectionManager,
    script: &str,
    batch: &[Cmd],
    mut values: Vec<Value>,
) -> Result<Vec<Value>, ClusterError> {
    let again: Vec<usize> = (0..values.len())
        .filter(|&i| is_noscript(&values[i]))
        .collect();
    let again_pipe = pipeline(again.iter().map(|&i| &batch[i]));
    redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg(script)
        .query_async::<String>(conn)
        .await?;
    let redone = send(conn, again_pipe).await?;
    for (i, v) in again.into_iter().zip(redone) {
        values[i] = v;
    }
    Ok(values)
}
