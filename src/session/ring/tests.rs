//! Property tests: the ring against a model that stores every message with its seq in a
//! plain `VecDeque` and recomputes everything (first, costs, gaps) by walking it.
//!
//! The model follows the same rules, written the obvious way: a push evicts from the front
//! while the ring is at its message cap or the new message would take it past its byte cap
//! (but never the last one); a take reports as one gap the run of seqs after the cursor that
//! are gone or withheld, then hands out held messages up to the next withheld one.
//! Notes: after the gap, a take hands out the unsent notes due at the cursor (forgetting
//! first the sent ones whose seq is no longer held) and stops its messages before the seq
//! of the next unsent note; a resume makes the notes after its seq unsent again.

use std::collections::VecDeque;

use proptest::prelude::*;

use super::*;
use crate::event::EventParts;
use crate::topic::Topic;

fn event(topic_b: bool, data_len: usize) -> Arc<Event> {
    let data = format!("\"{}\"", "x".repeat(data_len));
    Arc::new(Event::new(
        EventParts {
            topic: Topic::parse(if topic_b { "b" } else { "a" }).unwrap(),
            data: &data,
            msg_id: None,
            reply_to: None,
        },
        0,
        "e".into(),
        0,
    ))
}

struct Held {
    seq: u64,
    event: Arc<Event>,
    cost: usize,
    how: Delivery,
    withheld: bool,
}

struct Model {
    max_messages: usize,
    max_bytes: usize,
    next_seq: u64,
    sent: u64,
    held: VecDeque<Held>,
    /// `(before, frame, sent)`.
    notes: Vec<(u64, Arc<str>, bool)>,
}

/// One take: the gap, the notes, then each message as `(seq, event, how)`.
type Took = (
    Option<(u64, u64)>,
    Vec<Arc<str>>,
    Vec<(u64, Arc<Event>, Delivery)>,
);

impl Model {
    fn first(&self) -> u64 {
        self.held.front().map_or(self.next_seq, |h| h.seq)
    }

    fn get(&self, seq: u64) -> Option<&Held> {
        self.held.iter().find(|h| h.seq == seq)
    }

    fn bytes(&self) -> usize {
        self.held.iter().map(|h| h.cost).sum()
    }

    fn push(&mut self, event: &Arc<Event>, how: Delivery) -> Appended {
        let seq = self.next_seq;
        self.next_seq += 1;
        let cost = event.cost();
        let mut dropped_unsent = 0;
        while !self.held.is_empty()
            && (self.held.len() >= self.max_messages || self.bytes() + cost > self.max_bytes)
        {
            let old = self.held.pop_front().unwrap();
            if old.seq > self.sent {
                dropped_unsent += 1;
            }
        }
        self.held.push_back(Held {
            seq,
            event: event.clone(),
            cost,
            how,
            withheld: false,
        });
        Appended {
            seq,
            dropped_unsent,
            writer_behind: self.sent + 1 < seq,
        }
    }

    fn take(&mut self, max: usize) -> Took {
        let mut pos = self.sent + 1;
        let mut gap = None;
        while pos < self.next_seq && self.get(pos).is_none_or(|h| h.withheld) {
            gap = Some((self.sent + 1, pos));
            pos += 1;
        }
        let first = self.first();
        self.notes
            .retain(|(before, _, sent)| !(*sent && *before < first));
        let mut notes = Vec::new();
        let mut stop = u64::MAX;
        for (before, frame, sent) in self.notes.iter_mut().filter(|n| !n.2) {
            if *before > pos {
                stop = *before;
                break;
            }
            *sent = true;
            notes.push(frame.clone());
        }
        let mut out = Vec::new();
        while out.len() < max
            && pos < stop
            && let Some(h) = self.get(pos)
            && !h.withheld
        {
            out.push((pos, h.event.clone(), h.how));
            pos += 1;
        }
        self.sent = pos - 1;
        (gap, notes, out)
    }

    fn resume(&mut self, last: u64) {
        self.sent = last.min(self.next_seq - 1);
        for n in self.notes.iter_mut().filter(|n| n.0 > self.sent) {
            n.2 = false;
        }
    }

    fn note(&mut self, frame: Arc<str>) {
        self.notes.push((self.next_seq, frame, false));
    }

    fn withhold(&mut self, seq: u64) -> bool {
        match self.held.iter_mut().find(|h| h.seq == seq) {
            Some(h) => {
                h.withheld = true;
                true
            }
            None => false,
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Push {
        topic_b: bool,
        data_len: usize,
        how: Delivery,
    },
    Take {
        max: usize,
    },
    /// Read again from a seq (a resume): `back` seqs before the newest; negative is past it.
    Resume {
        back: i64,
    },
    /// Withhold the seq `back` before the newest (held, evicted or not assigned yet).
    Withhold {
        back: i64,
    },
    /// Withhold every held message on topic `b`.
    Filter,
    Clear,
    Note,
}

fn delivery() -> impl Strategy<Value = Delivery> {
    // Redelivery counts stay far below the 29 bits the packing has room for.
    (any::<bool>(), any::<bool>(), prop::option::of(0u32..1000)).prop_map(
        |(retained, replay, redelivered)| Delivery {
            retained,
            replay,
            redelivered,
        },
    )
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (any::<bool>(), 0usize..200, delivery()).prop_map(|(topic_b, data_len, how)| {
            Op::Push { topic_b, data_len, how }
        }),
        5 => prop_oneof![0usize..6, Just(usize::MAX)].prop_map(|max| Op::Take { max }),
        2 => (-2i64..12).prop_map(|back| Op::Resume { back }),
        2 => (-2i64..12).prop_map(|back| Op::Withhold { back }),
        1 => Just(Op::Filter),
        1 => Just(Op::Clear),
        2 => Just(Op::Note),
    ]
}

fn seq_back(newest: u64, back: i64) -> u64 {
    (newest as i64 - back).max(0) as u64
}

/// Everything the ring shows agrees with the model, and the ring's own invariants hold.
fn check(ring: &Ring, model: &Model) -> Result<(), TestCaseError> {
    prop_assert_eq!(ring.first(), model.first());
    prop_assert_eq!(ring.last_seq(), model.next_seq - 1);
    prop_assert_eq!(ring.sent(), model.sent);
    prop_assert_eq!(ring.len(), model.held.len());
    prop_assert_eq!(ring.bytes(), model.bytes());
    let unsent: usize = model
        .held
        .iter()
        .filter(|h| h.seq > model.sent)
        .map(|h| h.cost)
        .sum();
    prop_assert_eq!(ring.unsent_bytes(), unsent);
    prop_assert_eq!(
        ring.behind(),
        (model.next_seq - 1).saturating_sub(model.sent)
    );
    prop_assert_eq!(
        ring.has_pending(),
        model.sent + 1 < model.next_seq || model.notes.iter().any(|n| !n.2)
    );
    for (i, (slot, h)) in ring.buf.iter().zip(&model.held).enumerate() {
        prop_assert_eq!(ring.first() + i as u64, h.seq, "slots are a contiguous run");
        prop_assert!(Arc::ptr_eq(&slot.event, &h.event), "seq {}", h.seq);
        prop_assert_eq!(slot.cost as usize, h.cost);
        prop_assert_eq!(slot.how.withheld(), h.withheld);
        prop_assert_eq!(slot.how.unpack(), h.how);
    }
    prop_assert!(ring.len() <= model.max_messages.max(1));
    prop_assert!(ring.bytes() <= model.max_bytes || ring.len() == 1);
    Ok(())
}

fn same_take(
    got: &Taken,
    seen: &[(u64, Arc<Event>, Delivery)],
    want: &Took,
) -> Result<(), TestCaseError> {
    prop_assert_eq!(got.gap, want.0);
    prop_assert_eq!(&got.notes, &want.1);
    prop_assert_eq!(got.messages, want.2.len());
    prop_assert_eq!(seen.len(), want.2.len());
    for ((seq, event, how), (w_seq, w_event, w_how)) in seen.iter().zip(&want.2) {
        prop_assert_eq!(seq, w_seq);
        prop_assert!(Arc::ptr_eq(event, w_event), "seq {}", seq);
        prop_assert_eq!(how, w_how);
    }
    Ok(())
}

proptest! {
    #[test]
    fn ring_matches_model(
        max_messages in 1usize..9,
        // The byte cap in tenths of the smallest message's cost: from less than one message
        // (every message alone over the cap) to several.
        cap_tenths in 5usize..80,
        ops in prop::collection::vec(op(), 0..200),
    ) {
        let max_bytes = event(false, 0).cost() * cap_tenths / 10;
        let mut ring = Ring::new();
        let mut model = Model {
            max_messages,
            max_bytes,
            next_seq: 1,
            sent: 0,
            held: VecDeque::new(),
            notes: Vec::new(),
        };
        let mut notes_made = 0u32;
        for op in ops {
            match op {
                Op::Push { topic_b, data_len, how } => {
                    let e = event(topic_b, data_len);
                    let got = ring.push(&e, how, max_messages, max_bytes);
                    prop_assert_eq!(got, model.push(&e, how));
                }
                Op::Take { max } => {
                    let mut seen = Vec::new();
                    let got = ring.take(max, |seq, event, how| seen.push((seq, event.clone(), how)));
                    same_take(&got, &seen, &model.take(max))?;
                }
                Op::Resume { back } => {
                    let last = seq_back(model.next_seq - 1, back);
                    ring.resume(last);
                    model.resume(last);
                }
                Op::Withhold { back } => {
                    let seq = seq_back(model.next_seq - 1, back);
                    prop_assert_eq!(ring.withhold(seq), model.withhold(seq));
                }
                Op::Filter => {
                    ring.withhold_unless(|topic| topic != "b");
                    for h in model.held.iter_mut() {
                        h.withheld |= h.event.topic.as_str() == "b";
                    }
                }
                Op::Clear => {
                    ring.clear();
                    model.held.clear();
                    model.notes.clear();
                }
                Op::Note => {
                    notes_made += 1;
                    let frame: Arc<str> = format!("note {notes_made}").into();
                    ring.push_note(frame.clone());
                    model.note(frame);
                }
            }
            check(&ring, &model)?;
        }
        // Drained to the end, the takes cover every seq once, as a message or in a gap.
        let mut covered = model.sent;
        loop {
            let mut seen = Vec::new();
            let got = ring.take(usize::MAX, |seq, event, how| seen.push((seq, event.clone(), how)));
            same_take(&got, &seen, &model.take(usize::MAX))?;
            if got.gap.is_none() && got.notes.is_empty() && got.messages == 0 {
                break;
            }
            if let Some((from, to)) = got.gap {
                prop_assert_eq!(from, covered + 1);
                covered = to;
            }
            for (seq, _, _) in &seen {
                prop_assert_eq!(*seq, covered + 1);
                covered = *seq;
            }
        }
        prop_assert_eq!(covered, model.next_seq - 1);
        check(&ring, &model)?;
    }

    /// Packing keeps every delivery flag (redelivery counts in the range the tests use).
    #[test]
    fn packed_delivery_round_trips(how in delivery()) {
        let packed = PackedDelivery::pack(how);
        prop_assert_eq!(packed.unpack(), how);
        prop_assert!(!packed.withheld());
    }
}
