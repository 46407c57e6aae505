//! The durable engine: one [redb](https://docs.rs/redb) file, `herald.redb`, in the data
//! directory.
//!
//! Why redb: a well-kept, pure-Rust embedded B-tree with ACID transactions, one file, and
//! pages freed by deletes reused by later writes, so retention keeps the file from growing
//! without any compaction step. A commit with `Durability::Immediate` is durable when it
//! returns; the committer puts many messages in each one, so one fsync serves a whole batch
//! (figures in BENCHMARKS.md, "Durable store").
//!
//! Tables:
//! - `topics`: topic name → `id` (u32 LE), last offset (u64 LE), epoch (the rest, UTF-8).
//! - `messages`: (`id`, offset) → a record of [`super::durable::encode_record`].
//! - `retained`: `id` → offset (u64 LE) then a record.

use std::collections::HashMap;
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

/// What the engine remembers of a topic between commits.
#[derive(Debug)]
struct TopicDisk {
    id: u32,
    epoch: Arc<str>,
    /// Offset of the last committed message.
    last: u64,
    /// First offset still held in `messages` (`last + 1` when none is).
    held_from: u64,
    /// `ts` of the message at `held_from` (meaningful when one is held).
    first_ts: u64,
    keep: Retention,
    /// Its `topics` row needs rewriting at the end of this commit.
    dirty: bool,
}

impl TopicDisk {
    fn holds_any(&self) -> bool {
        self.held_from <= self.last
    }
}

pub struct RedbStore {
    db: Database,
    path: PathBuf,
    topics: HashMap<Topic, TopicDisk>,
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
            topics: HashMap::new(),
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
        let last = u64::from_le_bytes(b.get(4..12)?.try_into().ok()?);
        let epoch = std::str::from_utf8(b.get(12..)?).ok()?;
        Some((id, last, epoch))
    }

    /// Deletes what each topic's limits no longer keep: beyond `history` messages, or older
    /// than `history_ttl`. Only the topics in `which` (all when `None`). Returns how many
    /// messages went; commits only when something did.
    fn trim(&mut self, which: Option<&[Topic]>, now_ms: u64) -> Result<u64, StoreError> {
        let wanted = |t: &TopicDisk| {
            t.holds_any()
                && (t.last + 1 - t.held_from > t.keep.history as u64
                    || t.first_ts < t.keep.cutoff(now_ms))
        };
        let names: Vec<Topic> = match which {
            Some(names) => names.to_vec(),
            None => self
                .topics
                .iter()
                .filter(|(_, t)| wanted(t))
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
                if let Some(t) = self.topics.get_mut(name)
                    && wanted(t)
                {
                    removed += trim_topic(&mut msgs, t, now_ms)?;
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

/// Trims one topic inside a write transaction: first by count (a range delete), then by
/// age (walking from the oldest until a message young enough). Keeps `held_from` and
/// `first_ts` in step.
fn trim_topic(
    msgs: &mut redb::Table<'_, (u32, u64), &[u8]>,
    t: &mut TopicDisk,
    now_ms: u64,
) -> Result<u64, StoreError> {
    let id = t.id;
    let mut removed = 0u64;
    let keep_from = (t.last + 1).saturating_sub(t.keep.history as u64);
    if t.held_from < keep_from {
        msgs.retain_in((id, t.held_from)..(id, keep_from), |_, _| false)
            .map_err(engine)?;
        removed += keep_from - t.held_from;
        t.held_from = keep_from;
        t.first_ts = 0;
    }
    let cutoff = t.keep.cutoff(now_ms);
    let mut young_from = t.last + 1;
    let mut young_ts = 0;
    if t.holds_any() {
        for row in msgs
            .range((id, t.held_from)..=(id, t.last))
            .map_err(engine)?
        {
            let (k, v) = row.map_err(engine)?;
            let ts = record_ts(v.value()).unwrap_or(0);
            if ts >= cutoff {
                young_from = k.value().1;
                young_ts = ts;
                break;
            }
        }
        if young_from > t.held_from {
            msgs.retain_in((id, t.held_from)..(id, young_from), |_, _| false)
                .map_err(engine)?;
            removed += young_from - t.held_from;
        }
        t.held_from = young_from;
        t.first_ts = young_ts;
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
                tracing::warn!(topic = name.value(), "unreadable topic row in the store; skipped");
                continue;
            };
            self.next_id = self.next_id.max(id.saturating_add(1));
            let Ok(topic) = Topic::parse(name.value()) else {
                tracing::warn!(topic = name.value(), "invalid topic name in the store; skipped");
                continue;
            };
            let epoch: Arc<str> = epoch.into();
            let first = msgs
                .range((id, 0)..=(id, u64::MAX))
                .map_err(engine)?
                .next()
                .transpose()
                .map_err(engine)?
                .map(|(k, v)| (k.value().1, record_ts(v.value()).unwrap_or(0)));
            let (held_from, first_ts) = first.unwrap_or((last + 1, 0));
            let Some(keep) = retention(&topic) else {
                // No longer persisted: left as it is, not loaded; its id stays taken.
                tracing::info!(%topic, "stored topic is no longer persisted; not loaded");
                self.topics.insert(
                    topic,
                    TopicDisk {
                        id,
                        epoch,
                        last,
                        held_from: last + 1,
                        first_ts: 0,
                        keep: Retention {
                            history: usize::MAX,
                            ttl: None,
                        },
                        dirty: false,
                    },
                );
                continue;
            };
            let cutoff = keep.cutoff(now_ms);
            let mut history = Vec::new();
            if keep.history > 0 && held_from <= last {
                for row in msgs
                    .range((id, held_from)..=(id, last))
                    .map_err(engine)?
                    .rev()
                    .take(keep.history)
                {
                    let (k, v) = row.map_err(engine)?;
                    let offset = k.value().1;
                    if record_ts(v.value()).unwrap_or(0) < cutoff {
                        break;
                    }
                    match decode_record(&topic, offset, &epoch, v.value()) {
                        Some(e) => history.push(Arc::new(e)),
                        None => {
                            tracing::warn!(%topic, offset, "unreadable stored message; skipped");
                        }
                    }
                }
                history.reverse();
            }
            let retained_event = retained
                .get(id)
                .map_err(engine)?
                .and_then(|v| {
                    let v = v.value();
                    let offset = u64::from_le_bytes(v.get(..8)?.try_into().ok()?);
                    decode_record(&topic, offset, &epoch, &v[8..])
                })
                .map(Arc::new);
            out.push(Recovered {
                topic: topic.clone(),
                epoch: epoch.clone(),
                offset: last,
                history,
                retained: retained_event,
            });
            self.topics.insert(
                topic,
                TopicDisk {
                    id,
                    epoch,
                    last,
                    held_from,
                    first_ts,
                    keep,
                    dirty: false,
                },
            );
        }
        drop((topics, msgs, retained));
        drop(txn);
        let trimmed = self.trim(None, now_ms)?;
        if trimmed > 0 {
            tracing::info!(trimmed, "old messages removed from the store on start");
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
                if !self.topics.contains_key(&ev.topic) {
                    let id = self.next_id;
                    self.next_id = id
                        .checked_add(1)
                        .ok_or_else(|| StoreError::Engine("too many topics".into()))?;
                    self.topics.insert(
                        ev.topic.clone(),
                        TopicDisk {
                            id,
                            epoch: ev.epoch.clone(),
                            last: ev.offset - 1,
                            held_from: ev.offset,
                            first_ts: 0,
                            keep: w.keep,
                            dirty: false,
                        },
                    );
                }
                let Some(t) = self.topics.get_mut(&ev.topic) else {
                    continue;
                };
                if *t.epoch != *ev.epoch {
                    // The topic restarted under a new epoch: its old messages are another
                    // run's and must not be served with this one's offsets.
                    if t.holds_any() {
                        msgs.retain_in((t.id, t.held_from)..=(t.id, t.last), |_, _| false)
                            .map_err(engine)?;
                    }
                    retained.remove(t.id).map_err(engine)?;
                    t.epoch = ev.epoch.clone();
                    t.held_from = ev.offset;
                }
                if !t.holds_any() {
                    t.held_from = ev.offset;
                    t.first_ts = ev.ts;
                }
                if w.keep.history > 0 {
                    self.buf.clear();
                    encode_record(ev, &mut self.buf);
                    msgs.insert((t.id, ev.offset), self.buf.as_slice())
                        .map_err(engine)?;
                }
                t.last = ev.offset;
                t.keep = w.keep;
                match w.retain {
                    Some(RetainOp::Set) => {
                        self.buf.clear();
                        self.buf.extend_from_slice(&ev.offset.to_le_bytes());
                        encode_record(ev, &mut self.buf);
                        retained
                            .insert(t.id, self.buf.as_slice())
                            .map_err(engine)?;
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
                if w_history_zero(t) {
                    // Nothing is stored for it: its held range is empty.
                    t.held_from = t.last + 1;
                }
                Self::meta(t.id, t.last, &t.epoch, &mut self.buf);
                topics
                    .insert(name.as_str(), self.buf.as_slice())
                    .map_err(engine)?;
                let over = t.last + 1 - t.held_from > t.keep.history as u64;
                if over {
                    // By count only here; age is the periodic `expire`'s job.
                    let keep_from = (t.last + 1).saturating_sub(t.keep.history as u64);
                    msgs.retain_in((t.id, t.held_from)..(t.id, keep_from), |_, _| false)
                        .map_err(engine)?;
                    t.held_from = keep_from;
                    t.first_ts = msgs
                        .get((t.id, keep_from))
                        .map_err(engine)?
                        .and_then(|v| record_ts(v.value()))
                        .unwrap_or(0);
                }
            }
        }
        txn.commit().map_err(engine)
    }

    fn expire(&mut self, now_ms: u64) -> Result<u64, StoreError> {
        let due: Vec<Topic> = self
            .topics
            .iter()
            .filter(|(_, t)| t.keep.ttl.is_some() && t.holds_any())
            .filter(|(_, t)| t.first_ts < t.keep.cutoff(now_ms))
            .map(|(n, _)| n.clone())
            .collect();
        if due.is_empty() {
            return Ok(0);
        }
        self.trim(Some(&due), now_ms)
    }
}

fn w_history_zero(t: &TopicDisk) -> bool {
    t.keep.history == 0
}
