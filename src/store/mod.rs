//! Per-topic offsets, epochs, history and retained messages (PROTOCOL.md §5).
//!
//! Two layers. [`MemoryStore`] is the topic table every publish and every read goes
//! through; without `--data-dir` it is all there is (the default). With a data directory,
//! topics whose `[[topics]]` entry says `persist = true` are also written through a
//! [`Durable`] engine ([`RedbStore`]) by the group-[`Committer`] before their messages are
//! delivered, and recovered from it on start. See `durable.rs` for the contract.

mod committer;
mod durable;
mod memory;
mod redb_store;

pub use committer::{Committer, Deliver, EXPIRE_EVERY, Health, MAX_BATCH, Ticket};
pub use durable::{Durable, Recovered, RetainOp, Retention, StoreError, Write};
pub use memory::{
    DEDUP_MAX_IDS, Dedup, MemoryStore, SettingsFn, TopicEntry, TopicInfo, TopicState,
};
pub use redb_store::{FILE_NAME, RedbStore};

/// A fresh epoch: 8 random base-36 characters. An epoch names one unbroken run of offsets;
/// when a topic's state is lost (an in-memory restart, an idle topic forgotten) its next
/// publish starts at offset 1 under a new epoch, so `since` callers can tell.
pub fn new_epoch() -> std::sync::Arc<str> {
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut n: u64 = rand::random();
    let mut s = String::with_capacity(8);
    for _ in 0..8 {
        s.push(ALPHABET[(n % 36) as usize] as char);
        n /= 36;
    }
    s.into()
}
