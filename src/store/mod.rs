//! Per-topic offsets and epochs (PROTOCOL.md §5).
//!
//! Today the only store is in memory and holds no history; history, retained messages and a
//! durable engine arrive behind a `Store` trait with the history issue. What exists now is
//! the part every publish needs: a topic's `offset` counter and its `epoch`.

mod memory;

pub use memory::{
    DEDUP_MAX_IDS, Dedup, MemoryStore, SettingsFn, TopicEntry, TopicInfo, TopicState,
};

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
