// History, retained messages, rewind/since, presence, request/reply and groups through
// herald.js against the real server.

import assert from "node:assert/strict";
import { after, test } from "node:test";
import { WebSocket } from "ws";

import { connect } from "../herald.js";
import { sleep, startProxy, startServer, until } from "./server.js";

// Topics keep history, and group acks time out fast, on the servers these tests start.
const CONFIG = `
[[topics]]
pattern = "jobs/**"
history = 10
ack_wait = "300ms"
max_deliveries = 2

[[topics]]
pattern = "**"
history = 100
`;

const servers = new Map();
const buses = [];
/** One server per kind, started on first use (a refused config fails only the tests using it). */
function server(kind = "plain") {
  if (!servers.has(kind)) servers.set(kind, startServer(kind === "plain" ? {} : { config: CONFIG }));
  return servers.get(kind);
}
async function bus(kind, opts = {}) {
  const s = await server(kind);
  const b = await connect(opts.url || s.ws, { WebSocket, minDelayMs: 20, maxDelayMs: 200, ...opts });
  buses.push(b);
  return b;
}
after(async () => {
  for (const b of buses) b.close();
  for (const s of servers.values()) {
    try {
      await (await s).stop();
    } catch {
      /* it never started */
    }
  }
});

test("history returns a topic's stored messages, after an offset, up to a limit", async () => {
  const b = await bus("config");
  const acks = [];
  for (let i = 1; i <= 5; i += 1) acks.push(await b.publish("hist/t", { n: i }, { msgId: `h${i}` }));
  const all = await b.history("hist/t");
  assert.equal(all.epoch, acks[0].epoch);
  assert.deepEqual(all.messages.map((m) => m.data.n), [1, 2, 3, 4, 5]);
  assert.deepEqual(all.messages.map((m) => m.offset), acks.map((a) => a.offset));
  assert.equal(all.messages[0].topic, "hist/t");
  assert.equal(all.messages[0].msg_id, "h1");
  assert.equal(typeof all.messages[0].ts, "number");
  const after2 = await b.history("hist/t", { since: acks[1].offset });
  assert.deepEqual(after2.messages.map((m) => m.data.n), [3, 4, 5]);
  const two = await b.history("hist/t", { limit: 2 });
  assert.equal(two.messages.length, 2);
  await assert.rejects(b.history("bad//topic"), (e) => e.code === "bad_topic");
});

test("history of a topic kept without history (history = 0, the default) is an empty page with its epoch", async () => {
  // PROTOCOL.md §4/§5: \`history\` answers \`ok {epoch, messages}\`; a topic whose settings keep no
  // history has no messages to give, which is not an error.
  const b = await bus("plain");
  const ack = await b.publish("nohist/t", "gone");
  const h = await b.history("nohist/t");
  assert.deepEqual(h.messages, []);
  assert.equal(h.epoch, ack.epoch);
  // \`since\` asks for the same nothing.
  assert.deepEqual((await b.history("nohist/t", { since: 0 })).messages, []);
});

test("retained: a new subscription first gets each matching topic's last retained message", async () => {
  const p = await bus("plain");
  await p.publish("ret/a", "old a", { retain: true });
  await p.publish("ret/a", "a", { retain: true });
  await p.publish("ret/b", "b", { retain: true });
  await p.publish("ret/c", "not retained");
  const s = await bus("plain");
  const got = [];
  await s.subscribe("ret/*", (m) => got.push(m));
  await until(() => got.length === 2);
  assert.deepEqual(got.map((m) => [m.topic, m.data, m.retained]).sort(), [["ret/a", "a", true], ["ret/b", "b", true]]);
  // `data: null` clears it.
  await p.publish("ret/a", null, { retain: true });
  const s2 = await bus("plain");
  const got2 = [];
  await s2.subscribe("ret/*", (m) => got2.push(m));
  await p.publish("ret/marker", "end");
  await until(() => got2.some((m) => m.topic === "ret/marker"));
  assert.deepEqual(got2.filter((m) => m.retained).map((m) => m.topic), ["ret/b"]);
});

test("rewind replays the latest messages before live ones", async () => {
  const p = await bus("config");
  for (let i = 1; i <= 5; i += 1) await p.publish("rw/t", i);
  const s = await bus("config");
  const got = [];
  await s.subscribe("rw/t", (m) => got.push(m), { rewind: 3 });
  await p.publish("rw/t", 6);
  await until(() => got.length === 4);
  assert.deepEqual(got.map((m) => [m.data, !!m.replay]), [[3, true], [4, true], [5, true], [6, false]]);
});

test("since continues after an offset; recovered tells whether it could", async () => {
  const p = await bus("config");
  const acks = [];
  for (let i = 1; i <= 4; i += 1) acks.push(await p.publish("since/t", i));
  const s = await bus("config");
  const got = [];
  const off = await s.subscribe("since/t", (m) => got.push(m.data), { since: { epoch: acks[0].epoch, offset: acks[1].offset } });
  assert.equal(off.recovered, true);
  await until(() => got.length === 2);
  assert.deepEqual(got, [3, 4]);
  const s2 = await bus("config");
  const off2 = await s2.subscribe("since/t", () => {}, { since: { epoch: "not-the-epoch", offset: 1 } });
  assert.equal(off2.recovered, false);
});

test("presence lists an exact topic's members and publishes joins and leaves", async () => {
  const a = await bus("plain");
  await a.subscribe("room/x", () => {});
  const watcher = await bus("plain");
  const events = [];
  await watcher.subscribe("$presence/room/x", (m) => events.push(m.data));
  const before = await watcher.presence("room/x");
  assert.equal(before.count, 1);
  assert.deepEqual(before.clients.map((c) => c.session), [a.session]);
  const c = await bus("plain");
  const off = await c.subscribe("room/x", () => {});
  await until(() => events.length === 1);
  assert.equal(events[0].event, "join");
  assert.equal(events[0].session, c.session);
  assert.equal((await watcher.presence("room/x")).count, 2);
  await off();
  await until(() => events.length === 2);
  assert.equal(events[1].event, "leave");
  assert.equal(events[1].session, c.session);
  // bus.close() leaves at once (it unsubscribes), not after the session TTL.
  a.close();
  await until(() => events.length === 3);
  assert.deepEqual([events[2].event, events[2].session], ["leave", a.session]);
  assert.equal((await watcher.presence("room/x")).count, 0);
});

test("request gets the first reply; no_responders and timeout reject", async () => {
  const responder = await bus("plain");
  await responder.subscribe("svc/echo", (m) => {
    assert.match(m.reply_to, /^\$inbox\//);
    m.reply({ echo: m.data });
    m.reply("second reply is dropped");
  });
  await responder.subscribe("svc/silent", () => {});
  const r = await bus("plain");
  assert.deepEqual(await r.request("svc/echo", 41), { echo: 41 });
  await assert.rejects(r.request("svc/nobody", 1), (e) => e.code === "no_responders");
  await assert.rejects(r.request("svc/silent", 1, { timeoutMs: 200 }), (e) => e.code === "timeout");
});

test("a request waiting for its reply is rejected when the connection drops", async () => {
  const s = await server("plain");
  const proxy = await startProxy(s.port);
  try {
    const responder = await bus("plain");
    await responder.subscribe("svc/slow", () => {});
    const r = await bus("plain", { url: proxy.ws });
    const pending = r.request("svc/slow", 1, { timeoutMs: 10000 });
    pending.catch(() => {}); // asserted below; no unhandled rejection meanwhile
    await sleep(100);
    proxy.cut();
    await assert.rejects(pending, (e) => e.code === "disconnected");
  } finally {
    await proxy.close();
  }
});

test("a group shares messages: each goes to exactly one member", async () => {
  const w1 = await bus("plain");
  const w2 = await bus("plain");
  const got = { w1: [], w2: [] };
  await w1.subscribe("work/*", (m) => got.w1.push(m.data), { group: "workers" });
  await w2.subscribe("work/*", (m) => got.w2.push(m.data), { group: "workers" });
  const p = await bus("plain");
  for (let i = 1; i <= 20; i += 1) await p.publish("work/item", i);
  await until(() => got.w1.length + got.w2.length === 20);
  await sleep(100);
  assert.deepEqual([...got.w1, ...got.w2].sort((x, y) => x - y), Array.from({ length: 20 }, (_, i) => i + 1));
  assert.ok(got.w1.length > 0 && got.w2.length > 0, "both members got work");
});

test("manual ack: an unacked message is redelivered to another member, then dead-lettered", async () => {
  const dlq = await bus("config");
  const dead = [];
  await dlq.subscribe("$dlq/jobs/**", (m) => dead.push(m.data));
  const lazy = await bus("config");
  const lazyGot = [];
  await lazy.subscribe("jobs/*", (m) => lazyGot.push(m), { group: "g", ack: "manual" });
  const p = await bus("config");
  await p.publish("jobs/a", "job-1", { msgId: "j1" });
  await until(() => lazyGot.length === 1);
  const diligent = await bus("config");
  const diligentGot = [];
  await diligent.subscribe("jobs/*", (m) => {
    diligentGot.push(m);
    m.ack();
  }, { group: "g", ack: "manual" });
  await until(() => diligentGot.length === 1, 5000, "the redelivery");
  assert.equal(diligentGot[0].data, "job-1");
  assert.equal(diligentGot[0].redelivered, true);
  assert.equal(diligentGot[0].deliveries, 2);
  await sleep(800); // acked: no more deliveries
  assert.equal(lazyGot.length + diligentGot.length, 2);
  assert.equal(dead.length, 0);

  // Nobody acks job-2: after max_deliveries (2) it goes to $dlq/jobs/b.
  await diligent.close();
  await p.publish("jobs/b", "job-2", { msgId: "j2" });
  await until(() => dead.length === 1, 5000, "the dead letter");
  assert.deepEqual(dead[0], { topic: "jobs/b", data: "job-2", deliveries: 2, msg_id: "j2" });
});
