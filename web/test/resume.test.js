// Reconnect and resume: the connection is cut at the TCP level by a proxy between client and
// server (what a network failure or a server dropping the socket looks like to the client).

import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { WebSocket } from "ws";

import { Bus, connect } from "../herald.js";
import { httpPublish, sleep, startProxy, startServer, until } from "./server.js";

let server;
let proxy;
const open = [];
async function bus(opts = {}) {
  const b = await connect(proxy.ws, { WebSocket, minDelayMs: 20, maxDelayMs: 200, ...opts });
  open.push(b);
  return b;
}
function seqsOf(msgs) {
  return msgs.map((m) => m.seq);
}
function range(from, to) {
  return Array.from({ length: to - from + 1 }, (_, i) => from + i);
}

before(async () => {
  server = await startServer();
  proxy = await startProxy(server.port);
});
after(async () => {
  for (const b of open) b.close();
  await proxy.close();
  await server.stop();
});

test("resumes after the socket is cut: nothing lost, nothing twice, in order", async () => {
  const b = await bus();
  const got = [];
  const events = [];
  b.on("close", (e) => events.push(["close", e.willReconnect]));
  b.on("resumed", (e) => events.push(["resumed", e.session === b.session]));
  b.on("gap", (g) => events.push(["gap", g]));
  await b.subscribe("live/**", (m) => got.push(m));
  for (let i = 1; i <= 5; i += 1) await httpPublish(server.http, "live/a", i);
  await until(() => got.length === 5);
  const session = b.session;

  proxy.refuse = true; // the server looks down: reconnect attempts fail for a while
  proxy.cut();
  await until(() => b.state === "reconnecting", 2000, "the drop to be noticed");
  for (let i = 6; i <= 20; i += 1) await httpPublish(server.http, i % 2 ? "live/a" : "live/b/c", i);
  const attempts = proxy.connections;
  await sleep(150);
  proxy.refuse = false;

  await until(() => got.length === 20, 5000, "the messages published while offline");
  assert.deepEqual(got.map((m) => m.data), range(1, 20));
  assert.deepEqual(seqsOf(got), range(1, 20));
  assert.equal(b.session, session);
  assert.equal(b.lastSeq, 20);
  assert.ok(proxy.connections > attempts, "it reconnected");
  assert.deepEqual(events, [["close", true], ["resumed", true]]);

  // Live delivery continues on the new socket.
  await httpPublish(server.http, "live/a", 21);
  await until(() => got.length === 21);
  assert.equal(got[20].seq, 21);
});

test("a token function is asked again for every connection", async () => {
  let calls = 0;
  const b = await bus({ token: async () => `t${++calls}` });
  assert.equal(calls, 1);
  const before = b.session;
  proxy.cut();
  await until(() => calls === 2 && b.connected, 5000, "the reconnect");
  assert.equal(b.session, before, "resumed");
});

test("survives repeated cuts under a steady stream", async () => {
  const b = await bus();
  const got = [];
  await b.subscribe("storm/t", (m) => got.push(m.data));
  let resumed = 0;
  b.on("resumed", () => (resumed += 1));
  for (let i = 1; i <= 60; i += 1) {
    await httpPublish(server.http, "storm/t", i);
    if (i % 15 === 0) {
      const before = resumed;
      proxy.cut();
      await until(() => resumed > before, 5000, "the resume");
    }
  }
  await until(() => got.length === 60, 5000, "all 60");
  assert.deepEqual(got, range(1, 60));
  assert.ok(resumed >= 4, `resumed ${resumed} times`);
});

test("publishes made while offline are queued and sent after reconnecting", async () => {
  const b = await bus();
  const got = [];
  await b.subscribe("queued/t", (m) => got.push(m.data));
  proxy.refuse = true;
  proxy.cut();
  await until(() => b.state === "reconnecting");
  const acks = [b.publish("queued/t", "a"), b.publish("queued/t", "b"), b.publish("queued/t", "c")];
  await sleep(100);
  proxy.refuse = false;
  const done = await Promise.all(acks);
  assert.deepEqual(done.map((a) => a.duplicate), [false, false, false]);
  assert.ok(done[0].offset < done[1].offset && done[1].offset < done[2].offset);
  await until(() => got.length === 3);
  assert.deepEqual(got, ["a", "b", "c"]);
});

test("the offline queue is bounded", async () => {
  const b = await bus({ maxQueue: 2 });
  proxy.refuse = true;
  proxy.cut();
  await until(() => b.state === "reconnecting");
  const first = b.publish("bounded/t", 1);
  const second = b.publish("bounded/t", 2);
  await assert.rejects(b.publish("bounded/t", 3), (e) => e.code === "queue_full");
  proxy.refuse = false;
  await Promise.all([first, second]);
});

test("calls waiting for an answer are rejected on disconnect; calls while offline too", async () => {
  const b = await bus();
  proxy.freeze(); // the answers never come back
  const ping = b.ping();
  const history = b.history("x/y");
  const presence = b.presence("x/y");
  await sleep(50);
  proxy.refuse = true;
  proxy.cut();
  for (const p of [ping, history, presence]) await assert.rejects(p, (e) => e.code === "disconnected");
  await assert.rejects(b.request("x/y", 1), (e) => e.code === "disconnected");
  await assert.rejects(b.ping(), (e) => e.code === "disconnected");
  proxy.refuse = false;
  await until(() => b.connected);
  assert.ok((await b.ping()) >= 0);
});

test("a subscription made while offline is sent on reconnect", async () => {
  const b = await bus();
  proxy.refuse = true;
  proxy.cut();
  await until(() => b.state === "reconnecting");
  const got = [];
  const subscribed = b.subscribe("late/t", (m) => got.push(m.data));
  proxy.refuse = false;
  await subscribed;
  await httpPublish(server.http, "late/t", "x");
  await until(() => got.length === 1);
});

test("a half-open connection is detected by the client's heartbeat", async () => {
  const b = await bus();
  const closes = [];
  b.on("close", (e) => closes.push(e.code));
  const got = [];
  await b.subscribe("halfopen/t", (m) => got.push(m.data));
  // Nothing passes any more, but no side closes: only a heartbeat can tell. The server's
  // default interval is 25 s; the client checks every max(1 s, heartbeat_ms), so shrink it.
  b._startHeartbeat(1000);
  proxy.freeze();
  await httpPublish(server.http, "halfopen/t", 1);
  await until(() => closes.length === 1, 6000, "the heartbeat timeout");
  assert.equal(closes[0], 4000);
  await until(() => got.length === 1, 5000, "the message, after resuming");
});

test("a page reload resumes its session: subscribe before open() to get the replay", async () => {
  const first = await bus({ reconnect: false });
  const got1 = [];
  await first.subscribe("reload/t", (m) => got1.push(m.data));
  await httpPublish(server.http, "reload/t", 1);
  await until(() => got1.length === 1);
  const saved = { session: first.session, lastSeq: first.lastSeq };
  first.socket.close(); // the page goes away without unsubscribing
  await until(() => first.state === "closed");
  await httpPublish(server.http, "reload/t", 2);
  await httpPublish(server.http, "reload/t", 3);

  const second = new Bus(proxy.ws, { WebSocket, ...saved });
  open.push(second);
  const got2 = [];
  const subscribed = second.subscribe("reload/t", (m) => got2.push(m));
  await second.open();
  await subscribed;
  assert.equal(second.welcome.resumed, true);
  await until(() => got2.length === 2);
  assert.deepEqual(got2.map((m) => [m.seq, m.data]), [[2, 2], [3, 3]]);
});

test("when the server lost the session (restart), the client subscribes again", async () => {
  for (const other of open.splice(0)) other.close(); // so that the new server sees only `b`
  const b = await bus();
  const got = [];
  const opens = [];
  b.on("open", (e) => opens.push(e));
  await b.subscribe("restart/t", (m) => got.push(m.data));
  await httpPublish(server.http, "restart/t", "before");
  await until(() => got.length === 1);
  const oldSession = b.session;

  const closed = new Promise((resolve) => b.on("close", resolve));
  const oldServer = server;
  server = await startServer();
  proxy.target = server.port;
  const t0 = Date.now();
  await oldServer.stop(); // graceful: `bye {retry_ms: 1000}`, then close 1001
  const close = await closed;
  assert.equal(close.code, 1001);
  await until(() => opens.length === 1, 8000, "the reconnect");
  assert.ok(Date.now() - t0 >= 900, "waited for the server's retry_ms");
  assert.equal(opens[0].resumed, false);
  assert.equal(opens[0].previousSession, oldSession);
  assert.notEqual(b.session, oldSession);

  let last;
  await until(async () => {
    const stats = await (await fetch(`${server.http}/v1/stats`)).json();
    last = stats;
    return stats.subscriptions === 1;
  }, 5000, "the subscription on the new server").catch((e) => { throw new Error(`${e.message}: ${JSON.stringify(last)} ${b.state}`); });
  await httpPublish(server.http, "restart/t", "after");
  await until(() => got.length === 2);
  assert.deepEqual(got, ["before", "after"]);
});

test("what no longer fits the session's buffer is reported as a gap, then delivery goes on", async () => {
  const small = await startServer({ config: "[session]\nbuffer_messages = 5\n" });
  const cutter = await startProxy(small.port);
  try {
    const b = await connect(cutter.ws, { WebSocket, minDelayMs: 20, maxDelayMs: 200 });
    open.push(b);
    const got = [];
    const gaps = [];
    b.on("gap", (g) => gaps.push(g));
    await b.subscribe("small/t", (m) => got.push(m));
    await httpPublish(small.http, "small/t", 1);
    await until(() => got.length === 1);

    cutter.refuse = true;
    cutter.cut();
    await until(() => b.state === "reconnecting");
    for (let i = 2; i <= 20; i += 1) await httpPublish(small.http, "small/t", i);
    cutter.refuse = false;
    await until(() => b.lastSeq === 20, 5000, "the resume");
    await httpPublish(small.http, "small/t", 21);
    await until(() => got.length && got[got.length - 1].data === 21, 5000, "live delivery after the gap");

    // Seqs 2..20 were published while away; only the newest 5 fit: 2..15 are one gap.
    assert.deepEqual(gaps, [{ from_seq: 2, to_seq: 15, reason: "overflow" }]);
    assert.deepEqual(got.map((m) => [m.seq, m.data]), [[1, 1], [16, 16], [17, 17], [18, 18], [19, 19], [20, 20], [21, 21]]);
  } finally {
    await cutter.close();
    await small.stop();
  }
});
