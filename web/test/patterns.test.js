// The local pattern matcher that routes messages to handlers, checked against a table of the
// protocol's examples and against the server itself (the oracle: what the server delivers).

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { WebSocket } from "ws";

import { connect, matchPattern, backoffDelay } from "../herald.js";
import { startServer, until } from "./server.js";

const TABLE = [
  // pattern, topic, matches
  ["chat/general", "chat/general", true],
  ["chat/general", "chat/generals", false],
  ["chat/*", "chat/a", true],
  ["chat/*", "chat/a/b", false],
  ["chat/*", "chat", false],
  ["chat/g*l", "chat/general", true],
  ["chat/?", "chat/a", true],
  ["chat/?", "chat/ab", false],
  ["chat/?", "chat/é", true],
  ["orders/**", "orders", true],
  ["orders/**", "orders/eu", true],
  ["orders/**", "orders/eu/created", true],
  ["orders/**", "ordersx", false],
  ["a/**/z", "a/z", true],
  ["a/**/z", "a/b/z", true],
  ["a/**/z", "a/b/c/z", true],
  ["a/**/z", "a/b/c", false],
  ["**/z", "z", true],
  ["**/z", "x/y/z", true],
  ["**", "anything/at/all", true],
  ["**", "$sys/x", false],
  ["*", "$presence", false],
  ["$presence/**", "$presence/chat/general", true],
  ["$presence/chat/*", "$presence/chat/general", true],
  ["s/[abc]", "s/b", true],
  ["s/[abc]", "s/d", false],
  ["s/[a-c]x", "s/bx", true],
  ["s/[!a]", "s/b", true],
  ["s/[!a]", "s/a", false],
  ["chat/{general,random}", "chat/random", true],
  ["chat/{general,random}", "chat/other", false],
  ["x/{a*,b}/y", "x/abc/y", true],
  ["x.y/(z)", "x.y/(z)", true],
  ["x.y/z", "x-y/z", false],
  ["a+b/c", "a+b/c", true],
];

test("matchPattern follows PROTOCOL.md §1", () => {
  for (const [pattern, topic, want] of TABLE) {
    assert.equal(matchPattern(pattern, topic), want, `${pattern} vs ${topic}`);
  }
});

test("backoff grows exponentially up to the ceiling, with jitter in the upper half", () => {
  const lo = () => 0;
  const hi = () => 1;
  assert.equal(backoffDelay(0, 100, 10000, lo), 50);
  assert.equal(backoffDelay(0, 100, 10000, hi), 100);
  assert.equal(backoffDelay(3, 100, 10000, hi), 800);
  assert.equal(backoffDelay(20, 100, 10000, hi), 10000);
  assert.equal(backoffDelay(20, 100, 10000, lo), 5000);
  assert.equal(backoffDelay(1000, 100, 10000, hi), 10000);
  const seen = new Set();
  for (let i = 0; i < 50; i += 1) seen.add(backoffDelay(4, 100, 10000));
  assert.ok(seen.size > 10, "jitter spreads reconnects");
});

let server;
before(async () => {
  server = await startServer();
});
after(() => server.stop());

test("the local matcher agrees with the server's router", async () => {
  const patterns = [
    "m/*", "m/**", "m/a/*", "m/*/c", "m/**/c", "m/?", "m/[ab]", "m/[!a]", "m/{a,ab}", "m/a*",
    "m/{x,y}/**", "**/c",
  ];
  const topics = ["m", "m/a", "m/b", "m/c", "m/ab", "m/a/c", "m/b/c", "m/x/q/c", "m/y", "n/c", "c"];
  const buses = [];
  const delivered = new Map();
  try {
    const done = new Set();
    for (const p of patterns) {
      const b = await connect(server.ws, { WebSocket });
      buses.push(b);
      delivered.set(p, []);
      await b.subscribe(p, (m) => delivered.get(p).push(m.topic));
      await b.subscribe("zz/done", () => done.add(p));
    }
    const pub = await connect(server.ws, { WebSocket });
    buses.push(pub);
    // Each publish is acknowledged once routed, so the marker reaches every session last.
    for (const t of topics) await pub.publish(t, t);
    await pub.publish("zz/done", true);
    await until(() => done.size === patterns.length, 5000, "the end marker");
    for (const [i, p] of patterns.entries()) {
      const local = topics.filter((t) => matchPattern(p, t));
      // The client does not accept more than the server routed to it...
      assert.deepEqual(delivered.get(p), local, `pattern ${p}`);
      // ...nor less: the session's seq counts every msg the server delivered (the topics
      // routed to it, then the end marker), whether a handler took it or not.
      assert.equal(buses[i].lastSeq, local.length + 1, `pattern ${p}: the server delivered ${buses[i].lastSeq - 1} messages, the local matcher accepts ${local.length}`);
    }
  } finally {
    for (const b of buses) b.close();
  }
});
