//! The durable engine: one [redb](https://docs.rs/redb) file, `herald.redb`, in the data
//! directory.
//!
//! Why redb: a well-kept, pure-Rust embedded B-tree with ACID transactions, one file, and
//! pages freed by deletes reused by later writes, so retention keeps the file from growing
//! without any compaction step. A commit with `Durability::Immediate` is durable when it
//! returns; the committer puts many messages in each one, so one fsync serves a whole batch.
//!
//! Messages are stored in **chunks**: each commit writes one row per topic holding all of
//! that topic's messages in the batch. A B-tree insert per message measured at ~7 µs of
//! commit time per message; a row per (topic, batch) makes the per-message cost a memcpy
//! (figures in BENCHMARKS.md, "Durable store"). Retention deletes whole chunks: a chunk
//! goes once its newest message is beyond the `history` count or older than `history_ttl`,
//! so the disk holds at most one chunk more than the limits; recovery applies the limits
//! exactly.
//!
//! Tables:
//! - `topics`: topic name → `id` (u32 LE), last offset (u64 LE), epoch (the rest, UTF-8).
//! - `messages`: (`id`, first offset) → a chunk: last offset (u64), last `ts` (u64), then
//!   per message its offset (u64), length (u32) and a record of
//!   [`super::durable::encode_record`]; integers little-endian.
//! - `retained`: `id` → offset (u64 LE) then a record.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::durable::{
    Durable, Recovered, RetainOp, Retention, StoreError, Write, decode_record, encode_record,
    record_ts,
};
use crate::topic::Topic;

const TOPICS: TableDefinition<&str, &[u8]> = TableDefinition::new("topics");
const MESSAGES: TableDefinition<(u32, u64), &[u8]> = TableDefinition::new("messages");
const RETAINED: TableDefinition<u32, &[u8]> = TableDefinition::new("retained");

/// The database file inside the data directory.
pub const FILE_NAME: &str = "herald.redb";

const CHUNK_HEADER: usize = 16;

/// Where a stored chunk starts and ends.
#[derive(Debug, Clone, Copy)]
struct Chunk {
    first: u64,
    last: u64,
    last_ts: u64,
}

/// What the engine remembers of a topic between commits.
#[derive(Debug)]
struct TopicDisk {
    id: u32,
    epoch: Arc<str>,
    /// Offset of the last committed message.
    last: u64,
    /// The stored chunks, oldest first.
    chunks: VecDeque<Chunk>,
    keep: Retention,
    /// This commit's chunk being built: its records, first offset, last offset and ts.
    pending: Vec<u8>,
    pending_range: Option<Chunk>,
    /// Its `topics` row needs rewriting at the end of this commit.
    dirty: bool,
}

impl TopicDisk {
    fn new(id: u32, epoch: Arc<str>, last: u64, keep: Retention) -> TopicDisk {
        TopicDisk {
            id,
            epoch,
            last,
            chunks: VecDeque::new(),
            keep,
            pending: Vec::new(),
            pending_range: None,
            dirty: false,
        }
    }

    /// Whether the oldest chunk is wholly beyond the `history` count, or older than
    /// `cutoff` (a `ts`; 0 to trim by count only).
    fn front_expired(&self, cutoff: u64) -> bool {
        let keep_from = (self.last + 1).saturating_sub(self.keep.history as u64);
        self.chunks
            .front()
            .is_some_and(|c| c.last < keep_from || c.last_ts < cutoff)
    }
}

pub struct RedbStore {
    db: Database,
    path: PathBuf,
    topics: HashMap<Topic, TopicDisk, foldhash::fast::RandomState>,
    next_id: u32,
    /// Reused encoding buffer.
    buf: Vec<u8>,
    dirty: Vec<Topic>,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore")
            .field("path", &self.path)
            .field("topics", &self.topics.len())
            .finish()
    }
}

fn engine<E: std::fmt::Display>(e: E) -> StoreError {
    StoreError::Engine(e.to_string())
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// The messages of a chunk as (offset, record), oldest first; stops at a malformed entry.
fn chunk_records(chunk: &[u8]) -> Vec<(u64, &[u8])> {
    let mut out = Vec::new();
    let mut at = CHUNK_HEADER;
    while at < chunk.len() {
        let (Some(offset), Some(len)) = (
            u64_at(chunk, at),
            chunk
                .get(at + 8..at + 12)
                .and_then(|b| b.try_into().ok())
                .map(u32::from_le_bytes),
        ) else {
            break;
        };
        let start = at + 12;
        let Some(rec) = chunk.get(start..start + len as usize) else {
            break;
        };
        out.push((offset, rec));
        at = start + len as usize;
    }
    out
}

impl RedbStore {
    /// Opens (creating if needed) the store in `dir`. Fails when another process holds it.
    pub fn open(dir: &Path) -> Result<RedbStore, StoreError> {
        let open_err = |message: String| StoreError::Open {
            path: dir.display().to_string(),
            message,
        };
        std::fs::create_dir_all(dir).map_err(|e| open_err(e.to_string()))?;
        let path = dir.join(FILE_NAME);
        let db = Database::create(&path).map_err(|e| open_err(e.to_string()))?;
        // Create the tables once so that read transactions always find them.
        let txn = db.begin_write().map_err(engine)?;
        {
            txn.open_table(TOPICS).map_err(engine)?;
            txn.open_table(MESSAGES).map_err(engine)?;
            txn.open_table(RETAINED).map_err(engine)?;
        }
        txn.commit().map_err(engine)?;
        Ok(RedbStore {
            db,
            path,
            topics: HashMap::default(),
            next_id: 0,
            buf: Vec::with_capacity(256),
            dirty: Vec::new(),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn meta(id: u32, last: u64, epoch: &str, out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(&id.to_le_bytes());
        out.extend_from_slice(&last.to_le_bytes());
        out.extend_from_slice(epoch.as_bytes());
    }

    fn parse_meta(b: &[u8]) -> Option<(u32, u64, &str)> {
        let id = u32::from_le_bytes(b.get(..4)?.try_into().ok()?);
        let last = u64_at(b, 4)?;
        let epoch = std::str::from_utf8(b.get(12..)?).ok()?;
        Some((id, last, epoch))
    }

    /// Deletes the chunks that the limits no longer keep, for the topics in `which` (all
    /// when `None`). Returns how many chunks went; commits only when some did.
    fn trim(&mut self, which: Option<&[Topic]>, now_ms: u64) -> Result<u64, StoreError> {
        let names: Vec<Topic> = match which {
            Some(names) => names.to_vec(),
            None => self
                .topics
                .iter()
                .filter(|(_, t)| t.front_expired(t.keep.cutoff(now_ms)))
                .map(|(n, _)| n.clone())
                .collect(),
        };
        if names.is_empty() {
            return Ok(0);
        }
        let txn = self.db.begin_write().map_err(engine)?;
        let mut removed = 0;
        {
            let mut msgs = txn.open_table(MESSAGES).map_err(engine)?;
            for name in &names {
                if let Some(t) = self.topics.get_mut(name) {
                    let cutoff = t.keep.cutoff(now_ms);
                    removed += trim_topic(&mut msgs, t, cutoff)?;
                }
            }
        }
        if removed == 0 {
            txn.abort().map_err(engine)?;
        } else {
            txn.commit().map_err(engine)?;
        }
        Ok(removed)
    }
}

/// Deletes a topic's oldest chunks while they are wholly beyond its limits (see
/// [`TopicDisk::front_expired`]).
fn trim_topic(
    msgs: &mut redb::Table<'_, (u32, u64), &[u8]>,
    t: &mut TopicDisk,
    cutoff: u64,
) -> Result<u64, StoreError> {
    let mut removed = 0;
    while t.front_expired(cutoff) {
        if let Some(c) = t.chunks.pop_front() {
            msgs.remove((t.id, c.first)).map_err(engine)?;
            removed += 1;
        }
    }
    Ok(removed)
}

impl Durable for RedbStore {
    fn recover(
        &mut self,
        retention: &dyn Fn(&Topic) -> Option<Retention>,
        now_ms: u64,
    ) -> Result<Vec<Recovered>, StoreError> {
        let txn = self.db.begin_read().map_err(engine)?;
        let topics = txn.open_table(TOPICS).map_err(engine)?;
        let msgs = txn.open_table(MESSAGES).map_err(engine)?;
        let retained = txn.open_table(RETAINED).map_err(engine)?;
        let mut out = Vec::new();
        for row in topics.iter().map_err(engine)? {
            let (name, meta) = row.map_err(engine)?;
            let Some((id, last, epoch)) = Self::parse_meta(meta.value()) else {
                tracing::warn!(
                    topic = name.value(),
                    "unreadable topic row in the store; skipped"
                );
                continue;
            };
            self.next_id = self.next_id.max(id.saturating_add(1));
            let Ok(topic) = Topic::parse(name.value()) else {
                tracing::warn!(
                    topic = name.value(),
                    "invalid topic name in the store; skipped"
                );
                continue;
            };
            let epoch: Arc<str> = epoch.into();
            let Some(keep) = retention(&topic) else {
                // No longer persisted: left as it is, not loaded; its id stays taken.
                tracing::info!(%topic, "stored topic is no longer persisted; not loaded");
                let keep_all = Retention {
                    history: usize::MAX,
                    ttl: None,
                };
                self.topics
                    .insert(topic, TopicDisk::new(id, epoch, last, keep_all));
                continue;
            };
            let mut disk = TopicDisk::new(id, epoch.clone(), last, keep);
            let cutoff = keep.cutoff(now_ms);
            let mut history = Vec::new();
            // Newest chunk first, until `history` messages or one older than the TTL.
            let mut full = keep.history == 0;
            for row in msgs.range((id, 0)..=(id, u64::MAX)).map_err(engine)?.rev() {
                let (k, v) = row.map_err(engine)?;
                let v = v.value();
                let (Some(chunk_last), Some(last_ts)) = (u64_at(v, 0), u64_at(v, 8)) else {
                    tracing::warn!(%topic, "unreadable stored chunk; skipped");
                    continue;
                };
                disk.chunks.push_front(Chunk {
                    first: k.value().1,
                    last: chunk_last,
                    last_ts,
                });
                if full {
                    continue;
                }
                for (offset, rec) in chunk_records(v).into_iter().rev() {
                    let old = record_ts(rec).is_none_or(|ts| ts < cutoff);
                    if history.len() >= keep.history || old {
                        full = true;
                        break;
                    }
                    match decode_record(&topic, offset, &epoch, rec) {
                        Some(e) => history.push(Arc::new(e)),
                        None => tracing::warn!(%topic, offset, "unreadable stored message"),
                    }
                }
            }
            history.reverse();
            let retained_event = retained
                .get(id)
                .map_err(engine)?
                .and_then(|v| {
                    let v = v.value();
                    decode_record(&topic, u64_at(v, 0)?, &epoch, &v[8..])
                })
                .map(Arc::new);
            out.push(Recovered {
                topic: topic.clone(),
                epoch,
                offset: last,
                history,
                retained: retained_event,
            });
            self.topics.insert(topic, disk);
        }
        drop((topics, msgs, retained));
        drop(txn);
        let trimmed = self.trim(None, now_ms)?;
        if trimmed > 0 {
            tracing::info!(
                chunks = trimmed,
                "old messages removed from the store on start"
            );
        }
        Ok(out)
    }

    fn commit(&mut self, batch: &[Write]) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let txn = self.db.begin_write().map_err(engine)?;
        {
            let mut topics = txn.open_table(TOPICS).map_err(engine)?;
            let mut msgs = txn.open_table(MESSAGES).map_err(engine)?;
            let mut retained = txn.open_table(RETAINED).map_err(engine)?;
            for w in batch {
                let ev = &w.event;
                let t = match self.topics.get_mut(&ev.topic) {
                    Some(t) => t,
                    None => {
                        let id = self.next_id;
                        self.next_id = id
                            .checked_add(1)
                            .ok_or_else(|| StoreError::Engine("too many topics".into()))?;
                        let t = TopicDisk::new(id, ev.epoch.clone(), ev.offset - 1, w.keep);
                        self.topics.entry(ev.topic.clone()).or_insert(t)
                    }
                };
                if *t.epoch != *ev.epoch {
                    // The topic restarted under a new epoch: its old messages are another
                    // run's and must not be served with this one's offsets.
                    msgs.retain_in((t.id, 0)..=(t.id, u64::MAX), |_, _| false)
                        .map_err(engine)?;
                    retained.remove(t.id).map_err(engine)?;
                    t.chunks.clear();
                    t.pending.clear();
                    t.pending_range = None;
                    t.epoch = ev.epoch.clone();
                }
                if w.keep.history > 0 {
                    if t.pending_range.is_none() {
                        t.pending.clear();
                        t.pending.resize(CHUNK_HEADER, 0);
                    }
                    let r = t.pending_range.get_or_insert(Chunk {
                        first: ev.offset,
                        last: ev.offset,
                        last_ts: ev.ts,
                    });
                    r.last = ev.offset;
                    r.last_ts = ev.ts;
                    t.pending.extend_from_slice(&ev.offset.to_le_bytes());
                    let len_at = t.pending.len();
                    t.pending.extend_from_slice(&[0; 4]);
                    encode_record(ev, &mut t.pending);
                    let len = (t.pending.len() - len_at - 4) as u32;
                    t.pending[len_at..len_at + 4].copy_from_slice(&len.to_le_bytes());
                }
                t.last = ev.offset;
                t.keep = w.keep;
                match w.retain {
                    Some(RetainOp::Set) => {
                        self.buf.clear();
                        self.buf.extend_from_slice(&ev.offset.to_le_bytes());
                        encode_record(ev, &mut self.buf);
                        retained.insert(t.id, self.buf.as_slice()).map_err(engine)?;
                    }
                    Some(RetainOp::Clear) => {
                        retained.remove(t.id).map_err(engine)?;
                    }
                    None => {}
                }
                if !t.dirty {
                    t.dirty = true;
                    self.dirty.push(ev.topic.clone());
                }
            }
            for name in std::mem::take(&mut self.dirty) {
                let Some(t) = self.topics.get_mut(&name) else {
                    continue;
                };
                t.dirty = false;
                if let Some(r) = t.pending_range.take() {
                    t.pending[..8].copy_from_slice(&r.last.to_le_bytes());
                    t.pending[8..16].copy_from_slice(&r.last_ts.to_le_bytes());
                    msgs.insert((t.id, r.first), t.pending.as_slice())
                        .map_err(engine)?;
                    t.chunks.push_back(r);
                    if t.pending.capacity() > 1 << 20 {
                        t.pending = Vec::new();
                    }
                }
                Self::meta(t.id, t.last, &t.epoch, &mut self.buf);
                topics
                    .insert(name.as_str(), self.buf.as_slice())
                    .map_err(engine)?;
                // By count only here; age is the periodic `expire`'s job.
                trim_topic(&mut msgs, t, 0)?;
            }
        }
        txn.commit().map_err(engine)
    }

    fn expire(&mut self, now_ms: u64) -> Result<u64, StoreError> {
        let due: Vec<Topic> = self
            .topics
            .iter()
            .filter(|(_, t)| t.keep.ttl.is_some() && t.front_expired(t.keep.cutoff(now_ms)))
            .map(|(n, _)| n.clone())
            .collect();
        if due.is_empty() {
            return Ok(0);
        }
        self.trim(Some(&due), now_ms)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::event::{Event, EventParts};

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "herald-redb-{name}-{}-{}",
            std::process::id(),
            crate::event::now_ms()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn write(
        topic: &str,
        offset: u64,
        ts: u64,
        keep: Retention,
        retain: Option<RetainOp>,
    ) -> Write {
        let event = Event::new(
            EventParts {
                topic: Topic::parse(topic).unwrap(),
                data: &format!("{{\"n\":{offset}}}"),
                msg_id: Some("id"),
                reply_to: None,
            },
            offset,
            "ep".into(),
            ts,
        );
        Write {
            event: Arc::new(event),
            retain,
            keep,
        }
    }

    fn all(_: &Topic) -> Option<Retention> {
        Some(Retention {
            history: usize::MAX,
            ttl: None,
        })
    }

    fn offsets(r: &Recovered) -> Vec<u64> {
        r.history.iter().map(|e| e.offset).collect()
    }

    #[test]
    fn chunks_are_trimmed_by_count_and_recovered_exactly() {
        let dir = temp_dir("count");
        let keep = Retention {
            history: 3,
            ttl: None,
        };
        let mut s = RedbStore::open(&dir).unwrap();
        // Three commits of two messages each to `a`, one to `b` with a retained message.
        for c in 0..3u64 {
            let batch = vec![
                write("a", 2 * c + 1, 10, keep, None),
                write("b", c + 1, 10, keep, (c == 0).then_some(RetainOp::Set)),
                write("a", 2 * c + 2, 10, keep, None),
            ];
            s.commit(&batch).unwrap();
        }
        // The chunk of offsets 1-2 is wholly beyond the last 3; 3-4 still holds offset 4.
        let a = &s.topics[&Topic::parse("a").unwrap()];
        assert_eq!(a.chunks.iter().map(|c| c.first).collect::<Vec<_>>(), [3, 5]);
        drop(s);

        let mut s = RedbStore::open(&dir).unwrap();
        let mut got = s.recover(&all, 100).unwrap();
        got.sort_by(|x, y| x.topic.as_str().cmp(y.topic.as_str()));
        assert_eq!((got[0].offset, offsets(&got[0])), (6, vec![3, 4, 5, 6]));
        assert_eq!(got[0].history[0].data_json(), r#"{"n":3}"#);
        assert_eq!(got[0].history[0].msg_id.as_deref(), Some("id"));
        assert_eq!(got[0].epoch.as_ref(), "ep");
        assert_eq!(got[1].retained.as_ref().map(|e| e.offset), Some(1));
        drop(s);

        // With the configured limit, recovery returns exactly the last 3.
        let mut s = RedbStore::open(&dir).unwrap();
        let got = s.recover(&|_| Some(keep), 100).unwrap();
        assert!(got.iter().all(|r| r.history.len() == 3));
        // Clearing the retained message.
        s.commit(&[write("b", 4, 10, keep, Some(RetainOp::Clear))])
            .unwrap();
        drop(s);
        let mut s = RedbStore::open(&dir).unwrap();
        let got = s.recover(&all, 100).unwrap();
        assert!(got.iter().all(|r| r.retained.is_none()));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn expire_deletes_chunks_older_than_the_ttl() {
        let dir = temp_dir("age");
        let keep = Retention {
            history: 100,
            ttl: Some(Duration::from_millis(1000)),
        };
        let mut s = RedbStore::open(&dir).unwrap();
        s.commit(&[
            write("a", 1, 1000, keep, None),
            write("a", 2, 1500, keep, None),
        ])
        .unwrap();
        s.commit(&[write("a", 3, 5000, keep, None)]).unwrap();
        assert_eq!(
            s.expire(2400).unwrap(),
            0,
            "the newest of the chunk is young"
        );
        assert_eq!(s.expire(2600).unwrap(), 1);
        assert_eq!(s.expire(2600).unwrap(), 0);
        drop(s);
        let mut s = RedbStore::open(&dir).unwrap();
        let got = s.recover(&all, 2600).unwrap();
        assert_eq!((got[0].offset, offsets(&got[0])), (3, vec![3]));
        // Recovery itself applies the TTL and trims what is past it.
        drop(s);
        let mut s = RedbStore::open(&dir).unwrap();
        let got = s.recover(&|_| Some(keep), 6001).unwrap();
        assert_eq!((got[0].offset, offsets(&got[0])), (3, vec![]));
        assert!(s.topics.values().all(|t| t.chunks.is_empty()));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_second_open_of_the_same_directory_is_refused() {
        let dir = temp_dir("lock");
        let _s = RedbStore::open(&dir).unwrap();
        let e = RedbStore::open(&dir).unwrap_err();
        assert!(e.to_string().contains("data directory"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
