//! A session's ring: its numbered messages, oldest first, the writer's cursor into them and
//! what a take hands out.
//!
//! Invariants, and why they hold:
//! - The ring holds the contiguous run of seqs `[first, next_seq)`: only the oldest message
//!   is ever dropped, so a seq is implied by its slot's position and no slot stores one.
//! - A gap is never stored. `sent` (the last seq written or covered by a gap) may fall
//!   behind `first`; the next take then reports `gap {sent+1, first-1}` and moves on. So
//!   every seq is delivered once as `msg` or covered by exactly one `gap` (PROTOCOL.md §3)
//!   by construction, live and across resumes alike (a resume just moves `sent` back).
//! - A withheld message keeps its slot (the run stays contiguous and the caps and accounting
//!   do not change) but is only ever reported as part of a gap, never handed out.
//! - `bytes` is the cost of every slot and `unsent_bytes` that of the slots after `sent`,
//!   kept up to date so that the caps are checked without walking the ring.
//! - The ring never holds more than `buffer_messages` slots, nor more than `buffer_bytes`
//!   unless one message alone costs more: that one is kept, alone, because a push never
//!   fails (the oldest message goes instead, PROTOCOL.md §3).
//! - A note (a topic gap, PROTOCOL.md §5) takes no seq: it is kept beside the slots with the
//!   seq it goes before, and a take hands it out once the cursor reaches that seq, so it
//!   reaches the client after every message pushed before it and before every one pushed
//!   after. Notes are handed out in order: the ones already handed out are a prefix, which
//!   a resume moves back like the cursor.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::event::{Delivery, Event};

/// One message in a session's ring: 16 bytes, four to a cache line. Its seq is implied by
/// its position (the ring holds the contiguous run `[first, next_seq)`), its cost is kept so
/// that evicting it does not touch the (long cold) event, and its delivery flags are packed.
#[derive(Debug)]
struct Slot {
    event: Arc<Event>,
    cost: u32,
    how: PackedDelivery,
}

/// A [`Delivery`] in 32 bits: bit 0 `retained`, bit 1 `replay`, bit 2 *withheld* (see
/// [`Session::set_filter`](super::Session::set_filter)), the rest `redelivered` plus one (0:
/// not a redelivery).
#[derive(Debug, Clone, Copy)]
struct PackedDelivery(u32);

impl PackedDelivery {
    const WITHHELD: u32 = 4;

    fn pack(how: Delivery) -> PackedDelivery {
        let n = how
            .redelivered
            .map_or(0, |n| n.min(u32::MAX >> 3).saturating_add(1));
        PackedDelivery(u32::from(how.retained) | u32::from(how.replay) << 1 | n << 3)
    }

    fn unpack(self) -> Delivery {
        let n = self.0 >> 3;
        Delivery {
            retained: self.0 & 1 != 0,
            replay: self.0 & 2 != 0,
            redelivered: (n > 0).then(|| n - 1),
        }
    }

    /// Whether the message is held back from the client (its topic is outside the
    /// session's current subscribe permissions): it is reported as part of a gap.
    fn withheld(self) -> bool {
        self.0 & Self::WITHHELD != 0
    }
}

/// One buffered message, as [`Session::take`](super::Session::take) hands it out.
#[derive(Debug, Clone)]
pub struct Entry {
    pub seq: u64,
    pub event: Arc<Event>,
    pub how: Delivery,
}

/// What a drain yields, in order: an optional gap, notes, then messages.
#[derive(Debug, Default)]
pub struct Batch {
    pub gap: Option<(u64, u64)>,
    pub notes: Vec<Arc<str>>,
    pub entries: Vec<Entry>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.gap.is_none() && self.notes.is_empty() && self.entries.is_empty()
    }
    pub fn clear(&mut self) {
        self.gap = None;
        self.notes.clear();
        self.entries.clear();
    }
}

/// What [`Session::take_each`](super::Session::take_each) saw: a gap to report first, then
/// notes (encoded frames), and how many messages it passed on after them.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Taken {
    pub gap: Option<(u64, u64)>,
    pub notes: Vec<Arc<str>>,
    pub messages: usize,
}

/// Most notes a ring keeps. One `sub` adds at most one per topic it recovers; the oldest
/// note goes first when a session piles up more than this.
pub(super) const MAX_NOTES: usize = 4096;

/// A frame with a place in the stream but no seq (see the module comment).
#[derive(Debug)]
struct Note {
    /// The seq it goes before.
    before: u64,
    frame: Arc<str>,
    /// Handed out to the current connection.
    sent: bool,
}

/// What [`Ring::push`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Appended {
    /// The seq the message got.
    pub seq: u64,
    /// Unsent messages dropped to make room.
    pub dropped_unsent: u32,
    /// Whether the writer still had messages to take before this one: it then comes back
    /// for this one without a wake (it only waits once a take found nothing, under the
    /// session's lock).
    pub writer_behind: bool,
}

#[derive(Debug)]
pub(super) struct Ring {
    next_seq: u64,
    buf: VecDeque<Slot>,
    /// Cost of everything in `buf`.
    bytes: usize,
    /// Cost of the entries after `sent`.
    unsent_bytes: usize,
    /// Last seq written to the current connection or covered by a gap.
    sent: u64,
    /// Oldest first; empty but for sessions recovering topics.
    notes: VecDeque<Note>,
}

impl Ring {
    pub(super) fn new() -> Ring {
        Ring {
            next_seq: 1,
            buf: VecDeque::new(),
            bytes: 0,
            unsent_bytes: 0,
            sent: 0,
            notes: VecDeque::new(),
        }
    }

    /// The oldest seq held (`next_seq` when the ring is empty).
    #[inline]
    pub(super) fn first(&self) -> u64 {
        self.next_seq - self.buf.len() as u64
    }

    /// The last seq assigned.
    #[inline]
    pub(super) fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }

    /// The writer's cursor: the last seq written or covered by a gap.
    #[inline]
    pub(super) fn sent(&self) -> u64 {
        self.sent
    }

    /// Messages held.
    #[inline]
    pub(super) fn len(&self) -> usize {
        self.buf.len()
    }

    /// Cost of the messages held.
    #[inline]
    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Cost of the messages held past the cursor.
    #[inline]
    pub(super) fn unsent_bytes(&self) -> usize {
        self.unsent_bytes
    }

    /// Seqs past the cursor, whether still held or dropped.
    #[inline]
    pub(super) fn behind(&self) -> u64 {
        (self.next_seq - 1).saturating_sub(self.sent)
    }

    /// Whether messages, a gap or a note are waiting for the writer.
    #[inline]
    pub(super) fn has_pending(&self) -> bool {
        self.sent + 1 < self.next_seq || self.notes.back().is_some_and(|n| !n.sent)
    }

    /// Appends a note: it goes out after every message pushed so far and before the next.
    pub(super) fn push_note(&mut self, frame: Arc<str>) {
        if self.notes.len() >= MAX_NOTES {
            self.notes.pop_front();
        }
        self.notes.push_back(Note {
            before: self.next_seq,
            frame,
            sent: false,
        });
    }

    /// Hands out the notes due at the cursor and returns the seq the take must stop before
    /// (the next note's), after forgetting the notes that can never be sent again.
    #[cold]
    fn notes_due(&mut self, out: &mut Vec<Arc<str>>) -> u64 {
        let first = self.first();
        while self
            .notes
            .front()
            .is_some_and(|n| n.sent && n.before < first)
        {
            self.notes.pop_front();
        }
        let next = self.sent + 1;
        for n in self.notes.iter_mut() {
            if n.sent {
                continue;
            }
            if n.before > next {
                return n.before;
            }
            n.sent = true;
            out.push(n.frame.clone());
        }
        u64::MAX
    }

    /// Appends a message under the next seq, first dropping the oldest ones while the ring
    /// is at `max_messages` or the new one would take it past `max_bytes`.
    #[inline]
    pub(super) fn push(
        &mut self,
        event: &Arc<Event>,
        how: Delivery,
        max_messages: usize,
        max_bytes: usize,
    ) -> Appended {
        let seq = self.next_seq;
        self.next_seq += 1;
        let writer_behind = self.sent + 1 < seq;
        let cost = u32::try_from(event.cost()).unwrap_or(u32::MAX);
        // Make room first, then append: with a full ring the new entry takes the very slot
        // the oldest one left, so the ring never grows past `buffer_messages` and a push
        // touches one cache line of it instead of two (at 100+ subscribers per message the
        // rings do not fit in cache, and these misses were the top cost of fan-out).
        let first = seq - self.buf.len() as u64;
        let mut dropped = 0u64;
        let mut dropped_unsent = 0;
        while self.buf.len() >= max_messages
            || (self.bytes + cost as usize > max_bytes && !self.buf.is_empty())
        {
            let Some(old) = self.buf.pop_front() else {
                break;
            };
            let c = old.cost as usize;
            self.bytes -= c;
            if first + dropped > self.sent {
                self.unsent_bytes -= c;
                dropped_unsent += 1;
            }
            dropped += 1;
        }
        self.buf.push_back(Slot {
            event: event.clone(),
            cost,
            how: PackedDelivery::pack(how),
        });
        prefetch_next(&self.buf);
        self.bytes += cost as usize;
        self.unsent_bytes += cost as usize;
        Appended {
            seq,
            dropped_unsent,
            writer_behind,
        }
    }

    /// Moves the cursor past a gap, if any, and up to `max` messages, calling `f` with each
    /// message, in order.
    #[inline]
    pub(super) fn take(
        &mut self,
        max: usize,
        mut f: impl FnMut(u64, &Arc<Event>, Delivery),
    ) -> Taken {
        let mut taken = Taken::default();
        let first = self.first();
        let mut gap_from = None;
        if self.sent + 1 < first {
            gap_from = Some(self.sent + 1);
            self.sent = first - 1;
        }
        // Withheld messages at the cursor extend the gap (one gap covers a contiguous run);
        // the messages after them stop at the next withheld one, which the next take
        // reports as a gap of its own.
        let mut start = (self.sent + 1 - first) as usize;
        while let Some(slot) = self.buf.get(start)
            && slot.how.withheld()
        {
            gap_from.get_or_insert(self.sent + 1);
            self.unsent_bytes = self.unsent_bytes.saturating_sub(slot.cost as usize);
            self.sent += 1;
            start += 1;
        }
        taken.gap = gap_from.map(|from| (from, self.sent));
        let mut max = max;
        if !self.notes.is_empty() {
            let stop = self.notes_due(&mut taken.notes);
            max = max.min(stop.saturating_sub(self.sent + 1) as usize);
        }
        let mut taken_bytes = 0;
        let mut seq = self.sent;
        for e in self.buf.iter().skip(start).take(max) {
            if e.how.withheld() {
                break;
            }
            seq += 1;
            taken_bytes += e.cost as usize;
            f(seq, &e.event, e.how.unpack());
        }
        taken.messages = (seq - self.sent) as usize;
        self.sent = seq;
        self.unsent_bytes = self.unsent_bytes.saturating_sub(taken_bytes);
        taken
    }

    /// Restarts delivery after `last` (a resume): the messages held after it are unsent
    /// again, and what is no longer held becomes a gap at the next take.
    pub(super) fn resume(&mut self, last: u64) {
        let newest = self.next_seq - 1;
        self.sent = last.min(newest);
        // A note before a seq the client has not seen may not have reached it either.
        for n in self.notes.iter_mut().rev() {
            if n.before <= self.sent {
                break;
            }
            n.sent = false;
        }
        let first = self.first();
        let sent = self.sent;
        self.unsent_bytes = self
            .buf
            .iter()
            .skip(sent.saturating_add(1).saturating_sub(first) as usize)
            .map(|e| e.cost as usize)
            .sum();
    }

    /// Withholds every message held whose topic `allows` refuses.
    pub(super) fn withhold_unless(&mut self, allows: impl Fn(&str) -> bool) {
        for slot in self.buf.iter_mut() {
            if !slot.how.withheld() && !allows(slot.event.topic.as_str()) {
                slot.how.0 |= PackedDelivery::WITHHELD;
            }
        }
    }

    /// Withholds the message `seq`; false when it is not held.
    pub(super) fn withhold(&mut self, seq: u64) -> bool {
        let first = self.first();
        if seq < first || seq >= self.next_seq {
            return false;
        }
        let slot = &mut self.buf[(seq - first) as usize];
        slot.how.0 |= PackedDelivery::WITHHELD;
        true
    }

    /// Frees every message (the seqs and the cursor stay).
    pub(super) fn clear(&mut self) {
        self.buf = VecDeque::new();
        self.notes = VecDeque::new();
        self.bytes = 0;
        self.unsent_bytes = 0;
    }
}

/// Asks the CPU to fetch the ring slot the next push writes (the one after the newest
/// entry; with a full ring also the one evicted then). Between two pushes to one session the
/// publisher pushes to every other subscriber, so the line arrives in time and the push
/// does not wait for it. A prefetch never faults: past the end of the buffer it is a no-op.
#[inline]
fn prefetch_next(buf: &VecDeque<Slot>) {
    let (a, b) = buf.as_slices();
    let next = if b.is_empty() {
        a.as_ptr().wrapping_add(a.len())
    } else {
        b.as_ptr().wrapping_add(b.len())
    };
    crate::prefetch::line(next);
}

#[cfg(test)]
mod tests;
