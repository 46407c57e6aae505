//! Node liveness and the cluster-wide record of unacked group messages, so that the
//! messages a dead node held are redelivered by another one (PROTOCOL.md §5 held across
//! nodes).
//!
//! - **Liveness**: each node keeps `herald:{nodes}:live:<node>` alive (refreshed every
//!   [`HEARTBEAT`], expiring after [`NODE_TTL`]) and its id in the set `herald:{nodes}`.
//! - **Unacked messages**: a hash per node, `herald:{nodes}:pend:<node>`. A field names one
//!   delivery of a message to a group (`<len>:<pattern><len>:<name><epoch> <offset>
//!   <topic>`, see [`field`]); its value is what another node needs to redeliver it:
//!   `<deliveries> <deadline ms> <record>`, the record in the format of `wire.rs`.
//! - **Takeover**: a node that finds a node's liveness key gone moves that node's entries
//!   of the groups it has members of into its own hash with one script
//!   (`lua/take_over.lua`): Redis runs one script at a time and a moved field is gone, so
//!   each entry goes to exactly one node.
//!
//! All the keys share the hash tag `{nodes}`, so the script stays valid on a Redis
//! Cluster.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use redis::Value;

use super::error::ClusterError;
use super::{Cluster, wire};
use crate::event::Event;
use crate::topic::Topic;

/// How long a node counts as alive after its last heartbeat.
pub const NODE_TTL: Duration = Duration::from_secs(5);
/// How often a node refreshes its liveness (and looks for dead nodes).
pub const HEARTBEAT: Duration = Duration::from_secs(1);

/// The set of node ids that may hold unacked messages.
const NODES: &str = "herald:{nodes}";
/// Most hash writes per pipeline.
const CHUNK: usize = 512;

static TAKE_OVER: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(include_str!("lua/take_over.lua")));

fn live_key(node: &str) -> String {
    format!("{NODES}:live:{node}")
}

fn pending_key(node: &str) -> String {
    format!("{NODES}:pend:{node}")
}

/// A group's key in Redis: `<len>:<pattern><len>:<name>` (lengths in bytes), which no other
/// group's key starts with. Every field of the group's messages starts with it.
pub fn group_key(pattern: &str, name: &str) -> String {
    format!("{}:{pattern}{}:{name}", pattern.len(), name.len())
}

/// The field of one group's delivery of `event`: the same for every redelivery of it.
pub fn field(pattern: &str, name: &str, event: &Event) -> String {
    format!(
        "{}{} {} {}",
        group_key(pattern, name),
        event.epoch,
        event.offset,
        event.topic.as_str()
    )
}

/// The value of a field: the deliveries so far (the current one included), when its
/// `ack_wait` ends (Unix ms), and the message as `wire.rs` records it.
pub fn value(event: &Event, deliveries: u32, deadline_ms: u64) -> String {
    let id = event.msg_id.as_deref().unwrap_or("");
    let reply = event.reply_to.as_deref().unwrap_or("");
    let data = event.data_json();
    let mut v = String::with_capacity(64 + id.len() + reply.len() + data.len());
    use std::fmt::Write;
    let _ = write!(
        v,
        "{deliveries} {deadline_ms} n {} {} {} {} {} {id}{reply}{data}",
        event.offset,
        event.ts,
        event.epoch,
        id.len(),
        reply.len()
    );
    v
}

/// An entry taken over from a dead node (now in this node's hash).
#[derive(Debug, Clone)]
pub struct Taken {
    pub field: String,
    pub pattern: String,
    pub name: String,
    pub deliveries: u32,
    pub deadline_ms: u64,
    pub event: Arc<Event>,
}

/// Splits a length-prefixed string off the front of `s`: `<len>:<bytes>`.
fn prefixed(s: &str) -> Option<(&str, &str)> {
    let (len, rest) = s.split_once(':')?;
    let len: usize = len.parse().ok()?;
    Some((rest.get(..len)?, rest.get(len..)?))
}

/// Reads a field and its value back.
pub fn parse(field: &str, value: &[u8]) -> Option<Taken> {
    let (pattern, rest) = prefixed(field)?;
    let (name, rest) = prefixed(rest)?;
    let mut parts = rest.splitn(3, ' ');
    let (_epoch, _offset, topic) = (parts.next()?, parts.next()?, parts.next()?);
    let topic = Topic::parse(topic).ok()?;
    let mut parts = value.splitn(3, |b| *b == b' ');
    let number = |b: &[u8]| std::str::from_utf8(b).ok()?.parse::<u64>().ok();
    let deliveries = u32::try_from(number(parts.next()?)?).ok()?;
    let deadline_ms = number(parts.next()?)?;
    let record = wire::decode(&topic, parts.next()?).ok()?;
    Some(Taken {
        field: field.to_owned(),
        pattern: pattern.to_owned(),
        name: name.to_owned(),
        deliveries,
        deadline_ms,
        event: record.event,
    })
}

impl Cluster {
    /// Refreshes this node's liveness and applies `writes` to its record of unacked
    /// messages (`Some`: set the field, `None`: remove it), in pipelines. The liveness
    /// goes first, so no entry is ever written for a node that looks dead.
    pub async fn journal(&self, writes: &[(String, Option<String>)]) -> Result<(), ClusterError> {
        let hash = pending_key(&self.node);
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(live_key(&self.node))
            .arg(crate::event::now_ms())
            .arg("PX")
            .arg(NODE_TTL.as_millis() as u64)
            .ignore()
            .cmd("SADD")
            .arg(NODES)
            .arg(&*self.node)
            .ignore();
        let mut chunks = writes.chunks(CHUNK);
        loop {
            let chunk = chunks.next().unwrap_or(&[]);
            for (field, value) in chunk {
                match value {
                    Some(v) => pipe.cmd("HSET").arg(&hash).arg(field).arg(v).ignore(),
                    None => pipe.cmd("HDEL").arg(&hash).arg(field).ignore(),
                };
            }
            pipe.query_async::<()>(&mut self.conn.clone()).await?;
            if chunks.len() == 0 {
                return Ok(());
            }
            pipe = redis::pipe();
        }
    }

    /// The other nodes that may hold unacked messages and whose liveness key is gone.
    pub async fn dead_nodes(&self) -> Result<Vec<String>, ClusterError> {
        let nodes: Vec<String> = redis::cmd("SMEMBERS")
            .arg(NODES)
            .query_async(&mut self.conn.clone())
            .await?;
        let others: Vec<String> = nodes.into_iter().filter(|n| *n != *self.node).collect();
        if others.is_empty() {
            return Ok(others);
        }
        let mut pipe = redis::pipe();
        for n in &others {
            pipe.cmd("EXISTS").arg(live_key(n));
        }
        let alive: Vec<bool> = pipe.query_async(&mut self.conn.clone()).await?;
        Ok(others
            .into_iter()
            .zip(alive)
            .filter(|(_, alive)| !alive)
            .map(|(n, _)| n)
            .collect())
    }

    /// Moves to this node the entries of the dead node `dead` whose group is one of
    /// `groups` (see [`group_key`]), and those whose deadline is at or before `cutoff_ms`
    /// whatever their group, appending them to `taken` (also those moved before an error).
    /// Each entry goes to exactly one node. Entries that do not parse are dropped.
    pub async fn take_over(
        &self,
        dead: &str,
        groups: &[String],
        cutoff_ms: u64,
        taken: &mut Vec<Taken>,
    ) -> Result<(), ClusterError> {
        let mine = pending_key(&self.node);
        let mut cursor = String::from("0");
        loop {
            let mut call = TAKE_OVER.prepare_invoke();
            call.key(live_key(dead))
                .key(pending_key(dead))
                .key(&mine)
                .key(NODES)
                .arg(dead)
                .arg(&cursor)
                .arg(cutoff_ms);
            for g in groups {
                call.arg(g);
            }
            let answer: Value = call.invoke_async(&mut self.conn.clone()).await?;
            let Value::Array(items) = answer else {
                return Err(ClusterError::Redis(format!(
                    "unexpected answer of the takeover script: {answer:?}"
                )));
            };
            let mut items = items.into_iter().map(|v| match v {
                Value::BulkString(b) => b,
                Value::SimpleString(s) => s.into_bytes(),
                Value::Int(n) => n.to_string().into_bytes(),
                _ => Vec::new(),
            });
            cursor = String::from_utf8(items.next().unwrap_or_default()).unwrap_or_default();
            let mut bad = Vec::new();
            while let (Some(f), Some(v)) = (items.next(), items.next()) {
                let f = String::from_utf8_lossy(&f).into_owned();
                match parse(&f, &v) {
                    Some(t) => taken.push(t),
                    None => bad.push(f),
                }
            }
            if !bad.is_empty() {
                tracing::warn!(
                    entries = bad.len(),
                    node = dead,
                    "malformed unacked entries dropped"
                );
                let writes: Vec<(String, Option<String>)> =
                    bad.into_iter().map(|f| (f, None)).collect();
                self.journal(&writes).await?;
            }
            if cursor == "0" || cursor.is_empty() {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventParts;

    fn event(topic: &str, data: &str, msg_id: Option<&str>) -> Event {
        Event::new(
            EventParts {
                topic: Topic::parse(topic).unwrap(),
                data,
                msg_id,
                reply_to: None,
            },
            42,
            "ep7".into(),
            1_700_000,
        )
    }

    #[test]
    fn an_entry_reads_back() {
        let e = event("jobs/a b", "{\"x\": [1, \" 2\"]}", Some("m 1"));
        let f = field("jobs/*", "w:1", &e);
        assert!(f.starts_with(&group_key("jobs/*", "w:1")));
        let v = value(&e, 3, 99);
        let t = parse(&f, v.as_bytes()).unwrap();
        assert_eq!((t.pattern.as_str(), t.name.as_str()), ("jobs/*", "w:1"));
        assert_eq!((t.deliveries, t.deadline_ms), (3, 99));
        assert_eq!(t.event.topic.as_str(), "jobs/a b");
        assert_eq!((t.event.offset, t.event.ts), (42, 1_700_000));
        assert_eq!(&*t.event.epoch, "ep7");
        assert_eq!(t.event.msg_id.as_deref(), Some("m 1"));
        assert_eq!(t.event.data_json(), "{\"x\": [1, \" 2\"]}");
    }

    #[test]
    fn group_keys_do_not_prefix_each_other() {
        // `a` + `bc` and `ab` + `c` would both read `abc` without the lengths.
        let one = field("a", "bc", &event("t", "1", None));
        let two = field("ab", "c", &event("t", "1", None));
        assert!(!one.starts_with(&group_key("ab", "c")));
        assert!(!two.starts_with(&group_key("a", "bc")));
    }

    #[test]
    fn garbage_is_refused() {
        for (f, v) in [
            ("", ""),
            ("3:ab", "1 2 n 1 2 e 0 0 1"),
            ("1:a1:bep 1 t", "x 2 n 1 2 e 0 0 1"),
            ("1:a1:bep 1 t", "1 2 garbage"),
        ] {
            assert!(parse(f, v.as_bytes()).is_none(), "{f:?} {v:?}");
        }
    }
}
