// Several URLs: the first connection tries each in turn, and each reconnect attempt moves to the
// next one, so a client whose server died reaches another.

import assert from "node:assert/strict";
import net from "node:net";
import { after, before, test } from "node:test";
import { WebSocket } from "ws";

import { Bus, connect } from "../herald.js";
import { httpPublish, startServer, until } from "./server.js";

let a;
let b;
let deadUrl;
const open = [];
before(async () => {
  [a, b] = await Promise.all([startServer(), startServer()]);
  // A port where nothing listens (it did a moment ago).
  const probe = net.createServer();
  await new Promise((resolve) => probe.listen(0, "127.0.0.1", resolve));
  deadUrl = `ws://127.0.0.1:${probe.address().port}/ws`;
  await new Promise((resolve) => probe.close(resolve));
});
after(async () => {
  for (const bus of open) bus.close();
  await Promise.all([a.stop(), b.stop()]);
});

test("the URLs come from the list and options.urls, normalized, without repeats", () => {
  const bus = new Bus(["http://127.0.0.1:1", "ws://127.0.0.1:2/ws"], { WebSocket, urls: ["ws://127.0.0.1:1/ws", "ws://127.0.0.1:3/x"] });
  assert.deepEqual(bus.urls, ["ws://127.0.0.1:1/ws", "ws://127.0.0.1:2/ws", "ws://127.0.0.1:3/x"]);
  assert.equal(bus.url, "ws://127.0.0.1:1/ws");
  assert.deepEqual(new Bus("ws://127.0.0.1:4/ws", { WebSocket }).urls, ["ws://127.0.0.1:4/ws"]);
});

test("the first connection tries each URL in turn", async () => {
  const bus = await connect([deadUrl, b.ws], { WebSocket });
  open.push(bus);
  assert.equal(bus.url, b.ws);
  assert.equal(bus.connected, true);
  const viaOption = await connect(deadUrl, { WebSocket, urls: [b.ws] });
  open.push(viaOption);
  assert.equal(viaOption.url, b.ws);
});

test("connect_failed names every URL when none answers", async () => {
  const other = deadUrl.replace(/:(\d+)\//, (_, p) => `:${Number(p) === 65535 ? 65534 : Number(p) + 1}/`);
  await assert.rejects(connect([deadUrl, other], { WebSocket }), (e) => e.code === "connect_failed" && e.message.includes(deadUrl) && e.message.includes(other));
});

test("after the first server is killed the client reaches the second URL", async () => {
  const bus = await connect([a.ws, b.ws], { WebSocket, minDelayMs: 20, maxDelayMs: 100 });
  open.push(bus);
  assert.equal(bus.url, a.ws);
  const opens = [];
  const closes = [];
  bus.on("open", (e) => opens.push(e));
  bus.on("close", (e) => closes.push(e));
  const got = [];
  await bus.subscribe("f/**", (m) => got.push(m.data));
  await httpPublish(a.http, "f/x", "on a");
  await until(() => got.length === 1);

  await a.kill();
  await until(() => opens.length === 1, 5000, "the reconnect to the second URL");
  assert.equal(closes[0].url, a.ws);
  assert.equal(opens[0].url, b.ws);
  assert.equal(opens[0].resumed, false, "another server: a new session");
  assert.equal(bus.url, b.ws);
  // The subscription was sent to the second server.
  await until(async () => (await (await fetch(`${b.http}/v1/stats`)).json()).subscriptions >= 1, 5000, "the subscription on b");
  await httpPublish(b.http, "f/x", "on b");
  await until(() => got.length === 2, 5000, "the message on b");
  assert.deepEqual(got, ["on a", "on b"]);
});
