// herald.js against a server with [auth]: a token's permissions apply, anonymous connections get
// only the anonymous permissions, presence shows the token's user and info, and a refused token
// does not loop reconnecting.

import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { after, before, test } from "node:test";
import { WebSocket } from "ws";

import { connect } from "../herald.js";
import { startServer, until } from "./server.js";

const SECRET = "web-test-secret";
const CONFIG = `
[auth]
hs256_secret = "${SECRET}"
admin_keys = ["admin-key"]

[auth.anonymous]
subscribe = ["public/**"]
`;

/** An HS256 JWT, as a backend would mint it. */
function token(claims) {
  const b64 = (v) => Buffer.from(JSON.stringify(v)).toString("base64url");
  const body = `${b64({ alg: "HS256", typ: "JWT" })}.${b64({ exp: Math.floor(Date.now() / 1000) + 3600, ...claims })}`;
  return `${body}.${createHmac("sha256", SECRET).update(body).digest("base64url")}`;
}

let server;
const buses = [];
async function bus(opts = {}) {
  const b = await connect(server.ws, { WebSocket, ...opts });
  buses.push(b);
  return b;
}
before(async () => {
  server = await startServer({ config: CONFIG });
});
after(async () => {
  for (const b of buses) b.close();
  await server.stop();
});

test("anonymous connections get only the anonymous permissions", async () => {
  const anon = await bus();
  await anon.subscribe("public/news", () => {});
  await assert.rejects(anon.subscribe("chat/**", () => {}), (e) => e.code === "forbidden");
  await assert.rejects(anon.publish("public/news", 1), (e) => e.code === "forbidden");
});

test("a token's permissions apply, and presence shows its user and info", async () => {
  const alice = token({ sub: "alice", publish: ["chat/**"], subscribe: ["chat/**", "$presence/chat/**"], info: { name: "Alice" } });
  const b = await bus({ token: alice });
  const got = [];
  await b.subscribe("chat/room", (m) => got.push(m.data));
  await b.publish("chat/room", "hi");
  await until(() => got.length === 1);
  await assert.rejects(b.publish("other/x", 1), (e) => e.code === "forbidden");
  const p = await b.presence("chat/room");
  assert.deepEqual(p.clients.map((c) => [c.session, c.user, c.info]), [[b.session, "alice", { name: "Alice" }]]);
});

test("a token function is called for each connection", async () => {
  let calls = 0;
  const b = await bus({ token: () => (calls += 1, token({ sub: "bob", publish: ["chat/**"], subscribe: ["chat/**"] })) });
  assert.equal(calls, 1);
  await b.publish("chat/fn", 1);
});

test("a refused token fails connect and does not retry", async () => {
  await assert.rejects(connect(server.ws, { WebSocket, token: "not-a-jwt" }), (e) => e.code === "connect_failed" && e.closeCode === 4001);
  const expired = token({ sub: "old", exp: Math.floor(Date.now() / 1000) - 3600 });
  await assert.rejects(connect(server.ws, { WebSocket, token: expired }), (e) => e.code === "connect_failed" && e.closeCode === 4001);
});
