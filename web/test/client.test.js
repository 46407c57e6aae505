// herald.js against the real server: connecting, publishing, subscribing, local routing and
// errors. Node 20 has no global WebSocket, so the `ws` package is injected (as a user would).

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { WebSocket } from "ws";

import { connect, HeraldError, Bus } from "../herald.js";
import { startServer, until, httpPublish } from "./server.js";

let server;
const open = [];
async function bus(opts = {}) {
  const b = await connect(server.ws, { WebSocket, ...opts });
  open.push(b);
  return b;
}

before(async () => {
  server = await startServer();
});
after(async () => {
  for (const b of open) b.close();
  await server.stop();
});

describe("connect", () => {
  test("resolves once welcomed, with a session and the socket", async () => {
    const b = await bus();
    assert.equal(b.state, "open");
    assert.equal(b.connected, true);
    assert.match(b.session, /.+/);
    assert.equal(b.welcome.resumed, false);
    assert.ok(b.welcome.heartbeat_ms > 0);
    assert.equal(b.socket.readyState, 1);
    assert.equal(b.socket.protocol, "herald.v1");
    assert.ok((await b.ping()) >= 0);
  });

  test("accepts an http:// URL and finds /ws", async () => {
    const b = await connect(server.http, { WebSocket });
    open.push(b);
    assert.equal(b.url, server.ws);
    assert.equal(b.state, "open");
  });

  test("rejects connect_failed when nothing listens, and does not retry", async () => {
    const dead = "ws://127.0.0.1:9/ws";
    await assert.rejects(connect(dead, { WebSocket }), (e) => e instanceof HeraldError && e.code === "connect_failed");
  });

  test("a connection that never completes times out as connect_failed", async () => {
    const net = await import("node:net");
    const held = [];
    const silent = net.createServer((s) => held.push(s)); // accepts, never answers
    await new Promise((r) => silent.listen(0, "127.0.0.1", r));
    try {
      const started = Date.now();
      await assert.rejects(
        connect(`ws://127.0.0.1:${silent.address().port}/ws`, { WebSocket, connectTimeoutMs: 300 }),
        (e) => e.code === "connect_failed" && /connect timeout/.test(e.message),
      );
      assert.ok(Date.now() - started < 5000);
    } finally {
      held.forEach((s) => s.destroy());
      silent.close();
    }
  });

  test("close() while still connecting rejects open() with closed", async () => {
    const b = new Bus(server.ws, { WebSocket });
    const opening = b.open();
    b.close();
    await assert.rejects(opening, (e) => e.code === "closed");
    assert.equal(b.state, "closed");
  });

  test("needs a WebSocket implementation", () => {
    const saved = globalThis.WebSocket;
    try {
      delete globalThis.WebSocket;
      assert.throws(() => new Bus(server.ws), /no WebSocket/);
    } finally {
      if (saved) globalThis.WebSocket = saved;
    }
  });

  test("uses the global WebSocket when there is one", { skip: typeof globalThis.WebSocket !== "function" && "no global WebSocket in this Node" }, async () => {
    const b = await connect(server.ws);
    open.push(b);
    const got = [];
    await b.subscribe("global/ws", (m) => got.push(m.data));
    await b.publish("global/ws", 1);
    await until(() => got.length === 1);
  });
});

describe("publish and subscribe", () => {
  test("the handler gets the whole message and publish resolves with the ack", async () => {
    const sub = await bus();
    const pub = await bus();
    const got = [];
    await sub.subscribe("orders/**", (m) => got.push(m));
    const ack = await pub.publish("orders/eu/created", { id: 7 });
    assert.equal(typeof ack.offset, "number");
    assert.equal(typeof ack.epoch, "string");
    assert.equal(ack.duplicate, false);
    await until(() => got.length === 1, 5000, "the message");
    const m = got[0];
    assert.equal(m.topic, "orders/eu/created");
    assert.deepEqual(m.data, { id: 7 });
    assert.equal(m.seq, 1);
    assert.equal(m.offset, ack.offset);
    assert.equal(m.epoch, ack.epoch);
    assert.ok(Math.abs(m.ts - Date.now()) < 60000);
    assert.equal(m.op, undefined);
    assert.equal(typeof m.ack, "function");
    assert.equal(sub.lastSeq, 1);
  });

  test("any JSON travels: null, numbers, strings, arrays, nested unicode", async () => {
    const b = await bus();
    const got = [];
    await b.subscribe("json/*", (m) => got.push(m.data));
    const values = [null, 0, -1.5, "héllo ✓", [1, [2, { a: null }]], { "ключ": "值", deep: { x: [true, false] } }];
    for (const v of values) await b.publish("json/t", v);
    await until(() => got.length === values.length);
    assert.deepEqual(got, values);
  });

  test("routes locally: each handler once per message, only for the patterns it matches", async () => {
    const b = await bus();
    const star = [];
    const deep = [];
    const both = [];
    const shared = (m) => both.push(m.topic);
    await b.subscribe("r/*", (m) => star.push(m.topic));
    await b.subscribe("r/**", (m) => deep.push(m.topic));
    await b.subscribe("r/{a,b}", shared);
    await b.subscribe("r/a", shared); // the same function on two matching patterns: called once
    for (const t of ["r/a", "r/b", "r/c", "r/x/y", "other/a"]) await b.publish(t, t);
    await until(() => deep.length === 4);
    assert.deepEqual(star, ["r/a", "r/b", "r/c"]);
    assert.deepEqual(deep, ["r/a", "r/b", "r/c", "r/x/y"]);
    assert.deepEqual(both, ["r/a", "r/b"]);
    // The server delivered each message once: seqs are 1..4 without repeats.
    assert.equal(b.lastSeq, 4);
  });

  test("unsubscribe stops delivery; another handler of the same pattern keeps it", async () => {
    const b = await bus();
    const one = [];
    const two = [];
    const off1 = await b.subscribe("u/t", (m) => one.push(m.data));
    const off2 = await b.subscribe("u/t", (m) => two.push(m.data));
    assert.equal(off1.pattern, "u/t");
    await b.publish("u/t", 1);
    await until(() => one.length === 1 && two.length === 1);
    await off1();
    await b.publish("u/t", 2);
    await until(() => two.length === 2);
    assert.deepEqual(one, [1]);
    await off2();
    // Nothing is subscribed now: the server must not deliver (seq stays).
    const seqBefore = b.lastSeq;
    await b.publish("u/t", 3);
    const probe = [];
    await b.subscribe("u/probe", (m) => probe.push(m));
    await b.publish("u/probe", "p");
    await until(() => probe.length === 1);
    assert.equal(probe[0].seq, seqBefore + 1, "u/t 3 was not delivered after the last unsubscribe");
    assert.deepEqual(two, [1, 2]);
  });

  test("messages published over HTTP arrive", async () => {
    const b = await bus();
    const got = [];
    await b.subscribe("http/in", (m) => got.push(m.data));
    const ack = await httpPublish(server.http, "http/in", { via: "http" });
    await until(() => got.length === 1);
    assert.deepEqual(got[0], { via: "http" });
    assert.equal(typeof ack.offset, "number");
  });

  test("msgId de-duplicates", async () => {
    const b = await bus();
    const got = [];
    await b.subscribe("dedup/t", (m) => got.push(m));
    const first = await b.publish("dedup/t", "once", { msgId: "m-1" });
    const again = await b.publish("dedup/t", "once", { msgId: "m-1" });
    assert.equal(first.duplicate, false);
    assert.equal(again.duplicate, true);
    assert.equal(again.offset, first.offset);
    await b.publish("dedup/t", "after");
    await until(() => got.length === 2);
    assert.deepEqual(got.map((m) => m.data), ["once", "after"]);
    assert.equal(got[0].msg_id, "m-1");
  });

  test("a throwing handler does not stop the others; the bus emits error", async () => {
    const b = await bus();
    const errors = [];
    b.on("error", (e) => errors.push(e));
    const got = [];
    await b.subscribe("throw/t", () => {
      throw new Error("handler bug");
    });
    await b.subscribe("throw/*", (m) => got.push(m.data));
    await b.publish("throw/t", 1);
    await until(() => got.length === 1);
    assert.equal(errors.length, 1);
    assert.match(errors[0].message, /handler bug/);
  });
});

describe("errors", () => {
  test("a bad topic rejects publish with the server's code", async () => {
    const b = await bus();
    await assert.rejects(b.publish("chat//x", 1), (e) => e instanceof HeraldError && e.code === "bad_topic" && /empty/.test(e.message));
    await assert.rejects(b.publish("$sys/x", 1), (e) => e instanceof HeraldError && ["forbidden", "bad_topic"].includes(e.code));
  });

  test("a bad pattern rejects subscribe and leaves no local subscription", async () => {
    const b = await bus();
    const got = [];
    await assert.rejects(b.subscribe("a/**b", (m) => got.push(m)), (e) => e.code === "bad_pattern");
    await assert.rejects(b.subscribe("a/{b", (m) => got.push(m)), (e) => e.code === "bad_pattern");
    await b.subscribe("a/ok", (m) => got.push(m));
    await b.publish("a/ok", 1);
    await until(() => got.length === 1);
  });

  test("subscribe needs a function", async () => {
    const b = await bus();
    await assert.rejects(b.subscribe("x", null), TypeError);
  });

  test("after close every call rejects closed, and pending ones too", async () => {
    const b = await bus();
    const closes = [];
    b.on("close", (e) => closes.push(e));
    const pending = b.ping();
    b.close();
    await assert.rejects(pending, (e) => e.code === "closed");
    await assert.rejects(b.publish("x/y", 1), (e) => e.code === "closed");
    await assert.rejects(b.subscribe("x/y", () => {}), (e) => e.code === "closed");
    await assert.rejects(b.history("x/y"), (e) => e.code === "closed");
    assert.equal(b.state, "closed");
    assert.deepEqual(closes, [{ code: 1000, reason: "closed by client", willReconnect: false, url: b.url }]);
  });
});
