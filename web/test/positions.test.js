// The position bookkeeping behind recovery, without a server: a bounded map of the last epoch and
// offset delivered per topic, the duplicate filter it makes, and the `since` it gives.

import assert from "node:assert/strict";
import { test } from "node:test";

import { MAX_SINCE_TOPICS, Positions } from "../herald.js";

test("a delivery at or before the position of the same epoch is a duplicate", () => {
  const p = new Positions();
  assert.equal(p.deliver("t/a", "e1", 1, 100), true);
  assert.equal(p.deliver("t/a", "e1", 2, 101), true);
  assert.equal(p.deliver("t/a", "e1", 2, 101), false, "the same offset again");
  assert.equal(p.deliver("t/a", "e1", 1, 100), false, "an older offset");
  assert.deepEqual(p.get("t/a"), { epoch: "e1", offset: 2 });
  // Another topic has its own offsets.
  assert.equal(p.deliver("t/b", "e1", 1, 102), true);
  // A new epoch starts over: its offset 1 is not the old epoch's.
  assert.equal(p.deliver("t/a", "e2", 1, 103), true);
  assert.deepEqual(p.get("t/a"), { epoch: "e2", offset: 1 });
  assert.equal(p.has("t/a", "e1", 1), false);
  assert.equal(p.has("t/a", "e2", 1), true);
  assert.equal(p.ts, 100);
});

test("a skipped offset is not a duplicate, and ts keeps the earliest", () => {
  const p = new Positions();
  p.deliver("t/a", "e1", 5, 500);
  assert.equal(p.deliver("t/a", "e1", 9, 400), true);
  assert.equal(p.ts, 400, "messages of topics arrive out of ts order: the earliest counts");
  p.deliver("t/b", "e1", 1, 900);
  assert.equal(p.ts, 400, "a newer ts does not move it forward");
  assert.deepEqual(p.get("t/a"), { epoch: "e1", offset: 9 });
});

test("the map is bounded: the least recently delivered topic goes first", () => {
  const p = new Positions(3);
  p.deliver("a", "e", 1);
  p.deliver("b", "e", 1);
  p.deliver("c", "e", 1);
  p.deliver("a", "e", 2); // `a` is now the most recent
  p.deliver("d", "e", 1); // evicts `b`
  assert.equal(p.size, 3);
  assert.equal(p.get("b"), undefined);
  assert.deepEqual(Object.keys(p.since().topics), ["c", "a", "d"]);
  // A duplicate does not count as a delivery: `c` stays the oldest.
  assert.equal(p.deliver("c", "e", 1), false);
  p.deliver("e", "e", 1);
  assert.equal(p.get("c"), undefined);
  assert.deepEqual(Object.keys(p.since().topics), ["a", "d", "e"]);
  // The forgotten topic's messages are new again (recovery covers them by `ts`).
  assert.equal(p.deliver("b", "e", 1), true);
});

test("the default bound is the protocol's 1000 topics", () => {
  assert.equal(MAX_SINCE_TOPICS, 1000);
  const p = new Positions();
  for (let i = 0; i < 1500; i += 1) p.deliver(`t/${i}`, "e", i + 1, i);
  assert.equal(p.size, 1000);
  const topics = Object.keys(p.since().topics);
  assert.equal(topics.length, 1000);
  assert.equal(topics[0], "t/500");
  assert.equal(topics[999], "t/1499");
  assert.equal(p.ts, 0);
});

test("a gap covers offsets once: the same gap again is known", () => {
  const p = new Positions();
  p.deliver("t/a", "e1", 3);
  assert.equal(p.cover("t/a", "e1", 18), true);
  assert.equal(p.cover("t/a", "e1", 18), false);
  assert.equal(p.deliver("t/a", "e1", 18), false);
  assert.equal(p.deliver("t/a", "e1", 19), true);
  // An epoch gap with an empty range (the new epoch is held from its start).
  assert.equal(p.cover("t/a", "e2", 0), true);
  assert.equal(p.cover("t/a", "e2", 0), false);
  assert.equal(p.deliver("t/a", "e2", 1), true);
  assert.equal(p.ts, undefined, "a gap has no ts");
});

test("since() lists every position and the earlier of the earliest ts and the start", () => {
  const p = new Positions();
  assert.deepEqual(p.since(), { topics: {} });
  assert.deepEqual(p.since(42), { topics: {}, ts: 42 });
  p.deliver("t/a", "e1", 7, 1000);
  p.deliver("__proto__", "e1", 1, 999);
  const since = p.since(42);
  // A topic may be named `__proto__`: it must be an entry like any other, on the wire too.
  assert.equal(JSON.stringify(since), '{"topics":{"t/a":{"epoch":"e1","offset":7},"__proto__":{"epoch":"e1","offset":1}},"ts":42}');
  // A local clock ahead of the server's: the first ts delivered corrects it.
  assert.equal(p.since(5000).ts, 999);
  assert.equal(p.since().ts, 999);
  // A copy: changing it changes nothing inside.
  since.topics["t/a"].offset = 99;
  assert.deepEqual(p.get("t/a"), { epoch: "e1", offset: 7 });
});

test("seed() takes either form of since as delivered", () => {
  const p = new Positions();
  p.seed({ epoch: "e1", offset: 4 }, "t/x");
  assert.equal(p.has("t/x", "e1", 4), true);
  assert.equal(p.has("t/x", "e1", 5), false);
  p.seed({ topics: { "t/a": { epoch: "e2", offset: 2 }, "t/b": { epoch: "e3", offset: 9 } }, ts: 1234 });
  assert.equal(p.deliver("t/a", "e2", 2), false);
  assert.equal(p.deliver("t/b", "e3", 10), true);
  assert.equal(p.ts, 1234);
  p.seed(undefined);
  p.seed({ epoch: "e1", offset: 1 }); // no topic: nothing to seed
  assert.equal(p.size, 3);
});
